/* G3 sessions (docs/protocol.md §3.11), PyWorker 1.1.0 on the wire, with its
 * bugs fixed:
 *
 *   POST /session/create  {"auth_data", "payload": {"lifetime", "on_close_route",
 *                          "on_close_payload"}} -> 201 {"session_id", "expiration"}
 *   POST /session/end     {"session_id", "session_auth"} -> 200 {"ended": true, ...}
 *   POST /session/get     -> 200 {session_id, auth_data, lifetime, expiration, ...}
 *   POST /session/health  -> 200 {"ok": true|false}
 *
 * - create verifies the grant like any request (B16): 401 empty body, and the
 *   same readiness gate (503, or 401 while only the engine key is missing).
 * - SGPU_MAX_SESSIONS (default 10; -1 / 0 / none = unlimited, B20) -> 429.
 * - A request carrying a session_id is looked up only after its grant
 *   verified (admission.c, B15), and extends the session only once admitted;
 *   nothing is attached to the session before that, so a 401/429 leaks nothing.
 * - Each admitted session request adds `lifetime` to `expiration` (as
 *   PyWorker), but expiration is never set beyond now + SGPU_SESSION_MAX_TTL
 *   (default 3600 s); the lifetime given at create is capped the same way.
 * - A session is reported as one working request (its auth_data cost is in
 *   cur_load, its request_idx in working_request_idxs), not in the 429
 *   estimate; when it closes its request_idx goes to /delete_requests/ as
 *   Success.
 * - Expired sessions are closed by a timer every SGPU_SESSION_GC seconds.
 *   Closing: remove, abort the session's in-flight requests, then a
 *   best-effort POST on_close_route (a path on the model server; absolute URLs
 *   are refused at create) with on_close_payload plus "session_id" (a
 *   non-object payload is wrapped as {"payload": ...}), asynchronous, 10 s
 *   timeout, result only logged.
 * - session_auth must equal (Python dict equality) the auth_data sent to
 *   create.  The ids of the last 64 closed sessions are remembered so that
 *   /session/end can answer 410 "session already closed".
 * - Bounds (issue 8): a /session/ body is at most SESSION_BODY_MAX bytes,
 *   checked before anything is parsed (413); a grant's `cost` (unsigned in
 *   the url scheme) is clamped to session_cost_cap(); one grant holds at most
 *   one open session (409); and the sessions' load in reports is clamped to
 *   session_cost_cap() as a whole. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "admission.h"
#include "auth.h"
#include "clock.h"
#include "connguard.h"
#include "httputil.h"
#include "lifecycle.h"
#include "log.h"
#include "reply.h"
#include "report.h"
#include "request.h"
#include "session.h"
#include "update.h"
#include "xalloc.h"

#define SESSION_ID_LEN 13
#define CLOSED_RING 64
#define ON_CLOSE_TIMEOUT 10.0
/* A session request is a grant (~0.5 KB) plus a small payload: 64 KiB is generous, and bounds
 * the parse (a tree costs ~45x its text) before anything is authenticated. */
#define SESSION_BODY_MAX (64 * 1024)

struct wsession {
    char id[SESSION_ID_LEN + 1];
    struct pyj_value *auth;             /* auth_data as sent to /session/create */
    double lifetime;                    /* s, added per request */
    double created_at;                  /* epoch s */
    double expiration;                  /* epoch s */
    char *on_close_route;               /* model-server path, or NULL */
    struct pyj_value *on_close_payload; /* or NULL */
    double cost;                        /* auth_data.cost: the session's workload */
    bool has_idx;
    int64_t request_idx;
    TAILQ_ENTRY(wsession) link;
};
TAILQ_HEAD(wsession_list, wsession);

struct close_call {
    struct session_state *st;
    struct upstream_req *u;
    char *body;
    size_t len;
    char id[SESSION_ID_LEN + 1];
    TAILQ_ENTRY(close_call) link;
};
TAILQ_HEAD(close_call_list, close_call);

