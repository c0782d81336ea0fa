/* Worker lifecycle: reports in, provider operations out, and the per-tick scaling loop that
 * turns scaler targets into create/start/drain/stop/destroy actions.
 *
 * Invariants kept here:
 *  - at most one provider operation per worker at a time (op_running);
 *  - an endpoint never has more than max_workers workers in any state (checked before create);
 *  - a worker is stopped/destroyed only after draining: a report received at least
 *    drain_grace after its last grant shows no work (or drain_timeout passed);
 *  - every action is an event with its inputs and reason. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "dash.h"
#include "engine.h"
#include "httputil.h"
#include "lifecycle.h"
#include "log.h"
#include "metrics.h"
#include "providers/provider.h"
#include "pyjson.h"
#include "router.h"
#include "scaler.h"
#include "state.h"
#include "store.h"
#include "xalloc.h"

const char *const lifecycle_actions[LIFECYCLE_NACTIONS] = {
    "create", "start", "stop", "destroy", "drain", "undrain", "decision", "op_failed",
};
_Static_assert(sizeof((struct engine *)0)->c_actions / sizeof(double *) == LIFECYCLE_NACTIONS,
               "engine.c_actions: one counter per lifecycle action");

void lifecycle_event(struct engine *e, const struct endpoint *ep, const struct worker *w,
                     const char *kind, const char *reason, const char *inputs)
{
    char r[600], k[64];
    log_quote(r, sizeof r, reason ? reason : "");
    log_quote(k, sizeof k, kind);
    log_info("scale_event", "endpoint=%s worker=%lld kind=%s reason=%s", ep ? ep->name : "-",
             w ? (long long)w->id : -1LL, k, r);
    if (e->store)
        store_event_add(e->store, clock_wall(), ep ? ep->id : 0, w ? w->id : 0, kind,
                        reason ? reason : "", inputs ? inputs : "{}");
    for (size_t a = 0; a < LIFECYCLE_NACTIONS; a++) {
        if (strcmp(kind, lifecycle_actions[a]) != 0) continue;
        if (e->c_actions[a]) *e->c_actions[a] += 1;
        break;
    }
}

static void op_done(struct engine *e, int64_t id, enum prov_op op, int ok, const char *msg,
                    const char *instance);

/* Start a provider operation.  The worker may be freed when this returns (destroy that
 * completed synchronously): callers must not touch w afterwards. */
static void start_op(struct engine *e, struct worker *w, enum prov_op op, const char *reason,
                     const char *inputs)
{
    struct endpoint *ep = state_endpoint_by_id(e, w->endpoint_id);
    struct workergroup *g = state_wg_by_id(e, w->wg_id);
    lifecycle_event(e, ep, w, provider_op_name(op), reason, inputs);
    static const enum wstate st[] = {WS_CREATING, WS_STARTING, WS_STOPPING, WS_DESTROYING};
    state_set(e, w, st[op], reason);
    w->op_running = true;
    w->dirty = true;
    if (!g) {
        op_done(e, w->id, op, op == OP_DESTROY ? 0 : -1, "no workergroup", NULL);
        return;
    }
    provider_op(e, g, w, op);
}

static struct worker *new_worker(struct engine *e, struct endpoint *ep, struct workergroup *g,
                                 enum wintent intent)
{
    struct worker *w = xcalloc(1, sizeof *w);
    w->id = e->next_worker_id;
    w->endpoint_id = ep->id;
    w->wg_id = g->id;
    w->intent = intent;
    w->state = WS_CREATING;
    w->state_since_mono = clock_mono();
    w->created_at = clock_wall();
    if (state_random_hex(w->mtoken, MTOKEN_LEN) != 0) {
        free(w);
        return NULL;
    }
    w->dirty = true;
    state_worker_add(e, w);
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)e->next_worker_id);
    store_meta_set(e->store, "next_worker_id", v);
    return w;
}

/* ---- instance failures: per-workergroup back-off and breaker ----
 *
 * Every way an instance can fail counts once per worker: its create or start failed, it
 * exited by itself, it reported error_msg, or it never became ready (silent until destroyed
 * as unavailable, or not ready within --ready-timeout-s).  The n-th consecutive failure of a
 * workergroup delays its next create by error_backoff_s x 2^(n-1), at most 32x; at
 * error_breaker failures the workergroup is `failing` and creates nothing until the
 * configuration changes or an operator retries it.  Only a worker that became ready after the
 * last failure and stayed ready error_reset_s resets the count. */

static const char *const fail_kinds[] = {"create", "start", "exited", "error", "not_ready"};
enum { FK_CREATE, FK_START, FK_EXITED, FK_ERROR, FK_NOT_READY };

static void wg_gauges(struct engine *e, struct workergroup *g)
{
    if (!e->metrics) return;
    if (!g->g_failing) {
        struct endpoint *ep = state_endpoint_by_id(e, g->endpoint_id);
        char n[256];
        snprintf(n, sizeof n,
                 "sgpu_engine_workergroup_failing{endpoint=\"%s\",workergroup=\"%lld\"}",
                 ep ? ep->name : "", (long long)g->id);
        g->g_failing = metrics_gauge(e->metrics, n, "1 while the workergroup's breaker is open");
        snprintf(n, sizeof n,
                 "sgpu_engine_workergroup_failures{endpoint=\"%s\",workergroup=\"%lld\"}",
                 ep ? ep->name : "", (long long)g->id);
        g->g_fails =
            metrics_gauge(e->metrics, n, "Consecutive instance failures of the workergroup");
    }
    *g->g_failing = g->failing ? 1 : 0;
    *g->g_fails = g->fails;
}

static void wg_failure(struct engine *e, struct worker *w, int kind, const char *msg)
{
    if (w->fail_counted || w->retired || e->stopping) return;
    struct workergroup *g = state_wg_by_id(e, w->wg_id);
    if (!g || g->deleting) return;
    w->fail_counted = true;
    struct endpoint *ep = state_endpoint_by_id(e, w->endpoint_id);
    double now = clock_mono();
    g->fails++;
    g->last_fail_mono = now;
    snprintf(g->last_error, sizeof g->last_error, "%s", msg && *msg ? msg : fail_kinds[kind]);
    int f = g->fails > 6 ? 6 : g->fails;
    double delay = e->opts.error_backoff_s * pow(2, f - 1);
    g->create_after = now + delay;
    if (e->c_failures[kind]) *e->c_failures[kind] += 1;
    char dl[40], in[256];
    pyj_format_float(delay, dl, sizeof dl);
    snprintf(in, sizeof in,
             "{\"workergroup\": %lld, \"kind\": \"%s\", \"failures\": %d, \"delay_s\": %s, "
             "\"breaker\": %d}",
             (long long)g->id, fail_kinds[kind], g->fails, dl, e->opts.error_breaker);
    lifecycle_event(e, ep, w, "backoff", g->last_error, in);
    if (!g->failing && e->opts.error_breaker > 0 && g->fails >= e->opts.error_breaker) {
        g->failing = true;
        char why[700];
        snprintf(why, sizeof why, "%d consecutive instance failures; last: %s", g->fails,
                 g->last_error);
        lifecycle_event(e, ep, NULL, "workergroup_failing", why, in);
        log_error("workergroup_failing", "workergroup=%lld failures=%d", (long long)g->id,
                  g->fails);
        if (ep) router_fail_held(e, ep);
    }
    wg_gauges(e, g);
    store_wg_save(e->store, g);
}

