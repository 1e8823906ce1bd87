/* hclctl: talk to a running hcl-train job over its control plane (proto/control.proto,
 * coordinator/control.h).
 *
 *   hclctl [--run-dir DIR | --endpoint E] status|watch|pause|resume|checkpoint|stop|set K=V
 *   hclctl keygen DIR [--name NAME]
 *
 * A DEALER socket sends one ControlRequest and waits --timeout ms for the ControlReply of the
 * same id; `watch` then subscribes to the job's PUB socket. Flags live in one table that drives
 * parsing and --help. Exit codes: 0 ok, 1 the job answered with an error (or keygen could not
 * write), 2 usage error, 3 no answer or connection problem. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "control.pb-c.h"
#include "json.h"
#include "opts.h"
#include "util.h"

#define EXIT_ERROR 1
#define EXIT_USAGE 2
#define EXIT_NOANSWER 3
#define EP_MAX 512

static void fail(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void fail(int code, const char *fmt, ...) {
    va_list ap;
    fputs("hclctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(code);
}

/* ---- flags ----------------------------------------------------------------------------------- */

typedef hcl_opt cli_option;

static char o_endpoint[PATH_MAX], o_run_dir[PATH_MAX], o_curve_key[PATH_MAX], o_server_key[PATH_MAX];
static char o_name[PATH_MAX];
static int64_t o_json, o_no_checkpoint;
static int o_help;
static int64_t o_timeout, o_count;

/* run-dir and endpoint first: main checks that they are not both given by their index */
static const cli_option options[] = {
    {"run-dir", HCL_OPT_PATH, ".", "run directory of the job: reads DIR/control.endpoint",
     HCL_OPT_AT(o_run_dir), .meta = "DIR"},
    {"endpoint", HCL_OPT_STR, "", "control endpoint (ipc://PATH, tcp://HOST:PORT) instead of the run "
     "directory's", HCL_OPT_AT(o_endpoint), .meta = "E"},
    {"json", HCL_OPT_FLAG, "0", "print JSON (watch: one object per line)", HCL_OPT_AT(o_json)},
    {"timeout", HCL_OPT_INT, "2000", "how long to wait for an answer, in ms", HCL_OPT_AT(o_timeout),
     .lo = 1, .hi = 86400000, .meta = "MS"},
    {"curve-key", HCL_OPT_PATH, "", "this client's CURVE secret key (hclctl keygen)",
     HCL_OPT_AT(o_curve_key), .meta = "FILE"},
    {"server-key", HCL_OPT_PATH, "", "the coordinator's CURVE public key (default: from "
     "control.endpoint)", HCL_OPT_AT(o_server_key), .meta = "FILE"},
    {"no-checkpoint", HCL_OPT_FLAG, "0", "stop without writing a final checkpoint",
     HCL_OPT_AT(o_no_checkpoint), .only = "stop"},
    {"count", HCL_OPT_INT, "0", "stop after N events (0: until interrupted)", HCL_OPT_AT(o_count),
     .only = "watch"},
    {"name", HCL_OPT_STR, "hcl", "key file names: DIR/NAME.key, DIR/NAME.pub", HCL_OPT_AT(o_name),
     .meta = "NAME", .only = "keygen"},
};
#define NOPTS ((int)(sizeof options / sizeof options[0]))
static const hcl_optset optset = {options, NOPTS, NULL, NULL};

typedef struct {
    const char *name, *arg, *help;
} cli_command;

static const cli_command commands[] = {
    {"status", NULL, "state, progress, settings and the per-worker table"},
    {"watch", NULL, "one line per training step until interrupted (or --count N)"},
    {"pause", NULL, "stop taking steps (the job keeps its state)"},
    {"resume", NULL, "continue after pause"},
    {"checkpoint", NULL, "write a checkpoint now"},
    {"stop", NULL, "write a final checkpoint (unless --no-checkpoint) and end the job"},
    {"set", "KEY=VALUE", "change a setting of the running job (keys below)"},
    {"keygen", "DIR", "write a CURVE key pair: DIR/NAME.key (secret, mode 0600), DIR/NAME.pub"},
};
#define NCMDS ((int)(sizeof commands / sizeof commands[0]))

