/*
 * conn.c — TCP (+ optional memory-BIO TLS) connections on libuv (see conn.h).
 *
 * Lifetime: three handles are embedded (tcp, a deadline timer, a "kick"
 * timer that delivers TLS plaintext left buffered while reading was stopped)
 * plus, while resolving, the getaddrinfo request. open_items counts them; the
 * wp_conn is freed when the last one has completed after wp_conn_close().
 * Every user callback is guarded by the closing flag, so a callback may close
 * the connection at any time; memory stays valid until the uv close callbacks.
 *
 * Writes: plaintext (plain) or ciphertext (TLS) is appended to wq; one
 * uv_write is in flight, covering everything queued when it started (the
 * queue buffer is swapped with `inflight`). The two buffers keep their
 * storage between writes (no free/zero/malloc per write); a written plaintext
 * buffer is wiped (explicit_bzero, only the bytes written: they may be a
 * secret), ciphertext is not. Storage above CONN_WQ_KEEP_IDLE is released
 * once the connection has nothing queued. TLS output is moved from the
 * session's out-buffer into an empty wq by swapping storage, not copied.
 */
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "conn.h"
#include "err.h"
#include "log.h"

#define CONN_READ_PLAIN   (64 * 1024)
#define CONN_READ_TLS     (16 * 1024)
#define CONN_TLS_CHUNK    (16 * 1024)
#define CONN_TLS_OVERHEAD 64 /* per-record ciphertext expansion bound used for the limit check */
#define CONN_WQ_KEEP_IDLE (64 * 1024) /* write buffer storage kept while nothing is queued */

/*
 * Server TLS handshake gate states. A connection takes a handshake slot only
 * when its first bytes (the ClientHello) arrive, so silent connections cost a
 * connection slot and a deadline but never block real clients' handshakes.
 *   IDLE:   accepted, reading, nothing received yet;
 *   QUEUED: bytes buffered in the TLS session, waiting for a slot, not reading;
 *   ACTIVE: holds a slot, handshaking.
 */
enum { GATE_NONE = 0, GATE_IDLE, GATE_QUEUED, GATE_ACTIVE };

struct wp_conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* handshake / queue / connect deadline */
    uv_timer_t kick;  /* deferred TLS pump after wp_conn_read_start */
    uv_loop_t *loop;
    wp_conn_callbacks cbs;
    void *ud;
    wp_tls *tls;
    size_t max_wq;
    unsigned hs_timeout_ms;
    wp_buf wq;
    wp_buf inflight;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    int open_items;
    unsigned closing : 1, want_read : 1, uv_reading : 1, eof : 1, hs_done : 1, shut_pending : 1,
        shut_sent : 1, need_drain : 1, writing : 1, is_client : 1, gai_pending : 1;
    /* handshake gate */
    wp_conn_gate *gate;
    int gate_state;
    wp_conn *gnext, *gprev;
    /* peer */
    struct sockaddr_storage peer;
    char peer_str[WP_ADDR_STRLEN];
    /* client connect */
    wp_conn_connect_cb ccb;
    void *cud;
    unsigned open_timeout_ms; /* wp_conn_open_fd: TLS handshake deadline */
    uv_getaddrinfo_t gai;
    uv_connect_t creq;
    struct addrinfo *ai_head, *ai_cur;
};

static void conn_update_reading(wp_conn *c);
static void conn_tls_pump(wp_conn *c);
static void conn_kick_write(wp_conn *c);
static void conn_fail(wp_conn *c, int err);

void wp_conn_limits_default(wp_conn_limits *l)
{
    l->max_write_queue = 4u * 1024 * 1024;
    l->handshake_timeout_ms = 10000;
}

void wp_conn_gate_init(wp_conn_gate *g, size_t max_active, size_t max_queued)
{
    memset(g, 0, sizeof(*g));
    g->max_active = max_active ? max_active : 1;
    g->max_queued = max_queued;
}

/* ---- write buffers ---- */

