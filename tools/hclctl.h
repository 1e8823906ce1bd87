/* hclctl: what the files of the control client share (tools/hclctl*.c). hclctl talks to a
 * running hcl-train job over its control plane (proto/control.proto, coordinator/control.h):
 *
 *   hclctl.c          the command line: flags, --help, the requests, keygen, main
 *   hclctl_client.c   the connection: control.endpoint, CURVE keys, sockets, request/reply
 *   hclctl_status.c   what comes back, printed: status (text and --json), acks, errors
 *   hclctl_watch.c    watch: the step events of one job, or of several in one poll loop
 *
 * Exports: the exit codes, the flags (hclctl_flag), fail(), the interrupt flag, the client and
 * its calls, the request builder, the printers and the two watch loops. */
#ifndef HCL_HCLCTL_H
#define HCL_HCLCTL_H

#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "control.pb-c.h"
#include "json.h"

#define EXIT_ERROR 1      /* the job answered with an error (or keygen could not write) */
#define EXIT_USAGE 2      /* bad flag, command, key file or run directory */
#define EXIT_NOANSWER 3   /* no answer or no connection; watch: a job was lost */
#define EP_MAX 512
#define WATCH_JOBS_MAX 64 /* run directories one watch follows */

/* The command line's values (the option table in hclctl.c stores into them). */
typedef struct {
    char endpoint[PATH_MAX], run_dir[PATH_MAX], curve_key[PATH_MAX], server_key[PATH_MAX];
    char name[PATH_MAX];
    int64_t json, no_checkpoint, timeout, count;
} hclctl_flags;
extern hclctl_flags hclctl_flag;

/* Set by SIGINT/SIGTERM (the handler does nothing else); the loops act on it. */
extern volatile sig_atomic_t hclctl_interrupted;

/* "hclctl: " and the message on stderr (put_text), with --json also {"ok": false, "error":
 * "failed"|"usage"|"no_answer", "message": ...} on stdout, then exit(code). */
void fail(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));

/* ---- hclctl_client.c ---- */
typedef struct {
    void *ctx, *dealer;       /* ctx: not owned (one context for every client of the process) */
    char endpoint[EP_MAX];
    int curve;
    char server_public[41], public_key[41], secret_key[41];
    uint64_t next_id;
} client;

/* A Z85 key from path (the first line not blank nor a comment); secret: refuse a file others
 * may read. Bad file: fail(EXIT_USAGE). */
void client_read_key(const char *path, int secret, char key[41]);
/* RUN_DIR/control.endpoint into cl->endpoint and file_key (its `curve-server-key`, or ""):
 * 0, or -1 with one line in err (HCL_ERR_MAX) naming the file. */
int client_read_endpoint(client *cl, const char *run_dir, char file_key[41], char *err);
/* Where to connect (--endpoint, or run_dir's control.endpoint) and with which keys. When the
 * run directory names no endpoint: fail(EXIT_NOANSWER). */
void client_resolve(client *cl, const char *run_dir);
/* The keys once the endpoint is known (file_key: the one control.endpoint named, or ""). */
void client_keys(client *cl, const char *file_key);
void *client_socket(client *cl, int type, const char *ep);   /* connected to ep */
void client_open(client *cl, void *ctx);                      /* the DEALER, in ctx */
void client_close(client *cl);
/* Send rq (its id and version set here): its id, or 0 when it could not be queued. */
uint64_t client_send(client *cl, Hcl__ControlRequest *rq);
/* The reply to id if it is waiting (stale replies are dropped), else NULL. */
Hcl__ControlReply *client_take(client *cl, uint64_t id);
/* Send rq and wait --timeout ms for its reply: the reply, or NULL (timeout, interrupt). */
Hcl__ControlReply *client_call(client *cl, Hcl__ControlRequest *rq);
void no_answer(const client *cl) __attribute__((noreturn));

/* ---- hclctl.c ---- */
/* The bodies a request may point to. */
typedef struct {
    Hcl__StatusRequest status;
    Hcl__WatchRequest watch;
    Hcl__PauseRequest pause;
    Hcl__ResumeRequest resume;
    Hcl__CheckpointRequest ckpt;
    Hcl__StopRequest stop;
    Hcl__SetRequest set;
    char key[256], value[256];
} request_bodies;
/* The request for cmd (arg: set's KEY=VALUE); its body lives in *b. */
void build_request(Hcl__ControlRequest *rq, request_bodies *b, const char *cmd, const char *arg);

/* ---- hclctl_status.c ---- */
hcl_json *json_line(void);    /* a new --json line: an open object in the one reused writer */
void json_print(void);        /* close it, print it, flush */
/* s to f safe for a terminal: valid UTF-8 printable characters as they are; C0 and C1 control
 * characters (escape sequences), DEL and bytes that are no UTF-8 as \xNN or \uNNNN. Every
 * string that came from a job or a file is printed with it. */
void put_text(FILE *f, const char *s);
const char *state_name(int s);
const char *error_name(int e);
void duration(char *out, size_t cap, double s);   /* "1h02m03s", "4m05s", "6.0s", "unknown" */
void print_status(const Hcl__StatusBody *b);
void print_status_json(const Hcl__StatusBody *b);
int report_error(const char *cmd, const Hcl__ControlReply *r);   /* EXIT_ERROR */
void report_ack(const char *cmd, const char *arg, const Hcl__ControlReply *r);

/* ---- hclctl_watch.c ---- */
/* Follow one job (cl answered a watch request with watch_ep) until it is done, --count events
 * or an interrupt; a job that stops answering: fail(EXIT_NOANSWER). */
int watch_one(client *cl, const char *watch_ep);
/* Follow the jobs of run directories dirs[0..n) at once until each has ended or was lost (a
 * line for each), --count events in all, or an interrupt: 0, or EXIT_NOANSWER when a job was
 * lost. A directory given twice or without a control socket: fail(EXIT_USAGE). */
int watch_many(const char *const *dirs, int n);

#endif
