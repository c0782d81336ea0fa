/* Small JSON output helpers for the API responses.  Strings are written as
 * UTF-8; control characters are escaped; bytes that are not valid UTF-8 (a
 * random model can emit half a character) become U+FFFD, so the output is
 * always valid JSON. */
#ifndef SGPU_MODEL_JSONW_H
#define SGPU_MODEL_JSONW_H

#include <stddef.h>

#include "sbuf.h"

void jw_str(struct sbuf *b, const char *s, size_t n);
void jw_cstr(struct sbuf *b, const char *s);
/* Finite doubles with %.9g; NaN/inf as null. */
void jw_num(struct sbuf *b, double v);

#endif
