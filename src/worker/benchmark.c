/* Benchmark (docs/protocol.md §5.3), asynchronous on the loop.
 *
 * Sizing (the tgi/openai presets' own payload only): first the model server's published
 * limits are read - TGI `GET /info` (max_total_tokens, max_input_tokens or max_input_length),
 * OpenAI `GET /v1/models` (data[0].max_model_len) - and the prompt words and generation length
 * are shrunk to fit (benchmark_size).  A warm-up still refused for length (422, or 400/413
 * naming tokens/context/length) is shrunk again (from the token counts in the message when it
 * has them, else halved), up to MAX_SHRINKS times.
 *
 * Fallback: a benchmark the model refuses with a 4xx (after sizing) does not fail the worker:
 * the cause is logged (benchmark_fallback) and shown in /status, and max_perf starts at
 * SGPU_MAX_PERF (or the warm-up's own rate when that is lower) and then follows the requests
 * served: sum of workload / sum of seconds of the last 16 successful requests, a lower bound
 * of the capacity (requests in a batch are each slower than the whole).  Connection errors,
 * timeouts and 5xx stay fatal: those are a model that does not work.
 *
 * Cache: SGPU_BENCHMARK_FILE (default `.has_benchmark` in the CWD, PyWorker's
 * name and format: Python repr of max_perf).  A cached value is used only if
 * it parses as a finite number > 0, and - when the sidecar `<file>.meta`
 * exists - only if the configuration fingerprint on its first line matches
 * (model URL, route, payload as sized from the limits, so the prompt shape is
 * part of the key); anything else re-runs the benchmark (B9).  Failed, zero
 * and fallback results are never cached; the file is written atomically.
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

#include "benchmark.h"
#include "clock.h"
#include "handlers.h"
#include "httputil.h"
#include "lifecycle.h"
#include "log.h"
#include "xalloc.h"

#define MAX_CONC 1000
#define MAX_SHRINKS 8
#define BODY_EXCERPT 300

struct bench_run {
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
    double warm_rate;   /* workload/s of the successful warm-up (0 = none) */
    int round_4xx;      /* 4xx answers in the current round */
    int words, max_new; /* preset shape (0 = custom payload) */
    int shrinks;
    bool probing; /* waiting for the limits (GET /info or /v1/models) */
    struct upstream_req *probe;
    struct upstream_req *reqs[MAX_CONC];
    struct event *retry_ev;
    char fp[32];
};

/* How max_perf was obtained (/status "benchmark"). */
struct bench_info {
    const char *how;    /* "off", "running", "measured", "cached", "fallback" */
    char cause[512];    /* fallback: why the benchmark could not run */
    int words, max_new; /* preset prompt shape sent (0 = custom payload) */
    int limit_total;    /* model's published context (tokens; 0 = unknown) */
    double fb_work[16]; /* fallback: workload and seconds of the last successful requests */
    double fb_secs[16];
    int fb_n, fb_pos;
};

struct benchmark {
    struct bench_info bi;
    struct bench_run *run; /* in progress, or NULL */
    double *m_fallback;    /* gauge: 1 while max_perf is the fallback estimate */
};

static void set_how(struct worker *w, const char *how)
{
    w->bench->bi.how = how;
    *w->bench->m_fallback = strcmp(how, "fallback") == 0 ? 1 : 0;
}

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

static void fingerprint(struct bench_run *b, char out[32])
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

static void finish(struct bench_run *b, double perf, const char *err)
{
    struct worker *w = b->w;
    if (!err) {
        char meta[1100], fpl[128];
        snprintf(meta, sizeof meta, "%s.meta", w->cfg.bench_file);
        /* line 1: the key; line 2: the shape that was measured (for people) */
        snprintf(fpl, sizeof fpl, "%s\nwords=%d max_new_tokens=%d\n", b->fp, b->words, b->max_new);
        if (benchmark_cache_write(w->cfg.bench_file, perf) != 0 || write_atomic(meta, fpl) != 0)
            log_warn("benchmark_cache_write_failed", "path=%s", w->cfg.bench_file);
        log_info("benchmark_done", "max_perf=%g words=%d max_new_tokens=%d", perf, b->words,
                 b->max_new);
        set_how(w, "measured");
    }
    benchmark_stop(w);
    lifecycle_benchmark_done(w, perf, err);
}

