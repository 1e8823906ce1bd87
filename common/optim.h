/* optim: AdamW, SGD (momentum, Nesterov), LARS over flat buffers; the learning-rate schedule
 * (linear warmup then cosine decay to zero); clipping by global gradient norm.
 *
 * Tensors with decay == 0 (biases, norms, the logit scale) get no weight decay and, with LARS,
 * no trust-ratio adaptation. Moments live in one buffer `state` of optim_state_floats() floats.
 *
 *   AdamW (PyTorch's): p -= lr*wd*p (decayed only); m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *                      p -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps)
 *   SGD (PyTorch's):   g += wd*p (decayed only); buf = mu buf + g (buf = g at t = 1);
 *                      p -= lr * (nesterov ? g + mu buf : buf)
 *   LARS:              g += wd*p; for decayed tensors g *= trust*|p| / (|g_orig| + wd|p|)
 *                      (1 when either norm is 0); then SGD momentum as above.
 *   Embedding tables (bag encoders), lazily, as torch.optim.SparseAdam: only the rows a step's
 *   batch uses are updated, with the step count t of every update; an untouched row keeps its
 *   value and moments (no decay of them, no weight decay):
 *                      m += (1-b1)(g - m); v += (1-b2)(g^2 - v);
 *                      p -= lr sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps) */
#ifndef HCL_OPTIM_H
#define HCL_OPTIM_H

#include <stdint.h>

#include "tensor.h"

enum hcl_optim_kind { HCL_OPTIM_ADAMW, HCL_OPTIM_SGD, HCL_OPTIM_LARS };

typedef struct {
    enum hcl_optim_kind kind;
    float lr;               /* peak learning rate */
    float weight_decay;
    float beta1, beta2, eps; /* AdamW: 0.9, 0.999, 1e-8 */
    float momentum;          /* SGD/LARS: 0.9 */
    int nesterov;
    float trust;             /* LARS: 0.001 */
    float clip_norm;         /* 0 = no clipping */
    int64_t warmup_steps;
    int64_t total_steps;
} hcl_optim_config;

void optim_config_default(hcl_optim_config *c);
int64_t optim_state_floats(const hcl_optim_config *c, int64_t nparams);

/* Learning rate at step (0-based): lr*(step+1)/warmup during warmup, then
 * lr * 0.5 * (1 + cos(pi * (step - warmup) / (total - warmup))). */
float optim_lr_at(const hcl_optim_config *c, int64_t step);

double optim_grad_norm(const float *grads, int64_t n);
/* The sum of squares optim_grad_norm takes the root of (the same fixed order of partial sums). */
double optim_sum_squares(const float *grads, int64_t n);
/* Scale grads so their norm is at most max_norm (no-op when norm <= max_norm or max_norm <= 0). */
void optim_clip(float *grads, int64_t n, double norm, float max_norm);

/* One update. t is the 1-based count of updates taken (bias correction, first momentum step). */
void optim_step(const hcl_optim_config *c, float lr, int64_t t, float *params, const float *grads,
                float *state, const hcl_tensor *tensors, int ntensors);
/* The same update of the parameters [lo, hi) only (AdamW and SGD are elementwise: a partition
 * of the buffer into ranges gives optim_step's bits; LARS needs whole tensors and refuses). */
/* The lazy table update above for rows ids[i] (i = first, first + stride, ... < n) of a (V, E)
 * table, g (n, E) their summed gradients; m, v the table's slices of the two moments. */
void optim_sparse_adam_rows(const hcl_optim_config *c, float lr, int64_t t, float *table, float *m, float *v,
                            const int32_t *ids, const float *g, int64_t n, int E, int64_t first, int64_t stride);
void optim_step_range(const hcl_optim_config *c, float lr, int64_t t, float *params, const float *grads,
                      float *state, const hcl_tensor *tensors, int ntensors, int64_t lo, int64_t hi);

const char *optim_kind_name(enum hcl_optim_kind k);
int optim_kind_parse(const char *s, enum hcl_optim_kind *k);

#endif
