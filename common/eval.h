/* eval: how good an embedding is, over flat float arrays. Features are (N, F) float32 row-major,
 * labels int32 in [0, K), masks (N, V) uint8 (1 = the view is present; NULL = all present).
 *
 *   linear probe   multinomial logistic regression on frozen, standardised features, fitted by
 *                  L-BFGS in float32 over sgemm; L2 strength chosen on a seeded held-out part of
 *                  the training split, then refitted on all of it and scored on the test split
 *   kNN            k = 20 cosine neighbours, votes weighted exp(sim / 0.07) (Wu et al. 2018)
 *   retrieval      cross-view recall@1/5/10 (queries view i, gallery view j, match = same row)
 *   alignment,     Wang & Isola 2020: alignment (alpha 2) between two views, uniformity (t 2)
 *   uniformity     of one embedding
 *   fusion         mean of the present views' normalised embeddings, renormalised
 *
 * and the embeddings themselves: eval_embed_dataset runs a model's encoders over a dataset
 * (hcl-embed, hcl-eval); eval_embeddings_save/load write and read hcl-embed's directory layout
 * (manifest.txt + VIEW.npy + fused.npy + labels.npy + mask.npy [+ VIEW.features.npy]).
 *
 * Everything sized by the data is allocated once per call; the inner loops (L-BFGS iterations,
 * similarity tiles) allocate nothing. Matrices of similarities are tiled: memory stays bounded
 * (a few MB of tiles) whatever N is. Threads: OpenBLAS's (kernels_set_threads). */
#ifndef HCL_EVAL_H
#define HCL_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "dataset.h"
#include "model.h"

/* ---- linear probe ------------------------------------------------------------------------- */

/* The objective, for standardised features x (n, F), labels y, weights W (K, F), bias b (K):
 *   f(W, b) = (1/n) sum_i [logsumexp_k (W x_i + b)_k - (W x_i + b)_{y_i}] + (lambda/2) |W|_F^2
 * (the bias is not penalised). Minimised by L-BFGS (history 10) with a strong-Wolfe line search
 * (c1 1e-4, c2 0.9, bracketing + cubic zoom, Nocedal & Wright alg. 3.5/3.6; near the optimum,
 * where float32 rounding hides the decrease, Hager & Zhang's approximate Wolfe test). One
 * evaluation is two sgemm passes over the rows in blocks; the rows are split over
 * kernels_get_threads() threads (OpenBLAS single-threaded inside: its own threading is slow for
 * these skinny products), summed in thread order: deterministic for a given thread count. */
typedef struct {
    int nlambdas;              /* grid size; 0: the default grid below */
    double lambdas[32];        /* the grid (any order; fitted from the largest down, warm start) */
    double holdout;            /* fraction of the training rows held out to choose lambda [0.15] */
    uint64_t seed;             /* seed of the held-out split (stream "probe-split") [0] */
    int max_iter;              /* L-BFGS iterations per fit [300] */
    double gtol;               /* stop when max |gradient| <= gtol [1e-4, scikit-learn's tol]; a
                                  warm start that already meets it takes no step */
    int verbose;               /* 1: one line per fit on stderr */
} eval_probe_options;

typedef struct {
    double accuracy;           /* on the test split */
    double train_accuracy;     /* on the whole training split, final fit */
    double val_accuracy;       /* on the held-out part, at the chosen lambda */
    double lambda;             /* chosen L2 strength */
    double loss;               /* final objective f on the whole training split */
    int iters;                 /* L-BFGS iterations, all fits */
    int evals;                 /* objective+gradient evaluations, all fits */
    double seconds;            /* wall time of eval_linear_probe */
} eval_probe_result;

/* Default grid: 1e-6 .. 1e1 in half-decade steps (15 values); holdout 0.15; 300 iterations. */
void eval_probe_options_default(eval_probe_options *o);

/* Standardise with the train mean/std (constant columns: std 1), choose lambda on the held-out
 * part (best held-out accuracy; ties: lower held-out cross-entropy), refit on all training rows
 * from the chosen solution, score. Rows are copied once; the inputs are not modified.
 * Needs K >= 2, ntr >= 10. Returns 0, or -1 with a line in err. */
int eval_linear_probe(eval_probe_result *res, const float *xtr, const int32_t *ytr, int64_t ntr,
                      const float *xte, const int32_t *yte, int64_t nte, int F, int K,
                      const eval_probe_options *opt, char *err);

