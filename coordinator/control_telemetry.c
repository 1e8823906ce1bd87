/* control_telemetry: the workers' side of the control plane (control.h, "Telemetry security").
 * A CURVE PULL socket takes each worker's per-step Telemetry (worker/telemetry.h) into the
 * per-worker table: the last step's timings, bytes moved, resident memory, the running count
 * of messages the worker had to drop (its send queue full), and when it was last heard from
 * (telemetry doubles as the heartbeat, control_silent_worker). Stragglers are marked from the
 * median compute time over each worker's last CONTROL_STRAGGLER_WINDOW messages. */
#include "control_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "control.pb-c.h"
#include "log.h"
#include "util.h"

#define TELEMETRY_MSG_MAX 4096
#define TELEMETRY_RCVHWM 4096

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double window_median(const control_worker_slot *w) {
    double v[CONTROL_STRAGGLER_WINDOW];
    memcpy(v, w->window, sizeof(double) * (size_t)w->nwin);
    qsort(v, (size_t)w->nwin, sizeof(double), cmp_double);
    return w->nwin % 2 ? v[w->nwin / 2] : 0.5 * (v[w->nwin / 2 - 1] + v[w->nwin / 2]);
}

static void update_stragglers(hcl_control *c) {
    double *m = c->median_scratch;   /* sized at telemetry_open: nothing allocated per step */
    int n = 0;
    for (int i = 0; i < c->nworkers; i++)
        if (c->workers[i].nwin >= 4) m[n++] = c->workers[i].s.compute_median_s;
    double base = 0;
    if (n >= 2) {
        qsort(m, (size_t)n, sizeof(double), cmp_double);
        base = m[(n - 1) / 2];   /* lower median: with two workers, the faster one */
    }
    for (int i = 0; i < c->nworkers; i++) {
        hcl_worker_stat *s = &c->workers[i].s;
        s->straggler = n >= 2 && c->workers[i].nwin >= 4 &&
                       s->compute_median_s > CONTROL_STRAGGLER_RATIO * base &&
                       s->compute_median_s - base > 0.5e-3;
    }
}

/* One Telemetry into its worker's row. A heartbeat (step < 0) says the worker's process lives
 * (even while its main thread waits in a collective for a lost peer) and carries no step. */
static void take_message(control_worker_slot *w, const Hcl__Telemetry *t) {
    hcl_worker_stat *s = &w->s;
    s->last_seen = hcl_now();
    s->rss_bytes = t->rss_bytes;
    /* a running count: the largest one seen, so a message overtaken by a later one (after a
     * reconnect) cannot make it go back */
    if (t->dropped > s->telemetry_dropped) s->telemetry_dropped = t->dropped;
    s->in_step = t->in_step;
    snprintf(s->phase, sizeof s->phase, "%s", t->phase ? t->phase : "");
    s->phase_done = t->phase_done >= 0.0 && t->phase_done <= 1.0 ? t->phase_done : -1.0;   /* NaN: -1 */
    if (t->step < 0) return;
    s->step = t->step;
    s->compute_s = t->compute_s;
    s->allgather_s = t->allgather_s;
    s->reduce_scatter_s = t->reduce_scatter_s;
    s->allreduce_s = t->allreduce_s;
    s->wait_s = t->wait_s;
    s->bytes = t->bytes;
    s->messages++;
    double ct = isfinite(t->compute_s) && t->compute_s >= 0 ? t->compute_s : 0;
    w->window[w->wpos] = ct;
    w->wpos = (w->wpos + 1) % CONTROL_STRAGGLER_WINDOW;
    if (w->nwin < CONTROL_STRAGGLER_WINDOW) w->nwin++;
    s->compute_median_s = window_median(w);
}

/* One message off the PULL socket: 1, or 0 when none is waiting. */
static int pull_one(hcl_control *c) {
    uint8_t buf[TELEMETRY_MSG_MAX];
    int n = zmq_recv(c->pull, buf, sizeof buf, ZMQ_DONTWAIT);
    if (n < 0) return 0;
    Hcl__Telemetry *t = n <= (int)sizeof buf ? hcl__telemetry__unpack(NULL, (size_t)n, buf) : NULL;
    if (!t || t->version != HCL__CONTROL_VERSION__CONTROL_VERSION_1 || t->rank < 0 ||
        t->rank >= c->nworkers) {
        if (c->telemetry_bad++ == 0)
            LOG_WARN("control: dropped a telemetry message that is not for workers 0..%d",
                     c->nworkers - 1);
        if (t) hcl__telemetry__free_unpacked(t, NULL);
        return 1;
    }
    take_message(&c->workers[t->rank], t);
    hcl__telemetry__free_unpacked(t, NULL);
    return 1;
}

int control_telemetry_take(hcl_control *c) {
    if (!c->pull) return 0;
    int got = 0;
    for (int i = 0; i < 4 * c->nworkers + CONTROL_SERVICE_BUDGET && pull_one(c); i++) got++;
    if (got) update_stragglers(c);
    return got;
}

/* Where the PULL socket binds (bind, e.g. tcp://10.0.0.5:PORT) and the host the workers are
 * told (name): host if given; else the control socket's tcp interface when it is one other
 * hosts reach by its address; else every interface, named by control_reachable_host. */
