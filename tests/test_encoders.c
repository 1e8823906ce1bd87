/* test_encoders: the per-view encoders of model.h (--encoder VIEW=SPEC): the spec text both
 * ways and its errors, the layout of a bag's table and a conv's stages, the bag and conv
 * encoders' backward against central finite differences (every tensor of the view, the table
 * included; 2x the gradient must fail), and a model file with them read back whole.
 *
 * Finite differences: f = sum(z * R) summed in double over the float forward; an entry p is
 * stepped by 1e-3 * max(1, |p|); per tensor, over a sample (the largest analytic entry and random
 * ones; for a table, entries of rows the batch uses and of one it does not),
 *     max |analytic - fd| / max(max |fd|, 1e-6) <= 2e-2. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "model.h"
#include "model_io.h"
#include "rng.h"
#include "util.h"

#define FD_TOL 2e-2
#define SAMPLES 10

static hcl_rng rng;

static void fill_uniform(float *x, int64_t n, double scale) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)((2.0 * rng_uniform(&rng) - 1.0) * scale);
}

/* ---- spec text ------------------------------------------------------------------------------- */

static void roundtrip(const char *text, int kind, const char *back) {
    hcl_encoder_spec s;
    char err[HCL_ERR_MAX] = "", out[200];
    CHECK(model_spec_parse(&s, text, err) == 0 && s.kind == kind, "'%s': %s", text, err);
    model_spec_format(&s, strchr(text, '/') != NULL, out, sizeof out);
    CHECK(strcmp(out, back) == 0, "'%s' formats as '%s', want '%s'", text, out, back);
}

static void bad_spec(const char *text, const char *want) {
    hcl_encoder_spec s;
    char err[HCL_ERR_MAX] = "";
    CHECK(model_spec_parse(&s, text, err) == -1 && strstr(err, want) && !strchr(err, '\n'),
          "'%s': want an error with '%s', got '%s'", text, want, err);
}

static void test_spec_text(void) {
    roundtrip("mlp:512,256", HCL_ENC_MLP, "mlp:512,256");
    roundtrip("mlp:none", HCL_ENC_MLP, "mlp:none");
    roundtrip("bag:64", HCL_ENC_BAG, "bag:64");
    roundtrip("bag:64,256,128", HCL_ENC_BAG, "bag:64,256,128");
    roundtrip("bag:32,16/vocab=1000/pad=0", HCL_ENC_BAG, "bag:32,16/vocab=1000/pad=0");
    roundtrip("conv:16,32", HCL_ENC_CONV, "conv:16,32");
    roundtrip("conv:8/image=28x28x1", HCL_ENC_CONV, "conv:8/image=28x28x1");
    bad_spec("lstm:4", "want mlp:");
    bad_spec("bag:", "bag:E");
    bad_spec("conv:16,,32", "not a list of widths");
    bad_spec("conv:1,2,3,4,5,6,7", "1..6 channel counts");
    bad_spec("mlp:1,2,3,4,5,6,7", "more than 6 hidden widths");
    bad_spec("mlp:0", "not a list of widths");
    bad_spec("bag:8/image=2x2x1", "unknown part 'image=2x2x1' for bag");
    bad_spec("conv:8/image=2x2", "unknown part");
}

/* ---- a model of an mlp, a bag and a conv view ------------------------------------------------ */

enum { L = 5, VOCAB = 11, PAD = 0, H = 8, W = 6, C = 2 };

static void kinds_config(hcl_model_config *c) {
    model_config_default(c);
    c->nviews = 3;
    strcpy(c->names[0], "dense");
    strcpy(c->names[1], "words");
    strcpy(c->names[2], "image");
    c->in_width[0] = 6;
    c->in_width[1] = L;
    c->in_width[2] = H * W * C;
    c->nhidden = 1;
    c->hidden[0] = 7;
    c->dim = 5;
    char err[HCL_ERR_MAX] = "";
    CHECK(model_spec_parse(&c->spec[1], "bag:4,6", err) == 0, "%s", err);
    c->spec[1].vocab = VOCAB;
    c->spec[1].pad = PAD;
    CHECK(model_spec_parse(&c->spec[2], "conv:3,4", err) == 0, "%s", err);
    c->spec[2].img_h = H;
    c->spec[2].img_w = W;
    c->spec[2].img_c = C;
}

