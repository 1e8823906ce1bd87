/* test_ckpt: the checkpoint layout of common/ckpt.h on real files: the directory and file names,
 * `latest`, state.pb's fields and the tensors round trip bit for bit, pruning to --keep, the
 * newest valid checkpoint when the newest is damaged (a flipped byte, a truncated file, a missing
 * state.pb, a flipped byte in state.pb, a `latest` naming nothing), no temporary directory left, ckpt_cleanup of a crash's
 * leftovers, and ckpt_model_path from a run directory, a checkpoint directory and a model file. */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "ckpt.h"
#include "rng.h"

static char root[] = "/tmp/hcl_test_ckpt_XXXXXX";

static void config(hcl_model_config *c) {
    model_config_default(c);
    c->nviews = 2;
    strcpy(c->names[0], "img");
    strcpy(c->names[1], "txt");
    c->in_width[0] = 6;
    c->in_width[1] = 5;
    c->nhidden = 1;
    c->hidden[0] = 7;
    c->dim = 4;
}

static int exists(const char *run, const char *rel) {
    char p[512];
    struct stat st;
    snprintf(p, sizeof p, "%s/checkpoints/%s", run, rel);
    return stat(p, &st) == 0;
}

static void read_text(const char *path, char *buf, size_t cap) {
    buf[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = 0;
    fclose(f);
}

/* Flip one byte in the middle of a file, or cut it to half its size. */
static void damage(const char *path, int truncate_it) {
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL, "open %s", path);
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    if (truncate_it) {
        fclose(f);
        CHECK(truncate(path, n / 2) == 0, "truncate %s", path);
        return;
    }
    fseek(f, n / 2, SEEK_SET);
    int c = fgetc(f);
    fseek(f, n / 2, SEEK_SET);
    fputc(c ^ 0x10, f);
    fclose(f);
}

static int write_step(const char *run, hcl_model *m, float *state, int64_t step, int keep, char *path) {
    hcl_ckpt_state st;
    memset(&st, 0, sizeof st);
    st.step = step;
    st.epoch = step / 10;
    st.data_cursor = step % 10;
    st.samples_seen = step * 32;
    st.seed = 99;
    hcl_rng rng;   /* the fields agree as hcl-train writes them (ckpt_verify checks) */
    rng_derive(&rng, st.seed, "epoch", (uint64_t)st.epoch);
    memcpy(st.data_rng, rng.s, sizeof st.data_rng);
    st.skipped = step > 0;
    st.updates = step - st.skipped;
    st.optimizer = HCL_OPTIM_ADAMW;
    st.lr_scale = 0.5;
    st.global_batch = 32;
    st.world_size = 3;
    st.workers = 2;
    snprintf(st.config, sizeof st.config, "seed = 99\nlr = 0.001\n");
    for (int64_t i = 0; i < m->nparams; i++) m->params[i] = (float)(step * 1000 + i) * 0.25f;
    char err[HCL_ERR_MAX] = "";
    int rc = ckpt_write(run, m, state, &st, keep, path, err);
    CHECK(rc == 0, "ckpt_write step %lld: %s", (long long)step, err);
    return rc;
}

