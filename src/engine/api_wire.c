/* The Vast wire routes (api.h): what PyWorker, Vast's SDK and Vast's CLI call, with the
 * bodies and answers they expect (docs/protocol.md).
 *   /route/              client: a grant for a worker, or "waiting" (router.c answers it)
 *   /pubkey/             worker: the key that verifies grants
 *   /worker_status/      worker: its report (lifecycle.c)
 *   /delete_requests/    worker: grants whose work is done (router.c frees their capacity)
 *   /get_endpoint_workers/, /get_autogroup_workers/, /get_endpoint_logs/,
 *   /get_autogroup_logs/ SDK / CLI: workers and logs of an endpoint or workergroup
 *   /update_workers/     SDK / CLI: replace a workergroup's workers */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "b64.h"
#include "clock.h"
#include "engine.h"
#include "httputil.h"
#include "lifecycle.h"
#include "log.h"
#include "providers/provider.h"
#include "pyjson.h"
#include "router.h"
#include "state.h"
#include "store.h"

static void h_route(struct api_ctx *c)
{
    struct engine *e = c->e;
    double t0 = clock_mono();
    const char *name = NULL;
    int r = api_get_string(c, "endpoint", &name);
    if (r < 0) return;
    if (r == 0) name = api_query(c, "endpoint");
    double cost = 100.0, rt = 0;
    int64_t idx = 0;
    if (api_get_number(c, "cost", 0, 1e12, &cost) < 0 ||
        api_get_int(c, "request_idx", 0, INT64_MAX / 2, &idx) < 0 ||
        api_get_number(c, "replay_timeout", 0, 86400, &rt) < 0) {
        *e->c_routes_error += 1;
        return;
    }
    if (!name) {
        *e->c_routes_error += 1;
        api_reply_err(c, 400, "bad_request", "endpoint is required");
        return;
    }
    struct endpoint *ep = state_endpoint_by_name(e, name);
    if (!api_auth_endpoint(c, ep)) {
        *e->c_routes_error += 1;
        return;
    }
    if (!ep) {
        *e->c_routes_error += 1;
        api_reply_err(c, 404, "not_found", "no endpoint named %.80s", name);
        return;
    }
    router_handle(e, ep, cost, idx, rt, c->req, t0); /* router.c answers */
}

static void h_pubkey(struct api_ctx *c)
{
    http_reply(c->req, 200, "text/plain; charset=utf-8", c->e->pubkey_pem.data,
               c->e->pubkey_pem.len);
}

/* Token-less generation-1 workers (workergroup launch.tokenless_reports "url_secret", off by
 * default; docs/engine.md): PyWorker G1 never sends "mtoken", but the REPORT_ADDR it was given
 * carries the worker's token as URL user info, which its HTTP client sends as Basic
 * authentication.  For a report without "mtoken" from a worker of such a workergroup, the
 * password of that header stands in for the missing field; lifecycle_report then compares it
 * as it compares any token.  Without the setting nothing is added (403 as before). */
static void tokenless_report_token(struct api_ctx *c)
{
    struct json_object *v;
    if (json_object_object_get_ex(c->body, "mtoken", &v)) return;
    if (!json_object_object_get_ex(c->body, "id", &v) || !json_object_is_type(v, json_type_int))
        return;
    struct worker *w = state_worker_by_id(c->e, json_object_get_int64(v));
    struct workergroup *g = w ? state_wg_by_id(c->e, w->wg_id) : NULL;
    if (!g || !provider_tokenless(g)) return;
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(c->req), "Authorization");
    if (!h || strncasecmp(h, "Basic ", 6) != 0) return;
    h += 6;
    size_t hl = strlen(h);
    uint8_t cred[256];
    size_t n = 0;
    if (hl > 340 || b64_decode_lenient(h, hl, cred, sizeof cred - 1, &n) != 0) return;
    const uint8_t *colon = memchr(cred, ':', n);
    if (!colon) return;
    size_t off = (size_t)(colon - cred) + 1;
    json_object_object_add(c->body, "mtoken",
                           json_object_new_string_len((const char *)cred + off, (int)(n - off)));
}

static void h_worker_status(struct api_ctx *c)
{
    if (!c->body) {
        api_reply_err(c, 400, "bad_request", "body must be a JSON object with id");
        return;
    }
    char err[300] = "";
    tokenless_report_token(c);
    int st = lifecycle_report(c->e, c->body, err, sizeof err);
    if (st == 200)
        api_reply_ok(c);
    else
        api_reply_err(c, st,
                      st == 404   ? "not_found"
                      : st == 403 ? "forbidden"
                                  : "bad_request",
                      "%s", err);
}

