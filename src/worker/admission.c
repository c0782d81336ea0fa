/* The request path up to the model call: route, envelope (422), workload,
 * readiness gate (503), grant (401), session (410), 429 estimate, and the
 * serial FIFO per handler.  Order follows PyWorker G3 (docs/protocol.md §3.10)
 * except that a non-ready worker answers 503 instead of forwarding (B29), and
 * the session check runs after the signature (B15).
 *
 * Client disconnects: an EV_CLOSED watcher on the client socket runs from
 * admission until the first response byte (evhttp itself stops reading after
 * the body, docs/design.md pitfall 3); after that the connection close callback takes
 * over.  Either way the upstream request is cancelled and the workload is
 * counted as cancelled (B3/B4: slots and counters are released exactly once,
 * in wreq_end). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/keyvalq_struct.h>

#include "clock.h"
#include "httputil.h"
#include "log.h"
#include "worker.h"

void reply_json(struct evhttp_request *req, int status, const char *ctype, const char *body,
                size_t len)
{
    http_reply(req, status, ctype ? ctype : "application/json", body, len);
}

void reply_empty(struct evhttp_request *req, int status)
{
    http_reply(req, status, "application/octet-stream", NULL, 0);
}

void reply_text(struct evhttp_request *req, int status, const char *text)
{
    http_reply(req, status, "text/plain; charset=utf-8", text, strlen(text));
}

static void reply_503(struct worker *w, struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Retry-After", w->phase == PH_DRAINING ? "30" : "5");
    char body[160];
    int n = snprintf(body, sizeof body, "{\"error\": \"worker not ready\", \"phase\": \"%s\"}",
                     phase_name(w->phase));
    reply_json(req, 503, NULL, body, (size_t)n);
}

/* Stop watching the client: called before replying or when it left. */
static struct evhttp_request *client_detach(struct wreq *wr)
{
    if (wr->close_ev) {
        event_free(wr->close_ev);
        wr->close_ev = NULL;
    }
    if (wr->evcon) evhttp_connection_set_closecb(wr->evcon, NULL, NULL);
    struct evhttp_request *req = wr->req;
    wr->req = NULL;
    wr->evcon = NULL;
    return req;
}

static void admission_next(struct handler *h);

void wreq_end(struct wreq *wr, enum outcome out)
{
    struct worker *w = wr->w;
    struct handler *h = wr->h;
    if (wr->up) {
        upstream_cancel(wr->up);
        wr->up = NULL;
    }
    if (wr->req || wr->close_ev) client_detach(wr);
    wr->t_done = clock_wall();
    TAILQ_REMOVE(&w->working, wr, wlink);
    w->nworking--;
    w->working_load -= wr->workload;
    if (w->nworking == 0 || w->working_load < 0)
        w->working_load = w->nworking ? w->working_load : 0;
    if (wr->queued) {
        TAILQ_REMOVE(&h->queue, wr, qlink);
        h->nqueued--;
    } else if (!h->parallel) {
        h->running--;
    }
    switch (out) {
    case OUT_SUCCESS:
        w->cur.served += wr->workload;
        w->served_total += wr->workload;
        /* G1 cur_perf: the last request's workload / response time (pyworker lib/metrics.py) */
        if (wr->t_done > wr->t_start && wr->t_start > 0)
            w->last_req_perf = wr->workload / (wr->t_done - wr->t_start);
        break;
    case OUT_ERROR:
        w->cur.errored += wr->workload;
        break;
    case OUT_CANCELLED:
        w->cur.cancelled += wr->workload;
        break;
    case OUT_REJECTED:
        w->cur.rejected += wr->workload;
        break;
    }
    w->n_out[out]++;
    *w->m_req_total[out] += 1;
    benchmark_observe(w, out == OUT_SUCCESS, wr->workload, clock_mono() - wr->m_enter);
    if (w->m_latency) metrics_observe(w->m_latency, clock_mono() - wr->m_enter);
    w->update_pending = true;
    report_request_done(w, wr, out);
    log_debug("request_end", "id=%llu outcome=%d workload=%g", (unsigned long long)wr->id, (int)out,
              wr->workload);
    if (wr->in_write) {
        wr->zombie = true; /* proxy.c frees it when the write call returns */
    } else {
        free(wr->payload_owned);
        free(wr);
    }
    if (!h->parallel) admission_next(h);
    worker_check_drained(w);
}

static void admission_next(struct handler *h)
{
    if (h->advancing) return; /* proxy_start may end a request synchronously; loop here instead */
    h->advancing = true;
    while (!h->parallel && h->running == 0 && h->nqueued > 0) {
        struct wreq *wr = TAILQ_FIRST(&h->queue);
        TAILQ_REMOVE(&h->queue, wr, qlink);
        h->nqueued--;
        wr->queued = false;
        h->running++;
        proxy_start(wr);
    }
    h->advancing = false;
}

