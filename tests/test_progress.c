/* test_progress: the progress line (common/progress.h). The ETA format; nothing written when the
 * stream is not a terminal or HCL_PROGRESS=0; with HCL_PROGRESS=1 the frames of a task: its name
 * first, counts that never go back, 99% until the end, the last frame at 100% and the line erased
 * after it, an ETA field in every frame, at most one redraw per PROGRESS_INTERVAL however often
 * update is called, one 100% frame when the last unit is counted before it is done, frames cut
 * to the terminal's width; a NULL progress draws nothing. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "progress.h"
#include "util.h"

#define CLEAR "\r\033[K"

static void test_format(void) {
    static const struct { double s; const char *want; } cases[] = {
        {0, "0:00"}, {0.49, "0:00"}, {0.5, "0:01"}, {59.4, "0:59"}, {65, "1:05"}, {3599.4, "59:59"},
        {3600, "1:00:00"}, {36000 + 61, "10:01:01"}, {-1, "--:--"}, {NAN, "--:--"}, {2e7, "--:--"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[32];
        progress_format_eta(buf, sizeof buf, cases[i].s);
        CHECK(strcmp(buf, cases[i].want) == 0, "format %g: got '%s', want '%s'", cases[i].s, buf, cases[i].want);
    }
    char tiny[4];
    progress_format_eta(tiny, sizeof tiny, 3600);
    CHECK(strlen(tiny) == 3, "a short buffer is cut and terminated: '%s'", tiny);
}

/* All that was written to f, from its start (the caller frees it). */
static char *contents(FILE *f) {
    fflush(f);
    long n = ftell(f);
    char *s = hcl_malloc((size_t)n + 1);
    rewind(f);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = 0;
    return s;
}

/* A task run on a stream that is not a terminal, HCL_PROGRESS as given (NULL: unset). */
static size_t bytes_written(const char *env) {
    if (env) setenv("HCL_PROGRESS", env, 1);
    else unsetenv("HCL_PROGRESS");
    FILE *f = tmpfile();
    hcl_progress p;
    progress_init(&p, f);
    progress_begin(&p, "task %d", 1);
    for (int i = 0; i <= 1000; i++) progress_update(&p, i, 1000);
    progress_clear(&p);
    progress_end(&p);
    char *s = contents(f);
    size_t n = strlen(s);
    free(s);
    fclose(f);
    return n;
}

static void test_quiet(void) {
    CHECK(bytes_written(NULL) == 0, "not a terminal, HCL_PROGRESS unset: %zu bytes", bytes_written(NULL));
    CHECK(bytes_written("0") == 0, "HCL_PROGRESS=0: %zu bytes", bytes_written("0"));
    CHECK(bytes_written("yes") == 0, "HCL_PROGRESS=yes (not 1): %zu bytes", bytes_written("yes"));
    CHECK(bytes_written("1") > 0, "HCL_PROGRESS=1 wrote nothing");
    progress_update(NULL, 1, 2);   /* NULL: nothing, no crash */
    progress_begin(NULL, "x");
    progress_clear(NULL);
    progress_end(NULL);
}

