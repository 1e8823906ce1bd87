/* loss_infonce: CLIP, FULL and CORE, the weighted mean over pairs of views of symmetric InfoNCE
 * (loss.h), forward and backward for one worker's rows.
 *
 * Every pair term is computed as two "halves" of the same shape: the row term of pair (i, j)
 * takes anchors = own rows of view i against candidates = all rows of view j; the column term
 * is the row term of (j, i), because column c of L = s Z_i Z_j^T is row c of s Z_j Z_i^T.
 * A half never holds its whole (b, N) block of logits: it walks column tiles of T candidates.
 *   pass 1, per tile: one matmul gives the (b, T) logits; per anchor row the running max and the
 *           sum of exps under it (rescaled when the max grows) give the row log-sum-exps.
 *   pass 2, per tile: the logits again (the same matmul, bit for bit; skipped when there is a
 *           single tile, whose logits are still in place), turned in place into the gradient
 *           G = coef (softmax - I) in one sweep that also sums G * L, and two matmuls push G back:
 *               dU[R] += s G V[tile]        dV[tile] += s G^T U[R]        dt += sum G * L
 * A pair is done in one go from the (b, N) block of this worker's rows: a tile holds all b rows of
 * T columns, so pass 1 leaves every column's max and sum of exps over this worker's rows; with
 * more than one worker the caller's column reduce (hcl_loss_input.colreduce) combines them over
 * the workers between the passes. G = coef (P + Q - 2 I) then feeds two matmuls per tile instead
 * of four, and each worker computes only its share of the logits. Without a column reduce a
 * sharded pair falls back to two halves (the row term of (i, j) and of (j, i)). */
#include <math.h>
#include <string.h>

#include "loss_private.h"
#include "matmul.h"

/* One direction of a pair's InfoNCE: anchors are the rows [r0, r0+b) of U (view vi), candidates
 * all N rows of V (view vj), only rows present in both views (bias[r] = 0, else -inf). U, V are
 * (N, D). Returns the sum over present anchors a of [-L_aa + lse_c L_ac]; adds coef * (its gradient
 * w.r.t. L) * L into *gl and, when dU != NULL, pushes coef * gradient into dU (own rows) and dV
 * (all N rows). Its two passes are units u and u + 1 of the loss's units (loss_tick). */

static double infonce_half(hcl_loss_ctx *c, const hcl_loss_input *in, int u, int units, const float *U,
                           const float *V, const float *bias, int64_t n, int64_t r0, int64_t b, int D, float s,
                           double coef, float *dU, float *dV, double *gl) {
    int64_t T = c->tile, R = c->rows, nt = (n + T - 1) / T;
    float *blk = c->scratch, *m = c->scratch + off_rowmax(c);
    double *se = c->dscratch;
    double sum = 0.0, gls = 0.0;
    for (int64_t a = 0; a < b; a++) m[a] = -INFINITY, se[a] = 0.0;

    for (int64_t c0 = 0; c0 < n; c0 += T) {          /* pass 1: row log-sum-exps */
        int64_t tw = n - c0 < T ? n - c0 : T;
        loss_tick(in, u, units, c0, n);
        for (int64_t a0 = 0; a0 < b; a0 += R) {
            int64_t rb = b - a0 < R ? b - a0 : R;
            matmul_f32(0, 1, (int)rb, (int)tw, D, s, U + (r0 + a0) * D, D,
                        V + c0 * D, D, 0.0f, blk, (int)tw);
            for (int64_t a = a0; a < a0 + rb; a++) {
                int64_t row = r0 + a;
                if (bias[row] != 0.0f) continue;
                const float *l = blk + (a - a0) * tw;
                float tm = loss_seg_max(l, bias + c0, tw);
                if (tm == -INFINITY) continue;
                online_max(&m[a], &se[a], tm);
                se[a] += loss_seg_sumexp(l, bias + c0, tw, m[a]);
                if (row >= c0 && row < c0 + tw) sum -= l[row - c0];
            }
        }
    }
    for (int64_t a = 0; a < b; a++)
        if (bias[r0 + a] == 0.0f) sum += m[a] + log(se[a]);   /* se >= 1: the anchor is a candidate */

    for (int64_t c0 = 0; c0 < n; c0 += T) {          /* pass 2: gradient */
        int64_t tw = n - c0 < T ? n - c0 : T;
        loss_tick(in, u + 1, units, c0, n);
        for (int64_t a0 = 0; a0 < b; a0 += R) {
            int64_t rb = b - a0 < R ? b - a0 : R;
            const float *Ur = U + (r0 + a0) * D;
            if (nt > 1 || b > R)
                matmul_f32(0, 1, (int)rb, (int)tw, D, s, Ur, D, V + c0 * D, D,
                            0.0f, blk, (int)tw);
            for (int64_t a = a0; a < a0 + rb; a++) {
                int64_t row = r0 + a;
                float *l = blk + (a - a0) * tw;
                if (bias[row] != 0.0f) {
                    if (dU) memset(l, 0, (size_t)tw * sizeof(float));
                    continue;
                }
                double inv = 1.0 / se[a];
                float lrow = row >= c0 && row < c0 + tw ? l[row - c0] : 0.0f;
                gls += loss_seg_grad_row(l, bias + c0, tw, m[a], (float)(coef * inv));
                if (row >= c0 && row < c0 + tw) {     /* the target: coef (p - 1), in double */
                    float g = (float)(coef * (exp((double)lrow - m[a]) * inv - 1.0));
                    gls += ((double)g - l[row - c0]) * lrow;
                    l[row - c0] = g;
                }
            }
            if (dU) {
                matmul_f32(0, 0, (int)rb, D, (int)tw, s, blk, (int)tw,
                            V + c0 * D, D, 1.0f, dU + (r0 + a0) * D, D);
                matmul_f32(1, 0, (int)tw, D, (int)rb, s, blk, (int)tw, Ur, D,
                            1.0f, dV + c0 * D, D);
            }
        }
    }
    *gl += gls;
    return sum;
}

