/* prometheus: see prometheus.h. */
#include "prometheus.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define PROM_MAX_WORKERS 4096

struct hcl_prom {
    struct MHD_Daemon *d;
    int fd;
    pthread_mutex_t mu;
    hcl_status st;                  /* the snapshot */
    hcl_worker_stat *w;             /* (PROM_MAX_WORKERS) */
    int nw, rank0;
    double updated;                 /* hcl_now() of the last prom_update */
    unsigned long scrapes;
};

/* ---- the page ----------------------------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len, cap;
} page;

static void out(page *pg, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(pg->buf + pg->len, pg->cap - pg->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < pg->cap - pg->len) {
            pg->len += (size_t)n;
            return;
        }
        pg->cap = 2 * pg->cap + (size_t)(n > 0 ? n : 0);
        char *grown = realloc(pg->buf, pg->cap);
        HCL_CHECK(grown, "out of memory for a %zu-byte /metrics page", pg->cap);
        pg->buf = grown;
    }
}

static void family(page *pg, const char *name, const char *type, const char *help) {
    out(pg, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A value as the exposition format writes it: NaN, +Inf, -Inf, or the shortest %.17g. */
static void value(page *pg, const char *name, const char *labels, double x) {
    if (x != x) out(pg, "%s%s NaN\n", name, labels);
    else if (x > 1.7976931348623157e308) out(pg, "%s%s +Inf\n", name, labels);
    else if (x < -1.7976931348623157e308) out(pg, "%s%s -Inf\n", name, labels);
    else out(pg, "%s%s %.17g\n", name, labels, x);
}

static void gauge(page *pg, const char *name, const char *help, double x) {
    family(pg, name, "gauge", help);
    value(pg, name, "", x);
}

static void run_families(page *pg, const hcl_status *st) {
    static const char *states[] = {"starting", "running", "paused", "checkpointing", "stopping", "done"};
    gauge(pg, "hcl_step", "Training steps done.", (double)st->step);
    gauge(pg, "hcl_total_steps", "Training steps in the run.", (double)st->total_steps);
    gauge(pg, "hcl_epoch", "Epoch of the last step.", (double)st->epoch);
    gauge(pg, "hcl_loss", "Training loss of the last step (NaN before the first).", st->loss);
    gauge(pg, "hcl_samples_per_second", "Training samples a second, recent steps.", st->samples_per_s);
    gauge(pg, "hcl_learning_rate", "Learning rate of the last step.", st->lr);
    gauge(pg, "hcl_logit_scale", "Logit scale exp(t) after the last step.", st->logit_scale);
    gauge(pg, "hcl_eta_seconds", "Seconds to the end of the run (-1 unknown).", st->eta_s);
    gauge(pg, "hcl_elapsed_seconds", "Seconds since training started.", st->elapsed_s);
    family(pg, "hcl_skipped_steps_total", "counter", "Updates skipped for a non-finite loss or gradient.");
    value(pg, "hcl_skipped_steps_total", "", (double)st->skipped_steps);
    gauge(pg, "hcl_checkpoint_last_step", "Step of the last checkpoint written (-1 none).",
          (double)st->last_checkpoint_step);
    gauge(pg, "hcl_checkpoint_last_timestamp_seconds", "Unix time the last checkpoint was written (0 none).",
          st->last_checkpoint_time);
    family(pg, "hcl_state", "gauge", "The run's state: 1 for the state it is in, 0 for the others.");
    for (int i = 0; i < 6; i++) {
        char l[48];
        snprintf(l, sizeof l, "{state=\"%s\"}", states[i]);
        value(pg, "hcl_state", l, (int)st->state == i + 1);
    }
}

/* One family over the workers: field f of each (a function of its stat). */
static void worker_family(page *pg, const hcl_prom *p, const char *name, const char *help, double now,
                          double (*f)(const hcl_worker_stat *w, double now)) {
    family(pg, name, "gauge", help);
    for (int i = 0; i < p->nw; i++) {
        char l[32];
        snprintf(l, sizeof l, "{rank=\"%d\"}", p->rank0 + i);
        value(pg, name, l, f(&p->w[i], now));
    }
}

static double w_compute(const hcl_worker_stat *w, double now) { return (void)now, w->compute_s; }
static double w_comm(const hcl_worker_stat *w, double now) {
    return (void)now, w->allgather_s + w->reduce_scatter_s + w->allreduce_s;
}
static double w_wait(const hcl_worker_stat *w, double now) { return (void)now, w->wait_s; }
static double w_bytes(const hcl_worker_stat *w, double now) { return (void)now, (double)w->bytes; }
static double w_rss(const hcl_worker_stat *w, double now) { return (void)now, (double)w->rss_bytes; }
static double w_age(const hcl_worker_stat *w, double now) { return now - w->last_seen; }
static double w_straggler(const hcl_worker_stat *w, double now) { return (void)now, w->straggler; }

