/* Unit tests for the engine's command line (src/engine/config.c): the table's defaults, the
 * flag over SGPU_LOG_LEVEL, strict numbers, --help. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "../common/assert_ext.h"
#include "engine/engine.h"

/* config_opts_parse with stdout and stderr silenced (errors and usage are expected). */
static int parse(struct engine_opts *o, int argc, char **argv)
{
    int out = dup(1), err = dup(2);
    FILE *n1 = freopen("/dev/null", "w", stdout), *n2 = freopen("/dev/null", "w", stderr);
    (void)n1;
    (void)n2;
    config_opts_default(o);
    int rc = config_opts_parse(o, argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(out, 1);
    dup2(err, 2);
    close(out);
    close(err);
    return rc;
}

static void test_defaults(void **state)
{
    unsetenv("SGPU_LOG_LEVEL");
    struct engine_opts o;
    char *argv[] = {"e", NULL};
    ASSERT_EQ_INT(parse(&o, 1, argv), 0);
    ASSERT_EQ_STR(o.data_dir, "./sgpu-data");
    ASSERT_EQ_STR(o.listen_host, "127.0.0.1");
    ASSERT_EQ_INT(o.listen_port, 8080);
    ASSERT_EQ_INT(o.tick_ms, 1000);
    ASSERT_EQ_INT(o.route_hold_ms, 2000);
    ASSERT_EQ_DBL(o.shutdown_timeout_s, 55, 0);
    ASSERT_EQ_STR(o.log_level, "info");
    assert_false(o.keep_workers);
}

static void test_log_level_precedence(void **state)
{
    struct engine_opts o;
    setenv("SGPU_LOG_LEVEL", "warn", 1);
    char *argv0[] = {"e", NULL};
    ASSERT_EQ_INT(parse(&o, 1, argv0), 0);
    ASSERT_EQ_STR(o.log_level, "warn"); /* the variable over the default */
    char *argv1[] = {"e", "--log-level", "debug", NULL};
    ASSERT_EQ_INT(parse(&o, 3, argv1), 0);
    ASSERT_EQ_STR(o.log_level, "debug"); /* the flag over the variable (it was the reverse) */
    setenv("SGPU_LOG_LEVEL", "loud", 1);
    ASSERT_EQ_INT(parse(&o, 1, argv0), -1);
    unsetenv("SGPU_LOG_LEVEL");
}

static void test_values(void **state)
{
    unsetenv("SGPU_LOG_LEVEL");
    struct engine_opts o;
    char *ok[] = {"e",
                  "--listen=[::1]:0",
                  "--local-ports",
                  "9000-9009",
                  "--keep-workers",
                  "--stable-window-s",
                  "0",
                  NULL};
    ASSERT_EQ_INT(parse(&o, 7, ok), 0);
    ASSERT_EQ_STR(o.listen_host, "::1");
    ASSERT_EQ_INT(o.listen_port, 0);
    ASSERT_EQ_INT(o.local_port_lo, 9000);
    ASSERT_EQ_INT(o.local_port_hi, 9009);
    assert_true(o.keep_workers);
    ASSERT_EQ_DBL(o.stable_window_s, 0.001, 0); /* clamped */
    static char *const bad[][3] = {
        {"e", "--tick-ms", "1.5"},      {"e", "--tick-ms", "0"},         {"e", "--listen", "x"},
        {"e", "--local-ports", "9-9"},  {"e", "--drain-grace-s", "nan"}, {"e", "--nope", "1"},
        {"e", "--error-breaker", "-1"}, {"e", "--keep-workers=1", "x"},  {"e", "stray", "x"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *argv[] = {bad[i][0], bad[i][1], bad[i][2], NULL};
        ASSERT_EQ_INT(parse(&o, 3, argv), -1);
    }
    char *help[] = {"e", "-h", NULL};
    ASSERT_EQ_INT(parse(&o, 2, help), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_log_level_precedence),
        cmocka_unit_test(test_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
