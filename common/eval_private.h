/* eval_private: helpers the eval_*.c files share (not part of any module's interface): the tile
 * size, row normalisation as every measure does it, and two small comparisons. */
#ifndef HCL_EVAL_PRIVATE_H
#define HCL_EVAL_PRIVATE_H

#include <math.h>
#include <stdint.h>

#define EVAL_ROWS 1024          /* rows per logreg block and per similarity tile side */

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Row x (D) normalised into out (D) in float (norm in double, clamped at 1e-12). */
static inline void eval_normalize_row(float *out, const float *x, int D) {
    double s = 0;
    for (int j = 0; j < D; j++) s += (double)x[j] * x[j];
    double inv = 1.0 / fmax(sqrt(s), 1e-12);
    for (int j = 0; j < D; j++) out[j] = (float)(x[j] * inv);
}

/* qsort order of int64_t, ascending */
static inline int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

#endif
