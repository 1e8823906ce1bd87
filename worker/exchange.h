/* exchange: how the workers' step exchanges embeddings, column statistics, gradients and
 * scalars, behind one table of functions (hcl_exchange) that the step's phases call (step.c).
 *
 *   one worker         nothing to exchange (exchange_solo)
 *   MPI, packed        small batches (G N D floats <= HCL_PACKED_MAX_BYTES): one collective for
 *                      all gathered views through packing buffers (exchange_mpi_packed)
 *   MPI, per view      larger batches: one in-place collective per view, the reduce-scatter in
 *                      chunks of rs_rows rows of every worker (exchange_mpi_views)
 *   MPI, bf16 wire     either of the two with the embeddings and gradients sent as bf16
 *                      (--comm-dtype bf16: exchange_mpi_*_bf16, worker_comm_bf16)
 *   shared memory      all workers on one node (worker_share_memory): the gradient all-reduce,
 *                      and for packed-size batches the all-gather, column reduce and
 *                      reduce-scatter too, through POSIX shm segments; with AdamW or SGD the
 *                      parameters and optimizer state are one shared copy (ZeRO-1)
 *                      (exchange_shm_apply: it replaces the operations it does)
 *
 * The table is chosen per operation by worker_select_exchange (step.c), the only place that
 * looks at the worker's mode flags (size, packed, bf16, seg, shm_views, zero). Every implementation
 * gives the same bits on every worker: sums go in rank order.
 *
 * exchange_mpi.c holds the MPI collectives (packed and per view) and the one-worker case,
 * exchange_shm.c the segments, their barriers, the shared sums and the ZeRO-1 slices. */
#ifndef HCL_EXCHANGE_H
#define HCL_EXCHANGE_H

#include <mpi.h>
#include <stdint.h>

#include "util.h"

typedef struct hcl_worker hcl_worker;

/* The operations in the order a step calls them (see step.h for the phases). */
typedef struct {
    /* 2. All-gather of the gathered views' own rows [r0, r0+b), encoded into zall: started as
     * soon as they are encoded, finished before the loss reads the other workers' rows. Start
     * is the first exchange call of every step (train or eval): the MPI collectives take their
     * counts from the step's split (r0s, bs) there. */
    void (*allgather_start)(hcl_worker *w, int64_t r0, int64_t b);
    void (*allgather_finish)(hcl_worker *w);
    /* 3. The loss's column reduce (loss.h colreduce, arg: the worker); NULL with one worker. */
    void (*column_reduce)(void *w, float *colmax, double *colsum, int64_t n);
    /* 4. Reduce-scatter of the gradients dzall of the gathered views: start points dz[v] of each
     * gathered view at where the summed gradient of own rows (b, D) will be; finish (before the
     * backward of the first gathered view) waits for it, in t_rswait, and sums, in t_rssum. */
    void (*reduce_scatter_start)(hcl_worker *w, int64_t r0, int64_t b, const float **dz);
    void (*reduce_scatter_finish)(hcl_worker *w, int64_t r0, int64_t b);
    /* 6. Gradient all-reduce: of encoder v's slice right after its backward, of the rest (head,
     * logit scale) after all backwards; with ZeRO the sum of squares of this worker's slice of
     * the summed gradient goes into norm2. */
    void (*grad_reduce_encoder)(hcl_worker *w, int v);
    /* ... or, where the exchange can (MPI; NULL otherwise), of each layer k of encoder v as soon
     * as its backward on the last micro-batch is done; grad_reduce_encoder then starts only the
     * layers not started (an encoder with no own rows). */
    void (*grad_reduce_layer)(hcl_worker *w, int v, int k);
    void (*grad_reduce_rest)(hcl_worker *w);
    /* 6. The step's n scalars summed over the workers in place, then every gradient all-reduce
     * complete and every read of this step's shared buffers done. */
    void (*reduce_finish)(hcl_worker *w, double *s, int n);
    /* 7. The update: the norm of the summed gradient; called by every worker after its update
     * of the parameters (a barrier when they are one shared copy). */
    double (*grad_norm)(const hcl_worker *w);
    void (*params_written)(hcl_worker *w);
    /* The summed parameter gradient, nparams floats into out (worker_summed_grads). */
    void (*summed_grads)(const hcl_worker *w, float *out);
} hcl_exchange;

extern const hcl_exchange exchange_solo, exchange_mpi_packed, exchange_mpi_views;
/* The same with bf16 on the wire (--comm-dtype bf16; worker_comm_bf16). */
extern const hcl_exchange exchange_mpi_packed_bf16, exchange_mpi_views_bf16;

/* Shared memory: make and map the segments and move the buffers they hold into them
 * (worker_share_memory); 1 if on. */
int exchange_shm_init(hcl_worker *w);
/* The operations the segments do, written over the MPI ones in x (w->seg set). */
void exchange_shm_apply(const hcl_worker *w, hcl_exchange *x);
/* Unmap the segments and set every pointer into them to NULL: what is left is private. */
void exchange_shm_free(hcl_worker *w);

#define HCL_TAG_RS 71   /* the packed reduce-scatter's messages on the workers' communicator */

#define MPI_OK(call) do { int _rc = (call); HCL_CHECK(_rc == MPI_SUCCESS, "%s failed (%d)", #call, _rc); } while (0)

#endif
