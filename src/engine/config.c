/* Endpoint parameters (defaults, validation, JSON) and the engine's command line. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
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

const char *config_scheme_name(enum sig_scheme s)
{
    switch (s) {
    case SIG_URL:
        return "url";
    case SIG_FIELDS_V2:
        return "fields-v2";
    case SIG_FIELDS_V1:
        return "fields-v1";
    }
    return "url";
}

int config_scheme_parse(const char *s, enum sig_scheme *out)
{
    if (strcmp(s, "url") == 0)
        *out = SIG_URL;
    else if (strcmp(s, "fields-v2") == 0)
        *out = SIG_FIELDS_V2;
    else if (strcmp(s, "fields-v1") == 0)
        *out = SIG_FIELDS_V1;
    else
        return -1;
    return 0;
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

void config_opts_default(struct engine_opts *o)
{
    memset(o, 0, sizeof *o);
    snprintf(o->data_dir, sizeof o->data_dir, "./sgpu-data");
    snprintf(o->listen_host, sizeof o->listen_host, "127.0.0.1");
    o->listen_port = 8080;
    o->tick_ms = 1000;
    o->unavailable_after_s = 30;
    o->unavailable_destroy_s = 120;
    o->drain_grace_s = 2;
    o->drain_timeout_s = 600;
    o->scale_down_delay_s = 60;
    o->stable_window_s = 60;
    o->panic_window_s = 6;
    o->provider_timeout_s = 300;
    o->error_backoff_s = 5;
    o->error_breaker = 5;
    o->error_reset_s = 60;
    o->ready_timeout_s = 1800;
    o->route_hold_ms = 2000;
    o->route_hold_max = 4096;
    o->shutdown_timeout_s = 55;
    o->max_connections = 4096;
    o->request_deadline_s = 30;
    o->body_budget_mb = 64;
    snprintf(o->log_level, sizeof o->log_level, "info");
}

static const char usage[] =
    "usage: sgpu-engine [--data-dir DIR] [--listen HOST:PORT] [--public-url URL]\n"
    "                   [--tick-ms N] [--log-level debug|info|warn|error] [--keep-workers]\n"
    "                   [--unavailable-after-s S] [--unavailable-destroy-s S]\n"
    "                   [--drain-grace-s S] [--drain-timeout-s S] [--scale-down-delay-s S]\n"
    "                   [--stable-window-s S] [--panic-window-s S] [--provider-timeout-s S]\n"
    "                   [--error-backoff-s S] [--error-breaker N] [--error-reset-s S]\n"
    "                   [--ready-timeout-s S] [--sign-threads N] [--route-hold-ms N]\n"
    "                   [--route-hold-max N] [--shutdown-timeout-s S] [--local-ports LO-HI]\n"
    "                   [--max-connections N] [--request-deadline-s S] [--body-budget-mb N]\n"
    "Serverless routing + autoscaling engine (Vast-compatible API). See docs/engine.md.\n";

static int parse_double(const char *flag, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(d) || d < lo || d > hi) {
        fprintf(stderr, "sgpu-engine: %s: bad value '%s' (%g..%g)\n", flag, s, lo, hi);
        return -1;
    }
    *out = d;
    return 0;
}

static int copy_str(const char *flag, char *dst, size_t n, const char *s)
{
    if (strlen(s) >= n) {
        fprintf(stderr, "sgpu-engine: %s: value too long\n", flag);
        return -1;
    }
    memcpy(dst, s, strlen(s) + 1);
    return 0;
}

static int parse_listen(struct engine_opts *o, const char *s)
{
    const char *colon = strrchr(s, ':');
    if (!colon) {
        fprintf(stderr, "sgpu-engine: --listen wants HOST:PORT\n");
        return -1;
    }
    size_t hl = (size_t)(colon - s);
    const char *h = s;
    if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
        h = s + 1;
        hl -= 2;
    }
    if (hl >= sizeof o->listen_host) return -1;
    memcpy(o->listen_host, h, hl);
    o->listen_host[hl] = '\0';
    if (hl == 0) snprintf(o->listen_host, sizeof o->listen_host, "0.0.0.0");
    double port;
    if (parse_double("--listen", colon + 1, 0, 65535, &port) || port != floor(port)) return -1;
    o->listen_port = (int)port;
    return 0;
}

/* "LO-HI": the local provider's instance ports (each instance takes two). */
static int parse_port_range(struct engine_opts *o, const char *s)
{
    char *end;
    errno = 0;
    long lo = strtol(s, &end, 10);
    long hi = -1;
    if (!errno && end != s && *end == '-') {
        const char *h = end + 1;
        hi = strtol(h, &end, 10);
        if (errno || end == h || *end) hi = -1;
    }
    if (hi < 0 || lo < 1 || hi > 65535 || hi < lo + 1) {
        fprintf(stderr,
                "sgpu-engine: --local-ports: bad value '%s' (LO-HI, 1..65535, at least 2 ports)\n",
                s);
        return -1;
    }
    o->local_port_lo = (int)lo;
    o->local_port_hi = (int)hi;
    return 0;
}

