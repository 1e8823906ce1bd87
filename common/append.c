/* append: see append.h. */
#include "append.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

int append_open(hcl_append *a, const char *path, int flags, char *err) {
    memset(a, 0, sizeof *a);
    int n = snprintf(a->path, sizeof a->path, "%s", path);
    if (n < 0 || (size_t)n >= sizeof a->path)
        return hcl_err(err, "%s: path longer than %zu bytes", path, sizeof a->path - 1);
    a->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (flags & (O_TRUNC | O_EXCL)), 0644);
    if (a->fd < 0) return hcl_err(err, "%s: cannot create: %s", path, strerror(errno));
    a->is_open = 1;
    return 0;
}

size_t append_pending(const hcl_append *a) { return a->len - a->off; }

/* Write the queue from where it stopped; a failure keeps the rest for the next call. */
static int drain(hcl_append *a) {
    while (a->off < a->len) {
        ssize_t w = write(a->fd, a->buf + a->off, a->len - a->off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = w < 0 ? errno : ENOSPC;
            if (!a->err)
                LOG_ERROR("%s: cannot write: %s; what follows is kept in memory and written when it can be",
                          a->path, strerror(e));
            a->err = e;
            return -1;
        }
        a->off += (size_t)w;
    }
    if (a->err && a->dropped)
        LOG_INFO("%s: written again (after: %s; %lld records were dropped)", a->path, strerror(a->err),
                 (long long)a->dropped);
    else if (a->err)
        LOG_INFO("%s: written again (after: %s)", a->path, strerror(a->err));
    a->err = 0;
    a->off = a->len = 0;
    return 0;
}

/* p (n bytes) and q (m bytes) as one record at the end of the queue. */
static int queue(hcl_append *a, const void *p, size_t n, const void *q, size_t m) {
    if (!a->is_open) return -1;
    size_t pending = a->len - a->off;
    if (pending + n + m > HCL_APPEND_MAX_PENDING) {
        if (a->dropped++ == 0)
            LOG_ERROR("%s: more than %zu MB waiting to be written: records are dropped until it can be", a->path,
                      HCL_APPEND_MAX_PENDING >> 20);
        drain(a);
        return -1;
    }
    if (a->off > 0 && a->len + n + m > a->cap) {   /* the written bytes make room */
        memmove(a->buf, a->buf + a->off, pending);
        a->off = 0, a->len = pending;
    }
    if (a->len + n + m > a->cap) {
        size_t cap = 2 * a->cap > a->len + n + m ? 2 * a->cap : a->len + n + m + 4096;
        char *b = realloc(a->buf, cap);
        HCL_CHECK(b, "out of memory queueing %zu bytes for %s", n + m, a->path);
        a->buf = b, a->cap = cap;
    }
    memcpy(a->buf + a->len, p, n);
    if (m) memcpy(a->buf + a->len + n, q, m);
    a->len += n + m;
    return drain(a);
}

int append_put(hcl_append *a, const void *data, size_t n) { return queue(a, data, n, NULL, 0); }

int append_line(hcl_append *a, const char *text) { return queue(a, text, strlen(text), "\n", 1); }

int append_flush(hcl_append *a, char *err) {
    if (!a->is_open || drain(a) == 0) return 0;
    return hcl_err(err, "%s: cannot write: %s (%zu bytes waiting)", a->path, strerror(a->err), append_pending(a));
}

void append_close(hcl_append *a) {
    if (a->is_open) {
        if (drain(a) != 0)
            LOG_ERROR("%s: %zu bytes could not be written and are lost: %s", a->path, append_pending(a),
                      strerror(a->err));
        fsync(a->fd);
        close(a->fd);
    }
    free(a->buf);
    memset(a, 0, sizeof *a);
}
