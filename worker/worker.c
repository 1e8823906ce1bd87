/* worker: the receive-step-report loop of ranks 1..N-1 (see worker.h). */
#include "worker.h"

#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "kernels.h"
#include "log.h"
#include "memlimit.h"
#include "matmul.h"
#include "step.h"
#include "telemetry.h"
#include "util.h"
#include "watchdog.h"

double worker_wait_polite(MPI_Request *req, MPI_Status *status) {
    double t0 = hcl_now();
    int done = 0;
    long sleep_ns = 20000;
    for (int spins = 0;; spins++) {
        MPI_Test(req, &done, status);
        if (done) break;
        if (spins < 50) continue;   /* a few quick polls: the common case is "almost there" */
        struct timespec ts = {0, sleep_ns};
        nanosleep(&ts, NULL);
        /* up to 1 ms while a step is due; after a second of silence (a paused job) 20 ms, after
         * three seconds 50 ms: a paused job costs well under 1% of a core per rank */
        if (sleep_ns < 1000000) sleep_ns *= 2;
        else if (sleep_ns < 20000000 && hcl_now() - t0 > 1.0) sleep_ns = 20000000;
        else if (sleep_ns < 50000000 && hcl_now() - t0 > 3.0) sleep_ns = 50000000;
    }
    return hcl_now() - t0;
}

