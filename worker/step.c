/* step: see step.h. */
#include "step.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define MPI_OK(call) do { int _rc = (call); HCL_CHECK(_rc == MPI_SUCCESS, "%s failed (%d)", #call, _rc); } while (0)

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
    w->opt_state = hcl_floats((size_t)optim_state_floats(oc, w->model.nparams));
    w->learn_t = learn_t;
    w->t_min = 0.0f;
    w->t_max = logf(100.0f);
    int V = mc->nviews, D = mc->dim;
    /* Small batches: one collective for all views, through packing buffers. Large ones: one
     * in-place collective per view, no buffers of N x V x D beyond the gathered embeddings and
     * their gradients. */
    /* Views the sharded loss reads all rows of (loss_gathered_views): only those are all-gathered
     * and reduce-scattered; of the others each worker holds its own rows. */
    int need[HCL_MAX_VIEWS];
    loss_gathered_views(lc, need);
    for (int v = 0; v < V; v++) {
        w->gathered[v] = w->size == 1 || need[v];
        if (w->gathered[v]) w->gv[w->ngv++] = v;
    }
    const int G = w->ngv;
    w->packed = (int64_t)G * n * D * (int64_t)sizeof(float) <= HCL_PACKED_MAX_BYTES;
    if (w->packed) {
        w->zpack = hcl_floats((size_t)G * w->b_max * D + 1);
        w->zgath = hcl_floats((size_t)G * n * D + 1);
        w->dzpack = hcl_floats((size_t)G * n * D + 1);
        w->dzown = hcl_floats((size_t)G * w->b_max * D + 1);
    }
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
    /* encode the gathered views first (their all-gather runs while the others are encoded) */
    for (int g = 0, k = 0; g < 2; g++)
        for (int v = 0; v < V; v++)
            if ((w->gathered[v] == 0) == g) w->enc_order[k++] = v;
    /* backward: the views not gathered first (while the reduce-scatter runs), by size, the
     * largest first */
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
    if ((int64_t)V * n * D > INT32_MAX || w->loss.npairs * n > INT32_MAX)
        return hcl_err(err, "batch-size: %lld rows x %d views x %d dims (or x %lld loss pairs) exceeds one "
                       "MPI message", (long long)n, V, D, (long long)w->loss.npairs);
    return 0;
}

/* A worker's shared gradient segment: /dev/shm through shm_open, its pages reserved with
 * posix_fallocate (a full tmpfs is an error here, not a SIGBUS in a later step). */
static float *segment_open(const char *name, size_t bytes, int create, char *why, size_t whylen) {
    int fd = shm_open(name, O_RDWR | (create ? O_CREAT | O_EXCL : 0), 0600);
    if (fd < 0) {
        snprintf(why, whylen, "shm_open %s: %s", name, strerror(errno));
        return NULL;
    }
    int rc = create ? posix_fallocate(fd, 0, (off_t)bytes) : 0;
    void *p = rc == 0 ? mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
    if (rc != 0) snprintf(why, whylen, "%zu bytes in /dev/shm for %s: %s", bytes, name, strerror(rc));
    else if (p == MAP_FAILED) snprintf(why, whylen, "mmap of %s: %s", name, strerror(errno));
    close(fd);
    if (p == MAP_FAILED) {
        if (create) shm_unlink(name);   /* a segment that failed leaves no name behind */
        return NULL;
    }
    return p;
}

/* A barrier whose writes before are seen by every worker after (shared memory). */
static void shared_barrier(hcl_worker *w) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    MPI_OK(MPI_Barrier(w->comm));
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* 1 on every worker if ok is 1 on all of them. */
static int all_ok(hcl_worker *w, int ok) {
    int all = 0;
    MPI_OK(MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, w->comm));
    return all;
}

static size_t page_round(size_t bytes) { return (bytes + 4095) / 4096 * 4096; }

/* Worker k's (of W) slice [p0, p1) of P parameters: whole cache lines. */
static void param_slice(int64_t P, int k, int W, int64_t *p0, int64_t *p1) {
    const int64_t lines = (P + 15) / 16, a = lines * k / W * 16, e = lines * (k + 1) / W * 16;
    *p0 = a < P ? a : P;
    *p1 = e < P ? e : P;
}

