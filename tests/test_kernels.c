/* test_kernels: every forward against a naive loop or closed form, every backward against
 * central finite differences.
 *
 * Finite differences: the kernels run in float; the scalar objective f = sum(out * R) (R a fixed
 * random array) is summed in double, and df/dx_i ~ (f(x + e) - f(x - e)) / (x+e - (x-e)) with
 * e = 1e-3 * max(1, |x_i|) and the step actually taken in float. Tolerance: over all entries of one gradient,
 *     max_i |analytic_i - fd_i| / max(max_i |fd_i|, 1e-6) <= 1e-2.
 * A self-check runs the same comparison with the analytic gradient scaled by 2 and requires it
 * to FAIL, so the tolerance is tight enough to catch a factor-of-2 error. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "kernels.h"
#include "rng.h"
#include "util.h"

#define FD_EPS 1e-3
#define FD_TOL 1e-2

static hcl_rng rng;

static float *rand_floats(int64_t n, double scale) {
    float *x = hcl_floats((size_t)n);
    for (int64_t i = 0; i < n; i++) x[i] = (float)((2.0 * rng_uniform(&rng) - 1.0) * scale);
    return x;
}

static double dot_d(const float *a, const float *b, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* max |a - fd| / max(max |fd|, 1e-6) with a scaled by `scale` */
static double grad_err(const float *a, const double *fd, int64_t n, double scale) {
    double mx = 0.0, md = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (fabs(fd[i]) > mx) mx = fabs(fd[i]);
        double d = fabs(scale * a[i] - fd[i]);
        if (d > md || isnan(d)) md = d;
    }
    return md / (mx > 1e-6 ? mx : 1e-6);
}

/* Compare an analytic gradient with FD; also the factor-of-2 self-check. */
static void check_grad(const char *what, const float *a, const double *fd, int64_t n) {
    double e1 = grad_err(a, fd, n, 1.0), e2 = grad_err(a, fd, n, 2.0);
    CHECK(e1 <= FD_TOL, "%s: FD relative error %.3g > %g", what, e1, FD_TOL);
    CHECK(e2 > FD_TOL, "%s: self-check: 2x the gradient still passes (err %.3g)", what, e2);
    printf("  %-24s fd rel err %.2e (2x: %.2e)\n", what, e1, e2);
}

/* The objective as a closure: recompute the forward and return sum(out * R). */
typedef double (*objective_fn)(void *ctx);

/* fd[i] = d objective / d x[i] for i < n, perturbing x in place. */
static void fd_grad(double *fd, float *x, int64_t n, objective_fn f, void *ctx) {
    for (int64_t i = 0; i < n; i++) {
        float x0 = x[i];
        double e = FD_EPS * (fabsf(x0) > 1.0f ? fabsf(x0) : 1.0f);  // relative step for large x
        float xp = (float)(x0 + e), xm = (float)(x0 - e);
        x[i] = xp;
        double fp = f(ctx);
        x[i] = xm;
        double fm = f(ctx);
        x[i] = x0;
        fd[i] = (fp - fm) / ((double)xp - (double)xm);
    }
}

/* Forward/backward against a naive reference: max|a - b| / max(max|b|, 1) <= tol. */
static int max_abs_diff_ok(const float *a, const float *b, int64_t n, double tol,
                           const char *what) {
    double mx = 0.0, md = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (fabs(b[i]) > mx) mx = fabs(b[i]);
        double d = fabs((double)a[i] - b[i]);
        if (d > md || isnan(d)) md = d;
    }
    double e = md / (mx > 1.0 ? mx : 1.0);  // inputs are O(1): at least an absolute scale of 1
    CHECK(e <= tol, "%s: relative max-abs difference %.3g > %g", what, e, tol);
    return e <= tol;
}

/* ---- linear ---------------------------------------------------------------------------------- */

typedef struct {
    float *out, *inp, *w, *b, *R;
    int B, C, OC;
} lin_ctx;