void worker_ignore_signals(void) {
    signal(SIGUSR1, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
}

/* What the loop holds from its start to STOP: all of it made before the first batch. */
typedef struct {
    const hcl_setup *su;
    MPI_Comm workers;
    hcl_worker w;
    size_t snap_n;
    float *snap;                  /* the replica's state (worker_snapshot_floats) */
    uint64_t step_bytes;          /* what a step's collectives send, for the telemetry */
    int telemetry;                /* the watchdog sends telemetry */
    hcl_dataset dsets[2];         /* --data-plane direct: train and validation sets, nds of them */
    int nds;
    uint8_t *full;                /* --data-plane direct: the batch assembled from an index message */
    uint8_t *buf[2];              /* the batch being computed and the next, prefetched */
    hcl_batch_header head[2];     /* their headers, sent ahead of them (HCL_TAG_BATCH_HEAD) */
    MPI_Request hreq, breq;       /* the next batch's header and message */
    uint32_t *sums;               /* (W) every worker's parameter checksum */
    size_t res_bytes;
    uint8_t *sent;                /* worker 0: the result being sent, sreq */
    MPI_Request sreq;
} worker_loop;

static int default_threads(MPI_Comm workers) {
    /* The cores of this node divided among the workers on it (the coordinator sleeps). */
    MPI_Comm node;
    MPI_Comm_split_type(workers, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    int local;
    MPI_Comm_size(node, &local);
    MPI_Comm_free(&node);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int t = (int)(cores / local);
    return t < 1 ? 1 : t;
}

/* The replica: threads, init, shared memory when asked for, and with --resume rank 0's state. */
static void replica_open(worker_loop *L) {
    const hcl_setup *su = L->su;
    hcl_worker *w = &L->w;
    char err[HCL_ERR_MAX];
    int threads = su->threads > 0 ? su->threads : default_threads(L->workers);
    matmul_set_engine((enum hcl_matmul_engine)su->matmul);
    matmul_set_precision((enum hcl_precision)su->precision);
    kernels_set_threads(threads);
    if (worker_init(w, L->workers, &su->mc, &su->lc, &su->oc, su->learn_t, (uint64_t)su->seed,
                    su->batch, su->balance, err) != 0) {
        LOG_ERROR("%s", err);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    size_t kept = loss_ctx_keep(&w->loss, (size_t)su->loss_memory << 20);
    if (kept) LOG_DEBUG("the loss keeps its logits between its passes: %.0f MB (--loss-memory %lld)", kept / 1e6,
                        (long long)su->loss_memory);
    int shm = su->shm_grads && worker_share_memory(w);
    int bf16 = su->comm_bf16 && worker_comm_bf16(w);
    if (su->comm_bf16 && !bf16 && w->size > 1 && w->rank == 0)
        LOG_INFO("--comm-dtype bf16: the workers share one node and exchange in shared memory, which stays f32 "
                 "(--grad-allreduce mpi to send bf16 through MPI)");
    LOG_DEBUG("worker %d of %d: %d %s threads, %lld parameters, exchanges %s%s%s", w->rank, w->size, threads,
              matmul_engine_name(matmul_engine()), (long long)w->model.nparams,
              shm ? "in shared memory" : w->size > 1 ? "by MPI collectives" : "none (one worker)",
              bf16 ? ", bf16 on the wire" : "", w->ring && ring_hierarchical(w->ring) ? ", hierarchical" : "");
    L->snap_n = worker_snapshot_floats(w);
    L->snap = hcl_malloc(sizeof(float) * L->snap_n);
    if (su->resume) {
        MPI_Request rq;
        MPI_Ibcast(L->snap, (int)L->snap_n, MPI_FLOAT, 0, MPI_COMM_WORLD, &rq);
        worker_wait_polite(&rq, MPI_STATUS_IGNORE);
        worker_snapshot_unpack(w, L->snap);
    }
}

/* The telemetry socket, handed to the watchdog thread, which starts now. */
static void watchdog_open(worker_loop *L) {
    const hcl_setup *su = L->su;
    char err[HCL_ERR_MAX];
    hcl_telemetry *tel = NULL;
    if (su->tel_endpoint[0] &&
        telemetry_open(&tel, su->tel_endpoint, su->tel_server_public, su->tel_client_secret, L->w.rank, err) != 0)
        LOG_WARN("telemetry: %s (the coordinator will see this worker as silent)", err);
    L->telemetry = tel != NULL;
    /* 3 s of grace over the coordinator's limit: heartbeats come every second and it checks
     * every second, so when it is alive it names the lost worker before anyone gives up */
    watchdog_start((su->worker_timeout > 0 ? su->worker_timeout : 60) + 3, tel);
}

/* Bytes a step's collectives send per worker: the all-gather and the reduce-scatter of the
 * N x G x D embeddings of the G gathered views send (W-1)/W of their size, the ring all-reduces
 * twice that: of the parameter gradient, and per pair of the loss's N column maxes (float) and
 * sums (double) (docs/SCALING.md): the model of the MPI collectives, also reported when the
 * workers exchange through shared memory instead; with bf16 on the wire (w->bf16) the
 * embeddings and gradients take 2 bytes a value. */
static uint64_t step_bytes_model(const hcl_worker *w, const hcl_setup *su) {
    if (w->size == 1) return 0;
    const double v = w->bf16 ? 2.0 : 4.0;
    return (uint64_t)((double)(w->size - 1) / w->size *
                      (v * 2.0 * su->batch * w->ngv * su->mc.dim + 2.0 * v * w->model.ndense +
                       2.0 * 12.0 * su->batch * loss_pair_count(&su->lc)));
}

/* --data-plane direct: this worker reads its rows from the dataset files itself; they must
 * hold the model's views. Before the replica, so that memory_check sees them mapped. */
static void direct_open(worker_loop *L) {
    const hcl_setup *su = L->su;
    char err[HCL_ERR_MAX];
    const char *dirs[2] = {su->data_dir, su->val_dir};
    for (int k = 0; k < 2 && dirs[k][0]; k++, L->nds++) {
        if (dataset_open(&L->dsets[k], dirs[k], err) != 0) {
            LOG_ERROR("--data-plane direct: %s", err);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        if (dataset_check_views(&L->dsets[k], su->mc.nviews, su->mc.names, su->mc.in_width, NULL, NULL,
                                "--data-plane direct (on this worker's host)", err) != 0) {
            LOG_ERROR("%s", err);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
    }
    int64_t wd64[HCL_MAX_VIEWS];
    for (int v = 0; v < su->mc.nviews; v++) wd64[v] = su->mc.in_width[v];
    hcl_batch_layout fl;
    int W;
    MPI_Comm_size(L->workers, &W);
    L->full = hcl_malloc(batch_layout(&fl, su->batch, batch_share_max(su->batch, W, su->balance), W, su->mc.nviews,
                                      wd64));
}

/* Before the replica is made: what this worker will take against its process's limits
 * (memlimit.h); too little ends the job with one line naming what is needed and the limit. */
static void memory_check(worker_loop *L) {
    const hcl_setup *su = L->su;
    char err[HCL_ERR_MAX], who[32];
    int W, rank;
    MPI_Comm_size(L->workers, &W);
    MPI_Comm_rank(L->workers, &rank);
    snprintf(who, sizeof who, "worker %d", rank);
    memlimit_need need = {0};
    if (worker_memory(&need, su, W, 1, err) != 0) {
        LOG_ERROR("%s", err);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    memlimit_add(&need, "batches", 2.0 * (double)su->max_batch_bytes, 2.0 * (double)su->max_batch_bytes);
    const int threads = su->threads > 0 ? su->threads : default_threads(L->workers);
    kernels_memory(&need, (enum hcl_matmul_engine)su->matmul, threads, su->matmul == HCL_MATMUL_OPENBLAS);
    memlimit_add(&need, "thread stacks", 3 * memlimit_thread_stack(), 0.0);   /* watchdog, telemetry's ZeroMQ */
    memlimit_state s;
    memlimit_read(&s);
    double as = s.vm_size;
    for (int i = 0; i < need.n; i++) as += need.part[i].bytes;
    LOG_DEBUG("memory: %.0f MB of address space expected (%.0f mapped now)", as / MEMLIMIT_MB, s.vm_size / MEMLIMIT_MB);
    if (memlimit_check(&need, &s, who, err) != 0) {
        fprintf(stderr, "hcl-train: %s\n", err);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    if (su->matmul == HCL_MATMUL_OPENBLAS) kernels_blas_reserve();
}

/* Every replica's parameter checksum must be worker 0's: else abort, naming the step. */
static void replicas_compare(worker_loop *L, int64_t step) {
    const hcl_worker *w = &L->w;
    uint32_t mine = worker_param_checksum(w);
    watchdog_wait(HCL_WAIT_PEERS, step, "replica check");
    MPI_Allgather(&mine, 1, MPI_UINT32_T, L->sums, 1, MPI_UINT32_T, L->workers);
    watchdog_busy();
    for (int r = 0; r < w->size; r++)
        if (L->sums[r] != L->sums[0]) {
            LOG_ERROR("replicas diverged after step %lld: worker %d parameter checksum %08x, "
                      "worker 0 has %08x", (long long)step + 1, r, L->sums[r], L->sums[0]);
            MPI_Abort(MPI_COMM_WORLD, 3);
        }
}

/* The step of a TRAIN or EVAL batch (assembled from the dataset files with --data-plane direct);
 * of a header alone (PING, SNAPSHOT, CHECK) an empty result. */
static void batch_run(worker_loop *L, const uint8_t *msg, hcl_step_result *res) {
    const hcl_batch_header *h = (const hcl_batch_header *)msg;
    if (h->flags & (HCL_BATCH_TRAIN | HCL_BATCH_EVAL)) {
        if (L->full) {
            batch_assemble(L->full, msg, &L->dsets[(h->flags & HCL_BATCH_EVAL) && L->nds > 1 ? 1 : 0]);
            worker_step(&L->w, L->full, res);
        } else {
            worker_step(&L->w, msg, res);
        }
    } else {
        memset(res, 0, sizeof *res);
        res->step = h->step;
        res->flags = h->flags;
        memset(L->w.busy, 0, sizeof(double) * (size_t)L->w.size);
    }
}

/* Worker 0's result (and every worker's busy seconds) to rank 0, without blocking: a blocking
 * send waits whenever rank 0, asleep between its polls, has not yet returned the shared-memory
 * fragments, which held worker 0 back 1-9 ms a step while worker 1 waited for it in the
 * all-gather. After a SNAPSHOT job its replica's state follows. */
static void result_send(worker_loop *L, const hcl_step_result *res) {
    const int W = L->w.size;
    watchdog_wait(HCL_WAIT_COORDINATOR, res->step, NULL);
    if (L->sreq != MPI_REQUEST_NULL) worker_wait_polite(&L->sreq, MPI_STATUS_IGNORE);
    watchdog_busy();
    memcpy(L->sent, res, sizeof *res);
    memcpy(L->sent + L->res_bytes - sizeof(double) * (size_t)W, L->w.busy, sizeof(double) * (size_t)W);
    MPI_Isend(L->sent, (int)L->res_bytes, MPI_BYTE, 0, HCL_TAG_RESULT, MPI_COMM_WORLD, &L->sreq);
    if (res->flags & HCL_BATCH_SNAPSHOT) {
        worker_snapshot_pack(&L->w, L->snap);
        MPI_Request rq;
        MPI_Isend(L->snap, (int)L->snap_n, MPI_FLOAT, 0, HCL_TAG_SNAPSHOT, MPI_COMM_WORLD, &rq);
        watchdog_wait(HCL_WAIT_COORDINATOR, res->step, NULL);
        worker_wait_polite(&rq, MPI_STATUS_IGNORE);
        watchdog_busy();
    }
}

/* Receives for the batch into buf[k]: its header and the message. */
static void batch_post(worker_loop *L, int k) {
    MPI_Irecv(&L->head[k], (int)sizeof L->head[k], MPI_BYTE, 0, HCL_TAG_BATCH_HEAD, MPI_COMM_WORLD, &L->hreq);
    MPI_Irecv(L->buf[k], (int)L->su->max_batch_bytes, MPI_BYTE, 0, HCL_TAG_BATCH, MPI_COMM_WORLD, &L->breq);
}

/* Wait for the batch posted into buf[k]: while nothing of it has come the coordinator is
 * silent; once its header is here the rest is a transfer under way (the watchdog tells the two
 * apart). Returns the seconds waited. */
static double batch_wait(worker_loop *L, int k) {
    watchdog_wait(HCL_WAIT_BATCH, -1, NULL);
    double t = worker_wait_polite(&L->hreq, MPI_STATUS_IGNORE);
    watchdog_wait(HCL_WAIT_BATCH_REST, L->head[k].step, NULL);
    t += worker_wait_polite(&L->breq, MPI_STATUS_IGNORE);
    watchdog_busy();
    const hcl_batch_header *h = (const hcl_batch_header *)L->buf[k];
    HCL_CHECK(h->step == L->head[k].step && h->flags == L->head[k].flags,
              "the batch of step %lld came with the header of step %lld", (long long)h->step,
              (long long)L->head[k].step);
    return t;
}

static void loop_close(worker_loop *L) {
    if (L->sreq != MPI_REQUEST_NULL) worker_wait_polite(&L->sreq, MPI_STATUS_IGNORE);
    watchdog_stop();
    free(L->sums);
    free(L->sent);
    free(L->snap);
    free(L->full);
    for (int k = 0; k < L->nds; k++) dataset_close(&L->dsets[k]);
    free(L->buf[0]);
    free(L->buf[1]);
    worker_free(&L->w);
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) LOG_DEBUG("peak resident memory %ld kB", ru.ru_maxrss);
    memlimit_state s;
    memlimit_read(&s);
    LOG_DEBUG("memory: peak %.0f MB of address space", s.vm_peak / MEMLIMIT_MB);
}

int worker_main(MPI_Comm workers, const hcl_setup *su) {
    worker_loop loop = {0};
    worker_loop *L = &loop;
    L->su = su;
    L->workers = workers;
    if (su->direct) direct_open(L);
    memory_check(L);
    replica_open(L);
    watchdog_open(L);
    hcl_worker *w = &L->w;
    L->step_bytes = step_bytes_model(w, su);
    L->buf[0] = hcl_malloc(su->max_batch_bytes);
    L->buf[1] = hcl_malloc(su->max_batch_bytes);
    L->sums = hcl_calloc((size_t)w->size, sizeof(uint32_t));
    L->res_bytes = batch_result_bytes(w->size);
    L->sent = hcl_malloc(L->res_bytes);
    L->sreq = MPI_REQUEST_NULL;
    w->prefetch[0] = &L->hreq;
    w->prefetch[1] = &L->breq;
    batch_post(L, 0);
    for (int cur = 0;; cur ^= 1) {
        double waited = batch_wait(L, cur);
        const hcl_batch_header *h = (const hcl_batch_header *)L->buf[cur];
        batch_header_check(L->buf[cur], w->rank, w->size, su->mc.nviews, w->n, w->b_max);
        if (h->flags & HCL_BATCH_STOP) break;
        /* Prefetch: the next batch arrives while this one is computed. */
        batch_post(L, cur ^ 1);
        hcl_step_result res;
        batch_run(L, L->buf[cur], &res);
        res.t_wait = waited;
        if (L->telemetry && (h->flags & HCL_BATCH_TRAIN)) {
            hcl_telemetry_msg m = {.step = h->step, .compute_s = res.t_compute, .allgather_s = res.t_allgather,
                                   .reduce_scatter_s = res.t_reduce_scatter, .allreduce_s = res.t_allreduce,
                                   .wait_s = waited, .bytes = L->step_bytes, .rss_bytes = telemetry_rss_bytes()};
            watchdog_post(&m);
        }
        if (h->flags & HCL_BATCH_CHECK) replicas_compare(L, h->step);
        if (w->rank == 0) result_send(L, &res);
        watchdog_progress(-1, NULL, -1.0);
    }
    loop_close(L);
    return 0;
}