static void usage(FILE *fp) {
    fprintf(fp, "usage: hclctl [--run-dir DIR | --endpoint E] [--json] [--timeout MS]\n"
                "              [--curve-key CLIENT.key --server-key SERVER.pub] COMMAND\n"
                "commands:\n");
    for (int i = 0; i < NCMDS; i++) {
        char head[64];
        snprintf(head, sizeof head, "%s%s%s", commands[i].name, commands[i].arg ? " " : "",
                 commands[i].arg ? commands[i].arg : "");
        fprintf(fp, "  %-22s %s\n", head, commands[i].help);
    }
    fprintf(fp, "set keys:\n"
                "  lr=X                   the lr now (> 0): the schedule goes on from it (lr_scale =\n"
                "                         X / schedule now)\n"
                "  lr_scale=X             multiplies the warmup + cosine schedule (> 0, <= 1e6)\n"
                "  log_every=N            a metrics line every N steps (>= 1)\n"
                "  checkpoint_interval=S  a checkpoint every S seconds (0: off)\n"
                "  checkpoint_every=N     a checkpoint every N steps (0: off)\n");
    fprintf(fp, "options (default in brackets):\n");
    opts_help(fp, &optset);
    fprintf(fp, "exit status:\n"
                "  0  ok\n"
                "  1  the job answered with an error (or keygen could not write its files)\n"
                "  2  usage error (bad flag, command or key file)\n"
                "  3  no answer, or no connection (no control.endpoint: is the job running?)\n");
}

/* Parse argv: flags anywhere, positionals in order into pos[]; seen[i] is &options[i] when the
 * command line gave it. --help sets o_help. Returns the positional count. */
static int parse_args(int argc, char **argv, const char **pos, int maxpos, const cli_option **seen) {
    unsigned char given[NOPTS] = {0};
    hcl_optset s = optset;
    s.given = given;
    char err[HCL_ERR_MAX];
    int npos;
    opts_defaults(&s);
    int rc = opts_parse_argv(&s, argc - 1, argv + 1, pos, maxpos, &npos, err);
    if (rc < 0) fail(EXIT_USAGE, "%s", err);
    o_help = rc == 1;
    for (int i = 0; i < NOPTS; i++) seen[i] = given[i] ? &options[i] : NULL;
    return npos;
}

/* ---- key files ------------------------------------------------------------------------------- */

