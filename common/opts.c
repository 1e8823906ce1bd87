/* opts: see opts.h. */
#include "opts.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

#define VALUE_SHOWN 80   /* characters of a bad value quoted in an error line */

static void *dst_of(const hcl_optset *s, const hcl_opt *o) {
    return o->dst ? o->dst : (char *)s->base + o->offset;
}

static int64_t int_hi(const hcl_opt *o) { return o->hi ? o->hi : INT64_MAX; }

/* ---- what an option accepts ----------------------------------------------------------------- */

/* The words of an ENUM, "a|b|c", as "a, b, c". */
static void words_list(const char *words, char *buf, size_t len) {
    size_t n = 0;
    for (const char *p = words; *p && n + 3 < len; p++) {
        if (*p == '|') {
            buf[n++] = ',';
            buf[n++] = ' ';
        } else {
            buf[n++] = *p;
        }
    }
    buf[n] = 0;
}

static void items_phrase(const hcl_opt *o, char *buf, size_t len) {
    if (o->max_items && o->min_items == o->max_items)
        snprintf(buf, len, "%d comma-separated", o->min_items);
    else if (o->max_items)
        snprintf(buf, len, "%d to %d comma-separated", o->min_items, o->max_items);
    else
        snprintf(buf, len, "%d or more comma-separated", o->min_items);
}

void opts_describe(const hcl_opt *o, char *buf, size_t len) {
    char items[64], words[256];
    switch (o->type) {
    case HCL_OPT_INT:
        if (o->hi) snprintf(buf, len, "an integer from %lld to %lld", (long long)o->lo, (long long)o->hi);
        else snprintf(buf, len, "an integer >= %lld", (long long)o->lo);
        return;
    case HCL_OPT_FLOAT:
        if (o->flags & HCL_OPT_ABOVE_MIN)
            snprintf(buf, len, o->max ? "a number > %g and <= %g" : "a number > %g", o->min, o->max);
        else
            snprintf(buf, len, o->max ? "a number from %g to %g" : "a number >= %g", o->min, o->max);
        return;
    case HCL_OPT_BOOL: snprintf(buf, len, "0 or 1"); return;
    case HCL_OPT_FLAG: snprintf(buf, len, "no value"); return;
    case HCL_OPT_ENUM:
        words_list(o->words, words, sizeof words);
        snprintf(buf, len, "one of %s", words);
        return;
    case HCL_OPT_INTS:
        items_phrase(o, items, sizeof items);
        snprintf(buf, len, "%s integers from %lld to %lld%s%s", items, (long long)o->lo,
                 (long long)int_hi(o), o->words ? ", or " : "", o->words ? o->words : "");
        return;
    case HCL_OPT_NAMES:
        items_phrase(o, items, sizeof items);
        snprintf(buf, len, "%s names", items);
        return;
    case HCL_OPT_STR:
        snprintf(buf, len, "text of at most %zu characters", o->size - 1);
        return;
    case HCL_OPT_PATH:
        snprintf(buf, len, "a path of at most %zu characters", o->size - 1);
        return;
    }
    snprintf(buf, len, "?");
}

int opts_enum_index(const hcl_opt *o, const char *value) {
    if (o->type != HCL_OPT_ENUM) return -1;
    size_t vl = strlen(value);
    int i = 0;
    for (const char *p = o->words;; i++) {
        const char *bar = strchr(p, '|');
        size_t wl = bar ? (size_t)(bar - p) : strlen(p);
        if (wl == vl && strncmp(p, value, wl) == 0) return i;
        if (!bar) return -1;
        p = bar + 1;
    }
}

/* Scan an INTS value: the items into out (up to max; out may be NULL), their count, or -1. */
static int ints_scan(const hcl_opt *o, const char *text, int64_t *out, int max) {
    if (!*text || (o->words && strcmp(text, o->words) == 0)) return o->min_items == 0 ? 0 : -1;
    int n = 0;
    for (const char *p = text;;) {
        char *end;
        errno = 0;
        long long x = strtoll(p, &end, 10);
        if (end == p || errno || x < o->lo || x > int_hi(o) || (*end && *end != ','))
            return -1;
        if (out && n < max) out[n] = x;
        n++;
        if (o->max_items && n > o->max_items) return -1;
        if (!*end) break;
        p = end + 1;
    }
    return n >= o->min_items ? n : -1;
}

