/* metrics: see metrics.h. */
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "progress.h"
#include "util.h"

int metrics_open(hcl_metrics *m, const char *path, int append, char *err) {
    memset(m, 0, sizeof *m);
    json_init(&m->j);
    return append_open(&m->out, path, append ? 0 : O_TRUNC, err);
}

void metrics_close(hcl_metrics *m) {
    append_close(&m->out);
    json_free(&m->j);
    memset(m, 0, sizeof *m);
}

void metrics_start(hcl_metrics *m, const hcl_model_config *mc, const hcl_loss_config *lc, int64_t total_steps,
                   int64_t start_step, int64_t batch, int64_t steps_per_epoch) {
    m->mc = mc;
    m->supcon = lc->kind == HCL_LOSS_SUPCON || (lc->kind == HCL_LOSS_HYBRID && lc->base == HCL_LOSS_SUPCON);
    m->ce = lc->kind == HCL_LOSS_HYBRID;
    m->total_steps = total_steps;
    m->start_step = start_step;
    m->batch = batch;
    m->steps_per_epoch = steps_per_epoch;
    m->tty = isatty(STDERR_FILENO);
    m->t_start = m->t_window = m->t_done = hcl_now();
    m->t_last_step = m->t_start;
}

void metrics_done(hcl_metrics *m, double t) { m->t_done = t; }

void metrics_step(hcl_metrics *m, const hcl_step_result *res, hcl_status *st) {
    m->window_steps++;
    const double now = m->t_done;
    m->step_s = m->step_s ? 0.9 * m->step_s + 0.1 * (now - m->t_last_step) : now - m->t_last_step;
    m->t_last_step = now;
    st->step = res->step + 1;
    st->epoch = res->step / m->steps_per_epoch;
    st->loss = res->loss;
    st->lr = res->lr;
    st->logit_scale = res->logit_scale;
    st->samples_per_s = m->step_s > 0 ? m->batch / m->step_s : 0;
    st->eta_s = m->step_s * (double)(m->total_steps - res->step - 1);
    st->elapsed_s = now - m->t_start;
    st->skipped_steps = m->skipped + (res->skipped != 0);
    if (res->skipped) {
        m->skipped++;
        LOG_WARN("step %lld: non-finite loss or gradient on a worker, update skipped on all (%lld so far)",
                 (long long)res->step + 1, (long long)m->skipped);
    }
}

void metrics_logged(hcl_metrics *m, const hcl_step_result *res) {
    m->logged = *res;
    m->val_sum = 0;
    m->val_seen = 0;
}

int metrics_val(hcl_metrics *m, double loss, int val_batches) {
    m->val_sum += loss;
    return ++m->val_seen >= val_batches;
}

/* The metrics.jsonl line of the logged step (see metrics.h for its shape). */
/* "workers": each worker's last step, from its telemetry (none before its first report). */
static void write_workers(hcl_json *j, const hcl_control *ctl, int rank0) {
    int nw = ctl ? control_nworkers(ctl) : 0, any = 0;
    for (int i = 0; i < nw; i++) any |= control_worker(ctl, i)->step >= 0;
    if (!any) return;
    json_begin_array(j, "workers");
    for (int i = 0; i < nw; i++) {
        const hcl_worker_stat *w = control_worker(ctl, i);
        if (w->step < 0) continue;
        json_begin_object(j, NULL);
        json_int(j, "rank", rank0 + i);
        json_number(j, "compute_s", w->compute_s);
        json_number(j, "comm_s", w->allgather_s + w->reduce_scatter_s + w->allreduce_s);
        json_number(j, "wait_s", w->wait_s);
        json_end_object(j);
    }
    json_end_array(j);
}

static void write_line(hcl_metrics *m, int64_t step, int64_t epoch, double samples_per_s, double val_loss,
                       const int64_t *split, int nw, const hcl_control *ctl, int rank0) {
    const hcl_step_result *res = &m->logged;
    hcl_json *j = &m->j;
    if (!m->out.is_open) return;
    json_reset(j);
    json_begin_object(j, NULL);
    json_int(j, "step", step);
    json_int(j, "epoch", epoch);
    json_number(j, "loss", res->loss);
    json_begin_object(j, "pair_loss");
    for (int a = 0; a < m->mc->nviews; a++)
        for (int b = a + 1; b < m->mc->nviews; b++) {
            if (!res->pair_used[a][b]) continue;
            char key[2 * HCL_NAME_MAX + 2];
            snprintf(key, sizeof key, "%s:%s", m->mc->names[a], m->mc->names[b]);
            json_number(j, key, res->pair_loss[a][b]);
        }
    json_end_object(j);
    if (m->supcon) json_number(j, "supcon", res->supcon);
    if (m->ce) json_number(j, "ce", res->ce);
    json_number(j, "lr", res->lr);
    json_number(j, "logit_scale", res->logit_scale);
    json_number(j, "grad_norm", res->grad_norm);
    json_number(j, "samples_per_s", samples_per_s);
    if (split) {
        json_begin_array(j, "shares");   /* --balance adaptive: the rows each worker had in this step */
        for (int w = 0; w < nw; w++) json_int(j, NULL, split[w + 1] - split[w]);
        json_end_array(j);
    }
    if (!isnan(val_loss)) json_number(j, "val_loss", val_loss);
    json_int(j, "skipped", m->skipped);
    write_workers(j, ctl, rank0);
    json_seconds(j, "time", hcl_wall());
    json_end_object(j);
    append_line(&m->out, json_text(j));
    if (m->tb) tb_line(m->tb, json_text(j));
}

