/*
 * tunnel.h — wolfpackd's side of the agent tunnel (proto/PROTOCOL.md): the
 * `GET /api/v1/tunnel` WebSocket endpoint, the in-memory registry node id →
 * tunnel, the stream API the rest of the control plane uses to reach a
 * node's services, the operator's `CONNECT <node>:<service>` bridge
 * (connect.c) and the shutdown of all of it.
 *
 * One wolfpackd process is one replica: it generates a random replica id at
 * start (`welcome.replica_id`) and reports replica_count 1. A tunnel is
 * registered once its `hello` was accepted; the database learns about it
 * through nodes.h (cp_nodes_hello / cp_nodes_heartbeat /
 * cp_nodes_disconnected), and a periodic cp_nodes_health_sweep closes the
 * tunnels of nodes whose heartbeats stopped.
 *
 * Every function here runs on the server's loop thread. Functions taking a
 * cp_server work (and report "no tunnel") before cp_tunnels_init and after
 * cp_tunnels_shutdown started.
 */
#ifndef CP_TUNNEL_H
#define CP_TUNNEL_H

#include <stddef.h>
#include <stdint.h>

#include "server.h"

typedef struct cp_tunnels cp_tunnels;
typedef struct cp_stream cp_stream;

/* ---- lifecycle ---- */

/*
 * Creates the registry of s (s->tunnels), generates the replica id, registers
 * the tunnel route and the CONNECT handler on s->http and starts the health
 * sweep timer. Call once from cp_server_start, after the HTTP server exists.
 * Returns 0, WP_ERR_NOMEM, WP_ERR_CRYPTO (no randomness) or a router error;
 * on failure s->tunnels is NULL and nothing is left open.
 */
int cp_tunnels_init(cp_server *s);

/*
 * Ends every tunnel (goaway `shutdown`, mux GoAway, WebSocket Close 1001),
 * which closes every stream and every CONNECT bridge, aborts what has not
 * closed after WP_CLOSE_TIMEOUT_MS plus a second, closes the registry's
 * timer and then calls cb(s) from the loop (never from inside this call when
 * a registry exists; at once when s has none). The registry is freed after
 * cb once no database callback of it is outstanding. Call after the HTTP
 * server stopped accepting (no new tunnels).
 */
void cp_tunnels_shutdown(cp_server *s, void (*cb)(cp_server *s));

/* ---- registry ---- */

/* The replica id sent in `welcome` ("" without a registry). Never NULL. */
const char *cp_tunnel_replica_id(const cp_server *s);

/* Registered tunnels (a `welcome` was sent and the tunnel is not ending). */
size_t cp_tunnel_count(const cp_server *s);

/* 1 if node_id has a registered tunnel on this replica, else 0 (also for NULL/invalid ids). */
int cp_tunnel_connected(const cp_server *s, const char *node_id);

/* What the registry knows about one connected node. */
typedef struct cp_tunnel_info {
    char node_id[64];
    char instance_id[33];
    char version[65];          /* agent software version from hello */
    char peer[64];             /* agent "ip:port" */
    char token_id[40];         /* id of the token the agent authenticated with */
    int64_t connected_at_ms;   /* Unix ms of the welcome */
    int64_t last_heartbeat_ms; /* Unix ms of the last accepted heartbeat, 0 if none yet */
    uint64_t heartbeats;       /* heartbeats accepted on this tunnel */
    size_t streams;            /* open streams */
    int64_t rtt_ms;            /* last mux Ping RTT, -1 if none yet */
    int draining;              /* the agent sent `drain`, or hello.draining */
} cp_tunnel_info;

/* Fills *out for node_id's tunnel. Returns 0, WP_ERR_NOT_FOUND or WP_ERR_INVAL (NULL). */
int cp_tunnel_info_get(const cp_server *s, const char *node_id, cp_tunnel_info *out);

/*
 * Calls fn once per registered tunnel, in registration order (fn must not
 * end tunnels). Returns the number of calls.
 */
size_t cp_tunnel_foreach(const cp_server *s, void (*fn)(const cp_tunnel_info *info, void *ud),
                         void *ud);

/*
 * Ends every tunnel (registered or still waiting for its hello) that
 * authenticated with token token_id: goaway `forbidden` ("token revoked"),
 * close 1008. Called when a token is revoked. Returns the number of tunnels
 * ended (0 when none or s has no registry).
 */
int cp_tunnel_disconnect_token(cp_server *s, const char *token_id);

/*
 * Ends node_id's tunnel with goaway `reason` (one of PROTOCOL.md §10.3's
 * reasons, WP_GOAWAY_REASON_*; the close code follows from it) and the
 * human-readable message (may be NULL). Returns 0, WP_ERR_NOT_FOUND (no
 * tunnel), WP_ERR_INVAL (NULL id or unknown reason).
 */
int cp_tunnel_close_node(cp_server *s, const char *node_id, const char *reason,
                         const char *message);

/* ---- streams (the internal API of the Wolf client, proxies, CONNECT) ---- */

