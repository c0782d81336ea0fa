/* request: the life of one client request, in one place.
 *
 *   request_cb          route: status routes, session routes, handler lookup (404/405)
 *     admission_check   envelope, workload, readiness, grant, session, 429 (admission.h)
 *     request_new       the `struct wreq`: counted as working, client disconnect watched
 *     request_run       parallel handler: started now; serial: its FIFO, started by the
 *                       posted step below when the handler is free
 *     proxy_start       forwarded to the model; relayed back (proxy.h)
 *   request_finish      every way a request ends: counters, FIFO slot, reports, metrics
 *                       (exactly once); the wreq is freed by the posted step
 *
 * The posted step (an event made active, run by the loop after the current callback) frees
 * finished requests and starts queued ones.  So no call made while ending a request can
 * re-enter proxy_start, and a wreq stays valid until the callback that ended it returns (a
 * TLS write may end it from inside evhttp, docs/design.md pitfall 5). */
#ifndef SGPU_WORKER_REQUEST_H
#define SGPU_WORKER_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/http.h>

#include "handlers.h"
#include "upstream.h"
#include "worker.h"

enum wreq_state {
    WR_NEW,     /* admitted, not run yet */
    WR_QUEUED,  /* in its handler's FIFO (serial handlers) */
    WR_RUNNING, /* forwarded to the model */
    WR_DONE,    /* finished: counted, detached; freed by the posted step */
};

struct wreq {
    uint64_t id;
    struct worker *w;
    struct handler *h;
    enum wreq_state state;
    struct evhttp_request *req; /* client request; NULL once detached */
    struct evhttp_connection *evcon;
    struct event *close_ev; /* EV_CLOSED watcher until the first response byte */
    struct upstream_req *up;
    char path[256];      /* upstream path */
    const char *payload; /* bytes forwarded (inside the client body, or payload_owned) */
    size_t payload_len;
    char *payload_owned; /* when the payload had to be re-serialised */
    double workload;
    bool has_idx;
    int64_t request_idx;
    double t_enter, t_start, t_done; /* wall clock */
    double m_enter;                  /* monotonic */
    bool streaming, paused;
    char ctype[128];          /* upstream Content-Type */
    struct wsession *session; /* request sent with a live session_id, else NULL */
    TAILQ_ENTRY(wreq) wlink;  /* worker's working list; then the finished list */
    TAILQ_ENTRY(wreq) qlink;  /* handler queue */
};

int request_init(struct worker *w);  /* sets w->rq */
void request_free(struct worker *w); /* after request_abort_all: frees finished requests */
/* evhttp callback of the main listener: every client request starts here. */
void request_cb(struct evhttp_request *req, void *arg);
/* The one end of every request (the client has had its answer or is gone). */
void request_finish(struct wreq *wr, enum outcome out);
/* End one request early (its session closed, drain timeout): status/body for a client that has
 * had no reply yet; a started stream is cut.  Counted as an error. */
void request_abort(struct wreq *wr, int status, const char *body);
void request_abort_all(struct worker *w); /* drain timeout / exit: cancel what is left */
/* For proxy.c: the first response byte is about to go out (stops the EV_CLOSED watcher);
 * returns the client request, NULL when it is gone. */
struct evhttp_request *request_client_begin_reply(struct wreq *wr);
/* Stops watching the client and hands its request over for the last reply (NULL if gone). */
struct evhttp_request *request_client_detach(struct wreq *wr);

#endif
