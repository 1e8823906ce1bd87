/* test_config: hcl-train's option table: flags, config files, precedence, typed values (enums,
 * ranges, bools, lists) refused with one line naming the option and what is allowed, --help
 * listing every option, and the snapshot text parsing back to the same configuration. */
#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "config.h"
#include "log.h"
#include "util.h"

static int parse(hcl_config *c, char *err, int argc, ...) {
    char *argv[32];
    argv[0] = "hcl-train";
    va_list ap;
    va_start(ap, argc);
    for (int i = 1; i < argc; i++) argv[i] = va_arg(ap, char *);
    va_end(ap);
    config_defaults(c);
    err[0] = 0;
    FILE *devnull = fopen("/dev/null", "w");
    int rc = config_parse_args(c, argc, argv, devnull, err);
    fclose(devnull);
    return rc;
}

/* parse one flag and value; the error must be one line holding every word of want[] */
static int refused(const char *flag, const char *value, const char *const *want) {
    hcl_config c;
    char err[HCL_ERR_MAX];
    if (parse(&c, err, 3, flag, value) != -1) return 0;
    if (strchr(err, '\n')) return 0;
    for (; *want; want++)
        if (!strstr(err, *want)) {
            fprintf(stderr, "'%s %s': '%s' lacks '%s'\n", flag, value, err, *want);
            return 0;
        }
    return 1;
}
#define REFUSED(flag, value, ...) refused(flag, value, (const char *const[]){__VA_ARGS__, NULL})

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_flags(void) {
    hcl_config c;
    char err[HCL_ERR_MAX] = "";

    config_defaults(&c);
    CHECK(c.batch_size == 256 && c.lr == 0.001 && strcmp(c.loss, "full") == 0 &&
          strcmp(c.hidden, "512,256") == 0 && c.dim == 128, "defaults");

    CHECK(parse(&c, err, 7, "--data", "d", "--batch-size=64", "--lr", "0.5", "--loss") == -1,
          "missing value accepted");
    CHECK(strstr(err, "--loss") != NULL, "error names the flag: %s", err);

    CHECK(parse(&c, err, 6, "--data", "d", "--batch-size=64", "--lr", "0.5") == 0, "parse: %s", err);
    CHECK(strcmp(c.data, "d") == 0 && c.batch_size == 64 && c.lr == 0.5, "values");

    CHECK(parse(&c, err, 3, "--batch-size", "12x") == -1 && strstr(err, "12x") && strstr(err, "batch-size"),
          "bad integer: %s", err);
    CHECK(parse(&c, err, 3, "--lr", "nan") == -1 && strstr(err, "lr"), "nan lr: %s", err);
    CHECK(parse(&c, err, 3, "--lr", "-1") == -1 && strstr(err, "-1"), "negative lr: %s", err);
    CHECK(parse(&c, err, 3, "--bogus", "1") == -1 && strstr(err, "--bogus"), "unknown flag: %s", err);
    CHECK(parse(&c, err, 2, "stray") == -1 && strstr(err, "stray"), "stray arg: %s", err);
    CHECK(parse(&c, err, 2, "--help") == 1, "--help");
}

