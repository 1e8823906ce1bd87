/* model: see model.h. One flat parameter buffer, a tensor table naming its slices, and the
 * encoder forward/backward over preallocated activation buffers. */
#include "model.h"

#include <math.h>
#include <string.h>

#include "bag.h"
#include "conv.h"
#include "kernels.h"
#include "matmul.h"
#include "memlimit.h"
#include "rng.h"

void model_config_default(hcl_model_config *c) {
    memset(c, 0, sizeof *c);
    c->nviews = 0;  /* the caller names the views and their input widths */
    c->nhidden = 2;
    c->hidden[0] = 512;
    c->hidden[1] = 256;
    c->dim = 128;
    c->act = HCL_ACT_RELU;
    c->layernorm = 0;
    c->nclasses = 0;
    c->t_init = logf(1.0f / 0.07f);
    for (int v = 0; v < HCL_MAX_VIEWS; v++) c->spec[v].nhidden = -1;
}

/* ---- layout ---------------------------------------------------------------------------------- */

/* A tensor of shape (d0, d1, d2, d3)'s first ndim, next in the buffer. */
static int64_t add_tensor4(hcl_model *m, const char *name, int ndim, const int64_t *shape, int decay) {
    HCL_CHECK(m->ntensors < HCL_MAX_TENSORS, "too many tensors (%d)", m->ntensors);
    HCL_CHECK(strlen(name) < HCL_TENSOR_NAME_MAX, "tensor name too long: %s", name);
    hcl_tensor *t = &m->tensors[m->ntensors++];
    memset(t, 0, sizeof *t);
    strcpy(t->name, name);
    t->offset = m->nparams;
    t->ndim = ndim;
    t->numel = 1;
    for (int d = 0; d < 4; d++) {
        t->shape[d] = d < ndim ? shape[d] : 1;
        t->numel *= t->shape[d];
    }
    t->decay = decay;
    m->nparams += t->numel;
    return t->offset;
}

static int64_t add_tensor(hcl_model *m, const char *name, int ndim, int64_t d0, int64_t d1, int decay) {
    const int64_t shape[4] = {d0, d1, 1, 1};
    return add_tensor4(m, name, ndim, shape, decay);
}

/* View v's encoder spec against its input. */
static int spec_check(const hcl_model_config *c, int v, char *err) {
    const hcl_encoder_spec *s = &c->spec[v];
    const char *name = c->names[v];
    if (s->kind < HCL_ENC_MLP || s->kind > HCL_ENC_CONV)
        return hcl_err(err, "model: view '%s': unknown encoder kind %d", name, s->kind);
    if (s->nhidden > HCL_MAX_HIDDEN)
        return hcl_err(err, "model: view '%s': %d hidden widths, at most %d", name, s->nhidden, HCL_MAX_HIDDEN);
    for (int k = 0; k < s->nhidden; k++)
        if (s->hidden[k] <= 0 || s->hidden[k] > HCL_MAX_WIDTH)
            return hcl_err(err, "model: view '%s': hidden width %d out of range 1..%d", name, s->hidden[k], HCL_MAX_WIDTH);
    if (s->kind == HCL_ENC_BAG) {
        if (s->embed < 1 || s->embed > HCL_MAX_WIDTH)
            return hcl_err(err, "model: view '%s': bag width E=%d out of range 1..%d", name, s->embed, HCL_MAX_WIDTH);
        if (s->vocab < 1 || s->vocab > HCL_MAX_VOCAB)
            return hcl_err(err, "model: view '%s': vocabulary %d out of range 1..%d", name, s->vocab, HCL_MAX_VOCAB);
        if (s->pad < 0 || s->pad >= s->vocab)
            return hcl_err(err, "model: view '%s': padding id %d outside [0, %d)", name, s->pad, s->vocab);
    }
    if (s->kind == HCL_ENC_CONV) {
#ifndef HCL_HAVE_DNNL
        return hcl_err(err, "model: view '%s': the conv encoder needs oneDNN (libdnnl-dev); this build has none", name);
#endif
        if (s->nconv < 1 || s->nconv > HCL_MAX_CONV)
            return hcl_err(err, "model: view '%s': %d conv stages, want 1..%d", name, s->nconv, HCL_MAX_CONV);
        for (int j = 0; j < s->nconv; j++)
            if (s->chans[j] < 1 || s->chans[j] > 65536)
                return hcl_err(err, "model: view '%s': conv stage %d has %d channels", name, j, s->chans[j]);
        if (s->img_h < 1 || s->img_w < 1 || s->img_c < 1 ||
            (int64_t)s->img_h * s->img_w * s->img_c != c->in_width[v])
            return hcl_err(err, "model: view '%s': image %dx%dx%d is not its %d columns", name, s->img_h, s->img_w,
                           s->img_c, c->in_width[v]);
        if ((s->img_h >> s->nconv) < 1 || (s->img_w >> s->nconv) < 1)
            return hcl_err(err, "model: view '%s': a %dx%d image is too small for %d 2x2 poolings", name, s->img_h,
                           s->img_w, s->nconv);
    }
    return 0;
}

