/* model_io: see model_io.h. */
#include "model_io.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static void join_ints(char *buf, size_t len, const int *x, int n) {
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < n && k < len; i++) k += (size_t)snprintf(buf + k, len - k, "%s%d", i ? "," : "", x[i]);
}

int model_save(const hcl_model *m, const char *path, char *err) {
    const hcl_model_config *c = &m->cfg;
    char views[HCL_MAX_VIEWS * HCL_NAME_MAX + 16] = "", widths[128], hidden[128], dim[16], ln[4], nc[16], t0[32];
    size_t k = 0;
    for (int v = 0; v < c->nviews; v++) k += (size_t)snprintf(views + k, sizeof views - k, "%s%s", v ? "," : "", c->names[v]);
    join_ints(widths, sizeof widths, c->in_width, c->nviews);
    join_ints(hidden, sizeof hidden, c->hidden, c->nhidden);
    snprintf(dim, sizeof dim, "%d", c->dim);
    snprintf(ln, sizeof ln, "%d", c->layernorm);
    snprintf(nc, sizeof nc, "%d", c->nclasses);
    snprintf(t0, sizeof t0, "%.9g", c->t_init);
    char encoders[HCL_MAX_VIEWS * 160] = "";
    k = 0;
    for (int v = 0; v < c->nviews; v++) {   /* every view's spec, its hidden widths resolved */
        hcl_encoder_spec s = c->spec[v];
        s.nhidden = -1;
        const int *h = model_view_hidden(c, v, &s.nhidden);
        memcpy(s.hidden, h, sizeof(int) * (size_t)s.nhidden);
        char one[160];
        model_spec_format(&s, 1, one, sizeof one);
        k += (size_t)snprintf(encoders + k, k < sizeof encoders ? sizeof encoders - k : 0, "%s%s", v ? ";" : "", one);
    }
    const char *meta[] = {"format", "hcl-model", "version", "1", "views", views, "in_widths", widths,
                          "hidden", hidden, "dim", dim, "act", c->act == HCL_ACT_GELU ? "gelu" : "relu",
                          "layernorm", ln, "nclasses", nc, "t_init", t0, "encoders", encoders, NULL};
    st_entry e[HCL_MAX_TENSORS];
    for (int i = 0; i < m->ntensors; i++) {
        e[i].name = m->tensors[i].name;
        e[i].ndim = m->tensors[i].ndim;
        e[i].shape = m->tensors[i].shape;
        e[i].data = m->params + m->tensors[i].offset;
    }
    return st_write(path, e, m->ntensors, meta, err);
}

static int meta_ints(const st_file *f, const char *key, int *out, int max, int *n, char *err) {
    char buf[512];
    *n = 0;
    if (st_metadata_get(f, key, buf, sizeof buf) != 0)
        return hcl_err(err, "%s: metadata lacks '%s' (not an hcl model file?)", f->path, key);
    if (!buf[0]) return 0;
    for (char *p = buf; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > HCL_MAX_WIDTH || *n == max || (*end && *end != ','))
            return hcl_err(err, "%s: metadata '%s' = '%s' is not a list of widths", f->path, key, buf);
        out[(*n)++] = (int)v;
        p = *end ? end + 1 : end;
    }
    return 0;
}

/* One integer (dim, layernorm, nclasses): an empty value is an error, not a zero. */
static int meta_int(const st_file *f, const char *key, int *out, char *err) {
    int n, one[1];
    if (meta_ints(f, key, one, 1, &n, err)) return -1;
    if (n != 1) return hcl_err(err, "%s: metadata '%s' is empty (want one integer)", f->path, key);
    *out = one[0];
    return 0;
}

/* `encoders`: one spec per view, `;` between them (a file without it: every view an mlp of
 * `hidden`). */
static int meta_encoders(hcl_model_config *c, const st_file *f, char *err) {
    char buf[HCL_MAX_VIEWS * 160 + 16], msg[HCL_ERR_MAX];
    if (st_metadata_get(f, "encoders", buf, sizeof buf) != 0) return 0;
    int v = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ";", &save); tok; tok = strtok_r(NULL, ";", &save), v++) {
        if (v == c->nviews) return hcl_err(err, "%s: metadata 'encoders' has more than %d specs", f->path, c->nviews);
        if (model_spec_parse(&c->spec[v], tok, msg) != 0) return hcl_err(err, "%s: metadata: %s", f->path, msg);
    }
    if (v != c->nviews) return hcl_err(err, "%s: metadata 'encoders' has %d specs for %d views", f->path, v, c->nviews);
    return 0;
}