/* Bytes of the (n, D) buffers of the gathered views (with shm_views), to a page. */
static size_t segment_views_bytes(const hcl_worker *w) {
    return w->shm_views ? page_round((size_t)w->ngv * w->n * w->model.cfg.dim * sizeof(float)) : 0;
}

/* Bytes of the loss's column statistics (with shm_views): (pairs, n) sums, then maxes. */
static size_t segment_cols_bytes(const hcl_worker *w) {
    return w->shm_views ? page_round((size_t)w->loss.npairs * w->n * (sizeof(double) + sizeof(float))) : 0;
}

/* Bytes of worker r's segment: its gradients (nparams, to a page); with shm_views the (n, D)
 * gradients of each gathered view, and on worker 0 also the (n, D) embeddings of each gathered
 * view, common to all; then (every worker's) its column statistics; with zero, worker 0's ends
 * with the parameters and the optimizer state, common to all. */
static size_t segment_bytes(const hcl_worker *w, int r) {
    size_t bytes = w->seg_grad_bytes + segment_views_bytes(w) * (r == 0 ? 2 : 1) + segment_cols_bytes(w);
    if (r == 0 && w->zero)
        bytes += page_round((size_t)w->model.nparams * sizeof(float)) +
                 page_round((size_t)optim_state_floats(&w->opt, w->model.nparams) * sizeof(float));
    return bytes;
}

/* Worker k's column statistics in its segment: (pairs, n) sums of exps, then (pairs, n) maxes. */
static double *segment_cols(const hcl_worker *w, int k) {
    return (double *)((char *)w->seg[k] + w->seg_grad_bytes + segment_views_bytes(w) * (k == 0 ? 2 : 1));
}

/* Worker k's (n, D) gradient of gathered view g (the g-th of gv) in its segment. */
static float *segment_dz(const hcl_worker *w, int k, int g) {
    return (float *)((char *)w->seg[k] + w->seg_grad_bytes) + (size_t)g * w->n * w->model.cfg.dim;
}

