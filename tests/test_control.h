/* test_control: what the files of the control-plane test program share (tests/test_control*.c).
 * The program tests coordinator/control*.c over real sockets; its parts:
 *
 *   test_control.c            main: the tests in order, and the modes the shell tests call
 *   test_control_kit.c        the client side: sockets, requests, replies, a fake status, files
 *   test_control_requests.c   requests, replies and commands over the default ipc endpoint
 *   test_control_auth.c       endpoint policy, tcp, CURVE, wildcards named, watch/telemetry ports
 *   test_control_telemetry.c  the worker table, stragglers, silence, strangers, dropped counts
 *   test_control_serve.c      a fake training loop behind the control plane (forked for the
 *                             fuzz and latency tests, --serve for tests/test_hclctl.sh)
 *
 * check.h keeps its counters per file: each test file hands its own to main with its
 * *_tally function. */
#ifndef HCL_TEST_CONTROL_H
#define HCL_TEST_CONTROL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "control.h"
#include "control.pb-c.h"
#include "telemetry.h"

/* ---- test_control_kit.c ---- */
extern char control_tmp_root[256];   /* the test's mkdtemp directory */

/* A client socket connected to ep; server_pub and client_sec (Z85) make it a CURVE client. */
void *kit_client_socket(void *ctx, int type, const char *ep, const char *server_pub,
                        const char *client_sec);

/* ControlRequest body types (the oneof field numbers). */
enum { RQ_STATUS = 10, RQ_WATCH, RQ_PAUSE, RQ_RESUME, RQ_CHECKPOINT, RQ_STOP, RQ_SET };

/* Pack a ControlRequest of type (0: no body) into buf: its size. */
size_t kit_pack_request(uint8_t *buf, int type, uint64_t id, uint32_t version, const char *key,
                        const char *value, int no_checkpoint);
void kit_send_request(void *cli, int type, uint64_t id, const char *key, const char *value,
                      int no_checkpoint);
/* The next reply on cli, servicing c (if any) meanwhile; NULL after timeout_ms. */
Hcl__ControlReply *kit_await_reply(hcl_control *c, const hcl_status *st, void *cli, int timeout_ms);
/* Send a request and wait 2 s for its reply. */
Hcl__ControlReply *kit_call(hcl_control *c, const hcl_status *st, void *cli, int type, uint64_t id,
                            const char *key, const char *value);
/* Service c until a command is queued: 1 with *rq, 0 after 2 s. */
int kit_await_request(hcl_control *c, const hcl_status *st, ctl_request *rq);
/* Round trip of one status request on cli (seconds), -1 when no answer within 1 s. */
double kit_status_rtt(void *cli, uint64_t id);
void kit_free_reply(Hcl__ControlReply *r);   /* NULL is fine */

/* A status as a running job fills it: step 1200 of 5000, loss 0.285, lr 2e-4 at scale 0.5... */
void kit_fake_status(hcl_status *st);

int kit_file_mode(const char *path);          /* st_mode & 07777, -1 when missing */
int kit_exists(const char *path);
void kit_make_dir(char *out, size_t cap, const char *name);   /* control_tmp_root/name */
void kit_read_first_line(const char *path, char *out, size_t cap);
void kit_write_text(const char *path, const char *text, mode_t mode);
void kit_rm_rf(const char *path);
uint64_t kit_rnd(void);                       /* a seeded xorshift: the same bytes every run */
int kit_cmp_double(const void *a, const void *b);

/* ---- test_control_serve.c ---- */
/* The fake training loop: a step every step_ms, control_service as its sleep, commands popped
 * and acted on. With telemetry, worker 0 of nworkers sends a Telemetry every step, after a
 * flood the loop does not read (so it has dropped some). exit_on_stop 0 acks stop and goes
 * on. Returns the exit code. */
int serve_loop(const char *dir, const char *endpoint, const char *secret, const char *clients,
               int nworkers, int step_ms, int exit_on_stop, int telemetry);
pid_t serve_fork(const char *dir, const char *endpoint, int nworkers, int step_ms);
int serve_stop(pid_t pid);                    /* its exit code, -1 when it died on its own */
void test_fuzz(void);
void test_latency(const char *name, const char *endpoint);
int serve_main(int argc, char **argv);        /* test_control --serve DIR ... */
int fuzz_main(const char *ep, int n);         /* test_control --fuzz ENDPOINT N */
int latency_main(const char *ep, int n);      /* test_control --latency ENDPOINT N */
void serve_tally(int *checks, int *failures);

/* ---- the other test files ---- */
void test_requests(void);
void test_long_path(void);
void requests_tally(int *checks, int *failures);
void test_tcp_policy(void);
void test_curve(void);
void test_endpoints(void);
void auth_tally(int *checks, int *failures);
void test_telemetry(void);
void telemetry_tally(int *checks, int *failures);

#endif
