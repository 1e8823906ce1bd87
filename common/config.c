/* config: see config.h. */
#include "config.h"

#include <string.h>

#include "log.h"
#include "model.h"
#include "opts.h"
#include "util.h"

#define F(field) HCL_OPT_FIELD(hcl_config, field)

#ifdef HCL_HAVE_DNNL
#define MATMUL_DEFAULT "onednn"
#else
#define MATMUL_DEFAULT "openblas"
#endif
/* Ranges that keep every later product in int64_t: samples seen = step * batch <= 2^40 * 2^22,
 * and total steps = epochs * rows / batch stays below 2^63 for any dataset under 9e12 rows. */
#define MAX_STEPS ((int64_t)1 << 40)
#define MAX_BATCH ((int64_t)1 << 22)
#define MAX_EPOCHS 1000000

static const hcl_opt options[] = {
    {"data", HCL_OPT_PATH, "", "training dataset directory (manifest.txt + one .npy per view)",
     F(data), .meta = "DIR"},
    {"val-data", HCL_OPT_PATH, "", "validation dataset directory (same views)", F(val_data), .meta = "DIR"},
    {"run-dir", HCL_OPT_PATH, "", "run directory: metrics.jsonl, checkpoints, control socket",
     F(run_dir), .meta = "DIR"},
    {"config", HCL_OPT_PATH, "", "read `key = value` lines (same keys as the flags)", F(config_file),
     .meta = "FILE", .flags = HCL_OPT_NOT_IN_FILE},
    {"seed", HCL_OPT_INT, "0", "seed of the initial weights and of the data order", F(seed)},
    {"batch-size", HCL_OPT_INT, "256", "global batch size (rows per step, all workers)", F(batch_size),
     .lo = 2, .hi = MAX_BATCH},
    {"steps", HCL_OPT_INT, "0", "training steps (0: use --epochs)", F(steps), .hi = MAX_STEPS},
    {"epochs", HCL_OPT_INT, "1", "epochs when --steps is 0 (the last partial batch is dropped)",
     F(epochs), .hi = MAX_EPOCHS},
    {"hidden", HCL_OPT_INTS, "512,256", "hidden widths of every view's MLP encoder", F(hidden),
     .lo = 1, .hi = 65536, .max_items = HCL_MAX_HIDDEN, .words = "none"},
    {"encoder", HCL_OPT_STR, "", "a view's encoder, instead of an mlp of --hidden (repeat for more views): "
     "mlp:W,W,... (or mlp:none), bag:E[,W,...] (token views), conv:C1,C2,... (image views)", F(encoder),
     .meta = "VIEW=SPEC", .flags = HCL_OPT_REPEAT},
    {"dim", HCL_OPT_INT, "128", "width D of the shared embedding space", F(dim), .lo = 1, .hi = 65536},
    {"act", HCL_OPT_ENUM, "relu", "activation", F(act), .words = "relu|gelu"},
    {"layernorm", HCL_OPT_BOOL, "0", "1: LayerNorm after each hidden linear layer", F(layernorm)},
    {"loss", HCL_OPT_ENUM, "full", "loss", F(loss), .words = "clip|full|core|supcon|hybrid"},
    {"hybrid-base", HCL_OPT_ENUM, "full", "contrastive part of --loss hybrid", F(hybrid_base),
     .words = "clip|full|core|supcon"},
    {"core-view", HCL_OPT_STR, "", "core view of --loss core (default: the first view)", F(core_view),
     .meta = "VIEW"},
    {"clip-views", HCL_OPT_NAMES, "", "the two views of --loss clip (default: the first two)",
     F(clip_views), .min_items = 2, .max_items = 2, .meta = "A,B"},
    {"pair-weights", HCL_OPT_STR, "", "per-pair weights (default 1 each)", F(pair_weights),
     .meta = "A:B=W,..."},
    {"lambda", HCL_OPT_FLOAT, "1", "weight of the classifier cross-entropy in --loss hybrid", F(lambda)},
    {"temperature", HCL_OPT_FLOAT, "0", "fixed temperature (logit scale 1/T); 0: learnable scale",
     F(temperature)},
    {"optimizer", HCL_OPT_ENUM, "adamw", "optimizer", F(optimizer), .words = "adamw|sgd|lars"},
    {"lr", HCL_OPT_FLOAT, "0.001", "peak learning rate", F(lr)},
    {"weight-decay", HCL_OPT_FLOAT, "0.0001", "decoupled (AdamW) or L2 (SGD, LARS) weight decay",
     F(weight_decay)},
    {"momentum", HCL_OPT_FLOAT, "0.9", "momentum of sgd and lars", F(momentum)},
    {"nesterov", HCL_OPT_BOOL, "0", "1: Nesterov momentum (sgd, lars)", F(nesterov)},
    {"clip-norm", HCL_OPT_FLOAT, "0", "clip gradients to this global norm (0: off)", F(clip_norm)},
    {"warmup-steps", HCL_OPT_INT, "0", "linear warmup steps before the cosine decay", F(warmup_steps),
     .hi = MAX_STEPS},
    {"checkpoint-every", HCL_OPT_INT, "0", "checkpoint every N steps, and the initial weights as "
     "step 0 (0: off)", F(checkpoint_every)},
    {"checkpoint-interval", HCL_OPT_FLOAT, "0", "checkpoint every T seconds (0: off)",
     F(checkpoint_interval)},
    {"keep", HCL_OPT_INT, "3", "keep the newest N checkpoints", F(keep), .lo = 1, .hi = 1000000},
    {"resume", HCL_OPT_PATH, "", "auto: newest valid checkpoint in the run directory (none: start); "
     "or a checkpoint directory", F(resume), .meta = "auto|DIR"},
    {"no-shuffle", HCL_OPT_BOOL, "0", "1: take the rows in file order every epoch", F(no_shuffle)},
    {"eval-every", HCL_OPT_INT, "0", "every N steps: kNN, retrieval, alignment, uniformity on "
     "--val-data into metrics.jsonl; all of them at the end (0: off)", F(eval_every)},
    {"eval-rows", HCL_OPT_INT, "2048", "validation rows used by --eval-every (the first N; 0: all)",
     F(eval_rows)},
    {"control", HCL_OPT_STR, "", "control endpoint (default: ipc socket RUN_DIR/control.sock; "
     "tcp://127.0.0.1:PORT; others need CURVE)", F(control), .meta = "ENDPOINT"},
    {"watch-port", HCL_OPT_INT, "0", "tcp port of the watch socket (hclctl watch) on the interface of a tcp "
     "--control (0: any free port)", F(watch_port), .hi = 65535, .meta = "PORT"},
    {"telemetry-port", HCL_OPT_INT, "0", "tcp port rank 0 takes the workers' telemetry and heartbeats on "
     "(0: any free port)", F(telemetry_port), .hi = 65535, .meta = "PORT"},
    {"control-secret", HCL_OPT_PATH, "", "CURVE secret key file of the control socket (hclctl keygen)",
     F(control_secret), .meta = "FILE"},
    {"control-clients", HCL_OPT_PATH, "", "file of authorised client public keys, one a line",
     F(control_clients), .meta = "FILE"},
    {"tensorboard", HCL_OPT_PATH, "", "TensorBoard event files of the run (default RUN_DIR/tensorboard; "
     "off: none)", F(tensorboard), .meta = "DIR|off"},
    {"prometheus", HCL_OPT_STR, "", "serve Prometheus metrics at http://HOST:PORT/metrics from rank 0 "
     "(HOST 127.0.0.1 unless named; PORT 0: any free port; default off)", F(prometheus), .meta = "[HOST:]PORT"},
    {"worker-timeout", HCL_OPT_FLOAT, "60", "seconds a worker may be silent, or wait (for a batch, "
     "for the other workers), before the job is aborted; computing never counts",
     F(worker_timeout), .flags = HCL_OPT_ABOVE_MIN},
    {"coordinator-nice", HCL_OPT_INT, "10", "with workers, rank 0 runs at this nice value: sharing "
     "a core with a worker, it then runs mostly in the worker's waits instead of preempting its "
     "compute; at 19, on busy cores, control requests can wait 0.3 s and more",
     F(coordinator_nice), .hi = 19},
    {"grad-allreduce", HCL_OPT_ENUM, "shm", "shm: workers that share one node exchange gradients, "
     "parameters (ZeRO-1) and small batches' embeddings in shared memory (/dev/shm); mpi: MPI "
     "collectives (always across nodes)", F(grad_allreduce), .words = "shm|mpi"},
    {"comm-dtype", HCL_OPT_ENUM, "f32", "f32, or bf16: the workers' exchanges over MPI (gathered "
     "embeddings, their gradients, the gradient all-reduce) send bf16, half the bytes; sums in f32, "
     "every worker the same bits (exchanges in shared memory stay f32)", F(comm_dtype), .words = "f32|bf16"},
    {"balance", HCL_OPT_ENUM, "even", "even: the same split of every batch (bitwise reproducible); "
     "adaptive: shares follow the workers' measured speeds (unequal cores; the float sums then vary "
     "in the last bits)", F(balance), .words = "even|adaptive"},
    {"data-plane", HCL_OPT_ENUM, "auto", "coordinator: rank 0 sends every worker its rows; "
     "direct: workers read their rows from the dataset files (shared storage), rank 0 sends row "
     "indices; auto: direct when every worker runs on rank 0's host, else coordinator",
     F(data_plane), .words = "auto|coordinator|direct"},
    {"matmul", HCL_OPT_ENUM, MATMUL_DEFAULT, "engine of the step's matrix products: onednn (oneDNN's "
     "AVX-512 kernels; the default where the build has libdnnl) or openblas (the bit-exact reference "
     "path)", F(matmul), .words = "onednn|openblas"},
    {"precision", HCL_OPT_ENUM, "fp32", "fp32, or bf16: mixed precision as OpenCLIP's amp_bf16 (the "
     "products' operands rounded to bf16, accumulation, master weights, optimizer, loss and "
     "collectives in f32; needs --matmul onednn)", F(precision), .words = "fp32|bf16"},
    {"threads", HCL_OPT_INT, "0", "threads per worker of both matmul engines (OpenBLAS and oneDNN's "
     "OpenMP; 0: the cores divided among the workers)", F(threads), .hi = 65536},
    {"loss-memory", HCL_OPT_INT, "512", "MB per worker for keeping the loss's logits between its two "
     "passes instead of computing them again (a quarter of the loss's products; used when all of a "
     "worker's fit: up to a global batch of about 8,192 at W1's widths with 2 workers); 0: never",
     F(loss_memory), .hi = 1 << 24},
    {"log-every", HCL_OPT_INT, "10", "log a metrics line every N steps", F(log_every), .lo = 1},
    /* the words in the order of enum hcl_log_level (config_log_level) */
    {"log-level", HCL_OPT_ENUM, "info", "log lines at this level and above", F(log_level),
     .words = "debug|info|warn|error"},
};
#define NOPTIONS ((int)(sizeof options / sizeof options[0]))

