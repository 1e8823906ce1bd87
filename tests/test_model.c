/* test_model: tensor layout, validation, deterministic nn.Linear-style init, the encoder's
 * backward against central finite differences, and forward + backward against PyTorch.
 *
 * Finite differences: f = sum(z * R) (R fixed random, dz = R) is summed in double over the float
 * forward; each parameter p is stepped by e = 1e-3 * max(1, |p|) in float. For every tensor of
 * the encoder a sample of entries (first, last, the largest analytic gradient, and random ones)
 * is compared with
 *     max_i |analytic_i - fd_i| / max(max_i |fd_i|, 1e-6) <= 2e-2     (over the sample),
 * and the same comparison with the analytic gradient scaled by 2 must fail. With ReLU, a sample
 * whose step flips the sign of any pre-activation (a kink) is skipped (and counted).
 *
 * PyTorch: the encoder's parameters, the input and R go to a temp dir as raw float32; an inline
 * script builds nn.Sequential(Linear, [LayerNorm], ReLU|GELU, ..., Linear) + F.normalize in
 * float64 with those weights and writes z and the gradients of sum(z * R). Tolerance: per
 * tensor (and for z) max|c - torch| / max(max|torch|, 1e-6) <= 1e-4. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "kernels.h"
#include "model.h"
#include "rng.h"
#include "util.h"

#define FD_EPS 1e-3
#define FD_TOL 2e-2
#define FD_SAMPLES 8
#define TORCH_TOL 1e-4
#define PYTHON "/usr/bin/python3"

static hcl_rng rng;

static void fill_uniform(float *x, int64_t n, double scale) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)((2.0 * rng_uniform(&rng) - 1.0) * scale);
}

static void small_config(hcl_model_config *c, int act, int layernorm, int nclasses) {
    model_config_default(c);
    c->nviews = 2;
    strcpy(c->names[0], "top");
    strcpy(c->names[1], "bottom");
    c->in_width[0] = 6;
    c->in_width[1] = 4;
    c->nhidden = 2;
    c->hidden[0] = 8;
    c->hidden[1] = 7;
    c->dim = 5;
    c->act = act;
    c->layernorm = layernorm;
    c->nclasses = nclasses;
}

/* ---- config and validation ------------------------------------------------------------------- */

static void test_default_config(void) {
    hcl_model_config c;
    model_config_default(&c);
    CHECK(c.nhidden == 2 && c.hidden[0] == 512 && c.hidden[1] == 256, "default hidden widths");
    CHECK(c.dim == 128, "default dim %d", c.dim);
    CHECK(c.act == HCL_ACT_RELU && c.layernorm == 0 && c.nclasses == 0, "default act/ln/head");
    CHECK_CLOSE(c.t_init, log(1.0 / 0.07), 1e-6, 0, "default t_init = ln(1/0.07)");
}

static void expect_invalid(const hcl_model_config *c, const char *what) {
    hcl_model m;
    char err[HCL_ERR_MAX] = "";
    int rc = model_init(&m, c, 1, err);
    CHECK(rc == -1, "%s: model_init returned %d, want -1", what, rc);
    CHECK(err[0] != '\0', "%s: no error message", what);
    CHECK(m.params == NULL && m.grads == NULL, "%s: buffers allocated on error", what);
    printf("  rejected %-22s: %s\n", what, err);
    if (rc == 0) model_free(&m);
}