static void worker_families(page *pg, const hcl_prom *p) {
    const double now = hcl_now();
    worker_family(pg, p, "hcl_worker_compute_seconds", "A worker's compute time in its last step.", now,
                  w_compute);
    worker_family(pg, p, "hcl_worker_communication_seconds",
                  "A worker's collectives (all-gather, reduce-scatter, all-reduce) in its last step.", now, w_comm);
    worker_family(pg, p, "hcl_worker_wait_seconds", "A worker's wait for its batch in its last step.", now, w_wait);
    worker_family(pg, p, "hcl_worker_step_bytes", "Bytes a worker moved in its last step's collectives.", now,
                  w_bytes);
    worker_family(pg, p, "hcl_worker_resident_memory_bytes", "A worker process's resident memory.", now, w_rss);
    worker_family(pg, p, "hcl_worker_last_seen_age_seconds", "Seconds since a worker's last telemetry.", now,
                  w_age);
    worker_family(pg, p, "hcl_worker_straggler", "1 when a worker's compute is markedly above the others'.", now,
                  w_straggler);
}

/* ---- the server ---------------------------------------------------------------------------- */

static enum MHD_Result answer(void *cls, struct MHD_Connection *con, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version, (void)upload, (void)upload_size, (void)con_cls;
    hcl_prom *p = cls;
    const int get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    unsigned code = !get ? MHD_HTTP_METHOD_NOT_ALLOWED : strcmp(url, "/metrics") ? MHD_HTTP_NOT_FOUND : MHD_HTTP_OK;
    page pg = {hcl_malloc(8192), 0, 8192};
    if (code == MHD_HTTP_OK) {
        pthread_mutex_lock(&p->mu);
        run_families(&pg, &p->st);
        worker_families(&pg, p);
        p->scrapes++;
        pthread_mutex_unlock(&p->mu);
    } else {
        out(&pg, code == MHD_HTTP_NOT_FOUND ? "hcl serves /metrics only\n" : "GET /metrics only\n");
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(pg.len, pg.buf, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(pg.buf);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type",
                            code == MHD_HTTP_OK ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain");
    enum MHD_Result rc = MHD_queue_response(con, code, r);
    MHD_destroy_response(r);
    return rc;
}

/* spec -> a listening socket; addr "HOST:PORT" as bound. */
static int listen_on(const char *spec, char *addr, size_t addr_len, char *err) {
    char host[256] = "127.0.0.1";
    const char *colon = strrchr(spec, ':'), *port = colon ? colon + 1 : spec;
    if (colon && colon > spec) {
        size_t n = (size_t)(colon - spec);
        if (n >= sizeof host) return hcl_err(err, "--prometheus %s: host name too long", spec);
        memcpy(host, spec, n);
        host[n] = 0;
    }
    char *end;
    long pn = strtol(port, &end, 10);
    if (!*port || *end || pn < 0 || pn > 65535)
        return hcl_err(err, "--prometheus %s: want [HOST:]PORT with PORT in 0..65535", spec);
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int g = getaddrinfo(host, NULL, &hints, &ai);
    if (g != 0) return hcl_err(err, "--prometheus %s: host %s: %s", spec, host, gai_strerror(g));
    struct sockaddr_in sa = *(struct sockaddr_in *)ai->ai_addr;
    freeaddrinfo(ai);
    sa.sin_port = htons((uint16_t)pn);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0) return hcl_err(err, "--prometheus %s: socket: %s", spec, strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t sl = sizeof sa;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 64) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        int e = errno;
        close(fd);
        return hcl_err(err, "--prometheus %s: cannot listen on %s:%ld: %s", spec, host, pn, strerror(e));
    }
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof ip);
    snprintf(addr, addr_len, "%s:%u", ip, (unsigned)ntohs(sa.sin_port));
    return fd;
}

int prom_open(hcl_prom **pp, const char *spec, char *addr, size_t addr_len, char *err) {
    *pp = NULL;
    int fd = listen_on(spec, addr, addr_len, err);
    if (fd < 0) return -1;
    hcl_prom *p = hcl_calloc(1, sizeof *p);
    p->fd = fd;
    p->w = hcl_calloc(PROM_MAX_WORKERS, sizeof *p->w);
    pthread_mutex_init(&p->mu, NULL);
    control_status_init(&p->st);
    p->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL, answer, p,
                            MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, 64u,
                            MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (!p->d) {
        prom_close(p);
        return hcl_err(err, "--prometheus %s: the HTTP server (libmicrohttpd) did not start", spec);
    }
    p->fd = -1;   /* the daemon's now: MHD_stop_daemon closes it */
    *pp = p;
    return 0;
}

void prom_update(hcl_prom *p, const hcl_status *st, const hcl_control *ctl, int rank0) {
    if (!p) return;
    const double now = hcl_now();
    if (now - p->updated < 0.1 && st->state == p->st.state) return;
    p->updated = now;
    int nw = ctl ? control_nworkers(ctl) : 0;
    nw = nw > PROM_MAX_WORKERS ? PROM_MAX_WORKERS : nw;
    pthread_mutex_lock(&p->mu);
    p->st = *st;
    for (int i = 0; i < nw; i++) p->w[i] = *control_worker(ctl, i);
    p->nw = nw;
    p->rank0 = rank0;
    pthread_mutex_unlock(&p->mu);
}

unsigned long prom_scrapes(hcl_prom *p) {
    pthread_mutex_lock(&p->mu);
    unsigned long n = p->scrapes;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void prom_close(hcl_prom *p) {
    if (!p) return;
    if (p->d) MHD_stop_daemon(p->d);
    if (p->fd >= 0) close(p->fd);
    pthread_mutex_destroy(&p->mu);
    free(p->w);
    free(p);
}
