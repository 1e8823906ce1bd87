/* test_control_requests: the request server over the default ipc endpoint (RUN_DIR/control.sock):
 * socket modes and control.endpoint; the status content; each command queued, popped and acked
 * with its step; a refusal; set checking; unknown version / type, garbage and bad framing get
 * error replies; a REQ client; the queue limit; watch events; an oversize message dropped; a
 * second job on the same socket refused; files removed at close; a stale socket replaced; the
 * /tmp/hcl-UID fallback (a directory in the way, a run directory too long for a socket path). */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

#include "check.h"
#include "test_control.h"
#include "util.h"

/* check.h counts per file: this file's counts, for main */
void requests_tally(int *checks, int *failures) {
    *checks += check_count;
    *failures += check_failures;
}

/* One control plane on a run directory, one DEALER client, the status the loop would fill. */
typedef struct {
    hcl_control *c;
    void *ctx, *cli;
    hcl_status st;
    char dir[512], real[PATH_MAX], want[PATH_MAX + 64];   /* want: the default endpoint */
} fixture;

/* A reply that must be an error with this code (and id, when id != 0); prints its message
 * when say is set. */
static void expect_error(Hcl__ControlReply *r, uint64_t id, int code, const char *what, int say) {
    CHECK(r && !r->ok && (!id || r->id == id) && (int)r->error == code, "%s: want error %d, got %s %d",
          what, code, r ? "error" : "no reply", r ? (int)r->error : -1);
    if (r && say) printf("  %s: %s\n", what, r->message);
    kit_free_reply(r);
}

static int open_default(fixture *fx) {
    char err[HCL_ERR_MAX], path[PATH_MAX + 64], line[1024];
    kit_make_dir(fx->dir, sizeof fx->dir, "run");
    HCL_CHECK(realpath(fx->dir, fx->real), "realpath");
    int rc = control_open(&fx->c, NULL, fx->dir, NULL, NULL, 0, err);
    CHECK(rc == 0, "control_open(default ipc): %s", err);
    if (rc) return -1;
    snprintf(fx->want, sizeof fx->want, "ipc://%s/control.sock", fx->real);
    CHECK(strcmp(control_endpoint(fx->c), fx->want) == 0, "endpoint %s, want %s", control_endpoint(fx->c),
          fx->want);
    snprintf(path, sizeof path, "%s/control.sock", fx->real);
    CHECK(kit_file_mode(path) == 0600, "control.sock mode %04o, want 0600", kit_file_mode(path));
    snprintf(path, sizeof path, "%s/watch.sock", fx->real);
    CHECK(kit_file_mode(path) == 0600, "watch.sock mode %04o, want 0600", kit_file_mode(path));
    snprintf(path, sizeof path, "%s/control.endpoint", fx->dir);
    kit_read_first_line(path, line, sizeof line);
    CHECK(strcmp(line, control_endpoint(fx->c)) == 0, "control.endpoint says '%s', want '%s'", line,
          control_endpoint(fx->c));
    fx->ctx = zmq_ctx_new();
    fx->cli = kit_client_socket(fx->ctx, ZMQ_DEALER, control_endpoint(fx->c), NULL, NULL);
    kit_fake_status(&fx->st);
    return 0;
}

/* status: everything the loop filled; no status yet: busy */
static void check_status(fixture *fx) {
    Hcl__ControlReply *r = kit_call(fx->c, &fx->st, fx->cli, RQ_STATUS, 77, NULL, NULL);
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
        CHECK(!strcmp(b->run_dir, fx->real) && b->nworkers == 0 && b->n_workers == 0, "status run_dir '%s'",
              b->run_dir);
    }
    kit_free_reply(r);
    r = kit_call(fx->c, NULL, fx->cli, RQ_STATUS, 78, NULL, NULL);
    expect_error(r, 78, CTL_ERROR_BUSY, "status without a status: busy", 0);
}

/* The STATUS reply is packed once per control_service call with the client's id put in front:
 * ids of every varint length come back exact, every client of a burst gets its own replies,
 * and a status changed between two calls is what the next reply says. */
