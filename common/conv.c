/* conv: the image encoder's convolution stages on oneDNN (conv.h).
 *
 * Each stage runs oneDNN's primitives on plain NHWC activations: convolution forward
 * (forward_training, ReLU fused as a post-op, so its output is post-ReLU), max pooling forward
 * (its workspace remembers each window's winner), and in the backward max pooling backward, the
 * ReLU mask (kernels.h's relu_backward: the post-ReLU output is the mask), convolution backward
 * weights (weights and bias) and, but for stage 0, convolution backward data. Global average
 * pooling and its backward are loops.
 *
 * Weights: the convolutions take theirs in the format they choose (format `any`; oneDNN 2.6 picks
 * blocked ones such as Acdb16a, ABcd16b16a, a different one per primitive). Given PyTorch's oihw
 * with NHWC activations, oneDNN 2.6 has only its reference convolution, 100 to 300 times slower
 * (28x28x1, stages 16,32, B 256: 1.35 s forward, 2.2 s backward on one core, against 8 and 12 ms).
 * So a forward reorders w (oihw, a few thousand floats) into the forward's format, a backward
 * into backward data's, and dw comes out of backward weights' format by a reorder too.
 *
 * A batch size's primitives and memory objects (data handles set at each run) are created at
 * its first forward and kept in a cache of CACHE_MAX entries (the least recently used one goes
 * when a new B needs room). Every primitive shares one user-mode scratchpad, grown when a
 * primitive is created, never during a step (primitives run one after another on one stream).
 *
 * Buffers (max_rows rows each), stage s of input (Hs, Ws, Cin_s):
 *   conv[s]  (B, Hs, Ws, Cout_s)      post-ReLU convolution output
 *   pool[s]  (B, Hs/2, Ws/2, Cout_s)  pooled output, the next stage's input
 *   ws[s]    one float per pooled element, the pooling workspace (u8 or s32 indices)
 *   dconv    (B, Hs, Ws, Cout_s)      largest over stages, gradient of a convolution's output
 *   dpool    (B, Hs/2, Ws/2, Cout_s)  largest over stages, gradient of a pooled output
 *   gw, gb   one stage's weight and bias gradients before they are added (overwrite 0) */
#include "conv.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

/* One stage's shape: input (H, W, Ci), convolution output (H, W, Co), pooled (H/2, W/2, Co). */
typedef struct {
    int H, W, Ci, Co;
} stage_dims;

/* The stages' shapes for inputs (H, W, C), or -1 with a line in err. */
static int stages_plan(stage_dims *sd, int H, int W, int C, const int *chans, int nstages, char *err) {
    if (nstages < 1 || nstages > HCL_MAX_CONV)
        return hcl_err(err, "conv: %d stages: between 1 and %d", nstages, HCL_MAX_CONV);
    if (H < 1 || W < 1 || C < 1)
        return hcl_err(err, "conv: an image of %dx%dx%d: every size must be positive", H, W, C);
    const int H0 = H, W0 = W;
    for (int s = 0; s < nstages; s++) {
        if (chans[s] < 1 || chans[s] > 65536)
            return hcl_err(err, "conv: stage %d has %d channels: between 1 and 65536", s + 1, chans[s]);
        if (H < 2 || W < 2)
            return hcl_err(err, "conv: a %dx%d image is too small for %d stages: stage %d's input is %dx%d, "
                           "smaller than its 2x2 pooling", H0, W0, nstages, s + 1, H, W);
        sd[s] = (stage_dims){H, W, s ? chans[s - 1] : C, chans[s]};
        H /= 2, W /= 2;
    }
    return 0;
}

/* Floats per row of each buffer (the top of the file). */
typedef struct {
    size_t conv[HCL_MAX_CONV], pool[HCL_MAX_CONV], dconv, dpool;
    size_t gw;                     /* per net, not per row: largest Cout Cin 9 + Cout */
} buf_sizes;

