/* upstream: pooled keep-alive HTTP/1.1 client requests on a libevent base,
 * with streamed or buffered responses, flow control and cancellation.
 *
 * One pool per upstream host:port.  Each in-flight request holds its own
 * connection (evhttp does not pipeline), taken from the pool's idle list or
 * created; finished keep-alive connections go back to the idle list (at most
 * max_idle are kept).  A cancelled or failed connection is dropped, never
 * reused (docs/design.md pitfall 11).  TCP_NODELAY is set on every (re)connected
 * socket (pitfall 2).  Host names are resolved asynchronously through the
 * evdns base given to the pool; numeric hosts never touch the resolver, and
 * evhttp is never allowed to resolve synchronously (pitfall 10).
 *
 * Callback contract (all callbacks run from the event loop, never from inside
 * upstream_request()):
 *   on_headers  once, when the response head arrives; returns 1 to stream the
 *               body through on_chunk, 0 to have it buffered for on_done,
 *               -1 to abort (the request then ends with UPSTREAM_ERR_ABORTED);
 *   on_chunk    zero or more times (streaming only); take the bytes out of
 *               `data` (evbuffer_remove_buffer / evbuffer_add_buffer);
 *   on_done     the last callback of a successful request;
 *   on_error    the last callback of a failed request.
 * After on_done/on_error the request handle is invalid.  After
 * upstream_cancel() no callback runs at all, and the handle is invalid too.
 * upstream_cancel() may be called from inside this request's own callbacks.
 */
#ifndef SGPU_UPSTREAM_H
#define SGPU_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

struct upstream_pool;
struct upstream_req;

/* Response status line + headers accepted from an upstream (bytes); more fails the request
 * with UPSTREAM_ERR_CONNECT ("no response head"). */
#define UPSTREAM_MAX_HEADERS (64 << 10)

enum upstream_err {
    UPSTREAM_OK = 0,
    UPSTREAM_ERR_CONNECT, /* no response head: refused, reset, closed, DNS failure */
    UPSTREAM_ERR_TIMEOUT, /* request deadline passed */
    UPSTREAM_ERR_BROKEN,  /* connection failed after the head (body truncated) */
    UPSTREAM_ERR_TOO_BIG, /* buffered body exceeded max_buffered */
    UPSTREAM_ERR_ABORTED, /* on_headers returned -1 */
};

struct upstream_cbs {
    int (*on_headers)(struct upstream_req *u, int status, struct evkeyvalq *headers, void *arg);
    void (*on_chunk)(struct upstream_req *u, struct evbuffer *data, void *arg);
    /* status: HTTP status; body: the buffered body (empty when streamed). */
    void (*on_done)(struct upstream_req *u, int status, struct evbuffer *body, void *arg);
    void (*on_error)(struct upstream_req *u, enum upstream_err err, const char *msg, void *arg);
};

struct upstream_opts {
    double timeout_s;      /* whole-request deadline; 0 = none (long generations, B4) */
    double idle_timeout_s; /* connect / read / write inactivity; 0 = 1 day */
    size_t max_buffered;   /* buffered response body limit; 0 = 64 MiB */
    /* Resend once when a *reused* keep-alive connection fails before any
     * response byte (the upstream closed it while idle; the request was not
     * processed).  Off by default. */
    bool retry_reused;
};

struct upstream_tls_opts {
    bool insecure;       /* do not verify the server certificate */
    const char *ca_file; /* extra CA bundle; NULL = system default paths */
};

/* Pool for http[s]://host[:port] (any path in the URL is ignored).  dns may be
 * NULL when the host is numeric.  tls: options for https (NULL = defaults).
 * Returns NULL on a bad URL, a name without a resolver, or TLS setup failure. */
struct upstream_pool *upstream_pool_new(struct event_base *base, struct evdns_base *dns,
                                        const char *url, const struct upstream_tls_opts *tls);
/* Frees idle connections.  Requests still in flight are cancelled. */
void upstream_pool_free(struct upstream_pool *p);
void upstream_pool_set_max_idle(struct upstream_pool *p, int n); /* default 64 */
const char *upstream_pool_host(const struct upstream_pool *p);
int upstream_pool_port(const struct upstream_pool *p);
bool upstream_pool_tls(const struct upstream_pool *p);
int upstream_pool_connections(const struct upstream_pool *p); /* open, idle + busy */
int upstream_pool_idle(const struct upstream_pool *p);

/* Start a request.  method: EVHTTP_REQ_GET / POST / ...; path: "/x?y".
 * body/len: request body (may be NULL/0).  The body is referenced, not
 * copied: it must stay valid until the request ends (its last callback or
 * upstream_cancel()).  headers: NULL or a NULL-terminated list of name, value
 * pairs added to Host, Content-Type (when content_type != NULL) and
 * Content-Length.  Returns NULL on immediate failure. */
struct upstream_req *upstream_request(struct upstream_pool *p, enum evhttp_cmd_type method,
                                      const char *path, const char *content_type, const void *body,
                                      size_t len, const char *const *headers,
                                      const struct upstream_opts *o, const struct upstream_cbs *cbs,
                                      void *arg);
/* Abort: the upstream connection is reset (the server sees EOF) and dropped. */
void upstream_cancel(struct upstream_req *u);
/* Stop / resume reading the response (flow control while streaming). */
void upstream_pause(struct upstream_req *u, bool paused);
/* Whether the connection used was a reused keep-alive one. */
bool upstream_req_reused(const struct upstream_req *u);

const char *upstream_err_name(enum upstream_err e);

#endif
