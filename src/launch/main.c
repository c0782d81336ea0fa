/* sgpu-launch: per-instance supervisor (docs/launch.md).
 *
 * Start-up (synchronous, before the loop): options and environment, workspace,
 * lock file (one launcher per workspace), port checks, log rotation, worker
 * environment.  Then the event loop: TLS material (a CSR may be signed
 * remotely), the model server, the worker, and supervision driven by
 * SIGCHLD/SIGTERM/SIGINT/SIGHUP/SIGTSTP/SIGCONT signal events and timers.
 *
 * States:  TLS -> RUNNING -> (SIGTERM) STOP_WORKER -> STOP_MODEL -> exit 0
 *                        \-> (model crash loop / TLS failure) FAIL_STOP -> FAIL_REPORT -> exit 1
 * A model crash within the restart budget restarts the pair: the worker is
 * stopped, the model log rotated, the model restarted after a back-off, then a
 * fresh worker (which reads the new log from its start). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "clock.h"
#include "hclient.h"
#include "httputil.h"
#include "launch.h"
#include "log.h"
#include "opts.h"
#include "xalloc.h"

#define WORKER_STABLE_S 30.0 /* a worker up this long resets its back-off */
#define MODEL_STABLE_S 60.0  /* a model up this long resets its restart budget */
#define MODEL_STOP_GRACE_S 10.0
#define WORKER_SETUP_FAILS 3 /* consecutive exit-2-at-start of the worker before giving up */
#define WORKER_SETUP_WINDOW_S 5.0

enum lstate { ST_TLS, ST_RUNNING, ST_STOP_WORKER, ST_STOP_MODEL, ST_FAIL_STOP, ST_FAIL_REPORT };

struct child {
    const char *name;
    pid_t pid;             /* 0 when not running */
    double started;        /* clock_mono() of the last start */
    int crashes;           /* consecutive unexpected exits */
    bool stop_requested;   /* we sent SIGTERM */
    struct event *restart; /* pending (re)start timer */
    struct event *kill;    /* SIGKILL after the grace period */
    int last_status;       /* wait status of the last exit */
};

struct launcher {
    struct event_base *base;
    struct hclient *hc;
    enum lstate st;
    int exit_code;
    bool forced;

    /* configuration */
    char workspace[1024]; /* absolute; shorter than PATH_MAX so that files inside fit */
    char model_log[PATH_MAX];
    char debug_log[PATH_MAX];
    char lock_path[PATH_MAX];
    char worker_bin[PATH_MAX];
    char model_bin[PATH_MAX];
    const char *model_cmd; /* NULL = default sgpu-model serve */
    int model_port;
    bool model_port_given;
    int worker_port;
    int max_model_restarts;
    double restart_delay; /* first model restart delay; doubles */
    double backoff_max;
    double worker_grace; /* SIGTERM -> SIGKILL for the worker */
    bool quiet;
    bool worker_own_group; /* interactive: keep terminal signals away from the worker */
    char **worker_args;    /* extra arguments after `--` */
    int n_worker_args;
    const char *sign_url;
    char tls_key[PATH_MAX], tls_cert[PATH_MAX];

    int lock_fd;
    int debug_fd, model_fd;
    FILE *tee;

    struct child model, worker;
    int worker_setup_fails;     /* consecutive exits with status 2 within WORKER_SETUP_WINDOW_S */
    char worker_last_line[512]; /* last output line of the current worker */
    bool model_restart_pending; /* model crashed: restart the pair once the worker is down */
    char fail_msg[1024];

    int sign_attempt;
    struct event *sign_timer;
    struct sbuf csr;
};

static struct launcher L;

/* The launcher's options (the table below fills it); main() turns them into L. */
struct launch_opts {
    const char *workspace, *model_cmd, *model_log, *worker_bin, *model_bin, *debug_log, *sign_url;
    int model_port, max_model_restarts;
    double restart_delay, backoff_max, stop_timeout;
    bool quiet;
};

#define AT(f) OPT_AT(struct launch_opts, f)
enum { R_MODEL_PORT = 3, R_STOP_TIMEOUT = 9 }; /* rows read back through opts_given */

