/* batcher: see batcher.h. */
#include "batcher.h"

#include <string.h>

#include "rng.h"
#include "util.h"

void batcher_init(hcl_batcher *bt, const hcl_dataset *train, const hcl_dataset *val, int64_t batch,
                  int no_shuffle, int balance) {
    memset(bt, 0, sizeof *bt);
    bt->train = train;
    bt->val = val;
    bt->batch = batch;
    bt->steps_per_epoch = train->n / batch;
    bt->no_shuffle = no_shuffle;
    bt->balance = balance;
    bt->perm = hcl_malloc(sizeof(int64_t) * (size_t)train->n);
    bt->perm_epoch = -1;
    int64_t most = val && val->n > batch ? val->n : batch;
    bt->rows = hcl_malloc(sizeof(int64_t) * (size_t)most);
}

void batcher_free(hcl_batcher *bt) {
    batcher_stop(bt);
    free(bt->perm);
    free(bt->rows);
    memset(bt, 0, sizeof *bt);
}

static void widths_of(const hcl_dataset *ds, int64_t *widths) {
    for (int v = 0; v < ds->nviews; v++) widths[v] = ds->widths[v];
}

size_t batcher_message_bytes(const hcl_batcher *bt, int nmsg, int direct) {
    if (direct) return batch_index_bytes(bt->batch, nmsg);
    int64_t widths[HCL_MAX_VIEWS];
    widths_of(bt->train, widths);
    hcl_batch_layout l;
    return batch_layout(&l, bt->batch, batch_share_max(bt->batch, nmsg, bt->balance), nmsg, bt->train->nviews,
                        widths);
}

void batcher_start(hcl_batcher *bt, int nmsg, uint64_t seed, int direct) {
    bt->seed = seed;
    bt->direct = direct;
    bt->nmsg = nmsg;
    balance_init(&bt->bal, nmsg, bt->balance);
    for (int s = 0; s < HCL_BATCHES_IN_FLIGHT; s++) bt->split[s] = hcl_calloc((size_t)nmsg + 1, sizeof(int64_t));
    bt->last_split = hcl_calloc((size_t)nmsg + 1, sizeof(int64_t));
}

void batcher_stop(hcl_batcher *bt) {
    if (!bt->last_split) return;
    balance_free(&bt->bal);
    for (int s = 0; s < HCL_BATCHES_IN_FLIGHT; s++) {
        free(bt->split[s]);
        bt->split[s] = NULL;
    }
    free(bt->last_split);
    bt->last_split = NULL;
}

int64_t batcher_rows(hcl_batcher *bt, int64_t step) {
    HCL_CHECK(step >= 0, "batcher_rows: step %lld (run_resume checks a checkpoint's)", (long long)step);
    int64_t epoch = step / bt->steps_per_epoch;
    int64_t k = step % bt->steps_per_epoch;
    if (epoch != bt->perm_epoch) {
        hcl_rng rng;
        rng_derive(&rng, bt->seed, "epoch", (uint64_t)epoch);
        if (bt->no_shuffle) for (int64_t i = 0; i < bt->train->n; i++) bt->perm[i] = i;
        else rng_permutation(&rng, bt->perm, bt->train->n);
        bt->perm_epoch = epoch;
    }
    memcpy(bt->rows, bt->perm + k * bt->batch, sizeof(int64_t) * (size_t)bt->batch);
    return epoch;
}

size_t batcher_fill(const hcl_dataset *ds, const int64_t *rows, int64_t n, const int64_t *split, int w, int nw,
                    uint32_t flags, int64_t step, int64_t epoch, float lr, uint8_t *buf) {
    batch_header_init(buf, flags, step, epoch, n, split, w, nw, ds->nviews, ds->has_labels, lr);
    const hcl_batch_header *h = (const hcl_batch_header *)buf;
    int64_t widths[HCL_MAX_VIEWS];
    widths_of(ds, widths);
    hcl_batch_layout l;
    batch_layout(&l, n, h->b, nw, ds->nviews, widths);
    dataset_gather_labels(ds, rows, n, (int32_t *)(buf + l.labels));
    dataset_gather_mask(ds, rows, n, buf + l.mask);
    for (int v = 0; v < ds->nviews; v++)
        dataset_gather_view(ds, v, rows + h->r0, h->b, (float *)(buf + l.view[v]));
    return l.total;
}

void batcher_pack(hcl_batcher *bt, int slot, const hcl_job *j, float lr, hcl_outbox *ob) {
    const int data = (j->flags & (HCL_BATCH_TRAIN | HCL_BATCH_EVAL)) != 0;
    const hcl_dataset *ds = (j->flags & HCL_BATCH_EVAL) ? bt->val : bt->train;
    const int nw = ob->n;
    int64_t *split = bt->split[slot];
    if (j->flags & HCL_BATCH_TRAIN) {
        batcher_rows(bt, j->step);
    } else if (j->flags & HCL_BATCH_EVAL) {
        for (int64_t i = 0; i < j->n; i++) bt->rows[i] = (int64_t)j->eval_index * bt->batch + i;
    }
    if (data) balance_split(&bt->bal, j->n, split);
    for (int w = 0; w < nw; w++) {
        uint8_t *b = ob->buf + (size_t)w * ob->stride;
        if (!data) {
            batch_header_init(b, j->flags, j->step, 0, 0, NULL, 0, 0, 0, 0, 0.0f);
            ob->len[w] = sizeof(hcl_batch_header);
        } else if (bt->direct) {
            batch_header_init(b, j->flags, j->step, j->epoch, j->n, split, w, nw, ds->nviews, ds->has_labels, lr);
            memcpy((int64_t *)batch_index_rows(b), bt->rows, sizeof(int64_t) * (size_t)j->n);
            ob->len[w] = batch_index_bytes(j->n, nw);
        } else {
            ob->len[w] = batcher_fill(ds, bt->rows, j->n, split, w, nw, j->flags, j->step, j->epoch, lr, b);
        }
    }
}

void batcher_observe(hcl_batcher *bt, int slot, const double *busy) {
    balance_observe(&bt->bal, bt->split[slot], busy);
    memcpy(bt->last_split, bt->split[slot], sizeof(int64_t) * (size_t)(bt->nmsg + 1));
}
