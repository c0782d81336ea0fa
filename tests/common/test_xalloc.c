/* Unit tests for src/common/xalloc.c: the wrappers return usable, terminated copies, and a
 * request that cannot be met (size overflow, a constructor's NULL) aborts with a message naming
 * the caller instead of returning NULL.  The aborting cases run in a forked child. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "assert_ext.h"
#include "xalloc.h"

static void test_xalloc_copies(void **state)
{
    char *s = xstrdup("grant");
    ASSERT_EQ_STR(s, "grant");
    free(s);
    char *m = xmemdup("a\0b", 3);
    ASSERT_EQ_MEM(m, "a\0b", 3);
    ASSERT_EQ_INT(m[3], 0);
    free(m);
    int *v = xcalloc(16, sizeof *v);
    for (int i = 0; i < 16; i++)
        ASSERT_EQ_INT(v[i], 0);
    v = xreallocarray(v, 1024, sizeof *v);
    v[1023] = 7;
    ASSERT_EQ_INT(v[1023], 7);
    free(v);
    void *z = xmalloc(0); /* a zero-byte request still gives a pointer to free */
    assert_non_null(z);
    free(z);
}

/* Runs fn in a child with stderr into a pipe; returns what it wrote (first 511 bytes) and
 * expects it to die of SIGABRT. */
static void expect_abort(void (*fn)(void), char *msg, size_t n)
{
    int fds[2];
    ASSERT_EQ_INT(pipe(fds), 0);
    pid_t pid = fork();
    ASSERT_GE_INT(pid, 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        fn();
        _exit(0); /* not reached when fn aborts */
    }
    close(fds[1]);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < n && (r = read(fds[0], msg + got, n - 1 - got)) > 0)
        got += (size_t)r;
    msg[got] = 0;
    close(fds[0]);
    int st = 0;
    ASSERT_EQ_INT(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st));
    ASSERT_EQ_INT(WTERMSIG(st), SIGABRT);
}

static void calloc_overflow(void)
{
    void *p = xcalloc(SIZE_MAX / 2, 4);
    free(p);
}

static void nonnull_null(void)
{
    void *none = NULL;
    (void)xnonnull(none);
}

static void test_xalloc_aborts_with_the_caller(void **state)
{
    char msg[512];
    expect_abort(calloc_overflow, msg, sizeof msg);
    assert_non_null(strstr(msg, "fatal: out of memory"));
    assert_non_null(strstr(msg, "test_xalloc.c:"));
    expect_abort(nonnull_null, msg, sizeof msg);
    assert_non_null(strstr(msg, "none returned NULL"));
    assert_non_null(strstr(msg, "test_xalloc.c:"));
}

static void test_xnonnull_passes_through(void **state)
{
    int x = 5;
    int *p = xnonnull(&x);
    ASSERT_EQ_INT(*p, 5);
    assert_ptr_equal(p, &x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xalloc_copies),
        cmocka_unit_test(test_xalloc_aborts_with_the_caller),
        cmocka_unit_test(test_xnonnull_passes_through),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
