/* train: see train.h. */
#include "train.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "kernels.h"
#include "log.h"
#include "step.h"
#include "util.h"

/* ---- configuration from flags and data ---------------------------------------------------- */

static int parse_hidden(hcl_model_config *mc, const char *s, char *err) {
    mc->nhidden = 0;
    if (!*s || strcmp(s, "none") == 0) return 0;
    const char *p = s;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v <= 0 || v > 65536 || (*end && *end != ','))
            return hcl_err(err, "--hidden: '%s' is not a list of positive widths like 512,256", s);
        if (mc->nhidden == HCL_MAX_HIDDEN)
            return hcl_err(err, "--hidden: '%s' has more than %d layers", s, HCL_MAX_HIDDEN);
        mc->hidden[mc->nhidden++] = (int)v;
        p = *end ? end + 1 : end;
    }
    return 0;
}

static int view_by_name(const hcl_dataset *ds, const char *name, const char *flag, char *err) {
    int v = dataset_view_index(ds, name);
    if (v < 0) return hcl_err(err, "%s: no view named '%s' in %s", flag, name, ds->dir);
    return v;
}

static int parse_pair_weights(hcl_loss_config *lc, const hcl_dataset *ds, const char *s, char *err) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        char *colon = strchr(tok, ':'), *eq = strchr(tok, '=');
        if (!colon || !eq || eq < colon)
            return hcl_err(err, "--pair-weights: '%s' is not A:B=w", tok);
        *colon = 0;
        *eq = 0;
        int a = view_by_name(ds, tok, "--pair-weights", err);
        if (a < 0) return -1;
        int b = view_by_name(ds, colon + 1, "--pair-weights", err);
        if (b < 0) return -1;
        char *end;
        double w = strtod(eq + 1, &end);
        if (end == eq + 1 || *end || !(w >= 0) || !isfinite(w))
            return hcl_err(err, "--pair-weights: weight '%s' is not a number >= 0", eq + 1);
        if (a == b) return hcl_err(err, "--pair-weights: '%s:%s' pairs a view with itself", tok, colon + 1);
        lc->pair_weight[a < b ? a : b][a < b ? b : a] = (float)w;
    }
    return 0;
}

