/* sgpu-gateway: options, start-up, signals.  See gateway.h and docs/gateway.md. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "clock.h"
#include "gateway.h"
#include "httputil.h"
#include "log.h"
#include "opts.h"

static int parse_listen(void *cfg, const char *v, char *why, size_t n)
{
    struct gw_config *c = cfg;
    const char *colon = strrchr(v, ':');
    long long port;
    if (!colon || colon - v >= (long)sizeof c->host)
        return snprintf(why, n, "expected HOST:PORT"), -1;
    if (opts_parse_ll(colon + 1, 0, 65535, &port, why, n)) return -1;
    snprintf(c->host, sizeof c->host, "%.*s", (int)(colon - v), v);
    c->port = (int)port;
    return 0;
}

static int parse_log_level(void *cfg, const char *v, char *why, size_t n)
{
    struct gw_config *c = cfg;
    enum log_level l;
    if (log_parse_level(v, &l) != 0 || strlen(v) >= sizeof c->log_level)
        return snprintf(why, n, "expected debug, info, warn or error"), -1;
    snprintf(c->log_level, sizeof c->log_level, "%s", v);
    return 0;
}

/* engine discovery: the flag or SGPU_ENGINE, else <data-dir>/engine.addr, else the default */

#define AT(f) OPT_AT(struct gw_config, f)
#define BUF(f) OPT_BUF(struct gw_config, f)
enum { R_ENGINE, R_DATA_DIR }; /* the first two rows: read from opts_result.val */

static const struct opt rows[] = {
    [R_ENGINE] = {.name = "engine",
                  .env = "SGPU_ENGINE",
                  .type = OPT_RAW,
                  .meta = "URL",
                  .help = "engine base URL",
                  .def_help = "$SGPU_ENGINE, else the address in <data-dir>/engine.addr, else "
                              "http://127.0.0.1:8080"},
    [R_DATA_DIR] = {.name = "data-dir",
                    .env = "SGPU_DATA_DIR",
                    .type = OPT_RAW,
                    .meta = "DIR",
                    .help = "engine data directory to read engine.addr from",
                    .def_help = "$SGPU_DATA_DIR, else ./sgpu-data"},
    {.name = "listen",
     .type = OPT_FUNC,
     .parse = parse_listen,
     .def = "127.0.0.1:8000",
     .meta = "HOST:PORT",
     .help = "listen address (port 0 = ephemeral)"},
    {.name = "addr-file",
     BUF(addr_file),
     .meta = "FILE",
     .help = "write the bound base URL (http://HOST:PORT) to FILE"},
    {.name = "tls-cert",
     BUF(tls_cert),
     .meta = "FILE",
     .help = "serve HTTPS with this certificate chain (PEM) ..."},
    {.name = "tls-key", BUF(tls_key), .meta = "FILE", .help = "... and this private key (PEM)"},
    {.name = "cacert",
     BUF(cacert),
     .meta = "FILE",
     .help = "extra CA bundle to verify an https engine and workers"},
    {.name = "insecure",
     .type = OPT_FLAG,
     AT(insecure),
     .help = "do not verify engine/worker certificates"},
    {.name = "max-body",
     .type = OPT_SIZE,
     AT(max_body),
     .lo = 1024,
     .hi = 1 << 30,
     .def = "16777216",
     .meta = "BYTES",
     .help = "request body limit"},
    {.name = "max-connections",
     .type = OPT_INT,
     AT(max_connections),
     .lo = 16,
     .hi = 1 << 20,
     .def = "4096",
     .meta = "N",
     .help = "open client connections; at the cap the oldest idle one is closed (clamped to (fd "
             "limit - 64) / 2)"},
    {.name = "max-inflight",
     .type = OPT_INT,
     AT(max_inflight),
     .lo = 1,
     .hi = 1 << 20,
     .def = "4096",
     .meta = "N",
     .help = "requests in progress before 503 overloaded"},
    {.name = "route-timeout",
     .type = OPT_DBL,
     AT(route_timeout),
     .lo = 0.1,
     .hi = 86400,
     .def = "60",
     .meta = "S",
     .help = "longest wait for a worker before 503"},
    {.name = "request-timeout",
     .type = OPT_DBL,
     AT(request_timeout),
     .lo = 0,
     .hi = 86400 * 7,
     .def = "0",
     .meta = "S",
     .help = "whole request deadline, 0 = none"},
    {.name = "idle-timeout",
     .type = OPT_DBL,
     AT(idle_timeout),
     .lo = 1,
     .hi = 86400,
     .def = "300",
     .meta = "S",
     .help = "client / upstream inactivity limit"},
    {.name = "header-timeout",
     .type = OPT_DBL,
     AT(header_timeout),
     .lo = 1,
     .hi = 3600,
     .def = "30",
     .meta = "S",
     .help = "time from a request's first byte (TLS: from accept) to its whole body"},
    {.name = "max-attempts",
     .type = OPT_INT,
     AT(max_attempts),
     .lo = 1,
     .hi = 100,
     .def = "5",
     .meta = "N",
     .help = "worker calls per request, re-routes included"},
    {.name = "default-cost",
     .type = OPT_DBL,
     AT(default_cost),
     .lo = 0,
     .hi = 1e12,
     .def = "100",
     .meta = "N",
     .help = "cost of a request whose size is unknown"},
    {.name = "drain-timeout",
     .type = OPT_DBL,
     AT(drain_timeout),
     .lo = 0,
     .hi = 3600,
     .def = "30",
     .meta = "S",
     .help = "on SIGTERM, wait up to S s for requests in progress"},
    {.name = "log-level",
     .env = "SGPU_LOG_LEVEL",
     .type = OPT_FUNC,
     .parse = parse_log_level,
     .def = "info",
     .meta = "L",
     .help = "debug|info|warn|error (the flag wins over the variable)"},
};

