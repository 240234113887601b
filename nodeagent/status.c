/*
 * status.c — the agent's local /healthz, /readyz and /metrics endpoint (see status.h).
 */
#include "status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "addr.h"
#include "err.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "version.h"
#include "wolfprobe.h"

struct na_status {
    wp_http_server *http;
    const na_status_sources *src;
    void (*closed_cb)(void *ud);
    void *closed_ud;
};

int na_status_disabled(const char *spec)
{
    return spec && strcasecmp(spec, "none") == 0;
}

/* ---- /metrics ---- */

#define P "wolfpack_agent_"

static void na_status_counter1(wp_metrics *m, const char *name, const char *help, double v)
{
    wp_metric_set(wp_metric_series_get(wp_metrics_counter(m, name, help, NULL, 0, 1), NULL), v);
}

static void na_status_gauge1(wp_metrics *m, const char *name, const char *help, double v)
{
    wp_metric_set(wp_metric_series_get(wp_metrics_gauge(m, name, help, NULL, 0, 1), NULL), v);
}

static void na_status_agent_metrics(wp_metrics *m, const na_stats *st)
{
    static const char *const l_version[] = {"version"};
    static const char *const l_state[] = {"state"};
    static const char *const l_reason[] = {"reason"};
    static const char *const l_dir[] = {"direction"};

    wp_metric_family *f =
        wp_metrics_gauge(m, P "build_info", "Agent build; the value is 1.", l_version, 1, 1);
    wp_metric_set(wp_metric_series_get(f, (const char *const[]){wp_version()}), 1);

    na_status_gauge1(m, P "tunnel_connected",
                     "1 while the tunnel to the control plane is registered (welcome received).",
                     st->tunnel_state == NA_TUNNEL_CONNECTED);
    f = wp_metrics_gauge(m, P "tunnel_state", "Tunnel state: 1 for the current state, else 0.",
                         l_state, 1, NA_TUNNEL_STATE_COUNT);
    for (int i = 0; i < NA_TUNNEL_STATE_COUNT; i++)
        wp_metric_set(wp_metric_series_get(f, (const char *const[]){na_stats_tunnel_state_name(i)}),
                      st->tunnel_state == i);
    na_status_counter1(m, P "connect_attempts_total", "Tunnel dials started.",
                       (double)st->connect_attempts_total);
    na_status_counter1(m, P "connects_total", "Tunnels registered (welcome received).",
                       (double)st->connects_total);
    f = wp_metrics_counter(m, P "reconnects_total",
                           "Redials, by why the previous attempt or tunnel ended.", l_reason, 1,
                           NA_RECONNECT_REASON_COUNT);
    for (int i = 0; i < NA_RECONNECT_REASON_COUNT; i++)
        wp_metric_set(wp_metric_series_get(f, (const char *const[]){na_stats_reconnect_name(i)}),
                      (double)st->reconnects_total[i]);
    na_status_gauge1(m, P "streams_open", "Tunnel streams with a live local side.",
                     (double)st->streams_open);
    na_status_counter1(m, P "streams_opened_total", "Tunnel streams whose local dial succeeded.",
                       (double)st->streams_opened_total);
    f = wp_metrics_counter(m, P "tunnel_bytes_total",
                           "WebSocket payload bytes on the tunnel, by direction.", l_dir, 1, 2);
    wp_metric_set(wp_metric_series_get(f, (const char *const[]){"in"}), (double)st->bytes_in_total);
    wp_metric_set(wp_metric_series_get(f, (const char *const[]){"out"}),
                  (double)st->bytes_out_total);
    f = wp_metrics_counter(m, P "stream_dial_failures_total",
                           "Streams refused by the agent, by error code.", l_reason, 1,
                           NA_DIAL_FAILURE_COUNT);
    for (int i = 0; i < NA_DIAL_FAILURE_COUNT; i++)
        wp_metric_set(wp_metric_series_get(f, (const char *const[]){na_stats_dial_failure_name(i)}),
                      (double)st->dial_failures_total[i]);
    f = wp_metrics_histogram(m, P "stream_dial_seconds",
                             "Time from a stream's open to its local service accepting.", NULL, 0,
                             na_dial_lat_bounds_s, NA_DIAL_LAT_BUCKETS, 1);
    uint64_t cum[NA_DIAL_LAT_BUCKETS], c = 0;
    for (size_t i = 0; i < NA_DIAL_LAT_BUCKETS; i++)
        cum[i] = c += st->dial_lat_buckets[i];
    (void)wp_metric_hist_set(wp_metric_series_get(f, NULL), cum, NA_DIAL_LAT_BUCKETS,
                             st->dial_lat_count, st->dial_lat_sum_s);
}

