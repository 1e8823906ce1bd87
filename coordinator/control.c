/* control: see control.h. */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

#include "control.pb-c.h"
#include "log.h"
#include "util.h"

#define IPC_PATH_MAX 107            /* sizeof sun_path - 1 */
#define MAX_CLIENT_KEYS 4096
#define ZAP_DOMAIN_CONTROL "hcl-control"
#define ZAP_DOMAIN_TELEMETRY "hcl-telemetry"
#define SERVICE_BUDGET 256          /* messages per socket per control_service call */
#define TELEMETRY_MSG_MAX 4096

#define SAME(a, b) ((int)(a) == (int)(b))
_Static_assert(SAME(CTL_ERROR_BAD_VERSION, HCL__CONTROL_ERROR__CONTROL_ERROR_BAD_VERSION) &&
               SAME(CTL_ERROR_BAD_REQUEST, HCL__CONTROL_ERROR__CONTROL_ERROR_BAD_REQUEST) &&
               SAME(CTL_ERROR_UNKNOWN_TYPE, HCL__CONTROL_ERROR__CONTROL_ERROR_UNKNOWN_TYPE) &&
               SAME(CTL_ERROR_BAD_KEY, HCL__CONTROL_ERROR__CONTROL_ERROR_BAD_KEY) &&
               SAME(CTL_ERROR_BAD_VALUE, HCL__CONTROL_ERROR__CONTROL_ERROR_BAD_VALUE) &&
               SAME(CTL_ERROR_BUSY, HCL__CONTROL_ERROR__CONTROL_ERROR_BUSY) &&
               SAME(CTL_ERROR_REFUSED, HCL__CONTROL_ERROR__CONTROL_ERROR_REFUSED) &&
               SAME(CTL_ERROR_FAILED, HCL__CONTROL_ERROR__CONTROL_ERROR_FAILED), "ctl_error = ControlError");
_Static_assert(SAME(HCL_RUN_STATE_STARTING, HCL__RUN_STATE__RUN_STATE_STARTING) &&
               SAME(HCL_RUN_STATE_RUNNING, HCL__RUN_STATE__RUN_STATE_RUNNING) &&
               SAME(HCL_RUN_STATE_PAUSED, HCL__RUN_STATE__RUN_STATE_PAUSED) &&
               SAME(HCL_RUN_STATE_CHECKPOINTING, HCL__RUN_STATE__RUN_STATE_CHECKPOINTING) &&
               SAME(HCL_RUN_STATE_STOPPING, HCL__RUN_STATE__RUN_STATE_STOPPING) &&
               SAME(HCL_RUN_STATE_DONE, HCL__RUN_STATE__RUN_STATE_DONE), "hcl_run_state = RunState");

typedef struct {
    hcl_worker_stat s;
    double window[CONTROL_STRAGGLER_WINDOW];  /* recent compute times, a ring */
    int nwin, wpos;
} worker_slot;

struct hcl_control {
    void *ctx;
    void *router, *pub, *zap, *pull;
    char endpoint[CONTROL_ENDPOINT_MAX];
    char watch_endpoint[CONTROL_ENDPOINT_MAX];
    char run_dir[PATH_MAX];
    char endpoint_file[PATH_MAX + 32];
    /* ipc socket files to remove at close (only if still the ones bound: same inode) */
    char ipc_path[2][PATH_MAX + 32];
    dev_t ipc_dev[2];
    ino_t ipc_ino[2];
    int nipc;
    int curve;
    char server_public[CONTROL_KEY_Z85];
    uint8_t (*clients)[32];
    int nclients;
    /* telemetry */
    int nworkers;
    worker_slot *workers;
    double telemetry_start;
    uint8_t telemetry_client[32];
    uint64_t telemetry_bad;
    /* commands waiting for the loop */
    ctl_request queue[CONTROL_QUEUE_MAX];
    int qhead, qlen;
};

/* ---- small helpers --------------------------------------------------------------------- */

/* Copy client text for a message: printable ASCII only, at most 48 characters. */
static void clean_text(char *dst, size_t cap, const char *src) {
    size_t n = 0;
    for (; src && *src && n + 4 < cap && n < 48; src++)
        dst[n++] = (*src >= 0x20 && *src < 0x7f) ? *src : '?';
    if (src && *src && n + 4 < cap) { memcpy(dst + n, "...", 3); n += 3; }
    dst[n] = 0;
}

static void sockopt_int(void *s, int opt, int v) {
    HCL_CHECK(zmq_setsockopt(s, opt, &v, sizeof v) == 0, "zmq_setsockopt(%d, %d): %s", opt, v,
              zmq_strerror(zmq_errno()));
}

static void *make_socket(void *ctx, int type, int ipv6) {
    void *s = zmq_socket(ctx, type);
    HCL_CHECK(s, "zmq_socket(%d): %s", type, zmq_strerror(zmq_errno()));
    sockopt_int(s, ZMQ_LINGER, 0);
    sockopt_int(s, ZMQ_SNDTIMEO, 0);
    if (ipv6) sockopt_int(s, ZMQ_IPV6, 1);
    return s;
}

static void last_endpoint(void *s, char *out, size_t cap) {
    size_t n = cap;
    HCL_CHECK(zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, out, &n) == 0, "zmq_getsockopt(LAST_ENDPOINT): %s",
              zmq_strerror(zmq_errno()));
}

static int read_small_file(const char *path, char *buf, size_t cap, struct stat *st, char *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return hcl_err(err, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, st) != 0) {
        int e = errno;
        close(fd);
        return hcl_err(err, "%s: fstat: %s", path, strerror(e));
    }
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            return hcl_err(err, "%s: read: %s", path, strerror(e));
        }
        if (r == 0) break;
        n += (size_t)r;
        if (n == cap - 1) {
            close(fd);
            return hcl_err(err, "%s: larger than %zu bytes, not a key file", path, cap - 1);
        }
    }
    close(fd);
    buf[n] = 0;
    return 0;
}

/* The first word of the next line that is not blank or a comment (`#` first); NULL at the end. *pos
 * advances; *lineno counts lines. The token is NUL-terminated in place. */
