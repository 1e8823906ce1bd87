/* jobs: the coordinator's job state machine, which decides what the workers get next.
 *
 * A job is one batch message to every worker (batch.h's flags): TRAIN, one step; EVAL, one
 * validation batch; SNAPSHOT, worker 0 sends the replica's state to rank 0 (for a checkpoint,
 * an evaluation or both); PING, a paused job's heartbeat; STOP. From the start step S:
 *   TRAIN S, TRAIN S+1, ...  to the last step
 *   EVAL 0 .. V-1            after each logged step (every --log-every steps, and the last)
 *   SNAPSHOT of step s       after the step that makes s updates (and its validation batches)
 *                            when a checkpoint is due (every --checkpoint-every steps, every
 *                            --checkpoint-interval seconds, the last step, SIGUSR1, hclctl
 *                            checkpoint; step 0's weights first with --checkpoint-every) or an
 *                            evaluation (--eval-every steps, and the last)
 *   PING                     while paused, every ping period (workers on other ranks only)
 *   STOP                     after the last step; or at a stop (SIGTERM, SIGINT, SIGUSR2,
 *                            hclctl stop), after a checkpoint of that step unless the stop
 *                            said --no-checkpoint or that checkpoint was just written
 *
 * Pure: no MPI, no ZeroMQ, no clock and no signal of its own. The operator's commands come in
 * as ctl_request values (jobs_command) and what to answer goes back as a value that the caller
 * sends; the signals and the time come in with each jobs_next. It writes the log lines an
 * operator reads ("hclctl pause: ...", "stop requested: ...").
 *
 * Exports: hcl_job, hcl_jobs (the state) with its hcl_jobs_config, jobs_init, jobs_command,
 * jobs_next, jobs_checkpoint_written, jobs_run_state. */
#ifndef HCL_JOBS_H
#define HCL_JOBS_H

#include <stdint.h>

#include "batch.h"
#include "ckpt.h"
#include "control.h"

/* Why a SNAPSHOT job is taken (bits). */
enum { JOBS_SNAP_CHECKPOINT = 1, JOBS_SNAP_EVAL = 2 };

typedef struct {
    uint32_t flags;             /* HCL_BATCH_* */
    int why;                    /* SNAPSHOT: JOBS_SNAP_* */
    int64_t step;               /* TRAIN: the step's 0-based index; EVAL: the logged step's;
                                 * SNAPSHOT, PING, STOP: the updates done */
    int64_t epoch;              /* TRAIN, EVAL */
    int64_t n;                  /* rows: TRAIN, EVAL */
    int eval_index;             /* EVAL: which validation batch */
    int log;                    /* TRAIN: a logged step (a metrics line, then its EVAL jobs) */
} hcl_job;

typedef struct {
    int64_t start_step;         /* the first step (> 0 when resumed) */
    int64_t total_steps;
    int64_t steps_per_epoch;
    int64_t batch;              /* rows of a batch (a last validation batch may have fewer) */
    int64_t val_rows;           /* rows of the validation set */
    int val_batches;            /* validation batches after each logged step; 0 none */
    int64_t log_every;          /* >= 1 */
    int64_t checkpoint_every;   /* steps; 0 off */
    double checkpoint_interval; /* seconds; 0 off */
    int64_t eval_every;         /* steps between evaluation snapshots; 0 none */
    int workers;                /* workers on other ranks; 0: the worker is in this process (no
                                 * PING, no parameter checksum CHECK) */
    double worker_timeout;      /* a PING every quarter of it while paused, 5 s at most */
    int64_t last_ckpt_step;     /* -1 none; the checkpoint a run resumed from */
    const char *last_ckpt_path; /* its directory, "" none */
    double lr_scale;            /* the operator's multiplier on the lr schedule */
} hcl_jobs_config;

/* The state. `c` holds the settings hclctl set changes (log_every, checkpoint_every,
 * checkpoint_interval, lr_scale): the caller reads them from there. */
typedef struct {
    hcl_jobs_config c;
    int64_t next_step;          /* the next TRAIN job's step */
    int eval_left, eval_next;   /* validation batches still to send, the next one's index */
    int64_t eval_step, eval_epoch;
    int64_t snapshot_at;        /* a SNAPSHOT job of this step is due next; -1 none */
    int snapshot_why;           /* JOBS_SNAP_* */
    int64_t last_snapshot;      /* step of the last checkpoint SNAPSHOT sent; -1 none */
    int stopped;                /* 1: stopping, STOP is next; 2: STOP sent */
    int paused;
    int stop_req, stop_no_ckpt; /* hclctl stop [--no-checkpoint] */
    int stopping;               /* a stop (signal or hclctl) takes effect */
    int ckpt_signal;            /* SIGUSR1: a checkpoint after the next step */
    double last_ckpt_time;      /* when the last checkpoint was decided (the interval's start) */
    double last_ping;
    int64_t last_ckpt_step;     /* -1 none */
    char last_ckpt_path[CKPT_PATH_MAX];
} hcl_jobs;

/* What happened since the last jobs_next. */
typedef struct {
    double now;                 /* monotonic seconds (hcl_now) */
    int checkpoint_signal;      /* SIGUSR1 came */
    int stop_signal;            /* SIGTERM, SIGINT or SIGUSR2 came */
} hcl_jobs_events;

/* How to answer a command. */
typedef struct {
    enum { JOBS_REPLY_OK, JOBS_REPLY_ERROR, JOBS_REPLY_LATER } kind;
    int64_t step;               /* OK: the step at which it takes or took effect */
    enum ctl_error code;        /* ERROR */
    const char *msg;            /* OK (may be NULL), ERROR; valid until the next call */
} hcl_jobs_reply;

/* A run from c->start_step; with --checkpoint-every on a fresh run, the first job is step 0's
 * SNAPSHOT (the initial weights). now starts the checkpoint interval. */
void jobs_init(hcl_jobs *js, const hcl_jobs_config *c, double now);

/* An operator's command (pause, resume, checkpoint, stop, set), acting at the next job. can_wait
 * 0: the caller holds no more checkpoint requests (a checkpoint request is then refused BUSY).
 * LATER: a checkpoint request, to be answered when that checkpoint is written or fails. */
void jobs_command(hcl_jobs *js, const ctl_request *rq, int can_wait, hcl_jobs_reply *out);

enum { JOBS_DONE = 0, JOBS_READY = 1, JOBS_IDLE = 2 };
/* The next job into *j: JOBS_READY; JOBS_IDLE when paused and nothing is due yet (ask again
 * later); JOBS_DONE after STOP. */
int jobs_next(hcl_jobs *js, const hcl_jobs_events *ev, hcl_job *j);

/* The checkpoint of `step` is on disk at path (answers a later hclctl checkpoint at that step
 * at once). */
void jobs_checkpoint_written(hcl_jobs *js, int64_t step, const char *path);

/* RUNNING, PAUSED or STOPPING, for hclctl status. */
enum hcl_run_state jobs_run_state(const hcl_jobs *js);

#endif
