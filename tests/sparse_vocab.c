/* sparse_vocab: a bag encoder's table of V rows in the step (worker/sparse.h), at a small and a
 * large vocabulary with the same batch. One worker (a singleton MPI world) running the step
 * functions directly; batches of B rows of L token ids drawn from the first 50,000 ids (so
 * both vocabularies see the same ids), E = 256, D = 128.
 *
 *   sparse_vocab test [V]     (tests/test_sparse_vocab.sh) with V = 1,000,000 by default:
 *     - resident memory after worker_init grows with V by 1 float per table entry, the weights
 *       (2% + 32 MB of slack): the gradient buffer and AdamW's two moments take pages only for
 *       the rows a batch writes (util.h hcl_floats_lazy);
 *     - 10 steps add what they add at V = 50,000 (the rows used: their gradient and moments),
 *       within 32 MB: nothing per step is sized by V;
 *     - a row no batch used is bit for bit its initial value, its moments 0;
 *     - the loss of every step is the same at both vocabularies (the rows used start from the
 *       same values: each table's N(0, 1) stream is drawn in row order).
 *   sparse_vocab bench ROUNDS [V]   (bench/sparse_vocab): the median milliseconds per step (40
 *     steps after the first) at V = 50,000 and at V, alternating round by round, and the ratio.
 * Output: one line per measure; exit 1 on a failed check. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memlimit.h"
#include "rng.h"
#include "step.h"
#include "util.h"

enum { B = 256, L = 32, E = 256, DIM = 128, IDS = 50000, STEPS = 10, BENCH_STEPS = 41, DENSE = 64 };

static double rss_mb(void) {
    memlimit_state s;
    memlimit_read(&s);
    return s.vm_rss / 1048576.0;
}

/* A 2-view model: tokens (bag:256, no hidden layer) and a dense view (mlp:256). */
static int make_worker(hcl_worker *w, int64_t V, char *err) {
    hcl_model_config mc;
    model_config_default(&mc);
    mc.nviews = 2;
    strcpy(mc.names[0], "words");
    strcpy(mc.names[1], "feat");
    mc.in_width[0] = L;
    mc.in_width[1] = DENSE;
    mc.nhidden = 1;
    mc.hidden[0] = 256;
    mc.dim = DIM;
    mc.spec[0] = (hcl_encoder_spec){.kind = HCL_ENC_BAG, .nhidden = 0, .embed = E, .vocab = (int)V, .pad = 0};
    hcl_loss_config lc;
    loss_config_default(&lc, 2, DIM);
    hcl_optim_config oc;
    optim_config_default(&oc);
    return worker_init(w, MPI_COMM_SELF, &mc, &lc, &oc, 1, 3, B, 0, err);
}

