/* HTTP routes: Vast wire routes (/route/, /pubkey/, /worker_status/, /delete_requests/,
 * /get_endpoint_workers/, /get_endpoint_logs/), management (/api/v0/...), /health, /metrics.
 * Every bad input gets a precise 4xx {"success": false, "error", "msg"}; bodies are parsed with
 * json-c in strict mode with UTF-8 validation and a depth limit. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "b64.h"
#include "clock.h"
#include "engine.h"
#include "httputil.h"
#include "log.h"
#include "pyjson.h"

/* Bodies over MAX_BODY get a JSON 413 from on_request; libevent itself (evhttp's
 * max_body_size, main.c) refuses only past HTTP_BODY_HARD_MAX, with its own HTML 413 before
 * any callback runs: libevent 2.1.12 has no hook for that answer (evhttp_set_errorcb and
 * evhttp_set_newreqcb came in 2.2), and reading any size into memory is not an option. */
#define MAX_BODY (1u << 20)

struct ctx {
    struct engine *e;
    struct evhttp_request *req;
    enum evhttp_cmd_type method;
    char path[512];
    struct evkeyvalq query;
    struct json_object *body; /* NULL when empty */
};

static void reply_err(struct ctx *c, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void reply_err(struct ctx *c, int status, const char *code, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct sbuf b = SBUF_INIT;
    sbuf_printf(&b, "{\"success\": false, \"error\": \"%s\", \"msg\": ", code);
    pyj_write_string(&b, msg, strlen(msg));
    sbuf_putc(&b, '}');
    http_reply_json(c->req, status, b.data, b.len);
    sbuf_free(&b);
    char q[640];
    log_debug("http_error", "path=%s status=%d msg=%s", c->path, status,
              log_quote(q, sizeof q, msg));
}

static void reply(struct ctx *c, int status, struct sbuf *b)
{
    http_reply_json(c->req, status, b->data ? b->data : "", b->len);
}

static void reply_ok(struct ctx *c)
{
    http_reply_json(c->req, 200, "{\"success\": true}", 17);
}

/* ---- input helpers ---- */

/* Parse the request body: empty -> NULL body (0); a JSON object -> 0; otherwise replies and
 * returns -1. */
static int parse_body(struct ctx *c)
{
    size_t len;
    const char *p = http_request_body(c->req, &len);
    size_t i = 0;
    while (i < len && isspace((unsigned char)p[i]))
        i++;
    if (i == len) return 0;
    struct json_tokener *tok = json_tokener_new_ex(32);
    if (!tok) abort();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    struct json_object *o = json_tokener_parse_ex(tok, p, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!o || jerr != json_tokener_success) {
        json_object_put(o);
        reply_err(c, 400, "bad_json", "body is not valid JSON: %s",
                  jerr == json_tokener_continue ? "unexpected end" : json_tokener_error_desc(jerr));
        return -1;
    }
    while (end < len && isspace((unsigned char)p[end]))
        end++;
    if (end != len) {
        json_object_put(o);
        reply_err(c, 400, "bad_json", "trailing data after the JSON value");
        return -1;
    }
    if (!json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        reply_err(c, 400, "bad_json", "body must be a JSON object");
        return -1;
    }
    c->body = o;
    return 0;
}

static struct json_object *field(struct ctx *c, const char *k)
{
    struct json_object *v;
    if (!c->body || !json_object_object_get_ex(c->body, k, &v)) return NULL;
    if (json_object_is_type(v, json_type_null)) return NULL;
    return v;
}

/* A string field: 1 present, 0 absent, -1 wrong (replied). */
static int get_string(struct ctx *c, const char *k, const char **out)
{
    struct json_object *v = field(c, k);
    if (!v) return 0;
    if (!json_object_is_type(v, json_type_string)) {
        reply_err(c, 400, "bad_request", "%s must be a string", k);
        return -1;
    }
    *out = json_object_get_string(v);
    if (strlen(*out) != (size_t)json_object_get_string_len(v)) {
        reply_err(c, 400, "bad_request", "%s contains a NUL character", k);
        return -1;
    }
    return 1;
}

/* A number field within [lo, hi]: 1 present, 0 absent, -1 wrong (replied). */
static int get_number(struct ctx *c, const char *k, double lo, double hi, double *out)
{
    struct json_object *v = field(c, k);
    if (!v) return 0;
    enum json_type t = json_object_get_type(v);
    double d = json_object_get_double(v);
    if ((t != json_type_int && t != json_type_double) || !isfinite(d)) {
        reply_err(c, 400, "bad_request", "%s must be a finite number", k);
        return -1;
    }
    if (d < lo || d > hi) {
        reply_err(c, 400, "bad_request", "%s out of range (%g..%g)", k, lo, hi);
        return -1;
    }
    *out = d;
    return 1;
}

static int get_int(struct ctx *c, const char *k, int64_t lo, int64_t hi, int64_t *out)
{
    struct json_object *v = field(c, k);
    if (!v) return 0;
    enum json_type t = json_object_get_type(v);
    if (t == json_type_double) {
        double d = json_object_get_double(v);
        if (!isfinite(d) || d != floor(d) || d < (double)lo || d > (double)hi) {
            reply_err(c, 400, "bad_request", "%s must be an integer in %lld..%lld", k,
                      (long long)lo, (long long)hi);
            return -1;
        }
        *out = (int64_t)d;
        return 1;
    }
    if (t != json_type_int) {
        reply_err(c, 400, "bad_request", "%s must be an integer", k);
        return -1;
    }
    errno = 0;
    int64_t x = json_object_get_int64(v);
    if (errno == ERANGE || x < lo || x > hi ||
        (x == INT64_MAX && json_object_get_uint64(v) > (uint64_t)INT64_MAX)) {
        reply_err(c, 400, "bad_request", "%s must be an integer in %lld..%lld", k, (long long)lo,
                  (long long)hi);
        return -1;
    }
    *out = x;
    return 1;
}

static const char *query(struct ctx *c, const char *k)
{
    return evhttp_find_header(&c->query, k);
}

/* The caller's key and its length (bytes): "Authorization: Bearer K", else the body's
 * "api_key", else ?api_key=.  NULL when none.  The length matters: a JSON string may hold a
 * NUL ("KEY\u0000x"), and a key must match whole, not up to its first NUL (the query string
 * cannot carry one: on_request refuses %00). */
static const char *api_key_of(struct ctx *c, size_t *len)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(c->req), "Authorization");
    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        h += 7;
        while (*h == ' ')
            h++;
        *len = strlen(h);
        return h;
    }
    struct json_object *v = field(c, "api_key");
    if (v && json_object_is_type(v, json_type_string)) {
        *len = (size_t)json_object_get_string_len(v);
        return json_object_get_string(v);
    }
    const char *q = query(c, "api_key");
    *len = q ? strlen(q) : 0;
    return q;
}

