/* fuzz_kit: see fuzz_kit.h. */
#include "fuzz_kit.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

void fuzz_fail(const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "fuzz: property failed: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

/* ---- files ---------------------------------------------------------------------------------- */

#define FUZZ_SLOTS 8

const char *fuzz_file(int slot, const uint8_t *data, size_t len) {
    static int fd[FUZZ_SLOTS];
    static char path[FUZZ_SLOTS][64];
    HCL_CHECK(slot >= 0 && slot < FUZZ_SLOTS, "fuzz_file: slot %d", slot);
    if (!fd[slot]) {
        fd[slot] = memfd_create("hcl-fuzz", MFD_CLOEXEC);
        HCL_CHECK(fd[slot] >= 0, "memfd_create: %s", strerror(errno));
        snprintf(path[slot], sizeof path[slot], "/proc/self/fd/%d", fd[slot]);
    }
    HCL_CHECK(ftruncate(fd[slot], 0) == 0, "ftruncate: %s", strerror(errno));
    for (size_t off = 0; off < len;) {
        ssize_t w = pwrite(fd[slot], data + off, len - off, (off_t)off);
        HCL_CHECK(w > 0, "pwrite: %s", strerror(errno));
        off += (size_t)w;
    }
    return path[slot];
}

static char fuzz_root[256];

/* Remove dir's contents (files and directories below it), not dir itself. */
static void empty_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            empty_dir(p);
            rmdir(p);
        } else {
            unlink(p);
        }
    }
    closedir(d);
}

static void remove_root(void) {
    if (!fuzz_root[0]) return;
    empty_dir(fuzz_root);
    rmdir(fuzz_root);
}

const char *fuzz_dir(void) {
    if (!fuzz_root[0]) {
        struct stat st;
        const char *base = getenv("TMPDIR");
        if (!base || !*base) base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
        snprintf(fuzz_root, sizeof fuzz_root, "%s/hcl-fuzz-XXXXXX", base);
        HCL_CHECK(mkdtemp(fuzz_root), "mkdtemp %s: %s", fuzz_root, strerror(errno));
        atexit(remove_root);
    }
    empty_dir(fuzz_root);
    return fuzz_root;
}

/* ---- the archive ---------------------------------------------------------------------------- */

static int name_ok(const uint8_t *s, size_t n) {
    if (n == 0 || n > 64 || s[0] == '.') return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-' || s[i] == '.'))
            return 0;
    return 1;
}

/* Where the next header starts at or after p: a "--- " at the input's start or after '\n'. */
static const uint8_t *next_header(const uint8_t *start, const uint8_t *p, const uint8_t *end) {
    const size_t k = sizeof FUZZ_ARCHIVE_SEP - 1;
    for (; p + k <= end; p++)
        if ((p == start || p[-1] == '\n') && memcmp(p, FUZZ_ARCHIVE_SEP, k) == 0) return p;
    return end;
}

int fuzz_unpack(const char *dir, const uint8_t *data, size_t len) {
    const uint8_t *end = data + len, *h = next_header(data, data, end);
    int n = 0;
    while (h < end) {
        const uint8_t *name = h + sizeof FUZZ_ARCHIVE_SEP - 1;
        const uint8_t *nl = memchr(name, '\n', (size_t)(end - name));
        const uint8_t *body = nl ? nl + 1 : end;
        const uint8_t *next = next_header(data, body, end);
        size_t body_len = (size_t)(next - body);
        if (next < end && body_len > 0) body_len--;   /* the newline before the next header */
        size_t name_len = (size_t)((nl ? nl : end) - name);
        if (name_ok(name, name_len)) {
            char path[1024];
            snprintf(path, sizeof path, "%s/%.*s", dir, (int)name_len, (const char *)name);
            int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            HCL_CHECK(fd >= 0, "%s: %s", path, strerror(errno));
            HCL_CHECK(write(fd, body, body_len) == (ssize_t)body_len, "%s: write", path);
            close(fd);
            n++;
        }
        h = next;
    }
    return n;
}

/* ---- message streams ------------------------------------------------------------------------ */

int fuzz_next_message(const uint8_t **p, const uint8_t *end, const uint8_t **msg, size_t *len) {
    const uint8_t *q = *p;
    if (q >= end) return 0;
    uint64_t n = 0;
    for (int shift = 0; q < end && shift < 64; shift += 7) {
        uint8_t b = *q++;
        n |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) break;
    }
    size_t left = (size_t)(end - q);
    *msg = q;
    *len = n < left ? (size_t)n : left;
    *p = q + *len;
    return 1;
}

void fuzz_check_err(const char *what, const char *err) {
    FUZZ_ASSERT(memchr(err, 0, HCL_ERR_MAX) != NULL, "%s: error text not terminated", what);
    FUZZ_ASSERT(err[0] != 0, "%s: refused without an error message", what);
}
