/* loss_supcon: SUPCON, supervised contrastive over every (view, row), and HYBRID's cross-entropy
 * of a linear head (loss.h), forward and backward for one worker's rows. SupCon walks, per anchor
 * view, tiles of the (b, V N) block of anchors (view, own row) against candidates (view, any row)
 * in the two passes of loss_infonce.c; its positives' logits and counts ride in pass 1. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loss_private.h"
#include "matmul.h"

static int cmp_label_pair(const void *pa, const void *pb) {
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    return (a > b) - (a < b);
}

/* The global number of SupCon anchors kept (present entries with at least one positive among the
 * other present entries), from the gathered labels and mask: the same on every worker. */
static int64_t supcon_kept(hcl_loss_ctx *c, const hcl_loss_input *in) {
    int nv = c->cfg.nviews;
    int64_t n = in->n, kept = 0, m = 0;
    int32_t *pairs = c->iscratch;   /* (label, present views) for labelled rows */
    for (int64_t r = 0; r < n; r++) {
        int32_t np = 0;
        for (int v = 0; v < nv; v++) np += present1(in->mask, nv, r, v);
        if (in->labels[r] < 0) {
            if (np >= 2) kept += np;
        } else if (np > 0) {
            pairs[2 * m] = in->labels[r];
            pairs[2 * m + 1] = np;
            m++;
        }
    }
    qsort(pairs, (size_t)m, 2 * sizeof(int32_t), cmp_label_pair);
    for (int64_t i = 0; i < m;) {
        int64_t j = i, cls = 0;
        while (j < m && pairs[2 * j] == pairs[2 * i]) cls += pairs[2 * j + 1], j++;
        if (cls >= 2) kept += cls;
        i = j;
    }
    return kept;
}

/* The positive key of row r: entries are positives of an anchor when their keys are equal. A
 * labelled row's key is its label (>= 0); an unlabelled row's, -1 - r, matches only the same row
 * (in another view). Absent entries get INT32_MIN, which matches no anchor. */
static inline int32_t supcon_key(const int32_t *labels, int64_t r) {
    return labels[r] >= 0 ? labels[r] : (int32_t)(-1 - r);
}

/* The pieces of the candidate tile [q0, q0+tw), q = vj*N + c, cut at view boundaries: piece k is
 * view vj[k], rows [cr[k], cr[k]+len[k]), at column off[k] of the tile. Returns the count. */
static int supcon_pieces(int64_t q0, int64_t tw, int64_t n, int vj[], int64_t cr[], int64_t len[], int64_t off[]) {
    int k = 0;
    for (int64_t q = q0; q < q0 + tw; k++) {
        vj[k] = (int)(q / n);
        cr[k] = q - vj[k] * n;
        len[k] = n - cr[k] < q0 + tw - q ? n - cr[k] : q0 + tw - q;
        off[k] = q - q0;
        q += len[k];
    }
    return k;
}

/* The (b, tw) tile of logits of anchors zr (own rows of one view) against candidates [q0, q0+tw). */
static void supcon_logits(float *blk, const hcl_loss_input *in, const float *zr, int64_t b, int D, float s,
                          int64_t q0, int64_t tw) {
    int vj[HCL_MAX_VIEWS + 1];
    int64_t cr[HCL_MAX_VIEWS + 1], len[HCL_MAX_VIEWS + 1], off[HCL_MAX_VIEWS + 1];
    int np = supcon_pieces(q0, tw, in->n, vj, cr, len, off);
    for (int k = 0; k < np; k++)
        matmul_f32(0, 1, (int)b, (int)len[k], D, s, zr, D,
                    in->z[vj[k]] + cr[k] * D, D, 0.0f, blk + off[k], (int)tw);
}

/* SupCon over anchors (view, own row) and candidates (view, any row): the worker's part of the
 * mean over the anchors kept globally; gradient into dz (all N rows of every view), dt into *gl. */
