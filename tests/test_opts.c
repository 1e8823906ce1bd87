/* test_opts: the option engine as the tools use it (variables as destinations, bare flags,
 * positional arguments, the options a command line gave), and its error lines. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "opts.h"
#include "util.h"

static int64_t o_count, o_json;
static double o_rate;
static char o_out[16], o_widths[64], o_names[64], o_mode[16];

static const hcl_opt table[] = {
    {"count", HCL_OPT_INT, "3", "how many", HCL_OPT_AT(o_count), .lo = 1, .hi = 10},
    {"json", HCL_OPT_FLAG, "0", "print JSON", HCL_OPT_AT(o_json)},
    {"rate", HCL_OPT_FLOAT, "0.5", "a rate", HCL_OPT_AT(o_rate), .max = 1},
    {"out", HCL_OPT_PATH, "x", "output", HCL_OPT_AT(o_out), .meta = "DIR", .only = "write"},
    {"widths", HCL_OPT_INTS, "4,2", "widths", HCL_OPT_AT(o_widths), .lo = 1, .hi = 100,
     .min_items = 1, .max_items = 3},
    {"names", HCL_OPT_NAMES, "", "names", HCL_OPT_AT(o_names), .min_items = 1},
    {"mode", HCL_OPT_ENUM, "fast", "mode", HCL_OPT_AT(o_mode), .words = "fast|slow"},
};
#define N ((int)(sizeof table / sizeof table[0]))

static unsigned char given[N];
static const hcl_optset set = {table, N, NULL, given};
static const char *pos[2];
static int npos;

static int parse(char *err, int argc, ...) {
    char *argv[16];
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc; i++) argv[i] = va_arg(ap, char *);
    va_end(ap);
    memset(given, 0, sizeof given);
    opts_defaults(&set);
    err[0] = 0;
    return opts_parse_argv(&set, argc, argv, pos, 2, &npos, err);
}

int main(void) {
    char err[HCL_ERR_MAX];
    CHECK(parse(err, 0) == 0 && o_count == 3 && o_json == 0 && o_rate == 0.5 && !strcmp(o_out, "x") &&
          !strcmp(o_mode, "fast") && npos == 0, "defaults: %s", err);

    /* flags anywhere, positionals in order, a bare flag, --name=value; given marks what was set */
    CHECK(parse(err, 6, "a", "--json", "--count=7", "b", "--rate", "1") == 0, "%s", err);
    CHECK(o_json == 1 && o_count == 7 && o_rate == 1 && npos == 2 && !strcmp(pos[0], "a") &&
          !strcmp(pos[1], "b"), "values");
    CHECK(given[0] && given[1] && given[2] && !given[3] && !given[6], "given");

    CHECK(parse(err, 3, "a", "b", "c") == -1 && !strcmp(err, "unexpected argument 'c' (see --help)"), "%s", err);
    CHECK(parse(err, 2, "--json=1", "a") == -1 && !strcmp(err, "--json takes no value"), "%s", err);
    CHECK(parse(err, 1, "--count") == -1 && !strcmp(err, "--count needs a value (an integer from 1 to 10)"),
          "%s", err);
    CHECK(parse(err, 2, "--count", "11") == -1 &&
          !strcmp(err, "--count: bad value '11' (want an integer from 1 to 10)"), "%s", err);
    CHECK(parse(err, 2, "--count", "ten") == -1 && strstr(err, "--count: bad value 'ten'"), "%s", err);
    CHECK(parse(err, 2, "--rate", "1.5") == -1 &&
          !strcmp(err, "--rate: bad value '1.5' (want a number from 0 to 1)"), "%s", err);
    CHECK(parse(err, 2, "--rate", "inf") == -1, "inf rate");
    CHECK(parse(err, 2, "--bogus=3", "a") == -1 && !strcmp(err, "unknown flag '--bogus' (see --help)"), "%s", err);
    CHECK(parse(err, 1, "-x") == -1 && strstr(err, "unknown flag '-x'"), "%s", err);
    CHECK(parse(err, 2, "--mode", "medium") == -1 &&
          !strcmp(err, "--mode: 'medium' is not one of fast, slow"), "%s", err);
    CHECK(parse(err, 2, "--out", "0123456789abcdef") == -1 && strstr(err, "--out: value too long"), "%s", err);
    CHECK(parse(err, 2, "--json", "--help") == 1, "--help");
    CHECK(parse(err, 1, "-h") == 1, "-h");

    /* lists */
    int64_t w[4];
    CHECK(parse(err, 2, "--widths", "5,6,7") == 0 && opts_ints(&table[4], o_widths, w, 4) == 3 &&
          w[2] == 7, "widths: %s", err);
    CHECK(opts_ints(&table[4], "5,6,7", w, 2) == -1, "more items than out holds");
    CHECK(parse(err, 2, "--widths", "") == -1 && strstr(err, "1 to 3 comma-separated integers"), "%s", err);
    CHECK(parse(err, 2, "--widths", "1,2,3,4") == -1, "4 widths");
    CHECK(parse(err, 2, "--widths", "1,x") == -1, "1,x");
    CHECK(parse(err, 2, "--names", "a,b,c") == 0 && parse(err, 2, "--names", ",a") == -1 &&
          parse(err, 2, "--names", "a,,b") == -1, "names");

    /* --help: each option once, with its placeholder, command, allowed values and default */
    char help[4096] = "";
    FILE *f = fmemopen(help, sizeof help - 1, "w");
    opts_help(f, &set);
    fclose(f);
    CHECK(strstr(help, "  --count N ") && strstr(help, "how many; an integer from 1 to 10 [3]\n"), "%s", help);
    CHECK(strstr(help, "  --json ") && strstr(help, "print JSON\n"), "flag: %s", help);
    CHECK(strstr(help, "  --out DIR ") && strstr(help, "write: output [x]\n"), "only: %s", help);
    CHECK(strstr(help, "  --mode fast|slow ") && strstr(help, "mode [fast]\n"), "enum: %s", help);
    CHECK(strstr(help, "  --help "), "--help");
    CHECK_DONE();
}
