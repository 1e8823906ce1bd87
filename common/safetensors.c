/* safetensors: see safetensors.h. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "util.h"

/* ---- a small JSON reader for the header: objects, arrays, strings, integers ---------------- */

/* Every error names the file and the byte offset (from the start of the file) of the problem. */
typedef struct {
    const char *p, *end;
    const char *base;       /* the header's first byte, at file offset `origin` */
    int64_t origin;
    const char *path;
    char *err;
} jr;

static int64_t jr_offset(const jr *j, const char *at) { return j->origin + (int64_t)(at - j->base); }

static int jerr_at(const jr *j, const char *at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int jerr_at(const jr *j, const char *at, const char *fmt, ...) {
    if (!j->err) return -1;
    char msg[HCL_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return hcl_err(j->err, "%s: header at byte %lld: %s", j->path, (long long)jr_offset(j, at), msg);
}

static void ws(jr *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\t' || *j->p == '\r')) j->p++;
}

static int expect(jr *j, char c) {
    ws(j);
    if (j->p >= j->end) return jerr_at(j, j->p, "expected '%c', found the end of the header", c);
    if (*j->p != c) return jerr_at(j, j->p, "expected '%c', found '%c'", c, *j->p);
    j->p++;
    return 0;
}

static int jstring(jr *j, char *out, size_t len) {
    if (expect(j, '"')) return -1;
    const char *start = j->p - 1;
    size_t n = 0;
    while (j->p < j->end && *j->p != '"') {
        char c = *j->p++;
        if (c == '\\') {
            if (j->p >= j->end) break;
            c = *j->p++;
            if (c == 'u') { /* keep \uXXXX escapes verbatim: names hcl writes never need them */
                if (j->end - j->p < 4) break;
                if (n + 6 < len) { out[n++] = '\\'; out[n++] = 'u'; memcpy(out + n, j->p, 4); n += 4; }
                j->p += 4;
                continue;
            }
            c = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c == 'b' ? '\b' : c == 'f' ? '\f' : c;
        }
        if (n + 1 < len) out[n++] = c;
        else return jerr_at(j, start, "string longer than %zu bytes", len - 1);
    }
    if (j->p >= j->end) return jerr_at(j, start, "unterminated string");
    j->p++;
    out[n] = 0;
    return 0;
}

static int juint(jr *j, uint64_t *v) {
    ws(j);
    if (j->p >= j->end || *j->p < '0' || *j->p > '9')
        return jerr_at(j, j->p, "expected a non-negative integer");
    const char *start = j->p;
    uint64_t x = 0;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        if (x > (UINT64_MAX - 9) / 10) return jerr_at(j, start, "integer overflow");
        x = x * 10 + (uint64_t)(*j->p++ - '0');
    }
    *v = x;
    return 0;
}

static int peek(jr *j, char c) {
    ws(j);
    return j->p < j->end && *j->p == c;
}

/* Skip any JSON value (for unknown keys and __metadata__). */
static int jskip(jr *j, int depth) {
    ws(j);
    if (depth > 32) return jerr_at(j, j->p, "nested too deep");
    if (j->p >= j->end) return jerr_at(j, j->p, "unexpected end");
    char c = *j->p;
    if (c == '"') {
        char tmp[4096];
        return jstring(j, tmp, sizeof tmp);
    }
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        j->p++;
        if (peek(j, close)) { j->p++; return 0; }
        for (;;) {
            if (c == '{') {
                char key[4096];
                if (jstring(j, key, sizeof key) || expect(j, ':')) return -1;
            }
            if (jskip(j, depth + 1)) return -1;
            if (peek(j, ',')) { j->p++; continue; }
            return expect(j, close);
        }
    }
    while (j->p < j->end && *j->p != ',' && *j->p != '}' && *j->p != ']') j->p++;
    return 0;
}

/* "shape": [d0, d1, ...]: each dimension an int64. */
static int parse_shape(jr *j, st_tensor *t) {
    if (expect(j, '[')) return -1;
    t->ndim = 0;
    if (peek(j, ']')) { j->p++; return 0; }
    for (;;) {
        ws(j);
        const char *at = j->p;
        uint64_t v;
        if (juint(j, &v)) return -1;
        if (t->ndim == ST_MAX_DIMS)
            return jerr_at(j, at, "tensor '%s' has more than %d dims", t->name, ST_MAX_DIMS);
        if (v > (uint64_t)INT64_MAX)
            return jerr_at(j, at, "tensor '%s': dimension %llu is too large", t->name, (unsigned long long)v);
        t->shape[t->ndim++] = (int64_t)v;
        if (peek(j, ',')) { j->p++; continue; }
        return expect(j, ']');
    }
}