/* Frees b's storage; plaintext is wiped first (ciphertext needs no wiping). */
static void conn_buf_release(wp_conn *c, wp_buf *b)
{
    if (!b->data)
        return;
    if (!c->tls)
        explicit_bzero(b->data, b->alloc);
    free(b->data);
    wp_buf_init(b, b->max);
}

/* Swaps the storage (and content) of two buffers; each keeps its own limit. */
static void conn_buf_swap(wp_buf *a, wp_buf *b)
{
    wp_buf t = *a;
    a->data = b->data, a->off = b->off, a->end = b->end, a->alloc = b->alloc;
    b->data = t.data, b->off = t.off, b->end = t.end, b->alloc = t.alloc;
}

/* ---- lifetime ---- */

static void conn_item_done(wp_conn *c)
{
    if (--c->open_items > 0)
        return;
    if (c->cbs.on_close)
        c->cbs.on_close(c, c->ud);
    conn_buf_release(c, &c->wq);
    conn_buf_release(c, &c->inflight);
    if (c->tls)
        wp_tls_free(c->tls);
    if (c->ai_head)
        uv_freeaddrinfo(c->ai_head);
    free(c);
}

static void conn_close_cb(uv_handle_t *h)
{
    conn_item_done(h->data);
}

static void conn_timer_cb(uv_timer_t *t);
static void conn_kick_cb(uv_timer_t *t);

/* Gives c a handshake slot: fresh deadline, reading starts. */
static void conn_gate_admit(wp_conn *c)
{
    c->gate_state = GATE_ACTIVE;
    c->gate->active++;
    uv_timer_start(&c->timer, conn_timer_cb, c->hs_timeout_ms, 0);
    conn_update_reading(c);
}

/*
 * c's first bytes arrived: take a slot, or wait in the FIFO (reading stops; the
 * bytes stay buffered in the TLS session), or — queue full — close.
 */
static void conn_gate_arrive(wp_conn *c)
{
    wp_conn_gate *g = c->gate;
    if (g->active < g->max_active) {
        conn_gate_admit(c);
        return;
    }
    if (g->queued >= g->max_queued) {
        wp_log_debug("tls handshake queue full, closing", WP_LS("peer", c->peer_str));
        conn_fail(c, WP_ERR_BUSY);
        return;
    }
    c->gate_state = GATE_QUEUED;
    c->gprev = g->tail;
    if (g->tail)
        g->tail->gnext = c;
    else
        g->head = c;
    g->tail = c;
    g->queued++;
    conn_update_reading(c);
}

/* Removes c from its gate (slot or queue) and admits waiting connections. */
static void conn_gate_leave(wp_conn *c)
{
    wp_conn_gate *g = c->gate;
    if (!g)
        return;
    if (c->gate_state == GATE_QUEUED) {
        if (c->gprev)
            c->gprev->gnext = c->gnext;
        else
            g->head = c->gnext;
        if (c->gnext)
            c->gnext->gprev = c->gprev;
        else
            g->tail = c->gprev;
        g->queued--;
    } else if (c->gate_state == GATE_ACTIVE) {
        g->active--;
    }
    c->gate_state = GATE_NONE;
    c->gate = NULL;
    c->gnext = c->gprev = NULL;
    while (g->head && g->active < g->max_active) {
        wp_conn *n = g->head;
        g->head = n->gnext;
        if (g->head)
            g->head->gprev = NULL;
        else
            g->tail = NULL;
        g->queued--;
        n->gnext = n->gprev = NULL;
        conn_gate_admit(n);
        /* its ClientHello is already buffered: pump it from the loop, not from here */
        uv_timer_start(&n->kick, conn_kick_cb, 0, 0);
    }
}

