/* metrics: what a run says about its progress: metrics.jsonl, the progress line, and the
 * numbers hclctl status shows.
 *
 * metrics.jsonl gets one line per logged step, written with the JSON writer (json.h: every
 * number reads back to the same double, a non-finite one is null):
 *   {"step": S, "epoch": E, "loss": L, "pair_loss": {"a:b": L_ab, ...}, ["supcon": ...,]
 *    ["ce": ...,] "lr": ..., "logit_scale": ..., "grad_norm": ..., "samples_per_s": ...,
 *    ["shares": [rows of each worker],] ["val_loss": ...,] "skipped": K,
 *    ["workers": [{"rank": R, "compute_s": ..., "comm_s": ..., "wait_s": ...}, ...],]
 *    "time": unix seconds to the millisecond}
 * S is the number of updates done (the step's index + 1); supcon with a SupCon loss (or a
 * hybrid on SupCon), ce with a hybrid, shares with --balance adaptive, val_loss with
 * --val-data, workers with telemetry (a worker's last step: compute, collectives, waiting for
 * its batch; absent before its first report). Evaluation lines ({"step": S, "eval": {...}}, evaluate.h) and the final
 * evaluation ({"step": S, "final_eval": {...}}) go to the same file: every line starts with
 * {"step": S, which a resumed run relies on to cut the file at its step. A line that cannot be
 * written (a full disk) waits in memory and is written with the next ones (append.h): the file
 * never keeps a torn line and, once there is room, has every line; metrics_flush says whether
 * all are written, which a checkpoint needs (checkpoint.c), so that a run resumed from it finds
 * every line up to its step.
 *
 * The progress line of each logged step: on a terminal one line rewritten in place, otherwise
 * a log line. samples/s is over the steps since the last logged step, the ETA from the run's
 * mean pace since its start.
 *
 * Exports: hcl_metrics, metrics_open / metrics_close, metrics_start, metrics_done, metrics_step,
 * metrics_logged, metrics_val, metrics_write, metrics_pause, metrics_in_step, metrics_put, metrics_final_eval,
 * metrics_flush, metrics_end. */
#ifndef HCL_METRICS_H
#define HCL_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "append.h"
#include "batch.h"
#include "control.h"
#include "json.h"
#include "loss.h"
#include "model.h"
#include "tensorboard.h"

typedef struct {
    hcl_append out;             /* metrics.jsonl: lines a full disk holds back are written later */
    hcl_tb *tb;                 /* every line also as a TensorBoard event (NULL: none) */
    hcl_json j;                 /* the line being written (its buffer kept between lines) */
    /* from metrics_start */
    const hcl_model_config *mc; /* the view names */
    int supcon, ce;             /* the loss has these parts */
    int64_t total_steps, start_step, batch, steps_per_epoch;
    int tty;                    /* stderr is a terminal */
    double t_start;
    double t_done;              /* when the job being recorded was finished (metrics_done) */
    /* the steps since the last logged one, from when the job before them finished */
    double t_window;
    int64_t window_steps;
    double t_last_step, step_s; /* a step's seconds, smoothed: hclctl status's pace */
    int64_t skipped;            /* steps skipped for a non-finite loss or gradient */
    /* the logged step waiting for its validation batches */
    hcl_step_result logged;
    double val_sum;
    int val_seen;
} hcl_metrics;

/* metrics.jsonl at path, appended to (a resumed run) or new. */
int metrics_open(hcl_metrics *m, const char *path, int append, char *err);
void metrics_close(hcl_metrics *m);

/* The run starts (its clock too). */
void metrics_start(hcl_metrics *m, const hcl_model_config *mc, const hcl_loss_config *lc, int64_t total_steps,
                   int64_t start_step, int64_t batch, int64_t steps_per_epoch);
/* When the job about to be recorded was finished (the transport's await): the clock of the
 * step times and of samples/s, so a worker that runs ahead of the records (the one in this
 * process computes each job as it is submitted) is timed by its work, not by the records. */
void metrics_done(hcl_metrics *m, double t);
/* A training step's result: the status numbers in st (step, epoch, loss, lr, logit scale,
 * samples/s, ETA, elapsed), the skipped count (and a warning when this one was skipped). */
void metrics_step(hcl_metrics *m, const hcl_step_result *res, hcl_status *st);
/* A logged step's result, kept until its validation batches are in. */
void metrics_logged(hcl_metrics *m, const hcl_step_result *res);
/* One validation batch's loss; 1 when it was the last of val_batches. */
int metrics_val(hcl_metrics *m, double loss, int val_batches);
/* The logged step's line and progress (val_batches > 0: with the mean validation loss;
 * split != NULL: the shares of nw workers; ctl != NULL: the workers' last-step times from its
 * telemetry, workers on MPI ranks rank0 + their index). */
void metrics_write(hcl_metrics *m, int val_batches, const int64_t *split, int nw, const hcl_control *ctl,
                   int rank0);
/* Paused: the window of samples/s starts again when training does. */
void metrics_pause(hcl_metrics *m);
/* The progress line of a step still running after `secs` seconds: where the workers are (from
 * their telemetry, e.g. "worker 0 loss 45%, worker 1 loss 44%") and the ETA (< 0 unknown). */
void metrics_in_step(const hcl_metrics *m, int64_t step, double secs, const char *where, double eta_s);
/* A line written by someone else (an evaluation's), with its newline. */
void metrics_put(hcl_metrics *m, const char *line);
/* {"step": S, "final_eval": json} */
void metrics_final_eval(hcl_metrics *m, int64_t step, const char *json);
/* An event line, written through at once: {"step": S, "event": EVENT, "time": ..., ["restart": K,]
 * "reason": ...}: "abort" (rank 0 ends the job: hcl-run watches for it) or "restart" (hcl-run
 * relaunched the job; restart < 0 leaves the field out). Not sent to TensorBoard. */
void metrics_event(hcl_metrics *m, int64_t step, const char *event, int64_t restart, const char *reason);
/* Write the lines a full disk held back, to metrics.jsonl and the TensorBoard file: 0 when all
 * are written, else -1 with one line in err naming the file. */
int metrics_flush(hcl_metrics *m, char *err);
/* The progress line is done (a newline on a terminal). */
void metrics_end(hcl_metrics *m);

#endif
