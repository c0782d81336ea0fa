/* Request dispatch: which endpoint, which worker route, which error shape, then the flow.
 *
 *   /v1/<route>                      OpenAI shape; endpoint = body `model`
 *   /endpoints/NAME/v1/<route>       OpenAI shape; endpoint NAME
 *   /endpoints/NAME[/]               TGI compat: /generate_stream if body `stream` is true,
 *                                    else /generate; TGI shape
 *   /endpoints/NAME/<route>          pass-through to the worker's <route>; TGI shape
 *   /generate, /generate_stream, /   TGI; endpoint = body `model`
 *   GET /v1/models[/ID] (either prefix), /health, /metrics
 *
 * The bearer key is never logged and never compared here: the engine compares it (in constant
 * time) when it routes.  The cost sent to /route/ is the worker's own workload rule, so the
 * engine's queue estimate matches what the worker will report (docs/worker.md, Handlers). */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>

#include "clock.h"
#include "gateway.h"
#include "httputil.h"
#include "log.h"
#include "pyjson.h"
#include "workload.h"

static const char *const outcome_names[GO__COUNT] = {
    "ok", "client_error", "auth_error", "no_capacity", "upstream_error", "midstream", "cancelled"};

const char *gw_outcome_name(enum gw_outcome o)
{
    return (unsigned)o < GO__COUNT ? outcome_names[o] : "?";
}

/* ---- metrics ---- */

#define MAX_EP_SERIES 1000 /* distinct endpoint labels; past it they count as "-" */

static void on_render(void *arg)
{
    struct gateway *g = arg;
    *g->m_inflight = g->inflight;
    *g->m_waiting = g->waiting;
    *g->m_pools = g->npools;
}

void gw_metrics_init(struct gateway *g)
{
    g->m = metrics_new();
    static const double lat[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                 0.5,    1,     2.5,    5,     10,   30,    60,   120, 300};
    const size_t nl = sizeof lat / sizeof lat[0];
    for (int o = 0; o < GO__COUNT; o++) {
        char name[160];
        snprintf(name, sizeof name, "sgpu_gateway_requests_total{endpoint=\"-\",outcome=\"%s\"}",
                 outcome_names[o]);
        g->m_unknown[o] = metrics_counter(g->m, name, "Requests answered, by endpoint and outcome");
    }
    g->m_reroute_conn = metrics_counter(g->m, "sgpu_gateway_reroutes_total{reason=\"connect\"}",
                                        "Worker calls retried through a new route");
    g->m_reroute_status =
        metrics_counter(g->m, "sgpu_gateway_reroutes_total{reason=\"status\"}", NULL);
    g->m_route_calls = metrics_counter(g->m, "sgpu_gateway_route_calls_total",
                                       "POST /route/ calls to the engine (grants and polls)");
    g->m_engine_errors = metrics_counter(g->m, "sgpu_gateway_engine_errors_total",
                                         "Engine calls that failed (connection or 5xx)");
    g->m_inflight = metrics_gauge(g->m, "sgpu_gateway_inflight", "Requests in progress");
    g->m_waiting = metrics_gauge(g->m, "sgpu_gateway_waiting", "Requests waiting for a grant");
    g->m_pools = metrics_gauge(g->m, "sgpu_gateway_worker_pools", "Worker connection pools");
    g->h_route_wait = metrics_histogram(g->m, "sgpu_gateway_route_wait_seconds",
                                        "Time from request to grant (all routes)", lat, nl);
    g->h_ttfb = metrics_histogram(g->m, "sgpu_gateway_first_byte_seconds",
                                  "Time from request to the first answer byte", lat, nl);
    g->h_total = metrics_histogram(g->m, "sgpu_gateway_request_seconds",
                                   "Time from request to the end of the answer", lat, nl);
    metrics_on_render(g->m, on_render, g);
}

