/* test_optim: AdamW, SGD and LARS against hand-computed values, against PyTorch (when
 * /usr/bin/python3 has torch) and LARS against a double-precision reimplementation; the
 * learning-rate schedule; clipping by global norm.
 *
 * Tolerances: hand-computed values rtol 1e-6 (float32 rounding of a few operations); PyTorch
 * rtol 1e-6, atol 1e-7 (both compute in float32 in the same order; atol covers parameters near
 * zero); LARS vs the double reference rtol 1e-5, atol 1e-6 (float vs double over 5 steps);
 * schedule rtol 1e-6; clipping: norm after clip equals max_norm within 1e-5 relative. Each
 * comparison is also run against a deliberately doubled learning rate, which must fail it. */
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "optim.h"
#include "rng.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static hcl_tensor tensor_make(const char *name, int64_t offset, int64_t numel, int decay) {
    hcl_tensor t;
    memset(&t, 0, sizeof(t));
    snprintf(t.name, sizeof(t.name), "%s", name);
    t.offset = offset;
    t.numel = numel;
    t.ndim = 1;
    t.shape[0] = numel;
    t.decay = decay;
    return t;
}

/* Number of elements outside |got - want| <= atol + rtol |want|; prints the worst one when
 * verbose. Does not count as a check itself. */
static int count_mismatch(const char *what, const float *got, const double *want, int64_t n,
                          double rtol, double atol, int verbose) {
    int bad = 0;
    int64_t worst = -1;
    double worst_excess = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - want[i]), lim = atol + rtol * fabs(want[i]);
        if (!(err <= lim)) {
            bad++;
            if (worst < 0 || err - lim > worst_excess) { worst = i; worst_excess = err - lim; }
        }
    }
    if (bad && verbose)
        fprintf(stderr, "  %s: %d of %lld outside rtol %g atol %g; worst [%lld] got %.9g want %.9g\n",
                what, bad, (long long)n, rtol, atol, (long long)worst, (double)got[worst],
                want[worst]);
    return bad;
}

static void to_double(double *out, const float *in, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = in[i];
}

/* Run `steps` updates from p0 with grads G (steps, n) and per-step lrs (times lr_mul). */
static void run_c(const hcl_optim_config *c, const float *p0, const float *G, const float *lrs,
                  int steps, float lr_mul, const hcl_tensor *tn, int nt, int64_t n, float *p,
                  float *state) {
    memcpy(p, p0, (size_t)n * sizeof(float));
    memset(state, 0, (size_t)optim_state_floats(c, n) * sizeof(float));
    for (int s = 0; s < steps; s++)
        optim_step(c, lrs[s] * lr_mul, s + 1, p, G + (int64_t)s * n, state, tn, nt);
}

/* ---- (a) hand-computed values on tiny tensors ---------------------------------------------- */

/* Layout: w = params[0..2) decayed, params[2] covered by no tensor, b = params[3] not decayed. */
#define SMALL_N 4
static const float small_p0[SMALL_N] = {1.0f, -2.0f, 7.0f, 1.0f};
static const float small_g[2][SMALL_N] = {{0.5f, 0.25f, 9.0f, 0.5f}, {-0.5f, 0.25f, 9.0f, 0.5f}};

static void small_run(const hcl_optim_config *c, float lr, float *p, float *state) {
    hcl_tensor tn[2] = {tensor_make("w", 0, 2, 1), tensor_make("b", 3, 1, 0)};
    memcpy(p, small_p0, sizeof(small_p0));
    memset(state, 0, (size_t)optim_state_floats(c, SMALL_N) * sizeof(float));
    for (int s = 0; s < 2; s++) optim_step(c, lr, s + 1, p, small_g[s], state, tn, 2);
}

