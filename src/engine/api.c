/* HTTP dispatch of the engine API (api.h): request context, body parsing, authentication and
 * the input helpers the route files share; /health and /metrics.  The routes themselves are
 * tables in api_wire.c (Vast wire routes) and api_mgmt.c (management API, dashboard).
 *
 * One request: on_request builds the context (path, query), refuses oversized bodies, finds
 * the route (first matching row of this file's table, then the wire and the management
 * tables), parses the body if the row asks, checks the method, and calls the handler. */
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

#include "api.h"
#include "engine.h"
#include "httputil.h"
#include "log.h"
#include "metrics.h"
#include "state.h"
#include "xalloc.h"

/* Bodies over MAX_BODY get a JSON 413 from on_request; libevent itself (evhttp's
 * max_body_size, main.c) refuses only past HTTP_BODY_HARD_MAX, with its own HTML 413 before
 * any callback runs: libevent 2.1.12 has no hook for that answer (evhttp_set_errorcb and
 * evhttp_set_newreqcb came in 2.2), and reading any size into memory is not an option. */
#define MAX_BODY (1u << 20)

void api_reply_err(struct api_ctx *c, int status, const char *code, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    http_reply_json_error(c->req, status, code, "%s", msg);
    char q[640];
    log_debug("http_error", "path=%s status=%d msg=%s", c->path, status,
              log_quote(q, sizeof q, msg));
}

void api_reply(struct api_ctx *c, int status, struct sbuf *b)
{
    http_reply_json(c->req, status, b->data ? b->data : "", b->len);
}

void api_reply_ok(struct api_ctx *c)
{
    http_reply_json(c->req, 200, "{\"success\": true}", 17);
}

/* ---- input helpers ---- */

/* Parse the request body: empty -> NULL body (0); a JSON object -> 0; otherwise replies and
 * returns -1. */
int api_parse_body(struct api_ctx *c)
{
    size_t len;
    const char *p = http_request_body(c->req, &len);
    size_t i = 0;
    while (i < len && isspace((unsigned char)p[i]))
        i++;
    if (i == len) return 0;
    struct json_tokener *tok = json_tokener_new_ex(32);
    if (!tok) abort(); /* out of memory: the xalloc policy */
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    struct json_object *o = json_tokener_parse_ex(tok, p, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!o || jerr != json_tokener_success) {
        json_object_put(o);
        api_reply_err(c, 400, "bad_json", "body is not valid JSON: %s",
                      jerr == json_tokener_continue ? "unexpected end"
                                                    : json_tokener_error_desc(jerr));
        return -1;
    }
    while (end < len && isspace((unsigned char)p[end]))
        end++;
    if (end != len) {
        json_object_put(o);
        api_reply_err(c, 400, "bad_json", "trailing data after the JSON value");
        return -1;
    }
    if (!json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        api_reply_err(c, 400, "bad_json", "body must be a JSON object");
        return -1;
    }
    c->body = o;
    return 0;
}

struct json_object *api_field(struct api_ctx *c, const char *k)
{
    struct json_object *v;
    if (!c->body || !json_object_object_get_ex(c->body, k, &v)) return NULL;
    if (json_object_is_type(v, json_type_null)) return NULL;
    return v;
}

/* A string field: 1 present, 0 absent, -1 wrong (replied). */
int api_get_string(struct api_ctx *c, const char *k, const char **out)
{
    struct json_object *v = api_field(c, k);
    if (!v) return 0;
    if (!json_object_is_type(v, json_type_string)) {
        api_reply_err(c, 400, "bad_request", "%s must be a string", k);
        return -1;
    }
    *out = json_object_get_string(v);
    if (strlen(*out) != (size_t)json_object_get_string_len(v)) {
        api_reply_err(c, 400, "bad_request", "%s contains a NUL character", k);
        return -1;
    }
    return 1;
}

