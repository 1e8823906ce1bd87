/* test_bf16: --precision bf16 (mixed precision, matmul.h) against the f32 path on the same
 * weights and batch, for a W1-like model (3 views 96/64/24, 128-64 hidden, D 32, ReLU and
 * GELU+LayerNorm) and every loss (full, core, CLIP, SupCon, hybrid) with missing views:
 *   embeddings z                        max |z_bf16 - z_f32| <= 0.02 (unit vectors; bf16 keeps 8
 *                                       bits: ~0.4% per operand, through 3 layers)
 *   loss                                relative difference <= 1e-2
 *   dz (loss), the parameter gradient  cosine similarity >= 0.999 (the whole gradient), and
 *                                       >= 0.995 per tensor (with ReLU a pre-activation whose
 *                                       bf16 value crosses 0 flips that unit's gradient: the
 *                                       first layer's small tensors see 0.998 here, GELU 0.9999)
 *   gradient norm error                 |g_bf16 - g_f32| / |g_f32| <= 0.05
 * and, so the comparison can fail, a gradient doubled on purpose has relative norm error > 0.5,
 * and bf16 products differ from f32 ones (max |z| difference > 1e-5: the rounding really happens).
 * The finite-difference checks of every backward stay on f32 (test_model, test_loss). Without
 * oneDNN the test is skipped (exit 77). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "loss.h"
#include "matmul.h"
#include "model.h"

#define N 96
#define V 3
#define D 32

static uint64_t seed = 0x2545F4914F6CDD1Dull;
static double urand(void) {
    seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
    return (double)(seed >> 11) / 9007199254740992.0;
}

static double cosine(const float *a, const float *b, int64_t n) {
    double ab = 0, aa = 0, bb = 0;
    for (int64_t i = 0; i < n; i++) ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    return aa == 0 && bb == 0 ? 1.0 : ab / sqrt(aa * bb + 1e-300);
}

typedef struct {
    double loss;
    float *z[V], *dz[V], *grads;
} step_out;

/* Encode all views, the loss over the whole batch, backward into the model's gradients. With
 * held, the activations are made under the current precision (with bf16: each layer's input
 * rounded once, kept for the backward); else under fp32 (every product rounds its operands). */
static void run(hcl_model *m, const hcl_loss_config *lc, float *const x[V], const uint8_t *mask,
                const int32_t *labels, step_out *o, int held) {
    hcl_model_acts a;
    const enum hcl_precision p = matmul_precision();
    if (!held) matmul_set_precision(HCL_PRECISION_FP32);
    model_acts_init(&a, m, N);
    matmul_set_precision(p);
    model_zero_grad(m);
    for (int v = 0; v < V; v++) memcpy(o->z[v], model_encode(m, &a, v, x[v], N), sizeof(float) * N * D);
    hcl_loss_ctx ctx;
    loss_ctx_init(&ctx, lc, N, N);
    hcl_loss_input in;
    memset(&in, 0, sizeof in);
    in.n = N, in.r0 = 0, in.b = N, in.mask = mask, in.labels = labels, in.t = m->params[m->logit_t];
    for (int v = 0; v < V; v++) in.z[v] = o->z[v], memset(o->dz[v], 0, sizeof(float) * N * D);
    if (lc->kind == HCL_LOSS_HYBRID) in.head_w = m->params + m->head_w, in.head_b = m->params + m->head_b;
    hcl_loss_result r;
    float *dhw = lc->kind == HCL_LOSS_HYBRID ? m->grads + m->head_w : NULL;
    float *dhb = lc->kind == HCL_LOSS_HYBRID ? m->grads + m->head_b : NULL;
    loss_forward_backward(&ctx, &in, o->dz, dhw, dhb, &r);
    o->loss = r.loss;
    m->grads[m->logit_t] += (float)r.dt;
    for (int v = 0; v < V; v++) {
        model_encode(m, &a, v, x[v], N);
        model_encode_backward(m, &a, v, x[v], o->dz[v], N, 0);
    }
    memcpy(o->grads, m->grads, sizeof(float) * (size_t)m->nparams);
    loss_ctx_free(&ctx);
    model_acts_free(&a, m);
}

