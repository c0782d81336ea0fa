/* SQLite persistence (WAL).
 *
 * Writes open a transaction lazily and store_flush() commits it: the tick flushes once per
 * period (synchronous=NORMAL: the WAL is written at commit, so a killed engine loses nothing;
 * only a power loss may drop the last ticks of hot state, which the workers re-report).
 * Management changes go in their own transaction (store_durable_begin/commit) with
 * synchronous=FULL: the WAL is fsynced before the API answers 2xx, and a failed write (disk
 * full, I/O error) is rolled back and answered 5xx.  All calls are on the loop thread;
 * a tick's transaction is a handful of small rows, far below a millisecond, so a writer thread
 * would only add locking.  Schema versions are in meta.schema_version; migrations run in order
 * at open; a newer schema than this binary knows is refused. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "clock.h"
#include "engine.h"
#include "httputil.h"
#include "log.h"
#include "providers/provider.h"
#include "pyjson.h"
#include "state.h"
#include "store.h"
#include "xalloc.h"

#define SCHEMA_VERSION 2

struct store {
    sqlite3 *db;
    bool in_txn;
    char err[200]; /* message of the last failure */
};

static void note_err(struct store *s, const char *msg)
{
    char q[300];
    snprintf(s->err, sizeof s->err, "%s", msg ? msg : "?");
    log_error("store_error", "msg=%s", log_quote(q, sizeof q, s->err));
}

static const char *const migrations[SCHEMA_VERSION] = {
    /* 1 */
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
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
    "CREATE INDEX events_ep ON events(endpoint_id, id);",
    /* 2: instance-failure back-off per workergroup (state 'failing' = breaker open) */
    "ALTER TABLE workergroups ADD COLUMN fails INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE workergroups ADD COLUMN last_error TEXT NOT NULL DEFAULT '';",
};

static int exec(struct store *s, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        note_err(s, msg);
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int txn(struct store *s)
{
    /* a failed statement may have rolled the transaction back (SQLITE_FULL, SQLITE_IOERR):
     * SQLite's autocommit flag is the truth */
    s->in_txn = s->in_txn && !sqlite3_get_autocommit(s->db);
    if (s->in_txn) return 0;
    if (exec(s, "BEGIN") != 0) return -1;
    s->in_txn = true;
    return 0;
}

void store_rollback(struct store *s)
{
    if (!s) return;
    if (!sqlite3_get_autocommit(s->db)) exec(s, "ROLLBACK");
    s->in_txn = false;
}

int store_flush(struct store *s)
{
    if (!s || !s->in_txn) return 0;
    s->in_txn = false;
    if (sqlite3_get_autocommit(s->db)) return -1; /* rolled back by a failed statement */
    if (exec(s, "COMMIT") == 0) return 0;
    store_rollback(s); /* a failed COMMIT may leave the transaction open */
    return -1;
}

int store_durable_begin(struct store *s)
{
    if (store_flush(s) != 0) return -1; /* the tick's pending rows first, on their own */
    if (exec(s, "PRAGMA synchronous=FULL") != 0) return -1;
    if (txn(s) != 0) {
        exec(s, "PRAGMA synchronous=NORMAL");
        return -1;
    }
    return 0;
}

int store_durable_commit(struct store *s, int rc)
{
    if (rc == 0) rc = store_flush(s);
    if (rc != 0) store_rollback(s);
    exec(s, "PRAGMA synchronous=NORMAL");
    return rc;
}

const char *store_errmsg(struct store *s)
{
    return s && s->err[0] ? s->err : "unknown error";
}

static sqlite3_stmt *prep(struct store *s, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        note_err(s, sqlite3_errmsg(s->db));
        return NULL;
    }
    return st;
}

static int step_done(struct store *s, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        note_err(s, sqlite3_errmsg(s->db));
        sqlite3_finalize(st);
        return -1;
    }
    sqlite3_finalize(st);
    return 0;
}