static char *next_key_token(char **pos, int *lineno) {
    char *p = *pos;
    while (p && *p) {
        char *eol = strchr(p, '\n');
        char *next = eol ? eol + 1 : p + strlen(p);
        if (eol) *eol = 0;
        (*lineno)++;
        while (*p == ' ' || *p == '\t' || *p == '\r') p++;
        if (*p && *p != '#') {
            char *e = p;
            while (*e && *e != ' ' && *e != '\t' && *e != '\r') e++;   /* '#' is a Z85 digit */
            *e = 0;
            *pos = next;
            return p;
        }
        p = next;
    }
    *pos = p;
    return NULL;
}

static int z85_key(const char *tok, uint8_t out[32]) {
    return strlen(tok) == 40 && zmq_z85_decode(out, tok) != NULL;
}

static int load_secret(const char *path, char secret[CONTROL_KEY_Z85], char *err) {
    char buf[4096];
    struct stat st;
    if (read_small_file(path, buf, sizeof buf, &st, err) != 0) return -1;
    if (st.st_mode & 077)
        return hcl_err(err, "%s: mode %04o lets other users read the secret key (chmod 600 %s)",
                       path, (unsigned)(st.st_mode & 07777), path);
    char *pos = buf;
    int line = 0;
    char *tok = next_key_token(&pos, &line);
    uint8_t raw[32];
    if (!tok) return hcl_err(err, "%s: no key (want one Z85 secret key of 40 characters)", path);
    if (!z85_key(tok, raw)) {
        char t[64];
        clean_text(t, sizeof t, tok);
        return hcl_err(err, "%s:%d: not a Z85 secret key: '%s'", path, line, t);
    }
    memcpy(secret, tok, 41);
    return 0;
}

static int load_clients(hcl_control *c, const char *path, char *err) {
    enum { CAP = MAX_CLIENT_KEYS * 64 + 4096 };
    char *buf = hcl_malloc(CAP);
    struct stat st;
    if (read_small_file(path, buf, CAP, &st, err) != 0) { free(buf); return -1; }
    c->clients = hcl_calloc(MAX_CLIENT_KEYS, 32);
    char *pos = buf, *tok;
    int line = 0;
    while ((tok = next_key_token(&pos, &line))) {
        if (c->nclients == MAX_CLIENT_KEYS) {
            free(buf);
            return hcl_err(err, "%s: more than %d client keys", path, MAX_CLIENT_KEYS);
        }
        if (!z85_key(tok, c->clients[c->nclients])) {
            char t[64];
            clean_text(t, sizeof t, tok);
            free(buf);
            return hcl_err(err, "%s:%d: not a Z85 public key: '%s'", path, line, t);
        }
        c->nclients++;
    }
    free(buf);
    if (!c->nclients) return hcl_err(err, "%s: no client keys (one Z85 public key per line)", path);
    return 0;
}

/* ---- endpoints ----------------------------------------------------------------------------- */

enum ep_kind { EP_IPC, EP_TCP_LOCAL, EP_TCP_OPEN };

/* Classify ep; host gets the host part of a tcp endpoint ("[::1]", "localhost", ...). */
static int endpoint_kind(const char *ep, enum ep_kind *kind, char *host, size_t hostcap, char *err) {
    if (strncmp(ep, "ipc://", 6) == 0) {
        if (ep[6] != '/') return hcl_err(err, "%s: an ipc endpoint needs an absolute path", ep);
        if (strlen(ep + 6) > IPC_PATH_MAX)
            return hcl_err(err, "%s: the path is %zu bytes, over the %d-byte limit of a unix socket",
                           ep, strlen(ep + 6), IPC_PATH_MAX);
        *kind = EP_IPC;
        return 0;
    }
    if (strncmp(ep, "tcp://", 6) != 0)
        return hcl_err(err, "%s: not an ipc:// or tcp:// endpoint", ep);
    const char *hp = ep + 6;
    const char *colon = strrchr(hp, ':');
    if (!colon || colon == hp || !colon[1] || (hp[0] == '[' && colon[-1] != ']'))
        return hcl_err(err, "%s: want tcp://HOST:PORT", ep);
    size_t hl = (size_t)(colon - hp);
    if (hl >= hostcap) return hcl_err(err, "%s: host name too long", ep);
    memcpy(host, hp, hl);
    host[hl] = 0;
    const char *port = colon + 1;
    if (strcmp(port, "*") != 0) {
        char *end;
        errno = 0;
        long p = strtol(port, &end, 10);
        if (*end || errno || p < 0 || p > 65535) return hcl_err(err, "%s: bad port '%s'", ep, port);
    }
    int local = strcmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0;
    if (strncmp(host, "127.", 4) == 0) {
        unsigned a, b, d;
        char extra;
        local = sscanf(host + 4, "%u.%u.%u%c", &a, &b, &d, &extra) == 3 && a < 256 && b < 256 && d < 256;
    }
    *kind = local ? EP_TCP_LOCAL : EP_TCP_OPEN;
    return 0;
}

/* Refuse an ipc path where a process is listening (ZeroMQ would unlink it and take over). */
static int ipc_check_free(const char *path, char *err) {
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return hcl_err(err, "socket(AF_UNIX): %s", strerror(errno));
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    close(fd);
    if (rc == 0)
        return hcl_err(err, "%s: another process is listening there (a second job in the same run "
                       "directory?)", path);
    return 0;
}

/* Bind an ipc socket owner-only: umask 077 around the bind (umask is per process: the
 * coordinator binds before it starts other threads' work), then chmod 0600 and a check.
 * Returns 0, -2 when another process listens on path, -1 on other errors. */