static void test_layout(void) {
    hcl_model_config c;
    hcl_model m;
    char err[HCL_ERR_MAX] = "";
    kinds_config(&c);
    CHECK(model_init(&m, &c, 3, err) == 0, "%s", err);
    CHECK(model_config_nparams(&c) == m.nparams, "nparams %lld vs %lld", (long long)model_config_nparams(&c),
          (long long)m.nparams);
    const hcl_tensor *t = model_find_tensor(&m, "encoder.words.embed.weight");
    CHECK(t && t->shape[0] == VOCAB && t->shape[1] == 4 && t->offset == m.ndense && !t->decay,
          "the table (V, E) after the dense parameters, no decay");
    t = model_find_tensor(&m, "encoder.image.conv.1.weight");
    CHECK(t && t->ndim == 4 && t->shape[0] == 4 && t->shape[1] == 3 && t->shape[2] == 3 && t->shape[3] == 3,
          "conv.1.weight is (4, 3, 3, 3)");
    CHECK(m.enc[2].conv_w[0] == m.enc[2].param_begin, "a conv's stages open its slice");
    t = model_find_tensor(&m, "encoder.words.0.weight");
    CHECK(t && t->shape[1] == 4, "the bag's first linear layer reads E = 4");
    t = model_find_tensor(&m, "encoder.image.0.weight");
    CHECK(t && t->shape[1] == 4 && model_feature_width(&c, 2) == 4, "the conv's projection reads C_last");
    CHECK(model_feature_width(&c, 1) == 6 && model_feature_width(&c, 0) == 7, "feature widths");
    for (int e = 0; e < 4; e++) CHECK(m.params[m.enc[1].table + PAD * 4 + e] == 0.0f, "the padding row is 0");
    hcl_model_config bad = c;
    bad.spec[1].pad = VOCAB;
    CHECK(model_config_check(&bad, err) == -1 && strstr(err, "padding id 11 outside [0, 11)"), "%s", err);
    bad = c;
    bad.spec[2].img_w = 5;
    CHECK(model_config_check(&bad, err) == -1 && strstr(err, "image 8x5x2 is not its 96 columns"), "%s", err);
    bad = c;
    bad.spec[2].nconv = 4;
    bad.spec[2].chans[2] = bad.spec[2].chans[3] = 2;
    CHECK(model_config_check(&bad, err) == -1 && strstr(err, "too small for 4 2x2 poolings"), "%s", err);
    model_free(&m);
}

/* ---- finite differences ---------------------------------------------------------------------- */

static double objective(hcl_model *m, hcl_model_acts *a, int v, const float *x, const float *R, int B) {
    const float *z = model_encode(m, a, v, x, B);
    double s = 0.0;
    for (int64_t i = 0; i < (int64_t)B * m->cfg.dim; i++) s += (double)z[i] * R[i];
    return s;
}

/* Entries of t to step: the largest analytic one and random ones (for a table: of used rows,
 * and one entry of an unused row, whose gradient must be 0). */
static int pick(const hcl_tensor *t, const float *g, const float *x, int B, int64_t *idx) {
    int64_t jmax = 0;
    for (int64_t j = 1; j < t->numel; j++)
        if (fabsf(g[t->offset + j]) > fabsf(g[t->offset + jmax])) jmax = j;
    int n = 0;
    idx[n++] = jmax;
    const int E = (int)t->shape[1];
    while (n < SAMPLES) {
        if (strstr(t->name, "embed")) {
            int id = (int)x[rng_below(&rng, (uint64_t)B * L)];
            idx[n++] = (int64_t)id * E + (int64_t)rng_below(&rng, (uint64_t)E);
        } else {
            idx[n++] = (int64_t)rng_below(&rng, (uint64_t)t->numel);
        }
    }
    return n;
}