int store_meta_get(struct store *s, const char *key, char *out, size_t n)
{
    sqlite3_stmt *st = prep(s, "SELECT value FROM meta WHERE key=?");
    if (!st) return -1;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int rc = -1;
    if (sqlite3_step(st) == SQLITE_ROW) {
        snprintf(out, n, "%s", (const char *)sqlite3_column_text(st, 0));
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int store_meta_set(struct store *s, const char *key, const char *val)
{
    if (!s || txn(s)) return -1;
    sqlite3_stmt *st = prep(s, "INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)");
    if (!st) return -1;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, val, -1, SQLITE_STATIC);
    return step_done(s, st);
}

struct store *store_open(const char *path, char *err, size_t errlen)
{
    struct store *s = xcalloc(1, sizeof *s);
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "open %s: %s", path, s->db ? sqlite3_errmsg(s->db) : "no memory");
        sqlite3_close(s->db);
        free(s);
        return NULL;
    }
    sqlite3_busy_timeout(s->db, 2000);
    if (exec(s,
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=OFF;"
             "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);") != 0) {
        snprintf(err, errlen, "cannot initialise %s", path);
        store_close(s);
        return NULL;
    }
    char v[32] = "0";
    store_meta_get(s, "schema_version", v, sizeof v);
    int ver = atoi(v);
    if (ver > SCHEMA_VERSION) {
        snprintf(err, errlen, "%s has schema version %d, this sgpu-engine knows %d", path, ver,
                 SCHEMA_VERSION);
        store_close(s);
        return NULL;
    }
    for (int k = ver; k < SCHEMA_VERSION; k++) {
        if (exec(s, "BEGIN") || exec(s, migrations[k])) {
            exec(s, "ROLLBACK");
            snprintf(err, errlen, "migration to schema %d failed", k + 1);
            store_close(s);
            return NULL;
        }
        snprintf(v, sizeof v, "%d", k + 1);
        sqlite3_stmt *st =
            prep(s, "INSERT OR REPLACE INTO meta(key, value) VALUES('schema_version', ?)");
        if (!st || (sqlite3_bind_text(st, 1, v, -1, SQLITE_STATIC), step_done(s, st)) ||
            exec(s, "COMMIT")) {
            snprintf(err, errlen, "migration to schema %d failed", k + 1);
            store_close(s);
            return NULL;
        }
        log_info("store_migrated", "schema_version=%d", k + 1);
    }
    return s;
}

void store_close(struct store *s)
{
    if (!s) return;
    store_flush(s);
    sqlite3_close(s->db);
    free(s);
}

int store_endpoint_save(struct store *s, const struct endpoint *ep)
{
    if (txn(s)) return -1;
    struct sbuf p = SBUF_INIT;
    sbuf_putc(&p, '{');
    config_params_write(&ep->p, &p);
    sbuf_putc(&p, '}');
    sqlite3_stmt *st = prep(s, "INSERT OR REPLACE INTO endpoints(id, name, params, api_key, state,"
                               " created_at, perf_est) VALUES(?,?,?,?,?,?,?)");
    if (!st) {
        sbuf_free(&p);
        return -1;
    }
    sqlite3_bind_int64(st, 1, ep->id);
    sqlite3_bind_text(st, 2, ep->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, p.data, (int)p.len, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, ep->api_key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, ep->deleting ? "deleting" : "active", -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 6, ep->created_at);
    sqlite3_bind_double(st, 7, ep->perf_est);
    int rc = step_done(s, st);
    sbuf_free(&p);
    if (rc == 0) rc = store_api_key_add(s, ep->api_key, ep->id);
    return rc;
}

int store_endpoint_delete(struct store *s, int64_t id)
{
    if (txn(s)) return -1;
    sqlite3_stmt *st = prep(s, "DELETE FROM endpoints WHERE id=?");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, id);
    if (step_done(s, st)) return -1;
    st = prep(s, "DELETE FROM api_keys WHERE endpoint_id=?");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, id);
    return step_done(s, st);
}