/*
 * Stream callbacks; `ud` is the one given to cp_tunnel_open_stream. A
 * stream's life: on_open(err 0) ... on_closed, or on_open(err < 0) alone;
 * cp_stream_reset ends it with no further callback. The cp_stream is freed
 * right after the final callback returns (inside it, cp_stream_* calls on st
 * are harmless no-ops). Any callback may call any cp_stream_* function.
 */
typedef struct cp_stream_callbacks {
    /*
     * The agent accepted the stream (err 0, reason "") or it failed (final):
     * err WP_ERR_IO with reason = the agent's `error` code (`not_allowed`,
     * `refused`, `unreachable`, `timeout`, `protocol`, `busy`, `draining`,
     * `internal`) or "reset" (RST without an `error`); err WP_ERR_TIMEOUT,
     * reason "timeout" (no ACK within WP_OPEN_ACK_TIMEOUT_MS); err
     * WP_ERR_CLOSED, reason "tunnel_closed" (the tunnel ended first).
     */
    void (*on_open)(cp_stream *st, int err, const char *reason, void *ud);
    /* n > 0 bytes from the service. Call cp_stream_consumed once they left your buffers. */
    void (*on_data)(cp_stream *st, const uint8_t *p, size_t n, void *ud);
    /* The service finished sending (FIN), after all its data. */
    void (*on_fin)(cp_stream *st, void *ud);
    /* A cp_stream_write that accepted less than offered can now accept more. */
    void (*on_writable)(cp_stream *st, void *ud);
    /*
     * Final: err 0 (FIN both ways, everything delivered), WP_ERR_IO (reset by
     * the agent; reason its `error` code or "reset"), WP_ERR_TIMEOUT
     * ("reaped": half-closed and idle too long), WP_ERR_CLOSED
     * ("tunnel_closed").
     */
    void (*on_closed)(cp_stream *st, int err, const char *reason, void *ud);
} cp_stream_callbacks;

/*
 * Opens a stream to node_id with the open preamble preamble_json (the JSON
 * object of PROTOCOL.md §6.2, e.g. {"service":"wolf"}; 1..WP_PREAMBLE_MAX
 * bytes, sent as is). cbs is copied; on_open and on_closed are required.
 * Callbacks come later from the loop, never from inside this call. Returns 0
 * with *out set, or (no callback ever): WP_ERR_INVAL (NULL argument, missing
 * callback, bad preamble length), WP_ERR_NOT_FOUND (no tunnel for node_id),
 * WP_ERR_CLOSED (the tunnel is draining or ending), WP_ERR_BUSY / WP_ERR_LIMIT
 * (a per-tunnel budget: pending opens, buffered bytes, open streams),
 * WP_ERR_NOMEM.
 */
int cp_tunnel_open_stream(cp_server *s, const char *node_id, const char *preamble_json,
                          const cp_stream_callbacks *cbs, void *ud, cp_stream **out);

/*
 * Queues up to n bytes for the service (allowed before on_open: they travel
 * with or right after the SYN). Returns the number accepted (0..n, bounded by
 * the stream's send window); when less than n, stop reading your source until
 * on_writable. Errors: WP_ERR_INVAL (NULL), WP_ERR_STATE (after
 * cp_stream_close_write), WP_ERR_CLOSED (stream ended or inside its final
 * callback), WP_ERR_NOMEM.
 */
int cp_stream_write(cp_stream *st, const void *p, size_t n);

/* Bytes cp_stream_write would accept now (0 when closed). */
size_t cp_stream_write_room(const cp_stream *st);

/*
 * n bytes delivered by on_data have left your buffers (written onward): the
 * agent gets credit for them (in batches of half a window). Never call it
 * for bytes you still hold: that is what keeps a slow consumer from being
 * flooded. Returns 0, WP_ERR_INVAL (n more than delivered and unconsumed),
 * WP_ERR_CLOSED (stream or tunnel ended: nothing to do).
 */
int cp_stream_consumed(cp_stream *st, size_t n);

/* Half-closes our sending side (FIN after the queued bytes). Idempotent. 0 or WP_ERR_CLOSED. */
int cp_stream_close_write(cp_stream *st);

/*
 * Replaces the callbacks and user data of an opened stream (after on_open
 * with err 0): hands the stream over to another consumer, e.g. a proxy
 * passing a WebSocket upgrade to the byte bridge (bridge.h). on_closed is
 * required (on_open is never called again). Returns 0, WP_ERR_INVAL (NULL,
 * missing on_closed) or WP_ERR_CLOSED (ended, or inside its final callback).
 */
int cp_stream_set_callbacks(cp_stream *st, const cp_stream_callbacks *cbs, void *ud);

/* Aborts the stream (RST), frees it, no further callback. NULL is ignored; so is a call
 * from inside the stream's final callback (it is freed right after anyway). */
void cp_stream_reset(cp_stream *st);

/* The stream id on its tunnel (0 once ended). */
uint32_t cp_stream_id(const cp_stream *st);

#endif