void wreq_start(struct wreq *wr)
{
    struct handler *h = wr->h;
    if (h->parallel) {
        proxy_start(wr);
        return;
    }
    wr->queued = true;
    TAILQ_INSERT_TAIL(&h->queue, wr, qlink);
    h->nqueued++;
    admission_next(h);
}

/* Client left before the first response byte (EV_CLOSED on its socket). */
static void on_client_closed(evutil_socket_t fd, short what, void *arg)
{
    struct wreq *wr = arg;
    struct evhttp_connection *evcon = wr->evcon;
    log_debug("client_gone", "id=%llu phase=early", (unsigned long long)wr->id);
    proxy_cancel(wr);
    client_detach(wr);
    wreq_end(wr, OUT_CANCELLED);
    if (evcon) evhttp_connection_free(evcon); /* frees the pending request too */
}

/* Connection freed by evhttp (client left mid-stream, write error, timeout). */
static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    struct wreq *wr = arg;
    log_debug("client_gone", "id=%llu phase=%s", (unsigned long long)wr->id,
              wr->streaming ? "streaming" : "waiting");
    struct evhttp_request *req = wr->req;
    proxy_cancel(wr);
    client_detach(wr);
    /* evhttp detached the unfinished request from the dying connection: it is
     * ours to free (docs/design.md pitfall 5). */
    if (req && evhttp_request_get_connection(req) == NULL) evhttp_send_reply_end(req);
    wreq_end(wr, OUT_CANCELLED);
}

void wreq_abort(struct wreq *wr, int status, const char *body)
{
    proxy_cancel(wr);
    struct evhttp_connection *evcon = wr->evcon;
    bool streaming = wr->streaming;
    struct evhttp_request *req = client_detach(wr);
    if (req) {
        if (streaming)
            evhttp_connection_free(evcon);
        else
            reply_json(req, status, NULL, body, strlen(body));
    }
    wreq_end(wr, OUT_ERROR);
}

/* Abort whatever is left when the drain deadline passes. */
void wreq_abort_all(struct worker *w)
{
    struct wreq *wr;
    while ((wr = TAILQ_FIRST(&w->working)) != NULL)
        wreq_abort(wr, 503, "{\"error\": \"worker shutting down\"}");
}

double wire_cap(struct worker *w, double x, double cap, const char *what)
{
    if (isfinite(x) && x >= 0 && x <= cap) return x;
    double y = x > cap ? cap : 0; /* +Inf and big -> cap; NaN, -Inf, negative -> 0 */
    *w->m_workload_capped += 1;
    if (!w->cap_logged) { /* once: a flood of hostile numbers must not flood the log */
        w->cap_logged = true;
        log_warn("number_capped", "what=%s value=%g cap=%g to=%g (logged once)", what, x, cap, y);
    } else {
        log_debug("number_capped", "what=%s value=%g cap=%g to=%g", what, x, cap, y);
    }
    return y;
}

static void count_reject(struct worker *w, double workload, const struct pyj_value *auth_ok,
                         double t_enter)
{
    w->cur.rejected += workload;
    w->n_out[OUT_REJECTED]++;
    *w->m_req_total[OUT_REJECTED] += 1;
    w->update_pending = true;
    if (auth_ok) {
        /* Only requests whose grant verified are reported back (B18). */
        int64_t idx;
        if (pyj_int64(pyj_get(auth_ok, "request_idx"), &idx)) {
            struct wreq tmp;
            memset(&tmp, 0, sizeof tmp);
            tmp.has_idx = true;
            tmp.request_idx = idx;
            tmp.t_enter = t_enter;
            tmp.t_done = clock_wall();
            report_request_done(w, &tmp, OUT_REJECTED);
        }
    }
}

