/* One proxied request, with the rules `sgpu call` follows (src/cli/rcall.c):
 *
 *   ROUTE  POST {engine}/route/ {endpoint, cost, request_idx, replay_timeout} with the client's
 *          key as Bearer, over pooled keep-alive connections.  The engine holds a call that
 *          would wait (long poll) and answers with a grant as soon as capacity frees; a
 *          "waiting" answer is polled again with the same request_idx.  The whole wait is
 *          bounded by --route-timeout (then 503 in the client's shape).  Engine refusals map to
 *          the client's shape: 401 -> 401, 403/404 -> 404 model_not_found, 429/503 passed
 *          through (with the engine's message), other 4xx passed through.  Engine connection
 *          failures and other 5xx are retried with capped back-off (5 in a row at most).
 *   CALL   POST {worker}{route} {"auth_data": <grant, verbatim>, "payload": <body, verbatim>}
 *          over the worker's pool.  A connection failure before the response head re-routes at
 *          once; 408/429/5xx heads (buffered, nothing sent to the client yet) re-route after
 *          min(2^n + U(0,1), 5) s; up to --max-attempts worker calls.  A 2xx head is final:
 *          streams (SSE, NDJSON, chunked) are relayed chunk by chunk with flow control, other
 *          bodies are buffered and sent with their Content-Type.  Once a 2xx head has arrived
 *          nothing is retried: a break is passed on (streams are cut, buffered answers get
 *          502), never generated twice.
 *   CLIENT GONE  the route call or worker call is cancelled (the worker sees its connection
 *          reset, cancels the model request and frees its capacity; a held /route/ call leaves
 *          the engine's queue). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/keyvalq_struct.h>

#include "clock.h"
#include "gateway.h"
#include "httputil.h"
#include "jspan.h"
#include "log.h"
#include "pyjson.h"
#include "xalloc.h"

#define STREAM_HIGH_WATER ((size_t)1 << 20)
#define ROUTE_CALL_TIMEOUT_S 15.0 /* one /route/ call; the engine holds at most 8 s */
#define ENGINE_MAX_FAILS 5
#define MAX_WORKER_BODY ((size_t)256 << 20)
#define WATCH_AFTER_S 0.05 /* arm the client-close watcher after this long */

enum fstate { F_ROUTE, F_WAIT, F_CALL, F_DONE };

struct flow {
    struct gateway *g;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    struct event *close_ev; /* client closed (EV_CLOSED on its socket) */
    struct event *timer;    /* back-off / poll delay */
    struct event *wait_ev;  /* close-watch arming, then --route-timeout */
    struct upstream_req *up;
    enum fstate st;
    enum gw_shape shape;
    char ep[GW_NAME_MAX + 1];
    char auth[GW_KEY_MAX + 16];
    char route[1100];
    char *payload;
    size_t payload_len;
    double cost;
    long long request_idx;
    int attempts, retry_n, engine_fails, polls;
    bool waiting; /* counted in g->waiting */
    bool granted_once, streaming, paused, in_write, zombie, head_2xx;
    struct sbuf body; /* the current upstream request body (route call or envelope) */
    struct sbuf grant;
    char worker[256];
    char ctype[128];
    int status; /* status answered to the client */
    size_t bytes;
    double t0, t_route0, t_grant, t_ttfb;
    enum gw_outcome outcome;
    bool known_ep;   /* the engine accepted the endpoint name (metrics label) */
    bool wrap_array; /* TGI compat route: a JSON object answer goes out as [object] */
};

static double urand(double a, double b)
{
    return a + (b - a) * ((double)random() / (double)RAND_MAX);
}

static double backoff(int n)
{
    double d = pow(2.0, n) + urand(0, 1);
    return d < 5.0 ? d : 5.0;
}

static void set_waiting(struct flow *f, bool w)
{
    if (f->waiting == w) return;
    f->waiting = w;
    f->g->waiting += w ? 1 : -1;
}

/* Stop watching the client; returns the request (NULL if gone). */
static struct evhttp_request *client_detach(struct flow *f)
{
    if (f->close_ev) {
        event_free(f->close_ev);
        f->close_ev = NULL;
    }
    if (f->evcon) evhttp_connection_set_closecb(f->evcon, NULL, NULL);
    struct evhttp_request *req = f->req;
    f->req = NULL;
    f->evcon = NULL;
    return req;
}

