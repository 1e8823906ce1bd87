/* eval_neighbours: how well an embedding's neighbours agree, over float arrays (N, D) row-major:
 *   kNN        k = 20 cosine neighbours, votes weighted exp(sim / 0.07) (Wu et al. 2018)
 *   retrieval  cross-view recall@1/5/10 (queries view i, gallery view j, match = same row)
 * Similarities are computed in tiles (sgemm of normalised rows): memory stays bounded (a few MB
 * of tiles) whatever N is. Threads: OpenBLAS's (kernels_set_threads). The _progress forms report
 * the rows done to the caller's task (progress.h; NULL: none); the plain forms report nothing. */
#ifndef HCL_EVAL_NEIGHBOURS_H
#define HCL_EVAL_NEIGHBOURS_H

#include <stdint.h>

#include "progress.h"

#define EVAL_KNN_K 20
#define EVAL_KNN_TEMPERATURE 0.07

/* Weighted kNN (Wu et al. 2018, "Unsupervised feature learning via non-parametric instance
 * discrimination", sec. 3.5 with k = 20 instead of 200): rows are L2-normalised, each test row
 * takes its k train rows of highest cosine similarity s (ties: lower train index), class c
 * scores sum over those neighbours of class c of exp(s / 0.07), the prediction is the best
 * score (ties: lower class). Returns the accuracy. Train rows are tiled, never all in memory
 * against all test rows. */
double eval_knn_accuracy_progress(const float *xtr, const int32_t *ytr, int64_t ntr, const float *xte,
                                  const int32_t *yte, int64_t nte, int F, int K, int k,
                                  hcl_progress *prog);   /* test rows done of nte */
static inline double eval_knn_accuracy(const float *xtr, const int32_t *ytr, int64_t ntr,
                                       const float *xte, const int32_t *yte, int64_t nte, int F,
                                       int K, int k) {
    return eval_knn_accuracy_progress(xtr, ytr, ntr, xte, yte, nte, F, K, k, NULL);
}

typedef struct {
    double r1, r5, r10;        /* recall@1, @5, @10 */
    int64_t queries;           /* rows present in both views */
} eval_recall;

/* Cross-view retrieval between embeddings a (view i) and b (view j), both (n, D): for each row
 * present in both (present_a/b: (n) uint8 or NULL), query = row of a, gallery = the same rows
 * of b, rank = number of gallery rows with cosine similarity strictly greater than the matching
 * row's (so ties count in the query's favour, deterministically). a_to_b gets queries from a;
 * b_to_a (may be NULL) the reverse, from the same similarity tiles. */
void eval_retrieval_progress(eval_recall *a_to_b, eval_recall *b_to_a, const float *a, const float *b,
                             const uint8_t *present_a, const uint8_t *present_b, int64_t n, int D,
                             hcl_progress *prog);   /* query rows done of those present in both */
static inline void eval_retrieval(eval_recall *a_to_b, eval_recall *b_to_a, const float *a,
                                  const float *b, const uint8_t *present_a,
                                  const uint8_t *present_b, int64_t n, int D) {
    eval_retrieval_progress(a_to_b, b_to_a, a, b, present_a, present_b, n, D, NULL);
}

#endif
