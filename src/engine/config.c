/* Endpoint parameters (defaults, validation, JSON) and the engine's command line. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "log.h"
#include "opts.h"
#include "pyjson.h"

void config_params_default(struct ep_params *p)
{
    /* vast-cli `create endpoint` defaults (docs/protocol.md §6.1). */
    p->min_load = 0.0;
    p->min_cold_load = 0.0;
    p->target_util = 0.9;
    p->cold_mult = 2.5;
    p->min_workers = 5;
    p->max_workers = 20;
    p->max_queue_time = 30.0;
    p->target_queue_time = 10.0;
    p->inactivity_timeout = 0.0;
    p->sig_scheme = SIG_URL;
    p->scaler = SCALER_SGPU;
}

/* sig_scheme values by name (the API's and SGPU_AUTH_SCHEME's spelling). */
static const char *const scheme_names[] = {
    [SIG_URL] = "url",
    [SIG_FIELDS_V2] = "fields-v2",
    [SIG_FIELDS_V1] = "fields-v1",
};
#define NSCHEMES (sizeof scheme_names / sizeof scheme_names[0])

const char *config_scheme_name(enum sig_scheme s)
{
    return (size_t)s < NSCHEMES ? scheme_names[s] : "url";
}

int config_scheme_parse(const char *s, enum sig_scheme *out)
{
    for (size_t i = 0; i < NSCHEMES; i++) {
        if (strcmp(s, scheme_names[i]) == 0) {
            *out = (enum sig_scheme)i;
            return 0;
        }
    }
    return -1;
}

static bool ascii_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* 1-64 bytes of [A-Za-z0-9._-] starting with a letter or digit: a name is used in URLs, log
 * lines, file names and provider commands, so ".", "..", ".hidden" and "-option" are out,
 * as are slashes, spaces, control and non-ASCII bytes. */
bool config_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > EP_NAME_MAX || !ascii_alnum((unsigned char)s[0])) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!ascii_alnum(c) && c != '.' && c != '_' && c != '-') return false;
    }
    return true;
}

/* A JSON number (int or double, not bool/string) that is finite.  0 or -1. */
static int num_of(struct json_object *v, double *out)
{
    enum json_type t = json_object_get_type(v);
    if (t != json_type_int && t != json_type_double) return -1;
    double d = json_object_get_double(v);
    if (!isfinite(d)) return -1;
    *out = d;
    return 0;
}

static int get_num(struct json_object *o, const char *key, double lo, double hi, bool lo_open,
                   double *dst, char *err, size_t errlen)
{
    struct json_object *v;
    /* null = unset: Vast's CLI sends every option, unset ones as null */
    if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) return 0;
    double d;
    if (num_of(v, &d) != 0) {
        snprintf(err, errlen, "%s must be a finite number", key);
        return -1;
    }
    if ((lo_open ? d <= lo : d < lo) || d > hi) {
        snprintf(err, errlen, "%s out of range (%s%g..%g)", key, lo_open ? ">" : "", lo, hi);
        return -1;
    }
    *dst = d;
    return 0;
}

static int get_int(struct json_object *o, const char *key, int lo, int hi, int *dst, char *err,
                   size_t errlen)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) return 0;
    double d;
    if (num_of(v, &d) != 0 || d != floor(d)) {
        snprintf(err, errlen, "%s must be an integer", key);
        return -1;
    }
    if (d < lo || d > hi) {
        snprintf(err, errlen, "%s out of range (%d..%d)", key, lo, hi);
        return -1;
    }
    *dst = (int)d;
    return 0;
}