int config_opts_parse(struct engine_opts *o, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage, stdout);
            return 1;
        }
        if (strcmp(a, "--keep-workers") == 0) {
            o->keep_workers = true;
            continue;
        }
        /* every other flag takes a value: --flag V or --flag=V */
        const char *val = NULL;
        char name[64];
        const char *eq = strchr(a, '=');
        if (eq && (size_t)(eq - a) < sizeof name) {
            memcpy(name, a, (size_t)(eq - a));
            name[eq - a] = '\0';
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
            if (i + 1 < argc) val = argv[++i];
        }
        if (!val) {
            fprintf(stderr, "sgpu-engine: %s needs a value\n%s", name, usage);
            return -1;
        }
        double d = 0;
        int rc = 0;
        if (strcmp(name, "--data-dir") == 0) {
            rc = copy_str(name, o->data_dir, sizeof o->data_dir, val);
        } else if (strcmp(name, "--listen") == 0) {
            rc = parse_listen(o, val);
        } else if (strcmp(name, "--public-url") == 0) {
            rc = copy_str(name, o->public_url, sizeof o->public_url, val);
        } else if (strcmp(name, "--log-level") == 0) {
            rc = copy_str(name, o->log_level, sizeof o->log_level, val);
        } else if (strcmp(name, "--tick-ms") == 0) {
            rc = parse_double(name, val, 1, 60000, &d);
            o->tick_ms = (int)d;
        } else if (strcmp(name, "--route-hold-ms") == 0) {
            /* well under the Vast SDK's 10 s client timeout on /route/ */
            rc = parse_double(name, val, 0, 8000, &d);
            o->route_hold_ms = (int)d;
        } else if (strcmp(name, "--route-hold-max") == 0) {
            rc = parse_double(name, val, 0, 100000, &d);
            o->route_hold_max = (int)d;
        } else if (strcmp(name, "--error-breaker") == 0) {
            rc = parse_double(name, val, 0, 1000000, &d);
            if (!rc && d != floor(d)) {
                fprintf(stderr, "sgpu-engine: %s: expected an integer, got '%s'\n", name, val);
                rc = -1;
            }
            o->error_breaker = (int)d;
        } else if (strcmp(name, "--max-connections") == 0) {
            rc = parse_double(name, val, 1, 1 << 22, &d);
            o->max_connections = (int)d;
        } else if (strcmp(name, "--request-deadline-s") == 0) {
            rc = parse_double(name, val, 0.1, 86400, &o->request_deadline_s);
        } else if (strcmp(name, "--body-budget-mb") == 0) {
            rc = parse_double(name, val, 0, 1 << 20, &o->body_budget_mb);
        } else if (strcmp(name, "--local-ports") == 0) {
            rc = parse_port_range(o, val);
        } else if (strcmp(name, "--sign-threads") == 0) {
            rc = parse_double(name, val, 0, 64, &d);
            o->sign_threads = (int)d;
        } else {
            const struct {
                const char *flag;
                double *dst;
            } dbl[] = {
                {"--unavailable-after-s", &o->unavailable_after_s},
                {"--unavailable-destroy-s", &o->unavailable_destroy_s},
                {"--drain-grace-s", &o->drain_grace_s},
                {"--drain-timeout-s", &o->drain_timeout_s},
                {"--scale-down-delay-s", &o->scale_down_delay_s},
                {"--stable-window-s", &o->stable_window_s},
                {"--panic-window-s", &o->panic_window_s},
                {"--provider-timeout-s", &o->provider_timeout_s},
                {"--error-backoff-s", &o->error_backoff_s},
                {"--error-reset-s", &o->error_reset_s},
                {"--ready-timeout-s", &o->ready_timeout_s},
                {"--shutdown-timeout-s", &o->shutdown_timeout_s},
            };
            size_t k;
            for (k = 0; k < sizeof dbl / sizeof dbl[0]; k++) {
                if (strcmp(name, dbl[k].flag) == 0) {
                    rc = parse_double(name, val, 0, 1e7, dbl[k].dst);
                    break;
                }
            }
            if (k == sizeof dbl / sizeof dbl[0]) {
                fprintf(stderr, "sgpu-engine: unknown option %s\n%s", name, usage);
                return -1;
            }
        }
        if (rc) return -1;
    }
    if (o->stable_window_s < 0.001) o->stable_window_s = 0.001;
    if (o->panic_window_s < 0.001) o->panic_window_s = 0.001;
    return 0;
}