static double lin_obj(void *p) {
    lin_ctx *c = p;
    linear_forward(c->out, c->inp, NULL, c->w, c->b, c->B, c->C, c->OC);
    return dot_d(c->out, c->R, (int64_t)c->B * c->OC);
}

static void naive_linear(float *out, const float *inp, const float *w, const float *b, int B,
                         int C, int OC) {
    for (int i = 0; i < B; i++)
        for (int o = 0; o < OC; o++) {
            double s = b ? b[o] : 0.0;
            for (int k = 0; k < C; k++) s += (double)inp[i * C + k] * w[o * C + k];
            out[i * OC + o] = (float)s;
        }
}

static void test_linear_forward(int B, int C, int OC) {
    float *inp = rand_floats((int64_t)B * C, 1.0), *w = rand_floats((int64_t)OC * C, 0.5);
    float *b = rand_floats(OC, 0.5);
    float *out = rand_floats((int64_t)B * OC, 9.0), *ref = hcl_floats((size_t)B * OC);
    char what[96];
    naive_linear(ref, inp, w, b, B, C, OC);
    linear_forward(out, inp, NULL, w, b, B, C, OC);
    snprintf(what, sizeof what, "linear_forward %dx%dx%d", B, C, OC);
    max_abs_diff_ok(out, ref, (int64_t)B * OC, 1e-5, what);
    naive_linear(ref, inp, w, NULL, B, C, OC);
    linear_forward(out, inp, NULL, w, NULL, B, C, OC);
    snprintf(what, sizeof what, "linear_forward no bias %dx%dx%d", B, C, OC);
    max_abs_diff_ok(out, ref, (int64_t)B * OC, 1e-5, what);

    // backward against naive loops, with accumulation into preset dweight/dbias
    float *dout = rand_floats((int64_t)B * OC, 1.0);
    float *dinp = rand_floats((int64_t)B * C, 7.0);  // garbage: must be overwritten
    float *dw = rand_floats((int64_t)OC * C, 1.0), *db = rand_floats(OC, 1.0);
    float *dinp_ref = hcl_floats((size_t)B * C), *dw_ref = hcl_floats((size_t)OC * C);
    float *db_ref = hcl_floats((size_t)OC);
    for (int i = 0; i < B; i++)
        for (int k = 0; k < C; k++) {
            double s = 0.0;
            for (int o = 0; o < OC; o++) s += (double)dout[i * OC + o] * w[o * C + k];
            dinp_ref[i * C + k] = (float)s;
        }
    for (int o = 0; o < OC; o++) {
        double sb = db[o];
        for (int i = 0; i < B; i++) sb += dout[i * OC + o];
        db_ref[o] = (float)sb;
        for (int k = 0; k < C; k++) {
            double s = dw[o * C + k];
            for (int i = 0; i < B; i++) s += (double)dout[i * OC + o] * inp[i * C + k];
            dw_ref[o * C + k] = (float)s;
        }
    }
    linear_backward(dinp, dw, 1.0f, db, dout, NULL, inp, NULL, w, B, C, OC);
    snprintf(what, sizeof what, "linear_backward dinp %dx%dx%d", B, C, OC);
    max_abs_diff_ok(dinp, dinp_ref, (int64_t)B * C, 1e-5, what);
    snprintf(what, sizeof what, "linear_backward dweight += %dx%dx%d", B, C, OC);
    max_abs_diff_ok(dw, dw_ref, (int64_t)OC * C, 1e-5, what);
    snprintf(what, sizeof what, "linear_backward dbias += %dx%dx%d", B, C, OC);
    max_abs_diff_ok(db, db_ref, OC, 1e-5, what);

    // NULL dinp and NULL dbias: dweight still accumulates
    float *dw2 = hcl_floats((size_t)OC * C);
    memcpy(dw2, dw, sizeof(float) * OC * C);
    linear_backward(NULL, dw2, 1.0f, NULL, dout, NULL, inp, NULL, w, B, C, OC);
    for (int o = 0; o < OC; o++)
        for (int k = 0; k < C; k++) {
            double s = dw[o * C + k];
            for (int i = 0; i < B; i++) s += (double)dout[i * OC + o] * inp[i * C + k];
            dw_ref[o * C + k] = (float)s;
        }
    snprintf(what, sizeof what, "linear_backward NULL dinp/dbias %dx%dx%d", B, C, OC);
    max_abs_diff_ok(dw2, dw_ref, (int64_t)OC * C, 1e-5, what);

    // dw_beta 0 overwrites whatever dweight held (NaN here) with the bits of adding to zeros
    float *dw0 = hcl_floats((size_t)OC * C), *dwz = hcl_floats((size_t)OC * C);
    for (int i = 0; i < OC * C; i++) dw0[i] = NAN, dwz[i] = 0.0f;
    linear_backward(NULL, dw0, 0.0f, NULL, dout, NULL, inp, NULL, w, B, C, OC);
    linear_backward(NULL, dwz, 1.0f, NULL, dout, NULL, inp, NULL, w, B, C, OC);
    int same = 1;
    for (int i = 0; i < OC * C; i++) same &= dw0[i] == dwz[i];
    CHECK(same, "linear_backward dw_beta 0 %dx%dx%d: not the accumulate-onto-zeros values", B, C, OC);
    free(dw0); free(dwz);

    free(inp); free(w); free(b); free(out); free(ref); free(dout); free(dinp); free(dw);
    free(db); free(dinp_ref); free(dw_ref); free(db_ref); free(dw2);
}