void wp_conn_close(wp_conn *c)
{
    if (!c || c->closing)
        return;
    c->closing = 1;
    conn_gate_leave(c);
    if (c->uv_reading && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_read_stop((uv_stream_t *)&c->tcp);
    c->uv_reading = 0;
    if (c->gai_pending)
        uv_cancel((uv_req_t *)&c->gai); /* may fail if running; the callback then sees closing */
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
    uv_close((uv_handle_t *)&c->timer, conn_close_cb);
    uv_close((uv_handle_t *)&c->kick, conn_close_cb);
}

int wp_conn_is_closing(const wp_conn *c)
{
    return c->closing;
}

/* Connect-phase failure: report once through the connect callback, then close silently. */
/* Why the connect that is being reported right now failed (see wp_conn_connect_error). */
static char conn_connect_error[256];

const char *wp_conn_connect_error(void)
{
    return conn_connect_error;
}

static void conn_connect_fail(wp_conn *c, int err)
{
    wp_conn_connect_cb cb = c->ccb;
    c->ccb = NULL;
    memset(&c->cbs, 0, sizeof(c->cbs));
    snprintf(conn_connect_error, sizeof(conn_connect_error), "%s",
             c->tls && (err == WP_ERR_TLS || err == WP_ERR_VERIFY) ? wp_tls_last_error(c->tls)
                                                                   : wp_strerror(err));
    if (cb)
        cb(NULL, err, c->cud);
    conn_connect_error[0] = '\0';
    wp_conn_close(c);
}

static void conn_fail(wp_conn *c, int err)
{
    if (c->closing)
        return;
    if (c->ccb) {
        conn_connect_fail(c, err);
        return;
    }
    if (c->cbs.on_error)
        c->cbs.on_error(c, err, c->ud);
    wp_conn_close(c);
}

static void conn_on_eof(wp_conn *c)
{
    if (c->closing || c->eof)
        return;
    c->eof = 1;
    conn_update_reading(c);
    if (c->ccb || !c->hs_done) {
        conn_fail(c, WP_ERR_CLOSED);
        return;
    }
    if (c->cbs.on_eof)
        c->cbs.on_eof(c, c->ud);
    else
        wp_conn_close(c);
}

/* ---- reading ---- */

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    wp_conn *c = h->data;
    (void)suggested;
    size_t n = c->tls ? CONN_READ_TLS : CONN_READ_PLAIN;
    buf->base = malloc(n);
    buf->len = buf->base ? n : 0;
}

static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    wp_conn *c = s->data;
    if (nread == 0 || c->closing) {
        free(buf->base);
        return;
    }
    if (nread < 0) {
        free(buf->base);
        if (nread == UV_EOF)
            conn_on_eof(c);
        else if (nread == UV_ENOBUFS)
            conn_fail(c, WP_ERR_NOMEM);
        else
            conn_fail(c, WP_ERR_IO);
        return;
    }
    if (c->tls) {
        int rc = wp_tls_feed(c->tls, (const uint8_t *)buf->base, (size_t)nread);
        free(buf->base);
        if (rc < 0) {
            conn_fail(c, WP_ERR_TLS);
            return;
        }
        if (c->gate_state == GATE_IDLE) {
            conn_gate_arrive(c);
            if (c->closing || c->gate_state != GATE_ACTIVE)
                return;
        }
        conn_tls_pump(c);
        return;
    }
    if (c->cbs.on_data)
        c->cbs.on_data(c, (const uint8_t *)buf->base, (size_t)nread, c->ud);
    free(buf->base);
}

static void conn_update_reading(wp_conn *c)
{
    int want;
    if (c->closing || c->eof)
        want = 0;
    else if (c->tls && !c->hs_done)
        want = c->is_client ? 1 : (c->gate_state == GATE_ACTIVE || c->gate_state == GATE_IDLE);
    else
        want = c->want_read;
    if (want && !c->uv_reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb) == 0)
            c->uv_reading = 1;
    } else if (!want && c->uv_reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->uv_reading = 0;
    }
}

int wp_conn_read_start(wp_conn *c)
{
    if (c->closing)
        return WP_ERR_CLOSED;
    c->want_read = 1;
    conn_update_reading(c);
    if (c->tls && c->hs_done)
        uv_timer_start(&c->kick, conn_kick_cb, 0, 0);
    return 0;
}

