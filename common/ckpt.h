/* ckpt: checkpoints on disk, written so that a crash at any moment leaves the previous one
 * whole, verified by checksums when read.
 *
 *   RUN_DIR/checkpoints/step-NNNNNNNN/model.safetensors      the model (model_io.h)
 *                                     optimizer.safetensors  moments, PyTorch's names:
 *                                        exp_avg.<tensor>, exp_avg_sq.<tensor> (AdamW),
 *                                        momentum_buffer.<tensor> (SGD, LARS)
 *                                     state.pb               hcl.TrainState (proto/checkpoint.proto),
 *                                        its own CRC-32C last (format 2)
 *   RUN_DIR/checkpoints/latest        "step-NNNNNNNN\n", the newest complete checkpoint
 *
 * Writing: files go to checkpoints/.tmp-step-NNNNNNNN.PID/, each fsynced; state.pb last, with
 * the size and CRC-32C of the other files; the directory is fsynced, renamed into place, the
 * parent fsynced, then `latest` is replaced (temp file, fsync, rename). On any error the
 * temporary directory is removed and nothing older is touched. */
#ifndef HCL_CKPT_H
#define HCL_CKPT_H

#include <stdint.h>

#include "model.h"
#include "optim.h"

/* 2: state.pb ends with its own CRC-32C (field state_crc32c); 1, without it, is still read */
#define CKPT_FORMAT_VERSION 2
#define CKPT_MAX_STEP ((int64_t)1 << 40)    /* the option table's limits of --steps and */
#define CKPT_MAX_BATCH ((int64_t)1 << 22)   /* --batch-size (common/config.c) */
#define CKPT_MAX_WORLD (1 << 20)
#define CKPT_PATH_MAX 2048   /* size of every path_out buffer */

/* Everything but the tensors. */
typedef struct {
    int64_t step;              /* updates taken: training continues with global batch `step` */
    int64_t epoch;
    int64_t samples_seen;
    int64_t data_cursor;       /* batch index within the epoch */
    uint64_t seed;
    uint64_t data_rng[4];      /* the epoch's order stream as derived from (seed, epoch) */
    char config[16384];        /* config.txt text */
    int world_size, workers;
    int64_t updates, skipped;
    enum hcl_optim_kind optimizer;
    double lr_scale;
    double wall_time;
    int64_t global_batch;
    int64_t model_params;      /* floats in model.safetensors */
    uint32_t format_version;   /* 1: written by an hcl before state.pb had its own checksum */
} hcl_ckpt_state;

/* Write checkpoint st->step of model m (params) and optimizer state into run_dir, replace
 * `latest`, keep the newest `keep` checkpoints. path_out (CKPT_PATH_MAX bytes) gets the directory. */
int ckpt_write(const char *run_dir, const hcl_model *m, const float *opt_state,
               const hcl_ckpt_state *st, int keep, char *path_out, char *err);

/* Check a checkpoint directory: state.pb against its own CRC-32C (format 2), every other file
 * against state.pb (size and CRC-32C), and every field of state.pb in range and consistent with
 * the others and with the model file (the step is not negative, epoch, data_cursor,
 * samples_seen, the data order's words and the optimizer's counts agree with it, the views are
 * the model's, ...). One line naming the file and the field in err. */
int ckpt_verify(const char *dir, char *err);

/* Read a checkpoint (verified as ckpt_verify does): its state, and the model configuration
 * stored with the model. */
int ckpt_read_state(const char *dir, hcl_ckpt_state *st, hcl_model_config *mc, char *err);
/* Load params and optimizer state into m (same shapes) and opt_state (optim_state_floats). */
int ckpt_read_tensors(const char *dir, hcl_model *m, float *opt_state, enum hcl_optim_kind kind,
                      char *err);

/* The newest checkpoint of run_dir that verifies, into path_out (CKPT_PATH_MAX bytes): `latest` first,
 * then step-* directories newest first; each damaged one is reported with warn() (may be
 * NULL) and skipped. Returns 0 when found, 1 when run_dir has no checkpoint, 2 when it has
 * some and none verifies. */
int ckpt_find_latest(const char *run_dir, char *path_out, void (*warn)(const char *msg));

/* The model file a user names to evaluate or embed (hcl-eval, hcl-embed): PATH is a
 * model.safetensors file, a checkpoint directory, a run directory or its checkpoints/latest
 * file (the checkpoint that file names). The model file of a checkpoint is verified against state.pb (size
 * and CRC-32C, as ckpt_verify does; the optimizer's file is not needed); a model file with no
 * state.pb beside it (exported, or written by another program) is taken as it is. model_out
 * (CKPT_PATH_MAX bytes) gets its path. Returns 0, or -1 with one line in err. */
int ckpt_model_path(const char *path, char *model_out, char *err);

/* Remove temporary directories a crash left behind in run_dir/checkpoints. */
void ckpt_cleanup(const char *run_dir);

#endif
