/* One routed request, following the Vast SDK client (docs/protocol.md §2.1):
 *
 *   ROUTE: POST {engine}/route/ {endpoint, api_key, cost, request_idx, replay_timeout}
 *          (+ Authorization: Bearer).  An answer without "url" means "waiting":
 *          poll again with the returned request_idx after 1 s, then
 *          uniform(0.1, min(2^n + U(0,1), 5)) s.  Engine unreachable / 429 / 5xx:
 *          retried with capped exponential back-off (up to 5 times in a row).
 *   CALL:  POST {url}{route} {"auth_data": <route answer, verbatim>, "payload": <data>}.
 *          Connection failure before any answer byte -> route again (same
 *          request_idx).  408/429/5xx before the first body byte -> back-off
 *          min(2^n + U(0,1), 5) s, then route again.  Once a 2xx head has arrived
 *          the answer is delivered as it comes and never retried: a break in the
 *          middle is reported as such (the payload may have had effects).
 *
 * The route answer is passed to the worker byte for byte: re-serialising it
 * could change number spellings the signature covers (§3.5). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "cli.h"
#include "clock.h"
#include "httputil.h"

#define ROUTE_TIMEOUT_S 10.0
#define ROUTE_MAX_FAILS 5
#define ERR_BODY_MAX (64 * 1024)

enum rstate { R_ROUTE, R_CALL, R_WAIT, R_DONE };

struct rcall {
    struct hclient *hc;
    struct rcall_opts o;
    char *engine, *endpoint, *api_key, *route, *payload;
    enum rstate st;
    struct hc_req *req;
    struct event *timer;    /* back-off / poll delay */
    struct event *deadline; /* max_time */
    double t0;
    long long request_idx;
    int route_fails; /* consecutive engine failures */
    int polls;       /* consecutive waiting answers */
    int retry_n;     /* worker-side retries so far */
    bool head_ok;    /* 2xx head of the current call */
    bool got_byte;
    struct sbuf grant; /* route answer, verbatim */
    struct sbuf errbody;
    char last_err[1024]; /* last transient failure, for the timeout message */
    struct rcall_result res;
};

static double urand(double a, double b)
{
    return a + (b - a) * ((double)random() / (double)RAND_MAX);
}

static void note(struct rcall *c, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void note(struct rcall *c, const char *what, const char *fmt, ...)
{
    if (!c->o.on_note) return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    c->o.on_note(c->o.arg, what, buf);
}

static void rcall_free(struct rcall *c)
{
    if (c->req) hc_cancel(c->req);
    if (c->timer) event_free(c->timer);
    if (c->deadline) event_free(c->deadline);
    sbuf_free(&c->grant);
    sbuf_free(&c->errbody);
    free(c->engine);
    free(c->endpoint);
    free(c->api_key);
    free(c->route);
    free(c->payload);
    free(c);
}

static void finish(struct rcall *c, enum rc_fail f, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void finish(struct rcall *c, enum rc_fail f, const char *fmt, ...)
{
    c->st = R_DONE;
    c->res.fail = f;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->res.msg, sizeof c->res.msg, fmt, ap);
        va_end(ap);
    }
    c->res.t_total = clock_mono() - c->t0;
    c->res.err_body = sbuf_cstr(&c->errbody);
    c->res.err_body_len = c->errbody.len;
    if (c->req) {
        hc_cancel(c->req);
        c->req = NULL;
    }
    c->o.on_done(c->o.arg, &c->res);
    rcall_free(c);
}

static void send_route(struct rcall *c);
static void send_call(struct rcall *c);

static void schedule(struct rcall *c, enum rstate next, double delay)
{
    c->st = next == R_ROUTE ? R_WAIT : next;
    double left = c->o.max_time - (clock_mono() - c->t0);
    if (delay > left) delay = left > 0 ? left : 0;
    struct timeval tv = clock_tv(delay);
    evtimer_add(c->timer, &tv);
}

static void timer_cb(evutil_socket_t fd, short ev, void *arg)
{
    struct rcall *c = arg;
    if (c->st == R_WAIT) send_route(c);
}

