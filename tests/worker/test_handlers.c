/* Unit tests for src/worker/handlers.c: the workload (cost) rules of each handler kind
 * (handler_workload), including the PyWorker bugs fixed (B26: never 0 without max_tokens), and
 * the SGPU_CONFIG handlers file (valid file -> the route table; each malformed member refused). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../common/assert_ext.h"
#include "worker/handlers.h"

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

/* handlers_init with SGPU_CONFIG = a file holding `json`; its return code. */
static int load_file(struct worker *w, const char *json)
{
    char path[] = "/tmp/sgpu-handlers-unit-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE_INT(fd, 0);
    ASSERT_EQ_INT(write(fd, json, strlen(json)), (long)strlen(json));
    close(fd);
    memset(w, 0, sizeof *w);
    snprintf(w->cfg.config_file, sizeof w->cfg.config_file, "%s", path);
    w->cfg.wl_constant = 100;
    w->cfg.max_queue_time = 30;
    int saved = dup(2);
    FILE *null = freopen("/dev/null", "w", stderr); /* the refusals print their message */
    (void)null;
    int rc = handlers_init(w);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    unlink(path);
    return rc;
}

static void test_config_file(void **state)
{
    struct worker w;
    ASSERT_EQ_INT(
        load_file(&w, "{\"handlers\": [{\"route\": \"/a\", \"upstream\": \"/b\", "
                      "\"workload\": {\"field\": \"n\", \"default\": 3}, \"parallel\": false, "
                      "\"max_queue_time\": null, \"stream\": \"auto\", "
                      "\"benchmark\": {\"n\": 1}}, {\"route\": \"*\", \"workload\": "
                      "\"openai\", \"payload\": \"any\", \"unwrap_input\": true, "
                      "\"stream\": true}]}"),
        0);
    ASSERT_EQ_INT(w.nhandlers, 2);
    struct handler *a = &w.handlers[0], *g = &w.handlers[1];
    ASSERT_EQ_STR(a->route, "/a");
    ASSERT_EQ_STR(a->upstream, "/b");
    ASSERT_EQ_INT(a->wl, WL_FIELD);
    ASSERT_EQ_STR(a->wl_field, "n");
    ASSERT_EQ_DBL(a->wl_default, 3, 0);
    assert_false(a->parallel);
    ASSERT_LT_DBL(a->max_queue_time, 0);
    ASSERT_EQ_INT(a->stream, -1);
    ASSERT_EQ_STR(a->bench_payload, "{\"n\": 1}");
    ASSERT_EQ_INT(g->wl, WL_OPENAI);
    ASSERT_EQ_INT(g->check, PC_ANY);
    assert_true(g->unwrap_input);
    ASSERT_EQ_INT(g->stream, 1);
    assert_ptr_equal(w.generic, g);
    assert_ptr_equal(w.bench_handler, a);
    bool known;
    assert_ptr_equal(handlers_find(&w, "/a", &known), a);
    assert_ptr_equal(handlers_find(&w, "/other", &known), g);
    handlers_free(&w);

    static const char *const bad[] = {
        "[]",
        "{\"handlers\": []}",
        "{\"handlers\": [{\"route\": \"a\"}]}",
        "{\"handlers\": [{\"route\": \"/a\", \"upstream\": \"b\"}]}",
        "{\"handlers\": [{\"route\": \"/a\", \"workload\": \"gpu\"}]}",
        "{\"handlers\": [{\"route\": \"/a\", \"workload\": 5}]}",
        "{\"handlers\": [{\"route\": \"/a\", \"workload\": {\"field\": \"\"}}]}",
        "{\"handlers\": [{\"route\": \"/a\", \"workload\": {\"constant\": -1}}]}",
        "{\"handlers\": [{\"route\": \"/a\", \"workload\": {\"default\": \"x\"}}]}",
        "{\"handlers\": [{\"route\": \"/a\", \"parallel\": 1}]}",
        "{\"handlers\": [{\"route\": \"/a\", \"payload\": \"xml\"}]}",
        "{\"handlers\": [{\"route\": \"/a\", \"max_queue_time\": -1}]}",
        "{\"handlers\": [{\"route\": \"/a\", \"unwrap_input\": \"yes\"}]}",
        "{\"handlers\": [{\"route\": \"/a\", \"stream\": \"sometimes\"}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ASSERT_EQ_INT(load_file(&w, bad[i]), -1);
        handlers_free(&w);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_workload_rules),
        cmocka_unit_test(test_config_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
