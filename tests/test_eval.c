/* test_eval: the evaluation library against independent references.
 *
 *   probe      recovers a known linear rule (noise-free: accuracy >= 0.97; with labels drawn
 *              from the true softmax model: within 0.02 of the true model's test accuracy);
 *              eval_logreg_fit reaches the optimum of a double-precision Newton solve of the
 *              same objective: objective to 1e-6 relative, weights to 1e-4 absolute
 *   kNN        hand-worked cases (weighting beats majority, tie -> lower train index), and a
 *              naive double-precision kNN on 5,000 train rows (more than one tile): equal to
 *              within one query
 *   retrieval  a hand-worked 4-row case with an exact tie and a mask; a naive double-precision
 *              ranking on 2,500 rows (several tiles): R@1/5/10 within one query
 *   geometry   alignment and uniformity against naive double loops (1e-9 / 1e-5); the
 *              subsampled uniformity within 0.02 of the exact value, and deterministic
 *   fusion     a hand-worked row, masks, a row with no view
 *   files      eval_embeddings_save then _load gives the same arrays
 *   pass       eval_pass_run (hcl-eval, --eval-every) gives the very numbers of the measures
 *              called by hand on the rows each representation keeps, on two splits and on the
 *              halves of one (eval_embeddings_rows) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "eval.h"
#include "kernels.h"
#include "rng.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static void randn(float *x, int64_t n, hcl_rng *r) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)rng_normal(r);
}

static int argmax_rule(const float *W, const float *b, const float *x, int F, int K) {
    int best = 0;
    double bs = -1e300;
    for (int k = 0; k < K; k++) {
        double s = b[k];
        for (int j = 0; j < F; j++) s += (double)W[k * F + j] * x[j];
        if (s > bs) { bs = s; best = k; }
    }
    return best;
}

/* ---- probe: a known linear rule ----------------------------------------------------------- */

static void test_probe_recovers_rule(void) {
    enum { F = 8, K = 4, NTR = 3000, NTE = 4000 };
    hcl_rng r;
    rng_derive(&r, 7, "test-probe", 0);
    float W[K * F], b[K];
    randn(W, K * F, &r);
    randn(b, K, &r);
    float *xtr = hcl_floats(NTR * F), *xte = hcl_floats(NTE * F);
    int32_t *ytr = malloc(sizeof(int32_t) * NTR), *yte = malloc(sizeof(int32_t) * NTE);
    // features with different scales and offsets: the probe standardises them
    randn(xtr, NTR * F, &r);
    randn(xte, NTE * F, &r);
    for (int64_t i = 0; i < NTR * F; i++) xtr[i] = xtr[i] * (1 + i % F) + 3.0f * (float)(i % F);
    for (int64_t i = 0; i < NTE * F; i++) xte[i] = xte[i] * (1 + i % F) + 3.0f * (float)(i % F);
    float Ws[K * F], bs[K];   // the rule on the raw features, written on standardised ones
    for (int k = 0; k < K; k++) {
        bs[k] = b[k];
        for (int j = 0; j < F; j++) {
            Ws[k * F + j] = W[k * F + j] / (float)(1 + j);
            bs[k] -= Ws[k * F + j] * 3.0f * (float)j;
        }
    }
    for (int i = 0; i < NTR; i++) ytr[i] = argmax_rule(Ws, bs, xtr + i * F, F, K);
    for (int i = 0; i < NTE; i++) yte[i] = argmax_rule(Ws, bs, xte + i * F, F, K);

    eval_probe_result res;
    char err[HCL_ERR_MAX];
    CHECK(eval_linear_probe(&res, xtr, ytr, NTR, xte, yte, NTE, F, K, NULL, err) == 0, "%s", err);
    CHECK(res.accuracy >= 0.97, "noise-free probe accuracy %.4f < 0.97", res.accuracy);
    CHECK(res.train_accuracy >= 0.97, "noise-free train accuracy %.4f < 0.97", res.train_accuracy);
    CHECK(res.lambda <= 1e-2, "noise-free data chose lambda %g (want weak regularisation)",
          res.lambda);

    // labels drawn from softmax(2 (W x + b)): the model is right but the labels are noisy; the
    // probe should score about what the true model scores on the same test labels
    int right_rule = 0;
    for (int pass = 0; pass < 2; pass++) {
        float *x = pass ? xte : xtr;
        int32_t *y = pass ? yte : ytr;
        int n = pass ? NTE : NTR;
        for (int i = 0; i < n; i++) {
            double l[K], mx = -1e300, s = 0;
            for (int k = 0; k < K; k++) {
                l[k] = bs[k];
                for (int j = 0; j < F; j++) l[k] += (double)Ws[k * F + j] * x[i * F + j];
                l[k] *= 2.0;
                mx = fmax(mx, l[k]);
            }
            for (int k = 0; k < K; k++) s += exp(l[k] - mx);
            double u = rng_uniform(&r) * s;
            int c = 0;
            for (; c < K - 1; c++) {
                u -= exp(l[c] - mx);
                if (u < 0) break;
            }
            y[i] = c;
            if (pass) right_rule += c == argmax_rule(Ws, bs, x + i * F, F, K);
        }
    }
    double rule_acc = (double)right_rule / NTE;
    CHECK(eval_linear_probe(&res, xtr, ytr, NTR, xte, yte, NTE, F, K, NULL, err) == 0, "%s", err);
    CHECK_CLOSE(res.accuracy, rule_acc, 0, 0.02, "noisy probe accuracy vs the true model's");
    CHECK(rule_acc > 0.5 && rule_acc < 0.95, "true model accuracy %.3f: want a noisy case",
          rule_acc);
    printf("probe: noise-free ok; noisy acc %.4f (true model %.4f), lambda %g, %d iters\n",
           res.accuracy, rule_acc, res.lambda, res.iters);

    // user errors
    CHECK(eval_linear_probe(&res, xtr, ytr, NTR, xte, yte, NTE, F, 1, NULL, err) == -1 &&
          strstr(err, "classes"), "K = 1 should be refused, got '%s'", err);
    ytr[5] = K;
    CHECK(eval_linear_probe(&res, xtr, ytr, NTR, xte, yte, NTE, F, K, NULL, err) == -1 &&
          strstr(err, "row 5"), "label K at row 5 should be refused, got '%s'", err);
    free(xtr);
    free(xte);
    free(ytr);
    free(yte);
}

