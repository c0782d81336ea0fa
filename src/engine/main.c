/* sgpu-engine: start-up (data dir, database, signing key, admin key), the event loop, and an
 * orderly shutdown.  See docs/engine.md. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"
#include "clock.h"
#include "connguard.h"
#include "emetrics.h"
#include "engine.h"
#include "httputil.h"
#include "idmap.h"
#include "lifecycle.h"
#include "log.h"
#include "metrics.h"
#include "proc.h"
#include "providers/provider.h"
#include "router.h"
#include "rsa.h"
#include "signpool.h"
#include "state.h"
#include "store.h"
#include "xalloc.h"

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    lifecycle_tick(arg);
}

/* Shutdown progress: done when no local instance runs and no provider command is in flight
 * any more (its result is then stored), or at the deadline. */
static void on_stop_poll(evutil_socket_t fd, short what, void *arg)
{
    struct engine *e = arg;
    (void)fd;
    (void)what;
    int n, ops;
    provider_shutdown_pending(e, &n, &ops);
    if ((n == 0 && ops == 0) || clock_mono() >= e->stop_deadline_mono) {
        if (n || ops)
            log_warn("shutdown_timeout", "instances_running=%d commands_running=%d", n, ops);
        event_base_loopbreak(e->base);
    }
}

static void on_term(evutil_socket_t sig, short what, void *arg)
{
    struct engine *e = arg;
    (void)what;
    if (e->stopping) { /* second signal: do not wait any longer */
        log_warn("signal", "sig=%d action=exit_now", (int)sig);
        event_base_loopbreak(e->base);
        return;
    }
    log_info("signal", "sig=%d action=shutdown wait_s=%g", (int)sig,
             e->opts.keep_workers ? 0.0 : e->opts.shutdown_timeout_s);
    event_del(e->tick_ev);       /* no scaling any more */
    lifecycle_shutdown_begin(e); /* /route/ answers "waiting"; instances drain */
    e->stop_ev = event_new(e->base, -1, EV_PERSIST, on_stop_poll, e);
    struct timeval tv = clock_tv_ms(100);
    if (!e->stop_ev || event_add(e->stop_ev, &tv) != 0) event_base_loopbreak(e->base);
    on_stop_poll(-1, 0, e);
}

static int load_or_create_key(struct engine *e)
{
    char *path = e->key_path;
    if (snprintf(e->key_path, sizeof e->key_path, "%s/signing_key.pem", e->opts.data_dir) >=
        (int)sizeof e->key_path)
        return -1;
    if (access(path, F_OK) == 0) {
        if (rsa_privkey_load_file(path, &e->key) != 0) {
            log_error("key_load_failed", "path=%s", path);
            return -1;
        }
        log_info("key_loaded", "path=%s", path);
    } else {
        if (rsa_privkey_generate(2048, &e->key) != 0 || rsa_privkey_save_file(e->key, path) != 0) {
            log_error("key_create_failed", "path=%s", path);
            return -1;
        }
        log_info("created", "what=signing_key path=%s mode=0600", path);
    }
    return rsa_privkey_public_pem(e->key, &e->pubkey_pem);
}

static int load_or_create_admin_key(struct engine *e)
{
    char path[700];
    snprintf(path, sizeof path, "%s/api_key", e->opts.data_dir);
    FILE *f = fopen(path, "r");
    if (f) {
        char buf[256] = "";
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        buf[strcspn(buf, "\r\n \t")] = '\0';
        if (strlen(buf) < 16 || strlen(buf) > API_KEY_LEN) {
            log_error("api_key_invalid", "path=%s msg=\"16-40 characters expected\"", path);
            return -1;
        }
        memcpy(e->admin_key, buf, strlen(buf) + 1);
        log_info("api_key_loaded", "path=%s", path);
        return 0;
    }
    if (state_random_hex(e->admin_key, API_KEY_LEN) != 0) return -1;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        log_error("api_key_create_failed", "path=%s errno=%d", path, errno);
        return -1;
    }
    char line[API_KEY_LEN + 2];
    int n = snprintf(line, sizeof line, "%s\n", e->admin_key);
    bool ok = write(fd, line, (size_t)n) == n;
    close(fd);
    if (!ok) return -1;
    store_api_key_add(e->store, e->admin_key, 0);
    log_info("created", "what=admin_api_key path=%s mode=0600", path);
    return 0;
}

static void adopt_workers(struct engine *e)
{
    double now = clock_mono();
    for (struct worker *w = e->workers, *n; w; w = n) {
        n = w->next;
        w->last_report_mono = now; /* grace: unavailable_after to report again */
        switch (w->state) {
        case WS_CREATING:
            snprintf(w->error_msg, sizeof w->error_msg, "engine restarted during create");
            w->state = WS_ERROR;
            break;
        case WS_STOPPING:
            w->state = WS_IDLE;
            w->intent = WI_PARK;
            break;
        default:
            break;
        }
        struct workergroup *g = state_wg_by_id(e, w->wg_id);
        provider_adopt(e, g, w);
    }
    for (struct endpoint *ep = e->endpoints; ep; ep = ep->next)
        if (ep->deleting) lifecycle_retire_endpoint(e, ep);
    for (struct workergroup *g = e->wgs; g; g = g->next)
        if (g->deleting) lifecycle_retire_wg(e, g);
}