static void deadline_cb(evutil_socket_t fd, short ev, void *arg)
{
    struct rcall *c = arg;
    if (c->res.attempts > 0 && c->head_ok)
        finish(c, RC_MIDSTREAM, "--max-time reached while the answer was arriving");
    else
        finish(
            c, RC_TIMEOUT,
            "no answer within --max-time %.1f s (%d route calls, %d waiting, %d worker calls)%s%s",
            c->o.max_time, c->res.routes, c->res.waits, c->res.attempts,
            c->last_err[0] ? "; last problem: " : "", c->last_err);
}

/* capped exponential back-off: min(2^n + U(0,1), 5) s */
static double backoff(int n)
{
    double d = pow(2.0, n) + urand(0, 1);
    return d < 5.0 ? d : 5.0;
}

/* ---- route ---- */

/* 503 {"error": "workergroup_failing", "msg": ...}: the endpoint cannot get a worker until an
 * operator acts, so polling is pointless: finish with the engine's message.  true if it was. */
static bool route_failing(struct rcall *c, const struct hc_response *r)
{
    json_object *j = json_tokener_parse(r->body ? r->body : "");
    json_object *e = NULL, *m = NULL;
    bool is = j && json_object_is_type(j, json_type_object) &&
              json_object_object_get_ex(j, "error", &e) &&
              strcmp(json_object_get_string(e), "workergroup_failing") == 0;
    if (is) {
        json_object_object_get_ex(j, "msg", &m);
        sbuf_reset(&c->errbody);
        sbuf_append(&c->errbody, r->body, r->body_len > ERR_BODY_MAX ? ERR_BODY_MAX : r->body_len);
        finish(c, RC_ROUTE, "engine: endpoint cannot serve (HTTP 503 workergroup_failing): %s",
               m ? json_object_get_string(m) : "workergroup failing");
    }
    json_object_put(j);
    return is;
}

static void route_done(void *arg, const struct hc_response *r)
{
    struct rcall *c = arg;
    c->req = NULL;
    c->res.routes++;
    if (r->err == HC_OK && r->status == 503 && route_failing(c, r)) return;
    if (r->err != HC_OK || r->status == 429 || r->status >= 500) {
        c->route_fails++;
        char why[640];
        if (r->err != HC_OK)
            snprintf(why, sizeof why, "%s", r->errmsg);
        else
            snprintf(why, sizeof why, "HTTP %d: %.*s", r->status,
                     (int)(r->body_len > 300 ? 300 : r->body_len), r->body);
        if (c->route_fails >= ROUTE_MAX_FAILS) {
            finish(c, RC_ROUTE, "engine %s: %s", c->engine, why);
            return;
        }
        double d = backoff(c->route_fails - 1);
        snprintf(c->last_err, sizeof c->last_err, "engine %s: %s", c->engine, why);
        note(c, "route_retry", "in %.2fs after %s", d, why);
        schedule(c, R_ROUTE, d);
        return;
    }
    if (r->status != 200) {
        /* {"success": false, "error": ..., "msg": ...} */
        const char *msg = NULL;
        json_object *j = json_tokener_parse(r->body);
        json_object *m;
        if (j && json_object_object_get_ex(j, "msg", &m))
            msg = json_object_get_string(m);
        else if (j && json_object_object_get_ex(j, "error", &m))
            msg = json_object_get_string(m);
        sbuf_reset(&c->errbody);
        sbuf_append(&c->errbody, r->body, r->body_len > ERR_BODY_MAX ? ERR_BODY_MAX : r->body_len);
        finish(c, RC_ROUTE, "engine refused the route (HTTP %d): %s", r->status,
               msg ? msg : (r->body_len ? r->body : "(empty body)"));
        json_object_put(j);
        return;
    }
    c->route_fails = 0;
    json_object *j = json_tokener_parse(r->body);
    if (!j || !json_object_is_type(j, json_type_object)) {
        json_object_put(j);
        finish(c, RC_ROUTE, "engine answered something that is not a JSON object: %.200s", r->body);
        return;
    }
    json_object *v;
    if (json_object_object_get_ex(j, "request_idx", &v) && json_object_is_type(v, json_type_int))
        c->request_idx = json_object_get_int64(v);
    if (json_object_object_get_ex(j, "url", &v) && json_object_is_type(v, json_type_string)) {
        snprintf(c->res.worker_url, sizeof c->res.worker_url, "%s", json_object_get_string(v));
        json_object_put(j);
        sbuf_reset(&c->grant);
        size_t n = r->body_len;
        while (n && (r->body[n - 1] == '\n' || r->body[n - 1] == ' ' || r->body[n - 1] == '\r'))
            n--;
        sbuf_append(&c->grant, r->body, n);
        c->res.t_grant = clock_mono() - c->t0;
        c->polls = 0;
        note(c, "granted", "worker=%s request_idx=%lld", c->res.worker_url, c->request_idx);
        send_call(c);
        return;
    }
    /* waiting: poll again with the same request_idx */
    c->res.waits++;
    double d =
        c->polls == 0 ? c->o.first_poll_s : urand(0.1, fmin(pow(2.0, c->polls) + urand(0, 1), 5.0));
    c->polls++;
    json_object *st = NULL;
    json_object_object_get_ex(j, "status", &st);
    note(c, "waiting", "request_idx=%lld status=%s next_poll_s=%.2f", c->request_idx,
         st ? json_object_to_json_string_ext(st, JSON_C_TO_STRING_PLAIN) : "?", d);
    json_object_put(j);
    schedule(c, R_ROUTE, d);
}

