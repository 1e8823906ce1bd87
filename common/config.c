/* config: see config.h. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

enum opt_type { OPT_STR, OPT_INT, OPT_FLOAT };

typedef struct {
    const char *name;
    enum opt_type type;
    size_t offset;
    size_t size;          /* for strings */
    const char *def;
    const char *help;
} opt_def;

#define O_STR(n, f, d, h) { n, OPT_STR, offsetof(hcl_config, f), sizeof(((hcl_config *)0)->f), d, h }
#define O_INT(n, f, d, h) { n, OPT_INT, offsetof(hcl_config, f), 0, d, h }
#define O_FLT(n, f, d, h) { n, OPT_FLOAT, offsetof(hcl_config, f), 0, d, h }

static const opt_def options[] = {
    O_STR("data", data, "", "training dataset directory (manifest.txt + one .npy per view)"),
    O_STR("val-data", val_data, "", "validation dataset directory (same views)"),
    O_STR("run-dir", run_dir, "", "run directory: metrics.jsonl, checkpoints, control socket"),
    O_STR("config", config_file, "", "read `key = value` lines (same keys as the flags)"),
    O_INT("seed", seed, "0", "seed of the initial weights and of the data order"),
    O_INT("batch-size", batch_size, "256", "global batch size (rows per step, all workers)"),
    O_INT("steps", steps, "0", "training steps (0: use --epochs)"),
    O_INT("epochs", epochs, "1", "epochs when --steps is 0 (the last partial batch is dropped)"),
    O_STR("hidden", hidden, "512,256", "hidden widths of every view's MLP encoder"),
    O_INT("dim", dim, "128", "width D of the shared embedding space"),
    O_STR("act", act, "relu", "activation: relu|gelu"),
    O_INT("layernorm", layernorm, "0", "1: LayerNorm after each hidden linear layer"),
    O_STR("loss", loss, "full", "loss: clip|full|core|supcon|hybrid"),
    O_STR("hybrid-base", hybrid_base, "full", "contrastive part of --loss hybrid: clip|full|core|supcon"),
    O_STR("core-view", core_view, "", "core view of --loss core (default: the first view)"),
    O_STR("clip-views", clip_views, "", "the two views of --loss clip, A,B (default: the first two)"),
    O_STR("pair-weights", pair_weights, "", "per-pair weights, A:B=w,... (default 1 each)"),
    O_FLT("lambda", lambda, "1", "weight of the classifier cross-entropy in --loss hybrid"),
    O_FLT("temperature", temperature, "0", "fixed temperature (logit scale 1/T); 0: learnable scale"),
    O_STR("optimizer", optimizer, "adamw", "optimizer: adamw|sgd|lars"),
    O_FLT("lr", lr, "0.001", "peak learning rate"),
    O_FLT("weight-decay", weight_decay, "0.0001", "decoupled (AdamW) or L2 (SGD, LARS) weight decay"),
    O_FLT("momentum", momentum, "0.9", "momentum of sgd and lars"),
    O_INT("nesterov", nesterov, "0", "1: Nesterov momentum (sgd, lars)"),
    O_FLT("clip-norm", clip_norm, "0", "clip gradients to this global norm (0: off)"),
    O_INT("warmup-steps", warmup_steps, "0", "linear warmup steps before the cosine decay"),
    O_INT("checkpoint-every", checkpoint_every, "0", "checkpoint every N steps, and the initial weights as step 0 (0: off)"),
    O_FLT("checkpoint-interval", checkpoint_interval, "0", "checkpoint every T seconds (0: off)"),
    O_INT("keep", keep, "3", "keep the newest N checkpoints"),
    O_STR("resume", resume, "", "auto: newest valid checkpoint in the run directory (none: start); or a checkpoint directory"),
    O_INT("no-shuffle", no_shuffle, "0", "1: take the rows in file order every epoch"),
    O_INT("eval-every", eval_every, "0", "every N steps: kNN, retrieval, alignment, uniformity on --val-data into metrics.jsonl; all of them at the end (0: off)"),
    O_INT("eval-rows", eval_rows, "2048", "validation rows used by --eval-every (the first N)"),
    O_STR("control", control, "", "control endpoint (default: ipc socket RUN_DIR/control.sock; tcp://127.0.0.1:PORT; others need CURVE)"),
    O_STR("control-secret", control_secret, "", "CURVE secret key file of the control socket (hclctl keygen)"),
    O_STR("control-clients", control_clients, "", "file of authorised client public keys, one a line"),
    O_FLT("worker-timeout", worker_timeout, "60", "seconds a worker may be silent (or without a batch) before the job is aborted"),
    O_INT("coordinator-nice", coordinator_nice, "19", "with workers, rank 0 runs at this nice value (0-19): sharing a core with a worker, it then runs in the worker's waits instead of preempting its compute"),
    O_STR("grad-allreduce", grad_allreduce, "shm", "shm: workers that share one node exchange gradients, parameters (ZeRO-1) and small batches' embeddings in shared memory (/dev/shm); mpi: MPI collectives (always across nodes)"),
    O_STR("balance", balance, "even", "even: the same split of every batch (bitwise reproducible); adaptive: shares follow the workers' measured speeds (unequal cores; the float sums then vary in the last bits)"),
    O_STR("data-plane", data_plane, "coordinator", "coordinator: rank 0 sends every worker its rows; direct: workers read their rows from the dataset files (shared storage), rank 0 sends row indices"),
    O_INT("threads", threads, "0", "OpenBLAS threads per worker (0: the cores divided among the workers)"),
    O_INT("log-every", log_every, "10", "log a metrics line every N steps"),
    O_STR("log-level", log_level, "info", "debug|info|warn|error"),
};
#define NOPTIONS (sizeof options / sizeof options[0])

