/* control: the control plane's life (control.h): open it (check the arguments, load the CURVE
 * keys, make the sockets, bind), serve it (control_service: the one zmq_poll the coordinator
 * sleeps in, then a bounded amount of ZAP, requests and telemetry), publish the per-step watch
 * events, close it. The work on each socket is done in control_bind.c, control_auth.c,
 * control_request.c and control_telemetry.c (control_internal.h). */
#include "control_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "control.pb-c.h"
#include "log.h"
#include "util.h"

#define SAME(a, b) ((int)(a) == (int)(b))
_Static_assert(SAME(CTL_ERROR_BAD_VERSION, HCL__CONTROL_ERROR__CONTROL_ERROR_BAD_VERSION) &&
               SAME(CTL_ERROR_BAD_REQUEST, HCL__CONTROL_ERROR__CONTROL_ERROR_BAD_REQUEST) &&
               SAME(CTL_ERROR_UNKNOWN_TYPE, HCL__CONTROL_ERROR__CONTROL_ERROR_UNKNOWN_TYPE) &&
               SAME(CTL_ERROR_BAD_KEY, HCL__CONTROL_ERROR__CONTROL_ERROR_BAD_KEY) &&
               SAME(CTL_ERROR_BAD_VALUE, HCL__CONTROL_ERROR__CONTROL_ERROR_BAD_VALUE) &&
               SAME(CTL_ERROR_BUSY, HCL__CONTROL_ERROR__CONTROL_ERROR_BUSY) &&
               SAME(CTL_ERROR_REFUSED, HCL__CONTROL_ERROR__CONTROL_ERROR_REFUSED) &&
               SAME(CTL_ERROR_FAILED, HCL__CONTROL_ERROR__CONTROL_ERROR_FAILED), "ctl_error = ControlError");
_Static_assert(SAME(HCL_RUN_STATE_STARTING, HCL__RUN_STATE__RUN_STATE_STARTING) &&
               SAME(HCL_RUN_STATE_RUNNING, HCL__RUN_STATE__RUN_STATE_RUNNING) &&
               SAME(HCL_RUN_STATE_PAUSED, HCL__RUN_STATE__RUN_STATE_PAUSED) &&
               SAME(HCL_RUN_STATE_CHECKPOINTING, HCL__RUN_STATE__RUN_STATE_CHECKPOINTING) &&
               SAME(HCL_RUN_STATE_STOPPING, HCL__RUN_STATE__RUN_STATE_STOPPING) &&
               SAME(HCL_RUN_STATE_DONE, HCL__RUN_STATE__RUN_STATE_DONE), "hcl_run_state = RunState");

/* ---- socket helpers (control_internal.h) ---------------------------------------------------- */

void control_clean_text(char *dst, size_t cap, const char *src) {
    size_t n = 0;
    for (; src && *src && n + 4 < cap && n < 48; src++)
        dst[n++] = (*src >= 0x20 && *src < 0x7f) ? *src : '?';
    if (src && *src && n + 4 < cap) { memcpy(dst + n, "...", 3); n += 3; }
    dst[n] = 0;
}

void control_sockopt_int(void *s, int opt, int v) {
    HCL_CHECK(zmq_setsockopt(s, opt, &v, sizeof v) == 0, "zmq_setsockopt(%d, %d): %s", opt, v,
              zmq_strerror(zmq_errno()));
}

void *control_socket(void *ctx, int type, int ipv6) {
    void *s = zmq_socket(ctx, type);
    HCL_CHECK(s, "zmq_socket(%d): %s", type, zmq_strerror(zmq_errno()));
    control_sockopt_int(s, ZMQ_LINGER, 0);
    control_sockopt_int(s, ZMQ_SNDTIMEO, 0);
    if (ipv6) control_sockopt_int(s, ZMQ_IPV6, 1);
    return s;
}

void control_last_endpoint(void *s, char *out, size_t cap) {
    size_t n = cap;
    HCL_CHECK(zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, out, &n) == 0, "zmq_getsockopt(LAST_ENDPOINT): %s",
              zmq_strerror(zmq_errno()));
}

/* ---- open ----------------------------------------------------------------------------------- */

void control_status_init(hcl_status *st) {
    memset(st, 0, sizeof *st);
    st->state = HCL_RUN_STATE_STARTING;
    st->loss = NAN;
    st->lr_scale = 1.0;
    st->eta_s = -1;
    st->last_checkpoint_step = -1;
}

/* The endpoint policy: CURVE needs both key files, an endpoint other hosts can reach needs CURVE.
 * Fills *kind and host (a tcp endpoint's host). Returns 0, or -1 with err. */
