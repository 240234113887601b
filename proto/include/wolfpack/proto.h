/*
 * proto.h — constants shared by wolfpackd and wolfpack-agent on the wire.
 * proto/PROTOCOL.md is the normative text; this header must agree with it
 * (same names, same values; §13 of PROTOCOL.md lists them all).
 */
#ifndef WOLFPACK_PROTO_H
#define WOLFPACK_PROTO_H

/* ---- transport and versioning (PROTOCOL.md §2, §11) ---- */

#define WP_PROTO_SUBPROTOCOL "wolfpack.v1"    /* WebSocket subprotocol of this version */
#define WP_PROTO_TUNNEL_PATH "/api/v1/tunnel" /* upgrade request-target (no query allowed) */

/* Default listen port of wolfpackd. */
#define WP_PROTO_DEFAULT_PORT 8443

#define WP_PROTO_VERSION 1 /* "protocol" member of hello/welcome for wolfpack.v1 */

/* ---- frame header: yamux v0, 12 bytes big-endian (§5) ---- */

#define WP_FRAME_HDR_LEN 12 /* version u8, type u8, flags u16, stream id u32, length u32 */
#define WP_FRAME_VERSION 0  /* the only header version */

#define WP_FRAME_TYPE_DATA          0 /* payload of `length` bytes follows */
#define WP_FRAME_TYPE_WINDOW_UPDATE 1 /* length = credit delta, no payload */
#define WP_FRAME_TYPE_PING          2 /* length = opaque value, stream 0 */
#define WP_FRAME_TYPE_GOAWAY        3 /* length = GoAway code, stream 0 */

#define WP_FRAME_FLAG_SYN   0x0001u /* open a stream (Data) / Ping request */
#define WP_FRAME_FLAG_ACK   0x0002u /* accept a stream (WindowUpdate) / Ping response */
#define WP_FRAME_FLAG_FIN   0x0004u /* sender half-closes the stream */
#define WP_FRAME_FLAG_RST   0x0008u /* abort the stream (alone, zero-length WindowUpdate) */
#define WP_FRAME_FLAGS_MASK 0x000Fu /* every defined flag bit; other bits are invalid */

#define WP_FRAME_MAX_DATA 16384u                                 /* max Data payload */
#define WP_FRAME_MAX_LEN  (WP_FRAME_HDR_LEN + WP_FRAME_MAX_DATA) /* max whole frame */

#define WP_GOAWAY_NORMAL         0u /* mux GoAway: normal termination */
#define WP_GOAWAY_PROTO_ERROR    1u /* mux GoAway: peer violated the protocol */
#define WP_GOAWAY_INTERNAL_ERROR 2u /* mux GoAway: internal error (also any unknown code) */

#define WP_STREAM_ID_SESSION 0u          /* id of Ping/GoAway frames */
#define WP_STREAM_ID_FIRST   2u          /* first id the server opens; then +2 each */
#define WP_STREAM_ID_MAX     0xFFFFFFFEu /* highest (even) stream id */

/* ---- flow control (§7) ---- */

#define WP_STREAM_INITIAL_WINDOW   (256u * 1024u) /* per stream per direction at open */
#define WP_WINDOW_UPDATE_THRESHOLD (WP_STREAM_INITIAL_WINDOW / 2) /* credit once this consumed */
#define WP_STREAM_WINDOW_MAX       (4u * 1024u * 1024u) /* largest window a receiver grows to */
#define WP_STREAM_WINDOW_LIMIT     0x7FFFFFFFu /* largest stream_window_max one may announce */
#define WP_WINDOW_GROW_MS          100u        /* a half window consumed faster than this: grow */
#define WP_HELLO_STREAM_WINDOW_MAX "stream_window_max" /* hello/welcome member (§7.1) */

/* ---- stream open preamble (§6.2) ---- */

#define WP_PREAMBLE_LEN_SIZE  2u    /* u16 big-endian JSON length prefix */
#define WP_PREAMBLE_MAX       1024u /* max JSON bytes (min is 1) */
#define WP_PREAMBLE_MIN_FRAME 3u    /* min length of a SYN Data frame: prefix + 1 JSON byte */
#define WP_SERVICE_NAME_MAX   32u   /* service name [a-z0-9][a-z0-9-]{0,31} */
#define WP_SANDBOX_HOST_MAX   128u  /* sandbox host [A-Za-z0-9][A-Za-z0-9_.-]{0,127} */