/* Both directions of a pair's InfoNCE from the (b, N) block L = s U[R] V^T of this worker's rows
 * R = [r0, r0+b): rows of L are anchors of U against V, its columns anchors of V against U. A tile
 * holds all b rows of T columns, so pass 1 leaves each column's max and sum of exps over this
 * worker's rows; the caller combines them over the workers (in->colreduce, once for all pairs)
 * before pass 2. Column c's term counts on the worker that owns row c. The gradient
 * G = coef (P + Q - 2 I) of the block feeds two matmuls per tile: dU (own rows) and dV (all N).
 * U and dU hold rows from ufirst on (in->z_first). */
typedef struct {
    const float *U, *V;
    int64_t ufirst;
    float *dU, *dV;
    double coef;
    float *blk;                 /* its (b, tile) block: kept from pass 1 when it is a single tile */
    float *kept;                /* or all its blocks from pass 1 (loss_ctx_keep), NULL */
    float *m, *dg, *cm;         /* row maxes, target logits (b); column maxes (n) */
    double *se, *cs;            /* row sums (b), column sums (n) */
    int u1, u2, units;          /* its passes' places among the loss's (hcl_loss_input.progress) */
} infonce_pair;

/* Where the (rb, tw) block of own rows [a0, a0+rb) and columns [c0, c0+tw) is: q->blk, or its
 * place among the pair's kept blocks (the blocks of rows a0.. one after another, n floats a
 * row block's worth: a0 n + c0 rb). */
static float *infonce_block(const hcl_loss_input *in, const infonce_pair *q, int64_t a0, int64_t rb, int64_t c0) {
    return q->kept ? q->kept + a0 * in->n + c0 * rb : q->blk;
}

/* The (rb, tw) logits of own rows [a0, a0+rb) against columns [c0, c0+tw), into blk. */
static void infonce_logits(const hcl_loss_input *in, const infonce_pair *q, int D, float s, int64_t a0, int64_t rb,
                           int64_t c0, int64_t tw, float *blk) {
    if (rb == 0) return;
    matmul_f32(0, 1, (int)rb, (int)tw, D, s,
                q->U + (in->r0 + a0 - q->ufirst) * D, D, q->V + c0 * D, D, 0.0f, blk, (int)tw);
}

/* pass 1: row and column log-sum-exps of this worker's rows. Blocks of R rows: a column's running
 * max and sum of exps fold in one chunk at a time (its sum rescaled when the max grows). */
