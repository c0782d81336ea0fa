/* sgpu-worker: shared types.  One event loop; every module below hangs off the
 * single `struct worker`.  A client request is one `struct wreq` with an
 * internal id; nothing else holds request state.
 *
 *   main       start-up, signals, drain, shutdown
 *   config     env vars + flags -> struct wconfig (errors name the variable)
 *   handlers   route table, presets, JSON config file, workload rules
 *   envelope   body -> auth_data / payload (422 bodies byte-identical to PyWorker)
 *   auth       signature message per scheme, RSA verify, replay guard, url cache
 *   pubkey     key from file or URL, retries with back-off, refresh
 *   admission  503 gate, 429 estimate, serial FIFO per handler
 *   proxy      forward payload bytes upstream, relay / stream, cancel
 *   lifecycle  MODEL_LOG tail, healthcheck, phases
 *   benchmark  warm-up + rounds, .has_benchmark cache
 *   report     /worker_status/ and /delete_requests/
 *   status     /ping /health /status /metrics
 *   listener   listening socket, TLS, connection guard (slowloris deadline)
 *   drain      SIGTERM: stop admitting, finish in-flight work, final report
 *   session    G3 sessions, WORKER_HTTP_PORT listener, expiry sweep, on_close call
 *   update     POST /pyworker/update (MASTER_TOKEN, flag file)
 */
#ifndef SGPU_WORKER_H
#define SGPU_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
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
enum wl_kind { WL_CONST, WL_FIELD, WL_TGI, WL_OPENAI, WL_COMFY };
enum payload_check { PC_OBJECT, PC_TGI, PC_ANY };
enum outcome { OUT_SUCCESS, OUT_ERROR, OUT_CANCELLED, OUT_REJECTED };

struct wreq;
TAILQ_HEAD(wreq_list, wreq);

enum bench_preset { BENCH_CUSTOM = 0, BENCH_TGI, BENCH_OPENAI };
/* The preset LM benchmark shape: filler words of at most 7 ASCII letters (<= 8 tokens each with
 * the space, even for a byte-level vocabulary) and the generation length. */
#define BENCH_WORDS 250
#define BENCH_TGI_NEW 256
#define BENCH_OPENAI_NEW 500

/* How max_perf was obtained (benchmark.c; /status "benchmark"). */
struct bench_info {
    const char *how;    /* "off", "running", "measured", "cached", "fallback" */
    char cause[512];    /* fallback: why the benchmark could not run */
    int words, max_new; /* preset prompt shape sent (0 = custom payload) */
    int limit_total;    /* model's published context (tokens; 0 = unknown) */
    double fb_work[16]; /* fallback: workload and seconds of the last successful requests */
    double fb_secs[16];
    int fb_n, fb_pos;
    double *m_fallback; /* gauge: 1 while max_perf is the fallback estimate */
};

struct handler {
    char route[256];    /* worker path; "*" = any POST path (generic) */
    char upstream[256]; /* model-server path; "" = same as the request path */
    enum wl_kind wl;
    char wl_field[128]; /* dotted path for WL_FIELD */
    double wl_default;  /* constant, or fallback when the field is absent */
    bool parallel;
    double max_queue_time; /* seconds; < 0 = no 429 estimate */
    enum payload_check check;
    int stream;          /* -1 auto (by upstream Content-Type / chunking), 0 never, 1 always */
    bool unwrap_input;   /* forward payload["input"] when it is an object (openai worker) */
    char *bench_payload; /* JSON text, or NULL */
    int bench_preset;    /* BENCH_CUSTOM: bench_payload as given; else the worker's own LM
                          * payload, re-generated at the size the model accepts */
    /* serial FIFO state */
    struct wreq_list queue;
    int nqueued;
    int running;
    bool advancing;
};

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

struct wreq {
    uint64_t id;
    struct worker *w;
    struct handler *h;
    struct evhttp_request *req; /* client request; NULL once finished */
    struct evhttp_connection *evcon;
    struct event *close_ev; /* EV_CLOSED watcher until the first response byte */
    struct upstream_req *up;
    char path[256];      /* upstream path */
    const char *payload; /* bytes forwarded (inside the client body) */
    size_t payload_len;
    char *payload_owned; /* when the payload had to be re-serialised */
    double workload;
    bool has_idx;
    int64_t request_idx;
    double t_enter, t_start, t_done; /* wall clock */
    double m_enter;                  /* monotonic */
    bool queued, streaming, replied, paused;
    bool in_write;            /* inside an evhttp write call that may re-enter (TLS close) */
    bool zombie;              /* ended during in_write: freed by the writer */
    char ctype[128];          /* upstream Content-Type */
    struct wsession *session; /* request sent with a live session_id, else NULL */
    TAILQ_ENTRY(wreq) wlink;  /* worker's working list */
    TAILQ_ENTRY(wreq) qlink;  /* handler queue */
};

