/* Configuration: environment variables (PyWorker-compatible names) and
 * command-line flags (--name value or --name=value), one row each in an opts.h table: the flag
 * over the variable over the default.  Every unknown flag or invalid value is a start-up error
 * naming its source.  config_load: the table first, then the values that depend on each other
 * (backend preset, lists, auth scheme, ports, the reported url). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "httputil.h"
#include "opts.h"
#include "xalloc.h"
#include "worker.h"

enum {
    O_WORKER_PORT,
    O_HOST,
    O_BACKEND,
    O_MODEL_SERVER_URL,
    O_MODEL_LOG,
    O_MODEL_LOAD_LOG_MSG,
    O_MODEL_ERROR_LOG_MSGS,
    O_MODEL_INFO_LOG_MSGS,
    O_MODEL_HEALTH_ENDPOINT,
    O_REPORT_ADDR,
    O_CONTAINER_ID,
    O_PUBLIC_IPADDR,
    O_USE_SSL,
    O_TLS_CERT,
    O_TLS_KEY,
    O_UNSECURED,
    O_MASTER_TOKEN,
    O_PUBKEY_FILE,
    O_PUBKEY_URL,
    O_PUBKEY_REFRESH,
    O_AUTH_SCHEME,
    O_REPLAY_GUARD,
    O_REPLAY_WINDOW,
    O_REPLAY_HISTORY,
    O_URL_CACHE,
    O_ENDPOINT,
    O_REPORT_FORMAT,
    O_CONFIG,
    O_DRAIN_TIMEOUT,
    O_MAX_BODY,
    O_MAX_HEADERS,
    O_IDLE_TIMEOUT,
    O_REQUEST_DEADLINE,
    O_UPSTREAM_TIMEOUT,
    O_MAX_RESPONSE,
    O_HEALTH_INTERVAL,
    O_HEALTH_TIMEOUT,
    O_HEALTH_FAILURES,
    O_BENCH,
    O_BENCH_RUNS,
    O_BENCH_CONCURRENCY,
    O_BENCH_FILE,
    O_BENCH_TIMEOUT,
    O_BENCH_PAYLOAD,
    O_BENCH_ROUTE,
    O_MAX_PERF,
    O_REPORT_INTERVAL,
    O_REPORT_TIMEOUT,
    O_QUEUE_LIMIT,
    O_LOG_POLL,
    O_ENGINE_CA,
    O_ENGINE_INSECURE,
    O_FULL_PARSE_MAX,
    O_MAX_CONNECTIONS,
    O_BODY_BUDGET,
    O_WORKLOAD,
    O_MAX_WORKLOAD,
    O_WORKLOAD_FIELD,
    O_PARALLEL,
    O_MAX_QUEUE_TIME,
    O_VERSION,
    O_HTTP_PORT,
    O_MAX_SESSIONS,
    O_SESSION_MAX_TTL,
    O_SESSION_GC,
    O_UPDATE_FLAG_FILE,
    NOPT
};

struct preset_defaults {
    const char *name, *url, *load, *error, *info;
};
static const struct preset_defaults presets[] = {
    {"tgi", "http://127.0.0.1:5001",
     "\"message\":\"Connected\",\"target\":\"text_generation_router\"",
     "Error: WebserverFailed|Error: DownloadError", "\"message\":\"Download"},
    {"openai", "http://127.0.0.1:18000", "Application startup complete.",
     "INFO exited: vllm|RuntimeError: Engine|Traceback (most recent call last):", ""},
    {"comfyui", "http://127.0.0.1:18288", "BACKENDS_READY",
     "BACKENDS_READY_TIMEOUT|BACKEND_UNRECOVERABLE|Application startup failed", ""},
    {"generic", "http://127.0.0.1:18000", "", "", ""},
};

static const struct preset_defaults *preset_find(const char *name)
{
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (strcmp(name, presets[i].name) == 0) return &presets[i];
    return NULL;
}

/* ---- values with words of their own (OPT_FUNC rows) ---- */

static int parse_backend(void *cfg, const char *v, char *why, size_t n)
{
    struct wconfig *c = cfg;
    const struct preset_defaults *pd = preset_find(v);
    if (!pd) return snprintf(why, n, "expected tgi, openai, comfyui or generic"), -1;
    snprintf(c->backend, sizeof c->backend, "%s", pd->name);
    return 0;
}

