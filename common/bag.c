/* bag: see bag.h. */
#include "bag.h"

#include <string.h>

/* Non-padding ids of row x (L). */
static int bag_count(const float *x, int L, int pad) {
    int n = 0;
    for (int j = 0; j < L; j++) n += (int)x[j] != pad;
    return n;
}

void bag_forward(float *f, const float *x, const float *table, int B, int L, int E, int pad) {
    for (int b = 0; b < B; b++) {
        const float *ids = x + (int64_t)b * L;
        float *out = f + (int64_t)b * E;
        memset(out, 0, sizeof(float) * (size_t)E);
        int n = bag_count(ids, L, pad);
        if (n == 0) continue;
        for (int j = 0; j < L; j++) {
            int id = (int)ids[j];
            if (id == pad) continue;
            const float *row = table + (int64_t)id * E;
            for (int e = 0; e < E; e++) out[e] += row[e];
        }
        const float s = 1.0f / (float)n;
        for (int e = 0; e < E; e++) out[e] *= s;
    }
}

void bag_backward(float *dtable, const float *df, const float *x, int B, int L, int E, int pad) {
    for (int b = 0; b < B; b++) {
        const float *ids = x + (int64_t)b * L;
        int n = bag_count(ids, L, pad);
        if (n == 0) continue;
        const float s = 1.0f / (float)n;
        const float *g = df + (int64_t)b * E;
        for (int j = 0; j < L; j++) {
            int id = (int)ids[j];
            if (id == pad) continue;
            float *row = dtable + (int64_t)id * E;
            for (int e = 0; e < E; e++) row[e] += g[e] * s;
        }
    }
}
