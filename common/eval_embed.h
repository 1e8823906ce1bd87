/* eval_embed: the embeddings of a dataset. eval_embed_dataset runs a model's encoders over a
 * dataset (hcl-embed, hcl-eval, --eval-every); eval_embeddings_save/load write and read
 * hcl-embed's directory layout (manifest.txt + VIEW.npy + fused.npy + labels.npy + mask.npy
 * [+ VIEW.features.npy]); eval_embeddings_rows views a range of rows without a copy. */
#ifndef HCL_EVAL_EMBED_H
#define HCL_EVAL_EMBED_H

#include <stdint.h>

#include "dataset.h"
#include "model.h"
#include "progress.h"
#include "util.h"

typedef struct {
    int64_t n;
    int nviews;
    char names[HCL_MAX_VIEWS][HCL_NAME_MAX];
    int width[HCL_MAX_VIEWS];            /* D of each view's embedding */
    float *z[HCL_MAX_VIEWS];             /* (n, width[v]); absent rows are zero */
    float *fused;                        /* (n, D), NULL when the widths differ */
    int feat_width[HCL_MAX_VIEWS];
    float *features[HCL_MAX_VIEWS];      /* (n, feat_width[v]) penultimate activations, or NULL */
    uint8_t *mask;                       /* (n, nviews), NULL: every view present */
    int32_t *labels;                     /* (n), NULL without labels */
    int nclasses;                        /* max label + 1 */
} eval_embeddings;

/* Embed every row of ds with m (views matched by name, in any order: dataset_check_views; a
 * view missing, extra or of another width is -1 and one line naming it). Absent rows get zero embeddings and are
 * left out of fused. features: also keep each view's input to the last linear layer (the last
 * hidden activation). batch: rows per encoder call. prog (progress.h; NULL: none) is told the
 * rows encoded, view after view: done of n * nviews. eval_embed_dataset: the same, untold. */
int eval_embed_dataset_progress(eval_embeddings *e, const hcl_model *m, const hcl_dataset *ds,
                                int batch, int features, hcl_progress *prog, char *err);
static inline int eval_embed_dataset(eval_embeddings *e, const hcl_model *m, const hcl_dataset *ds,
                                     int batch, int features, char *err) {
    return eval_embed_dataset_progress(e, m, ds, batch, features, NULL, err);
}

/* DIR/<view>.npy for each view, fused.npy, labels.npy (int64), mask.npy, <view>.features.npy,
 * manifest.txt (`view NAME` lines, written last); each durable (npy_write). */
int eval_embeddings_save(const eval_embeddings *e, const char *dir, char *err);
/* Read what eval_embeddings_save writes (float32 or float64 views; fused.npy optional: computed
 * when absent and the widths agree; features are not read). */
int eval_embeddings_load(eval_embeddings *e, const char *dir, char *err);
void eval_embeddings_free(eval_embeddings *e);

/* A view of rows [r0, r1) of e: its arrays point into e's (nothing is allocated or copied), so
 * it lives while e does and is never freed. */
void eval_embeddings_rows(eval_embeddings *out, const eval_embeddings *e, int64_t r0, int64_t r1);

#endif
