/* kernels: see kernels.h. Plain loops over flat arrays; matmuls through matmul.h. */
#include "kernels.h"

#include <math.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "matmul.h"
#include "util.h"

/* Declared by OpenBLAS's cblas.h; repeated so another CBLAS header still compiles. */
extern void openblas_set_num_threads(int num_threads);
extern int openblas_get_num_threads(void);

#define L2NORM_EPS 1e-12f
#define LAYERNORM_EPS 1e-5

/* ---- linear ---------------------------------------------------------------------------------- */

void linear_forward(float *out, const float *inp, uint16_t *inp_bf, const float *weight, const float *bias,
                    int B, int C, int OC) {
    // out is (B,OC), inp is (B,C), weight is (OC,C), bias is (OC) or NULL
    if (B <= 0 || OC <= 0) return;
    float beta = 0.0f;
    if (bias) {
        // out starts as the bias broadcast to every row and the sgemm adds to it (beta 1): any
        // beta but 1 costs OpenBLAS a pass over out of its own, so this pass is free
        for (int b = 0; b < B; b++) memcpy(out + (size_t)b * OC, bias, sizeof(float) * (size_t)OC);
        beta = 1.0f;
    }
    // out = inp @ weight^T (+ out); with bf16 products inp rounded into inp_bf and kept
    if (inp_bf && matmul_precision() == HCL_PRECISION_BF16) matmul_round_bf16(inp_bf, inp, B, C, C);
    else inp_bf = NULL;
    matmul_f32_rounded(0, 1, B, OC, C, inp, C, inp_bf, weight, C, NULL, 1, beta, out, OC);
}