static void test_hand_adamw(void) {
    hcl_optim_config c;
    optim_config_default(&c);
    c.kind = HCL_OPTIM_ADAMW;
    c.weight_decay = 0.1f;
    float p[SMALL_N], state[2 * SMALL_N];
    small_run(&c, 0.1f, p, state);
    /* lr 0.1, wd 0.1, b1 0.9, b2 0.999, eps 1e-8.
     * p0 = 1, g = 0.5 then -0.5: t=1: m_hat = 0.5, v_hat = 0.25, p = 0.99 - 0.1*0.5/(0.5+eps)
     *   = 0.890000002; t=2: m = 0.045 - 0.05 = -0.005, m_hat = -0.005/0.19; v = 0.00049975,
     *   v_hat = 0.00049975/0.001999 = 0.25; p = 0.890000002*0.99 + 0.1*(0.005/0.19)/0.50000001
     *   = 0.88636316.
     * p1 = -2, g = 0.25 twice: each step p = 0.99 p - 0.1: -2.08, then -2.1592.
     * b = 1, g = 0.5 twice, no decay: 1 - 0.1 - 0.1 = 0.8. The uncovered param stays 7. */
    double want[SMALL_N] = {0.88636316, -2.1592, 7.0, 0.8};
    CHECK(count_mismatch("adamw hand", p, want, SMALL_N, 1e-6, 0.0, 1) == 0,
          "adamw two steps vs hand-computed values");
    CHECK(p[2] == 7.0f, "adamw touched a param covered by no tensor: %g", p[2]);
    /* state: m in [0, n), v in [n, 2n) with n = end of the last tensor = 4 */
    CHECK_CLOSE(state[0], -0.005, 1e-5, 0.0, "adamw m[0] after 2 steps");
    double b2 = c.beta2; /* 0.999f is 0.99900001: 1 - b2 differs from 0.001 by 1.3e-5 relative */
    CHECK_CLOSE(state[SMALL_N + 0], (b2 + 1.0) * (1.0 - b2) * 0.25, 1e-5, 0.0,
                "adamw v[0] after 2 steps (0.00049975 with b2 = 0.999)");
    CHECK_CLOSE(state[3], 0.095, 1e-5, 0.0, "adamw m[b] after 2 steps");
    CHECK(state[2] == 0.0f && state[SMALL_N + 2] == 0.0f, "adamw state of uncovered param");

    small_run(&c, 0.2f, p, state); /* sentinel: a doubled lr must fail the same comparison */
    CHECK(count_mismatch("adamw hand, doubled lr", p, want, SMALL_N, 1e-6, 0.0, 0) > 0,
          "adamw comparison does not catch a doubled lr");
}

static void test_hand_sgd(void) {
    hcl_optim_config c;
    optim_config_default(&c);
    c.kind = HCL_OPTIM_SGD;
    c.weight_decay = 0.1f;
    c.momentum = 0.9f;
    float p[SMALL_N], state[SMALL_N];
    /* lr 0.1, mu 0.9, wd 0.1.
     * p0 = 1, g = 0.5, -0.5: d = 0.6, buf = 0.6, p = 0.94; d = -0.5 + 0.094 = -0.406,
     *   buf = 0.54 - 0.406 = 0.134, p = 0.94 - 0.0134 = 0.9266.
     * p1 = -2, g = 0.25: d = 0.05, buf = 0.05, p = -2.005; d = 0.25 - 0.2005 = 0.0495,
     *   buf = 0.045 + 0.0495 = 0.0945, p = -2.01445.
     * b = 1, g = 0.5 (no decay): buf = 0.5, p = 0.95; buf = 0.95, p = 0.855. */
    double want[SMALL_N] = {0.9266, -2.01445, 7.0, 0.855};
    small_run(&c, 0.1f, p, state);
    CHECK(count_mismatch("sgd hand", p, want, SMALL_N, 1e-6, 0.0, 1) == 0,
          "sgd two steps vs hand-computed values");
    CHECK_CLOSE(state[0], 0.134, 1e-5, 0.0, "sgd momentum buffer[0]");
    CHECK(p[2] == 7.0f && state[2] == 0.0f, "sgd touched a param covered by no tensor");
    small_run(&c, 0.2f, p, state);
    CHECK(count_mismatch("sgd hand, doubled lr", p, want, SMALL_N, 1e-6, 0.0, 0) > 0,
          "sgd comparison does not catch a doubled lr");

    /* Nesterov: step = d + mu buf.
     * p0: d = 0.6, buf = 0.6, step 1.14, p = 0.886; d = -0.5 + 0.0886 = -0.4114,
     *   buf = 0.1286, step = -0.4114 + 0.11574 = -0.29566, p = 0.915566.
     * p1: d = 0.05, buf = 0.05, step 0.095, p = -2.0095; d = 0.25 - 0.20095 = 0.04905,
     *   buf = 0.09405, step = 0.04905 + 0.084645 = 0.133695, p = -2.0228695.
     * b: buf = 0.5, step 0.95, p = 0.905; buf = 0.95, step = 0.5 + 0.855, p = 0.7695. */
    /* the momentum buffer is g at t = 1, whatever the state held before */
    hcl_tensor tn[2] = {tensor_make("w", 0, 2, 1), tensor_make("b", 3, 1, 0)};
    float q[SMALL_N], sq[SMALL_N] = {123.0f, -5.0f, 0.0f, 1e6f};
    memcpy(q, small_p0, sizeof(q));
    optim_step(&c, 0.1f, 1, q, small_g[0], sq, tn, 2);
    CHECK_CLOSE(q[0], 0.94, 1e-6, 0.0, "sgd t = 1 ignores the old momentum buffer");
    CHECK_CLOSE(q[3], 0.95, 1e-6, 0.0, "sgd t = 1 ignores the old momentum buffer (bias)");

    c.nesterov = 1;
    double want_n[SMALL_N] = {0.915566, -2.0228695, 7.0, 0.7695};
    small_run(&c, 0.1f, p, state);
    CHECK(count_mismatch("sgd nesterov hand", p, want_n, SMALL_N, 1e-6, 0.0, 1) == 0,
          "sgd nesterov two steps vs hand-computed values");
}