int store_wg_save(struct store *s, const struct workergroup *g)
{
    if (txn(s)) return -1;
    sqlite3_stmt *st = prep(s, "INSERT OR REPLACE INTO workergroups(id, endpoint_id, provider,"
                               " launch, test_workers, gpu_ram, state, created_at, fails,"
                               " last_error) VALUES(?,?,?,?,?,?,?,?,?,?)");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, g->id);
    sqlite3_bind_int64(st, 2, g->endpoint_id);
    sqlite3_bind_text(st, 3, g->ops->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, json_object_to_json_string_ext(g->launch, JSON_C_TO_STRING_PLAIN), -1,
                      SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 5, g->test_workers);
    sqlite3_bind_double(st, 6, g->gpu_ram);
    sqlite3_bind_text(st, 7,
                      g->deleting  ? "deleting"
                      : g->failing ? "failing"
                                   : "active",
                      -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 8, g->created_at);
    sqlite3_bind_int(st, 9, g->fails);
    sqlite3_bind_text(st, 10, g->last_error, -1, SQLITE_STATIC);
    return step_done(s, st);
}

int store_wg_delete(struct store *s, int64_t id)
{
    if (txn(s)) return -1;
    sqlite3_stmt *st = prep(s, "DELETE FROM workergroups WHERE id=?");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, id);
    return step_done(s, st);
}

int store_worker_save(struct store *s, const struct worker *w)
{
    if (txn(s)) return -1;
    sqlite3_stmt *st =
        prep(s, "INSERT OR REPLACE INTO workers(id, endpoint_id, workergroup_id, state, intent,"
                " draining, retired, url, mtoken, version, error_msg, instance, pid, pid_start,"
                " max_perf, reqnum, created_at, started_at, loaded_at, last_report_at)"
                " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
    if (!st) return -1;
    int i = 1;
    sqlite3_bind_int64(st, i++, w->id);
    sqlite3_bind_int64(st, i++, w->endpoint_id);
    sqlite3_bind_int64(st, i++, w->wg_id);
    sqlite3_bind_text(st, i++, state_name(w->state), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, i++, w->intent == WI_PARK ? "park" : "active", -1, SQLITE_STATIC);
    sqlite3_bind_int(st, i++, w->draining);
    sqlite3_bind_int(st, i++, w->retired);
    sqlite3_bind_text(st, i++, w->url, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, i++, w->mtoken, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, i++, w->version, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, i++, w->error_msg, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, i++, w->instance, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, i++, w->pid);
    sqlite3_bind_int64(st, i++, (sqlite3_int64)w->pid_start);
    sqlite3_bind_double(st, i++, w->max_perf);
    sqlite3_bind_int64(st, i++, w->reqnum);
    sqlite3_bind_double(st, i++, w->created_at);
    sqlite3_bind_double(st, i++, w->started_at);
    sqlite3_bind_double(st, i++, w->loaded_at);
    sqlite3_bind_double(st, i++, w->last_report_wall);
    return step_done(s, st);
}

int store_worker_delete(struct store *s, int64_t id)
{
    if (txn(s)) return -1;
    sqlite3_stmt *st = prep(s, "DELETE FROM workers WHERE id=?");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, id);
    return step_done(s, st);
}

int store_api_key_add(struct store *s, const char *key, int64_t endpoint_id)
{
    if (txn(s)) return -1;
    sqlite3_stmt *st =
        prep(s, "INSERT OR REPLACE INTO api_keys(key, endpoint_id, created_at) VALUES(?,?,?)");
    if (!st) return -1;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (endpoint_id > 0)
        sqlite3_bind_int64(st, 2, endpoint_id);
    else
        sqlite3_bind_null(st, 2);
    sqlite3_bind_double(st, 3, clock_wall());
    return step_done(s, st);
}

int store_event_add(struct store *s, double ts, int64_t endpoint_id, int64_t worker_id,
                    const char *kind, const char *reason, const char *inputs)
{
    if (txn(s)) return -1;
    sqlite3_stmt *st = prep(s, "INSERT INTO events(ts, endpoint_id, worker_id, kind, reason,"
                               " inputs) VALUES(?,?,?,?,?,?)");
    if (!st) return -1;
    sqlite3_bind_double(st, 1, ts);
    sqlite3_bind_int64(st, 2, endpoint_id);
    sqlite3_bind_int64(st, 3, worker_id);
    sqlite3_bind_text(st, 4, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, reason, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, inputs, -1, SQLITE_STATIC);
    return step_done(s, st);
}

