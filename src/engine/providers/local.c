/* `local` provider: each instance is an `sgpu-launch` process (own ports and workspace) in its
 * own process group on this machine.  stop = SIGSTOP to the group (the model stays loaded in
 * memory), start = SIGCONT (resumed in milliseconds), destroy = SIGTERM then SIGKILL after 10 s.
 * Without sgpu-launch the instance is `sh -c 'MODEL_CMD >>model.log 2>&1 & exec sgpu-worker'`.
 * Processes started by a previous engine run are re-attached by pid + /proc start time. */
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../engine.h"
#include "../proc.h"
#include "../state.h"
#include "clock.h"
#include "httputil.h"
#include "log.h"
#include "provider.h"
#include "xalloc.h"

#define KILL_AFTER_S 10

/* Injected start delays (launch.create_delay_s, resume_delay_s, model_load_delay_s): seconds,
 * finite, in [0, DELAY_MAX_S]. */
#define DELAY_MAX_S 3600.0
static const char *const delay_keys[] = {"create_delay_s", "resume_delay_s", "model_load_delay_s"};

static bool is_delay_key(const char *k)
{
    for (size_t i = 0; i < sizeof delay_keys / sizeof delay_keys[0]; i++)
        if (strcmp(k, delay_keys[i]) == 0) return true;
    return false;
}

static int local_validate(struct json_object *launch, char *err, size_t errlen)
{
    json_object_object_foreach(launch, k, v)
    {
        if (is_delay_key(k)) {
            enum json_type t = json_object_get_type(v);
            double d = json_object_get_double(v);
            if ((t != json_type_int && t != json_type_double) || !isfinite(d) || d < 0 ||
                d > DELAY_MAX_S) {
                snprintf(err, errlen, "launch.%s must be a number of seconds in [0, %.0f]", k,
                         DELAY_MAX_S);
                return -1;
            }
        } else if (strcmp(k, "model_cmd") == 0 || strcmp(k, "launch_bin") == 0 ||
                   strcmp(k, "worker_bin") == 0) {
            if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) > 8192) {
                snprintf(err, errlen, "launch.%s must be a string", k);
                return -1;
            }
        } else if (strcmp(k, "env") == 0) {
            if (provider_validate_env(v, err, errlen) != 0) return -1;
        } else if (strcmp(k, "args") == 0) {
            if (!json_object_is_type(v, json_type_array) || json_object_array_length(v) > 64) {
                snprintf(err, errlen, "launch.args must be a list of strings");
                return -1;
            }
            for (size_t i = 0; i < json_object_array_length(v); i++) {
                if (!json_object_is_type(json_object_array_get_idx(v, i), json_type_string)) {
                    snprintf(err, errlen, "launch.args must be a list of strings");
                    return -1;
                }
            }
        }
    }
    return 0;
}

static const char *lstr(struct workergroup *g, const char *key)
{
    struct json_object *v;
    if (!json_object_object_get_ex(g->launch, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    const char *s = json_object_get_string(v);
    return *s ? s : NULL;
}

/* launch.<key> in seconds (validated on the way in); 0 when absent. */
static double ldelay(const struct workergroup *g, const char *key)
{
    struct json_object *v;
    if (!g->launch || !json_object_object_get_ex(g->launch, key, &v)) return 0;
    double d = json_object_get_double(v);
    return isfinite(d) && d > 0 ? (d < DELAY_MAX_S ? d : DELAY_MAX_S) : 0;
}

/* An executable: `name` next to sgpu-engine, else on $PATH.  0 and the path in out, or -1. */
static int find_bin(struct engine *e, const char *name, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", e->self_dir, name);
    if (access(out, X_OK) == 0) return 0;
    const char *path = getenv("PATH");
    if (!path) return -1;
    const char *p = path;
    while (*p) {
        size_t l = strcspn(p, ":");
        if (l > 0 && l < 400) {
            snprintf(out, n, "%.*s/%s", (int)l, p, name);
            if (access(out, X_OK) == 0) return 0;
        }
        p += l;
        if (*p == ':') p++;
    }
    return -1;
}

/* ---- ports of local instances ----
 * Each instance gets a worker port and a model port, chosen here and bound later by the
 * instance's own processes.  A port is free when a bind to it succeeds; it stays reserved in
 * this table from the create until the instance is gone, so no two instances of this engine —
 * even two created in the same tick — are given the same number (a bind-then-close probe alone
 * can hand the same port out twice).  With --local-ports LO-HI ports come from that range,
 * which the kernel does not use for ephemeral binds and outgoing connections. */
struct port_resv {
    int port;
    int64_t worker_id;
};
static struct port_resv *resv;
static size_t nresv, capresv;

static bool port_reserved(int port)
{
    for (size_t i = 0; i < nresv; i++)
        if (resv[i].port == port) return true;
    return false;
}

static void port_reserve(int port, int64_t worker_id)
{
    if (nresv == capresv) {
        size_t nc = capresv ? capresv * 2 : 32;
        struct port_resv *n = xrealloc(resv, nc * sizeof *n);
        resv = n;
        capresv = nc;
    }
    resv[nresv++] = (struct port_resv){port, worker_id};
}

static void ports_release(int64_t worker_id)
{
    for (size_t i = 0; i < nresv;) {
        if (resv[i].worker_id == worker_id)
            resv[i] = resv[--nresv];
        else
            i++;
    }
}

/* Bind a TCP socket to port (0 = the kernel chooses) on all addresses, as the instance will;
 * the bound port, or -1 with errno. */
static int port_probe(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_ANY),
                            .sin_port = htons((uint16_t)port)};
    socklen_t l = sizeof a;
    int got = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &l) == 0)
        got = ntohs(a.sin_port);
    int saved = errno;
    close(fd);
    errno = saved;
    return got;
}

