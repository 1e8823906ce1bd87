/* hcl-run: a supervisor for hcl-train on a cluster (torchrun's --max-restarts, Horovod elastic's
 * host blacklist).
 *
 *   hcl-run --hostfile H [--max-restarts N] [--min-workers K] [--iface NET] [--grace S] [--dry-run]
 *           -- hcl-train ARGS...
 *
 * Builds the mpirun command (hcl_run_mpirun_argv: the hosts and slots of H, out-of-band TCP
 * keepalive so a partition ends mpirun, the interface, the environment to forward, no binding),
 * launches it and waits. When rank 0 writes its abort event to RUN_DIR/metrics.jsonl (a worker
 * lost), mpirun gets --grace seconds to end by itself and is then ended: on a cut link it would
 * wait for TCP to give up on the lost host for minutes. When the job failed, each host is asked
 * over the same remote shell as mpirun's (OMPI_MCA_plm_rsh_agent, OMPI_MCA_plm_rsh_args); those
 * that do not answer are dropped, and the job is launched again with --resume auto on the hosts
 * left while at least K workers remain, at most N times, the restart's number and reason in
 * HCL_RUN_RESTART / HCL_RUN_REASON (rank 0 logs them in metrics.jsonl and hclctl status).
 * SIGTERM, SIGINT and SIGUSR2 reach the job as SIGUSR2 (checkpoint and stop) and end the
 * supervision; SIGUSR1 is forwarded. Exit: the job's last exit code, or 1 after giving up with a
 * summary of every launch; 2 for bad usage or a bad hostfile. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hcl-run.h"
#include "opts.h"
#include "util.h"

static volatile sig_atomic_t stop_signal, checkpoint_signal;
static void on_stop(int sig) { stop_signal = sig; }
static void on_checkpoint(int sig) { (void)sig; checkpoint_signal = 1; }

static char opt_hostfile[4096], opt_iface[256];
static int64_t opt_max_restarts, opt_min_workers, opt_grace, opt_dry_run;
static const hcl_opt options[] = {
    {"hostfile", HCL_OPT_PATH, "", "Open MPI hostfile: `HOST [slots=N]` a line; rank 0 on the first slot",
     HCL_OPT_AT(opt_hostfile), .meta = "H"},
    {"max-restarts", HCL_OPT_INT, "3", "relaunches after a failure, with --resume auto",
     HCL_OPT_AT(opt_max_restarts), .hi = 1000},
    {"min-workers", HCL_OPT_INT, "1", "give up when fewer workers are left on the hosts that answer",
     HCL_OPT_AT(opt_min_workers), .lo = 1, .hi = 100000, .meta = "K"},
    {"iface", HCL_OPT_STR, "", "the interface or subnet MPI uses (btl_tcp_if_include, oob_tcp_if_include)",
     HCL_OPT_AT(opt_iface), .meta = "NET"},
    {"grace", HCL_OPT_INT, "2", "seconds mpirun has to end after rank 0 aborted, before hcl-run ends it",
     HCL_OPT_AT(opt_grace), .hi = 3600, .meta = "S"},
    {"dry-run", HCL_OPT_FLAG, "0", "print the mpirun command and exit", HCL_OPT_AT(opt_dry_run)},
};
static const hcl_optset optset = {options, (int)(sizeof options / sizeof options[0]), NULL, NULL};

static void usage(FILE *f) {
    fputs("usage: hcl-run --hostfile H [flags] -- hcl-train ARGS...\n", f);
    opts_help(f, &optset);
}

/* The flags before "--" (the shared option table); o->prog points into argv after it. Returns 0,
 * or -1 with err. */
static int parse_args(int argc, char **argv, hcl_run_opts *o, char *err) {
    int dash = 1;
    while (dash < argc && strcmp(argv[dash], "--") != 0) dash++;
    if (opts_parse_tool(&optset, dash, argv, usage, err) != 0) return -1;
    if (!opt_hostfile[0]) return hcl_err(err, "--hostfile is required");
    if (dash + 1 >= argc) return hcl_err(err, "no program: give `-- hcl-train ARGS...`");
    memset(o, 0, sizeof *o);
    o->hostfile = opt_hostfile;
    o->iface = opt_iface[0] ? opt_iface : NULL;
    o->max_restarts = (int)opt_max_restarts;
    o->min_workers = (int)opt_min_workers;
    o->grace_s = (int)opt_grace;
    o->dry_run = (int)opt_dry_run;
    o->prog = argv + dash + 1;
    o->nprog = argc - dash - 1;
    for (int k = 0; k < o->nprog; k++) {   /* --run-dir DIR or --run-dir=DIR */
        if (!strcmp(o->prog[k], "--run-dir") && k + 1 < o->nprog) o->run_dir = o->prog[k + 1];
        if (!strncmp(o->prog[k], "--run-dir=", 10)) o->run_dir = o->prog[k] + 10;
    }
    return 0;
}

/* RUN_DIR/metrics.jsonl from *off on: 1 when rank 0's abort event is in it. A line not yet
 * whole is read again next time. */
