/* Registry of endpoints, workergroups and workers; state names; JSON of each object. */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "clock.h"
#include "emetrics.h"
#include "engine.h"
#include "httputil.h"
#include "idmap.h"
#include "lifecycle.h"
#include "log.h"
#include "providers/provider.h"
#include "pyjson.h"
#include "router.h"
#include "state.h"
#include "store.h"
#include "timeseries.h"
#include "xalloc.h"

static const char *const state_names[WS__COUNT] = {
    "creating", "loading",  "model_loading", "idle",        "stopping",
    "stopped",  "starting", "error",         "unavailable", "destroying",
};

const char *state_name(enum wstate s)
{
    return (s >= 0 && s < WS__COUNT) ? state_names[s] : "unknown";
}

bool state_is_ready(const struct worker *w)
{
    return w->state == WS_IDLE && !w->draining && w->max_perf > 0 && w->intent == WI_ACTIVE &&
           !w->retired;
}

struct endpoint *state_endpoint_by_name(struct engine *e, const char *name)
{
    for (struct endpoint *ep = e->endpoints; ep; ep = ep->next)
        if (!ep->deleting && strcmp(ep->name, name) == 0) return ep;
    return NULL;
}

struct endpoint *state_endpoint_by_id(struct engine *e, int64_t id)
{
    for (struct endpoint *ep = e->endpoints; ep; ep = ep->next)
        if (ep->id == id) return ep;
    return NULL;
}

struct workergroup *state_wg_by_id(struct engine *e, int64_t id)
{
    for (struct workergroup *g = e->wgs; g; g = g->next)
        if (g->id == id) return g;
    return NULL;
}

struct workergroup *state_wg_for_endpoint(struct engine *e, int64_t endpoint_id)
{
    /* the oldest live group of the endpoint (lists are kept in creation order) */
    for (struct workergroup *g = e->wgs; g; g = g->next)
        if (g->endpoint_id == endpoint_id && !g->deleting) return g;
    return NULL;
}

struct worker *state_worker_by_id(struct engine *e, int64_t id)
{
    return idmap_get(e->worker_by_id, id);
}

struct endpoint *state_endpoint_add(struct engine *e, struct endpoint *ep)
{
    struct endpoint **pp = &e->endpoints;
    while (*pp)
        pp = &(*pp)->next;
    *pp = ep;
    ep->next = NULL;
    if (ep->id >= e->next_endpoint_id) {
        e->next_endpoint_id = ep->id + 1;
        char v[32]; /* ids are never reused, also after a deletion and a restart */
        snprintf(v, sizeof v, "%lld", (long long)e->next_endpoint_id);
        if (e->store) store_meta_set(e->store, "next_endpoint_id", v);
    }
    emetrics_endpoint(e, ep);
    return ep;
}

void state_endpoint_remove(struct engine *e, struct endpoint *ep)
{
    for (struct endpoint **pp = &e->endpoints; *pp; pp = &(*pp)->next) {
        if (*pp == ep) {
            *pp = ep->next;
            break;
        }
    }
    router_queue_clear(ep);
    for (int s = 0; s < WS__COUNT; s++)
        if (ep->g_workers[s]) *ep->g_workers[s] = 0;
    if (ep->g_qlen) *ep->g_qlen = 0;
    free(ep->ws);
    ts_free(ep->ts);
    free(ep->kpa);
    free(ep);
}

struct workergroup *state_wg_add(struct engine *e, struct workergroup *g)
{
    struct workergroup **pp = &e->wgs;
    while (*pp)
        pp = &(*pp)->next;
    *pp = g;
    g->next = NULL;
    if (g->id >= e->next_wg_id) {
        e->next_wg_id = g->id + 1;
        char v[32];
        snprintf(v, sizeof v, "%lld", (long long)e->next_wg_id);
        if (e->store) store_meta_set(e->store, "next_wg_id", v);
    }
    return g;
}

void state_wg_remove(struct engine *e, struct workergroup *g)
{
    for (struct workergroup **pp = &e->wgs; *pp; pp = &(*pp)->next) {
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    }
    json_object_put(g->launch);
    free(g);
}

