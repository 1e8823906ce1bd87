/* bench_sgemm: OpenBLAS sgemm GFLOP/s at W1's first-layer shape (M x K) @ (K x N), for the
 * same-run ceiling that hcl's matmul rate is compared with.
 * Usage: bench_sgemm THREADS [M N K SECONDS] -> prints "sgemm threads=T M=.. GFLOPs=X". */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels.h"
#include "util.h"

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    int M = argc > 2 ? atoi(argv[2]) : 512, N = argc > 3 ? atoi(argv[3]) : 512;
    int K = argc > 4 ? atoi(argv[4]) : 784;
    double secs = argc > 5 ? atof(argv[5]) : 1.0;
    kernels_set_threads(threads);
    float *a = hcl_floats((size_t)M * K), *b = hcl_floats((size_t)K * N), *c = hcl_floats((size_t)M * N);
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)K * N; i++) b[i] = (float)(i % 5) * 0.1f;
    for (int i = 0; i < 5; i++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, a, K, b, K, 0, c, N);
    long reps = 0;
    double t0 = hcl_now(), t;
    do {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, a, K, b, K, 0, c, N);
        reps++;
    } while ((t = hcl_now() - t0) < secs);
    printf("sgemm threads=%d M=%d N=%d K=%d GFLOPs=%.1f\n", threads, M, N, K, 2.0 * M * N * K * reps / t / 1e9);
    free(a);
    free(b);
    free(c);
    return 0;
}
