/* jspan: locate the byte spans of top-level members of a JSON object without
 * building a tree, so a proxy can forward a member (the worker's `payload`)
 * byte for byte instead of re-serialising it.
 *
 * The scanner only tracks strings and bracket depth; it assumes the text was
 * (or will be) validated by a real parser (pyj_parse).  Keys written with
 * escapes ("payl\u006fad") are decoded before comparison; duplicate keys:
 * the last occurrence wins, as in Python's json module.  A hand-written
 * single pass rather than jsmn: jsmn needs a token array sized by a first
 * counting pass, and we only need the top level. */
#ifndef SGPU_JSPAN_H
#define SGPU_JSPAN_H

#include <stdbool.h>
#include <stddef.h>

struct jspan {
    bool found;
    size_t off; /* first byte of the value */
    size_t len; /* value length in bytes (no surrounding whitespace) */
};

/* spans[i] receives the value span of member keys[i].  Returns 0 when the
 * text is an object whose top level scanned cleanly, -1 otherwise. */
int jspan_members(const char *text, size_t len, const char *const *keys, size_t nkeys,
                  struct jspan *spans);

#endif