static void infonce_pass1(hcl_loss_ctx *c, const hcl_loss_input *in, const infonce_pair *q, const float *bias,
                          int D, float s) {
    int64_t n = in->n, r0 = in->r0, b = in->b, T = c->tile, R = c->rows;
    float *m = q->m, *cm = q->cm, *dg = q->dg;
    float *sh = c->scratch + off_colcoef(c), *cmt = sh + c->tile;
    double *se = q->se, *cs = q->cs;
    for (int64_t a = 0; a < b; a++) m[a] = -INFINITY, se[a] = 0.0, dg[a] = 0.0f;
    for (int64_t j = 0; j < n; j++) cm[j] = -INFINITY, cs[j] = 0.0;
    for (int64_t c0 = 0; c0 < n; c0 += T) {
        int64_t tw = n - c0 < T ? n - c0 : T;
        loss_tick(in, q->u1, q->units, c0, n);
        for (int64_t a0 = 0; a0 < b; a0 += R) {
            int64_t rb = b - a0 < R ? b - a0 : R;
            const float *blk = infonce_block(in, q, a0, rb, c0);
            infonce_logits(in, q, D, s, a0, rb, c0, tw, (float *)blk);
            for (int64_t j = 0; j < tw; j++) cmt[j] = -INFINITY;
            for (int64_t a = a0; a < a0 + rb; a++) {
                int64_t row = r0 + a;
                if (bias[row] != 0.0f) continue;
                const float *l = blk + (a - a0) * tw;
                float tm = loss_seg_max_colmax(l, bias + c0, tw, cmt);
                if (tm == -INFINITY) continue;
                online_max(&m[a], &se[a], tm);
                se[a] += loss_seg_sumexp(l, bias + c0, tw, m[a]);
                if (row >= c0 && row < c0 + tw) dg[a] = l[row - c0];
            }
            for (int64_t j = 0; j < tw; j++) {         /* fold the chunk's column maxes in */
                float old = cm[c0 + j];
                if (cmt[j] > old) {
                    if (old != -INFINITY) cs[c0 + j] *= exp((double)old - (double)cmt[j]);
                    cm[c0 + j] = cmt[j];
                }
                sh[j] = cm[c0 + j] == -INFINITY ? 0.0f : cm[c0 + j];   /* no row yet: exp(-inf) = 0 */
            }
            for (int64_t a = a0; a < a0 + rb; a++)
                if (bias[r0 + a] == 0.0f) loss_seg_colsumexp(blk + (a - a0) * tw, bias + c0, tw, sh, cs + c0);
        }
    }
    for (int64_t j = 0; j < n; j++)
        if (cs[j] == 0.0) cm[j] = -INFINITY;      /* no row here (a finite max has a sum >= 1) */
}

/* After the reduce: this worker's part of the row and column sums of [-L_aa + lse]. */
static double infonce_sums(const hcl_loss_input *in, const infonce_pair *q, const float *bias) {
    int64_t n = in->n, r0 = in->r0, b = in->b;
    double rows = 0.0, cols = 0.0;
    for (int64_t j = 0; j < n; j++)
        if (q->cm[j] == -INFINITY) q->cm[j] = 0.0f;   /* no row anywhere: its coefficient is 0 */
    for (int64_t a = 0; a < b; a++) {
        int64_t row = r0 + a;
        if (bias[row] != 0.0f) continue;
        rows += q->m[a] + log(q->se[a]) - q->dg[a];
        cols += q->cm[row] + log(q->cs[row]) - q->dg[a];
    }
    return rows + cols;
}

