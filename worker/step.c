/* step: see step.h. The replica (worker_init, worker_free), the step as its phases, and the
 * update; every exchange goes through w->xch (exchange.h). */
#include "step.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conv.h"
#include "log.h"
#include "matmul.h"
#include "sparse.h"
#include "util.h"
#include "watchdog.h"

/* Encoders' orders: forward the gathered views first (their all-gather runs while the others
 * are encoded); backward the views not gathered first (while the reduce-scatter runs), then by
 * size, the largest first. */
static void init_orders(hcl_worker *w) {
    const int V = w->model.cfg.nviews;
    for (int g = 0, k = 0; g < 2; g++)
        for (int v = 0; v < V; v++)
            if ((w->gathered[v] == 0) == g) w->enc_order[k++] = v;
    for (int v = 0; v < V; v++) w->bwd_order[v] = v;
    for (int i = 1; i < V; i++)
        for (int j = i; j > 0; j--) {
            const int va = w->bwd_order[j - 1], vc = w->bwd_order[j];
            const hcl_encoder *a = &w->model.enc[va], *c = &w->model.enc[vc];
            if (w->gathered[vc] > w->gathered[va] ||
                (w->gathered[vc] == w->gathered[va] && c->param_end - c->param_begin <= a->param_end - a->param_begin))
                break;
            int t = w->bwd_order[j];
            w->bwd_order[j] = w->bwd_order[j - 1];
            w->bwd_order[j - 1] = t;
        }
}

/* The tests' fault injections (HCL_INJECT_NAN, HCL_INJECT_SLOW) that name this worker. */
static void init_injections(hcl_worker *w) {
    w->inject_nan_step = -1;
    const char *inj = getenv("HCL_INJECT_NAN");
    long long inj_step;
    int inj_worker;
    if (inj && sscanf(inj, "%lld:%d", &inj_step, &inj_worker) == 2 && inj_worker == w->rank)
        w->inject_nan_step = inj_step;
    const char *slow = getenv("HCL_INJECT_SLOW");
    int slow_us;
    if (slow && sscanf(slow, "%d:%d", &inj_worker, &slow_us) == 2 && inj_worker == w->rank && slow_us > 0)
        w->inject_slow_us = slow_us;
}

/* The buffers of the embeddings, their gradients and the collectives (step.h: all private
 * here). Small batches: one collective for all views, through packing buffers. Large ones:
 * one in-place collective per view, no buffers of N x V x D beyond the gathered embeddings and
 * their gradients. */
static void init_buffers(hcl_worker *w) {
    const int V = w->model.cfg.nviews, D = w->model.cfg.dim, G = w->ngv;
    const int64_t n = w->n;
    w->packed = (int64_t)G * n * D * (int64_t)sizeof(float) <= HCL_PACKED_MAX_BYTES;
    if (w->packed) {
        w->zpack = hcl_floats((size_t)G * w->b_max * D + 1);
        w->zgath = hcl_floats((size_t)G * n * D + 1);
        w->dzpack = hcl_floats((size_t)G * n * D + 1);
        w->dzown = hcl_floats((size_t)G * w->b_max * D + 1);
        w->rsin = hcl_floats((size_t)w->size * G * w->b_max * D + 1);
    }
    w->rsreqs = hcl_calloc(2 * (size_t)w->size, sizeof(MPI_Request));
    w->vcounts = hcl_calloc((size_t)w->size, sizeof(int));
    w->rs_rows = HCL_RS_FLOATS / ((int64_t)w->size * D);
    w->rs_rows = w->rs_rows < 1 ? 1 : w->rs_rows > w->b_max ? w->b_max : w->rs_rows;
    w->rsbuf = hcl_floats((size_t)w->size * w->rs_rows * D);
    w->rscounts = hcl_calloc((size_t)w->size, sizeof(int));
    w->vdispls = hcl_calloc((size_t)w->size, sizeof(int));
    for (int v = 0; v < V; v++) {
        int64_t rows = w->gathered[v] ? n : w->b_max;
        w->zall[v] = hcl_floats((size_t)rows * D);
        w->dzall[v] = hcl_floats((size_t)rows * D);
    }
    w->colmax = hcl_floats((size_t)(w->loss.npairs > 0 ? w->loss.npairs : 1) * n);
    w->counts = hcl_calloc((size_t)w->size, sizeof(int));
    w->displs = hcl_calloc((size_t)w->size, sizeof(int));
    w->r0s = hcl_calloc((size_t)w->size, sizeof(int64_t));
    w->bs = hcl_calloc((size_t)w->size, sizeof(int64_t));
    w->scal = hcl_calloc((size_t)(3 + V * V + w->size + 1), sizeof(double));
    w->busy = hcl_calloc((size_t)w->size, sizeof(double));
}

