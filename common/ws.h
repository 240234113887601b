/*
 * ws.h — WebSocket (RFC 6455) over a wp_conn, client and server, on wslay.
 *
 * The wire is driven h2o-style by a "proceed" loop: bytes from the
 * connection are appended to a bounded input buffer and wslay consumes them
 * through its recv callback; wslay's send callback writes into the
 * connection's bounded write queue (a refusal stops the loop until the
 * connection drains). Frames are pre-checked before wslay sees them, so that
 * the limits hold before a byte of an oversized message is buffered:
 *   - RSV bits, reserved opcodes, a frame's masking against its role (a
 *     server needs masked frames, a client unmasked ones), non-minimal
 *     lengths, oversized or fragmented control frames, and continuation
 *     errors close with 1002 (on_error WP_ERR_PROTO);
 *   - a text message over max_text or a binary one over max_binary closes
 *     with 1009 as soon as a frame header shows it (on_error WP_ERR_LIMIT);
 *   - invalid UTF-8 in a text message closes with 1007 (on_error WP_ERR_PROTO);
 *   - no extension is ever negotiated (permessage-deflate offers are ignored
 *     by the server; a client fails a 101 that names one).
 * Ping is answered with Pong automatically. Messages are delivered whole
 * (fragments are reassembled within the limits), except binary messages for
 * an owner that sets on_binary_chunk (streamed as they arrive, no copy).
 *
 * Lifetime: a wp_ws is freed after its connection closed; on_freed is its
 * last callback. Exactly one "end" report reaches the owner, unless it
 * aborted first: on_close (a Close frame was received — whoever started the
 * closing handshake) or on_error (anything else). After it no message or
 * drain callback follows. Every callback may call any wp_ws_* function,
 * including wp_ws_abort; nothing is freed inside a callback stack.
 *
 * Closing (PROTOCOL.md §2.3): wp_ws_close() lets messages queued before it
 * go out, then sends Close and waits up to close_timeout_ms for the peer's
 * Close. A peer's Close is answered (echoing its code) once the messages we
 * had queued are on the wire; so is a Close failing the connection
 * (1002/1007/1009). After Close went both ways (or after a failing Close) the
 * sending side is shut down (TLS close_notify + FIN) and the connection is
 * closed on the peer's EOF or after close_timeout_ms.
 *
 * Header values (the Authorization header carries a token) are never logged.
 */
#ifndef WP_WS_H
#define WP_WS_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "conn.h"
#include "http.h"
#include "tls.h"

typedef struct wp_ws wp_ws;

typedef struct wp_ws_limits {
    size_t max_binary;             /* largest binary message received: WP_WS_MSG_MAX (1 MiB) */
    size_t max_text;               /* largest text message received: WP_CONTROL_MSG_MAX (64 KiB) */
    size_t max_queued;             /* outbound bytes queued (ws + connection): 8 MiB */
    unsigned close_timeout_ms;     /* closing handshake / EOF wait: WP_CLOSE_TIMEOUT_MS */
    unsigned handshake_timeout_ms; /* client: connect + TLS + upgrade: WP_HANDSHAKE_TIMEOUT_MS */
} wp_ws_limits;

/* Fills the defaults above. Zero fields in limits passed to this module take them too. */
void wp_ws_limits_default(wp_ws_limits *l);

