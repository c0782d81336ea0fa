/* hclient: see hclient.h.
 *
 * Life of a request (all steps run from the event loop):
 *   hc_request -> kick (0 s timer) -> resolve (evdns, skipped for numeric hosts)
 *   -> connect + send (evhttp) -> header_cb -> chunk_cb... -> done_cb
 *   -> kick again -> finish: on_done, then the connection goes back to the
 *   idle pool or is freed.
 * Completion is always deferred to a fresh loop iteration so that evhttp's
 * own bookkeeping after its callbacks never meets a connection we freed or
 * reused. */
#include "hclient.h"
#include "clock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "httputil.h"
#include "sbuf.h"
#include "xalloc.h"

#define HC_MAX_IDLE 64

struct hc_idle {
    char key[300]; /* "addr:port" */
    struct evhttp_connection *evcon;
};

enum hc_state { ST_KICK, ST_RESOLVE, ST_SEND, ST_DONE };

struct hc_req {
    struct hclient *hc;
    struct hc_req *prev, *next;
    struct hc_opts o;
    char *method_s, *content_type_s, *bearer_s, *body_s; /* owned copies */
    struct http_url u;
    char addr[INET6_ADDRSTRLEN];
    char key[300];
    enum hc_state st;
    struct event *kick;
    struct event *deadline;
    struct evdns_getaddrinfo_request *dnsreq;
    struct evhttp_connection *evcon;
    bool evcon_reused;
    bool retried;
    struct evhttp_request *ereq;
    struct sbuf body;
    int status;
    bool got_head;
    bool too_large;
    bool keepalive_ok;
    int err_type; /* enum evhttp_request_error seen, or -1 */
    enum hc_error result;
    char errmsg[640];
    double t0, t_head, t_done;
    bool cancelled;
};

struct hclient {
    struct event_base *base;
    struct evdns_base *dns;
    SSL_CTX *ssl;
    struct hclient_tls_opts tls;
    char *ca_file;
    struct hc_idle idle[HC_MAX_IDLE];
    size_t nidle;
    struct hc_req *active;
    size_t nactive;
};

static void req_kick_cb(evutil_socket_t fd, short ev, void *arg);
static void req_deadline_cb(evutil_socket_t fd, short ev, void *arg);

const char *hc_error_name(enum hc_error e)
{
    switch (e) {
    case HC_OK:
        return "ok";
    case HC_ERR_RESOLVE:
        return "resolve";
    case HC_ERR_CONNECT:
        return "connect";
    case HC_ERR_TIMEOUT:
        return "timeout";
    case HC_ERR_MIDSTREAM:
        return "midstream";
    case HC_ERR_TOO_LARGE:
        return "too_large";
    case HC_ERR_CANCELLED:
        return "cancelled";
    case HC_ERR_BAD_URL:
        return "bad_url";
    }
    return "unknown";
}

struct hclient *hclient_new(struct event_base *base, const struct hclient_tls_opts *tls)
{
    struct hclient *hc = calloc(1, sizeof *hc);
    if (!hc) return NULL;
    hc->base = base;
    if (tls) {
        hc->tls = *tls;
        if (tls->ca_file) hc->ca_file = strdup(tls->ca_file);
        hc->tls.ca_file = hc->ca_file;
    }
    return hc;
}

static void idle_drop(struct hclient *hc, size_t i)
{
    evhttp_connection_free(hc->idle[i].evcon);
    hc->idle[i] = hc->idle[--hc->nidle];
}

static void req_free(struct hc_req *r)
{
    struct hclient *hc = r->hc;
    if (r->prev)
        r->prev->next = r->next;
    else
        hc->active = r->next;
    if (r->next) r->next->prev = r->prev;
    hc->nactive--;
    if (r->dnsreq) evdns_getaddrinfo_cancel(r->dnsreq);
    if (r->ereq) evhttp_cancel_request(r->ereq);
    if (r->evcon) evhttp_connection_free(r->evcon);
    if (r->kick) event_free(r->kick);
    if (r->deadline) event_free(r->deadline);
    sbuf_free(&r->body);
    free(r->method_s);
    free(r->content_type_s);
    free(r->bearer_s);
    free(r->body_s);
    free(r);
}

