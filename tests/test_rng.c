/* test_rng: determinism and known answers, independence of derived streams, moments of the
 * uniform and normal draws, rng_below's range and lack of modulo bias, permutations.
 *
 * Statistical checks use fixed seeds (so they are deterministic) and 5-sigma bounds, or
 * chi-square bounds near p = 1e-6; one check shows the rng_below bound catches modulo bias. */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "rng.h"

#define N_DRAWS 1000000

/* ---- determinism, known answers, serialisation ---------------------------------------------- */

static void test_determinism(void) {
    hcl_rng a, b;
    /* Known answers: splitmix64 from 0 gives the four state words (Vigna's reference values);
     * the first xoshiro256** outputs were computed independently in Python. */
    rng_seed(&a, 0);
    CHECK(a.s[0] == 0xE220A8397B1DCDAFull && a.s[1] == 0x6E789E6AA1B965F4ull &&
          a.s[2] == 0x06C45D188009454Full && a.s[3] == 0xF88BB8A8724C81ECull,
          "rng_seed(0) state words are not splitmix64's");
    uint64_t want[3] = {0x99EC5F36CB75F2B4ull, 0xBF6E1F784956452Aull, 0x1A5F849D4933E6E0ull};
    for (int i = 0; i < 3; i++) {
        uint64_t x = rng_u64(&a);
        CHECK(x == want[i], "xoshiro256** output %d: got %016llx want %016llx", i,
              (unsigned long long)x, (unsigned long long)want[i]);
    }

    rng_seed(&a, 123);
    rng_seed(&b, 123);
    int same = 1;
    for (int i = 0; i < 10000; i++) same &= rng_u64(&a) == rng_u64(&b);
    CHECK(same, "two streams from the same seed differ");

    rng_seed(&a, 123);
    rng_seed(&b, 124);
    int equal = 0;
    for (int i = 0; i < 10000; i++) equal += rng_u64(&a) == rng_u64(&b);
    CHECK(equal == 0, "seeds 123 and 124 agree on %d of 10000 outputs", equal);

    /* the four words are the whole state: a copy taken mid-stream continues identically */
    rng_derive(&a, 9, "epoch", 3);
    for (int i = 0; i < 777; i++) rng_u64(&a);
    uint64_t words[4];
    memcpy(words, a.s, sizeof(words));
    hcl_rng c;
    memcpy(c.s, words, sizeof(words));
    same = 1;
    for (int i = 0; i < 1000; i++) same &= rng_u64(&a) == rng_u64(&c);
    CHECK(same, "a stream restored from its four words diverges");
}

/* ---- derived streams --------------------------------------------------------------------- */

