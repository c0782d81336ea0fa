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

#include "clock.h"
#include "httputil.h"
#include "log.h"
#include "worker.h"

static void schedule(struct worker *w, double s)
{
    struct timeval tv = {(time_t)s, (suseconds_t)((s - (double)(time_t)s) * 1e6)};
    evtimer_add(w->pubkey_ev, &tv);
}

static int install(struct worker *w, const void *data, size_t len, const char *src)
{
    struct rsa_pubkey *k = NULL;
    if (rsa_pubkey_load(data, len, &k) != 0) {
        log_warn("pubkey_invalid", "source=%s bytes=%zu", src, len);
        return -1;
    }
    char fp[65];
    rsa_pubkey_fingerprint(k, fp);
    if (w->key && strcmp(fp, w->key_fp) == 0) {
        rsa_pubkey_free(k);
        w->key_loaded_at = clock_wall();
        return 0;
    }
    if (w->key) rsa_pubkey_free(w->key);
    w->key = k;
    memcpy(w->key_fp, fp, sizeof fp);
    w->key_loaded_at = clock_wall();
    auth_key_changed(w->auth);
    log_info("pubkey_loaded", "source=%s bits=%zu sha256=%.16s", src, rsa_pubkey_size(k) * 8, fp);
    lifecycle_check_ready(w);
    return 0;
}

static int load_file(struct worker *w)
{
    FILE *f = fopen(w->cfg.pubkey_file, "rb");
    if (!f) {
        log_warn("pubkey_file_missing", "path=%s", w->cfg.pubkey_file);
        return -1;
    }
    char buf[16384];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return install(w, buf, n, "file");
}

static void on_done(struct upstream_req *u, int status, struct evbuffer *body, void *arg)
{
    struct worker *w = arg;
    w->pubkey_in_flight = false;
    size_t n = evbuffer_get_length(body);
    const char *p = n ? (const char *)evbuffer_pullup(body, (ev_ssize_t)n) : "";
    bool ok = status == 200 && install(w, p, n, "url") == 0;
    if (ok) {
        w->pubkey_attempts = 0;
        if (w->cfg.pubkey_refresh > 0) schedule(w, w->cfg.pubkey_refresh);
        return;
    }
    log_warn("pubkey_fetch_failed", "url=%s status=%d attempt=%d", w->cfg.pubkey_url, status,
             w->pubkey_attempts);
    int a = w->pubkey_attempts < 6 ? w->pubkey_attempts : 6;
    schedule(w,
             w->key ? (w->cfg.pubkey_refresh > 0 ? w->cfg.pubkey_refresh : 60) : (double)(1 << a));
}

static void on_error(struct upstream_req *u, enum upstream_err e, const char *msg, void *arg)
{
    struct worker *w = arg;
    w->pubkey_in_flight = false;
    log_warn("pubkey_fetch_failed", "url=%s err=%s attempt=%d", w->cfg.pubkey_url,
             upstream_err_name(e), w->pubkey_attempts);
    int a = w->pubkey_attempts < 6 ? w->pubkey_attempts : 6;
    /* while a key is held, keep it and retry at a relaxed pace */
    schedule(w, w->key ? 60.0 : (double)(1 << a));
}

static void fetch(struct worker *w)
{
    if (w->pubkey_in_flight || !w->pubkey_pool) return;
    static const struct upstream_cbs cbs = {NULL, NULL, on_done, on_error};
    struct upstream_opts o = {.timeout_s = 10, .max_buffered = 1 << 16};
    w->pubkey_attempts++;
    if (upstream_request(w->pubkey_pool, EVHTTP_REQ_GET, w->pubkey_path, NULL, NULL, 0, NULL, &o,
                         &cbs, w)) {
        w->pubkey_in_flight = true;
    } else {
        schedule(w, 5);
    }
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    if (w->cfg.pubkey_file[0]) {
        load_file(w);
        schedule(w, w->key ? (w->cfg.pubkey_refresh > 0 ? w->cfg.pubkey_refresh : 3600) : 1.0);
        return;
    }
    fetch(w);
}

int pubkey_init(struct worker *w)
{
    w->pubkey_ev = evtimer_new(w->base, tick, w);
    if (!w->pubkey_ev) return -1;
    if (w->cfg.pubkey_file[0]) {
        /* start-up read (before the loop runs); later re-reads on the timer */
        load_file(w);
        if (!w->key)
            schedule(w, 1.0);
        else if (w->cfg.pubkey_refresh > 0)
            schedule(w, w->cfg.pubkey_refresh);
        return 0;
    }
    if (!w->cfg.pubkey_url[0]) {
        if (!w->cfg.unsecured)
            log_warn("pubkey_none", "msg=\"no PUBKEY_FILE or PUBKEY_URL: all grants get 401\"");
        return 0;
    }
    struct http_url u;
    if (http_url_parse(w->cfg.pubkey_url, &u) != 0) return -1;
    snprintf(w->pubkey_path, sizeof w->pubkey_path, "%s", u.path);
    struct upstream_tls_opts tls = {w->cfg.engine_insecure,
                                    w->cfg.engine_ca[0] ? w->cfg.engine_ca : NULL};
    w->pubkey_pool = upstream_pool_new(w->base, w->dns, w->cfg.pubkey_url, &tls);
    if (!w->pubkey_pool) {
        log_error("pubkey_url_unusable", "url=%s", w->cfg.pubkey_url);
        return -1;
    }
    schedule(w, 0);
    return 0;
}

void pubkey_free(struct worker *w)
{
    if (w->pubkey_ev) event_free(w->pubkey_ev);
    w->pubkey_ev = NULL;
    upstream_pool_free(w->pubkey_pool);
    w->pubkey_pool = NULL;
    if (w->key) rsa_pubkey_free(w->key);
    w->key = NULL;
}
