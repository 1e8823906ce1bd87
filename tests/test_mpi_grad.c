/* test_mpi_grad: the sharded gradient equals the single-process gradient of the same global
 * batch. Run under mpirun with any number of ranks; every rank is a worker. For each loss kind
 * (with missing views and labels), the workers compute the step on their shares; rank 0 then
 * computes the whole batch alone (a communicator of one) and compares the summed gradients and
 * the global loss. Tolerance: |g_dist - g_single| <= 2e-5 * max|g_single| + 1e-7 (float sums in
 * another order), loss within 1e-5 relative: a dropped column term or a gradient divided by the
 * number of workers is off by far more. */
#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "rng.h"
#include "step.h"

enum { V = 3, N = 13 };
static const int widths[V] = {20, 12, 8};

/* The first n rows of the global batch, worker r's share of them: the even split, or with
 * skew the first worker as many rows as --balance adaptive allows and the others the rest. */
static void make_batch(uint8_t *buf, int n, int nw, int r, int skew, const float *x[V], const uint8_t *mask,
                       const int32_t *labels) {
    int64_t split[65], w64[V], rows;
    for (int v = 0; v < V; v++) w64[v] = widths[v];
    const int64_t first = skew && nw > 1 ? batch_share_max(n, nw, 1) : 0;
    for (int k = 0; k < nw; k++) {
        if (first) batch_split(n - first, nw - 1, k - 1, &split[k], &rows), split[k] += first;
        else batch_split(n, nw, k, &split[k], &rows);
    }
    split[0] = 0;
    split[nw] = n;
    int64_t r0 = split[r], b = split[r + 1] - split[r];
    hcl_batch_layout l;
    batch_layout(&l, n, b, nw, V, w64);
    batch_header_init(buf, HCL_BATCH_TRAIN, 0, 0, n, split, r, nw, V, 1, 1e-3f);
    memcpy(buf + l.labels, labels, sizeof(int32_t) * n);
    memcpy(buf + l.mask, mask, (size_t)n * V);
    for (int v = 0; v < V; v++)
        memcpy(buf + l.view[v], x[v] + r0 * widths[v], sizeof(float) * b * widths[v]);
}

/* A small model of the V views, the loss of the kind (with pair weights), AdamW. */
static void make_configs(enum hcl_loss_kind kind, hcl_model_config *mc, hcl_loss_config *lc, hcl_optim_config *oc) {
    model_config_default(mc);
    mc->nviews = V;
    for (int v = 0; v < V; v++) {
        snprintf(mc->names[v], sizeof mc->names[v], "v%d", v);
        mc->in_width[v] = widths[v];
    }
    mc->nhidden = 1;
    mc->hidden[0] = 16;
    mc->dim = 8;
    mc->nclasses = kind == HCL_LOSS_HYBRID ? 4 : 0;
    loss_config_default(lc, V, mc->dim);
    lc->kind = kind;
    lc->core_view = 1;
    lc->nclasses = mc->nclasses;
    lc->pair_weight[0][2] = 2.0f;
    optim_config_default(oc);
}

