/* exchange_mpi: the workers' exchanges by MPI collectives (exchange.h), and the one-worker case
 * that exchanges nothing.
 *
 * Packed (small batches): the own rows of all G gathered views go into one packing buffer for
 * one MPI_Iallgatherv, and their gradients into one, rank-major, each worker's part sent to it
 * (p2p_reduce_scatter_post) and summed there in rank order.
 * Per view (large batches): one MPI_Iallgatherv per view in place, and a blocking
 * MPI_Reduce_scatter per view in chunks of rs_rows rows of every worker through a staging
 * buffer, so neither it nor Open MPI's temporaries grow with N. Either way the gradient
 * all-reduce is the ring's (ring.h): the buckets of an encoder's slice start right after its
 * backward, those of the rest after all backwards.
 *
 * With --comm-dtype bf16 (the *_bf16 functions) the embeddings cross the wire as bf16: each
 * worker rounds its own rows in place first, so every worker's loss reads the same (N, D); the
 * reduce-scatter of their gradients sends bf16 (summed in f32 where they arrive; per view MPI's
 * reduce-scatter adds bf16 pairs in f32, bf16_sum_op), and the ring sends bf16 with f32 sums. */
#include "exchange.h"

#include <math.h>
#include <string.h>

#include "bf16.h"
#include "optim.h"
#include "ring.h"
#include "step.h"

/* Every worker's rows this step in floats of the collectives: (b_r G D) of the packed ones,
 * (b_r D) of one view's. */
static void mpi_shares(hcl_worker *w) {
    const int D = w->model.cfg.dim;
    for (int r = 0; r < w->size; r++) {
        w->counts[r] = (int)(w->bs[r] * w->ngv * D);
        w->displs[r] = (int)(w->r0s[r] * w->ngv * D);
        w->vcounts[r] = (int)(w->bs[r] * D);
        w->vdispls[r] = (int)(w->r0s[r] * D);
    }
}

static void packed_allgather_start(hcl_worker *w, int64_t r0, int64_t b) {
    const int D = w->model.cfg.dim;
    mpi_shares(w);
    for (int g = 0; g < w->ngv; g++)
        memcpy(w->zpack + (size_t)g * b * D, w->zall[w->gv[g]] + r0 * D, sizeof(float) * (size_t)b * D);
    MPI_OK(MPI_Iallgatherv(w->zpack, w->counts[w->rank], MPI_FLOAT, w->zgath, w->counts, w->displs,
                           MPI_FLOAT, w->comm, &w->agreq[0]));
    w->nag = 1;
}

/* The other workers' rows, from the rank-major gathered buffer into each view's (N, D). */
static void packed_allgather_finish(hcl_worker *w) {
    const int D = w->model.cfg.dim;
    MPI_OK(MPI_Waitall(w->nag, w->agreq, MPI_STATUSES_IGNORE));
    w->nag = 0;
    for (int r = 0; r < w->size; r++)
        for (int g = 0; g < w->ngv; g++)
            if (r != w->rank)
                memcpy(w->zall[w->gv[g]] + w->r0s[r] * D, w->zgath + w->displs[r] + (size_t)g * w->bs[r] * D,
                       sizeof(float) * (size_t)w->bs[r] * D);
}

static void views_allgather_start(hcl_worker *w, int64_t r0, int64_t b) {
    (void)r0, (void)b;
    mpi_shares(w);
    for (int g = 0; g < w->ngv; g++)
        MPI_OK(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, w->zall[w->gv[g]], w->vcounts, w->vdispls,
                               MPI_FLOAT, w->comm, &w->agreq[g]));
    w->nag = w->ngv;
}

static void views_allgather_finish(hcl_worker *w) {
    MPI_OK(MPI_Waitall(w->nag, w->agreq, MPI_STATUSES_IGNORE));
    w->nag = 0;
}

/* The loss's column reduce (loss.h): the max of each column over the workers, then each
 * worker's sums of exps rescaled to it and summed: two all-reduces of n values (N a pair, all
 * pairs in one call when the loss can wait for them). */
