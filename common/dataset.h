/* dataset: a multi-view dataset directory, memory-mapped and validated before training.
 *
 * Layout of DIR:
 *   manifest.txt   one `view NAME [ATTR...]` line per view, in order (`#` comments allowed),
 *                  attributes in any order, each at most once:
 *                    files=F1,F2,...        the view's files, each a path under DIR or a glob
 *                                           (`files=emb/NAME-*.npy`, expanded in sorted order)
 *                    tokens vocab=V pad=P   a token view: int32 or int64 ids, each in [0, V),
 *                                           P in [0, V) the padding id, V in 1..2^24 (ids are
 *                                           gathered as float32, exact up to 2^24)
 *                    image=HxWxC            an image view: rows of H*W*C values in HWC order,
 *                                           uint8 or float (as a dense view)
 *                  a view without `tokens` or `image=` is dense
 *   NAME.npy       (N, d_v) per view, or its files (n_k, d_v) whose rows follow one another;
 *                  float32 used in place, float16/float64/uint8 converted row by row as batches
 *                  are gathered (uint8 scaled by 1/255), int32/int64 token ids (token views
 *                  only) converted exactly, anything else refused
 *   labels.npy     optional (N,) integers in [0, K); K = max label + 1
 *   mask.npy       optional (N, V) uint8 or bool, 1 = the view is present in that row
 *
 * dataset_open checks every rule (row counts, dtypes, order, sizes, NaN/Inf with the row,
 * token ids in [0, V) with the row and column, an image's width H*W*C, label range, mask
 * shape), file by file, and reports the first failure as one line naming file
 * and value. Every file is memory-mapped: a worker gathering its own rows (--data-plane
 * direct) reads only their pages. */
#ifndef HCL_DATASET_H
#define HCL_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "npy.h"
#include "util.h"

#define HCL_MAX_VIEW_FILES 65536   /* files of one view */

/* What a view's rows are, from its manifest line. */
enum hcl_view_kind { HCL_VIEW_DENSE = 0, HCL_VIEW_TOKENS = 1, HCL_VIEW_IMAGE = 2 };
typedef struct {
    int kind;          /* enum hcl_view_kind */
    int64_t vocab;     /* tokens: V */
    int64_t pad;       /* tokens: the padding id */
    int h, w, c;       /* image */
} hcl_view_type;

/* One view's files, rows in order: file k holds rows [first[k], first[k + 1]). */
typedef struct {
    int nfiles;
    npy_file *file;                  /* (nfiles) */
    int64_t *first;                  /* (nfiles + 1), first[nfiles] = n */
    char **paths;                    /* (nfiles) as the manifest named them (NULL: NAME.npy) */
} hcl_view_files;

typedef struct {
    char dir[1024];
    int nviews;
    char names[HCL_MAX_VIEWS][HCL_NAME_MAX];
    int64_t widths[HCL_MAX_VIEWS];
    hcl_view_type types[HCL_MAX_VIEWS];   /* dense views: all zero */
    int64_t n;                       /* rows */
    hcl_view_files views[HCL_MAX_VIEWS];
    int has_labels;
    npy_file labels_file;
    int32_t *labels;                 /* (n,) copied out as int32 (small), NULL when absent */
    int nclasses;
    int has_mask;
    npy_file mask_file;              /* (n, nviews) uint8/bool, mapped */
} hcl_dataset;

int dataset_open(hcl_dataset *ds, const char *dir, char *err);
void dataset_close(hcl_dataset *ds);

int dataset_view_index(const hcl_dataset *ds, const char *name);   /* -1 when absent */
/* A view type in the manifest's words: "dense", "tokens vocab=V pad=P", "image=HxWxC". */
void dataset_view_type_str(const hcl_view_type *t, char *out, size_t cap);

/* The one "same views" check: ds holds exactly the nviews views names[v] of input widths[v]
 * (a model's, a checkpoint's, the training set's) and, unless types is NULL, of types[v]
 * (tokens of the same vocabulary and padding id, images of the same shape; where dense is
 * expected an image's pixels do too). With index_of NULL they must also be in the same order
 * (batches are laid out by view index); otherwise index_of[v] gets ds's index of view v.
 * Returns 0, or -1 with one line in err naming what (e.g. "--val-data"), ds->dir, the view and
 * both widths, names or types. */
int dataset_check_views(const hcl_dataset *ds, int nviews, const char (*names)[HCL_NAME_MAX],
                        const int *widths, const hcl_view_type *types, int *index_of, const char *what, char *err);

/* Gather rows idx[0..count) of view v into out (count, d_v) as float32. */
void dataset_gather_view(const hcl_dataset *ds, int v, const int64_t *idx, int64_t count, float *out);
/* Gather the mask rows (count, nviews) as 0/1 bytes; all ones when the dataset has no mask. */
void dataset_gather_mask(const hcl_dataset *ds, const int64_t *idx, int64_t count, uint8_t *out);
/* Gather labels (count,); -1 when the dataset has no labels. */
void dataset_gather_labels(const hcl_dataset *ds, const int64_t *idx, int64_t count, int32_t *out);
int dataset_present(const hcl_dataset *ds, int64_t row, int v);
/* The first view that mask.npy leaves out of every row, or -1 (each view is in some row). */
int dataset_absent_view(const hcl_dataset *ds);

#endif
