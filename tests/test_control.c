/* test_control: the coordinator's control plane (coordinator/control.c) over real sockets:
 * ipc in a mkdtemp directory and tcp on 127.0.0.1 with ephemeral ports.
 *
 *   status content; each command queued, popped and acked with its step; set checking;
 *   unknown version / type, garbage and bad framing get error replies; queue limit; watch
 *   events; oversize messages dropped; socket modes 0600, control.endpoint, the /tmp/hcl-UID
 *   fallback for long paths, a second job on the same socket refused; endpoint policy (no
 *   CURVE off loopback); CURVE: listed key answered, unknown key ignored, the good client
 *   still served; telemetry round trip, stragglers, silent workers, bad keys; sends that never
 *   block; 10,000 seeded random/truncated messages against a forked server that must still
 *   answer status within 100 ms; status latency (median/p99/max) over ipc and tcp.
 *
 *   test_control                       run the tests
 *   test_control --serve DIR [flags]   a fake training loop behind the control plane, for
 *                                      tests/test_hclctl.sh (see serve_main)
 *   test_control --latency ENDPOINT N  N status requests over one connection: median and max
 *                                      round trip; exit 1 if any took 100 ms or more
 *   test_control --fuzz ENDPOINT N     N seeded random byte strings and truncated status/watch
 *                                      requests at a real job (tests/test_control_job.sh):
 *                                      nothing that could decode as a command */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "check.h"
#include "control.h"
#include "control.pb-c.h"
#include "log.h"
#include "util.h"

/* The test target links coordinator/control.c only; the worker's telemetry sender is compiled
 * in here so that the round trip runs the real code on both ends. */
#include "telemetry.h"

static char tmp_root[256];

/* ---- client helpers ----------------------------------------------------------------------- */

static void *client_socket(void *ctx, int type, const char *ep, const char *server_pub,
                           const char *client_sec) {
    void *s = zmq_socket(ctx, type);
    HCL_CHECK(s, "zmq_socket");
    int zero = 0, one = 1, hwm = 100000, sndtimeo = 500;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);  /* a refused client has no peer */
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (strstr(ep, "://[")) zmq_setsockopt(s, ZMQ_IPV6, &one, sizeof one);
    if (server_pub) {
        char pub[41];
        HCL_CHECK(zmq_curve_public(pub, client_sec) == 0, "zmq_curve_public");
        zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server_pub, 41);
        zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, 41);
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, client_sec, 41);
    }
    HCL_CHECK(zmq_connect(s, ep) == 0, "connect %s: %s", ep, zmq_strerror(zmq_errno()));
    return s;
}

enum { RQ_STATUS = 10, RQ_WATCH, RQ_PAUSE, RQ_RESUME, RQ_CHECKPOINT, RQ_STOP, RQ_SET };

static size_t pack_request(uint8_t *buf, int type, uint64_t id, uint32_t version, const char *key,
                           const char *value, int no_checkpoint) {
    Hcl__ControlRequest rq = HCL__CONTROL_REQUEST__INIT;
    Hcl__StatusRequest status = HCL__STATUS_REQUEST__INIT;
    Hcl__WatchRequest watch = HCL__WATCH_REQUEST__INIT;
    Hcl__PauseRequest pause = HCL__PAUSE_REQUEST__INIT;
    Hcl__ResumeRequest resume = HCL__RESUME_REQUEST__INIT;
    Hcl__CheckpointRequest ckpt = HCL__CHECKPOINT_REQUEST__INIT;
    Hcl__StopRequest stop = HCL__STOP_REQUEST__INIT;
    Hcl__SetRequest set = HCL__SET_REQUEST__INIT;
    rq.id = id;
    rq.version = version;
    rq.body_case = (Hcl__ControlRequest__BodyCase)type;
    switch (type) {
    case RQ_STATUS: rq.status = &status; break;
    case RQ_WATCH: rq.watch = &watch; break;
    case RQ_PAUSE: rq.pause = &pause; break;
    case RQ_RESUME: rq.resume = &resume; break;
    case RQ_CHECKPOINT: rq.checkpoint = &ckpt; break;
    case RQ_STOP: stop.no_checkpoint = no_checkpoint; rq.stop = &stop; break;
    case RQ_SET: set.key = (char *)key; set.value = (char *)value; rq.set = &set; break;
    default: rq.body_case = HCL__CONTROL_REQUEST__BODY__NOT_SET; break;
    }
    return hcl__control_request__pack(&rq, buf);
}

static void send_request(void *cli, int type, uint64_t id, const char *key, const char *value,
                         int no_checkpoint) {
    uint8_t buf[1024];
    size_t n = pack_request(buf, type, id, 1, key, value, no_checkpoint);
    zmq_send(cli, buf, n, 0);
}

/* Wait for the next reply on cli, servicing c (if any) meanwhile. REQ sockets strip the
 * delimiter themselves. NULL after timeout_ms. */
static Hcl__ControlReply *await_reply(hcl_control *c, const hcl_status *st, void *cli, int timeout_ms) {
    double end = hcl_now() + timeout_ms / 1e3;
    while (hcl_now() < end) {
        if (c) control_service(c, st, 1);
        zmq_pollitem_t it = {cli, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, c ? 0 : 5) > 0) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, cli, 0) < 0) { zmq_msg_close(&m); continue; }
            Hcl__ControlReply *r = hcl__control_reply__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
            zmq_msg_close(&m);
            if (r) return r;
        }
    }
    return NULL;
}

static Hcl__ControlReply *call(hcl_control *c, const hcl_status *st, void *cli, int type, uint64_t id,
                               const char *key, const char *value) {
    send_request(cli, type, id, key, value, 0);
    return await_reply(c, st, cli, 2000);
}

/* Service c until a command is queued; 1 with *rq, 0 after 2 s. */
static int await_request(hcl_control *c, const hcl_status *st, ctl_request *rq) {
    double end = hcl_now() + 2;
    while (hcl_now() < end) {
        if (control_next(c, rq)) return 1;
        control_service(c, st, 5);
    }
    return 0;
}

static void fake_status(hcl_status *st) {
    control_status_init(st);
    st->state = HCL_RUN_STATE_RUNNING;
    st->step = 1200;
    st->total_steps = 5000;
    st->epoch = 3;
    st->loss = 0.285;
    st->lr = 2e-4;
    st->lr_scale = 0.5;
    st->logit_scale = 22.93;
    st->samples_per_s = 11546;
    st->eta_s = 329;
    st->elapsed_s = 104;
    snprintf(st->last_checkpoint_path, sizeof st->last_checkpoint_path, "ckpt/step-00001000");
    st->last_checkpoint_step = 1000;
    st->log_every = 10;
    st->checkpoint_interval_s = 600;
}

static int file_mode(const char *path) {
    struct stat s;
    return stat(path, &s) == 0 ? (int)(s.st_mode & 07777) : -1;
}

static int exists(const char *path) {
    struct stat s;
    return lstat(path, &s) == 0;
}

static void make_dir(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", tmp_root, name);
    HCL_CHECK(mkdir(out, 0755) == 0, "mkdir %s: %s", out, strerror(errno));
}

static void read_first_line(const char *path, char *out, size_t cap) {
    out[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    if (fgets(out, (int)cap, f)) out[strcspn(out, "\n")] = 0;
    fclose(f);
}

static void write_text(const char *path, const char *text, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    HCL_CHECK(fd >= 0, "create %s", path);
    HCL_CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text), "write %s", path);
    fchmod(fd, mode);
    close(fd);
}

/* ---- requests, replies, commands (ipc default endpoint) ------------------------------------ */