static void test_hand_lars(void) {
    hcl_optim_config c;
    optim_config_default(&c);
    c.kind = HCL_OPTIM_LARS;
    c.weight_decay = 0.1f;
    c.momentum = 0.9f;
    c.trust = 0.003f;
    /* w = p[0..2) decayed, p[2] uncovered, b = p[3] not decayed, z = p[4..6) decayed, zero. */
    hcl_tensor tn[3] = {tensor_make("w", 0, 2, 1), tensor_make("b", 3, 1, 0),
                        tensor_make("z", 4, 2, 1)};
    const float p0[6] = {3.0f, 4.0f, 7.0f, 2.0f, 0.0f, 0.0f};
    const float g[6] = {0.6f, 0.8f, 9.0f, 0.5f, 0.5f, -1.0f};
    float p[6], state[6] = {0};
    memcpy(p, p0, sizeof(p));
    optim_step(&c, 1.0f, 1, p, g, state, tn, 3);
    /* lr 1. w: |p| = 5, |g| = 1, ratio = 0.003*5/(1 + 0.5) = 0.01, d = (0.9, 1.2)*0.01,
     *   p = (2.991, 3.988). b: plain momentum SGD, p = 2 - 0.5 = 1.5.
     * z: |p| = 0 so ratio 1, d = g, p = (-0.5, 1). */
    double want1[6] = {2.991, 3.988, 7.0, 1.5, -0.5, 1.0};
    CHECK(count_mismatch("lars hand step 1", p, want1, 6, 1e-6, 0.0, 1) == 0,
          "lars step 1 vs hand-computed values");
    optim_step(&c, 1.0f, 2, p, g, state, tn, 3);
    /* w: g + wd p = 0.2997*(3,4) is parallel to p = 0.997*(3,4), so |d| = trust |p|:
     *   d = 0.003*0.997*(3,4) = (0.008973, 0.011964); buf = 0.9*(0.009, 0.012) + d;
     *   p = (2.991 - 0.017073, 3.988 - 0.022764) = (2.973927, 3.965236).
     * b: buf = 0.45 + 0.5, p = 1.5 - 0.95 = 0.55.
     * z: |p| = |g| = sqrt(1.25), ratio = 0.003/1.1; d = (0.45, -0.9)*ratio;
     *   buf = 0.9*(0.5, -1) + d; p = (-0.5, 1) - buf = (-0.951227273, 1.897545455). */
    double want2[6] = {2.973927, 3.965236, 7.0, 0.55, -0.5 - (0.45 + 0.45 * 0.003 / 1.1),
                       1.0 + (0.9 + 0.9 * 0.003 / 1.1)};
    CHECK(count_mismatch("lars hand step 2", p, want2, 6, 1e-6, 0.0, 1) == 0,
          "lars step 2 vs hand-computed values");
    CHECK(state[2] == 0.0f, "lars touched the state of an uncovered param");

    /* zero gradient on a decayed tensor: ratio 1, d = wd p, p = 3 - 0.3 */
    float pz[2] = {3.0f, 0.0f}, gz[2] = {0.0f, 0.0f}, sz[2] = {0};
    hcl_tensor tz = tensor_make("w", 0, 2, 1);
    optim_step(&c, 1.0f, 1, pz, gz, sz, &tz, 1);
    CHECK_CLOSE(pz[0], 2.7, 1e-6, 0.0, "lars, zero gradient: ratio 1, pure weight decay");
}

/* ---- (b) PyTorch and the double-precision LARS reference ----------------------------------- */

/* Layout: a.weight (4,3) decayed, a.bias (3) not, one uncovered float, b.weight (5) decayed. */
#define REF_N 21
#define REF_STEPS 5
#define REF_NT 3

