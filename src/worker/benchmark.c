/* Benchmark (vast-protocol.md §5.3), asynchronous on the loop.
 *
 * Cache: SGPU_BENCHMARK_FILE (default `.has_benchmark` in the CWD, PyWorker's
 * name and format: Python repr of max_perf).  A cached value is used only if
 * it parses as a finite number > 0, and - when the sidecar `<file>.meta`
 * exists - only if the configuration fingerprint in it matches (model URL,
 * route, payload); anything else re-runs the benchmark (B9).  Failed or zero
 * results are never cached; the file is written atomically.
 *
 * Run: one warm-up request that must answer 2xx (B12; connection refusals are
 * retried for 30 s, the model may still be binding its port), then
 * SGPU_BENCHMARK_RUNS rounds of SGPU_BENCHMARK_CONCURRENCY concurrent requests
 * (1 for serial handlers), each round timed to the end of the last body (B12).
 * perf = sum of workload of 2xx answers / round time; max over rounds.  A
 * round without a success is fatal ("No successful responses from
 * benchmark"). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "httputil.h"
#include "log.h"
#include "worker.h"

#define MAX_CONC 1000

struct benchmark {
    struct worker *w;
    struct handler *h;
    char path[256];
    char *payload;
    size_t len;
    double workload;
    int round; /* 0 = warm-up */
    int conc;
    int outstanding;
    int warm_retries;
    double t0;
    double ok_workload;
    double best;
    struct upstream_req *reqs[MAX_CONC];
    struct event *retry_ev;
    char fp[32];
};

int benchmark_cache_read(const char *path, double *perf)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char buf[64];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' ' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    char *end;
    errno = 0;
    double d = strtod(buf, &end);
    if (n == 0 || *end || errno || !isfinite(d) || d <= 0) return -1;
    *perf = d;
    return 0;
}

