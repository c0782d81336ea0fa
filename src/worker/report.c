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

#include "admission.h"
#include "clock.h"
#include "httputil.h"
#include "log.h"
#include "report.h"
#include "request.h"
#include "session.h"
#include "xalloc.h"

#define DONE_CAP 10000
#define DELETE_BATCH 1000
#define REPORT_NUM_MAX 1e12 /* largest load figure reported; the engine's own cost cap */

/* A finished request waiting for /delete_requests/ (times: wall s). */
struct done_entry {
    int64_t request_idx;
    enum outcome out;
    double t_enter, t_start, t_done;
};

struct report {
    struct upstream_pool **pools; /* one per REPORT_ADDR (NULL if unusable) */
    struct event *tick_ev;        /* 1 s: reports, delete_requests */
    double last_report_mono;      /* last status send started */
    double last_report_ok_mono;   /* last status send accepted */
    bool report_in_flight;
    bool delete_in_flight;
    double disk_base_gib;    /* disk use at the last accepted report (B24) */
    struct done_entry *done; /* finished requests not yet sent, oldest first */
    size_t ndone, capdone;
    uint64_t reports_ok, reports_failed;
    bool refused_logged; /* report_refused logged since the last accepted send */
    void (*final_cb)(struct worker *, void *); /* report_final's */
    void *final_arg;
    bool final_pending;
};

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

static double disk_used_gib(void)
{
    struct statvfs s;
    if (statvfs("/", &s) != 0) return 0;
    return (double)(s.f_blocks - s.f_bfree) * (double)s.f_frsize / (double)(1ULL << 30);
}

/* A load figure: finite, >= 0, at most REPORT_NUM_MAX. */
static void put_load(struct worker *w, struct sbuf *b, double v, const char *what)
{
    pyj_write_float(b, wire_cap(w, v, REPORT_NUM_MAX, what));
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
    const struct report *r = w->report;
    double el = now - (r->last_report_ok_mono > 0 ? r->last_report_ok_mono : w->t_start_mono);
    return el > 0 ? newl / el : 0.0;
}

/* v3 working_request_idxs: the verified request_idx of every working request, then of every
 * open session. */
static void put_working_idxs(struct worker *w, struct sbuf *b)
{
    sbuf_putc(b, '[');
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

static void build_status(struct worker *w, struct sbuf *b, double disk_used, bool *carried_loadtime)
{
    struct report *r = w->report;
    const struct wconfig *c = &w->cfg;
    double now = clock_mono();
    double newl = w->cur.received - w->cur.cancelled;
    if (newl < 0) newl = 0;
    /* max_perf is reported only once the worker admits requests: the engine
     * routes to any worker with max_perf > 0, so a worker that is still
     * loading, benchmarking, waiting for its first health probe or its key,
     * in error or draining reports 0. */
    double maxp = w->phase == PH_READY ? w->max_perf : 0.0;
    double disk = disk_used - r->disk_base_gib;
    bool v3 = c->report_fmt == REPORT_V3;
    double loadtime = report_loadtime(w, v3, maxp);
    *carried_loadtime = loadtime > 0;
    /* counters untouched since a successful reset are Python ints in G3's reports */
    bool reset = r->reports_ok > 0;
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
    double sload = session_report_load(w);
    int nsessions = session_count(w);
    if (v3) /* G3: sum over working requests, sum([]) == 0 when none */
        put_counter(w, b, w->working_load + sload, w->nworking + nsessions == 0, "cur_load");
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
                w->nworking + nsessions, (unsigned long long)w->n_accepted);
    pyj_write_float(b, isfinite(disk) ? disk : 0.0);
    if (v3) {
        sbuf_puts(b, ", \"working_request_idxs\": ");
        put_working_idxs(w, b);
    }
    sbuf_puts(b, ", \"url\": ");
    put_str(b, c->url);
    sbuf_putc(b, '}');
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
    struct report *r = w->report;
    sbuf_printf(b, "{\"worker_id\": %lld, \"mtoken\": ", w->cfg.container_id);
    put_str(b, w->cfg.master_token);
    sbuf_puts(b, ", \"requests\": [");
    for (size_t i = 0; i < n; i++) {
        const struct done_entry *d = &r->done[i];
        sbuf_printf(b,
                    "%s{\"request_idx\": %lld, \"success\": %s, \"status\": \"%s\", "
                    "\"entered_queue_at\": ",
                    i ? ", " : "", (long long)d->request_idx,
                    d->out == OUT_SUCCESS || d->out == OUT_CANCELLED ? "true" : "false",
                    outcome_status(d->out));
        pyj_write_float(b, d->t_enter);
        sbuf_puts(b, ", \"work_started_at\": ");
        pyj_write_float(b, d->t_start);
        sbuf_puts(b, ", \"work_completed_at\": ");
        pyj_write_float(b, d->t_done);
        sbuf_putc(b, '}');
    }
    sbuf_puts(b, "]}");
}

