/* The listening socket, in one function (gw_listen) with explicit limits:
 *   - evhttp limits: body (--max-body; over it evhttp answers its own 413), request head
 *     (16 KiB), read/write inactivity (--header-timeout while a request arrives);
 *   - TLS when --tls-cert/--tls-key are given;
 *   - connection cap (--max-connections): each connection's bufferevent is created here
 *     (evhttp_set_bevcb) and referenced; at the cap the listener stops accepting until the
 *     count falls below 90 % of it.  A sweep every 0.5 s notices connections evhttp has freed
 *     (their callbacks are cleared) and drops the reference, which closes the socket.
 * The soft RLIMIT_NOFILE is raised to the hard limit: every client may also hold an upstream
 * connection, so the cap is at most (fd limit - 64) / 2.  When the shared connection-guard
 * module lands in src/common this file is what it replaces. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/resource.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "gateway.h"
#include "httputil.h"
#include "log.h"

struct gconn {
    struct bufferevent *bev;
    TAILQ_ENTRY(gconn) link;
};
TAILQ_HEAD(gconn_list, gconn);

struct listen_state {
    struct gateway *g;
    SSL_CTX *ssl;
    struct gconn_list conns;
    int nconns, max_conns;
    struct evhttp_bound_socket *bound;
    struct event *sweep_ev;
    bool paused;
};

static void set_paused(struct listen_state *l, bool p)
{
    struct evconnlistener *lev = l->bound ? evhttp_bound_socket_get_listener(l->bound) : NULL;
    if (!lev || l->paused == p) return;
    if (p) {
        evconnlistener_disable(lev);
        log_warn("accept_paused", "connections=%d", l->nconns);
    } else {
        evconnlistener_enable(lev);
    }
    l->paused = p;
}

static struct bufferevent *bevcb(struct event_base *base, void *arg)
{
    struct listen_state *l = arg;
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
    struct gconn *c = calloc(1, sizeof *c);
    if (!c) return bev; /* uncounted, still served */
    c->bev = bev;
    bufferevent_incref(bev);
    TAILQ_INSERT_TAIL(&l->conns, c, link);
    l->nconns++;
    if (l->nconns >= l->max_conns) set_paused(l, true);
    return bev;
}

static void sweep(evutil_socket_t fd, short what, void *arg)
{
    struct listen_state *l = arg;
    struct gconn *c, *next;
    for (c = TAILQ_FIRST(&l->conns); c; c = next) {
        next = TAILQ_NEXT(c, link);
        bufferevent_data_cb r, w;
        bufferevent_event_cb e;
        void *cbarg;
        bufferevent_getcb(c->bev, &r, &w, &e, &cbarg);
        if (r || w || e) continue;
        /* evhttp freed this connection: ours is the last reference */
        TAILQ_REMOVE(&l->conns, c, link);
        l->nconns--;
        bufferevent_decref(c->bev);
        free(c);
    }
    if (l->paused && l->nconns < l->max_conns - l->max_conns / 10) set_paused(l, false);
    *l->g->m_connections = l->nconns;
}

static SSL_CTX *tls_ctx(const struct gw_config *c)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) return NULL;
    if (SSL_CTX_use_certificate_chain_file(ctx, c->tls_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, c->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        char buf[256];
        ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
        log_error("tls_setup_failed", "cert=%s key=%s err=\"%s\"", c->tls_cert, c->tls_key, buf);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

int gw_listen(struct gateway *g, int *bound_port)
{
    struct listen_state *l = calloc(1, sizeof *l);
    if (!l) return -1;
    l->g = g;
    TAILQ_INIT(&l->conns);
    g->lst = l;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    l->max_conns = g->cfg.max_connections;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        2 * (rlim_t)l->max_conns + 64 > rl.rlim_cur)
        l->max_conns = rl.rlim_cur > 128 ? (int)(rl.rlim_cur - 64) / 2 : 32;
    struct http_limits lim = {
        .max_body = g->cfg.max_body,
        .max_headers = 16 * 1024,
        .timeout_s = (int)g->cfg.header_timeout,
    };
    g->http = http_server_new(g->base, &lim);
    if (!g->http) return -1;
    if (g->cfg.tls_cert[0]) {
        l->ssl = tls_ctx(&g->cfg);
        if (!l->ssl) return -1;
    }
    evhttp_set_bevcb(g->http, bevcb, l);
    evhttp_set_gencb(g->http, gw_on_request, g);
    l->bound = evhttp_bind_socket_with_handle(g->http, g->cfg.host[0] ? g->cfg.host : "0.0.0.0",
                                              (ev_uint16_t)g->cfg.port);
    if (!l->bound) {
        log_error("listen_failed", "host=%s port=%d err=\"%s\"", g->cfg.host, g->cfg.port,
                  strerror(errno ? errno : EADDRINUSE));
        return -1;
    }
    evutil_socket_t fd = evhttp_bound_socket_get_fd(l->bound);
    http_set_nodelay(fd); /* Linux copies it to every accepted socket */
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) return -1;
    *bound_port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                           : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    l->sweep_ev = event_new(g->base, -1, EV_PERSIST, sweep, l);
    struct timeval tv = {0, 500000};
    if (!l->sweep_ev || event_add(l->sweep_ev, &tv) != 0) return -1;
    return 0;
}

void gw_listen_stop(struct gateway *g)
{
    struct listen_state *l = g->lst;
    if (!l || !l->bound) return;
    evhttp_del_accept_socket(g->http, l->bound);
    l->bound = NULL;
}

int gw_connections(const struct gateway *g)
{
    return g->lst ? g->lst->nconns : 0;
}

void gw_listen_free(struct gateway *g)
{
    struct listen_state *l = g->lst;
    if (!l) return;
    if (l->sweep_ev) event_free(l->sweep_ev);
    struct gconn *c;
    while ((c = TAILQ_FIRST(&l->conns))) {
        TAILQ_REMOVE(&l->conns, c, link);
        bufferevent_decref(c->bev);
        free(c);
    }
    if (l->ssl) SSL_CTX_free(l->ssl);
    free(l);
    g->lst = NULL;
}