struct session_state {
    struct worker *w;
    struct wsession_list list;
    struct close_call_list calls;
    struct event *gc_ev;
    struct evhttp *http_plain;     /* WORKER_HTTP_PORT listener (POST /session/end only) */
    struct connguard *plain_guard; /* the WORKER_HTTP_PORT listener's connection discipline */
    int nsessions;                 /* open sessions: one working request each in reports */
    double session_load;           /* Σ cost of open sessions (cur_load, not the 429 estimate) */
    char closed[CLOSED_RING][SESSION_ID_LEN + 1];
    int closed_next;
};

static const char JSON_CT[] = "application/json; charset=utf-8";

static void reply_j(struct evhttp_request *req, int status, const char *body)
{
    reply_json(req, status, JSON_CT, body, strlen(body));
}

static void reply_sb(struct evhttp_request *req, int status, struct sbuf *b)
{
    reply_json(req, status, JSON_CT, b->data ? b->data : "", b->len);
}

/* 13 characters of [A-Za-z0-9] from the OpenSSL CSPRNG (rejection sampling, no bias). */
static void new_id(char *out)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    size_t n = 0;
    while (n < SESSION_ID_LEN) {
        unsigned char r[32];
        if (RAND_bytes(r, sizeof r) != 1) abort();
        for (size_t i = 0; i < sizeof r && n < SESSION_ID_LEN; i++)
            if (r[i] < 248) out[n++] = al[r[i] % 62]; /* 248 = 4 * 62 */
    }
    out[n] = '\0';
}

static struct wsession *find_str(struct session_state *st, const char *id, size_t len)
{
    if (len != SESSION_ID_LEN) return NULL;
    struct wsession *s;
    TAILQ_FOREACH(s, &st->list, link)
    {
        // cppcheck-suppress uninitvar ; TAILQ_FOREACH is not understood
        if (memcmp(s->id, id, SESSION_ID_LEN) == 0) return s;
    }
    return NULL;
}

struct wsession *session_find(struct worker *w, const struct pyj_value *id)
{
    if (!w->sess || !id || id->type != PYJ_STRING) return NULL;
    return find_str(w->sess, id->u.str.s, id->u.str.len);
}

static void extend(struct worker *w, struct wsession *s)
{
    double now = clock_wall();
    double cap = now + w->cfg.session_max_ttl;
    s->expiration += s->lifetime;
    if (s->expiration > cap) s->expiration = cap;
}

void session_attach(struct worker *w, struct wsession *s, struct wreq *wr)
{
    wr->session = s;
    extend(w, s);
}

void session_report_idxs(struct worker *w, struct sbuf *b, bool *first)
{
    if (!w->sess) return;
    struct wsession *s;
    TAILQ_FOREACH(s, &w->sess->list, link)
    {
        // cppcheck-suppress uninitvar ; TAILQ_FOREACH is not understood
        if (!s->has_idx) continue;
        sbuf_printf(b, *first ? "%lld" : ", %lld", (long long)s->request_idx);
        *first = false;
    }
}

int session_count(const struct worker *w)
{
    return w->sess ? w->sess->nsessions : 0;
}

double session_report_load(const struct worker *w)
{
    if (!w->sess) return 0;
    double cap = session_cost_cap(w);
    return w->sess->session_load < cap ? w->sess->session_load : cap;
}

double session_cost_cap(const struct worker *w)
{
    double cap = w->cfg.max_workload;
    if (w->max_perf > 0 && w->cfg.max_queue_time > 0) {
        double window = w->max_perf * w->cfg.max_queue_time; /* what it serves in one wait */
        if (window < cap) cap = window > 1 ? window : 1;
    }
    return cap;
}

