/* loss: the contrastive objectives of loss.h, forward and backward for one worker's rows.
 *
 * Every pair term is computed as two "halves" of the same shape: the row term of pair (i, j)
 * takes anchors = own rows of view i against candidates = all rows of view j; the column term
 * is the row term of (j, i), because column c of L = s Z_i Z_j^T is row c of s Z_j Z_i^T.
 * Each half needs one (b, N) block of logits, computed by one sgemm, turned in place into its
 * gradient G, and two sgemms push G back into the (N, D) gradient buffers:
 *     dU[R] += s G V        dV += s G^T U[R]        dt += sum G * L
 * SupCon uses one (V b, V N) block (anchors (view, own row) x candidates (view, any row)).
 * Logits are float, log-sum-exps subtract the max and accumulate in double. */
#include "loss.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

void loss_config_default(hcl_loss_config *c, int nviews, int dim) {
    memset(c, 0, sizeof *c);
    c->kind = HCL_LOSS_FULL;
    c->base = HCL_LOSS_FULL;
    c->nviews = nviews;
    c->dim = dim;
    c->view_a = 0;
    c->view_b = 1;
    c->core_view = 0;
    for (int i = 0; i < HCL_MAX_VIEWS; i++)
        for (int j = 0; j < HCL_MAX_VIEWS; j++) c->pair_weight[i][j] = 1.0f;
    c->lambda = 1.0f;
    c->nclasses = 0;
}

static enum hcl_loss_kind contrastive_kind(const hcl_loss_config *cfg) {
    return cfg->kind == HCL_LOSS_HYBRID ? cfg->base : cfg->kind;
}

void loss_ctx_init(hcl_loss_ctx *c, const hcl_loss_config *cfg, int64_t max_b, int64_t max_n) {
    memset(c, 0, sizeof *c);
    HCL_CHECK(cfg->nviews >= 1 && cfg->nviews <= HCL_MAX_VIEWS, "loss: nviews %d out of [1, %d]",
              cfg->nviews, HCL_MAX_VIEWS);
    HCL_CHECK(cfg->dim >= 1, "loss: dim %d", cfg->dim);
    HCL_CHECK(max_n >= 1 && max_b >= 1 && max_b <= max_n, "loss: max_b %lld, max_n %lld",
              (long long)max_b, (long long)max_n);
    enum hcl_loss_kind k = contrastive_kind(cfg);
    HCL_CHECK(k == HCL_LOSS_CLIP || k == HCL_LOSS_FULL || k == HCL_LOSS_CORE || k == HCL_LOSS_SUPCON,
              "loss: bad contrastive kind %d (kind %d, base %d)", (int)k, (int)cfg->kind, (int)cfg->base);
    if (k == HCL_LOSS_CLIP)
        HCL_CHECK(cfg->view_a >= 0 && cfg->view_a < cfg->nviews && cfg->view_b >= 0 &&
                  cfg->view_b < cfg->nviews && cfg->view_a != cfg->view_b,
                  "loss: clip views %d, %d with %d views", cfg->view_a, cfg->view_b, cfg->nviews);
    if (k == HCL_LOSS_CORE)
        HCL_CHECK(cfg->core_view >= 0 && cfg->core_view < cfg->nviews, "loss: core view %d with %d views",
                  cfg->core_view, cfg->nviews);
    if (cfg->kind == HCL_LOSS_HYBRID) HCL_CHECK(cfg->nclasses >= 1, "loss: hybrid needs nclasses >= 1");
    for (int i = 0; i < cfg->nviews; i++)
        for (int j = i + 1; j < cfg->nviews; j++)
            HCL_CHECK(cfg->pair_weight[i][j] >= 0.0f, "loss: pair weight [%d][%d] = %g < 0", i, j,
                      (double)cfg->pair_weight[i][j]);

    int64_t V = cfg->nviews;
    int64_t blk, row;
    if (k == HCL_LOSS_SUPCON) {
        blk = V * max_b * V * max_n;    /* (V b, V N) logits / gradient */
        row = V * max_n;                /* exps of one anchor row */
        c->iscratch_len = 2 * max_n;    /* (label, present views) per row, sorted */
        c->iscratch = hcl_malloc((size_t)c->iscratch_len * sizeof(int32_t));
    } else {
        blk = max_b * max_n;            /* (b, N) logits / gradient of one half */
        row = max_n;
    }
    int64_t kbuf = cfg->kind == HCL_LOSS_HYBRID ? max_b * cfg->nclasses : 0;   /* (b, K) head logits */
    c->cfg = *cfg;
    c->max_b = max_b;
    c->max_n = max_n;
    c->scratch_len = blk + row + kbuf;
    c->scratch = hcl_floats((size_t)c->scratch_len);
}