static const char *const variant_name[] = {
    "shared memory", "per-view collectives, micro-batches of 2, loss blocks of 2 x 4",
    "a column reduce per pair, shared memory", "a batch of W - 1 rows, MPI",
    "uneven shares, shared memory", "a batch of W - 1 rows, shared memory", "uneven shares, MPI",
    "bf16 wire, packed", "bf16 wire, per-view collectives", "hierarchical over 2 nodes",
    "hierarchical over 2 nodes, bf16 wire"};

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    /* The same global batch on every rank. */
    hcl_rng rng;
    rng_seed(&rng, 42);
    float *x[V];
    for (int v = 0; v < V; v++) {
        x[v] = hcl_floats((size_t)N * widths[v]);
        for (int i = 0; i < N * widths[v]; i++) x[v][i] = (float)rng_normal(&rng);
    }
    uint8_t mask[N * V];
    int32_t labels[N];
    for (int i = 0; i < N; i++) {
        labels[i] = (int32_t)rng_below(&rng, 4);
        for (int v = 0; v < V; v++) mask[i * V + v] = rng_uniform(&rng) < 0.8;
        mask[i * V + (i % V)] = 1;
    }
    uint8_t *buf = hcl_malloc(1 << 16), *full = hcl_malloc(1 << 16);
    make_batch(buf, N, size, rank, 0, (const float **)x, mask, labels);
    make_batch(full, N, 1, 0, 0, (const float **)x, mask, labels);
    /* A batch of fewer rows than workers (a small last validation batch): some workers have no
     * rows and must still take part in the loss's column reduces. */
    int ns = size > 1 ? size - 1 : 1;
    uint8_t *sbuf = hcl_malloc(1 << 16), *sfull = hcl_malloc(1 << 16);
    make_batch(sbuf, ns, size, rank, 0, (const float **)x, mask, labels);
    make_batch(sfull, ns, 1, 0, 0, (const float **)x, mask, labels);
    /* --balance adaptive's uneven shares: worker 0 has 1.5 times the even share */
    uint8_t *kbuf = hcl_malloc(1 << 16);
    make_batch(kbuf, N, size, rank, 1, (const float **)x, mask, labels);

    const enum hcl_loss_kind kinds[] = {HCL_LOSS_FULL, HCL_LOSS_CORE, HCL_LOSS_CLIP, HCL_LOSS_SUPCON,
                                        HCL_LOSS_HYBRID};
    /* variant 0: one packed collective, whole-batch encoder calls, the loss's blocks kept and one
     * column reduce for all pairs; variant 1: an all-gather per view in place, reduce-scatters of
     * 3 rows of every worker at a time, encoders on micro-batches of 2 rows (forward run again
     * per micro-batch for the backward), loss blocks of 2 rows x 4 columns (logits computed
     * again in pass 2, one column reduce); variant 2: one block of logits held, so each pair has its own
     * column reduce between its two passes; variants 3 and 5: the batch of W - 1 rows; 4 and 6:
     * uneven shares (--balance adaptive), worker 0 with 1.5 times the even share. Variants 0, 2,
     * 4 and 5 exchange through shared memory (worker_share_memory), the others by MPI
     * collectives (what workers on several nodes use). Variants 7 and 8: 0's and 1's collectives
 * with bf16 on the wire (worker_comm_bf16); 9 and 10: the gradient all-reduce hierarchical
 * over 2 nodes made of the workers (HCL_TEST_NODES), in f32 and with bf16. bf16 is compared
 * with the tolerance of its rounding (loss 3e-3 relative, gradient 1.5e-2 of its largest). */
    for (int variant = 0; variant < 11; variant++)
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        hcl_model_config mc;
        hcl_loss_config lc;
        hcl_optim_config oc;
        make_configs(kinds[k], &mc, &lc, &oc);
        char err[HCL_ERR_MAX];
        hcl_worker dist, single;
        const int bf16 = variant == 7 || variant == 8 || variant == 10, hier = variant >= 9;
        if (hier) setenv("HCL_TEST_NODES", "2", 1);
        CHECK(worker_init(&dist, MPI_COMM_WORLD, &mc, &lc, &oc, 1, 5, N, variant == 4 || variant == 6, err) == 0, "init: %s", err);
        unsetenv("HCL_TEST_NODES");
        if (hier) CHECK(ring_hierarchical(dist.ring) == (size >= 3), "hierarchical with %d workers", size);
        if (variant == 1 || variant == 8) {
            dist.packed = 0;
            dist.micro = 2;
            dist.rs_rows = 3;   /* chunked reduce-scatter, the last chunk partial */
            worker_select_exchange(&dist);   /* the per-view collectives, packed now 0 */
            loss_ctx_free(&dist.loss);
            loss_ctx_init_tile(&dist.loss, &lc, dist.b_max, N, 4);
            if (dist.loss.rows > 2) dist.loss.rows = 2;   /* blocks of 2 own rows */
        }
        if (variant == 2) dist.loss.nblk = 1;
        if (bf16) CHECK(worker_comm_bf16(&dist) == (size > 1), "bf16 wire with %d workers", size);
        if (variant == 0 || variant == 2 || variant == 4 || variant == 5)
            CHECK(worker_share_memory(&dist) == (size > 1), "worker_share_memory with %d workers on one node", size);
        hcl_step_result rd, rs;
        const int small = variant == 3 || variant == 5, uneven = variant == 4 || variant == 6;
        worker_forward_backward(&dist, small ? sbuf : uneven ? kbuf : buf, &rd);
        /* replicas hold bit-identical summed gradients */
        float *gd = hcl_floats((size_t)dist.model.nparams);
        worker_summed_grads(&dist, gd);
        uint32_t mine = hcl_crc32c(0, gd, sizeof(float) * dist.model.nparams), all[64];
        MPI_Allgather(&mine, 1, MPI_UINT32_T, all, 1, MPI_UINT32_T, MPI_COMM_WORLD);
        for (int r = 0; r < size; r++) CHECK(all[r] == all[0], "%s: worker %d gradient differs", loss_kind_name(kinds[k]), r);
        if (rank == 0) {
            CHECK(worker_init(&single, MPI_COMM_SELF, &mc, &lc, &oc, 1, 5, N, 0, err) == 0, "init: %s", err);
            worker_forward_backward(&single, small ? sfull : full, &rs);
            CHECK_CLOSE(rd.loss, rs.loss, bf16 ? 3e-3 : 1e-5, 0, loss_kind_name(kinds[k]));
            double gmax = 0, dmax = 0;
            for (int64_t i = 0; i < single.model.nparams; i++) {
                gmax = fmax(gmax, fabs(single.model.grads[i]));
                dmax = fmax(dmax, fabs(single.model.grads[i] - gd[i]));
            }
            const double tol = bf16 && size > 1 ? 1.5e-2 : 2e-5;
            CHECK((gmax > 0 || small) && dmax <= tol * gmax + 1e-7, "%s with %d workers (variant %d): max |dg| %g, max |g| %g",
                  loss_kind_name(kinds[k]), size, variant, dmax, gmax);
            printf("%s, %d workers, %s: loss %.7f vs %.7f, max |dg| %.3g of max |g| %.3g\n",
                   loss_kind_name(kinds[k]), size, variant_name[variant],
                   rd.loss, rs.loss, dmax, gmax);
            worker_free(&single);
        }
        free(gd);
        worker_free(&dist);
    }
    for (int v = 0; v < V; v++) free(x[v]);
    free(buf);
    free(full);
    free(sbuf);
    free(sfull);
    free(kbuf);
    int failed = check_failures, any;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    if (rank == 0) printf("test_mpi_grad: %d checks, %d failed\n", check_count, check_failures);
    return any ? 1 : 0;
}
