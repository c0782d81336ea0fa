/* /route/: pick the ready worker with the least estimated queue time, sign a grant for it, or
 * park the request in the endpoint's global queue (the client polls with its request_idx).
 *
 * Fairness: while requests wait, a new request is granted only if the non-full workers can
 * take more requests (of its cost, before reaching max_queue_time) than there are waiting
 * requests still being polled, i.e. capacity the waiters will need is reserved for them; a
 * polling waiting request is served whenever any worker is non-full. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "engine.h"
#include "httputil.h"
#include "log.h"
#include "pyjson.h"

#define QUEUE_MAX 100000

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

static void q_unlink(struct endpoint *ep, struct qreq *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        ep->qhead = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        ep->qtail = q->prev;
    idmap_del(ep->qmap, q->request_idx);
    ep->qlen--;
    free(q);
}

void router_queue_clear(struct endpoint *ep)
{
    while (ep->qhead)
        q_unlink(ep, ep->qhead);
    idmap_free(ep->qmap);
    ep->qmap = NULL;
}

/* A waiting request whose client has not polled for this long no longer holds back new
 * requests (the SDK polls at least every 5 s); it still expires only after its timeout. */
#define POLL_STALE_S 10.0

void router_expire(struct engine *e, struct endpoint *ep, double now)
{
    ep->q_active = 0;
    for (struct qreq *q = ep->qhead, *n; q; q = n) {
        n = q->next;
        if (now - q->last_poll_mono <= POLL_STALE_S) ep->q_active++;
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
            rng_s[0] = (uint64_t)(time_wall() * 1e6);
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

/* Grant bookkeeping shared by the inline and the threaded signing paths. */
static void granted(struct engine *e, struct endpoint *ep, struct worker *w, struct qreq *q,
                    double cost, double now)
{
    if (q) {
        if (e->h_qwait) metrics_observe(e->h_qwait, now - q->first_mono);
        q_unlink(ep, q);
    }
    w->granted_since_report += cost;
    w->last_grant_mono = now;
    w->grants_total++;
    w->dirty = true;
}

int router_route(struct engine *e, struct endpoint *ep, double cost, int64_t request_idx,
                 double replay_timeout, struct sbuf *out, struct evhttp_request *req, double t0)
{
    double now = time_mono();
    ep->last_request_mono = now;
    struct qreq *q = NULL;
    if (request_idx > 0 && ep->qmap) q = idmap_get(ep->qmap, request_idx);
    if (q) {
        q->last_poll_mono = now;
        if (replay_timeout > 0) q->timeout_s = replay_timeout;
    } else {
        if (request_idx <= 0) request_idx = next_idx(e);
        ep->arrivals += cost; /* demand is counted once per request */
    }

    struct worker *best = NULL;
    double best_qt = INFINITY;
    double slots = 0; /* requests the non-full workers can still take */
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
    /* q_active is refreshed every tick; requests queued since then count too */
    size_t waiting = ep->q_active < ep->qlen ? ep->q_active : ep->qlen;
    bool grant = best && (q || slots > (double)waiting);
    if (!grant) {
        ep->want_scale_up = true;
        if (!q) {
            if (ep->qlen >= QUEUE_MAX) {
                *e->c_routes_error += 1;
                sbuf_puts(out, "{\"success\": false, \"error\": \"queue_full\", \"msg\": "
                               "\"too many requests waiting for this endpoint\"}");
                return 429;
            }
            q = calloc(1, sizeof *q);
            if (!q) abort();
            q->request_idx = request_idx;
            q->cost = cost;
            q->first_mono = q->last_poll_mono = now;
            q->timeout_s = replay_timeout > 0 ? replay_timeout : 60.0;
            q->prev = ep->qtail;
            if (ep->qtail)
                ep->qtail->next = q;
            else
                ep->qhead = q;
            ep->qtail = q;
            ep->qlen++;
            ep->q_active++;
            if (!ep->qmap) ep->qmap = idmap_new();
            idmap_put(ep->qmap, request_idx, q);
        }
        *e->c_routes_queued += 1;
        answer_waiting(ep, request_idx, out);
        return 200;
    }

    int64_t reqnum = ++best->reqnum;
    if (req && e->signpool && ep->p.sig_scheme != SIG_URL) {
        struct sbuf head = SBUF_INIT, tail = SBUF_INIT, msg = SBUF_INIT;
        char num[40];
        pyj_format_float(cost, num, sizeof num);
        sbuf_puts(&head, "{\"endpoint\": ");
        pyj_write_string(&head, ep->name, strlen(ep->name));
        sbuf_puts(&head, ", \"url\": ");
        pyj_write_string(&head, best->url, strlen(best->url));
        sbuf_printf(&head, ", \"cost\": %s, \"reqnum\": %lld, \"signature\": \"", num,
                    (long long)reqnum);
        sbuf_printf(&tail, "\", \"request_idx\": %lld, \"__request_id\": \"",
                    (long long)request_idx);
        put_uuid4(&tail);
        sbuf_puts(&tail, "\"}");
        signer_message(ep->p.sig_scheme, cost, ep->name, reqnum, request_idx, best->url, &msg);
        signpool_submit(e, req, ep->p.sig_scheme, &msg, &head, &tail, t0);
        granted(e, ep, best, q, cost, now);
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
        sbuf_puts(out,
                  "{\"success\": false, \"error\": \"internal\", \"msg\": \"signing failed\"}");
        return 500;
    }
    sbuf_printf(out, "\", \"request_idx\": %lld, \"__request_id\": \"", (long long)request_idx);
    put_uuid4(out);
    sbuf_puts(out, "\"}");
    granted(e, ep, best, q, cost, now);
    *e->c_routes_granted += 1;
    return 200;
}
