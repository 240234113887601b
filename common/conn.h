/*
 * conn.h — one byte-stream connection: a libuv TCP handle plus an optional TLS session.
 *
 * A wp_conn delivers PLAINTEXT to its owner through callbacks and accepts
 * plaintext to send; TLS (server or client) runs through memory buffers
 * (tls.h) underneath. Server-side connections come from wp_conn_accept() on
 * a listening socket, client-side ones from wp_conn_connect() (non-blocking
 * DNS with uv_getaddrinfo, TCP connect, TLS client handshake).
 *
 * Rules (libuv / h2o style):
 *   - the uv_tcp_t is embedded; the wp_conn is freed only after the last
 *     close callback, right after on_close has been called;
 *   - wp_conn_close() may be called from any callback (on_data included), is
 *     idempotent, and after it no callback but on_close is ever made;
 *   - one uv_write in flight at a time; wp_conn_write() copies into a bounded
 *     queue (WP_ERR_LIMIT when full, nothing queued) and on_drain fires when
 *     the queue falls to a quarter of its maximum after it had been refused or
 *     had grown above that mark;
 *   - TLS server handshakes are admitted through a wp_conn_gate. A
 *     connection takes a handshake slot only when its first bytes (the
 *     ClientHello) arrive; silent connections hold no slot. At most
 *     max_active handshakes run concurrently; up to max_queued more (bytes
 *     buffered, reading stopped) wait in FIFO order; beyond that a connection
 *     is closed when its bytes arrive. A connection that has not finished its
 *     handshake within handshake_timeout_ms of accept (and again of getting
 *     a slot) is closed. Failures are logged at debug level without key
 *     material.
 */
#ifndef WP_CONN_H
#define WP_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "tls.h"

typedef struct wp_conn wp_conn;

typedef struct wp_conn_callbacks {
    /* Server TLS: handshake finished, application data may flow. Not called for plain
     * connections (they are ready at once) nor for client connections (see connect cb). */
    void (*on_ready)(wp_conn *c, void *ud);
    /* Plaintext received. Not called again after wp_conn_read_stop() until wp_conn_read_start(). */
    void (*on_data)(wp_conn *c, const uint8_t *p, size_t n, void *ud);
    /* Peer finished sending (TCP FIN or TLS close_notify). Reading stops; writing may go on. */
    void (*on_eof)(wp_conn *c, void *ud);
    /* Read/write/TLS failure (WP_ERR_*). The connection is closed right after it returns. */
    void (*on_error)(wp_conn *c, int err, void *ud);
    /* Write queue fell to its low-water mark (max_write_queue / 4). */
    void (*on_drain)(wp_conn *c, void *ud);
    /* Last callback: the handle is closed; the wp_conn is freed when this returns. */
    void (*on_close)(wp_conn *c, void *ud);
} wp_conn_callbacks;

typedef struct wp_conn_limits {
    size_t max_write_queue;        /* bytes queued (plus in flight) for the socket; 4 MiB */
    unsigned handshake_timeout_ms; /* TLS handshake deadline, also for waiting in the gate; 10 s */
} wp_conn_limits;

/* Fills the defaults above. */
void wp_conn_limits_default(wp_conn_limits *l);

/*
 * Handshake admission control for a listener/server, embedded in its owner and
 * shared by the connections it accepts. Must outlive every connection that was
 * accepted with it and has not finished its handshake (the HTTP server frees it
 * after its last connection closed).
 */
typedef struct wp_conn_gate {
    size_t max_active; /* concurrent handshakes (default 64) */
    size_t max_queued; /* connections waiting for a slot */
    size_t active;
    size_t queued;
    wp_conn *head; /* FIFO of waiting connections */
    wp_conn *tail;
} wp_conn_gate;

/* Initializes an empty gate. max_active 0 is treated as 1. */
void wp_conn_gate_init(wp_conn_gate *g, size_t max_active, size_t max_queued);

/*
 * Accepts one pending connection from listener (call from its connection
 * callback). tls NULL = plain; otherwise a TLS server session on tls (a
 * reference is taken) admitted through gate (required with tls). Reading
 * starts at once. A TLS connection whose ClientHello finds the gate's queue
 * full is failed later with on_error(WP_ERR_BUSY). cbs is copied. Returns 0
 * with *out set, or WP_ERR_IO / WP_ERR_NOMEM / WP_ERR_TLS — nothing to close,
 * no callbacks.
 */
int wp_conn_accept(uv_stream_t *listener, wp_tls_conf *tls, wp_conn_gate *gate,
                   const wp_conn_limits *lim, const wp_conn_callbacks *cbs, void *ud,
                   wp_conn **out);

/* Outcome of wp_conn_connect: conn is ready (TLS handshake done) with status 0, or NULL with
 * a WP_ERR_* (WP_ERR_IO resolve/connect failure, WP_ERR_TIMEOUT, WP_ERR_TLS, WP_ERR_VERIFY). */
typedef void (*wp_conn_connect_cb)(wp_conn *c, int status, void *ud);