void gw_count(struct gateway *g, const char *endpoint, enum gw_outcome o)
{
    if ((unsigned)o >= GO__COUNT) return;
    if (endpoint) {
        for (size_t i = 0; i < g->nepm; i++)
            if (strcmp(g->epm[i].name, endpoint) == 0) {
                *g->epm[i].outcome[o] += 1;
                return;
            }
        if (g->nepm < MAX_EP_SERIES) {
            if (g->nepm == g->capepm) {
                size_t nc = g->capepm ? g->capepm * 2 : 16;
                struct gw_epm *n = realloc(g->epm, nc * sizeof *n);
                if (!n) goto unknown;
                g->epm = n;
                g->capepm = nc;
            }
            struct gw_epm *e = &g->epm[g->nepm++];
            snprintf(e->name, sizeof e->name, "%s", endpoint);
            for (int k = 0; k < GO__COUNT; k++) {
                char name[220];
                snprintf(name, sizeof name,
                         "sgpu_gateway_requests_total{endpoint=\"%s\",outcome=\"%s\"}", e->name,
                         outcome_names[k]);
                e->outcome[k] = metrics_counter(g->m, name, NULL);
            }
            *e->outcome[o] += 1;
            return;
        }
    }
unknown:
    *g->m_unknown[o] += 1;
}

/* ---- error bodies ---- */

static const char *openai_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
    case 400:
    case 405:
    case 413:
    case 422:
        return "invalid_request_error";
    case 429:
        return "rate_limit_error";
    case 503:
        return "service_unavailable";
    default:
        return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

static const char *tgi_type(int status)
{
    switch (status) {
    case 401:
        return "authentication";
    case 404:
        return "not_found";
    case 429:
    case 503:
        return "overloaded";
    default:
        return status >= 500 ? "generation" : "validation";
    }
}

void gw_reply_error(struct evhttp_request *req, enum gw_shape shape, int status, const char *code,
                    const char *msg)
{
    struct sbuf b = SBUF_INIT;
    if (shape == SHAPE_OPENAI) {
        sbuf_puts(&b, "{\"error\": {\"message\": ");
        pyj_write_string(&b, msg, strlen(msg));
        sbuf_printf(&b, ", \"type\": \"%s\", \"param\": null, \"code\": ", openai_type(status));
        if (code)
            pyj_write_string(&b, code, strlen(code));
        else
            sbuf_puts(&b, "null");
        sbuf_puts(&b, "}}");
    } else {
        sbuf_puts(&b, "{\"error\": ");
        pyj_write_string(&b, msg, strlen(msg));
        sbuf_printf(&b, ", \"error_type\": \"%s\"}", tgi_type(status));
    }
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    if (status == 429 || status == 503) evhttp_add_header(h, "Retry-After", "1");
    http_reply_json(req, status, b.data, b.len);
    sbuf_free(&b);
}

/* ---- helpers ---- */

static bool name_ok(const char *s, size_t n)
{
    if (n == 0 || n > GW_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!isalnum(ch) && ch != '.' && ch != '_' && ch != '-') return false;
    }
    return true;
}

/* Bearer key into key (NUL-terminated).  0, or -1 when absent / malformed. */
static int bearer_key(struct evhttp_request *req, char *key, size_t n)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return -1;
    h += 7;
    while (*h == ' ')
        h++;
    size_t l = strlen(h);
    while (l && h[l - 1] == ' ')
        l--;
    if (l == 0 || l >= n) return -1;
    for (size_t i = 0; i < l; i++)
        if (h[i] <= 0x20 || h[i] >= 0x7f || h[i] == '"' || h[i] == '\\') return -1;
    memcpy(key, h, l);
    key[l] = '\0';
    return 0;
}

enum kind { K_OPENAI, K_TGI, K_GENERIC };

/* The worker's workload rule for the route (docs/worker.md, Handlers); capped at 1e12. */
static double estimate_cost(const struct gateway *g, enum kind k, const struct pyj_value *p)
{
    double x = g->cfg.default_cost;
    if (k == K_TGI)
        x = workload_tgi(p);
    else if (k == K_OPENAI)
        x = workload_openai(p);
    if (!isfinite(x) || x < 0) x = 100.0;
    return x > 1e12 ? 1e12 : x;
}

