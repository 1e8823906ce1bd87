/* hclctl: talk to a running hcl-train job over its control plane (proto/control.proto,
 * coordinator/control.h). This file is the command line: the flags, --help, the requests,
 * keygen and main; tools/hclctl.h lists the other files.
 *
 *   hclctl [--run-dir DIR | --endpoint E] status|watch|pause|resume|checkpoint|stop|set K=V
 *   hclctl --run-dir DIR --run-dir DIR2 ... watch
 *   hclctl keygen DIR [--name NAME]
 *
 * A DEALER socket sends one ControlRequest and waits --timeout ms for the ControlReply of the
 * same id; `watch` then subscribes to the job's PUB socket, or with --run-dir given several
 * times follows each of those jobs (tools/hclctl_watch.c). Flags live in one table that drives
 * parsing and --help. Exit codes: 0 ok, 1 the job answered with an error (or keygen could not
 * write), 2 usage error (watch: a run directory twice or without a control socket), 3 no
 * answer, connection problem or a reply of the wrong kind (watch of several jobs: one was
 * lost); with --json each failure is also a JSON object on stdout. What the job sends is
 * printed through put_text (terminal escapes shown, not obeyed) or the JSON writer. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "control.pb-c.h"
#include "hclctl.h"
#include "json.h"
#include "opts.h"
#include "util.h"

hclctl_flags hclctl_flag;
volatile sig_atomic_t hclctl_interrupted;

void fail(int code, const char *fmt, ...) {
    char msg[3 * PATH_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fputs("hclctl: ", stderr);
    put_text(stderr, msg);
    fputc('\n', stderr);
    if (hclctl_flag.json) {
        hcl_json *j = json_line();
        json_bool(j, "ok", 0);
        json_string(j, "error", code == EXIT_USAGE ? "usage" : code == EXIT_NOANSWER ? "no_answer" : "failed");
        json_string(j, "message", msg);
        json_print();
    }
    exit(code);
}

/* ---- flags ----------------------------------------------------------------------------------- */

typedef hcl_opt cli_option;

static int o_help;

/* run-dir and endpoint first: main checks that they are not both given by their index */
static const cli_option options[] = {
    {"run-dir", HCL_OPT_PATH, ".", "run directory of the job: reads DIR/control.endpoint (watch: "
     "once per job to follow several)",
     HCL_OPT_AT(hclctl_flag.run_dir), .meta = "DIR"},
    {"endpoint", HCL_OPT_STR, "", "control endpoint (ipc://PATH, tcp://HOST:PORT) instead of the run "
     "directory's", HCL_OPT_AT(hclctl_flag.endpoint), .meta = "E"},
    {"json", HCL_OPT_FLAG, "0", "print JSON (watch: one object per line, with a \"job\" key when several)", HCL_OPT_AT(hclctl_flag.json)},
    {"timeout", HCL_OPT_INT, "2000", "how long to wait for an answer, in ms", HCL_OPT_AT(hclctl_flag.timeout),
     .lo = 1, .hi = 86400000, .meta = "MS"},
    {"curve-key", HCL_OPT_PATH, "", "this client's CURVE secret key (hclctl keygen)",
     HCL_OPT_AT(hclctl_flag.curve_key), .meta = "FILE"},
    {"server-key", HCL_OPT_PATH, "", "the coordinator's CURVE public key (default: from "
     "control.endpoint)", HCL_OPT_AT(hclctl_flag.server_key), .meta = "FILE"},
    {"no-checkpoint", HCL_OPT_FLAG, "0", "stop without writing a final checkpoint",
     HCL_OPT_AT(hclctl_flag.no_checkpoint), .only = "stop"},
    {"count", HCL_OPT_INT, "0", "stop after N events, of all jobs together (0: until "
     "interrupted or every job has ended)", HCL_OPT_AT(hclctl_flag.count),
     .only = "watch"},
    {"name", HCL_OPT_STR, "hcl", "key file names: DIR/NAME.key, DIR/NAME.pub", HCL_OPT_AT(hclctl_flag.name),
     .meta = "NAME", .only = "keygen"},
};
#define NOPTS ((int)(sizeof options / sizeof options[0]))
static const hcl_optset optset = {options, NOPTS, NULL, NULL};