/* A free port, reserved for worker_id; -1 (provider_fail set) when there is none. */
static int local_port_alloc(struct engine *e, int64_t worker_id)
{
    int lo = e->opts.local_port_lo, hi = e->opts.local_port_hi;
    if (lo > 0) {
        static int cursor; /* round robin: a just-released port is not reused at once */
        int span = hi - lo + 1;
        for (int k = 0; k < span; k++) {
            int p = lo + (cursor + k) % span;
            if (port_reserved(p) || port_probe(p) != p) continue;
            cursor = (p - lo + 1) % span;
            port_reserve(p, worker_id);
            return p;
        }
        return provider_fail("no free port in --local-ports %d-%d (%zu reserved by instances)", lo,
                             hi, nresv);
    }
    for (int tries = 0; tries < 64; tries++) {
        int p = port_probe(0);
        if (p <= 0) return provider_fail("no free port: bind: %s", strerror(errno));
        if (port_reserved(p)) continue;
        port_reserve(p, worker_id);
        return p;
    }
    return provider_fail("no free port: the kernel kept choosing reserved ones");
}

static bool direct_mode(const struct worker *w)
{
    return strncmp(w->instance, "direct:", 7) == 0;
}

static void instance_gone(struct engine *e, struct worker *w, const char *why)
{
    ports_release(w->id);
    int pid = w->pid;
    if (pid > 0) kill(-pid, SIGKILL); /* whatever is left of the group */
    w->pid = 0;
    w->pid_start = 0;
    w->dirty = true;
    if (w->state == WS_DESTROYING)
        provider_op_done(e, w->id, OP_DESTROY, 0, why, NULL);
    else
        provider_instance_exited(e, w->id, why);
}

static void on_exit_cb(struct engine *e, void *arg, int status, const char *out)
{
    (void)out;
    int64_t id = (int64_t)(intptr_t)arg;
    struct worker *w = state_worker_by_id(e, id);
    if (!w) return;
    char why[64];
    if (WIFEXITED(status))
        snprintf(why, sizeof why, "exit status %d", WEXITSTATUS(status));
    else
        snprintf(why, sizeof why, "killed by signal %d",
                 WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    log_info("local_instance_exit", "worker=%lld pid=%d why=\"%s\"", (long long)id, w->pid, why);
    instance_gone(e, w, why);
}

static void mkdirs(const char *path)
{
    char tmp[700];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(tmp, 0700);
            *p = '/';
        }
    }
    mkdir(tmp, 0700);
}

/* Replace every "{model_port}" in s. */
static void subst_port(const char *s, int port, struct sbuf *out)
{
    const char *tag = "{model_port}";
    for (const char *p = s;;) {
        const char *q = strstr(p, tag);
        if (!q) {
            sbuf_puts(out, p);
            return;
        }
        sbuf_append(out, p, (size_t)(q - p));
        sbuf_printf(out, "%d", port);
        p = q + strlen(tag);
    }
}

