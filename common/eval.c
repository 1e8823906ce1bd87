/* eval: see eval.h. The pass: representations from two splits' embeddings, probe and kNN of
 * each, then the geometry of one set of embeddings. */
#include "eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void eval_pass_options_default(eval_pass_options *o) {
    memset(o, 0, sizeof *o);
    eval_probe_options_default(&o->probe);
    o->knn_k = EVAL_KNN_K;
    o->retrieval = 1;
    o->fused_uniformity = 1;
    o->cluster_seeds = 10;
    o->seed = 0;
}

static void *own(eval_pass *p, void *x) {
    HCL_CHECK(p->nowned < (int)(sizeof p->owned / sizeof p->owned[0]), "eval_pass: too many arrays");
    p->owned[p->nowned++] = x;
    return x;
}

/* Rows with at least one view present (NULL when there is no mask: all of them). */
static uint8_t *any_present(const eval_embeddings *e) {
    if (!e->mask) return NULL;
    uint8_t *k = hcl_malloc((size_t)(e->n > 0 ? e->n : 1));
    for (int64_t i = 0; i < e->n; i++) {
        k[i] = 0;
        for (int v = 0; v < e->nviews; v++) k[i] |= e->mask[i * e->nviews + v];
    }
    return k;
}

/* (n, sum of widths) concatenation of every view's rows. */
static float *concat_views(const eval_embeddings *e, int *dim) {
    int D = 0;
    for (int v = 0; v < e->nviews; v++) D += e->width[v];
    float *out = hcl_floats((size_t)(e->n > 0 ? e->n : 1) * D);
    for (int64_t i = 0; i < e->n; i++) {
        int off = 0;
        for (int v = 0; v < e->nviews; v++) {
            memcpy(out + i * D + off, e->z[v] + i * e->width[v], sizeof(float) * (size_t)e->width[v]);
            off += e->width[v];
        }
    }
    *dim = D;
    return out;
}

eval_rep *eval_pass_add(eval_pass *p, const char *name, int dim, const float *tr, const float *te,
                        const uint8_t *keep_tr, const uint8_t *keep_te) {
    HCL_CHECK(p->nreps < EVAL_MAX_REPS, "eval_pass: more than %d representations", EVAL_MAX_REPS);
    eval_rep *r = &p->rep[p->nreps++];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    r->dim = dim;
    r->tr = tr;
    r->te = te;
    r->keep_tr = keep_tr;
    r->keep_te = keep_te;
    return r;
}

void eval_pass_init(eval_pass *p, const eval_embeddings *tr, const eval_embeddings *te, int concat,
                    const eval_embeddings *geom) {
    memset(p, 0, sizeof *p);
    p->geom = geom;
    for (int v = 0; v < HCL_MAX_VIEWS + 1; v++) p->uniformity[v] = NAN;
    if (!tr || !te) return;
    p->ytr = tr->labels;
    p->yte = te->labels;
    p->ntr = tr->n;
    p->nte = te->n;
    p->nclasses = tr->nclasses > te->nclasses ? tr->nclasses : te->nclasses;
    for (int v = 0; v < tr->nviews; v++)
        eval_pass_add(p, tr->names[v], tr->width[v], tr->z[v], te->z[v],
                      own(p, eval_mask_column(tr->mask, tr->nviews, v, tr->n)),
                      own(p, eval_mask_column(te->mask, te->nviews, v, te->n)));
    uint8_t *any_tr = own(p, any_present(tr)), *any_te = own(p, any_present(te));
    if (concat && tr->nviews > 1) {
        int dim;
        float *ctr = own(p, concat_views(tr, &dim)), *cte = own(p, concat_views(te, &dim));
        eval_pass_add(p, "concat", dim, ctr, cte, any_tr, any_te);
    }
    if (tr->fused && te->fused) eval_pass_add(p, "fused", tr->width[0], tr->fused, te->fused, any_tr, any_te);
}

void eval_pass_free(eval_pass *p) {
    for (int i = 0; i < p->nowned; i++) free(p->owned[i]);
    memset(p, 0, sizeof *p);
}

/* Rows of x (n, dim) and y where keep[i] (keep NULL: all), packed into new arrays. */
static int64_t rows_select(float **xo, int32_t **yo, const float *x, const int32_t *y,
                           const uint8_t *keep, int64_t n, int dim) {
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) m += !keep || keep[i];
    *xo = hcl_floats((size_t)(m > 0 ? m : 1) * dim);
    *yo = hcl_malloc(sizeof(int32_t) * (size_t)(m > 0 ? m : 1));
    int64_t r = 0;
    for (int64_t i = 0; i < n; i++) {
        if (keep && !keep[i]) continue;
        memcpy(*xo + r * dim, x + i * dim, sizeof(float) * (size_t)dim);
        (*yo)[r++] = y[i];
    }
    return m;
}

