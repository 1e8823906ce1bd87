/* ring: the workers' gradient all-reduce over MPI, as buckets that start as soon as their
 * gradients exist and move on whenever the worker calls ring_poll (between layers, between the
 * loss's tiles), with the bytes on the wire in f32 or bf16 (--comm-dtype).
 *
 * The parameter vector is cut into slices (an encoder's parameters, then the rest) and each
 * slice into buckets of at most HCL_BUCKET_FLOATS. A bucket's sum is a ring all-reduce of
 * point-to-point messages (Isend/Irecv to the neighbours): L-1 steps of reduce-scatter, after
 * which each ring member owns the complete sum of one chunk, then L-1 steps of all-gather of
 * the owned chunks. Full duplex: at W = 2 each worker sends and receives P/2 per phase at the
 * same time, where Open MPI's MPI_Iallreduce in place for fewer than 4 ranks (libnbc's binomial
 * tree) sends the whole P one way, then back. Sums are in f32: with a bf16 wire a worker adds
 * the received bf16 partial sum, widened, to its own f32 values; the owner rounds its finished
 * chunk to bf16 once and everyone, owner included, uses that value, so replicas stay
 * bit-identical.
 *
 * Hierarchical: when the workers span several nodes and some node holds two or more, each
 * bucket is first summed inside the node to its first worker (MPI_Ireduce over the node's
 * communicator: Open MPI's shared-memory transport), the ring runs among those leaders only,
 * and the sum is broadcast inside the node (MPI_Ibcast): the bytes between nodes are those of
 * one worker per node. HCL_FLAT_ALLREDUCE=1 keeps one flat ring of every worker (tests and
 * benchmarks compare the two); HCL_TEST_NODES=K makes K nodes of consecutive workers out of one
 * (tests of the hierarchy on one machine).
 *
 * Exports ring_open, ring_start, ring_poll, ring_wait, ring_close. No allocation after open. */
#ifndef HCL_RING_H
#define HCL_RING_H

#include <mpi.h>
#include <stdint.h>

#define HCL_BUCKET_FLOATS (128 * 1024)   /* 512 KB of f32 gradient per bucket at most */

typedef struct hcl_ring hcl_ring;

/* Over the workers of comm (collective): slices [cuts[i], cuts[i+1]) for i < nslices of a
 * vector of cuts[nslices] floats; bf16: the wire carries bf16. NULL with one worker. */
hcl_ring *ring_open(MPI_Comm comm, const int64_t *cuts, int nslices, int bf16);
/* Start the sum over the workers of slice i of x (x: the whole vector; the slice is summed in
 * place). Every worker starts the same slices in the same order. */
void ring_start(hcl_ring *r, int slice, float *x);
/* Move every started bucket on as far as the messages that have arrived allow; 1 when all
 * started buckets are done. Cheap (one MPI_Testall a bucket in flight). */
int ring_poll(hcl_ring *r);
/* Until every started bucket is done, without spinning a core (sleeps growing to 200 us
 * between polls while nothing moves). Seconds waited. */
double ring_wait(hcl_ring *r);
/* 1: the sums are hierarchical (node, then leaders, then node); 0 if not or r is NULL. */
int ring_hierarchical(const hcl_ring *r);
void ring_close(hcl_ring *r);

#endif
