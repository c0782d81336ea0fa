/* Sampler additions: top-N logprobs, single-id logprob, frequency/presence
 * penalties on generated ids, and locally typical sampling (typical_p) on a
 * distribution whose typical set is worked out by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../common/assert_ext.h"
#include "model/sampler.h"

static double logz_of(const float *l, int n)
{
    double z = 0;
    for (int i = 0; i < n; i++)
        z += exp(l[i]);
    return log(z);
}

static void test_top_and_logprob(void **st)
{
    (void)st;
    float l[] = {1, 3, 3, 0, 2};
    int ids[5];
    float lp[5];
    assert_int_equal(sampler_top(l, 5, 3, ids, lp), 3);
    assert_int_equal(ids[0], 1); /* ties: lower id first */
    assert_int_equal(ids[1], 2);
    assert_int_equal(ids[2], 4);
    double lz = logz_of(l, 5);
    ASSERT_LT_DBL(fabs(lp[0] - (3 - lz)), 1e-6);
    ASSERT_LT_DBL(fabs(lp[2] - (2 - lz)), 1e-6);
    ASSERT_LT_DBL(fabs(sampler_logprob(l, 5, 3) - (0 - lz)), 1e-6);
    assert_int_equal(sampler_top(l, 5, 9, ids, lp), 5); /* k capped at n */
    assert_int_equal(ids[4], 3);
}

static int greedy_pick(const struct sampler_extra *x, const int *ctx, int n_ctx)
{
    struct sampler_params p = {false, 1, 0, 1, 1, 0};
    struct sampler s;
    assert_int_equal(sampler_init(&s, &p, 3), 0);
    assert_int_equal(sampler_set_extra(&s, x), 0);
    float l[] = {2.0f, 1.9f, 0.0f};
    int id = sampler_next(&s, l, ctx, n_ctx, NULL);
    sampler_free(&s);
    return id;
}

static void test_penalties(void **st)
{
    (void)st;
    int ctx[] = {0, 0, 0}; /* two prompt tokens, one generated */
    struct sampler_extra none = {0}, freq = {0.5f, 0, 2, 0}, pres = {0, 0.2f, 2, 0},
                         prompt_only = {0.5f, 0.5f, 3, 0}, neg = {-1, 0, 2, 0};
    assert_int_equal(greedy_pick(&none, ctx, 3), 0);
    assert_int_equal(greedy_pick(&freq, ctx, 3), 1);        /* 2.0 - 1 x 0.5 < 1.9 */
    assert_int_equal(greedy_pick(&pres, ctx, 3), 1);        /* 2.0 - 0.2 < 1.9 */
    assert_int_equal(greedy_pick(&prompt_only, ctx, 3), 0); /* prompt ids are not counted */
    assert_int_equal(greedy_pick(&neg, ctx, 3), 0);
    /* the count matters: id 0 generated three times */
    int ctx2[] = {2, 0, 0, 0};
    struct sampler_extra f3 = {0.03f, 0, 1, 0}, f4 = {0.04f, 0, 1, 0};
    assert_int_equal(greedy_pick(&f3, ctx2, 4), 0); /* 2.0 - 0.09 > 1.9 */
    assert_int_equal(greedy_pick(&f4, ctx2, 4), 1); /* 2.0 - 0.12 < 1.9 */
}

static void test_typical(void **st)
{
    (void)st;
    /* p = .5 .2 .2 .1: H = 1.2206; |-log p - H| = .527 .389 .389 1.082, so the
     * typical order is 1, 2, 0, 3 with cumulative mass .2 .4 .9 1: mass .3
     * keeps {1, 2}; mass .95 keeps everything */
    const float l0[] = {logf(0.5f), logf(0.2f), logf(0.2f), logf(0.1f)};
    for (int which = 0; which < 2; which++) {
        int seen[4] = {0};
        for (uint64_t seed = 1; seed <= 400; seed++) {
            struct sampler_params p = {true, 1, 0, 1, 1, seed};
            struct sampler_extra x = {0, 0, 0, which ? 0.95f : 0.3f};
            struct sampler s;
            assert_int_equal(sampler_init(&s, &p, 4), 0);
            assert_int_equal(sampler_set_extra(&s, &x), 0);
            float l[4];
            memcpy(l, l0, sizeof l);
            seen[sampler_next(&s, l, NULL, 0, NULL)]++;
            sampler_free(&s);
        }
        if (!which) {
            assert_int_equal(seen[0] + seen[3], 0);
            ASSERT_GT_INT(seen[1], 100);
            ASSERT_GT_INT(seen[2], 100);
        } else {
            for (int i = 0; i < 4; i++)
                ASSERT_GT_INT(seen[i], 10);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_top_and_logprob),
        cmocka_unit_test(test_penalties),
        cmocka_unit_test(test_typical),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
