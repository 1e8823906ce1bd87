/* npy: see npy.h. The header is a Python dict literal, e.g.
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (2048, 64), }
 * parsed by a small tokenizer below; anything it does not understand is refused. */
#include "npy.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

/* ---- dtype table ------------------------------------------------------------------------- */

typedef struct {
    enum npy_dtype dtype;
    char kind;             /* numpy kind letter: f, u, i, b */
    int size;
    const char *name;
} npy_dtype_info;

static const npy_dtype_info npy_dtypes[] = {
    {NPY_F32, 'f', 4, "float32"}, {NPY_F64, 'f', 8, "float64"}, {NPY_U8, 'u', 1, "uint8"},
    {NPY_I8, 'i', 1, "int8"},     {NPY_I16, 'i', 2, "int16"},   {NPY_I32, 'i', 4, "int32"},
    {NPY_I64, 'i', 8, "int64"},   {NPY_U16, 'u', 2, "uint16"},  {NPY_U32, 'u', 4, "uint32"},
    {NPY_U64, 'u', 8, "uint64"},  {NPY_BOOL, 'b', 1, "bool"},    {NPY_F16, 'f', 2, "float16"},
};
#define NPY_NDTYPES ((int)(sizeof npy_dtypes / sizeof npy_dtypes[0]))

static const npy_dtype_info *npy_dtype_find(enum npy_dtype t) {
    for (int i = 0; i < NPY_NDTYPES; i++)
        if (npy_dtypes[i].dtype == t) return &npy_dtypes[i];
    return NULL;
}

const char *npy_dtype_name(enum npy_dtype t) {
    const npy_dtype_info *d = npy_dtype_find(t);
    return d ? d->name : "unknown";
}

/* A readable name for a descr we refuse, e.g. "float16", "complex64", "unicode string". */
static void npy_descr_describe(const char *descr, char *out, size_t cap) {
    char kind = descr[0] ? descr[1] : 0;
    long size = descr[0] && descr[1] ? strtol(descr + 2, NULL, 10) : 0;
    const char *base = NULL;
    switch (kind) {
    case 'f': base = "float"; break;
    case 'c': base = "complex"; break;
    case 'i': base = "int"; break;
    case 'u': base = "uint"; break;
    case 'U': snprintf(out, cap, "unicode string"); return;
    case 'S': case 'a': snprintf(out, cap, "byte string"); return;
    case 'O': snprintf(out, cap, "Python object"); return;
    case 'V': snprintf(out, cap, "void/structured"); return;
    case 'M': snprintf(out, cap, "datetime64"); return;
    case 'm': snprintf(out, cap, "timedelta64"); return;
    default: snprintf(out, cap, "unknown kind"); return;
    }
    if (size < 1 || size > 64)   /* no such type; and size * 8 may not fit a long */
        snprintf(out, cap, "%s of %ld-byte items", base, size);
    else
        snprintf(out, cap, "%s%ld", base, size * 8);
}

/* ---- header parsing ---------------------------------------------------------------------- */

typedef struct {
    const char *p, *end;
} npy_lexer;

static void npy_skip_space(npy_lexer *lx) {
    while (lx->p < lx->end && isspace((unsigned char)*lx->p)) lx->p++;
}

static int npy_accept(npy_lexer *lx, char c) {
    npy_skip_space(lx);
    if (lx->p < lx->end && *lx->p == c) { lx->p++; return 1; }
    return 0;
}

/* A quoted Python string ('...' or "...") without escapes. */
static int npy_lex_string(npy_lexer *lx, char *out, size_t cap) {
    npy_skip_space(lx);
    if (lx->p >= lx->end || (*lx->p != '\'' && *lx->p != '"')) return -1;
    char q = *lx->p++;
    size_t n = 0;
    while (lx->p < lx->end && *lx->p != q) {
        if (*lx->p == '\\' || n + 1 >= cap) return -1;
        out[n++] = *lx->p++;
    }
    if (lx->p >= lx->end) return -1;
    lx->p++;
    out[n] = 0;
    return 0;
}

static int npy_lex_word(npy_lexer *lx, char *out, size_t cap) {
    npy_skip_space(lx);
    size_t n = 0;
    while (lx->p < lx->end && (isalnum((unsigned char)*lx->p) || *lx->p == '_')) {
        if (n + 1 >= cap) return -1;
        out[n++] = *lx->p++;
    }
    out[n] = 0;
    return n ? 0 : -1;
}

