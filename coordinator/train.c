/* train: see train.h. */
#include "train.h"

#include <errno.h>
#include <signal.h>
#include <math.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels.h"
#include "log.h"
#include "step.h"
#include "telemetry.h"
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

    /* Validation: up to 4 batches of the validation set in file order, logged as val_loss. */
    r->val_batches = 0;
    if (r->has_val)
        for (int64_t start = 0; start < r->val.n && r->val_batches < 4; start += r->batch) {
            int64_t n = r->val.n - start < r->batch ? r->val.n - start : r->batch;
            if (n < r->batch && n < 2 * 8) break;   /* a last sliver is not worth a batch */
            r->val_batches++;
        }
    if (cfg->no_shuffle > 1) return hcl_err(err, "--no-shuffle: %lld is not 0 or 1", (long long)cfg->no_shuffle);
    if (cfg->keep < 1) return hcl_err(err, "--keep: must be at least 1");
    if (strcmp(cfg->grad_allreduce, "shm") == 0) r->shm_grads = 1;
    else if (strcmp(cfg->grad_allreduce, "mpi") != 0)
        return hcl_err(err, "--grad-allreduce: '%s' is not shm or mpi", cfg->grad_allreduce);
    if (strcmp(cfg->balance, "adaptive") == 0) r->balance = 1;
    else if (strcmp(cfg->balance, "even") != 0)
        return hcl_err(err, "--balance: '%s' is not even or adaptive", cfg->balance);
    if (strcmp(cfg->data_plane, "direct") == 0) r->direct = 1;
    else if (strcmp(cfg->data_plane, "coordinator") != 0)
        return hcl_err(err, "--data-plane: '%s' is not coordinator or direct", cfg->data_plane);

    /* Checkpoint buffers: the model's tensor table and one replica state. */
    if (model_init(&r->ck_model, mc, (uint64_t)cfg->seed, err) != 0) return -1;
    r->nstate = optim_state_floats(oc, r->ck_model.nparams);
    r->snap_floats = batch_snapshot_floats(r->ck_model.nparams, r->nstate);
    r->snap = hcl_floats(r->snap_floats);
    r->last_ckpt_step = -1;
    r->lr_scale = 1.0;
    control_status_init(&r->st);
    r->st.total_steps = r->total_steps;
    r->st.log_every = cfg->log_every;
    r->st.checkpoint_every = cfg->checkpoint_every;
    r->st.checkpoint_interval_s = cfg->checkpoint_interval;
    if (cfg->worker_timeout <= 0) return hcl_err(err, "--worker-timeout: must be more than 0 seconds");
    if (cfg->coordinator_nice > 19)
        return hcl_err(err, "--coordinator-nice: %lld is not a nice value (0-19)", (long long)cfg->coordinator_nice);
    if (cfg->eval_every > 0) {
        if (!r->has_val) return hcl_err(err, "--eval-every: needs --val-data");
        if (evaluator_init(&r->ev, mc, &r->val, cfg->eval_rows, err) != 0) return -1;
        r->has_ev = 1;
    }
    r->perm = hcl_malloc(sizeof(int64_t) * (size_t)ds->n);
    r->rows = hcl_malloc(sizeof(int64_t) * (size_t)(r->batch > (r->has_val ? r->val.n : 0) ? r->batch : r->val.n));
    return 0;
}

void run_free(hcl_run *r) {
    if (r->has_train) dataset_close(&r->train);
    if (r->has_val) dataset_close(&r->val);
    free(r->perm);
    free(r->rows);
    if (r->ck_model.params) model_free(&r->ck_model);
    if (r->has_ev) evaluator_free(&r->ev);
    free(r->snap);
    if (r->metrics) fclose(r->metrics);
    if (r->tel) telemetry_close(r->tel);
    control_close(r->ctl);
    memset(r, 0, sizeof *r);
}

/* ---- batches ------------------------------------------------------------------------------ */

int64_t run_batch_rows(hcl_run *r, int64_t step) {
    int64_t epoch = step / r->steps_per_epoch;
    int64_t k = step % r->steps_per_epoch;
    if (epoch != r->perm_epoch) {
        hcl_rng rng;
        rng_derive(&rng, (uint64_t)r->cfg.seed, "epoch", (uint64_t)epoch);
        if (r->cfg.no_shuffle) for (int64_t i = 0; i < r->train.n; i++) r->perm[i] = i;
        else rng_permutation(&rng, r->perm, r->train.n);
        r->perm_epoch = epoch;
    }
    memcpy(r->rows, r->perm + k * r->batch, sizeof(int64_t) * (size_t)r->batch);
    return epoch;
}

static void batch_widths(const hcl_run *r, int64_t *widths) {
    for (int v = 0; v < r->mc.nviews; v++) widths[v] = r->mc.in_width[v];
}

size_t run_batch_bytes(const hcl_run *r, int64_t n, int nw) {
    int64_t widths[HCL_MAX_VIEWS];
    batch_widths(r, widths);
    hcl_batch_layout l;
    return batch_layout(&l, n, batch_share_max(n, nw, r->balance), nw, r->mc.nviews, widths);
}

