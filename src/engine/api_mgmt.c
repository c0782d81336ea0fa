/* The management API (api.h), admin key only unless said otherwise:
 *   /api/v0/endptjobs[/ID/]                  endpoints: list, create, get, update, delete
 *   /api/v0/workergroups[/ID/[retry/]], /api/v0/autojobs/...   workergroups (same verbs; retry
 *                                            closes a failing workergroup's breaker)
 *   /api/v0/workers/, /api/v0/events/        workers and the event log
 *   /api/v0/keyinfo/ (keyinfo.c)             endpoints a key may route to (any valid key)
 *   /api/v0/timeseries/, /ui/ (dash.c)       the dashboard
 * Changes are stored durably before the answer (store_durable_begin/commit). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "clock.h"
#include "dash.h"
#include "engine.h"
#include "httputil.h"
#include "keyinfo.h"
#include "lifecycle.h"
#include "log.h"
#include "providers/provider.h"
#include "pyjson.h"
#include "router.h"
#include "state.h"
#include "store.h"
#include "xalloc.h"

/* Management changes are written in one durable transaction (store_durable_begin/commit)
 * before the in-memory state moves on; a write the store refused (disk full, I/O error) is
 * rolled back, the in-memory change undone, and the caller gets a JSON 503: never a 2xx for
 * state that is not on disk. */
static void reply_not_stored(struct api_ctx *c)
{
    char q[300];
    const char *m = store_errmsg(c->e->store);
    log_error("management_not_stored", "path=%s msg=%s", c->path, log_quote(q, sizeof q, m));
    api_reply_err(c, 503, "store_failed",
                  "the change could not be stored (%s); nothing was changed", m);
}

/* A valid endpoint name no endpoint has; else 400/409 answered and false. */
static bool name_usable(struct api_ctx *c, const char *name)
{
    if (!config_name_valid(name)) {
        api_reply_err(c, 400, "bad_request",
                      "endpoint_name must be 1-64 characters of "
                      "[A-Za-z0-9._-], starting with a letter or digit");
        return false;
    }
    if (state_endpoint_by_name(c->e, name)) {
        api_reply_err(c, 409, "conflict", "an endpoint named %s exists", name);
        return false;
    }
    return true;
}

/* GET /api/v0/endptjobs/: every endpoint. */
static void endpoint_list(struct api_ctx *c)
{
    struct engine *e = c->e;
    struct sbuf out = SBUF_INIT;
    sbuf_puts(&out, "{\"success\": true, \"results\": [");
    bool first = true;
    for (struct endpoint *ep = e->endpoints; ep; ep = ep->next) {
        if (!first) sbuf_puts(&out, ", ");
        state_endpoint_json(e, ep, &out);
        first = false;
    }
    sbuf_puts(&out, "]}");
    api_reply(c, 200, &out);
    sbuf_free(&out);
}

/* POST /api/v0/endptjobs/ {"endpoint_name", params...}: a new endpoint and its api_key. */
static void endpoint_create(struct api_ctx *c)
{
    struct engine *e = c->e;
    char err[300];
    if (!c->body) {
        api_reply_err(c, 400, "bad_request", "body must be a JSON object");
        return;
    }
    const char *name = NULL;
    int r = api_get_string(c, "endpoint_name", &name);
    if (r < 0) return;
    if (r == 0) {
        api_reply_err(c, 400, "bad_request", "endpoint_name is required");
        return;
    }
    if (!name_usable(c, name)) return;
    struct endpoint *ep = xcalloc(1, sizeof *ep);
    config_params_default(&ep->p);
    if (config_params_apply(&ep->p, c->body, err, sizeof err) != 0) {
        free(ep);
        api_reply_err(c, 400, "bad_request", "%s", err);
        return;
    }
    ep->id = e->next_endpoint_id;
    snprintf(ep->name, sizeof ep->name, "%s", name);
    if (state_random_hex(ep->api_key, API_KEY_LEN) != 0) {
        free(ep);
        api_reply_err(c, 500, "internal", "no randomness");
        return;
    }
    ep->created_at = clock_wall();
    if (store_durable_begin(e->store) != 0) {
        free(ep);
        reply_not_stored(c);
        return;
    }
    state_endpoint_add(e, ep); /* also writes next_endpoint_id */
    if (store_durable_commit(e->store, store_endpoint_save(e->store, ep)) != 0) {
        state_endpoint_remove(e, ep);
        reply_not_stored(c);
        return;
    }
    lifecycle_event(e, ep, NULL, "endpoint_created", "api", NULL);
    struct sbuf out = SBUF_INIT;
    sbuf_printf(&out, "{\"success\": true, \"result\": %lld, \"api_key\": \"%s\"}",
                (long long)ep->id, ep->api_key);
    api_reply(c, 200, &out);
    sbuf_free(&out);
}

