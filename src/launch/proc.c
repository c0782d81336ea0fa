/* Child processes of the launcher and the relays that carry their output
 * into the log files.
 *
 * Process groups: the model server runs in its own group, so that signals to
 * it reach every process of a `sh -c` model command, and so that a signal to
 * the launcher's group (terminal Ctrl-C, a supervisor's SIGTERM to the group)
 * never stops the model before the worker has drained.  The worker stays in
 * the launcher's group, so that the engine's local provider can suspend and
 * resume an instance with SIGSTOP/SIGCONT to the launcher's group (see
 * docs/launch.md).  The children's output goes through pipes read by the
 * launcher: it owns the log files and can reopen them on SIGHUP. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "launch.h"
#include "log.h"

#define RELAY_MAX_PARTIAL (64 * 1024) /* longer "lines" are written as they come */

struct relay {
    struct relay *next;
    int fd;
    const int *dst;
    bool whole_lines;
    struct event *ev;
    struct sbuf partial;
    char *last; /* optional last-line buffer (not owned) */
    size_t last_n;
};

static struct relay *relays;

static void write_dst(const int *dst, const char *p, size_t n)
{
    while (n > 0 && *dst >= 0) {
        ssize_t w = write(*dst, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Remembers the last non-empty line of the complete lines in p[0..n). */
static void note_last_line(struct relay *r, const char *p, size_t n)
{
    if (!r->last || n == 0) return;
    size_t end = n;
    while (end > 0 && (p[end - 1] == '\n' || p[end - 1] == '\r'))
        end--;
    if (end == 0) return;
    size_t start = end;
    while (start > 0 && p[start - 1] != '\n')
        start--;
    size_t l = end - start < r->last_n - 1 ? end - start : r->last_n - 1;
    memcpy(r->last, p + start, l);
    r->last[l] = '\0';
}

void relay_track_last_line(struct relay *r, char *buf, size_t n)
{
    r->last = buf;
    r->last_n = n;
    if (n) buf[0] = '\0';
}

static void relay_free(struct relay *r)
{
    for (struct relay **pp = &relays; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    }
    if (r->partial.len) write_dst(r->dst, r->partial.data, r->partial.len);
    sbuf_free(&r->partial);
    if (r->ev) event_free(r->ev);
    close(r->fd);
    free(r);
}

void relay_free_all(void)
{
    /* Copy what the children wrote before they died (their pipes are at EOF
     * unless a grandchild still holds one: then stop at "no data now"). */
    while (relays) {
        struct relay *r = relays;
        char buf[16384];
        for (int i = 0; i < 1024; i++) {
            ssize_t n = read(r->fd, buf, sizeof buf);
            if (n <= 0) break;
            if (r->partial.len) {
                write_dst(r->dst, r->partial.data, r->partial.len);
                sbuf_reset(&r->partial);
            }
            write_dst(r->dst, buf, (size_t)n);
        }
        relay_free(r);
    }
}

static void relay_cb(evutil_socket_t fd, short what, void *arg)
{
    struct relay *r = arg;
    char buf[16384];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) {
            relay_free(r);
            return;
        }
        if (!r->whole_lines) {
            write_dst(r->dst, buf, (size_t)n);
            continue;
        }
        /* Write up to the last newline; keep the tail for later. */
        size_t last = (size_t)n;
        while (last > 0 && buf[last - 1] != '\n')
            last--;
        if (last > 0) {
            if (r->partial.len) {
                write_dst(r->dst, r->partial.data, r->partial.len);
                sbuf_reset(&r->partial);
            }
            write_dst(r->dst, buf, last);
            note_last_line(r, buf, last);
        }
        sbuf_append(&r->partial, buf + last, (size_t)n - last);
        if (r->partial.len > RELAY_MAX_PARTIAL) {
            write_dst(r->dst, r->partial.data, r->partial.len);
            sbuf_reset(&r->partial);
        }
    }
}

struct relay *relay_new(struct event_base *base, int pipe_fd, const int *dst_fd, bool whole_lines)
{
    struct relay *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->fd = pipe_fd;
    r->dst = dst_fd;
    r->whole_lines = whole_lines;
    r->ev = event_new(base, pipe_fd, EV_READ | EV_PERSIST, relay_cb, r);
    if (!r->ev) {
        free(r);
        return NULL;
    }
    event_add(r->ev, NULL);
    r->next = relays;
    relays = r;
    return r;
}

/* In the child after fork: async-signal-safe calls only. */
static void child_exec(const struct spawn_opts *o, int out_fd, pid_t parent)
{
    if (o->own_group) setpgid(0, 0);
    if (o->pdeath_sig) {
        prctl(PR_SET_PDEATHSIG, o->pdeath_sig);
        if (getppid() != parent) _exit(1); /* the launcher is already gone */
    }
    /* Default dispositions, then an empty mask (signals are blocked since
     * before fork; libevent installed handlers; exec keeps ignored signals
     * ignored and keeps the mask). */
    for (int s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP) continue;
        signal(s, SIG_DFL);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0 && devnull != 0) {
        dup2(devnull, 0);
        close(devnull);
    }
    dup2(out_fd, 1);
    dup2(out_fd, 2);
    if (out_fd > 2) close(out_fd);
    if (o->cwd && chdir(o->cwd) != 0) {
        static const char m[] = "sgpu-launch: cannot chdir to the workspace\n";
        (void)!write(2, m, sizeof m - 1);
        _exit(126);
    }
    execv(o->argv[0], (char *const *)o->argv);
    static const char m1[] = "sgpu-launch: cannot execute ";
    static const char m2[] = "\n";
    (void)!write(2, m1, sizeof m1 - 1);
    (void)!write(2, o->argv[0], strlen(o->argv[0]));
    (void)!write(2, m2, 1);
    _exit(127);
}

