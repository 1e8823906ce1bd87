/* eval_geometry: see eval_geometry.h. */
#include "eval_geometry.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval_private.h"
#include "rng.h"
#include "util.h"

/* ---- alignment and uniformity ------------------------------------------------------------ */

double eval_alignment(const float *a, const float *b, const uint8_t *present_a,
                      const uint8_t *present_b, int64_t n, int D) {
    double sum = 0;
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        if ((present_a && !present_a[i]) || (present_b && !present_b[i])) continue;
        const float *x = a + i * D, *y = b + i * D;
        double nx = 0, ny = 0;
        for (int j = 0; j < D; j++) {
            nx += (double)x[j] * x[j];
            ny += (double)y[j] * y[j];
        }
        nx = 1.0 / fmax(sqrt(nx), 1e-12);
        ny = 1.0 / fmax(sqrt(ny), 1e-12);
        double s = 0;
        for (int j = 0; j < D; j++) {
            double d = x[j] * nx - y[j] * ny;
            s += d * d;
        }
        sum += s;
        m++;
    }
    return m ? sum / (double)m : NAN;
}

double eval_uniformity(const float *x, const uint8_t *present, int64_t n, int D, uint64_t seed) {
    int64_t *idx = hcl_malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (!present || present[i]) idx[m++] = i;
    if (m > EVAL_UNIFORMITY_ROWS) {   // a fixed seeded subsample, in row order
        int64_t *perm = hcl_malloc(sizeof(int64_t) * (size_t)m);
        hcl_rng r;
        rng_derive(&r, seed, "uniformity", 0);
        rng_permutation(&r, perm, m);
        qsort(perm, EVAL_UNIFORMITY_ROWS, sizeof(int64_t), cmp_i64);
        for (int64_t i = 0; i < EVAL_UNIFORMITY_ROWS; i++) perm[i] = idx[perm[i]];
        memcpy(idx, perm, sizeof(int64_t) * EVAL_UNIFORMITY_ROWS);
        free(perm);
        m = EVAL_UNIFORMITY_ROWS;
    }
    if (m < 2) {
        free(idx);
        return NAN;
    }
    float *X = hcl_floats((size_t)m * D);
    for (int64_t i = 0; i < m; i++) eval_normalize_row(X + i * D, x + idx[i] * D, D);
    float *sim = hcl_floats((size_t)EVAL_ROWS * EVAL_ROWS);
    double sum = 0;
    for (int64_t a0 = 0; a0 < m; a0 += EVAL_ROWS) {
        int na = (int)min64(EVAL_ROWS, m - a0);
        for (int64_t b0 = a0; b0 < m; b0 += EVAL_ROWS) {
            int nb = (int)min64(EVAL_ROWS, m - b0);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, na, nb, D, 1.0f, X + a0 * D, D,
                        X + b0 * D, D, 0.0f, sim, nb);
            for (int i = 0; i < na; i++)
                for (int j = b0 == a0 ? i + 1 : 0; j < nb; j++) {
                    // |x - y|^2 = 2 - 2 s on the sphere, clamped at 0
                    double d2 = fmax(0.0, 2.0 - 2.0 * (double)sim[(int64_t)i * nb + j]);
                    sum += exp(-2.0 * d2);
                }
        }
    }
    free(X);
    free(sim);
    free(idx);
    return log(sum / (0.5 * (double)m * (double)(m - 1)));
}

/* ---- fusion -------------------------------------------------------------------------------- */

void eval_fuse(float *fused, const float *const *z, int nviews, const uint8_t *mask, int64_t n,
               int D) {
    for (int64_t i = 0; i < n; i++) {
        float *out = fused + i * D;
        for (int j = 0; j < D; j++) out[j] = 0;
        int present = 0;
        for (int v = 0; v < nviews; v++) {
            if (mask && !mask[i * nviews + v]) continue;
            const float *x = z[v] + i * D;
            double s = 0;
            for (int j = 0; j < D; j++) s += (double)x[j] * x[j];
            float inv = (float)(1.0 / fmax(sqrt(s), 1e-12));
            for (int j = 0; j < D; j++) out[j] += x[j] * inv;
            present++;
        }
        if (present) eval_normalize_row(out, out, D);   // the mean's direction: 1/count cancels
    }
}

uint8_t *eval_mask_column(const uint8_t *mask, int nviews, int v, int64_t n) {
    if (!mask) return NULL;
    uint8_t *col = hcl_malloc((size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) col[i] = mask[i * nviews + v] != 0;
    return col;
}