static void flow_end(struct flow *f, enum gw_outcome out)
{
    struct gateway *g = f->g;
    if (f->st == F_DONE) return;
    f->st = F_DONE;
    f->outcome = out;
    if (f->up) {
        upstream_cancel(f->up);
        f->up = NULL;
    }
    if (f->req || f->close_ev) client_detach(f);
    set_waiting(f, false);
    if (f->timer) event_free(f->timer);
    if (f->wait_ev) event_free(f->wait_ev);
    f->timer = f->wait_ev = NULL;
    double now = clock_mono();
    if (out == GO_OK) metrics_observe(g->h_total, now - f->t0);
    gw_count(g, f->known_ep ? f->ep : NULL, out);
    char q[1200];
    gw_access("endpoint=%s route=%s status=%d outcome=%s attempts=%d cost=%g route_s=%.4f "
              "ttfb_s=%.4f total_s=%.4f bytes=%zu worker=%s",
              f->ep, log_quote(q, sizeof q, f->route), f->status, gw_outcome_name(out), f->attempts,
              f->cost, f->t_grant > 0 ? f->t_grant - f->t0 : 0.0,
              f->t_ttfb > 0 ? f->t_ttfb - f->t0 : 0.0, now - f->t0, f->bytes,
              f->worker[0] ? f->worker : "-");
    g->inflight--;
    sbuf_free(&f->body);
    sbuf_free(&f->grant);
    free(f->payload);
    f->payload = NULL;
    if (f->in_write)
        f->zombie = true; /* freed by the writer when its evhttp call returns */
    else
        free(f);
}

/* Error answer in the client's shape, then end. */
static void fail(struct flow *f, int status, const char *code, enum gw_outcome out, const char *fmt,
                 ...) __attribute__((format(printf, 5, 6)));
static void fail(struct flow *f, int status, const char *code, enum gw_outcome out, const char *fmt,
                 ...)
{
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (f->up) {
        upstream_cancel(f->up);
        f->up = NULL;
    }
    struct evhttp_request *req = client_detach(f);
    f->status = status;
    if (req) gw_reply_error(req, f->shape, status, code, msg);
    flow_end(f, out);
}

/* ---- client watchers ---- */

static void on_client_closed(evutil_socket_t fd, short what, void *arg)
{
    struct flow *f = arg;
    struct evhttp_connection *evcon = f->evcon;
    log_debug("client_gone", "endpoint=%s phase=%s", f->ep, f->streaming ? "streaming" : "early");
    client_detach(f);
    f->status = 499;
    flow_end(f, GO_CANCELLED);
    if (evcon) evhttp_connection_free(evcon); /* frees the pending request too */
}

static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    struct flow *f = arg;
    struct evhttp_request *req = f->req;
    client_detach(f);
    f->status = 499;
    /* evhttp detached the unfinished request from the dying connection: ours to free */
    if (req && evhttp_request_get_connection(req) == NULL) evhttp_send_reply_end(req);
    flow_end(f, GO_CANCELLED);
}

/* ---- route ---- */

static void send_route(struct flow *f);
static void send_call(struct flow *f);

static void schedule_route(struct flow *f, double delay)
{
    f->st = F_WAIT;
    set_waiting(f, true);
    struct timeval tv = clock_tv(delay);
    evtimer_add(f->timer, &tv);
}

static void on_timer(evutil_socket_t fd, short ev, void *arg)
{
    struct flow *f = arg;
    if (f->st == F_WAIT) send_route(f);
}

/* The socket-close watcher costs two epoll_ctl calls; most requests end sooner than
 * WATCH_AFTER_S, so it is armed only then (a client that left earlier is seen at once: the
 * close is level-triggered).  evhttp's close callback covers write errors from the start. */
static void arm_close_watch(struct flow *f)
{
    if (f->close_ev || !f->evcon) return;
    struct bufferevent *bev = evhttp_connection_get_bufferevent(f->evcon);
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    if (fd < 0) return;
    f->close_ev = xnonnull(event_new(f->g->base, fd, EV_CLOSED, on_client_closed, f));
    if (f->close_ev) event_add(f->close_ev, NULL);
}

static void tick_in(struct flow *f, double s)
{
    struct timeval tv = clock_tv(s);
    evtimer_add(f->wait_ev, &tv);
}

/* wait_ev: first at WATCH_AFTER_S (arms the close watcher), then at the --route-timeout
 * deadline while the request waits for a grant. */
