/* Listening socket, optional TLS (USE_SSL), and the connection guard.
 *
 * TCP_NODELAY is set on the listening socket; Linux copies it to every
 * accepted socket (c-stack.md pitfall 2) at no per-request cost.
 *
 * Connection guard (pitfall 7, slowloris): evhttp re-arms its read timeout on
 * every byte, so a client trickling one header byte a second is never timed
 * out.  We create each connection's bufferevent ourselves (evhttp_set_bevcb),
 * keep a reference to it, and watch its input buffer: the first byte of a
 * request starts a clock, handing the request to us stops it.  A sweep every
 * 0.5 s shuts down connections whose request head + body took longer than
 * SGPU_REQUEST_DEADLINE.  Idle keep-alive connections are left to evhttp's
 * idle timeout.  The same sweep notices connections evhttp has freed (their
 * bufferevent callbacks are cleared) and drops our reference, which closes
 * the socket.
 *
 * File descriptors: the soft RLIMIT_NOFILE is raised to the hard limit at
 * start-up.  At SGPU_MAX_CONNECTIONS open connections the listener stops
 * accepting until the count drops below 90 % of it; if accept() still fails
 * with EMFILE/ENFILE, accepting pauses for 0.2 s.  Without this, libevent
 * retries the failing accept() in a busy loop (100 % CPU, a warning per try). */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "httputil.h"
#include "log.h"
#include "worker.h"

struct tconn {
    struct bufferevent *bev;
    struct evbuffer_cb_entry *cbe;
    TAILQ_ENTRY(tconn) link;
    double t_first; /* monotonic time of the first byte of the pending request; 0 = none */
    bool busy;      /* request handed to us, reply not finished */
    bool killed;
};
TAILQ_HEAD(tconn_list, tconn);

struct listener {
    struct worker *w;
    SSL_CTX *ssl;
    struct tconn_list conns;
    int nconns;
    struct tconn **byfd;
    int nbyfd;
    struct event *sweep_ev;
    struct evconnlistener *lev;
    struct event *resume_ev;
    bool paused;
    int max_conns;
    uint64_t pauses;
    double last_warn;
};

static void pause_accept(struct listener *l, const char *why)
{
    if (l->paused || !l->lev) return;
    evconnlistener_disable(l->lev);
    l->paused = true;
    l->pauses++;
    double now = time_mono();
    if (now - l->last_warn > 10.0) { /* at most one line per 10 s */
        l->last_warn = now;
        log_warn("accept_paused", "why=%s connections=%d pauses=%llu", why, l->nconns,
                 (unsigned long long)l->pauses);
    }
}

static void resume_accept(struct listener *l)
{
    if (!l->paused || !l->lev) return;
    evconnlistener_enable(l->lev);
    l->paused = false;
    log_debug("accept_resumed", "connections=%d", l->nconns);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct listener *l = arg;
    if (l->nconns < l->max_conns) resume_accept(l);
}

/* evconnlistener hands its error callback evhttp's user data (the evhttp),
 * so the one listener of the process is found through this pointer. */
static struct listener *g_listener;

static void on_accept_error(struct evconnlistener *lev, void *arg)
{
    struct listener *l = g_listener;
    if (!l) return;
    int err = EVUTIL_SOCKET_ERROR();
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        pause_accept(l, "fd_limit");
        struct timeval tv = {0, 200000};
        evtimer_add(l->resume_ev, &tv);
        return;
    }
    log_warn("accept_error", "err=\"%s\"", evutil_socket_error_to_string(err));
}

static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct tconn *t = arg;
    if (info->n_added && !t->busy && t->t_first == 0) t->t_first = time_mono();
}

static struct bufferevent *bevcb(struct event_base *base, void *arg)
{
    struct listener *l = arg;
    struct bufferevent *bev;
    if (l->ssl) {
        SSL *ssl = SSL_new(l->ssl);
        if (!ssl) return NULL;
        bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE);
        if (!bev) SSL_free(ssl);
    } else {
        bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!bev) return NULL;
    struct tconn *t = calloc(1, sizeof *t);
    if (!t) return bev; /* unguarded, still served */
    t->bev = bev;
    bufferevent_incref(bev);
    t->cbe = evbuffer_add_cb(bufferevent_get_input(bev), on_input, t);
    TAILQ_INSERT_TAIL(&l->conns, t, link);
    l->nconns++;
    if (l->nconns >= l->max_conns) pause_accept(l, "max_connections");
    return bev;
}

static void tconn_drop(struct listener *l, struct tconn *t)
{
    TAILQ_REMOVE(&l->conns, t, link);
    l->nconns--;
    for (int i = 0; i < l->nbyfd; i++)
        if (l->byfd[i] == t) l->byfd[i] = NULL;
    if (t->cbe) evbuffer_remove_cb_entry(bufferevent_get_input(t->bev), t->cbe);
    bufferevent_decref(t->bev); /* last reference: closes the socket */
    free(t);
}

