/* test_control_auth: who may talk to the control plane. Endpoint policy (no tcp off loopback
 * without CURVE, clear errors for malformed endpoints), status over tcp on loopback (IPv4,
 * localhost, IPv6); CURVE: key-file checks, the listed key answered, an unknown key and a plain
 * client ignored, the listed client still served, watch events only to the listed key.
 * Wildcard binds (*, 0.0.0.0, [::]) name this host in control.endpoint, the watch endpoint and
 * the telemetry endpoint, and a client connects there; --watch-port and --telemetry-port bind
 * the ports asked for, a port taken is an error naming the flag and the port. */
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "check.h"
#include "test_control.h"
#include "util.h"

/* check.h counts per file: this file's counts, for main */
void auth_tally(int *checks, int *failures) {
    *checks += check_count;
    *failures += check_failures;
}

/* ---- endpoint policy and tcp --------------------------------------------------------------- */

void test_tcp_policy(void) {
    char dir[512], err[HCL_ERR_MAX];
    kit_make_dir(dir, sizeof dir, "policy");
    const char *refused[] = {"tcp://0.0.0.0:0", "tcp://*:5555", "tcp://192.0.2.1:5555",
                             "tcp://eth0:5555", "tcp://127.0.0.1.example.com:5555"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        hcl_control *c;
        int rc = control_open(&c, refused[i], dir, NULL, NULL, 0, err);
        CHECK(rc != 0 && strstr(err, "CURVE") && strstr(err, refused[i]), "%s without keys: %s", refused[i],
              rc ? err : "opened");
        if (!rc) control_close(c);
        if (i == 0) printf("  %s\n", err);
    }
    const char *bad[] = {"tcp://127.0.0.1", "tcp://127.0.0.1:99999", "inproc://x", "ipc://relative.sock",
                         "udp://127.0.0.1:5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hcl_control *c;
        int rc = control_open(&c, bad[i], dir, NULL, NULL, 0, err);
        CHECK(rc != 0 && strstr(err, bad[i]), "%s: want a clear error, got %s", bad[i], rc ? err : "opened");
        if (!rc) control_close(c);
    }
    hcl_control *c;
    int rc = control_open(&c, "tcp://127.0.0.1:*", dir, "only-a-secret.key", NULL, 0, err);
    CHECK(rc != 0 && strstr(err, "both"), "a secret without a clients file: %s", rc ? err : "opened");
    if (!rc) control_close(c);

    const char *ok[] = {"tcp://127.0.0.1:*", "tcp://localhost:*", "tcp://[::1]:*", "tcp://127.0.0.1:0"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        rc = control_open(&c, ok[i], dir, NULL, NULL, 0, err);
        if (rc != 0 && strstr(ok[i], "::1")) {
            printf("  skip %s: %s\n", ok[i], err);
            continue;
        }
        CHECK(rc == 0, "%s: %s", ok[i], err);
        if (rc) continue;
        CHECK(!strncmp(control_endpoint(c), "tcp://", 6) && !strstr(control_endpoint(c), ":*") &&
              strncmp(control_watch_endpoint(c), "tcp://", 6) == 0 &&
              strcmp(control_endpoint(c), control_watch_endpoint(c)) != 0,
              "%s: bound %s, watch %s", ok[i], control_endpoint(c), control_watch_endpoint(c));
        void *ctx = zmq_ctx_new();
        void *cli = kit_client_socket(ctx, ZMQ_DEALER, control_endpoint(c), NULL, NULL);
        hcl_status st;
        kit_fake_status(&st);
        Hcl__ControlReply *r = kit_call(c, &st, cli, RQ_STATUS, 5, NULL, NULL);
        CHECK(r && r->ok && r->status->step == 1200, "status over %s", control_endpoint(c));
        kit_free_reply(r);
        zmq_close(cli);
        zmq_ctx_term(ctx);
        control_close(c);
    }
}

/* ---- CURVE --------------------------------------------------------------------------------- */

/* A server key pair and two client key pairs (g: listed, b: not). */
typedef struct {
    char dir[512], secf[600], clif[600], clients_text[512];
    char spub[41], ssec[41], gpub[41], gsec[41], bpub[41], bsec[41];
} curve_keys;

