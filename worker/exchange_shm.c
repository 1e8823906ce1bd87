/* exchange_shm: the workers' exchanges through shared memory, when all are on one node
 * (worker_share_memory; exchange.h for the interface, step.h for who owns which buffer).
 *
 * Each worker has one POSIX shm segment, mapped by every worker:
 *   its gradient buffer (nparams floats, to a page): model.grads of that worker
 *   with shm_views: its (N, D) gradients of each gathered view's embeddings (its dzall), and on
 *     worker 0 the (N, D) embeddings of each gathered view (everyone's zall)
 *   with shm_views: its loss column statistics, (pairs, N) sums then maxes
 *   with zero, on worker 0: the parameters and the optimizer state, one copy for all
 * An exchange is a barrier (MPI_Barrier or MPI_Ibarrier between two memory fences) and, where
 * something is summed, every worker summing its part over all segments in rank order, so every
 * worker gets the same bits. */
#include "exchange.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"
#include "step.h"
#include "util.h"
#include "vec.h"

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

/* Make this worker's segment and map the others' by name. Every failure is local and agreed on
 * by an all-reduce, so all fall back together and none waits on another. The names go as soon
 * as all have been mapped: nothing stays in /dev/shm, even after kill -9. Returns the (W)
 * mapped segments, or NULL on every worker when one failed (with a warning saying why). */
static float **segments_map(hcl_worker *w) {
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
        if (why[0])
            LOG_WARN("shared memory between the workers: %s; they use MPI collectives instead", why);
        return NULL;
    }
    return seg;
}

/* Move the buffers the segments hold into them, freeing the private ones (step.h: who owns
 * what). The segments start zeroed, as a fresh worker's gradients and optimizer state are: the
 * private ones go first, so no moment holds both (peak memory). */