int wp_conn_read_stop(wp_conn *c)
{
    if (c->closing)
        return WP_ERR_CLOSED;
    c->want_read = 0;
    conn_update_reading(c);
    return 0;
}

/* Moves TLS output into the write queue. */
static int conn_flush_tls(wp_conn *c)
{
    if (!c->tls || c->closing)
        return 0;
    wp_buf *o = wp_tls_out(c->tls);
    size_t n = wp_buf_len(o);
    if (n == 0)
        return 0;
    if (wp_buf_len(&c->wq) == 0 && n <= c->wq.max) {
        /* ciphertext only: hand the storage over instead of copying it */
        conn_buf_swap(&c->wq, o);
        wp_buf_reset(o);
    } else {
        int rc = wp_buf_put(&c->wq, wp_buf_ptr(o), n);
        if (rc < 0)
            return rc;
        wp_buf_consume(o, n);
    }
    conn_kick_write(c);
    return 0;
}

static void conn_tls_pump(wp_conn *c)
{
    if (c->closing)
        return;
    if (!c->hs_done) {
        int rc = wp_tls_handshake(c->tls);
        int frc = conn_flush_tls(c);
        if (c->closing)
            return;
        if (frc < 0) {
            conn_fail(c, frc);
            return;
        }
        if (rc == WP_ERR_NEED_MORE)
            return;
        if (rc < 0) {
            wp_log_debug("tls handshake failed", WP_LS("peer", c->peer_str), WP_LE("err", rc),
                         WP_LS("reason", wp_tls_last_error(c->tls)));
            conn_fail(c, rc);
            return;
        }
        c->hs_done = 1;
        uv_timer_stop(&c->timer);
        conn_gate_leave(c);
        if (c->ccb) {
            wp_conn_connect_cb cb = c->ccb;
            c->ccb = NULL;
            c->want_read = 0;
            conn_update_reading(c);
            cb(c, 0, c->cud);
            return; /* buffered records are delivered after wp_conn_read_start */
        }
        conn_update_reading(c);
        if (c->cbs.on_ready)
            c->cbs.on_ready(c, c->ud);
    }
    uint8_t buf[CONN_TLS_CHUNK];
    while (!c->closing && c->want_read && !c->eof) {
        int n = wp_tls_read(c->tls, buf, sizeof(buf));
        if (n > 0) {
            if (c->cbs.on_data)
                c->cbs.on_data(c, buf, (size_t)n, c->ud);
            continue;
        }
        if (n == WP_ERR_NEED_MORE)
            break;
        if (n == WP_ERR_CLOSED) {
            conn_flush_tls(c);
            conn_on_eof(c);
            return;
        }
        wp_log_debug("tls read failed", WP_LS("peer", c->peer_str), WP_LE("err", n),
                     WP_LS("reason", wp_tls_last_error(c->tls)));
        conn_fail(c, WP_ERR_TLS);
        return;
    }
    int frc = conn_flush_tls(c);
    if (frc < 0)
        conn_fail(c, frc);
}

static void conn_kick_cb(uv_timer_t *t)
{
    wp_conn *c = t->data;
    if (c->closing)
        return;
    if (c->hs_done ? c->want_read : (!c->is_client && c->gate_state == GATE_ACTIVE))
        conn_tls_pump(c);
}

/* ---- writing ---- */

static void conn_shutdown_cb(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status; /* nothing to do: the owner closes on EOF or its own deadline */
}

static void conn_write_cb(uv_write_t *req, int status);

/* The in-flight bytes are written (or dropped): empty the buffer, keep its storage if small
 * or if more is queued already. */
