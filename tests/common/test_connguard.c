/* Unit tests for the framing checker of src/common/connguard: what evhttp is
 * handed for valid, chunked, pipelined and hostile request streams, delivered
 * in one read and one byte at a time (connguard_framing_run). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "assert_ext.h"
#include "connguard.h"

#define MAXB 4096

/* Runs `in` in one read and byte by byte; both must give the same output. */
static char *run(const char *in, struct connguard_framing_result *r)
{
    size_t n1, n2;
    struct connguard_framing_result r2;
    char *a = connguard_framing_run(in, strlen(in), 0, MAXB, &n1, r);
    char *b = connguard_framing_run(in, strlen(in), 1, MAXB, &n2, &r2);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(n1, n2);
    assert_memory_equal(a, b, n1);
    assert_int_equal(r->rejected, r2.rejected);
    assert_int_equal(r->complete, r2.complete);
    free(b);
    return a;
}

static void test_plain_requests_pass_unchanged(void **state)
{
    (void)state;
    static const char *ok[] = {
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        "POST /a HTTP/1.1\nContent-Length: 5\n\nhello", /* bare LF, as evhttp accepts */
        "POST /a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        "POST /a HTTP/1.1\r\ncontent-length:   3  \r\n\r\nabc",
        "HEAD / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", /* no body for HEAD */
        "POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /b HTTP/1.1\r\n\r\n",
    };
    static const int complete[] = {1, 1, 1, 1, 1, 1, 2};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        struct connguard_framing_result r;
        char *out = run(ok[i], &r);
        assert_string_equal(out, ok[i]);
        assert_int_equal(r.rejected, 0);
        assert_int_equal(r.complete, complete[i]);
        free(out);
    }
}

static void test_chunked_is_dechunked(void **state)
{
    (void)state;
    struct connguard_framing_result r;
    char *out = run("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-B: 1\r\n\r\n"
                    "5;ext=1\r\nhello\r\n"
                    "6 ; a=\"q;\\\"x\" ;b\r\n world\r\n"
                    "0\r\nX-Trailer: 1\r\n\r\n"
                    "GET /next HTTP/1.1\r\n\r\n",
                    &r);
    assert_string_equal(out, "POST /a HTTP/1.1\r\nHost: x\r\nX-B: 1\r\nContent-Length: 11\r\n\r\n"
                             "hello world"
                             "GET /next HTTP/1.1\r\n\r\n");
    assert_int_equal(r.rejected, 0);
    assert_int_equal(r.complete, 2);
    free(out);
    out = run("POST /a HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n", &r);
    assert_string_equal(out, "POST /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    free(out);
}

static void test_hostile_framing_rejected(void **state)
{
    (void)state;
    static const char *bad[] = {
        "POST /a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "POST /a HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "POST /a HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
        "POST /a HTTP/1.1\r\nContent-Length: -5\r\n\r\nhello",
        "POST /a HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello",
        "POST /a HTTP/1.1\r\nContent-Length: 0x5\r\n\r\nhello",
        "POST /a HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "POST /a HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST /a HTTP/1.1\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n",
        "POST /a HTTP/1.1\r\nBad Name: 1\r\n\r\n",
        "POST /a HTTP/1.1\r\n: empty\r\n\r\n",
        "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n0\r\n\r\n",
        "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5 x\r\nhello\r\n0\r\n\r\n",
        "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1234567890abcdef0\r\n",
        "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct connguard_framing_result r;
        char *out = run(bad[i], &r);
        assert_int_equal(r.rejected, 1);
        size_t n = strlen(out);
        ASSERT_GE_INT(n, 3);
        assert_string_equal(out + n - 3, "x\r\n"); /* evhttp answers 400 */
        assert_null(strstr(out, "Transfer-Encoding"));
        free(out);
    }
}

static void test_dechunked_over_limit(void **state)
{
    (void)state;
    struct connguard_framing_result r;
    char *out = run("POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "800\r\n",
                    &r); /* 2048 bytes announced: under MAXB */
    assert_int_equal(r.too_large, 0);
    free(out);
    out = run("POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1001\r\n", &r);
    assert_int_equal(r.too_large, 1);
    assert_string_equal(out, "POST /a HTTP/1.1\r\nContent-Length: 4097\r\n\r\n");
    free(out);
}

static void test_long_lines(void **state)
{
    (void)state;
    /* a long header value of an unimportant header passes; a long Content-Length fails */
    char req[2000];
    char pad[1201];
    memset(pad, 'a', 1200);
    pad[1200] = '\0';
    snprintf(req, sizeof req, "GET / HTTP/1.1\r\nX-Long: %s\r\n\r\n", pad);
    struct connguard_framing_result r;
    char *out = run(req, &r);
    assert_string_equal(out, req);
    assert_int_equal(r.rejected, 0);
    free(out);
    snprintf(req, sizeof req, "GET / HTTP/1.1\r\nContent-Length: %s\r\n\r\n", pad);
    out = run(req, &r);
    assert_int_equal(r.rejected, 1);
    free(out);
    /* a Content-Length line of exactly 257 bytes before a bare LF: never read short */
    memset(pad, '0', 241);
    pad[241] = '\0';
    snprintf(req, sizeof req, "POST / HTTP/1.1\nContent-Length:%s5\n\nhello", pad);
    out = run(req, &r);
    assert_int_equal(r.rejected, 1);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_requests_pass_unchanged),
        cmocka_unit_test(test_chunked_is_dechunked),
        cmocka_unit_test(test_hostile_framing_rejected),
        cmocka_unit_test(test_dechunked_over_limit),
        cmocka_unit_test(test_long_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
