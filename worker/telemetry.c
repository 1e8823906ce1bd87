/* telemetry: the worker's sending end of the telemetry stream (telemetry.h): a PUSH socket
 * that never blocks, and the running count of what it had to drop, carried in every message. */
#include "telemetry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "control.pb-c.h"
#include "util.h"

struct hcl_telemetry {
    void *ctx, *push;
    int rank;
    uint64_t dropped;           /* messages zmq_send could not queue, since telemetry_open */
};

static int z85_key_ok(const char *k) {
    uint8_t raw[32];
    return k && strlen(k) == 40 && zmq_z85_decode(raw, k) != NULL;
}

static void set_int(void *s, int opt, int v) {
    HCL_CHECK(zmq_setsockopt(s, opt, &v, sizeof v) == 0, "zmq_setsockopt(%d, %d): %s", opt, v,
              zmq_strerror(zmq_errno()));
}

int telemetry_open(hcl_telemetry **tp, const char *endpoint, const char *server_public,
                   const char *client_secret, int rank, char *err) {
    *tp = NULL;
    if (!endpoint || !*endpoint) return hcl_err(err, "telemetry: no endpoint");
    if (rank < 0) return hcl_err(err, "telemetry: bad rank %d", rank);
    char client_public[41];
    if (server_public) {
        if (!z85_key_ok(server_public))
            return hcl_err(err, "telemetry: server public key is not a 40-character Z85 key");
        if (!z85_key_ok(client_secret) || zmq_curve_public(client_public, client_secret) != 0)
            return hcl_err(err, "telemetry: client secret key is not a 40-character Z85 key");
    }
    hcl_telemetry *t = hcl_calloc(1, sizeof *t);
    t->rank = rank;
    t->ctx = zmq_ctx_new();
    HCL_CHECK(t->ctx, "zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
    zmq_ctx_set(t->ctx, ZMQ_BLOCKY, 0);
    t->push = zmq_socket(t->ctx, ZMQ_PUSH);
    HCL_CHECK(t->push, "zmq_socket(PUSH): %s", zmq_strerror(zmq_errno()));
    set_int(t->push, ZMQ_LINGER, 0);
    set_int(t->push, ZMQ_SNDHWM, 4);
    set_int(t->push, ZMQ_SNDTIMEO, 0);
    set_int(t->push, ZMQ_IMMEDIATE, 1);
    set_int(t->push, ZMQ_RECONNECT_IVL_MAX, 5000);
    if (strstr(endpoint, "://[")) set_int(t->push, ZMQ_IPV6, 1);
    if (server_public) {
        HCL_CHECK(zmq_setsockopt(t->push, ZMQ_CURVE_SERVERKEY, server_public, 41) == 0 &&
                  zmq_setsockopt(t->push, ZMQ_CURVE_PUBLICKEY, client_public, 41) == 0 &&
                  zmq_setsockopt(t->push, ZMQ_CURVE_SECRETKEY, client_secret, 41) == 0,
                  "CURVE keys: %s", zmq_strerror(zmq_errno()));
    }
    if (zmq_connect(t->push, endpoint) != 0) {
        int e = zmq_errno();
        zmq_close(t->push);
        zmq_ctx_term(t->ctx);
        free(t);
        return hcl_err(err, "telemetry: %s: connect: %s", endpoint, zmq_strerror(e));
    }
    *tp = t;
    return 0;
}

int telemetry_send(hcl_telemetry *t, const hcl_telemetry_msg *m) {
    Hcl__Telemetry msg = HCL__TELEMETRY__INIT;
    msg.version = HCL__CONTROL_VERSION__CONTROL_VERSION_1;
    msg.rank = t->rank;
    msg.step = m->step;
    msg.compute_s = m->compute_s;
    msg.allgather_s = m->allgather_s;
    msg.reduce_scatter_s = m->reduce_scatter_s;
    msg.allreduce_s = m->allreduce_s;
    msg.wait_s = m->wait_s;
    msg.bytes = m->bytes;
    msg.rss_bytes = m->rss_bytes;
    msg.dropped = t->dropped;   /* the drops before this message reach rank 0 with it */
    msg.in_step = m->in_step;
    msg.phase = (char *)m->phase;
    msg.phase_done = m->phase_done;
    uint8_t buf[256];
    size_t n = hcl__telemetry__get_packed_size(&msg);
    HCL_CHECK(n <= sizeof buf, "Telemetry of %zu bytes", n);
    hcl__telemetry__pack(&msg, buf);
    if (zmq_send(t->push, buf, n, ZMQ_DONTWAIT) < 0) {
        t->dropped++;
        return 1;
    }
    return 0;
}

uint64_t telemetry_dropped(const hcl_telemetry *t) { return t->dropped; }

void telemetry_close(hcl_telemetry *t) {
    if (!t) return;
    zmq_close(t->push);
    zmq_ctx_term(t->ctx);
    free(t);
}

uint64_t telemetry_rss_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1) break;
    fclose(f);
    return (uint64_t)kb * 1024;
}
