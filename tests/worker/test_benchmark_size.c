/* Unit tests for benchmark_size: the worker's own LM benchmark shrunk to a model's published
 * context (docs/worker.md Lifecycle, "Benchmark").  The prompt is at most 8 tokens per filler
 * word, so prompt + generation must fit for any vocabulary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "worker/worker.h"

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
        assert_true(words >= 1 && mn >= 1);
        assert_true(mn <= totals[i] / 4);
        assert_true(worst(words) + mn <= totals[i]);
    }
}

static void test_input_cap_applies(void **st)
{
    (void)st;
    int words = BENCH_WORDS, mn = BENCH_TGI_NEW;
    benchmark_size(4096, 400, &words, &mn); /* TGI max_input_tokens below the context */
    assert_true(worst(words) <= 400);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_fits_a_large_context),
        cmocka_unit_test(test_shrunk_to_small_contexts),
        cmocka_unit_test(test_input_cap_applies),
        cmocka_unit_test(test_unknown_limits_change_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
