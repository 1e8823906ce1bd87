/* npy: NumPy .npy files (format 1.0/2.0/3.0), memory-mapped for reading, written durably.
 *
 * npy_open maps the file read-only and validates the header against the file size: a header
 * that lies about the size, a truncated file, Fortran order, a dtype other than the ones below,
 * each fail with one line naming the file and the value. Data is never copied. */
#ifndef HCL_NPY_H
#define HCL_NPY_H

#include <stddef.h>
#include <stdint.h>

enum npy_dtype {
    NPY_F32, NPY_F64, NPY_U8, NPY_I8, NPY_I16, NPY_I32, NPY_I64, NPY_U16, NPY_U32, NPY_U64,
    NPY_BOOL
};

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

/* Element i (flat, row-major) as double / int64, whatever the integer or float dtype (into
 * int64 a float goes toward zero, saturated, NaN as 0; a uint64 saturates). */
double npy_get_f64(const npy_file *f, int64_t i);
int64_t npy_get_i64(const npy_file *f, int64_t i);

/* Write a C-order array durably (temp file, fsync, rename). ndim 1 or 2. */
int npy_write(const char *path, enum npy_dtype dtype, int ndim, const int64_t *shape,
              const void *data, char *err);

#endif
