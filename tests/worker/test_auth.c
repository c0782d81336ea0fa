/* Unit tests for src/worker/auth.c: the signed message of each grant scheme (fields-v1,
 * fields-v2, url), checked by length and SHA-256 against fixed vectors of the Vast wire
 * protocol (docs/protocol.md). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/sha.h>

#include "worker/auth.h"

static void sha_hex(const struct sbuf *b, char out[65])
{
    unsigned char d[32];
    SHA256((const unsigned char *)b->data, b->len, d);
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void test_auth_messages(void **state)
{
    const char *doc =
        "{\"signature\": \"x\", \"url\": \"https://203.0.113.7:41234\", \"request_idx\": "
        "98765, \"reqnum\": 1234, \"endpoint\": \"my-endpoint\", \"cost\": 256.0, "
        "\"__request_id\": \"z\"}";
    struct pyj_value *v = NULL;
    char err[64];
    assert_int_equal(pyj_parse(doc, strlen(doc), &v, err, sizeof err), 0);
    struct {
        enum auth_scheme s;
        size_t len;
        const char *sha;
    } cases[] = {
        {AUTH_FIELDS_V1, 112, "7ab7e895ac9a48ac0d72e8498d23212a423d493e12ca34fb1ec2765a2f97f663"},
        {AUTH_FIELDS_V2, 138, "cc358264951341b0a7d72b677badad32e637d600bfff8f41c67c924214584e36"},
        {AUTH_URL, 42, "454801132945a3342c59811ee8c85c11e130f69fdb02bf73e2d5222729b109f6"},
    };
    for (size_t i = 0; i < 3; i++) {
        struct sbuf b = SBUF_INIT;
        auth_message(cases[i].s, v, &b);
        assert_int_equal(b.len, cases[i].len);
        char hex[65];
        sha_hex(&b, hex);
        assert_string_equal(hex, cases[i].sha);
        sbuf_free(&b);
    }
    pyj_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auth_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
