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

enum { VOCAB = 23 };   /* bag variants: view 2 holds token ids in [0, VOCAB), 0 padding */

/* A small model of the V views (with bag, view 2 a bag encoder), the loss of the kind (with pair
 * weights), AdamW. */
static void make_configs(enum hcl_loss_kind kind, int bag, hcl_model_config *mc, hcl_loss_config *lc,
                         hcl_optim_config *oc) {
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
    if (bag) {
        mc->spec[2] = (hcl_encoder_spec){.kind = HCL_ENC_BAG, .nhidden = 1, .hidden = {10}, .embed = 6, .vocab = VOCAB};
    }
    if (bag == 2)   /* view 0's 20 values as a 5x4x1 image: two conv stages (5x4 -> 2x2 -> 1x1) */
        mc->spec[0] = (hcl_encoder_spec){.kind = HCL_ENC_CONV, .nhidden = 0, .nconv = 2, .chans = {3, 4},
                                         .img_h = 5, .img_w = 4, .img_c = 1};
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
    "hierarchical over 2 nodes, bf16 wire", "a bag encoder's table, shared memory",
    "a bag encoder's table, MPI, micro-batches of 2", "a bag encoder's table, a batch of W - 1 rows, MPI",
    "a conv and a bag encoder, MPI, micro-batches of 2", "a conv and a bag encoder, shared memory"};
enum { VARIANTS = 16 };

/* One update on every worker and on the single process (rank 0): the parameters agree, the
 * tables' rows included (the lazy AdamW of sparse.h), and every replica holds the same bits. */
static void check_update(hcl_worker *dist, hcl_worker *single, hcl_step_result *rd, hcl_step_result *rs,
                         const char *what, int variant) {
    worker_update(dist, rd);
    const hcl_model *m = &dist->model;
    uint32_t mine = hcl_crc32c(0, m->params, sizeof(float) * (size_t)m->nparams), all[64];
    int size;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Allgather(&mine, 1, MPI_UINT32_T, all, 1, MPI_UINT32_T, MPI_COMM_WORLD);
    for (int r = 0; r < size; r++) CHECK(all[r] == all[0], "%s (variant %d): worker %d parameters differ", what, variant, r);
    if (!single) return;
    worker_update(single, rs);
    double dmax = 0, pad = 0;
    const float *p0 = single->model.params;
    for (int64_t i = 0; i < m->nparams; i++) dmax = fmax(dmax, fabs(p0[i] - m->params[i]));
    const hcl_tensor *t = model_find_tensor(m, "encoder.v2.embed.weight");
    for (int64_t e = 0; t && e < t->shape[1]; e++) pad += fabs(m->params[t->offset + e]);   /* row 0: padding */
    CHECK(t && dmax <= 1e-5 && pad == 0, "%s (variant %d): parameters after one update differ by %g (padding "
          "row |sum| %g)", what, variant, dmax, pad);
    printf("%s, %d workers, %s: after one update max |dp| %.3g\n", what, size, variant_name[variant], dmax);
}

/* Every batch the variants run, the same global rows on every rank. */
typedef struct {
    float *x[V], *xt2;
    uint8_t mask[N * V];
    int32_t labels[N];
    uint8_t *buf, *full, *sbuf, *sfull, *kbuf, *tbuf, *tfull, *tsbuf, *tsfull;
} batches;

static void make_batches(batches *bt, int size, int rank) {
    /* The same global batch on every rank. */
    hcl_rng rng;
    rng_seed(&rng, 42);
    for (int v = 0; v < V; v++) {
        bt->x[v] = hcl_floats((size_t)N * widths[v]);
        for (int i = 0; i < N * widths[v]; i++) bt->x[v][i] = (float)rng_normal(&rng);
    }
    uint8_t *mask = bt->mask;
    int32_t *labels = bt->labels;
    for (int i = 0; i < N; i++) {
        labels[i] = (int32_t)rng_below(&rng, 4);
        for (int v = 0; v < V; v++) mask[i * V + v] = rng_uniform(&rng) < 0.8;
        mask[i * V + (i % V)] = 1;
    }
    /* the bag variants' batch: view 2 as token ids, about one in five the padding id 0 */
    float *x[V] = {bt->x[0], bt->x[1], bt->x[2]}, *xt[V] = {x[0], x[1], hcl_floats((size_t)N * widths[2])};
    bt->xt2 = xt[2];
    for (int i = 0; i < N * widths[2]; i++) xt[2][i] = rng_uniform(&rng) < 0.2 ? 0.0f : (float)(1 + rng_below(&rng, VOCAB - 2));
    uint8_t *tbuf = bt->tbuf = hcl_malloc(1 << 16), *tfull = bt->tfull = hcl_malloc(1 << 16), *tsbuf = bt->tsbuf = hcl_malloc(1 << 16);
    uint8_t *tsfull = bt->tsfull = hcl_malloc(1 << 16);
    make_batch(tbuf, N, size, rank, 0, (const float **)xt, mask, labels);
    make_batch(tfull, N, 1, 0, 0, (const float **)xt, mask, labels);
    make_batch(tsbuf, size > 1 ? size - 1 : 1, size, rank, 0, (const float **)xt, mask, labels);
    make_batch(tsfull, size > 1 ? size - 1 : 1, 1, 0, 0, (const float **)xt, mask, labels);
    uint8_t *buf = bt->buf = hcl_malloc(1 << 16), *full = bt->full = hcl_malloc(1 << 16);
    make_batch(buf, N, size, rank, 0, (const float **)x, mask, labels);
    make_batch(full, N, 1, 0, 0, (const float **)x, mask, labels);
    /* A batch of fewer rows than workers (a small last validation batch): some workers have no
     * rows and must still take part in the loss's column reduces. */
    int ns = size > 1 ? size - 1 : 1;
    uint8_t *sbuf = bt->sbuf = hcl_malloc(1 << 16), *sfull = bt->sfull = hcl_malloc(1 << 16);
    make_batch(sbuf, ns, size, rank, 0, (const float **)x, mask, labels);
    make_batch(sfull, ns, 1, 0, 0, (const float **)x, mask, labels);
    /* --balance adaptive's uneven shares: worker 0 has 1.5 times the even share */
    uint8_t *kbuf = bt->kbuf = hcl_malloc(1 << 16);
    make_batch(kbuf, N, size, rank, 1, (const float **)x, mask, labels);
}

