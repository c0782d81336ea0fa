/* Unit tests for src/common/clock.c: the monotonic clock never goes back, the wall clock is the
 * system's, timeval conversion rounds down and clamps what a timer must never get. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <time.h>

#include <cmocka.h>

#include "assert_ext.h"
#include "clock.h"

static void test_clock_mono_never_goes_back(void **state)
{
    double prev = clock_mono();
    ASSERT_GT_DBL(prev, 0);
    for (int i = 0; i < 10000; i++) {
        double t = clock_mono();
        ASSERT_GE_DBL(t, prev);
        prev = t;
    }
}

static void test_clock_wall_is_the_system_time(void **state)
{
    time_t before = time(NULL);
    double w = clock_wall();
    time_t after = time(NULL);
    ASSERT_GE_DBL(w, (double)before);
    ASSERT_LE_DBL(w, (double)after + 1);
}

static void test_clock_tv(void **state)
{
    struct timeval tv = clock_tv(2.5);
    ASSERT_EQ_INT(tv.tv_sec, 2);
    ASSERT_EQ_INT(tv.tv_usec, 500000);
    tv = clock_tv(0.000001);
    ASSERT_EQ_INT(tv.tv_sec, 0);
    ASSERT_LE_INT(tv.tv_usec, 1);
    tv = clock_tv(-3);
    ASSERT_EQ_INT(tv.tv_sec, 0);
    ASSERT_EQ_INT(tv.tv_usec, 0);
    tv = clock_tv(NAN);
    ASSERT_EQ_INT(tv.tv_sec, 0);
    tv = clock_tv(INFINITY);
    ASSERT_EQ_INT(tv.tv_sec, 0);
    tv = clock_tv(1e300);
    ASSERT_EQ_INT(tv.tv_sec, 1000000000);
    ASSERT_LT_INT(tv.tv_usec, 1000000);
    tv = clock_tv(1.9999999999);
    ASSERT_LT_INT(tv.tv_usec, 1000000);
    tv = clock_tv_ms(1234);
    ASSERT_EQ_INT(tv.tv_sec, 1);
    ASSERT_EQ_INT(tv.tv_usec, 234000);
    tv = clock_tv_ms(-5);
    ASSERT_EQ_INT(tv.tv_sec, 0);
    ASSERT_EQ_INT(tv.tv_usec, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clock_mono_never_goes_back),
        cmocka_unit_test(test_clock_wall_is_the_system_time),
        cmocka_unit_test(test_clock_tv),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