/* Same grant: the same signature and the same request_idx (or both without one). */
static bool grant_has_session(struct session_state *st, const struct pyj_value *auth)
{
    const struct pyj_value *sig = pyj_get(auth, "signature");
    const struct pyj_value *idx = pyj_get(auth, "request_idx");
    struct wsession *s;
    TAILQ_FOREACH(s, &st->list, link)
    {
        // cppcheck-suppress uninitvar ; TAILQ_FOREACH is not understood
        const struct pyj_value *ssig = pyj_get(s->auth, "signature");
        const struct pyj_value *sidx = pyj_get(s->auth, "request_idx");
        if ((!sig) != (!ssig) || (sig && !pyj_equal(sig, ssig))) continue;
        if ((!idx) != (!sidx) || (idx && !pyj_equal(idx, sidx))) continue;
        return true;
    }
    return false;
}

/* ---- on_close_route call ---- */

static void call_free(struct close_call *c)
{
    TAILQ_REMOVE(&c->st->calls, c, link);
    free(c->body);
    free(c);
}

static void on_close_done(struct upstream_req *u, int status, struct evbuffer *body, void *arg)
{
    struct close_call *c = arg;
    log_info("session_on_close", "session=%s status=%d", c->id, status);
    call_free(c);
}

static void on_close_error(struct upstream_req *u, enum upstream_err err, const char *msg,
                           void *arg)
{
    struct close_call *c = arg;
    log_warn("session_on_close_failed", "session=%s err=%s msg=\"%s\"", c->id,
             upstream_err_name(err), msg ? msg : "");
    call_free(c);
}

static void send_on_close(struct session_state *st, struct wsession *s)
{
    struct worker *w = st->w;
    struct pyj_value *p;
    if (s->on_close_payload && s->on_close_payload->type == PYJ_OBJECT) {
        p = pyj_clone(s->on_close_payload);
    } else {
        p = pyj_new_object();
        if (s->on_close_payload) pyj_object_set(p, "payload", pyj_clone(s->on_close_payload));
    }
    pyj_object_set(p, "session_id", pyj_new_string(s->id, SESSION_ID_LEN));
    struct sbuf b = SBUF_INIT;
    struct pyj_dump_opts o = {.indent = -1};
    pyj_dump(p, &o, &b);
    pyj_free(p);
    struct close_call *c = xcalloc(1, sizeof *c);
    c->st = st;
    memcpy(c->id, s->id, sizeof c->id);
    c->body = sbuf_steal(&b, &c->len);
    TAILQ_INSERT_TAIL(&st->calls, c, link);
    static const struct upstream_cbs cbs = {NULL, NULL, on_close_done, on_close_error};
    struct upstream_opts uo = {.timeout_s = ON_CLOSE_TIMEOUT, .max_buffered = 1 << 20};
    c->u = upstream_request(w->model, EVHTTP_REQ_POST, s->on_close_route, "application/json",
                            c->body, c->len, NULL, &uo, &cbs, c);
    if (!c->u) {
        log_warn("session_on_close_failed", "session=%s err=start", s->id);
        call_free(c);
    }
}

/* Remove, abort its requests, report it done, call on_close_route. */
static void session_close(struct session_state *st, struct wsession *s, const char *why)
{
    struct worker *w = st->w;
    TAILQ_REMOVE(&st->list, s, link);
    st->nsessions--;
    st->session_load -= s->cost;
    if (st->nsessions == 0 || st->session_load < 0) st->session_load = 0;
    memcpy(st->closed[st->closed_next], s->id, SESSION_ID_LEN + 1);
    st->closed_next = (st->closed_next + 1) % CLOSED_RING;
    log_info("session_closed", "session=%s why=%s", s->id, why);
    for (;;) { /* restart each time: ending one request may end others */
        struct wreq *wr, *hit = NULL;
        TAILQ_FOREACH(wr, &w->working, wlink)
        {
            // cppcheck-suppress uninitvar ; TAILQ_FOREACH is not understood
            if (wr->session == s) {
                hit = wr;
                break;
            }
        }
        if (!hit) break;
        request_abort(hit, 410, "{\"error\": \"session closed\"}");
    }
    if (s->has_idx)
        report_request_done(w, s->request_idx, OUT_SUCCESS, s->created_at, s->created_at,
                            clock_wall());
    w->update_pending = true;
    if (s->on_close_route && !w->final_report_sent) send_on_close(st, s);
    pyj_free(s->auth);
    pyj_free(s->on_close_payload);
    free(s->on_close_route);
    free(s);
}