/* ---- /v1/models (engine: GET /api/v0/keyinfo/) ---- */

struct models_req {
    struct gateway *g;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    struct upstream_req *up;
    enum gw_shape shape;
    char id[GW_NAME_MAX + 1]; /* "" = list */
    char hdr[GW_KEY_MAX + 16];
    double t0;
};

/* Stop watching the client: before any reply (a failing write may close the connection
 * from inside evhttp_send_reply). */
static void models_detach(struct models_req *m)
{
    if (m->evcon) evhttp_connection_set_closecb(m->evcon, NULL, NULL);
    m->evcon = NULL;
}

static void models_free(struct models_req *m)
{
    models_detach(m);
    m->g->inflight--;
    free(m);
}

static void models_closed(struct evhttp_connection *evcon, void *arg)
{
    struct models_req *m = arg;
    if (m->up) upstream_cancel(m->up);
    m->up = NULL;
    m->evcon = NULL;
    if (m->req && evhttp_request_get_connection(m->req) == NULL) evhttp_send_reply_end(m->req);
    models_free(m);
}

static int models_head(struct upstream_req *u, int status, struct evkeyvalq *h, void *arg)
{
    return 0;
}

static void models_done(struct upstream_req *u, int status, struct evbuffer *body, void *arg)
{
    struct models_req *m = arg;
    m->up = NULL;
    models_detach(m);
    struct gateway *g = m->g;
    size_t n = evbuffer_get_length(body);
    const char *text = (const char *)evbuffer_pullup(body, -1);
    struct pyj_value *v = NULL;
    if (status == 401 || status == 403) {
        gw_reply_error(m->req, m->shape, 401, "invalid_api_key", "Incorrect API key provided.");
        gw_count(g, NULL, GO_AUTH);
    } else if (status != 200 || pyj_parse(text ? text : "", n, &v, NULL, 0) != 0 ||
               !pyj_get(v, "endpoints") || pyj_get(v, "endpoints")->type != PYJ_ARRAY) {
        log_warn("engine_error", "call=keyinfo status=%d", status);
        *g->m_engine_errors += 1;
        gw_reply_error(m->req, m->shape, 502, "engine_error",
                       status == 404 ? "the engine has no /api/v0/keyinfo/ (too old)"
                                     : "the engine could not list the models of this key");
        gw_count(g, NULL, GO_UPSTREAM);
    } else {
        const struct pyj_value *eps = pyj_get(v, "endpoints");
        struct sbuf out = SBUF_INIT;
        bool found = false;
        if (!m->id[0]) sbuf_puts(&out, "{\"object\": \"list\", \"data\": [");
        for (size_t i = 0; i < eps->u.arr.len; i++) {
            const struct pyj_value *e = eps->u.arr.items[i];
            const struct pyj_value *nm = pyj_get(e, "endpoint_name");
            if (!nm || nm->type != PYJ_STRING) continue;
            if (m->id[0] && strcmp(nm->u.str.s, m->id) != 0) continue;
            double created = 0;
            pyj_number(pyj_get(e, "created_at"), &created);
            if (!isfinite(created) || created < 0) created = 0;
            if (found && !m->id[0]) sbuf_puts(&out, ", ");
            found = true;
            sbuf_puts(&out, "{\"id\": ");
            pyj_write_string(&out, nm->u.str.s, nm->u.str.len);
            sbuf_printf(&out, ", \"object\": \"model\", \"created\": %.0f, \"owned_by\": \"sgpu\"}",
                        created);
        }
        if (!m->id[0]) {
            sbuf_puts(&out, "]}");
            http_reply_json(m->req, 200, out.data, out.len);
            gw_count(g, NULL, GO_OK);
        } else if (found) {
            http_reply_json(m->req, 200, out.data, out.len);
            gw_count(g, m->id, GO_OK);
        } else {
            char msg[200];
            snprintf(msg, sizeof msg,
                     "The model '%s' does not exist or you do not have access to it.", m->id);
            gw_reply_error(m->req, m->shape, 404, "model_not_found", msg);
            gw_count(g, NULL, GO_CLIENT_ERROR);
        }
        sbuf_free(&out);
    }
    pyj_free(v);
    models_free(m);
}