static void read_key_file(const char *path, int secret, char key[41]) {
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

/* Write data to dir/name with mode, never over an existing file: a private temp file, fsync,
 * link into place (fails if the name exists), fsync the directory. */
static int write_new_file(const char *dir, const char *name, const char *data, mode_t mode, char *err) {
    char path[PATH_MAX], tmp[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path ||
        snprintf(tmp, sizeof tmp, "%s/.%s.tmp.%d", dir, name, (int)getpid()) >= (int)sizeof tmp)
        return hcl_err(err, "%s/%s: path too long", dir, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return hcl_err(err, "%s: create: %s", tmp, strerror(errno));
    size_t len = strlen(data);
    int ok = fchmod(fd, mode) == 0 && write(fd, data, len) == (ssize_t)len && fsync(fd) == 0;
    int e = errno;
    if (close(fd) != 0 && ok) { ok = 0; e = errno; }
    if (!ok) {
        unlink(tmp);
        return hcl_err(err, "%s: write: %s", tmp, strerror(e));
    }
    if (link(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        return hcl_err(err, "%s: %s", path, e == EEXIST ? "exists (refusing to overwrite a key)" : strerror(e));
    }
    unlink(tmp);
    return 0;
}

/* ---- output ---------------------------------------------------------------------------------- */

/* Every --json line is built by the one JSON writer (common/json.h) in this buffer, reused
 * (a zeroed hcl_json is an empty writer, as json_init makes it). */
static hcl_json json_out;

static hcl_json *json_line(void) {
    json_reset(&json_out);
    json_begin_object(&json_out, NULL);
    return &json_out;
}

static void json_print(void) {
    json_end_object(&json_out);
    json_write_line(&json_out, stdout);
}

/* ---- keygen ---------------------------------------------------------------------------------- */

/* DIR/NAME.key (secret, 0600) then DIR/NAME.pub; neither may exist. */
static void keygen_write(const char *dir, const char *kname, const char *pname, const char *pub,
                         const char *sec) {
    char path[PATH_MAX * 2], text[256], err[HCL_ERR_MAX];
    for (int i = 0; i < 2; i++) {
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, i ? pname : kname);
        if (lstat(path, &st) == 0) fail(EXIT_ERROR, "%s: exists (refusing to overwrite a key)", path);
    }
    snprintf(text, sizeof text, "# hcl CURVE secret key (Z85); keep it private\n%s\n", sec);
    int rc = write_new_file(dir, kname, text, 0600, err);
    memset(text, 0, sizeof text);
    if (rc != 0) fail(EXIT_ERROR, "%s", err);
    snprintf(text, sizeof text, "%s\n", pub);
    if (write_new_file(dir, pname, text, 0644, err) != 0) {
        snprintf(path, sizeof path, "%s/%s", dir, kname);
        unlink(path);
        fail(EXIT_ERROR, "%s", err);
    }
    if (hcl_fsync_dir(dir, err) != 0) fail(EXIT_ERROR, "%s", err);
}

static int cmd_keygen(const char *dir) {
    if (!zmq_has("curve")) fail(EXIT_ERROR, "keygen: this libzmq has no CURVE support");
    char pub[41], sec[41];
    if (zmq_curve_keypair(pub, sec) != 0) fail(EXIT_ERROR, "keygen: zmq_curve_keypair: %s", zmq_strerror(zmq_errno()));
    if (!o_name[0] || strchr(o_name, '/')) fail(EXIT_USAGE, "--name: bad name '%s'", o_name);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) fail(EXIT_ERROR, "%s: mkdir: %s", dir, strerror(errno));
    char kname[PATH_MAX], pname[PATH_MAX];
    if (snprintf(kname, sizeof kname, "%s.key", o_name) >= (int)sizeof kname ||
        snprintf(pname, sizeof pname, "%s.pub", o_name) >= (int)sizeof pname)
        fail(EXIT_USAGE, "--name: too long");
    keygen_write(dir, kname, pname, pub, sec);
    memset(sec, 0, sizeof sec);
    char kpath[PATH_MAX * 2], ppath[PATH_MAX * 2];
    snprintf(kpath, sizeof kpath, "%s/%s", dir, kname);
    snprintf(ppath, sizeof ppath, "%s/%s", dir, pname);
    if (o_json) {
        hcl_json *j = json_line();
        json_string(j, "secret_key_file", kpath);
        json_string(j, "public_key_file", ppath);
        json_string(j, "public_key", pub);
        json_print();
    } else {
        printf("wrote %s (secret, mode 0600) and %s (public: %s)\n", kpath, ppath, pub);
    }
    return 0;
}

/* ---- connection ------------------------------------------------------------------------------ */

typedef struct {
    void *ctx, *dealer;
    char endpoint[EP_MAX];
    int curve;
    char server_public[41], public_key[41], secret_key[41];
    uint64_t next_id;
} client;

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

/* tcp://HOST:PORT with HOST other than loopback */
static int endpoint_open(const char *ep) {
    if (strncmp(ep, "tcp://", 6) != 0) return 0;
    const char *h = ep + 6;
    return !(strncmp(h, "127.", 4) == 0 || strncmp(h, "localhost:", 10) == 0 || strncmp(h, "[::1]:", 6) == 0);
}

/* RUN_DIR/control.endpoint: line 1 the endpoint, maybe a `curve-server-key KEY` line. */
static void read_endpoint_file(client *cl, char file_key[41]) {
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/control.endpoint", o_run_dir);
    FILE *f = fopen(path, "r");
    if (!f)
        fail(EXIT_NOANSWER, "%s: %s (is the job running? pass --run-dir DIR or --endpoint E)", path,
             errno == ENOENT ? "not found" : strerror(errno));
    char line[EP_MAX + 64];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (n++ == 0 && snprintf(cl->endpoint, sizeof cl->endpoint, "%s", line) >= (int)sizeof cl->endpoint)
            fail(EXIT_NOANSWER, "%s: endpoint longer than %d bytes", path, EP_MAX - 1);
        else if (!strncmp(line, "curve-server-key ", 17) && strlen(line + 17) == 40)
            memcpy(file_key, line + 17, 41);
    }
    fclose(f);
    if (!cl->endpoint[0]) fail(EXIT_NOANSWER, "%s: empty (is the job starting?)", path);
}

