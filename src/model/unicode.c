/* Unicode class lookups over the generated tables; see unicode.h. */
#include "unicode.h"

#include <stddef.h>

struct uni_range {
    uint32_t first;
    uint8_t flags;
};

#include "unicode_tables.inc" /* generated in the build directory */

static unsigned range_flags(uint32_t cp)
{
    size_t lo = 0, hi = sizeof uni_ranges / sizeof *uni_ranges; /* answer in [lo, hi) */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (uni_ranges[mid].first <= cp)
            lo = mid;
        else
            hi = mid;
    }
    return uni_ranges[lo].flags;
}

static int is_space(uint32_t cp)
{
    for (size_t i = 0; i < sizeof uni_space / sizeof *uni_space; i++)
        if (cp >= uni_space[i][0] && cp <= uni_space[i][1]) return 1;
    return 0;
}

unsigned uni_flags(uint32_t cp)
{
    if (cp >= 0x110000) return UNI_UNDEF;
    unsigned f = range_flags(cp);
    /* White_Space is a dozen short ranges; skip the scan for most code points */
    if ((cp <= 0x20 || cp == 0x85 || cp == 0xa0 || cp >= 0x1680) && is_space(cp)) f |= UNI_SPACE;
    return f;
}

uint32_t uni_tolower(uint32_t cp)
{
    size_t lo = 0, hi = sizeof uni_lower / sizeof *uni_lower;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (uni_lower[mid][0] < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < sizeof uni_lower / sizeof *uni_lower && uni_lower[lo][0] == cp ? uni_lower[lo][1]
                                                                               : cp;
}
