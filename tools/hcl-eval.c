/* hcl-eval: score embeddings with the evaluation library (common/eval.h).
 *
 *   hcl-eval --checkpoint PATH --train DIR --test DIR        embed both splits with the model
 *   hcl-eval --features-train DIR --features-test DIR        embeddings written by hcl-embed
 *                                                            (or by any system, same layout)
 *   hcl-eval --raw --train DIR --test DIR                    the raw concatenated input views
 *
 * For each representation (each view, the concatenation of all views, the fused embedding, and
 * with --raw the raw inputs): linear-probe accuracy and kNN accuracy (train split = reference,
 * test split = scored). On the test split: cross-view retrieval R@1/5/10 for every ordered pair
 * of views, alignment of every pair and uniformity of every view. A per-view representation
 * uses the rows where that view is present; concat and fused use every row with a view.
 * Prints a table, or one JSON object with --json. Errors: one line `hcl-eval: ...`, exit 2. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "eval.h"
#include "kernels.h"
#include "model_io.h"
#include "opts.h"
#include "util.h"

#define EXIT_ERROR 2
#define OPT_STR_MAX 1024
#define MAX_REPS (HCL_MAX_VIEWS + 3)
#define MAX_PAIRS (HCL_MAX_VIEWS * (HCL_MAX_VIEWS - 1) / 2)

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *fmt, ...) {
    va_list ap;
    fputs("hcl-eval: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(EXIT_ERROR);
}

/* ---- options: one table drives parsing and --help ------------------------------------------ */

static char opt_checkpoint[OPT_STR_MAX], opt_train[OPT_STR_MAX], opt_test[OPT_STR_MAX];
static char opt_ftrain[OPT_STR_MAX], opt_ftest[OPT_STR_MAX];
static char opt_probe_on[OPT_STR_MAX], opt_knn_on[OPT_STR_MAX];
static int64_t opt_raw, opt_json, opt_no_probe, opt_no_knn, opt_no_retrieval, opt_knn_k;
static int64_t opt_max_iter, opt_seed, opt_batch, opt_threads, opt_verbose;
static double opt_holdout, opt_probe_tol;

static const hcl_opt options[] = {
    {"checkpoint", HCL_OPT_PATH, "", "checkpoint directory, its model.safetensors, or a run "
     "directory", HCL_OPT_AT(opt_checkpoint)},
    {"train", HCL_OPT_PATH, "", "training split: a dataset directory (embedded with --checkpoint; "
     "raw inputs with --raw)", HCL_OPT_AT(opt_train), .meta = "DIR"},
    {"test", HCL_OPT_PATH, "", "test split: a dataset directory", HCL_OPT_AT(opt_test), .meta = "DIR"},
    {"features-train", HCL_OPT_PATH, "", "training split's embeddings (hcl-embed's layout: "
     "manifest.txt, VIEW.npy, fused.npy, labels.npy, mask.npy)", HCL_OPT_AT(opt_ftrain), .meta = "DIR"},
    {"features-test", HCL_OPT_PATH, "", "test split's embeddings, same layout", HCL_OPT_AT(opt_ftest),
     .meta = "DIR"},
    {"raw", HCL_OPT_FLAG, "0", "also probe the raw concatenated input views of --train/--test (the "
     "baseline); alone: only that", HCL_OPT_AT(opt_raw)},
    {"json", HCL_OPT_FLAG, "0", "print one JSON object with every number instead of the table",
     HCL_OPT_AT(opt_json)},
    {"no-probe", HCL_OPT_FLAG, "0", "skip the linear probes", HCL_OPT_AT(opt_no_probe)},
    {"no-knn", HCL_OPT_FLAG, "0", "skip kNN", HCL_OPT_AT(opt_no_knn)},
    {"no-retrieval", HCL_OPT_FLAG, "0", "skip cross-view retrieval", HCL_OPT_AT(opt_no_retrieval)},
    {"probe-on", HCL_OPT_NAMES, "all", "representations to probe: all, or view names, concat, "
     "fused, raw", HCL_OPT_AT(opt_probe_on), .min_items = 1, .meta = "all|NAME,..."},
    {"knn-on", HCL_OPT_NAMES, "all", "representations for kNN (raw only when named)",
     HCL_OPT_AT(opt_knn_on), .min_items = 1, .meta = "all|NAME,..."},
    {"knn-k", HCL_OPT_INT, "20", "neighbours of kNN (votes weighted exp(sim/0.07))",
     HCL_OPT_AT(opt_knn_k), .lo = 1, .hi = 100000},
    {"holdout", HCL_OPT_FLOAT, "0.15", "fraction of the training split held out to choose the "
     "probe's L2 strength", HCL_OPT_AT(opt_holdout), .min = 1e-6, .max = 0.9},
    {"max-iter", HCL_OPT_INT, "300", "L-BFGS iterations per probe fit", HCL_OPT_AT(opt_max_iter),
     .lo = 1, .hi = 100000},
    {"probe-tol", HCL_OPT_FLOAT, "1e-4", "a probe fit stops when max |gradient| <= this",
     HCL_OPT_AT(opt_probe_tol), .min = 1e-9, .max = 1},
    {"seed", HCL_OPT_INT, "0", "seed of the held-out split and of the uniformity subsample",
     HCL_OPT_AT(opt_seed)},
    {"batch-size", HCL_OPT_INT, "1024", "rows per encoder call (--checkpoint)", HCL_OPT_AT(opt_batch),
     .lo = 1, .hi = 1 << 20},
    {"threads", HCL_OPT_INT, "0", "threads (OpenBLAS and the probe; 0: OpenBLAS's default)",
     HCL_OPT_AT(opt_threads), .hi = 1024},
    {"verbose", HCL_OPT_FLAG, "0", "one line per probe fit on stderr", HCL_OPT_AT(opt_verbose)},
};
static const hcl_optset optset = {options, (int)(sizeof options / sizeof options[0]), NULL, NULL};