static void check_status_burst(fixture *fx) {
    static const uint64_t ids[] = {1, 127, 128, 16383, 16384, 1ull << 35, (1ull << 63) + 5, UINT64_MAX};
    enum { NIDS = sizeof ids / sizeof ids[0], CLIENTS = 20, EACH = 50 };
    for (int i = 0; i < NIDS; i++) kit_send_request(fx->cli, RQ_STATUS, ids[i], NULL, NULL, 0);
    int same = 0;
    for (int i = 0; i < NIDS; i++) {
        Hcl__ControlReply *r = kit_await_reply(fx->c, &fx->st, fx->cli, 2000);
        same += r && r->ok && r->id == ids[i] && r->version == 1 &&
                r->body_case == HCL__CONTROL_REPLY__BODY_STATUS && r->status->step == 1200 &&
                r->status->loss == 0.285 && !strcmp(r->status->run_dir, fx->real);
        kit_free_reply(r);
    }
    CHECK(same == NIDS, "status ids of every varint length: %d of %d replies exact", same, NIDS);
    fx->st.step = 1201;
    Hcl__ControlReply *r = kit_call(fx->c, &fx->st, fx->cli, RQ_STATUS, 79, NULL, NULL);
    CHECK(r && r->ok && r->id == 79 && r->status && r->status->step == 1201,
          "status after the loop's next step: step %lld, want 1201", r && r->status ? (long long)r->status->step : -1LL);
    kit_free_reply(r);
    fx->st.step = 1200;
    void *cl[CLIENTS];
    for (int k = 0; k < CLIENTS; k++) cl[k] = kit_client_socket(fx->ctx, ZMQ_DEALER, control_endpoint(fx->c), NULL, NULL);
    for (int i = 0; i < EACH; i++)
        for (int k = 0; k < CLIENTS; k++) kit_send_request(cl[k], RQ_STATUS, 1000 * (uint64_t)k + i, NULL, NULL, 0);
    int right = 0, wrong = 0;
    for (int k = 0; k < CLIENTS && !wrong; k++)
        for (int i = 0; i < EACH && !wrong; i++) {   /* one client's replies come in its order */
            r = kit_await_reply(fx->c, &fx->st, cl[k], 2000);
            int ok = r && r->ok && r->id == 1000 * (uint64_t)k + i && r->status && r->status->step == 1200;
            right += ok;
            wrong = !ok;   /* the first wrong one is enough: no 2 s wait for each of the rest */
            kit_free_reply(r);
        }
    CHECK(right == CLIENTS * EACH, "a burst of %d clients x %d status: %d replies right", CLIENTS, EACH, right);
    for (int k = 0; k < CLIENTS; k++) zmq_close(cl[k]);
}

/* each command: queued, popped with its fields, acked with the step */
static void check_commands(fixture *fx) {
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
        kit_send_request(fx->cli, cmds[i].type, 100 + i, cmds[i].key, cmds[i].value, cmds[i].no_ckpt);
        ctl_request rq;
        int got = kit_await_request(fx->c, &fx->st, &rq);
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
        CHECK(!control_next(fx->c, &extra), "one request queued once");
        control_reply_ok(fx->c, &rq, 1201 + (int64_t)i, i == 2 ? "written" : NULL);
        Hcl__ControlReply *r = kit_await_reply(fx->c, &fx->st, fx->cli, 2000);
        CHECK(r && r->ok && r->id == 100 + i && r->body_case == HCL__CONTROL_REPLY__BODY_ACK &&
              r->ack->step == 1201 + (int64_t)i, "command %zu: ack with step %lld", i, 1201 + (long long)i);
        if (r && i == 2) CHECK(!strcmp(r->message, "written"), "ack message '%s'", r->message);
        kit_free_reply(r);
    }
}

