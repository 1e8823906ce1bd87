/* hclctl_watch: `hclctl watch` (tools/hclctl.h): the step events of one job, or of several
 * (--run-dir given more than once), in one zmq_poll loop on this thread.
 *
 * Each job has its DEALER (requests) and, once the job said where, a SUB socket on its watch
 * endpoint: one line per StepEvent. While no event comes for --timeout ms, a status request
 * checks that the job is still there. One job: lines as they always were; a status of "done"
 * ends the watch, no answer is exit 3. Several jobs: each line starts with the job's name (its
 * run directory's basename, or the full path when two basenames are the same; --json: a "job"
 * key), and a job that goes is reported once and the others go on: "NAME: ended" when it
 * closed its control plane (its control.endpoint is gone, or its status says done), "NAME:
 * lost" when it no longer answers and left its control.endpoint behind (killed, hung). The
 * watch ends when every job has: exit 0, or 3 when one was lost. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "hclctl.h"
#include "util.h"

#define WATCH_POLL_MS 200

enum { JOB_FOLLOWING, JOB_ENDED, JOB_LOST };

typedef struct {
    char name[PATH_MAX];   /* the line prefix; "" when watching one job */
    char dir[PATH_MAX];    /* the run directory (resolved), "" when watching one job */
    client *cl;
    void *sub;             /* the watch socket; NULL until the job said where it is */
    uint64_t asked;        /* id of the request awaiting its reply (watch, status), 0 none */
    double since;          /* the last event or reply, or when the request went out */
    int end;               /* JOB_* */
} watch_job;

/* ---- lines ----------------------------------------------------------------------------------- */

static void print_event(const watch_job *j, const Hcl__StepEvent *e) {
    if (hclctl_flag.json) {
        hcl_json *o = json_line();
        if (j->name[0]) json_string(o, "job", j->name);
        json_int(o, "step", e->step);
        json_int(o, "total_steps", e->total_steps);
        json_int(o, "epoch", e->epoch);
        json_number(o, "loss", e->loss);
        json_number(o, "lr", e->lr);
        json_number(o, "logit_scale", e->logit_scale);
        json_number(o, "samples_per_s", e->samples_per_s);
        json_seconds(o, "eta_s", e->eta_s >= 0 ? e->eta_s : NAN);
        json_string(o, "state", state_name(e->state));
        json_seconds(o, "time", e->time);
        json_print();
    } else {
        char eta[32];
        duration(eta, sizeof eta, e->eta_s);
        printf("%s%sstep %" PRId64 "/%" PRId64 " epoch %" PRId64 " loss %.4f lr %.3g logit_scale %.2f "
               "samples/s %.0f eta %s %s\n", j->name, j->name[0] ? ": " : "", e->step, e->total_steps,
               e->epoch, e->loss, e->lr, e->logit_scale, e->samples_per_s, eta, state_name(e->state));
    }
    fflush(stdout);
}

/* The job has gone (end: JOB_ENDED or JOB_LOST): one line when several are watched; its
 * sockets closed. */
static void job_finish(watch_job *j, int end) {
    j->end = end;
    if (j->name[0] && hclctl_flag.json) {
        hcl_json *o = json_line();
        json_string(o, "job", j->name);
        json_string(o, "end", end == JOB_LOST ? "lost" : "ended");
        json_print();
    } else if (j->name[0]) {
        printf("%s: %s\n", j->name, end == JOB_LOST ? "lost" : "ended");
        fflush(stdout);
    }
    if (j->sub) zmq_close(j->sub);
    j->sub = NULL;
    client_close(j->cl);
}

/* ---- one job's sockets ----------------------------------------------------------------------- */

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

static void job_subscribe(watch_job *j, const char *watch_ep) {
    char ep[EP_MAX];
    watch_endpoint(j->cl, watch_ep, ep);
    j->sub = client_socket(j->cl, ZMQ_SUB, ep);
    zmq_setsockopt(j->sub, ZMQ_SUBSCRIBE, "", 0);
}

