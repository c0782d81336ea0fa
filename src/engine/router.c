/* /route/: pick the ready worker with the least estimated queue time, sign a grant for it, or
 * park the request in the endpoint's global queue (the client polls with its request_idx).
 *
 * Fairness: while requests wait, a new request is granted only if the non-full workers can
 * take more requests (of its cost, before reaching max_queue_time) than there are waiting
 * requests still being polled, i.e. capacity the waiters will need is reserved for them; a
 * polling waiting request is served whenever any worker is non-full.
 *
 * Long poll: a call that would get the waiting answer is held (up to --route-hold-ms, at most
 * --route-hold-max at once) and granted, oldest first, from a deferred "kick" when capacity may
 * have freed (a report, a worker ready, /delete_requests/ via the grant records, a tick); the
 * waiting body is sent only when the hold expires.  A held client that closes its socket leaves
 * the queue.  Everything stays on the loop thread; nothing blocks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <errno.h>
#include <sys/socket.h>

#include <event2/bufferevent.h>
#include <event2/http.h>

#include "clock.h"
#include "engine.h"
#include "httputil.h"
#include "idmap.h"
#include "lifecycle.h"
#include "log.h"
#include "metrics.h"
#include "pyjson.h"
#include "router.h"
#include "signer.h"
#include "signpool.h"
#include "state.h"
#include "store.h"
#include "xalloc.h"

/* A request waiting in an endpoint's global queue (doubly linked, FIFO). */
struct qreq {
    int64_t request_idx;
    double cost;
    double first_mono, last_poll_mono, timeout_s;
    struct qreq *prev, *next;
    /* long poll: the client's /route/ call, held open until a grant or the hold expires */
    struct evhttp_request *held; /* NULL = not held */
    struct event *hold_ev;       /* hold expiry timer */
    struct event *close_ev;      /* the client's socket closing while held */
    struct endpoint *ep;
    struct engine *e;
};

/* An outstanding grant (request_idx -> worker and cost), so that /delete_requests/ can free
 * the capacity it took before the worker's next report.  Kept in grant order (FIFO) and
 * dropped after GRANT_TTL_S or when the table is full. */
struct grant {
    int64_t request_idx, worker_id;
    double cost, mono;
    uint64_t seen_seq; /* worker report_seq of the last report that listed it as working */
    struct grant *prev, *next;
};

/* The router's own state (e->router; NULL until router_init: then nothing is held and no grant
 * is recorded). */
struct router {
    struct event *kick_ev; /* deferred router_kick of endpoints marked `kick` */
    size_t nheld;          /* held /route/ calls, all endpoints */
    struct idmap *grants;  /* request_idx -> struct grant */
    struct grant *ghead, *gtail;
    size_t ngrants;
};

/* An endpoint's global queue of waiting /route/ requests (ep->rq; made on first use, freed by
 * router_queue_clear). */
struct route_queue {
    struct qreq *head, *tail; /* FIFO */
    size_t len;
    struct idmap *map; /* request_idx -> struct qreq */
    size_t active;     /* waiting requests polled recently (counted each tick) */
    bool kick;         /* capacity may have freed: try the held requests (deferred) */
    size_t nheld;      /* held /route/ calls of this endpoint */
};

static struct route_queue *rq(struct endpoint *ep)
{
    if (!ep->rq) ep->rq = xcalloc(1, sizeof *ep->rq);
    return ep->rq;
}

size_t router_queue_len(const struct endpoint *ep)
{
    return ep->rq ? ep->rq->len : 0;
}

double router_queue_cost(const struct endpoint *ep)
{
    double cost = 0;
    for (const struct qreq *q = ep->rq ? ep->rq->head : NULL; q; q = q->next)
        cost += q->cost;
    return cost;
}

#define QUEUE_MAX 100000
#define GRANT_TTL_S 600.0 /* grant records kept for /delete_requests/ at most this long */
#define GRANTS_MAX 200000 /* grant records kept at most (oldest dropped) */

double router_queue_time(const struct worker *w)
{
    if (w->max_perf <= 0) return INFINITY;
    return (w->cur_load + w->granted_since_report) / w->max_perf;
}

static bool worker_full(const struct endpoint *ep, const struct worker *w, double qt)
{
    if (ep->p.max_queue_time <= 0) return w->cur_load + w->granted_since_report > 0;
    return qt > ep->p.max_queue_time;
}

