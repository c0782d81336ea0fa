/* sgpu-engine: the program's top-level types (endpoint, workergroup, worker, engine), the
 * engine options and endpoint parameters (config.c).  Each module's functions are in its own
 * header (state.h, router.h, lifecycle.h, providers/provider.h, store.h, api.h, ...; the
 * module map is in docs/architecture.md).
 *
 * One process, one libevent loop (no threads).  In memory: endpoints, workergroups and
 * workers (linked lists; workers also indexed by id and listed per endpoint).  The store
 * (SQLite) is the durable copy: configuration is written through, hot worker state and the
 * event log are written back once per tick.  See docs/engine.md for the behaviour. */
#ifndef SGPU_ENGINE_H
#define SGPU_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/http.h>
#include <json-c/json.h>

#include "sbuf.h"

#define EP_NAME_MAX 64
#define API_KEY_LEN 40   /* hex chars */
#define MTOKEN_LEN 32    /* hex chars */
#define SCALER_HIST 4096 /* ticks of target history kept for scale-down hysteresis */

struct engine;
struct store;
struct idmap;
struct worker;
struct workergroup;
struct ts_ring;
struct route_queue; /* router.c */
struct router;      /* router.c */
struct kpa_state;   /* scaler.h */
struct provider_ops;
struct metrics;
struct metrics_hist;

/* ---- config.c: endpoint parameters and engine options ---- */

enum sig_scheme { SIG_URL = 0, SIG_FIELDS_V2 = 1, SIG_FIELDS_V1 = 2 };
/* The endpoint's scaling policy: ours, or Knative's KPA (docs/engine.md "KPA policy"). */
enum scaler_kind { SCALER_SGPU = 0, SCALER_KPA = 1 };

struct ep_params {
    double min_load;      /* perf units/s */
    double min_cold_load; /* perf units/s */
    double target_util;   /* (0, 1] */
    double cold_mult;     /* >= 1 */
    int min_workers;      /* a.k.a. cold_workers */
    int max_workers;
    double max_queue_time;     /* s */
    double target_queue_time;  /* s; 0 = off */
    double inactivity_timeout; /* s; 0 = no gate, < 0 = never to zero */
    enum sig_scheme sig_scheme;
    enum scaler_kind scaler; /* "sgpu" (default) | "kpa" */
};

struct engine_opts {
    char data_dir[512];
    char listen_host[128];
    int listen_port;
    char public_url[256]; /* "" = derived from the bound address */
    int tick_ms;
    double unavailable_after_s;
    double unavailable_destroy_s;
    double drain_grace_s;
    double drain_timeout_s;
    double scale_down_delay_s;
    double stable_window_s;
    double panic_window_s;
    double provider_timeout_s;
    double error_backoff_s; /* first delay after an instance failure; doubles, up to 32x */
    int error_breaker;      /* consecutive failures that make a workergroup `failing`; 0 = never */
    double error_reset_s;   /* a worker ready this long (since the last failure) resets the count */
    double ready_timeout_s; /* a worker not ready this long after its create failed; 0 = never */
    bool keep_workers;
    int sign_threads;          /* 0 = sign on the loop thread */
    int route_hold_ms;         /* long poll of a waiting /route/ call; 0 = answer at once */
    int route_hold_max;        /* held calls at most (open connections); past it: at once */
    double shutdown_timeout_s; /* SIGTERM: wait this long for local instances to stop */
    int max_connections;       /* open client connections; at the limit the oldest idle goes */
    double request_deadline_s; /* first byte (TLS: accept) to complete head + body */
    double body_budget_mb;     /* MiB of requests being received, all connections; 0 = none */
    int local_port_lo, local_port_hi; /* local instances' ports; 0 = kernel-chosen */
    char log_level[16];
};

void config_params_default(struct ep_params *p);
/* Apply the members of `o` (a JSON object from a create/update body) onto *p.  Unknown keys
 * are ignored (Vast clients send extra ones).  0, or -1 with a message naming the field. */
int config_params_apply(struct ep_params *p, struct json_object *o, char *err, size_t errlen);
/* Append the params as JSON members (no braces; starts with a key) to out. */
void config_params_write(const struct ep_params *p, struct sbuf *out);
const char *config_scheme_name(enum sig_scheme s);
int config_scheme_parse(const char *s, enum sig_scheme *out);
bool config_name_valid(const char *s);
void config_opts_default(struct engine_opts *o);
/* Parse argv.  0 = run, 1 = --help printed, -1 = error printed. */
int config_opts_parse(struct engine_opts *o, int argc, char **argv);

/* ---- engine objects ---- */

enum wstate {
    WS_CREATING = 0,
    WS_LOADING,
    WS_MODEL_LOADING,
    WS_IDLE,
    WS_STOPPING,
    WS_STOPPED,
    WS_STARTING,
    WS_ERROR,
    WS_UNAVAILABLE,
    WS_DESTROYING,
    WS__COUNT
};
/* What a worker is for: serving now, or parking (stopped with the model loaded). */
enum wintent { WI_ACTIVE = 0, WI_PARK = 1 };

/* user_id of every endpoint row: sgpu has a single user (the admin key holder) */
#define STATE_USER_ID 1

