/* loopback: real HTTP peers on 127.0.0.1 inside a unit test process, all on the test's one
 * event base, for the client and server helpers of src/common (httputil, upstream, hclient).
 *
 *   lb_http    a real evhttp server (http_server_new) with a few fixed routes:
 *                /echo       200 text/plain "<METHOD>
 * <uri>\n<Authorization>\n<Content-Type>\n<body>"
 *                            ("-" for an absent header)
 *                /bytes?n=N  200 with N bytes of 'x' (N <= 16 MiB)
 *                /chunks?n=K 200, chunked: K chunks "chunk <i>\n" (K <= 1000)
 *                /status?s=S status S, body "status S"
 *              and counts requests and distinct client connections (by peer port).
 *   lb_raw     a TCP listener that, on every connection, waits for the end of a request head
 *              ("\r\n\r\n"), writes one canned answer and then closes (or keeps) the socket: for
 *              answers no real server would send (a head too large, a body cut short) and
 *              for a server that never answers (empty answer, kept open).
 *   lb_refused_port()  a loopback port with nothing listening (connections are refused).
 *   lb_run()   runs the loop until a test callback calls lb_done() or a generous safety
 *              deadline passes (returns -1 then: the test fails rather than hanging).
 *   lb_spin()  a few non-blocking loop turns (deferred frees before event_base_free).
 *   lb_init()  once in main(): SIGPIPE ignored, as in the programs.
 *
 * Header-only (the Makefile links one .c per unit test): every function is static and marked
 * unused so a test may use any subset. */
#ifndef SGPU_TESTS_LOOPBACK_H
#define SGPU_TESTS_LOOPBACK_H

#include <arpa/inet.h>
#include <signal.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "httputil.h"
#include "sbuf.h"

#define LB_UNUSED __attribute__((unused))

/* Safety net only (a loaded machine): no test asserts anything about elapsed time. */
#define LB_DEADLINE_S 60

struct lb_loop {
    struct event_base *base;
    bool timed_out;
};

static LB_UNUSED void lb_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct lb_loop *l = arg;
    l->timed_out = true;
    event_base_loopbreak(l->base);
}

/* Runs base until lb_done(base); 0, or -1 when the safety deadline passed first. */
static LB_UNUSED int lb_run(struct event_base *base)
{
    struct lb_loop l = {base, false};
    struct event *t = evtimer_new(base, lb_deadline_cb, &l);
    struct timeval tv = {LB_DEADLINE_S, 0};
    if (!t || evtimer_add(t, &tv) != 0) return -1;
    event_base_dispatch(base);
    event_free(t);
    return l.timed_out ? -1 : 0;
}

static LB_UNUSED void lb_done(struct event_base *base)
{
    event_base_loopbreak(base);
}

/* Call first in main(): a peer closing while we write must be an error return, not SIGPIPE
 * (the programs do the same). */
static LB_UNUSED void lb_init(void)
{
    signal(SIGPIPE, SIG_IGN);
}

/* A few non-blocking loop turns: lets deferred work run (frees scheduled with
 * event_base_once by the code under test, callbacks that must NOT arrive). */
