/* sgpu-worker: start-up and shutdown (drain logic in drain.c, a request's life in request.c). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>

#include "auth.h"
#include "benchmark.h"
#include "clock.h"
#include "drain.h"
#include "handlers.h"
#include "httputil.h"
#include "lifecycle.h"
#include "listener.h"
#include "log.h"
#include "pubkey.h"
#include "report.h"
#include "request.h"
#include "session.h"
#include "status.h"
#include "worker.h"

/* VAST_TCP_PORT_<port> names the public port: then the reported url keeps it. */
static bool public_port_from_env(int port)
{
    char pname[64];
    snprintf(pname, sizeof pname, "VAST_TCP_PORT_%d", port);
    const char *v = getenv(pname);
    return v && *v;
}

static const char *scheme_name(enum auth_scheme s)
{
    return s == AUTH_URL ? "url" : s == AUTH_FIELDS_V2 ? "fields-v2" : "fields-v1";
}

/* Event base, resolver, metrics, route table, model pool, main listener.  Exit code on
 * failure, 0 on success. */
static int start_core(struct worker *w)
{
    w->base = http_base_new();
    if (!w->base) {
        fprintf(stderr, "sgpu-worker: cannot create the event base\n");
        return 1;
    }
    w->dns = evdns_base_new(w->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (!w->dns) w->dns = evdns_base_new(w->base, 0);
    w->metrics = metrics_new();
    status_metrics_init(w);
    if (benchmark_init(w) != 0) return 1;
    if (handlers_init(w) != 0) return 2;
    w->auth = auth_new(&w->cfg);
    w->model = upstream_pool_new(w->base, w->dns, w->cfg.model_url, NULL);
    if (!w->model) {
        fprintf(stderr, "sgpu-worker: MODEL_SERVER_URL %s is unusable\n", w->cfg.model_url);
        return 2;
    }
    if (request_init(w) != 0) return 1;
    struct http_limits lim = {w->cfg.max_body, w->cfg.max_headers,
                              (int)(w->cfg.idle_timeout + 0.5)};
    w->http = http_server_new(w->base, &lim);
    if (!w->http) return 1;
    evhttp_set_gencb(w->http, request_cb, w);
    if (listener_init(w) != 0) return 1;
    return 0;
}

/* Everything that runs on the loop: key, reports, sessions, phases, signals. */
static int start_modules(struct worker *w)
{
    if (pubkey_init(w) != 0) return 2;
    if (report_init(w) != 0) return 1;
    if (session_init(w) != 0) return 1;
    if (lifecycle_init(w) != 0) return 1;
    if (drain_init(w) != 0) return 1;
    return 0;
}

/* Orderly teardown (keeps ASan's leak check meaningful). */
static void shutdown_all(struct worker *w)
{
    w->final_report_sent = true; /* nothing below may start a report */
    w->draining = false;
    benchmark_stop(w);
    request_abort_all(w);
    session_free(w);
    lifecycle_free(w);
    pubkey_free(w);
    report_free(w);
    upstream_pool_free(w->model);
    evhttp_free(w->http);
    listener_free(w);
    event_base_loop(w->base, EVLOOP_NONBLOCK); /* run deferred connection frees */
    request_free(w);
    drain_free(w);
    benchmark_free(w);
    auth_free(w->auth);
    handlers_free(w);
    metrics_free(w->metrics);
    if (w->dns) evdns_base_free(w->dns, 0);
    event_base_free(w->base);
    config_free(&w->cfg);
}

int main(int argc, char **argv)
{
    static struct worker wk;
    struct worker *w = &wk;
    w->t_start_mono = clock_mono();
    w->t_start_wall = clock_wall();
    signal(SIGPIPE, SIG_IGN);
    log_init("worker", LOG_INFO);
    int crc = config_load(&w->cfg, argc, argv);
    if (crc != 0) return crc > 0 ? 0 : 2;
    bool port_from_env = public_port_from_env(w->cfg.port);
    TAILQ_INIT(&w->working);
    int rc = start_core(w);
    if (rc != 0) return rc;
    if (!port_from_env) /* reported url follows the bound port (ephemeral ports in tests) */
        config_set_url(&w->cfg, w->cfg.port);
    log_info("listening", "port=%d backend=%s model=%s scheme=%s unsecured=%d url=%s", w->cfg.port,
             w->cfg.backend, w->cfg.model_url, scheme_name(w->cfg.scheme), (int)w->cfg.unsecured,
             w->cfg.url);
    rc = start_modules(w);
    if (rc != 0) return rc;

    event_base_dispatch(w->base);

    shutdown_all(w);
    log_info("exit", "code=%d", w->exit_code);
    return w->exit_code;
}
