/* test_memlimit: the cgroup's memory limit found from a /proc/PID/cgroup text in a cgroup tree
 * made of plain files (v2: the cgroup's memory.max and its ancestors', "max" as none, the least
 * room left winning; v1: the memory controller in a list of controllers, its huge "no limit"
 * value); the need's parts summed by name; memlimit_check's one line naming the limit, the total
 * and the parts, and a need that fits; this process's own limits and use. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "memlimit.h"
#include "util.h"

static char root[] = "/tmp/hcl_test_memlimit_XXXXXX";

static void put(const char *rel, const char *text) {
    char p[512], d[600];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    snprintf(d, sizeof d, "mkdir -p $(dirname %s)", p);
    CHECK(system(d) == 0, "%s", d);
    FILE *f = fopen(p, "w");
    CHECK(f && fputs(text, f) >= 0 && fclose(f) == 0, "write %s", p);
}

static void test_cgroup(void) {
    double lim, used;
    char file[512] = "";
    CHECK(memlimit_cgroup("0::/a/b\n", root, &lim, &used, file, sizeof file) == 0, "no files: no limit");
    put("a/b/memory.max", "500000000\n");
    put("a/b/memory.current", "100000000\n");
    put("a/memory.max", "max\n");
    put("a/memory.current", "260000000\n");
    CHECK(memlimit_cgroup("0::/a/b\n", root, &lim, &used, file, sizeof file) == 1 && lim == 5e8 && used == 1e8 &&
          strstr(file, "/a/b/memory.max"), "v2: %g used %g at %s", lim, used, file);
    put("a/memory.max", "300000000\n");   /* the parent: 40 MB of room, tighter than the child's 400 */
    CHECK(memlimit_cgroup("0::/a/b\n", root, &lim, &used, file, sizeof file) == 1 && lim == 3e8 && used == 2.6e8 &&
          strstr(file, "/a/memory.max") && !strstr(file, "/b/"), "v2 ancestor: %g used %g at %s", lim, used, file);
    put("memory/x/memory.limit_in_bytes", "9223372036854771712\n");
    put("memory/x/memory.usage_in_bytes", "5000\n");
    CHECK(memlimit_cgroup("5:cpu,cpuacct:/x\n4:memory:/x\n", root, &lim, &used, file, sizeof file) == 0,
          "v1 without a limit: %g", lim);
    put("memory/x/memory.limit_in_bytes", "200000000\n");
    CHECK(memlimit_cgroup("9:name=systemd:/\n4:blkio,memory:/x\n", root, &lim, &used, file, sizeof file) == 1 &&
          lim == 2e8 && used == 5000 && strstr(file, "memory/x/memory.limit_in_bytes"), "v1: %g at %s", lim, file);
    CHECK(memlimit_cgroup("4:memoryless:/x\n", root, &lim, &used, file, sizeof file) == 0, "not the controller");
}

static void test_check(void) {
    memlimit_need n = {0};
    memlimit_add(&n, "parameters and gradients", 10e6, 10e6);
    memlimit_add(&n, "OpenBLAS buffers", 134e6, 4e6);
    memlimit_add(&n, "parameters and gradients", 10e6, 10e6);
    CHECK(n.n == 2 && n.part[0].bytes == 20e6 && n.part[1].resident == 4e6, "parts summed by name");
    memlimit_state s;
    memset(&s, 0, sizeof s);
    s.vm_size = 400 * MEMLIMIT_MB;
    s.vm_data = 200 * MEMLIMIT_MB;
    s.as = 2000 * MEMLIMIT_MB;
    char err[HCL_ERR_MAX] = "";
    CHECK(memlimit_check(&n, &s, "hcl-train", err) == 0, "fits: %s", err);
    s.as = 500 * MEMLIMIT_MB;
    CHECK(memlimit_check(&n, &s, "hcl-train", err) != 0 && strstr(err, "hcl-train: needs about") &&
          strstr(err, "of address space (400 mapped now; to come: parameters and gradients 19, OpenBLAS buffers 128") &&
          strstr(err, "the limit RLIMIT_AS (ulimit -v) is 500 MB") && !strchr(err, '\n'), "RLIMIT_AS: %s", err);
    s.as = 0;
    s.cgroup = 100 * MEMLIMIT_MB;
    s.cgroup_used = 90 * MEMLIMIT_MB;
    snprintf(s.cgroup_file, sizeof s.cgroup_file, "/sys/fs/cgroup/job/memory.max");
    CHECK(memlimit_check(&n, &s, "worker 0", err) != 0 && strstr(err, "resident (90 in the cgroup now") &&
          strstr(err, "/sys/fs/cgroup/job/memory.max is 100 MB"), "cgroup: %s", err);
}

static void test_self(void) {
    memlimit_state s;
    memlimit_read(&s);
    CHECK(s.vm_size > s.vm_rss && s.vm_rss > 0 && s.vm_data > 0, "this process: VmSize %g, VmRSS %g, VmData %g",
          s.vm_size, s.vm_rss, s.vm_data);
    CHECK(memlimit_thread_stack() >= 64 * 1024, "thread stack %g", memlimit_thread_stack());
}

int main(void) {
    CHECK(mkdtemp(root) != NULL, "mkdtemp");
    test_cgroup();
    test_check();
    test_self();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    CHECK(system(cmd) == 0, "%s", cmd);
    CHECK_DONE();
}
