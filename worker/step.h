/* step: one worker's replica of the model and the exact sharded training step (MATH.md).
 *
 *   encode own rows of every view            model_encode, (b, D) per view
 *   all-gather the embeddings of the views   MPI_Iallgatherv -> (N, D) per gathered view (the
 *   the loss reads all rows of               column views of its pairs: V - 1 of a full graph),
 *                                            started when they are encoded, the other views
 *                                            encoded meanwhile
 *   loss of own rows against all columns     loss_forward_backward -> dz (N, D) per gathered
 *                                            view, (b, D) per other; the pairs' column
 *                                            log-sum-exps' maxes and sums are all-reduced
 *                                            between the loss's two passes (N values a pair)
 *   reduce-scatter dz back to the owners     MPI_Ireduce_scatter -> own (b, D) per view, while
 *                                            the other views' encoders run backward
 *   backward through the encoders            all-reduce of each encoder's gradient slice
 *                                            starts as soon as its backward is done
 *   all-reduce loss parts, finite check, clip, optimizer step, clamp of t
 * With worker_share_memory (all workers on one node) the all-gather, the reduce-scatter, the
 * column reduce and the gradient all-reduce go through shared memory instead. With one worker the collectives are
 * skipped. Every buffer is sized in worker_init. */
#ifndef HCL_STEP_H
#define HCL_STEP_H

#include <mpi.h>
#include <stdint.h>

#include "batch.h"
#include "loss.h"
#include "model.h"
#include "optim.h"


#define HCL_MICRO_ROWS 512                /* rows per encoder call (activation memory) */
#define HCL_PACKED_MAX_BYTES (4 << 20)    /* one packed collective up to this N x G x D size */
#define HCL_RS_FLOATS (1 << 16)           /* staging of one reduce-scatter beyond it (256 KB) */

typedef struct {
    MPI_Comm comm;                /* the workers' communicator */
    int rank, size;
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
    int64_t n;                    /* global batch rows */
    int64_t b_max;
    float *zpack;                 /* (G, b_max, D) own embeddings of the G gathered views (packed) */
    float *zgath;                 /* (N, G, D) ... as gathered, rank-major (packed) */
    float *zall[HCL_MAX_VIEWS];   /* (N, D) per gathered view, (b_max, D) per other */
    float *colmax;                /* (pairs, N) the loss's column maxes over the workers */
    double t_colreduce;           /* seconds in the loss's column reduces this step */
    int64_t col_off;              /* values column-reduced so far this step (shared memory) */
    float *dzall[HCL_MAX_VIEWS];  /* the same shapes */
    float *dzpack;                /* (N, G, D) rank-major for the reduce-scatter */
    float *dzown;                 /* (G, b_max, D) */
    int *counts, *displs;         /* per worker, in floats of (b_r * G * D) */
    int64_t *r0s, *bs;            /* every worker's rows this step: the batch's split */
    double *scal;                 /* (3 + V V + W) the loss's scalars and the busy times, summed */
    double *busy;                 /* (W) every worker's busy seconds in the last step */
    int *vcounts, *vdispls;       /* per worker, in floats of (b_r * D): one view's collectives */
    int64_t rs_rows;              /* rows of each worker per chunked reduce-scatter (W rs_rows D
                                   * <= HCL_RS_FLOATS, at least 1) */
    float *rsbuf;                 /* (W, rs_rows, D) staging of a chunked reduce-scatter */
    int *rscounts;                /* per worker, its rows in the chunk x D */
    int64_t micro;                /* rows per encoder call */
    int enc_order[HCL_MAX_VIEWS]; /* encoders' forward order: the gathered views first */
    int bwd_order[HCL_MAX_VIEWS]; /* encoders' backward order: views not gathered first, then by gradient size, largest first */
    int packed;                   /* one packed collective for all views (small batches) */
    int gathered[HCL_MAX_VIEWS];  /* view v is all-gathered (loss_gathered_views; all with one
                                   * worker); zall, dzall of another hold only (b_max, D) */
    int gv[HCL_MAX_VIEWS], ngv;   /* the gathered views, in order */
    int64_t inject_nan_step;      /* fault injection for tests (HCL_INJECT_NAN=STEP:WORKER): this
                                   * worker's gradient turns NaN at that step; -1 off */
    int inject_slow_us;           /* HCL_INJECT_SLOW=WORKER:US (tests): that worker's encode takes
                                   * US microseconds longer per own row, a slower core */
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
} hcl_worker;

/* Model, loss and optimizer configurations; n is the global batch size (the largest batch a
 * step will see, train or eval). learn_t 0: t stays at mc->t_init (a fixed temperature).
 * balance 1: shares up to batch_share_max(n, W, 1) rows (--balance adaptive). */
int worker_init(hcl_worker *w, MPI_Comm comm, const hcl_model_config *mc,
                const hcl_loss_config *lc, const hcl_optim_config *oc, int learn_t,
                uint64_t seed, int64_t n, int balance, char *err);
void worker_free(hcl_worker *w);
/* Collective over the workers. When they all share one node (and there are two or more), the
 * step's exchanges go through shared memory (POSIX shm segments, one per worker, mapped by
 * every worker) instead of MPI's copies: the gradient all-reduce is each worker summing 1/W of
 * the parameters over every worker's buffer, in rank order, and writing the sum into all of
 * them (two barriers); for batches of one packed collective's size (shm_views) also the
 * gathered views' embeddings are one buffer each worker writes its rows into (the all-gather is
 * a barrier), and each worker's gradients of them stay in its segment, each summing its own
 * rows over all of them (the reduce-scatter is a barrier and that sum). The same bits on every
 * worker; with AdamW or SGD the parameters and optimizer state are one copy, each worker updating
 * its slice (zero). Call it right after worker_init, before any step or resume. Returns 1 if on,
 * 0 if not (another node, one
 * worker, or a segment could not be made on some worker -- /dev/shm full, say: a warning, and
 * all keep the MPI collectives). HCL_INJECT_SHM_FAIL=RANK makes that worker's segment fail
 * (tests). */
int worker_share_memory(hcl_worker *w);

/* One step on the batch in buf (layout of batch.h): TRAIN updates, EVAL only computes the loss.
 * It is worker_forward_backward (global loss and summed gradients, no update) then, for TRAIN,
 * worker_update (finite check, clipping, optimizer, clamp of t) with the lr of the header. */
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
