/* watchdog: a worker's second thread. It owns the telemetry socket, sending each step's numbers
 * as the main thread posts them and a heartbeat (step -1) every second (a quarter of a shorter
 * --worker-timeout), so the coordinator
 * tells a worker whose process stopped (no heartbeat) from one that computes or waits in a
 * collective for a lost peer (still beating).
 *
 * And it ends the worker (exit 4) when the main thread has waited for --worker-timeout seconds
 * (+ 3): for a batch of which nothing has arrived (the coordinator is lost or stuck), for the
 * rest of a batch that has started to arrive (the transfer is stalled), for the coordinator to
 * take a result, or in an exchange with the other workers (a worker or the network is lost: a
 * cut link leaves a collective waiting forever, and mpirun alone would wait with it). Time spent
 * computing never counts, however long a step is (a global batch of 65,536 computes for minutes).
 * A paused job's coordinator sends PING batches well within the timeout.
 *
 * Exports watchdog_start, watchdog_wait, watchdog_busy, watchdog_post, watchdog_stop. One per
 * process; each state call takes a lock (uncontended: the thread looks ten times a second). */
#ifndef HCL_WATCHDOG_H
#define HCL_WATCHDOG_H

#include <stdint.h>

#include "telemetry.h"

/* What the main thread is waiting for. */
enum hcl_wait {
    HCL_WAIT_NONE,              /* computing (or nothing to do): never a timeout */
    HCL_WAIT_BATCH,             /* the next batch: nothing of it has arrived */
    HCL_WAIT_BATCH_REST,        /* the rest of the batch of `step`, whose header has arrived */
    HCL_WAIT_COORDINATOR,       /* the coordinator taking a result or a snapshot */
    HCL_WAIT_PEERS,             /* the other workers, in the exchange `what` of step `step` */
};

/* Start the thread: a wait longer than `timeout` seconds ends the process; tel (NULL: no
 * telemetry) belongs to the thread from here on and is closed by watchdog_stop. */
void watchdog_start(double timeout, hcl_telemetry *tel);
/* The main thread starts waiting (what: a static string naming the exchange, or NULL). */
void watchdog_wait(enum hcl_wait kind, int64_t step, const char *what);
/* The wait is over: the main thread computes. */
void watchdog_busy(void);
/* What it computes, carried by every message (the coordinator shows a long step's progress):
 * step (-1 none), phase (a static string: encode, loss, backward, update), done: the fraction of
 * the phase done, -1 unknown. While it waits on the other workers the phase is the exchange. */
void watchdog_progress(int64_t step, const char *phase, double done);
/* Send m at the thread's next wakeup (a newer post replaces one not yet sent). */
void watchdog_post(const hcl_telemetry_msg *m);
/* Stop and join the thread, close the telemetry socket. */
void watchdog_stop(void);

#endif
