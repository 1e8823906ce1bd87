/* eval_embed: see eval_embed.h. */
#include "eval_embed.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eval_geometry.h"
#include "npy.h"
#include "util.h"

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static void eval_embeddings_clear(eval_embeddings *e) {
    memset(e, 0, sizeof *e);
}

void eval_embeddings_rows(eval_embeddings *out, const eval_embeddings *e, int64_t r0, int64_t r1) {
    HCL_CHECK(0 <= r0 && r0 <= r1 && r1 <= e->n, "eval_embeddings_rows: [%lld, %lld) of %lld",
              (long long)r0, (long long)r1, (long long)e->n);
    *out = *e;
    out->n = r1 - r0;
    for (int v = 0; v < e->nviews; v++) {
        out->z[v] = e->z[v] + r0 * e->width[v];
        if (e->features[v]) out->features[v] = e->features[v] + r0 * e->feat_width[v];
    }
    if (e->fused) out->fused = e->fused + r0 * e->width[0];
    if (e->mask) out->mask = e->mask + r0 * e->nviews;
    if (e->labels) out->labels = e->labels + r0;
}

void eval_embeddings_free(eval_embeddings *e) {
    for (int v = 0; v < HCL_MAX_VIEWS; v++) {
        free(e->z[v]);
        free(e->features[v]);
    }
    free(e->fused);
    free(e->mask);
    free(e->labels);
    eval_embeddings_clear(e);
}

int eval_embed_dataset_progress(eval_embeddings *e, const hcl_model *m, const hcl_dataset *ds,
                                int batch, int features, hcl_progress *prog, char *err) {
    const hcl_model_config *c = &m->cfg;
    eval_embeddings_clear(e);
    HCL_CHECK(batch > 0, "eval_embed_dataset: batch %d", batch);
    int dv_of[HCL_MAX_VIEWS];
    hcl_view_type types[HCL_MAX_VIEWS];   /* what each view's encoder reads */
    for (int v = 0; v < c->nviews; v++) {
        const hcl_encoder_spec *s = &c->spec[v];
        types[v] = (hcl_view_type){.kind = s->kind == HCL_ENC_BAG ? HCL_VIEW_TOKENS : s->kind == HCL_ENC_CONV ? HCL_VIEW_IMAGE
                                                                                                        : HCL_VIEW_DENSE,
                                   .vocab = s->vocab, .pad = s->pad, .h = s->img_h, .w = s->img_w, .c = s->img_c};
    }
    if (dataset_check_views(ds, c->nviews, c->names, c->in_width, types, dv_of, "model", err) != 0) return -1;
    const int64_t n = ds->n;
    const int D = c->dim;
    e->n = n;
    e->nviews = c->nviews;
    int in_max = 1;
    for (int v = 0; v < c->nviews; v++) {
        memcpy(e->names[v], c->names[v], HCL_NAME_MAX);
        e->width[v] = D;
        e->z[v] = hcl_floats((size_t)(n > 0 ? n : 1) * D);
        e->feat_width[v] = model_feature_width(c, v);
        if (features) e->features[v] = hcl_floats((size_t)(n > 0 ? n : 1) * e->feat_width[v]);
        if (c->in_width[v] > in_max) in_max = c->in_width[v];
    }
    if (ds->has_mask) {
        e->mask = hcl_malloc((size_t)(n > 0 ? n : 1) * c->nviews);
        for (int64_t i = 0; i < n; i++)
            for (int v = 0; v < c->nviews; v++)
                e->mask[i * c->nviews + v] = (uint8_t)dataset_present(ds, i, dv_of[v]);
    }
    if (ds->has_labels) {
        e->labels = hcl_malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
        memcpy(e->labels, ds->labels, sizeof(int32_t) * (size_t)n);
        e->nclasses = ds->nclasses;
    }

    // each view: present rows in batches of `batch`, encoded, scattered back to their rows
    hcl_model_acts acts;
    model_acts_init(&acts, m, batch);
    int64_t *idx = hcl_malloc(sizeof(int64_t) * (size_t)batch);
    float *x = hcl_floats((size_t)batch * in_max);
    for (int v = 0; v < c->nviews; v++) {
        const int last = m->enc[v].nlayers - 1, fw = e->feat_width[v];
        int64_t r = 0;
        while (r < n) {
            int cnt = 0;
            for (; r < n && cnt < batch; r++)
                if (!e->mask || e->mask[r * c->nviews + v]) idx[cnt++] = r;
            progress_update(prog, v * n + r, n * c->nviews);
            if (cnt == 0) break;
            dataset_gather_view(ds, dv_of[v], idx, cnt, x);
            const float *z = model_encode(m, &acts, v, x, cnt);
            const float *h = last > 0 ? acts.v[v].act[last - 1] : m->enc[v].kind != HCL_ENC_MLP ? acts.v[v].front : x;
            for (int i = 0; i < cnt; i++) {
                memcpy(e->z[v] + idx[i] * D, z + (int64_t)i * D, sizeof(float) * (size_t)D);
                if (features)
                    memcpy(e->features[v] + idx[i] * fw, h + (int64_t)i * fw,
                           sizeof(float) * (size_t)fw);
            }
        }
    }
    free(idx);
    free(x);
    model_acts_free(&acts, m);
    e->fused = hcl_floats((size_t)(n > 0 ? n : 1) * D);
    eval_fuse(e->fused, (const float *const *)e->z, e->nviews, e->mask, n, D);
    return 0;
}