/* The ring of the gradient all-reduce (ring.h): a slice per encoder layer, [w[k], w[k + 1]),
 * then the rest (head, logit scale), with the wire of w->bf16. Collective. */
static void open_ring(hcl_worker *w) {
    const hcl_model *m = &w->model;
    const int V = m->cfg.nviews;
    int64_t cuts[HCL_MAX_VIEWS * HCL_MAX_LAYERS + 2];
    int n = 0;
    for (int v = 0; v < V; v++) {
        w->slice0[v] = n;
        /* layer 0's slice from the encoder's start: a conv front's stages go with it (model.h
           calls the hook of layer 0's backward after the front's) */
        for (int k = 0; k < m->enc[v].nlayers; k++) cuts[n++] = k ? m->enc[v].w[k] : m->enc[v].param_begin;
    }
    cuts[n] = m->enc[V - 1].param_end;
    cuts[n + 1] = m->ndense;   /* the tables: worker/sparse.h */
    HCL_CHECK(cuts[0] == 0, "open_ring: encoder 0 starts at parameter %lld", (long long)cuts[0]);
    ring_close(w->ring);
    w->ring = ring_open(w->comm, cuts, n + 1, w->bf16);
}

/* The exchanges in flight move on (ring_poll, and a test of the all-gather's and
 * reduce-scatter's requests: Open MPI moves them only inside its calls). */
static void step_progress(hcl_worker *w) {
    if (!w->ring || w->seg) return;   /* one worker, or shared memory: nothing moves by MPI's calls */
    ring_poll(w->ring);
    int done;
    for (int k = 0; k < 2; k++)
        if (w->prefetch[k] && *w->prefetch[k] != MPI_REQUEST_NULL) MPI_OK(MPI_Test(w->prefetch[k], &done, MPI_STATUS_IGNORE));
    if (w->nag) MPI_OK(MPI_Testall(w->nag, w->agreq, &done, MPI_STATUSES_IGNORE));
    if (w->rsreq != MPI_REQUEST_NULL) MPI_OK(MPI_Test(&w->rsreq, &done, MPI_STATUS_IGNORE));
    if (w->nrs) MPI_OK(MPI_Testall(w->nrs, w->rsreqs, &done, MPI_STATUSES_IGNORE));
}

/* The model's hook after each layer (model.h): the exchanges move on, and after a layer's
 * backward on the last micro-batch its gradient is complete and its sum starts
 * (grad_reduce_layer; the test's NaN goes in first). */
static void step_poll(void *arg, int v, int k, int backward) {
    hcl_worker *w = arg;
    if (backward && w->bwd_last) {
        if (k == 0 && w->step_now == w->inject_nan_step) w->model.grads[w->model.enc[v].param_begin] = NAN;
        if (w->xch.grad_reduce_layer) w->xch.grad_reduce_layer(w, v, k);
    }
    step_progress(w);
}

