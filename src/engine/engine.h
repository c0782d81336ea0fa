/* sgpu-engine: shared types and the functions each file exports.
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

#include "metrics.h"
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

/* A request waiting in an endpoint's global queue (doubly linked, FIFO). */
struct qreq {
    int64_t request_idx;
    double cost;
    double first_mono, last_poll_mono, timeout_s;
    struct qreq *prev, *next;
    /* long poll: the client's /route/ call, held open until a grant or the hold expires */
    struct evhttp_request *held; /* NULL = not held */
    struct event *hold_ev;       /* hold expiry timer */
    struct event *close_ev;      /* the client's socket closing while held */
    struct endpoint *ep;
    struct engine *e;
};

/* An outstanding grant (request_idx -> worker and cost), so that /delete_requests/ can free
 * the capacity it took before the worker's next report.  Kept in grant order (FIFO) and
 * dropped after GRANT_TTL_S or when the table is full. */
struct grant {
    int64_t request_idx, worker_id;
    double cost, mono;
    uint64_t seen_seq; /* worker report_seq of the last report that listed it as working */
    struct grant *prev, *next;
};

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
    struct qreq *qhead, *qtail;
    size_t qlen;
    struct idmap *qmap; /* request_idx -> struct qreq */
    size_t q_active;    /* waiting requests polled recently (counted each tick) */
    bool want_scale_up;
    bool kick;    /* capacity may have freed: try the held requests (deferred) */
    size_t nheld; /* held /route/ calls of this endpoint */
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

enum prov_kind { PROV_LOCAL = 0, PROV_COMMAND = 1 };

struct workergroup {
    int64_t id, endpoint_id;
    enum prov_kind kind;
    struct json_object *launch; /* owned */
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
    struct event *kick_ev;     /* deferred router_kick of endpoints marked `kick` */
    size_t nheld;              /* held /route/ calls, all endpoints */
    struct idmap *grants;      /* request_idx -> struct grant */
    struct grant *ghead, *gtail;
    size_t ngrants;
    struct metrics *metrics;
    double *c_routes_granted, *c_routes_queued, *c_routes_error;
    double *c_sign[3];
    double *c_reports, *c_deletes;
    double *c_deletes_foreign; /* /delete_requests/ ids of grants issued to another worker */
    double *c_actions[8];
    double *c_failures[5]; /* instance failures by kind (lifecycle.c fail_kinds) */
    struct metrics_hist *h_route;
    struct metrics_hist *h_qwait; /* global-queue wait of requests granted after waiting */
};

/* ---- state.c: object registry ---- */
const char *state_name(enum wstate s);
struct endpoint *state_endpoint_by_name(struct engine *e, const char *name);
struct endpoint *state_endpoint_by_id(struct engine *e, int64_t id);
struct workergroup *state_wg_by_id(struct engine *e, int64_t id);
struct workergroup *state_wg_for_endpoint(struct engine *e, int64_t endpoint_id);
struct worker *state_worker_by_id(struct engine *e, int64_t id);
struct endpoint *state_endpoint_add(struct engine *e, struct endpoint *ep); /* takes ownership */
void state_endpoint_remove(struct engine *e, struct endpoint *ep);          /* frees */
struct workergroup *state_wg_add(struct engine *e, struct workergroup *g);
void state_wg_remove(struct engine *e, struct workergroup *g);
struct worker *state_worker_add(struct engine *e, struct worker *w);
void state_worker_remove(struct engine *e, struct worker *w); /* frees */
void state_set(struct engine *e, struct worker *w, enum wstate s, const char *why);
/* Random lowercase hex of n chars into out (n+1 bytes).  0 or -1. */
int state_random_hex(char *out, size_t n);
/* Append a worker object (JSON) to out. */
void state_worker_json(struct engine *e, const struct worker *w, struct sbuf *out);
/* Append an endpoint list row (JSON) to out. */
void state_endpoint_json(struct engine *e, const struct endpoint *ep, struct sbuf *out);
void state_wg_json(struct engine *e, const struct workergroup *g, struct sbuf *out);
bool state_is_ready(const struct worker *w);