int model_config_check(const hcl_model_config *c, char *err) {
    if (c->nviews < 1 || c->nviews > HCL_MAX_VIEWS)
        return hcl_err(err, "model: number of views %d out of range 1..%d", c->nviews,
                       HCL_MAX_VIEWS);
    for (int v = 0; v < c->nviews; v++) {
        size_t len = strnlen(c->names[v], HCL_NAME_MAX);
        if (len == 0) return hcl_err(err, "model: view %d has an empty name", v);
        if (len >= HCL_NAME_MAX)
            return hcl_err(err, "model: view %d name longer than %d characters", v,
                           HCL_NAME_MAX - 1);
        if (!hcl_view_name_ok(c->names[v])) {
            char s[4 * HCL_NAME_MAX + 8];
            hcl_printable(s, sizeof s, c->names[v]);
            return hcl_err(err, "model: bad view name '%s' (%s)", s, HCL_VIEW_NAME_RULE);
        }
        for (int u = 0; u < v; u++)
            if (strcmp(c->names[u], c->names[v]) == 0)
                return hcl_err(err, "model: view name '%s' used twice", c->names[v]);
        if (c->in_width[v] <= 0)
            return hcl_err(err, "model: view '%s' input width %d must be > 0", c->names[v],
                           c->in_width[v]);
        if (spec_check(c, v, err) != 0) return -1;
    }
    if (c->nhidden < 0 || c->nhidden > HCL_MAX_HIDDEN)
        return hcl_err(err, "model: number of hidden layers %d out of range 0..%d", c->nhidden,
                       HCL_MAX_HIDDEN);
    for (int k = 0; k < c->nhidden; k++)
        if (c->hidden[k] <= 0)
            return hcl_err(err, "model: hidden width %d (layer %d) must be > 0", c->hidden[k], k);
    if (c->dim <= 0) return hcl_err(err, "model: embedding dim %d must be > 0", c->dim);
    if (c->act != HCL_ACT_RELU && c->act != HCL_ACT_GELU)
        return hcl_err(err, "model: unknown activation %d", (int)c->act);
    if (c->nclasses < 0) return hcl_err(err, "model: number of classes %d must be >= 0",
                                        c->nclasses);
    if (!isfinite(c->t_init)) return hcl_err(err, "model: t_init %g is not finite",
                                             (double)c->t_init);
    return 0;
}

/* ---- size ------------------------------------------------------------------------------------ */

/* The width of view v's front output: the first linear layer's input. */
static int front_width(const hcl_model_config *c, int v) {
    const hcl_encoder_spec *s = &c->spec[v];
    return s->kind == HCL_ENC_BAG ? s->embed : s->kind == HCL_ENC_CONV ? s->chans[s->nconv - 1] : c->in_width[v];
}

/* *n += a * b + extra, or -1 on overflow */
static int add_product(int64_t *n, int64_t a, int64_t b, int64_t extra) {
    int64_t p;
    if (__builtin_mul_overflow(a, b, &p) || __builtin_add_overflow(p, extra, &p) ||
        __builtin_add_overflow(*n, p, n))
        return -1;
    return 0;
}