int worker_init(hcl_worker *w, MPI_Comm comm, const hcl_model_config *mc,
                const hcl_loss_config *lc, const hcl_optim_config *oc, int learn_t,
                uint64_t seed, int64_t n, int balance, char *err) {
    memset(w, 0, sizeof *w);
    w->comm = comm;
    MPI_Comm_rank(comm, &w->rank);
    MPI_Comm_size(comm, &w->size);
    if (n < w->size)
        return hcl_err(err, "batch-size: %lld rows cannot be split among %d workers",
                       (long long)n, w->size);
    if (model_init(&w->model, mc, seed, err) != 0) return -1;
    w->n = n;
    w->b_max = batch_share_max(n, w->size, balance);
    /* Encoders run on at most HCL_MICRO_ROWS rows at a time: with more own rows the forward is
     * run twice (once for the embeddings, again chunk by chunk for the backward), so activation
     * memory does not grow with the batch. */
    w->micro = w->b_max < HCL_MICRO_ROWS ? w->b_max : HCL_MICRO_ROWS;
    model_acts_init(&w->acts, &w->model, (int)w->micro);
    w->loss_cfg = *lc;
    loss_ctx_init(&w->loss, lc, w->b_max, n);
    w->opt = *oc;
    w->opt_state = hcl_floats_lazy((size_t)optim_state_floats(oc, w->model.nparams));
    w->learn_t = learn_t;
    w->t_min = 0.0f;
    w->t_max = logf(100.0f);
    w->upd0 = 0;
    w->upd1 = w->model.ndense;
    const int V = mc->nviews, D = mc->dim;
    /* Views the sharded loss reads all rows of (loss_gathered_views): only those are all-gathered
     * and reduce-scattered; of the others each worker holds its own rows. */
    int need[HCL_MAX_VIEWS];
    loss_gathered_views(lc, need);
    for (int v = 0; v < V; v++) {
        w->gathered[v] = w->size == 1 || need[v];
        if (w->gathered[v]) w->gv[w->ngv++] = v;
    }
    if (sparse_init(&w->sparse, &w->model, comm, n, w->b_max, err) != 0) return -1;
    init_buffers(w);
    init_orders(w);
    init_injections(w);
    w->rsreq = MPI_REQUEST_NULL;
    open_ring(w);
    w->acts.poll = step_poll;
    w->acts.poll_arg = w;
    worker_select_exchange(w);
    if ((int64_t)V * n * D > INT32_MAX || w->loss.npairs * n > INT32_MAX)
        return hcl_err(err, "batch-size: %lld rows x %d views x %d dims (or x %lld loss pairs) exceeds one "
                       "MPI message", (long long)n, V, D, (long long)w->loss.npairs);
    return 0;
}

/* Activations of encoder v for R rows, as model_acts_init sizes them (floats). */
static double acts_floats(const hcl_model *m, int v, double R) {
    const hcl_encoder *e = &m->enc[v];
    const hcl_encoder_spec *s = &m->cfg.spec[v];
    const int ln = m->cfg.layernorm, dim = m->cfg.dim;
    double f = R + R * dim;   /* norm, z */
    if (e->kind != HCL_ENC_MLP) f += 2 * R * e->front;   /* front, dfront */
    if (e->kind == HCL_ENC_CONV) f += conv_net_act_floats((int)R, s->img_h, s->img_w, s->img_c, s->chans, s->nconv);
    int wmax = e->in[0];
    for (int k = 0; k < e->nlayers; k++) {
        wmax = e->out[k] > wmax ? e->out[k] : wmax;
        f += R * e->out[k] * (k < e->nlayers - 1 ? (ln ? 3.0 : 2.0) : 1.0) + (ln && k < e->nlayers - 1 ? 2 * R : 0);
        if (matmul_precision() == HCL_PRECISION_BF16) f += R * e->in[k] / 2;
    }
    return f + 2 * R * wmax + (matmul_precision() == HCL_PRECISION_BF16 ? R * wmax / 2 : 0);
}

int worker_memory(memlimit_need *need, const hcl_setup *su, int W, int snapshot, char *err) {
    const hcl_model_config *mc = &su->mc;
    const hcl_loss_config *lc = &su->lc;
    const int64_t n = su->batch;
    hcl_model m;
    if (model_layout(&m, mc, err) != 0) return -1;
    const double np = (double)m.nparams, D = mc->dim, b = (double)batch_share_max(n, W, su->balance);
    const double R = b < HCL_MICRO_ROWS ? b : HCL_MICRO_ROWS;
    memlimit_add(need, "parameters and gradients", 8 * np, 8 * np);
    const int64_t ns = optim_state_floats(&su->oc, m.nparams);
    memlimit_add(need, "optimizer", 4.0 * (double)ns, 4.0 * (double)ns);
    if (snapshot) {
        const double snap = 4.0 * (double)batch_snapshot_floats(m.nparams, ns);
        memlimit_add(need, "snapshot", snap, snap);
    }
    double acts = 0;
    for (int v = 0; v < mc->nviews; v++) acts += 4 * acts_floats(&m, v, R);
    memlimit_add(need, "activations", acts, acts);
    const double loss = loss_ctx_bytes(lc, (int64_t)b, n, (size_t)su->loss_memory << 20);
    memlimit_add(need, "loss", loss, loss);
    int gathered[HCL_MAX_VIEWS], G = 0;
    loss_gathered_views(lc, gathered);
    double x = 0;   /* init_buffers: zall, dzall, the packed buffers, colmax, rsbuf */
    for (int v = 0; v < mc->nviews; v++) {
        G += W == 1 || gathered[v];
        x += 2 * D * (W == 1 || gathered[v] ? (double)n : b);
    }
    const int packed = G * n * D * 4 <= HCL_PACKED_MAX_BYTES;
    if (packed) x += 2 * G * D * (b + (double)n) + W * b * G * D;   /* + rsin */
    if (W > 1) x += 2 * (np / W + (double)HCL_BUCKET_FLOATS);        /* the ring's staging */
    if (W > 1 && su->comm_bf16)   /* worker_comm_bf16's buffers, in floats */
        x += packed ? G * D * (b + 2.0 * n) / 2 : (G * n * D + (W + 1.0) * HCL_RS_FLOATS / W) / 2;
    x += (double)(loss_pair_count(lc) > 0 ? loss_pair_count(lc) : 1) * n + HCL_RS_FLOATS;
    memlimit_add(need, "exchange", 4 * x, 4 * x);
    if (W > 1)   /* worker_share_memory: every other worker's segment (its gradients) mapped here */
        memlimit_add(need, "shared segments", (W - 1) * 4 * np, 0.0);
    return 0;
}

