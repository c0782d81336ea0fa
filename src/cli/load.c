/* sgpu load: open-loop load through the engine.
 *
 * Request i is started at t0 + i/rps whatever happened to earlier ones (open
 * loop: a slow system gets more requests in flight, as real clients do), each
 * one a full routed request (rcall: route, waiting polls, worker call,
 * retries).  Bounded in count (-n), sending time (--duration), total time
 * (--max-time: in-flight requests are cancelled and counted as timeouts) and
 * concurrency (--max-in-flight: beyond it a due request is skipped and
 * counted, never queued).  A one-line progress display on stderr is rewritten
 * twice a second; the summary goes to stderr, or as JSON to stdout (--json). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "clock.h"
#include "httputil.h"
#include "opts.h"
#include "xalloc.h"

#define MAX_WORKERS 256

struct wstat {
    char url[256];
    long n;
};

struct load {
    struct event_base *base;
    struct hclient *hc;
    struct rcall_opts ro;
    long n, sent, inflight, ok, skipped;
    long err_route, err_status, err_midstream, err_timeout;
    long waited, retried;
    double rps, duration, max_time;
    long max_inflight;
    double t0;
    double *lat, *ttfb, *grant; /* per completed-ok request, seconds */
    long nlat;
    struct wstat workers[MAX_WORKERS];
    int nworkers;
    unsigned long long bytes;
    struct event *send_ev, *progress_ev, *stop_ev;
    bool tty, stopping, done;
    struct lreq *live; /* list of in-flight requests (for cancel at --max-time) */
    char last_err[512];
};

struct lreq {
    struct load *l;
    struct rcall *rc;
    struct lreq *prev, *next;
};

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a copy of v[0..n). */
static double pct(const double *v, long n, double p)
{
    if (n == 0) return 0;
    double *t = malloc((size_t)n * sizeof *t);
    if (!t) return 0;
    memcpy(t, v, (size_t)n * sizeof *t);
    qsort(t, (size_t)n, sizeof *t, cmp_d);
    long k = (long)ceil(p / 100.0 * (double)n) - 1;
    if (k < 0) k = 0;
    if (k >= n) k = n - 1;
    double r = t[k];
    free(t);
    return r;
}

static int cmp_w(const void *a, const void *b)
{
    const struct wstat *x = a, *y = b;
    return x->n < y->n ? 1 : x->n > y->n ? -1 : strcmp(x->url, y->url);
}

static void maybe_done(struct load *l);

static void lreq_unlink(struct lreq *q)
{
    struct load *l = q->l;
    if (q->prev)
        q->prev->next = q->next;
    else
        l->live = q->next;
    if (q->next) q->next->prev = q->prev;
}

static void on_chunk(void *arg, const char *p, size_t n)
{
    struct lreq *q = arg;
    q->l->bytes += n;
}

static void on_done(void *arg, const struct rcall_result *r)
{
    struct lreq *q = arg;
    struct load *l = q->l;
    lreq_unlink(q);
    free(q);
    l->inflight--;
    if (r->waits > 0) l->waited++;
    if (r->attempts > 1) l->retried++;
    if (r->worker_url[0] && r->fail == RC_OK) {
        int i;
        for (i = 0; i < l->nworkers; i++)
            if (strcmp(l->workers[i].url, r->worker_url) == 0) break;
        if (i == l->nworkers && l->nworkers < MAX_WORKERS) {
            snprintf(l->workers[i].url, sizeof l->workers[i].url, "%s", r->worker_url);
            l->nworkers++;
        }
        if (i < l->nworkers) l->workers[i].n++;
    }
    switch (r->fail) {
    case RC_OK:
        l->ok++;
        l->lat[l->nlat] = r->t_total;
        l->ttfb[l->nlat] = r->t_first_byte;
        l->grant[l->nlat] = r->t_grant;
        l->nlat++;
        break;
    case RC_ROUTE:
        l->err_route++;
        break;
    case RC_STATUS:
        l->err_status++;
        break;
    case RC_MIDSTREAM:
        l->err_midstream++;
        break;
    default:
        l->err_timeout++;
        break;
    }
    if (r->fail != RC_OK) snprintf(l->last_err, sizeof l->last_err, "%s", r->msg);
    maybe_done(l);
}

