/* ckpt: see ckpt.h. */
#include "ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.pb-c.h"
#include "model_io.h"
#include "rng.h"
#include "safetensors.h"
#include "util.h"

/* state.pb's own checksum, the field state_crc32c (20, fixed32) written last: the tag's two
 * bytes (20 << 3 | 5 as a varint) and the CRC-32C of every byte before them, little-endian */
#define STATE_CRC_TAG0 0xa5
#define STATE_CRC_TAG1 0x01
#define STATE_TRAILER 6

/* ---- files ------------------------------------------------------------------------------- */

static int file_sum(const char *path, uint64_t *size, uint32_t *crc, char *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return hcl_err(err, "%s: cannot open: %s", path, strerror(errno));
    static uint8_t buf[1 << 16];
    uint32_t c = 0;
    uint64_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            return hcl_err(err, "%s: read: %s", path, strerror(e));
        }
        if (r == 0) break;
        c = hcl_crc32c(c, buf, (size_t)r);
        n += (uint64_t)r;
    }
    close(fd);
    *size = n;
    *crc = c;
    return 0;
}

static void rm_rf(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char p[2048];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            struct stat st;
            if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) rm_rf(p);
            else unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static const char *opt_prefix(enum hcl_optim_kind k, int which) {
    if (k == HCL_OPTIM_ADAMW) return which == 0 ? "exp_avg" : "exp_avg_sq";
    return "momentum_buffer";
}

static int write_optimizer(const char *path, const hcl_model *m, const float *state,
                           enum hcl_optim_kind kind, int64_t updates, char *err) {
    int nmom = kind == HCL_OPTIM_ADAMW ? 2 : 1;
    int n = m->ntensors * nmom;
    st_entry *e = hcl_calloc((size_t)n, sizeof *e);
    char (*names)[ST_NAME_MAX] = hcl_calloc((size_t)n, ST_NAME_MAX);
    for (int k = 0; k < nmom; k++)
        for (int i = 0; i < m->ntensors; i++) {
            const hcl_tensor *t = &m->tensors[i];
            int j = k * m->ntensors + i;
            snprintf(names[j], ST_NAME_MAX, "%s.%s", opt_prefix(kind, k), t->name);
            e[j].name = names[j];
            e[j].ndim = t->ndim;
            e[j].shape = t->shape;
            e[j].data = state + (int64_t)k * m->nparams + t->offset;
        }
    char upd[32];
    snprintf(upd, sizeof upd, "%lld", (long long)updates);
    const char *meta[] = {"format", "hcl-optimizer", "optimizer", optim_kind_name(kind), "step", upd, NULL};
    int rc = st_write(path, e, n, meta, err);
    free(e);
    free(names);
    return rc;
}

/* ---- write ------------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Names of step-* directories in run_dir/checkpoints, sorted ascending; returns the count. */
static int list_steps(const char *ckdir, char ***out) {
    *out = NULL;
    DIR *d = opendir(ckdir);
    if (!d) return 0;
    int n = 0, cap = 0;
    char **names = NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "step-", 5) != 0 || strlen(e->d_name) != 13) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            names = realloc(names, sizeof(char *) * (size_t)cap);
            HCL_CHECK(names, "out of memory");
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (n) qsort(names, (size_t)n, sizeof(char *), cmp_str);
    *out = names;
    return n;
}