static int parse_tensor(jr *j, st_tensor *t) {
    int have_dtype = 0, have_shape = 0, have_off = 0;
    ws(j);
    const char *at = j->p;
    if (expect(j, '{')) return -1;
    for (;;) {
        char key[64];
        if (jstring(j, key, sizeof key) || expect(j, ':')) return -1;
        if (strcmp(key, "dtype") == 0) {
            if (jstring(j, t->dtype, sizeof t->dtype)) return -1;
            have_dtype = 1;
        } else if (strcmp(key, "shape") == 0) {
            if (parse_shape(j, t)) return -1;
            have_shape = 1;
        } else if (strcmp(key, "data_offsets") == 0) {
            if (expect(j, '[') || juint(j, &t->begin) || expect(j, ',') || juint(j, &t->end) || expect(j, ']'))
                return -1;
            have_off = 1;
        } else if (jskip(j, 1)) {
            return -1;
        }
        if (peek(j, ',')) { j->p++; continue; }
        if (expect(j, '}')) return -1;
        break;
    }
    if (!have_dtype || !have_shape || !have_off)
        return jerr_at(j, at, "tensor '%s' lacks dtype, shape or data_offsets", t->name);
    return 0;
}

static int dtype_size(const char *d) {
    if (!strcmp(d, "F32") || !strcmp(d, "I32")) return 4;
    if (!strcmp(d, "F64") || !strcmp(d, "I64")) return 8;
    if (!strcmp(d, "U8") || !strcmp(d, "I8") || !strcmp(d, "BOOL")) return 1;
    if (!strcmp(d, "F16") || !strcmp(d, "BF16") || !strcmp(d, "I16")) return 2;
    return 0;
}

/* A parsed tensor against the data section: a known dtype, a size that fits 64 bits, and
 * data_offsets that hold exactly its bytes inside the data. at: where its entry starts. */
static int check_tensor(const jr *j, const char *at, const st_tensor *t, uint64_t data_len) {
    int es = dtype_size(t->dtype);
    if (!es) return jerr_at(j, at, "tensor '%s' has unsupported dtype '%s'", t->name, t->dtype);
    uint64_t bytes = (uint64_t)es;
    for (int d = 0; d < t->ndim; d++)
        if (__builtin_mul_overflow(bytes, (uint64_t)t->shape[d], &bytes))
            return jerr_at(j, at, "tensor '%s': its shape holds more than 2^64 bytes", t->name);
    if (t->end < t->begin || t->end > data_len || t->end - t->begin != bytes)
        return jerr_at(j, at, "tensor '%s': data_offsets [%llu, %llu] do not hold %llu bytes (%s) "
                       "inside the %llu data bytes (truncated or damaged)", t->name,
                       (unsigned long long)t->begin, (unsigned long long)t->end,
                       (unsigned long long)bytes, t->dtype, (unsigned long long)data_len);
    return 0;
}

static st_tensor *add_tensor(st_file *f, int *cap) {
    if (f->ntensors == *cap) {
        *cap *= 2;
        st_tensor *t = realloc(f->tensors, sizeof(st_tensor) * (size_t)*cap);
        HCL_CHECK(t, "out of memory");
        f->tensors = t;
    }
    st_tensor *t = &f->tensors[f->ntensors++];
    memset(t, 0, sizeof *t);
    return t;
}

/* The header object: __metadata__ (once) and tensors (each name once). */
static int parse_header(st_file *f, jr *j, uint64_t data_len) {
    int cap = 16;
    f->tensors = hcl_calloc((size_t)cap, sizeof(st_tensor));
    if (expect(j, '{')) return -1;
    if (peek(j, '}')) return 0;
    for (;;) {
        char name[ST_NAME_MAX];
        ws(j);
        const char *at = j->p;
        if (jstring(j, name, sizeof name) || expect(j, ':')) return -1;
        if (strcmp(name, "__metadata__") == 0) {
            if (f->metadata) return jerr_at(j, at, "a second '__metadata__'");
            ws(j);
            const char *start = j->p;
            if (jskip(j, 1)) return -1;
            size_t n = (size_t)(j->p - start);
            f->metadata = hcl_malloc(n + 1);
            memcpy(f->metadata, start, n);
            f->metadata[n] = 0;
        } else {
            if (st_find(f, name)) return jerr_at(j, at, "a second tensor '%s'", name);
            st_tensor *t = add_tensor(f, &cap);
            snprintf(t->name, sizeof t->name, "%s", name);
            if (parse_tensor(j, t) || check_tensor(j, at, t, data_len)) return -1;
        }
        if (peek(j, ',')) { j->p++; continue; }
        if (expect(j, '}')) return -1;
        ws(j);
        if (j->p < j->end) return jerr_at(j, j->p, "text after the header object");
        return 0;
    }
}