static void progress(struct load *l, bool final)
{
    long errs = l->err_route + l->err_status + l->err_midstream + l->err_timeout;
    char spread[256] = "";
    if (l->nworkers > 0) {
        struct wstat tmp[MAX_WORKERS];
        memcpy(tmp, l->workers, (size_t)l->nworkers * sizeof tmp[0]);
        qsort(tmp, (size_t)l->nworkers, sizeof tmp[0], cmp_w);
        size_t o = 0;
        o += (size_t)snprintf(spread + o, sizeof spread - o, " workers %d [", l->nworkers);
        for (int i = 0; i < l->nworkers && i < 6 && o < sizeof spread - 16; i++)
            o += (size_t)snprintf(spread + o, sizeof spread - o, "%s%ld", i ? "/" : "", tmp[i].n);
        snprintf(spread + o, sizeof spread - o, "%s]", l->nworkers > 6 ? "/..." : "");
    }
    fprintf(stderr, "%ssent %ld/%ld  inflight %ld  done %ld  errors %ld%s  p50 %.3fs p99 %.3fs%s%s",
            l->tty ? "\r\033[K" : "", l->sent, l->n, l->inflight, l->ok, errs,
            l->skipped ? " (skipped)" : "", pct(l->lat, l->nlat, 50), pct(l->lat, l->nlat, 99),
            spread, (l->tty && !final) ? "" : "\n");
    fflush(stderr);
}

static void progress_cb(evutil_socket_t fd, short ev, void *arg)
{
    struct load *l = arg;
    progress(l, false);
}

static void start_one(struct load *l)
{
    l->sent++;
    if (l->inflight >= l->max_inflight) {
        l->skipped++;
        return;
    }
    struct lreq *q = calloc(1, sizeof *q);
    if (!q) {
        l->skipped++;
        return;
    }
    q->l = l;
    struct rcall_opts ro = l->ro;
    ro.arg = q;
    double left = l->max_time - (clock_mono() - l->t0);
    if (ro.max_time > left) ro.max_time = left > 0.01 ? left : 0.01;
    q->next = l->live;
    if (l->live) l->live->prev = q;
    l->live = q;
    l->inflight++;
    q->rc = rcall_start(l->base, l->hc, &ro);
    if (!q->rc) {
        lreq_unlink(q);
        free(q);
        l->inflight--;
        l->skipped++;
    }
}

static void send_cb(evutil_socket_t fd, short ev, void *arg)
{
    struct load *l = arg;
    if (l->stopping) return;
    double now = clock_mono() - l->t0;
    while (l->sent < l->n && (double)l->sent / l->rps <= now &&
           (l->duration <= 0 || (double)l->sent / l->rps < l->duration))
        start_one(l);
    bool more = l->sent < l->n && (l->duration <= 0 || (double)l->sent / l->rps < l->duration);
    if (more) {
        double next = (double)l->sent / l->rps - (clock_mono() - l->t0);
        if (next < 0) next = 0;
        struct timeval tv = clock_tv(next);
        evtimer_add(l->send_ev, &tv);
    } else {
        l->n = l->sent; /* --duration ended the sending early */
        maybe_done(l);
    }
}

static void stop_cb(evutil_socket_t fd, short ev, void *arg)
{
    struct load *l = arg;
    l->stopping = true;
    while (l->live) {
        struct lreq *q = l->live;
        lreq_unlink(q);
        rcall_cancel(q->rc);
        free(q);
        l->inflight--;
        l->err_timeout++;
    }
    snprintf(l->last_err, sizeof l->last_err, "--max-time reached; in-flight requests cancelled");
    l->n = l->sent;
    maybe_done(l);
}

static void maybe_done(struct load *l)
{
    if (l->done) return;
    if ((l->sent >= l->n || l->stopping) && l->inflight == 0) {
        l->done = true;
        event_base_loopexit(l->base, NULL);
    }
}

struct load_opts {
    struct cli_req_opts rq;
    long long n;
    double rps, duration, max_time;
    long long max_inflight;
    bool json;
};

#define AT(f) OPT_AT(struct load_opts, f)
static const struct opt rows[] = {
    /* -n only, as getopt's "n:" had it */
    {.short_name = 'n',
     .type = OPT_I64,
     AT(n),
     .lo = 1,
     .hi = 1e7,
     .def = "100",
     .meta = "N",
     .help = "requests to send"},
    {.name = "rps",
     .type = OPT_DBL,
     AT(rps),
     .lo = 1e-6,
     .hi = 1e7,
     .def = "10",
     .meta = "R",
     .help = "offered rate, requests/s"},
    {.name = "duration",
     .type = OPT_DBL,
     AT(duration),
     .lo = 0,
     .hi = 1e7,
     .meta = "S",
     .help = "stop sending after S seconds",
     .def_help = "when N are sent"},
    {.name = "max-time",
     .type = OPT_DBL,
     AT(max_time),
     .lo = 0,
     .hi = 1e7,
     .meta = "S",
     .help = "hard stop: cancel what is still in flight",
     .def_help = "sending time + 120 s"},
    {.name = "max-in-flight",
     .type = OPT_I64,
     AT(max_inflight),
     .lo = 1,
     .hi = 1e9,
     .def = "1000",
     .meta = "N",
     .help = "a due request is skipped (counted) beyond N in flight"},
    CLI_REQ_ROWS(struct load_opts, rq),
    {.name = "json", .type = OPT_FLAG, AT(json), .help = "print the summary as JSON on stdout"},
};
#undef AT

