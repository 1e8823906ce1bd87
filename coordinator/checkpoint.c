/* checkpoint: see checkpoint.h. */
#include "checkpoint.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "rng.h"
#include "util.h"

/* ---- writing ------------------------------------------------------------------------------ */

static void fill_state(const hcl_run *r, int64_t step, hcl_ckpt_state *st) {
    const int64_t np = r->ck_model.nparams;
    memset(st, 0, sizeof *st);
    st->step = step;
    st->epoch = step / r->steps_per_epoch;
    st->data_cursor = step % r->steps_per_epoch;
    st->samples_seen = step * r->batch;
    st->seed = (uint64_t)r->cfg.seed;
    hcl_rng rng;
    rng_derive(&rng, st->seed, "epoch", (uint64_t)st->epoch);
    memcpy(st->data_rng, rng.s, sizeof st->data_rng);
    config_to_text(&r->cfg, st->config, sizeof st->config);
    st->world_size = r->world_size;
    st->workers = r->world_size > 1 ? r->world_size - 1 : 1;
    int64_t counters[2];
    memcpy(counters, r->snap + np + r->nstate, sizeof counters);
    st->updates = counters[0];
    st->skipped = counters[1];
    st->optimizer = r->oc.kind;
    st->lr_scale = r->lr_scale;
    st->global_batch = r->batch;
}

void run_checkpoint(hcl_run *r, int64_t step) {
    double t0 = hcl_now();
    enum hcl_run_state was = r->st.state;
    r->st.state = HCL_RUN_STATE_CHECKPOINTING;
    if (r->ctl) control_service(r->ctl, &r->st, 0);
    memcpy(r->ck_model.params, r->snap, sizeof(float) * (size_t)r->ck_model.nparams);
    hcl_ckpt_state st;
    fill_state(r, step, &st);
    char err[HCL_ERR_MAX], path[CKPT_PATH_MAX];
    /* a run resumed from this checkpoint keeps metrics.jsonl up to its step (keep_metrics_until): the
     * lines a full disk held back must be written first */
    int rc = metrics_flush(&r->metrics, err);
    if (rc == 0)
        rc = ckpt_write(r->cfg.run_dir, &r->ck_model, r->snap + r->ck_model.nparams, &st, (int)r->cfg.keep, path, err);
    r->st.state = was;
    if (rc != 0) {
        snprintf(r->last_ckpt_error, sizeof r->last_ckpt_error, "step %lld: %s", (long long)step, err);
        LOG_ERROR("checkpoint of step %lld failed, training goes on: %s", (long long)step, err);
    } else {
        r->last_ckpt_error[0] = 0;
        r->last_ckpt_step = step;
        r->st.last_checkpoint_time = hcl_wall();
        snprintf(r->last_ckpt_path, sizeof r->last_ckpt_path, "%s", path);
        jobs_checkpoint_written(&r->jobs, step, path);
        LOG_INFO("checkpoint %s (%.0f ms)", path, 1e3 * (hcl_now() - t0));
    }
    snprintf(r->st.last_checkpoint_path, sizeof r->st.last_checkpoint_path, "%s", r->last_ckpt_path);
    snprintf(r->st.last_checkpoint_error, sizeof r->st.last_checkpoint_error, "%s", r->last_ckpt_error);
    r->st.last_checkpoint_step = r->last_ckpt_step;
    for (int i = 0; i < r->nckpt_waiters; i++) {
        if (rc == 0) control_reply_ok(r->ctl, &r->ckpt_waiters[i], step, path);
        else control_reply_error(r->ctl, &r->ckpt_waiters[i], CTL_ERROR_FAILED, r->last_ckpt_error);
    }
    r->nckpt_waiters = 0;
}

/* ---- resuming ----------------------------------------------------------------------------- */

/* --resume auto's skipped checkpoints: logged when an older one is resumed from, one line of
 * error (the newest's reason) when none is left. */
#define SKIPPED_MAX 4
static char skipped[SKIPPED_MAX][HCL_ERR_MAX + 64];
static int nskipped;
static void note_skipped(const char *msg) {
    if (nskipped < SKIPPED_MAX) snprintf(skipped[nskipped], sizeof skipped[0], "%s", msg);
    nskipped++;
}