void worker_select_exchange(hcl_worker *w) {
    w->xch = w->size == 1 ? exchange_solo
           : w->packed    ? (w->bf16 ? exchange_mpi_packed_bf16 : exchange_mpi_packed)
                          : (w->bf16 ? exchange_mpi_views_bf16 : exchange_mpi_views);
    if (w->seg) exchange_shm_apply(w, &w->xch);
}

int worker_share_memory(hcl_worker *w) {
    int on = exchange_shm_init(w);
    worker_select_exchange(w);
    return on;
}

int worker_comm_bf16(hcl_worker *w) {
    if (w->size == 1 || w->seg) return 0;
    w->bf16 = 1;
    const int64_t G = w->ngv, D = w->model.cfg.dim;
    if (w->packed) {
        w->zpack16 = hcl_calloc((size_t)(G * w->b_max * D + 1), sizeof(uint16_t));
        w->zgath16 = hcl_calloc((size_t)(G * w->n * D + 1), sizeof(uint16_t));
        w->dzpack16 = hcl_calloc((size_t)(G * w->n * D + 1), sizeof(uint16_t));
    } else {
        w->z16 = hcl_calloc((size_t)(G * w->n * D + 1), sizeof(uint16_t));
        w->rs16 = hcl_calloc((size_t)((w->size + 1) * w->rs_rows * D), sizeof(uint16_t));
    }
    open_ring(w);
    worker_select_exchange(w);
    return 1;
}

void worker_free(hcl_worker *w) {
    ring_close(w->ring);
    sparse_free(w->sparse);
    free(w->zpack16);
    free(w->zgath16);
    free(w->dzpack16);
    free(w->rsin);
    free(w->rsreqs);
    free(w->z16);
    free(w->rs16);
    exchange_shm_free(w);   /* the segments go; every field that pointed into them is NULL */
    model_acts_free(&w->acts, &w->model);
    model_free(&w->model);
    loss_ctx_free(&w->loss);
    free(w->opt_state);
    free(w->zpack);
    free(w->zgath);
    free(w->dzpack);
    free(w->dzown);
    for (int v = 0; v < w->model.cfg.nviews; v++) {
        free(w->zall[v]);
        free(w->dzall[v]);
    }
    free(w->colmax);
    free(w->counts);
    free(w->displs);
    free(w->vcounts);
    free(w->rsbuf);
    free(w->rscounts);
    free(w->vdispls);
    free(w->r0s);
    free(w->bs);
    free(w->scal);
    free(w->busy);
    memset(w, 0, sizeof *w);
}

float worker_logit_scale(const hcl_worker *w) {
    return expf(w->model.params[w->model.logit_t]);
}

/* One step's batch, what the phases pass on, and its clock: t[0] start, t[1] encoded, t[2]
 * gathered, t[3] loss done, t[4] reduce-scatter started, t[5] backward done, t[6] reduced. */
typedef struct {
    const hcl_batch_header *h;
    const uint8_t *buf;
    hcl_batch_layout lay;
    int64_t widths[HCL_MAX_VIEWS];
    int64_t n, b, r0;
    int train;
    int64_t first[HCL_MAX_VIEWS];      /* row of zall[v] that holds batch row 0 .. (0 or -r0) */
    const float *dz[HCL_MAX_VIEWS];    /* (b, D) the summed gradient of own rows, per view */
    hcl_loss_result lr;
    int ns;                            /* loss scalars in w->scal */
    double busy;                       /* compute seconds, without the exchanges' waits */
    double t[7];
} step_ctx;

