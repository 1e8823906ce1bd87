/* memlimit: see memlimit.h. Nothing here allocates: it also runs when memory has run out. */
#include "memlimit.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/sysinfo.h>
#include <unistd.h>

/* What the estimate cannot see: the libraries' own small allocations (MPI, ZeroMQ, protobuf,
 * libgomp), malloc's overhead and rounding: a fixed part and a share of what is to come (what
 * is mapped now is measured, not estimated). */
#define MARGIN_FIXED (32.0 * MEMLIMIT_MB)
#define MARGIN_SHARE 0.10

void memlimit_add_mapped(memlimit_need *n, const char *what, double bytes, double data, double resident) {
    int i = 0;
    while (i < n->n && strcmp(n->part[i].what, what) != 0) i++;
    if (i == n->n) {
        if (n->n == MEMLIMIT_PARTS) i = MEMLIMIT_PARTS - 1;
        else n->part[n->n++] = (memlimit_part){what, 0.0, 0.0, 0.0};
    }
    n->part[i].bytes += bytes;
    n->part[i].data += data;
    n->part[i].resident += resident;
}

void memlimit_add(memlimit_need *n, const char *what, double bytes, double resident) {
    memlimit_add_mapped(n, what, bytes, bytes, resident);
}

/* A small file into buf (NUL-terminated); -1 when it cannot be read. */
static int read_small(const char *path, char *buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    return 0;
}

/* A number file of a cgroup ("max" or a huge v1 value: no limit -> 0). */
static double read_bytes(const char *path, int *found) {
    char buf[64];
    *found = read_small(path, buf, sizeof buf) == 0;
    if (!*found || strncmp(buf, "max", 3) == 0) return 0.0;
    double v = strtod(buf, NULL);
    return v >= 0x1p62 ? 0.0 : v;
}

/* The cgroup directory base + path and each ancestor up to base: the least room left. */
static int walk_up(const char *base, const char *path, const char *max_name, const char *used_name, double *limit,
                   double *used, char *file, size_t cap) {
    char rel[1024], p[2048], q[2048];
    snprintf(rel, sizeof rel, "%s", path);
    int any = 0;
    for (;;) {
        int found, f2;
        snprintf(p, sizeof p, "%s%s/%s", base, rel, max_name);
        double lim = read_bytes(p, &found);
        snprintf(q, sizeof q, "%s%s/%s", base, rel, used_name);
        double u = read_bytes(q, &f2);
        if (found && lim > 0 && (!any || lim - u < *limit - *used)) {
            *limit = lim;
            *used = u;
            snprintf(file, cap, "%s", p);
            any = 1;
        }
        char *slash = strrchr(rel, '/');
        if (!slash || rel[0] == 0 || (slash == rel && rel[1] == 0)) break;
        if (slash == rel) rel[1] = 0;
        else *slash = 0;
    }
    return any;
}

int memlimit_cgroup(const char *proc_cgroup, const char *root, double *limit, double *used, char *file,
                    size_t cap) {
    int any = 0;
    double lim = 0, u = 0;
    char base[600], f[2048], line[1200];
    *limit = *used = 0.0;
    for (const char *s = proc_cgroup; s && *s;) {
        const char *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) : strlen(s);
        snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), s);
        s = nl ? nl + 1 : NULL;
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c2 = 0;
        const char *ctrls = c1 + 1, *path = c2 + 1;
        int v2 = ctrls[0] == 0, v1 = 0;
        for (const char *t = ctrls; !v2 && t && *t; t = strchr(t, ',') ? strchr(t, ',') + 1 : NULL)
            v1 |= strncmp(t, "memory", 6) == 0 && (t[6] == 0 || t[6] == ',');
        if (!v1 && !v2) continue;
        snprintf(base, sizeof base, "%s%s", root, v1 ? "/memory" : "");
        if (walk_up(base, path, v1 ? "memory.limit_in_bytes" : "memory.max",
                    v1 ? "memory.usage_in_bytes" : "memory.current", &lim, &u, f, sizeof f) &&
            (!any || lim - u < *limit - *used)) {
            *limit = lim;
            *used = u;
            snprintf(file, cap, "%s", f);
            any = 1;
        }
    }
    return any;
}

static double status_kb(const char *text, const char *key) {
    const char *p = strstr(text, key);
    return p ? strtod(p + strlen(key), NULL) * 1024.0 : 0.0;
}

void memlimit_read(memlimit_state *s) {
    memset(s, 0, sizeof *s);
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) s->as = (double)rl.rlim_cur;
    if (getrlimit(RLIMIT_DATA, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) s->data = (double)rl.rlim_cur;
    char text[4096];
    if (read_small("/proc/self/status", text, sizeof text) == 0) {
        s->vm_size = status_kb(text, "\nVmSize:");
        s->vm_data = status_kb(text, "\nVmData:");
        s->vm_rss = status_kb(text, "\nVmRSS:");
        s->vm_peak = status_kb(text, "\nVmPeak:");
        s->vm_hwm = status_kb(text, "\nVmHWM:");
    }
    if (read_small("/proc/self/cgroup", text, sizeof text) == 0)
        memlimit_cgroup(text, "/sys/fs/cgroup", &s->cgroup, &s->cgroup_used, s->cgroup_file, sizeof s->cgroup_file);
}

