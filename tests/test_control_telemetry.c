/* test_control_telemetry: the workers' telemetry, with the real sender (worker/telemetry.c) on
 * one end and the control plane on the other: the per-worker table and its status reply,
 * stragglers, a silent worker, strangers (a wrong key, no CURVE, a rank out of range) ignored,
 * dropped messages counted by the sender and reported in the table and the status reply, and
 * sends that never block when the coordinator is gone or was never there. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "check.h"
#include "test_control.h"
#include "util.h"

/* check.h counts per file: this file's counts, for main */
void telemetry_tally(int *checks, int *failures) {
    *checks += check_count;
    *failures += check_failures;
}

enum { NW = 3 };   /* workers */

typedef struct {
    hcl_control *c;
    char ep[CONTROL_ENDPOINT_MAX], spub[41], csec[41];
    hcl_telemetry *t[NW];
    int64_t step;   /* the last step sent */
    void *ctx, *cli;
    hcl_status st;
} fixture;

static int tele_send(hcl_telemetry *t, int64_t step, double compute) {
    hcl_telemetry_msg m = {.step = step, .compute_s = compute, .allgather_s = 0.002, .reduce_scatter_s = 0.003,
                           .allreduce_s = 0.004, .wait_s = 0.0005, .bytes = 123456789,
                           .rss_bytes = telemetry_rss_bytes(), .in_step = -1, .phase_done = -1.0};
    return telemetry_send(t, &m);
}

/* The status reply's table (NULL on no reply); free with kit_free_reply. */
static Hcl__ControlReply *status(fixture *fx, uint64_t id) {
    Hcl__ControlReply *r = kit_call(fx->c, &fx->st, fx->cli, RQ_STATUS, id, NULL, NULL);
    CHECK(r && r->ok && r->body_case == HCL__CONTROL_REPLY__BODY_STATUS && r->status->n_workers == NW,
          "status %llu with the worker table", (unsigned long long)id);
    if (r && (r->body_case != HCL__CONTROL_REPLY__BODY_STATUS || r->status->n_workers != NW)) {
        kit_free_reply(r);
        return NULL;
    }
    return r;
}

static int open_fixture(fixture *fx) {
    char dir[512], err[HCL_ERR_MAX];
    kit_make_dir(dir, sizeof dir, "telemetry");
    if (control_open(&fx->c, NULL, dir, NULL, NULL, 0, err) != 0) {
        CHECK(0, "control_open: %s", err);
        return -1;
    }
    int rc = control_telemetry_open(fx->c, NW, "127.0.0.1", 0, fx->ep, fx->spub, fx->csec, err);
    CHECK(rc == 0 && !strncmp(fx->ep, "tcp://127.0.0.1:", 16) && strlen(fx->spub) == 40 &&
          strlen(fx->csec) == 40, "control_telemetry_open: %s", rc ? err : fx->ep);
    if (rc) { control_close(fx->c); return -1; }
    CHECK(control_telemetry_open(fx->c, NW, "127.0.0.1", 0, fx->ep, fx->spub, fx->csec, err) != 0,
          "telemetry opened twice");
    CHECK(control_nworkers(fx->c) == NW && control_worker(fx->c, NW) == NULL &&
          control_worker(fx->c, -1) == NULL && control_worker(fx->c, 0)->step == -1,
          "worker table before telemetry");
    /* workers named by index, rank and host (the host learnt at startup) */
    char name[128];
    CHECK(!strcmp(control_worker_name(fx->c, 0, name, sizeof name), "worker 0 (rank 1)"), "unknown host: %s", name);
    control_worker_where(fx->c, 1, 2, "hclh3");
    CHECK(!strcmp(control_worker_name(fx->c, 1, name, sizeof name), "worker 1 (rank 2 on host hclh3)") &&
          control_worker(fx->c, 1)->rank == 2 && !strcmp(control_worker(fx->c, 1)->host, "hclh3"),
          "worker 1 named %s", name);
    CHECK(telemetry_rss_bytes() > 1 << 20, "rss %llu", (unsigned long long)telemetry_rss_bytes());
    for (int i = 0; i < NW; i++) {
        rc = telemetry_open(&fx->t[i], fx->ep, fx->spub, fx->csec, i, err);
        CHECK(rc == 0, "telemetry_open %d: %s", i, err);
        if (rc) { control_close(fx->c); return -1; }
    }
    hcl_telemetry *tb;
    CHECK(telemetry_open(&tb, fx->ep, "short", fx->csec, 0, err) != 0 && !tb, "a bad server key accepted");
    fx->ctx = zmq_ctx_new();
    fx->cli = kit_client_socket(fx->ctx, ZMQ_DEALER, control_endpoint(fx->c), NULL, NULL);
    kit_fake_status(&fx->st);
    return 0;
}

/* workers 0 and 1 at 10 ms of compute, worker 2 at 30 ms: a straggler; the status reply
 * carries the table */