/* seconds, or "none" / "" = never */
static int parse_max_queue_time(void *cfg, const char *v, char *why, size_t n)
{
    struct wconfig *c = cfg;
    if (strcasecmp(v, "none") == 0 || v[0] == '\0') {
        c->max_queue_time = -1;
        return 0;
    }
    return opts_parse_double(v, 0, 1e9, &c->max_queue_time, why, n);
}

/* a port, 0 = ephemeral, -1 or "off" = no plain listener */
static int parse_http_port(void *cfg, const char *v, char *why, size_t n)
{
    struct wconfig *c = cfg;
    long long p;
    if (opts_parse_ll(strcasecmp(v, "off") == 0 ? "-1" : v, -1, 65535, &p, why, n)) return -1;
    c->http_port = (int)p;
    c->http_port_set = true;
    return 0;
}

/* -1, 0 and "none" = unlimited (B20) */
static int parse_max_sessions(void *cfg, const char *v, char *why, size_t n)
{
    struct wconfig *c = cfg;
    long long m = 0;
    if (strcasecmp(v, "none") != 0 && opts_parse_ll(v, -1, 1 << 24, &m, why, n)) return -1;
    c->max_sessions = m < 0 ? 0 : (int)m;
    return 0;
}

/* enum fields are filled as int by OPT_ENUM */
_Static_assert(sizeof(enum auth_scheme) == sizeof(int), "OPT_ENUM stores an int");
_Static_assert(sizeof(enum report_fmt) == sizeof(int), "OPT_ENUM stores an int");

#define AT(f) OPT_AT(struct wconfig, f)
#define BUF(f) OPT_BUF(struct wconfig, f)

