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
 * of views, alignment of every pair and uniformity of every view; each representation (but raw)
 * clustered by k-means with k = classes, scored by matched accuracy, NMI and ARI (as multi-view
 * clustering papers report them). A per-view representation
 * uses the rows where that view is present; concat and fused use every row with a view.
 * Prints a table, or one JSON object with --json. Errors: one line `hcl-eval: ...`, exit 2.
 * On a terminal a progress line on stderr follows the embedding of each split and each probe
 * (fit by fit of its L2 sweep), kNN and retrieval, with an ETA (common/progress.h).
 * The numbers come from the evaluation pass that training's --eval-every runs too (common/eval.h);
 * this file loads the splits, says what to compute, and prints. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "dataset.h"
#include "eval.h"
#include "json.h"
#include "kernels.h"
#include "model_io.h"
#include "opts.h"
#include "progress.h"
#include "util.h"

#define EXIT_ERROR 2
#define OPT_STR_MAX 1024

/* The progress line on stderr (a terminal only): embedding each split, then every probe, kNN
 * and retrieval of the pass. */
static hcl_progress progress;

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *fmt, ...) {
    va_list ap;
    progress_clear(&progress);
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
static int64_t opt_no_cluster, opt_cluster_seeds;
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
    {"no-cluster", HCL_OPT_FLAG, "0", "skip the k-means clustering", HCL_OPT_AT(opt_no_cluster)},
    {"cluster-seeds", HCL_OPT_INT, "10", "k-means runs (k-means++ seedings) per representation on the "
     "test split, the least inertia kept", HCL_OPT_AT(opt_cluster_seeds), .lo = 1, .hi = 1000},
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

/* ---- load: the two splits' datasets and embeddings ------------------------------------------ */

typedef struct {
    hcl_dataset dtr, dte;               /* --train/--test (--checkpoint, --raw) */
    int have_ds;
    eval_embeddings tr, te;             /* the splits' embeddings (--checkpoint, --features-*) */
    int have_emb;
    char mpath[CKPT_PATH_MAX];          /* the model file (--checkpoint) */
    float *rtr, *rte;                   /* --raw: the raw inputs */
    eval_pass pass;
    double t_embed;
} evaluation;

/* --train and --test; with --raw they must have the same views. */
static void load_datasets(evaluation *ev) {
    char err[HCL_ERR_MAX];
    if (dataset_open(&ev->dtr, opt_train, err) != 0) fail("%s", err);
    if (dataset_open(&ev->dte, opt_test, err) != 0) fail("%s", err);
    ev->have_ds = 1;
}

static void check_raw_views(const evaluation *ev) {
    char err[HCL_ERR_MAX];
    int widths[HCL_MAX_VIEWS];
    for (int v = 0; v < ev->dtr.nviews; v++) widths[v] = (int)ev->dtr.widths[v];
    if (dataset_check_views(&ev->dte, ev->dtr.nviews, ev->dtr.names, widths, ev->dtr.types, NULL, "--test", err) != 0)
        fail("%s (the views of %s)", err, opt_train);
}

static void embed_split(eval_embeddings *e, const hcl_model *m, const hcl_dataset *ds, const char *name) {
    char err[HCL_ERR_MAX];
    progress_begin(&progress, "embedding %s, rows of %d views", name, m->cfg.nviews);
    if (eval_embed_dataset_progress(e, m, ds, (int)opt_batch, 0, &progress, err) != 0) fail("%s", err);
    progress_end(&progress);
}

/* --checkpoint: both splits embedded by the model; --features-train/test: hcl-embed's files. */
static void load_embeddings(evaluation *ev) {
    char err[HCL_ERR_MAX];
    eval_embeddings *tr = &ev->tr, *te = &ev->te;
    if (opt_checkpoint[0]) {
        hcl_model m;
        if (ckpt_model_path(opt_checkpoint, ev->mpath, err) != 0) fail("%s", err);
        if (model_load(&m, ev->mpath, err) != 0) fail("%s", err);
        embed_split(tr, &m, &ev->dtr, opt_train);
        embed_split(te, &m, &ev->dte, opt_test);
        model_free(&m);
    } else {
        if (eval_embeddings_load(tr, opt_ftrain, err) != 0) fail("%s", err);
        if (eval_embeddings_load(te, opt_ftest, err) != 0) fail("%s", err);
        if (tr->nviews != te->nviews) fail("%s has %d views, %s has %d", opt_ftrain, tr->nviews,
                                           opt_ftest, te->nviews);
        for (int v = 0; v < tr->nviews; v++)
            if (strcmp(tr->names[v], te->names[v]) != 0 || tr->width[v] != te->width[v])
                fail("view %d: '%s' width %d in %s, '%s' width %d in %s", v, tr->names[v],
                     tr->width[v], opt_ftrain, te->names[v], te->width[v], opt_ftest);
    }
    ev->have_emb = 1;
}

/* ---- what to compute ---------------------------------------------------------------------- */

static int name_listed(const char *list, const char *name, int all_default) {
    if (strcmp(list, "all") == 0) return all_default;
    char buf[OPT_STR_MAX];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ","))
        if (strcmp(tok, name) == 0) return 1;
    return 0;
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

