/* safetensors: see safetensors.h. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

/* ---- a small JSON reader for the header: objects, arrays, strings, integers ---------------- */

typedef struct {
    const char *p, *end;
    const char *path;
    char *err;
} jr;

static void ws(jr *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\t' || *j->p == '\r')) j->p++;
}

static int expect(jr *j, char c) {
    ws(j);
    if (j->p >= j->end || *j->p != c)
        return hcl_err(j->err, "%s: header JSON: expected '%c' at byte %ld", j->path, c,
                       (long)(j->p - (j->end - (j->end - j->p))));
    j->p++;
    return 0;
}

static int jstring(jr *j, char *out, size_t len) {
    if (expect(j, '"')) return -1;
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
        else return hcl_err(j->err, "%s: header JSON: string longer than %zu bytes", j->path, len - 1);
    }
    if (j->p >= j->end) return hcl_err(j->err, "%s: header JSON: unterminated string", j->path);
    j->p++;
    out[n] = 0;
    return 0;
}

static int juint(jr *j, uint64_t *v) {
    ws(j);
    if (j->p >= j->end || *j->p < '0' || *j->p > '9')
        return hcl_err(j->err, "%s: header JSON: expected a non-negative integer", j->path);
    uint64_t x = 0;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        if (x > (UINT64_MAX - 9) / 10) return hcl_err(j->err, "%s: header JSON: integer overflow", j->path);
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
    if (depth > 32) return hcl_err(j->err, "%s: header JSON nested too deep", j->path);
    ws(j);
    if (j->p >= j->end) return hcl_err(j->err, "%s: header JSON: unexpected end", j->path);
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

static int parse_tensor(jr *j, st_tensor *t) {
    int have_dtype = 0, have_shape = 0, have_off = 0;
    if (expect(j, '{')) return -1;
    for (;;) {
        char key[64];
        if (jstring(j, key, sizeof key) || expect(j, ':')) return -1;
        if (strcmp(key, "dtype") == 0) {
            if (jstring(j, t->dtype, sizeof t->dtype)) return -1;
            have_dtype = 1;
        } else if (strcmp(key, "shape") == 0) {
            if (expect(j, '[')) return -1;
            t->ndim = 0;
            if (peek(j, ']')) j->p++;
            else for (;;) {
                uint64_t v;
                if (juint(j, &v)) return -1;
                if (t->ndim == ST_MAX_DIMS)
                    return hcl_err(j->err, "%s: tensor '%s' has more than %d dims", j->path, t->name, ST_MAX_DIMS);
                t->shape[t->ndim++] = (int64_t)v;
                if (peek(j, ',')) { j->p++; continue; }
                if (expect(j, ']')) return -1;
                break;
            }
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
        return hcl_err(j->err, "%s: tensor '%s' lacks dtype, shape or data_offsets", j->path, t->name);
    return 0;
}

static int dtype_size(const char *d) {
    if (!strcmp(d, "F32") || !strcmp(d, "I32")) return 4;
    if (!strcmp(d, "F64") || !strcmp(d, "I64")) return 8;
    if (!strcmp(d, "U8") || !strcmp(d, "I8") || !strcmp(d, "BOOL")) return 1;
    if (!strcmp(d, "F16") || !strcmp(d, "BF16") || !strcmp(d, "I16")) return 2;
    return 0;
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
    uint64_t data_len = f->map_len - 8 - hlen;
    jr j = {(const char *)b + 8, (const char *)b + 8 + hlen, path, err};
    int cap = 16;
    f->tensors = hcl_calloc((size_t)cap, sizeof(st_tensor));
    if (expect(&j, '{')) goto fail;
    if (!peek(&j, '}')) for (;;) {
        char name[ST_NAME_MAX];
        if (jstring(&j, name, sizeof name) || expect(&j, ':')) goto fail;
        if (strcmp(name, "__metadata__") == 0) {
            const char *start = j.p;
            if (jskip(&j, 1)) goto fail;
            size_t n = (size_t)(j.p - start);
            f->metadata = hcl_malloc(n + 1);
            memcpy(f->metadata, start, n);
            f->metadata[n] = 0;
        } else {
            if (f->ntensors == cap) {
                cap *= 2;
                f->tensors = realloc(f->tensors, sizeof(st_tensor) * (size_t)cap);
                HCL_CHECK(f->tensors, "out of memory");
            }
            st_tensor *t = &f->tensors[f->ntensors++];
            memset(t, 0, sizeof *t);
            snprintf(t->name, sizeof t->name, "%s", name);
            if (parse_tensor(&j, t)) goto fail;
            int es = dtype_size(t->dtype);
            if (!es) { hcl_err(err, "%s: tensor '%s' has unsupported dtype '%s'", path, name, t->dtype); goto fail; }
            uint64_t numel = 1;
            for (int d = 0; d < t->ndim; d++) numel *= (uint64_t)t->shape[d];
            if (t->end < t->begin || t->end > data_len || t->end - t->begin != numel * (uint64_t)es) {
                hcl_err(err, "%s: tensor '%s': data_offsets [%llu, %llu] do not hold %llu x %d bytes "
                        "inside the %llu data bytes (truncated or damaged)", path, name,
                        (unsigned long long)t->begin, (unsigned long long)t->end,
                        (unsigned long long)numel, es, (unsigned long long)data_len);
                goto fail;
            }
        }
        if (peek(&j, ',')) { j.p++; continue; }
        if (expect(&j, '}')) goto fail;
        break;
    }
    return 0;
fail:
    st_close(f);
    return -1;
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
    jr j = {f->metadata, f->metadata + strlen(f->metadata), f->path, NULL};
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

static void json_escape(char **p, size_t *left, const char *s) {
    for (; *s; s++) {
        char buf[8];
        const char *w = buf;
        if (*s == '"' || *s == '\\') snprintf(buf, sizeof buf, "\\%c", *s);
        else if ((unsigned char)*s < 0x20) snprintf(buf, sizeof buf, "\\u%04x", (unsigned char)*s);
        else { buf[0] = *s; buf[1] = 0; }
        size_t n = strlen(w);
        if (n < *left) { memcpy(*p, w, n); *p += n; *left -= n; }
    }
}

static int write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { if (w == 0) errno = ENOSPC; return -1; }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int st_write(const char *path, const st_entry *entries, int n, const char *const *metadata, char *err) {
    size_t cap = 256 + (size_t)n * (ST_NAME_MAX + 128);
    if (metadata) for (int i = 0; metadata[i]; i++) cap += 2 * strlen(metadata[i]) + 16;
    char *hdr = hcl_malloc(cap), *p = hdr;
    size_t left = cap;
#define PUT(...) do { int _w = snprintf(p, left, __VA_ARGS__); if (_w > 0 && (size_t)_w < left) { p += _w; left -= (size_t)_w; } } while (0)
    PUT("{");
    if (metadata && metadata[0]) {
        PUT("\"__metadata__\":{");
        for (int i = 0; metadata[i] && metadata[i + 1]; i += 2) {
            PUT("%s\"", i ? "," : "");
            json_escape(&p, &left, metadata[i]);
            PUT("\":\"");
            json_escape(&p, &left, metadata[i + 1]);
            PUT("\"");
        }
        PUT("}");
        if (n) PUT(",");
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        uint64_t numel = 1;
        PUT("%s\"", i ? "," : "");
        json_escape(&p, &left, entries[i].name);
        PUT("\":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < entries[i].ndim; d++) {
            PUT("%s%lld", d ? "," : "", (long long)entries[i].shape[d]);
            numel *= (uint64_t)entries[i].shape[d];
        }
        PUT("],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off, (unsigned long long)(off + 4 * numel));
        off += 4 * numel;
    }
    PUT("}");
#undef PUT
    /* pad the header with spaces to a multiple of 8, as the reference writer does */
    size_t hlen = (size_t)(p - hdr);
    while (hlen % 8 && left > 1) { *p++ = ' '; hlen++; left--; }
    uint8_t lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (uint8_t)((uint64_t)hlen >> (8 * i));

    char tmp[4096], dir[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        free(hdr);
        return hcl_err(err, "%s: create: %s", tmp, strerror(errno));
    }
    int rc = write_all(fd, lenbuf, 8) || write_all(fd, hdr, hlen);
    for (int i = 0; !rc && i < n; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < entries[i].ndim; d++) numel *= (uint64_t)entries[i].shape[d];
        rc = write_all(fd, entries[i].data, 4 * numel);
    }
    free(hdr);
    if (rc) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return hcl_err(err, "%s: write: %s", tmp, strerror(e));
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return hcl_err(err, "%s: fsync: %s", tmp, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return hcl_err(err, "%s: rename into place: %s", path, strerror(e));
    }
    snprintf(dir, sizeof dir, "%s", path);
    return hcl_fsync_dir(dirname(dir), err);
}
