/* JSON output helpers; see jsonw.h. */
#include "jsonw.h"

#include <math.h>
#include <string.h>

#include "tokenizer.h"

void jw_str(struct sbuf *b, const char *s, size_t n)
{
    sbuf_putc(b, '"');
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            switch (c) {
            case '"':
                sbuf_puts(b, "\\\"");
                break;
            case '\\':
                sbuf_puts(b, "\\\\");
                break;
            case '\n':
                sbuf_puts(b, "\\n");
                break;
            case '\r':
                sbuf_puts(b, "\\r");
                break;
            case '\t':
                sbuf_puts(b, "\\t");
                break;
            default:
                if (c < 0x20 || c == 0x7f)
                    sbuf_printf(b, "\\u%04x", c);
                else
                    sbuf_putc(b, (char)c);
            }
            i++;
            continue;
        }
        size_t l = tok_utf8_len((const unsigned char *)s + i, n - i);
        bool ok = l > 1;
        if (ok) { /* reject overlongs, surrogates, > U+10FFFF */
            const unsigned char *u = (const unsigned char *)s + i;
            uint32_t cp = l == 2 ? ((uint32_t)(u[0] & 0x1f) << 6) | (u[1] & 0x3f)
                          : l == 3
                              ? ((uint32_t)(u[0] & 0x0f) << 12) | ((uint32_t)(u[1] & 0x3f) << 6) |
                                    (u[2] & 0x3f)
                              : ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3f) << 12) |
                                    ((uint32_t)(u[2] & 0x3f) << 6) | (u[3] & 0x3f);
            if ((l == 2 && cp < 0x80) || (l == 3 && cp < 0x800) || (l == 4 && cp < 0x10000) ||
                (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
                ok = false;
        }
        if (ok) {
            sbuf_append(b, s + i, l);
            i += l;
        } else {
            sbuf_puts(b, "\\ufffd");
            i++;
        }
    }
    sbuf_putc(b, '"');
}

void jw_cstr(struct sbuf *b, const char *s)
{
    jw_str(b, s, strlen(s));
}

void jw_num(struct sbuf *b, double v)
{
    if (!isfinite(v)) {
        sbuf_puts(b, "null");
        return;
    }
    sbuf_printf(b, "%.9g", v);
}