static void usage(FILE *fp) {
    fprintf(fp, "usage: hcl-eval --checkpoint PATH --train DIR --test DIR [options]\n"
                "       hcl-eval --features-train DIR --features-test DIR [options]\n"
                "       hcl-eval --raw --train DIR --test DIR [options]\n\n"
                "options (default in brackets):\n");
    opts_help(fp, &optset);
}

static void parse_args(int argc, char **argv) {
    char err[HCL_ERR_MAX];
    if (opts_parse_tool(&optset, argc, argv, usage, err) != 0) fail("%s", err);
    int feat = opt_ftrain[0] || opt_ftest[0];
    if (feat && (!opt_ftrain[0] || !opt_ftest[0]))
        fail("--features-train and --features-test go together");
    if (feat && opt_checkpoint[0]) fail("--checkpoint and --features-train/test exclude each other");
    if ((opt_checkpoint[0] || opt_raw) && (!opt_train[0] || !opt_test[0]))
        fail("%s needs --train DIR and --test DIR", opt_checkpoint[0] ? "--checkpoint" : "--raw");
    if (!feat && !opt_checkpoint[0] && !opt_raw)
        fail("nothing to evaluate: give --checkpoint PATH --train DIR --test DIR, "
             "--features-train DIR --features-test DIR, or --raw --train DIR --test DIR");
    if ((opt_train[0] || opt_test[0]) && !opt_checkpoint[0] && !opt_raw)
        fail("--train/--test are datasets: use them with --checkpoint or --raw");
}

/* ---- representations ---------------------------------------------------------------------- */

typedef struct {
    char name[HCL_NAME_MAX];
    int dim;
    const float *tr, *te;          /* (ntr, dim), (nte, dim) */
    const uint8_t *keep_tr, *keep_te;  /* rows used (NULL: all) */
    int do_probe, do_knn;
    eval_probe_result probe;
    double knn;
    int probed, knned;
} rep;

typedef struct {
    int i, j;
    eval_recall ij, ji;
    double alignment;
} pair_result;

static int name_listed(const char *list, const char *name, int all_default) {
    if (strcmp(list, "all") == 0) return all_default;
    char buf[OPT_STR_MAX];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ","))
        if (strcmp(tok, name) == 0) return 1;
    return 0;
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

