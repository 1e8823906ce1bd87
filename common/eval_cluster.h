/* eval_cluster: clustering of an embedding scored against the labels, as the multi-view
 * clustering literature reports it:
 *   k-means    k-means++ seeding, Lloyd's iterations, the best inertia of several seeds
 *   accuracy   under the best one-to-one matching of clusters to classes (Hungarian algorithm)
 *   NMI        mutual information over the arithmetic mean of the two entropies (natural logs;
 *              scikit-learn's normalized_mutual_info_score with its default average_method)
 *   ARI        adjusted Rand index (Hubert & Arabie 1985; scikit-learn's adjusted_rand_score)
 * The scores are functions of two labelings and are checked against scikit-learn and scipy
 * (tests/test_eval_cluster.sh). Labels are in [0, k) for k given with them. */
#ifndef HCL_EVAL_CLUSTER_H
#define HCL_EVAL_CLUSTER_H

#include <stdint.h>

typedef struct {
    double accuracy, nmi, ari;
    double inertia;            /* the chosen run's sum of squared distances to the centres */
    int iters;                 /* its Lloyd iterations */
    double seconds;
} eval_cluster_result;

/* Minimum-cost assignment of the n x n matrix cost (row-major): match[i] = the column of row i. */
void eval_hungarian(const double *cost, int n, int *match);
/* Clustering accuracy: the largest fraction of the n rows whose cluster a (in [0, ka)) maps to
 * their class b (in [0, kb)) under a one-to-one map (scipy's linear_sum_assignment on the
 * contingency table, maximised). */
double eval_cluster_accuracy(const int32_t *a, int ka, const int32_t *b, int kb, int64_t n);
double eval_nmi(const int32_t *a, int ka, const int32_t *b, int kb, int64_t n);
double eval_ari(const int32_t *a, int ka, const int32_t *b, int kb, int64_t n);
/* k-means of x (n, dim) into k clusters: `seeds` runs of k-means++ and at most max_iter Lloyd
 * iterations each (seeded from seed), the one of least inertia kept: assign (n) its clusters.
 * Returns that inertia; *iters its iterations. */
double eval_kmeans(const float *x, int64_t n, int dim, int k, int seeds, int max_iter, uint64_t seed,
                   int32_t *assign, int *iters);
/* k-means with k = nclasses on x (n, dim), scored against y. */
void eval_cluster(eval_cluster_result *r, const float *x, const int32_t *y, int64_t n, int dim, int nclasses,
                  int seeds, uint64_t seed);

#endif
