/* bf16: the conversions between float and bfloat16 (the upper 16 bits of a float) that every
 * bf16 buffer in hcl uses: round to nearest even, a NaN kept quiet (as vcvtneps2bf16 does),
 * and the exact widening back. The matmul engine's bf16 operands (matmul_onednn.c) and the
 * workers' bf16 wire (--comm-dtype bf16: exchange_mpi.c, ring.c) round the same way. */
#ifndef HCL_BF16_H
#define HCL_BF16_H

#include <stdint.h>
#include <string.h>

static inline uint16_t bf16_of(float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

static inline float bf16_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* y[0..n) = bf16(x[0..n)) */
static inline void bf16_pack(uint16_t *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = bf16_of(x[i]);
}

/* y[0..n) = x[0..n) widened to float */
static inline void bf16_unpack(float *y, const uint16_t *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = bf16_float(x[i]);
}

/* x[0..n) rounded to bf16 in place (stored as floats): what a reader of the bf16 copy sees */
static inline void bf16_round(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = bf16_float(bf16_of(x[i]));
}

#endif