/* pass 2: G = coef (P + Q - 2 I), pushed into dU and dV; adds sum G L to *gl */
static void infonce_pass2(hcl_loss_ctx *c, const hcl_loss_input *in, const infonce_pair *q, const float *bias,
                          int D, float s, int recompute, double *gl) {
    int64_t n = in->n, r0 = in->r0, b = in->b, T = c->tile, R = c->rows;
    const float *m = q->m, *cm = q->cm;
    const double *se = q->se, *cs = q->cs;
    float *cc = c->scratch + off_colcoef(c);
    double coef = q->coef, gls = 0.0;
    for (int64_t c0 = 0; c0 < n; c0 += T) {
        int64_t tw = n - c0 < T ? n - c0 : T;
        loss_tick(in, q->u2, q->units, c0, n);
        for (int64_t j = 0; j < tw; j++) cc[j] = bias[c0 + j] == 0.0f ? (float)(coef / cs[c0 + j]) : 0.0f;
        for (int64_t a0 = 0; a0 < b; a0 += R) {
            int64_t rb = b - a0 < R ? b - a0 : R;
            const float *Ur = q->U + (r0 + a0 - q->ufirst) * D;
            float *blk = infonce_block(in, q, a0, rb, c0);
            if (recompute && !q->kept) infonce_logits(in, q, D, s, a0, rb, c0, tw, blk);
            for (int64_t a = a0; a < a0 + rb; a++) {
                int64_t row = r0 + a;
                float *l = blk + (a - a0) * tw;
                if (bias[row] != 0.0f) {
                    if (q->dU) memset(l, 0, (size_t)tw * sizeof(float));
                    continue;
                }
                int diag = row >= c0 && row < c0 + tw;
                float laa = diag ? l[row - c0] : 0.0f;
                gls += loss_seg_grad_rowcol(l, bias + c0, tw, m[a], (float)(coef / se[a]), cm + c0, cc);
                if (diag) {                               /* the target: coef (p + q - 2), in double */
                    double p = exp((double)laa - m[a]) / se[a], qq = exp((double)laa - cm[row]) / cs[row];
                    float g = (float)(coef * (p + qq - 2.0));
                    gls += ((double)g - l[row - c0]) * laa;
                    l[row - c0] = g;
                }
            }
            if (q->dU && rb > 0) {
                matmul_f32(0, 0, (int)rb, D, (int)tw, s, blk, (int)tw,
                            q->V + c0 * D, D, 1.0f, q->dU + (r0 + a0 - q->ufirst) * D, D);
                matmul_f32(1, 0, (int)tw, D, (int)rb, s, blk, (int)tw, Ur, D,
                            1.0f, q->dV + c0 * D, D);
            }
        }
    }
    *gl += gls;
}

static void pair_bias(float *bias, const hcl_loss_input *in, int nv, int i, int j) {
    for (int64_t r = 0; r < in->n; r++) bias[r] = present2(in->mask, nv, r, i, j) ? 0.0f : -INFINITY;
}

/* CLIP / FULL / CORE: the weighted mean over the selected pairs of symmetric InfoNCE. Returns the
 * worker's part of the total and fills pair_loss, pair_used. */