/* What local_create decides before it spawns: the program, the ports and the workspace. */
struct local_launch {
    char bin[600];         /* sgpu-launch (launch.launch_bin, or found) */
    char wbin[600];        /* direct mode: sgpu-worker (launch.worker_bin, or found) */
    const char *model_cmd; /* launch.model_cmd, NULL when absent */
    bool direct;           /* no sgpu-launch: sh -c 'MODEL_CMD & exec sgpu-worker' */
    int wport, mport;      /* worker port, model port */
    char ws[600];          /* workspace directory */
};

/* sgpu-launch, or (direct mode) sgpu-worker plus launch.model_cmd; -1 (provider_fail set) when
 * neither can run. */
static int local_pick_binary(struct engine *e, struct workergroup *g, const struct worker *w,
                             struct local_launch *l)
{
    const char *lb = lstr(g, "launch_bin");
    l->model_cmd = lstr(g, "model_cmd");
    l->direct = false;
    if (lb) {
        snprintf(l->bin, sizeof l->bin, "%s", lb);
        return 0;
    }
    if (find_bin(e, "sgpu-launch", l->bin, sizeof l->bin) == 0) return 0;
    const char *wb = lstr(g, "worker_bin");
    if (wb)
        snprintf(l->wbin, sizeof l->wbin, "%s", wb);
    else if (find_bin(e, "sgpu-worker", l->wbin, sizeof l->wbin) != 0) {
        log_error("local_no_binary",
                  "worker=%lld msg=\"neither sgpu-launch nor sgpu-worker found\"",
                  (long long)w->id);
        return provider_fail("neither sgpu-launch nor sgpu-worker found next to sgpu-engine "
                             "or on PATH");
    }
    if (!l->model_cmd) {
        log_error("local_no_model_cmd",
                  "worker=%lld msg=\"model_cmd is required without sgpu-launch\"",
                  (long long)w->id);
        return provider_fail("launch.model_cmd is required without sgpu-launch");
    }
    l->direct = true;
    return 0;
}

/* The instance's environment (proc_env_build: the engine's own plus these): defaults (user env
 * may override), then launch.env, then what the engine must control (ports, identity, report
 * address, token). */
static char **local_build_env(struct engine *e, struct workergroup *g, const struct worker *w,
                              const struct local_launch *l)
{
    struct endpoint *ep = state_endpoint_by_id(e, w->endpoint_id);
    struct sbuf v[24];
    size_t nv = 0, ndef;
#define ADD(...)                                                                                   \
    do {                                                                                           \
        v[nv] = (struct sbuf)SBUF_INIT;                                                            \
        sbuf_printf(&v[nv], __VA_ARGS__);                                                          \
        nv++;                                                                                      \
    } while (0)
    ADD("MODEL_SERVER_URL=http://127.0.0.1:%d", l->mport);
    ADD("USE_SSL=false");
    ADD("UNSECURED=false");
    ADD("SGPU_AUTH_SCHEME=%s", config_scheme_name(ep ? ep->p.sig_scheme : SIG_URL));
    double mld = ldelay(g, "model_load_delay_s");
    if (mld > 0) /* honoured by sgpu-model (and the test stub) before it loads */
        ADD("SGPU_MODEL_TEST_LOAD_DELAY_MS=%.0f", mld * 1000);
    ndef = nv;
    ADD("WORKER_PORT=%d", l->wport);
    ADD("VAST_TCP_PORT_%d=%d", l->wport, l->wport);
    ADD("PUBLIC_IPADDR=127.0.0.1");
    ADD("CONTAINER_ID=%lld", (long long)w->id);
    struct sbuf raddr = SBUF_INIT;
    provider_report_addr(e, g, w, &raddr);
    ADD("REPORT_ADDR=%s", raddr.data);
    sbuf_free(&raddr);
    ADD("PUBKEY_URL=%s/pubkey/", e->public_url);
    ADD("MASTER_TOKEN=%s", w->mtoken);
    ADD("WORKSPACE_DIR=%s", l->ws);
    if (l->direct) {
        ADD("MODEL_LOG=%s/model.log", l->ws);
        ADD("SGPU_WORKER_BIN=%s", l->wbin);
        ADD("MODEL_PORT=%d", l->mport);
    }
#undef ADD
    struct json_object *envo = NULL;
    size_t nenv = 0;
    if (json_object_object_get_ex(g->launch, "env", &envo))
        nenv = (size_t)json_object_object_length(envo);
    const char **extra = xcalloc(nv + nenv + 1, sizeof *extra);
    struct sbuf *envs = xcalloc(nenv + 1, sizeof *envs);
    size_t k = 0, j = 0;
    for (size_t i = 0; i < ndef; i++)
        extra[k++] = v[i].data;
    if (envo) {
        json_object_object_foreach(envo, ek, ev)
        {
            envs[j] = (struct sbuf)SBUF_INIT;
            sbuf_printf(&envs[j], "%s=%s", ek, json_object_get_string(ev));
            extra[k++] = envs[j++].data;
        }
    }
    for (size_t i = ndef; i < nv; i++)
        extra[k++] = v[i].data;
    char **env = proc_env_build(extra, k); /* copies the strings */
    for (size_t i = 0; i < nv; i++)
        sbuf_free(&v[i]);
    for (size_t i = 0; i < j; i++)
        sbuf_free(&envs[i]);
    free(envs);
    free(extra);
    return env;
}

