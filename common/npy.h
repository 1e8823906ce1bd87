/* npy: NumPy .npy files (format 1.0/2.0/3.0), memory-mapped for reading, written durably.
 *
 * npy_open maps the file read-only and validates the header against the file size: a header
 * that lies about the size, a truncated file, Fortran order, a dtype other than the ones below
 * (float16 included: embeddings of other models often come in it),
 * each fail with one line naming the file and the value. Data is never copied. */
#ifndef HCL_NPY_H
#define HCL_NPY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum npy_dtype {
    NPY_F32, NPY_F64, NPY_U8, NPY_I8, NPY_I16, NPY_I32, NPY_I64, NPY_U16, NPY_U32, NPY_U64,
    NPY_BOOL, NPY_F16
};

/* An IEEE half (numpy's float16, '<f2') as float: exact (every half is a float). */
static inline float npy_half_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu;
    uint32_t m = h & 0x3ffu;
    uint32_t u;
    if (e == 0x1f) {
        u = sign | 0x7f800000u | (m << 13);           /* Inf, NaN (payload kept) */
    } else if (e) {
        u = sign | ((e + 112u) << 23) | (m << 13);    /* normal: rebias 15 -> 127 */
    } else if (m) {
        int sh = 0;                                    /* subnormal: m 2^-24, normalised */
        while (!(m & 0x400u)) {
            m <<= 1;
            sh++;
        }
        u = sign | ((uint32_t)(113 - sh) << 23) | ((m & 0x3ffu) << 13);
    } else {
        u = sign;
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

typedef struct {
    char path[1024];
    void *map;             /* whole-file mapping */
    size_t map_len;
    const void *data;      /* first element */
    enum npy_dtype dtype;
    int elem_size;
    int ndim;              /* 0..2 supported */
    int64_t shape[2];      /* unused dims are 1 */
    int64_t count;         /* number of elements */
} npy_file;

const char *npy_dtype_name(enum npy_dtype t);    /* "float32", "int64", ... */
int npy_open(npy_file *f, const char *path, char *err);
void npy_close(npy_file *f);

/* Element i (flat, row-major) as double / int64, whatever the integer or float dtype. As int64,
 * floats truncate toward zero and values past int64's range clamp to INT64_MIN / INT64_MAX
 * (uint64 too); NaN reads INT64_MIN. */
double npy_get_f64(const npy_file *f, int64_t i);
int64_t npy_get_i64(const npy_file *f, int64_t i);

/* Write a C-order array durably (temp file, fsync, rename). ndim 1 or 2. */
int npy_write(const char *path, enum npy_dtype dtype, int ndim, const int64_t *shape,
              const void *data, char *err);

#endif