/* Where to connect (--endpoint or the run directory's file) and with which keys. */
static void client_resolve(client *cl) {
    char file_key[41] = "";
    if (o_endpoint[0]) {
        if (snprintf(cl->endpoint, sizeof cl->endpoint, "%s", o_endpoint) >= (int)sizeof cl->endpoint)
            fail(EXIT_USAGE, "--endpoint: longer than %d bytes", EP_MAX - 1);
    } else {
        read_endpoint_file(cl, file_key);
    }
    if (o_curve_key[0]) {
        read_key_file(o_curve_key, 1, cl->secret_key);
        if (zmq_curve_public(cl->public_key, cl->secret_key) != 0)
            fail(EXIT_USAGE, "%s: not a CURVE secret key", o_curve_key);
        if (o_server_key[0]) read_key_file(o_server_key, 0, cl->server_public);
        else if (file_key[0]) memcpy(cl->server_public, file_key, 41);
        else fail(EXIT_USAGE, "--curve-key needs --server-key SERVER.pub (the coordinator's public key)");
        cl->curve = 1;
    } else if (o_server_key[0]) {
        fail(EXIT_USAGE, "--server-key needs --curve-key CLIENT.key (this client's secret key)");
    } else if (file_key[0]) {
        fail(EXIT_USAGE, "the job at %s takes CURVE clients only: pass --curve-key CLIENT.key", cl->endpoint);
    } else if (endpoint_open(cl->endpoint)) {
        fail(EXIT_USAGE, "%s is not a loopback endpoint: the coordinator answers CURVE clients only "
             "there (pass --curve-key CLIENT.key --server-key SERVER.pub)", cl->endpoint);
    }
}

static void *client_socket(client *cl, int type, const char *ep) {
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

static void client_open(client *cl) {
    cl->ctx = zmq_ctx_new();
    HCL_CHECK(cl->ctx, "zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
    zmq_ctx_set(cl->ctx, ZMQ_BLOCKY, 0);
    cl->dealer = client_socket(cl, ZMQ_DEALER, cl->endpoint);
    cl->next_id = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL);
}

static void client_close(client *cl) {
    zmq_close(cl->dealer);
    zmq_ctx_term(cl->ctx);
    memset(cl->secret_key, 0, sizeof cl->secret_key);
}

/* Send rq and wait for its reply: the reply, or NULL after the timeout (or an interrupt). */
static Hcl__ControlReply *client_call(client *cl, Hcl__ControlRequest *rq) {
    rq->id = ++cl->next_id;
    rq->version = HCL__CONTROL_VERSION__CONTROL_VERSION_1;
    uint8_t buf[4096];
    size_t n = hcl__control_request__get_packed_size(rq);
    HCL_CHECK(n <= sizeof buf, "request of %zu bytes", n);
    hcl__control_request__pack(rq, buf);
    if (zmq_send(cl->dealer, buf, n, ZMQ_DONTWAIT) < 0) return NULL;
    double deadline = hcl_now() + o_timeout / 1e3;
    for (;;) {
        double left = deadline - hcl_now();
        if (left <= 0 || interrupted) return NULL;
        zmq_pollitem_t it = {cl->dealer, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, (long)(left * 1e3) + 1) <= 0) continue;
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, cl->dealer, ZMQ_DONTWAIT) < 0) { zmq_msg_close(&m); continue; }
        Hcl__ControlReply *r = hcl__control_reply__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
        zmq_msg_close(&m);
        if (r && r->id == rq->id) return r;
        if (r) hcl__control_reply__free_unpacked(r, NULL);   /* a stale reply */
    }
}

