/* Pooled keep-alive HTTP client on evhttp; see upstream.h. */
#include "upstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "httputil.h"
#include "log.h"
#include "xalloc.h"

struct uconn {
    struct evhttp_connection *evcon;
    struct upstream_pool *pool;
    TAILQ_ENTRY(uconn) link; /* idle list */
    int nodelay_fd;          /* fd TCP_NODELAY was last set on */
    bool used;               /* has completed at least one request */
};
TAILQ_HEAD(uconn_list, uconn);

struct upstream_req {
    struct upstream_pool *pool;
    TAILQ_ENTRY(upstream_req) link; /* pool's active list */
    struct uconn *c;
    struct evhttp_request *req; /* NULL once evhttp has freed it */
    struct upstream_cbs cbs;
    void *arg;
    struct upstream_opts o;
    enum evhttp_cmd_type method;
    char *path;
    char *ctype;
    char **hdrs; /* NULL-terminated name, value pairs (copies) */
    const void *body;
    size_t len;
    struct event *deadline;
    int ev_err; /* last evhttp_request_error, -1 = none */
    int status;
    bool got_head, streaming, in_cb, cancelled, finished, deferred, retried, paused, timed_out;
    bool aborted;
};
TAILQ_HEAD(ureq_list, upstream_req);

struct upstream_pool {
    struct event_base *base;
    struct evdns_base *dns;
    char host[256];
    char hosthdr[300];
    int port;
    bool tls;
    SSL_CTX *ssl;
    bool insecure;
    int max_idle;
    int nconns;
    int nidle;
    struct uconn_list idle;
    struct ureq_list active;
};

static const struct timeval tv_zero = {0, 0};

const char *upstream_err_name(enum upstream_err e)
{
    switch (e) {
    case UPSTREAM_OK:
        return "ok";
    case UPSTREAM_ERR_CONNECT:
        return "connect";
    case UPSTREAM_ERR_TIMEOUT:
        return "timeout";
    case UPSTREAM_ERR_BROKEN:
        return "broken";
    case UPSTREAM_ERR_TOO_BIG:
        return "too_big";
    case UPSTREAM_ERR_ABORTED:
        return "aborted";
    }
    return "unknown";
}

static bool host_is_numeric(const char *h)
{
    unsigned char tmp[16];
    return inet_pton(AF_INET, h, tmp) == 1 || inet_pton(AF_INET6, h, tmp) == 1;
}

struct upstream_pool *upstream_pool_new(struct event_base *base, struct evdns_base *dns,
                                        const char *url, const struct upstream_tls_opts *tls)
{
    struct http_url u;
    if (http_url_parse(url, &u) != 0) return NULL;
    /* "localhost" is common in configuration; map it without a resolver. */
    if (strcmp(u.host, "localhost") == 0) snprintf(u.host, sizeof u.host, "127.0.0.1");
    bool numeric = host_is_numeric(u.host);
    if (!numeric && !dns) return NULL;
    struct upstream_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->base = base;
    p->dns = numeric ? NULL : dns;
    snprintf(p->host, sizeof p->host, "%s", u.host);
    p->port = u.port;
    p->tls = u.tls;
    p->max_idle = u.tls ? 0 : 64; /* an SSL bufferevent cannot reconnect: one use each */
    TAILQ_INIT(&p->idle);
    TAILQ_INIT(&p->active);
    bool dflt = (u.tls && u.port == 443) || (!u.tls && u.port == 80);
    bool v6 = strchr(u.host, ':') != NULL;
    if (dflt)
        snprintf(p->hosthdr, sizeof p->hosthdr, v6 ? "[%s]" : "%s", u.host);
    else
        snprintf(p->hosthdr, sizeof p->hosthdr, v6 ? "[%s]:%d" : "%s:%d", u.host, u.port);
    if (u.tls) {
        p->ssl = SSL_CTX_new(TLS_client_method());
        if (!p->ssl) goto fail;
        p->insecure = tls && tls->insecure;
        if (!p->insecure) {
            SSL_CTX_set_verify(p->ssl, SSL_VERIFY_PEER, NULL);
            if (SSL_CTX_set_default_verify_paths(p->ssl) != 1) goto fail;
            if (tls && tls->ca_file &&
                SSL_CTX_load_verify_locations(p->ssl, tls->ca_file, NULL) != 1)
                goto fail;
        } else {
            SSL_CTX_set_verify(p->ssl, SSL_VERIFY_NONE, NULL);
        }
    }
    return p;
fail:
    if (p->ssl) SSL_CTX_free(p->ssl);
    free(p);
    return NULL;
}