typedef struct {
    char descr[32];
    int fortran;
    int ndim;
    int64_t shape[8];
    int have_descr, have_fortran, have_shape;
} npy_header;

#define NPY_BAD(...) do { snprintf(why, cap, __VA_ARGS__); return -1; } while (0)

/* Parse the dict. Returns 0, or -1 with a reason in why. */
static int npy_parse_header(const char *s, size_t len, npy_header *h, char *why, size_t cap) {
    npy_lexer lx = {s, s + len};
    memset(h, 0, sizeof *h);
    if (!npy_accept(&lx, '{')) NPY_BAD("header is not a dict");
    for (;;) {
        if (npy_accept(&lx, '}')) break;
        char key[32];
        if (npy_lex_string(&lx, key, sizeof key) != 0 || !npy_accept(&lx, ':'))
            NPY_BAD("malformed header dict");
        if (strcmp(key, "descr") == 0) {
            if (npy_lex_string(&lx, h->descr, sizeof h->descr) != 0)
                NPY_BAD("unsupported dtype (descr is not a simple type string)");
            h->have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            char w[16];
            if (npy_lex_word(&lx, w, sizeof w) != 0 || (strcmp(w, "True") && strcmp(w, "False")))
                NPY_BAD("fortran_order is not True or False");
            h->fortran = strcmp(w, "True") == 0;
            h->have_fortran = 1;
        } else if (strcmp(key, "shape") == 0) {
            if (!npy_accept(&lx, '(')) NPY_BAD("shape is not a tuple");
            h->ndim = 0;
            while (!npy_accept(&lx, ')')) {
                npy_skip_space(&lx);
                char num[32];
                int neg = npy_accept(&lx, '-');
                if (npy_lex_word(&lx, num, sizeof num) != 0) NPY_BAD("malformed shape tuple");
                char *e;
                errno = 0;
                long long v = strtoll(num, &e, 10);
                if (*e == 'L') e++;   /* Python 2 long suffix */
                if (*e || errno) NPY_BAD("malformed shape value '%s'", num);
                if (neg) NPY_BAD("negative shape value -%s", num);
                if (h->ndim >= 8) NPY_BAD("shape has more than 8 dimensions");
                h->shape[h->ndim++] = v;
                if (!npy_accept(&lx, ',')) {
                    if (!npy_accept(&lx, ')')) NPY_BAD("malformed shape tuple");
                    break;
                }
            }
            h->have_shape = 1;
        } else {
            NPY_BAD("unknown header key '%s'", key);
        }
        if (!npy_accept(&lx, ',')) {
            if (!npy_accept(&lx, '}')) NPY_BAD("malformed header dict");
            break;
        }
    }
    npy_skip_space(&lx);
    if (lx.p != lx.end) NPY_BAD("trailing bytes after the header dict");
    if (!h->have_descr || !h->have_fortran || !h->have_shape)
        NPY_BAD("header lacks '%s'",
                !h->have_descr ? "descr" : !h->have_fortran ? "fortran_order" : "shape");
    return 0;
}

#undef NPY_BAD

static void npy_shape_str(const int64_t *shape, int ndim, char *out, size_t cap) {
    size_t n = (size_t)snprintf(out, cap, "(");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (n < cap) snprintf(out + n, cap - n, ndim == 1 ? ",)" : ")");
}

/* ---- open / close ------------------------------------------------------------------------ */

static const uint8_t npy_magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