static const char *torch_script =
    "import sys, numpy as np, torch\n"
    "d = sys.argv[1]\n"
    "wd, b1, b2, eps, mu = map(float, sys.argv[2:7])\n"
    "p0 = np.fromfile(d + '/params.f32', dtype=np.float32)\n"
    "n = p0.size\n"
    "G = np.fromfile(d + '/grads.f32', dtype=np.float32).reshape(-1, n)\n"
    "lrs = np.fromfile(d + '/lrs.f32', dtype=np.float32)\n"
    "spans = [(0, 12, 1), (12, 3, 0), (16, 5, 1)]\n"
    "def run(make):\n"
    "    ps = [torch.tensor(p0[o:o + k].copy(), requires_grad=True) for o, k, _ in spans]\n"
    "    dec = [p for p, s in zip(ps, spans) if s[2]]\n"
    "    nod = [p for p, s in zip(ps, spans) if not s[2]]\n"
    "    opt = make([{'params': dec, 'weight_decay': wd}, {'params': nod, 'weight_decay': 0.0}])\n"
    "    for s in range(G.shape[0]):\n"
    "        for g in opt.param_groups: g['lr'] = float(lrs[s])\n"
    "        for p, (o, k, _) in zip(ps, spans): p.grad = torch.tensor(G[s, o:o + k].copy())\n"
    "        opt.step()\n"
    "    out = p0.copy()\n"
    "    for p, (o, k, _) in zip(ps, spans): out[o:o + k] = p.detach().numpy()\n"
    "    return out\n"
    "run(lambda g: torch.optim.AdamW(g, lr=1.0, betas=(b1, b2), eps=eps)).tofile(d + '/adamw.f32')\n"
    "run(lambda g: torch.optim.SGD(g, lr=1.0, momentum=mu)).tofile(d + '/sgd.f32')\n"
    "run(lambda g: torch.optim.SGD(g, lr=1.0, momentum=mu, nesterov=True))"
    ".tofile(d + '/sgd_nesterov.f32')\n";

static int file_write(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}

static int file_read_floats(const char *path, float *out, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t r = fread(out, sizeof(float), n, f);
    int extra = fgetc(f) != EOF;
    fclose(f);
    return (r == n && !extra) ? 0 : -1;
}

static void ref_data(float *p0, float *G, float *lrs, hcl_tensor *tn, const hcl_optim_config *c) {
    hcl_rng r;
    rng_derive(&r, 42, "test_optim", 0);
    for (int i = 0; i < REF_N; i++) p0[i] = (float)(0.5 * rng_normal(&r));
    for (int i = 0; i < REF_STEPS * REF_N; i++) G[i] = (float)(0.1 * rng_normal(&r));
    for (int s = 0; s < REF_STEPS; s++) lrs[s] = optim_lr_at(c, s);
    tn[0] = tensor_make("a.weight", 0, 12, 1);
    tn[0].ndim = 2;
    tn[0].shape[0] = 4;
    tn[0].shape[1] = 3;
    tn[1] = tensor_make("a.bias", 12, 3, 0);
    tn[2] = tensor_make("b.weight", 16, 5, 1);
}

