/* cli: the flag tables of the command-line tools (hcl-data, hcl-embed, hcl-eval). One table
 * per command drives parsing and --help: `--name value`, `--name=value`, bare `--flag`, values
 * checked against the type and range; a bad flag or value is one error line naming it.
 * (hcl-train has its own table in config.h: it also reads config files and snapshots.) */
#ifndef HCL_CLI_H
#define HCL_CLI_H

#include <stdio.h>

#define CLI_STR_MAX 1024

enum cli_type { CLI_FLAG, CLI_INT, CLI_FLOAT, CLI_STR };

typedef struct {
    const char *name;       /* flag without the leading -- */
    enum cli_type type;
    const char *def;        /* default, parsed like a command-line value */
    const char *help;
    void *dst;              /* int64_t * (flag, int), double * or char[CLI_STR_MAX] */
    double min, max;        /* range of numbers */
} cli_option;

/* Set every option to its default. */
void cli_defaults(const cli_option *opts, int n);
/* Parse argv[0..argc) against the table. Arguments that are not flags go to pos (at most
 * maxpos; *npos counts them). Returns 0, 1 when --help/-h was given, or -1 with one line in
 * err (HCL_ERR_MAX bytes) naming the flag and the value. */
int cli_parse(const cli_option *opts, int n, int argc, char **argv, const char **pos, int maxpos,
              int *npos, char *err);
/* A tool's whole argv (argv[0] is the program) without positional arguments: cli_defaults,
 * then cli_parse; --help/-h prints usage(stdout) and exits 0. Returns 0, or -1 with err. */
int cli_parse_tool(const cli_option *opts, int n, int argc, char **argv, void (*usage)(FILE *),
                   char *err);
/* One line per option: `  --name N   help [default]`, then --help. */
void cli_usage(FILE *fp, const cli_option *opts, int n);

#endif
