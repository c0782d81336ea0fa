/* Unit tests for src/common/metrics.c: the Prometheus text exposition checked byte for byte
 * (HELP/TYPE once per base name, labels, histogram buckets cumulative with `le` appended to
 * the series' own labels, number formatting), the render hook, re-registration, and
 * histogram observations from several threads at once. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "assert_ext.h"
#include "metrics.h"

static void render_is(struct metrics *m, const char *want)
{
    struct sbuf out = SBUF_INIT;
    metrics_render(m, &out);
    ASSERT_EQ_STR(sbuf_cstr(&out), want);
    sbuf_free(&out);
}

static void test_metrics_empty(void **state)
{
    struct metrics *m = metrics_new();
    assert_non_null(m);
    render_is(m, "");
    metrics_free(m);
    metrics_free(NULL);
}

/* Series sharing a base name share one HELP/TYPE block, printed where the first of them was
 * registered, in registration order; the first registration's help text is kept. */
static void test_metrics_counters_gauges_labels(void **state)
{
    struct metrics *m = metrics_new();
    double *ok = metrics_counter(m, "x_requests_total{status=\"200\"}", "Requests answered");
    double *temp = metrics_gauge(m, "x_temp_celsius", "Temperature");
    double *err = metrics_counter(m, "x_requests_total{status=\"500\"}", "other help, ignored");
    double *two = metrics_gauge(m, "x_pair{a=\"1\",b=\"two\"}", "Two labels");
    assert_ptr_equal(metrics_counter(m, "x_requests_total{status=\"200\"}", "again"), ok);
    *ok += 3;
    *err += 1;
    *temp = -1.5;
    *two = 7;
    render_is(m, "# HELP x_requests_total Requests answered\n"
                 "# TYPE x_requests_total counter\n"
                 "x_requests_total{status=\"200\"} 3\n"
                 "x_requests_total{status=\"500\"} 1\n"
                 "# HELP x_temp_celsius Temperature\n"
                 "# TYPE x_temp_celsius gauge\n"
                 "x_temp_celsius -1.5\n"
                 "# HELP x_pair Two labels\n"
                 "# TYPE x_pair gauge\n"
                 "x_pair{a=\"1\",b=\"two\"} 7\n");
    metrics_free(m);
}

/* Integers print without a fraction, others with 17 significant digits, and the three special
 * values as Prometheus spells them. */
static void test_metrics_numbers(void **state)
{
    static const struct {
        double v;
        const char *want;
    } cases[] = {
        {0, "0"},
        {-0.0, "0"},
        {42, "42"},
        {-3, "-3"},
        {0.5, "0.5"},
        {0.1, "0.10000000000000001"},
        {999999999999999.0, "999999999999999"},
        {1e15, "1000000000000000"},
        {1e300, "1.0000000000000001e+300"},
        {NAN, "NaN"},
        {INFINITY, "+Inf"},
        {-INFINITY, "-Inf"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct metrics *m = metrics_new();
        *metrics_gauge(m, "g", "h") = cases[i].v;
        char want[128];
        snprintf(want, sizeof want, "# HELP g h\n# TYPE g gauge\ng %s\n", cases[i].want);
        render_is(m, want);
        metrics_free(m);
    }
}

/* Buckets are cumulative, bounds inclusive (v <= le), `le` joins the series' labels. */
static void test_metrics_histogram(void **state)
{
    struct metrics *m = metrics_new();
    static const double b1[] = {0.25, 1};
    struct metrics_hist *h = metrics_histogram(m, "x_lat_seconds{route=\"/a\"}", "Latency", b1, 2);
    static const double b2[] = {1024};
    struct metrics_hist *e = metrics_histogram(m, "x_size_bytes", "Size", b2, 1);
    assert_ptr_equal(metrics_histogram(m, "x_size_bytes", "Size", b2, 1), e);
    metrics_observe(h, 0.125);
    metrics_observe(h, 0.25); /* on the bound: counted in le="0.25" */
    metrics_observe(h, 0.5);
    metrics_observe(h, 8);
    render_is(m, "# HELP x_lat_seconds Latency\n"
                 "# TYPE x_lat_seconds histogram\n"
                 "x_lat_seconds_bucket{route=\"/a\",le=\"0.25\"} 2\n"
                 "x_lat_seconds_bucket{route=\"/a\",le=\"1\"} 3\n"
                 "x_lat_seconds_bucket{route=\"/a\",le=\"+Inf\"} 4\n"
                 "x_lat_seconds_sum{route=\"/a\"} 8.875\n"
                 "x_lat_seconds_count{route=\"/a\"} 4\n"
                 "# HELP x_size_bytes Size\n"
                 "# TYPE x_size_bytes histogram\n"
                 "x_size_bytes_bucket{le=\"1024\"} 0\n"
                 "x_size_bytes_bucket{le=\"+Inf\"} 0\n"
                 "x_size_bytes_sum 0\n"
                 "x_size_bytes_count 0\n");
    metrics_free(m);
}

struct live {
    double *g;
    int calls;
};

static void refresh(void *arg)
{
    struct live *l = arg;
    l->calls++;
    *l->g = l->calls * 10;
}

/* The render hook runs before every render, so gauges show live state. */
static void test_metrics_on_render(void **state)
{
    struct metrics *m = metrics_new();
    struct live l = {metrics_gauge(m, "x_live", "Live"), 0};
    metrics_on_render(m, refresh, &l);
    render_is(m, "# HELP x_live Live\n# TYPE x_live gauge\nx_live 10\n");
    render_is(m, "# HELP x_live Live\n# TYPE x_live gauge\nx_live 20\n");
    ASSERT_EQ_INT(l.calls, 2);
    metrics_free(m);
}

enum { NTHREADS = 4, PER_THREAD = 20000 };

static void *observer(void *arg)
{
    struct metrics_hist *h = arg;
    for (int i = 0; i < PER_THREAD; i++)
        metrics_observe(h, (i & 1) ? 2.0 : 0.5);
    return NULL;
}

/* Observations from compute threads are counted exactly (atomic adds, no lost updates). */
static void test_metrics_observe_threads(void **state)
{
    struct metrics *m = metrics_new();
    static const double b[] = {1};
    struct metrics_hist *h = metrics_histogram(m, "x_t", "T", b, 1);
    pthread_t t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, observer, h), 0);
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    render_is(m, "# HELP x_t T\n# TYPE x_t histogram\n"
                 "x_t_bucket{le=\"1\"} 40000\n"
                 "x_t_bucket{le=\"+Inf\"} 80000\n"
                 "x_t_sum 100000\n"
                 "x_t_count 80000\n");
    metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_empty),
        cmocka_unit_test(test_metrics_counters_gauges_labels),
        cmocka_unit_test(test_metrics_numbers),
        cmocka_unit_test(test_metrics_histogram),
        cmocka_unit_test(test_metrics_on_render),
        cmocka_unit_test(test_metrics_observe_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