static int saw_abort(const char *run_dir, long *off) {
    if (!run_dir) return 0;
    char path[4200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    struct stat st;
    int seen = 0;
    if (fstat(fileno(f), &st) == 0 && st.st_size < *off) *off = 0;   /* a new file */
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    if (fseek(f, *off, SEEK_SET) == 0)
        while (!seen && (n = getline(&line, &cap, f)) > 0 && line[n - 1] == '\n') {
            *off += (long)n;
            seen = strstr(line, "\"event\": \"abort\"") != NULL;
        }
    free(line);
    fclose(f);
    return seen;
}

static long file_size(const char *run_dir) {
    char path[4200];
    struct stat st;
    if (!run_dir) return 0;
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/* Wait for mpirun: forward the signals, end it --grace s after rank 0's abort event. Returns its
 * exit code (128 + signal when killed); *aborted says whether rank 0 aborted. */
static int supervise(pid_t mp, const hcl_run_opts *o, int *aborted) {
    long off = file_size(o->run_dir);
    double abort_at = -1, term_at = -1;
    int forwarded = 0;
    *aborted = 0;
    for (;;) {
        int status;
        pid_t w = waitpid(mp, &status, WNOHANG);
        if (w == mp) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (w < 0 && errno != EINTR) return 127;
        if (stop_signal && !forwarded) {
            fprintf(stderr, "hcl-run: signal %d: the job checkpoints and stops (SIGUSR2 to mpirun)\n", (int)stop_signal);
            kill(mp, SIGUSR2);
            forwarded = 1;
        }
        if (checkpoint_signal) {
            checkpoint_signal = 0;
            kill(mp, SIGUSR1);
        }
        double t = hcl_now();
        if (abort_at < 0 && saw_abort(o->run_dir, &off)) {
            abort_at = t;
            *aborted = 1;
        }
        if (abort_at >= 0 && term_at < 0 && t - abort_at > o->grace_s) {
            fprintf(stderr, "hcl-run: rank 0 aborted %d s ago and mpirun is still up (a lost host?): ending it\n",
                    o->grace_s);
            kill(mp, SIGTERM);
            term_at = t;
        }
        if (term_at >= 0 && t - term_at > 2) kill(mp, SIGKILL);
        usleep(100000);
    }
}

/* One launch: fork and exec mpirun with the current hosts. Returns its exit code. */
static int launch(const hcl_run_opts *o, const hcl_run_hosts *h, int restart, const char *reason, int *aborted) {
    char num[16];
    snprintf(num, sizeof num, "%d", restart);
    setenv("HCL_RUN_RESTART", num, 1);   /* HCL_* travel with -x: rank 0 logs them */
    setenv("HCL_RUN_REASON", reason, 1);
    char **argv = hcl_run_mpirun_argv(o, h, restart > 0);
    if (o->dry_run) {
        for (char **a = argv; *a; a++) printf("%s%s", a == argv ? "" : " ", *a);
        printf("\n");
        hcl_run_free_argv(argv);
        return 0;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t mp = fork();
    if (mp < 0) {
        fprintf(stderr, "hcl-run: fork: %s\n", strerror(errno));
        hcl_run_free_argv(argv);
        return 127;
    }
    if (mp == 0) {
        execvp(argv[0], argv);
        fprintf(stderr, "hcl-run: %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    hcl_run_free_argv(argv);
    return supervise(mp, o, aborted);
}

/* Launch, and relaunch on the hosts left while allowed: the exit code for main. */
static int run_loop(const hcl_run_opts *o, hcl_run_hosts *h) {
    char summary[8192] = "", reason[512] = "first launch";
    size_t sl = 0;
    for (int restart = 0;; restart++) {
        double t0 = hcl_now();
        int aborted = 0;
        char hosts[1024];
        hcl_run_hosts_text(h, hosts, sizeof hosts);
        if (!o->dry_run)
            fprintf(stderr, "hcl-run: launch %d of at most %d on %s (%d workers)\n", restart + 1,
                    o->max_restarts + 1, hosts, h->total - 1);
        int rc = launch(o, h, restart, reason, &aborted);
        if (o->dry_run) return 0;
        sl += (size_t)snprintf(summary + sl, sl < sizeof summary ? sizeof summary - sl : 0,
                               "  launch %d on %s: exit %d after %.0f s%s\n", restart + 1, hosts, rc,
                               hcl_now() - t0, aborted ? " (rank 0 aborted: a worker was lost)" : "");
        if (sl >= sizeof summary) sl = sizeof summary - 1;
        if (rc == 0 || stop_signal) return rc;
        if (restart == o->max_restarts) {
            fprintf(stderr, "hcl-run: gave up: no restart left\n%s", summary);
            return 1;
        }
        int dropped = hcl_run_drop_dead(h, reason, sizeof reason);
        snprintf(reason + strlen(reason), sizeof reason - strlen(reason), "%slaunch %d ended with exit %d",
                 dropped ? "; " : "", restart + 1, rc);
        if (h->total - 1 < o->min_workers) {
            fprintf(stderr, "hcl-run: gave up: %s: %d workers left, --min-workers %d\n%s", reason,
                    h->total > 0 ? h->total - 1 : 0, o->min_workers, summary);
            return 1;
        }
        fprintf(stderr, "hcl-run: %s; relaunching with --resume auto\n", reason);
    }
}

int main(int argc, char **argv) {
    hcl_run_opts o;
    hcl_run_hosts h;
    char err[HCL_ERR_MAX];
    if (parse_args(argc, argv, &o, err) != 0) {
        fprintf(stderr, "hcl-run: %s\n", err);
        return 2;
    }
    if (hcl_run_read_hostfile(o.hostfile, &h, err) != 0) {
        fprintf(stderr, "hcl-run: %s\n", err);
        hcl_run_free_hosts(&h);
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    sa.sa_handler = on_checkpoint;
    sigaction(SIGUSR1, &sa, NULL);
    int rc = run_loop(&o, &h);
    hcl_run_free_hosts(&h);
    return rc;
}