static const struct opt rows[] = {
    {.name = "workspace",
     .env = "WORKSPACE_DIR",
     .type = OPT_STR,
     AT(workspace),
     .def = "/workspace",
     .meta = "DIR",
     .help = "instance directory (created; the worker's working directory)"},
    {.name = "model-cmd",
     .env = "SGPU_MODEL_CMD",
     .type = OPT_STR,
     AT(model_cmd),
     .meta = "\"CMD\"",
     .help = "model server command, run with /bin/sh -c in its own process group",
     .def_help = "<model-bin> serve --port <model-port>, the embedded tiny model"},
    {.name = "model-log",
     .env = "MODEL_LOG",
     .type = OPT_STR,
     AT(model_log),
     .meta = "FILE",
     .help = "model server output (stdout+stderr); exported as MODEL_LOG",
     .def_help = "<workspace>/model.log"},
    [R_MODEL_PORT] = {.name = "model-port",
                      .env = "SGPU_MODEL_PORT",
                      .type = OPT_INT,
                      AT(model_port),
                      .lo = 1,
                      .hi = 65535,
                      .meta = "N",
                      .help = "model server port, checked free before start",
                      .def_help = "port of $MODEL_SERVER_URL, else 5001"},
    {.name = "worker-bin",
     .type = OPT_STR,
     AT(worker_bin),
     .def = "sgpu-worker",
     .meta = "PATH",
     .help = "worker program (looked up next to sgpu-launch first, then in $PATH)"},
    {.name = "model-bin",
     .type = OPT_STR,
     AT(model_bin),
     .def = "sgpu-model",
     .meta = "PATH",
     .help = "model program of the default command (looked up as --worker-bin)"},
    {.name = "max-model-restarts",
     .type = OPT_INT,
     AT(max_model_restarts),
     .lo = 0,
     .hi = 1000000,
     .def = "3",
     .meta = "N",
     .help = "model crashes tolerated before giving up; a model that stayed up 60 s resets the "
             "count.  Giving up = post /worker_status/ with error_msg to every REPORT_ADDR, "
             "exit 1"},
    {.name = "restart-delay",
     .type = OPT_DBL,
     AT(restart_delay),
     .lo = 0,
     .hi = 86400,
     .def = "1",
     .meta = "SECS",
     .help = "delay before the first model restart (doubles, capped by --backoff-max)"},
    {.name = "backoff-max",
     .type = OPT_DBL,
     AT(backoff_max),
     .lo = 0,
     .hi = 86400,
     .def = "30",
     .meta = "SECS",
     .help = "cap of the restart back-offs.  A crashed worker is restarted at once, then after "
             "0.5, 1, 2 ... s; 30 s of uptime resets its back-off.  A worker that exits 2 "
             "(configuration error) 3 times within 5 s of starting is reported instead"},
    [R_STOP_TIMEOUT] = {.name = "stop-timeout",
                        .type = OPT_DBL,
                        AT(stop_timeout),
                        .lo = 0,
                        .hi = 86400,
                        .meta = "SECS",
                        .help = "worker drain time after SIGTERM before SIGKILL (the model "
                                "server gets 10 s)",
                        .def_help = "$SGPU_DRAIN_TIMEOUT + 10, i.e. 40"},
    {.name = "debug-log",
     .type = OPT_STR,
     AT(debug_log),
     .meta = "FILE",
     .help = "the launcher's and the worker's log",
     .def_help = "<workspace>/debug.log"},
    {.name = "cert-sign-url",
     .env = "SGPU_CERT_SIGN_URL",
     .type = OPT_STR,
     AT(sign_url),
     .meta = "URL",
     .help = "with USE_SSL=true: POST a CSR here (application/octet-stream) and use the answer "
             "as certificate; `instance_id=$CONTAINER_ID` is appended to the query",
     .def_help = "none: self-signed"},
    {.name = "quiet",
     .type = OPT_FLAG,
     AT(quiet),
     .help = "do not copy the launcher's own lines to stderr"},
};

/* getopt_long's rules: unambiguous prefixes; the first argument that is not an option (or
 * everything after `--`) goes to the worker. */
static const struct opts_spec spec = {"sgpu-launch", rows, sizeof rows / sizeof rows[0],
                                      OPTS_PREFIX | OPTS_STOP_AT_ARG};

static void usage(FILE *f)
{
    fputs(
        "usage: sgpu-launch [options] [-- worker arguments...]\n"
        "\n"
        "Per-instance supervisor: prepares the workspace, logs and environment, starts the model\n"
        "server and sgpu-worker, restarts them when they crash, reports a model server that keeps\n"
        "crashing to the engine, and stops both in order on SIGTERM (worker drains first).\n"
        "\n"
        "Options (the flag wins over the variable):\n",
        f);
    opts_usage(&spec, f);
    fputs(
        "\n"
        "Logs: debug.log and the model log are rotated at start (old content appended to\n"
        "<log>.old, as start_server.sh does) and reopened on SIGHUP (logrotate-friendly).\n"
        "\n"
        "Environment passed to the worker (PyWorker names; see sgpu-worker --help): everything in\n"
        "the launcher's environment, plus defaults set only when unset:\n"
        "  WORKER_PORT=3000, WORKSPACE_DIR=<workspace>, MODEL_LOG=<model log> (always set),\n"
        "  MODEL_SERVER_URL=http://127.0.0.1:<model-port> (default command, or --model-port "
        "given),\n"
        "  and when the model command is sgpu-model (default or user-written):\n"
        "  MODEL_LOAD_LOG_MSG=event=model_loaded, MODEL_ERROR_LOG_MSGS=event=fatal,\n"
        "  MODEL_HEALTH_ENDPOINT=/health, BACKEND=tgi.\n"
        "  USE_SSL=true: key + certificate are created unless present; paths from SGPU_TLS_KEY /\n"
        "  SGPU_TLS_CERT, default <workspace>/instance.key|crt (exported for the worker).\n"
        "  Read for error reports: REPORT_ADDR (comma list), CONTAINER_ID, MASTER_TOKEN,\n"
        "  PUBLIC_IPADDR, VAST_TCP_PORT_<WORKER_PORT>, URL, PYWORKER_VERSION (report version).\n"
        "  SGPU_LOG_LEVEL=debug|info|warn|error sets the launcher's own log level.\n"
        "\n"
        "Signals: SIGTERM/SIGINT stop the worker (it drains), then the model server; exit 0 when\n"
        "both are down (a second signal kills both at once, exit 1).  SIGHUP reopens the logs.\n"
        "SIGTSTP suspends worker, model server and launcher (SIGSTOP); SIGCONT resumes them.\n"
        "\n"
        "Exit status: 0 after a clean stop; 1 after giving up (reported); 2 usage or setup error\n"
        "(bad option, workspace not writable, program not found); 3 another launcher holds the\n"
        "workspace; 4 a port is already in use.\n",
        f);
}