/* A number field within [lo, hi]: 1 present, 0 absent, -1 wrong (replied). */
int api_get_number(struct api_ctx *c, const char *k, double lo, double hi, double *out)
{
    struct json_object *v = api_field(c, k);
    if (!v) return 0;
    enum json_type t = json_object_get_type(v);
    double d = json_object_get_double(v);
    if ((t != json_type_int && t != json_type_double) || !isfinite(d)) {
        api_reply_err(c, 400, "bad_request", "%s must be a finite number", k);
        return -1;
    }
    if (d < lo || d > hi) {
        api_reply_err(c, 400, "bad_request", "%s out of range (%g..%g)", k, lo, hi);
        return -1;
    }
    *out = d;
    return 1;
}

int api_get_int(struct api_ctx *c, const char *k, int64_t lo, int64_t hi, int64_t *out)
{
    struct json_object *v = api_field(c, k);
    if (!v) return 0;
    enum json_type t = json_object_get_type(v);
    if (t == json_type_double) {
        double d = json_object_get_double(v);
        if (!isfinite(d) || d != floor(d) || d < (double)lo || d > (double)hi) {
            api_reply_err(c, 400, "bad_request", "%s must be an integer in %lld..%lld", k,
                          (long long)lo, (long long)hi);
            return -1;
        }
        *out = (int64_t)d;
        return 1;
    }
    if (t != json_type_int) {
        api_reply_err(c, 400, "bad_request", "%s must be an integer", k);
        return -1;
    }
    errno = 0;
    int64_t x = json_object_get_int64(v);
    if (errno == ERANGE || x < lo || x > hi ||
        (x == INT64_MAX && json_object_get_uint64(v) > (uint64_t)INT64_MAX)) {
        api_reply_err(c, 400, "bad_request", "%s must be an integer in %lld..%lld", k,
                      (long long)lo, (long long)hi);
        return -1;
    }
    *out = x;
    return 1;
}

const char *api_query(struct api_ctx *c, const char *k)
{
    return evhttp_find_header(&c->query, k);
}

/* The caller's key and its length (bytes): "Authorization: Bearer K", else the body's
 * "api_key", else ?api_key=.  NULL when none.  The length matters: a JSON string may hold a
 * NUL ("KEY\u0000x"), and a key must match whole, not up to its first NUL (the query string
 * cannot carry one: on_request refuses %00). */
const char *api_bearer_key(struct evhttp_request *req)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    return h;
}

static const char *api_key_of(struct api_ctx *c, size_t *len)
{
    const char *h = api_bearer_key(c->req);
    if (h) {
        *len = strlen(h);
        return h;
    }
    struct json_object *v = api_field(c, "api_key");
    if (v && json_object_is_type(v, json_type_string)) {
        *len = (size_t)json_object_get_string_len(v);
        return json_object_get_string(v);
    }
    const char *q = api_query(c, "api_key");
    *len = q ? strlen(q) : 0;
    return q;
}

/* a (alen bytes) equals the NUL-terminated secret b, whole; the time taken depends only on
 * the lengths, never on where the bytes differ. */