static void test_ipc_and_commands(void) {
    char dir[512], err[HCL_ERR_MAX], path[PATH_MAX + 64], real[PATH_MAX];
    make_dir(dir, sizeof dir, "run");
    HCL_CHECK(realpath(dir, real), "realpath");
    hcl_control *c;
    int rc = control_open(&c, NULL, dir, NULL, NULL, err);
    CHECK(rc == 0, "control_open(default ipc): %s", err);
    if (rc) return;
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "ipc://%s/control.sock", real);
    CHECK(strcmp(control_endpoint(c), want) == 0, "endpoint %s, want %s", control_endpoint(c), want);
    snprintf(path, sizeof path, "%s/control.sock", real);
    CHECK(file_mode(path) == 0600, "control.sock mode %04o, want 0600", file_mode(path));
    snprintf(path, sizeof path, "%s/watch.sock", real);
    CHECK(file_mode(path) == 0600, "watch.sock mode %04o, want 0600", file_mode(path));
    snprintf(path, sizeof path, "%s/control.endpoint", dir);
    char line[1024];
    read_first_line(path, line, sizeof line);
    CHECK(strcmp(line, control_endpoint(c)) == 0, "control.endpoint says '%s', want '%s'", line,
          control_endpoint(c));

    void *ctx = zmq_ctx_new();
    void *cli = client_socket(ctx, ZMQ_DEALER, control_endpoint(c), NULL, NULL);
    hcl_status st;
    fake_status(&st);

    /* status: everything the loop filled */
    Hcl__ControlReply *r = call(c, &st, cli, RQ_STATUS, 77, NULL, NULL);
    CHECK(r && r->ok && r->id == 77 && r->body_case == HCL__CONTROL_REPLY__BODY_STATUS, "status reply");
    if (r && r->body_case == HCL__CONTROL_REPLY__BODY_STATUS) {
        Hcl__StatusBody *b = r->status;
        CHECK(b->state == HCL__RUN_STATE__RUN_STATE_RUNNING && b->step == 1200 && b->total_steps == 5000 &&
              b->epoch == 3, "status state/step/total/epoch: %d %lld %lld %lld", b->state,
              (long long)b->step, (long long)b->total_steps, (long long)b->epoch);
        CHECK(b->loss == 0.285 && b->lr == 2e-4 && b->lr_scale == 0.5 && b->logit_scale == 22.93 &&
              b->samples_per_s == 11546 && b->eta_s == 329 && b->elapsed_s == 104,
              "status numbers: loss %g lr %g scale %g", b->loss, b->lr, b->lr_scale);
        CHECK(!strcmp(b->last_checkpoint_path, "ckpt/step-00001000") && b->last_checkpoint_step == 1000 &&
              !b->last_checkpoint_error[0], "status checkpoint '%s' %lld", b->last_checkpoint_path,
              (long long)b->last_checkpoint_step);
        CHECK(b->log_every == 10 && b->checkpoint_interval_s == 600 && b->checkpoint_every == 0,
              "status settings");
        CHECK(!strcmp(b->run_dir, real) && b->nworkers == 0 && b->n_workers == 0, "status run_dir '%s'",
              b->run_dir);
    }
    if (r) hcl__control_reply__free_unpacked(r, NULL);
    r = call(c, NULL, cli, RQ_STATUS, 78, NULL, NULL);
    CHECK(r && !r->ok && (int)r->error == CTL_ERROR_BUSY && r->id == 78, "status without a status: busy");
    if (r) hcl__control_reply__free_unpacked(r, NULL);

    /* each command: queued, popped with its fields, acked with the step */
    struct { int type; const char *key, *value; int no_ckpt; enum ctl_cmd cmd; enum ctl_key k; double v; } cmds[] = {
        {RQ_PAUSE, NULL, NULL, 0, CTL_CMD_PAUSE, 0, 0},
        {RQ_RESUME, NULL, NULL, 0, CTL_CMD_RESUME, 0, 0},
        {RQ_CHECKPOINT, NULL, NULL, 0, CTL_CMD_CHECKPOINT, 0, 0},
        {RQ_STOP, NULL, NULL, 0, CTL_CMD_STOP, 0, 0},
        {RQ_STOP, NULL, NULL, 1, CTL_CMD_STOP, 0, 0},
        {RQ_SET, "lr_scale", "0.25", 0, CTL_CMD_SET, CTL_KEY_LR_SCALE, 0.25},
        /* the unscaled schedule is 2e-4 / 0.5 = 4e-4: lr 1e-4 is a scale of 0.25 */
        {RQ_SET, "lr", "1e-4", 0, CTL_CMD_SET, CTL_KEY_LR_SCALE, 0.25},
        {RQ_SET, "log_every", "50", 0, CTL_CMD_SET, CTL_KEY_LOG_EVERY, 50},
        {RQ_SET, "checkpoint_interval", "0", 0, CTL_CMD_SET, CTL_KEY_CHECKPOINT_INTERVAL, 0},
        {RQ_SET, "checkpoint_interval", "90.5", 0, CTL_CMD_SET, CTL_KEY_CHECKPOINT_INTERVAL, 90.5},
        {RQ_SET, "checkpoint_every", "1000", 0, CTL_CMD_SET, CTL_KEY_CHECKPOINT_EVERY, 1000},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        send_request(cli, cmds[i].type, 100 + i, cmds[i].key, cmds[i].value, cmds[i].no_ckpt);
        ctl_request rq;
        int got = await_request(c, &st, &rq);
        CHECK(got && rq.cmd == cmds[i].cmd, "command %zu: queued as %d, want %d", i, got ? (int)rq.cmd : -1,
              (int)cmds[i].cmd);
        if (!got) continue;
        if (cmds[i].type == RQ_STOP)
            CHECK(rq.no_checkpoint == cmds[i].no_ckpt, "stop no_checkpoint %d", rq.no_checkpoint);
        if (cmds[i].type == RQ_SET)
            CHECK(rq.key == cmds[i].k && fabs(rq.value - cmds[i].v) <= 1e-12 * fabs(cmds[i].v),
                  "set %s=%s: key %d value %.17g, want %d %.17g", cmds[i].key, cmds[i].value, rq.key,
                  rq.value, cmds[i].k, cmds[i].v);
        ctl_request extra;
        CHECK(!control_next(c, &extra), "one request queued once");
        control_reply_ok(c, &rq, 1201 + (int64_t)i, i == 2 ? "written" : NULL);
        r = await_reply(c, &st, cli, 2000);
        CHECK(r && r->ok && r->id == 100 + i && r->body_case == HCL__CONTROL_REPLY__BODY_ACK &&
              r->ack->step == 1201 + (int64_t)i, "command %zu: ack with step %lld", i, 1201 + (long long)i);
        if (r && i == 2) CHECK(!strcmp(r->message, "written"), "ack message '%s'", r->message);
        if (r) hcl__control_reply__free_unpacked(r, NULL);
    }
    /* the loop refuses */
    send_request(cli, RQ_RESUME, 300, NULL, NULL, 0);
    ctl_request rq;
    if (await_request(c, &st, &rq)) {
        CHECK(!strstr(rq.text, "?") && !strcmp(rq.text, "resume"), "request text '%s'", rq.text);
        control_reply_error(c, &rq, CTL_ERROR_REFUSED, "resume: not paused");
        r = await_reply(c, &st, cli, 2000);
        CHECK(r && !r->ok && r->id == 300 && (int)r->error == CTL_ERROR_REFUSED &&
              !strcmp(r->message, "resume: not paused"), "refused reply");
        if (r) hcl__control_reply__free_unpacked(r, NULL);
    } else {
        CHECK(0, "resume not queued");
    }

    /* set: bad keys and values are answered by control.c, never queued */
    struct { const char *key, *value; int code; } bad[] = {
        {"lr_scael", "1", CTL_ERROR_BAD_KEY}, {"", "1", CTL_ERROR_BAD_KEY},
        {"lr", "-1", CTL_ERROR_BAD_VALUE}, {"lr", "abc", CTL_ERROR_BAD_VALUE}, {"lr", "", CTL_ERROR_BAD_VALUE},
        {"lr", "nan", CTL_ERROR_BAD_VALUE}, {"lr_scale", "inf", CTL_ERROR_BAD_VALUE},
        {"lr_scale", "0", CTL_ERROR_BAD_VALUE}, {"log_every", "0", CTL_ERROR_BAD_VALUE},
        {"log_every", "1.5", CTL_ERROR_BAD_VALUE}, {"log_every", "10x", CTL_ERROR_BAD_VALUE},
        {"checkpoint_interval", "-3", CTL_ERROR_BAD_VALUE}, {"checkpoint_every", "-1", CTL_ERROR_BAD_VALUE},
        {"checkpoint_every", "1e13", CTL_ERROR_BAD_VALUE},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = call(c, &st, cli, RQ_SET, 400 + i, bad[i].key, bad[i].value);
        CHECK(r && !r->ok && r->id == 400 + i && (int)r->error == bad[i].code && r->message[0],
              "set %s=%s: want error %d, got %d '%s'", bad[i].key, bad[i].value, bad[i].code,
              r ? (int)r->error : -1, r ? r->message : "no reply");
        if (r) hcl__control_reply__free_unpacked(r, NULL);
    }
    CHECK(!control_next(c, &rq), "bad sets were queued");
    hcl_status st0 = st;
    st0.lr = 0;
    r = call(c, &st0, cli, RQ_SET, 450, "lr", "1e-3");
    CHECK(r && !r->ok && (int)r->error == CTL_ERROR_REFUSED, "set lr while the schedule is 0: refused");
    if (r) { printf("  schedule at 0: %s\n", r->message); hcl__control_reply__free_unpacked(r, NULL); }

    /* versions, types, garbage, framing */
    uint8_t buf[512];
    size_t n = pack_request(buf, RQ_STATUS, 500, 7, NULL, NULL, 0);
    zmq_send(cli, buf, n, 0);
    r = await_reply(c, &st, cli, 2000);
    CHECK(r && !r->ok && r->id == 500 && (int)r->error == CTL_ERROR_BAD_VERSION, "version 7: bad version");
    if (r) { printf("  version 7: %s\n", r->message); hcl__control_reply__free_unpacked(r, NULL); }
    n = pack_request(buf, RQ_PAUSE, 501, 0, NULL, NULL, 0);
    zmq_send(cli, buf, n, 0);
    r = await_reply(c, &st, cli, 2000);
    CHECK(r && !r->ok && r->id == 501 && (int)r->error == CTL_ERROR_BAD_VERSION, "version 0: bad version");
    if (r) hcl__control_reply__free_unpacked(r, NULL);
    CHECK(!control_next(c, &rq), "a request of version 0 was queued");
    /* id 502, version 1, field 17 (an empty message, a type from the future) */
    const uint8_t future[] = {0x08, 0xf6, 0x03, 0x10, 0x01, 0x8a, 0x01, 0x00};
    zmq_send(cli, future, sizeof future, 0);
    r = await_reply(c, &st, cli, 2000);
    CHECK(r && !r->ok && r->id == 502 && (int)r->error == CTL_ERROR_UNKNOWN_TYPE, "unknown type");
    if (r) { printf("  unknown type: %s\n", r->message); hcl__control_reply__free_unpacked(r, NULL); }
    n = pack_request(buf, 0, 503, 1, NULL, NULL, 0);
    zmq_send(cli, buf, n, 0);
    r = await_reply(c, &st, cli, 2000);
    CHECK(r && !r->ok && r->id == 503 && (int)r->error == CTL_ERROR_UNKNOWN_TYPE, "no type");
    if (r) hcl__control_reply__free_unpacked(r, NULL);
    const char garbage[] = "\xff\xff\xff\xff garbage \x01";
    zmq_send(cli, garbage, sizeof garbage, 0);
    r = await_reply(c, &st, cli, 2000);
    CHECK(r && !r->ok && r->id == 0 && (int)r->error == CTL_ERROR_BAD_REQUEST, "garbage: bad request");
    if (r) { printf("  garbage: %s\n", r->message); hcl__control_reply__free_unpacked(r, NULL); }
    zmq_send(cli, "", 0, 0);   /* an empty frame decodes as a request with no version */
    r = await_reply(c, &st, cli, 2000);
    CHECK(r && !r->ok && (int)r->error == CTL_ERROR_BAD_VERSION, "empty message: bad version");
    if (r) hcl__control_reply__free_unpacked(r, NULL);
    n = pack_request(buf, RQ_STATUS, 504, 1, NULL, NULL, 0);
    zmq_send(cli, "a", 1, ZMQ_SNDMORE);
    zmq_send(cli, "b", 1, ZMQ_SNDMORE);
    zmq_send(cli, buf, n, 0);
    r = await_reply(c, &st, cli, 2000);
    CHECK(r && !r->ok && (int)r->error == CTL_ERROR_BAD_REQUEST, "three frames: bad request");
    if (r) { printf("  three frames: %s\n", r->message); hcl__control_reply__free_unpacked(r, NULL); }

    /* a REQ client (empty delimiter) */
    void *req = client_socket(ctx, ZMQ_REQ, control_endpoint(c), NULL, NULL);
    r = call(c, &st, req, RQ_STATUS, 600, NULL, NULL);
    CHECK(r && r->ok && r->id == 600 && r->body_case == HCL__CONTROL_REPLY__BODY_STATUS, "REQ client status");
    if (r) hcl__control_reply__free_unpacked(r, NULL);
    zmq_close(req);

    /* queue limit: the commands past CONTROL_QUEUE_MAX are answered busy */
    for (int i = 0; i < CONTROL_QUEUE_MAX + 6; i++) send_request(cli, RQ_CHECKPOINT, 700 + i, NULL, NULL, 0);
    int busy = 0, others = 0;
    for (;;) {
        r = await_reply(c, &st, cli, 300);
        if (!r) break;
        if (!r->ok && (int)r->error == CTL_ERROR_BUSY) busy++;
        else others++;
        hcl__control_reply__free_unpacked(r, NULL);
    }
    int queued = 0;
    while (control_next(c, &rq)) queued++;
    CHECK(busy == 6 && others == 0 && queued == CONTROL_QUEUE_MAX, "queue limit: %d busy, %d queued, %d other",
          busy, queued, others);

    /* watch: the PUB endpoint, then events */
    r = call(c, &st, cli, RQ_WATCH, 800, NULL, NULL);
    CHECK(r && r->ok && r->body_case == HCL__CONTROL_REPLY__BODY_WATCH &&
          !strcmp(r->watch->endpoint, control_watch_endpoint(c)), "watch endpoint");
    if (r) {
        void *sub = client_socket(ctx, ZMQ_SUB, r->watch->endpoint, NULL, NULL);
        zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0);
        Hcl__StepEvent *ev = NULL;
        for (int i = 0; i < 400 && !ev; i++) {
            st.step = 2000 + i;
            control_publish(c, &st);
            zmq_pollitem_t it = {sub, 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&it, 1, 5) > 0) {
                uint8_t eb[512];
                int en = zmq_recv(sub, eb, sizeof eb, 0);
                if (en > 0) ev = hcl__step_event__unpack(NULL, (size_t)en, eb);
            }
        }
        CHECK(ev && ev->step >= 2000 && ev->total_steps == 5000 && ev->loss == 0.285 &&
              ev->logit_scale == 22.93 && ev->state == HCL__RUN_STATE__RUN_STATE_RUNNING && ev->time > 1e9,
              "a watch event");
        if (ev) hcl__step_event__free_unpacked(ev, NULL);
        zmq_close(sub);
        hcl__control_reply__free_unpacked(r, NULL);
    }

    /* an oversize message: ZeroMQ drops it (and the sender's connection); the server goes on */
    size_t big = CONTROL_MSG_MAX + 1024;
    uint8_t *huge = hcl_calloc(big, 1);
    void *bigcli = client_socket(ctx, ZMQ_DEALER, control_endpoint(c), NULL, NULL);
    zmq_send(bigcli, huge, big, 0);
    free(huge);
    r = await_reply(c, &st, bigcli, 500);
    CHECK(!r, "an oversize message got a reply");
    if (r) hcl__control_reply__free_unpacked(r, NULL);
    CHECK(!control_next(c, &rq), "an oversize message was queued");
    zmq_close(bigcli);
    r = call(c, &st, cli, RQ_STATUS, 900, NULL, NULL);
    CHECK(r && r->ok, "status after an oversize message");
    if (r) hcl__control_reply__free_unpacked(r, NULL);

    /* a second job on the same run directory is refused; the first goes on */
    hcl_control *c2;
    rc = control_open(&c2, NULL, dir, NULL, NULL, err);
    CHECK(rc != 0 && strstr(err, "another process is listening"), "second job: %s", rc ? err : "opened");
    if (rc == 0) control_close(c2);
    else printf("  second job: %s\n", err);
    r = call(c, &st, cli, RQ_STATUS, 901, NULL, NULL);
    CHECK(r && r->ok, "status after a second job was refused");
    if (r) hcl__control_reply__free_unpacked(r, NULL);

    zmq_close(cli);
    zmq_ctx_term(ctx);
    control_close(c);
    snprintf(path, sizeof path, "%s/control.sock", real);
    CHECK(!exists(path), "control.sock left after close");
    snprintf(path, sizeof path, "%s/control.endpoint", real);
    CHECK(!exists(path), "control.endpoint left after close");

    /* a stale socket file (a job that crashed) is replaced */
    snprintf(path, sizeof path, "%s/control.sock", real);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    HCL_CHECK(strlen(path) < sizeof sa.sun_path, "%s: too long", path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "a stale socket: %s", strerror(errno));
    close(fd);
    rc = control_open(&c, NULL, dir, NULL, NULL, err);
    CHECK(rc == 0 && !strcmp(control_endpoint(c), want), "over a stale socket file: %s",
          rc ? err : control_endpoint(c));
    if (rc == 0) control_close(c);
    /* a run directory that cannot hold the socket: the private fallback */
    CHECK(mkdir(path, 0755) == 0, "mkdir %s", path);
    rc = control_open(&c, NULL, dir, NULL, NULL, err);
    CHECK(rc == 0 && !strncmp(control_endpoint(c), "ipc:///tmp/hcl-", 15), "control.sock a directory: %s",
          rc ? err : control_endpoint(c));
    if (rc == 0) control_close(c);
    rmdir(path);
}