void lifecycle_wg_reset(struct engine *e, struct workergroup *g, const char *why)
{
    bool was = g->failing || g->fails > 0;
    g->failing = false;
    g->fails = 0;
    g->create_after = 0;
    g->last_fail_mono = clock_mono();
    if (was) {
        struct endpoint *ep = state_endpoint_by_id(e, g->endpoint_id);
        char in[64];
        snprintf(in, sizeof in, "{\"workergroup\": %lld}", (long long)g->id);
        lifecycle_event(e, ep, NULL, "workergroup_reset", why, in);
    }
    wg_gauges(e, g);
    store_wg_save(e->store, g);
}

/* Creates allowed now (re-checked after each create: one that fails at once backs off). */
static bool wg_can_create(const struct workergroup *g)
{
    return !g->failing && clock_mono() >= g->create_after;
}

struct workergroup *lifecycle_wg_blocking(struct engine *e, struct endpoint *ep)
{
    struct workergroup *g = state_wg_for_endpoint(e, ep->id);
    if (!g || !g->failing) return NULL;
    for (size_t k = 0; k < ep->nws; k++) {
        const struct worker *w = ep->ws[k];
        if (w->retired) continue;
        /* a ready, coming or parked worker can still serve: not blocked */
        if (w->state != WS_ERROR && w->state != WS_DESTROYING && !w->fail_counted) return NULL;
    }
    return g;
}

/* Provider finished an operation on worker `id` (ok = 0 success).  `instance` (may be NULL)
 * is the provider's handle after create. */
static void op_done(struct engine *e, int64_t id, enum prov_op op, int ok, const char *msg,
                    const char *instance)
{
    struct worker *w = state_worker_by_id(e, id);
    if (!w) return;
    struct endpoint *ep = state_endpoint_by_id(e, w->endpoint_id);
    double now = clock_mono();
    w->op_running = false;
    w->dirty = true;
    char why[400];
    if (ok != 0) {
        snprintf(why, sizeof why, "%s failed: %s", provider_op_name(op), msg ? msg : "");
        lifecycle_event(e, ep, w, "op_failed", why, NULL);
        w->op_fails++;
        double back = e->opts.error_backoff_s * pow(2, w->op_fails > 6 ? 6 : w->op_fails - 1);
        w->retry_after_mono = now + back;
    }
    switch (op) {
    case OP_CREATE:
        if (ok == 0) {
            if (instance) snprintf(w->instance, sizeof w->instance, "%s", instance);
            w->started_at = clock_wall();
            w->last_report_mono = 0;
            /* a successful create is not a success of the model: only a worker that stays
             * ready resets the workergroup's failure count (see wg_failure) */
            if (w->state == WS_CREATING) state_set(e, w, WS_LOADING, "created");
        } else {
            snprintf(w->error_msg, sizeof w->error_msg, "%s", why);
            state_set(e, w, WS_ERROR, why);
            wg_failure(e, w, FK_CREATE, why);
        }
        break;
    case OP_START:
        if (ok == 0) {
            w->started_at = clock_wall();
            w->last_report_mono = now; /* give it unavailable_after to report again */
            w->reported = false;
            struct workergroup *g = state_wg_by_id(e, w->wg_id);
            /* a resumed local process still has its model loaded: routable at once */
            if (g && g->ops->start_keeps_model && w->max_perf > 0)
                state_set(e, w, WS_IDLE, "resumed");
        } else {
            snprintf(w->error_msg, sizeof w->error_msg, "%s", why);
            state_set(e, w, WS_ERROR, why);
            wg_failure(e, w, FK_START, why);
        }
        break;
    case OP_STOP:
        w->draining = false;
        if (ok == 0) {
            w->intent = WI_PARK;
            w->cur_load = 0;
            w->granted_since_report = 0;
            state_set(e, w, WS_STOPPED, "stopped");
        } else {
            w->intent = WI_ACTIVE;
            state_set(e, w, WS_IDLE, why);
        }
        break;
    case OP_DESTROY:
        if (ok == 0) {
            lifecycle_event(e, ep, w, "destroyed", msg ? msg : "", NULL);
            store_worker_delete(e->store, w->id);
            state_worker_remove(e, w);
        }
        /* on failure the tick retries the destroy after the back-off */
        break;
    }
}

/* An instance exited by itself. */
static void instance_exited(struct engine *e, int64_t id, const char *why)
{
    struct worker *w = state_worker_by_id(e, id);
    if (!w || w->state == WS_DESTROYING || w->state == WS_ERROR) return;
    snprintf(w->error_msg, sizeof w->error_msg, "instance exited: %s", why);
    state_set(e, w, WS_ERROR, w->error_msg);
    wg_failure(e, w, FK_EXITED, w->error_msg);
}

/* ---- /worker_status/ ---- */

/* Largest load/perf/time value a report may carry; larger ones (and, for the non-negative
 * fields, negative ones) are clamped, not refused: a worker whose counters ran away (a hostile
 * max_new_tokens) must keep reporting, or it is declared unavailable and destroyed.  1e15
 * perf units is far beyond any real workload, and sums of a few of them stay exact enough. */
#define REPORT_NUM_MAX 1e15

/* A number member: 1 present (clamped into [nonneg ? 0 : -MAX, MAX], Infinity included;
 * *clamped set when it was outside), 0 absent/null or NaN (json-c reads the NaN token that
 * Python's json writes; an unknown value keeps the last one, *clamped set), -1 not a number
 * (err set). */