#define WP_PREAMBLE_SERVICE_SANDBOX "sandbox" /* the service that takes host + port */
#define WP_PREAMBLE_SERVICE_PROBE   "probe"   /* the agent's built-in probe service */

/* ---- hello limits (§4.2) ---- */

#define WP_NODE_ID_MAX  63u  /* node id [a-z0-9][a-z0-9-]{0,62} */
#define WP_LABELS_MAX   64u  /* labels in hello */
#define WP_SERVICES_MAX 32u  /* services in hello */
#define WP_GPUS_MAX     64u  /* GPU entries in hello/heartbeat */
#define WP_LOBBIES_MAX  256u /* lobbies (and sessions) listed in hello */

/* ---- message sizes (§2.3) ---- */

#define WP_CONTROL_MSG_MAX (64u * 1024u)   /* max text (control JSON) message */
#define WP_WS_MSG_MAX      (1024u * 1024u) /* max binary message; past it: close 1009 */

/* ---- timers, milliseconds unless _S (§3, §6, §9, §10) ---- */

#define WP_HANDSHAKE_TIMEOUT_MS 10000  /* TLS + WebSocket upgrade must complete within */
#define WP_HELLO_TIMEOUT_MS     10000  /* hello after the 101; welcome after hello */
#define WP_OPEN_DEADLINE_MS     5000   /* agent's asynchronous local dial deadline */
#define WP_OPEN_ACK_TIMEOUT_MS  10000  /* server's wait for ACK/RST after a SYN */
#define WP_PING_INTERVAL_MS     15000  /* mux Ping after this long without a received byte */
#define WP_DEAD_TIMEOUT_MS      45000  /* no byte received for this long: session dead */
#define WP_REAP_TIMEOUT_MS      60000  /* idle half-closed stream gets RST */
#define WP_DRAIN_TIMEOUT_MS     30000  /* default wait for streams during drain */
#define WP_CLOSE_TIMEOUT_MS     5000   /* wait for the peer's WebSocket Close */
#define WP_HEARTBEAT_DEFAULT_MS 10000  /* heartbeat_interval_ms the server sends by default */
#define WP_HEARTBEAT_MIN_MS     1000   /* agents clamp heartbeat_interval_ms to at least */
#define WP_HEARTBEAT_MAX_MS     300000 /* ... and at most */
#define WP_BACKOFF_BASE_MS      1000   /* reconnect: rand(0, min(cap, base * 2^n)) */
#define WP_BACKOFF_CAP_MS       30000  /* reconnect backoff cap */
#define WP_BACKOFF_RESET_MS     60000  /* connected this long: backoff n resets to 0 */
#define WP_RETRY_AFTER_MAX_S    300    /* largest Retry-After (seconds) an agent honours */

/* ---- per-tunnel budgets (§8) ---- */

#define WP_TUNNEL_MAX_STREAMS     1024u                /* open streams; beyond: refuse "busy" */
#define WP_TUNNEL_MAX_PENDING_SYN 128u                 /* un-acked SYNs; beyond: refuse "busy" */
#define WP_TUNNEL_MAX_BUFFERED    (8u * 1024u * 1024u) /* buffered bytes; at/over: refuse new */
#define WP_TUNNEL_MAX_CTRL_FRAMES 4096u                /* queued control frames; over: GoAway 1 */
#define WP_MAX_REPLICAS           16u                  /* tunnels (distinct replicas) per agent */

/* ---- WebSocket close codes (§10.3) ---- */

#define WP_WS_CLOSE_NORMAL         1000 /* drained */
#define WP_WS_CLOSE_GOING_AWAY     1001 /* shutdown */
#define WP_WS_CLOSE_PROTOCOL_ERROR 1002 /* protocol_error */
#define WP_WS_CLOSE_INVALID_DATA   1007 /* text not UTF-8 */
#define WP_WS_CLOSE_POLICY         1008 /* hello_timeout, forbidden */
#define WP_WS_CLOSE_TOO_BIG        1009 /* message over its limit */
#define WP_WS_CLOSE_INTERNAL       1011 /* internal_error */
#define WP_WS_CLOSE_REPLACED       4001 /* replaced: a newer agent instance took the node id */
#define WP_WS_CLOSE_DUPLICATE      4002 /* duplicate: second tunnel to one replica */
#define WP_WS_CLOSE_UNSUPPORTED    4003 /* unsupported_version */

