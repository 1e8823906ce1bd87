/* util: checked allocation, fatal checks, clocks and small helpers shared by every module.
 *
 * HCL_CHECK(cond, fmt, ...) aborts with file:line on a programmer error (never for user
 * input: user errors return -1 with a message in an error buffer, see hcl_err). */
#ifndef HCL_UTIL_H
#define HCL_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define HCL_MAX_VIEWS 8
#define HCL_MAX_WIDTH (1 << 20)   /* columns of a view, width of a layer (ints, products in int64) */
#define HCL_MAX_VOCAB (1 << 24)   /* token ids: a batch carries them as float32, exact up to 2^24 */
#define HCL_NAME_MAX 64
#define HCL_ERR_MAX 512

/* A view name: 1 to HCL_NAME_MAX - 1 letters, digits, '_' and '-', not starting with '-'. It
 * becomes tensor names (encoder.NAME.0.weight: no '.'), file names (NAME.npy: no '/') and flag
 * values. HCL_VIEW_NAME_RULE says so in error lines. */
int hcl_view_name_ok(const char *s);
#define HCL_VIEW_NAME_RULE "letters, digits, _ and - (not first), at most 63 characters"
/* s for an error line: bytes outside printable ASCII as \xNN (names from files may hold
 * anything); cut to fit cap, which 4 * strlen(s) + 5 always fits */
void hcl_printable(char *out, size_t cap, const char *s);

void hcl_die(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));

#define HCL_CHECK(cond, ...) \
    do { if (!(cond)) hcl_die(__FILE__, __LINE__, __VA_ARGS__); } while (0)

void *hcl_malloc(size_t n);            /* out of memory: one line, exit 2 (memlimit.h) */
void *hcl_calloc(size_t n, size_t sz);
float *hcl_floats(size_t n);           /* 64-byte aligned, zeroed; free with free() */
/* Zeroed floats whose pages take memory only once written (calloc: a large block is fresh
 * mapped memory, not cleared by a pass over it): the buffers a bag table makes V-sized, its
 * gradient rows and moments, of which a step writes only the rows a batch used. 16-byte
 * aligned; free with free(). */
float *hcl_floats_lazy(size_t n);

/* bytes as "512 B", "4.1 kB", "35.2 TB" (powers of 1000) */
void hcl_format_bytes(char *out, size_t cap, double bytes);

/* hcl_err: write one formatted line into an error buffer of HCL_ERR_MAX bytes; returns -1 so
 * callers can `return hcl_err(err, "...")`. err may be NULL. */
int hcl_err(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

double hcl_now(void);                  /* monotonic seconds */
double hcl_wall(void);                 /* wall-clock seconds since the epoch */

/* Durable write: temp file in the same directory, fsync, rename over path, fsync the directory.
 * On error the temp file is removed, the old file (if any) is untouched, err names the step. */
int hcl_write_file_durable(const char *path, const void *data, size_t len, char *err);

/* The same written in pieces, for data that is not in one buffer (safetensors, npy):
 *   hcl_durable d;
 *   if (hcl_durable_open(&d, path, err) || hcl_durable_write(&d, a, n, err) || ...
 *       || hcl_durable_commit(&d, err)) return -1;
 * open creates PATH.tmp.PID; write appends; commit fsyncs, closes, renames over PATH and fsyncs
 * the directory. A step that fails removes the temp file and names itself in err; the later
 * calls then do nothing and return -1. */
typedef struct {
    int fd;                    /* -1 once committed or failed */
    char path[4096], tmp[4096 + 32];
} hcl_durable;
int hcl_durable_open(hcl_durable *d, const char *path, char *err);
int hcl_durable_write(hcl_durable *d, const void *data, size_t len, char *err);
int hcl_durable_commit(hcl_durable *d, char *err);

/* A whole file into a malloc'd buffer with a NUL after its last byte (so text can be read as a
 * string); *len (may be NULL) gets its size. A file over max bytes is refused. NULL with a line
 * in err naming the file when it cannot be read. hcl_read_fd reads an open descriptor (a pipe)
 * to its end the same way, name standing for it in errors; fd stays open. */
char *hcl_read_file(const char *path, size_t max, size_t *len, char *err);
char *hcl_read_fd(int fd, const char *name, size_t max, size_t *len, char *err);
int hcl_fsync_dir(const char *dir, char *err);
int hcl_mkdir_p(const char *path, char *err);

/* CRC-32C (Castagnoli) of a buffer, chainable: crc = hcl_crc32c(crc, p, n), start with 0. */
uint32_t hcl_crc32c(uint32_t crc, const void *p, size_t n);

#endif