/* ---- a run directory too long for a unix socket path --------------------------------------- */

static void test_long_path(void) {
    char dir[1024], err[HCL_ERR_MAX];
    make_dir(dir, sizeof dir, "a-run-directory-with-a-rather-long-name-0123456789");
    size_t len = strlen(dir);
    snprintf(dir + len, sizeof dir - len, "/and-a-subdirectory-with-a-long-name-too-0123456789");
    HCL_CHECK(mkdir(dir, 0755) == 0, "mkdir");
    hcl_control *c;
    int rc = control_open(&c, NULL, dir, NULL, NULL, err);
    CHECK(rc == 0, "control_open(long run dir): %s", err);
    if (rc) return;
    char want[64], path[1200], line[1024];
    snprintf(want, sizeof want, "ipc:///tmp/hcl-%u/", (unsigned)getuid());
    CHECK(!strncmp(control_endpoint(c), want, strlen(want)), "fallback endpoint %s, want %s...",
          control_endpoint(c), want);
    printf("  long run directory: %s\n", control_endpoint(c));
    CHECK(file_mode(want + 6) == 0700, "%s mode %04o, want 0700", want + 6, file_mode(want + 6));
    CHECK(file_mode(control_endpoint(c) + 6) == 0600, "fallback socket mode %04o",
          file_mode(control_endpoint(c) + 6));
    snprintf(path, sizeof path, "%s/control.endpoint", dir);
    read_first_line(path, line, sizeof line);
    CHECK(!strcmp(line, control_endpoint(c)), "control.endpoint '%s'", line);
    void *ctx = zmq_ctx_new();
    void *cli = client_socket(ctx, ZMQ_DEALER, line, NULL, NULL);
    hcl_status st;
    fake_status(&st);
    Hcl__ControlReply *r = call(c, &st, cli, RQ_STATUS, 1, NULL, NULL);
    CHECK(r && r->ok && r->body_case == HCL__CONTROL_REPLY__BODY_STATUS, "status over the fallback socket");
    if (r) hcl__control_reply__free_unpacked(r, NULL);
    zmq_close(cli);
    zmq_ctx_term(ctx);
    snprintf(path, sizeof path, "%s", control_endpoint(c) + 6);
    control_close(c);
    CHECK(!exists(path), "fallback socket %s left after close", path);
}

