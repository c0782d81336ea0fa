/* Reports to the engine (docs/protocol.md §4).
 *
 * POST {addr}/worker_status/ with the v1 (12 fields, G1) or v3 (17 fields,
 * G2/G3) body, json.dumps-exact, at most 1 s after a change and at least every
 * SGPU_REPORT_INTERVAL seconds.  One send at a time, asynchronous on the loop
 * (B2); each REPORT_ADDR is tried in turn until one accepts (2xx).  Counters
 * are reset only after a successful send, and only by what that send carried
 * (B5); the disk baseline advances only on success (B24); v1 loadtime is
 * repeated until a send succeeds.  num_requests_recieved is a lifetime count,
 * not a set (B21).
 *
 * v3 also POSTs {addr}/delete_requests/ every second while finished requests
 * are pending: {"worker_id", "mtoken", "requests": [{"request_idx", "success",
 * "status", "entered_queue_at", "work_started_at", "work_completed_at"}]}.
 * Only requests whose grant verified are listed (B18).
 *
 * Issue 8: every load figure is finite and at most REPORT_NUM_MAX in the body
 * (the engine refuses reports with values over 1e15), and a report that every
 * address refused with a 4xx (not 408/429) is dropped - its counters are
 * reset as after a success, logged once - so one bad value can never jam the
 * worker's reports for good. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include <event2/buffer.h>

#include "clock.h"
#include "httputil.h"
#include "log.h"
#include "worker.h"

#define DONE_CAP 10000
#define DELETE_BATCH 1000
#define REPORT_NUM_MAX 1e12 /* largest load figure reported; the engine's own cost cap */

struct send_ctx {
    struct worker *w;
    bool is_status;
    size_t addr; /* index being tried */
    struct sbuf body;
    char path[32];
    struct counters snap; /* what this status report carried */
    double disk_used;
    bool carried_loadtime;
    size_t ndone; /* delete_requests entries carried */
    int refused;  /* 4xx status of an address that refused this body, or 0 */
};

static bool refused_logged; /* report_refused logged since the last accepted send */

static void (*final_cb)(struct worker *, void *);
static void *final_arg;
static bool final_pending;

static double disk_used_gib(void)
{
    struct statvfs s;
    if (statvfs("/", &s) != 0) return 0;
    return (double)(s.f_blocks - s.f_bfree) * (double)s.f_frsize / (double)(1ULL << 30);
}

static void put_float(struct sbuf *b, double v)
{
    char t[40];
    size_t n = pyj_format_float(v, t, sizeof t);
    sbuf_append(b, t, n);
}

/* A load figure: finite, >= 0, at most REPORT_NUM_MAX. */
static void put_load(struct worker *w, struct sbuf *b, double v, const char *what)
{
    put_float(b, wire_cap(w, v, REPORT_NUM_MAX, what));
}

static void put_str(struct sbuf *b, const char *s)
{
    pyj_write_string(b, s, strlen(s));
}

/* A v3 load counter as Vast's current worker writes it (docs/protocol.md §4.2): after a
 * successful report its counters are reset to the integer 0, and json.dumps writes an untouched
 * one as "0", not "0.0".  `zero_int` says the counter is such an untouched reset value. */
static void put_counter(struct worker *w, struct sbuf *b, double v, bool zero_int, const char *what)
{
    if (zero_int && v == 0.0)
        sbuf_putc(b, '0');
    else
        put_load(w, b, v, what);
}

/* loadtime as Vast's workers mean it (docs/protocol.md §4.2): seconds from start to ready (model
 * loaded and benchmarked, _model_loaded(max_throughput)).  v1 (G1): only in a report that also
 * carries max_perf > 0, once (repeated until a send succeeds); v3 (G3): 0.0 until ready, then
 * in every report. */
static double report_loadtime(const struct worker *w, bool v3, double maxp)
{
    if (w->t_ready <= 0) return 0.0;
    double lt = w->t_ready - w->t_start_wall;
    if (!(lt > 0)) lt = 1e-3; /* a clock step: still say "ready" */
    if (v3) return lt;
    return maxp > 0 && w->loadtime_pending ? lt : 0.0;
}

/* v1 cur_load: workload received (less cancelled) per second since the last successful report
 * (G1 divides by the time since its last report). */
static double report_v1_cur_load(const struct worker *w, double newl, double now)
{
    double el = now - (w->last_report_ok_mono > 0 ? w->last_report_ok_mono : w->t_start_mono);
    return el > 0 ? newl / el : 0.0;
}

