/* eval: see eval.h. Linear probe (L-BFGS over sgemm), weighted kNN, cross-view retrieval,
 * alignment/uniformity, fusion, and the embeddings of a dataset as files. */
#include "eval.h"

#include <cblas.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels.h"
#include "model_io.h"
#include "npy.h"
#include "rng.h"
#include "util.h"

#define EVAL_ROWS 1024          /* rows per logreg block and per similarity tile side */
#define EVAL_KNN_QUERIES 256    /* test rows per kNN block */
#define EVAL_KNN_TILE 4096      /* train rows per kNN tile */
#define LBFGS_M 10
#define LS_MAX 25               /* evaluations per line search */
#define LS_C1 1e-4
#define LS_C2 0.9

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Row i of x (n, D) normalised into out (D) in float (norm in double, clamped at 1e-12). */
static void eval_normalize_row(float *out, const float *x, int D) {
    double s = 0;
    for (int j = 0; j < D; j++) s += (double)x[j] * x[j];
    double inv = 1.0 / fmax(sqrt(s), 1e-12);
    for (int j = 0; j < D; j++) out[j] = (float)(x[j] * inv);
}

/* ======================================================================================= */
/* ---- logistic regression: objective and gradient -------------------------------------- */

/* The objective over a range of rows [r0, r1) of x (n, F), for w (K*F + K floats: W row-major,
 * then b). Per block of EVAL_ROWS rows: logits = x W^T + b (sgemm), softmax, residual
 * (p - onehot)/n, then g_W (K, F) += residual^T x (sgemm) while the block is in cache. The
 * part's g and gb are overwritten; the sum of the rows' cross-entropy goes to loss. */
typedef struct {
    int64_t r0, r1;
    float *logits;          /* (EVAL_ROWS, K) */
    float *g;               /* (K*F) gradient of the data term over this part's rows */
    double *gb;             /* (K) */
    double loss;
} logreg_part;

/* The objective's evaluations, split over threads by rows. OpenBLAS runs with one thread inside
 * (its own threading is slow on these skinny products: N = K is small); T threads each take a
 * contiguous part of the rows and the parts are summed in thread order, so for a given thread
 * count the result does not depend on timing. Threads live for the pool; each evaluation is
 * two barrier waits. */
#define EVAL_MAX_THREADS 64

typedef struct logreg_pool {
    const float *x;
    const int32_t *y;
    int64_t n;
    int F, K, nthreads, blas_threads;
    const float *w;         /* the point of the current evaluation */
    int want_grad, quit;
    logreg_part part[EVAL_MAX_THREADS];
    struct logreg_worker { struct logreg_pool *pool; int t; } worker[EVAL_MAX_THREADS];
    pthread_t tid[EVAL_MAX_THREADS];
    pthread_barrier_t start, done;
} logreg_pool;

static void logreg_part_run(logreg_pool *p, logreg_part *pt) {
    const int F = p->F, K = p->K;
    const float *W = p->w, *b = p->w + (int64_t)K * F;
    const float inv_n = (float)(1.0 / (double)p->n);
    const int g = p->want_grad;
    pt->loss = 0;
    if (g) {
        for (int k = 0; k < K; k++) pt->gb[k] = 0;
        if (pt->r1 <= pt->r0) memset(pt->g, 0, sizeof(float) * (size_t)K * F);
    }
    for (int64_t r0 = pt->r0; r0 < pt->r1; r0 += EVAL_ROWS) {
        int nb = (int)min64(EVAL_ROWS, pt->r1 - r0);
        const float *xb = p->x + r0 * F;
        float *logits = pt->logits;
        // logits (nb, K) = xb (nb, F) @ W^T (F, K)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, K, F, 1.0f, xb, F, W, F, 0.0f,
                    logits, K);
        for (int i = 0; i < nb; i++) {
            float *l = logits + (int64_t)i * K;
            float mx = -FLT_MAX;
            for (int k = 0; k < K; k++) {
                l[k] += b[k];
                if (l[k] > mx) mx = l[k];
            }
            float s = 0;
            for (int k = 0; k < K; k++) s += expf(l[k] - mx);
            float lse = mx + logf(s);
            int yi = p->y[r0 + i];
            pt->loss += (double)(lse - l[yi]);
            if (g) {
                for (int k = 0; k < K; k++) {
                    float r = expf(l[k] - lse) - (k == yi ? 1.0f : 0.0f);
                    l[k] = r * inv_n;
                    pt->gb[k] += l[k];
                }
            }
        }
        if (g)   // g_W (K, F) += residual^T (K, nb) @ xb (nb, F)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, F, nb, 1.0f, logits, K, xb, F,
                        r0 == pt->r0 ? 0.0f : 1.0f, pt->g, F);
    }
}

static void *logreg_worker_main(void *arg) {
    struct logreg_worker *wk = arg;
    logreg_pool *p = wk->pool;
    for (;;) {
        pthread_barrier_wait(&p->start);
        if (p->quit) break;
        logreg_part_run(p, &p->part[wk->t]);
        pthread_barrier_wait(&p->done);
    }
    return NULL;
}