/* ---- endpoint policy and tcp --------------------------------------------------------------- */

static void test_tcp_policy(void) {
    char dir[512], err[HCL_ERR_MAX];
    make_dir(dir, sizeof dir, "policy");
    const char *refused[] = {"tcp://0.0.0.0:0", "tcp://*:5555", "tcp://192.0.2.1:5555",
                             "tcp://eth0:5555", "tcp://127.0.0.1.example.com:5555"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        hcl_control *c;
        int rc = control_open(&c, refused[i], dir, NULL, NULL, err);
        CHECK(rc != 0 && strstr(err, "CURVE") && strstr(err, refused[i]), "%s without keys: %s", refused[i],
              rc ? err : "opened");
        if (!rc) control_close(c);
        if (i == 0) printf("  %s\n", err);
    }
    const char *bad[] = {"tcp://127.0.0.1", "tcp://127.0.0.1:99999", "inproc://x", "ipc://relative.sock",
                         "udp://127.0.0.1:5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hcl_control *c;
        int rc = control_open(&c, bad[i], dir, NULL, NULL, err);
        CHECK(rc != 0 && strstr(err, bad[i]), "%s: want a clear error, got %s", bad[i], rc ? err : "opened");
        if (!rc) control_close(c);
    }
    hcl_control *c;
    int rc = control_open(&c, "tcp://127.0.0.1:*", dir, "only-a-secret.key", NULL, err);
    CHECK(rc != 0 && strstr(err, "both"), "a secret without a clients file: %s", rc ? err : "opened");
    if (!rc) control_close(c);

    const char *ok[] = {"tcp://127.0.0.1:*", "tcp://localhost:*", "tcp://[::1]:*", "tcp://127.0.0.1:0"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        rc = control_open(&c, ok[i], dir, NULL, NULL, err);
        if (rc != 0 && strstr(ok[i], "::1")) {
            printf("  skip %s: %s\n", ok[i], err);
            continue;
        }
        CHECK(rc == 0, "%s: %s", ok[i], err);
        if (rc) continue;
        CHECK(!strncmp(control_endpoint(c), "tcp://", 6) && !strstr(control_endpoint(c), ":*") &&
              strncmp(control_watch_endpoint(c), "tcp://", 6) == 0 &&
              strcmp(control_endpoint(c), control_watch_endpoint(c)) != 0,
              "%s: bound %s, watch %s", ok[i], control_endpoint(c), control_watch_endpoint(c));
        void *ctx = zmq_ctx_new();
        void *cli = client_socket(ctx, ZMQ_DEALER, control_endpoint(c), NULL, NULL);
        hcl_status st;
        fake_status(&st);
        Hcl__ControlReply *r = call(c, &st, cli, RQ_STATUS, 5, NULL, NULL);
        CHECK(r && r->ok && r->status->step == 1200, "status over %s", control_endpoint(c));
        if (r) hcl__control_reply__free_unpacked(r, NULL);
        zmq_close(cli);
        zmq_ctx_term(ctx);
        control_close(c);
    }
}