int config_params_apply(struct ep_params *p, struct json_object *o, char *err, size_t errlen)
{
    struct ep_params n = *p;
    const double big = 1e12;
    if (get_num(o, "min_load", 0, big, false, &n.min_load, err, errlen) ||
        get_num(o, "min_cold_load", 0, big, false, &n.min_cold_load, err, errlen) ||
        get_num(o, "target_util", 0, 1, true, &n.target_util, err, errlen) ||
        get_num(o, "cold_mult", 1, 1000, false, &n.cold_mult, err, errlen) ||
        get_int(o, "cold_workers", 0, 10000, &n.min_workers, err, errlen) ||
        get_int(o, "min_workers", 0, 10000, &n.min_workers, err, errlen) ||
        get_int(o, "max_workers", 0, 10000, &n.max_workers, err, errlen) ||
        get_num(o, "max_queue_time", 0, 1e7, false, &n.max_queue_time, err, errlen) ||
        get_num(o, "target_queue_time", 0, 1e7, false, &n.target_queue_time, err, errlen) ||
        get_num(o, "inactivity_timeout", -1e9, 1e9, false, &n.inactivity_timeout, err, errlen))
        return -1;
    struct json_object *v;
    if (json_object_object_get_ex(o, "sig_scheme", &v) && !json_object_is_type(v, json_type_null)) {
        if (!json_object_is_type(v, json_type_string) ||
            config_scheme_parse(json_object_get_string(v), &n.sig_scheme) != 0) {
            snprintf(err, errlen, "sig_scheme must be \"url\", \"fields-v2\" or \"fields-v1\"");
            return -1;
        }
    }
    if (json_object_object_get_ex(o, "scaler", &v)) {
        const char *sn = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
        if (strcmp(sn, "sgpu") == 0) {
            n.scaler = SCALER_SGPU;
        } else if (strcmp(sn, "kpa") == 0) {
            n.scaler = SCALER_KPA;
        } else {
            snprintf(err, errlen, "scaler must be \"sgpu\" or \"kpa\"");
            return -1;
        }
    }
    *p = n;
    return 0;
}

static void put_num(struct sbuf *out, const char *key, double v)
{
    char buf[40];
    pyj_format_float(v, buf, sizeof buf);
    sbuf_printf(out, "\"%s\": %s, ", key, buf);
}

void config_params_write(const struct ep_params *p, struct sbuf *out)
{
    put_num(out, "min_load", p->min_load);
    put_num(out, "min_cold_load", p->min_cold_load);
    put_num(out, "target_util", p->target_util);
    put_num(out, "cold_mult", p->cold_mult);
    sbuf_printf(out, "\"cold_workers\": %d, \"min_workers\": %d, \"max_workers\": %d, ",
                p->min_workers, p->min_workers, p->max_workers);
    put_num(out, "max_queue_time", p->max_queue_time);
    put_num(out, "target_queue_time", p->target_queue_time);
    put_num(out, "inactivity_timeout", p->inactivity_timeout);
    sbuf_printf(out, "\"sig_scheme\": \"%s\", \"scaler\": \"%s\"",
                config_scheme_name(p->sig_scheme), p->scaler == SCALER_KPA ? "kpa" : "sgpu");
}

/* ---- the engine's command line ---- */

static int parse_listen(void *cfg, const char *s, char *why, size_t n)
{
    struct engine_opts *o = cfg;
    const char *colon = strrchr(s, ':');
    if (!colon) return snprintf(why, n, "expected HOST:PORT"), -1;
    size_t hl = (size_t)(colon - s);
    const char *h = s;
    if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') { /* [v6]:port */
        h = s + 1;
        hl -= 2;
    }
    if (hl >= sizeof o->listen_host) return snprintf(why, n, "host too long"), -1;
    long long port;
    if (opts_parse_ll(colon + 1, 0, 65535, &port, why, n)) return -1;
    memcpy(o->listen_host, h, hl);
    o->listen_host[hl] = '\0';
    if (hl == 0) snprintf(o->listen_host, sizeof o->listen_host, "0.0.0.0");
    o->listen_port = (int)port;
    return 0;
}