static void build_status(struct worker *w, struct sbuf *b, double disk_used, bool *carried_loadtime)
{
    const struct wconfig *c = &w->cfg;
    double now = clock_mono();
    double newl = w->cur.received - w->cur.cancelled;
    if (newl < 0) newl = 0;
    /* max_perf is reported only once the worker admits requests: the engine
     * routes to any worker with max_perf > 0, so a worker that is still
     * loading, benchmarking, waiting for its first health probe or its key,
     * in error or draining reports 0. */
    double maxp = w->phase == PH_READY ? w->max_perf : 0.0;
    double disk = disk_used - w->disk_base_gib;
    bool v3 = c->report_fmt == REPORT_V3;
    double loadtime = report_loadtime(w, v3, maxp);
    *carried_loadtime = loadtime > 0;
    /* counters untouched since a successful reset are Python ints in G3's reports */
    bool reset = w->reports_ok > 0;
    sbuf_printf(b, "{\"id\": %lld, ", c->container_id);
    if (v3) {
        sbuf_puts(b, "\"mtoken\": ");
        put_str(b, c->master_token);
        sbuf_puts(b, ", \"version\": ");
        put_str(b, c->version);
        sbuf_puts(b, ", ");
    }
    sbuf_puts(b, "\"loadtime\": ");
    put_load(w, b, loadtime, "loadtime");
    sbuf_puts(b, ", \"cur_load\": ");
    double sload = w->session_load < session_cost_cap(w) ? w->session_load : session_cost_cap(w);
    if (v3) /* G3: sum over working requests, sum([]) == 0 when none */
        put_counter(w, b, w->working_load + sload, w->nworking + w->nsessions == 0, "cur_load");
    else
        put_load(w, b, report_v1_cur_load(w, newl, now), "cur_load");
    if (v3) {
        sbuf_puts(b, ", \"rej_load\": ");
        put_counter(w, b, w->cur.rejected, reset, "rej_load");
        sbuf_puts(b, ", \"new_load\": ");
        put_counter(w, b, newl, reset && w->cur.received == 0 && w->cur.cancelled == 0, "new_load");
    }
    sbuf_puts(b, ", \"error_msg\": ");
    put_str(b, w->error_msg);
    sbuf_puts(b, ", \"max_perf\": ");
    put_load(w, b, maxp, "max_perf");
    sbuf_puts(b, ", \"cur_perf\": ");
    if (v3)
        put_counter(w, b, w->cur.served, reset, "cur_perf");
    else /* G1: the last request's rate, kept across reports */
        put_load(w, b, w->last_req_perf, "cur_perf");
    sbuf_printf(b,
                ", \"cur_capacity\": 0, \"max_capacity\": 0, \"num_requests_working\": %d, "
                "\"num_requests_recieved\": %llu, \"additional_disk_usage\": ",
                w->nworking + w->nsessions, (unsigned long long)w->n_accepted);
    put_float(b, isfinite(disk) ? disk : 0.0);
    if (v3) {
        sbuf_puts(b, ", \"working_request_idxs\": [");
        bool first = true;
        struct wreq *wr;
        TAILQ_FOREACH(wr, &w->working, wlink)
        {
            // cppcheck-suppress uninitvar ; TAILQ_FOREACH is not understood
            if (!wr->has_idx) continue;
            sbuf_printf(b, first ? "%lld" : ", %lld", (long long)wr->request_idx);
            first = false;
        }
        session_report_idxs(w, b, &first);
        sbuf_putc(b, ']');
    }
    sbuf_puts(b, ", \"url\": ");
    put_str(b, c->url);
    sbuf_putc(b, '}');
}

void report_status_json(struct worker *w, struct sbuf *out)
{
    bool lt;
    build_status(w, out, disk_used_gib(), &lt);
}

static const char *outcome_status(enum outcome o)
{
    switch (o) {
    case OUT_SUCCESS:
        return "Success";
    case OUT_ERROR:
        return "Error";
    case OUT_CANCELLED:
        return "Cancelled";
    case OUT_REJECTED:
        return "Rejected";
    }
    return "Error";
}

static void build_delete(struct worker *w, struct sbuf *b, size_t n)
{
    sbuf_printf(b, "{\"worker_id\": %lld, \"mtoken\": ", w->cfg.container_id);
    put_str(b, w->cfg.master_token);
    sbuf_puts(b, ", \"requests\": [");
    for (size_t i = 0; i < n; i++) {
        const struct done_entry *d = &w->done[i];
        sbuf_printf(b,
                    "%s{\"request_idx\": %lld, \"success\": %s, \"status\": \"%s\", "
                    "\"entered_queue_at\": ",
                    i ? ", " : "", (long long)d->request_idx,
                    d->out == OUT_SUCCESS || d->out == OUT_CANCELLED ? "true" : "false",
                    outcome_status(d->out));
        put_float(b, d->t_enter);
        sbuf_puts(b, ", \"work_started_at\": ");
        put_float(b, d->t_start);
        sbuf_puts(b, ", \"work_completed_at\": ");
        put_float(b, d->t_done);
        sbuf_putc(b, '}');
    }
    sbuf_puts(b, "]}");
}