/* The instance's command line and the strings it points into (local_argv_free). */
struct local_argv {
    const char *argv[80];
    struct sbuf mc, script, portarg;
};

/* Direct mode: sh -c '( MODEL_CMD ) >>"$MODEL_LOG" 2>&1 & exec "$SGPU_WORKER_BIN"'; otherwise
 * sgpu-launch --workspace WS --model-port PORT [--model-cmd CMD] launch.args... */
static void local_build_argv(struct workergroup *g, const struct local_launch *l,
                             struct local_argv *av)
{
    const char **argv = av->argv;
    av->mc = av->script = av->portarg = (struct sbuf)SBUF_INIT;
    if (l->model_cmd) subst_port(l->model_cmd, l->mport, &av->mc);
    sbuf_printf(&av->portarg, "%d", l->mport);
    size_t a = 0;
    if (l->direct) {
        sbuf_printf(&av->script, "( %s ) >>\"$MODEL_LOG\" 2>&1 &\nexec \"$SGPU_WORKER_BIN\"",
                    av->mc.data);
        argv[a++] = "/bin/sh";
        argv[a++] = "-c";
        argv[a++] = av->script.data;
    } else {
        argv[a++] = l->bin;
        argv[a++] = "--workspace";
        argv[a++] = l->ws;
        argv[a++] = "--model-port";
        argv[a++] = av->portarg.data;
        if (l->model_cmd) {
            argv[a++] = "--model-cmd";
            argv[a++] = av->mc.data;
        }
        struct json_object *args;
        if (json_object_object_get_ex(g->launch, "args", &args)) {
            for (size_t i = 0; i < json_object_array_length(args) && a < 78; i++)
                argv[a++] = json_object_get_string(json_object_array_get_idx(args, i));
        }
    }
    argv[a] = NULL;
}

static void local_argv_free(struct local_argv *av)
{
    sbuf_free(&av->mc);
    sbuf_free(&av->script);
    sbuf_free(&av->portarg);
}

static int local_create(struct engine *e, struct workergroup *g, struct worker *w)
{
    struct local_launch l = {0};
    if (local_pick_binary(e, g, w, &l) != 0) return -1; /* provider_fail says why */
    l.wport = local_port_alloc(e, w->id);
    l.mport = l.wport > 0 ? local_port_alloc(e, w->id) : -1;
    if (l.wport <= 0 || l.mport <= 0) {
        ports_release(w->id);
        return -1; /* provider_fail says why */
    }
    snprintf(l.ws, sizeof l.ws, "%s/workers/%lld", e->opts.data_dir, (long long)w->id);
    mkdirs(l.ws);

    char **env = local_build_env(e, g, w, &l);
    struct local_argv av = {0};
    local_build_argv(g, &l, &av);
    char logp[700];
    snprintf(logp, sizeof logp, "%s/launch.log", l.ws);
    struct proc_spec spec = {.argv = av.argv,
                             .env = (const char *const *)env,
                             .cwd = l.ws,
                             .log_path = logp,
                             .capture = false,
                             .timeout_s = 0};
    int pid = proc_spawn(e, &spec, on_exit_cb, (void *)(intptr_t)w->id);
    int err = errno;
    proc_env_free(env);
    local_argv_free(&av);
    if (pid < 0) {
        ports_release(w->id);
        return provider_fail("could not spawn %s: %s", l.direct ? "/bin/sh" : l.bin, strerror(err));
    }
    w->pid = pid;
    w->pid_start = proc_start_time(pid);
    w->pid_is_child = true;
    snprintf(w->url, sizeof w->url, "http://127.0.0.1:%d", l.wport);
    char inst[64];
    snprintf(inst, sizeof inst, "%s:%d", l.direct ? "direct" : "launch", pid);
    log_info("local_instance_start", "worker=%lld pid=%d worker_port=%d model_port=%d mode=%s",
             (long long)w->id, pid, l.wport, l.mport, l.direct ? "direct" : "sgpu-launch");
    provider_op_done(e, w->id, OP_CREATE, 0, "spawned", inst);
    return 0;
}