static int telemetry_where(const hcl_control *c, const char *host, int port,
                           char bind[CONTROL_ENDPOINT_MAX + 24], char name[CONTROL_ENDPOINT_MAX], char *err) {
    char p[16] = "*";
    if (port > 0) snprintf(p, sizeof p, "%d", port);
    if (!host && c->tcp_host[0] && !control_host_is_wildcard(c->tcp_host) &&
        strncmp(c->tcp_host, "127.", 4) != 0 && strcmp(c->tcp_host, "[::1]") != 0)
        host = c->tcp_host;
    if (host) snprintf(name, CONTROL_ENDPOINT_MAX, "%s", host);
    else if (control_reachable_host(name, CONTROL_ENDPOINT_MAX, err) != 0) return -1;
    snprintf(bind, CONTROL_ENDPOINT_MAX + 24, "tcp://%s:%s", host ? host : "*", p);
    return 0;
}

int control_telemetry_open(hcl_control *c, int nworkers, const char *host, int port,
                           char endpoint[CONTROL_ENDPOINT_MAX], char server_public[CONTROL_KEY_Z85],
                           char client_secret[CONTROL_KEY_Z85], char *err) {
    if (c->pull) return hcl_err(err, "telemetry: already open");
    if (nworkers < 1 || nworkers > 1 << 20) return hcl_err(err, "telemetry: bad worker count %d", nworkers);
    char spub[41], ssec[41], cpub[41], csec[41];
    if (zmq_curve_keypair(spub, ssec) != 0 || zmq_curve_keypair(cpub, csec) != 0)
        return hcl_err(err, "telemetry: zmq_curve_keypair: %s (libzmq without CURVE?)",
                       zmq_strerror(zmq_errno()));
    char bind_ep[CONTROL_ENDPOINT_MAX + 24], name[CONTROL_ENDPOINT_MAX];
    if (telemetry_where(c, host, port, bind_ep, name, err) != 0) return -1;
    void *s = control_socket(c->ctx, ZMQ_PULL, bind_ep[6] == '[');
    control_sockopt_int(s, ZMQ_RCVHWM, TELEMETRY_RCVHWM);
    int64_t maxmsg = TELEMETRY_MSG_MAX;
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    control_sockopt_int(s, ZMQ_CURVE_SERVER, 1);
    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, ssec, 41);
    zmq_setsockopt(s, ZMQ_ZAP_DOMAIN, CONTROL_ZAP_DOMAIN_TELEMETRY, strlen(CONTROL_ZAP_DOMAIN_TELEMETRY));
    if (zmq_bind(s, bind_ep) != 0) {
        int e = zmq_errno();
        zmq_close(s);
        if (port > 0) return hcl_err(err, "--telemetry-port %d: %s: bind: %s", port, bind_ep, zmq_strerror(e));
        return hcl_err(err, "telemetry: %s: bind: %s", bind_ep, zmq_strerror(e));
    }
    char last[CONTROL_ENDPOINT_MAX];
    control_last_endpoint(s, last, sizeof last);
    const char *bound_port = strrchr(last, ':');
    if (snprintf(endpoint, CONTROL_ENDPOINT_MAX, "tcp://%s:%s", name, bound_port ? bound_port + 1 : "0") >=
        CONTROL_ENDPOINT_MAX) {
        zmq_close(s);
        return hcl_err(err, "telemetry: host name too long: %s", name);
    }
    c->pull = s;
    snprintf(c->telemetry_endpoint, sizeof c->telemetry_endpoint, "%s", endpoint);
    zmq_z85_decode(c->telemetry_client, cpub);
    c->nworkers = nworkers;
    c->workers = hcl_calloc((size_t)nworkers, sizeof *c->workers);
    c->median_scratch = hcl_calloc((size_t)nworkers, sizeof *c->median_scratch);
    c->telemetry_start = hcl_now();
    for (int i = 0; i < nworkers; i++) {
        c->workers[i].s.rank = i + 1;
        c->workers[i].s.step = -1;
        c->workers[i].s.in_step = -1;
        c->workers[i].s.phase_done = -1.0;
        c->workers[i].s.last_seen = c->telemetry_start;
    }
    memcpy(server_public, spub, 41);
    memcpy(client_secret, csec, 41);
    memset(ssec, 0, sizeof ssec);
    memset(csec, 0, sizeof csec);
    return 0;
}

void control_worker_where(hcl_control *c, int index, int rank, const char *host) {
    if (index < 0 || index >= c->nworkers) return;
    c->workers[index].s.rank = rank;
    snprintf(c->workers[index].s.host, sizeof c->workers[index].s.host, "%s", host ? host : "");
}

const char *control_worker_name(const hcl_control *c, int index, char *out, size_t cap) {
    const hcl_worker_stat *w = control_worker(c, index);
    if (!w) snprintf(out, cap, "worker %d", index);
    else if (!w->host[0]) snprintf(out, cap, "worker %d (rank %d)", index, w->rank);
    else snprintf(out, cap, "worker %d (rank %d on host %s)", index, w->rank, w->host);
    return out;
}

int control_nworkers(const hcl_control *c) { return c->nworkers; }

const hcl_worker_stat *control_worker(const hcl_control *c, int rank) {
    return rank >= 0 && rank < c->nworkers ? &c->workers[rank].s : NULL;
}

int control_silent_worker(const hcl_control *c, double timeout_s) {
    double now = hcl_now(), worst = timeout_s;
    int who = -1;
    for (int i = 0; i < c->nworkers; i++) {
        double quiet = now - c->workers[i].s.last_seen;
        if (quiet > worst) { worst = quiet; who = i; }
    }
    return who;
}
