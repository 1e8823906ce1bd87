/* prepare: see prepare.h. */
#include "prepare.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels.h"
#include "log.h"
#include "memlimit.h"
#include "step.h"
#include "util.h"

/* ---- flags that name views ---------------------------------------------------------------- */

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

static int parse_clip_views(hcl_loss_config *lc, const hcl_dataset *ds, const char *s, char *err) {
    char a[160];
    snprintf(a, sizeof a, "%s", s);
    char *comma = strchr(a, ',');
    if (!comma) return hcl_err(err, "--clip-views: '%s' is not A,B", s);
    *comma = 0;
    int va = view_by_name(ds, a, "--clip-views", err);
    if (va < 0) return -1;
    int vb = view_by_name(ds, comma + 1, "--clip-views", err);
    if (vb < 0) return -1;
    if (va == vb) return hcl_err(err, "--clip-views: '%s' names one view twice", s);
    lc->view_a = va;
    lc->view_b = vb;
    return 0;
}

/* ---- the configurations ------------------------------------------------------------------- */

/* --data, and --val-data with the same views in the same order. A view that no training row
 * has is an error: its encoder would never be trained (with two views the loss is 0), and its
 * checkpoints would embed that view with the initial random weights. In --val-data it is a
 * warning: training is not affected, that view's measures are null. */
static int open_data(hcl_run *r, char *err) {
    const hcl_config *cfg = &r->cfg;
    if (dataset_open(&r->train, cfg->data, err) != 0) return -1;
    r->has_train = 1;
    int v = dataset_absent_view(&r->train);
    if (v >= 0)
        return hcl_err(err, "%s/mask.npy: view '%s' is absent from every row (column %d is all 0): its encoder "
                       "would never train; give it rows or remove it from manifest.txt", r->train.dir,
                       r->train.names[v], v);
    if (!cfg->val_data[0]) return 0;
    if (dataset_open(&r->val, cfg->val_data, err) != 0) return -1;
    r->has_val = 1;
    if ((v = dataset_absent_view(&r->val)) >= 0)
        LOG_WARN("%s/mask.npy: view '%s' is absent from every validation row (column %d is all 0): its "
                 "evaluation measures will be null", r->val.dir, r->val.names[v], v);
    int widths[HCL_MAX_VIEWS];
    for (int k = 0; k < r->train.nviews; k++) widths[k] = (int)r->train.widths[k];
    return dataset_check_views(&r->val, r->train.nviews, r->train.names, widths, r->train.types, NULL, "--val-data",
                               err);
}

/* The model from the data's views and the flags (every value checked by the option table). */
static void model_config(hcl_run *r) {
    const hcl_config *cfg = &r->cfg;
    const hcl_dataset *ds = &r->train;
    hcl_model_config *mc = &r->mc;
    model_config_default(mc);
    mc->nviews = ds->nviews;
    for (int v = 0; v < ds->nviews; v++) {
        snprintf(mc->names[v], sizeof mc->names[v], "%s", ds->names[v]);
        mc->in_width[v] = (int)ds->widths[v];
    }
    int64_t hidden[HCL_MAX_HIDDEN];
    mc->nhidden = config_ints(cfg, "hidden", hidden, HCL_MAX_HIDDEN);
    for (int k = 0; k < mc->nhidden; k++) mc->hidden[k] = (int)hidden[k];
    mc->dim = (int)cfg->dim;
    mc->act = config_enum(cfg, "act") == 1 ? HCL_ACT_GELU : HCL_ACT_RELU;
    mc->layernorm = (int)cfg->layernorm;
    r->learn_t = cfg->temperature == 0;
    if (!r->learn_t) mc->t_init = logf(1.0f / (float)cfg->temperature);
}