/* Every check run_prepare (coordinator/train.c) made in code is now the table's. */
static void test_types(void) {
    hcl_config c;
    char err[HCL_ERR_MAX];
    CHECK(REFUSED("--act", "tanh", "--act: 'tanh' is not one of relu, gelu"), "act");
    CHECK(REFUSED("--loss", "triplet", "--loss", "clip, full, core, supcon, hybrid"), "loss");
    CHECK(REFUSED("--hybrid-base", "hybrid", "--hybrid-base", "clip, full, core, supcon"), "hybrid-base");
    CHECK(REFUSED("--optimizer", "adam", "--optimizer", "adamw, sgd, lars"), "optimizer");
    CHECK(REFUSED("--grad-allreduce", "nccl", "shm, mpi"), "grad-allreduce");
    CHECK(REFUSED("--balance", "dynamic", "even, adaptive"), "balance");
    CHECK(REFUSED("--comm-dtype", "fp16", "--comm-dtype: 'fp16' is not one of f32, bf16"), "comm-dtype");
    CHECK(REFUSED("--data-plane", "p2p", "auto, coordinator, direct"), "data-plane");
    CHECK(REFUSED("--log-level", "loud", "--log-level: 'loud' is not one of debug, info, warn, error"),
          "log-level");
    CHECK(REFUSED("--batch-size", "1", "--batch-size", "'1'", "from 2 to"), "batch-size >= 2");
    CHECK(REFUSED("--log-every", "0", "--log-every", ">= 1"), "log-every >= 1");
    CHECK(REFUSED("--dim", "0", "--dim", "from 1 to 65536"), "dim low");
    CHECK(REFUSED("--dim", "65537", "--dim", "from 1 to 65536"), "dim high");
    CHECK(REFUSED("--keep", "0", "--keep"), "keep >= 1");
    CHECK(REFUSED("--worker-timeout", "0", "--worker-timeout", "> 0"), "worker-timeout > 0");
    CHECK(REFUSED("--coordinator-nice", "20", "--coordinator-nice", "from 0 to 19"), "nice");
    /* what config.txt could not give back: a '#' first or after a blank would read as a comment */
    CHECK(REFUSED("--run-dir", "/tmp/a #1", "--run-dir", "would be a comment"), "'#' after a blank");
    CHECK(REFUSED("--data", "#d", "--data", "would be a comment"), "'#' first");
    CHECK(REFUSED("--watch-port", "65536", "--watch-port: bad value '65536' (want an integer from 0 to 65535)"),
          "watch-port high");
    CHECK(REFUSED("--telemetry-port", "-1", "--telemetry-port", "from 0 to 65535"), "telemetry-port low");
    CHECK(REFUSED("--epochs", "9223372036854775807", "--epochs", "from 0 to"), "epochs overflow");
    CHECK(REFUSED("--steps", "9223372036854775807", "--steps", "from 0 to"), "steps overflow");
    CHECK(REFUSED("--seed", "99999999999999999999", "--seed"), "seed beyond int64");
    CHECK(REFUSED("--lr", "1e400", "--lr"), "lr beyond double");

    /* bools: 0 or 1, nothing else */
    CHECK(REFUSED("--layernorm", "2", "--layernorm", "0 or 1"), "layernorm 2");
    CHECK(REFUSED("--no-shuffle", "yes", "--no-shuffle", "0 or 1"), "no-shuffle yes");
    CHECK(REFUSED("--nesterov", "01", "--nesterov", "0 or 1"), "nesterov 01");
    CHECK(parse(&c, err, 4, "--layernorm", "1", "--no-shuffle=1") == 0 && c.layernorm == 1 &&
          c.no_shuffle == 1, "bools: %s", err);

    /* enums: the word is stored; config_enum gives its index */
    CHECK(parse(&c, err, 7, "--grad-allreduce", "mpi", "--log-level", "warn", "--act", "gelu") == 0, "%s", err);
    CHECK(strcmp(c.grad_allreduce, "mpi") == 0 && config_enum(&c, "grad-allreduce") == 1 &&
          config_enum(&c, "act") == 1 && config_enum(&c, "balance") == 0, "enum index");
    CHECK(config_log_level(&c) == HCL_LOG_WARN, "log level warn");
    config_defaults(&c);
    CHECK(config_log_level(&c) == HCL_LOG_INFO, "log level default");

    /* lists */
    int64_t w[8];
    CHECK(parse(&c, err, 3, "--hidden", "64,32,16") == 0 && config_ints(&c, "hidden", w, 8) == 3 &&
          w[0] == 64 && w[1] == 32 && w[2] == 16, "hidden list: %s", err);
    CHECK(parse(&c, err, 3, "--hidden", "none") == 0 && config_ints(&c, "hidden", w, 8) == 0, "hidden none");
    CHECK(parse(&c, err, 3, "--hidden", "") == 0 && config_ints(&c, "hidden", w, 8) == 0, "hidden empty");
    CHECK(REFUSED("--hidden", "4,,2", "--hidden", "'4,,2'", "integers from 1 to 65536"), "hidden 4,,2");
    CHECK(REFUSED("--hidden", "1,2,3,4,5,6,7", "--hidden", "0 to 6"), "hidden too many");
    CHECK(REFUSED("--hidden", "64,0", "--hidden"), "hidden zero width");
    CHECK(REFUSED("--hidden", "64,", "--hidden"), "hidden trailing comma");
    CHECK(REFUSED("--clip-views", "v0", "--clip-views", "2 comma-separated names"), "clip-views one");
    CHECK(REFUSED("--clip-views", "a,b,c", "--clip-views"), "clip-views three");
    CHECK(REFUSED("--clip-views", "a,", "--clip-views"), "clip-views empty name");
    CHECK(parse(&c, err, 3, "--clip-views", "v1,v2") == 0 && strcmp(c.clip_views, "v1,v2") == 0, "clip-views");

    /* strings that do not fit */
    char longv[2000];
    memset(longv, 'a', sizeof longv - 1);
    longv[sizeof longv - 1] = 0;
    CHECK(REFUSED("--data", longv, "--data", "too long"), "long path");
}

