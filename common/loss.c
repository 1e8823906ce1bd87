/* loss: the contrastive objectives of loss.h, forward and backward for one worker's rows.
 *
 * Every pair term is computed as two "halves" of the same shape: the row term of pair (i, j)
 * takes anchors = own rows of view i against candidates = all rows of view j; the column term
 * is the row term of (j, i), because column c of L = s Z_i Z_j^T is row c of s Z_j Z_i^T.
 * A half never holds its whole (b, N) block of logits: it walks column tiles of T candidates.
 *   pass 1, per tile: one sgemm gives the (b, T) logits; per anchor row the running max and the
 *           sum of exps under it (rescaled when the max grows) give the row log-sum-exps.
 *   pass 2, per tile: the logits again (the same sgemm, bit for bit; skipped when there is a
 *           single tile, whose logits are still in place), turned in place into the gradient
 *           G = coef (softmax - I) in one sweep that also sums G * L, and two sgemms push G back:
 *               dU[R] += s G V[tile]        dV[tile] += s G^T U[R]        dt += sum G * L
 * A pair is done in one go from the (b, N) block of this worker's rows: a tile holds all b rows of
 * T columns, so pass 1 leaves every column's max and sum of exps over this worker's rows; with
 * more than one worker the caller's column reduce (hcl_loss_input.colreduce) combines them over
 * the workers between the passes. G = coef (P + Q - 2 I) then feeds two sgemms per tile instead
 * of four, and each worker computes only its share of the logits. Without a column reduce a
 * sharded pair falls back to two halves (the row term of (i, j) and of (j, i)).
 * SupCon walks, per anchor view, tiles of the (b, V N) block of anchors (view, own row) against
 * candidates (view, any row) the same way; its positives' logits and counts ride in pass 1.
 * Logits are float; exps are a vectorised float exp (Cody-Waite + degree-5 polynomial, at most
 * 1.4 ulp off), max-subtracted, and every sum (of exps, of positives, of G * L) accumulates in
 * double in a fixed order, so a call is bit-reproducible for a given tile. */
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

/* The InfoNCE pair (i, j), i < j, is one of the loss's: CLIP's two views, CORE's pairs with the
 * core view, every pair of FULL; none of SUPCON. */
static int pair_selected(const hcl_loss_config *cfg, int i, int j) {
    switch (contrastive_kind(cfg)) {
    case HCL_LOSS_CLIP:
        return (i == cfg->view_a && j == cfg->view_b) || (i == cfg->view_b && j == cfg->view_a);
    case HCL_LOSS_FULL: return 1;
    case HCL_LOSS_CORE: return i == cfg->core_view || j == cfg->core_view;
    default: return 0;
    }
}

/* Its weight in the mean over pairs: CLIP has one pair, the others pair_weight. */
static double pair_w(const hcl_loss_config *cfg, int i, int j) {
    return contrastive_kind(cfg) == HCL_LOSS_CLIP ? 1.0 : cfg->pair_weight[i][j];
}

/* Scratch layout. Floats: nblk (rows, tile) blocks, row maxes (max_n), the tile's column
 * coefficients or shifts (tile) and a row chunk's column maxes (tile), the candidates' mask bias, 0 or -inf (V max_n for SupCon,
 * else max_n), per pair its row maxes and target logits (max_b each) and column maxes (max_n),
 * HYBRID's (max_b, K) head logits. Doubles: three vectors of max_n (row sums of exps, column
 * sums of exps or SupCon's sums of positive logits, SupCon's positive counts), per pair its row
 * sums (max_b) and column sums (max_n). Ints
 * (SupCon): 2 max_n for the count of anchors kept, V max_n positive keys. */
static int64_t off_rowmax(const hcl_loss_ctx *c) { return c->off_rowmax; }
static int64_t off_colcoef(const hcl_loss_ctx *c) { return c->off_rowmax + c->max_n; }
static int64_t off_bias(const hcl_loss_ctx *c) { return c->off_bias; }