static void na_status_gpu_metrics(wp_metrics *m, const na_gpu_inventory *inv)
{
    static const char *const l_gpu[] = {"gpu", "uuid"};
    wp_metric_family *util =
        wp_metrics_gauge(m, P "gpu_utilization_ratio", "GPU busy fraction (0..1), per device.",
                         l_gpu, 2, NA_GPU_MAX);
    wp_metric_family *used = wp_metrics_gauge(
        m, P "gpu_memory_used_bytes", "GPU memory in use, per device.", l_gpu, 2, NA_GPU_MAX);
    wp_metric_family *total = wp_metrics_gauge(
        m, P "gpu_memory_total_bytes", "GPU memory size, per device.", l_gpu, 2, NA_GPU_MAX);
    na_status_gauge1(m, P "gpus", "GPUs in the last inventory sample.", (double)inv->n);
    for (size_t i = 0; i < inv->n && i < NA_GPU_MAX; i++) {
        const na_gpu_device *d = &inv->dev[i];
        char idx[16];
        snprintf(idx, sizeof(idx), "%d", d->index);
        const char *const lv[] = {idx, d->uuid};
        if (d->utilization >= 0)
            wp_metric_set(wp_metric_series_get(util, lv), d->utilization / 100.0);
        if (d->memory_used >= 0)
            wp_metric_set(wp_metric_series_get(used, lv), (double)d->memory_used);
        if (d->memory_total >= 0)
            wp_metric_set(wp_metric_series_get(total, lv), (double)d->memory_total);
    }
}

static void na_status_probe_metrics(wp_metrics *m, const na_wolfprobe *p)
{
    static const char *const l_check[] = {"check"};
    double bounds[NA_PROBE_LAT_BUCKETS];
    for (size_t i = 0; i < NA_PROBE_LAT_BUCKETS; i++)
        bounds[i] = na_probe_lat_bounds_ms[i] / 1000.0;
    wp_metric_family *up =
        wp_metrics_gauge(m, P "probe_up", "1 if the last run of the health check passed, else 0.",
                         l_check, 1, NA_PROBE_CHECKS);
    wp_metric_family *lat = wp_metrics_histogram(
        m, P "probe_latency_seconds", "Health check latency (https: the TLS handshake).", l_check,
        1, bounds, NA_PROBE_LAT_BUCKETS, NA_PROBE_CHECKS);
    wp_metric_family *runs = wp_metrics_counter(m, P "probe_runs_total", "Health check runs.",
                                                l_check, 1, NA_PROBE_CHECKS);
    wp_metric_family *fails = wp_metrics_counter(
        m, P "probe_failures_total", "Failed health check runs.", l_check, 1, NA_PROBE_CHECKS);
    na_status_gauge1(m, P "wolf_healthy", "1 if every configured Wolf check passed, else 0.",
                     na_wolfprobe_wolf_healthy(p));
    const na_probe_result *r = NULL;
    size_t n = na_wolfprobe_results(p, &r);
    for (size_t i = 0; i < n && i < NA_PROBE_CHECKS; i++) {
        if (!r[i].configured || !r[i].name)
            continue;
        const char *const lv[] = {r[i].name};
        wp_metric_set(wp_metric_series_get(runs, lv), (double)r[i].runs);
        wp_metric_set(wp_metric_series_get(fails, lv), (double)r[i].failures);
        if (r[i].runs == 0)
            continue;
        wp_metric_set(wp_metric_series_get(up, lv), r[i].ok ? 1 : 0);
        (void)wp_metric_hist_set(wp_metric_series_get(lat, lv), r[i].lat_buckets,
                                 NA_PROBE_LAT_BUCKETS, r[i].lat_count, r[i].lat_sum_ms / 1000.0);
    }
}

int na_status_render_metrics(const na_status_sources *src, wp_buf *out)
{
    if (!src || !src->stats || !out)
        return WP_ERR_INVAL;
    wp_metrics *m = wp_metrics_new(64);
    if (!m)
        return WP_ERR_NOMEM;
    na_status_agent_metrics(m, src->stats);
    if (src->gpu)
        na_status_gpu_metrics(m, na_gpu_last(src->gpu));
    if (src->probe)
        na_status_probe_metrics(m, src->probe);
    int rc = wp_metrics_dropped(m) ? WP_ERR_NOMEM : wp_metrics_render(m, out);
    wp_metrics_free(m);
    return rc;
}

/* ---- routes ---- */

static void na_status_healthz(wp_http_req *req, void *ud)
{
    (void)ud;
    wp_http_respond(req, 200, "text/plain; charset=utf-8", "ok\n", 3);
}