static void test_validation(void) {
    hcl_model_config c;
    small_config(&c, HCL_ACT_RELU, 0, 0);
    c.nviews = 0;
    expect_invalid(&c, "0 views");
    small_config(&c, HCL_ACT_RELU, 0, 0);
    c.nviews = HCL_MAX_VIEWS + 1;
    expect_invalid(&c, "too many views");
    small_config(&c, HCL_ACT_RELU, 0, 0);
    c.in_width[1] = 0;
    expect_invalid(&c, "input width 0");
    small_config(&c, HCL_ACT_RELU, 0, 0);
    c.nhidden = HCL_MAX_HIDDEN + 1;
    expect_invalid(&c, "too many hidden");
    small_config(&c, HCL_ACT_RELU, 0, 0);
    c.nhidden = -1;
    expect_invalid(&c, "negative nhidden");
    small_config(&c, HCL_ACT_RELU, 0, 0);
    c.hidden[1] = -3;
    expect_invalid(&c, "hidden width -3");
    small_config(&c, HCL_ACT_RELU, 0, 0);
    c.dim = 0;
    expect_invalid(&c, "dim 0");
    small_config(&c, HCL_ACT_RELU, 0, 0);
    c.nclasses = -1;
    expect_invalid(&c, "nclasses -1");
    small_config(&c, HCL_ACT_RELU, 0, 0);
    strcpy(c.names[1], "top");
    expect_invalid(&c, "duplicate view name");
    small_config(&c, HCL_ACT_RELU, 0, 0);
    c.names[0][0] = '\0';
    expect_invalid(&c, "empty view name");
    const char *bad_names[] = {"v1.x", "a/b", "-a", "x\x1b[2J"};   /* tensor names, files, flags */
    for (int i = 0; i < 4; i++) {
        small_config(&c, HCL_ACT_RELU, 0, 0);
        snprintf(c.names[1], HCL_NAME_MAX, "%s", bad_names[i]);
        expect_invalid(&c, i == 3 ? "a name with an escape" : bad_names[i]);
    }

    // the edges of the ranges are accepted
    small_config(&c, HCL_ACT_RELU, 0, 0);
    c.nhidden = 0;
    hcl_model m;
    char err[HCL_ERR_MAX] = "";
    CHECK(model_init(&m, &c, 1, err) == 0, "nhidden 0 rejected: %s", err);
    CHECK(m.enc[0].nlayers == 1 && m.enc[0].in[0] == 6 && m.enc[0].out[0] == 5,
          "nhidden 0: one linear layer in -> D");
    model_free(&m);
    model_config_default(&c);
    c.nviews = HCL_MAX_VIEWS;
    c.nhidden = HCL_MAX_HIDDEN;
    for (int v = 0; v < c.nviews; v++) {
        snprintf(c.names[v], HCL_NAME_MAX, "v%d", v);
        c.in_width[v] = 3 + v;
    }
    for (int k = 0; k < c.nhidden; k++) c.hidden[k] = 4;
    c.dim = 3;
    c.layernorm = 1;
    c.nclasses = 2;
    CHECK(model_init(&m, &c, 1, err) == 0, "max views / max hidden rejected: %s", err);
    model_free(&m);
}

/* ---- layout ---------------------------------------------------------------------------------- */