/* ---- error.code of non-101 answers to the upgrade request (§2.2) ---- */

#define WP_UPGRADE_ERR_OVER_CAPACITY "over_capacity"           /* 503 + Retry-After */
#define WP_UPGRADE_ERR_METHOD        "method_not_allowed"      /* 405 */
#define WP_UPGRADE_ERR_BAD_REQUEST   "bad_request"             /* 400: query, bad WS headers */
#define WP_UPGRADE_ERR_UNAUTHORIZED  "unauthorized"            /* 401 */
#define WP_UPGRADE_ERR_FORBIDDEN     "forbidden"               /* 403: token is not an agent's */
#define WP_UPGRADE_ERR_UPGRADE_REQ   "upgrade_required"        /* 426: WebSocket version */
#define WP_UPGRADE_ERR_SUBPROTOCOL   "unsupported_subprotocol" /* 400: no wolfpack.vN offered */

/* ---- control message types, the JSON "type" member (§4) ---- */

#define WP_MSG_HELLO     "hello"     /* agent -> server, first message */
#define WP_MSG_WELCOME   "welcome"   /* server -> agent, answer to hello */
#define WP_MSG_HEARTBEAT "heartbeat" /* agent -> server, every heartbeat interval */
#define WP_MSG_DRAIN     "drain"     /* either: no new streams on this tunnel */
#define WP_MSG_GOAWAY    "goaway"    /* either: tunnel ends now, close follows */
#define WP_MSG_ERROR     "error"     /* either: why a stream was refused or reset */
#define WP_MSG_EVENT     "event"     /* agent -> server: something the node did (§4.8) */

/* ---- "event" message names (§4.8) ---- */

#define WP_EVENT_WOLF_RESTART "wolf_restart" /* the agent ran --wolf-restart-cmd */

/* ---- "error" message codes (§4.7) ---- */

#define WP_STREAM_ERR_REFUSED     "refused"     /* local service refused the connection */
#define WP_STREAM_ERR_NOT_ALLOWED "not_allowed" /* not on the allow-list / bad sandbox target */
#define WP_STREAM_ERR_TIMEOUT     "timeout"     /* local dial missed WP_OPEN_DEADLINE_MS */
#define WP_STREAM_ERR_UNREACHABLE "unreachable" /* no route / name / socket path */
#define WP_STREAM_ERR_PROTOCOL    "protocol"    /* malformed open preamble */
#define WP_STREAM_ERR_BUSY        "busy"        /* a per-tunnel budget is exhausted */
#define WP_STREAM_ERR_DRAINING    "draining"    /* agent is draining */
#define WP_STREAM_ERR_RESET       "reset"       /* local side failed after open */
#define WP_STREAM_ERR_INTERNAL    "internal"    /* anything else (and unknown codes) */

/* ---- "goaway" message reasons (§10.3) ---- */

#define WP_GOAWAY_REASON_SHUTDOWN       "shutdown"  /* exit without drain; 1001 */
#define WP_GOAWAY_REASON_DRAINED        "drained"   /* drain finished; 1000 */
#define WP_GOAWAY_REASON_REPLACED       "replaced"  /* newer instance, same node; 4001 */
#define WP_GOAWAY_REASON_DUPLICATE      "duplicate" /* same instance, same replica; 4002 */
#define WP_GOAWAY_REASON_UNSUPPORTED    "unsupported_version" /* hello.protocol; 4003 */
#define WP_GOAWAY_REASON_HELLO_TIMEOUT  "hello_timeout"       /* no hello/welcome in time; 1008 */
#define WP_GOAWAY_REASON_FORBIDDEN      "forbidden"           /* token not for this node; 1008 */
#define WP_GOAWAY_REASON_PROTOCOL_ERROR "protocol_error"      /* any violation; 1002 */
#define WP_GOAWAY_REASON_INTERNAL_ERROR "internal_error"      /* local failure; 1011 */

#endif
