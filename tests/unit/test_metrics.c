/*
 * test_metrics.c — unit tests for common/metrics.c: Prometheus text format, limits, escaping.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "err.h"
#include "metrics.h"
#include "wp_test.h"

/* Renders m into a NUL-terminated string (static storage). */
static const char *render(const wp_metrics *m)
{
    static char out[16384];
    wp_buf b;
    wp_buf_init(&b, sizeof(out) - 1);
    int rc = wp_metrics_render(m, &b);
    out[0] = '\0';
    if (rc == 0) {
        memcpy(out, wp_buf_ptr(&b) ? (const char *)wp_buf_ptr(&b) : "", wp_buf_len(&b));
        out[wp_buf_len(&b)] = '\0';
    }
    wp_buf_free(&b);
    return out;
}

WP_TEST(metrics_names)
{
    WP_CHECK(wp_metric_name_valid("wolfpack_agent_up"));
    WP_CHECK(wp_metric_name_valid("a:b_c9"));
    WP_CHECK(!wp_metric_name_valid("9abc"));
    WP_CHECK(!wp_metric_name_valid(""));
    WP_CHECK(!wp_metric_name_valid("a-b"));
    WP_CHECK(!wp_metric_name_valid(NULL));
    WP_CHECK(wp_metric_label_name_valid("reason"));
    WP_CHECK(!wp_metric_label_name_valid("__name__"));
    WP_CHECK(!wp_metric_label_name_valid("a:b"));
    WP_CHECK(!wp_metric_label_name_valid("1a"));
}

WP_TEST(metrics_counter_gauge_render)
{
    wp_metrics *m = wp_metrics_new(0);
    WP_CHECK(m != NULL);
    static const char *const dir[] = {"direction"};
    wp_metric_family *c = wp_metrics_counter(m, "x_bytes_total", "Bytes moved.", dir, 1, 4);
    wp_metric_family *g = wp_metrics_gauge(m, "x_open", "Open things.", NULL, 0, 1);
    WP_CHECK(c && g);
    wp_metric_add(wp_metric_series_get(c, (const char *const[]){"in"}), 42);
    wp_metric_add(wp_metric_series_get(c, (const char *const[]){"out"}), 7);
    wp_metric_add(wp_metric_series_get(c, (const char *const[]){"in"}), 1);
    wp_metric_add(wp_metric_series_get(c, (const char *const[]){"in"}), -5); /* ignored */
    wp_metric_set(wp_metric_series_get(g, NULL), 3);
    WP_CHECK(wp_metric_value(wp_metric_series_get(c, (const char *const[]){"in"})) == 43);
    WP_CHECK_STR(render(m), "# HELP x_bytes_total Bytes moved.\n"
                            "# TYPE x_bytes_total counter\n"
                            "x_bytes_total{direction=\"in\"} 43\n"
                            "x_bytes_total{direction=\"out\"} 7\n"
                            "# HELP x_open Open things.\n"
                            "# TYPE x_open gauge\n"
                            "x_open 3\n");
    wp_metrics_free(m);
}

WP_TEST(metrics_labelled_family_without_series_is_omitted)
{
    wp_metrics *m = wp_metrics_new(0);
    static const char *const l[] = {"gpu"};
    WP_CHECK(wp_metrics_gauge(m, "x_gpu", "GPU.", l, 1, 8) != NULL);
    WP_CHECK(wp_metrics_gauge(m, "x_zero", "Zero.", NULL, 0, 1) != NULL);
    WP_CHECK_STR(render(m), "# HELP x_zero Zero.\n# TYPE x_zero gauge\nx_zero 0\n");
    wp_metrics_free(m);
}

