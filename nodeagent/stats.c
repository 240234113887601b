/*
 * stats.c — names and update helpers for the agent's counters (see stats.h).
 */
#include "stats.h"

#include <string.h>

#include <wolfpack/proto.h>

#include "err.h"

const double na_dial_lat_bounds_s[NA_DIAL_LAT_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025,
                                                          0.05,  0.1,    0.25,  1,    5};

static const char *const na_reconnect_names[NA_RECONNECT_REASON_COUNT] = {
    "dial_failed",      "proxy_failed",     "tls_failed", "auth_refused",   "over_capacity",
    "handshake_failed", "closed_by_server", "dead_peer",  "protocol_error", "connection_lost"};

static const char *const na_dial_failure_names[NA_DIAL_FAILURE_COUNT] = {
    "refused", "timeout", "not_allowed", "unreachable", "other"};

static const char *const na_state_names[NA_TUNNEL_STATE_COUNT] = {"disconnected", "connecting",
                                                                  "hello", "connected", "closing"};

void na_stats_init(na_stats *s)
{
    if (!s)
        return;
    memset(s, 0, sizeof(*s));
    s->pending_reason = -1;
}

const char *na_stats_reconnect_name(int reason)
{
    return reason >= 0 && reason < NA_RECONNECT_REASON_COUNT ? na_reconnect_names[reason]
                                                             : "unknown";
}

const char *na_stats_dial_failure_name(int failure)
{
    return failure >= 0 && failure < NA_DIAL_FAILURE_COUNT ? na_dial_failure_names[failure]
                                                           : "unknown";
}

const char *na_stats_tunnel_state_name(int state)
{
    return state >= 0 && state < NA_TUNNEL_STATE_COUNT ? na_state_names[state] : "unknown";
}

int na_stats_dial_failure_of(const char *code)
{
    if (!code)
        return NA_DIAL_OTHER;
    if (strcmp(code, WP_STREAM_ERR_REFUSED) == 0)
        return NA_DIAL_REFUSED;
    if (strcmp(code, WP_STREAM_ERR_TIMEOUT) == 0)
        return NA_DIAL_TIMEOUT;
    if (strcmp(code, WP_STREAM_ERR_NOT_ALLOWED) == 0)
        return NA_DIAL_NOT_ALLOWED;
    if (strcmp(code, WP_STREAM_ERR_UNREACHABLE) == 0)
        return NA_DIAL_UNREACHABLE;
    return NA_DIAL_OTHER;
}

void na_stats_end(na_stats *s, int reason)
{
    if (s && s->pending_reason < 0 && reason >= 0 && reason < NA_RECONNECT_REASON_COUNT)
        s->pending_reason = reason;
}

void na_stats_reconnect(na_stats *s)
{
    if (!s)
        return;
    int r = s->pending_reason >= 0 ? s->pending_reason : NA_RECONNECT_CONNECTION_LOST;
    s->reconnects_total[r]++;
    s->pending_reason = -1;
}

void na_stats_dial_ok(na_stats *s, double seconds)
{
    if (!s)
        return;
    s->streams_opened_total++;
    if (seconds < 0)
        seconds = 0;
    for (size_t i = 0; i < NA_DIAL_LAT_BUCKETS; i++) {
        if (seconds <= na_dial_lat_bounds_s[i]) {
            s->dial_lat_buckets[i]++;
            break;
        }
    }
    s->dial_lat_count++;
    s->dial_lat_sum_s += seconds;
}

void na_stats_dial_failed(na_stats *s, const char *code)
{
    if (s)
        s->dial_failures_total[na_stats_dial_failure_of(code)]++;
}

int na_stats_connect_reason(int wp_err)
{
    switch (wp_err) {
    case WP_ERR_PERM:
        return NA_RECONNECT_AUTH_REFUSED;
    case WP_ERR_VERIFY:
    case WP_ERR_TLS:
        return NA_RECONNECT_TLS_FAILED;
    case WP_ERR_BUSY:
        return NA_RECONNECT_OVER_CAPACITY;
    case WP_ERR_IO:
    case WP_ERR_TIMEOUT:
        return NA_RECONNECT_DIAL_FAILED;
    default:
        return NA_RECONNECT_HANDSHAKE_FAILED;
    }
}