void report_request_done(struct worker *w, const struct wreq *wr, enum outcome out)
{
    if (w->cfg.report_fmt != REPORT_V3 || !wr->has_idx || w->cfg.nreport == 0) return;
    if (w->ndone == DONE_CAP) { /* bounded: drop the oldest */
        memmove(w->done, w->done + 1, (w->ndone - 1) * sizeof *w->done);
        w->ndone--;
    }
    if (w->ndone == w->capdone) {
        size_t nc = w->capdone ? w->capdone * 2 : 64;
        struct done_entry *nd = realloc(w->done, nc * sizeof *nd);
        if (!nd) abort();
        w->done = nd;
        w->capdone = nc;
    }
    w->done[w->ndone++] =
        (struct done_entry){wr->request_idx, out, wr->t_enter, wr->t_start, wr->t_done};
}

static void check_final(struct worker *w)
{
    if (final_pending && !w->report_in_flight && !w->delete_in_flight) {
        final_pending = false;
        if (final_cb) final_cb(w, final_arg);
    }
}

static void try_send(struct send_ctx *sc);

static void send_finished(struct send_ctx *sc, bool ok)
{
    struct worker *w = sc->w;
    if (!ok && sc->refused) {
        /* Refused, not failed: sending the same figures again would be refused again.
         * Drop what this body carried (as after a success) so later reports go through. */
        *w->m_reports_refused += 1;
        if (!refused_logged) {
            refused_logged = true;
            log_warn("report_refused",
                     "path=%s http=%d action=dropped (counters reset; logged once until a report "
                     "is accepted)",
                     sc->path, sc->refused);
        }
        if (sc->is_status) {
            w->report_in_flight = false;
            w->cur.received -= sc->snap.received;
            w->cur.served -= sc->snap.served;
            w->cur.errored -= sc->snap.errored;
            w->cur.cancelled -= sc->snap.cancelled;
            w->cur.rejected -= sc->snap.rejected;
            w->disk_base_gib = sc->disk_used;
            w->reports_failed++;
        } else {
            w->delete_in_flight = false;
            memmove(w->done, w->done + sc->ndone, (w->ndone - sc->ndone) * sizeof *w->done);
            w->ndone -= sc->ndone;
        }
        sbuf_free(&sc->body);
        free(sc);
        check_final(w);
        return;
    }
    if (ok) refused_logged = false;
    if (sc->is_status) {
        w->report_in_flight = false;
        if (ok) {
            w->cur.received -= sc->snap.received;
            w->cur.served -= sc->snap.served;
            w->cur.errored -= sc->snap.errored;
            w->cur.cancelled -= sc->snap.cancelled;
            w->cur.rejected -= sc->snap.rejected;
            if (fabs(w->cur.received) < 1e-9) w->cur.received = 0;
            if (fabs(w->cur.served) < 1e-9) w->cur.served = 0;
            if (fabs(w->cur.rejected) < 1e-9) w->cur.rejected = 0;
            if (fabs(w->cur.cancelled) < 1e-9) w->cur.cancelled = 0;
            w->disk_base_gib = sc->disk_used;
            if (sc->carried_loadtime) w->loadtime_pending = false;
            w->last_report_ok_mono = clock_mono();
            w->reports_ok++;
        } else {
            w->update_pending = true; /* retry at the next tick */
            w->reports_failed++;
        }
    } else {
        w->delete_in_flight = false;
        if (ok) {
            memmove(w->done, w->done + sc->ndone, (w->ndone - sc->ndone) * sizeof *w->done);
            w->ndone -= sc->ndone;
        }
    }
    if (!ok) log_warn("report_failed", "path=%s", sc->path);
    sbuf_free(&sc->body);
    free(sc);
    check_final(w);
}

static void on_done(struct upstream_req *u, int status, struct evbuffer *body, void *arg)
{
    struct send_ctx *sc = arg;
    if (status >= 200 && status < 300) {
        send_finished(sc, true);
        return;
    }
    log_debug("report_status", "path=%s addr=%zu http=%d", sc->path, sc->addr, status);
    if (status >= 400 && status < 500 && status != 408 && status != 429) sc->refused = status;
    sc->addr++;
    try_send(sc);
}

static void on_error(struct upstream_req *u, enum upstream_err e, const char *msg, void *arg)
{
    struct send_ctx *sc = arg;
    log_debug("report_error", "path=%s addr=%zu err=%s", sc->path, sc->addr, upstream_err_name(e));
    sc->addr++;
    try_send(sc);
}