static void test_torch(void) {
    if (access("/usr/bin/python3", X_OK) != 0 ||
        system("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") != 0) {
        CHECK_SKIP("torch comparison: python3-torch not installed");
        return;
    }
    hcl_optim_config c;
    optim_config_default(&c);
    c.lr = 0.05f;
    c.weight_decay = 0.05f;
    c.momentum = 0.9f;
    c.warmup_steps = 2;
    c.total_steps = 8;
    float p0[REF_N], G[REF_STEPS * REF_N], lrs[REF_STEPS], p[REF_N], state[2 * REF_N];
    float want_f[REF_N];
    double want[REF_N];
    hcl_tensor tn[REF_NT];
    ref_data(p0, G, lrs, tn, &c);

    char dir[] = "/tmp/hcl_test_optim_XXXXXX", path[256], cmd[1024];
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp %s", dir);
        return;
    }
    static const char *names[] = {"params.f32", "grads.f32", "lrs.f32", "ref.py", "adamw.f32",
                                  "sgd.f32", "sgd_nesterov.f32"};
    int ok = 1;
    snprintf(path, sizeof(path), "%s/params.f32", dir);
    ok &= file_write(path, p0, sizeof(p0)) == 0;
    snprintf(path, sizeof(path), "%s/grads.f32", dir);
    ok &= file_write(path, G, sizeof(G)) == 0;
    snprintf(path, sizeof(path), "%s/lrs.f32", dir);
    ok &= file_write(path, lrs, sizeof(lrs)) == 0;
    snprintf(path, sizeof(path), "%s/ref.py", dir);
    ok &= file_write(path, torch_script, strlen(torch_script)) == 0;
    CHECK(ok, "writing the torch inputs to %s", dir);
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s/ref.py %s %.9g %.9g %.9g %.9g %.9g", dir, dir,
             (double)c.weight_decay, (double)c.beta1, (double)c.beta2, (double)c.eps,
             (double)c.momentum);
    int rc = system(cmd);
    CHECK(rc == 0, "torch reference script failed (status %d): %s", rc, cmd);

    struct { const char *file; enum hcl_optim_kind kind; int nesterov; } runs[] = {
        {"adamw.f32", HCL_OPTIM_ADAMW, 0},
        {"sgd.f32", HCL_OPTIM_SGD, 0},
        {"sgd_nesterov.f32", HCL_OPTIM_SGD, 1},
    };
    for (size_t k = 0; rc == 0 && k < sizeof(runs) / sizeof(runs[0]); k++) {
        snprintf(path, sizeof(path), "%s/%s", dir, runs[k].file);
        if (file_read_floats(path, want_f, REF_N) != 0) {
            CHECK(0, "reading torch output %s", path);
            continue;
        }
        to_double(want, want_f, REF_N);
        c.kind = runs[k].kind;
        c.nesterov = runs[k].nesterov;
        run_c(&c, p0, G, lrs, REF_STEPS, 1.0f, tn, REF_NT, REF_N, p, state);
        CHECK(count_mismatch(runs[k].file, p, want, REF_N, 1e-6, 1e-7, 1) == 0,
              "%s: 5 steps vs torch within rtol 1e-6", runs[k].file);
        double maxrel = 0.0;
        for (int i = 0; i < REF_N; i++) {
            double e = fabs(p[i] - want[i]) / fmax(fabs(want[i]), 1e-30);
            if (e > maxrel) maxrel = e;
        }
        printf("torch %-17s max relative difference %.3g\n", runs[k].file, maxrel);
        CHECK(p[15] == p0[15], "%s: uncovered param changed", runs[k].file);
        run_c(&c, p0, G, lrs, REF_STEPS, 2.0f, tn, REF_NT, REF_N, p, state);
        CHECK(count_mismatch(runs[k].file, p, want, REF_N, 1e-6, 1e-7, 0) > 0,
              "%s: torch comparison does not catch a doubled lr", runs[k].file);
    }
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[k]);
        unlink(path);
    }
    rmdir(dir);
}

/* LARS in double, straight from the header's formula. */
static void lars_ref(const hcl_optim_config *c, const float *p0, const float *G, const float *lrs,
                     int steps, const hcl_tensor *tn, int nt, int64_t n, double *p, double *buf) {
    to_double(p, p0, n);
    for (int64_t i = 0; i < n; i++) buf[i] = 0.0;
    double wd = c->weight_decay, mu = c->momentum, trust = c->trust;
    for (int s = 0; s < steps; s++) {
        const float *g = G + (int64_t)s * n;
        for (int k = 0; k < nt; k++) {
            int64_t o = tn[k].offset;
            double pn = 0, gn = 0, ratio = 1.0, dwd = tn[k].decay ? wd : 0.0;
            for (int64_t i = o; i < o + tn[k].numel; i++) {
                pn += p[i] * p[i];
                gn += (double)g[i] * g[i];
            }
            pn = sqrt(pn);
            gn = sqrt(gn);
            if (tn[k].decay && pn > 0 && gn > 0) ratio = trust * pn / (gn + wd * pn);
            for (int64_t i = o; i < o + tn[k].numel; i++) {
                double d = (g[i] + dwd * p[i]) * ratio;
                buf[i] = s == 0 ? d : mu * buf[i] + d;
                p[i] -= (double)lrs[s] * (c->nesterov ? d + mu * buf[i] : buf[i]);
            }
        }
    }
}