/* ---- embeddings as files ----------------------------------------------------------------- */

static int eval_path(char *out, size_t cap, const char *dir, const char *name, char *err) {
    if (snprintf(out, cap, "%s/%s", dir, name) >= (int)cap)
        return hcl_err(err, "%s/%s: path too long", dir, name);
    return 0;
}

static int eval_unlink(const char *dir, const char *name, char *err) {
    char p[1200];
    if (eval_path(p, sizeof p, dir, name, err)) return -1;
    if (unlink(p) != 0 && errno != ENOENT) return hcl_err(err, "%s: unlink: %s", p, strerror(errno));
    return 0;
}

static int eval_write(const char *dir, const char *name, enum npy_dtype t, int ndim, int64_t d0,
                      int64_t d1, const void *data, char *err) {
    char p[1200];
    if (eval_path(p, sizeof p, dir, name, err)) return -1;
    int64_t shape[2] = {d0, d1};
    return npy_write(p, t, ndim, shape, data, err);
}

int eval_embeddings_save(const eval_embeddings *e, const char *dir, char *err) {
    char name[HCL_NAME_MAX + 32];
    if (hcl_mkdir_p(dir, err) != 0) return -1;
    // the manifest goes first and comes back last: a half-written directory is refused
    if (eval_unlink(dir, "manifest.txt", err)) return -1;
    for (int v = 0; v < e->nviews; v++) {
        snprintf(name, sizeof name, "%s.npy", e->names[v]);
        if (eval_write(dir, name, NPY_F32, 2, e->n, e->width[v], e->z[v], err)) return -1;
        snprintf(name, sizeof name, "%s.features.npy", e->names[v]);
        if (e->features[v]) {
            if (eval_write(dir, name, NPY_F32, 2, e->n, e->feat_width[v], e->features[v], err))
                return -1;
        } else if (eval_unlink(dir, name, err)) {
            return -1;
        }
    }
    if (e->fused) {
        if (eval_write(dir, "fused.npy", NPY_F32, 2, e->n, e->width[0], e->fused, err)) return -1;
    } else if (eval_unlink(dir, "fused.npy", err)) {
        return -1;
    }
    if (e->labels) {
        int64_t *y = hcl_malloc(sizeof(int64_t) * (size_t)(e->n > 0 ? e->n : 1));
        for (int64_t i = 0; i < e->n; i++) y[i] = e->labels[i];
        int rc = eval_write(dir, "labels.npy", NPY_I64, 1, e->n, 1, y, err);
        free(y);
        if (rc) return -1;
    } else if (eval_unlink(dir, "labels.npy", err)) {
        return -1;
    }
    if (e->mask) {
        if (eval_write(dir, "mask.npy", NPY_U8, 2, e->n, e->nviews, e->mask, err)) return -1;
    } else if (eval_unlink(dir, "mask.npy", err)) {
        return -1;
    }
    char text[HCL_MAX_VIEWS * (HCL_NAME_MAX + 8) + 256], path[1200];
    size_t k = (size_t)snprintf(text, sizeof text, "# embeddings (hcl-embed): one `view NAME` line "
                                "per view, data in NAME.npy; fused.npy is their normalised mean\n");
    for (int v = 0; v < e->nviews; v++)
        k += (size_t)snprintf(text + k, sizeof text - k, "view %s\n", e->names[v]);
    if (eval_path(path, sizeof path, dir, "manifest.txt", err)) return -1;
    return hcl_write_file_durable(path, text, k, err);
}