/* The header and split of worker w's (of nw) share of a batch of n rows. */
static hcl_batch_header *fill_header(uint8_t *buf, const hcl_run *r, const hcl_dataset *ds, int64_t n,
                                     const int64_t *split, int w, int nw, uint32_t flags, int64_t step,
                                     int64_t epoch, float lr) {
    hcl_batch_header *h = (hcl_batch_header *)buf;
    memset(h, 0, sizeof *h);
    h->magic = HCL_BATCH_MAGIC;
    h->flags = flags;
    h->step = step;
    h->epoch = epoch;
    h->n = n;
    h->r0 = split[w];
    h->b = split[w + 1] - split[w];
    h->nviews = r->mc.nviews;
    h->has_labels = ds->has_labels;
    h->lr = lr;
    h->nworkers = nw;
    memcpy(batch_split_bounds(buf), split, sizeof(int64_t) * (size_t)(nw + 1));
    return h;
}

size_t run_fill_batch(const hcl_run *r, const hcl_dataset *ds, const int64_t *rows, int64_t n,
                      const int64_t *split, int w, int nw, uint32_t flags, int64_t step, int64_t epoch,
                      float lr, uint8_t *buf) {
    const hcl_batch_header *h = fill_header(buf, r, ds, n, split, w, nw, flags, step, epoch, lr);
    const int64_t r0 = h->r0, b = h->b;
    int64_t widths[HCL_MAX_VIEWS];
    batch_widths(r, widths);
    hcl_batch_layout l;
    batch_layout(&l, n, b, nw, r->mc.nviews, widths);
    dataset_gather_labels(ds, rows, n, (int32_t *)(buf + l.labels));
    dataset_gather_mask(ds, rows, n, buf + l.mask);
    for (int v = 0; v < r->mc.nviews; v++)
        dataset_gather_view(ds, v, rows + r0, b, (float *)(buf + l.view[v]));
    return l.total;
}

/* ---- logging ------------------------------------------------------------------------------ */

/* A number as JSON: non-finite values (a skipped step's gradient norm) become null. */
static void json_num(FILE *f, const char *key, double x) {
    if (isfinite(x)) fprintf(f, ", \"%s\": %.9g", key, x);
    else fprintf(f, ", \"%s\": null", key);
}

static void metrics_line(hcl_run *r, int64_t step, int64_t epoch, const hcl_step_result *res,
                         double samples_per_s, double val_loss, int64_t skipped) {
    FILE *f = r->metrics;
    if (!f) return;
    fprintf(f, "{\"step\": %lld, \"epoch\": %lld", (long long)step, (long long)epoch);
    json_num(f, "loss", res->loss);
    fprintf(f, ", \"pair_loss\": {");
    int first = 1;
    for (int i = 0; i < r->mc.nviews; i++)
        for (int j = i + 1; j < r->mc.nviews; j++) {
            if (!res->pair_used[i][j]) continue;
            fprintf(f, "%s\"%s:%s\": ", first ? "" : ", ", r->mc.names[i], r->mc.names[j]);
            if (isfinite(res->pair_loss[i][j])) fprintf(f, "%.9g", res->pair_loss[i][j]);
            else fprintf(f, "null");
            first = 0;
        }
    fprintf(f, "}");
    if (r->lc.kind == HCL_LOSS_SUPCON || (r->lc.kind == HCL_LOSS_HYBRID && r->lc.base == HCL_LOSS_SUPCON))
        json_num(f, "supcon", res->supcon);
    if (r->lc.kind == HCL_LOSS_HYBRID) json_num(f, "ce", res->ce);
    json_num(f, "lr", res->lr);
    json_num(f, "logit_scale", res->logit_scale);
    json_num(f, "grad_norm", res->grad_norm);
    fprintf(f, ", \"samples_per_s\": %.1f", samples_per_s);
    if (r->bal.adaptive) {
        /* --balance adaptive: the rows each worker had in this step */
        fprintf(f, ", \"shares\": [");
        for (int w = 0; w < r->bal.nw; w++)
            fprintf(f, "%s%lld", w ? ", " : "", (long long)(r->last_split[w + 1] - r->last_split[w]));
        fprintf(f, "]");
    }
    if (!isnan(val_loss)) json_num(f, "val_loss", val_loss);
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

/* An evaluation that has finished goes to metrics.jsonl (wait: block until it has). */
static void write_eval_line(hcl_run *r, int wait) {
    const char *line = evaluator_poll(&r->ev, wait);
    if (!line || !r->metrics) return;
    fputs(line, r->metrics);
    fflush(r->metrics);
}

/* ---- the step loop: jobs, slots, transport -------------------------------------------------- */

/* A job is one batch message to every worker: a training step, a validation batch, or STOP.
 * Two slots: while the workers compute the job in one slot, the next one is packed and sent
 * from the other (with a worker in this process, a job is computed when submitted). */
enum { SNAP_CHECKPOINT = 1, SNAP_EVAL = 2 };

typedef struct {
    uint32_t flags;
    int why;                     /* SNAPSHOT: SNAP_CHECKPOINT | SNAP_EVAL */
    int64_t step, epoch;
    int64_t n;                   /* rows */
    int eval_index;              /* validation batch index, for EVAL */
} job;

typedef struct {
    int nw;                      /* workers reached over MPI; 0: a worker in this process */
    hcl_worker *local;
    size_t bytes;                /* one worker's buffer */
    uint8_t *buf[HCL_BATCHES_IN_FLIGHT];         /* (max(nw,1) * bytes) per slot */
    MPI_Request *sreq[HCL_BATCHES_IN_FLIGHT];    /* nw per slot */
    job jobs[HCL_BATCHES_IN_FLIGHT];
    int64_t *split[HCL_BATCHES_IN_FLIGHT];       /* (nw + 1) the split each slot's batch was sent with */
    uint8_t *res_msg;            /* worker 0's result message (batch_result_bytes) */
    hcl_step_result local_res[HCL_BATCHES_IN_FLIGHT];
} transport;

/* ---- waiting: the control socket is the coordinator's sleep -------------------------------- */

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
    LOG_ERROR("worker %d (rank %d) silent for %.0f s (--worker-timeout %.0f): lost; aborting the job; "
              "the last checkpoint is %s", w, w + 1, ws ? now - ws->last_seen : 0.0, r->cfg.worker_timeout,
              r->last_ckpt_path[0] ? r->last_ckpt_path : "none");
    alarm(10);
    MPI_Abort(MPI_COMM_WORLD, 5);
    _exit(5);
}

