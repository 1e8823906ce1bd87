/* control_bind: where the control and watch sockets listen (control.h, "Endpoints"): the
 * endpoint's kind, ipc sockets bound owner-only (refused where another job listens, moved to
 * /tmp/hcl-UID when the run directory cannot hold them), tcp binds (the watch socket on
 * --watch-port), the name of this host other hosts reach for a wildcard bind, and the
 * RUN_DIR/control.endpoint file that tells hclctl where to connect. */
#include "control_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

#include "log.h"
#include "util.h"

/* A tcp host that only this machine can reach: localhost, [::1], 127.A.B.C. */
static int host_is_loopback(const char *host) {
    if (strncmp(host, "127.", 4) == 0) {
        unsigned a, b, d;
        char extra;
        return sscanf(host + 4, "%u.%u.%u%c", &a, &b, &d, &extra) == 3 && a < 256 && b < 256 && d < 256;
    }
    return strcmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0;
}

int control_endpoint_kind(const char *ep, enum control_ep_kind *kind, char *host, size_t hostcap,
                          char *err) {
    if (strncmp(ep, "ipc://", 6) == 0) {
        if (ep[6] != '/') return hcl_err(err, "%s: an ipc endpoint needs an absolute path", ep);
        if (strlen(ep + 6) > CONTROL_IPC_PATH_MAX)
            return hcl_err(err, "%s: the path is %zu bytes, over the %d-byte limit of a unix socket",
                           ep, strlen(ep + 6), CONTROL_IPC_PATH_MAX);
        *kind = CONTROL_EP_IPC;
        return 0;
    }
    if (strncmp(ep, "tcp://", 6) != 0)
        return hcl_err(err, "%s: not an ipc:// or tcp:// endpoint", ep);
    const char *hp = ep + 6;
    const char *colon = strrchr(hp, ':');
    if (!colon || colon == hp || !colon[1] || (hp[0] == '[' && colon[-1] != ']'))
        return hcl_err(err, "%s: want tcp://HOST:PORT", ep);
    size_t hl = (size_t)(colon - hp);
    if (hl >= hostcap) return hcl_err(err, "%s: host name too long", ep);
    memcpy(host, hp, hl);
    host[hl] = 0;
    const char *port = colon + 1;
    if (strcmp(port, "*") != 0) {
        char *end;
        errno = 0;
        long p = strtol(port, &end, 10);
        if (*end || errno || p < 0 || p > 65535) return hcl_err(err, "%s: bad port '%s'", ep, port);
    }
    *kind = host_is_loopback(host) ? CONTROL_EP_TCP_LOCAL : CONTROL_EP_TCP_OPEN;
    return 0;
}

/* ---- ipc ----------------------------------------------------------------------------------- */

/* Refuse an ipc path where a process is listening (ZeroMQ would unlink it and take over). */
static int ipc_check_free(const char *path, char *err) {
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return hcl_err(err, "socket(AF_UNIX): %s", strerror(errno));
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    close(fd);
    if (rc == 0)
        return hcl_err(err, "%s: another process is listening there (a second job in the same run "
                       "directory?)", path);
    return 0;
}

/* Bind an ipc socket owner-only: umask 077 around the bind (umask is per process: the
 * coordinator binds before it starts other threads' work), then chmod 0600 and a check.
 * Returns 0, -2 when another process listens on path, -1 on other errors. */
static int bind_ipc(hcl_control *c, void *s, const char *path, char *err) {
    if (ipc_check_free(path, err) != 0) return -2;
    char ep[CONTROL_ENDPOINT_MAX];
    snprintf(ep, sizeof ep, "ipc://%s", path);
    mode_t old = umask(077);
    int rc = zmq_bind(s, ep);
    int e = zmq_errno();
    umask(old);
    if (rc != 0) return hcl_err(err, "%s: bind: %s", ep, zmq_strerror(e));
    struct stat st;
    if (chmod(path, 0600) != 0 || stat(path, &st) != 0 || (st.st_mode & 077)) {
        hcl_err(err, "%s: cannot make the socket owner-only: %s", path, strerror(errno));
        zmq_unbind(s, ep);
        unlink(path);
        return -1;
    }
    /* ZeroMQ leaves the socket file behind when it closes: control_close removes it. */
    snprintf(c->ipc_path[c->nipc], sizeof c->ipc_path[0], "%s", path);
    c->ipc_dev[c->nipc] = st.st_dev;
    c->ipc_ino[c->nipc] = st.st_ino;
    c->nipc++;
    return 0;
}

/* The control socket on path, the watch socket on wpath. */
static int bind_ipc_pair(hcl_control *c, const char *path, const char *wpath, char *err) {
    return bind_ipc(c, c->router, path, err) == 0 && bind_ipc(c, c->pub, wpath, err) == 0 ? 0 : -1;
}

void control_remove_ipc_files(hcl_control *c) {
    for (int i = 0; i < c->nipc; i++) {
        struct stat st;
        if (lstat(c->ipc_path[i], &st) == 0 && st.st_dev == c->ipc_dev[i] && st.st_ino == c->ipc_ino[i])
            unlink(c->ipc_path[i]);
    }
}

