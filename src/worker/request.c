/* The life of one client request (see request.h for the path through the files).
 *
 * Ownership: request_new allocates a wreq; request_finish is the only place a request
 * ends (counters, FIFO slot and reports are released exactly once, B3/B4) and it moves the
 * wreq to the finished list; the posted step (post_cb) is the only place a wreq is freed.
 *
 * Client disconnects: an EV_CLOSED watcher on the client socket runs from admission until the
 * first response byte (evhttp itself stops reading after the body, docs/design.md pitfall 3);
 * after that the connection close callback takes over.  Either way the upstream request is
 * cancelled and the workload is counted as cancelled. */
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent.h>

#include "admission.h"
#include "benchmark.h"
#include "clock.h"
#include "drain.h"
#include "httputil.h"
#include "listener.h"
#include "log.h"
#include "proxy.h"
#include "rc.h"
#include "reply.h"
#include "report.h"
#include "request.h"
#include "session.h"
#include "status.h"
#include "xalloc.h"

struct request_state {
    struct worker *w;
    uint64_t next_id;
    struct wreq_list finished; /* ended, freed by post_cb */
    struct event *post_ev;     /* the posted step: free finished, start queued */
};

/* ---- the posted step ---- */

static void post(struct worker *w)
{
    event_active(w->rq->post_ev, EV_TIMEOUT, 1);
}

static void free_finished(struct request_state *rs)
{
    struct wreq *wr;
    while ((wr = TAILQ_FIRST(&rs->finished)) != NULL) {
        TAILQ_REMOVE(&rs->finished, wr, wlink);
        free(wr->payload_owned);
        free(wr);
    }
}

static void start(struct wreq *wr)
{
    wr->state = WR_RUNNING;
    if (proxy_start(wr) == SGPU_OK) return;
    struct evhttp_request *req = request_client_detach(wr);
    if (req) {
        const char *b = "{\"error\": \"upstream connection failed\"}";
        reply_json(req, 502, NULL, b, strlen(b));
    }
    request_finish(wr, OUT_ERROR);
}

/* Serial handlers: start the head of each FIFO whose handler is free.  Runs only from the
 * loop, so a request that ends while starting (proxy_start failed) just posts again. */
static void start_queued(struct worker *w)
{
    for (size_t i = 0; i < w->nhandlers; i++) {
        struct handler *h = &w->handlers[i];
        while (!h->parallel && h->running == 0 && h->nqueued > 0) {
            struct wreq *wr = TAILQ_FIRST(&h->queue);
            TAILQ_REMOVE(&h->queue, wr, qlink);
            h->nqueued--;
            h->running++;
            start(wr);
        }
    }
}

static void post_cb(evutil_socket_t fd, short what, void *arg)
{
    struct request_state *rs = arg;
    free_finished(rs);
    start_queued(rs->w);
}

/* ---- the client side ---- */

/* Stop watching the client: called before replying or when it left. */
struct evhttp_request *request_client_detach(struct wreq *wr)
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

struct evhttp_request *request_client_begin_reply(struct wreq *wr)
{
    if (wr->close_ev) {
        event_free(wr->close_ev);
        wr->close_ev = NULL;
    }
    return wr->req;
}

/* Client left before the first response byte (EV_CLOSED on its socket). */
static void on_client_closed(evutil_socket_t fd, short what, void *arg)
{
    struct wreq *wr = arg;
    struct evhttp_connection *evcon = wr->evcon;
    log_debug("client_gone", "id=%llu phase=early", (unsigned long long)wr->id);
    request_client_detach(wr);
    request_finish(wr, OUT_CANCELLED);
    if (evcon) evhttp_connection_free(evcon); /* frees the pending request too */
}

/* Connection freed by evhttp (client left mid-stream, write error, timeout). */
static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    struct wreq *wr = arg;
    log_debug("client_gone", "id=%llu phase=%s", (unsigned long long)wr->id,
              wr->streaming ? "streaming" : "waiting");
    struct evhttp_request *req = request_client_detach(wr);
    /* evhttp detached the unfinished request from the dying connection: it is
     * ours to free (docs/design.md pitfall 5). */
    if (req && evhttp_request_get_connection(req) == NULL) evhttp_send_reply_end(req);
    request_finish(wr, OUT_CANCELLED);
}

static void watch_client(struct wreq *wr)
{
    if (!wr->evcon) return;
    evhttp_connection_set_closecb(wr->evcon, on_conn_close, wr);
    struct bufferevent *bev = evhttp_connection_get_bufferevent(wr->evcon);
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    if (fd >= 0) {
        wr->close_ev = xnonnull(event_new(wr->w->base, fd, EV_CLOSED, on_client_closed, wr));
        if (wr->close_ev) event_add(wr->close_ev, NULL);
    }
}

/* ---- create, run, finish ---- */

