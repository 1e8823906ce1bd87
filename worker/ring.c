/* ring: see ring.h. The buckets, their stages, and the two phases of the ring. */
#include "ring.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bf16.h"
#include "exchange.h"
#include "util.h"

enum { STAGE_IDLE, STAGE_NODE_REDUCE, STAGE_RING, STAGE_WAIT_BCAST, STAGE_NODE_BCAST, STAGE_DONE };

typedef struct {
    int64_t off, n;          /* the bucket: x[off, off + n) */
    int slice;
    int stage;
    int s;                   /* ring steps done: [0, L-1) reduce-scatter, [L-1, 2L-2) all-gather */
    int nreq;
    MPI_Request req[2];
    void *sbuf, *rbuf;       /* staging of one chunk each: bf16, or (rbuf) f32 partial sums */
} ring_bucket;

struct hcl_ring {
    MPI_Comm ring;           /* the ring's members: every worker, or the node leaders */
    MPI_Comm node;           /* hierarchical: the workers of this node (the reduces); else
                              * MPI_COMM_NULL */
    MPI_Comm node_bcast;     /* the same workers, the broadcasts: each communicator's collectives
                              * are then called in one order on every worker (the reduces in the
                              * order started, the broadcasts in that order too) */
    int q, L;                /* rank and size in the ring (L 0: not a member) */
    int nq;                  /* rank in the node (hierarchical) */
    int bf16;
    float *x;                /* the vector of the started buckets */
    int nslices;
    int *first;              /* (nslices + 1) each slice's first bucket */
    int nb, active;          /* buckets; started and not done */
    unsigned long moves;     /* stages advanced (ring_wait naps while nothing moves) */
    int *seq, nseq, nbcast;  /* buckets in the order started; broadcasts posted of them */
    ring_bucket *b;
    void *stage_mem;
};

/* Chunk k of L of n floats: [n k / L, n (k + 1) / L). */
static int64_t chunk_lo(int64_t n, int k, int L) { return n * k / L; }

static void post_step(hcl_ring *r, ring_bucket *bk, int tag) {
    const int L = r->L, q = r->q, s = bk->s;
    const int rs = s < L - 1;
    const int t = rs ? s : s - (L - 1);
    const int cs = rs ? ((q - s) % L + L) % L : ((q + 1 - t) % L + L) % L;
    const int cr = rs ? ((q - s - 1) % L + L) % L : ((q - t) % L + L) % L;
    float *x = r->x + bk->off;
    const int64_t s0 = chunk_lo(bk->n, cs, L), sn = chunk_lo(bk->n, cs + 1, L) - s0;
    const int64_t r0 = chunk_lo(bk->n, cr, L), rn = chunk_lo(bk->n, cr + 1, L) - r0;
    const int next = (q + 1) % L, prev = (q + L - 1) % L;
    if (r->bf16) {
        bf16_pack(bk->sbuf, x + s0, sn);
        MPI_OK(MPI_Irecv(bk->rbuf, (int)rn, MPI_UINT16_T, prev, tag, r->ring, &bk->req[0]));
        MPI_OK(MPI_Isend(bk->sbuf, (int)sn, MPI_UINT16_T, next, tag, r->ring, &bk->req[1]));
    } else {
        MPI_OK(MPI_Irecv(rs ? bk->rbuf : (void *)(x + r0), (int)rn, MPI_FLOAT, prev, tag, r->ring, &bk->req[0]));
        MPI_OK(MPI_Isend(x + s0, (int)sn, MPI_FLOAT, next, tag, r->ring, &bk->req[1]));
    }
    bk->nreq = 2;
}

/* Step s has completed: fold in what arrived (a partial sum, or a finished chunk). */
static void finish_step(hcl_ring *r, ring_bucket *bk) {
    const int L = r->L, q = r->q, s = bk->s;
    const int rs = s < L - 1;
    const int cr = rs ? ((q - s - 1) % L + L) % L : ((q - (s - (L - 1))) % L + L) % L;
    float *x = r->x + bk->off + chunk_lo(bk->n, cr, L);
    const int64_t rn = chunk_lo(bk->n, cr + 1, L) - chunk_lo(bk->n, cr, L);
    if (rs && r->bf16) {
        const uint16_t *h = bk->rbuf;
        for (int64_t i = 0; i < rn; i++) x[i] = bf16_float(h[i]) + x[i];
    } else if (rs) {
        const float *p = bk->rbuf;
        for (int64_t i = 0; i < rn; i++) x[i] = p[i] + x[i];
    } else if (r->bf16) {
        bf16_unpack(x, bk->rbuf, rn);
    }
    bk->s++;
    if (bk->s == L - 1 && r->bf16) {   /* the owned chunk is complete: everyone sees its bf16 */
        const int own = (q + 1) % L;
        const int64_t o0 = chunk_lo(bk->n, own, L);
        bf16_round(r->x + bk->off + o0, chunk_lo(bk->n, own + 1, L) - o0);
    }
}