static const opt_def *opt_find(const char *name) {
    for (size_t i = 0; i < NOPTIONS; i++)
        if (strcmp(options[i].name, name) == 0) return &options[i];
    return NULL;
}

static int opt_assign(hcl_config *c, const opt_def *o, const char *value, const char *where,
                      char *err) {
    char *base = (char *)c + o->offset;
    char *end = NULL;
    switch (o->type) {
    case OPT_STR:
        if (strlen(value) >= o->size)
            return hcl_err(err, "%s%s: value too long (%zu characters, at most %zu)", where,
                           o->name, strlen(value), o->size - 1);
        memcpy(base, value, strlen(value) + 1);
        return 0;
    case OPT_INT: {
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end)
            return hcl_err(err, "%s%s: '%s' is not an integer", where, o->name, value);
        if (v < 0)
            return hcl_err(err, "%s%s: %lld must not be negative", where, o->name, v);
        *(int64_t *)base = v;
        return 0;
    }
    case OPT_FLOAT: {
        errno = 0;
        double v = strtod(value, &end);
        if (errno || end == value || *end || !isfinite(v))
            return hcl_err(err, "%s%s: '%s' is not a finite number", where, o->name, value);
        if (v < 0)
            return hcl_err(err, "%s%s: %g must not be negative", where, o->name, v);
        *(double *)base = v;
        return 0;
    }
    }
    return hcl_err(err, "%s: bad option type", o->name);
}

void config_defaults(hcl_config *c) {
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NOPTIONS; i++)
        HCL_CHECK(opt_assign(c, &options[i], options[i].def, "", NULL) == 0, "bad default of %s",
                  options[i].name);
}

int config_set(hcl_config *c, const char *key, const char *value, char *err) {
    const opt_def *o = opt_find(key);
    if (!o) return hcl_err(err, "unknown option '%s' (see --help)", key);
    return opt_assign(c, o, value, "--", err);
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

int config_parse_file(hcl_config *c, const char *path, char *err) {
    FILE *f = fopen(path, "r");
    if (!f) return hcl_err(err, "%s: cannot open config file: %s", path, strerror(errno));
    char line[2048];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *s = trim(line);
        if (!*s) continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = hcl_err(err, "%s:%d: expected `key = value`, got '%s'", path, lineno, s);
            break;
        }
        *eq = 0;
        char *key = trim(s), *value = trim(eq + 1);
        const opt_def *o = opt_find(key);
        char where[1200];
        snprintf(where, sizeof where, "%s:%d: ", path, lineno);
        if (!o || strcmp(key, "config") == 0)
            rc = hcl_err(err, "%s:%d: unknown key '%s'", path, lineno, key);
        else
            rc = opt_assign(c, o, value, where, err);
    }
    fclose(f);
    return rc;
}

void config_print_help(FILE *out, const char *prog) {
    fprintf(out, "usage: %s --data DIR --run-dir DIR [options]\n\noptions (default in brackets):\n", prog);
    for (size_t i = 0; i < NOPTIONS; i++) {
        const opt_def *o = &options[i];
        char flag[64];
        snprintf(flag, sizeof flag, "--%s %s", o->name,
                 o->type == OPT_STR ? "S" : o->type == OPT_INT ? "N" : "X");
        fprintf(out, "  %-24s %s [%s]\n", flag, o->help, o->def);
    }
    fprintf(out, "  %-24s %s\n", "--help", "print this help");
}

int config_parse_args(hcl_config *c, int argc, char **argv, FILE *out, char *err) {
    /* First pass: --help and --config, so flags override the file whatever their order. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            config_print_help(out, argv[0]);
            return 1;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--config=", 9) == 0 || (strcmp(a, "--config") == 0 && i + 1 < argc)) {
            const char *path = a[8] == '=' ? a + 9 : argv[i + 1];
            if (config_parse_file(c, path, err) != 0) return -1;
            if (config_set(c, "config", path, err) != 0) return -1;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || a[2] == 0)
            return hcl_err(err, "unexpected argument '%s' (options start with --, see --help)", a);
        char key[128];
        const char *value;
        const char *eq = strchr(a, '=');
        if (eq) {
            size_t k = (size_t)(eq - a - 2);
            if (k >= sizeof key) return hcl_err(err, "unknown option '%s' (see --help)", a);
            memcpy(key, a + 2, k);
            key[k] = 0;
            value = eq + 1;
        } else {
            snprintf(key, sizeof key, "%s", a + 2);
            if (!opt_find(key)) return hcl_err(err, "unknown option '%s' (see --help)", a);
            if (i + 1 >= argc) return hcl_err(err, "option --%s needs a value", key);
            value = argv[++i];
        }
        if (strcmp(key, "config") == 0) continue;
        if (config_set(c, key, value, err) != 0) return -1;
    }
    return 0;
}

size_t config_to_text(const hcl_config *c, char *buf, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < NOPTIONS; i++) {
        const opt_def *o = &options[i];
        if (strcmp(o->name, "config") == 0) continue;
        const char *base = (const char *)c + o->offset;
        char val[1100];
        switch (o->type) {
        case OPT_STR: snprintf(val, sizeof val, "%s", base); break;
        case OPT_INT: snprintf(val, sizeof val, "%lld", (long long)*(const int64_t *)base); break;
        case OPT_FLOAT: snprintf(val, sizeof val, "%.17g", *(const double *)base); break;
        }
        int w = snprintf(n < len ? buf + n : NULL, n < len ? len - n : 0, "%s = %s\n", o->name, val);
        if (w > 0) n += (size_t)w;
    }
    return n;
}