static void gc(evutil_socket_t fd, short what, void *arg)
{
    struct session_state *st = arg;
    double now = clock_wall();
    struct wsession *s = TAILQ_FIRST(&st->list);
    while (s) {
        struct wsession *next = TAILQ_NEXT(s, link);
        if (s->expiration <= now) session_close(st, s, "expired");
        s = next;
    }
}

/* ---- routes ---- */

static int parse_body(struct evhttp_request *req, struct pyj_value **doc)
{
    size_t len;
    const char *body = http_request_body(req, &len);
    char err[96];
    *doc = NULL;
    if (len > SESSION_BODY_MAX) { /* cheap check first: never parse a big body unauthenticated */
        http_reply_error(req, 413, "session request body is larger than %d bytes",
                         SESSION_BODY_MAX);
        return -1;
    }
    if (pyj_parse(body ? body : "", len, doc, err, sizeof err) != 0 || (*doc)->type != PYJ_OBJECT) {
        pyj_free(*doc);
        *doc = NULL;
        reply_j(req, 422, "{\"error\": \"invalid JSON\"}");
        return -1;
    }
    return 0;
}

/* /session/create's payload: {"lifetime", "on_close_route", "on_close_payload"}, all optional.
 * Replies 422 and returns -1 when a member is malformed. */
struct create_args {
    double lifetime; /* s */
    const struct pyj_value *route, *on_close_payload;
};

static int parse_create_payload(struct evhttp_request *req, const struct pyj_value *payload,
                                struct create_args *ca)
{
    ca->lifetime = 60.0;
    ca->route = ca->on_close_payload = NULL;
    if (!payload || payload->type == PYJ_NULL) return 0;
    if (payload->type != PYJ_OBJECT) {
        reply_j(req, 422, "{\"payload\": \"payload must be a dictionary\"}");
        return -1;
    }
    const struct pyj_value *lt = pyj_get(payload, "lifetime");
    if (lt && lt->type != PYJ_NULL &&
        (lt->type == PYJ_TRUE || lt->type == PYJ_FALSE || !pyj_number(lt, &ca->lifetime) ||
         !isfinite(ca->lifetime) || ca->lifetime <= 0)) {
        reply_j(req, 422, "{\"error\": \"lifetime must be a positive number\"}");
        return -1;
    }
    const struct pyj_value *route = pyj_get(payload, "on_close_route");
    if (route && route->type == PYJ_NULL) route = NULL;
    if (route && (route->type != PYJ_STRING || route->u.str.len == 0 || route->u.str.len > 255 ||
                  route->u.str.s[0] != '/' || memchr(route->u.str.s, 0, route->u.str.len) ||
                  strpbrk(route->u.str.s, " \r\n"))) {
        reply_j(req, 422, "{\"error\": \"on_close_route must be a path on the model server\"}");
        return -1;
    }
    ca->route = route;
    const struct pyj_value *ocp = pyj_get(payload, "on_close_payload");
    ca->on_close_payload = ocp && ocp->type != PYJ_NULL ? ocp : NULL;
    return 0;
}