/* One `VIEW=SPEC` of --encoder into view v's spec, checked against the view's kind. */
static int encoder_flag(hcl_run *r, const char *item, int *given, char *err) {
    const hcl_dataset *ds = &r->train;
    char name[HCL_NAME_MAX + 1], msg[HCL_ERR_MAX];
    const char *eq = strchr(item, '=');
    if (!eq || eq == item || (size_t)(eq - item) > HCL_NAME_MAX)
        return hcl_err(err, "--encoder: '%s' is not VIEW=SPEC (e.g. image=conv:16,32)", item);
    memcpy(name, item, (size_t)(eq - item));
    name[eq - item] = 0;
    int v = view_by_name(ds, name, "--encoder", err);
    if (v < 0) return -1;
    if (given[v]) return hcl_err(err, "--encoder: view '%s' given twice", name);
    given[v] = 1;
    hcl_encoder_spec *sp = &r->mc.spec[v];
    if (model_spec_parse(sp, eq + 1, msg) != 0) return hcl_err(err, "--encoder %s: %s", item, msg);
    if (sp->vocab || sp->pad != -1 || sp->img_h)
        return hcl_err(err, "--encoder %s: vocab, pad and image come from the dataset's manifest", item);
    const hcl_view_type *t = &ds->types[v];
    if (sp->kind == HCL_ENC_BAG && t->kind != HCL_VIEW_TOKENS)
        return hcl_err(err, "--encoder %s: view '%s' of %s holds no token ids (its manifest line would say "
                       "`view %s tokens vocab=V pad=P`)", item, name, ds->dir, name);
    if (sp->kind == HCL_ENC_CONV && t->kind != HCL_VIEW_IMAGE)
        return hcl_err(err, "--encoder %s: view '%s' of %s is not an image (its manifest line would say "
                       "`view %s image=HxWxC`)", item, name, ds->dir, name);
    return 0;
}

/* --encoder's specs, the views' vocabularies and image shapes; a token view needs a bag. */
static int encoders_config(hcl_run *r, char *err) {
    const hcl_dataset *ds = &r->train;
    char buf[sizeof r->cfg.encoder], *save = NULL;
    int given[HCL_MAX_VIEWS] = {0};
    snprintf(buf, sizeof buf, "%s", r->cfg.encoder);
    for (char *tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save))
        if (encoder_flag(r, tok, given, err) != 0) return -1;
    for (int v = 0; v < ds->nviews; v++) {
        const hcl_view_type *t = &ds->types[v];
        hcl_encoder_spec *sp = &r->mc.spec[v];
        if (t->kind == HCL_VIEW_TOKENS && sp->kind != HCL_ENC_BAG)
            return hcl_err(err, "view '%s' of %s holds token ids: give it a bag encoder (--encoder %s=bag:E[,W,...])",
                           ds->names[v], ds->dir, ds->names[v]);
        if (sp->kind == HCL_ENC_BAG) {
            sp->vocab = (int)t->vocab;
            sp->pad = (int)t->pad;
        }
        if (sp->kind == HCL_ENC_CONV) {
            sp->img_h = t->h;
            sp->img_w = t->w;
            sp->img_c = t->c;
        }
    }
    char msg[HCL_ERR_MAX];
    if (model_config_check(&r->mc, msg) != 0) return hcl_err(err, "--encoder: %s", msg);
    return 0;
}