/* The batch's parts (batch.h; its header checked by batch_header_check) and every worker's
 * rows; the step's counters start at zero. */
static void step_read(hcl_worker *w, const uint8_t *buf, step_ctx *s) {
    const hcl_model *m = &w->model;
    const int V = m->cfg.nviews;
    s->h = (const hcl_batch_header *)buf;
    s->buf = buf;
    s->train = (s->h->flags & HCL_BATCH_TRAIN) != 0;
    s->n = s->h->n;
    s->b = s->h->b;
    s->r0 = s->h->r0;
    for (int v = 0; v < V; v++) s->widths[v] = m->cfg.in_width[v];
    batch_layout(&s->lay, s->n, s->b, w->size, V, s->widths);
    const int64_t *split = (const int64_t *)(buf + s->lay.split);
    for (int r = 0; r < w->size; r++) {
        w->r0s[r] = split[r];
        w->bs[r] = split[r + 1] - split[r];
    }
    /* the rows of zall[v] are the batch's (N, D) for a gathered view, own (b, D) for another */
    for (int v = 0; v < V; v++) s->first[v] = w->gathered[v] ? 0 : s->r0;
    w->t_colreduce = w->t_rswait = w->t_rssum = 0.0;
    w->col_off = 0;
    w->norm2 = 0.0;
}

/* The exchanges' waits for the other workers, told to the watchdog (watchdog.h): one that lasts
 * --worker-timeout means a lost worker or network; the computing between them never counts. */
static void peers_wait(const step_ctx *s, const char *what) {
    watchdog_wait(HCL_WAIT_PEERS, s->h->step, what);
}

/* The loss's progress (loss.h) to the watchdog's messages. */
static void loss_progress(void *arg, double done) {
    hcl_worker *w = arg;
    watchdog_progress(w->step_now, "loss", done);
    step_progress(w);
}

/* The loss's column reduce (loss.h) as a wait on the other workers. */
static void column_reduce_watched(void *arg, float *colmax, double *colsum, int64_t n) {
    hcl_worker *w = arg;
    watchdog_wait(HCL_WAIT_PEERS, w->step_now, "column reduce");
    w->xch.column_reduce(arg, colmax, colsum, n);
    watchdog_busy();
}

/* The tables' rows this step's own rows use (sparse.h). */
static void step_sparse_begin(hcl_worker *w, const step_ctx *s) {
    const float *x[HCL_MAX_VIEWS];
    for (int v = 0; v < w->model.cfg.nviews; v++) x[v] = (const float *)(s->buf + s->lay.view[v]);
    sparse_begin(w->sparse, &w->model, x, s->b);
}

/* 1. Encode own rows, micro-batch by micro-batch, into the own rows of zall. The gathered views
 * first: 2. their all-gather starts before the other views are encoded (the row view of a full
 * graph or of CLIP), so a worker that is ahead computes while the one behind catches up
 * instead of waiting for it. */
static void step_encode(hcl_worker *w, const step_ctx *s) {
    hcl_model *m = &w->model;
    const int V = m->cfg.nviews, D = m->cfg.dim;
    const int64_t mb = w->micro, b = s->b, r0 = s->r0;
    for (int k = 0; k <= V; k++) {
        if (k == w->ngv) w->xch.allgather_start(w, r0, b);
        if (k == V) break;
        const int v = w->enc_order[k];
        const float *x = (const float *)(s->buf + s->lay.view[v]);
        for (int64_t c = 0; c < b; c += mb) {
            int64_t rows = b - c < mb ? b - c : mb;
            const float *z = model_encode(m, &w->acts, v, x + c * s->widths[v], (int)rows);
            memcpy(w->zall[v] + (r0 - s->first[v] + c) * D, z, sizeof(float) * (size_t)rows * D);
        }
    }
    if (w->inject_slow_us) {
        long long ns = 1000LL * w->inject_slow_us * b;
        struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
        nanosleep(&ts, NULL);
    }
}

/* 3. Loss of own rows against all columns; gradient for all N rows of every gathered view, for
 * the own rows of the others (TRAIN), with the columns' statistics reduced over the workers. */