static const struct opt rows[NOPT] = {
    [O_WORKER_PORT] = {.name = "port",
                       .env = "WORKER_PORT",
                       .type = OPT_INT,
                       AT(port),
                       .lo = 0,
                       .hi = 65535,
                       .def = "3000",
                       .help = "listening port"},
    [O_HOST] = {.name = "host",
                .env = "SGPU_HOST",
                BUF(host),
                .def = "0.0.0.0",
                .help = "listening address"},
    [O_BACKEND] = {.name = "backend",
                   .env = "BACKEND",
                   .type = OPT_FUNC,
                   .parse = parse_backend,
                   .def = "generic",
                   .help = "tgi | openai | comfyui | generic (handler preset)"},
    [O_MODEL_SERVER_URL] = {.name = "model-server-url",
                            .env = "MODEL_SERVER_URL",
                            BUF(model_url),
                            .help =
                                "model server base URL (tgi http://127.0.0.1:5001, openai/generic "
                                "http://127.0.0.1:18000, comfyui http://127.0.0.1:18288)"},
    [O_MODEL_LOG] = {.name = "model-log",
                     .env = "MODEL_LOG",
                     BUF(model_log),
                     .help = "model server log file to tail"},
    [O_MODEL_LOAD_LOG_MSG] =
        {.name = "model-load-log-msg",
         .env = "MODEL_LOAD_LOG_MSG",
         .type = OPT_RAW,
         .help = "'|'-separated substrings meaning 'model loaded' (preset default)"},
    [O_MODEL_ERROR_LOG_MSGS] = {.name = "model-error-log-msgs",
                                .env = "MODEL_ERROR_LOG_MSGS",
                                .type = OPT_RAW,
                                .help = "'|'-separated substrings meaning a fatal model error"},
    [O_MODEL_INFO_LOG_MSGS] = {.name = "model-info-log-msgs",
                               .env = "MODEL_INFO_LOG_MSGS",
                               .type = OPT_RAW,
                               .help = "'|'-separated substrings logged as progress"},
    [O_MODEL_HEALTH_ENDPOINT] = {.name = "model-health-endpoint",
                                 .env = "MODEL_HEALTH_ENDPOINT",
                                 BUF(health_endpoint),
                                 .help = "model server health path (e.g. /health) or full URL"},
    [O_REPORT_ADDR] = {.name = "report-addr",
                       .env = "REPORT_ADDR",
                       .type = OPT_RAW,
                       .def = "https://run.vast.ai",
                       .help = "engine base URL(s), comma-separated, tried in turn"},
    [O_CONTAINER_ID] = {.name = "container-id",
                        .env = "CONTAINER_ID",
                        .type = OPT_I64,
                        AT(container_id),
                        .lo = -9007199254740992.0,
                        .hi = 9007199254740992.0,
                        .def = "0",
                        .help = "instance id reported as `id`"},
    [O_PUBLIC_IPADDR] =
        {.name = "public-ipaddr",
         .env = "PUBLIC_IPADDR",
         BUF(public_ip),
         .def = "127.0.0.1",
         .help = "public address in the reported url (with VAST_TCP_PORT_<WORKER_PORT>)"},
    [O_USE_SSL] = {.name = "use-ssl",
                   .env = "USE_SSL",
                   .type = OPT_BOOL,
                   AT(use_ssl),
                   .def = "false",
                   .help = "serve HTTPS (url scheme https)"},
    [O_TLS_CERT] = {.name = "tls-cert",
                    .env = "SGPU_TLS_CERT",
                    BUF(tls_cert),
                    .def = "/etc/instance.crt",
                    .help = "TLS certificate (PEM)"},
    [O_TLS_KEY] = {.name = "tls-key",
                   .env = "SGPU_TLS_KEY",
                   BUF(tls_key),
                   .def = "/etc/instance.key",
                   .help = "TLS private key (PEM)"},
    [O_UNSECURED] = {.name = "unsecured",
                     .env = "UNSECURED",
                     .type = OPT_BOOL,
                     AT(unsecured),
                     .def = "false",
                     .help = "accept requests without checking grants"},
    [O_MASTER_TOKEN] =
        {.name = "master-token",
         .env = "MASTER_TOKEN",
         BUF(master_token),
         .def = "",
         .help = "reported as `mtoken`; also the token of POST /pyworker/update (empty = "
                 "route disabled)"},
    [O_PUBKEY_FILE] = {.name = "pubkey-file",
                       .env = "PUBKEY_FILE",
                       BUF(pubkey_file),
                       .help = "engine public key file (PEM/DER)"},
    [O_PUBKEY_URL] = {.name = "pubkey-url",
                      .env = "PUBKEY_URL",
                      BUF(pubkey_url),
                      .help = "engine public key URL "
                              "(default <first REPORT_ADDR>/pubkey/)"},
    [O_PUBKEY_REFRESH] = {.name = "pubkey-refresh",
                          .env = "SGPU_PUBKEY_REFRESH",
                          .type = OPT_DBL,
                          AT(pubkey_refresh),
                          .lo = 0,
                          .hi = 1e9,
                          .def = "3600",
                          .help = "seconds between public key refreshes (0 = never)"},
    [O_AUTH_SCHEME] = {.name = "auth-scheme",
                       .env = "SGPU_AUTH_SCHEME",
                       .type = OPT_ENUM,
                       AT(scheme),
                       .choices = "fields-v1|fields-v2|url",
                       .def = "url",
                       .help = "fields-v1 (G1 message) | fields-v2 (G2) | url (G3)"},
    [O_REPLAY_GUARD] = {.name = "replay-guard",
                        .env = "SGPU_REPLAY_GUARD",
                        .type = OPT_BOOL,
                        AT(replay_guard),
                        .help = "reject reused grants (default on for fields-*, off for url)"},
    [O_REPLAY_WINDOW] = {.name = "replay-window",
                         .env = "SGPU_REPLAY_WINDOW",
                         .type = OPT_INT,
                         AT(replay_window),
                         .lo = 0,
                         .hi = 1 << 30,
                         .def = "100",
                         .help = "reqnum may trail the highest accepted one by this much"},
    [O_REPLAY_HISTORY] = {.name = "replay-history",
                          .env = "SGPU_REPLAY_HISTORY",
                          .type = OPT_INT,
                          AT(replay_history),
                          .lo = 1,
                          .hi = 1 << 20,
                          .def = "4096",
                          .help =
                              "accepted grants remembered by the replay guard (bounded memory)"},
    [O_URL_CACHE] = {.name = "url-cache",
                     .env = "SGPU_URL_CACHE",
                     .type = OPT_INT,
                     AT(url_cache),
                     .lo = 0,
                     .hi = 1 << 16,
                     .def = "256",
                     .help = "verified url-scheme grants cached (0 = verify every request)"},
    [O_ENDPOINT] = {.name = "grant-endpoint",
                    .env = "SGPU_GRANT_ENDPOINT",
                    BUF(endpoint),
                    .def = "",
                    .help = "this worker's endpoint name: a grant naming another endpoint gets 401 "
                            "(empty = not checked)"},
    [O_REPORT_FORMAT] = {.name = "report-format",
                         .env = "SGPU_REPORT_FORMAT",
                         .type = OPT_ENUM,
                         AT(report_fmt),
                         .choices = "v1|v3",
                         .def = "v3",
                         .help = "v1 (12 fields) | v3 (17 fields + /delete_requests/)"},
    [O_CONFIG] = {.name = "config",
                  .env = "SGPU_CONFIG",
                  BUF(config_file),
                  .help = "JSON file of custom handlers"},
    [O_DRAIN_TIMEOUT] = {.name = "drain-timeout",
                         .env = "SGPU_DRAIN_TIMEOUT",
                         .type = OPT_DBL,
                         AT(drain_timeout),
                         .lo = 0,
                         .hi = 86400,
                         .def = "30",
                         .help = "seconds in-flight requests may take after SIGTERM"},
    [O_MAX_BODY] = {.name = "max-body",
                    .env = "SGPU_MAX_BODY",
                    .type = OPT_SIZE,
                    AT(max_body),
                    .lo = 1,
                    .hi = (double)(1ULL << 40),
                    .def = "64M",
                    .help = "request body limit (bytes; K/M/G)"},
    [O_MAX_HEADERS] = {.name = "max-headers",
                       .env = "SGPU_MAX_HEADERS",
                       .type = OPT_SIZE,
                       AT(max_headers),
                       .lo = 1,
                       .hi = (double)(1ULL << 40),
                       .def = "16K",
                       .help = "request line + headers limit (bytes)"},
    [O_IDLE_TIMEOUT] = {.name = "idle-timeout",
                        .env = "SGPU_IDLE_TIMEOUT",
                        .type = OPT_DBL,
                        AT(idle_timeout),
                        .lo = 0.1,
                        .hi = 86400,
                        .def = "60",
                        .help = "keep-alive idle / read inactivity timeout (s)"},
    [O_REQUEST_DEADLINE] = {.name = "request-deadline",
                            .env = "SGPU_REQUEST_DEADLINE",
                            .type = OPT_DBL,
                            AT(request_deadline),
                            .lo = 0.1,
                            .hi = 86400,
                            .def = "30",
                            .help =
                                "time allowed to receive a request head and body (s; slowloris)"},
    [O_UPSTREAM_TIMEOUT] = {.name = "upstream-timeout",
                            .env = "SGPU_UPSTREAM_TIMEOUT",
                            .type = OPT_DBL,
                            AT(upstream_timeout),
                            .lo = 0,
                            .hi = 1e7,
                            .def = "0",
                            .help = "model request deadline (s; 0 = none)"},
    [O_MAX_RESPONSE] = {.name = "max-response",
                        .env = "SGPU_MAX_RESPONSE",
                        .type = OPT_SIZE,
                        AT(max_response),
                        .lo = 1,
                        .hi = (double)(1ULL << 40),
                        .def = "256M",
                        .help = "buffered (non-streamed) model response limit"},
    [O_HEALTH_INTERVAL] = {.name = "health-interval",
                           .env = "SGPU_HEALTH_INTERVAL",
                           .type = OPT_DBL,
                           AT(health_interval),
                           .lo = 0.01,
                           .hi = 86400,
                           .def = "5",
                           .help = "seconds between model health checks"},
    [O_HEALTH_TIMEOUT] = {.name = "health-timeout",
                          .env = "SGPU_HEALTH_TIMEOUT",
                          .type = OPT_DBL,
                          AT(health_timeout),
                          .lo = 0.01,
                          .hi = 86400,
                          .def = "10",
                          .help = "health probe timeout (s)"},
    [O_HEALTH_FAILURES] =
        {.name = "health-failures",
         .env = "SGPU_HEALTH_FAILURES",
         .type = OPT_INT,
         AT(health_failures),
         .lo = 1,
         .hi = 1000000,
         .def = "3",
         .help = "consecutive failed probes (after the first success) that are fatal"},
    [O_BENCH] = {.name = "benchmark",
                 .env = "SGPU_BENCHMARK",
                 .type = OPT_BOOL,
                 AT(bench_enabled),
                 .def = "true",
                 .help = "run the benchmark after load"},
    [O_BENCH_RUNS] = {.name = "benchmark-runs",
                      .env = "SGPU_BENCHMARK_RUNS",
                      .type = OPT_INT,
                      AT(bench_runs),
                      .lo = 1,
                      .hi = 1000,
                      .def = "3",
                      .help = "benchmark rounds"},
    [O_BENCH_CONCURRENCY] = {.name = "benchmark-concurrency",
                             .env = "SGPU_BENCHMARK_CONCURRENCY",
                             .type = OPT_INT,
                             AT(bench_concurrency),
                             .lo = 1,
                             .hi = 1000,
                             .def = "10",
                             .help = "requests per round (1 for serial handlers)"},
    [O_BENCH_FILE] = {.name = "benchmark-file",
                      .env = "SGPU_BENCHMARK_FILE",
                      BUF(bench_file),
                      .def = ".has_benchmark",
                      .help = "benchmark cache file"},
    [O_BENCH_TIMEOUT] = {.name = "benchmark-timeout",
                         .env = "SGPU_BENCHMARK_TIMEOUT",
                         .type = OPT_DBL,
                         AT(bench_timeout),
                         .lo = 0.01,
                         .hi = 1e6,
                         .def = "600",
                         .help = "per-request benchmark timeout (s)"},
    [O_BENCH_PAYLOAD] =
        {.name = "benchmark-payload",
         .env = "SGPU_BENCHMARK_PAYLOAD",
         .type = OPT_RAW,
         .help = "benchmark payload JSON, sent as given (replaces a preset's sized one)"},
    [O_BENCH_ROUTE] = {.name = "benchmark-route",
                       .env = "SGPU_BENCHMARK_ROUTE",
                       BUF(bench_route),
                       .def = "/",
                       .help = "route the generic benchmark payload is posted to"},
    [O_MAX_PERF] = {.name = "max-perf",
                    .env = "SGPU_MAX_PERF",
                    .type = OPT_DBL,
                    AT(max_perf),
                    .lo = 0,
                    .hi = 1e12,
                    .def = "100",
                    .help = "max_perf reported when no benchmark runs (workload/s)"},
    [O_REPORT_INTERVAL] = {.name = "report-interval",
                           .env = "SGPU_REPORT_INTERVAL",
                           .type = OPT_DBL,
                           AT(report_interval),
                           .lo = 0.05,
                           .hi = 86400,
                           .def = "10",
                           .help = "longest gap between status reports (s)"},
    [O_REPORT_TIMEOUT] = {.name = "report-timeout",
                          .env = "SGPU_REPORT_TIMEOUT",
                          .type = OPT_DBL,
                          AT(report_timeout),
                          .lo = 0.05,
                          .hi = 3600,
                          .def = "5",
                          .help = "timeout of one report POST (s)"},
    [O_QUEUE_LIMIT] = {.name = "queue-limit",
                       .env = "SGPU_QUEUE_LIMIT",
                       .type = OPT_INT,
                       AT(queue_limit),
                       .lo = 0,
                       .hi = 1 << 24,
                       .def = "1024",
                       .help = "queued requests per serial handler before 429"},
    [O_LOG_POLL] = {.name = "log-poll",
                    .env = "SGPU_LOG_POLL",
                    .type = OPT_DBL,
                    AT(log_poll),
                    .lo = 0.001,
                    .hi = 60,
                    .def = "0.1",
                    .help = "MODEL_LOG poll interval (s)"},
    [O_FULL_PARSE_MAX] =
        {.name = "full-parse-max",
         .env = "SGPU_FULL_PARSE_MAX",
         .type = OPT_SIZE,
         AT(full_parse_max),
         .lo = 1,
         .hi = (double)(1ULL << 40),
         .def = "32K",
         .help = "bodies above this size: only auth_data is fully parsed, the payload is "
                 "located and forwarded (the model validates it)"},
    [O_MAX_CONNECTIONS] = {.name = "max-connections",
                           .env = "SGPU_MAX_CONNECTIONS",
                           .type = OPT_INT,
                           AT(max_connections),
                           .lo = 1,
                           .hi = 1 << 22,
                           .def = "4096",
                           .help =
                               "open client connections before accepting pauses (clamped to the fd "
                               "limit); at the limit the oldest idle connection is closed"},
    [O_BODY_BUDGET] = {.name = "body-budget",
                       .env = "SGPU_BODY_BUDGET",
                       .type = OPT_SIZE,
                       AT(body_budget),
                       .lo = 0,
                       .hi = (double)(1ULL << 40),
                       .def = "256M",
                       .help =
                           "request bytes being received, summed over all connections; past it the "
                           "connection holding the most gets 503 (0 = unlimited)"},
    [O_ENGINE_CA] = {.name = "engine-ca",
                     .env = "SGPU_ENGINE_CA",
                     BUF(engine_ca),
                     .help = "extra CA bundle (PEM) for https REPORT_ADDR / PUBKEY_URL"},
    [O_ENGINE_INSECURE] = {.name = "engine-insecure",
                           .env = "SGPU_ENGINE_INSECURE",
                           .type = OPT_BOOL,
                           AT(engine_insecure),
                           .def = "false",
                           .help = "do not verify the engine's TLS certificate (tests only)"},
    [O_WORKLOAD] = {.name = "workload",
                    .env = "SGPU_WORKLOAD",
                    .type = OPT_DBL,
                    AT(wl_constant),
                    .lo = 0,
                    .hi = 1e12,
                    .def = "100",
                    .help = "generic: constant workload, or default when the field is absent"},
    [O_MAX_WORKLOAD] = {.name = "max-workload",
                        .env = "SGPU_MAX_WORKLOAD",
                        .type = OPT_DBL,
                        AT(max_workload),
                        .lo = 1,
                        .hi = 1e12,
                        .def = "1000000",
                        .help =
                            "cap on one request's workload and on one grant's cost (a session's "
                            "load); larger values are clamped"},
    [O_WORKLOAD_FIELD] = {.name = "workload-field",
                          .env = "SGPU_WORKLOAD_FIELD",
                          BUF(wl_field),
                          .help = "generic: dotted payload path holding the workload"},
    [O_PARALLEL] = {.name = "parallel",
                    .env = "SGPU_PARALLEL",
                    .type = OPT_BOOL,
                    AT(parallel),
                    .def = "true",
                    .help = "generic: requests may run concurrently (false = FIFO, one at a time)"},
    [O_MAX_QUEUE_TIME] = {.name = "max-queue-time",
                          .env = "SGPU_MAX_QUEUE_TIME",
                          .type = OPT_FUNC,
                          .parse = parse_max_queue_time,
                          .def = "30",
                          .help =
                              "estimated wait (s) above which requests get 429 ('none' = never)"},
    [O_VERSION] = {.name = "report-version",
                   .env = "SGPU_REPORT_VERSION",
                   BUF(version),
                   .def = SGPU_WORKER_VERSION,
                   .help = "`version` field of v3 reports"},
    [O_HTTP_PORT] =
        {.name = "http-port",
         .env = "WORKER_HTTP_PORT",
         .type = OPT_FUNC,
         .parse = parse_http_port,
         .help = "plain-HTTP port serving only POST /session/end; opened when USE_SSL is true "
                 "or this is set (default WORKER_PORT+1; 0 = ephemeral; -1 = off)"},
    [O_MAX_SESSIONS] = {.name = "max-sessions",
                        .env = "SGPU_MAX_SESSIONS",
                        .type = OPT_FUNC,
                        .parse = parse_max_sessions,
                        .def = "10",
                        .help = "open sessions before /session/create answers 429 (-1, 0 or none = "
                                "unlimited)"},
    [O_SESSION_MAX_TTL] = {.name = "session-max-ttl",
                           .env = "SGPU_SESSION_MAX_TTL",
                           .type = OPT_DBL,
                           AT(session_max_ttl),
                           .lo = 1,
                           .hi = 1e7,
                           .def = "3600",
                           .help =
                               "a session's expiration is never set further than this many seconds "
                               "ahead (caps lifetime and per-request extensions)"},
    [O_SESSION_GC] = {.name = "session-gc",
                      .env = "SGPU_SESSION_GC",
                      .type = OPT_DBL,
                      AT(session_gc),
                      .lo = 0.05,
                      .hi = 3600,
                      .def = "1",
                      .help = "seconds between sweeps that close expired sessions"},
    [O_UPDATE_FLAG_FILE] = {.name = "update-flag-file",
                            .env = "SGPU_UPDATE_FLAG_FILE",
                            BUF(update_flag_file),
                            .def = "/.force_update",
                            .help = "file written by POST /pyworker/update (needs MASTER_TOKEN)"},
};