static buf_sizes sizes_of(const stage_dims *sd, int nstages) {
    buf_sizes z = {0};
    for (int s = 0; s < nstages; s++) {
        const stage_dims *d = &sd[s];
        z.conv[s] = (size_t)d->H * d->W * d->Co;
        z.pool[s] = (size_t)(d->H / 2) * (d->W / 2) * d->Co;
        z.dconv = z.conv[s] > z.dconv ? z.conv[s] : z.dconv;
        z.dpool = z.pool[s] > z.dpool ? z.pool[s] : z.dpool;
        size_t g = (size_t)d->Co * d->Ci * 9 + d->Co;
        z.gw = g > z.gw ? g : z.gw;
    }
    return z;
}

double conv_net_act_floats(int max_rows, int H, int W, int C, const int *chans, int nstages) {
    stage_dims sd[HCL_MAX_CONV];
    if (stages_plan(sd, H, W, C, chans, nstages, NULL)) return 0.0;
    buf_sizes z = sizes_of(sd, nstages);
    double per_row = (double)z.dconv + (double)z.dpool;
    for (int s = 0; s < nstages; s++) per_row += (double)z.conv[s] + 2.0 * (double)z.pool[s];   /* + ws */
    return per_row * max_rows + (double)z.gw;
}

#ifdef HCL_HAVE_DNNL
#include <omp.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include "kernels.h"
#include "memlimit.h"

