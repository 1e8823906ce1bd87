/* watchdog: see watchdog.h. */
#include "watchdog.h"

#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

static struct {
    pthread_mutex_t lock;
    hcl_telemetry_msg pending;
    int has_pending;
    _Atomic double last_batch;
    double timeout;
    _Atomic int quit;
    hcl_telemetry *tel;
    pthread_t thread;
} wd = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void *watchdog_main(void *arg) {
    (void)arg;
    double last_sent = 0;
    while (!wd.quit) {
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
        double now = hcl_now();
        double silent = now - wd.last_batch;
        if (silent > wd.timeout) {
            LOG_ERROR("no batch from the coordinator for %.0f s (--worker-timeout %.0f + 3): coordinator "
                      "or network lost, aborting", silent, wd.timeout - 3);
            _exit(4);
        }
        if (!wd.tel) continue;
        hcl_telemetry_msg m;
        int have = 0;
        pthread_mutex_lock(&wd.lock);
        if (wd.has_pending) {
            m = wd.pending;
            wd.has_pending = 0;
            have = 1;
        }
        pthread_mutex_unlock(&wd.lock);
        if (!have && now - last_sent >= 1.0) {
            memset(&m, 0, sizeof m);
            m.step = -1;
            m.rss_bytes = telemetry_rss_bytes();
            have = 1;
        }
        if (have) {
            telemetry_send(wd.tel, &m);
            last_sent = now;
        }
    }
    return NULL;
}

void watchdog_start(double timeout, hcl_telemetry *tel) {
    wd.last_batch = hcl_now();
    wd.timeout = timeout;
    wd.tel = tel;   /* from here on the watchdog thread alone uses the socket */
    wd.quit = 0;
    HCL_CHECK(pthread_create(&wd.thread, NULL, watchdog_main, NULL) == 0, "pthread_create (watchdog) failed");
}

void watchdog_fed(void) {
    wd.last_batch = hcl_now();
}

void watchdog_post(const hcl_telemetry_msg *m) {
    pthread_mutex_lock(&wd.lock);
    wd.pending = *m;
    wd.has_pending = 1;
    pthread_mutex_unlock(&wd.lock);
}

void watchdog_stop(void) {
    wd.quit = 1;
    pthread_join(wd.thread, NULL);
    telemetry_close(wd.tel);
    wd.tel = NULL;
}
