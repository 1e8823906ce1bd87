/* worker: the loop of ranks 1..N-1 (worker.c). Receive batches from rank 0 (the next one
 * prefetched while the current is computed), check each header (batch_header_check), step the
 * replica (step.h), report (worker 0 sends each result to rank 0, the watchdog thread the
 * telemetry: watchdog.h), compare parameter checksums when asked, until STOP.
 *
 * Exports worker_main, and what rank 0 shares with it: worker_wait_polite (waiting without
 * spinning a core) and worker_ignore_signals. */
#ifndef HCL_WORKER_H
#define HCL_WORKER_H

#include <mpi.h>

#include "batch.h"

/* Wait for a request without spinning a core: MPI_Test, then sleeps growing to 1 ms; after a
 * second without it (a paused job) 20 ms, after three seconds 50 ms. Returns the seconds waited. */
double worker_wait_polite(MPI_Request *req, MPI_Status *status);

/* Workers leave signals to the coordinator (mpirun forwards SIGUSR1/2 to every rank): a
 * checkpoint or a stop reaches them in the batch stream. Call right after MPI_Init. */
void worker_ignore_signals(void);

/* The loop of ranks 1..N-1 over the workers' communicator with rank 0's setup: until a STOP
 * batch. Returns the exit code. */
int worker_main(MPI_Comm workers, const hcl_setup *su);

#endif