/* ---- probe: the optimum against Newton in double --------------------------------------------- */

/* f, gradient and Hessian in double of (1/n) sum CE + lambda/2 |W|^2, parameters laid out as
 * eval_logreg_fit's: W (K, F) row-major, then b (K). */
static double newton_fgh(const double *w, double *g, double *H, const float *x, const int32_t *y,
                         int n, int F, int K, double lambda) {
    const int P = K * F + K;
    double f = 0, p[16], xt[32];
    memset(g, 0, sizeof(double) * P);
    memset(H, 0, sizeof(double) * P * P);
    for (int i = 0; i < n; i++) {
        double mx = -1e300, s = 0;
        for (int k = 0; k < K; k++) {
            double l = w[K * F + k];
            for (int j = 0; j < F; j++) l += w[k * F + j] * x[i * F + j];
            p[k] = l;
            mx = fmax(mx, l);
        }
        for (int k = 0; k < K; k++) s += exp(p[k] - mx);
        f += mx + log(s) - p[y[i]];
        for (int k = 0; k < K; k++) p[k] = exp(p[k] - mx) / s;
        for (int j = 0; j < F; j++) xt[j] = x[i * F + j];
        xt[F] = 1;
        for (int k = 0; k < K; k++)
            for (int j = 0; j <= F; j++) {
                int a = j < F ? k * F + j : K * F + k;
                g[a] += (p[k] - (k == y[i])) * xt[j] / n;
                for (int l = 0; l < K; l++)
                    for (int jj = 0; jj <= F; jj++) {
                        int c = jj < F ? l * F + jj : K * F + l;
                        H[a * P + c] += (p[k] * (k == l) - p[k] * p[l]) * xt[j] * xt[jj] / n;
                    }
            }
    }
    f /= n;
    for (int a = 0; a < K * F; a++) {
        f += 0.5 * lambda * w[a] * w[a];
        g[a] += lambda * w[a];
        H[a * P + a] += lambda;
    }
    // the bias is defined up to a common shift (softmax): pin it with a tiny ridge
    for (int k = 0; k < K; k++) H[(K * F + k) * P + K * F + k] += 1e-9;
    return f;
}

/* Solve A x = b (n x n, destroyed) by Gaussian elimination with partial pivoting. */
static void solve(double *A, double *b, int n) {
    for (int c = 0; c < n; c++) {
        int piv = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(A[r * n + c]) > fabs(A[piv * n + c])) piv = r;
        for (int k = 0; k < n; k++) {
            double t = A[c * n + k];
            A[c * n + k] = A[piv * n + k];
            A[piv * n + k] = t;
        }
        double t = b[c];
        b[c] = b[piv];
        b[piv] = t;
        for (int r = c + 1; r < n; r++) {
            double m = A[r * n + c] / A[c * n + c];
            for (int k = c; k < n; k++) A[r * n + k] -= m * A[c * n + k];
            b[r] -= m * b[c];
        }
    }
    for (int c = n - 1; c >= 0; c--) {
        for (int k = c + 1; k < n; k++) b[c] -= A[c * n + k] * b[k];
        b[c] /= A[c * n + c];
    }
}

