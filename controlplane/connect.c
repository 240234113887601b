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
 * After the 200 the connection is a bridge (bridge.h): bytes both ways with
 * backpressure, half-closes passed on, closed by server shutdown.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wolfpack/proto.h>

#include "auth.h"
#include "bridge.h"
#include "conn.h"
#include "err.h"
#include "ids.h"
#include "log.h"
#include "tunnel.h"
#include "tunnel_int.h"

#define CP_CONNECT_LEFTOVER_MAX (64u * 1024u)

/* A CONNECT waiting for its stream to open. */
typedef struct cp_connect {
    cp_server *s;
    cp_call *call;
    cp_stream *st;
    char node[64];
    char service[WP_SERVICE_NAME_MAX + 1];
} cp_connect;

static const char *cp_connect_reason_code(const char *reason)
{
    return strcmp(reason, "tunnel_closed") == 0 ? "tunnel_closed" : reason;
}

/* The stream is up: answer 200 and hand connection and stream to a bridge. */
static void cp_connect_start(cp_connect *cx, cp_stream *st)
{
    cp_call *call = cx->call;
    wp_http_req *req = cp_call_req(call);
    cx->call = NULL;
    if (!req) { /* the client left while we waited */
        cp_call_done(call);
        cp_stream_reset(st);
        free(cx);
        return;
    }
    cp_call_done(call);
    if (!cp_tunnels_running(cx->s)) {
        wp_http_respond_error(req, 503, "unavailable", "the server is shutting down");
        cp_stream_reset(st);
        free(cx);
        return;
    }
    wp_buf leftover;
    wp_buf_init(&leftover, CP_CONNECT_LEFTOVER_MAX);
    wp_conn *conn = NULL;
    int rc = wp_http_req_hijack(req, &conn, &leftover);
    if (rc != 0) {
        if (rc != WP_ERR_CLOSED) /* the req is still ours */
            wp_http_respond_error(req, 500, "internal", "cannot take over the connection");
        wp_buf_free(&leftover);
        cp_stream_reset(st);
        free(cx);
        return;
    }
    static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
    char what[64];
    snprintf(what, sizeof(what), "connect %s", cx->service);
    cp_bridge_opts o = {.node = cx->node,
                        .what = what,
                        .to_client = ok,
                        .to_client_len = sizeof(ok) - 1,
                        .to_node = &leftover};
    cp_bridge_start(cx->s, st, conn, &o); /* owns both now, whatever it returns */
    wp_buf_free(&leftover);
    free(cx);
}

static void cp_connect_st_open(cp_stream *st, int err, const char *reason, void *ud)
{
    cp_connect *cx = ud;
    if (err == 0) {
        cp_connect_start(cx, st);
        return;
    }
    /* Final: st is freed after this returns. */
    wp_log_info("connect refused", WP_LS("node", cx->node), WP_LS("service", cx->service),
                WP_LS("reason", reason));
    char msg[200];
    snprintf(msg, sizeof(msg), "node %s did not open service %s: %s", cx->node, cx->service,
             reason);
    cp_call_respond_error(cx->call, 502, cp_connect_reason_code(reason), msg);
    free(cx);
}

/* Never called: the stream is handed over (or reset) in on_open. */
static void cp_connect_st_closed(cp_stream *st, int err, const char *reason, void *ud)
{
    (void)st;
    (void)err;
    (void)reason;
    (void)ud;
}

static const cp_stream_callbacks cp_connect_st_cbs = {
    .on_open = cp_connect_st_open,
    .on_closed = cp_connect_st_closed,
};

/* Splits "node:service" into its parts; 0 or WP_ERR_INVAL. */
static int cp_connect_target(const char *target, char *node, size_t ncap, char *svc, size_t scap)
{
    const char *colon = target ? strchr(target, ':') : NULL;
    if (!colon || (size_t)(colon - target) >= ncap || strlen(colon + 1) >= scap)
        return WP_ERR_INVAL;
    memcpy(node, target, (size_t)(colon - target));
    node[colon - target] = '\0';
    snprintf(svc, scap, "%s", colon + 1);
    if (!wp_node_id_valid(node) || !wp_service_name_valid(svc))
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
    cp_connect *cx = calloc(1, sizeof(*cx));
    if (!cx) {
        cp_call_respond_error(call, 500, "internal", "out of memory");
        return;
    }
    cx->s = s;
    cx->call = call;
    snprintf(cx->node, sizeof(cx->node), "%s", node);
    snprintf(cx->service, sizeof(cx->service), "%s", svc);
    char preamble[64];
    snprintf(preamble, sizeof(preamble), "{\"service\":\"%s\"}", svc);
    int rc = cp_tunnel_open_stream(s, node, preamble, &cp_connect_st_cbs, cx, &cx->st);
    if (rc != 0) {
        free(cx);
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
