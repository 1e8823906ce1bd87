/* eval_cluster: see eval_cluster.h. */
#include "eval_cluster.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "util.h"

/* ---- scores of two labelings --------------------------------------------------------------- */

/* The Hungarian algorithm with potentials (Kuhn-Munkres, O(n^3)): u, v the row and column
 * potentials, p[j] the row matched to column j (1-based, 0 = free), way[] the path back. */
void eval_hungarian(const double *cost, int n, int *match) {
    double *u = hcl_calloc((size_t)n + 1, sizeof(double)), *v = hcl_calloc((size_t)n + 1, sizeof(double));
    double *minv = hcl_malloc(sizeof(double) * ((size_t)n + 1));
    int *p = hcl_calloc((size_t)n + 1, sizeof(int)), *way = hcl_calloc((size_t)n + 1, sizeof(int));
    uint8_t *used = hcl_malloc((size_t)n + 1);
    for (int i = 1; i <= n; i++) {
        p[0] = i;
        int j0 = 0;
        for (int j = 0; j <= n; j++) minv[j] = INFINITY;
        memset(used, 0, (size_t)n + 1);
        do {
            used[j0] = 1;
            const int i0 = p[j0];
            double delta = INFINITY;
            int j1 = 0;
            for (int j = 1; j <= n; j++) {
                if (used[j]) continue;
                const double cur = cost[(size_t)(i0 - 1) * n + (j - 1)] - u[i0] - v[j];
                if (cur < minv[j]) minv[j] = cur, way[j] = j0;
                if (minv[j] < delta) delta = minv[j], j1 = j;
            }
            for (int j = 0; j <= n; j++) {
                if (used[j]) u[p[j]] += delta, v[j] -= delta;
                else minv[j] -= delta;
            }
            j0 = j1;
        } while (p[j0] != 0);
        do {
            const int j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
        } while (j0);
    }
    for (int j = 1; j <= n; j++) match[p[j] - 1] = j - 1;
    free(u), free(v), free(minv), free(p), free(way), free(used);
}

/* The (ka, kb) contingency table of two labelings. */
static int64_t *contingency(const int32_t *a, int ka, const int32_t *b, int kb, int64_t n) {
    int64_t *c = hcl_calloc((size_t)ka * (size_t)kb, sizeof(int64_t));
    for (int64_t i = 0; i < n; i++) {
        HCL_CHECK(a[i] >= 0 && a[i] < ka && b[i] >= 0 && b[i] < kb, "eval_cluster: labels %d, %d of %d, %d",
                  a[i], b[i], ka, kb);
        c[(size_t)a[i] * kb + b[i]]++;
    }
    return c;
}

/* The contingency table with its row sums ra (ka), column sums cb (kb) and how many of each are
 * not 0: what NMI and ARI are computed from. */
typedef struct {
    int ka, kb, nza, nzb;
    int64_t *c, *ra, *cb;
} table;

static void table_make(table *t, const int32_t *a, int ka, const int32_t *b, int kb, int64_t n) {
    t->ka = ka, t->kb = kb;
    t->c = contingency(a, ka, b, kb, n);
    t->ra = hcl_calloc((size_t)ka, sizeof(int64_t));
    t->cb = hcl_calloc((size_t)kb, sizeof(int64_t));
    for (int i = 0; i < ka; i++)
        for (int j = 0; j < kb; j++) t->ra[i] += t->c[(size_t)i * kb + j], t->cb[j] += t->c[(size_t)i * kb + j];
    t->nza = t->nzb = 0;
    for (int i = 0; i < ka; i++) t->nza += t->ra[i] != 0;
    for (int j = 0; j < kb; j++) t->nzb += t->cb[j] != 0;
}

static void table_free(table *t) { free(t->c), free(t->ra), free(t->cb); }