/* ---- small helpers ---------------------------------------------------------- */

static void setenv_default(const char *k, const char *v)
{
    const char *cur = getenv(k);
    if (!cur || !*cur) setenv(k, v, 1);
}

static void describe_status(int status, char *buf, size_t n)
{
    if (WIFEXITED(status))
        snprintf(buf, n, "exit status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, n, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(buf, n, "status 0x%x", status);
}

/* 0 if host:port can be bound (SO_REUSEADDR, as servers do), else errno. */
static int port_free(const char *host, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(strcmp(host, "127.0.0.1") == 0 ? INADDR_LOOPBACK : INADDR_ANY);
    int rc = bind(fd, (struct sockaddr *)&a, sizeof a) == 0 ? 0 : errno;
    close(fd);
    return rc;
}

static int mkdir_p(const char *path)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
    struct stat st;
    if (stat(tmp, &st) != 0 || !S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

/* ---- supervision ----------------------------------------------------------------- */

static void start_model(void);
static void start_worker(void);
/* Children are supervised (restarted) in these states. */
static bool live(void)
{
    return L.st == ST_RUNNING || L.st == ST_TLS;
}
static void begin_fail(const char *msg);
static void maybe_finish(void);

static void child_kill_cb(evutil_socket_t fd, short ev, void *arg)
{
    struct child *c = arg;
    if (c->pid > 0) {
        log_warn("stop_timeout", "child=%s pid=%d action=SIGKILL", c->name, (int)c->pid);
        proc_signal(c->pid, SIGKILL);
    }
}

static void child_stop(struct child *c, double grace)
{
    evtimer_del(c->restart);
    if (c->pid <= 0 || c->stop_requested) return;
    c->stop_requested = true;
    log_info("stopping", "child=%s pid=%d grace_s=%.1f", c->name, (int)c->pid, grace);
    proc_signal(c->pid, SIGTERM);
    struct timeval tv = clock_tv(grace);
    evtimer_add(c->kill, &tv);
}

static void stop_all_now(void)
{
    evtimer_del(L.model.restart);
    evtimer_del(L.worker.restart);
    if (L.worker.pid > 0) proc_signal(L.worker.pid, SIGKILL);
    if (L.model.pid > 0) proc_signal(L.model.pid, SIGKILL);
}

static void restart_cb(evutil_socket_t fd, short ev, void *arg)
{
    struct child *c = arg;
    if (!live()) return;
    if (c == &L.model) {
        start_model();
        if (L.st == ST_RUNNING && L.model.pid > 0 && L.worker.pid <= 0) start_worker();
    } else if (c->pid <= 0) {
        start_worker();
    }
}

static void on_worker_exit(int status)
{
    struct child *w = &L.worker;
    char why[128];
    describe_status(status, why, sizeof why);
    bool expected = w->stop_requested;
    double up = clock_mono() - w->started;
    w->pid = 0;
    w->stop_requested = false;
    evtimer_del(w->kill);
    if (expected || !live()) {
        log_info("worker_exited", "how=\"%s\" uptime_s=%.1f", why, up);
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 2 && up < WORKER_SETUP_WINDOW_S &&
               ++L.worker_setup_fails >= WORKER_SETUP_FAILS) {
        /* sgpu-worker exits 2 on a configuration error: restarting cannot help. */
        char msg[1024];
        if (snprintf(msg, sizeof msg, "Worker Server failed to launch (%s, %d times): %s", why,
                     L.worker_setup_fails,
                     L.worker_last_line[0] ? L.worker_last_line : "no output") >= (int)sizeof msg)
            msg[sizeof msg - 1] = '\0';
        begin_fail(msg);
        return;
    } else {
        if (!(WIFEXITED(status) && WEXITSTATUS(status) == 2)) L.worker_setup_fails = 0;
        if (up >= WORKER_STABLE_S) w->crashes = 0;
        w->crashes++;
        /* at once, then 0.5 s, 1 s, 2 s, ... capped */
        double delay = 0;
        if (w->crashes > 1) {
            delay = 0.5;
            for (int i = 2; i < w->crashes && delay < L.backoff_max; i++)
                delay *= 2;
            if (delay > L.backoff_max) delay = L.backoff_max;
        }
        log_warn("worker_crashed", "how=\"%s\" uptime_s=%.1f crashes=%d restart_in_s=%.1f", why, up,
                 w->crashes, delay);
        if (!L.model_restart_pending) {
            struct timeval tv = clock_tv(delay);
            evtimer_add(w->restart, &tv);
        }
    }
    if (live() && L.model_restart_pending && L.model.pid <= 0) {
        /* The pair restarts: model first (after its back-off), then the worker. */
        L.model_restart_pending = false;
        double delay = L.restart_delay;
        for (int i = 1; i < L.model.crashes && delay < L.backoff_max; i++)
            delay *= 2;
        if (delay > L.backoff_max) delay = L.backoff_max;
        log_info("model_restart_scheduled", "in_s=%.2f attempt=%d max=%d", delay, L.model.crashes,
                 L.max_model_restarts);
        struct timeval tv = clock_tv(delay);
        evtimer_add(L.model.restart, &tv);
    }
    maybe_finish();
}

static void on_model_exit(int status)
{
    struct child *m = &L.model;
    char why[128];
    describe_status(status, why, sizeof why);
    bool expected = m->stop_requested;
    double up = clock_mono() - m->started;
    /* Leftovers of a `sh -c` command (grandchildren) go with it. */
    proc_signal(m->pid, SIGKILL);
    m->pid = 0;
    m->stop_requested = false;
    m->last_status = status;
    evtimer_del(m->kill);
    if (expected || !live()) {
        log_info("model_exited", "how=\"%s\" uptime_s=%.1f", why, up);
        maybe_finish();
        return;
    }
    if (up >= MODEL_STABLE_S) m->crashes = 0;
    m->crashes++;
    log_warn("model_crashed", "how=\"%s\" uptime_s=%.1f crashes=%d max_restarts=%d", why, up,
             m->crashes, L.max_model_restarts);
    if (m->crashes > L.max_model_restarts) {
        char msg[1024];
        if (snprintf(msg, sizeof msg,
                     "model server exited %d times (max restarts %d); last: %s; see %s", m->crashes,
                     L.max_model_restarts, why, L.model_log) >= (int)sizeof msg)
            msg[sizeof msg - 1] = '\0';
        begin_fail(msg);
        return;
    }
    /* Restart the pair: stop the worker first (its state belongs to the dead model). */
    L.model_restart_pending = true;
    evtimer_del(L.worker.restart);
    if (L.worker.pid > 0) {
        child_stop(&L.worker, L.worker_grace);
    } else {
        on_worker_exit(0); /* schedules the model restart */
    }
}

static void reap(void)
{
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0) break;
        if (pid == L.worker.pid)
            on_worker_exit(status);
        else if (pid == L.model.pid)
            on_model_exit(status);
    }
}