static void test_probe_matches_newton(double lambda) {
    enum { N = 240, F = 5, K = 3, P = K * F + K };
    hcl_rng r;
    rng_derive(&r, 11, "test-newton", 0);
    float x[N * F], Wt[K * F];
    int32_t y[N];
    randn(x, N * F, &r);
    randn(Wt, K * F, &r);
    for (int i = 0; i < N; i++) {   // labels from a noisy linear rule: not separable
        double best = -1e300;
        for (int k = 0; k < K; k++) {
            double s = rng_normal(&r) * 1.5;
            for (int j = 0; j < F; j++) s += Wt[k * F + j] * x[i * F + j];
            if (s > best) { best = s; y[i] = k; }
        }
    }
    static double w[P], g[P], H[P * P], wn[P], gn[P], Hn[P * P];
    memset(w, 0, sizeof w);
    double f = newton_fgh(w, g, H, x, y, N, F, K, lambda);
    for (int it = 0; it < 100; it++) {
        double gg = 0;
        for (int a = 0; a < P; a++) gg = fmax(gg, fabs(g[a]));
        if (gg < 1e-13) break;
        double d[P];
        for (int a = 0; a < P; a++) d[a] = -g[a];
        solve(H, d, P);
        double step = 1, fn = 0;
        for (int ls = 0; ls < 60; ls++, step *= 0.5) {
            for (int a = 0; a < P; a++) wn[a] = w[a] + step * d[a];
            fn = newton_fgh(wn, gn, Hn, x, y, N, F, K, lambda);
            if (fn <= f) break;
        }
        memcpy(w, wn, sizeof w);
        memcpy(g, gn, sizeof g);
        memcpy(H, Hn, sizeof H);
        f = fn;
    }
    float wf[P] = {0};
    double fc;
    int evals = 0;
    int iters = eval_logreg_fit(wf, x, y, N, F, K, lambda, 2000, 1e-6, &fc, &evals);
    char what[96];
    snprintf(what, sizeof what, "lambda %g: L-BFGS objective vs Newton", lambda);
    CHECK_CLOSE(fc, f, 1e-6, 0, what);
    double bmean_c = 0, bmean_n = 0, maxdw = 0;
    for (int k = 0; k < K; k++) {
        bmean_c += wf[K * F + k] / K;
        bmean_n += w[K * F + k] / K;
    }
    for (int a = 0; a < K * F; a++) maxdw = fmax(maxdw, fabs(wf[a] - w[a]));
    for (int k = 0; k < K; k++)   // biases compared up to their common shift
        maxdw = fmax(maxdw, fabs((wf[K * F + k] - bmean_c) - (w[K * F + k] - bmean_n)));
    CHECK(maxdw <= 1e-4, "lambda %g: max |w - w_newton| = %.3g > 1e-4", lambda, maxdw);
    // the float objective at the Newton optimum agrees with the double one
    float wnf[P];
    for (int a = 0; a < P; a++) wnf[a] = (float)w[a];
    double fo = eval_logreg_objective(wnf, NULL, x, y, N, F, K, lambda);
    snprintf(what, sizeof what, "lambda %g: float objective at the Newton optimum", lambda);
    CHECK_CLOSE(fo, f, 1e-6, 0, what);
    printf("newton lambda %g: f %.9f, L-BFGS f %.9f (%d iters, %d evals), max |dw| %.2g\n",
           lambda, f, fc, iters, evals, maxdw);
}

/* The gradient of eval_logreg_objective against central differences (double reference). */
static void test_logreg_gradient(void) {
    enum { N = 64, F = 3, K = 4, P = K * F + K };
    hcl_rng r;
    rng_derive(&r, 5, "test-grad", 0);
    float x[N * F], w[P], g[P];
    int32_t y[N];
    randn(x, N * F, &r);
    randn(w, P, &r);
    for (int i = 0; i < N; i++) y[i] = (int32_t)rng_below(&r, K);
    eval_logreg_objective(w, g, x, y, N, F, K, 0.3);
    static double wd[P], gd[P], Hd[P * P];
    for (int a = 0; a < P; a++) wd[a] = w[a];
    newton_fgh(wd, gd, Hd, x, y, N, F, K, 0.3);
    for (int a = 0; a < P; a++) CHECK_CLOSE(g[a], gd[a], 1e-4, 1e-6, "objective gradient");
}

/* ---- kNN ---------------------------------------------------------------------------------- */

static void test_knn_hand(void) {
    // train (F = 2): t0 (1,0) class 0, t1 (0,1) class 1, t2 (5,5) class 1, t3 (-1,0) class 0
    const float tr[] = {1, 0, 0, 1, 5, 5, -1, 0};
    const int32_t ytr[] = {0, 1, 1, 0};
    // q0 (1, 0.2): cosines t0 .98058, t2 .83205, t1 .19612 -> k=3 votes: class 0 exp(.98058/.07)
    //   = 1.21e6 against class 1 exp(.83205/.07) + exp(.19612/.07) = 1.46e5: class 0 (a plain
    //   majority would say 1). q1 (0.3, 1): t1 .95783, t2 .88047, t0 .28735 -> class 1.
    const float te[] = {1, 0.2f, 0.3f, 1};
    const int32_t yte_a[] = {0, 0}, yte_b[] = {0, 1};
    CHECK_CLOSE(eval_knn_accuracy(tr, ytr, 4, te, yte_a, 2, 2, 2, 3), 0.5, 0, 0, "kNN hand case a");
    CHECK_CLOSE(eval_knn_accuracy(tr, ytr, 4, te, yte_b, 2, 2, 2, 3), 1.0, 0, 0, "kNN hand case b");
    // k = 1 with two identical train rows of different classes: the lower index (class 1) wins
    const float tr2[] = {1, 0, 2, 0, 0, 1};
    const int32_t ytr2[] = {1, 0, 0};
    const float q[] = {3, 0};
    const int32_t y1[] = {1};
    CHECK_CLOSE(eval_knn_accuracy(tr2, ytr2, 3, q, y1, 1, 2, 2, 1), 1.0, 0, 0, "kNN tie -> lower index");
    // k larger than the train set: all rows vote; class 0 gets exp(0) + exp(-1/.07) > class 1's
    // exp(0), so class 0 wins (with k = 1 it lost)
    const int32_t y0[] = {0};
    CHECK_CLOSE(eval_knn_accuracy(tr2, ytr2, 3, q, y0, 1, 2, 2, 50), 1.0, 0, 0, "kNN k > rows");
}

