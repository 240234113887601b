/*
 * bridge.c — a hijacked client connection bridged byte for byte to a tunnel
 * stream (see bridge.h): the data path shared by CONNECT and proxied
 * WebSocket upgrades.
 */
#include "bridge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wolfpack/proto.h>

#include "err.h"
#include "log.h"
#include "tunnel_int.h"

#define CP_BRIDGE_TO_CONN_MAX   (WP_STREAM_INITIAL_WINDOW + WP_FRAME_MAX_DATA)
#define CP_BRIDGE_TO_STREAM_MAX (256u * 1024u)
#define CP_BRIDGE_LINGER_MS     5000

typedef struct cp_bridge {
    cp_bridge_link link; /* first member: the registry's view */
    cp_server *s;
    cp_stream *st;
    wp_conn *conn;
    uv_timer_t linger;
    wp_buf to_conn;   /* from the node, refused by the connection for now */
    wp_buf to_stream; /* from the client, refused by the stream for now */
    unsigned linked : 1, conn_eof : 1, fin_pending : 1, lingering : 1, closing : 1;
    char node[64];
    char what[64];
} cp_bridge;

/* ---- teardown ---- */

static void cp_bridge_linger_closed(uv_handle_t *h)
{
    cp_bridge *b = h->data;
    if (b->linked)
        cp_tunnels_bridge_unlink(b->s, &b->link);
    wp_buf_free(&b->to_conn);
    wp_buf_free(&b->to_stream);
    free(b);
}

static void cp_bridge_close(cp_bridge *b, const char *why)
{
    if (b->closing)
        return;
    wp_log_debug("bridge closing", WP_LS("node", b->node), WP_LS("what", b->what),
                 WP_LS("why", why));
    b->closing = 1;
    if (b->st) {
        cp_stream *st = b->st;
        b->st = NULL;
        cp_stream_reset(st);
    }
    wp_conn_close(b->conn);
}

static void cp_bridge_force_close(cp_bridge_link *l)
{
    cp_bridge_close((cp_bridge *)l, "shutdown");
}

/* Stream done both ways: close once the client has everything (or the linger ends). */
static void cp_bridge_check_linger(cp_bridge *b)
{
    if (!b->lingering || b->closing)
        return;
    if (wp_buf_len(&b->to_conn) == 0 && wp_conn_write_queued(b->conn) == 0) {
        cp_bridge_close(b, "done");
        return;
    }
    wp_conn_want_drain(b->conn);
}

static void cp_bridge_linger_cb(uv_timer_t *h)
{
    cp_bridge *b = h->data;
    cp_bridge_close(b, "linger expired");
}

/* ---- node → client ---- */

static void cp_bridge_flush_to_conn(cp_bridge *b)
{
    size_t n = wp_buf_len(&b->to_conn);
    if (n > 0) {
        int rc = wp_conn_write(b->conn, wp_buf_ptr(&b->to_conn), n);
        if (rc == WP_ERR_LIMIT)
            return; /* on_drain again */
        if (rc != 0) {
            cp_bridge_close(b, "client write failed");
            return;
        }
        wp_buf_reset(&b->to_conn);
        if (b->st)
            cp_stream_consumed(b->st, n);
    }
    if (b->fin_pending) {
        b->fin_pending = 0;
        wp_conn_shutdown(b->conn);
    }
}

static void cp_bridge_st_data(cp_stream *st, const uint8_t *p, size_t n, void *ud)
{
    cp_bridge *b = ud;
    if (b->closing)
        return;
    if (wp_buf_len(&b->to_conn) == 0) {
        int rc = wp_conn_write(b->conn, p, n);
        if (rc == 0) {
            cp_stream_consumed(st, n);
            return;
        }
        if (rc != WP_ERR_LIMIT) {
            cp_bridge_close(b, "client write failed");
            return;
        }
    }
    /* Bounded by the stream window: no credit goes back until these are written. */
    if (wp_buf_put(&b->to_conn, p, n) != 0) {
        wp_log_warn("bridge: node overran its window", WP_LS("node", b->node));
        cp_bridge_close(b, "node overran its window");
    }
}

static void cp_bridge_st_fin(cp_stream *st, void *ud)
{
    (void)st;
    cp_bridge *b = ud;
    if (b->closing)
        return;
    if (wp_buf_len(&b->to_conn) == 0)
        wp_conn_shutdown(b->conn);
    else
        b->fin_pending = 1;
}

static void cp_bridge_st_closed(cp_stream *st, int err, const char *reason, void *ud)
{
    (void)st;
    cp_bridge *b = ud;
    b->st = NULL;
    if (b->closing)
        return;
    if (err != 0) {
        wp_log_debug("bridge: stream ended", WP_LS("node", b->node), WP_LS("reason", reason));
        cp_bridge_close(b, "stream ended");
        return;
    }
    b->lingering = 1;
    uv_timer_start(&b->linger, cp_bridge_linger_cb, CP_BRIDGE_LINGER_MS, 0);
    cp_bridge_check_linger(b);
}

/* ---- client → node ---- */

/* Pushes held client bytes into the stream; 1 when none are left. */
static int cp_bridge_flush_to_stream(cp_bridge *b)
{
    while (wp_buf_len(&b->to_stream) > 0 && b->st) {
        int k = cp_stream_write(b->st, wp_buf_ptr(&b->to_stream), wp_buf_len(&b->to_stream));
        if (k < 0) {
            cp_bridge_close(b, "stream write failed");
            return 0;
        }
        if (k == 0)
            return 0;
        wp_buf_consume(&b->to_stream, (size_t)k);
    }
    return wp_buf_len(&b->to_stream) == 0;
}

