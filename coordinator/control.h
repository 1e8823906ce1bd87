/* control: the coordinator's control plane (proto/control.proto): operator requests from
 * hclctl, the per-step watch stream, and the workers' telemetry. The loop of the coordinator
 * (coordinator/train.c) opens it, sleeps in control_service(), pops the commands it must act on
 * with control_next() and answers them, publishes one event per step, and reads the per-worker
 * table to find silent workers. Everything runs in the coordinator's own thread:
 * control_service() polls every socket once (this is also how the coordinator sleeps without
 * spinning) and never blocks on a send.
 *
 *   ROUTER  control endpoint   any number of clients; STATUS and WATCH answered at once from
 *                              the hcl_status the loop passes in; PAUSE, RESUME, CHECKPOINT,
 *                              STOP and SET are checked, queued, and popped by the loop with
 *                              control_next(), which acts and answers with control_reply_*()
 *   PUB     watch endpoint     control_publish(): one StepEvent per step
 *   PULL    telemetry          workers PUSH Telemetry (worker/telemetry.h); fills the
 *                              per-worker table; doubles as heartbeat (control_silent_worker)
 *   REP     ZAP handler        inproc://zeromq.zap.01: CURVE keys allowed on each socket
 *
 * The code: control.c (open, service, publish, close), control_bind.c (endpoints),
 * control_auth.c (CURVE keys, ZAP), control_request.c (requests and replies),
 * control_telemetry.c (the worker table); what they share is control_internal.h.
 *
 * Endpoints. NULL (the default): ipc://RUN_DIR/control.sock, mode 0600, watch on
 * RUN_DIR/watch.sock. When that path is over the 107-byte limit of a unix socket (or the run
 * directory's file system cannot hold a socket), both go to the private directory /tmp/hcl-UID/
 * (mode 0700, created if missing, refused if not ours or open to others) under unique names
 * (ctl-PID-RANDOM.sock), and a warning log line says so. An explicit ipc://PATH (absolute)
 * puts the watch socket on PATH.watch. An ipc path where another process is listening is
 * refused (two jobs in one run directory); a stale socket file is replaced. Socket files are
 * removed by control_close. tcp://127.0.0.1:PORT (any 127.x),
 * tcp://[::1]:PORT and tcp://localhost:PORT (PORT may be * for an ephemeral port) need no keys;
 * any other tcp endpoint needs CURVE (curve_secret_file and curve_clients_file) or
 * control_open fails. The watch socket then binds the same host on watch_port (--watch-port;
 * 0, the default: an ephemeral port; a port is refused with an ipc endpoint). The endpoint
 * bound goes to RUN_DIR/control.endpoint (written durably; removed by control_close): line 1
 * the endpoint, and with CURVE a line `curve-server-key Z85PUBLIC`. A wildcard host (*,
 * 0.0.0.0, [::]) binds every interface, but is no address to connect to: the file, the watch
 * endpoint hclctl gets and control_endpoint() name this host instead (its host name when that
 * resolves, else its first address other than loopback).
 *
 * CURVE (the control and watch sockets): curve_secret_file holds the server's Z85 secret key
 * (the first line that is not blank or a `#` comment; the file must not be readable by group
 * or others); curve_clients_file holds the authorised client public keys, one Z85 key per line
 * (blank lines and lines starting with `#` skipped; text after the key and a space ignored;
 * a `#` inside a key is a Z85 digit). Other keys get no answer at all.
 * `hclctl keygen DIR --name NAME` writes such key pairs.
 *
 * Telemetry security: control_telemetry_open() binds tcp (--telemetry-port, default an
 * ephemeral port) as a CURVE
 * server with a fresh per-job server key pair, and makes one fresh per-job client key pair.
 * The ZAP handler accepts on that socket only that one client public key. The coordinator
 * hands the endpoint, the server public key and the client SECRET key to the workers over MPI
 * (the trusted channel of the job); a process that did not get them over MPI can neither
 * connect nor read the stream. Nothing of it is written to disk.
 *
 * Who fills what: the loop owns hcl_status and fills all of it; the control plane only reads
 * it. The control plane owns the per-worker table (hcl_worker_stat, from Telemetry messages)
 * and the loop only reads it (control_worker, control_silent_worker). STATUS replies carry
 * both.
 *
 * The reply contract: every request popped by control_next() must be answered exactly once
 * with control_reply_ok() (the step at which the command takes or took effect) or
 * control_reply_error(). A client that left is not an error (the reply is dropped). */
