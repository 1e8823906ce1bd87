/* sparse: see sparse.h. */
#include "sparse.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* A set of ids: open addressing, cap a power of two at least twice the ids it will hold;
 * cleared by visiting only the slots used. */
typedef struct {
    int32_t *key;      /* (cap) -1: empty */
    int64_t *at;       /* (cap) the id's index in its list */
    int64_t *used;     /* (cap / 2) slots in use */
    int64_t nused, mask;
} idset;

typedef struct {
    int view, E, L, pad;
    int64_t table;                /* offset of the (V, E) table in params and grads */
    int32_t *lid;                 /* (b_max L) own distinct ids, nl of them */
    int64_t nl;
    float *lrow;                  /* (b_max L, E) their gradient rows, packed */
    int32_t *gid;                 /* (n L) every worker's ids, rank by rank */
    float *grow;                  /* (n L, E) their rows */
    int32_t *uid;                 /* (n L) the union, nu of them */
    int64_t nu;
    float *usum;                  /* (n L, E) the union's summed rows */
    idset local, all;
} table;

struct hcl_sparse {
    MPI_Comm comm;
    int rank, size, ntables;
    table t[HCL_MAX_VIEWS];
    int *cnt, *dsp, *rcnt, *rdsp;  /* (W) ids and rows (x E) per worker */
};

static void idset_init(idset *s, int64_t n) {
    int64_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    s->key = hcl_malloc(sizeof(int32_t) * (size_t)cap);
    memset(s->key, 0xff, sizeof(int32_t) * (size_t)cap);
    s->at = hcl_malloc(sizeof(int64_t) * (size_t)cap);
    s->used = hcl_malloc(sizeof(int64_t) * (size_t)(cap / 2 + 1));
    s->nused = 0;
    s->mask = cap - 1;
}

static void idset_free(idset *s) {
    free(s->key);
    free(s->at);
    free(s->used);
}

static void idset_clear(idset *s) {
    for (int64_t i = 0; i < s->nused; i++) s->key[s->used[i]] = -1;
    s->nused = 0;
}

/* The index of id in the list; a new id gets index *n, and *n grows. */
static int64_t idset_add(idset *s, int32_t id, int64_t *n) {
    uint64_t h = ((uint64_t)(uint32_t)id * 0x9E3779B97F4A7C15ull) >> 17;
    for (int64_t slot = (int64_t)(h & (uint64_t)s->mask);; slot = (slot + 1) & s->mask) {
        if (s->key[slot] == id) return s->at[slot];
        if (s->key[slot] < 0) {
            s->key[slot] = id;
            s->at[slot] = *n;
            s->used[s->nused++] = slot;
            return (*n)++;
        }
    }
}

int sparse_init(hcl_sparse **out, const hcl_model *m, MPI_Comm comm, int64_t n, int64_t b_max, char *err) {
    *out = NULL;
    int tables = 0;
    for (int v = 0; v < m->cfg.nviews; v++) tables += m->enc[v].table >= 0;
    if (!tables) return 0;
    hcl_sparse *sp = hcl_calloc(1, sizeof *sp);
    sp->comm = comm;
    MPI_Comm_rank(comm, &sp->rank);
    MPI_Comm_size(comm, &sp->size);
    for (int v = 0; v < m->cfg.nviews; v++) {
        if (m->enc[v].table < 0) continue;
        table *t = &sp->t[sp->ntables++];
        t->view = v;
        t->E = m->cfg.spec[v].embed;
        t->L = m->cfg.in_width[v];
        t->pad = m->cfg.spec[v].pad;
        t->table = m->enc[v].table;
        const int64_t own = b_max * t->L, all = n * t->L;
        if (all * t->E > INT_MAX) {
            sparse_free(sp);
            return hcl_err(err, "view '%s': a batch of %lld rows x %d tokens x %d dims of table gradient is more "
                           "than one MPI message; use a smaller --batch-size", m->cfg.names[v], (long long)n, t->L, t->E);
        }
        t->lid = hcl_malloc(sizeof(int32_t) * (size_t)(own + 1));
        t->lrow = hcl_floats((size_t)(own * t->E + 1));
        t->gid = hcl_malloc(sizeof(int32_t) * (size_t)(all + 1));
        t->grow = hcl_floats((size_t)(all * t->E + 1));
        t->uid = hcl_malloc(sizeof(int32_t) * (size_t)(all + 1));
        t->usum = hcl_floats((size_t)(all * t->E + 1));
        idset_init(&t->local, own);
        idset_init(&t->all, all);
    }
    sp->cnt = hcl_calloc((size_t)sp->size * 4, sizeof(int));
    sp->dsp = sp->cnt + sp->size;
    sp->rcnt = sp->dsp + sp->size;
    sp->rdsp = sp->rcnt + sp->size;
    *out = sp;
    return 0;
}

void sparse_free(hcl_sparse *sp) {
    if (!sp) return;
    for (int i = 0; i < sp->ntables; i++) {
        table *t = &sp->t[i];
        free(t->lid);
        free(t->lrow);
        free(t->gid);
        free(t->grow);
        free(t->uid);
        free(t->usum);
        idset_free(&t->local);
        idset_free(&t->all);
    }
    free(sp->cnt);
    free(sp);
}