static int field_num(struct json_object *b, const char *k, bool nonneg, double *dst, bool *clamped,
                     char *err, size_t errlen)
{
    struct json_object *v;
    if (!json_object_object_get_ex(b, k, &v) || json_object_is_type(v, json_type_null)) return 0;
    enum json_type t = json_object_get_type(v);
    double d = json_object_get_double(v);
    if (t != json_type_int && t != json_type_double) {
        snprintf(err, errlen, "%s must be a number", k);
        return -1;
    }
    if (isnan(d)) {
        *clamped = true;
        return 0;
    }
    double lo = nonneg ? 0 : -REPORT_NUM_MAX;
    if (d < lo || d > REPORT_NUM_MAX) {
        d = d < lo ? lo : REPORT_NUM_MAX;
        *clamped = true;
    }
    *dst = d;
    return 1;
}

static int field_str(struct json_object *b, const char *k, char *dst, size_t n, char *err,
                     size_t errlen)
{
    struct json_object *v;
    if (!json_object_object_get_ex(b, k, &v) || json_object_is_type(v, json_type_null)) return 0;
    if (!json_object_is_type(v, json_type_string)) {
        snprintf(err, errlen, "%s must be a string", k);
        return -1;
    }
    const char *s = json_object_get_string(v);
    size_t l = (size_t)json_object_get_string_len(v);
    if (l >= n || memchr(s, '\0', l)) {
        snprintf(err, errlen, "%s too long or contains NUL", k);
        return -1;
    }
    memcpy(dst, s, l + 1);
    return 1;
}

/* A /worker_status/ body's values; -1 = absent (numbers), "" = absent (strings). */
struct report {
    double loadtime, cur_load, new_load, rej_load, max_perf, cur_perf, disk, nwork;
    char url[512], version[32], emsg[512];
    bool clamped; /* a value was out of range (clamped) or NaN (ignored) */
};

/* The reporting worker (*out) and its token.  200, or 400/404/403 with err. */
static int report_worker(struct engine *e, struct json_object *b, struct worker **out, char *err,
                         size_t errlen)
{
    struct json_object *v;
    if (!json_object_object_get_ex(b, "id", &v)) {
        snprintf(err, errlen, "id is required");
        return 400;
    }
    double idd;
    bool id_clamped = false;
    if (field_num(b, "id", true, &idd, &id_clamped, err, errlen) <= 0 || id_clamped ||
        idd != floor(idd) || idd > 9e15) {
        snprintf(err, errlen, "id must be a non-negative integer");
        return 400;
    }
    struct worker *w = state_worker_by_id(e, (int64_t)idd);
    *out = w;
    if (!w) {
        snprintf(err, errlen, "unknown worker id %lld", (long long)idd);
        return 404;
    }
    char tok[128] = "";
    int r = field_str(b, "mtoken", tok, sizeof tok, err, errlen);
    if (r < 0) return 400;
    if (w->mtoken[0]) {
        /* the worker's MASTER_TOKEN is required: a report can change where grants point */
        size_t n = strlen(w->mtoken), m = strlen(tok);
        unsigned diff = (unsigned)(m != n);
        for (size_t i = 0; i < n; i++)
            diff |= (unsigned)(w->mtoken[i] ^ (i < m ? tok[i] : 0));
        if (diff) {
            snprintf(err, errlen, "mtoken %s for worker %lld%s",
                     r ? "does not match" : "is required", (long long)w->id,
                     r ? "" : " (token-less generation-1 workers: launch.tokenless_reports)");
            return 403;
        }
    }
    return 200;
}

/* The body's values into r (clamped as REPORT_NUM_MAX says).  200, or 400 with err. */
static int report_parse(struct json_object *b, struct report *r, char *err, size_t errlen)
{
    r->loadtime = r->cur_load = r->new_load = r->rej_load = r->max_perf = r->cur_perf = -1;
    r->disk = 0;
    r->nwork = -1;
    r->url[0] = r->version[0] = r->emsg[0] = '\0';
    r->clamped = false;
    bool *cl = &r->clamped;
    struct json_object *v;
    if (field_num(b, "loadtime", true, &r->loadtime, cl, err, errlen) < 0 ||
        field_num(b, "cur_load", true, &r->cur_load, cl, err, errlen) < 0 ||
        field_num(b, "new_load", true, &r->new_load, cl, err, errlen) < 0 ||
        field_num(b, "rej_load", true, &r->rej_load, cl, err, errlen) < 0 ||
        field_num(b, "max_perf", true, &r->max_perf, cl, err, errlen) < 0 ||
        field_num(b, "cur_perf", true, &r->cur_perf, cl, err, errlen) < 0 ||
        field_num(b, "additional_disk_usage", false, &r->disk, cl, err, errlen) < 0 ||
        field_num(b, "num_requests_working", true, &r->nwork, cl, err, errlen) < 0 ||
        field_str(b, "url", r->url, sizeof r->url, err, errlen) < 0 ||
        field_str(b, "version", r->version, sizeof r->version, err, errlen) < 0 ||
        field_str(b, "error_msg", r->emsg, sizeof r->emsg, err, errlen) < 0)
        return 400;
    if (json_object_object_get_ex(b, "working_request_idxs", &v) &&
        !json_object_is_type(v, json_type_null) && !json_object_is_type(v, json_type_array)) {
        snprintf(err, errlen, "working_request_idxs must be a list");
        return 400;
    }
    if (r->url[0] && strncmp(r->url, "http://", 7) != 0 && strncmp(r->url, "https://", 8) != 0) {
        snprintf(err, errlen, "url must start with http:// or https://");
        return 400;
    }
    return 200;
}

