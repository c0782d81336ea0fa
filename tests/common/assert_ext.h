/* assert_ext: cmocka assertions that print both operands when they fail (libuv's ASSERT_EQ
 * style), for the comparisons cmocka has no assertion of its own for: `assert_true(a < b)`
 * only says "a < b" failed, ASSERT_LT_INT(a, b) also says "(7 < 3)".
 *
 * Include after <cmocka.h>.  Every operand is evaluated exactly once.  On failure the
 * message goes through print_error() and the test ends through _fail(), like any cmocka
 * assertion (so it is reported on the failing test's own line).
 *
 *   ASSERT_{EQ,NE,LT,LE,GT,GE}_INT(a, b)   integers, compared as intmax_t (a value of an
 *                                          unsigned type above INTMAX_MAX is not expected)
 *   ASSERT_{LT,LE,GT,GE}_DBL(a, b)         doubles; NaN on either side fails
 *   ASSERT_EQ_DBL(a, b, tol)               |a - b| <= tol (tol 0 = exactly equal); NaN fails
 *   ASSERT_EQ_STR(a, b), ASSERT_NE_STR     C strings (NULL prints as NULL and equals only NULL)
 *   ASSERT_HAS_STR(hay, needle)            strstr(hay, needle) != NULL
 *   ASSERT_EQ_MEM(a, b, n)                 n bytes; prints the first differing offset and
 *                                          both sides around it, non-printables as \xNN */
#ifndef SGPU_TESTS_ASSERT_EXT_H
#define SGPU_TESTS_ASSERT_EXT_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Writes up to 72 bytes of p[0..n) at off as a quoted, escaped string into out (>= 200 bytes). */
static inline const char *assert_ext_quote(const void *p, size_t n, size_t off, char *out,
                                           size_t outn)
{
    const unsigned char *s = p;
    size_t o = 0, end = off + 72 < n ? off + 72 : n;
    o += (size_t)snprintf(out + o, outn - o, "%s\"", off ? "..." : "");
    for (size_t i = off; i < end && o + 8 < outn; i++) {
        if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '\\')
            out[o++] = (char)s[i];
        else
            o += (size_t)snprintf(out + o, outn - o, "\\x%02x", s[i]);
    }
    snprintf(out + o, outn - o, "\"%s", end < n ? "..." : "");
    return out;
}