/* The model refused the benchmark itself: serve anyway, max_perf from served requests. */
static void fallback(struct bench_run *b, const char *cause)
{
    struct worker *w = b->w;
    double seed = w->cfg.max_perf > 0 ? w->cfg.max_perf : 100;
    if (b->warm_rate > 0 && b->warm_rate < seed) seed = b->warm_rate;
    snprintf(w->bench->bi.cause, sizeof w->bench->bi.cause, "%s", cause);
    set_how(w, "fallback");
    w->bench->bi.fb_n = w->bench->bi.fb_pos = 0;
    char q[600];
    log_warn("benchmark_fallback", "cause=%s max_perf=%g", log_quote(q, sizeof q, cause), seed);
    benchmark_stop(w);
    lifecycle_benchmark_done(w, seed, NULL);
}

void benchmark_observe(struct worker *w, bool success, double workload, double seconds)
{
    struct bench_info *bi = &w->bench->bi;
    if (!success || !bi->how || strcmp(bi->how, "fallback") != 0) return;
    if (!(workload > 0) || !isfinite(workload) || !(seconds > 1e-6) || !isfinite(seconds)) return;
    bi->fb_work[bi->fb_pos] = workload;
    bi->fb_secs[bi->fb_pos] = seconds;
    bi->fb_pos = (bi->fb_pos + 1) % 16;
    if (bi->fb_n < 16) bi->fb_n++;
    double sw = 0, ss = 0;
    for (int i = 0; i < bi->fb_n; i++) {
        sw += bi->fb_work[i];
        ss += bi->fb_secs[i];
    }
    double perf = sw / ss;
    if (perf > 0 && isfinite(perf) && perf <= 1e12) {
        w->max_perf = perf;
        *w->m_max_perf = perf;
        w->update_pending = true; /* the engine learns it with the next report */
    }
}

void benchmark_size(int total, int max_input, int *words, int *max_new)
{
    if (total <= 0) return;
    if (max_input <= 0 || max_input >= total) max_input = total - 1;
    /* the generation takes at most a quarter of the context, the prompt the rest */
    int mn = *max_new;
    if (mn > total / 4) mn = total / 4;
    if (mn < 1) mn = 1;
    int budget = total - mn;
    if (budget > max_input) budget = max_input;
    /* <= 8 tokens per filler word, plus a few for BOS/template */
    int wd = (budget - 8) / 8;
    if (wd > *words) wd = *words;
    if (wd < 1) wd = 1;
    *words = wd;
    *max_new = mn;
}

/* First number after `key` in s (0 if none). */
static long num_after(const char *s, const char *key)
{
    const char *p = strstr(s, key);
    if (!p) return 0;
    p += strlen(key);
    while (*p && !(*p >= '0' && *p <= '9'))
        if (*p++ == '.') return 0; /* the number must be in the same sentence */
    return strtol(p, NULL, 10);
}

/* A warm-up refused for its length: smaller shape from the message's numbers (TGI: "must be
 * <= T. Given: N `inputs` tokens", vLLM/sgpu-model OpenAI: "maximum context length is T
 * tokens ... (N in the prompt"), else halved.  false when it cannot shrink any more. */