static void na_status_readyz(wp_http_req *req, void *ud)
{
    na_status *st = ud;
    int state = st->src->stats->tunnel_state;
    int ready = state == NA_TUNNEL_CONNECTED;
    char body[200];
    snprintf(body, sizeof(body), "{\"status\":\"%s\",\"checks\":{\"tunnel\":\"%s\"}%s}\n",
             ready ? "ready" : "not_ready", na_stats_tunnel_state_name(state),
             ready ? "" : ",\"reason\":\"the tunnel to the control plane is not registered\"");
    if (!ready)
        wp_http_resp_header(req, "Retry-After", "5");
    wp_http_respond(req, ready ? 200 : 503, "application/json", body, strlen(body));
}

static void na_status_metrics(wp_http_req *req, void *ud)
{
    na_status *st = ud;
    wp_buf b;
    wp_buf_init(&b, NA_STATUS_METRICS_MAX);
    int rc = na_status_render_metrics(st->src, &b);
    if (rc != 0) {
        wp_log_warn("status: cannot render /metrics", WP_LE("err", rc));
        wp_http_respond_error(req, 500, "internal", "cannot render metrics");
    } else {
        wp_http_respond(req, 200, WP_METRICS_CONTENT_TYPE, wp_buf_ptr(&b), wp_buf_len(&b));
    }
    wp_buf_free(&b);
}

/* ---- lifecycle ---- */

int na_status_start(uv_loop_t *loop, const char *addr, const na_status_sources *src, char *bound,
                    size_t cap, na_status **out)
{
    if (!loop || !addr || !src || !src->stats || !out)
        return WP_ERR_INVAL;
    na_status *st = calloc(1, sizeof(*st));
    if (!st)
        return WP_ERR_NOMEM;
    st->src = src;
    wp_http_limits lim;
    wp_http_limits_default(&lim);
    lim.max_header_bytes = 4096;
    lim.max_headers = 32;
    lim.max_url = 1024;
    lim.max_body = 1024;
    lim.header_timeout_ms = 5000;
    lim.idle_timeout_ms = 15000;
    lim.body_timeout_ms = 5000;
    lim.max_connections = NA_STATUS_MAX_CONNECTIONS;
    lim.max_pending_bytes = 4096;
    lim.max_write_queue = NA_STATUS_METRICS_MAX + 4096;
    int rc = wp_http_server_new(&st->http, loop, &lim);
    if (rc != 0) {
        free(st);
        return rc;
    }
    if ((rc = wp_http_server_route(st->http, "GET", "/healthz", na_status_healthz, st, 0)) != 0 ||
        (rc = wp_http_server_route(st->http, "GET", "/readyz", na_status_readyz, st, 0)) != 0 ||
        (rc = wp_http_server_route(st->http, "GET", "/metrics", na_status_metrics, st, 0)) != 0 ||
        (rc = wp_http_server_listen(st->http, addr, bound, cap)) != 0) {
        na_status_close(st, NULL, NULL);
        return rc;
    }
    *out = st;
    return 0;
}

int na_status_setup(uv_loop_t *loop, const char *spec, const na_status_sources *src,
                    na_status **out, char *err, size_t cap)
{
    if (!out)
        return WP_ERR_INVAL;
    *out = NULL;
    if (!spec || na_status_disabled(spec))
        return 0;
    char bound[WP_ADDR_STRLEN] = "";
    int rc = na_status_start(loop, spec, src, bound, sizeof(bound), out);
    if (rc == 0) {
        wp_log_info("status endpoint listening (/healthz /readyz /metrics)", WP_LS("addr", bound));
        return 0;
    }
    *out = NULL;
    if (rc == WP_ERR_IO && strcmp(spec, NA_DEFAULT_STATUS_LISTEN) == 0) {
        wp_log_error("status endpoint disabled: cannot listen on the default address (set "
                     "--status-listen ADDR or none)",
                     WP_LS("addr", spec), WP_LE("err", rc));
        return 0;
    }
    snprintf(err, cap, "--status-listen %.100s: %s", spec,
             rc == WP_ERR_INVAL ? "not an address (IP:PORT, [IPv6]:PORT or none)"
                                : "cannot listen there (address in use or not local)");
    return rc == WP_ERR_NOMEM ? rc : WP_ERR_CONFIG;
}

static void na_status_closed(void *ud)
{
    na_status *st = ud;
    void (*cb)(void *) = st->closed_cb;
    void *cud = st->closed_ud;
    free(st);
    if (cb)
        cb(cud);
}

void na_status_close(na_status *st, void (*cb)(void *ud), void *ud)
{
    if (!st)
        return;
    st->closed_cb = cb;
    st->closed_ud = ud;
    wp_http_server_close(st->http, na_status_closed, st);
}