static void test_layout(int layernorm, int nclasses) {
    hcl_model_config c;
    small_config(&c, HCL_ACT_RELU, layernorm, nclasses);
    hcl_model m;
    char err[HCL_ERR_MAX] = "";
    CHECK(model_init(&m, &c, 7, err) == 0, "model_init: %s", err);

    // the expected names, in layout order
    char want[HCL_MAX_TENSORS][HCL_TENSOR_NAME_MAX];
    int nwant = 0;
    for (int v = 0; v < c.nviews; v++)
        for (int k = 0; k <= c.nhidden; k++) {
            snprintf(want[nwant++], HCL_TENSOR_NAME_MAX, "encoder.%s.%d.weight", c.names[v], k);
            snprintf(want[nwant++], HCL_TENSOR_NAME_MAX, "encoder.%s.%d.bias", c.names[v], k);
            if (layernorm && k < c.nhidden) {
                snprintf(want[nwant++], HCL_TENSOR_NAME_MAX, "encoder.%s.%d.norm.weight",
                         c.names[v], k);
                snprintf(want[nwant++], HCL_TENSOR_NAME_MAX, "encoder.%s.%d.norm.bias",
                         c.names[v], k);
            }
        }
    if (nclasses > 0) {
        strcpy(want[nwant++], "head.weight");
        strcpy(want[nwant++], "head.bias");
    }
    strcpy(want[nwant++], "logit_t");
    CHECK(m.ntensors == nwant, "ntensors %d, want %d", m.ntensors, nwant);
    for (int i = 0; i < nwant && i < m.ntensors; i++)
        CHECK(strcmp(m.tensors[i].name, want[i]) == 0, "tensor %d is %s, want %s", i,
              m.tensors[i].name, want[i]);

    // dense, non-overlapping, in order; nparams = sum of numel; numel = product of the shape
    int64_t off = 0;
    for (int i = 0; i < m.ntensors; i++) {
        const hcl_tensor *t = &m.tensors[i];
        CHECK(t->offset == off, "%s: offset %lld, want %lld", t->name, (long long)t->offset,
              (long long)off);
        int64_t n = t->ndim == 2 ? t->shape[0] * t->shape[1] : t->shape[0];
        CHECK(t->numel == n && n > 0, "%s: numel %lld vs shape", t->name, (long long)t->numel);
        CHECK(model_find_tensor(&m, t->name) == t, "find_tensor(%s)", t->name);
        int is_weight = strstr(t->name, ".weight") && !strstr(t->name, "norm.weight");
        CHECK(t->decay == is_weight, "%s: decay %d, want %d", t->name, t->decay, is_weight);
        CHECK(t->ndim == (is_weight ? 2 : 1), "%s: ndim %d", t->name, t->ndim);
        off += t->numel;
    }
    CHECK(m.nparams == off, "nparams %lld, sum of numel %lld", (long long)m.nparams,
          (long long)off);
    CHECK(model_find_tensor(&m, "no.such.tensor") == NULL, "find_tensor of a missing name");

    // per-encoder ranges: contiguous, in view order, covering exactly that view's tensors
    int64_t begin = 0;
    char prefix[HCL_TENSOR_NAME_MAX];
    for (int v = 0; v < c.nviews; v++) {
        const hcl_encoder *e = &m.enc[v];
        CHECK(e->param_begin == begin, "view %d begins at %lld, want %lld", v,
              (long long)e->param_begin, (long long)begin);
        CHECK(e->nlayers == c.nhidden + 1, "view %d nlayers %d", v, e->nlayers);
        snprintf(prefix, sizeof prefix, "encoder.%s.", c.names[v]);
        int64_t covered = 0;
        for (int i = 0; i < m.ntensors; i++) {
            const hcl_tensor *t = &m.tensors[i];
            int mine = strncmp(t->name, prefix, strlen(prefix)) == 0;
            int inside = t->offset >= e->param_begin && t->offset + t->numel <= e->param_end;
            CHECK(mine == inside, "%s: in view %d's range %d, name says %d", t->name, v, inside,
                  mine);
            if (mine) covered += t->numel;
        }
        CHECK(covered == e->param_end - e->param_begin, "view %d: tensors cover %lld of %lld",
              v, (long long)covered, (long long)(e->param_end - e->param_begin));
        // the offsets in hcl_encoder agree with the table
        for (int k = 0; k < e->nlayers; k++) {
            char nm[2 * HCL_TENSOR_NAME_MAX];  // room for prefix + suffix without truncation warnings
            int in = k == 0 ? c.in_width[v] : c.hidden[k - 1];
            int out = k < c.nhidden ? c.hidden[k] : c.dim;
            CHECK(e->in[k] == in && e->out[k] == out, "view %d layer %d: %d->%d", v, k,
                  e->in[k], e->out[k]);
            snprintf(nm, sizeof nm, "%s%d.weight", prefix, k);
            const hcl_tensor *t = model_find_tensor(&m, nm);
            CHECK(t && t->offset == e->w[k] && t->shape[0] == out && t->shape[1] == in,
                  "%s: offset/shape", nm);
            snprintf(nm, sizeof nm, "%s%d.bias", prefix, k);
            t = model_find_tensor(&m, nm);
            CHECK(t && t->offset == e->b[k] && t->shape[0] == out, "%s: offset/shape", nm);
            if (layernorm && k < c.nhidden) {
                snprintf(nm, sizeof nm, "%s%d.norm.weight", prefix, k);
                t = model_find_tensor(&m, nm);
                CHECK(t && t->offset == e->ln_w[k] && t->numel == out, "%s", nm);
                snprintf(nm, sizeof nm, "%s%d.norm.bias", prefix, k);
                t = model_find_tensor(&m, nm);
                CHECK(t && t->offset == e->ln_b[k] && t->numel == out, "%s", nm);
            } else {
                CHECK(e->ln_w[k] == -1 && e->ln_b[k] == -1, "view %d layer %d: ln offsets", v, k);
            }
        }
        begin = e->param_end;
    }
    const hcl_tensor *t = model_find_tensor(&m, "logit_t");
    CHECK(t && t->offset == m.logit_t && t->numel == 1 && m.logit_t == m.nparams - 1,
          "logit_t is the last float");
    if (nclasses > 0) {
        t = model_find_tensor(&m, "head.weight");
        CHECK(t && t->offset == m.head_w && m.head_w == begin && t->shape[0] == nclasses &&
              t->shape[1] == c.dim, "head.weight follows the encoders, (K, D)");
        t = model_find_tensor(&m, "head.bias");
        CHECK(t && t->offset == m.head_b && t->numel == nclasses, "head.bias");
    } else {
        CHECK(m.head_w == -1 && m.head_b == -1, "no head: offsets -1");
        CHECK(m.logit_t == begin, "no head: logit_t follows the encoders");
    }
    for (int64_t i = 0; i < m.nparams; i++)
        if (m.grads[i] != 0.0f) {
            CHECK(0, "grads not zeroed at %lld", (long long)i);
            break;
        }
    model_free(&m);
}