void request_cb(struct evhttp_request *req, void *arg)
{
    struct worker *w = arg;
    listener_request_begin(w, req);
    char path[512];
    if (!http_request_path(req, path, sizeof path)) {
        reply_text(req, 404, "404: Not Found");
        return;
    }
    if (status_handle(w, req, path)) return;
    if (session_route(w, req, path)) return;
    bool known;
    struct handler *h = handlers_find(w, path, &known);
    if (!h) {
        reply_text(req, 404, "404: Not Found");
        return;
    }
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
        reply_text(req, 405, "405: Method Not Allowed");
        return;
    }
    double t_enter = clock_wall();
    size_t len;
    const char *body = http_request_body(req, &len);
    struct envelope env;
    if (envelope_parse(w, h, req, body, len, &env) != 0) {
        *w->m_status_422 += 1;
        return;
    }
    /* capped before it can enter any counter (rej_load, cur_load, ...): issue 8 */
    double wl = wire_cap(w, handler_workload(h, env.payload), w->cfg.max_workload, "workload");
    if (w->phase != PH_READY && lifecycle_awaiting_key(w)) {
        /* No key yet, so no grant can verify: 401 as for a bad grant (the
         * engine still sees max_perf 0, i.e. not ready). */
        log_debug("auth_rejected", "why=\"no public key\"");
        count_reject(w, wl, NULL, t_enter);
        *w->m_status_401 += 1;
        reply_empty(req, 401);
        envelope_free(&env);
        return;
    }
    if (w->phase != PH_READY) {
        count_reject(w, wl, NULL, t_enter);
        *w->m_status_503 += 1;
        reply_503(w, req);
        envelope_free(&env);
        return;
    }
    const char *why = "";
    int arc = auth_check(w, env.auth, &why);
    if (arc != 0) {
        log_debug("auth_rejected", "why=\"%s\"", why);
        count_reject(w, wl, NULL, t_enter);
        if (arc == AUTH_INVALID) {
            *w->m_status_401 += 1;
            reply_empty(req, 401);
        } else {
            auth_reply_wrong(w, req, arc, env.auth); /* a grant for another worker */
        }
        envelope_free(&env);
        return;
    }
    if (env.deferred) { /* large body whose workload needs the whole payload: now, after auth */
        if (envelope_parse_deferred(req, &env) != 0) {
            *w->m_status_422 += 1;
            envelope_free(&env);
            return;
        }
        wl = wire_cap(w, handler_workload(h, env.payload), w->cfg.max_workload, "workload");
    }
    struct wsession *sess = NULL;
    if (env.session && env.session->type != PYJ_NULL) {
        /* Looked up only after the grant verified (B15): an unauthenticated
         * caller gets the same 401 for known and unknown ids, and cannot
         * extend a session.  Extended only once admitted (below). */
        sess = session_find(w, env.session);
        if (!sess) {
            const char *b = "{\"error\": \"invalid session\"}";
            reply_json(req, 410, "application/json; charset=utf-8", b, strlen(b));
            envelope_free(&env);
            return;
        }
    }
    /* 429: PyWorker's admission estimate (queued + running workload / max_perf),
     * skipped while max_perf is unknown (B28). */
    bool over = false;
    if (h->max_queue_time >= 0 && w->max_perf > 0 &&
        w->working_load / w->max_perf > h->max_queue_time)
        over = true;
    if (!h->parallel && h->nqueued >= w->cfg.queue_limit) over = true;
    if (over) {
        count_reject(w, wl, env.auth, t_enter);
        *w->m_status_429 += 1;
        reply_empty(req, 429);
        envelope_free(&env);
        return;
    }

    struct wreq *wr = calloc(1, sizeof *wr);
    if (!wr) abort();
    wr->id = ++w->next_id;
    wr->w = w;
    wr->h = h;
    wr->req = req;
    wr->evcon = evhttp_request_get_connection(req);
    wr->workload = wl;
    wr->t_enter = t_enter;
    wr->m_enter = clock_mono();
    /* A session request is not reported on its own: the session is the one
     * request the engine knows (its request_idx goes out when it closes). */
    wr->has_idx = !sess && w->cfg.report_fmt == REPORT_V3 &&
                  pyj_int64(pyj_get(env.auth, "request_idx"), &wr->request_idx);
    if (sess) session_attach(w, sess, wr);
    snprintf(wr->path, sizeof wr->path, "%.255s", h->upstream[0] ? h->upstream : path);
    if (env.payload_raw) {
        wr->payload = env.payload_raw;
        wr->payload_len = env.payload_len;
    } else {
        struct sbuf b = SBUF_INIT;
        struct pyj_dump_opts o = {.indent = -1};
        pyj_dump(env.payload, &o, &b);
        wr->payload_owned = sbuf_steal(&b, &wr->payload_len);
        wr->payload = wr->payload_owned;
    }
    envelope_free(&env);

    TAILQ_INSERT_TAIL(&w->working, wr, wlink);
    w->nworking++;
    w->working_load += wl;
    w->cur.received += wl;
    w->n_accepted++;
    w->update_pending = true;

    /* disconnect watchers */
    if (wr->evcon) {
        evhttp_connection_set_closecb(wr->evcon, on_conn_close, wr);
        struct bufferevent *bev = evhttp_connection_get_bufferevent(wr->evcon);
        evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
        if (fd >= 0) {
            wr->close_ev = event_new(w->base, fd, EV_CLOSED, on_client_closed, wr);
            if (wr->close_ev) event_add(wr->close_ev, NULL);
        }
    }
    wreq_start(wr);
}

/* Used by proxy.c: the first response byte is about to go out. */
struct evhttp_request *wreq_client_begin_reply(struct wreq *wr)
{
    if (wr->close_ev) {
        event_free(wr->close_ev);
        wr->close_ev = NULL;
    }
    return wr->req;
}

struct evhttp_request *wreq_client_finish(struct wreq *wr)
{
    return client_detach(wr);
}