static void models_error(struct upstream_req *u, enum upstream_err e, const char *msg, void *arg)
{
    struct models_req *m = arg;
    m->up = NULL;
    models_detach(m);
    *m->g->m_engine_errors += 1;
    log_warn("engine_error", "call=keyinfo err=%s", upstream_err_name(e));
    gw_reply_error(m->req, m->shape, 502, "engine_unreachable", "the engine cannot be reached");
    gw_count(m->g, NULL, GO_UPSTREAM);
    models_free(m);
}

static const struct upstream_cbs models_cbs = {models_head, NULL, models_done, models_error};

static void h_models(struct gateway *g, struct evhttp_request *req, enum gw_shape shape,
                     const char *key, const char *id)
{
    struct models_req *m = calloc(1, sizeof *m);
    if (!m) {
        gw_reply_error(req, shape, 500, NULL, "out of memory");
        return;
    }
    m->g = g;
    m->req = req;
    m->shape = shape;
    m->t0 = clock_mono();
    snprintf(m->id, sizeof m->id, "%s", id ? id : "");
    snprintf(m->hdr, sizeof m->hdr, "Bearer %s", key);
    g->inflight++;
    const char *hdrs[] = {"Authorization", m->hdr, NULL};
    struct upstream_opts o = {.timeout_s = 15, .max_buffered = 4u << 20, .retry_reused = true};
    m->up = upstream_request(g->engine, EVHTTP_REQ_GET, "/api/v0/keyinfo/", NULL, NULL, 0, hdrs, &o,
                             &models_cbs, m);
    if (!m->up) {
        gw_reply_error(req, shape, 502, "engine_unreachable", "the engine cannot be reached");
        models_free(m);
        return;
    }
    m->evcon = evhttp_request_get_connection(req);
    if (m->evcon) evhttp_connection_set_closecb(m->evcon, models_closed, m);
}

/* ---- dispatch ---- */

static void h_metrics(struct gateway *g, struct evhttp_request *req)
{
    struct sbuf out = SBUF_INIT;
    metrics_render(g->m, &out);
    http_reply(req, 200, "text/plain; version=0.0.4", out.data ? out.data : "", out.len);
    sbuf_free(&out);
}

/* TGI payloads need `parameters` at the worker (its payload check); TGI itself does not. */
static char *add_parameters(const char *body, size_t len, size_t *out_len)
{
    const char *brace = memchr(body, '{', len);
    if (!brace) return NULL;
    size_t pre = (size_t)(brace - body) + 1;
    const char *rest = brace + 1;
    size_t rl = len - pre;
    size_t i = 0;
    while (i < rl && (rest[i] == ' ' || rest[i] == '\n' || rest[i] == '\r' || rest[i] == '\t'))
        i++;
    bool empty = i < rl && rest[i] == '}';
    const char *ins = empty ? "\"parameters\": {}" : "\"parameters\": {}, ";
    size_t il = strlen(ins);
    char *p = malloc(len + il + 1);
    if (!p) return NULL;
    memcpy(p, body, pre);
    memcpy(p + pre, ins, il);
    memcpy(p + pre + il, rest, rl);
    p[len + il] = '\0';
    *out_len = len + il;
    return p;
}

/* "/endpoints/NAME/<route>": NAME into ep, *rest = <route>.  Other paths: ep stays "" and
 * *rest = path.  0, or -1 after a 404 (bad name). */
static int endpoint_prefix(struct gateway *g, struct evhttp_request *req, const char *path,
                           char *ep, const char **rest)
{
    *rest = path;
    if (strncmp(path, "/endpoints/", 11) != 0) return 0;
    const char *n = path + 11;
    size_t nl = strcspn(n, "/");
    if (!name_ok(n, nl)) {
        gw_reply_error(req, SHAPE_TGI, 404, "model_not_found", "no such endpoint name");
        gw_count(g, NULL, GO_CLIENT_ERROR);
        return -1;
    }
    memcpy(ep, n, nl);
    ep[nl] = '\0';
    *rest = n + nl;
    return 0;
}

