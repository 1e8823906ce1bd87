/* checkpoint: the run's durable state: its directory, the checkpoints written from a replica's
 * snapshot, and resuming from one.
 *
 *   RUN_DIR/config.txt       the flags as `key = value` lines (written durably)
 *   RUN_DIR/metrics.jsonl    metrics.h; a resumed run keeps the lines up to its step (lines of
 *                            later steps, logged by the run that crashed after the checkpoint,
 *                            are dropped, so every step appears once)
 *   RUN_DIR/checkpoints/     ckpt.h; --checkpoint-every, --checkpoint-interval, signals and
 *                            hclctl checkpoint decide when (jobs.h)
 *
 * Exports: run_resume, run_open_dir, run_checkpoint, keep_metrics_until. */
#ifndef HCL_CHECKPOINT_H
#define HCL_CHECKPOINT_H

#include <stdint.h>

#include "train.h"

/* --resume auto|PATH: find and load the checkpoint (into ck_model and snap), check that it
 * matches the data and the flags (one line naming what differs). Everything is checked here,
 * before run_open_dir changes anything in the run directory: state.pb's own checksum and every
 * field (ckpt_verify), its step against --steps, its epoch against the data. auto skips a
 * checkpoint that fails ckpt_verify with a warning; with checkpoints but none valid it fails
 * (starting again would cut metrics.jsonl). Returns 0, also when there is nothing to resume
 * (auto in a run directory without checkpoints). */
int run_resume(hcl_run *r, char *err);
/* Create the run directory, config.txt and metrics.jsonl (after run_prepare and run_resume). */
int run_open_dir(hcl_run *r, char *err);
/* The replica's state in r->snap, of `step` updates -> a checkpoint on disk, once the lines of
 * metrics.jsonl and TensorBoard that a full disk held back are written (metrics_flush: a resume
 * from the checkpoint then finds every line up to its step). A failed write is logged and
 * remembered (hclctl status shows it); training goes on and the previous checkpoint stays.
 * Answers the hclctl checkpoint requests waiting for it either way. */
void run_checkpoint(hcl_run *r, int64_t step);
/* Keep the lines of metrics.jsonl at path whose "step" is at most step (lines of any length; a
 * last line without its newline, torn by a crash, is dropped); no file is fine. Returns 0, or
 * -1 with err. */
int keep_metrics_until(const char *path, int64_t step, char *err);

#endif