int run_prepare(hcl_run *r, const hcl_config *cfg, char *err) {
    memset(r, 0, sizeof *r);
    r->cfg = *cfg;
    r->perm_epoch = -1;
    if (!cfg->data[0]) return hcl_err(err, "--data: a dataset directory is required (see --help)");
    if (!cfg->run_dir[0]) return hcl_err(err, "--run-dir: a run directory is required (see --help)");
    if (cfg->batch_size < 2) return hcl_err(err, "--batch-size: %lld is too small (at least 2)", (long long)cfg->batch_size);
    if (cfg->log_every < 1) return hcl_err(err, "--log-every: must be at least 1");
    if (dataset_open(&r->train, cfg->data, err) != 0) return -1;
    r->has_train = 1;
    if (cfg->val_data[0]) {
        if (dataset_open(&r->val, cfg->val_data, err) != 0) return -1;
        r->has_val = 1;
        if (r->val.nviews != r->train.nviews)
            return hcl_err(err, "--val-data: %s has %d views, %s has %d", cfg->val_data,
                           r->val.nviews, cfg->data, r->train.nviews);
        for (int v = 0; v < r->train.nviews; v++)
            if (strcmp(r->val.names[v], r->train.names[v]) || r->val.widths[v] != r->train.widths[v])
                return hcl_err(err, "--val-data: view %d is %s (%lld wide) in %s but %s (%lld wide) in %s",
                               v, r->val.names[v], (long long)r->val.widths[v], cfg->val_data,
                               r->train.names[v], (long long)r->train.widths[v], cfg->data);
    }
    const hcl_dataset *ds = &r->train;

    /* model */
    hcl_model_config *mc = &r->mc;
    model_config_default(mc);
    mc->nviews = ds->nviews;
    for (int v = 0; v < ds->nviews; v++) {
        snprintf(mc->names[v], sizeof mc->names[v], "%s", ds->names[v]);
        mc->in_width[v] = (int)ds->widths[v];
    }
    if (parse_hidden(mc, cfg->hidden, err) != 0) return -1;
    if (cfg->dim < 1 || cfg->dim > 65536) return hcl_err(err, "--dim: %lld is out of range", (long long)cfg->dim);
    mc->dim = (int)cfg->dim;
    if (strcmp(cfg->act, "relu") == 0) mc->act = HCL_ACT_RELU;
    else if (strcmp(cfg->act, "gelu") == 0) mc->act = HCL_ACT_GELU;
    else return hcl_err(err, "--act: '%s' is not relu or gelu", cfg->act);
    if (cfg->layernorm > 1) return hcl_err(err, "--layernorm: %lld is not 0 or 1", (long long)cfg->layernorm);
    mc->layernorm = (int)cfg->layernorm;
    r->learn_t = cfg->temperature == 0;
    if (!r->learn_t) mc->t_init = logf(1.0f / (float)cfg->temperature);

    /* loss */
    hcl_loss_config *lc = &r->lc;
    loss_config_default(lc, ds->nviews, mc->dim);
    if (loss_kind_parse(cfg->loss, &lc->kind) != 0)
        return hcl_err(err, "--loss: '%s' is not clip, full, core, supcon or hybrid", cfg->loss);
    if (loss_kind_parse(cfg->hybrid_base, &lc->base) != 0 || lc->base == HCL_LOSS_HYBRID)
        return hcl_err(err, "--hybrid-base: '%s' is not clip, full, core or supcon", cfg->hybrid_base);
    if (ds->nviews < 2 && lc->kind != HCL_LOSS_SUPCON)
        return hcl_err(err, "--loss %s: %s has one view; cross-view losses need two", cfg->loss, cfg->data);
    if (cfg->core_view[0]) {
        int v = view_by_name(ds, cfg->core_view, "--core-view", err);
        if (v < 0) return -1;
        lc->core_view = v;
    }
    if (cfg->clip_views[0]) {
        char a[160];
        snprintf(a, sizeof a, "%s", cfg->clip_views);
        char *comma = strchr(a, ',');
        if (!comma) return hcl_err(err, "--clip-views: '%s' is not A,B", cfg->clip_views);
        *comma = 0;
        int va = view_by_name(ds, a, "--clip-views", err);
        if (va < 0) return -1;
        int vb = view_by_name(ds, comma + 1, "--clip-views", err);
        if (vb < 0) return -1;
        if (va == vb) return hcl_err(err, "--clip-views: '%s' names one view twice", cfg->clip_views);
        lc->view_a = va;
        lc->view_b = vb;
    }
    if (cfg->pair_weights[0] && parse_pair_weights(lc, ds, cfg->pair_weights, err) != 0) return -1;
    lc->lambda = (float)cfg->lambda;
    int needs_labels = lc->kind == HCL_LOSS_SUPCON || lc->kind == HCL_LOSS_HYBRID ||
                       (lc->kind == HCL_LOSS_HYBRID && lc->base == HCL_LOSS_SUPCON);
    if (needs_labels && !ds->has_labels)
        return hcl_err(err, "--loss %s: needs labels, but %s has no labels.npy", cfg->loss, cfg->data);
    if (lc->kind == HCL_LOSS_HYBRID) {
        mc->nclasses = ds->nclasses;
        lc->nclasses = ds->nclasses;
    }

    /* schedule and optimizer */
    r->batch = cfg->batch_size;
    if (r->batch > ds->n)
        return hcl_err(err, "--batch-size: %lld is larger than the %lld rows of %s",
                       (long long)r->batch, (long long)ds->n, cfg->data);
    r->steps_per_epoch = ds->n / r->batch;
    r->total_steps = cfg->steps > 0 ? cfg->steps : cfg->epochs * r->steps_per_epoch;
    if (r->total_steps < 1) return hcl_err(err, "--steps/--epochs: nothing to train (0 steps)");
    hcl_optim_config *oc = &r->oc;
    optim_config_default(oc);
    if (optim_kind_parse(cfg->optimizer, &oc->kind) != 0)
        return hcl_err(err, "--optimizer: '%s' is not adamw, sgd or lars", cfg->optimizer);
    oc->lr = (float)cfg->lr;
    oc->weight_decay = (float)cfg->weight_decay;
    oc->momentum = (float)cfg->momentum;
    oc->nesterov = (int)cfg->nesterov;
    oc->clip_norm = (float)cfg->clip_norm;
    oc->warmup_steps = cfg->warmup_steps;
    oc->total_steps = r->total_steps;

    r->perm = hcl_malloc(sizeof(int64_t) * (size_t)ds->n);
    r->rows = hcl_malloc(sizeof(int64_t) * (size_t)(r->batch > (r->has_val ? r->val.n : 0) ? r->batch : r->val.n));
    return 0;
}

void run_free(hcl_run *r) {
    if (r->has_train) dataset_close(&r->train);
    if (r->has_val) dataset_close(&r->val);
    free(r->perm);
    free(r->rows);
    if (r->metrics) fclose(r->metrics);
    memset(r, 0, sizeof *r);
}

/* ---- batches ------------------------------------------------------------------------------ */

