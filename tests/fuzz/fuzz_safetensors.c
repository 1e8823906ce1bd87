/* fuzz_safetensors: one file through common/safetensors.c's st_open (the 8-byte length, the
 * JSON header: tensors, dtypes, shapes, data_offsets, __metadata__), then every tensor found by
 * name and read whole, and the metadata's keys read as model_io.c reads them. An accepted file's
 * tensors must lie inside its data section with the bytes their dtype and shape say. */
#include <stdint.h>
#include <string.h>

#include "fuzz_kit.h"
#include "safetensors.h"
#include "util.h"

static const char *const meta_keys[] = {"format", "version", "views", "in_widths", "hidden", "dim",
                                        "act", "layernorm", "nclasses", "t_init", "optimizer", "step"};

static uint64_t dtype_bytes(const char *d) {
    if (!strcmp(d, "F64") || !strcmp(d, "I64")) return 8;
    if (!strcmp(d, "F32") || !strcmp(d, "I32")) return 4;
    if (!strcmp(d, "F16") || !strcmp(d, "BF16") || !strcmp(d, "I16")) return 2;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file f;
    char err[HCL_ERR_MAX] = "";
    if (st_open(&f, fuzz_file(0, data, size), err) != 0) {
        fuzz_check_err("st_open", err);
        return 0;
    }
    const uint8_t *map = f.map;
    size_t data_len = f.map_len - (size_t)(f.data - map);
    FUZZ_ASSERT(f.data >= map + 8 && f.data <= map + f.map_len, "data section outside the file");
    uint32_t sum = 0;
    for (int i = 0; i < f.ntensors; i++) {
        const st_tensor *t = &f.tensors[i];
        FUZZ_ASSERT(st_find(&f, t->name) == t, "tensor '%s' not found by its name", t->name);
        FUZZ_ASSERT(t->ndim >= 0 && t->ndim <= ST_MAX_DIMS, "tensor '%s': %d dims", t->name, t->ndim);
        uint64_t bytes = dtype_bytes(t->dtype);
        for (int d = 0; d < t->ndim; d++) bytes *= (uint64_t)t->shape[d];
        FUZZ_ASSERT(t->begin <= t->end && t->end <= data_len && t->end - t->begin == bytes,
                    "tensor '%s' [%llu, %llu) of %llu bytes in %zu", t->name, (unsigned long long)t->begin,
                    (unsigned long long)t->end, (unsigned long long)bytes, data_len);
        sum = hcl_crc32c(sum, st_data(&f, t), (size_t)(t->end - t->begin));
    }
    (void)sum;
    char value[512], tiny[4];
    for (size_t k = 0; k < sizeof meta_keys / sizeof meta_keys[0]; k++) {
        if (st_metadata_get(&f, meta_keys[k], value, sizeof value) == 0)
            FUZZ_ASSERT(memchr(value, 0, sizeof value), "metadata '%s' not terminated", meta_keys[k]);
        st_metadata_get(&f, meta_keys[k], tiny, sizeof tiny);
    }
    st_close(&f);
    return 0;
}
