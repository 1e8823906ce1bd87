/* hclctl_client: hclctl's connection to a job (tools/hclctl.h). Where to connect (--endpoint,
 * or RUN_DIR/control.endpoint with its CURVE server key), the client's CURVE keys, the DEALER
 * that carries ControlRequests and their replies, and the SUB sockets of watch. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "hclctl.h"
#include "util.h"

void client_read_key(const char *path, int secret, char key[41]) {
    FILE *f = fopen(path, "r");
    if (!f) fail(EXIT_USAGE, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (secret && fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
        fail(EXIT_USAGE, "%s: mode %04o lets other users read the secret key (chmod 600 %s)", path,
             (unsigned)(st.st_mode & 07777), path);
    char line[512];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *p = line + strspn(line, " \t\r\n");
        if (!*p || *p == '#') continue;
        p[strcspn(p, " \t\r\n")] = 0;   /* '#' is a Z85 digit: comments only start a line */
        uint8_t raw[32];
        if (strlen(p) != 40 || !zmq_z85_decode(raw, p))
            fail(EXIT_USAGE, "%s:%d: not a Z85 %s key (40 characters)", path, lineno,
                 secret ? "secret" : "public");
        memcpy(key, p, 41);
        fclose(f);
        return;
    }
    fclose(f);
    fail(EXIT_USAGE, "%s: no key in the file", path);
}

/* tcp://HOST:PORT with HOST other than loopback */
static int endpoint_open(const char *ep) {
    if (strncmp(ep, "tcp://", 6) != 0) return 0;
    const char *h = ep + 6;
    return !(strncmp(h, "127.", 4) == 0 || strncmp(h, "localhost:", 10) == 0 || strncmp(h, "[::1]:", 6) == 0);
}

/* RUN_DIR/control.endpoint: line 1 the endpoint, maybe a `curve-server-key KEY` line. */
int client_read_endpoint(client *cl, const char *run_dir, char file_key[41], char *err) {
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/control.endpoint", run_dir);
    file_key[0] = 0;
    cl->endpoint[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return hcl_err(err, "%s: %s (is the job running? pass --run-dir DIR or --endpoint E)", path,
                       errno == ENOENT ? "not found" : strerror(errno));
    char line[EP_MAX + 64];
    int n = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (n++ == 0 && snprintf(cl->endpoint, sizeof cl->endpoint, "%s", line) >= (int)sizeof cl->endpoint)
            rc = hcl_err(err, "%s: endpoint longer than %d bytes", path, EP_MAX - 1);
        else if (!strncmp(line, "curve-server-key ", 17) && strlen(line + 17) == 40)
            memcpy(file_key, line + 17, 41);
    }
    fclose(f);
    if (rc == 0 && !cl->endpoint[0]) rc = hcl_err(err, "%s: empty (is the job starting?)", path);
    return rc;
}

void client_keys(client *cl, const char *file_key) {
    const hclctl_flags *o = &hclctl_flag;
    if (o->curve_key[0]) {
        client_read_key(o->curve_key, 1, cl->secret_key);
        if (zmq_curve_public(cl->public_key, cl->secret_key) != 0)
            fail(EXIT_USAGE, "%s: not a CURVE secret key", o->curve_key);
        if (o->server_key[0]) client_read_key(o->server_key, 0, cl->server_public);
        else if (file_key[0]) memcpy(cl->server_public, file_key, 41);
        else fail(EXIT_USAGE, "--curve-key needs --server-key SERVER.pub (the coordinator's public key)");
        cl->curve = 1;
    } else if (o->server_key[0]) {
        fail(EXIT_USAGE, "--server-key needs --curve-key CLIENT.key (this client's secret key)");
    } else if (file_key[0]) {
        fail(EXIT_USAGE, "the job at %s takes CURVE clients only: pass --curve-key CLIENT.key", cl->endpoint);
    } else if (endpoint_open(cl->endpoint)) {
        fail(EXIT_USAGE, "%s is not a loopback endpoint: the coordinator answers CURVE clients only "
             "there (pass --curve-key CLIENT.key --server-key SERVER.pub)", cl->endpoint);
    }
}