void report_request_done(struct worker *w, int64_t request_idx, enum outcome out, double t_enter,
                         double t_start, double t_done)
{
    struct report *r = w->report;
    if (w->cfg.report_fmt != REPORT_V3 || w->cfg.nreport == 0 || !r) return;
    if (r->ndone == DONE_CAP) { /* bounded: drop the oldest */
        memmove(r->done, r->done + 1, (r->ndone - 1) * sizeof *r->done);
        r->ndone--;
    }
    if (r->ndone == r->capdone) {
        r->capdone = r->capdone ? r->capdone * 2 : 64;
        r->done = xreallocarray(r->done, r->capdone, sizeof *r->done);
    }
    r->done[r->ndone++] = (struct done_entry){request_idx, out, t_enter, t_start, t_done};
}

void report_counts(const struct worker *w, uint64_t *ok, uint64_t *failed, size_t *pending)
{
    const struct report *r = w->report;
    *ok = r ? r->reports_ok : 0;
    *failed = r ? r->reports_failed : 0;
    *pending = r ? r->ndone : 0;
}

static void check_final(struct worker *w)
{
    struct report *r = w->report;
    if (r->final_pending && !r->report_in_flight && !r->delete_in_flight) {
        r->final_pending = false;
        if (r->final_cb) r->final_cb(w, r->final_arg);
    }
}

static void try_send(struct send_ctx *sc);

/* What a status body carried is no longer owed: the counters less its snapshot (B5), the disk
 * baseline advanced (B24). */
static void drop_status_carried(struct worker *w, const struct send_ctx *sc)
{
    struct report *r = w->report;
    w->cur.received -= sc->snap.received;
    w->cur.served -= sc->snap.served;
    w->cur.errored -= sc->snap.errored;
    w->cur.cancelled -= sc->snap.cancelled;
    w->cur.rejected -= sc->snap.rejected;
    r->disk_base_gib = sc->disk_used;
}

/* The first n finished requests were sent (or refused for good). */
static void drop_done_carried(struct report *r, size_t n)
{
    memmove(r->done, r->done + n, (r->ndone - n) * sizeof *r->done);
    r->ndone -= n;
}

/* A send ended: accepted (ok), refused (4xx from every address: dropped, as accepted), or
 * failed (kept for the next tick). */