int64_t model_config_nparams(const hcl_model_config *c) {
    int64_t n = 1;   /* logit_t */
    for (int v = 0; v < c->nviews; v++) {
        const hcl_encoder_spec *s = &c->spec[v];
        int nh;
        const int *hidden = model_view_hidden(c, v, &nh);
        if (s->kind == HCL_ENC_BAG && add_product(&n, s->vocab, s->embed, 0) != 0) return -1;
        for (int j = 0; s->kind == HCL_ENC_CONV && j < s->nconv; j++)
            if (add_product(&n, s->chans[j], 9LL * (j ? s->chans[j - 1] : s->img_c), s->chans[j]) != 0) return -1;
        for (int k = 0; k <= nh; k++) {
            int64_t in = k == 0 ? front_width(c, v) : hidden[k - 1];
            int64_t out = k < nh ? hidden[k] : c->dim;
            int64_t norm = c->layernorm && k < nh ? 2 * out : 0;
            if (add_product(&n, out, in, out + norm) != 0) return -1;
        }
    }
    if (c->nclasses > 0 && add_product(&n, c->nclasses, c->dim, c->nclasses) != 0) return -1;
    return n;
}

/* "hidden 512,256 and dim 128 on 3 views (input widths 64,32,16)" */
static void describe(const hcl_model_config *c, char *out, size_t cap) {
    char hidden[12 * HCL_MAX_HIDDEN + 8] = "none", widths[12 * HCL_MAX_VIEWS + 8] = "";
    size_t k = 0;
    for (int i = 0; i < c->nhidden; i++)
        k += (size_t)snprintf(hidden + k, sizeof hidden - k, "%s%d", i ? "," : "", c->hidden[i]);
    k = 0;
    for (int v = 0; v < c->nviews; v++)
        k += (size_t)snprintf(widths + k, sizeof widths - k, "%s%d", v ? "," : "", c->in_width[v]);
    snprintf(out, cap, "hidden %s and dim %d on %d view%s (input widths %s)", hidden, c->dim, c->nviews,
             c->nviews == 1 ? "" : "s", widths);
}

int model_check_memory(const hcl_model_config *c, int copies, const char *what, char *err) {
    char shape[256], limit_what[96], need[32], limit[32];
    describe(c, shape, sizeof shape);
    int64_t n = model_config_nparams(c);
    if (n < 0) return hcl_err(err, "the model of %s has more than 2^63 parameters", shape);
    double bytes = (double)n * (double)sizeof(float) * copies;
    uint64_t lim = hcl_memory_limit(limit_what, sizeof limit_what);
    if (bytes <= (double)lim) return 0;
    hcl_format_bytes(need, sizeof need, bytes);
    hcl_format_bytes(limit, sizeof limit, (double)lim);
    return hcl_err(err, "the model of %s has %lld parameters: %s need at least %s, more than the %s of %s",
                   shape, (long long)n, what, need, limit, limit_what);
}

/* ---- init ------------------------------------------------------------------------------------ */

/* x ~ U(-bound, bound) for n floats, drawn in order from r. */
static void init_uniform(float *x, int64_t n, double bound, hcl_rng *r) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)((2.0 * rng_uniform(r) - 1.0) * bound);
}

/* View v's conv stages' tensors (Cout, Cin, 3, 3) and (Cout), before its linear layers. */
static void layout_conv(hcl_model *m, int v) {
    const hcl_encoder_spec *s = &m->cfg.spec[v];
    char name[HCL_TENSOR_NAME_MAX];
    for (int j = 0; j < s->nconv; j++) {
        const int64_t shape[4] = {s->chans[j], j ? s->chans[j - 1] : s->img_c, 3, 3};
        snprintf(name, sizeof name, "encoder.%s.conv.%d.weight", m->cfg.names[v], j);
        m->enc[v].conv_w[j] = add_tensor4(m, name, 4, shape, 1);
        snprintf(name, sizeof name, "encoder.%s.conv.%d.bias", m->cfg.names[v], j);
        m->enc[v].conv_b[j] = add_tensor(m, name, 1, s->chans[j], 0, 0);
    }
}

