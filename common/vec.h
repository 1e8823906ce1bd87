/* vec: 16-lane float vectors (GCC vector extensions: AVX-512 where the build targets it, else
 * what the compiler makes of them), with the loads and stores of a row's last, partial vector
 * (padded on load, stored partially) and the widening of its halves to double. Shared by the
 * loss's row kernels (loss_kernels.c) and the workers' shared-memory sums (exchange_shm.c). */
#ifndef HCL_VEC_H
#define HCL_VEC_H

#include <stdint.h>
#include <string.h>

#define VL 16
typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
typedef uint32_t vu __attribute__((vector_size(64)));
typedef float vh __attribute__((vector_size(32)));
typedef double vd __attribute__((vector_size(64)));

static inline vf vf_splat(float x) { return (vf){0} + x; }
static inline vi vi_splat(int32_t x) { return (vi){0} + x; }

/* p[0, k) and, past k, pad in every lane (constant-size copies for a whole vector) */
static inline vf vf_ld(const float *p, int64_t k, float pad) {
    vf v;
    if (k >= VL) {
        memcpy(&v, p, sizeof v);
    } else {
        v = vf_splat(pad);
        memcpy(&v, p, (size_t)k * sizeof(float));
    }
    return v;
}

static inline vi vi_ld(const int32_t *p, int64_t k, int32_t pad) {
    vi v;
    if (k >= VL) {
        memcpy(&v, p, sizeof v);
    } else {
        v = vi_splat(pad);
        memcpy(&v, p, (size_t)k * sizeof(int32_t));
    }
    return v;
}

/* the first min(k, VL) lanes of v into p */
static inline void vf_st(float *p, vf v, int64_t k) {
    if (k >= VL)
        memcpy(p, &v, sizeof v);
    else
        memcpy(p, &v, (size_t)k * sizeof(float));
}

/* the two halves of a float vector, widened to double */
static inline vd vd_lo(vf v) {
    vh h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
    return __builtin_convertvector(h, vd);
}

static inline vd vd_hi(vf v) {
    vh h = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    return __builtin_convertvector(h, vd);
}

#endif