static void test_linear_fd(void) {
    const int B = 5, C = 7, OC = 6;
    lin_ctx c = {hcl_floats(B * OC), rand_floats(B * C, 1.0), rand_floats(OC * C, 0.5),
                 rand_floats(OC, 0.5), rand_floats(B * OC, 1.0), B, C, OC};
    float *dinp = hcl_floats(B * C), *dw = hcl_floats(OC * C), *db = hcl_floats(OC);
    double fd[64];
    linear_forward(c.out, c.inp, NULL, c.w, c.b, B, C, OC);
    linear_backward(dinp, dw, 1.0f, db, c.R, NULL, c.inp, NULL, c.w, B, C, OC);  // dout = R
    fd_grad(fd, c.inp, B * C, lin_obj, &c);
    check_grad("linear dinp", dinp, fd, B * C);
    fd_grad(fd, c.w, OC * C, lin_obj, &c);
    check_grad("linear dweight", dw, fd, OC * C);
    fd_grad(fd, c.b, OC, lin_obj, &c);
    check_grad("linear dbias", db, fd, OC);
    free(c.out); free(c.inp); free(c.w); free(c.b); free(c.R); free(dinp); free(dw); free(db);
}

/* ---- relu / gelu ----------------------------------------------------------------------------- */

typedef struct {
    float *out, *inp, *R;
    int64_t n;
    int gelu;
} act_ctx;

static double act_obj(void *p) {
    act_ctx *c = p;
    if (c->gelu) gelu_forward(c->out, c->inp, c->n);
    else relu_forward(c->out, c->inp, c->n);
    return dot_d(c->out, c->R, c->n);
}

static void test_act(int gelu) {
    const int64_t n = 40;
    act_ctx c = {hcl_floats(n), rand_floats(n, 3.0), rand_floats(n, 1.0), n, gelu};
    // keep relu inputs away from the kink so x +- eps stays on one side
    for (int64_t i = 0; i < n; i++)
        if (fabsf(c.inp[i]) < 0.05f) c.inp[i] = c.inp[i] < 0 ? -0.05f - c.inp[i] : 0.05f + c.inp[i];
    float *din = hcl_floats(n), *din2 = hcl_floats(n);
    double fd[64];
    act_obj(&c);
    // forward against the closed form
    for (int64_t i = 0; i < n; i++) {
        double x = c.inp[i];
        double want = gelu ? 0.5 * x * (1.0 + erf(x / sqrt(2.0))) : (x > 0 ? x : 0.0);
        CHECK_CLOSE(c.out[i], want, 1e-5, 1e-6, gelu ? "gelu_forward" : "relu_forward");
    }
    if (gelu) gelu_backward(din, c.inp, c.R, n);
    else relu_backward(din, c.out, c.R, n);
    fd_grad(fd, c.inp, n, act_obj, &c);
    act_obj(&c);
    check_grad(gelu ? "gelu dinp" : "relu dinp", din, fd, n);
    // in place: dinp aliasing dout gives the same result
    memcpy(din2, c.R, sizeof(float) * n);
    if (gelu) gelu_backward(din2, c.inp, din2, n);
    else relu_backward(din2, c.out, din2, n);
    CHECK(memcmp(din, din2, sizeof(float) * n) == 0, "%s backward in place differs",
          gelu ? "gelu" : "relu");
    free(c.out); free(c.inp); free(c.R); free(din); free(din2);
}

