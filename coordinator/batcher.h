/* batcher: which dataset rows make each batch, and the message each worker gets for a job.
 *
 * The order: each epoch is a permutation of the training rows drawn from the seed and the
 * epoch number alone (rng_derive "epoch"), so a resumed run and any number of workers see the
 * same batches; --no-shuffle keeps file order. Step k of an epoch takes rows [kB, (k+1)B) of
 * it; validation batch i takes rows [iB, (i+1)B) of the validation set, in file order.
 *
 * The messages (batch.h): a batch is split among the workers (balance.h: even, or --balance
 * adaptive's shares from the busy times they report), and each worker's message is a header
 * from batch_header_init followed by the labels and mask of the whole batch and the features of
 * its own rows; with --data-plane direct (workers on other ranks) by the batch's row indices
 * instead; a job without data (SNAPSHOT, PING, STOP) is the header alone.
 *
 * Exports: hcl_batcher, batcher_init / batcher_free (the order, from run_prepare),
 * batcher_start / batcher_stop (the splits, for the run loop), batcher_rows, batcher_fill,
 * batcher_pack, batcher_observe, batcher_message_bytes. */
#ifndef HCL_BATCHER_H
#define HCL_BATCHER_H

#include <stddef.h>
#include <stdint.h>

#include "balance.h"
#include "batch.h"
#include "dataset.h"
#include "jobs.h"
#include "transport.h"

typedef struct {
    const hcl_dataset *train, *val;   /* val NULL: none */
    int64_t batch;              /* global batch rows */
    int64_t steps_per_epoch;
    int no_shuffle;
    int balance;                /* --balance adaptive */
    int64_t *perm;              /* (train n) the order of epoch perm_epoch; -1 none yet */
    int64_t perm_epoch;
    int64_t *rows;              /* (max(batch, val n)) dataset rows of the batch being packed */
    /* between batcher_start and batcher_stop */
    uint64_t seed;
    int direct;                 /* send row indices (--data-plane direct, workers on other ranks) */
    int nmsg;                   /* messages per job: one per worker */
    hcl_balance bal;
    int64_t *split[HCL_BATCHES_IN_FLIGHT];  /* (nmsg + 1) the split each slot's batch went with */
    int64_t *last_split;        /* (nmsg + 1) the split of the last training result */
} hcl_batcher;

void batcher_init(hcl_batcher *bt, const hcl_dataset *train, const hcl_dataset *val, int64_t batch,
                  int no_shuffle, int balance);
void batcher_free(hcl_batcher *bt);

/* The largest message of one of nmsg workers for a batch of `batch` rows: with direct the index
 * message (batch_index_bytes), else the full layout of the largest share (batch_layout). */
size_t batcher_message_bytes(const hcl_batcher *bt, int nmsg, int direct);

void batcher_start(hcl_batcher *bt, int nmsg, uint64_t seed, int direct);
void batcher_stop(hcl_batcher *bt);

/* Dataset rows of training step `step` (0-based) into bt->rows; returns its epoch. */
int64_t batcher_rows(hcl_batcher *bt, int64_t step);
/* Worker w's (of nw, split: nw + 1 bounds) message for the batch of rows[0..n) of ds: header,
 * split, labels, mask, its rows' features. Returns its bytes. */
size_t batcher_fill(const hcl_dataset *ds, const int64_t *rows, int64_t n, const int64_t *split, int w, int nw,
                    uint32_t flags, int64_t step, int64_t epoch, float lr, uint8_t *buf);
/* Job j's messages into ob, one per worker (the job goes in transport slot `slot`); lr: the
 * learning rate of a TRAIN job. */
void batcher_pack(hcl_batcher *bt, int slot, const hcl_job *j, float lr, hcl_outbox *ob);
/* The result of slot's TRAIN job came with every worker's busy seconds: --balance adaptive's
 * shares learn from them; last_split becomes that job's split. */
void batcher_observe(hcl_batcher *bt, int slot, const double *busy);

#endif
