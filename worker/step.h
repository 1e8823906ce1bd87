/* step: one worker's replica of the model and the exact sharded training step (docs/MATH.md), as
 * phases (step.c), each exchange going through the worker's hcl_exchange (exchange.h):
 *
 *   1. encode            own rows of every view, model_encode: (b, D) per view; the gathered
 *                        views (the loss reads all N rows of: loss_gathered_views, the column
 *                        views of its pairs) first
 *   2. all-gather        the gathered views' embeddings -> (N, D) each, started when they are
 *                        encoded, the other views encoded meanwhile
 *   3. loss              own rows against all columns, loss_forward_backward -> dz (N, D) per
 *                        gathered view, (b, D) per other; the pairs' column log-sum-exps' maxes
 *                        and sums are reduced over the workers between the loss's two passes
 *   4. reduce-scatter    dz back to the owners -> own (b, D) per gathered view, while the
 *                        other views' encoders run backward
 *   5. backward          through the encoders; over MPI the all-reduce of each layer's
 *                        gradient starts as soon as its backward is done (step_poll)
 *   6. reduce            the gradient all-reduce completes; loss parts and busy times summed
 *   7. update            finite check, clip, optimizer step, clamp of t (TRAIN only)
 * With one worker nothing is exchanged; with worker_share_memory (all workers on one node) the
 * exchanges go through shared memory instead of MPI's collectives. Every buffer is sized in
 * worker_init. */
#ifndef HCL_STEP_H
#define HCL_STEP_H

#include <mpi.h>
#include <stdint.h>

#include "batch.h"
#include "exchange.h"
#include "loss.h"
#include "memlimit.h"
#include "model.h"
#include "optim.h"
#include "ring.h"


#define HCL_MICRO_ROWS 512                /* rows per encoder call (activation memory) */
#define HCL_PACKED_MAX_BYTES (4 << 20)    /* one packed collective up to this N x G x D size */
#define HCL_RS_FLOATS (1 << 16)           /* staging of one reduce-scatter beyond it (256 KB) */

/* Who owns the replica's buffers. worker_init allocates every one on the private heap, sized
 * for the largest batch (nothing is allocated per step). worker_share_memory (exchange_shm.c)
 * then moves some into the workers' shared segments: it frees the private buffer and points
 * the field into a segment.
 *
 *   buffer                        private: MPI or one worker     shared memory (seg)
 *   model.params                  model_init                     zero: worker 0's segment, one
 *   opt_state                     worker_init                      copy for all workers
 *   model.grads                   model_init                     this worker's segment
 *   zall[v], v gathered (N, D)    worker_init                    shm_views: worker 0's segment
 *   dzall[v], v gathered (N, D)   worker_init                    shm_views: this worker's segment
 *   zall, dzall of other views    worker_init, (b_max, D)        private
 *   zpack, zgath, dzpack, dzown   worker_init when packed        shm_views: freed, NULL
 *   seg, sum_src, the segments    -                              exchange_shm_init
 *   acts, loss, and the rest      worker_init                    private
 *     (counts, rsbuf, colmax, scal, busy, ...)
 *
 * worker_free is the one place that frees them: exchange_shm_free unmaps the segments and sets
 * every field that pointed into them to NULL; what is left set is private heap. No MPI request
 * is outstanding between steps. */