/* /tmp/hcl-UID, mode 0700, ours. */
static int private_dir(char *dir, size_t cap, char *err) {
    snprintf(dir, cap, "/tmp/hcl-%u", (unsigned)getuid());
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return hcl_err(err, "%s: mkdir: %s", dir, strerror(errno));
    struct stat st;
    if (lstat(dir, &st) != 0) return hcl_err(err, "%s: lstat: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 077))
        return hcl_err(err, "%s: not a private directory of this user (owner %u, mode %04o); remove "
                       "it or pass a control endpoint", dir, (unsigned)st.st_uid,
                       (unsigned)(st.st_mode & 07777));
    return 0;
}

/* RUN_DIR/control.sock and RUN_DIR/watch.sock; in /tmp/hcl-UID when the path is too long for a
 * unix socket or the run directory's file system cannot hold one. */
static int bind_default(hcl_control *c, char *err) {
    char path[PATH_MAX + 32], wpath[PATH_MAX + 32], why[PATH_MAX + HCL_ERR_MAX];
    snprintf(path, sizeof path, "%s/control.sock", c->run_dir);
    snprintf(wpath, sizeof wpath, "%s/watch.sock", c->run_dir);
    if (strlen(path) > CONTROL_IPC_PATH_MAX) {
        snprintf(why, sizeof why, "%s: %zu bytes, over the %d-byte limit of a unix socket path", path,
                 strlen(path), CONTROL_IPC_PATH_MAX);
    } else {
        int rc = bind_ipc(c, c->router, path, err);
        if (rc == 0) return bind_ipc(c, c->pub, wpath, err) == 0 ? 0 : -1;
        if (rc == -2) return -1;   /* another job: refuse, never hide beside it */
        snprintf(why, sizeof why, "%s", err);
    }
    char dir[64];
    if (private_dir(dir, sizeof dir, err) != 0) return -1;
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r = (uint32_t)(hcl_now() * 1e6);
    snprintf(path, sizeof path, "%s/ctl-%d-%08x.sock", dir, (int)getpid(), r);
    snprintf(wpath, sizeof wpath, "%s/watch-%d-%08x.sock", dir, (int)getpid(), r);
    LOG_WARN("%s; the control socket is %s instead (written to %s)", why, path, c->endpoint_file);
    return bind_ipc_pair(c, path, wpath, err);
}

/* An explicit ipc://PATH: the watch socket on PATH.watch. */
static int bind_explicit_ipc(hcl_control *c, const char *endpoint, char *err) {
    char wpath[PATH_MAX + 16];
    snprintf(wpath, sizeof wpath, "%s.watch", endpoint + 6);
    if (strlen(wpath) > CONTROL_IPC_PATH_MAX) return hcl_err(err, "%s: too long for the watch socket", wpath);
    return bind_ipc_pair(c, endpoint + 6, wpath, err);
}

/* ---- tcp ----------------------------------------------------------------------------------- */

/* A tcp host that binds every interface: *, 0.0.0.0, [::] (or [::0], ...). */
int control_host_is_wildcard(const char *host) {
    char a[INET6_ADDRSTRLEN];
    size_t n = strlen(host);
    if (!strcmp(host, "*")) return 1;
    if (host[0] == '[' && n >= 2 && n - 2 < sizeof a && host[n - 1] == ']') {
        struct in6_addr v6;
        memcpy(a, host + 1, n - 2);
        a[n - 2] = 0;
        return inet_pton(AF_INET6, a, &v6) == 1 && IN6_IS_ADDR_UNSPECIFIED(&v6);
    }
    struct in_addr v4;
    return inet_pton(AF_INET, host, &v4) == 1 && v4.s_addr == htonl(INADDR_ANY);
}

/* The first address of an interface that is up and not loopback: IPv4 first, then IPv6 (not
 * link-local), in brackets. Returns 0, or -1 when there is none. */
static int first_address(char *out, size_t cap) {
    struct ifaddrs *ifs;
    if (getifaddrs(&ifs) != 0) return -1;
    int found = -1;
    for (int fam = 0; fam < 2 && found != 0; fam++) {
        for (struct ifaddrs *i = ifs; i && found != 0; i = i->ifa_next) {
            if (!i->ifa_addr || !(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK)) continue;
            char a[INET6_ADDRSTRLEN];
            if (fam == 0 && i->ifa_addr->sa_family == AF_INET) {
                inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, a, sizeof a);
                found = snprintf(out, cap, "%s", a) < (int)cap ? 0 : -1;
            } else if (fam == 1 && i->ifa_addr->sa_family == AF_INET6) {
                const struct in6_addr *v6 = &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr;
                if (IN6_IS_ADDR_LINKLOCAL(v6) || IN6_IS_ADDR_LOOPBACK(v6)) continue;
                inet_ntop(AF_INET6, v6, a, sizeof a);
                found = snprintf(out, cap, "[%s]", a) < (int)cap ? 0 : -1;
            }
        }
    }
    freeifaddrs(ifs);
    return found;
}