/* Naive kNN in double with the same rules. */
static double knn_naive(const float *xtr, const int32_t *ytr, int ntr, const float *xte,
                        const int32_t *yte, int nte, int F, int K, int k) {
    double *s = malloc(sizeof(double) * ntr);
    char *used = malloc((size_t)ntr);
    int right = 0;
    for (int q = 0; q < nte; q++) {
        double nq = 0;
        for (int j = 0; j < F; j++) nq += (double)xte[q * F + j] * xte[q * F + j];
        for (int i = 0; i < ntr; i++) {
            double d = 0, nt = 0;
            for (int j = 0; j < F; j++) {
                d += (double)xte[q * F + j] * xtr[i * F + j];
                nt += (double)xtr[i * F + j] * xtr[i * F + j];
            }
            s[i] = d / sqrt(nq * nt);
            used[i] = 0;
        }
        double score[16] = {0}, smax = -2;
        for (int t = 0; t < k; t++) {
            int best = -1;
            for (int i = 0; i < ntr; i++)
                if (!used[i] && (best < 0 || s[i] > s[best])) best = i;
            used[best] = 1;
            if (t == 0) smax = s[best];
            score[ytr[best]] += exp((s[best] - smax) / 0.07);
        }
        int c = 0;
        for (int j = 1; j < K; j++)
            if (score[j] > score[c]) c = j;
        right += c == yte[q];
    }
    free(s);
    free(used);
    return (double)right / nte;
}

static void test_knn_naive(void) {
    enum { NTR = 5000, NTE = 300, F = 6, K = 5 };
    hcl_rng r;
    rng_derive(&r, 3, "test-knn", 0);
    float *xtr = hcl_floats(NTR * F), *xte = hcl_floats(NTE * F), mu[K * F];
    int32_t *ytr = malloc(sizeof(int32_t) * NTR), *yte = malloc(sizeof(int32_t) * NTE);
    randn(mu, K * F, &r);
    randn(xtr, NTR * F, &r);
    randn(xte, NTE * F, &r);
    for (int i = 0; i < NTR; i++) {
        ytr[i] = (int32_t)rng_below(&r, K);
        for (int j = 0; j < F; j++) xtr[i * F + j] += 1.2f * mu[ytr[i] * F + j];
    }
    for (int i = 0; i < NTE; i++) {
        yte[i] = (int32_t)rng_below(&r, K);
        for (int j = 0; j < F; j++) xte[i * F + j] += 1.2f * mu[yte[i] * F + j];
    }
    double a = eval_knn_accuracy(xtr, ytr, NTR, xte, yte, NTE, F, K, EVAL_KNN_K);
    double b = knn_naive(xtr, ytr, NTR, xte, yte, NTE, F, K, EVAL_KNN_K);
    CHECK_CLOSE(a, b, 0, 1.0 / NTE + 1e-12, "kNN (tiled, float) vs naive double");
    CHECK(a > 0.4, "kNN accuracy %.3f on clustered data (chance 0.2)", a);
    printf("knn: %.4f (naive %.4f)\n", a, b);
    free(xtr);
    free(xte);
    free(ytr);
    free(yte);
}

/* ---- retrieval ---------------------------------------------------------------------------- */