static void step_loss(hcl_worker *w, step_ctx *s) {
    hcl_model *m = &w->model;
    const int V = m->cfg.nviews, D = m->cfg.dim;
    hcl_loss_input in = {0};
    in.n = s->n;
    in.r0 = s->r0;
    in.b = s->b;
    for (int v = 0; v < V; v++) {
        in.z[v] = w->zall[v];
        in.z_first[v] = s->first[v];
    }
    in.mask = s->buf + s->lay.mask;
    in.colreduce = w->xch.column_reduce ? column_reduce_watched : NULL;
    in.colreduce_arg = w;
    in.progress = loss_progress;
    in.progress_arg = w;
    w->step_now = s->h->step;
    watchdog_progress(s->h->step, "loss", -1.0);   /* a fraction from its first tile on */
    in.labels = s->h->has_labels ? (const int32_t *)(s->buf + s->lay.labels) : NULL;
    in.t = m->params[m->logit_t];
    if (m->head_w >= 0) {
        in.head_w = m->params + m->head_w;
        in.head_b = m->params + m->head_b;
    }
    if (s->train) {
        for (int v = 0; v < V; v++)
            memset(w->dzall[v], 0, sizeof(float) * (size_t)(w->gathered[v] ? s->n : s->b) * D);
        loss_forward_backward(&w->loss, &in, w->dzall,
                              m->head_w >= 0 ? m->grads + m->head_w : NULL,
                              m->head_w >= 0 ? m->grads + m->head_b : NULL, &s->lr);
        if (w->learn_t) m->grads[m->logit_t] += (float)s->lr.dt;
    } else {
        loss_forward_backward(&w->loss, &in, NULL, NULL, NULL, &s->lr);
    }
}

/* 4. Reduce-scatter of the gathered views: every worker gets the summed gradient of its own
 * rows. dz[v] points at it, (b, D); a view not gathered has only own rows' gradient, complete
 * here. */
static void step_reduce_scatter(hcl_worker *w, step_ctx *s) {
    for (int v = 0; v < w->model.cfg.nviews; v++) s->dz[v] = w->dzall[v];
    w->xch.reduce_scatter_start(w, s->r0, s->b, s->dz);
}

/* 5. Backward through each encoder in bwd_order: first those of views not gathered, whose
 * gradient is complete here, while the reduce-scatter runs (finished before the first gathered
 * view); then the others. In each group the largest first: 6. its gradient slice is
 * all-reduced while the next encoder's backward runs, so the one left to wait for at the end
 * is the smallest. With more own rows than one micro-batch, each micro-batch's forward is run
 * again right before its backward. */
static void step_backward(hcl_worker *w, const step_ctx *s) {
    hcl_model *m = &w->model;
    const int V = m->cfg.nviews, D = m->cfg.dim;
    const int64_t mb = w->micro, b = s->b;
    int scattered = 0;
    for (int k = 0; k < V; k++) {
        int v = w->bwd_order[k];
        if (w->gathered[v] && !scattered) {
            peers_wait(s, "reduce-scatter");
            w->xch.reduce_scatter_finish(w, s->r0, b);
            watchdog_busy();
            scattered = 1;
        }
        const float *x = (const float *)(s->buf + s->lay.view[v]);
        for (int64_t c = 0; c < b; c += mb) {
            int64_t rows = b - c < mb ? b - c : mb;
            w->bwd_last = 0;
            if (b > mb) model_encode(m, &w->acts, v, x + c * s->widths[v], (int)rows);
            w->bwd_last = c + mb >= b;   /* step_poll: each layer's sum starts after its backward */
            model_encode_backward(m, &w->acts, v, x + c * s->widths[v], s->dz[v] + c * D, (int)rows, c == 0);
        }
        w->bwd_last = 0;
        if (b == 0 && s->h->step == w->inject_nan_step) m->grads[m->enc[v].param_begin] = NAN;
        w->xch.grad_reduce_encoder(w, v);   /* what the layers have not started (no own rows) */
    }
}

/* Scalars of the loss packed for one all-reduce: loss, supcon, ce, pair losses (i < j). */
static int pack_scalars(double *s, const hcl_loss_result *r, int V) {
    int k = 0;
    s[k++] = r->loss;
    s[k++] = r->supcon;
    s[k++] = r->ce;
    for (int i = 0; i < V; i++)
        for (int j = i + 1; j < V; j++) s[k++] = r->pair_loss[i][j];
    return k;
}