static void endpoint_get(struct api_ctx *c, struct endpoint *ep)
{
    struct engine *e = c->e;
    struct sbuf out = SBUF_INIT;
    sbuf_puts(&out, "{\"success\": true, \"result\": ");
    state_endpoint_json(e, ep, &out);
    sbuf_putc(&out, '}');
    api_reply(c, 200, &out);
    sbuf_free(&out);
}

/* PUT /api/v0/endptjobs/ID/ {params..., "endpoint_name"?}: a new signing scheme replaces the
 * workers (rolling). */
static void endpoint_update(struct api_ctx *c, struct endpoint *ep)
{
    struct engine *e = c->e;
    char err[300];
    if (!c->body) {
        api_reply_err(c, 400, "bad_request", "body must be a JSON object");
        return;
    }
    const char *name = NULL;
    if (api_get_string(c, "endpoint_name", &name) < 0) return;
    if (name && strcmp(name, ep->name) != 0 && !name_usable(c, name)) return;
    struct ep_params p = ep->p;
    if (config_params_apply(&p, c->body, err, sizeof err) != 0) {
        api_reply_err(c, 400, "bad_request", "%s", err);
        return;
    }
    bool rescheme = p.sig_scheme != ep->p.sig_scheme;
    struct ep_params old_p = ep->p;
    char old_name[sizeof ep->name];
    memcpy(old_name, ep->name, sizeof old_name);
    if (store_durable_begin(e->store) != 0) {
        reply_not_stored(c);
        return;
    }
    ep->p = p;
    if (name) snprintf(ep->name, sizeof ep->name, "%s", name);
    if (store_durable_commit(e->store, store_endpoint_save(e->store, ep)) != 0) {
        ep->p = old_p;
        memcpy(ep->name, old_name, sizeof old_name);
        reply_not_stored(c);
        return;
    }
    if (rescheme) {
        /* workers verify the scheme they were started with (SGPU_AUTH_SCHEME): replace
         * them, rolling — each drains and is destroyed, the scaler creates new ones */
        for (size_t i = 0; i < ep->nws; i++) {
            free(ep->ws[i]->sig_url);
            ep->ws[i]->sig_url = NULL;
        }
        lifecycle_retire_endpoint(e, ep);
    }
    lifecycle_event(e, ep, NULL, "endpoint_updated", "api", NULL);
    api_reply_ok(c);
}

/* DELETE /api/v0/endptjobs/ID/: its workers drain and go, then the endpoint (lifecycle_tick). */
static void endpoint_delete(struct api_ctx *c, struct endpoint *ep)
{
    struct engine *e = c->e;
    if (store_durable_begin(e->store) != 0) {
        reply_not_stored(c);
        return;
    }
    ep->deleting = true;
    int rc = store_endpoint_save(e->store, ep);
    for (struct workergroup *g = e->wgs; g && rc == 0; g = g->next) {
        if (g->endpoint_id == ep->id && !g->deleting) {
            g->deleting = true;
            rc = store_wg_save(e->store, g);
            g->deleting = false; /* set for real below, once stored */
        }
    }
    if (store_durable_commit(e->store, rc) != 0) {
        ep->deleting = false;
        reply_not_stored(c);
        return;
    }
    for (struct workergroup *g = e->wgs; g; g = g->next)
        if (g->endpoint_id == ep->id) g->deleting = true;
    router_queue_clear(ep);
    lifecycle_retire_endpoint(e, ep);
    lifecycle_event(e, ep, NULL, "endpoint_deleting", "api", NULL);
    api_reply_ok(c);
}

