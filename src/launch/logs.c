/* Log files of an instance: rotation at start, reopen on SIGHUP, and a tee
 * FILE for the launcher's own log lines (debug.log + stderr). */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "launch.h"

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int logs_rotate(const char *path)
{
    int in = open(path, O_RDONLY | O_CLOEXEC);
    if (in < 0) return errno == ENOENT ? 0 : -1;
    struct stat st;
    if (fstat(in, &st) != 0 || st.st_size == 0) {
        close(in);
        return 0;
    }
    char old[4096];
    if (snprintf(old, sizeof old, "%s.old", path) >= (int)sizeof old) {
        close(in);
        errno = ENAMETOOLONG;
        return -1;
    }
    int out = open(old, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (out < 0) {
        close(in);
        return -1;
    }
    char buf[65536];
    int rc = 0;
    for (;;) {
        ssize_t r = read(in, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            rc = -1;
            break;
        }
        if (r == 0) break;
        if (write_all(out, buf, (size_t)r) != 0) {
            rc = -1;
            break;
        }
    }
    close(in);
    if (close(out) != 0) rc = -1;
    if (rc == 0 && truncate(path, 0) != 0) rc = -1;
    return rc;
}

int logs_open(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

int logs_reopen(int fd, const char *path)
{
    int nfd = logs_open(path);
    if (nfd < 0) return -1;
    /* dup3 keeps O_CLOEXEC on the target descriptor. */
    int rc = dup3(nfd, fd, O_CLOEXEC) < 0 ? -1 : 0;
    close(nfd);
    return rc;
}

struct tee {
    int *fd;
    bool also_stderr;
};

static ssize_t tee_write(void *cookie, const char *buf, size_t size)
{
    struct tee *t = cookie;
    if (*t->fd >= 0) (void)write_all(*t->fd, buf, size);
    if (t->also_stderr) (void)write_all(STDERR_FILENO, buf, size);
    return (ssize_t)size;
}

static int tee_close(void *cookie)
{
    free(cookie);
    return 0;
}

FILE *logs_tee_open(int *fd, bool also_stderr)
{
    struct tee *t = malloc(sizeof *t);
    if (!t) return NULL;
    t->fd = fd;
    t->also_stderr = also_stderr;
    cookie_io_functions_t io = {.read = NULL, .write = tee_write, .seek = NULL, .close = tee_close};
    FILE *f = fopencookie(t, "w", io);
    if (!f) {
        free(t);
        return NULL;
    }
    setvbuf(f, NULL, _IOLBF, 0);
    return f;
}