WP_TEST(metrics_histogram_cumulative)
{
    wp_metrics *m = wp_metrics_new(0);
    static const double b[] = {0.005, 0.1, 1};
    static const char *const l[] = {"check"};
    wp_metric_family *h = wp_metrics_histogram(m, "x_seconds", "Latency.", l, 1, b, 3, 4);
    WP_CHECK(h != NULL);
    wp_metric_series *s = wp_metric_series_get(h, (const char *const[]){"api"});
    wp_metric_observe(s, 0.001);
    wp_metric_observe(s, 0.05);
    wp_metric_observe(s, 0.1); /* le is inclusive */
    wp_metric_observe(s, 5);
    wp_metric_observe(s, NAN); /* ignored */
    WP_CHECK_STR(render(m), "# HELP x_seconds Latency.\n"
                            "# TYPE x_seconds histogram\n"
                            "x_seconds_bucket{check=\"api\",le=\"0.005\"} 1\n"
                            "x_seconds_bucket{check=\"api\",le=\"0.1\"} 3\n"
                            "x_seconds_bucket{check=\"api\",le=\"1\"} 3\n"
                            "x_seconds_bucket{check=\"api\",le=\"+Inf\"} 4\n"
                            "x_seconds_sum{check=\"api\"} 5.151\n"
                            "x_seconds_count{check=\"api\"} 4\n");
    /* replacing the state from an external cumulative source */
    uint64_t cum[3] = {2, 2, 5};
    WP_CHECK_EQ(wp_metric_hist_set(s, cum, 3, 6, 2.5), 0);
    uint64_t bad[3] = {3, 2, 5};
    WP_CHECK_EQ(wp_metric_hist_set(s, bad, 3, 6, 1), WP_ERR_INVAL);
    uint64_t over[3] = {1, 2, 7};
    WP_CHECK_EQ(wp_metric_hist_set(s, over, 3, 6, 1), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_metric_hist_set(s, cum, 2, 6, 1), WP_ERR_INVAL);
    const char *r = render(m);
    WP_CHECK(strstr(r, "x_seconds_bucket{check=\"api\",le=\"0.005\"} 2\n") != NULL);
    WP_CHECK(strstr(r, "x_seconds_bucket{check=\"api\",le=\"1\"} 5\n") != NULL);
    WP_CHECK(strstr(r, "x_seconds_bucket{check=\"api\",le=\"+Inf\"} 6\n") != NULL);
    WP_CHECK(strstr(r, "x_seconds_sum{check=\"api\"} 2.5\n") != NULL);
    /* unlabelled histogram */
    wp_metric_family *h2 = wp_metrics_histogram(m, "y_seconds", "Y.", NULL, 0, b, 1, 1);
    wp_metric_observe(wp_metric_series_get(h2, NULL), 0.001);
    r = render(m);
    WP_CHECK(strstr(r, "y_seconds_bucket{le=\"0.005\"} 1\ny_seconds_bucket{le=\"+Inf\"} 1\n"
                       "y_seconds_sum 0.001\ny_seconds_count 1\n") != NULL);
    wp_metrics_free(m);
}

WP_TEST(metrics_escaping)
{
    wp_metrics *m = wp_metrics_new(0);
    static const char *const l[] = {"model"};
    wp_metric_family *g =
        wp_metrics_gauge(m, "x_info", "Help with \\ and\nnewline \"q\".", l, 1, 2);
    wp_metric_set(wp_metric_series_get(g, (const char *const[]){"a\"b\\c\nd"}), 1);
    WP_CHECK_STR(render(m), "# HELP x_info Help with \\\\ and\\nnewline \"q\".\n"
                            "# TYPE x_info gauge\n"
                            "x_info{model=\"a\\\"b\\\\c\\nd\"} 1\n");
    wp_metrics_free(m);
}

