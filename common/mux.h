/*
 * mux.h — the tunnel's stream multiplexer (PROTOCOL.md §5.4-§10), a pure state machine.
 *
 * One wp_mux is one session of streams over one tunnel. It never does I/O and
 * never reads a clock: the owner feeds received bytes (wp_mux_feed), pulls
 * bytes to send (wp_mux_pull), passes the time in (now_ms arguments) and
 * drives timers with wp_mux_tick / wp_mux_next_deadline. Everything else is
 * reported through callbacks. Both ends use it:
 *
 *   WP_MUX_CLIENT  opens streams (even ids 2, 4, ...): wolfpackd, which
 *                  PROTOCOL.md calls "the server".
 *   WP_MUX_SERVER  accepts streams: wolfpack-agent ("the agent").
 *
 * Streams (all identified by id; the owner never holds a stream pointer):
 *   client: wp_mux_open -> SYN (preamble + first data) -> on_stream_ack, or
 *           on_stream_closed(WP_MUX_CLOSE_RESET) when refused, or
 *           on_stream_closed(WP_MUX_CLOSE_OPEN_TIMEOUT) after open_ack_timeout_ms.
 *   server: on_stream_open(preamble) -> wp_mux_accept (WindowUpdate|ACK) or
 *           wp_mux_reset (RST). SYNs over a budget, while draining, or with a
 *           malformed preamble are refused by the mux itself: RST plus
 *           on_stream_refused(why), so the owner can send the `error` message.
 *   both:   wp_mux_write -> Data; on_stream_data -> ... -> wp_mux_consumed
 *           (credit is returned only then, batched at half the window);
 *           wp_mux_close_write -> FIN after queued data; on_stream_fin;
 *           FIN both ways -> on_stream_closed(WP_MUX_CLOSE_DONE).
 *
 * Every stream the owner learnt about (opened, or announced by on_stream_open)
 * ends with exactly one on_stream_closed, EXCEPT when the owner ends it itself
 * with wp_mux_reset (or wp_mux_free): owner-initiated ends never call back.
 *
 * Output and on_writable (edge-triggered): the mux is "armed" at creation and
 * whenever a call returns with nothing left to pull (after a wp_mux_pull that
 * emptied the output, or after the peer's RST discarded the only queued data:
 * wp_mux_want_pull() is then 0 and the owner stops pulling). When output becomes
 * available while armed, the mux disarms and calls on_writable once. After
 * that the owner must keep calling wp_mux_pull until wp_mux_want_pull() is 0
 * (or pull returns 0); if it stops earlier because its transport is full, it
 * must resume pulling on its own when the transport drains: no further
 * on_writable comes until a pull has emptied the output.
 *
 * Clock: now_ms is any monotonic millisecond clock (uv_now). Calls without a
 * now_ms argument (open, write, pull, ...) do not know the time: events they
 * cause (a SYN sent, Data sent) are time-stamped at the next wp_mux_feed /
 * wp_mux_tick / wp_mux_touch, so timeouts can be late by that gap, never
 * early. wp_mux_next_deadline returns "now" while an open awaits its stamp so
 * that the owner ticks at once. The liveness clock starts at the first
 * feed/tick/touch (next_deadline returns 0 before that).
 *
 * Re-entrancy: callbacks may call any wp_mux_* function on the same mux
 * (reset or write a stream from inside its own data callback, open, accept,
 * goaway, pull...), with two rules:
 *   - wp_mux_feed must not be called from inside a callback of wp_mux_feed
 *     (it returns WP_ERR_STATE);
 *   - wp_mux_free inside a callback is deferred: the mux is freed when the
 *     outermost wp_mux_* call returns, every call in between returns
 *     WP_ERR_CLOSED (or does nothing) and no further callback is made.
 * Streams ended inside a callback are freed only when the outermost call
 * returns, so the mux never touches freed memory.
 * Which calls may call back: wp_mux_feed, wp_mux_tick, wp_mux_pull and
 * wp_mux_goaway call any stream/session callback. wp_mux_accept, wp_mux_reset
 * and wp_mux_consumed call on_error and on_stream_closed only when a full
 * control queue makes them fail the session (WP_ERR_LIMIT). Every call may,
 * just before it returns, call on_stream_writable (streams blocked on the
 * tunnel budget that have room again) and on_writable. wp_mux_free, the
 * getters, wp_mux_drain and wp_mux_next_deadline never call back.
 *
 * Errors: a protocol violation by the peer queues a GoAway frame with the
 * right code (the only frame pull returns from then on), reports on_error
 * with a reason, closes every stream (on_stream_closed(WP_MUX_CLOSE_SESSION))
 * and makes the mux refuse further input (sticky; see wp_mux_error).
 */