struct done_entry {
    int64_t request_idx;
    enum outcome out;
    double t_enter, t_start, t_done;
};

struct counters {
    double received, served, errored, cancelled, rejected;
};

struct worker {
    struct wconfig cfg;
    struct event_base *base;
    struct evdns_base *dns;
    struct evhttp *http;
    struct upstream_pool *model;
    struct upstream_pool **report_pools; /* one per REPORT_ADDR (NULL if unusable) */
    struct upstream_pool *pubkey_pool;
    char pubkey_path[1024];

    struct handler *handlers;
    size_t nhandlers;
    struct handler *generic; /* the "*" handler, if any */
    struct handler *bench_handler;

    enum phase phase;
    double t_start_wall, t_start_mono;
    double t_loaded, t_ready, t_error; /* wall, 0 = not yet */
    double loadtime;                   /* seconds from start to model loaded */
    bool loadtime_pending;             /* v1: not yet delivered in a successful report */
    char error_msg[512];
    double max_perf;
    bool model_loaded; /* load pattern seen / health ok */
    bool health_ok_once;
    int health_fail_streak;

    /* requests */
    uint64_t next_id;
    struct wreq_list working;
    int nworking;
    double working_load;

    /* reporting */
    struct counters cur; /* since the last successful /worker_status/ */
    uint64_t n_accepted; /* lifetime (num_requests_recieved) */
    uint64_t n_out[4];   /* lifetime per outcome */
    double served_total;
    double last_req_perf; /* v1 cur_perf: workload/s of the last successful request */
    bool update_pending;
    double last_report_mono;
    double last_report_ok_mono;
    bool report_in_flight;
    double disk_base_gib;
    bool disk_base_set;
    struct done_entry *done;
    size_t ndone, capdone;
    bool delete_in_flight;
    uint64_t reports_ok, reports_failed;

    /* auth */
    struct rsa_pubkey *key;
    char key_fp[65];
    double key_loaded_at;
    int pubkey_attempts;
    bool pubkey_in_flight;
    struct auth_state *auth;

    /* timers */
    struct event *tick_ev; /* 1 s: reports, delete_requests */
    struct event *log_ev;  /* log tail */
    struct event *health_ev;
    struct event *pubkey_ev;
    struct event *drain_ev;
    struct event *sig_term, *sig_int;
    struct lifecycle *lc;
    struct benchmark *bench;
    struct bench_info bi;
    struct listener *lst;

    bool draining;
    double drain_deadline;
    bool final_report_sent;
    int exit_code;

    /* sessions (session.c) */
    struct session_state *sess;
    int nsessions;             /* open sessions: one working request each in reports */
    double session_load;       /* Σ cost of open sessions (cur_load, not the 429 estimate) */
    struct evhttp *http_plain; /* WORKER_HTTP_PORT listener (POST /session/end only) */