static void segments_adopt(hcl_worker *w, float **seg) {
    hcl_model *m = &w->model;
    w->seg = seg;
    w->sum_src = hcl_calloc((size_t)w->size, sizeof *w->sum_src);
    free(m->grads);
    m->grads = seg[w->rank];
    const int64_t P = m->nparams;
    param_slice(m->ndense, w->rank, w->size, &w->p0, &w->p1);   /* the tables: worker/sparse.h */
    if (w->zero) {
        /* worker 0's replica becomes everyone's (all are the same: one seed); each worker
         * updates its slice of it */
        char *tail = (char *)segment_cols(w, 0) + segment_cols_bytes(w);
        float *params = (float *)tail;
        free(w->opt_state);
        w->opt_state = (float *)(tail + page_round((size_t)P * sizeof(float)));
        if (w->rank == 0) memcpy(params, m->params, sizeof(float) * (size_t)P);
        shared_barrier(w);
        free(m->params);
        m->params = params;
        w->upd0 = w->p0;
        w->upd1 = w->p1;
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
}

int exchange_shm_init(hcl_worker *w) {
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
    w->seg_grad_bytes = page_round((size_t)w->model.nparams * sizeof(float));
    /* The embeddings and their gradients too while they are small (one packed collective's
     * worth): a worker reads the rows of the others from their segments, and every page it
     * reads counts in its resident memory, so for large batches (where the loss's O(N^2)
     * dwarfs the copies anyway) MPI's collectives keep that memory flat in N. */
    w->shm_views = w->packed;
    /* ZeRO-1 (elementwise optimizers): one copy of the parameters and the optimizer state, each
     * worker updating its slice of them */
    w->zero = w->opt.kind != HCL_OPTIM_LARS;
    float **seg = segments_map(w);
    if (!seg) {
        w->shm_views = w->zero = 0;
        return 0;
    }
    segments_adopt(w, seg);
    /* glibc keeps freed heap blocks resident: the private buffers just replaced must not count
     * on top of the segments' pages */
    malloc_trim(0);
    return 1;
}

void exchange_shm_free(hcl_worker *w) {
    if (!w->seg) return;
    w->model.grads = NULL;
    if (w->zero) w->model.params = w->opt_state = NULL;
    for (int g = 0; w->shm_views && g < w->ngv; g++) w->zall[w->gv[g]] = w->dzall[w->gv[g]] = NULL;
    for (int r = 0; r < w->size; r++) munmap(w->seg[r], segment_bytes(w, r));
    free(w->seg);
    free(w->sum_src);
    w->seg = NULL;
    w->sum_src = NULL;
}

/* dst[d][0, len) = the sum over the workers' src[k][0, len), in rank order, for each of the ndst
 * destinations (which may be the sources: each 16 floats are read from every source before they
 * are written), in one pass, 16 lanes at a time. Returns, if squares, the sum of squares of the
 * sums with exactly optim_sum_squares's additions, block by block of BLOCK floats (each block's
 * 16 double lanes folded as it folds them, the blocks' results added in order), so the gradient
 * norm has the bits it had when the sum and the squares were two passes; else 0. */
static double sum_over_workers(float *const *src, int W, int64_t len, float *const *dst, int ndst, int squares) {
    enum { BLOCK = 2048 };
    double ss = 0.0;
    for (int64_t i0 = 0; i0 < len; i0 += BLOCK) {
        const int64_t n = len - i0 < BLOCK ? len - i0 : BLOCK;
        vd lo = {0}, hi = {0};   /* optim_sum_squares's lanes 0-7 and 8-15 */
        for (int64_t j = i0; j < i0 + n; j += VL) {
            /* the last, partial vector padded with zeros: it adds +0 to the lanes, as the scalar
             * tail adds nothing */
            const int64_t k = i0 + n - j;
            vf a = vf_ld(src[0] + j, k, 0.0f);
            for (int r = 1; r < W; r++) a += vf_ld(src[r] + j, k, 0.0f);
            for (int d = 0; d < ndst; d++) vf_st(dst[d] + j, a, k);
            if (squares) {
                vd l = vd_lo(a), h = vd_hi(a);
                lo += l * l;
                hi += h * h;
            }
        }
        if (squares) {
            double acc[VL];
            memcpy(acc, &lo, sizeof lo);
            memcpy(acc + VL / 2, &hi, sizeof hi);
            for (int w = VL / 2; w >= 1; w /= 2)
                for (int l = 0; l < w; l++) acc[l] += acc[l + w];
            ss += acc[0];
        }
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

/* The all-gather: the own rows are in the common buffer already (worker 0's segment); a barrier
 * tells all are there. */
static void shm_allgather_start(hcl_worker *w, int64_t r0, int64_t b) {
    (void)r0, (void)b;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    MPI_OK(MPI_Ibarrier(w->comm, &w->agreq[0]));
    w->nag = 1;
}

static void shm_allgather_finish(hcl_worker *w) {
    MPI_OK(MPI_Waitall(w->nag, w->agreq, MPI_STATUSES_IGNORE));
    w->nag = 0;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* The loss's column reduce (loss.h) in one barrier: each worker publishes its maxes and sums in
 * its segment, then every worker combines all of them in rank order (the same bits everywhere).
 * A worker's statistics are next written in the next step's loss, after collectives that every
 * worker enters only once done reading them. */
static void shm_column_reduce(void *arg, float *colmax, double *colsum, int64_t n) {
    hcl_worker *w = arg;
    double t0 = hcl_now();
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
}

/* The reduce-scatter: every worker's dz is in its segment; after a barrier each sums its own
 * rows (shared_dz_sum), into its own rows of its dzall. */
static void shm_reduce_scatter_start(hcl_worker *w, int64_t r0, int64_t b, const float **dz) {
    (void)b;
    const int64_t D = w->model.cfg.dim;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    MPI_OK(MPI_Ibarrier(w->comm, &w->rsreq));
    for (int g = 0; g < w->ngv; g++) dz[w->gv[g]] = w->dzall[w->gv[g]] + r0 * D;
}

static void shm_reduce_scatter_finish(hcl_worker *w, int64_t r0, int64_t b) {
    double tw = hcl_now();
    MPI_OK(MPI_Wait(&w->rsreq, MPI_STATUS_IGNORE));
    double ts = hcl_now();
    shared_dz_sum(w, r0, b);
    w->t_rswait = ts - tw;               /* a wait */
    w->t_rssum = hcl_now() - ts;         /* compute: busy, reported with the reduce-scatter */
}

/* The gradient all-reduce is one sum after all backwards (shared_grad_sum). */
static void shm_grad_reduce_encoder(hcl_worker *w, int v) {
    (void)w, (void)v;
}

static void shm_reduce_finish(hcl_worker *w, double *s, int n) {
    MPI_OK(MPI_Allreduce(MPI_IN_PLACE, s, n, MPI_DOUBLE, MPI_SUM, w->comm));
    /* all reads of this step's shared embeddings are done everywhere (the next step writes) */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* ZeRO-1: the global norm is the root of the all-reduced sum of the slices' squares (norm2). */
static double zero_grad_norm(const hcl_worker *w) {
    return sqrt(w->norm2);
}

/* ZeRO-1: every slice updated before anyone reads the parameters. */
static void zero_params_written(hcl_worker *w) {
    shared_barrier(w);
}

/* ZeRO-1: each worker holds only its slice's sum, in its segment. */
static void zero_summed_grads(const hcl_worker *w, float *out) {
    const int64_t P = w->model.ndense;
    for (int k = 0; k < w->size; k++) {
        int64_t a, e;
        param_slice(P, k, w->size, &a, &e);
        memcpy(out + a, w->seg[k] + a, sizeof(float) * (size_t)(e - a));
    }
}

void exchange_shm_apply(const hcl_worker *w, hcl_exchange *x) {
    if (w->shm_views) {
        x->allgather_start = shm_allgather_start;
        x->allgather_finish = shm_allgather_finish;
        x->column_reduce = shm_column_reduce;
        x->reduce_scatter_start = shm_reduce_scatter_start;
        x->reduce_scatter_finish = shm_reduce_scatter_finish;
    }
    x->grad_reduce_encoder = shm_grad_reduce_encoder;
    x->grad_reduce_layer = NULL;
    x->grad_reduce_rest = shared_grad_sum;
    x->reduce_finish = shm_reduce_finish;
    if (w->zero) {
        x->grad_norm = zero_grad_norm;
        x->params_written = zero_params_written;
        x->summed_grads = zero_summed_grads;
    }
}