/* The worker named by worker_id, its mtoken checked; else 400/404/403 answered and NULL. */
static struct worker *delete_requests_worker(struct api_ctx *c)
{
    int64_t wid;
    int r = api_get_int(c, "worker_id", 0, INT64_MAX / 2, &wid);
    if (r < 0) return NULL;
    if (r == 0) {
        api_reply_err(c, 400, "bad_request", "worker_id is required");
        return NULL;
    }
    struct worker *w = state_worker_by_id(c->e, wid);
    if (!w) {
        api_reply_err(c, 404, "not_found", "unknown worker id %lld", (long long)wid);
        return NULL;
    }
    const char *tok = NULL;
    if (api_get_string(c, "mtoken", &tok) < 0) return NULL;
    if (w->mtoken[0] && !api_key_eq(tok, tok ? strlen(tok) : 0, w->mtoken)) { /* NUL refused */
        api_reply_err(c, 403, "forbidden", "mtoken %s for worker %lld",
                      tok ? "does not match" : "is required", (long long)wid);
        return NULL;
    }
    return w;
}

/* request_idxs: [int...] and requests: [{"request_idx": int}...] well-formed; *n their count.
 * 0, or -1 with 400 answered. */
static int delete_requests_check(struct api_ctx *c, struct json_object *idxs,
                                 struct json_object *reqs, size_t *n)
{
    *n = 0;
    if (idxs) {
        if (!json_object_is_type(idxs, json_type_array)) {
            api_reply_err(c, 400, "bad_request", "request_idxs must be a list of integers");
            return -1;
        }
        for (size_t i = 0; i < json_object_array_length(idxs); i++) {
            if (!json_object_is_type(json_object_array_get_idx(idxs, i), json_type_int)) {
                api_reply_err(c, 400, "bad_request", "request_idxs[%zu] must be an integer", i);
                return -1;
            }
        }
        *n += json_object_array_length(idxs);
    }
    if (reqs) {
        if (!json_object_is_type(reqs, json_type_array)) {
            api_reply_err(c, 400, "bad_request", "requests must be a list of objects");
            return -1;
        }
        for (size_t i = 0; i < json_object_array_length(reqs); i++) {
            struct json_object *o = json_object_array_get_idx(reqs, i), *ri;
            if (!json_object_is_type(o, json_type_object) ||
                !json_object_object_get_ex(o, "request_idx", &ri) ||
                !json_object_is_type(ri, json_type_int)) {
                api_reply_err(c, 400, "bad_request",
                              "requests[%zu] must be an object with an integer "
                              "request_idx",
                              i);
                return -1;
            }
        }
        *n += json_object_array_length(reqs);
    }
    return 0;
}

/* The work of these grants is done (router_grant_done frees their capacity now). */
static void delete_requests_close(struct engine *e, const struct worker *w,
                                  struct json_object *idxs, struct json_object *reqs)
{
    /* the work of these grants is done: free their capacity now (held requests may go); a
     * grant issued to another worker stays open (counted, logged once per call) */
    size_t foreign = 0;
    int64_t foreign_idx = 0;
    for (size_t i = 0; idxs && i < json_object_array_length(idxs); i++) {
        int64_t idx = json_object_get_int64(json_object_array_get_idx(idxs, i));
        if (router_grant_done(e, w, idx) < 0) {
            foreign++;
            foreign_idx = idx;
        }
    }
    for (size_t i = 0; reqs && i < json_object_array_length(reqs); i++) {
        struct json_object *ri;
        json_object_object_get_ex(json_object_array_get_idx(reqs, i), "request_idx", &ri);
        int64_t idx = json_object_get_int64(ri);
        if (router_grant_done(e, w, idx) < 0) {
            foreign++;
            foreign_idx = idx;
        }
    }
    if (foreign) {
        *e->c_deletes_foreign += (double)foreign;
        log_warn("delete_requests_foreign", "worker=%lld grants=%zu request_idx=%lld",
                 (long long)w->id, foreign, (long long)foreign_idx);
    }
}

static void h_delete_requests(struct api_ctx *c)
{
    struct worker *w = delete_requests_worker(c);
    if (!w) return;
    struct json_object *idxs = api_field(c, "request_idxs"), *reqs = api_field(c, "requests");
    if (!idxs && !reqs) {
        api_reply_err(c, 400, "bad_request", "request_idxs or requests is required");
        return;
    }
    size_t n = 0;
    if (delete_requests_check(c, idxs, reqs, &n) != 0) return;
    delete_requests_close(c->e, w, idxs, reqs);
    *c->e->c_deletes += (double)n;
    api_reply_ok(c);
}