/* The values onto w (load, perf, url, version, disk) and its grants listed as working. */
static void report_apply(struct engine *e, struct worker *w, const struct report *r,
                         struct json_object *b)
{
    struct json_object *v;
    if (r->clamped && !w->report_clamped) /* once per worker (until a clean report) */
        log_warn("report_clamped", "worker=%lld max=%g why=out_of_range", (long long)w->id,
                 REPORT_NUM_MAX);
    w->report_clamped = r->clamped;
    double now = clock_mono();
    w->last_report_mono = now;
    w->last_report_wall = clock_wall();
    w->reported = true;
    if (r->loadtime >= 0) w->loadtime = r->loadtime > 0 ? r->loadtime : w->loadtime;
    if (r->cur_load >= 0) w->cur_load = r->cur_load;
    if (r->new_load >= 0) w->new_load = r->new_load;
    if (r->rej_load >= 0) w->rej_load = r->rej_load;
    if (r->max_perf >= 0) w->max_perf = r->max_perf;
    if (r->cur_perf >= 0) w->cur_perf = r->cur_perf;
    if (r->nwork >= 0) w->num_working = (int64_t)r->nwork;
    w->disk_usage += r->disk;
    if (w->disk_usage < 0) w->disk_usage = 0;
    if (w->disk_usage > REPORT_NUM_MAX) w->disk_usage = REPORT_NUM_MAX;
    if (r->url[0] && strcmp(r->url, w->url) != 0) memcpy(w->url, r->url, strlen(r->url) + 1);
    if (r->version[0]) memcpy(w->version, r->version, strlen(r->version) + 1);
    w->granted_since_report = 0;
    w->load_avg = w->load_avg * 0.8 + w->cur_load * 0.2;
    w->dirty = true;
    w->report_seq++;
    if (json_object_object_get_ex(b, "working_request_idxs", &v) &&
        json_object_is_type(v, json_type_array)) {
        size_t n = json_object_array_length(v);
        for (size_t i = 0; i < n && i < 100000; i++) {
            struct json_object *x = json_object_array_get_idx(v, i);
            if (json_object_is_type(x, json_type_int))
                router_grant_working(e, w, json_object_get_int64(x));
        }
    }
}

int lifecycle_report(struct engine *e, struct json_object *b, char *err, size_t errlen)
{
    struct worker *w = NULL;
    struct report r;
    int st = report_worker(e, b, &w, err, errlen);
    if (st != 200) return st;
    st = report_parse(b, &r, err, errlen);
    if (st != 200) return st;
    report_apply(e, w, &r, b);
    *e->c_reports += 1;

    struct endpoint *ep = state_endpoint_by_id(e, w->endpoint_id);
    if (ep) router_kick(e, ep); /* the report may show freed capacity */
    if (r.emsg[0]) {
        if (strcmp(r.emsg, w->error_msg) != 0) memcpy(w->error_msg, r.emsg, strlen(r.emsg) + 1);
        if (w->state != WS_DESTROYING && w->state != WS_ERROR) {
            state_set(e, w, WS_ERROR, r.emsg);
            /* a model that keeps failing is replaced with growing back-off */
            wg_failure(e, w, FK_ERROR, r.emsg);
        }
        return 200;
    }
    switch (w->state) {
    case WS_CREATING:
    case WS_LOADING:
    case WS_MODEL_LOADING:
    case WS_STARTING:
    case WS_UNAVAILABLE:
        if (w->max_perf > 0 && w->url[0])
            state_set(e, w, WS_IDLE, "ready (report)");
        else
            state_set(e, w, WS_MODEL_LOADING, "loading (report)");
        break;
    default:
        break; /* engine-driven states are not changed by reports */
    }
    return 200;
}

/* ---- retire (endpoint / workergroup deletion) ---- */

static void retire(struct engine *e, struct worker *w)
{
    (void)e;
    w->intent = WI_PARK;
    if (!w->draining) {
        w->draining = true;
        w->drain_since_mono = clock_mono();
    }
    w->retired = true;
    w->dirty = true;
}

void lifecycle_retire_endpoint(struct engine *e, struct endpoint *ep)
{
    for (size_t i = 0; i < ep->nws; i++)
        retire(e, ep->ws[i]);
}

void lifecycle_retire_wg(struct engine *e, struct workergroup *g)
{
    for (struct worker *w = e->workers; w; w = w->next)
        if (w->wg_id == g->id) retire(e, w);
}

static bool retired(const struct worker *w)
{
    return w->retired;
}

/* ---- the tick ---- */

static bool drained(struct engine *e, const struct worker *w, double now)
{
    if (w->state != WS_IDLE && w->state != WS_UNAVAILABLE) return true; /* never served */
    if (w->last_grant_mono <= 0 && w->num_working == 0 && w->cur_load <= 0) return true;
    return w->last_report_mono >= w->last_grant_mono + e->opts.drain_grace_s &&
           w->num_working == 0 && w->cur_load <= 0 && now >= w->last_grant_mono;
}

/* a retired worker (its endpoint or workergroup deleted, or replaced): destroy it once drained,
 * at once when it never served (not idle), or after --drain-timeout-s */
static void destroy_retired(struct engine *e, struct worker *w, double now, const char *inputs)
{
    bool idle = w->state == WS_IDLE;
    bool timed_out = now - w->drain_since_mono > e->opts.drain_timeout_s;
    if (!idle || drained(e, w, now) || timed_out) start_op(e, w, OP_DESTROY, "deleted", inputs);
}

static bool pending_state(enum wstate s)
{
    return s == WS_CREATING || s == WS_LOADING || s == WS_MODEL_LOADING || s == WS_STARTING;
}

static void inputs_json(struct sbuf *o, const struct endpoint *ep, const struct scaler_in *in,
                        const struct scaler_out *out)
{
    char b[20][40];
    const double vals[] = {in->load,
                           ep->lam_fast,
                           ep->lam_slow,
                           in->perf_est,
                           in->ready_cap,
                           in->queue_time,
                           out->active_cap,
                           out->inactive_cap,
                           in->p.min_load,
                           in->p.target_util,
                           in->p.cold_mult,
                           in->p.min_cold_load,
                           in->p.target_queue_time,
                           in->p.inactivity_timeout,
                           in->create_latency,
                           in->load_sustained,
                           in->backlog,
                           in->load_prev_sustained};
    for (size_t k = 0; k < sizeof vals / sizeof vals[0]; k++)
        pyj_format_float(isfinite(vals[k]) ? vals[k] : -1, b[k], sizeof b[k]);
    sbuf_printf(o,
                "{\"load\": %s, \"lam_fast\": %s, \"lam_slow\": %s, \"perf_est\": %s, "
                "\"ready_cap\": %s, \"queue_time\": %s, \"active_cap\": %s, \"inactive_cap\": %s, "
                "\"min_load\": %s, \"target_util\": %s, \"cold_mult\": %s, \"min_cold_load\": %s, "
                "\"target_queue_time\": %s, \"inactivity_timeout\": %s, \"min_workers\": %d, "
                "\"max_workers\": %d, \"qlen\": %zu, \"ready\": %d, \"pending_active\": %d, "
                "\"stopped\": %d, \"pending_park\": %d, \"total\": %d, \"a_raw\": %d, "
                "\"a\": %d, \"i\": %d, \"fast\": %s, \"recently_active\": %s, "
                "\"create_latency\": %s, \"load_sustained\": %s, \"backlog\": %s, "
                "\"load_prev_sustained\": %s}",
                b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
                b[13], in->p.min_workers, in->p.max_workers, in->qlen, in->ready,
                in->pending_active, in->stopped, in->pending_park, in->total, out->a_raw, out->a,
                out->i, out->fast ? "true" : "false", in->recently_active ? "true" : "false", b[14],
                b[15], b[16], b[17]);
}