/* ---- idmap.c: int64 -> pointer hash map ---- */
struct idmap *idmap_new(void);
void idmap_free(struct idmap *m);
void *idmap_get(const struct idmap *m, int64_t k);
void idmap_put(struct idmap *m, int64_t k, void *v);
void idmap_del(struct idmap *m, int64_t k);
size_t idmap_len(const struct idmap *m);

/* ---- signer.c ---- */
/* The exact bytes the worker verifies for a grant (docs/engine.md, Signing schemes). */
void signer_message(enum sig_scheme s, double cost, const char *endpoint, int64_t reqnum,
                    int64_t request_idx, const char *url, struct sbuf *out);
/* Base64 signature for this grant appended to out (url scheme: from the worker's cache).
 * 0 or -1. */
int signer_grant(struct engine *e, struct endpoint *ep, struct worker *w, double cost,
                 int64_t reqnum, int64_t request_idx, struct sbuf *out);

/* ---- signpool.c: signing threads for the per-request schemes ---- */
int signpool_start(struct engine *e, int nthreads, const char *keypath);
/* Takes over msg/head/tail (left empty); the reply is head + signature + tail. */
void signpool_submit(struct engine *e, struct evhttp_request *req, enum sig_scheme scheme,
                     struct sbuf *msg, struct sbuf *head, struct sbuf *tail, double t0);
void signpool_stop(struct engine *e);

/* ---- router.c ---- */
/* Handle one /route/ call for an authenticated, parsed request; appends the JSON answer to out.
 * Returns the HTTP status, or 0 when the answer was handed to the signing threads (req is then
 * answered later; only when req is not NULL and a sign pool runs).  t0: arrival (mono s). */
int router_route(struct engine *e, struct endpoint *ep, double cost, int64_t request_idx,
                 double replay_timeout, struct sbuf *out, struct evhttp_request *req, double t0);
/* A ready worker past its endpoint's max_queue_time (with 0: any outstanding work). */
bool router_worker_full(const struct endpoint *ep, const struct worker *w);
/* Estimated queue time of a worker in seconds (inf if max_perf is 0). */
double router_queue_time(const struct worker *w);
/* Drop waiting requests not polled within their timeout. */
void router_expire(struct engine *e, struct endpoint *ep, double now);
void router_queue_clear(struct endpoint *ep);
/* State counts for the "status" member of a waiting answer, appended as a JSON object. */
void router_status_json(struct endpoint *ep, struct sbuf *out);
/* Long poll: create/free the deferred kick event and the grant table. */
int router_init(struct engine *e);
void router_fini(struct engine *e);
/* Capacity of ep may have freed (report, worker ready, work done): grant held requests in
 * FIFO order, soon (from the loop, never re-entrantly). */
void router_kick(struct engine *e, struct endpoint *ep);
/* Answer every held request with its waiting body now (shutdown). */
void router_release_all(struct engine *e);
/* The endpoint's workergroup became failing: answer its held requests with the 503 now. */
void router_fail_held(struct engine *e, struct endpoint *ep);
/* The 503 body of a /route/ call to an endpoint whose workergroup g is failing. */
void router_failing_json(const struct endpoint *ep, const struct workergroup *g, struct sbuf *out);
/* /delete_requests/ from worker `from`: the grant's work is done; frees its capacity in the
 * estimate.  1 closed, 0 no such grant (unknown or expired), -1 the grant belongs to another
 * worker (left open). */
int router_grant_done(struct engine *e, const struct worker *from, int64_t request_idx);
/* A report listed request_idx as working (after w->report_seq was incremented). */
void router_grant_working(struct engine *e, struct worker *w, int64_t request_idx);
/* Drop grant records older than the TTL. */
void router_grants_expire(struct engine *e, double now);

