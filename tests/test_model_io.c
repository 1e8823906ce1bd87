/* test_model_io: a model saved as safetensors loads back with the same configuration and the
 * same bytes; a file of another model shape is refused naming the tensor; a file whose metadata
 * asks for a model larger than memory, or larger than its tensors, is refused naming the file
 * before anything is allocated (it was an abort: "out of memory allocating N floats"), and so is
 * a view name that is not letters, digits, _ and -. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "model_io.h"

static void config(hcl_model_config *c, int hidden0, int layernorm) {
    model_config_default(c);
    c->nviews = 2;
    strcpy(c->names[0], "img");
    strcpy(c->names[1], "txt");
    c->in_width[0] = 12;
    c->in_width[1] = 7;
    c->nhidden = 2;
    c->hidden[0] = hidden0;
    c->hidden[1] = 5;
    c->dim = 4;
    c->act = HCL_ACT_GELU;
    c->layernorm = layernorm;
    c->nclasses = 3;
}

/* The small model m saved with metadata that says hidden h0,h1: the file lies about its size. */
static void save_lying(hcl_model *m, int h0, int h1, const char *path) {
    char err[HCL_ERR_MAX];
    hcl_model_config keep = m->cfg;
    m->cfg.hidden[0] = h0;
    m->cfg.hidden[1] = h1;
    CHECK(model_save(m, path, err) == 0, "save: %s", err);
    m->cfg = keep;
}

static void test_metadata_too_large(hcl_model *m, const char *path) {
    char err[HCL_ERR_MAX] = "";
    hcl_model l;
    /* 2^20 x 2^20 hidden layers (the widest a file may name): 2^40 parameters, 8 TB of weights
     * and gradients, more than any machine this runs on */
    save_lying(m, 1 << 20, 1 << 20, path);
    CHECK(model_load(&l, path, err) == -1 && strstr(err, path) && strstr(err, "parameters") &&
          strstr(err, "memory") && !strchr(err, '\n'), "metadata past memory: %s", err);
    /* a size that fits in memory but not in the file's tensors: refused before allocation */
    save_lying(m, 300, 200, path);
    CHECK(model_load(&l, path, err) == -1 && strstr(err, path) && strstr(err, "metadata") &&
          strstr(err, "tensors"), "metadata larger than the tensors: %s", err);
    /* a view name that would leave hcl-embed's output directory: refused naming the file */
    char keep[HCL_NAME_MAX];
    memcpy(keep, m->cfg.names[0], sizeof keep);
    snprintf(m->cfg.names[0], HCL_NAME_MAX, "../x");
    CHECK(model_save(m, path, err) == 0, "save: %s", err);
    memcpy(m->cfg.names[0], keep, sizeof keep);
    CHECK(model_load(&l, path, err) == -1 && strstr(err, path) && strstr(err, "bad view name '../x'"),
          "view name ../x: %s", err);
}

/* The model's tensors under metadata whose `key` is empty: refused naming the key (dim, layernorm
 * and nclasses were read from an uninitialised int). */
static void test_empty_metadata(hcl_model *m, const char *path) {
    static const char *keys[] = {"dim", "layernorm", "nclasses"};
    for (int k = 0; k < 3; k++) {
        const char *meta[] = {"format", "hcl-model", "version", "1", "views", "img,txt", "in_widths", "12,7",
                              "hidden", "9,5", "dim", "4", "act", "gelu", "layernorm", "1", "nclasses", "3",
                              NULL};
        for (int i = 0; meta[i]; i += 2)
            if (!strcmp(meta[i], keys[k])) meta[i + 1] = "";
        st_entry e[HCL_MAX_TENSORS];
        for (int i = 0; i < m->ntensors; i++)
            e[i] = (st_entry){m->tensors[i].name, m->tensors[i].ndim, m->tensors[i].shape,
                              m->params + m->tensors[i].offset};
        char err[HCL_ERR_MAX] = "";
        CHECK(st_write(path, e, m->ntensors, meta, err) == 0, "write: %s", err);
        hcl_model l;
        char want[64];
        snprintf(want, sizeof want, "'%s' is empty", keys[k]);
        CHECK(model_load(&l, path, err) == -1 && strstr(err, path) && strstr(err, want),
              "empty %s: %s", keys[k], err);
    }
}

int main(void) {
    char dir[] = "/tmp/hcl_test_model_io_XXXXXX", path[256], err[HCL_ERR_MAX];
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    hcl_model_config c;
    config(&c, 9, 1);
    hcl_model m, l;
    CHECK(model_init(&m, &c, 17, err) == 0, "init: %s", err);
    m.params[m.logit_t] = 3.25f;
    CHECK(model_save(&m, path, err) == 0, "save: %s", err);
    CHECK(model_load(&l, path, err) == 0, "load: %s", err);
    CHECK(l.nparams == m.nparams && memcmp(l.params, m.params, sizeof(float) * m.nparams) == 0, "same bytes");
    CHECK(l.cfg.nviews == 2 && !strcmp(l.cfg.names[1], "txt") && l.cfg.in_width[1] == 7 &&
          l.cfg.nhidden == 2 && l.cfg.hidden[0] == 9 && l.cfg.dim == 4 && l.cfg.act == HCL_ACT_GELU &&
          l.cfg.layernorm == 1 && l.cfg.nclasses == 3, "config round trip");
    model_free(&l);

    /* into a model of another shape: refused, naming the tensor */
    hcl_model o;
    config(&c, 10, 1);
    CHECK(model_init(&o, &c, 1, err) == 0, "init: %s", err);
    st_file f;
    CHECK(st_open(&f, path, err) == 0, "open: %s", err);
    CHECK(model_params_read(&o, &f, err) == -1 && strstr(err, "encoder.img.0.weight"), "shape mismatch: %s", err);
    st_close(&f);
    /* a shape whose element count wraps int64 to the model's (4 x (5 + 2^62) = 20 + 2^64) is
     * refused by its dimensions (it was multiplied, with signed overflow, and loaded) */
    CHECK(st_open(&f, path, err) == 0, "open: %s", err);
    for (int i = 0; i < f.ntensors; i++)
        if (!strcmp(f.tensors[i].name, "encoder.img.2.weight")) f.tensors[i].shape[1] += (int64_t)1 << 62;
    CHECK(model_params_read(&m, &f, err) == -1 && strstr(err, "encoder.img.2.weight"), "wrapping shape: %s", err);
    st_close(&f);
    model_free(&o);
    test_metadata_too_large(&m, path);
    test_empty_metadata(&m, path);
    model_free(&m);
    unlink(path);
    rmdir(dir);
    CHECK_DONE();
}
