/* Worker phases: loading -> benchmarking -> ready, error at any time,
 * draining after SIGTERM.
 *
 * The model is "loaded" when a MODEL_LOAD_LOG_MSG substring appears in
 * MODEL_LOG, or (without a log / load patterns) at the first healthy probe of
 * MODEL_HEALTH_ENDPOINT, or (with neither) at once.  Then the benchmark runs
 * (or its cache is used), then - if a health endpoint is configured - the
 * worker waits for one healthy probe, and - unless UNSECURED - for the
 * engine's public key.  Only then does it admit requests (B29).
 *
 * MODEL_LOG is tailed with non-blocking reads on a timer (B1, B10): error
 * patterns are seen within one poll, also while the benchmark runs; rotation
 * (inode change) and truncation are followed; only the first load line
 * counts.  Health probes are asynchronous; after the first success,
 * SGPU_HEALTH_FAILURES consecutive failures are fatal, a single blip is not
 * (B11). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "benchmark.h"
#include "clock.h"
#include "handlers.h"
#include "httputil.h"
#include "lifecycle.h"
#include "log.h"
#include "pubkey.h"
#include "report.h"
#include "xalloc.h"

#define LINE_MAX_BYTES (64 * 1024)
#define READ_PER_TICK (1024 * 1024)

struct lifecycle {
    bool model_loaded; /* load pattern seen / health ok / no readiness source */
    bool bench_done;
    /* MODEL_LOG tail */
    struct event *log_ev;
    int fd;
    dev_t dev;
    ino_t ino;
    off_t off;
    char *line;
    size_t linelen;
    bool line_overflow;
    /* health probes */
    struct event *health_ev;
    struct upstream_pool *health_pool; /* NULL = the model pool */
    char health_path[512];
    bool health_in_flight;
    bool health_ok_once;
    int health_fail_streak;
};

const char *phase_name(enum phase p)
{
    switch (p) {
    case PH_LOADING:
        return "loading";
    case PH_BENCHMARKING:
        return "benchmarking";
    case PH_READY:
        return "ready";
    case PH_ERROR:
        return "error";
    case PH_DRAINING:
        return "draining";
    }
    return "unknown";
}

void worker_set_phase(struct worker *w, enum phase p)
{
    if (w->phase == p) return;
    log_info("phase", "from=%s to=%s", phase_name(w->phase), phase_name(p));
    w->phase = p;
    *w->m_phase = (double)p;
    w->update_pending = true;
}

void worker_error(struct worker *w, const char *msg)
{
    if (w->phase == PH_ERROR || w->phase == PH_DRAINING) return;
    snprintf(w->error_msg, sizeof w->error_msg, "%s", msg);
    w->t_error = clock_wall();
    log_error("worker_error", "msg=\"%s\"", msg);
    benchmark_stop(w);
    worker_set_phase(w, PH_ERROR);
    report_now(w);
}

static void health_tick(evutil_socket_t fd, short what, void *arg);

/* Readiness waits for a healthy probe: ask at once when the model has just
 * loaded or the benchmark has just finished, instead of waiting for the next
 * periodic probe (the reference polled every 10 s: up to 10 s of cold start,
 * vast-cli#411). */
static void probe_health_now(struct worker *w)
{
    if (w->lc->health_ev && !w->lc->health_ok_once) health_tick(-1, 0, w);
}

static void maybe_ready(struct worker *w)
{
    struct lifecycle *lc = w->lc;
    if (w->phase == PH_ERROR || w->phase == PH_DRAINING || w->phase == PH_READY) return;
    if (!lc->model_loaded || !lc->bench_done) return;
    if (w->cfg.health_endpoint[0] && !lc->health_ok_once) return;
    if (!w->cfg.unsecured && !pubkey_key(w->pubkey)) return;
    w->t_ready = clock_wall();
    worker_set_phase(w, PH_READY);
    log_info("ready", "max_perf=%g loadtime=%.3f", w->max_perf, w->loadtime);
    report_now(w);
}

bool lifecycle_awaiting_key(const struct worker *w)
{
    const struct lifecycle *lc = w->lc;
    if (!lc || w->phase == PH_ERROR || w->phase == PH_DRAINING || w->phase == PH_READY)
        return false;
    if (!lc->model_loaded || !lc->bench_done) return false;
    if (w->cfg.health_endpoint[0] && !lc->health_ok_once) return false;
    return !w->cfg.unsecured && !pubkey_key(w->pubkey);
}

void lifecycle_check_ready(struct worker *w)
{
    if (w->lc) maybe_ready(w);
}