/* ---- CURVE --------------------------------------------------------------------------------- */

static void test_curve(void) {
    char dir[512], err[HCL_ERR_MAX], secf[600], clif[600], text[512];
    make_dir(dir, sizeof dir, "curve");
    char spub[41], ssec[41], gpub[41], gsec[41], bpub[41], bsec[41];
    HCL_CHECK(zmq_curve_keypair(spub, ssec) == 0 && zmq_curve_keypair(gpub, gsec) == 0 &&
              zmq_curve_keypair(bpub, bsec) == 0, "zmq_curve_keypair");
    snprintf(secf, sizeof secf, "%s/server.key", dir);
    snprintf(clif, sizeof clif, "%s/clients", dir);
    snprintf(text, sizeof text, "# server\n%s\n", ssec);
    write_text(secf, text, 0644);
    snprintf(text, sizeof text, "# authorised clients\n\n   %s   # alice\n", gpub);
    write_text(clif, text, 0644);
    hcl_control *c;
    int rc = control_open(&c, "tcp://127.0.0.1:*", dir, secf, clif, err);
    CHECK(rc != 0 && strstr(err, "chmod 600"), "a world-readable secret key: %s", rc ? err : "opened");
    if (!rc) control_close(c);
    chmod(secf, 0600);
    write_text(clif, "not-a-key\n", 0644);
    rc = control_open(&c, "tcp://127.0.0.1:*", dir, secf, clif, err);
    CHECK(rc != 0 && strstr(err, "clients:1"), "a bad clients file: %s", rc ? err : "opened");
    if (!rc) control_close(c);
    write_text(clif, text, 0644);
    rc = control_open(&c, "tcp://0.0.0.0:*", dir, secf, clif, err);
    CHECK(rc == 0, "tcp://0.0.0.0:* with CURVE: %s", err);
    if (!rc) control_close(c);

    rc = control_open(&c, "tcp://127.0.0.1:*", dir, secf, clif, err);
    CHECK(rc == 0, "CURVE control_open: %s", err);
    if (rc) return;
    char path[600], line[256], keyline[256] = "";
    snprintf(path, sizeof path, "%s/control.endpoint", dir);
    FILE *f = fopen(path, "r");
    if (f) {
        if (fgets(line, sizeof line, f) && fgets(keyline, sizeof keyline, f)) keyline[strcspn(keyline, "\n")] = 0;
        fclose(f);
    }
    snprintf(text, sizeof text, "curve-server-key %s", spub);
    CHECK(!strcmp(keyline, text), "control.endpoint key line '%s'", keyline);

    hcl_status st;
    fake_status(&st);
    void *ctx = zmq_ctx_new();
    void *good = client_socket(ctx, ZMQ_DEALER, control_endpoint(c), spub, gsec);
    void *badc = client_socket(ctx, ZMQ_DEALER, control_endpoint(c), spub, bsec);
    void *plain = client_socket(ctx, ZMQ_DEALER, control_endpoint(c), NULL, NULL);
    Hcl__ControlReply *r = call(c, &st, good, RQ_STATUS, 1, NULL, NULL);
    CHECK(r && r->ok, "CURVE: the listed client is answered");
    if (r) hcl__control_reply__free_unpacked(r, NULL);
    send_request(badc, RQ_STOP, 2, NULL, NULL, 0);
    send_request(plain, RQ_STOP, 3, NULL, NULL, 0);
    r = await_reply(c, &st, badc, 700);
    CHECK(!r, "CURVE: an unknown key got a reply");
    if (r) hcl__control_reply__free_unpacked(r, NULL);
    r = await_reply(c, &st, plain, 300);
    CHECK(!r, "CURVE: a client without CURVE got a reply");
    if (r) hcl__control_reply__free_unpacked(r, NULL);
    ctl_request rq;
    CHECK(!control_next(c, &rq), "CURVE: a refused client's stop was queued");
    for (int i = 0; i < 3; i++) {
        r = call(c, &st, good, RQ_STATUS, 10 + i, NULL, NULL);
        CHECK(r && r->ok && r->id == 10 + (uint64_t)i, "CURVE: the listed client still answered");
        if (r) hcl__control_reply__free_unpacked(r, NULL);
    }
    /* watch with CURVE: the listed key gets events, the unknown key none */
    r = call(c, &st, good, RQ_WATCH, 20, NULL, NULL);
    if (r && r->ok) {
        void *sg = client_socket(ctx, ZMQ_SUB, r->watch->endpoint, spub, gsec);
        void *sb = client_socket(ctx, ZMQ_SUB, r->watch->endpoint, spub, bsec);
        zmq_setsockopt(sg, ZMQ_SUBSCRIBE, "", 0);
        zmq_setsockopt(sb, ZMQ_SUBSCRIBE, "", 0);
        int got_good = 0, got_bad = 0;
        for (int i = 0; i < 150; i++) {
            control_service(c, &st, 2);
            control_publish(c, &st);
            uint8_t eb[512];
            while (zmq_recv(sg, eb, sizeof eb, ZMQ_DONTWAIT) > 0) got_good++;
            while (zmq_recv(sb, eb, sizeof eb, ZMQ_DONTWAIT) > 0) got_bad++;
        }
        CHECK(got_good > 0 && got_bad == 0, "CURVE watch: %d events to the listed key, %d to the unknown",
              got_good, got_bad);
        zmq_close(sg);
        zmq_close(sb);
    } else {
        CHECK(0, "CURVE watch request");
    }
    if (r) hcl__control_reply__free_unpacked(r, NULL);
    zmq_close(good);
    zmq_close(badc);
    zmq_close(plain);
    zmq_ctx_term(ctx);
    control_close(c);
}

/* ---- telemetry ----------------------------------------------------------------------------- */

static void tele_send(hcl_telemetry *t, int64_t step, double compute) {
    hcl_telemetry_msg m = {step, compute, 0.002, 0.003, 0.004, 0.0005, 123456789, telemetry_rss_bytes()};
    telemetry_send(t, &m);
}