static bool shrink(struct bench_run *b, const char *msg)
{
    if (b->shrinks >= MAX_SHRINKS || (b->words <= 1 && b->max_new <= 1)) return false;
    b->shrinks++;
    long total = num_after(msg, "must be <=");
    if (!total) total = num_after(msg, "maximum context length is");
    long given = num_after(msg, "Given:");
    const char *pr = strstr(msg, " in the prompt");
    if (!given && pr) {
        const char *q = pr;
        while (q > msg && q[-1] >= '0' && q[-1] <= '9')
            q--;
        given = strtol(q, NULL, 10);
    }
    int words = b->words, mn = b->max_new;
    if (total > 8 && total < (1L << 24) && given > 0 && given < (1L << 24)) {
        double tpw = (double)given / words; /* this model's tokens per filler word */
        if (mn > total / 4) mn = (int)(total / 4);
        if (mn < 1) mn = 1;
        int fit = (int)((double)(total - mn - 8) * 0.9 / (tpw > 0 ? tpw : 8));
        words = fit < words ? fit : words / 2;
    } else {
        words /= 2;
        mn /= 2;
    }
    b->words = words < 1 ? 1 : words;
    b->max_new = mn < 1 ? 1 : mn;
    return true;
}

static void set_payload(struct bench_run *b)
{
    char *p = handlers_bench_payload(b->h, b->words, b->max_new);
    if (!p) return;
    free(b->payload);
    b->payload = p;
    b->len = strlen(p);
    struct pyj_value *pv = NULL;
    char err[64];
    if (pyj_parse(b->payload, b->len, &pv, err, sizeof err) == 0) {
        b->workload = handler_workload(b->h, pv);
        pyj_free(pv);
    }
    b->w->bench->bi.words = b->words;
    b->w->bench->bi.max_new = b->max_new;
}

static void send_one(struct bench_run *b, int slot);

static void round_start(struct bench_run *b)
{
    b->t0 = clock_mono();
    b->ok_workload = 0;
    b->round_4xx = 0;
    int n = b->round == 0 ? 1 : b->conc;
    b->outstanding = n;
    for (int i = 0; i < n; i++)
        send_one(b, i);
}

static void round_end(struct bench_run *b)
{
    double el = clock_mono() - b->t0;
    if (b->round == 0) {
        b->round = 1;
        round_start(b);
        return;
    }
    if (b->ok_workload <= 0) {
        if (b->round_4xx > 0) /* refused (e.g. 429 at this concurrency), not broken */
            fallback(b, "No successful responses from benchmark (4xx answers)");
        else
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

static int slot_of(struct bench_run *b, struct upstream_req *u)
{
    for (int i = 0; i < MAX_CONC; i++)
        if (b->reqs[i] == u) return i;
    return -1;
}

static void probe_start(struct bench_run *b);

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct bench_run *b = arg;
    if (b->probing) {
        probe_start(b);
        return;
    }
    b->t0 = clock_mono();
    b->outstanding = 1;
    send_one(b, 0);
}

/* Up to n-1 bytes of the body, printable ASCII only (for messages and logs). */
static void excerpt(struct evbuffer *body, char *out, size_t n)
{
    size_t len = body ? evbuffer_get_length(body) : 0;
    if (len > n - 1) len = n - 1;
    if (len) evbuffer_copyout(body, out, len);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] > 0x7e) out[i] = ' ';
    out[len] = '\0';
}

static bool length_refusal(int status, const char *msg)
{
    if (status == 422) return true;
    if (status != 400 && status != 413) return false;
    return strstr(msg, "token") || strstr(msg, "context") || strstr(msg, "length");
}