static void test_retrieval_hand(void) {
    // a: (1,0) (0,1) (1,1) (-1,0); b: (1,0) (1,0.1) (0,1) (-1,-1)
    // a->b ranks: a0 0; a1: b2 (1) > b1 (.0995) -> 1; a2: b1 (.774) > b2 (.7071), b0 ties b2
    //   exactly (not counted) -> 1; a3 0.   R@1 = 2/4, R@5 = R@10 = 1.
    // b->a ranks: b0 0; b1: a0 (.995), a2 (.774) > a1 (.0995) -> 2; b2: a1 (1) > a2 -> 1; b3 0.
    const float a[] = {1, 0, 0, 1, 1, 1, -1, 0};
    const float b[] = {1, 0, 1, 0.1f, 0, 1, -1, -1};
    eval_recall ab, ba;
    eval_retrieval(&ab, &ba, a, b, NULL, NULL, 4, 2);
    CHECK_CLOSE(ab.r1, 0.5, 0, 0, "a->b R@1");
    CHECK_CLOSE(ab.r5, 1.0, 0, 0, "a->b R@5");
    CHECK_CLOSE(ba.r1, 0.5, 0, 0, "b->a R@1");
    CHECK_CLOSE(ba.r10, 1.0, 0, 0, "b->a R@10");
    CHECK(ab.queries == 4 && ba.queries == 4, "queries %lld %lld", (long long)ab.queries,
          (long long)ba.queries);
    // row 1 absent from a: rows 0, 2, 3 remain; a2's only better item (b1) is gone -> all rank 0
    const uint8_t pa[] = {1, 0, 1, 1};
    eval_retrieval(&ab, &ba, a, b, pa, NULL, 4, 2);
    CHECK(ab.queries == 3, "masked queries %lld", (long long)ab.queries);
    CHECK_CLOSE(ab.r1, 1.0, 0, 0, "masked a->b R@1");
    CHECK_CLOSE(ba.r1, 1.0, 0, 0, "masked b->a R@1");
    // one direction only
    eval_retrieval(&ab, NULL, a, b, NULL, NULL, 4, 2);
    CHECK_CLOSE(ab.r1, 0.5, 0, 0, "a->b R@1 without the reverse");
}

static void test_retrieval_naive(void) {
    enum { N = 2500, D = 8 };
    hcl_rng r;
    rng_derive(&r, 9, "test-retrieval", 0);
    float *a = hcl_floats(N * D), *b = hcl_floats(N * D);
    uint8_t *pb = malloc(N);
    randn(a, N * D, &r);
    randn(b, N * D, &r);
    for (int i = 0; i < N * D; i++) b[i] = a[i] + 0.9f * b[i];
    for (int i = 0; i < N; i++) pb[i] = rng_uniform(&r) > 0.1;
    eval_recall ab, ba;
    eval_retrieval(&ab, &ba, a, b, NULL, pb, N, D);
    // naive: double cosines, rank = # strictly greater among rows present in both
    int *idx = malloc(sizeof(int) * N), m = 0;
    for (int i = 0; i < N; i++)
        if (pb[i]) idx[m++] = i;
    double *na = malloc(sizeof(double) * N * D), *nb = malloc(sizeof(double) * N * D);
    for (int i = 0; i < N; i++) {
        double sa = 0, sb = 0;
        for (int j = 0; j < D; j++) {
            sa += (double)a[i * D + j] * a[i * D + j];
            sb += (double)b[i * D + j] * b[i * D + j];
        }
        for (int j = 0; j < D; j++) {
            na[i * D + j] = a[i * D + j] / sqrt(sa);
            nb[i * D + j] = b[i * D + j] / sqrt(sb);
        }
    }
    int c[2][3] = {{0}};
    for (int dir = 0; dir < 2; dir++) {
        const double *Q = dir ? nb : na, *G = dir ? na : nb;
        for (int qi = 0; qi < m; qi++) {
            int q = idx[qi];
            double sc = 0;
            for (int j = 0; j < D; j++) sc += Q[q * D + j] * G[q * D + j];
            int rank = 0;
            for (int gi = 0; gi < m; gi++) {
                int g = idx[gi];
                if (g == q) continue;
                double s = 0;
                for (int j = 0; j < D; j++) s += Q[q * D + j] * G[g * D + j];
                rank += s > sc;
            }
            c[dir][0] += rank < 1;
            c[dir][1] += rank < 5;
            c[dir][2] += rank < 10;
        }
    }
    double tol = 1.0 / m + 1e-12;
    CHECK(ab.queries == m && ba.queries == m, "queries %lld, want %d", (long long)ab.queries, m);
    CHECK_CLOSE(ab.r1, (double)c[0][0] / m, 0, tol, "a->b R@1 vs naive");
    CHECK_CLOSE(ab.r5, (double)c[0][1] / m, 0, tol, "a->b R@5 vs naive");
    CHECK_CLOSE(ab.r10, (double)c[0][2] / m, 0, tol, "a->b R@10 vs naive");
    CHECK_CLOSE(ba.r1, (double)c[1][0] / m, 0, tol, "b->a R@1 vs naive");
    CHECK_CLOSE(ba.r5, (double)c[1][1] / m, 0, tol, "b->a R@5 vs naive");
    CHECK_CLOSE(ba.r10, (double)c[1][2] / m, 0, tol, "b->a R@10 vs naive");
    CHECK(ab.r1 > 0.05 && ab.r10 < 0.999, "R@1 %.3f R@10 %.3f: the case should be informative",
          ab.r1, ab.r10);
    printf("retrieval: a->b R@1/5/10 %.4f %.4f %.4f over %d queries\n", ab.r1, ab.r5, ab.r10, m);
    free(a);
    free(b);
    free(pb);
    free(idx);
    free(na);
    free(nb);
}

