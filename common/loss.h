/* loss: the contrastive objectives, forward and backward in one call, written for the sharded
 * step of docs/MATH.md: a worker owns rows [r0, r0+b) of a global batch of N rows and sees
 * all N gathered embeddings of the views it reads all rows of (loss_gathered_views), its own rows
 * of the others (z_first). With r0 = 0, b = N it is the single-process loss.
 *
 *   CLIP      symmetric InfoNCE between views a and b
 *   FULL      weighted mean of symmetric InfoNCE over every pair of views (CMC full graph)
 *   CORE      the same over the pairs (core, j) (CMC core view)
 *   SUPCON    supervised contrastive: anchors are this worker's rows of every view, candidates all
 *             other gathered rows of all views, positives those with the anchor's label
 *   HYBRID    a contrastive base (FULL by default) + lambda * cross-entropy of a linear head
 *             (K,D) applied to every present view embedding, mean over present (row, view)
 * Logits are s * z_a . z_c with s = exp(t). Missing views: a row absent from view i is neither
 * anchor nor candidate in any pair with view i; means count only present rows; a pair with no
 * row present in both views drops out of the mean over pairs. An anchor without positives adds
 * nothing. All log-sum-exps subtract the max.
 *
 * Every returned value is this worker's PART: summed over workers it gives the global value, so
 * nothing is divided by the number of workers anywhere. */
#ifndef HCL_LOSS_H
#define HCL_LOSS_H

#include <stdint.h>

#include "util.h"

enum hcl_loss_kind { HCL_LOSS_CLIP, HCL_LOSS_FULL, HCL_LOSS_CORE, HCL_LOSS_SUPCON, HCL_LOSS_HYBRID };

typedef struct {
    enum hcl_loss_kind kind;
    enum hcl_loss_kind base;      /* HYBRID's contrastive part: CLIP, FULL, CORE or SUPCON */
    int nviews;
    int dim;
    int view_a, view_b;           /* CLIP's views (default 0, 1) */
    int core_view;                /* CORE's view (default 0) */
    float pair_weight[HCL_MAX_VIEWS][HCL_MAX_VIEWS];  /* [i][j], i < j used; default 1 */
    float lambda;                 /* HYBRID's weight of the cross-entropy (default 1) */
    int nclasses;                 /* HYBRID's K */
} hcl_loss_config;

typedef struct {
    int64_t n;                          /* global rows N */
    int64_t r0, b;                      /* this worker's rows [r0, r0+b) */
    const float *z[HCL_MAX_VIEWS];      /* (N, D) gathered normalised embeddings */
    const uint8_t *mask;                /* (N, V) 1 = present, or NULL: all present */
    const int32_t *labels;              /* (N) or NULL (needed by SUPCON and HYBRID) */
    float t;                            /* log logit scale */
    const float *head_w, *head_b;       /* HYBRID: (K, D), (K) */
    /* Sharded pairs (b < n): combines the workers' column statistics of a pair's logits, in
     * place and the same on every worker: colmax (n) becomes the max over workers (-inf where no
     * worker has a row), colsum (n) the sum over workers of colsum_w exp(colmax_w - colmax). With
     * it a worker computes only its (b, N) block of logits per pair, and the column terms come
     * from it; without it (NULL) the column terms of its rows are computed from a second, (b, N)
     * block of the transposed pair: twice the loss work, no communication inside the loss. */
    void (*colreduce)(void *arg, float *colmax, double *colsum, int64_t n);
    void *colreduce_arg;
    /* The row held at z[v][0] and dz[v][0]: 0 (all N rows, the default), or r0 for a view of which
     * only the own rows are held, which needs a column reduce and loss_gathered_views(v) == 0. */
    int64_t z_first[HCL_MAX_VIEWS];
    /* Optional (NULL: none): called at each tile of columns with the fraction of the loss's
     * passes done, 0 to 1 (every objective but the hybrid head's small cross-entropy; a long
     * step's progress, watchdog.h). */
    void (*progress)(void *arg, double done);
    void *progress_arg;
} hcl_loss_input;

typedef struct {
    double loss;                                     /* part of the total loss */
    double pair_loss[HCL_MAX_VIEWS][HCL_MAX_VIEWS];  /* part of each pair's own InfoNCE, i < j */
    int pair_used[HCL_MAX_VIEWS][HCL_MAX_VIEWS];     /* pair takes part (same on every worker) */
    double supcon;                                   /* part of the SupCon loss */
    double ce;                                       /* part of HYBRID's cross-entropy */
    double dt;                                       /* part of d loss / d t */
} hcl_loss_result;

