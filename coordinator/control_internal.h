/* control_internal: what the files of the control plane share with each other, and nothing the
 * rest of the coordinator may use (that is control.h). The control plane is one object,
 * hcl_control, served from the coordinator's own thread; each file does one job on it:
 *
 *   control.c            open (check the arguments, make the sockets, bind), service (the one
 *                        zmq_poll the coordinator sleeps in), close, the watch publisher
 *   control_bind.c       endpoints: classify, bind ipc sockets owner-only (with the
 *                        /tmp/hcl-UID fallback) or tcp, RUN_DIR/control.endpoint
 *   control_auth.c       CURVE: the server's secret key file, the authorised client keys, and
 *                        the ZAP handler that lets only those keys (and the workers') in
 *   control_request.c    the request server: framing on the ROUTER, decoding, the one switch
 *                        on the request type, SET checks, the command queue, every reply
 *   control_telemetry.c  the workers' telemetry: the CURVE PULL socket, the per-worker table
 *                        (timings, heartbeat, dropped counts), stragglers
 *
 * Exports: struct hcl_control, the socket helpers every file uses, and one entry point per
 * file for control.c to call. */
#ifndef HCL_CONTROL_INTERNAL_H
#define HCL_CONTROL_INTERNAL_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "control.h"

#define CONTROL_IPC_PATH_MAX 107            /* sizeof sun_path - 1 */
#define CONTROL_ZAP_DOMAIN "hcl-control"    /* the control and watch sockets */
#define CONTROL_ZAP_DOMAIN_TELEMETRY "hcl-telemetry"
#define CONTROL_SERVICE_BUDGET 256          /* messages per socket per control_service call */
#define CONTROL_GATHER_MS 5                 /* requests are answered in bursts this far apart, */
#define CONTROL_GATHER_MIN 2                /* once one has answered this many */

/* One worker's row of the table, with the recent compute times its median is taken over. */
typedef struct {
    hcl_worker_stat s;
    double window[CONTROL_STRAGGLER_WINDOW];  /* recent compute times, a ring */
    int nwin, wpos;
} control_worker_slot;

struct hcl_control {
    void *ctx;
    void *router, *pub, *zap, *pull;
    char endpoint[CONTROL_ENDPOINT_MAX];        /* as clients connect (a wildcard named) */
    char watch_endpoint[CONTROL_ENDPOINT_MAX];  /* as clients connect */
    char bound_endpoint[CONTROL_ENDPOINT_MAX];  /* as bound, e.g. tcp://0.0.0.0:5555 */
    char tcp_host[CONTROL_ENDPOINT_MAX];        /* a tcp control endpoint's host as bound, "" ipc */
    char run_dir[PATH_MAX];
    char endpoint_file[PATH_MAX + 32];
    /* ipc socket files to remove at close (only if still the ones bound: same inode) */
    char ipc_path[2][PATH_MAX + 32];
    dev_t ipc_dev[2];
    ino_t ipc_ino[2];
    int nipc;
    /* CURVE on the control and watch sockets (control_auth.c) */
    int curve;
    char server_public[CONTROL_KEY_Z85];
    uint8_t (*clients)[32];
    int nclients;
    /* telemetry (control_telemetry.c) */
    int nworkers;
    char telemetry_endpoint[CONTROL_ENDPOINT_MAX];   /* as the workers connect */
    control_worker_slot *workers;
    double *median_scratch;         /* nworkers doubles for update_stragglers */
    double telemetry_start;
    uint8_t telemetry_client[32];
    uint64_t telemetry_bad;
    /* the STATUS reply packed once per control_service call (control_request.c) */
    uint8_t *status_pack;
    size_t status_len, status_cap;
    int status_fresh;
    struct Hcl__WorkerStat *status_ws;        /* nworkers of each */
    struct Hcl__WorkerStat **status_wp;
    double last_request;                      /* hcl_now() when a burst was last answered */
    int last_burst;                           /* requests answered by the last service call */
    /* commands waiting for the loop (control_request.c) */
    ctl_request queue[CONTROL_QUEUE_MAX];
    int qhead, qlen;
};

/* ---- control.c: socket helpers ---- */
/* A socket that never lingers or blocks on a send; ipv6 also accepts IPv6 addresses. */
void *control_socket(void *ctx, int type, int ipv6);
void control_sockopt_int(void *s, int opt, int v);   /* aborts if ZeroMQ refuses */
void control_last_endpoint(void *s, char *out, size_t cap);
/* Client text for a message: printable ASCII only, at most 48 characters (then "..."). */
void control_clean_text(char *dst, size_t cap, const char *src);

/* ---- control_bind.c ---- */
enum control_ep_kind { CONTROL_EP_IPC, CONTROL_EP_TCP_LOCAL, CONTROL_EP_TCP_OPEN };
/* Classify ep (ipc://ABSOLUTE, tcp://HOST:PORT); host gets a tcp endpoint's host part
 * ("[::1]", "localhost", ...). Returns 0, or -1 with err. */
int control_endpoint_kind(const char *ep, enum control_ep_kind *kind, char *host, size_t hostcap,
                          char *err);
/* Bind c->router and c->pub (endpoint NULL: the run directory's default; watch_port > 0: the
 * watch socket's tcp port, only with a tcp endpoint), fill c->endpoint and c->watch_endpoint
 * (a wildcard host replaced by control_reachable_host), write RUN_DIR/control.endpoint.
 * Returns 0, or -1 with err. */
int control_bind(hcl_control *c, const char *endpoint, enum control_ep_kind kind, const char *host,
                 int watch_port, char *err);
/* 1 when a tcp host binds every interface: *, 0.0.0.0, [::]. */
int control_host_is_wildcard(const char *host);
/* The name other hosts reach this one by: its host name when that resolves, else its first
 * address that is up and not loopback (IPv4 first; IPv6 in brackets). 0, or -1 with err. */
int control_reachable_host(char *out, size_t cap, char *err);
/* Remove the ipc socket files this job bound (if they are still the same files). */
void control_remove_ipc_files(hcl_control *c);

/* ---- control_auth.c ---- */
/* Read the server's secret key (into secret, Z85) and the authorised client keys (into
 * c->clients); set c->server_public and c->curve. Returns 0, or -1 with err. */
int control_auth_load(hcl_control *c, const char *secret_file, const char *clients_file,
                      char secret[CONTROL_KEY_Z85], char *err);
/* Answer one ZAP request (allow or refuse a CURVE handshake): 1, or 0 when none is waiting. */
int control_zap_one(hcl_control *c);

/* ---- control_request.c ---- */
/* Take one message from the ROUTER and answer or queue it: 1, or 0 when none is waiting. */
int control_router_one(hcl_control *c, const hcl_status *st);
/* *st may have changed since the STATUS reply was packed: pack it again when next asked. */
void control_status_stale(hcl_control *c);

/* ---- control_telemetry.c ---- */
/* Take what the workers sent (a bounded amount) into the table: the number of messages. */
int control_telemetry_take(hcl_control *c);

#endif