void hclient_free(struct hclient *hc)
{
    if (!hc) return;
    while (hc->active) {
        hc->active->cancelled = true;
        req_free(hc->active);
    }
    while (hc->nidle)
        idle_drop(hc, hc->nidle - 1);
    if (hc->dns) evdns_base_free(hc->dns, 0);
    if (hc->ssl) SSL_CTX_free(hc->ssl);
    free(hc->ca_file);
    free(hc);
}

size_t hclient_active(const struct hclient *hc)
{
    return hc->nactive;
}

static void kick_now(struct hc_req *r)
{
    struct timeval zero = {0, 0};
    evtimer_add(r->kick, &zero);
}

static void req_fail(struct hc_req *r, enum hc_error e, const char *fmt, const char *detail)
{
    r->result = e;
    snprintf(r->errmsg, sizeof r->errmsg, fmt, detail ? detail : "");
    r->st = ST_DONE;
    kick_now(r);
}

struct hc_req *hc_request(struct hclient *hc, const struct hc_opts *o)
{
    struct hc_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->hc = hc;
    r->o = *o;
    r->err_type = -1;
    r->t0 = clock_mono();
    r->method_s = strdup(o->method ? o->method : (o->body ? "POST" : "GET"));
    r->content_type_s = o->content_type ? strdup(o->content_type) : NULL;
    r->bearer_s = o->bearer ? strdup(o->bearer) : NULL;
    if (o->body) {
        r->body_s = malloc(o->body_len + 1);
        if (r->body_s) {
            memcpy(r->body_s, o->body, o->body_len);
            r->body_s[o->body_len] = '\0';
        }
    }
    r->o.url = NULL; /* not kept: parsed below */
    r->kick = xnonnull(evtimer_new(hc->base, req_kick_cb, r));
    r->deadline = xnonnull(evtimer_new(hc->base, req_deadline_cb, r));
    r->next = hc->active;
    if (hc->active) hc->active->prev = r;
    hc->active = r;
    hc->nactive++;
    if (!r->method_s || (o->body && !r->body_s) || !r->kick || !r->deadline) {
        req_free(r);
        return NULL;
    }
    double t = o->timeout_s > 0 ? o->timeout_s : 60.0;
    struct timeval tv = {(time_t)t, (suseconds_t)((t - (double)(time_t)t) * 1e6)};
    evtimer_add(r->deadline, &tv);
    if (!o->url || http_url_parse(o->url, &r->u) != 0) {
        req_fail(r, HC_ERR_BAD_URL, "bad URL %s", o->url ? o->url : "(null)");
        return r;
    }
    r->st = ST_KICK;
    kick_now(r);
    return r;
}

void hc_cancel(struct hc_req *r)
{
    if (!r) return;
    r->cancelled = true;
    /* The real teardown happens from the loop: we may be inside one of this
     * request's own evhttp callbacks right now. */
    r->st = ST_DONE;
    r->result = HC_ERR_CANCELLED;
    kick_now(r);
}

/* ---- TLS ---------------------------------------------------------------- */