const char *upstream_pool_host(const struct upstream_pool *p)
{
    return p->host;
}
int upstream_pool_port(const struct upstream_pool *p)
{
    return p->port;
}
bool upstream_pool_tls(const struct upstream_pool *p)
{
    return p->tls;
}
int upstream_pool_connections(const struct upstream_pool *p)
{
    return p->nconns;
}
int upstream_pool_idle(const struct upstream_pool *p)
{
    return p->nidle;
}
void upstream_pool_set_max_idle(struct upstream_pool *p, int n)
{
    p->max_idle = p->tls ? 0 : (n < 0 ? 0 : n);
}

static struct uconn *uconn_new(struct upstream_pool *p)
{
    struct uconn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->pool = p;
    c->nodelay_fd = -1;
    struct bufferevent *bev = NULL;
    if (p->tls) {
        SSL *ssl = SSL_new(p->ssl);
        if (!ssl) goto fail;
        SSL_set_tlsext_host_name(ssl, p->host);
        if (!p->insecure) {
            X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
            if (host_is_numeric(p->host))
                X509_VERIFY_PARAM_set1_ip_asc(vp, p->host);
            else
                X509_VERIFY_PARAM_set1_host(vp, p->host, 0);
        }
        bev = bufferevent_openssl_socket_new(p->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                             BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        if (!bev) {
            SSL_free(ssl);
            goto fail;
        }
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    }
    c->evcon = evhttp_connection_base_bufferevent_new(p->base, p->dns, bev, p->host,
                                                      (unsigned short)p->port);
    if (!c->evcon) {
        if (bev) bufferevent_free(bev);
        goto fail;
    }
    evhttp_connection_set_retries(c->evcon, 0);
    /* evhttp's default for outgoing connections is unbounded: a server sending endless
     * headers would grow us without limit.  Past it the request fails (no response head). */
    evhttp_connection_set_max_headers_size(c->evcon, UPSTREAM_MAX_HEADERS);
    p->nconns++;
    return c;
fail:
    free(c);
    return NULL;
}

static void uconn_free_cb(evutil_socket_t fd, short what, void *arg)
{
    struct evhttp_connection *evcon = arg;
    evhttp_connection_free(evcon);
}

/* Drop a connection.  Freed from a fresh loop iteration: we may be inside one
 * of its own callbacks. */
static void uconn_drop(struct uconn *c)
{
    struct upstream_pool *p = c->pool;
    p->nconns--;
    if (event_base_once(p->base, -1, EV_TIMEOUT, uconn_free_cb, c->evcon, &tv_zero) != 0)
        log_warn("upstream_leak", "host=%s", p->host);
    free(c);
}

static void uconn_release(struct uconn *c)
{
    struct upstream_pool *p = c->pool;
    c->used = true;
    if (p->nidle >= p->max_idle) {
        uconn_drop(c);
        return;
    }
    TAILQ_INSERT_HEAD(&p->idle, c, link);
    p->nidle++;
}

static struct uconn *uconn_get(struct upstream_pool *p, bool fresh)
{
    if (!fresh) {
        struct uconn *c = TAILQ_FIRST(&p->idle);
        if (c) {
            TAILQ_REMOVE(&p->idle, c, link);
            p->nidle--;
            return c;
        }
    }
    return uconn_new(p);
}

static void set_nodelay(struct uconn *c)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(c->evcon);
    int fd = bev ? (int)bufferevent_getfd(bev) : -1;
    if (fd >= 0 && fd != c->nodelay_fd) {
        http_set_nodelay(fd);
        c->nodelay_fd = fd;
    }
}

