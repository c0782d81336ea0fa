/* opts: one option table per program, read from the command line and the environment.
 *
 * A program describes each setting once, as a row: its flag (--name), an optional short alias
 * (-x), an optional environment variable, the type and place (offsetof) of the field it fills
 * in the program's configuration struct, bounds, a default and a one-line meaning.  From that
 * table opts_parse() fills the struct, opts_usage() prints the --help rows and opts_markdown()
 * the docs/configuration.md table rows.
 *
 * One precedence rule everywhere: the flag over the environment variable over the default.
 * The winning text is parsed once, strictly: numbers must be whole, finite and within the
 * row's bounds; an error names the flag and the variable, the bad value and what was expected.
 *
 * Command lines: `--name value` or `--name=value` (a FLAG row takes no value), `-x value` or
 * `-xvalue` for a short alias, `--` ends the options; `--help`/`-h` and `--help-markdown` are
 * recognised unless the table says otherwise (OPTS_NO_HELP).  opts_parse never prints and
 * never exits: errors are returned (message in the result) and the caller decides. */
#ifndef SGPU_OPTS_H
#define SGPU_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum opt_type {
    OPT_STR,    /* const char * at off: points into argv, the environment or the row's default */
    OPT_STRBUF, /* char[size] at off: copied; a longer value is an error */
    OPT_INT,    /* int at off: a decimal integer in [lo, hi] */
    OPT_I64,    /* long long at off: a decimal integer in [lo, hi] (|bounds| <= 2^53) */
    OPT_DBL,    /* double at off: a finite number in [lo, hi] */
    OPT_SIZE,   /* size_t at off: bytes, optional K/M/G (binary) suffix and B, in [lo, hi] */
    OPT_BOOL,   /* bool at off: y yes t true on 1 / n no f false off 0 (any case) */
    OPT_FLAG,   /* bool at off: set true by the bare flag (no value); from the env a bool word */
    OPT_ENUM,   /* int at off: the index of the value in `choices` ("a|b|c") */
    OPT_FUNC,   /* parse(cfg, value) fills what it likes */
    OPT_RAW,    /* nothing stored: the caller reads opts_result.val[i] itself */
};

struct opt {
    const char *name; /* flag without "--"; NULL = environment only */
    char short_name;  /* -x alias, 0 = none */
    const char *env;  /* environment variable, NULL = none */
    enum opt_type type;
    size_t off;       /* offsetof(config struct, field) */
    size_t size;      /* OPT_STRBUF: sizeof the field */
    double lo, hi;    /* OPT_INT, OPT_I64, OPT_DBL, OPT_SIZE: inclusive bounds */
    const char *def;  /* text parsed when neither flag nor env is given; NULL = field untouched */
    const char *meta; /* value name in the usage ("N", "DIR"); NULL = none */
    const char *help; /* meaning, one sentence; long ones are wrapped by opts_usage */
    const char *def_help; /* the default as shown when it is not `def` (computed defaults) */
    const char *choices;  /* OPT_ENUM: "a|b|c" */
    /* OPT_FUNC: 0, or -1 with the reason ("expected HOST:PORT") in why. */
    int (*parse)(void *cfg, const char *val, char *why, size_t whylen);
};

/* Row helpers: OPT_AT places a row's value in field of struct T; OPT_BUF makes the row a
 * copied char[] field. */
#define OPT_AT(T, field) .off = offsetof(T, field)
#define OPT_BUF(T, field)                                                                          \
    .type = OPT_STRBUF, .off = offsetof(T, field), .size = sizeof(((T *)0)->field)

enum {
    OPTS_PREFIX = 1 << 0,        /* an unambiguous prefix of a flag selects it (getopt_long) */
    OPTS_STOP_AT_ARG = 1 << 1,   /* the first positional argument ends the options */
    OPTS_KEEP_UNKNOWN = 1 << 2,  /* unknown -x/--x arguments are positional, not errors */
    OPTS_KEEP_DASHDASH = 1 << 3, /* `--` and what follows are kept as positional arguments */
    OPTS_NO_HELP = 1 << 4,       /* --help / -h are not recognised (kept or unknown) */
    OPTS_EMPTY_ENV = 1 << 5,     /* an empty variable is a value; otherwise it counts as unset */
    OPTS_ENV_COLUMN = 1 << 6,    /* usage: environment names in a column of their own */
};

struct opts_spec {
    const char *prog; /* prefix of error messages: "sgpu-worker" */
    const struct opt *opts;
    int n; /* rows, at most OPTS_MAX */
    unsigned flags;
};

#define OPTS_MAX 96

enum opt_src { OPT_SRC_NONE = 0, OPT_SRC_DEFAULT, OPT_SRC_ENV, OPT_SRC_FLAG };

enum opts_help { OPTS_HELP_NONE = 0, OPTS_HELP_TEXT, OPTS_HELP_MARKDOWN };

struct opts_result {
    enum opts_help help;         /* --help (text) or --help-markdown seen: nothing was stored */
    const char *val[OPTS_MAX];   /* the winning text of each row, NULL = none */
    unsigned char src[OPTS_MAX]; /* enum opt_src of each row */
    char **args;                 /* positional arguments, NULL-terminated (xcalloc'd; free below) */
    int nargs;
    char err[1024]; /* "sgpu-x: ..." when opts_parse returned -1 */
};

/* Parses argv[1..argc) and the environment into cfg.  0, or -1 with r->err set.  On --help
 * returns 0 with r->help set and cfg untouched.  Always call opts_result_free(r) after. */
int opts_parse(const struct opts_spec *s, void *cfg, int argc, char **argv, struct opts_result *r);
void opts_result_free(struct opts_result *r);
/* Stores every row's default into cfg (neither argv nor the environment).  0 or -1 (err). */
int opts_defaults(const struct opts_spec *s, void *cfg, char *err, size_t errlen);

/* Formats "<prog>: invalid value '<val[i]>' for <flag/env>: <why>" into r->err; returns -1.
 * For checks a caller makes after opts_parse (values depending on each other). */
int opts_fail(const struct opts_spec *s, struct opts_result *r, int i, const char *why);
/* The row called `name` (flag or env), or -1. */
int opts_find(const struct opts_spec *s, const char *name);
/* True when row i came from the command line or the environment (not the default). */
bool opts_given(const struct opts_result *r, int i);

/* One line per row: "  -x, --name META  help (env ENV) [default]", wrapped at 100 columns;
 * with OPTS_ENV_COLUMN "  --name  ENV  help [default]", one line each. */
void opts_usage(const struct opts_spec *s, FILE *out);
/* One docs/configuration.md table row per row: | `ENV` | `--name META` | `default` | help |
 * (a def_help default is plain text: only literal defaults are in backticks). */
void opts_markdown(const struct opts_spec *s, FILE *out);

/* The strict parsers the table uses, for OPT_FUNC callbacks: 0, or -1 with why filled. */
int opts_parse_ll(const char *s, long long lo, long long hi, long long *out, char *why,
                  size_t whylen);
int opts_parse_double(const char *s, double lo, double hi, double *out, char *why, size_t whylen);
int opts_parse_size(const char *s, double lo, double hi, size_t *out, char *why, size_t whylen);
int opts_parse_bool(const char *s, bool *out);

#endif