typedef struct wp_ws_callbacks {
    /* A complete text message (valid UTF-8, NOT NUL-terminated; valid during the call). */
    void (*on_text)(wp_ws *ws, const char *p, size_t n, void *ud);
    /* A complete binary message (valid during the call). */
    void (*on_binary)(wp_ws *ws, const uint8_t *p, size_t n, void *ud);
    /* The peer's Close arrived (in answer to ours or first): code is its status code (1005
     * when it had none), reason its reason bytes (not NUL-terminated, <= 123 bytes). */
    void (*on_close)(wp_ws *ws, int code, const char *reason, size_t reason_len, void *ud);
    /* The WebSocket ended without a received Close: WP_ERR_CLOSED (EOF, peer vanished),
     * WP_ERR_PROTO (peer broke RFC 6455: we sent 1002/1007), WP_ERR_LIMIT (message too big:
     * we sent 1009), WP_ERR_TIMEOUT (no Close within close_timeout_ms), WP_ERR_IO /
     * WP_ERR_TLS / WP_ERR_NOMEM. */
    void (*on_error)(wp_ws *ws, int err, void *ud);
    /* Queued bytes fell to max_queued / 4 after a send was refused with WP_ERR_LIMIT. */
    void (*on_drain)(wp_ws *ws, void *ud);
    /* Last callback, after the connection closed; ws is freed when it returns. */
    void (*on_freed)(wp_ws *ws, void *ud);
    /* Optional, for byte-stream consumers (the tunnel's mux): when set, binary messages are
     * not reassembled and on_binary is not called; their payload is handed over in order,
     * in pieces (of up to a few KiB) as it arrives, without a copy. Message boundaries are
     * not reported. max_binary still bounds each message. Chosen when a message starts. */
    void (*on_binary_chunk)(wp_ws *ws, const uint8_t *p, size_t n, void *ud);
} wp_ws_callbacks;

/* ---- handshake helpers (pure) ---- */

/* Length of a Sec-WebSocket-Accept value plus its NUL. */
#define WP_WS_ACCEPT_LEN 29

/*
 * Sec-WebSocket-Accept for a client key (RFC 6455 §4.2.2: base64(SHA-1(key +
 * GUID))). client_key: 1..128 characters (not validated further here).
 * Returns 0, WP_ERR_INVAL (NULL, empty or too long key) or WP_ERR_CRYPTO.
 */
int wp_ws_accept_key(const char *client_key, char out[WP_WS_ACCEPT_LEN]);

/*
 * Validates a WebSocket upgrade request, in PROTOCOL.md §2.2 order: method GET
 * (else 405 "method_not_allowed"), HTTP/1.1 (else 400 "bad_request"), exactly
 * one "Sec-WebSocket-Version: 13" (else 426 "upgrade_required"), an Upgrade
 * header with the token "websocket", a Connection header with the token
 * "upgrade" and exactly one Sec-WebSocket-Key that is base64 of 16 bytes (else
 * 400 "bad_request"), and `subprotocol` among the offered
 * Sec-WebSocket-Protocol tokens (else 400 "unsupported_subprotocol").
 * Sec-WebSocket-Extensions is ignored. Returns 0 when valid, else the HTTP
 * status to answer; *code (may be NULL) gets the static error code and msg
 * (cap bytes, may be NULL) a message without header values. WP_ERR_INVAL for
 * NULL req/subprotocol.
 */
int wp_ws_check_upgrade(wp_http_req *req, const char *subprotocol, const char **code, char *msg,
                        size_t cap);

/*
 * Answers a refused upgrade: JSON error body (wp_http_respond_error) plus
 * "Sec-WebSocket-Version: 13" for 426 and "Allow: GET" for 405. Same return
 * contract as wp_http_respond_error; the req is finished.
 */
int wp_ws_reject(wp_http_req *req, int status, const char *code, const char *msg);

/* ---- server ---- */

/*
 * Upgrades req (from a WP_HTTP_ROUTE_UPGRADE handler) to a server WebSocket:
 * validates it (wp_ws_check_upgrade; refused requests are answered with
 * wp_ws_reject), hijacks the connection, writes the 101 (Upgrade, Connection,
 * Sec-WebSocket-Accept, Sec-WebSocket-Protocol: subprotocol, never
 * Sec-WebSocket-Extensions) and starts delivering messages; bytes the client
 * sent after its request are processed from the loop, after this returns.
 * lim NULL = defaults (handshake_timeout_ms unused). cbs is copied.
 * Returns 0 with *out set, or: WP_ERR_INVAL (NULL argument: nothing done),
 * WP_ERR_PROTO (invalid upgrade: already answered), WP_ERR_CLOSED (the
 * connection died), WP_ERR_NOMEM / WP_ERR_LIMIT / WP_ERR_STATE / WP_ERR_CRYPTO
 * (answered with 500 where possible). Except for WP_ERR_INVAL the req is
 * finished when this returns; on failure no ws callback is ever made.
 */
