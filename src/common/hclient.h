/* hclient: one-shot, non-blocking HTTP(S) client requests on a libevent base.
 *
 * Used by the launcher (error reports, certificate signing) and the `sgpu`
 * CLI (route, call, load, management).  Host names are resolved with evdns
 * before connecting (evhttp would otherwise resolve synchronously,
 * design.md pitfall 10); numeric hosts skip the resolver.  Plain-HTTP
 * connections to the same host:port are kept alive and reused (a small idle
 * pool); TLS connections are used once (libevent cannot reconnect an SSL
 * bufferevent).  TCP_NODELAY is set on every connection (pitfall 2).
 *
 * Errors are classified so that callers can apply retry rules that depend on
 * *when* a request failed: before any response byte (safe to re-route) or
 * after the response head (never retried: the body may be half consumed). */
#ifndef SGPU_HCLIENT_H
#define SGPU_HCLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>

enum hc_error {
    HC_OK = 0,
    HC_ERR_RESOLVE,   /* name did not resolve */
    HC_ERR_CONNECT,   /* no response head: refused, reset, closed before answering */
    HC_ERR_TIMEOUT,   /* deadline passed before the response head */
    HC_ERR_MIDSTREAM, /* failed after the head (body truncated / timed out) */
    HC_ERR_TOO_LARGE, /* accumulated body exceeded max_body */
    HC_ERR_CANCELLED, /* hc_cancel() */
    HC_ERR_BAD_URL,
};

struct hc_response {
    enum hc_error err;
    int status;       /* HTTP status, 0 if no head arrived */
    const char *body; /* accumulated body (NUL-terminated) unless on_chunk was set */
    size_t body_len;
    const char *errmsg; /* human text for err != HC_OK */
    double t_head;      /* seconds from hc_request() to the response head (0 if none) */
    double t_done;      /* seconds from hc_request() to completion */
};

struct hc_opts {
    const char *method;       /* "GET", "POST", "PUT", "DELETE"; NULL = GET, or POST with a body */
    const char *url;          /* http://host:port/path?query or https://... */
    const char *content_type; /* NULL = application/json when there is a body */
    const void *body;
    size_t body_len;
    const char *bearer; /* adds Authorization: Bearer <bearer> when not NULL */
    double timeout_s;   /* whole request deadline; 0 = 60 s */
    size_t max_body;    /* accumulated body limit; 0 = 64 MiB */
    /* Called once when the head arrives (status known). */
    void (*on_head)(void *arg, int status);
    /* When set, body bytes are delivered here as they arrive and not accumulated. */
    void (*on_chunk)(void *arg, const char *data, size_t len);
    /* Always called exactly once (unless cancelled with hc_cancel). The response
     * and its body are valid only during the call. */
    void (*on_done)(void *arg, const struct hc_response *r);
    void *arg;
};

struct hclient;
struct hc_req;

struct hclient_tls_opts {
    bool insecure;       /* do not verify the peer certificate */
    const char *ca_file; /* extra CA bundle (PEM); NULL = system store only */
};

/* NULL on failure.  tls may be NULL (verify against the system store). */
struct hclient *hclient_new(struct event_base *base, const struct hclient_tls_opts *tls);
/* Cancels outstanding requests without calling their callbacks. */
void hclient_free(struct hclient *hc);

/* Starts a request; its on_done runs later from the loop (never from inside
 * this call).  Returns NULL only on allocation failure. */
struct hc_req *hc_request(struct hclient *hc, const struct hc_opts *o);
/* Aborts a request; its on_done is not called. */
void hc_cancel(struct hc_req *r);

/* Number of requests in flight. */
size_t hclient_active(const struct hclient *hc);

const char *hc_error_name(enum hc_error e);

#endif
