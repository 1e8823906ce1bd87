/* progress: see progress.h. */
#include "progress.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define PROGRESS_CLEAR "\r\033[K"

/* The coarse monotonic clock: read in user space (vDSO), ticks of a few ms, plenty for 0.1 s. */
static double coarse_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void progress_format_eta(char *buf, size_t len, double s) {
    if (!(s >= 0) || s > 1e7) {
        snprintf(buf, len, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, len, "%ld:%02ld", t / 60, t % 60);
}

void progress_init(hcl_progress *p, FILE *out) {
    memset(p, 0, sizeof *p);
    p->out = out;
    p->total = -1;
    const char *env = getenv("HCL_PROGRESS");
    int fd = fileno(out);
    if (env && strcmp(env, "1") == 0) p->on = 1;
    else if (env && strcmp(env, "0") == 0) p->on = 0;
    else p->on = fd >= 0 && isatty(fd);
    struct winsize ws;
    if (p->on && fd >= 0 && ioctl(fd, TIOCGWINSZ, &ws) == 0) p->cols = ws.ws_col;
}

/* One frame: the task, its count and percentage when known, elapsed, ETA; cut to the terminal's
 * width so that "\r\033[K" always erases all of it. */
static void draw(hcl_progress *p, double now) {
    char line[PROGRESS_WHAT_MAX + 128], el[32], eta[32] = "--:--";
    const double spent = now - p->t_start;
    progress_format_eta(el, sizeof el, spent);
    int k;
    if (p->total < 0) {
        k = snprintf(line, sizeof line, "%s  elapsed %s  ETA %s", p->what, el, eta);
    } else {
        if (p->done > 0) progress_format_eta(eta, sizeof eta, spent * (double)(p->total - p->done) / (double)p->done);
        int pct = p->total > 0 ? (int)floor(100.0 * (double)p->done / (double)p->total) : 100;
        if (pct >= 100 && p->done < p->total) pct = 99;
        k = snprintf(line, sizeof line, "%s %lld/%lld  %d%%  elapsed %s  ETA %s", p->what,
                     (long long)p->done, (long long)p->total, pct, el, eta);
    }
    if (k >= (int)sizeof line) k = (int)sizeof line - 1;
    if (p->cols > 1 && k > p->cols - 1) k = p->cols - 1;
    fprintf(p->out, PROGRESS_CLEAR "%.*s", k, line);
    fflush(p->out);
    p->drawn = 1;
    p->t_draw = now;
}

void progress_begin(hcl_progress *p, const char *fmt, ...) {
    if (!p || !p->on) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->what, sizeof p->what, fmt, ap);
    va_end(ap);
    p->done = 0;
    p->total = -1;
    p->t_start = coarse_now();
    draw(p, p->t_start);
}

void progress_tick(hcl_progress *p, int64_t done, int64_t total) {
    p->done = done;
    p->total = total;
    double now = coarse_now();
    /* the finished count (done == total) is progress_end's frame, drawn once: a caller that
     * counts the last unit before doing it would otherwise show 100% twice when slow */
    if (done < total && now - p->t_draw >= PROGRESS_INTERVAL) draw(p, now);
}

void progress_end(hcl_progress *p) {
    if (!p || !p->on) return;
    if (p->total < 0) p->total = 0;
    p->done = p->total;
    draw(p, coarse_now());
    progress_clear(p);
    p->total = -1;
}

void progress_clear(hcl_progress *p) {
    if (!p || !p->on || !p->drawn) return;
    fputs(PROGRESS_CLEAR, p->out);
    fflush(p->out);
    p->drawn = 0;
}