/* Probe, kNN and clustering of one representation, on the rows it keeps. */
static int rep_run(eval_pass *p, eval_rep *r, const eval_pass_options *o, char *err) {
    if (!r->do_probe && !r->do_knn && !r->do_cluster) return 0;
    HCL_CHECK(p->ytr && p->yte, "eval_pass: %s: probe or kNN without labels", r->name);
    float *xtr, *xte;
    int32_t *yt, *ye;
    int64_t mtr = rows_select(&xtr, &yt, r->tr, p->ytr, r->keep_tr, p->ntr, r->dim);
    int64_t mte = rows_select(&xte, &ye, r->te, p->yte, r->keep_te, p->nte, r->dim);
    int rc = 0;
    if (r->do_probe) {
        char perr[HCL_ERR_MAX];
        eval_probe_options po = o->probe;
        po.progress = o->progress;
        if (o->probe.verbose) fprintf(stderr, "probe %s: %lld x %d\n", r->name, (long long)mtr, r->dim);
        progress_begin(o->progress, "probe %s, L2 sweep fits", r->name);
        if (eval_linear_probe(&r->probe, xtr, yt, mtr, xte, ye, mte, r->dim, p->nclasses, &po,
                              perr) != 0)
            rc = hcl_err(err, "probe on %s: %s", r->name, perr);
        if (rc == 0) progress_end(o->progress);
        else progress_clear(o->progress);
        r->probed = rc == 0;
        p->seconds_probe += r->probe.seconds;
    }
    if (rc == 0 && r->do_knn) {
        double t0 = hcl_now();
        progress_begin(o->progress, "kNN %s, test rows", r->name);
        r->knn = eval_knn_accuracy_progress(xtr, yt, mtr, xte, ye, mte, r->dim, p->nclasses, o->knn_k,
                                            o->progress);
        progress_end(o->progress);
        r->knned = 1;
        p->seconds_knn += hcl_now() - t0;
    }
    if (rc == 0 && r->do_cluster) {
        progress_begin(o->progress, "k-means %s, %d seeds", r->name, o->cluster_seeds);
        eval_cluster(&r->cluster, xte, ye, mte, r->dim, p->nclasses, o->cluster_seeds, o->seed);
        progress_end(o->progress);
        r->clustered = 1;
        p->seconds_cluster += r->cluster.seconds;
    }
    free(xtr);
    free(xte);
    free(yt);
    free(ye);
    return rc;
}

/* Alignment and recall of each pair of views, uniformity of each view and of the fused one. */
static void geometry_run(eval_pass *p, const eval_pass_options *o) {
    const eval_embeddings *g = p->geom;
    const int V = g->nviews;
    uint8_t *keep[HCL_MAX_VIEWS];
    for (int v = 0; v < V; v++) keep[v] = eval_mask_column(g->mask, V, v, g->n);
    for (int i = 0; i < V; i++)
        for (int j = i + 1; j < V; j++) {
            eval_pair *q = &p->pair[p->npairs++];
            q->i = i;
            q->j = j;
            int same = g->width[i] == g->width[j];
            q->alignment = same ? eval_alignment(g->z[i], g->z[j], keep[i], keep[j], g->n, g->width[i]) : NAN;
            if (o->retrieval && same) {
                progress_begin(o->progress, "retrieval %s:%s, query rows", g->names[i], g->names[j]);
                eval_retrieval_progress(&q->ij, &q->ji, g->z[i], g->z[j], keep[i], keep[j], g->n,
                                        g->width[i], o->progress);
                progress_end(o->progress);
            } else {
                q->ij.r1 = q->ij.r5 = q->ij.r10 = q->ji.r1 = q->ji.r5 = q->ji.r10 = NAN;
            }
        }
    for (int v = 0; v < V; v++) p->uniformity[v] = eval_uniformity(g->z[v], keep[v], g->n, g->width[v], o->seed);
    if (o->fused_uniformity && g->fused) {
        uint8_t *any = any_present(g);
        p->uniformity[V] = eval_uniformity(g->fused, any, g->n, g->width[0], o->seed);
        free(any);
    }
    for (int v = 0; v < V; v++) free(keep[v]);
}

int eval_pass_run(eval_pass *p, const eval_pass_options *o, char *err) {
    for (int i = 0; i < p->nreps; i++)
        if (rep_run(p, &p->rep[i], o, err) != 0) return -1;
    if (p->geom) {
        double t0 = hcl_now();
        geometry_run(p, o);
        p->seconds_geometry = hcl_now() - t0;
    }
    return 0;
}
