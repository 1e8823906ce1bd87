/* torch_peer_step: one hcl training step from given weights and batch, for the comparisons with
 * PyTorch (tests/test_torch_peer.py, tests/test_torch_kinds.py). Usage: torch_peer_step DIR
 * DIR holds x0.npy .. x{V-1}.npy (N, d_v) and one .npy per model tensor named by hcl's tensor
 * names (encoder.v0.0.weight, ..., logit_t; a conv weight (Cout, Cin, 3, 3) as (Cout, Cin 9) or
 * flat: its floats in that order). Optional, each line one item:
 *   DIR/encoders.txt  view v's encoder on line v+1, as model_spec_parse reads it with its view's
 *                     part (`conv:4,8/image=12x10x1`, `bag:6,10/vocab=50/pad=0`, `mlp:16`);
 *                     without it (or past its last line) the default mlp of the hidden widths
 *   DIR/config.txt    `dim D`, `hidden W,W,...` (or `hidden none`), `loss full|clip|core`,
 *                     `weight_decay WD` (a large one shows which tensors decay)
 * Writes DIR/out/loss.npy, DIR/out/grad.<name>.npy (the summed gradient, worker_summed_grads: a
 * table's rows the batch does not use are 0) and DIR/out/param.<name>.npy after one update
 * (AdamW lr 1e-3, wd 1e-4 unless config.txt says; a table's rows by SparseAdam's rule). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "npy.h"
#include "step.h"

/* DIR/name's text, or NULL when there is no such file. */
static char *read_optional(const char *dir, const char *name) {
    char path[2048], err[HCL_ERR_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (access(path, F_OK) != 0) return NULL;
    char *text = hcl_read_file(path, 1 << 16, NULL, err);
    HCL_CHECK(text, "%s", err);
    return text;
}

/* config.txt: `dim D`, `hidden W,...|none`, `loss KIND`, `weight_decay WD`. */
static void read_config(const char *dir, hcl_model_config *mc, enum hcl_loss_kind *kind, hcl_optim_config *oc) {
    char *text = read_optional(dir, "config.txt"), err[HCL_ERR_MAX];
    for (char *save = NULL, *line = text ? strtok_r(text, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save)) {
        char key[32], value[256], spec[300];
        HCL_CHECK(sscanf(line, "%31s %255s", key, value) == 2, "config.txt: bad line '%s'", line);
        if (strcmp(key, "dim") == 0) {
            mc->dim = atoi(value);
        } else if (strcmp(key, "hidden") == 0) {   /* the widths as an mlp spec reads them */
            hcl_encoder_spec s;
            snprintf(spec, sizeof spec, "mlp:%s", value);
            HCL_CHECK(model_spec_parse(&s, spec, err) == 0, "config.txt: %s", err);
            mc->nhidden = s.nhidden;
            memcpy(mc->hidden, s.hidden, sizeof mc->hidden);
        } else if (strcmp(key, "loss") == 0) {
            HCL_CHECK(loss_kind_parse(value, kind) == 0 &&
                      (*kind == HCL_LOSS_FULL || *kind == HCL_LOSS_CLIP || *kind == HCL_LOSS_CORE),
                      "config.txt: loss '%s', want full, clip or core", value);
        } else if (strcmp(key, "weight_decay") == 0) {
            oc->weight_decay = strtof(value, NULL);
        } else {
            HCL_CHECK(0, "config.txt: unknown key '%s' (dim, hidden, loss, weight_decay)", key);
        }
    }
    free(text);
}

/* encoders.txt: view v's spec on line v+1. */
static void read_encoders(const char *dir, hcl_model_config *mc) {
    char *text = read_optional(dir, "encoders.txt"), err[HCL_ERR_MAX];
    int v = 0;
    for (char *save = NULL, *line = text ? strtok_r(text, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save), v++) {
        HCL_CHECK(v < mc->nviews, "encoders.txt: more lines than the %d views", mc->nviews);
        HCL_CHECK(model_spec_parse(&mc->spec[v], line, err) == 0, "encoders.txt: %s", err);
    }
    free(text);
}

/* Every tensor of m from DIR/<name>.npy. */
static void load_weights(const char *dir, hcl_model *m) {
    char path[2048], err[HCL_ERR_MAX];
    for (int i = 0; i < m->ntensors; i++) {
        const hcl_tensor *t = &m->tensors[i];
        npy_file f;
        snprintf(path, sizeof path, "%s/%s.npy", dir, t->name);
        HCL_CHECK(npy_open(&f, path, err) == 0, "%s", err);
        HCL_CHECK(f.dtype == NPY_F32 && f.count == t->numel, "%s: %lld floats, want %lld", path,
                  (long long)f.count, (long long)t->numel);
        memcpy(m->params + t->offset, f.data, sizeof(float) * t->numel);
        npy_close(&f);
    }
}

/* DIR/out/<what>.<name>.npy for every tensor of m, its slice of buf (nparams floats); a conv
 * weight (Cout, Cin, 3, 3) as (Cout, Cin 9): npy.h reads and writes up to 2 dimensions. */
static void write_tensors(const char *dir, const hcl_model *m, const char *what, const float *buf) {
    char path[2048], err[HCL_ERR_MAX];
    for (int i = 0; i < m->ntensors; i++) {
        const hcl_tensor *t = &m->tensors[i];
        const int64_t flat[2] = {t->shape[0], t->numel / t->shape[0]};
        snprintf(path, sizeof path, "%s/out/%s.%s.npy", dir, what, t->name);
        HCL_CHECK(npy_write(path, NPY_F32, t->ndim > 2 ? 2 : t->ndim, t->ndim > 2 ? flat : t->shape,
                            buf + t->offset, err) == 0, "%s", err);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: torch_peer_step DIR\n");
        return 2;
    }
    MPI_Init(&argc, &argv);
    const char *dir = argv[1];
    char path[2048], err[HCL_ERR_MAX];
    npy_file x[HCL_MAX_VIEWS];
    int V = 0;
    for (; V < HCL_MAX_VIEWS; V++) {
        snprintf(path, sizeof path, "%s/x%d.npy", dir, V);
        if (npy_open(&x[V], path, err) != 0) break;
    }
    HCL_CHECK(V >= 2, "need x0.npy and x1.npy in %s: %s", dir, err);
    int64_t N = x[0].shape[0];
    hcl_model_config mc;
    model_config_default(&mc);
    mc.nviews = V;
    for (int v = 0; v < V; v++) {
        snprintf(mc.names[v], sizeof mc.names[v], "v%d", v);
        mc.in_width[v] = (int)x[v].shape[1];
    }
    enum hcl_loss_kind kind = HCL_LOSS_FULL;
    hcl_optim_config oc;
    optim_config_default(&oc);
    oc.lr = 1e-3f;
    oc.weight_decay = 1e-4f;
    read_config(dir, &mc, &kind, &oc);
    read_encoders(dir, &mc);
    hcl_loss_config lc;
    loss_config_default(&lc, V, mc.dim);
    lc.kind = lc.base = kind;
    hcl_worker w;
    HCL_CHECK(worker_init(&w, MPI_COMM_SELF, &mc, &lc, &oc, 1, 0, N, 0, err) == 0, "%s", err);
    load_weights(dir, &w.model);
    int64_t widths[HCL_MAX_VIEWS];
    for (int v = 0; v < V; v++) widths[v] = mc.in_width[v];
    hcl_batch_layout l;
    uint8_t *buf = hcl_malloc(batch_layout(&l, N, N, 1, V, widths));
    const int64_t split[2] = {0, N};
    batch_header_init(buf, HCL_BATCH_TRAIN, 0, 0, N, split, 0, 1, V, 0, oc.lr);
    memset(buf + l.mask, 1, (size_t)N * V);
    for (int64_t i = 0; i < N; i++) ((int32_t *)(buf + l.labels))[i] = -1;
    for (int v = 0; v < V; v++) memcpy(buf + l.view[v], x[v].data, sizeof(float) * N * widths[v]);
    hcl_step_result res;
    worker_forward_backward(&w, buf, &res);
    snprintf(path, sizeof path, "%s/out", dir);
    HCL_CHECK(hcl_mkdir_p(path, err) == 0, "%s", err);
    double loss = res.loss;
    int64_t one = 1;
    snprintf(path, sizeof path, "%s/out/loss.npy", dir);
    HCL_CHECK(npy_write(path, NPY_F64, 1, &one, &loss, err) == 0, "%s", err);
    float *grads = hcl_floats((size_t)w.model.nparams);
    worker_summed_grads(&w, grads);
    write_tensors(dir, &w.model, "grad", grads);
    worker_update(&w, &res);
    write_tensors(dir, &w.model, "param", w.model.params);
    printf("hcl loss %.8f\n", loss);
    free(grads);
    free(buf);
    worker_free(&w);
    for (int v = 0; v < V; v++) npy_close(&x[v]);
    MPI_Finalize();
    return 0;
}
