/* worker: the receive-step-report loop of ranks 1..N-1 (see step.h: worker_main). */
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "kernels.h"
#include "log.h"
#include "step.h"
#include "telemetry.h"
#include "util.h"

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

/* The watchdog thread: it owns the telemetry socket, sending each step's numbers as the main
 * thread posts them and a heartbeat (step -1) every second, so the coordinator tells a worker
 * whose process stopped (no heartbeat) from one waiting in a collective for a lost peer (still
 * beating). And a worker that receives no batch for --worker-timeout seconds ends itself, even
 * when stuck inside a collective (a cut network: mpirun alone would wait forever). A paused
 * job's coordinator sends PING batches well within the timeout. */
typedef struct {
    pthread_mutex_t lock;
    hcl_telemetry_msg pending;
    int has_pending;
    _Atomic double last_batch;
    double timeout;
    _Atomic int quit;
    hcl_telemetry *tel;
} watchdog;

static void *watchdog_main(void *arg) {
    watchdog *wd = arg;
    double last_sent = 0;
    while (!wd->quit) {
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
        double now = hcl_now();
        double silent = now - wd->last_batch;
        if (silent > wd->timeout) {
            LOG_ERROR("no batch from the coordinator for %.0f s (--worker-timeout %.0f + 3): coordinator "
                      "or network lost, aborting", silent, wd->timeout - 3);
            _exit(4);
        }
        if (!wd->tel) continue;
        hcl_telemetry_msg m;
        int have = 0;
        pthread_mutex_lock(&wd->lock);
        if (wd->has_pending) {
            m = wd->pending;
            wd->has_pending = 0;
            have = 1;
        }
        pthread_mutex_unlock(&wd->lock);
        if (!have && now - last_sent >= 1.0) {
            memset(&m, 0, sizeof m);
            m.step = -1;
            m.rss_bytes = telemetry_rss_bytes();
            have = 1;
        }
        if (have) {
            telemetry_send(wd->tel, &m);
            last_sent = now;
        }
    }
    return NULL;
}

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

