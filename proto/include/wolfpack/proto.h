/*
 * proto.h — constants shared by wolfpackd and wolfpack-agent on the wire.
 * proto/PROTOCOL.md is the normative text; this header must agree with it.
 */
#ifndef WOLFPACK_PROTO_H
#define WOLFPACK_PROTO_H

#define WP_PROTO_SUBPROTOCOL "wolfpack.v1"
#define WP_PROTO_TUNNEL_PATH "/api/v1/tunnel"

/* Default listen port of wolfpackd. */
#define WP_PROTO_DEFAULT_PORT 8443

#endif