struct worker *state_worker_add(struct engine *e, struct worker *w)
{
    w->next = e->workers;
    e->workers = w;
    idmap_put(e->worker_by_id, w->id, w);
    if (w->id >= e->next_worker_id) e->next_worker_id = w->id + 1;
    struct endpoint *ep = state_endpoint_by_id(e, w->endpoint_id);
    if (ep) {
        if (ep->nws == ep->capws) {
            ep->capws = ep->capws ? ep->capws * 2 : 8;
            struct worker **n = xrealloc(ep->ws, ep->capws * sizeof *n);
            ep->ws = n;
        }
        ep->ws[ep->nws++] = w;
        ep->had_worker = true;
    }
    return w;
}

void state_worker_remove(struct engine *e, struct worker *w)
{
    for (struct worker **pp = &e->workers; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
    idmap_del(e->worker_by_id, w->id);
    struct endpoint *ep = state_endpoint_by_id(e, w->endpoint_id);
    if (ep) {
        for (size_t i = 0; i < ep->nws; i++) {
            if (ep->ws[i] == w) {
                ep->ws[i] = ep->ws[--ep->nws];
                break;
            }
        }
    }
    free(w->sig_url);
    free(w->sig_b64);
    free(w);
}

void state_set(struct engine *e, struct worker *w, enum wstate s, const char *why)
{
    if (w->state == s) return;
    enum wstate old = w->state;
    w->state = s;
    w->state_since_mono = clock_mono();
    w->dirty = true;
    if (s == WS_IDLE && w->loaded_at == 0) w->loaded_at = clock_wall();
    char inputs[256];
    snprintf(inputs, sizeof inputs, "{\"from\": \"%s\", \"to\": \"%s\"}", state_name(old),
             state_name(s));
    struct endpoint *ep = state_endpoint_by_id(e, w->endpoint_id);
    lifecycle_event(e, ep, w, "state", why, inputs);
    if (s == WS_IDLE && ep) router_kick(e, ep); /* a worker became ready */
}

int state_random_hex(char *out, size_t n)
{
    unsigned char raw[64];
    size_t nb = (n + 1) / 2;
    if (nb > sizeof raw) return -1;
    size_t got = 0;
    while (got < nb) {
        ssize_t r = getrandom(raw + got, nb - got, 0);
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++)
        out[i] = hx[(raw[i / 2] >> ((i & 1) ? 0 : 4)) & 15];
    out[n] = '\0';
    return 0;
}

static void put_f(struct sbuf *out, const char *key, double v, bool comma)
{
    char buf[40];
    if (!isfinite(v)) v = 0;
    pyj_format_float(v, buf, sizeof buf);
    sbuf_printf(out, "%s\"%s\": %s", comma ? ", " : "", key, buf);
}

static void put_s(struct sbuf *out, const char *key, const char *v)
{
    sbuf_printf(out, ", \"%s\": ", key);
    pyj_write_string(out, v, strlen(v));
}

void state_worker_json(struct engine *e, const struct worker *w, struct sbuf *out)
{
    double now = clock_mono();
    sbuf_printf(out, "{\"id\": %lld, \"endpoint_id\": %lld, \"workergroup_id\": %lld",
                (long long)w->id, (long long)w->endpoint_id, (long long)w->wg_id);
    put_s(out, "status", state_name(w->state));
    put_s(out, "url", w->url);
    put_f(out, "cur_load", w->cur_load, true);
    put_f(out, "cur_load_rolling_avg", w->load_avg, true);
    put_f(out, "cur_perf", w->cur_perf, true);
    put_f(out, "new_load", w->new_load, true);
    put_f(out, "measured_perf", w->max_perf, true);
    put_f(out, "perf", w->max_perf, true);
    put_f(out, "dlperf", w->max_perf, true);
    put_f(out, "reliability", 1.0, true);
    sbuf_printf(out, ", \"reqs_working\": %lld", (long long)w->num_working);
    put_f(out, "disk_usage", w->disk_usage, true);
    put_f(out, "loaded_at", w->loaded_at, true);
    put_f(out, "started_at", w->started_at, true);
    put_f(out, "created_at", w->created_at, true);
    double last = w->last_report_mono > 0 ? clock_wall() - (now - w->last_report_mono) : 0;
    if (w->last_report_mono <= 0 && w->last_report_wall > 0) last = w->last_report_wall;
    put_f(out, "last_report_at", last, true);
    put_f(out, "queue_time", isfinite(router_queue_time(w)) ? router_queue_time(w) : -1, true);
    put_s(out, "error_msg", w->error_msg);
    sbuf_printf(out, ", \"reqnum\": %lld, \"draining\": %s", (long long)w->reqnum,
                w->draining ? "true" : "false");
    put_s(out, "intent", w->intent == WI_PARK ? "park" : "active");
    put_s(out, "version", w->version);
    put_s(out, "instance", w->instance);
    sbuf_putc(out, '}');
    (void)e;
}

void state_endpoint_json(struct engine *e, const struct endpoint *ep, struct sbuf *out)
{
    sbuf_printf(out, "{\"id\": %lld, \"endpoint_name\": ", (long long)ep->id);
    pyj_write_string(out, ep->name, strlen(ep->name));
    sbuf_puts(out, ", ");
    config_params_write(&ep->p, out);
    sbuf_printf(out, ", \"api_key\": \"%s\", \"endpoint_state\": \"%s\"", ep->api_key,
                ep->deleting ? "deleting" : "active");
    put_f(out, "created_at", ep->created_at, true);
    /* what Vast's SDK Endpoint data class also reads (docs/engine.md Management API): sgpu has
     * one user, the holder of the admin key */
    sbuf_printf(out,
                ", \"user_id\": %d, \"auto_delete_in_seconds\": null, "
                "\"auto_delete_due_24h\": false",
                STATE_USER_ID);
    sbuf_printf(out,
                ", \"workers\": %zu, \"queue_length\": %zu, \"active_target\": %d, "
                "\"inactive_target\": %d",
                ep->nws, router_queue_len(ep), ep->last_a, ep->last_i);
    put_f(out, "predicted_load", ep->lam_fast > ep->lam_slow ? ep->lam_fast : ep->lam_slow, true);
    put_f(out, "perf_estimate", ep->perf_est, true);
    /* the state of the workergroup that creates its workers (failing: see last_error) */
    const struct workergroup *g = state_wg_for_endpoint(e, ep->id);
    put_s(out, "workergroup_state", !g ? "none" : g->failing ? "failing" : "active");
    put_s(out, "last_error", g ? g->last_error : "");
    sbuf_putc(out, '}');
}

void state_wg_json(struct engine *e, const struct workergroup *g, struct sbuf *out)
{
    struct endpoint *ep = state_endpoint_by_id(e, g->endpoint_id);
    sbuf_printf(out, "{\"id\": %lld, \"endpoint_id\": %lld, \"endpoint_name\": ", (long long)g->id,
                (long long)g->endpoint_id);
    const char *n = ep ? ep->name : "";
    pyj_write_string(out, n, strlen(n));
    sbuf_printf(out, ", \"provider\": \"%s\", \"launch\": %s, \"test_workers\": %d", g->ops->name,
                json_object_to_json_string_ext(g->launch, JSON_C_TO_STRING_PLAIN |
                                                              JSON_C_TO_STRING_NOSLASHESCAPE),
                g->test_workers);
    put_f(out, "gpu_ram", g->gpu_ram, true);
    put_f(out, "created_at", g->created_at, true);
    sbuf_printf(out, ", \"state\": \"%s\", \"failures\": %d",
                g->deleting  ? "deleting"
                : g->failing ? "failing"
                             : "active",
                g->fails);
    put_s(out, "last_error", g->last_error);
    double wait = g->create_after - clock_mono();
    put_f(out, "backoff_s", g->failing || wait < 0 ? 0 : wait, true);
    sbuf_putc(out, '}');
}