void lifecycle_benchmark_done(struct worker *w, double perf, const char *err)
{
    if (err) {
        worker_error(w, err);
        return;
    }
    w->max_perf = perf;
    *w->m_max_perf = perf;
    w->lc->bench_done = true;
    probe_health_now(w);
    maybe_ready(w);
}

void lifecycle_model_loaded(struct worker *w, const char *why)
{
    struct lifecycle *lc = w->lc;
    if (lc->model_loaded) {
        log_debug("model_loaded_again", "why=\"%s\"", why); /* B10: only the first counts */
        return;
    }
    lc->model_loaded = true;
    w->t_loaded = clock_wall();
    w->loadtime = w->t_loaded - w->t_start_wall;
    w->loadtime_pending = true;
    w->update_pending = true;
    log_info("model_loaded", "why=\"%s\" loadtime=%.3f", why, w->loadtime);
    if (w->phase == PH_ERROR || w->phase == PH_DRAINING) return;
    if (w->cfg.bench_enabled && w->bench_handler) {
        worker_set_phase(w, PH_BENCHMARKING);
        if (benchmark_start(w) != 0) return; /* error already raised */
    } else {
        w->max_perf = w->cfg.max_perf;
        *w->m_max_perf = w->max_perf;
        lc->bench_done = true;
    }
    probe_health_now(w);
    maybe_ready(w);
}

/* ---- MODEL_LOG tail ---- */

