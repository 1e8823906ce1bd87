/* fuzz_telemetry: worker telemetry through coordinator/control_telemetry.c's
 * control_telemetry_take, the function control_service calls for the PULL socket: decoding each
 * Telemetry, the checks of its version and rank, the per-worker table (timings, heartbeat, the
 * dropped count, the phase) and the stragglers. The input is a stream of messages (fuzz_kit.h)
 * PUSHed over inproc:// (no CURVE: that is ZeroMQ's, not hcl's decoding) to a table of four
 * workers, emptied for each input. The table must then hold what a STATUS reply can carry. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <zmq.h>

#include "control_internal.h"
#include "fuzz_kit.h"
#include "util.h"

#define FUZZ_WORKERS 4
#define FUZZ_MAX_MESSAGES 512

static hcl_control *ctl;
static void *push;

static void setup(void) {
    ctl = hcl_calloc(1, sizeof *ctl);
    ctl->ctx = zmq_ctx_new();
    HCL_CHECK(ctl->ctx, "zmq_ctx_new");
    ctl->pull = control_socket(ctl->ctx, ZMQ_PULL, 0);
    control_sockopt_int(ctl->pull, ZMQ_RCVHWM, 100000);
    HCL_CHECK(zmq_bind(ctl->pull, "inproc://fuzz-telemetry") == 0, "bind: %s", zmq_strerror(zmq_errno()));
    push = control_socket(ctl->ctx, ZMQ_PUSH, 0);
    control_sockopt_int(push, ZMQ_SNDHWM, 100000);
    HCL_CHECK(zmq_connect(push, "inproc://fuzz-telemetry") == 0, "connect: %s", zmq_strerror(zmq_errno()));
    ctl->nworkers = FUZZ_WORKERS;
    ctl->workers = hcl_calloc(FUZZ_WORKERS, sizeof *ctl->workers);
    ctl->median_scratch = hcl_calloc(FUZZ_WORKERS, sizeof *ctl->median_scratch);
}

/* The table as control_telemetry_open leaves it. */
static void reset_table(void) {
    memset(ctl->workers, 0, FUZZ_WORKERS * sizeof *ctl->workers);
    ctl->telemetry_start = hcl_now();
    ctl->telemetry_bad = 0;
    for (int i = 0; i < FUZZ_WORKERS; i++) {
        ctl->workers[i].s.step = -1;
        ctl->workers[i].s.in_step = -1;
        ctl->workers[i].s.phase_done = -1.0;
        ctl->workers[i].s.last_seen = ctl->telemetry_start;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!ctl) setup();
    reset_table();
    const uint8_t *p = data, *end = data + size, *msg;
    size_t len;
    int sent = 0, taken = 0;
    while (sent < FUZZ_MAX_MESSAGES && fuzz_next_message(&p, end, &msg, &len)) {
        HCL_CHECK(zmq_send(push, msg, len, 0) == (int)len, "send: %s", zmq_strerror(zmq_errno()));
        if (++sent % 16 == 0) taken += control_telemetry_take(ctl);
    }
    while (taken < sent) {
        int got = control_telemetry_take(ctl);
        FUZZ_ASSERT(got > 0, "%d of %d messages taken", taken, sent);
        taken += got;
    }
    FUZZ_ASSERT(taken == sent, "%d messages taken, %d sent", taken, sent);
    for (int i = 0; i < FUZZ_WORKERS; i++) {
        const hcl_worker_stat *s = control_worker(ctl, i);
        const control_worker_slot *w = &ctl->workers[i];
        FUZZ_ASSERT(s == &w->s, "worker %d not in the table", i);
        FUZZ_ASSERT(w->nwin >= 0 && w->nwin <= CONTROL_STRAGGLER_WINDOW && w->wpos >= 0 &&
                    w->wpos < CONTROL_STRAGGLER_WINDOW, "worker %d window %d at %d", i, w->nwin, w->wpos);
        FUZZ_ASSERT(memchr(s->phase, 0, sizeof s->phase), "worker %d phase not terminated", i);
        FUZZ_ASSERT(isfinite(s->compute_median_s) && s->compute_median_s >= 0, "worker %d median %g", i,
                    s->compute_median_s);
        FUZZ_ASSERT(s->straggler == 0 || s->straggler == 1, "worker %d straggler %d", i, s->straggler);
        FUZZ_ASSERT(s->phase_done == -1.0 || (s->phase_done >= 0 && s->phase_done <= 1),
                    "worker %d phase_done %g", i, s->phase_done);
    }
    FUZZ_ASSERT(control_worker(ctl, FUZZ_WORKERS) == NULL && control_worker(ctl, -1) == NULL, "rank out of range");
    control_silent_worker(ctl, 0.0);
    return 0;
}