/* Worker-level timeouts: unavailable after silence, destroy after long unavailability. */
static void check_reports(struct engine *e, double now)
{
    for (struct worker *w = e->workers, *n; w; w = n) {
        n = w->next;
        provider_poll(e, w);
        if (w->op_running) continue;
        switch (w->state) {
        case WS_LOADING:
        case WS_MODEL_LOADING:
            /* reports, but never becomes ready (a benchmark that hangs, a model stuck) */
            if (e->opts.ready_timeout_s > 0 && w->loaded_at == 0 && w->created_at > 0 &&
                clock_wall() - w->created_at > e->opts.ready_timeout_s) {
                snprintf(w->error_msg, sizeof w->error_msg, "not ready %.0f s after its create",
                         e->opts.ready_timeout_s);
                state_set(e, w, WS_ERROR, w->error_msg);
                wg_failure(e, w, FK_NOT_READY, w->error_msg);
                break;
            }
            /* fall through */
        case WS_IDLE:
        case WS_STARTING: {
            double seen = w->last_report_mono > w->state_since_mono ? w->last_report_mono
                                                                    : w->state_since_mono;
            /* before the first report allow longer: instances take time to boot */
            double lim = e->opts.unavailable_after_s * (w->reported ? 1 : 2);
            if (now - seen > lim) state_set(e, w, WS_UNAVAILABLE, "no report");
            break;
        }
        default:
            break;
        }
    }
}

/* Scaler "kpa": Knative's KPA decides the targets instead of ours (same actuation below).
 * Observed concurrency = this tick's demand (cost/s) / perf_est.  false when its state could
 * not be allocated (our targets stay). */
static bool kpa_tick(struct engine *e, struct endpoint *ep, double now, double dt, double rate,
                     const struct scaler_in *in, struct scaler_out *out, struct kpa_out *ko)
{
    if (!ep->kpa && !(ep->kpa = calloc(1, sizeof *ep->kpa))) return false;
    double pe = in->perf_est;
    /* unknown perf: any demand is one worker-equivalent until the first benchmark */
    kpa_record(ep->kpa, now, dt, pe > 0 ? rate / pe : (rate > 0 ? 1 : 0));
    struct kpa_in ki = {
        .p = in->p,
        .now = now,
        .stable_window_s = e->opts.stable_window_s,
        .panic_window_s = e->opts.panic_window_s,
        .perf_est = pe,
        .ready = in->ready,
        .current = in->ready + in->pending_active,
        .qlen = in->qlen,
        .inactive_allowed = in->inactive_allowed,
    };
    kpa_compute(ep->kpa, &ki, ko);
    out->a_raw = ko->a;
    out->a = ko->a;
    out->i = ko->i;
    out->fast = ko->panicking;
    out->reason = ko->reason;
    out->active_cap = pe > 0 ? ko->a * pe : 0;
    out->inactive_cap = pe > 0 ? ko->i * pe : 0;
    return true;
}

/* One endpoint's tick, section by section (tick_endpoint runs them in order): demand, what the
 * scaler sees, its targets, then the actions that move the workers towards them. */
struct tick {
    struct engine *e;
    struct endpoint *ep;
    struct workergroup *g; /* creates the workers; NULL = nothing to actuate */
    double now, dt;        /* mono s, s since the last tick */
    double rate;           /* cost/s of new requests this tick */
    int counts[WS__COUNT]; /* workers by state */
    int nonfull;           /* ready workers that can take work */
    struct scaler_in in;
    struct scaler_out out;
    struct kpa_out ko;
    bool kpa;           /* the KPA decided (ko holds its figures) */
    struct sbuf inputs; /* the decision's inputs (JSON), recorded with every action */
    int inactive_now;   /* stopped + pending parking workers, kept current by the actions */
};

/* Smoothed demand: the tick's arrival rate into the fast and slow exponential averages. */
static void tick_demand(struct tick *t)
{
    struct engine *e = t->e;
    struct endpoint *ep = t->ep;
    double now = t->now, dt = t->dt;
    double rate = dt > 0 ? ep->arrivals / dt : 0;
    t->rate = rate;
    ep->arrivals = 0;
    ep->lam_fast += (1 - exp(-dt / e->opts.panic_window_s)) * (rate - ep->lam_fast);
    ep->lam_slow += (1 - exp(-dt / e->opts.stable_window_s)) * (rate - ep->lam_slow);
    /* no request for a whole stable window, or past inactivity_timeout: demand is zero (the
     * exponential averages would otherwise only approach it) */
    double idle_for = ep->last_request_mono > 0 ? now - ep->last_request_mono : INFINITY;
    double it0 = ep->p.inactivity_timeout;
    if (idle_for >= e->opts.stable_window_s || (it0 > 0 && idle_for >= it0) ||
        ep->lam_fast + ep->lam_slow < 1e-9) {
        ep->lam_fast = 0;
        ep->lam_slow = 0;
    }
}

