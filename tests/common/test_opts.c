/* Unit tests for src/common/opts.c: precedence (flag over environment over default), strict
 * numbers and bounds, the command-line forms, positional arguments, and the generated usage
 * and markdown. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../common/assert_ext.h"
#include "opts.h"

struct cfg {
    int port;
    double ratio;
    long long id;
    size_t body;
    bool tls, quiet;
    int level;
    const char *name;
    char dir[16];
    int lo, hi; /* from --range LO-HI (OPT_FUNC) */
};

static int parse_range(void *cfg, const char *v, char *why, size_t n)
{
    struct cfg *c = cfg;
    if (sscanf(v, "%d-%d", &c->lo, &c->hi) != 2 || c->lo > c->hi) {
        snprintf(why, n, "expected LO-HI");
        return -1;
    }
    return 0;
}

static const struct opt rows[] = {
    {.name = "port",
     .env = "T_PORT",
     .type = OPT_INT,
     .off = offsetof(struct cfg, port),
     .lo = 0,
     .hi = 65535,
     .def = "3000",
     .meta = "N",
     .help = "listening port"},
    {.name = "ratio",
     .env = "T_RATIO",
     .type = OPT_DBL,
     .off = offsetof(struct cfg, ratio),
     .lo = 0,
     .hi = 1,
     .def = "0.5",
     .help = "a fraction"},
    {.name = "id",
     .type = OPT_I64,
     .off = offsetof(struct cfg, id),
     .lo = -1e15,
     .hi = 1e15,
     .def = "0",
     .help = "an id"},
    {.name = "body",
     .env = "T_BODY",
     .type = OPT_SIZE,
     .off = offsetof(struct cfg, body),
     .lo = 1,
     .hi = 1 << 30,
     .def = "64K",
     .help = "body limit"},
    {.name = "tls",
     .env = "T_TLS",
     .type = OPT_BOOL,
     .off = offsetof(struct cfg, tls),
     .def = "false",
     .help = "serve HTTPS"},
    {.name = "quiet",
     .short_name = 'q',
     .type = OPT_FLAG,
     .off = offsetof(struct cfg, quiet),
     .help = "say less"},
    {.name = "log-level",
     .env = "T_LEVEL",
     .type = OPT_ENUM,
     .off = offsetof(struct cfg, level),
     .choices = "debug|info|warn|error",
     .def = "info",
     .help = "log level"},
    {.name = "name",
     .short_name = 'n',
     .env = "T_NAME",
     .type = OPT_STR,
     .off = offsetof(struct cfg, name),
     .meta = "S",
     .help = "a name | with a bar",
     .def_help = "the host name"},
    {.name = "dir",
     .type = OPT_STRBUF,
     .off = offsetof(struct cfg, dir),
     .size = sizeof(((struct cfg *)0)->dir),
     .def = "./data",
     .help = "data directory"},
    {.name = "range", .type = OPT_FUNC, .parse = parse_range, .meta = "LO-HI", .help = "ports"},
};

static const struct opts_spec spec = {"t-prog", rows, sizeof rows / sizeof rows[0], 0};

static void clear_env(void)
{
    unsetenv("T_PORT");
    unsetenv("T_RATIO");
    unsetenv("T_BODY");
    unsetenv("T_TLS");
    unsetenv("T_LEVEL");
    unsetenv("T_NAME");
}

/* Parses a NULL-terminated argument list (argv[0] = "t-prog" is added). */
static int parse(const struct opts_spec *s, struct cfg *c, struct opts_result *r, ...)
{
    char *argv[32] = {"t-prog"};
    int argc = 1;
    va_list ap;
    va_start(ap, r);
    for (char *a; argc < 31 && (a = va_arg(ap, char *)) != NULL;)
        argv[argc++] = a;
    va_end(ap);
    memset(c, 0, sizeof *c);
    return opts_parse(s, c, argc, argv, r);
}

static void test_defaults(void **state)
{
    clear_env();
    struct cfg c;
    struct opts_result r;
    ASSERT_EQ_INT(parse(&spec, &c, &r, NULL), 0);
    ASSERT_EQ_INT(c.port, 3000);
    ASSERT_EQ_DBL(c.ratio, 0.5, 0);
    ASSERT_EQ_INT(c.body, 64 << 10);
    ASSERT_EQ_INT(c.tls, 0);
    ASSERT_EQ_INT(c.level, 1);
    ASSERT_EQ_STR(c.dir, "./data");
    assert_null(c.name); /* no default: untouched */
    ASSERT_EQ_INT(r.src[0], OPT_SRC_DEFAULT);
    ASSERT_EQ_INT(r.src[7], OPT_SRC_NONE);
    assert_false(opts_given(&r, 0));
    ASSERT_EQ_INT(r.nargs, 0);
    opts_result_free(&r);
}