int64_t run_batch_rows(hcl_run *r, int64_t step) {
    int64_t epoch = step / r->steps_per_epoch;
    int64_t k = step % r->steps_per_epoch;
    if (epoch != r->perm_epoch) {
        hcl_rng rng;
        rng_derive(&rng, (uint64_t)r->cfg.seed, "epoch", (uint64_t)epoch);
        rng_permutation(&rng, r->perm, r->train.n);
        r->perm_epoch = epoch;
    }
    memcpy(r->rows, r->perm + k * r->batch, sizeof(int64_t) * (size_t)r->batch);
    return epoch;
}

static void batch_widths(const hcl_run *r, int64_t *widths) {
    for (int v = 0; v < r->mc.nviews; v++) widths[v] = r->mc.in_width[v];
}

size_t run_batch_bytes(const hcl_run *r, int64_t n, int nw) {
    int64_t r0, b, widths[HCL_MAX_VIEWS];
    batch_split(n, nw, 0, &r0, &b);
    batch_widths(r, widths);
    hcl_batch_layout l;
    return batch_layout(&l, n, b, r->mc.nviews, widths);
}

void run_fill_batch(const hcl_run *r, const hcl_dataset *ds, const int64_t *rows, int64_t n,
                    int w, int nw, uint32_t flags, int64_t step, int64_t epoch, float lr,
                    uint8_t *buf) {
    int64_t r0, b, widths[HCL_MAX_VIEWS];
    batch_split(n, nw, w, &r0, &b);
    batch_widths(r, widths);
    hcl_batch_layout l;
    batch_layout(&l, n, b, r->mc.nviews, widths);
    hcl_batch_header *h = (hcl_batch_header *)buf;
    memset(h, 0, sizeof *h);
    h->magic = HCL_BATCH_MAGIC;
    h->flags = flags;
    h->step = step;
    h->epoch = epoch;
    h->n = n;
    h->r0 = r0;
    h->b = b;
    h->nviews = r->mc.nviews;
    h->has_labels = ds->has_labels;
    h->lr = lr;
    dataset_gather_labels(ds, rows, n, (int32_t *)(buf + l.labels));
    dataset_gather_mask(ds, rows, n, buf + l.mask);
    for (int v = 0; v < r->mc.nviews; v++)
        dataset_gather_view(ds, v, rows + r0, b, (float *)(buf + l.view[v]));
}

/* ---- logging ------------------------------------------------------------------------------ */

static void metrics_line(hcl_run *r, int64_t step, int64_t epoch, const hcl_step_result *res,
                         double samples_per_s, double val_loss, int64_t skipped) {
    FILE *f = r->metrics;
    if (!f) return;
    fprintf(f, "{\"step\": %lld, \"epoch\": %lld, \"loss\": %.9g", (long long)step, (long long)epoch,
            res->loss);
    fprintf(f, ", \"pair_loss\": {");
    int first = 1;
    for (int i = 0; i < r->mc.nviews; i++)
        for (int j = i + 1; j < r->mc.nviews; j++) {
            if (!res->pair_used[i][j]) continue;
            fprintf(f, "%s\"%s:%s\": %.9g", first ? "" : ", ", r->mc.names[i], r->mc.names[j],
                    res->pair_loss[i][j]);
            first = 0;
        }
    fprintf(f, "}");
    if (r->lc.kind == HCL_LOSS_SUPCON || (r->lc.kind == HCL_LOSS_HYBRID && r->lc.base == HCL_LOSS_SUPCON))
        fprintf(f, ", \"supcon\": %.9g", res->supcon);
    if (r->lc.kind == HCL_LOSS_HYBRID) fprintf(f, ", \"ce\": %.9g", res->ce);
    fprintf(f, ", \"lr\": %.9g, \"logit_scale\": %.9g, \"grad_norm\": %.9g, \"samples_per_s\": %.1f",
            res->lr, res->logit_scale, res->grad_norm, samples_per_s);
    if (!isnan(val_loss)) fprintf(f, ", \"val_loss\": %.9g", val_loss);
    fprintf(f, ", \"skipped\": %lld, \"time\": %.3f}\n", (long long)skipped, hcl_wall());
    fflush(f);
}

static void fmt_eta(char *buf, size_t len, double s) {
    if (!(s >= 0) || s > 1e7) { snprintf(buf, len, "--:--"); return; }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, len, "%ld:%02ld", t / 60, t % 60);
}

static void progress(hcl_run *r, int tty, int64_t step, int64_t epoch, const hcl_step_result *res,
                     double sps, double eta_s, double val_loss) {
    char eta[32];
    fmt_eta(eta, sizeof eta, eta_s);
    char val[64] = "";
    if (!isnan(val_loss)) snprintf(val, sizeof val, " val %.4f", val_loss);
    if (tty) {
        fprintf(stderr, "\r\033[Kstep %lld/%lld epoch %lld loss %.4f%s lr %.2e scale %.2f %.0f samples/s ETA %s",
                (long long)step, (long long)r->total_steps, (long long)epoch, res->loss, val, res->lr,
                res->logit_scale, sps, eta);
        fflush(stderr);
    } else {
        LOG_INFO("step %lld/%lld epoch %lld loss %.4f%s lr %.3e scale %.3f %.0f samples/s ETA %s",
                 (long long)step, (long long)r->total_steps, (long long)epoch, res->loss, val, res->lr,
                 res->logit_scale, sps, eta);
    }
}