#ifndef WP_MUX_H
#define WP_MUX_H

#include <stddef.h>
#include <stdint.h>

#include <wolfpack/proto.h>

#include "buf.h"

typedef struct wp_mux wp_mux;

typedef enum wp_mux_role {
    WP_MUX_CLIENT = 1, /* opens streams (wolfpackd) */
    WP_MUX_SERVER = 2  /* accepts streams (wolfpack-agent) */
} wp_mux_role;

/* The `reason` of on_stream_closed. */
typedef enum wp_mux_close_reason {
    WP_MUX_CLOSE_DONE = 0,         /* FIN went both ways (all received data was delivered) */
    WP_MUX_CLOSE_RESET = 1,        /* the peer sent RST (before the ACK: the open was refused) */
    WP_MUX_CLOSE_OPEN_TIMEOUT = 2, /* client: no ACK/RST within open_ack_timeout_ms; RST sent */
    WP_MUX_CLOSE_REAPED = 3,       /* half-closed, no Data for reap_timeout_ms; RST sent */
    WP_MUX_CLOSE_SESSION = 4       /* the session ended: GoAway (either way), error, or dead */
} wp_mux_close_reason;

/* "done", "reset", "open_timeout", "reaped", "session" or "unknown". Never NULL. */
const char *wp_mux_close_reason_name(int reason);

/*
 * Limits and timers. wp_mux_config_default fills the PROTOCOL.md values;
 * tests shrink them. initial_window must be the same at both ends (v1 fixes
 * it at WP_STREAM_INITIAL_WINDOW); credit is returned in batches of half the
 * stream's current receive window.
 *
 * Window growth (PROTOCOL.md §7.1): send_window_max is what this end accepts
 * as a sender and announces as `stream_window_max` in hello/welcome (a
 * WindowUpdate raising a send window above it is a protocol error);
 * recv_window_max is how far this end grows its receive windows, and must
 * not exceed what the peer announced. 0 means initial_window (for
 * recv_window_max: never grow; the default, since the peer's value is known
 * only from its hello/welcome).
 */
typedef struct wp_mux_config {
    uint32_t initial_window;      /* per stream per direction; max_data..WP_STREAM_INITIAL_WINDOW */
    uint32_t max_data;            /* largest Data payload this end sends; 1..WP_FRAME_MAX_DATA */
    uint32_t write_slack;         /* a stream queues at most send window + this (default 0) */
    uint32_t max_streams;         /* streams opening, open or half-closed (WP_TUNNEL_MAX_STREAMS) */
    uint32_t max_pending_syn;     /* client: un-ACKed opens; server: un-accepted SYNs */
    uint32_t max_ctrl_frames;     /* queued control frames; >= 4 (WP_TUNNEL_MAX_CTRL_FRAMES) */
    size_t max_buffered;          /* queued + delivered-unconsumed bytes (WP_TUNNEL_MAX_BUFFERED) */
    uint64_t ping_interval_ms;    /* Ping after this long without a received byte */
    uint64_t dead_timeout_ms;     /* nothing received for this long: dead */
    uint64_t reap_timeout_ms;     /* half-closed stream without Data for this long: RST */
    uint64_t open_ack_timeout_ms; /* client: wait this long for ACK/RST after the SYN */
    uint32_t send_window_max;     /* 0 or initial_window..WP_STREAM_WINDOW_LIMIT (default _MAX) */
    uint32_t recv_window_max;     /* 0 or initial_window..WP_STREAM_WINDOW_LIMIT (default 0) */
    uint64_t window_grow_ms;      /* grow when half a window is consumed faster (and < 2 RTT) */
} wp_mux_config;

