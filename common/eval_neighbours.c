/* eval_neighbours: see eval_neighbours.h. Both measures walk tiles of cosine similarities
 * (sgemm of normalised rows), so memory stays bounded whatever the row count. */
#include "eval_neighbours.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval_private.h"
#include "util.h"

#define EVAL_KNN_QUERIES 256    /* test rows per kNN block */
#define EVAL_KNN_TILE 4096      /* train rows per kNN tile */

/* ---- kNN -------------------------------------------------------------------------------- */

static float *eval_normalized_copy(const float *x, int64_t n, int D) {
    float *out = hcl_floats((size_t)(n > 0 ? n : 1) * D);
    for (int64_t i = 0; i < n; i++) eval_normalize_row(out + i * D, x + i * D, D);
    return out;
}

double eval_knn_accuracy_progress(const float *xtr, const int32_t *ytr, int64_t ntr, const float *xte,
                                  const int32_t *yte, int64_t nte, int F, int K, int k,
                                  hcl_progress *prog) {
    HCL_CHECK(k >= 1 && K >= 1 && F >= 1, "eval_knn_accuracy: k %d K %d F %d", k, K, F);
    if (nte <= 0 || ntr <= 0) return NAN;
    if (k > ntr) k = (int)ntr;
    float *tr = eval_normalized_copy(xtr, ntr, F), *te = eval_normalized_copy(xte, nte, F);
    float *sim = hcl_floats((size_t)EVAL_KNN_QUERIES * EVAL_KNN_TILE);
    float *top_s = hcl_floats((size_t)EVAL_KNN_QUERIES * k);       /* sorted, largest first */
    int32_t *top_y = hcl_malloc(sizeof(int32_t) * (size_t)EVAL_KNN_QUERIES * k);
    int *cnt = hcl_malloc(sizeof(int) * EVAL_KNN_QUERIES);
    double *score = hcl_malloc(sizeof(double) * (size_t)K);
    int64_t right = 0;
    progress_update(prog, 0, nte);
    for (int64_t q0 = 0; q0 < nte; q0 += EVAL_KNN_QUERIES) {
        int nq = (int)min64(EVAL_KNN_QUERIES, nte - q0);
        for (int i = 0; i < nq; i++) cnt[i] = 0;
        for (int64_t t0 = 0; t0 < ntr; t0 += EVAL_KNN_TILE) {
            int nt = (int)min64(EVAL_KNN_TILE, ntr - t0);
            // sim (nq, nt) = te[q0..] (nq, F) @ tr[t0..]^T (F, nt)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nt, F, 1.0f, te + q0 * F, F,
                        tr + t0 * F, F, 0.0f, sim, nt);
            for (int i = 0; i < nq; i++) {
                const float *srow = sim + (int64_t)i * nt;
                float *ts = top_s + (int64_t)i * k;
                int32_t *ty = top_y + (int64_t)i * k;
                int c = cnt[i];
                for (int j = 0; j < nt; j++) {
                    float s = srow[j];
                    if (c == k && !(s > ts[k - 1])) continue;   // ties keep the lower index
                    int p = c < k ? c : k - 1;                  // slot freed at the end
                    while (p > 0 && ts[p - 1] < s) {
                        ts[p] = ts[p - 1];
                        ty[p] = ty[p - 1];
                        p--;
                    }
                    ts[p] = s;
                    ty[p] = ytr[t0 + j];
                    if (c < k) c++;
                }
                cnt[i] = c;
            }
        }
        for (int i = 0; i < nq; i++) {
            const float *ts = top_s + (int64_t)i * k;
            const int32_t *ty = top_y + (int64_t)i * k;
            for (int c = 0; c < K; c++) score[c] = 0;
            for (int j = 0; j < cnt[i]; j++)   // exp((s - s_max) / T): same argmax, no overflow
                if (ty[j] >= 0 && ty[j] < K)
                    score[ty[j]] += exp(((double)ts[j] - ts[0]) / EVAL_KNN_TEMPERATURE);
            int best = 0;
            for (int c = 1; c < K; c++)
                if (score[c] > score[best]) best = c;
            right += best == yte[q0 + i];
        }
        progress_update(prog, q0 + nq, nte);
    }
    free(tr);
    free(te);
    free(sim);
    free(top_s);
    free(top_y);
    free(cnt);
    free(score);
    return (double)right / (double)nte;
}

/* ---- retrieval -------------------------------------------------------------------------- */