static void progress(const hcl_metrics *m, int64_t step, int64_t epoch, double sps, double eta_s, double val_loss) {
    const hcl_step_result *res = &m->logged;
    char eta[32];
    progress_format_eta(eta, sizeof eta, eta_s);
    char val[64] = "";
    if (!isnan(val_loss)) snprintf(val, sizeof val, " val %.4f", val_loss);
    if (m->tty) {
        fprintf(stderr, "\r\033[Kstep %lld/%lld epoch %lld loss %.4f%s lr %.2e scale %.2f %.0f samples/s ETA %s",
                (long long)step, (long long)m->total_steps, (long long)epoch, res->loss, val, res->lr,
                res->logit_scale, sps, eta);
        fflush(stderr);
    } else {
        LOG_INFO("step %lld/%lld epoch %lld loss %.4f%s lr %.3e scale %.3f %.0f samples/s ETA %s",
                 (long long)step, (long long)m->total_steps, (long long)epoch, res->loss, val, res->lr,
                 res->logit_scale, sps, eta);
    }
}

void metrics_write(hcl_metrics *m, int val_batches, const int64_t *split, int nw, const hcl_control *ctl,
                   int rank0) {
    const int64_t done = m->logged.step + 1, epoch = m->logged.step / m->steps_per_epoch;
    /* the window: from the end of the job before its first step to the end of the logged step
     * (validation batches after it are not training time) */
    const double now = m->t_last_step;
    const double sps = now > m->t_window ? m->window_steps * m->batch / (now - m->t_window) : 0.0;
    const double eta = (m->total_steps - done) * (now - m->t_start) / (done - m->start_step);
    const double vl = val_batches > 0 ? m->val_sum / val_batches : NAN;
    write_line(m, done, epoch, sps, vl, split, nw, ctl, rank0);
    progress(m, done, epoch, sps, eta, vl);
    m->t_window = m->t_done;
    m->window_steps = 0;
}

void metrics_in_step(const hcl_metrics *m, int64_t step, double secs, const char *where, double eta_s) {
    char eta[32];
    progress_format_eta(eta, sizeof eta, eta_s);
    if (m->tty) {
        fprintf(stderr, "\r\033[Kstep %lld/%lld running for %.0f s: %s; ETA %s", (long long)step + 1,
                (long long)m->total_steps, secs, where, eta);
        fflush(stderr);
    } else {
        LOG_INFO("step %lld/%lld running for %.0f s: %s; ETA %s", (long long)step + 1, (long long)m->total_steps,
                 secs, where, eta);
    }
}

void metrics_pause(hcl_metrics *m) {
    m->t_window = m->t_last_step = m->t_done = hcl_now();
    m->window_steps = 0;
}

void metrics_put(hcl_metrics *m, const char *line) {
    if (!m->out.is_open) return;
    append_put(&m->out, line, strlen(line));
    if (m->tb) tb_line(m->tb, line);
}

void metrics_final_eval(hcl_metrics *m, int64_t step, const char *json) {
    if (!m->out.is_open) return;
    json_reset(&m->j);
    json_begin_object(&m->j, NULL);
    json_int(&m->j, "step", step);
    json_raw(&m->j, "final_eval", json);
    json_end_object(&m->j);
    append_line(&m->out, json_text(&m->j));
    if (m->tb) tb_line(m->tb, json_text(&m->j));
}

void metrics_event(hcl_metrics *m, int64_t step, const char *event, int64_t restart, const char *reason) {
    if (!m->out.is_open) return;
    json_reset(&m->j);
    json_begin_object(&m->j, NULL);
    json_int(&m->j, "step", step);
    json_string(&m->j, "event", event);
    json_number(&m->j, "time", hcl_wall());
    if (restart >= 0) json_int(&m->j, "restart", restart);
    json_string(&m->j, "reason", reason);
    json_end_object(&m->j);
    append_line(&m->out, json_text(&m->j));
    char err[HCL_ERR_MAX];
    if (append_flush(&m->out, err) != 0) LOG_WARN("metrics: %s", err);
}

int metrics_flush(hcl_metrics *m, char *err) {
    if (append_flush(&m->out, err) != 0) return -1;
    return m->tb ? tb_flush(m->tb, err) : 0;
}

void metrics_end(hcl_metrics *m) {
    if (m->tty) fputc('\n', stderr);
}