static void exit_loop(int code)
{
    L.exit_code = code;
    event_base_loopexit(L.base, NULL);
}

static void report_done(void *arg, int nsent)
{
    log_error("giving_up", "reported_to=%d exit=1", nsent);
    exit_loop(1);
}

/* Called whenever a child went down: advances the stop sequences. */
static void maybe_finish(void)
{
    switch (L.st) {
    case ST_STOP_WORKER:
        if (L.worker.pid <= 0) {
            L.st = ST_STOP_MODEL;
            if (L.model.pid > 0) child_stop(&L.model, MODEL_STOP_GRACE_S);
        }
        if (L.st == ST_STOP_MODEL && L.model.pid <= 0) {
            log_info("stopped", "exit=%d", L.forced ? 1 : 0);
            exit_loop(L.forced ? 1 : 0);
        }
        break;
    case ST_STOP_MODEL:
        if (L.model.pid <= 0 && L.worker.pid <= 0) {
            log_info("stopped", "exit=%d", L.forced ? 1 : 0);
            exit_loop(L.forced ? 1 : 0);
        }
        break;
    case ST_FAIL_STOP:
        if (L.worker.pid <= 0 && L.model.pid <= 0) {
            L.st = ST_FAIL_REPORT;
            char q[1200];
            log_error("reporting_error", "error_msg=%s report_addr=%s",
                      log_quote(q, sizeof q, L.fail_msg),
                      getenv("REPORT_ADDR") ? getenv("REPORT_ADDR") : "(unset)");
            report_error_send(L.base, L.hc, L.fail_msg, report_done, NULL);
        }
        break;
    default:
        break;
    }
}

static void begin_fail(const char *msg)
{
    snprintf(L.fail_msg, sizeof L.fail_msg, "%s", msg);
    char q[1200];
    log_error("instance_failed", "reason=%s", log_quote(q, sizeof q, msg));
    L.st = ST_FAIL_STOP;
    evtimer_del(L.model.restart);
    evtimer_del(L.worker.restart);
    if (L.sign_timer) evtimer_del(L.sign_timer);
    child_stop(&L.worker, L.worker_grace);
    child_stop(&L.model, MODEL_STOP_GRACE_S);
    maybe_finish();
}

static void begin_stop(const char *why)
{
    if (L.st == ST_STOP_WORKER || L.st == ST_STOP_MODEL || L.st == ST_FAIL_STOP ||
        L.st == ST_FAIL_REPORT) {
        if (!L.forced) {
            L.forced = true;
            log_warn("forced_stop", "signal=%s action=SIGKILL", why);
            stop_all_now();
            if (L.st == ST_FAIL_REPORT) exit_loop(1);
        }
        return;
    }
    log_info("stop_requested", "signal=%s", why);
    evtimer_del(L.model.restart);
    evtimer_del(L.worker.restart);
    if (L.sign_timer) evtimer_del(L.sign_timer);
    L.model_restart_pending = false;
    L.st = ST_STOP_WORKER;
    child_stop(&L.worker, L.worker_grace);
    maybe_finish();
}

