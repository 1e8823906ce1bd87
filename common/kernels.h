/* kernels: the layers of an encoder as plain forward/backward functions over flat float arrays,
 * matmuls through OpenBLAS (cblas_sgemm). Shapes are given in comments; B = rows, C = input
 * width, OC = output width. Weights are stored as PyTorch's nn.Linear: weight (OC, C).
 *
 * Backward conventions: dweight, dbias accumulate (+=); dinp is overwritten (it is per-step
 * scratch), and may alias dout where noted. */
#ifndef HCL_KERNELS_H
#define HCL_KERNELS_H

#include <stdint.h>

#include "matmul.h"
#include "memlimit.h"

/* out (B,OC) = inp (B,C) @ weight^T (C,OC) + bias (OC); bias may be NULL. inp_bf (B,C) or NULL:
 * with bf16 products (matmul.h) inp is rounded into it, for linear_backward to reuse. */
void linear_forward(float *out, const float *inp, uint16_t *inp_bf, const float *weight, const float *bias,
                    int B, int C, int OC);
/* dinp (B,C) = dout @ weight (may be NULL: not needed for the first layer);
 * dweight (OC,C) = dout^T @ inp + dw_beta dweight (1: accumulate, 0: overwrite: no clearing
 * first, and C is not read); dbias (OC) += sum over rows of dout (may be NULL).
 * With bf16 products: dout_bf (B,OC) or NULL, scratch where dout is rounded once for both
 * products; inp_bf: linear_forward's rounding of this inp, or NULL (rounded here). */
void linear_backward(float *dinp, float *dweight, float dw_beta, float *dbias, const float *dout, uint16_t *dout_bf,
                     const float *inp, const uint16_t *inp_bf, const float *weight, int B, int C, int OC);

/* relu: out = max(inp, 0); backward: dinp = dout * (out > 0); dinp may alias dout. */
void relu_forward(float *out, const float *inp, int64_t n);
void relu_backward(float *dinp, const float *out, const float *dout, int64_t n);
/* relu_backward over (B,C) that also accumulates dbias (C) += sum over rows of dinp, in the same
 * pass and the same order as linear_backward's dbias: the bias gradient of the linear layer that
 * produced out, which then takes dbias NULL. dinp may alias dout. */
void relu_backward_bias(float *dinp, float *dbias, const float *out, const float *dout, int B,
                        int C);

/* gelu, exact (erf) form as torch.nn.GELU(): backward needs the input; dinp may alias dout. */
void gelu_forward(float *out, const float *inp, int64_t n);
void gelu_backward(float *dinp, const float *inp, const float *dout, int64_t n);

/* layernorm over the last dim, eps 1e-5: out (B,C), mean (B), rstd (B) saved for backward.
 * backward: dinp (B,C) overwritten; dweight, dbias (C) accumulate. */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int B, int C);
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean,
                        const float *rstd, int B, int C);

/* L2 normalisation of rows, as F.normalize (norm clamped below at 1e-12):
 * out (B,C) = inp / max(|inp|, 1e-12), norm (B) saved.
 * backward: dinp = (dout - out * (out . dout)) / norm; dinp overwritten, may alias dout. */
void l2norm_forward(float *out, float *norm, const float *inp, int B, int C);
void l2norm_backward(float *dinp, const float *dout, const float *out, const float *norm,
                     int B, int C);
/* l2norm_backward that also accumulates dbias (C) += sum over rows of dinp in the same pass
 * (same order as linear_backward's dbias). */
void l2norm_backward_bias(float *dinp, float *dbias, const float *dout, const float *out,
                          const float *norm, int B, int C);

/* Threads used by OpenBLAS in this process. */
void kernels_set_threads(int n);
int kernels_get_threads(void);

/* What the matmul engines will still map (memlimit.h) once kernels_set_threads(threads) has run
 * and `callers` threads that have not yet called OpenBLAS do (the step's thread with
 * --matmul openblas, an evaluation's): OpenBLAS's buffer of each of those and of each helper
 * thread it will start; with engine oneDNN its OpenMP threads and its primitives' scratchpads. */
void kernels_memory(memlimit_need *need, enum hcl_matmul_engine engine, int threads, int callers);
/* 1 when every helper thread OpenBLAS started as the program loaded has mapped its buffer
 * (within timeout seconds); 0 when one has not: under too low a memory limit it waits for the
 * memory forever, at full speed, and the process could not end (exit joins it). */
int kernels_blas_started(double timeout);
/* Have OpenBLAS map the calling thread's buffer now, by one product: right after a memory
 * check has found room for it, before anything else takes that room (its mmap failing later
 * would be a wait forever; an allocation of hcl's failing ends with one line). */
void kernels_blas_reserve(void);

#endif