/* View v's linear layers (and LayerNorms) after its front. */
static void layout_linear(hcl_model *m, int v) {
    const hcl_model_config *c = &m->cfg;
    hcl_encoder *e = &m->enc[v];
    int nh;
    const int *hidden = model_view_hidden(c, v, &nh);
    char name[HCL_TENSOR_NAME_MAX];
    e->nlayers = nh + 1;
    for (int k = 0; k < e->nlayers; k++) {
        e->in[k] = k == 0 ? e->front : hidden[k - 1];
        e->out[k] = k < nh ? hidden[k] : c->dim;
        snprintf(name, sizeof name, "encoder.%s.%d.weight", c->names[v], k);
        e->w[k] = add_tensor(m, name, 2, e->out[k], e->in[k], 1);
        snprintf(name, sizeof name, "encoder.%s.%d.bias", c->names[v], k);
        e->b[k] = add_tensor(m, name, 1, e->out[k], 0, 0);
        e->ln_w[k] = e->ln_b[k] = -1;
        if (c->layernorm && k < e->nlayers - 1) {
            snprintf(name, sizeof name, "encoder.%s.%d.norm.weight", c->names[v], k);
            e->ln_w[k] = add_tensor(m, name, 1, e->out[k], 0, 0);
            snprintf(name, sizeof name, "encoder.%s.%d.norm.bias", c->names[v], k);
            e->ln_b[k] = add_tensor(m, name, 1, e->out[k], 0, 0);
        }
    }
}

int model_layout(hcl_model *m, const hcl_model_config *c, char *err) {
    memset(m, 0, sizeof *m);
    m->head_w = m->head_b = m->logit_t = -1;
    if (model_config_check(c, err) != 0 || model_check_memory(c, 2, "its weights and gradients", err) != 0) return -1;
    m->cfg = *c;
    for (int v = 0; v < c->nviews; v++) {
        hcl_encoder *e = &m->enc[v];
        e->kind = c->spec[v].kind;
        e->front = front_width(c, v);
        e->table = -1;
        e->param_begin = m->nparams;
        if (e->kind == HCL_ENC_CONV) layout_conv(m, v);
        layout_linear(m, v);
        e->param_end = m->nparams;
    }
    if (c->nclasses > 0) {
        m->head_w = add_tensor(m, "head.weight", 2, c->nclasses, c->dim, 1);
        m->head_b = add_tensor(m, "head.bias", 1, c->nclasses, 0, 0);
    }
    m->logit_t = add_tensor(m, "logit_t", 1, 1, 0, 0);
    m->ndense = m->nparams;
    char name[HCL_TENSOR_NAME_MAX];
    for (int v = 0; v < c->nviews; v++) {   /* no weight decay on a table, as torch's SparseAdam */
        if (c->spec[v].kind != HCL_ENC_BAG) continue;
        snprintf(name, sizeof name, "encoder.%s.embed.weight", c->names[v]);
        m->enc[v].table = add_tensor(m, name, 2, c->spec[v].vocab, c->spec[v].embed, 0);
    }
    return 0;
}

