/* test_control_serve: a fake training loop behind the real control plane, and the tests that
 * need one in another process: 10,000 seeded random messages that must not stop it answering
 * status, and the status latency over ipc and tcp. test_control --serve runs the loop for
 * tests/test_hclctl.sh; --fuzz and --latency aim at a real job (tests/test_control_job.sh). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "check.h"
#include "log.h"
#include "test_control.h"
#include "util.h"

/* check.h counts per file: this file's counts, for main */
void serve_tally(int *checks, int *failures) {
    *checks += check_count;
    *failures += check_failures;
}

/* ---- the fake training loop ------------------------------------------------------------------ */

static volatile sig_atomic_t serve_quit;
static void serve_signal(int sig) { (void)sig; serve_quit = 1; }

typedef struct {
    hcl_control *c;
    hcl_status st;
    const char *dir;
    int exit_on_stop, stop;
    hcl_telemetry *tel;   /* worker 0's telemetry, or NULL */
} fake_job;

/* Worker 0's sender. Its first messages go out before the coordinator has served a single ZAP
 * request, so no connection is complete yet: they are dropped and counted, a real running
 * count for `hclctl status` to show. */
static void open_worker_telemetry(fake_job *j, int nworkers, int telemetry) {
    char ep[CONTROL_ENDPOINT_MAX], spub[41], csec[41], err[HCL_ERR_MAX];
    if (nworkers <= 0) return;
    if (control_telemetry_open(j->c, nworkers, "127.0.0.1", 0, ep, spub, csec, err) != 0) {
        fprintf(stderr, "test_control --serve: %s\n", err);
        exit(1);
    }
    for (int i = 0; i < nworkers; i++) {   /* as hcl-train learns them at startup */
        char host[32];
        snprintf(host, sizeof host, "hclh%d", i + 2);
        control_worker_where(j->c, i, i + 1, host);
    }
    if (!telemetry) return;
    if (telemetry_open(&j->tel, ep, spub, csec, 0, err) != 0) {
        fprintf(stderr, "test_control --serve: %s\n", err);
        exit(1);
    }
    for (int i = 0; i < 50; i++) {
        hcl_telemetry_msg m = {.step = -1, .rss_bytes = telemetry_rss_bytes(), .in_step = -1, .phase_done = -1.0};
        telemetry_send(j->tel, &m);
    }
}

/* One step of the fake job: the numbers a job would have, a watch event, worker 0's telemetry. */
static void fake_step(fake_job *j, double elapsed, int step_ms) {
    hcl_status *st = &j->st;
    st->step++;
    st->epoch = st->step / 1000;
    st->loss = 4.0 / (1 + 0.01 * (double)st->step);
    st->samples_per_s = 512e3 / step_ms;
    st->elapsed_s = elapsed;
    st->eta_s = (double)(st->total_steps - st->step) * step_ms / 1e3;
    control_publish(j->c, st);
    if (j->tel) {
        hcl_telemetry_msg m = {.step = st->step, .compute_s = step_ms * 0.8e-3, .allgather_s = 1e-3,
                               .reduce_scatter_s = 1e-3, .allreduce_s = 2e-3, .wait_s = 1e-4, .bytes = 1 << 20,
                               .rss_bytes = telemetry_rss_bytes(), .in_step = -1, .phase_done = -1.0};
        telemetry_send(j->tel, &m);
    }
}

/* Act on one popped command and answer it, as the coordinator's loop does. */
static void fake_act(fake_job *j, const ctl_request *rq) {
    hcl_status *st = &j->st;
    char msg[2100] = "";
    switch (rq->cmd) {
    case CTL_CMD_PAUSE:
        if (st->state == HCL_RUN_STATE_PAUSED) { control_reply_error(j->c, rq, CTL_ERROR_REFUSED, "already paused"); return; }
        st->state = HCL_RUN_STATE_PAUSED;
        break;
    case CTL_CMD_RESUME:
        if (st->state != HCL_RUN_STATE_PAUSED) { control_reply_error(j->c, rq, CTL_ERROR_REFUSED, "not paused"); return; }
        st->state = HCL_RUN_STATE_RUNNING;
        break;
    case CTL_CMD_CHECKPOINT:
        snprintf(st->last_checkpoint_path, sizeof st->last_checkpoint_path, "%s/checkpoints/step-%08lld",
                 j->dir, (long long)st->step);
        st->last_checkpoint_step = st->step;
        snprintf(msg, sizeof msg, "%s", st->last_checkpoint_path);
        break;
    case CTL_CMD_STOP:
        if (j->exit_on_stop) { j->stop = 1; st->state = HCL_RUN_STATE_STOPPING; }
        break;
    case CTL_CMD_SET:
        if (rq->key == CTL_KEY_LR_SCALE) { st->lr = st->lr / st->lr_scale * rq->value; st->lr_scale = rq->value; }
        if (rq->key == CTL_KEY_LOG_EVERY) st->log_every = (int64_t)rq->value;
        if (rq->key == CTL_KEY_CHECKPOINT_INTERVAL) st->checkpoint_interval_s = rq->value;
        if (rq->key == CTL_KEY_CHECKPOINT_EVERY) st->checkpoint_every = (int64_t)rq->value;
        snprintf(msg, sizeof msg, "%s", rq->text);
        break;
    }
    control_reply_ok(j->c, rq, st->step + (rq->cmd == CTL_CMD_PAUSE || rq->cmd == CTL_CMD_SET), msg);
}