static void on_tick(evutil_socket_t fd, short ev, void *arg)
{
    struct flow *f = arg;
    if (!f->close_ev) arm_close_watch(f);
    if (f->st != F_ROUTE && f->st != F_WAIT) return; /* a worker call is running */
    double left = f->g->cfg.route_timeout - (clock_mono() - f->t0);
    if (left > 0) {
        tick_in(f, left);
        return;
    }
    fail(f, 503, "no_capacity", GO_NO_CAPACITY,
         "no worker of '%s' became available within %g s; try again later", f->ep,
         f->g->cfg.route_timeout);
}

/* "msg" (or "error") of an engine error body, into buf. */
static const char *engine_msg(struct evbuffer *body, char *buf, size_t n)
{
    size_t len = evbuffer_get_length(body);
    const char *t = (const char *)evbuffer_pullup(body, -1);
    struct pyj_value *v = NULL;
    buf[0] = '\0';
    if (t && pyj_parse(t, len, &v, NULL, 0) == 0) {
        const struct pyj_value *m = pyj_get(v, "msg");
        if (!m || m->type != PYJ_STRING) m = pyj_get(v, "error");
        if (m && m->type == PYJ_STRING) snprintf(buf, n, "%.*s", (int)m->u.str.len, m->u.str.s);
    }
    pyj_free(v);
    if (!buf[0]) snprintf(buf, n, "%.*s", (int)(len > 200 ? 200 : len), t ? t : "");
    return buf;
}

static void engine_retry(struct flow *f, const char *why)
{
    *f->g->m_engine_errors += 1;
    f->engine_fails++;
    log_warn("engine_error", "endpoint=%s why=%s fails=%d", f->ep, why, f->engine_fails);
    if (f->engine_fails >= ENGINE_MAX_FAILS) {
        fail(f, 502, "engine_unreachable", GO_UPSTREAM, "the engine cannot be reached (%s)", why);
        return;
    }
    schedule_route(f, backoff(f->engine_fails - 1) / 2);
}

/* `url` (into url, "" when absent) and `request_idx` (-1 when absent) of a /route/ answer.
 * Fast path: the top-level spans (jspan) of a plain string and a plain integer, which is what
 * the engine writes; anything else (escapes, other types) takes the full parse.  The answer
 * itself goes to the worker verbatim, which parses and verifies it.  0, or -1 when it is not
 * a JSON object or url is not a string that fits. */
static int grant_fields(const char *t, size_t n, char *url, size_t cap, long long *idx)
{
    static const char *const keys[] = {"url", "request_idx"};
    struct jspan sp[2];
    url[0] = '\0';
    *idx = -1;
    bool fast = jspan_members(t, n, keys, 2, sp) == 0;
    if (fast && sp[0].found) {
        const char *u = t + sp[0].off;
        size_t l = sp[0].len;
        fast = l >= 2 && u[0] == '"' && u[l - 1] == '"' && l - 2 < cap;
        for (size_t i = 1; fast && i + 1 < l; i++)
            if (u[i] == '\\' || (unsigned char)u[i] < 0x20) fast = false;
        if (fast) {
            memcpy(url, u + 1, l - 2);
            url[l - 2] = '\0';
        }
    }
    if (fast && sp[1].found) {
        const char *d = t + sp[1].off;
        long long v = 0;
        fast = sp[1].len > 0 && sp[1].len <= 18;
        for (size_t i = 0; fast && i < sp[1].len; i++) {
            if (d[i] < '0' || d[i] > '9') fast = false;
            v = v * 10 + (d[i] - '0');
        }
        if (fast) *idx = v;
    }
    if (fast) return 0;
    struct pyj_value *v = NULL;
    url[0] = '\0';
    *idx = -1;
    if (pyj_parse(t, n, &v, NULL, 0) != 0 || v->type != PYJ_OBJECT) {
        pyj_free(v);
        return -1;
    }
    int64_t i64;
    if (pyj_int64(pyj_get(v, "request_idx"), &i64) && i64 >= 0) *idx = i64;
    const struct pyj_value *uv = pyj_get(v, "url");
    int rc = 0;
    if (uv &&
        (uv->type != PYJ_STRING || uv->u.str.len >= cap || memchr(uv->u.str.s, 0, uv->u.str.len)))
        rc = -1;
    else if (uv)
        memcpy(url, uv->u.str.s, uv->u.str.len + 1);
    pyj_free(v);
    return rc;
}