/* ---- initialisation -------------------------------------------------------------------------- */

static void test_init(void) {
    hcl_model_config c;
    small_config(&c, HCL_ACT_GELU, 1, 3);
    c.hidden[0] = 64;  // enough draws for a meaningful spread check
    hcl_model a, b, d;
    char err[HCL_ERR_MAX] = "";
    CHECK(model_init(&a, &c, 42, err) == 0, "%s", err);
    CHECK(model_init(&b, &c, 42, err) == 0, "%s", err);
    CHECK(model_init(&d, &c, 43, err) == 0, "%s", err);
    CHECK(a.nparams == b.nparams && memcmp(a.params, b.params, sizeof(float) * a.nparams) == 0,
          "same seed gives different parameters");
    int64_t ndiff = 0;
    for (int64_t i = 0; i < a.nparams; i++) ndiff += a.params[i] != d.params[i];
    CHECK(ndiff > a.nparams / 2, "seeds 42 and 43 differ in only %lld of %lld floats",
          (long long)ndiff, (long long)a.nparams);

    for (int i = 0; i < a.ntensors; i++) {
        const hcl_tensor *t = &a.tensors[i];
        const float *p = a.params + t->offset;
        if (strstr(t->name, ".norm.")) {
            float want = strstr(t->name, "norm.weight") ? 1.0f : 0.0f;
            for (int64_t j = 0; j < t->numel; j++)
                if (p[j] != want) {
                    CHECK(0, "%s[%lld] = %g, want %g", t->name, (long long)j, p[j], want);
                    break;
                }
            continue;
        }
        if (strcmp(t->name, "logit_t") == 0) {
            CHECK(p[0] == c.t_init, "logit_t %g, want t_init %g", p[0], c.t_init);
            continue;
        }
        // nn.Linear: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias; in = weight's shape[1]
        char wname[HCL_TENSOR_NAME_MAX];
        snprintf(wname, sizeof wname, "%s", t->name);
        char *dot = strrchr(wname, '.');
        strcpy(dot, ".weight");
        const hcl_tensor *w = model_find_tensor(&a, wname);
        CHECK(w != NULL, "no weight for %s", t->name);
        if (!w) continue;
        double bound = 1.0 / sqrt((double)w->shape[1]);
        double mx = 0.0, mean = 0.0;
        for (int64_t j = 0; j < t->numel; j++) {
            if (fabs(p[j]) > mx) mx = fabs(p[j]);
            mean += p[j];
        }
        mean /= t->numel;
        CHECK(mx <= (float)bound, "%s: max |p| %g > 1/sqrt(in) %g", t->name, mx, bound);
        if (t->numel >= 200) {
            // a uniform sample of n >= 200 reaches 0.9 bound and has |mean| << bound
            CHECK(mx >= 0.9 * bound, "%s: max |p| %g < 0.9/sqrt(in) (%g)", t->name, mx, bound);
            CHECK(fabs(mean) <= 0.2 * bound, "%s: mean %g not ~0 (bound %g)", t->name, mean,
                  bound);
        }
    }
    model_free(&a);
    model_free(&b);
    model_free(&d);
}

/* ---- finite differences of the whole encoder ------------------------------------------------- */

typedef struct {
    hcl_model *m;
    hcl_model_acts *a;
    int v, B;
    const float *x, *R;
    int check_kinks;
    unsigned char *sign;  // (nlayers-1, B, hidden) sign bits of pre-activations at the base
} enc_ctx;

static double enc_obj(enc_ctx *c) {
    const float *z = model_encode(c->m, c->a, c->v, c->x, c->B);
    double s = 0.0;
    for (int64_t i = 0; i < (int64_t)c->B * c->m->cfg.dim; i++) s += (double)z[i] * c->R[i];
    return s;
}

/* Sign pattern of the hidden pre-activations; returns 1 when it equals the saved one (or saves
 * it when save is set). */