#define ASSERT_EXT_INT_(a, op, b)                                                                  \
    do {                                                                                           \
        intmax_t assert_ext_a_ = (intmax_t)(a), assert_ext_b_ = (intmax_t)(b);                     \
        if (!(assert_ext_a_ op assert_ext_b_)) {                                                   \
            print_error("assertion failed: %s %s %s (%jd %s %jd)\n", #a, #op, #b, assert_ext_a_,   \
                        #op, assert_ext_b_);                                                       \
            _fail(__FILE__, __LINE__);                                                             \
        }                                                                                          \
    } while (0)

#define ASSERT_EQ_INT(a, b) ASSERT_EXT_INT_(a, ==, b)
#define ASSERT_NE_INT(a, b) ASSERT_EXT_INT_(a, !=, b)
#define ASSERT_LT_INT(a, b) ASSERT_EXT_INT_(a, <, b)
#define ASSERT_LE_INT(a, b) ASSERT_EXT_INT_(a, <=, b)
#define ASSERT_GT_INT(a, b) ASSERT_EXT_INT_(a, >, b)
#define ASSERT_GE_INT(a, b) ASSERT_EXT_INT_(a, >=, b)

#define ASSERT_EXT_DBL_(a, op, b)                                                                  \
    do {                                                                                           \
        double assert_ext_a_ = (double)(a), assert_ext_b_ = (double)(b);                           \
        if (!(assert_ext_a_ op assert_ext_b_)) {                                                   \
            print_error("assertion failed: %s %s %s (%.17g %s %.17g)\n", #a, #op, #b,              \
                        assert_ext_a_, #op, assert_ext_b_);                                        \
            _fail(__FILE__, __LINE__);                                                             \
        }                                                                                          \
    } while (0)

#define ASSERT_LT_DBL(a, b) ASSERT_EXT_DBL_(a, <, b)
#define ASSERT_LE_DBL(a, b) ASSERT_EXT_DBL_(a, <=, b)
#define ASSERT_GT_DBL(a, b) ASSERT_EXT_DBL_(a, >, b)
#define ASSERT_GE_DBL(a, b) ASSERT_EXT_DBL_(a, >=, b)

#define ASSERT_EQ_DBL(a, b, tol)                                                                   \
    do {                                                                                           \
        double assert_ext_a_ = (double)(a), assert_ext_b_ = (double)(b);                           \
        double assert_ext_t_ = (double)(tol);                                                      \
        if (!(fabs(assert_ext_a_ - assert_ext_b_) <= assert_ext_t_)) {                             \
            print_error("assertion failed: %s == %s within %g (%.17g vs %.17g)\n", #a, #b,         \
                        assert_ext_t_, assert_ext_a_, assert_ext_b_);                              \
            _fail(__FILE__, __LINE__);                                                             \
        }                                                                                          \
    } while (0)

#define ASSERT_EXT_STR_(a, b, want_eq)                                                             \
    do {                                                                                           \
        const char *assert_ext_a_ = (a), *assert_ext_b_ = (b);                                     \
        int assert_ext_eq_ = (assert_ext_a_ && assert_ext_b_)                                      \
                                 ? strcmp(assert_ext_a_, assert_ext_b_) == 0                       \
                                 : assert_ext_a_ == assert_ext_b_;                                 \
        if (assert_ext_eq_ != (want_eq)) {                                                         \
            char assert_ext_qa_[200], assert_ext_qb_[200];                                         \
            print_error("assertion failed: %s %s %s (%s %s %s)\n", #a,                             \
                        (want_eq) ? "==" : "!=", #b,                                               \
                        assert_ext_a_ ? assert_ext_quote(assert_ext_a_, strlen(assert_ext_a_), 0,  \
                                                         assert_ext_qa_, sizeof assert_ext_qa_)    \
                                      : "NULL",                                                    \
                        (want_eq) ? "==" : "!=",                                                   \
                        assert_ext_b_ ? assert_ext_quote(assert_ext_b_, strlen(assert_ext_b_), 0,  \
                                                         assert_ext_qb_, sizeof assert_ext_qb_)    \
                                      : "NULL");                                                   \
            _fail(__FILE__, __LINE__);                                                             \
        }                                                                                          \
    } while (0)

#define ASSERT_EQ_STR(a, b) ASSERT_EXT_STR_(a, b, 1)
#define ASSERT_NE_STR(a, b) ASSERT_EXT_STR_(a, b, 0)

#define ASSERT_HAS_STR(hay, needle)                                                                \
    do {                                                                                           \
        const char *assert_ext_h_ = (hay), *assert_ext_n_ = (needle);                              \
        if (!assert_ext_h_ || !strstr(assert_ext_h_, assert_ext_n_)) {                             \
            char assert_ext_qh_[200];                                                              \
            print_error("assertion failed: %s contains \"%s\" (it is %s)\n", #hay, assert_ext_n_,  \
                        assert_ext_h_ ? assert_ext_quote(assert_ext_h_, strlen(assert_ext_h_), 0,  \
                                                         assert_ext_qh_, sizeof assert_ext_qh_)    \
                                      : "NULL");                                                   \
            _fail(__FILE__, __LINE__);                                                             \
        }                                                                                          \
    } while (0)

#define ASSERT_EQ_MEM(a, b, n)                                                                     \
    do {                                                                                           \
        const unsigned char *assert_ext_a_ = (const unsigned char *)(a);                           \
        const unsigned char *assert_ext_b_ = (const unsigned char *)(b);                           \
        size_t assert_ext_n_ = (n), assert_ext_i_ = 0;                                             \
        while (assert_ext_i_ < assert_ext_n_ &&                                                    \
               assert_ext_a_[assert_ext_i_] == assert_ext_b_[assert_ext_i_])                       \
            assert_ext_i_++;                                                                       \
        if (assert_ext_i_ < assert_ext_n_) {                                                       \
            char assert_ext_qa_[200], assert_ext_qb_[200];                                         \
            size_t assert_ext_o_ = assert_ext_i_ > 8 ? assert_ext_i_ - 8 : 0;                      \
            print_error("assertion failed: %s == %s over %zu bytes; first difference at byte "     \
                        "%zu:\n  %s\n  %s\n",                                                      \
                        #a, #b, assert_ext_n_, assert_ext_i_,                                      \
                        assert_ext_quote(assert_ext_a_, assert_ext_n_, assert_ext_o_,              \
                                         assert_ext_qa_, sizeof assert_ext_qa_),                   \
                        assert_ext_quote(assert_ext_b_, assert_ext_n_, assert_ext_o_,              \
                                         assert_ext_qb_, sizeof assert_ext_qb_));                  \
            _fail(__FILE__, __LINE__);                                                             \
        }                                                                                          \
    } while (0)

#endif