/* `view NAME` lines of DIR/manifest.txt. */
static int eval_read_manifest(eval_embeddings *e, const char *dir, char *err) {
    char path[1200], rerr[HCL_ERR_MAX];
    if (eval_path(path, sizeof path, dir, "manifest.txt", err)) return -1;
    char *text = hcl_read_file(path, 1 << 20, NULL, rerr);
    if (!text) return hcl_err(err, "%s (want the output directory of hcl-embed)", rerr);
    int lineno = 0, rc = 0;
    for (char *line = text, *next; line && rc == 0; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        lineno++;
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char key[32], name[256], extra[8];
        int nt = sscanf(line, "%31s %255s %7s", key, name, extra);
        if (nt <= 0) continue;
        if (strcmp(key, "view") != 0 || nt != 2 || strlen(name) >= HCL_NAME_MAX ||
            strchr(name, '/') || e->nviews == HCL_MAX_VIEWS) {
            line[strcspn(line, "\r")] = 0;
            rc = hcl_err(err, "%s:%d: cannot use '%.200s' (want `view NAME`, at most %d views)",
                         path, lineno, line, HCL_MAX_VIEWS);
        } else {
            memcpy(e->names[e->nviews++], name, strlen(name) + 1);
        }
    }
    free(text);
    if (rc == 0 && e->nviews == 0) rc = hcl_err(err, "%s: no `view NAME` lines", path);
    return rc;
}

/* A (n, width) float array from DIR/NAME: float32 or float64, finite; n < 0: any row count. */
static float *eval_read_matrix(const char *dir, const char *name, int64_t *n, int *width,
                               char *err) {
    char path[1200];
    if (eval_path(path, sizeof path, dir, name, err)) return NULL;
    npy_file f;
    if (npy_open(&f, path, err) != 0) return NULL;
    float *out = NULL;
    if (f.ndim != 2 || (f.dtype != NPY_F32 && f.dtype != NPY_F64)) {
        hcl_err(err, "%s: %s with %d dimensions (want a 2-d float32 array, rows x width)", path,
                npy_dtype_name(f.dtype), f.ndim);
    } else if (*n >= 0 && f.shape[0] != *n) {
        hcl_err(err, "%s: %lld rows (the first view has %lld)", path, (long long)f.shape[0],
                (long long)*n);
    } else if (f.shape[1] < 1 || f.shape[1] > (1 << 24)) {
        hcl_err(err, "%s: width %lld", path, (long long)f.shape[1]);
    } else {
        *n = f.shape[0];
        *width = (int)f.shape[1];
        out = hcl_floats((size_t)(f.count > 0 ? f.count : 1));
        for (int64_t i = 0; i < f.count; i++) {
            double x = f.dtype == NPY_F32 ? ((const float *)f.data)[i] : ((const double *)f.data)[i];
            if (!isfinite(x) || fabs(x) > FLT_MAX) {
                hcl_err(err, "%s: %s at row %lld, column %lld", path, isnan(x) ? "NaN" : "Inf",
                        (long long)(i / f.shape[1]), (long long)(i % f.shape[1]));
                free(out);
                out = NULL;
                break;
            }
            out[i] = (float)x;
        }
    }
    npy_close(&f);
    return out;
}