static const struct opts_spec spec = {"sgpu-worker", rows, NOPT, OPTS_EMPTY_ENV | OPTS_ENV_COLUMN};

void config_usage(FILE *out)
{
    fprintf(out, "usage: sgpu-worker [--flag value ...]\n\n"
                 "A drop-in replacement for Vast.ai's PyWorker.  Every setting is an environment\n"
                 "variable (PyWorker names where they exist) or a flag; flags win.\n\n");
    opts_usage(&spec, out);
    fprintf(out, "  %-52s %s\n", "VAST_TCP_PORT_<WORKER_PORT>",
            "external port in the reported url [WORKER_PORT]");
    fprintf(out, "  %-52s %s\n", "SGPU_LOG_LEVEL", "debug | info | warn | error [info]");
}

static void config_usage_markdown(FILE *out)
{
    opts_markdown(&spec, out);
}

int parse_bool(const char *s, bool *out)
{
    return opts_parse_bool(s, out);
}

/* Split on sep, trimming nothing (patterns are substrings); empty items dropped. */
static char **split(const char *s, char sep, size_t *n)
{
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        if (*p == sep) cap++;
    char **out = xcalloc(cap + 1, sizeof *out);
    *n = 0;
    const char *p = s;
    for (;;) {
        const char *e = strchr(p, sep);
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l) out[(*n)++] = xmemdup(p, l);
        if (!e) break;
        p = e + 1;
    }
    return out;
}

