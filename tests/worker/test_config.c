/* Unit tests for src/worker/config.c: defaults, environment variables and flags (flag over
 * environment), rejected values, and parse_bool. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../common/assert_ext.h"
#include "worker/worker.h"

static const char *const ENV_VARS[] = {"WORKER_PORT",   "BACKEND",           "MODEL_SERVER_URL",
                                       "REPORT_ADDR",   "SGPU_AUTH_SCHEME",  "SGPU_REPORT_FORMAT",
                                       "UNSECURED",     "SGPU_MAX_BODY",     "CONTAINER_ID",
                                       "PUBKEY_URL",    "SGPU_REPLAY_GUARD", "VAST_TCP_PORT_3000",
                                       "PUBLIC_IPADDR", "USE_SSL",           "SGPU_MAX_QUEUE_TIME"};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof ENV_VARS / sizeof ENV_VARS[0]; i++)
        unsetenv(ENV_VARS[i]);
}

static int load(struct wconfig *c, int argc, char **argv)
{
    int saved = dup(2);
    FILE *null = freopen("/dev/null", "w", stderr); /* errors are expected in some cases */
    (void)null;
    int rc = config_load(c, argc, argv);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    return rc;
}

static void test_config_defaults(void **state)
{
    clear_env();
    struct wconfig c;
    char *argv[] = {"w", NULL};
    assert_int_equal(load(&c, 1, argv), 0);
    assert_int_equal(c.port, 3000);
    assert_string_equal(c.backend, "generic");
    assert_int_equal(c.scheme, AUTH_URL);
    assert_false(c.replay_guard);
    assert_int_equal(c.report_fmt, REPORT_V3);
    assert_int_equal(c.max_body, 64u << 20);
    assert_int_equal(c.nreport, 1);
    assert_string_equal(c.report_addrs[0], "https://run.vast.ai");
    assert_string_equal(c.pubkey_url, "https://run.vast.ai/pubkey/");
    assert_string_equal(c.url, "http://127.0.0.1:3000");
    config_free(&c);
}

static void test_config_env_and_flags(void **state)
{
    clear_env();
    setenv("BACKEND", "tgi", 1);
    setenv("REPORT_ADDR", "http://a:1/x/, http://b:2", 1);
    setenv("SGPU_AUTH_SCHEME", "fields-v1", 1);
    setenv("VAST_TCP_PORT_3000", "41234", 1);
    setenv("PUBLIC_IPADDR", "203.0.113.7", 1);
    setenv("USE_SSL", "TRUE", 1);
    setenv("SGPU_MAX_QUEUE_TIME", "none", 1);
    struct wconfig c;
    char *argv[] = {"w", "--max-body", "2M", "--unsecured=yes", NULL};
    assert_int_equal(load(&c, 4, argv), 0);
    assert_string_equal(c.model_url, "http://127.0.0.1:5001");
    assert_int_equal(c.nreport, 2);
    assert_string_equal(c.report_addrs[1], "http://b:2");
    assert_string_equal(c.pubkey_url, "http://a:1/x/pubkey/"); /* B13: first address only */
    assert_true(c.replay_guard);
    assert_true(c.unsecured);
    assert_int_equal(c.max_body, 2u << 20);
    ASSERT_LT_DBL(c.max_queue_time, 0);
    assert_string_equal(c.url, "https://203.0.113.7:41234");
    snprintf(c.public_ip, sizeof c.public_ip, "2001:db8::7");
    config_set_url(&c, 443);
    assert_string_equal(c.url, "https://[2001:db8::7]:443");
    ASSERT_EQ_INT(c.nload, 1);
    ASSERT_HAS_STR(c.load_msgs[0], "text_generation_router");
    config_free(&c);
    clear_env();
}

static void test_config_errors(void **state)
{
    clear_env();
    struct wconfig c;
    const char *bad_env[][2] = {{"WORKER_PORT", "70000"},   {"BACKEND", "vllm"},
                                {"SGPU_AUTH_SCHEME", "g3"}, {"UNSECURED", "maybe"},
                                {"SGPU_MAX_BODY", "12Q"},   {"CONTAINER_ID", "abc"},
                                {"REPORT_ADDR", "ftp://x"}, {"SGPU_REPORT_FORMAT", "v2"}};
    for (size_t i = 0; i < sizeof bad_env / sizeof bad_env[0]; i++) {
        setenv(bad_env[i][0], bad_env[i][1], 1);
        char *argv[] = {"w", NULL};
        assert_int_equal(load(&c, 1, argv), -1);
        config_free(&c);
        unsetenv(bad_env[i][0]);
    }
    setenv("SGPU_REPLAY_GUARD", "on", 1); /* with the default url scheme */
    char *argv1[] = {"w", NULL};
    assert_int_equal(load(&c, 1, argv1), -1);
    config_free(&c);
    unsetenv("SGPU_REPLAY_GUARD");
    char *argv2[] = {"w", "--no-such-flag", "1", NULL};
    assert_int_equal(load(&c, 3, argv2), -1);
    config_free(&c);
    char *argv3[] = {"w", "--port", NULL};
    assert_int_equal(load(&c, 2, argv3), -1);
    config_free(&c);
}

static void test_config_precedence(void **state)
{
    clear_env();
    struct wconfig c;
    setenv("WORKER_PORT", "4000", 1);
    char *argv[] = {"w", "--port", "5000", NULL};
    ASSERT_EQ_INT(load(&c, 3, argv), 0); /* the flag over the variable */
    ASSERT_EQ_INT(c.port, 5000);
    config_free(&c);
    char *argv0[] = {"w", NULL};
    ASSERT_EQ_INT(load(&c, 1, argv0), 0); /* the variable over the default */
    ASSERT_EQ_INT(c.port, 4000);
    ASSERT_EQ_INT(c.http_port, 4001);
    config_free(&c);
    setenv("WORKER_PORT", "", 1); /* PyWorker semantics: an empty variable is a (bad) value */
    ASSERT_EQ_INT(load(&c, 1, argv0), -1);
    config_free(&c);
    char *help[] = {"w", "--help", NULL};
    ASSERT_EQ_INT(load(&c, 2, help), 1); /* --help returns; main exits */
    config_free(&c);
    clear_env();
}

static void test_parse_bool(void **state)
{
    bool b;
    const char *t[] = {"y", "YES", "t", "True", "on", "1"};
    const char *f[] = {"n", "No", "f", "FALSE", "off", "0"};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(parse_bool(t[i], &b), 0);
        assert_true(b);
        assert_int_equal(parse_bool(f[i], &b), 0);
        assert_false(b);
    }
    assert_int_equal(parse_bool("2", &b), -1);
    assert_int_equal(parse_bool("", &b), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults), cmocka_unit_test(test_config_env_and_flags),
        cmocka_unit_test(test_config_errors),   cmocka_unit_test(test_config_precedence),
        cmocka_unit_test(test_parse_bool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
