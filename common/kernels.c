/* kernels: see kernels.h. Plain loops over flat arrays; matmuls through cblas_sgemm. */
#include "kernels.h"

#include <math.h>
#include <stddef.h>

#include <cblas.h>

/* Declared by OpenBLAS's cblas.h; repeated so another CBLAS header still compiles. */
extern void openblas_set_num_threads(int num_threads);
extern int openblas_get_num_threads(void);

#define L2NORM_EPS 1e-12f
#define LAYERNORM_EPS 1e-5

/* ---- linear ---------------------------------------------------------------------------------- */

void linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int B, int C, int OC) {
    // out is (B,OC), inp is (B,C), weight is (OC,C), bias is (OC) or NULL
    if (B <= 0 || OC <= 0) return;
    float beta = 0.0f;
    if (bias) {
        for (int b = 0; b < B; b++) {
            float *restrict o = out + (size_t)b * OC;
            for (int j = 0; j < OC; j++) o[j] = bias[j];
        }
        beta = 1.0f;
    }
    // out = inp @ weight^T (+ out)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, OC, C,
                1.0f, inp, C, weight, C, beta, out, OC);
}

void linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int B, int C, int OC) {
    // dinp is (B,C) or NULL, dweight is (OC,C), dbias is (OC) or NULL, dout is (B,OC),
    // inp is (B,C), weight is (OC,C)
    if (B <= 0) return;
    if (dinp) {
        // dinp = dout @ weight (overwrite)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, C, OC,
                    1.0f, dout, OC, weight, C, 0.0f, dinp, C);
    }
    // dweight += dout^T @ inp
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, B,
                1.0f, dout, OC, inp, C, 1.0f, dweight, C);
    if (dbias) {
        float *restrict db = dbias;
        for (int b = 0; b < B; b++) {
            const float *restrict d = dout + (size_t)b * OC;
            for (int o = 0; o < OC; o++) db[o] += d[o];
        }
    }
}

/* ---- relu ------------------------------------------------------------------------------------ */

void relu_forward(float *out, const float *inp, int64_t n) {
    // out, inp are (n); may alias
    for (int64_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void relu_backward(float *dinp, const float *out, const float *dout, int64_t n) {
    // dinp, out, dout are (n); dinp may alias dout
    for (int64_t i = 0; i < n; i++) dinp[i] = out[i] > 0.0f ? dout[i] : 0.0f;
}

/* ---- gelu (exact erf form) ------------------------------------------------------------------- */

#define GELU_INV_SQRT2 0.70710678118654752440f
#define GELU_INV_SQRT_2PI 0.39894228040143267794f

void gelu_forward(float *out, const float *inp, int64_t n) {
    // out, inp are (n); out = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + erff(x * GELU_INV_SQRT2));
    }
}

void gelu_backward(float *dinp, const float *inp, const float *dout, int64_t n) {
    // dinp, inp, dout are (n); dinp may alias dout
    // d/dx [x Phi(x)] = Phi(x) + x phi(x)
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i];
        float cdf = 0.5f * (1.0f + erff(x * GELU_INV_SQRT2));
        float pdf = GELU_INV_SQRT_2PI * expf(-0.5f * x * x);
        dinp[i] = dout[i] * (cdf + x * pdf);
    }
}

/* ---- layernorm ------------------------------------------------------------------------------- */

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int B, int C) {
    // out is (B,C), mean and rstd are (B), inp is (B,C), weight and bias are (C)
    for (int b = 0; b < B; b++) {
        const float *restrict x = inp + (size_t)b * C;
        float *restrict o = out + (size_t)b * C;
        double s = 0.0;
        for (int i = 0; i < C; i++) s += x[i];
        double m = s / C;
        double v = 0.0;
        for (int i = 0; i < C; i++) {
            double d = x[i] - m;
            v += d * d;
        }
        v /= C;  // biased variance, as PyTorch
        float mf = (float)m;
        float rs = (float)(1.0 / sqrt(v + LAYERNORM_EPS));
        for (int i = 0; i < C; i++) o[i] = (x[i] - mf) * rs * weight[i] + bias[i];
        mean[b] = mf;
        rstd[b] = rs;
    }
}

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean,
                        const float *rstd, int B, int C) {
    // dinp is (B,C), dweight and dbias are (C) (accumulate), dout and inp are (B,C),
    // weight is (C), mean and rstd are (B)
    // with n = (x - mean) * rstd and g = dout * weight:
    // dinp = rstd * (g - mean(g) - n * mean(g * n))
    for (int b = 0; b < B; b++) {
        const float *restrict x = inp + (size_t)b * C;
        const float *d = dout + (size_t)b * C;
        float *di = dinp + (size_t)b * C;
        float m = mean[b], rs = rstd[b];
        double sg = 0.0, sgn = 0.0;
        for (int i = 0; i < C; i++) {
            float n = (x[i] - m) * rs;
            float g = d[i] * weight[i];
            sg += g;
            sgn += (double)g * n;
            dweight[i] += d[i] * n;
            dbias[i] += d[i];
        }
        float mg = (float)(sg / C), mgn = (float)(sgn / C);
        // element i of dinp only reads element i of dout: dinp may alias dout
        for (int i = 0; i < C; i++) {
            float n = (x[i] - m) * rs;
            di[i] = rs * (d[i] * weight[i] - mg - n * mgn);
        }
    }
}

/* ---- l2 normalisation ------------------------------------------------------------------------ */

void l2norm_forward(float *out, float *norm, const float *inp, int B, int C) {
    // out is (B,C), norm is (B), inp is (B,C)
    for (int b = 0; b < B; b++) {
        const float *x = inp + (size_t)b * C;
        float *o = out + (size_t)b * C;
        double s = 0.0;
        for (int i = 0; i < C; i++) s += (double)x[i] * x[i];
        float nr = (float)sqrt(s);
        if (!(nr > L2NORM_EPS)) nr = L2NORM_EPS;
        float inv = 1.0f / nr;
        for (int i = 0; i < C; i++) o[i] = x[i] * inv;
        norm[b] = nr;
    }
}

void l2norm_backward(float *dinp, const float *dout, const float *out, const float *norm,
                     int B, int C) {
    // dinp is (B,C), dout is (B,C), out is (B,C), norm is (B); dinp may alias dout
    for (int b = 0; b < B; b++) {
        const float *d = dout + (size_t)b * C;
        const float *restrict o = out + (size_t)b * C;
        float *di = dinp + (size_t)b * C;
        float inv = 1.0f / norm[b];
        if (norm[b] <= L2NORM_EPS) {
            // clamped norm: out = inp / eps is linear in inp (as F.normalize's clamp_min)
            for (int i = 0; i < C; i++) di[i] = d[i] * inv;
            continue;
        }
        double od = 0.0;
        for (int i = 0; i < C; i++) od += (double)o[i] * d[i];
        float odf = (float)od;
        for (int i = 0; i < C; i++) di[i] = (d[i] - o[i] * odf) * inv;
    }
}

/* ---- threads --------------------------------------------------------------------------------- */

void kernels_set_threads(int n) { openblas_set_num_threads(n > 0 ? n : 1); }

int kernels_get_threads(void) { return openblas_get_num_threads(); }
