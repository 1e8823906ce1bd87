/* hcl-embed: run a checkpoint's encoders over a dataset and write the embeddings.
 *
 *   hcl-embed --checkpoint PATH --data DIR --out OUT [--features] [--batch-size N] [--threads N]
 *
 * PATH: a checkpoint directory, its model.safetensors, or a run directory (its
 * checkpoints/latest); a checkpoint's model file is verified against its state.pb first
 * (ckpt_model_path). OUT gets VIEW.npy (N, D) float32 per view (absent rows are zero),
 * fused.npy (the normalised mean of the present views), labels.npy (int64) and mask.npy when the
 * data has them, VIEW.features.npy (the last hidden layer's activations) with --features, and
 * manifest.txt (`view NAME` per view, written last). Every file is written durably. On a
 * terminal a progress line on stderr counts the rows embedded (common/progress.h).
 * Errors: one line `hcl-embed: ...`, exit 2. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "dataset.h"
#include "eval.h"
#include "kernels.h"
#include "model_io.h"
#include "opts.h"
#include "progress.h"
#include "util.h"

#define EXIT_ERROR 2
#define OPT_STR_MAX 1024

static hcl_progress progress;   /* the rows embedded, on stderr when it is a terminal */

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *fmt, ...) {
    va_list ap;
    progress_clear(&progress);
    fputs("hcl-embed: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(EXIT_ERROR);
}

/* ---- options: one table drives parsing and --help ------------------------------------------ */

static char opt_checkpoint[OPT_STR_MAX], opt_data[OPT_STR_MAX], opt_out[OPT_STR_MAX];
static int64_t opt_features, opt_batch, opt_threads;

static const hcl_opt options[] = {
    {"checkpoint", HCL_OPT_PATH, "", "checkpoint directory, its model.safetensors, or a run "
     "directory (then RUN/checkpoints/latest)", HCL_OPT_AT(opt_checkpoint)},
    {"data", HCL_OPT_PATH, "", "dataset directory; view names and widths must match the model",
     HCL_OPT_AT(opt_data), .meta = "DIR"},
    {"out", HCL_OPT_PATH, "", "output directory (VIEW.npy, fused.npy, labels.npy, mask.npy, "
     "manifest.txt)", HCL_OPT_AT(opt_out), .meta = "DIR"},
    {"features", HCL_OPT_FLAG, "0", "also write VIEW.features.npy: the last hidden layer's "
     "activations (without hidden layers: a bag's or conv's output, an mlp's input)", HCL_OPT_AT(opt_features)},
    {"batch-size", HCL_OPT_INT, "1024", "rows per encoder call", HCL_OPT_AT(opt_batch), .lo = 1,
     .hi = 1 << 20},
    {"threads", HCL_OPT_INT, "0", "OpenBLAS threads (0: OpenBLAS's default)", HCL_OPT_AT(opt_threads),
     .hi = 1024},
};
static const hcl_optset optset = {options, (int)(sizeof options / sizeof options[0]), NULL, NULL};

static void usage(FILE *fp) {
    fprintf(fp, "usage: hcl-embed --checkpoint PATH --data DIR --out DIR [options]\n\noptions "
            "(default in brackets):\n");
    opts_help(fp, &optset);
}

static void parse_args(int argc, char **argv) {
    char err[HCL_ERR_MAX];
    if (opts_parse_tool(&optset, argc, argv, usage, err) != 0) fail("%s", err);
    if (!opt_checkpoint[0]) fail("missing --checkpoint PATH (see --help)");
    if (!opt_data[0]) fail("missing --data DIR (see --help)");
    if (!opt_out[0]) fail("missing --out DIR (see --help)");
}

int main(int argc, char **argv) {
    progress_init(&progress, stderr);
    parse_args(argc, argv);
    if (opt_threads > 0) kernels_set_threads((int)opt_threads);
    char err[HCL_ERR_MAX], path[CKPT_PATH_MAX];
    if (ckpt_model_path(opt_checkpoint, path, err) != 0) fail("%s", err);
    hcl_model m;
    if (model_load(&m, path, err) != 0) fail("%s", err);
    hcl_dataset ds;
    if (dataset_open(&ds, opt_data, err) != 0) fail("%s", err);
    double t0 = hcl_now();
    eval_embeddings e;
    progress_begin(&progress, "embedding %s, rows of %d views", opt_data, m.cfg.nviews);
    if (eval_embed_dataset_progress(&e, &m, &ds, (int)opt_batch, (int)opt_features, &progress, err) != 0)
        fail("%s", err);
    progress_end(&progress);
    double t1 = hcl_now();
    if (eval_embeddings_save(&e, opt_out, err) != 0) fail("%s", err);
    printf("embedded %s with %s: %lld rows in %.2f s; wrote %s:", opt_data, path, (long long)e.n,
           t1 - t0, opt_out);
    for (int v = 0; v < e.nviews; v++) printf(" %s.npy", e.names[v]);
    printf(" fused.npy%s%s%s (dim %d)\n", e.labels ? " labels.npy" : "",
           e.mask ? " mask.npy" : "", opt_features ? " *.features.npy" : "", m.cfg.dim);
    eval_embeddings_free(&e);
    dataset_close(&ds);
    model_free(&m);
    return 0;
}
