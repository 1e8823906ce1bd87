/* append: a file written by appending records (metrics.jsonl's lines, TensorBoard's TFRecords)
 * that comes through a full disk whole.
 *
 * A record is queued in memory and written from there. A write that fails or writes part of it
 * (ENOSPC, EIO) leaves the rest queued, and the next put or flush writes it from where it
 * stopped: while the process lives the file never keeps a torn record, and once the disk has
 * room again it holds every record, in order. (stdio would drop its buffer on a failed write
 * and leave a torn line that the next one runs into.) The first failure, the recovery and the
 * first record dropped past HCL_APPEND_MAX_PENDING queued bytes are logged, naming the file.
 *
 * Exports: hcl_append, append_open, append_put, append_line, append_flush, append_pending,
 * append_close. */
#ifndef HCL_APPEND_H
#define HCL_APPEND_H

#include <stddef.h>
#include <stdint.h>

#define HCL_APPEND_MAX_PENDING ((size_t)64 << 20)   /* queued bytes past which records are dropped */

typedef struct {
    int is_open;                /* 0: closed (a zeroed hcl_append is closed; puts do nothing) */
    int fd;
    char path[4096];
    char *buf;                 /* queued bytes: [off, len) not yet written */
    size_t off, len, cap;
    int err;                   /* errno of the failure the queue waits out, 0: none */
    int64_t dropped;           /* records dropped with more than HCL_APPEND_MAX_PENDING queued */
} hcl_append;

/* Open path for appending: created if missing, emptied first with O_TRUNC in flags, refused if
 * it exists with O_EXCL. Returns 0, or -1 with one line in err. */
int append_open(hcl_append *a, const char *path, int flags, char *err);
/* Queue n bytes as one record and write what is queued. Returns 0 when all is written, -1 when
 * some is still queued (a->err says why). */
int append_put(hcl_append *a, const void *data, size_t n);
/* append_put of text and a newline, as one record. */
int append_line(hcl_append *a, const char *text);
/* Write what is queued: 0 when all is written, else -1 with one line in err (err may be NULL). */
int append_flush(hcl_append *a, char *err);
/* Bytes queued and not yet written. */
size_t append_pending(const hcl_append *a);
/* Flush, fsync and close; what cannot be written then is logged as lost. */
void append_close(hcl_append *a);

#endif
