/*
 * connect.c — `CONNECT <node-id>:<service> HTTP/1.1` on wolfpackd's port: an
 * admin's raw byte stream to one service of a connected node (like
 * `kubectl port-forward`), used by operators, tests and benchmarks.
 *
 *   401/407  no or bad token (Proxy-Authorization: Bearer, or Authorization)
 *   403      token is not an admin's
 *   400      target is not <node-id>:<service>
 *   404      node_not_connected: no tunnel for that node on this replica
 *   503      the tunnel refuses new streams for now (budgets, draining)
 *   502      the agent refused the stream: error.code is its reason
 *            (not_allowed, refused, unreachable, timeout, ...), or the tunnel
 *            ended (tunnel_closed)
 *   200      "Connection established", then bytes both ways until both sides
 *            half-closed (or either failed)
 *
 * A bridge holds at most one stream window of bytes for the client (credit
 * is returned only once wp_conn_write accepted them, so a slow client stops
 * the agent) and at most one read of bytes for the node (reading the client
 * stops while the stream's send window is full). Client EOF → FIN to the
 * node; FIN from the node → shutdown of the client's write side. After both,
 * the connection is closed once its queue drained (bounded by a linger
 * timer).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wolfpack/proto.h>

#include "auth.h"
#include "conn.h"
#include "err.h"
#include "log.h"
#include "tunnel.h"
#include "tunnel_int.h"

#define CP_BRIDGE_TO_CONN_MAX   (WP_STREAM_INITIAL_WINDOW + WP_FRAME_MAX_DATA)
#define CP_BRIDGE_TO_STREAM_MAX (256u * 1024u)
#define CP_BRIDGE_LEFTOVER_MAX  (64u * 1024u)
#define CP_BRIDGE_LINGER_MS     5000

typedef struct cp_bridge {
    cp_bridge_link link; /* first member: the registry's view */
    cp_server *s;
    cp_call *call; /* until the stream opened */
    cp_stream *st;
    wp_conn *conn;
    uv_timer_t linger;
    wp_buf to_conn;   /* from the node, refused by the connection for now */
    wp_buf to_stream; /* from the client, refused by the stream for now */
    unsigned linked : 1, conn_eof : 1, fin_pending : 1, lingering : 1, closing : 1;
    char node[64];
    char service[WP_SERVICE_NAME_MAX + 1];
} cp_bridge;

static void cp_bridge_free(cp_bridge *b)
{
    wp_buf_free(&b->to_conn);
    wp_buf_free(&b->to_stream);
    free(b);
}

/* ---- teardown ---- */

static void cp_bridge_linger_closed(uv_handle_t *h)
{
    cp_bridge *b = h->data;
    cp_server *s = b->s;
    if (b->linked)
        cp_tunnels_bridge_unlink(s, &b->link);
    cp_bridge_free(b);
}

static void cp_bridge_close(cp_bridge *b, const char *why)
{
    if (b->closing)
        return;
    wp_log_debug("connect bridge closing", WP_LS("node", b->node), WP_LS("why", why));
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
    wp_log_debug("connect bridge linger expired", WP_LS("node", b->node));
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
        wp_log_warn("connect bridge: node overran its window", WP_LS("node", b->node));
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
        wp_log_debug("connect bridge: stream ended", WP_LS("node", b->node),
                     WP_LS("reason", reason));
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
    wp_log_debug("connect bridge: client connection failed", WP_LS("node", b->node),
                 WP_LE("err", err));
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

/* ---- opening ---- */

static const char *cp_bridge_reason_code(const char *reason)
{
    return strcmp(reason, "tunnel_closed") == 0 ? "tunnel_closed" : reason;
}

/* The stream is up: answer 200 and start bridging. */
static void cp_bridge_start(cp_bridge *b, cp_stream *st)
{
    cp_call *call = b->call;
    wp_http_req *req = cp_call_req(call);
    b->call = NULL;
    if (!req) { /* the client left while we waited */
        cp_call_done(call);
        b->st = NULL;
        cp_stream_reset(st);
        cp_bridge_free(b);
        return;
    }
    wp_http_req_on_abort(req, NULL, NULL);
    call->req = NULL;
    cp_call_done(call);
    if (!cp_tunnels_running(b->s)) {
        wp_http_respond_error(req, 503, "unavailable", "the server is shutting down");
        b->st = NULL;
        cp_stream_reset(st);
        cp_bridge_free(b);
        return;
    }
    wp_buf leftover;
    wp_buf_init(&leftover, CP_BRIDGE_LEFTOVER_MAX);
    wp_conn *conn = NULL;
    int rc = wp_http_req_hijack(req, &conn, &leftover);
    if (rc != 0) {
        if (rc != WP_ERR_CLOSED) /* the req is still ours */
            wp_http_respond_error(req, 500, "internal", "cannot take over the connection");
        wp_buf_free(&leftover);
        b->st = NULL;
        cp_stream_reset(st);
        cp_bridge_free(b);
        return;
    }
    b->conn = conn;
    uv_timer_init(wp_conn_loop(conn), &b->linger);
    b->linger.data = b;
    b->linked = cp_tunnels_bridge_link(b->s, &b->link) == 0;
    wp_conn_set_callbacks(conn, &cp_bridge_conn_cbs, b);
    static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
    if (!b->linked || wp_conn_write_ctl(conn, ok, sizeof(ok) - 1) != 0) {
        wp_buf_free(&leftover);
        cp_bridge_close(b, "cannot answer 200");
        return;
    }
    wp_log_info("connect bridge open", WP_LS("node", b->node), WP_LS("service", b->service),
                WP_LS("peer", wp_conn_peer_str(conn)));
    if (wp_buf_len(&leftover) > 0 &&
        wp_buf_put(&b->to_stream, wp_buf_ptr(&leftover), wp_buf_len(&leftover)) != 0) {
        wp_buf_free(&leftover);
        cp_bridge_close(b, "leftover too large");
        return;
    }
    wp_buf_free(&leftover);
    if (cp_bridge_flush_to_stream(b))
        wp_conn_read_start(conn);
}

static void cp_bridge_st_open(cp_stream *st, int err, const char *reason, void *ud)
{
    cp_bridge *b = ud;
    if (err == 0) {
        cp_bridge_start(b, st);
        return;
    }
    /* Final: st is freed after this returns. */
    b->st = NULL;
    wp_log_info("connect refused", WP_LS("node", b->node), WP_LS("service", b->service),
                WP_LS("reason", reason));
    char msg[200];
    snprintf(msg, sizeof(msg), "node %s did not open service %s: %s", b->node, b->service, reason);
    cp_call_respond_error(b->call, 502, cp_bridge_reason_code(reason), msg);
    cp_bridge_free(b);
}

static const cp_stream_callbacks cp_bridge_st_cbs = {
    .on_open = cp_bridge_st_open,
    .on_data = cp_bridge_st_data,
    .on_fin = cp_bridge_st_fin,
    .on_writable = cp_bridge_st_writable,
    .on_closed = cp_bridge_st_closed,
};

/* [a-z0-9] first, then up to `rest` of [a-z0-9-] (node ids: 62, service names: 31). */
static int cp_connect_name_ok(const char *s, size_t rest)
{
    size_t n = strlen(s);
    if (n == 0 || n > rest + 1)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i > 0)))
            return 0;
    }
    return 1;
}