static void cp_bridge_st_writable(cp_stream *st, void *ud)
{
    (void)st;
    cp_bridge *b = ud;
    if (b->closing || !cp_bridge_flush_to_stream(b))
        return;
    if (b->conn_eof)
        cp_stream_close_write(b->st);
    else
        wp_conn_read_start(b->conn);
}

static void cp_bridge_conn_data(wp_conn *c, const uint8_t *p, size_t n, void *ud)
{
    cp_bridge *b = ud;
    if (b->closing || !b->st)
        return;
    if (wp_buf_len(&b->to_stream) == 0) {
        int k = cp_stream_write(b->st, p, n);
        if (k < 0) {
            cp_bridge_close(b, "stream write failed");
            return;
        }
        p += k;
        n -= (size_t)k;
        if (n == 0)
            return;
    }
    if (wp_buf_put(&b->to_stream, p, n) != 0) {
        cp_bridge_close(b, "client sent too much");
        return;
    }
    wp_conn_read_stop(c); /* on_writable resumes */
}

static void cp_bridge_conn_eof(wp_conn *c, void *ud)
{
    (void)c;
    cp_bridge *b = ud;
    b->conn_eof = 1;
    if (!b->closing && b->st && wp_buf_len(&b->to_stream) == 0)
        cp_stream_close_write(b->st);
}

static void cp_bridge_conn_error(wp_conn *c, int err, void *ud)
{
    (void)c;
    cp_bridge *b = ud;
    wp_log_debug("bridge: client connection failed", WP_LS("node", b->node), WP_LE("err", err));
    if (b->st) {
        cp_stream *st = b->st;
        b->st = NULL;
        cp_stream_reset(st);
    }
    b->closing = 1;
}

static void cp_bridge_conn_drain(wp_conn *c, void *ud)
{
    (void)c;
    cp_bridge *b = ud;
    if (b->closing)
        return;
    cp_bridge_flush_to_conn(b);
    cp_bridge_check_linger(b);
}

static void cp_bridge_conn_close(wp_conn *c, void *ud)
{
    (void)c;
    cp_bridge *b = ud;
    b->conn = NULL;
    if (b->st) {
        cp_stream *st = b->st;
        b->st = NULL;
        cp_stream_reset(st);
    }
    b->closing = 1;
    uv_close((uv_handle_t *)&b->linger, cp_bridge_linger_closed);
}

static const wp_conn_callbacks cp_bridge_conn_cbs = {
    .on_data = cp_bridge_conn_data,
    .on_eof = cp_bridge_conn_eof,
    .on_error = cp_bridge_conn_error,
    .on_drain = cp_bridge_conn_drain,
    .on_close = cp_bridge_conn_close,
};

static const cp_stream_callbacks cp_bridge_st_cbs = {
    .on_data = cp_bridge_st_data,
    .on_fin = cp_bridge_st_fin,
    .on_writable = cp_bridge_st_writable,
    .on_closed = cp_bridge_st_closed,
};

/* ---- start ---- */

int cp_bridge_start(cp_server *s, cp_stream *st, wp_conn *conn, const cp_bridge_opts *o)
{
    if (!s || !st || !conn || !o) {
        cp_stream_reset(st);
        if (conn)
            wp_conn_close(conn);
        return WP_ERR_INVAL;
    }
    cp_bridge *b = calloc(1, sizeof(*b));
    if (!b) {
        cp_stream_reset(st);
        wp_conn_close(conn);
        return WP_ERR_NOMEM;
    }
    b->s = s;
    b->st = st;
    b->conn = conn;
    b->link.force_close = cp_bridge_force_close;
    snprintf(b->node, sizeof(b->node), "%s", o->node ? o->node : "");
    snprintf(b->what, sizeof(b->what), "%s", o->what ? o->what : "");
    wp_buf_init(&b->to_conn, CP_BRIDGE_TO_CONN_MAX);
    wp_buf_init(&b->to_stream, CP_BRIDGE_TO_STREAM_MAX);
    uv_timer_init(wp_conn_loop(conn), &b->linger);
    b->linger.data = b;
    /* From here on every failure goes through cp_bridge_close: the connection's
     * on_close closes the timer, which frees b. */
    wp_conn_set_callbacks(conn, &cp_bridge_conn_cbs, b);
    int rc = cp_stream_set_callbacks(st, &cp_bridge_st_cbs, b);
    if (rc != 0) {
        b->st = NULL; /* ended: nothing to reset */
        cp_bridge_close(b, "stream already ended");
        return WP_ERR_CLOSED;
    }
    b->linked = cp_tunnels_bridge_link(s, &b->link) == 0;
    if (!b->linked) {
        cp_bridge_close(b, "shutting down");
        return WP_ERR_CLOSED;
    }
    if (o->to_client_len > 0) {
        if (wp_conn_write(conn, o->to_client, o->to_client_len) != 0) {
            cp_bridge_close(b, "cannot write the first bytes");
            return WP_ERR_LIMIT;
        }
        size_t credit =
            o->to_client_credit < o->to_client_len ? o->to_client_credit : o->to_client_len;
        if (credit > 0)
            cp_stream_consumed(st, credit);
    }
    if (o->to_node && wp_buf_len(o->to_node) > 0 &&
        wp_buf_put(&b->to_stream, wp_buf_ptr(o->to_node), wp_buf_len(o->to_node)) != 0) {
        cp_bridge_close(b, "leftover too large");
        return WP_ERR_LIMIT;
    }
    wp_log_info("bridge open", WP_LS("node", b->node), WP_LS("what", b->what),
                WP_LS("peer", wp_conn_peer_str(conn)));
    if (cp_bridge_flush_to_stream(b))
        wp_conn_read_start(conn);
    return 0;
}
