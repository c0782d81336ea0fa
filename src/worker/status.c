/* Worker-local endpoints (GET): /ping ("pong", as G1 PyWorker), /health (200
 * only when ready), /status (JSON snapshot), /metrics (Prometheus). */
#include <string.h>

#include "benchmark.h"
#include "handlers.h"
#include "httputil.h"
#include "lifecycle.h"
#include "log.h"
#include "pubkey.h"
#include "reply.h"
#include "report.h"
#include "status.h"

/* /status sections, in the order they appear. */
static void status_phase(const struct worker *w, struct sbuf *b)
{
    sbuf_puts(b, "\"phase\": ");
    const char *ph = phase_name(w->phase);
    pyj_write_string(b, ph, strlen(ph));
    sbuf_puts(b, ", \"version\": \"" SGPU_WORKER_VERSION "\", \"started_at\": ");
    pyj_write_float(b, w->t_start_wall);
    sbuf_puts(b, ", \"loaded_at\": ");
    pyj_write_float(b, w->t_loaded);
    sbuf_puts(b, ", \"ready_at\": ");
    pyj_write_float(b, w->t_ready);
    sbuf_puts(b, ", \"error_at\": ");
    pyj_write_float(b, w->t_error);
    sbuf_puts(b, ", \"loadtime\": ");
    pyj_write_float(b, w->loadtime);
    sbuf_puts(b, ", \"max_perf\": ");
    pyj_write_float(b, w->max_perf);
    sbuf_puts(b, ", \"last_error\": ");
    pyj_write_string(b, w->error_msg, strlen(w->error_msg));
    /* how max_perf was obtained; fallback: the benchmark's cause (docs/worker.md Lifecycle) */
    sbuf_puts(b, ", \"benchmark\": ");
    benchmark_status_json(w, b);
}

static void status_auth(const struct worker *w, struct sbuf *b)
{
    sbuf_printf(b, "\"auth\": {\"scheme\": \"%s\", \"unsecured\": %s, \"pubkey\": %s",
                w->cfg.scheme == AUTH_URL         ? "url"
                : w->cfg.scheme == AUTH_FIELDS_V2 ? "fields-v2"
                                                  : "fields-v1",
                w->cfg.unsecured ? "true" : "false", pubkey_key(w->pubkey) ? "true" : "false");
    if (pubkey_key(w->pubkey))
        sbuf_printf(b, ", \"pubkey_sha256\": \"%s\"", pubkey_fingerprint(w->pubkey));
    sbuf_putc(b, '}');
}

/* Lifetime counts by outcome, the working load and each handler's FIFO. */
static void status_requests(const struct worker *w, struct sbuf *b)
{
    sbuf_printf(b,
                "\"requests\": {\"working\": %d, \"accepted\": %llu, \"success\": %llu, "
                "\"error\": %llu, \"cancelled\": %llu, \"rejected\": %llu}",
                w->nworking, (unsigned long long)w->n_accepted,
                (unsigned long long)w->n_out[OUT_SUCCESS], (unsigned long long)w->n_out[OUT_ERROR],
                (unsigned long long)w->n_out[OUT_CANCELLED],
                (unsigned long long)w->n_out[OUT_REJECTED]);
    sbuf_puts(b, ", \"working_load\": ");
    pyj_write_float(b, w->working_load);
    sbuf_puts(b, ", \"queue\": {");
    for (size_t i = 0; i < w->nhandlers; i++) {
        const struct handler *h = &w->handlers[i];
        if (i) sbuf_puts(b, ", ");
        pyj_write_string(b, h->route, strlen(h->route));
        sbuf_printf(b, ": {\"parallel\": %s, \"queued\": %d, \"running\": %d}",
                    h->parallel ? "true" : "false", h->nqueued, h->running);
    }
    sbuf_putc(b, '}');
}

/* Reports sent and the workload counters the next one carries. */
static void status_reports(const struct worker *w, struct sbuf *b)
{
    uint64_t ok, failed;
    size_t pending;
    report_counts(w, &ok, &failed, &pending);
    sbuf_printf(b, "\"reports\": {\"ok\": %llu, \"failed\": %llu, \"pending_deletes\": %zu}",
                (unsigned long long)ok, (unsigned long long)failed, pending);
    sbuf_puts(b, ", \"counters\": {\"received\": ");
    pyj_write_float(b, w->cur.received);
    sbuf_puts(b, ", \"served\": ");
    pyj_write_float(b, w->cur.served);
    sbuf_puts(b, ", \"errored\": ");
    pyj_write_float(b, w->cur.errored);
    sbuf_puts(b, ", \"cancelled\": ");
    pyj_write_float(b, w->cur.cancelled);
    sbuf_puts(b, ", \"rejected\": ");
    pyj_write_float(b, w->cur.rejected);
    sbuf_putc(b, '}');
}

static void status_json(const struct worker *w, struct sbuf *b)
{
    sbuf_putc(b, '{');
    status_phase(w, b);
    sbuf_puts(b, ", ");
    status_auth(w, b);
    sbuf_puts(b, ", ");
    status_requests(w, b);
    sbuf_puts(b, ", ");
    status_reports(w, b);
    sbuf_putc(b, '}');
}

