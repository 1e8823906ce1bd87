/* safetensors: read (memory-mapped) and write the safetensors format, the layout PyTorch's and
 * Hugging Face's `safetensors` library use:
 *   8 bytes little-endian u64 N | N bytes JSON header | raw little-endian tensor data
 * The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
 * relative to the data section) and may hold "__metadata__": {string: string}.
 * hcl writes F32 tensors, C order, names as model.h; the reader also accepts F64/I64/I32/U8.
 *
 * st_open refuses, with one line naming the file and the byte offset of the problem: bad JSON,
 * an unknown dtype, a second __metadata__ or a tensor named twice, a shape whose byte size does
 * not fit 64 bits, data_offsets that do not hold exactly the tensor inside the data section. */
#ifndef HCL_SAFETENSORS_H
#define HCL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_NAME_MAX 128
#define ST_MAX_DIMS 4

typedef struct {
    char name[ST_NAME_MAX];
    char dtype[8];                /* "F32", "F64", "I64", "I32", "U8" */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t begin, end;          /* byte offsets in the data section */
} st_tensor;

typedef struct {
    char path[1024];
    void *map;
    size_t map_len;
    const uint8_t *data;          /* start of the data section */
    int ntensors;
    st_tensor *tensors;
    char *metadata;               /* the raw JSON object of __metadata__, or NULL */
} st_file;

int st_open(st_file *f, const char *path, char *err);
void st_close(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name);
static inline const void *st_data(const st_file *f, const st_tensor *t) { return f->data + t->begin; }
/* The value of a string key of __metadata__ into out; -1 when absent. */
int st_metadata_get(const st_file *f, const char *key, char *out, size_t len);

/* One tensor to write: F32 data of numel floats with the given shape. */
typedef struct {
    const char *name;
    int ndim;
    const int64_t *shape;
    const float *data;
} st_entry;

/* Write durably (hcl_durable: PATH.tmp.PID, fsync, rename over PATH, fsync the directory), the
 * header by the JSON writer and the tensors streamed from their arrays. metadata: NULL or pairs
 * of strings {key0, value0, key1, value1, ..., NULL}. On error PATH is untouched. */
int st_write(const char *path, const st_entry *entries, int n, const char *const *metadata,
             char *err);

#endif
