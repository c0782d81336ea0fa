/* sgpu-gateway: options, start-up, signals.  See gateway.h and docs/gateway.md. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
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
        "\n"
        "  --engine URL            engine base URL.  Default $SGPU_ENGINE, else the address in\n"
        "                          <data-dir>/engine.addr, else http://127.0.0.1:8080\n"
        "  --data-dir DIR          engine data directory to read engine.addr from (default\n"
        "                          $SGPU_DATA_DIR, else ./sgpu-data)\n"
        "  --listen HOST:PORT      listen address (default 127.0.0.1:8000; port 0 = ephemeral)\n"
        "  --addr-file FILE        write the bound base URL (http://HOST:PORT) to FILE\n"
        "  --tls-cert FILE         serve HTTPS with this certificate chain (PEM) ...\n"
        "  --tls-key FILE          ... and this private key (PEM)\n"
        "  --cacert FILE           extra CA bundle to verify an https engine and workers\n"
        "  --insecure              do not verify engine/worker certificates\n"
        "  --max-body BYTES        request body limit (default 16777216)\n"
        "  --max-connections N     open client connections; at the cap the oldest idle one is\n"
        "                          closed (default 4096, clamped to (fd limit - 64) / 2)\n"
        "  --max-inflight N        requests in progress before 503 overloaded (default 4096)\n"
        "  --route-timeout S       longest wait for a worker before 503 (default 60)\n"
        "  --request-timeout S     whole request deadline, 0 = none (default 0)\n"
        "  --idle-timeout S        client / upstream inactivity limit (default 300)\n"
        "  --header-timeout S      time from a request's first byte (TLS: from accept) to its\n"
        "                          whole body (default 30)\n"
        "  --max-attempts N        worker calls per request, re-routes included (default 5)\n"
        "  --default-cost N        cost of a request whose size is unknown (default 100)\n"
        "  --drain-timeout S       on SIGTERM, wait up to S s for requests in progress (default "
        "30)\n"
        "  --log-level L           debug|info|warn|error (default info, or $SGPU_LOG_LEVEL)\n"
        "  --help                  this text\n",
        f);
}

static int parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v) || v < lo || v > hi) return -1;
    *out = v;
    return 0;
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

int gw_config_parse(struct gw_config *c, int argc, char **argv)
{
    memset(c, 0, sizeof *c);
    snprintf(c->host, sizeof c->host, "127.0.0.1");
    c->port = 8000;
    c->max_body = 16u << 20;
    c->max_connections = 4096;
    c->max_inflight = 4096;
    c->route_timeout = 60;
    c->request_timeout = 0;
    c->idle_timeout = 300;
    c->header_timeout = 30;
    c->max_attempts = 5;
    c->default_cost = 100;
    c->drain_timeout = 30;
    const char *engine = getenv("SGPU_ENGINE"), *data_dir = getenv("SGPU_DATA_DIR");
    enum {
        O_ENGINE = 1,
        O_DATA,
        O_LISTEN,
        O_ADDR,
        O_CERT,
        O_KEY,
        O_CA,
        O_INSECURE,
        O_BODY,
        O_CONNS,
        O_INFL,
        O_RT,
        O_REQT,
        O_IDLE,
        O_HDR,
        O_ATT,
        O_COST,
        O_LOG,
        O_DRAIN,
        O_HELP
    };
    static const struct option opts[] = {
        {"engine", required_argument, NULL, O_ENGINE},
        {"data-dir", required_argument, NULL, O_DATA},
        {"listen", required_argument, NULL, O_LISTEN},
        {"addr-file", required_argument, NULL, O_ADDR},
        {"tls-cert", required_argument, NULL, O_CERT},
        {"tls-key", required_argument, NULL, O_KEY},
        {"cacert", required_argument, NULL, O_CA},
        {"insecure", no_argument, NULL, O_INSECURE},
        {"max-body", required_argument, NULL, O_BODY},
        {"max-connections", required_argument, NULL, O_CONNS},
        {"max-inflight", required_argument, NULL, O_INFL},
        {"route-timeout", required_argument, NULL, O_RT},
        {"request-timeout", required_argument, NULL, O_REQT},
        {"idle-timeout", required_argument, NULL, O_IDLE},
        {"header-timeout", required_argument, NULL, O_HDR},
        {"max-attempts", required_argument, NULL, O_ATT},
        {"default-cost", required_argument, NULL, O_COST},
        {"log-level", required_argument, NULL, O_LOG},
        {"drain-timeout", required_argument, NULL, O_DRAIN},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    int o;
    double v;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int bad = 0;
        switch (o) {
        case O_ENGINE:
            engine = optarg;
            break;
        case O_DATA:
            data_dir = optarg;
            break;
        case O_LISTEN: {
            const char *colon = strrchr(optarg, ':');
            if (!colon || colon - optarg >= (long)sizeof c->host ||
                parse_num(colon + 1, 0, 65535, &v) != 0) {
                bad = 1;
                break;
            }
            snprintf(c->host, sizeof c->host, "%.*s", (int)(colon - optarg), optarg);
            c->port = (int)v;
            break;
        }
        case O_ADDR:
            snprintf(c->addr_file, sizeof c->addr_file, "%s", optarg);
            break;
        case O_CERT:
            snprintf(c->tls_cert, sizeof c->tls_cert, "%s", optarg);
            break;
        case O_KEY:
            snprintf(c->tls_key, sizeof c->tls_key, "%s", optarg);
            break;
        case O_CA:
            snprintf(c->cacert, sizeof c->cacert, "%s", optarg);
            break;
        case O_INSECURE:
            c->insecure = true;
            break;
        case O_BODY:
            bad = parse_num(optarg, 1024, 1u << 30, &v);
            c->max_body = (size_t)v;
            break;
        case O_CONNS:
            bad = parse_num(optarg, 16, 1 << 20, &v);
            c->max_connections = (int)v;
            break;
        case O_INFL:
            bad = parse_num(optarg, 1, 1 << 20, &v);
            c->max_inflight = (int)v;
            break;
        case O_RT:
            bad = parse_num(optarg, 0.1, 86400, &c->route_timeout);
            break;
        case O_REQT:
            bad = parse_num(optarg, 0, 86400 * 7, &c->request_timeout);
            break;
        case O_IDLE:
            bad = parse_num(optarg, 1, 86400, &c->idle_timeout);
            break;
        case O_HDR:
            bad = parse_num(optarg, 1, 3600, &c->header_timeout);
            break;
        case O_ATT:
            bad = parse_num(optarg, 1, 100, &v);
            c->max_attempts = (int)v;
            break;
        case O_COST:
            bad = parse_num(optarg, 0, 1e12, &c->default_cost);
            break;
        case O_LOG: {
            enum log_level l;
            bad = log_parse_level(optarg, &l);
            snprintf(c->log_level, sizeof c->log_level, "%s", optarg);
            break;
        }
        case O_DRAIN:
            bad = parse_num(optarg, 0, 3600, &c->drain_timeout);
            break;
        case 'h':
        case O_HELP:
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return -1;
        }
        if (bad) {
            fprintf(stderr, "sgpu-gateway: bad value for %s: '%s'\n", argv[optind - 1], optarg);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sgpu-gateway: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (!!c->tls_cert[0] != !!c->tls_key[0]) {
        fprintf(stderr, "sgpu-gateway: --tls-cert and --tls-key go together\n");
        return -1;
    }
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
    struct timeval tv = {0, 100000};
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