struct endpoint {
    int64_t id;
    char name[EP_NAME_MAX + 1];
    struct ep_params p;
    char api_key[API_KEY_LEN + 1];
    double created_at; /* epoch s */
    bool deleting;
    /* runtime */
    struct worker **ws; /* workers of this endpoint */
    size_t nws, capws;
    double arrivals;           /* cost of new requests since the last tick */
    double lam_fast, lam_slow; /* smoothed demand, cost/s */
    double last_request_mono;  /* 0 = none since start */
    double perf_est;           /* median measured max_perf; 0 = unknown */
    bool had_worker;
    struct route_queue *rq; /* router.c: the global queue of waiting requests (router.h) */
    bool want_scale_up;
    /* hysteresis: active targets of recent ticks (ring) */
    struct {
        double t;
        int a;
        double load; /* the tick's predicted demand L, cost/s (sustained-demand rule) */
    } hist[SCALER_HIST];
    size_t hist_len, hist_pos;
    int last_a, last_i; /* last computed targets */
    double last_q;
    /* per-endpoint gauges */
    double *g_workers[WS__COUNT];
    double *g_qlen, *g_load, *g_atarget, *g_itarget;
    /* dashboard time series (dash.c, timeseries.h); NULL until the first tick */
    struct ts_ring *ts;
    double ts_routes;      /* new /route/ requests since the last tick */
    struct kpa_state *kpa; /* scaler "kpa": its windows (NULL until used) */
    double create_lat;     /* s: created -> first ready of its workers (EMA); 0 = none seen */
    struct endpoint *next;
};

struct workergroup {
    int64_t id, endpoint_id;
    const struct provider_ops *ops; /* its provider (providers/provider.h), chosen at creation */
    struct json_object *launch;     /* owned */
    int test_workers;
    double gpu_ram;
    double created_at;
    bool deleting;
    /* instance failures (docs/engine.md "Failures, back-off and the breaker") */
    int fails;            /* consecutive failures (create/start failed, exited, error, not ready) */
    bool failing;         /* breaker open: no creates until an update or a retry */
    char last_error[512]; /* the most recent failure, "" = none */
    double create_after;  /* mono s: no create before this (back-off) */
    double last_fail_mono;       /* mono s of the most recent failure (0 = none since start) */
    double *g_failing, *g_fails; /* gauges (NULL until the first tick) */
    struct workergroup *next;
};

struct worker {
    int64_t id, endpoint_id, wg_id;
    enum wstate state;
    enum wintent intent;
    bool draining;
    bool retired;        /* endpoint/workergroup deleted: drain, then destroy */
    bool reported;       /* at least one report since (re)start */
    bool report_clamped; /* the last report had a value clamped (logged once) */
    double drain_since_mono, state_since_mono;
    char url[512];
    char mtoken[MTOKEN_LEN + 1];
    char version[32];
    char error_msg[512];
    char instance[256]; /* provider handle */
    double max_perf, cur_load, cur_perf, new_load, rej_load, loadtime, load_avg;
    double disk_usage;
    int64_t num_working;
    double last_report_mono, last_report_wall, last_grant_mono;
    double created_at, started_at, loaded_at; /* epoch s, 0 = never */
    int64_t reqnum;
    double granted_since_report; /* cost granted since the last report */
    int64_t grants_total;
    uint64_t report_seq; /* reports received (to match working_request_idxs to grants) */
    /* url-scheme signature cache: signature of {"url": sig_url} */
    char *sig_url;
    char *sig_b64;
    bool fail_counted; /* this instance's failure was counted for its workergroup */
    bool op_running;   /* a provider operation is in flight */
    bool lat_counted;  /* its created -> ready time is in the endpoint's create_lat */
    int op_fails;
    double retry_after_mono;
    bool dirty;
    /* local provider process */
    int pid;
    unsigned long long pid_start; /* /proc start time, to recognise the process */
    bool pid_is_child;
    struct worker *next;
};

struct engine {
    struct event_base *base;
    struct evhttp *http;
    struct connguard *guard; /* connection discipline of the API listener (connguard.h) */
    struct engine_opts opts;
    struct store *store;
    struct rsa_privkey *key;
    char key_path[600];
    struct signpool *signpool; /* NULL = inline signing */
    struct sbuf pubkey_pem;
    char admin_key[API_KEY_LEN + 1];
    char public_url[256];
    char self_dir[512]; /* directory of the sgpu-engine executable */
    struct endpoint *endpoints;
    struct workergroup *wgs;
    struct worker *workers;
    struct idmap *worker_by_id;
    int64_t next_worker_id;
    int64_t next_endpoint_id, next_wg_id;
    int64_t next_request_idx, request_idx_reserved;
    struct event *tick_ev;
    double last_tick_mono;
    bool stopping;
    double stop_deadline_mono; /* shutdown: instances still running then are killed */
    struct event *stop_ev;     /* shutdown progress poll */
    struct router *router;     /* router.c's state: held calls, grant records */
    struct metrics *metrics;
    double *c_routes_granted, *c_routes_queued, *c_routes_error;
    double *c_sign[3];
    double *c_reports, *c_deletes;
    double *c_deletes_foreign; /* /delete_requests/ ids of grants issued to another worker */
    double *c_actions[8];      /* by index of lifecycle_actions (lifecycle.h) */
    double *c_failures[5];     /* instance failures by kind (lifecycle.c fail_kinds) */
    struct metrics_hist *h_route;
    struct metrics_hist *h_qwait; /* global-queue wait of requests granted after waiting */
};

#endif