void client_resolve(client *cl, const char *run_dir) {
    char file_key[41] = "", err[HCL_ERR_MAX];
    if (hclctl_flag.endpoint[0]) {
        if (snprintf(cl->endpoint, sizeof cl->endpoint, "%s", hclctl_flag.endpoint) >= (int)sizeof cl->endpoint)
            fail(EXIT_USAGE, "--endpoint: longer than %d bytes", EP_MAX - 1);
    } else if (client_read_endpoint(cl, run_dir, file_key, err) != 0) {
        fail(EXIT_NOANSWER, "%s", err);
    }
    client_keys(cl, file_key);
}

void *client_socket(client *cl, int type, const char *ep) {
    void *s = zmq_socket(cl->ctx, type);
    HCL_CHECK(s, "zmq_socket: %s", zmq_strerror(zmq_errno()));
    int zero = 0, one = 1;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (strstr(ep, "://[")) zmq_setsockopt(s, ZMQ_IPV6, &one, sizeof one);
    if (cl->curve) {
        HCL_CHECK(zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, cl->server_public, 41) == 0 &&
                  zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, cl->public_key, 41) == 0 &&
                  zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, cl->secret_key, 41) == 0,
                  "CURVE keys: %s", zmq_strerror(zmq_errno()));
    }
    if (zmq_connect(s, ep) != 0) fail(EXIT_NOANSWER, "%s: connect: %s", ep, zmq_strerror(zmq_errno()));
    return s;
}

void client_open(client *cl, void *ctx) {
    cl->ctx = ctx;
    cl->dealer = client_socket(cl, ZMQ_DEALER, cl->endpoint);
    cl->next_id = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL);
}

void client_close(client *cl) {
    if (cl->dealer) zmq_close(cl->dealer);
    cl->dealer = NULL;
    memset(cl->secret_key, 0, sizeof cl->secret_key);
}

uint64_t client_send(client *cl, Hcl__ControlRequest *rq) {
    rq->id = ++cl->next_id;
    rq->version = HCL__CONTROL_VERSION__CONTROL_VERSION_1;
    uint8_t buf[4096];
    size_t n = hcl__control_request__get_packed_size(rq);
    HCL_CHECK(n <= sizeof buf, "request of %zu bytes", n);
    hcl__control_request__pack(rq, buf);
    return zmq_send(cl->dealer, buf, n, ZMQ_DONTWAIT) < 0 ? 0 : rq->id;
}

Hcl__ControlReply *client_take(client *cl, uint64_t id) {
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, cl->dealer, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return NULL;
        }
        Hcl__ControlReply *r = hcl__control_reply__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
        zmq_msg_close(&m);
        if (r && r->id == id) return r;
        if (r) hcl__control_reply__free_unpacked(r, NULL);   /* a stale reply */
    }
}

Hcl__ControlReply *client_call(client *cl, Hcl__ControlRequest *rq) {
    uint64_t id = client_send(cl, rq);
    if (!id) return NULL;
    double deadline = hcl_now() + hclctl_flag.timeout / 1e3;
    for (;;) {
        double left = deadline - hcl_now();
        if (left <= 0 || hclctl_interrupted) return NULL;
        zmq_pollitem_t it = {cl->dealer, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, (long)(left * 1e3) + 1) <= 0) continue;
        Hcl__ControlReply *r = client_take(cl, id);
        if (r) return r;
    }
}

void no_answer(const client *cl) {
    fail(EXIT_NOANSWER, "no answer from %s within %lld ms (is the job running?%s)", cl->endpoint,
         (long long)hclctl_flag.timeout, cl->curve ? " is this client's key in its client list?" : "");
}