static void free_list(char **l, size_t n)
{
    if (!l) return;
    for (size_t i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

void config_free(struct wconfig *c)
{
    free_list(c->load_msgs, c->nload);
    free_list(c->error_msgs, c->nerror);
    free_list(c->info_msgs, c->ninfo);
    free_list(c->report_addrs, c->nreport);
    free(c->bench_payload);
    memset(c, 0, sizeof *c);
}

void config_set_url(struct wconfig *c, int port)
{
    bool v6 = strchr(c->public_ip, ':') != NULL; /* IPv6 literals are bracketed */
    snprintf(c->url, sizeof c->url, "%s://%s%s%s:%d", c->use_ssl ? "https" : "http", v6 ? "[" : "",
             c->public_ip, v6 ? "]" : "", port);
}

/* ---- values that depend on others ---- */

/* The backend preset's model URL and log patterns where they were not given. */
static int config_backend(struct wconfig *c, struct opts_result *r)
{
    const struct preset_defaults *pd = preset_find(c->backend);
    if (!r->val[O_MODEL_SERVER_URL]) snprintf(c->model_url, sizeof c->model_url, "%s", pd->url);
    struct http_url hu;
    if (http_url_parse(c->model_url, &hu) != 0)
        return opts_fail(&spec, r, O_MODEL_SERVER_URL, "expected http[s]://host:port");
    const char *load = r->val[O_MODEL_LOAD_LOG_MSG], *err = r->val[O_MODEL_ERROR_LOG_MSGS],
               *info = r->val[O_MODEL_INFO_LOG_MSGS];
    c->load_msgs = split(load ? load : pd->load, '|', &c->nload);
    c->error_msgs = split(err ? err : pd->error, '|', &c->nerror);
    c->info_msgs = split(info ? info : pd->info, '|', &c->ninfo);
    if (c->health_endpoint[0] && c->health_endpoint[0] != '/' &&
        http_url_parse(c->health_endpoint, &hu) != 0)
        return opts_fail(&spec, r, O_MODEL_HEALTH_ENDPOINT, "expected /path or a URL");
    return 0;
}

/* REPORT_ADDR (comma list, spaces around items trimmed) and the public key URL built from it. */
static int config_engine(struct wconfig *c, struct opts_result *r)
{
    struct http_url hu;
    c->report_addrs = split(r->val[O_REPORT_ADDR], ',', &c->nreport);
    for (size_t i = 0; i < c->nreport; i++) {
        char *s = c->report_addrs[i];
        while (*s == ' ')
            memmove(s, s + 1, strlen(s));
        size_t l = strlen(s);
        while (l && s[l - 1] == ' ')
            s[--l] = '\0';
        if (http_url_parse(s, &hu) != 0)
            return opts_fail(&spec, r, O_REPORT_ADDR, "expected http[s]://host[:port]");
    }
    if (r->val[O_PUBKEY_URL]) {
        if (c->pubkey_url[0] && http_url_parse(c->pubkey_url, &hu) != 0)
            return opts_fail(&spec, r, O_PUBKEY_URL, "expected a URL");
    } else if (c->nreport) {
        /* B13: built from the first address, not from the whole comma list */
        const char *a = c->report_addrs[0];
        size_t l = strlen(a);
        while (l && a[l - 1] == '/')
            l--;
        snprintf(c->pubkey_url, sizeof c->pubkey_url, "%.*s/pubkey/", (int)l, a);
    }
    return 0;
}

/* The replay guard's default follows the scheme; url grants cannot have one. */
static int config_auth(struct wconfig *c, struct opts_result *r)
{
    if (!r->val[O_REPLAY_GUARD]) c->replay_guard = c->scheme != AUTH_URL;
    if (c->replay_guard && c->scheme == AUTH_URL)
        /* every url-scheme grant for this worker signs the same message (and so
         * carries the same signature): a replay guard would reject all but one */
        return opts_fail(
            &spec, r, O_REPLAY_GUARD,
            "needs SGPU_AUTH_SCHEME fields-v1 or fields-v2 (url grants are identical)");
    return 0;
}

/* Benchmark payload (JSON, kept as given), routes and paths, workload bounds, the plain port. */
static int config_misc(struct wconfig *c, struct opts_result *r)
{
    const char *bp = r->val[O_BENCH_PAYLOAD];
    if (bp) {
        struct pyj_value *pv = NULL;
        char err[128];
        if (pyj_parse(bp, strlen(bp), &pv, err, sizeof err) != 0)
            return opts_fail(&spec, r, O_BENCH_PAYLOAD, err);
        pyj_free(pv);
        c->bench_payload = xstrdup(bp);
    }
    if (c->bench_route[0] != '/') return opts_fail(&spec, r, O_BENCH_ROUTE, "expected /path");
    if (c->wl_constant > c->max_workload) {
        char why[96];
        snprintf(why, sizeof why, "expected a number in [0, %g] (SGPU_MAX_WORKLOAD)",
                 c->max_workload);
        return opts_fail(&spec, r, O_WORKLOAD, why);
    }
    if (!c->http_port_set) c->http_port = c->port ? (c->port < 65535 ? c->port + 1 : -1) : 0;
    if (!c->update_flag_file[0]) return opts_fail(&spec, r, O_UPDATE_FLAG_FILE, "expected a path");
    return 0;
}

/* The reported url: http[s]://$PUBLIC_IPADDR:$VAST_TCP_PORT_<WORKER_PORT>. */
static int config_public_url(struct wconfig *c)
{
    char pname[64];
    snprintf(pname, sizeof pname, "VAST_TCP_PORT_%d", c->port);
    const char *ext = getenv(pname);
    c->public_port = c->port;
    if (ext && *ext) {
        long long p;
        char why[96];
        if (opts_parse_ll(ext, 1, 65535, &p, why, sizeof why) != 0) {
            fprintf(stderr, "sgpu-worker: invalid %s value '%s': expected a port\n", pname, ext);
            return -1;
        }
        c->public_port = (int)p;
    }
    config_set_url(c, c->public_port);
    return 0;
}

int config_load(struct wconfig *c, int argc, char **argv)
{
    memset(c, 0, sizeof *c);
    struct opts_result r;
    int rc = opts_parse(&spec, c, argc, argv, &r);
    if (rc == 0 && r.help) {
        if (r.help == OPTS_HELP_MARKDOWN)
            config_usage_markdown(stdout);
        else
            config_usage(stdout);
        opts_result_free(&r);
        return 1;
    }
    if (rc == 0)
        rc = config_backend(c, &r) || config_engine(c, &r) || config_auth(c, &r) ||
                     config_misc(c, &r)
                 ? -1
                 : 0;
    if (rc != 0) fprintf(stderr, "%s\n", r.err);
    opts_result_free(&r);
    if (rc == 0 && config_public_url(c) != 0) rc = -1;
    return rc;
}

bool worker_is_g1(const struct wconfig *c)
{
    return c->report_fmt == REPORT_V1 || c->scheme == AUTH_FIELDS_V1;
}