double loss_supcon_forward_backward(hcl_loss_ctx *c, const hcl_loss_input *in, float *const dz[],
                                      double *gl) {
    const hcl_loss_config *cfg = &c->cfg;
    int nv = cfg->nviews, D = cfg->dim;
    int64_t n = in->n, b = in->b, r0 = in->r0, E = nv * n, T = c->tile, nt = (E + T - 1) / T;
    const int32_t *lab = in->labels;
    float s = expf(in->t);
    float *blk = c->scratch, *m = c->scratch + off_rowmax(c), *bias = c->scratch + off_bias(c);
    double *se = c->dscratch, *spos = c->dscratch + c->max_n, *npos = c->dscratch + 2 * c->max_n;
    int32_t *key = c->iscratch + 2 * c->max_n;
    HCL_CHECK(lab, "loss: supcon needs labels");
    for (int v = 0; v < nv; v++)
        HCL_CHECK(in->z[v] && in->z_first[v] == 0, "loss: z[%d] missing or without all rows", v);

    int64_t kept = supcon_kept(c, in);
    if (kept == 0 || b == 0) return 0.0;
    double invm = 1.0 / (double)kept;
    for (int vj = 0; vj < nv; vj++)
        for (int64_t cr = 0; cr < n; cr++) {
            int p = present1(in->mask, nv, cr, vj);
            bias[vj * n + cr] = p ? 0.0f : -INFINITY;
            key[vj * n + cr] = p ? supcon_key(lab, cr) : INT32_MIN;
        }

    double total = 0.0, gls = 0.0;
    for (int vi = 0; vi < nv; vi++) {
        const float *zr = in->z[vi] + r0 * D;
        for (int64_t a = 0; a < b; a++) m[a] = -INFINITY, se[a] = 0.0, spos[a] = 0.0, npos[a] = 0.0;
        /* pass 1: log-sum-exps over the candidates other than the anchor itself, and positives */
        for (int64_t q0 = 0; q0 < E; q0 += T) {
            int64_t tw = E - q0 < T ? E - q0 : T;
            loss_tick(in, 2 * vi, 2 * nv, q0, E);
            supcon_logits(blk, in, zr, b, D, s, q0, tw);   /* row a: anchor (vi, r0+a) */
            for (int64_t a = 0; a < b; a++) {
                int64_t row = r0 + a, js = vi * n + row - q0;   /* the anchor's own column */
                if (!present1(in->mask, nv, row, vi)) continue;
                const float *l = blk + a * tw;
                int32_t ka = supcon_key(lab, row);
                int64_t np = 0;
                double sp = 0.0;
                float tm;
                if (js >= 0 && js < tw) {
                    float t1 = loss_seg_max(l, bias + q0, js), t2 = loss_seg_max(l + js + 1, bias + q0 + js + 1, tw - js - 1);
                    tm = t2 > t1 ? t2 : t1;
                } else {
                    tm = loss_seg_max(l, bias + q0, tw);
                }
                if (tm == -INFINITY) continue;
                online_max(&m[a], &se[a], tm);
                if (js >= 0 && js < tw) {
                    se[a] += loss_seg_sumexp_pos(l, bias + q0, key + q0, js, m[a], ka, &sp, &np);
                    se[a] += loss_seg_sumexp_pos(l + js + 1, bias + q0 + js + 1, key + q0 + js + 1, tw - js - 1, m[a],
                                            ka, &sp, &np);
                } else {
                    se[a] += loss_seg_sumexp_pos(l, bias + q0, key + q0, tw, m[a], ka, &sp, &np);
                }
                spos[a] += sp;
                npos[a] += (double)np;
            }
        }
        for (int64_t a = 0; a < b; a++)   /* absent, or no positive: adds nothing */
            if (npos[a] > 0.0) total += m[a] + log(se[a]) - spos[a] / npos[a];

        /* pass 2: g = (p - [positive] / |P|) / kept */
        for (int64_t q0 = 0; q0 < E; q0 += T) {
            int64_t tw = E - q0 < T ? E - q0 : T;
            loss_tick(in, 2 * vi + 1, 2 * nv, q0, E);
            if (nt > 1) supcon_logits(blk, in, zr, b, D, s, q0, tw);
            for (int64_t a = 0; a < b; a++) {
                int64_t row = r0 + a, js = vi * n + row - q0;
                float *l = blk + a * tw;
                if (npos[a] == 0.0) {
                    if (dz) memset(l, 0, (size_t)tw * sizeof(float));
                    continue;
                }
                int32_t ka = supcon_key(lab, row);
                float ci = (float)(invm / se[a]), cp = (float)(invm / npos[a]);
                if (js >= 0 && js < tw) {
                    gls += loss_seg_grad_pos(l, bias + q0, key + q0, js, m[a], ka, ci, cp);
                    gls += loss_seg_grad_pos(l + js + 1, bias + q0 + js + 1, key + q0 + js + 1, tw - js - 1, m[a], ka,
                                        ci, cp);
                    l[js] = 0.0f;
                } else {
                    gls += loss_seg_grad_pos(l, bias + q0, key + q0, tw, m[a], ka, ci, cp);
                }
            }
            if (!dz) continue;
            int vj[HCL_MAX_VIEWS + 1];
            int64_t cr[HCL_MAX_VIEWS + 1], len[HCL_MAX_VIEWS + 1], off[HCL_MAX_VIEWS + 1];
            int np = supcon_pieces(q0, tw, n, vj, cr, len, off);
            for (int k = 0; k < np; k++) {
                matmul_f32(0, 0, (int)b, D, (int)len[k], s, blk + off[k],
                            (int)tw, in->z[vj[k]] + cr[k] * D, D, 1.0f, dz[vi] + r0 * D, D);
                matmul_f32(1, 0, (int)len[k], D, (int)b, s, blk + off[k],
                            (int)tw, zr, D, 1.0f, dz[vj[k]] + cr[k] * D, D);
            }
        }
    }
    *gl += gls;
    return total * invm;
}

