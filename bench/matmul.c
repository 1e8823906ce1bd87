/* bench_matmul: oneDNN matmul GFLOP/s at W1's first-layer shape (M x K) @ (K x N)^T, f32 or bf16
 * operands with f32 output, through hcl's own entry point (matmul_f32 of common/matmul.h on the
 * oneDNN engine, its per-thread primitive cache, and in bf16 its rounding of both operands to
 * bf16 before each product, as the step does): the same-run limit that hcl's rate is compared
 * with (bench/run). Threads: kernels_set_threads (OpenMP's team for oneDNN).
 * Usage: bench_matmul THREADS PRECISION [M N K SECONDS]   (PRECISION fp32|bf16)
 * -> prints "matmul engine=onednn precision=P threads=T M=.. N=.. K=.. GFLOPs=X". */
#include <stdio.h>
#include <stdlib.h>

#include "kernels.h"
#include "matmul.h"
#include "util.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_matmul THREADS fp32|bf16 [M N K SECONDS]\n");
        return 2;
    }
    int threads = atoi(argv[1]);
    enum hcl_precision prec;
    if (matmul_precision_parse(argv[2], &prec) != 0) {
        fprintf(stderr, "bench_matmul: precision must be fp32 or bf16, not %s\n", argv[2]);
        return 2;
    }
    int M = argc > 3 ? atoi(argv[3]) : 512, N = argc > 4 ? atoi(argv[4]) : 512;
    int K = argc > 5 ? atoi(argv[5]) : 784;
    double secs = argc > 6 ? atof(argv[6]) : 1.0;
    if (!matmul_available(HCL_MATMUL_ONEDNN) || (prec == HCL_PRECISION_BF16 && !matmul_bf16_available())) {
        fprintf(stderr, "bench_matmul: this build or CPU has no oneDNN %s matmul\n", matmul_precision_name(prec));
        return 1;
    }
    matmul_set_engine(HCL_MATMUL_ONEDNN);
    matmul_set_precision(prec);
    kernels_set_threads(threads);
    float *a = hcl_floats((size_t)M * K), *b = hcl_floats((size_t)K * N), *c = hcl_floats((size_t)M * N);
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)K * N; i++) b[i] = (float)(i % 5) * 0.1f;
    /* the layer's forward product: X (M,K) times W (N,K) transposed, as bench_sgemm */
    for (int i = 0; i < 5; i++) matmul_f32(0, 1, M, N, K, 1.0f, a, K, b, K, 0.0f, c, N);
    long reps = 0;
    double t0 = hcl_now(), t;
    do {
        matmul_f32(0, 1, M, N, K, 1.0f, a, K, b, K, 0.0f, c, N);
        reps++;
    } while ((t = hcl_now() - t0) < secs);
    printf("matmul engine=onednn precision=%s threads=%d M=%d N=%d K=%d GFLOPs=%.1f\n", matmul_precision_name(prec),
           threads, M, N, K, 2.0 * M * N * K * reps / t / 1e9);
    free(a);
    free(b);
    free(c);
    return 0;
}
