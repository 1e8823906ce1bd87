/* matmul: the one entry point for the training step's matrix products (the encoders' layers
 * forward and backward, the loss's logit blocks and their gradients), on one of two engines:
 *
 *   HCL_MATMUL_ONEDNN    oneDNN's matmul primitive (AVX-512 brgemm kernels where the CPU has
 *                        them): one primitive per shape (transposes, sizes, leading dimensions,
 *                        beta), created at its first use and cached per thread, with its memory
 *                        handles and scratchpad, so a step after the first creates and
 *                        allocates nothing; alpha is passed at run time
 *   HCL_MATMUL_OPENBLAS  cblas_sgemm (the fallback, and the engine of the bit-exact reference
 *                        run: tests/test_reference.sh)
 *
 * The engine is process-wide: `--matmul` (hcl-train) sets it before any step; the default is
 * oneDNN when the build has it (meson finds libdnnl), else OpenBLAS; the environment variable
 * HCL_MATMUL=onednn|openblas chooses the default for programs without the flag (the unit tests
 * run under both). Each engine is deterministic: the same shapes and inputs give the same bits.
 * The two engines agree to float rounding, not bit for bit.
 *
 * Threads: kernels_set_threads (kernels.h) sets both engines' thread counts (OpenBLAS's and
 * OpenMP's for oneDNN). */
#ifndef HCL_MATMUL_H
#define HCL_MATMUL_H

#include <stdint.h>

enum hcl_matmul_engine { HCL_MATMUL_OPENBLAS, HCL_MATMUL_ONEDNN };
enum hcl_precision { HCL_PRECISION_FP32, HCL_PRECISION_BF16 };

/* 1 if this build can use the engine. */
int matmul_available(enum hcl_matmul_engine e);
/* Choose the engine for every thread of the process (call before the step loop starts). */
void matmul_set_engine(enum hcl_matmul_engine e);
enum hcl_matmul_engine matmul_engine(void);
const char *matmul_engine_name(enum hcl_matmul_engine e);
/* "onednn" or "openblas" -> 0 and *e; -1 for another word. */
int matmul_engine_parse(const char *s, enum hcl_matmul_engine *e);

/* The calling thread's precision of products (default fp32). bf16 is mixed precision as
 * OpenCLIP's amp_bf16: the operands (activations, weights, the loss's embeddings and gradient
 * blocks) are rounded to bf16 as they enter a product, accumulation and C stay f32; everything
 * else (master weights, optimizer state, normalisation, softmax, log-sum-exp, the loss, the
 * collectives) is f32. Only the oneDNN engine has bf16 (Debian's OpenBLAS has no sbgemm): the
 * caller checks matmul_bf16_available. Per thread, so that an evaluation thread beside the
 * step (--eval-every) keeps f32. */
void matmul_set_precision(enum hcl_precision p);
enum hcl_precision matmul_precision(void);
int matmul_bf16_available(void);
const char *matmul_precision_name(enum hcl_precision p);
int matmul_precision_parse(const char *s, enum hcl_precision *p);

/* C (M,N) = alpha op(A) op(B) + beta C, row-major, as cblas_sgemm(CblasRowMajor, ...):
 * op(A) is (M,K), A stored (M,K) with leading dimension lda, or (K,M) when transA; op(B) is
 * (K,N), B stored (K,N) with ldb, or (N,K) when transB; C has leading dimension ldc. */
void matmul_f32(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc);

/* The same product where B is a parameter tensor (a layer's weight), unchanged until the next
 * matmul_params_changed(): with bf16 its bf16 copy is made once and reused by every product
 * until then (the "bf16 copy of the weights refreshed after each update"); otherwise
 * exactly matmul_f32. */
void matmul_f32_param(int transA, int transB, int M, int N, int K, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc);
/* The parameters were written (an optimizer step, a resume): every thread's bf16 copies of them
 * are stale. */
void matmul_params_changed(void);

/* Operands rounded once for several products (--precision bf16): a layer's input is an operand
 * of its forward product and of its weight gradient's, the gradient of its output of both
 * backward products. y = X (rows x cols as stored, rows ld apart) rounded to bf16, compact. */
void matmul_round_bf16(uint16_t *y, const float *X, int rows, int cols, int ld);
/* matmul_f32 with alpha 1, B a parameter tensor when b_param (as matmul_f32_param), and
 * operands the caller has rounded already: Ab and Bb, compact as stored (matmul_round_bf16 of
 * A and B), or NULL for "round here". They are used only while the thread's precision is bf16;
 * otherwise this is matmul_f32. */
void matmul_f32_rounded(int transA, int transB, int M, int N, int K, const float *A, int lda, const uint16_t *Ab,
                        const float *B, int ldb, const uint16_t *Bb, int b_param, float beta, float *C, int ldc);

/* Primitives the calling thread has created (for tests: a second step creates none). */
int matmul_cached_shapes(void);

/* Internal: the oneDNN engine (matmul_onednn.c; without libdnnl, stubs in matmul.c that abort,
 * never reached since matmul_available refuses the engine). matmul_params_generation is bumped
 * by matmul_params_changed; each thread's bf16 copy of a parameter records the value it was made
 * at. */
extern unsigned long matmul_params_generation;
void matmul_onednn_f32(int transA, int transB, int M, int N, int K, float alpha, const float *A,
                       int lda, const uint16_t *Ab, const float *B, int ldb, const uint16_t *Bb, float beta,
                       float *C, int ldc, int b_param);
void matmul_onednn_round_bf16(uint16_t *y, const float *X, int rows, int cols, int ld);
int matmul_onednn_cached(void);
void matmul_onednn_set_threads(int n);

#endif
