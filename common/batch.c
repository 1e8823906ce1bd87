/* batch: see batch.h. */
#include "batch.h"

#include <string.h>

void batch_split(int64_t n, int w, int r, int64_t *r0, int64_t *b) {
    int64_t q = n / w, rem = n % w;
    *b = q + (r < rem ? 1 : 0);
    *r0 = r * q + (r < rem ? r : rem);
}

int64_t batch_share_max(int64_t n, int w, int balance) {
    int64_t even = (n + w - 1) / w;
    if (!balance || w == 1) return even;
    return even + even / 2 < n ? even + even / 2 : n;
}

int batch_split_ok(const hcl_batch_header *h, const int64_t *split, int rank, int nworkers, int64_t b_max) {
    if (h->nworkers != nworkers || split[0] != 0 || split[nworkers] != h->n) return 0;
    for (int r = 0; r < nworkers; r++)
        if (split[r + 1] < split[r] || split[r + 1] - split[r] > b_max) return 0;
    return split[rank] == h->r0 && split[rank + 1] - split[rank] == h->b;
}

void batch_header_init(uint8_t *msg, uint32_t flags, int64_t step, int64_t epoch, int64_t n,
                       const int64_t *split, int w, int nw, int nviews, int has_labels, float lr) {
    hcl_batch_header *h = (hcl_batch_header *)msg;
    memset(h, 0, sizeof *h);
    h->magic = HCL_BATCH_MAGIC;
    h->flags = flags;
    h->step = step;
    h->epoch = epoch;
    h->n = n;
    h->nviews = nviews;
    h->has_labels = has_labels;
    h->lr = lr;
    h->nworkers = nw;
    if (!split) return;
    h->r0 = split[w];
    h->b = split[w + 1] - split[w];
    memcpy(batch_split_bounds(msg), split, sizeof(int64_t) * (size_t)(nw + 1));
}

static size_t align8(size_t x) { return (x + 7) & ~(size_t)7; }

size_t batch_layout(hcl_batch_layout *l, int64_t n, int64_t b, int nworkers, int nviews, const int64_t *widths) {
    size_t off = align8(sizeof(hcl_batch_header));
    l->split = off;
    off += (size_t)(nworkers + 1) * sizeof(int64_t);
    l->labels = off;
    off = align8(off + (size_t)n * sizeof(int32_t));
    l->mask = off;
    off = align8(off + (size_t)n * (size_t)nviews);
    for (int v = 0; v < nviews; v++) {
        l->view[v] = off;
        off = align8(off + (size_t)b * (size_t)widths[v] * sizeof(float));
    }
    l->total = off;
    return off;
}

size_t batch_snapshot_floats(int64_t nparams, int64_t nstate) {
    return (size_t)(nparams + nstate) + 4;
}

size_t batch_result_bytes(int nworkers) {
    return align8(sizeof(hcl_step_result)) + (size_t)nworkers * sizeof(double);
}

size_t batch_index_bytes(int64_t n, int nworkers) {
    return align8(sizeof(hcl_batch_header)) + (size_t)(nworkers + 1 + n) * sizeof(int64_t);
}

const int64_t *batch_index_rows(const uint8_t *msg) {
    const hcl_batch_header *h = (const hcl_batch_header *)msg;
    return batch_split_bounds((uint8_t *)msg) + h->nworkers + 1;
}

void batch_assemble(uint8_t *out, const uint8_t *msg, const hcl_dataset *ds) {
    const hcl_batch_header *h = (const hcl_batch_header *)msg;
    const int64_t *idx = batch_index_rows(msg);
    hcl_batch_layout l;
    batch_layout(&l, h->n, h->b, h->nworkers, ds->nviews, ds->widths);
    memcpy(out, h, l.labels);   /* the header and the split */
    dataset_gather_labels(ds, idx, h->n, (int32_t *)(out + l.labels));
    dataset_gather_mask(ds, idx, h->n, out + l.mask);
    for (int v = 0; v < ds->nviews; v++)
        dataset_gather_view(ds, v, idx + h->r0, h->b, (float *)(out + l.view[v]));
}

void batch_header_check(const uint8_t *msg, int rank, int nworkers, int nviews, int64_t n_max, int64_t b_max) {
    const hcl_batch_header *h = (const hcl_batch_header *)msg;
    HCL_CHECK(h->magic == HCL_BATCH_MAGIC, "batch message without the batch magic");
    if ((h->flags & (HCL_BATCH_TRAIN | HCL_BATCH_EVAL)) == 0) return;   /* a header alone */
    HCL_CHECK(h->nworkers == nworkers, "batch of step %lld split over %d workers, not %d", (long long)h->step,
              h->nworkers, nworkers);
    HCL_CHECK(h->nviews == nviews && h->n <= n_max && h->b <= b_max,
              "malformed batch header (step %lld, n %lld, b %lld)", (long long)h->step, (long long)h->n,
              (long long)h->b);
    HCL_CHECK(batch_split_ok(h, batch_split_bounds((uint8_t *)msg), rank, nworkers, b_max),
              "batch of step %lld: its split of %lld rows over %d workers is not sound for worker %d "
              "(rows [%lld,+%lld), at most %lld)", (long long)h->step, (long long)h->n, h->nworkers, rank,
              (long long)h->r0, (long long)h->b, (long long)b_max);
}