static int write_atomic(const char *path, const char *data)
{
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    bool ok = fputs(data, f) >= 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

int benchmark_cache_write(const char *path, double perf)
{
    char t[40];
    size_t n = pyj_format_float(perf, t, sizeof t);
    t[n] = '\0';
    return write_atomic(path, t);
}

static void fingerprint(struct benchmark *b, char out[32])
{
    uint64_t h = 1469598103934665603ULL;
    const char *parts[] = {b->w->cfg.model_url, b->h->route, b->path, b->payload};
    for (size_t i = 0; i < 4; i++) {
        for (const char *p = parts[i]; *p; p++)
            h = (h ^ (uint8_t)*p) * 1099511628211ULL;
        h = (h ^ 0xff) * 1099511628211ULL;
    }
    snprintf(out, 32, "%016llx", (unsigned long long)h);
}

static void finish(struct benchmark *b, double perf, const char *err)
{
    struct worker *w = b->w;
    if (!err) {
        char meta[1100];
        snprintf(meta, sizeof meta, "%s.meta", w->cfg.bench_file);
        if (benchmark_cache_write(w->cfg.bench_file, perf) != 0 || write_atomic(meta, b->fp) != 0)
            log_warn("benchmark_cache_write_failed", "path=%s", w->cfg.bench_file);
        log_info("benchmark_done", "max_perf=%g", perf);
    }
    benchmark_stop(w);
    lifecycle_benchmark_done(w, perf, err);
}

static void send_one(struct benchmark *b, int slot);

static void round_start(struct benchmark *b)
{
    b->t0 = time_mono();
    b->ok_workload = 0;
    int n = b->round == 0 ? 1 : b->conc;
    b->outstanding = n;
    for (int i = 0; i < n; i++)
        send_one(b, i);
}

static void round_end(struct benchmark *b)
{
    double el = time_mono() - b->t0;
    if (b->round == 0) {
        b->round = 1;
        round_start(b);
        return;
    }
    if (b->ok_workload <= 0) {
        finish(b, 0, "No successful responses from benchmark");
        return;
    }
    double perf = b->ok_workload / (el > 1e-6 ? el : 1e-6);
    log_info("benchmark_round", "round=%d perf=%g seconds=%.4f", b->round, perf, el);
    if (perf > b->best) b->best = perf;
    if (b->round >= b->w->cfg.bench_runs) {
        finish(b, b->best, NULL);
        return;
    }
    b->round++;
    round_start(b);
}

static int slot_of(struct benchmark *b, struct upstream_req *u)
{
    for (int i = 0; i < MAX_CONC; i++)
        if (b->reqs[i] == u) return i;
    return -1;
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct benchmark *b = arg;
    b->outstanding = 1;
    send_one(b, 0);
}

static void on_done(struct upstream_req *u, int status, struct evbuffer *body, void *arg)
{
    struct benchmark *b = arg;
    int s = slot_of(b, u);
    if (s >= 0) b->reqs[s] = NULL;
    if (b->round == 0 && (status < 200 || status >= 300)) {
        char msg[96];
        snprintf(msg, sizeof msg, "Benchmark warm-up failed with status %d", status);
        finish(b, 0, msg);
        return;
    }
    if (status >= 200 && status < 300) b->ok_workload += b->workload;
    if (--b->outstanding == 0) round_end(b);
}

static void on_error(struct upstream_req *u, enum upstream_err e, const char *msg, void *arg)
{
    struct benchmark *b = arg;
    int s = slot_of(b, u);
    if (s >= 0) b->reqs[s] = NULL;
    if (b->round == 0) {
        if (e == UPSTREAM_ERR_CONNECT && b->warm_retries++ < 30) {
            struct timeval tv = {1, 0};
            evtimer_add(b->retry_ev, &tv);
            return;
        }
        char m[160];
        snprintf(m, sizeof m, "Benchmark failed with error: %s", msg);
        finish(b, 0, m);
        return;
    }
    log_warn("benchmark_request_failed", "err=%s", upstream_err_name(e));
    if (--b->outstanding == 0) round_end(b);
}

static void send_one(struct benchmark *b, int slot)
{
    static const struct upstream_cbs cbs = {NULL, NULL, on_done, on_error};
    struct upstream_opts o = {.timeout_s = b->w->cfg.bench_timeout,
                              .max_buffered = b->w->cfg.max_response};
    b->reqs[slot] = upstream_request(b->w->model, EVHTTP_REQ_POST, b->path, "application/json",
                                     b->payload, b->len, NULL, &o, &cbs, b);
    if (!b->reqs[slot]) {
        /* treat like a failed request, from the loop */
        b->outstanding--;
        if (b->outstanding == 0) {
            if (b->round == 0)
                finish(b, 0, "Benchmark failed with error: cannot start request");
            else
                round_end(b);
        }
    }
}

int benchmark_start(struct worker *w)
{
    struct handler *h = w->bench_handler;
    struct benchmark *b = calloc(1, sizeof *b);
    if (!b) abort();
    b->w = w;
    b->h = h;
    const char *route = strcmp(h->route, "*") == 0 ? w->cfg.bench_route : h->route;
    snprintf(b->path, sizeof b->path, "%s", h->upstream[0] ? h->upstream : route);
    b->payload = strdup(h->bench_payload);
    b->len = strlen(b->payload);
    struct pyj_value *pv = NULL;
    char err[64];
    b->workload = 100;
    if (pyj_parse(b->payload, b->len, &pv, err, sizeof err) == 0) {
        b->workload = handler_workload(h, pv);
        pyj_free(pv);
    }
    b->conc = h->parallel ? w->cfg.bench_concurrency : 1;
    if (b->conc > MAX_CONC) b->conc = MAX_CONC;
    fingerprint(b, b->fp);
    w->bench = b;

    double cached;
    if (benchmark_cache_read(w->cfg.bench_file, &cached) == 0) {
        char meta[1100], fp[64] = "";
        snprintf(meta, sizeof meta, "%s.meta", w->cfg.bench_file);
        FILE *f = fopen(meta, "r");
        bool match = true;
        if (f) {
            size_t n = fread(fp, 1, sizeof fp - 1, f);
            fp[n] = '\0';
            fclose(f);
            match = strncmp(fp, b->fp, strlen(b->fp)) == 0;
        }
        if (match) {
            log_info("benchmark_cached", "path=%s max_perf=%g", w->cfg.bench_file, cached);
            benchmark_stop(w);
            lifecycle_benchmark_done(w, cached, NULL);
            return 0;
        }
        log_info("benchmark_cache_stale", "path=%s", w->cfg.bench_file);
    }
    b->retry_ev = evtimer_new(w->base, retry_cb, b);
    log_info("benchmark_start", "path=%s workload=%g concurrency=%d runs=%d", b->path, b->workload,
             b->conc, w->cfg.bench_runs);
    b->round = 0;
    round_start(b);
    return 0;
}

void benchmark_stop(struct worker *w)
{
    struct benchmark *b = w->bench;
    if (!b) return;
    w->bench = NULL;
    for (int i = 0; i < MAX_CONC; i++)
        if (b->reqs[i]) upstream_cancel(b->reqs[i]);
    if (b->retry_ev) event_free(b->retry_ev);
    free(b->payload);
    free(b);
}
