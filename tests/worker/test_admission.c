/* Unit tests for src/worker/admission.c: wire_cap, the clamp every number from the wire goes
 * through before it can enter a counter or a report (issue 8). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../common/assert_ext.h"
#include "worker/admission.h"

static void test_wire_cap(void **state)
{
    struct worker w;
    memset(&w, 0, sizeof w);
    double capped = 0;
    w.m_workload_capped = &capped;
    /* in range: unchanged, not counted */
    ASSERT_EQ_DBL(wire_cap(&w, 0, 10, "t"), 0, 0);
    ASSERT_EQ_DBL(wire_cap(&w, 5.5, 10, "t"), 5.5, 0);
    ASSERT_EQ_DBL(wire_cap(&w, 10, 10, "t"), 10, 0);
    ASSERT_EQ_DBL(capped, 0, 0);
    /* too big -> cap; not a non-negative finite number -> 0; each one counted */
    ASSERT_EQ_DBL(wire_cap(&w, 1e300, 10, "t"), 10, 0);
    ASSERT_EQ_DBL(wire_cap(&w, INFINITY, 10, "t"), 10, 0);
    ASSERT_EQ_DBL(wire_cap(&w, -1, 10, "t"), 0, 0);
    ASSERT_EQ_DBL(wire_cap(&w, -INFINITY, 10, "t"), 0, 0);
    ASSERT_EQ_DBL(wire_cap(&w, NAN, 10, "t"), 0, 0);
    ASSERT_EQ_DBL(capped, 5, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wire_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