/* ---- alignment, uniformity ---------------------------------------------------------------- */

static void normalize_d(double *out, const float *x, int D) {
    double s = 0;
    for (int j = 0; j < D; j++) s += (double)x[j] * x[j];
    for (int j = 0; j < D; j++) out[j] = x[j] / sqrt(s);
}

static double uniformity_naive(const float *x, const uint8_t *p, int n, int D) {
    double sum = 0, xi[64], xj[64];
    long pairs = 0;
    for (int i = 0; i < n; i++) {
        if (p && !p[i]) continue;
        normalize_d(xi, x + (int64_t)i * D, D);
        for (int j = i + 1; j < n; j++) {
            if (p && !p[j]) continue;
            normalize_d(xj, x + (int64_t)j * D, D);
            double d2 = 0;
            for (int k = 0; k < D; k++) d2 += (xi[k] - xj[k]) * (xi[k] - xj[k]);
            sum += exp(-2 * d2);
            pairs++;
        }
    }
    return log(sum / pairs);
}

static void test_geometry(void) {
    enum { N = 300, D = 8 };
    hcl_rng r;
    rng_derive(&r, 4, "test-geometry", 0);
    float a[N * D], b[N * D];
    uint8_t pa[N], pb[N];
    randn(a, N * D, &r);
    randn(b, N * D, &r);
    for (int i = 0; i < N * D; i++) b[i] = 2.0f * (a[i] + 0.5f * b[i]);   // unnormalised
    for (int i = 0; i < N; i++) {
        pa[i] = rng_uniform(&r) > 0.2;
        pb[i] = rng_uniform(&r) > 0.2;
    }
    double sum = 0, xa[D], xb[D];
    int m = 0;
    for (int i = 0; i < N; i++) {
        if (!pa[i] || !pb[i]) continue;
        normalize_d(xa, a + i * D, D);
        normalize_d(xb, b + i * D, D);
        for (int k = 0; k < D; k++) sum += (xa[k] - xb[k]) * (xa[k] - xb[k]);
        m++;
    }
    CHECK_CLOSE(eval_alignment(a, b, pa, pb, N, D), sum / m, 1e-9, 0, "alignment vs naive");
    CHECK_CLOSE(eval_uniformity(a, NULL, N, D, 0), uniformity_naive(a, NULL, N, D), 0, 1e-5,
                "uniformity vs naive");
    CHECK_CLOSE(eval_uniformity(b, pb, N, D, 0), uniformity_naive(b, pb, N, D), 0, 1e-5,
                "masked uniformity vs naive");
    CHECK(isnan(eval_uniformity(a, NULL, 1, D, 0)), "uniformity of one row should be NaN");

    // above EVAL_UNIFORMITY_ROWS: a seeded subsample, close to the exact value, deterministic
    enum { NB = 6000, DB = 4 };
    float *x = hcl_floats(NB * DB);
    randn(x, NB * DB, &r);
    for (int i = 0; i < NB; i++) x[i * DB] += 1.0f;   // not uniform on the sphere
    double exact = uniformity_naive(x, NULL, NB, DB);
    double u1 = eval_uniformity(x, NULL, NB, DB, 1), u2 = eval_uniformity(x, NULL, NB, DB, 1);
    CHECK_CLOSE(u1, exact, 0, 0.02, "subsampled uniformity vs exact");
    CHECK(u1 == u2, "subsampled uniformity not deterministic: %.17g vs %.17g", u1, u2);
    printf("uniformity: subsample %.5f, exact %.5f\n", u1, exact);
    free(x);
}

/* ---- fusion ------------------------------------------------------------------------------- */

static void test_fuse(void) {
    enum { N = 3, V = 3, D = 4 };
    // row 0: v0 (3,4,0,0) -> (.6,.8,0,0), v1 (0,0,0,2) -> (0,0,0,1), v2 absent:
    //   mean (.3,.4,0,.5) / sqrt(.5) = (.424264, .565685, 0, .707107)
    // row 1: only v2 (0,-5,0,0) -> (0,-1,0,0); row 2: no view -> zeros
    const float z0[] = {3, 4, 0, 0, 1, 1, 1, 1, 9, 9, 9, 9};
    const float z1[] = {0, 0, 0, 2, 1, 1, 1, 1, 9, 9, 9, 9};
    const float z2[] = {7, 7, 7, 7, 0, -5, 0, 0, 9, 9, 9, 9};
    const float *z[] = {z0, z1, z2};
    const uint8_t mask[] = {1, 1, 0, 0, 0, 1, 0, 0, 0};
    float f[N * D];
    eval_fuse(f, z, V, mask, N, D);
    const float want[] = {0.42426407f, 0.56568542f, 0, 0.70710678f, 0, -1, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < N * D; i++) CHECK_CLOSE(f[i], want[i], 0, 1e-6, "fused embedding");
    // no mask: every view counts
    eval_fuse(f, z, V, NULL, N, D);
    double s = 0;
    for (int j = 0; j < D; j++) s += (double)f[j] * f[j];
    CHECK_CLOSE(s, 1.0, 0, 1e-6, "fused row norm");
    // (.6,.8,0,0) + (0,0,0,1) + (.5,.5,.5,.5) = (1.1, 1.3, .5, 1.5), norm sqrt(5.4)
    CHECK_CLOSE(f[0], 1.1 / sqrt(5.4), 0, 1e-6, "unmasked fused [0]");
    CHECK_CLOSE(f[3], 1.5 / sqrt(5.4), 0, 1e-6, "unmasked fused [3]");
}