/* A new open session for a verified grant. */
static struct wsession *session_new(struct worker *w, const struct pyj_value *auth,
                                    const struct create_args *ca)
{
    struct session_state *st = w->sess;
    struct wsession *s = xcalloc(1, sizeof *s);
    do
        new_id(s->id);
    while (find_str(st, s->id, SESSION_ID_LEN));
    s->auth = pyj_clone(auth);
    s->lifetime = ca->lifetime > w->cfg.session_max_ttl ? w->cfg.session_max_ttl : ca->lifetime;
    s->created_at = clock_wall();
    s->expiration = s->created_at + s->lifetime;
    if (ca->route) s->on_close_route = xstrdup(ca->route->u.str.s);
    if (ca->on_close_payload) s->on_close_payload = pyj_clone(ca->on_close_payload);
    double cost = 0;
    if (pyj_number(pyj_get(auth, "cost"), &cost) && isfinite(cost) && cost > 0)
        s->cost = wire_cap(w, cost, session_cost_cap(w), "session_cost");
    s->has_idx =
        w->cfg.report_fmt == REPORT_V3 && pyj_int64(pyj_get(auth, "request_idx"), &s->request_idx);
    TAILQ_INSERT_TAIL(&st->list, s, link);
    st->nsessions++;
    st->session_load += s->cost;
    w->update_pending = true;
    log_info("session_created", "session=%s lifetime=%g cost=%g", s->id, s->lifetime, s->cost);
    return s;
}

/* Steps in order: body (413/422), auth_data present (422), readiness (503), grant (401),
 * payload (422), session limit (429), one session per grant (409), then 201. */
static void handle_create(struct worker *w, struct evhttp_request *req)
{
    struct session_state *st = w->sess;
    struct pyj_value *doc;
    if (parse_body(req, &doc) != 0) return;
    const struct pyj_value *auth = pyj_get(doc, "auth_data");
    struct create_args ca;
    if (!auth || auth->type != PYJ_OBJECT) {
        reply_j(req, 422, "{\"auth_data\": \"field missing\"}");
        goto out;
    }
    if (w->phase != PH_READY && !lifecycle_awaiting_key(w)) {
        reply_not_ready(w, req); /* the same 503 as a data request's */
        goto out;
    }
    const char *why = "";
    int arc = auth_check(w, auth, &why);
    if (arc != 0) { /* B16: create is authenticated */
        log_debug("auth_rejected", "route=/session/create why=\"%s\"", why);
        if (arc == AUTH_INVALID) {
            *w->m_status_401 += 1;
            reply_empty(req, 401);
        } else {
            auth_reply_wrong(w, req, arc, auth);
        }
        goto out;
    }
    if (parse_create_payload(req, pyj_get(doc, "payload"), &ca) != 0) goto out;
    if (w->cfg.max_sessions > 0 && st->nsessions >= w->cfg.max_sessions) {
        *w->m_status_429 += 1;
        reply_empty(req, 429);
        goto out;
    }
    if (grant_has_session(st, auth)) {
        /* One grant (one /route/ answer) is one session.  In the url scheme grants differ only
         * in unsigned fields, so this stops honest reuse; the load bound below is what holds. */
        http_reply_error(req, 409, "this grant already holds an open session");
        goto out;
    }
    struct wsession *s = session_new(w, auth, &ca);
    struct sbuf b = SBUF_INIT;
    sbuf_printf(&b, "{\"session_id\": \"%s\", \"expiration\": ", s->id);
    pyj_write_float(&b, s->expiration);
    sbuf_putc(&b, '}');
    reply_sb(req, 201, &b);
    sbuf_free(&b);
out:
    pyj_free(doc);
}

enum sroute { SR_END, SR_GET, SR_HEALTH };

/* No open session with this id: health {"ok": false}, get 400, end 410 (recently closed) or
 * 400 "session with id ... not found" (the id as Python's f-string writes it). */