int control_reachable_host(char *out, size_t cap, char *err) {
    char name[256];
    if (gethostname(name, sizeof name) != 0) return hcl_err(err, "gethostname: %s", strerror(errno));
    name[sizeof name - 1] = 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(name, NULL, &hints, &res) == 0) {
        freeaddrinfo(res);
        if (snprintf(out, cap, "%s", name) < (int)cap) return 0;
    }
    if (first_address(out, cap) == 0) return 0;
    return hcl_err(err, "this host's name '%s' does not resolve and it has no address but loopback: "
                   "name an address in the endpoint instead of a wildcard", name);
}

/* tcp://HOST:PORT, and the watch socket on the same host at watch_port (0: any free port). */
static int bind_tcp(hcl_control *c, const char *endpoint, const char *host0, int watch_port, char *err) {
    /* ZeroMQ binds addresses and interface names, not host names: localhost is 127.0.0.1. */
    char host[CONTROL_ENDPOINT_MAX], bep[CONTROL_ENDPOINT_MAX + 16], wep[CONTROL_ENDPOINT_MAX + 24];
    snprintf(host, sizeof host, "%s", host0);
    if (!strcmp(host, "localhost")) {
        snprintf(host, sizeof host, "127.0.0.1");
        snprintf(bep, sizeof bep, "tcp://127.0.0.1%s", strrchr(endpoint, ':'));
        endpoint = bep;
    }
    if (watch_port > 0) snprintf(wep, sizeof wep, "tcp://%s:%d", host, watch_port);
    else snprintf(wep, sizeof wep, "tcp://%s:*", host);
    if (zmq_bind(c->router, endpoint) != 0)
        return hcl_err(err, "%s: bind: %s", endpoint, zmq_strerror(zmq_errno()));
    if (zmq_bind(c->pub, wep) != 0) {
        if (watch_port > 0)
            return hcl_err(err, "--watch-port %d: %s: bind: %s", watch_port, wep, zmq_strerror(zmq_errno()));
        return hcl_err(err, "%s: bind (watch): %s", wep, zmq_strerror(zmq_errno()));
    }
    snprintf(c->tcp_host, sizeof c->tcp_host, "%s", host);
    return 0;
}

/* A wildcard bind (*, 0.0.0.0, [::]): what the clients get (control.endpoint, the watch
 * endpoint) names this host instead, which other hosts can connect to. */
static int name_wildcard(hcl_control *c, char *err) {
    char name[CONTROL_ENDPOINT_MAX];
    if (control_reachable_host(name, sizeof name, err) != 0) return -1;
    char *eps[2] = {c->endpoint, c->watch_endpoint};
    for (int i = 0; i < 2; i++) {
        char tmp[CONTROL_ENDPOINT_MAX];
        const char *port = strrchr(eps[i], ':');
        if (!port || snprintf(tmp, sizeof tmp, "tcp://%s%s", name, port) >= (int)sizeof tmp)
            return hcl_err(err, "%s: cannot name this host (%s) in it", eps[i], name);
        snprintf(eps[i], CONTROL_ENDPOINT_MAX, "%s", tmp);
    }
    return 0;
}

/* ---- all of it ------------------------------------------------------------------------------ */

/* Line 1 the endpoint; with CURVE a second line `curve-server-key Z85PUBLIC`. */
static int write_endpoint_file(hcl_control *c, char *err) {
    char text[CONTROL_ENDPOINT_MAX + 80];
    int n = snprintf(text, sizeof text, "%s\n", c->endpoint);
    if (c->curve) n += snprintf(text + n, sizeof text - (size_t)n, "curve-server-key %s\n", c->server_public);
    return hcl_write_file_durable(c->endpoint_file, text, (size_t)n, err);
}

int control_bind(hcl_control *c, const char *endpoint, enum control_ep_kind kind, const char *host,
                 int watch_port, char *err) {
    if (watch_port && (!endpoint || kind == CONTROL_EP_IPC))
        return hcl_err(err, "--watch-port %d: the watch socket is on a tcp port only with a tcp --control "
                       "endpoint (this one is %s)", watch_port, endpoint ? endpoint : "the run directory's ipc socket");
    int rc;
    if (!endpoint) rc = bind_default(c, err);
    else if (kind == CONTROL_EP_IPC) rc = bind_explicit_ipc(c, endpoint, err);
    else rc = bind_tcp(c, endpoint, host, watch_port, err);
    if (rc != 0) return -1;
    control_last_endpoint(c->router, c->endpoint, sizeof c->endpoint);
    control_last_endpoint(c->pub, c->watch_endpoint, sizeof c->watch_endpoint);
    snprintf(c->bound_endpoint, sizeof c->bound_endpoint, "%s", c->endpoint);
    if (kind != CONTROL_EP_IPC && control_host_is_wildcard(host) && name_wildcard(c, err) != 0) return -1;
    return write_endpoint_file(c, err);
}