/* ---- files -------------------------------------------------------------------------------- */

static void test_files(void) {
    char dir[] = "/tmp/test_eval.XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    eval_embeddings e = {0}, l;
    e.n = 5;
    e.nviews = 2;
    strcpy(e.names[0], "a");
    strcpy(e.names[1], "b");
    e.width[0] = e.width[1] = 3;
    hcl_rng r;
    rng_derive(&r, 1, "test-files", 0);
    for (int v = 0; v < 2; v++) {
        e.z[v] = hcl_floats(15);
        randn(e.z[v], 15, &r);
    }
    e.mask = malloc(10);
    for (int i = 0; i < 10; i++) e.mask[i] = i != 3;
    e.labels = malloc(sizeof(int32_t) * 5);
    for (int i = 0; i < 5; i++) e.labels[i] = i % 3;
    e.nclasses = 3;
    e.fused = hcl_floats(15);
    eval_fuse(e.fused, (const float *const *)e.z, 2, e.mask, 5, 3);
    char err[HCL_ERR_MAX];
    CHECK(eval_embeddings_save(&e, dir, err) == 0, "save: %s", err);
    CHECK(eval_embeddings_load(&l, dir, err) == 0, "load: %s", err);
    CHECK(l.n == 5 && l.nviews == 2 && strcmp(l.names[1], "b") == 0 && l.width[1] == 3 &&
          l.nclasses == 3 && l.mask && l.labels && l.fused, "loaded header differs");
    for (int v = 0; v < 2 && l.z[v]; v++)
        CHECK(memcmp(l.z[v], e.z[v], 15 * sizeof(float)) == 0, "view %d differs", v);
    CHECK(l.mask && memcmp(l.mask, e.mask, 10) == 0, "mask differs");
    CHECK(l.labels && memcmp(l.labels, e.labels, 5 * sizeof(int32_t)) == 0, "labels differ");
    CHECK(l.fused && memcmp(l.fused, e.fused, 15 * sizeof(float)) == 0, "fused differs");
    eval_embeddings_free(&l);
    // a directory without a manifest is refused with one line naming the file
    char p[128];
    snprintf(p, sizeof p, "%s/manifest.txt", dir);
    unlink(p);
    CHECK(eval_embeddings_load(&l, dir, err) == -1 && strstr(err, "manifest.txt"),
          "missing manifest: '%s'", err);
    const char *files[] = {"a.npy", "b.npy", "fused.npy", "labels.npy", "mask.npy"};
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
    eval_embeddings_free(&e);
}

/* ---- the evaluation pass ---------------------------------------------------------------------- */

/* n rows of 2 views (width D) around class means, view 1 absent from every 5th row. */
static void make_embeddings(eval_embeddings *e, int64_t n, int D, uint64_t seed) {
    enum { K = 3 };
    memset(e, 0, sizeof *e);
    e->n = n;
    e->nviews = 2;
    strcpy(e->names[0], "a");
    strcpy(e->names[1], "b");
    hcl_rng r;
    rng_derive(&r, seed, "test-pass", 0);
    float mu[K * 16];
    randn(mu, K * D, &r);
    e->labels = malloc(sizeof(int32_t) * (size_t)n);
    e->mask = malloc((size_t)(2 * n));
    e->nclasses = K;
    for (int v = 0; v < 2; v++) {
        e->width[v] = D;
        e->z[v] = hcl_floats((size_t)(n * D));
        randn(e->z[v], n * D, &r);
    }
    for (int64_t i = 0; i < n; i++) {
        e->labels[i] = (int32_t)(i % K);
        e->mask[2 * i] = 1;
        e->mask[2 * i + 1] = i % 5 != 0;
        for (int v = 0; v < 2; v++)
            for (int j = 0; j < D; j++) e->z[v][i * D + j] += 1.5f * mu[e->labels[i] * D + j];
    }
    e->fused = hcl_floats((size_t)(n * D));
    eval_fuse(e->fused, (const float *const *)e->z, 2, e->mask, n, D);
}

/* Rows i of x (n, D) with keep[i] (NULL: all), and their labels. */
static int64_t pick(float *xo, int32_t *yo, const float *x, const int32_t *y, const uint8_t *keep,
                    int64_t n, int D) {
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (!keep || keep[i]) {
            memcpy(xo + m * D, x + i * D, sizeof(float) * (size_t)D);
            yo[m++] = y[i];
        }
    return m;
}

