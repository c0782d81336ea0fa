/* Unit tests for src/common/jspan.c: the top-level member scanner the worker uses to forward
 * `payload` byte for byte.  Well-formed objects (nested brackets and quotes inside strings,
 * escaped keys, duplicate keys) and hostile ones: truncated at every byte, unterminated
 * strings and escapes, very deep nesting, embedded NUL bytes, text not NUL-terminated (the
 * buffers here are exactly `len` bytes on the heap, so ASan catches a read past the end). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "assert_ext.h"
#include "jspan.h"

static const char *const KEYS[] = {"payload", "auth_data"};

/* An exact-size heap copy of s[0..n) (no NUL after it). */
static char *dup_exact(const char *s, size_t n)
{
    char *p = malloc(n ? n : 1);
    assert_non_null(p);
    memcpy(p, s, n);
    return p;
}

static int scan(const char *s, size_t n, size_t nkeys, struct jspan *sp)
{
    char *p = dup_exact(s, n);
    int rc = jspan_members(p, n, KEYS, nkeys, sp);
    free(p);
    return rc;
}

static void test_jspan_members(void **state)
{
    struct jspan sp[2];
    const char *s = " { \"auth_data\" : {\"a\": \"}\\\"\"}, \"x\": [1, {\"payload\": 2}],"
                    " \"payload\" :\t[1, \"]\", {\"q\": null}] ,\"payload\": {\"k\": \"\\\\\"} } ";
    assert_int_equal(jspan_members(s, strlen(s), KEYS, 2, sp), 0);
    assert_true(sp[0].found);
    assert_true(sp[1].found);
    assert_int_equal(sp[0].len, strlen("{\"k\": \"\\\\\"}")); /* last occurrence wins */
    ASSERT_EQ_MEM(s + sp[0].off, "{\"k\": \"\\\\\"}", sp[0].len);
    ASSERT_EQ_MEM(s + sp[1].off, "{\"a\": \"}\\\"\"}", sp[1].len);
    const char *esc = "{\"payl\\u006fad\": 5}";
    assert_int_equal(jspan_members(esc, strlen(esc), KEYS, 1, sp), 0);
    assert_true(sp[0].found);
    ASSERT_EQ_INT(sp[0].len, 1);
    const char *bad[] = {
        "", "[]", "{", "{\"a\" 1}", "{\"a\": [1}", "{\"a\": \"x}", "{\"a\": 1,}", "{\"a\": 1 2}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(jspan_members(bad[i], strlen(bad[i]), KEYS, 1, sp), -1);
    assert_int_equal(jspan_members("{}", 2, KEYS, 1, sp), 0);
    assert_false(sp[0].found);
}

/* Scalars, strings with every escape, the value span excludes the surrounding whitespace. */
static void test_jspan_value_kinds(void **state)
{
    struct jspan sp[2];
    struct {
        const char *doc, *want;
    } cases[] = {
        {"{\"payload\":1}", "1"},
        {"{\"payload\" : -1.5e+3 }", "-1.5e+3"},
        {"{\"payload\":\ttrue\n}", "true"},
        {"{\"payload\": null, \"b\": 2}", "null"},
        {"{\"payload\": \"a\\\"b\\\\\\\\\"}", "\"a\\\"b\\\\\\\\\""},
        {"{\"payload\": \"\\\\\", \"auth_data\": 3}", "\"\\\\\""},
        {"{\"payload\": \"\\u00e9\\n\"}", "\"\\u00e9\\n\""},
        {"{\"payload\": [[], {}, [{}]]}", "[[], {}, [{}]]"},
        {"{\"payload\": {\"payload\": 1}}", "{\"payload\": 1}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(scan(cases[i].doc, strlen(cases[i].doc), 2, sp), 0);
        assert_true(sp[0].found);
        ASSERT_EQ_INT(sp[0].len, strlen(cases[i].want));
        ASSERT_EQ_MEM(cases[i].doc + sp[0].off, cases[i].want, sp[0].len);
    }
}

/* Keys compare exactly (no prefix match); escapes in keys are decoded, undecodable ones never
 * match and never read outside the key. */
static void test_jspan_keys(void **state)
{
    struct jspan sp[2];
    const char *miss[] = {
        "{\"payloadX\": 1}",      "{\"payloa\": 1}",         "{\"Payload\": 1}",
        "{\"payl\\u00zzad\": 1}", "{\"payloa\\u00\": 1}",    "{\"payloa\\u00e9\": 1}",
        "{\"pay\\nload\": 1}",    "{\"payload\\u0000\": 1}", "{\"\": 1}",
    };
    for (size_t i = 0; i < sizeof miss / sizeof miss[0]; i++) {
        assert_int_equal(scan(miss[i], strlen(miss[i]), 2, sp), 0);
        assert_false(sp[0].found);
        assert_false(sp[1].found);
    }
    const char *hit[] = {"{\"\\u0070ayload\": 1}", "{\"payloa\\u0064\": 1}", "{\"p\\ayload\": 1}",
                         "{\"\\u0070\\u0061\\u0079\\u006C\\u006F\\u0061\\u0064\": 1}"};
    for (size_t i = 0; i < sizeof hit / sizeof hit[0]; i++) {
        assert_int_equal(scan(hit[i], strlen(hit[i]), 2, sp), 0);
        assert_true(sp[0].found);
        ASSERT_EQ_INT(sp[0].len, 1);
    }
}

/* Every proper prefix of a valid object is rejected, and scanning it never reads past len. */
static void test_jspan_truncated_everywhere(void **state)
{
    const char *doc = "{\"auth_data\": {\"sig\": \"a\\\\\\\"b\"}, \"payload\": [1, \"}\", "
                      "{\"k\": [true, null]}], \"n\": -2.5}";
    size_t n = strlen(doc);
    struct jspan sp[2];
    assert_int_equal(scan(doc, n, 2, sp), 0);
    assert_true(sp[0].found);
    assert_true(sp[1].found);
    for (size_t cut = 0; cut < n; cut++)
        assert_int_equal(scan(doc, cut, 2, sp), -1);
}

/* Bracket depth is a counter, not recursion: 200000 levels scan fine, unbalanced ones fail. */
static void test_jspan_deep_nesting(void **state)
{
    enum { DEPTH = 200000 };
    const char *head = "{\"payload\": ";
    size_t hl = strlen(head), n = hl + 2 * DEPTH + 1;
    char *doc = malloc(n);
    assert_non_null(doc);
    memcpy(doc, head, hl);
    memset(doc + hl, '[', DEPTH);
    memset(doc + hl + DEPTH, ']', DEPTH);
    doc[n - 1] = '}';
    struct jspan sp[2];
    assert_int_equal(jspan_members(doc, n, KEYS, 1, sp), 0);
    assert_true(sp[0].found);
    ASSERT_EQ_INT(sp[0].off, hl);
    ASSERT_EQ_INT(sp[0].len, 2 * DEPTH);
    /* one closing bracket short: the object never closes */
    doc[n - 2] = '}';
    assert_int_equal(jspan_members(doc, n - 1, KEYS, 1, sp), -1);
    free(doc);
}

/* Length, not NUL, ends the text: a NUL inside a string is a byte like any other, and bytes
 * after len are never looked at. */
static void test_jspan_embedded_nul(void **state)
{
    static const char doc[] = "{\"payload\": \"a\0b\", \"auth_data\": 7}GARBAGE";
    size_t n = sizeof doc - 1 - strlen("GARBAGE");
    struct jspan sp[2];
    assert_int_equal(scan(doc, n, 2, sp), 0);
    assert_true(sp[0].found);
    ASSERT_EQ_INT(sp[0].len, 5);
    ASSERT_EQ_MEM(doc + sp[0].off, "\"a\0b\"", 5);
    assert_true(sp[1].found);
    ASSERT_EQ_MEM(doc + sp[1].off, "7", 1);
}

/* Hostile shapes: stray closers, a lone quote, keys that are not strings, huge scalars. */
static void test_jspan_hostile(void **state)
{
    struct jspan sp[2];
    const char *bad[] = {
        "{\"payload\": ]}",
        "{\"payload\": }",
        "{\"payload\"}",
        "{\"payload\":",
        "{\"",
        "{\"\\",
        "{\"a\\\": 1}",
        "{payload: 1}",
        "{1: 2}",
        "{\"a\": \"\\\\\\\"}",
        "{,}",
        "   ",
        "\"payload\"",
        "{\"a\": 1 \"b\": 2}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(scan(bad[i], strlen(bad[i]), 2, sp), -1);
    /* the object ends at its closing brace: what follows is not read */
    assert_int_equal(scan("{\"a\": 1}}", 9, 2, sp), 0);
    /* a 1 MiB number is one value span */
    size_t big = 1 << 20;
    char *doc = malloc(big + 13);
    assert_non_null(doc);
    memcpy(doc, "{\"payload\":", 11);
    memset(doc + 11, '9', big);
    doc[11 + big] = '}';
    assert_int_equal(jspan_members(doc, big + 12, KEYS, 2, sp), 0);
    assert_true(sp[0].found);
    ASSERT_EQ_INT(sp[0].len, big);
    assert_false(sp[1].found);
    free(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jspan_members),
        cmocka_unit_test(test_jspan_value_kinds),
        cmocka_unit_test(test_jspan_keys),
        cmocka_unit_test(test_jspan_truncated_everywhere),
        cmocka_unit_test(test_jspan_deep_nesting),
        cmocka_unit_test(test_jspan_embedded_nul),
        cmocka_unit_test(test_jspan_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