static void reply_unknown(struct session_state *st, struct evhttp_request *req,
                          const struct pyj_value *id, enum sroute r)
{
    if (r == SR_HEALTH) {
        reply_j(req, 200, "{\"ok\": false}");
        return;
    }
    if (r == SR_GET) {
        reply_j(req, 400, "{\"error\": \"session does not exist\"}");
        return;
    }
    for (int i = 0; id->type == PYJ_STRING && i < CLOSED_RING; i++) {
        if (id->u.str.len == SESSION_ID_LEN &&
            memcmp(st->closed[i], id->u.str.s, SESSION_ID_LEN) == 0) {
            reply_j(req, 410, "{\"error\": \"session already closed\"}");
            return;
        }
    }
    struct sbuf b = SBUF_INIT, t = SBUF_INIT;
    sbuf_puts(&b, "{\"error\": \"session with id ");
    /* Python f-string of the id inside a JSON string */
    if (id->type == PYJ_STRING) {
        pyj_write_string(&t, id->u.str.s, id->u.str.len);
        sbuf_append(&b, t.data + 1, t.len - 2); /* without the quotes */
    } else {
        struct pyj_dump_opts o = {.indent = -1};
        pyj_dump(id, &o, &t);
        struct sbuf q = SBUF_INIT;
        pyj_write_string(&q, t.data, t.len);
        sbuf_append(&b, q.data + 1, q.len - 2);
        sbuf_free(&q);
    }
    sbuf_free(&t);
    sbuf_puts(&b, " not found\"}");
    reply_sb(req, 400, &b);
    sbuf_free(&b);
}

/* /session/get: the session as PyWorker lists it. */
static void reply_get(struct evhttp_request *req, const struct wsession *s)
{
    struct sbuf b = SBUF_INIT;
    struct pyj_dump_opts o = {.indent = -1};
    sbuf_printf(&b, "{\"session_id\": \"%s\", \"auth_data\": ", s->id);
    pyj_dump(s->auth, &o, &b);
    sbuf_puts(&b, ", \"lifetime\": ");
    pyj_write_float(&b, s->lifetime);
    sbuf_puts(&b, ", \"expiration\": ");
    pyj_write_float(&b, s->expiration);
    sbuf_puts(&b, ", \"created_at\": ");
    pyj_write_float(&b, s->created_at);
    sbuf_puts(&b, ", \"on_close_route\": ");
    if (s->on_close_route)
        pyj_write_string(&b, s->on_close_route, strlen(s->on_close_route));
    else
        sbuf_puts(&b, "null");
    sbuf_puts(&b, ", \"on_close_payload\": ");
    if (s->on_close_payload)
        pyj_dump(s->on_close_payload, &o, &b);
    else
        sbuf_puts(&b, "null");
    sbuf_putc(&b, '}');
    reply_sb(req, 200, &b);
    sbuf_free(&b);
}

/* /session/end, /session/get, /session/health: {"session_id", "session_auth"}. */
static void handle_existing(struct worker *w, struct evhttp_request *req, enum sroute r)
{
    struct session_state *st = w->sess;
    struct pyj_value *doc;
    if (parse_body(req, &doc) != 0) return;
    const struct pyj_value *id = pyj_get(doc, "session_id");
    const struct pyj_value *sa = pyj_get(doc, "session_auth");
    struct wsession *s = NULL;
    if (!id || id->type == PYJ_NULL) {
        reply_j(req, 422, "{\"error\": \"missing session_id\"}");
    } else if (!(s = session_find(w, id))) {
        reply_unknown(st, req, id, r);
    } else if (!sa || !pyj_equal(sa, s->auth)) {
        reply_j(req, 401, "{\"error\": \"session_auth is not valid\"}");
    } else if (r == SR_HEALTH) {
        reply_j(req, 200, "{\"ok\": true}");
    } else if (r == SR_GET) {
        reply_get(req, s);
    } else {
        char sid[SESSION_ID_LEN + 1];
        memcpy(sid, s->id, sizeof sid);
        session_close(st, s, "ended");
        struct sbuf b = SBUF_INIT;
        sbuf_printf(&b, "{\"ended\": true, \"removed_session\": \"%s\"}", sid);
        reply_sb(req, 200, &b);
        sbuf_free(&b);
    }
    pyj_free(doc);
}

static void post_end(struct worker *w, struct evhttp_request *req)
{
    handle_existing(w, req, SR_END);
}