static hcl_optset optset(const hcl_config *c) {
    /* base is only read through when c is const (config_to_text, config_enum) */
    return (hcl_optset){options, NOPTIONS, (void *)c, NULL};
}

void config_defaults(hcl_config *c) {
    memset(c, 0, sizeof *c);
    hcl_optset s = optset(c);
    opts_defaults(&s);
}

int config_set(hcl_config *c, const char *key, const char *value, char *err) {
    hcl_optset s = optset(c);
    const hcl_opt *o = opts_find(&s, key);
    if (!o) return hcl_err(err, "unknown flag '--%s' (see --help)", key);
    return opts_set(&s, o, value, "--", err);
}

int config_parse_file(hcl_config *c, const char *path, char *err) {
    hcl_optset s = optset(c);
    return opts_parse_file(&s, path, err);
}

void config_print_help(FILE *out, const char *prog) {
    hcl_optset s = optset(NULL);
    fprintf(out, "usage: %s --data DIR --run-dir DIR [options]\n\noptions (default in brackets):\n", prog);
    opts_help(out, &s);
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
            if (config_parse_file(c, a[8] == '=' ? a + 9 : argv[i + 1], err) != 0) return -1;
        }
    }
    hcl_optset s = optset(c);
    unsigned char given[NOPTIONS] = {0};
    s.given = given;   /* a repeated --encoder adds to the one before (HCL_OPT_REPEAT) */
    int npos;
    return opts_parse_argv(&s, argc - 1, argv + 1, NULL, 0, &npos, err) == 0 ? 0 : -1;
}