static int bind_ipc(hcl_control *c, void *s, const char *path, char *err) {
    if (ipc_check_free(path, err) != 0) return -2;
    char ep[CONTROL_ENDPOINT_MAX];
    snprintf(ep, sizeof ep, "ipc://%s", path);
    mode_t old = umask(077);
    int rc = zmq_bind(s, ep);
    int e = zmq_errno();
    umask(old);
    if (rc != 0) return hcl_err(err, "%s: bind: %s", ep, zmq_strerror(e));
    struct stat st;
    if (chmod(path, 0600) != 0 || stat(path, &st) != 0 || (st.st_mode & 077)) {
        hcl_err(err, "%s: cannot make the socket owner-only: %s", path, strerror(errno));
        zmq_unbind(s, ep);
        unlink(path);
        return -1;
    }
    /* ZeroMQ leaves the socket file behind when it closes: control_close removes it. */
    snprintf(c->ipc_path[c->nipc], sizeof c->ipc_path[0], "%s", path);
    c->ipc_dev[c->nipc] = st.st_dev;
    c->ipc_ino[c->nipc] = st.st_ino;
    c->nipc++;
    return 0;
}

/* /tmp/hcl-UID, mode 0700, ours. */
static int private_dir(char *dir, size_t cap, char *err) {
    snprintf(dir, cap, "/tmp/hcl-%u", (unsigned)getuid());
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return hcl_err(err, "%s: mkdir: %s", dir, strerror(errno));
    struct stat st;
    if (lstat(dir, &st) != 0) return hcl_err(err, "%s: lstat: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 077))
        return hcl_err(err, "%s: not a private directory of this user (owner %u, mode %04o); remove "
                       "it or pass a control endpoint", dir, (unsigned)st.st_uid,
                       (unsigned)(st.st_mode & 07777));
    return 0;
}

/* RUN_DIR/control.sock and RUN_DIR/watch.sock; in /tmp/hcl-UID when the path is too long for a
 * unix socket or the run directory's file system cannot hold one. */
static int bind_default(hcl_control *c, char *err) {
    char path[PATH_MAX + 32], wpath[PATH_MAX + 32], why[PATH_MAX + HCL_ERR_MAX];
    snprintf(path, sizeof path, "%s/control.sock", c->run_dir);
    snprintf(wpath, sizeof wpath, "%s/watch.sock", c->run_dir);
    if (strlen(path) > IPC_PATH_MAX) {
        snprintf(why, sizeof why, "%s: %zu bytes, over the %d-byte limit of a unix socket path", path,
                 strlen(path), IPC_PATH_MAX);
    } else {
        int rc = bind_ipc(c, c->router, path, err);
        if (rc == 0) return bind_ipc(c, c->pub, wpath, err) == 0 ? 0 : -1;
        if (rc == -2) return -1;   /* another job: refuse, never hide beside it */
        snprintf(why, sizeof why, "%s", err);
    }
    char dir[64];
    if (private_dir(dir, sizeof dir, err) != 0) return -1;
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r = (uint32_t)(hcl_now() * 1e6);
    snprintf(path, sizeof path, "%s/ctl-%d-%08x.sock", dir, (int)getpid(), r);
    snprintf(wpath, sizeof wpath, "%s/watch-%d-%08x.sock", dir, (int)getpid(), r);
    LOG_WARN("%s; the control socket is %s instead (written to %s)", why, path, c->endpoint_file);
    return bind_ipc(c, c->router, path, err) == 0 && bind_ipc(c, c->pub, wpath, err) == 0 ? 0 : -1;
}

/* ---- replies ------------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *rid;
    size_t rid_len;
    int delimiter;
    uint64_t id;
} reply_to;

static void send_reply(hcl_control *c, const reply_to *to, Hcl__ControlReply *r) {
    r->id = to->id;
    r->version = HCL__CONTROL_VERSION__CONTROL_VERSION_1;
    size_t n = hcl__control_reply__get_packed_size(r);
    uint8_t stackbuf[4096];
    uint8_t *buf = n <= sizeof stackbuf ? stackbuf : hcl_malloc(n);
    hcl__control_reply__pack(r, buf);
    /* ROUTER without ROUTER_MANDATORY drops what it cannot route or queue: never blocks. */
    if (zmq_send(c->router, to->rid, to->rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0 &&
        (!to->delimiter || zmq_send(c->router, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0))
        zmq_send(c->router, buf, n, ZMQ_DONTWAIT);
    if (buf != stackbuf) free(buf);
}

static void reply_error(hcl_control *c, const reply_to *to, int code, const char *msg) {
    Hcl__ControlReply r = HCL__CONTROL_REPLY__INIT;
    r.ok = 0;
    r.error = (Hcl__ControlError)code;
    r.message = (char *)msg;
    send_reply(c, to, &r);
}

static reply_to request_to(const ctl_request *rq) {
    reply_to to = {rq->rid, rq->rid_len, rq->delimiter, rq->id};
    return to;
}

void control_reply_ok(hcl_control *c, const ctl_request *rq, int64_t step, const char *msg) {
    Hcl__ControlReply r = HCL__CONTROL_REPLY__INIT;
    Hcl__AckBody ack = HCL__ACK_BODY__INIT;
    ack.step = step;
    r.ok = 1;
    r.message = (char *)(msg ? msg : "");
    r.body_case = HCL__CONTROL_REPLY__BODY_ACK;
    r.ack = &ack;
    reply_to to = request_to(rq);
    send_reply(c, &to, &r);
}

void control_reply_error(hcl_control *c, const ctl_request *rq, enum ctl_error code, const char *msg) {
    reply_to to = request_to(rq);
    reply_error(c, &to, (int)code, msg ? msg : "");
}

static void reply_status(hcl_control *c, const reply_to *to, const hcl_status *st) {
    Hcl__StatusBody b = HCL__STATUS_BODY__INIT;
    b.state = (Hcl__RunState)st->state;
    b.step = st->step;
    b.total_steps = st->total_steps;
    b.epoch = st->epoch;
    b.loss = st->loss;
    b.lr = st->lr;
    b.lr_scale = st->lr_scale > 0 ? st->lr_scale : 1.0;
    b.logit_scale = st->logit_scale;
    b.samples_per_s = st->samples_per_s;
    b.eta_s = st->eta_s;
    b.elapsed_s = st->elapsed_s;
    char ckpt[sizeof st->last_checkpoint_path], ckerr[sizeof st->last_checkpoint_error];
    snprintf(ckpt, sizeof ckpt, "%s", st->last_checkpoint_path);
    snprintf(ckerr, sizeof ckerr, "%s", st->last_checkpoint_error);
    b.last_checkpoint_path = ckpt;
    b.last_checkpoint_step = st->last_checkpoint_step;
    b.last_checkpoint_error = ckerr;
    b.log_every = st->log_every;
    b.checkpoint_interval_s = st->checkpoint_interval_s;
    b.checkpoint_every = st->checkpoint_every;
    b.run_dir = c->run_dir;
    b.nworkers = c->nworkers;
    Hcl__WorkerStat *ws = NULL, **wp = NULL;
    if (c->nworkers > 0) {
        ws = hcl_calloc((size_t)c->nworkers, sizeof *ws);
        wp = hcl_calloc((size_t)c->nworkers, sizeof *wp);
        double now = hcl_now();
        for (int i = 0; i < c->nworkers; i++) {
            const hcl_worker_stat *s = &c->workers[i].s;
            hcl__worker_stat__init(&ws[i]);
            ws[i].rank = i;
            ws[i].step = s->step;
            ws[i].compute_s = s->compute_s;
            ws[i].allgather_s = s->allgather_s;
            ws[i].reduce_scatter_s = s->reduce_scatter_s;
            ws[i].allreduce_s = s->allreduce_s;
            ws[i].wait_s = s->wait_s;
            ws[i].bytes = s->bytes;
            ws[i].rss_bytes = s->rss_bytes;
            ws[i].last_seen_s = now - s->last_seen;
            ws[i].straggler = s->straggler;
            ws[i].compute_median_s = s->compute_median_s;
            ws[i].messages = s->messages;
            wp[i] = &ws[i];
        }
        b.n_workers = (size_t)c->nworkers;
        b.workers = wp;
    }
    Hcl__ControlReply r = HCL__CONTROL_REPLY__INIT;
    r.ok = 1;
    r.body_case = HCL__CONTROL_REPLY__BODY_STATUS;
    r.status = &b;
    send_reply(c, to, &r);
    free(ws);
    free(wp);
}

/* ---- requests ------------------------------------------------------------------------------ */

static int parse_number(const char *s, double *v) {
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    return end != s && !*end && !errno && isfinite(*v);
}

static int set_error(char *msg, size_t cap, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int set_error(char *msg, size_t cap, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, cap, fmt, ap);
    va_end(ap);
    return code;
}

/* Check a SET and fill rq->key/value. Returns 0, or the error code with msg. */
static int check_set(const hcl_status *st, const char *key, const char *val, ctl_request *rq,
                     char *msg, size_t cap) {
    char k[64], v[64];
    clean_text(k, sizeof k, key);
    clean_text(v, sizeof v, val);
    double x;
    int num = parse_number(val, &x);
    int integral = num && x == floor(x);
    if (strcmp(key, "lr_scale") == 0) {
        if (!num || !(x > 0) || x > 1e6)
            return set_error(msg, cap, CTL_ERROR_BAD_VALUE,
                             "lr_scale: bad value '%s' (want a number > 0 and <= 1e6)", v);
        rq->key = CTL_KEY_LR_SCALE;
        rq->value = x;
    } else if (strcmp(key, "lr") == 0) {
        if (!num || !(x > 0) || x > 1e3)
            return set_error(msg, cap, CTL_ERROR_BAD_VALUE,
                             "lr: bad value '%s' (want a number > 0 and <= 1000)", v);
        double scale = st && st->lr_scale > 0 ? st->lr_scale : 1.0;
        double sched = st ? st->lr / scale : 0;
        if (!(sched > 0) || !isfinite(sched) || x / sched > 1e6)
            return set_error(msg, cap, CTL_ERROR_REFUSED, "lr: the schedule is at %g at step %lld, "
                             "no lr_scale up to 1e6 makes it %s; set lr_scale instead", sched,
                             st ? (long long)st->step : 0LL, v);
        rq->key = CTL_KEY_LR_SCALE;
        rq->value = x / sched;
    } else if (strcmp(key, "log_every") == 0) {
        if (!integral || x < 1 || x > 1e9)
            return set_error(msg, cap, CTL_ERROR_BAD_VALUE,
                             "log_every: bad value '%s' (want an integer, 1 to 1e9)", v);
        rq->key = CTL_KEY_LOG_EVERY;
        rq->value = x;
    } else if (strcmp(key, "checkpoint_interval") == 0) {
        if (!num || x < 0 || x > 1e9)
            return set_error(msg, cap, CTL_ERROR_BAD_VALUE,
                             "checkpoint_interval: bad value '%s' (want seconds, 0 (off) to 1e9)", v);
        rq->key = CTL_KEY_CHECKPOINT_INTERVAL;
        rq->value = x;
    } else if (strcmp(key, "checkpoint_every") == 0) {
        if (!integral || x < 0 || x > 1e12)
            return set_error(msg, cap, CTL_ERROR_BAD_VALUE, "checkpoint_every: bad value '%s' (want "
                             "an integer number of steps, 0 (off) to 1e12)", v);
        rq->key = CTL_KEY_CHECKPOINT_EVERY;
        rq->value = x;
    } else {
        return set_error(msg, cap, CTL_ERROR_BAD_KEY, "unknown key '%s' (lr, lr_scale, log_every, "
                         "checkpoint_interval, checkpoint_every)", k);
    }
    snprintf(rq->text, sizeof rq->text, "set %s=%s", k, v);
    return 0;
}

static void queue_push(hcl_control *c, const reply_to *to, ctl_request *rq) {
    if (c->qlen == CONTROL_QUEUE_MAX) {
        char msg[96];
        snprintf(msg, sizeof msg, "busy: %d commands are waiting; try again", CONTROL_QUEUE_MAX);
        reply_error(c, to, CTL_ERROR_BUSY, msg);
        return;
    }
    rq->id = to->id;
    rq->delimiter = to->delimiter;
    rq->rid_len = (uint32_t)to->rid_len;
    memcpy(rq->rid, to->rid, to->rid_len);
    c->queue[(c->qhead + c->qlen) % CONTROL_QUEUE_MAX] = *rq;
    c->qlen++;
}

int control_next(hcl_control *c, ctl_request *rq) {
    if (!c->qlen) return 0;
    *rq = c->queue[c->qhead];
    c->qhead = (c->qhead + 1) % CONTROL_QUEUE_MAX;
    c->qlen--;
    return 1;
}

static void handle_request(hcl_control *c, const reply_to *to0, const uint8_t *data, size_t len,
                           const hcl_status *st) {
    reply_to to = *to0;
    char msg[512];
    Hcl__ControlRequest *q = hcl__control_request__unpack(NULL, len, data);
    if (!q) {
        snprintf(msg, sizeof msg, "bad request: %zu bytes that are not a ControlRequest", len);
        reply_error(c, &to, CTL_ERROR_BAD_REQUEST, msg);
        return;
    }
    to.id = q->id;
    if (q->version != HCL__CONTROL_VERSION__CONTROL_VERSION_1) {
        snprintf(msg, sizeof msg, "protocol version %u is not supported (this coordinator speaks 1)",
                 q->version);
        reply_error(c, &to, CTL_ERROR_BAD_VERSION, msg);
        hcl__control_request__free_unpacked(q, NULL);
        return;
    }
    ctl_request rq;
    memset(&rq, 0, sizeof rq);
    switch (q->body_case) {
    case HCL__CONTROL_REQUEST__BODY_STATUS:
        if (st) reply_status(c, &to, st);
        else reply_error(c, &to, CTL_ERROR_BUSY, "busy: no status yet");
        break;
    case HCL__CONTROL_REQUEST__BODY_WATCH: {
        Hcl__ControlReply r = HCL__CONTROL_REPLY__INIT;
        Hcl__WatchBody w = HCL__WATCH_BODY__INIT;
        w.endpoint = c->watch_endpoint;
        r.ok = 1;
        r.body_case = HCL__CONTROL_REPLY__BODY_WATCH;
        r.watch = &w;
        send_reply(c, &to, &r);
        break;
    }
    case HCL__CONTROL_REQUEST__BODY_PAUSE:
        rq.cmd = CTL_CMD_PAUSE;
        snprintf(rq.text, sizeof rq.text, "pause");
        queue_push(c, &to, &rq);
        break;
    case HCL__CONTROL_REQUEST__BODY_RESUME:
        rq.cmd = CTL_CMD_RESUME;
        snprintf(rq.text, sizeof rq.text, "resume");
        queue_push(c, &to, &rq);
        break;
    case HCL__CONTROL_REQUEST__BODY_CHECKPOINT:
        rq.cmd = CTL_CMD_CHECKPOINT;
        snprintf(rq.text, sizeof rq.text, "checkpoint");
        queue_push(c, &to, &rq);
        break;
    case HCL__CONTROL_REQUEST__BODY_STOP:
        rq.cmd = CTL_CMD_STOP;
        rq.no_checkpoint = q->stop && q->stop->no_checkpoint;
        snprintf(rq.text, sizeof rq.text, "stop%s", rq.no_checkpoint ? " --no-checkpoint" : "");
        queue_push(c, &to, &rq);
        break;
    case HCL__CONTROL_REQUEST__BODY_SET: {
        rq.cmd = CTL_CMD_SET;
        const char *k = q->set && q->set->key ? q->set->key : "";
        const char *v = q->set && q->set->value ? q->set->value : "";
        int code = check_set(st, k, v, &rq, msg, sizeof msg);
        if (code) reply_error(c, &to, code, msg);
        else queue_push(c, &to, &rq);
        break;
    }
    default:
        if (q->base.n_unknown_fields > 0)
            snprintf(msg, sizeof msg, "unknown request type (field %u); this coordinator knows status, "
                     "watch, pause, resume, checkpoint, stop, set", q->base.unknown_fields[0].tag);
        else
            snprintf(msg, sizeof msg, "request %llu has no type", (unsigned long long)q->id);
        reply_error(c, &to, CTL_ERROR_UNKNOWN_TYPE, msg);
        break;
    }
    hcl__control_request__free_unpacked(q, NULL);
}

/* One message from the ROUTER: [routing id][payload] (DEALER) or [id][""][payload] (REQ).
 * Returns 1 handled, 0 nothing there. */
static int router_one(hcl_control *c, const hcl_status *st) {
    enum { KEEP = 4 };
    zmq_msg_t f[KEEP];
    int nf = 0, extra = 0;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, c->router, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            break;
        }
        int more = zmq_msg_more(&m);
        if (nf < KEEP) f[nf++] = m;
        else { extra++; zmq_msg_close(&m); }
        if (!more) break;
    }
    if (!nf) return 0;
    reply_to to = {zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), 0, 0};
    if (to.rid_len > 255) to.rid_len = 0;   /* cannot happen: ZeroMQ routing ids are <= 255 */
    if (nf == 2 && !extra) {
        handle_request(c, &to, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), st);
    } else if (nf == 3 && !extra && zmq_msg_size(&f[1]) == 0) {
        to.delimiter = 1;
        handle_request(c, &to, zmq_msg_data(&f[2]), zmq_msg_size(&f[2]), st);
    } else if (to.rid_len) {
        char msg[128];
        to.delimiter = nf >= 3 && zmq_msg_size(&f[1]) == 0;
        snprintf(msg, sizeof msg, "bad request: %d frames (want one ControlRequest frame)",
                 nf - 1 + extra - to.delimiter);
        reply_error(c, &to, CTL_ERROR_BAD_REQUEST, msg);
    }
    for (int i = 0; i < nf; i++) zmq_msg_close(&f[i]);
    return 1;
}