static int check_open_args(const char *endpoint, int have_secret, int have_clients,
                           enum control_ep_kind *kind, char *host, size_t hostcap, char *err) {
    *kind = CONTROL_EP_IPC;
    if (endpoint && control_endpoint_kind(endpoint, kind, host, hostcap, err) != 0) return -1;
    if (have_secret != have_clients)
        return hcl_err(err, "control: CURVE needs both a server secret key file and a client keys "
                       "file (--control-secret and --control-clients)");
    if (*kind == CONTROL_EP_TCP_OPEN && !have_secret)
        return hcl_err(err, "%s: a control endpoint other hosts can reach needs CURVE: pass "
                       "--control-secret SERVER.key and --control-clients FILE (keys from hclctl "
                       "keygen), or use ipc or tcp://127.0.0.1:PORT", endpoint);
    if (have_secret && !zmq_has("curve"))
        return hcl_err(err, "control: this libzmq has no CURVE support");
    return 0;
}

/* The context and the sockets: the ZAP handler first (CURVE handshakes ask it, and with no
 * handler ZeroMQ lets anyone in), then the ROUTER and the PUB, CURVE servers when secret is
 * a key (""). */
static void make_sockets(hcl_control *c, const char *secret, int ipv6) {
    c->ctx = zmq_ctx_new();
    HCL_CHECK(c->ctx, "zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
    HCL_CHECK(zmq_ctx_set(c->ctx, ZMQ_BLOCKY, 0) == 0, "zmq_ctx_set(BLOCKY)");
    c->zap = control_socket(c->ctx, ZMQ_REP, 0);
    HCL_CHECK(zmq_bind(c->zap, "inproc://zeromq.zap.01") == 0, "zmq_bind(inproc://zeromq.zap.01): %s",
              zmq_strerror(zmq_errno()));
    c->router = control_socket(c->ctx, ZMQ_ROUTER, ipv6);
    c->pub = control_socket(c->ctx, ZMQ_PUB, ipv6);
    int64_t maxmsg = CONTROL_MSG_MAX;
    HCL_CHECK(zmq_setsockopt(c->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) == 0, "MAXMSGSIZE");
    control_sockopt_int(c->router, ZMQ_ROUTER_MANDATORY, 0);
    control_sockopt_int(c->router, ZMQ_RCVHWM, 1000);
    control_sockopt_int(c->router, ZMQ_SNDHWM, 1000);
    control_sockopt_int(c->pub, ZMQ_SNDHWM, 1000);
    int64_t submax = 1024;   /* subscriptions are the only thing a SUB sends */
    zmq_setsockopt(c->pub, ZMQ_MAXMSGSIZE, &submax, sizeof submax);
    if (!c->curve) return;
    void *ss[2] = {c->router, c->pub};
    for (int i = 0; i < 2; i++) {
        control_sockopt_int(ss[i], ZMQ_CURVE_SERVER, 1);
        HCL_CHECK(zmq_setsockopt(ss[i], ZMQ_CURVE_SECRETKEY, secret, 41) == 0, "CURVE_SECRETKEY");
        HCL_CHECK(zmq_setsockopt(ss[i], ZMQ_ZAP_DOMAIN, CONTROL_ZAP_DOMAIN,
                                 strlen(CONTROL_ZAP_DOMAIN)) == 0, "ZAP_DOMAIN");
    }
}

/* Everything control_open made before it failed (or all of it). */
static void control_free(hcl_control *c) {
    if (c->router) zmq_close(c->router);
    if (c->pub) zmq_close(c->pub);
    if (c->zap) zmq_close(c->zap);
    if (c->pull) zmq_close(c->pull);
    if (c->ctx) zmq_ctx_term(c->ctx);   /* LINGER 0 everywhere: returns at once */
    control_remove_ipc_files(c);
    free(c->clients);
    free(c->workers);
    free(c->median_scratch);
    free(c->status_ws);
    free(c->status_wp);
    free(c->status_pack);
    free(c);
}

int control_open(hcl_control **cp, const char *endpoint, const char *run_dir,
                 const char *curve_secret_file, const char *curve_clients_file, int watch_port, char *err) {
    *cp = NULL;
    if (endpoint && !*endpoint) endpoint = NULL;
    if (!run_dir || !*run_dir) return hcl_err(err, "control: no run directory");
    enum control_ep_kind kind;
    char host[CONTROL_ENDPOINT_MAX] = "";
    int have_secret = curve_secret_file && *curve_secret_file;
    int have_clients = curve_clients_file && *curve_clients_file;
    if (check_open_args(endpoint, have_secret, have_clients, &kind, host, sizeof host, err) != 0)
        return -1;
    hcl_control *c = hcl_calloc(1, sizeof *c);
    if (!realpath(run_dir, c->run_dir)) {
        int e = errno;
        free(c);
        return hcl_err(err, "%s: run directory: %s", run_dir, strerror(e));
    }
    snprintf(c->endpoint_file, sizeof c->endpoint_file, "%s/control.endpoint", c->run_dir);
    char secret[CONTROL_KEY_Z85] = "";
    if (have_secret && control_auth_load(c, curve_secret_file, curve_clients_file, secret, err) != 0) {
        control_free(c);
        return -1;
    }
    make_sockets(c, secret, host[0] == '[');
    memset(secret, 0, sizeof secret);
    if (control_bind(c, endpoint, kind, host, watch_port, err) != 0) {
        control_free(c);
        return -1;
    }
    *cp = c;
    return 0;
}

void control_log(const hcl_control *c) {
    char tel[CONTROL_ENDPOINT_MAX + 16] = "";
    if (c->pull) snprintf(tel, sizeof tel, ", telemetry %s", c->telemetry_endpoint);
    if (strcmp(c->endpoint, c->bound_endpoint) != 0)
        LOG_INFO("control: %s, bound as %s (watch %s%s)%s", c->endpoint, c->bound_endpoint, c->watch_endpoint,
                 tel, c->curve ? ", CURVE" : "");
    else
        LOG_INFO("control: %s (watch %s%s)%s", c->endpoint, c->watch_endpoint, tel, c->curve ? ", CURVE" : "");
}

const char *control_endpoint(const hcl_control *c) { return c->endpoint; }
const char *control_watch_endpoint(const hcl_control *c) { return c->watch_endpoint; }

/* ---- service, publish, close ------------------------------------------------------------------ */

int control_service(hcl_control *c, const hcl_status *st, int timeout_ms) {
    /* Within CONTROL_GATHER_MS of the last burst, if it answered several requests (clients are
     * asking at once), the ROUTER does not wake the poll: requests arriving meanwhile are answered
     * together when it is over (one wakeup and one packed STATUS for many clients, here and in
     * the clients). One client asking in turn is answered at once. */
    const double gather = c->last_burst >= CONTROL_GATHER_MIN
                              ? CONTROL_GATHER_MS * 1e-3 - (hcl_now() - c->last_request) : 0.0;
    zmq_pollitem_t items[3] = {
        {c->router, 0, gather > 0 ? 0 : ZMQ_POLLIN, 0}, {c->zap, 0, ZMQ_POLLIN, 0},
        {c->pull, 0, ZMQ_POLLIN, 0}};
    int nitems = c->pull ? 3 : 2, wait = timeout_ms < 0 ? 0 : timeout_ms;
    if (gather > 0 && wait > (int)ceil(gather * 1e3)) wait = (int)ceil(gather * 1e3);
    const int rc = zmq_poll(items, nitems, wait);
    /* EINTR: a signal for the loop to see; nothing ready: done, unless the ROUTER was left out */
    if (rc < 0 || (rc == 0 && gather <= 0)) return 0;
    control_status_stale(c);
    int handled = 0, requests = 0;
    /* ZAP first: handshakes waiting on it hold up clients. */
    for (int i = 0; i < CONTROL_SERVICE_BUDGET && control_zap_one(c); i++) handled++;
    for (; requests < CONTROL_SERVICE_BUDGET && control_router_one(c, st); requests++) {}
    if (requests) c->last_request = hcl_now();
    c->last_burst = requests;
    handled += requests + control_telemetry_take(c);
    return handled;
}

void control_publish(hcl_control *c, const hcl_status *st) {
    Hcl__StepEvent ev = HCL__STEP_EVENT__INIT;
    ev.step = st->step;
    ev.total_steps = st->total_steps;
    ev.epoch = st->epoch;
    ev.loss = st->loss;
    ev.lr = st->lr;
    ev.logit_scale = st->logit_scale;
    ev.samples_per_s = st->samples_per_s;
    ev.state = (Hcl__RunState)st->state;
    ev.eta_s = st->eta_s;
    ev.time = hcl_wall();
    uint8_t buf[256];
    size_t n = hcl__step_event__get_packed_size(&ev);
    HCL_CHECK(n <= sizeof buf, "StepEvent of %zu bytes", n);
    hcl__step_event__pack(&ev, buf);
    zmq_send(c->pub, buf, n, ZMQ_DONTWAIT);   /* PUB drops when a watcher lags */
}

void control_close(hcl_control *c) {
    if (!c) return;
    unlink(c->endpoint_file);
    control_free(c);
}