/* Batch s: ids in [1, IDS) (a fifth padding), the dense view a function of the ids. */
static void make_batch(uint8_t *buf, const hcl_batch_layout *l, int s) {
    const int64_t split[2] = {0, B};
    batch_header_init(buf, HCL_BATCH_TRAIN, s, 0, B, split, 0, 1, 2, 0, 1e-3f);
    memset(buf + l->mask, 1, (size_t)B * 2);
    for (int i = 0; i < B; i++) ((int32_t *)(buf + l->labels))[i] = -1;
    hcl_rng r;
    rng_derive(&r, 11, "sparse_vocab", (uint64_t)s);
    float *ids = (float *)(buf + l->view[0]), *x = (float *)(buf + l->view[1]);
    for (int i = 0; i < B; i++) {
        for (int j = 0; j < L; j++) ids[i * L + j] = rng_uniform(&r) < 0.2 ? 0.0f : (float)(1 + rng_below(&r, IDS - 1));
        for (int k = 0; k < DENSE; k++) x[i * DENSE + k] = (float)sin(ids[i * L + k % L] * 0.001 * (k + 1));
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Run n steps at vocabulary V; losses[s], the RSS after init and after the steps, the median ms
 * per step but the first (it creates the primitives). */
static int run(int64_t V, int n, double *losses, double *rss_init, double *rss_steps, double *ms, int check_rows) {
    char err[HCL_ERR_MAX];
    hcl_worker w;
    const double before = rss_mb();
    if (make_worker(&w, V, err) != 0) {
        fprintf(stderr, "sparse_vocab: %s\n", err);
        return -1;
    }
    *rss_init = rss_mb() - before;
    const int64_t widths[2] = {L, DENSE};
    hcl_batch_layout l;
    uint8_t *buf = hcl_malloc(batch_layout(&l, B, B, 1, 2, widths));
    const int64_t tab = w.model.enc[0].table, last = (V - 1) * E;
    const float last0 = w.model.params[tab + last];
    double t[BENCH_STEPS];
    for (int s = 0; s < n; s++) {
        make_batch(buf, &l, s);
        hcl_step_result res;
        double t0 = hcl_now();
        worker_step(&w, buf, &res);
        t[s] = (hcl_now() - t0) * 1e3;
        losses[s] = res.loss;
    }
    qsort(t + 1, (size_t)(n - 1), sizeof(double), cmp_double);
    *ms = t[1 + (n - 1) / 2];
    *rss_steps = rss_mb() - before - *rss_init;
    int bad = 0;
    if (check_rows) {   /* row V - 1 (>= IDS) was never used: its value and moments untouched */
        const float *m = w.opt_state + tab + last, *v = w.opt_state + w.model.nparams + tab + last;
        bad = w.model.params[tab + last] != last0 || m[0] != 0.0f || v[0] != 0.0f;
    }
    free(buf);
    worker_free(&w);
    return bad;
}

static int test(int64_t V) {
    double la[STEPS], lb[STEPS], ia, sa, ma, ib, sb, mb;
    int fail = 0;
    if (run(IDS, STEPS, la, &ia, &sa, &ma, 0) != 0 || run(V, STEPS, lb, &ib, &sb, &mb, 1) != 0) {
        printf("FAIL: an untouched row changed, or the worker did not start\n");
        return 1;
    }
    const double table_mb = (double)(V - IDS) * E * 4 / 1048576.0, grown = ib - ia;
    printf("table rows %lld -> %lld: resident after init grows %.0f MB (%.2f floats per added entry, "
           "1 expected: the weights)\n", (long long)IDS, (long long)V, grown, grown / table_mb);
    if (grown > table_mb * 1.02 + 32) fail = printf("FAIL: more than 1 float per table entry\n");
    printf("10 steps add %.1f MB resident at V = %d, %.1f MB at V = %lld\n", sa, IDS, sb, (long long)V);
    if (sb > sa + 32) fail = printf("FAIL: the steps grew resident memory by %.1f MB at V = %lld\n", sb, (long long)V);
    double dl = 0;
    for (int s = 0; s < STEPS; s++) dl = fmax(dl, fabs(la[s] - lb[s]));
    printf("losses at both vocabularies: max difference %.3g (step 0 %.6f)\n", dl, la[0]);
    if (dl > 1e-6 * fabs(la[0])) fail = printf("FAIL: the losses differ\n");
    return fail ? 1 : 0;
}

static int bench(int rounds, int64_t V) {
    double l[BENCH_STEPS], i, s, ma = 0, mb = 0;
    for (int r = 0; r < rounds; r++) {
        double a, b;
        int bad = r % 2 ? run(V, BENCH_STEPS, l, &i, &s, &b, 0) || run(IDS, BENCH_STEPS, l, &i, &s, &a, 0)
                        : run(IDS, BENCH_STEPS, l, &i, &s, &a, 0) || run(V, BENCH_STEPS, l, &i, &s, &b, 0);
        if (bad) return 1;   /* the order alternates round by round */
        printf("round %d: %.2f ms per step at V = %d, %.2f ms at V = %lld (ratio %.3f)\n", r + 1, a, IDS, b,
               (long long)V, b / a);
        ma += a;
        mb += b;
    }
    printf("mean: %.2f ms at V = %d, %.2f ms at V = %lld: ratio %.3f\n", ma / rounds, IDS, mb / rounds, (long long)V,
           mb / ma);
    return 0;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rc = 2;
    if (argc >= 2 && strcmp(argv[1], "test") == 0) rc = test(argc > 2 ? atoll(argv[2]) : 1000000);
    else if (argc >= 3 && strcmp(argv[1], "bench") == 0) rc = bench(atoi(argv[2]), argc > 3 ? atoll(argv[3]) : 1000000);
    else fprintf(stderr, "usage: sparse_vocab test [V] | bench ROUNDS [V]\n");
    MPI_Finalize();
    return rc;
}