typedef struct hcl_worker {
    MPI_Comm comm;                /* the workers' communicator */
    int rank, size;
    hcl_exchange xch;             /* how each exchange is done (worker_select_exchange) */
    hcl_model model;
    hcl_model_acts acts;
    hcl_loss_config loss_cfg;
    hcl_loss_ctx loss;
    hcl_optim_config opt;
    float *opt_state;
    int64_t updates;              /* optimizer updates taken (AdamW's t) */
    int64_t skipped;              /* steps skipped for a non-finite loss or gradient */
    int learn_t;                  /* 0: the logit scale is fixed */
    float t_min, t_max;           /* clamp of t after each update: [0, ln 100] */
    int64_t upd0, upd1;           /* the parameters this worker updates: all, or with zero its slice */
    int64_t n;                    /* global batch rows */
    int64_t b_max;
    int64_t micro;                /* rows per encoder call */
    int enc_order[HCL_MAX_VIEWS]; /* encoders' forward order: the gathered views first */
    int bwd_order[HCL_MAX_VIEWS]; /* encoders' backward order: views not gathered first, then by gradient size, largest first */
    int gathered[HCL_MAX_VIEWS];  /* view v is all-gathered (loss_gathered_views; all with one
                                   * worker); zall, dzall of another hold only (b_max, D) */
    int gv[HCL_MAX_VIEWS], ngv;   /* the gathered views, in order */
    float *zall[HCL_MAX_VIEWS];   /* (N, D) per gathered view, (b_max, D) per other */
    float *dzall[HCL_MAX_VIEWS];  /* the same shapes */
    int64_t *r0s, *bs;            /* every worker's rows this step: the batch's split */
    double *scal;                 /* (3 + V V + W + 1) the loss's scalars, the busy times and the
                                   * slices' squared gradient norms, summed */
    double *busy;                 /* (W) every worker's busy seconds in the last step */
    double t_colreduce;           /* seconds in the loss's column reduces this step */
    double t_rswait, t_rssum;     /* seconds waiting for the reduce-scatter, summing it, this step */
    int64_t inject_nan_step;      /* fault injection for tests (HCL_INJECT_NAN=STEP:WORKER): this
                                   * worker's gradient turns NaN at that step; -1 off */
    int inject_slow_us;           /* HCL_INJECT_SLOW=WORKER:US (tests): that worker's encode takes
                                   * US microseconds longer per own row, a slower core */

    /* MPI collectives (exchange_mpi.c) */
    int packed;                   /* one packed collective for all views (small batches) */
    float *zpack;                 /* (G, b_max, D) own embeddings of the G gathered views (packed) */
    float *zgath;                 /* (N, G, D) ... as gathered, rank-major (packed) */
    float *dzpack;                /* (N, G, D) rank-major for the reduce-scatter */
    float *dzown;                 /* (G, b_max, D) */
    int *counts, *displs;         /* per worker, in floats of (b_r * G * D) */
    int *vcounts, *vdispls;       /* per worker, in floats of (b_r * D): one view's collectives */
    int64_t rs_rows;              /* rows of each worker per chunked reduce-scatter (W rs_rows D
                                   * <= HCL_RS_FLOATS, at least 1) */
    float *rsbuf;                 /* (W, rs_rows, D) staging of a chunked reduce-scatter */
    int *rscounts;                /* per worker, its rows in the chunk x D */
    float *colmax;                /* (pairs, N) the loss's column maxes over the workers */
    MPI_Request agreq[HCL_MAX_VIEWS];     /* the all-gather's requests, nag of them */
    MPI_Request rsreq;                    /* shared memory: the reduce-scatter's barrier */
    MPI_Request *rsreqs;          /* (2 W) packed: the reduce-scatter's messages, nrs of them */
    int nrs;
    float *rsin;                  /* packed: (W, b_max G D) every worker's contribution to own rows
                                   * (bf16 in its first half with --comm-dtype bf16) */
    int nag;
    hcl_ring *ring;               /* the gradient all-reduce over MPI (ring.h; NULL: one worker) */
    struct hcl_sparse *sparse;    /* the bag encoders' tables (sparse.h; NULL: none) */
    int slice0[HCL_MAX_VIEWS];    /* the ring's slice of encoder v's layer 0 (layer k: + k) */
    unsigned started[HCL_MAX_VIEWS]; /* this step: bit k, the sum of encoder v's layer k started */
    int bwd_last;                 /* the backward running is the encoder's last micro-batch */
    MPI_Request *prefetch[2];     /* the caller's receives of the next batch (worker.c), or NULL:
                                   * step_poll tests them too, so that the batch moves during the
                                   * encoders and the loss (Open MPI moves it only inside MPI calls
                                   * of this process) instead of during the gradient all-reduce */
    int bf16;                     /* --comm-dtype bf16: the embeddings and gradients on the wire as
                                   * bf16 (worker_comm_bf16); the buffers below hold them */
    uint16_t *zpack16, *zgath16;  /* packed: (G, b_max, D), (N, G, D) */
    uint16_t *dzpack16;           /* packed: (N, G, D) */
    uint16_t *z16;                /* per view: (G, N, D) the gathered views' embeddings */
    uint16_t *rs16;               /* per view: (W + 1, rs_rows, D) the reduce-scatter's staging */

    /* shared memory (exchange_shm.c) */
    float **seg;                  /* worker_share_memory: (W) every worker's shared-memory segment,
                                   * mapped here: its gradient buffer (seg[rank] is model.grads),
                                   * with shm_views its gradients of the gathered views' embeddings
                                   * (its dzall), and worker 0's the gathered views' embeddings
                                   * (everyone's zall). NULL: MPI collectives */
    size_t seg_grad_bytes;        /* bytes of a segment's gradient part (whole pages) */
    float **sum_src;              /* (W) scratch: the buffers a shared-memory sum reads */
    int shm_views;                /* the all-gather and reduce-scatter through the segments too
                                   * (batches of one packed collective's size) */
    int zero;                     /* ZeRO-1 in the segments (AdamW, SGD): the parameters and the
                                   * optimizer state are one copy at the end of worker 0's segment;
                                   * each worker sums the gradients of its slice [p0, p1) only and
                                   * updates that slice; a barrier after the update */
    int64_t p0, p1;               /* this worker's slice of the parameters (whole cache lines) */
    double norm2;                 /* zero: the squared gradient norm (this slice's, then global) */
    int64_t col_off;              /* values column-reduced so far this step (shared memory) */
    int64_t step_now;             /* the step being computed (the watchdog's messages) */
} hcl_worker;