static void conn_inflight_done(wp_conn *c)
{
    wp_buf *b = &c->inflight;
    if (!b->data)
        return;
    if (!c->tls)
        explicit_bzero(b->data + b->off, b->end - b->off);
    wp_buf_reset(b);
    if (b->alloc > CONN_WQ_KEEP_IDLE && wp_buf_len(&c->wq) == 0)
        conn_buf_release(c, b);
}

static void conn_kick_write(wp_conn *c)
{
    if (c->writing || c->closing)
        return;
    if (wp_buf_len(&c->wq) == 0) {
        if (c->shut_pending && !c->shut_sent) {
            c->shut_sent = 1;
            c->sreq.data = c;
            uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, conn_shutdown_cb);
        }
        return;
    }
    conn_buf_swap(&c->inflight, &c->wq); /* inflight was empty: wq keeps its storage */
    uv_buf_t b =
        uv_buf_init((char *)wp_buf_mutable_ptr(&c->inflight), (unsigned)wp_buf_len(&c->inflight));
    c->wreq.data = c;
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, conn_write_cb);
    if (rc < 0) {
        conn_inflight_done(c);
        conn_fail(c, WP_ERR_IO);
        return;
    }
    c->writing = 1;
}

static void conn_write_cb(uv_write_t *req, int status)
{
    wp_conn *c = req->data;
    c->writing = 0;
    conn_inflight_done(c);
    if (c->closing)
        return;
    if (status < 0) {
        conn_fail(c, WP_ERR_IO);
        return;
    }
    conn_kick_write(c);
    if (!c->closing && c->need_drain && wp_conn_write_queued(c) <= c->max_wq / 4) {
        c->need_drain = 0;
        if (c->cbs.on_drain)
            c->cbs.on_drain(c, c->ud);
    }
}

void wp_conn_want_drain(wp_conn *c)
{
    if (!c->closing && wp_conn_write_queued(c) > 0)
        c->need_drain = 1;
}

size_t wp_conn_write_queued(const wp_conn *c)
{
    return wp_buf_len(&c->wq) + wp_buf_len(&c->inflight);
}

static int conn_writev(wp_conn *c, const uv_buf_t *bufs, size_t nbufs, int ctl)
{
    if (c->closing || c->shut_pending)
        return WP_ERR_CLOSED;
    if (c->tls && !c->hs_done)
        return WP_ERR_STATE;
    size_t n = 0;
    for (size_t i = 0; i < nbufs; i++) {
        if (bufs[i].len > SIZE_MAX / 2 - n)
            return WP_ERR_LIMIT;
        n += bufs[i].len;
    }
    if (n == 0)
        return 0;
    size_t need = n;
    if (c->tls)
        need += (n / CONN_TLS_CHUNK + nbufs) * CONN_TLS_OVERHEAD;
    size_t queued = wp_conn_write_queued(c);
    if (!ctl && (need > c->max_wq || queued > c->max_wq - need)) {
        c->need_drain = 1;
        return WP_ERR_LIMIT;
    }
    for (size_t i = 0; i < nbufs; i++) {
        const uint8_t *q = (const uint8_t *)bufs[i].base;
        size_t len = bufs[i].len;
        if (!c->tls) {
            int rc = wp_buf_put(&c->wq, q, len);
            if (rc < 0) {
                conn_fail(c, WP_ERR_NOMEM); /* earlier buffers are queued: the stream is broken */
                return WP_ERR_CLOSED;
            }
            continue;
        }
        size_t off = 0;
        while (off < len) {
            size_t k = len - off < CONN_TLS_CHUNK ? len - off : CONN_TLS_CHUNK;
            /* records collect in the TLS out-buffer and move to the queue once, below
             * (by a storage swap when the queue is empty), or earlier when it is full */
            int rc = wp_tls_write(c->tls, q + off, k);
            if (rc == WP_ERR_LIMIT) {
                rc = conn_flush_tls(c);
                if (rc == 0)
                    rc = wp_tls_write(c->tls, q + off, k);
            }
            if (rc < 0) {
                /* part of the data may be encrypted already: the stream is broken */
                conn_fail(c, rc == WP_ERR_NOMEM ? rc : WP_ERR_TLS);
                return WP_ERR_CLOSED;
            }
            off += k;
        }
    }
    if (c->tls) {
        int rc = conn_flush_tls(c);
        if (rc < 0) {
            conn_fail(c, rc == WP_ERR_NOMEM ? rc : WP_ERR_TLS);
            return WP_ERR_CLOSED;
        }
    }
    if (wp_conn_write_queued(c) > c->max_wq / 4)
        c->need_drain = 1;
    conn_kick_write(c);
    return c->closing ? WP_ERR_CLOSED : 0;
}