/* Report "PATH: message" and unmap. */
static int npy_fail(npy_file *f, char *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int npy_fail(npy_file *f, char *err, const char *fmt, ...) {
    char msg[HCL_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    hcl_err(err, "%s: %s", f->path, msg);
    npy_close(f);
    return -1;
}

int npy_open(npy_file *f, const char *path, char *err) {
    memset(f, 0, sizeof *f);
    if (snprintf(f->path, sizeof f->path, "%s", path) >= (int)sizeof f->path)
        return hcl_err(err, "%s: path too long", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return hcl_err(err, "%s: open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return hcl_err(err, "%s: stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return hcl_err(err, "%s: not a regular file", path);
    }
    if (st.st_size < 10) {
        close(fd);
        return hcl_err(err, "%s: file is %lld bytes, too short for a .npy header (bad magic)",
                       path, (long long)st.st_size);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) return hcl_err(err, "%s: mmap: %s", path, strerror(e));
    f->map = map;
    f->map_len = (size_t)st.st_size;

    const uint8_t *b = map;
    if (memcmp(b, npy_magic, 6) != 0) {
        char got[32];
        snprintf(got, sizeof got, "%02x %02x %02x %02x %02x %02x", b[0], b[1], b[2], b[3], b[4],
                 b[5]);
        return npy_fail(f, err, "bad magic %s: not a .npy file", got);
    }
    int major = b[6], minor = b[7];
    size_t hlen, hstart;
    if (major == 1) {
        hlen = (size_t)b[8] | (size_t)b[9] << 8;
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (f->map_len < 12) return npy_fail(f, err, "truncated .npy header");
        hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
        hstart = 12;
    } else {
        return npy_fail(f, err, "unsupported .npy format version %d.%d (want 1.0, 2.0 or 3.0)",
                        major, minor);
    }
    if (hlen > f->map_len - hstart)
        return npy_fail(f, err, "truncated: header length %zu exceeds the file size %zu", hlen,
                        f->map_len);
    npy_header h;
    char why[128];
    if (npy_parse_header((const char *)b + hstart, hlen, &h, why, sizeof why) != 0)
        return npy_fail(f, err, "bad .npy header: %s", why);

    /* dtype: byte order first, then kind and size */
    const char *d = h.descr;
    const npy_dtype_info *info = NULL;
    if (strlen(d) >= 3 && strchr("<>|=", d[0])) {
        char *end;
        long size = strtol(d + 2, &end, 10);
        for (int i = 0; i < NPY_NDTYPES && *end == 0; i++)
            if (npy_dtypes[i].kind == d[1] && npy_dtypes[i].size == size) info = &npy_dtypes[i];
    }
    if (!info) {
        char what[64];
        npy_descr_describe(d, what, sizeof what);
        return npy_fail(f, err, "unsupported dtype '%s' (%s); want float32/64, int8..64, "
                        "uint8..64 or bool", d, what);
    }
    if (d[0] == '>' && info->size > 1)
        return npy_fail(f, err, "big-endian dtype '%s' not supported; save it little-endian "
                        "(a.astype('<%s'))", d, d + 1);
    if (d[0] == '=' && info->size > 1 && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__)
        return npy_fail(f, err, "native-order dtype '%s' on a big-endian host", d);
    if (h.fortran)
        return npy_fail(f, err, "fortran_order True not supported; save a C-order array "
                        "(np.ascontiguousarray)");
    char shp[160];
    npy_shape_str(h.shape, h.ndim, shp, sizeof shp);
    if (h.ndim > 2) return npy_fail(f, err, "shape %s has more than 2 dimensions", shp);

    f->dtype = info->dtype;
    f->elem_size = info->size;
    f->ndim = h.ndim;
    f->shape[0] = f->shape[1] = 1;
    int64_t count = 1, nbytes;
    for (int i = 0; i < h.ndim; i++) {
        f->shape[i] = h.shape[i];
        if (__builtin_mul_overflow(count, h.shape[i], &count))
            return npy_fail(f, err, "shape %s is too large", shp);
    }
    if (__builtin_mul_overflow(count, (int64_t)info->size, &nbytes))
        return npy_fail(f, err, "shape %s is too large", shp);
    f->count = count;
    size_t off = hstart + hlen;
    uint64_t have = f->map_len - off;
    if ((uint64_t)nbytes > have)
        return npy_fail(f, err, "truncated: header shape %s %s needs %lld data bytes but the file "
                        "has %llu", shp, info->name, (long long)nbytes, (unsigned long long)have);
    if ((uint64_t)nbytes < have)
        return npy_fail(f, err, "header lies about the size: shape %s %s is %lld data bytes but "
                        "the file has %llu", shp, info->name, (long long)nbytes,
                        (unsigned long long)have);
    if (off % (size_t)info->size != 0)
        return npy_fail(f, err, "data offset %zu is not aligned to the %s element size", off,
                        info->name);
    f->data = b + off;
    return 0;
}

void npy_close(npy_file *f) {
    if (f->map) munmap(f->map, f->map_len);
    f->map = NULL;
    f->map_len = 0;
    f->data = NULL;
}

/* ---- element access ---------------------------------------------------------------------- */

#define NPY_LOAD(T) do { T v; memcpy(&v, p, sizeof v); return v; } while (0)

double npy_get_f64(const npy_file *f, int64_t i) {
    HCL_CHECK(i >= 0 && i < f->count, "%s: element %lld out of range", f->path, (long long)i);
    const uint8_t *p = (const uint8_t *)f->data + i * f->elem_size;
    switch (f->dtype) {
    case NPY_F16: { uint16_t h; memcpy(&h, p, sizeof h); return npy_half_float(h); }
    case NPY_F32: NPY_LOAD(float);
    case NPY_F64: NPY_LOAD(double);
    case NPY_U8: case NPY_BOOL: return *p;
    case NPY_I8: return (int8_t)*p;
    case NPY_I16: NPY_LOAD(int16_t);
    case NPY_I32: NPY_LOAD(int32_t);
    case NPY_I64: NPY_LOAD(int64_t);
    case NPY_U16: NPY_LOAD(uint16_t);
    case NPY_U32: NPY_LOAD(uint32_t);
    case NPY_U64: { uint64_t v; memcpy(&v, p, sizeof v); return (double)v; }
    }
    return 0;
}

/* x truncated toward zero, clamped to int64's range (casting a double outside it is undefined);
 * NaN: INT64_MIN. 2^63 is exact as a double; every double below it converts. */
static int64_t npy_f64_to_i64(double x) {
    if (x != x || x < -9223372036854775808.0) return INT64_MIN;
    if (x >= 9223372036854775808.0) return INT64_MAX;
    return (int64_t)x;
}

int64_t npy_get_i64(const npy_file *f, int64_t i) {
    HCL_CHECK(i >= 0 && i < f->count, "%s: element %lld out of range", f->path, (long long)i);
    const uint8_t *p = (const uint8_t *)f->data + i * f->elem_size;
    switch (f->dtype) {
    case NPY_F16: { uint16_t h; memcpy(&h, p, sizeof h); return npy_f64_to_i64(npy_half_float(h)); }
    case NPY_F32: { float v; memcpy(&v, p, sizeof v); return npy_f64_to_i64(v); }
    case NPY_F64: { double v; memcpy(&v, p, sizeof v); return npy_f64_to_i64(v); }
    case NPY_U8: case NPY_BOOL: return *p;
    case NPY_I8: return (int8_t)*p;
    case NPY_I16: NPY_LOAD(int16_t);
    case NPY_I32: NPY_LOAD(int32_t);
    case NPY_I64: NPY_LOAD(int64_t);
    case NPY_U16: NPY_LOAD(uint16_t);
    case NPY_U32: NPY_LOAD(uint32_t);
    case NPY_U64: {
        uint64_t v;
        memcpy(&v, p, sizeof v);
        return v > INT64_MAX ? INT64_MAX : (int64_t)v;
    }
    }
    return 0;
}

/* ---- write ------------------------------------------------------------------------------- */

int npy_write(const char *path, enum npy_dtype dtype, int ndim, const int64_t *shape,
              const void *data, char *err) {
    const npy_dtype_info *info = npy_dtype_find(dtype);
    HCL_CHECK(info, "npy_write: bad dtype %d", (int)dtype);
    HCL_CHECK(ndim == 1 || ndim == 2, "npy_write: ndim %d (want 1 or 2)", ndim);
    int64_t count = 1;
    for (int i = 0; i < ndim; i++) {
        HCL_CHECK(shape[i] >= 0, "npy_write: negative shape");
        count *= shape[i];
    }
    char descr[8], shp[96], dict[256];
    snprintf(descr, sizeof descr, "%c%c%d", info->size == 1 ? '|' : '<', info->kind, info->size);
    npy_shape_str(shape, ndim, shp, sizeof shp);
    int dl = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                      descr, shp);
    /* magic(6) + version(2) + len(2) + dict + spaces + '\n' is a multiple of 64 */
    size_t hstart = 10;
    size_t total = (hstart + (size_t)dl + 1 + 63) & ~(size_t)63;
    size_t nbytes = (size_t)count * (size_t)info->size;
    uint8_t head[10 + sizeof dict + 64];
    memcpy(head, npy_magic, 6);
    head[6] = 1;
    head[7] = 0;
    size_t hlen = total - hstart;
    head[8] = (uint8_t)(hlen & 0xff);
    head[9] = (uint8_t)(hlen >> 8);
    memcpy(head + hstart, dict, (size_t)dl);
    memset(head + hstart + dl, ' ', total - hstart - (size_t)dl - 1);
    head[total - 1] = '\n';
    /* the data goes from the caller's array: no copy of it */
    hcl_durable d;
    if (hcl_durable_open(&d, path, err) || hcl_durable_write(&d, head, total, err) ||
        hcl_durable_write(&d, data, nbytes, err))
        return -1;
    return hcl_durable_commit(&d, err);
}