/* Key files: a world-readable secret key and a bad clients file are refused; a wildcard
 * endpoint is fine with CURVE. Leaves good files behind. */
static void check_key_files(curve_keys *k) {
    char err[HCL_ERR_MAX], text[512];
    snprintf(k->secf, sizeof k->secf, "%s/server.key", k->dir);
    snprintf(k->clif, sizeof k->clif, "%s/clients", k->dir);
    snprintf(text, sizeof text, "# server\n%s\n", k->ssec);
    kit_write_text(k->secf, text, 0644);
    snprintf(k->clients_text, sizeof k->clients_text, "# authorised clients\n\n   %s   # alice\n", k->gpub);
    kit_write_text(k->clif, k->clients_text, 0644);
    hcl_control *c;
    int rc = control_open(&c, "tcp://127.0.0.1:*", k->dir, k->secf, k->clif, 0, err);
    CHECK(rc != 0 && strstr(err, "chmod 600"), "a world-readable secret key: %s", rc ? err : "opened");
    if (!rc) control_close(c);
    chmod(k->secf, 0600);
    kit_write_text(k->clif, "not-a-key\n", 0644);
    rc = control_open(&c, "tcp://127.0.0.1:*", k->dir, k->secf, k->clif, 0, err);
    CHECK(rc != 0 && strstr(err, "clients:1"), "a bad clients file: %s", rc ? err : "opened");
    if (!rc) control_close(c);
    kit_write_text(k->clif, k->clients_text, 0644);
    rc = control_open(&c, "tcp://0.0.0.0:*", k->dir, k->secf, k->clif, 0, err);
    CHECK(rc == 0, "tcp://0.0.0.0:* with CURVE: %s", err);
    if (!rc) control_close(c);
}

/* watch with CURVE: the listed key gets events, the unknown key none */
static void check_curve_watch(hcl_control *c, const hcl_status *st, void *ctx, void *good,
                              const curve_keys *k) {
    Hcl__ControlReply *r = kit_call(c, st, good, RQ_WATCH, 20, NULL, NULL);
    if (!r || !r->ok) {
        CHECK(0, "CURVE watch request");
        kit_free_reply(r);
        return;
    }
    void *sg = kit_client_socket(ctx, ZMQ_SUB, r->watch->endpoint, k->spub, k->gsec);
    void *sb = kit_client_socket(ctx, ZMQ_SUB, r->watch->endpoint, k->spub, k->bsec);
    zmq_setsockopt(sg, ZMQ_SUBSCRIBE, "", 0);
    zmq_setsockopt(sb, ZMQ_SUBSCRIBE, "", 0);
    int got_good = 0, got_bad = 0;
    for (int i = 0; i < 150; i++) {
        control_service(c, st, 2);
        control_publish(c, st);
        uint8_t eb[512];
        while (zmq_recv(sg, eb, sizeof eb, ZMQ_DONTWAIT) > 0) got_good++;
        while (zmq_recv(sb, eb, sizeof eb, ZMQ_DONTWAIT) > 0) got_bad++;
    }
    CHECK(got_good > 0 && got_bad == 0, "CURVE watch: %d events to the listed key, %d to the unknown",
          got_good, got_bad);
    zmq_close(sg);
    zmq_close(sb);
    kit_free_reply(r);
}

/* The listed client is answered, an unknown key and a plain client get nothing (and their
 * stop is not queued), the listed client is still answered after them. */