/* the loop refuses a command */
static void check_refusal(fixture *fx) {
    kit_send_request(fx->cli, RQ_RESUME, 300, NULL, NULL, 0);
    ctl_request rq;
    if (!kit_await_request(fx->c, &fx->st, &rq)) {
        CHECK(0, "resume not queued");
        return;
    }
    CHECK(!strstr(rq.text, "?") && !strcmp(rq.text, "resume"), "request text '%s'", rq.text);
    control_reply_error(fx->c, &rq, CTL_ERROR_REFUSED, "resume: not paused");
    Hcl__ControlReply *r = kit_await_reply(fx->c, &fx->st, fx->cli, 2000);
    CHECK(r && !r->ok && r->id == 300 && (int)r->error == CTL_ERROR_REFUSED &&
          !strcmp(r->message, "resume: not paused"), "refused reply");
    kit_free_reply(r);
}

/* set: bad keys and values are answered by the control plane, never queued */
static void check_bad_sets(fixture *fx) {
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
        Hcl__ControlReply *r = kit_call(fx->c, &fx->st, fx->cli, RQ_SET, 400 + i, bad[i].key, bad[i].value);
        CHECK(r && !r->ok && r->id == 400 + i && (int)r->error == bad[i].code && r->message[0],
              "set %s=%s: want error %d, got %d '%s'", bad[i].key, bad[i].value, bad[i].code,
              r ? (int)r->error : -1, r ? r->message : "no reply");
        kit_free_reply(r);
    }
    ctl_request rq;
    CHECK(!control_next(fx->c, &rq), "bad sets were queued");
    hcl_status st0 = fx->st;
    st0.lr = 0;
    Hcl__ControlReply *r = kit_call(fx->c, &st0, fx->cli, RQ_SET, 450, "lr", "1e-3");
    expect_error(r, 450, CTL_ERROR_REFUSED, "schedule at 0", 1);
}

/* Send one frame (more: frames before it) and wait for the reply. */
static Hcl__ControlReply *send_raw(fixture *fx, const void *data, size_t n) {
    zmq_send(fx->cli, data, n, 0);
    return kit_await_reply(fx->c, &fx->st, fx->cli, 2000);
}

/* versions, types, garbage, framing */
static void check_bad_requests(fixture *fx) {
    uint8_t buf[512];
    size_t n = kit_pack_request(buf, RQ_STATUS, 500, 7, NULL, NULL, 0);
    expect_error(send_raw(fx, buf, n), 500, CTL_ERROR_BAD_VERSION, "version 7", 1);
    n = kit_pack_request(buf, RQ_PAUSE, 501, 0, NULL, NULL, 0);
    expect_error(send_raw(fx, buf, n), 501, CTL_ERROR_BAD_VERSION, "version 0", 0);
    ctl_request rq;
    CHECK(!control_next(fx->c, &rq), "a request of version 0 was queued");
    /* id 502, version 1, field 17 (an empty message, a type from the future) */
    const uint8_t future[] = {0x08, 0xf6, 0x03, 0x10, 0x01, 0x8a, 0x01, 0x00};
    expect_error(send_raw(fx, future, sizeof future), 502, CTL_ERROR_UNKNOWN_TYPE, "unknown type", 1);
    n = kit_pack_request(buf, 0, 503, 1, NULL, NULL, 0);
    expect_error(send_raw(fx, buf, n), 503, CTL_ERROR_UNKNOWN_TYPE, "no type", 0);
    const char garbage[] = "\xff\xff\xff\xff garbage \x01";
    Hcl__ControlReply *r = send_raw(fx, garbage, sizeof garbage);
    CHECK(r && r->id == 0, "garbage: reply id %lld, want 0", r ? (long long)r->id : -1LL);
    expect_error(r, 0, CTL_ERROR_BAD_REQUEST, "garbage", 1);
    /* an empty frame decodes as a request with no version */
    expect_error(send_raw(fx, "", 0), 0, CTL_ERROR_BAD_VERSION, "empty message", 0);
    n = kit_pack_request(buf, RQ_STATUS, 504, 1, NULL, NULL, 0);
    zmq_send(fx->cli, "a", 1, ZMQ_SNDMORE);
    zmq_send(fx->cli, "b", 1, ZMQ_SNDMORE);
    expect_error(send_raw(fx, buf, n), 0, CTL_ERROR_BAD_REQUEST, "three frames", 1);
}