/* Threads: kernels_get_threads() at init, at most one per EVAL_ROWS rows. */
static void logreg_pool_init(logreg_pool *p, const float *x, const int32_t *y, int64_t n, int F,
                             int K) {
    memset(p, 0, sizeof *p);
    p->x = x;
    p->y = y;
    p->n = n;
    p->F = F;
    p->K = K;
    p->blas_threads = kernels_get_threads();
    int T = p->blas_threads;
    if (T > EVAL_MAX_THREADS) T = EVAL_MAX_THREADS;
    if (T > (n + EVAL_ROWS - 1) / EVAL_ROWS) T = (int)((n + EVAL_ROWS - 1) / EVAL_ROWS);
    if (T < 1) T = 1;
    p->nthreads = T;
    for (int t = 0; t < T; t++) {
        logreg_part *pt = &p->part[t];
        pt->r0 = n * t / T;
        pt->r1 = n * (t + 1) / T;
        pt->logits = hcl_floats((size_t)EVAL_ROWS * K);
        pt->g = hcl_floats((size_t)K * F);
        pt->gb = hcl_calloc((size_t)K, sizeof(double));
    }
    if (T > 1) {
        kernels_set_threads(1);
        HCL_CHECK(pthread_barrier_init(&p->start, NULL, (unsigned)T) == 0, "pthread_barrier_init");
        HCL_CHECK(pthread_barrier_init(&p->done, NULL, (unsigned)T) == 0, "pthread_barrier_init");
        for (int t = 1; t < T; t++) {
            p->worker[t].pool = p;
            p->worker[t].t = t;
            HCL_CHECK(pthread_create(&p->tid[t], NULL, logreg_worker_main, &p->worker[t]) == 0,
                      "pthread_create (thread %d of %d)", t, T);
        }
    }
}

static void logreg_pool_free(logreg_pool *p) {
    if (p->nthreads > 1) {
        p->quit = 1;
        pthread_barrier_wait(&p->start);
        for (int t = 1; t < p->nthreads; t++) pthread_join(p->tid[t], NULL);
        pthread_barrier_destroy(&p->start);
        pthread_barrier_destroy(&p->done);
        kernels_set_threads(p->blas_threads);
    }
    for (int t = 0; t < p->nthreads; t++) {
        free(p->part[t].logits);
        free(p->part[t].g);
        free(p->part[t].gb);
    }
}

/* f and (when g) the gradient at w. */
static double logreg_pool_eval(logreg_pool *p, const float *w, float *g, double lambda) {
    const int F = p->F, K = p->K;
    const int64_t KF = (int64_t)K * F;
    p->w = w;
    p->want_grad = g != NULL;
    if (p->nthreads > 1) pthread_barrier_wait(&p->start);
    logreg_part_run(p, &p->part[0]);
    if (p->nthreads > 1) pthread_barrier_wait(&p->done);
    double loss = 0, reg = 0;
    for (int t = 0; t < p->nthreads; t++) loss += p->part[t].loss;
    for (int64_t i = 0; i < KF; i++) reg += (double)w[i] * w[i];
    if (g) {
        for (int64_t i = 0; i < KF; i++) {
            float s = p->part[0].g[i];
            for (int t = 1; t < p->nthreads; t++) s += p->part[t].g[i];
            g[i] = s + (float)lambda * w[i];
        }
        for (int k = 0; k < K; k++) {
            double s = 0;
            for (int t = 0; t < p->nthreads; t++) s += p->part[t].gb[k];
            g[KF + k] = (float)s;
        }
    }
    return loss / (double)p->n + 0.5 * lambda * reg;
}

double eval_logreg_objective(const float *w, float *g, const float *x, const int32_t *y,
                             int64_t n, int F, int K, double lambda) {
    logreg_pool p;
    logreg_pool_init(&p, x, y, n, F, K);
    double f = logreg_pool_eval(&p, w, g, lambda);
    logreg_pool_free(&p);
    return f;
}

/* Accuracy and mean cross-entropy (without the penalty) of w on x. */
static double logreg_score(const float *w, float *logits, const float *x, const int32_t *y,
                           int64_t n, int F, int K, double *ce) {
    const float *b = w + (int64_t)K * F;
    int64_t right = 0;
    double loss = 0;
    for (int64_t r0 = 0; r0 < n; r0 += EVAL_ROWS) {
        int nb = (int)min64(EVAL_ROWS, n - r0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, K, F, 1.0f, x + r0 * F, F, w, F,
                    0.0f, logits, K);
        for (int i = 0; i < nb; i++) {
            float *l = logits + (int64_t)i * K;
            int best = 0;
            for (int k = 0; k < K; k++) {
                l[k] += b[k];
                if (l[k] > l[best]) best = k;
            }
            float s = 0;
            for (int k = 0; k < K; k++) s += expf(l[k] - l[best]);
            loss += (double)(l[best] + logf(s) - l[y[r0 + i]]);
            right += best == y[r0 + i];
        }
    }
    if (ce) *ce = n ? loss / (double)n : NAN;
    return n ? (double)right / (double)n : NAN;
}

double eval_logreg_accuracy(const float *w, const float *x, const int32_t *y, int64_t n, int F,
                            int K) {
    float *logits = hcl_floats((size_t)EVAL_ROWS * K);
    double acc = logreg_score(w, logits, x, y, n, F, K, NULL);
    free(logits);
    return acc;
}

/* ---- L-BFGS with a strong-Wolfe line search ------------------------------------------- */

typedef struct {
    logreg_pool *pool;
    double lambda;
    int64_t P;                  /* K*F + K */
    /* scratch, sized once per fit */
    float *wf, *gf;
    double *xt, *gt;            /* trial point and its gradient */
    double *xlo, *glo;          /* best Armijo point of a zoom */
    int evals;
} lbfgs_ctx;