static void start_model(void)
{
    struct child *m = &L.model;
    if (logs_rotate(L.model_log) != 0)
        log_warn("log_rotate_failed", "path=%s error=\"%s\"", L.model_log, strerror(errno));
    char portbuf[16];
    snprintf(portbuf, sizeof portbuf, "%d", L.model_port);
    const char *argv_def[] = {L.model_bin, "serve", "--port", portbuf, NULL};
    const char *argv_sh[] = {"/bin/sh", "-c", L.model_cmd, NULL};
    struct spawn_opts so = {
        .argv = L.model_cmd ? argv_sh : argv_def,
        .cwd = L.workspace,
        .log_fd = &L.model_fd,
        .whole_lines = false,
        .pdeath_sig = SIGTERM,
        .own_group = true,
    };
    pid_t pid = proc_spawn(L.base, &so);
    if (pid < 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "cannot start the model server: %s", strerror(errno));
        begin_fail(msg);
        return;
    }
    m->pid = pid;
    m->started = clock_mono();
    char q[PATH_MAX + 64];
    log_info("model_started", "pid=%d cmd=%s log=%s", (int)pid,
             log_quote(q, sizeof q, L.model_cmd ? L.model_cmd : L.model_bin), L.model_log);
}

static void start_worker(void)
{
    struct child *w = &L.worker;
    const char *argv[64];
    int n = 0;
    argv[n++] = L.worker_bin;
    for (int i = 0; i < L.n_worker_args && n < 63; i++)
        argv[n++] = L.worker_args[i];
    argv[n] = NULL;
    struct spawn_opts so = {
        .argv = argv,
        .cwd = L.workspace,
        .log_fd = &L.debug_fd,
        .whole_lines = true,
        .pdeath_sig = SIGTERM,
        .own_group = L.worker_own_group,
        .last_line = L.worker_last_line,
        .last_line_len = sizeof L.worker_last_line,
    };
    pid_t pid = proc_spawn(L.base, &so);
    if (pid < 0) {
        log_error("worker_spawn_failed", "error=\"%s\"", strerror(errno));
        struct timeval tv = clock_tv(1.0);
        evtimer_add(w->restart, &tv);
        return;
    }
    w->pid = pid;
    w->started = clock_mono();
    log_info("worker_started", "pid=%d bin=%s port=%d", (int)pid, L.worker_bin, L.worker_port);
}

/* ---- TLS ------------------------------------------------------------------------ */

static void tls_ready(void)
{
    if (L.st != ST_TLS) return;
    L.st = ST_RUNNING;
    if (L.worker.pid <= 0) start_worker();
}

static void sign_try(void);

static void sign_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
    sign_try();
}

static void sign_done(void *arg, const struct hc_response *r)
{
    if (L.st != ST_TLS) return;
    if (r->err == HC_OK && r->status == 200 && tls_is_cert(r->body, r->body_len)) {
        FILE *f = fopen(L.tls_cert, "w");
        if (!f || fwrite(r->body, 1, r->body_len, f) != r->body_len || fclose(f) != 0) {
            char msg[PATH_MAX + 64];
            snprintf(msg, sizeof msg, "cannot write the certificate %s", L.tls_cert);
            begin_fail(msg);
            return;
        }
        log_info("tls_cert_signed", "cert=%s attempts=%d", L.tls_cert, L.sign_attempt);
        tls_ready();
        return;
    }
    char q[300];
    log_warn("tls_sign_failed", "attempt=%d status=%d reason=%s", L.sign_attempt, r->status,
             log_quote(q, sizeof q,
                       r->err != HC_OK    ? r->errmsg
                       : r->status == 200 ? "answer is not a PEM "
                                            "certificate"
                                          : "http status"));
    if (L.sign_attempt >= 5) {
        begin_fail("TLS certificate signing failed after 5 attempts");
        return;
    }
    /* 2, 4, 8, 16 s as the reference script (§7.3 b) */
    struct timeval tv = clock_tv(1 << L.sign_attempt);
    evtimer_add(L.sign_timer, &tv);
}

static void sign_try(void)
{
    L.sign_attempt++;
    char url[2048];
    const char *cid = getenv("CONTAINER_ID");
    snprintf(url, sizeof url, "%s%sinstance_id=%s", L.sign_url, strchr(L.sign_url, '?') ? "&" : "?",
             cid ? cid : "0");
    struct hc_opts o = {
        .method = "POST",
        .url = url,
        .content_type = "application/octet-stream",
        .body = L.csr.data,
        .body_len = L.csr.len,
        .timeout_s = 30,
        .max_body = 1 << 20,
        .on_done = sign_done,
    };
    hc_request(L.hc, &o);
}

/* Prepares TLS material when USE_SSL=true; state stays ST_TLS while a CSR is
 * being signed.  Returns -1 on a local failure (already reported via begin_fail). */