/* Wait for an MPI request without spinning: the sleep is zmq_poll on the control sockets, so
 * requests are answered while the workers compute. */
static void coord_wait(hcl_run *r, MPI_Request *req) {
    int done = 0;
    for (int spins = 0;; spins++) {
        MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (done) return;
        if (spins < 50) continue;
        if (r->ctl) {
            control_service(r->ctl, &r->st, 1);
        } else {
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
        }
        check_workers(r);
    }
}

static void wait_all(hcl_run *r, MPI_Request *reqs, int n) {
    for (int i = 0; i < n; i++)
        if (reqs[i] != MPI_REQUEST_NULL) coord_wait(r, &reqs[i]);
}

static void submit(hcl_run *r, transport *tp, int slot, const job *j) {
    tp->jobs[slot] = *j;
    const int data = (j->flags & (HCL_BATCH_TRAIN | HCL_BATCH_EVAL)) != 0;
    const hcl_dataset *ds = (j->flags & HCL_BATCH_EVAL) ? &r->val : &r->train;
    if (j->flags & HCL_BATCH_TRAIN) {
        run_batch_rows(r, j->step);
    } else if (j->flags & HCL_BATCH_EVAL) {
        for (int64_t i = 0; i < j->n; i++) r->rows[i] = (int64_t)j->eval_index * r->batch + i;
    }
    float lr = (j->flags & HCL_BATCH_TRAIN) ? (float)(optim_lr_at(&r->oc, j->step) * r->lr_scale) : 0.0f;
    int nw = tp->nw ? tp->nw : 1;
    if (tp->nw) wait_all(r, tp->sreq[slot], tp->nw);
    if (data) balance_split(&r->bal, j->n, tp->split[slot]);
    for (int w = 0; w < nw; w++) {
        uint8_t *b = tp->buf[slot] + (size_t)w * tp->bytes;
        size_t len = sizeof(hcl_batch_header);
        if (!data) {
            /* STOP and SNAPSHOT: a header alone */
            hcl_batch_header *h = (hcl_batch_header *)b;
            memset(h, 0, sizeof *h);
            h->magic = HCL_BATCH_MAGIC;
            h->flags = j->flags;
            h->step = j->step;
        } else if (tp->nw && r->direct) {
            /* the workers read the rows themselves: the header and the row indices */
            fill_header(b, r, ds, j->n, tp->split[slot], w, nw, j->flags, j->step, j->epoch, lr);
            memcpy((int64_t *)batch_index_rows(b), r->rows, sizeof(int64_t) * (size_t)j->n);
            len = batch_index_bytes(j->n, nw);
        } else {
            len = run_fill_batch(r, ds, r->rows, j->n, tp->split[slot], w, nw, j->flags, j->step, j->epoch,
                                 lr, b);
        }
        if (tp->nw) {
            MPI_Isend(b, (int)len, MPI_BYTE, w + 1, HCL_TAG_BATCH, MPI_COMM_WORLD, &tp->sreq[slot][w]);
        }
    }
    if (!tp->nw) {
        hcl_step_result *res = &tp->local_res[slot];
        if (data) {
            worker_step(tp->local, tp->buf[slot], res);
            if (r->tel) {
                hcl_telemetry_msg m = {res->step, res->t_compute, res->t_allgather, res->t_reduce_scatter,
                                       res->t_allreduce, 0, 0, telemetry_rss_bytes()};
                telemetry_send(r->tel, &m);
            }
        } else {
            memset(res, 0, sizeof *res);
            res->step = j->step;
            res->flags = j->flags;
            /* The worker runs ahead at submit time: take its state now, not when answered. */
            if (j->flags & HCL_BATCH_SNAPSHOT) worker_snapshot_pack(tp->local, r->snap);
        }
    }
}

static void await_result(hcl_run *r, transport *tp, int slot, hcl_step_result *res) {
    /* Once per job whatever the waits did: when the coordinator is the slower side its MPI
     * requests are complete before it looks, and the control socket must not starve. */
    if (r->ctl) control_service(r->ctl, &r->st, 0);
    if (!tp->nw) {
        *res = tp->local_res[slot];
        return;
    }
    MPI_Request req;
    MPI_Irecv(tp->res_msg, (int)batch_result_bytes(tp->nw), MPI_BYTE, 1, HCL_TAG_RESULT, MPI_COMM_WORLD, &req);
    coord_wait(r, &req);
    memcpy(res, tp->res_msg, sizeof *res);
    HCL_CHECK(res->step == tp->jobs[slot].step && res->flags == tp->jobs[slot].flags,
              "result of step %lld (flags %u) arrived for step %lld (flags %u)", (long long)res->step,
              res->flags, (long long)tp->jobs[slot].step, tp->jobs[slot].flags);
    if (tp->jobs[slot].flags & HCL_BATCH_TRAIN) {
        size_t bytes = batch_result_bytes(tp->nw), busy = sizeof(double) * (size_t)tp->nw;
        balance_observe(&r->bal, tp->split[slot], (const double *)(tp->res_msg + bytes - busy));
        memcpy(r->last_split, tp->split[slot], sizeof(int64_t) * (size_t)(tp->nw + 1));
    }
}

