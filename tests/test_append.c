/* test_append: the append-only writer of metrics.jsonl and TensorBoard's files (append.h) through
 * a full disk, made here by RLIMIT_FSIZE (writes past the limit fail with EFBIG, the first one
 * short, as on a full file system): records that cannot be written wait, the torn one is
 * finished from where it stopped once the limit is raised, and the file then holds every record
 * once, in order; past HCL_APPEND_MAX_PENDING queued bytes records are dropped and counted; a
 * zeroed writer is closed and writes nothing. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "append.h"
#include "check.h"
#include "util.h"

#define LIMIT 1000      /* bytes the "disk" takes: not a multiple of a line, so one is torn */
#define LINE 97         /* a line's bytes with its newline */

static void set_fsize(rlim_t bytes) {
    struct rlimit rl;
    getrlimit(RLIMIT_FSIZE, &rl);
    rl.rlim_cur = bytes < rl.rlim_max ? bytes : rl.rlim_max;
    CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0, "setrlimit: %s", strerror(errno));
}

static void line_of(char *out, int i) {   /* LINE - 1 characters */
    snprintf(out, LINE, "{\"step\": %04d, \"pad\": \"%0*d\"}", i, LINE - 1 - 25, i);
}

static void test_full_disk(const char *path) {
    hcl_append a;
    char err[HCL_ERR_MAX], line[LINE + 1], want[40 * LINE + 1];
    CHECK(append_open(&a, path, O_TRUNC, err) == 0, "open: %s", err);
    set_fsize(LIMIT);
    int failed = 0;
    size_t n = 0;
    for (int i = 0; i < 30; i++) {
        line_of(line, i);
        CHECK(strlen(line) == LINE - 1, "a line of %zu characters", strlen(line));
        failed += append_line(&a, line) != 0;
        n += (size_t)snprintf(want + n, sizeof want - n, "%s\n", line);
    }
    CHECK(failed == 30 - LIMIT / LINE, "%d puts said queued, want %d", failed, 30 - LIMIT / LINE);
    CHECK(a.err == EFBIG && append_pending(&a) == 30 * LINE - LIMIT, "err %d, %zu bytes waiting", a.err,
          append_pending(&a));
    size_t len = 0;
    char *got = hcl_read_file(path, 1 << 20, &len, err);
    CHECK(got && len == LIMIT && got[len - 1] != '\n', "the file while full: %zu bytes", len);
    free(got);
    CHECK(append_flush(&a, err) == -1 && strstr(err, path) && strstr(err, "File too large"), "flush: %s", err);

    set_fsize(RLIM_INFINITY);   /* room again: the torn line is finished, the rest follow */
    line_of(line, 30);
    CHECK(append_line(&a, line) == 0 && append_pending(&a) == 0 && a.err == 0, "put after the disk has room");
    n += (size_t)snprintf(want + n, sizeof want - n, "%s\n", line);
    CHECK(append_flush(&a, err) == 0, "flush: %s", err);
    append_close(&a);
    got = hcl_read_file(path, 1 << 20, &len, err);
    CHECK(got && len == n && memcmp(got, want, n) == 0, "every line once, in order: %zu bytes, want %zu", len, n);
    free(got);
}

static void test_drops(const char *path) {
    hcl_append a;
    char err[HCL_ERR_MAX];
    CHECK(append_open(&a, path, O_TRUNC, err) == 0, "open: %s", err);
    set_fsize(1);
    size_t rec = 1 << 20, n = HCL_APPEND_MAX_PENDING / rec + 3;
    char *buf = hcl_malloc(rec);
    for (size_t i = 0; i < n; i++) {
        memset(buf, 'a' + (int)(i % 26), rec);
        append_put(&a, buf, rec);
    }
    CHECK(a.dropped == 3 && append_pending(&a) == HCL_APPEND_MAX_PENDING - 1, "dropped %lld, %zu waiting",
          (long long)a.dropped, append_pending(&a));
    set_fsize(RLIM_INFINITY);
    CHECK(append_flush(&a, err) == 0, "flush: %s", err);
    append_close(&a);
    size_t len = 0;
    char *got = hcl_read_file(path, 2 * HCL_APPEND_MAX_PENDING, &len, err);
    int whole = got && len == HCL_APPEND_MAX_PENDING;
    for (size_t i = 0; whole && i < n - 3; i++) whole = got[i * rec] == 'a' + (int)(i % 26) && got[i * rec + rec - 1] == got[i * rec];
    CHECK(whole, "the records kept, whole and in order: %zu bytes", len);
    free(got);
    free(buf);
}

static void test_closed(const char *path) {
    hcl_append a;
    memset(&a, 0, sizeof a);
    char err[HCL_ERR_MAX];
    CHECK(append_line(&a, "x") == -1 && append_flush(&a, err) == 0, "a zeroed writer is closed");
    append_close(&a);
    CHECK(append_open(&a, path, O_EXCL, err) == -1 && strstr(err, "File exists"), "O_EXCL: %s", err);
    CHECK(append_open(&a, path, 0, err) == 0 && append_line(&a, "more") == 0, "append: %s", err);
    append_close(&a);
}

int main(void) {
    signal(SIGXFSZ, SIG_IGN);   /* past RLIMIT_FSIZE: EFBIG, not the signal */
    char dir[] = "/tmp/hcl_test_append_XXXXXX", path[128];
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    test_full_disk(path);
    test_drops(path);
    test_closed(path);
    unlink(path);
    rmdir(dir);
    CHECK_DONE();
}
