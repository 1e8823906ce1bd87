/* cli: see cli.h. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static int cli_set(const cli_option *o, const char *val, char *err) {
    if (o->type == CLI_STR) {
        if (strlen(val) >= CLI_STR_MAX)
            return hcl_err(err, "--%s: value too long (%zu characters, at most %d)", o->name,
                           strlen(val), CLI_STR_MAX - 1);
        memcpy(o->dst, val, strlen(val) + 1);
        return 0;
    }
    char *end;
    errno = 0;
    double x = o->type == CLI_FLOAT ? strtod(val, &end) : (double)strtoll(val, &end, 10);
    if (!*val || *end || errno || isnan(x) || x < o->min || x > o->max)
        return hcl_err(err, "--%s: bad value '%s' (want %s in [%.15g, %.15g])", o->name, val,
                       o->type == CLI_FLOAT ? "a number" : "an integer", o->min, o->max);
    if (o->type == CLI_FLOAT) *(double *)o->dst = x;
    else *(int64_t *)o->dst = strtoll(val, NULL, 10);
    return 0;
}

void cli_defaults(const cli_option *opts, int n) {
    char err[HCL_ERR_MAX];
    for (int i = 0; i < n; i++)
        HCL_CHECK(cli_set(&opts[i], opts[i].def, err) == 0, "bad default: %s", err);
}

int cli_parse(const cli_option *opts, int n, int argc, char **argv, const char **pos, int maxpos,
              int *npos, char *err) {
    *npos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return 1;
        if (a[0] == '-' && a[1] == '-' && a[2]) {
            const char *eq = strchr(a, '=');
            size_t nl = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
            const cli_option *o = NULL;
            for (int k = 0; k < n; k++)
                if (strlen(opts[k].name) == nl && strncmp(opts[k].name, a + 2, nl) == 0) o = &opts[k];
            if (!o) return hcl_err(err, "unknown flag '%.*s' (see --help)", (int)nl + 2, a);
            if (o->type == CLI_FLAG && !eq) {
                if (cli_set(o, "1", err) != 0) return -1;
                continue;
            }
            if (!eq && i + 1 >= argc) return hcl_err(err, "--%s needs a value", o->name);
            if (cli_set(o, eq ? eq + 1 : argv[++i], err) != 0) return -1;
        } else if (a[0] == '-' && a[1]) {
            return hcl_err(err, "unknown flag '%s' (see --help)", a);
        } else {
            if (*npos == maxpos) return hcl_err(err, "unexpected argument '%s' (see --help)", a);
            pos[(*npos)++] = a;
        }
    }
    return 0;
}

int cli_parse_tool(const cli_option *opts, int n, int argc, char **argv, void (*usage)(FILE *),
                   char *err) {
    int npos;
    cli_defaults(opts, n);
    int rc = cli_parse(opts, n, argc - 1, argv + 1, NULL, 0, &npos, err);
    if (rc == 1) {
        usage(stdout);
        exit(0);
    }
    return rc;
}

void cli_usage(FILE *fp, const cli_option *opts, int n) {
    for (int i = 0; i < n; i++) {
        const cli_option *o = &opts[i];
        char head[64];
        snprintf(head, sizeof head, "--%s%s", o->name,
                 o->type == CLI_INT ? " N" : o->type == CLI_FLOAT ? " X" : o->type == CLI_STR ? " S" : "");
        fprintf(fp, "  %-20s %s [%s]\n", head, o->help, o->def);
    }
    fprintf(fp, "  %-20s print this help\n", "--help");
}
