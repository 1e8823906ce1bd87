/* test_balance: the --balance controller (coordinator/balance.c). Even split until every worker
 * has been measured and always with --balance even; then shares in proportion to the measured
 * speeds (rows per busy second), in multiples of 8 rows for shares of 64 or more, within half
 * and 1.5 times the even share, summing to the batch; the speed estimate follows a change. */
#include <string.h>

#include "balance.h"
#include "batch.h"
#include "check.h"

/* A valid split of n over nw: bounds from 0 to n, none decreasing, no share above the most
 * --balance adaptive allows. */
static int sound(const int64_t *split, int nw, int64_t n) {
    if (split[0] != 0 || split[nw] != n) return 0;
    for (int r = 0; r < nw; r++)
        if (split[r + 1] < split[r] || split[r + 1] - split[r] > batch_share_max(n, nw, 1)) return 0;
    return 1;
}

static int64_t share(const int64_t *split, int r) { return split[r + 1] - split[r]; }

int main(void) {
    int64_t split[9], even[9];
    /* even: batch_split's bounds, whatever was observed */
    hcl_balance b;
    balance_init(&b, 3, 0);
    for (int r = 0; r < 3; r++) {
        int64_t rows;
        batch_split(100, 3, r, &even[r], &rows);
    }
    even[3] = 100;
    double busy[8] = {1.0, 2.0, 3.0};
    balance_observe(&b, even, busy);
    balance_split(&b, 100, split);
    CHECK(memcmp(split, even, sizeof(int64_t) * 4) == 0, "--balance even: [%lld %lld %lld %lld]",
          (long long)split[0], (long long)split[1], (long long)split[2], (long long)split[3]);
    balance_free(&b);

    /* adaptive, not yet measured: even */
    balance_init(&b, 2, 1);
    balance_split(&b, 512, split);
    CHECK(share(split, 0) == 256 && share(split, 1) == 256, "unmeasured: %lld %lld", (long long)share(split, 0),
          (long long)share(split, 1));
    /* worker 1 takes 1.25 times as long for the same rows: shares 5:4 of 512 = 284.4 : 227.6;
     * in multiples of 8, 280 + 224 and the last 8 rows to the worker furthest below its target */
    double slow[2] = {0.010, 0.0125};
    balance_observe(&b, split, slow);
    balance_split(&b, 512, split);
    CHECK(sound(split, 2, 512), "unsound split %lld %lld %lld", (long long)split[0], (long long)split[1],
          (long long)split[2]);
    CHECK(share(split, 0) == 288 && share(split, 1) == 224, "5:4 speeds: %lld %lld", (long long)share(split, 0),
          (long long)share(split, 1));
    CHECK(share(split, 0) % 8 == 0 && share(split, 1) % 8 == 0, "quantum of 8 rows");
    /* the estimate is smoothed: one step of the opposite imbalance moves it part of the way;
     * many steps of equal busy times bring it back to even */
    double fast[2] = {0.0125, 0.010};
    int64_t s0 = share(split, 0);
    balance_observe(&b, split, fast);
    balance_split(&b, 512, split);
    CHECK(share(split, 0) < s0 && share(split, 0) > 256, "one contrary step: %lld (was %lld)",
          (long long)share(split, 0), (long long)s0);
    for (int k = 0; k < 60; k++) {
        double t[2] = {share(split, 0) * 4e-5, share(split, 1) * 4e-5};   /* equal speeds */
        balance_observe(&b, split, t);
        balance_split(&b, 512, split);
    }
    CHECK(share(split, 0) == 256, "back to even after equal speeds: %lld", (long long)share(split, 0));
    /* a worker 10 times slower gets the least allowed, half the even share */
    double stuck[2] = {0.001, 0.010};
    for (int k = 0; k < 60; k++) {
        int64_t rows[3] = {0, 256, 512};
        balance_observe(&b, rows, stuck);
    }
    balance_split(&b, 512, split);
    CHECK(share(split, 1) == 128 && share(split, 0) == 384, "10x slower: %lld %lld", (long long)share(split, 0),
          (long long)share(split, 1));
    /* a batch below 16 rows a worker (a last validation batch): even */
    balance_split(&b, 20, split);
    CHECK(share(split, 0) == 10 && share(split, 1) == 10, "small batch: %lld %lld", (long long)share(split, 0),
          (long long)share(split, 1));
    balance_free(&b);

    /* 5 workers, a batch of 103 (shares under 64: quantum 1), speeds 1..5: every split sums to
     * n, stays within bounds, and orders the shares as the speeds */
    balance_init(&b, 5, 1);
    int64_t start[6] = {0, 20, 40, 60, 80, 103};
    double t5[5] = {5.0, 2.5, 5.0 / 3, 1.25, 23.0 / 20};   /* speeds 4, 8, 12, 16, 20 rows/s */
    balance_observe(&b, start, t5);
    balance_split(&b, 103, split);
    CHECK(sound(split, 5, 103), "5 workers: unsound");
    for (int r = 0; r < 4; r++)
        CHECK(share(split, r) <= share(split, r + 1), "5 workers: share %d %lld > share %d %lld", r,
              (long long)share(split, r), r + 1, (long long)share(split, r + 1));
    CHECK(share(split, 0) == 10 && share(split, 4) == 31, "5 workers: lo-clamped %lld, hi-clamped %lld",
          (long long)share(split, 0), (long long)share(split, 4));
    balance_free(&b);
    CHECK_DONE();
}