int worker_share_memory(hcl_worker *w) {
    if (w->size == 1 || w->seg) return w->seg != NULL;
    HCL_CHECK(w->updates == 0, "worker_share_memory after %lld updates: it is for a fresh worker",
              (long long)w->updates);
    MPI_Comm node;
    MPI_OK(MPI_Comm_split_type(w->comm, MPI_COMM_TYPE_SHARED, w->rank, MPI_INFO_NULL, &node));
    int nsize;
    MPI_Comm_size(node, &nsize);
    MPI_Comm_free(&node);
    /* every worker sees nsize == size exactly when all share one node: they decide alike */
    if (nsize != w->size) return 0;
    /* Each worker creates its own segment, then maps the others' by name; every failure is local
     * and agreed on by an all-reduce, so all fall back together and none waits on another. The
     * names go as soon as all have been mapped: nothing stays in /dev/shm, even after kill -9. */
    hcl_model *m = &w->model;
    w->seg_grad_bytes = page_round((size_t)m->nparams * sizeof(float));
    /* The embeddings and their gradients too while they are small (one packed collective's
     * worth): a worker reads the rows of the others from their segments, and every page it
     * reads counts in its resident memory, so for large batches (where the loss's O(N^2)
     * dwarfs the copies anyway) MPI's collectives keep that memory flat in N. */
    w->shm_views = w->packed;
    /* ZeRO-1 (elementwise optimizers): one copy of the parameters and the optimizer state, each
     * worker updating its slice of them */
    w->zero = w->opt.kind != HCL_OPTIM_LARS;
    unsigned long long tag[2] = {(unsigned long long)getpid(), (unsigned long long)(hcl_now() * 1e6)};
    MPI_OK(MPI_Bcast(tag, 2, MPI_UNSIGNED_LONG_LONG, 0, w->comm));
    float **seg = hcl_calloc((size_t)w->size, sizeof *seg);
    char name[96], why[256] = "";
    snprintf(name, sizeof name, "/hcl-step-%llu-%llu-%d", tag[0], tag[1], w->rank);
    const char *inj = getenv("HCL_INJECT_SHM_FAIL");   /* tests: this worker's segment fails */
    if (inj && atoi(inj) == w->rank) snprintf(why, sizeof why, "HCL_INJECT_SHM_FAIL=%d", w->rank);
    else seg[w->rank] = segment_open(name, segment_bytes(w, w->rank), 1, why, sizeof why);
    int ok = all_ok(w, seg[w->rank] != NULL);
    if (ok) {
        int mapped = 1;
        for (int r = 0; r < w->size && mapped; r++) {
            if (r == w->rank) continue;
            char other[96];
            snprintf(other, sizeof other, "/hcl-step-%llu-%llu-%d", tag[0], tag[1], r);
            seg[r] = segment_open(other, segment_bytes(w, r), 0, why, sizeof why);
            mapped = seg[r] != NULL;
        }
        ok = all_ok(w, mapped);
    }
    if (seg[w->rank]) shm_unlink(name);
    if (!ok) {
        for (int r = 0; r < w->size; r++)
            if (seg[r]) munmap(seg[r], segment_bytes(w, r));
        free(seg);
        w->shm_views = w->zero = 0;
        if (why[0])
            LOG_WARN("shared memory between the workers: %s; they use MPI collectives instead", why);
        return 0;
    }
    /* The segments start zeroed, as a fresh worker's gradients and optimizer state are: the
     * private ones go first, so no moment holds both (peak memory). */
    w->seg = seg;
    w->sum_src = hcl_calloc((size_t)w->size, sizeof *w->sum_src);
    free(m->grads);
    m->grads = seg[w->rank];
    const int64_t P = m->nparams;
    param_slice(P, w->rank, w->size, &w->p0, &w->p1);
    if (w->zero) {
        /* worker 0's replica becomes everyone's (all are the same: one seed) */
        char *tail = (char *)segment_cols(w, 0) + segment_cols_bytes(w);
        float *params = (float *)tail;
        free(w->opt_state);
        w->opt_state = (float *)(tail + page_round((size_t)P * sizeof(float)));
        if (w->rank == 0) memcpy(params, m->params, sizeof(float) * (size_t)P);
        shared_barrier(w);
        free(m->params);
        m->params = params;
    }
    if (w->shm_views) {
        /* the gathered views' embeddings: one buffer in worker 0's segment, each worker writes
         * its rows there; their gradients: each worker's own, in its segment */
        const size_t views = segment_views_bytes(w);
        for (int g = 0; g < w->ngv; g++) {
            int v = w->gv[g];
            free(w->zall[v]);
            free(w->dzall[v]);
            w->dzall[v] = segment_dz(w, w->rank, g);
            w->zall[v] = (float *)((char *)seg[0] + w->seg_grad_bytes + views) + (size_t)g * w->n * m->cfg.dim;
        }
        /* the packing buffers of the MPI collectives are not needed */
        free(w->zpack);
        free(w->zgath);
        free(w->dzpack);
        free(w->dzown);
        w->zpack = w->zgath = w->dzpack = w->dzown = NULL;
    }
    /* glibc keeps freed heap blocks resident: the private buffers just replaced must not count
     * on top of the segments' pages */
    malloc_trim(0);
    return 1;
}

/* dst[d][0, len) = the sum over the workers' src[k][0, len), in rank order, a cache-sized block
 * at a time (every worker gets the same bits), for each of the ndst destinations (which may be
 * the sources: a block is read whole before it is written). Returns the sum of squares of the
 * sums if squares, else 0. */
static double sum_over_workers(float *const *src, int W, int64_t len, float *const *dst, int ndst, int squares) {
    enum { BLOCK = 2048 };
    float acc[BLOCK] __attribute__((aligned(64)));
    double ss = 0.0;
    for (int64_t i0 = 0; i0 < len; i0 += BLOCK) {
        int64_t n = len - i0 < BLOCK ? len - i0 : BLOCK;
        memcpy(acc, src[0] + i0, sizeof(float) * (size_t)n);
        for (int k = 1; k < W; k++) {
            const float *s = src[k] + i0;
            for (int64_t i = 0; i < n; i++) acc[i] += s[i];
        }
        if (squares) ss += optim_sum_squares(acc, n);
        for (int d = 0; d < ndst; d++) memcpy(dst[d] + i0, acc, sizeof(float) * (size_t)n);
    }
    return ss;
}

/* The reduce-scatter through the shared segments (after the barrier): the summed gradient of
 * this worker's rows [r0, r0+b) of each gathered view, over every worker's buffer in rank order,
 * into its own buffer's rows. Only this worker reads or writes those rows of its buffer; the
 * others read their rows of it. */