static void check_curve_clients(hcl_control *c, const curve_keys *k) {
    hcl_status st;
    kit_fake_status(&st);
    void *ctx = zmq_ctx_new();
    void *good = kit_client_socket(ctx, ZMQ_DEALER, control_endpoint(c), k->spub, k->gsec);
    void *badc = kit_client_socket(ctx, ZMQ_DEALER, control_endpoint(c), k->spub, k->bsec);
    void *plain = kit_client_socket(ctx, ZMQ_DEALER, control_endpoint(c), NULL, NULL);
    Hcl__ControlReply *r = kit_call(c, &st, good, RQ_STATUS, 1, NULL, NULL);
    CHECK(r && r->ok, "CURVE: the listed client is answered");
    kit_free_reply(r);
    kit_send_request(badc, RQ_STOP, 2, NULL, NULL, 0);
    kit_send_request(plain, RQ_STOP, 3, NULL, NULL, 0);
    r = kit_await_reply(c, &st, badc, 700);
    CHECK(!r, "CURVE: an unknown key got a reply");
    kit_free_reply(r);
    r = kit_await_reply(c, &st, plain, 300);
    CHECK(!r, "CURVE: a client without CURVE got a reply");
    kit_free_reply(r);
    ctl_request rq;
    CHECK(!control_next(c, &rq), "CURVE: a refused client's stop was queued");
    for (int i = 0; i < 3; i++) {
        r = kit_call(c, &st, good, RQ_STATUS, 10 + (uint64_t)i, NULL, NULL);
        CHECK(r && r->ok && r->id == 10 + (uint64_t)i, "CURVE: the listed client still answered");
        kit_free_reply(r);
    }
    check_curve_watch(c, &st, ctx, good, k);
    zmq_close(good);
    zmq_close(badc);
    zmq_close(plain);
    zmq_ctx_term(ctx);
}

/* A run directory NAME with the server's, a good client's and a bad client's key pairs and files. */
static void make_keys(curve_keys *k, const char *name) {
    memset(k, 0, sizeof *k);
    kit_make_dir(k->dir, sizeof k->dir, name);
    HCL_CHECK(zmq_curve_keypair(k->spub, k->ssec) == 0 && zmq_curve_keypair(k->gpub, k->gsec) == 0 &&
              zmq_curve_keypair(k->bpub, k->bsec) == 0, "zmq_curve_keypair");
    check_key_files(k);
}

void test_curve(void) {
    curve_keys k;
    make_keys(&k, "curve");
    char err[HCL_ERR_MAX];
    hcl_control *c;
    int rc = control_open(&c, "tcp://127.0.0.1:*", k.dir, k.secf, k.clif, 0, err);
    CHECK(rc == 0, "CURVE control_open: %s", err);
    if (rc) return;
    char path[600], line[256], keyline[256] = "", want[128];
    snprintf(path, sizeof path, "%s/control.endpoint", k.dir);
    FILE *f = fopen(path, "r");
    if (f) {
        if (fgets(line, sizeof line, f) && fgets(keyline, sizeof keyline, f)) keyline[strcspn(keyline, "\n")] = 0;
        fclose(f);
    }
    snprintf(want, sizeof want, "curve-server-key %s", k.spub);
    CHECK(!strcmp(keyline, want), "control.endpoint key line '%s'", keyline);
    check_curve_clients(c, &k);
    control_close(c);
}

/* ---- wildcards and ports ---------------------------------------------------------------------- */

/* A tcp port free now (bound to port 0 on every interface, then let go). */
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t n = sizeof a;
    HCL_CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
              getsockname(fd, (struct sockaddr *)&a, &n) == 0, "free_port");
    close(fd);
    return ntohs(a.sin_port);
}

/* What a wildcard must become: this host's name when it resolves, else some address (checked
 * by the connection). */
static void want_host(char *out, size_t cap) {
    char name[256];
    struct addrinfo *res = NULL;
    out[0] = 0;
    if (gethostname(name, sizeof name) != 0) return;
    if (getaddrinfo(name, NULL, NULL, &res) == 0) {
        snprintf(out, cap, "%s", name);
        freeaddrinfo(res);
    }
}

static int names_no_wildcard(const char *ep, const char *host) {
    char want[300];
    snprintf(want, sizeof want, "tcp://%s:", host);
    return !strstr(ep, "0.0.0.0") && !strstr(ep, "[::]") && !strstr(ep, "//*") &&
           (!host[0] || !strncmp(ep, want, strlen(want)));
}

/* A wildcard endpoint with CURVE: every endpoint handed out names this host, and a client
 * connecting to what control.endpoint says gets its status. */
