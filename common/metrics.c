/*
 * metrics.c — Prometheus text-format registry and renderer (see metrics.h).
 *
 * Families live in an array in registration order; each owns an array of
 * series in creation order (linear lookup: families are small and bounded).
 * A series stores its label values as one allocation of NUL-separated
 * strings, and either a value (counter, gauge) or bucket counts + sum +
 * count (histogram; counts per bucket, made cumulative when rendered).
 */
#include "metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

struct wp_metric_series {
    wp_metric_family *fam;
    char **values; /* nlabels strings */
    double value;
    uint64_t *buckets; /* histogram: per-bucket (non-cumulative) counts, nbounds entries */
    uint64_t count;
    double sum;
};

struct wp_metric_family {
    wp_metrics *reg;
    int type;
    char name[WP_METRICS_MAX_NAME + 1];
    char *help;
    char labels[WP_METRICS_MAX_LABELS][WP_METRICS_MAX_NAME + 1];
    size_t nlabels;
    double bounds[WP_METRICS_MAX_BUCKETS];
    size_t nbounds;
    size_t max_series;
    wp_metric_series **series;
    size_t nseries;
};

struct wp_metrics {
    wp_metric_family **fams;
    size_t nfams, max_fams;
    uint64_t dropped;
};

/* ---- names ---- */