static int sign_pattern(enc_ctx *c, int save) {
    const hcl_encoder *e = &c->m->enc[c->v];
    int64_t j = 0;
    int same = 1;
    for (int k = 0; k < e->nlayers - 1; k++) {
        const float *h = e->ln_w[k] >= 0 ? c->a->v[c->v].ln[k] : c->a->v[c->v].pre[k];
        for (int64_t i = 0; i < (int64_t)c->B * e->out[k]; i++, j++) {
            unsigned char s = h[i] > 0.0f;
            if (save) c->sign[j] = s;
            else if (c->sign[j] != s) same = 0;
        }
    }
    return same;
}

/* Central finite differences of a sample of tensor t's entries (first, last, the largest
 * analytic gradient g, random ones) against g, and the self-check that 2 g fails; samples whose
 * step crosses a ReLU kink are counted in *skipped and left out. */
static void fd_tensor(enc_ctx *ctx, const hcl_tensor *t, const float *g, const char *label, int *tried,
                      int *skipped) {
    int64_t idx[FD_SAMPLES];
    int ns = 0;
    if (t->numel <= FD_SAMPLES) {
        for (int64_t j = 0; j < t->numel; j++) idx[ns++] = j;
    } else {
        int64_t jmax = 0;
        for (int64_t j = 1; j < t->numel; j++)
            if (fabsf(g[t->offset + j]) > fabsf(g[t->offset + jmax])) jmax = j;
        idx[ns++] = 0;
        idx[ns++] = t->numel - 1;
        idx[ns++] = jmax;
        while (ns < FD_SAMPLES) idx[ns++] = (int64_t)rng_below(&rng, (uint64_t)t->numel);
    }
    float an[FD_SAMPLES];
    double fd[FD_SAMPLES];
    int nk = 0;
    for (int s = 0; s < ns; s++) {
        float *p = ctx->m->params + t->offset + idx[s];
        float p0 = *p;
        double eps = FD_EPS * (fabsf(p0) > 1.0f ? fabsf(p0) : 1.0f);
        float pp = (float)(p0 + eps), pm = (float)(p0 - eps);
        int kink = 0;
        *p = pp;
        double fp = enc_obj(ctx);
        if (ctx->check_kinks && !sign_pattern(ctx, 0)) kink = 1;
        *p = pm;
        double fm = enc_obj(ctx);
        if (ctx->check_kinks && !sign_pattern(ctx, 0)) kink = 1;
        *p = p0;
        (*tried)++;
        if (kink) {
            (*skipped)++;
            continue;
        }
        an[nk] = g[t->offset + idx[s]];
        fd[nk] = (fp - fm) / ((double)pp - (double)pm);
        nk++;
    }
    double mx = 0.0, e1 = 0.0, e2 = 0.0;
    for (int s = 0; s < nk; s++) if (fabs(fd[s]) > mx) mx = fabs(fd[s]);
    if (mx < 1e-6) mx = 1e-6;
    for (int s = 0; s < nk; s++) {
        double d1 = fabs(an[s] - fd[s]) / mx, d2 = fabs(2.0 * an[s] - fd[s]) / mx;
        if (d1 > e1 || isnan(d1)) e1 = d1;
        if (d2 > e2 || isnan(d2)) e2 = d2;
    }
    CHECK(nk > 0, "%s: every FD sample crossed a ReLU kink", t->name);
    CHECK(e1 <= FD_TOL, "%s (%s): FD relative error %.3g > %g", t->name, label, e1,
          FD_TOL);
    CHECK(e2 > FD_TOL, "%s (%s): self-check: 2x the gradient passes (%.3g)", t->name,
          label, e2);
    printf("  %-28s n=%d fd rel err %.2e (2x: %.2e)\n", t->name, nk, e1, e2);
}

