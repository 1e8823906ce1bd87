/* evaluate: see evaluate.h. */
#include "evaluate.h"

#include <errno.h>
#include <limits.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "eval.h"
#include "util.h"

extern char **environ;

int evaluator_init(hcl_evaluator *ev, const hcl_model_config *mc, const hcl_dataset *val,
                   int64_t rows, char *err) {
    memset(ev, 0, sizeof *ev);
    if (model_init(&ev->model, mc, 0, err) != 0) return -1;
    ev->rows = *val;                        /* shallow: the mappings stay the run's */
    if (rows > 0 && rows < ev->rows.n) ev->rows.n = rows;
    ev->json_cap = 16384;
    ev->json = hcl_malloc(ev->json_cap);
    ev->json[0] = 0;
    return 0;
}

void evaluator_free(hcl_evaluator *ev) {
    if (ev->running) pthread_join(ev->thread, NULL);
    if (ev->model.params) model_free(&ev->model);
    free(ev->json);
    memset(ev, 0, sizeof *ev);
}

typedef struct { char *p; size_t len, cap; } sbuf;

static void put(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n > 0) b->len += (size_t)n < b->cap - b->len ? (size_t)n : b->cap - b->len - 1;
}

static void evaluate_now(hcl_evaluator *ev) {
    sbuf b = {ev->json, 0, ev->json_cap};
    char err[HCL_ERR_MAX];
    eval_embeddings e;
    memset(&e, 0, sizeof e);
    if (eval_embed_dataset(&e, &ev->model, &ev->rows, 512, 0, err) != 0) {
        put(&b, "{\"step\": %lld, \"eval\": {\"error\": \"embedding failed\"}}\n", (long long)ev->step);
        return;
    }
    const int V = e.nviews, D = e.width[0];
    const int64_t n = e.n, half = n / 2;
    put(&b, "{\"step\": %lld, \"eval\": {\"rows\": %lld", (long long)ev->step, (long long)n);
    if (e.labels && half > 0) {
        /* kNN: bank = first half, queries = second half; per view on rows present there */
        for (int v = 0; v <= V; v++) {
            const float *z = v < V ? e.z[v] : e.fused;
            if (!z) continue;
            const char *name = v < V ? e.names[v] : "fused";
            /* rows present in this view (fused: any view) */
            float *bank = hcl_floats((size_t)n * D), *qry = hcl_floats((size_t)n * D);
            int32_t *yb = hcl_malloc(sizeof(int32_t) * (size_t)n), *yq = hcl_malloc(sizeof(int32_t) * (size_t)n);
            int64_t nb = 0, nq = 0;
            for (int64_t i = 0; i < n; i++) {
                int present = 1;
                if (e.mask) {
                    present = 0;
                    for (int u = 0; u < V; u++)
                        if ((v == V || u == v) && e.mask[i * V + u]) present = 1;
                }
                if (!present || e.labels[i] < 0) continue;
                if (i < half) { memcpy(bank + nb * D, z + i * D, sizeof(float) * D); yb[nb++] = e.labels[i]; }
                else { memcpy(qry + nq * D, z + i * D, sizeof(float) * D); yq[nq++] = e.labels[i]; }
            }
            if (nb > 0 && nq > 0)
                put(&b, ", \"knn_%s\": %.6f", name,
                    eval_knn_accuracy(bank, yb, nb, qry, yq, nq, D, e.nclasses, EVAL_KNN_K));
            free(bank); free(qry); free(yb); free(yq);
        }
    }
    put(&b, ", \"retrieval\": {");
    int first = 1;
    for (int i = 0; i < V; i++)
        for (int j = i + 1; j < V; j++) {
            uint8_t *pi = eval_mask_column(e.mask, V, i, n), *pj = eval_mask_column(e.mask, V, j, n);
            eval_recall ab, ba;
            eval_retrieval(&ab, &ba, e.z[i], e.z[j], pi, pj, n, D);
            put(&b, "%s\"%s>%s\": {\"r1\": %.6f, \"r5\": %.6f, \"r10\": %.6f}, \"%s>%s\": {\"r1\": %.6f, "
                "\"r5\": %.6f, \"r10\": %.6f}", first ? "" : ", ", e.names[i], e.names[j], ab.r1, ab.r5,
                ab.r10, e.names[j], e.names[i], ba.r1, ba.r5, ba.r10);
            first = 0;
            free(pi);
            free(pj);
        }
    put(&b, "}, \"alignment\": {");
    first = 1;
    for (int i = 0; i < V; i++)
        for (int j = i + 1; j < V; j++) {
            uint8_t *pi = eval_mask_column(e.mask, V, i, n), *pj = eval_mask_column(e.mask, V, j, n);
            put(&b, "%s\"%s:%s\": %.6f", first ? "" : ", ", e.names[i], e.names[j],
                eval_alignment(e.z[i], e.z[j], pi, pj, n, D));
            first = 0;
            free(pi);
            free(pj);
        }
    put(&b, "}, \"uniformity\": {");
    for (int v = 0; v < V; v++) {
        uint8_t *pv = eval_mask_column(e.mask, V, v, n);
        put(&b, "%s\"%s\": %.6f", v ? ", " : "", e.names[v], eval_uniformity(e.z[v], pv, n, D, 0));
        free(pv);
    }
    put(&b, "}}}\n");
    eval_embeddings_free(&e);
}