/* Splits "node:service" into its parts; 0 or WP_ERR_INVAL. */
static int cp_connect_target(const char *target, char *node, size_t ncap, char *svc, size_t scap)
{
    const char *colon = target ? strchr(target, ':') : NULL;
    if (!colon || (size_t)(colon - target) >= ncap || strlen(colon + 1) >= scap)
        return WP_ERR_INVAL;
    memcpy(node, target, (size_t)(colon - target));
    node[colon - target] = '\0';
    snprintf(svc, scap, "%s", colon + 1);
    if (!cp_connect_name_ok(node, WP_NODE_ID_MAX - 1) ||
        !cp_connect_name_ok(svc, WP_SERVICE_NAME_MAX - 1))
        return WP_ERR_INVAL;
    return 0;
}

static void cp_connect_authed(cp_call *call)
{
    cp_server *s = call->data;
    wp_http_req *req = cp_call_req(call);
    char node[64], svc[WP_SERVICE_NAME_MAX + 1];
    if (cp_connect_target(wp_http_req_path(req), node, sizeof(node), svc, sizeof(svc)) != 0) {
        cp_call_respond_error(call, 400, "bad_request",
                              "CONNECT target must be <node-id>:<service>");
        return;
    }
    if (!cp_tunnel_connected(s, node)) {
        cp_call_respond_error(call, 404, "node_not_connected",
                              "no tunnel for that node on this replica");
        return;
    }
    cp_bridge *b = calloc(1, sizeof(*b));
    if (!b) {
        cp_call_respond_error(call, 500, "internal", "out of memory");
        return;
    }
    b->s = s;
    b->call = call;
    b->link.force_close = cp_bridge_force_close;
    snprintf(b->node, sizeof(b->node), "%s", node);
    snprintf(b->service, sizeof(b->service), "%s", svc);
    wp_buf_init(&b->to_conn, CP_BRIDGE_TO_CONN_MAX);
    wp_buf_init(&b->to_stream, CP_BRIDGE_TO_STREAM_MAX);
    char preamble[64];
    snprintf(preamble, sizeof(preamble), "{\"service\":\"%s\"}", svc);
    int rc = cp_tunnel_open_stream(s, node, preamble, &cp_bridge_st_cbs, b, &b->st);
    if (rc != 0) {
        cp_bridge_free(b);
        if (rc == WP_ERR_NOT_FOUND)
            cp_call_respond_error(call, 404, "node_not_connected",
                                  "no tunnel for that node on this replica");
        else
            cp_call_respond_error(call, 503, "tunnel_busy",
                                  "the node's tunnel takes no new streams now");
        return;
    }
}

void cp_connect_handler(wp_http_req *req, void *ud)
{
    cp_server *s = ud;
    if (!cp_tunnels_running(s)) {
        wp_http_respond_error(req, 503, "unavailable", "the server is shutting down");
        return;
    }
    cp_auth_request(s, req, CP_ROLE_ADMIN, cp_connect_authed, NULL, s);
}
