/* prometheus: rank 0's Prometheus endpoint (--prometheus [HOST:]PORT, off by default; HOST
 * 127.0.0.1 unless one is named, PORT 0 any free port): GET /metrics answers the text exposition
 * format (version 0.0.4), a HELP and a TYPE line before each family:
 *   hcl_step, hcl_total_steps, hcl_epoch, hcl_loss, hcl_samples_per_second, hcl_learning_rate,
 *   hcl_logit_scale, hcl_eta_seconds, hcl_elapsed_seconds               gauges of the run
 *   hcl_skipped_steps_total                                            a counter
 *   hcl_checkpoint_last_step, hcl_checkpoint_last_timestamp_seconds      the last checkpoint
 *   hcl_state{state="starting|running|paused|checkpointing|stopping|done"}  1 for the state now
 *   hcl_worker_compute_seconds, hcl_worker_communication_seconds, hcl_worker_wait_seconds,
 *   hcl_worker_step_bytes, hcl_worker_resident_memory_bytes, hcl_worker_last_seen_age_seconds,
 *   hcl_worker_straggler                                                per worker, {rank="R"}
 * (a worker's figures are its last step's, R its MPI rank). libmicrohttpd serves it on a thread
 * of its own, asleep in epoll until a request comes, from a snapshot the training loop
 * refreshes (prom_update, at most 10 times a second and at every change of state) under a
 * mutex held only to copy: a scrape never waits for a step, nor a step for a scrape. */
#ifndef HCL_PROMETHEUS_H
#define HCL_PROMETHEUS_H

#include <stddef.h>

#include "control.h"

typedef struct hcl_prom hcl_prom;

/* Listen on spec ("PORT", ":PORT" or "HOST:PORT"). *addr gets "HOST:PORT" as bound (the port
 * chosen when 0 was asked). Returns 0, or -1 with one line in err naming the value. */
int prom_open(hcl_prom **p, const char *spec, char *addr, size_t addr_len, char *err);
/* The loop's numbers: st, and the worker table of ctl (NULL: none); workers run on MPI ranks
 * rank0 + their index. */
void prom_update(hcl_prom *p, const hcl_status *st, const hcl_control *ctl, int rank0);
/* Scrapes answered so far (tests, the benchmark). */
unsigned long prom_scrapes(hcl_prom *p);
void prom_close(hcl_prom *p);

#endif