typedef struct {
    const char *name, *arg, *help;
} cli_command;

static const cli_command commands[] = {
    {"status", NULL, "state, progress, settings and the per-worker table"},
    {"watch", NULL, "one line per training step until interrupted (or --count N); several\n"
     "                         --run-dir: one loop follows all, each line starting with the\n"
     "                         job's name, 'NAME: ended' or 'NAME: lost' when one goes"},
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
                "       hclctl --run-dir DIR --run-dir DIR2 [--run-dir ...] watch\n"
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
                "  2  usage error (bad flag, command or key file; watch: a run directory given\n"
                "     twice or without a control socket)\n"
                "  3  no answer, or no connection (no control.endpoint: is the job running?), or\n"
                "     a reply of the wrong kind; watch of several jobs: one was lost\n"
                "with --json a failure is also one object on stdout: {\"ok\": false, \"error\": ...,\n"
                "\"message\": ...}; the job's strings are printed with control characters and bytes\n"
                "that are no UTF-8 escaped (\\xNN), and are valid UTF-8 in --json\n");
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

/* Every --run-dir value of a command line that parse_args took, in order, into dirs (at most
 * max): how many. The option table says which flags take the next argument as their value. */
static int collect_run_dirs(int argc, char **argv, const char **dirs, int max) {
    int n = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *eq = strchr(a, '=');
        if (strncmp(a, "--", 2) || !a[2]) continue;
        char name[64];
        snprintf(name, sizeof name, "%.*s", eq ? (int)(eq - a - 2) : (int)strlen(a + 2), a + 2);
        const cli_option *o = opts_find(&optset, name);
        const char *value = eq ? eq + 1 : NULL;
        if (o && o->type != HCL_OPT_FLAG && !eq) value = argv[++i];
        if (o != &options[0]) continue;
        if (n == max) fail(EXIT_USAGE, "--run-dir: more than %d", max);
        dirs[n++] = value;
    }
    return n;
}

