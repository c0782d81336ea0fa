/* xalloc: allocation wrappers that abort with a message (see xalloc.h for the policy). */
#include "xalloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Written with fprintf, not the log module: log formatting may itself allocate. */
static void xalloc_die(size_t bytes, const char *file, int line)
{
    fprintf(stderr, "fatal: out of memory allocating %zu bytes at %s:%d\n", bytes, file, line);
    abort();
}

void *xalloc_malloc(size_t size, const char *file, int line)
{
    void *p = malloc(size ? size : 1);
    if (!p) xalloc_die(size, file, line);
    return p;
}

void *xalloc_calloc(size_t n, size_t size, const char *file, int line)
{
    if (size && n > SIZE_MAX / size) xalloc_die(SIZE_MAX, file, line);
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) xalloc_die(n * size, file, line);
    return p;
}

void *xalloc_realloc(void *p, size_t size, const char *file, int line)
{
    void *q = realloc(p, size ? size : 1);
    if (!q) xalloc_die(size, file, line);
    return q;
}

void *xalloc_reallocarray(void *p, size_t n, size_t size, const char *file, int line)
{
    if (size && n > SIZE_MAX / size) xalloc_die(SIZE_MAX, file, line);
    return xalloc_realloc(p, n * size, file, line);
}

char *xalloc_strdup(const char *s, const char *file, int line)
{
    return xalloc_memdup(s, strlen(s), file, line);
}

char *xalloc_memdup(const void *s, size_t n, const char *file, int line)
{
    if (n == SIZE_MAX) xalloc_die(SIZE_MAX, file, line);
    char *p = xalloc_malloc(n + 1, file, line);
    if (n) memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void *xalloc_nonnull(void *p, const char *what, const char *file, int line)
{
    if (!p) {
        fprintf(stderr, "fatal: out of memory: %.80s returned NULL at %s:%d\n", what, file, line);
        abort();
    }
    return p;
}