double eval_cluster_accuracy(const int32_t *a, int ka, const int32_t *b, int kb, int64_t n) {
    if (n == 0) return NAN;
    const int k = ka > kb ? ka : kb;
    int64_t *c = contingency(a, ka, b, kb, n);
    double *cost = hcl_calloc((size_t)k * k, sizeof(double));
    for (int i = 0; i < ka; i++)
        for (int j = 0; j < kb; j++) cost[(size_t)i * k + j] = -(double)c[(size_t)i * kb + j];
    int *match = hcl_malloc(sizeof(int) * (size_t)k);
    eval_hungarian(cost, k, match);
    int64_t hit = 0;
    for (int i = 0; i < ka; i++)
        if (match[i] < kb) hit += c[(size_t)i * kb + match[i]];
    free(c), free(cost), free(match);
    return (double)hit / (double)n;
}

/* Entropy (nats) of the counts m[0..k) of n. */
static double entropy(const int64_t *m, int k, int64_t n) {
    double h = 0.0;
    for (int i = 0; i < k; i++)
        if (m[i]) h -= (double)m[i] / (double)n * log((double)m[i] / (double)n);
    return h;
}

double eval_nmi(const int32_t *a, int ka, const int32_t *b, int kb, int64_t n) {
    if (n == 0) return NAN;
    table t;
    table_make(&t, a, ka, b, kb, n);
    double mi = 0.0, r;
    for (int i = 0; i < ka; i++)
        for (int j = 0; j < kb; j++) {
            const int64_t x = t.c[(size_t)i * kb + j];
            if (x) mi += (double)x / (double)n * log((double)x * (double)n / ((double)t.ra[i] * (double)t.cb[j]));
        }
    if (t.nza == t.nzb && t.nza <= 1) r = 1.0;   /* neither labeling splits the rows: identical */
    else if (mi <= 0.0) r = 0.0;
    else r = mi / (0.5 * (entropy(t.ra, ka, n) + entropy(t.cb, kb, n)));
    table_free(&t);
    return r;
}

static double pairs(int64_t x) { return 0.5 * (double)x * (double)(x - 1); }

double eval_ari(const int32_t *a, int ka, const int32_t *b, int kb, int64_t n) {
    if (n == 0) return NAN;
    table t;
    table_make(&t, a, ka, b, kb, n);
    double sij = 0.0, sa = 0.0, sb = 0.0;
    for (int i = 0; i < ka; i++)
        for (int j = 0; j < kb; j++) sij += pairs(t.c[(size_t)i * kb + j]);
    for (int i = 0; i < ka; i++) sa += pairs(t.ra[i]);
    for (int j = 0; j < kb; j++) sb += pairs(t.cb[j]);
    /* fewer than 2 rows, both labelings one cluster, or both all singletons: scikit-learn's
     * special case (no pair the two disagree on), 1 */
    const double expected = n < 2 ? 0.0 : sa * sb / pairs(n), top = 0.5 * (sa + sb);
    const double r = n < 2 || top == expected ? 1.0 : (sij - expected) / (top - expected);
    table_free(&t);
    return r;
}

/* ---- k-means -------------------------------------------------------------------------------- */

static double dist2(const float *x, const double *c, int dim) {
    double s = 0.0;
    for (int d = 0; d < dim; d++) {
        const double t = (double)x[d] - c[d];
        s += t * t;
    }
    return s;
}

/* k-means++ (Arthur & Vassilvitskii 2007): the first centre a uniform row, each next one a row
 * drawn with probability proportional to its squared distance to the nearest centre so far. */
static void kmeans_seed(const float *x, int64_t n, int dim, int k, hcl_rng *rng, double *cent, double *near) {
    int64_t first = (int64_t)rng_below(rng, (uint64_t)n);
    for (int d = 0; d < dim; d++) cent[d] = x[first * dim + d];
    for (int64_t i = 0; i < n; i++) near[i] = dist2(x + i * dim, cent, dim);
    for (int c = 1; c < k; c++) {
        double total = 0.0;
        for (int64_t i = 0; i < n; i++) total += near[i];
        int64_t pick = (int64_t)rng_below(rng, (uint64_t)n);   /* all rows equal: any */
        if (total > 0.0) {
            double t = rng_uniform(rng) * total;
            for (pick = 0; pick < n - 1 && (t -= near[pick]) >= 0.0; pick++) {}
        }
        double *cc = cent + (size_t)c * dim;
        for (int d = 0; d < dim; d++) cc[d] = x[pick * dim + d];
        for (int64_t i = 0; i < n; i++) {
            const double e = dist2(x + i * dim, cc, dim);
            if (e < near[i]) near[i] = e;
        }
    }
}

