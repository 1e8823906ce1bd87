/* fuzz_control: control requests through coordinator/control_request.c's control_router_one, the
 * function control_service calls for each message on the control ROUTER: framing, decoding, the
 * one switch on the request type, SET's checks, the command queue, the replies. The input is a
 * stream of requests (fuzz_kit.h), each sent by a DEALER over inproc:// (no network, no file);
 * then the queue is drained as the coordinator's loop would (control_next, control_reply_ok or
 * _error). Every request must get exactly one reply, a ControlReply saying ok or an error code. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "control.pb-c.h"
#include "control_internal.h"
#include "fuzz_kit.h"
#include "util.h"

#define FUZZ_MAX_REQUESTS 200

static hcl_control *ctl;
static void *dealer;
static hcl_status status;

static void setup(void) {
    ctl = hcl_calloc(1, sizeof *ctl);
    ctl->ctx = zmq_ctx_new();
    HCL_CHECK(ctl->ctx, "zmq_ctx_new");
    ctl->router = control_socket(ctl->ctx, ZMQ_ROUTER, 0);
    control_sockopt_int(ctl->router, ZMQ_ROUTER_MANDATORY, 0);
    control_sockopt_int(ctl->router, ZMQ_SNDHWM, 100000);
    control_sockopt_int(ctl->router, ZMQ_RCVHWM, 100000);
    HCL_CHECK(zmq_bind(ctl->router, "inproc://fuzz-control") == 0, "bind: %s", zmq_strerror(zmq_errno()));
    dealer = control_socket(ctl->ctx, ZMQ_DEALER, 0);
    control_sockopt_int(dealer, ZMQ_SNDHWM, 100000);
    control_sockopt_int(dealer, ZMQ_RCVHWM, 100000);
    HCL_CHECK(zmq_connect(dealer, "inproc://fuzz-control") == 0, "connect: %s", zmq_strerror(zmq_errno()));
    snprintf(ctl->run_dir, sizeof ctl->run_dir, "/run/fuzz");
    snprintf(ctl->watch_endpoint, sizeof ctl->watch_endpoint, "ipc:///run/fuzz/watch.sock");
    /* two workers in the table, as after control_telemetry_open: the STATUS reply carries it */
    ctl->nworkers = 2;
    ctl->workers = hcl_calloc(2, sizeof *ctl->workers);
    for (int i = 0; i < 2; i++) {
        ctl->workers[i].s.step = -1;
        ctl->workers[i].s.in_step = -1;
        ctl->workers[i].s.phase_done = -1;
    }
    control_status_init(&status);
    status.state = HCL_RUN_STATE_RUNNING;
    status.step = 120;
    status.total_steps = 1000;
    status.lr = 3e-4;
    status.log_every = 10;
    snprintf(status.last_checkpoint_path, sizeof status.last_checkpoint_path, "/run/fuzz/checkpoints/step-00000100");
}

/* Every reply waiting on the DEALER: checked, counted. */
static int take_replies(void) {
    int n = 0;
    uint8_t buf[1 << 16];
    for (;;) {
        int len = zmq_recv(dealer, buf, sizeof buf, ZMQ_DONTWAIT);
        if (len < 0) return n;
        FUZZ_ASSERT(len <= (int)sizeof buf, "a reply of %d bytes", len);
        Hcl__ControlReply *r = hcl__control_reply__unpack(NULL, (size_t)len, buf);
        FUZZ_ASSERT(r, "a reply that is not a ControlReply (%d bytes)", len);
        FUZZ_ASSERT(r->version == HCL__CONTROL_VERSION__CONTROL_VERSION_1, "reply version %u", r->version);
        FUZZ_ASSERT(r->ok ? r->error == 0 : r->error >= CTL_ERROR_BAD_VERSION && r->error <= CTL_ERROR_FAILED,
                    "reply ok %d with error %d", r->ok, (int)r->error);
        FUZZ_ASSERT(r->ok || (r->message && r->message[0]), "an error reply without a message");
        hcl__control_reply__free_unpacked(r, NULL);
        n++;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!ctl) setup();
    const uint8_t *p = data, *end = data + size, *msg;
    size_t len;
    int sent = 0, replies = 0;
    while (sent < FUZZ_MAX_REQUESTS && fuzz_next_message(&p, end, &msg, &len)) {
        HCL_CHECK(zmq_send(dealer, msg, len, 0) == (int)len, "send: %s", zmq_strerror(zmq_errno()));
        sent++;
        FUZZ_ASSERT(control_router_one(ctl, &status) == 1, "request %d not taken", sent);
        replies += take_replies();
    }
    FUZZ_ASSERT(control_router_one(ctl, &status) == 0, "a message nobody sent");
    ctl_request rq;
    for (int i = 0; control_next(ctl, &rq); i++) {
        FUZZ_ASSERT(rq.cmd >= CTL_CMD_PAUSE && rq.cmd <= CTL_CMD_SET, "queued command %d", (int)rq.cmd);
        FUZZ_ASSERT(rq.rid_len <= sizeof rq.rid && memchr(rq.text, 0, sizeof rq.text), "a damaged queue entry");
        if (i % 2) control_reply_error(ctl, &rq, CTL_ERROR_REFUSED, "refused by the fuzzer");
        else control_reply_ok(ctl, &rq, status.step + 1, NULL);
    }
    replies += take_replies();
    FUZZ_ASSERT(replies == sent, "%d requests got %d replies", sent, replies);
    return 0;
}
