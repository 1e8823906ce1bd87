/* eval_probe: the linear probe, how well a linear classifier on frozen features separates the
 * classes: multinomial logistic regression on standardised features, fitted by L-BFGS in float32
 * over sgemm; L2 strength chosen on a seeded held-out part of the training split, then refitted
 * on all of it and scored on the test split. Exports the probe (eval_linear_probe, its options
 * and result) and the fit and objective under it (eval_logreg_fit, eval_logreg_objective).
 * Features are (N, F) float32 row-major, labels int32 in [0, K). Everything sized by the data is
 * allocated once per call; the L-BFGS iterations allocate nothing. */
#ifndef HCL_EVAL_PROBE_H
#define HCL_EVAL_PROBE_H

#include <stdint.h>

#include "progress.h"

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
    hcl_progress *progress;    /* fits done of the sweep and the refit (nlambdas + 1), reported
                                  after each to the caller's task; NULL [default]: none */
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

#endif