/* HYBRID's cross-entropy of the linear head (K, D) on every present, labelled (own row, view):
 * the worker's part of the mean over all such entries of the gathered batch. Per view, one matmul
 * gives the (b, K) logits, turned in place into lambda * their gradient, and two matmuls push it
 * into dz (own rows) and dhead_w, when dz != NULL. */
double loss_ce_forward_backward(hcl_loss_ctx *c, const hcl_loss_input *in, float *const dz[],
                                  float *dhead_w, float *dhead_b) {
    const hcl_loss_config *cfg = &c->cfg;
    int nv = cfg->nviews, D = cfg->dim, K = cfg->nclasses;
    int64_t n = in->n, r0 = in->r0, b = in->b;
    const int32_t *lab = in->labels;
    const float *W = in->head_w, *hb = in->head_b;
    float *P = c->scratch + c->scratch_len - c->max_b * K;   /* (b, K) */
    HCL_CHECK(lab && W && hb, "loss: hybrid needs labels, head_w and head_b");
    HCL_CHECK(!dz || (dhead_w && dhead_b), "loss: hybrid backward needs dhead_w and dhead_b");

    int64_t m = 0;
    for (int64_t r = 0; r < n; r++)
        if (lab[r] >= 0)
            for (int v = 0; v < nv; v++) m += present1(in->mask, nv, r, v);
    if (m == 0 || b == 0) return 0.0;
    double invm = 1.0 / (double)m, total = 0.0;
    for (int v = 0; v < nv; v++) {
        HCL_CHECK(in->z[v] && (in->z_first[v] == 0 || in->z_first[v] == r0), "loss: z[%d] missing", v);
        const float *zr = in->z[v] + (r0 - in->z_first[v]) * D;
        matmul_f32(0, 1, (int)b, K, D, 1.0f, zr, D, W, D, 0.0f, P, K);
        for (int64_t a = 0; a < b; a++) {
            int64_t r = r0 + a;
            int32_t y = lab[r];
            float *p = P + a * K;
            if (y < 0 || !present1(in->mask, nv, r, v)) {
                memset(p, 0, (size_t)K * sizeof(float));
                continue;
            }
            HCL_CHECK(y < K, "loss: label %d of row %lld out of [0, %d)", (int)y, (long long)r, K);
            float mx = -INFINITY;
            for (int k = 0; k < K; k++) {
                p[k] += hb[k];
                if (p[k] > mx) mx = p[k];
            }
            double se = 0.0;
            for (int k = 0; k < K; k++) se += expf(p[k] - mx);
            double lse = mx + log(se);
            total += lse - p[y];
            for (int k = 0; k < K; k++) {
                double g = cfg->lambda * (exp(p[k] - lse) - (k == y ? 1.0 : 0.0)) * invm;
                p[k] = (float)g;
                if (dz) dhead_b[k] += p[k];
            }
        }
        if (dz) {
            matmul_f32(0, 0, (int)b, D, K, 1.0f, P, K, W, D, 1.0f,
                        dz[v] + (r0 - in->z_first[v]) * D, D);
            matmul_f32(1, 0, K, D, (int)b, 1.0f, P, K, zr, D, 1.0f,
                        dhead_w, D);
        }
    }
    return total * invm;
}