static void on_done(struct upstream_req *u, int status, struct evbuffer *body, void *arg)
{
    struct bench_run *b = arg;
    int s = slot_of(b, u);
    if (s >= 0) b->reqs[s] = NULL;
    if (b->round == 0 && (status < 200 || status >= 300)) {
        char ex[BODY_EXCERPT + 1];
        excerpt(body, ex, sizeof ex);
        if (b->h->bench_preset != BENCH_CUSTOM && length_refusal(status, ex)) {
            int ow = b->words, on = b->max_new;
            if (shrink(b, ex)) {
                log_info("benchmark_shrink", "status=%d words=%d->%d max_new_tokens=%d->%d", status,
                         ow, b->words, on, b->max_new);
                set_payload(b);
                b->t0 = clock_mono();
                b->outstanding = 1;
                send_one(b, 0);
                return;
            }
        }
        char msg[BODY_EXCERPT + 96];
        snprintf(msg, sizeof msg, "Benchmark warm-up failed with status %d%s%s", status,
                 ex[0] ? ": " : "", ex);
        if (status >= 400 && status < 500)
            fallback(b, msg);
        else
            finish(b, 0, msg);
        return;
    }
    if (b->round == 0) {
        double el = clock_mono() - b->t0;
        b->warm_rate = b->workload / (el > 1e-6 ? el : 1e-6);
    }
    if (status >= 200 && status < 300)
        b->ok_workload += b->workload;
    else if (status >= 400 && status < 500)
        b->round_4xx++;
    if (--b->outstanding == 0) round_end(b);
}

