/* control_request: the request server of the control plane. hclctl (or any DEALER/REQ client)
 * sends one ControlRequest frame to the ROUTER; this file takes it off the socket, checks the
 * framing, decodes it, and dispatches with one switch on the request type: STATUS and WATCH
 * are answered at once, PAUSE, RESUME, CHECKPOINT, STOP and checked SETs are queued for the
 * loop (control_next), which answers them with control_reply_ok/error. Every request the
 * coordinator can route a reply to gets exactly one reply; replies never block (a client that
 * does not read loses them). */
#include "control_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "control.pb-c.h"
#include "util.h"

/* ---- replies ------------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *rid;
    size_t rid_len;
    int delimiter;
    uint64_t id;
} reply_to;

/* A packed reply to its client. ROUTER without ROUTER_MANDATORY drops what it cannot route or
 * queue: never blocks. */
static void send_frames(hcl_control *c, const reply_to *to, const uint8_t *buf, size_t n) {
    if (zmq_send(c->router, to->rid, to->rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0 &&
        (!to->delimiter || zmq_send(c->router, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0))
        zmq_send(c->router, buf, n, ZMQ_DONTWAIT);
}

static void send_reply(hcl_control *c, const reply_to *to, Hcl__ControlReply *r) {
    r->id = to->id;
    r->version = HCL__CONTROL_VERSION__CONTROL_VERSION_1;
    size_t n = hcl__control_reply__get_packed_size(r);
    uint8_t stackbuf[4096];
    uint8_t *buf = n <= sizeof stackbuf ? stackbuf : hcl_malloc(n);
    hcl__control_reply__pack(r, buf);
    send_frames(c, to, buf, n);
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

/* The per-worker table of a STATUS reply: ws and wp hold c->nworkers entries. */
static void fill_workers(const hcl_control *c, Hcl__WorkerStat *ws, Hcl__WorkerStat **wp) {
    double now = hcl_now();
    for (int i = 0; i < c->nworkers; i++) {
        const hcl_worker_stat *s = &c->workers[i].s;
        hcl__worker_stat__init(&ws[i]);
        ws[i].rank = i;
        ws[i].world_rank = s->rank;
        ws[i].host = (char *)s->host;
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
        ws[i].telemetry_dropped = s->telemetry_dropped;
        ws[i].in_step = s->in_step;
        ws[i].phase = (char *)s->phase;
        ws[i].phase_done = s->phase_done;
        wp[i] = &ws[i];
    }
}

/* The STATUS reply without its id: what the loop filled in *st, and the worker table, packed
 * into c->status_pack once per control_service call (control_status_stale) however many
 * clients ask in it. */
static void pack_status(hcl_control *c, const hcl_status *st) {
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
    char tb[sizeof st->tensorboard_dir], prom[sizeof st->prometheus_address];
    snprintf(tb, sizeof tb, "%s", st->tensorboard_dir);
    snprintf(prom, sizeof prom, "%s", st->prometheus_address);
    b.tensorboard_dir = tb;
    b.prometheus_address = prom;
    b.nworkers = c->nworkers;
    b.restarts = st->restarts;
    if (c->nworkers > 0) {
        if (!c->status_ws) {   /* once: the table's size is fixed when telemetry opens */
            c->status_ws = hcl_calloc((size_t)c->nworkers, sizeof *c->status_ws);
            c->status_wp = hcl_calloc((size_t)c->nworkers, sizeof *c->status_wp);
        }
        fill_workers(c, c->status_ws, c->status_wp);
        b.n_workers = (size_t)c->nworkers;
        b.workers = c->status_wp;
    }
    Hcl__ControlReply r = HCL__CONTROL_REPLY__INIT;   /* id 0: not packed (proto3) */
    r.version = HCL__CONTROL_VERSION__CONTROL_VERSION_1;
    r.ok = 1;
    r.body_case = HCL__CONTROL_REPLY__BODY_STATUS;
    r.status = &b;
    size_t n = hcl__control_reply__get_packed_size(&r);
    if (n > c->status_cap) {
        free(c->status_pack);
        c->status_cap = n + n / 2;
        c->status_pack = hcl_malloc(c->status_cap);
    }
    c->status_len = hcl__control_reply__pack(&r, c->status_pack);
    c->status_fresh = 1;
}

/* STATUS: a reply holding only the id (field 1), then the packed reply without it: protobuf
 * merges the two (fields in any order). */
static void reply_status(hcl_control *c, const reply_to *to, const hcl_status *st) {
    if (!c->status_fresh) pack_status(c, st);
    Hcl__ControlReply head = HCL__CONTROL_REPLY__INIT;
    head.id = to->id;
    uint8_t stackbuf[4096];
    size_t n = hcl__control_reply__get_packed_size(&head) + c->status_len;
    uint8_t *buf = n <= sizeof stackbuf ? stackbuf : hcl_malloc(n);
    size_t k = hcl__control_reply__pack(&head, buf);
    memcpy(buf + k, c->status_pack, c->status_len);
    send_frames(c, to, buf, k + c->status_len);
    if (buf != stackbuf) free(buf);
}

void control_status_stale(hcl_control *c) { c->status_fresh = 0; }

/* WATCH: where the StepEvents are published. */
static void reply_watch(hcl_control *c, const reply_to *to) {
    Hcl__ControlReply r = HCL__CONTROL_REPLY__INIT;
    Hcl__WatchBody w = HCL__WATCH_BODY__INIT;
    w.endpoint = c->watch_endpoint;
    r.ok = 1;
    r.body_case = HCL__CONTROL_REPLY__BODY_WATCH;
    r.watch = &w;
    send_reply(c, to, &r);
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
    control_clean_text(k, sizeof k, key);
    control_clean_text(v, sizeof v, val);
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

/* A command without a value (pause, resume, checkpoint, stop): queued for the loop. */
static void queue_command(hcl_control *c, const reply_to *to, enum ctl_cmd cmd, int no_checkpoint) {
    static const char *names[] = {[CTL_CMD_PAUSE] = "pause", [CTL_CMD_RESUME] = "resume",
                                  [CTL_CMD_CHECKPOINT] = "checkpoint", [CTL_CMD_STOP] = "stop"};
    ctl_request rq;
    memset(&rq, 0, sizeof rq);
    rq.cmd = cmd;
    rq.no_checkpoint = no_checkpoint;
    snprintf(rq.text, sizeof rq.text, "%s%s", names[cmd], no_checkpoint ? " --no-checkpoint" : "");
    queue_push(c, to, &rq);
}

/* SET: checked here (a bad key or value is answered at once), then queued. */
static void queue_set(hcl_control *c, const reply_to *to, const Hcl__SetRequest *set,
                      const hcl_status *st) {
    ctl_request rq;
    memset(&rq, 0, sizeof rq);
    rq.cmd = CTL_CMD_SET;
    char msg[512];
    const char *k = set && set->key ? set->key : "";
    const char *v = set && set->value ? set->value : "";
    int code = check_set(st, k, v, &rq, msg, sizeof msg);
    if (code) reply_error(c, to, code, msg);
    else queue_push(c, to, &rq);
}

/* A body this coordinator does not know (a newer client), or none. */
static void reply_unknown_type(hcl_control *c, const reply_to *to, const Hcl__ControlRequest *q) {
    char msg[512];
    if (q->base.n_unknown_fields > 0)
        snprintf(msg, sizeof msg, "unknown request type (field %u); this coordinator knows status, "
                 "watch, pause, resume, checkpoint, stop, set", q->base.unknown_fields[0].tag);
    else
        snprintf(msg, sizeof msg, "request %llu has no type", (unsigned long long)q->id);
    reply_error(c, to, CTL_ERROR_UNKNOWN_TYPE, msg);
}

/* Decode one request and dispatch it on its type; the unpacked request is freed on every path. */
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
    switch (q->body_case) {
    case HCL__CONTROL_REQUEST__BODY_STATUS:
        if (st) reply_status(c, &to, st);
        else reply_error(c, &to, CTL_ERROR_BUSY, "busy: no status yet");
        break;
    case HCL__CONTROL_REQUEST__BODY_WATCH: reply_watch(c, &to); break;
    case HCL__CONTROL_REQUEST__BODY_PAUSE: queue_command(c, &to, CTL_CMD_PAUSE, 0); break;
    case HCL__CONTROL_REQUEST__BODY_RESUME: queue_command(c, &to, CTL_CMD_RESUME, 0); break;
    case HCL__CONTROL_REQUEST__BODY_CHECKPOINT: queue_command(c, &to, CTL_CMD_CHECKPOINT, 0); break;
    case HCL__CONTROL_REQUEST__BODY_STOP:
        queue_command(c, &to, CTL_CMD_STOP, q->stop && q->stop->no_checkpoint);
        break;
    case HCL__CONTROL_REQUEST__BODY_SET: queue_set(c, &to, q->set, st); break;
    default: reply_unknown_type(c, &to, q); break;
    }
    hcl__control_request__free_unpacked(q, NULL);
}

/* One message from the ROUTER: [routing id][payload] (DEALER) or [id][""][payload] (REQ).
 * Returns 1 handled, 0 nothing there. */
int control_router_one(hcl_control *c, const hcl_status *st) {
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
