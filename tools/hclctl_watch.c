/* hclctl_watch: `hclctl watch` (tools/hclctl.h). A SUB socket on the job's watch endpoint
 * prints one line per StepEvent; while no event comes for --timeout ms a status request
 * checks that the job is still there. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "hclctl.h"
#include "util.h"

static void print_event(const Hcl__StepEvent *e) {
    if (hclctl_flag.json) {
        hcl_json *j = json_line();
        json_int(j, "step", e->step);
        json_int(j, "total_steps", e->total_steps);
        json_int(j, "epoch", e->epoch);
        json_number(j, "loss", e->loss);
        json_number(j, "lr", e->lr);
        json_number(j, "logit_scale", e->logit_scale);
        json_number(j, "samples_per_s", e->samples_per_s);
        json_number(j, "eta_s", e->eta_s >= 0 ? e->eta_s : NAN);
        json_string(j, "state", state_name(e->state));
        json_number(j, "time", e->time);
        json_print();
    } else {
        char eta[32];
        duration(eta, sizeof eta, e->eta_s);
        printf("step %" PRId64 "/%" PRId64 " epoch %" PRId64 " loss %.4f lr %.3g logit_scale %.2f "
               "samples/s %.0f eta %s %s\n", e->step, e->total_steps, e->epoch, e->loss, e->lr,
               e->logit_scale, e->samples_per_s, eta, state_name(e->state));
    }
    fflush(stdout);
}

/* The watch endpoint to connect to. A tcp watch socket on a wildcard address: reach it through
 * the host we reached control on. */
static void watch_endpoint(const client *cl, const char *watch_ep, char ep[EP_MAX]) {
    snprintf(ep, EP_MAX, "%s", watch_ep);
    if (strncmp(ep, "tcp://", 6) || strncmp(cl->endpoint, "tcp://", 6)) return;
    const char *port = strrchr(ep, ':'), *chost = cl->endpoint + 6, *cport = strrchr(chost, ':');
    if (port && cport) {
        char tmp[EP_MAX];
        snprintf(tmp, sizeof tmp, "tcp://%.*s%s", (int)(cport - chost), chost, port);
        snprintf(ep, EP_MAX, "%s", tmp);
    }
}

/* One event off sub, if one is there: 1 printed, 0 not. */
static int watch_take(void *sub) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    int got = 0;
    if (zmq_msg_recv(&m, sub, ZMQ_DONTWAIT) >= 0) {
        Hcl__StepEvent *e = hcl__step_event__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
        if (e) {
            print_event(e);
            got = 1;
            hcl__step_event__free_unpacked(e, NULL);
        }
    }
    zmq_msg_close(&m);
    return got;
}

/* No event for --timeout ms: is the job still there? 1 when it is done (watch ends). */
static int watch_job_done(client *cl) {
    Hcl__ControlRequest rq;
    request_bodies b;
    build_request(&rq, &b, "status", NULL);
    Hcl__ControlReply *r = client_call(cl, &rq);
    if (!r) {
        if (hclctl_interrupted) return 1;
        fail(EXIT_NOANSWER, "the job at %s stopped answering (no answer within %lld ms)",
             cl->endpoint, (long long)hclctl_flag.timeout);
    }
    int done = r->body_case == HCL__CONTROL_REPLY__BODY_STATUS &&
               r->status->state == HCL__RUN_STATE__RUN_STATE_DONE;
    hcl__control_reply__free_unpacked(r, NULL);
    return done;
}

int watch_one(client *cl, const char *watch_ep) {
    char ep[EP_MAX];
    watch_endpoint(cl, watch_ep, ep);
    void *sub = client_socket(cl, ZMQ_SUB, ep);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0);
    int64_t seen = 0;
    double quiet_since = hcl_now();
    while (!hclctl_interrupted && (hclctl_flag.count == 0 || seen < hclctl_flag.count)) {
        zmq_pollitem_t it = {sub, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 200) > 0) {
            seen += watch_take(sub);
            quiet_since = hcl_now();
            continue;
        }
        if (hcl_now() - quiet_since < hclctl_flag.timeout / 1e3) continue;
        if (watch_job_done(cl)) break;
        quiet_since = hcl_now();
    }
    zmq_close(sub);
    return 0;
}