bool router_worker_full(const struct endpoint *ep, const struct worker *w)
{
    return worker_full(ep, w, router_queue_time(w));
}

/* How many more requests of this cost a non-full worker takes before it is full (>= 1). */
static double worker_slots(const struct endpoint *ep, const struct worker *w, double qt,
                           double cost)
{
    if (ep->p.max_queue_time <= 0) return 1;
    double room = (ep->p.max_queue_time - qt) * w->max_perf; /* workload units */
    double n = cost > 0 ? floor(room / cost) : 1e6;
    if (n > 1e6) n = 1e6;
    return 1 + (n > 0 ? n : 0);
}

static void hold_end(struct qreq *q);

/* Every /route/ answer leaves from this file: a grant, "waiting", or an error body. */
static void answer_error(struct evhttp_request *req, int status, const char *code, const char *msg)
{
    http_reply_json_error(req, status, code, "%s", msg);
}

static void q_unlink(struct endpoint *ep, struct qreq *q)
{
    hold_end(q);
    if (q->prev)
        q->prev->next = q->next;
    else
        rq(ep)->head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        rq(ep)->tail = q->prev;
    idmap_del(rq(ep)->map, q->request_idx);
    rq(ep)->len--;
    free(q);
}

static void answer_waiting(struct endpoint *ep, int64_t idx, struct sbuf *out);

void router_queue_clear(struct endpoint *ep)
{
    for (struct qreq *q = rq(ep)->head; q; q = q->next) {
        if (!q->held) continue;
        struct evhttp_request *req = q->held;
        hold_end(q);
        answer_error(req, 404, "not_found", "endpoint deleted");
    }
    while (rq(ep)->head)
        q_unlink(ep, rq(ep)->head);
    idmap_free(ep->rq->map);
    free(ep->rq);
    ep->rq = NULL;
}

/* A waiting request whose client has not polled for this long no longer holds back new
 * requests (the SDK polls at least every 5 s); it still expires only after its timeout. */
#define POLL_STALE_S 10.0

void router_expire(struct engine *e, struct endpoint *ep, double now)
{
    rq(ep)->active = 0;
    for (struct qreq *q = rq(ep)->head, *n; q; q = n) {
        n = q->next;
        if (q->held) q->last_poll_mono = now; /* being polled right now */
        if (now - q->last_poll_mono <= POLL_STALE_S) rq(ep)->active++;
        if (now - q->last_poll_mono > q->timeout_s) {
            log_info("queue_expired", "endpoint=%s request_idx=%lld waited=%.3f", ep->name,
                     (long long)q->request_idx, now - q->first_mono);
            q_unlink(ep, q);
        }
    }
    (void)e;
}

void router_status_json(struct endpoint *ep, struct sbuf *out)
{
    int counts[WS__COUNT] = {0};
    for (size_t i = 0; i < ep->nws; i++)
        counts[ep->ws[i]->state]++;
    sbuf_putc(out, '{');
    bool first = true;
    for (int s = 0; s < WS__COUNT; s++) {
        if (!counts[s]) continue;
        sbuf_printf(out, "%s\"%s\": %d", first ? "" : ", ", state_name((enum wstate)s), counts[s]);
        first = false;
    }
    sbuf_putc(out, '}');
}

/* xoshiro256** seeded once from getrandom: request ids need uniqueness, not secrecy. */
static uint64_t rng_s[4];
static bool rng_init;

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(void)
{
    if (!rng_init) {
        if (getrandom(rng_s, sizeof rng_s, 0) != (ssize_t)sizeof rng_s) {
            rng_s[0] = (uint64_t)(clock_wall() * 1e6);
            rng_s[1] = 0x9E3779B97F4A7C15ull;
        }
        rng_init = true;
    }
    uint64_t r = rotl(rng_s[1] * 5, 7) * 9, t = rng_s[1] << 17;
    rng_s[2] ^= rng_s[0];
    rng_s[3] ^= rng_s[1];
    rng_s[1] ^= rng_s[2];
    rng_s[0] ^= rng_s[3];
    rng_s[2] ^= t;
    rng_s[3] = rotl(rng_s[3], 45);
    return r;
}

