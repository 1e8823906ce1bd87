/* balance: how rank 0 splits each global batch among the workers (--balance).
 *
 * A synchronous step goes at the pace of its slowest worker: every collective starts when the
 * last worker arrives. Cores of unequal speed (a busier host, a vCPU its hypervisor slows, the
 * coordinator sharing a worker's core) leave the faster workers waiting in every step.
 *
 *   even      (default) rows [r n / W, (r + 1) n / W): the same split every step, so a run is
 *             bitwise reproducible and resumes exactly
 *   adaptive  worker r gets rows in proportion to its speed: rows per busy second (its compute
 *             without the collectives' waits, reported in worker 0's result), smoothed over
 *             steps; shares in multiples of 8 rows, between half and 1.5 times the even share.
 *             The loss and gradients are the same sums, but the float additions follow the
 *             split, so two runs differ in the last bits (about 1e-7 relative a step).
 * The split rides in every batch message (batch.h), so all workers use the same one. */
#ifndef HCL_BALANCE_H
#define HCL_BALANCE_H

#include <stdint.h>

typedef struct {
    int nw;
    int adaptive;
    double *speed;   /* (nw) rows per busy second, smoothed; 0 until measured */
} hcl_balance;

void balance_init(hcl_balance *b, int nw, int adaptive);
void balance_free(hcl_balance *b);
/* Fold in one step that ran with split (nw + 1 bounds) in which worker r was busy busy[r]
 * seconds. */
void balance_observe(hcl_balance *b, const int64_t *split, const double *busy);
/* The split of a batch of n rows: nw + 1 bounds from 0 to n. */
void balance_split(const hcl_balance *b, int64_t n, int64_t *split);

#endif