static struct wreq *request_new(struct worker *w, struct handler *h, struct evhttp_request *req,
                                const char *path, struct admit *a)
{
    struct wreq *wr = xcalloc(1, sizeof *wr);
    wr->id = ++w->rq->next_id;
    wr->w = w;
    wr->h = h;
    wr->req = req;
    wr->evcon = evhttp_request_get_connection(req);
    wr->workload = a->workload;
    wr->t_enter = a->t_enter;
    wr->m_enter = clock_mono();
    wr->state = WR_NEW;
    wr->has_idx = a->has_idx;
    wr->request_idx = a->request_idx;
    if (a->session) session_attach(w, a->session, wr);
    snprintf(wr->path, sizeof wr->path, "%.255s", h->upstream[0] ? h->upstream : path);
    wr->payload = a->payload;
    wr->payload_len = a->payload_len;
    wr->payload_owned = a->payload_owned;

    TAILQ_INSERT_TAIL(&w->working, wr, wlink);
    w->nworking++;
    w->working_load += wr->workload;
    w->cur.received += wr->workload;
    w->n_accepted++;
    w->update_pending = true;
    watch_client(wr);
    return wr;
}

/* Parallel handler: forwarded now.  Serial: into the FIFO, started by the posted step. */
static void request_run(struct wreq *wr)
{
    struct handler *h = wr->h;
    if (h->parallel) {
        start(wr);
        return;
    }
    wr->state = WR_QUEUED;
    TAILQ_INSERT_TAIL(&h->queue, wr, qlink);
    h->nqueued++;
    post(wr->w);
}

/* Workload counters by outcome (report.c sends and resets them) and the lifetime counts. */
static void count_outcome(struct worker *w, const struct wreq *wr, enum outcome out)
{
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
}

void request_finish(struct wreq *wr, enum outcome out)
{
    struct worker *w = wr->w;
    struct handler *h = wr->h;
    if (wr->state == WR_DONE) return;
    proxy_cancel(wr);
    if (wr->req || wr->close_ev) request_client_detach(wr);
    wr->t_done = clock_wall();
    TAILQ_REMOVE(&w->working, wr, wlink);
    w->nworking--;
    w->working_load -= wr->workload;
    if (w->nworking == 0 || w->working_load < 0)
        w->working_load = w->nworking ? w->working_load : 0;
    if (wr->state == WR_QUEUED) {
        TAILQ_REMOVE(&h->queue, wr, qlink);
        h->nqueued--;
    } else if (wr->state == WR_RUNNING && !h->parallel) {
        h->running--;
    }
    count_outcome(w, wr, out);
    double secs = clock_mono() - wr->m_enter;
    benchmark_observe(w, out == OUT_SUCCESS, wr->workload, secs);
    if (w->m_latency) metrics_observe(w->m_latency, secs);
    w->update_pending = true;
    if (wr->has_idx)
        report_request_done(w, wr->request_idx, out, wr->t_enter, wr->t_start, wr->t_done);
    log_debug("request_end", "id=%llu outcome=%d workload=%g", (unsigned long long)wr->id, (int)out,
              wr->workload);
    wr->state = WR_DONE;
    TAILQ_INSERT_TAIL(&w->rq->finished, wr, wlink);
    post(w);
    worker_check_drained(w);
}

void request_abort(struct wreq *wr, int status, const char *body)
{
    proxy_cancel(wr);
    struct evhttp_connection *evcon = wr->evcon;
    bool streaming = wr->streaming;
    struct evhttp_request *req = request_client_detach(wr);
    if (req) {
        if (streaming)
            evhttp_connection_free(evcon);
        else
            reply_json(req, status, NULL, body, strlen(body));
    }
    request_finish(wr, OUT_ERROR);
}

void request_abort_all(struct worker *w)
{
    struct wreq *wr;
    while ((wr = TAILQ_FIRST(&w->working)) != NULL)
        request_abort(wr, 503, "{\"error\": \"worker shutting down\"}");
}

/* ---- route ---- */

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
        reply_method_not_allowed(req, "POST");
        return;
    }
    struct admit a;
    if (admission_check(w, h, req, &a) != SGPU_OK) return;
    request_run(request_new(w, h, req, path, &a));
}

int request_init(struct worker *w)
{
    struct request_state *rs = xcalloc(1, sizeof *rs);
    rs->w = w;
    TAILQ_INIT(&rs->finished);
    rs->post_ev = xnonnull(event_new(w->base, -1, 0, post_cb, rs));
    w->rq = rs;
    return rs->post_ev ? SGPU_OK : SGPU_ERROR;
}

void request_free(struct worker *w)
{
    struct request_state *rs = w->rq;
    if (!rs) return;
    free_finished(rs);
    if (rs->post_ev) event_free(rs->post_ev);
    free(rs);
    w->rq = NULL;
}
