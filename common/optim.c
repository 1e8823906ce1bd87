/* optim: see optim.h.
 *
 * The update rules follow PyTorch's float32 arithmetic order (torch.optim.AdamW, torch.optim.SGD
 * with dampening 0) so the C and PyTorch parameters agree to float rounding; norms (LARS, global
 * gradient norm) are accumulated in double.
 *
 * State layout: AdamW keeps m in state[0, nparams) and v in state[nparams, 2*nparams); SGD and
 * LARS keep the momentum buffer in state[0, nparams). optim_step has no nparams argument: it
 * takes nparams as the end of the furthest tensor (max offset + numel), which is the parameter
 * count whenever the tensor table covers the whole buffer, as the model's table does. */
#include "optim.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#include "util.h"

void optim_config_default(hcl_optim_config *c) {
    memset(c, 0, sizeof(*c));
    c->kind = HCL_OPTIM_ADAMW;
    c->lr = 1e-3f;
    c->weight_decay = 1e-4f;
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->eps = 1e-8f;
    c->momentum = 0.9f;
    c->nesterov = 0;
    c->trust = 0.001f;
    c->clip_norm = 0.0f;
    c->warmup_steps = 0;
    c->total_steps = 0;
}

int64_t optim_state_floats(const hcl_optim_config *c, int64_t nparams) {
    return c->kind == HCL_OPTIM_ADAMW ? 2 * nparams : nparams;
}

/* Steps at or past total_steps give 0 (when total_steps > 0). Warmup 0 means no warmup.
 * total_steps <= 0 means no decay: the peak lr after warmup. When total <= warmup the cosine
 * phase is empty (every post-warmup step is past total), so there is no division by zero. */
float optim_lr_at(const hcl_optim_config *c, int64_t step) {
    int64_t warmup = c->warmup_steps > 0 ? c->warmup_steps : 0, total = c->total_steps;
    if (step < 0) step = 0;
    if (total > 0 && step >= total) return 0.0f;
    if (step < warmup) return (float)((double)c->lr * (double)(step + 1) / (double)warmup);
    if (total <= 0) return c->lr;
    double frac = (double)(step - warmup) / (double)(total - warmup); /* total > step >= warmup */
    return (float)((double)c->lr * 0.5 * (1.0 + cos(M_PI * frac)));
}

/* Sixteen double partial sums (two vectors of eight: the loop has no serial dependency chain and
 * vectorises), combined in a fixed order: the result depends only on n and the values. */