/* The sequence of jobs: steps; after each logged step the validation batches; then STOP. */
typedef struct {
    int64_t next_step;
    int eval_left, eval_next;
    int64_t eval_step, eval_epoch;
    int64_t snapshot_at;         /* a SNAPSHOT job of this step is due next (-1: none) */
    int snapshot_why;            /* SNAP_CHECKPOINT | SNAP_EVAL */
    int64_t last_snapshot;       /* step of the last SNAPSHOT job emitted */
    int stopped;
} job_gen;

/* Set by signal handlers, acted on at the next step boundary. */
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

/* Whether a checkpoint is due after `done` updates. */
static int checkpoint_due(const hcl_run *r, int64_t done) {
    if (done == r->total_steps) return 1;
    if (r->cfg.checkpoint_every > 0 && done % r->cfg.checkpoint_every == 0) return 1;
    if (r->cfg.checkpoint_interval > 0 && hcl_now() - r->last_ckpt_time >= r->cfg.checkpoint_interval) return 1;
    return 0;
}

static int is_log_step(const hcl_run *r, int64_t step) {
    return (step + 1) % r->cfg.log_every == 0 || step + 1 == r->total_steps;
}

/* Operator commands take effect at this step boundary: the next job generated. */
static void handle_commands(hcl_run *r, job_gen *g) {
    ctl_request rq;
    while (r->ctl && control_next(r->ctl, &rq)) {
        int64_t at = g->next_step;
        switch (rq.cmd) {
        case CTL_CMD_PAUSE:
            if (r->paused || r->stop_req) {
                control_reply_error(r->ctl, &rq, CTL_ERROR_REFUSED, r->paused ? "already paused" : "stopping");
                break;
            }
            r->paused = 1;
            r->st.state = HCL_RUN_STATE_PAUSED;
            LOG_INFO("hclctl pause: paused after step %lld", (long long)at);
            control_reply_ok(r->ctl, &rq, at, "paused");
            break;
        case CTL_CMD_RESUME:
            if (!r->paused) {
                control_reply_error(r->ctl, &rq, CTL_ERROR_REFUSED, "not paused");
                break;
            }
            r->paused = 0;
            r->st.state = HCL_RUN_STATE_RUNNING;
            LOG_INFO("hclctl resume: running again from step %lld", (long long)at);
            control_reply_ok(r->ctl, &rq, at, "running");
            break;
        case CTL_CMD_CHECKPOINT:
            if (g->last_snapshot == at && g->snapshot_at < 0 && r->last_ckpt_step == at) {
                control_reply_ok(r->ctl, &rq, at, r->last_ckpt_path);
                break;
            }
            if (r->nckpt_waiters == CONTROL_QUEUE_MAX) {
                control_reply_error(r->ctl, &rq, CTL_ERROR_BUSY, "too many checkpoint requests waiting");
                break;
            }
            r->ckpt_waiters[r->nckpt_waiters++] = rq;
            if (g->snapshot_at < 0) g->snapshot_at = at;
            g->snapshot_why |= SNAP_CHECKPOINT;
            LOG_INFO("hclctl checkpoint: at step %lld", (long long)g->snapshot_at);
            break;
        case CTL_CMD_STOP:
            r->stop_req = 1;
            r->stop_no_ckpt = rq.no_checkpoint;
            r->st.state = HCL_RUN_STATE_STOPPING;
            LOG_INFO("hclctl stop: stopping at step %lld%s", (long long)at, rq.no_checkpoint ? " without a checkpoint" : "");
            control_reply_ok(r->ctl, &rq, at, rq.no_checkpoint ? "stopping without a checkpoint" : "stopping after a checkpoint");
            break;
        case CTL_CMD_SET:
            switch (rq.key) {
            case CTL_KEY_LR_SCALE:
                r->lr_scale = rq.value;
                r->st.lr_scale = rq.value;
                break;
            case CTL_KEY_LOG_EVERY:
                r->cfg.log_every = (int64_t)rq.value;
                r->st.log_every = r->cfg.log_every;
                break;
            case CTL_KEY_CHECKPOINT_INTERVAL:
                r->cfg.checkpoint_interval = rq.value;
                r->st.checkpoint_interval_s = rq.value;
                break;
            case CTL_KEY_CHECKPOINT_EVERY:
                r->cfg.checkpoint_every = (int64_t)rq.value;
                r->st.checkpoint_every = r->cfg.checkpoint_every;
                break;
            }
            LOG_INFO("hclctl %s: takes effect at step %lld (lr scale %.6g)", rq.text, (long long)at + 1, r->lr_scale);
            control_reply_ok(r->ctl, &rq, at + 1, NULL);
            break;
        }
    }
}