/* Endpoint named by body {"id"} or {"endpoint"} (or query); replies on failure. */
static struct endpoint *endpoint_from_body(struct api_ctx *c)
{
    int64_t id = 0;
    int r = api_get_int(c, "id", 0, INT64_MAX / 2, &id);
    if (r < 0) return NULL;
    const char *name = NULL;
    if (r == 0) {
        int s = api_get_string(c, "endpoint", &name);
        if (s < 0) return NULL;
        if (!name) name = api_query(c, "endpoint");
        if (!name) {
            api_reply_err(c, 400, "bad_request", "id or endpoint is required");
            return NULL;
        }
    }
    struct endpoint *ep =
        name ? state_endpoint_by_name(c->e, name) : state_endpoint_by_id(c->e, id);
    if (ep && ep->deleting) ep = NULL;
    if (!api_auth_endpoint(c, ep)) return NULL;
    if (!ep) {
        api_reply_err(c, 404, "not_found", "no such endpoint");
        return NULL;
    }
    return ep;
}

static void h_get_endpoint_workers(struct api_ctx *c)
{
    struct endpoint *ep = endpoint_from_body(c);
    if (!ep) return;
    struct sbuf out = SBUF_INIT;
    api_workers_list(c->e, ep, 0, &out);
    api_reply(c, 200, &out);
    sbuf_free(&out);
}

static void h_get_autogroup_workers(struct api_ctx *c)
{
    int64_t id = 0;
    int r = api_get_int(c, "id", 1, INT64_MAX / 2, &id);
    if (r < 0) return;
    if (r == 0) {
        api_reply_err(c, 400, "bad_request", "id is required");
        return;
    }
    struct workergroup *g = state_wg_by_id(c->e, id);
    struct endpoint *ep = g ? state_endpoint_by_id(c->e, g->endpoint_id) : NULL;
    if (!api_auth_endpoint(c, ep)) return;
    if (!g) {
        api_reply_err(c, 404, "not_found", "no workergroup %lld", (long long)id);
        return;
    }
    struct sbuf out = SBUF_INIT;
    api_workers_list(c->e, NULL, g->id, &out);
    api_reply(c, 200, &out);
    sbuf_free(&out);
}

static void tail_into(struct sbuf *out, const char *key, struct sbuf *text, int64_t tail,
                      bool comma)
{
    const char *p = text->data ? text->data : "";
    size_t n = text->len;
    if (tail >= 0 && (size_t)tail < n) {
        p += n - (size_t)tail;
        n = (size_t)tail;
    }
    sbuf_printf(out, "%s\"%s\": ", comma ? ", " : "", key);
    pyj_write_string(out, p, n);
}

/* The endpoint's event log in Vast's logs shape {"info0": decisions, "info1": state changes,
 * "trace", "debug"}, each the last `tail` bytes (-1 = all). */
static void reply_logs(struct api_ctx *c, const struct endpoint *ep, int64_t tail)
{
    store_flush(c->e->store); /* the tick's pending events too (a failure is logged) */
    struct sbuf d = SBUF_INIT, s = SBUF_INIT, out = SBUF_INIT, empty = SBUF_INIT;
    if (store_events_text(c->e->store, ep->id, &d, &s) != 0) {
        sbuf_free(&d);
        sbuf_free(&s);
        api_reply_err(c, 503, "store_failed", "the event log could not be read (%s)",
                      store_errmsg(c->e->store));
        return;
    }
    sbuf_putc(&out, '{');
    tail_into(&out, "info0", &d, tail, false);
    tail_into(&out, "info1", &s, tail, true);
    tail_into(&out, "trace", &empty, tail, true);
    tail_into(&out, "debug", &empty, tail, true);
    sbuf_putc(&out, '}');
    api_reply(c, 200, &out);
    sbuf_free(&d);
    sbuf_free(&s);
    sbuf_free(&out);
}

static void h_get_endpoint_logs(struct api_ctx *c)
{
    int64_t tail = -1;
    struct json_object *t = api_field(c, "tail");
    if (t && api_get_int(c, "tail", -1, INT64_MAX / 2, &tail) < 0) return;
    struct endpoint *ep = endpoint_from_body(c);
    if (!ep) return;
    reply_logs(c, ep, tail);
}

