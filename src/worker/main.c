/* sgpu-worker: start-up, signal handling, drain and shutdown.
 *
 * SIGTERM/SIGINT: stop admitting (503 + Retry-After), report max_perf 0 so the
 * engine stops routing here, let in-flight requests finish for up to
 * SGPU_DRAIN_TIMEOUT seconds, abort the rest, send a final report (and the
 * pending /delete_requests/), exit 0.  A second signal exits at once. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>

#include "httputil.h"
#include "log.h"
#include "worker.h"

static struct event *final_timer;

static void on_final_done(struct worker *w, void *arg)
{
    event_base_loopexit(w->base, NULL);
}

static void on_final_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    log_warn("final_report_timeout", "msg=\"exiting without confirmation\"");
    event_base_loopexit(w->base, NULL);
}

static void finalize(struct worker *w)
{
    if (w->final_report_sent) return;
    w->final_report_sent = true;
    if (w->drain_ev) evtimer_del(w->drain_ev);
    benchmark_stop(w);
    log_info("drained", "accepted=%llu", (unsigned long long)w->n_accepted);
    double t = w->cfg.report_timeout * (double)(w->cfg.nreport ? w->cfg.nreport : 1) + 1.0;
    struct timeval tv = {(time_t)t, (suseconds_t)((t - (double)(time_t)t) * 1e6)};
    final_timer = evtimer_new(w->base, on_final_timeout, w);
    evtimer_add(final_timer, &tv);
    report_final(w, on_final_done, NULL);
}

void worker_check_drained(struct worker *w)
{
    if (w->draining && w->nworking == 0) finalize(w);
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    log_warn("drain_timeout", "aborting=%d", w->nworking);
    wreq_abort_all(w);
    finalize(w);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct worker *w = arg;
    if (w->draining) {
        log_warn("second_signal", "msg=\"exiting now\"");
        event_base_loopexit(w->base, NULL);
        return;
    }
    log_info("draining", "signal=%d in_flight=%d timeout=%g", (int)sig, w->nworking,
             w->cfg.drain_timeout);
    w->draining = true;
    benchmark_stop(w);
    worker_set_phase(w, PH_DRAINING);
    report_now(w);
    w->drain_ev = evtimer_new(w->base, on_drain_timeout, w);
    double t = w->cfg.drain_timeout;
    struct timeval tv = {(time_t)t, (suseconds_t)((t - (double)(time_t)t) * 1e6)};
    evtimer_add(w->drain_ev, &tv);
    worker_check_drained(w);
}

int main(int argc, char **argv)
{
    static struct worker wk;
    struct worker *w = &wk;
    w->t_start_mono = time_mono();
    w->t_start_wall = time_wall();
    signal(SIGPIPE, SIG_IGN);
    log_init("worker", LOG_INFO);
    if (config_load(&w->cfg, argc, argv) != 0) return 2;
    bool port_from_env = false;
    {
        char pname[64];
        snprintf(pname, sizeof pname, "VAST_TCP_PORT_%d", w->cfg.port);
        port_from_env = getenv(pname) && *getenv(pname);
    }
    TAILQ_INIT(&w->working);
    w->base = http_base_new();
    if (!w->base) {
        fprintf(stderr, "sgpu-worker: cannot create the event base\n");
        return 1;
    }
    w->dns = evdns_base_new(w->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (!w->dns) w->dns = evdns_base_new(w->base, 0);
    w->metrics = metrics_new();
    status_metrics_init(w);
    if (handlers_init(w) != 0) return 2;
    w->auth = auth_new(&w->cfg);
    w->model = upstream_pool_new(w->base, w->dns, w->cfg.model_url, NULL);
    if (!w->model) {
        fprintf(stderr, "sgpu-worker: MODEL_SERVER_URL %s is unusable\n", w->cfg.model_url);
        return 2;
    }
    struct http_limits lim = {w->cfg.max_body, w->cfg.max_headers, (int)(w->cfg.idle_timeout + 0.5)};
    w->http = http_server_new(w->base, &lim);
    if (!w->http) return 1;
    evhttp_set_gencb(w->http, request_cb, w);
    if (listener_init(w) != 0) return 1;
    if (!port_from_env) /* reported url follows the bound port (ephemeral ports in tests) */
        snprintf(w->cfg.url, sizeof w->cfg.url, "%s://%.127s:%d", w->cfg.use_ssl ? "https" : "http",
                 w->cfg.public_ip, w->cfg.port);
    log_info("listening", "port=%d backend=%s model=%s scheme=%s unsecured=%d url=%s", w->cfg.port,
             w->cfg.backend, w->cfg.model_url,
             w->cfg.scheme == AUTH_URL ? "url" : w->cfg.scheme == AUTH_FIELDS_V2 ? "fields-v2" : "fields-v1",
             (int)w->cfg.unsecured, w->cfg.url);
    if (pubkey_init(w) != 0) return 2;
    if (report_init(w) != 0) return 1;
    if (lifecycle_init(w) != 0) return 1;
    w->sig_term = evsignal_new(w->base, SIGTERM, on_signal, w);
    w->sig_int = evsignal_new(w->base, SIGINT, on_signal, w);
    evsignal_add(w->sig_term, NULL);
    evsignal_add(w->sig_int, NULL);

    event_base_dispatch(w->base);

    /* orderly teardown (keeps ASan's leak check meaningful) */
    w->final_report_sent = true; /* nothing below may start a report */
    w->draining = false;
    benchmark_stop(w);
    wreq_abort_all(w);
    lifecycle_free(w);
    pubkey_free(w);
    report_free(w);
    upstream_pool_free(w->model);
    evhttp_free(w->http);
    listener_free(w);
    event_base_loop(w->base, EVLOOP_NONBLOCK); /* run deferred connection frees */
    if (final_timer) event_free(final_timer);
    if (w->drain_ev) event_free(w->drain_ev);
    event_free(w->sig_term);
    event_free(w->sig_int);
    auth_free(w->auth);
    handlers_free(w);
    metrics_free(w->metrics);
    if (w->dns) evdns_base_free(w->dns, 0);
    event_base_free(w->base);
    config_free(&w->cfg);
    log_info("exit", "code=%d", w->exit_code);
    return w->exit_code;
}