static LB_UNUSED void lb_spin(struct event_base *base)
{
    for (int i = 0; i < 20; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

/* ---- lb_http: a real evhttp server ---- */

struct lb_http {
    struct evhttp *http;
    int port;
    int nreq;
    int npeers;               /* distinct client connections seen (by peer port) */
    unsigned short peers[64]; /* first 64 of them */
};

static LB_UNUSED void lb_http_note_peer(struct lb_http *s, struct evhttp_request *req)
{
    char *addr = NULL;
    ev_uint16_t port = 0;
    evhttp_connection_get_peer(evhttp_request_get_connection(req), &addr, &port);
    for (int i = 0; i < s->npeers && i < 64; i++)
        if (s->peers[i] == port) return;
    if (s->npeers < 64) s->peers[s->npeers] = port;
    s->npeers++;
}

static LB_UNUSED long lb_query_long(struct evhttp_request *req, const char *key, long dflt,
                                    long max)
{
    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
    const char *q = u ? evhttp_uri_get_query(u) : NULL;
    struct evkeyvalq kv;
    TAILQ_INIT(&kv);
    long v = dflt;
    if (q && evhttp_parse_query_str(q, &kv) == 0) {
        const char *s = evhttp_find_header(&kv, key);
        if (s) v = strtol(s, NULL, 10);
    }
    evhttp_clear_headers(&kv);
    return v < 0 ? 0 : v > max ? max : v;
}

static LB_UNUSED void lb_http_cb(struct evhttp_request *req, void *arg)
{
    struct lb_http *s = arg;
    s->nreq++;
    lb_http_note_peer(s, req);
    char path[256];
    if (!http_request_path(req, path, sizeof path)) {
        http_reply_error(req, 414, "path too long");
        return;
    }
    if (strcmp(path, "/echo") == 0) {
        static const char *const methods[] = {"GET", "POST", "HEAD", "PUT", "DELETE"};
        enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
        const char *m = cmd == EVHTTP_REQ_GET      ? methods[0]
                        : cmd == EVHTTP_REQ_POST   ? methods[1]
                        : cmd == EVHTTP_REQ_HEAD   ? methods[2]
                        : cmd == EVHTTP_REQ_PUT    ? methods[3]
                        : cmd == EVHTTP_REQ_DELETE ? methods[4]
                                                   : "OTHER";
        struct evkeyvalq *in = evhttp_request_get_input_headers(req);
        const char *auth = evhttp_find_header(in, "Authorization");
        const char *ct = evhttp_find_header(in, "Content-Type");
        size_t blen;
        const char *body = http_request_body(req, &blen);
        struct sbuf b = SBUF_INIT;
        sbuf_printf(&b, "%s %s\n%s\n%s\n", m, evhttp_request_get_uri(req), auth ? auth : "-",
                    ct ? ct : "-");
        sbuf_append(&b, body, blen);
        http_reply(req, 200, "text/plain", b.data, b.len);
        sbuf_free(&b);
    } else if (strcmp(path, "/bytes") == 0) {
        size_t n = (size_t)lb_query_long(req, "n", 0, 16L << 20);
        char *p = malloc(n ? n : 1);
        if (!p) abort();
        memset(p, 'x', n);
        http_reply(req, 200, "application/octet-stream", p, n);
        free(p);
    } else if (strcmp(path, "/chunks") == 0) {
        long k = lb_query_long(req, "n", 3, 1000);
        evhttp_send_reply_start(req, 200, "OK");
        for (long i = 0; i < k; i++) {
            struct evbuffer *c = evbuffer_new();
            if (!c) abort();
            evbuffer_add_printf(c, "chunk %ld\n", i);
            evhttp_send_reply_chunk(req, c);
            evbuffer_free(c);
        }
        evhttp_send_reply_end(req);
    } else if (strcmp(path, "/status") == 0) {
        int st = (int)lb_query_long(req, "s", 200, 599);
        char body[32];
        int n = snprintf(body, sizeof body, "status %d", st);
        http_reply(req, st, "text/plain", body, (size_t)n);
    } else {
        http_reply_error(req, 404, "no route %s", path);
    }
}

/* 0, or -1 when the server could not be started. */
static LB_UNUSED int lb_http_start(struct lb_http *s, struct event_base *base,
                                   const struct http_limits *lim)
{
    memset(s, 0, sizeof *s);
    s->http = http_server_new(base, lim);
    if (!s->http) return -1;
    evhttp_set_gencb(s->http, lb_http_cb, s);
    if (http_server_listen(s->http, "127.0.0.1", 0, &s->port) != 0) return -1;
    return 0;
}

static LB_UNUSED void lb_http_stop(struct lb_http *s)
{
    if (s->http) evhttp_free(s->http);
    s->http = NULL;
}

/* ---- lb_raw: one canned answer per connection ---- */

struct lb_raw_conn;

struct lb_raw {
    struct evconnlistener *lis;
    struct lb_raw_conn *conns; /* open connections, closed by lb_raw_stop */
    int port;
    const char *answer; /* bytes written once the request head is complete */
    size_t answer_len;
    bool keep_open; /* after the answer: keep the socket open (until the peer closes) */
    int accepted;
};

struct lb_raw_conn {
    struct lb_raw *srv;
    struct bufferevent *bev;
    struct lb_raw_conn *prev, *next;
    bool answered;
};

static LB_UNUSED void lb_raw_conn_free(struct bufferevent *bev, struct lb_raw_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        c->srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    bufferevent_free(bev);
    free(c);
}

static LB_UNUSED void lb_raw_write_cb(struct bufferevent *bev, void *arg)
{
    struct lb_raw_conn *c = arg;
    if (c->answered && !c->srv->keep_open) lb_raw_conn_free(bev, c); /* answer flushed: close */
}

static LB_UNUSED void lb_raw_read_cb(struct bufferevent *bev, void *arg)
{
    struct lb_raw_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (c->answered) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    struct evbuffer_ptr p = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (p.pos < 0) return;
    evbuffer_drain(in, evbuffer_get_length(in));
    c->answered = true;
    bufferevent_write(bev, c->srv->answer, c->srv->answer_len);
}

static LB_UNUSED void lb_raw_event_cb(struct bufferevent *bev, short what, void *arg)
{
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) lb_raw_conn_free(bev, arg);
}

static LB_UNUSED void lb_raw_accept_cb(struct evconnlistener *lis, evutil_socket_t fd,
                                       struct sockaddr *sa, int salen, void *arg)
{
    struct lb_raw *s = arg;
    s->accepted++;
    struct lb_raw_conn *c = calloc(1, sizeof *c);
    struct bufferevent *bev =
        bufferevent_socket_new(evconnlistener_get_base(lis), fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c || !bev) abort();
    c->srv = s;
    c->bev = bev;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    bufferevent_setcb(bev, lb_raw_read_cb, lb_raw_write_cb, lb_raw_event_cb, c);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static LB_UNUSED int lb_raw_start(struct lb_raw *s, struct event_base *base, const char *answer,
                                  size_t answer_len, bool keep_open)
{
    memset(s, 0, sizeof *s);
    s->answer = answer;
    s->answer_len = answer_len;
    s->keep_open = keep_open;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    s->lis = evconnlistener_new_bind(base, lb_raw_accept_cb, s,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
                                     (struct sockaddr *)&sin, sizeof sin);
    if (!s->lis) return -1;
    struct sockaddr_in got;
    socklen_t gl = sizeof got;
    if (getsockname(evconnlistener_get_fd(s->lis), (struct sockaddr *)&got, &gl) != 0) return -1;
    s->port = ntohs(got.sin_port);
    return 0;
}

/* Stops accepting and closes the connections still open. */
static LB_UNUSED void lb_raw_stop(struct lb_raw *s)
{
    if (s->lis) evconnlistener_free(s->lis);
    s->lis = NULL;
    while (s->conns)
        lb_raw_conn_free(s->conns->bev, s->conns);
}

/* A loopback port nothing listens on: bound, then closed without listen(). -1 on failure. */
static LB_UNUSED int lb_refused_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sin;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0 &&
        getsockname(fd, (struct sockaddr *)&sin, &sl) == 0)
        port = ntohs(sin.sin_port);
    close(fd);
    return port;
}

#endif