/* ---- scaler.c: pure scaling math (unit-tested) ---- */
struct scaler_in {
    struct ep_params p;
    double load;       /* predicted demand, cost/s */
    double perf_est;   /* per-worker perf; 0 = unknown */
    double ready_cap;  /* sum of max_perf of routable workers */
    double queue_time; /* observed, s */
    size_t qlen;       /* global queue length */
    int ready, pending_active, stopped, pending_park, total;
    bool inactive_allowed; /* provider can park workers */
    bool recently_active;  /* within inactivity_timeout (or timeout < 0) */
    int hist_max_a;        /* max active target over the scale-down window (-1 = none) */
    /* start-latency rules (docs/engine.md "Start latency"); create_latency 0 turns them off */
    double create_latency;      /* s: observed created -> ready time (0 = rules off: none seen,
                                 * or not longer than the panic window) */
    double load_sustained;      /* cost/s: lowest L over the last create_latency / 4 */
    double load_prev_sustained; /* the same, create_latency 3/4 .. 1/2 ago (-1 = no history) */
    double backlog;             /* cost: waiting requests + work outstanding on ready workers */
};
struct scaler_out {
    double active_cap, inactive_cap;
    int a_raw; /* before hysteresis */
    int a, i;  /* targets (workers) */
    bool fast; /* queue-time scale-up fired */
    const char *reason;
};
void scaler_compute(const struct scaler_in *in, struct scaler_out *out);

/* Knative KPA (docs/engine.md "KPA policy"), on the same actuation as ours.  Observed
 * concurrency is in worker-equivalents: demand (cost/s) / perf_est, i.e. by Little's law the
 * number of workers busy serving it at max_perf; target concurrency per instance = target_util.
 * Averaged in 1 s buckets over the stable and panic windows. */
#define KPA_BUCKETS 600              /* 1 s buckets: windows up to 10 min */
#define KPA_PANIC_THRESHOLD 2.0      /* panic when desired(panic) / ready >= 2 (200 %) */
#define KPA_MAX_SCALE_UP_RATE 1000.0 /* desired <= ceil(1000 x ready) */
#define KPA_MAX_SCALE_DOWN_RATE 2.0  /* desired >= floor(ready / 2) */
#define KPA_SCALE_TO_ZERO_GRACE_S 30.0
struct kpa_state {
    struct {
        int64_t sec;    /* floor(mono s) of this bucket */
        double cdt, dt; /* sum of concurrency x dt, sum of dt */
    } b[KPA_BUCKETS];
    double first_mono;  /* first sample (windows are shorter until then); 0 = none */
    double panic_since; /* mono s when panic mode began or was last re-armed; 0 = not */
    int max_panic;      /* highest desired count while panicking (never down in panic) */
    double zero_since;  /* mono s since which the desired count is 0 (grace); 0 = not */
};
struct kpa_in {
    struct ep_params p;
    double now; /* mono s */
    double stable_window_s, panic_window_s;
    double perf_est; /* 0 = unknown */
    int ready;       /* routable workers */
    int current;     /* ready + pending active */
    size_t qlen;     /* waiting requests (the activator's buffer) */
    bool inactive_allowed;
};
struct kpa_out {
    double stable, panic; /* averaged concurrency, worker-equivalents */
    int desired_stable, desired_panic;
    int a, i;
    bool panicking;
    const char *reason;
};
/* Add one tick's observed concurrency (worker-equivalents) over dt seconds. */
void kpa_record(struct kpa_state *s, double now, double dt, double concurrency);
void kpa_compute(struct kpa_state *s, const struct kpa_in *in, struct kpa_out *out);
/* Median of the positive values in v (0 if none).  Reorders v. */
double scaler_median(double *v, size_t n);

/* ---- lifecycle.c: the tick, worker reports, provider completions ---- */
void lifecycle_tick(struct engine *e);
enum prov_op { OP_CREATE = 0, OP_START, OP_STOP, OP_DESTROY };
const char *lifecycle_op_name(enum prov_op op);
/* Provider finished an operation on worker `id` (ok = 0 success).  `instance` (may be NULL)
 * is the provider's handle after create. */
void lifecycle_op_done(struct engine *e, int64_t id, enum prov_op op, int ok, const char *msg,
                       const char *instance);
/* A local instance exited by itself. */
void lifecycle_instance_exited(struct engine *e, int64_t id, const char *why);
/* Close the breaker of g (management API: update or `retry`): failures forgotten, creates
 * allowed at once.  why: "retry" or "updated" (event reason). */
void lifecycle_wg_reset(struct engine *e, struct workergroup *g, const char *why);
/* An endpoint that cannot get a ready worker because its workergroup is failing: that
 * workergroup (else NULL). */
