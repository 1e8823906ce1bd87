/* hcl-embed: run a checkpoint's encoders over a dataset and write the embeddings.
 *
 *   hcl-embed --checkpoint PATH --data DIR --out OUT [--features] [--batch-size N] [--threads N]
 *
 * PATH: a checkpoint directory, its model.safetensors, or a run directory (its
 * checkpoints/latest). OUT gets VIEW.npy (N, D) float32 per view (absent rows are zero),
 * fused.npy (the normalised mean of the present views), labels.npy (int64) and mask.npy when the
 * data has them, VIEW.features.npy (the last hidden layer's activations) with --features, and
 * manifest.txt (`view NAME` per view, written last). Every file is written durably.
 * Errors: one line `hcl-embed: ...`, exit 2. */
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
#include "util.h"

#define EXIT_ERROR 2
#define OPT_STR_MAX 1024

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *fmt, ...) {
    va_list ap;
    fputs("hcl-embed: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(EXIT_ERROR);
}

/* ---- options: one table drives parsing and --help ------------------------------------------ */

enum opt_type { OPT_FLAG, OPT_INT, OPT_STR };

typedef struct {
    const char *name;
    enum opt_type type;
    const char *def;
    const char *help;
    void *dst;              /* int64_t * (flag, int) or char[OPT_STR_MAX] */
    int64_t min, max;
} cli_option;

static char opt_checkpoint[OPT_STR_MAX], opt_data[OPT_STR_MAX], opt_out[OPT_STR_MAX];
static int64_t opt_features, opt_batch, opt_threads;

static cli_option options[] = {
    {"checkpoint", OPT_STR, "", "checkpoint directory, its model.safetensors, or a run directory "
     "(then RUN/checkpoints/latest)", opt_checkpoint, 0, 0},
    {"data", OPT_STR, "", "dataset directory; view names and widths must match the model",
     opt_data, 0, 0},
    {"out", OPT_STR, "", "output directory (VIEW.npy, fused.npy, labels.npy, mask.npy, "
     "manifest.txt)", opt_out, 0, 0},
    {"features", OPT_FLAG, "0", "also write VIEW.features.npy: the last hidden layer's "
     "activations", &opt_features, 0, 1},
    {"batch-size", OPT_INT, "1024", "rows per encoder call", &opt_batch, 1, 1 << 20},
    {"threads", OPT_INT, "0", "OpenBLAS threads (0: OpenBLAS's default)", &opt_threads, 0, 1024},
};
#define NOPTIONS ((int)(sizeof options / sizeof options[0]))

static void usage(FILE *fp) {
    fprintf(fp, "usage: hcl-embed --checkpoint PATH --data DIR --out DIR [options]\n\noptions "
            "(default in brackets):\n");
    for (int i = 0; i < NOPTIONS; i++) {
        const cli_option *o = &options[i];
        char head[64];
        snprintf(head, sizeof head, "--%s%s", o->name,
                 o->type == OPT_INT ? " N" : o->type == OPT_STR ? " S" : "");
        fprintf(fp, "  %-18s %s [%s]\n", head, o->help, o->def);
    }
    fprintf(fp, "  %-18s print this help\n", "--help");
}

static void opt_set(const cli_option *o, const char *val) {
    if (o->type == OPT_STR) {
        if (strlen(val) >= OPT_STR_MAX) fail("--%s: value too long", o->name);
        snprintf(o->dst, OPT_STR_MAX, "%s", val);
        return;
    }
    char *end;
    errno = 0;
    long long x = strtoll(val, &end, 10);
    if (!*val || *end || errno || x < o->min || x > o->max)
        fail("--%s: bad value '%s' (want an integer in [%lld, %lld])", o->name, val,
             (long long)o->min, (long long)o->max);
    *(int64_t *)o->dst = x;
}

static void parse_args(int argc, char **argv) {
    for (int i = 0; i < NOPTIONS; i++) opt_set(&options[i], options[i].def);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strncmp(a, "--", 2) != 0 || !a[2]) fail("unexpected argument '%s' (see --help)", a);
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        const cli_option *o = NULL;
        for (int k = 0; k < NOPTIONS; k++)
            if (strlen(options[k].name) == nl && strncmp(options[k].name, a + 2, nl) == 0)
                o = &options[k];
        if (!o) fail("unknown flag '%.*s' (see hcl-embed --help)", (int)nl + 2, a);
        if (o->type == OPT_FLAG) {
            opt_set(o, eq ? eq + 1 : "1");
            continue;
        }
        if (!eq && i + 1 >= argc) fail("--%s needs a value", o->name);
        opt_set(o, eq ? eq + 1 : argv[++i]);
    }
    if (!opt_checkpoint[0]) fail("missing --checkpoint PATH (see --help)");
    if (!opt_data[0]) fail("missing --data DIR (see --help)");
    if (!opt_out[0]) fail("missing --out DIR (see --help)");
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    if (opt_threads > 0) kernels_set_threads((int)opt_threads);
    char err[HCL_ERR_MAX], path[2048];
    if (eval_checkpoint_path(path, sizeof path, opt_checkpoint, err) != 0) fail("%s", err);
    hcl_model m;
    if (model_load(&m, path, err) != 0) fail("%s", err);
    hcl_dataset ds;
    if (dataset_open(&ds, opt_data, err) != 0) fail("%s", err);
    double t0 = hcl_now();
    eval_embeddings e;
    if (eval_embed_dataset(&e, &m, &ds, (int)opt_batch, (int)opt_features, err) != 0)
        fail("%s", err);
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