static int route_head(struct upstream_req *u, int status, struct evkeyvalq *h, void *arg)
{
    return 0; /* buffered */
}

static void route_done(struct upstream_req *u, int status, struct evbuffer *body, void *arg)
{
    struct flow *f = arg;
    f->up = NULL;
    char msg[400];
    if (status == 500 || status == 502 || status == 504 || status == 0) {
        char why[64];
        snprintf(why, sizeof why, "HTTP_%d", status);
        engine_retry(f, why);
        return;
    }
    f->engine_fails = 0;
    if (status != 200) {
        engine_msg(body, msg, sizeof msg);
        switch (status) {
        case 401:
            fail(f, 401, "invalid_api_key", GO_AUTH, "Incorrect API key provided.");
            return;
        case 403:
        case 404:
            fail(f, 404, "model_not_found", GO_CLIENT_ERROR,
                 "The model '%s' does not exist or you do not have access to it.", f->ep);
            return;
        case 429:
            f->known_ep = true;
            fail(f, 429, "rate_limit_exceeded", GO_NO_CAPACITY, "%s", msg);
            return;
        case 503:
            f->known_ep = true;
            fail(f, 503, "unavailable", GO_NO_CAPACITY, "%s", msg);
            return;
        default:
            fail(f, status >= 400 && status < 600 ? status : 502, "engine_refused",
                 status < 500 ? GO_CLIENT_ERROR : GO_UPSTREAM, "the engine refused the route: %s",
                 msg);
            return;
        }
    }
    f->known_ep = true;
    size_t n = evbuffer_get_length(body);
    const char *t = (const char *)evbuffer_pullup(body, -1);
    char url[sizeof f->worker];
    long long idx = -1;
    if (!t || grant_fields(t, n, url, sizeof url, &idx) != 0) {
        engine_retry(f, "bad_json");
        return;
    }
    if (idx >= 0) f->request_idx = idx;
    if (url[0]) {
        snprintf(f->worker, sizeof f->worker, "%s", url);
        while (n && (t[n - 1] == '\n' || t[n - 1] == ' ' || t[n - 1] == '\r'))
            n--;
        sbuf_reset(&f->grant);
        sbuf_append(&f->grant, t, n);
        f->t_grant = clock_mono();
        if (!f->granted_once) metrics_observe(f->g->h_route_wait, f->t_grant - f->t0);
        f->granted_once = true;
        f->polls = 0;
        set_waiting(f, false);
        send_call(f);
        return;
    }
    /* waiting: the engine held the call up to its --route-hold-ms; poll again at once, or
     * after a short pause when it answered quickly (an engine without the long poll) */
    double held = clock_mono() - f->t_route0;
    double d = held >= 0.5 ? 0 : fmin(0.1 * (1 << (f->polls < 4 ? f->polls : 4)), 1.0);
    f->polls++;
    schedule_route(f, d);
}

static void route_error(struct upstream_req *u, enum upstream_err e, const char *m, void *arg)
{
    struct flow *f = arg;
    f->up = NULL;
    engine_retry(f, upstream_err_name(e));
}

static const struct upstream_cbs route_cbs = {route_head, NULL, route_done, route_error};

static void send_route(struct flow *f)
{
    struct gateway *g = f->g;
    f->st = F_ROUTE;
    set_waiting(f, true);
    if (!evtimer_pending(f->wait_ev, NULL)) { /* back from a worker call: deadline again */
        double left = g->cfg.route_timeout - (clock_mono() - f->t0);
        if (left <= 0) {
            fail(f, 503, "no_capacity", GO_NO_CAPACITY,
                 "no worker of '%s' became available within %g s; try again later", f->ep,
                 g->cfg.route_timeout);
            return;
        }
        tick_in(f, left);
    }
    sbuf_reset(&f->body);
    char num[64];
    snprintf(num, sizeof num, "%.17g", f->cost);
    if (!strpbrk(num, ".eEn")) strcat(num, ".0");
    sbuf_printf(&f->body,
                "{\"endpoint\": \"%s\", \"cost\": %s, \"request_idx\": %lld, "
                "\"replay_timeout\": 60.0}",
                f->ep, num, f->request_idx);
    const char *hdrs[] = {"Authorization", f->auth, NULL};
    struct upstream_opts o = {
        .timeout_s = ROUTE_CALL_TIMEOUT_S, .max_buffered = 1u << 20, .retry_reused = true};
    *g->m_route_calls += 1;
    f->t_route0 = clock_mono();
    f->up = upstream_request(g->engine, EVHTTP_REQ_POST, "/route/", "application/json",
                             f->body.data, f->body.len, hdrs, &o, &route_cbs, f);
    if (!f->up) engine_retry(f, "request_failed");
}