void worker_ignore_signals(void) {
    signal(SIGUSR1, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
}

int worker_main(MPI_Comm workers, const hcl_setup *su) {
    char err[HCL_ERR_MAX];
    int threads = su->threads > 0 ? su->threads : default_threads(workers);
    kernels_set_threads(threads);
    hcl_worker w;
    if (worker_init(&w, workers, &su->mc, &su->lc, &su->oc, su->learn_t, (uint64_t)su->seed,
                    su->batch, su->balance, err) != 0) {
        LOG_ERROR("%s", err);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    int shm = su->shm_grads && worker_share_memory(&w);
    LOG_DEBUG("worker %d of %d: %d BLAS threads, %lld parameters, exchanges %s", w.rank, w.size, threads,
              (long long)w.model.nparams, shm ? "in shared memory" : w.size > 1 ? "by MPI collectives" : "none (one worker)");
    size_t snap_n = worker_snapshot_floats(&w);
    float *snap = hcl_malloc(sizeof(float) * snap_n);
    if (su->resume) {
        MPI_Request rq;
        MPI_Ibcast(snap, (int)snap_n, MPI_FLOAT, 0, MPI_COMM_WORLD, &rq);
        worker_wait_polite(&rq, MPI_STATUS_IGNORE);
        worker_snapshot_unpack(&w, snap);
    }
    hcl_telemetry *tel = NULL;
    if (su->tel_endpoint[0] &&
        telemetry_open(&tel, su->tel_endpoint, su->tel_server_public, su->tel_client_secret, w.rank, err) != 0)
        LOG_WARN("telemetry: %s (the coordinator will see this worker as silent)", err);
    static watchdog wd;
    pthread_mutex_init(&wd.lock, NULL);
    wd.last_batch = hcl_now();
    /* 3 s of grace over the coordinator's limit: heartbeats come every second and it checks
     * every second, so when it is alive it names the lost worker before anyone gives up */
    wd.timeout = (su->worker_timeout > 0 ? su->worker_timeout : 60) + 3;
    wd.tel = tel;   /* from here on the watchdog thread alone uses the socket */
    pthread_t wd_thread;
    HCL_CHECK(pthread_create(&wd_thread, NULL, watchdog_main, &wd) == 0, "pthread_create (watchdog) failed");
    /* bytes a step's collectives send per worker: the all-gather and the reduce-scatter of
     * the N x G x D embeddings of the G gathered views send (W-1)/W of their size, the ring
     * all-reduces twice that: of the parameter gradient, and per pair of the loss's N column
     * maxes (float) and sums (double) (docs/SCALING.md): the model of the MPI collectives, also
     * reported when the workers exchange through shared memory instead. */
    uint64_t step_bytes = w.size > 1 ? (uint64_t)((double)(w.size - 1) / w.size *
                                                  (4.0 * 2.0 * su->batch * w.ngv * su->mc.dim +
                                                   2.0 * 4.0 * w.model.nparams +
                                                   2.0 * 12.0 * su->batch * loss_pair_count(&su->lc))) : 0;
    /* --data-plane direct: this worker reads its rows from the dataset files itself */
    hcl_dataset dsets[2];
    int nds = 0;
    uint8_t *full = NULL;
    if (su->direct) {
        const char *dirs[2] = {su->data_dir, su->val_dir};
        for (int k = 0; k < 2 && dirs[k][0]; k++, nds++) {
            if (dataset_open(&dsets[k], dirs[k], err) != 0) {
                LOG_ERROR("--data-plane direct: %s", err);
                MPI_Abort(MPI_COMM_WORLD, 2);
            }
            int same = dsets[k].nviews == su->mc.nviews;
            for (int v = 0; same && v < su->mc.nviews; v++)
                same = !strcmp(dsets[k].names[v], su->mc.names[v]) && dsets[k].widths[v] == su->mc.in_width[v];
            if (!same) {
                LOG_ERROR("--data-plane direct: %s on this host does not have the views rank 0 sees", dirs[k]);
                MPI_Abort(MPI_COMM_WORLD, 2);
            }
        }
        int64_t wd64[HCL_MAX_VIEWS];
        for (int v = 0; v < su->mc.nviews; v++) wd64[v] = su->mc.in_width[v];
        hcl_batch_layout fl;
        full = hcl_malloc(batch_layout(&fl, su->batch, w.b_max, w.size, su->mc.nviews, wd64));
    }
    uint8_t *buf[2];
    buf[0] = hcl_malloc(su->max_batch_bytes);
    buf[1] = hcl_malloc(su->max_batch_bytes);
    uint32_t *sums = hcl_calloc((size_t)w.size, sizeof(uint32_t));
    MPI_Request req;
    /* Worker 0's result goes out without blocking: a blocking send waits whenever rank 0,
     * asleep between its polls, has not yet returned the shared-memory fragments, which
     * held worker 0 back 1-9 ms a step while worker 1 waited for it in the all-gather. */
    const size_t res_bytes = batch_result_bytes(w.size);
    uint8_t *sent = hcl_malloc(res_bytes);
    MPI_Request sreq = MPI_REQUEST_NULL;
    MPI_Irecv(buf[0], (int)su->max_batch_bytes, MPI_BYTE, 0, HCL_TAG_BATCH, MPI_COMM_WORLD, &req);
    int cur = 0, code = 0;
    for (;;) {
        double waited = worker_wait_polite(&req, MPI_STATUS_IGNORE);
        wd.last_batch = hcl_now();
        const hcl_batch_header *h = (const hcl_batch_header *)buf[cur];
        HCL_CHECK(h->magic == HCL_BATCH_MAGIC, "batch message without the batch magic");
        HCL_CHECK((h->flags & (HCL_BATCH_TRAIN | HCL_BATCH_EVAL)) == 0 || h->nworkers == w.size,
                  "batch of step %lld split over %d workers, not %d", (long long)h->step, h->nworkers, w.size);
        if (h->flags & HCL_BATCH_STOP) break;
        /* Prefetch: the next batch arrives while this one is computed. */
        MPI_Irecv(buf[cur ^ 1], (int)su->max_batch_bytes, MPI_BYTE, 0, HCL_TAG_BATCH, MPI_COMM_WORLD, &req);
        hcl_step_result res;
        if (h->flags & (HCL_BATCH_TRAIN | HCL_BATCH_EVAL)) {
            if (full) {
                batch_assemble(full, buf[cur], &dsets[(h->flags & HCL_BATCH_EVAL) && nds > 1 ? 1 : 0]);
                worker_step(&w, full, &res);
            } else {
                worker_step(&w, buf[cur], &res);
            }
        } else {
            memset(&res, 0, sizeof res);
            res.step = h->step;
            res.flags = h->flags;
            memset(w.busy, 0, sizeof(double) * (size_t)w.size);
        }
        res.t_wait = waited;
        if (tel && (h->flags & HCL_BATCH_TRAIN)) {
            hcl_telemetry_msg m = {h->step, res.t_compute, res.t_allgather, res.t_reduce_scatter,
                                   res.t_allreduce, waited, step_bytes, telemetry_rss_bytes()};
            pthread_mutex_lock(&wd.lock);
            wd.pending = m;
            wd.has_pending = 1;
            pthread_mutex_unlock(&wd.lock);
        }
        if (h->flags & HCL_BATCH_CHECK) {
            uint32_t mine = worker_param_checksum(&w);
            MPI_Allgather(&mine, 1, MPI_UINT32_T, sums, 1, MPI_UINT32_T, workers);
            for (int r = 0; r < w.size; r++)
                if (sums[r] != sums[0]) {
                    LOG_ERROR("replicas diverged after step %lld: worker %d parameter checksum %08x, "
                              "worker 0 has %08x", (long long)h->step + 1, r, sums[r], sums[0]);
                    MPI_Abort(MPI_COMM_WORLD, 3);
                }
        }
        wd.last_batch = hcl_now();
        if (w.rank == 0) {
            if (sreq != MPI_REQUEST_NULL) worker_wait_polite(&sreq, MPI_STATUS_IGNORE);
            memcpy(sent, &res, sizeof res);
            memcpy(sent + res_bytes - sizeof(double) * (size_t)w.size, w.busy, sizeof(double) * (size_t)w.size);
            MPI_Isend(sent, (int)res_bytes, MPI_BYTE, 0, HCL_TAG_RESULT, MPI_COMM_WORLD, &sreq);
            if (h->flags & HCL_BATCH_SNAPSHOT) {
                worker_snapshot_pack(&w, snap);
                MPI_Request rq;
                MPI_Isend(snap, (int)snap_n, MPI_FLOAT, 0, HCL_TAG_SNAPSHOT, MPI_COMM_WORLD, &rq);
                worker_wait_polite(&rq, MPI_STATUS_IGNORE);
            }
        }
        cur ^= 1;
    }
    if (sreq != MPI_REQUEST_NULL) worker_wait_polite(&sreq, MPI_STATUS_IGNORE);
    wd.quit = 1;
    pthread_join(wd_thread, NULL);
    telemetry_close(tel);
    free(sums);
    free(sent);
    free(snap);
    free(full);
    for (int k = 0; k < nds; k++) dataset_close(&dsets[k]);
    free(buf[0]);
    free(buf[1]);
    worker_free(&w);
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) LOG_DEBUG("peak resident memory %ld kB", ru.ru_maxrss);
    return code;
}