/* ---- the single-process run ---------------------------------------------------------------- */

static double val_loss_single(hcl_run *r, hcl_worker *w, uint8_t *buf) {
    /* Up to 4 global batches of the validation set, in file order, batch-size rows each. */
    const hcl_dataset *ds = &r->val;
    double sum = 0;
    int nb = 0;
    for (int64_t start = 0; start < ds->n && nb < 4; start += r->batch, nb++) {
        int64_t n = ds->n - start < r->batch ? ds->n - start : r->batch;
        if (n < 2) break;
        for (int64_t i = 0; i < n; i++) r->rows[i] = start + i;
        run_fill_batch(r, ds, r->rows, n, 0, 1, HCL_BATCH_EVAL, 0, 0, 0, buf);
        hcl_step_result res;
        worker_step(w, buf, &res);
        sum += res.loss;
    }
    return nb ? sum / nb : NAN;
}

static int open_run_dir(hcl_run *r, char *err) {
    if (hcl_mkdir_p(r->cfg.run_dir, err) != 0) return -1;
    char path[HCL_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/config.txt", r->cfg.run_dir);
    char text[16384];
    size_t n = config_to_text(&r->cfg, text, sizeof text);
    if (hcl_write_file_durable(path, text, n < sizeof text ? n : sizeof text - 1, err) != 0) return -1;
    snprintf(path, sizeof path, "%s/metrics.jsonl", r->cfg.run_dir);
    r->metrics = fopen(path, "w");
    if (!r->metrics) return hcl_err(err, "%s: cannot create: %s", path, strerror(errno));
    return 0;
}

int run_train_single(hcl_run *r) {
    char err[HCL_ERR_MAX];
    if (open_run_dir(r, err) != 0) {
        LOG_ERROR("%s", err);
        return 1;
    }
    int threads = (int)r->cfg.threads;
    if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    kernels_set_threads(threads);
    hcl_worker w;
    if (worker_init(&w, MPI_COMM_SELF, &r->mc, &r->lc, &r->oc, r->learn_t, (uint64_t)r->cfg.seed,
                    r->batch, err) != 0) {
        LOG_ERROR("%s", err);
        return 1;
    }
    size_t bytes = run_batch_bytes(r, r->batch, 1);
    uint8_t *buf = hcl_malloc(bytes);
    LOG_INFO("training %s: %lld rows, %d views, %lld parameters, loss %s, batch %lld, %lld steps "
             "(%lld per epoch), %d BLAS threads",
             r->cfg.data, (long long)r->train.n, r->mc.nviews, (long long)w.model.nparams,
             loss_kind_name(r->lc.kind), (long long)r->batch, (long long)r->total_steps,
             (long long)r->steps_per_epoch, threads);
    int tty = isatty(STDERR_FILENO);
    double t_start = hcl_now(), t_window = t_start;
    int64_t window_steps = 0;
    hcl_step_result res = {0};
    for (int64_t s = 0; s < r->total_steps; s++) {
        int64_t epoch = run_batch_rows(r, s);
        float lr = optim_lr_at(&r->oc, s);
        run_fill_batch(r, &r->train, r->rows, r->batch, 0, 1, HCL_BATCH_TRAIN, s, epoch, lr, buf);
        worker_step(&w, buf, &res);
        window_steps++;
        if (res.skipped) LOG_WARN("step %lld: non-finite loss or gradient, update skipped (%lld so far)",
                                  (long long)s + 1, (long long)w.skipped);
        int64_t done = s + 1;
        if (done % r->cfg.log_every == 0 || done == r->total_steps) {
            double now = hcl_now();
            double sps = window_steps * r->batch / (now - t_window);
            double eta = (r->total_steps - done) * (now - t_start) / done;
            double vl = r->has_val ? val_loss_single(r, &w, buf) : NAN;
            metrics_line(r, done, epoch, &res, sps, vl, w.skipped);
            progress(r, tty, done, epoch, &res, sps, eta, vl);
            t_window = hcl_now();
            window_steps = 0;
        }
    }
    if (tty) fputc('\n', stderr);
    double secs = hcl_now() - t_start;
    LOG_INFO("done: %lld steps in %.1f s (%.0f samples/s), final loss %.4f, logit scale %.2f, %lld skipped",
             (long long)r->total_steps, secs, r->total_steps * r->batch / secs, res.loss,
             res.logit_scale, (long long)w.skipped);
    free(buf);
    worker_free(&w);
    return 0;
}