int store_events_trim(struct store *s, int keep)
{
    if (txn(s)) return -1;
    sqlite3_stmt *st = prep(s, "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?");
    if (!st) return -1;
    sqlite3_bind_int(st, 1, keep);
    return step_done(s, st);
}

int store_events_json(struct store *s, int64_t endpoint_id, const char *ep_name, int limit,
                      struct sbuf *out)
{
    sqlite3_stmt *st = prep(
        s, endpoint_id >= 0
               ? "SELECT * FROM (SELECT id, ts, endpoint_id, worker_id, kind, reason, inputs FROM"
                 " events WHERE endpoint_id=?2 ORDER BY id DESC LIMIT ?1) ORDER BY id"
               : "SELECT * FROM (SELECT id, ts, endpoint_id, worker_id, kind, reason, inputs FROM"
                 " events ORDER BY id DESC LIMIT ?1) ORDER BY id");
    if (!st) return -1;
    sqlite3_bind_int(st, 1, limit);
    if (endpoint_id >= 0) sqlite3_bind_int64(st, 2, endpoint_id);
    sbuf_putc(out, '[');
    bool first = true;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        char ts[40];
        pyj_format_float(sqlite3_column_double(st, 1), ts, sizeof ts);
        sbuf_printf(out, "%s{\"id\": %lld, \"ts\": %s, \"endpoint_id\": %lld, \"endpoint\": ",
                    first ? "" : ", ", (long long)sqlite3_column_int64(st, 0), ts,
                    (long long)sqlite3_column_int64(st, 2));
        const char *n = ep_name ? ep_name : "";
        pyj_write_string(out, n, strlen(n));
        sbuf_printf(out,
                    ", \"worker_id\": %lld, \"kind\": ", (long long)sqlite3_column_int64(st, 3));
        const char *k = (const char *)sqlite3_column_text(st, 4);
        const char *r = (const char *)sqlite3_column_text(st, 5);
        const char *in = (const char *)sqlite3_column_text(st, 6);
        pyj_write_string(out, k ? k : "", k ? strlen(k) : 0);
        sbuf_puts(out, ", \"reason\": ");
        pyj_write_string(out, r ? r : "", r ? strlen(r) : 0);
        /* inputs were written by the engine as JSON objects */
        sbuf_printf(out, ", \"inputs\": %s}", in && in[0] == '{' ? in : "{}");
        first = false;
    }
    sbuf_putc(out, ']');
    if (rc != SQLITE_DONE) note_err(s, sqlite3_errmsg(s->db));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int store_events_text(struct store *s, int64_t endpoint_id, struct sbuf *decisions,
                      struct sbuf *states)
{
    sqlite3_stmt *st = prep(s, "SELECT ts, worker_id, kind, reason FROM events WHERE"
                               " endpoint_id=? ORDER BY id");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, endpoint_id);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(st, 2);
        const char *r = (const char *)sqlite3_column_text(st, 3);
        struct sbuf *o = (k && strcmp(k, "state") == 0) ? states : decisions;
        sbuf_printf(o, "%.3f worker=%lld %s: %s\n", sqlite3_column_double(st, 0),
                    (long long)sqlite3_column_int64(st, 1), k ? k : "", r ? r : "");
    }
    if (rc != SQLITE_DONE) note_err(s, sqlite3_errmsg(s->db));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static enum wstate state_parse(const char *s)
{
    for (int k = 0; k < WS__COUNT; k++)
        if (strcmp(s, state_name((enum wstate)k)) == 0) return (enum wstate)k;
    return WS_ERROR;
}

static const char *col(sqlite3_stmt *st, int i)
{
    const char *t = (const char *)sqlite3_column_text(st, i);
    return t ? t : "";
}