/* a (alen bytes) equals the NUL-terminated secret b, whole; the time taken depends only on
 * the lengths, never on where the bytes differ. */
static bool key_eq(const char *a, size_t alen, const char *b)
{
    size_t n = strlen(b);
    if (!a || alen != n || n == 0) return false;
    unsigned d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

static bool is_admin(struct ctx *c)
{
    size_t n;
    const char *k = api_key_of(c, &n);
    return key_eq(k, n, c->e->admin_key);
}

/* Admin or this endpoint's key; else replies 401/403 and returns false. */
static bool auth_endpoint(struct ctx *c, struct endpoint *ep)
{
    size_t kn;
    const char *k = api_key_of(c, &kn);
    if (key_eq(k, kn, c->e->admin_key) || (ep && key_eq(k, kn, ep->api_key))) return true;
    for (struct endpoint *o = c->e->endpoints; o; o = o->next) {
        if (key_eq(k, kn, o->api_key)) {
            reply_err(c, 403, "forbidden", "this key is not valid for this endpoint");
            return false;
        }
    }
    reply_err(c, 401, "auth_error", "Invalid user key");
    return false;
}

static bool auth_admin(struct ctx *c)
{
    if (is_admin(c)) return true;
    size_t kn;
    const char *k = api_key_of(c, &kn);
    for (struct endpoint *o = c->e->endpoints; o; o = o->next) {
        if (key_eq(k, kn, o->api_key)) {
            reply_err(c, 403, "forbidden", "management needs the admin key");
            return false;
        }
    }
    reply_err(c, 401, "auth_error", "Invalid user key");
    return false;
}

/* "/prefix/<id>/" -> id; returns 1 with id, 0 when the path is exactly the prefix, -1 else. */
static int path_id(const char *path, const char *prefix, int64_t *id)
{
    size_t pl = strlen(prefix);
    if (strncmp(path, prefix, pl) != 0) return -1;
    const char *r = path + pl;
    if (*r == '\0') return 0;
    if (*r == '/') r++;
    if (*r == '\0') return 0;
    int64_t v = 0;
    int nd = 0;
    while (isdigit((unsigned char)*r)) {
        if (++nd > 15) return -1;
        v = v * 10 + (*r - '0');
        r++;
    }
    if (nd == 0) return -1;
    if (*r == '/') r++;
    if (*r) return -1;
    *id = v;
    return 1;
}

static bool path_is(const char *path, const char *p)
{
    /* accept with or without the trailing slash */
    size_t n = strlen(p);
    if (strcmp(path, p) == 0) return true;
    return n > 1 && p[n - 1] == '/' && strncmp(path, p, n - 1) == 0 && path[n - 1] == '\0';
}

static bool method(struct ctx *c, int allowed)
{
    if (c->method & allowed) return true;
    reply_err(c, 405, "method_not_allowed", "method not allowed on %s", c->path);
    return false;
}

/* ---- worker / client routes ---- */

static void h_route(struct ctx *c)
{
    struct engine *e = c->e;
    if (!method(c, EVHTTP_REQ_POST)) return;
    double t0 = clock_mono();
    const char *name = NULL;
    int r = get_string(c, "endpoint", &name);
    if (r < 0) return;
    if (r == 0) name = query(c, "endpoint");
    double cost = 100.0, rt = 0;
    int64_t idx = 0;
    if (get_number(c, "cost", 0, 1e12, &cost) < 0 ||
        get_int(c, "request_idx", 0, INT64_MAX / 2, &idx) < 0 ||
        get_number(c, "replay_timeout", 0, 86400, &rt) < 0) {
        *e->c_routes_error += 1;
        return;
    }
    if (!name) {
        *e->c_routes_error += 1;
        reply_err(c, 400, "bad_request", "endpoint is required");
        return;
    }
    struct endpoint *ep = state_endpoint_by_name(e, name);
    if (!auth_endpoint(c, ep)) {
        *e->c_routes_error += 1;
        return;
    }
    if (!ep) {
        *e->c_routes_error += 1;
        reply_err(c, 404, "not_found", "no endpoint named %.80s", name);
        return;
    }
    struct sbuf out = SBUF_INIT;
    int status = router_route(e, ep, cost, idx, rt, &out, c->req, t0);
    if (status != 0) { /* 0: the signing threads answer */
        reply(c, status, &out);
        metrics_observe(e->h_route, clock_mono() - t0);
    }
    sbuf_free(&out);
}

static void h_pubkey(struct ctx *c)
{
    if (!method(c, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD)) return;
    http_reply(c->req, 200, "text/plain; charset=utf-8", c->e->pubkey_pem.data,
               c->e->pubkey_pem.len);
}

/* Token-less generation-1 workers (workergroup launch.tokenless_reports "url_secret", off by
 * default; docs/engine.md): PyWorker G1 never sends "mtoken", but the REPORT_ADDR it was given
 * carries the worker's token as URL user info, which its HTTP client sends as Basic
 * authentication.  For a report without "mtoken" from a worker of such a workergroup, the
 * password of that header stands in for the missing field; lifecycle_report then compares it
 * as it compares any token.  Without the setting nothing is added (403 as before). */
static void tokenless_report_token(struct ctx *c)
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

static void h_worker_status(struct ctx *c)
{
    if (!method(c, EVHTTP_REQ_POST)) return;
    if (!c->body) {
        reply_err(c, 400, "bad_request", "body must be a JSON object with id");
        return;
    }
    char err[300] = "";
    tokenless_report_token(c);
    int st = lifecycle_report(c->e, c->body, err, sizeof err);
    if (st == 200)
        reply_ok(c);
    else
        reply_err(c, st,
                  st == 404   ? "not_found"
                  : st == 403 ? "forbidden"
                              : "bad_request",
                  "%s", err);
}

static void h_delete_requests(struct ctx *c)
{
    struct engine *e = c->e;
    if (!method(c, EVHTTP_REQ_POST)) return;
    int64_t wid;
    int r = get_int(c, "worker_id", 0, INT64_MAX / 2, &wid);
    if (r < 0) return;
    if (r == 0) {
        reply_err(c, 400, "bad_request", "worker_id is required");
        return;
    }
    struct worker *w = state_worker_by_id(e, wid);
    if (!w) {
        reply_err(c, 404, "not_found", "unknown worker id %lld", (long long)wid);
        return;
    }
    const char *tok = NULL;
    if (get_string(c, "mtoken", &tok) < 0) return;
    if (w->mtoken[0] && !key_eq(tok, tok ? strlen(tok) : 0, w->mtoken)) { /* NUL refused */
        reply_err(c, 403, "forbidden", "mtoken %s for worker %lld",
                  tok ? "does not match" : "is required", (long long)wid);
        return;
    }
    struct json_object *idxs = field(c, "request_idxs"), *reqs = field(c, "requests");
    if (!idxs && !reqs) {
        reply_err(c, 400, "bad_request", "request_idxs or requests is required");
        return;
    }
    size_t n = 0;
    if (idxs) {
        if (!json_object_is_type(idxs, json_type_array)) {
            reply_err(c, 400, "bad_request", "request_idxs must be a list of integers");
            return;
        }
        for (size_t i = 0; i < json_object_array_length(idxs); i++) {
            if (!json_object_is_type(json_object_array_get_idx(idxs, i), json_type_int)) {
                reply_err(c, 400, "bad_request", "request_idxs[%zu] must be an integer", i);
                return;
            }
        }
        n += json_object_array_length(idxs);
    }
    if (reqs) {
        if (!json_object_is_type(reqs, json_type_array)) {
            reply_err(c, 400, "bad_request", "requests must be a list of objects");
            return;
        }
        for (size_t i = 0; i < json_object_array_length(reqs); i++) {
            struct json_object *o = json_object_array_get_idx(reqs, i), *ri;
            if (!json_object_is_type(o, json_type_object) ||
                !json_object_object_get_ex(o, "request_idx", &ri) ||
                !json_object_is_type(ri, json_type_int)) {
                reply_err(c, 400, "bad_request",
                          "requests[%zu] must be an object with an integer "
                          "request_idx",
                          i);
                return;
            }
        }
        n += json_object_array_length(reqs);
    }
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
                 (long long)wid, foreign, (long long)foreign_idx);
    }
    *e->c_deletes += (double)n;
    reply_ok(c);
}