static void check_table(fixture *fx) {
    double end = hcl_now() + 5;
    while (hcl_now() < end) {
        fx->step++;
        for (int i = 0; i < NW; i++) tele_send(fx->t[i], fx->step, i == 2 ? 0.030 : 0.010);
        control_service(fx->c, NULL, 2);
        int ok = 1;
        for (int i = 0; i < NW; i++) ok &= control_worker(fx->c, i)->messages >= CONTROL_STRAGGLER_WINDOW;
        if (ok) break;
    }
    for (int k = 0; k < 20; k++) control_service(fx->c, NULL, 1);
    for (int i = 0; i < NW; i++) {
        const hcl_worker_stat *w = control_worker(fx->c, i);
        CHECK(w->messages >= CONTROL_STRAGGLER_WINDOW && w->step > 0 && w->step <= fx->step &&
              w->compute_s == (i == 2 ? 0.030 : 0.010) && w->allgather_s == 0.002 &&
              w->reduce_scatter_s == 0.003 && w->allreduce_s == 0.004 && w->wait_s == 0.0005 &&
              w->bytes == 123456789 && w->rss_bytes > 1 << 20, "worker %d table: %llu messages, step %lld",
              i, (unsigned long long)w->messages, (long long)w->step);
        CHECK(w->straggler == (i == 2), "worker %d straggler %d (median %.4f)", i, w->straggler,
              w->compute_median_s);
    }
    Hcl__ControlReply *r = status(fx, 1);
    if (r) {
        Hcl__WorkerStat *w = r->status->workers[2];
        CHECK(r->status->nworkers == NW && w->rank == 2 && w->straggler && w->compute_s == 0.030 &&
              w->bytes == 123456789 && w->last_seen_s >= 0 && w->last_seen_s < 5 &&
              !r->status->workers[0]->straggler, "status worker 2: rank %d straggler %d", w->rank,
              w->straggler);
    }
    kit_free_reply(r);
}

/* silence: worker 1 stops, 0 and 2 go on */
static void check_silence(fixture *fx) {
    CHECK(control_silent_worker(fx->c, 0.3) == -1, "a silent worker while all talk");
    double end = hcl_now() + 0.6;
    while (hcl_now() < end) {
        fx->step++;
        tele_send(fx->t[0], fx->step, 0.010);
        tele_send(fx->t[2], fx->step, 0.010);
        control_service(fx->c, NULL, 5);
    }
    CHECK(control_silent_worker(fx->c, 0.3) == 1, "silent worker %d, want 1", control_silent_worker(fx->c, 0.3));
    CHECK(control_silent_worker(fx->c, 60) == -1, "a silent worker with a 60 s timeout");
}

/* a stranger: the right server key but its own client key, or no CURVE, or a rank out of
 * range: nothing arrives */
static void check_strangers(fixture *fx) {
    char xpub[41], xsec[41], err[HCL_ERR_MAX];
    zmq_curve_keypair(xpub, xsec);
    hcl_telemetry *x, *y, *z;
    CHECK(telemetry_open(&x, fx->ep, fx->spub, xsec, 1, err) == 0, "telemetry_open stranger: %s", err);
    CHECK(telemetry_open(&y, fx->ep, NULL, NULL, 1, err) == 0, "telemetry_open plain: %s", err);
    CHECK(telemetry_open(&z, fx->ep, fx->spub, fx->csec, 99, err) == 0, "telemetry_open rank 99: %s", err);
    uint64_t before = control_worker(fx->c, 1)->messages;
    double end = hcl_now() + 0.5;
    while (hcl_now() < end) {
        tele_send(x, 1, 0.5);
        tele_send(y, 1, 0.5);
        tele_send(z, 1, 0.5);
        control_service(fx->c, NULL, 5);
    }
    CHECK(control_worker(fx->c, 1)->messages == before, "a stranger's telemetry was taken (%llu -> %llu)",
          (unsigned long long)before, (unsigned long long)control_worker(fx->c, 1)->messages);
    CHECK(control_silent_worker(fx->c, 0.3) == 1, "the stranger counted as worker 1's heartbeat");
    telemetry_close(x);
    telemetry_close(y);
    telemetry_close(z);
}

/* Service until nothing arrives for 20 ms (at most 10 s). */
static void drain(fixture *fx) {
    double end = hcl_now() + 10;
    while (hcl_now() < end && control_service(fx->c, NULL, 20) > 0) {}
}

/* Send from worker w and service until its row takes a message: the number of sends it took,
 * or 0 after 5 s. */
static int deliver_one(fixture *fx, int w) {
    double end = hcl_now() + 5;
    int sends = 0;
    while (hcl_now() < end) {
        uint64_t before = control_worker(fx->c, w)->messages;
        int dropped = tele_send(fx->t[w], ++fx->step, 0.010);
        sends++;
        for (int k = 0; k < 50 && control_worker(fx->c, w)->messages == before; k++)
            control_service(fx->c, NULL, 2);
        if (!dropped && control_worker(fx->c, w)->messages > before) return sends;
    }
    return 0;
}