static void check_wildcard(const curve_keys *k, const char *ep) {
    char err[HCL_ERR_MAX], host[256], path[600], line[300] = "";
    hcl_control *c;
    want_host(host, sizeof host);
    int rc = control_open(&c, ep, k->dir, k->secf, k->clif, 0, err);
    if (rc != 0 && strstr(ep, "::")) {
        printf("  skip %s: %s\n", ep, err);
        return;
    }
    CHECK(rc == 0, "%s with CURVE: %s", ep, err);
    if (rc) return;
    snprintf(path, sizeof path, "%s/control.endpoint", k->dir);
    kit_read_first_line(path, line, sizeof line);
    CHECK(names_no_wildcard(control_endpoint(c), host) && !strcmp(line, control_endpoint(c)) &&
          names_no_wildcard(control_watch_endpoint(c), host),
          "%s: control.endpoint '%s', control %s, watch %s (want host '%s')", ep, line, control_endpoint(c),
          control_watch_endpoint(c), host);
    char tel[CONTROL_ENDPOINT_MAX], spub[41], csec[41];
    rc = control_telemetry_open(c, 1, NULL, 0, tel, spub, csec, err);
    CHECK(rc == 0 && names_no_wildcard(tel, host), "%s: telemetry endpoint %s", ep, rc ? err : tel);
    hcl_status st;
    kit_fake_status(&st);
    void *ctx = zmq_ctx_new();
    void *cli = kit_client_socket(ctx, ZMQ_DEALER, line, k->spub, k->gsec);
    Hcl__ControlReply *r = kit_call(c, &st, cli, RQ_STATUS, 7, NULL, NULL);
    CHECK(r && r->ok, "%s: status over %s", ep, line);
    kit_free_reply(r);
    zmq_close(cli);
    zmq_ctx_term(ctx);
    control_close(c);
}

/* --watch-port and --telemetry-port: bound where asked; taken, an error naming flag and port. */
static void check_ports(const char *dir) {
    char err[HCL_ERR_MAX], want[64], tel[CONTROL_ENDPOINT_MAX], spub[41], csec[41];
    const int wp = free_port(), tp = free_port();
    hcl_control *c, *c2;
    int rc = control_open(&c, "tcp://127.0.0.1:*", dir, NULL, NULL, wp, err);
    snprintf(want, sizeof want, "tcp://127.0.0.1:%d", wp);
    CHECK(rc == 0 && !strcmp(control_watch_endpoint(c), want), "--watch-port %d: %s", wp,
          rc ? err : control_watch_endpoint(c));
    if (rc) return;
    rc = control_telemetry_open(c, 2, NULL, tp, tel, spub, csec, err);
    snprintf(want, sizeof want, ":%d", tp);
    CHECK(rc == 0 && strlen(tel) > strlen(want) && !strcmp(tel + strlen(tel) - strlen(want), want),
          "--telemetry-port %d: %s", tp, rc ? err : tel);
    char dir2[512];
    kit_make_dir(dir2, sizeof dir2, "ports2");
    rc = control_open(&c2, "tcp://127.0.0.1:*", dir2, NULL, NULL, wp, err);
    snprintf(want, sizeof want, "--watch-port %d: ", wp);
    CHECK(rc != 0 && !strncmp(err, want, strlen(want)) && strstr(err, "in use"), "watch port taken: %s",
          rc ? err : "opened");
    if (!rc) control_close(c2);
    rc = control_open(&c2, "tcp://127.0.0.1:*", dir2, NULL, NULL, 0, err);
    CHECK(rc == 0, "a second control: %s", err);
    if (!rc) {
        rc = control_telemetry_open(c2, 2, NULL, tp, tel, spub, csec, err);
        snprintf(want, sizeof want, "--telemetry-port %d: ", tp);
        CHECK(rc != 0 && !strncmp(err, want, strlen(want)) && strstr(err, "in use"), "telemetry port taken: %s",
              rc ? err : tel);
        control_close(c2);
    }
    control_close(c);
    rc = control_open(&c, NULL, dir, NULL, NULL, wp, err);
    CHECK(rc != 0 && strstr(err, "--watch-port") && strstr(err, "tcp"), "--watch-port with ipc: %s",
          rc ? err : "opened");
    if (!rc) control_close(c);
}

void test_endpoints(void) {
    curve_keys k;
    make_keys(&k, "wildcard");
    const char *eps[] = {"tcp://0.0.0.0:*", "tcp://*:*", "tcp://[::]:*"};
    for (size_t i = 0; i < sizeof eps / sizeof eps[0]; i++) check_wildcard(&k, eps[i]);
    char dir[512];
    kit_make_dir(dir, sizeof dir, "ports");
    check_ports(dir);
}
