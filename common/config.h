/* config: every hcl-train option in one declarative table (name, type, default, help, field),
 * which drives flag parsing (`--name value` or `--name=value`), the config file (`key = value`
 * lines, `#` comments), `--help`, and the text snapshot stored with checkpoints.
 * Precedence: defaults < --config FILE < flags on the command line. */
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
    char control_secret[HCL_PATH_MAX];
    char control_clients[HCL_PATH_MAX];
    double worker_timeout;
    int64_t coordinator_nice;
    char data_plane[16];
    char grad_allreduce[16];
    char balance[16];
    /* machine and logging */
    int64_t threads;
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

#endif
