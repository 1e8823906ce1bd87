/* train: see train.h. */
#include "train.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mpi.h>

#include "checkpoint.h"
#include "log.h"
#include "memlimit.h"
#include "transport.h"
#include "util.h"

int run_control_open(hcl_run *r, int world_size, char (*hosts)[CONTROL_HOST_MAX], char *err) {
    const hcl_config *c = &r->cfg;
    const int nworkers = world_size > 1 ? world_size - 1 : 1;
    r->hosts = hosts;
    if (control_open(&r->ctl, c->control[0] ? c->control : NULL, c->run_dir,
                     c->control_secret[0] ? c->control_secret : NULL,
                     c->control_clients[0] ? c->control_clients : NULL, (int)c->watch_port, err) != 0)
        return -1;
    hcl_setup *t = &r->tel_setup;
    if (control_telemetry_open(r->ctl, nworkers, NULL, (int)c->telemetry_port, t->tel_endpoint, t->tel_server_public,
                               t->tel_client_secret, err) != 0)
        return -1;
    for (int i = 0; i < nworkers; i++) {   /* worker i on rank i + 1, or in this process */
        const int rank = world_size > 1 ? i + 1 : 0;
        control_worker_where(r->ctl, i, rank, hosts ? hosts[rank] : NULL);
    }
    control_log(r->ctl);
    if (c->prometheus[0]) {
        if (prom_open(&r->prom, c->prometheus, r->st.prometheus_address, sizeof r->st.prometheus_address, err) != 0)
            return -1;
        LOG_INFO("Prometheus metrics at http://%s/metrics", r->st.prometheus_address);
    }
    return 0;
}

void run_free(hcl_run *r) {
    batcher_free(&r->bt);
    if (r->has_train) dataset_close(&r->train);
    if (r->has_val) dataset_close(&r->val);
    if (r->ck_model.params) model_free(&r->ck_model);
    if (r->has_ev) evaluator_free(&r->ev);
    free(r->snap);
    metrics_close(&r->metrics);
    tb_close(&r->tb);
    prom_close(r->prom);
    control_close(r->ctl);
    memset(r, 0, sizeof *r);
}

/* ---- signals and waits: the control socket is the coordinator's sleep ---------------------- */

/* Set by signal handlers, acted on at the next step boundary (jobs_next). */
static volatile sig_atomic_t sig_checkpoint, sig_stop;
static void on_checkpoint_signal(int sig) { (void)sig; sig_checkpoint = 1; }
static void on_stop_signal(int sig) { (void)sig; sig_stop = 1; }

