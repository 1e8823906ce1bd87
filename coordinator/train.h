/* train: the coordinator's side of a training run: data, configurations, the batch order, the
 * step loop, progress, metrics.jsonl.
 *
 * run_prepare turns the flags into the model, loss and optimizer configurations (checked
 * against the data) and opens the datasets; run_fill_batch packs worker r's slice of a global
 * batch (batch.h); run_train drives the step loop, with the workers on other ranks or, with one
 * rank, in this process. */
#ifndef HCL_TRAIN_H
#define HCL_TRAIN_H

#include <stdio.h>

#include "balance.h"
#include "batch.h"
#include "ckpt.h"
#include "control.h"
#include "evaluate.h"
#include "config.h"
#include "dataset.h"
#include "loss.h"
#include "model.h"
#include "optim.h"
#include "rng.h"

typedef struct {
    hcl_config cfg;
    hcl_dataset train, val;
    int has_train, has_val;
    int val_batches;            /* validation batches after each logged step */
    hcl_model_config mc;
    hcl_loss_config lc;
    hcl_optim_config oc;
    int learn_t;
    int64_t batch;              /* global batch rows */
    int64_t steps_per_epoch;
    int64_t total_steps;
    int64_t *perm;              /* (train.n) order of the current epoch */
    int64_t perm_epoch;         /* epoch perm belongs to, -1 none */
    int64_t *rows;              /* (batch) dataset rows of the batch being packed */
    FILE *metrics;
    /* checkpoints */
    int64_t start_step;         /* first step to run (> 0 when resumed) */
    char resume_from[CKPT_PATH_MAX];  /* checkpoint directory resumed from, "" none */
    hcl_model ck_model;         /* tensor table and a parameter buffer for writing checkpoints */
    float *snap;                /* (batch_snapshot_floats) a replica's state */
    size_t snap_floats;
    int64_t nstate;             /* optimizer state floats */
    double last_ckpt_time;
    int64_t last_ckpt_step;     /* -1 none */
    char last_ckpt_path[CKPT_PATH_MAX];
    char last_ckpt_error[HCL_ERR_MAX + 64];
    int world_size;
    /* control plane */
    hcl_control *ctl;
    hcl_status st;              /* what hclctl status shows; the loop keeps it current */
    struct hcl_telemetry *tel;  /* the in-process worker's telemetry (one rank) */
    double lr_scale;            /* operator's multiplier on the schedule */
    int paused;
    int stop_req, stop_no_ckpt; /* a stop decided by a signal or hclctl */
    ctl_request ckpt_waiters[CONTROL_QUEUE_MAX];  /* `checkpoint` requests answered when written */
    int nckpt_waiters;
    double last_ping, last_health;
    hcl_setup tel_setup;        /* telemetry endpoint and keys handed to the workers */
    hcl_evaluator ev;           /* --eval-every */
    int has_ev;
    int direct;                 /* --data-plane direct */
    int shm_grads;              /* --grad-allreduce shm */
    int balance;                /* --balance adaptive */
    hcl_balance bal;            /* the workers' shares of each batch (during run_train) */
    int64_t *last_split;        /* (workers + 1) the split of the last step's result */
} hcl_run;

int run_prepare(hcl_run *r, const hcl_config *cfg, char *err);
void run_free(hcl_run *r);

/* Dataset rows of global batch `step` (0-based) into r->rows; returns its epoch. */
int64_t run_batch_rows(hcl_run *r, int64_t step);
/* Pack worker w's share (of nw, split: nw + 1 bounds) of the batch of rows[0..n) from ds
 * into buf; returns the message's bytes (batch_layout). */
size_t run_fill_batch(const hcl_run *r, const hcl_dataset *ds, const int64_t *rows, int64_t n,
                      const int64_t *split, int w, int nw, uint32_t flags, int64_t step, int64_t epoch,
                      float lr, uint8_t *buf);
/* The largest message of a batch of n rows for one of nw workers (the largest share). */
size_t run_batch_bytes(const hcl_run *r, int64_t n, int nw);

/* --resume: find and load the checkpoint (into ck_model and snap), check it matches the data
 * and flags (one line naming what differs). Returns 0, also when there is nothing to resume. */
int run_resume(hcl_run *r, char *err);
/* Create the run directory, config.txt and metrics.jsonl (after run_prepare succeeded); a
 * resumed run keeps the metrics lines up to the step it resumes from. */
int run_open_dir(hcl_run *r, char *err);
/* Bind the control socket (--control, default ipc in the run directory) and the telemetry
 * socket for nworkers workers (1 for a worker in this process). */
int run_control_open(hcl_run *r, int nworkers, char *err);
/* What rank 0 broadcasts to the workers before the first batch. */
void run_setup(const hcl_run *r, hcl_setup *su);
/* SIGUSR1: checkpoint at the next step boundary; SIGUSR2, SIGTERM, SIGINT: checkpoint there
 * and exit 0. Installed right after MPI_Init, so no signal falls between. */
void run_install_signals(void);
/* The step loop: nw workers on ranks 1..nw, or nw = 0 for a worker in this process.
 * Returns the exit code. */
int run_train(hcl_run *r, int nw);

#endif