/* "LO-HI": the local provider's instance ports (each instance takes two). */
static int parse_port_range(void *cfg, const char *s, char *why, size_t n)
{
    struct engine_opts *o = cfg;
    char *end;
    errno = 0;
    long lo = strtol(s, &end, 10);
    long hi = -1;
    if (!errno && end != s && *end == '-') {
        const char *h = end + 1;
        hi = strtol(h, &end, 10);
        if (errno || end == h || *end) hi = -1;
    }
    if (hi < 0 || lo < 1 || hi > 65535 || hi < lo + 1)
        return snprintf(why, n, "expected LO-HI, 1..65535, at least 2 ports"), -1;
    o->local_port_lo = (int)lo;
    o->local_port_hi = (int)hi;
    return 0;
}

static int parse_log_level(void *cfg, const char *s, char *why, size_t n)
{
    struct engine_opts *o = cfg;
    enum log_level l;
    if (log_parse_level(s, &l) != 0 || strlen(s) >= sizeof o->log_level)
        return snprintf(why, n, "expected debug, info, warn or error"), -1;
    snprintf(o->log_level, sizeof o->log_level, "%s", s);
    return 0;
}

#define AT(f) OPT_AT(struct engine_opts, f)
#define BUF(f) OPT_BUF(struct engine_opts, f)
#define SECS(flag, field, d, text)                                                                 \
    {                                                                                              \
        .name = flag, .type = OPT_DBL, AT(field), .lo = 0, .hi = 1e7, .def = d, .meta = "S",       \
        .help = text                                                                               \
    }

static const struct opt rows[] = {
    {.name = "data-dir",
     BUF(data_dir),
     .def = "./sgpu-data",
     .meta = "DIR",
     .help = "database, signing key, admin api_key, engine.addr, provider.log, workers/"},
    {.name = "listen",
     .type = OPT_FUNC,
     .parse = parse_listen,
     .def = "127.0.0.1:8080",
     .meta = "HOST:PORT",
     .help = "listen address; port 0 = ephemeral (written to DIR/engine.addr)"},
    {.name = "public-url",
     BUF(public_url),
     .meta = "URL",
     .help = "base URL workers are given as REPORT_ADDR / PUBKEY_URL",
     .def_help = "http://HOST:PORT, the bound port"},
    {.name = "tick-ms",
     .type = OPT_INT,
     AT(tick_ms),
     .lo = 1,
     .hi = 60000,
     .def = "1000",
     .meta = "N",
     .help = "scaler period (ms)"},
    {.name = "log-level",
     .env = "SGPU_LOG_LEVEL",
     .type = OPT_FUNC,
     .parse = parse_log_level,
     .def = "info",
     .meta = "L",
     .help = "debug | info | warn | error (the flag wins)"},
    {.name = "keep-workers",
     .type = OPT_FLAG,
     AT(keep_workers),
     .help = "on SIGTERM leave local instances running (re-adopted at the next start)"},
    SECS("unavailable-after-s", unavailable_after_s, "30",
         "a worker with no report this long is unavailable (not routed)"),
    SECS("unavailable-destroy-s", unavailable_destroy_s, "120",
         "an unavailable worker is destroyed and replaced after this much more"),
    SECS("drain-grace-s", drain_grace_s, "2",
         "a draining worker is drained when a report this long after its last grant shows no work"),
    SECS("drain-timeout-s", drain_timeout_s, "600", "cap on draining"),
    SECS("scale-down-delay-s", scale_down_delay_s, "60",
         "active capacity only shrinks to the largest target of this window"),
    SECS("stable-window-s", stable_window_s, "60", "time constant of the slow load average"),
    SECS("panic-window-s", panic_window_s, "6", "time constant of the fast load average"),
    SECS("provider-timeout-s", provider_timeout_s, "300",
         "a command provider's command running longer is killed"),
    SECS("error-backoff-s", error_backoff_s, "5",
         "first delay after an instance failure; doubles, at most 32x"),
    {.name = "error-breaker",
     .type = OPT_INT,
     AT(error_breaker),
     .lo = 0,
     .hi = 1000000,
     .def = "5",
     .meta = "N",
     .help = "consecutive failures that make a workergroup failing (0 = never)"},
    SECS("error-reset-s", error_reset_s, "60",
         "a worker ready this long after the last failure resets the failure count"),
    SECS("ready-timeout-s", ready_timeout_s, "1800",
         "a worker not ready this long after its create failed (0 = no limit)"),
    {.name = "sign-threads",
     .type = OPT_INT,
     AT(sign_threads),
     .lo = 0,
     .hi = 64,
     .def = "0",
     .meta = "N",
     .help = "threads signing grants (0 = on the event loop)"},
    {.name = "route-hold-ms",
     .type = OPT_INT,
     AT(route_hold_ms),
     .lo = 0,
     .hi = 8000,
     .def = "2000",
     .meta = "N",
     /* well under the Vast SDK's 10 s client timeout on /route/ */
     .help = "long poll of a /route/ call that would wait (0 = answer at once)"},
    {.name = "route-hold-max",
     .type = OPT_INT,
     AT(route_hold_max),
     .lo = 0,
     .hi = 100000,
     .def = "4096",
     .meta = "N",
     .help = "held /route/ calls at most"},
    SECS("shutdown-timeout-s", shutdown_timeout_s, "55",
         "SIGTERM: wait this long for local instances to stop"),
    {.name = "max-connections",
     .type = OPT_INT,
     AT(max_connections),
     .lo = 1,
     .hi = 1 << 22,
     .def = "4096",
     .meta = "N",
     .help = "open client connections; at the limit the oldest idle one is closed"},
    {.name = "request-deadline-s",
     .type = OPT_DBL,
     AT(request_deadline_s),
     .lo = 0.1,
     .hi = 86400,
     .def = "30",
     .meta = "S",
     .help = "seconds from a request's first byte to its whole head and body"},
    {.name = "body-budget-mb",
     .type = OPT_DBL,
     AT(body_budget_mb),
     .lo = 0,
     .hi = 1 << 20,
     .def = "64",
     .meta = "N",
     .help = "MiB of requests being received over all connections (0 = unlimited)"},
    {.name = "local-ports",
     .type = OPT_FUNC,
     .parse = parse_port_range,
     .meta = "LO-HI",
     .help = "the local provider's instance ports, two each",
     .def_help = "kernel-chosen"},
};