#ifndef HCL_CONTROL_H
#define HCL_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#define CONTROL_MSG_MAX (64 * 1024)   /* larger requests are dropped by ZeroMQ (ZMQ_MAXMSGSIZE) */
#define CONTROL_QUEUE_MAX 64          /* queued commands; more get CTL_ERROR_BUSY */
#define CONTROL_ENDPOINT_MAX 256
#define CONTROL_KEY_Z85 41            /* a Z85 CURVE key: 40 characters + NUL */
#define CONTROL_HOST_MAX 64           /* a host name (HOST_NAME_MAX) + NUL */
/* Straggler: a worker whose median compute time over its last CONTROL_STRAGGLER_WINDOW
 * messages is more than CONTROL_STRAGGLER_RATIO times the lower median of all workers'
 * medians (and at least 0.5 ms more); needs 2+ workers with 4+ messages each. */
#define CONTROL_STRAGGLER_WINDOW 16
#define CONTROL_STRAGGLER_RATIO 1.5

/* Same values as proto RunState. */
enum hcl_run_state {
    HCL_RUN_STATE_STARTING = 1,
    HCL_RUN_STATE_RUNNING = 2,
    HCL_RUN_STATE_PAUSED = 3,
    HCL_RUN_STATE_CHECKPOINTING = 4,
    HCL_RUN_STATE_STOPPING = 5,
    HCL_RUN_STATE_DONE = 6,
};

/* What the loop knows; filled by the loop, read by control_service and control_publish. */
typedef struct {
    enum hcl_run_state state;
    int64_t step;                   /* steps done */
    int64_t total_steps;
    int64_t epoch;
    double loss;                    /* last known, NaN none */
    double lr;                      /* lr of the last step: schedule(step) x lr_scale */
    double lr_scale;                /* operator's multiplier on the schedule (0 is read as 1) */
    double logit_scale;
    double samples_per_s;
    double eta_s;                   /* < 0 unknown */
    double elapsed_s;
    char last_checkpoint_path[2048]; /* "" none */
    int64_t last_checkpoint_step;   /* -1 none */
    char last_checkpoint_error[640]; /* "" when the last attempt succeeded */
    int64_t log_every;
    double checkpoint_interval_s;   /* 0 off */
    int64_t checkpoint_every;       /* 0 off */
    int64_t skipped_steps;          /* updates skipped for a non-finite loss or gradient */
    double last_checkpoint_time;    /* unix time the last checkpoint was written, 0 none */
    char tensorboard_dir[1024];     /* "" off */
    char prometheus_address[280];   /* HOST:PORT of /metrics, "" off */
    int64_t restarts;               /* hcl-run's relaunches before this run, 0 none */
} hcl_status;

/* state STARTING, loss NaN, lr_scale 1, eta -1, last_checkpoint_step -1, the rest 0. */
void control_status_init(hcl_status *st);

/* One worker's telemetry; filled by control_telemetry.c. */
typedef struct {
    int rank;                       /* its MPI rank (its index + 1; 0: the worker in this process) */
    char host[CONTROL_HOST_MAX];    /* the host it runs on, "" unknown (control_worker_where) */
    int64_t step;                   /* -1: nothing received yet */
    double compute_s, allgather_s, reduce_scatter_s, allreduce_s, wait_s;  /* last step */
    uint64_t bytes, rss_bytes;
    double last_seen;               /* hcl_now() of the last message (telemetry start if none) */
    uint64_t messages;              /* step messages received (heartbeats not counted) */
    uint64_t telemetry_dropped;     /* messages the worker dropped, its send queue full: the
                                     * running count its last message carried */
    double compute_median_s;        /* over the last CONTROL_STRAGGLER_WINDOW messages */
    int straggler;
    int64_t in_step;                /* what its last message said it computes: the step (-1 none), */
    char phase[24];                 /* the phase, */
    double phase_done;              /* the fraction of it done (-1 unknown) */
} hcl_worker_stat;

/* Commands the loop acts on (popped by control_next). */
enum ctl_cmd {
    CTL_CMD_PAUSE = 1,
    CTL_CMD_RESUME,
    CTL_CMD_CHECKPOINT,
    CTL_CMD_STOP,
    CTL_CMD_SET,
};

/* Keys of CTL_CMD_SET, checked by control_request.c. `set lr=X` arrives as CTL_KEY_LR_SCALE
 * with value X / (status lr / status lr_scale), i.e. X over the unscaled schedule at the time
 * of the request, so the schedule goes on from the new lr. */
enum ctl_key {
    CTL_KEY_LR_SCALE = 1,           /* value > 0 and <= 1e6 */
    CTL_KEY_LOG_EVERY,              /* integer, 1..1e9 */
    CTL_KEY_CHECKPOINT_INTERVAL,    /* seconds, 0 (off) .. 1e9 */
    CTL_KEY_CHECKPOINT_EVERY,       /* integer steps, 0 (off) .. 1e12 */
};