static void scan_line(struct worker *w, char *s, size_t n)
{
    while (n && (s[n - 1] == '\r' || s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    s[n] = '\0';
    const struct wconfig *c = &w->cfg;
    for (size_t i = 0; i < c->nerror; i++) {
        if (memmem(s, n, c->error_msgs[i], strlen(c->error_msgs[i]))) {
            worker_error(w, c->error_msgs[i]);
            return;
        }
    }
    for (size_t i = 0; i < c->nload; i++) {
        if (memmem(s, n, c->load_msgs[i], strlen(c->load_msgs[i]))) {
            lifecycle_model_loaded(w, c->load_msgs[i]);
            return;
        }
    }
    for (size_t i = 0; i < c->ninfo; i++) {
        if (memmem(s, n, c->info_msgs[i], strlen(c->info_msgs[i]))) {
            char q[256];
            log_info("model_info", "line=%s", log_quote(q, sizeof q, s));
            return;
        }
    }
}

static void feed(struct worker *w, const char *buf, size_t n)
{
    struct lifecycle *lc = w->lc;
    while (n) {
        const char *nl = memchr(buf, '\n', n);
        size_t take = nl ? (size_t)(nl - buf) : n;
        if (!lc->line_overflow) {
            size_t room = LINE_MAX_BYTES - lc->linelen;
            size_t c = take < room ? take : room;
            memcpy(lc->line + lc->linelen, buf, c);
            lc->linelen += c;
            if (take > room) lc->line_overflow = true; /* keep the first 64 KiB */
        }
        if (!nl) return;
        scan_line(w, lc->line, lc->linelen);
        lc->linelen = 0;
        lc->line_overflow = false;
        buf = nl + 1;
        n -= take + 1;
    }
}

static void log_close(struct lifecycle *lc)
{
    if (lc->fd >= 0) close(lc->fd);
    lc->fd = -1;
    lc->linelen = 0;
    lc->line_overflow = false;
}

static void log_tick(evutil_socket_t fd_unused, short what, void *arg)
{
    struct worker *w = arg;
    struct lifecycle *lc = w->lc;
    const char *path = w->cfg.model_log;
    if (lc->fd < 0) {
        lc->fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (lc->fd < 0) return; /* not there yet */
        struct stat st;
        if (fstat(lc->fd, &st) != 0) {
            log_close(lc);
            return;
        }
        lc->dev = st.st_dev;
        lc->ino = st.st_ino;
        lc->off = 0;
        log_info("model_log_open", "path=%s", path);
    }
    char buf[65536];
    size_t total = 0;
    while (total < READ_PER_TICK && lc->fd >= 0) {
        ssize_t r = read(lc->fd, buf, sizeof buf);
        if (r < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (r == 0) break;
        lc->off += r;
        total += (size_t)r;
        feed(w, buf, (size_t)r);
    }
    if (total >= READ_PER_TICK || lc->fd < 0) return;
    /* at EOF: rotation or truncation? */
    struct stat st;
    if (stat(path, &st) != 0 || st.st_dev != lc->dev || st.st_ino != lc->ino) {
        if (lc->linelen) scan_line(w, lc->line, lc->linelen);
        log_info("model_log_rotated", "path=%s", path);
        log_close(lc);
        return;
    }
    if (st.st_size < lc->off) {
        log_info("model_log_truncated", "path=%s", path);
        lseek(lc->fd, 0, SEEK_SET);
        lc->off = 0;
        lc->linelen = 0;
        lc->line_overflow = false;
    }
}

/* ---- health probes ---- */

static void health_result(struct worker *w, int status, const char *err)
{
    struct lifecycle *lc = w->lc;
    lc->health_in_flight = false;
    if (status == 200) {
        lc->health_fail_streak = 0;
        if (!lc->health_ok_once) log_info("health_ok", "first=1");
        lc->health_ok_once = true;
        if (!lc->model_loaded && (!w->cfg.model_log[0] || w->cfg.nload == 0))
            lifecycle_model_loaded(w, "healthcheck");
        maybe_ready(w);
        return;
    }
    if (!lc->health_ok_once) return; /* still starting up: ignored */
    lc->health_fail_streak++;
    log_warn("health_failed", "status=%d err=%s streak=%d", status, err ? err : "-",
             lc->health_fail_streak);
    if (lc->health_fail_streak >= w->cfg.health_failures) {
        char msg[160];
        if (err)
            snprintf(msg, sizeof msg, "Healthcheck failed: %s", err);
        else
            snprintf(msg, sizeof msg, "Healthcheck failed with status: %d", status);
        worker_error(w, msg);
    }
}

static void health_done(struct upstream_req *u, int status, struct evbuffer *b, void *arg)
{
    health_result(arg, status, NULL);
}

static void health_err(struct upstream_req *u, enum upstream_err e, const char *msg, void *arg)
{
    health_result(arg, 0, upstream_err_name(e));
}

static void health_tick(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct lifecycle *lc = w->lc;
    if (lc->health_in_flight || w->phase == PH_ERROR || w->phase == PH_DRAINING) return;
    static const struct upstream_cbs cbs = {NULL, NULL, health_done, health_err};
    struct upstream_opts o = {.timeout_s = w->cfg.health_timeout, .max_buffered = 1 << 20};
    struct upstream_pool *p = lc->health_pool ? lc->health_pool : w->model;
    if (upstream_request(p, EVHTTP_REQ_GET, lc->health_path, NULL, NULL, 0, NULL, &o, &cbs, w))
        lc->health_in_flight = true;
}

int lifecycle_init(struct worker *w)
{
    struct lifecycle *lc = xcalloc(1, sizeof *lc);
    w->lc = lc;
    lc->fd = -1;
    lc->line = xmalloc(LINE_MAX_BYTES + 1);
    w->phase = PH_LOADING;
    const struct wconfig *c = &w->cfg;
    if (c->model_log[0]) {
        struct timeval tv = clock_tv(c->log_poll);
        lc->log_ev = event_new(w->base, -1, EV_PERSIST, log_tick, w);
        if (!lc->log_ev) return -1;
        evtimer_add(lc->log_ev, &tv);
    }
    if (c->health_endpoint[0]) {
        if (c->health_endpoint[0] == '/') {
            snprintf(lc->health_path, sizeof lc->health_path, "%s", c->health_endpoint);
        } else {
            struct http_url u;
            if (http_url_parse(c->health_endpoint, &u) != 0) return -1;
            snprintf(lc->health_path, sizeof lc->health_path, "%.511s", u.path);
            lc->health_pool = upstream_pool_new(w->base, w->dns, c->health_endpoint, NULL);
            if (!lc->health_pool) return -1;
        }
        struct timeval tv = clock_tv(c->health_interval);
        lc->health_ev = event_new(w->base, -1, EV_PERSIST, health_tick, w);
        if (!lc->health_ev) return -1;
        evtimer_add(lc->health_ev, &tv);
        health_tick(-1, 0, w); /* first probe right away */
    }
    bool log_readiness = c->model_log[0] && c->nload > 0;
    if (!log_readiness && !c->health_endpoint[0])
        lifecycle_model_loaded(w, "no readiness source");
    else if (c->model_log[0])
        log_tick(-1, 0, w); /* read what is already there */
    return 0;
}

void lifecycle_free(struct worker *w)
{
    struct lifecycle *lc = w->lc;
    if (!lc) return;
    if (lc->log_ev) event_free(lc->log_ev);
    if (lc->health_ev) event_free(lc->health_ev);
    log_close(lc);
    upstream_pool_free(lc->health_pool);
    free(lc->line);
    free(lc);
    w->lc = NULL;
}
