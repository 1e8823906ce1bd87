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

int json_utf8_char(const char *s, uint32_t *cp) {
    const unsigned char *p = (const unsigned char *)s;
    uint32_t c = p[0], min;
    int n;
    if (c < 0x80) n = 1, min = 0;
    else if (c >= 0xc2 && c <= 0xdf) n = 2, c &= 0x1f, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef) n = 3, c &= 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4) n = 4, c &= 0x07, min = 0x10000;
    else return 0;
    for (int i = 1; i < n; i++) {   /* stops at a NUL: it is no continuation byte */
        if ((p[i] & 0xc0) != 0x80) return 0;
        c = c << 6 | (p[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
    *cp = c;
    return n;
}

/* s as a JSON string: quotes, backslashes and control characters escaped; each byte that does
 * not start a valid UTF-8 character becomes U+FFFD (JSON text is UTF-8, whatever we were given). */
static void quoted(hcl_json *j, const char *s) {
    put(j, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        uint32_t cp;
        int n;
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
            } else if ((n = json_utf8_char((const char *)p, &cp)) > 0) {
                put(j, (const char *)p, (size_t)n);
                p += n - 1;
            } else {
                puts_(j, "\xef\xbf\xbd");
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

void json_seconds(hcl_json *j, const char *key, double x) {
    if (!isfinite(x) || fabs(x) >= 1e15) {   /* past 1e15 the double has no millisecond left */
        json_number(j, key, x);
        return;
    }
    char s[40];
    int n = snprintf(s, sizeof s, "%.3f", x);
    while (s[n - 1] == '0') s[--n] = 0;   /* "2.500" -> "2.5", "3.000" -> "3" */
    if (s[n - 1] == '.') s[--n] = 0;
    member(j, key);
    puts_(j, strcmp(s, "-0") ? s : "0");
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

/* ---- reading back: the numbers of a line ---------------------------------------------------- */

typedef struct {
    const char *p;
    char path[HCL_JSON_PATH_MAX];
    void (*fn)(void *arg, const char *path, double x);
    void *arg;
} walker;

static void skip_ws(walker *w) {
    while (*w->p == ' ' || *w->p == '\t' || *w->p == '\n' || *w->p == '\r') w->p++;
}

/* A string at w->p (its opening quote); its text, unescaped as far as \" \\ \/ and the
 * one-letter escapes (a \u escape is kept as it is), into out (cut to outlen) when out != NULL. */
static int walk_string(walker *w, char *out, size_t outlen) {
    size_t n = 0;
    if (*w->p++ != '"') return -1;
    for (; *w->p != '"'; w->p++) {
        char ch = *w->p;
        if (ch == '\0') return -1;
        if (ch == '\\') {
            ch = *++w->p;
            if (ch == '\0') return -1;
            ch = ch == 'n' ? '\n' : ch == 't' ? '\t' : ch == 'r' ? '\r' : ch == 'b' ? '\b' : ch == 'f' ? '\f' : ch;
        }
        if (out && n + 1 < outlen) out[n++] = ch;
    }
    w->p++;
    if (out) out[n] = '\0';
    return 0;
}

static int walk_value(walker *w, int depth);

/* The members or items of an object or array at w->p, each under path/key or path/index. */
static int walk_container(walker *w, int depth, int object) {
    char close = object ? '}' : ']';
    size_t base = strlen(w->path);
    w->p++;
    skip_ws(w);
    if (*w->p == close) return w->p++, 0;
    for (long i = 0;; i++) {
        char key[HCL_JSON_PATH_MAX];
        if (object) {
            if (walk_string(w, key, sizeof key) != 0) return -1;
            skip_ws(w);
            if (*w->p++ != ':') return -1;
        } else {
            snprintf(key, sizeof key, "%ld", i);
        }
        snprintf(w->path + base, sizeof w->path - base, "%s%s", base ? "/" : "", key);
        if (walk_value(w, depth + 1) != 0) return -1;
        w->path[base] = '\0';
        skip_ws(w);
        if (*w->p == ',') {
            w->p++;
            skip_ws(w);
            continue;
        }
        if (*w->p++ != close) return -1;
        return 0;
    }
}

static int walk_value(walker *w, int depth) {
    if (depth > HCL_JSON_DEPTH) return -1;
    skip_ws(w);
    const char *p = w->p;
    if (*p == '{' || *p == '[') return walk_container(w, depth, *p == '{');
    if (*p == '"') return walk_string(w, NULL, 0);
    if (!strncmp(p, "true", 4) || !strncmp(p, "null", 4)) return w->p += 4, 0;
    if (!strncmp(p, "false", 5)) return w->p += 5, 0;
    char *end;
    double x = strtod(p, &end);
    if (end == p || !(*p == '-' || (*p >= '0' && *p <= '9'))) return -1;
    w->p = end;
    w->fn(w->arg, w->path, x);
    return 0;
}

int json_walk_numbers(const char *text, void (*fn)(void *arg, const char *path, double x), void *arg) {
    walker w = {.p = text, .fn = fn, .arg = arg};
    if (walk_value(&w, 0) != 0) return -1;
    skip_ws(&w);
    return *w.p == '\0' ? 0 : -1;
}