/* Logits are held a block at a time: candidates are walked in tiles of `tile` columns, in two
 * passes (log-sum-exps first, then the gradient, each block's logits recomputed). By default a
 * (b, N) block of up to HCL_LOSS_ONE_TILE_FLOATS (16 MB) is one block (nothing recomputed: the
 * W1 shapes); past that, InfoNCE pairs take blocks of HCL_LOSS_TILE_FLOATS / HCL_LOSS_TILE
 * (1024) own rows x HCL_LOSS_TILE (512) columns (2 MB), SupCon blocks of all own rows x
 * HCL_LOSS_TILE_FLOATS / max_b columns, a multiple of 16 in [HCL_LOSS_TILE_MIN, HCL_LOSS_TILE].
 * Scratch: one block + O(max_n) floats and O(max_n) doubles per pair, whatever max_b * max_n is. */
#define HCL_LOSS_TILE 512
#define HCL_LOSS_TILE_MIN 64
#define HCL_LOSS_TILE_FLOATS ((int64_t)1 << 19)
#define HCL_LOSS_ONE_TILE_FLOATS ((int64_t)1 << 22)

typedef struct {
    hcl_loss_config cfg;
    int64_t max_b, max_n;
    int64_t tile;                       /* candidate columns per tile */
    int64_t rows;                       /* own rows per block (InfoNCE; SupCon takes max_b) */
    float *scratch;                     /* sized once by loss_ctx_init: nblk (max_b, tile) blocks,
                                         * O(max_n) vectors, per pair 2 max_b + max_n floats */
    int64_t npairs;                     /* InfoNCE pairs it is sized for (loss_pair_count) */
    int64_t nblk;                       /* blocks of logits held: npairs when sharded (max_b <
                                         * max_n), every pair is one tile and all fit
                                         * HCL_LOSS_ONE_TILE_FLOATS, else 1 */
    int64_t off_rowmax, off_bias, off_pair;   /* where vectors, mask bias, pairs' state sit */
    int64_t scratch_len;
    double *dscratch;                   /* per-row and per-column sums, O(max_n), and per pair
                                         * max_b + max_n */
    int64_t dscratch_len;
    int32_t *iscratch;                  /* SUPCON: (label, views present) per row, for the count */
    int64_t iscratch_len;               /* of anchors kept, and positive keys; NULL otherwise */
    float *kept;                        /* loss_ctx_keep: pass 1's logits, (npairs, max_b, max_n) in
                                         * blocks, for pass 2 instead of computing them again */
} hcl_loss_ctx;

void loss_config_default(hcl_loss_config *c, int nviews, int dim);
/* Size the scratch for up to max_b own rows and max_n gathered rows, default tile. */
void loss_ctx_init(hcl_loss_ctx *c, const hcl_loss_config *cfg, int64_t max_b, int64_t max_n);
/* The same with tile columns per tile (0: the default); a tile wider than the widest block is
 * cut to it. Results agree with any tile up to float rounding in another order. */
void loss_ctx_init_tile(hcl_loss_ctx *c, const hcl_loss_config *cfg, int64_t max_b, int64_t max_n,
                        int64_t tile);
/* CLIP, FULL, CORE with more than one tile: keep pass 1's logits for pass 2 (the same bits as
 * computing them again, a quarter of the loss's products fewer) when all pairs' (max_b, max_n)
 * blocks fit in max_bytes (`--loss-memory`). Returns the bytes it took (0: they do not fit, or
 * nothing is recomputed anyway; then nothing is kept). */
size_t loss_ctx_keep(hcl_loss_ctx *c, size_t max_bytes);
/* Bytes loss_ctx_init and then loss_ctx_keep(keep_bytes) allocate, without allocating them. */
double loss_ctx_bytes(const hcl_loss_config *cfg, int64_t max_b, int64_t max_n, size_t keep_bytes);
void loss_ctx_free(hcl_loss_ctx *c);

/* dz[v]: d loss / d z[v] for the rows z[v] holds (all N, or the own rows from z_first[v]),
 * accumulated (+=); may be NULL for forward only (then dhead_* are ignored too). dhead_w (K,D),
 * dhead_b (K): accumulated (HYBRID). Sharded with a column reduce, every worker must call it,
 * one with no rows (b = 0) too: the reduces are collective. */
void loss_forward_backward(hcl_loss_ctx *c, const hcl_loss_input *in, float *const dz[],
                           float *dhead_w, float *dhead_b, hcl_loss_result *out);

/* need[v] = 1 for the views whose other workers' rows the loss reads (and whose gradient it
 * gives for them) when it runs sharded with a column reduce: a pair (i, j), i < j, reads all of
 * view j's rows and only the own rows of view i; SupCon reads every view. The others can stay
 * own rows only: no all-gather, no reduce-scatter (a full graph of V views gathers V - 1). */
void loss_gathered_views(const hcl_loss_config *cfg, int need[HCL_MAX_VIEWS]);
/* The number of InfoNCE pairs (CLIP 1, FULL V (V-1) / 2, CORE V - 1, SUPCON 0): a sharded step
 * column-reduces N values of each pair a batch has rows of both views in, in one call or one per
 * pair. */
int loss_pair_count(const hcl_loss_config *cfg);

const char *loss_kind_name(enum hcl_loss_kind k);
int loss_kind_parse(const char *s, enum hcl_loss_kind *k);   /* clip|full|core|supcon|hybrid */

#endif