/* Endpoint named by body {"id"} or {"endpoint"} (or query); replies on failure. */
static struct endpoint *endpoint_from_body(struct ctx *c)
{
    int64_t id = 0;
    int r = get_int(c, "id", 0, INT64_MAX / 2, &id);
    if (r < 0) return NULL;
    const char *name = NULL;
    if (r == 0) {
        int s = get_string(c, "endpoint", &name);
        if (s < 0) return NULL;
        if (!name) name = query(c, "endpoint");
        if (!name) {
            reply_err(c, 400, "bad_request", "id or endpoint is required");
            return NULL;
        }
    }
    struct endpoint *ep =
        name ? state_endpoint_by_name(c->e, name) : state_endpoint_by_id(c->e, id);
    if (ep && ep->deleting) ep = NULL;
    if (!auth_endpoint(c, ep)) return NULL;
    if (!ep) {
        reply_err(c, 404, "not_found", "no such endpoint");
        return NULL;
    }
    return ep;
}

static void workers_list(struct engine *e, struct endpoint *ep, int64_t wg_id, struct sbuf *out)
{
    sbuf_putc(out, '[');
    bool first = true;
    /* oldest first: the list is kept newest-first, so collect then reverse */
    size_t n = 0;
    for (struct worker *w = e->workers; w; w = w->next)
        n++;
    struct worker **v = calloc(n + 1, sizeof *v);
    if (!v) abort();
    size_t k = 0;
    for (struct worker *w = e->workers; w; w = w->next) {
        if (ep && w->endpoint_id != ep->id) continue;
        if (wg_id > 0 && w->wg_id != wg_id) continue;
        v[k++] = w;
    }
    while (k-- > 0) {
        if (!first) sbuf_puts(out, ", ");
        state_worker_json(e, v[k], out);
        first = false;
    }
    free(v);
    sbuf_putc(out, ']');
}