static void *evaluator_thread(void *arg) {
    hcl_evaluator *ev = arg;
    evaluate_now(ev);
    ev->done = 1;
    return NULL;
}

int evaluator_start(hcl_evaluator *ev, const float *params, int64_t step, int threaded) {
    if (ev->running || ev->done) return -1;   /* the caller takes the previous one first */
    memcpy(ev->model.params, params, sizeof(float) * (size_t)ev->model.nparams);
    ev->step = step;
    ev->done = 0;
    if (!threaded) {
        evaluate_now(ev);
        ev->done = 1;
        return 0;
    }
    HCL_CHECK(pthread_create(&ev->thread, NULL, evaluator_thread, ev) == 0, "pthread_create (evaluator)");
    ev->running = 1;
    return 0;
}

const char *evaluator_poll(hcl_evaluator *ev, int wait) {
    if (ev->running) {
        if (!ev->done && !wait) return NULL;
        pthread_join(ev->thread, NULL);
        ev->running = 0;
    }
    if (!ev->done) return NULL;
    ev->done = 0;
    return ev->json;
}

char *evaluate_final(const char *checkpoint, const char *train, const char *val, int threads, char *err) {
    char exe[PATH_MAX], tool[PATH_MAX + 16], th[16];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) { hcl_err(err, "/proc/self/exe: %s", strerror(errno)); return NULL; }
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    snprintf(tool, sizeof tool, "%s/hcl-eval", exe);
    snprintf(th, sizeof th, "%d", threads);
    char *argv[] = {tool, "--checkpoint", (char *)checkpoint, "--train", (char *)train, "--test",
                    (char *)val, "--json", "--threads", th, NULL};
    int fd[2];
    if (pipe(fd) != 0) { hcl_err(err, "pipe: %s", strerror(errno)); return NULL; }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd[1], 1);
    posix_spawn_file_actions_addclose(&fa, fd[0]);
    pid_t pid;
    int rc = posix_spawn(&pid, tool, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fd[1]);
    if (rc != 0) {
        close(fd[0]);
        hcl_err(err, "%s: cannot start: %s", tool, strerror(rc));
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *out = hcl_malloc(cap);
    for (;;) {
        if (len + 4096 > cap) {
            cap *= 2;
            out = realloc(out, cap);
            HCL_CHECK(out, "out of memory");
        }
        ssize_t r = read(fd[0], out + len, cap - len - 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        len += (size_t)r;
    }
    close(fd[0]);
    out[len] = 0;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || len == 0) {
        free(out);
        hcl_err(err, "%s exited with status %d", tool, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        return NULL;
    }
    while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == ' ')) out[--len] = 0;
    return out;
}