WP_TEST(metrics_limits)
{
    wp_metrics *m = wp_metrics_new(2);
    static const char *const l[] = {"k"};
    wp_metric_family *f = wp_metrics_counter(m, "a_total", "A.", l, 1, 2);
    WP_CHECK(f != NULL);
    WP_CHECK(wp_metric_series_get(f, (const char *const[]){"1"}) != NULL);
    WP_CHECK(wp_metric_series_get(f, (const char *const[]){"2"}) != NULL);
    WP_CHECK(wp_metric_series_get(f, (const char *const[]){"3"}) == NULL); /* over max_series */
    WP_CHECK(wp_metric_series_get(f, (const char *const[]){"1"}) != NULL); /* existing: fine */
    WP_CHECK(wp_metric_series_get(f, (const char *const[]){NULL}) == NULL);
    WP_CHECK(wp_metric_series_get(f, NULL) == NULL);
    char big[WP_METRICS_MAX_LABEL_VALUE + 2];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    WP_CHECK(wp_metric_series_get(f, (const char *const[]){big}) == NULL);
    WP_CHECK_EQ(wp_metrics_dropped(m), 4);
    wp_metric_add(NULL, 1); /* no-op */
    /* duplicate and invalid registrations */
    WP_CHECK(wp_metrics_counter(m, "a_total", "dup", NULL, 0, 1) == NULL);
    WP_CHECK(wp_metrics_counter(m, "bad-name", "x", NULL, 0, 1) == NULL);
    static const char *const dupl[] = {"k", "k"};
    WP_CHECK(wp_metrics_counter(m, "b_total", "x", dupl, 2, 1) == NULL);
    static const char *const le[] = {"le"};
    static const double b[] = {1, 2};
    static const double unsorted[] = {2, 1};
    WP_CHECK(wp_metrics_histogram(m, "h", "x", le, 1, b, 2, 1) == NULL);
    WP_CHECK(wp_metrics_histogram(m, "h", "x", NULL, 0, unsorted, 2, 1) == NULL);
    WP_CHECK(wp_metrics_histogram(m, "h", "x", NULL, 0, NULL, 0, 1) == NULL);
    WP_CHECK(wp_metrics_gauge(m, "g", "x", NULL, 0, 0) == NULL); /* max_series 0 */
    WP_CHECK(wp_metrics_gauge(m, "g", "x", NULL, 0, 1) != NULL);
    WP_CHECK(wp_metrics_gauge(m, "g2", "x", NULL, 0, 1) == NULL); /* registry full (2) */
    /* a render that does not fit reports it */
    wp_buf small;
    wp_buf_init(&small, 16);
    WP_CHECK_EQ(wp_metrics_render(m, &small), WP_ERR_LIMIT);
    wp_buf_free(&small);
    WP_CHECK_EQ(wp_metrics_render(NULL, &small), WP_ERR_INVAL);
    wp_metrics_free(m);
    wp_metrics_free(NULL);
}

WP_TEST(metrics_fmt_double)
{
    char b[32];
    WP_CHECK_STR(wp_metrics_fmt_double(0, b), "0");
    WP_CHECK_STR(wp_metrics_fmt_double(-3, b), "-3");
    WP_CHECK_STR(wp_metrics_fmt_double(1e15, b), "1000000000000000");
    WP_CHECK_STR(wp_metrics_fmt_double(0.25, b), "0.25");
    WP_CHECK_STR(wp_metrics_fmt_double(0.1, b), "0.1");
    WP_CHECK_STR(wp_metrics_fmt_double(1e300, b), "1e+300");
    WP_CHECK_STR(wp_metrics_fmt_double(INFINITY, b), "+Inf");
    WP_CHECK_STR(wp_metrics_fmt_double(-INFINITY, b), "-Inf");
    WP_CHECK_STR(wp_metrics_fmt_double(NAN, b), "NaN");
    WP_CHECK(strtod(wp_metrics_fmt_double(1.0 / 3, b), NULL) == 1.0 / 3);
}

int main(void)
{
    WP_RUN(metrics_names);
    WP_RUN(metrics_counter_gauge_render);
    WP_RUN(metrics_labelled_family_without_series_is_omitted);
    WP_RUN(metrics_histogram_cumulative);
    WP_RUN(metrics_escaping);
    WP_RUN(metrics_limits);
    WP_RUN(metrics_fmt_double);
    return wp_test_done();
}