/* What the scaler sees: workers by kind, capacity, queue time, recent targets. */
static void tick_observe(struct tick *t)
{
    struct engine *e = t->e;
    struct endpoint *ep = t->ep;
    struct workergroup *g = t->g;
    double now = t->now;
    struct scaler_in *in = &t->in;
    memset(in, 0, sizeof *in);
    in->p = ep->p;
    in->load = ep->lam_fast > ep->lam_slow ? ep->lam_fast : ep->lam_slow;
    double perfs[256];
    size_t np = 0;
    double min_qt = INFINITY;
    for (size_t k = 0; k < ep->nws; k++) {
        struct worker *w = ep->ws[k];
        t->counts[w->state]++;
        if (w->max_perf > 0 && np < 256) perfs[np++] = w->max_perf;
        if (retired(w)) continue;
        if (state_is_ready(w)) {
            in->ready++;
            in->ready_cap += w->max_perf;
            double qt = router_queue_time(w);
            if (qt < min_qt) min_qt = qt;
            if (!router_worker_full(ep, w)) t->nonfull++;
        } else if (w->intent == WI_ACTIVE && pending_state(w->state)) {
            in->pending_active++;
        } else if (w->state == WS_STOPPED || w->state == WS_STOPPING) {
            in->stopped++;
        } else if (w->intent == WI_PARK && (pending_state(w->state) || w->state == WS_IDLE)) {
            in->pending_park++;
        }
    }
    in->total = (int)ep->nws;
    /* start latency: created -> first ready, per worker once (also after a restart: both
     * times are stored), as an EMA so that a changed image or provider shows within a few */
    for (size_t k = 0; k < ep->nws; k++) {
        struct worker *w = ep->ws[k];
        if (w->lat_counted || w->loaded_at <= 0 || w->created_at <= 0) continue;
        w->lat_counted = true;
        double lat = w->loaded_at - w->created_at;
        if (!(lat >= 0) || lat > 86400) continue;
        ep->create_lat = ep->create_lat > 0 ? 0.7 * ep->create_lat + 0.3 * lat : lat;
    }
    /* the start-latency rules matter only when a create takes longer than the fast demand
     * window: below that the reactive rules keep up by themselves */
    in->create_latency = ep->create_lat > e->opts.panic_window_s ? ep->create_lat : 0;
    in->backlog = router_queue_cost(ep);
    for (size_t k = 0; k < ep->nws; k++) {
        const struct worker *w = ep->ws[k];
        if (state_is_ready(w) && !retired(w)) in->backlog += w->cur_load + w->granted_since_report;
    }
    double pe = scaler_median(perfs, np);
    if (pe > 0) ep->perf_est = pe;
    in->perf_est = ep->perf_est;
    in->qlen = router_queue_len(ep);
    /* the oldest waiter's age is a shortage signal only while no ready worker can take
     * work: when one just became ready (or freed up) the queue drains on the next polls */
    double qage = t->nonfull == 0 ? router_queue_age(ep, now) : 0;
    in->queue_time = isfinite(min_qt) ? min_qt : 0;
    if (qage > in->queue_time) in->queue_time = qage;
    in->inactive_allowed = g && provider_can_park(g);
    double it = ep->p.inactivity_timeout;
    in->recently_active = (it < 0 && (ep->had_worker || ep->last_request_mono > 0)) ||
                          (it > 0 && ep->last_request_mono > 0 && now - ep->last_request_mono < it);
    if (ep->hist_len == 0) {
        /* first tick (also after a restart): the pool we have counts as the recent target, so
         * lost history cannot cause an immediate scale-down (Knative starts in panic mode for
         * the same reason) */
        ep->hist[0].t = now;
        ep->hist[0].a = in->ready + in->pending_active;
        ep->hist[0].load = in->load;
        ep->hist_pos = 1;
        ep->hist_len = 1;
    }
    in->hist_max_a = -1;
    in->load_sustained = in->load;
    in->load_prev_sustained = -1;
    double hc = in->create_latency;
    for (size_t k = 0; k < ep->hist_len; k++) {
        double age = now - ep->hist[k].t;
        double l = ep->hist[k].load;
        if (age <= e->opts.scale_down_delay_s && ep->hist[k].a > in->hist_max_a)
            in->hist_max_a = ep->hist[k].a;
        if (age <= hc / 4 && l < in->load_sustained) in->load_sustained = l;
        if (age > hc / 2 && age <= hc * 3 / 4 &&
            (in->load_prev_sustained < 0 || l < in->load_prev_sustained))
            in->load_prev_sustained = l;
    }
}

/* The targets (ours, or the KPA's), the hysteresis history, the decision event, gauges and the
 * dashboard's point. */
static void tick_decide(struct tick *t)
{
    struct engine *e = t->e;
    struct endpoint *ep = t->ep;
    double now = t->now;
    const struct scaler_in *in = &t->in;
    struct scaler_out *out = &t->out;
    scaler_compute(in, out);
    t->kpa = ep->p.scaler == SCALER_KPA && kpa_tick(e, ep, now, t->dt, t->rate, in, out, &t->ko);
    ep->hist[ep->hist_pos].t = now;
    ep->hist[ep->hist_pos].a = out->a_raw;
    ep->hist[ep->hist_pos].load = in->load;
    ep->hist_pos = (ep->hist_pos + 1) % SCALER_HIST;
    if (ep->hist_len < SCALER_HIST) ep->hist_len++;
    ep->last_q = in->queue_time;
    ep->want_scale_up = false;

    inputs_json(&t->inputs, ep, in, out);
    if (t->kpa && t->inputs.len > 0 && t->inputs.data[t->inputs.len - 1] == '}') {
        char st[40], pa[40];
        pyj_format_float(t->ko.stable, st, sizeof st);
        pyj_format_float(t->ko.panic, pa, sizeof pa);
        t->inputs.len--;
        sbuf_printf(&t->inputs,
                    ", \"scaler\": \"kpa\", \"kpa_stable\": %s, \"kpa_panic\": %s, "
                    "\"desired_stable\": %d, \"desired_panic\": %d, \"panicking\": %s}",
                    st, pa, t->ko.desired_stable, t->ko.desired_panic,
                    t->ko.panicking ? "true" : "false");
    }
    if (out->a != ep->last_a || out->i != ep->last_i) {
        char why[200];
        snprintf(why, sizeof why, "targets active %d->%d inactive %d->%d (%s)", ep->last_a, out->a,
                 ep->last_i, out->i, out->reason);
        lifecycle_event(e, ep, NULL, "decision", why, t->inputs.data);
        ep->last_a = out->a;
        ep->last_i = out->i;
    }
    /* gauges */
    for (int s = 0; s < WS__COUNT; s++)
        if (ep->g_workers[s]) *ep->g_workers[s] = t->counts[s];
    if (ep->g_qlen) *ep->g_qlen = (double)router_queue_len(ep);
    if (ep->g_load) *ep->g_load = in->load;
    if (ep->g_atarget) *ep->g_atarget = out->a;
    if (ep->g_itarget) *ep->g_itarget = out->i;
    dash_tick(ep, t->dt, t->rate * t->dt, in, out, t->counts);
}

/* 1. errors and long-unavailable workers: destroy (the targets below re-create) */
static void tick_replace_failed(struct tick *t)
{
    struct engine *e = t->e;
    struct endpoint *ep = t->ep;
    double now = t->now;
    for (size_t k = 0; k < ep->nws;) {
        struct worker *w = ep->ws[k];
        size_t before = ep->nws;
        if (!w->op_running && now >= w->retry_after_mono) {
            if (w->state == WS_ERROR) {
                start_op(e, w, OP_DESTROY, "replace errored worker", t->inputs.data);
            } else if (w->state == WS_DESTROYING) {
                start_op(e, w, OP_DESTROY, "retry destroy", t->inputs.data);
            } else if (w->state == WS_UNAVAILABLE &&
                       now - w->state_since_mono > e->opts.unavailable_destroy_s) {
                if (w->loaded_at == 0) /* silent before it was ever ready */
                    wg_failure(e, w, FK_NOT_READY, "never became ready (no report)");
                start_op(e, w, OP_DESTROY, "unavailable too long", t->inputs.data);
            }
        }
        if (ep->nws == before) k++; /* else w was removed and ws[k] is another worker */
    }
}

