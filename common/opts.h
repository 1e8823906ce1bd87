/* opts: the one typed option engine of hcl. A program describes its options in a table of
 * hcl_opt (name, type, default, help, where the value goes, what values are allowed) and the
 * same table drives command-line parsing (`--name value`, `--name=value`, bare `--flag`),
 * `key = value` config files (`#` comments), --help, and the `key = value` text snapshot.
 * hcl-train's table is common/config.c; each tool (hcl-data, hcl-embed, hcl-eval, hclctl)
 * holds its own. Every invalid value is one error line naming the option and what is allowed.
 *
 * Types and what each stores:
 *   INT    int64_t, an integer in lo..hi           FLOAT  double, a finite number in min..max
 *   BOOL   int64_t, 0 or 1                         FLAG   int64_t, bare `--flag` sets 1 (no value)
 *   ENUM   text: one of the words "a|b|c"          STR, PATH  text (PATH: a file or directory)
 *   INTS   text: comma-separated integers, each in lo..hi, min_items..max_items of them
 *          (`words` names the empty list, e.g. "none"); read them back with opts_ints
 *   NAMES  text: comma-separated non-empty names, min_items..max_items of them ("" = unset)
 * A range's upper end of 0 (hi, max, max_items) means none. Text goes into a char array and
 * must fit it.
 *
 * Exports: hcl_opt, hcl_optset and the HCL_OPT_AT / HCL_OPT_FIELD destinations; opts_defaults,
 * opts_find, opts_set, opts_parse_argv, opts_parse_tool, opts_parse_file, opts_help,
 * opts_to_text, opts_describe, opts_enum_index, opts_ints. */
#ifndef HCL_OPTS_H
#define HCL_OPTS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum hcl_opt_type {
    HCL_OPT_STR, HCL_OPT_PATH, HCL_OPT_INT, HCL_OPT_FLOAT, HCL_OPT_BOOL, HCL_OPT_FLAG,
    HCL_OPT_ENUM, HCL_OPT_INTS, HCL_OPT_NAMES,
};

#define HCL_OPT_ABOVE_MIN 1u    /* FLOAT: more than min, not equal to it */
#define HCL_OPT_NOT_IN_FILE 2u  /* not a config-file key and not in the snapshot (--config) */
#define HCL_OPT_REPEAT 4u       /* STR: given again on the command line, the values join with a
                                   blank (`--encoder a=... --encoder b=...`); needs `given` */

typedef struct {
    const char *name;         /* the flag without its leading --, and the config file's key */
    enum hcl_opt_type type;
    const char *def;          /* default, parsed like a value from the command line */
    const char *help;
    void *dst;                /* the variable (HCL_OPT_AT), or NULL: set base + offset */
    size_t offset, size;      /* size of the destination: int64_t, double or the char array */
    int64_t lo, hi;           /* INT, and each item of INTS */
    double min, max;          /* FLOAT */
    int min_items, max_items; /* INTS, NAMES */
    const char *words;        /* ENUM: the allowed words "a|b"; INTS: the word for no items */
    const char *meta;         /* --help placeholder of the value (DIR, FILE, A,B; NULL: by type) */
    const char *only;         /* the command of a multi-command tool it is for (NULL: all) */
    unsigned flags;           /* HCL_OPT_ABOVE_MIN, HCL_OPT_NOT_IN_FILE, HCL_OPT_REPEAT */
} hcl_opt;

/* Where a table entry stores its value: a variable, or a field of the set's base struct. */
#define HCL_OPT_AT(var) .dst = &(var), .size = sizeof(var)
#define HCL_OPT_FIELD(type, field) .offset = offsetof(type, field), .size = sizeof(((type *)0)->field)

typedef struct {
    const hcl_opt *opt;
    int n;
    void *base;               /* the struct HCL_OPT_FIELD entries point into (NULL: none) */
    unsigned char *given;     /* NULL, or n marks: 1 for each option the command line set */
} hcl_optset;

/* Every option to its default (a bad default is a programmer error and aborts). */
void opts_defaults(const hcl_optset *s);
const hcl_opt *opts_find(const hcl_optset *s, const char *name);
/* Check value against o's type and store it. where prefixes the error line: "--" for a flag,
 * "FILE:LINE: " for a config file. Returns 0, or -1 with one line in err (HCL_ERR_MAX). */
int opts_set(const hcl_optset *s, const hcl_opt *o, const char *value, const char *where,
             char *err);
/* Parse argv[0..argc) (no program name). Arguments that are not flags go to pos (at most
 * maxpos, *npos counts them; pos may be NULL when maxpos is 0). Returns 0, 1 at --help/-h
 * (parsing stops there), or -1 with one line in err naming the flag and the value. */
int opts_parse_argv(const hcl_optset *s, int argc, char **argv, const char **pos, int maxpos,
                    int *npos, char *err);
/* A tool's whole argv (argv[0] is the program) without positional arguments: opts_defaults,
 * then opts_parse_argv; --help/-h prints usage(stdout) and exits 0. Returns 0, or -1 + err. */
int opts_parse_tool(const hcl_optset *s, int argc, char **argv, void (*usage)(FILE *), char *err);
/* `key = value` lines (any length; `#` starts a comment; blank lines skipped). Errors name
 * FILE:LINE and the key; a directory or a read error names the file. */
int opts_parse_file(const hcl_optset *s, const char *path, char *err);
/* One line per option: `  --name TYPE   [only: ]help; allowed values [default]`, then --help. */
void opts_help(FILE *fp, const hcl_optset *s);
/* `key = value` lines of every option (but HCL_OPT_NOT_IN_FILE ones) in table order, which
 * opts_parse_file reads back; returns the bytes needed (snprintf-like, buf may be short). */
size_t opts_to_text(const hcl_optset *s, char *buf, size_t len);
/* What o accepts, as in "an integer from 2 to 4194304" or "one of relu, gelu". */
void opts_describe(const hcl_opt *o, char *buf, size_t len);
/* Index of value among an ENUM's words, or -1. */
int opts_enum_index(const hcl_opt *o, const char *value);
/* The integers of an INTS value (as stored): at most max into out; returns how many, or -1
 * when the text is not a valid value of o. */
int opts_ints(const hcl_opt *o, const char *text, int64_t *out, int max);

#endif
