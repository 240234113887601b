/*
 * stats.h — the agent's counters for the local status endpoint (status.h).
 *
 * A plain struct owned by the agent (agent.c) and updated in place by the
 * agent and its streams (services.c) from the loop thread; status.c reads it
 * when /metrics is scraped. Every counter only grows (gauges aside); every
 * label set is a fixed enum, so the metric series are bounded.
 */
#ifndef NA_STATS_H
#define NA_STATS_H

#include <stddef.h>
#include <stdint.h>

/* Tunnel state (gauge wolfpack_agent_tunnel_state, one series per state set to 0/1). */
enum na_tunnel_state {
    NA_TUNNEL_DISCONNECTED = 0, /* waiting to (re)dial */
    NA_TUNNEL_CONNECTING,       /* proxy, TCP, TLS, WebSocket upgrade */
    NA_TUNNEL_HELLO,            /* hello sent, waiting for welcome */
    NA_TUNNEL_CONNECTED,        /* welcome received: registered and serving */
    NA_TUNNEL_CLOSING,          /* ending the current tunnel */
    NA_TUNNEL_STATE_COUNT
};

/* Why a tunnel attempt failed or a tunnel ended, i.e. why the agent redials. */
enum na_reconnect_reason {
    NA_RECONNECT_DIAL_FAILED = 0,  /* DNS, TCP connect or connect timeout */
    NA_RECONNECT_PROXY_FAILED,     /* the HTTPS proxy refused, failed or asked for auth (407) */
    NA_RECONNECT_TLS_FAILED,       /* TLS handshake or certificate verification */
    NA_RECONNECT_AUTH_REFUSED,     /* 401/403 on the upgrade, or goaway forbidden */
    NA_RECONNECT_OVER_CAPACITY,    /* 503/429 on the upgrade */
    NA_RECONNECT_HANDSHAKE_FAILED, /* other upgrade failure (bad answer, closed early) */
    NA_RECONNECT_CLOSED_BY_SERVER, /* goaway, GoAway or Close from the control plane */
    NA_RECONNECT_DEAD_PEER,        /* nothing received for the dead timeout */
    NA_RECONNECT_PROTOCOL_ERROR,   /* the control plane broke the protocol, or no welcome */
    NA_RECONNECT_CONNECTION_LOST,  /* the connection failed under us */
    NA_RECONNECT_REASON_COUNT
};

/* Why a stream's local dial failed (the `error` codes of PROTOCOL.md §4.7). */
enum na_dial_failure {
    NA_DIAL_REFUSED = 0,
    NA_DIAL_TIMEOUT,
    NA_DIAL_NOT_ALLOWED,
    NA_DIAL_UNREACHABLE,
    NA_DIAL_OTHER, /* protocol, busy, draining, internal */
    NA_DIAL_FAILURE_COUNT
};

/* Upper bounds (seconds) of the stream dial latency histogram; +Inf is implicit. */
#define NA_DIAL_LAT_BUCKETS 10
extern const double na_dial_lat_bounds_s[NA_DIAL_LAT_BUCKETS];

typedef struct na_stats {
    int tunnel_state;                /* enum na_tunnel_state */
    uint64_t connect_attempts_total; /* dials started */
    uint64_t connects_total;         /* welcomes received */
    uint64_t reconnects_total[NA_RECONNECT_REASON_COUNT];
    int pending_reason;            /* first cause of the current end, or -1 */
    uint64_t streams_open;         /* gauge: local sides alive */
    uint64_t streams_opened_total; /* streams whose local dial succeeded */
    uint64_t bytes_in_total;       /* tunnel payload received (WebSocket) */
    uint64_t bytes_out_total;      /* tunnel payload sent (WebSocket) */
    uint64_t dial_failures_total[NA_DIAL_FAILURE_COUNT];
    uint64_t dial_lat_buckets[NA_DIAL_LAT_BUCKETS]; /* per bucket (not cumulative) */
    uint64_t dial_lat_count;
    double dial_lat_sum_s;
} na_stats;

/* Zeroes s (no pending reason). NULL is ignored. */
void na_stats_init(na_stats *s);
/* Label value for a reason / failure / state ("dial_failed", "refused", "connected"); "unknown". */
const char *na_stats_reconnect_name(int reason);
const char *na_stats_dial_failure_name(int failure);
const char *na_stats_tunnel_state_name(int state);
/* Maps an `error` code ("refused", "timeout", ...) to enum na_dial_failure (others: OTHER). */
int na_stats_dial_failure_of(const char *code);

/*
 * Records why the current attempt/tunnel ends; the first cause recorded since
 * the last na_stats_reconnect() wins (later consequences do not overwrite it).
 */
void na_stats_end(na_stats *s, int reason);
/* Counts one reconnect under the recorded cause (CONNECTION_LOST if none) and clears it. */
void na_stats_reconnect(na_stats *s);
/*
 * The reason for a failed tunnel dial reported with a WP_ERR_* status:
 * WP_ERR_PERM auth_refused, WP_ERR_VERIFY / WP_ERR_TLS tls_failed, WP_ERR_BUSY
 * over_capacity, WP_ERR_IO / WP_ERR_TIMEOUT dial_failed, others handshake_failed.
 */
int na_stats_connect_reason(int wp_err);
/* One successful local dial that took seconds. */
void na_stats_dial_ok(na_stats *s, double seconds);
/* One failed local dial, by `error` code. */
void na_stats_dial_failed(na_stats *s, const char *code);

#endif