int eval_embeddings_load(eval_embeddings *e, const char *dir, char *err) {
    eval_embeddings_clear(e);
    if (eval_read_manifest(e, dir, err)) return -1;
    char name[HCL_NAME_MAX + 32], path[1200];
    int64_t n = -1;
    int same = 1;
    for (int v = 0; v < e->nviews; v++) {
        snprintf(name, sizeof name, "%s.npy", e->names[v]);
        if (!(e->z[v] = eval_read_matrix(dir, name, &n, &e->width[v], err))) goto fail;
        same &= e->width[v] == e->width[0];
    }
    e->n = n;
    if (eval_path(path, sizeof path, dir, "mask.npy", err)) goto fail;
    if (is_file(path)) {
        npy_file f;
        if (npy_open(&f, path, err) != 0) goto fail;
        if ((f.dtype != NPY_U8 && f.dtype != NPY_BOOL) || f.ndim != 2 || f.shape[0] != n ||
            f.shape[1] != e->nviews) {
            hcl_err(err, "%s: %s %lldx%lld (want uint8 or bool %lldx%d)", path,
                    npy_dtype_name(f.dtype), (long long)f.shape[0], (long long)f.shape[1],
                    (long long)n, e->nviews);
            npy_close(&f);
            goto fail;
        }
        e->mask = hcl_malloc((size_t)(n > 0 ? n : 1) * e->nviews);
        for (int64_t i = 0; i < f.count; i++) e->mask[i] = ((const uint8_t *)f.data)[i] != 0;
        npy_close(&f);
    }
    if (eval_path(path, sizeof path, dir, "labels.npy", err)) goto fail;
    if (is_file(path)) {
        npy_file f;
        if (npy_open(&f, path, err) != 0) goto fail;
        int isint = f.dtype != NPY_F32 && f.dtype != NPY_F64 && f.dtype != NPY_F16 && f.dtype != NPY_BOOL;
        if (!isint || f.count != n || (f.ndim == 2 && f.shape[1] != 1)) {
            hcl_err(err, "%s: %s with %lld values (want %lld integers)", path,
                    npy_dtype_name(f.dtype), (long long)f.count, (long long)n);
            npy_close(&f);
            goto fail;
        }
        e->labels = hcl_malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
        for (int64_t i = 0; i < n; i++) {
            int64_t y = npy_get_i64(&f, i);
            if (y < 0 || y >= (1 << 20)) {
                hcl_err(err, "%s: label %lld at row %lld (want 0..%d)", path, (long long)y,
                        (long long)i, (1 << 20) - 1);
                npy_close(&f);
                goto fail;
            }
            e->labels[i] = (int32_t)y;
            if (y + 1 > e->nclasses) e->nclasses = (int)(y + 1);
        }
        npy_close(&f);
    }
    if (eval_path(path, sizeof path, dir, "fused.npy", err)) goto fail;
    if (is_file(path)) {
        int w;
        if (!(e->fused = eval_read_matrix(dir, "fused.npy", &n, &w, err))) goto fail;
        if (!same || w != e->width[0]) {
            hcl_err(err, "%s: width %d (the views have width %d)", path, w, e->width[0]);
            goto fail;
        }
    } else if (same) {
        e->fused = hcl_floats((size_t)(n > 0 ? n : 1) * e->width[0]);
        eval_fuse(e->fused, (const float *const *)e->z, e->nviews, e->mask, n, e->width[0]);
    }
    return 0;
fail:
    eval_embeddings_free(e);
    return -1;
}
