/*
 * metrics.h — a small Prometheus text-format (exposition format 0.0.4) library.
 *
 * A wp_metrics registry holds metric families (counter, gauge, histogram),
 * each with a fixed list of label names given at registration and at most
 * max_series label-value combinations (series). Everything is bounded:
 * families per registry, labels per family, buckets per histogram, series
 * per family, label value length; a series beyond the limit is not created
 * (its updates are dropped and counted, see wp_metrics_dropped). Rendering
 * is pure: wp_metrics_render() appends the text format to a wp_buf —
 * "# HELP" and "# TYPE" lines per family, series in creation order, label
 * values escaped (\\, \", \n), histograms as cumulative _bucket{le=".."}
 * lines ending with le="+Inf", then _sum and _count.
 *
 * Usage (one registry per scrape, or a long-lived one; no locking, one thread):
 *   wp_metrics *m = wp_metrics_new(64);
 *   static const char *const dir[] = {"direction"};
 *   wp_metric_family *f = wp_metrics_counter(m, "x_bytes_total", "Bytes moved.", dir, 1, 4);
 *   wp_metric_add(wp_metric_series_get(f, (const char *[]){"in"}), 42);
 *   wp_metrics_render(m, &buf);
 *   wp_metrics_free(m);
 */
#ifndef WP_METRICS_H
#define WP_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define WP_METRICS_MAX_LABELS      8   /* label names per family */
#define WP_METRICS_MAX_BUCKETS     32  /* histogram upper bounds (+Inf implicit) */
#define WP_METRICS_MAX_NAME        128 /* metric and label name length */
#define WP_METRICS_MAX_LABEL_VALUE 256 /* label value length, bytes */
#define WP_METRICS_MAX_HELP        512 /* help text length */

/* The exposition format's Content-Type. */
#define WP_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

enum wp_metric_type { WP_METRIC_COUNTER = 0, WP_METRIC_GAUGE, WP_METRIC_HISTOGRAM };

typedef struct wp_metrics wp_metrics;
typedef struct wp_metric_family wp_metric_family;
typedef struct wp_metric_series wp_metric_series;

/* Metric name syntax [a-zA-Z_:][a-zA-Z0-9_:]*, at most WP_METRICS_MAX_NAME. 1 if valid. */
int wp_metric_name_valid(const char *s);
/* Label name syntax [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__". 1 if valid. */
int wp_metric_label_name_valid(const char *s);

/* New registry holding at most max_families families (0 = 256). NULL on allocation failure. */
wp_metrics *wp_metrics_new(size_t max_families);
/* Frees the registry, its families and series. NULL is ignored. */
void wp_metrics_free(wp_metrics *m);

/*
 * Registers a family. name and label names must be valid and distinct (a
 * histogram may not use the label "le"); help is free text (escaped on
 * output, at most WP_METRICS_MAX_HELP bytes); nlabels <= WP_METRICS_MAX_LABELS;
 * max_series >= 1. For histograms bounds[0..nbounds) are the finite upper
 * bounds, strictly increasing, 1..WP_METRICS_MAX_BUCKETS of them; other
 * types pass NULL/0. Everything is copied. Returns the family, or NULL for an
 * invalid argument, a name already registered, a full registry or no memory.
 */
wp_metric_family *wp_metrics_counter(wp_metrics *m, const char *name, const char *help,
                                     const char *const *labels, size_t nlabels, size_t max_series);
wp_metric_family *wp_metrics_gauge(wp_metrics *m, const char *name, const char *help,
                                   const char *const *labels, size_t nlabels, size_t max_series);
wp_metric_family *wp_metrics_histogram(wp_metrics *m, const char *name, const char *help,
                                       const char *const *labels, size_t nlabels,
                                       const double *bounds, size_t nbounds, size_t max_series);

/*
 * The series of f for these label values (one per label name, in order;
 * NULL/unused when the family has no labels), created at zero on first use.
 * Values are any bytes up to WP_METRICS_MAX_LABEL_VALUE (escaped on output).
 * Returns NULL (and counts a drop) when f is NULL, a value is NULL or too
 * long, the family already has max_series series, or on allocation failure.
 * Updating a NULL series is a no-op, so calls may be chained.
 */
wp_metric_series *wp_metric_series_get(wp_metric_family *f, const char *const *values);

/* Counter/gauge: adds v (counters: v must be >= 0, else ignored). */
void wp_metric_add(wp_metric_series *s, double v);
/* Gauge (or a counter mirrored from an external total): sets the value. */
void wp_metric_set(wp_metric_series *s, double v);
/* Histogram: one observation (NaN ignored). */
void wp_metric_observe(wp_metric_series *s, double v);
/*
 * Histogram: replaces the whole state from an external source. cumulative[i]
 * is the number of observations <= the family's bounds[i] (nbounds entries,
 * must equal the family's), count the total (the +Inf bucket) and sum their
 * sum. Returns 0, or WP_ERR_INVAL (NULL, wrong bucket count, counts that
 * decrease or exceed count) with nothing changed.
 */
int wp_metric_hist_set(wp_metric_series *s, const uint64_t *cumulative, size_t nbounds,
                       uint64_t count, double sum);

/* Current value of a counter/gauge series (0 for NULL or histograms). */
double wp_metric_value(const wp_metric_series *s);
/* Series updates dropped because a series could not be created. */
uint64_t wp_metrics_dropped(const wp_metrics *m);

/*
 * Formats v as the exposition format writes numbers: integers without a
 * fraction, otherwise the shortest round-tripping decimal; "+Inf", "-Inf",
 * "NaN". out needs 32 bytes. Returns out.
 */
const char *wp_metrics_fmt_double(double v, char out[32]);

/*
 * Appends the text exposition of every family with at least one series (a
 * family without labels always has its single series) to out. Returns 0, or
 * WP_ERR_LIMIT / WP_ERR_NOMEM (out then holds a truncated prefix: discard it)
 * or WP_ERR_INVAL (NULL).
 */
int wp_metrics_render(const wp_metrics *m, wp_buf *out);

#endif