static void test_lars_reference(void) {
    hcl_optim_config c;
    optim_config_default(&c);
    c.kind = HCL_OPTIM_LARS;
    c.lr = 0.5f;
    c.weight_decay = 0.05f;
    c.trust = 0.01f;
    c.warmup_steps = 2;
    c.total_steps = 8;
    float p0[REF_N], G[REF_STEPS * REF_N], lrs[REF_STEPS], p[REF_N], state[REF_N];
    double want[REF_N], buf[REF_N];
    hcl_tensor tn[REF_NT];
    ref_data(p0, G, lrs, tn, &c);
    for (int nesterov = 0; nesterov <= 1; nesterov++) {
        c.nesterov = nesterov;
        lars_ref(&c, p0, G, lrs, REF_STEPS, tn, REF_NT, REF_N, want, buf);
        run_c(&c, p0, G, lrs, REF_STEPS, 1.0f, tn, REF_NT, REF_N, p, state);
        CHECK(count_mismatch("lars vs double reference", p, want, REF_N, 1e-5, 1e-6, 1) == 0,
              "lars (nesterov %d) 5 steps vs double reference", nesterov);
        CHECK(p[15] == p0[15], "lars changed an uncovered param");
        run_c(&c, p0, G, lrs, REF_STEPS, 2.0f, tn, REF_NT, REF_N, p, state);
        CHECK(count_mismatch("lars doubled lr", p, want, REF_N, 1e-5, 1e-6, 0) > 0,
              "lars comparison does not catch a doubled lr");
    }

    /* Properties. No-decay tensors are plain momentum SGD whatever the trust coefficient: LARS
     * and SGD give the same bits on a.bias; and changing trust leaves a.bias unchanged. */
    float p_sgd[REF_N], p_lars2[REF_N];
    c.nesterov = 0;
    run_c(&c, p0, G, lrs, REF_STEPS, 1.0f, tn, REF_NT, REF_N, p, state);
    hcl_optim_config s = c;
    s.kind = HCL_OPTIM_SGD;
    run_c(&s, p0, G, lrs, REF_STEPS, 1.0f, tn, REF_NT, REF_N, p_sgd, state);
    hcl_optim_config t2 = c;
    t2.trust = 0.1f;
    run_c(&t2, p0, G, lrs, REF_STEPS, 1.0f, tn, REF_NT, REF_N, p_lars2, state);
    CHECK(memcmp(p + 12, p_sgd + 12, 3 * sizeof(float)) == 0,
          "lars and sgd differ on a no-decay tensor");
    CHECK(memcmp(p + 12, p_lars2 + 12, 3 * sizeof(float)) == 0,
          "lars trust coefficient changed a no-decay tensor");
    CHECK(memcmp(p, p_lars2, 12 * sizeof(float)) != 0,
          "lars trust coefficient had no effect on a decayed tensor");
    /* First step on a decayed tensor: |dp| = lr * ratio * |g + wd p| <= lr * trust * |p|. */
    hcl_tensor one = tn[0];
    float q[12], sq[12];
    memcpy(q, p0, sizeof(q));
    memset(sq, 0, sizeof(sq));
    optim_step(&c, 1.0f, 1, q, G, sq, &one, 1);
    double dn = 0, pn = 0;
    for (int i = 0; i < 12; i++) {
        dn += ((double)q[i] - p0[i]) * ((double)q[i] - p0[i]);
        pn += (double)p0[i] * p0[i];
    }
    CHECK(sqrt(dn) <= (double)c.trust * sqrt(pn) * (1 + 1e-5) && sqrt(dn) > 0,
          "lars first step norm %g not within (0, trust*|p| = %g]", sqrt(dn),
          (double)c.trust * sqrt(pn));
}

/* ---- (c) schedule -------------------------------------------------------------------------- */

