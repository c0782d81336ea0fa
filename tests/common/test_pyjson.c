/* Unit tests for src/common/pyjson: vectors from docs/protocol.md §3.13 and
 * §3.5, float repr, big ints, duplicates, depth, invalid inputs, equality. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "assert_ext.h"
#include "pyjson.h"

static const struct pyj_dump_opts IND4 = {4, false};
static const struct pyj_dump_opts IND4S = {4, true};
static const struct pyj_dump_opts DEF = {-1, false};

/* Parse `in`, dump with opts, compare with `want`. */
static void roundtrip(const char *in, const struct pyj_dump_opts *o, const char *want)
{
    struct pyj_value *v;
    char err[128];
    int rc = pyj_parse(in, strlen(in), &v, err, sizeof err);
    if (rc != 0) fail_msg("parse failed for %s: %s", in, err);
    struct sbuf b = SBUF_INIT;
    pyj_dump(v, o, &b);
    if (strcmp(sbuf_cstr(&b), want) != 0) fail_msg("in %s: got [%s] want [%s]", in, b.data, want);
    sbuf_free(&b);
    pyj_free(v);
}

static void rejects(const char *in, size_t len)
{
    struct pyj_value *v = (struct pyj_value *)1;
    char err[128];
    if (pyj_parse(in, len, &v, err, sizeof err) == 0)
        fail_msg("accepted invalid input [%.*s]", (int)len, in);
    assert_null(v);
    ASSERT_NE_INT(err[0], '\0');
}
#define REJECT(s) rejects(s, sizeof(s) - 1)

