/* json: see json.h. */
#include "json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void json_init(hcl_json *j) { memset(j, 0, sizeof *j); }

void json_free(hcl_json *j) {
    free(j->buf);
    memset(j, 0, sizeof *j);
}

void json_reset(hcl_json *j) {
    j->len = 0;
    j->depth = 0;
    j->has_item[0] = 0;
    if (j->buf) j->buf[0] = 0;
}

const char *json_text(const hcl_json *j) { return j->buf ? j->buf : ""; }
size_t json_len(const hcl_json *j) { return j->len; }

static void put(hcl_json *j, const char *s, size_t n) {
    if (j->len + n + 1 > j->cap) {
        size_t cap = j->cap ? j->cap : 256;
        while (j->len + n + 1 > cap) cap *= 2;
        char *b = realloc(j->buf, cap);
        HCL_CHECK(b, "out of memory growing a JSON text to %zu bytes", cap);
        j->buf = b;
        j->cap = cap;
    }
    memcpy(j->buf + j->len, s, n);
    j->len += n;
    j->buf[j->len] = 0;
}

static void puts_(hcl_json *j, const char *s) { put(j, s, strlen(s)); }

static void quoted(hcl_json *j, const char *s) {
    put(j, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"': puts_(j, "\\\""); break;
        case '\\': puts_(j, "\\\\"); break;
        case '\n': puts_(j, "\\n"); break;
        case '\r': puts_(j, "\\r"); break;
        case '\t': puts_(j, "\\t"); break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", *p);
                puts_(j, esc);
            } else {
                put(j, (const char *)p, 1);
            }
        }
    }
    put(j, "\"", 1);
}

/* The separator before a member and its key. */
static void member(hcl_json *j, const char *key) {
    if (j->has_item[j->depth]) puts_(j, ", ");
    j->has_item[j->depth] = 1;
    if (key) {
        quoted(j, key);
        puts_(j, ": ");
    }
}

static void open_(hcl_json *j, const char *key, const char *bracket) {
    member(j, key);
    puts_(j, bracket);
    HCL_CHECK(j->depth + 1 < HCL_JSON_DEPTH, "JSON nested deeper than %d", HCL_JSON_DEPTH);
    j->has_item[++j->depth] = 0;
}

static void close_(hcl_json *j, const char *bracket) {
    HCL_CHECK(j->depth > 0, "JSON: %s closes nothing", bracket);
    j->depth--;
    puts_(j, bracket);
}

void json_begin_object(hcl_json *j, const char *key) { open_(j, key, "{"); }
void json_end_object(hcl_json *j) { close_(j, "}"); }
void json_begin_array(hcl_json *j, const char *key) { open_(j, key, "["); }
void json_end_array(hcl_json *j) { close_(j, "]"); }

void json_number(hcl_json *j, const char *key, double x) {
    member(j, key);
    if (!isfinite(x)) {
        puts_(j, "null");
        return;
    }
    char s[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(s, sizeof s, "%.*g", prec, x);
        if (strtod(s, NULL) == x) break;
    }
    puts_(j, s);
}

void json_int(hcl_json *j, const char *key, int64_t x) {
    char s[32];
    snprintf(s, sizeof s, "%lld", (long long)x);
    member(j, key);
    puts_(j, s);
}

void json_uint(hcl_json *j, const char *key, uint64_t x) {
    char s[32];
    snprintf(s, sizeof s, "%llu", (unsigned long long)x);
    member(j, key);
    puts_(j, s);
}

void json_string(hcl_json *j, const char *key, const char *s) {
    member(j, key);
    quoted(j, s);
}

void json_bool(hcl_json *j, const char *key, int b) {
    member(j, key);
    puts_(j, b ? "true" : "false");
}

void json_null(hcl_json *j, const char *key) {
    member(j, key);
    puts_(j, "null");
}

void json_raw(hcl_json *j, const char *key, const char *text) {
    member(j, key);
    puts_(j, text);
}

int json_write_line(const hcl_json *j, FILE *f) {
    if (fputs(json_text(j), f) == EOF || fputc('\n', f) == EOF || fflush(f) != 0) return -1;
    return 0;
}