static void compare(const char *name, int act, int layernorm, enum hcl_loss_kind kind) {
    hcl_model_config mc;
    model_config_default(&mc);
    mc.nviews = V;
    const int widths[V] = {96, 64, 24};
    for (int v = 0; v < V; v++) snprintf(mc.names[v], sizeof mc.names[v], "v%d", v), mc.in_width[v] = widths[v];
    mc.nhidden = 2, mc.hidden[0] = 128, mc.hidden[1] = 64, mc.dim = D, mc.act = act, mc.layernorm = layernorm;
    mc.nclasses = kind == HCL_LOSS_HYBRID ? 5 : 0;
    hcl_model m;
    char err[HCL_ERR_MAX] = "";
    CHECK(model_init(&m, &mc, 5, err) == 0, "%s", err);
    hcl_loss_config lc;
    loss_config_default(&lc, V, D);
    lc.kind = kind, lc.nclasses = mc.nclasses;
    float *x[V];
    uint8_t mask[N * V];
    int32_t labels[N];
    for (int v = 0; v < V; v++) {
        x[v] = hcl_floats((size_t)N * widths[v]);
        for (int i = 0; i < N * widths[v]; i++) x[v][i] = (float)(urand() * 2 - 1);
    }
    for (int i = 0; i < N; i++) {
        labels[i] = (int32_t)(urand() * 5);
        for (int v = 0; v < V; v++) mask[i * V + v] = urand() > 0.1 || v == 0;
    }
    step_out f, b, r;
    for (step_out *o = &f; o; o = o == &f ? &b : o == &b ? &r : NULL) {
        for (int v = 0; v < V; v++) o->z[v] = hcl_floats(N * D), o->dz[v] = hcl_floats(N * D);
        o->grads = hcl_floats((size_t)m.nparams);
    }
    matmul_set_precision(HCL_PRECISION_FP32);
    run(&m, &lc, x, mask, labels, &f, 1);
    matmul_set_precision(HCL_PRECISION_BF16);
    run(&m, &lc, x, mask, labels, &b, 1);
    run(&m, &lc, x, mask, labels, &r, 0);
    matmul_set_precision(HCL_PRECISION_FP32);
    /* rounding each operand once and keeping it (linear_forward's inp_bf, linear_backward's
     * dout_bf) gives the bits of rounding it at every product */
    CHECK(memcmp(b.grads, r.grads, sizeof(float) * (size_t)m.nparams) == 0 && b.loss == r.loss,
          "%s: bf16 with the inputs' roundings kept differs from rounding at every product", name);

    double zmax = 0, dzcos = 1, gcos = 1;
    const char *worst = "";
    for (int v = 0; v < V; v++) {
        for (int i = 0; i < N * D; i++) zmax = fmax(zmax, fabs(b.z[v][i] - f.z[v][i]));
        dzcos = fmin(dzcos, cosine(b.dz[v], f.dz[v], N * D));
    }
    for (int t = 0; t < m.ntensors; t++) {
        double c = cosine(b.grads + m.tensors[t].offset, f.grads + m.tensors[t].offset, m.tensors[t].numel);
        if (c < gcos) gcos = c, worst = m.tensors[t].name;
    }
    double lrel = fabs(b.loss - f.loss) / fabs(f.loss);
    double allcos = cosine(b.grads, f.grads, m.nparams);
    printf("%-26s loss %.5f vs %.5f (rel %.1e), max |dz| diff %.1e, dz cosine %.6f, gradient cosine %.6f, worst tensor %.6f (%s)\n",
           name, b.loss, f.loss, lrel, zmax, dzcos, allcos, gcos, worst);
    CHECK(zmax <= 0.02, "%s: embeddings differ by %.3g", name, zmax);
    CHECK(zmax > 1e-5, "%s: bf16 embeddings equal f32 ones to %.3g: no rounding happened", name, zmax);
    CHECK(lrel <= 1e-2, "%s: loss %.6f vs f32 %.6f", name, b.loss, f.loss);
    CHECK(dzcos >= 0.999, "%s: dz cosine %.6f", name, dzcos);
    CHECK(allcos >= 0.999, "%s: gradient cosine %.6f", name, allcos);
    CHECK(gcos >= 0.995, "%s: gradient of %s cosine %.6f", name, worst, gcos);
    /* the check can fail: twice the gradient is far off in norm (cosine alone is scale-blind) */
    double num = 0, den = 0;
    for (int64_t i = 0; i < m.nparams; i++) {
        double d = 2.0 * b.grads[i] - f.grads[i];
        num += d * d, den += (double)f.grads[i] * f.grads[i];
    }
    CHECK(sqrt(num / den) > 0.5, "%s: a doubled gradient is within %.3g of f32 in norm", name, sqrt(num / den));
    num = 0;
    for (int64_t i = 0; i < m.nparams; i++) num += ((double)b.grads[i] - f.grads[i]) * ((double)b.grads[i] - f.grads[i]);
    CHECK(sqrt(num / den) <= 0.05, "%s: bf16 gradient norm error %.3g", name, sqrt(num / den));
    for (step_out *o = &f; o; o = o == &f ? &b : o == &b ? &r : NULL) {
        for (int v = 0; v < V; v++) free(o->z[v]), free(o->dz[v]);
        free(o->grads);
    }
    for (int v = 0; v < V; v++) free(x[v]);
    model_free(&m);
}

int main(void) {
    if (!matmul_bf16_available()) {
        CHECK_SKIP("bf16: this build has no oneDNN");
        CHECK_DONE();
    }
    matmul_set_engine(HCL_MATMUL_ONEDNN);
    compare("full, ReLU", HCL_ACT_RELU, 0, HCL_LOSS_FULL);
    compare("full, GELU + LayerNorm", HCL_ACT_GELU, 1, HCL_LOSS_FULL);
    compare("core", HCL_ACT_RELU, 0, HCL_LOSS_CORE);
    compare("clip", HCL_ACT_RELU, 0, HCL_LOSS_CLIP);
    compare("supcon", HCL_ACT_RELU, 0, HCL_LOSS_SUPCON);
    compare("hybrid", HCL_ACT_GELU, 0, HCL_LOSS_HYBRID);
    CHECK_DONE();
}
