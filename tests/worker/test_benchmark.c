/* Unit tests for src/worker/benchmark.c: benchmark_size, the worker's own LM benchmark shrunk
 * to a model's published context (docs/worker.md Lifecycle, "Benchmark"; the prompt is at most
 * 8 tokens per filler word, so prompt + generation must fit for any vocabulary), and the
 * benchmark cache file (benchmark_cache_read / benchmark_cache_write). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "../common/assert_ext.h"
#include "worker/benchmark.h"
#include "worker/handlers.h"

/* worst case tokens of the prompt: 8 per word plus BOS and a template's few */
static int worst(int words)
{
    return 8 * words + 8;
}

static void test_default_fits_a_large_context(void **st)
{
    (void)st;
    int words = BENCH_WORDS, mn = BENCH_TGI_NEW;
    benchmark_size(32768, 0, &words, &mn);
    assert_int_equal(words, BENCH_WORDS); /* never grown */
    assert_int_equal(mn, BENCH_TGI_NEW);
}

static void test_shrunk_to_small_contexts(void **st)
{
    (void)st;
    static const int totals[] = {2048, 1024, 512, 256, 128, 64, 32};
    for (size_t i = 0; i < sizeof totals / sizeof totals[0]; i++) {
        int words = BENCH_WORDS, mn = BENCH_OPENAI_NEW;
        benchmark_size(totals[i], 0, &words, &mn);
        ASSERT_GE_INT(words, 1);
        ASSERT_GE_INT(mn, 1);
        ASSERT_LE_INT(mn, totals[i] / 4);
        ASSERT_LE_INT(worst(words) + mn, totals[i]);
    }
}

static void test_input_cap_applies(void **st)
{
    (void)st;
    int words = BENCH_WORDS, mn = BENCH_TGI_NEW;
    benchmark_size(4096, 400, &words, &mn); /* TGI max_input_tokens below the context */
    ASSERT_LE_INT(worst(words), 400);
    assert_int_equal(mn, BENCH_TGI_NEW);
}

static void test_unknown_limits_change_nothing(void **st)
{
    (void)st;
    int words = BENCH_WORDS, mn = BENCH_TGI_NEW;
    benchmark_size(0, 0, &words, &mn);
    assert_int_equal(words, BENCH_WORDS);
    assert_int_equal(mn, BENCH_TGI_NEW);
}

static void test_benchmark_cache(void **state)
{
    char path[] = "/tmp/sgpu-bench-unit-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE_INT(fd, 0);
    close(fd);
    double p;
    assert_int_equal(benchmark_cache_write(path, 1234.5), 0);
    assert_int_equal(benchmark_cache_read(path, &p), 0);
    ASSERT_EQ_DBL(p, 1234.5, 0);
    const char *bad[] = {"", "0", "0.0", "-1", "nan", "inf", "12abc", "1e999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(bad[i], f);
        fclose(f);
        assert_int_equal(benchmark_cache_read(path, &p), -1);
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("256.0\n", f);
    fclose(f);
    assert_int_equal(benchmark_cache_read(path, &p), 0);
    ASSERT_EQ_DBL(p, 256.0, 0);
    unlink(path);
    assert_int_equal(benchmark_cache_read(path, &p), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_fits_a_large_context),
        cmocka_unit_test(test_shrunk_to_small_contexts),
        cmocka_unit_test(test_input_cap_applies),
        cmocka_unit_test(test_unknown_limits_change_nothing),
        cmocka_unit_test(test_benchmark_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