double loss_pairs_forward_backward(hcl_loss_ctx *c, const hcl_loss_input *in, float *const dz[],
                                     hcl_loss_result *out) {
    const hcl_loss_config *cfg = &c->cfg;
    int nv = cfg->nviews, D = cfg->dim;
    int64_t n = in->n;
    float s = expf(in->t);
    float *bias = c->scratch + off_bias(c);

    int64_t cnt[HCL_MAX_VIEWS][HCL_MAX_VIEWS];
    double wsum = 0.0;
    for (int i = 0; i < nv; i++)
        for (int j = i + 1; j < nv; j++) {
            if (!loss_pair_selected(cfg, i, j)) continue;
            int64_t k = 0;
            for (int64_t r = 0; r < n; r++) k += present2(in->mask, nv, r, i, j);
            cnt[i][j] = k;
            out->pair_used[i][j] = k > 0;
            if (k > 0) wsum += loss_pair_weight(cfg, i, j);
        }

    /* The pairs taking part, in order; the two halves when sharded without a column reduce. */
    int pi[HCL_MAX_VIEWS * HCL_MAX_VIEWS], pj[HCL_MAX_VIEWS * HCL_MAX_VIEWS], np = 0;
    double pwn[HCL_MAX_VIEWS * HCL_MAX_VIEWS], pinv[HCL_MAX_VIEWS * HCL_MAX_VIEWS];
    for (int i = 0; i < nv; i++)
        for (int j = i + 1; j < nv; j++) {
            if (!loss_pair_selected(cfg, i, j) || cnt[i][j] == 0) continue;
            HCL_CHECK(in->z[i] && in->z[j], "loss: z[%d] or z[%d] missing", i, j);
            HCL_CHECK(in->z_first[j] == 0 && (in->z_first[i] == 0 || in->z_first[i] == in->r0),
                      "loss: pair (%d, %d) with views holding rows from %lld, %lld", i, j,
                      (long long)in->z_first[i], (long long)in->z_first[j]);
            double w = loss_pair_weight(cfg, i, j);
            pi[np] = i, pj[np] = j;
            pwn[np] = wsum > 0.0 ? w / wsum : 0.0;
            pinv[np] = 1.0 / (2.0 * (double)cnt[i][j]);
            np++;
        }
    double total = 0.0, gl = 0.0;
    if (in->b < n && !in->colreduce) {
        if (in->b == 0) return 0.0;
        for (int k = 0; k < np; k++) {
            int i = pi[k], j = pj[k];
            HCL_CHECK(in->z_first[i] == 0, "loss: view %d holds only its own rows", i);
            pair_bias(bias, in, nv, i, j);
            float *di = dz ? dz[i] : NULL, *dj = dz ? dz[j] : NULL;
            double coef = pwn[k] * pinv[k];
            double sum = infonce_half(c, in, 4 * k, 4 * np, in->z[i], in->z[j], bias, n, in->r0, in->b, D, s,
                                      coef, di, dj, &gl);
            sum += infonce_half(c, in, 4 * k + 2, 4 * np, in->z[j], in->z[i], bias, n, in->r0, in->b, D, s,
                                coef, dj, di, &gl);
            out->pair_loss[i][j] = sum * pinv[k];
            total += pwn[k] * out->pair_loss[i][j];
        }
        out->dt += gl;
        return total;
    }
    /* Sharded, the column statistics of all pairs go in one reduce between all pass 1s and all
     * pass 2s, when every pair's block can wait for it (kept, or tiled and recomputed anyway);
     * else (and with one worker) a pair's two passes follow each other, with its own reduce. */
    /* A worker without rows (a small last batch) still takes part in the reduces. */
    int64_t b = in->b;
    int recompute = n > c->tile || b > c->rows, fuse = np > 0 && b < n && (c->nblk >= np || recompute);
    infonce_pair q[HCL_MAX_VIEWS * HCL_MAX_VIEWS];
    float *pf = c->scratch + c->off_pair;
    double *pd = c->dscratch + 3 * c->max_n;
    for (int k = 0; k < np; k++)
        q[k] = (infonce_pair){.U = in->z[pi[k]], .V = in->z[pj[k]], .ufirst = in->z_first[pi[k]],
                              .dU = dz ? dz[pi[k]] : NULL, .dV = dz ? dz[pj[k]] : NULL,
                              .coef = pwn[k] * pinv[k],
                              .blk = c->scratch + (c->nblk > 1 ? k * c->rows * c->tile : 0),
                              .kept = c->kept ? c->kept + (size_t)k * (size_t)c->max_b * (size_t)c->max_n : NULL,
                              .m = pf + k * 2 * c->max_b, .dg = pf + k * 2 * c->max_b + c->max_b,
                              .cm = pf + np * 2 * c->max_b + k * n,
                              .se = pd + k * c->max_b, .cs = pd + np * c->max_b + k * n,
                              /* fused: every pass 1, then every pass 2; else pair by pair */
                              .u1 = fuse ? k : 2 * k, .u2 = fuse ? np + k : 2 * k + 1, .units = 2 * np};
    if (fuse) {
        for (int k = 0; k < np; k++) {
            pair_bias(bias, in, nv, pi[k], pj[k]);
            infonce_pass1(c, in, &q[k], bias, D, s);
        }
        in->colreduce(in->colreduce_arg, q[0].cm, q[0].cs, np * n);
    }
    for (int k = 0; k < np; k++) {
        int i = pi[k], j = pj[k];
        pair_bias(bias, in, nv, i, j);
        if (!fuse) {
            infonce_pass1(c, in, &q[k], bias, D, s);
            if (b < n) in->colreduce(in->colreduce_arg, q[k].cm, q[k].cs, n);
        }
        out->pair_loss[i][j] = infonce_sums(in, &q[k], bias) * pinv[k];
        total += pwn[k] * out->pair_loss[i][j];
        infonce_pass2(c, in, &q[k], bias, D, s, recompute, &gl);
    }
    out->dt += gl;
    return total;
}