void loss_ctx_free(hcl_loss_ctx *c) {
    free(c->scratch);
    free(c->iscratch);
    memset(c, 0, sizeof *c);
}

/* Row `r` is present in view v. */
static inline int present1(const uint8_t *mask, int nv, int64_t r, int v) {
    return !mask || mask[r * nv + v];
}

static inline int present2(const uint8_t *mask, int nv, int64_t r, int vi, int vj) {
    return !mask || (mask[r * nv + vi] && mask[r * nv + vj]);
}

/* One direction of a pair's InfoNCE: anchors are the rows [r0, r0+b) of U (view vi), candidates
 * all N rows of V (view vj), only rows present in both views. U, V are (N, D); blk (b, N) and
 * ebuf (N) are scratch. Returns the sum over present anchors a of [-L_aa + lse_c L_ac]; adds
 * coef * (its gradient w.r.t. L) * L into *gl and, when dU != NULL, pushes coef * gradient into
 * dU (own rows) and dV (all N rows). */
static double infonce_half(float *blk, float *ebuf, const float *U, const float *V, const uint8_t *mask,
                           int nv, int vi, int vj, int64_t n, int64_t r0, int64_t b, int D, float s,
                           double coef, float *dU, float *dV, double *gl) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)b, (int)n, D, s, U + r0 * D, D, V, D,
                0.0f, blk, (int)n);
    double sum = 0.0, gls = 0.0;
    for (int64_t a = 0; a < b; a++) {
        int64_t row = r0 + a;
        float *l = blk + a * n;
        if (!present2(mask, nv, row, vi, vj)) {
            memset(l, 0, (size_t)n * sizeof(float));
            continue;
        }
        float mx = -INFINITY;
        for (int64_t c = 0; c < n; c++)
            if (present2(mask, nv, c, vi, vj) && l[c] > mx) mx = l[c];
        double se = 0.0;
        for (int64_t c = 0; c < n; c++) {
            float e = present2(mask, nv, c, vi, vj) ? expf(l[c] - mx) : 0.0f;
            ebuf[c] = e;
            se += e;
        }
        /* se >= 1: the anchor itself is a present candidate and the max term is exp(0) */
        double lse = mx + log(se), inv = 1.0 / se;
        sum += lse - l[row];
        for (int64_t c = 0; c < n; c++) {
            double g = coef * (ebuf[c] * inv - (c == row ? 1.0 : 0.0));
            gls += g * l[c];
            l[c] = (float)g;
        }
    }
    *gl += gls;
    if (dU) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)b, D, (int)n, s, blk, (int)n, V, D,
                    1.0f, dU + r0 * D, D);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, D, (int)b, s, blk, (int)n,
                    U + r0 * D, D, 1.0f, dV, D);
    }
    return sum;
}

/* CLIP / FULL / CORE: the weighted mean over the selected pairs of symmetric InfoNCE. Returns the
 * worker's part of the total and fills pair_loss, pair_used. */