/* The representations (each view, concat, fused; raw with --raw), the labels, and what to
 * compute on each: --probe-on/--knn-on, nothing without labels. The geometry: on the test split. */
static void plan(evaluation *ev) {
    eval_pass *p = &ev->pass;
    eval_pass_init(p, ev->have_emb ? &ev->tr : NULL, ev->have_emb ? &ev->te : NULL, 1,
                   ev->have_emb ? &ev->te : NULL);
    if (!ev->have_emb) {
        p->ytr = ev->dtr.labels, p->yte = ev->dte.labels, p->ntr = ev->dtr.n, p->nte = ev->dte.n;
        p->nclasses = ev->dtr.nclasses > ev->dte.nclasses ? ev->dtr.nclasses : ev->dte.nclasses;
    }
    if (ev->have_emb && ev->have_ds && opt_raw && (ev->dtr.n != ev->tr.n || ev->dte.n != ev->te.n))
        fail("row counts differ between the datasets and their embeddings");
    int labelled = p->ytr && p->yte && p->nclasses >= 2;
    if (!labelled && !opt_json)
        fprintf(stderr, "hcl-eval: no labels (or fewer than 2 classes): probes and kNN skipped\n");
    if (ev->have_ds && opt_raw) {
        int dim;
        ev->rtr = raw_views(&ev->dtr, &dim);
        ev->rte = raw_views(&ev->dte, &dim);
        eval_pass_add(p, "raw", dim, ev->rtr, ev->rte, NULL, NULL);
    }
    for (int i = 0; i < p->nreps; i++) {
        eval_rep *r = &p->rep[i];
        int is_raw = strcmp(r->name, "raw") == 0;
        r->do_probe = labelled && !opt_no_probe && (is_raw || name_listed(opt_probe_on, r->name, 1));
        r->do_knn = labelled && !opt_no_knn && name_listed(opt_knn_on, r->name, !is_raw);
        r->do_cluster = labelled && !opt_no_cluster && !is_raw;
    }
}

static void run(evaluation *ev) {
    eval_pass_options o;
    eval_pass_options_default(&o);
    o.probe.holdout = opt_holdout;
    o.probe.seed = (uint64_t)opt_seed;
    o.probe.max_iter = (int)opt_max_iter;
    o.probe.gtol = opt_probe_tol;
    o.probe.verbose = (int)opt_verbose;
    o.knn_k = (int)opt_knn_k;
    o.retrieval = !opt_no_retrieval;
    o.cluster_seeds = (int)opt_cluster_seeds;
    o.seed = (uint64_t)opt_seed;
    o.progress = &progress;
    char err[HCL_ERR_MAX];
    if (eval_pass_run(&ev->pass, &o, err) != 0) fail("%s", err);
}

/* ---- print: one JSON object, or a table ----------------------------------------------------- */

static const char *source(const evaluation *ev) {
    return opt_checkpoint[0] ? ev->mpath : opt_ftrain[0] ? opt_ftrain : opt_train;
}

/* "a->b" (JSON) or "a -> b" (table): the retrieval of pair q with queries from view i (dir 0) or j. */
static void pair_key(char *key, size_t cap, const evaluation *ev, const eval_pair *q, int dir,
                     const char *arrow) {
    snprintf(key, cap, "%s%s%s", ev->te.names[dir ? q->j : q->i], arrow, ev->te.names[dir ? q->i : q->j]);
}

