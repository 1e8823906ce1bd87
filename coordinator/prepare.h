/* prepare: a run from its flags and its data: the options' checks, the datasets, the model,
 * loss and optimizer configurations, the schedule, the buffers; and the setup rank 0 sends to
 * every worker.
 *
 * Each failure is one line naming the flag and the value (or the file), as hcl-train prints
 * it before exiting 2.
 *
 * Exports: run_prepare, run_setup, run_check_memory. */
#ifndef HCL_PREPARE_H
#define HCL_PREPARE_H

#include "batch.h"
#include "config.h"
#include "train.h"

/* Check the flags, open the datasets (--data, --val-data) and build r from them; one_host: every
 * rank runs on this host (--data-plane auto then has the workers read their rows). On error,
 * what was opened is left in r for run_free. */
int run_prepare(hcl_run *r, const hcl_config *cfg, int one_host, char *err);
/* What rank 0 broadcasts to the workers before the first batch (after run_resume: the seed
 * may be the checkpoint's; and run_control_open: the telemetry endpoint). */
void run_setup(const hcl_run *r, hcl_setup *su);
/* What this process will still take to train (after run_prepare: its own buffers are made;
 * workers 0: the worker in this process too) against its limits: RLIMIT_AS, RLIMIT_DATA, the
 * cgroup's (memlimit.h). Too little: -1 and one line naming what is needed and the limit. */
int run_check_memory(hcl_run *r, int workers, char *err);

#endif