static void send_route(struct rcall *c)
{
    c->st = R_ROUTE;
    struct sbuf body = SBUF_INIT;
    sbuf_puts(&body, "{\"endpoint\": ");
    json_object *s = json_object_new_string(c->endpoint);
    sbuf_puts(&body, json_object_to_json_string_ext(s, JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(s);
    if (c->api_key) {
        sbuf_puts(&body, ", \"api_key\": ");
        s = json_object_new_string(c->api_key);
        sbuf_puts(&body, json_object_to_json_string_ext(s, JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(s);
    }
    char num[64];
    snprintf(num, sizeof num, "%.17g", c->o.cost);
    if (!strpbrk(num, ".eEn")) strcat(num, ".0");
    sbuf_printf(&body, ", \"cost\": %s, \"request_idx\": %lld, \"replay_timeout\": 60.0}", num,
                c->request_idx);
    char url[1200];
    snprintf(url, sizeof url, "%s/route/", c->engine);
    struct hc_opts ho = {
        .method = "POST",
        .url = url,
        .body = body.data,
        .body_len = body.len,
        .bearer = c->api_key,
        .timeout_s = ROUTE_TIMEOUT_S,
        .max_body = 1 << 20,
        .on_done = route_done,
        .arg = c,
    };
    c->req = hc_request(c->hc, &ho);
    sbuf_free(&body);
    if (!c->req) finish(c, RC_ROUTE, "out of memory");
}

/* ---- worker call ---- */

static void call_head(void *arg, int status)
{
    struct rcall *c = arg;
    c->res.status = status;
    c->head_ok = status >= 200 && status < 300;
    sbuf_reset(&c->errbody);
}

static void call_chunk(void *arg, const char *p, size_t n)
{
    struct rcall *c = arg;
    if (c->head_ok) {
        if (!c->got_byte) {
            c->got_byte = true;
            c->res.t_first_byte = clock_mono() - c->t0;
        }
        if (c->o.on_chunk) c->o.on_chunk(c->o.arg, p, n);
    } else if (c->errbody.len < ERR_BODY_MAX) {
        size_t room = ERR_BODY_MAX - c->errbody.len;
        sbuf_append(&c->errbody, p, n < room ? n : room);
    }
}

static bool retryable_status(int s)
{
    return s == 408 || s == 429 || s >= 500;
}

static void call_done(void *arg, const struct hc_response *r)
{
    struct rcall *c = arg;
    c->req = NULL;
    if (r->err == HC_ERR_MIDSTREAM || (r->err != HC_OK && c->head_ok)) {
        finish(c, RC_MIDSTREAM, "worker %s: answer broken after it started (%s); not retried",
               c->res.worker_url, r->errmsg ? r->errmsg : "error");
        return;
    }
    if (r->err == HC_ERR_TIMEOUT) {
        finish(c, RC_TIMEOUT, "worker %s: %s", c->res.worker_url, r->errmsg);
        return;
    }
    if (r->err == HC_OK && c->head_ok) {
        if (!c->got_byte) c->res.t_first_byte = clock_mono() - c->t0;
        finish(c, RC_OK, NULL);
        return;
    }
    bool conn = r->err != HC_OK; /* connect / resolve / closed before answering */
    if (!conn && !retryable_status(r->status)) {
        finish(c, RC_STATUS, "worker %s answered HTTP %d", c->res.worker_url, r->status);
        return;
    }
    if (c->res.attempts >= c->o.max_attempts) {
        if (conn)
            finish(c, RC_STATUS, "worker %s: %s (after %d attempts)", c->res.worker_url, r->errmsg,
                   c->res.attempts);
        else
            finish(c, RC_STATUS, "worker %s answered HTTP %d (after %d attempts)",
                   c->res.worker_url, r->status, c->res.attempts);
        return;
    }
    /* Connection failures re-route at once (the SDK loops); statuses back off. */
    double d = conn ? (c->retry_n == 0 ? 0.0 : backoff(c->retry_n - 1) / 4) : backoff(c->retry_n);
    c->retry_n++;
    if (conn)
        snprintf(c->last_err, sizeof c->last_err, "%s", r->errmsg);
    else
        snprintf(c->last_err, sizeof c->last_err, "worker answered HTTP %d", r->status);
    note(c, conn ? "reroute" : "retry", "%s; routing again in %.2fs",
         conn ? r->errmsg : (r->status == 429 ? "HTTP 429" : "retryable HTTP status"), d);
    schedule(c, R_ROUTE, d);
}

static void send_call(struct rcall *c)
{
    c->st = R_CALL;
    c->res.attempts++;
    c->head_ok = false;
    c->got_byte = false;
    c->res.status = 0;
    struct sbuf body = SBUF_INIT;
    sbuf_puts(&body, "{\"auth_data\": ");
    sbuf_append(&body, c->grant.data, c->grant.len);
    sbuf_puts(&body, ", \"payload\": ");
    sbuf_append(&body, c->payload, c->o.payload_len);
    sbuf_putc(&body, '}');
    char url[1600];
    const char *base = c->res.worker_url;
    size_t bl = strlen(base);
    while (bl && base[bl - 1] == '/')
        bl--;
    snprintf(url, sizeof url, "%.*s%s", (int)bl, base, c->route);
    double left = c->o.max_time - (clock_mono() - c->t0);
    struct hc_opts ho = {
        .method = "POST",
        .url = url,
        .body = body.data,
        .body_len = body.len,
        .timeout_s = fmin(c->o.worker_timeout, left > 0.001 ? left : 0.001),
        .on_head = call_head,
        .on_chunk = call_chunk,
        .on_done = call_done,
        .arg = c,
    };
    c->req = hc_request(c->hc, &ho);
    sbuf_free(&body);
    if (!c->req) finish(c, RC_STATUS, "out of memory");
}

struct rcall *rcall_start(struct event_base *base, struct hclient *hc, const struct rcall_opts *o)
{
    struct rcall *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->hc = hc;
    c->o = *o;
    if (c->o.max_time <= 0) c->o.max_time = 600;
    if (c->o.worker_timeout <= 0) c->o.worker_timeout = 600;
    if (c->o.max_attempts <= 0) c->o.max_attempts = 5;
    if (c->o.first_poll_s < 0) c->o.first_poll_s = 1.0;
    c->engine = strdup(o->engine);
    c->endpoint = strdup(o->endpoint);
    c->api_key = o->api_key ? strdup(o->api_key) : NULL;
    c->route = strdup(o->route);
    c->payload = malloc(o->payload_len + 1);
    c->timer = evtimer_new(base, timer_cb, c);
    c->deadline = evtimer_new(base, deadline_cb, c);
    if (!c->engine || !c->endpoint || (o->api_key && !c->api_key) || !c->route || !c->payload ||
        !c->timer || !c->deadline) {
        rcall_free(c);
        return NULL;
    }
    memcpy(c->payload, o->payload, o->payload_len);
    c->payload[o->payload_len] = '\0';
    size_t el = strlen(c->engine);
    while (el && c->engine[el - 1] == '/')
        c->engine[--el] = '\0';
    c->t0 = clock_mono();
    struct timeval tv = clock_tv(c->o.max_time);
    evtimer_add(c->deadline, &tv);
    send_route(c);
    return c;
}

void rcall_cancel(struct rcall *c)
{
    if (c) rcall_free(c);
}
