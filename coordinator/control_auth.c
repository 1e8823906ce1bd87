/* control_auth: who may talk to the control plane (control.h, "CURVE" and "Telemetry
 * security"). Reads the server's secret key file and the authorised client keys, and serves
 * ZeroMQ's ZAP handler (inproc://zeromq.zap.01), which answers every CURVE handshake: on the
 * control and watch sockets a listed client key, on the telemetry socket the job's one worker
 * key; everything else is refused (the client gets no answer at all). */
#include "control_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "log.h"
#include "util.h"

#define MAX_CLIENT_KEYS 4096

/* ---- key files ------------------------------------------------------------------------------ */

static int read_small_file(const char *path, char *buf, size_t cap, struct stat *st, char *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return hcl_err(err, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, st) != 0) {
        int e = errno;
        close(fd);
        return hcl_err(err, "%s: fstat: %s", path, strerror(e));
    }
    size_t n;
    char *text = hcl_read_fd(fd, path, cap - 2, &n, err);   /* the one whole-file read (util.h) */
    close(fd);
    if (!text) return -1;
    memcpy(buf, text, n + 1);
    free(text);
    return 0;
}

/* The first word of the next line that is not blank or a comment (`#` first); NULL at the end. *pos
 * advances; *lineno counts lines. The token is NUL-terminated in place. */
static char *next_key_token(char **pos, int *lineno) {
    char *p = *pos;
    while (p && *p) {
        char *eol = strchr(p, '\n');
        char *next = eol ? eol + 1 : p + strlen(p);
        if (eol) *eol = 0;
        (*lineno)++;
        while (*p == ' ' || *p == '\t' || *p == '\r') p++;
        if (*p && *p != '#') {
            char *e = p;
            while (*e && *e != ' ' && *e != '\t' && *e != '\r') e++;   /* '#' is a Z85 digit */
            *e = 0;
            *pos = next;
            return p;
        }
        p = next;
    }
    *pos = p;
    return NULL;
}

static int z85_key(const char *tok, uint8_t out[32]) {
    return strlen(tok) == 40 && zmq_z85_decode(out, tok) != NULL;
}

static int load_secret(const char *path, char secret[CONTROL_KEY_Z85], char *err) {
    char buf[4096];
    struct stat st;
    if (read_small_file(path, buf, sizeof buf, &st, err) != 0) return -1;
    if (st.st_mode & 077)
        return hcl_err(err, "%s: mode %04o lets other users read the secret key (chmod 600 %s)",
                       path, (unsigned)(st.st_mode & 07777), path);
    char *pos = buf;
    int line = 0;
    char *tok = next_key_token(&pos, &line);
    uint8_t raw[32];
    if (!tok) return hcl_err(err, "%s: no key (want one Z85 secret key of 40 characters)", path);
    if (!z85_key(tok, raw)) {
        char t[64];
        control_clean_text(t, sizeof t, tok);
        return hcl_err(err, "%s:%d: not a Z85 secret key: '%s'", path, line, t);
    }
    memcpy(secret, tok, 41);
    memset(buf, 0, sizeof buf);
    return 0;
}

static int load_clients(hcl_control *c, const char *path, char *err) {
    enum { CAP = MAX_CLIENT_KEYS * 64 + 4096 };
    char *buf = hcl_malloc(CAP);
    struct stat st;
    if (read_small_file(path, buf, CAP, &st, err) != 0) { free(buf); return -1; }
    c->clients = hcl_calloc(MAX_CLIENT_KEYS, 32);
    char *pos = buf, *tok;
    int line = 0;
    while ((tok = next_key_token(&pos, &line))) {
        if (c->nclients == MAX_CLIENT_KEYS) {
            free(buf);
            return hcl_err(err, "%s: more than %d client keys", path, MAX_CLIENT_KEYS);
        }
        if (!z85_key(tok, c->clients[c->nclients])) {
            char t[64];
            control_clean_text(t, sizeof t, tok);
            free(buf);
            return hcl_err(err, "%s:%d: not a Z85 public key: '%s'", path, line, t);
        }
        c->nclients++;
    }
    free(buf);
    if (!c->nclients) return hcl_err(err, "%s: no client keys (one Z85 public key per line)", path);
    return 0;
}

int control_auth_load(hcl_control *c, const char *secret_file, const char *clients_file,
                      char secret[CONTROL_KEY_Z85], char *err) {
    if (load_secret(secret_file, secret, err) != 0 || load_clients(c, clients_file, err) != 0)
        return -1;
    HCL_CHECK(zmq_curve_public(c->server_public, secret) == 0, "zmq_curve_public: %s",
              zmq_strerror(zmq_errno()));
    c->curve = 1;
    return 0;
}

/* ---- ZAP: which CURVE keys may connect ------------------------------------------------------ */

static int zap_allowed(const hcl_control *c, const zmq_msg_t *f, int nf) {
    /* version, request id, domain, address, identity, mechanism, credentials... */
    if (nf < 7 || zmq_msg_size(&f[0]) != 3 || memcmp(zmq_msg_data((zmq_msg_t *)&f[0]), "1.0", 3))
        return 0;
    size_t dl = zmq_msg_size(&f[2]), ml = zmq_msg_size(&f[5]);
    const char *dom = zmq_msg_data((zmq_msg_t *)&f[2]), *mech = zmq_msg_data((zmq_msg_t *)&f[5]);
    if (ml != 5 || memcmp(mech, "CURVE", 5) || zmq_msg_size(&f[6]) != 32) return 0;
    const uint8_t *key = zmq_msg_data((zmq_msg_t *)&f[6]);
    if (dl == strlen(CONTROL_ZAP_DOMAIN) && !memcmp(dom, CONTROL_ZAP_DOMAIN, dl)) {
        for (int i = 0; i < c->nclients; i++)
            if (!memcmp(key, c->clients[i], 32)) return 1;
        return 0;
    }
    if (dl == strlen(CONTROL_ZAP_DOMAIN_TELEMETRY) && !memcmp(dom, CONTROL_ZAP_DOMAIN_TELEMETRY, dl))
        return c->workers && !memcmp(key, c->telemetry_client, 32);
    return 0;
}

int control_zap_one(hcl_control *c) {
    enum { KEEP = 8 };
    zmq_msg_t f[KEEP];
    int nf = 0;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, c->zap, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            break;
        }
        int more = zmq_msg_more(&m);
        if (nf < KEEP) f[nf++] = m;
        else zmq_msg_close(&m);
        if (!more) break;
    }
    if (!nf) return 0;
    int ok = zap_allowed(c, f, nf);
    /* REP must answer every request to stay in step. */
    zmq_send(c->zap, "1.0", 3, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    if (nf >= 2) zmq_send(c->zap, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE | ZMQ_DONTWAIT);
    else zmq_send(c->zap, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(c->zap, ok ? "200" : "400", 3, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    const char *text = ok ? "OK" : "key not allowed";
    zmq_send(c->zap, text, strlen(text), ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(c->zap, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(c->zap, "", 0, ZMQ_DONTWAIT);
    if (!ok) LOG_DEBUG("control: refused a CURVE client");
    for (int i = 0; i < nf; i++) zmq_msg_close(&f[i]);
    return 1;
}
