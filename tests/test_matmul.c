/* test_matmul: both engines of common/matmul.h against a double-precision product, for every
 * transpose, alpha (1, the logit scale's kind, 0.5), beta (0, 1, 0.25), leading dimensions wider
 * than the matrices, odd and W1-like shapes and K = 0; the same call twice gives the same bits;
 * oneDNN's primitive cache holds one entry per shape (a second pass over the shapes, as a second
 * training step, creates none) and the caller's operands are never written.
 *
 * Tolerance: |C - C_ref| <= 1e-5 * (|alpha| sum_k |a_ik b_kj| + |beta c_ij|) + 1e-6, the float
 * rounding of a K-term sum; a product with alpha off by a factor of 2 fails it by far. Without
 * oneDNN in the build, its part is a skipped part (exit 77). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "matmul.h"
#include "util.h"

static uint64_t seed = 0x9E3779B97F4A7C15ull;
static float urand(void) {
    seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
    return (float)((double)(seed >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

typedef struct { int M, N, K; } shape;

/* relative tolerance of a product's terms: f32 1e-5; bf16 operands 2^-7 (two 8-bit roundings) */
static double tol_rel = 1e-5;

/* One product on the engine set now against the reference; returns the worst scaled error. */
static double check_one(int ta, int tb, shape s, float alpha, float beta, int pad, int *bad) {
    int lda = (ta ? s.M : s.K) + pad, ldb = (tb ? s.K : s.N) + pad, ldc = s.N + pad;
    size_t na = (size_t)(ta ? s.K : s.M) * lda, nb = (size_t)(tb ? s.N : s.K) * ldb, nc = (size_t)s.M * ldc;
    float *A = hcl_floats(na + 1), *B = hcl_floats(nb + 1), *C = hcl_floats(nc + 1), *C0 = hcl_floats(nc + 1);
    float *A0 = hcl_floats(na + 1), *B0 = hcl_floats(nb + 1), *C2 = hcl_floats(nc + 1);
    for (size_t i = 0; i < na; i++) A[i] = urand();
    for (size_t i = 0; i < nb; i++) B[i] = urand();
    for (size_t i = 0; i < nc; i++) C[i] = C0[i] = urand();
    memcpy(A0, A, sizeof(float) * na);
    memcpy(B0, B, sizeof(float) * nb);
    matmul_f32(ta, tb, s.M, s.N, s.K, alpha, A, lda, B, ldb, beta, C, ldc);
    double worst = 0;
    for (int i = 0; i < s.M; i++)
        for (int j = 0; j < s.N; j++) {
            double acc = 0, mag = 0;
            for (int k = 0; k < s.K; k++) {
                double a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                double b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                acc += a * b;
                mag += fabs(a * b);
            }
            double c0 = C0[(size_t)i * ldc + j];
            double want = alpha * acc + (beta == 0.0f ? 0.0 : beta * c0);
            double tol = tol_rel * fabs(alpha) * mag + 1e-5 * fabs(beta * c0) + 1e-6;
            double e = fabs(C[(size_t)i * ldc + j] - want) / tol;
            if (e > worst) worst = e;
        }
    /* padding columns of C untouched, operands untouched */
    for (int i = 0; i < s.M; i++)
        for (int j = s.N; j < ldc; j++) *bad += C[(size_t)i * ldc + j] != C0[(size_t)i * ldc + j];
    *bad += memcmp(A, A0, sizeof(float) * na) != 0 || memcmp(B, B0, sizeof(float) * nb) != 0;
    /* the same call again: the same bits */
    memcpy(C2, C0, sizeof(float) * nc);
    matmul_f32(ta, tb, s.M, s.N, s.K, alpha, A, lda, B, ldb, beta, C2, ldc);
    *bad += memcmp(C, C2, sizeof(float) * nc) != 0;
    free(A), free(B), free(C), free(C0), free(A0), free(B0), free(C2);
    return worst;
}

static void check_engine(enum hcl_matmul_engine e) {
    matmul_set_engine(e);
    const shape shapes[] = {{1, 1, 1}, {7, 5, 3}, {33, 17, 65}, {64, 128, 49}, {128, 256, 512}, {5, 9, 0}};
    const float alphas[] = {1.0f, 14.97f, 0.5f}, betas[] = {0.0f, 1.0f, 0.25f};
    const int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
    int cached = 0;
    for (int pass = 0; pass < 2; pass++) {
        double worst = 0;
        int bad = 0;
        for (int si = 0; si < nshapes; si++)
            for (int t = 0; t < 4; t++)
                for (int ab = 0; ab < 9; ab++) {
                    double w = check_one(t & 1, t >> 1, shapes[si], alphas[ab % 3], betas[ab / 3], (si + t) % 3, &bad);
                    if (w > worst) worst = w;
                }
        CHECK(worst <= 1.0, "%s pass %d: worst error %.3g of the tolerance", matmul_engine_name(e), pass, worst);
        CHECK(bad == 0, "%s pass %d: %d products wrote outside C, changed an operand or were not "
              "deterministic", matmul_engine_name(e), pass, bad);
        if (pass == 0) cached = matmul_cached_shapes();
        else
            CHECK(matmul_cached_shapes() == cached, "%s: the second pass created %d primitives",
                  matmul_engine_name(e), matmul_cached_shapes() - cached);
        printf("%s pass %d: worst error %.3f of the tolerance, %d primitives cached\n", matmul_engine_name(e),
               pass, worst, matmul_cached_shapes());
    }
    /* the tolerance catches a factor of 2 in alpha */
    int bad = 0;
    const shape s = {16, 16, 16};
    float *A = hcl_floats(256), *B = hcl_floats(256), *C = hcl_floats(256);
    for (int i = 0; i < 256; i++) A[i] = urand(), B[i] = urand();
    matmul_f32(0, 0, 16, 16, 16, 2.0f, A, 16, B, 16, 0.0f, C, 16);
    double worst = 0;
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            double acc = 0, mag = 0;
            for (int k = 0; k < 16; k++) acc += (double)A[i * 16 + k] * B[k * 16 + j], mag += fabs((double)A[i * 16 + k] * B[k * 16 + j]);
            double e = fabs(C[i * 16 + j] - acc) / (1e-5 * mag + 1e-6);
            if (e > worst) worst = e;
        }
    CHECK(worst > 1.0, "%s: twice the product passes the tolerance (%.3g)", matmul_engine_name(e), worst);
    (void)s, (void)bad;
    free(A), free(B), free(C);
}