/* The pass on tr against te, geometry on geom, against the measures called by hand. */
static void check_pass(const eval_embeddings *tr, const eval_embeddings *te, const eval_embeddings *geom,
                       const char *what) {
    const int D = tr->width[0];
    eval_pass p;
    eval_pass_init(&p, tr, te, 1, geom);
    CHECK(p.nreps == 4 && !strcmp(p.rep[2].name, "concat") && !strcmp(p.rep[3].name, "fused") &&
          p.rep[2].dim == 2 * D, "%s: representations", what);
    for (int i = 0; i < p.nreps; i++) p.rep[i].do_knn = 1;
    p.rep[3].do_probe = 1;
    eval_pass_options o;
    eval_pass_options_default(&o);
    o.seed = 5;
    char err[HCL_ERR_MAX];
    CHECK(eval_pass_run(&p, &o, err) == 0, "%s: pass: %s", what, err);

    float *xtr = hcl_floats((size_t)(tr->n * D)), *xte = hcl_floats((size_t)(te->n * D));
    int32_t *ytr = malloc(sizeof(int32_t) * (size_t)tr->n), *yte = malloc(sizeof(int32_t) * (size_t)te->n);
    uint8_t *ktr = eval_mask_column(tr->mask, 2, 1, tr->n), *kte = eval_mask_column(te->mask, 2, 1, te->n);
    int64_t mtr = pick(xtr, ytr, tr->z[1], tr->labels, ktr, tr->n, D);
    int64_t mte = pick(xte, yte, te->z[1], te->labels, kte, te->n, D);
    double knn = eval_knn_accuracy(xtr, ytr, mtr, xte, yte, mte, D, 3, EVAL_KNN_K);
    CHECK(p.rep[1].knned && p.rep[1].knn == knn, "%s: kNN of view b %.17g, by hand %.17g", what, p.rep[1].knn, knn);
    mtr = pick(xtr, ytr, tr->fused, tr->labels, NULL, tr->n, D);
    mte = pick(xte, yte, te->fused, te->labels, NULL, te->n, D);
    eval_probe_result pr;
    CHECK(eval_linear_probe(&pr, xtr, ytr, mtr, xte, yte, mte, D, 3, &o.probe, err) == 0, "probe: %s", err);
    CHECK(p.rep[3].probed && !p.rep[0].probed && p.rep[3].probe.accuracy == pr.accuracy &&
          p.rep[3].probe.lambda == pr.lambda, "%s: probe of fused %.17g, by hand %.17g", what,
          p.rep[3].probe.accuracy, pr.accuracy);

    uint8_t *g1 = eval_mask_column(geom->mask, 2, 1, geom->n);
    eval_recall ab, ba;
    eval_retrieval(&ab, &ba, geom->z[0], geom->z[1], NULL, g1, geom->n, D);
    double al = eval_alignment(geom->z[0], geom->z[1], NULL, g1, geom->n, D);
    double ub = eval_uniformity(geom->z[1], g1, geom->n, D, 5);
    double uf = eval_uniformity(geom->fused, NULL, geom->n, D, 5);
    CHECK(p.npairs == 1 && p.pair[0].ij.r5 == ab.r5 && p.pair[0].ji.r1 == ba.r1 &&
          p.pair[0].ij.queries == ab.queries && p.pair[0].alignment == al, "%s: pair a:b", what);
    CHECK(p.uniformity[1] == ub && p.uniformity[2] == uf, "%s: uniformity b %.17g (%.17g), fused %.17g (%.17g)",
          what, p.uniformity[1], ub, p.uniformity[2], uf);
    free(g1);
    free(ktr);
    free(kte);
    free(xtr);
    free(xte);
    free(ytr);
    free(yte);
    eval_pass_free(&p);
}

static void test_pass(void) {
    eval_embeddings tr, te, bank, queries;
    make_embeddings(&tr, 400, 6, 1);
    make_embeddings(&te, 250, 6, 2);
    check_pass(&tr, &te, &te, "two splits");
    // --eval-every's way: the halves of one set, views into it, the geometry on all of it
    eval_embeddings_rows(&bank, &tr, 0, 200);
    eval_embeddings_rows(&queries, &tr, 200, 400);
    CHECK(bank.n == 200 && queries.n == 200 && queries.z[1] == tr.z[1] + 200 * 6 &&
          queries.mask == tr.mask + 400 && queries.labels == tr.labels + 200, "eval_embeddings_rows");
    check_pass(&bank, &queries, &tr, "halves of one set");
    eval_embeddings_free(&tr);
    eval_embeddings_free(&te);
}

int main(void) {
    kernels_set_threads(2);
    test_logreg_gradient();
    test_probe_matches_newton(0.05);
    test_probe_matches_newton(1e-3);
    test_probe_recovers_rule();
    kernels_set_threads(1);   // the single-thread path of the probe too
    test_probe_matches_newton(0.05);
    kernels_set_threads(2);
    test_knn_hand();
    test_knn_naive();
    test_retrieval_hand();
    test_retrieval_naive();
    test_geometry();
    test_fuse();
    test_files();
    test_pass();
    CHECK_DONE();
}