static void mpi_column_reduce(void *arg, float *colmax, double *colsum, int64_t n) {
    hcl_worker *w = arg;
    double t0 = hcl_now();
    MPI_OK(MPI_Allreduce(colmax, w->colmax, (int)n, MPI_FLOAT, MPI_MAX, w->comm));
    for (int64_t j = 0; j < n; j++)
        colsum[j] = colmax[j] == -INFINITY ? 0.0 : colsum[j] * exp((double)colmax[j] - (double)w->colmax[j]);
    memcpy(colmax, w->colmax, sizeof(float) * (size_t)n);
    MPI_OK(MPI_Allreduce(MPI_IN_PLACE, colsum, (int)n, MPI_DOUBLE, MPI_SUM, w->comm));
    w->t_colreduce += hcl_now() - t0;
}

/* inout[i] = bf16(in[i] + inout[i]), the sum in f32: MPI's reduction of bf16 pairs. */
static void bf16_sum(void *in, void *inout, int *len, MPI_Datatype *type) {
    (void)type;
    const uint16_t *a = in;
    uint16_t *c = inout;
    for (int i = 0; i < *len; i++) c[i] = bf16_of(bf16_float(a[i]) + bf16_float(c[i]));
}

static MPI_Op bf16_sum_op(void) {
    static MPI_Op op = MPI_OP_NULL;
    if (op == MPI_OP_NULL) MPI_OK(MPI_Op_create(bf16_sum, 1, &op));
    return op;
}

/* The packed reduce-scatter as one message each way between every two workers: worker r's
 * rows of the gathered views' gradients (b_r G D, rank-major in dzpack, bf16 in dzpack16 with
 * wire16) go to r, and each worker sums the W contributions to its own rows in rank order at
 * finish. One round, moved on by step_poll's tests: Open MPI's MPI_Ireduce_scatter for two
 * workers went through one of them (a reduce, then a scatter), each stage waiting for that
 * worker's next MPI call, and kept the other waiting 6 ms a W1 step at 1 Gbit/s. */
static void p2p_reduce_scatter_post(hcl_worker *w, int wire16) {
    const int W = w->size, me = w->rank;
    const MPI_Datatype t = wire16 ? MPI_UINT16_T : MPI_FLOAT;
    const size_t esz = wire16 ? sizeof(uint16_t) : sizeof(float);
    const char *src = wire16 ? (const char *)w->dzpack16 : (const char *)w->dzpack;
    w->nrs = 0;
    for (int k = 1; k < W; k++) {
        const int to = (me + k) % W, from = (me + W - k) % W;
        MPI_OK(MPI_Irecv((char *)w->rsin + esz * (size_t)from * w->counts[me], w->counts[me], t, from,
                         HCL_TAG_RS, w->comm, &w->rsreqs[w->nrs++]));
        MPI_OK(MPI_Isend(src + esz * (size_t)w->displs[to], w->counts[to], t, to, HCL_TAG_RS, w->comm,
                         &w->rsreqs[w->nrs++]));
    }
}

/* dzown = the sum over the workers in rank order of their contributions to own rows (own: from
 * dzpack in f32; the others' from rsin, widened when they came as bf16). */
static void p2p_reduce_scatter_sum(hcl_worker *w, int wire16) {
    const int W = w->size, me = w->rank, n = w->counts[me];
    const float *own = w->dzpack + w->displs[me];
    float *out = w->dzown;
    for (int r = 0; r < W; r++) {
        if (r == me) {
            for (int i = 0; i < n; i++) out[i] = r == 0 ? own[i] : out[i] + own[i];
        } else if (wire16) {
            const uint16_t *in = (const uint16_t *)w->rsin + (size_t)r * n;
            for (int i = 0; i < n; i++) out[i] = r == 0 ? bf16_float(in[i]) : out[i] + bf16_float(in[i]);
        } else {
            const float *in = w->rsin + (size_t)r * n;
            for (int i = 0; i < n; i++) out[i] = r == 0 ? in[i] : out[i] + in[i];
        }
    }
}

/* Every worker's rows of dzall, rank-major, into dzpack (f32), or with wire16 the other workers'
 * into dzpack16 (own rows stay f32), and their messages posted. */