static void test_layout_and_round_trip(const char *run, hcl_model *m, float *state, int64_t nstate) {
    char path[CKPT_PATH_MAX], err[HCL_ERR_MAX] = "", text[256];
    for (int64_t i = 0; i < nstate; i++) state[i] = (float)i * -0.5f;
    write_step(run, m, state, 0, 2, path);
    write_step(run, m, state, 10, 2, path);
    write_step(run, m, state, 20, 2, path);
    char want[512];
    snprintf(want, sizeof want, "%s/checkpoints/step-00000020", run);
    CHECK(strcmp(path, want) == 0, "path of step 20: %s, want %s", path, want);
    CHECK(exists(run, "step-00000020/model.safetensors") && exists(run, "step-00000020/optimizer.safetensors") &&
          exists(run, "step-00000020/state.pb"), "step-00000020 holds model, optimizer and state.pb");
    CHECK(exists(run, "step-00000010") && !exists(run, "step-00000000"), "--keep 2 pruned step 0 only");
    snprintf(want, sizeof want, "%s/checkpoints/latest", run);
    read_text(want, text, sizeof text);
    CHECK(strcmp(text, "step-00000020\n") == 0, "latest is '%s'", text);
    DIR *d = opendir(path);
    int others = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        others += e->d_name[0] != '.' && strcmp(e->d_name, "model.safetensors") &&
                  strcmp(e->d_name, "optimizer.safetensors") && strcmp(e->d_name, "state.pb");
    if (d) closedir(d);
    CHECK(others == 0, "%d files besides the three in a checkpoint", others);
    snprintf(want, sizeof want, "%s/checkpoints", run);
    d = opendir(want);
    int tmp = 0;
    for (struct dirent *e; d && (e = readdir(d));) tmp += strncmp(e->d_name, ".tmp-", 5) == 0;
    if (d) closedir(d);
    CHECK(tmp == 0, "%d temporary directories left", tmp);

    CHECK(ckpt_verify(path, err) == 0, "verify: %s", err);
    hcl_ckpt_state st;
    hcl_model_config mc;
    CHECK(ckpt_read_state(path, &st, &mc, err) == 0, "read state: %s", err);
    CHECK(st.step == 20 && st.epoch == 2 && st.data_cursor == 0 && st.samples_seen == 640 && st.seed == 99 &&
          st.updates == 19 && st.skipped == 1 && st.optimizer == HCL_OPTIM_ADAMW && st.lr_scale == 0.5 &&
          st.global_batch == 32 && st.world_size == 3 && st.workers == 2,
          "state.pb fields round trip (step %lld epoch %lld updates %lld)", (long long)st.step,
          (long long)st.epoch, (long long)st.updates);
    CHECK(strcmp(st.config, "seed = 99\nlr = 0.001\n") == 0, "config text: '%s'", st.config);
    CHECK(mc.nviews == 2 && !strcmp(mc.names[1], "txt") && mc.in_width[0] == 6 && mc.nhidden == 1 &&
          mc.hidden[0] == 7 && mc.dim == 4, "model configuration stored with the model");
    hcl_model l;
    CHECK(model_init(&l, &mc, 1, err) == 0, "init: %s", err);
    float *back = hcl_floats((size_t)nstate);
    CHECK(ckpt_read_tensors(path, &l, back, HCL_OPTIM_ADAMW, err) == 0, "read tensors: %s", err);
    CHECK(memcmp(l.params, m->params, sizeof(float) * (size_t)m->nparams) == 0, "parameters bit for bit");
    CHECK(memcmp(back, state, sizeof(float) * (size_t)nstate) == 0, "optimizer state bit for bit");
    free(back);
    model_free(&l);
}