static void no_answer(const client *cl) {
    fail(EXIT_NOANSWER, "no answer from %s within %lld ms (is the job running?%s)", cl->endpoint,
         (long long)o_timeout, cl->curve ? " is this client's key in its client list?" : "");
}

/* ---- status ---------------------------------------------------------------------------------- */

static const char *state_name(int s) {
    static const char *names[] = {"unknown", "starting", "running", "paused", "checkpointing",
                                  "stopping", "done"};
    return s >= 0 && s <= 6 ? names[s] : "unknown";
}

static const char *error_name(int e) {
    static const char *names[] = {"none", "bad_version", "bad_request", "unknown_type", "bad_key",
                                  "bad_value", "busy", "refused", "failed"};
    return e >= 0 && e <= 8 ? names[e] : "error";
}

static void duration(char *out, size_t cap, double s) {
    if (!(s >= 0) || !isfinite(s)) { snprintf(out, cap, "unknown"); return; }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(out, cap, "%ldh%02ldm%02lds", t / 3600, t / 60 % 60, t % 60);
    else if (t >= 60) snprintf(out, cap, "%ldm%02lds", t / 60, t % 60);
    else snprintf(out, cap, "%.1fs", s);
}

static void worker_json(hcl_json *j, const Hcl__WorkerStat *w) {
    json_begin_object(j, NULL);
    json_int(j, "rank", w->rank);
    json_int(j, "step", w->step);
    json_number(j, "compute_s", w->compute_s);
    json_number(j, "allgather_s", w->allgather_s);
    json_number(j, "reduce_scatter_s", w->reduce_scatter_s);
    json_number(j, "allreduce_s", w->allreduce_s);
    json_number(j, "wait_s", w->wait_s);
    json_uint(j, "bytes", w->bytes);
    json_uint(j, "rss_bytes", w->rss_bytes);
    json_number(j, "last_seen_s", w->last_seen_s);
    json_number(j, "compute_median_s", w->compute_median_s);
    json_uint(j, "messages", w->messages);
    json_uint(j, "telemetry_dropped", w->telemetry_dropped);
    json_bool(j, "straggler", w->straggler);
    json_int(j, "in_step", w->in_step);
    json_string(j, "phase", w->phase);
    json_number(j, "phase_done", w->phase_done >= 0 ? w->phase_done : NAN);
    json_end_object(j);
}

static void print_status_json(const Hcl__StatusBody *b) {
    hcl_json *j = json_line();
    json_bool(j, "ok", 1);
    json_string(j, "state", state_name(b->state));
    json_int(j, "step", b->step);
    json_int(j, "total_steps", b->total_steps);
    json_int(j, "epoch", b->epoch);
    json_number(j, "loss", b->loss);
    json_number(j, "lr", b->lr);
    json_number(j, "lr_scale", b->lr_scale);
    json_number(j, "logit_scale", b->logit_scale);
    json_number(j, "samples_per_s", b->samples_per_s);
    json_number(j, "eta_s", b->eta_s >= 0 ? b->eta_s : NAN);
    json_number(j, "elapsed_s", b->elapsed_s);
    json_string(j, "last_checkpoint_path", b->last_checkpoint_path);
    json_int(j, "last_checkpoint_step", b->last_checkpoint_step);
    json_string(j, "last_checkpoint_error", b->last_checkpoint_error);
    json_int(j, "log_every", b->log_every);
    json_number(j, "checkpoint_interval_s", b->checkpoint_interval_s);
    json_int(j, "checkpoint_every", b->checkpoint_every);
    json_string(j, "run_dir", b->run_dir);
    json_int(j, "nworkers", b->nworkers);
    json_begin_array(j, "workers");
    for (size_t i = 0; i < b->n_workers; i++) worker_json(j, b->workers[i]);
    json_end_array(j);
    json_print();
}

/* The per-worker table: the last step's timings, traffic, memory, when last heard from, the
 * telemetry messages the worker had to drop, stragglers. */