/* The data directory and its workers/ subdirectory; the executable's directory (providers
 * look for sgpu-launch / sgpu-worker next to it).  0 or -1 (logged). */
static int setup_dirs(struct engine *e)
{
    char exe[600];
    ssize_t xl = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (xl > 0) {
        exe[xl] = '\0';
        snprintf(e->self_dir, sizeof e->self_dir, "%s", dirname(exe));
    }
    if (mkdir(e->opts.data_dir, 0700) != 0 && errno != EEXIST) {
        log_error("data_dir_failed", "path=%s errno=%d", e->opts.data_dir, errno);
        return -1;
    }
    {
        char wdir[600];
        if (snprintf(wdir, sizeof wdir, "%s/workers", e->opts.data_dir) < (int)sizeof wdir)
            mkdir(wdir, 0700);
    }
    return 0;
}

/* The store (dbp: <data-dir>/engine.db), the signing and admin keys.  0 or -1 (logged). */
static int open_store(struct engine *e, char *dbp, size_t dbn)
{
    char err[300];
    if (snprintf(dbp, dbn, "%s/engine.db", e->opts.data_dir) >= (int)dbn) return -1;
    bool fresh = access(dbp, F_OK) != 0;
    e->store = store_open(dbp, err, sizeof err);
    if (!e->store) {
        log_error("store_open_failed", "msg=\"%s\"", err);
        return -1;
    }
    if (fresh) log_info("created", "what=database path=%s", dbp);
    if (load_or_create_key(e) != 0 || load_or_create_admin_key(e) != 0) return -1;
    return 0;
}

/* Id counters from the store: ids are never reused, request_idx never repeats across restarts
 * (a block of 100000 is reserved at a time). */
static void load_counters(struct engine *e)
{
    char v[32];
    if (store_meta_get(e->store, "next_worker_id", v, sizeof v) == 0) e->next_worker_id = atoll(v);
    if (store_meta_get(e->store, "next_endpoint_id", v, sizeof v) == 0)
        e->next_endpoint_id = atoll(v);
    if (store_meta_get(e->store, "next_wg_id", v, sizeof v) == 0) e->next_wg_id = atoll(v);
    if (e->next_worker_id < 1) e->next_worker_id = 1;
    if (e->next_endpoint_id < 1) e->next_endpoint_id = 1;
    if (e->next_wg_id < 1) e->next_wg_id = 1;
    if (store_meta_get(e->store, "request_idx_reserved", v, sizeof v) == 0)
        e->next_request_idx = atoll(v);
    if (e->next_request_idx < 1) e->next_request_idx = 1;
    e->request_idx_reserved = e->next_request_idx + 100000;
    snprintf(v, sizeof v, "%lld", (long long)e->request_idx_reserved);
    store_meta_set(e->store, "request_idx_reserved", v);
}

/* The event base, child processes, the HTTP listener with its connection guard, and the
 * public URL (--public-url, else derived from the bound address).  0 or -1 (logged). */
static int listen_api(struct engine *e, int *port)
{
    e->base = http_base_new();
    if (!e->base || proc_init(e) != 0) {
        log_error("init_failed", "what=event_base");
        return -1;
    }
    /* 4 MiB: bodies over the API's 1 MiB still get a JSON 413 (api.c); past 4 MiB libevent
     * answers its own 413 */
    struct http_limits lim = {.max_body = 4u << 20, .max_headers = 16 << 10, .timeout_s = 60};
    e->http = http_server_new(e->base, &lim);
    /* connection discipline (connguard.h): fd limit, idle eviction, request deadline, body
     * budget, strict framing */
    struct connguard_opts gopt = {
        .prefix = "sgpu_engine",
        .max_conns = e->opts.max_connections,
        .fds_per_conn = 1,
        .deadline_s = e->opts.request_deadline_s,
        .body_budget = (size_t)(e->opts.body_budget_mb * (1 << 20)),
        .max_body = lim.max_body,
    };
    e->guard = e->http ? connguard_new(e->base, e->http, &gopt, e->metrics) : NULL;
    if (!e->http || !e->guard ||
        connguard_listen(e->guard, e->opts.listen_host, e->opts.listen_port, port) != 0) {
        log_error("listen_failed", "host=%s port=%d errno=%d", e->opts.listen_host,
                  e->opts.listen_port, errno);
        return -1;
    }
    if (e->opts.public_url[0]) {
        if (snprintf(e->public_url, sizeof e->public_url, "%s", e->opts.public_url) >=
            (int)sizeof e->public_url)
            return -1;
        size_t l = strlen(e->public_url);
        while (l > 0 && e->public_url[l - 1] == '/')
            e->public_url[--l] = '\0';
    } else {
        const char *h = e->opts.listen_host;
        if (strcmp(h, "0.0.0.0") == 0 || !*h) h = "127.0.0.1";
        if (snprintf(e->public_url, sizeof e->public_url, "http://%s:%d", h, *port) >=
            (int)sizeof e->public_url)
            return -1;
    }
    return 0;
}

