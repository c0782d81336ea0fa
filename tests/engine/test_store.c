/* Unit tests for the SQLite store: schema creation and version check, round trip of endpoints,
 * workergroups and workers, event log queries and trimming, lazy transactions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "../common/assert_ext.h"
#include "engine/engine.h"
#include "engine/idmap.h"
#include "engine/providers/provider.h"
#include "engine/state.h"
#include "engine/store.h"

static char dir[256];
static char path[300];

static int setup(void **st)
{
    (void)st;
    snprintf(dir, sizeof dir, "/tmp/sgpu-store-test-XXXXXX");
    if (!mkdtemp(dir)) return -1;
    snprintf(path, sizeof path, "%s/engine.db", dir);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static struct engine *engine_new(void)
{
    struct engine *e = calloc(1, sizeof *e);
    e->worker_by_id = idmap_new();
    e->next_worker_id = e->next_endpoint_id = e->next_wg_id = 1;
    return e;
}

static void engine_free(struct engine *e)
{
    while (e->workers)
        state_worker_remove(e, e->workers);
    while (e->wgs)
        state_wg_remove(e, e->wgs);
    while (e->endpoints)
        state_endpoint_remove(e, e->endpoints);
    idmap_free(e->worker_by_id);
    free(e);
}

static void test_roundtrip(void **st)
{
    (void)st;
    char err[200];
    struct store *s = store_open(path, err, sizeof err);
    assert_non_null(s);
    struct endpoint *ep = calloc(1, sizeof *ep);
    ep->id = 7;
    snprintf(ep->name, sizeof ep->name, "llm");
    config_params_default(&ep->p);
    ep->p.min_load = 12.5;
    ep->p.sig_scheme = SIG_FIELDS_V2;
    snprintf(ep->api_key, sizeof ep->api_key, "k123");
    ep->created_at = 1.5;
    assert_int_equal(store_endpoint_save(s, ep), 0);
    struct workergroup g = {
        .id = 3, .endpoint_id = 7, .ops = &command_provider, .test_workers = 2, .gpu_ram = 24};
    g.launch = json_tokener_parse("{\"create\": \"echo hi\", \"destroy\": \"true\"}");
    assert_int_equal(store_wg_save(s, &g), 0);
    struct worker w;
    memset(&w, 0, sizeof w);
    w.id = 11;
    w.endpoint_id = 7;
    w.wg_id = 3;
    w.state = WS_STOPPED;
    w.intent = WI_PARK;
    w.max_perf = 250;
    w.reqnum = 40;
    snprintf(w.url, sizeof w.url, "http://127.0.0.1:9/\"x\"");
    snprintf(w.mtoken, sizeof w.mtoken, "tok");
    assert_int_equal(store_worker_save(s, &w), 0);
    assert_int_equal(store_meta_set(s, "next_worker_id", "12"), 0);
    for (int i = 0; i < 30; i++)
        assert_int_equal(store_event_add(s, i, 7, 11, "decision", "why \"q\"", "{\"a\": 1}"), 0);
    assert_int_equal(store_flush(s), 0);
    store_close(s);
    free(ep);
    json_object_put(g.launch);

    s = store_open(path, err, sizeof err);
    assert_non_null(s);
    struct engine *e = engine_new();
    e->store = s;
    assert_int_equal(store_load(s, e), 0);
    struct endpoint *l = state_endpoint_by_name(e, "llm");
    assert_non_null(l);
    assert_int_equal(l->id, 7);
    ASSERT_EQ_DBL(l->p.min_load, 12.5, 0);
    assert_int_equal(l->p.sig_scheme, SIG_FIELDS_V2);
    assert_string_equal(l->api_key, "k123");
    struct workergroup *lg = state_wg_by_id(e, 3);
    assert_non_null(lg);
    assert_ptr_equal(lg->ops, &command_provider);
    struct worker *lw = state_worker_by_id(e, 11);
    assert_non_null(lw);
    assert_int_equal(lw->state, WS_STOPPED);
    assert_int_equal(lw->intent, WI_PARK);
    ASSERT_EQ_DBL(lw->max_perf, 250, 0);
    ASSERT_GT_INT(lw->reqnum, 40); /* resumes above the stored value */
    assert_string_equal(lw->url, "http://127.0.0.1:9/\"x\"");
    assert_int_equal(l->nws, 1);
    char v[32];
    assert_int_equal(store_meta_get(s, "next_worker_id", v, sizeof v), 0);
    assert_string_equal(v, "12");
    struct sbuf out = SBUF_INIT;
    assert_int_equal(store_events_json(s, 7, "llm", 5, &out), 0);
    struct json_object *arr = json_tokener_parse(out.data);
    assert_non_null(arr);
    assert_int_equal(json_object_array_length(arr), 5);
    struct json_object *last = json_object_array_get_idx(arr, 4), *r;
    assert_true(json_object_object_get_ex(last, "reason", &r));
    assert_string_equal(json_object_get_string(r), "why \"q\"");
    json_object_put(arr);
    sbuf_free(&out);
    assert_int_equal(store_events_trim(s, 10), 0);
    assert_int_equal(store_flush(s), 0);
    assert_int_equal(store_events_json(s, -1, NULL, 1000, &out), 0);
    arr = json_tokener_parse(out.data);
    ASSERT_LE_INT(json_object_array_length(arr), 11);
    json_object_put(arr);
    sbuf_free(&out);
    assert_int_equal(store_worker_delete(s, 11), 0);
    assert_int_equal(store_endpoint_delete(s, 7), 0);
    store_close(s);
    engine_free(e);
}

static void test_newer_schema_refused(void **st)
{
    (void)st;
    char err[200];
    struct store *s = store_open(path, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(store_meta_set(s, "schema_version", "99"), 0);
    store_close(s);
    s = store_open(path, err, sizeof err);
    assert_null(s);
    assert_non_null(strstr(err, "schema version 99"));
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_newer_schema_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