static SSL_CTX *client_ssl_ctx(struct hclient *hc)
{
    if (hc->ssl) return hc->ssl;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (hc->tls.insecure) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_default_verify_paths(ctx);
        if (hc->tls.ca_file && SSL_CTX_load_verify_locations(ctx, hc->tls.ca_file, NULL) != 1) {
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    hc->ssl = ctx;
    return ctx;
}

/* ---- evhttp callbacks ------------------------------------------------------ */

static int header_cb(struct evhttp_request *ereq, void *arg)
{
    struct hc_req *r = arg;
    if (r->cancelled) return 0;
    r->status = evhttp_request_get_response_code(ereq);
    r->got_head = true;
    r->t_head = clock_mono() - r->t0;
    if (r->o.on_head) r->o.on_head(r->o.arg, r->status);
    return 0;
}

static void chunk_cb(struct evhttp_request *ereq, void *arg)
{
    struct hc_req *r = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(ereq);
    char tmp[16384];
    size_t maxb = r->o.max_body ? r->o.max_body : (64u << 20);
    for (;;) {
        int n = evbuffer_remove(in, tmp, sizeof tmp);
        if (n <= 0) break;
        if (r->cancelled) continue;
        if (r->o.on_chunk) {
            r->o.on_chunk(r->o.arg, tmp, (size_t)n);
        } else if (r->body.len + (size_t)n > maxb) {
            r->too_large = true;
        } else {
            sbuf_append(&r->body, tmp, (size_t)n);
        }
    }
}

static void error_cb(enum evhttp_request_error e, void *arg)
{
    struct hc_req *r = arg;
    r->err_type = (int)e;
}

/* Why a TLS connection failed (certificate verification or handshake), or "". */
static void tls_error(struct hc_req *r, char *out, size_t n)
{
    out[0] = '\0';
    struct bufferevent *bev = r->evcon ? evhttp_connection_get_bufferevent(r->evcon) : NULL;
    if (!bev) return;
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    unsigned long e, last = 0;
    while ((e = bufferevent_get_openssl_error(bev)) != 0)
        last = e;
    if (vr != X509_V_OK) {
        snprintf(out, n, "TLS certificate verification failed: %s",
                 X509_verify_cert_error_string(vr));
    } else if (last) {
        char buf[256];
        ERR_error_string_n(last, buf, sizeof buf);
        snprintf(out, n, "TLS error: %s", buf);
    }
}

static void done_cb(struct evhttp_request *ereq, void *arg)
{
    struct hc_req *r = arg;
    r->ereq = NULL;               /* evhttp frees it after this callback (or already did) */
    if (r->st == ST_DONE) return; /* cancelled or timed out meanwhile */
    r->t_done = clock_mono() - r->t0;
    if (ereq && evhttp_request_get_response_code(ereq) > 0 && r->err_type < 0) {
        /* Flush anything not yet handed to chunk_cb. */
        chunk_cb(ereq, r);
        if (!r->got_head) {
            r->got_head = true;
            r->status = evhttp_request_get_response_code(ereq);
        }
        const char *conn = evhttp_find_header(evhttp_request_get_input_headers(ereq), "Connection");
        r->keepalive_ok = !(conn && strcasecmp(conn, "close") == 0);
        r->result = r->too_large ? HC_ERR_TOO_LARGE : HC_OK;
        if (r->too_large) snprintf(r->errmsg, sizeof r->errmsg, "response body too large");
    } else if (r->got_head) {
        r->result = HC_ERR_MIDSTREAM;
        snprintf(r->errmsg, sizeof r->errmsg, "connection lost after the response head (%s)",
                 r->err_type == EVREQ_HTTP_TIMEOUT ? "timeout" : "eof");
    } else if (r->evcon_reused && !r->retried && r->err_type == EVREQ_HTTP_EOF) {
        /* A kept-alive connection the server had just closed: the request never
         * reached it.  Retry once on a fresh connection. */
        r->retried = true;
        r->st = ST_KICK;
        r->err_type = -1;
        kick_now(r);
        return;
    } else {
        int saved = errno;
        /* errno is only meaningful for socket errors: a connect() in progress leaves
         * EINPROGRESS/EAGAIN behind, which says nothing about why the request failed. */
        if (saved == EINPROGRESS || saved == EAGAIN || saved == EWOULDBLOCK) saved = 0;
        r->result = r->err_type == EVREQ_HTTP_TIMEOUT ? HC_ERR_TIMEOUT : HC_ERR_CONNECT;
        char tlsmsg[300] = "";
        if (r->u.tls) tls_error(r, tlsmsg, sizeof tlsmsg);
        bool reached =
            r->err_type == EVREQ_HTTP_INVALID_HEADER || r->err_type == EVREQ_HTTP_DATA_TOO_LONG;
        snprintf(r->errmsg, sizeof r->errmsg, "%s %s:%d: %s",
                 r->result == HC_ERR_TIMEOUT ? "timeout talking to"
                 : reached                   ? "bad answer from"
                                             : "cannot reach",
                 r->u.host, r->u.port,
                 tlsmsg[0]                                  ? tlsmsg
                 : r->err_type == EVREQ_HTTP_TIMEOUT        ? "timed out"
                 : r->err_type == EVREQ_HTTP_INVALID_HEADER ? "not a valid HTTP response"
                 : r->err_type == EVREQ_HTTP_DATA_TOO_LONG  ? "response head too large"
                 : saved == ENOTCONN                        ? "connection refused or closed"
                 : saved                                    ? strerror(saved)
                         : "connection closed without a response");
    }
    r->st = ST_DONE;
    kick_now(r);
}

/* ---- steps ------------------------------------------------------------------ */

static struct evhttp_connection *pool_take(struct hclient *hc, const char *key)
{
    for (size_t i = 0; i < hc->nidle; i++) {
        if (strcmp(hc->idle[i].key, key) == 0) {
            struct evhttp_connection *c = hc->idle[i].evcon;
            hc->idle[i] = hc->idle[--hc->nidle];
            return c;
        }
    }
    return NULL;
}

static void pool_put(struct hclient *hc, const char *key, struct evhttp_connection *c)
{
    if (hc->nidle == HC_MAX_IDLE) idle_drop(hc, 0);
    snprintf(hc->idle[hc->nidle].key, sizeof hc->idle[hc->nidle].key, "%s", key);
    hc->idle[hc->nidle].evcon = c;
    hc->nidle++;
}

static void set_nodelay(struct evhttp_connection *c)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(c);
    if (bev) {
        evutil_socket_t fd = bufferevent_getfd(bev);
        if (fd >= 0) http_set_nodelay(fd);
    }
}