static void test_encoder_fd(int act, int layernorm) {
    const char *label = act == HCL_ACT_GELU ? (layernorm ? "GELU+LayerNorm" : "GELU")
                                            : (layernorm ? "ReLU+LayerNorm" : "ReLU");
    printf("encoder FD (%s): eps %g, tolerance %g over a sample of <= %d per tensor\n", label,
           FD_EPS, FD_TOL, FD_SAMPLES);
    hcl_model_config c;
    small_config(&c, act, layernorm, 3);
    hcl_model m;
    char err[HCL_ERR_MAX] = "";
    CHECK(model_init(&m, &c, 11, err) == 0, "%s", err);
    // perturb the norm parameters away from (1, 0) so their gradients are not special
    for (int i = 0; i < m.ntensors; i++)
        if (strstr(m.tensors[i].name, ".norm."))
            for (int64_t j = 0; j < m.tensors[i].numel; j++)
                m.params[m.tensors[i].offset + j] += (float)(0.3 * (2.0 * rng_uniform(&rng) - 1.0));
    const int B = 4, max_rows = 6;
    hcl_model_acts a;
    model_acts_init(&a, &m, max_rows);

    for (int v = 0; v < c.nviews; v++) {
        const hcl_encoder *e = &m.enc[v];
        float *x = hcl_floats((size_t)B * c.in_width[v]);
        float *R = hcl_floats((size_t)B * c.dim);
        fill_uniform(x, (int64_t)B * c.in_width[v], 1.5);
        fill_uniform(R, (int64_t)B * c.dim, 1.0);
        unsigned char sign[HCL_MAX_HIDDEN * 6 * 64];
        enc_ctx ctx = {&m, &a, v, B, x, R, act == HCL_ACT_RELU, sign};

        // analytic gradients; poison the scratch so stale values would show
        model_zero_grad(&m);
        model_encode(&m, &a, v, x, B);
        fill_uniform(a.v[v].d0, (int64_t)max_rows * 8, 100.0);
        fill_uniform(a.v[v].d1, (int64_t)max_rows * 8, 100.0);
        model_encode_backward(&m, &a, v, x, R, B, 0);
        float *g = hcl_floats((size_t)m.nparams);
        memcpy(g, m.grads, sizeof(float) * m.nparams);
        int64_t outside = 0;
        for (int64_t i = 0; i < m.nparams; i++)
            if ((i < e->param_begin || i >= e->param_end) && g[i] != 0.0f) outside++;
        CHECK(outside == 0, "view %d backward wrote %lld grads outside its range", v,
              (long long)outside);

        // backward accumulates: a second pass doubles the gradients
        model_encode(&m, &a, v, x, B);
        model_encode_backward(&m, &a, v, x, R, B, 0);
        double worst = 0.0;
        for (int64_t i = e->param_begin; i < e->param_end; i++) {
            double d = fabs(m.grads[i] - 2.0 * g[i]);
            if (d > worst) worst = d;
        }
        CHECK(worst <= 1e-5, "view %d: two backwards != 2x one (max diff %g)", v, worst);

        model_encode(&m, &a, v, x, B);
        sign_pattern(&ctx, 1);
        int skipped = 0, tried = 0;
        for (int ti = 0; ti < m.ntensors; ti++) {
            const hcl_tensor *t = &m.tensors[ti];
            if (t->offset < e->param_begin || t->offset >= e->param_end) continue;
            fd_tensor(&ctx, t, g, label, &tried, &skipped);
        }
        CHECK(skipped * 4 <= tried, "%d of %d FD samples crossed a kink", skipped, tried);
        if (skipped) printf("  (%d of %d samples skipped: step crossed a ReLU kink)\n", skipped,
                            tried);

        // rows are independent: encoding the first 2 rows gives the same first 2 rows of z
        float z4[4 * 8];
        memcpy(z4, model_encode(&m, &a, v, x, B), sizeof(float) * B * c.dim);
        const float *z2 = model_encode(&m, &a, v, x, 2);
        for (int i = 0; i < 2 * c.dim; i++)
            CHECK_CLOSE(z2[i], z4[i], 1e-5, 1e-6, "z of a smaller batch");
        free(x);
        free(R);
        free(g);
    }
    model_acts_free(&a, &m);
    model_free(&m);
}

/* ---- PyTorch reference ----------------------------------------------------------------------- */

