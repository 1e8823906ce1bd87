/* transport: how rank 0's jobs reach the workers and their results come back, behind one
 * interface with two implementations.
 *
 *   transport_mpi_open    the workers on ranks 1..W: a job's W messages go out with MPI_Isend
 *                         (HCL_TAG_BATCH), worker 0's result comes back (HCL_TAG_RESULT, with
 *                         every worker's busy seconds), after a SNAPSHOT the replica's state
 *                         (HCL_TAG_SNAPSHOT); HCL_BATCHES_IN_FLIGHT jobs kept outstanding
 *   transport_local_open  one rank: the worker runs in this process and computes a job when
 *                         it is submitted (worker_step), so one job ahead is enough
 *
 * The run loop uses both the same way: it fills a slot's outbox (one message per worker, packed
 * by the batcher), submits the slot, and later awaits that slot's result, in submission order.
 * A wait never spins a core: it tests its MPI request and, between tests, calls the idle hook
 * (the coordinator sleeps in its control socket's poll there).
 *
 * Exports: hcl_outbox, hcl_idle, hcl_transport (the interface), transport_mpi_open,
 * transport_local_open. */
#ifndef HCL_TRANSPORT_H
#define HCL_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "batch.h"

/* One job's messages, worker w's at buf + w * stride, len[w] bytes (set by the packer). */
typedef struct {
    uint8_t *buf;
    size_t stride;
    size_t *len;
    int n;                      /* messages: one per worker */
} hcl_outbox;

/* Called while a wait is not over; soon: batches are still being sent, so come back within a
 * millisecond (MPI moves them only inside this process's MPI calls). */
typedef struct {
    void (*fn)(void *ctx, int soon);
    void *ctx;
} hcl_idle;

typedef struct hcl_transport hcl_transport;
struct hcl_transport {
    int workers;                /* workers on other ranks; 0: the worker is in this process */
    int in_flight;              /* jobs to keep outstanding (at most HCL_BATCHES_IN_FLIGHT) */
    /* Slot s's outbox, once the messages it last sent are out of its buffers. */
    hcl_outbox *(*outbox)(hcl_transport *t, int slot);
    /* Send slot s's outbox: the job of these flags and step. */
    void (*submit)(hcl_transport *t, int slot, uint32_t flags, int64_t step);
    /* The result of slot s's job (the oldest outstanding one) into *res and when it was
     * finished into *done (hcl_now(): as it arrived, or for the worker in this process, which
     * computes at submit time and runs a job ahead, when it was computed); returns every
     * worker's busy seconds in it (one per message). */
    const double *(*await)(hcl_transport *t, int slot, hcl_step_result *res, double *done);
    /* After a SNAPSHOT job's result: the replica's state is in the snapshot buffer given at
     * open (batch_snapshot_floats). */
    void (*snapshot)(hcl_transport *t);
    /* Waits for the last sends and frees everything (the local worker too). */
    void (*close)(hcl_transport *t);
};

/* su: the setup the workers got (su->resume: the snapshot in snap is broadcast to them first);
 * stride: the largest message of one worker. */
hcl_transport *transport_mpi_open(int workers, const hcl_setup *su, size_t stride, float *snap,
                                  size_t snap_floats, hcl_idle idle);
/* The worker in this process, built from su like a worker on another rank (su->resume: it
 * starts from the snapshot in snap); its telemetry goes to su->tel_endpoint when that is set.
 * NULL with err when the worker cannot be built. */
hcl_transport *transport_local_open(const hcl_setup *su, size_t stride, float *snap, char *err);

#endif