static const struct opts_spec spec = {"sgpu load", rows, sizeof rows / sizeof rows[0], OPTS_PREFIX};

static void load_usage(FILE *f)
{
    fputs(
        "usage: sgpu load --endpoint NAME -n N --rps R [--route /generate] --data JSON [options]\n"
        "\n"
        "Open-loop load through the engine: request i starts at i/R seconds, each routed and\n"
        "called exactly like `sgpu call` (waiting polls, re-routes, retries).  Live progress\n"
        "on stderr: sent, in flight, done, errors, p50/p99 latency, requests per worker.\n"
        "\n",
        f);
    opts_usage(&spec, f);
    fputs("Exit status 0 when every request succeeded, 1 otherwise.\n", f);
}

/* Options, payload, event loop and per-request arrays.  0, or the exit status. */
static int load_setup(struct load *l, struct cli_common *c, const struct load_opts *o,
                      struct sbuf *payload)
{
    if (!o->rq.endpoint || !o->rq.data) {
        fprintf(stderr, "sgpu load: --endpoint and --data are required\n");
        return 2;
    }
    l->n = (long)o->n;
    l->rps = o->rps;
    l->duration = o->duration;
    l->max_time = o->max_time;
    l->max_inflight = (long)o->max_inflight;
    if (cli_read_data(o->rq.data, payload) != 0) return 2;
    char jerr[256];
    if (!cli_json_valid(payload->data ? payload->data : "", payload->len, jerr, sizeof jerr)) {
        fprintf(stderr, "sgpu load: --data is not valid JSON: %s\n", jerr);
        return 2;
    }
    double send_time = (double)l->n / l->rps;
    if (l->duration > 0 && l->duration < send_time) send_time = l->duration;
    if (l->max_time <= 0) l->max_time = send_time + 120;

    l->lat = xcalloc((size_t)l->n, sizeof(double));
    l->ttfb = xcalloc((size_t)l->n, sizeof(double));
    l->grant = xcalloc((size_t)l->n, sizeof(double));
    l->base = event_base_new();
    struct hclient_tls_opts tls = {.insecure = c->insecure, .ca_file = c->cacert};
    l->hc = l->base ? hclient_new(l->base, &tls) : NULL;
    if (!l->hc) {
        fprintf(stderr, "sgpu load: cannot create the event loop\n");
        return 1;
    }
    l->tty = isatty(STDERR_FILENO);
    l->ro = (struct rcall_opts){
        .engine = c->engine,
        .endpoint = o->rq.endpoint,
        .api_key = c->api_key,
        .route = o->rq.route    ? o->rq.route
                 : o->rq.stream ? "/generate_stream"
                                : "/generate",
        .payload = payload->data,
        .payload_len = payload->len,
        .cost = o->rq.cost,
        .max_time = l->max_time,
        .worker_timeout = o->rq.timeout,
        .max_attempts = o->rq.max_attempts,
        .first_poll_s = -1,
        .on_chunk = on_chunk,
        .on_done = on_done,
    };
    return 0;
}

/* Sends and waits until done (or --max-time); returns the elapsed seconds. */
static double load_run(struct load *l)
{
    l->send_ev = xnonnull(evtimer_new(l->base, send_cb, l));
    l->progress_ev = xnonnull(event_new(l->base, -1, EV_PERSIST, progress_cb, l));
    l->stop_ev = xnonnull(evtimer_new(l->base, stop_cb, l));
    struct timeval ptv = clock_tv(l->tty ? 0.5 : 2);
    event_add(l->progress_ev, &ptv);
    struct timeval stv = clock_tv(l->max_time);
    evtimer_add(l->stop_ev, &stv);
    l->t0 = clock_mono();
    struct timeval zero = clock_tv(0);
    evtimer_add(l->send_ev, &zero);
    event_base_dispatch(l->base);
    double elapsed = clock_mono() - l->t0;
    progress(l, true);
    return elapsed;
}

static long load_errors(const struct load *l)
{
    return l->err_route + l->err_status + l->err_midstream + l->err_timeout;
}