static void packed_rs_start(hcl_worker *w, int64_t b, const float **dz, int wire16) {
    const int D = w->model.cfg.dim;
    for (int r = 0; r < w->size; r++)
        for (int g = 0; g < w->ngv; g++) {
            const float *src = w->dzall[w->gv[g]] + w->r0s[r] * D;
            const size_t at = (size_t)w->displs[r] + (size_t)g * w->bs[r] * D;
            if (wire16 && r != w->rank) bf16_pack(w->dzpack16 + at, src, w->bs[r] * D);
            else memcpy(w->dzpack + at, src, sizeof(float) * (size_t)w->bs[r] * D);
        }
    p2p_reduce_scatter_post(w, wire16);
    for (int g = 0; g < w->ngv; g++) dz[w->gv[g]] = w->dzown + (size_t)g * b * D;
}

static void packed_rs_finish(hcl_worker *w, int wire16) {
    double tw = hcl_now();
    MPI_OK(MPI_Waitall(w->nrs, w->rsreqs, MPI_STATUSES_IGNORE));
    w->nrs = 0;
    double ts = hcl_now();
    p2p_reduce_scatter_sum(w, wire16);
    w->t_rswait = ts - tw;
    w->t_rssum = hcl_now() - ts;
}

static void packed_reduce_scatter_start(hcl_worker *w, int64_t r0, int64_t b, const float **dz) {
    (void)r0;
    packed_rs_start(w, b, dz, 0);
}

static void packed_reduce_scatter_finish(hcl_worker *w, int64_t r0, int64_t b) {
    (void)r0, (void)b;
    packed_rs_finish(w, 0);
}

static void packed16_reduce_scatter_start(hcl_worker *w, int64_t r0, int64_t b, const float **dz) {
    (void)r0;
    packed_rs_start(w, b, dz, 1);
}

static void packed16_reduce_scatter_finish(hcl_worker *w, int64_t r0, int64_t b) {
    (void)r0, (void)b;
    packed_rs_finish(w, 1);
}

/* rs_rows rows of every worker's share at a time, through a staging buffer (rsbuf; with wire16
 * rs16 in bf16, the sum by bf16_sum_op): the summed own rows land in place, in the own rows of
 * dzall[v]. Done when it returns. */
static void views_rs(hcl_worker *w, int64_t r0, const float **dz, int wire16) {
    const int D = w->model.cfg.dim;
    int64_t nchunk = (w->b_max + w->rs_rows - 1) / w->rs_rows;
    uint16_t *out16 = wire16 ? w->rs16 + (size_t)w->size * w->rs_rows * D : NULL;
    for (int g = 0; g < w->ngv; g++) {
        int v = w->gv[g];
        for (int64_t k = 0; k < nchunk; k++) {
            size_t off = 0;
            for (int r = 0; r < w->size; r++) {
                int64_t c0 = k * w->rs_rows, rows = w->bs[r] - c0;
                rows = rows < 0 ? 0 : rows > w->rs_rows ? w->rs_rows : rows;
                const float *src = w->dzall[v] + (w->r0s[r] + c0) * D;
                if (wire16) bf16_pack(w->rs16 + off, src, rows * D);
                else memcpy(w->rsbuf + off, src, sizeof(float) * (size_t)(rows * D));
                w->rscounts[r] = (int)(rows * D);
                off += (size_t)(rows * D);
            }
            float *own = w->dzall[v] + (r0 + k * w->rs_rows) * D;
            if (wire16) {
                MPI_OK(MPI_Reduce_scatter(w->rs16, out16, w->rscounts, MPI_UINT16_T, bf16_sum_op(), w->comm));
                bf16_unpack(own, out16, w->rscounts[w->rank]);
            } else {
                MPI_OK(MPI_Reduce_scatter(w->rsbuf, own, w->rscounts, MPI_FLOAT, MPI_SUM, w->comm));
            }
        }
        dz[v] = w->dzall[v] + r0 * D;
    }
}

static void views_reduce_scatter_start(hcl_worker *w, int64_t r0, int64_t b, const float **dz) {
    (void)b;
    views_rs(w, r0, dz, 0);
}

static void views16_reduce_scatter_start(hcl_worker *w, int64_t r0, int64_t b, const float **dz) {
    (void)b;
    views_rs(w, r0, dz, 1);
}

/* Layer k of encoder v, summed in place by the ring (ring.h); ring_poll moves it on while the
 * backward goes on (step.c calls it between layers). */
