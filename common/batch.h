/* batch: the per-step message the coordinator sends each worker, and how a global batch is split.
 *
 * One contiguous byte buffer per worker and step:
 *   hcl_batch_header                      (fixed size, below)
 *   split    int64  (nworkers + 1)        row bounds: worker r owns rows [split[r], split[r+1])
 *   labels   int32  (n)                   the whole global batch's labels (-1: none)
 *   mask     uint8  (n, nviews)           the whole global batch's presence mask, padded to 8
 *   view v   float  (b, width_v)          this worker's rows of each view, v = 0..nviews-1
 * Labels and mask travel whole because every worker's loss needs them for all N columns; the
 * features travel only to their owner; every worker needs the whole split to size its
 * collectives (even, or --balance adaptive's shares). Commands that must take effect at the same
 * step on every worker ride in the header (`flags`; `lr`, the schedule's rate times the
 * operator's scale). */
#ifndef HCL_BATCH_H
#define HCL_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "dataset.h"
#include "loss.h"
#include "model.h"
#include "optim.h"
#include "util.h"

#define HCL_BATCH_MAGIC 0x48434c42u /* "HCLB" */

enum hcl_batch_flag {
    HCL_BATCH_TRAIN = 1u << 0,  /* forward, backward, update */
    HCL_BATCH_EVAL = 1u << 1,   /* forward and loss only (validation) */
    HCL_BATCH_STOP = 1u << 2,   /* no data: leave the step loop */
    HCL_BATCH_CHECK = 1u << 3,  /* after the step, compare parameter checksums across replicas */
    HCL_BATCH_SNAPSHOT = 1u << 4, /* no data: worker 0 sends its replica's state to rank 0 */
    HCL_BATCH_PING = 1u << 5,   /* no data: a paused job's heartbeat (resets the workers' watchdog) */
};

/* Jobs rank 0 keeps outstanding: the batch being computed and the next two, already sent. A
 * worker has one receive posted ahead (two buffers); the message after it waits inside MPI (a
 * large one as its rendezvous header only) until the worker posts the receive, at the start of
 * its next step. Two ahead, not one: rank 0 runs at a low priority on cores the workers keep
 * busy, and with one batch ahead its late wakeups left workers waiting for their next batch in
 * 10-20% of W1's steps (up to 1.5 ms each). */
#define HCL_BATCHES_IN_FLIGHT 3

/* MPI tags between rank 0 and the workers (ranks 1..N-1). Each batch message goes twice: its
 * header alone first (HCL_TAG_BATCH_HEAD, small: it arrives at once), then the whole message, so
 * that a worker tells a coordinator that sent nothing from a transfer under way (watchdog.h). */
enum hcl_tag { HCL_TAG_BATCH = 11, HCL_TAG_RESULT = 12, HCL_TAG_SNAPSHOT = 13, HCL_TAG_BATCH_HEAD = 14 };

/* After a SNAPSHOT job's result, worker 0 sends (HCL_TAG_SNAPSHOT) one float array: the model
 * parameters (nparams), then the optimizer state (optim_state_floats), then two int64 counters
 * (optimizer updates, skipped steps) as 4 floats' worth of bytes. A resumed run receives the
 * same layout from rank 0 by broadcast before the first batch. */
size_t batch_snapshot_floats(int64_t nparams, int64_t nstate);

/* Broadcast once from rank 0 to every rank before the first batch (MPI_Bcast of the bytes: all
 * ranks run the same binary). status != 0: rank 0 could not start; every rank exits with it. */
typedef struct {
    int32_t status;
    int32_t learn_t;
    int32_t threads;            /* matmul threads per worker, 0: cores / workers on the node */
    int32_t resume;             /* 1: a snapshot follows by broadcast (batch_snapshot_floats) */
    int32_t direct;             /* --data-plane direct: workers read rows from data_dir/val_dir */
    int32_t shm_grads;          /* --grad-allreduce shm: worker_share_memory when on one node */
    int32_t balance;            /* --balance adaptive: uneven shares (batch_share_max rows at most) */
    int32_t matmul;             /* --matmul: enum hcl_matmul_engine (matmul.h) */
    int32_t precision;          /* --precision: enum hcl_precision (matmul.h) */
    int32_t comm_bf16;          /* --comm-dtype bf16: worker_comm_bf16 */
    int64_t loss_memory;        /* --loss-memory, MB a worker may keep the loss's logits in */
    char data_dir[1024];
    char val_dir[1024];
    int64_t seed;
    double worker_timeout;      /* seconds without a batch before a worker ends itself */
    int64_t batch;              /* global batch rows: the largest n a batch will have */
    uint64_t max_batch_bytes;   /* largest buffer a worker receives */
    char tel_endpoint[256];     /* telemetry PULL socket of rank 0 (tcp), CURVE keys (Z85) */
    char tel_server_public[41];
    char tel_client_secret[41];
    hcl_model_config mc;
    hcl_loss_config lc;
    hcl_optim_config oc;
} hcl_setup;


