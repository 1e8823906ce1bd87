/* fuzz_config: hcl-train's options (common/config.c on common/opts.c) from a `key = value`
 * config file (config_parse_file) and, the same input cut at its newlines, from a command line
 * (config_parse_args; --config is left out: it names another file). An accepted file must
 * survive the snapshot a checkpoint stores (config_to_text, read back: the same text), and
 * every enum and list option of an accepted configuration must read back as valid. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzz_kit.h"
#include "model.h"
#include "util.h"

#define MAX_ARGS 64
#define TEXT_MAX 65536

static const char *const enum_keys[] = {"act", "loss", "hybrid-base", "optimizer", "grad-allreduce",
                                        "comm-dtype", "balance", "data-plane", "matmul", "precision", "log-level"};

/* What every accepted configuration must hold; its snapshot into text (TEXT_MAX). */
static void check_config(const hcl_config *c, char *text) {
    for (size_t i = 0; i < sizeof enum_keys / sizeof enum_keys[0]; i++) config_enum(c, enum_keys[i]);
    config_log_level(c);
    int64_t hidden[HCL_MAX_HIDDEN];
    int n = config_ints(c, "hidden", hidden, HCL_MAX_HIDDEN);
    for (int k = 0; k < n; k++) FUZZ_ASSERT(hidden[k] >= 1, "hidden width %lld", (long long)hidden[k]);
    /* each VIEW=SPEC of --encoder through the spec parser: a spec it accepts formats back the same */
    char enc[sizeof c->encoder], *save = NULL, msg[HCL_ERR_MAX];
    memcpy(enc, c->encoder, sizeof enc);
    for (char *tok = strtok_r(enc, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(tok, '=');
        hcl_encoder_spec sp, again;
        if (!eq || model_spec_parse(&sp, eq + 1, msg) != 0) continue;
        char out[256];
        model_spec_format(&sp, 1, out, sizeof out);
        FUZZ_ASSERT(model_spec_parse(&again, out, msg) == 0 && again.kind == sp.kind && again.nhidden == sp.nhidden,
                    "spec '%s' formats as '%s', not read back: %s", eq + 1, out, msg);
    }
    size_t len = config_to_text(c, text, TEXT_MAX);
    FUZZ_ASSERT(len < TEXT_MAX, "snapshot of %zu bytes", len);
}

static void from_file(const uint8_t *data, size_t size) {
    hcl_config c;
    char err[HCL_ERR_MAX] = "";
    config_defaults(&c);
    if (config_parse_file(&c, fuzz_file(0, data, size), err) != 0) {
        fuzz_check_err("config_parse_file", err);
        return;
    }
    char *text = hcl_malloc(TEXT_MAX), *again = hcl_malloc(TEXT_MAX);
    check_config(&c, text);
    hcl_config back;
    config_defaults(&back);
    FUZZ_ASSERT(config_parse_file(&back, fuzz_file(1, (const uint8_t *)text, strlen(text)), err) == 0,
                "the snapshot of an accepted file does not read back: %s", err);
    check_config(&back, again);
    FUZZ_ASSERT(strcmp(text, again) == 0, "the snapshot reads back different:\n%s---\n%s", text, again);
    free(text);
    free(again);
}

static void from_args(const uint8_t *data, size_t size) {
    static FILE *devnull;
    if (!devnull) devnull = fopen("/dev/null", "w");
    char *copy = hcl_malloc(size + 1);
    memcpy(copy, data, size);
    copy[size] = 0;
    char *argv[MAX_ARGS + 1] = {"hcl-train"};
    int argc = 1;
    for (char *tok = strtok(copy, "\n"); tok && argc < MAX_ARGS; tok = strtok(NULL, "\n"))
        if (strncmp(tok, "--config", 8) != 0) argv[argc++] = tok;
    argv[argc] = NULL;
    hcl_config c;
    char err[HCL_ERR_MAX] = "";
    config_defaults(&c);
    int rc = config_parse_args(&c, argc, argv, devnull, err);
    if (rc < 0) fuzz_check_err("config_parse_args", err);
    if (rc == 0) {
        char *text = hcl_malloc(TEXT_MAX);
        check_config(&c, text);
        free(text);
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    from_file(data, size);
    from_args(data, size);
    return 0;
}