/* ---- ZAP: which CURVE keys may connect ------------------------------------------------------ */

static int zap_allowed(const hcl_control *c, const zmq_msg_t *f, int nf) {
    /* version, request id, domain, address, identity, mechanism, credentials... */
    if (nf < 7 || zmq_msg_size(&f[0]) != 3 || memcmp(zmq_msg_data((zmq_msg_t *)&f[0]), "1.0", 3))
        return 0;
    size_t dl = zmq_msg_size(&f[2]), ml = zmq_msg_size(&f[5]);
    const char *dom = zmq_msg_data((zmq_msg_t *)&f[2]), *mech = zmq_msg_data((zmq_msg_t *)&f[5]);
    if (ml != 5 || memcmp(mech, "CURVE", 5) || zmq_msg_size(&f[6]) != 32) return 0;
    const uint8_t *key = zmq_msg_data((zmq_msg_t *)&f[6]);
    if (dl == strlen(ZAP_DOMAIN_CONTROL) && !memcmp(dom, ZAP_DOMAIN_CONTROL, dl)) {
        for (int i = 0; i < c->nclients; i++)
            if (!memcmp(key, c->clients[i], 32)) return 1;
        return 0;
    }
    if (dl == strlen(ZAP_DOMAIN_TELEMETRY) && !memcmp(dom, ZAP_DOMAIN_TELEMETRY, dl))
        return c->workers && !memcmp(key, c->telemetry_client, 32);
    return 0;
}

