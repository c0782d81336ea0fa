/* Unit tests for src/common/workload: the rules the worker accounts with and the gateway asks
 * the engine for, on payloads parsed by pyjson as both programs parse them. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "pyjson.h"
#include "workload.h"

static struct pyj_value *parse(const char *text)
{
    struct pyj_value *v = NULL;
    char err[128];
    assert_int_equal(pyj_parse(text, strlen(text), &v, err, sizeof err), 0);
    return v;
}

#define ASSERT_WL(fn, json, want)                                                                  \
    do {                                                                                           \
        struct pyj_value *v_ = parse(json);                                                        \
        double got_ = fn(v_);                                                                      \
        if (fabs(got_ - (want)) > 1e-9)                                                            \
            fail_msg("%s(%s) = %.17g, want %.17g", #fn, json, got_, (double)(want));               \
        pyj_free(v_);                                                                              \
    } while (0)

static void test_tgi(void **state)
{
    (void)state;
    ASSERT_WL(workload_tgi, "{\"inputs\": \"x\", \"parameters\": {\"max_new_tokens\": 7}}", 7);
    ASSERT_WL(workload_tgi, "{\"inputs\": \"x\", \"parameters\": {\"max_new_tokens\": 2.5}}", 2.5);
    ASSERT_WL(workload_tgi, "{\"inputs\": \"x\"}", 256);
    ASSERT_WL(workload_tgi, "{\"parameters\": {\"max_new_tokens\": -3}}", 256);
    ASSERT_WL(workload_tgi, "{\"parameters\": {\"max_new_tokens\": \"9\"}}", 256);
    ASSERT_WL(workload_tgi, "{\"parameters\": {\"max_new_tokens\": Infinity}}", 256);
    ASSERT_WL(workload_tgi, "[1, 2]", 256);
}

static void test_openai(void **state)
{
    (void)state;
    ASSERT_WL(workload_openai, "{\"max_tokens\": 12}", 12);
    ASSERT_WL(workload_openai, "{\"max_completion_tokens\": 30}", 30);
    ASSERT_WL(workload_openai, "{\"max_tokens\": 0, \"max_completion_tokens\": 5}", 5);
    /* no bound: ceil(chars / 4) + 16, never 0 */
    ASSERT_WL(workload_openai, "{}", 16);
    ASSERT_WL(workload_openai, "{\"prompt\": \"abcdefgh\"}", 18);
    ASSERT_WL(workload_openai, "{\"prompt\": [\"abcd\", \"e\"]}", 18);
    ASSERT_WL(workload_openai,
              "{\"messages\": [{\"role\": \"user\", \"content\": \"abcdefghi\"},"
              " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"abc\"}]}]}",
              19);
    ASSERT_WL(workload_openai, "{\"input\": [\"abcdefghijklmnop\"]}", 20);
    /* nesting past the bound counts nothing, and does not recurse without end */
    ASSERT_WL(workload_openai, "{\"prompt\": [[[[[[[[[[[\"abcdefgh\"]]]]]]]]]]]}", 16);
}

static void test_comfy(void **state)
{
    (void)state;
    ASSERT_WL(workload_comfy, "{}", 260);
    ASSERT_WL(workload_comfy,
              "{\"workflow\": {\"a\": {\"width\": 1024, \"height\": 1024, \"steps\": 40}}}",
              (175.0 * 4 + 85.0) * 2);
    ASSERT_WL(workload_comfy, "{\"width\": -5, \"steps\": 10}", 130);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tgi),
        cmocka_unit_test(test_openai),
        cmocka_unit_test(test_comfy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