/* Fills *cfg with the PROTOCOL.md defaults (proto.h). Never fails. */
void wp_mux_config_default(wp_mux_config *cfg);

/* Returns 0 if *cfg is usable, WP_ERR_CONFIG otherwise (WP_ERR_INVAL for NULL). */
int wp_mux_config_check(const wp_mux_config *cfg);

/*
 * Callbacks; every member may be NULL (the event is then ignored). `ud` is
 * the mux's user data, `sud` the stream's (NULL until set by wp_mux_open,
 * wp_mux_accept or wp_mux_set_stream_ud). Pointers passed in are valid only
 * during the call.
 */
typedef struct wp_mux_callbacks {
    /* Output became available (see "Output and on_writable" above). */
    void (*on_writable)(wp_mux *m, void *ud);
    /*
     * Server: the peer opened stream `id` with this preamble JSON (not
     * NUL-terminated, 1..WP_PREAMBLE_MAX bytes; validating it is the owner's
     * job). Answer now or later with wp_mux_accept or wp_mux_reset. Data and
     * FIN that arrive before the answer are delivered as usual (sud NULL):
     * the owner holds them (at most one window) until its local side is up.
     */
    void (*on_stream_open)(wp_mux *m, void *ud, uint32_t id, const char *preamble, size_t len);
    /*
     * Server: the mux refused the peer's SYN for `id` and queued the RST.
     * why: WP_ERR_BUSY (a budget, §8: send `error` busy), WP_ERR_CLOSED
     * (draining: `error` draining), WP_ERR_PROTO (malformed preamble: `error`
     * protocol). Send the `error` message now; the RST leaves at the next pull.
     */
    void (*on_stream_refused)(wp_mux *m, void *ud, uint32_t id, int why);
    /* Client: the peer accepted the stream (WindowUpdate|ACK). */
    void (*on_stream_ack)(wp_mux *m, void *ud, uint32_t id, void *sud);
    /* n > 0 bytes received. Call wp_mux_consumed when they have left your buffers. */
    void (*on_stream_data)(wp_mux *m, void *ud, uint32_t id, void *sud, const uint8_t *p, size_t n);
    /* The peer half-closed (FIN), after all its data was delivered. */
    void (*on_stream_fin)(wp_mux *m, void *ud, uint32_t id, void *sud);
    /* A wp_mux_write that accepted less than offered can now accept >= 1 byte. Once per block. */
    void (*on_stream_writable)(wp_mux *m, void *ud, uint32_t id, void *sud);
    /* The stream is gone (reason: wp_mux_close_reason); `id` is unknown from now on. */
    void (*on_stream_closed)(wp_mux *m, void *ud, uint32_t id, void *sud, int reason);
    /* The peer sent GoAway (code 0, 1 or 2; unknown codes arrive as 2). Terminal. */
    void (*on_goaway)(wp_mux *m, void *ud, uint32_t code);
    /*
     * This end detected a fatal error and queued GoAway: err is WP_ERR_PROTO
     * (peer violation, code 1), WP_ERR_LIMIT (control queue overflow from local
     * calls, code 2) or WP_ERR_NOMEM (code 2). reason is one line for the log.
     */
    void (*on_error)(wp_mux *m, void *ud, int err, const char *reason);
    /* Nothing received for dead_timeout_ms: close the connection without a handshake. */
    void (*on_dead)(wp_mux *m, void *ud);
} wp_mux_callbacks;