static void free_batches(batches *bt) {
    for (int v = 0; v < V; v++) free(bt->x[v]);
    free(bt->xt2);
    uint8_t *bufs[] = {bt->buf, bt->full, bt->sbuf, bt->sfull, bt->kbuf, bt->tbuf, bt->tfull, bt->tsbuf, bt->tsfull};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    batches bt;
    make_batches(&bt, size, rank);
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
 * with the tolerance of its rounding (loss 3e-3 relative, gradient 1.5e-2 of its largest).
 * Variants 11-13: view 2 through a bag encoder, its table's rows exchanged sparsely (sparse.h),
 * against one process's dense backward into the table; then one update each, the lazy AdamW of
 * the rows (striped over the workers with shared memory), against one process's. Variants 14-15:
 * view 0 through a conv encoder too (its stages in the ring's slice of its layer 0). */
    for (int variant = 0; variant < VARIANTS; variant++)
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        hcl_model_config mc;
        hcl_loss_config lc;
        hcl_optim_config oc;
        const int bag = variant >= 14 ? 2 : variant >= 11;
        make_configs(kinds[k], bag, &mc, &lc, &oc);
        char err[HCL_ERR_MAX];
        hcl_worker dist, single;
        const int bf16 = variant == 7 || variant == 8 || variant == 10, hier = variant >= 9;
        if (hier) setenv("HCL_TEST_NODES", "2", 1);
        CHECK(worker_init(&dist, MPI_COMM_WORLD, &mc, &lc, &oc, 1, 5, N, variant == 4 || variant == 6, err) == 0, "init: %s", err);
        unsetenv("HCL_TEST_NODES");
        if (hier) CHECK(ring_hierarchical(dist.ring) == (size >= 3), "hierarchical with %d workers", size);
        if (variant == 1 || variant == 8 || variant == 12 || variant == 14) {
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
        if (variant == 0 || variant == 2 || variant == 4 || variant == 5 || variant == 11 || variant == 15)
            CHECK(worker_share_memory(&dist) == (size > 1), "worker_share_memory with %d workers on one node", size);
        hcl_step_result rd, rs;
        const int small = variant == 3 || variant == 5 || variant == 13, uneven = variant == 4 || variant == 6;
        const uint8_t *dbuf = bag ? (small ? bt.tsbuf : bt.tbuf) : small ? bt.sbuf : uneven ? bt.kbuf : bt.buf;
        const uint8_t *sref = bag ? (small ? bt.tsfull : bt.tfull) : small ? bt.sfull : bt.full;
        worker_forward_backward(&dist, dbuf, &rd);
        /* replicas hold bit-identical summed gradients */
        float *gd = hcl_floats((size_t)dist.model.nparams);
        worker_summed_grads(&dist, gd);
        uint32_t mine = hcl_crc32c(0, gd, sizeof(float) * dist.model.nparams), all[64];
        MPI_Allgather(&mine, 1, MPI_UINT32_T, all, 1, MPI_UINT32_T, MPI_COMM_WORLD);
        for (int r = 0; r < size; r++) CHECK(all[r] == all[0], "%s: worker %d gradient differs", loss_kind_name(kinds[k]), r);
        if (rank == 0) {
            CHECK(worker_init(&single, MPI_COMM_SELF, &mc, &lc, &oc, 1, 5, N, 0, err) == 0, "init: %s", err);
            worker_forward_backward(&single, sref, &rs);
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
        }
        if (bag) check_update(&dist, rank == 0 ? &single : NULL, &rd, &rs, loss_kind_name(kinds[k]), variant);
        if (rank == 0) worker_free(&single);
        free(gd);
        worker_free(&dist);
    }
    free_batches(&bt);
    int failed = check_failures, any;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    if (rank == 0) printf("test_mpi_grad: %d checks, %d failed\n", check_count, check_failures);
    return any ? 1 : 0;
}