static void free_list(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

static void prune(const char *ckdir, const char *keep_name, int keep) {
    char **names;
    int n = list_steps(ckdir, &names);
    for (int i = 0; i < n - keep; i++) {
        if (!strcmp(names[i], keep_name)) continue;
        char p[2048];
        snprintf(p, sizeof p, "%s/%s", ckdir, names[i]);
        rm_rf(p);
    }
    free_list(names, n);
}

int ckpt_write(const char *run_dir, const hcl_model *m, const float *opt_state,
               const hcl_ckpt_state *st, int keep, char *path_out, char *err) {
    char ckdir[1100], name[32], tmp[1200], final[1200], path[1300];
    snprintf(ckdir, sizeof ckdir, "%s/checkpoints", run_dir);
    if (hcl_mkdir_p(ckdir, err) != 0) return -1;
    snprintf(name, sizeof name, "step-%08lld", (long long)st->step);
    snprintf(tmp, sizeof tmp, "%s/.tmp-%s.%d", ckdir, name, (int)getpid());
    snprintf(final, sizeof final, "%s/%s", ckdir, name);
    rm_rf(tmp);
    if (mkdir(tmp, 0755) != 0) return hcl_err(err, "%s: mkdir: %s", tmp, strerror(errno));

    const char *files[2] = {"model.safetensors", "optimizer.safetensors"};
    Hcl__FileSum sums[2], *sump[2];
    snprintf(path, sizeof path, "%s/%s", tmp, files[0]);
    if (model_save(m, path, err) != 0) goto fail;
    snprintf(path, sizeof path, "%s/%s", tmp, files[1]);
    if (write_optimizer(path, m, opt_state, st->optimizer, st->updates, err) != 0) goto fail;
    for (int i = 0; i < 2; i++) {
        hcl__file_sum__init(&sums[i]);
        sums[i].name = (char *)files[i];
        snprintf(path, sizeof path, "%s/%s", tmp, files[i]);
        if (file_sum(path, &sums[i].size, &sums[i].crc32c, err) != 0) goto fail;
        sump[i] = &sums[i];
    }

    Hcl__TrainState ts;
    hcl__train_state__init(&ts);
    ts.format_version = CKPT_FORMAT_VERSION;
    ts.step = st->step;
    ts.epoch = st->epoch;
    ts.samples_seen = st->samples_seen;
    ts.data_cursor = st->data_cursor;
    ts.seed = st->seed;
    ts.n_data_rng = 4;
    ts.data_rng = (uint64_t *)st->data_rng;
    ts.config = (char *)st->config;
    Hcl__View views[HCL_MAX_VIEWS], *viewp[HCL_MAX_VIEWS];
    for (int v = 0; v < m->cfg.nviews; v++) {
        hcl__view__init(&views[v]);
        views[v].name = (char *)m->cfg.names[v];
        views[v].width = m->cfg.in_width[v];
        viewp[v] = &views[v];
    }
    ts.n_views = (size_t)m->cfg.nviews;
    ts.views = viewp;
    ts.world_size = st->world_size;
    ts.workers = st->workers;
    ts.optimizer_updates = st->updates;
    ts.skipped_steps = st->skipped;
    ts.optimizer = (char *)optim_kind_name(st->optimizer);
    ts.lr_scale = st->lr_scale;
    ts.wall_time = hcl_wall();
    ts.global_batch = st->global_batch;
    ts.model_params = m->nparams;
    ts.n_files = 2;
    ts.files = sump;
    /* state_crc32c (0: not packed) goes last, over every byte before it (proto/checkpoint.proto) */
    size_t len = hcl__train_state__get_packed_size(&ts);
    uint8_t *buf = hcl_malloc(len + STATE_TRAILER);
    hcl__train_state__pack(&ts, buf);
    const uint32_t crc = hcl_crc32c(0, buf, len);
    buf[len] = STATE_CRC_TAG0;
    buf[len + 1] = STATE_CRC_TAG1;
    for (int i = 0; i < 4; i++) buf[len + 2 + i] = (uint8_t)(crc >> (8 * i));
    snprintf(path, sizeof path, "%s/state.pb", tmp);
    int rc = hcl_write_file_durable(path, buf, len + STATE_TRAILER, err);
    free(buf);
    if (rc != 0) goto fail;
    if (hcl_fsync_dir(tmp, err) != 0) goto fail;

    /* Into place. A checkpoint of the same step (a re-run) is replaced. */
    struct stat sb;
    if (stat(final, &sb) == 0) {
        char old[1300];
        snprintf(old, sizeof old, "%s/.old-%s.%d", ckdir, name, (int)getpid());
        if (rename(final, old) != 0) {
            hcl_err(err, "%s: rename aside: %s", final, strerror(errno));
            goto fail;
        }
        rm_rf(old);
    }
    if (rename(tmp, final) != 0) {
        hcl_err(err, "%s: rename into place: %s", final, strerror(errno));
        goto fail;
    }
    if (hcl_fsync_dir(ckdir, err) != 0) return -1;
    char latest[1200], line[64];
    snprintf(latest, sizeof latest, "%s/latest", ckdir);
    int ln = snprintf(line, sizeof line, "%s\n", name);
    if (hcl_write_file_durable(latest, line, (size_t)ln, err) != 0) return -1;
    if (keep > 0) prune(ckdir, name, keep);
    if (path_out) snprintf(path_out, CKPT_PATH_MAX, "%s", final);
    return 0;
fail:
    rm_rf(tmp);
    return -1;
}

/* ---- read -------------------------------------------------------------------------------- */

/* Format 2 ends with its CRC-32C over every byte before it; format 1 has none. */
static int check_state_crc(const char *path, const Hcl__TrainState *ts, const uint8_t *buf, size_t n, char *err) {
    if (ts->format_version == 1) return 0;
    if (n < STATE_TRAILER || buf[n - 6] != STATE_CRC_TAG0 || buf[n - 5] != STATE_CRC_TAG1)
        return hcl_err(err, "%s: checksum missing (format %u ends with its CRC-32C): truncated or damaged", path,
                       ts->format_version);
    const uint32_t crc = hcl_crc32c(0, buf, n - STATE_TRAILER);
    if (crc != ts->state_crc32c)
        return hcl_err(err, "%s: checksum %08x, the file says %08x (damaged or edited)", path, crc, ts->state_crc32c);
    return 0;
}

static Hcl__TrainState *read_state_pb(const char *dir, char *err) {
    char path[1200];
    snprintf(path, sizeof path, "%s/state.pb", dir);
    size_t n;
    uint8_t *buf = (uint8_t *)hcl_read_file(path, 1 << 24, &n, err);
    if (!buf) return NULL;
    Hcl__TrainState *ts = hcl__train_state__unpack(NULL, n, buf);
    if (!ts) {
        free(buf);
        hcl_err(err, "%s: damaged (not a TrainState message)", path);
        return NULL;
    }
    int rc = 0;
    if (ts->format_version != 1 && ts->format_version != CKPT_FORMAT_VERSION)
        rc = hcl_err(err, "%s: format version %u, this hcl reads 1 and %d", path, ts->format_version,
                     CKPT_FORMAT_VERSION);
    else
        rc = check_state_crc(path, ts, buf, n, err);
    free(buf);
    if (rc != 0) {
        hcl__train_state__free_unpacked(ts, NULL);
        return NULL;
    }
    return ts;
}

/* The files state.pb lists in dir against their size and CRC-32C: all of them (and both
 * model.safetensors and optimizer.safetensors must be listed), or with `only` that one file. */
static int verify_files(const char *dir, const char *only, char *err) {
    Hcl__TrainState *ts = read_state_pb(dir, err);
    if (!ts) return -1;
    int rc = 0;
    int have_model = 0, have_opt = 0, have_only = 0;
    for (size_t i = 0; i < ts->n_files && rc == 0; i++) {
        const Hcl__FileSum *fs = ts->files[i];
        if (strchr(fs->name, '/')) { rc = hcl_err(err, "%s/state.pb: bad file name '%s'", dir, fs->name); break; }
        have_model |= !strcmp(fs->name, "model.safetensors");
        have_opt |= !strcmp(fs->name, "optimizer.safetensors");
        if (only && strcmp(fs->name, only) != 0) continue;
        have_only = 1;
        char path[1300];
        snprintf(path, sizeof path, "%s/%s", dir, fs->name);
        uint64_t size;
        uint32_t crc;
        if (file_sum(path, &size, &crc, err) != 0) rc = -1;
        else if (size != fs->size)
            rc = hcl_err(err, "%s: %llu bytes, state.pb says %llu (truncated or damaged)", path,
                         (unsigned long long)size, (unsigned long long)fs->size);
        else if (crc != fs->crc32c)
            rc = hcl_err(err, "%s: checksum %08x, state.pb says %08x (damaged)", path, crc, fs->crc32c);
    }
    if (rc == 0 && !only && (!have_model || !have_opt))
        rc = hcl_err(err, "%s/state.pb: does not list model.safetensors and optimizer.safetensors", dir);
    if (rc == 0 && only && !have_only) rc = hcl_err(err, "%s/state.pb: does not list %s", dir, only);
    hcl__train_state__free_unpacked(ts, NULL);
    return rc;
}

/* ---- state.pb's fields ------------------------------------------------------------------- */

/* Where training stands: the step and the counts that follow from it, in range and agreeing. */
static int check_counts(const char *pb, const Hcl__TrainState *ts, char *err) {
    const long long s = ts->step, e = ts->epoch, c = ts->data_cursor, u = ts->optimizer_updates,
                    k = ts->skipped_steps, b = ts->global_batch;
    if (s < 0 || s > CKPT_MAX_STEP) return hcl_err(err, "%s: step %lld out of [0, 2^40]", pb, s);
    if (b < 1 || b > CKPT_MAX_BATCH) return hcl_err(err, "%s: global_batch %lld out of [1, 2^22]", pb, b);
    if (ts->samples_seen != s * b)
        return hcl_err(err, "%s: samples_seen %lld, but step %lld x global_batch %lld is %lld", pb,
                       (long long)ts->samples_seen, s, b, s * b);
    if (e < 0 || e > s) return hcl_err(err, "%s: epoch %lld out of [0, step %lld]", pb, e, s);
    if (c < 0 || c > s) return hcl_err(err, "%s: data_cursor %lld out of [0, step %lld]", pb, c, s);
    /* step = epoch x (batches per epoch) + data_cursor, with data_cursor < batches per epoch */
    if (e == 0 ? c != s : (s - c) % e != 0 || (s - c) / e <= c)
        return hcl_err(err, "%s: epoch %lld and data_cursor %lld do not make step %lld (epoch x batches "
                       "per epoch + data_cursor)", pb, e, c, s);
    if (u < 0) return hcl_err(err, "%s: optimizer_updates %lld is negative", pb, u);
    if (k < 0) return hcl_err(err, "%s: skipped_steps %lld is negative", pb, k);
    if (u + k != s)
        return hcl_err(err, "%s: optimizer_updates %lld + skipped_steps %lld is not step %lld (each step "
                       "updates or is skipped)", pb, u, k, s);
    hcl_rng rng;
    rng_derive(&rng, ts->seed, "epoch", (uint64_t)e);
    if (ts->n_data_rng != 4 || memcmp(ts->data_rng, rng.s, sizeof rng.s) != 0)
        return hcl_err(err, "%s: data_rng (%zu words) is not the order of seed %llu, epoch %lld", pb,
                       ts->n_data_rng, (unsigned long long)ts->seed, e);
    return 0;
}

/* Everything else of ts: the world, the optimizer, the scalars, the texts, the views. */
static int check_rest(const char *pb, const Hcl__TrainState *ts, enum hcl_optim_kind *kind, char *err) {
    const int ws = ts->world_size, want = ws > 1 ? ws - 1 : 1;
    if (ws < 1 || ws > CKPT_MAX_WORLD) return hcl_err(err, "%s: world_size %d out of [1, 2^20]", pb, ws);
    if (ts->workers != want)
        return hcl_err(err, "%s: workers %d with world_size %d (want %d)", pb, ts->workers, ws, want);
    if (optim_kind_parse(ts->optimizer, kind) != 0)
        return hcl_err(err, "%s: optimizer '%.64s' is none of adamw, sgd, lars", pb, ts->optimizer);
    if (!(isfinite(ts->lr_scale) && ts->lr_scale >= 0 && ts->lr_scale <= 1e6))
        return hcl_err(err, "%s: lr_scale %g out of [0, 1e6]", pb, ts->lr_scale);
    if (!(isfinite(ts->wall_time) && ts->wall_time >= 0))
        return hcl_err(err, "%s: wall_time %g is not a time", pb, ts->wall_time);
    const size_t clen = strlen(ts->config);
    if (clen >= sizeof ((hcl_ckpt_state *)0)->config)
        return hcl_err(err, "%s: config of %zu bytes, at most %zu", pb, clen,
                       sizeof ((hcl_ckpt_state *)0)->config - 1);
    if (ts->n_views < 1 || ts->n_views > HCL_MAX_VIEWS)
        return hcl_err(err, "%s: views %zu, want 1..%d", pb, ts->n_views, HCL_MAX_VIEWS);
    if (ts->model_params < 1) return hcl_err(err, "%s: model_params %lld", pb, (long long)ts->model_params);
    return 0;
}

/* The views and the size state.pb gives the model, against model.safetensors' configuration. */
static int check_model(const char *pb, const Hcl__TrainState *ts, const hcl_model_config *mc, char *err) {
    for (size_t v = 0; v < ts->n_views; v++) {
        const Hcl__View *w = ts->views[v];
        if ((int)v >= mc->nviews || strcmp(w->name, mc->names[v]) != 0 || w->width != mc->in_width[v])
            return hcl_err(err, "%s: views: view %zu is '%.64s' of width %lld; model.safetensors has %d views%s%.64s",
                           pb, v, w->name, (long long)w->width, mc->nviews, (int)v < mc->nviews ? ", that one " : "",
                           (int)v < mc->nviews ? mc->names[v] : "");
    }
    if ((int)ts->n_views != mc->nviews)
        return hcl_err(err, "%s: views: %zu, model.safetensors has %d", pb, ts->n_views, mc->nviews);
    hcl_model lay;
    if (model_layout(&lay, mc, err) != 0) return -1;
    if (ts->model_params != lay.nparams)
        return hcl_err(err, "%s: model_params %lld, model.safetensors' model has %lld", pb,
                       (long long)ts->model_params, (long long)lay.nparams);
    return 0;
}

/* The model configuration stored in dir's model.safetensors. */
static int read_model_config(const char *dir, hcl_model_config *mc, char *err) {
    char path[1300];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_file f;
    if (st_open(&f, path, err) != 0) return -1;
    int rc = model_config_read(mc, &f, err);
    st_close(&f);
    return rc;
}

/* state.pb of dir, checked whole and against the model file, into st and mc. */
static int read_state(const char *dir, hcl_ckpt_state *st, hcl_model_config *mc, char *err) {
    char pb[1200];
    snprintf(pb, sizeof pb, "%s/state.pb", dir);
    Hcl__TrainState *ts = read_state_pb(dir, err);
    if (!ts) return -1;
    memset(st, 0, sizeof *st);
    int rc = check_counts(pb, ts, err) || check_rest(pb, ts, &st->optimizer, err) ||
             read_model_config(dir, mc, err) || check_model(pb, ts, mc, err) ? -1 : 0;
    if (rc == 0) {
        st->step = ts->step;
        st->epoch = ts->epoch;
        st->samples_seen = ts->samples_seen;
        st->data_cursor = ts->data_cursor;
        st->seed = ts->seed;
        memcpy(st->data_rng, ts->data_rng, sizeof st->data_rng);
        memcpy(st->config, ts->config, strlen(ts->config) + 1);
        st->world_size = ts->world_size;
        st->workers = ts->workers;
        st->updates = ts->optimizer_updates;
        st->skipped = ts->skipped_steps;
        st->lr_scale = ts->lr_scale;
        st->wall_time = ts->wall_time;
        st->global_batch = ts->global_batch;
        st->model_params = ts->model_params;
        st->format_version = ts->format_version;
    }
    hcl__train_state__free_unpacked(ts, NULL);
    return rc;
}

int ckpt_read_state(const char *dir, hcl_ckpt_state *st, hcl_model_config *mc, char *err) {
    if (verify_files(dir, NULL, err) != 0) return -1;
    return read_state(dir, st, mc, err);
}

int ckpt_verify(const char *dir, char *err) {
    hcl_ckpt_state *st = hcl_malloc(sizeof *st);
    hcl_model_config mc;
    int rc = ckpt_read_state(dir, st, &mc, err);
    free(st);
    return rc;
}

int ckpt_read_tensors(const char *dir, hcl_model *m, float *opt_state, enum hcl_optim_kind kind,
                      char *err) {
    char path[1300];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_file f;
    if (st_open(&f, path, err) != 0) return -1;
    int rc = model_params_read(m, &f, err);
    st_close(&f);
    if (rc) return rc;
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    if (st_open(&f, path, err) != 0) return -1;
    int nmom = kind == HCL_OPTIM_ADAMW ? 2 : 1;
    for (int k = 0; k < nmom && rc == 0; k++)
        for (int i = 0; i < m->ntensors && rc == 0; i++) {
            const hcl_tensor *t = &m->tensors[i];
            char name[ST_NAME_MAX];
            snprintf(name, sizeof name, "%s.%s", opt_prefix(kind, k), t->name);
            const st_tensor *s = st_find(&f, name);
            if (!s || strcmp(s->dtype, "F32") || s->end - s->begin != (uint64_t)t->numel * 4)
                rc = hcl_err(err, "%s: tensor '%s' is missing or has the wrong size", path, name);
            else
                memcpy(opt_state + (int64_t)k * m->nparams + t->offset, st_data(&f, s), 4 * (size_t)t->numel);
        }
    st_close(&f);
    return rc;
}

/* The name in ckdir/latest (a checkpoint directory beside it, "step-NNNNNNNN"): 0, or -1 with
 * err when the file is missing or names anything else. */
static int read_latest(const char *ckdir, char *name, size_t cap, char *err) {
    char path[1200];
    snprintf(path, sizeof path, "%s/latest", ckdir);
    char *text = hcl_read_file(path, 4096, NULL, err);
    if (!text) return -1;
    text[strcspn(text, "\r\n")] = 0;
    int ok = text[0] && !strchr(text, '/') && strlen(text) < cap;
    if (ok) memcpy(name, text, strlen(text) + 1);
    else hcl_err(err, "%s: does not name a checkpoint directory ('%.200s')", path, text);
    free(text);
    return ok ? 0 : -1;
}

int ckpt_find_latest(const char *run_dir, char *path_out, void (*warn)(const char *msg)) {
    char ckdir[1100], path[1300], err[HCL_ERR_MAX], msg[HCL_ERR_MAX + 64];
    snprintf(ckdir, sizeof ckdir, "%s/checkpoints", run_dir);
    char name[64] = "";
    if (read_latest(ckdir, name, sizeof name, NULL) == 0) {
        snprintf(path, sizeof path, "%s/%s", ckdir, name);
        if (ckpt_verify(path, err) == 0) {
            snprintf(path_out, CKPT_PATH_MAX, "%s", path);
            return 0;
        }
        snprintf(msg, sizeof msg, "skipping damaged checkpoint: %s", err);
        if (warn) warn(msg);
    }
    char **names;
    int n = list_steps(ckdir, &names);
    int found = name[0] || n > 0 ? 2 : 1;   /* none verifies, or there is none */
    for (int i = n - 1; i >= 0; i--) {
        if (!strcmp(names[i], name)) continue;   /* already tried */
        snprintf(path, sizeof path, "%s/%s", ckdir, names[i]);
        if (ckpt_verify(path, err) == 0) {
            snprintf(path_out, CKPT_PATH_MAX, "%s", path);
            found = 0;
            break;
        }
        snprintf(msg, sizeof msg, "skipping damaged checkpoint: %s", err);
        if (warn) warn(msg);
    }
    free_list(names, n);
    return found;
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* A model file named as it is: verified when a state.pb beside it makes it part of a checkpoint. */
static int model_file(const char *path, char *model_out, char *err) {
    char dir[CKPT_PATH_MAX], pb[CKPT_PATH_MAX + 16];
    if (snprintf(model_out, CKPT_PATH_MAX, "%s", path) >= CKPT_PATH_MAX)
        return hcl_err(err, "%s: path too long", path);
    const char *slash = strrchr(path, '/');
    if (slash) snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    else snprintf(dir, sizeof dir, ".");
    snprintf(pb, sizeof pb, "%s/state.pb", dir[0] ? dir : "/");
    return is_file(pb) ? verify_files(dir[0] ? dir : "/", slash ? slash + 1 : path, err) : 0;
}

/* The model of the checkpoint ckdir/latest names (path: what the user gave). */
static int latest_model(const char *ckdir, const char *path, char *model_out, char *err) {
    char latest[CKPT_PATH_MAX + 16], dir[CKPT_PATH_MAX + 300], name[256];
    snprintf(latest, sizeof latest, "%s/latest", ckdir);
    if (!is_file(latest))
        return hcl_err(err, "%s: neither a checkpoint (no model.safetensors) nor a run directory "
                       "with checkpoints (no checkpoints/latest)", path);
    if (read_latest(ckdir, name, sizeof name, err) != 0) return -1;
    snprintf(dir, sizeof dir, "%s/%s", ckdir, name);
    if (snprintf(model_out, CKPT_PATH_MAX, "%s/model.safetensors", dir) >= CKPT_PATH_MAX)
        return hcl_err(err, "%s: path too long", path);
    if (!is_file(model_out))
        return hcl_err(err, "%s: names '%s', but %s does not exist", latest, name, model_out);
    return verify_files(dir, "model.safetensors", err);
}

int ckpt_model_path(const char *path, char *model_out, char *err) {
    char ckdir[CKPT_PATH_MAX];
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    if (is_file(path) && strcmp(base, "latest") == 0) {   /* RUN/checkpoints/latest: the one it names */
        snprintf(ckdir, sizeof ckdir, "%.*s", base > path ? (int)(base - path - 1) : 1, base > path ? path : ".");
        return latest_model(ckdir[0] ? ckdir : "/", path, model_out, err);
    }
    if (is_file(path)) return model_file(path, model_out, err);
    if (!is_dir(path))
        return hcl_err(err, "%s: no such checkpoint (want a checkpoint directory, its "
                       "model.safetensors, or a run directory)", path);
    if (snprintf(model_out, CKPT_PATH_MAX, "%s/model.safetensors", path) >= CKPT_PATH_MAX)
        return hcl_err(err, "%s: path too long", path);
    if (is_file(model_out)) return verify_files(path, "model.safetensors", err);
    snprintf(ckdir, sizeof ckdir, "%s/checkpoints", path);
    return latest_model(ckdir, path, model_out, err);
}

void ckpt_cleanup(const char *run_dir) {
    char ckdir[1100];
    snprintf(ckdir, sizeof ckdir, "%s/checkpoints", run_dir);
    DIR *d = opendir(ckdir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, ".tmp-", 5) && strncmp(e->d_name, ".old-", 5)) continue;
        char p[2048];
        snprintf(p, sizeof p, "%s/%s", ckdir, e->d_name);
        rm_rf(p);
    }
    closedir(d);
}