static void test_precedence(void **state)
{
    clear_env();
    struct cfg c;
    struct opts_result r;
    /* env over default */
    setenv("T_PORT", "4000", 1);
    setenv("T_LEVEL", "warn", 1);
    ASSERT_EQ_INT(parse(&spec, &c, &r, NULL), 0);
    ASSERT_EQ_INT(c.port, 4000);
    ASSERT_EQ_INT(c.level, 2);
    ASSERT_EQ_INT(r.src[0], OPT_SRC_ENV);
    assert_true(opts_given(&r, 0));
    opts_result_free(&r);
    /* flag over env, in both flag forms; the last flag wins */
    ASSERT_EQ_INT(parse(&spec, &c, &r, "--port", "5000", "--log-level=debug", NULL), 0);
    ASSERT_EQ_INT(c.port, 5000);
    ASSERT_EQ_INT(c.level, 0);
    ASSERT_EQ_INT(r.src[0], OPT_SRC_FLAG);
    opts_result_free(&r);
    ASSERT_EQ_INT(parse(&spec, &c, &r, "--port=1", "--port", "2", NULL), 0);
    ASSERT_EQ_INT(c.port, 2);
    opts_result_free(&r);
    /* an empty variable counts as unset unless the table says otherwise */
    setenv("T_PORT", "", 1);
    ASSERT_EQ_INT(parse(&spec, &c, &r, NULL), 0);
    ASSERT_EQ_INT(c.port, 3000);
    opts_result_free(&r);
    struct opts_spec empty = spec;
    empty.flags = OPTS_EMPTY_ENV;
    ASSERT_EQ_INT(parse(&empty, &c, &r, NULL), -1);
    ASSERT_HAS_STR(r.err, "T_PORT (--port)");
    opts_result_free(&r);
    /* a flag replaces a bad variable, which is then never parsed */
    setenv("T_PORT", "junk", 1);
    ASSERT_EQ_INT(parse(&spec, &c, &r, "--port", "7", NULL), 0);
    ASSERT_EQ_INT(c.port, 7);
    opts_result_free(&r);
    clear_env();
}