static void refresh(void *arg)
{
    struct worker *w = arg;
    *w->m_working = w->nworking;
    int q = 0;
    for (size_t i = 0; i < w->nhandlers; i++)
        q += w->handlers[i].nqueued;
    *w->m_queued = q;
    *w->m_max_perf = w->max_perf;
    *w->m_phase = (double)w->phase;
}

void status_metrics_init(struct worker *w)
{
    struct metrics *m = w->metrics;
    w->m_req_total[OUT_SUCCESS] = metrics_counter(
        m, "sgpu_worker_requests_total{outcome=\"success\"}", "Requests by outcome");
    w->m_req_total[OUT_ERROR] =
        metrics_counter(m, "sgpu_worker_requests_total{outcome=\"error\"}", "Requests by outcome");
    w->m_req_total[OUT_CANCELLED] = metrics_counter(
        m, "sgpu_worker_requests_total{outcome=\"cancelled\"}", "Requests by outcome");
    w->m_req_total[OUT_REJECTED] = metrics_counter(
        m, "sgpu_worker_requests_total{outcome=\"rejected\"}", "Requests by outcome");
    w->m_req_total[4] =
        metrics_counter(m, "sgpu_worker_requests_total{outcome=\"other\"}", "Requests by outcome");
    w->m_status_401 = metrics_counter(m, "sgpu_worker_replies_total{status=\"401\"}",
                                      "Replies produced by the worker itself");
    w->m_status_422 = metrics_counter(m, "sgpu_worker_replies_total{status=\"422\"}",
                                      "Replies produced by the worker itself");
    w->m_status_429 = metrics_counter(m, "sgpu_worker_replies_total{status=\"429\"}",
                                      "Replies produced by the worker itself");
    w->m_status_503 = metrics_counter(m, "sgpu_worker_replies_total{status=\"503\"}",
                                      "Replies produced by the worker itself");
    w->m_status_502 = metrics_counter(m, "sgpu_worker_replies_total{status=\"502\"}",
                                      "Replies produced by the worker itself");
    w->m_grant_wrong_url =
        metrics_counter(m, "sgpu_worker_grants_refused_total{reason=\"wrong_worker\"}",
                        "Grants issued for another worker (url) or endpoint: 401 JSON");
    w->m_grant_wrong_endpoint =
        metrics_counter(m, "sgpu_worker_grants_refused_total{reason=\"wrong_endpoint\"}",
                        "Grants issued for another worker (url) or endpoint: 401 JSON");
    w->m_workload_capped =
        metrics_counter(m, "sgpu_worker_numbers_capped_total",
                        "Workloads and grant costs from the wire clamped to SGPU_MAX_WORKLOAD or "
                        "the session bound");
    w->m_reports_refused =
        metrics_counter(m, "sgpu_worker_reports_refused_total",
                        "Reports the engine refused (4xx): their counters were dropped");
    w->m_phase = metrics_gauge(m, "sgpu_worker_phase",
                               "0 loading, 1 benchmarking, 2 ready, 3 error, 4 draining");
    w->m_working = metrics_gauge(m, "sgpu_worker_requests_working", "Requests queued or running");
    w->m_queued = metrics_gauge(m, "sgpu_worker_requests_queued", "Requests waiting in FIFOs");
    w->m_max_perf = metrics_gauge(m, "sgpu_worker_max_perf", "Benchmark result (workload/s)");
    static const double bounds[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300};
    w->m_latency = metrics_histogram(m, "sgpu_worker_request_seconds",
                                     "Time from admission to the end of the answer", bounds,
                                     sizeof bounds / sizeof bounds[0]);
    metrics_on_render(m, refresh, w);
}

static void get_ping(struct worker *w, struct evhttp_request *req)
{
    reply_text(req, 200, "pong");
}

static void get_health(struct worker *w, struct evhttp_request *req)
{
    struct sbuf b = SBUF_INIT;
    bool ok = w->phase == PH_READY;
    sbuf_printf(&b, "{\"status\": \"%s\"}", phase_name(w->phase));
    reply_json(req, ok ? 200 : 503, NULL, b.data, b.len);
    sbuf_free(&b);
}

static void get_status(struct worker *w, struct evhttp_request *req)
{
    struct sbuf b = SBUF_INIT;
    status_json(w, &b);
    reply_json(req, 200, NULL, b.data, b.len);
    sbuf_free(&b);
}

static void get_metrics(struct worker *w, struct evhttp_request *req)
{
    struct sbuf b = SBUF_INIT;
    metrics_render(w->metrics, &b);
    http_reply(req, 200, "text/plain; version=0.0.4", b.data, b.len);
    sbuf_free(&b);
}

/* The worker-local routes: GET and HEAD. */
static const struct {
    const char *path;
    void (*fn)(struct worker *w, struct evhttp_request *req);
} status_routes[] = {
    {"/ping", get_ping},
    {"/health", get_health},
    {"/status", get_status},
    {"/metrics", get_metrics},
};

int status_handle(struct worker *w, struct evhttp_request *req, const char *path)
{
    size_t n = sizeof status_routes / sizeof status_routes[0], k = 0;
    while (k < n && strcmp(path, status_routes[k].path) != 0)
        k++;
    if (k == n) return 0;
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD) {
        /* a generic backend forwards POST /health etc. like any other path */
        if (w->generic) return 0;
        reply_method_not_allowed(req, "GET, HEAD");
        return 1;
    }
    status_routes[k].fn(w, req);
    return 1;
}