static void test_schedule(void) {
    hcl_optim_config c;
    optim_config_default(&c);
    c.lr = 0.1f;
    c.warmup_steps = 10;
    c.total_steps = 110;
    CHECK_CLOSE(optim_lr_at(&c, 0), 0.01, 1e-6, 0.0, "lr at warmup start = lr/warmup");
    CHECK_CLOSE(optim_lr_at(&c, 4), 0.05, 1e-6, 0.0, "lr mid warmup");
    CHECK_CLOSE(optim_lr_at(&c, 9), 0.1, 1e-6, 0.0, "lr at warmup end = lr");
    CHECK_CLOSE(optim_lr_at(&c, 10), 0.1, 1e-6, 0.0, "lr at cosine start = lr");
    CHECK_CLOSE(optim_lr_at(&c, 60), 0.05, 1e-6, 0.0, "lr at cosine midpoint = lr/2");
    CHECK_CLOSE(optim_lr_at(&c, 35), 0.1 * 0.5 * (1 + cos(M_PI * 0.25)), 1e-6, 0.0,
                "lr a quarter into the cosine");
    CHECK_CLOSE(optim_lr_at(&c, 109), 0.1 * 0.5 * (1 + cos(M_PI * 0.99)), 1e-5, 0.0,
                "lr at the last step");
    CHECK(optim_lr_at(&c, 110) == 0.0f, "lr at total_steps is 0");
    CHECK(optim_lr_at(&c, 1000) == 0.0f, "lr past total_steps is 0");
    CHECK(fabs(optim_lr_at(&c, 60) - 0.1) > 1e-3, "schedule check cannot tell lr from lr/2");
    int mono = 1;
    for (int64_t s = 1; s < 120; s++) {
        float a = optim_lr_at(&c, s - 1), b = optim_lr_at(&c, s);
        if (s < 10 ? b < a : b > a) mono = 0;
    }
    CHECK(mono, "lr rises during warmup and falls after");

    c.warmup_steps = 0; /* no warmup: cosine from step 0 */
    c.total_steps = 100;
    CHECK_CLOSE(optim_lr_at(&c, 0), 0.1, 1e-6, 0.0, "no warmup: lr at step 0");
    CHECK_CLOSE(optim_lr_at(&c, 50), 0.05, 1e-6, 0.0, "no warmup: midpoint");
    CHECK(optim_lr_at(&c, 100) == 0.0f, "no warmup: lr at total_steps is 0");

    c.warmup_steps = 10; /* total <= warmup: no division by zero, finite, 0 past total */
    c.total_steps = 10;
    int finite = 1;
    for (int64_t s = 0; s < 30; s++) finite &= isfinite(optim_lr_at(&c, s)) != 0;
    CHECK(finite, "total == warmup gives a non-finite lr");
    CHECK_CLOSE(optim_lr_at(&c, 9), 0.1, 1e-6, 0.0, "total == warmup: last warmup step");
    CHECK(optim_lr_at(&c, 10) == 0.0f, "total == warmup: lr at total is 0");
    c.total_steps = 5;
    finite = 1;
    for (int64_t s = 0; s < 30; s++) finite &= isfinite(optim_lr_at(&c, s)) != 0;
    CHECK(finite && optim_lr_at(&c, 5) == 0.0f && optim_lr_at(&c, 12) == 0.0f,
          "total < warmup: finite, 0 from total on");

    c.warmup_steps = 4; /* total 0: no decay, constant lr after warmup */
    c.total_steps = 0;
    CHECK_CLOSE(optim_lr_at(&c, 0), 0.025, 1e-6, 0.0, "total 0: warmup still applies");
    CHECK_CLOSE(optim_lr_at(&c, 1000000), 0.1, 1e-6, 0.0, "total 0: constant lr after warmup");
}

/* ---- (d) clipping -------------------------------------------------------------------------- */

static void test_clip(void) {
    float g2[2] = {3.0f, 4.0f};
    CHECK_CLOSE(optim_grad_norm(g2, 2), 5.0, 1e-12, 0.0, "norm of (3,4)");
    CHECK(optim_grad_norm(g2, 0) == 0.0, "norm of nothing");

    enum { N = 1000 };
    static float g[N], g0[N];
    hcl_rng r;
    rng_derive(&r, 7, "test_clip", 0);
    for (int i = 0; i < N; i++) g0[i] = (float)rng_normal(&r);
    double norm = optim_grad_norm(g0, N), want = 0;
    for (int i = 0; i < N; i++) want += (double)g0[i] * g0[i];
    CHECK_CLOSE(norm, sqrt(want), 1e-12, 0.0, "global norm");

    memcpy(g, g0, sizeof(g));
    float max_norm = (float)(norm / 3.0);
    optim_clip(g, N, norm, max_norm);
    CHECK_CLOSE(optim_grad_norm(g, N), max_norm, 1e-5, 0.0, "norm after clip = max_norm");
    CHECK_CLOSE(g[17] / g0[17], max_norm / norm, 1e-5, 0.0, "clip scales every element");
    CHECK(fabs(optim_grad_norm(g, N) - 2.0 * max_norm) > 1e-5 * max_norm,
          "clip check cannot tell max_norm from 2*max_norm");

    /* the 1e-6 of torch's clip_grad_norm_ shows on a tiny norm: (3,4)e-6 clipped to 1e-6 is
     * scaled by 1e-6/(5e-6 + 1e-6) = 1/6, not 1/5 */
    float gt[2] = {3e-6f, 4e-6f};
    optim_clip(gt, 2, optim_grad_norm(gt, 2), 1e-6f);
    CHECK_CLOSE(gt[0], 0.5e-6, 1e-5, 0.0, "clip divides by norm + 1e-6 as torch does");

    memcpy(g, g0, sizeof(g));
    optim_clip(g, N, norm, (float)(2.0 * norm));
    CHECK(memcmp(g, g0, sizeof(g)) == 0, "clip below max_norm is not a no-op");
    optim_clip(g, N, norm, 0.0f);
    CHECK(memcmp(g, g0, sizeof(g)) == 0, "clip with max_norm 0 is not a no-op");
}