static void test_bad_numbers(void **state)
{
    clear_env();
    struct cfg c;
    struct opts_result r;
    static const char *const bad[][2] = {
        {"--port", "70000"},
        {"--port", "-1"},
        {"--port", "1.5"},
        {"--port", "12abc"},
        {"--port", ""},
        {"--port", " 80"},
        {"--ratio", "nan"},
        {"--ratio", "inf"},
        {"--ratio", "1.01"},
        {"--ratio", "x"},
        {"--id", "1e3"},
        {"--body", "12Q"},
        {"--body", "0"},
        {"--body", "-1K"},
        {"--body", "2G"},
        {"--tls", "maybe"},
        {"--log-level", "loud"},
        {"--range", "9-1"},
        {"--dir", "0123456789abcdefg"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = parse(&spec, &c, &r, bad[i][0], bad[i][1], NULL);
        if (rc != -1) print_error("accepted %s %s\n", bad[i][0], bad[i][1]);
        ASSERT_EQ_INT(rc, -1);
        ASSERT_HAS_STR(r.err, "t-prog: invalid value '");
        ASSERT_HAS_STR(r.err, bad[i][0]); /* the message names the flag */
        opts_result_free(&r);
    }
    ASSERT_EQ_INT(parse(&spec, &c, &r, "--port", "70000", NULL), -1);
    ASSERT_EQ_STR(r.err, "t-prog: invalid value '70000' for --port (T_PORT): expected an integer "
                         "in [0, 65535]");
    opts_result_free(&r);
    ASSERT_EQ_INT(parse(&spec, &c, &r, "--log-level", "loud", NULL), -1);
    ASSERT_HAS_STR(r.err, "expected one of debug, info, warn, error");
    opts_result_free(&r);
    setenv("T_RATIO", "2", 1);
    ASSERT_EQ_INT(parse(&spec, &c, &r, NULL), -1);
    ASSERT_HAS_STR(r.err, "for T_RATIO (--ratio)"); /* an env value names the variable first */
    opts_result_free(&r);
    clear_env();
    /* what is accepted */
    ASSERT_EQ_INT(parse(&spec, &c, &r, "--body", "2M", "--ratio", "1e-1", "--id", "-12", "--tls",
                        "YES", "--range", "3-9", NULL),
                  0);
    ASSERT_EQ_INT(c.body, 2 << 20);
    ASSERT_EQ_DBL(c.ratio, 0.1, 1e-12);
    ASSERT_EQ_INT(c.id, -12);
    ASSERT_EQ_INT(c.tls, 1);
    ASSERT_EQ_INT(c.lo, 3);
    ASSERT_EQ_INT(c.hi, 9);
    opts_result_free(&r);
}

static void test_command_line(void **state)
{
    clear_env();
    struct cfg c;
    struct opts_result r;
    /* short aliases, bare flags, positional arguments, `--` */
    ASSERT_EQ_INT(parse(&spec, &c, &r, "a", "-q", "-n", "x", "b", "-nyz", "--", "--port", NULL), 0);
    assert_true(c.quiet);
    ASSERT_EQ_STR(c.name, "yz");
    ASSERT_EQ_INT(r.nargs, 3);
    ASSERT_EQ_STR(r.args[0], "a");
    ASSERT_EQ_STR(r.args[1], "b");
    ASSERT_EQ_STR(r.args[2], "--port");
    assert_null(r.args[3]);
    opts_result_free(&r);
    /* errors: unknown, missing value, a value for a bare flag */
    ASSERT_EQ_INT(parse(&spec, &c, &r, "--nope", NULL), -1);
    ASSERT_EQ_STR(r.err, "t-prog: unknown option '--nope' (see --help)");
    opts_result_free(&r);
    ASSERT_EQ_INT(parse(&spec, &c, &r, "--port", NULL), -1);
    ASSERT_EQ_STR(r.err, "t-prog: option '--port' needs a value");
    opts_result_free(&r);
    ASSERT_EQ_INT(parse(&spec, &c, &r, "--quiet=1", NULL), -1);
    ASSERT_HAS_STR(r.err, "takes no value");
    opts_result_free(&r);
    /* prefixes only when asked for, and only unambiguous ones */
    ASSERT_EQ_INT(parse(&spec, &c, &r, "--po", "9", NULL), -1);
    opts_result_free(&r);
    struct opts_spec pre = spec;
    pre.flags = OPTS_PREFIX | OPTS_STOP_AT_ARG;
    ASSERT_EQ_INT(parse(&pre, &c, &r, "--r", "1-2", NULL), -1); /* ratio or range */
    ASSERT_HAS_STR(r.err, "ambiguous");
    opts_result_free(&r);
    ASSERT_EQ_INT(parse(&pre, &c, &r, "--po", "9", "--ran=1-2", "w", "--port", "1", NULL), 0);
    ASSERT_EQ_INT(c.port, 9);
    ASSERT_EQ_INT(c.lo, 1);
    ASSERT_EQ_INT(r.nargs, 3); /* stopped at "w" */
    ASSERT_EQ_STR(r.args[1], "--port");
    opts_result_free(&r);
    struct opts_spec keep = spec;
    keep.flags = OPTS_KEEP_UNKNOWN | OPTS_KEEP_DASHDASH | OPTS_NO_HELP;
    ASSERT_EQ_INT(
        parse(&keep, &c, &r, "call", "--data", "x", "--help", "--port", "5", "--", "-q", NULL), 0);
    ASSERT_EQ_INT(r.help, OPTS_HELP_NONE);
    ASSERT_EQ_INT(c.port, 5);
    assert_false(c.quiet);
    ASSERT_EQ_INT(r.nargs, 6);
    ASSERT_EQ_STR(r.args[3], "--help");
    ASSERT_EQ_STR(r.args[4], "--");
    opts_result_free(&r);
    /* --help stops parsing and stores nothing */
    ASSERT_EQ_INT(parse(&spec, &c, &r, "--port", "9", "-h", "--bad", NULL), 0);
    ASSERT_EQ_INT(r.help, OPTS_HELP_TEXT);
    ASSERT_EQ_INT(c.port, 0);
    opts_result_free(&r);
    ASSERT_EQ_INT(parse(&spec, &c, &r, "--help-markdown", NULL), 0);
    ASSERT_EQ_INT(r.help, OPTS_HELP_MARKDOWN);
    opts_result_free(&r);
    ASSERT_EQ_INT(opts_find(&spec, "T_BODY"), 3);
    ASSERT_EQ_INT(opts_find(&spec, "log-level"), 6);
    ASSERT_EQ_INT(opts_find(&spec, "nope"), -1);
}

static char *capture(void (*fn)(const struct opts_spec *, FILE *), const struct opts_spec *s)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    assert_non_null(f);
    fn(s, f);
    fclose(f);
    return buf;
}

static void test_usage(void **state)
{
    char *u = capture(opts_usage, &spec);
    ASSERT_HAS_STR(u, "  --port N ");
    ASSERT_HAS_STR(u, "listening port (env T_PORT) [3000]");
    ASSERT_HAS_STR(u, "-q, --quiet");
    ASSERT_HAS_STR(u, "-n, --name S");
    ASSERT_HAS_STR(u, "[the host name]");
    ASSERT_HAS_STR(u, "serve HTTPS (env T_TLS) [false]");
    for (const char *l = u; *l; l = strchr(l, '\n') + 1)
        ASSERT_LE_INT(strcspn(l, "\n"), 100);
    free(u);
    struct opts_spec col = spec;
    col.flags = OPTS_ENV_COLUMN;
    u = capture(opts_usage, &col);
    ASSERT_HAS_STR(u, "T_PORT   listening port [3000]");
    free(u);
    u = capture(opts_markdown, &spec);
    ASSERT_HAS_STR(u, "| variable | flag | default | meaning |\n");
    ASSERT_HAS_STR(u, "| `T_PORT` | `--port N` | `3000` | listening port |\n");
    ASSERT_HAS_STR(u, "| `T_NAME` | `-n, --name S` | the host name | a name \\| with a bar |\n");
    ASSERT_HAS_STR(u, "|  | `-q, --quiet` | — | say less |\n");
    free(u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),    cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_bad_numbers), cmocka_unit_test(test_command_line),
        cmocka_unit_test(test_usage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