int opts_ints(const hcl_opt *o, const char *text, int64_t *out, int max) {
    int n = o->type == HCL_OPT_INTS ? ints_scan(o, text, out, max) : -1;
    return n > max ? -1 : n;
}

static int names_ok(const hcl_opt *o, const char *text) {
    if (!*text) return 1;    /* unset */
    int n = 1;
    for (const char *p = text; *p; p++) {
        if (*p == ',') n++;
        if (*p == ',' && (p == text || !p[1] || p[1] == ',')) return 0;
    }
    return n >= o->min_items && (!o->max_items || n <= o->max_items);
}

/* ---- storing a value ------------------------------------------------------------------------ */

static int bad_value(char *err, const char *where, const hcl_opt *o, const char *value) {
    char want[256];
    opts_describe(o, want, sizeof want);
    return hcl_err(err, "%s%s: bad value '%.*s' (want %s)", where, o->name, VALUE_SHOWN, value, want);
}

static int set_number(void *dst, const hcl_opt *o, const char *value, const char *where, char *err) {
    char *end;
    errno = 0;
    if (o->type == HCL_OPT_FLOAT) {
        HCL_CHECK(o->size == sizeof(double), "--%s: a float option needs a double", o->name);
        double x = strtod(value, &end);
        int low = o->flags & HCL_OPT_ABOVE_MIN ? x <= o->min : x < o->min;
        if (end == value || *end || errno || !isfinite(x) || low || (o->max && x > o->max))
            return bad_value(err, where, o, value);
        *(double *)dst = x;
        return 0;
    }
    HCL_CHECK(o->size == sizeof(int64_t), "--%s: an integer option needs an int64_t", o->name);
    long long x = strtoll(value, &end, 10);
    if (end == value || *end || errno) return bad_value(err, where, o, value);
    int ok = o->type == HCL_OPT_INT ? x >= o->lo && x <= int_hi(o) : x == 0 || x == 1;
    if (!ok || (o->type == HCL_OPT_BOOL && strcmp(value, "0") && strcmp(value, "1")))
        return bad_value(err, where, o, value);
    *(int64_t *)dst = x;
    return 0;
}

int opts_set(const hcl_optset *s, const hcl_opt *o, const char *value, const char *where,
             char *err) {
    void *dst = dst_of(s, o);
    switch (o->type) {
    case HCL_OPT_INT:
    case HCL_OPT_FLOAT:
    case HCL_OPT_BOOL:
    case HCL_OPT_FLAG:
        return set_number(dst, o, value, where, err);
    case HCL_OPT_ENUM:
        if (opts_enum_index(o, value) < 0) {
            char words[256];
            words_list(o->words, words, sizeof words);
            return hcl_err(err, "%s%s: '%.*s' is not one of %s", where, o->name, VALUE_SHOWN,
                           value, words);
        }
        break;
    case HCL_OPT_INTS:
        if (ints_scan(o, value, NULL, 0) < 0) return bad_value(err, where, o, value);
        break;
    case HCL_OPT_NAMES:
        if (!names_ok(o, value)) return bad_value(err, where, o, value);
        break;
    case HCL_OPT_STR:
    case HCL_OPT_PATH:
        /* what config.txt could not give back: a '#' first or after a blank starts a comment */
        for (const char *p = value; *p; p++)
            if (*p == '#' && (p == value || isspace((unsigned char)p[-1])))
                return hcl_err(err, "%s%s: '%.*s': a '#' at the start or after a blank would be a comment "
                               "in config.txt", where, o->name, VALUE_SHOWN, value);
        break;
    }
    size_t len = strlen(value);
    if (len >= o->size)
        return hcl_err(err, "%s%s: value too long (%zu characters, at most %zu)", where, o->name,
                       len, o->size - 1);
    memcpy(dst, value, len + 1);
    return 0;
}

void opts_defaults(const hcl_optset *s) {
    char err[HCL_ERR_MAX];
    for (int i = 0; i < s->n; i++)
        HCL_CHECK(opts_set(s, &s->opt[i], s->opt[i].def, "--", err) == 0, "bad default: %s", err);
}

