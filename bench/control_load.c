/* control_load: many operator clients against a job's control socket (issue 17, the control
 * plane under load). CLIENTS DEALER sockets, each sending `status` requests at RATE a second
 * (paced on a common clock, one loop ticking every 2 ms, no threads) for SECONDS; each reply's
 * latency is the time from its request's send. Prints one JSON line: requests sent, replies ok, error
 * replies (busy, ...), requests unanswered after 2 s, and the latency's p50, p99 and maximum
 * in ms.
 *   control_load ENDPOINT CLIENTS RATE SECONDS            (bench/control_load drives it) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

#include "control.pb-c.h"

#define PENDING 4096   /* a client's requests in flight, by id modulo this */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    void *s;
    uint64_t next;               /* ids sent: 1..next */
    double sent_at[PENDING];     /* by id % PENDING; 0: answered */
} loader;

/* Every reply waiting on c: its latency into lat (n of cap), its kind counted. */
static void drain(loader *c, double *lat, size_t *n, size_t cap, long *ok, long *err) {
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, c->s, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return;
        }
        Hcl__ControlReply *r = hcl__control_reply__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
        zmq_msg_close(&m);
        if (!r) {
            (*err)++;
            continue;
        }
        double *at = &c->sent_at[r->id % PENDING];
        if (r->id >= 1 && r->id <= c->next && *at > 0) {
            if (*n < cap) lat[(*n)++] = now() - *at;
            *at = 0;
            if (r->ok && r->body_case == HCL__CONTROL_REPLY__BODY_STATUS) (*ok)++;
            else (*err)++;
        }
        hcl__control_reply__free_unpacked(r, NULL);
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: control_load ENDPOINT CLIENTS RATE SECONDS\n");
        return 2;
    }
    const char *ep = argv[1];
    int nc = atoi(argv[2]);
    double rate = atof(argv[3]), secs = atof(argv[4]);
    if (nc < 1 || nc > 1000 || !(rate > 0) || !(secs > 0)) {
        fprintf(stderr, "control_load: CLIENTS in 1..1000, RATE and SECONDS > 0\n");
        return 2;
    }
    void *ctx = zmq_ctx_new();
    loader *cl = calloc((size_t)nc, sizeof *cl);
    size_t cap = (size_t)(nc * rate * secs * 1.2) + 16, n = 0;
    double *lat = malloc(cap * sizeof *lat);
    if (!ctx || !cl || !lat) return 1;
    for (int i = 0; i < nc; i++) {
        cl[i].s = zmq_socket(ctx, ZMQ_DEALER);
        int zero = 0;
        zmq_setsockopt(cl[i].s, ZMQ_LINGER, &zero, sizeof zero);
        if (zmq_connect(cl[i].s, ep) != 0) {
            fprintf(stderr, "control_load: %s: %s\n", ep, zmq_strerror(zmq_errno()));
            return 1;
        }
    }
    Hcl__StatusRequest st = HCL__STATUS_REQUEST__INIT;
    long sent = 0, ok = 0, err = 0;
    const double t0 = now(), gap = 1.0 / rate;
    /* One tick every 2 ms: send what is due, take every reply waiting. No zmq_poll over the
     * clients (a poll call checks every socket's mailbox in the kernel): the generator's own
     * CPU comes out of the job's cores, and a reply read up to 2 ms late only overstates its
     * latency. */
    for (double t = now(); t < t0 + secs + 2.0; t = now()) {
        for (int i = 0; t < t0 + secs && i < nc; i++) {
            /* client i's k-th request is due at t0 + (k + i / nc) gap: the clients interleave */
            while (t0 + ((double)cl[i].next + (double)i / nc) * gap <= t) {
                Hcl__ControlRequest rq = HCL__CONTROL_REQUEST__INIT;
                rq.id = ++cl[i].next;
                rq.version = HCL__CONTROL_VERSION__CONTROL_VERSION_1;
                rq.body_case = HCL__CONTROL_REQUEST__BODY_STATUS;
                rq.status = &st;
                uint8_t buf[64];
                size_t len = hcl__control_request__pack(&rq, buf);
                cl[i].sent_at[rq.id % PENDING] = now();
                if (zmq_send(cl[i].s, buf, len, ZMQ_DONTWAIT) >= 0) sent++;
            }
        }
        for (int i = 0; i < nc; i++) drain(&cl[i], lat, &n, cap, &ok, &err);
        if (t >= t0 + secs && ok + err >= sent) break;
        struct timespec tick = {0, 2000000};
        nanosleep(&tick, NULL);
    }
    qsort(lat, n, sizeof *lat, cmp);
    double p50 = n ? lat[n / 2] : -1, p99 = n ? lat[(size_t)(0.99 * (double)(n - 1))] : -1, mx = n ? lat[n - 1] : -1;
    printf("{\"clients\": %d, \"rate\": %g, \"seconds\": %g, \"sent\": %ld, \"ok\": %ld, \"errors\": %ld, "
           "\"unanswered\": %ld, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f}\n",
           nc, rate, secs, sent, ok, err, sent - ok - err, 1e3 * p50, 1e3 * p99, 1e3 * mx);
    for (int i = 0; i < nc; i++) zmq_close(cl[i].s);
    zmq_ctx_term(ctx);
    free(cl);
    free(lat);
    return 0;
}