static void print_worker_table(const Hcl__StatusBody *b) {
    printf("\n%4s %10s %12s %14s %12s %8s %9s %8s %9s %8s %9s  %s\n", "rank", "compute ms", "allgather ms",
           "red-scatter ms", "allreduce ms", "wait ms", "MB moved", "RSS MB", "last seen", "dropped",
           "straggler", "current");
    for (size_t i = 0; i < b->n_workers; i++) {
        const Hcl__WorkerStat *w = b->workers[i];
        char seen[32];
        if (w->messages) snprintf(seen, sizeof seen, "%.1fs", w->last_seen_s);
        else snprintf(seen, sizeof seen, "never");
        char now[64] = "";   /* what it computes: "step 3 loss 45%" */
        if (w->in_step >= 0 && w->phase && w->phase[0]) {
            int k = snprintf(now, sizeof now, "step %" PRId64 " %s", w->in_step, w->phase);
            if (w->phase_done >= 0 && k > 0 && (size_t)k < sizeof now)
                snprintf(now + k, sizeof now - (size_t)k, " %.0f%%", 100.0 * w->phase_done);
        }
        printf("%4d %10.2f %12.2f %14.2f %12.2f %8.2f %9.2f %8.1f %9s %8" PRIu64 " %9s  %s\n", w->rank,
               w->compute_s * 1e3, w->allgather_s * 1e3, w->reduce_scatter_s * 1e3,
               w->allreduce_s * 1e3, w->wait_s * 1e3, w->bytes / 1e6, w->rss_bytes / 1048576.0, seen,
               w->telemetry_dropped, w->straggler ? "yes" : "", now);
    }
}

static void print_status(const Hcl__StatusBody *b) {
    char eta[32], el[32];
    duration(eta, sizeof eta, b->eta_s);
    duration(el, sizeof el, b->elapsed_s);
    printf("%-14s %s\n", "state", state_name(b->state));
    printf("%-14s %" PRId64 " / %" PRId64, "step", b->step, b->total_steps);
    if (b->total_steps > 0) printf("  (%.1f%%)", 100.0 * (double)b->step / (double)b->total_steps);
    printf("\n%-14s %" PRId64 "\n", "epoch", b->epoch);
    printf("%-14s %.6g\n", "loss", b->loss);
    printf("%-14s %.4g  (scale %.4g)\n", "lr", b->lr, b->lr_scale);
    printf("%-14s %.4g\n", "logit scale", b->logit_scale);
    printf("%-14s %.0f\n", "samples/s", b->samples_per_s);
    printf("%-14s %s\n%-14s %s\n", "eta", eta, "elapsed", el);
    if (b->last_checkpoint_step >= 0)
        printf("%-14s %s (step %" PRId64 ")\n", "checkpoint", b->last_checkpoint_path, b->last_checkpoint_step);
    else
        printf("%-14s none\n", "checkpoint");
    if (b->last_checkpoint_error[0]) printf("%-14s %s\n", "ckpt error", b->last_checkpoint_error);
    printf("%-14s %" PRId64 " steps\n", "log every", b->log_every);
    if (b->checkpoint_every > 0) printf("%-14s %" PRId64 " steps\n", "ckpt every", b->checkpoint_every);
    else printf("%-14s off\n", "ckpt every");
    if (b->checkpoint_interval_s > 0) printf("%-14s %g s\n", "ckpt interval", b->checkpoint_interval_s);
    else printf("%-14s off\n", "ckpt interval");
    printf("%-14s %s\n", "run dir", b->run_dir);
    printf("%-14s %d\n", "workers", b->nworkers);
    if (b->n_workers) print_worker_table(b);
}

/* ---- watch ----------------------------------------------------------------------------------- */

