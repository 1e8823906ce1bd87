/* fuzz_dataset: a dataset directory (an archive of fuzz_kit.h: manifest.txt, the views' .npy
 * files, labels.npy, mask.npy) through common/dataset.c's dataset_open: the manifest parser,
 * each view, the labels' and the mask's checks. An accepted dataset must then serve every row
 * of every view, its labels and its mask without a fault, as training would, token views only ids
 * in [0, vocab) and image views H*W*C wide. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "fuzz_kit.h"
#include "util.h"

#define MAX_ROWS 4096

static void serve(const hcl_dataset *ds) {
    int64_t n = ds->n < MAX_ROWS ? ds->n : MAX_ROWS;
    int64_t *idx = hcl_malloc(sizeof(int64_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) idx[i] = n - 1 - i;
    for (int v = 0; v < ds->nviews; v++) {
        float *rows = hcl_malloc(sizeof(float) * (size_t)(n * ds->widths[v]));
        dataset_gather_view(ds, v, idx, n, rows);
        const hcl_view_type *t = &ds->types[v];
        for (int64_t i = 0; i < n * ds->widths[v] && t->kind == HCL_VIEW_TOKENS; i++)   /* ids as exact floats */
            FUZZ_ASSERT(rows[i] >= 0 && rows[i] < (float)t->vocab && rows[i] == (float)(int64_t)rows[i],
                        "view '%s': token %g outside [0, %lld)", ds->names[v], (double)rows[i], (long long)t->vocab);
        if (t->kind == HCL_VIEW_IMAGE)
            FUZZ_ASSERT(ds->widths[v] == (int64_t)t->h * t->w * t->c, "view '%s': width %lld, image=%dx%dx%d",
                        ds->names[v], (long long)ds->widths[v], t->h, t->w, t->c);
        free(rows);
    }
    uint8_t *mask = hcl_malloc((size_t)(n * ds->nviews));
    dataset_gather_mask(ds, idx, n, mask);
    int32_t *labels = hcl_malloc(sizeof(int32_t) * (size_t)n);
    dataset_gather_labels(ds, idx, n, labels);
    for (int64_t i = 0; i < n; i++) {
        FUZZ_ASSERT(!ds->has_labels || (labels[i] >= 0 && labels[i] < ds->nclasses),
                    "label %d of row %lld, %d classes", labels[i], (long long)idx[i], ds->nclasses);
        for (int v = 0; v < ds->nviews; v++) {
            FUZZ_ASSERT(mask[i * ds->nviews + v] <= 1, "mask value %d", mask[i * ds->nviews + v]);
            FUZZ_ASSERT(dataset_present(ds, idx[i], v) == mask[i * ds->nviews + v], "present != mask");
        }
    }
    free(idx);
    free(mask);
    free(labels);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *dir = fuzz_dir();
    fuzz_unpack(dir, data, size);
    hcl_dataset ds;
    char err[HCL_ERR_MAX] = "";
    if (dataset_open(&ds, dir, err) != 0) {
        fuzz_check_err("dataset_open", err);
        return 0;
    }
    FUZZ_ASSERT(ds.nviews >= 1 && ds.nviews <= HCL_MAX_VIEWS, "%d views", ds.nviews);
    FUZZ_ASSERT(ds.n >= 1, "%lld rows", (long long)ds.n);
    int widths[HCL_MAX_VIEWS];
    for (int v = 0; v < ds.nviews; v++) {
        FUZZ_ASSERT(ds.widths[v] >= 1, "view %d width %lld", v, (long long)ds.widths[v]);
        FUZZ_ASSERT(dataset_view_index(&ds, ds.names[v]) == v, "view '%s' not found by name", ds.names[v]);
        widths[v] = (int)ds.widths[v];
    }
    FUZZ_ASSERT(dataset_check_views(&ds, ds.nviews, (const char (*)[HCL_NAME_MAX])ds.names, widths, ds.types, NULL,
                                    "self", err) == 0,
                "a dataset differs from its own views: %s", err);
    serve(&ds);
    dataset_close(&ds);
    return 0;
}
