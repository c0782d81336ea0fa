/* Unit test: schema 1 -> 2 (workergroup failure state, issue 15) on an existing database keeps
 * its rows, and the new columns round-trip (failing state, failures, last error). */
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

#include "engine/engine.h"
#include "engine/idmap.h"
#include "engine/state.h"
#include "engine/store.h"

static char dir[256];
static char path[300];

static int setup(void **st)
{
    (void)st;
    snprintf(dir, sizeof dir, "/tmp/sgpu-store-migrate-XXXXXX");
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

/* The schema an engine of schema version 1 wrote, with one endpoint and one workergroup. */
static const char v1[] =
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE endpoints(id INTEGER PRIMARY KEY, name TEXT NOT NULL, params TEXT NOT NULL,"
    "  api_key TEXT NOT NULL, state TEXT NOT NULL, created_at REAL NOT NULL,"
    "  perf_est REAL NOT NULL DEFAULT 0);"
    "CREATE TABLE workergroups(id INTEGER PRIMARY KEY, endpoint_id INTEGER NOT NULL,"
    "  provider TEXT NOT NULL, launch TEXT NOT NULL, test_workers INTEGER NOT NULL,"
    "  gpu_ram REAL NOT NULL, state TEXT NOT NULL, created_at REAL NOT NULL);"
    "CREATE TABLE workers(id INTEGER PRIMARY KEY, endpoint_id INTEGER NOT NULL,"
    "  workergroup_id INTEGER NOT NULL, state TEXT NOT NULL, intent TEXT NOT NULL,"
    "  draining INTEGER NOT NULL, retired INTEGER NOT NULL, url TEXT NOT NULL,"
    "  mtoken TEXT NOT NULL, version TEXT NOT NULL, error_msg TEXT NOT NULL,"
    "  instance TEXT NOT NULL, pid INTEGER NOT NULL, pid_start INTEGER NOT NULL,"
    "  max_perf REAL NOT NULL, reqnum INTEGER NOT NULL, created_at REAL NOT NULL,"
    "  started_at REAL NOT NULL, loaded_at REAL NOT NULL, last_report_at REAL NOT NULL);"
    "CREATE TABLE api_keys(key TEXT PRIMARY KEY, endpoint_id INTEGER, created_at REAL NOT NULL);"
    "CREATE TABLE events(id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL,"
    "  endpoint_id INTEGER NOT NULL, worker_id INTEGER NOT NULL, kind TEXT NOT NULL,"
    "  reason TEXT NOT NULL, inputs TEXT NOT NULL);"
    "CREATE INDEX events_ep ON events(endpoint_id, id);"
    "INSERT INTO meta VALUES('schema_version', '1');"
    "INSERT INTO endpoints VALUES(7, 'llm', '{}', 'k1', 'active', 1.0, 0);"
    "INSERT INTO workergroups VALUES(3, 7, 'local', '{}', 3, 24, 'active', 2.0);";

static struct engine *engine_new(void)
{
    struct engine *e = calloc(1, sizeof *e);
    e->worker_by_id = idmap_new();
    e->next_worker_id = e->next_endpoint_id = e->next_wg_id = 1;
    return e;
}

static void engine_free(struct engine *e)
{
    while (e->wgs)
        state_wg_remove(e, e->wgs);
    while (e->endpoints)
        state_endpoint_remove(e, e->endpoints);
    idmap_free(e->worker_by_id);
    free(e);
}

static void test_v1_database_migrates_and_keeps_rows(void **st)
{
    (void)st;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, v1, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    char err[200];
    struct store *s = store_open(path, err, sizeof err);
    assert_non_null(s);
    char v[32];
    assert_int_equal(store_meta_get(s, "schema_version", v, sizeof v), 0);
    assert_string_equal(v, "2");
    struct engine *e = engine_new();
    e->store = s;
    assert_int_equal(store_load(s, e), 0);
    struct workergroup *g = state_wg_by_id(e, 3);
    assert_non_null(g);
    assert_false(g->failing);
    assert_int_equal(g->fails, 0);
    assert_string_equal(g->last_error, "");
    assert_non_null(state_endpoint_by_name(e, "llm"));

    /* the new columns round-trip */
    g->failing = true;
    g->fails = 5;
    snprintf(g->last_error, sizeof g->last_error, "model server exited: \"boom\"");
    assert_int_equal(store_wg_save(s, g), 0);
    assert_int_equal(store_flush(s), 0);
    store_close(s);
    engine_free(e);

    s = store_open(path, err, sizeof err);
    assert_non_null(s);
    e = engine_new();
    e->store = s;
    assert_int_equal(store_load(s, e), 0);
    g = state_wg_by_id(e, 3);
    assert_non_null(g);
    assert_true(g->failing);
    assert_false(g->deleting);
    assert_int_equal(g->fails, 5);
    assert_string_equal(g->last_error, "model server exited: \"boom\"");
    store_close(s);
    engine_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_database_migrates_and_keeps_rows),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