/* ---- worker call ---- */

static bool retryable(int s)
{
    return s == 408 || s == 429 || s >= 500;
}

static void reroute(struct flow *f, bool conn, const char *why)
{
    if (f->attempts >= f->g->cfg.max_attempts) {
        if (conn)
            fail(f, 502, "worker_unreachable", GO_UPSTREAM,
                 "no worker could serve the request after %d attempts (last: %s)", f->attempts,
                 why);
        else
            fail(f, f->status >= 500 || f->status == 429 ? f->status : 503, "worker_error",
                 GO_UPSTREAM, "no worker could serve the request after %d attempts (last: %s)",
                 f->attempts, why);
        return;
    }
    *(conn ? f->g->m_reroute_conn : f->g->m_reroute_status) += 1;
    double d = conn ? (f->retry_n == 0 ? 0.0 : backoff(f->retry_n - 1) / 4) : backoff(f->retry_n);
    f->retry_n++;
    log_info("reroute", "endpoint=%s worker=%s why=%s delay_s=%.2f attempt=%d", f->ep, f->worker,
             why, d, f->attempts);
    schedule_route(f, d);
}

static bool flow_reap(struct flow *f)
{
    if (!f->zombie) return false;
    free(f);
    return true;
}

static int call_head(struct upstream_req *u, int status, struct evkeyvalq *hdrs, void *arg)
{
    struct flow *f = arg;
    f->head_2xx = status >= 200 && status < 300;
    f->status = status;
    if (!f->head_2xx) return 0; /* buffered: maybe re-routed, maybe passed on */
    const char *ct = evhttp_find_header(hdrs, "Content-Type");
    const char *te = evhttp_find_header(hdrs, "Transfer-Encoding");
    snprintf(f->ctype, sizeof f->ctype, "%s", ct && *ct ? ct : "application/json");
    if (!http_is_stream(ct, te)) return 0;
    if (!f->req) return -1;
    struct evkeyvalq *oh = evhttp_request_get_output_headers(f->req);
    evhttp_remove_header(oh, "Content-Type");
    evhttp_add_header(oh, "Content-Type", f->ctype);
    evhttp_add_header(oh, "X-Accel-Buffering", "no");
    evhttp_add_header(oh, "Cache-Control", "no-cache");
    f->streaming = true;
    f->in_write = true;
    evhttp_send_reply_start(f->req, status, http_reason(status));
    f->in_write = false;
    if (flow_reap(f)) return -1;
    return 1;
}

static void on_flushed(struct evhttp_connection *evcon, void *arg)
{
    struct flow *f = arg;
    if (f->paused && f->up) {
        f->paused = false;
        upstream_pause(f->up, false);
    }
}

static void call_chunk(struct upstream_req *u, struct evbuffer *data, void *arg)
{
    struct flow *f = arg;
    size_t n = evbuffer_get_length(data);
    if (!f->req || n == 0) {
        evbuffer_drain(data, n);
        return;
    }
    if (f->t_ttfb == 0) {
        f->t_ttfb = clock_mono();
        metrics_observe(f->g->h_ttfb, f->t_ttfb - f->t0);
    }
    f->bytes += n;
    f->in_write = true;
    evhttp_send_reply_chunk_with_cb(f->req, data, on_flushed, f);
    f->in_write = false;
    if (flow_reap(f) || !f->evcon) return;
    struct bufferevent *bev = evhttp_connection_get_bufferevent(f->evcon);
    if (bev && evbuffer_get_length(bufferevent_get_output(bev)) > STREAM_HIGH_WATER && !f->paused &&
        f->up) {
        f->paused = true;
        upstream_pause(f->up, true);
    }
}