static double pairs_forward_backward(hcl_loss_ctx *c, const hcl_loss_input *in, float *const dz[],
                                     enum hcl_loss_kind kind, hcl_loss_result *out) {
    const hcl_loss_config *cfg = &c->cfg;
    int nv = cfg->nviews, D = cfg->dim;
    int64_t n = in->n;
    float s = expf(in->t);
    float *blk = c->scratch, *ebuf = c->scratch + c->max_b * c->max_n;

    int sel[HCL_MAX_VIEWS][HCL_MAX_VIEWS];
    int64_t cnt[HCL_MAX_VIEWS][HCL_MAX_VIEWS];
    memset(sel, 0, sizeof sel);
    if (kind == HCL_LOSS_CLIP) {
        int i = cfg->view_a < cfg->view_b ? cfg->view_a : cfg->view_b;
        int j = cfg->view_a < cfg->view_b ? cfg->view_b : cfg->view_a;
        sel[i][j] = 1;
    } else {
        for (int i = 0; i < nv; i++)
            for (int j = i + 1; j < nv; j++)
                sel[i][j] = kind == HCL_LOSS_FULL || i == cfg->core_view || j == cfg->core_view;
    }
    double wsum = 0.0;
    for (int i = 0; i < nv; i++)
        for (int j = i + 1; j < nv; j++) {
            if (!sel[i][j]) continue;
            int64_t k = 0;
            for (int64_t r = 0; r < n; r++) k += present2(in->mask, nv, r, i, j);
            cnt[i][j] = k;
            out->pair_used[i][j] = k > 0;
            if (k > 0) wsum += kind == HCL_LOSS_CLIP ? 1.0 : cfg->pair_weight[i][j];
        }

    double total = 0.0, gl = 0.0;
    for (int i = 0; i < nv; i++)
        for (int j = i + 1; j < nv; j++) {
            if (!sel[i][j] || cnt[i][j] == 0) continue;
            double w = kind == HCL_LOSS_CLIP ? 1.0 : cfg->pair_weight[i][j];
            double wn = wsum > 0.0 ? w / wsum : 0.0;
            double inv2n = 1.0 / (2.0 * (double)cnt[i][j]);
            double coef = wn * inv2n;
            HCL_CHECK(in->z[i] && in->z[j], "loss: z[%d] or z[%d] missing", i, j);
            float *di = dz ? dz[i] : NULL, *dj = dz ? dz[j] : NULL;
            double rows = infonce_half(blk, ebuf, in->z[i], in->z[j], in->mask, nv, i, j, n, in->r0, in->b,
                                       D, s, coef, di, dj, &gl);
            double cols = infonce_half(blk, ebuf, in->z[j], in->z[i], in->mask, nv, i, j, n, in->r0, in->b,
                                       D, s, coef, dj, di, &gl);
            out->pair_loss[i][j] = (rows + cols) * inv2n;
            total += wn * out->pair_loss[i][j];
        }
    out->dt += gl;
    return total;
}

static int cmp_label_pair(const void *pa, const void *pb) {
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    return (a > b) - (a < b);
}

/* Entry (row c) is a positive of an anchor of row a: same label, or, for an unlabelled anchor
 * (label < 0), the same row in another view. */
static inline int supcon_positive(const int32_t *labels, int64_t a, int64_t c) {
    return labels[a] >= 0 ? labels[c] == labels[a] : c == a;
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

/* SupCon over anchors (view, own row) and candidates (view, any row): the worker's part of the
 * mean over the anchors kept globally; gradient into dz (all N rows of every view), dt into *gl. */
static double supcon_forward_backward(hcl_loss_ctx *c, const hcl_loss_input *in, float *const dz[],
                                      double *gl) {
    const hcl_loss_config *cfg = &c->cfg;
    int nv = cfg->nviews, D = cfg->dim;
    int64_t n = in->n, b = in->b, r0 = in->r0, E = nv * n;
    const int32_t *lab = in->labels;
    float s = expf(in->t);
    float *S = c->scratch, *ebuf = c->scratch + nv * c->max_b * nv * c->max_n;
    HCL_CHECK(lab, "loss: supcon needs labels");
    for (int v = 0; v < nv; v++) HCL_CHECK(in->z[v], "loss: z[%d] missing", v);

    int64_t kept = supcon_kept(c, in);
    if (kept == 0 || b == 0) return 0.0;
    double invm = 1.0 / (double)kept;

    /* S is (V b, V N): row vi*b + a is anchor (vi, r0+a), column vj*N + c is candidate (vj, c) */
    for (int vi = 0; vi < nv; vi++)
        for (int vj = 0; vj < nv; vj++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)b, (int)n, D, s, in->z[vi] + r0 * D, D,
                        in->z[vj], D, 0.0f, S + (vi * b) * E + vj * n, (int)E);

    /* anchor (vi, row) against entry q = vj*N + cr, a candidate when present and not the anchor */
    double total = 0.0, gls = 0.0;
    for (int vi = 0; vi < nv; vi++)
        for (int64_t a = 0; a < b; a++) {
            int64_t row = r0 + a, self = vi * n + row;
            float *l = S + (vi * b + a) * E;
            int64_t npos = 0;
            float mx = -INFINITY;
            if (present1(in->mask, nv, row, vi))
                for (int vj = 0; vj < nv; vj++)
                    for (int64_t cr = 0, q = vj * n; cr < n; cr++, q++) {
                        if (q == self || !present1(in->mask, nv, cr, vj)) continue;
                        if (l[q] > mx) mx = l[q];
                        npos += supcon_positive(lab, row, cr);
                    }
            if (npos == 0) {     /* absent, or no positive: adds nothing */
                memset(l, 0, (size_t)E * sizeof(float));
                continue;
            }
            double se = 0.0, spos = 0.0;
            for (int vj = 0; vj < nv; vj++)
                for (int64_t cr = 0, q = vj * n; cr < n; cr++, q++) {
                    float e = 0.0f;
                    if (q != self && present1(in->mask, nv, cr, vj)) {
                        e = expf(l[q] - mx);
                        if (supcon_positive(lab, row, cr)) spos += l[q];
                    }
                    ebuf[q] = e;
                    se += e;
                }
            double lse = mx + log(se), inv = 1.0 / se, invp = 1.0 / (double)npos;
            total += lse - spos * invp;
            for (int vj = 0; vj < nv; vj++)
                for (int64_t cr = 0, q = vj * n; cr < n; cr++, q++) {
                    double g = 0.0;
                    if (q != self && present1(in->mask, nv, cr, vj))
                        g = (ebuf[q] * inv - (supcon_positive(lab, row, cr) ? invp : 0.0)) * invm;
                    gls += g * l[q];
                    l[q] = (float)g;
                }
        }
    *gl += gls;
    if (dz) {
        for (int vi = 0; vi < nv; vi++)
            for (int vj = 0; vj < nv; vj++) {
                const float *G = S + (vi * b) * E + vj * n;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)b, D, (int)n, s, G, (int)E,
                            in->z[vj], D, 1.0f, dz[vi] + r0 * D, D);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, D, (int)b, s, G, (int)E,
                            in->z[vi] + r0 * D, D, 1.0f, dz[vj], D);
            }
    }
    return total * invm;
}