#define DNNL_OK(call) do { dnnl_status_t _s = (call); \
    if (_s == dnnl_out_of_memory) memlimit_out_of_memory("oneDNN (" #call ")", 0.0); \
    HCL_CHECK(_s == dnnl_success, "%s failed: %s", #call, dnnl_status2str(_s)); } while (0)

#define CACHE_MAX 6
#define OP_ARGS 4

/* One primitive with a memory object per execute argument (data handles set at each run). */
typedef struct {
    dnnl_primitive_t prim;
    int n, arg[OP_ARGS];
    dnnl_memory_t mem[OP_ARGS], scratch;
} op;

/* A weight tensor moved between PyTorch's oihw and a primitive's own (blocked) format: a reorder
 * into or out of buf, the primitive's copy. No reorder (buf NULL) where the formats agree. */
typedef struct {
    op re;           /* FROM, TO */
    float *buf;
} wmove;

/* One stage's primitives for one batch size. */
typedef struct {
    op fwd;          /* SRC x, WEIGHTS w, BIAS b, DST conv (ReLU fused) */
    op pool;         /* SRC conv, DST pool, WORKSPACE ws */
    op pool_bwd;     /* DIFF_DST dpool, WORKSPACE ws, DIFF_SRC dconv */
    op bwd_w;        /* SRC x, DIFF_DST dconv, DIFF_WEIGHTS dw, DIFF_BIAS db */
    op bwd_d;        /* DIFF_DST dconv, WEIGHTS w, DIFF_SRC dpool of the stage before (stage > 0) */
    wmove w_fwd;     /* w into fwd's format */
    wmove w_bwd;     /* w into bwd_d's format */
    wmove dw_out;    /* dw out of bwd_w's format */
} stage_ops;

typedef struct {
    int B;                         /* 0: free */
    unsigned long used;            /* the net's clock at its last use */
    stage_ops st[HCL_MAX_CONV];
} batch_entry;

struct hcl_conv_net {
    int max_rows, nstages;
    stage_dims sd[HCL_MAX_CONV];
    dnnl_engine_t eng;
    dnnl_stream_t strm;
    batch_entry cache[CACHE_MAX];
    unsigned long clock;
    int created;
    void *scratch;                 /* the primitives' shared scratchpad, scratch_bytes */
    size_t scratch_bytes;
    float *buf;                    /* one allocation, pointed into by the buffers below */
    float *conv[HCL_MAX_CONV], *pool[HCL_MAX_CONV], *ws[HCL_MAX_CONV], *dconv, *dpool, *gw;
    size_t conv_n[HCL_MAX_CONV], pool_n[HCL_MAX_CONV];   /* floats per row */
    /* the last forward's, for its backward */
    int last_B;
    const float *x;
    const float *w[HCL_MAX_CONV];
};

/* ---- primitives ------------------------------------------------------------------------------- */

static void md4(dnnl_memory_desc_t *md, int a, int b, int c, int d, dnnl_format_tag_t tag) {
    dnnl_dims_t dims = {a, b, c, d};
    DNNL_OK(dnnl_memory_desc_init_by_tag(md, 4, dims, dnnl_f32, tag));
}

static dnnl_primitive_attr_t attr_new(int relu) {
    dnnl_primitive_attr_t attr;
    DNNL_OK(dnnl_primitive_attr_create(&attr));
    DNNL_OK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    if (relu) {
        dnnl_post_ops_t po;
        DNNL_OK(dnnl_post_ops_create(&po));
        DNNL_OK(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f));
        DNNL_OK(dnnl_primitive_attr_set_post_ops(attr, po));
        dnnl_post_ops_destroy(po);
    }
    return attr;
}

/* The primitive descriptor of desc (hint: its forward's, for a backward); NULL where oneDNN has
 * no implementation, which is a bug here (every shape is plain f32). */
static dnnl_primitive_desc_t pd_new(hcl_conv_net *n, const void *desc, int relu, const_dnnl_primitive_desc_t hint,
                                    const char *what) {
    dnnl_primitive_attr_t attr = attr_new(relu);
    dnnl_primitive_desc_t pd;
    dnnl_status_t s = dnnl_primitive_desc_create(&pd, desc, attr, n->eng, hint);
    dnnl_primitive_attr_destroy(attr);
    HCL_CHECK(s == dnnl_success, "conv: oneDNN has no %s primitive here: %s", what, dnnl_status2str(s));
    return pd;
}

/* o from pd: its primitive, a memory object for each of the nargs arguments, and room for its
 * scratchpad in the shared one. */
static void op_make(hcl_conv_net *n, op *o, dnnl_primitive_desc_t pd, int nargs, const int *args) {
    HCL_CHECK(nargs <= OP_ARGS, "conv: %d arguments", nargs);
    DNNL_OK(dnnl_primitive_create(&o->prim, pd));
    o->n = nargs;
    for (int i = 0; i < nargs; i++) {
        const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, args[i]);
        HCL_CHECK(md && md->ndims > 0, "conv: no memory descriptor for argument %d", args[i]);
        o->arg[i] = args[i];
        DNNL_OK(dnnl_memory_create(&o->mem[i], md, n->eng, DNNL_MEMORY_NONE));
    }
    const dnnl_memory_desc_t *sp = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    const size_t bytes = sp ? dnnl_memory_desc_get_size(sp) : 0;
    o->scratch = NULL;
    if (!bytes) return;
    DNNL_OK(dnnl_memory_create(&o->scratch, sp, n->eng, DNNL_MEMORY_NONE));
    if (bytes > n->scratch_bytes) {
        free(n->scratch);
        n->scratch = hcl_floats((bytes + 3) / 4);
        n->scratch_bytes = bytes;
    }
}

static void op_free(op *o) {
    if (!o->prim) return;
    dnnl_primitive_destroy(o->prim);
    for (int i = 0; i < o->n; i++) dnnl_memory_destroy(o->mem[i]);
    if (o->scratch) dnnl_memory_destroy(o->scratch);
    memset(o, 0, sizeof *o);
}

/* Runs o on data[i] for its argument i. */
static void op_run(hcl_conv_net *n, op *o, void *const *data) {
    dnnl_exec_arg_t a[OP_ARGS + 1];
    int k = 0;
    for (; k < o->n; k++) {
        DNNL_OK(dnnl_memory_set_data_handle(o->mem[k], data[k]));
        a[k] = (dnnl_exec_arg_t){o->arg[k], o->mem[k]};
    }
    if (o->scratch) {
        DNNL_OK(dnnl_memory_set_data_handle(o->scratch, n->scratch));
        a[k++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, o->scratch};
    }
    DNNL_OK(dnnl_primitive_execute(o->prim, n->strm, k, a));
}

