/* sgpu-worker: the program's top-level types.  One event loop; every module
 * hangs off the single `struct worker`, which holds only what several modules
 * share; each module keeps its own state behind an opaque pointer and declares
 * its API in its own header:
 *
 *   main       start-up, signals, shutdown                       (main.c)
 *   config     env vars + flags -> struct wconfig                (config.c, below)
 *   handlers   route table, presets, JSON config file, workload  handlers.h
 *   request    one client request's life: route, admit, run, end request.h
 *   admission  envelope (422), 503 gate, grant (401), session,   admission.h
 *              429 estimate; wire_cap
 *   envelope   body -> auth_data / payload                       envelope.h
 *   auth       signature message per scheme, RSA, replay guard   auth.h
 *   proxy      forward payload bytes upstream, relay / stream    proxy.h
 *   reply      the worker's own replies (empty, JSON, text, 503) reply.h
 *   pubkey     engine key from file or URL, back-off, refresh    pubkey.h
 *   lifecycle  MODEL_LOG tail, healthcheck, phases               lifecycle.h
 *   benchmark  warm-up + rounds, .has_benchmark cache, fallback  benchmark.h
 *   report     /worker_status/ and /delete_requests/             report.h
 *   status     /ping /health /status /metrics                    status.h
 *   listener   listening socket, TLS, connection guard           listener.h
 *   drain      SIGTERM: stop admitting, finish, final report     drain.h
 *   session    G3 sessions, WORKER_HTTP_PORT listener, expiry    session.h
 *   update     POST /pyworker/update                             update.h
 */
#ifndef SGPU_WORKER_H
#define SGPU_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/queue.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>

#include "metrics.h"
#include "pyjson.h"
#include "rsa.h"
#include "sbuf.h"
#include "upstream.h"

#define SGPU_WORKER_VERSION "1.1.0" /* PyWorker protocol version we speak (G3) */

enum phase { PH_LOADING, PH_BENCHMARKING, PH_READY, PH_ERROR, PH_DRAINING };
enum auth_scheme { AUTH_FIELDS_V1, AUTH_FIELDS_V2, AUTH_URL };
enum report_fmt { REPORT_V1, REPORT_V3 };
/* How a request ended; indexes n_out[] and the requests_total metric. */
enum outcome { OUT_SUCCESS, OUT_ERROR, OUT_CANCELLED, OUT_REJECTED };

struct wreq; /* request.h */
TAILQ_HEAD(wreq_list, wreq);

struct wconfig {
    int port;
    char host[64];
    char backend[16];
    char model_url[512];
    char model_log[1024];
    char **load_msgs, **error_msgs, **info_msgs;
    size_t nload, nerror, ninfo;
    char health_endpoint[512];
    char **report_addrs;
    size_t nreport;
    long long container_id;
    char public_ip[128];
    int public_port;
    bool use_ssl;
    char tls_cert[512], tls_key[512];
    bool unsecured;
    char master_token[512];
    char pubkey_file[1024];
    char pubkey_url[1024];
    double pubkey_refresh;
    enum auth_scheme scheme;
    bool replay_guard;
    int replay_window;  /* reqnum may trail the maximum by this much */
    int replay_history; /* accepted messages remembered */
    int url_cache;      /* cached url-scheme verifications */
    char endpoint[256]; /* SGPU_GRANT_ENDPOINT: grants naming another endpoint are refused; "" = off
                         */
    double max_workload; /* cap on one request's workload and one grant's cost (workload units) */
    enum report_fmt report_fmt;
    char config_file[1024];
    double drain_timeout;
    size_t max_body;
    size_t full_parse_max; /* bodies above: payload located, not fully parsed */
    size_t max_headers;
    int max_connections;     /* open connections; at the limit the oldest idle is evicted */
    size_t body_budget;      /* bytes of requests being received, all connections; 0 = none */
    double idle_timeout;     /* keep-alive idle / read inactivity */
    double request_deadline; /* whole request head+body read deadline (slowloris) */
    double upstream_timeout; /* 0 = none */
    size_t max_response;     /* buffered (non-streamed) model response limit */
    double health_interval;
    double health_timeout;
    int health_failures;
    int bench_runs, bench_concurrency;
    char bench_file[1024];
    double bench_timeout;
    bool bench_enabled;
    double max_perf; /* used when no benchmark runs */
    double report_interval;
    double report_timeout;
    int queue_limit;
    double log_poll;
    char engine_ca[1024]; /* extra CA bundle for https engine URLs */
    bool engine_insecure;
    /* generic backend */
    double wl_constant;
    char wl_field[128];
    bool parallel;
    double max_queue_time;
    char *bench_payload;
    char bench_route[256];
    char version[32];
    char url[700]; /* reported http[s]://PUBLIC_IPADDR:port */
    /* sessions (G3) and /pyworker/update */
    int http_port;          /* plain listener for POST /session/end; -1 = off, 0 = ephemeral */
    bool http_port_set;     /* WORKER_HTTP_PORT given explicitly */
    int max_sessions;       /* 0 = unlimited */
    double session_max_ttl; /* expiration <= now + this (s) */
    double session_gc;      /* expired-session sweep interval (s) */
    char update_flag_file[1024];
};

