/* test_jobs: the coordinator's job state machine (coordinator/jobs.c), without MPI or ZeroMQ.
 * Each case drives jobs_next (with commands, signals and a clock) and compares the jobs it
 * hands out, written as a trace:
 *   T3     TRAIN of step 3 (0-based)      T3L  a logged step      T3LC  ... with the checksum CHECK
 *   E3.1/8 EVAL batch 1 (8 rows) after step 3
 *   S4c    SNAPSHOT of 4 updates for a checkpoint (e: an evaluation, ce: both)
 *   P2     PING at step 2                 X4   STOP at step 4        .  IDLE (paused) */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "jobs.h"
#include "log.h"

static hcl_jobs_config base(void) {
    hcl_jobs_config c = {0};
    c.total_steps = 10;
    c.steps_per_epoch = 5;
    c.batch = 8;
    c.val_rows = 12;
    c.log_every = 1000;           /* only the last step is logged */
    c.workers = 2;
    c.worker_timeout = 8;         /* a PING every 2 s while paused */
    c.last_ckpt_step = -1;
    c.last_ckpt_path = "";
    c.lr_scale = 1;
    return c;
}

/* One job (or IDLE / DONE) appended to the trace. */
static int step_trace(hcl_jobs *js, const hcl_jobs_events *ev, char *out, size_t cap) {
    hcl_job j;
    int k = jobs_next(js, ev, &j);
    char t[48] = "";
    if (k == JOBS_IDLE) snprintf(t, sizeof t, ".");
    else if (k == JOBS_DONE) return k;
    else if (j.flags & HCL_BATCH_TRAIN)
        snprintf(t, sizeof t, "T%lld%s%s", (long long)j.step, j.log ? "L" : "", (j.flags & HCL_BATCH_CHECK) ? "C" : "");
    else if (j.flags & HCL_BATCH_EVAL)
        snprintf(t, sizeof t, "E%lld.%d/%lld", (long long)j.step, j.eval_index, (long long)j.n);
    else if (j.flags & HCL_BATCH_SNAPSHOT)
        snprintf(t, sizeof t, "S%lld%s%s", (long long)j.step, (j.why & JOBS_SNAP_CHECKPOINT) ? "c" : "",
                 (j.why & JOBS_SNAP_EVAL) ? "e" : "");
    else if (j.flags & HCL_BATCH_PING) snprintf(t, sizeof t, "P%lld", (long long)j.step);
    else if (j.flags & HCL_BATCH_STOP) snprintf(t, sizeof t, "X%lld", (long long)j.step);
    size_t len = strlen(out);
    snprintf(out + len, cap - len, "%s%s", len ? " " : "", t);
    return k;
}

/* Jobs until DONE (at most n), each at `now` + dt * its index, no signal. */
static const char *run(hcl_jobs *js, int n, double now, double dt) {
    static char out[2048];
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        hcl_jobs_events ev = {now + dt * i, 0, 0};
        if (step_trace(js, &ev, out, sizeof out) == JOBS_DONE) break;
    }
    return out;
}

#define CHECK_TRACE(got, want) do { const char *_g = (got); \
    CHECK(strcmp(_g, want) == 0, "trace\n  got  %s\n  want %s", _g, want); } while (0)

static hcl_jobs_reply command(hcl_jobs *js, enum ctl_cmd cmd, int no_checkpoint, int can_wait) {
    ctl_request rq;
    memset(&rq, 0, sizeof rq);
    rq.cmd = cmd;
    rq.no_checkpoint = no_checkpoint;
    hcl_jobs_reply rep;
    jobs_command(js, &rq, can_wait, &rep);
    return rep;
}

static void test_sequence(void) {
    hcl_jobs js;
    hcl_jobs_config c = base();
    c.start_step = 7;                           /* resumed at step 7 */
    jobs_init(&js, &c, 0);
    /* the last step is a checkpoint and logged; 2 workers compare checksums after it */
    CHECK_TRACE(run(&js, 20, 0, 0), "T7 T8 T9LC S10c X10");
    hcl_job j;
    hcl_jobs_events ev = {0, 0, 0};
    CHECK(jobs_next(&js, &ev, &j) == JOBS_DONE, "DONE after STOP");
    CHECK(js.next_step == 10, "next_step %lld", (long long)js.next_step);
    /* the epoch of a step, and one worker: no CHECK */
    c = base();
    c.workers = 1;
    c.log_every = 3;
    jobs_init(&js, &c, 0);
    CHECK(jobs_next(&js, &ev, &j) == JOBS_READY && j.epoch == 0 && j.n == 8, "step 0: epoch 0, 8 rows");
    for (int s = 1; s < 6; s++) jobs_next(&js, &ev, &j);
    CHECK(j.step == 5 && j.epoch == 1 && !(j.flags & HCL_BATCH_CHECK) && j.log, "step 5: epoch 1, logged, no CHECK");
}