/* ---- config, names ------------------------------------------------------------------------- */

static void test_config(void) {
    hcl_optim_config c;
    memset(&c, 0xff, sizeof(c));
    optim_config_default(&c);
    CHECK(c.kind == HCL_OPTIM_ADAMW, "default kind");
    CHECK(c.lr == 1e-3f && c.weight_decay == 1e-4f, "default lr %g wd %g", c.lr, c.weight_decay);
    CHECK(c.beta1 == 0.9f && c.beta2 == 0.999f && c.eps == 1e-8f, "default betas/eps");
    CHECK(c.momentum == 0.9f && c.nesterov == 0 && c.trust == 0.001f, "default momentum/trust");
    CHECK(c.clip_norm == 0.0f && c.warmup_steps == 0 && c.total_steps == 0, "default clip/sched");

    CHECK(optim_state_floats(&c, 10) == 20, "adamw state floats");
    c.kind = HCL_OPTIM_SGD;
    CHECK(optim_state_floats(&c, 10) == 10, "sgd state floats");
    c.kind = HCL_OPTIM_LARS;
    CHECK(optim_state_floats(&c, 10) == 10, "lars state floats");

    enum hcl_optim_kind kinds[] = {HCL_OPTIM_ADAMW, HCL_OPTIM_SGD, HCL_OPTIM_LARS};
    const char *names[] = {"adamw", "sgd", "lars"};
    for (int i = 0; i < 3; i++) {
        enum hcl_optim_kind k = HCL_OPTIM_ADAMW;
        CHECK(strcmp(optim_kind_name(kinds[i]), names[i]) == 0, "name of kind %d", i);
        CHECK(optim_kind_parse(names[i], &k) == 0 && k == kinds[i], "parse %s", names[i]);
    }
    enum hcl_optim_kind k = HCL_OPTIM_SGD;
    CHECK(optim_kind_parse("adam", &k) == -1 && k == HCL_OPTIM_SGD, "parse rejects adam");
    CHECK(optim_kind_parse("", &k) == -1, "parse rejects empty");
}

/* optim_step_range over a partition of the buffer (ranges cutting tensors, as workers' slices
 * do) gives optim_step's bits, for AdamW and SGD with Nesterov, over three steps. */
static void test_ranges(void) {
    enum { P = 103 };
    hcl_tensor tn[3] = {tensor_make("w", 0, 60, 1), tensor_make("b", 60, 3, 0), tensor_make("v", 63, 40, 1)};
    const int64_t cuts[][2] = {{0, 17}, {17, 61}, {61, 62}, {62, 103}};
    for (int kind = 0; kind < 2; kind++) {
        hcl_optim_config c;
        optim_config_default(&c);
        c.kind = kind ? HCL_OPTIM_SGD : HCL_OPTIM_ADAMW;
        c.nesterov = 1;
        c.weight_decay = 0.01f;
        float pa[P], pb[P], g[P], sa[2 * P] = {0}, sb[2 * P] = {0};
        for (int i = 0; i < P; i++) pa[i] = pb[i] = 0.01f * (float)(i % 17) - 0.05f;
        for (int t = 1; t <= 3; t++) {
            for (int i = 0; i < P; i++) g[i] = 0.003f * (float)((i * 7 + t) % 23) - 0.03f;
            optim_step(&c, 0.01f, t, pa, g, sa, tn, 3);
            for (int k = 0; k < 4; k++) optim_step_range(&c, 0.01f, t, pb, g, sb, tn, 3, cuts[k][0], cuts[k][1]);
        }
        CHECK(memcmp(pa, pb, sizeof pa) == 0 && memcmp(sa, sb, sizeof sa) == 0,
              "%s: optim_step_range over a partition differs from optim_step", optim_kind_name(c.kind));
    }
}

int main(void) {
    test_config();
    test_ranges();
    test_hand_adamw();
    test_hand_sgd();
    test_hand_lars();
    test_torch();
    test_lars_reference();
    test_schedule();
    test_clip();
    CHECK_DONE();
}
