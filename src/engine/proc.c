/* Child processes watched from the event loop: fork/exec into a new process group, SIGCHLD
 * through libevent's signal event (waitpid(WNOHANG) loop), optional stdout capture through a
 * non-blocking pipe, optional kill timeout.  Nothing here blocks the loop. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "engine.h"
#include "log.h"
#include "proc.h"
#include "xalloc.h"

#define CAPTURE_MAX 4096

extern char **environ;

struct proc {
    int pid;
    int out_fd; /* -1 when not capturing or closed */
    struct event *out_ev;
    struct event *timer;
    char buf[CAPTURE_MAX + 1];
    size_t len;
    bool exited;
    int status;
    proc_done_fn fn;
    void *arg;
    struct engine *e;
    struct proc *next;
};

static struct proc *procs;
static struct event *sigchld_ev;

static void proc_finish(struct proc *p)
{
    for (struct proc **pp = &procs; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    if (p->out_ev) event_free(p->out_ev);
    if (p->out_fd >= 0) close(p->out_fd);
    if (p->timer) event_free(p->timer);
    p->buf[p->len] = '\0';
    if (p->fn) p->fn(p->e, p->arg, p->status, p->buf);
    free(p);
}

static void read_out(struct proc *p)
{
    for (;;) {
        char tmp[4096];
        ssize_t r = read(p->out_fd, tmp, sizeof tmp);
        if (r > 0) {
            size_t take = (size_t)r;
            if (take > CAPTURE_MAX - p->len) take = CAPTURE_MAX - p->len;
            memcpy(p->buf + p->len, tmp, take);
            p->len += take;
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        /* EOF or error */
        event_del(p->out_ev);
        close(p->out_fd);
        p->out_fd = -1;
        return;
    }
}

static void on_out(evutil_socket_t fd, short what, void *arg)
{
    struct proc *p = arg;
    (void)fd;
    (void)what;
    read_out(p);
    if (p->out_fd < 0 && p->exited) proc_finish(p);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct proc *p = arg;
    (void)fd;
    (void)what;
    log_warn("proc_timeout", "pid=%d", p->pid);
    kill(-p->pid, SIGKILL);
    kill(p->pid, SIGKILL);
}

static void on_sigchld(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0) break;
        struct proc *p = procs;
        while (p && p->pid != pid)
            p = p->next;
        if (!p) continue;
        p->exited = true;
        p->status = status;
        if (p->out_fd >= 0) read_out(p); /* a grandchild may still hold the pipe */
        if (p->out_fd >= 0) {
            /* give the remaining writers until EOF; the timer (if any) still bounds it */
            continue;
        }
        proc_finish(p);
    }
}