static void test_validation(void) {
    hcl_jobs js;
    hcl_jobs_config c = base();
    c.total_steps = 4;
    c.log_every = 2;
    c.val_batches = 2;                          /* 12 rows: 8 and 4 */
    jobs_init(&js, &c, 0);
    CHECK_TRACE(run(&js, 30, 0, 0), "T0 T1LC E1.0/8 E1.1/4 T2 T3LC E3.0/8 E3.1/4 S4c X4");
}

static void test_checkpoint_every(void) {
    hcl_jobs js;
    hcl_jobs_config c = base();
    c.total_steps = 5;
    c.checkpoint_every = 2;
    jobs_init(&js, &c, 0);                      /* the initial weights first */
    CHECK_TRACE(run(&js, 30, 0, 0), "S0c T0 T1 S2c T2 T3 S4c T4LC S5c X5");
    c.start_step = 2;                           /* resumed: no step-0 checkpoint */
    jobs_init(&js, &c, 0);
    CHECK_TRACE(run(&js, 30, 0, 0), "T2 T3 S4c T4LC S5c X5");
}

static void test_checkpoint_interval(void) {
    hcl_jobs js;
    hcl_jobs_config c = base();
    c.total_steps = 8;
    c.checkpoint_interval = 10;
    jobs_init(&js, &c, 0);
    /* a job every 4 s: due at 12 s (T3), then 10 s or more after that decision (T5 at 24 s) */
    CHECK_TRACE(run(&js, 30, 0, 4), "T0 T1 T2 T3 S4c T4 T5 S6c T6 T7LC S8c X8");
}

static void test_checkpoint_signal(void) {
    hcl_jobs js;
    char out[512] = "";
    hcl_jobs_config c = base();
    c.total_steps = 4;
    jobs_init(&js, &c, 0);
    hcl_jobs_events quiet = {0, 0, 0}, sig = {0, 1, 0};
    step_trace(&js, &quiet, out, sizeof out);   /* T0 */
    step_trace(&js, &sig, out, sizeof out);     /* T1, and a checkpoint after it */
    while (step_trace(&js, &quiet, out, sizeof out) != JOBS_DONE) {}
    CHECK_TRACE(out, "T0 T1 S2c T2 T3LC S4c X4");
    /* a signal while paused waits for the next step */
    out[0] = 0;
    jobs_init(&js, &c, 0);
    command(&js, CTL_CMD_PAUSE, 0, 1);
    hcl_jobs_events sig_at_0 = {0.5, 1, 0};
    step_trace(&js, &sig_at_0, out, sizeof out);
    command(&js, CTL_CMD_RESUME, 0, 1);
    while (step_trace(&js, &quiet, out, sizeof out) != JOBS_DONE) {}
    CHECK_TRACE(out, ". T0 S1c T1 T2 T3LC S4c X4");
}