/* Model, loss and optimizer configurations; n is the global batch size (the largest batch a
 * step will see, train or eval). learn_t 0: t stays at mc->t_init (a fixed temperature).
 * balance 1: shares up to batch_share_max(n, W, 1) rows (--balance adaptive). */
int worker_init(hcl_worker *w, MPI_Comm comm, const hcl_model_config *mc,
                const hcl_loss_config *lc, const hcl_optim_config *oc, int learn_t,
                uint64_t seed, int64_t n, int balance, char *err);
void worker_free(hcl_worker *w);
/* What worker_init, loss_ctx_keep(--loss-memory) and worker_share_memory will allocate for the
 * setup su with W workers (and with snapshot a replica's snapshot buffer), by part, into need
 * (memlimit.h); nothing is allocated. The batches' buffers, the threads and the matmul engines'
 * buffers are the caller's to add. */
int worker_memory(memlimit_need *need, const hcl_setup *su, int W, int snapshot, char *err);
/* Collective over the workers, after worker_share_memory: the embeddings, their gradients and
 * the parameter gradients cross the wire as bf16 (--comm-dtype bf16), sums in f32 (ring.h).
 * Exchanges through shared memory stay f32: it is for the network. Returns 1 if on (MPI
 * collectives in use), 0 if not (one worker, or shared memory). */
int worker_comm_bf16(hcl_worker *w);
/* Choose the exchange of each operation from the worker's mode (size, packed, bf16, seg,
 * shm_views, zero). worker_init and worker_share_memory call it; so does a test that changes packed. */
void worker_select_exchange(hcl_worker *w);
/* Collective over the workers. When they all share one node (and there are two or more), the
 * step's exchanges go through shared memory (POSIX shm segments, one per worker, mapped by
 * every worker; exchange_shm.c) instead of MPI's copies: the gradient all-reduce is each worker
 * summing 1/W of the parameters over every worker's buffer, in rank order, and writing the sum
 * into all of them (two barriers); for batches of one packed collective's size (shm_views) also
 * the gathered views' embeddings are one buffer each worker writes its rows into (the
 * all-gather is a barrier), and each worker's gradients of them stay in its segment, each
 * summing its own rows over all of them (the reduce-scatter is a barrier and that sum). The
 * same bits on every worker; with AdamW or SGD the parameters and optimizer state are one copy,
 * each worker updating its slice (zero). Call it right after worker_init, before any step or
 * resume. Returns 1 if on, 0 if not (another node, one worker, or a segment could not be made
 * on some worker -- /dev/shm full, say: a warning, and all keep the MPI collectives).
 * HCL_INJECT_SHM_FAIL=RANK makes that worker's segment fail (tests). */
int worker_share_memory(hcl_worker *w);

/* One step on the batch in buf (layout of batch.h): TRAIN updates, EVAL only computes the loss.
 * It is worker_forward_backward (phases 1-6: global loss and summed gradients, no update) then,
 * for TRAIN, worker_update (phase 7: finite check, clipping, optimizer, clamp of t) with the lr
 * of the header. The header is trusted: the worker loop checks what it receives
 * (batch_header_check), every other caller builds it with batch_header_init. */
void worker_step(hcl_worker *w, const uint8_t *buf, hcl_step_result *res);
void worker_forward_backward(hcl_worker *w, const uint8_t *buf, hcl_step_result *res);
void worker_update(hcl_worker *w, hcl_step_result *res);
/* The replica's state as one float array (batch_snapshot_floats: params, optimizer state,
 * updates and skipped counters), for checkpoints and resume. */
size_t worker_snapshot_floats(const hcl_worker *w);
void worker_snapshot_pack(const hcl_worker *w, float *buf);
void worker_snapshot_unpack(hcl_worker *w, const float *buf);

/* The summed parameter gradient after worker_forward_backward, nparams floats into out (with
 * zero each worker holds only its slice's sum; read from every worker's segment). */
void worker_summed_grads(const hcl_worker *w, float *out);

/* CRC-32C of the parameters: replicas compare it to prove they are bit-identical. */
uint32_t worker_param_checksum(const hcl_worker *w);

/* The logit scale exp(t) now. */
float worker_logit_scale(const hcl_worker *w);

#endif