void sparse_begin(hcl_sparse *sp, hcl_model *m, const float *const *x, int64_t b) {
    for (int i = 0; i < sp->ntables; i++) {
        table *t = &sp->t[i];
        idset_clear(&t->local);
        t->nl = 0;
        const float *ids = x[t->view];
        for (int64_t j = 0; j < b * t->L; j++) {
            const int32_t id = (int32_t)ids[j];
            if (id == t->pad) continue;
            int64_t before = t->nl;
            if (idset_add(&t->local, id, &t->nl) == before) t->lid[before] = id;
        }
        float *g = m->grads + t->table;
        for (int64_t k = 0; k < t->nl; k++) memset(g + (int64_t)t->lid[k] * t->E, 0, sizeof(float) * (size_t)t->E);
    }
}

/* Table t's rows of every worker (rank by rank) into gid/grow; with one worker its own, packed
 * straight there. */
static void gather(hcl_sparse *sp, table *t, const float *g) {
    const int E = t->E;
    float *own = sp->size == 1 ? t->grow : t->lrow;
    for (int64_t k = 0; k < t->nl; k++)
        memcpy(own + k * E, g + (int64_t)t->lid[k] * E, sizeof(float) * (size_t)E);
    if (sp->size == 1) {
        memcpy(t->gid, t->lid, sizeof(int32_t) * (size_t)t->nl);
        sp->cnt[0] = (int)t->nl;
        sp->dsp[0] = 0;
        return;
    }
    int mine = (int)t->nl;
    MPI_Allgather(&mine, 1, MPI_INT, sp->cnt, 1, MPI_INT, sp->comm);
    for (int r = 0, off = 0; r < sp->size; off += sp->cnt[r], r++) {
        sp->dsp[r] = off;
        sp->rcnt[r] = sp->cnt[r] * E;
        sp->rdsp[r] = off * E;
    }
    MPI_Allgatherv(t->lid, mine, MPI_INT32_T, t->gid, sp->cnt, sp->dsp, MPI_INT32_T, sp->comm);
    MPI_Allgatherv(t->lrow, mine * E, MPI_FLOAT, t->grow, sp->rcnt, sp->rdsp, MPI_FLOAT, sp->comm);
}

void sparse_exchange(hcl_sparse *sp, const hcl_model *m) {
    for (int i = 0; i < sp->ntables; i++) {
        table *t = &sp->t[i];
        const int E = t->E;
        gather(sp, t, m->grads + t->table);
        idset_clear(&t->all);
        t->nu = 0;
        for (int r = 0; r < sp->size; r++)   /* rank order: the same sums on every worker */
            for (int64_t k = sp->dsp[r]; k < sp->dsp[r] + sp->cnt[r]; k++) {
                const int64_t before = t->nu, at = idset_add(&t->all, t->gid[k], &t->nu);
                float *sum = t->usum + at * E;
                const float *row = t->grow + k * E;
                if (at == before) {
                    t->uid[at] = t->gid[k];
                    memcpy(sum, row, sizeof(float) * (size_t)E);
                } else {
                    for (int e = 0; e < E; e++) sum[e] += row[e];
                }
            }
    }
}

double sparse_sum_squares(const hcl_sparse *sp) {
    double s = 0.0;
    for (int i = 0; i < sp->ntables; i++) s += optim_sum_squares(sp->t[i].usum, sp->t[i].nu * sp->t[i].E);
    return s;
}

void sparse_clip(hcl_sparse *sp, double norm, float max_norm) {
    for (int i = 0; i < sp->ntables; i++) optim_clip(sp->t[i].usum, sp->t[i].nu * sp->t[i].E, norm, max_norm);
}

void sparse_update(const hcl_sparse *sp, hcl_model *m, float *opt_state, const hcl_optim_config *c, float lr,
                   int64_t t, int first, int stride) {
    for (int i = 0; i < sp->ntables; i++) {
        const table *tb = &sp->t[i];
        optim_sparse_adam_rows(c, lr, t, m->params + tb->table, opt_state + tb->table,
                               opt_state + m->nparams + tb->table, tb->uid, tb->usum, tb->nu, tb->E, first, stride);
    }
}

void sparse_summed(const hcl_sparse *sp, const hcl_model *m, float *out) {
    memset(out + m->ndense, 0, sizeof(float) * (size_t)(m->nparams - m->ndense));
    for (int i = 0; i < sp->ntables; i++) {
        const table *t = &sp->t[i];
        for (int64_t k = 0; k < t->nu; k++)
            memcpy(out + t->table + (int64_t)t->uid[k] * t->E, t->usum + k * t->E, sizeof(float) * (size_t)t->E);
    }
}

int64_t sparse_rows(const hcl_sparse *sp) {
    int64_t n = 0;
    for (int i = 0; sp && i < sp->ntables; i++) n += sp->t[i].nu;
    return n;
}