static void sha256_hex(const char *s, size_t n, char out[65])
{
    unsigned char h[32];
    unsigned hl;
    EVP_Digest(s, n, h, &hl, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", h[i]);
}

static const char *ENVELOPE_AUTH =
    "{\"url\": \"https://203.0.113.7:41234\", \"signature\": \"c2ln\", \"reqnum\": 1234,"
    " \"endpoint\": \"my-endpoint\", \"cost\": 256.0, \"request_idx\": 98765, "
    "\"__request_id\": \"x\"}";

static void test_vectors_g1_g2_g3(void **state)
{
    (void)state;
    struct pyj_value *v;
    assert_int_equal(pyj_parse(ENVELOPE_AUTH, strlen(ENVELOPE_AUTH), &v, NULL, 0), 0);
    char hx[65];
    struct sbuf b = SBUF_INIT;

    const char *g1keys[] = {"cost", "endpoint", "reqnum", "url"};
    pyj_dump_members(v, g1keys, 4, &IND4, &b);
    assert_string_equal(b.data,
                        "{\n    \"cost\": 256.0,\n    \"endpoint\": \"my-endpoint\",\n"
                        "    \"reqnum\": 1234,\n    \"url\": \"https://203.0.113.7:41234\"\n}");
    assert_int_equal(b.len, 112);
    sha256_hex(b.data, b.len, hx);
    assert_string_equal(hx, "7ab7e895ac9a48ac0d72e8498d23212a423d493e12ca34fb1ec2765a2f97f663");

    /* G2: all fields but signature, sorted (given in a scrambled order). */
    const char *g2keys[] = {"url", "request_idx", "reqnum", "endpoint", "cost", "url"};
    sbuf_reset(&b);
    pyj_dump_members(v, g2keys, 6, &IND4S, &b);
    assert_int_equal(b.len, 138);
    sha256_hex(b.data, b.len, hx);
    assert_string_equal(hx, "cc358264951341b0a7d72b677badad32e637d600bfff8f41c67c924214584e36");

    const char *g3keys[] = {"url", "missing-key"};
    sbuf_reset(&b);
    pyj_dump_members(v, g3keys, 2, &IND4S, &b);
    assert_string_equal(b.data, "{\n    \"url\": \"https://203.0.113.7:41234\"\n}");
    assert_int_equal(b.len, 42);
    sha256_hex(b.data, b.len, hx);
    assert_string_equal(hx, "454801132945a3342c59811ee8c85c11e130f69fdb02bf73e2d5222729b109f6");

    /* No member present: "{}". */
    const char *none[] = {"nope"};
    sbuf_reset(&b);
    pyj_dump_members(v, none, 1, &IND4S, &b);
    assert_string_equal(b.data, "{}");
    sbuf_free(&b);
    pyj_free(v);
}

static void test_escaping(void **state)
{
    (void)state;
    roundtrip("{\"s\": \"\\u0001\\u007f\\ud83d\\ude00\"}", &IND4,
              "{\n    \"s\": \"\\u0001\\u007f\\ud83d\\ude00\"\n}");
    /* Raw bytes U+007F and U+1F600 are escaped the same way; raw U+0001 is invalid. */
    roundtrip("{\"s\": \"\\u0001\x7f\xf0\x9f\x98\x80\"}", &IND4,
              "{\n    \"s\": \"\\u0001\\u007f\\ud83d\\ude00\"\n}");
}

static void test_escaping_raw(void **state)
{
    (void)state;
    roundtrip("[\"\x7f\xc3\xa9\xf0\x9f\x98\x80/\\/\\\"\\\\\\b\\f\\n\\r\\t\\u0000\"]", &DEF,
              "[\"\\u007f\\u00e9\\ud83d\\ude00//\\\"\\\\\\b\\f\\n\\r\\t\\u0000\"]");
    struct sbuf b = SBUF_INIT;
    pyj_write_string(&b,
                     "a\xff"
                     "b\xed\xa0\x80",
                     6); /* invalid byte, WTF-8 surrogate */
    assert_string_equal(b.data, "\"a\\ufffdb\\ud800\"");
    sbuf_free(&b);
}

static void test_floats(void **state)
{
    (void)state;
    static const char *cases[][2] = {
        {"0.1", "0.1"},
        {"1e-05", "1e-05"},
        {"0.0001", "0.0001"},
        {"1e+16", "1e+16"},
        {"1e16", "1e+16"},
        {"256.0", "256.0"},
        {"2.56e2", "256.0"},
        {"1000000000000000.0", "1000000000000000.0"},
        {"9999999999999998.0", "9999999999999998.0"},
        {"1.2345678901234568e+17", "1.2345678901234568e+17"},
        {"-0.0", "-0.0"},
        {"0.0", "0.0"},
        {"0E0", "0.0"},
        {"5e-324", "5e-324"},
        {"1.7976931348623157e+308", "1.7976931348623157e+308"},
        {"2.2250738585072014e-308", "2.2250738585072014e-308"},
        {"1e400", "Infinity"},
        {"-1e400", "-Infinity"},
        {"1e-400", "0.0"},
        {"0.30000000000000004", "0.30000000000000004"},
        {"123456789012345678", "123456789012345678"}, /* int stays int */
        {"1.5E+300", "1.5e+300"},
        {"NaN", "NaN"},
        {"Infinity", "Infinity"},
        {"-Infinity", "-Infinity"},
        {"9007199254740993.0", "9007199254740992.0"},
        {"0.000123", "0.000123"},
        {"1.0e-5", "1e-05"},
        {"123.456e-10", "1.23456e-08"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        roundtrip(cases[i][0], &DEF, cases[i][1]);
    char b[40];
    assert_int_equal(pyj_format_float(ldexp(1.0, -1022) * 0.5, b, sizeof b), 23);
    assert_string_equal(b, "1.1125369292536007e-308");
    pyj_format_float(ldexp(1.0, 60), b, sizeof b);
    assert_string_equal(b, "1.152921504606847e+18");
    pyj_format_float(-1.5, b, 4); /* truncates, still NUL-terminated */
    assert_string_equal(b, "-1.");
    struct sbuf out = SBUF_INIT;
    sbuf_puts(&out, "[");
    pyj_write_float(&out, 0.1);
    sbuf_puts(&out, ", ");
    pyj_write_float(&out, 2.0);
    assert_int_equal(out.len, strlen("[0.1, 2.0"));
    assert_memory_equal(out.data, "[0.1, 2.0", out.len);
    sbuf_free(&out);
}

static void test_ints(void **state)
{
    (void)state;
    roundtrip("12345678901234567890", &DEF, "12345678901234567890");
    roundtrip("-12345678901234567890123456789", &DEF, "-12345678901234567890123456789");
    roundtrip("-0", &DEF, "0");
    roundtrip("[0, -0, 256]", &DEF, "[0, 0, 256]");
    struct pyj_value *v;
    int64_t x;
    assert_int_equal(pyj_parse("9223372036854775807", 19, &v, NULL, 0), 0);
    assert_true(pyj_int64(v, &x));
    ASSERT_EQ_INT(x, INT64_MAX);
    pyj_free(v);
    assert_int_equal(pyj_parse("-9223372036854775808", 20, &v, NULL, 0), 0);
    assert_true(pyj_int64(v, &x));
    ASSERT_EQ_INT(x, INT64_MIN);
    pyj_free(v);
    assert_int_equal(pyj_parse("9223372036854775808", 19, &v, NULL, 0), 0);
    assert_false(pyj_int64(v, &x));
    double d;
    assert_true(pyj_number(v, &d));
    ASSERT_EQ_DBL(d, 9223372036854775808.0, 0);
    pyj_free(v);
    /* 4300 digits is Python 3.11's default limit; 4301 is rejected. */
    char big[4302];
    memset(big, '7', 4301);
    assert_int_equal(pyj_parse(big, 4300, &v, NULL, 0), 0);
    pyj_free(v);
    rejects(big, 4301);
    struct pyj_value *n = pyj_new_int(INT64_MIN);
    struct sbuf b = SBUF_INIT;
    pyj_dump(n, NULL, &b);
    assert_string_equal(b.data, "-9223372036854775808");
    sbuf_free(&b);
    pyj_free(n);
}

static void test_duplicates(void **state)
{
    (void)state;
    roundtrip("{\"a\": 1, \"b\": 2, \"a\": 3}", &DEF, "{\"a\": 3, \"b\": 2}");
    roundtrip("{\"b\": 1, \"a\": 2, \"b\": 3, \"a\": 4, \"b\": 5}", &DEF, "{\"b\": 5, \"a\": 4}");
    roundtrip("{\"a\": {\"x\": 1}, \"a\": []}", &DEF, "{\"a\": []}");
    /* Big object (sort-based dedup path): 40 keys, every key twice. */
    struct sbuf in = SBUF_INIT, want = SBUF_INIT;
    sbuf_putc(&in, '{');
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < 40; i++)
            sbuf_printf(&in, "%s\"k%d\": %d", (r || i) ? ", " : "", (i * 7) % 40, r * 100 + i);
    sbuf_putc(&in, '}');
    sbuf_putc(&want, '{');
    for (int i = 0; i < 40; i++)
        sbuf_printf(&want, "%s\"k%d\": %d", i ? ", " : "", (i * 7) % 40, 100 + i);
    sbuf_putc(&want, '}');
    roundtrip(in.data, &DEF, want.data);
    sbuf_free(&in);
    sbuf_free(&want);
    /* Keys with NUL bytes are distinct from their prefix. */
    roundtrip("{\"a\\u0000\": 1, \"a\": 2, \"a\\u0000\": 3}", &DEF, "{\"a\\u0000\": 3, \"a\": 2}");
}

static void test_layout(void **state)
{
    (void)state;
    roundtrip("{}", &IND4, "{}");
    roundtrip("[]", &IND4, "[]");
    roundtrip(
        "[[], {}, [1, [2]]]", &IND4,
        "[\n    [],\n    {},\n    [\n        1,\n        [\n            2\n        ]\n    ]\n]");
    struct pyj_dump_opts i0 = {0, false}, i2 = {2, true}, c = {PYJ_INDENT_COMPACT, true};
    struct pyj_dump_opts neg = {-7, false}; /* any other negative: json.dumps default */
    roundtrip("{\"a\":[1,{}]}", &neg, "{\"a\": [1, {}]}");
    roundtrip("{\"b\": [1, 2], \"a\": null}", &i0, "{\n\"b\": [\n1,\n2\n],\n\"a\": null\n}");
    roundtrip("{\"b\": [1, 2], \"a\": null}", &i2,
              "{\n  \"a\": null,\n  \"b\": [\n    1,\n    2\n  ]\n}");
    roundtrip(" {\"b\" : [true,false] ,\"a\":null}\n", &c, "{\"a\":null,\"b\":[true,false]}");
    roundtrip("{\"b\": {\"d\": 1, \"c\": 2}, \"\xc3\xa9\": 0, \"B\": 1, \"\": 2}", &IND4S,
              "{\n    \"\": 2,\n    \"B\": 1,\n    \"b\": {\n        \"c\": 2,\n        \"d\": 1\n"
              "    },\n    \"\\u00e9\": 0\n}");
    /* sort_keys by code point: U+FFFF < U+10000 (UTF-8 byte order agrees). */
    roundtrip("{\"\\ud800\\udc00\": 1, \"\\uffff\": 2, \"\\ud800\": 3}", &c,
              "{\"\\ud800\":3,\"\\uffff\":2,\"\\ud800\\udc00\":1}");
}

static void test_depth(void **state)
{
    (void)state;
    char buf[2 * (PYJ_MAX_DEPTH + 1) + 1];
    for (int i = 0; i < PYJ_MAX_DEPTH; i++) {
        buf[i] = '[';
        buf[PYJ_MAX_DEPTH + i] = ']';
    }
    struct pyj_value *v;
    assert_int_equal(pyj_parse(buf, 2 * PYJ_MAX_DEPTH, &v, NULL, 0), 0);
    pyj_free(v);
    for (int i = 0; i <= PYJ_MAX_DEPTH; i++) {
        buf[i] = i % 2 ? '[' : '[';
        buf[PYJ_MAX_DEPTH + 1 + i] = ']';
    }
    rejects(buf, 2 * (PYJ_MAX_DEPTH + 1));
    /* Objects count too. */
    struct sbuf s = SBUF_INIT;
    for (int i = 0; i <= PYJ_MAX_DEPTH; i++)
        sbuf_puts(&s, "{\"a\":");
    sbuf_puts(&s, "1");
    for (int i = 0; i <= PYJ_MAX_DEPTH; i++)
        sbuf_putc(&s, '}');
    rejects(s.data, s.len);
    sbuf_free(&s);
}

static void test_invalid(void **state)
{
    (void)state;
    REJECT("");
    REJECT("   ");
    REJECT("01");
    REJECT("-01");
    REJECT("1.");
    REJECT(".5");
    REJECT("1e");
    REJECT("+1");
    REJECT("-");
    REJECT("0x10");
    REJECT("'a'");
    REJECT("{'a': 1}");
    REJECT("[1,]");
    REJECT("{\"a\":1,}");
    REJECT("{\"a\" 1}");
    REJECT("{1: 2}");
    REJECT("[1 2]");
    REJECT("[1] x");
    REJECT("{} {}");
    REJECT("nul");
    REJECT("True");
    REJECT("nan");
    REJECT("-NaN");
    REJECT("infinity");
    REJECT("\"abc");
    REJECT("\"a\tb\"");
    REJECT("\"a\nb\"");
    REJECT("\"\\x41\"");
    REJECT("\"\\u12G4\"");
    REJECT("\"\\u123\"");
    REJECT("\"\\ud800\\u12\"");
    REJECT("\"\\ud800\\uZZZZ\"");
    REJECT("\"\xff\"");
    REJECT("\"\xc0\x80\"");         /* overlong NUL */
    REJECT("\"\xed\xa0\x80\"");     /* raw UTF-8 surrogate */
    REJECT("\"\xf4\x90\x80\x80\""); /* > U+10FFFF */
    REJECT("\"\xe2\x82\"");         /* truncated */
    REJECT("\xef\xbb\xbf{}");       /* BOM: Python's json.loads(str) rejects it */
    REJECT("[\x0b]");               /* VT is not JSON whitespace */
    REJECT("\x00");
    rejects("[1]\x00", 4);
    /* Accepted edge cases. */
    roundtrip("\"\\ud800\"", &DEF, "\"\\ud800\"");
    roundtrip("\"\\udc00\\ud800\"", &DEF, "\"\\udc00\\ud800\"");
    roundtrip("\"\\ud800\\u0041\"", &DEF, "\"\\ud800A\"");
    roundtrip("\"\\uD83D\\uDE00\"", &DEF, "\"\\ud83d\\ude00\"");
    roundtrip("\"\x7f\"", &DEF, "\"\\u007f\"");
    roundtrip(" \t\r\n[ 1 , 2 ] \t\r\n", &DEF, "[1, 2]");
    char err[8];
    struct pyj_value *v;
    assert_int_equal(pyj_parse("[", 1, &v, err, sizeof err), -1); /* short err buffer */
    assert_int_equal(strlen(err), 7);
}

static struct pyj_value *P(const char *s)
{
    struct pyj_value *v;
    if (pyj_parse(s, strlen(s), &v, NULL, 0) != 0) fail_msg("parse %s", s);
    return v;
}

static void eq(const char *a, const char *b, bool want)
{
    struct pyj_value *x = P(a), *y = P(b);
    if (pyj_equal(x, y) != want || pyj_equal(y, x) != want)
        fail_msg("%s == %s should be %d", a, b, want);
    pyj_free(x);
    pyj_free(y);
}

static void test_equal(void **state)
{
    (void)state;
    eq("1", "1.0", true);
    eq("true", "1", true);
    eq("true", "1.0", true);
    eq("false", "0", true);
    eq("false", "-0.0", true);
    eq("true", "false", false);
    eq("null", "0", false);
    eq("null", "null", true);
    eq("\"1\"", "1", false);
    eq("9007199254740993", "9007199254740992.0", false); /* exact int/float compare */
    eq("9007199254740992", "9007199254740992.0", true);
    eq("100000000000000000000", "1e20", true);
    eq("NaN", "NaN", false);
    eq("[NaN]", "[NaN]", true); /* json.loads shares one NaN object */
    eq("{\"a\": NaN}", "{\"a\": NaN}", true);
    eq("[NaN]", "[1]", false);
    eq("Infinity", "1e999", true);
    eq("{\"a\": 1, \"b\": [1, 2]}", "{\"b\": [1.0, 2], \"a\": true}", true);
    eq("{\"a\": 1}", "{\"a\": 1, \"b\": 2}", false);
    eq("{\"a\": 1}", "{\"b\": 1}", false);
    eq("[1, 2]", "[2, 1]", false);
    eq("[]", "{}", false);
    eq("\"a\\u0000b\"", "\"a\\u0000c\"", false);
    /* Top-level NaN is unequal even to itself (float ==); inside a container it is equal. */
    struct pyj_value *n = P("[NaN]");
    assert_true(pyj_equal(n, n));
    assert_false(pyj_equal(n->u.arr.items[0], n->u.arr.items[0]));
    pyj_free(n);
}

static void test_build_clone(void **state)
{
    (void)state;
    struct pyj_value *o = pyj_new_object();
    pyj_object_set(o, "z", pyj_new_int(-5));
    pyj_object_set(o, "a", pyj_new_float(0.5));
    pyj_object_set(o, "z", pyj_new_string("x\0y", 3)); /* replaced in place */
    struct pyj_value *arr = pyj_new_array();
    pyj_array_push(arr, pyj_new_null());
    pyj_array_push(arr, pyj_new_bool(true));
    pyj_array_push(arr, pyj_new_bool(false));
    pyj_array_push(arr, pyj_new_int_text("-0"));
    pyj_array_push(arr, pyj_new_int_text("123456789012345678901234567890"));
    for (int i = 0; i < 10; i++)
        pyj_array_push(arr, pyj_new_object());
    pyj_object_set(o, "arr", arr);
    struct sbuf b = SBUF_INIT;
    pyj_dump(o, NULL, &b);
    assert_string_equal(b.data,
                        "{\"z\": \"x\\u0000y\", \"a\": 0.5, \"arr\": [null, true, false, 0, "
                        "123456789012345678901234567890, {}, {}, {}, {}, {}, {}, {}, {}, "
                        "{}, {}]}");
    struct pyj_value *c = pyj_clone(o);
    assert_true(pyj_equal(o, c));
    struct sbuf b2 = SBUF_INIT;
    pyj_dump(c, NULL, &b2);
    assert_string_equal(b.data, b2.data);
    pyj_object_set(c, "a", pyj_new_float(0.25));
    assert_false(pyj_equal(o, c));
    const struct pyj_value *z = pyj_get(o, "z");
    assert_non_null(z);
    assert_int_equal(z->type, PYJ_STRING);
    assert_int_equal(z->u.str.len, 3);
    assert_null(pyj_get(o, "missing"));
    assert_null(pyj_get(arr, "z"));
    double d;
    assert_false(pyj_number(z, &d));
    assert_true(pyj_number(pyj_get(o, "a"), &d));
    ASSERT_EQ_DBL(d, 0.5, 0);
    sbuf_free(&b);
    sbuf_free(&b2);
    pyj_free(o);
    pyj_free(c);
    pyj_free(NULL);
    assert_null(pyj_clone(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors_g1_g2_g3),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_escaping_raw),
        cmocka_unit_test(test_floats),
        cmocka_unit_test(test_ints),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_equal),
        cmocka_unit_test(test_build_clone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
