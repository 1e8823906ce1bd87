/* loss_kernels: the row kernels of the loss (loss_private.h), 16 lanes of GCC vector extensions.
 * Logits are float; exps are a vectorised float exp (Cody-Waite + degree-5 polynomial, at most
 * 1.4 ulp off), max-subtracted, and every sum (of exps, of positives, of G * L) accumulates in
 * double in a fixed order. A row segment of len logits l with a mask bias (0 present, -inf
 * absent): x = l + bias. The last, partial vector is padded with l = 0, bias = -inf (exp 0, never
 * a max) and stored partially. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "loss_private.h"
#include "vec.h"

/* The kernels are contracted to FMAs (ISO C mode leaves a * b + c unfused), up to pop_options. */
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")

static inline vf vf_sel(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }
static inline vf vf_max(vf a, vf b) { return vf_sel(a > b, a, b); }   /* NaN in a is ignored */

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
float loss_seg_max(const float *l, const float *bias, int64_t len) {
    vf mx = vf_splat(-INFINITY);
    for (int64_t j = 0; j < len; j += VL) {
        int64_t k = len - j;
        mx = vf_max(vf_ld(l + j, k, 0.0f) + vf_ld(bias + j, k, -INFINITY), mx);
    }
    return vf_hmax(mx);
}

/* sum of exp(x - m) */
double loss_seg_sumexp(const float *l, const float *bias, int64_t len, float m) {
    vd a0 = {0}, a1 = {0};
    for (int64_t j = 0; j < len; j += VL) {
        int64_t k = len - j;
        vf e = vf_exp(vf_ld(l + j, k, 0.0f) + vf_ld(bias + j, k, -INFINITY) - m);
        a0 += vd_lo(e), a1 += vd_hi(e);
    }
    return vd_sum(a0, a1);
}

/* l <- g = ci exp(x - m); returns sum g * l */
double loss_seg_grad_row(float *l, const float *bias, int64_t len, float m, float ci) {
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
float loss_seg_max_colmax(const float *l, const float *bias, int64_t len, float *cmx) {
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
void loss_seg_colsumexp(const float *l, const float *bias, int64_t len, const float *cmx, double *csum) {
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
double loss_seg_grad_rowcol(float *l, const float *bias, int64_t len, float m, float cr, const float *cmx,
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
double loss_seg_sumexp_pos(const float *l, const float *bias, const int32_t *key, int64_t len, float m,
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
double loss_seg_grad_pos(float *l, const float *bias, const int32_t *key, int64_t len, float m, int32_t ka,
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