typedef struct {
    uint32_t magic;
    uint32_t flags;
    int64_t step;       /* 0-based index of the update this batch makes */
    int64_t epoch;
    int64_t n;          /* rows in the global batch */
    int64_t r0, b;      /* this worker's rows [r0, r0 + b) */
    int32_t nviews;
    int32_t has_labels;
    float lr;           /* learning rate of this step (schedule x operator scale) */
    int32_t nworkers;   /* entries of the split, less one */
} hcl_batch_header;

/* The one builder of batch headers, for the coordinator and the tests alike: the header of
 * worker w's (of nw) message for a batch of n rows split by split (nw + 1 bounds, copied right
 * after the header). A job without data (STOP, SNAPSHOT, PING) passes n = 0, split = NULL,
 * nw = 0. Every other field is zero. */
void batch_header_init(uint8_t *msg, uint32_t flags, int64_t step, int64_t epoch, int64_t n,
                       const int64_t *split, int w, int nw, int nviews, int has_labels, float lr);

/* What worker 0 reports to rank 0 after each batch (MPI_Send of the bytes). */
typedef struct {
    int64_t step;                                    /* the header's step and flags, echoed */
    uint32_t flags;
    int32_t pad;
    double loss;                                     /* global loss */
    double pair_loss[HCL_MAX_VIEWS][HCL_MAX_VIEWS];  /* global InfoNCE of each pair, i < j */
    int pair_used[HCL_MAX_VIEWS][HCL_MAX_VIEWS];
    double supcon, ce;
    double grad_norm;                                /* before clipping */
    float logit_scale;                               /* exp(t) after the step */
    float lr;
    int skipped;                                     /* non-finite loss or gradient: no update */
    double t_compute, t_allgather, t_reduce_scatter, t_allreduce; /* seconds */
    double t_wait;                                   /* waiting for this batch to arrive */
} hcl_step_result;
/* Worker 0's result message is the hcl_step_result followed by every worker's busy seconds in
 * this step (double, nworkers): its compute without the collectives' waits, from which
 * --balance adaptive sets the next shares. */
size_t batch_result_bytes(int nworkers);

/* --data-plane direct: the message is the header, the split and the batch's N dataset row
 * indices (int64); each worker reads labels, mask and its own rows from the dataset files itself
 * (batch_assemble) into the layout above, so the step is the same code either way. */
size_t batch_index_bytes(int64_t n, int nworkers);
/* Build the full batch (batch_layout of the header's n and b) in out from an index message,
 * reading labels and mask of all n rows and the features of rows [r0, r0+b) from ds. */
void batch_assemble(uint8_t *out, const uint8_t *msg, const hcl_dataset *ds);
const int64_t *batch_index_rows(const uint8_t *msg);
/* The split of a batch message (either layout): right after the header, whatever n and b. */
static inline int64_t *batch_split_bounds(uint8_t *msg) {
    return (int64_t *)(msg + ((sizeof(hcl_batch_header) + 7) & ~(size_t)7));
}

/* Worker r of W owns rows [r0, r0+b): as even as possible, the first n % W get one more. */
void batch_split(int64_t n, int w, int r, int64_t *r0, int64_t *b);
/* The most rows one of w workers owns of a batch of n: the even share, or with --balance
 * adaptive 1.5 times it (buffers are sized for this). */
int64_t batch_share_max(int64_t n, int w, int balance);

/* Byte offsets of the parts of a batch buffer; returns the total size. */
typedef struct {
    size_t split, labels, mask, view[HCL_MAX_VIEWS], total;
} hcl_batch_layout;
size_t batch_layout(hcl_batch_layout *l, int64_t n, int64_t b, int nworkers, int nviews, const int64_t *widths);
/* 1 if a received split is sound: nworkers + 1 bounds from 0 to the header's n, none
 * decreasing, no share above b_max, and the header's r0 and b are worker rank's share. */
int batch_split_ok(const hcl_batch_header *h, const int64_t *split, int rank, int nworkers, int64_t b_max);

/* The one check of a received batch message's header (either layout: the split follows the
 * header in both), before anything is read by it: the magic; for a TRAIN or EVAL batch also its
 * worker count, its views, its rows (n at most n_max, b at most b_max) and its split
 * (batch_split_ok for worker rank of nworkers). A message that fails it is a programmer error:
 * HCL_CHECK aborts with one line naming the step and the values. */
void batch_header_check(const uint8_t *msg, int rank, int nworkers, int nviews, int64_t n_max, int64_t b_max);

#endif