/* POST /get_autogroup_logs/ {"id": WORKERGROUP, "tail"}: the logs of the workergroup's endpoint
 * (Vast's CLI `get wrkgrp-logs`), in the /get_endpoint_logs/ shape. */
static void h_get_autogroup_logs(struct api_ctx *c)
{
    int64_t id = 0, tail = -1;
    int r = api_get_int(c, "id", 1, INT64_MAX / 2, &id);
    if (r < 0) return;
    if (r == 0) {
        api_reply_err(c, 400, "bad_request", "id is required");
        return;
    }
    if (api_field(c, "tail") && api_get_int(c, "tail", -1, INT64_MAX / 2, &tail) < 0) return;
    struct workergroup *g = state_wg_by_id(c->e, id);
    struct endpoint *ep = g ? state_endpoint_by_id(c->e, g->endpoint_id) : NULL;
    if (!api_auth_endpoint(c, ep)) return;
    if (!g || !ep) {
        api_reply_err(c, 404, "not_found", "no workergroup %lld", (long long)id);
        return;
    }
    reply_logs(c, ep, tail);
}

/* POST /update_workers/ {"workergroup_id", "cancel_update"?} (Vast's SDK update_workers, CLI
 * `update workers`): replace the workergroup's workers — each drains and is destroyed, the
 * scaler creates new ones from the current configuration.  Answer {"success", "workergroup_id",
 * "workers_to_update", "cancelled", "msg"} (the CLI reads workers_to_update and cancelled).
 * A replacement cannot be taken back: cancel_update answers success false with error_msg. */
static void h_update_workers(struct api_ctx *c)
{
    if (!api_auth_admin(c)) return;
    int64_t id = 0;
    int r = api_get_int(c, "workergroup_id", 1, INT64_MAX / 2, &id);
    if (r < 0) return;
    if (r == 0) {
        api_reply_err(c, 400, "bad_request", "workergroup_id is required");
        return;
    }
    struct workergroup *g = state_wg_by_id(c->e, id);
    if (!g || g->deleting) {
        api_reply_err(c, 404, "not_found", "no workergroup %lld", (long long)id);
        return;
    }
    struct json_object *cv = api_field(c, "cancel_update");
    struct sbuf out = SBUF_INIT;
    if (cv && json_object_get_boolean(cv)) {
        const char *m = "an update cannot be cancelled: workers already draining are replaced";
        sbuf_printf(&out,
                    "{\"success\": false, \"workergroup_id\": %lld, \"cancelled\": false, "
                    "\"error_msg\": \"%s\", \"msg\": \"%s\"}",
                    (long long)g->id, m, m);
    } else {
        size_t n = 0;
        for (struct worker *w = c->e->workers; w; w = w->next)
            if (w->wg_id == g->id && !w->retired) n++;
        lifecycle_retire_wg(c->e, g);
        lifecycle_event(c->e, state_endpoint_by_id(c->e, g->endpoint_id), NULL, "workers_updating",
                        "api", NULL);
        store_flush(c->e->store);
        sbuf_printf(&out,
                    "{\"success\": true, \"workergroup_id\": %lld, \"workers_to_update\": %zu, "
                    "\"cancelled\": false, \"msg\": \"workers drain and are replaced\"}",
                    (long long)g->id, n);
    }
    api_reply(c, 200, &out);
    sbuf_free(&out);
}

const struct api_route api_wire_routes[] = {
    {"/route/", API_EXACT, EVHTTP_REQ_POST, true, h_route},
    {"/pubkey/", API_EXACT, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD, false, h_pubkey},
    {"/worker_status/", API_EXACT, EVHTTP_REQ_POST, true, h_worker_status},
    {"/delete_requests/", API_EXACT, EVHTTP_REQ_POST, true, h_delete_requests},
    {"/get_endpoint_workers/", API_EXACT, EVHTTP_REQ_POST | EVHTTP_REQ_GET, true,
     h_get_endpoint_workers},
    {"/get_autogroup_workers/", API_EXACT, EVHTTP_REQ_POST | EVHTTP_REQ_GET, true,
     h_get_autogroup_workers},
    {"/get_endpoint_logs/", API_EXACT, EVHTTP_REQ_POST | EVHTTP_REQ_GET, true, h_get_endpoint_logs},
    {"/get_autogroup_logs/", API_EXACT, EVHTTP_REQ_POST | EVHTTP_REQ_GET, true,
     h_get_autogroup_logs},
    {"/update_workers/", API_EXACT, EVHTTP_REQ_POST, true, h_update_workers},
    {NULL, API_EXACT, 0, false, NULL},
};