static void test_checkpoint_request(void) {
    hcl_jobs js;
    hcl_jobs_config c = base();
    c.total_steps = 6;
    jobs_init(&js, &c, 0);
    CHECK_TRACE(run(&js, 2, 0, 0), "T0 T1");
    hcl_jobs_reply rep = command(&js, CTL_CMD_CHECKPOINT, 0, 1);
    CHECK(rep.kind == JOBS_REPLY_LATER && rep.step == 2, "checkpoint: answered when written (kind %d, step %lld)",
          rep.kind, (long long)rep.step);
    rep = command(&js, CTL_CMD_CHECKPOINT, 0, 0);
    CHECK(rep.kind == JOBS_REPLY_ERROR && rep.code == CTL_ERROR_BUSY, "no room for another waiter: BUSY");
    CHECK_TRACE(run(&js, 1, 0, 0), "S2c");
    /* asked again at the same step before it is on disk: another snapshot */
    rep = command(&js, CTL_CMD_CHECKPOINT, 0, 1);
    CHECK(rep.kind == JOBS_REPLY_LATER, "not written yet: later (kind %d)", rep.kind);
    CHECK_TRACE(run(&js, 1, 0, 0), "S2c");
    /* written: the same request is answered at once with its path */
    jobs_checkpoint_written(&js, 2, "run/checkpoints/step-00000002");
    rep = command(&js, CTL_CMD_CHECKPOINT, 0, 1);
    CHECK(rep.kind == JOBS_REPLY_OK && rep.step == 2 && rep.msg && strcmp(rep.msg, "run/checkpoints/step-00000002") == 0,
          "already written: ok at once (kind %d, msg %s)", rep.kind, rep.msg ? rep.msg : "NULL");
    CHECK_TRACE(run(&js, 30, 0, 0), "T2 T3 T4 T5LC S6c X6");
}

static void test_pause(void) {
    hcl_jobs js;
    hcl_jobs_config c = base();
    c.total_steps = 3;
    jobs_init(&js, &c, 0);
    CHECK_TRACE(run(&js, 1, 0, 0), "T0");
    hcl_jobs_reply rep = command(&js, CTL_CMD_PAUSE, 0, 1);
    CHECK(rep.kind == JOBS_REPLY_OK && rep.step == 1 && strcmp(rep.msg, "paused") == 0, "pause at step 1");
    CHECK(jobs_run_state(&js) == HCL_RUN_STATE_PAUSED, "state paused");
    rep = command(&js, CTL_CMD_PAUSE, 0, 1);
    CHECK(rep.kind == JOBS_REPLY_ERROR && rep.code == CTL_ERROR_REFUSED && strcmp(rep.msg, "already paused") == 0,
          "pause twice: refused");
    /* a PING when more than the period (8 s / 4 = 2 s) has passed since the last one */
    char out[256] = "";
    const double times[] = {1.0, 2.5, 3.0, 4.4, 4.6, 5.0};
    for (int i = 0; i < 6; i++) {
        hcl_jobs_events ev = {times[i], 0, 0};
        step_trace(&js, &ev, out, sizeof out);
    }
    CHECK_TRACE(out, ". P1 . . P1 .");
    rep = command(&js, CTL_CMD_RESUME, 0, 1);
    CHECK(rep.kind == JOBS_REPLY_OK && rep.step == 1 && strcmp(rep.msg, "running") == 0, "resume at step 1");
    CHECK(jobs_run_state(&js) == HCL_RUN_STATE_RUNNING, "state running");
    rep = command(&js, CTL_CMD_RESUME, 0, 1);
    CHECK(rep.kind == JOBS_REPLY_ERROR && strcmp(rep.msg, "not paused") == 0, "resume when running: refused");
    CHECK_TRACE(run(&js, 30, 6, 0), "T1 T2LC S3c X3");
    /* the worker in this process needs no PING */
    c.workers = 0;
    jobs_init(&js, &c, 0);
    command(&js, CTL_CMD_PAUSE, 0, 1);
    CHECK_TRACE(run(&js, 3, 100, 10), ". . .");
    /* validation batches already due are sent before the pause takes hold */
    c = base();
    c.total_steps = 4;
    c.log_every = 1;
    c.val_batches = 2;
    jobs_init(&js, &c, 0);
    CHECK_TRACE(run(&js, 1, 0, 0), "T0LC");
    command(&js, CTL_CMD_PAUSE, 0, 1);
    CHECK_TRACE(run(&js, 3, 0, 0), "E0.0/8 E0.1/4 .");
}