/* Per-stream numbers, for metrics and tests. */
typedef struct wp_mux_stream_stats {
    uint32_t send_window;    /* bytes this end may still send (peer's credit) */
    uint32_t recv_window;    /* bytes the peer may still send */
    uint32_t credit_pending; /* consumed but not yet returned with a WindowUpdate */
    uint32_t window;         /* receive window granted to the peer (initial, or grown) */
    size_t queued;           /* written, not yet pulled */
    size_t unconsumed;       /* delivered by on_stream_data, not yet consumed */
    int pending;             /* client: not ACKed yet; server: not accepted yet */
    int local_fin;           /* wp_mux_close_write called */
    int local_fin_sent;      /* FIN pulled */
    int remote_fin;          /* FIN received */
} wp_mux_stream_stats;

/*
 * Creates a mux. cfg NULL means defaults; cbs NULL means no callbacks (both
 * are copied). Returns NULL on an invalid role or config (wp_mux_config_check)
 * or out of memory.
 */
wp_mux *wp_mux_new(wp_mux_role role, const wp_mux_config *cfg, const wp_mux_callbacks *cbs,
                   void *ud);

/* Frees the mux and every stream without calling back (deferred inside a callback). NULL ok. */
void wp_mux_free(wp_mux *m);

/* The ud given to wp_mux_new. */
void *wp_mux_ud(const wp_mux *m);

/* ---- input ---- */

/*
 * Consumes len received bytes (any split of the frame byte stream) and counts
 * them as activity at now_ms. Returns:
 *   0              all consumed (a partial frame is kept for the next call);
 *   WP_ERR_PROTO   the peer violated the protocol: GoAway 1 queued, on_error
 *                  called, streams closed; sticky (every later call returns it);
 *   WP_ERR_NOMEM / WP_ERR_LIMIT  internal failure handled like PROTO with GoAway 2;
 *   WP_ERR_CLOSED  the peer's GoAway arrived (on_goaway called; the rest of the
 *                  input is ignored), or the mux is being freed; sticky;
 *   WP_ERR_TIMEOUT the session was already declared dead; sticky;
 *   WP_ERR_STATE   called from inside a callback of wp_mux_feed (nothing consumed);
 *   WP_ERR_INVAL   NULL mux, or NULL data with len > 0.
 * After wp_mux_goaway (local) input is still parsed, only to report the
 * peer's GoAway: everything else is discarded and 0 is returned
 * (WP_ERR_CLOSED once the peer's GoAway arrived or the input is unparseable).
 * Data payloads passed to on_stream_data are valid only during the callback.
 */
int wp_mux_feed(wp_mux *m, const void *data, size_t len, uint64_t now_ms);

/*
 * Counts activity at now_ms without bytes for the mux: WebSocket control
 * frames and text messages (PROTOCOL.md §2.3: every received byte counts).
 */
void wp_mux_touch(wp_mux *m, uint64_t now_ms);

/* ---- output ---- */

/*
 * Appends whole frames to out, at most max_bytes (clamped to INT_MAX) and
 * at most wp_buf_room(out): first queued control frames (GoAway, Ping, Ping
 * ACK, WindowUpdate with ACK/credit, RST) in order, then Data round-robin
 * between streams with data and send window (one frame per stream per turn,
 * payload <= max_data and <= the stream's window; a frame is shortened to
 * fit max_bytes), SYN frames and FIN-only Data frames included. Returns the
 * number of bytes appended (0: nothing to send, or max_bytes/out too small
 * for the next frame), WP_ERR_INVAL (NULL args), WP_ERR_NOMEM (nothing
 * appended by the failing frame; earlier frames of this call stay and their
 * count is returned instead if nonzero).
 */
int wp_mux_pull(wp_mux *m, wp_buf *out, size_t max_bytes);

/* 1 if wp_mux_pull has (probably) something to send, else 0. Control frames made moot count. */
int wp_mux_want_pull(const wp_mux *m);

/* ---- timers ---- */

