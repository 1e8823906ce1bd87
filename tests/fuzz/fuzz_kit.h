/* fuzz_kit: what the libFuzzer harnesses of tests/fuzz share (scripts/fuzz runs them).
 *
 * Each harness feeds one parser of hcl through its real entry point. Parsers that take a path
 * get their input as a file: fuzz_file (one memfd, named /proc/self/fd/N) or, for a whole
 * directory (a dataset, a checkpoint), fuzz_unpack of an archive into a tmpfs directory:
 *
 *   --- manifest.txt                 a line "--- NAME" starts each file (at the start of the
 *   view v0                          input or after a newline); its bytes run to the newline
 *   --- v0.npy                       before the next "--- " line. NAME: letters, digits, _ - .
 *   <bytes>                          (not first), at most 64; other entries are skipped
 *
 * Message-stream harnesses (control requests, telemetry) read their input as a sequence of
 * varint-length-delimited protobuf messages (fuzz_next_message); a length past the end takes
 * what is left.
 *
 * A harness returns 0 for an input hcl refuses with an error, and aborts (fuzz_fail) when a
 * property every accepted input must have does not hold: libFuzzer then keeps the input. */
#ifndef HCL_FUZZ_KIT_H
#define HCL_FUZZ_KIT_H

#include <stddef.h>
#include <stdint.h>

#define FUZZ_ARCHIVE_SEP "--- "

/* Abort with a line naming the property that failed (libFuzzer reports it as a crash). */
void fuzz_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
#define FUZZ_ASSERT(cond, ...) do { if (!(cond)) fuzz_fail(__VA_ARGS__); } while (0)

/* data as the whole content of an in-memory file (one per slot 0..7, reused); its path. */
const char *fuzz_file(int slot, const uint8_t *data, size_t len);
/* The harness's own empty directory on tmpfs (created once, emptied on each call). */
const char *fuzz_dir(void);
/* Write the archive's files into dir (see above); the number written. */
int fuzz_unpack(const char *dir, const uint8_t *data, size_t len);
/* The next message of a varint-delimited stream at *p (advanced past it) into *msg, *len:
 * 1, or 0 at the end. */
int fuzz_next_message(const uint8_t **p, const uint8_t *end, const uint8_t **msg, size_t *len);
/* err after a refusal: a message, NUL-terminated within HCL_ERR_MAX. */
void fuzz_check_err(const char *what, const char *err);

#endif