static int loss_config(hcl_run *r, char *err) {
    const hcl_config *cfg = &r->cfg;
    const hcl_dataset *ds = &r->train;
    hcl_loss_config *lc = &r->lc;
    loss_config_default(lc, ds->nviews, r->mc.dim);
    /* the option table allows only these words (config.c) */
    HCL_CHECK(loss_kind_parse(cfg->loss, &lc->kind) == 0 && loss_kind_parse(cfg->hybrid_base, &lc->base) == 0,
              "--loss '%s' or --hybrid-base '%s' passed the option table", cfg->loss, cfg->hybrid_base);
    if (ds->nviews < 2 && lc->kind != HCL_LOSS_SUPCON)
        return hcl_err(err, "--loss %s: %s has one view; cross-view losses need two", cfg->loss, cfg->data);
    if (cfg->core_view[0]) {
        int v = view_by_name(ds, cfg->core_view, "--core-view", err);
        if (v < 0) return -1;
        lc->core_view = v;
    }
    if (cfg->clip_views[0] && parse_clip_views(lc, ds, cfg->clip_views, err) != 0) return -1;
    if (cfg->pair_weights[0] && parse_pair_weights(lc, ds, cfg->pair_weights, err) != 0) return -1;
    lc->lambda = (float)cfg->lambda;
    int needs_labels = lc->kind == HCL_LOSS_SUPCON || lc->kind == HCL_LOSS_HYBRID;
    if (needs_labels && !ds->has_labels)
        return hcl_err(err, "--loss %s: needs labels, but %s has no labels.npy", cfg->loss, cfg->data);
    if (lc->kind == HCL_LOSS_HYBRID) {
        r->mc.nclasses = ds->nclasses;
        lc->nclasses = ds->nclasses;
    }
    return 0;
}

/* The batch, the steps, the optimizer and its schedule, the validation batches. */
static int schedule(hcl_run *r, char *err) {
    const hcl_config *cfg = &r->cfg;
    const hcl_dataset *ds = &r->train;
    r->batch = cfg->batch_size;
    if (r->batch > ds->n)
        return hcl_err(err, "--batch-size: %lld is larger than the %lld rows of %s",
                       (long long)r->batch, (long long)ds->n, cfg->data);
    r->steps_per_epoch = ds->n / r->batch;
    r->total_steps = cfg->steps > 0 ? cfg->steps : cfg->epochs * r->steps_per_epoch;
    if (r->total_steps < 1) return hcl_err(err, "--steps/--epochs: nothing to train (0 steps)");
    hcl_optim_config *oc = &r->oc;
    optim_config_default(oc);
    HCL_CHECK(optim_kind_parse(cfg->optimizer, &oc->kind) == 0, "--optimizer '%s' passed the option table",
              cfg->optimizer);
    for (int v = 0; v < ds->nviews; v++)
        if (r->mc.spec[v].kind == HCL_ENC_BAG && oc->kind != HCL_OPTIM_ADAMW)
            return hcl_err(err, "--optimizer %s: view '%s' has a bag encoder, whose table is updated lazily by "
                           "AdamW's rule only (torch's SparseAdam); use --optimizer adamw", cfg->optimizer, ds->names[v]);
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
    return 0;
}

/* Before anything is allocated: one replica of the model of --hidden and --dim on the data's
 * views (weights, gradients, optimizer state: what each worker holds) fits in memory. */
static int model_fits(const hcl_run *r, char *err) {
    char what[96], msg[HCL_ERR_MAX];
    snprintf(what, sizeof what, "one replica's weights, gradients and %s state", optim_kind_name(r->oc.kind));
    if (model_check_memory(&r->mc, 2 + (int)optim_state_floats(&r->oc, 1), what, msg) == 0) return 0;
    return hcl_err(err, "--hidden/--dim: %s", msg);
}

/* The checkpoint buffers (the model's tensor table, one replica state), the status, the
 * evaluator, the batch order. */
static int buffers(hcl_run *r, char *err) {
    const hcl_config *cfg = &r->cfg;
    if (model_fits(r, err) != 0) return -1;
    if (model_init(&r->ck_model, &r->mc, (uint64_t)cfg->seed, err) != 0) return -1;
    r->nstate = optim_state_floats(&r->oc, r->ck_model.nparams);
    r->snap_floats = batch_snapshot_floats(r->ck_model.nparams, r->nstate);
    r->snap = hcl_floats_lazy(r->snap_floats);   /* written at the first checkpoint */
    r->last_ckpt_step = -1;
    r->lr_scale = 1.0;
    control_status_init(&r->st);
    r->st.total_steps = r->total_steps;
    r->st.log_every = cfg->log_every;
    r->st.checkpoint_every = cfg->checkpoint_every;
    r->st.checkpoint_interval_s = cfg->checkpoint_interval;
    if (cfg->eval_every > 0) {
        if (!r->has_val) return hcl_err(err, "--eval-every: needs --val-data");
        if (evaluator_init(&r->ev, &r->mc, &r->val, cfg->eval_rows, err) != 0) return -1;
        r->has_ev = 1;
    }
    batcher_init(&r->bt, &r->train, r->has_val ? &r->val : NULL, r->batch, (int)cfg->no_shuffle, r->balance);
    return 0;
}