/* The bucket's next stage after the one whose requests completed (or from IDLE): the node's
 * reduce (hierarchical), the ring's steps (a ring of two or more), then the node's broadcast,
 * posted in start order by post_bcasts. */
static void advance(hcl_ring *r, ring_bucket *bk, int tag) {
    bk->nreq = 0;
    r->moves++;
    float *x = r->x + bk->off;
    if (bk->stage == STAGE_IDLE && r->node != MPI_COMM_NULL) {
        MPI_OK(MPI_Ireduce(r->nq == 0 ? MPI_IN_PLACE : x, x, (int)bk->n, MPI_FLOAT, MPI_SUM, 0, r->node,
                           &bk->req[0]));
        bk->nreq = 1;
        bk->stage = STAGE_NODE_REDUCE;
        return;
    }
    if ((bk->stage == STAGE_IDLE || bk->stage == STAGE_NODE_REDUCE) && r->L > 1) {
        bk->stage = STAGE_RING;
        bk->s = 0;
        post_step(r, bk, tag);
        return;
    }
    if (bk->stage == STAGE_RING) {
        finish_step(r, bk);
        if (bk->s < 2 * (r->L - 1)) {
            post_step(r, bk, tag);
            return;
        }
    }
    if (bk->stage == STAGE_NODE_BCAST) {
        bk->stage = STAGE_DONE;
        return;
    }
    bk->stage = r->node != MPI_COMM_NULL ? STAGE_WAIT_BCAST : STAGE_DONE;
}

/* The node's broadcasts, in the order the buckets were started: each one whose sum is ready
 * (WAIT_BCAST) and all before it posted. */
static void post_bcasts(hcl_ring *r) {
    while (r->nbcast < r->nseq) {
        ring_bucket *bk = &r->b[r->seq[r->nbcast]];
        if (bk->stage != STAGE_WAIT_BCAST) return;
        MPI_OK(MPI_Ibcast(r->x + bk->off, (int)bk->n, MPI_FLOAT, 0, r->node_bcast, &bk->req[0]));
        bk->nreq = 1;
        bk->stage = STAGE_NODE_BCAST;
        r->nbcast++;
    }
}

/* The node and ring communicators: hierarchical when the workers span two or more nodes and
 * some node holds two or more of them. */
static void open_comms(hcl_ring *r, MPI_Comm comm) {
    int rank, W, local, maxlocal, leaders;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &W);
    MPI_Comm node;
    const char *fake = getenv("HCL_TEST_NODES");
    const int nodes = fake ? atoi(fake) : 0;
    if (nodes > 0) MPI_OK(MPI_Comm_split(comm, (int)((int64_t)rank * nodes / W), rank, &node));
    else MPI_OK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
    MPI_Comm_rank(node, &r->nq);
    MPI_Comm_size(node, &local);
    int lead = r->nq == 0;
    MPI_OK(MPI_Allreduce(&lead, &leaders, 1, MPI_INT, MPI_SUM, comm));
    MPI_OK(MPI_Allreduce(&local, &maxlocal, 1, MPI_INT, MPI_MAX, comm));
    const char *flat = getenv("HCL_FLAT_ALLREDUCE");
    if (leaders > 1 && maxlocal > 1 && !(flat && strcmp(flat, "1") == 0)) {
        r->node = node;
        MPI_OK(MPI_Comm_dup(node, &r->node_bcast));
        MPI_OK(MPI_Comm_split(comm, lead ? 0 : MPI_UNDEFINED, rank, &r->ring));
    } else {
        MPI_Comm_free(&node);
        r->node = r->node_bcast = MPI_COMM_NULL;
        r->nq = 0;
        MPI_OK(MPI_Comm_dup(comm, &r->ring));
    }
    r->q = r->L = 0;
    if (r->ring != MPI_COMM_NULL) {
        MPI_Comm_rank(r->ring, &r->q);
        MPI_Comm_size(r->ring, &r->L);
    }
}

