/* fuzz_capture: records real wire messages for the seed corpus of fuzz_control and
 * fuzz_telemetry (tests/fuzz/make-corpus), one raw message a file:
 *
 *   fuzz_capture requests RUN_DIR OUT_DIR COUNT
 *       a ROUTER on ipc://RUN_DIR/control.sock (named in RUN_DIR/control.endpoint, as a job
 *       does) takes the next COUNT ControlRequests, e.g. from hclctl, into OUT_DIR/request-NN
 *   fuzz_capture telemetry OUT_DIR
 *       three workers' telemetry_send (worker/telemetry.c, without CURVE) over six steps, with
 *       heartbeats and a slow worker, into OUT_DIR/telemetry-NNN in the order they came */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "telemetry.h"
#include "util.h"

static void save(const char *dir, const char *name, int i, const void *data, size_t len) {
    char path[1024], err[HCL_ERR_MAX];
    snprintf(path, sizeof path, "%s/%s-%03d", dir, name, i);
    HCL_CHECK(hcl_write_file_durable(path, data, len, err) == 0, "%s", err);
}

static int requests(const char *run_dir, const char *out, int count) {
    void *ctx = zmq_ctx_new(), *router = zmq_socket(ctx, ZMQ_ROUTER);
    char ep[1100], file[1100], err[HCL_ERR_MAX];
    snprintf(ep, sizeof ep, "ipc://%s/control.sock", run_dir);
    HCL_CHECK(zmq_bind(router, ep) == 0, "bind %s: %s", ep, zmq_strerror(zmq_errno()));
    snprintf(file, sizeof file, "%s/control.endpoint", run_dir);
    char line[1200];
    int n = snprintf(line, sizeof line, "%s\n", ep);
    HCL_CHECK(hcl_write_file_durable(file, line, (size_t)n, err) == 0, "%s", err);
    int timeout = 20000;
    zmq_setsockopt(router, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    for (int i = 0; i < count; i++) {
        uint8_t buf[65536];
        int got = -1, more = 1;
        for (int frame = 0; more; frame++) {   /* [routing id][request] from a DEALER */
            got = zmq_recv(router, buf, sizeof buf, 0);
            HCL_CHECK(got >= 0 && got <= (int)sizeof buf, "request %d: %s", i, zmq_strerror(zmq_errno()));
            size_t sz = sizeof more;
            zmq_getsockopt(router, ZMQ_RCVMORE, &more, &sz);
        }
        save(out, "request", i, buf, (size_t)got);
    }
    unlink(file);
    zmq_close(router);
    zmq_ctx_term(ctx);
    return 0;
}

static int telemetry(const char *out) {
    void *ctx = zmq_ctx_new(), *pull = zmq_socket(ctx, ZMQ_PULL);
    HCL_CHECK(zmq_bind(pull, "tcp://127.0.0.1:*") == 0, "bind: %s", zmq_strerror(zmq_errno()));
    char ep[256], err[HCL_ERR_MAX];
    size_t len = sizeof ep;
    zmq_getsockopt(pull, ZMQ_LAST_ENDPOINT, ep, &len);
    enum { WORKERS = 3, STEPS = 6 };
    hcl_telemetry *t[WORKERS];
    for (int r = 0; r < WORKERS; r++) HCL_CHECK(telemetry_open(&t[r], ep, NULL, NULL, r, err) == 0, "%s", err);
    static const char *phases[] = {"encode", "allgather", "loss", "reduce_scatter", "backward", "update"};
    int saved = 0;
    for (int step = 0; step <= STEPS; step++)
        for (int r = 0; r < WORKERS; r++) {
            hcl_telemetry_msg m = {.step = step, .compute_s = (r == 2 ? 0.031 : 0.012) + 1e-4 * step,
                                   .allgather_s = 0.0021, .reduce_scatter_s = 0.0017, .allreduce_s = 0.0042,
                                   .wait_s = 0.0003, .bytes = 1u << 20, .rss_bytes = telemetry_rss_bytes(),
                                   .in_step = step + 1, .phase_done = -1.0};
            snprintf(m.phase, sizeof m.phase, "%s", phases[(step + r) % 6]);
            if (step == 0) {   /* the watchdog's heartbeat before the first step ends */
                m.step = -1;
                m.in_step = 0;
                snprintf(m.phase, sizeof m.phase, "loss");
                m.phase_done = 0.25 * (r + 1);
            }
            while (telemetry_send(t[r], &m) != 0) usleep(10000);   /* until connected */
            uint8_t buf[4096];
            int got = zmq_recv(pull, buf, sizeof buf, 0);
            HCL_CHECK(got > 0 && got <= (int)sizeof buf, "recv: %s", zmq_strerror(zmq_errno()));
            save(out, "telemetry", saved++, buf, (size_t)got);
        }
    for (int r = 0; r < WORKERS; r++) telemetry_close(t[r]);
    zmq_close(pull);
    zmq_ctx_term(ctx);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && !strcmp(argv[1], "requests")) return requests(argv[2], argv[3], atoi(argv[4]));
    if (argc == 3 && !strcmp(argv[1], "telemetry")) return telemetry(argv[2]);
    fprintf(stderr, "usage: fuzz_capture requests RUN_DIR OUT_DIR COUNT | telemetry OUT_DIR\n");
    return 2;
}