static void h_get_endpoint_workers(struct ctx *c)
{
    if (!method(c, EVHTTP_REQ_POST | EVHTTP_REQ_GET)) return;
    struct endpoint *ep = endpoint_from_body(c);
    if (!ep) return;
    struct sbuf out = SBUF_INIT;
    workers_list(c->e, ep, 0, &out);
    reply(c, 200, &out);
    sbuf_free(&out);
}

static void h_get_autogroup_workers(struct ctx *c)
{
    if (!method(c, EVHTTP_REQ_POST | EVHTTP_REQ_GET)) return;
    int64_t id = 0;
    int r = get_int(c, "id", 1, INT64_MAX / 2, &id);
    if (r < 0) return;
    if (r == 0) {
        reply_err(c, 400, "bad_request", "id is required");
        return;
    }
    struct workergroup *g = state_wg_by_id(c->e, id);
    struct endpoint *ep = g ? state_endpoint_by_id(c->e, g->endpoint_id) : NULL;
    if (!auth_endpoint(c, ep)) return;
    if (!g) {
        reply_err(c, 404, "not_found", "no workergroup %lld", (long long)id);
        return;
    }
    struct sbuf out = SBUF_INIT;
    workers_list(c->e, NULL, g->id, &out);
    reply(c, 200, &out);
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

static void h_get_endpoint_logs(struct ctx *c)
{
    if (!method(c, EVHTTP_REQ_POST | EVHTTP_REQ_GET)) return;
    int64_t tail = -1;
    struct json_object *t = field(c, "tail");
    if (t && get_int(c, "tail", -1, INT64_MAX / 2, &tail) < 0) return;
    struct endpoint *ep = endpoint_from_body(c);
    if (!ep) return;
    store_flush(c->e->store); /* the tick's pending events too (a failure is logged) */
    struct sbuf d = SBUF_INIT, s = SBUF_INIT, out = SBUF_INIT, empty = SBUF_INIT;
    if (store_events_text(c->e->store, ep->id, &d, &s) != 0) {
        sbuf_free(&d);
        sbuf_free(&s);
        reply_err(c, 503, "store_failed", "the event log could not be read (%s)",
                  store_errmsg(c->e->store));
        return;
    }
    sbuf_putc(&out, '{');
    tail_into(&out, "info0", &d, tail, false);
    tail_into(&out, "info1", &s, tail, true);
    tail_into(&out, "trace", &empty, tail, true);
    tail_into(&out, "debug", &empty, tail, true);
    sbuf_putc(&out, '}');
    reply(c, 200, &out);
    sbuf_free(&d);
    sbuf_free(&s);
    sbuf_free(&out);
}

/* ---- management ---- */

/* Management changes are written in one durable transaction (store_durable_begin/commit)
 * before the in-memory state moves on; a write the store refused (disk full, I/O error) is
 * rolled back, the in-memory change undone, and the caller gets a JSON 503: never a 2xx for
 * state that is not on disk. */
static void reply_not_stored(struct ctx *c)
{
    char q[300];
    const char *m = store_errmsg(c->e->store);
    log_error("management_not_stored", "path=%s msg=%s", c->path, log_quote(q, sizeof q, m));
    reply_err(c, 503, "store_failed", "the change could not be stored (%s); nothing was changed",
              m);
}

static void h_endpoints(struct ctx *c)
{
    struct engine *e = c->e;
    if (!auth_admin(c)) return;
    int64_t id = 0;
    int has_id = path_id(c->path, "/api/v0/endptjobs", &id);
    if (has_id < 0) {
        reply_err(c, 404, "not_found", "no such path");
        return;
    }
    char err[300];
    if (has_id == 0) {
        if (c->method == EVHTTP_REQ_GET) {
            struct sbuf out = SBUF_INIT;
            sbuf_puts(&out, "{\"success\": true, \"results\": [");
            bool first = true;
            for (struct endpoint *ep = e->endpoints; ep; ep = ep->next) {
                if (!first) sbuf_puts(&out, ", ");
                state_endpoint_json(e, ep, &out);
                first = false;
            }
            sbuf_puts(&out, "]}");
            reply(c, 200, &out);
            sbuf_free(&out);
            return;
        }
        if (!method(c, EVHTTP_REQ_POST)) return;
        if (!c->body) {
            reply_err(c, 400, "bad_request", "body must be a JSON object");
            return;
        }
        const char *name = NULL;
        int r = get_string(c, "endpoint_name", &name);
        if (r < 0) return;
        if (r == 0) {
            reply_err(c, 400, "bad_request", "endpoint_name is required");
            return;
        }
        if (!config_name_valid(name)) {
            reply_err(c, 400, "bad_request",
                      "endpoint_name must be 1-64 characters of "
                      "[A-Za-z0-9._-], starting with a letter or digit");
            return;
        }
        if (state_endpoint_by_name(e, name)) {
            reply_err(c, 409, "conflict", "an endpoint named %s exists", name);
            return;
        }
        struct endpoint *ep = calloc(1, sizeof *ep);
        if (!ep) abort();
        config_params_default(&ep->p);
        if (config_params_apply(&ep->p, c->body, err, sizeof err) != 0) {
            free(ep);
            reply_err(c, 400, "bad_request", "%s", err);
            return;
        }
        ep->id = e->next_endpoint_id;
        snprintf(ep->name, sizeof ep->name, "%s", name);
        if (state_random_hex(ep->api_key, API_KEY_LEN) != 0) {
            free(ep);
            reply_err(c, 500, "internal", "no randomness");
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
        reply(c, 200, &out);
        sbuf_free(&out);
        return;
    }
    struct endpoint *ep = state_endpoint_by_id(e, id);
    if (!ep || ep->deleting) {
        reply_err(c, 404, "not_found", "no endpoint %lld", (long long)id);
        return;
    }
    if (c->method == EVHTTP_REQ_GET) {
        struct sbuf out = SBUF_INIT;
        sbuf_puts(&out, "{\"success\": true, \"result\": ");
        state_endpoint_json(e, ep, &out);
        sbuf_putc(&out, '}');
        reply(c, 200, &out);
        sbuf_free(&out);
        return;
    }
    if (c->method == EVHTTP_REQ_PUT) {
        if (!c->body) {
            reply_err(c, 400, "bad_request", "body must be a JSON object");
            return;
        }
        const char *name = NULL;
        if (get_string(c, "endpoint_name", &name) < 0) return;
        if (name && strcmp(name, ep->name) != 0) {
            if (!config_name_valid(name)) {
                reply_err(c, 400, "bad_request",
                          "endpoint_name must be 1-64 characters of "
                          "[A-Za-z0-9._-], starting with a letter or digit");
                return;
            }
            if (state_endpoint_by_name(e, name)) {
                reply_err(c, 409, "conflict", "an endpoint named %s exists", name);
                return;
            }
        }
        struct ep_params p = ep->p;
        if (config_params_apply(&p, c->body, err, sizeof err) != 0) {
            reply_err(c, 400, "bad_request", "%s", err);
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
        reply_ok(c);
        return;
    }
    if (c->method == EVHTTP_REQ_DELETE) {
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
        reply_ok(c);
        return;
    }
    reply_err(c, 405, "method_not_allowed", "method not allowed on %s", c->path);
}

static int wg_fields(struct ctx *c, struct workergroup *g, bool create)
{
    char err[300];
    struct json_object *launch = field(c, "launch");
    if (launch) {
        if (provider_validate(g->kind, launch, err, sizeof err) != 0) {
            reply_err(c, 400, "bad_request", "%s", err);
            return -1;
        }
    } else if (create) {
        struct json_object *empty = json_object_new_object();
        int rc = provider_validate(g->kind, empty, err, sizeof err);
        json_object_put(empty);
        if (rc != 0) {
            reply_err(c, 400, "bad_request", "%s", err);
            return -1;
        }
    }
    int64_t tw = g->test_workers;
    double ram = g->gpu_ram;
    if (get_int(c, "test_workers", 0, 10000, &tw) < 0 || get_number(c, "gpu_ram", 0, 1e6, &ram) < 0)
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

static void h_workergroups(struct ctx *c, const char *prefix)
{
    struct engine *e = c->e;
    if (!auth_admin(c)) return;
    int64_t id = 0;
    /* POST <prefix>/<id>/retry/: close the breaker of a failing workergroup */
    char path[sizeof c->path];
    size_t pl = strlen(c->path);
    memcpy(path, c->path, pl + 1);
    if (pl && path[pl - 1] == '/') path[--pl] = '\0';
    bool retry = pl > 6 && strcmp(path + pl - 6, "/retry") == 0;
    if (retry) path[pl - 6] = '\0';
    int has_id = path_id(path, prefix, &id);
    if (has_id < 0 || (retry && has_id == 0)) {
        reply_err(c, 404, "not_found", "no such path");
        return;
    }
    if (has_id == 0) {
        if (c->method == EVHTTP_REQ_GET) {
            struct sbuf out = SBUF_INIT;
            sbuf_puts(&out, "{\"success\": true, \"results\": [");
            bool first = true;
            for (struct workergroup *g = e->wgs; g; g = g->next) {
                if (!first) sbuf_puts(&out, ", ");
                state_wg_json(e, g, &out);
                first = false;
            }
            sbuf_puts(&out, "]}");
            reply(c, 200, &out);
            sbuf_free(&out);
            return;
        }
        if (!method(c, EVHTTP_REQ_POST)) return;
        if (!c->body) {
            reply_err(c, 400, "bad_request", "body must be a JSON object");
            return;
        }
        const char *name = NULL, *prov = NULL;
        int64_t eid = 0;
        if (get_string(c, "endpoint_name", &name) < 0 ||
            get_int(c, "endpoint_id", 1, INT64_MAX / 2, &eid) < 0 ||
            get_string(c, "provider", &prov) < 0)
            return;
        if (!name && !eid) {
            reply_err(c, 400, "bad_request", "endpoint_name or endpoint_id is required");
            return;
        }
        struct endpoint *ep = name ? state_endpoint_by_name(e, name) : state_endpoint_by_id(e, eid);
        if (!ep || ep->deleting) {
            reply_err(c, 404, "not_found", "no such endpoint");
            return;
        }
        if (!prov) prov = "local";
        struct workergroup *g = calloc(1, sizeof *g);
        if (!g) abort();
        if (provider_parse_kind(prov, &g->kind) != 0) {
            free(g);
            reply_err(c, 400, "bad_request", "provider must be \"local\" or \"command\"");
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
        lifecycle_event(e, ep, NULL, "workergroup_created", provider_kind_name(g->kind), NULL);
        struct sbuf out = SBUF_INIT;
        /* Vast's SDK (create_workergroup) reads "id"; sgpu's own clients read "result" */
        sbuf_printf(&out, "{\"success\": true, \"result\": %lld, \"id\": %lld}", (long long)g->id,
                    (long long)g->id);
        reply(c, 200, &out);
        sbuf_free(&out);
        return;
    }
    struct workergroup *g = state_wg_by_id(e, id);
    if (!g || g->deleting) {
        reply_err(c, 404, "not_found", "no workergroup %lld", (long long)id);
        return;
    }
    if (retry) {
        if (!method(c, EVHTTP_REQ_POST)) return;
        if (store_durable_begin(e->store) != 0) {
            reply_not_stored(c);
            return;
        }
        lifecycle_wg_reset(e, g, "retry");
        if (store_durable_commit(e->store, 0) != 0) {
            reply_not_stored(c);
            return;
        }
        reply_ok(c);
        return;
    }
    if (c->method == EVHTTP_REQ_GET) {
        struct sbuf out = SBUF_INIT;
        sbuf_puts(&out, "{\"success\": true, \"result\": ");
        state_wg_json(e, g, &out);
        sbuf_putc(&out, '}');
        reply(c, 200, &out);
        sbuf_free(&out);
        return;
    }
    if (c->method == EVHTTP_REQ_PUT) {
        if (!c->body) {
            reply_err(c, 400, "bad_request", "body must be a JSON object");
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
        reply_ok(c);
        return;
    }
    if (c->method == EVHTTP_REQ_DELETE) {
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
        reply_ok(c);
        return;
    }
    reply_err(c, 405, "method_not_allowed", "method not allowed on %s", c->path);
}

/* POST /get_autogroup_logs/ {"id": WORKERGROUP, "tail"}: the logs of the workergroup's endpoint
 * (Vast's CLI `get wrkgrp-logs`), in the /get_endpoint_logs/ shape. */
static void h_get_autogroup_logs(struct ctx *c)
{
    if (!method(c, EVHTTP_REQ_POST | EVHTTP_REQ_GET)) return;
    int64_t id = 0, tail = -1;
    int r = get_int(c, "id", 1, INT64_MAX / 2, &id);
    if (r < 0) return;
    if (r == 0) {
        reply_err(c, 400, "bad_request", "id is required");
        return;
    }
    if (field(c, "tail") && get_int(c, "tail", -1, INT64_MAX / 2, &tail) < 0) return;
    struct workergroup *g = state_wg_by_id(c->e, id);
    struct endpoint *ep = g ? state_endpoint_by_id(c->e, g->endpoint_id) : NULL;
    if (!auth_endpoint(c, ep)) return;
    if (!g || !ep) {
        reply_err(c, 404, "not_found", "no workergroup %lld", (long long)id);
        return;
    }
    store_flush(c->e->store);
    struct sbuf d = SBUF_INIT, s = SBUF_INIT, out = SBUF_INIT, empty = SBUF_INIT;
    store_events_text(c->e->store, ep->id, &d, &s);
    sbuf_putc(&out, '{');
    tail_into(&out, "info0", &d, tail, false);
    tail_into(&out, "info1", &s, tail, true);
    tail_into(&out, "trace", &empty, tail, true);
    tail_into(&out, "debug", &empty, tail, true);
    sbuf_putc(&out, '}');
    reply(c, 200, &out);
    sbuf_free(&d);
    sbuf_free(&s);
    sbuf_free(&out);
}

/* POST /update_workers/ {"workergroup_id", "cancel_update"?} (Vast's SDK update_workers, CLI
 * `update workers`): replace the workergroup's workers — each drains and is destroyed, the
 * scaler creates new ones from the current configuration.  Answer {"success", "workergroup_id",
 * "workers_to_update", "cancelled", "msg"} (the CLI reads workers_to_update and cancelled).
 * A replacement cannot be taken back: cancel_update answers success false with error_msg. */
static void h_update_workers(struct ctx *c)
{
    if (!method(c, EVHTTP_REQ_POST)) return;
    if (!auth_admin(c)) return;
    int64_t id = 0;
    int r = get_int(c, "workergroup_id", 1, INT64_MAX / 2, &id);
    if (r < 0) return;
    if (r == 0) {
        reply_err(c, 400, "bad_request", "workergroup_id is required");
        return;
    }
    struct workergroup *g = state_wg_by_id(c->e, id);
    if (!g || g->deleting) {
        reply_err(c, 404, "not_found", "no workergroup %lld", (long long)id);
        return;
    }
    struct json_object *cv = field(c, "cancel_update");
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
    reply(c, 200, &out);
    sbuf_free(&out);
}

static void h_workers(struct ctx *c)
{
    if (!method(c, EVHTTP_REQ_GET)) return;
    if (!auth_admin(c)) return;
    const char *name = query(c, "endpoint");
    struct endpoint *ep = NULL;
    if (name) {
        ep = state_endpoint_by_name(c->e, name);
        if (!ep) {
            reply_err(c, 404, "not_found", "no endpoint named %.80s", name);
            return;
        }
    }
    struct sbuf out = SBUF_INIT;
    sbuf_puts(&out, "{\"success\": true, \"results\": ");
    workers_list(c->e, ep, 0, &out);
    sbuf_putc(&out, '}');
    reply(c, 200, &out);
    sbuf_free(&out);
}

static void h_events(struct ctx *c)
{
    if (!method(c, EVHTTP_REQ_GET)) return;
    if (!auth_admin(c)) return;
    const char *name = query(c, "endpoint"), *lim = query(c, "limit");
    int limit = 100;
    if (lim) {
        char *end;
        long l = strtol(lim, &end, 10);
        if (end == lim || *end || l < 1 || l > 10000) {
            reply_err(c, 400, "bad_request", "limit must be an integer in 1..10000");
            return;
        }
        limit = (int)l;
    }
    struct endpoint *ep = NULL;
    if (name) {
        ep = state_endpoint_by_name(c->e, name);
        if (!ep) {
            reply_err(c, 404, "not_found", "no endpoint named %.80s", name);
            return;
        }
    }
    store_flush(c->e->store); /* the tick's pending events too (a failure is logged) */
    struct sbuf out = SBUF_INIT;
    sbuf_puts(&out, "{\"success\": true, \"results\": ");
    if (store_events_json(c->e->store, ep ? ep->id : -1, ep ? ep->name : NULL, limit, &out) != 0) {
        sbuf_free(&out);
        reply_err(c, 503, "store_failed", "the event log could not be read (%s)",
                  store_errmsg(c->e->store));
        return;
    }
    sbuf_putc(&out, '}');
    reply(c, 200, &out);
    sbuf_free(&out);
}

static void h_metrics(struct ctx *c)
{
    if (!method(c, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD)) return;
    struct sbuf out = SBUF_INIT;
    metrics_render(c->e->metrics, &out);
    http_reply(c->req, 200, "text/plain; version=0.0.4", out.data ? out.data : "", out.len);
    sbuf_free(&out);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct ctx c;
    memset(&c, 0, sizeof c);
    c.e = arg;
    c.req = req;
    c.method = evhttp_request_get_command(req);
    TAILQ_INIT(&c.query);
    if (!http_request_path(req, c.path, sizeof c.path)) {
        snprintf(c.path, sizeof c.path, "?");
        reply_err(&c, 400, "bad_request", "malformed request URI");
        return;
    }
    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
    const char *q = u ? evhttp_uri_get_query(u) : NULL;
    if (q && evhttp_parse_query_str(q, &c.query) != 0) {
        reply_err(&c, 400, "bad_request", "malformed query string");
        evhttp_clear_headers(&c.query);
        return;
    }
    /* decoded query values are C strings: a %00 would cut a key or a name short */
    if (q && strcasestr(q, "%00")) {
        reply_err(&c, 400, "bad_request", "query string contains a NUL (%%00)");
        evhttp_clear_headers(&c.query);
        return;
    }
    const char *p = c.path;
    size_t blen = evbuffer_get_length(evhttp_request_get_input_buffer(req));
    if (blen > MAX_BODY) {
        reply_err(&c, 413, "too_large", "body larger than %u bytes", MAX_BODY);
    } else if (path_is(p, "/health")) {
        http_reply_json(req, 200, "{\"ok\": true}", 12);
    } else if (path_is(p, "/metrics")) {
        h_metrics(&c);
    } else if (path_is(p, "/pubkey/")) {
        h_pubkey(&c);
    } else if (path_is(p, "/api/v0/keyinfo/")) {
        keyinfo_handle(c.e, req);
    } else if (dash_handle(c.e, req, p)) {
        /* /ui/, /api/v0/timeseries/ (dash.c) */
    } else if (parse_body(&c) != 0) {
        /* replied */
    } else if (path_is(p, "/route/")) {
        h_route(&c);
    } else if (path_is(p, "/worker_status/")) {
        h_worker_status(&c);
    } else if (path_is(p, "/delete_requests/")) {
        h_delete_requests(&c);
    } else if (path_is(p, "/get_endpoint_workers/")) {
        h_get_endpoint_workers(&c);
    } else if (path_is(p, "/get_autogroup_workers/")) {
        h_get_autogroup_workers(&c);
    } else if (path_is(p, "/get_endpoint_logs/")) {
        h_get_endpoint_logs(&c);
    } else if (path_is(p, "/get_autogroup_logs/")) {
        h_get_autogroup_logs(&c);
    } else if (path_is(p, "/update_workers/")) {
        h_update_workers(&c);
    } else if (strncmp(p, "/api/v0/endptjobs", 17) == 0) {
        h_endpoints(&c);
    } else if (strncmp(p, "/api/v0/workergroups", 20) == 0) {
        h_workergroups(&c, "/api/v0/workergroups");
    } else if (strncmp(p, "/api/v0/autojobs", 16) == 0) {
        h_workergroups(&c, "/api/v0/autojobs");
    } else if (path_is(p, "/api/v0/workers/")) {
        h_workers(&c);
    } else if (path_is(p, "/api/v0/events/")) {
        h_events(&c);
    } else {
        reply_err(&c, 404, "not_found", "no route %.200s", p);
    }
    json_object_put(c.body);
    evhttp_clear_headers(&c.query);
}

int api_init(struct engine *e)
{
    evhttp_set_gencb(e->http, on_request, e);
    return 0;
}
