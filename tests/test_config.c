/* test_config: flags, config files, precedence, --help and the error lines of bad input. */
#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "config.h"
#include "util.h"

static int parse(hcl_config *c, char *err, int argc, ...) {
    char *argv[32];
    argv[0] = "hcl-train";
    va_list ap;
    va_start(ap, argc);
    for (int i = 1; i < argc; i++) argv[i] = va_arg(ap, char *);
    va_end(ap);
    config_defaults(c);
    FILE *devnull = fopen("/dev/null", "w");
    int rc = config_parse_args(c, argc, argv, devnull, err);
    fclose(devnull);
    return rc;
}

int main(void) {
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

    /* config file, and flags override it whatever their order */
    char dir[] = "/tmp/hcl_test_config_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char path[256];
    snprintf(path, sizeof path, "%s/run.conf", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "# a comment\nbatch-size = 32\n  loss = supcon  \nlr = 0.25 # trailing\n");
    fclose(f);
    CHECK(parse(&c, err, 5, "--lr", "0.125", "--config", path) == 0, "config: %s", err);
    CHECK(c.batch_size == 32 && strcmp(c.loss, "supcon") == 0 && c.lr == 0.125, "file then flags");

    f = fopen(path, "w");
    fprintf(f, "batch-size = 32\nwidth = 3\n");
    fclose(f);
    CHECK(parse(&c, err, 3, "--config", path) == -1 && strstr(err, "run.conf:2") && strstr(err, "width"),
          "unknown key names file and line: %s", err);
    f = fopen(path, "w");
    fprintf(f, "steps 10\n");
    fclose(f);
    CHECK(parse(&c, err, 3, "--config", path) == -1 && strstr(err, "run.conf:1"), "no '=': %s", err);
    CHECK(parse(&c, err, 3, "--config", "/nonexistent/x.conf") == -1 && strstr(err, "/nonexistent/x.conf"),
          "missing file: %s", err);

    /* the text snapshot parses back to the same configuration */
    CHECK(parse(&c, err, 5, "--lr", "0.3", "--core-view", "thumb") == 0, "parse");
    char text[16384];
    size_t n = config_to_text(&c, text, sizeof text);
    CHECK(n > 0 && n < sizeof text, "snapshot size %zu", n);
    f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    hcl_config d;
    config_defaults(&d);
    CHECK(config_parse_file(&d, path, err) == 0, "snapshot parse: %s", err);
    CHECK(d.lr == c.lr && strcmp(d.core_view, "thumb") == 0 && d.batch_size == c.batch_size, "round trip");
    unlink(path);
    rmdir(dir);
    CHECK_DONE();
}