static void mpi_grad_reduce_layer(hcl_worker *w, int v, int k) {
    if (w->started[v] & (1u << k)) return;
    w->started[v] |= 1u << k;
    ring_start(w->ring, w->slice0[v] + k, w->model.grads);
}

/* Encoder v's layers not started yet, the last first (the backward's order); the step's
 * record of started layers is cleared with the last encoder's. */
static void mpi_grad_reduce_encoder(hcl_worker *w, int v) {
    for (int k = w->model.enc[v].nlayers - 1; k >= 0; k--) mpi_grad_reduce_layer(w, v, k);
    ring_poll(w->ring);
}

/* The parameters after the last encoder's: the head and the logit scale (the ring's last slice). */
static void mpi_grad_reduce_rest(hcl_worker *w) {
    const int V = w->model.cfg.nviews;
    ring_start(w->ring, w->slice0[V - 1] + w->model.enc[V - 1].nlayers, w->model.grads);
    memset(w->started, 0, sizeof w->started);
}

static void mpi_reduce_finish(hcl_worker *w, double *s, int n) {
    ring_wait(w->ring);
    MPI_OK(MPI_Allreduce(MPI_IN_PLACE, s, n, MPI_DOUBLE, MPI_SUM, w->comm));
}

/* ---- bf16 on the wire (--comm-dtype bf16) ---------------------------------------------------- */

/* Own rows of the gathered views rounded in place and packed as bf16, rank-major as in f32. */
static void packed16_allgather_start(hcl_worker *w, int64_t r0, int64_t b) {
    const int D = w->model.cfg.dim;
    mpi_shares(w);
    for (int g = 0; g < w->ngv; g++) {
        float *z = w->zall[w->gv[g]] + r0 * D;
        bf16_round(z, b * D);
        bf16_pack(w->zpack16 + (size_t)g * b * D, z, b * D);
    }
    MPI_OK(MPI_Iallgatherv(w->zpack16, w->counts[w->rank], MPI_UINT16_T, w->zgath16, w->counts, w->displs,
                           MPI_UINT16_T, w->comm, &w->agreq[0]));
    w->nag = 1;
}

static void packed16_allgather_finish(hcl_worker *w) {
    const int D = w->model.cfg.dim;
    MPI_OK(MPI_Waitall(w->nag, w->agreq, MPI_STATUSES_IGNORE));
    w->nag = 0;
    for (int r = 0; r < w->size; r++)
        for (int g = 0; g < w->ngv; g++)
            if (r != w->rank)
                bf16_unpack(w->zall[w->gv[g]] + w->r0s[r] * D, w->zgath16 + w->displs[r] + (size_t)g * w->bs[r] * D,
                            w->bs[r] * D);
}

/* Per view: each gathered view's (N, D) as bf16 in z16, gathered in place there. */
static void views16_allgather_start(hcl_worker *w, int64_t r0, int64_t b) {
    const int D = w->model.cfg.dim;
    mpi_shares(w);
    for (int g = 0; g < w->ngv; g++) {
        float *z = w->zall[w->gv[g]] + r0 * D;
        uint16_t *h = w->z16 + (size_t)g * w->n * D;
        bf16_round(z, b * D);
        bf16_pack(h + r0 * D, z, b * D);
        MPI_OK(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_UINT16_T, h, w->vcounts, w->vdispls, MPI_UINT16_T, w->comm,
                               &w->agreq[g]));
    }
    w->nag = w->ngv;
}

static void views16_allgather_finish(hcl_worker *w) {
    const int D = w->model.cfg.dim;
    MPI_OK(MPI_Waitall(w->nag, w->agreq, MPI_STATUSES_IGNORE));
    w->nag = 0;
    for (int g = 0; g < w->ngv; g++)
        for (int r = 0; r < w->size; r++)
            if (r != w->rank)
                bf16_unpack(w->zall[w->gv[g]] + w->r0s[r] * D, w->z16 + (size_t)g * w->n * D + w->r0s[r] * D,
                            w->bs[r] * D);
}

/* Every worker holds the whole summed gradient. */
static double whole_grad_norm(const hcl_worker *w) {
    return optim_grad_norm(w->model.grads, w->model.ndense);
}