/* One fit of the objective above on x (n, F) as given (not standardised here). w (K*F + K)
 * holds W row-major then b; it is the starting point (warm start) and receives the solution.
 * Returns iterations; *f_out = final objective (may be NULL). evals counts evaluations. */
int eval_logreg_fit(float *w, const float *x, const int32_t *y, int64_t n, int F, int K,
                    double lambda, int max_iter, double gtol, double *f_out, int *evals);
/* Objective and gradient (g may be NULL) at w, exactly as the fit computes them. */
double eval_logreg_objective(const float *w, float *g, const float *x, const int32_t *y,
                             int64_t n, int F, int K, double lambda);
/* Accuracy of argmax (W x + b) against y; ties go to the lower class. */
double eval_logreg_accuracy(const float *w, const float *x, const int32_t *y, int64_t n, int F,
                            int K);

/* ---- neighbours, retrieval, geometry ------------------------------------------------------- */

#define EVAL_KNN_K 20
#define EVAL_KNN_TEMPERATURE 0.07

/* Weighted kNN (Wu et al. 2018, "Unsupervised feature learning via non-parametric instance
 * discrimination", sec. 3.5 with k = 20 instead of 200): rows are L2-normalised, each test row
 * takes its k train rows of highest cosine similarity s (ties: lower train index), class c
 * scores sum over those neighbours of class c of exp(s / 0.07), the prediction is the best
 * score (ties: lower class). Returns the accuracy. Train rows are tiled, never all in memory
 * against all test rows. */
double eval_knn_accuracy(const float *xtr, const int32_t *ytr, int64_t ntr, const float *xte,
                         const int32_t *yte, int64_t nte, int F, int K, int k);

typedef struct {
    double r1, r5, r10;        /* recall@1, @5, @10 */
    int64_t queries;           /* rows present in both views */
} eval_recall;

/* Cross-view retrieval between embeddings a (view i) and b (view j), both (n, D): for each row
 * present in both (present_a/b: (n) uint8 or NULL), query = row of a, gallery = the same rows
 * of b, rank = number of gallery rows with cosine similarity strictly greater than the matching
 * row's (so ties count in the query's favour, deterministically). a_to_b gets queries from a;
 * b_to_a (may be NULL) the reverse, from the same similarity tiles. */
void eval_retrieval(eval_recall *a_to_b, eval_recall *b_to_a, const float *a, const float *b,
                    const uint8_t *present_a, const uint8_t *present_b, int64_t n, int D);

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

/* ---- embeddings of a dataset ---------------------------------------------------------------- */

typedef struct {
    int64_t n;
    int nviews;
    char names[HCL_MAX_VIEWS][HCL_NAME_MAX];
    int width[HCL_MAX_VIEWS];            /* D of each view's embedding */
    float *z[HCL_MAX_VIEWS];             /* (n, width[v]); absent rows are zero */
    float *fused;                        /* (n, D), NULL when the widths differ */
    int feat_width[HCL_MAX_VIEWS];
    float *features[HCL_MAX_VIEWS];      /* (n, feat_width[v]) penultimate activations, or NULL */
    uint8_t *mask;                       /* (n, nviews), NULL: every view present */
    int32_t *labels;                     /* (n), NULL without labels */
    int nclasses;                        /* max label + 1 */
} eval_embeddings;

/* PATH is a checkpoint directory (PATH/model.safetensors), the model.safetensors file, or a
 * run directory (PATH/checkpoints/latest names the newest checkpoint directory, relative to
 * PATH/checkpoints). Writes the model file's path into out (cap bytes). */
int eval_checkpoint_path(char *out, size_t cap, const char *path, char *err);

/* Embed every row of ds with m (views matched by name; names and widths must agree: otherwise
 * -1 and one line naming the view and both widths). Absent rows get zero embeddings and are
 * left out of fused. features: also keep each view's input to the last linear layer (the last
 * hidden activation). batch: rows per encoder call. */
int eval_embed_dataset(eval_embeddings *e, const hcl_model *m, const hcl_dataset *ds, int batch,
                       int features, char *err);

/* DIR/<view>.npy for each view, fused.npy, labels.npy (int64), mask.npy, <view>.features.npy,
 * manifest.txt (`view NAME` lines, written last); each durable (npy_write). */
int eval_embeddings_save(const eval_embeddings *e, const char *dir, char *err);
/* Read what eval_embeddings_save writes (float32 or float64 views; fused.npy optional: computed
 * when absent and the widths agree; features are not read). */
int eval_embeddings_load(eval_embeddings *e, const char *dir, char *err);
void eval_embeddings_free(eval_embeddings *e);

#endif