int wp_ws_server_upgrade(wp_http_req *req, const char *subprotocol, const wp_ws_limits *lim,
                         const wp_ws_callbacks *cbs, void *ud, wp_ws **out);

/* ---- client ---- */

typedef struct wp_ws_connect_info {
    int http_status;           /* status of the server's answer; 0 if none arrived */
    unsigned retry_after_s;    /* Retry-After seconds of a refusal (0 if none; capped at 3600) */
    char error_code[64];       /* "error.code" of a JSON error body, "" if none */
    char error_message[256];   /* "error.message" of a JSON error body, "" if none */
    char transport_error[256]; /* why TCP/TLS failed (e.g. "certificate expired"), "" if n/a */
} wp_ws_connect_info;

/*
 * Outcome of wp_ws_client_connect: ws open (status 0) or NULL with WP_ERR_*:
 * WP_ERR_IO / WP_ERR_TLS / WP_ERR_VERIFY (connect, TLS), WP_ERR_TIMEOUT,
 * WP_ERR_CLOSED (connection ended before a complete answer), WP_ERR_PERM (401
 * or 403), WP_ERR_BUSY (503 or 429), WP_ERR_PROTO (other status, or a 101
 * with a wrong Accept, Upgrade or Connection, an unexpected subprotocol, or
 * an extension). info is never NULL and valid during the call.
 */
typedef void (*wp_ws_connect_cb)(wp_ws *ws, int status, const wp_ws_connect_info *info, void *ud);

/*
 * Opens a client WebSocket to url: "wss://host[:port]/path" (tls required;
 * default port 443) or "ws://host[:port]/path" (plain: tls must be NULL;
 * default port 80). No user info, query or fragment (a token never goes in a
 * URL). Sends one GET with Host, Upgrade, Connection, a random
 * Sec-WebSocket-Key, Sec-WebSocket-Version 13, Sec-WebSocket-Protocol:
 * subprotocol and extra_headers (NULL-terminated "Name: value" strings, e.g.
 * "Authorization: Bearer x"; names must be tokens, values free of CR/LF/NUL,
 * and none of the headers above nor Content-Length/Transfer-Encoding/
 * Sec-WebSocket-Extensions). The whole exchange is bounded by
 * lim->handshake_timeout_ms. On success cb runs exactly once, later, from
 * the loop — unless wp_ws_abort(*out) is called first, in which case it never
 * runs. *out (may be NULL) receives the pending ws at once, for wp_ws_abort
 * only; it is invalid after cb reported a failure or after the abort. lim NULL
 * = defaults; cbs is copied and used once the ws is open (on_freed only for a
 * ws that was delivered open). Returns 0, or WP_ERR_INVAL (bad URL, headers,
 * subprotocol or tls/scheme mismatch), WP_ERR_LIMIT (request over 8 KiB),
 * WP_ERR_NOMEM, WP_ERR_CRYPTO, WP_ERR_IO / WP_ERR_TLS (from wp_conn_connect),
 * in which case cb is never called.
 */
int wp_ws_client_connect(uv_loop_t *loop, const char *url, wp_tls_conf *tls,
                         const char *const *extra_headers, const char *subprotocol,
                         const wp_ws_limits *lim, const wp_ws_callbacks *cbs, void *ud,
                         wp_ws_connect_cb cb, void *cud, wp_ws **out);