struct workergroup *lifecycle_wg_blocking(struct engine *e, struct endpoint *ep);
/* Apply a parsed /worker_status/ body.  Returns the HTTP status; err gets a message. */
int lifecycle_report(struct engine *e, struct json_object *body, char *err, size_t errlen);
/* Mark all workers of an endpoint/workergroup for removal. */
void lifecycle_retire_endpoint(struct engine *e, struct endpoint *ep);
void lifecycle_retire_wg(struct engine *e, struct workergroup *g);
/* Record a decision: log line, event row (batched), metrics. inputs = JSON object text or NULL */
void lifecycle_event(struct engine *e, const struct endpoint *ep, const struct worker *w,
                     const char *kind, const char *reason, const char *inputs);
void lifecycle_shutdown(struct engine *e);
/* SIGTERM: stop scaling and routing, ask local instances to stop (they drain), keep the loop
 * serving reports until they are gone or shutdown_timeout_s passed, then break the loop. */
void lifecycle_shutdown_begin(struct engine *e);
/* No ready worker: make a parked one serve now (an idle parking worker is activated, a
 * stopped one started).  true if one was. */
bool lifecycle_wake_parked(struct engine *e, struct endpoint *ep);

/* ---- providers (providers/provider.c dispatch) ---- */
int provider_parse_kind(const char *s, enum prov_kind *out);
const char *provider_kind_name(enum prov_kind k);
int provider_validate(enum prov_kind k, struct json_object *launch, char *err, size_t errlen);
/* launch.env: an object mapping variable names (non-empty, no '=') to strings. 0 or -1. */
int provider_validate_env(struct json_object *env, char *err, size_t errlen);
bool provider_can_park(const struct workergroup *g);
/* Start an operation; completion comes through lifecycle_op_done (possibly before return).
 * Returns 0 if started, -1 if it could not be started (op failed immediately). */
int provider_op(struct engine *e, struct workergroup *g, struct worker *w, enum prov_op op);
/* launch.tokenless_reports is "url_secret": the workergroup runs token-less generation-1
 * workers (docs/engine.md, "Token-less generation-1 workers"). */
bool provider_tokenless(const struct workergroup *g);
/* The REPORT_ADDR an instance gets: the engine's public URL, with the worker's token as URL
 * user info ("http://sgpu:TOKEN@host:port") when provider_tokenless(g). */
void provider_report_addr(struct engine *e, const struct workergroup *g, const struct worker *w,
                          struct sbuf *out);
/* Why the current provider operation could not start (logged and kept as the create's error
 * by provider_op); returns -1 for `return provider_fail(...)`. */
int provider_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* After restart: re-attach to an instance recorded in the store. */
void provider_adopt(struct engine *e, struct workergroup *g, struct worker *w);
/* Engine exit (SIGTERM): local instances are asked to stop unless keep; command instances are
 * left running (logged, re-adopted on the next start). */
void provider_shutdown(struct engine *e, struct worker *w, bool keep);
/* command provider operations (create/start/stop/destroy) still running: shutdown waits for
 * them (up to --shutdown-timeout-s) so that their results are stored. */
int provider_ops_running(struct engine *e);
/* Per-tick liveness checks (adopted local processes). */
void provider_poll(struct engine *e, struct worker *w);

/* providers/local.c */
int local_validate(struct json_object *launch, char *err, size_t errlen);
int local_op(struct engine *e, struct workergroup *g, struct worker *w, enum prov_op op);
void local_adopt(struct engine *e, struct worker *w);
void local_shutdown(struct engine *e, struct worker *w, bool keep);
void local_poll(struct engine *e, struct worker *w);
/* After local_shutdown on every worker: kill (process trees) what is still running. */
void local_shutdown_wait(struct engine *e);
/* Local instances still running (shutdown progress). */
int local_running(struct engine *e);
/* providers/command.c */
int command_validate(struct json_object *launch, char *err, size_t errlen);
int command_op(struct engine *e, struct workergroup *g, struct worker *w, enum prov_op op);
bool command_can_park(const struct workergroup *g);