int serve_loop(const char *dir, const char *endpoint, const char *secret, const char *clients,
               int nworkers, int step_ms, int exit_on_stop, int telemetry) {
    signal(SIGTERM, serve_signal);
    signal(SIGINT, serve_signal);
    log_init("serve", 0, HCL_LOG_WARN);
    char err[HCL_ERR_MAX];
    fake_job j;
    memset(&j, 0, sizeof j);
    j.dir = dir;
    j.exit_on_stop = exit_on_stop;
    if (control_open(&j.c, endpoint, dir, secret, clients, 0, err) != 0) {
        fprintf(stderr, "test_control --serve: %s\n", err);
        return 1;
    }
    open_worker_telemetry(&j, nworkers, telemetry);
    control_status_init(&j.st);
    j.st.state = HCL_RUN_STATE_RUNNING;
    j.st.total_steps = 1000000;
    j.st.lr = 1e-3;
    j.st.loss = 4.0;
    j.st.logit_scale = 14.3;
    j.st.log_every = 10;
    double t0 = hcl_now(), next = t0;
    while (!serve_quit && !j.stop) {
        double now = hcl_now();
        if (now >= next) {
            next = now + step_ms / 1e3;
            if (j.st.state == HCL_RUN_STATE_RUNNING) fake_step(&j, now - t0, step_ms);
        }
        int wait = (int)((next - hcl_now()) * 1e3);
        control_service(j.c, &j.st, wait < 0 ? 0 : wait);
        ctl_request rq;
        while (control_next(j.c, &rq)) fake_act(&j, &rq);
    }
    /* a last look so the stop's reply leaves before the socket closes */
    for (int i = 0; i < 5; i++) control_service(j.c, &j.st, 10);
    telemetry_close(j.tel);
    control_close(j.c);
    return 0;
}

pid_t serve_fork(const char *dir, const char *endpoint, int nworkers, int step_ms) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    HCL_CHECK(pid >= 0, "fork");
    if (pid == 0) _exit(serve_loop(dir, endpoint, NULL, NULL, nworkers, step_ms, 0, 0));
    char path[600];
    snprintf(path, sizeof path, "%s/control.endpoint", dir);
    for (int i = 0; i < 500 && !kit_exists(path); i++) usleep(10000);
    return pid;
}

int serve_stop(pid_t pid) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return -1;   /* it died on its own */
    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Count the replies on fz: those waiting (wait_ms 0), or until none came for wait_ms. A reply
 * to an [""][payload] message carries the delimiter: a reply ends at a frame without MORE. */
static int count_replies(void *fz, int wait_ms) {
    int replies = 0;
    uint8_t rb[4096];
    zmq_pollitem_t it = {fz, 0, ZMQ_POLLIN, 0};
    while ((wait_ms == 0 || zmq_poll(&it, 1, wait_ms) > 0) && zmq_recv(fz, rb, sizeof rb, ZMQ_DONTWAIT) >= 0) {
        int more = 0;
        size_t ml = sizeof more;
        zmq_getsockopt(fz, ZMQ_RCVMORE, &more, &ml);
        replies += !more;
    }
    return replies;
}

/* n seeded random messages: random bytes, or a valid request truncated or with flipped bits,
 * now and then with an extra frame. Returns the number sent; *replies counts the answers. */