/* A TLS connection to r's address, verifying r->u.host (a name or an IP literal) unless the
 * client is insecure; NULL after req_fail. */
static struct evhttp_connection *connect_tls(struct hc_req *r)
{
    struct hclient *hc = r->hc;
    SSL_CTX *ctx = client_ssl_ctx(hc);
    SSL *ssl = ctx ? SSL_new(ctx) : NULL;
    if (!ssl) {
        req_fail(r, HC_ERR_CONNECT, "TLS setup failed%s", NULL);
        return NULL;
    }
    SSL_set_tlsext_host_name(ssl, r->u.host);
    if (!hc->tls.insecure) {
        struct in6_addr tmp;
        if (inet_pton(AF_INET, r->u.host, &tmp) == 1 || inet_pton(AF_INET6, r->u.host, &tmp) == 1)
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), r->u.host);
        else
            SSL_set1_host(ssl, r->u.host);
    }
    struct bufferevent *bev =
        bufferevent_openssl_socket_new(hc->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                       BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!bev) {
        SSL_free(ssl);
        req_fail(r, HC_ERR_CONNECT, "TLS setup failed%s", NULL);
        return NULL;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    struct evhttp_connection *c = evhttp_connection_base_bufferevent_new(
        hc->base, NULL, bev, r->addr, (unsigned short)r->u.port);
    if (!c) req_fail(r, HC_ERR_CONNECT, "cannot create connection%s", NULL);
    return c;
}

/* r->evcon: a kept-alive connection from the pool (plain HTTP, first try), else a new one.
 * -1 after req_fail. */
static int open_connection(struct hc_req *r)
{
    struct hclient *hc = r->hc;
    snprintf(r->key, sizeof r->key, "%s:%d", r->addr, r->u.port);
    r->evcon = NULL;
    r->evcon_reused = false;
    if (!r->u.tls && !r->retried) {
        r->evcon = pool_take(hc, r->key);
        r->evcon_reused = r->evcon != NULL;
    }
    if (!r->evcon) {
        if (r->u.tls) {
            r->evcon = connect_tls(r);
            if (!r->evcon) return -1;
        } else {
            r->evcon =
                evhttp_connection_base_new(hc->base, NULL, r->addr, (unsigned short)r->u.port);
            if (!r->evcon) {
                req_fail(r, HC_ERR_CONNECT, "cannot create connection%s", NULL);
                return -1;
            }
        }
        evhttp_connection_set_retries(r->evcon, 0);
        /* evhttp does not bound response headers on outgoing connections by default */
        evhttp_connection_set_max_headers_size(r->evcon, 64 << 10);
    }
    double t = r->o.timeout_s > 0 ? r->o.timeout_s : 60.0;
    struct timeval tv = {(time_t)t + 1, 0};
    evhttp_connection_set_timeout_tv(r->evcon, &tv);
    return 0;
}