static void send_finished(struct send_ctx *sc, bool ok)
{
    struct worker *w = sc->w;
    struct report *r = w->report;
    bool refused = !ok && sc->refused;
    if (refused) {
        /* Refused, not failed: sending the same figures again would be refused again.
         * Drop what this body carried (as after a success) so later reports go through. */
        *w->m_reports_refused += 1;
        if (!r->refused_logged) {
            r->refused_logged = true;
            log_warn("report_refused",
                     "path=%s http=%d action=dropped (counters reset; logged once until a report "
                     "is accepted)",
                     sc->path, sc->refused);
        }
    } else if (ok) {
        r->refused_logged = false;
    }
    if (sc->is_status) {
        r->report_in_flight = false;
        if (ok || refused) drop_status_carried(w, sc);
        if (ok) {
            if (fabs(w->cur.received) < 1e-9) w->cur.received = 0;
            if (fabs(w->cur.served) < 1e-9) w->cur.served = 0;
            if (fabs(w->cur.rejected) < 1e-9) w->cur.rejected = 0;
            if (fabs(w->cur.cancelled) < 1e-9) w->cur.cancelled = 0;
            if (sc->carried_loadtime) w->loadtime_pending = false;
            r->last_report_ok_mono = clock_mono();
            r->reports_ok++;
        } else {
            if (!refused) w->update_pending = true; /* retry at the next tick */
            r->reports_failed++;
        }
    } else {
        r->delete_in_flight = false;
        if (ok || refused) drop_done_carried(r, sc->ndone);
    }
    if (!ok && !refused) log_warn("report_failed", "path=%s", sc->path);
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
    struct report *r = w->report;
    static const struct upstream_cbs cbs = {NULL, NULL, on_done, on_error};
    while (sc->addr < w->cfg.nreport) {
        struct upstream_pool *p = r->pools[sc->addr];
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
    struct report *r = w->report;
    struct send_ctx *sc = xcalloc(1, sizeof *sc);
    sc->w = w;
    sc->is_status = true;
    snprintf(sc->path, sizeof sc->path, "/worker_status/");
    sc->snap = w->cur;
    sc->disk_used = disk_used_gib();
    build_status(w, &sc->body, sc->disk_used, &sc->carried_loadtime);
    log_debug("report_send", "body=%s", sc->body.data);
    r->report_in_flight = true;
    w->update_pending = false;
    r->last_report_mono = clock_mono();
    try_send(sc);
}

static void send_delete(struct worker *w)
{
    struct report *r = w->report;
    struct send_ctx *sc = xcalloc(1, sizeof *sc);
    sc->w = w;
    snprintf(sc->path, sizeof sc->path, "/delete_requests/");
    sc->ndone = r->ndone < DELETE_BATCH ? r->ndone : DELETE_BATCH;
    build_delete(w, &sc->body, sc->ndone);
    r->delete_in_flight = true;
    try_send(sc);
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct report *r = w->report;
    if (w->cfg.nreport == 0) return;
    double now = clock_mono();
    double since = now - r->last_report_mono;
    bool loaded = w->phase != PH_LOADING && w->phase != PH_BENCHMARKING;
    if (!r->report_in_flight) {
        bool due = since >= w->cfg.report_interval;
        if (loaded && w->update_pending && since >= 1.0) due = true;
        if (due) send_status(w);
    }
    if (w->cfg.report_fmt == REPORT_V3 && r->ndone && !r->delete_in_flight) send_delete(w);
}

void report_now(struct worker *w)
{
    struct report *r = w->report;
    if (!r) return;
    w->update_pending = true;
    if (w->cfg.nreport && !r->report_in_flight) send_status(w);
}

void report_final(struct worker *w, void (*done)(struct worker *, void *), void *arg)
{
    struct report *r = w->report;
    r->final_cb = done;
    r->final_arg = arg;
    r->final_pending = true;
    if (w->cfg.nreport) {
        if (!r->report_in_flight) send_status(w);
        if (w->cfg.report_fmt == REPORT_V3 && r->ndone && !r->delete_in_flight) send_delete(w);
    }
    check_final(w);
}

int report_init(struct worker *w)
{
    struct report *r = xcalloc(1, sizeof *r);
    w->report = r;
    r->disk_base_gib = disk_used_gib();
    r->pools = xcalloc(w->cfg.nreport + 1, sizeof *r->pools);
    struct upstream_tls_opts tls = {w->cfg.engine_insecure,
                                    w->cfg.engine_ca[0] ? w->cfg.engine_ca : NULL};
    for (size_t i = 0; i < w->cfg.nreport; i++) {
        r->pools[i] = upstream_pool_new(w->base, w->dns, w->cfg.report_addrs[i], &tls);
        if (!r->pools[i])
            log_warn("report_addr_unusable", "addr=%s", w->cfg.report_addrs[i]);
        else
            upstream_pool_set_max_idle(r->pools[i], 2);
    }
    /* The first report goes out ~1 s after start (PyWorker: elapsed starts at 0). */
    r->last_report_mono = clock_mono() - w->cfg.report_interval + 1.0;
    double t = w->cfg.report_interval < 2.0 ? w->cfg.report_interval / 2 : 1.0;
    if (t > 1.0) t = 1.0;
    struct timeval tv = clock_tv(t);
    r->tick_ev = event_new(w->base, -1, EV_PERSIST, tick, w);
    if (!r->tick_ev) return -1;
    evtimer_add(r->tick_ev, &tv);
    return 0;
}

void report_free(struct worker *w)
{
    struct report *r = w->report;
    if (!r) return;
    if (r->tick_ev) event_free(r->tick_ev);
    for (size_t i = 0; i < w->cfg.nreport && r->pools; i++)
        upstream_pool_free(r->pools[i]);
    free(r->pools);
    free(r->done);
    free(r);
    w->report = NULL;
}
