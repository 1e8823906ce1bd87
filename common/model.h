/* model: one encoder per view into a shared D-dim space, an optional linear classifier head
 * on that space (hybrid loss), and the learnable log logit scale t.
 *
 * Encoder v (its spec, hcl_encoder_spec, `--encoder VIEW=SPEC`): a front by kind, then for each
 * hidden width h_k: Linear -> [LayerNorm] -> ReLU|GELU; then Linear to D; then L2
 * normalisation. Fronts: mlp none (the row itself); bag: the mean of the embedding-table rows of
 * the row's non-padding token ids (E wide); conv: per stage a 3x3 convolution -> ReLU -> 2x2 max
 * pooling, then global average pooling (C_last wide; common/conv.h). Parameters, gradients and
 * optimizer moments are each ONE flat buffer; `tensors` names the slices (PyTorch-like names,
 * documented in README):
 *   encoder.<view>.conv.<j>.weight (Cout,Cin,3,3)  encoder.<view>.conv.<j>.bias (Cout)  (conv)
 *   encoder.<view>.<k>.weight (out,in)  encoder.<view>.<k>.bias (out)
 *   encoder.<view>.<k>.norm.weight      encoder.<view>.<k>.norm.bias       (k < last, LayerNorm)
 *   head.weight (K,D)  head.bias (K)    (when nclasses > 0)
 *   logit_t (1)
 *   encoder.<view>.embed.weight (V,E)   (bag; every table after logit_t, from m->ndense on)
 * Encoder v's tensors but its table are contiguous in [enc[v].param_begin, enc[v].param_end), in
 * view order, so its gradient can be all-reduced as soon as its backward is done.
 * Initialisation follows PyTorch: Linear and Conv2d weight and bias ~ U(-1/sqrt(fan_in),
 * 1/sqrt(fan_in)); LayerNorm weight 1, bias 0; an embedding table ~ N(0, 1) with the padding
 * row 0 (nn.EmbeddingBag); t = t_init. */
#ifndef HCL_MODEL_H
#define HCL_MODEL_H

#include <stdint.h>

#include "conv.h"
#include "tensor.h"
#include "util.h"

#define HCL_MAX_HIDDEN 6
#define HCL_MAX_LAYERS (HCL_MAX_HIDDEN + 1)
#define HCL_MAX_TENSORS (HCL_MAX_VIEWS * (HCL_MAX_LAYERS * 4 + 2 * HCL_MAX_CONV + 1) + 8)

enum hcl_act { HCL_ACT_RELU, HCL_ACT_GELU };
enum hcl_enc_kind { HCL_ENC_MLP, HCL_ENC_BAG, HCL_ENC_CONV };

/* One view's encoder (model_spec_parse reads `mlp:512,256`, `bag:E[,W,...]`, `conv:C1,C2,...`).
 * nhidden -1 (model_config_default's): the model's hidden widths (--hidden), an mlp. */
typedef struct {
    int kind;                      /* enum hcl_enc_kind */
    int nhidden;                   /* hidden widths after the front, or -1 */
    int hidden[HCL_MAX_HIDDEN];
    int embed;                     /* bag: E */
    int vocab, pad;                /* bag: the token view's V and padding id */
    int nconv;                     /* conv: stages */
    int chans[HCL_MAX_CONV];
    int img_h, img_w, img_c;       /* conv: the image view's H x W x C (= its input width) */
} hcl_encoder_spec;

typedef struct {
    int nviews;
    char names[HCL_MAX_VIEWS][HCL_NAME_MAX];
    int in_width[HCL_MAX_VIEWS];
    int nhidden;                  /* default 2 */
    int hidden[HCL_MAX_HIDDEN];   /* default 512, 256: of every view whose spec has nhidden -1 */
    hcl_encoder_spec spec[HCL_MAX_VIEWS];   /* default: mlp of the hidden widths */
    int dim;                      /* shared width D, default 128 */
    enum hcl_act act;             /* default ReLU */
    int layernorm;                /* default 0 */
    int nclasses;                 /* > 0: classifier head (K, D) */
    float t_init;                 /* default ln(1/0.07) */
} hcl_model_config;

typedef struct {
    int kind;                              /* enum hcl_enc_kind */
    int front;                             /* width of the front's output: in[0] */
    int64_t table;                         /* bag: offset of the (V, E) table, else -1 */
    int64_t conv_w[HCL_MAX_CONV], conv_b[HCL_MAX_CONV];   /* conv: offsets */
    int nlayers;                           /* nhidden + 1 linear layers */
    int in[HCL_MAX_LAYERS], out[HCL_MAX_LAYERS];
    int64_t w[HCL_MAX_LAYERS], b[HCL_MAX_LAYERS];        /* offsets into params/grads */
    int64_t ln_w[HCL_MAX_LAYERS], ln_b[HCL_MAX_LAYERS];  /* -1 when no LayerNorm */
    int64_t param_begin, param_end;
} hcl_encoder;

typedef struct {
    hcl_model_config cfg;
    hcl_encoder enc[HCL_MAX_VIEWS];
    int ntensors;
    hcl_tensor tensors[HCL_MAX_TENSORS];
    int64_t nparams;
    int64_t ndense;            /* parameters before the embedding tables (all of them without) */
    int64_t head_w, head_b;    /* offsets, -1 without a head */
    int64_t logit_t;           /* offset of t */
    float *params;             /* (nparams) */
    float *grads;              /* (nparams) */
} hcl_model;