/* --precision bf16: every transpose, alpha and beta within the bf16 tolerance, deterministic,
 * cached; and the rounding really happens (outside the f32 tolerance at K = 512). */
static void check_bf16(void) {
    matmul_set_engine(HCL_MATMUL_ONEDNN);
    matmul_set_precision(HCL_PRECISION_BF16);
    tol_rel = 1.0 / 128;
    const shape shapes[] = {{7, 5, 3}, {33, 17, 65}, {128, 256, 512}};
    const float alphas[] = {1.0f, 14.97f}, betas[] = {0.0f, 1.0f};
    double worst = 0;
    int bad = 0;
    for (int si = 0; si < 3; si++)
        for (int t = 0; t < 4; t++)
            for (int ab = 0; ab < 4; ab++)
                worst = fmax(worst, check_one(t & 1, t >> 1, shapes[si], alphas[ab % 2], betas[ab / 2], t % 3, &bad));
    CHECK(worst <= 1.0, "bf16: worst error %.3g of the bf16 tolerance", worst);
    CHECK(bad == 0, "bf16: %d products wrote outside C, changed an operand or were not deterministic", bad);
    tol_rel = 1e-5;
    double f32_scaled = check_one(0, 1, shapes[2], 1.0f, 0.0f, 0, &bad);
    CHECK(f32_scaled > 1.0, "bf16 products are within the f32 tolerance (%.3g): no rounding happened", f32_scaled);
    printf("bf16: worst error %.3f of the bf16 tolerance; %.0fx the f32 tolerance at K = 512\n", worst, f32_scaled);
    /* a parameter operand's bf16 copy: the same product as matmul_f32, reused until
     * matmul_params_changed, then made again from the new values */
    float *A = hcl_floats(64 * 32), *W = hcl_floats(16 * 32), *C1 = hcl_floats(64 * 16), *C2 = hcl_floats(64 * 16);
    for (int i = 0; i < 64 * 32; i++) A[i] = urand();
    for (int i = 0; i < 16 * 32; i++) W[i] = urand();
    matmul_params_changed();
    matmul_f32(0, 1, 64, 16, 32, 1.0f, A, 32, W, 32, 0.0f, C1, 16);
    matmul_f32_param(0, 1, 64, 16, 32, A, 32, W, 32, 0.0f, C2, 16);
    CHECK(memcmp(C1, C2, sizeof(float) * 64 * 16) == 0, "bf16: a parameter product differs from the plain one");
    for (int i = 0; i < 16 * 32; i++) W[i] *= 2.0f;
    matmul_f32_param(0, 1, 64, 16, 32, A, 32, W, 32, 0.0f, C2, 16);
    CHECK(memcmp(C1, C2, sizeof(float) * 64 * 16) == 0, "bf16: the parameter copy was made again without "
          "matmul_params_changed");
    matmul_params_changed();
    matmul_f32_param(0, 1, 64, 16, 32, A, 32, W, 32, 0.0f, C2, 16);
    int doubled = 1;
    for (int i = 0; i < 64 * 16; i++) doubled &= C2[i] == 2.0f * C1[i];
    CHECK(doubled, "bf16: after matmul_params_changed the product does not use the new parameters");
    free(A), free(W), free(C1), free(C2);
    matmul_set_precision(HCL_PRECISION_FP32);
}

int main(void) {
    enum hcl_matmul_engine e;
    CHECK(matmul_engine_parse("onednn", &e) == 0 && e == HCL_MATMUL_ONEDNN, "parse onednn");
    CHECK(matmul_engine_parse("openblas", &e) == 0 && e == HCL_MATMUL_OPENBLAS, "parse openblas");
    CHECK(matmul_engine_parse("mkl", &e) != 0, "parse refuses mkl");
    check_engine(HCL_MATMUL_OPENBLAS);
    if (matmul_available(HCL_MATMUL_ONEDNN)) {
        check_engine(HCL_MATMUL_ONEDNN);
        check_bf16();
    } else {
        CHECK_SKIP("oneDNN: this build has no libdnnl");
    }
    CHECK_DONE();
}
