/* watchdog: a worker's second thread. It owns the telemetry socket, sending each step's numbers
 * as the main thread posts them and a heartbeat (step -1) every second, so the coordinator
 * tells a worker whose process stopped (no heartbeat) from one waiting in a collective for a
 * lost peer (still beating). And a worker that receives no batch for --worker-timeout seconds
 * ends itself (exit 4), even when stuck inside a collective (a cut network: mpirun alone would
 * wait forever). A paused job's coordinator sends PING batches well within the timeout.
 *
 * Exports watchdog_start, watchdog_fed (a batch came), watchdog_post (a step's telemetry),
 * watchdog_stop. One per process. */
#ifndef HCL_WATCHDOG_H
#define HCL_WATCHDOG_H

#include "telemetry.h"

/* Start the thread: worker `timeout` seconds without a batch ends the process; tel (NULL: no
 * telemetry) belongs to the thread from here on and is closed by watchdog_stop. */
void watchdog_start(double timeout, hcl_telemetry *tel);
/* A batch arrived (or this worker is done with one): the timeout starts again. */
void watchdog_fed(void);
/* Send m at the thread's next wakeup (a newer post replaces one not yet sent). */
void watchdog_post(const hcl_telemetry_msg *m);
/* Stop and join the thread, close the telemetry socket. */
void watchdog_stop(void);

#endif