/* ---- proc.c: child processes watched from the loop ---- */
struct proc_spec {
    const char *const *argv; /* argv[0] is the program (execvp) */
    const char *const *env;  /* full environment (NULL-terminated) */
    const char *cwd;         /* NULL = inherit */
    const char *log_path;    /* stdout+stderr appended here; NULL = /dev/null (unless capture) */
    bool capture;            /* capture stdout (first 4 KiB) instead */
    double timeout_s;        /* > 0: SIGKILL the group after this */
};
/* exit_status: waitpid status; out: captured stdout (NUL-terminated, may be ""). */
typedef void (*proc_done_fn)(struct engine *e, void *arg, int exit_status, const char *out);
int proc_init(struct engine *e);
void proc_fini(struct engine *e);
/* Spawn in a new process group (pgid = pid).  Returns pid or -1. */
int proc_spawn(struct engine *e, const struct proc_spec *s, proc_done_fn fn, void *arg);
/* Forget the callback of a running child (it is still reaped). */
void proc_detach(int pid);
/* Build an environment: the engine's environ plus/overriding `extra` ("K=V" strings). */
char **proc_env_build(const char *const *extra, size_t nextra);
void proc_env_free(char **env);
/* Signal a process, its descendants and the groups they lead (e.g. a launcher's model). */
void proc_kill_tree(int pid, int sig);
/* Start time of a process from /proc (0 if it does not exist). */
unsigned long long proc_start_time(int pid);

/* ---- store.c ---- */
struct store *store_open(const char *path, char *err, size_t errlen);
void store_close(struct store *s);
int store_meta_get(struct store *s, const char *key, char *out, size_t n);
int store_meta_set(struct store *s, const char *key, const char *val);
/* Writes open a transaction lazily; store_flush commits it (every tick, and before a
 * management answer so configuration is durable when acknowledged). 0 or -1. */
int store_flush(struct store *s);
/* Undo the open transaction (after a failed write). */
void store_rollback(struct store *s);
/* A management change: commit what is pending, then open a transaction that
 * store_durable_commit commits with synchronous=FULL (fsynced before the 2xx).  Pass the
 * result of the writes as rc: on any failure the transaction is rolled back.  0 or -1. */
int store_durable_begin(struct store *s);
int store_durable_commit(struct store *s, int rc);
/* SQLite's message for the last failure (for logs and 5xx answers). */
const char *store_errmsg(struct store *s);
int store_endpoint_save(struct store *s, const struct endpoint *ep);
int store_endpoint_delete(struct store *s, int64_t id);
int store_wg_save(struct store *s, const struct workergroup *g); /* also fails, last_error */
int store_wg_delete(struct store *s, int64_t id);
int store_worker_save(struct store *s, const struct worker *w);
int store_worker_delete(struct store *s, int64_t id);
int store_api_key_add(struct store *s, const char *key, int64_t endpoint_id);
int store_event_add(struct store *s, double ts, int64_t endpoint_id, int64_t worker_id,
                    const char *kind, const char *reason, const char *inputs);
int store_events_trim(struct store *s, int keep);
/* Append a JSON array of events to out (newest `limit`, oldest first). endpoint_id < 0 = all. */
int store_events_json(struct store *s, int64_t endpoint_id, const char *ep_name, int limit,
                      struct sbuf *out);
/* Event lines for /get_endpoint_logs/: kinds of scaling decisions into a, state changes into b */
int store_events_text(struct store *s, int64_t endpoint_id, struct sbuf *decisions,
                      struct sbuf *states);
/* Load everything into e (endpoints, groups, workers).  0 or -1. */
int store_load(struct store *s, struct engine *e);

/* ---- api.c ---- */
int api_init(struct engine *e);

/* ---- keyinfo.c: GET /api/v0/keyinfo/ (endpoints a key may route to) ---- */
void keyinfo_handle(struct engine *e, struct evhttp_request *req);

/* ---- dash.c: the dashboard (/ui/) and GET /api/v0/timeseries/ ---- */
/* Record the tick's point in ep's time series.  cost: cost of new requests since the last
 * tick; counts: workers by state (WS__COUNT). */
void dash_tick(struct endpoint *ep, double dt, double cost, const struct scaler_in *in,
               const struct scaler_out *out, const int *counts);
/* Serve req if path is /ui, /ui/... or /api/v0/timeseries/: true (answered), else false. */
bool dash_handle(struct engine *e, struct evhttp_request *req, const char *path);

/* ---- metrics.c ---- */
void emetrics_init(struct engine *e);
void emetrics_endpoint(struct engine *e, struct endpoint *ep);

#endif
