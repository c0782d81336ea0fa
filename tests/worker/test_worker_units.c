/* Unit tests for sgpu-worker pieces that need no network: configuration,
 * workload rules, signature messages (vast-protocol.md §3.13 vectors), the
 * jspan scanner, the benchmark cache parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/sha.h>

#include "jspan.h"
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
    assert_true(c.max_queue_time < 0);
    assert_string_equal(c.url, "https://203.0.113.7:41234");
    snprintf(c.public_ip, sizeof c.public_ip, "2001:db8::7");
    config_set_url(&c, 443);
    assert_string_equal(c.url, "https://[2001:db8::7]:443");
    assert_true(c.nload == 1 && strstr(c.load_msgs[0], "text_generation_router"));
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

static double wl(enum wl_kind k, const char *field, double def, const char *json)
{
    struct handler h;
    memset(&h, 0, sizeof h);
    h.wl = k;
    h.wl_default = def;
    if (field) snprintf(h.wl_field, sizeof h.wl_field, "%s", field);
    struct pyj_value *v = NULL;
    char err[64];
    assert_int_equal(pyj_parse(json, strlen(json), &v, err, sizeof err), 0);
    double x = handler_workload(&h, v);
    pyj_free(v);
    return x;
}

static void test_workload_rules(void **state)
{
    assert_true(wl(WL_TGI, NULL, 256, "{\"parameters\": {\"max_new_tokens\": 64}}") == 64);
    assert_true(wl(WL_TGI, NULL, 256, "{\"parameters\": {}}") == 256);
    assert_true(wl(WL_TGI, NULL, 256, "{\"parameters\": {\"max_new_tokens\": \"9\"}}") == 256);
    assert_true(wl(WL_OPENAI, NULL, 0, "{\"max_tokens\": 500}") == 500);
    /* B26: never 0 when max_tokens is absent: prompt estimate */
    assert_true(wl(WL_OPENAI, NULL, 0, "{\"prompt\": \"12345678\"}") == 2 + 16);
    assert_true(wl(WL_OPENAI, NULL, 0, "{\"messages\": [{\"content\": \"1234\"}]}") == 1 + 16);
    assert_true(wl(WL_OPENAI, NULL, 0, "{}") == 16);
    assert_true(wl(WL_COMFY, NULL, 0, "{}") == 260);
    assert_true(
        wl(WL_COMFY, NULL, 0, "{\"input\": {\"width\": 1024, \"height\": 1024, \"steps\": 40}}") ==
        (175.0 * 4 + 85) * 2);
    assert_true(wl(WL_FIELD, "a.b", 7, "{\"a\": {\"b\": 3.5}}") == 3.5);
    assert_true(wl(WL_FIELD, "a.1", 7, "{\"a\": [1, 2]}") == 2);
    assert_true(wl(WL_FIELD, "a.b", 7, "{\"a\": {\"b\": -1}}") == 7);
    assert_true(wl(WL_FIELD, "a.b", 7, "{\"a\": {\"b\": NaN}}") == 7);
    assert_true(wl(WL_FIELD, "a.b", 7, "{\"a\": 1}") == 7);
    assert_true(wl(WL_CONST, NULL, 100, "[1]") == 100);
}

static void sha_hex(const struct sbuf *b, char out[65])
{
    unsigned char d[32];
    SHA256((const unsigned char *)b->data, b->len, d);
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void test_auth_messages(void **state)
{
    const char *doc =
        "{\"signature\": \"x\", \"url\": \"https://203.0.113.7:41234\", \"request_idx\": "
        "98765, \"reqnum\": 1234, \"endpoint\": \"my-endpoint\", \"cost\": 256.0, "
        "\"__request_id\": \"z\"}";
    struct pyj_value *v = NULL;
    char err[64];
    assert_int_equal(pyj_parse(doc, strlen(doc), &v, err, sizeof err), 0);
    struct {
        enum auth_scheme s;
        size_t len;
        const char *sha;
    } cases[] = {
        {AUTH_FIELDS_V1, 112, "7ab7e895ac9a48ac0d72e8498d23212a423d493e12ca34fb1ec2765a2f97f663"},
        {AUTH_FIELDS_V2, 138, "cc358264951341b0a7d72b677badad32e637d600bfff8f41c67c924214584e36"},
        {AUTH_URL, 42, "454801132945a3342c59811ee8c85c11e130f69fdb02bf73e2d5222729b109f6"},
    };
    for (size_t i = 0; i < 3; i++) {
        struct sbuf b = SBUF_INIT;
        auth_message(cases[i].s, v, &b);
        assert_int_equal(b.len, cases[i].len);
        char hex[65];
        sha_hex(&b, hex);
        assert_string_equal(hex, cases[i].sha);
        sbuf_free(&b);
    }
    pyj_free(v);
}

static void test_jspan(void **state)
{
    static const char *const keys[] = {"payload", "auth_data"};
    struct jspan sp[2];
    const char *s = " { \"auth_data\" : {\"a\": \"}\\\"\"}, \"x\": [1, {\"payload\": 2}],"
                    " \"payload\" :\t[1, \"]\", {\"q\": null}] ,\"payload\": {\"k\": \"\\\\\"} } ";
    assert_int_equal(jspan_members(s, strlen(s), keys, 2, sp), 0);
    assert_true(sp[0].found && sp[1].found);
    assert_int_equal(sp[0].len, strlen("{\"k\": \"\\\\\"}")); /* last occurrence wins */
    assert_memory_equal(s + sp[0].off, "{\"k\": \"\\\\\"}", sp[0].len);
    assert_memory_equal(s + sp[1].off, "{\"a\": \"}\\\"\"}", sp[1].len);
    const char *esc = "{\"payl\\u006fad\": 5}";
    assert_int_equal(jspan_members(esc, strlen(esc), keys, 1, sp), 0);
    assert_true(sp[0].found && sp[0].len == 1);
    const char *bad[] = {
        "", "[]", "{", "{\"a\" 1}", "{\"a\": [1}", "{\"a\": \"x}", "{\"a\": 1,}", "{\"a\": 1 2}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(jspan_members(bad[i], strlen(bad[i]), keys, 1, sp), -1);
    assert_int_equal(jspan_members("{}", 2, keys, 1, sp), 0);
    assert_false(sp[0].found);
}

static void test_benchmark_cache(void **state)
{
    char path[] = "/tmp/sgpu-bench-unit-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    double p;
    assert_int_equal(benchmark_cache_write(path, 1234.5), 0);
    assert_int_equal(benchmark_cache_read(path, &p), 0);
    assert_true(p == 1234.5);
    const char *bad[] = {"", "0", "0.0", "-1", "nan", "inf", "12abc", "1e999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        FILE *f = fopen(path, "w");
        fputs(bad[i], f);
        fclose(f);
        assert_int_equal(benchmark_cache_read(path, &p), -1);
    }
    FILE *f = fopen(path, "w");
    fputs("256.0\n", f);
    fclose(f);
    assert_int_equal(benchmark_cache_read(path, &p), 0);
    assert_true(p == 256.0);
    unlink(path);
    assert_int_equal(benchmark_cache_read(path, &p), -1);
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
        cmocka_unit_test(test_config_errors),   cmocka_unit_test(test_workload_rules),
        cmocka_unit_test(test_auth_messages),   cmocka_unit_test(test_jspan),
        cmocka_unit_test(test_benchmark_cache), cmocka_unit_test(test_parse_bool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