static void ureq_free(struct upstream_req *u)
{
    if (u->deadline) event_free(u->deadline);
    if (u->hdrs) {
        for (char **h = u->hdrs; *h; h++)
            free(*h);
        free(u->hdrs);
    }
    free(u->path);
    free(u->ctype);
    free(u);
}

/* Remove from the active list and free (unless a deferred cancel still
 * points at it; that one frees it). */
static void ureq_finish(struct upstream_req *u)
{
    if (!u->finished) {
        u->finished = true;
        TAILQ_REMOVE(&u->pool->active, u, link);
    }
    if (u->deadline) evtimer_del(u->deadline);
    if (!u->deferred) ureq_free(u);
}

static int start(struct upstream_req *u, bool fresh);
static void on_chunk_cb(struct evhttp_request *req, void *arg);

static int on_header_cb(struct evhttp_request *req, void *arg)
{
    struct upstream_req *u = arg;
    if (u->cancelled) return -1;
    u->got_head = true;
    u->status = evhttp_request_get_response_code(req);
    set_nodelay(u->c);
    int r = 0;
    if (u->cbs.on_headers) {
        u->in_cb = true;
        r = u->cbs.on_headers(u, u->status, evhttp_request_get_input_headers(req), u->arg);
        u->in_cb = false;
    }
    if (u->cancelled) return -1;
    if (r < 0) {
        u->aborted = true;
        return -1;
    }
    if (r > 0) {
        u->streaming = true;
        evhttp_request_set_chunked_cb(req, on_chunk_cb);
        evhttp_connection_set_max_body_size(u->c->evcon, -1);
    }
    return 0;
}

static void deferred_cancel_cb(evutil_socket_t fd, short what, void *arg);

static void on_chunk_cb(struct evhttp_request *req, void *arg)
{
    struct upstream_req *u = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    if (u->cancelled || !u->streaming || !u->cbs.on_chunk) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    u->in_cb = true;
    u->cbs.on_chunk(u, in, u->arg);
    u->in_cb = false;
}

static void on_error_cb(enum evhttp_request_error err, void *arg)
{
    struct upstream_req *u = arg;
    u->ev_err = (int)err;
}

static enum upstream_err classify(struct upstream_req *u, const char **msg)
{
    if (u->timed_out) {
        *msg = "upstream request timed out";
        return UPSTREAM_ERR_TIMEOUT;
    }
    if (u->aborted) {
        *msg = "aborted by the caller";
        return UPSTREAM_ERR_ABORTED;
    }
    if (u->ev_err == EVREQ_HTTP_DATA_TOO_LONG) {
        *msg = "upstream response too large";
        return UPSTREAM_ERR_TOO_BIG;
    }
    if (u->ev_err == EVREQ_HTTP_TIMEOUT) {
        *msg = "upstream connection timed out";
        return UPSTREAM_ERR_TIMEOUT;
    }
    if (u->got_head) {
        *msg = "upstream connection broke during the response";
        return UPSTREAM_ERR_BROKEN;
    }
    if (u->ev_err == EVREQ_HTTP_INVALID_HEADER) {
        *msg = "upstream sent an invalid response head";
        return UPSTREAM_ERR_CONNECT;
    }
    *msg = "upstream connection failed";
    return UPSTREAM_ERR_CONNECT;
}