    bool cap_logged; /* wire_cap has logged its warn line */

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

/* handlers.c */
int handlers_init(struct worker *w);
void handlers_free(struct worker *w);
struct handler *handlers_find(struct worker *w, const char *path, bool *known_path);
/* Workload of a parsed payload; never negative or NaN. */
double handler_workload(const struct handler *h, const struct pyj_value *payload);

/* envelope.c: parse + validate; on failure replies (422) and returns -1. */
struct envelope {
    struct pyj_value *doc;           /* whole body */
    const struct pyj_value *auth;    /* auth_data object */
    const struct pyj_value *payload; /* payload value */
    const struct pyj_value *session; /* session_id or NULL */
    const char *payload_raw;         /* payload bytes in the body */
    size_t payload_len;
    bool deferred; /* large body: payload not parsed yet (placeholder); see envelope_parse_deferred
                    */
};
int envelope_parse(struct worker *w, struct handler *h, struct evhttp_request *req,
                   const char *body, size_t len, struct envelope *env);
void envelope_free(struct envelope *env);
/* After the grant verified: parse a deferred payload (replies 422 and returns -1 when it is not
 * JSON).  No-op when nothing was deferred. */
int envelope_parse_deferred(struct evhttp_request *req, struct envelope *env);

/* auth.c */
struct auth_state *auth_new(const struct wconfig *c);
void auth_free(struct auth_state *a);
void auth_key_changed(struct auth_state *a);
/* 0 = accepted; AUTH_INVALID = rejected (401, empty body, reason in *why); AUTH_WRONG_URL /
 * AUTH_WRONG_ENDPOINT = a grant for another worker (answer with auth_reply_wrong). */
enum { AUTH_INVALID = -1, AUTH_WRONG_URL = -2, AUTH_WRONG_ENDPOINT = -3 };
int auth_check(struct worker *w, const struct pyj_value *auth_data, const char **why);
/* 401 JSON that says the grant is for another worker / endpoint; counts it in /metrics. */
void auth_reply_wrong(struct worker *w, struct evhttp_request *req, int rc,
                      const struct pyj_value *auth_data);
/* Signed message bytes for the scheme (used by tests and logs). */
void auth_message(enum auth_scheme s, const struct pyj_value *auth_data, struct sbuf *out);

/* pubkey.c */
int pubkey_init(struct worker *w);
void pubkey_free(struct worker *w);

/* admission.c / proxy.c */
void request_cb(struct evhttp_request *req, void *arg);
void wreq_start(struct wreq *wr); /* admission -> proxy */
void wreq_end(struct wreq *wr, enum outcome out);
void wreq_abort_all(struct worker *w); /* drain timeout: cancel what is left */
/* A number from the wire made safe for counters: NaN / negative -> 0, above cap -> cap
 * (counted in /metrics, logged once at warn).  `what` names it in the log. */
double wire_cap(struct worker *w, double x, double cap, const char *what);
struct evhttp_request *wreq_client_begin_reply(struct wreq *wr); /* stops the EV_CLOSED watcher */
struct evhttp_request *wreq_client_finish(struct wreq *wr);      /* detaches the client request */
void proxy_start(struct wreq *wr);
void proxy_cancel(struct wreq *wr);
void reply_empty(struct evhttp_request *req, int status);
void reply_json(struct evhttp_request *req, int status, const char *ctype, const char *body,
                size_t len);
void reply_text(struct evhttp_request *req, int status, const char *text);

/* lifecycle.c */
int lifecycle_init(struct worker *w);
void lifecycle_free(struct worker *w);
void worker_set_phase(struct worker *w, enum phase p);
void worker_error(struct worker *w, const char *msg);
void lifecycle_model_loaded(struct worker *w, const char *why);
void lifecycle_check_ready(struct worker *w); /* e.g. after the public key arrived */
/* Everything but the engine key is ready: requests get 401 rather than 503. */
bool lifecycle_awaiting_key(const struct worker *w);
void lifecycle_benchmark_done(struct worker *w, double perf, const char *err);
const char *phase_name(enum phase p);

/* benchmark.c */
int benchmark_start(struct worker *w);
void benchmark_stop(struct worker *w);
int benchmark_cache_read(const char *path, double *perf);
int benchmark_cache_write(const char *path, double perf);
/* A request ended (admission.c): with the fallback estimate, a successful one refines max_perf
 * (workload units, seconds from admission to the end). */
void benchmark_observe(struct worker *w, bool success, double workload, double seconds);
/* Size the worker's own benchmark to a model context: (words, max_new) shrunk so that the
 * prompt (<= 8 tokens per word) plus the generation fit total tokens and the prompt fits
 * max_input (0 = total - 1).  Pure (unit-tested). */
void benchmark_size(int total, int max_input, int *words, int *max_new);
/* handlers.c: the preset payload of h at this shape (malloc'd), NULL for a custom payload. */
char *handlers_bench_payload(const struct handler *h, int words, int max_new);

/* report.c */
int report_init(struct worker *w);
void report_free(struct worker *w);
void report_request_done(struct worker *w, const struct wreq *wr, enum outcome out);
void report_now(struct worker *w);
void report_status_json(struct worker *w, struct sbuf *out);
void report_final(struct worker *w, void (*done)(struct worker *, void *), void *arg);

/* status.c */
int status_handle(struct worker *w, struct evhttp_request *req, const char *path);
void status_metrics_init(struct worker *w);

/* listener.c */
int listener_init(struct worker *w);
void listener_free(struct worker *w);
void listener_request_begin(struct worker *w, struct evhttp_request *req);

/* session.c: G3 sessions.  session_route answers the /session/ routes and
 * /pyworker/update (returns 1 when it handled the request). */
struct wsession;
int session_init(struct worker *w);
void session_free(struct worker *w);
int session_route(struct worker *w, struct evhttp_request *req, const char *path);
struct wsession *session_find(struct worker *w, const struct pyj_value *id);
void session_attach(struct worker *w, struct wsession *s, struct wreq *wr); /* extends it */
void session_report_idxs(struct worker *w, struct sbuf *b, bool *first);
/* Most load one grant's `cost` may add, and the most all sessions together add to reports:
 * min(SGPU_MAX_WORKLOAD, max_perf x SGPU_MAX_QUEUE_TIME) (issue 8: cost is unsigned in the
 * url scheme). */
double session_cost_cap(const struct worker *w);
/* admission.c: end one request early (its session closed): status/body for a
 * client that has had no reply yet; a started stream is cut. */
void wreq_abort(struct wreq *wr, int status, const char *body);

/* update.c: POST /pyworker/update */
void update_handle(struct worker *w, struct evhttp_request *req);

/* drain.c */
void drain_init(struct worker *w);
void drain_free(struct worker *w);
void worker_check_drained(struct worker *w);

#endif