/* Updates for `secs` seconds of a task of `total` units, then its end; checks every frame. */
static void test_frames(double secs, int64_t total) {
    setenv("HCL_PROGRESS", "1", 1);
    FILE *f = tmpfile();
    hcl_progress p;
    progress_init(&p, f);
    progress_begin(&p, "probe %s, fits", "v0");
    double t0 = hcl_now();
    int64_t calls = 0;
    int due = 0;   /* updates at least an interval after the last one due: each must redraw */
    for (double last = t0, t; (t = hcl_now()) - t0 < secs;) {   /* done climbs, short of total */
        int64_t done = ++calls / 16;
        progress_update(&p, done < total - 1 ? done : total - 1, total);
        if (t - last >= 1.5 * PROGRESS_INTERVAL) {   /* the half: slack for the clocks' rounding */
            due++;
            last = t;
        }
    }
    progress_end(&p);
    char *s = contents(f);
    CHECK(strncmp(s, CLEAR "probe v0, fits  elapsed 0:00  ETA --:--", strlen(CLEAR) + 38) == 0,
          "first frame: the task's name: '%.60s'", s + strlen(CLEAR));
    size_t len = strlen(s);
    CHECK(len >= strlen(CLEAR) && strcmp(s + len - strlen(CLEAR), CLEAR) == 0, "the line is erased at the end");
    int frames = 0, last_pct = -1, counted = 0;
    char *save, last[256] = "";
    for (char *fr = strtok_r(s, "\r", &save); fr; fr = strtok_r(NULL, "\r", &save)) {
        CHECK(strncmp(fr, "\033[K", 3) == 0, "frame %d starts without an erase: '%s'", frames, fr);
        fr += 3;
        if (!*fr) continue;   /* the final erase */
        frames++;
        CHECK(strstr(fr, "  ETA ") != NULL && strstr(fr, "elapsed ") != NULL, "frame without ETA: '%s'", fr);
        long long done, tot;
        int pct;
        const char *c = strstr(fr, "fits ");
        if (c && sscanf(c, "fits %lld/%lld %d%%", &done, &tot, &pct) == 3) {
            counted++;
            CHECK(tot == total && pct >= last_pct, "frame '%s' after %d%%", fr, last_pct);
            CHECK(pct < 100 || done == tot, "100%% before the end: '%s'", fr);
            last_pct = pct;
        }
        snprintf(last, sizeof last, "%s", fr);
    }
    char want[64];
    snprintf(want, sizeof want, "fits %lld/%lld  100%%", (long long)total, (long long)total);
    CHECK(strstr(last, want) && strstr(last, "ETA 0:00"), "last frame: '%s' (want '%s' and ETA 0:00)", last, want);
    /* begin, at most one redraw per interval (with one of slack for the coarse clock), end */
    int most = 2 + (int)(secs / PROGRESS_INTERVAL) + 1;
    CHECK(frames >= 2 && frames <= most, "%d frames in %.2f s (%lld updates), want 2..%d", frames, secs,
          (long long)calls, most);
    /* as many counted redraws as updates came an interval and a half apart (a busy machine can
     * starve the loop: then fewer are due), up to 3 */
    CHECK(counted >= (due < 3 ? due : 3), "only %d counted frames in %.2f s (%d due)", counted, secs, due);
    free(s);
    fclose(f);
}

/* A caller that counts the last unit before doing it (update(total, total), then work, then
 * end) gets one 100% frame, end's, however slow the work. */
static void test_counted_before_done(void) {
    setenv("HCL_PROGRESS", "1", 1);
    FILE *f = tmpfile();
    hcl_progress p;
    progress_init(&p, f);
    progress_begin(&p, "rows");
    double t0 = hcl_now();
    while (hcl_now() - t0 < 2 * PROGRESS_INTERVAL) progress_update(&p, 5, 10);
    progress_update(&p, 10, 10);
    t0 = hcl_now();
    while (hcl_now() - t0 < 2 * PROGRESS_INTERVAL) progress_update(&p, 10, 10);
    progress_end(&p);
    char *s = contents(f);
    int full = 0;
    for (const char *c = s; (c = strstr(c, "100%")) != NULL; c++) full++;
    CHECK(full == 1, "%d frames at 100%%, want end's only: '%s'", full, s);
    free(s);
    fclose(f);
}

static void test_width(void) {
    setenv("HCL_PROGRESS", "1", 1);
    FILE *f = tmpfile();
    hcl_progress p;
    progress_init(&p, f);
    p.cols = 20;
    progress_begin(&p, "a long name for a task that does not fit");
    char *s = contents(f);
    CHECK(strlen(s) == strlen(CLEAR) + 19, "a frame on 20 columns: %zu bytes after the erase",
          strlen(s) - strlen(CLEAR));
    free(s);
    fclose(f);
}

int main(void) {
    test_format();
    test_quiet();
    test_frames(0.02, 10);
    test_frames(0.45, 1000000);
    test_counted_before_done();
    test_width();
    CHECK_DONE();
}