static void h_endpoints(struct api_ctx *c)
{
    if (!api_auth_admin(c)) return;
    int64_t id = 0;
    int has_id = api_path_id(c->path, "/api/v0/endptjobs", &id);
    if (has_id < 0) {
        api_reply_err(c, 404, "not_found", "no such path");
        return;
    }
    if (has_id == 0) {
        if (c->method == EVHTTP_REQ_GET)
            endpoint_list(c);
        else if (api_method(c, EVHTTP_REQ_POST))
            endpoint_create(c);
        return;
    }
    struct endpoint *ep = state_endpoint_by_id(c->e, id);
    if (!ep || ep->deleting) {
        api_reply_err(c, 404, "not_found", "no endpoint %lld", (long long)id);
        return;
    }
    if (c->method == EVHTTP_REQ_GET)
        endpoint_get(c, ep);
    else if (c->method == EVHTTP_REQ_PUT)
        endpoint_update(c, ep);
    else if (c->method == EVHTTP_REQ_DELETE)
        endpoint_delete(c, ep);
    else
        api_reply_err(c, 405, "method_not_allowed", "method not allowed on %s", c->path);
}

static int wg_fields(struct api_ctx *c, struct workergroup *g, bool create)
{
    char err[300];
    struct json_object *launch = api_field(c, "launch");
    if (launch) {
        if (provider_validate(g->ops, launch, err, sizeof err) != 0) {
            api_reply_err(c, 400, "bad_request", "%s", err);
            return -1;
        }
    } else if (create) {
        struct json_object *empty = json_object_new_object();
        int rc = provider_validate(g->ops, empty, err, sizeof err);
        json_object_put(empty);
        if (rc != 0) {
            api_reply_err(c, 400, "bad_request", "%s", err);
            return -1;
        }
    }
    int64_t tw = g->test_workers;
    double ram = g->gpu_ram;
    if (api_get_int(c, "test_workers", 0, 10000, &tw) < 0 ||
        api_get_number(c, "gpu_ram", 0, 1e6, &ram) < 0)
        return -1;
    if (launch) {
        json_object_put(g->launch);
        g->launch = json_object_get(launch);
    } else if (!g->launch) {
        g->launch = json_object_new_object();
    }
    g->test_workers = (int)tw;
    g->gpu_ram = ram;
    return 0;
}

/* GET .../workergroups/: every workergroup. */
static void wg_list(struct api_ctx *c)
{
    struct engine *e = c->e;
    struct sbuf out = SBUF_INIT;
    sbuf_puts(&out, "{\"success\": true, \"results\": [");
    bool first = true;
    for (struct workergroup *g = e->wgs; g; g = g->next) {
        if (!first) sbuf_puts(&out, ", ");
        state_wg_json(e, g, &out);
        first = false;
    }
    sbuf_puts(&out, "]}");
    api_reply(c, 200, &out);
    sbuf_free(&out);
}

/* POST .../workergroups/ {"endpoint_name" | "endpoint_id", "provider"?, "launch"?,
 * "test_workers"?, "gpu_ram"?}: a workergroup with its provider (providers/provider.h). */
static void wg_create(struct api_ctx *c)
{
    struct engine *e = c->e;
    if (!c->body) {
        api_reply_err(c, 400, "bad_request", "body must be a JSON object");
        return;
    }
    const char *name = NULL, *prov = NULL;
    int64_t eid = 0;
    if (api_get_string(c, "endpoint_name", &name) < 0 ||
        api_get_int(c, "endpoint_id", 1, INT64_MAX / 2, &eid) < 0 ||
        api_get_string(c, "provider", &prov) < 0)
        return;
    if (!name && !eid) {
        api_reply_err(c, 400, "bad_request", "endpoint_name or endpoint_id is required");
        return;
    }
    struct endpoint *ep = name ? state_endpoint_by_name(e, name) : state_endpoint_by_id(e, eid);
    if (!ep || ep->deleting) {
        api_reply_err(c, 404, "not_found", "no such endpoint");
        return;
    }
    if (!prov) prov = "local";
    struct workergroup *g = xcalloc(1, sizeof *g);
    g->ops = provider_find(prov);
    if (!g->ops) {
        free(g);
        api_reply_err(c, 400, "bad_request", "provider must be %s", provider_names());
        return;
    }
    g->test_workers = 3;
    g->gpu_ram = 24;
    if (wg_fields(c, g, true) != 0) {
        json_object_put(g->launch);
        free(g);
        return;
    }
    g->id = e->next_wg_id;
    g->endpoint_id = ep->id;
    g->created_at = clock_wall();
    if (store_durable_begin(e->store) != 0) {
        json_object_put(g->launch);
        free(g);
        reply_not_stored(c);
        return;
    }
    state_wg_add(e, g); /* also writes next_wg_id */
    if (store_durable_commit(e->store, store_wg_save(e->store, g)) != 0) {
        state_wg_remove(e, g);
        reply_not_stored(c);
        return;
    }
    lifecycle_event(e, ep, NULL, "workergroup_created", g->ops->name, NULL);
    struct sbuf out = SBUF_INIT;
    /* Vast's SDK (create_workergroup) reads "id"; sgpu's own clients read "result" */
    sbuf_printf(&out, "{\"success\": true, \"result\": %lld, \"id\": %lld}", (long long)g->id,
                (long long)g->id);
    api_reply(c, 200, &out);
    sbuf_free(&out);
}

