/* json: the one JSON writer of hcl (metrics.jsonl lines, hcl-eval --json, hclctl --json, the
 * safetensors header, --eval-every results). Text grows in one buffer that is kept between
 * uses (json_reset), so a writer reused in the step loop allocates nothing once warm.
 *
 * Every number is written as the shortest of %.15g, %.16g, %.17g that reads back to the same
 * double (so a float or double value survives the round trip bit for bit); a non-finite number
 * is null; times (json_seconds) are written to the millisecond. Strings are escaped (quotes,
 * backslashes, control characters) and come out valid UTF-8: each byte that starts no valid
 * character is U+FFFD. Separators are ", " and ": ", so a line reads `{"step": 3, "loss": 2.5}`.
 *
 *   hcl_json j; json_init(&j);
 *   json_begin_object(&j, NULL); json_int(&j, "step", 3); json_number(&j, "loss", 2.5);
 *   json_end_object(&j); fputs(json_text(&j), f); json_free(&j);
 *
 * key is the member's name inside an object and NULL inside an array or at the top. */
#ifndef HCL_JSON_H
#define HCL_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define HCL_JSON_DEPTH 16

typedef struct {
    char *buf;
    size_t len, cap;
    int depth;
    unsigned char has_item[HCL_JSON_DEPTH];   /* the open container at each depth has a member */
} hcl_json;

void json_init(hcl_json *j);
void json_free(hcl_json *j);
void json_reset(hcl_json *j);                 /* empty again, the buffer kept */
const char *json_text(const hcl_json *j);     /* "" when empty; valid until the next write */
size_t json_len(const hcl_json *j);

void json_begin_object(hcl_json *j, const char *key);
void json_end_object(hcl_json *j);
void json_begin_array(hcl_json *j, const char *key);
void json_end_array(hcl_json *j);
void json_number(hcl_json *j, const char *key, double x);
/* Seconds, a wall-clock time or a duration, to the millisecond ("%.3f" without its trailing
 * zeros: 1796424725.944, 2.5, 3): a time of today read back as a double keeps its
 * milliseconds, and the line carries no digits below them. */
void json_seconds(hcl_json *j, const char *key, double x);
void json_int(hcl_json *j, const char *key, int64_t x);
void json_uint(hcl_json *j, const char *key, uint64_t x);
void json_string(hcl_json *j, const char *key, const char *s);
void json_bool(hcl_json *j, const char *key, int b);
void json_null(hcl_json *j, const char *key);
/* A value that is already JSON text (another writer's output), inserted as it is. */
void json_raw(hcl_json *j, const char *key, const char *text);

/* The UTF-8 character at s (s[0] != 0): its length 1-4 and its code point in *cp, or 0 when the
 * bytes there are no valid UTF-8 (a stray or cut sequence, overlong, a surrogate, past
 * U+10FFFF). Reads no further than a NUL. */
int json_utf8_char(const char *s, uint32_t *cp);

/* The text and a newline to f, flushed: one line of a .jsonl file. Returns 0 or -1 (errno). */
int json_write_line(const hcl_json *j, FILE *f);

/* Reading back (TensorBoard's scalars from metrics.jsonl lines): fn(arg, path, x) for every
 * number in the JSON text, in order, its path the keys and array indices from the top joined
 * by "/" ({"a": {"b": [1, 2]}}: "a/b/0", "a/b/1"; a key cut to HCL_JSON_PATH_MAX). Strings,
 * booleans and nulls are skipped. Returns 0, or -1 when the text is not one JSON value (fn may
 * have been called for the numbers before the fault). */
#define HCL_JSON_PATH_MAX 256
int json_walk_numbers(const char *text, void (*fn)(void *arg, const char *path, double x), void *arg);

#endif