static const hcl_opt *find_n(const hcl_optset *s, const char *name, size_t len) {
    for (int i = 0; i < s->n; i++)
        if (strlen(s->opt[i].name) == len && strncmp(s->opt[i].name, name, len) == 0)
            return &s->opt[i];
    return NULL;
}

const hcl_opt *opts_find(const hcl_optset *s, const char *name) {
    return find_n(s, name, strlen(name));
}

/* ---- the command line ----------------------------------------------------------------------- */

/* A repeatable option given again: its value joins the one before with a blank. */
static int parse_repeat(const hcl_optset *s, const hcl_opt *o, int argc, char **argv, int *i, const char *eq,
                        char *err) {
    if (!eq && *i + 1 >= argc) return hcl_err(err, "--%s needs a value", o->name);
    const char *value = eq ? eq + 1 : argv[++*i];
    const char *old = (const char *)dst_of(s, o);
    char joined[4096];
    if ((size_t)snprintf(joined, sizeof joined, "%s %s", old, value) >= sizeof joined)
        return hcl_err(err, "--%s: values too long together", o->name);
    return opts_set(s, o, joined, "--", err);
}

/* argv[*i] is `--name` or `--name=value`: set it, consuming argv[*i + 1] as its value if needed. */
static int parse_flag(const hcl_optset *s, int argc, char **argv, int *i, char *err) {
    const char *a = argv[*i];
    const char *eq = strchr(a + 2, '=');
    size_t nl = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
    const hcl_opt *o = find_n(s, a + 2, nl);
    if (!o) return hcl_err(err, "unknown flag '%.*s' (see --help)", (int)(nl < 64 ? nl + 2 : 66), a);
    if ((o->flags & HCL_OPT_REPEAT) && s->given && s->given[o - s->opt]) return parse_repeat(s, o, argc, argv, i, eq, err);
    if (s->given) s->given[o - s->opt] = 1;
    if (o->type == HCL_OPT_FLAG) {
        if (eq) return hcl_err(err, "--%s takes no value", o->name);
        return opts_set(s, o, "1", "--", err);
    }
    if (eq) return opts_set(s, o, eq + 1, "--", err);
    if (*i + 1 >= argc) {
        char want[256];
        opts_describe(o, want, sizeof want);
        return hcl_err(err, "--%s needs a value (%s)", o->name, want);
    }
    *i += 1;
    return opts_set(s, o, argv[*i], "--", err);
}

int opts_parse_argv(const hcl_optset *s, int argc, char **argv, const char **pos, int maxpos,
                    int *npos, char *err) {
    *npos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return 1;
        if (a[0] == '-' && a[1] == '-' && a[2]) {
            if (parse_flag(s, argc, argv, &i, err) != 0) return -1;
        } else if (a[0] == '-' && a[1] && a[1] != '-') {
            return hcl_err(err, "unknown flag '%.*s' (see --help)", VALUE_SHOWN, a);
        } else {
            if (*npos == maxpos)
                return hcl_err(err, "unexpected argument '%.*s' (see --help)", VALUE_SHOWN, a);
            pos[(*npos)++] = a;
        }
    }
    return 0;
}

int opts_parse_tool(const hcl_optset *s, int argc, char **argv, void (*usage)(FILE *), char *err) {
    int npos;
    opts_defaults(s);
    int rc = opts_parse_argv(s, argc - 1, argv + 1, NULL, 0, &npos, err);
    if (rc == 1) {
        usage(stdout);
        exit(0);
    }
    return rc;
}

/* ---- config files --------------------------------------------------------------------------- */

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

/* One line of a config file (comment and newline included); 0 or -1 with err. A comment starts
 * with a '#' at the start of the line, after a blank or right after the '=': one inside a value
 * (a run directory /x/run#1, as opts_to_text writes it) stays in the value (opts_set refuses
 * the values a comment would cut). */