/*
 * Advances timers to now_ms: queues a Ping after ping_interval_ms without
 * received bytes (one outstanding at most), declares the session dead after
 * dead_timeout_ms (on_dead, streams closed, no GoAway frame: close the
 * connection), resets un-ACKed opens after open_ack_timeout_ms and
 * half-closed streams idle for reap_timeout_ms (RST + on_stream_closed).
 * Returns 0, WP_ERR_TIMEOUT (dead, now or before), or the sticky wp_mux_error
 * code once the session has ended (nothing is done then).
 */
int wp_mux_tick(wp_mux *m, uint64_t now_ms);

/*
 * Earliest time (same clock as now_ms) at which wp_mux_tick has work:
 * UINT64_MAX when none (session ended), 0 before the clock has started. A
 * value <= now means "tick now". Arm one timer with it after every call.
 */
uint64_t wp_mux_next_deadline(const wp_mux *m);

/*
 * Queues a Ping now (for an RTT sample). Returns 0, WP_ERR_BUSY (one is
 * outstanding), WP_ERR_CLOSED (session ended), WP_ERR_LIMIT (control queue full).
 */
int wp_mux_ping(wp_mux *m, uint64_t now_ms);

/* RTT in ms of the last answered Ping (queued-to-ACK, by the now_ms given), -1 if none yet. */
int64_t wp_mux_rtt_ms(const wp_mux *m);

/* ---- session end ---- */

/*
 * Drain: open no more streams (wp_mux_open -> WP_ERR_CLOSED) and refuse the
 * peer's SYNs (RST + on_stream_refused(WP_ERR_CLOSED)); existing streams
 * continue. One-way. Sends nothing by itself (the `drain` control message is
 * the owner's). Returns 0, or WP_ERR_CLOSED if the session already ended.
 */
int wp_mux_drain(wp_mux *m);

/*
 * Ends the session (PROTOCOL.md §10.2): drops queued control frames, queues a
 * GoAway frame with `code` (the only thing pull returns from now on), closes
 * every stream with on_stream_closed(WP_MUX_CLOSE_SESSION) before returning
 * (the peer treats them as reset). Returns 0, or WP_ERR_CLOSED if the session
 * had already ended (nothing queued).
 */
int wp_mux_goaway(wp_mux *m, uint32_t code);

/*
 * 0 while the session runs (draining included), else the sticky code:
 * WP_ERR_CLOSED (GoAway sent or received), WP_ERR_PROTO, WP_ERR_LIMIT,
 * WP_ERR_NOMEM (this end sent GoAway 1/2), WP_ERR_TIMEOUT (dead).
 */
int wp_mux_error(const wp_mux *m);

/* One line explaining wp_mux_error ("" while running). Never NULL. */
const char *wp_mux_error_reason(const wp_mux *m);

/* Streams in the table (opening, open, half-closed). */
size_t wp_mux_stream_count(const wp_mux *m);

/* Un-ACKed opens (client) or un-accepted SYNs (server). */
size_t wp_mux_pending_count(const wp_mux *m);

/* Bytes buffered for the tunnel: queued to send + delivered but not consumed. */
size_t wp_mux_buffered_bytes(const wp_mux *m);

/* ---- streams ---- */

/*
 * Client: opens a stream whose SYN carries the preamble (u16 length + json)
 * and any data written before the SYN is pulled. *id receives the new id.
 * Returns 0, WP_ERR_INVAL (NULL json/id, len 0 or > WP_PREAMBLE_MAX, or
 * 2 + len > max_data), WP_ERR_STATE (server role), WP_ERR_CLOSED (session
 * ended, draining, or stream ids exhausted), WP_ERR_LIMIT (max_streams),
 * WP_ERR_BUSY (max_pending_syn un-ACKed, or buffered bytes >= max_buffered),
 * WP_ERR_NOMEM. Nothing changes on failure.
 */
int wp_mux_open(wp_mux *m, const char *preamble_json, size_t len, void *stream_ud, uint32_t *id);

