/* train: rank 0's life of a training run, and the run's state every room of the coordinator
 * works on.
 *
 * The rooms (each its own file):
 *   prepare.h     the flags and the data -> the model, loss and optimizer configurations
 *   checkpoint.h  the run directory, checkpoints, resume
 *   batcher.h     the batch order and each worker's message
 *   transport.h   the workers on other ranks, or the worker in this process, behind one interface
 *   jobs.h        which job comes next (steps, validation batches, snapshots, pings, stop)
 *   metrics.h     metrics.jsonl, the progress line, hclctl status's numbers
 * and run_train (here) is the loop that ties them: start the workers; for each job: pack,
 * submit, await, record; finish. main.c calls, on rank 0: run_prepare, run_resume,
 * run_open_dir, run_control_open, run_setup (sent to the workers), run_train, run_free.
 *
 * Exports: hcl_run, run_control_open, run_install_signals, run_train, run_free. */
#ifndef HCL_TRAIN_H
#define HCL_TRAIN_H

#include <stdio.h>

#include "batch.h"
#include "batcher.h"
#include "ckpt.h"
#include "config.h"
#include "control.h"
#include "dataset.h"
#include "evaluate.h"
#include "jobs.h"
#include "loss.h"
#include "matmul.h"
#include "memlimit.h"
#include "metrics.h"
#include "prometheus.h"
#include "model.h"
#include "optim.h"

typedef struct {
    hcl_config cfg;             /* the flags; hclctl set changes log_every and the checkpoint
                                 * settings here too (they go into checkpoints' config text) */
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
    int direct;                 /* --data-plane direct, or auto with every worker on this host */
    int shm_grads;              /* --grad-allreduce shm */
    int comm_bf16;              /* --comm-dtype bf16 */
    int balance;                /* --balance adaptive */
    enum hcl_matmul_engine matmul;  /* --matmul */
    enum hcl_precision precision;   /* --precision */
    hcl_batcher bt;
    hcl_metrics metrics;
    hcl_jobs jobs;              /* during run_train */
    /* checkpoints */
    int64_t start_step;         /* first step to run (> 0 when resumed) */
    char resume_from[CKPT_PATH_MAX];  /* checkpoint directory resumed from, "" none */
    hcl_model ck_model;         /* tensor table and a parameter buffer for writing checkpoints */
    float *snap;                /* (batch_snapshot_floats) a replica's state */
    size_t snap_floats;
    int64_t nstate;             /* optimizer state floats */
    int64_t last_ckpt_step;     /* -1 none */
    char last_ckpt_path[CKPT_PATH_MAX];
    char last_ckpt_error[HCL_ERR_MAX + 64];
    ctl_request ckpt_waiters[CONTROL_QUEUE_MAX];  /* `checkpoint` requests answered when written */
    int nckpt_waiters;
    int world_size;
    char (*hosts)[CONTROL_HOST_MAX];  /* every rank's host name (run_control_open; not owned) */
    double lr_scale;            /* operator's multiplier on the schedule (a resumed run's to start) */
    /* control plane */
    hcl_control *ctl;
    hcl_status st;              /* what hclctl status shows; the loop keeps it current */
    double last_health;
    double last_in_step;        /* when a long step's progress line was last shown */
    hcl_setup tel_setup;        /* telemetry endpoint and keys handed to the workers */
    hcl_evaluator ev;           /* --eval-every */
    int has_ev;
    /* monitoring */
    hcl_tb tb;                  /* --tensorboard (f NULL: off) */
    hcl_prom *prom;             /* --prometheus, NULL off */
    /* memory (run_check_memory) */
    int one_host;               /* every rank on this host (main.c: world_on_one_host) */
    memlimit_state mem_start;   /* this process before the data: as any rank starts */
    double mem_data;            /* address space of the datasets' mappings */
    double mem_need[2];         /* this process's expected peak: address space, resident */
} hcl_run;

/* Bind the control socket (--control, default ipc in the run directory) and the telemetry
 * socket for the workers of a world of world_size ranks (world_size - 1 on ranks 1.., or one in
 * this process), which run on hosts[rank] (every rank's host name; kept, not owned). */
int run_control_open(hcl_run *r, int world_size, char (*hosts)[CONTROL_HOST_MAX], char *err);
/* SIGUSR1: checkpoint at the next step boundary; SIGUSR2, SIGTERM, SIGINT: checkpoint there
 * and exit 0. Installed right after MPI_Init, so no signal falls between. */
void run_install_signals(void);
/* The run: su is what the workers got (run_setup); workers on ranks 1..workers, or workers 0
 * for the worker in this process. Returns the exit code. */
int run_train(hcl_run *r, const hcl_setup *su, int workers);
void run_free(hcl_run *r);

#endif
