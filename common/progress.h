/* progress: the progress line of a tool while a person waits (hcl-eval, hcl-embed, hcl-data),
 * and the one way hcl formats an ETA (progress_format_eta, the trainer's line uses it too).
 *
 * One line on stderr, redrawn in place ("\r\033[K") at most every PROGRESS_INTERVAL seconds:
 *   probe fused, L2 sweep fits 7/16  43%  elapsed 0:04  ETA 0:05
 * what is being done (the caller's words, naming the unit counted), the count done of the total,
 * the percentage (100% only when done == total), elapsed time and the ETA from the mean pace so
 * far ("--:--" until something is done). A task is begin .. update* .. end: begin draws its name,
 * update draws when the interval has passed and done < total, end draws the finished frame
 * (100%, the only one) and erases the line, so whatever is written next starts on a clean line.
 * progress_clear erases the line in the middle of a task (before an error or a verbose line on
 * stderr); the next update redraws.
 *
 * The line is drawn only when stderr is a terminal: in logs and pipes nothing at all is written.
 * The environment variable HCL_PROGRESS overrides that: HCL_PROGRESS=1 draws whatever stderr is
 * (the tests read the frames from a pipe), HCL_PROGRESS=0 never draws; unset or any other value:
 * a terminal decides.
 *
 * Cheap in inner loops: progress_update is inline and tests one flag when the line is off; when
 * on, it reads the coarse monotonic clock (a few ns, no system call) and draws at most 10 times
 * a second. Nothing is allocated after progress_init. A NULL hcl_progress * is allowed everywhere
 * and draws nothing (code that may run without a person waiting passes NULL).
 *
 * Exports: hcl_progress, progress_init, progress_begin, progress_update, progress_end,
 * progress_clear, progress_format_eta, PROGRESS_INTERVAL. */
#ifndef HCL_PROGRESS_H
#define HCL_PROGRESS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define PROGRESS_INTERVAL 0.1       /* seconds between two redraws of one task, at least */
#define PROGRESS_WHAT_MAX 96

typedef struct {
    int on;                         /* draw at all (a terminal, or HCL_PROGRESS=1) */
    FILE *out;                      /* stderr for the tools */
    int cols;                       /* the terminal's width (0: unknown, no cut) */
    char what[PROGRESS_WHAT_MAX];   /* the task being done */
    int64_t done, total;            /* total < 0: not known yet (nothing counted) */
    double t_start, t_draw;         /* the task's start, the last frame (coarse monotonic s) */
    int drawn;                      /* a frame is on the line */
} hcl_progress;

/* Decide whether to draw on out (HCL_PROGRESS, else isatty(fileno(out))) and read the
 * terminal's width. No task is running. */
void progress_init(hcl_progress *p, FILE *out);

/* A new task named by the printf-style format; its clock starts; its name is drawn. */
void progress_begin(hcl_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* done of total units of the task (done <= total; both may change between calls). */
void progress_tick(hcl_progress *p, int64_t done, int64_t total);
static inline void progress_update(hcl_progress *p, int64_t done, int64_t total) {
    if (p && p->on) progress_tick(p, done, total);
}

/* The task is finished: its last frame (done = total, 100%) is drawn, then the line erased. */
void progress_end(hcl_progress *p);

/* Erase the line if a frame is on it. */
void progress_clear(hcl_progress *p);

/* s seconds as "M:SS" or "H:MM:SS" (rounded to the second); "--:--" when s is negative, NaN or
 * over 1e7 (unknown). Writes at most len bytes, always terminated. */
void progress_format_eta(char *buf, size_t len, double s);

#endif