static void load_report_json(struct load *l, double elapsed, FILE *out)
{
    fprintf(out,
            "{\"sent\": %ld, \"ok\": %ld, \"errors\": %ld, \"skipped\": %ld, "
            "\"errors_by_kind\": {\"route\": %ld, \"status\": %ld, \"midstream\": %ld, "
            "\"timeout\": %ld}, \"waited\": %ld, \"retried\": %ld, \"elapsed_s\": %.3f, "
            "\"offered_rps\": %.3f, \"achieved_rps\": %.3f, \"bytes\": %llu, "
            "\"latency_s\": {\"p50\": %.6f, \"p90\": %.6f, \"p99\": %.6f, \"max\": %.6f}, "
            "\"first_byte_s\": {\"p50\": %.6f, \"p99\": %.6f}, "
            "\"grant_s\": {\"p50\": %.6f, \"p99\": %.6f}, \"workers\": {",
            l->sent, l->ok, load_errors(l), l->skipped, l->err_route, l->err_status,
            l->err_midstream, l->err_timeout, l->waited, l->retried, elapsed, l->rps,
            elapsed > 0 ? (double)l->ok / elapsed : 0, l->bytes, pct(l->lat, l->nlat, 50),
            pct(l->lat, l->nlat, 90), pct(l->lat, l->nlat, 99), pct(l->lat, l->nlat, 100),
            pct(l->ttfb, l->nlat, 50), pct(l->ttfb, l->nlat, 99), pct(l->grant, l->nlat, 50),
            pct(l->grant, l->nlat, 99));
    for (int i = 0; i < l->nworkers; i++)
        fprintf(out, "%s\"%s\": %ld", i ? ", " : "", l->workers[i].url, l->workers[i].n);
    fprintf(out, "}}\n");
}

static void load_report_text(struct load *l, double elapsed, FILE *out)
{
    long errs = load_errors(l);
    fprintf(out, "sgpu load: %ld requests in %.2f s: %ld ok (%.1f/s achieved, %.1f/s offered)\n",
            l->sent, elapsed, l->ok, elapsed > 0 ? (double)l->ok / elapsed : 0, l->rps);
    fprintf(out,
            "  errors %ld (route %ld, worker status %ld, mid-stream %ld, timeout %ld), "
            "skipped %ld\n",
            errs, l->err_route, l->err_status, l->err_midstream, l->err_timeout, l->skipped);
    fprintf(out, "  latency    p50 %.3fs  p90 %.3fs  p99 %.3fs  max %.3fs\n",
            pct(l->lat, l->nlat, 50), pct(l->lat, l->nlat, 90), pct(l->lat, l->nlat, 99),
            pct(l->lat, l->nlat, 100));
    fprintf(out, "  first byte p50 %.3fs  p99 %.3fs;  grant p50 %.3fs  p99 %.3fs\n",
            pct(l->ttfb, l->nlat, 50), pct(l->ttfb, l->nlat, 99), pct(l->grant, l->nlat, 50),
            pct(l->grant, l->nlat, 99));
    fprintf(out, "  %ld waited for a worker (global queue), %ld needed more than one attempt\n",
            l->waited, l->retried);
    for (int i = 0; i < l->nworkers; i++)
        fprintf(out, "  worker %-40s %6ld  %5.1f%%\n", l->workers[i].url, l->workers[i].n,
                l->ok ? 100.0 * (double)l->workers[i].n / (double)l->ok : 0);
    if (errs && l->last_err[0]) fprintf(out, "  last error: %s\n", l->last_err);
}

static void load_free(struct load *l)
{
    if (l->send_ev) event_free(l->send_ev);
    if (l->progress_ev) event_free(l->progress_ev);
    if (l->stop_ev) event_free(l->stop_ev);
    hclient_free(l->hc);
    if (l->base) event_base_free(l->base);
    free(l->lat);
    free(l->ttfb);
    free(l->grant);
}

int cmd_load(struct cli_common *c, int argc, char **argv)
{
    struct load_opts o = {0};
    struct opts_result r;
    int rc = cli_parse(&spec, &o, argc, argv, &r, load_usage);
    opts_result_free(&r); /* positional arguments are ignored, as they always were */
    if (rc) return rc == 1 ? 0 : 2;
    struct load l = {0};
    struct sbuf payload = SBUF_INIT;
    rc = load_setup(&l, c, &o, &payload);
    if (rc == 0) {
        double elapsed = load_run(&l);
        qsort(l.workers, (size_t)l.nworkers, sizeof l.workers[0], cmp_w);
        if (o.json)
            load_report_json(&l, elapsed, stdout);
        else
            load_report_text(&l, elapsed, stderr);
        rc = load_errors(&l) || l.skipped ? 1 : 0;
    }
    load_free(&l);
    sbuf_free(&payload);
    return rc;
}