/* 6. The loss's scalars, every worker's busy time (its compute without the exchanges' waits)
 * and the slices' squared gradient norms (ZeRO) summed over the workers in one all-reduce; the
 * gradient all-reduce complete. */
static void step_reduce(hcl_worker *w, step_ctx *s) {
    const double *t = s->t;
    double *scal = w->scal;
    const int ns = pack_scalars(scal, &s->lr, w->model.cfg.nviews);
    s->ns = ns;
    s->busy = (t[1] - t[0]) + (t[3] - t[2] - w->t_colreduce) + (t[5] - t[4] - w->t_rswait);
    for (int r = 0; r < w->size; r++) scal[ns + r] = r == w->rank ? s->busy : 0.0;
    scal[ns + w->size] = w->norm2;
    peers_wait(s, "scalar all-reduce");
    w->xch.reduce_finish(w, scal, ns + w->size + 1);
    watchdog_busy();
    memcpy(w->busy, scal + ns, sizeof(double) * (size_t)w->size);
    w->norm2 = scal[ns + w->size];
}

/* The global scalars and the phases' times into res. */
static void step_result(hcl_worker *w, const step_ctx *s, hcl_step_result *res) {
    const int V = w->model.cfg.nviews;
    const double *t = s->t, *scal = w->scal;
    memset(res, 0, sizeof *res);
    res->step = s->h->step;
    res->flags = s->h->flags;
    int k = 0;
    res->loss = scal[k++];
    res->supcon = scal[k++];
    res->ce = scal[k++];
    for (int i = 0; i < V; i++)
        for (int j = i + 1; j < V; j++) {
            res->pair_loss[i][j] = scal[k++];
            res->pair_used[i][j] = s->lr.pair_used[i][j];
        }
    res->lr = s->h->lr;
    /* after an update worker_update reads it (with zero another worker may be writing it now) */
    if (!s->train) res->logit_scale = worker_logit_scale(w);
    LOG_DEBUG("step %lld phases (ms): encode %.2f all-gather %.2f loss %.2f (column reduces %.2f) "
              "reduce-scatter %.2f backward %.2f all-reduce wait %.2f", (long long)s->h->step,
              (t[1] - t[0]) * 1e3, (t[2] - t[1]) * 1e3, (t[3] - t[2]) * 1e3, w->t_colreduce * 1e3,
              (t[4] - t[3] + w->t_rswait + w->t_rssum) * 1e3, (t[5] - t[4] - w->t_rswait - w->t_rssum) * 1e3,
              (t[6] - t[5]) * 1e3);
    res->t_allgather = t[2] - t[1];
    res->t_reduce_scatter = t[4] - t[3] + w->t_rswait;
    res->t_allreduce = (t[6] - t[5]) + w->t_colreduce;
    res->t_compute = s->busy;
}

void worker_forward_backward(hcl_worker *w, const uint8_t *buf, hcl_step_result *res) {
    step_ctx s;
    step_read(w, buf, &s);
    watchdog_progress(s.h->step, "encode", -1.0);
    s.t[0] = hcl_now();
    /* the encoders' weights' gradients are written by the first micro-batch's backward: with no
     * own rows (an adaptive share of 0) there is none, and they are cleared here */
    if (s.train) {
        if (s.b > 0) model_zero_grad_but_weights(&w->model);
        else model_zero_grad(&w->model);
        if (w->sparse) step_sparse_begin(w, &s);
    }
    step_encode(w, &s);                     /* 1. encode, 2. all-gather started */
    s.t[1] = hcl_now();
    peers_wait(&s, "all-gather");
    w->xch.allgather_finish(w);             /* 2. all-gather */
    watchdog_busy();
    s.t[2] = hcl_now();
    step_loss(w, &s);                       /* 3. loss, the column reduces inside */
    s.t[3] = s.t[4] = s.t[5] = hcl_now();
    if (s.train) {
        step_reduce_scatter(w, &s);         /* 4. reduce-scatter started */
        watchdog_progress(s.h->step, "backward", -1.0);
        s.t[4] = hcl_now();
        step_backward(w, &s);               /* 5. backward, 4 finished, 6 started per encoder */
        if (w->sparse) {                    /* 6. the tables' rows (sparse.h) */
            peers_wait(&s, "table rows exchange");
            sparse_exchange(w->sparse, &w->model);
            watchdog_busy();
        }
        s.t[5] = hcl_now();
        peers_wait(&s, "gradient all-reduce");
        w->xch.grad_reduce_rest(w);         /* 6. the rest of the gradient all-reduce */
        watchdog_busy();
    }
    step_reduce(w, &s);                     /* 6. scalars summed, gradients complete */
    s.t[6] = hcl_now();
    step_result(w, &s, res);
}

