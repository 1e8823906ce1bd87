/* loss_private: what the files of the loss share, not part of loss.h: the scratch layout's
 * offsets, row presence, the row kernels (loss_kernels.c), the choice of pairs (loss.c) and the
 * three objectives loss_forward_backward dispatches to (loss_infonce.c, loss_supcon.c). */
#ifndef HCL_LOSS_PRIVATE_H
#define HCL_LOSS_PRIVATE_H

#include <math.h>
#include <stdint.h>

#include "loss.h"

/* Scratch layout. Floats: nblk (rows, tile) blocks, row maxes (max_n), the tile's column
 * coefficients or shifts (tile) and a row chunk's column maxes (tile), the candidates' mask bias, 0 or -inf (V max_n for SupCon,
 * else max_n), per pair its row maxes and target logits (max_b each) and column maxes (max_n),
 * HYBRID's (max_b, K) head logits. Doubles: three vectors of max_n (row sums of exps, column
 * sums of exps or SupCon's sums of positive logits, SupCon's positive counts), per pair its row
 * sums (max_b) and column sums (max_n). Ints
 * (SupCon): 2 max_n for the count of anchors kept, V max_n positive keys. */
static inline int64_t off_rowmax(const hcl_loss_ctx *c) { return c->off_rowmax; }
static inline int64_t off_colcoef(const hcl_loss_ctx *c) { return c->off_rowmax + c->max_n; }
static inline int64_t off_bias(const hcl_loss_ctx *c) { return c->off_bias; }

/* Row `r` is present in view v. */
static inline int present1(const uint8_t *mask, int nv, int64_t r, int v) {
    return !mask || mask[r * nv + v];
}

static inline int present2(const uint8_t *mask, int nv, int64_t r, int vi, int vj) {
    return !mask || (mask[r * nv + vi] && mask[r * nv + vj]);
}

/* The fraction done at column c0 of n in the pass that is unit u of units, to the caller's
 * progress hook (hcl_loss_input.progress). */
static inline void loss_tick(const hcl_loss_input *in, int u, int units, int64_t c0, int64_t n) {
    if (in->progress) in->progress(in->progress_arg, (u + (double)c0 / (double)n) / units);
}

/* Fold a tile's (finite) max tm into a row's running max m, rescaling its sum of exps se. */
static inline void online_max(float *m, double *se, float tm) {
    if (tm > *m) {
        *se *= exp((double)*m - (double)tm);
        *m = tm;
    }
}

/* ---- row kernels (loss_kernels.c) ----------------------------------------------------------
 * A row segment of len logits l with a mask bias (0 present, -inf absent): x = l + bias. */
float loss_seg_max(const float *l, const float *bias, int64_t len);
double loss_seg_sumexp(const float *l, const float *bias, int64_t len, float m);
double loss_seg_grad_row(float *l, const float *bias, int64_t len, float m, float ci);
float loss_seg_max_colmax(const float *l, const float *bias, int64_t len, float *cmx);
void loss_seg_colsumexp(const float *l, const float *bias, int64_t len, const float *cmx, double *csum);
double loss_seg_grad_rowcol(float *l, const float *bias, int64_t len, float m, float cr, const float *cmx,
                            const float *cc);
double loss_seg_sumexp_pos(const float *l, const float *bias, const int32_t *key, int64_t len, float m,
                           int32_t ka, double *spos, int64_t *npos);
double loss_seg_grad_pos(float *l, const float *bias, const int32_t *key, int64_t len, float m, int32_t ka,
                         float ci, float cp);

/* ---- the pairs (loss.c) --------------------------------------------------------------------- */

/* The contrastive part: kind, or HYBRID's base. */
enum hcl_loss_kind loss_contrastive_kind(const hcl_loss_config *cfg);
/* The InfoNCE pair (i, j), i < j, is one of the loss's, and its weight in the mean over pairs. */
int loss_pair_selected(const hcl_loss_config *cfg, int i, int j);
double loss_pair_weight(const hcl_loss_config *cfg, int i, int j);

/* ---- the objectives ------------------------------------------------------------------------- */

/* CLIP / FULL / CORE (loss_infonce.c): the worker's part of the weighted mean over the selected
 * pairs of symmetric InfoNCE; fills pair_loss, pair_used, adds to dt. */
double loss_pairs_forward_backward(hcl_loss_ctx *c, const hcl_loss_input *in, float *const dz[],
                                   hcl_loss_result *out);
/* SUPCON (loss_supcon.c): the worker's part of the mean over the anchors kept; dt into *gl. */
double loss_supcon_forward_backward(hcl_loss_ctx *c, const hcl_loss_input *in, float *const dz[],
                                    double *gl);
/* HYBRID's cross-entropy of the linear head (loss_supcon.c). */
double loss_ce_forward_backward(hcl_loss_ctx *c, const hcl_loss_input *in, float *const dz[],
                                float *dhead_w, float *dhead_b);

#endif