/* Same values as proto ControlError. */
enum ctl_error {
    CTL_ERROR_BAD_VERSION = 1,
    CTL_ERROR_BAD_REQUEST = 2,
    CTL_ERROR_UNKNOWN_TYPE = 3,
    CTL_ERROR_BAD_KEY = 4,
    CTL_ERROR_BAD_VALUE = 5,
    CTL_ERROR_BUSY = 6,
    CTL_ERROR_REFUSED = 7,          /* e.g. resume while running */
    CTL_ERROR_FAILED = 8,           /* e.g. the checkpoint could not be written */
};

typedef struct {
    enum ctl_cmd cmd;
    int no_checkpoint;              /* CTL_CMD_STOP: 1 = stop without a final checkpoint */
    enum ctl_key key;               /* CTL_CMD_SET */
    double value;                   /* CTL_CMD_SET, checked against the key's range */
    char text[160];                 /* the request for logs: "pause", "set lr=3e-4", ... */
    /* private: where the reply goes */
    uint64_t id;
    int delimiter;
    uint32_t rid_len;
    uint8_t rid[256];
} ctl_request;

typedef struct hcl_control hcl_control;

/* Bind the control and watch sockets (see the top of this file) and write
 * RUN_DIR/control.endpoint. run_dir must exist. Returns 0, or -1 with one line in err. */
int control_open(hcl_control **c, const char *endpoint, const char *run_dir,
                 const char *curve_secret_file, const char *curve_clients_file, int watch_port, char *err);
/* Unbinds, closes (never blocks), removes RUN_DIR/control.endpoint. NULL is fine. */
void control_close(hcl_control *c);
const char *control_endpoint(const hcl_control *c);        /* as clients connect: ipc:///r/control.sock,
                                                            * tcp://HOST:5555 for tcp://0.0.0.0:5555 */
const char *control_watch_endpoint(const hcl_control *c);
/* One log line: where clients connect (and where it is bound when that differs: a wildcard),
 * the watch endpoint, the telemetry endpoint once open, CURVE. */
void control_log(const hcl_control *c);

/* Wait up to timeout_ms (0: just look) for traffic on any socket, then handle what is there
 * (a bounded amount): answer STATUS (from *st; NULL answers CTL_ERROR_BUSY) and WATCH,
 * answer bad requests with an error, queue commands, serve ZAP, take telemetry. Returns the
 * number of messages handled; returns early when something arrived, and 0 when a signal
 * interrupted the wait (the loop then looks at its signal flag). */
int control_service(hcl_control *c, const hcl_status *st, int timeout_ms);
/* Pop the oldest queued command into *rq: 1, or 0 when none. */
int control_next(hcl_control *c, ctl_request *rq);
/* Answer a popped command: ok with the step at which it takes/took effect (msg may be NULL),
 * or an error (one line). */
void control_reply_ok(hcl_control *c, const ctl_request *rq, int64_t step, const char *msg);
void control_reply_error(hcl_control *c, const ctl_request *rq, enum ctl_error code,
                         const char *msg);
/* One StepEvent from *st to the watchers (dropped when nobody listens or they lag). */
void control_publish(hcl_control *c, const hcl_status *st);

/* Telemetry: bind a CURVE PULL socket on port (0: any free port) of HOST; HOST NULL: the
 * control socket's tcp interface when other hosts reach it by that address, else every
 * interface, the endpoint reported naming this host (its name when that resolves, else its
 * first address but loopback). For workers 0..nworkers-1. Fills what the workers need for
 * telemetry_open(): endpoint (tcp://HOST:PORT), the server public key and the client secret
 * key (Z85). Once per hcl_control. Returns 0, or -1 with err (naming --telemetry-port when
 * port is taken). */
int control_telemetry_open(hcl_control *c, int nworkers, const char *host, int port,
                           char endpoint[CONTROL_ENDPOINT_MAX],
                           char server_public[CONTROL_KEY_Z85],
                           char client_secret[CONTROL_KEY_Z85], char *err);
/* Where worker index runs: its MPI rank and host name (the setup exchange, main.c), for hclctl
 * status and the messages naming it. Before, a worker is rank index + 1 on an unknown host. */
void control_worker_where(hcl_control *c, int index, int rank, const char *host);
/* "worker 1 (rank 2 on host h3)" (or "... (rank 2)" when the host is unknown) into out. */
const char *control_worker_name(const hcl_control *c, int index, char *out, size_t cap);
int control_nworkers(const hcl_control *c);                 /* 0 before telemetry_open */
const hcl_worker_stat *control_worker(const hcl_control *c, int rank);  /* NULL out of range */
/* The worker silent for the longest time if that is more than timeout_s seconds (a worker
 * never heard from counts from control_telemetry_open), else -1. */
int control_silent_worker(const hcl_control *c, double timeout_s);

#endif