static void shared_dz_sum(hcl_worker *w, int64_t r0, int64_t b) {
    const int64_t D = w->model.cfg.dim;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    for (int g = 0; g < w->ngv; g++) {
        for (int k = 0; k < w->size; k++) w->sum_src[k] = segment_dz(w, k, g) + r0 * D;
        float *own = w->sum_src[w->rank];
        sum_over_workers(w->sum_src, w->size, b * D, &own, 1, 0);
    }
}

/* The gradient all-reduce through the shared segments: after every worker's backward (barrier),
 * worker r sums its 1/W of the parameters over all buffers in rank order, a cache-sized block
 * at a time, and stores the sum into every buffer; after the second barrier all buffers hold
 * the same sum. Each block of each buffer is read and written by one worker only, so nothing
 * races; the next step's zeroing starts after the second barrier. */
static void shared_grad_sum(hcl_worker *w) {
    shared_barrier(w);
    for (int k = 0; k < w->size; k++) w->sum_src[k] = w->seg[k] + w->p0;
    /* with zero the sum stays in this worker's buffer (its update reads only its slice), and
     * its sum of squares goes into the loss scalars' all-reduce for the global norm */
    if (w->zero) {
        float *own = w->sum_src[w->rank];
        w->norm2 = sum_over_workers(w->sum_src, w->size, w->p1 - w->p0, &own, 1, 1);
    } else {
        sum_over_workers(w->sum_src, w->size, w->p1 - w->p0, w->sum_src, w->size, 0);
        shared_barrier(w);
    }
}

