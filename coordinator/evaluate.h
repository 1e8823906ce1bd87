/* evaluate: how good the embeddings are, while training and at the end of a run.
 *
 * During training (--eval-every N with --val-data): from a snapshot of the parameters, the
 * embeddings of the first --eval-rows rows of the validation set, and the cheap numbers:
 *   knn_<view>, knn_fused   weighted kNN (k 20, common/eval.h), bank = the first half of those
 *                           rows, queries = the second half
 *   retrieval "a>b"         recall@1/5/10, every ordered pair of views
 *   alignment "a:b"         per pair; uniformity per view (Wang and Isola, 2020)
 * as one metrics.jsonl line {"step": S, "eval": {...}}. With the workers on other ranks this
 * runs in a thread (the coordinator does no other BLAS work), so the control socket stays
 * answered; with one process it runs between steps. The numbers come from the evaluation pass
 * hcl-eval runs (common/eval.h), written by the JSON writer.
 * At the end of a run (--eval-every > 0): hcl-eval on the final checkpoint, training split
 * against the validation split: probes, kNN, retrieval, alignment, uniformity, as one line
 * {"step": S, "final_eval": {...}}. */
#ifndef HCL_EVALUATE_H
#define HCL_EVALUATE_H

#include <pthread.h>
#include <stdint.h>

#include "dataset.h"
#include "json.h"
#include "model.h"

typedef struct {
    hcl_model model;            /* a copy of the replica's parameters */
    hcl_dataset rows;           /* the validation set, shallow, cut to --eval-rows rows */
    pthread_t thread;
    int running;                /* a thread is computing */
    _Atomic int done;           /* its result is ready */
    int64_t step;
    hcl_json json;              /* {"step": S, "eval": {...}} */
    char *line;                 /* the same and a newline: what evaluator_poll gives */
    size_t line_cap;
} hcl_evaluator;

int evaluator_init(hcl_evaluator *ev, const hcl_model_config *mc, const hcl_dataset *val,
                   int64_t rows, char *err);
void evaluator_free(hcl_evaluator *ev);
/* Evaluate params (the model's flat buffer) of step `step`: in a thread when threaded, else now.
 * Returns 0, or -1 when the previous evaluation is still running or its line was not taken
 * with evaluator_poll (this one is then not started). */
int evaluator_start(hcl_evaluator *ev, const float *params, int64_t step, int threaded);
/* The finished evaluation's metrics line (ending in a newline), or NULL while none is ready;
 * joins the thread. */
const char *evaluator_poll(hcl_evaluator *ev, int wait);

/* Run `hcl-eval --json` (beside this executable) on a checkpoint; returns its stdout (malloc'd)
 * or NULL with err. */
char *evaluate_final(const char *checkpoint, const char *train, const char *val, int threads, char *err);

#endif