static void put_uuid4(struct sbuf *out)
{
    uint64_t a = rng_next(), b = rng_next();
    a = (a & ~0xF000ull) | 0x4000ull;       /* version 4 */
    b = (b & ~(3ull << 62)) | (2ull << 62); /* variant 10 */
    sbuf_printf(out, "%08llx-%04llx-%04llx-%04llx-%012llx", (unsigned long long)(a >> 32),
                (unsigned long long)((a >> 16) & 0xFFFF), (unsigned long long)(a & 0xFFFF),
                (unsigned long long)(b >> 48), (unsigned long long)(b & 0xFFFFFFFFFFFFull));
}

static int64_t next_idx(struct engine *e)
{
    int64_t idx = e->next_request_idx++;
    if (e->next_request_idx >= e->request_idx_reserved) {
        /* reserve a block so request_idx never repeats across restarts */
        e->request_idx_reserved = e->next_request_idx + 100000;
        char v[32];
        snprintf(v, sizeof v, "%lld", (long long)e->request_idx_reserved);
        store_meta_set(e->store, "request_idx_reserved", v);
    }
    return idx;
}

static void answer_waiting(struct endpoint *ep, int64_t idx, struct sbuf *out)
{
    sbuf_puts(out, "{\"endpoint\": ");
    pyj_write_string(out, ep->name, strlen(ep->name));
    sbuf_puts(out, ", \"status\": ");
    router_status_json(ep, out);
    sbuf_printf(out, ", \"request_idx\": %lld}", (long long)idx);
}

/* ---- grant records (for /delete_requests/) ---- */

static void grant_unlink(struct engine *e, struct grant *g)
{
    if (g->prev)
        g->prev->next = g->next;
    else
        e->router->ghead = g->next;
    if (g->next)
        g->next->prev = g->prev;
    else
        e->router->gtail = g->prev;
    idmap_del(e->router->grants, g->request_idx);
    e->router->ngrants--;
    free(g);
}

static void grant_record(struct engine *e, struct worker *w, int64_t request_idx, double cost,
                         double now)
{
    if (!e->router) return;
    struct grant *old = idmap_get(e->router->grants, request_idx);
    if (old) grant_unlink(e, old); /* a re-route of the same request: the newest counts */
    if (e->router->ngrants >= GRANTS_MAX) grant_unlink(e, e->router->ghead);
    struct grant *g = xcalloc(1, sizeof *g);
    g->request_idx = request_idx;
    g->worker_id = w->id;
    g->cost = cost;
    g->mono = now;
    g->prev = e->router->gtail;
    if (e->router->gtail)
        e->router->gtail->next = g;
    else
        e->router->ghead = g;
    e->router->gtail = g;
    e->router->ngrants++;
    idmap_put(e->router->grants, request_idx, g);
}

void router_grants_expire(struct engine *e, double now)
{
    while (e->router && e->router->ghead && now - e->router->ghead->mono > GRANT_TTL_S)
        grant_unlink(e, e->router->ghead);
}

void router_grant_working(struct engine *e, struct worker *w, int64_t request_idx)
{
    struct grant *g = e->router ? idmap_get(e->router->grants, request_idx) : NULL;
    if (g && g->worker_id == w->id) g->seen_seq = w->report_seq;
}

int router_grant_done(struct engine *e, const struct worker *from, int64_t request_idx)
{
    struct grant *g = e->router ? idmap_get(e->router->grants, request_idx) : NULL;
    if (!g) return 0;
    /* only the worker the grant was issued to may close it: another worker (even with its own
     * valid mtoken) must not free this worker's capacity in the estimate */
    if (g->worker_id != from->id) return -1;
    struct worker *w = state_worker_by_id(e, g->worker_id);
    if (w) {
        /* The estimate is cur_load (last report) + cost granted since.  Granted after the last
         * report: it is in granted_since_report.  Listed as working by the last report: it is
         * in cur_load.  Otherwise the last report already left it out. */
        if (g->mono > w->last_report_mono) {
            w->granted_since_report -= g->cost;
            if (w->granted_since_report < 1e-9) w->granted_since_report = 0;
        } else if (w->report_seq > 0 && g->seen_seq == w->report_seq) {
            w->cur_load -= g->cost;
            if (w->cur_load < 1e-9) w->cur_load = 0;
        }
        struct endpoint *ep = state_endpoint_by_id(e, w->endpoint_id);
        if (ep) router_kick(e, ep);
    }
    grant_unlink(e, g);
    return 1;
}