static void print_event(const Hcl__StepEvent *e) {
    if (o_json) {
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
    Hcl__ControlRequest rq = HCL__CONTROL_REQUEST__INIT;
    Hcl__StatusRequest sr = HCL__STATUS_REQUEST__INIT;
    rq.body_case = HCL__CONTROL_REQUEST__BODY_STATUS;
    rq.status = &sr;
    Hcl__ControlReply *r = client_call(cl, &rq);
    if (!r) {
        if (interrupted) return 1;
        fail(EXIT_NOANSWER, "the job at %s stopped answering (no answer within %lld ms)",
             cl->endpoint, (long long)o_timeout);
    }
    int done = r->body_case == HCL__CONTROL_REPLY__BODY_STATUS &&
               r->status->state == HCL__RUN_STATE__RUN_STATE_DONE;
    hcl__control_reply__free_unpacked(r, NULL);
    return done;
}

/* watch: the PUB endpoint, then events until interrupted or --count. While no event comes for
 * --timeout ms, a status request checks that the job is still there. */
static int cmd_watch(client *cl, const char *watch_ep) {
    char ep[EP_MAX];
    watch_endpoint(cl, watch_ep, ep);
    void *sub = client_socket(cl, ZMQ_SUB, ep);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0);
    int64_t seen = 0;
    double quiet_since = hcl_now();
    while (!interrupted && (o_count == 0 || seen < o_count)) {
        zmq_pollitem_t it = {sub, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 200) > 0) {
            seen += watch_take(sub);
            quiet_since = hcl_now();
            continue;
        }
        if (hcl_now() - quiet_since < o_timeout / 1e3) continue;
        if (watch_job_done(cl)) break;
        quiet_since = hcl_now();
    }
    zmq_close(sub);
    return 0;
}

/* ---- commands -------------------------------------------------------------------------------- */

/* The bodies a request may point to. */
typedef struct {
    Hcl__StatusRequest status;
    Hcl__WatchRequest watch;
    Hcl__PauseRequest pause;
    Hcl__ResumeRequest resume;
    Hcl__CheckpointRequest ckpt;
    Hcl__StopRequest stop;
    Hcl__SetRequest set;
    char key[256], value[256];
} request_bodies;

/* The request for cmd (arg: set's KEY=VALUE); its body lives in *b. */
static void build_request(Hcl__ControlRequest *rq, request_bodies *b, const char *cmd, const char *arg) {
    hcl__control_request__init(rq);
    if (!strcmp(cmd, "status")) { rq->body_case = HCL__CONTROL_REQUEST__BODY_STATUS; rq->status = &b->status; }
    else if (!strcmp(cmd, "watch")) { rq->body_case = HCL__CONTROL_REQUEST__BODY_WATCH; rq->watch = &b->watch; }
    else if (!strcmp(cmd, "pause")) { rq->body_case = HCL__CONTROL_REQUEST__BODY_PAUSE; rq->pause = &b->pause; }
    else if (!strcmp(cmd, "resume")) { rq->body_case = HCL__CONTROL_REQUEST__BODY_RESUME; rq->resume = &b->resume; }
    else if (!strcmp(cmd, "checkpoint")) { rq->body_case = HCL__CONTROL_REQUEST__BODY_CHECKPOINT; rq->checkpoint = &b->ckpt; }
    else if (!strcmp(cmd, "stop")) {
        b->stop.no_checkpoint = o_no_checkpoint;
        rq->body_case = HCL__CONTROL_REQUEST__BODY_STOP;
        rq->stop = &b->stop;
    } else if (!strcmp(cmd, "set")) {
        const char *eq = arg ? strchr(arg, '=') : NULL;
        if (!eq || eq == arg || !eq[1] || strlen(arg) >= sizeof b->key)
            fail(EXIT_USAGE, "set: want KEY=VALUE, got '%s'", arg ? arg : "");
        snprintf(b->key, sizeof b->key, "%.*s", (int)(eq - arg), arg);
        snprintf(b->value, sizeof b->value, "%s", eq + 1);
        b->set.key = b->key;
        b->set.value = b->value;
        rq->body_case = HCL__CONTROL_REQUEST__BODY_SET;
        rq->set = &b->set;
    }
}

