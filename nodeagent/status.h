/*
 * status.h — the agent's local status endpoint (--status-listen, default 127.0.0.1:9465).
 *
 * A small plain-HTTP server (common/http.h, no TLS, tight limits: few
 * connections, small headers) on the agent's loop, for Kubernetes probes and
 * a node-level Prometheus:
 *   GET /healthz  200 "ok" while the process runs;
 *   GET /readyz   200 once the tunnel is registered (welcome received),
 *                 503 with {"status":"not_ready","reason":...} otherwise;
 *   GET /metrics  Prometheus text format 0.0.4 (metrics.h): tunnel state,
 *                 connects and reconnects by reason, streams, tunnel bytes,
 *                 local dial failures by reason and latency, Wolf probe
 *                 results and latencies, GPU utilization and memory.
 * Anything else is 404 (405 for another method on these paths). There is no
 * authentication: the default binds loopback only; binding another address
 * exposes the metrics (never secrets) to that network.
 *
 * na_status_render_metrics() is pure so unit tests check the text directly.
 */
#ifndef NA_STATUS_H
#define NA_STATUS_H

#include <stddef.h>

#include <uv.h>

#include "buf.h"
#include "config.h"
#include "gpu.h"
#include "stats.h"
#include "wolfprobe.h"

#define NA_STATUS_MAX_CONNECTIONS 16
#define NA_STATUS_METRICS_MAX     (512u * 1024u) /* bytes of one /metrics answer */

/* What the endpoint reports; owned by the agent, read at each request. */
typedef struct na_status_sources {
    const na_stats *stats;     /* required */
    const na_gpu *gpu;         /* NULL: no GPU families */
    const na_wolfprobe *probe; /* NULL: no probe families */
} na_status_sources;

typedef struct na_status na_status;

/* 1 if spec is "none" (case-insensitive): the endpoint is disabled. */
int na_status_disabled(const char *spec);

/*
 * Appends the /metrics text for src to out (bounded by out's max). Returns 0,
 * WP_ERR_INVAL (NULL src/stats/out), WP_ERR_LIMIT or WP_ERR_NOMEM.
 */
int na_status_render_metrics(const na_status_sources *src, wp_buf *out);

/*
 * Listens on addr (wp_addr_parse forms, e.g. "127.0.0.1:9465", "[::1]:0") and
 * serves the routes above from loop; src must outlive the endpoint. bound
 * (cap bytes, may be NULL) gets the actual address. Returns 0 with *out set,
 * or WP_ERR_INVAL (bad address), WP_ERR_IO (bind/listen failed, e.g. address
 * in use), WP_ERR_NOMEM; nothing is left open on failure.
 */
int na_status_start(uv_loop_t *loop, const char *addr, const na_status_sources *src, char *bound,
                    size_t cap, na_status **out);

/*
 * The agent's endpoint at start, from --status-listen spec: "none" → 0 with
 * *out NULL. A failure to listen on the default address (NA_DEFAULT_STATUS_LISTEN,
 * e.g. another agent holds it) is logged as an error and the agent runs on
 * without the endpoint (0, *out NULL); on an address the operator chose it
 * is WP_ERR_CONFIG with a reason in err. Logs the bound address.
 */
int na_status_setup(uv_loop_t *loop, const char *spec, const na_status_sources *src,
                    na_status **out, char *err, size_t cap);

/* Stops listening, closes every connection, frees st; cb(ud) (may be NULL) runs when done.
 * NULL st: cb is not called. */
void na_status_close(na_status *st, void (*cb)(void *ud), void *ud);

#endif
