/* tensorboard: a run's TensorBoard event files, written by rank 0 (--tensorboard DIR, default
 * RUN_DIR/tensorboard; off: none).
 *
 * Each start of a run writes a new file DIR/events.out.tfevents.<unix time>.<host>.<pid>.hcl
 * and never touches the earlier ones. Its records, in order:
 *   - the file version, "brain.Event:2";
 *   - a SessionLog START at the first step this start logs: TensorBoard then drops whatever
 *     earlier files said at that step and after, so a resumed run's steps appear once (its
 *     metrics.jsonl is cut at the same step);
 *   - the run's configuration (config.txt) as a text summary, tag "config";
 *   - one Event per metrics.jsonl line (metrics.h: logged steps, evaluations, the final
 *     evaluation), at the line's step and time, whose scalars are every number of the line,
 *     tagged by its path: "loss", "pair_loss/v0:v1", "eval/knn/v0", "workers/1/compute_s";
 *     not "step" and "time" (the Event's own) and not a worker's "rank".
 * Records are TFRecords: the data's length (u64, little-endian), the masked CRC-32C of those 8
 * bytes, the data (an Event, proto/tensorboard.proto), the masked CRC-32C of the data; each
 * Event is written when made; one that cannot be (a full disk) waits in memory and is written
 * with the next ones (append.h), so the file never keeps a torn record and, once there is room,
 * has every Event: the run goes on meanwhile. */
#ifndef HCL_TENSORBOARD_H
#define HCL_TENSORBOARD_H

#include <stdint.h>
#include <stdio.h>

#include "append.h"
#include "json.h"

#define TB_MAX_SCALARS 512            /* scalars an Event holds; a line's later numbers are dropped */

typedef struct hcl_tb_values hcl_tb_values;

typedef struct {
    hcl_append out;                   /* the event file; closed: off */
    char path[4096];
    uint8_t *rec;                     /* the record being built, grown to the largest once */
    size_t rec_cap;
    hcl_tb_values *v;                 /* an Event's scalars, allocated once */
} hcl_tb;

/* Create dir (and parents) and a new event file there whose first logged step is first_step,
 * with config_text as the configuration summary. Returns 0, or -1 with one line in err. */
int tb_open(hcl_tb *t, const char *dir, int64_t first_step, const char *config_text, char *err);
/* One metrics.jsonl line (without its newline) as an Event; nothing when t is off. */
void tb_line(hcl_tb *t, const char *json);
/* Write the Events a full disk held back: 0 when all are written (or t is off), else -1 with
 * one line in err naming the file. */
int tb_flush(hcl_tb *t, char *err);
/* Write what waits, fsync and close (t off afterwards). */
void tb_close(hcl_tb *t);

/* The masked CRC-32C of TFRecord framing (exposed for the unit test). */
uint32_t tb_masked_crc32c(const void *data, size_t n);

#endif
