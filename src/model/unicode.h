/* Unicode character classes for the tokenizers' pre-tokenizers.  The tables
 * are generated at build time from Debian's unicode-data package
 * (scripts/gen-unicode-tables.py -> build/gen/unicode_tables.inc): general
 * category per code point (UnicodeData.txt), White_Space (PropList.txt) and
 * simple lowercase mappings. */
#ifndef SGPU_MODEL_UNICODE_H
#define SGPU_MODEL_UNICODE_H

#include <stdint.h>

/* Category flags (one of the first eight per code point) plus UNI_SPACE. */
enum {
    UNI_LETTER = 1,   /* \p{L} */
    UNI_NUMBER = 2,   /* \p{N} */
    UNI_MARK = 4,     /* \p{M} */
    UNI_PUNCT = 8,    /* \p{P} */
    UNI_SYMBOL = 16,  /* \p{S} */
    UNI_SEP = 32,     /* \p{Z} */
    UNI_CONTROL = 64, /* \p{C} except Cn */
    UNI_UNDEF = 128,  /* Cn (unassigned), and code points above U+10FFFF */
    UNI_SPACE = 256   /* White_Space property: the regexes' \s */
};

/* Flags of code point cp (any value; beyond U+10FFFF: UNI_UNDEF). */
unsigned uni_flags(uint32_t cp);
/* Simple lowercase mapping (cp itself when it has none). */
uint32_t uni_tolower(uint32_t cp);

#endif
