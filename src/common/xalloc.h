/* xalloc: the project's one allocation policy.
 *
 * Out of memory is not a condition any request path here can recover from (a half-built reply,
 * a half-linked list), so every allocation that must succeed goes through these wrappers: on
 * failure they log one line naming the caller's file and line and abort().  Code that can
 * degrade instead (a cache that may be skipped) calls malloc() itself and checks the result.
 *
 * Sizes are in bytes; xcalloc/xreallocarray check n * size for overflow (an overflow is treated
 * as out of memory: the request could never be satisfied). */
#ifndef SGPU_XALLOC_H
#define SGPU_XALLOC_H

#include <stddef.h>

void *xalloc_malloc(size_t size, const char *file, int line);
void *xalloc_calloc(size_t n, size_t size, const char *file, int line);
void *xalloc_realloc(void *p, size_t size, const char *file, int line);
void *xalloc_reallocarray(void *p, size_t n, size_t size, const char *file, int line);
char *xalloc_strdup(const char *s, const char *file, int line);
/* n bytes of s and a terminating NUL (s may hold NULs; exactly n + 1 bytes are allocated). */
char *xalloc_memdup(const void *s, size_t n, const char *file, int line);

/* p itself, or abort with one line naming `what` and the caller when p is NULL: for library
 * constructors whose only failure is out of memory (libevent's event_new, evtimer_new, ...). */
void *xalloc_nonnull(void *p, const char *what, const char *file, int line);

#define xmalloc(size) xalloc_malloc((size), __FILE__, __LINE__)
#define xcalloc(n, size) xalloc_calloc((n), (size), __FILE__, __LINE__)
#define xrealloc(p, size) xalloc_realloc((p), (size), __FILE__, __LINE__)
#define xreallocarray(p, n, size) xalloc_reallocarray((p), (n), (size), __FILE__, __LINE__)
#define xstrdup(s) xalloc_strdup((s), __FILE__, __LINE__)
#define xmemdup(s, n) xalloc_memdup((s), (n), __FILE__, __LINE__)
#define xnonnull(p) xalloc_nonnull((p), #p, __FILE__, __LINE__)

#endif