static const char *torch_script =
    "import sys, numpy as np, torch, torch.nn as nn, torch.nn.functional as F\n"
    "torch.set_num_threads(1)\n"
    "d = sys.argv[1]\n"
    "cin, D, B, ln, gelu, nh, *hid = [int(s) for s in open(d + '/meta.txt').read().split()]\n"
    "widths = [cin] + hid + [D]\n"
    "layers = []\n"
    "for k in range(nh + 1):\n"
    "    layers.append(nn.Linear(widths[k], widths[k + 1]))\n"
    "    if k < nh:\n"
    "        if ln: layers.append(nn.LayerNorm(widths[k + 1]))\n"
    "        layers.append(nn.GELU() if gelu else nn.ReLU())\n"
    "enc = nn.Sequential(*layers).double()\n"
    "flat = np.fromfile(d + '/params.f32', dtype=np.float32).astype(np.float64)\n"
    "off = 0\n"
    "with torch.no_grad():\n"
    "    for p in enc.parameters():\n"
    "        p.copy_(torch.from_numpy(flat[off:off + p.numel()]).view_as(p)); off += p.numel()\n"
    "assert off == flat.size, (off, flat.size)\n"
    "x = torch.from_numpy(np.fromfile(d + '/x.f32', dtype=np.float32).astype(np.float64))\n"
    "R = torch.from_numpy(np.fromfile(d + '/r.f32', dtype=np.float32).astype(np.float64))\n"
    "z = F.normalize(enc(x.view(B, cin)), dim=1)\n"
    "(z * R.view(B, D)).sum().backward()\n"
    "z.detach().numpy().astype(np.float64).tofile(d + '/z.f64')\n"
    "np.concatenate([p.grad.numpy().ravel() for p in enc.parameters()]).tofile(d + '/g.f64')\n";

static int write_file(const char *dir, const char *name, const void *p, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(p, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static int read_file(const char *dir, const char *name, void *p, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t r = fread(p, 1, n, f);
    int extra = fgetc(f) != EOF;
    fclose(f);
    return r == n && !extra ? 0 : -1;
}

static void remove_dir(const char *dir) {
    static const char *names[] = {"ref.py", "meta.txt", "params.f32", "x.f32", "r.f32",
                                  "z.f64", "g.f64"};
    char path[512];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

static double rel_maxabs(const float *c, const double *ref, int64_t n) {
    double mx = 0.0, md = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
        double d = fabs(c[i] - ref[i]);
        if (d > md || isnan(d)) md = d;
    }
    return md / (mx > 1e-6 ? mx : 1e-6);
}

static void test_torch(int act, int layernorm) {
    const char *label = act == HCL_ACT_GELU ? (layernorm ? "GELU+LayerNorm" : "GELU")
                                            : (layernorm ? "ReLU+LayerNorm" : "ReLU");
    hcl_model_config c;
    model_config_default(&c);
    c.nviews = 1;
    strcpy(c.names[0], "x");
    c.in_width[0] = 10;
    c.nhidden = 2;
    c.hidden[0] = 16;
    c.hidden[1] = 12;
    c.dim = 8;
    c.act = act;
    c.layernorm = layernorm;
    const int B = 6;
    hcl_model m;
    char err[HCL_ERR_MAX] = "";
    CHECK(model_init(&m, &c, 5, err) == 0, "%s", err);
    for (int i = 0; i < m.ntensors; i++)
        if (strstr(m.tensors[i].name, ".norm."))
            for (int64_t j = 0; j < m.tensors[i].numel; j++)
                m.params[m.tensors[i].offset + j] += (float)(0.3 * (2.0 * rng_uniform(&rng) - 1.0));
    hcl_model_acts a;
    model_acts_init(&a, &m, B);
    float x[6 * 10], R[6 * 8];
    fill_uniform(x, B * c.in_width[0], 1.5);
    fill_uniform(R, B * c.dim, 1.0);
    model_zero_grad(&m);
    const float *z = model_encode(&m, &a, 0, x, B);
    model_encode_backward(&m, &a, 0, x, R, B, 0);

    char dir[] = "/tmp/hcl_test_model_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp failed");
        goto out;
    }
    const hcl_encoder *e = &m.enc[0];
    int64_t np = e->param_end - e->param_begin;
    char meta[128];
    snprintf(meta, sizeof meta, "%d %d %d %d %d %d %d %d\n", c.in_width[0], c.dim, B,
             c.layernorm, c.act == HCL_ACT_GELU, c.nhidden, c.hidden[0], c.hidden[1]);
    int wr = write_file(dir, "ref.py", torch_script, strlen(torch_script)) |
             write_file(dir, "meta.txt", meta, strlen(meta)) |
             write_file(dir, "params.f32", m.params + e->param_begin, sizeof(float) * np) |
             write_file(dir, "x.f32", x, sizeof x) | write_file(dir, "r.f32", R, sizeof R);
    CHECK(wr == 0, "writing inputs to %s", dir);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, PYTHON " %s/ref.py %s", dir, dir);
    int rc = system(cmd);
    CHECK(rc == 0, "torch reference script failed (rc %d): %s", rc, cmd);
    if (rc == 0) {
        double zt[6 * 8];
        double *gt = hcl_malloc(sizeof(double) * np);
        int rd = read_file(dir, "z.f64", zt, sizeof zt) |
                 read_file(dir, "g.f64", gt, sizeof(double) * np);
        CHECK(rd == 0, "reading torch outputs from %s", dir);
        if (rd == 0) {
            double ez = rel_maxabs(z, zt, B * c.dim);
            CHECK(ez <= TORCH_TOL, "torch (%s): z differs, rel err %.3g > %g", label, ez,
                  TORCH_TOL);
            printf("torch comparison (%s): tolerance %g\n  %-28s rel err %.2e\n", label,
                   TORCH_TOL, "z", ez);
            for (int i = 0; i < m.ntensors; i++) {
                const hcl_tensor *t = &m.tensors[i];
                if (t->offset < e->param_begin || t->offset >= e->param_end) continue;
                double eg = rel_maxabs(m.grads + t->offset, gt + (t->offset - e->param_begin),
                                       t->numel);
                CHECK(eg <= TORCH_TOL, "torch (%s): grad %s differs, rel err %.3g > %g", label,
                      t->name, eg, TORCH_TOL);
                printf("  %-28s rel err %.2e\n", t->name, eg);
            }
        }
        free(gt);
    }
    remove_dir(dir);