/* A worker error body passed on when it already has the client's shape; else wrapped. */
static void relay_error(struct flow *f, int status, struct evbuffer *body)
{
    size_t n = evbuffer_get_length(body);
    const char *t = (const char *)evbuffer_pullup(body, -1);
    struct pyj_value *v = NULL;
    bool shaped = false;
    if (t && n && pyj_parse(t, n, &v, NULL, 0) == 0) {
        const struct pyj_value *e = pyj_get(v, "error");
        shaped = e && (f->shape == SHAPE_OPENAI ? e->type == PYJ_OBJECT : e->type == PYJ_STRING);
    }
    if (status == 401 || status == 403) {
        pyj_free(v);
        fail(f, 502, "worker_refused_grant", GO_UPSTREAM, "the worker refused the grant (HTTP %d)",
             status);
        return;
    }
    struct evhttp_request *req = client_detach(f);
    f->status = status;
    if (req && shaped) {
        struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
        evhttp_remove_header(oh, "Content-Type");
        evhttp_add_header(oh, "Content-Type", "application/json");
        evhttp_send_reply(req, status, http_reason(status), body);
    } else if (req) {
        char msg[600];
        const struct pyj_value *e = v ? pyj_get(v, "error") : NULL;
        if (e && e->type == PYJ_STRING)
            snprintf(msg, sizeof msg, "%.*s", (int)(e->u.str.len > 500 ? 500 : e->u.str.len),
                     e->u.str.s);
        else if (e && e->type == PYJ_OBJECT && pyj_get(e, "message") &&
                 pyj_get(e, "message")->type == PYJ_STRING)
            snprintf(msg, sizeof msg, "%.500s", pyj_get(e, "message")->u.str.s);
        else if (status == 404)
            snprintf(msg, sizeof msg, "the workers of '%s' do not serve %.300s (HTTP 404)", f->ep,
                     f->route);
        else
            snprintf(msg, sizeof msg, "the worker answered HTTP %d%s%.*s", status, n ? ": " : "",
                     (int)(n > 300 ? 300 : n), t ? t : "");
        gw_reply_error(req, f->shape, status, NULL, msg);
    }
    pyj_free(v);
    flow_end(f, status >= 500 ? GO_UPSTREAM : GO_CLIENT_ERROR);
}

static void call_done(struct upstream_req *u, int status, struct evbuffer *body, void *arg)
{
    struct flow *f = arg;
    f->up = NULL;
    if (!f->head_2xx) {
        if (retryable(status)) {
            char why[32];
            snprintf(why, sizeof why, "HTTP_%d", status);
            reroute(f, false, why);
            return;
        }
        relay_error(f, status, body);
        return;
    }
    struct evhttp_request *req = client_detach(f);
    if (req && f->streaming) {
        evhttp_send_reply_end(req);
    } else if (req) {
        size_t n = evbuffer_get_length(body);
        if (f->t_ttfb == 0) {
            f->t_ttfb = clock_mono();
            metrics_observe(f->g->h_ttfb, f->t_ttfb - f->t0);
        }
        const char *t = n ? (const char *)evbuffer_pullup(body, 1) : NULL;
        if (f->wrap_array && t && t[0] == '{') { /* TGI's `/`: [<generate answer>] */
            evbuffer_prepend(body, "[", 1);
            evbuffer_add(body, "]", 1);
            n += 2;
        }
        f->bytes += n;
        struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
        evhttp_remove_header(oh, "Content-Type");
        evhttp_add_header(oh, "Content-Type", f->ctype);
        evhttp_send_reply(req, status, http_reason(status), body);
    }
    flow_end(f, GO_OK);
}

static void call_error(struct upstream_req *u, enum upstream_err e, const char *m, void *arg)
{
    struct flow *f = arg;
    f->up = NULL;
    if (f->streaming) {
        /* headers are out: cut the connection so the client sees a truncated stream */
        struct evhttp_connection *evcon = f->evcon;
        log_warn("midstream_error", "endpoint=%s worker=%s err=%s", f->ep, f->worker,
                 upstream_err_name(e));
        client_detach(f);
        flow_end(f, GO_MIDSTREAM);
        if (evcon) evhttp_connection_free(evcon);
        return;
    }
    if (f->head_2xx) {
        fail(f, 502, "worker_broken", GO_MIDSTREAM,
             "the worker's answer broke after it started (%s); not retried", upstream_err_name(e));
        return;
    }
    if (e == UPSTREAM_ERR_TIMEOUT) {
        fail(f, 504, "timeout", GO_UPSTREAM, "the request deadline passed");
        return;
    }
    reroute(f, true, upstream_err_name(e));
}

static const struct upstream_cbs call_cbs = {call_head, call_chunk, call_done, call_error};