int st_open(st_file *f, const char *path, char *err) {
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return hcl_err(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return hcl_err(err, "%s: stat: %s", path, strerror(errno));
    }
    if (st.st_size < 8) {
        close(fd);
        return hcl_err(err, "%s: truncated: %lld bytes, not even the 8-byte header length", path,
                       (long long)st.st_size);
    }
    f->map_len = (size_t)st.st_size;
    f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        return hcl_err(err, "%s: mmap: %s", path, strerror(errno));
    }
    const uint8_t *b = f->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | b[i];
    if (hlen > f->map_len - 8) {
        int rc = hcl_err(err, "%s: header length %llu exceeds the file (%zu bytes): truncated or not safetensors",
                         path, (unsigned long long)hlen, f->map_len);
        st_close(f);
        return rc;
    }
    f->data = b + 8 + hlen;
    jr j = {(const char *)b + 8, (const char *)b + 8 + hlen, (const char *)b + 8, 8, path, err};
    if (parse_header(f, &j, f->map_len - 8 - hlen) != 0) {
        st_close(f);
        return -1;
    }
    return 0;
}

void st_close(st_file *f) {
    if (f->map) munmap(f->map, f->map_len);
    free(f->tensors);
    free(f->metadata);
    memset(f, 0, sizeof *f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    for (int i = 0; i < f->ntensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

int st_metadata_get(const st_file *f, const char *key, char *out, size_t len) {
    if (!f->metadata) return -1;
    jr j = {f->metadata, f->metadata + strlen(f->metadata), f->metadata, 0, f->path, NULL};
    if (expect(&j, '{')) return -1;
    if (peek(&j, '}')) return -1;
    for (;;) {
        char k[256];
        if (jstring(&j, k, sizeof k) || expect(&j, ':')) return -1;
        if (strcmp(k, key) == 0) return jstring(&j, out, len);
        if (jskip(&j, 1)) return -1;
        if (peek(&j, ',')) { j.p++; continue; }
        return -1;
    }
}

/* ---- writer ------------------------------------------------------------------------------- */

static uint64_t entry_numel(const st_entry *e) {
    uint64_t numel = 1;
    for (int d = 0; d < e->ndim; d++) numel *= (uint64_t)e->shape[d];
    return numel;
}

/* The header: {"__metadata__": {...}, name: {"dtype": "F32", "shape": [...], "data_offsets":
 * [begin, end]}, ...}, padded with spaces to a multiple of 8 as the reference writer does. */
static void header_json(hcl_json *j, const st_entry *entries, int n, const char *const *metadata) {
    json_begin_object(j, NULL);
    if (metadata && metadata[0]) {
        json_begin_object(j, "__metadata__");
        for (int i = 0; metadata[i] && metadata[i + 1]; i += 2) json_string(j, metadata[i], metadata[i + 1]);
        json_end_object(j);
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        uint64_t bytes = 4 * entry_numel(&entries[i]);
        json_begin_object(j, entries[i].name);
        json_string(j, "dtype", "F32");
        json_begin_array(j, "shape");
        for (int d = 0; d < entries[i].ndim; d++) json_int(j, NULL, entries[i].shape[d]);
        json_end_array(j);
        json_begin_array(j, "data_offsets");
        json_uint(j, NULL, off);
        json_uint(j, NULL, off + bytes);
        json_end_array(j);
        json_end_object(j);
        off += bytes;
    }
    json_end_object(j);
}

int st_write(const char *path, const st_entry *entries, int n, const char *const *metadata, char *err) {
    hcl_json j;
    json_init(&j);
    header_json(&j, entries, n, metadata);
    size_t hlen = json_len(&j);
    static const char spaces[8] = "        ";
    size_t pad = (8 - hlen % 8) % 8;
    uint8_t lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (uint8_t)((uint64_t)(hlen + pad) >> (8 * i));
    hcl_durable d;
    int rc = hcl_durable_open(&d, path, err) || hcl_durable_write(&d, lenbuf, 8, err) ||
             hcl_durable_write(&d, json_text(&j), hlen, err) || hcl_durable_write(&d, spaces, pad, err);
    json_free(&j);
    for (int i = 0; !rc && i < n; i++)
        rc = hcl_durable_write(&d, entries[i].data, 4 * entry_numel(&entries[i]), err);
    if (rc) return -1;   /* the failed step removed the temp file */
    return hcl_durable_commit(&d, err);
}
