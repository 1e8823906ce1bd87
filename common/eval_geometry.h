/* eval_geometry: the shape of an embedding on the sphere, over float arrays (N, D) row-major with
 * presence masks ((N) uint8, NULL = every row present): alignment and uniformity (Wang & Isola
 * 2020), the fused embedding of several views, and a view's column of a mask. */
#ifndef HCL_EVAL_GEOMETRY_H
#define HCL_EVAL_GEOMETRY_H

#include <stdint.h>

/* Wang & Isola 2020, on L2-normalised rows:
 *   alignment  = mean over rows present in both of |a_i - b_i|^2          (alpha = 2)
 *   uniformity = log mean over pairs i < j of exp(-2 |x_i - x_j|^2)       (t = 2)
 * over the present rows; exact up to EVAL_UNIFORMITY_ROWS rows, above that on a fixed seeded
 * subsample of EVAL_UNIFORMITY_ROWS rows (stream (seed, "uniformity", 0)). NaN when fewer than
 * 1 row (alignment) or 2 rows (uniformity). */
#define EVAL_UNIFORMITY_ROWS 4096
double eval_alignment(const float *a, const float *b, const uint8_t *present_a,
                      const uint8_t *present_b, int64_t n, int D);
double eval_uniformity(const float *x, const uint8_t *present, int64_t n, int D, uint64_t seed);

/* fused (n, D) = normalise(mean over present views v of normalise(z[v] row)); a row with no
 * view present is zero. mask (n, nviews) or NULL. */
void eval_fuse(float *fused, const float *const *z, int nviews, const uint8_t *mask, int64_t n,
               int D);

/* Copy of column v of a mask (n, nviews) as (n) bytes, or NULL when mask is NULL. */
uint8_t *eval_mask_column(const uint8_t *mask, int nviews, int v, int64_t n);

#endif