static void json_reps(hcl_json *j, const eval_pass *p) {
    json_begin_object(j, "probe");
    for (int i = 0; i < p->nreps; i++) {
        const eval_rep *r = &p->rep[i];
        if (!r->probed) continue;
        json_begin_object(j, r->name);
        json_number(j, "accuracy", r->probe.accuracy);
        json_number(j, "train_accuracy", r->probe.train_accuracy);
        json_number(j, "val_accuracy", r->probe.val_accuracy);
        json_number(j, "lambda", r->probe.lambda);
        json_number(j, "loss", r->probe.loss);
        json_int(j, "dim", r->dim);
        json_int(j, "iters", r->probe.iters);
        json_number(j, "seconds", r->probe.seconds);
        json_end_object(j);
    }
    json_end_object(j);
    json_begin_object(j, "knn");
    for (int i = 0; i < p->nreps; i++)
        if (p->rep[i].knned) json_number(j, p->rep[i].name, p->rep[i].knn);
    json_end_object(j);
    json_begin_object(j, "cluster");
    for (int i = 0; i < p->nreps; i++) {
        const eval_rep *r = &p->rep[i];
        if (!r->clustered) continue;
        json_begin_object(j, r->name);
        json_number(j, "accuracy", r->cluster.accuracy);
        json_number(j, "nmi", r->cluster.nmi);
        json_number(j, "ari", r->cluster.ari);
        json_number(j, "inertia", r->cluster.inertia);
        json_int(j, "iters", r->cluster.iters);
        json_end_object(j);
    }
    json_end_object(j);
}

static void json_geometry(hcl_json *j, const evaluation *ev) {
    const eval_pass *p = &ev->pass;
    char key[2 * HCL_NAME_MAX + 4];
    json_begin_object(j, "retrieval");
    for (int k = 0; k < p->npairs && !opt_no_retrieval; k++)
        for (int dir = 0; dir < 2; dir++) {
            const eval_recall *rc = dir ? &p->pair[k].ji : &p->pair[k].ij;
            pair_key(key, sizeof key, ev, &p->pair[k], dir, "->");
            json_begin_object(j, key);
            json_number(j, "r1", rc->r1);
            json_number(j, "r5", rc->r5);
            json_number(j, "r10", rc->r10);
            json_int(j, "queries", rc->queries);
            json_end_object(j);
        }
    json_end_object(j);
    json_begin_object(j, "alignment");
    for (int k = 0; k < p->npairs; k++) {
        snprintf(key, sizeof key, "%s:%s", ev->te.names[p->pair[k].i], ev->te.names[p->pair[k].j]);
        json_number(j, key, p->pair[k].alignment);
    }
    json_end_object(j);
    json_begin_object(j, "uniformity");
    for (int v = 0; ev->have_emb && v < ev->te.nviews; v++) json_number(j, ev->te.names[v], p->uniformity[v]);
    if (ev->have_emb && ev->te.fused) json_number(j, "fused", p->uniformity[ev->te.nviews]);
    json_end_object(j);
}

static void print_json(const evaluation *ev) {
    const eval_pass *p = &ev->pass;
    hcl_json j;
    json_init(&j);
    json_begin_object(&j, NULL);
    json_string(&j, "source", source(ev));
    json_int(&j, "train_rows", p->ntr);
    json_int(&j, "test_rows", p->nte);
    json_int(&j, "classes", p->nclasses);
    json_int(&j, "knn_k", opt_knn_k);
    json_begin_array(&j, "views");
    for (int v = 0; ev->have_emb && v < ev->te.nviews; v++) json_string(&j, NULL, ev->te.names[v]);
    json_end_array(&j);
    json_reps(&j, p);
    json_geometry(&j, ev);
    json_begin_object(&j, "seconds");
    json_number(&j, "embed", ev->t_embed);
    json_number(&j, "probe", p->seconds_probe);
    json_number(&j, "knn", p->seconds_knn);
    json_number(&j, "cluster", p->seconds_cluster);
    json_number(&j, "geometry", p->seconds_geometry);
    json_end_object(&j);
    json_end_object(&j);
    if (json_write_line(&j, stdout) != 0) fail("stdout: %s", strerror(errno));
    json_free(&j);
}

static void cell(double x, int probed) {
    if (probed && isfinite(x)) printf("  %7.4f", x);
    else printf("  %7s", "-");
}