static void fd_view(hcl_model *m, hcl_model_acts *a, int v, const float *x, const float *R, int B) {
    memset(m->grads, 0, sizeof(float) * (size_t)m->nparams);   /* model_zero_grad leaves the tables */
    model_encode(m, a, v, x, B);
    model_encode_backward(m, a, v, x, R, B, 0);
    float *g = hcl_floats((size_t)m->nparams);
    memcpy(g, m->grads, sizeof(float) * (size_t)m->nparams);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "encoder.%s.", m->cfg.names[v]);
    for (int ti = 0; ti < m->ntensors; ti++) {
        const hcl_tensor *t = &m->tensors[ti];
        if (strncmp(t->name, prefix, strlen(prefix)) != 0) continue;
        int64_t idx[SAMPLES];
        int ns = pick(t, g, x, B, idx);
        double an[SAMPLES], fd[SAMPLES], mx = 1e-6, e1 = 0, e2 = 0;
        for (int s = 0; s < ns; s++) {
            float *p = m->params + t->offset + idx[s], p0 = *p;
            double eps = 1e-3 * (fabsf(p0) > 1.0f ? fabsf(p0) : 1.0f);
            float pp = (float)(p0 + eps), pm = (float)(p0 - eps);
            *p = pp;
            double fp = objective(m, a, v, x, R, B);
            *p = pm;
            double fm = objective(m, a, v, x, R, B);
            *p = p0;
            an[s] = g[t->offset + idx[s]];
            fd[s] = (fp - fm) / ((double)pp - (double)pm);
            if (fabs(fd[s]) > mx) mx = fabs(fd[s]);
        }
        for (int s = 0; s < ns; s++) {
            double d1 = fabs(an[s] - fd[s]) / mx, d2 = fabs(2 * an[s] - fd[s]) / mx;
            e1 = d1 > e1 || isnan(d1) ? d1 : e1;
            e2 = d2 > e2 || isnan(d2) ? d2 : e2;
        }
        CHECK(e1 <= FD_TOL, "%s: FD relative error %.3g > %g", t->name, e1, FD_TOL);
        CHECK(e2 > FD_TOL, "%s: self-check: 2x the gradient passes (%.3g)", t->name, e2);
        printf("  %-30s fd rel err %.2e (2x: %.2e)\n", t->name, e1, e2);
    }
    free(g);
}

static void test_fd(void) {
    hcl_model_config c;
    hcl_model m;
    char err[HCL_ERR_MAX] = "";
    kinds_config(&c);
    CHECK(model_init(&m, &c, 5, err) == 0, "%s", err);
    const int B = 4;
    hcl_model_acts a;
    model_acts_init(&a, &m, 6);
    float ids[B * L], img[B * H * W * C], R[B * 5];
    for (int i = 0; i < B * L; i++) ids[i] = (float)rng_below(&rng, VOCAB - 1);   /* id VOCAB-1 unused */
    for (int j = 0; j < L; j++) ids[2 * L + j] = PAD;                            /* row 2: no tokens */
    ids[1] = PAD;
    fill_uniform(img, B * H * W * C, 1.0);
    fill_uniform(R, B * 5, 1.0);
    printf("bag encoder FD (bag:4,6, V=%d, L=%d)\n", VOCAB, L);
    fd_view(&m, &a, 1, ids, R, B);
    const float *z = model_encode(&m, &a, 1, ids, B);
    CHECK(fabsf(a.v[1].front[2 * 4]) == 0.0f && isfinite(z[2 * 5]), "a row of padding only: feature 0");
    memset(m.grads, 0, sizeof(float) * (size_t)m.nparams);
    model_encode_backward(&m, &a, 1, ids, R, B, 0);
    for (int e = 0; e < 4; e++) {
        CHECK(m.grads[m.enc[1].table + (VOCAB - 1) * 4 + e] == 0.0f, "an unused row has no gradient");
        CHECK(m.grads[m.enc[1].table + PAD * 4 + e] == 0.0f, "the padding row has no gradient");
    }
    printf("conv encoder FD (conv:3,4 on %dx%dx%d)\n", H, W, C);
    fd_view(&m, &a, 2, img, R, B);
    model_acts_free(&a, &m);
    model_free(&m);
}

/* A model file of all three kinds rebuilds the same model (encoders metadata). */
static void test_model_file(void) {
    hcl_model_config c;
    hcl_model m, back;
    char err[HCL_ERR_MAX] = "", dir[] = "/tmp/hcl_test_encoders_XXXXXX", path[64];
    kinds_config(&c);
    CHECK(model_init(&m, &c, 9, err) == 0, "%s", err);
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(model_save(&m, path, err) == 0, "%s", err);
    CHECK(model_load(&back, path, err) == 0, "%s", err);
    CHECK(back.nparams == m.nparams && memcmp(back.params, m.params, sizeof(float) * (size_t)m.nparams) == 0,
          "the file's parameters are the model's");
    for (int v = 0; v < 3; v++) CHECK(model_spec_same(&c, &back.cfg, v), "view %d's encoder read back", v);
    model_free(&back);
    model_free(&m);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    rng_derive(&rng, 7, "test_encoders", 0);
    test_spec_text();
    test_layout();
    test_fd();
    test_model_file();
    CHECK_DONE();
}