static int fuzz_flood(void *fz, int n, int *replies) {
    uint8_t buf[2048], valid[512];
    const char *keys[] = {"lr", "lr_scale", "log_every", "checkpoint_interval", "checkpoint_every", "x"};
    int sent = 0;
    for (int i = 0; i < n; i++) {
        size_t len;
        int kind = (int)(kit_rnd() % 4);
        if (kind == 0) {                    /* random bytes */
            len = kit_rnd() % 300;
            for (size_t k = 0; k < len; k++) buf[k] = (uint8_t)kit_rnd();
        } else {                            /* a valid request, truncated or with flipped bits */
            char val[32];
            snprintf(val, sizeof val, "%g", (double)(kit_rnd() % 2000) / 7.0 - 50);
            size_t vn = kit_pack_request(valid, (int)(10 + kit_rnd() % 8), kit_rnd(),
                                         (uint32_t)(kit_rnd() % 8 ? 1 : kit_rnd() % 4), keys[kit_rnd() % 6],
                                         val, (int)(kit_rnd() % 2));
            memcpy(buf, valid, vn);
            len = vn;
            if (kind == 1) len = vn ? kit_rnd() % vn : 0;
            else if (kind == 2)
                for (int k = 0; k < 3 && vn; k++) buf[kit_rnd() % vn] ^= (uint8_t)(1u << (kit_rnd() % 8));
        }
        if (kit_rnd() % 50 == 0) zmq_send(fz, buf, len > 5 ? 5 : len, ZMQ_SNDMORE | ZMQ_DONTWAIT);  /* extra frames */
        if (zmq_send(fz, buf, len, ZMQ_DONTWAIT) >= 0) sent++;
        *replies += count_replies(fz, 0);
    }
    return sent;
}

/* 10,000 seeded random and truncated messages against a forked server, which must still
 * answer status within 100 ms, right after and once the flood is digested. */
void test_fuzz(void) {
    char dir[512], ep[600], path[600];
    kit_make_dir(dir, sizeof dir, "fuzz");
    pid_t pid = serve_fork(dir, NULL, 0, 10);
    snprintf(path, sizeof path, "%s/control.endpoint", dir);
    kit_read_first_line(path, ep, sizeof ep);
    CHECK(ep[0], "fuzz: the server wrote no control.endpoint");
    void *ctx = zmq_ctx_new();
    void *fz = kit_client_socket(ctx, ZMQ_DEALER, ep, NULL, NULL);
    int replies = 0;
    int sent = fuzz_flood(fz, 10000, &replies);
    /* status from a fresh client right after the flood */
    void *cli = kit_client_socket(ctx, ZMQ_DEALER, ep, NULL, NULL);
    double rtt = kit_status_rtt(cli, 1);
    CHECK(rtt >= 0 && rtt < 0.1, "status right after 10,000 fuzz messages: %.1f ms", rtt * 1e3);
    printf("  fuzz: %d messages sent; status right after: %.2f ms\n", sent, rtt * 1e3);
    /* and once the flood is digested (no reply for 300 ms) */
    replies += count_replies(fz, 300);
    double worst = 0;
    for (int i = 0; i < 20; i++) {
        double d = kit_status_rtt(cli, 100 + (uint64_t)i);
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
    int code = serve_stop(pid);
    CHECK(code == 0, "fuzz: the server died or exited with %d", code);
}

/* Status latency (median, p99, max) against a forked server with a 16-worker table. */
void test_latency(const char *name, const char *endpoint) {
    char dir[512], ep[600], path[600];
    kit_make_dir(dir, sizeof dir, name);
    pid_t pid = serve_fork(dir, endpoint, 16, 10);
    snprintf(path, sizeof path, "%s/control.endpoint", dir);
    kit_read_first_line(path, ep, sizeof ep);
    void *ctx = zmq_ctx_new();
    void *cli = kit_client_socket(ctx, ZMQ_DEALER, ep, NULL, NULL);
    enum { N = 2000 };
    static double d[N];
    int ok = 1;
    kit_status_rtt(cli, 1);   /* connect */
    for (int i = 0; i < N && ok; i++) {
        d[i] = kit_status_rtt(cli, 10 + (uint64_t)i);
        ok = d[i] >= 0;
    }
    CHECK(ok, "%s: a status request went unanswered", name);
    if (ok) {
        qsort(d, N, sizeof(double), kit_cmp_double);
        printf("  status latency %-4s (%s, 16-worker table, server stepping every 10 ms): median %.0f us, "
               "p99 %.0f us, max %.0f us over %d\n", name, ep, d[N / 2] * 1e6, d[N * 99 / 100] * 1e6,
               d[N - 1] * 1e6, N);
        CHECK(d[N / 2] < 0.005 && d[N - 1] < 0.1, "%s: status latency median %.2f ms max %.2f ms", name,
              d[N / 2] * 1e3, d[N - 1] * 1e3);
    }
    zmq_close(cli);
    zmq_ctx_term(ctx);
    CHECK(serve_stop(pid) == 0, "%s: server exit", name);
}

/* ---- --serve for tests/test_hclctl.sh ------------------------------------------------------ */

/* test_control --serve DIR [--endpoint E] [--secret F --clients F] [--step-ms N]: runs until
 * stop (or SIGTERM), with 2 workers of which worker 0 sends telemetry. */
int serve_main(int argc, char **argv) {
    const char *dir = argv[2], *ep = NULL, *sec = NULL, *cli = NULL;
    int step_ms = 20;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--endpoint")) ep = argv[i + 1];
        else if (!strcmp(argv[i], "--secret")) sec = argv[i + 1];
        else if (!strcmp(argv[i], "--clients")) cli = argv[i + 1];
        else if (!strcmp(argv[i], "--step-ms")) step_ms = atoi(argv[i + 1]);
        else { fprintf(stderr, "test_control --serve: unknown flag %s\n", argv[i]); return 2; }
    }
    return serve_loop(dir, ep, sec, cli, 2, step_ms > 0 ? step_ms : 20, 1, 1);
}