static int find_auto(const hcl_run *r, char *dir, char *err) {
    nskipped = 0;
    int rc = ckpt_find_latest(r->cfg.run_dir, dir, note_skipped);
    if (rc == 2)
        return hcl_err(err, "--resume auto: %d checkpoint%s in %s/checkpoints, none valid (%s); resume one "
                       "with --resume PATH, or move them away to start again", nskipped, nskipped == 1 ? "" : "s",
                       r->cfg.run_dir, nskipped ? skipped[0] + strlen("skipping damaged checkpoint: ") : "");
    for (int i = 0; i < nskipped && i < SKIPPED_MAX; i++) LOG_WARN("%s", skipped[i]);
    if (nskipped > SKIPPED_MAX) LOG_WARN("skipped %d more damaged checkpoints", nskipped - SKIPPED_MAX);
    return rc;
}

/* The checkpoint of dir (its state st, its model mc) fits this run's data and flags. */
static int check_fits(const hcl_run *r, const char *dir, const hcl_ckpt_state *st, const hcl_model_config *mc,
                      char *err) {
    char what[CKPT_PATH_MAX + 16];
    snprintf(what, sizeof what, "checkpoint %s", dir);
    if (dataset_check_views(&r->train, mc->nviews, mc->names, mc->in_width, NULL, NULL, what, err) != 0) return -1;
    const hcl_model_config *have = &r->mc;
    int same_hidden = 1;   /* each view's encoder: its kind, its widths, its table or image */
    for (int v = 0; v < mc->nviews; v++) same_hidden &= model_spec_same(mc, have, v);
    if (!same_hidden || mc->dim != have->dim || mc->act != have->act || mc->layernorm != have->layernorm ||
        mc->nclasses != have->nclasses)
        return hcl_err(err, "checkpoint %s: model shape differs from the flags (hidden, encoder, dim, act, "
                       "layernorm or classifier head); pass the flags it was trained with", dir);
    if (st->optimizer != r->oc.kind)
        return hcl_err(err, "checkpoint %s: optimizer %s, the flags say %s", dir, optim_kind_name(st->optimizer),
                       optim_kind_name(r->oc.kind));
    if (st->global_batch != r->batch)
        return hcl_err(err, "checkpoint %s: global batch %lld, the flags say %lld (the data order depends on it)",
                       dir, (long long)st->global_batch, (long long)r->batch);
    if (st->step > r->total_steps)
        return hcl_err(err, "checkpoint %s is at step %lld, past the run's %lld steps", dir,
                       (long long)st->step, (long long)r->total_steps);
    /* the data order is a function of (seed, step) through the batches per epoch */
    const int64_t spe = r->steps_per_epoch;
    if (st->epoch != st->step / spe || st->data_cursor != st->step % spe) {
        char per[64];   /* ckpt_read_state checked that epoch and data_cursor make the step */
        if (st->epoch > 0) snprintf(per, sizeof per, "%lld", (long long)((st->step - st->data_cursor) / st->epoch));
        else snprintf(per, sizeof per, "more than %lld", (long long)st->step);
        return hcl_err(err, "%s/state.pb: step %lld is epoch %lld, batch %lld at %s batches per epoch; --data %s "
                       "gives %lld (%lld rows / batch %lld)", dir, (long long)st->step, (long long)st->epoch,
                       (long long)st->data_cursor, per, r->cfg.data, (long long)spe, (long long)r->train.n,
                       (long long)r->batch);
    }
    return 0;
}

