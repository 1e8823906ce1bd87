/* exchange_mpi: the workers' exchanges by MPI collectives (exchange.h), and the one-worker case
 * that exchanges nothing.
 *
 * Packed (small batches): the own rows of all G gathered views go into one packing buffer for
 * one MPI_Iallgatherv, and their gradients into one for one MPI_Ireduce_scatter, rank-major.
 * Per view (large batches): one MPI_Iallgatherv per view in place, and a blocking
 * MPI_Reduce_scatter per view in chunks of rs_rows rows of every worker through a staging
 * buffer, so neither it nor Open MPI's temporaries grow with N. Either way the gradient
 * all-reduce is one MPI_Iallreduce per encoder's slice, started right after its backward, and
 * one for the rest. */
#include "exchange.h"

#include <math.h>
#include <string.h>

#include "optim.h"
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

static void packed_reduce_scatter_start(hcl_worker *w, int64_t r0, int64_t b, const float **dz) {
    (void)r0;
    const int D = w->model.cfg.dim;
    for (int r = 0; r < w->size; r++)
        for (int g = 0; g < w->ngv; g++)
            memcpy(w->dzpack + w->displs[r] + (size_t)g * w->bs[r] * D, w->dzall[w->gv[g]] + w->r0s[r] * D,
                   sizeof(float) * (size_t)w->bs[r] * D);
    MPI_OK(MPI_Ireduce_scatter(w->dzpack, w->dzown, w->counts, MPI_FLOAT, MPI_SUM, w->comm, &w->rsreq));
    for (int g = 0; g < w->ngv; g++) dz[w->gv[g]] = w->dzown + (size_t)g * b * D;
}

static void packed_reduce_scatter_finish(hcl_worker *w, int64_t r0, int64_t b) {
    (void)r0, (void)b;
    double tw = hcl_now();
    MPI_OK(MPI_Wait(&w->rsreq, MPI_STATUS_IGNORE));
    double ts = hcl_now();
    w->t_rswait = ts - tw;
    w->t_rssum = hcl_now() - ts;
}

/* rs_rows rows of every worker's share at a time, through a staging buffer: the summed own
 * rows land in place, in the own rows of dzall[v]. Done when it returns. */
static void views_reduce_scatter_start(hcl_worker *w, int64_t r0, int64_t b, const float **dz) {
    (void)b;
    const int D = w->model.cfg.dim;
    int64_t nchunk = (w->b_max + w->rs_rows - 1) / w->rs_rows;
    for (int g = 0; g < w->ngv; g++) {
        int v = w->gv[g];
        for (int64_t k = 0; k < nchunk; k++) {
            size_t off = 0;
            for (int r = 0; r < w->size; r++) {
                int64_t c0 = k * w->rs_rows, rows = w->bs[r] - c0;
                rows = rows < 0 ? 0 : rows > w->rs_rows ? w->rs_rows : rows;
                memcpy(w->rsbuf + off, w->dzall[v] + (w->r0s[r] + c0) * D, sizeof(float) * (size_t)(rows * D));
                w->rscounts[r] = (int)(rows * D);
                off += (size_t)(rows * D);
            }
            MPI_OK(MPI_Reduce_scatter(w->rsbuf, w->dzall[v] + (r0 + k * w->rs_rows) * D, w->rscounts,
                                      MPI_FLOAT, MPI_SUM, w->comm));
        }
        dz[v] = w->dzall[v] + r0 * D;
    }
}

/* Encoder v's gradient slice, in place; each MPI_Testall moves the started ones on while the
 * next encoder's backward runs. */
static void mpi_grad_reduce_encoder(hcl_worker *w, int v) {
    const hcl_encoder *e = &w->model.enc[v];
    MPI_OK(MPI_Iallreduce(MPI_IN_PLACE, w->model.grads + e->param_begin, (int)(e->param_end - e->param_begin),
                          MPI_FLOAT, MPI_SUM, w->comm, &w->gradreq[w->ngradreq++]));
    int done;
    MPI_OK(MPI_Testall(w->ngradreq, w->gradreq, &done, MPI_STATUSES_IGNORE));
}

/* The parameters after the last encoder's: the head and the logit scale. */
static void mpi_grad_reduce_rest(hcl_worker *w) {
    hcl_model *m = &w->model;
    int64_t rest = m->enc[m->cfg.nviews - 1].param_end;
    MPI_OK(MPI_Iallreduce(MPI_IN_PLACE, m->grads + rest, (int)(m->nparams - rest), MPI_FLOAT, MPI_SUM,
                          w->comm, &w->gradreq[w->ngradreq++]));
}

static void mpi_reduce_finish(hcl_worker *w, double *s, int n) {
    MPI_OK(MPI_Allreduce(MPI_IN_PLACE, s, n, MPI_DOUBLE, MPI_SUM, w->comm));
    if (w->ngradreq) MPI_OK(MPI_Waitall(w->ngradreq, w->gradreq, MPI_STATUSES_IGNORE));
    w->ngradreq = 0;
}

/* Every worker holds the whole summed gradient. */
static double whole_grad_norm(const hcl_worker *w) {
    return optim_grad_norm(w->model.grads, w->model.nparams);
}

static void whole_summed_grads(const hcl_worker *w, float *out) {
    memcpy(out, w->model.grads, sizeof(float) * (size_t)w->model.nparams);
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
    .grad_reduce_rest = mpi_grad_reduce_rest,
    .reduce_finish = mpi_reduce_finish,
    .grad_norm = whole_grad_norm,
    .params_written = nothing,
    .summed_grads = whole_summed_grads,
};