size_t config_to_text(const hcl_config *c, char *buf, size_t len) {
    hcl_optset s = optset(c);
    return opts_to_text(&s, buf, len);
}

static const hcl_opt *option(const char *key, enum hcl_opt_type type) {
    hcl_optset s = optset(NULL);
    const hcl_opt *o = opts_find(&s, key);
    HCL_CHECK(o && o->type == type, "config: no option '%s' of type %d", key, (int)type);
    return o;
}

int config_enum(const hcl_config *c, const char *key) {
    const hcl_opt *o = option(key, HCL_OPT_ENUM);
    int i = opts_enum_index(o, (const char *)c + o->offset);
    HCL_CHECK(i >= 0, "config: --%s holds '%s', not one of %s", key, (const char *)c + o->offset, o->words);
    return i;
}

int config_log_level(const hcl_config *c) {
    _Static_assert(HCL_LOG_DEBUG == 0 && HCL_LOG_INFO == 1 && HCL_LOG_WARN == 2 && HCL_LOG_ERROR == 3,
                   "log-level's words follow enum hcl_log_level");
    return config_enum(c, "log-level");
}

int config_ints(const hcl_config *c, const char *key, int64_t *out, int max) {
    const hcl_opt *o = option(key, HCL_OPT_INTS);
    int n = opts_ints(o, (const char *)c + o->offset, out, max);
    HCL_CHECK(n >= 0, "config: --%s holds '%s', not a valid list of at most %d", key,
              (const char *)c + o->offset, max);
    return n;
}