static int tls_setup(void)
{
    const char *ssl = getenv("USE_SSL");
    if (!ssl || strcmp(ssl, "true") != 0) return 0;
    const char *k = getenv("SGPU_TLS_KEY"), *c = getenv("SGPU_TLS_CERT");
    snprintf(L.tls_key, sizeof L.tls_key, "%s", k && *k ? k : "");
    snprintf(L.tls_cert, sizeof L.tls_cert, "%s", c && *c ? c : "");
    if (!L.tls_key[0]) snprintf(L.tls_key, sizeof L.tls_key, "%s/instance.key", L.workspace);
    if (!L.tls_cert[0]) snprintf(L.tls_cert, sizeof L.tls_cert, "%s/instance.crt", L.workspace);
    setenv("SGPU_TLS_KEY", L.tls_key, 1);
    setenv("SGPU_TLS_CERT", L.tls_cert, 1);
    if (access(L.tls_key, R_OK) == 0 && access(L.tls_cert, R_OK) == 0) {
        log_info("tls_existing", "key=%s cert=%s", L.tls_key, L.tls_cert);
        return 0;
    }
    const char *ip = getenv("PUBLIC_IPADDR");
    char msg[512];
    if (L.sign_url) {
        if (tls_make_csr(L.tls_key, "pyworker.sgpu", &L.csr, msg, sizeof msg) != 0) {
            begin_fail(msg);
            return -1;
        }
        log_info("tls_csr_created", "key=%s sign_url=%s", L.tls_key, L.sign_url);
        L.sign_timer = xnonnull(evtimer_new(L.base, sign_timer_cb, NULL));
        L.st = ST_TLS;
        sign_try();
        return 0;
    }
    double t0 = clock_mono();
    if (tls_make_self_signed(L.tls_key, L.tls_cert, ip && *ip ? ip : "localhost", ip, msg,
                             sizeof msg) != 0) {
        begin_fail(msg);
        return -1;
    }
    log_info("tls_self_signed", "key=%s cert=%s ms=%.0f", L.tls_key, L.tls_cert,
             (clock_mono() - t0) * 1e3);
    return 0;
}

/* ---- signals ----------------------------------------------------------------------- */

static void sig_cb(evutil_socket_t sig, short ev, void *arg)
{
    switch ((int)sig) {
    case SIGCHLD:
        reap();
        break;
    case SIGTERM:
        begin_stop("SIGTERM");
        break;
    case SIGINT:
        begin_stop("SIGINT");
        break;
    case SIGHUP: {
        int a = logs_reopen(L.debug_fd, L.debug_log);
        int b = logs_reopen(L.model_fd, L.model_log);
        log_info("logs_reopened", "debug_log=%s model_log=%s ok=%d", L.debug_log, L.model_log,
                 a == 0 && b == 0);
        break;
    }
    case SIGTSTP:
        log_info("suspending", "worker_pid=%d model_pid=%d", (int)L.worker.pid, (int)L.model.pid);
        if (L.worker.pid > 0) proc_signal(L.worker.pid, SIGSTOP);
        if (L.model.pid > 0) proc_signal(L.model.pid, SIGSTOP);
        kill(getpid(), SIGSTOP);
        break;
    case SIGCONT:
        if (L.model.pid > 0) proc_signal(L.model.pid, SIGCONT);
        if (L.worker.pid > 0) proc_signal(L.worker.pid, SIGCONT);
        log_info("resumed", "worker_pid=%d model_pid=%d", (int)L.worker.pid, (int)L.model.pid);
        break;
    }
}

/* ---- main: options, then the setup steps in order, then the loop ---- */

/* Prints "sgpu-launch: <message>" and returns code (the process's exit status). */
static int setup_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int setup_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sgpu-launch: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

/* True when the model command's program is sgpu-model (any directory), so
 * the sgpu-model defaults for the worker's log patterns apply. */
static bool model_cmd_runs_sgpu_model(const char *cmd)
{
    while (*cmd == ' ' || *cmd == '\t')
        cmd++;
    if (strncmp(cmd, "exec ", 5) == 0) cmd += 5;
    size_t n = strcspn(cmd, " \t");
    const char *base = cmd;
    for (size_t i = 0; i < n; i++)
        if (cmd[i] == '/') base = cmd + i + 1;
    size_t bl = n - (size_t)(base - cmd);
    return bl == strlen("sgpu-model") && strncmp(base, "sgpu-model", bl) == 0;
}

/* Options into L (and o for what later steps read).  0 = run, 1 = help printed, 2 = error. */
static int launch_options(struct launch_opts *o, int argc, char **argv, struct opts_result *r)
{
    memset(o, 0, sizeof *o);
    if (opts_parse(&spec, o, argc, argv, r) != 0) {
        fprintf(stderr, "%s\n", r->err);
        return 2;
    }
    if (r->help) {
        if (r->help == OPTS_HELP_MARKDOWN)
            opts_markdown(&spec, stdout);
        else
            usage(stdout);
        return 1;
    }
    L.model_cmd = o->model_cmd && *o->model_cmd ? o->model_cmd : NULL;
    L.sign_url = o->sign_url && *o->sign_url ? o->sign_url : NULL;
    L.model_port = o->model_port;
    L.model_port_given = opts_given(r, R_MODEL_PORT);
    L.max_model_restarts = o->max_model_restarts;
    L.restart_delay = o->restart_delay;
    L.backoff_max = o->backoff_max;
    L.worker_grace = opts_given(r, R_STOP_TIMEOUT) ? o->stop_timeout : -1;
    L.quiet = o->quiet;
    L.worker_args = r->args;
    L.n_worker_args = r->nargs;
    return 0;
}

/* The workspace (absolute: children chdir into it, and the paths we export must stay valid
 * there) and its lock (one launcher per workspace).  0 or an exit status. */