static void test_gelu_values(void) {
    // torch.nn.GELU()(torch.tensor([1., -1., 0., 3.], dtype=float64))
    const float x[4] = {1.0f, -1.0f, 0.0f, 3.0f};
    const double want[4] = {0.841344746068543, -0.15865525393145702, 0.0, 2.99595030590511};
    float out[4];
    gelu_forward(out, x, 4);
    for (int i = 0; i < 4; i++) CHECK_CLOSE(out[i], want[i], 1e-6, 1e-7, "gelu value");
}

/* ---- layernorm ------------------------------------------------------------------------------- */

typedef struct {
    float *out, *mean, *rstd, *inp, *w, *b, *R;
    int B, C;
} ln_ctx;

static double ln_obj(void *p) {
    ln_ctx *c = p;
    layernorm_forward(c->out, c->mean, c->rstd, c->inp, c->w, c->b, c->B, c->C);
    return dot_d(c->out, c->R, (int64_t)c->B * c->C);
}

static void test_layernorm(void) {
    const int B = 4, C = 9;
    ln_ctx c = {hcl_floats(B * C), hcl_floats(B), hcl_floats(B), rand_floats(B * C, 2.0),
                rand_floats(C, 1.0), rand_floats(C, 1.0), rand_floats(B * C, 1.0), B, C};
    for (int i = 0; i < B * C; i++) c.inp[i] += 0.5f;  // non-zero row means
    for (int i = 0; i < C; i++) c.w[i] += 1.0f;
    ln_obj(&c);
    // forward: out = (x - mean) / sqrt(var + eps) * w + b against a double loop; saved stats
    for (int r = 0; r < B; r++) {
        double m = 0.0, v = 0.0;
        for (int i = 0; i < C; i++) m += c.inp[r * C + i];
        m /= C;
        for (int i = 0; i < C; i++) v += (c.inp[r * C + i] - m) * (c.inp[r * C + i] - m);
        v /= C;
        double rs = 1.0 / sqrt(v + 1e-5);
        CHECK_CLOSE(c.mean[r], m, 1e-6, 1e-6, "layernorm mean");
        CHECK_CLOSE(c.rstd[r], rs, 1e-5, 0, "layernorm rstd");
        for (int i = 0; i < C; i++)
            CHECK_CLOSE(c.out[r * C + i], (c.inp[r * C + i] - m) * rs * c.w[i] + c.b[i], 1e-5,
                        1e-6, "layernorm_forward");
    }
    // unit weight, zero bias: every row has mean 0 and (biased) variance 1 (up to eps)
    {
        float *ones = hcl_floats(C), *zeros = hcl_floats(C);
        for (int i = 0; i < C; i++) ones[i] = 1.0f;
        layernorm_forward(c.out, c.mean, c.rstd, c.inp, ones, zeros, B, C);
        for (int r = 0; r < B; r++) {
            double m = 0.0, v = 0.0;
            for (int i = 0; i < C; i++) m += c.out[r * C + i];
            m /= C;
            for (int i = 0; i < C; i++) v += (c.out[r * C + i] - m) * (c.out[r * C + i] - m);
            v /= C;
            CHECK_CLOSE(m, 0.0, 0, 1e-6, "layernorm row mean");
            CHECK_CLOSE(v, 1.0, 0, 1e-4, "layernorm row variance");
        }
        free(ones); free(zeros);
    }
    float *din = rand_floats(B * C, 5.0);  // garbage: must be overwritten
    float *dw = hcl_floats(C), *db = hcl_floats(C);
    double fd[64];
    ln_obj(&c);
    layernorm_backward(din, dw, db, c.R, c.inp, c.w, c.mean, c.rstd, B, C);
    fd_grad(fd, c.inp, B * C, ln_obj, &c);
    check_grad("layernorm dinp", din, fd, B * C);
    fd_grad(fd, c.w, C, ln_obj, &c);
    check_grad("layernorm dweight", dw, fd, C);
    fd_grad(fd, c.b, C, ln_obj, &c);
    check_grad("layernorm dbias", db, fd, C);
    // dweight, dbias accumulate: a second call doubles them
    float dw1[16], db1[16];
    memcpy(dw1, dw, sizeof(float) * C);
    memcpy(db1, db, sizeof(float) * C);
    ln_obj(&c);
    layernorm_backward(din, dw, db, c.R, c.inp, c.w, c.mean, c.rstd, B, C);
    for (int i = 0; i < C; i++) {
        CHECK_CLOSE(dw[i], 2.0 * dw1[i], 1e-6, 1e-7, "layernorm dweight accumulates");
        CHECK_CLOSE(db[i], 2.0 * db1[i], 1e-6, 1e-7, "layernorm dbias accumulates");
    }
    free(c.out); free(c.mean); free(c.rstd); free(c.inp); free(c.w); free(c.b); free(c.R);
    free(din); free(dw); free(db);
}