static const struct opts_spec spec = {"sgpu-gateway", rows, sizeof rows / sizeof rows[0],
                                      OPTS_PREFIX};

static void usage(FILE *f)
{
    fputs(
        "usage: sgpu-gateway [--engine URL] [--listen HOST:PORT] [options]\n"
        "\n"
        "OpenAI- and TGI-compatible front door for sgpu endpoints.  Clients send one request with\n"
        "their endpoint's api_key as `Authorization: Bearer KEY`; the gateway routes it through\n"
        "the engine (POST /route/, long poll), sends the envelope to the granted worker and "
        "relays\n"
        "the answer unbuffered (SSE stays SSE).  Stateless: run as many as you like behind a load\n"
        "balancer.\n"
        "\n"
        "Routes:  POST /v1/chat/completions, /v1/completions, /v1/embeddings (endpoint = `model`)\n"
        "         GET /v1/models, /v1/models/{id}   (the endpoints this key may call)\n"
        "         POST /generate, /generate_stream, / (TGI; endpoint = `model`)\n"
        "         /endpoints/NAME/<route>           (endpoint NAME; any worker route)\n"
        "         GET /health, /metrics\n"
        "\n",
        f);
    opts_usage(&spec, f);
}

static void read_addr_file(struct gw_config *c, const char *dir)
{
    char path[600];
    snprintf(path, sizeof path, "%s/engine.addr", dir);
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[512];
    if (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0]) snprintf(c->engine, sizeof c->engine, "%s", line);
    }
    fclose(f);
}

/* The values the table cannot check alone: TLS pair, engine discovery and URL. */
static int config_finish(struct gw_config *c, const struct opts_result *r)
{
    if (r->nargs > 0) {
        fprintf(stderr, "sgpu-gateway: unexpected argument '%s'\n", r->args[0]);
        return -1;
    }
    if (!!c->tls_cert[0] != !!c->tls_key[0]) {
        fprintf(stderr, "sgpu-gateway: --tls-cert and --tls-key go together\n");
        return -1;
    }
    const char *engine = r->val[R_ENGINE], *data_dir = r->val[R_DATA_DIR];
    if (engine && *engine)
        snprintf(c->engine, sizeof c->engine, "%s", engine);
    else
        read_addr_file(c, data_dir && *data_dir ? data_dir : "./sgpu-data");
    if (!c->engine[0]) snprintf(c->engine, sizeof c->engine, "http://127.0.0.1:8080");
    size_t n = strlen(c->engine);
    while (n && c->engine[n - 1] == '/')
        c->engine[--n] = '\0';
    struct http_url u;
    if (http_url_parse(c->engine, &u) != 0) {
        fprintf(stderr, "sgpu-gateway: bad engine URL '%s'\n", c->engine);
        return -1;
    }
    return 0;
}

int gw_config_parse(struct gw_config *c, int argc, char **argv)
{
    memset(c, 0, sizeof *c);
    struct opts_result r;
    int rc = opts_parse(&spec, c, argc, argv, &r);
    if (rc == 0 && r.help) {
        if (r.help == OPTS_HELP_MARKDOWN)
            opts_markdown(&spec, stdout);
        else
            usage(stdout);
        rc = 1;
    } else if (rc != 0) {
        fprintf(stderr, "%s\n", r.err);
    } else {
        rc = config_finish(c, &r);
    }
    opts_result_free(&r);
    return rc;
}

