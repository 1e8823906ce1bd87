/* hcl-run_hosts: the hosts of a supervised job (tools/hcl-run.h): the hostfile, the mpirun command
 * built from them, and their health asked over the same remote shell mpirun uses. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hcl-run.h"
#include "util.h"

extern char **environ;

int hcl_run_read_hostfile(const char *path, hcl_run_hosts *h, char *err) {
    memset(h, 0, sizeof *h);
    FILE *f = fopen(path, "r");
    if (!f) return hcl_err(err, "%s: cannot open the hostfile: %s", path, strerror(errno));
    char line[1024];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *name = strtok(line, " \t\r\n"), *tok;
        if (!name) continue;
        int slots = 1;
        while (rc == 0 && (tok = strtok(NULL, " \t\r\n"))) {
            char *end;
            long v = strncmp(tok, "slots=", 6) == 0 ? strtol(tok + 6, &end, 10) : -1;
            if (v < 1 || v > 4096 || *end)
                rc = hcl_err(err, "%s:%d: bad '%s' (want `HOST [slots=N]`, N from 1 to 4096)", path, lineno, tok);
            else slots = (int)v;
        }
        if (rc == 0 && h->n == HCL_RUN_MAX_HOSTS)
            rc = hcl_err(err, "%s:%d: more than %d hosts", path, lineno, HCL_RUN_MAX_HOSTS);
        if (rc == 0) {
            h->name[h->n] = strdup(name);
            h->slots[h->n++] = slots;
            h->total += slots;
        }
    }
    fclose(f);
    if (rc == 0 && h->total < 2) rc = hcl_err(err, "%s: %d slots; a job needs 2 (rank 0 and a worker)", path, h->total);
    return rc;
}

void hcl_run_free_hosts(hcl_run_hosts *h) {
    for (int i = 0; i < h->n; i++) free(h->name[i]);
    h->n = h->total = 0;
}

void hcl_run_hosts_text(const hcl_run_hosts *h, char *out, size_t cap) {
    size_t k = 0;
    out[0] = 0;
    for (int i = 0; i < h->n && k < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, "%s%s:%d", i ? "," : "", h->name[i], h->slots[i]);
}

typedef struct { char **v; int n, cap; } argv_b;

static void push(argv_b *a, const char *s) {
    if (a->n + 2 > a->cap) {
        a->cap = a->cap ? 2 * a->cap : 64;
        a->v = realloc(a->v, sizeof *a->v * (size_t)a->cap);
        if (!a->v) { perror("hcl-run"); exit(1); }
    }
    a->v[a->n++] = strdup(s);
    a->v[a->n] = NULL;
}

static void mca(argv_b *a, const char *k, const char *v) {
    push(a, "--mca");
    push(a, k);
    push(a, v);
}

/* Variables the ranks need as on this host: forwarded by name (-x). */
static int forwarded(const char *e) {
    static const char *prefix[] = {"HCL_", "OPENBLAS_", "OMP_", "DNNL_", "ONEDNN_", "LD_LIBRARY_PATH=", "PATH=", NULL};
    for (int i = 0; prefix[i]; i++)
        if (strncmp(e, prefix[i], strlen(prefix[i])) == 0) return 1;
    return 0;
}

char **hcl_run_mpirun_argv(const hcl_run_opts *o, const hcl_run_hosts *h, int resume) {
    argv_b a = {0};
    char buf[16384], np[16];
    push(&a, "mpirun");
    snprintf(np, sizeof np, "%d", h->total);
    push(&a, "-np");
    push(&a, np);
    hcl_run_hosts_text(h, buf, sizeof buf);
    push(&a, "--host");
    push(&a, buf);
    /* slot order: rank 0 on the first host's first slot; no binding: hcl-train sizes its threads
     * per node, and bound ranks of an oversubscribed host would share one core */
    push(&a, "--map-by");
    push(&a, "slot");
    push(&a, "--bind-to");
    push(&a, "none");
    if (geteuid() == 0) push(&a, "--allow-run-as-root");
    /* a lost host ends mpirun within ~10 s once its connection idles, not after TCP's 2 hours */
    mca(&a, "oob_tcp_keepalive_time", "3");
    mca(&a, "oob_tcp_keepalive_intvl", "2");
    mca(&a, "oob_tcp_keepalive_probes", "3");
    if (o->iface) {
        mca(&a, "btl_tcp_if_include", o->iface);
        mca(&a, "oob_tcp_if_include", o->iface);
    }
    for (char **e = environ; *e; e++)
        if (forwarded(*e)) {
            size_t n = strcspn(*e, "=");
            snprintf(buf, sizeof buf, "%.*s", (int)n, *e);
            push(&a, "-x");
            push(&a, buf);
        }
    int has_resume = 0;
    for (int i = 0; i < o->nprog; i++) {
        push(&a, o->prog[i]);
        has_resume |= strcmp(o->prog[i], "--resume") == 0;
    }
    if (resume && !has_resume) {
        push(&a, "--resume");
        push(&a, "auto");
    }
    return a.v;
}

void hcl_run_free_argv(char **argv) {
    for (char **p = argv; p && *p; p++) free(*p);
    free(argv);
}

/* `AGENT [ARGS] HOST true` within 10 s: 1 when it answered. */
static int host_answers(const char *host) {
    char me[256] = "";
    gethostname(me, sizeof me - 1);
    if (!strcmp(host, me) || !strcmp(host, "localhost") || !strcmp(host, "127.0.0.1")) return 1;
    const char *agent = getenv("OMPI_MCA_plm_rsh_agent");
    const char *args = getenv("OMPI_MCA_plm_rsh_args");
    char ab[2048], *av[64];
    int n = 0;
    snprintf(ab, sizeof ab, "%s %s", agent && *agent ? agent : "ssh", args ? args : "");
    for (char *t = strtok(ab, " \t"); t && n < 58; t = strtok(NULL, " \t")) av[n++] = t;
    if (strstr(av[0], "ssh")) {   /* never ask for a password, never wait long */
        av[n++] = "-o";
        av[n++] = "BatchMode=yes";
        av[n++] = "-o";
        av[n++] = "ConnectTimeout=5";
    }
    av[n++] = (char *)host;
    av[n++] = "true";
    av[n] = NULL;
    pid_t p = fork();
    if (p < 0) return 0;
    if (p == 0) {
        int dn = open("/dev/null", 0);
        if (dn >= 0) { dup2(dn, 0); dup2(dn, 1); dup2(dn, 2); }
        execvp(av[0], av);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) {
        int st;
        if (waitpid(p, &st, WNOHANG) == p) return WIFEXITED(st) && WEXITSTATUS(st) == 0;
        usleep(100000);
    }
    kill(p, SIGKILL);
    waitpid(p, NULL, 0);
    return 0;
}

int hcl_run_drop_dead(hcl_run_hosts *h, char *why, size_t cap) {
    int kept = 0, dropped = 0;
    size_t k = 0;
    why[0] = 0;
    for (int i = 0; i < h->n; i++) {
        if (host_answers(h->name[i])) {
            h->name[kept] = h->name[i];
            h->slots[kept++] = h->slots[i];
            continue;
        }
        k += (size_t)snprintf(why + k, k < cap ? cap - k : 0, "%shost %s does not answer: dropped",
                              dropped ? "; " : "", h->name[i]);
        if (k >= cap) k = cap - 1;
        h->total -= h->slots[i];
        free(h->name[i]);
        dropped++;
    }
    h->n = kept;
    return dropped;
}
