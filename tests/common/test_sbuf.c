/* Unit tests for src/common/sbuf.c: the growable, length-carrying, always NUL-terminated byte
 * buffer.  Appends of every kind, binary data with NUL bytes, printf past the 256-byte fast
 * path, reset keeping the allocation, steal handing the bytes over, an empty buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "assert_ext.h"
#include "sbuf.h"

static void test_sbuf_empty(void **state)
{
    struct sbuf b = SBUF_INIT;
    assert_null(b.data);
    ASSERT_EQ_INT(b.len, 0);
    ASSERT_EQ_STR(sbuf_cstr(&b), "");
    sbuf_reset(&b); /* on a never-allocated buffer: still empty, no allocation */
    assert_null(b.data);
    size_t n = 99;
    char *p = sbuf_steal(&b, &n);
    assert_non_null(p);
    ASSERT_EQ_INT(n, 0);
    ASSERT_EQ_STR(p, "");
    free(p);
    assert_null(b.data);
    sbuf_free(&b);
    sbuf_free(&b); /* twice is harmless */
}

static void test_sbuf_append_kinds(void **state)
{
    struct sbuf b = SBUF_INIT;
    sbuf_puts(&b, "ab");
    sbuf_putc(&b, 'c');
    sbuf_append(&b, "def", 2);
    sbuf_append(&b, NULL, 0);
    sbuf_printf(&b, "[%d|%s|%.2f]", -7, "x", 0.5);
    ASSERT_EQ_STR(sbuf_cstr(&b), "abcde[-7|x|0.50]");
    ASSERT_EQ_INT(b.len, strlen("abcde[-7|x|0.50]"));
    ASSERT_EQ_INT(b.data[b.len], '\0');
    ASSERT_GT_INT(b.cap, b.len);
    sbuf_free(&b);
    assert_null(b.data);
    ASSERT_EQ_INT(b.len, 0);
    ASSERT_EQ_INT(b.cap, 0);
}

/* Binary content: the length, not a NUL, says where the data ends. */
static void test_sbuf_binary(void **state)
{
    struct sbuf b = SBUF_INIT;
    static const char bin[] = {'a', '\0', 'b', '\xff', '\0'};
    sbuf_append(&b, bin, sizeof bin);
    sbuf_putc(&b, '\0');
    ASSERT_EQ_INT(b.len, sizeof bin + 1);
    ASSERT_EQ_MEM(b.data, bin, sizeof bin);
    ASSERT_EQ_INT(b.data[sizeof bin], '\0');
    ASSERT_EQ_INT(b.data[b.len], '\0');
    sbuf_free(&b);
}

/* Growth keeps every byte across many reallocations; reserve makes room up front. */
static void test_sbuf_growth(void **state)
{
    struct sbuf b = SBUF_INIT;
    for (int i = 0; i < 100000; i++)
        sbuf_putc(&b, (char)('a' + i % 26));
    ASSERT_EQ_INT(b.len, 100000);
    for (size_t i = 0; i < b.len; i++)
        if (b.data[i] != (char)('a' + i % 26)) ASSERT_EQ_INT(b.data[i], 'a' + i % 26);
    ASSERT_EQ_INT(b.data[b.len], '\0');
    sbuf_free(&b);

    sbuf_reserve(&b, 1000);
    ASSERT_GE_INT(b.cap, 1001);
    char *before = b.data;
    size_t cap = b.cap;
    sbuf_append(&b, "0123456789", 10);
    for (int i = 0; i < 99; i++)
        sbuf_append(&b, "0123456789", 10);
    assert_ptr_equal(b.data, before); /* 1000 bytes fitted in the reserved room */
    ASSERT_EQ_INT(b.cap, cap);
    ASSERT_EQ_INT(b.len, 1000);
    sbuf_free(&b);
}

/* printf output longer than the 256-byte stack buffer goes straight into the buffer. */
static void test_sbuf_printf_long(void **state)
{
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    struct sbuf b = SBUF_INIT;
    sbuf_puts(&b, "<");
    sbuf_printf(&b, "%s|%d", big, 42);
    sbuf_printf(&b, "%s", ""); /* empty output appends nothing */
    ASSERT_EQ_INT(b.len, 1 + 4999 + 3);
    ASSERT_EQ_INT(b.data[0], '<');
    ASSERT_EQ_MEM(b.data + 1, big, 4999);
    ASSERT_EQ_STR(b.data + 5000, "|42");
    /* exactly at the fast-path boundary: 255 and 256 characters */
    for (int n = 254; n <= 257; n++) {
        sbuf_reset(&b);
        sbuf_printf(&b, "%.*s", n, big);
        ASSERT_EQ_INT(b.len, n);
        ASSERT_EQ_INT(b.data[n], '\0');
    }
    sbuf_free(&b);
}

static void test_sbuf_reset_and_steal(void **state)
{
    struct sbuf b = SBUF_INIT;
    sbuf_puts(&b, "hello");
    char *data = b.data;
    size_t cap = b.cap;
    sbuf_reset(&b);
    ASSERT_EQ_INT(b.len, 0);
    ASSERT_EQ_STR(sbuf_cstr(&b), "");
    assert_ptr_equal(b.data, data); /* allocation kept */
    ASSERT_EQ_INT(b.cap, cap);
    sbuf_puts(&b, "bye");
    size_t n = 0;
    char *p = sbuf_steal(&b, &n);
    ASSERT_EQ_INT(n, 3);
    ASSERT_EQ_STR(p, "bye");
    assert_null(b.data);
    ASSERT_EQ_INT(b.len, 0);
    ASSERT_EQ_INT(b.cap, 0);
    sbuf_puts(&b, "again"); /* the buffer is usable after a steal */
    ASSERT_EQ_STR(sbuf_cstr(&b), "again");
    char *q = sbuf_steal(&b, NULL);
    ASSERT_EQ_STR(q, "again");
    free(p);
    free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sbuf_empty),       cmocka_unit_test(test_sbuf_append_kinds),
        cmocka_unit_test(test_sbuf_binary),      cmocka_unit_test(test_sbuf_growth),
        cmocka_unit_test(test_sbuf_printf_long), cmocka_unit_test(test_sbuf_reset_and_steal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