/* SIGTERM/SIGINT: stop accepting, let the requests in progress finish (up to
 * --drain-timeout), then exit.  A second signal exits at once. */
static struct event *drain_ev;
static double drain_deadline;

static void on_drain_tick(evutil_socket_t fd, short ev, void *arg)
{
    struct gateway *g = arg;
    if (g->inflight <= 0 || clock_mono() >= drain_deadline) {
        if (g->inflight > 0) log_warn("drain_timeout", "inflight=%d", g->inflight);
        event_base_loopexit(g->base, NULL);
    }
}

static void on_signal(evutil_socket_t sig, short ev, void *arg)
{
    struct gateway *g = arg;
    log_info("signal", "sig=%d inflight=%d", (int)sig, g->inflight);
    if (g->stopping) {
        event_base_loopexit(g->base, NULL);
        return;
    }
    g->stopping = true;
    gw_listen_stop(g);
    drain_deadline = clock_mono() + g->cfg.drain_timeout;
    drain_ev = event_new(g->base, -1, EV_PERSIST, on_drain_tick, g);
    struct timeval tv = clock_tv_ms(100);
    if (!drain_ev || event_add(drain_ev, &tv) != 0) event_base_loopexit(g->base, NULL);
}

int main(int argc, char **argv)
{
    static struct gateway g; /* large (pool table); static keeps it off the stack */
    int r = gw_config_parse(&g.cfg, argc, argv);
    if (r != 0) return r > 0 ? 0 : 2;
    enum log_level lvl = LOG_INFO;
    if (g.cfg.log_level[0]) log_parse_level(g.cfg.log_level, &lvl);
    log_init("gateway", lvl);
    /* --log-level over SGPU_LOG_LEVEL, as the option table resolved them */
    log_set_level(lvl);
    signal(SIGPIPE, SIG_IGN);

    g.base = http_base_new();
    if (!g.base) {
        log_error("fatal", "what=event_base");
        return 1;
    }
    g.dns = evdns_base_new(g.base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (!g.dns) g.dns = evdns_base_new(g.base, 0); /* no resolv.conf: numeric hosts only */
    g.tls.insecure = g.cfg.insecure;
    g.tls.ca_file = g.cfg.cacert[0] ? g.cfg.cacert : NULL;
    g.engine = upstream_pool_new(g.base, g.dns, g.cfg.engine, &g.tls);
    if (!g.engine) {
        log_error("fatal", "what=engine_pool engine=%s", g.cfg.engine);
        return 1;
    }
    upstream_pool_set_max_idle(g.engine, 256);
    gw_metrics_init(&g);
    gw_access_init(g.base);
    int port = 0;
    if (gw_listen(&g, &port) != 0) return 1;
    const char *scheme = g.cfg.tls_cert[0] ? "https" : "http";
    log_info("listening", "port=%d url=%s://%s:%d engine=%s", port, scheme, g.cfg.host, port,
             g.cfg.engine);
    if (g.cfg.addr_file[0]) {
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s.tmp", g.cfg.addr_file);
        FILE *f = fopen(tmp, "w");
        if (!f ||
            fprintf(f, "%s://%s:%d\n", scheme, g.cfg.host[0] ? g.cfg.host : "0.0.0.0", port) < 0 ||
            fclose(f) != 0 || rename(tmp, g.cfg.addr_file) != 0) {
            log_error("fatal", "what=addr_file path=%s", g.cfg.addr_file);
            return 1;
        }
    }
    struct event *sigterm = evsignal_new(g.base, SIGTERM, on_signal, &g);
    struct event *sigint = evsignal_new(g.base, SIGINT, on_signal, &g);
    if (!sigterm || !sigint || event_add(sigterm, NULL) != 0 || event_add(sigint, NULL) != 0) {
        log_error("fatal", "what=signals");
        return 1;
    }
    event_base_dispatch(g.base);
    gw_access_free();
    log_info("stopped", "inflight=%d", g.inflight);
    if (drain_ev) event_free(drain_ev);
    event_free(sigterm);
    event_free(sigint);
    gw_listen_free(&g);
    evhttp_free(g.http);
    for (int i = 0; i < g.npools; i++)
        upstream_pool_free(g.pools[i]);
    upstream_pool_free(g.engine);
    evdns_base_free(g.dns, 0);
    metrics_free(g.m);
    free(g.epm);
    event_base_free(g.base);
    return 0;
}