static double part_of(const memlimit_part *p, int which) {
    return which == 0 ? p->bytes : which == 1 ? p->data : p->resident;
}

/* "parameters and gradients 9, optimizer 9, ..." in MB (0: address space, 1: data, 2:
 * resident): the parts of at least 0.5 MB. */
static void list_parts(const memlimit_need *n, int which, char *out, size_t cap) {
    size_t k = 0;
    out[0] = 0;
    for (int i = 0; i < n->n && k < cap; i++) {
        const double mb = part_of(&n->part[i], which) / MEMLIMIT_MB;
        if (mb < 0.5) continue;
        int w = snprintf(out + k, cap - k, "%s%s %.0f", k ? ", " : "", n->part[i].what, mb);
        if (w > 0) k += (size_t)w;
    }
}

int memlimit_check(const memlimit_need *n, const memlimit_state *s, const char *who, char *err) {
    double more[3] = {0.0, 0.0, 0.0};
    for (int i = 0; i < n->n; i++)
        for (int w = 0; w < 3; w++) more[w] += part_of(&n->part[i], w);
    struct { double limit, now, more; const char *name, *kind, *now_what; } lim[3] = {
        {s->as, s->vm_size, more[0], "RLIMIT_AS (ulimit -v)", "of address space", "mapped now"},
        {s->data, s->vm_data, more[1], "RLIMIT_DATA (ulimit -d)", "of data", "now"},
        {s->cgroup, s->cgroup_used, more[2], s->cgroup_file, "resident", "in the cgroup now"}};
    for (int i = 0; i < 3; i++) {
        const double margin = MARGIN_FIXED + MARGIN_SHARE * lim[i].more;
        const double need = lim[i].now + lim[i].more + margin;
        if (lim[i].limit <= 0 || need <= lim[i].limit) continue;
        char parts[300];
        list_parts(n, i, parts, sizeof parts);
        snprintf(err, 512, "%s: needs about %.0f MB %s (%.0f %s; to come: %s; margin %.0f), but the limit %s is "
                 "%.0f MB", who, ceil(need / MEMLIMIT_MB), lim[i].kind, lim[i].now / MEMLIMIT_MB, lim[i].now_what,
                 parts, margin / MEMLIMIT_MB, lim[i].name, lim[i].limit / MEMLIMIT_MB);
        return -1;
    }
    return 0;
}

void memlimit_arenas(void) {
    struct rlimit as, data;
    if ((getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY) ||
        (getrlimit(RLIMIT_DATA, &data) == 0 && data.rlim_cur != RLIM_INFINITY))
        mallopt(M_ARENA_MAX, 1);
}

double memlimit_thread_stack(void) {
    pthread_attr_t a;
    size_t size = 8 << 20;
    if (pthread_getattr_default_np(&a) == 0) {
        pthread_attr_getstacksize(&a, &size);
        pthread_attr_destroy(&a);
    }
    return (double)size;
}

void memlimit_out_of_memory(const char *what, double bytes) {
    memlimit_state s;
    memlimit_read(&s);
    char limits[700] = "";
    size_t k = 0;
    if (s.as > 0) k += (size_t)snprintf(limits + k, sizeof limits - k, "; RLIMIT_AS is %.0f MB", s.as / MEMLIMIT_MB);
    if (s.data > 0 && k < sizeof limits)
        k += (size_t)snprintf(limits + k, sizeof limits - k, "; RLIMIT_DATA is %.0f MB", s.data / MEMLIMIT_MB);
    if (s.cgroup > 0 && k < sizeof limits)
        snprintf(limits + k, sizeof limits - k, "; %s is %.0f MB", s.cgroup_file, s.cgroup / MEMLIMIT_MB);
    fprintf(stderr, "%s: out of memory: %s of %.1f MB did not fit (this process maps %.0f MB, %.0f MB "
            "resident%s)\n", program_invocation_short_name, what, bytes / MEMLIMIT_MB, s.vm_size / MEMLIMIT_MB,
            s.vm_rss / MEMLIMIT_MB, limits);
    fflush(stderr);
    _exit(2);
}

uint64_t hcl_memory_limit(char *what, size_t cap) {
    memlimit_state s;
    memlimit_read(&s);
    double lim = INFINITY;
    const char *name = "no limit known";
    struct sysinfo si;
    if (sysinfo(&si) == 0) {
        lim = ((double)si.totalram + (double)si.totalswap) * si.mem_unit;
        name = "this machine's memory (RAM and swap)";
    }
    if (s.cgroup > 0 && s.cgroup < lim) lim = s.cgroup, name = "the memory limit of this process's cgroup";
    if (s.as > 0 && s.as < lim) lim = s.as, name = "ulimit -v (RLIMIT_AS)";
    if (s.data > 0 && s.data < lim) lim = s.data, name = "ulimit -d (RLIMIT_DATA)";
    if (what) snprintf(what, cap, "%s", name);
    return lim >= 1.8e19 ? UINT64_MAX : (uint64_t)lim;
}