/* The request methods hc_opts.method may name; anything else is sent as GET. */
static const struct {
    const char *name;
    enum evhttp_cmd_type cmd;
} methods[] = {
    {"POST", EVHTTP_REQ_POST},   {"PUT", EVHTTP_REQ_PUT},   {"DELETE", EVHTTP_REQ_DELETE},
    {"PATCH", EVHTTP_REQ_PATCH}, {"HEAD", EVHTTP_REQ_HEAD},
};

static enum evhttp_cmd_type method_cmd(const char *name)
{
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (strcmp(name, methods[i].name) == 0) return methods[i].cmd;
    return EVHTTP_REQ_GET;
}

/* Host (with the port unless it is the scheme's default), User-Agent, Accept, Authorization,
 * and for a body (or a POST/PUT without one) Content-Type, Content-Length and the body. */
static void add_headers_body(struct hc_req *r, enum evhttp_cmd_type cmd)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(r->ereq);
    char hostport[320];
    bool v6 = strchr(r->u.host, ':') != NULL;
    bool defport = r->u.port == (r->u.tls ? 443 : 80);
    if (defport)
        snprintf(hostport, sizeof hostport, v6 ? "[%s]" : "%s", r->u.host);
    else
        snprintf(hostport, sizeof hostport, v6 ? "[%s]:%d" : "%s:%d", r->u.host, r->u.port);
    evhttp_add_header(h, "Host", hostport);
    evhttp_add_header(h, "User-Agent", "sgpu/1");
    evhttp_add_header(h, "Accept", "*/*");
    if (r->bearer_s) {
        char auth[1024];
        snprintf(auth, sizeof auth, "Bearer %s", r->bearer_s);
        evhttp_add_header(h, "Authorization", auth);
    }
    if (r->body_s || cmd == EVHTTP_REQ_POST || cmd == EVHTTP_REQ_PUT) {
        char cl[32];
        size_t n = r->body_s ? r->o.body_len : 0;
        snprintf(cl, sizeof cl, "%zu", n);
        evhttp_add_header(h, "Content-Type",
                          r->content_type_s ? r->content_type_s : "application/json");
        evhttp_add_header(h, "Content-Length", cl);
        if (n) evbuffer_add(evhttp_request_get_output_buffer(r->ereq), r->body_s, n);
    }
}

static void start_send(struct hc_req *r)
{
    if (open_connection(r) != 0) return;
    r->ereq = evhttp_request_new(done_cb, r);
    if (!r->ereq) {
        req_fail(r, HC_ERR_CONNECT, "out of memory%s", NULL);
        return;
    }
    evhttp_request_set_header_cb(r->ereq, header_cb);
    evhttp_request_set_chunked_cb(r->ereq, chunk_cb);
    evhttp_request_set_error_cb(r->ereq, error_cb);
    enum evhttp_cmd_type cmd = method_cmd(r->method_s);
    add_headers_body(r, cmd);
    r->st = ST_SEND;
    if (evhttp_make_request(r->evcon, r->ereq, cmd, r->u.path) != 0) {
        r->ereq = NULL; /* freed by evhttp on failure */
        req_fail(r, HC_ERR_CONNECT, "cannot start request%s", NULL);
        return;
    }
    set_nodelay(r->evcon);
}