int wp_conn_writev(wp_conn *c, const uv_buf_t *bufs, size_t nbufs)
{
    return conn_writev(c, bufs, nbufs, 0);
}

int wp_conn_write_ctl(wp_conn *c, const void *p, size_t n)
{
    if (n > WP_CONN_CTL_MAX)
        return WP_ERR_INVAL;
    uv_buf_t b = uv_buf_init((char *)(uintptr_t)p, (unsigned)n);
    return conn_writev(c, &b, 1, 1);
}

int wp_conn_write(wp_conn *c, const void *p, size_t n)
{
    uv_buf_t b = uv_buf_init((char *)(uintptr_t)p, (unsigned)n);
    if (n > UINT_MAX)
        return WP_ERR_LIMIT;
    return wp_conn_writev(c, &b, 1);
}

int wp_conn_shutdown(wp_conn *c)
{
    if (c->closing)
        return WP_ERR_CLOSED;
    if (c->shut_pending)
        return 0;
    c->shut_pending = 1;
    if (c->tls && c->hs_done && wp_tls_close_notify(c->tls) == 0)
        conn_flush_tls(c);
    conn_kick_write(c);
    return 0;
}

/* ---- timers ---- */

static void conn_timer_cb(uv_timer_t *t)
{
    wp_conn *c = t->data;
    if (c->closing)
        return;
    if (c->ccb) {
        conn_connect_fail(c, WP_ERR_TIMEOUT);
        return;
    }
    wp_log_debug(c->gate_state == GATE_QUEUED ? "tls handshake queue timeout"
                                              : "tls handshake timeout",
                 WP_LS("peer", c->peer_str));
    conn_fail(c, WP_ERR_TIMEOUT);
}

/* ---- setup ---- */

static wp_conn *conn_new(uv_loop_t *loop, const wp_conn_limits *lim)
{
    wp_conn_limits d;
    if (!lim) {
        wp_conn_limits_default(&d);
        lim = &d;
    }
    wp_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->loop = loop;
    c->max_wq = lim->max_write_queue ? lim->max_write_queue : 4u * 1024 * 1024;
    c->hs_timeout_ms = lim->handshake_timeout_ms ? lim->handshake_timeout_ms : 10000;
    /* the queue itself may exceed max_wq by TLS control records (alerts, close_notify) */
    wp_buf_init(&c->wq, c->max_wq + WP_TLS_OUT_MAX + 1024);
    wp_buf_init(&c->inflight, c->wq.max);
    if (uv_tcp_init(loop, &c->tcp) < 0) {
        free(c);
        return NULL;
    }
    uv_timer_init(loop, &c->timer);
    uv_timer_init(loop, &c->kick);
    c->tcp.data = c->timer.data = c->kick.data = c;
    c->open_items = 3;
    return c;
}

static void conn_fill_peer(wp_conn *c)
{
    int len = (int)sizeof(c->peer);
    memset(&c->peer, 0, sizeof(c->peer));
    c->peer_str[0] = '\0';
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &len) == 0)
        wp_addr_format((struct sockaddr *)&c->peer, c->peer_str, sizeof(c->peer_str));
}