static void sweep(evutil_socket_t fd_unused, short what, void *arg)
{
    struct listener *l = arg;
    double now = time_mono();
    double deadline = l->w->cfg.request_deadline;
    struct tconn *t, *next;
    for (t = TAILQ_FIRST(&l->conns); t; t = next) {
        next = TAILQ_NEXT(t, link);
        bufferevent_data_cb r, wcb;
        bufferevent_event_cb e;
        void *cbarg;
        bufferevent_getcb(t->bev, &r, &wcb, &e, &cbarg);
        if (!r && !wcb && !e) { /* evhttp freed this connection */
            tconn_drop(l, t);
            continue;
        }
        if (!t->busy && !t->killed && t->t_first > 0 && now - t->t_first > deadline) {
            evutil_socket_t fd = bufferevent_getfd(t->bev);
            log_warn("slow_request_closed", "fd=%d seconds=%.1f", (int)fd, now - t->t_first);
            t->killed = true;
            if (fd >= 0) shutdown(fd, SHUT_RDWR); /* evhttp sees EOF and frees it */
        }
    }
    if (l->paused && l->nconns < l->max_conns - l->max_conns / 10 &&
        !evtimer_pending(l->resume_ev, NULL))
        resume_accept(l);
}

static struct tconn *find(struct listener *l, struct bufferevent *bev)
{
    evutil_socket_t fd = bufferevent_getfd(bev);
    if (fd >= 0 && fd < l->nbyfd && l->byfd[fd] && l->byfd[fd]->bev == bev) return l->byfd[fd];
    struct tconn *t;
    TAILQ_FOREACH_REVERSE(t, &l->conns, tconn_list, link)
    {
        // cppcheck-suppress uninitvar ; TAILQ_FOREACH is not understood
        if (t->bev != bev) continue;
        if (fd >= 0 && fd < 65536) {
            if (fd >= l->nbyfd) {
                int n = l->nbyfd ? l->nbyfd : 64;
                while (n <= fd)
                    n *= 2;
                struct tconn **nb = realloc(l->byfd, (size_t)n * sizeof *nb);
                if (!nb) return t;
                memset(nb + l->nbyfd, 0, (size_t)(n - l->nbyfd) * sizeof *nb);
                l->byfd = nb;
                l->nbyfd = n;
            }
            l->byfd[fd] = t;
        }
        return t;
    }
    return NULL;
}

static void on_complete(struct evhttp_request *req, void *arg)
{
    struct tconn *t = arg;
    t->busy = false;
    /* pipelined bytes of the next request may already be buffered */
    t->t_first = evbuffer_get_length(bufferevent_get_input(t->bev)) ? time_mono() : 0;
}

void listener_request_begin(struct worker *w, struct evhttp_request *req)
{
    struct listener *l = w->lst;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    if (!l || !bev) return;
    struct tconn *t = find(l, bev);
    if (!t) return;
    t->busy = true;
    t->t_first = 0;
    evhttp_request_set_on_complete_cb(req, on_complete, t);
}

static SSL_CTX *tls_server_ctx(const struct wconfig *c)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) return NULL;
    if (SSL_CTX_use_certificate_chain_file(ctx, c->tls_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, c->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        unsigned long e = ERR_get_error();
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        log_error("tls_setup_failed", "cert=%s key=%s err=\"%s\"", c->tls_cert, c->tls_key, buf);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

int listener_init(struct worker *w)
{
    struct listener *l = calloc(1, sizeof *l);
    if (!l) return -1;
    l->w = w;
    TAILQ_INIT(&l->conns);
    w->lst = l;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    l->max_conns = w->cfg.max_connections;
    /* each client may hold an upstream connection too: half the fds, minus a reserve */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        2 * (rlim_t)l->max_conns + 64 > rl.rlim_cur)
        l->max_conns = rl.rlim_cur > 128 ? (int)(rl.rlim_cur - 64) / 2 : 32;
    if (w->cfg.use_ssl) {
        l->ssl = tls_server_ctx(&w->cfg);
        if (!l->ssl) return -1;
    }
    evhttp_set_bevcb(w->http, bevcb, l);
    struct evhttp_bound_socket *bs =
        evhttp_bind_socket_with_handle(w->http, w->cfg.host, (ev_uint16_t)w->cfg.port);
    if (!bs) {
        log_error("listen_failed", "host=%s port=%d err=\"%s\"", w->cfg.host, w->cfg.port,
                  strerror(errno ? errno : EADDRINUSE));
        return -1;
    }
    evutil_socket_t fd = evhttp_bound_socket_get_fd(bs);
    http_set_nodelay((int)fd);
    l->lev = evhttp_bound_socket_get_listener(bs);
    l->resume_ev = evtimer_new(w->base, on_resume, l);
    if (!l->resume_ev) return -1;
    g_listener = l;
    if (l->lev) evconnlistener_set_error_cb(l->lev, on_accept_error);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        int port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                            : ntohs(((struct sockaddr_in *)&ss)->sin_port);
        w->cfg.port = port;
    }
    l->sweep_ev = event_new(w->base, -1, EV_PERSIST, sweep, l);
    struct timeval tv = {0, 500000};
    if (l->sweep_ev) evtimer_add(l->sweep_ev, &tv);
    return 0;
}

void listener_free(struct worker *w)
{
    struct listener *l = w->lst;
    if (!l) return;
    if (l->sweep_ev) event_free(l->sweep_ev);
    if (l->resume_ev) event_free(l->resume_ev);
    g_listener = NULL;
    struct tconn *t;
    while ((t = TAILQ_FIRST(&l->conns)) != NULL)
        tconn_drop(l, t);
    free(l->byfd);
    if (l->ssl) SSL_CTX_free(l->ssl);
    free(l);
    w->lst = NULL;
}