int store_load(struct store *s, struct engine *e)
{
    sqlite3_stmt *st = prep(s, "SELECT id, name, params, api_key, state, created_at, perf_est"
                               " FROM endpoints ORDER BY id");
    if (!st) return -1;
    while (sqlite3_step(st) == SQLITE_ROW) {
        struct endpoint *ep = xcalloc(1, sizeof *ep);
        ep->id = sqlite3_column_int64(st, 0);
        snprintf(ep->name, sizeof ep->name, "%s", col(st, 1));
        config_params_default(&ep->p);
        struct json_object *p = json_tokener_parse(col(st, 2));
        char err[200];
        if (p) config_params_apply(&ep->p, p, err, sizeof err);
        json_object_put(p);
        snprintf(ep->api_key, sizeof ep->api_key, "%s", col(st, 3));
        ep->deleting = strcmp(col(st, 4), "deleting") == 0;
        ep->created_at = sqlite3_column_double(st, 5);
        ep->perf_est = sqlite3_column_double(st, 6);
        state_endpoint_add(e, ep);
    }
    sqlite3_finalize(st);

    st = prep(s, "SELECT id, endpoint_id, provider, launch, test_workers, gpu_ram, state,"
                 " created_at, fails, last_error FROM workergroups ORDER BY id");
    if (!st) return -1;
    while (sqlite3_step(st) == SQLITE_ROW) {
        struct workergroup *g = xcalloc(1, sizeof *g);
        g->id = sqlite3_column_int64(st, 0);
        g->endpoint_id = sqlite3_column_int64(st, 1);
        g->ops = provider_find(col(st, 2));
        if (!g->ops) g->ops = &command_provider;
        g->launch = json_tokener_parse(col(st, 3));
        if (!g->launch) g->launch = json_object_new_object();
        g->test_workers = sqlite3_column_int(st, 4);
        g->gpu_ram = sqlite3_column_double(st, 5);
        g->deleting = strcmp(col(st, 6), "deleting") == 0;
        g->failing = strcmp(col(st, 6), "failing") == 0;
        g->created_at = sqlite3_column_double(st, 7);
        g->fails = sqlite3_column_int(st, 8);
        snprintf(g->last_error, sizeof g->last_error, "%s", col(st, 9));
        state_wg_add(e, g);
    }
    sqlite3_finalize(st);

    st = prep(s, "SELECT id, endpoint_id, workergroup_id, state, intent, draining, retired, url,"
                 " mtoken, version, error_msg, instance, pid, pid_start, max_perf, reqnum,"
                 " created_at, started_at, loaded_at, last_report_at FROM workers ORDER BY id");
    if (!st) return -1;
    while (sqlite3_step(st) == SQLITE_ROW) {
        struct worker *w = xcalloc(1, sizeof *w);
        int i = 0;
        w->id = sqlite3_column_int64(st, i++);
        w->endpoint_id = sqlite3_column_int64(st, i++);
        w->wg_id = sqlite3_column_int64(st, i++);
        w->state = state_parse(col(st, i++));
        w->intent = strcmp(col(st, i++), "park") == 0 ? WI_PARK : WI_ACTIVE;
        w->draining = sqlite3_column_int(st, i++) != 0;
        w->retired = sqlite3_column_int(st, i++) != 0;
        snprintf(w->url, sizeof w->url, "%s", col(st, i++));
        snprintf(w->mtoken, sizeof w->mtoken, "%s", col(st, i++));
        snprintf(w->version, sizeof w->version, "%s", col(st, i++));
        snprintf(w->error_msg, sizeof w->error_msg, "%s", col(st, i++));
        snprintf(w->instance, sizeof w->instance, "%s", col(st, i++));
        w->pid = sqlite3_column_int(st, i++);
        w->pid_start = (unsigned long long)sqlite3_column_int64(st, i++);
        w->max_perf = sqlite3_column_double(st, i++);
        /* resume well above the last stored reqnum: grants between the last flush and a crash
         * must not be reissued with the same number */
        w->reqnum = sqlite3_column_int64(st, i++) + 1000;
        w->created_at = sqlite3_column_double(st, i++);
        w->started_at = sqlite3_column_double(st, i++);
        w->loaded_at = sqlite3_column_double(st, i++);
        w->last_report_wall = sqlite3_column_double(st, i++);
        w->state_since_mono = clock_mono();
        w->dirty = true;
        state_worker_add(e, w);
    }
    sqlite3_finalize(st);
    return 0;
}