void worker_free(hcl_worker *w) {
    if (w->seg) {
        w->model.grads = NULL;   /* the segments' memory */
        if (w->zero) w->model.params = w->opt_state = NULL;
        for (int g = 0; w->shm_views && g < w->ngv; g++) w->zall[w->gv[g]] = w->dzall[w->gv[g]] = NULL;
        for (int r = 0; r < w->size; r++) munmap(w->seg[r], segment_bytes(w, r));
        free(w->seg);
        free(w->sum_src);
    }
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

/* The loss's column reduce (loss.h): the max of each column over the workers, then each worker's
 * sums of exps rescaled to it and summed: two all-reduces of N values per pair, all pairs in one
 * call when the loss can wait for them. Through the shared segments it is one barrier: each
 * worker publishes its maxes and sums, then every worker combines all of them in rank order
 * (the same bits everywhere). A worker's statistics are next written in the next step's loss,
 * after collectives that every worker enters only once done reading them. */
static void column_reduce(void *arg, float *colmax, double *colsum, int64_t n) {
    hcl_worker *w = arg;
    double t0 = hcl_now();
    if (w->shm_views) {
        /* a step's reduces (one per pair when not all at once) fill the area one after
         * another, so none overwrites statistics another worker may still be reading */
        const size_t cap = (size_t)w->loss.npairs * w->n, off = (size_t)w->col_off;
        HCL_CHECK(off + (size_t)n <= cap, "column reduce of %lld values at %zu of %zu", (long long)n, off, cap);
        w->col_off += n;
        memcpy(segment_cols(w, w->rank) + off, colsum, sizeof(double) * (size_t)n);
        memcpy((float *)(segment_cols(w, w->rank) + cap) + off, colmax, sizeof(float) * (size_t)n);
        shared_barrier(w);
        /* own inputs are published: colmax and colsum now take the combined values */
        for (int64_t j = 0; j < n; j++) {
            colmax[j] = -INFINITY;
            colsum[j] = 0.0;
        }
        for (int k = 0; k < w->size; k++) {
            const float *cm = (const float *)(segment_cols(w, k) + cap) + off;
            for (int64_t j = 0; j < n; j++) colmax[j] = cm[j] > colmax[j] ? cm[j] : colmax[j];
        }
        for (int k = 0; k < w->size; k++) {
            const double *cs = segment_cols(w, k) + off;
            const float *cm = (const float *)(segment_cols(w, k) + cap) + off;
            for (int64_t j = 0; j < n; j++)
                colsum[j] += cm[j] == -INFINITY ? 0.0 : cs[j] * exp((double)cm[j] - (double)colmax[j]);
        }
        w->t_colreduce += hcl_now() - t0;
        return;
    }
    MPI_OK(MPI_Allreduce(colmax, w->colmax, (int)n, MPI_FLOAT, MPI_MAX, w->comm));
    for (int64_t j = 0; j < n; j++)
        colsum[j] = colmax[j] == -INFINITY ? 0.0 : colsum[j] * exp((double)colmax[j] - (double)w->colmax[j]);
    memcpy(colmax, w->colmax, sizeof(float) * (size_t)n);
    MPI_OK(MPI_Allreduce(MPI_IN_PLACE, colsum, (int)n, MPI_DOUBLE, MPI_SUM, w->comm));
    w->t_colreduce += hcl_now() - t0;
}

float worker_logit_scale(const hcl_worker *w) {
    return expf(w->model.params[w->model.logit_t]);
}

/* Start the all-gather of the own rows of the gathered views (all encoded): one packed
 * collective or one in place per view. Returns the requests made (0 with one worker). */
static int allgather_start(hcl_worker *w, int64_t b, int64_t r0, MPI_Request *req) {
    const int D = w->model.cfg.dim;
    if (w->size == 1) return 0;
    if (w->shm_views) {
        /* the own rows are in the common buffer already: a barrier tells all are there */
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        MPI_OK(MPI_Ibarrier(w->comm, &req[0]));
        return 1;
    }
    if (w->packed) {
        for (int g = 0; g < w->ngv; g++)
            memcpy(w->zpack + (size_t)g * b * D, w->zall[w->gv[g]] + r0 * D, sizeof(float) * (size_t)b * D);
        MPI_OK(MPI_Iallgatherv(w->zpack, w->counts[w->rank], MPI_FLOAT, w->zgath, w->counts, w->displs,
                               MPI_FLOAT, w->comm, &req[0]));
        return 1;
    }
    for (int g = 0; g < w->ngv; g++)
        MPI_OK(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, w->zall[w->gv[g]], w->vcounts, w->vdispls,
                               MPI_FLOAT, w->comm, &req[g]));
    return w->ngv;
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

void worker_forward_backward(hcl_worker *w, const uint8_t *buf, hcl_step_result *res) {
    const hcl_batch_header *h = (const hcl_batch_header *)buf;
    hcl_model *m = &w->model;
    const int V = m->cfg.nviews, D = m->cfg.dim;
    const int train = (h->flags & HCL_BATCH_TRAIN) != 0;
    HCL_CHECK(h->magic == HCL_BATCH_MAGIC && h->nviews == V && h->n <= w->n && h->b <= w->b_max,
              "malformed batch header (step %lld, n %lld, b %lld)", (long long)h->step,
              (long long)h->n, (long long)h->b);
    memset(res, 0, sizeof *res);
    res->step = h->step;
    res->flags = h->flags;
    int64_t widths[HCL_MAX_VIEWS] = {0};
    for (int v = 0; v < V; v++) widths[v] = m->cfg.in_width[v];
    hcl_batch_layout lay;
    batch_layout(&lay, h->n, h->b, w->size, V, widths);
    const int64_t *split = (const int64_t *)(buf + lay.split);
    HCL_CHECK(batch_split_ok(h, split, w->rank, w->size, w->b_max),
              "batch of step %lld: its split of %lld rows over %d workers is not sound for worker %d "
              "(rows [%lld,+%lld), at most %lld)", (long long)h->step, (long long)h->n, h->nworkers, w->rank,
              (long long)h->r0, (long long)h->b, (long long)w->b_max);
    const int32_t *labels = (const int32_t *)(buf + lay.labels);
    const uint8_t *mask = buf + lay.mask;
    const int64_t n = h->n, b = h->b, r0 = h->r0;

    /* every worker's rows, in floats of the collectives */
    for (int r = 0; r < w->size; r++) {
        w->r0s[r] = split[r];
        w->bs[r] = split[r + 1] - split[r];
        w->counts[r] = (int)(w->bs[r] * w->ngv * D);
        w->displs[r] = (int)(w->r0s[r] * w->ngv * D);
        w->vcounts[r] = (int)(w->bs[r] * D);
        w->vdispls[r] = (int)(w->r0s[r] * D);
    }

    double t0 = hcl_now();
    if (train) model_zero_grad(m);

    /* 1. Encode own rows, micro-batch by micro-batch, into the own rows of the embeddings: (N, D)
     * of a gathered view, (b, D) of another (its rows start at first[v]). The gathered views
     * first: 2. their all-gather starts, nonblocking, before the other views are encoded (the
     * row view of a full graph or of CLIP), so a worker that is ahead computes while the one
     * behind catches up instead of waiting for it. */
    int64_t first[HCL_MAX_VIEWS];
    for (int v = 0; v < V; v++) first[v] = w->gathered[v] ? 0 : r0;
    const int64_t mb = w->micro;
    MPI_Request agreq[HCL_MAX_VIEWS];
    int nag = 0;
    for (int k = 0; k <= V; k++) {
        if (k == w->ngv) nag = allgather_start(w, b, r0, agreq);
        if (k == V) break;
        const int v = w->enc_order[k];
        const float *x = (const float *)(buf + lay.view[v]);
        for (int64_t c = 0; c < b; c += mb) {
            int64_t rows = b - c < mb ? b - c : mb;
            const float *z = model_encode(m, &w->acts, v, x + c * widths[v], (int)rows);
            memcpy(w->zall[v] + (r0 - first[v] + c) * D, z, sizeof(float) * (size_t)rows * D);
        }
    }
    if (w->inject_slow_us) {
        long long ns = 1000LL * w->inject_slow_us * b;
        struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
        nanosleep(&ts, NULL);
    }
    double t1 = hcl_now();
    if (nag) MPI_OK(MPI_Waitall(nag, agreq, MPI_STATUSES_IGNORE));
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (w->size > 1 && w->packed && !w->shm_views)
        for (int r = 0; r < w->size; r++)
            for (int g = 0; g < w->ngv; g++)
                if (r != w->rank)
                    memcpy(w->zall[w->gv[g]] + w->r0s[r] * D, w->zgath + w->displs[r] + (size_t)g * w->bs[r] * D,
                           sizeof(float) * (size_t)w->bs[r] * D);
    double t2 = hcl_now();

    /* 3. Loss of own rows against all columns; gradient for all N rows of every gathered view,
     * for the own rows of the others. */
    hcl_loss_input in = {0};
    in.n = n;
    in.r0 = r0;
    in.b = b;
    for (int v = 0; v < V; v++) {
        in.z[v] = w->zall[v];
        in.z_first[v] = first[v];
    }
    in.mask = mask;
    if (w->size > 1) {
        in.colreduce = column_reduce;
        in.colreduce_arg = w;
    }
    w->t_colreduce = 0.0;
    w->col_off = 0;
    in.labels = h->has_labels ? labels : NULL;
    in.t = m->params[m->logit_t];
    if (m->head_w >= 0) {
        in.head_w = m->params + m->head_w;
        in.head_b = m->params + m->head_b;
    }
    hcl_loss_result lr;
    if (train) {
        for (int v = 0; v < V; v++)
            memset(w->dzall[v], 0, sizeof(float) * (size_t)(w->gathered[v] ? n : b) * D);
        loss_forward_backward(&w->loss, &in, w->dzall,
                              m->head_w >= 0 ? m->grads + m->head_w : NULL,
                              m->head_w >= 0 ? m->grads + m->head_b : NULL, &lr);
        if (w->learn_t) m->grads[m->logit_t] += (float)lr.dt;
    } else {
        loss_forward_backward(&w->loss, &in, NULL, NULL, NULL, &lr);
    }
    double t3 = hcl_now();

    double *scal = w->scal;
    int ns = pack_scalars(scal, &lr, V);
    double t4 = t3, t5 = t3, t6 = t3, t_rswait = 0.0, t_rssum = 0.0;
    MPI_Request reqs[HCL_MAX_VIEWS + 2];
    int nreq = 0;
    if (train) {
        /* 4. Reduce-scatter of the gathered views: every worker receives the full gradient of its
         * own rows. dz[v] points at them, (b, D); a view not gathered has only own rows' gradient,
         * complete here. */
        const float *dz[HCL_MAX_VIEWS];
        for (int v = 0; v < V; v++) dz[v] = w->dzall[v];
        MPI_Request rsreq = MPI_REQUEST_NULL;
        if (w->size == 1) {
        } else if (w->shm_views) {
            /* every worker's dz is in its segment: after a barrier each sums its own rows */
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            MPI_OK(MPI_Ibarrier(w->comm, &rsreq));
            for (int g = 0; g < w->ngv; g++) dz[w->gv[g]] = w->dzall[w->gv[g]] + r0 * D;
        } else if (w->packed) {
            for (int r = 0; r < w->size; r++)
                for (int g = 0; g < w->ngv; g++)
                    memcpy(w->dzpack + w->displs[r] + (size_t)g * w->bs[r] * D, w->dzall[w->gv[g]] + w->r0s[r] * D,
                           sizeof(float) * (size_t)w->bs[r] * D);
            MPI_OK(MPI_Ireduce_scatter(w->dzpack, w->dzown, w->counts, MPI_FLOAT, MPI_SUM, w->comm, &rsreq));
            for (int g = 0; g < w->ngv; g++) dz[w->gv[g]] = w->dzown + (size_t)g * b * D;
        } else {
            /* rs_rows rows of every worker's share at a time, through a staging buffer, so
             * neither it nor Open MPI's temporaries grow with N: the summed own rows land in
             * place, in the own rows of dzall[v] */
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
        t4 = hcl_now();

        /* 5. Backward through each encoder: first those of views not gathered, whose gradient is
         * complete here, while the packed reduce-scatter runs; then the others. In each group
         * the largest first: its gradient slice is all-reduced while the next encoder's
         * backward runs (each MPI_Testall moves the all-reduces on), so the one left to wait
         * for at the end is the smallest. With more own rows than one micro-batch, each
         * micro-batch's forward is run again right before its backward. */
        for (int k = 0; k < V; k++) {
            int v = w->bwd_order[k];
            if (w->gathered[v] && rsreq != MPI_REQUEST_NULL) {
                double tw = hcl_now();
                MPI_OK(MPI_Wait(&rsreq, MPI_STATUS_IGNORE));
                double ts = hcl_now();
                if (w->shm_views) shared_dz_sum(w, r0, b);
                t_rswait = ts - tw;               /* a wait */
                t_rssum = hcl_now() - ts;         /* compute: busy, reported with the reduce-scatter */
            }
            const float *x = (const float *)(buf + lay.view[v]);
            for (int64_t c = 0; c < b; c += mb) {
                int64_t rows = b - c < mb ? b - c : mb;
                if (b > mb) model_encode(m, &w->acts, v, x + c * widths[v], (int)rows);
                model_encode_backward(m, &w->acts, v, x + c * widths[v], dz[v] + c * D, (int)rows);
            }
            if (h->step == w->inject_nan_step) m->grads[m->enc[v].param_begin] = NAN;
            if (w->size > 1 && !w->seg) {
                const hcl_encoder *e = &m->enc[v];
                MPI_OK(MPI_Iallreduce(MPI_IN_PLACE, m->grads + e->param_begin,
                                      (int)(e->param_end - e->param_begin), MPI_FLOAT, MPI_SUM,
                                      w->comm, &reqs[nreq++]));
                int done;
                MPI_OK(MPI_Testall(nreq, reqs, &done, MPI_STATUSES_IGNORE));
            }
        }
        t5 = hcl_now();
        if (w->seg) {
            shared_grad_sum(w);
        } else if (w->size > 1) {
            int64_t rest = m->enc[V - 1].param_end;
            MPI_OK(MPI_Iallreduce(MPI_IN_PLACE, m->grads + rest, (int)(m->nparams - rest), MPI_FLOAT,
                                  MPI_SUM, w->comm, &reqs[nreq++]));
        }
    }
    /* every worker's busy time (its compute without the collectives' waits) rides along */
    const double busy = (t1 - t0) + (t3 - t2 - w->t_colreduce) + (t5 - t4 - t_rswait);
    for (int r = 0; r < w->size; r++) scal[ns + r] = r == w->rank ? busy : 0.0;
    scal[ns + w->size] = train && w->zero ? w->norm2 : 0.0;   /* the slices' squared gradient norms */
    if (w->size > 1) {
        MPI_OK(MPI_Allreduce(MPI_IN_PLACE, scal, ns + w->size + 1, MPI_DOUBLE, MPI_SUM, w->comm));
        if (nreq) MPI_OK(MPI_Waitall(nreq, reqs, MPI_STATUSES_IGNORE));
    }
    /* all reads of this step's shared embeddings are done everywhere (the next step writes) */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    memcpy(w->busy, scal + ns, sizeof(double) * (size_t)w->size);
    w->norm2 = scal[ns + w->size];
    t6 = hcl_now();

    /* Unpack the global scalars. */
    int k = 0;
    res->loss = scal[k++];
    res->supcon = scal[k++];
    res->ce = scal[k++];
    for (int i = 0; i < V; i++)
        for (int j = i + 1; j < V; j++) {
            res->pair_loss[i][j] = scal[k++];
            res->pair_used[i][j] = lr.pair_used[i][j];
        }
    res->lr = h->lr;

    /* after an update worker_update reads it (with zero another worker may be writing it now) */
    if (!train) res->logit_scale = worker_logit_scale(w);
    LOG_DEBUG("step %lld phases (ms): encode %.2f all-gather %.2f loss %.2f (column reduces %.2f) "
              "reduce-scatter %.2f backward %.2f all-reduce wait %.2f", (long long)h->step, (t1 - t0) * 1e3,
              (t2 - t1) * 1e3, (t3 - t2) * 1e3, w->t_colreduce * 1e3, (t4 - t3 + t_rswait + t_rssum) * 1e3,
              (t5 - t4 - t_rswait - t_rssum) * 1e3,
              (t6 - t5) * 1e3);
    res->t_allgather = t2 - t1;
    res->t_reduce_scatter = t4 - t3 + t_rswait;
    res->t_allreduce = (t6 - t5) + w->t_colreduce;
    res->t_compute = busy;
}

void worker_update(hcl_worker *w, hcl_step_result *res) {
    hcl_model *m = &w->model;
    double t0 = hcl_now();
    /* Same decision and same update on every replica: the loss and gradients are global. With
     * zero the replica is one shared copy, each worker updating its slice [p0, p1) from its sum
     * of the gradients there; the norm is the all-reduced sum of the slices' squares. */
    const int64_t lo = w->zero ? w->p0 : 0, hi = w->zero ? w->p1 : m->nparams;
    double norm = w->zero ? sqrt(w->norm2) : optim_grad_norm(m->grads, m->nparams);
    res->grad_norm = norm;
    if (!isfinite(res->loss) || !isfinite(norm)) {
        res->skipped = 1;
        w->skipped++;
    } else {
        if (w->opt.clip_norm > 0) optim_clip(m->grads + lo, hi - lo, norm, w->opt.clip_norm);
        const int own_t = m->logit_t >= lo && m->logit_t < hi;
        float t_before = own_t ? m->params[m->logit_t] : 0.0f;
        w->updates++;
        optim_step_range(&w->opt, res->lr, w->updates, m->params, m->grads, w->opt_state, m->tensors,
                         m->ntensors, lo, hi);
        float *t = &m->params[m->logit_t];
        if (own_t && !w->learn_t) *t = t_before;
        if (own_t && w->learn_t) *t = *t < w->t_min ? w->t_min : *t > w->t_max ? w->t_max : *t;
    }
    if (w->zero) shared_barrier(w);   /* every slice updated before anyone reads the parameters */
    res->logit_scale = worker_logit_scale(w);
    res->t_compute += hcl_now() - t0;
}

void worker_step(hcl_worker *w, const uint8_t *buf, hcl_step_result *res) {
    worker_forward_backward(w, buf, res);
    if (((const hcl_batch_header *)buf)->flags & HCL_BATCH_TRAIN) worker_update(w, res);
}

void worker_summed_grads(const hcl_worker *w, float *out) {
    const int64_t P = w->model.nparams;
    if (!w->zero) {
        memcpy(out, w->model.grads, sizeof(float) * (size_t)P);
        return;
    }
    for (int k = 0; k < w->size; k++) {
        int64_t a, e;
        param_slice(P, k, w->size, &a, &e);
        memcpy(out + a, w->seg[k] + a, sizeof(float) * (size_t)(e - a));
    }
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
    if (!w->zero || w->rank == 0) {   /* with zero one copy, written once */
        memcpy(w->model.params, buf, sizeof(float) * (size_t)np);
        memcpy(w->opt_state, buf + np, sizeof(float) * (size_t)ns);
    }
    if (w->zero) shared_barrier(w);
    int64_t counters[2];
    memcpy(counters, buf + np + ns, sizeof counters);
    w->updates = counters[0];
    w->skipped = counters[1];
}