/* HYBRID's cross-entropy of the linear head (K, D) on every present, labelled (own row, view):
 * the worker's part of the mean over all such entries of the gathered batch. Per view, one sgemm
 * gives the (b, K) logits, turned in place into lambda * their gradient, and two sgemms push it
 * into dz (own rows) and dhead_w, when dz != NULL. */
static double ce_forward_backward(hcl_loss_ctx *c, const hcl_loss_input *in, float *const dz[],
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
        HCL_CHECK(in->z[v], "loss: z[%d] missing", v);
        const float *zr = in->z[v] + r0 * D;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)b, K, D, 1.0f, zr, D, W, D, 0.0f, P, K);
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
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)b, D, K, 1.0f, P, K, W, D, 1.0f,
                        dz[v] + r0 * D, D);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, D, (int)b, 1.0f, P, K, zr, D, 1.0f,
                        dhead_w, D);
        }
    }
    return total * invm;
}

void loss_forward_backward(hcl_loss_ctx *c, const hcl_loss_input *in, float *const dz[],
                           float *dhead_w, float *dhead_b, hcl_loss_result *out) {
    const hcl_loss_config *cfg = &c->cfg;
    HCL_CHECK(in->n >= 1 && in->n <= c->max_n, "loss: n %lld out of [1, %lld]", (long long)in->n,
              (long long)c->max_n);
    HCL_CHECK(in->b >= 0 && in->b <= c->max_b && in->r0 >= 0 && in->r0 + in->b <= in->n,
              "loss: rows [%lld, +%lld) of %lld (max_b %lld)", (long long)in->r0, (long long)in->b,
              (long long)in->n, (long long)c->max_b);
    memset(out, 0, sizeof *out);
    enum hcl_loss_kind k = contrastive_kind(cfg);
    double base;
    if (k == HCL_LOSS_SUPCON) {
        out->supcon = supcon_forward_backward(c, in, dz, &out->dt);
        base = out->supcon;
    } else {
        base = pairs_forward_backward(c, in, dz, k, out);
    }
    out->loss = base;
    if (cfg->kind == HCL_LOSS_HYBRID) {
        out->ce = ce_forward_backward(c, in, dz, dhead_w, dhead_b);
        out->loss += cfg->lambda * out->ce;
    }
}

static const char *const kind_names[] = {
    [HCL_LOSS_CLIP] = "clip", [HCL_LOSS_FULL] = "full", [HCL_LOSS_CORE] = "core",
    [HCL_LOSS_SUPCON] = "supcon", [HCL_LOSS_HYBRID] = "hybrid",
};

const char *loss_kind_name(enum hcl_loss_kind k) {
    if ((int)k < 0 || (size_t)k >= sizeof kind_names / sizeof kind_names[0]) return "?";
    return kind_names[k];
}

int loss_kind_parse(const char *s, enum hcl_loss_kind *k) {
    for (size_t i = 0; i < sizeof kind_names / sizeof kind_names[0]; i++)
        if (s && strcmp(s, kind_names[i]) == 0) {
            *k = (enum hcl_loss_kind)i;
            return 0;
        }
    return -1;
}