static void test_files(const char *dir) {
    hcl_config c;
    char err[HCL_ERR_MAX];
    char path[256];
    snprintf(path, sizeof path, "%s/run.conf", dir);

    /* config file, and flags override it whatever their order */
    write_file(path, "# a comment\nbatch-size = 32\n  loss = supcon  \nlr = 0.25 # trailing\n");
    CHECK(parse(&c, err, 5, "--lr", "0.125", "--config", path) == 0, "config: %s", err);
    CHECK(c.batch_size == 32 && strcmp(c.loss, "supcon") == 0 && c.lr == 0.125, "file then flags");
    CHECK(strcmp(c.config_file, path) == 0, "config_file kept");

    write_file(path, "batch-size = 32\nwidth = 3\n");
    CHECK(parse(&c, err, 3, "--config", path) == -1 && strstr(err, "run.conf:2") && strstr(err, "width"),
          "unknown key names file and line: %s", err);
    write_file(path, "steps 10\n");
    CHECK(parse(&c, err, 3, "--config", path) == -1 && strstr(err, "run.conf:1"), "no '=': %s", err);
    write_file(path, "config = other.conf\n");
    CHECK(parse(&c, err, 3, "--config", path) == -1 && strstr(err, "unknown key 'config'"), "config key: %s", err);
    write_file(path, "\n\nact = tanh\n");
    CHECK(parse(&c, err, 3, "--config", path) == -1 && strstr(err, "run.conf:3: act: 'tanh' is not one of relu, gelu"),
          "enum in a file: %s", err);
    CHECK(parse(&c, err, 3, "--config", "/nonexistent/x.conf") == -1 && strstr(err, "/nonexistent/x.conf"),
          "missing file: %s", err);

    /* a directory is an error naming it (it was read as an empty file) */
    CHECK(parse(&c, err, 3, "--config", dir) == -1 && strstr(err, dir) && strstr(err, "directory"),
          "--config DIR: %s", err);
    char eqarg[300];
    snprintf(eqarg, sizeof eqarg, "--config=%s", dir);
    CHECK(parse(&c, err, 2, eqarg) == -1 && strstr(err, "directory"), "--config=DIR: %s", err);

    /* A long comment whose tail reads `lr = 7` is still one comment (lines were cut at 2048). */
    size_t big = 10000;
    char *text = hcl_malloc(big + 100);
    memset(text, 'x', big);
    memcpy(text, "# ", 2);
    snprintf(text + big - 10, 110, " lr = 7\nseed = 5\n");
    write_file(path, text);
    CHECK(parse(&c, err, 3, "--config", path) == 0 && c.lr == 0.001 && c.seed == 5,
          "long comment: %s lr %g seed %lld", err, c.lr, (long long)c.seed);
    /* a long value: every character is read, and one line says it does not fit */
    memcpy(text, "core-view = ", 12);
    snprintf(text + big - 10, 110, "\n");
    write_file(path, text);
    CHECK(parse(&c, err, 3, "--config", path) == -1 && strstr(err, "run.conf:1: core-view: value too long (9978"),
          "long value: %s", err);
    free(text);
    FILE *f = fopen(path, "w");
    fwrite("lr = 0.5\0junk\n", 1, 14, f);
    fclose(f);
    CHECK(parse(&c, err, 3, "--config", path) == -1 && strstr(err, "run.conf:1") && strstr(err, "NUL"),
          "NUL byte: %s", err);
    unlink(path);
}

/* --matmul's word that is not this build's default */
#ifdef HCL_HAVE_DNNL
#define MATMUL_OTHER "openblas"
#else
#define MATMUL_OTHER "onednn"
#endif