/* 7. The update. Same decision and same update on every replica: the loss and gradients are
 * global. With zero the replica is one shared copy, each worker updating its slice
 * [upd0, upd1) from its sum of the gradients there; the norm is then the all-reduced sum of the
 * slices' squares. */
void worker_update(hcl_worker *w, hcl_step_result *res) {
    hcl_model *m = &w->model;
    double t0 = hcl_now();
    const int64_t lo = w->upd0, hi = w->upd1;
    watchdog_progress(res->step, "update", -1.0);
    double norm = w->xch.grad_norm(w);
    if (w->sparse) norm = sqrt(norm * norm + sparse_sum_squares(w->sparse));
    res->grad_norm = norm;
    if (!isfinite(res->loss) || !isfinite(norm)) {
        res->skipped = 1;
        w->skipped++;
    } else {
        if (w->opt.clip_norm > 0) optim_clip(m->grads + lo, hi - lo, norm, w->opt.clip_norm);
        if (w->sparse && w->opt.clip_norm > 0) sparse_clip(w->sparse, norm, w->opt.clip_norm);
        const int own_t = m->logit_t >= lo && m->logit_t < hi;
        float t_before = own_t ? m->params[m->logit_t] : 0.0f;
        w->updates++;
        optim_step_range(&w->opt, res->lr, w->updates, m->params, m->grads, w->opt_state, m->tensors,
                         m->ntensors, lo, hi);
        if (w->sparse)   /* one shared copy (zero): every W-th row of the union each */
            sparse_update(w->sparse, m, w->opt_state, &w->opt, res->lr, w->updates, w->zero ? w->rank : 0,
                          w->zero ? w->size : 1);
        float *t = &m->params[m->logit_t];
        if (own_t && !w->learn_t) *t = t_before;
        if (own_t && w->learn_t) *t = *t < w->t_min ? w->t_min : *t > w->t_max ? w->t_max : *t;
    }
    watchdog_wait(HCL_WAIT_PEERS, res->step, "parameter barrier");
    w->xch.params_written(w);   /* every slice updated before anyone reads the parameters */
    watchdog_busy();
    matmul_params_changed();    /* bf16 copies of the weights are made again (matmul.h) */
    res->logit_scale = worker_logit_scale(w);
    res->t_compute += hcl_now() - t0;
}

void worker_step(hcl_worker *w, const uint8_t *buf, hcl_step_result *res) {
    worker_forward_backward(w, buf, res);
    if (((const hcl_batch_header *)buf)->flags & HCL_BATCH_TRAIN) worker_update(w, res);
}

void worker_summed_grads(const hcl_worker *w, float *out) {
    w->xch.summed_grads(w, out);
    if (w->sparse) sparse_summed(w->sparse, &w->model, out);
}

uint32_t worker_param_checksum(const hcl_worker *w) {
    return hcl_crc32c(0, w->model.params, sizeof(float) * (size_t)w->model.nparams);
}

size_t worker_snapshot_floats(const hcl_worker *w) {
    return batch_snapshot_floats(w->model.nparams, optim_state_floats(&w->opt, w->model.nparams));
}

void worker_snapshot_pack(const hcl_worker *w, float *buf) {
    int64_t np = w->model.nparams, ns = optim_state_floats(&w->opt, np);
    memcpy(buf, w->model.params, sizeof(float) * (size_t)np);
    memcpy(buf + np, w->opt_state, sizeof(float) * (size_t)ns);
    int64_t counters[2] = {w->updates, w->skipped};
    memcpy(buf + np + ns, counters, sizeof counters);
}

void worker_snapshot_unpack(hcl_worker *w, const float *buf) {
    int64_t np = w->model.nparams, ns = optim_state_floats(&w->opt, np);
    if (!w->zero || w->rank == 0) {   /* with zero one shared copy, written once */
        memcpy(w->model.params, buf, sizeof(float) * (size_t)np);
        memcpy(w->opt_state, buf + np, sizeof(float) * (size_t)ns);
    }
    w->xch.params_written(w);
    matmul_params_changed();
    int64_t counters[2];
    memcpy(counters, buf + np + ns, sizeof counters);
    w->updates = counters[0];
    w->skipped = counters[1];
}
