/* Unit tests for src/common/b64: RFC 4648 vectors and the Python-lenient
 * decoder's padding rules (expected values from Python 3.11 base64.b64decode). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "b64.h"

static void test_encode(void **state)
{
    (void)state;
    static const char *v[][2] = {{"", ""},
                                 {"f", "Zg=="},
                                 {"fo", "Zm8="},
                                 {"foo", "Zm9v"},
                                 {"foob", "Zm9vYg=="},
                                 {"fooba", "Zm9vYmE="},
                                 {"foobar", "Zm9vYmFy"}};
    char out[16];
    for (size_t i = 0; i < 7; i++) {
        size_t n = strlen(v[i][0]);
        assert_int_equal(b64_encoded_len(n), strlen(v[i][1]));
        assert_int_equal(b64_encode((const uint8_t *)v[i][0], n, out), strlen(v[i][1]));
        assert_string_equal(out, v[i][1]);
    }
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    char enc[400];
    uint8_t dec[300];
    size_t dl;
    b64_encode(all, 256, enc);
    assert_int_equal(b64_decode_lenient(enc, strlen(enc), dec, sizeof dec, &dl), 0);
    assert_int_equal(dl, 256);
    assert_memory_equal(dec, all, 256);
}

/* want == NULL: must be rejected. */
static void dec(const char *in, const char *want)
{
    uint8_t out[64];
    size_t n = 0;
    int rc = b64_decode_lenient(in, strlen(in), out, sizeof out, &n);
    if (!want) {
        if (rc == 0) fail_msg("[%s] accepted, want error", in);
        return;
    }
    if (rc != 0) fail_msg("[%s] rejected, want [%s]", in, want);
    if (n != strlen(want) || memcmp(out, want, n) != 0)
        fail_msg("[%s] -> [%.*s] want [%s]", in, (int)n, out, want);
}

static void test_decode_lenient(void **state)
{
    (void)state;
    dec("", "");
    dec("YWJj", "abc");
    dec("YQ==", "a");
    dec("YWI=", "ab");
    dec("YQ", NULL); /* Incorrect padding */
    dec("YQ=", NULL);
    dec("YWI", NULL);
    dec("Y", NULL); /* 1 more than a multiple of 4 */
    dec("YWJjZ", NULL);
    dec("YQ===", "a");    /* surplus '=' tolerated */
    dec("YQ==YQ==", "a"); /* decoding stops at the completing pad */
    dec("YQ==garbage!", "a");
    dec("=YQ==", "a"); /* '=' before 2 symbols is skipped */
    dec("Y=Q==", "a");
    dec("ab=c=", "i\xb7"); /* a pad that does not complete is forgotten */
    dec("YW=J=j", "ab");
    dec("Y W\nJ\tj", "abc"); /* whitespace discarded */
    dec("YW-J_j", "abc");    /* URL-safe chars discarded, not mapped */
    dec("!!!", "");
    dec("====", "");
    dec("YQ=\n=", "a");
    dec("YWJ\xc3\xa9j", NULL); /* non-ASCII str -> ValueError in Python */
    dec("YR==", "a");          /* non-zero leftover bits are accepted */
    /* Capacity is enforced. */
    uint8_t small[2];
    size_t n;
    assert_int_equal(b64_decode_lenient("YWJj", 4, small, sizeof small, &n), -1);
    assert_int_equal(b64_decode_lenient("YWI=", 4, small, sizeof small, &n), 0);
    assert_int_equal(n, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode),
        cmocka_unit_test(test_decode_lenient),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