/* m for pd's argument arg, whose user format is user: into pd's format, or out of it (to_user). */
static void wmove_make(hcl_conv_net *n, wmove *m, const dnnl_memory_desc_t *user, dnnl_primitive_desc_t pd, int arg,
                       int to_user) {
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, arg);
    m->buf = NULL;
    if (dnnl_memory_desc_equal(md, user)) return;
    m->buf = hcl_floats((dnnl_memory_desc_get_size(md) + 3) / 4);
    dnnl_primitive_attr_t attr = attr_new(0);
    dnnl_primitive_desc_t rpd;
    DNNL_OK(dnnl_reorder_primitive_desc_create(&rpd, to_user ? md : user, n->eng, to_user ? user : md, n->eng, attr));
    dnnl_primitive_attr_destroy(attr);
    op_make(n, &m->re, rpd, 2, (const int[]){DNNL_ARG_FROM, DNNL_ARG_TO});
    dnnl_primitive_desc_destroy(rpd);
}

/* w (oihw) as m's primitive reads it. */
static void *wmove_in(hcl_conv_net *n, wmove *m, const float *w) {
    if (!m->buf) return (void *)w;
    op_run(n, &m->re, (void *const[]){(void *)w, m->buf});
    return m->buf;
}

static void wmove_free(wmove *m) {
    op_free(&m->re);
    free(m->buf);
    m->buf = NULL;
}

/* The convolution's three primitives of stage s at batch size B (backward data but for stage 0). */
static void conv_ops(hcl_conv_net *n, stage_ops *o, int s, int B) {
    const stage_dims *d = &n->sd[s];
    dnnl_memory_desc_t src, wei, user_wei, bias, dst;
    md4(&src, B, d->Ci, d->H, d->W, dnnl_nhwc);
    md4(&wei, d->Co, d->Ci, 3, 3, dnnl_format_tag_any);   /* the primitives' choice: see the top */
    md4(&user_wei, d->Co, d->Ci, 3, 3, dnnl_oihw);
    md4(&dst, B, d->Co, d->H, d->W, dnnl_nhwc);
    dnnl_dims_t bdims = {d->Co}, one = {1, 1}, pad = {1, 1};
    DNNL_OK(dnnl_memory_desc_init_by_tag(&bias, 1, bdims, dnnl_f32, dnnl_a));

    dnnl_convolution_desc_t fd, bd, wd;
    DNNL_OK(dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct, &src, &wei, &bias,
                                               &dst, one, pad, pad));
    dnnl_primitive_desc_t fpd = pd_new(n, &fd, 1, NULL, "convolution forward");
    op_make(n, &o->fwd, fpd, 4, (const int[]){DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST});
    wmove_make(n, &o->w_fwd, &user_wei, fpd, DNNL_ARG_WEIGHTS, 0);

    DNNL_OK(dnnl_convolution_backward_weights_desc_init(&wd, dnnl_convolution_direct, &src, &wei, &bias, &dst, one,
                                                        pad, pad));
    dnnl_primitive_desc_t wpd = pd_new(n, &wd, 0, fpd, "convolution backward weights");
    op_make(n, &o->bwd_w, wpd, 4,
            (const int[]){DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_BIAS});
    wmove_make(n, &o->dw_out, &user_wei, wpd, DNNL_ARG_DIFF_WEIGHTS, 1);
    dnnl_primitive_desc_destroy(wpd);

    if (s > 0) {
        DNNL_OK(dnnl_convolution_backward_data_desc_init(&bd, dnnl_convolution_direct, &src, &wei, &dst, one, pad,
                                                         pad));
        dnnl_primitive_desc_t bpd = pd_new(n, &bd, 0, fpd, "convolution backward data");
        op_make(n, &o->bwd_d, bpd, 3, (const int[]){DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_SRC});
        wmove_make(n, &o->w_bwd, &user_wei, bpd, DNNL_ARG_WEIGHTS, 0);
        dnnl_primitive_desc_destroy(bpd);
    }
    dnnl_primitive_desc_destroy(fpd);
}

