/* hclctl_status: what hclctl prints of the job's replies (tools/hclctl.h): `status` as a
 * table or one --json object, a command's ack, an error reply; and the pieces the watch
 * lines share (the JSON line writer, state names, durations). A job's strings reach the
 * terminal through put_text (escapes, control characters and bytes that are no UTF-8 shown as
 * \xNN, \uNNNN) and --json through the JSON writer (valid UTF-8). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "hclctl.h"

/* ---- output ---------------------------------------------------------------------------------- */

/* Every --json line is built by the one JSON writer (common/json.h) in this buffer, reused
 * (a zeroed hcl_json is an empty writer, as json_init makes it). */
static hcl_json json_out;

hcl_json *json_line(void) {
    json_reset(&json_out);
    json_begin_object(&json_out, NULL);
    return &json_out;
}

void json_print(void) {
    json_end_object(&json_out);
    json_write_line(&json_out, stdout);
}

void put_text(FILE *f, const char *s) {
    while (*s) {
        uint32_t cp;
        int n = json_utf8_char(s, &cp);
        if (n > 0 && cp >= 0x20 && cp != 0x7f && !(cp >= 0x80 && cp < 0xa0)) {
            fwrite(s, 1, (size_t)n, f);
            s += n;
        } else if (n > 1) {   /* a C1 control character (U+009B starts a CSI sequence) */
            fprintf(f, "\\u%04x", (unsigned)cp);
            s += n;
        } else {              /* a C0 control character, DEL or a byte that is no UTF-8 */
            fprintf(f, "\\x%02x", (unsigned char)*s++);
        }
    }
}

/* ---- status ---------------------------------------------------------------------------------- */

const char *state_name(int s) {
    static const char *names[] = {"unknown", "starting", "running", "paused", "checkpointing",
                                  "stopping", "done"};
    return s >= 0 && s <= 6 ? names[s] : "unknown";
}

const char *error_name(int e) {
    static const char *names[] = {"none", "bad_version", "bad_request", "unknown_type", "bad_key",
                                  "bad_value", "busy", "refused", "failed"};
    return e >= 0 && e <= 8 ? names[e] : "error";
}

void duration(char *out, size_t cap, double s) {
    if (!(s >= 0) || !isfinite(s)) { snprintf(out, cap, "unknown"); return; }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(out, cap, "%ldh%02ldm%02lds", t / 3600, t / 60 % 60, t % 60);
    else if (t >= 60) snprintf(out, cap, "%ldm%02lds", t / 60, t % 60);
    else snprintf(out, cap, "%.1fs", s);
}

static void worker_json(hcl_json *j, const Hcl__WorkerStat *w) {
    json_begin_object(j, NULL);
    json_int(j, "index", w->rank);            /* WorkerStat.rank is the worker's index */
    json_int(j, "rank", w->world_rank);
    json_string(j, "host", w->host);
    json_int(j, "step", w->step);
    json_number(j, "compute_s", w->compute_s);
    json_number(j, "allgather_s", w->allgather_s);
    json_number(j, "reduce_scatter_s", w->reduce_scatter_s);
    json_number(j, "allreduce_s", w->allreduce_s);
    json_number(j, "wait_s", w->wait_s);
    json_uint(j, "bytes", w->bytes);
    json_uint(j, "rss_bytes", w->rss_bytes);
    json_seconds(j, "last_seen_s", w->last_seen_s);
    json_number(j, "compute_median_s", w->compute_median_s);
    json_uint(j, "messages", w->messages);
    json_uint(j, "telemetry_dropped", w->telemetry_dropped);
    json_bool(j, "straggler", w->straggler);
    json_int(j, "in_step", w->in_step);
    json_string(j, "phase", w->phase);
    json_number(j, "phase_done", w->phase_done >= 0 ? w->phase_done : NAN);
    json_end_object(j);
}

/* Where the job's Prometheus endpoint answers: 1 with url, 0 when it has none. */
static int prometheus_url(char *url, size_t cap, const Hcl__StatusBody *b) {
    if (!b->prometheus_address[0]) return 0;
    snprintf(url, cap, "http://%s/metrics", b->prometheus_address);
    return 1;
}