static void test_damage(const char *run) {
    char path[CKPT_PATH_MAX], err[HCL_ERR_MAX] = "", f[CKPT_PATH_MAX + 64], none[CKPT_PATH_MAX + 16];
    snprintf(none, sizeof none, "%s/nothing", run);
    CHECK(ckpt_find_latest(none, path, NULL) == 1, "no checkpoints at all: 1");
    /* a flipped byte in state.pb itself: its own checksum (format 2) catches it */
    snprintf(f, sizeof f, "%s/checkpoints/step-00000010/state.pb", run);
    char saved[4096];
    read_text(f, saved, sizeof saved);
    struct stat sb;
    CHECK(stat(f, &sb) == 0 && sb.st_size < (off_t)sizeof saved, "state.pb of %lld bytes", (long long)sb.st_size);
    damage(f, 0);
    snprintf(path, sizeof path, "%s/checkpoints/step-00000010", run);
    CHECK(ckpt_verify(path, err) != 0 && strstr(err, "state.pb: checksum"), "flipped byte in state.pb: '%s'", err);
    FILE *out = fopen(f, "wb");
    CHECK(out && fwrite(saved, 1, (size_t)sb.st_size, out) == (size_t)sb.st_size && fclose(out) == 0, "restore");
    CHECK(ckpt_verify(path, err) == 0, "restored state.pb: %s", err);
    /* a flipped byte in the newest: it fails verification naming the file; the one before wins */
    snprintf(f, sizeof f, "%s/checkpoints/step-00000020/model.safetensors", run);
    damage(f, 0);
    snprintf(path, sizeof path, "%s/checkpoints/step-00000020", run);
    CHECK(ckpt_verify(path, err) != 0 && strstr(err, "model.safetensors"), "flipped byte: '%s'", err);
    CHECK(ckpt_find_latest(run, path, NULL) == 0 && strstr(path, "step-00000010"), "newest valid: %s", path);
    /* a truncated optimizer file in that one too: nothing valid is left */
    snprintf(f, sizeof f, "%s/checkpoints/step-00000010/optimizer.safetensors", run);
    damage(f, 1);
    CHECK(ckpt_find_latest(run, path, NULL) == 2, "checkpoints but none valid, got %s", path);
    /* a missing state.pb is refused, naming it */
    snprintf(f, sizeof f, "%s/checkpoints/step-00000010/state.pb", run);
    unlink(f);
    snprintf(path, sizeof path, "%s/checkpoints/step-00000010", run);
    CHECK(ckpt_verify(path, err) != 0 && strstr(err, "state.pb"), "missing state.pb: '%s'", err);
}

static void test_cleanup_and_model_path(const char *run, hcl_model *m, float *state) {
    char path[CKPT_PATH_MAX], model[CKPT_PATH_MAX], err[HCL_ERR_MAX] = "", want[CKPT_PATH_MAX + 64];
    snprintf(want, sizeof want, "%s/checkpoints/.tmp-step-00000030.12345", run);
    CHECK(mkdir(want, 0755) == 0, "mkdir %s", want);
    ckpt_cleanup(run);
    CHECK(!exists(run, ".tmp-step-00000030.12345"), "ckpt_cleanup removed a crash's temporary directory");
    write_step(run, m, state, 30, 3, path);
    snprintf(want, sizeof want, "%s/model.safetensors", path);
    CHECK(ckpt_model_path(run, model, err) == 0 && strcmp(model, want) == 0, "run dir -> %s (%s)", model, err);
    CHECK(ckpt_model_path(path, model, err) == 0 && strcmp(model, want) == 0, "checkpoint dir -> %s (%s)", model, err);
    CHECK(ckpt_model_path(want, model, err) == 0 && strcmp(model, want) == 0, "model file -> %s (%s)", model, err);
    damage(want, 0);
    CHECK(ckpt_model_path(run, model, err) != 0 && strstr(err, "model.safetensors"),
          "a damaged model is refused: '%s'", err);
    snprintf(want, sizeof want, "%s/nothing-here", run);
    CHECK(ckpt_model_path(want, model, err) != 0 && strstr(err, "nothing-here"), "a missing path: '%s'", err);
}

int main(void) {
    CHECK(mkdtemp(root) != NULL, "mkdtemp");
    char run[256], err[HCL_ERR_MAX] = "";
    snprintf(run, sizeof run, "%s/run", root);
    CHECK(mkdir(run, 0755) == 0, "mkdir %s", run);
    hcl_model_config c;
    config(&c);
    hcl_model m;
    CHECK(model_init(&m, &c, 3, err) == 0, "init: %s", err);
    hcl_optim_config oc;
    optim_config_default(&oc);
    int64_t nstate = optim_state_floats(&oc, m.nparams);
    float *state = hcl_floats((size_t)nstate);
    test_layout_and_round_trip(run, &m, state, nstate);
    test_damage(run);
    test_cleanup_and_model_path(run, &m, state);
    free(state);
    model_free(&m);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    CHECK(system(cmd) == 0, "%s", cmd);
    CHECK_DONE();
}