/* GET /v1/models[/{id}]: the endpoints this key may call (only `ep` under /endpoints/ep/). */
static void models_route(struct gateway *g, struct evhttp_request *req, enum gw_shape shape,
                         const char *key, const char *rest, const char *ep)
{
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
        gw_reply_error(req, shape, 405, NULL, "use GET");
        gw_count(g, NULL, GO_CLIENT_ERROR);
        return;
    }
    const char *id = rest[10] == '/' ? rest + 11 : NULL;
    if (id && !name_ok(id, strlen(id))) {
        gw_reply_error(req, shape, 404, "model_not_found",
                       "The model does not exist or you do not have access to it.");
        gw_count(g, NULL, GO_CLIENT_ERROR);
        return;
    }
    if (ep[0] && id && strcmp(id, ep) != 0) id = "\x01"; /* never matches */
    h_models(g, req, shape, key, id ? id : (ep[0] ? ep : NULL));
}

/* Worker routes of a known kind (the cost estimate and the TGI shape's routes); any other
 * route is K_GENERIC. */
static const struct {
    const char *path;
    enum kind kind;
} kind_routes[] = {
    {"/generate", K_TGI},          {"/generate_stream", K_TGI},  {"/v1/chat/completions", K_OPENAI},
    {"/v1/completions", K_OPENAI}, {"/v1/embeddings", K_OPENAI},
};

/* The worker route (with the client's query) and the request kind.  TGI's compat route "/"
 * becomes /generate, or /generate_stream with "stream": true (*wrap: answer as an array). */
static enum kind worker_route(struct evhttp_request *req, const char *rest,
                              const struct pyj_value *p, char *route, size_t n, bool *wrap)
{
    enum kind k = K_GENERIC;
    *wrap = false;
    if (rest[0] == '\0' || strcmp(rest, "/") == 0) {
        const struct pyj_value *s = pyj_get(p, "stream");
        *wrap = !(s && s->type == PYJ_TRUE);
        snprintf(route, n, "%s", *wrap ? "/generate" : "/generate_stream");
        k = K_TGI;
    } else {
        snprintf(route, n, "%s", rest);
        for (size_t i = 0; i < sizeof kind_routes / sizeof kind_routes[0]; i++)
            if (strcmp(rest, kind_routes[i].path) == 0) k = kind_routes[i].kind;
    }
    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
    const char *q = u ? evhttp_uri_get_query(u) : NULL;
    size_t rl = strlen(route);
    if (q && *q && rl + strlen(q) + 2 < n) snprintf(route + rl, n - rl, "?%s", q);
    return k;
}

/* Without /endpoints/NAME/, the endpoint is the body's "model".  0, or -1 after the reply. */
static int endpoint_from_model(struct gateway *g, struct evhttp_request *req, enum gw_shape shape,
                               enum kind k, const struct pyj_value *p, char *ep)
{
    if (shape == SHAPE_TGI && k != K_TGI) {
        gw_reply_error(req, shape, 404, "not_found",
                       "unknown route; use /v1/..., /generate, /generate_stream, / or "
                       "/endpoints/NAME/...");
        gw_count(g, NULL, GO_CLIENT_ERROR);
        return -1;
    }
    const struct pyj_value *mv = pyj_get(p, "model");
    if (!mv || mv->type != PYJ_STRING || mv->u.str.len == 0) {
        gw_reply_error(req, shape, 400, "model_required",
                       "you must provide a model parameter (the endpoint name)");
        gw_count(g, NULL, GO_CLIENT_ERROR);
        return -1;
    }
    if (!name_ok(mv->u.str.s, mv->u.str.len)) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "The model '%.64s' does not exist or you do not have access to it.", mv->u.str.s);
        gw_reply_error(req, shape, 404, "model_not_found", msg);
        gw_count(g, NULL, GO_CLIENT_ERROR);
        return -1;
    }
    memcpy(ep, mv->u.str.s, mv->u.str.len);
    ep[mv->u.str.len] = '\0';
    return 0;
}