/* Probe and kNN of one representation; adds their wall times to *tp and *tk. */
static void rep_run(rep *r, const int32_t *ytr, int64_t ntr, const int32_t *yte, int64_t nte,
                    int K, double *tp, double *tk) {
    if (!r->do_probe && !r->do_knn) return;
    float *xtr, *xte;
    int32_t *yt, *ye;
    int64_t mtr = rows_select(&xtr, &yt, r->tr, ytr, r->keep_tr, ntr, r->dim);
    int64_t mte = rows_select(&xte, &ye, r->te, yte, r->keep_te, nte, r->dim);
    char err[HCL_ERR_MAX];
    if (r->do_probe) {
        eval_probe_options o;
        eval_probe_options_default(&o);
        o.holdout = opt_holdout;
        o.seed = (uint64_t)opt_seed;
        o.max_iter = (int)opt_max_iter;
        o.gtol = opt_probe_tol;
        o.verbose = (int)opt_verbose;
        if (opt_verbose) fprintf(stderr, "probe %s: %lld x %d\n", r->name, (long long)mtr, r->dim);
        if (eval_linear_probe(&r->probe, xtr, yt, mtr, xte, ye, mte, r->dim, K, &o, err) != 0)
            fail("probe on %s: %s", r->name, err);
        r->probed = 1;
        *tp += r->probe.seconds;
    }
    if (r->do_knn) {
        double t0 = hcl_now();
        r->knn = eval_knn_accuracy(xtr, yt, mtr, xte, ye, mte, r->dim, K, (int)opt_knn_k);
        r->knned = 1;
        *tk += hcl_now() - t0;
    }
    free(xtr);
    free(xte);
    free(yt);
    free(ye);
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

/* Raw inputs of a dataset: every view gathered (absent rows zero) and concatenated. */
static float *raw_views(const hcl_dataset *ds, int *dim) {
    int D = 0, dmax = 1;
    for (int v = 0; v < ds->nviews; v++) {
        D += (int)ds->widths[v];
        if (ds->widths[v] > dmax) dmax = (int)ds->widths[v];
    }
    const int64_t n = ds->n, chunk = 4096;
    float *out = hcl_floats((size_t)(n > 0 ? n : 1) * D), *buf = hcl_floats((size_t)chunk * dmax);
    int64_t idx[4096];
    for (int64_t r0 = 0; r0 < n; r0 += chunk) {
        int64_t c = n - r0 < chunk ? n - r0 : chunk;
        for (int64_t i = 0; i < c; i++) idx[i] = r0 + i;
        int off = 0;
        for (int v = 0; v < ds->nviews; v++) {
            int w = (int)ds->widths[v];
            dataset_gather_view(ds, v, idx, c, buf);
            for (int64_t i = 0; i < c; i++) {
                float *dst = out + (r0 + i) * D + off;
                if (dataset_present(ds, r0 + i, v)) memcpy(dst, buf + i * w, sizeof(float) * (size_t)w);
                else memset(dst, 0, sizeof(float) * (size_t)w);
            }
            off += w;
        }
    }
    free(buf);
    *dim = D;
    return out;
}

/* Rows with at least one view present (NULL when there is no mask). */
static uint8_t *any_present(const eval_embeddings *e) {
    if (!e->mask) return NULL;
    uint8_t *k = hcl_malloc((size_t)(e->n > 0 ? e->n : 1));
    for (int64_t i = 0; i < e->n; i++) {
        k[i] = 0;
        for (int v = 0; v < e->nviews; v++) k[i] |= e->mask[i * e->nviews + v];
    }
    return k;
}

/* ---- output ------------------------------------------------------------------------------- */

static void json_num(double x) {
    if (isfinite(x)) printf("%.6g", x);
    else printf("null");
}

static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') putchar('\\');
        if ((unsigned char)*s < 0x20) printf("\\u%04x", *s);
        else putchar(*s);
    }
    putchar('"');
}

