/* fuzz_npy: one .npy file through common/npy.c's npy_open (magic, version, the header dict,
 * dtype, shape against the file size), then every element read back through npy_get_f64 and
 * npy_get_i64. An accepted file must describe exactly the bytes it holds. */
#include <stdint.h>
#include <string.h>

#include "fuzz_kit.h"
#include "npy.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(0, data, size);
    npy_file f;
    char err[HCL_ERR_MAX] = "";
    if (npy_open(&f, path, err) != 0) {
        fuzz_check_err("npy_open", err);
        return 0;
    }
    FUZZ_ASSERT(f.ndim >= 0 && f.ndim <= 2, "ndim %d", f.ndim);
    int64_t count = 1;
    for (int i = 0; i < 2; i++) {
        FUZZ_ASSERT(f.shape[i] >= 0, "shape[%d] = %lld", i, (long long)f.shape[i]);
        count *= f.shape[i];
    }
    FUZZ_ASSERT(count == f.count, "count %lld, shape says %lld", (long long)f.count, (long long)count);
    const uint8_t *base = f.map, *first = f.data;
    FUZZ_ASSERT(first >= base && (size_t)(first - base) + (size_t)f.count * (size_t)f.elem_size == f.map_len,
                "data of %lld x %d bytes at offset %td of a %zu-byte file", (long long)f.count,
                f.elem_size, first - base, f.map_len);
    double sum = 0;
    for (int64_t i = 0; i < f.count; i++) sum += npy_get_f64(&f, i) + (double)(npy_get_i64(&f, i) & 1);
    (void)sum;
    FUZZ_ASSERT(strcmp(npy_dtype_name(f.dtype), "unknown") != 0, "dtype %d has no name", (int)f.dtype);
    npy_close(&f);
    return 0;
}