/* The snapshot text of a configuration with every option off its default parses back to it. */
static void test_snapshot(const char *dir) {
    hcl_config c, d;
    char err[HCL_ERR_MAX];
    char *argv[] = {"hcl-train", "--data", "/d", "--val-data", "/v", "--run-dir", "/r", "--seed", "9",
        "--batch-size", "48", "--steps", "7", "--epochs", "3", "--hidden", "none", "--dim", "12",
        "--act", "gelu", "--layernorm", "1", "--loss", "hybrid", "--hybrid-base", "supcon",
        "--core-view", "thumb", "--clip-views", "a,b", "--pair-weights", "a:b=2", "--lambda", "0.3",
        "--temperature", "0.07", "--optimizer", "lars", "--lr", "0.1", "--weight-decay", "0.2",
        "--momentum", "0.8", "--nesterov", "1", "--clip-norm", "4", "--warmup-steps", "2",
        "--checkpoint-every", "5", "--checkpoint-interval", "1.5", "--keep", "4", "--resume", "auto",
        "--no-shuffle", "1", "--eval-every", "3", "--eval-rows", "100", "--control", "tcp://127.0.0.1:5",
        "--watch-port", "5556", "--telemetry-port", "5557",
        "--control-secret", "/s#1.key", "--control-clients", "/c.txt", "--tensorboard", "off",
        "--prometheus", "127.0.0.1:9464", "--worker-timeout", "9.5",
        "--coordinator-nice", "3", "--grad-allreduce", "mpi", "--comm-dtype", "bf16", "--balance", "adaptive",
        "--data-plane", "direct", "--matmul", MATMUL_OTHER, "--precision", "bf16", "--threads", "2", "--loss-memory", "64",
        "--log-every", "6", "--encoder", "words=bag:64,256",
        "--log-level", "debug"};
    int argc = (int)(sizeof argv / sizeof argv[0]);
    config_defaults(&c);
    CHECK(config_parse_args(&c, argc, argv, stdout, err) == 0, "every option: %s", err);
    char text[16384], back[16384], defaults[16384];
    size_t n = config_to_text(&c, text, sizeof text);
    CHECK(n > 0 && n < sizeof text, "snapshot size %zu", n);
    config_defaults(&d);
    config_to_text(&d, defaults, sizeof defaults);
    /* every line differs from the default's: the flags above cover every option */
    int lines = 0;
    for (const char *a = text, *b = defaults; *a; a = strchr(a, '\n') + 1, b = strchr(b, '\n') + 1, lines++)
        CHECK(strncmp(a, b, (size_t)(strchr(a, '\n') - a + 1)) != 0, "line %d at its default", lines + 1);
    CHECK(lines == argc / 2, "%d snapshot lines for %d options", lines, argc / 2);
    /* --encoder again adds a view's encoder; config.txt keeps them all on its one line */
    char *rep[] = {"hcl-train", "--encoder", "a=conv:8,16", "--encoder=b=bag:32", "--encoder", "c=mlp:none"};
    config_defaults(&d);
    CHECK(config_parse_args(&d, 6, rep, stdout, err) == 0 && strcmp(d.encoder, "a=conv:8,16 b=bag:32 c=mlp:none") == 0,
          "repeated --encoder: '%s' %s", d.encoder, err);
    CHECK(strstr(text, "lr = 0.10000000000000001\n") && strstr(text, "hidden = none\n") &&
          strstr(text, "act = gelu\n") && !strstr(text, "config ="), "text format: %s", text);

    char path[256];
    snprintf(path, sizeof path, "%s/config.txt", dir);
    write_file(path, text);
    config_defaults(&d);
    CHECK(config_parse_file(&d, path, err) == 0, "snapshot parse: %s", err);
    config_to_text(&d, back, sizeof back);
    CHECK(strcmp(text, back) == 0, "round trip:\n%s\nvs\n%s", text, back);
    CHECK(d.lr == c.lr && d.worker_timeout == c.worker_timeout && d.layernorm == 1 &&
          strcmp(d.core_view, "thumb") == 0 && strcmp(d.control_secret, "/s#1.key") == 0,
          "round trip values ('#' in a path: '%s')", d.control_secret);
    unlink(path);
}

/* --help names every option with its allowed values and default. */
static void test_help(const char *dir) {
    char path[256], line[1024], text[16384];
    snprintf(path, sizeof path, "%s/help.txt", dir);
    FILE *f = fopen(path, "w");
    config_print_help(f, "hcl-train");
    fclose(f);
    hcl_config c;
    config_defaults(&c);
    config_to_text(&c, text, sizeof text);
    f = fopen(path, "r");
    char *help = hcl_calloc(1, 65536);
    size_t len = fread(help, 1, 65535, f);
    fclose(f);
    CHECK(len > 0, "help written");
    int options = 0;
    for (char *p = text; *p; p = strchr(p, '\n') + 1, options++) {
        char key[64];
        CHECK(sscanf(p, "%63s =", key) == 1, "snapshot line");
        snprintf(line, sizeof line, "\n  --%s ", key);
        CHECK(strstr(help, line) != NULL, "--help lacks --%s", key);
    }
    CHECK(options > 40, "%d options", options);
    CHECK(strstr(help, "--config FILE") && strstr(help, "--help"), "--config, --help");
    CHECK(strstr(help, "--act relu|gelu ") && strstr(help, "[relu]"), "enum words and default");
    CHECK(strstr(help, "--batch-size N ") && strstr(help, "an integer from 2 to 4194304 [256]"), "range");
    CHECK(strstr(help, "--layernorm 0|1 "), "bool");
    CHECK(strstr(help, "--worker-timeout X ") && strstr(help, "a number > 0 [60]"), "float range");
    CHECK(strstr(help, "--hidden N,N,... ") && strstr(help, "or none [512,256]"), "list");
    free(help);
    unlink(path);
}

int main(void) {
    test_flags();
    test_types();
    char dir[] = "/tmp/hcl_test_config_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    test_files(dir);
    test_snapshot(dir);
    test_help(dir);
    rmdir(dir);
    CHECK_DONE();
}
