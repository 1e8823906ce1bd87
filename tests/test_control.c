/* test_control: the coordinator's control plane (coordinator/control*.c) over real sockets:
 * ipc in a mkdtemp directory and tcp on 127.0.0.1 with ephemeral ports. The tests live in
 * test_control_*.c (test_control.h lists them):
 *
 *   status content; each command queued, popped and acked with its step; set checking;
 *   unknown version / type, garbage and bad framing get error replies; queue limit; watch
 *   events; oversize messages dropped; socket modes 0600, control.endpoint, the /tmp/hcl-UID
 *   fallback for long paths, a second job on the same socket refused; endpoint policy (no
 *   CURVE off loopback); CURVE: listed key answered, unknown key ignored, the good client
 *   still served; telemetry round trip, stragglers, silent workers, bad keys, dropped messages
 *   counted and reported; sends that never block; 10,000 seeded random/truncated messages
 *   against a forked server that must still answer status within 100 ms; status latency
 *   (median/p99/max) over ipc and tcp.
 *
 *   test_control                       run the tests
 *   test_control --serve DIR [flags]   a fake training loop behind the control plane, for
 *                                      tests/test_hclctl.sh (see serve_main)
 *   test_control --latency ENDPOINT N  N status requests over one connection: median and max
 *                                      round trip; exit 1 if any took 100 ms or more
 *   test_control --fuzz ENDPOINT N     N seeded random byte strings and truncated status/watch
 *                                      requests at a real job (tests/test_control_job.sh):
 *                                      nothing that could decode as a command */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "log.h"
#include "test_control.h"
#include "util.h"

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "--serve")) return serve_main(argc, argv);
    if (argc == 4 && !strcmp(argv[1], "--latency")) return latency_main(argv[2], atoi(argv[3]));
    if (argc == 4 && !strcmp(argv[1], "--fuzz")) return fuzz_main(argv[2], atoi(argv[3]));
    log_init("test", 0, HCL_LOG_WARN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    snprintf(control_tmp_root, sizeof control_tmp_root, "/tmp/test_control.XXXXXX");
    HCL_CHECK(mkdtemp(control_tmp_root), "mkdtemp: %s", strerror(errno));
    /* forked servers first, before this process has any ZeroMQ context */
    test_fuzz();
    test_latency("ipc", NULL);
    test_latency("tcp", "tcp://127.0.0.1:*");
    test_requests();
    test_long_path();
    test_tcp_policy();
    test_curve();
    test_endpoints();
    test_telemetry();
    kit_rm_rf(control_tmp_root);
    /* check.h counts per file: gather the other files' counts into this one's */
    void (*tallies[])(int *, int *) = {serve_tally, requests_tally, auth_tally, telemetry_tally};
    for (size_t i = 0; i < sizeof tallies / sizeof tallies[0]; i++) tallies[i](&check_count, &check_failures);
    CHECK_DONE();
}