static void test_stop(void) {
    hcl_jobs js;
    hcl_jobs_config c = base();
    /* hclctl stop: a checkpoint of this step, then STOP */
    jobs_init(&js, &c, 0);
    CHECK_TRACE(run(&js, 2, 0, 0), "T0 T1");
    hcl_jobs_reply rep = command(&js, CTL_CMD_STOP, 0, 1);
    CHECK(rep.kind == JOBS_REPLY_OK && rep.step == 2 && strcmp(rep.msg, "stopping after a checkpoint") == 0, "stop");
    CHECK(jobs_run_state(&js) == HCL_RUN_STATE_STOPPING, "state stopping");
    rep = command(&js, CTL_CMD_PAUSE, 0, 1);
    CHECK(rep.kind == JOBS_REPLY_ERROR && strcmp(rep.msg, "stopping") == 0, "pause while stopping: refused");
    CHECK_TRACE(run(&js, 30, 0, 0), "S2c X2");
    CHECK(js.next_step == 2, "stopped at step 2");
    /* hclctl stop --no-checkpoint */
    jobs_init(&js, &c, 0);
    CHECK_TRACE(run(&js, 2, 0, 0), "T0 T1");
    rep = command(&js, CTL_CMD_STOP, 1, 1);
    CHECK(strcmp(rep.msg, "stopping without a checkpoint") == 0, "stop --no-checkpoint: %s", rep.msg);
    CHECK_TRACE(run(&js, 30, 0, 0), "X2");
    /* a stop signal; then one just after a checkpoint of that step: no second one */
    jobs_init(&js, &c, 0);
    char out[256] = "";
    hcl_jobs_events quiet = {0, 0, 0}, stop = {0, 0, 1};
    step_trace(&js, &quiet, out, sizeof out);
    while (step_trace(&js, &stop, out, sizeof out) != JOBS_DONE) {}
    CHECK_TRACE(out, "T0 S1c X1");
    c.checkpoint_every = 2;
    c.start_step = 1;
    jobs_init(&js, &c, 0);
    CHECK_TRACE(run(&js, 2, 0, 0), "T1 S2c");
    command(&js, CTL_CMD_STOP, 0, 1);
    CHECK_TRACE(run(&js, 30, 0, 0), "X2");
    /* a stop while paused ends the pause */
    c = base();
    jobs_init(&js, &c, 0);
    command(&js, CTL_CMD_PAUSE, 0, 1);
    CHECK_TRACE(run(&js, 1, 0, 0), ".");
    command(&js, CTL_CMD_STOP, 0, 1);
    CHECK_TRACE(run(&js, 30, 0, 0), "S0c X0");
}

static void test_eval_every(void) {
    hcl_jobs js;
    hcl_jobs_config c = base();
    c.total_steps = 5;
    c.eval_every = 2;
    jobs_init(&js, &c, 0);
    CHECK_TRACE(run(&js, 30, 0, 0), "T0 T1 S2e T2 T3 S4e T4LC S5ce X5");
    /* with a checkpoint at the same step: one snapshot for both */
    c.checkpoint_every = 4;
    jobs_init(&js, &c, 0);
    CHECK_TRACE(run(&js, 30, 0, 0), "S0c T0 T1 S2e T2 T3 S4ce T4LC S5ce X5");
}

static void test_set(void) {
    hcl_jobs js;
    hcl_jobs_config c = base();
    c.total_steps = 6;
    jobs_init(&js, &c, 0);
    CHECK_TRACE(run(&js, 2, 0, 0), "T0 T1");
    ctl_request rq;
    memset(&rq, 0, sizeof rq);
    rq.cmd = CTL_CMD_SET;
    rq.key = CTL_KEY_LOG_EVERY;
    rq.value = 2;
    snprintf(rq.text, sizeof rq.text, "set log_every=2");
    hcl_jobs_reply rep;
    jobs_command(&js, &rq, 1, &rep);
    CHECK(rep.kind == JOBS_REPLY_OK && rep.step == 3, "set: takes effect at step 3 (got %lld)", (long long)rep.step);
    rq.key = CTL_KEY_LR_SCALE;
    rq.value = 0.5;
    jobs_command(&js, &rq, 1, &rep);
    CHECK(js.c.lr_scale == 0.5 && js.c.log_every == 2, "settings: lr scale %g, log every %lld", js.c.lr_scale,
          (long long)js.c.log_every);
    rq.key = CTL_KEY_CHECKPOINT_EVERY;
    rq.value = 2;
    jobs_command(&js, &rq, 1, &rep);
    CHECK_TRACE(run(&js, 30, 0, 0), "T2 T3LC S4c T4 T5LC S6c X6");
}

int main(void) {
    log_init("test", 0, HCL_LOG_WARN);
    test_sequence();
    test_validation();
    test_checkpoint_every();
    test_checkpoint_interval();
    test_checkpoint_signal();
    test_checkpoint_request();
    test_pause();
    test_stop();
    test_eval_every();
    test_set();
    CHECK_DONE();
}