/* The monitoring outputs the job writes: each null when it is off. */
static void monitoring_json(hcl_json *j, const Hcl__StatusBody *b) {
    char url[EP_MAX + 32];
    if (b->tensorboard_dir[0]) json_string(j, "tensorboard_dir", b->tensorboard_dir);
    else json_null(j, "tensorboard_dir");
    if (prometheus_url(url, sizeof url, b)) {
        json_string(j, "prometheus_address", b->prometheus_address);
        json_string(j, "prometheus_url", url);
    } else {
        json_null(j, "prometheus_address");
        json_null(j, "prometheus_url");
    }
}

void print_status_json(const Hcl__StatusBody *b) {
    hcl_json *j = json_line();
    json_bool(j, "ok", 1);
    json_string(j, "state", state_name(b->state));
    json_int(j, "step", b->step);
    json_int(j, "total_steps", b->total_steps);
    json_int(j, "epoch", b->epoch);
    json_number(j, "loss", b->loss);
    json_number(j, "lr", b->lr);
    json_number(j, "lr_scale", b->lr_scale);
    json_number(j, "logit_scale", b->logit_scale);
    json_number(j, "samples_per_s", b->samples_per_s);
    json_seconds(j, "eta_s", b->eta_s >= 0 ? b->eta_s : NAN);
    json_seconds(j, "elapsed_s", b->elapsed_s);
    json_string(j, "last_checkpoint_path", b->last_checkpoint_path);
    json_int(j, "last_checkpoint_step", b->last_checkpoint_step);
    json_string(j, "last_checkpoint_error", b->last_checkpoint_error);
    json_int(j, "log_every", b->log_every);
    json_number(j, "checkpoint_interval_s", b->checkpoint_interval_s);
    json_int(j, "checkpoint_every", b->checkpoint_every);
    json_string(j, "run_dir", b->run_dir);
    monitoring_json(j, b);
    json_int(j, "restarts", b->restarts);
    json_int(j, "nworkers", b->nworkers);
    json_begin_array(j, "workers");
    for (size_t i = 0; i < b->n_workers; i++) worker_json(j, b->workers[i]);
    json_end_array(j);
    json_print();
}

/* A host name for the table: printable ASCII (others '?'), at most HOST_CELL characters, "?"
 * when unknown. */
#define HOST_CELL 24
static const char *host_cell(char out[HOST_CELL + 1], const char *h) {
    int n = 0;
    for (; h && h[n] && n < HOST_CELL; n++) out[n] = h[n] >= 0x20 && h[n] < 0x7f ? h[n] : '?';
    out[n] = 0;
    if (!n) snprintf(out, HOST_CELL + 1, "?");
    return out;
}

/* The per-worker table: the last step's timings, traffic, memory, when last heard from, the
 * telemetry messages the worker had to drop, stragglers, what it computes ("step 3 loss 45%"). */
static void print_worker_table(const Hcl__StatusBody *b) {
    int hw = 4;   /* the host column: as wide as the longest name, at most HOST_CELL */
    char host[HOST_CELL + 1];
    for (size_t i = 0; i < b->n_workers; i++) {
        int n = (int)strlen(host_cell(host, b->workers[i]->host));
        if (n > hw) hw = n;
    }
    printf("\n%6s %4s %-*s %10s %12s %14s %12s %8s %9s %8s %9s %8s %9s  %s\n", "worker", "rank", hw, "host",
           "compute ms", "allgather ms", "red-scatter ms", "allreduce ms", "wait ms", "MB moved", "RSS MB",
           "last seen", "dropped", "straggler", "current");
    for (size_t i = 0; i < b->n_workers; i++) {
        const Hcl__WorkerStat *w = b->workers[i];
        char seen[32];
        if (w->messages) snprintf(seen, sizeof seen, "%.1fs", w->last_seen_s);
        else snprintf(seen, sizeof seen, "never");
        printf("%6d %4d %-*s %10.2f %12.2f %14.2f %12.2f %8.2f %9.2f %8.1f %9s %8" PRIu64 " %9s  ", w->rank,
               w->world_rank, hw, host_cell(host, w->host),
               w->compute_s * 1e3, w->allgather_s * 1e3, w->reduce_scatter_s * 1e3,
               w->allreduce_s * 1e3, w->wait_s * 1e3, w->bytes / 1e6, w->rss_bytes / 1048576.0, seen,
               w->telemetry_dropped, w->straggler ? "yes" : "");
        if (w->in_step >= 0 && w->phase && w->phase[0]) {
            printf("step %" PRId64 " ", w->in_step);
            put_text(stdout, w->phase);
            if (w->phase_done >= 0) printf(" %.0f%%", 100.0 * w->phase_done);
        }
        putchar('\n');
    }
}