hcl_ring *ring_open(MPI_Comm comm, const int64_t *cuts, int nslices, int bf16) {
    int W;
    MPI_Comm_size(comm, &W);
    if (W < 2) return NULL;
    hcl_ring *r = hcl_calloc(1, sizeof *r);
    r->bf16 = bf16;
    r->nslices = nslices;
    open_comms(r, comm);
    r->first = hcl_calloc((size_t)nslices + 1, sizeof(int));
    for (int i = 0; i < nslices; i++) {
        const int64_t n = cuts[i + 1] - cuts[i];
        r->first[i + 1] = r->first[i] + (int)((n + HCL_BUCKET_FLOATS - 1) / HCL_BUCKET_FLOATS);
    }
    r->nb = r->first[nslices];
    r->b = hcl_calloc((size_t)(r->nb ? r->nb : 1), sizeof(ring_bucket));
    r->seq = hcl_calloc((size_t)(r->nb ? r->nb : 1), sizeof(int));
    const int L = r->L > 0 ? r->L : 1;
    const size_t chunk = (size_t)(HCL_BUCKET_FLOATS + L - 1) / L + 1;
    r->stage_mem = hcl_malloc((size_t)(r->nb ? r->nb : 1) * 2 * chunk * sizeof(float));
    for (int i = 0; i < nslices; i++) {
        const int64_t n = cuts[i + 1] - cuts[i];
        const int k = r->first[i + 1] - r->first[i];
        for (int j = 0; j < k; j++) {
            ring_bucket *bk = &r->b[r->first[i] + j];
            bk->off = cuts[i] + n * j / k;
            bk->n = cuts[i] + n * (j + 1) / k - bk->off;
            bk->slice = i;
            bk->stage = STAGE_DONE;
            bk->req[0] = bk->req[1] = MPI_REQUEST_NULL;
            bk->sbuf = (float *)r->stage_mem + (size_t)(r->first[i] + j) * 2 * chunk;
            bk->rbuf = (float *)bk->sbuf + chunk;
        }
    }
    return r;
}

void ring_start(hcl_ring *r, int slice, float *x) {
    HCL_CHECK(slice >= 0 && slice < r->nslices, "ring_start: slice %d of %d", slice, r->nslices);
    HCL_CHECK(r->active == 0 || r->x == x, "ring_start: another vector while buckets are in flight");
    if (r->active == 0) r->nseq = r->nbcast = 0;
    r->x = x;
    for (int i = r->first[slice]; i < r->first[slice + 1]; i++) {
        ring_bucket *bk = &r->b[i];
        HCL_CHECK(bk->stage == STAGE_DONE, "ring_start: bucket %d started twice", i);
        bk->stage = STAGE_IDLE;
        r->seq[r->nseq++] = i;
        r->active++;
        advance(r, bk, i);
        if (bk->stage == STAGE_DONE) r->active--;
    }
}

int ring_poll(hcl_ring *r) {
    for (int k = 0; k < r->nseq && r->active; k++) {
        const int i = r->seq[k];
        ring_bucket *bk = &r->b[i];
        while (bk->stage != STAGE_DONE && bk->stage != STAGE_WAIT_BCAST) {
            int done = 1;
            if (bk->nreq) MPI_OK(MPI_Testall(bk->nreq, bk->req, &done, MPI_STATUSES_IGNORE));
            if (!done) break;
            advance(r, bk, i);
            if (bk->stage == STAGE_DONE) r->active--;
        }
        if (r->node != MPI_COMM_NULL) post_bcasts(r);
    }
    return r->active == 0;
}

double ring_wait(hcl_ring *r) {
    double t0 = hcl_now();
    long nap = 5000;
    while (r->active) {
        const unsigned long before = r->moves;
        if (ring_poll(r)) break;
        if (r->moves != before) {
            nap = 5000;
            continue;
        }
        struct timespec ts = {0, nap};
        nanosleep(&ts, NULL);
        nap = nap * 2 > 200000 ? 200000 : nap * 2;
    }
    return hcl_now() - t0;
}

int ring_hierarchical(const hcl_ring *r) { return r && r->node != MPI_COMM_NULL; }

void ring_close(hcl_ring *r) {
    if (!r) return;
    HCL_CHECK(r->active == 0, "ring_close: %d buckets in flight", r->active);
    if (r->ring != MPI_COMM_NULL) MPI_Comm_free(&r->ring);
    if (r->node != MPI_COMM_NULL) MPI_Comm_free(&r->node);
    if (r->node_bcast != MPI_COMM_NULL) MPI_Comm_free(&r->node_bcast);
    free(r->first);
    free(r->seq);
    free(r->b);
    free(r->stage_mem);
    free(r);
}
