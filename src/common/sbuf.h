/* sbuf: a growable, length-carrying byte buffer (always NUL-terminated so the
 * contents can also be used as a C string when they hold no NUL bytes).
 * Allocation failure aborts the process with a message: every caller would
 * otherwise have to handle out-of-memory on paths that cannot recover. */
#ifndef SGPU_SBUF_H
#define SGPU_SBUF_H

#include <stdarg.h>
#include <stddef.h>

struct sbuf {
    char *data; /* NULL until the first append; then len+1 bytes valid */
    size_t len; /* bytes used, not counting the terminating NUL */
    size_t cap; /* bytes allocated */
};

#define SBUF_INIT                                                                                  \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

void sbuf_reserve(struct sbuf *b, size_t extra);
void sbuf_append(struct sbuf *b, const void *p, size_t n);
void sbuf_puts(struct sbuf *b, const char *s);
void sbuf_putc(struct sbuf *b, char c);
void sbuf_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sbuf_vprintf(struct sbuf *b, const char *fmt, va_list ap);
void sbuf_reset(struct sbuf *b); /* len = 0, keeps the allocation */
void sbuf_free(struct sbuf *b);
/* Hand the data to the caller (who frees it); the buffer becomes empty.
 * Never returns NULL (an empty buffer yields ""). */
char *sbuf_steal(struct sbuf *b, size_t *len);
/* Contents as a C string ("" when empty). */
const char *sbuf_cstr(const struct sbuf *b);

#endif
