/* The engine's Prometheus series (docs/engine.md "Metrics"). */
#include <stdio.h>

#include "emetrics.h"
#include "engine.h"
#include "lifecycle.h"
#include "metrics.h"
#include "state.h"

static const double route_bounds[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                      0.005,   0.01,   0.025,   0.05,   0.1};

void emetrics_init(struct engine *e)
{
    struct metrics *m = metrics_new();
    e->metrics = m;
    e->c_routes_granted = metrics_counter(m, "sgpu_engine_routes_total{result=\"granted\"}",
                                          "Calls of /route/ by result");
    e->c_routes_queued = metrics_counter(m, "sgpu_engine_routes_total{result=\"queued\"}",
                                         "Calls of /route/ by result");
    e->c_routes_error = metrics_counter(m, "sgpu_engine_routes_total{result=\"error\"}",
                                        "Calls of /route/ by result");
    for (int i = 0; i < 3; i++) {
        char n[128];
        snprintf(n, sizeof n, "sgpu_engine_signatures_total{scheme=\"%s\"}",
                 config_scheme_name((enum sig_scheme)i));
        e->c_sign[i] = metrics_counter(m, n, "RSA signatures computed");
    }
    e->c_reports =
        metrics_counter(m, "sgpu_engine_worker_reports_total", "Accepted /worker_status/ reports");
    e->c_deletes = metrics_counter(m, "sgpu_engine_delete_requests_total",
                                   "Request ids closed through /delete_requests/");
    e->c_deletes_foreign =
        metrics_counter(m, "sgpu_engine_delete_requests_foreign_total",
                        "/delete_requests/ ids of grants issued to another worker (left open)");
    for (int i = 0; i < LIFECYCLE_NACTIONS; i++) {
        char n[128];
        snprintf(n, sizeof n, "sgpu_engine_scale_actions_total{action=\"%s\"}",
                 lifecycle_actions[i]);
        e->c_actions[i] = metrics_counter(m, n, "Scaling actions and decisions");
    }
    static const char *const kinds[] = {"create", "start", "exited", "error", "not_ready"};
    for (int i = 0; i < 5; i++) {
        char n[128];
        snprintf(n, sizeof n, "sgpu_engine_instance_failures_total{kind=\"%s\"}", kinds[i]);
        e->c_failures[i] = metrics_counter(m, n, "Instance failures counted for back-off");
    }
    e->h_route = metrics_histogram(m, "sgpu_engine_route_seconds", "Time to answer /route/",
                                   route_bounds, sizeof route_bounds / sizeof route_bounds[0]);
    static const double wait_bounds[] = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
    e->h_qwait = metrics_histogram(m, "sgpu_engine_queue_wait_seconds",
                                   "Time requests waited in the global queue before a grant",
                                   wait_bounds, sizeof wait_bounds / sizeof wait_bounds[0]);
}

void emetrics_endpoint(struct engine *e, struct endpoint *ep)
{
    if (!e->metrics) return;
    char n[256];
    for (int s = 0; s < WS__COUNT; s++) {
        snprintf(n, sizeof n, "sgpu_engine_workers{endpoint=\"%s\",state=\"%s\"}", ep->name,
                 state_name((enum wstate)s));
        ep->g_workers[s] = metrics_gauge(e->metrics, n, "Workers by state");
    }
    snprintf(n, sizeof n, "sgpu_engine_queue_length{endpoint=\"%s\"}", ep->name);
    ep->g_qlen = metrics_gauge(e->metrics, n, "Requests waiting in the global queue");
    snprintf(n, sizeof n, "sgpu_engine_predicted_load{endpoint=\"%s\"}", ep->name);
    ep->g_load = metrics_gauge(e->metrics, n, "Predicted demand (workload/s)");
    snprintf(n, sizeof n, "sgpu_engine_active_target{endpoint=\"%s\"}", ep->name);
    ep->g_atarget = metrics_gauge(e->metrics, n, "Active worker target");
    snprintf(n, sizeof n, "sgpu_engine_inactive_target{endpoint=\"%s\"}", ep->name);
    ep->g_itarget = metrics_gauge(e->metrics, n, "Inactive worker target");
}