int wp_metric_name_valid(const char *s)
{
    if (!s || !s[0] || strlen(s) > WP_METRICS_MAX_NAME)
        return 0;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                 (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

int wp_metric_label_name_valid(const char *s)
{
    if (!s || !s[0] || strlen(s) > WP_METRICS_MAX_NAME || strncmp(s, "__", 2) == 0)
        return 0;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                 (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

/* ---- registry ---- */

wp_metrics *wp_metrics_new(size_t max_families)
{
    wp_metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->max_fams = max_families ? max_families : 256;
    return m;
}

static void metric_series_free(wp_metric_series *s, size_t nlabels)
{
    if (!s)
        return;
    for (size_t i = 0; s->values && i < nlabels; i++)
        free(s->values[i]);
    free(s->values);
    free(s->buckets);
    free(s);
}

void wp_metrics_free(wp_metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nfams; i++) {
        wp_metric_family *f = m->fams[i];
        for (size_t j = 0; j < f->nseries; j++)
            metric_series_free(f->series[j], f->nlabels);
        free(f->series);
        free(f->help);
        free(f);
    }
    free(m->fams);
    free(m);
}

static wp_metric_family *metric_family_new(wp_metrics *m, int type, const char *name,
                                           const char *help, const char *const *labels,
                                           size_t nlabels, const double *bounds, size_t nbounds,
                                           size_t max_series)
{
    if (!m || !wp_metric_name_valid(name) || nlabels > WP_METRICS_MAX_LABELS ||
        (nlabels && !labels) || max_series == 0 || m->nfams >= m->max_fams)
        return NULL;
    if (help && strlen(help) > WP_METRICS_MAX_HELP)
        return NULL;
    if (type == WP_METRIC_HISTOGRAM) {
        if (!bounds || nbounds == 0 || nbounds > WP_METRICS_MAX_BUCKETS)
            return NULL;
        for (size_t i = 0; i < nbounds; i++) {
            if (isnan(bounds[i]) || isinf(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
                return NULL;
        }
    } else if (bounds || nbounds) {
        return NULL;
    }
    for (size_t i = 0; i < nlabels; i++) {
        if (!wp_metric_label_name_valid(labels[i]))
            return NULL;
        if (type == WP_METRIC_HISTOGRAM && strcmp(labels[i], "le") == 0)
            return NULL;
        for (size_t j = 0; j < i; j++)
            if (strcmp(labels[i], labels[j]) == 0)
                return NULL;
    }
    for (size_t i = 0; i < m->nfams; i++)
        if (strcmp(m->fams[i]->name, name) == 0)
            return NULL;
    if (m->nfams == 0 || (m->nfams & (m->nfams - 1)) == 0) { /* grow at powers of two */
        size_t cap = m->nfams ? m->nfams * 2 : 8;
        wp_metric_family **nf = realloc(m->fams, cap * sizeof(*nf));
        if (!nf)
            return NULL;
        m->fams = nf;
    }
    wp_metric_family *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->help = strdup(help ? help : "");
    if (!f->help) {
        free(f);
        return NULL;
    }
    f->reg = m;
    f->type = type;
    snprintf(f->name, sizeof(f->name), "%s", name);
    for (size_t i = 0; i < nlabels; i++)
        snprintf(f->labels[i], sizeof(f->labels[i]), "%s", labels[i]);
    f->nlabels = nlabels;
    for (size_t i = 0; i < nbounds; i++)
        f->bounds[i] = bounds[i];
    f->nbounds = nbounds;
    f->max_series = max_series;
    if (nlabels == 0 && !wp_metric_series_get(f, NULL)) { /* the one series always exists */
        free(f->series);
        free(f->help);
        free(f);
        return NULL;
    }
    m->fams[m->nfams++] = f;
    return f;
}

wp_metric_family *wp_metrics_counter(wp_metrics *m, const char *name, const char *help,
                                     const char *const *labels, size_t nlabels, size_t max_series)
{
    return metric_family_new(m, WP_METRIC_COUNTER, name, help, labels, nlabels, NULL, 0,
                             max_series);
}

wp_metric_family *wp_metrics_gauge(wp_metrics *m, const char *name, const char *help,
                                   const char *const *labels, size_t nlabels, size_t max_series)
{
    return metric_family_new(m, WP_METRIC_GAUGE, name, help, labels, nlabels, NULL, 0, max_series);
}

wp_metric_family *wp_metrics_histogram(wp_metrics *m, const char *name, const char *help,
                                       const char *const *labels, size_t nlabels,
                                       const double *bounds, size_t nbounds, size_t max_series)
{
    return metric_family_new(m, WP_METRIC_HISTOGRAM, name, help, labels, nlabels, bounds, nbounds,
                             max_series);
}

/* ---- series ---- */

wp_metric_series *wp_metric_series_get(wp_metric_family *f, const char *const *values)
{
    if (!f)
        return NULL;
    if (f->nlabels && !values)
        goto drop;
    for (size_t i = 0; i < f->nlabels; i++)
        if (!values[i] || strlen(values[i]) > WP_METRICS_MAX_LABEL_VALUE)
            goto drop;
    for (size_t j = 0; j < f->nseries; j++) {
        wp_metric_series *s = f->series[j];
        size_t i = 0;
        while (i < f->nlabels && strcmp(s->values[i], values[i]) == 0)
            i++;
        if (i == f->nlabels)
            return s;
    }
    if (f->nseries >= f->max_series)
        goto drop;
    if (f->nseries == 0 || (f->nseries & (f->nseries - 1)) == 0) {
        size_t cap = f->nseries ? f->nseries * 2 : 4;
        wp_metric_series **ns = realloc(f->series, cap * sizeof(*ns));
        if (!ns)
            goto drop;
        f->series = ns;
    }
    wp_metric_series *s = calloc(1, sizeof(*s));
    if (!s)
        goto drop;
    s->fam = f;
    if (f->nlabels) {
        s->values = calloc(f->nlabels, sizeof(*s->values));
        if (!s->values) {
            free(s);
            goto drop;
        }
        for (size_t i = 0; i < f->nlabels; i++) {
            s->values[i] = strdup(values[i]);
            if (!s->values[i]) {
                metric_series_free(s, f->nlabels);
                goto drop;
            }
        }
    }
    if (f->type == WP_METRIC_HISTOGRAM) {
        s->buckets = calloc(f->nbounds, sizeof(*s->buckets));
        if (!s->buckets) {
            metric_series_free(s, f->nlabels);
            goto drop;
        }
    }
    f->series[f->nseries++] = s;
    return s;
drop:
    f->reg->dropped++;
    return NULL;
}

void wp_metric_add(wp_metric_series *s, double v)
{
    if (!s || s->fam->type == WP_METRIC_HISTOGRAM || isnan(v))
        return;
    if (s->fam->type == WP_METRIC_COUNTER && v < 0)
        return;
    s->value += v;
}

void wp_metric_set(wp_metric_series *s, double v)
{
    if (!s || s->fam->type == WP_METRIC_HISTOGRAM)
        return;
    s->value = v;
}

void wp_metric_observe(wp_metric_series *s, double v)
{
    if (!s || s->fam->type != WP_METRIC_HISTOGRAM || isnan(v))
        return;
    for (size_t i = 0; i < s->fam->nbounds; i++) {
        if (v <= s->fam->bounds[i]) {
            s->buckets[i]++;
            break;
        }
    }
    s->count++;
    s->sum += v;
}

int wp_metric_hist_set(wp_metric_series *s, const uint64_t *cumulative, size_t nbounds,
                       uint64_t count, double sum)
{
    if (!s || s->fam->type != WP_METRIC_HISTOGRAM || !cumulative || nbounds != s->fam->nbounds)
        return WP_ERR_INVAL;
    for (size_t i = 0; i < nbounds; i++)
        if ((i > 0 && cumulative[i] < cumulative[i - 1]) || cumulative[i] > count)
            return WP_ERR_INVAL;
    for (size_t i = 0; i < nbounds; i++)
        s->buckets[i] = cumulative[i] - (i > 0 ? cumulative[i - 1] : 0);
    s->count = count;
    s->sum = sum;
    return 0;
}

double wp_metric_value(const wp_metric_series *s)
{
    return s && s->fam->type != WP_METRIC_HISTOGRAM ? s->value : 0;
}

uint64_t wp_metrics_dropped(const wp_metrics *m)
{
    return m ? m->dropped : 0;
}

/* ---- rendering ---- */

const char *wp_metrics_fmt_double(double v, char out[32])
{
    if (isnan(v)) {
        snprintf(out, 32, "NaN");
    } else if (isinf(v)) {
        snprintf(out, 32, v > 0 ? "+Inf" : "-Inf");
    } else if (v > -9007199254740992.0 && v < 9007199254740992.0 && v == (double)(long long)v) {
        snprintf(out, 32, "%lld", (long long)v);
    } else {
        for (int prec = 6; prec <= 17; prec++) { /* shortest decimal that reads back the same */
            snprintf(out, 32, "%.*g", prec, v);
            if (strtod(out, NULL) == v)
                break;
        }
    }
    return out;
}

/* Appends s escaped for a label value (\\, \", \n) or for HELP text (\\, \n). */
static int metric_put_escaped(wp_buf *b, const char *s, int quote)
{
    int rc = 0;
    const char *run = s;
    for (const char *p = s;; p++) {
        const char *esc = NULL;
        if (*p == '\\')
            esc = "\\\\";
        else if (*p == '\n')
            esc = "\\n";
        else if (quote && *p == '"')
            esc = "\\\"";
        if (!esc && *p)
            continue;
        if (p > run && (rc = wp_buf_put(b, run, (size_t)(p - run))) != 0)
            return rc;
        if (!*p)
            return 0;
        if ((rc = wp_buf_put_str(b, esc)) != 0)
            return rc;
        run = p + 1;
    }
}

/* name{labels[,le="x"]} value\n */
static int metric_put_line(wp_buf *b, const wp_metric_family *f, const wp_metric_series *s,
                           const char *suffix, const char *le, double v)
{
    char num[32];
    int rc = wp_buf_putf(b, "%s%s", f->name, suffix);
    if (rc == 0 && (f->nlabels || le))
        rc = wp_buf_put_u8(b, '{');
    for (size_t i = 0; rc == 0 && i < f->nlabels; i++) {
        rc = wp_buf_putf(b, "%s%s=\"", i ? "," : "", f->labels[i]);
        if (rc == 0)
            rc = metric_put_escaped(b, s->values[i], 1);
        if (rc == 0)
            rc = wp_buf_put_u8(b, '"');
    }
    if (rc == 0 && le)
        rc = wp_buf_putf(b, "%sle=\"%s\"", f->nlabels ? "," : "", le);
    if (rc == 0 && (f->nlabels || le))
        rc = wp_buf_put_u8(b, '}');
    if (rc == 0)
        rc = wp_buf_putf(b, " %s\n", wp_metrics_fmt_double(v, num));
    return rc;
}

int wp_metrics_render(const wp_metrics *m, wp_buf *out)
{
    if (!m || !out)
        return WP_ERR_INVAL;
    static const char *const types[] = {"counter", "gauge", "histogram"};
    for (size_t i = 0; i < m->nfams; i++) {
        const wp_metric_family *f = m->fams[i];
        if (f->nseries == 0)
            continue;
        int rc = wp_buf_putf(out, "# HELP %s ", f->name);
        if (rc == 0)
            rc = metric_put_escaped(out, f->help, 0);
        if (rc == 0)
            rc = wp_buf_putf(out, "\n# TYPE %s %s\n", f->name, types[f->type]);
        for (size_t j = 0; rc == 0 && j < f->nseries; j++) {
            const wp_metric_series *s = f->series[j];
            if (f->type != WP_METRIC_HISTOGRAM) {
                rc = metric_put_line(out, f, s, "", NULL, s->value);
                continue;
            }
            uint64_t cum = 0;
            char le[32];
            for (size_t k = 0; rc == 0 && k < f->nbounds; k++) {
                cum += s->buckets[k];
                rc = metric_put_line(out, f, s, "_bucket", wp_metrics_fmt_double(f->bounds[k], le),
                                     (double)cum);
            }
            if (rc == 0)
                rc = metric_put_line(out, f, s, "_bucket", "+Inf", (double)s->count);
            if (rc == 0)
                rc = metric_put_line(out, f, s, "_sum", NULL, s->sum);
            if (rc == 0)
                rc = metric_put_line(out, f, s, "_count", NULL, (double)s->count);
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}