static int next_job(hcl_run *r, job_gen *g, int nw, job *j) {
    memset(j, 0, sizeof *j);
    handle_commands(r, g);
    if (r->stop_req && !sig_stop) {
        sig_stop = 1;
        if (r->stop_no_ckpt) g->last_snapshot = g->next_step;   /* nothing to write at the stop */
    }
    if (sig_stop) r->st.state = HCL_RUN_STATE_STOPPING;
    if (g->eval_left == 0 && g->snapshot_at >= 0) {
        j->flags = HCL_BATCH_SNAPSHOT;
        j->step = g->snapshot_at;
        j->why = g->snapshot_why;
        if (g->snapshot_why & SNAP_CHECKPOINT) g->last_snapshot = g->snapshot_at;
        g->snapshot_at = -1;
        g->snapshot_why = 0;
        return 1;
    }
    if (r->paused && !sig_stop && g->eval_left == 0) {
        /* Paused: no batches; a PING now and then keeps the workers' watchdog quiet. */
        double ping = r->cfg.worker_timeout / 4 < 5 ? r->cfg.worker_timeout / 4 : 5;
        if (nw && hcl_now() - r->last_ping > ping) {
            r->last_ping = hcl_now();
            j->flags = HCL_BATCH_PING;
            j->step = g->next_step;
            return 1;
        }
        return 2;
    }
    if (g->eval_left == 0 && !g->stopped && g->next_step < r->total_steps) {
        if (sig_stop) {
            /* SIGTERM, SIGINT, SIGUSR2: checkpoint at this boundary, then stop. */
            LOG_INFO("stop requested: %s at step %lld, then exit",
                     g->last_snapshot == g->next_step ? "no checkpoint" : "checkpoint", (long long)g->next_step);
            g->stopped = 1;
            if (g->last_snapshot != g->next_step) {
                j->flags = HCL_BATCH_SNAPSHOT;
                j->why = SNAP_CHECKPOINT;
                j->step = g->last_snapshot = g->next_step;
                g->snapshot_at = -1;
                g->snapshot_why = 0;
                return 1;
            }
        }
    }
    if (g->stopped && !(g->snapshot_at >= 0)) {
        if (g->stopped == 2) return 0;
        g->stopped = 2;
        j->flags = HCL_BATCH_STOP;
        j->step = g->next_step;
        return 1;
    }
    if (g->eval_left > 0) {
        j->flags = HCL_BATCH_EVAL;
        j->step = g->eval_step;
        j->epoch = g->eval_epoch;
        j->eval_index = g->eval_next++;
        int64_t start = (int64_t)j->eval_index * r->batch;
        j->n = r->val.n - start < r->batch ? r->val.n - start : r->batch;
        g->eval_left--;
        return 1;
    }
    if (g->next_step < r->total_steps) {
        int64_t s = g->next_step++;
        j->flags = HCL_BATCH_TRAIN;
        if (nw > 1 && is_log_step(r, s)) j->flags |= HCL_BATCH_CHECK;
        j->step = s;
        j->epoch = s / r->steps_per_epoch;
        j->n = r->batch;
        if (r->val_batches > 0 && is_log_step(r, s)) {
            g->eval_left = r->val_batches;
            g->eval_next = 0;
            g->eval_step = s;
            g->eval_epoch = j->epoch;
        }
        if (sig_checkpoint || checkpoint_due(r, s + 1)) {
            if (sig_checkpoint) LOG_INFO("checkpoint requested by signal: after step %lld", (long long)s + 1);
            sig_checkpoint = 0;
            g->snapshot_at = s + 1;
            g->snapshot_why |= SNAP_CHECKPOINT;
            r->last_ckpt_time = hcl_now();   /* the interval counts from the decision */
        }
        if (r->has_ev && ((s + 1) % r->cfg.eval_every == 0 || s + 1 == r->total_steps)) {
            g->snapshot_at = s + 1;
            g->snapshot_why |= SNAP_EVAL;
        }
        return 1;
    }
    if (!g->stopped) {
        g->stopped = 2;
        j->flags = HCL_BATCH_STOP;
        j->step = r->total_steps;
        return 1;
    }
    return 0;
}

/* The replica state of the SNAPSHOT job just answered -> a checkpoint on disk. A failed write
 * is logged and remembered; training goes on and the previous checkpoint stays. */
static void take_checkpoint(hcl_run *r, int64_t step);

/* The answer to a SNAPSHOT job: the replica's state, for a checkpoint and/or an evaluation. */
static void take_snapshot(hcl_run *r, transport *tp, int64_t step, int why) {
    if (tp->nw) {
        MPI_Request req;
        MPI_Irecv(r->snap, (int)r->snap_floats, MPI_FLOAT, 1, HCL_TAG_SNAPSHOT, MPI_COMM_WORLD, &req);
        coord_wait(r, &req);
    }   /* a worker in this process was packed into r->snap when the job was submitted */
    if (why & SNAP_CHECKPOINT) take_checkpoint(r, step);
    if ((why & SNAP_EVAL) && r->has_ev) {
        /* one evaluation at a time: the previous one is written first (waited for if it is
         * still running: a slow evaluation holds the next back rather than losing it) */
        write_eval_line(r, 1);
        HCL_CHECK(evaluator_start(&r->ev, r->snap, step, tp->nw > 0) == 0, "evaluator busy after a wait");
    }
}