/* The max pooling's two primitives of stage s at batch size B. */
static void pool_ops(hcl_conv_net *n, stage_ops *o, int s, int B) {
    const stage_dims *d = &n->sd[s];
    dnnl_memory_desc_t src, dst;
    md4(&src, B, d->Co, d->H, d->W, dnnl_nhwc);
    md4(&dst, B, d->Co, d->H / 2, d->W / 2, dnnl_nhwc);
    dnnl_dims_t two = {2, 2}, zero = {0, 0};
    dnnl_pooling_desc_t fd, bd;
    DNNL_OK(dnnl_pooling_forward_desc_init(&fd, dnnl_forward_training, dnnl_pooling_max, &src, &dst, two, two, zero,
                                           zero));
    dnnl_primitive_desc_t fpd = pd_new(n, &fd, 0, NULL, "max pooling forward");
    op_make(n, &o->pool, fpd, 3, (const int[]){DNNL_ARG_SRC, DNNL_ARG_DST, DNNL_ARG_WORKSPACE});
    const size_t ws = dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(fpd, dnnl_query_workspace_md, 0));
    HCL_CHECK(ws <= sizeof(float) * n->pool_n[s] * (size_t)B, "conv: stage %d's pooling workspace of %zu bytes "
              "exceeds its buffer of %zu", s + 1, ws, sizeof(float) * n->pool_n[s] * (size_t)B);

    DNNL_OK(dnnl_pooling_backward_desc_init(&bd, dnnl_pooling_max, &src, &dst, two, two, zero, zero));
    dnnl_primitive_desc_t bpd = pd_new(n, &bd, 0, fpd, "max pooling backward");
    op_make(n, &o->pool_bwd, bpd, 3, (const int[]){DNNL_ARG_DIFF_DST, DNNL_ARG_WORKSPACE, DNNL_ARG_DIFF_SRC});
    dnnl_primitive_desc_destroy(bpd);
    dnnl_primitive_desc_destroy(fpd);
}

static void entry_free(batch_entry *e) {
    for (int s = 0; s < HCL_MAX_CONV; s++) {
        op *ops[] = {&e->st[s].fwd, &e->st[s].pool, &e->st[s].pool_bwd, &e->st[s].bwd_w, &e->st[s].bwd_d};
        for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) op_free(ops[i]);
        wmove_free(&e->st[s].w_fwd), wmove_free(&e->st[s].w_bwd), wmove_free(&e->st[s].dw_out);
    }
    e->B = 0;
}

/* The primitives for batch size B: cached, or created in the free or least recently used entry. */
static batch_entry *entry_for(hcl_conv_net *n, int B) {
    batch_entry *victim = &n->cache[0];
    n->clock++;
    for (int i = 0; i < CACHE_MAX; i++) {
        batch_entry *e = &n->cache[i];
        if (e->B == B) {
            e->used = n->clock;
            return e;
        }
        if (victim->B && (!e->B || e->used < victim->used)) victim = e;
    }
    entry_free(victim);
    victim->B = B;
    victim->used = n->clock;
    for (int s = 0; s < n->nstages; s++) {
        conv_ops(n, &victim->st[s], s, B);
        pool_ops(n, &victim->st[s], s, B);
    }
    n->created++;
    return victim;
}

/* ---- the net ---------------------------------------------------------------------------------- */