/* One event off the job's SUB socket, if one is there: 1 printed, 0 not. */
static int job_event(watch_job *j) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    int got = 0;
    if (zmq_msg_recv(&m, j->sub, ZMQ_DONTWAIT) >= 0) {
        Hcl__StepEvent *e = hcl__step_event__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
        if (e) {
            print_event(j, e);
            got = 1;
            hcl__step_event__free_unpacked(e, NULL);
        }
    }
    zmq_msg_close(&m);
    j->since = hcl_now();
    return got;
}

/* Ask the job where its events are (no SUB socket yet) or whether it is still there. */
static void job_ask(watch_job *j) {
    Hcl__ControlRequest rq;
    request_bodies b;
    build_request(&rq, &b, j->sub ? "status" : "watch", NULL);
    uint64_t id = client_send(j->cl, &rq);
    j->asked = id ? id : j->cl->next_id;   /* not even queued: no answer will come */
    j->since = hcl_now();
}

/* The reply to the request in flight, if it is there. An error reply (busy: no status yet)
 * still says the job is there. */
static void job_reply(watch_job *j) {
    Hcl__ControlReply *r = client_take(j->cl, j->asked);
    if (!r) return;
    if (j->asked) {
        j->asked = 0;
        j->since = hcl_now();
        if (r->ok && r->body_case == HCL__CONTROL_REPLY__BODY_WATCH && !j->sub)
            job_subscribe(j, r->watch->endpoint);
        else if (r->ok && r->body_case == HCL__CONTROL_REPLY__BODY_STATUS &&
                 r->status->state == HCL__RUN_STATE__RUN_STATE_DONE)
            job_finish(j, JOB_ENDED);
    }
    hcl__control_reply__free_unpacked(r, NULL);
}

/* A job that closes its control plane removes its control.endpoint (coordinator/control.h). */
static int job_closed(const watch_job *j) {
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/control.endpoint", j->dir);
    return j->dir[0] && access(path, F_OK) != 0 && errno == ENOENT;
}

/* Time passing: no reply within --timeout ms, the job is gone; no event for as long, ask. */
static void job_tick(watch_job *j, double now) {
    double quiet = now - j->since, timeout = hclctl_flag.timeout / 1e3;
    if (j->asked && quiet > timeout) {
        if (!j->name[0])
            fail(EXIT_NOANSWER, "the job at %s stopped answering (no answer within %lld ms)",
                 j->cl->endpoint, (long long)hclctl_flag.timeout);
        job_finish(j, job_closed(j) ? JOB_ENDED : JOB_LOST);
    } else if (!j->asked && quiet >= timeout) {
        if (j->sub && job_closed(j)) job_finish(j, JOB_ENDED);
        else job_ask(j);
    }
}

/* ---- the loop -------------------------------------------------------------------------------- */

/* Every job's sockets in one zmq_poll, until every job has gone, --count events or an
 * interrupt. Returns the exit code: 0, or EXIT_NOANSWER when a job was lost. */
static int watch_loop(watch_job *jobs, int n) {
    zmq_pollitem_t *items = hcl_calloc((size_t)(2 * n), sizeof *items);
    int *owner = hcl_calloc((size_t)(2 * n), sizeof *owner);
    int64_t seen = 0, count = hclctl_flag.count;
    int live = n;
    while (live && !hclctl_interrupted && (count == 0 || seen < count)) {
        int k = 0;
        for (int i = 0; i < n; i++) {
            if (jobs[i].end) continue;
            items[k] = (zmq_pollitem_t){jobs[i].cl->dealer, 0, ZMQ_POLLIN, 0};
            owner[k++] = i;
            if (!jobs[i].sub) continue;
            items[k] = (zmq_pollitem_t){jobs[i].sub, 0, ZMQ_POLLIN, 0};
            owner[k++] = i;
        }
        if (zmq_poll(items, k, WATCH_POLL_MS) > 0) {
            for (int m = 0; m < k && (count == 0 || seen < count); m++) {
                watch_job *j = &jobs[owner[m]];
                if (j->end || !(items[m].revents & ZMQ_POLLIN)) continue;
                if (items[m].socket == j->sub) seen += job_event(j);
                else job_reply(j);
            }
        }
        if (hclctl_interrupted) break;
        live = 0;
        for (int i = 0; i < n; i++) {
            if (!jobs[i].end) job_tick(&jobs[i], hcl_now());
            live += !jobs[i].end;
        }
    }
    int code = 0;
    for (int i = 0; i < n; i++) {
        if (jobs[i].end == JOB_LOST) code = EXIT_NOANSWER;
        if (jobs[i].sub) zmq_close(jobs[i].sub);
    }
    free(items);
    free(owner);
    return code;
}