static void take_checkpoint(hcl_run *r, int64_t step) {
    double t0 = hcl_now();
    enum hcl_run_state was = r->st.state;
    r->st.state = HCL_RUN_STATE_CHECKPOINTING;
    if (r->ctl) control_service(r->ctl, &r->st, 0);
    int64_t np = r->ck_model.nparams;
    memcpy(r->ck_model.params, r->snap, sizeof(float) * (size_t)np);
    hcl_ckpt_state st;
    memset(&st, 0, sizeof st);
    st.step = step;
    st.epoch = step / r->steps_per_epoch;
    st.data_cursor = step % r->steps_per_epoch;
    st.samples_seen = step * r->batch;
    st.seed = (uint64_t)r->cfg.seed;
    hcl_rng rng;
    rng_derive(&rng, st.seed, "epoch", (uint64_t)st.epoch);
    memcpy(st.data_rng, rng.s, sizeof st.data_rng);
    config_to_text(&r->cfg, st.config, sizeof st.config);
    st.world_size = r->world_size;
    st.workers = r->world_size > 1 ? r->world_size - 1 : 1;
    int64_t counters[2];
    memcpy(counters, r->snap + np + r->nstate, sizeof counters);
    st.updates = counters[0];
    st.skipped = counters[1];
    st.optimizer = r->oc.kind;
    st.lr_scale = r->lr_scale;
    st.global_batch = r->batch;
    char err[HCL_ERR_MAX], path[CKPT_PATH_MAX];
    int rc = ckpt_write(r->cfg.run_dir, &r->ck_model, r->snap + np, &st, (int)r->cfg.keep, path, err);
    r->st.state = was;
    if (rc != 0) {
        snprintf(r->last_ckpt_error, sizeof r->last_ckpt_error, "step %lld: %s", (long long)step, err);
        LOG_ERROR("checkpoint of step %lld failed, training goes on: %s", (long long)step, err);
    } else {
        r->last_ckpt_error[0] = 0;
        r->last_ckpt_step = step;
        snprintf(r->last_ckpt_path, sizeof r->last_ckpt_path, "%s", path);
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

/* A resumed run continues metrics.jsonl: lines of steps after the checkpoint (logged by the
 * run that crashed after it) are dropped, so every step appears once. */
static int keep_metrics_until(const char *path, int64_t step, char *err) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t cap = 1 << 16, len = 0;
    char *out = hcl_malloc(cap), line[8192];
    while (fgets(line, sizeof line, f)) {
        long long s = -1;
        if (sscanf(line, "{\"step\": %lld", &s) != 1 || s > step) continue;
        size_t n = strlen(line);
        if (len + n + 1 > cap) {
            cap = 2 * (len + n + 1);
            out = realloc(out, cap);
            HCL_CHECK(out, "out of memory");
        }
        memcpy(out + len, line, n);
        len += n;
    }
    fclose(f);
    int rc = hcl_write_file_durable(path, out, len, err);
    free(out);
    return rc;
}

static void warn_line(const char *msg) { LOG_WARN("%s", msg); }

int run_resume(hcl_run *r, char *err) {
    const char *want = r->cfg.resume;
    if (!want[0]) return 0;
    char dir[CKPT_PATH_MAX];
    if (strcmp(want, "auto") == 0) {
        if (ckpt_find_latest(r->cfg.run_dir, dir, warn_line) != 0) {
            LOG_INFO("--resume auto: no checkpoint in %s/checkpoints, starting at step 0", r->cfg.run_dir);
            return 0;
        }
    } else {
        snprintf(dir, sizeof dir, "%s", want);
        if (ckpt_verify(dir, err) != 0) return -1;
    }
    hcl_ckpt_state st;
    hcl_model_config mc;
    if (ckpt_read_state(dir, &st, &mc, err) != 0) return -1;
    const hcl_model_config *have = &r->mc;
    if (mc.nviews != have->nviews)
        return hcl_err(err, "checkpoint %s has %d views, %s has %d", dir, mc.nviews, r->cfg.data, have->nviews);
    for (int v = 0; v < mc.nviews; v++)
        if (strcmp(mc.names[v], have->names[v]) || mc.in_width[v] != have->in_width[v])
            return hcl_err(err, "checkpoint %s: view %d is %s (%d wide), %s has %s (%d wide)", dir, v,
                           mc.names[v], mc.in_width[v], r->cfg.data, have->names[v], have->in_width[v]);
    int same_hidden = mc.nhidden == have->nhidden;
    for (int k = 0; same_hidden && k < mc.nhidden; k++) same_hidden = mc.hidden[k] == have->hidden[k];
    if (!same_hidden || mc.dim != have->dim || mc.act != have->act || mc.layernorm != have->layernorm ||
        mc.nclasses != have->nclasses)
        return hcl_err(err, "checkpoint %s: model shape differs from the flags (hidden, dim, act, layernorm "
                       "or classifier head); pass the flags it was trained with", dir);
    if (st.optimizer != r->oc.kind)
        return hcl_err(err, "checkpoint %s: optimizer %s, the flags say %s", dir, optim_kind_name(st.optimizer),
                       optim_kind_name(r->oc.kind));
    if (st.global_batch != r->batch)
        return hcl_err(err, "checkpoint %s: global batch %lld, the flags say %lld (the data order depends on it)",
                       dir, (long long)st.global_batch, (long long)r->batch);
    if (st.step > r->total_steps)
        return hcl_err(err, "checkpoint %s is at step %lld, past the run's %lld steps", dir,
                       (long long)st.step, (long long)r->total_steps);
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
    LOG_INFO("resuming from %s: step %lld, epoch %lld (saved by %d workers)", dir, (long long)st.step,
             (long long)st.epoch, st.workers);
    return 0;
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
    r->metrics = fopen(path, r->start_step > 0 ? "a" : "w");
    if (!r->metrics) return hcl_err(err, "%s: cannot create: %s", path, strerror(errno));
    ckpt_cleanup(r->cfg.run_dir);
    return 0;
}

int run_control_open(hcl_run *r, int nworkers, char *err) {
    const hcl_config *c = &r->cfg;
    if (control_open(&r->ctl, c->control[0] ? c->control : NULL, c->run_dir,
                     c->control_secret[0] ? c->control_secret : NULL,
                     c->control_clients[0] ? c->control_clients : NULL, err) != 0)
        return -1;
    hcl_setup *t = &r->tel_setup;
    if (control_telemetry_open(r->ctl, nworkers, NULL, t->tel_endpoint, t->tel_server_public,
                               t->tel_client_secret, err) != 0)
        return -1;
    return 0;
}

void run_setup(const hcl_run *r, hcl_setup *su) {
    memset(su, 0, sizeof *su);
    su->learn_t = r->learn_t;
    su->threads = (int32_t)r->cfg.threads;
    su->seed = r->cfg.seed;
    su->worker_timeout = r->cfg.worker_timeout;
    su->batch = r->batch;
    su->resume = r->start_step > 0;
    su->direct = r->direct;
    su->shm_grads = r->shm_grads;
    su->balance = r->balance;
    /* workers open the same directories: absolute paths, as the ranks may start elsewhere */
    if (!realpath(r->cfg.data, su->data_dir)) snprintf(su->data_dir, sizeof su->data_dir, "%s", r->cfg.data);
    if (r->has_val && !realpath(r->cfg.val_data, su->val_dir))
        snprintf(su->val_dir, sizeof su->val_dir, "%s", r->cfg.val_data);
    memcpy(su->tel_endpoint, r->tel_setup.tel_endpoint, sizeof su->tel_endpoint);
    memcpy(su->tel_server_public, r->tel_setup.tel_server_public, sizeof su->tel_server_public);
    memcpy(su->tel_client_secret, r->tel_setup.tel_client_secret, sizeof su->tel_client_secret);
    su->mc = r->mc;
    su->lc = r->lc;
    su->oc = r->oc;
}

int run_train(hcl_run *r, int nw) {
    char err[HCL_ERR_MAX];
    transport tp;
    memset(&tp, 0, sizeof tp);
    tp.nw = nw;
    hcl_worker local;
    if (!nw) {
        int threads = (int)r->cfg.threads;
        if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
        kernels_set_threads(threads);
        if (worker_init(&local, MPI_COMM_SELF, &r->mc, &r->lc, &r->oc, r->learn_t,
                        (uint64_t)r->cfg.seed, r->batch, 0, err) != 0) {
            LOG_ERROR("%s", err);
            return 1;
        }
        tp.local = &local;
        if (r->start_step > 0) worker_snapshot_unpack(&local, r->snap);
    } else {
        kernels_set_threads(1);
        if (r->start_step > 0) {
            MPI_Request rq;
            MPI_Ibcast(r->snap, (int)r->snap_floats, MPI_FLOAT, 0, MPI_COMM_WORLD, &rq);
            coord_wait(r, &rq);
        }
    }
    r->last_ckpt_time = hcl_now();
    if (!nw && r->ctl &&
        telemetry_open(&r->tel, r->tel_setup.tel_endpoint, r->tel_setup.tel_server_public,
                       r->tel_setup.tel_client_secret, 0, err) != 0)
        LOG_WARN("telemetry of the in-process worker: %s", err);
    tp.bytes = run_batch_bytes(r, r->batch, nw ? nw : 1);
    balance_init(&r->bal, nw ? nw : 1, r->balance);
    r->last_split = hcl_calloc((size_t)(nw ? nw : 1) + 1, sizeof(int64_t));
    tp.res_msg = hcl_malloc(batch_result_bytes(nw));
    for (int s = 0; s < HCL_BATCHES_IN_FLIGHT; s++) {
        tp.split[s] = hcl_calloc((size_t)(nw ? nw : 1) + 1, sizeof(int64_t));
        tp.buf[s] = hcl_malloc(tp.bytes * (size_t)(nw ? nw : 1));
        tp.sreq[s] = hcl_malloc(sizeof(MPI_Request) * (size_t)(nw ? nw : 1));
        for (int w = 0; w < (nw ? nw : 1); w++) tp.sreq[s][w] = MPI_REQUEST_NULL;
    }
    LOG_INFO("training %s: %lld rows, %d views, loss %s, batch %lld, %lld steps (%lld per epoch), %s",
             r->cfg.data, (long long)r->train.n, r->mc.nviews, loss_kind_name(r->lc.kind),
             (long long)r->batch, (long long)r->total_steps, (long long)r->steps_per_epoch,
             nw ? "workers on ranks 1.." : "one process");
    int tty = isatty(STDERR_FILENO);
    double t_start = hcl_now(), t_window = t_start;
    int64_t window_steps = 0, skipped = 0;
    hcl_step_result res = {0}, logged = {0};
    double val_sum = 0;
    int val_seen = 0;
    job_gen gen = {0};
    gen.next_step = r->start_step;
    gen.snapshot_at = -1;
    gen.last_snapshot = -1;
    if (r->start_step == 0 && r->cfg.checkpoint_every > 0) {
        gen.snapshot_at = 0;   /* the initial weights */
        gen.snapshot_why = SNAP_CHECKPOINT;
    }
    job j;
    int head = 0, pending = 0, more = 1;
    r->st.state = r->paused ? HCL_RUN_STATE_PAUSED : HCL_RUN_STATE_RUNNING;
    r->st.lr_scale = r->lr_scale;
    double t_last_step = hcl_now(), step_s = 0;
    for (;;) {
        /* Keep HCL_BATCHES_IN_FLIGHT jobs in flight: the workers never wait for the coordinator
         * to pack. A worker in this process computes at submit time, where one ahead is enough
         * (and a SNAPSHOT job is answered, from r->snap, before the next one is packed). */
        int idle = 0;
        while (more && pending < (nw ? HCL_BATCHES_IN_FLIGHT : 2)) {
            int k = next_job(r, &gen, nw, &j);
            if (k == 0) { more = 0; break; }
            if (k == 2) { idle = 1; break; }
            submit(r, &tp, (head + pending) % HCL_BATCHES_IN_FLIGHT, &j);
            if (j.flags & HCL_BATCH_STOP) { more = 0; break; }
            pending++;
        }
        if (!pending) {
            if (!idle) break;
            /* Paused and drained: sleep in the control socket until a command comes. */
            r->st.elapsed_s = hcl_now() - t_start;
            if (r->ctl) control_service(r->ctl, &r->st, 100);
            else usleep(100000);
            check_workers(r);
            t_window = t_last_step = hcl_now();
            window_steps = 0;
            continue;
        }
        job *cur = &tp.jobs[head];
        if (r->has_ev) write_eval_line(r, 0);
        await_result(r, &tp, head, &res);
        head = (head + 1) % HCL_BATCHES_IN_FLIGHT;
        pending--;
        if (cur->flags & HCL_BATCH_TRAIN) {
            window_steps++;
            double now = hcl_now();
            step_s = step_s ? 0.9 * step_s + 0.1 * (now - t_last_step) : now - t_last_step;
            t_last_step = now;
            r->st.step = res.step + 1;
            r->st.epoch = res.step / r->steps_per_epoch;
            r->st.loss = res.loss;
            r->st.lr = res.lr;
            r->st.logit_scale = res.logit_scale;
            r->st.samples_per_s = step_s > 0 ? r->batch / step_s : 0;
            r->st.eta_s = step_s * (double)(r->total_steps - res.step - 1);
            r->st.elapsed_s = now - t_start;
            if (r->ctl) control_publish(r->ctl, &r->st);
            if (res.skipped) {
                skipped++;
                LOG_WARN("step %lld: non-finite loss or gradient on a worker, update skipped on all "
                         "(%lld so far)", (long long)res.step + 1, (long long)skipped);
            }
            if (!is_log_step(r, res.step)) continue;
            logged = res;
            val_sum = 0;
            val_seen = 0;
            if (r->val_batches > 0) continue;
        } else if (cur->flags & HCL_BATCH_EVAL) {
            val_sum += res.loss;
            if (++val_seen < r->val_batches) continue;
        } else if (cur->flags & HCL_BATCH_SNAPSHOT) {
            take_snapshot(r, &tp, res.step, cur->why);
            if (r->has_ev) write_eval_line(r, 0);
            continue;
        } else {
            continue;
        }
        int64_t done = logged.step + 1;
        double now = hcl_now();
        double sps = window_steps * r->batch / (now - t_window);
        double eta = (r->total_steps - done) * (now - t_start) / (done - r->start_step);
        double vl = r->val_batches > 0 ? val_sum / r->val_batches : NAN;
        metrics_line(r, done, logged.step / r->steps_per_epoch, &logged, sps, vl, skipped);
        progress(r, tty, done, logged.step / r->steps_per_epoch, &logged, sps, eta, vl);
        t_window = hcl_now();
        window_steps = 0;
    }
    for (int s = 0; s < HCL_BATCHES_IN_FLIGHT; s++) {
        if (nw) wait_all(r, tp.sreq[s], nw);
        free(tp.buf[s]);
        free(tp.sreq[s]);
        free(tp.split[s]);
    }
    free(tp.res_msg);
    balance_free(&r->bal);
    free(r->last_split);
    r->last_split = NULL;
    if (tty) fputc('\n', stderr);
    if (r->has_ev) {
        write_eval_line(r, 1);
        if (gen.next_step == r->total_steps && r->last_ckpt_step == r->total_steps) {
            /* the end of the run: everything, by hcl-eval on the final checkpoint */
            LOG_INFO("final evaluation of %s (hcl-eval)", r->last_ckpt_path);
            int th = (int)sysconf(_SC_NPROCESSORS_ONLN);
            char *json = evaluate_final(r->last_ckpt_path, r->cfg.data, r->cfg.val_data, th, err);
            if (!json) {
                LOG_ERROR("final evaluation failed: %s", err);
            } else {
                fprintf(r->metrics, "{\"step\": %lld, \"final_eval\": %s}\n", (long long)r->total_steps, json);
                fflush(r->metrics);
                free(json);
            }
        }
    }
    r->st.state = HCL_RUN_STATE_DONE;
    if (r->ctl) control_service(r->ctl, &r->st, 0);
    double secs = hcl_now() - t_start;
    int64_t ran = gen.next_step - r->start_step;
    if (gen.next_step < r->total_steps)
        LOG_INFO("stopped at step %lld of %lld after %.1f s; resume with --resume auto",
                 (long long)gen.next_step, (long long)r->total_steps, secs);
    else
        LOG_INFO("done: %lld steps in %.1f s (%.0f samples/s), final loss %.4f, logit scale %.2f, %lld skipped",
                 (long long)ran, secs, ran * r->batch / secs, logged.loss, logged.logit_scale, (long long)skipped);
    if (!nw) worker_free(&local);
    return 0;
}