/*
 * During a failing wp_conn_connect callback (conn NULL): a one-line reason
 * without secrets, e.g. the TLS verification failure ("certificate expired").
 * "" outside such a callback. Loop-thread only.
 */
const char *wp_conn_connect_error(void);

/*
 * Dials host:port (name or IP literal; each resolved address is tried in
 * order), TLS when tls is not NULL (server_name for SNI/verification, NULL =
 * host). timeout_ms (> 0) bounds resolve + connect + handshake. On success
 * cb runs exactly once, later, from the loop; the returned connection has no
 * callbacks and is not reading until the owner calls wp_conn_set_callbacks()
 * and wp_conn_read_start(). Returns 0, or WP_ERR_INVAL / WP_ERR_NOMEM /
 * WP_ERR_IO / WP_ERR_TLS, in which case cb is never called.
 */
int wp_conn_connect(uv_loop_t *loop, const char *host, int port, wp_tls_conf *tls,
                    const char *server_name, int timeout_ms, const wp_conn_limits *lim,
                    wp_conn_connect_cb cb, void *ud);

/*
 * As wp_conn_connect() over an already connected TCP socket fd (e.g. a tunnel
 * through an HTTP proxy): the connection adopts fd, runs the TLS client
 * handshake when tls is not NULL (server_name required: SNI and
 * verification), and reports through cb exactly once, later, from the loop
 * (timeout_ms bounds the handshake). fd is the connection's in every case:
 * closed on failure. Returns 0, or WP_ERR_INVAL / WP_ERR_NOMEM / WP_ERR_IO
 * (uv_tcp_open refused fd) / WP_ERR_TLS, in which case cb is never called.
 */
int wp_conn_open_fd(uv_loop_t *loop, uv_os_sock_t fd, wp_tls_conf *tls, const char *server_name,
                    int timeout_ms, const wp_conn_limits *lim, wp_conn_connect_cb cb, void *ud);

/* Replaces the callbacks (copied) and their user data; used to hand a connection over. */
void wp_conn_set_callbacks(wp_conn *c, const wp_conn_callbacks *cbs, void *ud);

/*
 * Queues n bytes (copied; TLS encrypts them first). Returns 0, WP_ERR_LIMIT
 * (queue would exceed max_write_queue: nothing queued, wait for on_drain),
 * WP_ERR_CLOSED (closing, shut down, or failed), WP_ERR_STATE (TLS handshake
 * not finished) or WP_ERR_TLS / WP_ERR_NOMEM.
 */
int wp_conn_write(wp_conn *c, const void *p, size_t n);
/*
 * Queues several buffers atomically: either all of them (0) or none
 * (WP_ERR_LIMIT, same contract as wp_conn_write). Used for framed output
 * (chunk header + data + CRLF) that must not be split by a refusal.
 */
int wp_conn_writev(wp_conn *c, const uv_buf_t *bufs, size_t nbufs);
/*
 * Queues up to WP_CONN_CTL_MAX bytes even when the queue is above
 * max_write_queue: small protocol control data (an error answer, "100
 * Continue", a chunked terminator) that must not be refused. Same returns as
 * wp_conn_write except WP_ERR_LIMIT; WP_ERR_INVAL if n > WP_CONN_CTL_MAX.
 */
#define WP_CONN_CTL_MAX 4096
int wp_conn_write_ctl(wp_conn *c, const void *p, size_t n);
/* Bytes queued or in flight. */
size_t wp_conn_write_queued(const wp_conn *c);
/*
 * Asks for on_drain after the next completed write that leaves the queue at or
 * below a quarter of its maximum (layers with their own, smaller queue limits
 * use this). No effect while nothing is queued: there is nothing to wait for.
 */
void wp_conn_want_drain(wp_conn *c);

/* Starts/stops delivering on_data (backpressure). Both return 0 or WP_ERR_CLOSED. */
int wp_conn_read_start(wp_conn *c);
int wp_conn_read_stop(wp_conn *c);

/*
 * Graceful end of our sending side: flushes the queue, sends TLS close_notify,
 * then shuts the TCP write side. Later writes fail with WP_ERR_CLOSED. The
 * connection stays open (reading) until closed. 0 or WP_ERR_CLOSED.
 */
int wp_conn_shutdown(wp_conn *c);

/* Schedules the close (pending writes are dropped); on_close follows from the loop. Idempotent. */
void wp_conn_close(wp_conn *c);
/* Nonzero once wp_conn_close() was called (or the connection failed). */
int wp_conn_is_closing(const wp_conn *c);

/* Peer address (zeroed family AF_UNSPEC if unknown); never NULL. */
const struct sockaddr *wp_conn_peer_addr(const wp_conn *c);
/* Peer address as "ip:port" (WP_ADDR_STRLEN), "" if unknown; never NULL. */
const char *wp_conn_peer_str(const wp_conn *c);
int wp_conn_is_tls(const wp_conn *c);
wp_tls *wp_conn_tls(wp_conn *c); /* NULL for plain connections */
uv_loop_t *wp_conn_loop(const wp_conn *c);

#endif
