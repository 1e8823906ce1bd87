/* telemetry: a worker's per-step report to the coordinator (proto Telemetry), over a ZeroMQ
 * PUSH socket to the coordinator's PULL (coordinator/control.h, control_telemetry_open). The
 * coordinator keeps the last report of each worker for `hclctl status` and takes any message
 * as the worker's heartbeat. Exports: telemetry_open/send/close, telemetry_dropped and
 * telemetry_rss_bytes.
 *
 * telemetry_send NEVER blocks the worker: a small send queue (high-water mark 4), ZMQ_DONTWAIT,
 * ZMQ_IMMEDIATE (nothing is queued for a coordinator that is not connected); when the message
 * cannot be queued it is dropped and counted. Every message carries that running count, so the
 * coordinator learns how many were dropped with the next one that gets through (the status
 * reply's telemetry_dropped, the `dropped` column of `hclctl status`).
 *
 * Security: the coordinator makes a per-job CURVE server key pair and one per-job client key
 * pair, and hands the endpoint, the server public key and the client secret key to the workers
 * over MPI; its ZAP handler accepts only that client key. */
#ifndef HCL_TELEMETRY_H
#define HCL_TELEMETRY_H

#include <stdint.h>

typedef struct hcl_telemetry hcl_telemetry;

/* One step's numbers. The timings are seconds; bytes counts what the step's collectives sent
 * plus received; rss_bytes is the process's resident memory (telemetry_rss_bytes()). */
typedef struct {
    int64_t step;
    double compute_s;           /* encode + loss + backward */
    double allgather_s;
    double reduce_scatter_s;
    double allreduce_s;
    double wait_s;              /* waiting for the batch */
    uint64_t bytes;
    uint64_t rss_bytes;
    int64_t in_step;            /* what the worker computes now: the step (-1 none), */
    char phase[24];             /* its phase and */
    double phase_done;          /* the fraction of it done (-1 unknown) */
} hcl_telemetry_msg;

/* Connect to endpoint (tcp://HOST:PORT) as worker `rank`. server_public and client_secret are
 * Z85 keys (40 characters) from control_telemetry_open; server_public NULL: no CURVE (then
 * client_secret is ignored; the coordinator's socket will not accept that). Returns 0, or -1
 * with one line in err. The connection is made in the background. */
int telemetry_open(hcl_telemetry **t, const char *endpoint, const char *server_public,
                   const char *client_secret, int rank, char *err);
/* Queue one message: 0, or 1 when it was dropped (queue full, coordinator not connected). */
int telemetry_send(hcl_telemetry *t, const hcl_telemetry_msg *m);
/* Messages dropped since telemetry_open (the count the next message will carry). */
uint64_t telemetry_dropped(const hcl_telemetry *t);
/* Closes at once (unsent messages are discarded). NULL is fine. */
void telemetry_close(hcl_telemetry *t);

/* Resident memory of this process (VmRSS of /proc/self/status) in bytes, 0 if unknown. */
uint64_t telemetry_rss_bytes(void);

#endif