int wp_conn_accept(uv_stream_t *listener, wp_tls_conf *tls, wp_conn_gate *gate,
                   const wp_conn_limits *lim, const wp_conn_callbacks *cbs, void *ud, wp_conn **out)
{
    if (!listener || !out || (tls && !gate))
        return WP_ERR_INVAL;
    wp_conn *c = conn_new(listener->loop, lim);
    if (!c)
        return WP_ERR_NOMEM;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0) {
        wp_conn_close(c);
        return WP_ERR_IO;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    conn_fill_peer(c);
    c->want_read = 1;
    if (tls) {
        int rc = wp_tls_new(&c->tls, tls, NULL);
        if (rc < 0) {
            c->tls = NULL;
            wp_conn_close(c);
            return rc == WP_ERR_NOMEM ? rc : WP_ERR_TLS;
        }
        /* No slot yet: one is taken when the ClientHello arrives (conn_gate_arrive). */
        c->gate = gate;
        c->gate_state = GATE_IDLE;
        uv_timer_start(&c->timer, conn_timer_cb, c->hs_timeout_ms, 0);
        conn_update_reading(c);
    } else {
        c->hs_done = 1;
        conn_update_reading(c);
    }
    if (cbs)
        c->cbs = *cbs;
    c->ud = ud;
    *out = c;
    return 0;
}

static void conn_try_next(wp_conn *c);

static void conn_reopen_cb(uv_handle_t *h)
{
    wp_conn *c = h->data;
    if (c->closing) {
        conn_item_done(c);
        return;
    }
    if (uv_tcp_init(c->loop, &c->tcp) < 0) {
        /* the tcp item is gone for good: account for it, then fail */
        c->open_items--;
        c->tcp.data = c;
        conn_connect_fail(c, WP_ERR_IO);
        return;
    }
    c->tcp.data = c;
    conn_try_next(c);
}

/* The client socket is connected: start TLS (the connect cb follows its handshake) or report. */
static void conn_client_start(wp_conn *c)
{
    uv_tcp_nodelay(&c->tcp, 1);
    conn_fill_peer(c);
    if (c->tls) {
        conn_update_reading(c);
        conn_tls_pump(c); /* sends the ClientHello */
        return;
    }
    c->hs_done = 1;
    uv_timer_stop(&c->timer);
    wp_conn_connect_cb cb = c->ccb;
    c->ccb = NULL;
    cb(c, 0, c->cud);
}

static void conn_connect_cb(uv_connect_t *req, int status)
{
    wp_conn *c = req->data;
    if (c->closing)
        return;
    if (status < 0) {
        c->ai_cur = c->ai_cur->ai_next;
        if (!c->ai_cur) {
            conn_connect_fail(c, WP_ERR_IO);
            return;
        }
        uv_close((uv_handle_t *)&c->tcp, conn_reopen_cb);
        return;
    }
    conn_client_start(c);
}

static void conn_try_next(wp_conn *c)
{
    while (c->ai_cur && c->ai_cur->ai_family != AF_INET && c->ai_cur->ai_family != AF_INET6)
        c->ai_cur = c->ai_cur->ai_next;
    if (!c->ai_cur) {
        conn_connect_fail(c, WP_ERR_IO);
        return;
    }
    c->creq.data = c;
    int rc = uv_tcp_connect(&c->creq, &c->tcp, c->ai_cur->ai_addr, conn_connect_cb);
    if (rc < 0) {
        c->ai_cur = c->ai_cur->ai_next;
        if (!c->ai_cur) {
            conn_connect_fail(c, WP_ERR_IO);
            return;
        }
        uv_close((uv_handle_t *)&c->tcp, conn_reopen_cb);
    }
}

static void conn_gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    wp_conn *c = req->data;
    c->gai_pending = 0;
    if (c->closing) {
        if (res)
            uv_freeaddrinfo(res);
        conn_item_done(c); /* may be the last item */
        return;
    }
    c->open_items--; /* not the last item: tcp and the timers are open */
    if (status < 0 || !res) {
        if (res)
            uv_freeaddrinfo(res);
        conn_connect_fail(c, WP_ERR_IO);
        return;
    }
    c->ai_head = c->ai_cur = res;
    conn_try_next(c);
}

