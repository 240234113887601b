/*
 * services.h — the agent's local side of tunnel streams (PROTOCOL.md §6, §7, §9.1).
 *
 * Two parts:
 *   - pure decisions: an open preamble is checked against the allow-list
 *     (na_services_resolve) and a local dial failure is mapped to the
 *     `error` code of PROTOCOL.md §4.7 (na_services_dial_error_code);
 *   - na_stream: one accepted-or-pending stream bridged to its local
 *     socket (uv_pipe_t for unix:, uv_tcp_t with uv_getaddrinfo for tcp: and
 *     sandbox), with a WP_OPEN_DEADLINE_MS dial deadline and backpressure in
 *     both directions: bytes from the tunnel are written to the socket and
 *     credited (wp_mux_consumed) only when the write completed; reading the
 *     socket stops while the stream has no send room and resumes on
 *     na_stream_on_writable. FIN -> shutdown(SHUT_WR) after the writes;
 *     local EOF -> wp_mux_close_write; local error -> `error` reset + RST.
 *
 * A na_stream is created by the agent from on_stream_open and is driven by
 * the mux callbacks the agent forwards to it. It owns libuv handles and is
 * freed in its last close callback, after which host->on_freed runs. The
 * stream never calls wp_mux_* after its mux id ended (on_stream_closed, or a
 * reset it made itself), so the agent may free the mux once every stream
 * was told (wp_mux_goaway closes them all).
 */
#ifndef NA_SERVICES_H
#define NA_SERVICES_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include <wolfpack/proto.h>

#include "config.h"
#include "mux.h"
#include "stats.h"

/* Which sandbox targets may be dialled; enabled 0 (the default) refuses `sandbox`. */
typedef struct na_sandbox_policy {
    int enabled;
    int ports[NA_SANDBOX_PORTS_MAX]; /* allowed container ports (1..65535); [0] is the default */
    size_t nports;
    char name_pattern[129]; /* allowed host (container) names, glob; "" = any valid name */
    char address[256];      /* dialled instead of the host name when set (host networking) */
} na_sandbox_policy;

/*
 * The policy of cfg's --sandbox-port / --sandbox-name-pattern /
 * --sandbox-address (enabled when at least one port is configured).
 */
void na_sandbox_policy_from_config(na_sandbox_policy *sb, const na_config *cfg);

/* What a valid open preamble resolves to. */
typedef struct na_target {
    char service[WP_SERVICE_NAME_MAX + 1]; /* the allow-list name asked for */
    int kind;                              /* NA_SVC_UNIX or NA_SVC_TCP */
    char addr[256];                        /* unix socket path, or host name / IP literal */
    int port;                              /* tcp only */
} na_target;

/* Service name syntax of PROTOCOL.md §6.2: [a-z0-9][a-z0-9-]{0,31}. Returns 1 if valid. */
int na_service_name_valid(const char *s);

/* Sandbox host syntax: [A-Za-z0-9][A-Za-z0-9_.-]{0,127}. Returns 1 if valid. */
int na_sandbox_host_valid(const char *s);

/*
 * Checks the preamble JSON (json[0..len), not NUL-terminated, as handed over
 * by on_stream_open) against the allow-list cfg->services and the sandbox
 * policy sb (NULL = sandbox refused). Returns 0 with *out filled, or:
 *   WP_ERR_PROTO  malformed (not one JSON object, no string `service`,
 *                 `host`/`port` missing for sandbox, present for others, or
 *                 of the wrong type): *code = "protocol";
 *   WP_ERR_PERM   not allowed (unknown or invalid service name, sandbox
 *                 disabled, invalid host or one outside the name pattern, port
 *                 not allowed): *code = "not_allowed";
 * A sandbox preamble without `port` gets the policy's first port; the target
 * address is the policy's `address` when set, else the host name.
 *   WP_ERR_INVAL  NULL arguments (*code untouched).
 * msg (cap bytes, may be NULL) gets a one-line reason for the `error`
 * message; it echoes only names that passed their syntax check.
 */
int na_services_resolve(const na_config *cfg, const na_sandbox_policy *sb, const char *json,
                        size_t len, na_target *out, const char **code, char *msg, size_t cap);

/*
 * The `error` code (PROTOCOL.md §4.7) for a failed local dial: uv_err is a
 * negative libuv error (UV_ECONNREFUSED ...) or UV_ETIMEDOUT for the
 * deadline; resolve is nonzero when it came from uv_getaddrinfo. Never NULL.
 */
const char *na_services_dial_error_code(int uv_err, int resolve);

/* What a stream needs from the agent. All members but stats are required. */
typedef struct na_stream_host {
    uv_loop_t *loop;
    /* Sends the `error` control message for stream id (before its RST). */
    void (*send_error)(void *ud, uint32_t id, const char *code, const char *msg);
    /* The stream's memory is about to be freed (its last handle closed). */
    void (*on_freed)(void *ud);
    void *ud;
    na_stats *stats; /* optional (NULL): dial latency, failures and opens are counted here */
} na_stream_host;

typedef struct na_stream na_stream;

/*
 * Creates the local side of stream `id` on mux m and starts dialing t
 * asynchronously (deadline WP_OPEN_DEADLINE_MS; deadline_ms 0 = that). Sets
 * itself as the stream's user data. On success the stream later either
 * accepts (wp_mux_accept) or refuses (`error` + wp_mux_reset) by itself.
 * window is the mux's initial window (bound of bytes held before the dial
 * completes). Returns 0 with *out set, or WP_ERR_NOMEM / WP_ERR_INVAL (nothing
 * created, the caller refuses the stream).
 */
int na_stream_start(const na_stream_host *host, wp_mux *m, uint32_t id, const na_target *t,
                    uint32_t window, uint64_t deadline_ms, na_stream **out);

/* Mux callbacks for a stream, forwarded by the agent (sud = the na_stream). */
void na_stream_on_data(na_stream *s, const uint8_t *p, size_t n);
void na_stream_on_fin(na_stream *s);
void na_stream_on_writable(na_stream *s);
/* The mux forgot the stream (reason: wp_mux_close_reason). The local side is closed. */
void na_stream_on_closed(na_stream *s, int reason);

/* Nonzero while the stream still owns a mux id (dialing, open or half-closed). */
int na_stream_is_live(const na_stream *s);

#endif
