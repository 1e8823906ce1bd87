/* evaluate: see evaluate.h. */
#include "evaluate.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "eval.h"
#include "json.h"
#include "util.h"

extern char **environ;

int evaluator_init(hcl_evaluator *ev, const hcl_model_config *mc, const hcl_dataset *val,
                   int64_t rows, char *err) {
    memset(ev, 0, sizeof *ev);
    if (model_init(&ev->model, mc, 0, err) != 0) return -1;
    ev->rows = *val;                        /* shallow: the mappings stay the run's */
    if (rows > 0 && rows < ev->rows.n) ev->rows.n = rows;
    json_init(&ev->json);
    return 0;
}

void evaluator_free(hcl_evaluator *ev) {
    if (ev->running) pthread_join(ev->thread, NULL);
    if (ev->model.params) model_free(&ev->model);
    json_free(&ev->json);
    free(ev->line);
    memset(ev, 0, sizeof *ev);
}

/* The pass's numbers under the keys of a metrics.jsonl eval line: knn_<view>, knn_fused,
 * retrieval {"a>b": {r1, r5, r10}}, alignment {"a:b"}, uniformity {view}. */
static void eval_json(hcl_json *j, const eval_pass *p, const eval_embeddings *e) {
    char key[2 * HCL_NAME_MAX + 8];
    for (int i = 0; i < p->nreps; i++)
        if (p->rep[i].knned && isfinite(p->rep[i].knn)) {   /* a split without rows: no key */
            snprintf(key, sizeof key, "knn_%s", p->rep[i].name);
            json_number(j, key, p->rep[i].knn);
        }
    json_begin_object(j, "retrieval");
    for (int k = 0; k < p->npairs; k++)
        for (int dir = 0; dir < 2; dir++) {
            const eval_pair *q = &p->pair[k];
            const eval_recall *rc = dir ? &q->ji : &q->ij;
            snprintf(key, sizeof key, "%s>%s", e->names[dir ? q->j : q->i], e->names[dir ? q->i : q->j]);
            json_begin_object(j, key);
            json_number(j, "r1", rc->r1);
            json_number(j, "r5", rc->r5);
            json_number(j, "r10", rc->r10);
            json_end_object(j);
        }
    json_end_object(j);
    json_begin_object(j, "alignment");
    for (int k = 0; k < p->npairs; k++) {
        snprintf(key, sizeof key, "%s:%s", e->names[p->pair[k].i], e->names[p->pair[k].j]);
        json_number(j, key, p->pair[k].alignment);
    }
    json_end_object(j);
    json_begin_object(j, "uniformity");
    for (int v = 0; v < e->nviews; v++) json_number(j, e->names[v], p->uniformity[v]);
    json_end_object(j);
}

/* The evaluation pass of hcl-eval (common/eval.h) on the validation rows: kNN with the first half
 * as the bank and the second half as queries, per view and fused; the geometry on all rows. */
static void evaluate_now(hcl_evaluator *ev) {
    hcl_json *j = &ev->json;
    char err[HCL_ERR_MAX];
    eval_embeddings e;
    json_reset(j);
    json_begin_object(j, NULL);
    json_int(j, "step", ev->step);
    json_begin_object(j, "eval");
    if (eval_embed_dataset(&e, &ev->model, &ev->rows, 512, 0, err) != 0) {
        json_string(j, "error", "embedding failed");
    } else {
        const int64_t n = e.n, half = n / 2;
        eval_embeddings bank, queries;
        eval_embeddings_rows(&bank, &e, 0, half);
        eval_embeddings_rows(&queries, &e, half, n);
        eval_pass p;
        eval_pass_init(&p, &bank, &queries, 0, &e);
        for (int i = 0; i < p.nreps; i++) p.rep[i].do_knn = e.labels && half > 0;
        eval_pass_options o;
        eval_pass_options_default(&o);
        o.fused_uniformity = 0;
        HCL_CHECK(eval_pass_run(&p, &o, err) == 0, "evaluation pass: %s", err);   /* no probe: no error */
        json_int(j, "rows", n);
        eval_json(j, &p, &e);
        eval_pass_free(&p);
        eval_embeddings_free(&e);
    }
    json_end_object(j);
    json_end_object(j);
    size_t len = json_len(j);
    if (len + 2 > ev->line_cap) {
        free(ev->line);
        ev->line_cap = 2 * len + 2;
        ev->line = hcl_malloc(ev->line_cap);
    }
    memcpy(ev->line, json_text(j), len);
    memcpy(ev->line + len, "\n", 2);
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
    return ev->line;
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
    size_t len = 0;
    char *out = hcl_read_fd(fd[0], tool, (size_t)1 << 30, &len, err);
    close(fd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (!out) return NULL;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || len == 0) {
        free(out);
        hcl_err(err, "%s exited with status %d", tool, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        return NULL;
    }
    while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == ' ')) out[--len] = 0;
    return out;
}