static void on_done_cb(struct evhttp_request *req, void *arg)
{
    struct upstream_req *u = arg;
    struct uconn *c = u->c;
    u->req = NULL; /* evhttp frees it after we return */
    u->c = NULL;
    bool ok = req && evhttp_request_get_response_code(req) != 0 && !u->aborted && !u->timed_out;
    if (u->cancelled) {
        if (c) {
            if (ok)
                uconn_release(c);
            else
                uconn_drop(c);
        }
        ureq_finish(u);
        return;
    }
    if (!ok) {
        bool reused = c && c->used;
        if (c) uconn_drop(c);
        if (reused && u->o.retry_reused && !u->retried && !u->got_head && !u->timed_out &&
            !u->aborted) {
            u->retried = true;
            u->ev_err = -1;
            if (start(u, true) == 0) return;
        }
        const char *msg;
        enum upstream_err e = classify(u, &msg);
        u->cancelled = true; /* no more callbacks; cancel becomes a no-op */
        if (u->cbs.on_error) u->cbs.on_error(u, e, msg, u->arg);
        ureq_finish(u);
        return;
    }
    int status = evhttp_request_get_response_code(req);
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    /* The server may answer before reading the whole request body.  Drop the
     * unsent rest now: it references the caller's memory, which may be freed
     * as soon as on_done returns, and the connection is then unusable. */
    bool unsent = false;
    if (c) {
        struct bufferevent *bev = evhttp_connection_get_bufferevent(c->evcon);
        struct evbuffer *ob = bev ? bufferevent_get_output(bev) : NULL;
        if (ob && evbuffer_get_length(ob)) {
            evbuffer_drain(ob, evbuffer_get_length(ob));
            unsent = true;
        }
    }
    u->cancelled = true;
    if (u->cbs.on_done) u->cbs.on_done(u, status, body, u->arg);
    if (c) {
        if (unsent)
            uconn_drop(c);
        else
            uconn_release(c);
    }
    ureq_finish(u);
}

static void do_cancel(struct upstream_req *u)
{
    if (u->req) {
        struct evhttp_request *r = u->req;
        u->req = NULL;
        evhttp_cancel_request(r); /* error_cb(CANCEL) runs inside; no done cb */
    }
    if (u->c) {
        uconn_drop(u->c);
        u->c = NULL;
    }
    ureq_finish(u);
}

static void deferred_cancel_cb(evutil_socket_t fd, short what, void *arg)
{
    struct upstream_req *u = arg;
    u->deferred = false;
    if (u->finished) {
        ureq_free(u);
        return;
    }
    do_cancel(u);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct upstream_req *u = arg;
    if (u->cancelled) return;
    u->timed_out = true;
    /* Cancel the evhttp request, then report: on_done will not run. */
    if (u->req) {
        struct evhttp_request *r = u->req;
        u->req = NULL;
        evhttp_cancel_request(r);
    }
    if (u->c) {
        uconn_drop(u->c);
        u->c = NULL;
    }
    const char *msg;
    enum upstream_err e = classify(u, &msg);
    u->cancelled = true;
    if (u->cbs.on_error) u->cbs.on_error(u, e, msg, u->arg);
    ureq_finish(u);
}

void upstream_cancel(struct upstream_req *u)
{
    if (!u || u->cancelled) return;
    u->cancelled = true;
    if (u->deadline) evtimer_del(u->deadline);
    if (u->in_cb) {
        /* Inside this request's own evhttp callback: evhttp still uses the
         * request after we return, so cancel from a fresh loop iteration. */
        u->deferred = true;
        if (event_base_once(u->pool->base, -1, EV_TIMEOUT, deferred_cancel_cb, u, &tv_zero) != 0)
            u->deferred = false;
        return;
    }
    do_cancel(u);
}

void upstream_pause(struct upstream_req *u, bool paused)
{
    if (!u || !u->c || u->paused == paused) return;
    struct bufferevent *bev = evhttp_connection_get_bufferevent(u->c->evcon);
    if (!bev) return;
    u->paused = paused;
    if (paused)
        bufferevent_disable(bev, EV_READ);
    else
        bufferevent_enable(bev, EV_READ);
}

bool upstream_req_reused(const struct upstream_req *u)
{
    return u->c && u->c->used;
}