/* A worker that became ready after the workergroup's last failure and stayed ready resets its
 * failure count. */
static void tick_breaker_reset(struct tick *t)
{
    struct engine *e = t->e;
    struct endpoint *ep = t->ep;
    struct workergroup *g = t->g;
    double now = t->now;
    if (g->fails > 0 && !g->failing) {
        for (size_t k = 0; k < ep->nws; k++) {
            const struct worker *w = ep->ws[k];
            if (w->wg_id == g->id && w->state == WS_IDLE && w->max_perf > 0 &&
                w->state_since_mono > g->last_fail_mono &&
                now - w->state_since_mono >= e->opts.error_reset_s) {
                char rin[64];
                snprintf(rin, sizeof rin, "{\"workergroup\": %lld, \"failures\": %d}",
                         (long long)g->id, g->fails);
                g->fails = 0;
                g->create_after = 0;
                lifecycle_event(e, ep, w, "backoff_reset", "a worker stayed ready", rin);
                store_wg_save(e->store, g);
                break;
            }
        }
    }
    wg_gauges(e, g);
}

/* 2. active short by need: undrain, resume, repurpose parking workers, create */
static void tick_active_short(struct tick *t, int need)
{
    struct engine *e = t->e;
    struct endpoint *ep = t->ep;
    struct workergroup *g = t->g;
    double now = t->now;
    const struct scaler_out *out = &t->out;
    for (size_t k = 0; k < ep->nws && need > 0; k++) {
        struct worker *w = ep->ws[k];
        if (w->draining && !retired(w) && w->state == WS_IDLE && w->intent == WI_ACTIVE &&
            !w->op_running) {
            w->draining = false;
            lifecycle_event(e, ep, w, "undrain", "demand returned", t->inputs.data);
            need--;
        }
    }
    for (size_t k = 0; k < ep->nws && need > 0; k++) {
        struct worker *w = ep->ws[k];
        if (w->state == WS_STOPPED && !w->op_running && !retired(w) && now >= w->retry_after_mono) {
            w->intent = WI_ACTIVE;
            start_op(e, w, OP_START, out->reason, t->inputs.data);
            need--;
            t->inactive_now--;
        }
    }
    for (size_t k = 0; k < ep->nws && need > 0; k++) {
        struct worker *w = ep->ws[k];
        if (w->intent == WI_PARK && !retired(w) &&
            (pending_state(w->state) || (w->state == WS_IDLE && !w->op_running))) {
            w->intent = WI_ACTIVE;
            w->draining = false;
            w->dirty = true;
            lifecycle_event(e, ep, w, "activate", out->reason, t->inputs.data);
            need--;
            t->inactive_now--;
        }
    }
    while (need > 0 && (int)ep->nws < ep->p.max_workers && wg_can_create(g)) {
        struct worker *w = new_worker(e, ep, g, WI_ACTIVE);
        if (!w) break;
        start_op(e, w, OP_CREATE, out->reason, t->inputs.data);
        need--;
    }
}

/* 3. active surplus: pending ones park, then drain the least loaded ready workers */
static void tick_active_surplus(struct tick *t, int surplus)
{
    struct engine *e = t->e;
    struct endpoint *ep = t->ep;
    double now = t->now;
    const struct scaler_out *out = &t->out;
    for (size_t k = 0; k < ep->nws && surplus > 0; k++) {
        struct worker *w = ep->ws[k];
        if (w->intent == WI_ACTIVE && pending_state(w->state) && !retired(w)) {
            w->intent = WI_PARK;
            w->dirty = true;
            lifecycle_event(e, ep, w, "deactivate", out->reason, t->inputs.data);
            surplus--;
            t->inactive_now++;
        }
    }
    while (surplus > 0) {
        struct worker *victim = NULL;
        double vq = INFINITY;
        for (size_t k = 0; k < ep->nws; k++) {
            struct worker *w = ep->ws[k];
            if (!state_is_ready(w) || retired(w)) continue;
            double q = router_queue_time(w);
            if (!victim || q < vq || (q == vq && w->id > victim->id)) {
                victim = w;
                vq = q;
            }
        }
        if (!victim) break;
        victim->draining = true;
        victim->drain_since_mono = now;
        victim->dirty = true;
        lifecycle_event(e, ep, victim, "drain", out->reason, t->inputs.data);
        surplus--;
    }
}

/* 4. drained workers (and loaded parking workers): stop if inactive is short, else destroy */
static void tick_drained(struct tick *t)
{
    struct engine *e = t->e;
    struct endpoint *ep = t->ep;
    double now = t->now;
    const struct scaler_in *in = &t->in;
    const struct scaler_out *out = &t->out;
    for (size_t k = 0; k < ep->nws;) {
        struct worker *w = ep->ws[k];
        size_t before = ep->nws;
        bool parking = w->intent == WI_PARK && w->state == WS_IDLE && !w->draining && !retired(w);
        if (w->op_running || !(w->draining || parking || retired(w))) {
            k++;
            continue;
        }
        if (retired(w)) {
            destroy_retired(e, w, now, t->inputs.data);
        } else if (parking) {
            /* already counted in t->inactive_now */
            if (in->inactive_allowed && t->inactive_now <= out->i) {
                start_op(e, w, OP_STOP, "park", t->inputs.data);
            } else {
                t->inactive_now--;
                start_op(e, w, OP_DESTROY, "inactive surplus", t->inputs.data);
            }
        } else if (w->state == WS_IDLE || w->state == WS_UNAVAILABLE) {
            bool timed_out = now - w->drain_since_mono > e->opts.drain_timeout_s;
            if (drained(e, w, now) || timed_out || w->state == WS_UNAVAILABLE) {
                const char *why = timed_out && !drained(e, w, now) ? "drain_timeout" : "drained";
                if (in->inactive_allowed && w->state == WS_IDLE && t->inactive_now < out->i) {
                    t->inactive_now++;
                    start_op(e, w, OP_STOP, why, t->inputs.data);
                } else {
                    start_op(e, w, OP_DESTROY, why, t->inputs.data);
                }
            }
        }
        if (ep->nws == before) k++;
    }
}