int model_init(hcl_model *m, const hcl_model_config *c, uint64_t seed, char *err) {
    matmul_params_changed();   /* new weights: no bf16 copy of older ones stands for them */
    if (model_layout(m, c, err) != 0) return -1;
    m->params = hcl_floats((size_t)m->nparams);
    m->grads = hcl_floats_lazy((size_t)m->nparams);   /* a table's rows: only those a batch used */

    // initialise in layout order from one stream: nn.Linear bounds, LayerNorm (1, 0), t_init
    hcl_rng r;
    rng_derive(&r, seed, "init", 0);
    float *p = m->params;
    for (int v = 0; v < c->nviews; v++) {
        const hcl_encoder *e = &m->enc[v];
        const hcl_encoder_spec *s = &c->spec[v];
        for (int j = 0; e->kind == HCL_ENC_CONV && j < s->nconv; j++) {
            const int64_t fan_in = 9LL * (j ? s->chans[j - 1] : s->img_c);
            init_uniform(p + e->conv_w[j], s->chans[j] * fan_in, 1.0 / sqrt((double)fan_in), &r);
            init_uniform(p + e->conv_b[j], s->chans[j], 1.0 / sqrt((double)fan_in), &r);
        }
        for (int k = 0; k < e->nlayers; k++) {
            double bound = 1.0 / sqrt((double)e->in[k]);
            init_uniform(p + e->w[k], (int64_t)e->out[k] * e->in[k], bound, &r);
            init_uniform(p + e->b[k], e->out[k], bound, &r);
            if (e->ln_w[k] >= 0) {
                for (int i = 0; i < e->out[k]; i++) {
                    p[e->ln_w[k] + i] = 1.0f;
                    p[e->ln_b[k] + i] = 0.0f;
                }
            }
        }
    }
    if (c->nclasses > 0) {
        double bound = 1.0 / sqrt((double)c->dim);
        init_uniform(p + m->head_w, (int64_t)c->nclasses * c->dim, bound, &r);
        init_uniform(p + m->head_b, c->nclasses, bound, &r);
    }
    p[m->logit_t] = c->t_init;
    for (int v = 0; v < c->nviews; v++) {   /* each table from its own stream, N(0, 1), pad row 0 */
        const hcl_encoder_spec *s = &c->spec[v];
        if (m->enc[v].table < 0) continue;
        rng_derive(&r, seed, "init-table", (uint64_t)v);
        float *t = p + m->enc[v].table;
        for (int64_t i = 0; i < (int64_t)s->vocab * s->embed; i++) t[i] = (float)rng_normal(&r);
        memset(t + (int64_t)s->pad * s->embed, 0, sizeof(float) * (size_t)s->embed);
    }
    return 0;
}

void model_free(hcl_model *m) {
    matmul_params_changed();   /* the buffer may come back at the same address for other weights */
    free(m->params);
    free(m->grads);
    m->params = m->grads = NULL;
}

void model_zero_grad(hcl_model *m) {
    memset(m->grads, 0, (size_t)m->ndense * sizeof(float));
}

/* 1 if [off, off + n) is a linear weight of an encoder. */
static int encoder_weight(const hcl_model *m, int64_t off) {
    for (int v = 0; v < m->cfg.nviews; v++)
        for (int k = 0; k < m->enc[v].nlayers; k++)
            if (m->enc[v].w[k] == off) return 1;
    return 0;
}

void model_zero_grad_but_weights(hcl_model *m) {
    for (int i = 0; i < m->ntensors; i++) {
        const hcl_tensor *t = &m->tensors[i];
        if (t->offset < m->ndense && !encoder_weight(m, t->offset)) memset(m->grads + t->offset, 0, sizeof(float) * (size_t)t->numel);
    }
}