static void dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct hc_req *r = arg;
    r->dnsreq = NULL;
    if (result == EVUTIL_EAI_CANCEL) return; /* r is being freed */
    if (result != 0 || !res) {
        if (res) evutil_freeaddrinfo(res);
        req_fail(r, HC_ERR_RESOLVE, "cannot resolve %s", r->u.host);
        return;
    }
    /* Prefer IPv4 (loopback services here listen on 127.0.0.1). */
    struct evutil_addrinfo *pick = res;
    for (struct evutil_addrinfo *a = res; a; a = a->ai_next) {
        if (a->ai_family == AF_INET) {
            pick = a;
            break;
        }
    }
    if (pick->ai_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)pick->ai_addr)->sin_addr, r->addr,
                  sizeof r->addr);
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)pick->ai_addr)->sin6_addr, r->addr,
                  sizeof r->addr);
    evutil_freeaddrinfo(res);
    if (r->st == ST_RESOLVE) start_send(r);
}

static void finish(struct hc_req *r)
{
    struct hclient *hc = r->hc;
    if (!r->cancelled && r->o.on_done) {
        struct hc_response resp = {
            .err = r->result,
            .status = r->status,
            .body = sbuf_cstr(&r->body),
            .body_len = r->body.len,
            .errmsg = r->result == HC_OK ? NULL : r->errmsg,
            .t_head = r->t_head,
            .t_done = r->t_done > 0 ? r->t_done : clock_mono() - r->t0,
        };
        r->cancelled = true; /* on_done runs once */
        r->o.on_done(r->o.arg, &resp);
    }
    if (r->evcon && !r->ereq && r->result == HC_OK && r->keepalive_ok && !r->u.tls) {
        pool_put(hc, r->key, r->evcon);
        r->evcon = NULL;
    }
    req_free(r);
}

static void req_kick_cb(evutil_socket_t fd, short ev, void *arg)
{
    struct hc_req *r = arg;
    if (r->st == ST_DONE) {
        finish(r);
        return;
    }
    if (r->st != ST_KICK) return;
    if (r->retried && r->evcon) {
        /* Fresh connection for the retry. */
        evhttp_connection_free(r->evcon);
        r->evcon = NULL;
        r->st = ST_RESOLVE;
        start_send(r);
        return;
    }
    struct in6_addr tmp;
    if (inet_pton(AF_INET, r->u.host, &tmp) == 1 || inet_pton(AF_INET6, r->u.host, &tmp) == 1) {
        if (snprintf(r->addr, sizeof r->addr, "%s", r->u.host) >= (int)sizeof r->addr) {
            req_fail(r, HC_ERR_BAD_URL, "bad address %s", r->u.host);
            return;
        }
        r->st = ST_RESOLVE;
        start_send(r);
        return;
    }
    struct hclient *hc = r->hc;
    if (!hc->dns) {
        hc->dns = evdns_base_new(hc->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                               EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (!hc->dns) {
            req_fail(r, HC_ERR_RESOLVE, "cannot start the resolver for %s", r->u.host);
            return;
        }
    }
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    r->st = ST_RESOLVE;
    r->dnsreq = evdns_getaddrinfo(hc->dns, r->u.host, NULL, &hints, dns_cb, r);
    /* dns_cb may already have run (hosts file hit); it then started the send. */
}

static void req_deadline_cb(evutil_socket_t fd, short ev, void *arg)
{
    struct hc_req *r = arg;
    if (r->st == ST_DONE) return;
    if (r->dnsreq) {
        struct evdns_getaddrinfo_request *d = r->dnsreq;
        r->dnsreq = NULL;
        r->st = ST_DONE;
        evdns_getaddrinfo_cancel(d);
    }
    if (r->ereq) {
        struct evhttp_request *e = r->ereq;
        r->st = ST_DONE; /* done_cb (if evhttp calls it) must not act */
        r->ereq = NULL;
        evhttp_cancel_request(e);
    }
    if (r->evcon) {
        evhttp_connection_free(r->evcon);
        r->evcon = NULL;
    }
    r->t_done = clock_mono() - r->t0;
    if (r->got_head) {
        req_fail(r, HC_ERR_MIDSTREAM, "deadline passed while reading the body%s", NULL);
    } else {
        r->result = HC_ERR_TIMEOUT;
        snprintf(r->errmsg, sizeof r->errmsg, "no answer from %s:%d within the deadline", r->u.host,
                 r->u.port);
        r->st = ST_DONE;
        kick_now(r);
    }
}