static int file_line(const hcl_optset *s, char *line, const char *path, int lineno, char *err) {
    for (char *p = line; *p; p++)
        if (*p == '#' && (p == line || isspace((unsigned char)p[-1]) || p[-1] == '=')) {
            *p = 0;
            break;
        }
    char *t = trim(line);
    if (!*t) return 0;
    char *eq = strchr(t, '=');
    if (!eq) return hcl_err(err, "%s:%d: expected `key = value`, got '%.*s'", path, lineno, VALUE_SHOWN, t);
    *eq = 0;
    char *key = trim(t), *value = trim(eq + 1);
    const hcl_opt *o = opts_find(s, key);
    if (!o || (o->flags & HCL_OPT_NOT_IN_FILE))
        return hcl_err(err, "%s:%d: unknown key '%.*s'", path, lineno, VALUE_SHOWN, key);
    char where[HCL_ERR_MAX];
    snprintf(where, sizeof where, "%s:%d: ", path, lineno);
    return opts_set(s, o, value, where, err);
}

int opts_parse_file(const hcl_optset *s, const char *path, char *err) {
    FILE *f = fopen(path, "r");
    if (!f) return hcl_err(err, "%s: cannot open config file: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        return hcl_err(err, "%s: is a directory, not a config file", path);
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rc = 0;
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (strlen(line) != (size_t)len)
            rc = hcl_err(err, "%s:%d: a NUL byte in the line (not a text file?)", path, lineno);
        else
            rc = file_line(s, line, path, lineno, err);
    }
    if (rc == 0 && ferror(f)) rc = hcl_err(err, "%s: cannot read config file: %s", path, strerror(errno));
    free(line);
    fclose(f);
    return rc;
}

/* ---- --help and the snapshot ---------------------------------------------------------------- */

static void help_head(const hcl_opt *o, char *buf, size_t len) {
    const char *arg = "";
    switch (o->type) {
    case HCL_OPT_INT: arg = o->meta ? o->meta : "N"; break;
    case HCL_OPT_FLOAT: arg = o->meta ? o->meta : "X"; break;
    case HCL_OPT_BOOL: arg = "0|1"; break;
    case HCL_OPT_FLAG: arg = ""; break;
    case HCL_OPT_ENUM: arg = o->words; break;
    case HCL_OPT_INTS: arg = o->meta ? o->meta : "N,N,..."; break;
    case HCL_OPT_NAMES: arg = o->meta ? o->meta : "A,B,..."; break;
    case HCL_OPT_STR: arg = o->meta ? o->meta : "S"; break;
    case HCL_OPT_PATH: arg = o->meta ? o->meta : "PATH"; break;
    }
    snprintf(buf, len, "--%s%s%s", o->name, *arg ? " " : "", arg);
}

void opts_help(FILE *fp, const hcl_optset *s) {
    for (int i = 0; i < s->n; i++) {
        const hcl_opt *o = &s->opt[i];
        char head[128], want[256] = "";
        help_head(o, head, sizeof head);
        if (o->type != HCL_OPT_STR && o->type != HCL_OPT_PATH && o->type != HCL_OPT_FLAG &&
            o->type != HCL_OPT_ENUM && o->type != HCL_OPT_BOOL)
            opts_describe(o, want, sizeof want);
        /* a long head gets a line of its own, so the help texts stay in one column */
        fprintf(fp, "  %-24s%s%s%s%s%s%s", head, strlen(head) > 24 ? "\n                           " : " ",
                o->only ? o->only : "", o->only ? ": " : "", o->help, *want ? "; " : "", want);
        if (o->type != HCL_OPT_FLAG) fprintf(fp, " [%s]", o->def);
        fputc('\n', fp);
    }
    fprintf(fp, "  %-24s print this help\n", "--help");
}

size_t opts_to_text(const hcl_optset *s, char *buf, size_t len) {
    size_t n = 0;
    for (int i = 0; i < s->n; i++) {
        const hcl_opt *o = &s->opt[i];
        if (o->flags & HCL_OPT_NOT_IN_FILE) continue;
        const void *v = dst_of(s, o);
        char num[64];
        const char *val = num;
        switch (o->type) {
        case HCL_OPT_INT:
        case HCL_OPT_BOOL:
        case HCL_OPT_FLAG: snprintf(num, sizeof num, "%lld", (long long)*(const int64_t *)v); break;
        case HCL_OPT_FLOAT: snprintf(num, sizeof num, "%.17g", *(const double *)v); break;
        default: val = v; break;
        }
        int w = snprintf(n < len ? buf + n : NULL, n < len ? len - n : 0, "%s = %s\n", o->name, val);
        if (w > 0) n += (size_t)w;
    }
    return n;
}