int watch_one(client *cl, const char *watch_ep) {
    watch_job j;
    memset(&j, 0, sizeof j);
    j.cl = cl;
    job_subscribe(&j, watch_ep);
    j.since = hcl_now();
    return watch_loop(&j, 1);
}

/* ---- several jobs ---------------------------------------------------------------------------- */

/* Each --run-dir resolved, none the same directory as another. Bad: fail(EXIT_USAGE). */
static void job_dirs(watch_job *jobs, const char *const *dirs, int n) {
    for (int i = 0; i < n; i++) {
        if (!realpath(dirs[i], jobs[i].dir))
            fail(EXIT_USAGE, "watch: --run-dir %s: no control socket (%s)", dirs[i],
                 errno == ENOENT ? "no such directory" : strerror(errno));
        for (int k = 0; k < i; k++)
            if (!strcmp(jobs[k].dir, jobs[i].dir))
                fail(EXIT_USAGE, "watch: --run-dir %s: the same run directory as --run-dir %s", dirs[i], dirs[k]);
    }
}

/* The job in run directory dirs[i] has a control socket (its control.endpoint, and the socket
 * file when it is ipc): its endpoint and file_key (control.endpoint's CURVE server key, or "").
 * Bad: fail(EXIT_USAGE). */
static void job_check(watch_job *jobs, int i, const char *const *dirs, char file_key[41]) {
    watch_job *j = &jobs[i];
    char err[HCL_ERR_MAX], path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/control.endpoint", dirs[i]);
    if (access(path, F_OK) != 0)
        fail(EXIT_USAGE, "watch: --run-dir %s: no control socket (no %s: is the job running?)", dirs[i], path);
    if (client_read_endpoint(j->cl, dirs[i], file_key, err) != 0) fail(EXIT_USAGE, "watch: %s", err);
    if (strncmp(j->cl->endpoint, "ipc://", 6)) return;
    struct stat st;
    const char *ipc = j->cl->endpoint + 6;
    int rc = stat(ipc, &st);
    if (rc != 0 || !S_ISSOCK(st.st_mode))
        fail(EXIT_USAGE, "watch: --run-dir %s: no control socket (%s: %s)", dirs[i], ipc,
             rc != 0 ? strerror(errno) : "not a socket");
}

/* Each job's name: its run directory's basename, the full path when another has the same. */
static void job_names(watch_job *jobs, int n) {
    for (int i = 0; i < n; i++) {
        const char *base = strrchr(jobs[i].dir, '/') + 1;
        int clash = !*base;
        for (int k = 0; k < n && !clash; k++)
            clash = k != i && !strcmp(base, strrchr(jobs[k].dir, '/') + 1);
        snprintf(jobs[i].name, sizeof jobs[i].name, "%s", clash ? jobs[i].dir : base);
    }
}

int watch_many(const char *const *dirs, int n) {
    watch_job *jobs = hcl_calloc((size_t)n, sizeof *jobs);
    client *cls = hcl_calloc((size_t)n, sizeof *cls);
    job_dirs(jobs, dirs, n);
    for (int i = 0; i < n; i++) {
        char file_key[41];
        jobs[i].cl = &cls[i];
        job_check(jobs, i, dirs, file_key);
        client_keys(&cls[i], file_key);
    }
    job_names(jobs, n);
    void *ctx = zmq_ctx_new();
    HCL_CHECK(ctx, "zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
    zmq_ctx_set(ctx, ZMQ_BLOCKY, 0);
    for (int i = 0; i < n; i++) {
        client_open(&cls[i], ctx);
        job_ask(&jobs[i]);
    }
    int code = watch_loop(jobs, n);
    for (int i = 0; i < n; i++) client_close(&cls[i]);
    zmq_ctx_term(ctx);
    free(jobs);
    free(cls);
    return code;
}