/* Per-view activation buffers for up to max_rows rows, sized once. */
typedef struct {
    int max_rows;
    float *pre[HCL_MAX_LAYERS];     /* (B, out_k) linear outputs */
    float *ln[HCL_MAX_LAYERS];      /* (B, out_k) LayerNorm outputs, NULL without LN */
    float *mean[HCL_MAX_LAYERS], *rstd[HCL_MAX_LAYERS];
    float *act[HCL_MAX_LAYERS];     /* (B, out_k) activation outputs (k < last) */
    float *norm;                    /* (B) row norms of the last linear output */
    float *z;                       /* (B, D) normalised embeddings */
    float *d0, *d1;                 /* (B, max width) backward scratch */
    /* with bf16 products (matmul.h) when the buffers were made, else NULL: */
    uint16_t *inb[HCL_MAX_LAYERS];  /* (B, in_k) each layer's input rounded by model_encode */
    uint16_t *doutb;                /* (B, max width) an output gradient rounded, scratch */
    int rounded;                    /* inb holds the last model_encode's inputs */
    float *front, *dfront;          /* (B, front) a bag's or conv's output and its gradient */
    struct hcl_conv_net *conv;      /* conv: its stages' primitives and activations */
} hcl_encoder_acts;

typedef struct {
    hcl_encoder_acts v[HCL_MAX_VIEWS];
    /* NULL, or called after each layer's forward (backward 0) and after each layer's backward
     * (backward 1: from then on the gradients of layer `layer` of view `view`, its parameters
     * [w[layer], w[layer + 1]), are written for this call): the caller's communication moves
     * on meanwhile, and can start on that layer's gradient (worker/step.c) */
    void (*poll)(void *arg, int view, int layer, int backward);
    void *poll_arg;
} hcl_model_acts;

void model_config_default(hcl_model_config *c);
/* Parse an encoder spec: `mlp:W,...` (`mlp:none`: no hidden layer), `bag:E[,W,...]`,
 * `conv:C1,...`, each optionally followed by what a checkpoint records of its view:
 * `/vocab=V/pad=P` (bag), `/image=HxWxC` (conv). 0, or -1 with one line in err naming text. */
int model_spec_parse(hcl_encoder_spec *s, const char *text, char *err);
/* The spec's text as model_spec_parse reads it, with the view's part when full. */
void model_spec_format(const hcl_encoder_spec *s, int full, char *out, size_t cap);
/* View v's hidden widths (its spec's, or the model's), their count in *n. */
const int *model_view_hidden(const hcl_model_config *c, int v, int *n);
/* The width of view v's last hidden activation (its front's without hidden layers). */
int model_feature_width(const hcl_model_config *c, int v);
/* 1 when views v of a and b have the same encoder (kind, widths, table, image). */
int model_spec_same(const hcl_model_config *a, const hcl_model_config *b, int v);
/* 0 when c describes a model (views named, widths > 0, ...), else -1 with one line in err. */
int model_config_check(const hcl_model_config *c, char *err);
/* The parameters of c's model (model_init's layout), or -1 when a product or the sum overflows
 * int64 (widths come from flags and files). */
int64_t model_config_nparams(const hcl_model_config *c);
/* 0 when `copies` float arrays of c's parameters (weights, gradients, optimizer moments: `what`
 * names them) fit in the memory this process can have (hcl_memory_limit); else -1 with one
 * line in err: the model's shape, its parameters, the bytes it needs and the limit. */
int model_check_memory(const hcl_model_config *c, int copies, const char *what, char *err);
/* Lay out the tensors, allocate params and grads, initialise from seed (stream "init"). A model
 * whose weights and gradients do not fit in memory (model_check_memory) is refused. */
int model_init(hcl_model *m, const hcl_model_config *c, uint64_t seed, char *err);
/* Only the layout (tensors, offsets, nparams; params and grads stay NULL): what a model of c
 * holds, without allocating it. */
int model_layout(hcl_model *m, const hcl_model_config *c, char *err);
void model_free(hcl_model *m);
/* The gradients before the tables to zero ([0, ndense): a table's rows are zeroed by who tracks
 * the rows a batch uses, worker/sparse.h). */
void model_zero_grad(hcl_model *m);
/* Those gradients but the encoders' linear weights to zero: a step's first model_encode_backward
 * of each encoder (overwrite 1) writes those instead of adding to them (no 3.7 MB clear and no
 * read of them per W1 step). */
void model_zero_grad_but_weights(hcl_model *m);
const hcl_tensor *model_find_tensor(const hcl_model *m, const char *name);

void model_acts_init(hcl_model_acts *a, const hcl_model *m, int max_rows);
void model_acts_free(hcl_model_acts *a, const hcl_model *m);

/* Encode B rows x (B, in_width[v]) of view v; writes a->v[v].z (B, D) and returns it. */
const float *model_encode(const hcl_model *m, hcl_model_acts *a, int v, const float *x, int B);
/* Backward of the last model_encode of view v with dz (B, D); accumulates into m->grads, but
 * with overwrite its linear weights' gradients are written (model_zero_grad_but_weights). */
void model_encode_backward(hcl_model *m, hcl_model_acts *a, int v, const float *x,
                           const float *dz, int B, int overwrite);

#endif
