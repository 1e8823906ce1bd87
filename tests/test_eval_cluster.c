/* test_eval_cluster DIR: the clustering scores of common/eval_cluster.h on the arrays in DIR,
 * one line each, for tests/test_eval_cluster.sh to compare with scikit-learn and scipy:
 *   a.npy, b.npy (m, n) int32 labelings, k.npy (m, 2) int32 their label counts
 *       -> "labels I ACC NMI ARI" (a: clusters, b: classes)
 *   cost.npy (c s, s) float64: c square cost matrices -> "assign I TOTAL" (the minimum cost)
 *   x.npy (n, d) float32, y.npy (n,) int32 -> "kmeans ACC NMI ARI INERTIA" (k = max y + 1, 10 seeds)
 * Exit 2 with one line when a file is missing or malformed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval_cluster.h"
#include "npy.h"
#include "util.h"

static void open_npy(npy_file *f, const char *dir, const char *name, enum npy_dtype t, int ndim) {
    char p[1200], err[HCL_ERR_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (npy_open(f, p, err) != 0 || f->dtype != t || f->ndim != ndim) {
        fprintf(stderr, "test_eval_cluster: %s: %s\n", p, err[0] ? err : "unexpected dtype or shape");
        exit(2);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_eval_cluster DIR\n");
        return 2;
    }
    npy_file a, b, k, cost, x, y;
    open_npy(&a, argv[1], "a.npy", NPY_I32, 2);
    open_npy(&b, argv[1], "b.npy", NPY_I32, 2);
    open_npy(&k, argv[1], "k.npy", NPY_I32, 2);
    const int64_t m = a.shape[0], n = a.shape[1];
    for (int64_t i = 0; i < m; i++) {
        const int32_t *ai = (const int32_t *)a.data + i * n, *bi = (const int32_t *)b.data + i * n;
        const int ka = ((const int32_t *)k.data)[2 * i], kb = ((const int32_t *)k.data)[2 * i + 1];
        printf("labels %lld %.17g %.17g %.17g\n", (long long)i, eval_cluster_accuracy(ai, ka, bi, kb, n),
               eval_nmi(ai, ka, bi, kb, n), eval_ari(ai, ka, bi, kb, n));
    }
    open_npy(&cost, argv[1], "cost.npy", NPY_F64, 2);
    const int s = (int)cost.shape[1];
    int *match = hcl_malloc(sizeof(int) * (size_t)s);
    for (int64_t c = 0; c < cost.shape[0] / s; c++) {
        const double *cm = (const double *)cost.data + c * s * s;
        eval_hungarian(cm, s, match);
        double total = 0.0;
        for (int i = 0; i < s; i++) total += cm[(size_t)i * s + match[i]];
        printf("assign %lld %.17g\n", (long long)c, total);
    }
    open_npy(&x, argv[1], "x.npy", NPY_F32, 2);
    open_npy(&y, argv[1], "y.npy", NPY_I32, 1);
    int nclasses = 0;
    for (int64_t i = 0; i < y.shape[0]; i++)
        if (((const int32_t *)y.data)[i] + 1 > nclasses) nclasses = ((const int32_t *)y.data)[i] + 1;
    eval_cluster_result r;
    eval_cluster(&r, x.data, y.data, x.shape[0], (int)x.shape[1], nclasses, 10, 1);
    printf("kmeans %.17g %.17g %.17g %.17g\n", r.accuracy, r.nmi, r.ari, r.inertia);
    free(match);
    npy_close(&a), npy_close(&b), npy_close(&k), npy_close(&cost), npy_close(&x), npy_close(&y);
    return 0;
}