/* Grant bookkeeping shared by the inline and the threaded signing paths. */
static void granted(struct engine *e, struct endpoint *ep, struct worker *w, struct qreq *q,
                    int64_t request_idx, double cost, double now)
{
    if (q) {
        if (e->h_qwait) metrics_observe(e->h_qwait, now - q->first_mono);
        q_unlink(ep, q);
    }
    w->granted_since_report += cost;
    w->last_grant_mono = now;
    w->grants_total++;
    w->dirty = true;
    grant_record(e, w, request_idx, cost, now);
}

/* The non-full ready worker with the least estimated queue time (ties: lowest id), and the
 * number of requests of this cost the non-full workers can still take. */
static struct worker *pick(struct endpoint *ep, double cost, double *slots_out)
{
    struct worker *best = NULL;
    double best_qt = INFINITY;
    double slots = 0;
    for (size_t i = 0; i < ep->nws; i++) {
        struct worker *w = ep->ws[i];
        if (!state_is_ready(w)) continue;
        double qt = router_queue_time(w);
        if (worker_full(ep, w, qt)) continue;
        slots += worker_slots(ep, w, qt, cost);
        if (!best || qt < best_qt || (qt == best_qt && w->id < best->id)) {
            best = w;
            best_qt = qt;
        }
    }
    if (slots_out) *slots_out = slots;
    return best;
}

/* A grant whose signature the signing threads compute: the answer is head + signature + tail,
 * sent from on_signed (on the loop thread). */
struct signed_answer {
    struct engine *e;
    struct evhttp_request *req;
    enum sig_scheme scheme;
    double t0;
    struct sbuf head, tail;
};

static void on_signed(void *arg, int rc, const char *sig, size_t len)
{
    struct signed_answer *a = arg;
    struct engine *e = a->e;
    if (rc == 0) {
        struct sbuf out = SBUF_INIT;
        sbuf_append(&out, a->head.data, a->head.len);
        sbuf_append(&out, sig, len);
        sbuf_append(&out, a->tail.data, a->tail.len);
        http_reply_json(a->req, 200, out.data, out.len);
        sbuf_free(&out);
        *e->c_sign[a->scheme] += 1;
        *e->c_routes_granted += 1;
    } else {
        answer_error(a->req, 500, "internal", "signing failed");
        *e->c_routes_error += 1;
    }
    metrics_observe(e->h_route, clock_mono() - a->t0);
    sbuf_free(&a->head);
    sbuf_free(&a->tail);
    free(a);
}

/* Sign and answer a grant for `best`.  Returns the HTTP status, or 0 when the signing
 * threads answer req. */
static int grant(struct engine *e, struct endpoint *ep, struct worker *best, struct qreq *q,
                 double cost, int64_t request_idx, struct sbuf *out, struct evhttp_request *req,
                 double t0, double now)
{
    int64_t reqnum = ++best->reqnum;
    if (req && e->signpool && ep->p.sig_scheme != SIG_URL) {
        struct signed_answer *a = xcalloc(1, sizeof *a);
        a->e = e;
        a->req = req;
        a->scheme = ep->p.sig_scheme;
        a->t0 = t0;
        char num[40];
        pyj_format_float(cost, num, sizeof num);
        sbuf_puts(&a->head, "{\"endpoint\": ");
        pyj_write_string(&a->head, ep->name, strlen(ep->name));
        sbuf_puts(&a->head, ", \"url\": ");
        pyj_write_string(&a->head, best->url, strlen(best->url));
        sbuf_printf(&a->head, ", \"cost\": %s, \"reqnum\": %lld, \"signature\": \"", num,
                    (long long)reqnum);
        sbuf_printf(&a->tail, "\", \"request_idx\": %lld, \"__request_id\": \"",
                    (long long)request_idx);
        put_uuid4(&a->tail);
        sbuf_puts(&a->tail, "\"}");
        struct sbuf msg = SBUF_INIT;
        signer_message(ep->p.sig_scheme, cost, ep->name, reqnum, request_idx, best->url, &msg);
        signpool_submit(e, &msg, on_signed, a);
        granted(e, ep, best, q, request_idx, cost, now);
        return 0;
    }
    size_t mark = out->len;
    sbuf_puts(out, "{\"endpoint\": ");
    pyj_write_string(out, ep->name, strlen(ep->name));
    sbuf_puts(out, ", \"url\": ");
    pyj_write_string(out, best->url, strlen(best->url));
    char num[40];
    pyj_format_float(cost, num, sizeof num);
    sbuf_printf(out, ", \"cost\": %s, \"reqnum\": %lld, \"signature\": \"", num, (long long)reqnum);
    if (signer_grant(e, ep, best, cost, reqnum, request_idx, out) != 0) {
        out->len = mark;
        if (out->data) out->data[mark] = '\0';
        *e->c_routes_error += 1;
        http_json_error(out, "internal", "signing failed");
        return 500;
    }
    sbuf_printf(out, "\", \"request_idx\": %lld, \"__request_id\": \"", (long long)request_idx);
    put_uuid4(out);
    sbuf_puts(out, "\"}");
    granted(e, ep, best, q, request_idx, cost, now);
    *e->c_routes_granted += 1;
    return 200;
}