const hcl_tensor *model_find_tensor(const hcl_model *m, const char *name) {
    for (int i = 0; i < m->ntensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

/* ---- activations ----------------------------------------------------------------------------- */

void model_acts_init(hcl_model_acts *a, const hcl_model *m, int max_rows) {
    HCL_CHECK(max_rows > 0, "model_acts_init: max_rows %d must be > 0", max_rows);
    memset(a, 0, sizeof *a);
    for (int v = 0; v < m->cfg.nviews; v++) {
        const hcl_encoder *e = &m->enc[v];
        hcl_encoder_acts *va = &a->v[v];
        size_t R = (size_t)max_rows;
        int wmax = e->in[0];
        va->max_rows = max_rows;
        for (int k = 0; k < e->nlayers; k++) {
            size_t n = R * (size_t)e->out[k];
            if (e->out[k] > wmax) wmax = e->out[k];
            va->pre[k] = hcl_floats(n);
            if (k < e->nlayers - 1) {
                va->act[k] = hcl_floats(n);
                if (e->ln_w[k] >= 0) {
                    va->ln[k] = hcl_floats(n);
                    va->mean[k] = hcl_floats(R);
                    va->rstd[k] = hcl_floats(R);
                }
            }
        }
        if (e->kind != HCL_ENC_MLP) {
            va->front = hcl_floats(R * (size_t)e->front);
            va->dfront = hcl_floats(R * (size_t)e->front);
        }
        if (e->kind == HCL_ENC_CONV) {
            const hcl_encoder_spec *s = &m->cfg.spec[v];
            char err[HCL_ERR_MAX];
            HCL_CHECK(conv_net_init(&va->conv, max_rows, s->img_h, s->img_w, s->img_c, s->chans, s->nconv, err) == 0,
                      "view '%s': %s", m->cfg.names[v], err);
        }
        va->norm = hcl_floats(R);
        va->z = hcl_floats(R * (size_t)m->cfg.dim);
        va->d0 = hcl_floats(R * (size_t)wmax);
        va->d1 = hcl_floats(R * (size_t)wmax);
        if (matmul_precision() == HCL_PRECISION_BF16) {
            for (int k = 0; k < e->nlayers; k++) va->inb[k] = (uint16_t *)hcl_floats((R * (size_t)e->in[k] + 1) / 2);
            va->doutb = (uint16_t *)hcl_floats((R * (size_t)wmax + 1) / 2);
        }
    }
}

void model_acts_free(hcl_model_acts *a, const hcl_model *m) {
    for (int v = 0; v < m->cfg.nviews; v++) {
        hcl_encoder_acts *va = &a->v[v];
        for (int k = 0; k < HCL_MAX_LAYERS; k++) {
            free(va->pre[k]);
            free(va->ln[k]);
            free(va->mean[k]);
            free(va->rstd[k]);
            free(va->act[k]);
            free(va->inb[k]);
        }
        free(va->doutb);
        free(va->front);
        free(va->dfront);
        if (va->conv) conv_net_free(va->conv);
        free(va->norm);
        free(va->z);
        free(va->d0);
        free(va->d1);
    }
    memset(a, 0, sizeof *a);
}

/* ---- encoder forward / backward -------------------------------------------------------------- */

/* The front of view v on x (B, in_width): x itself for an mlp, else va->front (B, front). */
static const float *front_forward(const hcl_model *m, hcl_encoder_acts *va, int v, const float *x, int B) {
    const hcl_encoder *e = &m->enc[v];
    const hcl_encoder_spec *s = &m->cfg.spec[v];
    if (e->kind == HCL_ENC_BAG)
        bag_forward(va->front, x, m->params + e->table, B, m->cfg.in_width[v], s->embed, s->pad);
    if (e->kind == HCL_ENC_CONV) {
        const float *w[HCL_MAX_CONV], *b[HCL_MAX_CONV];
        for (int j = 0; j < s->nconv; j++) {
            w[j] = m->params + e->conv_w[j];
            b[j] = m->params + e->conv_b[j];
        }
        conv_net_forward(va->conv, x, w, b, B, va->front);
    }
    return e->kind == HCL_ENC_MLP ? x : va->front;
}

/* The front's backward from va->dfront (B, front): the table's rows (bag) or the stages'
 * weights (conv, written with overwrite). */
static void front_backward(hcl_model *m, hcl_encoder_acts *va, int v, const float *x, int B, int overwrite) {
    const hcl_encoder *e = &m->enc[v];
    const hcl_encoder_spec *s = &m->cfg.spec[v];
    if (e->kind == HCL_ENC_BAG)
        bag_backward(m->grads + e->table, va->dfront, x, B, m->cfg.in_width[v], s->embed, s->pad);
    if (e->kind == HCL_ENC_CONV) {
        float *dw[HCL_MAX_CONV], *db[HCL_MAX_CONV];
        for (int j = 0; j < s->nconv; j++) {
            dw[j] = m->grads + e->conv_w[j];
            db[j] = m->grads + e->conv_b[j];
        }
        conv_net_backward(va->conv, va->dfront, dw, db, B, overwrite);
    }
}

const float *model_encode(const hcl_model *m, hcl_model_acts *a, int v, const float *x, int B) {
    HCL_CHECK(v >= 0 && v < m->cfg.nviews, "model_encode: view %d out of range", v);
    hcl_encoder_acts *va = &a->v[v];
    HCL_CHECK(B >= 0 && B <= va->max_rows, "model_encode: %d rows, buffers sized for %d", B,
              va->max_rows);
    const hcl_encoder *e = &m->enc[v];
    const float *p = m->params;
    const int last = e->nlayers - 1;
    const float *inp = front_forward(m, va, v, x, B);  // (B, in_k)
    // with bf16 products each layer's input is rounded once here and again used by the backward
    va->rounded = va->inb[0] && matmul_precision() == HCL_PRECISION_BF16;
    for (int k = 0; k < last; k++) {
        int64_t n = (int64_t)B * e->out[k];
        linear_forward(va->pre[k], inp, va->inb[k], p + e->w[k], p + e->b[k], B, e->in[k], e->out[k]);
        const float *h = va->pre[k];
        if (e->ln_w[k] >= 0) {
            layernorm_forward(va->ln[k], va->mean[k], va->rstd[k], va->pre[k], p + e->ln_w[k],
                              p + e->ln_b[k], B, e->out[k]);
            h = va->ln[k];
        }
        if (m->cfg.act == HCL_ACT_GELU) gelu_forward(va->act[k], h, n);
        else relu_forward(va->act[k], h, n);
        inp = va->act[k];
        if (a->poll) a->poll(a->poll_arg, v, k, 0);
    }
    linear_forward(va->pre[last], inp, va->inb[last], p + e->w[last], p + e->b[last], B, e->in[last],
                   e->out[last]);
    l2norm_forward(va->z, va->norm, va->pre[last], B, e->out[last]);
    return va->z;
}

void model_encode_backward(hcl_model *m, hcl_model_acts *a, int v, const float *x,
                           const float *dz, int B, int overwrite) {
    HCL_CHECK(v >= 0 && v < m->cfg.nviews, "model_encode_backward: view %d out of range", v);
    hcl_encoder_acts *va = &a->v[v];
    HCL_CHECK(B >= 0 && B <= va->max_rows, "model_encode_backward: %d rows, buffers sized for %d",
              B, va->max_rows);
    const hcl_encoder *e = &m->enc[v];
    const float *p = m->params;
    float *g = m->grads;
    const int last = e->nlayers - 1;

    // dpre[last] (B, D) from dz through the normalisation. The last layer's bias gradient, and
    // with ReLU and no LayerNorm every layer's, is summed in the pass that makes its dpre (the
    // same order of additions as linear_backward's, which then skips it): one pass less a layer.
    float *cur = va->d0, *nxt = va->d1;
    l2norm_backward_bias(cur, g + e->b[last], dz, va->z, va->norm, B, e->out[last]);
    int db_done = 1;  // dbias of layer k already accumulated
    for (int k = last; k >= 0; k--) {
        // cur holds dpre[k] (B, out_k)
        const float *inp = k > 0 ? va->act[k - 1] : e->kind == HCL_ENC_MLP ? x : va->front;
        float *dinp = k > 0 ? nxt : e->kind == HCL_ENC_MLP ? NULL : va->dfront;  // d act[k-1] (B, in_k)
        linear_backward(dinp, g + e->w[k], overwrite ? 0.0f : 1.0f, db_done ? NULL : g + e->b[k], cur, va->doutb, inp,
                        va->rounded ? va->inb[k] : NULL, p + e->w[k], B, e->in[k], e->out[k]);
        if (k == 0 && e->kind != HCL_ENC_MLP) front_backward(m, va, v, x, B, overwrite);
        if (a->poll) a->poll(a->poll_arg, v, k, 1);
        if (k == 0) break;
        const int j = k - 1;
        int64_t n = (int64_t)B * e->out[j];
        const float *h = e->ln_w[j] >= 0 ? va->ln[j] : va->pre[j];
        db_done = 0;
        if (m->cfg.act == HCL_ACT_GELU) {
            gelu_backward(nxt, h, nxt, n);
        } else if (e->ln_w[j] < 0) {
            relu_backward_bias(nxt, g + e->b[j], va->act[j], nxt, B, e->out[j]);
            db_done = 1;
        } else {
            relu_backward(nxt, va->act[j], nxt, n);
        }
        if (e->ln_w[j] >= 0) {
            // dpre[j] into cur (free now: linear_backward has consumed it)
            layernorm_backward(cur, g + e->ln_w[j], g + e->ln_b[j], nxt, va->pre[j],
                               p + e->ln_w[j], va->mean[j], va->rstd[j], B, e->out[j]);
        } else {
            float *t = cur;
            cur = nxt;
            nxt = t;
        }
    }
}
