/* watchdog: see watchdog.h. */
#include "watchdog.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

static struct {
    pthread_mutex_t lock;       /* the pending telemetry and the wait below */
    hcl_telemetry_msg pending;
    int has_pending;
    enum hcl_wait wait;
    double since;               /* when the wait began */
    int64_t step;
    const char *what;
    int64_t in_step;            /* watchdog_progress */
    const char *phase;
    double done;
    double timeout;
    double beat;                /* seconds between heartbeats: 1, or a quarter of a shorter
                                 * --worker-timeout (the coordinator's limit for silence) */
    _Atomic int quit;
    _Atomic int started;
    hcl_telemetry *tel;
    pthread_t thread;
} wd = {.lock = PTHREAD_MUTEX_INITIALIZER, .in_step = -1, .done = -1.0};

/* The line a wait of `secs` seconds ends the worker with. */
static void wait_expired(enum hcl_wait wait, double secs, int64_t step, const char *what) {
    const double limit = wd.timeout - 3;
    switch (wait) {
    case HCL_WAIT_BATCH:
        LOG_ERROR("no batch from the coordinator for %.0f s (--worker-timeout %.0f + 3): coordinator lost or "
                  "stuck, aborting", secs, limit);
        break;
    case HCL_WAIT_BATCH_REST:
        LOG_ERROR("the batch of step %lld started arriving %.0f s ago and is still incomplete (--worker-timeout "
                  "%.0f + 3): the transfer from the coordinator is stalled (network?), aborting",
                  (long long)step, secs, limit);
        break;
    case HCL_WAIT_COORDINATOR:
        LOG_ERROR("the coordinator has not taken this worker's result for %.0f s (--worker-timeout %.0f + 3): "
                  "coordinator lost or stuck, aborting", secs, limit);
        break;
    case HCL_WAIT_PEERS:
        LOG_ERROR("waited %.0f s for the other workers in the %s of step %lld (--worker-timeout %.0f + 3): a "
                  "worker or the network is lost, aborting", secs, what ? what : "exchange", (long long)step, limit);
        break;
    case HCL_WAIT_NONE:
        return;
    }
    _exit(4);
}

/* A heartbeat (step -1) when nothing was posted for a second, else the posted step's numbers;
 * either with what the main thread computes now. */
static void telemetry_tick(double now, double *last_sent) {
    hcl_telemetry_msg m;
    int have = 0;
    pthread_mutex_lock(&wd.lock);
    if (wd.has_pending) {
        m = wd.pending;
        wd.has_pending = 0;
        have = 1;
    }
    if (!have && now - *last_sent >= wd.beat) {
        memset(&m, 0, sizeof m);
        m.step = -1;
        have = 1;
    }
    const char *phase = wd.wait == HCL_WAIT_PEERS && wd.what ? wd.what : wd.phase;
    m.in_step = wd.in_step;
    snprintf(m.phase, sizeof m.phase, "%s", phase ? phase : "");
    m.phase_done = wd.wait == HCL_WAIT_PEERS ? -1.0 : wd.done;
    pthread_mutex_unlock(&wd.lock);
    if (have) {
        if (m.step < 0) m.rss_bytes = telemetry_rss_bytes();
        telemetry_send(wd.tel, &m);
        *last_sent = now;
    }
}

static void *watchdog_main(void *arg) {
    (void)arg;
    double last_sent = 0;
    while (!wd.quit) {
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
        double now = hcl_now();
        pthread_mutex_lock(&wd.lock);
        enum hcl_wait wait = wd.wait;
        double secs = now - wd.since;
        int64_t step = wd.step;
        const char *what = wd.what;
        pthread_mutex_unlock(&wd.lock);
        if (wait != HCL_WAIT_NONE && secs > wd.timeout) wait_expired(wait, secs, step, what);
        if (wd.tel) telemetry_tick(now, &last_sent);
    }
    return NULL;
}

void watchdog_start(double timeout, hcl_telemetry *tel) {
    wd.timeout = timeout;
    wd.beat = (timeout - 3) / 4 < 1.0 ? (timeout - 3) / 4 : 1.0;
    wd.tel = tel;   /* from here on the watchdog thread alone uses the socket */
    wd.quit = 0;
    watchdog_wait(HCL_WAIT_BATCH, -1, NULL);   /* the first batch */
    HCL_CHECK(pthread_create(&wd.thread, NULL, watchdog_main, NULL) == 0, "pthread_create (watchdog) failed");
    wd.started = 1;
}

void watchdog_wait(enum hcl_wait kind, int64_t step, const char *what) {
    pthread_mutex_lock(&wd.lock);
    wd.wait = kind;
    wd.since = hcl_now();
    wd.step = step;
    wd.what = what;
    pthread_mutex_unlock(&wd.lock);
}

void watchdog_progress(int64_t step, const char *phase, double done) {
    pthread_mutex_lock(&wd.lock);
    wd.in_step = step;
    wd.phase = phase;
    wd.done = done;
    pthread_mutex_unlock(&wd.lock);
}

void watchdog_busy(void) {
    pthread_mutex_lock(&wd.lock);
    wd.wait = HCL_WAIT_NONE;
    pthread_mutex_unlock(&wd.lock);
}

void watchdog_post(const hcl_telemetry_msg *m) {
    pthread_mutex_lock(&wd.lock);
    wd.pending = *m;
    wd.has_pending = 1;
    pthread_mutex_unlock(&wd.lock);
}

void watchdog_stop(void) {
    if (!wd.started) return;
    wd.quit = 1;
    pthread_join(wd.thread, NULL);
    wd.started = 0;
    telemetry_close(wd.tel);
    wd.tel = NULL;
}
