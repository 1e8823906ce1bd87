/* eval_probe: see eval_probe.h. The objective over row blocks (sgemm) split over threads, L-BFGS
 * with a strong-Wolfe line search, and the probe around them (standardise, choose lambda on a
 * held-out part, refit, score). */
#include "eval_probe.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval_private.h"
#include "kernels.h"
#include "rng.h"
#include "util.h"

#define LBFGS_M 10
#define LS_MAX 25               /* evaluations per line search */
#define LS_C1 1e-4
#define LS_C2 0.9

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

/* qsort order of doubles, descending */
static int cmp_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
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
    const int nfits = opt->nlambdas + 1;
    progress_update(opt->progress, 0, nfits);
    for (int li = 0; li < opt->nlambdas; li++) {
        double tf = hcl_now(), f;
        int ev = 0;
        int iters = eval_logreg_fit(w, xs, ys, nfit, F, K, grid[li], opt->max_iter, opt->gtol,
                                    &f, &ev);
        double ce, acc = logreg_score(w, logits, xs + nfit * F, ys + nfit, nval, F, K, &ce);
        res->iters += iters;
        res->evals += ev;
        if (opt->verbose) {
            progress_clear(opt->progress);
            fprintf(stderr, "probe: lambda %-8.3g iters %3d evals %3d f %.6f held-out acc %.4f "
                    "ce %.4f  %.2f s\n", grid[li], iters, ev, f, acc, ce, hcl_now() - tf);
        }
        progress_update(opt->progress, li + 1, nfits);
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
    progress_update(opt->progress, nfits, nfits);
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