/* a REQ client (empty delimiter); the queue limit: commands past CONTROL_QUEUE_MAX answered busy */
static void check_req_and_queue(fixture *fx) {
    void *req = kit_client_socket(fx->ctx, ZMQ_REQ, control_endpoint(fx->c), NULL, NULL);
    Hcl__ControlReply *r = kit_call(fx->c, &fx->st, req, RQ_STATUS, 600, NULL, NULL);
    CHECK(r && r->ok && r->id == 600 && r->body_case == HCL__CONTROL_REPLY__BODY_STATUS, "REQ client status");
    kit_free_reply(r);
    zmq_close(req);

    for (int i = 0; i < CONTROL_QUEUE_MAX + 6; i++)
        kit_send_request(fx->cli, RQ_CHECKPOINT, 700 + (uint64_t)i, NULL, NULL, 0);
    int busy = 0, others = 0;
    while ((r = kit_await_reply(fx->c, &fx->st, fx->cli, 300))) {
        if (!r->ok && (int)r->error == CTL_ERROR_BUSY) busy++;
        else others++;
        kit_free_reply(r);
    }
    int queued = 0;
    ctl_request rq;
    while (control_next(fx->c, &rq)) queued++;
    CHECK(busy == 6 && others == 0 && queued == CONTROL_QUEUE_MAX, "queue limit: %d busy, %d queued, %d other",
          busy, queued, others);
}

/* watch: the PUB endpoint, then events */
static void check_watch(fixture *fx) {
    Hcl__ControlReply *r = kit_call(fx->c, &fx->st, fx->cli, RQ_WATCH, 800, NULL, NULL);
    CHECK(r && r->ok && r->body_case == HCL__CONTROL_REPLY__BODY_WATCH &&
          !strcmp(r->watch->endpoint, control_watch_endpoint(fx->c)), "watch endpoint");
    if (!r || r->body_case != HCL__CONTROL_REPLY__BODY_WATCH) {
        kit_free_reply(r);
        return;
    }
    void *sub = kit_client_socket(fx->ctx, ZMQ_SUB, r->watch->endpoint, NULL, NULL);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0);
    Hcl__StepEvent *ev = NULL;
    for (int i = 0; i < 400 && !ev; i++) {
        fx->st.step = 2000 + i;
        control_publish(fx->c, &fx->st);
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
    kit_free_reply(r);
}

/* an oversize message: ZeroMQ drops it (and the sender's connection); the server goes on. A
 * second job on the same run directory is refused; the first goes on. */
static void check_oversize_and_second_job(fixture *fx) {
    size_t big = CONTROL_MSG_MAX + 1024;
    uint8_t *huge = hcl_calloc(big, 1);
    void *bigcli = kit_client_socket(fx->ctx, ZMQ_DEALER, control_endpoint(fx->c), NULL, NULL);
    zmq_send(bigcli, huge, big, 0);
    free(huge);
    Hcl__ControlReply *r = kit_await_reply(fx->c, &fx->st, bigcli, 500);
    CHECK(!r, "an oversize message got a reply");
    kit_free_reply(r);
    ctl_request rq;
    CHECK(!control_next(fx->c, &rq), "an oversize message was queued");
    zmq_close(bigcli);
    r = kit_call(fx->c, &fx->st, fx->cli, RQ_STATUS, 900, NULL, NULL);
    CHECK(r && r->ok, "status after an oversize message");
    kit_free_reply(r);

    char err[HCL_ERR_MAX];
    hcl_control *c2;
    int rc = control_open(&c2, NULL, fx->dir, NULL, NULL, 0, err);
    CHECK(rc != 0 && strstr(err, "another process is listening"), "second job: %s", rc ? err : "opened");
    if (rc == 0) control_close(c2);
    else printf("  second job: %s\n", err);
    r = kit_call(fx->c, &fx->st, fx->cli, RQ_STATUS, 901, NULL, NULL);
    CHECK(r && r->ok, "status after a second job was refused");
    kit_free_reply(r);
}

/* close removes the files; a stale socket file (a job that crashed) is replaced; a run
 * directory that cannot hold the socket gets the private fallback */