void linear_backward(float *dinp, float *dweight, float dw_beta, float *dbias, const float *dout, uint16_t *dout_bf,
                     const float *inp, const uint16_t *inp_bf, const float *weight, int B, int C, int OC) {
    // dinp is (B,C) or NULL, dweight is (OC,C), dbias is (OC) or NULL, dout is (B,OC),
    // inp is (B,C), weight is (OC,C); dout_bf (B,OC) and inp_bf (B,C) bf16 or NULL
    if (B <= 0) {
        if (dw_beta == 0.0f) memset(dweight, 0, sizeof(float) * (size_t)OC * (size_t)C);
        return;
    }
    const int bf16 = matmul_precision() == HCL_PRECISION_BF16;
    if (bf16 && dout_bf && dinp) matmul_round_bf16(dout_bf, dout, B, OC, OC);   // once for both products
    else dout_bf = NULL;
    if (!bf16) inp_bf = NULL;
    if (dinp) {
        // dinp = dout @ weight (overwrite)
        matmul_f32_rounded(0, 0, B, C, OC, dout, OC, dout_bf, weight, C, NULL, 1, 0.0f, dinp, C);
    }
    // dweight = dout^T @ inp + dw_beta dweight
    matmul_f32_rounded(1, 0, OC, C, B, dout, OC, dout_bf, inp, C, inp_bf, 0, dw_beta, dweight, C);
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

void relu_backward_bias(float *dinp, float *dbias, const float *out, const float *dout, int B,
                        int C) {
    // dinp, out, dout are (B,C), dbias is (C) (accumulate); dinp may alias dout
    float *restrict db = dbias;
    for (int b = 0; b < B; b++) {
        const float *o = out + (size_t)b * C, *d = dout + (size_t)b * C;
        float *di = dinp + (size_t)b * C;
        for (int i = 0; i < C; i++) {
            float x = o[i] > 0.0f ? d[i] : 0.0f;
            di[i] = x;
            db[i] += x;
        }
    }
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

/* sum of a[i] * b[i] in double, over eight partial sums combined in a fixed order (no serial
 * chain of dependent adds: the loop vectorises; the result depends only on n and the values) */
#define DOT_LANES 8
static double dot_double(const float *restrict a, const float *restrict b, int n) {
    double acc[DOT_LANES] = {0};
    int i = 0;
    for (; i + DOT_LANES <= n; i += DOT_LANES)
        for (int l = 0; l < DOT_LANES; l++) acc[l] += (double)a[i + l] * (double)b[i + l];
    for (int l = 0; i < n; i++, l++) acc[l] += (double)a[i] * (double)b[i];
    return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

void l2norm_forward(float *out, float *norm, const float *inp, int B, int C) {
    // out is (B,C), norm is (B), inp is (B,C)
    for (int b = 0; b < B; b++) {
        const float *x = inp + (size_t)b * C;
        float *o = out + (size_t)b * C;
        float nr = (float)sqrt(dot_double(x, x, C));
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
        float odf = (float)dot_double(o, d, C);
        for (int i = 0; i < C; i++) di[i] = (d[i] - o[i] * odf) * inv;
    }
}

void l2norm_backward_bias(float *dinp, float *dbias, const float *dout, const float *out,
                          const float *norm, int B, int C) {
    // as l2norm_backward; dbias is (C) (accumulate)
    float *restrict db = dbias;
    for (int b = 0; b < B; b++) {
        const float *d = dout + (size_t)b * C;
        const float *restrict o = out + (size_t)b * C;
        float *di = dinp + (size_t)b * C;
        float inv = 1.0f / norm[b];
        if (norm[b] <= L2NORM_EPS) {
            for (int i = 0; i < C; i++) {
                float x = d[i] * inv;
                di[i] = x;
                db[i] += x;
            }
            continue;
        }
        float odf = (float)dot_double(o, d, C);
        for (int i = 0; i < C; i++) {
            float x = (d[i] - o[i] * odf) * inv;
            di[i] = x;
            db[i] += x;
        }
    }
}

/* ---- threads --------------------------------------------------------------------------------- */

void kernels_set_threads(int n) {
    openblas_set_num_threads(n > 0 ? n : 1);
    matmul_onednn_set_threads(n);
}

int kernels_get_threads(void) { return openblas_get_num_threads(); }

/* OpenBLAS maps BUFFER_SIZE (x86_64: 32 << 22 bytes, OpenBLAS's common_x86_64.h) and a page for
 * each thread that calls it, at its first product past the small-matrix path, and for each
 * helper thread as it starts (Debian's 0.3.21: 131,076 kB of address space each, measured).
 * When that mmap fails blas_memory_alloc tries again forever, so it is counted before
 * training. Touched of it: the packed panels of one product. */
#define OPENBLAS_BUFFER ((128.0 * 1024 + 4) * 1024)
#define OPENBLAS_TOUCHED (8.0 * MEMLIMIT_MB)
/* oneDNN: its primitives' scratchpads and JIT code for the step's few shapes (measured) */
#define ONEDNN_BYTES (24.0 * MEMLIMIT_MB)

int kernels_blas_started(double timeout) {
    const int helpers = openblas_get_num_threads() - 1;
    const double t0 = hcl_now();
    for (;;) {
        int found = 0;
        FILE *f = fopen("/proc/self/maps", "r");
        char line[512];
        while (f && fgets(line, sizeof line, f)) {
            unsigned long a, b;
            if (sscanf(line, "%lx-%lx", &a, &b) == 2 && (double)(b - a) >= 128.0 * MEMLIMIT_MB &&
                strstr(line, " rw-p ") && !strchr(line, '/'))
                found++;
        }
        if (f) fclose(f);
        if (found >= helpers) return 1;
        if (hcl_now() - t0 > timeout) return 0;
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
}

void kernels_blas_reserve(void) {
    const int n = 256;   /* past OpenBLAS's small-matrix path (no buffer up to 100^3) */
    float *a = hcl_floats(3 * (size_t)n * n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, a + n * n, n, 0.0f, a + 2 * n * n, n);
    free(a);
}

void kernels_memory(memlimit_need *need, enum hcl_matmul_engine engine, int threads, int callers) {
    const double stack = memlimit_thread_stack();
    const int helpers = threads - openblas_get_num_threads();   /* started by kernels_set_threads */
    if (helpers > 0) {
        memlimit_add(need, "OpenBLAS buffers", helpers * OPENBLAS_BUFFER, helpers * OPENBLAS_TOUCHED);
        memlimit_add(need, "thread stacks", helpers * stack, 0.0);
    }
    if (callers > 0) memlimit_add(need, "OpenBLAS buffers", callers * OPENBLAS_BUFFER, callers * OPENBLAS_TOUCHED);
    if (engine == HCL_MATMUL_ONEDNN) {
        memlimit_add(need, "thread stacks", (threads - 1) * stack, 0.0);   /* OpenMP's */
        memlimit_add(need, "oneDNN", ONEDNN_BYTES, ONEDNN_BYTES);
    }
}