/*
 * Server: accepts a stream announced by on_stream_open: queues WindowUpdate|ACK
 * (carrying credit when half a window is consumed) and sets its sud. Writes
 * are allowed from now on. Returns 0, WP_ERR_NOT_FOUND, WP_ERR_STATE (client
 * role or already accepted), WP_ERR_CLOSED (session ended), WP_ERR_LIMIT
 * (control queue full: the session fails with GoAway 2).
 */
int wp_mux_accept(wp_mux *m, uint32_t id, void *stream_ud);

/*
 * Aborts a stream: queues RST (none for a client stream whose SYN was never
 * pulled), discards its queued data and frees it now. No callback. Also the
 * server's way to refuse an announced stream (send the `error` message first).
 * Returns 0, WP_ERR_NOT_FOUND, WP_ERR_CLOSED (session ended), WP_ERR_LIMIT
 * (control queue full: the stream is freed anyway and the session fails with GoAway 2).
 */
int wp_mux_reset(wp_mux *m, uint32_t id);

/*
 * Queues up to n bytes to send on the stream. Accepts at most
 * send window + write_slack - queued bytes, and no more than the tunnel
 * budget leaves (max_buffered - bytes queued on all streams). Returns the
 * number accepted, 0..n (clamped to INT_MAX); when less than n, stop reading
 * the local source: on_stream_writable follows once room appears. Errors:
 * WP_ERR_INVAL (NULL p with n > 0), WP_ERR_NOT_FOUND (no such stream, e.g.
 * reset by the peer), WP_ERR_STATE (server stream not accepted yet, or after
 * wp_mux_close_write), WP_ERR_CLOSED (session ended), WP_ERR_NOMEM.
 */
int wp_mux_write(wp_mux *m, uint32_t id, const void *p, size_t n);

/* Bytes wp_mux_write would accept now on the stream (0 if unknown or closed for writing). */
size_t wp_mux_write_room(const wp_mux *m, uint32_t id);

/*
 * Half-closes the sending side: FIN follows the queued data (on the last Data
 * frame or a zero-length Data|FIN). Idempotent. Returns 0, WP_ERR_NOT_FOUND,
 * WP_ERR_STATE (server stream not accepted yet), WP_ERR_CLOSED.
 */
int wp_mux_close_write(wp_mux *m, uint32_t id);

/*
 * n bytes delivered by on_stream_data have left the owner's buffers (written
 * to the local socket / handed to the consumer). Credit is returned only now,
 * in one WindowUpdate once half the stream's window is consumed (not after
 * the peer's FIN; before wp_mux_accept it waits for the ACK). This variant
 * knows no clock and never grows the window. Returns 0,
 * WP_ERR_NOT_FOUND (stream gone: nothing to do),
 * WP_ERR_INVAL (n > bytes delivered and not consumed), WP_ERR_CLOSED,
 * WP_ERR_LIMIT (control queue full: the session fails with GoAway 2).
 */
int wp_mux_consumed(wp_mux *m, uint32_t id, size_t n);

/*
 * wp_mux_consumed, with the time (same clock as wp_mux_feed) at which the
 * bytes left: the receive window may then grow (PROTOCOL.md §7.1), when half
 * a window was consumed within max(window_grow_ms, 2 x RTT) of the previous
 * half, up to recv_window_max and within max_buffered for all streams' windows.
 * The owner must then hold up to recv_window_max unconsumed bytes per stream.
 * Same returns as wp_mux_consumed.
 */
int wp_mux_consumed_at(wp_mux *m, uint32_t id, size_t n, uint64_t now_ms);

/* The stream's user data, NULL if unknown. */
void *wp_mux_stream_ud(const wp_mux *m, uint32_t id);

/* Sets the stream's user data. Returns 0 or WP_ERR_NOT_FOUND. */
int wp_mux_set_stream_ud(wp_mux *m, uint32_t id, void *stream_ud);

/* Fills *out. Returns 0, WP_ERR_NOT_FOUND or WP_ERR_INVAL. */
int wp_mux_stream_stats_get(const wp_mux *m, uint32_t id, wp_mux_stream_stats *out);

#endif