static double dot(const double *a, const double *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* f and g (double) at xd. */
static double lbfgs_eval(lbfgs_ctx *c, const double *xd, double *g) {
    for (int64_t i = 0; i < c->P; i++) c->wf[i] = (float)xd[i];
    double f = logreg_pool_eval(c->pool, c->wf, c->gf, c->lambda);
    for (int64_t i = 0; i < c->P; i++) g[i] = c->gf[i];
    c->evals++;
    return f;
}

/* Minimiser of the cubic through (a, fa, da), (b, fb, db), kept inside [lo + 0.1 w, hi - 0.1 w]
 * of the interval (bisection when the cubic has no usable minimiser). */
static double cubic_step(double a, double fa, double da, double b, double fb, double db) {
    double lo = fmin(a, b), hi = fmax(a, b), w = hi - lo;
    double d1 = da + db - 3.0 * (fa - fb) / (a - b);
    double disc = d1 * d1 - da * db;
    double t = 0.5 * (a + b);
    if (disc >= 0 && isfinite(disc)) {
        double d2 = (b > a ? 1.0 : -1.0) * sqrt(disc);
        double den = db - da + 2.0 * d2;
        if (den != 0) t = b - (b - a) * (db + d2 - d1) / den;
    }
    if (!isfinite(t) || t < lo + 0.1 * w || t > hi - 0.1 * w) t = 0.5 * (a + b);
    return t;
}

/* Strong-Wolfe line search from x (f0, g0) along d (Nocedal & Wright alg. 3.5 and 3.6).
 * On success xn, gn, *fn hold the accepted point; returns 0. When no Wolfe point is found but
 * a point with sufficient decrease was, that point is returned (1); -1: no decrease at all. */
static int lbfgs_linesearch(lbfgs_ctx *c, const double *x, double f0, const double *g0,
                            const double *d, double a1, double *xn, double *gn, double *fn) {
    const int64_t P = c->P;
    const double dphi0 = dot(g0, d, P);
    double a_prev = 0, f_prev = f0, dphi_prev = dphi0;
    double a = a1, lo = 0, hi = 0, f_lo = f0, f_hi = 0, d_lo = dphi0, d_hi = 0;
    int have_lo = 0, zoom = 0;
    double f = f0;
    for (int it = 0; it < LS_MAX; it++) {
        if (zoom) a = cubic_step(lo, f_lo, d_lo, hi, f_hi, d_hi);
        for (int64_t i = 0; i < P; i++) c->xt[i] = x[i] + a * d[i];
        f = lbfgs_eval(c, c->xt, c->gt);
        double dphi = dot(c->gt, d, P);
        // sufficient decrease; near the optimum, where the float32 objective's rounding hides
        // the decrease, the approximate Wolfe test of Hager & Zhang (2005) uses the (more
        // precise) slope instead: f within 1e-6 |f0| of f0 and phi'(a) <= (2 c1 - 1) phi'(0)
        int armijo = isfinite(f) && (f <= f0 + LS_C1 * a * dphi0 ||
                                     (f <= f0 + 1e-6 * fabs(f0) && dphi <= (2 * LS_C1 - 1) * dphi0));
        if (!zoom) {
            if (!armijo || (it > 0 && f >= f_prev)) {
                lo = a_prev; f_lo = f_prev; d_lo = dphi_prev;
                hi = a; f_hi = isfinite(f) ? f : f0 + 1e30; d_hi = isfinite(dphi) ? dphi : 0;
                zoom = 1;
                continue;
            }
            if (fabs(dphi) <= -LS_C2 * dphi0) goto accept;
            memcpy(c->xlo, c->xt, sizeof(double) * (size_t)P);
            memcpy(c->glo, c->gt, sizeof(double) * (size_t)P);
            have_lo = 1;
            if (dphi >= 0) {
                lo = a; f_lo = f; d_lo = dphi;
                hi = a_prev; f_hi = f_prev; d_hi = dphi_prev;
                zoom = 1;
                continue;
            }
            a_prev = a; f_prev = f; dphi_prev = dphi;
            a *= 2.5;
        } else {
            if (!armijo || f >= f_lo) {
                hi = a; f_hi = isfinite(f) ? f : f0 + 1e30; d_hi = isfinite(dphi) ? dphi : 0;
            } else {
                if (fabs(dphi) <= -LS_C2 * dphi0) goto accept;
                memcpy(c->xlo, c->xt, sizeof(double) * (size_t)P);
                memcpy(c->glo, c->gt, sizeof(double) * (size_t)P);
                have_lo = 1;
                if (dphi * (hi - lo) >= 0) { hi = lo; f_hi = f_lo; d_hi = d_lo; }
                lo = a; f_lo = f; d_lo = dphi;
            }
            if (fabs(hi - lo) <= 1e-12 * fmax(1.0, fabs(lo))) break;
        }
    }
    if (have_lo && f_lo < f0) {
        memcpy(xn, c->xlo, sizeof(double) * (size_t)P);
        memcpy(gn, c->glo, sizeof(double) * (size_t)P);
        *fn = f_lo;
        return 1;
    }
    return -1;
accept:
    memcpy(xn, c->xt, sizeof(double) * (size_t)P);
    memcpy(gn, c->gt, sizeof(double) * (size_t)P);
    *fn = f;
    return 0;
}

int eval_logreg_fit(float *w, const float *x, const int32_t *y, int64_t n, int F, int K,
                    double lambda, int max_iter, double gtol, double *f_out, int *evals) {
    HCL_CHECK(n > 0 && F > 0 && K > 1, "eval_logreg_fit: n %lld F %d K %d", (long long)n, F, K);
    const int64_t P = (int64_t)K * F + K;
    logreg_pool pool;
    logreg_pool_init(&pool, x, y, n, F, K);
    lbfgs_ctx c = {.pool = &pool, .lambda = lambda, .P = P};
    c.wf = hcl_floats((size_t)P);
    c.gf = hcl_floats((size_t)P);
    double *buf = hcl_calloc((size_t)P * (9 + 2 * LBFGS_M), sizeof(double));
    double *xc = buf, *g = buf + P, *d = buf + 2 * P, *xn = buf + 3 * P, *gn = buf + 4 * P;
    c.xt = buf + 5 * P;
    c.gt = buf + 6 * P;
    c.xlo = buf + 7 * P;
    c.glo = buf + 8 * P;
    double *S = buf + 9 * P, *Y = S + LBFGS_M * P;
    double rho[LBFGS_M], alpha[LBFGS_M];

    for (int64_t i = 0; i < P; i++) xc[i] = w[i];
    double f = lbfgs_eval(&c, xc, g);
    int mem = 0, head = 0, it = 0;   /* pairs stored; next slot */
    for (; it < max_iter; it++) {
        double ginf = 0;
        for (int64_t i = 0; i < P; i++) ginf = fmax(ginf, fabs(g[i]));
        if (ginf <= gtol) break;
        // two-loop recursion: d = -H g
        for (int64_t i = 0; i < P; i++) d[i] = -g[i];
        for (int k = 0; k < mem; k++) {
            int j = (head - 1 - k + LBFGS_M) % LBFGS_M;
            alpha[j] = rho[j] * dot(S + j * P, d, P);
            for (int64_t i = 0; i < P; i++) d[i] -= alpha[j] * Y[j * P + i];
        }
        if (mem > 0) {
            int j = (head - 1 + LBFGS_M) % LBFGS_M;
            double gamma = 1.0 / (rho[j] * dot(Y + j * P, Y + j * P, P));
            for (int64_t i = 0; i < P; i++) d[i] *= gamma;
        }
        for (int k = mem - 1; k >= 0; k--) {
            int j = (head - 1 - k + LBFGS_M) % LBFGS_M;
            double beta = rho[j] * dot(Y + j * P, d, P);
            for (int64_t i = 0; i < P; i++) d[i] += (alpha[j] - beta) * S[j * P + i];
        }
        if (dot(d, g, P) >= 0) {   // not a descent direction: restart from steepest descent
            mem = 0;
            for (int64_t i = 0; i < P; i++) d[i] = -g[i];
        }
        double a1 = 1.0;
        if (mem == 0) a1 = fmin(1.0, 1.0 / sqrt(dot(g, g, P)));
        double fn;
        int ls = lbfgs_linesearch(&c, xc, f, g, d, a1, xn, gn, &fn);
        if (ls < 0) {
            if (mem == 0) break;   // no decrease even along -g: at the precision floor
            mem = 0;
            it--;
            continue;
        }
        // store s = xn - x, y = gn - g when the curvature is positive
        double *s = S + head * P, *yv = Y + head * P;
        for (int64_t i = 0; i < P; i++) {
            s[i] = xn[i] - xc[i];
            yv[i] = gn[i] - g[i];
        }
        double sy = dot(s, yv, P);
        if (sy > 1e-12 * dot(yv, yv, P)) {
            rho[head] = 1.0 / sy;
            head = (head + 1) % LBFGS_M;
            if (mem < LBFGS_M) mem++;
        }
        double fold = f;
        memcpy(xc, xn, sizeof(double) * (size_t)P);
        memcpy(g, gn, sizeof(double) * (size_t)P);
        f = fn;
        if (f <= fold && fold - f <= 1e-12 * fmax(1.0, fabs(f))) { it++; break; }
    }
    for (int64_t i = 0; i < P; i++) w[i] = (float)xc[i];
    if (f_out) *f_out = f;
    if (evals) *evals += c.evals;
    free(buf);
    free(c.wf);
    free(c.gf);
    logreg_pool_free(&pool);
    return it;
}

/* ---- the probe -------------------------------------------------------------------------- */

void eval_probe_options_default(eval_probe_options *o) {
    memset(o, 0, sizeof *o);
    o->nlambdas = 15;
    for (int i = 0; i < 15; i++) o->lambdas[i] = pow(10.0, -6.0 + 0.5 * i);
    o->holdout = 0.15;
    o->seed = 0;
    o->max_iter = 300;
    o->gtol = 1e-4;
}

static int cmp_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int eval_linear_probe(eval_probe_result *res, const float *xtr, const int32_t *ytr, int64_t ntr,
                      const float *xte, const int32_t *yte, int64_t nte, int F, int K,
                      const eval_probe_options *opt, char *err) {
    double t0 = hcl_now();
    eval_probe_options def;
    if (!opt) {
        eval_probe_options_default(&def);
        opt = &def;
    }
    memset(res, 0, sizeof *res);
    if (K < 2) return hcl_err(err, "linear probe: %d classes (need at least 2)", K);
    if (ntr < 10) return hcl_err(err, "linear probe: %lld training rows (need at least 10)",
                                 (long long)ntr);
    if (F < 1) return hcl_err(err, "linear probe: feature width %d", F);
    if (opt->nlambdas < 1 || opt->nlambdas > 32)
        return hcl_err(err, "linear probe: %d L2 strengths (want 1..32)", opt->nlambdas);
    if (!(opt->holdout > 0 && opt->holdout < 1))
        return hcl_err(err, "linear probe: held-out fraction %g (want 0 < f < 1)", opt->holdout);
    for (int64_t i = 0; i < ntr; i++)
        if (ytr[i] < 0 || ytr[i] >= K)
            return hcl_err(err, "linear probe: train label %d at row %lld (want 0..%d)", ytr[i],
                           (long long)i, K - 1);
    for (int64_t i = 0; i < nte; i++)
        if (yte[i] < 0 || yte[i] >= K)
            return hcl_err(err, "linear probe: test label %d at row %lld (want 0..%d)", yte[i],
                           (long long)i, K - 1);

    // standardisation with the training mean and std (population), in double
    double *mu = hcl_calloc((size_t)F, sizeof(double)), *sd = hcl_calloc((size_t)F, sizeof(double));
    for (int64_t i = 0; i < ntr; i++)
        for (int j = 0; j < F; j++) mu[j] += xtr[i * F + j];
    for (int j = 0; j < F; j++) mu[j] /= (double)ntr;
    for (int64_t i = 0; i < ntr; i++)
        for (int j = 0; j < F; j++) {
            double c = xtr[i * F + j] - mu[j];
            sd[j] += c * c;
        }
    for (int j = 0; j < F; j++) {
        sd[j] = sqrt(sd[j] / (double)ntr);
        sd[j] = sd[j] > 1e-12 * fmax(1.0, fabs(mu[j])) ? 1.0 / sd[j] : 1.0;   // now 1/std
    }

    // training rows in split order: the fit part first, the held-out part last (sorted within)
    int64_t nval = (int64_t)llround(opt->holdout * (double)ntr);
    if (nval < 1) nval = 1;
    if (nval > ntr - 1) nval = ntr - 1;
    int64_t nfit = ntr - nval;
    int64_t *perm = hcl_malloc(sizeof(int64_t) * (size_t)ntr);
    hcl_rng r;
    rng_derive(&r, opt->seed, "probe-split", 0);
    rng_permutation(&r, perm, ntr);
    qsort(perm, (size_t)nfit, sizeof(int64_t), cmp_i64);
    qsort(perm + nfit, (size_t)nval, sizeof(int64_t), cmp_i64);
    float *xs = hcl_floats((size_t)ntr * F);
    int32_t *ys = hcl_malloc(sizeof(int32_t) * (size_t)ntr);
    for (int64_t i = 0; i < ntr; i++) {
        const float *src = xtr + perm[i] * F;
        float *dst = xs + i * F;
        for (int j = 0; j < F; j++) dst[j] = (float)((src[j] - mu[j]) * sd[j]);
        ys[i] = ytr[perm[i]];
    }
    float *xt = hcl_floats((size_t)(nte > 0 ? nte : 1) * F);
    for (int64_t i = 0; i < nte; i++)
        for (int j = 0; j < F; j++) xt[i * F + j] = (float)((xte[i * F + j] - mu[j]) * sd[j]);

    // the grid, strongest first, each fit warm-started from the previous solution
    const int64_t P = (int64_t)K * F + K;
    float *w = hcl_floats((size_t)P), *best = hcl_floats((size_t)P);
    float *logits = hcl_floats((size_t)EVAL_ROWS * K);
    double grid[32];
    memcpy(grid, opt->lambdas, sizeof(double) * (size_t)opt->nlambdas);
    qsort(grid, (size_t)opt->nlambdas, sizeof(double), cmp_desc);
    double best_acc = -1, best_ce = INFINITY;
    for (int li = 0; li < opt->nlambdas; li++) {
        double tf = hcl_now(), f;
        int ev = 0;
        int iters = eval_logreg_fit(w, xs, ys, nfit, F, K, grid[li], opt->max_iter, opt->gtol,
                                    &f, &ev);
        double ce, acc = logreg_score(w, logits, xs + nfit * F, ys + nfit, nval, F, K, &ce);
        res->iters += iters;
        res->evals += ev;
        if (opt->verbose)
            fprintf(stderr, "probe: lambda %-8.3g iters %3d evals %3d f %.6f held-out acc %.4f "
                    "ce %.4f  %.2f s\n", grid[li], iters, ev, f, acc, ce, hcl_now() - tf);
        if (acc > best_acc || (acc == best_acc && ce < best_ce)) {
            best_acc = acc;
            best_ce = ce;
            res->lambda = grid[li];
            memcpy(best, w, sizeof(float) * (size_t)P);
        }
    }
    res->val_accuracy = best_acc;

    // refit on every training row from the chosen solution
    int ev = 0;
    res->iters += eval_logreg_fit(best, xs, ys, ntr, F, K, res->lambda, opt->max_iter, opt->gtol,
                                  &res->loss, &ev);
    res->evals += ev;
    res->train_accuracy = logreg_score(best, logits, xs, ys, ntr, F, K, NULL);
    res->accuracy = nte > 0 ? logreg_score(best, logits, xt, yte, nte, F, K, NULL) : NAN;
    free(mu);
    free(sd);
    free(perm);
    free(xs);
    free(ys);
    free(xt);
    free(w);
    free(best);
    free(logits);
    res->seconds = hcl_now() - t0;
    return 0;
}

/* ======================================================================================= */
/* ---- kNN -------------------------------------------------------------------------------- */

static float *eval_normalized_copy(const float *x, int64_t n, int D) {
    float *out = hcl_floats((size_t)(n > 0 ? n : 1) * D);
    for (int64_t i = 0; i < n; i++) eval_normalize_row(out + i * D, x + i * D, D);
    return out;
}

double eval_knn_accuracy(const float *xtr, const int32_t *ytr, int64_t ntr, const float *xte,
                         const int32_t *yte, int64_t nte, int F, int K, int k) {
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

void eval_retrieval(eval_recall *a_to_b, eval_recall *b_to_a, const float *a, const float *b,
                    const uint8_t *present_a, const uint8_t *present_b, int64_t n, int D) {
    float *A, *B;
    int64_t m = eval_pack_pair(&A, &B, a, b, present_a, present_b, n, D);
    int64_t *rank_ab = hcl_calloc((size_t)(m > 0 ? m : 1), sizeof(int64_t));
    int64_t *rank_ba = b_to_a ? hcl_calloc((size_t)(m > 0 ? m : 1), sizeof(int64_t)) : NULL;
    float *diag = hcl_floats((size_t)(m > 0 ? m : 1));
    float *sim = hcl_floats((size_t)EVAL_ROWS * EVAL_ROWS);
    // diagonal tiles first: they hold every matching similarity
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

/* ======================================================================================= */
/* ---- embeddings of a dataset ------------------------------------------------------------- */

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

int eval_checkpoint_path(char *out, size_t cap, const char *path, char *err) {
    char buf[2048];
    if (is_file(path)) {
        if (snprintf(out, cap, "%s", path) >= (int)cap) return hcl_err(err, "%s: path too long", path);
        return 0;
    }
    if (!is_dir(path))
        return hcl_err(err, "%s: no such checkpoint (want a checkpoint directory, its "
                       "model.safetensors, or a run directory)", path);
    snprintf(buf, sizeof buf, "%s/model.safetensors", path);
    if (is_file(buf)) {
        if (snprintf(out, cap, "%s", buf) >= (int)cap) return hcl_err(err, "%s: path too long", buf);
        return 0;
    }
    snprintf(buf, sizeof buf, "%s/checkpoints/latest", path);
    FILE *fp = fopen(buf, "r");
    if (!fp)
        return hcl_err(err, "%s: neither a checkpoint (no model.safetensors) nor a run directory "
                       "with checkpoints (no checkpoints/latest)", path);
    char name[512] = "";
    char *ok = fgets(name, sizeof name, fp);
    fclose(fp);
    name[strcspn(name, "\r\n")] = 0;
    if (!ok || !name[0] || strchr(name, '/'))
        return hcl_err(err, "%s: does not name a checkpoint directory ('%s')", buf, name);
    if (snprintf(out, cap, "%s/checkpoints/%s/model.safetensors", path, name) >= (int)cap)
        return hcl_err(err, "%s: path too long", path);
    if (!is_file(out))
        return hcl_err(err, "%s: names '%s', but %s does not exist", buf, name, out);
    return 0;
}

static void eval_embeddings_clear(eval_embeddings *e) {
    memset(e, 0, sizeof *e);
}

void eval_embeddings_free(eval_embeddings *e) {
    for (int v = 0; v < HCL_MAX_VIEWS; v++) {
        free(e->z[v]);
        free(e->features[v]);
    }
    free(e->fused);
    free(e->mask);
    free(e->labels);
    eval_embeddings_clear(e);
}

int eval_embed_dataset(eval_embeddings *e, const hcl_model *m, const hcl_dataset *ds, int batch,
                       int features, char *err) {
    const hcl_model_config *c = &m->cfg;
    eval_embeddings_clear(e);
    HCL_CHECK(batch > 0, "eval_embed_dataset: batch %d", batch);
    int dv_of[HCL_MAX_VIEWS];
    for (int v = 0; v < c->nviews; v++) {
        dv_of[v] = dataset_view_index(ds, c->names[v]);
        if (dv_of[v] < 0)
            return hcl_err(err, "%s: no view '%s' (the model's views: %d, the data's: %d; names "
                           "must match)", ds->dir, c->names[v], c->nviews, ds->nviews);
        if (ds->widths[dv_of[v]] != c->in_width[v])
            return hcl_err(err, "%s: view '%s' has width %lld, the model's encoder takes %d",
                           ds->dir, c->names[v], (long long)ds->widths[dv_of[v]], c->in_width[v]);
    }
    for (int dv = 0; dv < ds->nviews; dv++) {
        int known = 0;
        for (int v = 0; v < c->nviews; v++) known |= dv_of[v] == dv;
        if (!known)
            return hcl_err(err, "%s: view '%s' is not a view of the model", ds->dir,
                           ds->names[dv]);
    }
    const int64_t n = ds->n;
    const int D = c->dim;
    e->n = n;
    e->nviews = c->nviews;
    int in_max = 1;
    for (int v = 0; v < c->nviews; v++) {
        memcpy(e->names[v], c->names[v], HCL_NAME_MAX);
        e->width[v] = D;
        e->z[v] = hcl_floats((size_t)(n > 0 ? n : 1) * D);
        e->feat_width[v] = c->nhidden > 0 ? c->hidden[c->nhidden - 1] : c->in_width[v];
        if (features) e->features[v] = hcl_floats((size_t)(n > 0 ? n : 1) * e->feat_width[v]);
        if (c->in_width[v] > in_max) in_max = c->in_width[v];
    }
    if (ds->has_mask) {
        e->mask = hcl_malloc((size_t)(n > 0 ? n : 1) * c->nviews);
        for (int64_t i = 0; i < n; i++)
            for (int v = 0; v < c->nviews; v++)
                e->mask[i * c->nviews + v] = (uint8_t)dataset_present(ds, i, dv_of[v]);
    }
    if (ds->has_labels) {
        e->labels = hcl_malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
        memcpy(e->labels, ds->labels, sizeof(int32_t) * (size_t)n);
        e->nclasses = ds->nclasses;
    }

    // each view: present rows in batches of `batch`, encoded, scattered back to their rows
    hcl_model_acts acts;
    model_acts_init(&acts, m, batch);
    int64_t *idx = hcl_malloc(sizeof(int64_t) * (size_t)batch);
    float *x = hcl_floats((size_t)batch * in_max);
    for (int v = 0; v < c->nviews; v++) {
        const int last = m->enc[v].nlayers - 1, fw = e->feat_width[v];
        int64_t r = 0;
        while (r < n) {
            int cnt = 0;
            for (; r < n && cnt < batch; r++)
                if (!e->mask || e->mask[r * c->nviews + v]) idx[cnt++] = r;
            if (cnt == 0) break;
            dataset_gather_view(ds, dv_of[v], idx, cnt, x);
            const float *z = model_encode(m, &acts, v, x, cnt);
            const float *h = last > 0 ? acts.v[v].act[last - 1] : x;
            for (int i = 0; i < cnt; i++) {
                memcpy(e->z[v] + idx[i] * D, z + (int64_t)i * D, sizeof(float) * (size_t)D);
                if (features)
                    memcpy(e->features[v] + idx[i] * fw, h + (int64_t)i * fw,
                           sizeof(float) * (size_t)fw);
            }
        }
    }
    free(idx);
    free(x);
    model_acts_free(&acts, m);
    e->fused = hcl_floats((size_t)(n > 0 ? n : 1) * D);
    eval_fuse(e->fused, (const float *const *)e->z, e->nviews, e->mask, n, D);
    return 0;
}

/* ---- embeddings as files ----------------------------------------------------------------- */

static int eval_path(char *out, size_t cap, const char *dir, const char *name, char *err) {
    if (snprintf(out, cap, "%s/%s", dir, name) >= (int)cap)
        return hcl_err(err, "%s/%s: path too long", dir, name);
    return 0;
}

static int eval_unlink(const char *dir, const char *name, char *err) {
    char p[1200];
    if (eval_path(p, sizeof p, dir, name, err)) return -1;
    if (unlink(p) != 0 && errno != ENOENT) return hcl_err(err, "%s: unlink: %s", p, strerror(errno));
    return 0;
}

static int eval_write(const char *dir, const char *name, enum npy_dtype t, int ndim, int64_t d0,
                      int64_t d1, const void *data, char *err) {
    char p[1200];
    if (eval_path(p, sizeof p, dir, name, err)) return -1;
    int64_t shape[2] = {d0, d1};
    return npy_write(p, t, ndim, shape, data, err);
}

int eval_embeddings_save(const eval_embeddings *e, const char *dir, char *err) {
    char name[HCL_NAME_MAX + 32];
    if (hcl_mkdir_p(dir, err) != 0) return -1;
    // the manifest goes first and comes back last: a half-written directory is refused
    if (eval_unlink(dir, "manifest.txt", err)) return -1;
    for (int v = 0; v < e->nviews; v++) {
        snprintf(name, sizeof name, "%s.npy", e->names[v]);
        if (eval_write(dir, name, NPY_F32, 2, e->n, e->width[v], e->z[v], err)) return -1;
        snprintf(name, sizeof name, "%s.features.npy", e->names[v]);
        if (e->features[v]) {
            if (eval_write(dir, name, NPY_F32, 2, e->n, e->feat_width[v], e->features[v], err))
                return -1;
        } else if (eval_unlink(dir, name, err)) {
            return -1;
        }
    }
    if (e->fused) {
        if (eval_write(dir, "fused.npy", NPY_F32, 2, e->n, e->width[0], e->fused, err)) return -1;
    } else if (eval_unlink(dir, "fused.npy", err)) {
        return -1;
    }
    if (e->labels) {
        int64_t *y = hcl_malloc(sizeof(int64_t) * (size_t)(e->n > 0 ? e->n : 1));
        for (int64_t i = 0; i < e->n; i++) y[i] = e->labels[i];
        int rc = eval_write(dir, "labels.npy", NPY_I64, 1, e->n, 1, y, err);
        free(y);
        if (rc) return -1;
    } else if (eval_unlink(dir, "labels.npy", err)) {
        return -1;
    }
    if (e->mask) {
        if (eval_write(dir, "mask.npy", NPY_U8, 2, e->n, e->nviews, e->mask, err)) return -1;
    } else if (eval_unlink(dir, "mask.npy", err)) {
        return -1;
    }
    char text[HCL_MAX_VIEWS * (HCL_NAME_MAX + 8) + 256], path[1200];
    size_t k = (size_t)snprintf(text, sizeof text, "# embeddings (hcl-embed): one `view NAME` line "
                                "per view, data in NAME.npy; fused.npy is their normalised mean\n");
    for (int v = 0; v < e->nviews; v++)
        k += (size_t)snprintf(text + k, sizeof text - k, "view %s\n", e->names[v]);
    if (eval_path(path, sizeof path, dir, "manifest.txt", err)) return -1;
    return hcl_write_file_durable(path, text, k, err);
}

/* `view NAME` lines of DIR/manifest.txt. */
static int eval_read_manifest(eval_embeddings *e, const char *dir, char *err) {
    char path[1200], line[512];
    if (eval_path(path, sizeof path, dir, "manifest.txt", err)) return -1;
    FILE *fp = fopen(path, "r");
    if (!fp) return hcl_err(err, "%s: %s (want the output directory of hcl-embed)", path,
                            strerror(errno));
    int lineno = 0;
    while (fgets(line, sizeof line, fp)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char key[32], name[256], extra[8];
        int nt = sscanf(line, "%31s %255s %7s", key, name, extra);
        if (nt <= 0) continue;
        if (strcmp(key, "view") != 0 || nt != 2 || strlen(name) >= HCL_NAME_MAX ||
            strchr(name, '/') || e->nviews == HCL_MAX_VIEWS) {
            fclose(fp);
            line[strcspn(line, "\r\n")] = 0;
            return hcl_err(err, "%s:%d: cannot use '%s' (want `view NAME`, at most %d views)",
                           path, lineno, line, HCL_MAX_VIEWS);
        }
        memcpy(e->names[e->nviews++], name, strlen(name) + 1);
    }
    fclose(fp);
    if (e->nviews == 0) return hcl_err(err, "%s: no `view NAME` lines", path);
    return 0;
}

/* A (n, width) float array from DIR/NAME: float32 or float64, finite; n < 0: any row count. */
static float *eval_read_matrix(const char *dir, const char *name, int64_t *n, int *width,
                               char *err) {
    char path[1200];
    if (eval_path(path, sizeof path, dir, name, err)) return NULL;
    npy_file f;
    if (npy_open(&f, path, err) != 0) return NULL;
    float *out = NULL;
    if (f.ndim != 2 || (f.dtype != NPY_F32 && f.dtype != NPY_F64)) {
        hcl_err(err, "%s: %s with %d dimensions (want a 2-d float32 array, rows x width)", path,
                npy_dtype_name(f.dtype), f.ndim);
    } else if (*n >= 0 && f.shape[0] != *n) {
        hcl_err(err, "%s: %lld rows (the first view has %lld)", path, (long long)f.shape[0],
                (long long)*n);
    } else if (f.shape[1] < 1 || f.shape[1] > (1 << 24)) {
        hcl_err(err, "%s: width %lld", path, (long long)f.shape[1]);
    } else {
        *n = f.shape[0];
        *width = (int)f.shape[1];
        out = hcl_floats((size_t)(f.count > 0 ? f.count : 1));
        for (int64_t i = 0; i < f.count; i++) {
            double x = f.dtype == NPY_F32 ? ((const float *)f.data)[i] : ((const double *)f.data)[i];
            if (!isfinite(x) || fabs(x) > FLT_MAX) {
                hcl_err(err, "%s: %s at row %lld, column %lld", path, isnan(x) ? "NaN" : "Inf",
                        (long long)(i / f.shape[1]), (long long)(i % f.shape[1]));
                free(out);
                out = NULL;
                break;
            }
            out[i] = (float)x;
        }
    }
    npy_close(&f);
    return out;
}

int eval_embeddings_load(eval_embeddings *e, const char *dir, char *err) {
    eval_embeddings_clear(e);
    if (eval_read_manifest(e, dir, err)) return -1;
    char name[HCL_NAME_MAX + 32], path[1200];
    int64_t n = -1;
    int same = 1;
    for (int v = 0; v < e->nviews; v++) {
        snprintf(name, sizeof name, "%s.npy", e->names[v]);
        if (!(e->z[v] = eval_read_matrix(dir, name, &n, &e->width[v], err))) goto fail;
        same &= e->width[v] == e->width[0];
    }
    e->n = n;
    if (eval_path(path, sizeof path, dir, "mask.npy", err)) goto fail;
    if (is_file(path)) {
        npy_file f;
        if (npy_open(&f, path, err) != 0) goto fail;
        if ((f.dtype != NPY_U8 && f.dtype != NPY_BOOL) || f.ndim != 2 || f.shape[0] != n ||
            f.shape[1] != e->nviews) {
            hcl_err(err, "%s: %s %lldx%lld (want uint8 or bool %lldx%d)", path,
                    npy_dtype_name(f.dtype), (long long)f.shape[0], (long long)f.shape[1],
                    (long long)n, e->nviews);
            npy_close(&f);
            goto fail;
        }
        e->mask = hcl_malloc((size_t)(n > 0 ? n : 1) * e->nviews);
        for (int64_t i = 0; i < f.count; i++) e->mask[i] = ((const uint8_t *)f.data)[i] != 0;
        npy_close(&f);
    }
    if (eval_path(path, sizeof path, dir, "labels.npy", err)) goto fail;
    if (is_file(path)) {
        npy_file f;
        if (npy_open(&f, path, err) != 0) goto fail;
        int isint = f.dtype != NPY_F32 && f.dtype != NPY_F64 && f.dtype != NPY_BOOL;
        if (!isint || f.count != n || (f.ndim == 2 && f.shape[1] != 1)) {
            hcl_err(err, "%s: %s with %lld values (want %lld integers)", path,
                    npy_dtype_name(f.dtype), (long long)f.count, (long long)n);
            npy_close(&f);
            goto fail;
        }
        e->labels = hcl_malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
        for (int64_t i = 0; i < n; i++) {
            int64_t y = npy_get_i64(&f, i);
            if (y < 0 || y >= (1 << 20)) {
                hcl_err(err, "%s: label %lld at row %lld (want 0..%d)", path, (long long)y,
                        (long long)i, (1 << 20) - 1);
                npy_close(&f);
                goto fail;
            }
            e->labels[i] = (int32_t)y;
            if (y + 1 > e->nclasses) e->nclasses = (int)(y + 1);
        }
        npy_close(&f);
    }
    if (eval_path(path, sizeof path, dir, "fused.npy", err)) goto fail;
    if (is_file(path)) {
        int w;
        if (!(e->fused = eval_read_matrix(dir, "fused.npy", &n, &w, err))) goto fail;
        if (!same || w != e->width[0]) {
            hcl_err(err, "%s: width %d (the views have width %d)", path, w, e->width[0]);
            goto fail;
        }
    } else if (same) {
        e->fused = hcl_floats((size_t)(n > 0 ? n : 1) * e->width[0]);
        eval_fuse(e->fused, (const float *const *)e->z, e->nviews, e->mask, n, e->width[0]);
    }
    return 0;
fail:
    eval_embeddings_free(e);
    return -1;
}