/* Normalised rows of a and b present in both, packed: returns the count. */
static int64_t eval_pack_pair(float **pa, float **pb, const float *a, const float *b,
                              const uint8_t *present_a, const uint8_t *present_b, int64_t n,
                              int D) {
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) m += (!present_a || present_a[i]) && (!present_b || present_b[i]);
    *pa = hcl_floats((size_t)(m > 0 ? m : 1) * D);
    *pb = hcl_floats((size_t)(m > 0 ? m : 1) * D);
    int64_t r = 0;
    for (int64_t i = 0; i < n; i++) {
        if ((present_a && !present_a[i]) || (present_b && !present_b[i])) continue;
        eval_normalize_row(*pa + r * D, a + i * D, D);
        eval_normalize_row(*pb + r * D, b + i * D, D);
        r++;
    }
    return m;
}

static void eval_recall_set(eval_recall *out, const int64_t *rank, int64_t m) {
    int64_t c1 = 0, c5 = 0, c10 = 0;
    for (int64_t i = 0; i < m; i++) {
        c1 += rank[i] < 1;
        c5 += rank[i] < 5;
        c10 += rank[i] < 10;
    }
    out->queries = m;
    out->r1 = m ? (double)c1 / (double)m : NAN;
    out->r5 = m ? (double)c5 / (double)m : NAN;
    out->r10 = m ? (double)c10 / (double)m : NAN;
}

/* Count, in the tile sim (na, nb) of rows [a0, a0+na) of A against rows [b0, b0+nb) of B, the
 * entries above each row's and each column's matching similarity (diag), the match excluded. */
static void eval_rank_tile(int64_t *rank_ab, int64_t *rank_ba, const float *sim, const float *diag,
                           int64_t a0, int na, int64_t b0, int nb) {
    for (int i = 0; i < na; i++) {
        const float *s = sim + (int64_t)i * nb;
        int64_t ai = a0 + i;
        float da = diag[ai];
        int64_t c = 0;
        for (int j = 0; j < nb; j++) {
            int64_t bj = b0 + j;
            if (bj == ai) continue;
            c += s[j] > da;
            if (rank_ba) rank_ba[bj] += s[j] > diag[bj];
        }
        rank_ab[ai] += c;
    }
}

void eval_retrieval_progress(eval_recall *a_to_b, eval_recall *b_to_a, const float *a, const float *b,
                             const uint8_t *present_a, const uint8_t *present_b, int64_t n, int D,
                             hcl_progress *prog) {
    float *A, *B;
    int64_t m = eval_pack_pair(&A, &B, a, b, present_a, present_b, n, D);
    int64_t *rank_ab = hcl_calloc((size_t)(m > 0 ? m : 1), sizeof(int64_t));
    int64_t *rank_ba = b_to_a ? hcl_calloc((size_t)(m > 0 ? m : 1), sizeof(int64_t)) : NULL;
    float *diag = hcl_floats((size_t)(m > 0 ? m : 1));
    float *sim = hcl_floats((size_t)EVAL_ROWS * EVAL_ROWS);
    // diagonal tiles first: they hold every matching similarity
    progress_update(prog, 0, m);
    for (int64_t t0 = 0; t0 < m; t0 += EVAL_ROWS) {
        int nt = (int)min64(EVAL_ROWS, m - t0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nt, nt, D, 1.0f, A + t0 * D, D,
                    B + t0 * D, D, 0.0f, sim, nt);
        for (int i = 0; i < nt; i++) diag[t0 + i] = sim[(int64_t)i * nt + i];
        eval_rank_tile(rank_ab, rank_ba, sim, diag, t0, nt, t0, nt);
    }
    for (int64_t a0 = 0; a0 < m; a0 += EVAL_ROWS) {
        int na = (int)min64(EVAL_ROWS, m - a0);
        for (int64_t b0 = 0; b0 < m; b0 += EVAL_ROWS) {
            if (b0 == a0) continue;
            int nb = (int)min64(EVAL_ROWS, m - b0);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, na, nb, D, 1.0f, A + a0 * D, D,
                        B + b0 * D, D, 0.0f, sim, nb);
            eval_rank_tile(rank_ab, rank_ba, sim, diag, a0, na, b0, nb);
        }
        progress_update(prog, a0 + na, m);
    }
    eval_recall_set(a_to_b, rank_ab, m);
    if (b_to_a) eval_recall_set(b_to_a, rank_ba, m);
    free(A);
    free(B);
    free(rank_ab);
    free(rank_ba);
    free(diag);
    free(sim);
}

