/* sparse: the bag encoders' embedding tables in the step (model.h: every table after
 * model.ndense). A table's gradient touches only the rows of the ids a batch uses, so it is
 * never summed or updated as a dense V x E block:
 *
 *   begin     this worker's own rows' distinct non-padding ids (a hash set sized by the batch,
 *             not by V); their gradient rows zeroed (the backward adds into them)
 *   exchange  after the backward: every worker's ids and gradient rows gathered
 *             (MPI_Allgatherv), equal ids summed in rank order into the union's rows: the same
 *             ids in the same order and the same bits on every worker (the norm, the clip and
 *             the update read them there; sparse_summed shows them)
 *   norm      the union rows' sum of squares, for the global norm (clipping, the finite check)
 *   update    clip, then optim_sparse_adam_rows on the union's rows (torch.optim.SparseAdam's
 *             rule, optim.h); an untouched row costs nothing. With one shared copy of the
 *             parameters (zero) each worker updates every W-th row of the union.
 * Per step the work and the messages grow with the ids the batch uses, never with V. */
#ifndef HCL_SPARSE_H
#define HCL_SPARSE_H

#include <mpi.h>
#include <stdint.h>

#include "model.h"
#include "optim.h"

typedef struct hcl_sparse hcl_sparse;

/* Tables of m's bag views for batches of at most n rows (b_max own), W workers on comm; NULL
 * when m has none. -1 with one line in err when a step's ids or rows exceed an MPI count. */
int sparse_init(hcl_sparse **sp, const hcl_model *m, MPI_Comm comm, int64_t n, int64_t b_max, char *err);
void sparse_free(hcl_sparse *sp);
/* The own rows' ids of this step's batch: x[v] (b, L) of each bag view v. */
void sparse_begin(hcl_sparse *sp, hcl_model *m, const float *const *x, int64_t b);
/* Collective: gather, sum into the union's rows. */
void sparse_exchange(hcl_sparse *sp, const hcl_model *m);
/* The union rows' sum of squares (the same on every worker). */
double sparse_sum_squares(const hcl_sparse *sp);
/* Scale the union's rows as optim_clip would (norm the global one). */
void sparse_clip(hcl_sparse *sp, double norm, float max_norm);
/* The lazy update of the union's rows with t = updates; rows first, first + stride, ... */
void sparse_update(const hcl_sparse *sp, hcl_model *m, float *opt_state, const hcl_optim_config *c, float lr,
                   int64_t t, int first, int stride);
/* Test and tool view: the summed gradient of every table into out (nparams floats, the tables'
 * part: zeros but the union's rows). */
void sparse_summed(const hcl_sparse *sp, const hcl_model *m, float *out);
/* Ids in the union this step, over all tables. */
int64_t sparse_rows(const hcl_sparse *sp);

#endif
