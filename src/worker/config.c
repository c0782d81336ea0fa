/* Configuration: environment variables (PyWorker-compatible names) and
 * command-line flags (--name value or --name=value; flags override env).
 * Every unknown flag or invalid value is a start-up error naming its source. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "httputil.h"
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

struct opt {
    const char *env;
    const char *flag;
    const char *def; /* NULL = unset; "@" = depends on another value */
    const char *help;
};

static const struct opt opts[NOPT] = {
    [O_WORKER_PORT] = {"WORKER_PORT", "port", "3000", "listening port"},
    [O_HOST] = {"SGPU_HOST", "host", "0.0.0.0", "listening address"},
    [O_BACKEND] = {"BACKEND", "backend", "generic",
                   "tgi | openai | comfyui | generic (handler preset)"},
    [O_MODEL_SERVER_URL] = {"MODEL_SERVER_URL", "model-server-url", "@",
                            "model server base URL (tgi http://127.0.0.1:5001, openai/generic "
                            "http://127.0.0.1:18000, comfyui http://127.0.0.1:18288)"},
    [O_MODEL_LOG] = {"MODEL_LOG", "model-log", NULL, "model server log file to tail"},
    [O_MODEL_LOAD_LOG_MSG] = {"MODEL_LOAD_LOG_MSG", "model-load-log-msg", "@",
                              "'|'-separated substrings meaning 'model loaded' (preset default)"},
    [O_MODEL_ERROR_LOG_MSGS] = {"MODEL_ERROR_LOG_MSGS", "model-error-log-msgs", "@",
                                "'|'-separated substrings meaning a fatal model error"},
    [O_MODEL_INFO_LOG_MSGS] = {"MODEL_INFO_LOG_MSGS", "model-info-log-msgs", "@",
                               "'|'-separated substrings logged as progress"},
    [O_MODEL_HEALTH_ENDPOINT] = {"MODEL_HEALTH_ENDPOINT", "model-health-endpoint", NULL,
                                 "model server health path (e.g. /health) or full URL"},
    [O_REPORT_ADDR] = {"REPORT_ADDR", "report-addr", "https://run.vast.ai",
                       "engine base URL(s), comma-separated, tried in turn"},
    [O_CONTAINER_ID] = {"CONTAINER_ID", "container-id", "0", "instance id reported as `id`"},
    [O_PUBLIC_IPADDR] = {"PUBLIC_IPADDR", "public-ipaddr", "127.0.0.1",
                         "public address in the reported url (with VAST_TCP_PORT_<WORKER_PORT>)"},
    [O_USE_SSL] = {"USE_SSL", "use-ssl", "false", "serve HTTPS (url scheme https)"},
    [O_TLS_CERT] = {"SGPU_TLS_CERT", "tls-cert", "/etc/instance.crt", "TLS certificate (PEM)"},
    [O_TLS_KEY] = {"SGPU_TLS_KEY", "tls-key", "/etc/instance.key", "TLS private key (PEM)"},
    [O_UNSECURED] = {"UNSECURED", "unsecured", "false", "accept requests without checking grants"},
    [O_MASTER_TOKEN] = {"MASTER_TOKEN", "master-token", "",
                        "reported as `mtoken`; also the token of POST /pyworker/update (empty = "
                        "route disabled)"},
    [O_PUBKEY_FILE] = {"PUBKEY_FILE", "pubkey-file", NULL, "engine public key file (PEM/DER)"},
    [O_PUBKEY_URL] = {"PUBKEY_URL", "pubkey-url", "@",
                      "engine public key URL "
                      "(default <first REPORT_ADDR>/pubkey/)"},
    [O_PUBKEY_REFRESH] = {"SGPU_PUBKEY_REFRESH", "pubkey-refresh", "3600",
                          "seconds between public key refreshes (0 = never)"},
    [O_AUTH_SCHEME] = {"SGPU_AUTH_SCHEME", "auth-scheme", "url",
                       "fields-v1 (G1 message) | fields-v2 (G2) | url (G3)"},
    [O_REPLAY_GUARD] = {"SGPU_REPLAY_GUARD", "replay-guard", "@",
                        "reject reused grants (default on for fields-*, off for url)"},
    [O_REPLAY_WINDOW] = {"SGPU_REPLAY_WINDOW", "replay-window", "100",
                         "reqnum may trail the highest accepted one by this much"},
    [O_REPLAY_HISTORY] = {"SGPU_REPLAY_HISTORY", "replay-history", "4096",
                          "accepted grants remembered by the replay guard (bounded memory)"},
    [O_URL_CACHE] = {"SGPU_URL_CACHE", "url-cache", "256",
                     "verified url-scheme grants cached (0 = verify every request)"},
    [O_ENDPOINT] = {"SGPU_GRANT_ENDPOINT", "grant-endpoint", "",
                    "this worker's endpoint name: a grant naming another endpoint gets 401 "
                    "(empty = not checked)"},
    [O_REPORT_FORMAT] = {"SGPU_REPORT_FORMAT", "report-format", "v3",
                         "v1 (12 fields) | v3 (17 fields + /delete_requests/)"},
    [O_CONFIG] = {"SGPU_CONFIG", "config", NULL, "JSON file of custom handlers"},
    [O_DRAIN_TIMEOUT] = {"SGPU_DRAIN_TIMEOUT", "drain-timeout", "30",
                         "seconds in-flight requests may take after SIGTERM"},
    [O_MAX_BODY] = {"SGPU_MAX_BODY", "max-body", "64M", "request body limit (bytes; K/M/G)"},
    [O_MAX_HEADERS] = {"SGPU_MAX_HEADERS", "max-headers", "16K",
                       "request line + headers limit (bytes)"},
    [O_IDLE_TIMEOUT] = {"SGPU_IDLE_TIMEOUT", "idle-timeout", "60",
                        "keep-alive idle / read inactivity timeout (s)"},
    [O_REQUEST_DEADLINE] = {"SGPU_REQUEST_DEADLINE", "request-deadline", "30",
                            "time allowed to receive a request head and body (s; slowloris)"},
    [O_UPSTREAM_TIMEOUT] = {"SGPU_UPSTREAM_TIMEOUT", "upstream-timeout", "0",
                            "model request deadline (s; 0 = none)"},
    [O_MAX_RESPONSE] = {"SGPU_MAX_RESPONSE", "max-response", "256M",
                        "buffered (non-streamed) model response limit"},
    [O_HEALTH_INTERVAL] = {"SGPU_HEALTH_INTERVAL", "health-interval", "5",
                           "seconds between model health checks"},
    [O_HEALTH_TIMEOUT] = {"SGPU_HEALTH_TIMEOUT", "health-timeout", "10",
                          "health probe timeout (s)"},
    [O_HEALTH_FAILURES] = {"SGPU_HEALTH_FAILURES", "health-failures", "3",
                           "consecutive failed probes (after the first success) that are fatal"},
    [O_BENCH] = {"SGPU_BENCHMARK", "benchmark", "true", "run the benchmark after load"},
    [O_BENCH_RUNS] = {"SGPU_BENCHMARK_RUNS", "benchmark-runs", "3", "benchmark rounds"},
    [O_BENCH_CONCURRENCY] = {"SGPU_BENCHMARK_CONCURRENCY", "benchmark-concurrency", "10",
                             "requests per round (1 for serial handlers)"},
    [O_BENCH_FILE] = {"SGPU_BENCHMARK_FILE", "benchmark-file", ".has_benchmark",
                      "benchmark cache file"},
    [O_BENCH_TIMEOUT] = {"SGPU_BENCHMARK_TIMEOUT", "benchmark-timeout", "600",
                         "per-request benchmark timeout (s)"},
    [O_BENCH_PAYLOAD] = {"SGPU_BENCHMARK_PAYLOAD", "benchmark-payload", NULL,
                         "benchmark payload JSON, sent as given (replaces a preset's sized one)"},
    [O_BENCH_ROUTE] = {"SGPU_BENCHMARK_ROUTE", "benchmark-route", "/",
                       "route the generic benchmark payload is posted to"},
    [O_MAX_PERF] = {"SGPU_MAX_PERF", "max-perf", "100",
                    "max_perf reported when no benchmark runs (workload/s)"},
    [O_REPORT_INTERVAL] = {"SGPU_REPORT_INTERVAL", "report-interval", "10",
                           "longest gap between status reports (s)"},
    [O_REPORT_TIMEOUT] = {"SGPU_REPORT_TIMEOUT", "report-timeout", "5",
                          "timeout of one report POST (s)"},
    [O_QUEUE_LIMIT] = {"SGPU_QUEUE_LIMIT", "queue-limit", "1024",
                       "queued requests per serial handler before 429"},
    [O_LOG_POLL] = {"SGPU_LOG_POLL", "log-poll", "0.1", "MODEL_LOG poll interval (s)"},
    [O_FULL_PARSE_MAX] = {"SGPU_FULL_PARSE_MAX", "full-parse-max", "32K",
                          "bodies above this size: only auth_data is fully parsed, the payload is "
                          "located and forwarded (the model validates it)"},
    [O_MAX_CONNECTIONS] = {"SGPU_MAX_CONNECTIONS", "max-connections", "4096",
                           "open client connections before accepting pauses (clamped to the fd "
                           "limit); at the limit the oldest idle connection is closed"},
    [O_BODY_BUDGET] = {"SGPU_BODY_BUDGET", "body-budget", "256M",
                       "request bytes being received, summed over all connections; past it the "
                       "connection holding the most gets 503 (0 = unlimited)"},
    [O_ENGINE_CA] = {"SGPU_ENGINE_CA", "engine-ca", NULL,
                     "extra CA bundle (PEM) for https REPORT_ADDR / PUBKEY_URL"},
    [O_ENGINE_INSECURE] = {"SGPU_ENGINE_INSECURE", "engine-insecure", "false",
                           "do not verify the engine's TLS certificate (tests only)"},
    [O_WORKLOAD] = {"SGPU_WORKLOAD", "workload", "100",
                    "generic: constant workload, or default when the field is absent"},
    [O_MAX_WORKLOAD] = {"SGPU_MAX_WORKLOAD", "max-workload", "1000000",
                        "cap on one request's workload and on one grant's cost (a session's "
                        "load); larger values are clamped"},
    [O_WORKLOAD_FIELD] = {"SGPU_WORKLOAD_FIELD", "workload-field", NULL,
                          "generic: dotted payload path holding the workload"},
    [O_PARALLEL] = {"SGPU_PARALLEL", "parallel", "true",
                    "generic: requests may run concurrently (false = FIFO, one at a time)"},
    [O_MAX_QUEUE_TIME] = {"SGPU_MAX_QUEUE_TIME", "max-queue-time", "30",
                          "estimated wait (s) above which requests get 429 ('none' = never)"},
    [O_VERSION] = {"SGPU_REPORT_VERSION", "report-version", SGPU_WORKER_VERSION,
                   "`version` field of v3 reports"},
    [O_HTTP_PORT] = {"WORKER_HTTP_PORT", "http-port", "@",
                     "plain-HTTP port serving only POST /session/end; opened when USE_SSL is true "
                     "or this is set (default WORKER_PORT+1; 0 = ephemeral; -1 = off)"},
    [O_MAX_SESSIONS] = {"SGPU_MAX_SESSIONS", "max-sessions", "10",
                        "open sessions before /session/create answers 429 (-1, 0 or none = "
                        "unlimited)"},
    [O_SESSION_MAX_TTL] = {"SGPU_SESSION_MAX_TTL", "session-max-ttl", "3600",
                           "a session's expiration is never set further than this many seconds "
                           "ahead (caps lifetime and per-request extensions)"},
    [O_SESSION_GC] = {"SGPU_SESSION_GC", "session-gc", "1",
                      "seconds between sweeps that close expired sessions"},
    [O_UPDATE_FLAG_FILE] = {"SGPU_UPDATE_FLAG_FILE", "update-flag-file", "/.force_update",
                            "file written by POST /pyworker/update (needs MASTER_TOKEN)"},
};