struct upstream_pool *gw_worker_pool(struct gateway *g, const char *url)
{
    struct http_url u;
    if (http_url_parse(url, &u) != 0) return NULL;
    for (int i = 0; i < g->npools; i++) {
        struct upstream_pool *p = g->pools[i];
        if (upstream_pool_port(p) == u.port && upstream_pool_tls(p) == u.tls &&
            strcmp(upstream_pool_host(p), u.host) == 0)
            return p;
    }
    if (g->npools == GW_MAX_POOLS) { /* drop a pool with nothing in flight */
        int victim = -1;
        for (int i = 0; i < g->npools && victim < 0; i++)
            if (upstream_pool_connections(g->pools[i]) == upstream_pool_idle(g->pools[i]))
                victim = i;
        if (victim < 0) return NULL;
        upstream_pool_free(g->pools[victim]);
        g->pools[victim] = g->pools[--g->npools];
    }
    struct upstream_pool *p = upstream_pool_new(g->base, g->dns, url, &g->tls);
    if (!p) return NULL;
    upstream_pool_set_max_idle(p, 256);
    g->pools[g->npools++] = p;
    return p;
}

static void send_call(struct flow *f)
{
    struct gateway *g = f->g;
    f->st = F_CALL;
    f->attempts++;
    f->head_2xx = false;
    f->status = 0;
    struct upstream_pool *pool = gw_worker_pool(g, f->worker);
    if (!pool) {
        fail(f, 502, "bad_grant", GO_UPSTREAM, "the engine granted an unusable worker URL");
        return;
    }
    struct http_url u;
    http_url_parse(f->worker, &u);
    size_t pl = strlen(u.path);
    while (pl && u.path[pl - 1] == '/')
        pl--;
    char path[2200];
    snprintf(path, sizeof path, "%.*s%s", (int)pl, u.path, f->route);
    sbuf_reset(&f->body);
    sbuf_reserve(&f->body, f->grant.len + f->payload_len + 32);
    sbuf_puts(&f->body, "{\"auth_data\": ");
    sbuf_append(&f->body, f->grant.data, f->grant.len);
    sbuf_puts(&f->body, ", \"payload\": ");
    sbuf_append(&f->body, f->payload, f->payload_len);
    sbuf_putc(&f->body, '}');
    double left = 0;
    if (g->cfg.request_timeout > 0) {
        left = g->cfg.request_timeout - (clock_mono() - f->t0);
        if (left <= 0.001) {
            fail(f, 504, "timeout", GO_UPSTREAM, "the request deadline passed");
            return;
        }
    }
    struct upstream_opts o = {
        .timeout_s = left,
        .idle_timeout_s = g->cfg.idle_timeout,
        .max_buffered = MAX_WORKER_BODY,
        .retry_reused = true,
    };
    f->up = upstream_request(pool, EVHTTP_REQ_POST, path, "application/json", f->body.data,
                             f->body.len, NULL, &o, &call_cbs, f);
    if (!f->up) reroute(f, true, "request_failed");
}

void gw_flow_start(struct gateway *g, struct evhttp_request *req, const struct gw_flow_args *a)
{
    struct flow *f = calloc(1, sizeof *f);
    if (!f) {
        free(a->payload);
        gw_reply_error(req, a->shape, 500, NULL, "out of memory");
        return;
    }
    f->g = g;
    f->req = req;
    f->shape = a->shape;
    snprintf(f->ep, sizeof f->ep, "%s", a->endpoint);
    snprintf(f->auth, sizeof f->auth, "Bearer %s", a->key);
    snprintf(f->route, sizeof f->route, "%s", a->route);
    f->payload = a->payload;
    f->payload_len = a->payload_len;
    f->cost = a->cost;
    f->wrap_array = a->wrap_array;
    f->t0 = clock_mono();
    f->st = F_ROUTE;
    g->inflight++;
    f->timer = evtimer_new(g->base, on_timer, f);
    f->wait_ev = evtimer_new(g->base, on_tick, f);
    if (!f->timer || !f->wait_ev) {
        fail(f, 500, NULL, GO_UPSTREAM, "out of memory");
        return;
    }
    tick_in(f, fmin(WATCH_AFTER_S, g->cfg.route_timeout));
    /* client disconnect: evhttp's close callback (write errors, timeouts) now, the socket's
     * close (while evhttp is not reading) from WATCH_AFTER_S on */
    f->evcon = evhttp_request_get_connection(req);
    if (f->evcon) evhttp_connection_set_closecb(f->evcon, on_conn_close, f);
    send_route(f);
}