static void whole_summed_grads(const hcl_worker *w, float *out) {
    memcpy(out, w->model.grads, sizeof(float) * (size_t)w->model.ndense);
}

/* What needs no exchange: one worker's, and each worker's own copy of the parameters. */
static void nothing(hcl_worker *w) { (void)w; }
static void nothing_rows(hcl_worker *w, int64_t r0, int64_t b) { (void)w, (void)r0, (void)b; }
static void nothing_dz(hcl_worker *w, int64_t r0, int64_t b, const float **dz) { (void)w, (void)r0, (void)b, (void)dz; }
static void nothing_view(hcl_worker *w, int v) { (void)w, (void)v; }
static void nothing_scalars(hcl_worker *w, double *s, int n) { (void)w, (void)s, (void)n; }

const hcl_exchange exchange_solo = {
    .allgather_start = nothing_rows,
    .allgather_finish = nothing,
    .column_reduce = NULL,
    .reduce_scatter_start = nothing_dz,
    .reduce_scatter_finish = nothing_rows,
    .grad_reduce_encoder = nothing_view,
    .grad_reduce_rest = nothing,
    .reduce_finish = nothing_scalars,
    .grad_norm = whole_grad_norm,
    .params_written = nothing,
    .summed_grads = whole_summed_grads,
};

const hcl_exchange exchange_mpi_packed = {
    .allgather_start = packed_allgather_start,
    .allgather_finish = packed_allgather_finish,
    .column_reduce = mpi_column_reduce,
    .reduce_scatter_start = packed_reduce_scatter_start,
    .reduce_scatter_finish = packed_reduce_scatter_finish,
    .grad_reduce_encoder = mpi_grad_reduce_encoder,
    .grad_reduce_layer = mpi_grad_reduce_layer,
    .grad_reduce_rest = mpi_grad_reduce_rest,
    .reduce_finish = mpi_reduce_finish,
    .grad_norm = whole_grad_norm,
    .params_written = nothing,
    .summed_grads = whole_summed_grads,
};

const hcl_exchange exchange_mpi_packed_bf16 = {
    .allgather_start = packed16_allgather_start,
    .allgather_finish = packed16_allgather_finish,
    .column_reduce = mpi_column_reduce,
    .reduce_scatter_start = packed16_reduce_scatter_start,
    .reduce_scatter_finish = packed16_reduce_scatter_finish,
    .grad_reduce_encoder = mpi_grad_reduce_encoder,
    .grad_reduce_layer = mpi_grad_reduce_layer,
    .grad_reduce_rest = mpi_grad_reduce_rest,
    .reduce_finish = mpi_reduce_finish,
    .grad_norm = whole_grad_norm,
    .params_written = nothing,
    .summed_grads = whole_summed_grads,
};

const hcl_exchange exchange_mpi_views_bf16 = {
    .allgather_start = views16_allgather_start,
    .allgather_finish = views16_allgather_finish,
    .column_reduce = mpi_column_reduce,
    .reduce_scatter_start = views16_reduce_scatter_start,
    .reduce_scatter_finish = nothing_rows,
    .grad_reduce_encoder = mpi_grad_reduce_encoder,
    .grad_reduce_layer = mpi_grad_reduce_layer,
    .grad_reduce_rest = mpi_grad_reduce_rest,
    .reduce_finish = mpi_reduce_finish,
    .grad_norm = whole_grad_norm,
    .params_written = nothing,
    .summed_grads = whole_summed_grads,
};

const hcl_exchange exchange_mpi_views = {
    .allgather_start = views_allgather_start,
    .allgather_finish = views_allgather_finish,
    .column_reduce = mpi_column_reduce,
    .reduce_scatter_start = views_reduce_scatter_start,
    .reduce_scatter_finish = nothing_rows,   /* the chunked reduce-scatter is done at start */
    .grad_reduce_encoder = mpi_grad_reduce_encoder,
    .grad_reduce_layer = mpi_grad_reduce_layer,
    .grad_reduce_rest = mpi_grad_reduce_rest,
    .reduce_finish = mpi_reduce_finish,
    .grad_norm = whole_grad_norm,
    .params_written = nothing,
    .summed_grads = whole_summed_grads,
};
