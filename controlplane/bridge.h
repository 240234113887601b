/*
 * bridge.h — a client connection taken over from HTTP (hijacked), bridged
 * byte for byte to an open tunnel stream, with backpressure both ways. Used by
 * the operator's CONNECT (connect.c, after "200 Connection established") and
 * by the proxy (proxy.c, after an upstream "101 Switching Protocols", e.g. a
 * Moonlight Web WebSocket).
 *
 * A bridge holds at most one stream window of bytes for the client (credit
 * is returned only once wp_conn_write accepted them, so a slow client stops
 * the agent) and at most one read of bytes for the node (reading the client
 * stops while the stream's send window is full). Client EOF → FIN to the
 * node; FIN from the node → shutdown of the client's write side. After both,
 * the connection is closed once its queue drained (bounded by a linger
 * timer). The bridge is linked into the tunnel registry, so server shutdown
 * closes it.
 */
#ifndef CP_BRIDGE_H
#define CP_BRIDGE_H

#include <stddef.h>

#include "buf.h"
#include "conn.h"
#include "server.h"
#include "tunnel.h"

typedef struct cp_bridge_opts {
    const char *node; /* node id, for logs */
    const char *what; /* what is bridged, for logs ("connect moonlight", "proxy ...") */
    /* First bytes for the client (e.g. the 200 or 101 head), may be NULL/0. */
    const void *to_client;
    size_t to_client_len;
    /* How many of the LAST to_client bytes are stream data not yet credited
     * (cp_stream_consumed is called for them once the connection took them). */
    size_t to_client_credit;
    /* Bytes the client already sent past its request (hijack leftover), may be NULL. */
    const wp_buf *to_node;
} cp_bridge_opts;

/*
 * Starts bridging conn (hijacked: no callbacks, reading stopped) and st (an
 * opened stream; its callbacks are replaced). Takes ownership of both in
 * every case. Returns 0, or (both already closed: the stream reset, the
 * connection closing) WP_ERR_CLOSED (the server is shutting down),
 * WP_ERR_LIMIT (to_node larger than one read buffer, or to_client refused),
 * WP_ERR_NOMEM, WP_ERR_INVAL (NULL argument).
 */
int cp_bridge_start(cp_server *s, cp_stream *st, wp_conn *conn, const cp_bridge_opts *o);

#endif