static int report_error(const char *cmd, const Hcl__ControlReply *r) {
    if (o_json) {
        hcl_json *j = json_line();
        json_bool(j, "ok", 0);
        json_string(j, "error", error_name(r->error));
        json_string(j, "message", r->message);
        json_print();
    }
    fprintf(stderr, "hclctl: %s: %s: %s\n", cmd, error_name(r->error), r->message);
    return EXIT_ERROR;
}

static void report_ack(const char *cmd, const char *arg, const Hcl__ControlReply *r) {
    if (o_json) {
        hcl_json *j = json_line();
        json_bool(j, "ok", 1);
        json_string(j, "command", cmd);
        json_int(j, "step", r->ack->step);
        json_string(j, "message", r->message);
        json_print();
    } else {
        printf("ok: %s%s%s at step %" PRId64 "%s%s\n", cmd, arg ? " " : "", arg ? arg : "",
               r->ack->step, r->message[0] ? ": " : "", r->message);
    }
}

/* Send cmd's request, print what comes back (or follow the watch stream). The exit code. */
static int run_command(const char *cmd, const char *arg) {
    Hcl__ControlRequest rq;
    request_bodies bodies = {HCL__STATUS_REQUEST__INIT, HCL__WATCH_REQUEST__INIT, HCL__PAUSE_REQUEST__INIT,
                             HCL__RESUME_REQUEST__INIT, HCL__CHECKPOINT_REQUEST__INIT,
                             HCL__STOP_REQUEST__INIT, HCL__SET_REQUEST__INIT, "", ""};
    build_request(&rq, &bodies, cmd, arg);
    client cl;
    memset(&cl, 0, sizeof cl);
    client_resolve(&cl);
    client_open(&cl);
    Hcl__ControlReply *r = client_call(&cl, &rq);
    if (!r) {
        if (interrupted) fail(EXIT_NOANSWER, "interrupted");
        no_answer(&cl);
    }
    int code = 0;
    if (!r->ok) {
        code = report_error(cmd, r);
    } else if (r->body_case == HCL__CONTROL_REPLY__BODY_STATUS && !strcmp(cmd, "status")) {
        if (o_json) print_status_json(r->status);
        else print_status(r->status);
    } else if (r->body_case == HCL__CONTROL_REPLY__BODY_WATCH && !strcmp(cmd, "watch")) {
        code = cmd_watch(&cl, r->watch->endpoint);
    } else if (r->body_case == HCL__CONTROL_REPLY__BODY_ACK) {
        report_ack(cmd, arg, r);
    } else {
        fprintf(stderr, "hclctl: %s: the job sent a reply of the wrong kind\n", cmd);
        code = EXIT_NOANSWER;
    }
    hcl__control_reply__free_unpacked(r, NULL);
    client_close(&cl);
    return code;
}

int main(int argc, char **argv) {
    const char *pos[3] = {0};
    const cli_option *seen[NOPTS];
    memset(seen, 0, sizeof seen);
    int npos = parse_args(argc, argv, pos, 3, seen);
    if (o_help) {
        usage(stdout);
        return 0;
    }
    if (!npos) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = pos[0];
    const cli_command *c = NULL;
    for (int i = 0; i < NCMDS; i++)
        if (!strcmp(commands[i].name, cmd)) c = &commands[i];
    if (!c) fail(EXIT_USAGE, "unknown command '%s' (see hclctl --help)", cmd);
    int want = c->arg ? 2 : 1;
    if (npos < want) fail(EXIT_USAGE, "%s: missing %s (usage: hclctl %s %s)", cmd, c->arg, cmd, c->arg);
    if (npos > want) fail(EXIT_USAGE, "%s: unexpected argument '%s'", cmd, pos[want]);
    for (int i = 0; i < NOPTS; i++)
        if (seen[i] && seen[i]->only && strcmp(seen[i]->only, cmd))
            fail(EXIT_USAGE, "--%s: only for %s", seen[i]->name, seen[i]->only);
    if (seen[0] && seen[1]) fail(EXIT_USAGE, "--run-dir and --endpoint: pick one");
    if (!strcmp(cmd, "keygen")) return cmd_keygen(pos[1]);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return run_command(cmd, want == 2 ? pos[1] : NULL);
}