int wp_conn_connect(uv_loop_t *loop, const char *host, int port, wp_tls_conf *tls,
                    const char *server_name, int timeout_ms, const wp_conn_limits *lim,
                    wp_conn_connect_cb cb, void *ud)
{
    if (!loop || !host || !*host || port <= 0 || port > 65535 || timeout_ms <= 0 || !cb)
        return WP_ERR_INVAL;
    wp_conn *c = conn_new(loop, lim);
    if (!c)
        return WP_ERR_NOMEM;
    c->is_client = 1;
    if (tls) {
        int rc = wp_tls_new(&c->tls, tls, server_name ? server_name : host);
        if (rc < 0) {
            c->tls = NULL;
            wp_conn_close(c);
            return rc == WP_ERR_NOMEM ? rc : WP_ERR_TLS;
        }
    }
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%d", port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    hints.ai_flags = AI_NUMERICSERV;
    c->gai.data = c;
    if (uv_getaddrinfo(loop, &c->gai, conn_gai_cb, host, portstr, &hints) < 0) {
        wp_conn_close(c);
        return WP_ERR_IO;
    }
    c->gai_pending = 1;
    c->open_items++;
    c->ccb = cb;
    c->cud = ud;
    uv_timer_start(&c->timer, conn_timer_cb, (uint64_t)timeout_ms, 0);
    return 0;
}

/* wp_conn_open_fd: first loop turn; the timer then becomes the handshake deadline. */
static void conn_open_fd_cb(uv_timer_t *t)
{
    wp_conn *c = t->data;
    if (c->closing)
        return;
    uv_timer_start(&c->timer, conn_timer_cb, c->open_timeout_ms, 0);
    conn_client_start(c);
}

int wp_conn_open_fd(uv_loop_t *loop, uv_os_sock_t fd, wp_tls_conf *tls, const char *server_name,
                    int timeout_ms, const wp_conn_limits *lim, wp_conn_connect_cb cb, void *ud)
{
    if (fd < 0)
        return WP_ERR_INVAL;
    if (!loop || timeout_ms <= 0 || !cb || (tls && (!server_name || !*server_name))) {
        close(fd);
        return WP_ERR_INVAL;
    }
    wp_conn *c = conn_new(loop, lim);
    if (!c) {
        close(fd);
        return WP_ERR_NOMEM;
    }
    c->is_client = 1;
    if (uv_tcp_open(&c->tcp, fd) < 0) {
        close(fd); /* not adopted by the handle */
        wp_conn_close(c);
        return WP_ERR_IO;
    }
    if (tls) {
        int rc = wp_tls_new(&c->tls, tls, server_name);
        if (rc < 0) {
            c->tls = NULL;
            wp_conn_close(c);
            return rc == WP_ERR_NOMEM ? rc : WP_ERR_TLS;
        }
    }
    c->ccb = cb;
    c->cud = ud;
    c->open_timeout_ms = (unsigned)timeout_ms;
    uv_timer_start(&c->timer, conn_open_fd_cb, 0, 0); /* never call cb from inside this call */
    return 0;
}

/* ---- accessors ---- */

void wp_conn_set_callbacks(wp_conn *c, const wp_conn_callbacks *cbs, void *ud)
{
    if (cbs)
        c->cbs = *cbs;
    else
        memset(&c->cbs, 0, sizeof(c->cbs));
    c->ud = ud;
}

const struct sockaddr *wp_conn_peer_addr(const wp_conn *c)
{
    return (const struct sockaddr *)&c->peer;
}

const char *wp_conn_peer_str(const wp_conn *c)
{
    return c->peer_str;
}

int wp_conn_is_tls(const wp_conn *c)
{
    return c->tls != NULL;
}

wp_tls *wp_conn_tls(wp_conn *c)
{
    return c->tls;
}

uv_loop_t *wp_conn_loop(const wp_conn *c)
{
    return c->loop;
}