/* ---- l2norm ---------------------------------------------------------------------------------- */

typedef struct {
    float *out, *norm, *inp, *R;
    int B, C;
} l2_ctx;

static double l2_obj(void *p) {
    l2_ctx *c = p;
    l2norm_forward(c->out, c->norm, c->inp, c->B, c->C);
    return dot_d(c->out, c->R, (int64_t)c->B * c->C);
}

static void test_l2norm(void) {
    const int B = 5, C = 6;
    l2_ctx c = {hcl_floats(B * C), hcl_floats(B), rand_floats(B * C, 1.0),
                rand_floats(B * C, 1.0), B, C};
    for (int i = 0; i < C; i++) c.inp[2 * C + i] *= 30.0f;  // rows of different scales
    for (int i = 0; i < C; i++) c.inp[3 * C + i] *= 0.05f;
    l2_obj(&c);
    for (int r = 0; r < B; r++) {
        double n2 = 0.0, in2 = 0.0;
        for (int i = 0; i < C; i++) {
            n2 += (double)c.out[r * C + i] * c.out[r * C + i];
            in2 += (double)c.inp[r * C + i] * c.inp[r * C + i];
        }
        CHECK_CLOSE(sqrt(n2), 1.0, 0, 1e-6, "l2norm row has unit norm");
        CHECK_CLOSE(c.norm[r], sqrt(in2), 1e-6, 0, "l2norm saved norm");
        for (int i = 0; i < C; i++)
            CHECK_CLOSE(c.out[r * C + i], c.inp[r * C + i] / sqrt(in2), 1e-6, 1e-7,
                        "l2norm_forward");
    }
    float *din = rand_floats(B * C, 5.0), *din2 = hcl_floats(B * C);
    double fd[64];
    l2norm_backward(din, c.R, c.out, c.norm, B, C);
    fd_grad(fd, c.inp, B * C, l2_obj, &c);
    l2_obj(&c);
    // rows have different scales (gradient ~ 1/norm): compare row by row
    for (int r = 0; r < B; r++) {
        char what[64];
        snprintf(what, sizeof what, "l2norm dinp row %d", r);
        check_grad(what, din + r * C, fd + r * C, C);
    }
    memcpy(din2, c.R, sizeof(float) * B * C);
    l2norm_backward(din2, din2, c.out, c.norm, B, C);
    CHECK(memcmp(din, din2, sizeof(float) * B * C) == 0, "l2norm backward in place differs");

    // a zero row: norm clamped at 1e-12, output zero, no NaN
    float zin[3] = {0, 0, 0}, zout[3] = {1, 1, 1}, znorm = 0, zd[3] = {1, 2, 3}, zdi[3];
    l2norm_forward(zout, &znorm, zin, 1, 3);
    CHECK(zout[0] == 0 && zout[1] == 0 && zout[2] == 0, "l2norm of a zero row is zero");
    CHECK(znorm == 1e-12f, "l2norm of a zero row: norm %g, want 1e-12", (double)znorm);
    l2norm_backward(zdi, zd, zout, &znorm, 1, 3);
    CHECK(isfinite(zdi[0]) && isfinite(zdi[2]), "l2norm backward of a zero row is finite");
    free(c.out); free(c.norm); free(c.inp); free(c.R); free(din); free(din2);
}