void config_usage(FILE *out)
{
    fprintf(out, "usage: sgpu-worker [--flag value ...]\n\n"
                 "A drop-in replacement for Vast.ai's PyWorker.  Every setting is an environment\n"
                 "variable (PyWorker names where they exist) or a flag; flags win.\n\n");
    for (int i = 0; i < NOPT; i++) {
        const struct opt *o = &opts[i];
        fprintf(out, "  --%-24s %-24s %s", o->flag, o->env, o->help);
        if (o->def && strcmp(o->def, "@") != 0)
            fprintf(out, " [%s]\n", *o->def ? o->def : "\"\"");
        else
            fprintf(out, "\n");
    }
    fprintf(out, "  %-51s %s\n", "VAST_TCP_PORT_<WORKER_PORT>",
            "external port in the reported url [WORKER_PORT]");
    fprintf(out, "  %-51s %s\n", "SGPU_LOG_LEVEL", "debug | info | warn | error [info]");
    fprintf(out, "\n  --help  this text\n");
}

int parse_bool(const char *s, bool *out)
{
    static const char *const t[] = {"y", "yes", "t", "true", "on", "1"};
    static const char *const f[] = {"n", "no", "f", "false", "off", "0"};
    for (size_t i = 0; i < 6; i++) {
        if (strcasecmp(s, t[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, f[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

static int bad(int i, const char *val, const char *why)
{
    fprintf(stderr, "sgpu-worker: invalid %s (--%s) value '%s': %s\n", opts[i].env, opts[i].flag,
            val, why);
    return -1;
}

static int get_double(const char **v, int i, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(v[i], &end);
    if (end == v[i] || *end || errno || !isfinite(d) || d < lo || d > hi) {
        char why[96];
        snprintf(why, sizeof why, "expected a number in [%g, %g]", lo, hi);
        return bad(i, v[i], why);
    }
    *out = d;
    return 0;
}

static int get_int(const char **v, int i, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v[i], &end, 10);
    if (end == v[i] || *end || errno || x < lo || x > hi) {
        char why[96];
        snprintf(why, sizeof why, "expected an integer in [%lld, %lld]", lo, hi);
        return bad(i, v[i], why);
    }
    *out = x;
    return 0;
}

static int get_size(const char **v, int i, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v[i], &end, 10);
    if (end == v[i] || errno || v[i][0] == '-') return bad(i, v[i], "expected bytes (K/M/G)");
    unsigned long long mul = 1;
    if (*end == 'K' || *end == 'k')
        mul = 1ULL << 10, end++;
    else if (*end == 'M' || *end == 'm')
        mul = 1ULL << 20, end++;
    else if (*end == 'G' || *end == 'g')
        mul = 1ULL << 30, end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end || x == 0 || x > (1ULL << 40) / mul) return bad(i, v[i], "expected bytes (K/M/G)");
    *out = (size_t)(x * mul);
    return 0;
}

static int get_bool(const char **v, int i, bool *out)
{
    if (parse_bool(v[i], out) != 0) return bad(i, v[i], "expected true/false (y/n, 1/0, on/off)");
    return 0;
}

static int get_str(const char **v, int i, char *dst, size_t n)
{
    if (strlen(v[i]) >= n) return bad(i, v[i], "too long");
    snprintf(dst, n, "%s", v[i]);
    return 0;
}

/* Split on sep, trimming nothing (patterns are substrings); empty items dropped. */
static char **split(const char *s, char sep, size_t *n)
{
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        if (*p == sep) cap++;
    char **out = calloc(cap + 1, sizeof *out);
    *n = 0;
    if (!out) return NULL;
    const char *p = s;
    for (;;) {
        const char *e = strchr(p, sep);
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l) out[(*n)++] = strndup(p, l);
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

void config_set_url(struct wconfig *c, int port)
{
    bool v6 = strchr(c->public_ip, ':') != NULL; /* IPv6 literals are bracketed */
    snprintf(c->url, sizeof c->url, "%s://%s%s%s:%d", c->use_ssl ? "https" : "http", v6 ? "[" : "",
             c->public_ip, v6 ? "]" : "", port);
}

int config_load(struct wconfig *c, int argc, char **argv)
{
    memset(c, 0, sizeof *c);
    const char *v[NOPT];
    for (int i = 0; i < NOPT; i++) {
        const char *e = getenv(opts[i].env);
        v[i] = e ? e : NULL;
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            config_usage(stdout);
            exit(0);
        }
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, "sgpu-worker: unexpected argument '%s' (see --help)\n", arg);
            return -1;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        int found = -1;
        for (int i = 0; i < NOPT; i++)
            if (strlen(opts[i].flag) == nl && strncmp(opts[i].flag, name, nl) == 0) found = i;
        if (found < 0) {
            fprintf(stderr, "sgpu-worker: unknown flag '%s' (see --help)\n", arg);
            return -1;
        }
        if (eq) {
            v[found] = eq + 1;
        } else if (a + 1 < argc) {
            v[found] = argv[++a];
        } else {
            fprintf(stderr, "sgpu-worker: flag '%s' needs a value\n", arg);
            return -1;
        }
    }
    for (int i = 0; i < NOPT; i++)
        if (!v[i] && opts[i].def && strcmp(opts[i].def, "@") != 0) v[i] = opts[i].def;

    long long ll;
    double d;
    if (get_int(v, O_WORKER_PORT, 0, 65535, &ll)) return -1;
    c->port = (int)ll;
    if (get_str(v, O_HOST, c->host, sizeof c->host)) return -1;
    const struct preset_defaults *pd = NULL;
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (strcmp(v[O_BACKEND], presets[i].name) == 0) pd = &presets[i];
    if (!pd) return bad(O_BACKEND, v[O_BACKEND], "expected tgi, openai, comfyui or generic");
    snprintf(c->backend, sizeof c->backend, "%s", pd->name);
    if (!v[O_MODEL_SERVER_URL]) v[O_MODEL_SERVER_URL] = pd->url;
    if (get_str(v, O_MODEL_SERVER_URL, c->model_url, sizeof c->model_url)) return -1;
    struct http_url hu;
    if (http_url_parse(c->model_url, &hu) != 0)
        return bad(O_MODEL_SERVER_URL, c->model_url, "expected http[s]://host:port");
    if (v[O_MODEL_LOG] && get_str(v, O_MODEL_LOG, c->model_log, sizeof c->model_log)) return -1;
    c->load_msgs =
        split(v[O_MODEL_LOAD_LOG_MSG] ? v[O_MODEL_LOAD_LOG_MSG] : pd->load, '|', &c->nload);
    c->error_msgs =
        split(v[O_MODEL_ERROR_LOG_MSGS] ? v[O_MODEL_ERROR_LOG_MSGS] : pd->error, '|', &c->nerror);
    c->info_msgs =
        split(v[O_MODEL_INFO_LOG_MSGS] ? v[O_MODEL_INFO_LOG_MSGS] : pd->info, '|', &c->ninfo);
    if (v[O_MODEL_HEALTH_ENDPOINT] &&
        get_str(v, O_MODEL_HEALTH_ENDPOINT, c->health_endpoint, sizeof c->health_endpoint))
        return -1;
    if (c->health_endpoint[0] && c->health_endpoint[0] != '/' &&
        http_url_parse(c->health_endpoint, &hu) != 0)
        return bad(O_MODEL_HEALTH_ENDPOINT, c->health_endpoint, "expected /path or a URL");
    c->report_addrs = split(v[O_REPORT_ADDR], ',', &c->nreport);
    for (size_t i = 0; i < c->nreport; i++) {
        /* trim spaces around items */
        char *s = c->report_addrs[i];
        while (*s == ' ')
            memmove(s, s + 1, strlen(s));
        size_t l = strlen(s);
        while (l && s[l - 1] == ' ')
            s[--l] = '\0';
        if (http_url_parse(s, &hu) != 0)
            return bad(O_REPORT_ADDR, s, "expected http[s]://host[:port]");
    }
    if (get_int(v, O_CONTAINER_ID, -((long long)1 << 53), (long long)1 << 53, &c->container_id))
        return -1;
    if (get_str(v, O_PUBLIC_IPADDR, c->public_ip, sizeof c->public_ip)) return -1;
    if (get_bool(v, O_USE_SSL, &c->use_ssl)) return -1;
    if (get_str(v, O_TLS_CERT, c->tls_cert, sizeof c->tls_cert)) return -1;
    if (get_str(v, O_TLS_KEY, c->tls_key, sizeof c->tls_key)) return -1;
    if (get_bool(v, O_UNSECURED, &c->unsecured)) return -1;
    if (get_str(v, O_MASTER_TOKEN, c->master_token, sizeof c->master_token)) return -1;
    if (v[O_PUBKEY_FILE] && get_str(v, O_PUBKEY_FILE, c->pubkey_file, sizeof c->pubkey_file))
        return -1;
    if (v[O_PUBKEY_URL]) {
        if (get_str(v, O_PUBKEY_URL, c->pubkey_url, sizeof c->pubkey_url)) return -1;
        if (c->pubkey_url[0] && http_url_parse(c->pubkey_url, &hu) != 0)
            return bad(O_PUBKEY_URL, c->pubkey_url, "expected a URL");
    } else if (c->nreport) {
        /* B13: built from the first address, not from the whole comma list */
        const char *a = c->report_addrs[0];
        size_t l = strlen(a);
        while (l && a[l - 1] == '/')
            l--;
        snprintf(c->pubkey_url, sizeof c->pubkey_url, "%.*s/pubkey/", (int)l, a);
    }
    if (get_double(v, O_PUBKEY_REFRESH, 0, 1e9, &c->pubkey_refresh)) return -1;
    const char *sch = v[O_AUTH_SCHEME];
    if (strcmp(sch, "fields-v1") == 0)
        c->scheme = AUTH_FIELDS_V1;
    else if (strcmp(sch, "fields-v2") == 0)
        c->scheme = AUTH_FIELDS_V2;
    else if (strcmp(sch, "url") == 0)
        c->scheme = AUTH_URL;
    else
        return bad(O_AUTH_SCHEME, sch, "expected fields-v1, fields-v2 or url");
    c->replay_guard = c->scheme != AUTH_URL;
    if (v[O_REPLAY_GUARD] && get_bool(v, O_REPLAY_GUARD, &c->replay_guard)) return -1;
    if (c->replay_guard && c->scheme == AUTH_URL)
        /* every url-scheme grant for this worker signs the same message (and so
         * carries the same signature): a replay guard would reject all but one */
        return bad(O_REPLAY_GUARD, v[O_REPLAY_GUARD],
                   "needs SGPU_AUTH_SCHEME fields-v1 or fields-v2 (url grants are identical)");
    if (get_int(v, O_REPLAY_WINDOW, 0, 1 << 30, &ll)) return -1;
    c->replay_window = (int)ll;
    if (get_int(v, O_REPLAY_HISTORY, 1, 1 << 20, &ll)) return -1;
    c->replay_history = (int)ll;
    if (get_int(v, O_URL_CACHE, 0, 1 << 16, &ll)) return -1;
    c->url_cache = (int)ll;
    if (get_str(v, O_ENDPOINT, c->endpoint, sizeof c->endpoint)) return -1;
    if (strcmp(v[O_REPORT_FORMAT], "v1") == 0)
        c->report_fmt = REPORT_V1;
    else if (strcmp(v[O_REPORT_FORMAT], "v3") == 0)
        c->report_fmt = REPORT_V3;
    else
        return bad(O_REPORT_FORMAT, v[O_REPORT_FORMAT], "expected v1 or v3");
    if (v[O_CONFIG] && get_str(v, O_CONFIG, c->config_file, sizeof c->config_file)) return -1;
    if (get_double(v, O_DRAIN_TIMEOUT, 0, 86400, &c->drain_timeout)) return -1;
    if (get_size(v, O_MAX_BODY, &c->max_body)) return -1;
    if (get_size(v, O_MAX_HEADERS, &c->max_headers)) return -1;
    if (get_size(v, O_FULL_PARSE_MAX, &c->full_parse_max)) return -1;
    if (get_int(v, O_MAX_CONNECTIONS, 1, 1 << 22, &ll)) return -1;
    c->max_connections = (int)ll;
    if (get_size(v, O_BODY_BUDGET, &c->body_budget)) return -1;
    if (get_double(v, O_IDLE_TIMEOUT, 0.1, 86400, &c->idle_timeout)) return -1;
    if (get_double(v, O_REQUEST_DEADLINE, 0.1, 86400, &c->request_deadline)) return -1;
    if (get_double(v, O_UPSTREAM_TIMEOUT, 0, 1e7, &c->upstream_timeout)) return -1;
    if (get_size(v, O_MAX_RESPONSE, &c->max_response)) return -1;
    if (get_double(v, O_HEALTH_INTERVAL, 0.01, 86400, &c->health_interval)) return -1;
    if (get_double(v, O_HEALTH_TIMEOUT, 0.01, 86400, &c->health_timeout)) return -1;
    if (get_int(v, O_HEALTH_FAILURES, 1, 1000000, &ll)) return -1;
    c->health_failures = (int)ll;
    if (get_bool(v, O_BENCH, &c->bench_enabled)) return -1;
    if (get_int(v, O_BENCH_RUNS, 1, 1000, &ll)) return -1;
    c->bench_runs = (int)ll;
    if (get_int(v, O_BENCH_CONCURRENCY, 1, 1000, &ll)) return -1;
    c->bench_concurrency = (int)ll;
    if (get_str(v, O_BENCH_FILE, c->bench_file, sizeof c->bench_file)) return -1;
    if (get_double(v, O_BENCH_TIMEOUT, 0.01, 1e6, &c->bench_timeout)) return -1;
    if (v[O_BENCH_PAYLOAD]) {
        struct pyj_value *pv = NULL;
        char err[128];
        if (pyj_parse(v[O_BENCH_PAYLOAD], strlen(v[O_BENCH_PAYLOAD]), &pv, err, sizeof err) != 0)
            return bad(O_BENCH_PAYLOAD, v[O_BENCH_PAYLOAD], err);
        pyj_free(pv);
        c->bench_payload = strdup(v[O_BENCH_PAYLOAD]);
    }
    if (get_str(v, O_BENCH_ROUTE, c->bench_route, sizeof c->bench_route)) return -1;
    if (c->bench_route[0] != '/') return bad(O_BENCH_ROUTE, c->bench_route, "expected /path");
    if (get_double(v, O_MAX_PERF, 0, 1e12, &c->max_perf)) return -1;
    if (get_double(v, O_REPORT_INTERVAL, 0.05, 86400, &c->report_interval)) return -1;
    if (get_double(v, O_REPORT_TIMEOUT, 0.05, 3600, &c->report_timeout)) return -1;
    if (get_int(v, O_QUEUE_LIMIT, 0, 1 << 24, &ll)) return -1;
    c->queue_limit = (int)ll;
    if (get_double(v, O_LOG_POLL, 0.001, 60, &c->log_poll)) return -1;
    if (v[O_ENGINE_CA] && get_str(v, O_ENGINE_CA, c->engine_ca, sizeof c->engine_ca)) return -1;
    if (get_bool(v, O_ENGINE_INSECURE, &c->engine_insecure)) return -1;
    if (get_double(v, O_MAX_WORKLOAD, 1, 1e12, &c->max_workload)) return -1;
    if (get_double(v, O_WORKLOAD, 0, c->max_workload, &c->wl_constant)) return -1;
    if (v[O_WORKLOAD_FIELD] && get_str(v, O_WORKLOAD_FIELD, c->wl_field, sizeof c->wl_field))
        return -1;
    if (get_bool(v, O_PARALLEL, &c->parallel)) return -1;
    if (strcasecmp(v[O_MAX_QUEUE_TIME], "none") == 0 || strcmp(v[O_MAX_QUEUE_TIME], "") == 0) {
        c->max_queue_time = -1;
    } else {
        if (get_double(v, O_MAX_QUEUE_TIME, 0, 1e9, &d)) return -1;
        c->max_queue_time = d;
    }
    if (get_str(v, O_VERSION, c->version, sizeof c->version)) return -1;
    c->http_port_set = v[O_HTTP_PORT] != NULL;
    if (v[O_HTTP_PORT]) {
        if (strcasecmp(v[O_HTTP_PORT], "off") == 0) v[O_HTTP_PORT] = "-1";
        if (get_int(v, O_HTTP_PORT, -1, 65535, &ll)) return -1;
        c->http_port = (int)ll;
    } else {
        c->http_port = c->port ? (c->port < 65535 ? c->port + 1 : -1) : 0;
    }
    if (strcasecmp(v[O_MAX_SESSIONS], "none") == 0) {
        c->max_sessions = 0;
    } else {
        if (get_int(v, O_MAX_SESSIONS, -1, 1 << 24, &ll)) return -1;
        c->max_sessions = ll < 0 ? 0 : (int)ll; /* -1 and 0 = unlimited (B20) */
    }
    if (get_double(v, O_SESSION_MAX_TTL, 1, 1e7, &c->session_max_ttl)) return -1;
    if (get_double(v, O_SESSION_GC, 0.05, 3600, &c->session_gc)) return -1;
    if (get_str(v, O_UPDATE_FLAG_FILE, c->update_flag_file, sizeof c->update_flag_file)) return -1;
    if (!c->update_flag_file[0])
        return bad(O_UPDATE_FLAG_FILE, v[O_UPDATE_FLAG_FILE], "expected a path");

    /* reported url: http[s]://$PUBLIC_IPADDR:$VAST_TCP_PORT_<WORKER_PORT> */
    char pname[64];
    snprintf(pname, sizeof pname, "VAST_TCP_PORT_%d", c->port);
    const char *ext = getenv(pname);
    c->public_port = c->port;
    if (ext && *ext) {
        char *end;
        long p = strtol(ext, &end, 10);
        if (*end || p <= 0 || p > 65535) {
            fprintf(stderr, "sgpu-worker: invalid %s value '%s': expected a port\n", pname, ext);
            return -1;
        }
        c->public_port = (int)p;
    }
    config_set_url(c, c->public_port);
    return 0;
}

bool worker_is_g1(const struct wconfig *c)
{
    return c->report_fmt == REPORT_V1 || c->scheme == AUTH_FIELDS_V1;
}