static void test_telemetry(void) {
    char dir[512], err[HCL_ERR_MAX], ep[CONTROL_ENDPOINT_MAX], spub[41], csec[41];
    make_dir(dir, sizeof dir, "telemetry");
    hcl_control *c;
    if (control_open(&c, NULL, dir, NULL, NULL, err) != 0) {
        CHECK(0, "control_open: %s", err);
        return;
    }
    int rc = control_telemetry_open(c, 3, "127.0.0.1", ep, spub, csec, err);
    CHECK(rc == 0 && !strncmp(ep, "tcp://127.0.0.1:", 16) && strlen(spub) == 40 && strlen(csec) == 40,
          "control_telemetry_open: %s", rc ? err : ep);
    if (rc) { control_close(c); return; }
    CHECK(control_telemetry_open(c, 3, "127.0.0.1", ep, spub, csec, err) != 0, "telemetry opened twice");
    CHECK(control_nworkers(c) == 3 && control_worker(c, 3) == NULL && control_worker(c, -1) == NULL &&
          control_worker(c, 0)->step == -1, "worker table before telemetry");
    CHECK(telemetry_rss_bytes() > 1 << 20, "rss %llu", (unsigned long long)telemetry_rss_bytes());
    hcl_telemetry *t[3];
    for (int i = 0; i < 3; i++) {
        rc = telemetry_open(&t[i], ep, spub, csec, i, err);
        CHECK(rc == 0, "telemetry_open %d: %s", i, err);
        if (rc) { control_close(c); return; }
    }
    hcl_telemetry *tb;
    CHECK(telemetry_open(&tb, ep, "short", csec, 0, err) != 0 && !tb, "a bad server key accepted");
    /* workers 0 and 1 at 10 ms of compute, worker 2 at 30 ms: a straggler */
    double end = hcl_now() + 5;
    int64_t step = 0;
    while (hcl_now() < end) {
        step++;
        for (int i = 0; i < 3; i++) tele_send(t[i], step, i == 2 ? 0.030 : 0.010);
        control_service(c, NULL, 2);
        int ok = 1;
        for (int i = 0; i < 3; i++) ok &= control_worker(c, i)->messages >= CONTROL_STRAGGLER_WINDOW;
        if (ok) break;
    }
    for (int k = 0; k < 20; k++) control_service(c, NULL, 1);
    for (int i = 0; i < 3; i++) {
        const hcl_worker_stat *w = control_worker(c, i);
        CHECK(w->messages >= CONTROL_STRAGGLER_WINDOW && w->step > 0 && w->step <= step &&
              w->compute_s == (i == 2 ? 0.030 : 0.010) && w->allgather_s == 0.002 &&
              w->reduce_scatter_s == 0.003 && w->allreduce_s == 0.004 && w->wait_s == 0.0005 &&
              w->bytes == 123456789 && w->rss_bytes > 1 << 20, "worker %d table: %llu messages, step %lld",
              i, (unsigned long long)w->messages, (long long)w->step);
        CHECK(w->straggler == (i == 2), "worker %d straggler %d (median %.4f)", i, w->straggler,
              w->compute_median_s);
    }
    /* the status reply carries the table */
    void *ctx = zmq_ctx_new();
    void *cli = client_socket(ctx, ZMQ_DEALER, control_endpoint(c), NULL, NULL);
    hcl_status st;
    fake_status(&st);
    Hcl__ControlReply *r = call(c, &st, cli, RQ_STATUS, 1, NULL, NULL);
    CHECK(r && r->ok && r->status->nworkers == 3 && r->status->n_workers == 3, "status workers");
    if (r && r->status->n_workers == 3) {
        Hcl__WorkerStat *w = r->status->workers[2];
        CHECK(w->rank == 2 && w->straggler && w->compute_s == 0.030 && w->bytes == 123456789 &&
              w->last_seen_s >= 0 && w->last_seen_s < 5 && !r->status->workers[0]->straggler,
              "status worker 2: rank %d straggler %d", w->rank, w->straggler);
    }
    if (r) hcl__control_reply__free_unpacked(r, NULL);

    /* silence: worker 1 stops, 0 and 2 go on */
    CHECK(control_silent_worker(c, 0.3) == -1, "a silent worker while all talk");
    end = hcl_now() + 0.6;
    while (hcl_now() < end) {
        step++;
        tele_send(t[0], step, 0.010);
        tele_send(t[2], step, 0.010);
        control_service(c, NULL, 5);
    }
    CHECK(control_silent_worker(c, 0.3) == 1, "silent worker %d, want 1", control_silent_worker(c, 0.3));
    CHECK(control_silent_worker(c, 60) == -1, "a silent worker with a 60 s timeout");

    /* a stranger: the right server key but its own client key, or no CURVE: nothing arrives */
    char xpub[41], xsec[41];
    zmq_curve_keypair(xpub, xsec);
    hcl_telemetry *x, *y, *z;
    CHECK(telemetry_open(&x, ep, spub, xsec, 1, err) == 0, "telemetry_open stranger: %s", err);
    CHECK(telemetry_open(&y, ep, NULL, NULL, 1, err) == 0, "telemetry_open plain: %s", err);
    CHECK(telemetry_open(&z, ep, spub, csec, 99, err) == 0, "telemetry_open rank 99: %s", err);
    uint64_t before = control_worker(c, 1)->messages;
    end = hcl_now() + 0.5;
    while (hcl_now() < end) {
        tele_send(x, 1, 0.5);
        tele_send(y, 1, 0.5);
        tele_send(z, 1, 0.5);
        control_service(c, NULL, 5);
    }
    CHECK(control_worker(c, 1)->messages == before, "a stranger's telemetry was taken (%llu -> %llu)",
          (unsigned long long)before, (unsigned long long)control_worker(c, 1)->messages);
    CHECK(control_silent_worker(c, 0.3) == 1, "the stranger counted as worker 1's heartbeat");
    telemetry_close(x);
    telemetry_close(y);
    telemetry_close(z);

    /* the coordinator goes away: sends never block */
    zmq_close(cli);
    zmq_ctx_term(ctx);
    control_close(c);
    double worst = 0, t0 = hcl_now();
    int dropped = 0;
    for (int i = 0; i < 20000; i++) {
        double a = hcl_now();
        hcl_telemetry_msg m = {i, 0.01, 0, 0, 0, 0, 0, 0};
        dropped += telemetry_send(t[0], &m);
        double d = hcl_now() - a;
        if (d > worst) worst = d;
    }
    double total = hcl_now() - t0;
    CHECK(worst < 0.005 && total < 1.0, "20000 sends with the coordinator gone: worst %.3f ms, total %.3f s",
          worst * 1e3, total);
    CHECK(dropped > 19000, "%d of 20000 sends dropped with the coordinator gone", dropped);
    printf("  telemetry with the coordinator gone: 20000 sends in %.1f ms (worst %.1f us), %d dropped\n",
           total * 1e3, worst * 1e6, dropped);
    hcl_telemetry *never;
    CHECK(telemetry_open(&never, "tcp://127.0.0.1:1", spub, csec, 0, err) == 0, "telemetry_open: %s", err);
    t0 = hcl_now();
    for (int i = 0; i < 1000; i++) tele_send(never, i, 0.01);
    CHECK(hcl_now() - t0 < 0.5, "1000 sends to nobody took %.3f s", hcl_now() - t0);
    t0 = hcl_now();
    telemetry_close(never);
    for (int i = 0; i < 3; i++) telemetry_close(t[i]);
    CHECK(hcl_now() - t0 < 0.5, "telemetry_close took %.3f s", hcl_now() - t0);
}

/* ---- a forked fake training loop ----------------------------------------------------------- */

static volatile sig_atomic_t serve_quit;
static void serve_signal(int sig) { (void)sig; serve_quit = 1; }

/* The loop the lead's coordinator will be: a step every step_ms, control_service as its sleep,
 * commands popped and acted on. exit_on_stop 0 acks stop and goes on (the fuzz test). */