/* ---- threads --------------------------------------------------------------------------------- */

static void test_threads(void) {
    int n0 = kernels_get_threads();
    CHECK(n0 >= 1, "kernels_get_threads %d", n0);
    kernels_set_threads(1);
    CHECK(kernels_get_threads() == 1, "set 1 thread, got %d", kernels_get_threads());
    kernels_set_threads(n0);
    CHECK(kernels_get_threads() == n0, "restore %d threads, got %d", n0, kernels_get_threads());
}

/* The fused backward passes with the bias gradient give the same bits as the separate kernels
 * (relu_backward / l2norm_backward, then linear_backward's row sum of dinp into dbias). */
static void test_fused_bias(int B, int C) {
    int64_t n = (int64_t)B * C;
    float *out = rand_floats(n, 1.0), *dout = rand_floats(n, 1.0), *norm = rand_floats(B, 1.0);
    float *d1 = rand_floats(n, 1.0), *d2 = rand_floats(n, 1.0);
    float *db1 = rand_floats(C, 1.0), *db2 = hcl_floats((size_t)C);
    for (int64_t i = 0; i < n; i++) out[i] -= 0.5f;   /* about half the units off */
    for (int b = 0; b < B; b++) norm[b] = b == 1 ? 1e-13f : 0.5f + norm[b];   /* one clamped */
    memcpy(db2, db1, sizeof(float) * (size_t)C);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0) relu_backward(d1, out, dout, n);
        else l2norm_backward(d1, dout, out, norm, B, C);
        for (int b = 0; b < B; b++)
            for (int i = 0; i < C; i++) db1[i] += d1[(size_t)b * C + i];
        if (pass == 0) {
            relu_backward_bias(d2, db2, out, dout, B, C);
        } else {
            memcpy(d2, dout, sizeof(float) * (size_t)n);   /* in place: dinp aliases dout */
            l2norm_backward_bias(d2, db2, d2, out, norm, B, C);
        }
        CHECK(memcmp(d1, d2, sizeof(float) * (size_t)n) == 0, "%s_backward_bias (%d,%d): dinp "
              "differs from the unfused kernel", pass ? "l2norm" : "relu", B, C);
        CHECK(memcmp(db1, db2, sizeof(float) * (size_t)C) == 0, "%s_backward_bias (%d,%d): dbias "
              "differs from the unfused row sum", pass ? "l2norm" : "relu", B, C);
    }
    free(out); free(dout); free(norm); free(d1); free(d2); free(db1); free(db2);
}

int main(void) {
    rng_derive(&rng, 1234, "test_kernels", 0);
    printf("finite differences: eps %g, tolerance max|a-fd|/max|fd| <= %g\n", FD_EPS, FD_TOL);
    test_linear_forward(3, 4, 5);
    test_linear_forward(33, 65, 17);
    test_linear_forward(128, 96, 130);
    test_linear_forward(1, 1, 1);
    test_linear_fd();
    test_act(0);
    test_act(1);
    test_gelu_values();
    test_layernorm();
    test_l2norm();
    test_fused_bias(7, 33);
    test_fused_bias(64, 512);
    test_threads();
    CHECK_DONE();
}