int model_config_read(hcl_model_config *c, const st_file *f, char *err) {
    model_config_default(c);
    char buf[HCL_MAX_VIEWS * HCL_NAME_MAX + 16];
    if (st_metadata_get(f, "format", buf, sizeof buf) != 0 || strcmp(buf, "hcl-model") != 0)
        return hcl_err(err, "%s: not an hcl model file (metadata format is not hcl-model)", f->path);
    if (st_metadata_get(f, "version", buf, sizeof buf) != 0 || strcmp(buf, "1") != 0)
        return hcl_err(err, "%s: unsupported hcl model version '%s'", f->path, buf);
    if (st_metadata_get(f, "views", buf, sizeof buf) != 0)
        return hcl_err(err, "%s: metadata lacks 'views'", f->path);
    c->nviews = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (c->nviews == HCL_MAX_VIEWS || strlen(tok) >= HCL_NAME_MAX)
            return hcl_err(err, "%s: metadata 'views' has too many or too long names", f->path);
        snprintf(c->names[c->nviews++], HCL_NAME_MAX, "%s", tok);
    }
    int n;
    if (meta_ints(f, "in_widths", c->in_width, HCL_MAX_VIEWS, &n, err)) return -1;
    if (n != c->nviews) return hcl_err(err, "%s: %d views but %d input widths", f->path, c->nviews, n);
    if (meta_ints(f, "hidden", c->hidden, HCL_MAX_HIDDEN, &c->nhidden, err)) return -1;
    if (meta_int(f, "dim", &c->dim, err) || meta_int(f, "layernorm", &c->layernorm, err) ||
        meta_int(f, "nclasses", &c->nclasses, err))
        return -1;
    if (st_metadata_get(f, "act", buf, sizeof buf) != 0) return hcl_err(err, "%s: metadata lacks 'act'", f->path);
    if (strcmp(buf, "relu") == 0) c->act = HCL_ACT_RELU;
    else if (strcmp(buf, "gelu") == 0) c->act = HCL_ACT_GELU;
    else return hcl_err(err, "%s: unknown activation '%s'", f->path, buf);
    if (st_metadata_get(f, "t_init", buf, sizeof buf) == 0) c->t_init = strtof(buf, NULL);
    return meta_encoders(c, f, err);
}

int model_params_read(hcl_model *m, const st_file *f, char *err) {
    for (int i = 0; i < m->ntensors; i++) {
        const hcl_tensor *t = &m->tensors[i];
        const st_tensor *s = st_find(f, t->name);
        if (!s) return hcl_err(err, "%s: tensor '%s' is missing", f->path, t->name);
        /* the shape dimension by dimension: a product of a file's dimensions can overflow */
        int same = strcmp(s->dtype, "F32") == 0 && s->ndim == t->ndim;
        for (int d = 0; same && d < s->ndim; d++) same = s->shape[d] == t->shape[d];
        if (!same)
            return hcl_err(err, "%s: tensor '%s' is %s %lldx%lld, the model needs F32 %lldx%lld",
                           f->path, t->name, s->dtype, (long long)s->shape[0],
                           (long long)(s->ndim > 1 ? s->shape[1] : 1), (long long)t->shape[0],
                           (long long)(t->ndim > 1 ? t->shape[1] : 1));
        memcpy(m->params + t->offset, st_data(f, s), sizeof(float) * (size_t)t->numel);
    }
    if (f->ntensors != m->ntensors)
        return hcl_err(err, "%s: %d tensors, the model has %d", f->path, f->ntensors, m->ntensors);
    return 0;
}

/* Before anything is allocated: the model of f's metadata fits in memory, and f's tensors hold
 * as many floats as it has parameters (a file cannot ask for more memory than its size). */
static int model_config_fits(const hcl_model_config *c, const st_file *f, char *err) {
    char msg[HCL_ERR_MAX];
    if (model_config_check(c, msg) != 0) return hcl_err(err, "%s: metadata: %s", f->path, msg);
    if (model_check_memory(c, 2, "its weights and gradients", msg) != 0)
        return hcl_err(err, "%s: metadata: %s", f->path, msg);
    uint64_t held = 0;
    for (int i = 0; i < f->ntensors; i++) {
        const st_tensor *t = &f->tensors[i];
        uint64_t numel = 1;   /* st_open checked that its bytes fit in the file */
        for (int d = 0; d < t->ndim; d++) numel *= (uint64_t)t->shape[d];
        if (__builtin_add_overflow(held, numel, &held)) held = UINT64_MAX;
    }
    int64_t n = model_config_nparams(c);
    if (held != (uint64_t)n)
        return hcl_err(err, "%s: its metadata describes a model of %lld parameters, its tensors hold %llu values",
                       f->path, (long long)n, (unsigned long long)held);
    return 0;
}

int model_load(hcl_model *m, const char *path, char *err) {
    st_file f;
    if (st_open(&f, path, err) != 0) return -1;
    hcl_model_config c;
    char msg[HCL_ERR_MAX];
    int rc = model_config_read(&c, &f, err);
    if (rc == 0) rc = model_config_fits(&c, &f, err);
    if (rc == 0 && (rc = model_init(m, &c, 0, msg)) != 0) hcl_err(err, "%s: %s", path, msg);
    if (rc == 0 && (rc = model_params_read(m, &f, err)) != 0) model_free(m);
    st_close(&f);
    return rc;
}
