/* test_control_kit: the client side of the control-plane tests (test_control.h): sockets,
 * requests and replies, a fake status, small file helpers, a seeded random source. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "test_control.h"
#include "util.h"

char control_tmp_root[256];

void *kit_client_socket(void *ctx, int type, const char *ep, const char *server_pub,
                        const char *client_sec) {
    void *s = zmq_socket(ctx, type);
    HCL_CHECK(s, "zmq_socket");
    int zero = 0, one = 1, hwm = 100000, sndtimeo = 500;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);  /* a refused client has no peer */
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (strstr(ep, "://[")) zmq_setsockopt(s, ZMQ_IPV6, &one, sizeof one);
    if (server_pub) {
        char pub[41];
        HCL_CHECK(zmq_curve_public(pub, client_sec) == 0, "zmq_curve_public");
        zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server_pub, 41);
        zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, 41);
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, client_sec, 41);
    }
    HCL_CHECK(zmq_connect(s, ep) == 0, "connect %s: %s", ep, zmq_strerror(zmq_errno()));
    return s;
}

size_t kit_pack_request(uint8_t *buf, int type, uint64_t id, uint32_t version, const char *key,
                        const char *value, int no_checkpoint) {
    Hcl__ControlRequest rq = HCL__CONTROL_REQUEST__INIT;
    Hcl__StatusRequest status = HCL__STATUS_REQUEST__INIT;
    Hcl__WatchRequest watch = HCL__WATCH_REQUEST__INIT;
    Hcl__PauseRequest pause = HCL__PAUSE_REQUEST__INIT;
    Hcl__ResumeRequest resume = HCL__RESUME_REQUEST__INIT;
    Hcl__CheckpointRequest ckpt = HCL__CHECKPOINT_REQUEST__INIT;
    Hcl__StopRequest stop = HCL__STOP_REQUEST__INIT;
    Hcl__SetRequest set = HCL__SET_REQUEST__INIT;
    rq.id = id;
    rq.version = version;
    rq.body_case = (Hcl__ControlRequest__BodyCase)type;
    switch (type) {
    case RQ_STATUS: rq.status = &status; break;
    case RQ_WATCH: rq.watch = &watch; break;
    case RQ_PAUSE: rq.pause = &pause; break;
    case RQ_RESUME: rq.resume = &resume; break;
    case RQ_CHECKPOINT: rq.checkpoint = &ckpt; break;
    case RQ_STOP: stop.no_checkpoint = no_checkpoint; rq.stop = &stop; break;
    case RQ_SET: set.key = (char *)key; set.value = (char *)value; rq.set = &set; break;
    default: rq.body_case = HCL__CONTROL_REQUEST__BODY__NOT_SET; break;
    }
    return hcl__control_request__pack(&rq, buf);
}

void kit_send_request(void *cli, int type, uint64_t id, const char *key, const char *value,
                      int no_checkpoint) {
    uint8_t buf[1024];
    size_t n = kit_pack_request(buf, type, id, 1, key, value, no_checkpoint);
    zmq_send(cli, buf, n, 0);
}

/* REQ sockets strip the delimiter themselves. */
Hcl__ControlReply *kit_await_reply(hcl_control *c, const hcl_status *st, void *cli, int timeout_ms) {
    double end = hcl_now() + timeout_ms / 1e3;
    while (hcl_now() < end) {
        if (c) control_service(c, st, 1);
        zmq_pollitem_t it = {cli, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, c ? 0 : 5) > 0) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, cli, 0) < 0) { zmq_msg_close(&m); continue; }
            Hcl__ControlReply *r = hcl__control_reply__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
            zmq_msg_close(&m);
            if (r) return r;
        }
    }
    return NULL;
}

Hcl__ControlReply *kit_call(hcl_control *c, const hcl_status *st, void *cli, int type, uint64_t id,
                            const char *key, const char *value) {
    kit_send_request(cli, type, id, key, value, 0);
    return kit_await_reply(c, st, cli, 2000);
}

int kit_await_request(hcl_control *c, const hcl_status *st, ctl_request *rq) {
    double end = hcl_now() + 2;
    while (hcl_now() < end) {
        if (control_next(c, rq)) return 1;
        control_service(c, st, 5);
    }
    return 0;
}

void kit_fake_status(hcl_status *st) {
    control_status_init(st);
    st->state = HCL_RUN_STATE_RUNNING;
    st->step = 1200;
    st->total_steps = 5000;
    st->epoch = 3;
    st->loss = 0.285;
    st->lr = 2e-4;
    st->lr_scale = 0.5;
    st->logit_scale = 22.93;
    st->samples_per_s = 11546;
    st->eta_s = 329;
    st->elapsed_s = 104;
    snprintf(st->last_checkpoint_path, sizeof st->last_checkpoint_path, "ckpt/step-00001000");
    st->last_checkpoint_step = 1000;
    st->log_every = 10;
    st->checkpoint_interval_s = 600;
}

int kit_file_mode(const char *path) {
    struct stat s;
    return stat(path, &s) == 0 ? (int)(s.st_mode & 07777) : -1;
}

int kit_exists(const char *path) {
    struct stat s;
    return lstat(path, &s) == 0;
}

void kit_make_dir(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", control_tmp_root, name);
    HCL_CHECK(mkdir(out, 0755) == 0, "mkdir %s: %s", out, strerror(errno));
}

void kit_read_first_line(const char *path, char *out, size_t cap) {
    out[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    if (fgets(out, (int)cap, f)) out[strcspn(out, "\n")] = 0;
    fclose(f);
}

void kit_write_text(const char *path, const char *text, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    HCL_CHECK(fd >= 0, "create %s", path);
    HCL_CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text), "write %s", path);
    fchmod(fd, mode);
    close(fd);
}

/* Replies to other requests (earlier ones that timed out) are skipped. */
double kit_status_rtt(void *cli, uint64_t id) {
    uint8_t buf[64];
    size_t n = kit_pack_request(buf, RQ_STATUS, id, 1, NULL, NULL, 0);
    double t0 = hcl_now();
    zmq_send(cli, buf, n, 0);
    for (;;) {
        zmq_pollitem_t it = {cli, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 1000) <= 0) return -1;
        zmq_msg_t m;
        zmq_msg_init(&m);
        zmq_msg_recv(&m, cli, 0);
        Hcl__ControlReply *r = hcl__control_reply__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
        zmq_msg_close(&m);
        int mine = r && r->id == id && r->ok && r->body_case == HCL__CONTROL_REPLY__BODY_STATUS;
        kit_free_reply(r);
        if (mine) return hcl_now() - t0;
    }
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
uint64_t kit_rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

int kit_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void kit_rm_rf(const char *path) {
    struct stat s;
    if (lstat(path, &s) != 0) return;
    if (S_ISDIR(s.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char sub[2048];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            kit_rm_rf(sub);
        }
        if (d) closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

void kit_free_reply(Hcl__ControlReply *r) {
    if (r) hcl__control_reply__free_unpacked(r, NULL);
}