static const struct opts_spec spec = {"sgpu-engine", rows, sizeof rows / sizeof rows[0], 0};

static void usage(FILE *out)
{
    fputs("usage: sgpu-engine [options]\n"
          "Serverless routing + autoscaling engine (Vast-compatible API). See docs/engine.md.\n"
          "Every option but --keep-workers takes a value (--flag V or --flag=V); the flag wins\n"
          "over the environment variable.\n\n",
          out);
    opts_usage(&spec, out);
}

void config_opts_default(struct engine_opts *o)
{
    memset(o, 0, sizeof *o);
    char err[300];
    if (opts_defaults(&spec, o, err, sizeof err) != 0) abort(); /* a table bug */
}

int config_opts_parse(struct engine_opts *o, int argc, char **argv)
{
    struct opts_result r;
    int rc = opts_parse(&spec, o, argc, argv, &r);
    if (rc == 0 && r.help) {
        if (r.help == OPTS_HELP_MARKDOWN)
            opts_markdown(&spec, stdout);
        else
            usage(stdout);
        rc = 1;
    } else if (rc == 0 && r.nargs > 0) {
        snprintf(r.err, sizeof r.err, "sgpu-engine: unexpected argument '%s' (see --help)",
                 r.args[0]);
        rc = -1;
    }
    if (rc < 0) fprintf(stderr, "%s\n", r.err);
    opts_result_free(&r);
    if (rc != 0) return rc;
    if (o->stable_window_s < 0.001) o->stable_window_s = 0.001;
    if (o->panic_window_s < 0.001) o->panic_window_s = 0.001;
    return 0;
}