out:
    model_acts_free(&a, &m);
    model_free(&m);
}

static int have_torch(void) {
    if (access(PYTHON, X_OK) != 0) return 0;
    return system(PYTHON " -c 'import torch, numpy' >/dev/null 2>&1") == 0;
}

/* model_config_nparams is model_init's count, and an overflowing one is -1 (refused by
 * model_init with a line, not an abort allocating it). */
static void test_size(void) {
    hcl_model_config c;
    hcl_model m;
    char err[HCL_ERR_MAX] = "";
    for (int ln = 0; ln < 2; ln++) {
        small_config(&c, HCL_ACT_RELU, ln, 3 * ln);
        CHECK(model_init(&m, &c, 1, err) == 0, "%s", err);
        CHECK(model_config_nparams(&c) == m.nparams, "nparams %lld, model_init %lld",
              (long long)model_config_nparams(&c), (long long)m.nparams);
        model_free(&m);
    }
    model_config_default(&c);
    c.nviews = HCL_MAX_VIEWS;
    c.nhidden = HCL_MAX_HIDDEN;
    for (int v = 0; v < c.nviews; v++) {
        snprintf(c.names[v], HCL_NAME_MAX, "v%d", v);
        c.in_width[v] = INT32_MAX;
    }
    for (int k = 0; k < c.nhidden; k++) c.hidden[k] = INT32_MAX;
    CHECK(model_config_nparams(&c) == -1, "56 layers of 2^62 parameters: %lld, want -1 (overflow)",
          (long long)model_config_nparams(&c));
    expect_invalid(&c, "2^68 parameters");
    CHECK(model_init(&m, &c, 1, err) == -1 && strstr(err, "more than 2^63 parameters"), "overflow: %s", err);
    /* 2^20-wide layers (the widest a model file may name) on 2 views: 6 x 2^40 parameters, 53 TB
     * of weights and gradients, refused with the shape, the count and the limit */
    small_config(&c, HCL_ACT_RELU, 0, 0);
    c.nhidden = 3;
    c.hidden[0] = c.hidden[1] = c.hidden[2] = c.dim = 1 << 20;
    CHECK(model_init(&m, &c, 1, err) == -1 && strstr(err, "hidden 1048576,1048576,1048576 and dim 1048576") &&
          strstr(err, "6597088641025 parameters") && strstr(err, "TB, more than the"), "2^20-wide: %s", err);
    CHECK(model_check_memory(&c, 0, "nothing", err) == 0, "0 copies fit: %s", err);
}

int main(void) {
    rng_derive(&rng, 99, "test_model", 0);
    test_default_config();
    test_validation();
    test_size();
    test_layout(0, 0);
    test_layout(1, 0);
    test_layout(0, 4);
    test_layout(1, 4);
    test_init();
    test_encoder_fd(HCL_ACT_RELU, 0);
    test_encoder_fd(HCL_ACT_GELU, 1);
    test_encoder_fd(HCL_ACT_RELU, 1);
    if (have_torch()) {
        test_torch(HCL_ACT_RELU, 0);
        test_torch(HCL_ACT_GELU, 1);
    } else {
        CHECK_SKIP("torch comparison: python3-torch not installed");
    }
    CHECK_DONE();
}
