/* Top-level JSON member spans; see jspan.h. */
#include "jspan.h"

#include <string.h>

static size_t skip_ws(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* s[i] == '"'.  Returns the index just past the closing quote, or n+1. */
static size_t skip_string(const char *s, size_t n, size_t i)
{
    i++;
    while (i < n) {
        const char *q = memchr(s + i, '"', n - i);
        if (!q) return n + 1;
        size_t j = (size_t)(q - s);
        /* count backslashes before the quote */
        size_t k = j;
        while (k > i && s[k - 1] == '\\')
            k--;
        if (((j - k) & 1) == 0) return j + 1;
        i = j + 1;
    }
    return n + 1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Compare the raw key s[a..b) (without quotes) with `key`, decoding escapes
 * that produce ASCII (enough for every key we look for). */
static bool key_eq(const char *s, size_t a, size_t b, const char *key)
{
    if (!memchr(s + a, '\\', b - a)) return strlen(key) == b - a && memcmp(s + a, key, b - a) == 0;
    size_t k = 0;
    for (size_t i = a; i < b; i++) {
        char c = s[i];
        if (c == '\\' && i + 1 < b) {
            char e = s[++i];
            switch (e) {
            case 'n':
                c = '\n';
                break;
            case 't':
                c = '\t';
                break;
            case 'r':
                c = '\r';
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case 'u': {
                if (i + 4 >= b) return false;
                int v = 0;
                for (int d = 1; d <= 4; d++) {
                    int h = hexval(s[i + (size_t)d]);
                    if (h < 0) return false;
                    v = v * 16 + h;
                }
                if (v >= 0x80) return false;
                c = (char)v;
                i += 4;
                break;
            }
            default:
                c = e;
                break;
            }
        }
        if (key[k] == '\0' || key[k] != c) return false;
        k++;
    }
    return key[k] == '\0';
}

/* Skip one value starting at s[i]; returns the index just past it or n+1. */
static size_t skip_value(const char *s, size_t n, size_t i)
{
    if (i >= n) return n + 1;
    char c = s[i];
    if (c == '"') return skip_string(s, n, i);
    if (c == '{' || c == '[') {
        int depth = 0;
        while (i < n) {
            c = s[i];
            if (c == '"') {
                i = skip_string(s, n, i);
                if (i > n) return n + 1;
                continue;
            }
            if (c == '{' || c == '[')
                depth++;
            else if (c == '}' || c == ']') {
                if (--depth == 0) return i + 1;
            }
            i++;
        }
        return n + 1;
    }
    /* number / literal: until a delimiter */
    size_t j = i;
    while (j < n && s[j] != ',' && s[j] != '}' && s[j] != ']' && s[j] != ' ' && s[j] != '\t' &&
           s[j] != '\n' && s[j] != '\r')
        j++;
    return j == i ? n + 1 : j;
}

int jspan_members(const char *s, size_t n, const char *const *keys, size_t nkeys,
                  struct jspan *spans)
{
    for (size_t k = 0; k < nkeys; k++)
        spans[k] = (struct jspan){false, 0, 0};
    size_t i = skip_ws(s, n, 0);
    if (i >= n || s[i] != '{') return -1;
    i = skip_ws(s, n, i + 1);
    if (i < n && s[i] == '}') return 0;
    for (;;) {
        if (i >= n || s[i] != '"') return -1;
        size_t ka = i + 1;
        size_t ke = skip_string(s, n, i);
        if (ke > n) return -1;
        i = skip_ws(s, n, ke);
        if (i >= n || s[i] != ':') return -1;
        i = skip_ws(s, n, i + 1);
        size_t va = i;
        size_t ve = skip_value(s, n, i);
        if (ve > n) return -1;
        for (size_t k = 0; k < nkeys; k++) {
            if (key_eq(s, ka, ke - 1, keys[k])) spans[k] = (struct jspan){true, va, ve - va};
        }
        i = skip_ws(s, n, ve);
        if (i >= n) return -1;
        if (s[i] == '}') return 0;
        if (s[i] != ',') return -1;
        i = skip_ws(s, n, i + 1);
    }
}
