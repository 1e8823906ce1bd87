/* jobs: see jobs.h. */
#include "jobs.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

void jobs_init(hcl_jobs *js, const hcl_jobs_config *c, double now) {
    memset(js, 0, sizeof *js);
    js->c = *c;
    js->next_step = c->start_step;
    js->snapshot_at = -1;
    js->last_snapshot = -1;
    js->last_ckpt_time = now;
    js->last_ckpt_step = c->last_ckpt_step;
    snprintf(js->last_ckpt_path, sizeof js->last_ckpt_path, "%s", c->last_ckpt_path ? c->last_ckpt_path : "");
    js->c.last_ckpt_path = NULL;
    if (c->start_step == 0 && c->checkpoint_every > 0) {
        js->snapshot_at = 0;   /* the initial weights */
        js->snapshot_why = JOBS_SNAP_CHECKPOINT;
    }
}

static void reply(hcl_jobs_reply *out, int kind, int64_t step, enum ctl_error code, const char *msg) {
    out->kind = kind;
    out->step = step;
    out->code = code;
    out->msg = msg;
}

static void set_value(hcl_jobs *js, const ctl_request *rq) {
    switch (rq->key) {
    case CTL_KEY_LR_SCALE: js->c.lr_scale = rq->value; break;
    case CTL_KEY_LOG_EVERY: js->c.log_every = (int64_t)rq->value; break;
    case CTL_KEY_CHECKPOINT_INTERVAL: js->c.checkpoint_interval = rq->value; break;
    case CTL_KEY_CHECKPOINT_EVERY: js->c.checkpoint_every = (int64_t)rq->value; break;
    }
}

void jobs_command(hcl_jobs *js, const ctl_request *rq, int can_wait, hcl_jobs_reply *out) {
    const int64_t at = js->next_step;
    switch (rq->cmd) {
    case CTL_CMD_PAUSE:
        if (js->paused || js->stop_req)
            return reply(out, JOBS_REPLY_ERROR, 0, CTL_ERROR_REFUSED, js->paused ? "already paused" : "stopping");
        js->paused = 1;
        LOG_INFO("hclctl pause: paused after step %lld", (long long)at);
        return reply(out, JOBS_REPLY_OK, at, 0, "paused");
    case CTL_CMD_RESUME:
        if (!js->paused) return reply(out, JOBS_REPLY_ERROR, 0, CTL_ERROR_REFUSED, "not paused");
        js->paused = 0;
        LOG_INFO("hclctl resume: running again from step %lld", (long long)at);
        return reply(out, JOBS_REPLY_OK, at, 0, "running");
    case CTL_CMD_CHECKPOINT:
        if (js->last_snapshot == at && js->snapshot_at < 0 && js->last_ckpt_step == at)
            return reply(out, JOBS_REPLY_OK, at, 0, js->last_ckpt_path);   /* written already */
        if (!can_wait)
            return reply(out, JOBS_REPLY_ERROR, 0, CTL_ERROR_BUSY, "too many checkpoint requests waiting");
        if (js->snapshot_at < 0) js->snapshot_at = at;
        js->snapshot_why |= JOBS_SNAP_CHECKPOINT;
        LOG_INFO("hclctl checkpoint: at step %lld", (long long)js->snapshot_at);
        return reply(out, JOBS_REPLY_LATER, js->snapshot_at, 0, NULL);
    case CTL_CMD_STOP:
        js->stop_req = 1;
        js->stop_no_ckpt = rq->no_checkpoint;
        LOG_INFO("hclctl stop: stopping at step %lld%s", (long long)at,
                 rq->no_checkpoint ? " without a checkpoint" : "");
        return reply(out, JOBS_REPLY_OK, at, 0,
                     rq->no_checkpoint ? "stopping without a checkpoint" : "stopping after a checkpoint");
    case CTL_CMD_SET:
        set_value(js, rq);
        LOG_INFO("hclctl %s: takes effect at step %lld (lr scale %.6g)", rq->text, (long long)at + 1,
                 js->c.lr_scale);
        return reply(out, JOBS_REPLY_OK, at + 1, 0, NULL);
    }
    reply(out, JOBS_REPLY_ERROR, 0, CTL_ERROR_UNKNOWN_TYPE, "unknown command");
}

static int is_log_step(const hcl_jobs *js, int64_t step) {
    return (step + 1) % js->c.log_every == 0 || step + 1 == js->c.total_steps;
}

/* Whether a checkpoint is due after `done` updates. */
static int checkpoint_due(const hcl_jobs *js, int64_t done, double now) {
    if (done == js->c.total_steps) return 1;
    if (js->c.checkpoint_every > 0 && done % js->c.checkpoint_every == 0) return 1;
    if (js->c.checkpoint_interval > 0 && now - js->last_ckpt_time >= js->c.checkpoint_interval) return 1;
    return 0;
}