static void try_send(struct send_ctx *sc)
{
    struct worker *w = sc->w;
    static const struct upstream_cbs cbs = {NULL, NULL, on_done, on_error};
    while (sc->addr < w->cfg.nreport) {
        struct upstream_pool *p = w->report_pools[sc->addr];
        const char *a = w->cfg.report_addrs[sc->addr];
        if (!p || (!sc->is_status && strncmp(a, "https://cloud.vast.ai/api/v0", 28) == 0)) {
            sc->addr++;
            continue;
        }
        struct http_url u;
        http_url_parse(a, &u);
        char path[1100];
        size_t l = strlen(u.path);
        while (l && u.path[l - 1] == '/')
            l--;
        snprintf(path, sizeof path, "%.*s%s", (int)l, u.path, sc->path);
        struct upstream_opts o = {.timeout_s = w->cfg.report_timeout, .max_buffered = 1 << 20};
        if (upstream_request(p, EVHTTP_REQ_POST, path, "application/json", sc->body.data,
                             sc->body.len, NULL, &o, &cbs, sc))
            return;
        sc->addr++;
    }
    send_finished(sc, false);
}

static void send_status(struct worker *w)
{
    struct send_ctx *sc = calloc(1, sizeof *sc);
    if (!sc) abort();
    sc->w = w;
    sc->is_status = true;
    snprintf(sc->path, sizeof sc->path, "/worker_status/");
    sc->snap = w->cur;
    sc->disk_used = disk_used_gib();
    build_status(w, &sc->body, sc->disk_used, &sc->carried_loadtime);
    log_debug("report_send", "body=%s", sc->body.data);
    w->report_in_flight = true;
    w->update_pending = false;
    w->last_report_mono = clock_mono();
    try_send(sc);
}

static void send_delete(struct worker *w)
{
    struct send_ctx *sc = calloc(1, sizeof *sc);
    if (!sc) abort();
    sc->w = w;
    snprintf(sc->path, sizeof sc->path, "/delete_requests/");
    sc->ndone = w->ndone < DELETE_BATCH ? w->ndone : DELETE_BATCH;
    build_delete(w, &sc->body, sc->ndone);
    w->delete_in_flight = true;
    try_send(sc);
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    if (w->cfg.nreport == 0) return;
    double now = clock_mono();
    double since = now - w->last_report_mono;
    bool loaded = w->phase != PH_LOADING && w->phase != PH_BENCHMARKING;
    if (!w->report_in_flight) {
        bool due = since >= w->cfg.report_interval;
        if (loaded && w->update_pending && since >= 1.0) due = true;
        if (due) send_status(w);
    }
    if (w->cfg.report_fmt == REPORT_V3 && w->ndone && !w->delete_in_flight) send_delete(w);
}

void report_now(struct worker *w)
{
    w->update_pending = true;
    if (w->cfg.nreport && !w->report_in_flight) send_status(w);
}

void report_final(struct worker *w, void (*done)(struct worker *, void *), void *arg)
{
    final_cb = done;
    final_arg = arg;
    final_pending = true;
    if (w->cfg.nreport) {
        if (!w->report_in_flight) send_status(w);
        if (w->cfg.report_fmt == REPORT_V3 && w->ndone && !w->delete_in_flight) send_delete(w);
    }
    check_final(w);
}

int report_init(struct worker *w)
{
    w->disk_base_gib = disk_used_gib();
    w->report_pools = calloc(w->cfg.nreport + 1, sizeof *w->report_pools);
    if (!w->report_pools) return -1;
    struct upstream_tls_opts tls = {w->cfg.engine_insecure,
                                    w->cfg.engine_ca[0] ? w->cfg.engine_ca : NULL};
    for (size_t i = 0; i < w->cfg.nreport; i++) {
        w->report_pools[i] = upstream_pool_new(w->base, w->dns, w->cfg.report_addrs[i], &tls);
        if (!w->report_pools[i])
            log_warn("report_addr_unusable", "addr=%s", w->cfg.report_addrs[i]);
        else
            upstream_pool_set_max_idle(w->report_pools[i], 2);
    }
    /* The first report goes out ~1 s after start (PyWorker: elapsed starts at 0). */
    w->last_report_mono = clock_mono() - w->cfg.report_interval + 1.0;
    double t = w->cfg.report_interval < 2.0 ? w->cfg.report_interval / 2 : 1.0;
    if (t > 1.0) t = 1.0;
    struct timeval tv = {(time_t)t, (suseconds_t)((t - (double)(time_t)t) * 1e6)};
    w->tick_ev = event_new(w->base, -1, EV_PERSIST, tick, w);
    if (!w->tick_ev) return -1;
    evtimer_add(w->tick_ev, &tv);
    return 0;
}

void report_free(struct worker *w)
{
    if (w->tick_ev) event_free(w->tick_ev);
    w->tick_ev = NULL;
    for (size_t i = 0; i < w->cfg.nreport && w->report_pools; i++)
        upstream_pool_free(w->report_pools[i]);
    free(w->report_pools);
    w->report_pools = NULL;
    free(w->done);
    w->done = NULL;
}
