/* test_util: CRC-32C (checkpoint files, replica checksums) against published check values and a
 * bitwise reference, for every length and alignment up to 200 bytes and chained calls; durable
 * files (whole and in pieces; the old file stays until the commit, no temp file is left);
 * whole-file reads (a file, a pipe, the size limit, a missing file); the memory limit that
 * refuses models too large (ulimit -d lowers it and is named) and its byte counts. */
#include <dirent.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "check.h"
#include "memlimit.h"
#include "util.h"

/* The definition, one bit at a time (reflected polynomial 0x82F63B78). */
static uint32_t crc32c_bitwise(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = crc & 1 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    }
    return ~crc;
}

/* Entries of dir other than . and .. */
static int dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    if (d) closedir(d);
    return n;
}

static void test_files(void) {
    char dir[] = "/tmp/hcl_test_util_XXXXXX", path[128], missing[160], err[HCL_ERR_MAX];
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(path, sizeof path, "%s/f.txt", dir);
    snprintf(missing, sizeof missing, "%s/nodir/f.txt", dir);
    size_t len = 99;
    char *text;

    CHECK(hcl_write_file_durable(path, "hello", 5, err) == 0, "durable write: %s", err);
    text = hcl_read_file(path, 100, &len, err);
    CHECK(text && len == 5 && strcmp(text, "hello") == 0, "read back: %s", text ? text : err);
    free(text);
    text = hcl_read_file(path, 4, &len, err);
    CHECK(!text && strstr(err, path) && strstr(err, "larger than 4"), "size limit: %s", err);
    free(text);
    text = hcl_read_file(missing, 100, &len, err);
    CHECK(!text && strstr(err, missing), "missing file: %s", err);

    hcl_durable d;   /* in pieces; the old file stays until the commit */
    CHECK(hcl_durable_open(&d, path, err) == 0 && hcl_durable_write(&d, "good", 4, err) == 0 &&
          hcl_durable_write(&d, "", 0, err) == 0 && hcl_durable_write(&d, "bye", 3, err) == 0, "pieces: %s", err);
    text = hcl_read_file(path, 100, NULL, err);
    CHECK(text && strcmp(text, "hello") == 0, "the old file before the commit: %s", text ? text : err);
    free(text);
    CHECK(hcl_durable_commit(&d, err) == 0, "commit: %s", err);
    text = hcl_read_file(path, 100, &len, err);
    CHECK(text && len == 7 && strcmp(text, "goodbye") == 0, "pieces read back: %s", text ? text : err);
    free(text);
    CHECK(dir_entries(dir) == 1, "%d entries after the commit (a temp file left?)", dir_entries(dir));
    CHECK(hcl_durable_open(&d, missing, err) == -1 && strstr(err, "nodir") && strstr(err, "create"),
          "create in a missing directory: %s", err);
    CHECK(hcl_durable_write(&d, "x", 1, err) == -1 && hcl_durable_commit(&d, err) == -1,
          "the calls after a failure do nothing");

    int fd[2];
    CHECK(pipe(fd) == 0, "pipe");
    CHECK(write(fd[1], "through a pipe", 14) == 14, "write to the pipe");
    close(fd[1]);
    text = hcl_read_fd(fd[0], "the pipe", 1 << 20, &len, err);
    close(fd[0]);
    CHECK(text && len == 14 && strcmp(text, "through a pipe") == 0, "pipe: %s", text ? text : err);
    free(text);
    unlink(path);
    rmdir(dir);
}

/* hcl_memory_limit: at most the machine's memory, named; a lower ulimit -d takes its place. */
static void test_memory_limit(void) {
    char what[96] = "", s[32];
    uint64_t lim = hcl_memory_limit(what, sizeof what);
    CHECK(lim >= (64u << 20) && lim < UINT64_MAX && strstr(what, "memory"), "limit %llu (%s)",
          (unsigned long long)lim, what);
#ifndef __SANITIZE_ADDRESS__   /* ASan's reserved shadow counts against RLIMIT_DATA */
    struct rlimit old, low;
    CHECK(getrlimit(RLIMIT_DATA, &old) == 0, "getrlimit");
    low = old;
    low.rlim_cur = lim / 2;
    if (old.rlim_max == RLIM_INFINITY || old.rlim_max > low.rlim_cur) {
        CHECK(setrlimit(RLIMIT_DATA, &low) == 0, "setrlimit");
        uint64_t got = hcl_memory_limit(what, sizeof what);
        setrlimit(RLIMIT_DATA, &old);
        CHECK(got == lim / 2 && strstr(what, "ulimit -d"), "with ulimit -d %llu: %llu (%s)",
              (unsigned long long)(lim / 2), (unsigned long long)got, what);
    }
#endif
    const struct { double bytes; const char *want; } cases[] = {
        {0, "0 B"}, {999, "999 B"}, {1000, "1.0 kB"}, {25.3e9, "25.3 GB"}, {35.18e12, "35.2 TB"}, {4e21, "4000.0 EB"}};
    for (int i = 0; i < 6; i++) {
        hcl_format_bytes(s, sizeof s, cases[i].bytes);
        CHECK(!strcmp(s, cases[i].want), "hcl_format_bytes(%g) = '%s', want '%s'", cases[i].bytes, s, cases[i].want);
    }
}

int main(void) {
    test_files();
    test_memory_limit();
    /* Check values: "123456789" (the CRC catalogue), 32 zero and 32 0xff bytes (RFC 3720 B.4). */
    CHECK(hcl_crc32c(0, "123456789", 9) == 0xE3069283u, "crc32c(\"123456789\") = %08x",
          hcl_crc32c(0, "123456789", 9));
    uint8_t z[32], f[32];
    memset(z, 0, sizeof z);
    memset(f, 0xff, sizeof f);
    CHECK(hcl_crc32c(0, z, 32) == 0x8A9136AAu, "crc32c(32 zeros) = %08x", hcl_crc32c(0, z, 32));
    CHECK(hcl_crc32c(0, f, 32) == 0x62A8AB43u, "crc32c(32 x 0xff) = %08x", hcl_crc32c(0, f, 32));
    CHECK(hcl_crc32c(0, z, 0) == 0, "crc32c of nothing = %08x", hcl_crc32c(0, z, 0));

    uint8_t buf[256];
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < sizeof buf; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
    int bad = 0, badchain = 0;
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; n <= 200; n++) {
            uint32_t want = crc32c_bitwise(0, buf + off, n);
            bad += hcl_crc32c(0, buf + off, n) != want;
            size_t cut = n / 3;
            badchain += hcl_crc32c(hcl_crc32c(0, buf + off, cut), buf + off + cut, n - cut) != want;
        }
    CHECK(bad == 0, "%d of 1608 (offset, length) cases differ from the bitwise CRC-32C", bad);
    CHECK(badchain == 0, "%d chained cases differ from one call", badchain);
    CHECK_DONE();
}