static int serve_loop(const char *dir, const char *endpoint, const char *secret, const char *clients,
                      int nworkers, int step_ms, int exit_on_stop) {
    signal(SIGTERM, serve_signal);
    signal(SIGINT, serve_signal);
    log_init("serve", 0, HCL_LOG_WARN);
    char err[HCL_ERR_MAX];
    hcl_control *c;
    if (control_open(&c, endpoint, dir, secret, clients, err) != 0) {
        fprintf(stderr, "test_control --serve: %s\n", err);
        return 1;
    }
    if (nworkers > 0) {
        char ep[CONTROL_ENDPOINT_MAX], spub[41], csec[41];
        if (control_telemetry_open(c, nworkers, "127.0.0.1", ep, spub, csec, err) != 0) {
            fprintf(stderr, "test_control --serve: %s\n", err);
            return 1;
        }
    }
    hcl_status st;
    control_status_init(&st);
    st.state = HCL_RUN_STATE_RUNNING;
    st.total_steps = 1000000;
    st.lr = 1e-3;
    st.loss = 4.0;
    st.logit_scale = 14.3;
    st.log_every = 10;
    double t0 = hcl_now(), next = t0;
    int stop = 0;
    while (!serve_quit && !stop) {
        double now = hcl_now();
        if (now >= next) {
            next = now + step_ms / 1e3;
            if (st.state == HCL_RUN_STATE_RUNNING) {
                st.step++;
                st.epoch = st.step / 1000;
                st.loss = 4.0 / (1 + 0.01 * (double)st.step);
                st.samples_per_s = 512e3 / step_ms;
                st.elapsed_s = now - t0;
                st.eta_s = (double)(st.total_steps - st.step) * step_ms / 1e3;
                control_publish(c, &st);
            }
        }
        int wait = (int)((next - hcl_now()) * 1e3);
        control_service(c, &st, wait < 0 ? 0 : wait);
        ctl_request rq;
        while (control_next(c, &rq)) {
            char msg[2100] = "";
            switch (rq.cmd) {
            case CTL_CMD_PAUSE:
                if (st.state == HCL_RUN_STATE_PAUSED) { control_reply_error(c, &rq, CTL_ERROR_REFUSED, "already paused"); continue; }
                st.state = HCL_RUN_STATE_PAUSED;
                break;
            case CTL_CMD_RESUME:
                if (st.state != HCL_RUN_STATE_PAUSED) { control_reply_error(c, &rq, CTL_ERROR_REFUSED, "not paused"); continue; }
                st.state = HCL_RUN_STATE_RUNNING;
                break;
            case CTL_CMD_CHECKPOINT:
                snprintf(st.last_checkpoint_path, sizeof st.last_checkpoint_path,
                         "%s/checkpoints/step-%08lld", dir, (long long)st.step);
                st.last_checkpoint_step = st.step;
                snprintf(msg, sizeof msg, "%s", st.last_checkpoint_path);
                break;
            case CTL_CMD_STOP:
                if (exit_on_stop) { stop = 1; st.state = HCL_RUN_STATE_STOPPING; }
                break;
            case CTL_CMD_SET:
                if (rq.key == CTL_KEY_LR_SCALE) { st.lr = st.lr / st.lr_scale * rq.value; st.lr_scale = rq.value; }
                if (rq.key == CTL_KEY_LOG_EVERY) st.log_every = (int64_t)rq.value;
                if (rq.key == CTL_KEY_CHECKPOINT_INTERVAL) st.checkpoint_interval_s = rq.value;
                if (rq.key == CTL_KEY_CHECKPOINT_EVERY) st.checkpoint_every = (int64_t)rq.value;
                snprintf(msg, sizeof msg, "%s", rq.text);
                break;
            }
            control_reply_ok(c, &rq, st.step + (rq.cmd == CTL_CMD_PAUSE || rq.cmd == CTL_CMD_SET), msg);
        }
    }
    /* a last look so the stop's reply leaves before the socket closes */
    for (int i = 0; i < 5; i++) control_service(c, &st, 10);
    control_close(c);
    return 0;
}

static pid_t fork_server(const char *dir, const char *endpoint, int nworkers, int step_ms) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    HCL_CHECK(pid >= 0, "fork");
    if (pid == 0) _exit(serve_loop(dir, endpoint, NULL, NULL, nworkers, step_ms, 0));
    char path[600];
    snprintf(path, sizeof path, "%s/control.endpoint", dir);
    for (int i = 0; i < 500 && !exists(path); i++) usleep(10000);
    return pid;
}

static int stop_server(pid_t pid) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return -1;   /* it died on its own */
    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static double status_rtt(void *cli, uint64_t id) {
    uint8_t buf[64];
    size_t n = pack_request(buf, RQ_STATUS, id, 1, NULL, NULL, 0);
    double t0 = hcl_now();
    zmq_send(cli, buf, n, 0);
    for (;;) {
        zmq_pollitem_t it = {cli, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 1000) <= 0) return -1;
        zmq_msg_t m;
        zmq_msg_init(&m);
        zmq_msg_recv(&m, cli, 0);
        Hcl__ControlReply *r = hcl__control_reply__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
        zmq_msg_close(&m);
        int mine = r && r->id == id && r->ok && r->body_case == HCL__CONTROL_REPLY__BODY_STATUS;
        if (r) hcl__control_reply__free_unpacked(r, NULL);
        if (mine) return hcl_now() - t0;
    }
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void test_fuzz(void) {
    char dir[512], ep[600], path[600];
    make_dir(dir, sizeof dir, "fuzz");
    pid_t pid = fork_server(dir, NULL, 0, 10);
    snprintf(path, sizeof path, "%s/control.endpoint", dir);
    read_first_line(path, ep, sizeof ep);
    CHECK(ep[0], "fuzz: the server wrote no control.endpoint");
    void *ctx = zmq_ctx_new();
    void *fz = client_socket(ctx, ZMQ_DEALER, ep, NULL, NULL);
    uint8_t buf[2048], valid[512];
    const char *keys[] = {"lr", "lr_scale", "log_every", "checkpoint_interval", "checkpoint_every", "x"};
    int sent = 0, replies = 0;
    for (int i = 0; i < 10000; i++) {
        size_t n;
        int kind = (int)(rnd() % 4);
        if (kind == 0) {                    /* random bytes */
            n = rnd() % 300;
            for (size_t k = 0; k < n; k++) buf[k] = (uint8_t)rnd();
        } else {                            /* a valid request, truncated or with flipped bits */
            char val[32];
            snprintf(val, sizeof val, "%g", (double)(rnd() % 2000) / 7.0 - 50);
            size_t vn = pack_request(valid, (int)(10 + rnd() % 8), rnd(), (uint32_t)(rnd() % 8 ? 1 : rnd() % 4),
                                     keys[rnd() % 6], val, (int)(rnd() % 2));
            memcpy(buf, valid, vn);
            n = vn;
            if (kind == 1) n = vn ? rnd() % vn : 0;
            else if (kind == 2)
                for (int k = 0; k < 3 && vn; k++) buf[rnd() % vn] ^= (uint8_t)(1u << (rnd() % 8));
        }
        if (rnd() % 50 == 0) zmq_send(fz, buf, n > 5 ? 5 : n, ZMQ_SNDMORE | ZMQ_DONTWAIT);  /* extra frames */
        if (zmq_send(fz, buf, n, ZMQ_DONTWAIT) >= 0) sent++;
        uint8_t rb[4096];
        while (zmq_recv(fz, rb, sizeof rb, ZMQ_DONTWAIT) >= 0) {
            int more = 0;
            size_t ml = sizeof more;
            zmq_getsockopt(fz, ZMQ_RCVMORE, &more, &ml);
            replies += !more;   /* a reply to an [""][payload] message carries the delimiter */
        }
    }
    /* status from a fresh client right after the flood */
    void *cli = client_socket(ctx, ZMQ_DEALER, ep, NULL, NULL);
    double rtt = status_rtt(cli, 1);
    CHECK(rtt >= 0 && rtt < 0.1, "status right after 10,000 fuzz messages: %.1f ms", rtt * 1e3);
    printf("  fuzz: %d messages sent; status right after: %.2f ms\n", sent, rtt * 1e3);
    /* and once the flood is digested */
    double quiet = hcl_now();
    while (hcl_now() - quiet < 0.3) {
        uint8_t rb[4096];
        zmq_pollitem_t it = {fz, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 50) > 0 && zmq_recv(fz, rb, sizeof rb, 0) >= 0) {
            int more = 0;
            size_t ml = sizeof more;
            zmq_getsockopt(fz, ZMQ_RCVMORE, &more, &ml);
            replies += !more;
            quiet = hcl_now();
        }
    }
    double worst = 0;
    for (int i = 0; i < 20; i++) {
        double d = status_rtt(cli, 100 + (uint64_t)i);
        if (d < 0 || d > worst) worst = d < 0 ? 1e9 : d;
    }
    CHECK(worst < 0.1, "status after the fuzz: worst of 20 %.1f ms", worst * 1e3);
    printf("  fuzz: %d replies to the %d messages; then 20 status requests, worst %.2f ms\n", replies,
           sent, worst * 1e3);
    /* most get an error reply; replies past the per-client send queue (1000) are dropped, never
     * waited for, when a client sends faster than it reads */
    CHECK(replies > 2000, "fuzz: only %d replies to %d messages", replies, sent);
    zmq_close(fz);
    zmq_close(cli);
    zmq_ctx_term(ctx);
    int code = stop_server(pid);
    CHECK(code == 0, "fuzz: the server died or exited with %d", code);
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void measure_latency(const char *name, const char *endpoint) {
    char dir[512], ep[600], path[600];
    make_dir(dir, sizeof dir, name);
    pid_t pid = fork_server(dir, endpoint, 16, 10);
    snprintf(path, sizeof path, "%s/control.endpoint", dir);
    read_first_line(path, ep, sizeof ep);
    void *ctx = zmq_ctx_new();
    void *cli = client_socket(ctx, ZMQ_DEALER, ep, NULL, NULL);
    enum { N = 2000 };
    static double d[N];
    int ok = 1;
    status_rtt(cli, 1);   /* connect */
    for (int i = 0; i < N && ok; i++) {
        d[i] = status_rtt(cli, 10 + (uint64_t)i);
        ok = d[i] >= 0;
    }
    CHECK(ok, "%s: a status request went unanswered", name);
    if (ok) {
        qsort(d, N, sizeof(double), cmp_d);
        printf("  status latency %-4s (%s, 16-worker table, server stepping every 10 ms): median %.0f us, "
               "p99 %.0f us, max %.0f us over %d\n", name, ep, d[N / 2] * 1e6, d[N * 99 / 100] * 1e6,
               d[N - 1] * 1e6, N);
        CHECK(d[N / 2] < 0.005 && d[N - 1] < 0.1, "%s: status latency median %.2f ms max %.2f ms", name,
              d[N / 2] * 1e3, d[N - 1] * 1e3);
    }
    zmq_close(cli);
    zmq_ctx_term(ctx);
    CHECK(stop_server(pid) == 0, "%s: server exit", name);
}

