/* eval: how good an embedding is. This header gives the one evaluation pass that hcl-eval and
 * training's --eval-every (coordinator/evaluate.c) share, and includes the measures it runs:
 *
 *   eval_probe.h       linear probe (logistic regression by L-BFGS, L2 chosen on held-out rows)
 *   eval_cluster.h     k-means with k = classes, scored by matched accuracy, NMI and ARI
 *   eval_neighbours.h  weighted kNN; cross-view retrieval recall@1/5/10
 *   eval_geometry.h    alignment, uniformity (Wang & Isola 2020); fusion of views
 *   eval_embed.h       the embeddings of a dataset (a model's encoders), as files
 *
 * The pass scores representations, each a training split (the reference: the probe's fits, the
 * kNN bank) against a test split (scored): every view of two splits' embeddings on the rows
 * where it is present, their concatenation and their fused embedding on the rows with any view
 * present, and any array the caller adds (hcl-eval's raw inputs). Then the geometry of one set
 * of embeddings: for each pair of views alignment and recall both ways, for each view (and the
 * fused one) uniformity. The caller says what to compute and writes the results its own way
 * (hcl-eval: a table or JSON; evaluate.c: a metrics.jsonl line). */
#ifndef HCL_EVAL_H
#define HCL_EVAL_H

#include <stdint.h>

#include "eval_cluster.h"
#include "eval_embed.h"
#include "eval_geometry.h"
#include "eval_neighbours.h"
#include "eval_probe.h"
#include "progress.h"

#define EVAL_MAX_REPS (HCL_MAX_VIEWS + 3)                         /* views, concat, fused, raw */
#define EVAL_MAX_PAIRS (HCL_MAX_VIEWS * (HCL_MAX_VIEWS - 1) / 2)

/* One representation: training rows tr (ntr, dim) and test rows te (nte, dim) of the pass's
 * splits, the rows keep_tr/keep_te (NULL: all) used. */
typedef struct {
    char name[HCL_NAME_MAX];
    int dim;
    const float *tr, *te;
    const uint8_t *keep_tr, *keep_te;
    int do_probe, do_knn;          /* what to compute: the caller sets them (0 after init) */
    int do_cluster;                /* k-means of the test rows it keeps */
    eval_probe_result probe;
    double knn;                    /* kNN accuracy; NaN when a split has none of the rows */
    eval_cluster_result cluster;
    int probed, knned, clustered;  /* computed */
} eval_rep;

typedef struct {
    int i, j;                      /* views of the geometry's embeddings, i < j */
    eval_recall ij, ji;            /* queries from view i, from view j; NaN when not computed */
    double alignment;              /* NaN when the widths differ */
} eval_pair;

typedef struct {
    eval_probe_options probe;      /* of every probe */
    int knn_k;                     /* neighbours [EVAL_KNN_K] */
    int retrieval;                 /* recall of each pair of views [1] */
    int fused_uniformity;          /* uniformity of the fused embedding too [1] */
    int cluster_seeds;             /* k-means runs per clustering, the best inertia kept [10] */
    uint64_t seed;                 /* the uniformity subsample's [0] */
    hcl_progress *progress;        /* one task per probe (its fits), kNN (test rows) and
                                      retrieval (query rows): progress.h; NULL [default]: none */
} eval_pass_options;

typedef struct {
    /* the splits' labels: from the embeddings given to eval_pass_init, else set by the caller */
    const int32_t *ytr, *yte;
    int64_t ntr, nte;
    int nclasses;                  /* of the two splits together */
    int nreps;
    eval_rep rep[EVAL_MAX_REPS];
    const eval_embeddings *geom;   /* the geometry's embeddings, NULL: no geometry */
    int npairs;
    eval_pair pair[EVAL_MAX_PAIRS];
    double uniformity[HCL_MAX_VIEWS + 1];   /* each view of geom, then fused (NaN: not computed) */
    double seconds_probe, seconds_knn, seconds_geometry, seconds_cluster;
    int nowned;
    void *owned[2 * HCL_MAX_VIEWS + 4];     /* arrays the pass made (row masks, concat) */
} eval_pass;

void eval_pass_options_default(eval_pass_options *o);

/* The representations of two splits' embeddings tr, te (the same views and widths; both may be
 * NULL: no representation yet, labels unset): each view, the concatenation of all views when
 * concat and there are several, the fused embedding when both have one. Labels and nclasses from
 * tr and te. geom: the embeddings whose geometry eval_pass_run computes (NULL: none). */
void eval_pass_init(eval_pass *p, const eval_embeddings *tr, const eval_embeddings *te, int concat,
                    const eval_embeddings *geom);
/* Another representation whose arrays the caller keeps (hcl-eval's raw inputs); returns it. */
eval_rep *eval_pass_add(eval_pass *p, const char *name, int dim, const float *tr, const float *te,
                        const uint8_t *keep_tr, const uint8_t *keep_te);
/* Each representation's probe and kNN as asked, in order, then the geometry. Returns 0, or -1
 * with one line in err ("probe on NAME: ..."). */
int eval_pass_run(eval_pass *p, const eval_pass_options *o, char *err);
void eval_pass_free(eval_pass *p);

#endif