/* ---- --fuzz for tests/test_control_job.sh ---------------------------------------------------- */

/* N seeded random byte strings and truncated status/watch requests at a real job: nothing that
 * could decode as a command. */
int fuzz_main(const char *ep, int n) {
    void *ctx = zmq_ctx_new();
    void *fz = kit_client_socket(ctx, ZMQ_DEALER, ep, NULL, NULL);
    uint8_t buf[2048], valid[512];
    int sent = 0, replies = 0;
    for (int i = 0; i < n; i++) {
        size_t len;
        if (kit_rnd() % 2) {                /* random bytes */
            len = kit_rnd() % 300;
            for (size_t k = 0; k < len; k++) buf[k] = (uint8_t)kit_rnd();
        } else {                            /* a status (10) or watch (11) request cut short */
            size_t vn = kit_pack_request(valid, (int)(10 + kit_rnd() % 2), kit_rnd(), 1, NULL, NULL,
                                         (int)(kit_rnd() % 2));
            len = vn ? kit_rnd() % vn : 0;
            memcpy(buf, valid, len);
        }
        if (kit_rnd() % 50 == 0) zmq_send(fz, buf, len > 5 ? 5 : len, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        if (zmq_send(fz, buf, len, ZMQ_DONTWAIT) >= 0) sent++;
        uint8_t rb[4096];
        while (zmq_recv(fz, rb, sizeof rb, ZMQ_DONTWAIT) >= 0) replies++;
    }
    void *cli = kit_client_socket(ctx, ZMQ_DEALER, ep, NULL, NULL);
    double rtt = kit_status_rtt(cli, 1);
    printf("fuzz: %d messages sent, %d reply frames so far; status right after: %.2f ms\n", sent, replies, rtt * 1e3);
    zmq_close(fz);
    zmq_close(cli);
    zmq_ctx_term(ctx);
    return rtt >= 0 && rtt < 0.5 ? 0 : 1;
}

/* N status requests over one connection, 20 ms apart: fails if one took 100 ms or more. */
int latency_main(const char *ep, int n) {
    void *ctx = zmq_ctx_new();
    void *cli = kit_client_socket(ctx, ZMQ_DEALER, ep, NULL, NULL);
    double *t = hcl_calloc((size_t)n, sizeof(double));
    for (int i = 0; i < n; i++) {
        t[i] = kit_status_rtt(cli, 1000 + (uint64_t)i);
        if (t[i] < 0) t[i] = 1e9;
        usleep(20000);
    }
    qsort(t, (size_t)n, sizeof(double), kit_cmp_double);
    printf("status round trip over %d requests: median %.2f ms, max %.2f ms\n", n, t[n / 2] * 1e3, t[n - 1] * 1e3);
    int ok = t[n - 1] < 0.1;
    free(t);
    zmq_close(cli);
    zmq_ctx_term(ctx);
    return ok ? 0 : 1;
}