int proc_init(struct engine *e)
{
    sigchld_ev = evsignal_new(e->base, SIGCHLD, on_sigchld, NULL);
    if (!sigchld_ev || event_add(sigchld_ev, NULL) != 0) return -1;
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

void proc_fini(struct engine *e)
{
    (void)e;
    while (procs) {
        struct proc *p = procs;
        p->fn = NULL;
        proc_finish(p);
    }
    if (sigchld_ev) event_free(sigchld_ev);
    sigchld_ev = NULL;
}

void proc_detach(int pid)
{
    for (struct proc *p = procs; p; p = p->next)
        if (p->pid == pid) p->fn = NULL;
}

int proc_spawn(struct engine *e, const struct proc_spec *s, proc_done_fn fn, void *arg)
{
    int pfd[2] = {-1, -1};
    if (s->capture && pipe2(pfd, O_CLOEXEC) != 0) return -1;
    int logfd = -1;
    if (s->log_path) logfd = open(s->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    pid_t pid = fork();
    if (pid < 0) {
        if (pfd[0] >= 0) close(pfd[0]), close(pfd[1]);
        if (logfd >= 0) close(logfd);
        return -1;
    }
    if (pid == 0) {
        setpgid(0, 0);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        signal(SIGXFSZ, SIG_DFL); /* ignored by the engine (main.c), not by its children */
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 0);
        int errfd = logfd >= 0 ? logfd : devnull;
        dup2(s->capture ? pfd[1] : errfd, 1);
        dup2(errfd, 2);
        if (s->cwd && chdir(s->cwd) != 0) _exit(126);
        execvpe(s->argv[0], (char *const *)s->argv, (char *const *)s->env);
        _exit(127);
    }
    setpgid(pid, pid); /* also from the parent: no race with an early kill(-pid) */
    if (logfd >= 0) close(logfd);
    struct proc *p = xcalloc(1, sizeof *p);
    p->pid = pid;
    p->out_fd = -1;
    p->fn = fn;
    p->arg = arg;
    p->e = e;
    if (s->capture) {
        close(pfd[1]);
        p->out_fd = pfd[0];
        fcntl(p->out_fd, F_SETFL, fcntl(p->out_fd, F_GETFL) | O_NONBLOCK);
        p->out_ev = xnonnull(event_new(e->base, p->out_fd, EV_READ | EV_PERSIST, on_out, p));
        event_add(p->out_ev, NULL);
    }
    if (s->timeout_s > 0) {
        p->timer = xnonnull(evtimer_new(e->base, on_timeout, p));
        struct timeval tv = clock_tv(s->timeout_s);
        evtimer_add(p->timer, &tv);
    }
    p->next = procs;
    procs = p;
    return pid;
}

char **proc_env_build(const char *const *extra, size_t nextra)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = xcalloc(n + nextra + 1, sizeof *env);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t kl = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        bool over = false;
        for (size_t j = 0; j < nextra && !over; j++)
            over = strncmp(extra[j], environ[i], kl) == 0 && extra[j][kl] == '=';
        if (!over) env[k++] = xstrdup(environ[i]);
    }
    /* a later extra overrides an earlier one with the same name */
    for (size_t j = 0; j < nextra; j++) {
        const char *eq = strchr(extra[j], '=');
        size_t kl = eq ? (size_t)(eq - extra[j]) : strlen(extra[j]);
        bool later = false;
        for (size_t m = j + 1; m < nextra && !later; m++)
            later = strncmp(extra[m], extra[j], kl) == 0 && extra[m][kl] == '=';
        if (!later) env[k++] = xstrdup(extra[j]);
    }
    env[k] = NULL;
    return env;
}

void proc_env_free(char **env)
{
    if (!env) return;
    for (char **p = env; *p; p++)
        free(*p);
    free(env);
}

unsigned long long proc_start_time(int pid)
{
    if (pid <= 0) return 0;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* field 22 (starttime); skip past the ")" that ends the comm field */
    char *p = strrchr(buf, ')');
    if (!p) return 0;
    p++;
    char *tok = strtok(p, " ");         /* field 3: state */
    if (tok && tok[0] == 'Z') return 0; /* zombie = gone */
    int field = 3;
    while (tok && field < 22) {
        tok = strtok(NULL, " ");
        field++;
    }
    return tok ? strtoull(tok, NULL, 10) : 0;
}

/* ppid and pgid of a process from /proc (-1 if gone). */
static int proc_parent(int pid, int *pgid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    int ppid = -1, pg = -1;
    char st;
    if (!p || sscanf(p + 1, " %c %d %d", &st, &ppid, &pg) != 3) return -1;
    *pgid = pg;
    return ppid;
}

void proc_kill_tree(int pid, int sig)
{
    if (pid <= 0) return;
    /* collect descendants first (breadth-first over one /proc scan per level) */
    int tree[256];
    size_t nt = 0;
    tree[nt++] = pid;
    for (size_t i = 0; i < nt && nt < 256; i++) {
        DIR *d = opendir("/proc");
        if (!d) break;
        struct dirent *de;
        while ((de = readdir(d)) && nt < 256) {
            int c = atoi(de->d_name);
            int pg;
            if (c > 0 && proc_parent(c, &pg) == tree[i]) tree[nt++] = c;
        }
        closedir(d);
    }
    for (size_t i = 0; i < nt; i++) {
        int pg;
        if (proc_parent(tree[i], &pg) >= 0 && pg == tree[i]) kill(-tree[i], sig);
        kill(tree[i], sig);
    }
}