/* Modules on, then the state from the store, instances re-adopted.  0 or -1 (logged). */
static int start_modules(struct engine *e, const char *dbp)
{
    lifecycle_init();
    api_init(e);
    if (router_init(e) != 0) {
        log_error("init_failed", "what=router");
        return -1;
    }
    if (signpool_start(e, e->opts.sign_threads, e->key_path) != 0) {
        log_error("init_failed", "what=sign_threads");
        return -1;
    }

    if (store_load(e->store, e) != 0) {
        log_error("store_load_failed", "path=%s", dbp);
        return -1;
    }
    adopt_workers(e);
    if (store_flush(e->store) != 0) { /* e.g. the data directory's disk is full */
        log_error("store_write_failed", "path=%s msg=\"cannot write the database\"", dbp);
        return -1;
    }
    return 0;
}

/* <data-dir>/engine.addr: the public URL, for scripts and the CLI. */
static void write_addr_file(struct engine *e)
{
    char addrp[700];
    FILE *af = NULL;
    if (snprintf(addrp, sizeof addrp, "%s/engine.addr", e->opts.data_dir) < (int)sizeof addrp)
        af = fopen(addrp, "w");
    if (af) {
        fprintf(af, "%s\n", e->public_url);
        fclose(af);
    }
}

static void engine_free(struct engine *e)
{
    signpool_stop(e);
    lifecycle_shutdown(e);
    if (e->stop_ev) event_free(e->stop_ev);
    event_free(e->tick_ev);
    evhttp_free(e->http);
    connguard_free(e->guard);
    proc_fini(e);
    router_fini(e);
    while (e->workers)
        state_worker_remove(e, e->workers);
    while (e->wgs)
        state_wg_remove(e, e->wgs);
    while (e->endpoints)
        state_endpoint_remove(e, e->endpoints);
    idmap_free(e->worker_by_id);
    store_close(e->store);
    rsa_privkey_free(e->key);
    sbuf_free(&e->pubkey_pem);
    metrics_free(e->metrics);
    event_base_free(e->base);
}

int main(int argc, char **argv)
{
    struct engine eng;
    memset(&eng, 0, sizeof eng);
    struct engine *e = &eng;
    config_opts_default(&e->opts);
    int rc = config_opts_parse(&e->opts, argc, argv);
    if (rc != 0) return rc > 0 ? 0 : 2;
    enum log_level lvl = LOG_INFO;
    if (log_parse_level(e->opts.log_level, &lvl) != 0) {
        fprintf(stderr, "sgpu-engine: bad --log-level\n");
        return 2;
    }
    log_init("engine", lvl);
    /* --log-level over SGPU_LOG_LEVEL, as the option table resolved them */
    log_set_level(lvl);
    umask(077); /* database, keys and workspaces are private to this user */
    /* past a file size limit (RLIMIT_FSIZE) a write fails with EFBIG, which the store reports
     * like a full disk, instead of the signal killing the engine */
    signal(SIGXFSZ, SIG_IGN);

    if (setup_dirs(e) != 0) return 1;
    e->worker_by_id = idmap_new();
    e->next_worker_id = e->next_endpoint_id = e->next_wg_id = 1;
    emetrics_init(e);
    char dbp[700];
    if (open_store(e, dbp, sizeof dbp) != 0) return 1;
    load_counters(e);
    int port = 0;
    if (listen_api(e, &port) != 0 || start_modules(e, dbp) != 0) return 1;
    write_addr_file(e);

    e->tick_ev = xnonnull(event_new(e->base, -1, EV_PERSIST, on_tick, e));
    struct timeval tv = clock_tv_ms(e->opts.tick_ms);
    event_add(e->tick_ev, &tv);
    struct event *sterm = xnonnull(evsignal_new(e->base, SIGTERM, on_term, e));
    struct event *sint = xnonnull(evsignal_new(e->base, SIGINT, on_term, e));
    event_add(sterm, NULL);
    event_add(sint, NULL);

    size_t nep = 0, nw = 0;
    for (struct endpoint *ep = e->endpoints; ep; ep = ep->next)
        nep++;
    for (struct worker *w = e->workers; w; w = w->next)
        nw++;
    log_info("listening", "port=%d url=%s data_dir=%s endpoints=%zu workers=%zu tick_ms=%d", port,
             e->public_url, e->opts.data_dir, nep, nw, e->opts.tick_ms);

    event_base_dispatch(e->base);

    log_info("shutdown", "keep_workers=%d", e->opts.keep_workers);
    event_free(sterm);
    event_free(sint);
    engine_free(e);
    return 0;
}
