/* transport: see transport.h. The MPI workers first, then the worker in this process. */
#include "transport.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels.h"
#include "log.h"
#include "matmul.h"
#include "step.h"
#include "telemetry.h"
#include "util.h"

/* What both keep per slot: the outbox and the job it carries. */
typedef struct {
    hcl_outbox box[HCL_BATCHES_IN_FLIGHT];
    uint32_t flags[HCL_BATCHES_IN_FLIGHT];
    int64_t step[HCL_BATCHES_IN_FLIGHT];
} slots;

static void slots_init(slots *s, int n, size_t stride) {
    for (int k = 0; k < HCL_BATCHES_IN_FLIGHT; k++) {
        s->box[k].buf = hcl_malloc(stride * (size_t)n);
        s->box[k].stride = stride;
        s->box[k].len = hcl_calloc((size_t)n, sizeof(size_t));
        s->box[k].n = n;
    }
}

static void slots_free(slots *s) {
    for (int k = 0; k < HCL_BATCHES_IN_FLIGHT; k++) {
        free(s->box[k].buf);
        free(s->box[k].len);
    }
}

/* ---- the workers on ranks 1..W -------------------------------------------------------------- */

typedef struct {
    hcl_transport t;
    slots s;
    MPI_Request *sreq[HCL_BATCHES_IN_FLIGHT];   /* (2 W) each slot's sends: the messages, then their headers */
    int64_t stall_step;         /* tests (HCL_INJECT_STALL=STEP): that step's headers are the last
                                 * thing sent (a transfer that stalls after its start) */
    int stalled;
    uint8_t *res_msg;           /* worker 0's result message (batch_result_bytes) */
    float *snap;
    size_t snap_floats;
    hcl_idle idle;
} mpi_transport;

/* 1 while some batch's sends are under way; testing them moves them on. */
static int sends_pending(mpi_transport *m) {
    int pending = 0;
    for (int s = 0; s < HCL_BATCHES_IN_FLIGHT && m->sreq[s]; s++) {   /* none yet: the resume's broadcast */
        int done;
        MPI_Testall(2 * m->t.workers, m->sreq[s], &done, MPI_STATUSES_IGNORE);
        pending |= !done;
    }
    return pending;
}

/* Wait for an MPI request without spinning: a few tests, then the idle hook between tests
 * (the control socket's poll: requests are answered while the workers compute). While batches
 * are being sent the hook comes back within a millisecond: a worker's receive of the next batch
 * (a rendezvous over TCP) answered half a step late put its rows on the wire during the
 * gradient all-reduce instead of during the encoders and the loss (docs/SCALING.md). */
static void mpi_wait(mpi_transport *m, MPI_Request *req) {
    int done = 0;
    for (int spins = 0;; spins++) {
        MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (done) return;
        if (spins < 50) continue;
        m->idle.fn(m->idle.ctx, sends_pending(m));
    }
}

static void mpi_wait_sends(mpi_transport *m, int slot) {
    for (int w = 0; w < 2 * m->t.workers; w++)
        if (m->sreq[slot][w] != MPI_REQUEST_NULL) mpi_wait(m, &m->sreq[slot][w]);
}

static hcl_outbox *mpi_outbox(hcl_transport *t, int slot) {
    mpi_transport *m = (mpi_transport *)t;
    mpi_wait_sends(m, slot);
    return &m->s.box[slot];
}

static void mpi_submit(hcl_transport *t, int slot, uint32_t flags, int64_t step) {
    mpi_transport *m = (mpi_transport *)t;
    const hcl_outbox *b = &m->s.box[slot];
    m->s.flags[slot] = flags;
    m->s.step[slot] = step;
    for (int w = 0; w < b->n && !m->stalled; w++) {
        const uint8_t *msg = b->buf + (size_t)w * b->stride;
        MPI_Isend(msg, (int)sizeof(hcl_batch_header), MPI_BYTE, w + 1, HCL_TAG_BATCH_HEAD, MPI_COMM_WORLD,
                  &m->sreq[slot][t->workers + w]);
        if (step == m->stall_step) continue;   /* the header went, the rest never will */
        MPI_Isend(msg, (int)b->len[w], MPI_BYTE, w + 1, HCL_TAG_BATCH, MPI_COMM_WORLD, &m->sreq[slot][w]);
    }
    if (step == m->stall_step) m->stalled = 1;
}

static const double *mpi_await(hcl_transport *t, int slot, hcl_step_result *res, double *done) {
    mpi_transport *m = (mpi_transport *)t;
    const size_t bytes = batch_result_bytes(t->workers);
    MPI_Request req;
    MPI_Irecv(m->res_msg, (int)bytes, MPI_BYTE, 1, HCL_TAG_RESULT, MPI_COMM_WORLD, &req);
    mpi_wait(m, &req);
    *done = hcl_now();
    memcpy(res, m->res_msg, sizeof *res);
    HCL_CHECK(res->step == m->s.step[slot] && res->flags == m->s.flags[slot],
              "result of step %lld (flags %u) arrived for step %lld (flags %u)", (long long)res->step,
              res->flags, (long long)m->s.step[slot], m->s.flags[slot]);
    return (const double *)(m->res_msg + bytes - sizeof(double) * (size_t)t->workers);
}

static void mpi_snapshot(hcl_transport *t) {
    mpi_transport *m = (mpi_transport *)t;
    MPI_Request req;
    MPI_Irecv(m->snap, (int)m->snap_floats, MPI_FLOAT, 1, HCL_TAG_SNAPSHOT, MPI_COMM_WORLD, &req);
    mpi_wait(m, &req);
}