/* "NAME" padded to the column, then the job's text s (put_text) and a newline */
static void text_line(const char *name, const char *s) {
    printf("%-14s ", name);
    put_text(stdout, s);
    putchar('\n');
}

void print_status(const Hcl__StatusBody *b) {
    char eta[32], el[32];
    duration(eta, sizeof eta, b->eta_s);
    duration(el, sizeof el, b->elapsed_s);
    printf("%-14s %s\n", "state", state_name(b->state));
    printf("%-14s %" PRId64 " / %" PRId64, "step", b->step, b->total_steps);
    if (b->total_steps > 0) printf("  (%.1f%%)", 100.0 * (double)b->step / (double)b->total_steps);
    printf("\n%-14s %" PRId64 "\n", "epoch", b->epoch);
    printf("%-14s %.6g\n", "loss", b->loss);
    printf("%-14s %.4g  (scale %.4g)\n", "lr", b->lr, b->lr_scale);
    printf("%-14s %.4g\n", "logit scale", b->logit_scale);
    printf("%-14s %.0f\n", "samples/s", b->samples_per_s);
    printf("%-14s %s\n%-14s %s\n", "eta", eta, "elapsed", el);
    if (b->last_checkpoint_step >= 0) {
        printf("%-14s ", "checkpoint");
        put_text(stdout, b->last_checkpoint_path);
        printf(" (step %" PRId64 ")\n", b->last_checkpoint_step);
    } else {
        printf("%-14s none\n", "checkpoint");
    }
    if (b->last_checkpoint_error[0]) text_line("ckpt error", b->last_checkpoint_error);
    printf("%-14s %" PRId64 " steps\n", "log every", b->log_every);
    if (b->checkpoint_every > 0) printf("%-14s %" PRId64 " steps\n", "ckpt every", b->checkpoint_every);
    else printf("%-14s off\n", "ckpt every");
    if (b->checkpoint_interval_s > 0) printf("%-14s %g s\n", "ckpt interval", b->checkpoint_interval_s);
    else printf("%-14s off\n", "ckpt interval");
    text_line("run dir", b->run_dir);
    char url[EP_MAX + 32];
    text_line("tensorboard", b->tensorboard_dir[0] ? b->tensorboard_dir : "off");
    text_line("prometheus", prometheus_url(url, sizeof url, b) ? url : "off");
    if (b->restarts > 0) printf("%-14s %" PRId64 " (hcl-run)\n", "restarts", b->restarts);
    printf("%-14s %d\n", "workers", b->nworkers);
    if (b->n_workers) print_worker_table(b);
}

/* ---- acks and errors ------------------------------------------------------------------------- */

int report_error(const char *cmd, const Hcl__ControlReply *r) {
    if (hclctl_flag.json) {
        hcl_json *j = json_line();
        json_bool(j, "ok", 0);
        json_string(j, "error", error_name(r->error));
        json_string(j, "message", r->message);
        json_print();
    }
    fprintf(stderr, "hclctl: %s: %s: ", cmd, error_name(r->error));
    put_text(stderr, r->message);
    fputc('\n', stderr);
    return EXIT_ERROR;
}

void report_ack(const char *cmd, const char *arg, const Hcl__ControlReply *r) {
    if (hclctl_flag.json) {
        hcl_json *j = json_line();
        json_bool(j, "ok", 1);
        json_string(j, "command", cmd);
        json_int(j, "step", r->ack->step);
        json_string(j, "message", r->message);
        json_print();
    } else {
        printf("ok: %s%s", cmd, arg ? " " : "");
        put_text(stdout, arg ? arg : "");
        printf(" at step %" PRId64 "%s", r->ack->step, r->message[0] ? ": " : "");
        put_text(stdout, r->message);
        putchar('\n');
    }
}