static void post_get(struct worker *w, struct evhttp_request *req)
{
    handle_existing(w, req, SR_GET);
}

static void post_health(struct worker *w, struct evhttp_request *req)
{
    handle_existing(w, req, SR_HEALTH);
}

/* The session routes and /pyworker/update: POST only. */
static const struct {
    const char *path;
    void (*fn)(struct worker *w, struct evhttp_request *req);
} session_routes[] = {
    {"/session/create", handle_create},  {"/session/end", post_end},
    {"/session/get", post_get},          {"/session/health", post_health},
    {"/pyworker/update", update_handle},
};

int session_route(struct worker *w, struct evhttp_request *req, const char *path)
{
    size_t n = sizeof session_routes / sizeof session_routes[0], k = 0;
    while (k < n && strcmp(path, session_routes[k].path) != 0)
        k++;
    if (k == n) return 0;
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        reply_method_not_allowed(req, "POST");
        return 1;
    }
    session_routes[k].fn(w, req);
    return 1;
}

/* WORKER_HTTP_PORT: a plain listener that serves only POST /session/end. */
static void plain_cb(struct evhttp_request *req, void *arg)
{
    struct worker *w = arg;
    char path[512];
    if (!http_request_path(req, path, sizeof path) || strcmp(path, "/session/end") != 0) {
        reply_text(req, 404, "404: Not Found");
        return;
    }
    session_route(w, req, path);
}

int session_init(struct worker *w)
{
    struct session_state *st = xcalloc(1, sizeof *st);
    st->w = w;
    TAILQ_INIT(&st->list);
    TAILQ_INIT(&st->calls);
    w->sess = st;
    st->gc_ev = event_new(w->base, -1, EV_PERSIST, gc, st);
    if (!st->gc_ev) return -1;
    struct timeval tv = clock_tv(w->cfg.session_gc);
    evtimer_add(st->gc_ev, &tv);
    const struct wconfig *c = &w->cfg;
    if (c->http_port >= 0 && (c->use_ssl || c->http_port_set)) {
        struct http_limits lim = {c->max_body, c->max_headers, (int)(c->idle_timeout + 0.5)};
        st->http_plain = http_server_new(w->base, &lim);
        if (!st->http_plain) return -1;
        evhttp_set_gencb(st->http_plain, plain_cb, w);
        /* Same discipline as the main listener (deadline, idle eviction, framing,
         * budget), sized for a route that takes one small JSON object. */
        struct connguard_opts o = {
            .prefix = NULL,
            .max_conns = 256,
            .fds_per_conn = 1,
            .deadline_s = c->request_deadline,
            .body_budget = (size_t)4 << 20,
            .max_body = c->max_body,
        };
        st->plain_guard = connguard_new(w->base, st->http_plain, &o, NULL);
        if (!st->plain_guard) return -1;
        int port = 0;
        if (connguard_listen(st->plain_guard, c->host, c->http_port, &port) != 0) {
            log_error("listen_failed", "host=%s port=%d what=WORKER_HTTP_PORT", c->host,
                      c->http_port);
            return -1;
        }
        log_info("listening_http", "port=%d routes=/session/end", port);
    }
    return 0;
}

void session_free(struct worker *w)
{
    struct session_state *st = w->sess;
    if (!st) return;
    if (st->gc_ev) event_free(st->gc_ev);
    struct close_call *c;
    while ((c = TAILQ_FIRST(&st->calls)) != NULL) {
        if (c->u) upstream_cancel(c->u);
        call_free(c);
    }
    struct wsession *s;
    while ((s = TAILQ_FIRST(&st->list)) != NULL) {
        TAILQ_REMOVE(&st->list, s, link);
        pyj_free(s->auth);
        pyj_free(s->on_close_payload);
        free(s->on_close_route);
        free(s);
    }
    if (st->plain_guard) connguard_free(st->plain_guard);
    if (st->http_plain) evhttp_free(st->http_plain);
    free(st);
    w->sess = NULL;
}