/* The payload sent to the worker: the body as given, with TGI "parameters" added when absent.
 * NULL when out of memory. */
static char *worker_payload(const char *body, size_t blen, enum kind k, const struct pyj_value *p,
                            size_t *len)
{
    if (k == K_TGI && !pyj_get(p, "parameters")) return add_parameters(body, blen, len);
    char *c = malloc(blen + 1); /* a failure is answered 500, not fatal */
    if (!c) return NULL;
    memcpy(c, body, blen);
    c[blen] = '\0';
    *len = blen;
    return c;
}

/* evhttp's callback: health and metrics, then endpoint, key, capacity, models, the JSON body,
 * route and kind, endpoint from "model", and the flow (flow.c) that routes and proxies. */
void gw_on_request(struct evhttp_request *req, void *arg)
{
    struct gateway *g = arg;
    char path[1024];
    if (!http_request_path(req, path, sizeof path)) {
        gw_reply_error(req, SHAPE_TGI, 400, NULL, "malformed request URI");
        gw_count(g, NULL, GO_CLIENT_ERROR);
        return;
    }
    if (strcmp(path, "/health") == 0) {
        http_reply_json(req, 200, "{\"ok\": true}", 12);
        return;
    }
    if (strcmp(path, "/metrics") == 0) {
        h_metrics(g, req);
        return;
    }
    char ep[GW_NAME_MAX + 1] = "";
    const char *rest;
    if (endpoint_prefix(g, req, path, ep, &rest) != 0) return;
    enum gw_shape shape = strncmp(rest, "/v1/", 4) == 0 ? SHAPE_OPENAI : SHAPE_TGI;
    char key[GW_KEY_MAX + 1];
    if (bearer_key(req, key, sizeof key) != 0) {
        gw_reply_error(req, shape, 401, "invalid_api_key",
                       "You didn't provide an API key. Send your endpoint's api_key as "
                       "'Authorization: Bearer KEY'.");
        gw_count(g, NULL, GO_AUTH);
        return;
    }
    if (g->inflight >= g->cfg.max_inflight) {
        gw_reply_error(req, shape, 503, "overloaded", "the gateway is at its request limit");
        gw_count(g, NULL, GO_NO_CAPACITY);
        return;
    }
    if (strcmp(rest, "/v1/models") == 0 || strncmp(rest, "/v1/models/", 11) == 0) {
        models_route(g, req, shape, key, rest, ep);
        return;
    }
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        gw_reply_error(req, shape, 405, NULL, "method not allowed (POST a JSON body)");
        gw_count(g, NULL, GO_CLIENT_ERROR);
        return;
    }
    size_t blen;
    const char *body = http_request_body(req, &blen);
    struct pyj_value *p = NULL;
    char err[160];
    if (pyj_parse(body, blen, &p, err, sizeof err) != 0 || p->type != PYJ_OBJECT) {
        char msg[300];
        snprintf(msg, sizeof msg, "the body must be a JSON object%s%s", p ? "" : ": ",
                 p ? "" : err);
        gw_reply_error(req, shape, 400, "invalid_json", msg);
        gw_count(g, NULL, GO_CLIENT_ERROR);
        pyj_free(p);
        return;
    }
    char route[1100];
    bool wrap;
    enum kind k = worker_route(req, rest, p, route, sizeof route, &wrap);
    if (!ep[0] && endpoint_from_model(g, req, shape, k, p, ep) != 0) {
        pyj_free(p);
        return;
    }
    struct gw_flow_args a = {
        .shape = shape,
        .endpoint = ep,
        .key = key,
        .route = route,
        .cost = estimate_cost(g, k, p),
        .wrap_array = wrap,
    };
    a.payload = worker_payload(body, blen, k, p, &a.payload_len);
    pyj_free(p);
    if (!a.payload) {
        gw_reply_error(req, shape, 500, NULL, "out of memory");
        return;
    }
    gw_flow_start(g, req, &a);
}
