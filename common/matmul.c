/* matmul: see matmul.h. The engine switch and the OpenBLAS path. */
#include "matmul.h"

#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "util.h"

static int engine_from_env(void) {
    const char *s = getenv("HCL_MATMUL");
    enum hcl_matmul_engine e;
    if (s && *s && matmul_engine_parse(s, &e) == 0 && matmul_available(e)) return (int)e;
    return matmul_available(HCL_MATMUL_ONEDNN) ? HCL_MATMUL_ONEDNN : HCL_MATMUL_OPENBLAS;
}

/* -1: not chosen yet (the default is taken at the first product) */
static int engine = -1;

int matmul_available(enum hcl_matmul_engine e) {
#ifdef HCL_HAVE_DNNL
    return e == HCL_MATMUL_ONEDNN || e == HCL_MATMUL_OPENBLAS;
#else
    return e == HCL_MATMUL_OPENBLAS;
#endif
}

void matmul_set_engine(enum hcl_matmul_engine e) {
    HCL_CHECK(matmul_available(e), "matmul engine %s is not in this build", matmul_engine_name(e));
    __atomic_store_n(&engine, (int)e, __ATOMIC_RELEASE);
}

enum hcl_matmul_engine matmul_engine(void) {
    int e = __atomic_load_n(&engine, __ATOMIC_ACQUIRE);
    if (e < 0) {
        e = engine_from_env();
        __atomic_store_n(&engine, e, __ATOMIC_RELEASE);
    }
    return (enum hcl_matmul_engine)e;
}

const char *matmul_engine_name(enum hcl_matmul_engine e) {
    return e == HCL_MATMUL_ONEDNN ? "onednn" : "openblas";
}

int matmul_engine_parse(const char *s, enum hcl_matmul_engine *e) {
    if (strcmp(s, "onednn") == 0) *e = HCL_MATMUL_ONEDNN;
    else if (strcmp(s, "openblas") == 0) *e = HCL_MATMUL_OPENBLAS;
    else return -1;
    return 0;
}

/* Every entry point: b_param says B is a parameter tensor (oneDNN's bf16 keeps its copy); Ab,
 * Bb are the caller's bf16 roundings of A and B or NULL. */
static void product(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                    const uint16_t *Ab, const float *B, int ldb, const uint16_t *Bb, float beta, float *C,
                    int ldc, int b_param) {
    if (M <= 0 || N <= 0) return;
    if (matmul_engine() == HCL_MATMUL_ONEDNN) {
        matmul_onednn_f32(transA, transB, M, N, K, alpha, A, lda, Ab, B, ldb, Bb, beta, C, ldc, b_param);
        return;
    }
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, N,
                K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void matmul_f32(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc) {
    product(transA, transB, M, N, K, alpha, A, lda, NULL, B, ldb, NULL, beta, C, ldc, 0);
}

static _Thread_local enum hcl_precision precision = HCL_PRECISION_FP32;

void matmul_set_precision(enum hcl_precision p) {
    HCL_CHECK(p == HCL_PRECISION_FP32 || matmul_engine() == HCL_MATMUL_ONEDNN,
              "bf16 products need the oneDNN engine");
    precision = p;
}

enum hcl_precision matmul_precision(void) { return precision; }

int matmul_bf16_available(void) { return matmul_available(HCL_MATMUL_ONEDNN); }

const char *matmul_precision_name(enum hcl_precision p) { return p == HCL_PRECISION_BF16 ? "bf16" : "fp32"; }

int matmul_precision_parse(const char *s, enum hcl_precision *p) {
    if (strcmp(s, "fp32") == 0) *p = HCL_PRECISION_FP32;
    else if (strcmp(s, "bf16") == 0) *p = HCL_PRECISION_BF16;
    else return -1;
    return 0;
}

void matmul_f32_param(int transA, int transB, int M, int N, int K, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc) {
    product(transA, transB, M, N, K, 1.0f, A, lda, NULL, B, ldb, NULL, beta, C, ldc, 1);
}

void matmul_round_bf16(uint16_t *y, const float *X, int rows, int cols, int ld) {
    HCL_CHECK(matmul_engine() == HCL_MATMUL_ONEDNN, "bf16 rounding needs the oneDNN engine");
    matmul_onednn_round_bf16(y, X, rows, cols, ld);
}

void matmul_f32_rounded(int transA, int transB, int M, int N, int K, const float *A, int lda, const uint16_t *Ab,
                        const float *B, int ldb, const uint16_t *Bb, int b_param, float beta, float *C, int ldc) {
    product(transA, transB, M, N, K, 1.0f, A, lda, Ab, B, ldb, Bb, beta, C, ldc, b_param);
}

unsigned long matmul_params_generation = 1;

void matmul_params_changed(void) { __atomic_add_fetch(&matmul_params_generation, 1, __ATOMIC_RELEASE); }

int matmul_cached_shapes(void) { return matmul_onednn_cached(); }

#ifndef HCL_HAVE_DNNL
void matmul_onednn_f32(int transA, int transB, int M, int N, int K, float alpha, const float *A,
                       int lda, const uint16_t *Ab, const float *B, int ldb, const uint16_t *Bb, float beta,
                       float *C, int ldc, int b_param) {
    (void)b_param, (void)transA, (void)transB, (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda, (void)B;
    (void)ldb, (void)beta, (void)C, (void)ldc, (void)Ab, (void)Bb;
    HCL_CHECK(0, "matmul: this build has no oneDNN");
}
void matmul_onednn_round_bf16(uint16_t *y, const float *X, int rows, int cols, int ld) {
    (void)y, (void)X, (void)rows, (void)cols, (void)ld;
    HCL_CHECK(0, "matmul: this build has no oneDNN");
}
int matmul_onednn_cached(void) { return 0; }
void matmul_onednn_set_threads(int n) { (void)n; }
#endif
