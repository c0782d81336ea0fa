/* Unit tests for the engine API's route tables (api.h) and its error body: which row a path
 * finds (with and without the trailing slash, prefixes, nothing), that every row is complete,
 * and the exact bytes of {"success": false, "error", "msg"} (http_json_error). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "../common/assert_ext.h"
#include "engine/api.h"
#include "engine/engine.h"
#include "httputil.h"
#include "sbuf.h"

static const char *row(const char *path)
{
    const struct api_route *r = api_route_find(path);
    return r ? r->path : NULL;
}

static void test_route_find(void **st)
{
    (void)st;
    ASSERT_EQ_STR(row("/route/"), "/route/");
    ASSERT_EQ_STR(row("/route"), "/route/"); /* with or without the trailing slash */
    ASSERT_EQ_STR(row("/worker_status/"), "/worker_status/");
    ASSERT_EQ_STR(row("/health"), "/health");
    assert_null(row("/health/")); /* exact: only the path as written, or without its slash */
    ASSERT_EQ_STR(row("/api/v0/endptjobs"), "/api/v0/endptjobs");
    ASSERT_EQ_STR(row("/api/v0/endptjobs/12/"), "/api/v0/endptjobs"); /* prefix */
    ASSERT_EQ_STR(row("/api/v0/autojobs/3/retry/"), "/api/v0/autojobs");
    ASSERT_EQ_STR(row("/api/v0/keyinfo"), "/api/v0/keyinfo/");
    ASSERT_EQ_STR(row("/ui"), "/ui");
    ASSERT_EQ_STR(row("/ui/app.js"), "/ui/");
    assert_null(row("/uix"));
    assert_null(row("/nope/"));
    assert_null(row("/"));
}

static void check_table(const struct api_route *t)
{
    for (const struct api_route *r = t; r->path; r++) {
        assert_non_null(r->handler);
        ASSERT_EQ_INT(r->path[0], '/');
        /* no row is shadowed by an earlier one */
        ASSERT_EQ_STR(row(r->path), r->path);
    }
}

static void test_tables(void **st)
{
    (void)st;
    check_table(api_wire_routes);
    check_table(api_mgmt_routes);
    /* the Vast wire routes that take a body say which methods they allow */
    for (const struct api_route *r = api_wire_routes; r->path; r++)
        ASSERT_NE_INT(r->methods, 0);
}

static void test_error_body(void **st)
{
    (void)st;
    struct sbuf b = SBUF_INIT;
    http_json_error(&b, "not_found", "no endpoint named x");
    ASSERT_EQ_STR(
        b.data, "{\"success\": false, \"error\": \"not_found\", \"msg\": \"no endpoint named x\"}");
    sbuf_free(&b);
    /* the message is escaped the way Python's json.dumps does (ensure_ascii) */
    b = (struct sbuf)SBUF_INIT;
    http_json_error(&b, "bad_request", "a \"q\"\n\xc3\xa9");
    ASSERT_EQ_STR(
        b.data,
        "{\"success\": false, \"error\": \"bad_request\", \"msg\": \"a \\\"q\\\"\\n\\u00e9\"}");
    sbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_find),
        cmocka_unit_test(test_tables),
        cmocka_unit_test(test_error_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