pid_t proc_spawn(struct event_base *base, const struct spawn_opts *o)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return -1;
    pid_t parent = getpid();
    /* Block every signal across fork: until the child has reset its handlers,
     * a signal sent to it (e.g. SIGTERM right after spawn) would otherwise run
     * libevent's handler in the child, which writes into the socketpair it
     * shares with us: the launcher would believe it got that signal. */
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    pid_t pid = fork();
    if (pid != 0) sigprocmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        close(p[0]);
        /* p[1] is O_CLOEXEC, but dup2 onto 1/2 clears the flag there. */
        child_exec(o, p[1], parent);
    }
    /* Also set the group from the parent: whichever runs first wins the race,
     * so a signal sent right after spawn already reaches the group. */
    if (o->own_group) setpgid(pid, pid);
    close(p[1]);
    fcntl(p[0], F_SETFL, fcntl(p[0], F_GETFL) | O_NONBLOCK);
    struct relay *r = relay_new(base, p[0], o->log_fd, o->whole_lines);
    if (!r)
        close(p[0]);
    else if (o->last_line)
        relay_track_last_line(r, o->last_line, o->last_line_len);
    return pid;
}

void proc_signal(pid_t pgid, int sig)
{
    if (pgid <= 0) return;
    if (getpgid(pgid) == pgid) {
        if (kill(-pgid, sig) != 0 && errno == ESRCH) kill(pgid, sig);
    } else {
        kill(pgid, sig);
    }
}

static bool is_exec(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

int proc_find_program(const char *name, char *out, size_t n)
{
    if (strchr(name, '/')) {
        if (!is_exec(name)) return -1;
        if (name[0] == '/') {
            snprintf(out, n, "%s", name);
        } else {
            char cwd[PATH_MAX];
            if (!getcwd(cwd, sizeof cwd)) return -1;
            snprintf(out, n, "%s/%s", cwd, name);
        }
        return 0;
    }
    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len > 0) {
        self[len] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            if (snprintf(out, n, "%s/%s", self, name) < (int)n && is_exec(out)) return 0;
        }
    }
    const char *path = getenv("PATH");
    if (!path) path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t l = strcspn(path, ":");
        if (l > 0 && snprintf(out, n, "%.*s/%s", (int)l, path, name) < (int)n && is_exec(out))
            return 0;
        path += l;
        if (*path == ':') path++;
    }
    return -1;
}