/* ---- --serve for tests/test_hclctl.sh ------------------------------------------------------ */

/* test_control --serve DIR [--endpoint E] [--secret F --clients F] [--step-ms N]: runs until
 * stop (or SIGTERM). */
static int serve_main(int argc, char **argv) {
    const char *dir = argv[2], *ep = NULL, *sec = NULL, *cli = NULL;
    int step_ms = 20;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--endpoint")) ep = argv[i + 1];
        else if (!strcmp(argv[i], "--secret")) sec = argv[i + 1];
        else if (!strcmp(argv[i], "--clients")) cli = argv[i + 1];
        else if (!strcmp(argv[i], "--step-ms")) step_ms = atoi(argv[i + 1]);
        else { fprintf(stderr, "test_control --serve: unknown flag %s\n", argv[i]); return 2; }
    }
    return serve_loop(dir, ep, sec, cli, 2, step_ms > 0 ? step_ms : 20, 1);
}

static void rm_rf(const char *path) {
    struct stat s;
    if (lstat(path, &s) != 0) return;
    if (S_ISDIR(s.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char sub[2048];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            rm_rf(sub);
        }
        if (d) closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* ---- --fuzz for tests/test_control_job.sh ---------------------------------------------------- */

static int fuzz_main(const char *ep, int n) {
    void *ctx = zmq_ctx_new();
    void *fz = client_socket(ctx, ZMQ_DEALER, ep, NULL, NULL);
    uint8_t buf[2048], valid[512];
    int sent = 0, replies = 0;
    for (int i = 0; i < n; i++) {
        size_t len;
        if (rnd() % 2) {                    /* random bytes */
            len = rnd() % 300;
            for (size_t k = 0; k < len; k++) buf[k] = (uint8_t)rnd();
        } else {                            /* a status (10) or watch (11) request cut short */
            size_t vn = pack_request(valid, (int)(10 + rnd() % 2), rnd(), 1, NULL, NULL, (int)(rnd() % 2));
            len = vn ? rnd() % vn : 0;
            memcpy(buf, valid, len);
        }
        if (rnd() % 50 == 0) zmq_send(fz, buf, len > 5 ? 5 : len, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        if (zmq_send(fz, buf, len, ZMQ_DONTWAIT) >= 0) sent++;
        uint8_t rb[4096];
        while (zmq_recv(fz, rb, sizeof rb, ZMQ_DONTWAIT) >= 0) replies++;
    }
    void *cli = client_socket(ctx, ZMQ_DEALER, ep, NULL, NULL);
    double rtt = status_rtt(cli, 1);
    printf("fuzz: %d messages sent, %d reply frames so far; status right after: %.2f ms\n", sent, replies, rtt * 1e3);
    zmq_close(fz);
    zmq_close(cli);
    zmq_ctx_term(ctx);
    return rtt >= 0 && rtt < 0.5 ? 0 : 1;
}

static int latency_main(const char *ep, int n) {
    void *ctx = zmq_ctx_new();
    void *cli = client_socket(ctx, ZMQ_DEALER, ep, NULL, NULL);
    double *t = hcl_calloc((size_t)n, sizeof(double));
    for (int i = 0; i < n; i++) {
        t[i] = status_rtt(cli, 1000 + (uint64_t)i);
        if (t[i] < 0) t[i] = 1e9;
        usleep(20000);
    }
    qsort(t, (size_t)n, sizeof(double), cmp_d);
    printf("status round trip over %d requests: median %.2f ms, max %.2f ms\n", n, t[n / 2] * 1e3, t[n - 1] * 1e3);
    int ok = t[n - 1] < 0.1;
    free(t);
    zmq_close(cli);
    zmq_ctx_term(ctx);
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "--serve")) return serve_main(argc, argv);
    if (argc == 4 && !strcmp(argv[1], "--latency")) return latency_main(argv[2], atoi(argv[3]));
    if (argc == 4 && !strcmp(argv[1], "--fuzz")) return fuzz_main(argv[2], atoi(argv[3]));
    log_init("test", 0, HCL_LOG_WARN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    snprintf(tmp_root, sizeof tmp_root, "/tmp/test_control.XXXXXX");
    HCL_CHECK(mkdtemp(tmp_root), "mkdtemp: %s", strerror(errno));
    /* forked servers first, before this process has any ZeroMQ context */
    test_fuzz();
    measure_latency("ipc", NULL);
    measure_latency("tcp", "tcp://127.0.0.1:*");
    test_ipc_and_commands();
    test_long_path();
    test_tcp_policy();
    test_curve();
    test_telemetry();
    rm_rf(tmp_root);
    CHECK_DONE();
}