/* 5. inactive short: create parking workers; surplus: destroy stopped ones */
static void tick_inactive(struct tick *t)
{
    struct engine *e = t->e;
    struct endpoint *ep = t->ep;
    struct workergroup *g = t->g;
    const struct scaler_out *out = &t->out;
    int need = out->i - t->inactive_now;
    while (need > 0 && (int)ep->nws < ep->p.max_workers && wg_can_create(g)) {
        struct worker *w = new_worker(e, ep, g, WI_PARK);
        if (!w) break;
        start_op(e, w, OP_CREATE, "inactive target", t->inputs.data);
        need--;
    }
    int surplus = t->inactive_now - out->i;
    for (size_t k = ep->nws; k-- > 0 && surplus > 0;) {
        struct worker *w = ep->ws[k];
        if (w->state == WS_STOPPED && !w->op_running && !retired(w)) {
            surplus--;
            start_op(e, w, OP_DESTROY, "inactive surplus", t->inputs.data);
            if (k > ep->nws) k = ep->nws;
        }
    }
}

/* The endpoint has no live workergroup: destroy its retired workers (drained, never served, or
 * past --drain-timeout-s). */
static void tick_retired_only(struct tick *t)
{
    struct endpoint *ep = t->ep;
    for (size_t k = 0; k < ep->nws;) {
        struct worker *w = ep->ws[k];
        size_t before = ep->nws;
        if (retired(w) && !w->op_running) destroy_retired(t->e, w, t->now, t->inputs.data);
        if (ep->nws == before) k++; /* else w was removed and ws[k] is another worker */
    }
}

static void tick_endpoint(struct engine *e, struct endpoint *ep, double now, double dt)
{
    router_expire(e, ep, now);
    struct tick t = {.e = e, .ep = ep, .now = now, .dt = dt, .inputs = SBUF_INIT};
    tick_demand(&t);
    t.g = state_wg_for_endpoint(e, ep->id);
    tick_observe(&t);
    tick_decide(&t);
    tick_replace_failed(&t);
    if (!t.g) {
        /* no live workergroup (it or the endpoint is being deleted): nothing to create, and the
         * steps below do not run, so destroy the retired workers here */
        tick_retired_only(&t);
    } else {
        tick_breaker_reset(&t);
        int active_now = t.in.ready + t.in.pending_active;
        t.inactive_now = t.in.stopped + t.in.pending_park;
        if (t.out.a > active_now)
            tick_active_short(&t, t.out.a - active_now);
        else if (t.out.a < active_now)
            tick_active_surplus(&t, active_now - t.out.a);
        tick_drained(&t);
        if (t.in.inactive_allowed) tick_inactive(&t);
    }
    sbuf_free(&t.inputs);
}

static const struct provider_events events = {.op_done = op_done,
                                              .instance_exited = instance_exited};

void lifecycle_init(void)
{
    provider_set_events(&events);
}

void lifecycle_tick(struct engine *e)
{
    double now = clock_mono();
    double dt = e->last_tick_mono > 0 ? now - e->last_tick_mono : e->opts.tick_ms / 1000.0;
    e->last_tick_mono = now;
    router_grants_expire(e, now);
    check_reports(e, now);
    for (struct endpoint *ep = e->endpoints, *n; ep; ep = n) {
        n = ep->next;
        tick_endpoint(e, ep, now, dt);
        router_kick(e, ep); /* undrain/activate/resume may have made room */
        if (ep->deleting && ep->nws == 0) {
            lifecycle_event(e, ep, NULL, "endpoint_deleted", "all workers gone", NULL);
            for (struct workergroup *g = e->wgs, *gn; g; g = gn) {
                gn = g->next;
                if (g->endpoint_id == ep->id) {
                    store_wg_delete(e->store, g->id);
                    state_wg_remove(e, g);
                }
            }
            store_endpoint_delete(e->store, ep->id);
            state_endpoint_remove(e, ep);
        }
    }
    for (struct workergroup *g = e->wgs, *gn; g; g = gn) {
        gn = g->next;
        if (!g->deleting) continue;
        bool any = false;
        for (struct worker *w = e->workers; w && !any; w = w->next)
            any = w->wg_id == g->id;
        if (!any) {
            store_wg_delete(e->store, g->id);
            state_wg_remove(e, g);
        }
    }
    for (struct worker *w = e->workers; w; w = w->next) {
        if (w->dirty) {
            store_worker_save(e->store, w);
            w->dirty = false;
        }
    }
    static unsigned trim;
    if (++trim % 512 == 0) store_events_trim(e->store, 20000);
    store_flush(e->store);
}

bool lifecycle_wake_parked(struct engine *e, struct endpoint *ep)
{
    if (e->stopping || ep->deleting) return false;
    for (size_t k = 0; k < ep->nws; k++)
        if (state_is_ready(ep->ws[k])) return false; /* busy workers: the scaler's call */
    struct worker *stopped = NULL;
    for (size_t k = 0; k < ep->nws; k++) {
        struct worker *w = ep->ws[k];
        if (retired(w) || w->op_running || w->draining) continue;
        if (w->state == WS_IDLE && w->intent == WI_PARK && w->max_perf > 0) {
            /* loaded and about to be parked: serve instead (the tick would do the same once
             * it sees the demand, one tick and one client poll later) */
            w->intent = WI_ACTIVE;
            w->dirty = true;
            lifecycle_event(e, ep, w, "activate", "request waiting, no ready worker", NULL);
            return true;
        }
        if (w->state == WS_STOPPED && !stopped && clock_mono() >= w->retry_after_mono) stopped = w;
    }
    if (!stopped) return false;
    struct workergroup *g = state_wg_by_id(e, stopped->wg_id);
    if (!g || !provider_can_park(g)) return false;
    stopped->intent = WI_ACTIVE;
    start_op(e, stopped, OP_START, "request waiting, no ready worker", NULL);
    /* local: resumed synchronously and routable now; command: ready on its next report */
    return state_is_ready(stopped);
}

void lifecycle_shutdown_begin(struct engine *e)
{
    e->stopping = true;
    router_release_all(e);
    for (struct worker *w = e->workers; w; w = w->next)
        provider_shutdown(e, w, e->opts.keep_workers);
    e->stop_deadline_mono = clock_mono() + e->opts.shutdown_timeout_s;
}

void lifecycle_shutdown(struct engine *e)
{
    if (!e->stopping) lifecycle_shutdown_begin(e);
    router_release_all(e);
    provider_shutdown_finish(e);
    for (struct worker *w = e->workers; w; w = w->next)
        store_worker_save(e->store, w);
    store_flush(e->store);
}