/*
 * A transport for wp_ws_client_connect_via(): reaches host:port some other
 * way than a direct TCP connect (e.g. through an HTTP proxy), then runs TLS
 * when tls is not NULL (server_name: SNI and verification). Same contract as
 * wp_conn_connect(): returns 0 and later calls cb exactly once from the loop
 * (a ready connection, or NULL with a WP_ERR_* status) within about
 * timeout_ms, or returns a WP_ERR_* and never calls cb.
 */
typedef int (*wp_ws_dial_fn)(void *dial_ud, uv_loop_t *loop, const char *host, int port,
                             wp_tls_conf *tls, const char *server_name, int timeout_ms,
                             wp_conn_connect_cb cb, void *cud);

/* wp_ws_client_connect() with the transport made by dial(dial_ud, ...) (NULL: direct). */
int wp_ws_client_connect_via(wp_ws_dial_fn dial, void *dial_ud, uv_loop_t *loop, const char *url,
                             wp_tls_conf *tls, const char *const *extra_headers,
                             const char *subprotocol, const wp_ws_limits *lim,
                             const wp_ws_callbacks *cbs, void *ud, wp_ws_connect_cb cb, void *cud,
                             wp_ws **out);

/* ---- messages ---- */

/*
 * Queues one message (copied). Returns 0, WP_ERR_LIMIT (wp_ws_queued_bytes()
 * + n would exceed max_queued: nothing queued, on_drain follows), WP_ERR_INVAL
 * (n > max_queued: can never fit; or text that is not valid UTF-8),
 * WP_ERR_CLOSED (closing, closed, not open yet, or failed) or WP_ERR_NOMEM.
 */
int wp_ws_send_text(wp_ws *ws, const char *p, size_t n);
int wp_ws_send_binary(wp_ws *ws, const void *p, size_t n);
/* Queues a Ping (empty payload). 0, WP_ERR_CLOSED or WP_ERR_NOMEM. */
int wp_ws_ping(wp_ws *ws);
/* Outbound bytes not yet handed to the socket (queued messages + connection queue). */
size_t wp_ws_queued_bytes(const wp_ws *ws);

/*
 * Starts the closing handshake: messages queued earlier are sent first, then
 * Close(code, reason). code: 1000-1003, 1007-1011 or 3000-4999; reason at
 * most 123 bytes of UTF-8 (may be NULL). Messages the peer sends before its
 * Close are still delivered. on_close (peer's Close) or on_error
 * (WP_ERR_TIMEOUT after close_timeout_ms, or a failure) follows. Returns 0
 * (also when closing already), WP_ERR_INVAL or WP_ERR_CLOSED (ended/aborted).
 */
int wp_ws_close(wp_ws *ws, int code, const char *reason);

/*
 * Drops the connection at once (no Close frame). No callback but on_freed
 * follows (for a pending client connect: nothing, cb is never called).
 * Idempotent; NULL is ignored.
 */
void wp_ws_abort(wp_ws *ws);

/*
 * Backpressure: pause stops reading the socket and feeding wslay; no
 * on_text/on_binary is made until resume (frames are handed to wslay one at a
 * time, so nothing already read slips through). Resume restarts reading and
 * processes buffered bytes from the loop (never inside the call). Both return
 * 0 or WP_ERR_CLOSED.
 */
int wp_ws_pause_reading(wp_ws *ws);
int wp_ws_resume_reading(wp_ws *ws);

/* Replaces the callbacks (copied) and their user data; for handing a ws to a new owner. */
void wp_ws_set_callbacks(wp_ws *ws, const wp_ws_callbacks *cbs, void *ud);
/* Loop time (uv_now) of the last bytes received, control frames included. */
uint64_t wp_ws_last_rx_ms(const wp_ws *ws);
/* Peer "ip:port" ("" once the connection is gone or before it exists). Never NULL. */
const char *wp_ws_peer_str(const wp_ws *ws);

#endif