/* ---- long poll ---- */

/* Stop holding q (timer freed, close callback removed); the request is not answered. */
static void hold_end(struct qreq *q)
{
    if (!q->held) return;
    struct evhttp_connection *c = evhttp_request_get_connection(q->held);
    if (c) evhttp_connection_set_closecb(c, NULL, NULL);
    q->held = NULL;
    if (q->hold_ev) event_free(q->hold_ev);
    q->hold_ev = NULL;
    if (q->close_ev) event_free(q->close_ev);
    q->close_ev = NULL;
    q->last_poll_mono = clock_mono(); /* the replay timeout counts from the end of the poll */
    if (q->ep && rq(q->ep)->nheld) rq(q->ep)->nheld--;
    if (q->e && q->e->router && q->e->router->nheld) q->e->router->nheld--;
}

static void hold_answer_waiting(struct qreq *q)
{
    struct evhttp_request *req = q->held;
    struct endpoint *ep = q->ep;
    hold_end(q);
    struct sbuf out = SBUF_INIT;
    answer_waiting(ep, q->request_idx, &out);
    http_reply_json(req, 200, out.data, out.len);
    sbuf_free(&out);
}

static void on_hold_expired(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    hold_answer_waiting(arg);
}

/* The client went away: its request leaves the queue (it reserves no capacity any more). */
static void on_hold_closed(struct evhttp_connection *c, void *arg)
{
    (void)c;
    struct qreq *q = arg;
    struct evhttp_request *req = q->held;
    if (!req) return;
    hold_end(q);
    log_debug("route_hold_closed", "endpoint=%s request_idx=%lld", q->ep->name,
              (long long)q->request_idx);
    q_unlink(q->ep, q);
    /* libevent detached the unanswered request from the dying connection: it is ours */
    if (!evhttp_request_get_connection(req)) evhttp_request_free(req);
}

/* libevent 2.1 does not read a connection while its request awaits the answer, so it would
 * notice a client that went away only when the answer is written: watch the socket for the
 * peer's close ourselves (EV_CLOSED = EPOLLRDHUP; else a readable socket with nothing to peek
 * at).  The request leaves the queue and the connection is freed with it. */
static void on_peer_closed(evutil_socket_t fd, short what, void *arg)
{
    struct qreq *q = arg;
    if (!(what & EV_CLOSED)) {
        char b;
        ssize_t r = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (r > 0 || (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))) {
            event_free(q->close_ev); /* more bytes (pipelining): cannot tell; stop watching */
            q->close_ev = NULL;
            return;
        }
    }
    struct evhttp_connection *c = evhttp_request_get_connection(q->held);
    log_debug("route_hold_closed", "endpoint=%s request_idx=%lld", q->ep->name,
              (long long)q->request_idx);
    hold_end(q);
    q_unlink(q->ep, q);
    if (c) evhttp_connection_free(c); /* frees the unanswered request too */
}