int run_resume(hcl_run *r, char *err) {
    const char *want = r->cfg.resume;
    if (!want[0]) return 0;
    char dir[CKPT_PATH_MAX];
    if (strcmp(want, "auto") == 0) {
        int rc = find_auto(r, dir, err);
        if (rc < 0) return -1;
        if (rc == 1) {
            LOG_INFO("--resume auto: no checkpoint in %s/checkpoints, starting at step 0", r->cfg.run_dir);
            return 0;
        }
    } else {
        snprintf(dir, sizeof dir, "%s", want);
        if (ckpt_verify(dir, err) != 0) return -1;
    }
    hcl_ckpt_state st;
    hcl_model_config mc;
    if (ckpt_read_state(dir, &st, &mc, err) != 0 || check_fits(r, dir, &st, &mc, err) != 0) return -1;
    if (st.format_version == 1)
        LOG_INFO("%s/state.pb: format 1 (an hcl before state.pb had its own checksum): its fields are "
                 "checked, its bytes cannot be", dir);
    if ((uint64_t)r->cfg.seed != st.seed) {
        LOG_WARN("--seed %lld differs from the checkpoint's %llu: continuing with the checkpoint's data order",
                 (long long)r->cfg.seed, (unsigned long long)st.seed);
        r->cfg.seed = (int64_t)st.seed;
    }
    if (ckpt_read_tensors(dir, &r->ck_model, r->snap + r->ck_model.nparams, st.optimizer, err) != 0) return -1;
    memcpy(r->snap, r->ck_model.params, sizeof(float) * (size_t)r->ck_model.nparams);
    int64_t counters[2] = {st.updates, st.skipped};
    memcpy(r->snap + r->ck_model.nparams + r->nstate, counters, sizeof counters);
    r->start_step = st.step;
    if (st.lr_scale > 0) r->lr_scale = st.lr_scale;
    r->st.step = st.step;
    r->st.epoch = st.step / r->steps_per_epoch;
    snprintf(r->resume_from, sizeof r->resume_from, "%s", dir);
    snprintf(r->last_ckpt_path, sizeof r->last_ckpt_path, "%s", dir);
    r->last_ckpt_step = st.step;
    struct stat sb;
    r->st.last_checkpoint_time = stat(dir, &sb) == 0 ? (double)sb.st_mtime : 0.0;   /* when it was written */
    LOG_INFO("resuming from %s: step %lld, epoch %lld (saved by %d workers)", dir, (long long)st.step,
             (long long)st.epoch, st.workers);
    return 0;
}

/* ---- the run directory -------------------------------------------------------------------- */

int keep_metrics_until(const char *path, int64_t step, char *err) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t cap = 1 << 16, len = 0, line_cap = 0;
    char *out = hcl_malloc(cap), *line = NULL;
    ssize_t n;
    while ((n = getline(&line, &line_cap, f)) > 0) {
        long long s = -1;   /* a last line without its newline is torn: dropped, whatever its start says */
        if (line[n - 1] != '\n' || sscanf(line, "{\"step\": %lld", &s) != 1 || s > step) continue;
        if (len + (size_t)n + 1 > cap) {
            cap = 2 * (len + (size_t)n + 1);
            out = realloc(out, cap);
            HCL_CHECK(out, "out of memory keeping %s", path);
        }
        memcpy(out + len, line, (size_t)n);
        len += (size_t)n;
    }
    free(line);
    fclose(f);
    int rc = hcl_write_file_durable(path, out, len, err);
    free(out);
    return rc;
}

int run_open_dir(hcl_run *r, char *err) {
    if (hcl_mkdir_p(r->cfg.run_dir, err) != 0) return -1;
    char path[HCL_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/config.txt", r->cfg.run_dir);
    char text[16384];
    size_t n = config_to_text(&r->cfg, text, sizeof text);
    if (hcl_write_file_durable(path, text, n < sizeof text ? n : sizeof text - 1, err) != 0) return -1;
    snprintf(path, sizeof path, "%s/metrics.jsonl", r->cfg.run_dir);
    if (r->start_step > 0 && keep_metrics_until(path, r->start_step, err) != 0) return -1;
    if (metrics_open(&r->metrics, path, r->start_step > 0, err) != 0) return -1;
    if (strcmp(r->cfg.tensorboard, "off") != 0) {
        char *st_dir = r->st.tensorboard_dir;
        int k = r->cfg.tensorboard[0] ? snprintf(st_dir, sizeof r->st.tensorboard_dir, "%s", r->cfg.tensorboard)
                                      : snprintf(st_dir, sizeof r->st.tensorboard_dir, "%s/tensorboard", r->cfg.run_dir);
        if (k < 0 || (size_t)k >= sizeof r->st.tensorboard_dir)
            return hcl_err(err, "--tensorboard: directory name longer than %zu bytes", sizeof r->st.tensorboard_dir - 1);
        if (tb_open(&r->tb, st_dir, r->start_step + 1, text, err) != 0) return -1;
        r->metrics.tb = &r->tb;
    }
    ckpt_cleanup(r->cfg.run_dir);
    return 0;
}