static int zap_one(hcl_control *c) {
    enum { KEEP = 8 };
    zmq_msg_t f[KEEP];
    int nf = 0;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, c->zap, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            break;
        }
        int more = zmq_msg_more(&m);
        if (nf < KEEP) f[nf++] = m;
        else zmq_msg_close(&m);
        if (!more) break;
    }
    if (!nf) return 0;
    int ok = zap_allowed(c, f, nf);
    /* REP must answer every request to stay in step. */
    zmq_send(c->zap, "1.0", 3, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    if (nf >= 2) zmq_send(c->zap, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE | ZMQ_DONTWAIT);
    else zmq_send(c->zap, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(c->zap, ok ? "200" : "400", 3, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    const char *text = ok ? "OK" : "key not allowed";
    zmq_send(c->zap, text, strlen(text), ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(c->zap, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(c->zap, "", 0, ZMQ_DONTWAIT);
    if (!ok) LOG_DEBUG("control: refused a CURVE client");
    for (int i = 0; i < nf; i++) zmq_msg_close(&f[i]);
    return 1;
}

/* ---- telemetry ----------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double window_median(const worker_slot *w) {
    double v[CONTROL_STRAGGLER_WINDOW];
    memcpy(v, w->window, sizeof(double) * (size_t)w->nwin);
    qsort(v, (size_t)w->nwin, sizeof(double), cmp_double);
    return w->nwin % 2 ? v[w->nwin / 2] : 0.5 * (v[w->nwin / 2 - 1] + v[w->nwin / 2]);
}

static void update_stragglers(hcl_control *c) {
    double *m = hcl_malloc(sizeof(double) * (size_t)c->nworkers);
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
    free(m);
}

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
    worker_slot *w = &c->workers[t->rank];
    hcl_worker_stat *s = &w->s;
    if (t->step < 0) {
        /* a heartbeat: the worker's process lives (even if its main thread waits in a
         * collective for a lost peer); no step numbers */
        s->last_seen = hcl_now();
        s->rss_bytes = t->rss_bytes;
        hcl__telemetry__free_unpacked(t, NULL);
        return 1;
    }
    s->step = t->step;
    s->compute_s = t->compute_s;
    s->allgather_s = t->allgather_s;
    s->reduce_scatter_s = t->reduce_scatter_s;
    s->allreduce_s = t->allreduce_s;
    s->wait_s = t->wait_s;
    s->bytes = t->bytes;
    s->rss_bytes = t->rss_bytes;
    s->last_seen = hcl_now();
    s->messages++;
    double ct = isfinite(t->compute_s) && t->compute_s >= 0 ? t->compute_s : 0;
    w->window[w->wpos] = ct;
    w->wpos = (w->wpos + 1) % CONTROL_STRAGGLER_WINDOW;
    if (w->nwin < CONTROL_STRAGGLER_WINDOW) w->nwin++;
    s->compute_median_s = window_median(w);
    hcl__telemetry__free_unpacked(t, NULL);
    return 1;
}

int control_telemetry_open(hcl_control *c, int nworkers, const char *host,
                           char endpoint[CONTROL_ENDPOINT_MAX], char server_public[CONTROL_KEY_Z85],
                           char client_secret[CONTROL_KEY_Z85], char *err) {
    if (c->pull) return hcl_err(err, "telemetry: already open");
    if (nworkers < 1 || nworkers > 1 << 20) return hcl_err(err, "telemetry: bad worker count %d", nworkers);
    char spub[41], ssec[41], cpub[41], csec[41];
    if (zmq_curve_keypair(spub, ssec) != 0 || zmq_curve_keypair(cpub, csec) != 0)
        return hcl_err(err, "telemetry: zmq_curve_keypair: %s (libzmq without CURVE?)",
                       zmq_strerror(zmq_errno()));
    char bind_ep[CONTROL_ENDPOINT_MAX], name[256];
    if (host) snprintf(name, sizeof name, "%s", host);
    else if (gethostname(name, sizeof name) != 0) return hcl_err(err, "gethostname: %s", strerror(errno));
    name[sizeof name - 1] = 0;
    snprintf(bind_ep, sizeof bind_ep, "tcp://%s:*", host ? host : "*");
    void *s = make_socket(c->ctx, ZMQ_PULL, host && host[0] == '[');
    sockopt_int(s, ZMQ_RCVHWM, 4096);
    int64_t maxmsg = TELEMETRY_MSG_MAX;
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    sockopt_int(s, ZMQ_CURVE_SERVER, 1);
    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, ssec, 41);
    zmq_setsockopt(s, ZMQ_ZAP_DOMAIN, ZAP_DOMAIN_TELEMETRY, strlen(ZAP_DOMAIN_TELEMETRY));
    if (zmq_bind(s, bind_ep) != 0) {
        int e = zmq_errno();
        zmq_close(s);
        return hcl_err(err, "telemetry: %s: bind: %s", bind_ep, zmq_strerror(e));
    }
    char last[CONTROL_ENDPOINT_MAX];
    last_endpoint(s, last, sizeof last);
    const char *port = strrchr(last, ':');
    if (snprintf(endpoint, CONTROL_ENDPOINT_MAX, "tcp://%s:%s", name, port ? port + 1 : "0") >=
        CONTROL_ENDPOINT_MAX) {
        zmq_close(s);
        return hcl_err(err, "telemetry: host name too long: %s", name);
    }
    c->pull = s;
    zmq_z85_decode(c->telemetry_client, cpub);
    c->nworkers = nworkers;
    c->workers = hcl_calloc((size_t)nworkers, sizeof *c->workers);
    c->telemetry_start = hcl_now();
    for (int i = 0; i < nworkers; i++) {
        c->workers[i].s.step = -1;
        c->workers[i].s.last_seen = c->telemetry_start;
    }
    memcpy(server_public, spub, 41);
    memcpy(client_secret, csec, 41);
    memset(ssec, 0, sizeof ssec);
    memset(csec, 0, sizeof csec);
    return 0;
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

/* ---- open, service, close ------------------------------------------------------------------ */

void control_status_init(hcl_status *st) {
    memset(st, 0, sizeof *st);
    st->state = HCL_RUN_STATE_STARTING;
    st->loss = NAN;
    st->lr_scale = 1.0;
    st->eta_s = -1;
    st->last_checkpoint_step = -1;
}

static void remove_ipc_files(hcl_control *c) {
    for (int i = 0; i < c->nipc; i++) {
        struct stat st;
        if (lstat(c->ipc_path[i], &st) == 0 && st.st_dev == c->ipc_dev[i] && st.st_ino == c->ipc_ino[i])
            unlink(c->ipc_path[i]);
    }
}

static int write_endpoint_file(hcl_control *c, char *err) {
    char text[CONTROL_ENDPOINT_MAX + 80];
    int n = snprintf(text, sizeof text, "%s\n", c->endpoint);
    if (c->curve) n += snprintf(text + n, sizeof text - (size_t)n, "curve-server-key %s\n", c->server_public);
    return hcl_write_file_durable(c->endpoint_file, text, (size_t)n, err);
}

int control_open(hcl_control **cp, const char *endpoint, const char *run_dir,
                 const char *curve_secret_file, const char *curve_clients_file, char *err) {
    *cp = NULL;
    if (endpoint && !*endpoint) endpoint = NULL;
    if (!run_dir || !*run_dir) return hcl_err(err, "control: no run directory");
    enum ep_kind kind = EP_IPC;
    char host[CONTROL_ENDPOINT_MAX] = "";
    if (endpoint && endpoint_kind(endpoint, &kind, host, sizeof host, err) != 0) return -1;
    int have_secret = curve_secret_file && *curve_secret_file;
    int have_clients = curve_clients_file && *curve_clients_file;
    if (have_secret != have_clients)
        return hcl_err(err, "control: CURVE needs both a server secret key file and a client keys "
                       "file (--control-secret and --control-clients)");
    if (kind == EP_TCP_OPEN && !have_secret)
        return hcl_err(err, "%s: a control endpoint other hosts can reach needs CURVE: pass "
                       "--control-secret SERVER.key and --control-clients FILE (keys from hclctl "
                       "keygen), or use ipc or tcp://127.0.0.1:PORT", endpoint);
    if (have_secret && !zmq_has("curve"))
        return hcl_err(err, "control: this libzmq has no CURVE support");

    hcl_control *c = hcl_calloc(1, sizeof *c);
    if (!realpath(run_dir, c->run_dir)) {
        int e = errno;
        free(c);
        return hcl_err(err, "%s: run directory: %s", run_dir, strerror(e));
    }
    snprintf(c->endpoint_file, sizeof c->endpoint_file, "%s/control.endpoint", c->run_dir);
    char secret[CONTROL_KEY_Z85] = "";
    if (have_secret) {
        if (load_secret(curve_secret_file, secret, err) != 0 || load_clients(c, curve_clients_file, err) != 0) {
            free(c->clients);
            free(c);
            return -1;
        }
        HCL_CHECK(zmq_curve_public(c->server_public, secret) == 0, "zmq_curve_public: %s",
                  zmq_strerror(zmq_errno()));
        c->curve = 1;
    }
    c->ctx = zmq_ctx_new();
    HCL_CHECK(c->ctx, "zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
    HCL_CHECK(zmq_ctx_set(c->ctx, ZMQ_BLOCKY, 0) == 0, "zmq_ctx_set(BLOCKY)");
    /* The ZAP handler first: CURVE handshakes ask it, and with no handler ZeroMQ lets anyone in. */
    c->zap = make_socket(c->ctx, ZMQ_REP, 0);
    HCL_CHECK(zmq_bind(c->zap, "inproc://zeromq.zap.01") == 0, "zmq_bind(inproc://zeromq.zap.01): %s",
              zmq_strerror(zmq_errno()));
    int ipv6 = host[0] == '[';
    c->router = make_socket(c->ctx, ZMQ_ROUTER, ipv6);
    c->pub = make_socket(c->ctx, ZMQ_PUB, ipv6);
    int64_t maxmsg = CONTROL_MSG_MAX;
    HCL_CHECK(zmq_setsockopt(c->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) == 0, "MAXMSGSIZE");
    sockopt_int(c->router, ZMQ_ROUTER_MANDATORY, 0);
    sockopt_int(c->router, ZMQ_RCVHWM, 1000);
    sockopt_int(c->router, ZMQ_SNDHWM, 1000);
    sockopt_int(c->pub, ZMQ_SNDHWM, 1000);
    int64_t submax = 1024;   /* subscriptions are the only thing a SUB sends */
    zmq_setsockopt(c->pub, ZMQ_MAXMSGSIZE, &submax, sizeof submax);
    if (c->curve) {
        void *ss[2] = {c->router, c->pub};
        for (int i = 0; i < 2; i++) {
            sockopt_int(ss[i], ZMQ_CURVE_SERVER, 1);
            HCL_CHECK(zmq_setsockopt(ss[i], ZMQ_CURVE_SECRETKEY, secret, 41) == 0, "CURVE_SECRETKEY");
            HCL_CHECK(zmq_setsockopt(ss[i], ZMQ_ZAP_DOMAIN, ZAP_DOMAIN_CONTROL,
                                     strlen(ZAP_DOMAIN_CONTROL)) == 0, "ZAP_DOMAIN");
        }
        memset(secret, 0, sizeof secret);
    }
    int rc = 0;
    if (!endpoint) {
        rc = bind_default(c, err);
    } else if (kind == EP_IPC) {
        char wpath[PATH_MAX + 16];
        snprintf(wpath, sizeof wpath, "%s.watch", endpoint + 6);
        if (strlen(wpath) > IPC_PATH_MAX) rc = hcl_err(err, "%s: too long for the watch socket", wpath);
        else rc = bind_ipc(c, c->router, endpoint + 6, err) == 0 && bind_ipc(c, c->pub, wpath, err) == 0 ? 0 : -1;
    } else {
        /* ZeroMQ binds addresses and interface names, not host names: localhost is 127.0.0.1. */
        char bep[CONTROL_ENDPOINT_MAX + 16], wep[CONTROL_ENDPOINT_MAX + 8];
        if (!strcmp(host, "localhost")) {
            snprintf(host, sizeof host, "127.0.0.1");
            snprintf(bep, sizeof bep, "tcp://127.0.0.1%s", strrchr(endpoint, ':'));
            endpoint = bep;
        }
        snprintf(wep, sizeof wep, "tcp://%s:*", host);
        if (zmq_bind(c->router, endpoint) != 0)
            rc = hcl_err(err, "%s: bind: %s", endpoint, zmq_strerror(zmq_errno()));
        else if (zmq_bind(c->pub, wep) != 0)
            rc = hcl_err(err, "%s: bind (watch): %s", wep, zmq_strerror(zmq_errno()));
    }
    if (rc == 0) {
        last_endpoint(c->router, c->endpoint, sizeof c->endpoint);
        last_endpoint(c->pub, c->watch_endpoint, sizeof c->watch_endpoint);
        if (kind == EP_TCP_OPEN) {
            /* A wildcard bind: name this host in what the clients get for the watch socket. */
            char name[200], *port = strrchr(c->watch_endpoint, ':');
            if ((strstr(c->watch_endpoint, "//0.0.0.0:") || strstr(c->watch_endpoint, "//[::]:")) &&
                port && gethostname(name, sizeof name) == 0) {
                char tmp[CONTROL_ENDPOINT_MAX];
                name[sizeof name - 1] = 0;
                snprintf(tmp, sizeof tmp, "tcp://%s%s", name, port);
                snprintf(c->watch_endpoint, sizeof c->watch_endpoint, "%s", tmp);
            }
        }
        rc = write_endpoint_file(c, err);
    }
    if (rc != 0) {
        zmq_close(c->router);
        zmq_close(c->pub);
        zmq_close(c->zap);
        zmq_ctx_term(c->ctx);
        remove_ipc_files(c);
        free(c->clients);
        free(c);
        return -1;
    }
    LOG_INFO("control: %s (watch %s)%s", c->endpoint, c->watch_endpoint,
             c->curve ? ", CURVE" : "");
    *cp = c;
    return 0;
}

const char *control_endpoint(const hcl_control *c) { return c->endpoint; }
const char *control_watch_endpoint(const hcl_control *c) { return c->watch_endpoint; }

int control_service(hcl_control *c, const hcl_status *st, int timeout_ms) {
    zmq_pollitem_t items[3] = {
        {c->router, 0, ZMQ_POLLIN, 0}, {c->zap, 0, ZMQ_POLLIN, 0}, {c->pull, 0, ZMQ_POLLIN, 0}};
    int nitems = c->pull ? 3 : 2;
    int rc = zmq_poll(items, nitems, timeout_ms < 0 ? 0 : timeout_ms);
    if (rc <= 0) return 0;   /* timeout, or EINTR (a signal for the loop to look at) */
    int handled = 0;
    /* ZAP first: handshakes waiting on it hold up clients. */
    for (int i = 0; i < SERVICE_BUDGET && zap_one(c); i++) handled++;
    for (int i = 0; i < SERVICE_BUDGET && router_one(c, st); i++) handled++;
    if (c->pull) {
        int got = 0;
        for (int i = 0; i < 4 * c->nworkers + SERVICE_BUDGET && pull_one(c); i++) got++;
        if (got) update_stragglers(c);
        handled += got;
    }
    return handled;
}

void control_publish(hcl_control *c, const hcl_status *st) {
    Hcl__StepEvent ev = HCL__STEP_EVENT__INIT;
    ev.step = st->step;
    ev.total_steps = st->total_steps;
    ev.epoch = st->epoch;
    ev.loss = st->loss;
    ev.lr = st->lr;
    ev.logit_scale = st->logit_scale;
    ev.samples_per_s = st->samples_per_s;
    ev.state = (Hcl__RunState)st->state;
    ev.eta_s = st->eta_s;
    ev.time = hcl_wall();
    uint8_t buf[256];
    size_t n = hcl__step_event__get_packed_size(&ev);
    HCL_CHECK(n <= sizeof buf, "StepEvent of %zu bytes", n);
    hcl__step_event__pack(&ev, buf);
    zmq_send(c->pub, buf, n, ZMQ_DONTWAIT);   /* PUB drops when a watcher lags */
}

void control_close(hcl_control *c) {
    if (!c) return;
    unlink(c->endpoint_file);
    zmq_close(c->router);
    zmq_close(c->pub);
    zmq_close(c->zap);
    if (c->pull) zmq_close(c->pull);
    zmq_ctx_term(c->ctx);   /* LINGER 0 everywhere: returns at once */
    remove_ipc_files(c);
    free(c->clients);
    free(c->workers);
    free(c);
}