static int setup_workspace(const char *ws)
{
    if (!ws || !*ws) ws = "/workspace";
    if (mkdir_p(ws) != 0)
        return setup_fail(
            2, "cannot create the workspace %s: %s (use --workspace DIR or WORKSPACE_DIR)", ws,
            strerror(errno));
    char wsreal[PATH_MAX];
    if (!realpath(ws, wsreal)) return setup_fail(2, "workspace %s: %s", ws, strerror(errno));
    if (strlen(wsreal) >= sizeof L.workspace)
        return setup_fail(2, "workspace path too long: %s", wsreal);
    memcpy(L.workspace, wsreal, strlen(wsreal) + 1);
    if (access(L.workspace, W_OK) != 0)
        return setup_fail(2, "workspace %s is not writable: %s", L.workspace, strerror(errno));

    snprintf(L.lock_path, sizeof L.lock_path, "%s/sgpu-launch.lock", L.workspace);
    L.lock_fd = open(L.lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (L.lock_fd < 0)
        return setup_fail(2, "cannot open the lock file %s: %s", L.lock_path, strerror(errno));
    if (flock(L.lock_fd, LOCK_EX | LOCK_NB) != 0) {
        char buf[32] = "";
        ssize_t n = pread(L.lock_fd, buf, sizeof buf - 1, 0);
        buf[n > 0 ? n : 0] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
        return setup_fail(3,
                          "another sgpu-launch (pid %s) is already running in %s (lock %s); "
                          "refusing to start a second instance",
                          buf[0] ? buf : "?", L.workspace, L.lock_path);
    }
    if (ftruncate(L.lock_fd, 0) == 0) {
        char buf[32];
        int n = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
        if (pwrite(L.lock_fd, buf, (size_t)n, 0) != n) { /* informative only */
        }
    }
    return 0;
}

/* The worker and model programs.  0 or an exit status. */
static int setup_programs(const struct launch_opts *o)
{
    if (proc_find_program(o->worker_bin, L.worker_bin, sizeof L.worker_bin) != 0)
        return setup_fail(
            2, "worker program '%s' not found (next to sgpu-launch or in $PATH); use --worker-bin",
            o->worker_bin);
    if (!L.model_cmd && proc_find_program(o->model_bin, L.model_bin, sizeof L.model_bin) != 0)
        return setup_fail(2,
                          "model program '%s' not found (next to sgpu-launch or in $PATH); use "
                          "--model-bin or --model-cmd",
                          o->model_bin);
    return 0;
}

/* WORKER_PORT and the model port: known and free.  0 or an exit status. */
static int setup_ports(void)
{
    const char *wp = getenv("WORKER_PORT");
    if (!wp || !*wp) {
        setenv("WORKER_PORT", "3000", 1);
        wp = "3000";
    }
    long long port;
    char why[96];
    if (opts_parse_ll(wp, 1, 65535, &port, why, sizeof why) != 0)
        return setup_fail(2, "invalid value '%s' for WORKER_PORT: %s", wp, why);
    L.worker_port = (int)port;
    const char *msu = getenv("MODEL_SERVER_URL");
    if (!L.model_port_given && msu && *msu) {
        struct http_url u;
        if (http_url_parse(msu, &u) == 0) L.model_port = u.port;
    }
    if (!L.model_port) L.model_port = 5001;
    int e = port_free("0.0.0.0", L.worker_port);
    if (e)
        return setup_fail(4,
                          "port %d (WORKER_PORT) is not available: %s; is another worker (or "
                          "PyWorker) already running on this machine?",
                          L.worker_port, strerror(e));
    if (!L.model_cmd || L.model_port_given) {
        if (L.model_port == L.worker_port)
            return setup_fail(2, "model port and WORKER_PORT are both %d", L.model_port);
        e = port_free("127.0.0.1", L.model_port);
        if (e)
            return setup_fail(4,
                              "model port %d is not available: %s; another model server may be "
                              "running (use --model-port N)",
                              L.model_port, strerror(e));
    }
    return 0;
}

/* The model log and debug.log: absolute, rotated, open; our own log lines go to debug.log
 * (and stderr unless --quiet).  0 or an exit status. */
static int setup_logs(const struct launch_opts *o)
{
    if (o->model_log && *o->model_log)
        snprintf(L.model_log, sizeof L.model_log, "%s", o->model_log);
    else
        snprintf(L.model_log, sizeof L.model_log, "%s/model.log", L.workspace);
    if (o->debug_log && *o->debug_log)
        snprintf(L.debug_log, sizeof L.debug_log, "%s", o->debug_log);
    else
        snprintf(L.debug_log, sizeof L.debug_log, "%s/debug.log", L.workspace);
    /* relative paths would change meaning in the children's cwd */
    char absbuf[PATH_MAX];
    if (L.model_log[0] != '/' && getcwd(absbuf, sizeof absbuf)) {
        char t[PATH_MAX];
        if (snprintf(t, sizeof t, "%s/%s", absbuf, L.model_log) >= (int)sizeof t)
            return setup_fail(2, "model log path too long");
        memcpy(L.model_log, t, strlen(t) + 1);
    }
    if (logs_rotate(L.debug_log) != 0 || (L.debug_fd = logs_open(L.debug_log)) < 0)
        return setup_fail(2, "cannot set up %s: %s", L.debug_log, strerror(errno));
    if (logs_rotate(L.model_log) != 0 || (L.model_fd = logs_open(L.model_log)) < 0)
        return setup_fail(2, "cannot set up %s: %s", L.model_log, strerror(errno));
    L.tee = logs_tee_open(&L.debug_fd, !L.quiet);
    log_init("launch", LOG_INFO);
    if (L.tee) log_set_output(L.tee);
    return 0;
}

/* The worker's environment (defaults set only when unset) and the stop timeout. */
static void setup_worker_env(void)
{
    setenv("MODEL_LOG", L.model_log, 1);
    setenv("WORKSPACE_DIR", L.workspace, 1);
    if (!L.model_cmd || L.model_port_given) {
        char url[64];
        snprintf(url, sizeof url, "http://127.0.0.1:%d", L.model_port);
        setenv_default("MODEL_SERVER_URL", url);
    }
    if (!L.model_cmd || model_cmd_runs_sgpu_model(L.model_cmd)) {
        /* sgpu-model's own log lines and health route, also when the user
         * wrote the command (e.g. to pass --model FILE.gguf). */
        setenv_default("MODEL_LOAD_LOG_MSG", "event=model_loaded");
        setenv_default("MODEL_ERROR_LOG_MSGS", "event=fatal");
        setenv_default("MODEL_HEALTH_ENDPOINT", "/health");
        setenv_default("BACKEND", "tgi");
    }
    if (L.worker_grace < 0) {
        const char *dt = getenv("SGPU_DRAIN_TIMEOUT");
        double d = 30;
        if (dt && *dt) {
            char *end;
            double v = strtod(dt, &end);
            if (end != dt && v >= 0) d = v;
        }
        L.worker_grace = d + 10;
    }
    /* In a terminal's foreground group, Ctrl-C/Ctrl-Z must reach only us (we
     * stop the worker ourselves, in order).  Otherwise the worker shares our
     * group so that group SIGSTOP/SIGCONT (engine local provider) suspend it. */
    L.worker_own_group = isatty(STDIN_FILENO) && tcgetpgrp(STDIN_FILENO) == getpgrp();
}

static const int signums[6] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGTSTP, SIGCONT};