/* POST .../workergroups/ID/retry/: close the breaker of a failing workergroup. */
static void wg_retry(struct api_ctx *c, struct workergroup *g)
{
    struct engine *e = c->e;
    if (!api_method(c, EVHTTP_REQ_POST)) return;
    if (store_durable_begin(e->store) != 0) {
        reply_not_stored(c);
        return;
    }
    lifecycle_wg_reset(e, g, "retry");
    if (store_durable_commit(e->store, 0) != 0) {
        reply_not_stored(c);
        return;
    }
    api_reply_ok(c);
}

static void wg_get(struct api_ctx *c, struct workergroup *g)
{
    struct engine *e = c->e;
    struct sbuf out = SBUF_INIT;
    sbuf_puts(&out, "{\"success\": true, \"result\": ");
    state_wg_json(e, g, &out);
    sbuf_putc(&out, '}');
    api_reply(c, 200, &out);
    sbuf_free(&out);
}

/* PUT .../workergroups/ID/: a new configuration, with a fresh start (breaker closed). */
static void wg_update(struct api_ctx *c, struct workergroup *g)
{
    struct engine *e = c->e;
    if (!c->body) {
        api_reply_err(c, 400, "bad_request", "body must be a JSON object");
        return;
    }
    struct json_object *old_launch = json_object_get(g->launch);
    int old_tw = g->test_workers;
    double old_ram = g->gpu_ram;
    if (wg_fields(c, g, false) != 0) {
        json_object_put(old_launch);
        return;
    }
    if (store_durable_begin(e->store) != 0 ||
        store_durable_commit(e->store, store_wg_save(e->store, g)) != 0) {
        json_object_put(g->launch);
        g->launch = old_launch;
        g->test_workers = old_tw;
        g->gpu_ram = old_ram;
        reply_not_stored(c);
        return;
    }
    json_object_put(old_launch);
    lifecycle_wg_reset(e, g, "updated"); /* a new configuration gets a fresh start */
    store_flush(e->store);
    api_reply_ok(c);
}

/* DELETE .../workergroups/ID/: its workers drain and go, then the workergroup. */
static void wg_delete(struct api_ctx *c, struct workergroup *g)
{
    struct engine *e = c->e;
    if (store_durable_begin(e->store) != 0) {
        reply_not_stored(c);
        return;
    }
    g->deleting = true;
    if (store_durable_commit(e->store, store_wg_save(e->store, g)) != 0) {
        g->deleting = false;
        reply_not_stored(c);
        return;
    }
    lifecycle_retire_wg(e, g);
    api_reply_ok(c);
}