/* ---- keygen ---------------------------------------------------------------------------------- */

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
    if (!hclctl_flag.name[0] || strchr(hclctl_flag.name, '/')) fail(EXIT_USAGE, "--name: bad name '%s'", hclctl_flag.name);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) fail(EXIT_ERROR, "%s: mkdir: %s", dir, strerror(errno));
    char kname[PATH_MAX], pname[PATH_MAX];
    if (snprintf(kname, sizeof kname, "%s.key", hclctl_flag.name) >= (int)sizeof kname ||
        snprintf(pname, sizeof pname, "%s.pub", hclctl_flag.name) >= (int)sizeof pname)
        fail(EXIT_USAGE, "--name: too long");
    keygen_write(dir, kname, pname, pub, sec);
    memset(sec, 0, sizeof sec);
    char kpath[PATH_MAX * 2], ppath[PATH_MAX * 2];
    snprintf(kpath, sizeof kpath, "%s/%s", dir, kname);
    snprintf(ppath, sizeof ppath, "%s/%s", dir, pname);
    if (hclctl_flag.json) {
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

/* ---- commands -------------------------------------------------------------------------------- */

static void on_signal(int sig) {
    (void)sig;
    hclctl_interrupted = 1;
}

void build_request(Hcl__ControlRequest *rq, request_bodies *b, const char *cmd, const char *arg) {
    hcl__control_request__init(rq);
    memset(b, 0, sizeof *b);
    hcl__status_request__init(&b->status);
    hcl__watch_request__init(&b->watch);
    hcl__pause_request__init(&b->pause);
    hcl__resume_request__init(&b->resume);
    hcl__checkpoint_request__init(&b->ckpt);
    hcl__stop_request__init(&b->stop);
    hcl__set_request__init(&b->set);
    if (!strcmp(cmd, "status")) { rq->body_case = HCL__CONTROL_REQUEST__BODY_STATUS; rq->status = &b->status; }
    else if (!strcmp(cmd, "watch")) { rq->body_case = HCL__CONTROL_REQUEST__BODY_WATCH; rq->watch = &b->watch; }
    else if (!strcmp(cmd, "pause")) { rq->body_case = HCL__CONTROL_REQUEST__BODY_PAUSE; rq->pause = &b->pause; }
    else if (!strcmp(cmd, "resume")) { rq->body_case = HCL__CONTROL_REQUEST__BODY_RESUME; rq->resume = &b->resume; }
    else if (!strcmp(cmd, "checkpoint")) { rq->body_case = HCL__CONTROL_REQUEST__BODY_CHECKPOINT; rq->checkpoint = &b->ckpt; }
    else if (!strcmp(cmd, "stop")) {
        b->stop.no_checkpoint = hclctl_flag.no_checkpoint;
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

static const char *body_name(Hcl__ControlReply__BodyCase b) {
    switch (b) {
    case HCL__CONTROL_REPLY__BODY_STATUS: return "status";
    case HCL__CONTROL_REPLY__BODY_ACK: return "ack";
    case HCL__CONTROL_REPLY__BODY_WATCH: return "watch";
    default: return "no body";
    }
}

/* Send cmd's request, print what comes back (or follow the watch stream): status wants a
 * StatusBody, watch a WatchBody, the other commands an AckBody; any other reply is an error
 * (exit 3). The exit code. */
static int run_command(const char *cmd, const char *arg) {
    Hcl__ControlRequest rq;
    request_bodies bodies;
    build_request(&rq, &bodies, cmd, arg);
    client cl;
    memset(&cl, 0, sizeof cl);
    client_resolve(&cl, hclctl_flag.run_dir);
    void *ctx = zmq_ctx_new();
    HCL_CHECK(ctx, "zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
    zmq_ctx_set(ctx, ZMQ_BLOCKY, 0);
    client_open(&cl, ctx);
    Hcl__ControlReply *r = client_call(&cl, &rq);
    if (!r) {
        if (hclctl_interrupted) fail(EXIT_NOANSWER, "interrupted");
        no_answer(&cl);
    }
    int code = 0;
    Hcl__ControlReply__BodyCase want = !strcmp(cmd, "status") ? HCL__CONTROL_REPLY__BODY_STATUS
                                       : !strcmp(cmd, "watch") ? HCL__CONTROL_REPLY__BODY_WATCH
                                       : HCL__CONTROL_REPLY__BODY_ACK;
    if (!r->ok) {
        code = report_error(cmd, r);
    } else if (r->body_case != want) {   /* an ack to status was "ok: status at step N", exit 0 */
        fail(EXIT_NOANSWER, "%s: the job sent a reply of the wrong kind (%s, not %s)", cmd, body_name(r->body_case),
             body_name(want));
    } else if (want == HCL__CONTROL_REPLY__BODY_STATUS) {
        if (hclctl_flag.json) print_status_json(r->status);
        else print_status(r->status);
    } else if (want == HCL__CONTROL_REPLY__BODY_WATCH) {
        code = watch_one(&cl, r->watch->endpoint);
    } else {
        report_ack(cmd, arg, r);
    }
    hcl__control_reply__free_unpacked(r, NULL);
    client_close(&cl);
    zmq_ctx_term(ctx);
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
    const char *dirs[WATCH_JOBS_MAX];
    int ndirs = collect_run_dirs(argc, argv, dirs, WATCH_JOBS_MAX);
    if (ndirs > 1 && strcmp(cmd, "watch"))
        fail(EXIT_USAGE, "--run-dir: given %d times; only watch follows several jobs", ndirs);
    if (!strcmp(cmd, "keygen")) return cmd_keygen(pos[1]);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (ndirs > 1) return watch_many(dirs, ndirs);
    return run_command(cmd, want == 2 ? pos[1] : NULL);
}