static bool hold(struct engine *e, struct endpoint *ep, struct qreq *q, struct evhttp_request *req)
{
    if (!req || e->opts.route_hold_ms <= 0 || e->stopping || q->held || !e->router ||
        e->router->nheld >= (size_t)e->opts.route_hold_max)
        return false;
    struct evhttp_connection *c = evhttp_request_get_connection(req);
    if (!c) return false;
    q->e = e;
    q->ep = ep;
    q->hold_ev = evtimer_new(e->base, on_hold_expired, q);
    if (!q->hold_ev) return false;
    struct timeval tv = clock_tv_ms(e->opts.route_hold_ms);
    evtimer_add(q->hold_ev, &tv);
    q->held = req;
    evhttp_connection_set_closecb(c, on_hold_closed, q);
    struct bufferevent *bev = evhttp_connection_get_bufferevent(c);
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    if (fd >= 0) {
        bool early = event_base_get_features(e->base) & EV_FEATURE_EARLY_CLOSE;
        q->close_ev =
            xnonnull(event_new(e->base, fd, early ? EV_CLOSED : EV_READ, on_peer_closed, q));
        if (q->close_ev) event_add(q->close_ev, NULL);
    }
    rq(ep)->nheld++;
    e->router->nheld++;
    return true;
}

static void kick_endpoint(struct engine *e, struct endpoint *ep)
{
    double now = clock_mono();
    for (struct qreq *q = rq(ep)->head, *n; q && rq(ep)->nheld > 0; q = n) {
        n = q->next;
        if (!q->held) continue;
        struct worker *best = pick(ep, q->cost, NULL);
        if (!best) break; /* FIFO: nobody behind it is served first */
        struct evhttp_request *req = q->held;
        hold_end(q);
        struct sbuf out = SBUF_INIT;
        int64_t idx = q->request_idx;
        int st = grant(e, ep, best, q, q->cost, idx, &out, req, now, now); /* frees q */
        if (st != 0) http_reply_json(req, st, out.data, out.len);
        sbuf_free(&out);
    }
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct engine *e = arg;
    for (struct endpoint *ep = e->endpoints; ep; ep = ep->next) {
        if (!rq(ep)->kick) continue;
        rq(ep)->kick = false;
        if (rq(ep)->nheld && !ep->deleting && !e->stopping) kick_endpoint(e, ep);
    }
}

void router_kick(struct engine *e, struct endpoint *ep)
{
    if (!e->router || !rq(ep)->nheld) return;
    rq(ep)->kick = true;
    event_active(e->router->kick_ev, EV_TIMEOUT, 0);
}

void router_release_all(struct engine *e)
{
    for (struct endpoint *ep = e->endpoints; ep; ep = ep->next)
        for (struct qreq *q = rq(ep)->head; q && rq(ep)->nheld; q = q->next)
            if (q->held) hold_answer_waiting(q);
}

void router_failing_json(const struct endpoint *ep, const struct workergroup *g, struct sbuf *out)
{
    char msg[800];
    snprintf(msg, sizeof msg,
             "endpoint %s has no ready worker and its workergroup %lld is failing after %d "
             "consecutive instance failures (creates stopped until it is updated or retried: "
             "sgpu workergroup retry %lld); last error: %s",
             ep->name, (long long)g->id, g->fails, (long long)g->id, g->last_error);
    sbuf_puts(out, "{\"success\": false, \"error\": \"workergroup_failing\", \"msg\": ");
    pyj_write_string(out, msg, strlen(msg));
    sbuf_puts(out, ", \"endpoint\": ");
    pyj_write_string(out, ep->name, strlen(ep->name));
    sbuf_printf(out,
                ", \"workergroup_id\": %lld, \"failures\": %d, \"last_error\": ", (long long)g->id,
                g->fails);
    pyj_write_string(out, g->last_error, strlen(g->last_error));
    sbuf_putc(out, '}');
}

/* Held requests of ep get the 503 now and leave the queue: nothing will serve them. */
void router_fail_held(struct engine *e, struct endpoint *ep)
{
    struct workergroup *g = lifecycle_wg_blocking(e, ep);
    if (!g) return;
    for (struct qreq *q = rq(ep)->head, *n; q && rq(ep)->nheld; q = n) {
        n = q->next;
        if (!q->held) continue;
        struct evhttp_request *req = q->held;
        hold_end(q);
        struct sbuf out = SBUF_INIT;
        router_failing_json(ep, g, &out);
        *e->c_routes_error += 1;
        http_reply_json(req, 503, out.data, out.len);
        sbuf_free(&out);
        q_unlink(ep, q);
    }
}

int router_init(struct engine *e)
{
    struct router *r = xcalloc(1, sizeof *r);
    r->grants = idmap_new();
    r->kick_ev = xnonnull(event_new(e->base, -1, 0, on_kick, e));
    e->router = r;
    if (r->kick_ev && r->grants) return 0;
    router_fini(e);
    return -1;
}