int conv_net_init(hcl_conv_net **np, int max_rows, int H, int W, int C, const int *chans, int nstages, char *err) {
    *np = NULL;
    stage_dims sd[HCL_MAX_CONV];
    if (stages_plan(sd, H, W, C, chans, nstages, err)) return -1;
    if (max_rows < 1) return hcl_err(err, "conv: %d rows: at least 1", max_rows);
    hcl_conv_net *n = hcl_calloc(1, sizeof *n);
    n->max_rows = max_rows, n->nstages = nstages;
    memcpy(n->sd, sd, sizeof sd);
    DNNL_OK(dnnl_engine_create(&n->eng, dnnl_cpu, 0));
    DNNL_OK(dnnl_stream_create(&n->strm, n->eng, dnnl_stream_default_flags));

    buf_sizes z = sizes_of(sd, nstages);
    const size_t R = (size_t)max_rows;
    const double total = conv_net_act_floats(max_rows, H, W, C, chans, nstages);
    float *p = n->buf = hcl_floats((size_t)total);
    for (int s = 0; s < nstages; s++) {
        n->conv_n[s] = z.conv[s], n->pool_n[s] = z.pool[s];
        n->conv[s] = p, p += R * z.conv[s];
        n->pool[s] = p, p += R * z.pool[s];
        n->ws[s] = p, p += R * z.pool[s];
    }
    n->dconv = p, p += R * z.dconv;
    n->dpool = p, p += R * z.dpool;
    n->gw = p, p += z.gw;
    HCL_CHECK(p == n->buf + (size_t)total, "conv: buffers of %zu floats, %.0f counted", (size_t)(p - n->buf), total);
    *np = n;
    return 0;
}

void conv_net_free(hcl_conv_net *n) {
    if (!n) return;
    for (int i = 0; i < CACHE_MAX; i++) entry_free(&n->cache[i]);
    dnnl_stream_destroy(n->strm);
    dnnl_engine_destroy(n->eng);
    free(n->scratch);
    free(n->buf);
    free(n);
}

int conv_net_out(const hcl_conv_net *n) { return n->sd[n->nstages - 1].Co; }

int conv_net_created(const hcl_conv_net *n) { return n->created; }

/* feat (B, C) = the mean over P positions of pool (B, P, C). */
static void gap_forward(float *feat, const float *pool, int B, int P, int C) {
    const float inv = 1.0f / (float)P;
    for (int b = 0; b < B; b++) {
        float *f = feat + (size_t)b * C;
        const float *x = pool + (size_t)b * P * C;
        for (int c = 0; c < C; c++) f[c] = 0.0f;
        for (int q = 0; q < P; q++)
            for (int c = 0; c < C; c++) f[c] += x[(size_t)q * C + c];
        for (int c = 0; c < C; c++) f[c] *= inv;
    }
}

/* dpool (B, P, C) = dfeat (B, C) / P at every position. */
static void gap_backward(float *dpool, const float *dfeat, int B, int P, int C) {
    const float inv = 1.0f / (float)P;
    for (int b = 0; b < B; b++)
        for (int q = 0; q < P; q++) {
            float *d = dpool + ((size_t)b * P + q) * C;
            for (int c = 0; c < C; c++) d[c] = dfeat[(size_t)b * C + c] * inv;
        }
}

void conv_net_forward(hcl_conv_net *n, const float *x, const float *const *w, const float *const *b, int B, float *feat) {
    HCL_CHECK(B >= 1 && B <= n->max_rows, "conv: a forward of %d rows on a net of %d", B, n->max_rows);
    omp_set_num_threads(kernels_get_threads());   /* this thread's team (matmul_onednn.c does the same) */
    batch_entry *e = entry_for(n, B);
    for (int s = 0; s < n->nstages; s++) {
        stage_ops *o = &e->st[s];
        const float *in = s ? n->pool[s - 1] : x;
        void *wf = wmove_in(n, &o->w_fwd, w[s]);
        op_run(n, &o->fwd, (void *const[]){(void *)in, wf, (void *)b[s], n->conv[s]});
        op_run(n, &o->pool, (void *const[]){n->conv[s], n->pool[s], n->ws[s]});
        n->w[s] = w[s];
    }
    DNNL_OK(dnnl_stream_wait(n->strm));
    const stage_dims *l = &n->sd[n->nstages - 1];
    gap_forward(feat, n->pool[n->nstages - 1], B, (l->H / 2) * (l->W / 2), l->Co);
    n->x = x;
    n->last_B = B;
}