static int start(struct upstream_req *u, bool fresh)
{
    struct upstream_pool *p = u->pool;
    struct uconn *c = uconn_get(p, fresh);
    if (!c) return -1;
    struct evhttp_request *req = evhttp_request_new(on_done_cb, u);
    if (!req) {
        uconn_release(c);
        return -1;
    }
    evhttp_request_set_header_cb(req, on_header_cb);
    evhttp_request_set_error_cb(req, on_error_cb);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", p->hosthdr);
    if (u->ctype) evhttp_add_header(h, "Content-Type", u->ctype);
    if (u->hdrs)
        for (char **kv = u->hdrs; kv[0] && kv[1]; kv += 2)
            evhttp_add_header(h, kv[0], kv[1]);
    if (u->len) {
        char cl[32];
        snprintf(cl, sizeof cl, "%zu", u->len);
        evhttp_add_header(h, "Content-Length", cl);
        evbuffer_add_reference(evhttp_request_get_output_buffer(req), u->body, u->len, NULL, NULL);
    } else if (u->method == EVHTTP_REQ_POST || u->method == EVHTTP_REQ_PUT) {
        evhttp_add_header(h, "Content-Length", "0");
    }
    double idle = u->o.idle_timeout_s > 0 ? u->o.idle_timeout_s : 86400.0;
    struct timeval itv = {(time_t)idle, (suseconds_t)((idle - (double)(time_t)idle) * 1e6)};
    evhttp_connection_set_timeout_tv(c->evcon, &itv);
    evhttp_connection_set_max_body_size(
        c->evcon, (ev_ssize_t)(u->o.max_buffered ? u->o.max_buffered : (size_t)64 << 20));
    u->c = c;
    u->req = req;
    u->got_head = false;
    u->streaming = false;
    if (evhttp_make_request(c->evcon, req, u->method, u->path) != 0) {
        /* evhttp freed req on failure */
        u->req = NULL;
        u->c = NULL;
        uconn_drop(c);
        return -1;
    }
    set_nodelay(c);
    return 0;
}

struct upstream_req *upstream_request(struct upstream_pool *p, enum evhttp_cmd_type method,
                                      const char *path, const char *content_type, const void *body,
                                      size_t len, const char *const *headers,
                                      const struct upstream_opts *o, const struct upstream_cbs *cbs,
                                      void *arg)
{
    struct upstream_req *u = calloc(1, sizeof *u);
    if (!u) return NULL;
    u->pool = p;
    u->cbs = *cbs;
    u->arg = arg;
    if (o) u->o = *o;
    u->method = method;
    u->path = strdup(path && *path ? path : "/");
    u->ctype = content_type ? strdup(content_type) : NULL;
    u->body = body;
    u->len = body ? len : 0;
    u->ev_err = -1;
    if (headers) {
        size_t n = 0;
        while (headers[n])
            n++;
        u->hdrs = calloc(n + 1, sizeof *u->hdrs);
        if (u->hdrs)
            for (size_t i = 0; i < n; i++)
                u->hdrs[i] = strdup(headers[i]);
    }
    if (u->o.timeout_s > 0) {
        u->deadline = xnonnull(evtimer_new(p->base, deadline_cb, u));
        double t = u->o.timeout_s;
        struct timeval tv = {(time_t)t, (suseconds_t)((t - (double)(time_t)t) * 1e6)};
        if (u->deadline) evtimer_add(u->deadline, &tv);
    }
    TAILQ_INSERT_TAIL(&p->active, u, link);
    if (start(u, false) != 0) {
        u->finished = true;
        TAILQ_REMOVE(&p->active, u, link);
        ureq_free(u);
        return NULL;
    }
    return u;
}

void upstream_pool_free(struct upstream_pool *p)
{
    if (!p) return;
    struct upstream_req *u;
    while ((u = TAILQ_FIRST(&p->active)) != NULL) {
        u->cancelled = true;
        u->in_cb = false;
        do_cancel(u);
    }
    struct uconn *c;
    while ((c = TAILQ_FIRST(&p->idle)) != NULL) {
        TAILQ_REMOVE(&p->idle, c, link);
        evhttp_connection_free(c->evcon);
        free(c);
    }
    if (p->ssl) SSL_CTX_free(p->ssl);
    free(p);
}