static void cell(double x, int probed) {
    if (probed && isfinite(x)) printf("  %7.4f", x);
    else printf("  %7s", "-");
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    if (opt_threads > 0) kernels_set_threads((int)opt_threads);
    char err[HCL_ERR_MAX], mpath[2048] = "";
    double t_start = hcl_now();

    // ---- the two splits' embeddings (and datasets, for --raw)
    eval_embeddings tr = {0}, te = {0};
    hcl_dataset dtr, dte;
    int have_emb = 0, have_ds = 0;
    if (opt_train[0]) {
        if (dataset_open(&dtr, opt_train, err) != 0) fail("%s", err);
        if (dataset_open(&dte, opt_test, err) != 0) fail("%s", err);
        have_ds = 1;
    }
    if (opt_checkpoint[0]) {
        hcl_model m;
        if (eval_checkpoint_path(mpath, sizeof mpath, opt_checkpoint, err) != 0) fail("%s", err);
        if (model_load(&m, mpath, err) != 0) fail("%s", err);
        if (eval_embed_dataset(&tr, &m, &dtr, (int)opt_batch, 0, err) != 0) fail("%s", err);
        if (eval_embed_dataset(&te, &m, &dte, (int)opt_batch, 0, err) != 0) fail("%s", err);
        model_free(&m);
        have_emb = 1;
    } else if (opt_ftrain[0]) {
        if (eval_embeddings_load(&tr, opt_ftrain, err) != 0) fail("%s", err);
        if (eval_embeddings_load(&te, opt_ftest, err) != 0) fail("%s", err);
        if (tr.nviews != te.nviews) fail("%s has %d views, %s has %d", opt_ftrain, tr.nviews,
                                         opt_ftest, te.nviews);
        for (int v = 0; v < tr.nviews; v++)
            if (strcmp(tr.names[v], te.names[v]) != 0 || tr.width[v] != te.width[v])
                fail("view %d: '%s' width %d in %s, '%s' width %d in %s", v, tr.names[v],
                     tr.width[v], opt_ftrain, te.names[v], te.width[v], opt_ftest);
        have_emb = 1;
    }
    if (have_ds && opt_raw) {
        if (dtr.nviews != dte.nviews) fail("%s has %d views, %s has %d", opt_train, dtr.nviews,
                                           opt_test, dte.nviews);
        for (int v = 0; v < dtr.nviews; v++)
            if (strcmp(dtr.names[v], dte.names[v]) != 0 || dtr.widths[v] != dte.widths[v])
                fail("view %d: '%s' width %lld in %s, '%s' width %lld in %s", v, dtr.names[v],
                     (long long)dtr.widths[v], opt_train, dte.names[v], (long long)dte.widths[v],
                     opt_test);
    }
    double t_embed = hcl_now() - t_start;

    // ---- labels
    const int32_t *ytr = NULL, *yte = NULL;
    int64_t ntr = 0, nte = 0;
    int K = 0;
    if (have_emb) {
        ytr = tr.labels, yte = te.labels, ntr = tr.n, nte = te.n;
        K = tr.nclasses > te.nclasses ? tr.nclasses : te.nclasses;
    } else {
        ytr = dtr.labels, yte = dte.labels, ntr = dtr.n, nte = dte.n;
        K = dtr.nclasses > dte.nclasses ? dtr.nclasses : dte.nclasses;
    }
    if (have_emb && have_ds && opt_raw && (dtr.n != tr.n || dte.n != te.n))
        fail("row counts differ between the datasets and their embeddings");
    int labelled = ytr && yte && K >= 2;
    if (!labelled && !opt_json)
        fprintf(stderr, "hcl-eval: no labels (or fewer than 2 classes): probes and kNN skipped\n");

    // ---- representations
    rep reps[MAX_REPS];
    int nreps = 0;
    memset(reps, 0, sizeof reps);
    float *ctr = NULL, *cte = NULL, *rtr = NULL, *rte = NULL;
    uint8_t *keep_tr[HCL_MAX_VIEWS] = {0}, *keep_te[HCL_MAX_VIEWS] = {0};
    uint8_t *any_tr = NULL, *any_te = NULL;
    if (have_emb) {
        for (int v = 0; v < tr.nviews; v++) {
            rep *r = &reps[nreps++];
            snprintf(r->name, sizeof r->name, "%s", tr.names[v]);
            r->dim = tr.width[v];
            r->tr = tr.z[v];
            r->te = te.z[v];
            r->keep_tr = keep_tr[v] = eval_mask_column(tr.mask, tr.nviews, v, tr.n);
            r->keep_te = keep_te[v] = eval_mask_column(te.mask, te.nviews, v, te.n);
        }
        any_tr = any_present(&tr);
        any_te = any_present(&te);
        if (tr.nviews > 1) {
            rep *r = &reps[nreps++];
            snprintf(r->name, sizeof r->name, "concat");
            ctr = concat_views(&tr, &r->dim);
            cte = concat_views(&te, &r->dim);
            r->tr = ctr;
            r->te = cte;
            r->keep_tr = any_tr;
            r->keep_te = any_te;
        }
        if (tr.fused && te.fused) {
            rep *r = &reps[nreps++];
            snprintf(r->name, sizeof r->name, "fused");
            r->dim = tr.width[0];
            r->tr = tr.fused;
            r->te = te.fused;
            r->keep_tr = any_tr;
            r->keep_te = any_te;
        }
    }
    if (have_ds && opt_raw) {
        rep *r = &reps[nreps++];
        snprintf(r->name, sizeof r->name, "raw");
        rtr = raw_views(&dtr, &r->dim);
        rte = raw_views(&dte, &r->dim);
        r->tr = rtr;
        r->te = rte;
    }
    double t_probe = 0, t_knn = 0;
    for (int i = 0; i < nreps; i++) {
        rep *r = &reps[i];
        int is_raw = strcmp(r->name, "raw") == 0;
        r->do_probe = labelled && !opt_no_probe && (is_raw || name_listed(opt_probe_on, r->name, 1));
        r->do_knn = labelled && !opt_no_knn && name_listed(opt_knn_on, r->name, !is_raw);
        rep_run(r, ytr, ntr, yte, nte, K, &t_probe, &t_knn);
    }

    // ---- geometry on the test split
    pair_result pairs[MAX_PAIRS];
    int npairs = 0;
    double unif[HCL_MAX_VIEWS + 1];
    double t0 = hcl_now();
    if (have_emb) {
        for (int i = 0; i < te.nviews; i++)
            for (int j = i + 1; j < te.nviews; j++) {
                pair_result *p = &pairs[npairs++];
                p->i = i;
                p->j = j;
                p->alignment = te.width[i] == te.width[j]
                    ? eval_alignment(te.z[i], te.z[j], keep_te[i], keep_te[j], te.n, te.width[i])
                    : NAN;
                if (!opt_no_retrieval && te.width[i] == te.width[j])
                    eval_retrieval(&p->ij, &p->ji, te.z[i], te.z[j], keep_te[i], keep_te[j], te.n,
                                   te.width[i]);
                else
                    p->ij.r1 = p->ij.r5 = p->ij.r10 = p->ji.r1 = p->ji.r5 = p->ji.r10 = NAN;
            }
        for (int v = 0; v < te.nviews; v++)
            unif[v] = eval_uniformity(te.z[v], keep_te[v], te.n, te.width[v], (uint64_t)opt_seed);
        unif[te.nviews] = te.fused ? eval_uniformity(te.fused, any_te, te.n, te.width[0],
                                                     (uint64_t)opt_seed) : NAN;
    }
    double t_geom = hcl_now() - t0;

    // ---- report
    const char *source = opt_checkpoint[0] ? mpath : opt_ftrain[0] ? opt_ftrain : opt_train;
    if (opt_json) {
        printf("{\"source\": ");
        json_str(source);
        printf(", \"train_rows\": %lld, \"test_rows\": %lld, \"classes\": %d, \"knn_k\": %lld",
               (long long)ntr, (long long)nte, K, (long long)opt_knn_k);
        printf(", \"views\": [");
        for (int v = 0; have_emb && v < te.nviews; v++) {
            printf("%s", v ? ", " : "");
            json_str(te.names[v]);
        }
        printf("], \"probe\": {");
        int first = 1;
        for (int i = 0; i < nreps; i++) {
            const rep *r = &reps[i];
            if (!r->probed) continue;
            printf("%s", first ? "" : ", ");
            first = 0;
            json_str(r->name);
            printf(": {\"accuracy\": ");
            json_num(r->probe.accuracy);
            printf(", \"train_accuracy\": ");
            json_num(r->probe.train_accuracy);
            printf(", \"val_accuracy\": ");
            json_num(r->probe.val_accuracy);
            printf(", \"lambda\": ");
            json_num(r->probe.lambda);
            printf(", \"loss\": ");
            json_num(r->probe.loss);
            printf(", \"dim\": %d, \"iters\": %d, \"seconds\": ", r->dim, r->probe.iters);
            json_num(r->probe.seconds);
            printf("}");
        }
        printf("}, \"knn\": {");
        first = 1;
        for (int i = 0; i < nreps; i++) {
            if (!reps[i].knned) continue;
            printf("%s", first ? "" : ", ");
            first = 0;
            json_str(reps[i].name);
            printf(": ");
            json_num(reps[i].knn);
        }
        printf("}, \"retrieval\": {");
        first = 1;
        for (int p = 0; p < npairs && !opt_no_retrieval; p++)
            for (int dir = 0; dir < 2; dir++) {
                const pair_result *q = &pairs[p];
                const eval_recall *rc = dir ? &q->ji : &q->ij;
                char key[2 * HCL_NAME_MAX + 4];
                snprintf(key, sizeof key, "%s->%s", te.names[dir ? q->j : q->i],
                         te.names[dir ? q->i : q->j]);
                printf("%s", first ? "" : ", ");
                first = 0;
                json_str(key);
                printf(": {\"r1\": ");
                json_num(rc->r1);
                printf(", \"r5\": ");
                json_num(rc->r5);
                printf(", \"r10\": ");
                json_num(rc->r10);
                printf(", \"queries\": %lld}", (long long)rc->queries);
            }
        printf("}, \"alignment\": {");
        for (int p = 0; p < npairs; p++) {
            char key[2 * HCL_NAME_MAX + 4];
            snprintf(key, sizeof key, "%s:%s", te.names[pairs[p].i], te.names[pairs[p].j]);
            printf("%s", p ? ", " : "");
            json_str(key);
            printf(": ");
            json_num(pairs[p].alignment);
        }
        printf("}, \"uniformity\": {");
        for (int v = 0; have_emb && v <= te.nviews; v++) {
            if (v == te.nviews && !te.fused) break;
            printf("%s", v ? ", " : "");
            json_str(v < te.nviews ? te.names[v] : "fused");
            printf(": ");
            json_num(unif[v]);
        }
        printf("}, \"seconds\": {\"embed\": ");
        json_num(t_embed);
        printf(", \"probe\": ");
        json_num(t_probe);
        printf(", \"knn\": ");
        json_num(t_knn);
        printf(", \"geometry\": ");
        json_num(t_geom);
        printf("}}\n");
    } else {
        printf("hcl-eval: %s\n", source);
        printf("train %lld rows, test %lld rows, %d classes\n\n", (long long)ntr, (long long)nte, K);
        printf("%-16s %5s  %7s  %8s  %7s  %7s\n", "representation", "dim", "probe", "lambda",
               "train", "kNN");
        for (int i = 0; i < nreps; i++) {
            const rep *r = &reps[i];
            printf("%-16s %5d", r->name, r->dim);
            cell(r->probe.accuracy, r->probed);
            if (r->probed) printf("  %8.0e", r->probe.lambda);
            else printf("  %8s", "-");
            cell(r->probe.train_accuracy, r->probed);
            cell(r->knn, r->knned);
            printf("\n");
        }
        printf("(probe: multinomial logistic regression on standardised features, L2 strength "
               "chosen on %.0f%% of train held out; kNN: cosine, k=%lld, votes exp(sim/0.07))\n",
               opt_holdout * 100, (long long)opt_knn_k);
        if (npairs) {
            if (!opt_no_retrieval) {
                printf("\n%-24s %7s  %7s  %7s\n", "retrieval (test)", "R@1", "R@5", "R@10");
                for (int p = 0; p < npairs; p++)
                    for (int dir = 0; dir < 2; dir++) {
                        const pair_result *q = &pairs[p];
                        const eval_recall *rc = dir ? &q->ji : &q->ij;
                        char key[2 * HCL_NAME_MAX + 4];
                        snprintf(key, sizeof key, "%s -> %s", te.names[dir ? q->j : q->i],
                                 te.names[dir ? q->i : q->j]);
                        printf("%-24s", key);
                        cell(rc->r1, 1);
                        cell(rc->r5, 1);
                        cell(rc->r10, 1);
                        printf("\n");
                    }
            }
            printf("\nalignment (test)\n");
            for (int p = 0; p < npairs; p++) {
                char key[2 * HCL_NAME_MAX + 4];
                snprintf(key, sizeof key, "%s : %s", te.names[pairs[p].i], te.names[pairs[p].j]);
                printf("%-24s", key);
                cell(pairs[p].alignment, 1);
                printf("\n");
            }
        }
        if (have_emb) {
            printf("\nuniformity (test)\n");
            for (int v = 0; v <= te.nviews; v++) {
                if (v == te.nviews && !te.fused) break;
                printf("%-24s", v < te.nviews ? te.names[v] : "fused");
                cell(unif[v], 1);
                printf("\n");
            }
            printf("(alignment: mean |a - b|^2 over rows with both views; uniformity: log mean "
                   "exp(-2 |x - y|^2) over pairs, at most %d rows)\n", EVAL_UNIFORMITY_ROWS);
        }
        printf("\ntime: embed %.1f s, probe %.1f s, kNN %.1f s, retrieval+geometry %.1f s\n",
               t_embed, t_probe, t_knn, t_geom);
    }

    for (int v = 0; v < HCL_MAX_VIEWS; v++) {
        free(keep_tr[v]);
        free(keep_te[v]);
    }
    free(any_tr);
    free(any_te);
    free(ctr);
    free(cte);
    free(rtr);
    free(rte);
    eval_embeddings_free(&tr);
    eval_embeddings_free(&te);
    if (have_ds) {
        dataset_close(&dtr);
        dataset_close(&dte);
    }
    return 0;
}