/* The event loop: timers, signals, TLS, the children; returns the exit status. */
static int run_loop(void)
{
    L.base = http_base_new();
    if (!L.base) return setup_fail(2, "cannot create the event loop");
    L.hc = hclient_new(L.base, NULL);
    L.model.restart = xnonnull(evtimer_new(L.base, restart_cb, &L.model));
    L.worker.restart = xnonnull(evtimer_new(L.base, restart_cb, &L.worker));
    L.model.kill = xnonnull(evtimer_new(L.base, child_kill_cb, &L.model));
    L.worker.kill = xnonnull(evtimer_new(L.base, child_kill_cb, &L.worker));
    signal(SIGPIPE, SIG_IGN);
    struct event *sigs[6];
    for (int i = 0; i < 6; i++) {
        sigs[i] = evsignal_new(L.base, signums[i], sig_cb, NULL);
        evsignal_add(sigs[i], NULL);
    }

    char q1[PATH_MAX + 8], q2[PATH_MAX + 8];
    log_info("launch_start",
             "pid=%d workspace=%s worker_port=%d model_port=%d model_log=%s debug_log=%s "
             "max_model_restarts=%d report_addr=%s",
             (int)getpid(), log_quote(q1, sizeof q1, L.workspace), L.worker_port, L.model_port,
             log_quote(q2, sizeof q2, L.model_log), L.debug_log, L.max_model_restarts,
             getenv("REPORT_ADDR") ? getenv("REPORT_ADDR") : "(unset)");

    L.st = ST_RUNNING;
    if (tls_setup() == 0) {
        start_model();
        if (L.st == ST_RUNNING) start_worker();
    }
    event_base_dispatch(L.base);

    /* Children still alive here only after a forced exit path. */
    if (L.worker.pid > 0) proc_signal(L.worker.pid, SIGKILL);
    if (L.model.pid > 0) proc_signal(L.model.pid, SIGKILL);
    for (int i = 0; i < 6; i++)
        event_free(sigs[i]);
    event_free(L.model.restart);
    event_free(L.worker.restart);
    event_free(L.model.kill);
    event_free(L.worker.kill);
    if (L.sign_timer) event_free(L.sign_timer);
    sbuf_free(&L.csr);
    hclient_free(L.hc);
    relay_free_all();
    event_base_free(L.base);
    return L.exit_code;
}

int main(int argc, char **argv)
{
    L.lock_fd = L.debug_fd = L.model_fd = -1;
    L.model.name = "model";
    L.worker.name = "worker";
    struct launch_opts o;
    struct opts_result r;
    int rc = launch_options(&o, argc, argv, &r);
    if (rc == 0) rc = setup_workspace(o.workspace);
    if (rc == 0) rc = setup_programs(&o);
    if (rc == 0) rc = setup_ports();
    if (rc == 0) rc = setup_logs(&o);
    if (rc == 0) {
        setup_worker_env();
        rc = run_loop();
    } else if (rc == 1) {
        rc = 0; /* --help */
    }
    opts_result_free(&r);
    log_set_output(NULL);
    if (L.tee) fclose(L.tee);
    if (L.debug_fd >= 0) close(L.debug_fd);
    if (L.model_fd >= 0) close(L.model_fd);
    if (L.lock_fd >= 0)
        close(L.lock_fd); /* the file stays: unlinking it would race with a starting launcher */
    return rc;
}