int run_prepare(hcl_run *r, const hcl_config *cfg, int one_host, char *err) {
    memset(r, 0, sizeof *r);
    r->cfg = *cfg;
    if (!cfg->data[0]) return hcl_err(err, "--data: a dataset directory is required (see --help)");
    if (!cfg->run_dir[0]) return hcl_err(err, "--run-dir: a run directory is required (see --help)");
    /* Every flag's own range or words were checked by the option table (common/config.c); what
     * is checked here needs the data or another flag. */
    r->shm_grads = config_enum(cfg, "grad-allreduce") == 0;      /* shm|mpi */
    r->balance = config_enum(cfg, "balance") == 1;               /* even|adaptive */
    r->comm_bf16 = config_enum(cfg, "comm-dtype") == 1;          /* f32|bf16 */
    /* auto|coordinator|direct: on one host the workers read the same files as rank 0 from the
     * same page cache, so shipping rows is only a second copy and rank 0's CPU (bench/run) */
    const int plane = config_enum(cfg, "data-plane");
    r->direct = plane == 2 || (plane == 0 && one_host);
    if (matmul_engine_parse(cfg->matmul, &r->matmul) != 0 || !matmul_available(r->matmul))
        return hcl_err(err, "--matmul %s: this build has no oneDNN (install libdnnl-dev and rebuild)", cfg->matmul);
    HCL_CHECK(matmul_precision_parse(cfg->precision, &r->precision) == 0, "--precision '%s' passed the option table",
              cfg->precision);
    if (r->precision == HCL_PRECISION_BF16 && r->matmul != HCL_MATMUL_ONEDNN)
        return hcl_err(err, "--precision bf16: needs --matmul onednn (OpenBLAS has no bf16 products here)");
    memlimit_read(&r->mem_start);
    r->one_host = one_host;
    if (open_data(r, err) != 0) return -1;
    memlimit_state s;
    memlimit_read(&s);
    r->mem_data = s.vm_size - r->mem_start.vm_size;
    model_config(r);
    if (encoders_config(r, err) != 0 || loss_config(r, err) != 0 || schedule(r, err) != 0) return -1;
    return buffers(r, err);
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
    su->comm_bf16 = r->comm_bf16;
    su->balance = r->balance;
    su->matmul = (int32_t)r->matmul;
    su->precision = (int32_t)r->precision;
    su->loss_memory = r->cfg.loss_memory;
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

/* ---- memory ------------------------------------------------------------------------------- */

/* An evaluation (--eval-every): the validation rows' embeddings of every view and fused, the
 * encoders' activations for 512 rows, and the kNN's tiles. */
static double eval_bytes(const hcl_run *r) {
    if (!r->has_ev) return 0.0;
    const double rows = (double)r->ev.rows.n, D = r->mc.dim;
    return 4.0 * rows * D * (r->mc.nviews + 1) + 4.0 * 512 * 4 * 1024 * r->mc.nviews + 16.0 * MEMLIMIT_MB;
}

/* Each worker on this host (workers check themselves too, but later: after the run directory
 * is made): the replica, its batches, its engines' threads and buffers on a process as this one
 * started (libraries, MPI, OpenBLAS's helpers) with the data mapped when it reads its rows. */
static int check_worker(const hcl_run *r, int workers, char *err) {
    if (!r->one_host) return 0;
    memlimit_need need = {0};
    hcl_setup su;
    run_setup(r, &su);
    if (worker_memory(&need, &su, workers, 1, err) != 0) return -1;
    const double batch = 2.0 * batcher_message_bytes(&r->bt, workers, r->direct);
    memlimit_add(&need, "batches", batch, batch);
    const long cores = sysconf(_SC_NPROCESSORS_ONLN);
    const int t = r->cfg.threads > 0 ? (int)r->cfg.threads : cores / workers > 1 ? (int)(cores / workers) : 1;
    kernels_memory(&need, r->matmul, t, r->matmul == HCL_MATMUL_OPENBLAS);
    memlimit_add(&need, "thread stacks", 3 * memlimit_thread_stack(), 0.0);   /* watchdog, telemetry */
    memlimit_state s = r->mem_start;
    s.vm_size += r->direct ? r->mem_data : 0.0;
    s.vm_data = r->mem_start.vm_data;
    s.cgroup = 0.0;   /* shared with this process: counted in run_check_memory */
    return memlimit_check(&need, &s, "each worker", err);
}

/* The resident memory of the workers to come, for the cgroup all the ranks share. */
static double workers_resident(const hcl_run *r, int workers) {
    memlimit_need need = {0};
    hcl_setup su;
    char err[HCL_ERR_MAX];
    run_setup(r, &su);
    if (worker_memory(&need, &su, workers, 1, err) != 0) return 0.0;
    double res = r->mem_start.vm_rss;
    for (int i = 0; i < need.n; i++) res += need.part[i].resident;
    return workers * res;
}

int run_check_memory(hcl_run *r, int workers, char *err) {
    memlimit_need need = {0};
    const int nmsg = workers ? workers : 1;
    const double batches = (double)HCL_BATCHES_IN_FLIGHT * nmsg * batcher_message_bytes(&r->bt, nmsg, workers && r->direct);
    memlimit_add(&need, "batches", batches, batches);
    int threads = 2 + (r->cfg.prometheus[0] != 0) + (r->has_ev && workers);   /* ZeroMQ's two */
    if (workers == 0) {   /* the worker in this process (transport_local_open) */
        hcl_setup su;
        run_setup(r, &su);
        if (worker_memory(&need, &su, 1, 0, err) != 0) return -1;
        const int t = r->cfg.threads > 0 ? (int)r->cfg.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
        kernels_memory(&need, r->matmul, t, r->matmul == HCL_MATMUL_OPENBLAS || r->has_ev);
        threads += 2;   /* its telemetry's ZeroMQ */
    } else {
        kernels_memory(&need, HCL_MATMUL_OPENBLAS, 1, r->has_ev);   /* an evaluation's thread */
        if (r->one_host) memlimit_add_mapped(&need, "the workers", 0.0, 0.0, workers_resident(r, workers));
    }
    memlimit_add(&need, "evaluation", eval_bytes(r), eval_bytes(r));
    memlimit_add(&need, "thread stacks", threads * memlimit_thread_stack(), 0.0);
    memlimit_state s;
    memlimit_read(&s);
    r->mem_need[0] = s.vm_size;
    r->mem_need[1] = s.vm_rss;
    for (int i = 0; i < need.n; i++) {
        r->mem_need[0] += need.part[i].bytes;
        r->mem_need[1] += strcmp(need.part[i].what, "the workers") ? need.part[i].resident : 0.0;
    }
    LOG_DEBUG("memory: %.0f MB of address space (%.0f mapped now), %.0f MB resident (%.0f now) expected",
              r->mem_need[0] / MEMLIMIT_MB, s.vm_size / MEMLIMIT_MB, r->mem_need[1] / MEMLIMIT_MB, s.vm_rss / MEMLIMIT_MB);
    if (memlimit_check(&need, &s, workers ? "the coordinator" : "training", err) != 0 ||
        (workers && check_worker(r, workers, err) != 0))
        return -1;
    if ((workers == 0 && r->matmul == HCL_MATMUL_OPENBLAS) || r->has_ev) kernels_blas_reserve();
    return 0;
}