/* Workload units since the last successful /worker_status/ (report.c resets them). */
struct counters {
    double received, served, errored, cancelled, rejected;
};

struct worker {
    struct wconfig cfg;
    struct event_base *base;
    struct evdns_base *dns;
    struct evhttp *http;         /* main listener (request_cb) */
    struct upstream_pool *model; /* the model server */

    /* handlers.c: the route table */
    struct handler *handlers;
    size_t nhandlers;
    struct handler *generic; /* the "*" handler, if any */
    struct handler *bench_handler;

    /* lifecycle.c writes these; status and report read them */
    enum phase phase;
    double t_start_wall, t_start_mono;
    double t_loaded, t_ready, t_error; /* wall, 0 = not yet */
    double loadtime;                   /* seconds from start to model loaded */
    bool loadtime_pending;             /* v1: not yet delivered in a successful report */
    char error_msg[512];
    double max_perf; /* workload units / s; 0 = unknown */

    /* requests (request.c): queued or running, in arrival order */
    struct wreq_list working;
    int nworking;
    double working_load; /* Σ workload of `working` (the 429 estimate, cur_load) */

    /* what reports carry (request.c counts, report.c resets) */
    struct counters cur; /* since the last successful /worker_status/ */
    uint64_t n_accepted; /* lifetime (num_requests_recieved) */
    uint64_t n_out[4];   /* lifetime per outcome */
    double served_total;
    double last_req_perf; /* v1 cur_perf: workload/s of the last successful request */
    bool update_pending;  /* something changed: report within 1 s */

    bool draining;          /* SIGTERM seen (drain.c) */
    bool final_report_sent; /* nothing may start a report or an on_close call any more */
    int exit_code;

    /* module state, each private to its module */
    struct request_state *rq;   /* request.c */
    struct auth_state *auth;    /* auth.c */
    struct pubkey *pubkey;      /* pubkey.c */
    struct lifecycle *lc;       /* lifecycle.c */
    struct benchmark *bench;    /* benchmark.c */
    struct report *report;      /* report.c */
    struct listener *lst;       /* listener.c */
    struct drain *drain;        /* drain.c */
    struct session_state *sess; /* session.c */

    /* /metrics (registered by status.c, counted where the event happens) */
    struct metrics *metrics;
    double *m_req_total[5]; /* by outcome + 503 */
    double *m_status_401, *m_status_422, *m_status_429, *m_status_503, *m_status_502;
    double *m_grant_wrong_url, *m_grant_wrong_endpoint; /* grants for another worker */
    double *m_workload_capped;                          /* wire numbers clamped (issue 8) */
    double *m_reports_refused;                          /* reports the engine answered 4xx */
    double *m_phase;
    double *m_working, *m_queued, *m_max_perf;
    struct metrics_hist *m_latency;
};

/* config.c */
/* 0, -1 (the error printed), or 1 when --help / --help-markdown was printed. */
int config_load(struct wconfig *c, int argc, char **argv);
void config_usage(FILE *out);
void config_set_url(struct wconfig *c, int port); /* http[s]://PUBLIC_IPADDR:port */
void config_free(struct wconfig *c);
/* Generation 1 (PyWorker workers/tgi) semantics are selected by SGPU_REPORT_FORMAT=v1 or
 * SGPU_AUTH_SCHEME=fields-v1: the tgi preset then requires "parameters" (422). */
bool worker_is_g1(const struct wconfig *c);
int parse_bool(const char *s, bool *out);

#endif