static void on_error(struct upstream_req *u, enum upstream_err e, const char *msg, void *arg)
{
    struct bench_run *b = arg;
    int s = slot_of(b, u);
    if (s >= 0) b->reqs[s] = NULL;
    if (b->round == 0) {
        if (e == UPSTREAM_ERR_CONNECT && b->warm_retries++ < 30) {
            struct timeval tv = clock_tv(1);
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

static void send_one(struct bench_run *b, int slot)
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

/* Fingerprint, cache, then the warm-up: once the payload has its final (sized) shape. */
static void bench_begin(struct bench_run *b)
{
    struct worker *w = b->w;
    b->probing = false;
    b->warm_retries = 0; /* the warm-up gets its own 30 s of connection retries */
    if (b->h->bench_preset != BENCH_CUSTOM) set_payload(b);
    fingerprint(b, b->fp);
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
            set_how(w, "cached");
            benchmark_stop(w);
            lifecycle_benchmark_done(w, cached, NULL);
            return;
        }
        log_info("benchmark_cache_stale", "path=%s", w->cfg.bench_file);
    }
    log_info("benchmark_start",
             "path=%s workload=%g concurrency=%d runs=%d words=%d max_new_tokens=%d", b->path,
             b->workload, b->conc, w->cfg.bench_runs, b->words, b->max_new);
    b->round = 0;
    round_start(b);
}

/* Integer member k of o, if it is a positive integer below 2^24 (else 0). */
static int limit_of(const struct pyj_value *o, const char *k)
{
    const struct pyj_value *v = o ? pyj_get(o, k) : NULL;
    double d;
    if (!v || v->type != PYJ_INT || !pyj_number(v, &d) || !(d > 0) || d >= (1 << 24)) return 0;
    return (int)d;
}

static void probe_done(struct upstream_req *u, int status, struct evbuffer *body, void *arg)
{
    struct bench_run *b = arg;
    b->probe = NULL;
    int total = 0, input = 0;
    size_t len = body ? evbuffer_get_length(body) : 0;
    if (status == 200 && len > 0 && len <= 1 << 20) {
        const char *txt = (const char *)evbuffer_pullup(body, -1);
        struct pyj_value *v = NULL;
        char err[64];
        if (txt && pyj_parse(txt, len, &v, err, sizeof err) == 0) {
            total = limit_of(v, "max_total_tokens");
            input = limit_of(v, "max_input_tokens");
            if (!input) input = limit_of(v, "max_input_length");
            const struct pyj_value *d = pyj_get(v, "data");
            if (!total && d && d->type == PYJ_ARRAY && d->u.arr.len > 0)
                total = limit_of(d->u.arr.items[0], "max_model_len");
            pyj_free(v);
        }
    }
    int ow = b->words, on = b->max_new;
    if (total > 0) {
        benchmark_size(total, input, &b->words, &b->max_new);
        b->w->bench->bi.limit_total = total;
    }
    log_info("benchmark_limits",
             "status=%d max_total_tokens=%d max_input_tokens=%d words=%d->%d "
             "max_new_tokens=%d->%d",
             status, total, input, ow, b->words, on, b->max_new);
    bench_begin(b);
}

static void probe_error(struct upstream_req *u, enum upstream_err e, const char *msg, void *arg)
{
    struct bench_run *b = arg;
    b->probe = NULL;
    if (e == UPSTREAM_ERR_CONNECT && b->warm_retries++ < 30) { /* still binding its port */
        struct timeval tv = clock_tv(1);
        evtimer_add(b->retry_ev, &tv);
        return;
    }
    log_info("benchmark_limits", "status=0 err=%s", upstream_err_name(e));
    bench_begin(b); /* the warm-up decides (it retries and shrinks too) */
}

static void probe_start(struct bench_run *b)
{
    static const struct upstream_cbs cbs = {NULL, NULL, probe_done, probe_error};
    struct upstream_opts o = {.timeout_s = 10, .max_buffered = 1 << 20};
    const char *path = b->h->bench_preset == BENCH_OPENAI ? "/v1/models" : "/info";
    b->probe =
        upstream_request(b->w->model, EVHTTP_REQ_GET, path, NULL, NULL, 0, NULL, &o, &cbs, b);
    if (!b->probe) bench_begin(b);
}

int benchmark_start(struct worker *w)
{
    struct handler *h = w->bench_handler;
    struct bench_run *b = xcalloc(1, sizeof *b);
    b->w = w;
    b->h = h;
    const char *route = strcmp(h->route, "*") == 0 ? w->cfg.bench_route : h->route;
    snprintf(b->path, sizeof b->path, "%s", h->upstream[0] ? h->upstream : route);
    b->payload = xstrdup(h->bench_payload);
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
    w->bench->run = b;
    set_how(w, "running");
    w->bench->bi.words = w->bench->bi.max_new = 0;
    b->retry_ev = evtimer_new(w->base, retry_cb, b);
    if (!b->retry_ev) abort(); /* out of memory: the xalloc policy */
    if (h->bench_preset != BENCH_CUSTOM) {
        b->words = BENCH_WORDS;
        b->max_new = h->bench_preset == BENCH_OPENAI ? BENCH_OPENAI_NEW : BENCH_TGI_NEW;
        b->probing = true;
        probe_start(b); /* may complete (and free b) before it returns */
        return 0;
    }
    bench_begin(b);
    return 0;
}

void benchmark_stop(struct worker *w)
{
    struct bench_run *b = w->bench ? w->bench->run : NULL;
    if (!b) return;
    w->bench->run = NULL;
    for (int i = 0; i < MAX_CONC; i++)
        if (b->reqs[i]) upstream_cancel(b->reqs[i]);
    if (b->probe) upstream_cancel(b->probe);
    if (b->retry_ev) event_free(b->retry_ev);
    free(b->payload);
    free(b);
}

int benchmark_init(struct worker *w)
{
    struct benchmark *bm = xcalloc(1, sizeof *bm);
    w->bench = bm;
    bm->m_fallback =
        metrics_gauge(w->metrics, "sgpu_worker_benchmark_fallback",
                      "1 while max_perf is estimated from served requests (benchmark refused)");
    return 0;
}

void benchmark_free(struct worker *w)
{
    benchmark_stop(w);
    free(w->bench);
    w->bench = NULL;
}

void benchmark_status_json(const struct worker *w, struct sbuf *b)
{
    const struct bench_info *bi = &w->bench->bi;
    const char *how = bi->how ? bi->how : "off";
    sbuf_printf(b, "{\"how\": \"%s\", \"cause\": ", how);
    pyj_write_string(b, bi->cause, strlen(bi->cause));
    sbuf_printf(b, ", \"words\": %d, \"max_new_tokens\": %d, \"model_max_total_tokens\": %d}",
                bi->words, bi->max_new, bi->limit_total);
}