void run_install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_checkpoint_signal;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_stop_signal;
    sigaction(SIGUSR2, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

/* Every second: a worker whose telemetry (the heartbeat) is silent for --worker-timeout is
 * lost: say which and end the job. MPI_Abort may itself hang on a cut network, so an alarm
 * ends this process regardless, and mpirun then takes the rest down. */
static void check_workers(hcl_run *r) {
    double now = hcl_now();
    if (now - r->last_health < 1.0 || !r->ctl || r->world_size < 2) return;
    r->last_health = now;
    int w = control_silent_worker(r->ctl, r->cfg.worker_timeout);
    if (w < 0) return;
    const hcl_worker_stat *ws = control_worker(r->ctl, w);
    char name[CONTROL_HOST_MAX + 64], why[CONTROL_HOST_MAX + 160];
    snprintf(why, sizeof why, "%s silent for %.1f s (--worker-timeout %.0f): lost",
             control_worker_name(r->ctl, w, name, sizeof name), ws ? now - ws->last_seen : 0.0,
             r->cfg.worker_timeout);
    LOG_ERROR("%s; aborting the job; the last checkpoint is %s", why,
              r->last_ckpt_path[0] ? r->last_ckpt_path : "none");
    metrics_event(&r->metrics, r->st.step, "abort", -1, why);   /* hcl-run ends a stuck mpirun on it */
    alarm(10);
    MPI_Abort(MPI_COMM_WORLD, 5);
    _exit(5);
}

/* A step running for more than 3 s: where each worker is (its phase and the fraction done, from
 * its heartbeats) on the progress line every second (every 10 s into a log), and the ETA counts
 * the step: the rest of a step as long as the recent ones, or before any, the time the loss
 * took so far over its fraction done (the loss is nearly all of a step this long). */
static void long_step(hcl_run *r) {
    const double now = hcl_now(), secs = now - r->metrics.t_last_step;
    if (!r->ctl || secs < 3.0 || now - r->last_in_step < (r->metrics.tty ? 1.0 : 10.0)) return;
    r->last_in_step = now;
    const int64_t step = r->st.step;
    char where[256] = "";
    double f = 1.0;   /* the loss's fraction done on the slowest worker; -1: one is elsewhere */
    for (int i = 0; i < r->world_size - 1; i++) {
        const hcl_worker_stat *w = control_worker(r->ctl, i);
        if (!w) break;
        char one[64];
        if (w->in_step != step || !w->phase[0]) snprintf(one, sizeof one, "worker %d between steps", i);
        else if (w->phase_done < 0) snprintf(one, sizeof one, "worker %d %s", i, w->phase);
        else snprintf(one, sizeof one, "worker %d %s %.0f%%", i, w->phase, 100.0 * w->phase_done);
        if (w->in_step != step || strcmp(w->phase, "loss") != 0 || w->phase_done < 0) f = -1.0;
        else if (f >= 0 && w->phase_done < f) f = w->phase_done;
        size_t k = strlen(where);
        snprintf(where + k, sizeof where - k, "%s%s", i ? ", " : "", one);
    }
    const double step_s = r->metrics.step_s, per = step_s > 0 ? step_s : f > 0 ? secs / f : -1.0;
    const double left = per > 0 ? (per > secs ? per - secs : 0.0) + per * (double)(r->total_steps - step - 1) : -1.0;
    r->st.eta_s = left;
    metrics_in_step(&r->metrics, step, secs, where, left);
}

/* A transport's wait that is not over yet: answer the control socket (or sleep 0.2 ms). MPI has
 * no descriptor to wake the poll, so the coordinator looks again after a timeout: half a step
 * (between 1 and 20 ms), 1 ms while batches are still being sent (soon). The jobs in flight leave the workers two batches of slack, so a result
 * noticed half a step late costs them nothing, while a wake-up every millisecond cost the
 * coordinator 0.2 ms of CPU per W1 step, taken from a worker's core when every core has one. */
static void idle_while_waiting(void *ctx, int soon) {
    hcl_run *r = ctx;
    if (r->ctl) {
        double ms = soon ? 1.0 : r->metrics.step_s * 500.0;
        control_service(r->ctl, &r->st, ms < 1.0 ? 1 : ms > 20.0 ? 20 : (int)ms);
        long_step(r);
    } else {
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    prom_update(r->prom, &r->st, r->ctl, r->world_size > 1);
    check_workers(r);
}

/* Paused with nothing in flight: sleep in the control socket until a command comes. */
static void idle_while_paused(hcl_run *r) {
    r->st.elapsed_s = hcl_now() - r->metrics.t_start;
    if (r->ctl) control_service(r->ctl, &r->st, 100);
    else usleep(100000);
    prom_update(r->prom, &r->st, r->ctl, r->world_size > 1);
    check_workers(r);
    metrics_pause(&r->metrics);
}

/* A relaunch by hcl-run (HCL_RUN_RESTART > 0, its reason in HCL_RUN_REASON): one event line in
 * metrics.jsonl and the count in hclctl status. */
static void log_restart(hcl_run *r) {
    const char *k = getenv("HCL_RUN_RESTART"), *why = getenv("HCL_RUN_REASON");
    char *end;
    long long n = k ? strtoll(k, &end, 10) : 0;
    if (!k || *end || n <= 0) return;
    r->st.restarts = n;
    LOG_INFO("restart %lld by hcl-run: %s", n, why ? why : "");
    metrics_event(&r->metrics, r->start_step, "restart", n, why ? why : "");
}

/* ---- the jobs ------------------------------------------------------------------------------ */

/* hclctl set changes settings the checkpoints' config text and hclctl status show. */
static void mirror_settings(hcl_run *r) {
    const hcl_jobs_config *c = &r->jobs.c;
    r->cfg.log_every = r->st.log_every = c->log_every;
    r->cfg.checkpoint_every = r->st.checkpoint_every = c->checkpoint_every;
    r->cfg.checkpoint_interval = r->st.checkpoint_interval_s = c->checkpoint_interval;
    r->lr_scale = r->st.lr_scale = c->lr_scale;
    r->st.state = jobs_run_state(&r->jobs);
}

/* The operator's commands take effect at this step boundary: the next job generated. */
static int next_job(hcl_run *r, hcl_job *j) {
    ctl_request rq;
    while (r->ctl && control_next(r->ctl, &rq)) {
        hcl_jobs_reply rep;
        jobs_command(&r->jobs, &rq, r->nckpt_waiters < CONTROL_QUEUE_MAX, &rep);
        if (rep.kind == JOBS_REPLY_OK) control_reply_ok(r->ctl, &rq, rep.step, rep.msg);
        else if (rep.kind == JOBS_REPLY_ERROR) control_reply_error(r->ctl, &rq, rep.code, rep.msg);
        else r->ckpt_waiters[r->nckpt_waiters++] = rq;   /* answered by run_checkpoint */
    }
    hcl_jobs_events ev = {hcl_now(), sig_checkpoint, sig_stop};
    if (ev.checkpoint_signal) sig_checkpoint = 0;
    int k = jobs_next(&r->jobs, &ev, j);
    mirror_settings(r);
    return k;
}

static void submit(hcl_run *r, hcl_transport *tp, int slot, const hcl_job *j) {
    float lr = (j->flags & HCL_BATCH_TRAIN) ? (float)(optim_lr_at(&r->oc, j->step) * r->lr_scale) : 0.0f;
    batcher_pack(&r->bt, slot, j, lr, tp->outbox(tp, slot));
    tp->submit(tp, slot, j->flags, j->step);
}

/* An evaluation that has finished goes to metrics.jsonl (wait: block until it has). */
static void write_eval_line(hcl_run *r, int wait) {
    if (!r->has_ev) return;
    const char *line = evaluator_poll(&r->ev, wait);
    if (line) metrics_put(&r->metrics, line);
}

/* The answer to a SNAPSHOT job: the replica's state, for a checkpoint and/or an evaluation. */
static void take_snapshot(hcl_run *r, hcl_transport *tp, int64_t step, int why) {
    tp->snapshot(tp);
    if (why & JOBS_SNAP_CHECKPOINT) run_checkpoint(r, step);
    if ((why & JOBS_SNAP_EVAL) && r->has_ev) {
        /* one evaluation at a time: the previous one is written first (waited for if it is
         * still running: a slow evaluation holds the next back rather than losing it) */
        write_eval_line(r, 1);
        HCL_CHECK(evaluator_start(&r->ev, r->snap, step, tp->workers > 0) == 0, "evaluator busy after a wait");
    }
    write_eval_line(r, 0);
}

/* What a job's result means: hclctl status and watch, and after a logged step (and its
 * validation batches) its metrics line; a snapshot's checkpoint or evaluation. */
static void record(hcl_run *r, hcl_transport *tp, const hcl_job *j, const hcl_step_result *res) {
    if (j->flags & HCL_BATCH_TRAIN) {
        metrics_step(&r->metrics, res, &r->st);
        if (r->ctl) control_publish(r->ctl, &r->st);
        if (!j->log) return;
        metrics_logged(&r->metrics, res);
        if (r->val_batches > 0) return;
    } else if (j->flags & HCL_BATCH_EVAL) {
        if (!metrics_val(&r->metrics, res->loss, r->val_batches)) return;
    } else {
        if (j->flags & HCL_BATCH_SNAPSHOT) take_snapshot(r, tp, res->step, j->why);
        return;
    }
    const hcl_batcher *bt = &r->bt;
    metrics_write(&r->metrics, r->val_batches, bt->bal.adaptive ? bt->last_split : NULL, bt->nmsg, r->ctl,
                  r->world_size > 1);
}

/* ---- the run ------------------------------------------------------------------------------- */

/* The start line's workers: "one process on h1", "2 workers: rank 1 on h2, rank 2 on h3 (data
 * plane ...)"; ranks in a row on one host together ("ranks 1-8 on h2"); "..." when too long. */
static void workers_where(const hcl_run *r, int workers, char *out, size_t cap) {
    const char *plane = r->direct ? "data plane direct: they read their rows" : "data plane coordinator: rows sent";
    if (!workers) {
        snprintf(out, cap, "one process on %s", r->hosts ? r->hosts[0] : "this host");
        return;
    }
    char ranks[400];
    size_t n = (size_t)snprintf(ranks, sizeof ranks, "%d worker%s:", workers, workers > 1 ? "s" : "");
    for (int a = 1, b; a <= workers && n < sizeof ranks; a = b + 1) {
        const char *h = r->hosts ? r->hosts[a] : "?";
        for (b = a; b < workers && r->hosts && !strcmp(r->hosts[b + 1], h);) b++;
        if (a == b) n += (size_t)snprintf(ranks + n, sizeof ranks - n, "%s rank %d on %s", a > 1 ? "," : "", a, h);
        else n += (size_t)snprintf(ranks + n, sizeof ranks - n, "%s ranks %d-%d on %s", a > 1 ? "," : "", a, b, h);
    }
    if (n >= sizeof ranks) memcpy(ranks + sizeof ranks - 4, "...", 4);
    snprintf(out, cap, "%s (%s)", ranks, plane);
}

static hcl_transport *start_workers(hcl_run *r, const hcl_setup *su, int workers) {
    char err[HCL_ERR_MAX];
    const int nmsg = workers ? workers : 1;
    const size_t stride = batcher_message_bytes(&r->bt, nmsg, 0);
    hcl_transport *tp = workers ? transport_mpi_open(workers, su, stride, r->snap, r->snap_floats,
                                                     (hcl_idle){idle_while_waiting, r})
                                : transport_local_open(su, stride, r->snap, err);
    if (!tp) {
        LOG_ERROR("%s", err);
        return NULL;
    }
    batcher_start(&r->bt, nmsg, (uint64_t)r->cfg.seed, r->direct && workers > 0);
    hcl_jobs_config jc = {
        .start_step = r->start_step, .total_steps = r->total_steps, .steps_per_epoch = r->steps_per_epoch,
        .batch = r->batch, .val_rows = r->has_val ? r->val.n : 0, .val_batches = r->val_batches,
        .log_every = r->cfg.log_every, .checkpoint_every = r->cfg.checkpoint_every,
        .checkpoint_interval = r->cfg.checkpoint_interval, .eval_every = r->has_ev ? r->cfg.eval_every : 0,
        .workers = workers, .worker_timeout = r->cfg.worker_timeout, .last_ckpt_step = r->last_ckpt_step,
        .last_ckpt_path = r->last_ckpt_path, .lr_scale = r->lr_scale};
    jobs_init(&r->jobs, &jc, hcl_now());
    char where[640];
    workers_where(r, workers, where, sizeof where);
    LOG_INFO("training %s: %lld rows, %d views, loss %s, batch %lld, %lld steps (%lld per epoch), %s", r->cfg.data,
             (long long)r->train.n, r->mc.nviews, loss_kind_name(r->lc.kind), (long long)r->batch,
             (long long)r->total_steps, (long long)r->steps_per_epoch, where);
    metrics_start(&r->metrics, &r->mc, &r->lc, r->total_steps, r->start_step, r->batch, r->steps_per_epoch);
    log_restart(r);
    r->st.state = jobs_run_state(&r->jobs);
    r->st.lr_scale = r->lr_scale;
    return tp;
}

/* The last evaluations, the end of the run for hclctl, the closing log line. */
static void finish(hcl_run *r) {
    const hcl_jobs *js = &r->jobs;
    const hcl_metrics *m = &r->metrics;
    metrics_end(&r->metrics);
    write_eval_line(r, 1);
    if (r->has_ev && js->next_step == r->total_steps && r->last_ckpt_step == r->total_steps) {
        /* the end of the run: everything, by hcl-eval on the final checkpoint */
        char err[HCL_ERR_MAX];
        LOG_INFO("final evaluation of %s (hcl-eval)", r->last_ckpt_path);
        int th = (int)sysconf(_SC_NPROCESSORS_ONLN);
        char *json = evaluate_final(r->last_ckpt_path, r->cfg.data, r->cfg.val_data, th, err);
        if (!json) {
            LOG_ERROR("final evaluation failed: %s", err);
        } else {
            metrics_final_eval(&r->metrics, r->total_steps, json);
            free(json);
        }
    }
    r->st.state = HCL_RUN_STATE_DONE;
    if (r->ctl) control_service(r->ctl, &r->st, 0);
    prom_update(r->prom, &r->st, r->ctl, r->world_size > 1);
    double secs = hcl_now() - m->t_start;
    int64_t ran = js->next_step - r->start_step;
    memlimit_state ms;
    memlimit_read(&ms);
    LOG_DEBUG("memory: peak %.0f MB of address space, %.0f MB resident (run_check_memory expected %.0f, %.0f)",
              ms.vm_peak / MEMLIMIT_MB, ms.vm_hwm / MEMLIMIT_MB, r->mem_need[0] / MEMLIMIT_MB,
              r->mem_need[1] / MEMLIMIT_MB);
    if (js->next_step < r->total_steps)
        LOG_INFO("stopped at step %lld of %lld after %.1f s; resume with --resume auto",
                 (long long)js->next_step, (long long)r->total_steps, secs);
    else
        LOG_INFO("done: %lld steps in %.1f s (%.0f samples/s), final loss %.4f, logit scale %.2f, %lld skipped",
                 (long long)ran, secs, ran * r->batch / secs, m->logged.loss, m->logged.logit_scale,
                 (long long)m->skipped);
}

int run_train(hcl_run *r, const hcl_setup *su, int workers) {
    hcl_transport *tp = start_workers(r, su, workers);
    if (!tp) return 1;
    hcl_job slot[HCL_BATCHES_IN_FLIGHT];
    int head = 0, pending = 0, more = 1;
    for (;;) {
        /* Keep the transport's jobs in flight: the workers never wait for the coordinator to
         * pack (a worker in this process computes at submit time: one ahead is enough). */
        int idle = 0;
        while (more && pending < tp->in_flight) {
            const int s = (head + pending) % HCL_BATCHES_IN_FLIGHT;
            int k = next_job(r, &slot[s]);
            if (k != JOBS_READY) {
                more = k == JOBS_IDLE;
                idle = k == JOBS_IDLE;
                break;
            }
            submit(r, tp, s, &slot[s]);
            if (slot[s].flags & HCL_BATCH_STOP) {
                more = 0;
                break;
            }
            pending++;
        }
        if (!pending) {
            if (!idle) break;
            idle_while_paused(r);
            continue;
        }
        write_eval_line(r, 0);
        /* Once per job whatever the waits did: when the coordinator is the slower side its MPI
         * requests are complete before it looks, and the control socket must not starve. */
        if (r->ctl) control_service(r->ctl, &r->st, 0);
        hcl_step_result res;
        double done;
        const double *busy = tp->await(tp, head, &res, &done);
        metrics_done(&r->metrics, done);
        if (slot[head].flags & HCL_BATCH_TRAIN) batcher_observe(&r->bt, head, busy);
        record(r, tp, &slot[head], &res);
        head = (head + 1) % HCL_BATCHES_IN_FLIGHT;
        pending--;
    }
    tp->close(tp);
    batcher_stop(&r->bt);
    finish(r);
    return 0;
}