static int snapshot_job(hcl_jobs *js, hcl_job *j, int64_t step, int why) {
    j->flags = HCL_BATCH_SNAPSHOT;
    j->step = step;
    j->why = why;
    if (why & JOBS_SNAP_CHECKPOINT) js->last_snapshot = step;
    js->snapshot_at = -1;
    js->snapshot_why = 0;
    return JOBS_READY;
}

static int train_job(hcl_jobs *js, const hcl_jobs_events *ev, hcl_job *j) {
    const int64_t s = js->next_step++;
    j->flags = HCL_BATCH_TRAIN;
    j->log = is_log_step(js, s);
    if (js->c.workers > 1 && j->log) j->flags |= HCL_BATCH_CHECK;
    j->step = s;
    j->epoch = s / js->c.steps_per_epoch;
    j->n = js->c.batch;
    if (js->c.val_batches > 0 && j->log) {
        js->eval_left = js->c.val_batches;
        js->eval_next = 0;
        js->eval_step = s;
        js->eval_epoch = j->epoch;
    }
    if (js->ckpt_signal || checkpoint_due(js, s + 1, ev->now)) {
        if (js->ckpt_signal) LOG_INFO("checkpoint requested by signal: after step %lld", (long long)s + 1);
        js->ckpt_signal = 0;
        js->snapshot_at = s + 1;
        js->snapshot_why |= JOBS_SNAP_CHECKPOINT;
        js->last_ckpt_time = ev->now;   /* the interval counts from the decision */
    }
    if (js->c.eval_every > 0 && ((s + 1) % js->c.eval_every == 0 || s + 1 == js->c.total_steps)) {
        js->snapshot_at = s + 1;
        js->snapshot_why |= JOBS_SNAP_EVAL;
    }
    return JOBS_READY;
}

static int eval_job(hcl_jobs *js, hcl_job *j) {
    j->flags = HCL_BATCH_EVAL;
    j->step = js->eval_step;
    j->epoch = js->eval_epoch;
    j->eval_index = js->eval_next++;
    int64_t start = (int64_t)j->eval_index * js->c.batch;
    j->n = js->c.val_rows - start < js->c.batch ? js->c.val_rows - start : js->c.batch;
    js->eval_left--;
    return JOBS_READY;
}

int jobs_next(hcl_jobs *js, const hcl_jobs_events *ev, hcl_job *j) {
    memset(j, 0, sizeof *j);
    if (ev->checkpoint_signal) js->ckpt_signal = 1;
    if (ev->stop_signal) js->stopping = 1;
    if (js->stop_req && !js->stopping) {
        js->stopping = 1;
        if (js->stop_no_ckpt) js->last_snapshot = js->next_step;   /* nothing to write at the stop */
    }
    if (js->eval_left == 0 && js->snapshot_at >= 0) return snapshot_job(js, j, js->snapshot_at, js->snapshot_why);
    if (js->paused && !js->stopping && js->eval_left == 0) {
        /* Paused: no batches; a PING now and then keeps the workers' watchdog quiet. */
        double ping = js->c.worker_timeout / 4 < 5 ? js->c.worker_timeout / 4 : 5;
        if (js->c.workers > 0 && ev->now - js->last_ping > ping) {
            js->last_ping = ev->now;
            j->flags = HCL_BATCH_PING;
            j->step = js->next_step;
            return JOBS_READY;
        }
        return JOBS_IDLE;
    }
    if (js->eval_left == 0 && !js->stopped && js->next_step < js->c.total_steps && js->stopping) {
        /* SIGTERM, SIGINT, SIGUSR2, hclctl stop: a checkpoint at this boundary, then STOP. */
        const int written = js->last_snapshot == js->next_step;
        LOG_INFO("stop requested: %s at step %lld, then exit", written ? "no checkpoint" : "checkpoint",
                 (long long)js->next_step);
        js->stopped = 1;
        if (!written) return snapshot_job(js, j, js->next_step, JOBS_SNAP_CHECKPOINT);
    }
    if (js->stopped && js->snapshot_at < 0) {
        if (js->stopped == 2) return JOBS_DONE;
        js->stopped = 2;
        j->flags = HCL_BATCH_STOP;
        j->step = js->next_step;
        return JOBS_READY;
    }
    if (js->eval_left > 0) return eval_job(js, j);
    if (js->next_step < js->c.total_steps) return train_job(js, ev, j);
    if (!js->stopped) {
        js->stopped = 2;
        j->flags = HCL_BATCH_STOP;
        j->step = js->c.total_steps;
        return JOBS_READY;
    }
    return JOBS_DONE;
}

void jobs_checkpoint_written(hcl_jobs *js, int64_t step, const char *path) {
    js->last_ckpt_step = step;
    snprintf(js->last_ckpt_path, sizeof js->last_ckpt_path, "%s", path);
}

enum hcl_run_state jobs_run_state(const hcl_jobs *js) {
    if (js->stopping || js->stop_req) return HCL_RUN_STATE_STOPPING;
    return js->paused ? HCL_RUN_STATE_PAUSED : HCL_RUN_STATE_RUNNING;
}
