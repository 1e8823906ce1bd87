/* balance: see balance.h. */
#include "balance.h"

#include <stdlib.h>

#include "batch.h"
#include "util.h"

#define BALANCE_SMOOTH 0.2   /* weight of the newest step in a worker's speed */
#define BALANCE_QUANTUM 8    /* shares move in multiples of this many rows (of 64 or more) */

void balance_init(hcl_balance *b, int nw, int adaptive) {
    b->nw = nw;
    b->adaptive = adaptive && nw > 1;
    b->speed = hcl_calloc((size_t)nw, sizeof(double));
}

void balance_free(hcl_balance *b) {
    free(b->speed);
    b->speed = NULL;
}

void balance_observe(hcl_balance *b, const int64_t *split, const double *busy) {
    if (!b->adaptive) return;
    for (int r = 0; r < b->nw; r++) {
        int64_t rows = split[r + 1] - split[r];
        if (rows <= 0 || !(busy[r] > 0)) continue;
        double s = (double)rows / busy[r];
        b->speed[r] = b->speed[r] > 0 ? b->speed[r] + BALANCE_SMOOTH * (s - b->speed[r]) : s;
    }
}

void balance_split(const hcl_balance *b, int64_t n, int64_t *split) {
    const int nw = b->nw;
    double total = 0;
    int ready = b->adaptive && n >= 16 * (int64_t)nw;
    for (int r = 0; ready && r < nw; r++) {
        ready = b->speed[r] > 0;
        total += b->speed[r];
    }
    if (!ready) {
        int64_t r0, rows;
        for (int r = 0; r < nw; r++) {
            batch_split(n, nw, r, &r0, &rows);
            split[r] = r0;
        }
        split[nw] = n;
        return;
    }
    /* shares in proportion to speed, rounded down to the quantum and kept within [lo, hi]; the
     * rows left over (or too many) go a quantum at a time to the workers furthest below (above)
     * their target */
    const int64_t q = n / nw >= 64 ? BALANCE_QUANTUM : 1;
    const int64_t lo = n / nw / 2, hi = batch_share_max(n, nw, 1);
    int64_t *share = split + 1;   /* built in place, then turned into bounds */
    int64_t left = n;
    for (int r = 0; r < nw; r++) {
        double target = (double)n * b->speed[r] / total;
        int64_t s = (int64_t)(target / (double)q) * q;
        share[r] = s < lo ? lo : s > hi ? hi : s;
        left -= share[r];
    }
    while (left != 0) {
        int best = -1;
        double gap = 0;
        for (int r = 0; r < nw; r++) {
            double d = (double)n * b->speed[r] / total - (double)share[r];
            if (left > 0 ? share[r] < hi : share[r] > lo)
                if (best < 0 || (left > 0 ? d > gap : d < gap)) best = r, gap = d;
        }
        int64_t room = left > 0 ? hi - share[best] : share[best] - lo;
        int64_t step = q < room ? q : room;
        if (step > (left > 0 ? left : -left)) step = left > 0 ? left : -left;
        share[best] += left > 0 ? step : -step;
        left += left > 0 ? -step : step;
    }
    split[0] = 0;
    for (int r = 0; r < nw; r++) split[r + 1] = split[r] + share[r];
}