static int cmp_u64(const void *x, const void *y) {
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

/* Pearson correlation of n uniforms from two streams. */
static double stream_corr(hcl_rng *a, hcl_rng *b, int n) {
    double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
    for (int i = 0; i < n; i++) {
        double x = rng_uniform(a), y = rng_uniform(b);
        sa += x; sb += y; saa += x * x; sbb += y * y; sab += x * y;
    }
    double cov = sab / n - (sa / n) * (sb / n);
    double va = saa / n - (sa / n) * (sa / n), vb = sbb / n - (sb / n) * (sb / n);
    return cov / sqrt(va * vb);
}

static void test_derive(void) {
    hcl_rng a, b;
    rng_derive(&a, 42, "epoch", 5);
    rng_derive(&b, 42, "epoch", 5);
    int same = 1;
    for (int i = 0; i < 1000; i++) same &= rng_u64(&a) == rng_u64(&b);
    CHECK(same, "rng_derive is not deterministic");

    /* pairs that must give different streams: purpose, index, seed, and plain rng_seed */
    struct { uint64_t seed; const char *purpose; uint64_t index; } pairs[][2] = {
        {{42, "init", 0}, {42, "epoch", 0}},
        {{42, "epoch", 0}, {42, "epoch", 1}},
        {{42, "epoch", 1}, {42, "epoch", 2}},
        {{42, "epoch", 0}, {43, "epoch", 0}},
        {{0, "init", 0}, {0, "init", 1}},
        {{42, "ab", 0}, {42, "ba", 0}},
    };
    for (size_t k = 0; k < sizeof(pairs) / sizeof(pairs[0]); k++) {
        rng_derive(&a, pairs[k][0].seed, pairs[k][0].purpose, pairs[k][0].index);
        rng_derive(&b, pairs[k][1].seed, pairs[k][1].purpose, pairs[k][1].index);
        int equal = 0;
        for (int i = 0; i < 1000; i++) equal += rng_u64(&a) == rng_u64(&b);
        CHECK(equal == 0, "derived streams %zu agree on %d of 1000 outputs", k, equal);
        rng_derive(&a, pairs[k][0].seed, pairs[k][0].purpose, pairs[k][0].index);
        rng_derive(&b, pairs[k][1].seed, pairs[k][1].purpose, pairs[k][1].index);
        double r = stream_corr(&a, &b, 100000);
        CHECK(fabs(r) < 5.0 / sqrt(100000.0), "derived streams %zu correlate: r = %g", k, r);
    }
    rng_derive(&a, 42, "init", 0);
    rng_seed(&b, 42);
    CHECK(rng_u64(&a) != rng_u64(&b), "rng_derive(42, init, 0) equals rng_seed(42)");

    /* 4 purposes x 64 indices x 2 seeds, 32 outputs each: no value repeats anywhere (a shifted
     * or shared stream would repeat; 16384 random 64-bit values collide with p ~ 1e-11) */
    enum { NP = 4, NI = 64, NS = 2, NO = 32, TOTAL = NP * NI * NS * NO };
    static uint64_t all[TOTAL];
    const char *purposes[NP] = {"init", "epoch", "augment", "dropout"};
    int m = 0;
    for (int s = 0; s < NS; s++)
        for (int p = 0; p < NP; p++)
            for (int i = 0; i < NI; i++) {
                rng_derive(&a, (uint64_t)s + 7, purposes[p], (uint64_t)i);
                for (int o = 0; o < NO; o++) all[m++] = rng_u64(&a);
            }
    qsort(all, TOTAL, sizeof(all[0]), cmp_u64);
    int dups = 0;
    for (int i = 1; i < TOTAL; i++) dups += all[i] == all[i - 1];
    CHECK(dups == 0, "%d repeated outputs across %d derived streams", dups, NP * NI * NS);
}

/* ---- uniform and normal ------------------------------------------------------------------- */

static void test_uniform(void) {
    hcl_rng r;
    rng_derive(&r, 1, "test_uniform", 0);
    double s = 0, ss = 0;
    int out_of_range = 0;
    int64_t bins[10] = {0};
    for (int i = 0; i < N_DRAWS; i++) {
        double u = rng_uniform(&r);
        out_of_range += !(u >= 0.0 && u < 1.0);
        s += u;
        ss += u * u;
        bins[(int)(u * 10)] += (u >= 0.0 && u < 1.0);
    }
    double n = N_DRAWS, mean = s / n, var = ss / n - mean * mean;
    CHECK(out_of_range == 0, "%d uniforms outside [0, 1)", out_of_range);
    /* sd of the mean sqrt(1/12/n); of the variance sqrt((1/80 - 1/144)/n) = sqrt(1/180/n) */
    CHECK_CLOSE(mean, 0.5, 0.0, 5 * sqrt(1.0 / 12 / n), "uniform mean");
    CHECK_CLOSE(var, 1.0 / 12, 0.0, 5 * sqrt(1.0 / 180 / n), "uniform variance");
    double chi2 = 0;
    for (int b = 0; b < 10; b++) chi2 += (bins[b] - n / 10) * (bins[b] - n / 10) / (n / 10);
    CHECK(chi2 < 50.0, "uniform deciles: chi-square %g with 9 dof (p < 1e-6)", chi2);
    /* 53 bits: the low bits of the mantissa vary too */
    int odd = 0;
    for (int i = 0; i < 1000; i++) odd += (int)((uint64_t)(rng_uniform(&r) * 0x1.0p53) & 1);
    CHECK(odd > 400 && odd < 600, "uniform's lowest bit is odd %d times in 1000", odd);
}

static void test_normal(void) {
    hcl_rng r;
    rng_derive(&r, 2, "test_normal", 0);
    double s = 0, ss = 0, s4 = 0, within1 = 0;
    int nonfinite = 0;
    for (int i = 0; i < N_DRAWS; i++) {
        double x = rng_normal(&r);
        nonfinite += !isfinite(x);
        s += x;
        ss += x * x;
        s4 += x * x * x * x;
        within1 += fabs(x) < 1.0;
    }
    double n = N_DRAWS, mean = s / n, var = ss / n - mean * mean;
    CHECK(nonfinite == 0, "%d non-finite normals", nonfinite);
    /* sds: mean 1/sqrt(n); variance sqrt(2/n); E x^4 sqrt(96/n); P(|x|<1) sqrt(p(1-p)/n) */
    CHECK_CLOSE(mean, 0.0, 0.0, 5 / sqrt(n), "normal mean");
    CHECK_CLOSE(var, 1.0, 0.0, 5 * sqrt(2 / n), "normal variance");
    CHECK_CLOSE(s4 / n, 3.0, 0.0, 5 * sqrt(96 / n), "normal fourth moment");
    double p1 = 0.682689492137;
    CHECK_CLOSE(within1 / n, p1, 0.0, 5 * sqrt(p1 * (1 - p1) / n), "normal P(|x| < 1)");
}

/* ---- rng_below ---------------------------------------------------------------------------- */

static void test_below(void) {
    hcl_rng r;
    rng_derive(&r, 3, "test_below", 0);
    uint64_t ns[] = {1, 2, 3, 7, 10, 1000, 1ull << 40, (1ull << 63) + 1, UINT64_MAX};
    for (size_t k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
        int bad = 0;
        for (int i = 0; i < 10000; i++) bad += rng_below(&r, ns[k]) >= ns[k];
        CHECK(bad == 0, "rng_below(%llu) out of range %d times", (unsigned long long)ns[k], bad);
    }

    /* chi-square over 7 values: 6 dof, 40 is p ~ 1e-6 */
    enum { NB = 700000 };
    int64_t counts[7] = {0};
    for (int i = 0; i < NB; i++) counts[rng_below(&r, 7)]++;
    double chi2 = 0, e = NB / 7.0;
    for (int b = 0; b < 7; b++) chi2 += (counts[b] - e) * (counts[b] - e) / e;
    CHECK(chi2 < 40.0, "rng_below(7): chi-square %g with 6 dof", chi2);

    /* Modulo bias: with n = 0xAAAA... (about 2/3 of 2^64), x % n of a uniform 64-bit x falls
     * below n/2 with probability 2/3; an unbiased draw, 1/2. */
    uint64_t n = 0xAAAAAAAAAAAAAAAAull;
    enum { NM = 200000 };
    double tol = 5 * sqrt(0.25 / NM);
    int low = 0, naive_low = 0;
    for (int i = 0; i < NM; i++) low += rng_below(&r, n) < n / 2;
    for (int i = 0; i < NM; i++) naive_low += rng_u64(&r) % n < n / 2;
    CHECK_CLOSE((double)low / NM, 0.5, 0.0, tol, "rng_below(2/3 * 2^64) below n/2");
    CHECK(fabs((double)naive_low / NM - 0.5) > tol,
          "the bias bound does not catch plain modulo (fraction %g)", (double)naive_low / NM);
}

/* ---- permutations -------------------------------------------------------------------------- */

static int is_permutation(const int64_t *idx, int64_t n, unsigned char *seen) {
    memset(seen, 0, (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        if (idx[i] < 0 || idx[i] >= n || seen[idx[i]]) return 0;
        seen[idx[i]] = 1;
    }
    return 1;
}

static void test_permutation(void) {
    enum { N = 1000 };
    static int64_t a[N], b[N];
    static unsigned char seen[N];
    hcl_rng r;

    rng_derive(&r, 5, "epoch", 0);
    rng_permutation(&r, a, N);
    CHECK(is_permutation(a, N, seen), "rng_permutation(1000) is not a permutation");
    int fixed = 0;
    for (int i = 0; i < N; i++) fixed += a[i] == i;
    CHECK(fixed < 10, "permutation has %d fixed points (expected about 1)", fixed);

    rng_derive(&r, 5, "epoch", 0);
    rng_permutation(&r, b, N);
    CHECK(memcmp(a, b, sizeof(a)) == 0, "same seed and epoch give different orders");

    rng_derive(&r, 5, "epoch", 1);
    rng_permutation(&r, b, N);
    CHECK(is_permutation(b, N, seen), "epoch 1 order is not a permutation");
    int agree = 0;
    for (int i = 0; i < N; i++) agree += a[i] == b[i];
    CHECK(agree < 10, "epochs 0 and 1 agree at %d of 1000 positions", agree);

    rng_derive(&r, 6, "epoch", 0);
    rng_permutation(&r, b, N);
    agree = 0;
    for (int i = 0; i < N; i++) agree += a[i] == b[i];
    CHECK(agree < 10, "seeds 5 and 6 agree at %d of 1000 positions", agree);

    int64_t one = 99;
    rng_permutation(&r, &one, 1);
    CHECK(one == 0, "permutation of 1 is %lld", (long long)one);
    rng_permutation(&r, &one, 0); /* n = 0 writes nothing */
    CHECK(one == 0, "permutation of 0 wrote");

    /* all 6 orders of 3 equally likely: chi-square with 5 dof, 40 is p ~ 1e-7 */
    enum { NP = 60000 };
    int64_t counts[6] = {0}, p3[3];
    rng_derive(&r, 7, "test_perm", 0);
    for (int i = 0; i < NP; i++) {
        rng_permutation(&r, p3, 3);
        int code = (int)(p3[0] * 2 + (p3[1] > p3[2])); /* p3[0] and the order of the rest */
        counts[code]++;
    }
    double chi2 = 0, e = NP / 6.0;
    for (int k = 0; k < 6; k++) chi2 += (counts[k] - e) * (counts[k] - e) / e;
    CHECK(chi2 < 40.0, "orders of 3: chi-square %g with 5 dof", chi2);

    /* every element equally likely at every position (n = 10, 100 cells, 5 sigma each) */
    enum { NQ = 100000 };
    static int64_t pos[10][10];
    int64_t p10[10];
    for (int i = 0; i < NQ; i++) {
        rng_permutation(&r, p10, 10);
        for (int j = 0; j < 10; j++) pos[j][p10[j]]++;
    }
    int worst = 0;
    double sd = sqrt(NQ * 0.1 * 0.9);
    for (int j = 0; j < 10; j++)
        for (int v = 0; v < 10; v++)
            if (fabs(pos[j][v] - NQ * 0.1) > 5 * sd) worst++;
    CHECK(worst == 0, "%d of 100 (position, value) cells off by more than 5 sigma", worst);
}

int main(void) {
    test_determinism();
    test_derive();
    test_uniform();
    test_normal();
    test_below();
    test_permutation();
    CHECK_DONE();
}