struct killctx {
    struct engine *e;
    int pid;
    unsigned long long start;
    struct event *ev;
};

static void on_kill_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct killctx *k = arg;
    if (k->start && proc_start_time(k->pid) == k->start) {
        log_warn("local_instance_kill", "pid=%d", k->pid);
        proc_kill_tree(k->pid, SIGKILL);
    }
    event_free(k->ev);
    free(k);
}

static bool alive(const struct worker *w)
{
    return w->pid > 0 && w->pid_start && proc_start_time(w->pid) == w->pid_start;
}

static void terminate(struct engine *e, struct worker *w)
{
    kill(-w->pid, SIGCONT);
    if (direct_mode(w))
        kill(-w->pid, SIGTERM);
    else
        kill(w->pid, SIGTERM);
    struct killctx *k = xcalloc(1, sizeof *k);
    k->e = e;
    k->pid = w->pid;
    k->start = w->pid_start;
    k->ev = xnonnull(evtimer_new(e->base, on_kill_timer, k));
    struct timeval tv = clock_tv(KILL_AFTER_S);
    evtimer_add(k->ev, &tv);
}

/* stop = SIGSTOP/SIGTSTP, start = SIGCONT: always possible */
static bool local_can_park(const struct workergroup *g)
{
    (void)g;
    return true;
}

/* ---- injected start delays ----
 * A create (resume) with launch.create_delay_s (resume_delay_s) > 0 first waits that long on a
 * timer of the loop — the worker stays `creating` (`starting`) with its operation in flight —
 * then runs through provider_op again, which finds the delay elapsed and spawns (resumes), so a
 * failure then is reported like any other.  Pending delays are freed at shutdown. */
struct local_delay {
    struct engine *e;
    int64_t worker_id;
    enum prov_op op;
    bool elapsed;
    struct event *ev;
    struct local_delay *prev, *next;
};
static struct local_delay *delays;

static void delay_unlink(struct local_delay *d)
{
    if (d->prev)
        d->prev->next = d->next;
    else
        delays = d->next;
    if (d->next) d->next->prev = d->prev;
    event_free(d->ev);
    free(d);
}

static struct local_delay *delay_find(int64_t worker_id, enum prov_op op)
{
    for (struct local_delay *d = delays; d; d = d->next)
        if (d->worker_id == worker_id && d->op == op) return d;
    return NULL;
}

static void on_delay(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct local_delay *d = arg;
    struct engine *e = d->e;
    struct worker *w = state_worker_by_id(e, d->worker_id);
    struct workergroup *g = w ? state_wg_by_id(e, w->wg_id) : NULL;
    if (!w || !g || e->stopping) { /* gone, or shutting down: no new instance */
        delay_unlink(d);
        return;
    }
    log_info("local_delay_elapsed", "worker=%lld op=%s", (long long)w->id, provider_op_name(d->op));
    d->elapsed = true;
    enum prov_op op = d->op;
    int64_t id = w->id;
    provider_op(e, g, w, op); /* local_op finds it elapsed (and unlinks it) */
    if ((d = delay_find(id, op)) != NULL) delay_unlink(d);
}

/* 1: the operation waits (a timer was set), 0: go ahead now (no delay, or it elapsed). */
static int delay_begin(struct engine *e, struct worker *w, enum prov_op op, double s)
{
    struct local_delay *d = delay_find(w->id, op);
    if (d && d->elapsed) {
        delay_unlink(d);
        return 0;
    }
    if (!(s > 0)) return 0;
    if (d) return 1; /* already waiting */
    d = xcalloc(1, sizeof *d);
    d->e = e;
    d->worker_id = w->id;
    d->op = op;
    d->ev = evtimer_new(e->base, on_delay, d);
    if (!d->ev) abort(); /* out of memory: the xalloc policy */
    d->next = delays;
    if (delays) delays->prev = d;
    delays = d;
    struct timeval tv = clock_tv(s);
    evtimer_add(d->ev, &tv);
    log_info("local_delay", "worker=%lld op=%s delay_s=%.3f", (long long)w->id,
             provider_op_name(op), s);
    return 1;
}