void router_fini(struct engine *e)
{
    struct router *r = e->router;
    if (!r) return;
    while (r->ghead)
        grant_unlink(e, r->ghead);
    idmap_free(r->grants);
    if (r->kick_ev) event_free(r->kick_ev);
    free(r);
    e->router = NULL;
}

int router_route(struct engine *e, struct endpoint *ep, double cost, int64_t request_idx,
                 double replay_timeout, struct sbuf *out, struct evhttp_request *req, double t0)
{
    double now = clock_mono();
    if (e->stopping) { /* shutting down: no new grants; the client polls again */
        if (request_idx <= 0) request_idx = next_idx(e);
        *e->c_routes_queued += 1;
        answer_waiting(ep, request_idx, out);
        return 200;
    }
    ep->last_request_mono = now;
    struct qreq *q = NULL;
    if (request_idx > 0 && rq(ep)->map) q = idmap_get(rq(ep)->map, request_idx);
    if (q) {
        q->last_poll_mono = now;
        if (replay_timeout > 0) q->timeout_s = replay_timeout;
    } else {
        if (request_idx <= 0) request_idx = next_idx(e);
        ep->arrivals += cost; /* demand is counted once per request */
        ep->ts_routes += 1;   /* routes/s of the dashboard's time series */
    }

    double slots = 0; /* requests the non-full workers can still take */
    struct worker *best = pick(ep, cost, &slots);
    if (!best && lifecycle_wake_parked(e, ep)) best = pick(ep, cost, &slots);
    /* q_active is refreshed every tick; requests queued since then count too */
    size_t waiting = rq(ep)->active < rq(ep)->len ? rq(ep)->active : rq(ep)->len;
    bool ok = best && (q || slots > (double)waiting);
    struct workergroup *failing = best ? NULL : lifecycle_wg_blocking(e, ep);
    if (failing) {
        /* nothing will serve it until an operator acts: say why instead of "waiting" */
        if (q) q_unlink(ep, q);
        *e->c_routes_error += 1;
        router_failing_json(ep, failing, out);
        return 503;
    }
    if (!ok) {
        ep->want_scale_up = true;
        if (!q) {
            if (rq(ep)->len >= QUEUE_MAX) {
                *e->c_routes_error += 1;
                http_json_error(out, "queue_full", "too many requests waiting for this endpoint");
                return 429;
            }
            q = xcalloc(1, sizeof *q);
            q->request_idx = request_idx;
            q->cost = cost;
            q->first_mono = q->last_poll_mono = now;
            q->timeout_s = replay_timeout > 0 ? replay_timeout : 60.0;
            q->e = e;
            q->ep = ep;
            q->prev = rq(ep)->tail;
            if (rq(ep)->tail)
                rq(ep)->tail->next = q;
            else
                rq(ep)->head = q;
            rq(ep)->tail = q;
            rq(ep)->len++;
            rq(ep)->active++;
            if (!rq(ep)->map) rq(ep)->map = idmap_new();
            idmap_put(rq(ep)->map, request_idx, q);
        }
        *e->c_routes_queued += 1;
        if (hold(e, ep, q, req)) {
            /* answered by a grant or when the hold expires; with room now, the held
             * requests (this one included) are granted in FIFO order at once */
            if (best) router_kick(e, ep);
            return 0;
        }
        answer_waiting(ep, request_idx, out);
        return 200;
    }
    return grant(e, ep, best, q, cost, request_idx, out, req, t0, now);
}

void router_handle(struct engine *e, struct endpoint *ep, double cost, int64_t request_idx,
                   double replay_timeout, struct evhttp_request *req, double t0)
{
    struct sbuf out = SBUF_INIT;
    int status = router_route(e, ep, cost, request_idx, replay_timeout, &out, req, t0);
    if (status != 0) { /* 0: held, or the signing threads' callback answers */
        http_reply_json(req, status, out.data ? out.data : "", out.len);
        metrics_observe(e->h_route, clock_mono() - t0);
    }
    sbuf_free(&out);
}

double router_queue_age(const struct endpoint *ep, double now)
{
    return ep->rq && ep->rq->head ? now - ep->rq->head->first_mono : 0;
}
