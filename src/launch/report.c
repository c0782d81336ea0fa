/* Error reports from the launcher itself (docs/protocol.md §4.4
 * report_error_and_exit): POST {addr}/worker_status/ with the error, to every
 * address of REPORT_ADDR.  Unlike the reference script the body is valid JSON
 * (the message is escaped) and `id` is an integer. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "clock.h"
#include "hclient.h"
#include "launch.h"
#include "log.h"
#include "xalloc.h"

#define REPORT_ATTEMPTS 3
#define REPORT_RETRY_S 2
#define REPORT_TIMEOUT_S 10

void json_put_string(struct sbuf *out, const char *s)
{
    sbuf_putc(out, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            sbuf_puts(out, "\\\"");
            break;
        case '\\':
            sbuf_puts(out, "\\\\");
            break;
        case '\n':
            sbuf_puts(out, "\\n");
            break;
        case '\r':
            sbuf_puts(out, "\\r");
            break;
        case '\t':
            sbuf_puts(out, "\\t");
            break;
        default:
            if (*p < 0x20 || *p >= 0x7f)
                sbuf_printf(out, "\\u%04x", *p >= 0x7f ? 0xfffd : *p);
            else
                sbuf_putc(out, (char)*p);
        }
    }
    sbuf_putc(out, '"');
}

/* The url the worker reports: http[s]://$PUBLIC_IPADDR:$VAST_TCP_PORT_<WORKER_PORT>.  As in
 * sgpu-worker, a missing VAST_TCP_PORT_<WORKER_PORT> falls back to WORKER_PORT (the port the
 * worker binds) and a missing PUBLIC_IPADDR to 127.0.0.1; IPv6 literals are bracketed.  $URL
 * (the reference script's variable) is used only when WORKER_PORT is unusable. */
void report_worker_url(char *out, size_t n)
{
    const char *u = getenv("URL");
    const char *ip = getenv("PUBLIC_IPADDR");
    const char *wp = getenv("WORKER_PORT");
    out[0] = '\0';
    char *end = NULL;
    long port = wp && *wp ? strtol(wp, &end, 10) : 0;
    if (port > 0 && port <= 65535 && end && *end == '\0') {
        char var[64];
        snprintf(var, sizeof var, "VAST_TCP_PORT_%ld", port);
        const char *ext = getenv(var);
        long ep = ext && *ext ? strtol(ext, &end, 10) : 0;
        if (ep > 0 && ep <= 65535 && *end == '\0') port = ep;
        if (!ip || !*ip) ip = "127.0.0.1";
        const char *ssl = getenv("USE_SSL");
        bool v6 = strchr(ip, ':') != NULL;
        snprintf(out, n, "%s://%s%s%s:%ld", ssl && strcmp(ssl, "true") == 0 ? "https" : "http",
                 v6 ? "[" : "", ip, v6 ? "]" : "", port);
        return;
    }
    if (u) snprintf(out, n, "%s", u);
}

void report_error_body(struct sbuf *out, const char *error_msg)
{
    const char *cid = getenv("CONTAINER_ID");
    char *end = NULL;
    long long id = cid ? strtoll(cid, &end, 10) : 0;
    if (!cid || end == cid || *end) id = 0;
    const char *mt = getenv("MASTER_TOKEN");
    const char *ver = getenv("PYWORKER_VERSION");
    char url[512];
    report_worker_url(url, sizeof url);
    sbuf_printf(out, "{\"id\": %lld, \"mtoken\": ", id);
    json_put_string(out, mt ? mt : "");
    sbuf_puts(out, ", \"version\": ");
    json_put_string(out, ver ? ver : "sgpu-launch");
    sbuf_puts(out, ", \"error_msg\": ");
    json_put_string(out, error_msg);
    sbuf_puts(out, ", \"url\": ");
    json_put_string(out, url);
    sbuf_putc(out, '}');
}

struct rep_batch {
    struct hclient *hc;
    struct sbuf body;
    int pending, nsent;
    void (*done)(void *arg, int nsent);
    void *arg;
};

struct rep_one {
    struct rep_batch *b;
    char url[1024];
    int attempt;
    struct event *retry;
};

static void rep_try(struct rep_one *o);

static void rep_finish_one(struct rep_one *o, bool ok)
{
    struct rep_batch *b = o->b;
    if (ok) b->nsent++;
    if (o->retry) event_free(o->retry);
    free(o);
    if (--b->pending == 0) {
        void (*done)(void *, int) = b->done;
        void *arg = b->arg;
        int nsent = b->nsent;
        sbuf_free(&b->body);
        free(b);
        done(arg, nsent);
    }
}

static void rep_retry_cb(evutil_socket_t fd, short ev, void *arg)
{
    rep_try(arg);
}

static void rep_done(void *arg, const struct hc_response *r)
{
    struct rep_one *o = arg;
    bool ok = r->err == HC_OK && r->status >= 200 && r->status < 300;
    if (ok) {
        log_info("error_reported", "url=%s status=%d", o->url, r->status);
        rep_finish_one(o, true);
        return;
    }
    char q[300];
    log_warn("error_report_failed", "url=%s attempt=%d status=%d reason=%s", o->url, o->attempt,
             r->status, log_quote(q, sizeof q, r->errmsg ? r->errmsg : "http status"));
    if (o->attempt >= REPORT_ATTEMPTS) {
        rep_finish_one(o, false);
        return;
    }
    struct timeval tv = clock_tv(REPORT_RETRY_S);
    evtimer_add(o->retry, &tv);
}

static void rep_try(struct rep_one *o)
{
    o->attempt++;
    struct hc_opts ho = {
        .method = "POST",
        .url = o->url,
        .body = o->b->body.data,
        .body_len = o->b->body.len,
        .timeout_s = REPORT_TIMEOUT_S,
        .on_done = rep_done,
        .arg = o,
    };
    if (!hc_request(o->b->hc, &ho)) rep_finish_one(o, false);
}

int report_error_send(struct event_base *base, struct hclient *hc, const char *error_msg,
                      void (*done)(void *arg, int nsent), void *arg)
{
    const char *addrs = getenv("REPORT_ADDR");
    struct rep_batch *b = calloc(1, sizeof *b);
    if (!b) return -1;
    b->hc = hc;
    b->done = done;
    b->arg = arg;
    report_error_body(&b->body, error_msg);
    b->pending = 1; /* guard while starting */
    const char *p = addrs ? addrs : "";
    while (*p) {
        size_t l = strcspn(p, ",");
        /* trim spaces and trailing slashes, then append /worker_status/ */
        const char *s = p;
        size_t sl = l;
        while (sl && (*s == ' '))
            s++, sl--;
        while (sl && (s[sl - 1] == ' ' || s[sl - 1] == '/'))
            sl--;
        if (sl > 0 && sl < 900) {
            struct rep_one *o = calloc(1, sizeof *o);
            if (o) {
                o->b = b;
                snprintf(o->url, sizeof o->url, "%.*s/worker_status/", (int)sl, s);
                o->retry = xnonnull(evtimer_new(base, rep_retry_cb, o));
                b->pending++;
                rep_try(o);
            }
        }
        p += l;
        if (*p == ',') p++;
    }
    /* Drop the guard; finishes at once when there was no address. */
    if (--b->pending == 0) {
        sbuf_free(&b->body);
        free(b);
        done(arg, 0);
    }
    return 0;
}