static void mpi_close(hcl_transport *t) {
    mpi_transport *m = (mpi_transport *)t;
    for (int s = 0; s < HCL_BATCHES_IN_FLIGHT; s++) {
        mpi_wait_sends(m, s);
        free(m->sreq[s]);
    }
    slots_free(&m->s);
    free(m->res_msg);
    free(m);
}

hcl_transport *transport_mpi_open(int workers, const hcl_setup *su, size_t stride, float *snap,
                                  size_t snap_floats, hcl_idle idle) {
    mpi_transport *m = hcl_calloc(1, sizeof *m);
    m->t = (hcl_transport){workers, HCL_BATCHES_IN_FLIGHT, mpi_outbox, mpi_submit, mpi_await, mpi_snapshot,
                           mpi_close};
    m->snap = snap;
    m->snap_floats = snap_floats;
    m->idle = idle;
    kernels_set_threads(1);   /* the coordinator does no BLAS work of its own */
    if (su->resume) {
        MPI_Request rq;
        MPI_Ibcast(snap, (int)snap_floats, MPI_FLOAT, 0, MPI_COMM_WORLD, &rq);
        mpi_wait(m, &rq);
    }
    slots_init(&m->s, workers, stride);
    m->res_msg = hcl_malloc(batch_result_bytes(workers));
    for (int s = 0; s < HCL_BATCHES_IN_FLIGHT; s++) {
        m->sreq[s] = hcl_malloc(sizeof(MPI_Request) * 2 * (size_t)workers);
        for (int w = 0; w < 2 * workers; w++) m->sreq[s][w] = MPI_REQUEST_NULL;
    }
    const char *stall = getenv("HCL_INJECT_STALL");
    m->stall_step = stall ? atoll(stall) : -1;
    return &m->t;
}

/* ---- the worker in this process ------------------------------------------------------------- */

typedef struct {
    hcl_transport t;
    slots s;
    hcl_worker w;
    hcl_step_result res[HCL_BATCHES_IN_FLIGHT];
    double done[HCL_BATCHES_IN_FLIGHT];  /* hcl_now() when each slot's job was computed */
    double busy;                /* no adaptive shares with one worker: never measured */
    float *snap;
    hcl_telemetry *tel;
} local_transport;

static hcl_outbox *local_outbox(hcl_transport *t, int slot) { return &((local_transport *)t)->s.box[slot]; }

/* The job is computed now: its result waits in the slot until awaited. */
static void local_submit(hcl_transport *t, int slot, uint32_t flags, int64_t step) {
    local_transport *l = (local_transport *)t;
    hcl_step_result *res = &l->res[slot];
    if (flags & (HCL_BATCH_TRAIN | HCL_BATCH_EVAL)) {
        worker_step(&l->w, l->s.box[slot].buf, res);
        l->done[slot] = hcl_now();
        if (l->tel) {
            hcl_telemetry_msg msg = {.step = res->step, .compute_s = res->t_compute, .allgather_s = res->t_allgather,
                                     .reduce_scatter_s = res->t_reduce_scatter, .allreduce_s = res->t_allreduce,
                                     .rss_bytes = telemetry_rss_bytes(), .in_step = -1, .phase_done = -1.0};
            telemetry_send(l->tel, &msg);
        }
        return;
    }
    memset(res, 0, sizeof *res);
    res->step = step;
    res->flags = flags;
    l->done[slot] = hcl_now();
    /* The worker runs ahead at submit time: its state is taken now, not when answered. */
    if (flags & HCL_BATCH_SNAPSHOT) worker_snapshot_pack(&l->w, l->snap);
}

static const double *local_await(hcl_transport *t, int slot, hcl_step_result *res, double *done) {
    local_transport *l = (local_transport *)t;
    *res = l->res[slot];
    *done = l->done[slot];
    return &l->busy;
}

static void local_snapshot(hcl_transport *t) { (void)t; /* packed into snap when submitted */ }

static void local_close(hcl_transport *t) {
    local_transport *l = (local_transport *)t;
    telemetry_close(l->tel);
    worker_free(&l->w);
    slots_free(&l->s);
    free(l);
}

hcl_transport *transport_local_open(const hcl_setup *su, size_t stride, float *snap, char *err) {
    local_transport *l = hcl_calloc(1, sizeof *l);
    /* One ahead: a SNAPSHOT job is answered from snap before the next one is packed. */
    l->t = (hcl_transport){0, 2, local_outbox, local_submit, local_await, local_snapshot, local_close};
    l->snap = snap;
    int threads = su->threads > 0 ? (int)su->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    matmul_set_engine((enum hcl_matmul_engine)su->matmul);
    matmul_set_precision((enum hcl_precision)su->precision);
    kernels_set_threads(threads);
    if (worker_init(&l->w, MPI_COMM_SELF, &su->mc, &su->lc, &su->oc, su->learn_t, (uint64_t)su->seed, su->batch,
                    0, err) != 0) {
        free(l);
        return NULL;
    }
    loss_ctx_keep(&l->w.loss, (size_t)su->loss_memory << 20);
    if (su->resume) worker_snapshot_unpack(&l->w, snap);
    if (su->tel_endpoint[0] && telemetry_open(&l->tel, su->tel_endpoint, su->tel_server_public,
                                              su->tel_client_secret, 0, err) != 0)
        LOG_WARN("telemetry of the in-process worker: %s", err);
    slots_init(&l->s, 1, stride);
    return &l->t;
}
