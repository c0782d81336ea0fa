/* Unit tests for src/worker/handlers.c: the workload (cost) rules of each handler kind
 * (handler_workload), including the PyWorker bugs fixed (B26: never 0 without max_tokens). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../common/assert_ext.h"
#include "worker/worker.h"

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
    ASSERT_EQ_DBL(wl(WL_TGI, NULL, 256, "{\"parameters\": {\"max_new_tokens\": 64}}"), 64, 0);
    ASSERT_EQ_DBL(wl(WL_TGI, NULL, 256, "{\"parameters\": {}}"), 256, 0);
    ASSERT_EQ_DBL(wl(WL_TGI, NULL, 256, "{\"parameters\": {\"max_new_tokens\": \"9\"}}"), 256, 0);
    ASSERT_EQ_DBL(wl(WL_OPENAI, NULL, 0, "{\"max_tokens\": 500}"), 500, 0);
    /* B26: never 0 when max_tokens is absent: prompt estimate */
    ASSERT_EQ_DBL(wl(WL_OPENAI, NULL, 0, "{\"prompt\": \"12345678\"}"), 2 + 16, 0);
    ASSERT_EQ_DBL(wl(WL_OPENAI, NULL, 0, "{\"messages\": [{\"content\": \"1234\"}]}"), 1 + 16, 0);
    ASSERT_EQ_DBL(wl(WL_OPENAI, NULL, 0, "{}"), 16, 0);
    ASSERT_EQ_DBL(wl(WL_COMFY, NULL, 0, "{}"), 260, 0);
    ASSERT_EQ_DBL(
        wl(WL_COMFY, NULL, 0, "{\"input\": {\"width\": 1024, \"height\": 1024, \"steps\": 40}}"),
        (175.0 * 4 + 85) * 2, 0);
    ASSERT_EQ_DBL(wl(WL_FIELD, "a.b", 7, "{\"a\": {\"b\": 3.5}}"), 3.5, 0);
    ASSERT_EQ_DBL(wl(WL_FIELD, "a.1", 7, "{\"a\": [1, 2]}"), 2, 0);
    ASSERT_EQ_DBL(wl(WL_FIELD, "a.b", 7, "{\"a\": {\"b\": -1}}"), 7, 0);
    ASSERT_EQ_DBL(wl(WL_FIELD, "a.b", 7, "{\"a\": {\"b\": NaN}}"), 7, 0);
    ASSERT_EQ_DBL(wl(WL_FIELD, "a.b", 7, "{\"a\": 1}"), 7, 0);
    ASSERT_EQ_DBL(wl(WL_CONST, NULL, 100, "[1]"), 100, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_workload_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