void loss_ctx_init_tile(hcl_loss_ctx *c, const hcl_loss_config *cfg, int64_t max_b, int64_t max_n,
                        int64_t tile) {
    memset(c, 0, sizeof *c);
    HCL_CHECK(cfg->nviews >= 1 && cfg->nviews <= HCL_MAX_VIEWS, "loss: nviews %d out of [1, %d]",
              cfg->nviews, HCL_MAX_VIEWS);
    HCL_CHECK(cfg->dim >= 1, "loss: dim %d", cfg->dim);
    HCL_CHECK(max_n >= 1 && max_b >= 1 && max_b <= max_n, "loss: max_b %lld, max_n %lld",
              (long long)max_b, (long long)max_n);
    HCL_CHECK(tile >= 0, "loss: tile %lld", (long long)tile);
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
    int64_t widest = k == HCL_LOSS_SUPCON ? V * max_n : max_n;   /* candidates of one anchor */
    /* InfoNCE pairs walk (rows, tile) blocks: column tiles of HCL_LOSS_TILE, row chunks that fill
     * HCL_LOSS_TILE_FLOATS; SupCon walks (max_b, tile) blocks, tile cut to fit the same budget. */
    int64_t rows = max_b;
    if (tile == 0 && max_b * widest <= HCL_LOSS_ONE_TILE_FLOATS) tile = widest;
    if (tile == 0 && k != HCL_LOSS_SUPCON) {
        tile = HCL_LOSS_TILE;
        rows = HCL_LOSS_TILE_FLOATS / HCL_LOSS_TILE;
    } else if (tile == 0) {
        tile = HCL_LOSS_TILE_FLOATS / max_b / 16 * 16;
        tile = tile < HCL_LOSS_TILE_MIN ? HCL_LOSS_TILE_MIN : tile > HCL_LOSS_TILE ? HCL_LOSS_TILE : tile;
    }
    if (tile > widest) tile = widest;
    if (rows > max_b) rows = max_b;
    if (k == HCL_LOSS_SUPCON) {
        c->iscratch_len = 2 * max_n + V * max_n;   /* (label, present views) per row; keys */
        c->iscratch = hcl_malloc((size_t)c->iscratch_len * sizeof(int32_t));
    }
    int64_t kbuf = cfg->kind == HCL_LOSS_HYBRID ? max_b * cfg->nclasses : 0;   /* (b, K) head logits */
    c->cfg = *cfg;
    c->max_b = max_b;
    c->max_n = max_n;
    c->tile = tile;
    c->rows = rows;
    /* pairs: each pair's state between its two passes (row maxes, target logits, column maxes;
     * row and column sums), and all pairs' blocks when they are single tiles that fit together */
    int64_t P = k == HCL_LOSS_SUPCON ? 0 : loss_pair_count(cfg);
    c->npairs = P;
    c->nblk = P > 1 && max_b < max_n && tile == widest && rows == max_b && P * max_b * tile <= HCL_LOSS_ONE_TILE_FLOATS
                  ? P : 1;
    c->off_rowmax = c->nblk * rows * tile;
    c->off_bias = off_colcoef(c) + 2 * tile;
    c->off_pair = c->off_bias + (k == HCL_LOSS_SUPCON ? V * max_n : max_n);
    c->scratch_len = c->off_pair + P * (2 * max_b + max_n) + kbuf;
    c->scratch = hcl_floats((size_t)c->scratch_len);
    c->dscratch_len = 3 * max_n + P * (max_b + max_n);
    c->dscratch = hcl_malloc((size_t)c->dscratch_len * sizeof(double));
}

void loss_ctx_init(hcl_loss_ctx *c, const hcl_loss_config *cfg, int64_t max_b, int64_t max_n) {
    loss_ctx_init_tile(c, cfg, max_b, max_n, 0);
}

