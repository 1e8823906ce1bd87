/* step: one worker's replica of the model and the exact sharded training step (MATH.md).
 *
 *   encode own rows of every view            model_encode, (b, D) per view
 *   all-gather embeddings, all views packed  MPI_Allgatherv -> (N, D) per view
 *   loss of own rows against all columns     loss_forward_backward -> dz (N, D) per view
 *   reduce-scatter dz back to the owners     MPI_Reduce_scatter -> own (b, D) per view
 *   backward through the encoders            all-reduce of each encoder's gradient slice
 *                                            starts as soon as its backward is done
 *   all-reduce loss parts, finite check, clip, optimizer step, clamp of t
 * With one worker the collectives are skipped. Every buffer is sized in worker_init. */
#ifndef HCL_STEP_H
#define HCL_STEP_H

#include <mpi.h>
#include <stdint.h>

#include "batch.h"
#include "loss.h"
#include "model.h"
#include "optim.h"

typedef struct {
    double loss;                                     /* global loss */
    double pair_loss[HCL_MAX_VIEWS][HCL_MAX_VIEWS];  /* global InfoNCE of each pair, i < j */
    int pair_used[HCL_MAX_VIEWS][HCL_MAX_VIEWS];
    double supcon, ce;
    double grad_norm;                                /* before clipping */
    float logit_scale;                               /* exp(t) after the step */
    float lr;
    int skipped;                                     /* non-finite loss or gradient: no update */
    double t_compute, t_allgather, t_reduce_scatter, t_allreduce; /* seconds */
} hcl_step_result;

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
    float *zpack;                 /* (V, b_max, D) own embeddings packed for the all-gather */
    float *zgath;                 /* (N, V, D) ... as gathered, rank-major */
    float *zall[HCL_MAX_VIEWS];   /* (N, D) per view */
    float *dzall[HCL_MAX_VIEWS];  /* (N, D) per view */
    float *dzpack;                /* (N, V, D) rank-major for the reduce-scatter */
    float *dzown;                 /* (V, b_max, D) */
    int *counts, *displs;         /* per worker, in floats of (b_r * V * D) */
    int64_t *r0s, *bs;
} hcl_worker;

/* Model, loss and optimizer configurations; n is the global batch size (the largest batch a
 * step will see, train or eval). learn_t 0: t stays at mc->t_init (a fixed temperature). */
int worker_init(hcl_worker *w, MPI_Comm comm, const hcl_model_config *mc,
                const hcl_loss_config *lc, const hcl_optim_config *oc, int learn_t,
                uint64_t seed, int64_t n, char *err);
void worker_free(hcl_worker *w);

/* One step on the batch in buf (layout of batch.h): TRAIN updates, EVAL only computes the loss. */
void worker_step(hcl_worker *w, const uint8_t *buf, hcl_step_result *res);

/* The logit scale exp(t) now. */
float worker_logit_scale(const hcl_worker *w);

#endif
