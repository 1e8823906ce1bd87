/* config: hcl-train's options, one typed table (common/opts.h: name, type, allowed values,
 * default, help, field of hcl_config) that drives flag parsing (`--name value` or
 * `--name=value`), the config file (`key = value` lines, `#` comments), `--help`, and the text
 * snapshot stored with checkpoints (config.txt). Every value is checked against its type,
 * range or allowed words when it is set, so a parsed hcl_config holds only valid values.
 * Enums stay words (the snapshot stores words); config_enum gives a word's index.
 * Precedence: defaults < --config FILE < flags on the command line.
 * Exports: hcl_config, config_defaults, config_parse_args, config_parse_file, config_set,
 * config_print_help, config_to_text, config_enum, config_log_level, config_ints. */
#ifndef HCL_CONFIG_H
#define HCL_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define HCL_PATH_MAX 1024

typedef struct {
    /* data and run */
    char data[HCL_PATH_MAX];
    char val_data[HCL_PATH_MAX];
    char run_dir[HCL_PATH_MAX];
    char config_file[HCL_PATH_MAX];
    int64_t seed;
    int64_t batch_size;
    int64_t steps;
    int64_t epochs;
    /* model */
    char hidden[128];
    char encoder[1024];           /* `VIEW=SPEC VIEW=SPEC ...` (repeated --encoder) */
    int64_t dim;
    char act[16];
    int64_t layernorm;
    /* loss */
    char loss[16];
    char hybrid_base[16];
    char core_view[64];
    char clip_views[160];
    char pair_weights[512];
    double lambda;
    double temperature;
    /* optimisation */
    char optimizer[16];
    double lr;
    double weight_decay;
    double momentum;
    int64_t nesterov;
    double clip_norm;
    int64_t warmup_steps;
    /* checkpoints */
    int64_t checkpoint_every;
    double checkpoint_interval;
    int64_t keep;
    char resume[HCL_PATH_MAX];
    int64_t no_shuffle;
    /* evaluation */
    int64_t eval_every;
    int64_t eval_rows;
    /* control plane */
    char control[HCL_PATH_MAX];
    int64_t watch_port;
    int64_t telemetry_port;
    char control_secret[HCL_PATH_MAX];
    char control_clients[HCL_PATH_MAX];
    /* monitoring */
    char tensorboard[HCL_PATH_MAX];
    char prometheus[256];
    double worker_timeout;
    int64_t coordinator_nice;
    char data_plane[16];
    char grad_allreduce[16];
    char comm_dtype[16];
    char balance[16];
    /* machine and logging */
    char matmul[16];
    char precision[16];
    int64_t threads;
    int64_t loss_memory;
    int64_t log_every;
    char log_level[16];
} hcl_config;

void config_defaults(hcl_config *c);
/* Parse argv (argv[0] skipped). Returns 0, 1 when --help was given (help printed to out),
 * or -1 with one line in err naming the flag, key or value. */
int config_parse_args(hcl_config *c, int argc, char **argv, FILE *out, char *err);
int config_parse_file(hcl_config *c, const char *path, char *err);
int config_set(hcl_config *c, const char *key, const char *value, char *err);
void config_print_help(FILE *out, const char *prog);
/* `key = value` lines of every option, in table order; returns bytes written (snprintf-like). */
size_t config_to_text(const hcl_config *c, char *buf, size_t len);
/* Index of an enum option's word among its allowed words (as listed in --help; e.g.
 * grad-allreduce: shm 0, mpi 1). key must name an enum option (else it aborts). */
int config_enum(const hcl_config *c, const char *key);
/* --log-level as an enum hcl_log_level (common/log.h): debug, info, warn, error. */
int config_log_level(const hcl_config *c);
/* The integers of a list option (e.g. "hidden": 512,256; none gives 0): at most max into out,
 * returns how many. key must name a list option (else it aborts). */
int config_ints(const hcl_config *c, const char *key, int64_t *out, int max);

#endif