static void check_close_and_reopen(fixture *fx) {
    char path[PATH_MAX + 64], err[HCL_ERR_MAX];
    zmq_close(fx->cli);
    zmq_ctx_term(fx->ctx);
    control_close(fx->c);
    snprintf(path, sizeof path, "%s/control.sock", fx->real);
    CHECK(!kit_exists(path), "control.sock left after close");
    snprintf(path, sizeof path, "%s/control.endpoint", fx->real);
    CHECK(!kit_exists(path), "control.endpoint left after close");

    snprintf(path, sizeof path, "%s/control.sock", fx->real);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    HCL_CHECK(strlen(path) < sizeof sa.sun_path, "%s: too long", path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "a stale socket: %s", strerror(errno));
    close(fd);
    hcl_control *c;
    int rc = control_open(&c, NULL, fx->dir, NULL, NULL, 0, err);
    CHECK(rc == 0 && !strcmp(control_endpoint(c), fx->want), "over a stale socket file: %s",
          rc ? err : control_endpoint(c));
    if (rc == 0) control_close(c);
    CHECK(mkdir(path, 0755) == 0, "mkdir %s", path);
    rc = control_open(&c, NULL, fx->dir, NULL, NULL, 0, err);
    CHECK(rc == 0 && !strncmp(control_endpoint(c), "ipc:///tmp/hcl-", 15), "control.sock a directory: %s",
          rc ? err : control_endpoint(c));
    if (rc == 0) control_close(c);
    rmdir(path);
}

void test_requests(void) {
    fixture fx;
    memset(&fx, 0, sizeof fx);
    if (open_default(&fx) != 0) return;
    check_status(&fx);
    check_status_burst(&fx);
    check_commands(&fx);
    check_refusal(&fx);
    check_bad_sets(&fx);
    check_bad_requests(&fx);
    check_req_and_queue(&fx);
    check_watch(&fx);
    check_oversize_and_second_job(&fx);
    check_close_and_reopen(&fx);
}

/* ---- a run directory too long for a unix socket path --------------------------------------- */

void test_long_path(void) {
    char dir[1024], err[HCL_ERR_MAX];
    kit_make_dir(dir, sizeof dir, "a-run-directory-with-a-rather-long-name-0123456789");
    size_t len = strlen(dir);
    snprintf(dir + len, sizeof dir - len, "/and-a-subdirectory-with-a-long-name-too-0123456789");
    HCL_CHECK(mkdir(dir, 0755) == 0, "mkdir");
    hcl_control *c;
    int rc = control_open(&c, NULL, dir, NULL, NULL, 0, err);
    CHECK(rc == 0, "control_open(long run dir): %s", err);
    if (rc) return;
    char want[64], path[1200], line[1024];
    snprintf(want, sizeof want, "ipc:///tmp/hcl-%u/", (unsigned)getuid());
    CHECK(!strncmp(control_endpoint(c), want, strlen(want)), "fallback endpoint %s, want %s...",
          control_endpoint(c), want);
    printf("  long run directory: %s\n", control_endpoint(c));
    CHECK(kit_file_mode(want + 6) == 0700, "%s mode %04o, want 0700", want + 6, kit_file_mode(want + 6));
    CHECK(kit_file_mode(control_endpoint(c) + 6) == 0600, "fallback socket mode %04o",
          kit_file_mode(control_endpoint(c) + 6));
    snprintf(path, sizeof path, "%s/control.endpoint", dir);
    kit_read_first_line(path, line, sizeof line);
    CHECK(!strcmp(line, control_endpoint(c)), "control.endpoint '%s'", line);
    void *ctx = zmq_ctx_new();
    void *cli = kit_client_socket(ctx, ZMQ_DEALER, line, NULL, NULL);
    hcl_status st;
    kit_fake_status(&st);
    Hcl__ControlReply *r = kit_call(c, &st, cli, RQ_STATUS, 1, NULL, NULL);
    CHECK(r && r->ok && r->body_case == HCL__CONTROL_REPLY__BODY_STATUS, "status over the fallback socket");
    kit_free_reply(r);
    zmq_close(cli);
    zmq_ctx_term(ctx);
    snprintf(path, sizeof path, "%s", control_endpoint(c) + 6);
    control_close(c);
    CHECK(!kit_exists(path), "fallback socket %s left after close", path);
}
