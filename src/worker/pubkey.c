/* Engine public key: from PUBKEY_FILE (re-read on every refresh) or fetched
 * asynchronously from PUBKEY_URL (default <first REPORT_ADDR>/pubkey/, B13)
 * on the event loop, retried with back-off 1, 2, 4 ... 60 s while absent,
 * refreshed every SGPU_PUBKEY_REFRESH seconds (B14: key rotation).
 * Requests get 401 while no key is held.  With UNSECURED a failed fetch is
 * logged only (B14: it never sets error_msg). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "auth.h"
#include "clock.h"
#include "httputil.h"
#include "lifecycle.h"
#include "log.h"
#include "pubkey.h"
#include "xalloc.h"

struct pubkey {
    struct worker *w;
    struct rsa_pubkey *key; /* NULL until one loaded */
    char fp[65];            /* its SHA-256, hex */
    double loaded_at;       /* wall s: last load or unchanged re-read */
    int attempts;           /* fetches since the last success (back-off) */
    bool in_flight;
    struct upstream_pool *pool; /* PUBKEY_URL's host, or NULL */
    char path[1024];            /* PUBKEY_URL's path */
    struct event *ev;           /* next read / fetch */
};

struct rsa_pubkey *pubkey_key(const struct pubkey *p)
{
    return p ? p->key : NULL;
}

const char *pubkey_fingerprint(const struct pubkey *p)
{
    return p && p->key ? p->fp : "";
}

static void schedule(struct pubkey *p, double s)
{
    struct timeval tv = clock_tv(s);
    evtimer_add(p->ev, &tv);
}

static int install(struct pubkey *p, const void *data, size_t len, const char *src)
{
    struct worker *w = p->w;
    struct rsa_pubkey *k = NULL;
    if (rsa_pubkey_load(data, len, &k) != 0) {
        log_warn("pubkey_invalid", "source=%s bytes=%zu", src, len);
        return -1;
    }
    char fp[65];
    rsa_pubkey_fingerprint(k, fp);
    if (p->key && strcmp(fp, p->fp) == 0) {
        rsa_pubkey_free(k);
        p->loaded_at = clock_wall();
        return 0;
    }
    if (p->key) rsa_pubkey_free(p->key);
    p->key = k;
    memcpy(p->fp, fp, sizeof fp);
    p->loaded_at = clock_wall();
    auth_key_changed(w->auth);
    log_info("pubkey_loaded", "source=%s bits=%zu sha256=%.16s", src, rsa_pubkey_size(k) * 8, fp);
    lifecycle_check_ready(w);
    return 0;
}

static int load_file(struct pubkey *p)
{
    const char *path = p->w->cfg.pubkey_file;
    FILE *f = fopen(path, "rb");
    if (!f) {
        log_warn("pubkey_file_missing", "path=%s", path);
        return -1;
    }
    char buf[16384];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return install(p, buf, n, "file");
}

static void on_done(struct upstream_req *u, int status, struct evbuffer *body, void *arg)
{
    struct pubkey *p = arg;
    const struct wconfig *c = &p->w->cfg;
    p->in_flight = false;
    size_t n = evbuffer_get_length(body);
    const char *data = n ? (const char *)evbuffer_pullup(body, (ev_ssize_t)n) : "";
    bool ok = status == 200 && install(p, data, n, "url") == 0;
    if (ok) {
        p->attempts = 0;
        if (c->pubkey_refresh > 0) schedule(p, c->pubkey_refresh);
        return;
    }
    log_warn("pubkey_fetch_failed", "url=%s status=%d attempt=%d", c->pubkey_url, status,
             p->attempts);
    int a = p->attempts < 6 ? p->attempts : 6;
    schedule(p, p->key ? (c->pubkey_refresh > 0 ? c->pubkey_refresh : 60) : (double)(1 << a));
}

static void on_error(struct upstream_req *u, enum upstream_err e, const char *msg, void *arg)
{
    struct pubkey *p = arg;
    p->in_flight = false;
    log_warn("pubkey_fetch_failed", "url=%s err=%s attempt=%d", p->w->cfg.pubkey_url,
             upstream_err_name(e), p->attempts);
    int a = p->attempts < 6 ? p->attempts : 6;
    /* while a key is held, keep it and retry at a relaxed pace */
    schedule(p, p->key ? 60.0 : (double)(1 << a));
}

static void fetch(struct pubkey *p)
{
    if (p->in_flight || !p->pool) return;
    static const struct upstream_cbs cbs = {NULL, NULL, on_done, on_error};
    struct upstream_opts o = {.timeout_s = 10, .max_buffered = 1 << 16};
    p->attempts++;
    if (upstream_request(p->pool, EVHTTP_REQ_GET, p->path, NULL, NULL, 0, NULL, &o, &cbs, p))
        p->in_flight = true;
    else
        schedule(p, 5);
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    struct pubkey *p = arg;
    const struct wconfig *c = &p->w->cfg;
    if (c->pubkey_file[0]) {
        load_file(p);
        schedule(p, p->key ? (c->pubkey_refresh > 0 ? c->pubkey_refresh : 3600) : 1.0);
        return;
    }
    fetch(p);
}

int pubkey_init(struct worker *w)
{
    const struct wconfig *c = &w->cfg;
    struct pubkey *p = xcalloc(1, sizeof *p);
    w->pubkey = p;
    p->w = w;
    p->ev = evtimer_new(w->base, tick, p);
    if (!p->ev) return -1;
    if (c->pubkey_file[0]) {
        /* start-up read (before the loop runs); later re-reads on the timer */
        load_file(p);
        if (!p->key)
            schedule(p, 1.0);
        else if (c->pubkey_refresh > 0)
            schedule(p, c->pubkey_refresh);
        return 0;
    }
    if (!c->pubkey_url[0]) {
        if (!c->unsecured)
            log_warn("pubkey_none", "msg=\"no PUBKEY_FILE or PUBKEY_URL: all grants get 401\"");
        return 0;
    }
    struct http_url u;
    if (http_url_parse(c->pubkey_url, &u) != 0) return -1;
    snprintf(p->path, sizeof p->path, "%s", u.path);
    struct upstream_tls_opts tls = {c->engine_insecure, c->engine_ca[0] ? c->engine_ca : NULL};
    p->pool = upstream_pool_new(w->base, w->dns, c->pubkey_url, &tls);
    if (!p->pool) {
        log_error("pubkey_url_unusable", "url=%s", c->pubkey_url);
        return -1;
    }
    schedule(p, 0);
    return 0;
}

void pubkey_free(struct worker *w)
{
    struct pubkey *p = w->pubkey;
    if (!p) return;
    if (p->ev) event_free(p->ev);
    upstream_pool_free(p->pool);
    if (p->key) rsa_pubkey_free(p->key);
    free(p);
    w->pubkey = NULL;
}