void conv_net_backward(hcl_conv_net *n, const float *dfeat, float *const *dw, float *const *db, int B, int overwrite) {
    HCL_CHECK(B == n->last_B, "conv: a backward of %d rows after a forward of %d", B, n->last_B);
    omp_set_num_threads(kernels_get_threads());
    batch_entry *e = entry_for(n, B);
    const stage_dims *l = &n->sd[n->nstages - 1];
    gap_backward(n->dpool, dfeat, B, (l->H / 2) * (l->W / 2), l->Co);
    for (int s = n->nstages - 1; s >= 0; s--) {
        stage_ops *o = &e->st[s];
        const stage_dims *d = &n->sd[s];
        const size_t nw = (size_t)d->Co * d->Ci * 9;
        op_run(n, &o->pool_bwd, (void *const[]){n->dpool, n->ws[s], n->dconv});
        DNNL_OK(dnnl_stream_wait(n->strm));
        relu_backward(n->dconv, n->conv[s], n->dconv, (int64_t)(n->conv_n[s] * (size_t)B));   /* post-ReLU mask */
        const float *in = s ? n->pool[s - 1] : n->x;
        float *gw = overwrite ? dw[s] : n->gw, *gb = overwrite ? db[s] : n->gw + nw;
        op_run(n, &o->bwd_w, (void *const[]){(void *)in, n->dconv, o->dw_out.buf ? o->dw_out.buf : gw, gb});
        if (o->dw_out.buf) op_run(n, &o->dw_out.re, (void *const[]){o->dw_out.buf, gw});
        if (s > 0) op_run(n, &o->bwd_d, (void *const[]){n->dconv, wmove_in(n, &o->w_bwd, n->w[s]), n->dpool});
        DNNL_OK(dnnl_stream_wait(n->strm));
        if (!overwrite) {
            for (size_t i = 0; i < nw; i++) dw[s][i] += gw[i];
            for (int i = 0; i < d->Co; i++) db[s][i] += gb[i];
        }
    }
}

#else /* no oneDNN: the conv encoder is refused at init */

struct hcl_conv_net {
    int nstages;
};

int conv_net_init(hcl_conv_net **n, int max_rows, int H, int W, int C, const int *chans, int nstages, char *err) {
    (void)max_rows, (void)H, (void)W, (void)C, (void)chans, (void)nstages;
    *n = NULL;
    return hcl_err(err, "the conv encoder needs oneDNN (libdnnl-dev); this build has none");
}

void conv_net_free(hcl_conv_net *n) { HCL_CHECK(!n, "conv: a net without oneDNN"); }

int conv_net_out(const hcl_conv_net *n) {
    (void)n;
    HCL_CHECK(0, "conv: a net without oneDNN");
}

int conv_net_created(const hcl_conv_net *n) {
    (void)n;
    HCL_CHECK(0, "conv: a net without oneDNN");
}

void conv_net_forward(hcl_conv_net *n, const float *x, const float *const *w, const float *const *b, int B, float *feat) {
    (void)n, (void)x, (void)w, (void)b, (void)B, (void)feat;
    HCL_CHECK(0, "conv: a net without oneDNN");
}

void conv_net_backward(hcl_conv_net *n, const float *dfeat, float *const *dw, float *const *db, int B, int overwrite) {
    (void)n, (void)dfeat, (void)dw, (void)db, (void)B, (void)overwrite;
    HCL_CHECK(0, "conv: a net without oneDNN");
}
#endif
