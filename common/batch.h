/* batch: the per-step message the coordinator sends each worker, and how a global batch is split.
 *
 * One contiguous byte buffer per worker and step:
 *   hcl_batch_header                      (fixed size, below)
 *   labels   int32  (n)                   the whole global batch's labels (-1: none)
 *   mask     uint8  (n, nviews)           the whole global batch's presence mask, padded to 8
 *   view v   float  (b, width_v)          this worker's rows of each view, v = 0..nviews-1
 * Labels and mask travel whole because every worker's loss needs them for all N columns; the
 * features travel only to their owner. Commands that must take effect at the same step on
 * every worker ride in the header (`flags`, `lr_scale`). */
#ifndef HCL_BATCH_H
#define HCL_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define HCL_BATCH_MAGIC 0x48434c42u /* "HCLB" */

enum hcl_batch_flag {
    HCL_BATCH_TRAIN = 1u << 0,  /* forward, backward, update */
    HCL_BATCH_EVAL = 1u << 1,   /* forward and loss only (validation) */
    HCL_BATCH_STOP = 1u << 2,   /* no data: leave the step loop */
};

typedef struct {
    uint32_t magic;
    uint32_t flags;
    int64_t step;       /* 0-based index of the update this batch makes */
    int64_t epoch;
    int64_t n;          /* rows in the global batch */
    int64_t r0, b;      /* this worker's rows [r0, r0 + b) */
    int32_t nviews;
    int32_t has_labels;
    float lr;           /* learning rate of this step (schedule x operator scale) */
    float pad;
} hcl_batch_header;

/* Worker r of W owns rows [r0, r0+b): as even as possible, the first n % W get one more. */
void batch_split(int64_t n, int w, int r, int64_t *r0, int64_t *b);

/* Byte offsets of the parts of a batch buffer; returns the total size. */
typedef struct {
    size_t labels, mask, view[HCL_MAX_VIEWS], total;
} hcl_batch_layout;
size_t batch_layout(hcl_batch_layout *l, int64_t n, int64_t b, int nviews, const int64_t *widths);

#endif