static void table_reps(const eval_pass *p) {
    printf("%-16s %5s  %7s  %8s  %7s  %7s  %7s  %7s  %7s\n", "representation", "dim", "probe", "lambda", "train",
           "kNN", "k-acc", "NMI", "ARI");
    for (int i = 0; i < p->nreps; i++) {
        const eval_rep *r = &p->rep[i];
        printf("%-16s %5d", r->name, r->dim);
        cell(r->probe.accuracy, r->probed);
        if (r->probed) printf("  %8.0e", r->probe.lambda);
        else printf("  %8s", "-");
        cell(r->probe.train_accuracy, r->probed);
        cell(r->knn, r->knned);
        cell(r->cluster.accuracy, r->clustered);
        cell(r->cluster.nmi, r->clustered);
        cell(r->cluster.ari, r->clustered);
        printf("\n");
    }
    printf("(probe: multinomial logistic regression on standardised features, L2 strength "
           "chosen on %.0f%% of train held out; kNN: cosine, k=%lld, votes exp(sim/0.07); k-means "
           "of the test rows, k = classes, best of %lld seeds: accuracy under the best matching of "
           "clusters to classes, NMI, ARI)\n", opt_holdout * 100, (long long)opt_knn_k,
           (long long)opt_cluster_seeds);
}

static void table_geometry(const evaluation *ev) {
    const eval_pass *p = &ev->pass;
    char key[2 * HCL_NAME_MAX + 4];
    if (p->npairs && !opt_no_retrieval) {
        printf("\n%-24s %7s  %7s  %7s\n", "retrieval (test)", "R@1", "R@5", "R@10");
        for (int k = 0; k < p->npairs; k++)
            for (int dir = 0; dir < 2; dir++) {
                const eval_recall *rc = dir ? &p->pair[k].ji : &p->pair[k].ij;
                pair_key(key, sizeof key, ev, &p->pair[k], dir, " -> ");
                printf("%-24s", key);
                cell(rc->r1, 1);
                cell(rc->r5, 1);
                cell(rc->r10, 1);
                printf("\n");
            }
    }
    if (p->npairs) printf("\nalignment (test)\n");
    for (int k = 0; k < p->npairs; k++) {
        snprintf(key, sizeof key, "%s : %s", ev->te.names[p->pair[k].i], ev->te.names[p->pair[k].j]);
        printf("%-24s", key);
        cell(p->pair[k].alignment, 1);
        printf("\n");
    }
    if (!ev->have_emb) return;
    printf("\nuniformity (test)\n");
    for (int v = 0; v <= ev->te.nviews; v++) {
        if (v == ev->te.nviews && !ev->te.fused) break;
        printf("%-24s", v < ev->te.nviews ? ev->te.names[v] : "fused");
        cell(p->uniformity[v], 1);
        printf("\n");
    }
    printf("(alignment: mean |a - b|^2 over rows with both views; uniformity: log mean "
           "exp(-2 |x - y|^2) over pairs, at most %d rows)\n", EVAL_UNIFORMITY_ROWS);
}

static void print_table(const evaluation *ev) {
    const eval_pass *p = &ev->pass;
    printf("hcl-eval: %s\n", source(ev));
    printf("train %lld rows, test %lld rows, %d classes\n\n", (long long)p->ntr, (long long)p->nte,
           p->nclasses);
    table_reps(p);
    table_geometry(ev);
    printf("\ntime: embed %.1f s, probe %.1f s, kNN %.1f s, k-means %.1f s, retrieval+geometry %.1f s\n",
           ev->t_embed, p->seconds_probe, p->seconds_knn, p->seconds_cluster, p->seconds_geometry);
}

static void evaluation_free(evaluation *ev) {
    eval_pass_free(&ev->pass);
    free(ev->rtr);
    free(ev->rte);
    eval_embeddings_free(&ev->tr);
    eval_embeddings_free(&ev->te);
    if (ev->have_ds) {
        dataset_close(&ev->dtr);
        dataset_close(&ev->dte);
    }
}

int main(int argc, char **argv) {
    progress_init(&progress, stderr);
    parse_args(argc, argv);
    if (opt_threads > 0) kernels_set_threads((int)opt_threads);
    static evaluation ev;
    double t_start = hcl_now();
    if (opt_train[0]) load_datasets(&ev);
    if (opt_checkpoint[0] || opt_ftrain[0]) load_embeddings(&ev);
    if (ev.have_ds && opt_raw) check_raw_views(&ev);
    ev.t_embed = hcl_now() - t_start;
    plan(&ev);
    run(&ev);
    if (opt_json) print_json(&ev);
    else print_table(&ev);
    evaluation_free(&ev);
    return 0;
}