static void h_workergroups(struct api_ctx *c)
{
    const char *prefix = c->route->path;
    if (!api_auth_admin(c)) return;
    int64_t id = 0;
    /* POST <prefix>/<id>/retry/: close the breaker of a failing workergroup */
    char path[sizeof c->path];
    size_t pl = strlen(c->path);
    memcpy(path, c->path, pl + 1);
    if (pl && path[pl - 1] == '/') path[--pl] = '\0';
    bool retry = pl > 6 && strcmp(path + pl - 6, "/retry") == 0;
    if (retry) path[pl - 6] = '\0';
    int has_id = api_path_id(path, prefix, &id);
    if (has_id < 0 || (retry && has_id == 0)) {
        api_reply_err(c, 404, "not_found", "no such path");
        return;
    }
    if (has_id == 0) {
        if (c->method == EVHTTP_REQ_GET)
            wg_list(c);
        else if (api_method(c, EVHTTP_REQ_POST))
            wg_create(c);
        return;
    }
    struct workergroup *g = state_wg_by_id(c->e, id);
    if (!g || g->deleting) {
        api_reply_err(c, 404, "not_found", "no workergroup %lld", (long long)id);
        return;
    }
    if (retry)
        wg_retry(c, g);
    else if (c->method == EVHTTP_REQ_GET)
        wg_get(c, g);
    else if (c->method == EVHTTP_REQ_PUT)
        wg_update(c, g);
    else if (c->method == EVHTTP_REQ_DELETE)
        wg_delete(c, g);
    else
        api_reply_err(c, 405, "method_not_allowed", "method not allowed on %s", c->path);
}

static void h_workers(struct api_ctx *c)
{
    if (!api_auth_admin(c)) return;
    const char *name = api_query(c, "endpoint");
    struct endpoint *ep = NULL;
    if (name) {
        ep = state_endpoint_by_name(c->e, name);
        if (!ep) {
            api_reply_err(c, 404, "not_found", "no endpoint named %.80s", name);
            return;
        }
    }
    struct sbuf out = SBUF_INIT;
    sbuf_puts(&out, "{\"success\": true, \"results\": ");
    api_workers_list(c->e, ep, 0, &out);
    sbuf_putc(&out, '}');
    api_reply(c, 200, &out);
    sbuf_free(&out);
}

static void h_events(struct api_ctx *c)
{
    if (!api_auth_admin(c)) return;
    const char *name = api_query(c, "endpoint"), *lim = api_query(c, "limit");
    int limit = 100;
    if (lim) {
        char *end;
        long l = strtol(lim, &end, 10);
        if (end == lim || *end || l < 1 || l > 10000) {
            api_reply_err(c, 400, "bad_request", "limit must be an integer in 1..10000");
            return;
        }
        limit = (int)l;
    }
    struct endpoint *ep = NULL;
    if (name) {
        ep = state_endpoint_by_name(c->e, name);
        if (!ep) {
            api_reply_err(c, 404, "not_found", "no endpoint named %.80s", name);
            return;
        }
    }
    store_flush(c->e->store); /* the tick's pending events too (a failure is logged) */
    struct sbuf out = SBUF_INIT;
    sbuf_puts(&out, "{\"success\": true, \"results\": ");
    if (store_events_json(c->e->store, ep ? ep->id : -1, ep ? ep->name : NULL, limit, &out) != 0) {
        sbuf_free(&out);
        api_reply_err(c, 503, "store_failed", "the event log could not be read (%s)",
                      store_errmsg(c->e->store));
        return;
    }
    sbuf_putc(&out, '}');
    api_reply(c, 200, &out);
    sbuf_free(&out);
}

static void h_keyinfo(struct api_ctx *c)
{
    keyinfo_handle(c->e, c->req);
}

static void h_timeseries(struct api_ctx *c)
{
    dash_timeseries(c->e, c->req);
}

static void h_ui(struct api_ctx *c)
{
    dash_ui(c->req, c->path);
}

const struct api_route api_mgmt_routes[] = {
    {"/api/v0/endptjobs", API_PREFIX, 0, true, h_endpoints},
    {"/api/v0/workergroups", API_PREFIX, 0, true, h_workergroups},
    {"/api/v0/autojobs", API_PREFIX, 0, true, h_workergroups},
    {"/api/v0/workers/", API_EXACT, EVHTTP_REQ_GET, true, h_workers},
    {"/api/v0/events/", API_EXACT, EVHTTP_REQ_GET, true, h_events},
    {"/api/v0/keyinfo/", API_EXACT, 0, false, h_keyinfo},
    {"/api/v0/timeseries/", API_EXACT, 0, false, h_timeseries},
    {"/ui", API_EXACT, 0, false, h_ui},
    {"/ui/", API_PREFIX, 0, false, h_ui},
    {NULL, API_EXACT, 0, false, NULL},
};