/* Lloyd's iterations from the centres in cent until no row changes cluster (or max_iter); an
 * empty cluster takes the row farthest from its centre. Returns the inertia. */
static double kmeans_lloyd(const float *x, int64_t n, int dim, int k, int max_iter, double *cent, int32_t *assign,
                           double *near, int64_t *count, int *iters) {
    for (int64_t i = 0; i < n; i++) assign[i] = -1;
    double inertia = 0.0;
    for (int it = 1; it <= max_iter; it++) {
        int64_t moved = 0;
        inertia = 0.0;
        for (int64_t i = 0; i < n; i++) {
            int best = 0;
            double bd = DBL_MAX;
            for (int c = 0; c < k; c++) {
                const double e = dist2(x + i * dim, cent + (size_t)c * dim, dim);
                if (e < bd) bd = e, best = c;
            }
            moved += assign[i] != best;
            assign[i] = best;
            near[i] = bd;
            inertia += bd;
        }
        *iters = it;
        if (!moved) break;
        memset(cent, 0, sizeof(double) * (size_t)k * dim);
        memset(count, 0, sizeof(int64_t) * (size_t)k);
        for (int64_t i = 0; i < n; i++) {
            count[assign[i]]++;
            for (int d = 0; d < dim; d++) cent[(size_t)assign[i] * dim + d] += x[i * dim + d];
        }
        for (int c = 0; c < k; c++) {
            if (count[c] == 0) {   /* the farthest row becomes this centre */
                int64_t far = 0;
                for (int64_t i = 1; i < n; i++) far = near[i] > near[far] ? i : far;
                for (int d = 0; d < dim; d++) cent[(size_t)c * dim + d] = x[far * dim + d];
                near[far] = 0.0;
                continue;
            }
            for (int d = 0; d < dim; d++) cent[(size_t)c * dim + d] /= (double)count[c];
        }
    }
    return inertia;
}

double eval_kmeans(const float *x, int64_t n, int dim, int k, int seeds, int max_iter, uint64_t seed,
                   int32_t *assign, int *iters) {
    HCL_CHECK(n >= 1 && k >= 1 && seeds >= 1, "eval_kmeans: %lld rows, k %d, %d seeds", (long long)n, k, seeds);
    double *cent = hcl_malloc(sizeof(double) * (size_t)k * dim), *near = hcl_malloc(sizeof(double) * (size_t)n);
    int64_t *count = hcl_malloc(sizeof(int64_t) * (size_t)k);
    int32_t *run = hcl_malloc(sizeof(int32_t) * (size_t)n);
    double best = INFINITY;
    for (int s = 0; s < seeds; s++) {
        hcl_rng rng;
        rng_seed(&rng, seed + 0x9e3779b97f4a7c15ull * (uint64_t)(s + 1));
        kmeans_seed(x, n, dim, k, &rng, cent, near);
        int it = 0;
        const double inertia = kmeans_lloyd(x, n, dim, k, max_iter, cent, run, near, count, &it);
        if (inertia < best) {
            best = inertia;
            *iters = it;
            memcpy(assign, run, sizeof(int32_t) * (size_t)n);
        }
    }
    free(cent), free(near), free(count), free(run);
    return best;
}

void eval_cluster(eval_cluster_result *r, const float *x, const int32_t *y, int64_t n, int dim, int nclasses,
                  int seeds, uint64_t seed) {
    memset(r, 0, sizeof *r);
    r->accuracy = r->nmi = r->ari = r->inertia = NAN;
    if (n < nclasses || nclasses < 2) return;
    const double t0 = hcl_now();
    int32_t *a = hcl_malloc(sizeof(int32_t) * (size_t)n);
    r->inertia = eval_kmeans(x, n, dim, nclasses, seeds, 300, seed, a, &r->iters);
    r->accuracy = eval_cluster_accuracy(a, nclasses, y, nclasses, n);
    r->nmi = eval_nmi(a, nclasses, y, nclasses, n);
    r->ari = eval_ari(a, nclasses, y, nclasses, n);
    free(a);
    r->seconds = hcl_now() - t0;
}