void loss_ctx_free(hcl_loss_ctx *c) {
    free(c->scratch);
    free(c->dscratch);
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

/* ---- row kernels: 16 lanes of GCC vector extensions ---------------------------------------
 * A row segment of len logits l with a mask bias (0 present, -inf absent): x = l + bias. The last,
 * partial vector is padded with l = 0, bias = -inf (exp 0, never a max) and stored partially. */

/* The kernels are contracted to FMAs (ISO C mode leaves a * b + c unfused), up to pop_options. */
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")

#define VL 16
typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
typedef uint32_t vu __attribute__((vector_size(64)));
typedef float vh __attribute__((vector_size(32)));
typedef double vd __attribute__((vector_size(64)));

static inline vf vf_splat(float x) { return (vf){0} + x; }
static inline vi vi_splat(int32_t x) { return (vi){0} + x; }
static inline vf vf_sel(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }
static inline vf vf_max(vf a, vf b) { return vf_sel(a > b, a, b); }   /* NaN in a is ignored */

static inline vf vf_ld(const float *p, int64_t k, float pad) {
    vf v;
    if (k >= VL) {
        memcpy(&v, p, sizeof v);
    } else {
        v = vf_splat(pad);
        memcpy(&v, p, (size_t)k * sizeof(float));
    }
    return v;
}

static inline vi vi_ld(const int32_t *p, int64_t k, int32_t pad) {
    vi v;
    if (k >= VL) {
        memcpy(&v, p, sizeof v);
    } else {
        v = vi_splat(pad);
        memcpy(&v, p, (size_t)k * sizeof(int32_t));
    }
    return v;
}

static inline void vf_st(float *p, vf v, int64_t k) {
    if (k >= VL)
        memcpy(p, &v, sizeof v);
    else
        memcpy(p, &v, (size_t)k * sizeof(float));
}

/* the two halves of a float vector, widened to double */
static inline vd vd_lo(vf v) {
    vh h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
    return __builtin_convertvector(h, vd);
}

static inline vd vd_hi(vf v) {
    vh h = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    return __builtin_convertvector(h, vd);
}

static inline double vd_sum(vd a, vd b) {
    vd s = a + b;
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

static inline float vf_hmax(vf v) {
    float m = v[0];
    for (int i = 1; i < VL; i++) m = v[i] > m ? v[i] : m;
    return m;
}

/* exp(x) for x <= 0 (x < -86 gives 0, NaN stays NaN; the callers subtract a max, so never x > 0):
 * round x / ln 2 to k, r = x - k ln 2 in two parts, Cephes' degree-5 minimax polynomial for
 * exp(r), times 2^k through the exponent bits. */
static inline vf vf_exp(vf x) {
    vi under = x < -86.0f;
    vf kf = x * 1.44269504088896341f + 12582912.0f;   /* 1.5 * 2^23: round to nearest */
    kf = kf - 12582912.0f;
    vf r = x - kf * 0.693359375f;
    r = r - kf * -2.12194440e-4f;
    vf p = vf_splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    vf e = p * (r * r) + r + 1.0f;
    vu k = (vu)__builtin_convertvector(kf, vi);
    e = (vf)((vu)e + (k << 23));
    return vf_sel(under, vf_splat(0.0f), e);
}

/* max of x over the segment; -inf when every entry is absent */
static float seg_max(const float *l, const float *bias, int64_t len) {
    vf mx = vf_splat(-INFINITY);
    for (int64_t j = 0; j < len; j += VL) {
        int64_t k = len - j;
        mx = vf_max(vf_ld(l + j, k, 0.0f) + vf_ld(bias + j, k, -INFINITY), mx);
    }
    return vf_hmax(mx);
}

/* sum of exp(x - m) */
static double seg_sumexp(const float *l, const float *bias, int64_t len, float m) {
    vd a0 = {0}, a1 = {0};
    for (int64_t j = 0; j < len; j += VL) {
        int64_t k = len - j;
        vf e = vf_exp(vf_ld(l + j, k, 0.0f) + vf_ld(bias + j, k, -INFINITY) - m);
        a0 += vd_lo(e), a1 += vd_hi(e);
    }
    return vd_sum(a0, a1);
}

/* l <- g = ci exp(x - m); returns sum g * l */
static double seg_grad_row(float *l, const float *bias, int64_t len, float m, float ci) {
    vd a0 = {0}, a1 = {0};
    for (int64_t j = 0; j < len; j += VL) {
        int64_t k = len - j;
        vf lv = vf_ld(l + j, k, 0.0f);
        vf g = ci * vf_exp(lv + vf_ld(bias + j, k, -INFINITY) - m);
        vf gl = g * lv;
        a0 += vd_lo(gl), a1 += vd_hi(gl);
        vf_st(l + j, g, k);
    }
    return vd_sum(a0, a1);
}

/* max of x over the segment (returned) and cmx[j] = max(cmx[j], x_j) */
static float seg_max_colmax(const float *l, const float *bias, int64_t len, float *cmx) {
    vf mx = vf_splat(-INFINITY);
    for (int64_t j = 0; j < len; j += VL) {
        int64_t k = len - j;
        vf x = vf_ld(l + j, k, 0.0f) + vf_ld(bias + j, k, -INFINITY);
        mx = vf_max(x, mx);
        vf_st(cmx + j, vf_max(x, vf_ld(cmx + j, k, 0.0f)), k);
    }
    return vf_hmax(mx);
}

/* csum[j] += exp(x_j - cmx[j]) */
static void seg_colsumexp(const float *l, const float *bias, int64_t len, const float *cmx, double *csum) {
    for (int64_t j = 0; j < len; j += VL) {
        int64_t k = len - j;
        vf e = vf_exp(vf_ld(l + j, k, 0.0f) + vf_ld(bias + j, k, -INFINITY) - vf_ld(cmx + j, k, 0.0f));
        vd s[2] = {{0}, {0}};
        if (k >= VL) {
            memcpy(s, csum + j, sizeof s);
            s[0] += vd_lo(e), s[1] += vd_hi(e);
            memcpy(csum + j, s, sizeof s);
        } else {
            memcpy(s, csum + j, (size_t)k * sizeof(double));
            s[0] += vd_lo(e), s[1] += vd_hi(e);
            memcpy(csum + j, s, (size_t)k * sizeof(double));
        }
    }
}

/* l <- g = cr exp(x - m) + cc[j] exp(x - cmx[j]); returns sum g * l */
static double seg_grad_rowcol(float *l, const float *bias, int64_t len, float m, float cr, const float *cmx,
                              const float *cc) {
    vd a0 = {0}, a1 = {0};
    for (int64_t j = 0; j < len; j += VL) {
        int64_t k = len - j;
        vf lv = vf_ld(l + j, k, 0.0f);
        vf x = lv + vf_ld(bias + j, k, -INFINITY);
        vf g = cr * vf_exp(x - m) + vf_ld(cc + j, k, 0.0f) * vf_exp(x - vf_ld(cmx + j, k, 0.0f));
        vf gl = g * lv;
        a0 += vd_lo(gl), a1 += vd_hi(gl);
        vf_st(l + j, g, k);
    }
    return vd_sum(a0, a1);
}

/* sum of exp(x - m) (returned), and over the positives (key == ka) the sum of l and the count */
static double seg_sumexp_pos(const float *l, const float *bias, const int32_t *key, int64_t len, float m,
                             int32_t ka, double *spos, int64_t *npos) {
    vd a0 = {0}, a1 = {0}, p0 = {0}, p1 = {0};
    vi cnt = {0};
    for (int64_t j = 0; j < len; j += VL) {
        int64_t k = len - j;
        vf lv = vf_ld(l + j, k, 0.0f);
        vf e = vf_exp(lv + vf_ld(bias + j, k, -INFINITY) - m);
        a0 += vd_lo(e), a1 += vd_hi(e);
        vi pos = vi_ld(key + j, k, INT32_MIN) == vi_splat(ka);
        vf lp = vf_sel(pos, lv, vf_splat(0.0f));
        p0 += vd_lo(lp), p1 += vd_hi(lp);
        cnt -= pos;
    }
    *spos += vd_sum(p0, p1);
    for (int i = 0; i < VL; i++) *npos += cnt[i];
    return vd_sum(a0, a1);
}

/* l <- g = ci exp(x - m) - (key == ka ? cp : 0); returns sum g * l */
static double seg_grad_pos(float *l, const float *bias, const int32_t *key, int64_t len, float m, int32_t ka,
                           float ci, float cp) {
    vd a0 = {0}, a1 = {0};
    for (int64_t j = 0; j < len; j += VL) {
        int64_t k = len - j;
        vf lv = vf_ld(l + j, k, 0.0f);
        vi pos = vi_ld(key + j, k, INT32_MIN) == vi_splat(ka);
        vf g = ci * vf_exp(lv + vf_ld(bias + j, k, -INFINITY) - m) - vf_sel(pos, vf_splat(cp), vf_splat(0.0f));
        vf gl = g * lv;
        a0 += vd_lo(gl), a1 += vd_hi(gl);
        vf_st(l + j, g, k);
    }
    return vd_sum(a0, a1);
}

#pragma GCC pop_options

/* Fold a tile's (finite) max tm into a row's running max m, rescaling its sum of exps se. */
static inline void online_max(float *m, double *se, float tm) {
    if (tm > *m) {
        *se *= exp((double)*m - (double)tm);
        *m = tm;
    }
}

/* ---- InfoNCE ------------------------------------------------------------------------------ */

/* One direction of a pair's InfoNCE: anchors are the rows [r0, r0+b) of U (view vi), candidates
 * all N rows of V (view vj), only rows present in both views (bias[r] = 0, else -inf). U, V are
 * (N, D). Returns the sum over present anchors a of [-L_aa + lse_c L_ac]; adds coef * (its gradient
 * w.r.t. L) * L into *gl and, when dU != NULL, pushes coef * gradient into dU (own rows) and dV
 * (all N rows). */
static double infonce_half(hcl_loss_ctx *c, const float *U, const float *V, const float *bias, int64_t n,
                           int64_t r0, int64_t b, int D, float s, double coef, float *dU, float *dV, double *gl) {
    int64_t T = c->tile, R = c->rows, nt = (n + T - 1) / T;
    float *blk = c->scratch, *m = c->scratch + off_rowmax(c);
    double *se = c->dscratch;
    double sum = 0.0, gls = 0.0;
    for (int64_t a = 0; a < b; a++) m[a] = -INFINITY, se[a] = 0.0;

    for (int64_t c0 = 0; c0 < n; c0 += T) {          /* pass 1: row log-sum-exps */
        int64_t tw = n - c0 < T ? n - c0 : T;
        for (int64_t a0 = 0; a0 < b; a0 += R) {
            int64_t rb = b - a0 < R ? b - a0 : R;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rb, (int)tw, D, s, U + (r0 + a0) * D, D,
                        V + c0 * D, D, 0.0f, blk, (int)tw);
            for (int64_t a = a0; a < a0 + rb; a++) {
                int64_t row = r0 + a;
                if (bias[row] != 0.0f) continue;
                const float *l = blk + (a - a0) * tw;
                float tm = seg_max(l, bias + c0, tw);
                if (tm == -INFINITY) continue;
                online_max(&m[a], &se[a], tm);
                se[a] += seg_sumexp(l, bias + c0, tw, m[a]);
                if (row >= c0 && row < c0 + tw) sum -= l[row - c0];
            }
        }
    }
    for (int64_t a = 0; a < b; a++)
        if (bias[r0 + a] == 0.0f) sum += m[a] + log(se[a]);   /* se >= 1: the anchor is a candidate */

    for (int64_t c0 = 0; c0 < n; c0 += T) {          /* pass 2: gradient */
        int64_t tw = n - c0 < T ? n - c0 : T;
        for (int64_t a0 = 0; a0 < b; a0 += R) {
            int64_t rb = b - a0 < R ? b - a0 : R;
            const float *Ur = U + (r0 + a0) * D;
            if (nt > 1 || b > R)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rb, (int)tw, D, s, Ur, D, V + c0 * D, D,
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
                gls += seg_grad_row(l, bias + c0, tw, m[a], (float)(coef * inv));
                if (row >= c0 && row < c0 + tw) {     /* the target: coef (p - 1), in double */
                    float g = (float)(coef * (exp((double)lrow - m[a]) * inv - 1.0));
                    gls += ((double)g - l[row - c0]) * lrow;
                    l[row - c0] = g;
                }
            }
            if (dU) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rb, D, (int)tw, s, blk, (int)tw,
                            V + c0 * D, D, 1.0f, dU + (r0 + a0) * D, D);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)tw, D, (int)rb, s, blk, (int)tw, Ur, D,
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
 * G = coef (P + Q - 2 I) of the block feeds two sgemms per tile: dU (own rows) and dV (all N).
 * U and dU hold rows from ufirst on (in->z_first). */
typedef struct {
    const float *U, *V;
    int64_t ufirst;
    float *dU, *dV;
    double coef;
    float *blk;                 /* its (b, tile) block: kept from pass 1 when it is a single tile */
    float *m, *dg, *cm;         /* row maxes, target logits (b); column maxes (n) */
    double *se, *cs;            /* row sums (b), column sums (n) */
} infonce_pair;

/* The (rb, tw) logits of own rows [a0, a0+rb) against columns [c0, c0+tw), into q->blk. */
static void infonce_logits(const hcl_loss_input *in, const infonce_pair *q, int D, float s, int64_t a0, int64_t rb,
                           int64_t c0, int64_t tw) {
    if (rb == 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rb, (int)tw, D, s,
                q->U + (in->r0 + a0 - q->ufirst) * D, D, q->V + c0 * D, D, 0.0f, q->blk, (int)tw);
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
        for (int64_t a0 = 0; a0 < b; a0 += R) {
            int64_t rb = b - a0 < R ? b - a0 : R;
            infonce_logits(in, q, D, s, a0, rb, c0, tw);
            const float *blk = q->blk;
            for (int64_t j = 0; j < tw; j++) cmt[j] = -INFINITY;
            for (int64_t a = a0; a < a0 + rb; a++) {
                int64_t row = r0 + a;
                if (bias[row] != 0.0f) continue;
                const float *l = blk + (a - a0) * tw;
                float tm = seg_max_colmax(l, bias + c0, tw, cmt);
                if (tm == -INFINITY) continue;
                online_max(&m[a], &se[a], tm);
                se[a] += seg_sumexp(l, bias + c0, tw, m[a]);
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
                if (bias[r0 + a] == 0.0f) seg_colsumexp(blk + (a - a0) * tw, bias + c0, tw, sh, cs + c0);
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
    float *cc = c->scratch + off_colcoef(c), *blk = q->blk;
    double coef = q->coef, gls = 0.0;
    for (int64_t c0 = 0; c0 < n; c0 += T) {
        int64_t tw = n - c0 < T ? n - c0 : T;
        for (int64_t j = 0; j < tw; j++) cc[j] = bias[c0 + j] == 0.0f ? (float)(coef / cs[c0 + j]) : 0.0f;
        for (int64_t a0 = 0; a0 < b; a0 += R) {
            int64_t rb = b - a0 < R ? b - a0 : R;
            const float *Ur = q->U + (r0 + a0 - q->ufirst) * D;
            if (recompute) infonce_logits(in, q, D, s, a0, rb, c0, tw);
            for (int64_t a = a0; a < a0 + rb; a++) {
                int64_t row = r0 + a;
                float *l = blk + (a - a0) * tw;
                if (bias[row] != 0.0f) {
                    if (q->dU) memset(l, 0, (size_t)tw * sizeof(float));
                    continue;
                }
                int diag = row >= c0 && row < c0 + tw;
                float laa = diag ? l[row - c0] : 0.0f;
                gls += seg_grad_rowcol(l, bias + c0, tw, m[a], (float)(coef / se[a]), cm + c0, cc);
                if (diag) {                               /* the target: coef (p + q - 2), in double */
                    double p = exp((double)laa - m[a]) / se[a], qq = exp((double)laa - cm[row]) / cs[row];
                    float g = (float)(coef * (p + qq - 2.0));
                    gls += ((double)g - l[row - c0]) * laa;
                    l[row - c0] = g;
                }
            }
            if (q->dU && rb > 0) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rb, D, (int)tw, s, blk, (int)tw,
                            q->V + c0 * D, D, 1.0f, q->dU + (r0 + a0 - q->ufirst) * D, D);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)tw, D, (int)rb, s, blk, (int)tw, Ur, D,
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
static double pairs_forward_backward(hcl_loss_ctx *c, const hcl_loss_input *in, float *const dz[],
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
            if (!pair_selected(cfg, i, j)) continue;
            int64_t k = 0;
            for (int64_t r = 0; r < n; r++) k += present2(in->mask, nv, r, i, j);
            cnt[i][j] = k;
            out->pair_used[i][j] = k > 0;
            if (k > 0) wsum += pair_w(cfg, i, j);
        }

    /* The pairs taking part, in order; the two halves when sharded without a column reduce. */
    int pi[HCL_MAX_VIEWS * HCL_MAX_VIEWS], pj[HCL_MAX_VIEWS * HCL_MAX_VIEWS], np = 0;
    double pwn[HCL_MAX_VIEWS * HCL_MAX_VIEWS], pinv[HCL_MAX_VIEWS * HCL_MAX_VIEWS];
    for (int i = 0; i < nv; i++)
        for (int j = i + 1; j < nv; j++) {
            if (!pair_selected(cfg, i, j) || cnt[i][j] == 0) continue;
            HCL_CHECK(in->z[i] && in->z[j], "loss: z[%d] or z[%d] missing", i, j);
            HCL_CHECK(in->z_first[j] == 0 && (in->z_first[i] == 0 || in->z_first[i] == in->r0),
                      "loss: pair (%d, %d) with views holding rows from %lld, %lld", i, j,
                      (long long)in->z_first[i], (long long)in->z_first[j]);
            double w = pair_w(cfg, i, j);
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
            double sum = infonce_half(c, in->z[i], in->z[j], bias, n, in->r0, in->b, D, s, coef, di, dj, &gl);
            sum += infonce_half(c, in->z[j], in->z[i], bias, n, in->r0, in->b, D, s, coef, dj, di, &gl);
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
                              .m = pf + k * 2 * c->max_b, .dg = pf + k * 2 * c->max_b + c->max_b,
                              .cm = pf + np * 2 * c->max_b + k * n,
                              .se = pd + k * c->max_b, .cs = pd + np * c->max_b + k * n};
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

/* ---- SupCon ------------------------------------------------------------------------------- */

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
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)b, (int)len[k], D, s, zr, D,
                    in->z[vj[k]] + cr[k] * D, D, 0.0f, blk + off[k], (int)tw);
}

/* SupCon over anchors (view, own row) and candidates (view, any row): the worker's part of the
 * mean over the anchors kept globally; gradient into dz (all N rows of every view), dt into *gl. */
static double supcon_forward_backward(hcl_loss_ctx *c, const hcl_loss_input *in, float *const dz[],
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
                    float t1 = seg_max(l, bias + q0, js), t2 = seg_max(l + js + 1, bias + q0 + js + 1, tw - js - 1);
                    tm = t2 > t1 ? t2 : t1;
                } else {
                    tm = seg_max(l, bias + q0, tw);
                }
                if (tm == -INFINITY) continue;
                online_max(&m[a], &se[a], tm);
                if (js >= 0 && js < tw) {
                    se[a] += seg_sumexp_pos(l, bias + q0, key + q0, js, m[a], ka, &sp, &np);
                    se[a] += seg_sumexp_pos(l + js + 1, bias + q0 + js + 1, key + q0 + js + 1, tw - js - 1, m[a],
                                            ka, &sp, &np);
                } else {
                    se[a] += seg_sumexp_pos(l, bias + q0, key + q0, tw, m[a], ka, &sp, &np);
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
                    gls += seg_grad_pos(l, bias + q0, key + q0, js, m[a], ka, ci, cp);
                    gls += seg_grad_pos(l + js + 1, bias + q0 + js + 1, key + q0 + js + 1, tw - js - 1, m[a], ka,
                                        ci, cp);
                    l[js] = 0.0f;
                } else {
                    gls += seg_grad_pos(l, bias + q0, key + q0, tw, m[a], ka, ci, cp);
                }
            }
            if (!dz) continue;
            int vj[HCL_MAX_VIEWS + 1];
            int64_t cr[HCL_MAX_VIEWS + 1], len[HCL_MAX_VIEWS + 1], off[HCL_MAX_VIEWS + 1];
            int np = supcon_pieces(q0, tw, n, vj, cr, len, off);
            for (int k = 0; k < np; k++) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)b, D, (int)len[k], s, blk + off[k],
                            (int)tw, in->z[vj[k]] + cr[k] * D, D, 1.0f, dz[vi] + r0 * D, D);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)len[k], D, (int)b, s, blk + off[k],
                            (int)tw, zr, D, 1.0f, dz[vj[k]] + cr[k] * D, D);
            }
        }
    }
    *gl += gls;
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
        HCL_CHECK(in->z[v] && (in->z_first[v] == 0 || in->z_first[v] == r0), "loss: z[%d] missing", v);
        const float *zr = in->z[v] + (r0 - in->z_first[v]) * D;
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
                        dz[v] + (r0 - in->z_first[v]) * D, D);
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
        base = pairs_forward_backward(c, in, dz, out);
    }
    out->loss = base;
    if (cfg->kind == HCL_LOSS_HYBRID) {
        out->ce = ce_forward_backward(c, in, dz, dhead_w, dhead_b);
        out->loss += cfg->lambda * out->ce;
    }
}

int loss_pair_count(const hcl_loss_config *cfg) {
    int p = 0;
    for (int i = 0; i < cfg->nviews; i++)
        for (int j = i + 1; j < cfg->nviews; j++) p += pair_selected(cfg, i, j);
    return p;
}

void loss_gathered_views(const hcl_loss_config *cfg, int need[HCL_MAX_VIEWS]) {
    int nv = cfg->nviews, supcon = contrastive_kind(cfg) == HCL_LOSS_SUPCON;
    for (int v = 0; v < HCL_MAX_VIEWS; v++) need[v] = v < nv && supcon;
    for (int i = 0; i < nv; i++)
        for (int j = i + 1; j < nv; j++)
            if (pair_selected(cfg, i, j)) need[j] = 1;   /* a pair reads all rows of view j */
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
