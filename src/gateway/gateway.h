/* sgpu-gateway: a stateless OpenAI- and TGI-compatible front door for sgpu endpoints.
 *
 *   main.c    options (--help), start-up, signals
 *   listen.c  the listening socket: limits, TLS, the shared connection guard (gw_listen)
 *   serve.c   request dispatch: path -> endpoint + worker route + error shape, bearer key,
 *             body checks, cost estimate, /v1/models, /health, /metrics, error bodies
 *   flow.c    one proxied request: engine /route/ (long poll, bounded wait) -> envelope to the
 *             granted worker over pooled keep-alive connections -> answer relayed unbuffered;
 *             re-route on connection failure / 408 / 429 / 5xx before the first answer byte
 *
 * One libevent loop, no threads; nothing is kept between requests except connection pools
 * and metrics, so any number of gateways can run behind a load balancer. */
#ifndef SGPU_GATEWAY_H
#define SGPU_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>

#include "metrics.h"
#include "sbuf.h"
#include "upstream.h"

#define GW_NAME_MAX 64    /* endpoint names: [A-Za-z0-9._-]{1,64}, as the engine */
#define GW_KEY_MAX 256    /* bearer keys longer than this are refused (401) */
#define GW_MAX_POOLS 1024 /* worker connection pools kept (one per worker host:port) */

struct gw_config {
    char engine[512]; /* engine base URL, no trailing slash */
    char host[128];
    int port;
    char addr_file[512]; /* write the bound URL here ("" = no) */
    char tls_cert[512], tls_key[512];
    char cacert[512]; /* extra CA bundle for https engine/workers */
    bool insecure;    /* do not verify engine/worker certificates */
    size_t max_body;  /* request body bytes */
    int max_connections;
    int max_inflight;       /* requests in progress (routing or proxying) */
    double route_timeout;   /* s: longest wait for a grant before 503 */
    double request_timeout; /* s: whole request (0 = none) */
    double idle_timeout;    /* s: client and upstream inactivity */
    double header_timeout;  /* s: evhttp read timeout for a request head/body */
    int max_attempts;       /* worker calls per request, re-routes included */
    double default_cost;    /* cost of a generic (non-LLM) request */
    double drain_timeout;   /* s: SIGTERM waits this long for requests in progress */
    char log_level[16];
};

/* Per-endpoint metric series (created when the engine has accepted the name). */
struct gw_epm {
    char name[GW_NAME_MAX + 1];
    double *outcome[8];
};

enum gw_outcome {
    GO_OK = 0,
    GO_CLIENT_ERROR, /* 400/404/405/413/422 answered by us or the worker */
    GO_AUTH,         /* 401 */
    GO_NO_CAPACITY,  /* 429/503: no grant in time, engine overloaded or failing */
    GO_UPSTREAM,     /* worker/engine failure after retries (502/504) */
    GO_MIDSTREAM,    /* answer broke after it had started */
    GO_CANCELLED,    /* client left */
    GO__COUNT
};
const char *gw_outcome_name(enum gw_outcome o);

struct gateway {
    struct gw_config cfg;
    struct event_base *base;
    struct evdns_base *dns;
    struct evhttp *http;
    struct upstream_pool *engine; /* pooled keep-alive connections to the engine */
    struct upstream_pool *pools[GW_MAX_POOLS];
    int npools;
    struct upstream_tls_opts tls;
    int inflight;
    int waiting; /* requests waiting for a grant */
    bool stopping;
    struct listen_state *lst;
    /* metrics */
    struct metrics *m;
    struct gw_epm *epm;
    size_t nepm, capepm;
    double *m_unknown[GO__COUNT]; /* endpoint="-" (refused before the engine knew it) */
    double *m_reroute_conn, *m_reroute_status, *m_route_calls, *m_engine_errors;
    double *m_inflight, *m_waiting, *m_pools;
    struct metrics_hist *h_route_wait, *h_ttfb, *h_total;
};

/* main.c */
int gw_config_parse(struct gw_config *c, int argc, char **argv); /* 0 run, 1 help, -1 error */

/* listen.c: bind with limits, optional TLS, connection cap.  0 or -1 (logged). */
int gw_listen(struct gateway *g, int *bound_port);
void gw_listen_stop(struct gateway *g); /* stop accepting (shutdown) */
void gw_listen_free(struct gateway *g);

/* access.c: batched access lines (same format as log lines; at most 0.2 s late) */
void gw_access_init(struct event_base *base);
void gw_access(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void gw_access_flush(void);
void gw_access_free(void);

/* serve.c */
void gw_on_request(struct evhttp_request *req, void *arg);
void gw_metrics_init(struct gateway *g);
/* Counter for (endpoint, outcome); endpoint NULL = "-". */
void gw_count(struct gateway *g, const char *endpoint, enum gw_outcome o);

/* Error shapes. */
enum gw_shape { SHAPE_OPENAI = 0, SHAPE_TGI = 1 };
/* Reply {"error": {"message", "type", "param": null, "code"}} (OpenAI) or
 * {"error": message, "error_type": type} (TGI).  code may be NULL (null). */
void gw_reply_error(struct evhttp_request *req, enum gw_shape shape, int status, const char *code,
                    const char *msg);

/* flow.c: one routed request.  Takes ownership of payload (malloc'd). */
struct gw_flow_args {
    enum gw_shape shape;
    const char *endpoint;
    const char *key;
    const char *route; /* worker path, query included */
    char *payload;
    size_t payload_len;
    double cost;
    bool wrap_array; /* TGI `/` without stream: answer [<object>] as TGI's compat route does */
};
void gw_flow_start(struct gateway *g, struct evhttp_request *req, const struct gw_flow_args *a);
/* Pool for a worker base URL (created on first use).  NULL on a bad URL. */
struct upstream_pool *gw_worker_pool(struct gateway *g, const char *url);

#endif