static int local_op(struct engine *e, struct workergroup *g, struct worker *w, enum prov_op op)
{
    if ((op == OP_CREATE && delay_begin(e, w, op, ldelay(g, "create_delay_s"))) ||
        (op == OP_START && delay_begin(e, w, op, ldelay(g, "resume_delay_s"))))
        return 0; /* completion when the delay has elapsed (on_delay) */
    switch (op) {
    case OP_CREATE:
        return local_create(e, g, w);
    case OP_START:
    case OP_STOP:
        if (!alive(w)) return provider_fail("instance process %d is not running", w->pid);
        if (op == OP_START) {
            /* the launcher's group (launcher + worker); its SIGCONT handler resumes the model */
            if (kill(-w->pid, SIGCONT) != 0) return -1;
        } else if (direct_mode(w)) {
            if (kill(-w->pid, SIGSTOP) != 0) return -1;
        } else {
            /* sgpu-launch suspends worker, model server (own group) and itself on SIGTSTP */
            if (kill(w->pid, SIGTSTP) != 0) return -1;
        }
        provider_op_done(e, w->id, op, 0, op == OP_STOP ? "suspended" : "resumed", NULL);
        return 0;
    case OP_DESTROY:
        if (!alive(w)) {
            int64_t id = w->id;
            ports_release(id);
            if (w->pid > 0) kill(-w->pid, SIGKILL);
            provider_op_done(e, id, OP_DESTROY, 0, "not running", NULL);
            return 0;
        }
        terminate(e, w); /* completion: exit callback (child) or local_poll (adopted) */
        return 0;
    }
    return -1;
}

static void local_adopt(struct engine *e, struct worker *w)
{
    if (alive(w)) {
        w->pid_is_child = false;
        log_info("local_instance_adopted", "worker=%lld pid=%d", (long long)w->id, w->pid);
        return;
    }
    if (w->pid > 0 || w->state != WS_DESTROYING) instance_gone(e, w, "not running after restart");
}

static void local_poll(struct engine *e, struct worker *w)
{
    if (w->pid_is_child || w->pid <= 0) return; /* children are reaped through SIGCHLD */
    if (!alive(w)) instance_gone(e, w, "process gone");
}

static void local_shutdown(struct engine *e, struct worker *w, bool keep)
{
    if (w->pid <= 0 || keep) return;
    if (w->pid_is_child) proc_detach(w->pid);
    if (!alive(w)) return;
    kill(-w->pid, SIGCONT);
    if (direct_mode(w))
        kill(-w->pid, SIGTERM);
    else
        kill(w->pid, SIGTERM);
    (void)e;
}

static void local_shutdown_pending(struct engine *e, int *instances, int *ops)
{
    (void)ops;
    int n = 0;
    for (struct worker *w = e->workers; w; w = w->next) {
        if (w->pid <= 0 || e->opts.keep_workers) continue;
        if (w->pid_is_child) waitpid(w->pid, NULL, WNOHANG);
        if (alive(w)) n++;
    }
    *instances += n;
}

static void local_shutdown_wait(struct engine *e)
{
    while (delays) /* creates and resumes still waiting: never run */
        delay_unlink(delays);
    /* the loop already waited (lifecycle_shutdown_begin, --shutdown-timeout-s) while the
     * instances drained; SIGKILL what is left, with its descendants (sgpu-launch runs the
     * model server in its own group) */
    for (struct worker *w = e->workers; w; w = w->next) {
        if (w->pid <= 0 || e->opts.keep_workers) continue;
        if (w->pid_is_child) waitpid(w->pid, NULL, WNOHANG);
        if (alive(w)) {
            log_warn("local_instance_kill", "worker=%lld pid=%d", (long long)w->id, w->pid);
            proc_kill_tree(w->pid, SIGKILL);
        }
        kill(-w->pid, SIGKILL); /* leftovers in the group */
        if (w->pid_is_child) waitpid(w->pid, NULL, WNOHANG);
        w->pid = 0;
        w->pid_start = 0;
    }
}

const struct provider_ops local_provider = {
    .name = "local",
    .validate = local_validate,
    .op = local_op,
    .can_park = local_can_park,
    .adopt = local_adopt,
    .poll = local_poll,
    .shutdown = local_shutdown,
    .shutdown_pending = local_shutdown_pending,
    .shutdown_finish = local_shutdown_wait,
    .start_keeps_model = true, /* SIGCONT: the process kept its model in memory */
};