/* Dropped telemetry: the coordinator stops reading (no control_service) while worker 1 sends
 * as fast as it can for a while: its send queue (high-water mark 4) fills, and behind it the
 * socket buffers and the coordinator's receive queue, so its sends are dropped and counted.
 * The coordinator reads again: every message that was not dropped arrives, and the next one
 * carries the running count into the table and the status reply. */
static void check_dropped(fixture *fx) {
    CHECK(deliver_one(fx, 1), "worker 1 connected before the flood");
    drain(fx);
    uint64_t base = telemetry_dropped(fx->t[1]), got0 = control_worker(fx->c, 1)->messages;
    CHECK(control_worker(fx->c, 1)->telemetry_dropped == base, "before the flood: table %llu, sender %llu",
          (unsigned long long)control_worker(fx->c, 1)->telemetry_dropped, (unsigned long long)base);
    double t0 = hcl_now();
    int64_t sends = 0;
    while ((telemetry_dropped(fx->t[1]) - base < 1000 || hcl_now() - t0 < 0.2) && hcl_now() - t0 < 10) {
        tele_send(fx->t[1], ++fx->step, 0.010);
        sends++;
    }
    uint64_t flood = telemetry_dropped(fx->t[1]) - base;
    printf("  telemetry flood, coordinator not reading: %lld sends in %.0f ms, %llu dropped\n",
           (long long)sends, (hcl_now() - t0) * 1e3, (unsigned long long)flood);
    CHECK(flood >= 1000, "a flood the coordinator does not read: only %llu of %lld sends dropped",
          (unsigned long long)flood, (long long)sends);
    drain(fx);
    int last = deliver_one(fx, 1);
    CHECK(last > 0, "worker 1 after the flood");
    drain(fx);
    uint64_t want = telemetry_dropped(fx->t[1]), got = control_worker(fx->c, 1)->messages - got0;
    CHECK(got == (uint64_t)(sends + last) - (want - base), "%llu messages arrived, want the %lld sent "
          "less the %llu dropped", (unsigned long long)got, (long long)(sends + last),
          (unsigned long long)(want - base));
    CHECK(control_worker(fx->c, 1)->telemetry_dropped == want && want >= base + 1000,
          "dropped count in the table %llu, the sender counted %llu",
          (unsigned long long)control_worker(fx->c, 1)->telemetry_dropped, (unsigned long long)want);
    Hcl__ControlReply *r = status(fx, 2);
    if (r) {
        CHECK(r->status->workers[1]->telemetry_dropped == want, "status: worker 1 dropped %llu, want %llu",
              (unsigned long long)r->status->workers[1]->telemetry_dropped, (unsigned long long)want);
        printf("  after reading again: %llu messages arrived; status says worker 1 dropped %llu\n",
               (unsigned long long)got, (unsigned long long)r->status->workers[1]->telemetry_dropped);
    }
    kit_free_reply(r);
}

/* the coordinator goes away, or was never there: sends never block, close is at once */
static void check_coordinator_gone(fixture *fx) {
    zmq_close(fx->cli);
    zmq_ctx_term(fx->ctx);
    control_close(fx->c);
    double worst = 0, t0 = hcl_now();
    int dropped = 0;
    for (int i = 0; i < 20000; i++) {
        double a = hcl_now();
        hcl_telemetry_msg m = {.step = i, .compute_s = 0.01, .in_step = -1, .phase_done = -1.0};
        dropped += telemetry_send(fx->t[0], &m);
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
    char err[HCL_ERR_MAX];
    CHECK(telemetry_open(&never, "tcp://127.0.0.1:1", fx->spub, fx->csec, 0, err) == 0, "telemetry_open: %s", err);
    t0 = hcl_now();
    for (int i = 0; i < 1000; i++) tele_send(never, i, 0.01);
    CHECK(hcl_now() - t0 < 0.5, "1000 sends to nobody took %.3f s", hcl_now() - t0);
    CHECK(telemetry_dropped(never) == 1000, "sends to nobody: %llu of 1000 counted as dropped",
          (unsigned long long)telemetry_dropped(never));
    t0 = hcl_now();
    telemetry_close(never);
    for (int i = 0; i < NW; i++) telemetry_close(fx->t[i]);
    CHECK(hcl_now() - t0 < 0.5, "telemetry_close took %.3f s", hcl_now() - t0);
}

void test_telemetry(void) {
    fixture fx;
    memset(&fx, 0, sizeof fx);
    if (open_fixture(&fx) != 0) return;
    check_table(&fx);
    check_silence(&fx);
    check_strangers(&fx);
    check_dropped(&fx);
    check_coordinator_gone(&fx);
}