#define NORM_LANES 16
double optim_sum_squares(const float *grads, int64_t n) {
    double acc[NORM_LANES] = {0};
    int64_t i = 0;
    for (; i + NORM_LANES <= n; i += NORM_LANES)
        for (int l = 0; l < NORM_LANES; l++) acc[l] += (double)grads[i + l] * (double)grads[i + l];
    for (int l = 0; i < n; i++, l++) acc[l] += (double)grads[i] * (double)grads[i];
    for (int w = NORM_LANES / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}

double optim_grad_norm(const float *grads, int64_t n) {
    return sqrt(optim_sum_squares(grads, n));
}

void optim_clip(float *grads, int64_t n, double norm, float max_norm) {
    if (max_norm <= 0.0f || !(norm > (double)max_norm)) return;
    float scale = (float)((double)max_norm / (norm + 1e-6)); /* as torch's clip_grad_norm_ */
    for (int64_t i = 0; i < n; i++) grads[i] *= scale;
}

/* p, g, m, v are (n,): one tensor's slice of params, grads and the two moments. */
static void adamw_tensor(float *p, const float *g, float *m, float *v, int64_t n, float lr,
                         float wd, float b1, float b2, float eps, float step_size,
                         float bc2_sqrt) {
    /* scalars as torch forms them: in double, rounded once to float */
    float decay_mul = (float)(1.0 - (double)lr * (double)wd);
    float one_b1 = (float)(1.0 - (double)b1), one_b2 = (float)(1.0 - (double)b2);
    for (int64_t i = 0; i < n; i++) {
        float pi = p[i] * decay_mul, gi = g[i];
        m[i] = m[i] * b1 + one_b1 * gi;
        v[i] = v[i] * b2 + one_b2 * gi * gi;
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        p[i] = pi - step_size * (m[i] / denom);
    }
}

/* d = (g + wd*p) * scale; buf = d at t == 1, else mu*buf + d; p -= lr * (nesterov ? d + mu*buf
 * : buf). SGD passes scale 1; LARS passes its trust ratio; wd is 0 for no-decay tensors. */
static void momentum_tensor(float *p, const float *g, float *buf, int64_t n, float lr, float wd,
                            float scale, float mu, int nesterov, int first) {
    for (int64_t i = 0; i < n; i++) {
        float d = g[i];
        if (wd != 0.0f) d = d + wd * p[i];
        if (scale != 1.0f) d = d * scale;
        buf[i] = first ? d : buf[i] * mu + d;
        float step = nesterov ? d + mu * buf[i] : buf[i];
        p[i] = p[i] - lr * step;
    }
}

void optim_step(const hcl_optim_config *c, float lr, int64_t t, float *params, const float *grads,
                float *state, const hcl_tensor *tensors, int ntensors) {
    optim_step_range(c, lr, t, params, grads, state, tensors, ntensors, 0, INT64_MAX);
}

void optim_step_range(const hcl_optim_config *c, float lr, int64_t t, float *params, const float *grads,
                      float *state, const hcl_tensor *tensors, int ntensors, int64_t lo, int64_t hi) {
    int64_t nparams = 0;
    for (int k = 0; k < ntensors; k++)
        if (tensors[k].offset + tensors[k].numel > nparams)
            nparams = tensors[k].offset + tensors[k].numel;
    if (t < 1) t = 1;
    HCL_CHECK(c->kind != HCL_OPTIM_LARS || (lo <= 0 && hi >= nparams),
              "optim: LARS updates whole tensors only (range [%lld, %lld) of %lld)", (long long)lo,
              (long long)hi, (long long)nparams);

    if (c->kind == HCL_OPTIM_ADAMW) {
        double bc1 = 1.0 - pow((double)c->beta1, (double)t);
        double bc2 = 1.0 - pow((double)c->beta2, (double)t);
        float step_size = (float)((double)lr / bc1), bc2_sqrt = (float)sqrt(bc2);
        for (int k = 0; k < ntensors; k++) {
            const hcl_tensor *tn = &tensors[k];
            int64_t a = tn->offset > lo ? tn->offset : lo;
            int64_t e = tn->offset + tn->numel < hi ? tn->offset + tn->numel : hi;
            if (a >= e) continue;
            adamw_tensor(params + a, grads + a, state + a, state + nparams + a, e - a, lr,
                         tn->decay ? c->weight_decay : 0.0f, c->beta1, c->beta2, c->eps,
                         step_size, bc2_sqrt);
        }
        return;
    }

    for (int k = 0; k < ntensors; k++) {
        const hcl_tensor *tn = &tensors[k];
        int64_t o = tn->offset > lo ? tn->offset : lo;
        int64_t n = (tn->offset + tn->numel < hi ? tn->offset + tn->numel : hi) - o;
        if (n <= 0) continue;
        float wd = tn->decay ? c->weight_decay : 0.0f, scale = 1.0f;
        if (c->kind == HCL_OPTIM_LARS && tn->decay) {
            double pn = 0.0, gn = 0.0;
            for (int64_t i = 0; i < n; i++) {
                pn += (double)params[o + i] * (double)params[o + i];
                gn += (double)grads[o + i] * (double)grads[o + i];
            }
            pn = sqrt(pn);
            gn = sqrt(gn);
            if (pn > 0.0 && gn > 0.0)
                scale = (float)((double)c->trust * pn / (gn + (double)c->weight_decay * pn));
        }
        momentum_tensor(params + o, grads + o, state + o, n, lr, wd, scale, c->momentum,
                        c->nesterov, t == 1);
    }
}

void optim_sparse_adam_rows(const hcl_optim_config *c, float lr, int64_t t, float *table, float *m, float *v,
                            const int32_t *ids, const float *g, int64_t n, int E, int64_t first, int64_t stride) {
    if (t < 1) t = 1;
    const double bc1 = 1.0 - pow((double)c->beta1, (double)t), bc2 = 1.0 - pow((double)c->beta2, (double)t);
    const float step_size = (float)((double)lr * sqrt(bc2) / bc1);
    const float one_b1 = (float)(1.0 - (double)c->beta1), one_b2 = (float)(1.0 - (double)c->beta2);
    for (int64_t i = first; i < n; i += stride) {
        const int64_t row = (int64_t)ids[i] * E;
        const float *gi = g + i * E;
        float *pr = table + row, *mr = m + row, *vr = v + row;
        for (int e = 0; e < E; e++) {
            mr[e] += (gi[e] - mr[e]) * one_b1;
            vr[e] += (gi[e] * gi[e] - vr[e]) * one_b2;
            pr[e] -= step_size * (mr[e] / (sqrtf(vr[e]) + c->eps));
        }
    }
}

const char *optim_kind_name(enum hcl_optim_kind k) {
    switch (k) {
    case HCL_OPTIM_ADAMW: return "adamw";
    case HCL_OPTIM_SGD: return "sgd";
    case HCL_OPTIM_LARS: return "lars";
    }
    return "unknown";
}

int optim_kind_parse(const char *s, enum hcl_optim_kind *k) {
    static const enum hcl_optim_kind kinds[] = {HCL_OPTIM_ADAMW, HCL_OPTIM_SGD, HCL_OPTIM_LARS};
    if (!s) return -1;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (strcmp(s, optim_kind_name(kinds[i])) == 0) {
            *k = kinds[i];
            return 0;
        }
    return -1;
}
