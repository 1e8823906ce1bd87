/* util: see util.h. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "memlimit.h"

void hcl_die(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "hcl: fatal at %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

/* Out of memory is the machine's or a limit's, not a bug: one line and exit 2 (memlimit.h). */
void *hcl_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) memlimit_out_of_memory("an allocation", (double)n);
    return p;
}

void *hcl_calloc(size_t n, size_t sz) {
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) memlimit_out_of_memory("an allocation", (double)n * (double)sz);
    return p;
}

float *hcl_floats(size_t n) {
    size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) memlimit_out_of_memory("a buffer", (double)bytes);
    memset(p, 0, bytes);
    return p;
}

float *hcl_floats_lazy(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) memlimit_out_of_memory("a buffer", (double)n * sizeof(float));
    return p;
}

int hcl_view_name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n >= HCL_NAME_MAX || s[0] == '-') return 0;
    for (; *s; s++)
        if (!(('a' <= *s && *s <= 'z') || ('A' <= *s && *s <= 'Z') || ('0' <= *s && *s <= '9') || *s == '_' ||
              *s == '-'))
            return 0;
    return 1;
}

void hcl_printable(char *out, size_t cap, const char *s) {
    size_t k = 0;
    for (; *s && k + 5 < cap; s++)
        k += (size_t)snprintf(out + k, cap - k, *s >= 0x20 && *s < 0x7f ? "%c" : "\\x%02x", (unsigned char)*s);
    out[k] = 0;
}

/* ---- memory limits --------------------------------------------------------------------------- */

void hcl_format_bytes(char *out, size_t cap, double bytes) {
    static const char *unit[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
    int u = 0;
    while (bytes >= 1000 && u < 6) {
        bytes /= 1000;
        u++;
    }
    snprintf(out, cap, u ? "%.1f %s" : "%.0f %s", bytes, unit[u]);
}

int hcl_err(char *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, HCL_ERR_MAX, fmt, ap);
        va_end(ap);
    }
    return -1;
}

double hcl_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double hcl_wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int hcl_fsync_dir(const char *dir, char *err) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return hcl_err(err, "%s: open directory: %s", dir, strerror(errno));
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return hcl_err(err, "%s: fsync directory: %s", dir, strerror(e));
    }
    close(fd);
    return 0;
}

/* ---- durable files ------------------------------------------------------------------------- */

/* Close and remove the temp file after a failed step; returns -1 with err naming the step. */
static int durable_fail(hcl_durable *d, const char *step, int e, char *err) {
    if (d->fd >= 0) close(d->fd);
    d->fd = -1;
    unlink(d->tmp);
    return hcl_err(err, "%s: %s: %s", d->tmp, step, strerror(e));
}

int hcl_durable_open(hcl_durable *d, const char *path, char *err) {
    d->fd = -1;
    d->tmp[0] = 0;
    if (snprintf(d->path, sizeof d->path, "%s", path) >= (int)sizeof d->path)
        return hcl_err(err, "%s: path too long", path);
    snprintf(d->tmp, sizeof d->tmp, "%s.tmp.%d", path, (int)getpid());
    d->fd = open(d->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (d->fd < 0) return hcl_err(err, "%s: create: %s", d->tmp, strerror(errno));
    return 0;
}

int hcl_durable_write(hcl_durable *d, const void *data, size_t len, char *err) {
    if (d->fd < 0) return -1;
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(d->fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return durable_fail(d, "write", w < 0 ? errno : ENOSPC, err);
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int hcl_durable_commit(hcl_durable *d, char *err) {
    if (d->fd < 0) return -1;
    if (fsync(d->fd) != 0) return durable_fail(d, "fsync", errno, err);
    int fd = d->fd;
    d->fd = -1;
    if (close(fd) != 0) return durable_fail(d, "close", errno, err);
    if (rename(d->tmp, d->path) != 0) {
        int e = errno;
        unlink(d->tmp);
        return hcl_err(err, "%s: rename into place: %s", d->path, strerror(e));
    }
    char dcopy[sizeof d->path];
    memcpy(dcopy, d->path, sizeof dcopy);
    return hcl_fsync_dir(dirname(dcopy), err);
}

int hcl_write_file_durable(const char *path, const void *data, size_t len, char *err) {
    hcl_durable d;
    if (hcl_durable_open(&d, path, err) || hcl_durable_write(&d, data, len, err)) return -1;
    return hcl_durable_commit(&d, err);
}

/* ---- whole files ------------------------------------------------------------------------------ */

char *hcl_read_fd(int fd, const char *name, size_t max, size_t *len, char *err) {
    size_t cap = 4096, n = 0;
    char *buf = hcl_malloc(cap);
    for (;;) {
        if (n + 1 == cap) {   /* room for the NUL kept */
            cap *= 2;
            char *b = realloc(buf, cap);
            HCL_CHECK(b, "out of memory reading %s (%zu bytes)", name, cap);
            buf = b;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            hcl_err(err, "%s: read: %s", name, strerror(e));
            return NULL;
        }
        if (r == 0) break;
        n += (size_t)r;
        if (n > max) {
            free(buf);
            hcl_err(err, "%s: larger than %zu bytes", name, max);
            return NULL;
        }
    }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

char *hcl_read_file(const char *path, size_t max, size_t *len, char *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        hcl_err(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = hcl_read_fd(fd, path, max, len, err);
    close(fd);
    return buf;
}

int hcl_mkdir_p(const char *path, char *err) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return hcl_err(err, "%s: path too long", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return hcl_err(err, "%s: mkdir: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return hcl_err(err, "%s: mkdir: %s", buf, strerror(errno));
    struct stat st;
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
        return hcl_err(err, "%s: not a directory", buf);
    return 0;
}

#if defined(__x86_64__)
/* CRC-32C with the SSE 4.2 crc32 instruction, 8 bytes at a time (about 20x the table loop). */
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *b, size_t n) {
    uint64_t c = crc;
    for (; n >= 8; n -= 8, b += 8) {
        uint64_t v;
        memcpy(&v, b, 8);
        c = __builtin_ia32_crc32di(c, v);
    }
    uint32_t c32 = (uint32_t)c;
    for (; n > 0; n--, b++) c32 = __builtin_ia32_crc32qi(c32, *b);
    return c32;
}
#endif

static uint32_t crc_table[256];
static int crc_hw;
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

uint32_t hcl_crc32c(uint32_t crc, const void *p, size_t n) {
    pthread_once(&crc_once, crc_init);   /* the coordinator's threads may be first at once */
    const uint8_t *b = p;
#if defined(__x86_64__)
    if (crc_hw) return ~crc32c_hw(~crc, b, n);
#endif
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = crc_table[(crc ^ b[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}