bool api_key_eq(const char *a, size_t alen, const char *b)
{
    size_t n = strlen(b);
    if (!a || alen != n || n == 0) return false;
    unsigned d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

static bool is_admin(struct api_ctx *c)
{
    size_t n;
    const char *k = api_key_of(c, &n);
    return api_key_eq(k, n, c->e->admin_key);
}

/* Admin or this endpoint's key; else replies 401/403 and returns false. */
bool api_auth_endpoint(struct api_ctx *c, struct endpoint *ep)
{
    size_t kn;
    const char *k = api_key_of(c, &kn);
    if (api_key_eq(k, kn, c->e->admin_key) || (ep && api_key_eq(k, kn, ep->api_key))) return true;
    for (struct endpoint *o = c->e->endpoints; o; o = o->next) {
        if (api_key_eq(k, kn, o->api_key)) {
            api_reply_err(c, 403, "forbidden", "this key is not valid for this endpoint");
            return false;
        }
    }
    api_reply_err(c, 401, "auth_error", "Invalid user key");
    return false;
}

bool api_auth_admin(struct api_ctx *c)
{
    if (is_admin(c)) return true;
    size_t kn;
    const char *k = api_key_of(c, &kn);
    for (struct endpoint *o = c->e->endpoints; o; o = o->next) {
        if (api_key_eq(k, kn, o->api_key)) {
            api_reply_err(c, 403, "forbidden", "management needs the admin key");
            return false;
        }
    }
    api_reply_err(c, 401, "auth_error", "Invalid user key");
    return false;
}

/* "/prefix/<id>/" -> id; returns 1 with id, 0 when the path is exactly the prefix, -1 else. */
int api_path_id(const char *path, const char *prefix, int64_t *id)
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

static bool api_path_is(const char *path, const char *p)
{
    /* accept with or without the trailing slash */
    size_t n = strlen(p);
    if (strcmp(path, p) == 0) return true;
    return n > 1 && p[n - 1] == '/' && strncmp(path, p, n - 1) == 0 && path[n - 1] == '\0';
}

bool api_method(struct api_ctx *c, int allowed)
{
    if (c->method & allowed) return true;
    api_reply_err(c, 405, "method_not_allowed", "method not allowed on %s", c->path);
    return false;
}

void api_workers_list(struct engine *e, struct endpoint *ep, int64_t wg_id, struct sbuf *out)
{
    sbuf_putc(out, '[');
    bool first = true;
    /* oldest first: the list is kept newest-first, so collect then reverse */
    size_t n = 0;
    for (struct worker *w = e->workers; w; w = w->next)
        n++;
    struct worker **v = xcalloc(n + 1, sizeof *v);
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

static void h_metrics(struct api_ctx *c)
{
    struct sbuf out = SBUF_INIT;
    metrics_render(c->e->metrics, &out);
    http_reply(c->req, 200, "text/plain; version=0.0.4", out.data ? out.data : "", out.len);
    sbuf_free(&out);
}

static void h_health(struct api_ctx *c)
{
    http_reply_json(c->req, 200, "{\"ok\": true}", 12);
}

/* Operations: liveness and Prometheus. */
static const struct api_route ops_routes[] = {
    {"/health", API_EXACT, 0, false, h_health},
    {"/metrics", API_EXACT, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD, false, h_metrics},
    {NULL, API_EXACT, 0, false, NULL},
};

static const struct api_route *const tables[] = {ops_routes, api_wire_routes, api_mgmt_routes};

const struct api_route *api_route_find(const char *path)
{
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++) {
        for (const struct api_route *r = tables[t]; r->path; r++) {
            bool hit = r->match == API_PREFIX ? strncmp(path, r->path, strlen(r->path)) == 0
                                              : api_path_is(path, r->path);
            if (hit) return r;
        }
    }
    return NULL;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct api_ctx c;
    memset(&c, 0, sizeof c);
    c.e = arg;
    c.req = req;
    c.method = evhttp_request_get_command(req);
    TAILQ_INIT(&c.query);
    if (!http_request_path(req, c.path, sizeof c.path)) {
        snprintf(c.path, sizeof c.path, "?");
        api_reply_err(&c, 400, "bad_request", "malformed request URI");
        return;
    }
    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
    const char *q = u ? evhttp_uri_get_query(u) : NULL;
    if (q && evhttp_parse_query_str(q, &c.query) != 0) {
        api_reply_err(&c, 400, "bad_request", "malformed query string");
        evhttp_clear_headers(&c.query);
        return;
    }
    /* decoded query values are C strings: a %00 would cut a key or a name short */
    if (q && strcasestr(q, "%00")) {
        api_reply_err(&c, 400, "bad_request", "query string contains a NUL (%%00)");
        evhttp_clear_headers(&c.query);
        return;
    }
    size_t blen = evbuffer_get_length(evhttp_request_get_input_buffer(req));
    c.route = api_route_find(c.path);
    if (blen > MAX_BODY) {
        api_reply_err(&c, 413, "too_large", "body larger than %u bytes", MAX_BODY);
    } else if ((!c.route || c.route->body) && api_parse_body(&c) != 0) {
        /* replied (an unknown path's body is checked too: bad JSON is a 400 before the 404) */
    } else if (!c.route) {
        api_reply_err(&c, 404, "not_found", "no route %.200s", c.path);
    } else if (!c.route->methods || api_method(&c, c.route->methods)) {
        c.route->handler(&c);
    }
    json_object_put(c.body);
    evhttp_clear_headers(&c.query);
}

int api_init(struct engine *e)
{
    evhttp_set_gencb(e->http, on_request, e);
    return 0;
}
