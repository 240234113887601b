/*
 * ws.c — WebSocket (RFC 6455) over wp_conn with wslay's event API (see ws.h).
 *
 * Input: conn on_data appends to `in` (bounded); ws_proceed() runs
 * wslay_event_recv(), whose recv callback hands wslay at most one frame at a
 * time: at a frame boundary the next header is parsed and checked here first
 * (ws_frame_head), so a bad or oversized frame is refused before wslay reads
 * it, and pausing inside a message callback leaves every later byte in `in`.
 *
 * Output: wp_ws_send_*() queue into wslay (which copies); ws_proceed() runs
 * wslay_event_send(), whose send callback copies into the connection's write
 * queue in chunks until it refuses (WP_ERR_LIMIT): the writer is then blocked
 * until the connection's on_drain. Queued bytes = wslay's queue + the
 * connection's queue; the ws-level on_drain is checked whenever either moves.
 *
 * Re-entrancy: user callbacks run inside wslay_event_recv(); a send or close
 * from there only marks the loop to go around again (never re-enters wslay).
 * Nothing is freed before the connection's on_close and the two timers'
 * close callbacks have all run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <llhttp.h>
#include <mbedtls/sha1.h>
#include <mbedtls/version.h>
#include <wslay/wslay.h>

#include "buf.h"
#include "crypto.h"
#include "err.h"
#include "log.h"
#include "ws.h"
#include "wolfpack/proto.h"

#define WS_GUID          "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_KEY_MAX       128
#define WS_IN_MAX        (256u * 1024u) /* unprocessed input: leftover + one read while paused */
#define WS_SEND_CHUNK    (64u * 1024u)  /* largest single wp_conn_write from the send callback */
#define WS_REQ_MAX       8192u          /* client upgrade request */
#define WS_RESP_HDR_MAX  16384u         /* client: the server's response headers */
#define WS_RESP_BODY_MAX 16384u         /* client: body of a refusal kept for its JSON error */
#define WS_HNAME_MAX     256u
#define WS_QUEUED_DEF    (8u * 1024u * 1024u)
#define WS_MSG_KEEP      (64u * 1024u) /* reassembly storage kept between messages */

enum { WS_CONNECTING = 0, WS_OPEN = 1 };

typedef struct ws_client_hs {
    wp_ws_connect_cb cb;
    void *cud;
    char *host; /* for connecting and SNI (IPv6 without brackets) */
    char *subprotocol;
    wp_buf req; /* request bytes (may hold a token: zeroed when freed) */
    char accept[WP_WS_ACCEPT_LEN];
    uint64_t deadline;
    llhttp_t parser;
    wp_buf name, value;
    size_t hdr_bytes;
    int status;
    unsigned final : 1, done : 1, upgrade_ok : 1, connection_ok : 1, accept_ok : 1, proto_ok : 1,
        ext_seen : 1, json : 1;
    int accept_count, proto_count;
    unsigned retry_after;
    wp_buf body;
} ws_client_hs;

struct wp_ws {
    uv_loop_t *loop;
    wp_conn *conn;
    wslay_event_context_ptr ctx;
    wp_ws_callbacks cbs;
    void *ud;
    wp_ws_limits lim;
    int state;
    int is_client;
    wp_buf in;
    /* received data message: wslay does not buffer data frames (no_buffering); text, and
     * binary without on_binary_chunk, are reassembled here in storage kept between messages */
    wp_buf msg;
    uint8_t rx_op;          /* opcode of the data message being received (text/binary) */
    unsigned rx_ctrl : 1;   /* the frame being received is a control frame */
    unsigned rx_stream : 1; /* this binary message goes to on_binary_chunk piece by piece */
    /* frame pre-check state */
    uint64_t frame_left; /* bytes of the current frame not yet handed to wslay; 0 = boundary */
    uint64_t msg_len;    /* data message length so far */
    int fail_code;       /* close code our pre-check failed the connection with */
    unsigned msg_open : 1, msg_text : 1;
    /* flags */
    unsigned in_proceed : 1, again : 1, again_read : 1, paused : 1, write_blocked : 1,
        need_drain : 1, reported : 1, aborted : 1, close_requested : 1, close_queued : 1,
        close_received : 1, fail_queued : 1, shut_done : 1, delivered : 1, conn_pending : 1,
        timers_init : 1, close_held : 1;
    int timers_open;
    uv_timer_t timer; /* client handshake deadline, then closing handshake / EOF wait */
    uv_timer_t kick;  /* deferred input processing (leftover bytes, resume) */
    uint16_t close_code;
    uint8_t close_reason[123];
    size_t close_reason_len;
    uint64_t last_rx;
    ws_client_hs *hs;
};

static void ws_proceed(wp_ws *ws, int want_read);

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

void wp_ws_limits_default(wp_ws_limits *l)
{
    l->max_binary = WP_WS_MSG_MAX;
    l->max_text = WP_CONTROL_MSG_MAX;
    l->max_queued = WS_QUEUED_DEF;
    l->close_timeout_ms = WP_CLOSE_TIMEOUT_MS;
    l->handshake_timeout_ms = WP_HANDSHAKE_TIMEOUT_MS;
}

static void ws_limits_fill(wp_ws_limits *dst, const wp_ws_limits *src)
{
    wp_ws_limits_default(dst);
    if (!src)
        return;
    if (src->max_binary)
        dst->max_binary = src->max_binary;
    if (src->max_text)
        dst->max_text = src->max_text;
    if (src->max_queued)
        dst->max_queued = src->max_queued;
    if (src->close_timeout_ms)
        dst->close_timeout_ms = src->close_timeout_ms;
    if (src->handshake_timeout_ms)
        dst->handshake_timeout_ms = src->handshake_timeout_ms;
}

static int ws_is_tchar(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int ws_is_token(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!ws_is_tchar((unsigned char)s[n]))
            return 0;
    return n > 0 && n <= max;
}

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
static int ws_utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        size_t k;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            k = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            k = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i - 1 < k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}

/* Trims optional whitespace around [*s, *s + *n). */
static void ws_trim(const char **s, size_t *n)
{
    while (*n && (**s == ' ' || **s == '\t'))
        (*s)++, (*n)--;
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

/* Whether the comma-separated list v contains tok (case-insensitive when ci). */
static int ws_list_has(const char *v, const char *tok, int ci)
{
    size_t tl = strlen(tok);
    while (*v) {
        const char *e = strchr(v, ',');
        size_t n = e ? (size_t)(e - v) : strlen(v);
        const char *s = v;
        ws_trim(&s, &n);
        if (n == tl && (ci ? strncasecmp(s, tok, n) == 0 : memcmp(s, tok, n) == 0))
            return 1;
        if (!e)
            break;
        v = e + 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* handshake helpers                                                   */

int wp_ws_accept_key(const char *client_key, char out[WP_WS_ACCEPT_LEN])
{
    if (!client_key || !out)
        return WP_ERR_INVAL;
    size_t kl = strlen(client_key);
    if (kl == 0 || kl > WS_KEY_MAX)
        return WP_ERR_INVAL;
    char buf[WS_KEY_MAX + sizeof(WS_GUID)];
    memcpy(buf, client_key, kl);
    memcpy(buf + kl, WS_GUID, sizeof(WS_GUID) - 1);
    uint8_t digest[20];
#if MBEDTLS_VERSION_MAJOR >= 3
    int rc = mbedtls_sha1((const unsigned char *)buf, kl + sizeof(WS_GUID) - 1, digest);
#else
    int rc = mbedtls_sha1_ret((const unsigned char *)buf, kl + sizeof(WS_GUID) - 1, digest);
#endif
    if (rc != 0)
        return WP_ERR_CRYPTO;
    return wp_base64_encode(digest, sizeof(digest), out, WP_WS_ACCEPT_LEN, NULL) == 0
               ? 0
               : WP_ERR_CRYPTO;
}

/* Whether s (trimmed) is base64 of exactly 16 bytes. */
static int ws_key_valid(const char *s)
{
    size_t n = strlen(s);
    ws_trim(&s, &n);
    uint8_t raw[18];
    size_t ol = 0;
    return n == 24 && wp_base64_decode(s, n, raw, sizeof(raw), &ol) == 0 && ol == 16;
}

#define WS_REFUSE(st, c, m)                                                                        \
    do {                                                                                           \
        if (code)                                                                                  \
            *code = (c);                                                                           \
        if (msg && cap)                                                                            \
            snprintf(msg, cap, "%s", (m));                                                         \
        return (st);                                                                               \
    } while (0)

int wp_ws_check_upgrade(wp_http_req *req, const char *subprotocol, const char **code, char *msg,
                        size_t cap)
{
    if (!req || !subprotocol)
        return WP_ERR_INVAL;
    if (strcmp(wp_http_req_method(req), "GET") != 0)
        WS_REFUSE(405, "method_not_allowed", "websocket upgrade needs GET");
    if (wp_http_req_version_minor(req) != 1)
        WS_REFUSE(400, "bad_request", "websocket upgrade needs HTTP/1.1");
    size_t nver = 0, nkey = 0;
    int ver_ok = 0, key_ok = 0, up_ok = 0, conn_ok = 0, proto_ok = 0;
    size_t nh = wp_http_req_header_count(req);
    for (size_t i = 0; i < nh; i++) {
        const char *name, *value;
        if (wp_http_req_header_at(req, i, &name, &value) < 0)
            continue;
        if (!strcasecmp(name, "Sec-WebSocket-Version")) {
            nver++;
            const char *s = value;
            size_t n = strlen(s);
            ws_trim(&s, &n);
            ver_ok = n == 2 && memcmp(s, "13", 2) == 0;
        } else if (!strcasecmp(name, "Sec-WebSocket-Key")) {
            nkey++;
            key_ok = ws_key_valid(value);
        } else if (!strcasecmp(name, "Upgrade")) {
            up_ok |= ws_list_has(value, "websocket", 1);
        } else if (!strcasecmp(name, "Connection")) {
            conn_ok |= ws_list_has(value, "upgrade", 1);
        } else if (!strcasecmp(name, "Sec-WebSocket-Protocol")) {
            proto_ok |= ws_list_has(value, subprotocol, 0);
        }
    }
    if (nver != 1 || !ver_ok)
        WS_REFUSE(426, "upgrade_required", "Sec-WebSocket-Version must be 13");
    if (!up_ok)
        WS_REFUSE(400, "bad_request", "missing or invalid Upgrade header");
    if (!conn_ok)
        WS_REFUSE(400, "bad_request", "Connection header must contain upgrade");
    if (nkey != 1 || !key_ok)
        WS_REFUSE(400, "bad_request", "Sec-WebSocket-Key must be base64 of 16 bytes");
    if (!proto_ok)
        WS_REFUSE(400, "unsupported_subprotocol", "no supported subprotocol offered");
    return 0;
}

int wp_ws_reject(wp_http_req *req, int status, const char *code, const char *msg)
{
    if (!req)
        return WP_ERR_INVAL;
    if (status == 426)
        wp_http_resp_header(req, "Sec-WebSocket-Version", "13");
    else if (status == 405)
        wp_http_resp_header(req, "Allow", "GET");
    return wp_http_respond_error(req, status, code ? code : "bad_request",
                                 msg ? msg : "websocket upgrade refused");
}

/* ------------------------------------------------------------------ */
/* lifetime                                                            */

static void ws_hs_free(ws_client_hs *hs)
{
    if (!hs)
        return;
    wp_buf_free(&hs->req);
    wp_buf_free(&hs->name);
    wp_buf_free(&hs->value);
    wp_buf_free(&hs->body);
    free(hs->host);
    free(hs->subprotocol);
    free(hs);
}

/* Frees ws once the connection and both timers are gone. */
static void ws_release(wp_ws *ws)
{
    if (ws->conn || ws->conn_pending || ws->timers_open > 0)
        return;
    if (ws->delivered && ws->cbs.on_freed)
        ws->cbs.on_freed(ws, ws->ud);
    if (ws->ctx)
        wslay_event_context_free(ws->ctx);
    ws_hs_free(ws->hs);
    wp_buf_free(&ws->in);
    wp_buf_free(&ws->msg);
    free(ws);
}

static void ws_timer_closed(uv_handle_t *h)
{
    wp_ws *ws = h->data;
    ws->timers_open--;
    ws_release(ws);
}

static void ws_timer_cb(uv_timer_t *t);
static void ws_kick_cb(uv_timer_t *t);

static void ws_timers_init(wp_ws *ws)
{
    uv_timer_init(ws->loop, &ws->timer);
    uv_timer_init(ws->loop, &ws->kick);
    ws->timer.data = ws->kick.data = ws;
    ws->timers_open = 2;
    ws->timers_init = 1;
}

/* The connection's last callback: close the timers, then free. */
static void ws_conn_closed(wp_conn *c, void *ud)
{
    wp_ws *ws = ud;
    (void)c;
    ws->conn = NULL;
    if (ws->timers_init) {
        ws->timers_init = 0;
        uv_close((uv_handle_t *)&ws->timer, ws_timer_closed);
        uv_close((uv_handle_t *)&ws->kick, ws_timer_closed);
    }
    ws_release(ws);
}

static int ws_dead(const wp_ws *ws)
{
    return !ws->conn || wp_conn_is_closing(ws->conn) || ws->aborted;
}

static void ws_report_error(wp_ws *ws, int err)
{
    if (ws->reported)
        return;
    ws->reported = 1;
    if (ws->cbs.on_error)
        ws->cbs.on_error(ws, err, ws->ud);
}

static void ws_fail_now(wp_ws *ws, int err)
{
    ws_report_error(ws, err);
    if (ws->conn)
        wp_conn_close(ws->conn);
}

/* ------------------------------------------------------------------ */
/* frame pre-check                                                     */

/*
 * Parses the frame header at p[0..n). Returns 0 (*hlen header bytes, *plen
 * payload bytes), WP_ERR_NEED_MORE, or WP_ERR_MALFORMED for what RFC 6455 makes
 * a protocol error on its own: RSV bits (no extension is negotiated), reserved
 * opcodes, masking that does not match the receiver's role, control frames
 * that are fragmented or over 125 bytes or carry a 1-byte Close payload,
 * non-minimal or 2^63+ lengths.
 */
static int ws_frame_head(const uint8_t *p, size_t n, int is_server, size_t *hlen, uint64_t *plen)
{
    if (n < 2)
        return WP_ERR_NEED_MORE;
    int fin = p[0] >> 7, rsv = (p[0] >> 4) & 7, op = p[0] & 15;
    int mask = p[1] >> 7, len7 = p[1] & 127;
    if (rsv || (op > 2 && op < 8) || op > 10 || mask != is_server)
        return WP_ERR_MALFORMED;
    if (op >= 8 && (!fin || len7 > 125 || (op == 8 && len7 == 1)))
        return WP_ERR_MALFORMED;
    size_t h = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (mask ? 4 : 0);
    if (n < h)
        return WP_ERR_NEED_MORE;
    uint64_t len = (uint64_t)len7;
    if (len7 == 126) {
        len = ((uint64_t)p[2] << 8) | p[3];
        if (len < 126)
            return WP_ERR_MALFORMED;
    } else if (len7 == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | p[2 + i];
        if (len < 65536 || (len >> 63))
            return WP_ERR_MALFORMED;
    }
    *hlen = h;
    *plen = len;
    return 0;
}

/* At a frame boundary: checks the next frame against the protocol and the limits. */
static int ws_frame_start(wp_ws *ws)
{
    size_t hlen;
    uint64_t plen;
    const uint8_t *p = wp_buf_ptr(&ws->in);
    int rc = ws_frame_head(p, wp_buf_len(&ws->in), !ws->is_client, &hlen, &plen);
    if (rc == WP_ERR_NEED_MORE)
        return rc;
    if (rc < 0) {
        ws->fail_code = WP_WS_CLOSE_PROTOCOL_ERROR;
        return rc;
    }
    int fin = p[0] >> 7, op = p[0] & 15;
    if (op < 8) {
        if ((op == 0) != ws->msg_open) { /* continuation without a start, or a new start */
            ws->fail_code = WP_WS_CLOSE_PROTOCOL_ERROR;
            return WP_ERR_MALFORMED;
        }
        if (op != 0) {
            ws->msg_text = op == 1;
            ws->msg_len = 0;
        }
        ws->msg_len += plen; /* msg_len <= limit and plen < 2^63: no overflow */
        ws->msg_open = !fin;
        if (ws->msg_len > (ws->msg_text ? ws->lim.max_text : ws->lim.max_binary)) {
            ws->fail_code = WP_WS_CLOSE_TOO_BIG;
            return WP_ERR_LIMIT;
        }
    }
    ws->frame_left = hlen + plen;
    return 0;
}

/* ------------------------------------------------------------------ */
/* wslay callbacks                                                     */

/*
 * wslay answers a Close by queueing its own Close ahead of data messages still
 * queued, which then never go out. A peer's Close is therefore handed to wslay
 * only once our queued messages are on the wire (nothing may follow a Close).
 */
static int ws_hold_close(wp_ws *ws)
{
    if ((wp_buf_ptr(&ws->in)[0] & 15) != WSLAY_CONNECTION_CLOSE ||
        wslay_event_get_queued_msg_count(ws->ctx) == 0 || !wslay_event_get_write_enabled(ws->ctx))
        return 0;
    ws->close_held = 1;
    return 1;
}

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                          void *ud)
{
    wp_ws *ws = ud;
    (void)flags;
    if (ws->paused || ws->fail_code || ws_dead(ws) || wp_buf_len(&ws->in) == 0 ||
        (ws->frame_left == 0 && ws_hold_close(ws)) ||
        (ws->frame_left == 0 && ws_frame_start(ws) < 0)) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = wp_buf_len(&ws->in);
    if (n > len)
        n = len;
    if (n > ws->frame_left)
        n = (size_t)ws->frame_left;
    memcpy(buf, wp_buf_ptr(&ws->in), n);
    wp_buf_consume(&ws->in, n);
    ws->frame_left -= n;
    return (ssize_t)n;
}

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                          void *ud)
{
    wp_ws *ws = ud;
    (void)flags;
    size_t done = 0;
    while (!ws_dead(ws) && done < len) {
        size_t k = len - done < WS_SEND_CHUNK ? len - done : WS_SEND_CHUNK;
        int rc = wp_conn_write(ws->conn, data + done, k);
        if (rc == WP_ERR_LIMIT) {
            ws->write_blocked = 1;
            break;
        }
        if (rc < 0) {
            if (done)
                return (ssize_t)done;
            wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
            return -1;
        }
        done += k;
    }
    if (done == 0) {
        wslay_event_set_error(ctx, ws_dead(ws) ? WSLAY_ERR_CALLBACK_FAILURE : WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    return (ssize_t)done;
}

static int ws_genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud)
{
    (void)ud;
    if (wp_random_bytes(buf, len) != 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return 0;
}

/* A frame starts: note whether it is a control frame and, for a data message's first frame,
 * how the message is delivered. */
static void ws_frame_start_cb(wslay_event_context_ptr ctx,
                              const struct wslay_event_on_frame_recv_start_arg *arg, void *ud)
{
    wp_ws *ws = ud;
    (void)ctx;
    ws->rx_ctrl = (arg->opcode & 8) != 0;
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME) {
        ws->rx_op = arg->opcode;
        ws->rx_stream = arg->opcode == WSLAY_BINARY_FRAME && ws->cbs.on_binary_chunk != NULL;
        wp_buf_reset(&ws->msg);
    }
}

/* Payload bytes of the current frame (data frames only: wslay buffers control frames). */
static void ws_chunk_cb(wslay_event_context_ptr ctx,
                        const struct wslay_event_on_frame_recv_chunk_arg *arg, void *ud)
{
    wp_ws *ws = ud;
    (void)ctx;
    if (ws->rx_ctrl || arg->data_length == 0 || ws->reported || ws_dead(ws))
        return;
    if (ws->rx_stream) {
        ws->cbs.on_binary_chunk(ws, arg->data, arg->data_length, ws->ud);
        return;
    }
    /* within the limits: ws_frame_head refused larger messages before wslay saw them */
    if (wp_buf_put(&ws->msg, arg->data, arg->data_length) < 0)
        ws_fail_now(ws, WP_ERR_NOMEM);
}

/* A data message was delivered: empty the buffer, keep small storage for the next one. */
static void ws_msg_done(wp_ws *ws)
{
    wp_buf_reset(&ws->msg);
    if (ws->msg.alloc > WS_MSG_KEEP)
        wp_buf_free(&ws->msg);
}

static void ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *ud)
{
    wp_ws *ws = ud;
    (void)ctx;
    if (ws->reported || ws_dead(ws))
        return;
    switch (arg->opcode) {
    case WSLAY_TEXT_FRAME:
        if (ws->cbs.on_text)
            ws->cbs.on_text(ws, (const char *)wp_buf_ptr(&ws->msg), wp_buf_len(&ws->msg), ws->ud);
        ws_msg_done(ws);
        break;
    case WSLAY_BINARY_FRAME:
        if (!ws->rx_stream && ws->cbs.on_binary)
            ws->cbs.on_binary(ws, wp_buf_ptr(&ws->msg), wp_buf_len(&ws->msg), ws->ud);
        ws_msg_done(ws);
        break;
    case WSLAY_CONNECTION_CLOSE: {
        ws->close_received = 1;
        ws->reported = 1;
        int code = arg->status_code ? arg->status_code : 1005;
        const char *reason = arg->msg_length > 2 ? (const char *)arg->msg + 2 : "";
        size_t rl = arg->msg_length > 2 ? arg->msg_length - 2 : 0;
        if (ws->cbs.on_close)
            ws->cbs.on_close(ws, code, reason, rl, ws->ud);
        break;
    }
    default: /* ping (answered by wslay) and pong */
        break;
    }
}

static const struct wslay_event_callbacks ws_wslay_cbs = {
    .recv_callback = ws_recv_cb,
    .send_callback = ws_send_cb,
    .genmask_callback = ws_genmask_cb,
    .on_frame_recv_start_callback = ws_frame_start_cb,
    .on_frame_recv_chunk_callback = ws_chunk_cb,
    .on_msg_recv_callback = ws_msg_cb,
};

/* ------------------------------------------------------------------ */
/* the proceed loop                                                    */

/* Arms the connection's on_drain: a write the connection must refuse (a length over
 * any queue limit; nothing is read or queued) makes it report when its queue falls
 * to its low-water mark (conn.h contract for refused writes). */
static void ws_arm_conn_drain(wp_ws *ws)
{
    if (ws->write_blocked || ws_dead(ws))
        return;
    wp_conn_want_drain(ws->conn);
}

static void ws_check_drain(wp_ws *ws)
{
    if (!ws->need_drain || ws->reported || ws_dead(ws) || ws->in_proceed)
        return;
    if (wp_ws_queued_bytes(ws) > ws->lim.max_queued / 4) {
        ws_arm_conn_drain(ws);
        return;
    }
    ws->need_drain = 0;
    if (ws->cbs.on_drain)
        ws->cbs.on_drain(ws, ws->ud);
}

/* Queues our Close once everything queued before wp_ws_close() has gone out. */
static void ws_maybe_queue_close(wp_ws *ws)
{
    if (!ws->close_requested || ws->close_queued || wslay_event_get_queued_msg_count(ws->ctx) != 0)
        return;
    ws->close_queued = 1;
    (void)wslay_event_queue_close(ws->ctx, ws->close_code, ws->close_reason,
                                  ws->close_reason_len); /* NO_MORE_MSG: a Close is queued */
}

/* After Close went out and reading ended: shut our side, wait for the peer's EOF. */
static void ws_check_shutdown(wp_ws *ws)
{
    if (ws->shut_done || !wslay_event_get_close_sent(ws->ctx) ||
        wslay_event_get_read_enabled(ws->ctx))
        return;
    ws->shut_done = 1;
    wp_conn_shutdown(ws->conn);
    uv_timer_start(&ws->timer, ws_timer_cb, ws->lim.close_timeout_ms, 0);
}

static void ws_proceed(wp_ws *ws, int want_read)
{
    if (ws->state != WS_OPEN)
        return;
    if (ws->in_proceed) {
        ws->again = 1;
        ws->again_read |= want_read ? 1 : 0;
        return;
    }
    ws->in_proceed = 1;
    for (;;) {
        ws->again = 0;
        if (ws_dead(ws))
            break;
        if (want_read && !ws->paused && wp_buf_len(&ws->in) &&
            wslay_event_get_read_enabled(ws->ctx)) {
            int rc = wslay_event_recv(ws->ctx);
            if (ws_dead(ws))
                break;
            if (rc < 0) {
                ws_fail_now(ws, rc == WSLAY_ERR_NOMEM ? WP_ERR_NOMEM : WP_ERR_PROTO);
                break;
            }
            if (ws->fail_code && !ws->fail_queued) {
                /* our Close goes out after the messages queued so far, like wp_ws_close */
                ws->fail_queued = 1;
                wslay_event_shutdown_read(ws->ctx);
                wp_buf_reset(&ws->in);
                if (!ws->close_requested) {
                    ws->close_requested = 1;
                    ws->close_code = (uint16_t)ws->fail_code;
                    ws->close_reason_len = 0;
                    uv_timer_start(&ws->timer, ws_timer_cb, ws->lim.close_timeout_ms, 0);
                }
                wp_log_debug("websocket failed by peer", WP_LI("code", ws->fail_code),
                             WP_LS("peer", wp_conn_peer_str(ws->conn)));
            }
            if (!wslay_event_get_read_enabled(ws->ctx) && !ws->close_received)
                ws_report_error(ws,
                                ws->fail_code == WP_WS_CLOSE_TOO_BIG ? WP_ERR_LIMIT : WP_ERR_PROTO);
            if (ws_dead(ws))
                break;
        }
        ws_maybe_queue_close(ws);
        if (!ws->write_blocked && wslay_event_want_write(ws->ctx)) {
            size_t before = wp_conn_write_queued(ws->conn);
            size_t nmsg = wslay_event_get_queued_msg_count(ws->ctx);
            int rc = wslay_event_send(ws->ctx);
            if (ws_dead(ws))
                break;
            if (rc < 0) {
                ws_fail_now(ws, rc == WSLAY_ERR_NOMEM ? WP_ERR_NOMEM : WP_ERR_IO);
                break;
            }
            /* wslay stops after a partial frame: go on while it makes progress */
            if (!ws->write_blocked && wslay_event_want_write(ws->ctx) &&
                (wp_conn_write_queued(ws->conn) != before ||
                 wslay_event_get_queued_msg_count(ws->ctx) != nmsg))
                ws->again = 1;
        }
        if (ws->close_requested && !ws->close_queued && !ws->write_blocked &&
            wslay_event_get_queued_msg_count(ws->ctx) == 0)
            ws->again = 1;
        if (ws->close_held && wslay_event_get_queued_msg_count(ws->ctx) == 0) {
            ws->close_held = 0; /* the peer's Close may go to wslay now */
            ws->again = 1;
            ws->again_read = 1;
        }
        ws_check_shutdown(ws);
        if (!ws->again)
            break;
        want_read |= ws->again_read;
        ws->again_read = 0;
    }
    ws->in_proceed = 0;
    ws_check_drain(ws);
}

/* ------------------------------------------------------------------ */
/* connection callbacks (open)                                         */

static void ws_on_data(wp_conn *c, const uint8_t *p, size_t n, void *ud)
{
    wp_ws *ws = ud;
    (void)c;
    ws->last_rx = uv_now(ws->loop);
    if (ws->aborted || !wslay_event_get_read_enabled(ws->ctx))
        return; /* closing: input is discarded until EOF */
    if (wp_buf_put(&ws->in, p, n) < 0) {
        ws_fail_now(ws, WP_ERR_LIMIT);
        return;
    }
    ws_proceed(ws, 1);
}

static void ws_on_eof(wp_conn *c, void *ud)
{
    wp_ws *ws = ud;
    ws_report_error(ws, WP_ERR_CLOSED); /* no-op after a clean close */
    wp_conn_close(c);
}

static void ws_on_error(wp_conn *c, int err, void *ud)
{
    wp_ws *ws = ud;
    (void)c;
    ws_report_error(ws, err);
}

static void ws_on_drain(wp_conn *c, void *ud)
{
    wp_ws *ws = ud;
    (void)c;
    ws->write_blocked = 0;
    ws_proceed(ws, 0);
}

static const wp_conn_callbacks ws_conn_cbs = {
    .on_data = ws_on_data,
    .on_eof = ws_on_eof,
    .on_error = ws_on_error,
    .on_drain = ws_on_drain,
    .on_close = ws_conn_closed,
};

static void ws_timer_cb(uv_timer_t *t)
{
    wp_ws *ws = t->data;
    if (ws_dead(ws))
        return;
    if (ws->state == WS_CONNECTING)
        return; /* handled by the client's own timer callback */
    if (!ws->shut_done || !ws->reported)
        wp_log_debug("websocket closing handshake timed out",
                     WP_LS("peer", wp_conn_peer_str(ws->conn)));
    ws_fail_now(ws, WP_ERR_TIMEOUT);
}

static void ws_kick_cb(uv_timer_t *t)
{
    wp_ws *ws = t->data;
    ws_proceed(ws, 1);
}

static wp_ws *ws_new(uv_loop_t *loop, const wp_ws_limits *lim, const wp_ws_callbacks *cbs, void *ud)
{
    wp_ws *ws = calloc(1, sizeof(*ws));
    if (!ws)
        return NULL;
    ws->loop = loop;
    ws_limits_fill(&ws->lim, lim);
    if (cbs)
        ws->cbs = *cbs;
    ws->ud = ud;
    wp_buf_init(&ws->in, WS_IN_MAX);
    wp_buf_init(&ws->msg,
                ws->lim.max_binary > ws->lim.max_text ? ws->lim.max_binary : ws->lim.max_text);
    return ws;
}

/* Creates the wslay context for an open connection. 0 or WP_ERR_NOMEM. */
static int ws_ctx_init(wp_ws *ws)
{
    int rc = ws->is_client ? wslay_event_context_client_init(&ws->ctx, &ws_wslay_cbs, ws)
                           : wslay_event_context_server_init(&ws->ctx, &ws_wslay_cbs, ws);
    if (rc != 0) {
        ws->ctx = NULL;
        return WP_ERR_NOMEM;
    }
    size_t max = ws->lim.max_binary > ws->lim.max_text ? ws->lim.max_binary : ws->lim.max_text;
    wslay_event_config_set_max_recv_msg_length(ws->ctx, max);
    /* data frames reach us as they arrive (ws_chunk_cb); wslay still buffers control frames */
    wslay_event_config_set_no_buffering(ws->ctx, 1);
    return 0;
}

/* ------------------------------------------------------------------ */
/* server                                                              */

int wp_ws_server_upgrade(wp_http_req *req, const char *subprotocol, const wp_ws_limits *lim,
                         const wp_ws_callbacks *cbs, void *ud, wp_ws **out)
{
    if (!req || !subprotocol || !out || !ws_is_token(subprotocol, 64))
        return WP_ERR_INVAL;
    const char *code = NULL;
    char msg[128];
    int st = wp_ws_check_upgrade(req, subprotocol, &code, msg, sizeof(msg));
    if (st != 0) {
        wp_log_debug("websocket upgrade refused", WP_LI("status", st), WP_LS("reason", msg),
                     WP_LS("peer", wp_http_req_remote_addr(req)));
        wp_ws_reject(req, st, code, msg);
        return WP_ERR_PROTO;
    }
    const char *key = wp_http_req_header(req, "Sec-WebSocket-Key");
    size_t kl = strlen(key);
    ws_trim(&key, &kl);
    char keyz[32], accept[WP_WS_ACCEPT_LEN];
    snprintf(keyz, sizeof(keyz), "%.*s", (int)kl, key);
    if (wp_ws_accept_key(keyz, accept) < 0) {
        wp_http_respond_error(req, 500, "internal", "websocket accept failed");
        return WP_ERR_CRYPTO;
    }
    wp_conn *c = wp_http_req_conn(req);
    wp_ws *ws = ws_new(c ? wp_conn_loop(c) : NULL, lim, cbs, ud);
    if (!ws || !c || ws_ctx_init(ws) < 0) {
        int rc = c ? WP_ERR_NOMEM : WP_ERR_CLOSED;
        if (ws)
            ws_release(ws);
        wp_http_respond_error(req, 500, "internal", "out of memory");
        return rc;
    }
    int rc = wp_http_req_hijack(req, &c, &ws->in);
    if (rc < 0) {
        if (rc != WP_ERR_CLOSED)
            wp_http_respond_error(req, 500, "internal", "websocket upgrade failed");
        ws_release(ws);
        return rc;
    }
    char resp[512];
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                     "Sec-WebSocket-Protocol: %s\r\n\r\n",
                     accept, subprotocol);
    rc = wp_conn_write_ctl(c, resp, (size_t)n);
    if (rc < 0) {
        wp_conn_close(c); /* no callbacks set: closes silently */
        ws_release(ws);
        return WP_ERR_CLOSED;
    }
    ws->conn = c;
    ws->state = WS_OPEN;
    ws->delivered = 1;
    ws->last_rx = uv_now(ws->loop);
    ws_timers_init(ws);
    wp_conn_set_callbacks(c, &ws_conn_cbs, ws);
    wp_conn_read_start(c);
    if (wp_buf_len(&ws->in))
        uv_timer_start(&ws->kick, ws_kick_cb, 0, 0);
    *out = ws;
    return 0;
}

/* ------------------------------------------------------------------ */
/* client                                                              */

static void ws_client_report_failure(wp_ws *ws, int status, const wp_ws_connect_info *info)
{
    ws_client_hs *hs = ws->hs;
    if (!hs || !hs->cb)
        return;
    wp_ws_connect_cb cb = hs->cb;
    hs->cb = NULL;
    if (!ws->aborted)
        cb(NULL, status, info, hs->cud);
}

/* Handshake failed: report once, then close (ws freed after the conn's on_close). */
static void ws_client_fail(wp_ws *ws, int err, const wp_ws_connect_info *info)
{
    wp_ws_connect_info none;
    if (!info) {
        memset(&none, 0, sizeof(none));
        none.http_status = ws->hs ? ws->hs->status : 0;
        info = &none;
    }
    wp_log_debug("websocket connect failed", WP_LE("err", err), WP_LI("status", info->http_status));
    ws_client_report_failure(ws, err, info);
    if (ws->conn)
        wp_conn_close(ws->conn);
    else
        ws_release(ws);
}

static void ws_copy_clean(char *dst, size_t cap, const char *src)
{
    size_t i = 0;
    for (; src && src[i] && i + 1 < cap; i++)
        dst[i] = (src[i] >= 0x20 && src[i] < 0x7f) ? src[i] : '?';
    dst[i] = '\0';
}

/* A complete non-101 answer. */
static void ws_client_refused(wp_ws *ws)
{
    ws_client_hs *hs = ws->hs;
    wp_ws_connect_info info;
    memset(&info, 0, sizeof(info));
    info.http_status = hs->status;
    info.retry_after_s = hs->retry_after;
    if (hs->json && wp_buf_len(&hs->body)) {
        cJSON *j =
            cJSON_ParseWithLength((const char *)wp_buf_ptr(&hs->body), wp_buf_len(&hs->body));
        cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
        cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "code");
        cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
        if (cJSON_IsString(c))
            ws_copy_clean(info.error_code, sizeof(info.error_code), c->valuestring);
        if (cJSON_IsString(m))
            ws_copy_clean(info.error_message, sizeof(info.error_message), m->valuestring);
        cJSON_Delete(j);
    }
    int err = WP_ERR_PROTO;
    if (hs->status == 401 || hs->status == 403)
        err = WP_ERR_PERM;
    else if (hs->status == 503 || hs->status == 429)
        err = WP_ERR_BUSY;
    ws_client_fail(ws, err, &info);
}

/* A 101 arrived and was verified: open the ws; leftover bytes are frames already. */
static void ws_client_open(wp_ws *ws, const uint8_t *left, size_t n)
{
    ws_client_hs *hs = ws->hs;
    int rc = ws_ctx_init(ws);
    if (rc == 0 && n)
        rc = wp_buf_put(&ws->in, left, n);
    if (rc < 0) {
        ws_client_fail(ws, rc, NULL);
        return;
    }
    uv_timer_stop(&ws->timer);
    ws->state = WS_OPEN;
    ws->delivered = 1;
    wp_conn_set_callbacks(ws->conn, &ws_conn_cbs, ws);
    if (n)
        uv_timer_start(&ws->kick, ws_kick_cb, 0, 0);
    wp_ws_connect_info info;
    memset(&info, 0, sizeof(info));
    info.http_status = 101;
    wp_ws_connect_cb cb = hs->cb;
    void *cud = hs->cud;
    ws->hs = NULL;
    ws_hs_free(hs);
    if (!ws->aborted)
        cb(ws, 0, &info, cud);
}

static int ws_hs_header_done(ws_client_hs *hs)
{
    if (wp_buf_put_u8(&hs->name, 0) < 0 || wp_buf_put_u8(&hs->value, 0) < 0)
        return -1;
    const char *name = (const char *)wp_buf_ptr(&hs->name);
    const char *v = (const char *)wp_buf_ptr(&hs->value);
    size_t vl = strlen(v);
    ws_trim(&v, &vl);
    char *val = strndup(v, vl);
    if (!val)
        return -1;
    if (!strcasecmp(name, "Upgrade")) {
        hs->upgrade_ok |= ws_list_has(val, "websocket", 1);
    } else if (!strcasecmp(name, "Connection")) {
        hs->connection_ok |= ws_list_has(val, "upgrade", 1);
    } else if (!strcasecmp(name, "Sec-WebSocket-Accept")) {
        hs->accept_count++;
        hs->accept_ok = strcmp(val, hs->accept) == 0;
    } else if (!strcasecmp(name, "Sec-WebSocket-Protocol")) {
        hs->proto_count++;
        hs->proto_ok = strcmp(val, hs->subprotocol) == 0;
    } else if (!strcasecmp(name, "Sec-WebSocket-Extensions")) {
        hs->ext_seen = 1;
    } else if (!strcasecmp(name, "Content-Type")) {
        hs->json = strncasecmp(val, "application/json", 16) == 0;
    } else if (!strcasecmp(name, "Retry-After")) {
        unsigned long s = 0;
        size_t i = 0;
        for (; val[i] >= '0' && val[i] <= '9' && i < 9; i++)
            s = s * 10 + (unsigned long)(val[i] - '0');
        if (i > 0 && val[i] == '\0')
            hs->retry_after = s > 3600 ? 3600 : (unsigned)s;
    }
    wp_secure_zero(val, vl);
    free(val);
    wp_buf_reset(&hs->name);
    wp_buf_reset(&hs->value);
    return 0;
}

static ws_client_hs *ws_hs_of(llhttp_t *p)
{
    return ((wp_ws *)p->data)->hs;
}

static int ws_hs_count(ws_client_hs *hs, size_t n)
{
    hs->hdr_bytes += n;
    return hs->hdr_bytes > WS_RESP_HDR_MAX ? -1 : 0;
}

static int ws_hs_on_begin(llhttp_t *p)
{
    ws_client_hs *hs = ws_hs_of(p);
    hs->upgrade_ok = hs->connection_ok = hs->accept_ok = hs->proto_ok = hs->ext_seen = 0;
    hs->json = 0;
    hs->accept_count = hs->proto_count = 0;
    hs->retry_after = 0;
    wp_buf_reset(&hs->name);
    wp_buf_reset(&hs->value);
    return 0;
}

static int ws_hs_on_status(llhttp_t *p, const char *at, size_t n)
{
    (void)at;
    return ws_hs_count(ws_hs_of(p), n);
}

static int ws_hs_on_field(llhttp_t *p, const char *at, size_t n)
{
    ws_client_hs *hs = ws_hs_of(p);
    if (ws_hs_count(hs, n) < 0 || wp_buf_put(&hs->name, at, n) < 0)
        return -1;
    return 0;
}

static int ws_hs_on_value(llhttp_t *p, const char *at, size_t n)
{
    ws_client_hs *hs = ws_hs_of(p);
    if (ws_hs_count(hs, n) < 0 || wp_buf_put(&hs->value, at, n) < 0)
        return -1;
    return 0;
}

static int ws_hs_on_value_done(llhttp_t *p)
{
    return ws_hs_header_done(ws_hs_of(p));
}

static int ws_hs_on_headers(llhttp_t *p)
{
    ws_client_hs *hs = ws_hs_of(p);
    hs->status = llhttp_get_status_code(p);
    if (hs->status == 101) {
        hs->final = 1;
        return 2; /* no body; llhttp_execute returns HPE_PAUSED_UPGRADE */
    }
    if (hs->status >= 200)
        hs->final = 1;
    return 0;
}

static int ws_hs_on_body(llhttp_t *p, const char *at, size_t n)
{
    ws_client_hs *hs = ws_hs_of(p);
    if (hs->final) {
        size_t room = wp_buf_room(&hs->body);
        (void)wp_buf_put(&hs->body, at, n < room ? n : room); /* the rest is not kept */
    }
    return 0;
}

static int ws_hs_on_complete(llhttp_t *p)
{
    ws_client_hs *hs = ws_hs_of(p);
    if (!hs->final || hs->status == 101)
        return 0; /* interim 1xx: the real answer follows; 101: HPE_PAUSED_UPGRADE follows */
    hs->done = 1;
    return HPE_PAUSED;
}

static const llhttp_settings_t ws_hs_settings = {
    .on_message_begin = ws_hs_on_begin,
    .on_status = ws_hs_on_status,
    .on_header_field = ws_hs_on_field,
    .on_header_value = ws_hs_on_value,
    .on_header_value_complete = ws_hs_on_value_done,
    .on_headers_complete = ws_hs_on_headers,
    .on_body = ws_hs_on_body,
    .on_message_complete = ws_hs_on_complete,
};

static void ws_hs_on_data(wp_conn *c, const uint8_t *p, size_t n, void *ud)
{
    wp_ws *ws = ud;
    ws_client_hs *hs = ws->hs;
    (void)c;
    if (!hs || !hs->cb || ws->state != WS_CONNECTING)
        return;
    llhttp_errno_t e = llhttp_execute(&hs->parser, (const char *)p, n);
    if (e == HPE_PAUSED_UPGRADE && hs->status == 101) {
        const char *pos = llhttp_get_error_pos(&hs->parser);
        size_t used = pos ? (size_t)(pos - (const char *)p) : n;
        if (used > n)
            used = n;
        const char *why = NULL;
        if (!hs->upgrade_ok)
            why = "Upgrade header";
        else if (!hs->connection_ok)
            why = "Connection header";
        else if (hs->accept_count != 1 || !hs->accept_ok)
            why = "Sec-WebSocket-Accept mismatch";
        else if (hs->proto_count != 1 || !hs->proto_ok)
            why = "subprotocol not selected";
        else if (hs->ext_seen)
            why = "extension selected";
        if (why) {
            wp_log_debug("websocket 101 refused", WP_LS("reason", why));
            ws_client_fail(ws, WP_ERR_PROTO, NULL);
            return;
        }
        ws_client_open(ws, p + used, n - used);
        return;
    }
    if (e == HPE_PAUSED && hs->done) {
        ws_client_refused(ws);
        return;
    }
    if (e != HPE_OK) {
        wp_log_debug("websocket answer unparsable", WP_LS("reason", llhttp_errno_name(e)));
        ws_client_fail(ws, WP_ERR_PROTO, NULL);
    }
}

static void ws_hs_on_eof(wp_conn *c, void *ud)
{
    wp_ws *ws = ud;
    ws_client_hs *hs = ws->hs;
    (void)c;
    if (!hs || !hs->cb)
        return;
    llhttp_errno_t e = llhttp_finish(&hs->parser);
    if ((e == HPE_OK || e == HPE_PAUSED) && hs->done) {
        ws_client_refused(ws);
        return;
    }
    ws_client_fail(ws, WP_ERR_CLOSED, NULL);
}

static void ws_hs_on_error(wp_conn *c, int err, void *ud)
{
    wp_ws *ws = ud;
    (void)c;
    if (ws->hs && ws->hs->cb)
        ws_client_fail(ws, err, NULL);
}

static const wp_conn_callbacks ws_hs_conn_cbs = {
    .on_data = ws_hs_on_data,
    .on_eof = ws_hs_on_eof,
    .on_error = ws_hs_on_error,
    .on_close = ws_conn_closed,
};

static void ws_hs_timer_cb(uv_timer_t *t)
{
    wp_ws *ws = t->data;
    if (ws->state == WS_CONNECTING && ws->hs && ws->hs->cb)
        ws_client_fail(ws, WP_ERR_TIMEOUT, NULL);
}

static void ws_client_connected(wp_conn *c, int status, void *ud)
{
    wp_ws *ws = ud;
    ws->conn_pending = 0;
    if (status < 0 || !c) {
        wp_ws_connect_info info;
        memset(&info, 0, sizeof(info));
        snprintf(info.transport_error, sizeof(info.transport_error), "%s", wp_conn_connect_error());
        ws_client_fail(ws, status < 0 ? status : WP_ERR_IO, &info);
        return;
    }
    ws->conn = c;
    ws_timers_init(ws);
    wp_conn_set_callbacks(c, &ws_hs_conn_cbs, ws);
    if (ws->aborted) {
        wp_conn_close(c);
        return;
    }
    ws_client_hs *hs = ws->hs;
    uint64_t now = uv_now(ws->loop);
    uint64_t left = hs->deadline > now ? hs->deadline - now : 1;
    uv_timer_start(&ws->timer, ws_hs_timer_cb, left, 0);
    ws->last_rx = now;
    int rc = wp_conn_write(c, wp_buf_ptr(&hs->req), wp_buf_len(&hs->req));
    wp_buf_free(&hs->req); /* zeroes the token */
    if (rc == 0)
        rc = wp_conn_read_start(c);
    if (rc < 0)
        ws_client_fail(ws, WP_ERR_IO, NULL);
}

/* Splits url into connect host, port, Host header value and path. */
static int ws_parse_url(const char *url, int tls, char **host, int *port, char **hosthdr,
                        char **path)
{
    CURLU *u = curl_url();
    if (!u)
        return WP_ERR_NOMEM;
    int rc = WP_ERR_INVAL;
    char *scheme = NULL, *h = NULL, *portstr = NULL, *p = NULL, *x = NULL;
    const char *sep = strstr(url, "://");
    if (!sep || sep[3] == '/' || sep[3] == '\0') /* curl reads "ws:///x" as host "x" */
        goto out;
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK)
        goto out;
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK)
        goto out;
    int is_wss = !strcasecmp(scheme, "wss");
    if ((!is_wss && strcasecmp(scheme, "ws") != 0) || is_wss != (tls != 0))
        goto out;
    if (curl_url_get(u, CURLUPART_USER, &x, 0) != CURLUE_NO_USER)
        goto out;
    if (curl_url_get(u, CURLUPART_PASSWORD, &x, 0) != CURLUE_NO_PASSWORD)
        goto out;
    if (curl_url_get(u, CURLUPART_QUERY, &x, 0) != CURLUE_NO_QUERY)
        goto out;
    if (curl_url_get(u, CURLUPART_FRAGMENT, &x, 0) != CURLUE_NO_FRAGMENT)
        goto out;
    if (curl_url_get(u, CURLUPART_HOST, &h, 0) != CURLUE_OK || !h[0])
        goto out;
    int defport = is_wss ? 443 : 80;
    *port = defport;
    CURLUcode pc = curl_url_get(u, CURLUPART_PORT, &portstr, 0);
    if (pc == CURLUE_OK) {
        char *end = NULL;
        long v = strtol(portstr, &end, 10);
        if (!end || *end || v <= 0 || v > 65535)
            goto out;
        *port = (int)v;
    } else if (pc != CURLUE_NO_PORT) {
        goto out;
    }
    if (curl_url_get(u, CURLUPART_PATH, &p, 0) != CURLUE_OK)
        goto out;
    for (const char *c = p; *c; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f)
            goto out;
    size_t hl = strlen(h);
    int v6 = hl > 2 && h[0] == '[' && h[hl - 1] == ']';
    *host = v6 ? strndup(h + 1, hl - 2) : strdup(h);
    *path = strdup(p[0] ? p : "/");
    size_t cap = hl + 8;
    *hosthdr = malloc(cap);
    if (!*host || !*path || !*hosthdr) {
        free(*host), free(*path), free(*hosthdr);
        *host = *path = *hosthdr = NULL;
        rc = WP_ERR_NOMEM;
        goto out;
    }
    if (*port == defport)
        snprintf(*hosthdr, cap, "%s", h);
    else
        snprintf(*hosthdr, cap, "%s:%d", h, *port);
    rc = 0;
out:
    curl_free(scheme);
    curl_free(h);
    curl_free(portstr);
    curl_free(p);
    curl_free(x);
    curl_url_cleanup(u);
    return rc;
}

/* Validates one "Name: value" extra header. */
static int ws_extra_header_ok(const char *hdr)
{
    static const char *const managed[] = {"host",
                                          "upgrade",
                                          "connection",
                                          "content-length",
                                          "transfer-encoding",
                                          "sec-websocket-key",
                                          "sec-websocket-version",
                                          "sec-websocket-protocol",
                                          "sec-websocket-extensions",
                                          "sec-websocket-accept"};
    const char *colon = strchr(hdr, ':');
    if (!colon || colon == hdr || colon - hdr > 64)
        return 0;
    for (const char *c = hdr; c < colon; c++)
        if (!ws_is_tchar((unsigned char)*c))
            return 0;
    for (const char *c = colon + 1; *c; c++)
        if (((unsigned char)*c < 0x20 && *c != '\t') || *c == 0x7f)
            return 0;
    size_t nl = (size_t)(colon - hdr);
    for (size_t i = 0; i < sizeof(managed) / sizeof(managed[0]); i++)
        if (strlen(managed[i]) == nl && !strncasecmp(hdr, managed[i], nl))
            return 0;
    return 1;
}

int wp_ws_client_connect(uv_loop_t *loop, const char *url, wp_tls_conf *tls,
                         const char *const *extra_headers, const char *subprotocol,
                         const wp_ws_limits *lim, const wp_ws_callbacks *cbs, void *ud,
                         wp_ws_connect_cb cb, void *cud, wp_ws **out)
{
    return wp_ws_client_connect_via(NULL, NULL, loop, url, tls, extra_headers, subprotocol, lim,
                                    cbs, ud, cb, cud, out);
}

int wp_ws_client_connect_via(wp_ws_dial_fn dial, void *dial_ud, uv_loop_t *loop, const char *url,
                             wp_tls_conf *tls, const char *const *extra_headers,
                             const char *subprotocol, const wp_ws_limits *lim,
                             const wp_ws_callbacks *cbs, void *ud, wp_ws_connect_cb cb, void *cud,
                             wp_ws **out)
{
    if (!loop || !url || !subprotocol || !cb || !ws_is_token(subprotocol, 64))
        return WP_ERR_INVAL;
    for (size_t i = 0; extra_headers && extra_headers[i]; i++)
        if (!ws_extra_header_ok(extra_headers[i]))
            return WP_ERR_INVAL;
    char *host = NULL, *hosthdr = NULL, *path = NULL;
    int port = 0;
    int rc = ws_parse_url(url, tls != NULL, &host, &port, &hosthdr, &path);
    if (rc < 0)
        return rc;
    wp_ws *ws = ws_new(loop, lim, cbs, ud);
    ws_client_hs *hs = ws ? calloc(1, sizeof(*hs)) : NULL;
    if (!hs) {
        free(ws);
        free(host), free(hosthdr), free(path);
        return WP_ERR_NOMEM;
    }
    ws->is_client = 1;
    ws->hs = hs;
    hs->host = host;
    hs->subprotocol = strdup(subprotocol);
    hs->cb = cb;
    hs->cud = cud;
    wp_buf_init(&hs->req, WS_REQ_MAX);
    wp_buf_init(&hs->name, WS_HNAME_MAX);
    wp_buf_init(&hs->value, WS_RESP_HDR_MAX);
    wp_buf_init(&hs->body, WS_RESP_BODY_MAX);
    llhttp_init(&hs->parser, HTTP_RESPONSE, &ws_hs_settings);
    hs->parser.data = ws;
    uint8_t nonce[16];
    char key[32];
    rc = hs->subprotocol ? 0 : WP_ERR_NOMEM;
    if (rc == 0 && wp_random_bytes(nonce, sizeof(nonce)) != 0)
        rc = WP_ERR_CRYPTO;
    if (rc == 0 && wp_base64_encode(nonce, sizeof(nonce), key, sizeof(key), NULL) != 0)
        rc = WP_ERR_CRYPTO;
    if (rc == 0)
        rc = wp_ws_accept_key(key, hs->accept);
    if (rc == 0)
        rc = wp_buf_putf(&hs->req,
                         "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                         "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n",
                         path, hosthdr, key, subprotocol);
    for (size_t i = 0; rc == 0 && extra_headers && extra_headers[i]; i++)
        rc = wp_buf_putf(&hs->req, "%s\r\n", extra_headers[i]);
    if (rc == 0)
        rc = wp_buf_put_str(&hs->req, "\r\n");
    free(hosthdr);
    free(path);
    if (rc == 0) {
        hs->deadline = uv_now(loop) + ws->lim.handshake_timeout_ms;
        ws->conn_pending = 1;
        rc = dial ? dial(dial_ud, loop, host, port, tls, host, (int)ws->lim.handshake_timeout_ms,
                         ws_client_connected, ws)
                  : wp_conn_connect(loop, host, port, tls, host, (int)ws->lim.handshake_timeout_ms,
                                    NULL, ws_client_connected, ws);
    }
    if (rc < 0) {
        ws->conn_pending = 0;
        ws_release(ws);
        return rc;
    }
    if (out)
        *out = ws;
    return 0;
}

/* ------------------------------------------------------------------ */
/* public operations                                                   */

static int ws_send(wp_ws *ws, uint8_t opcode, const void *p, size_t n)
{
    if (!ws || (!p && n))
        return WP_ERR_INVAL;
    if (ws->state != WS_OPEN || ws_dead(ws) || ws->reported || ws->close_requested ||
        !wslay_event_get_write_enabled(ws->ctx))
        return WP_ERR_CLOSED;
    if (n > ws->lim.max_queued)
        return WP_ERR_INVAL;
    if (opcode == WSLAY_TEXT_FRAME && !ws_utf8_valid(p, n))
        return WP_ERR_INVAL;
    size_t q = wp_ws_queued_bytes(ws);
    if (q > ws->lim.max_queued - n) {
        ws->need_drain = 1;
        ws_arm_conn_drain(ws);
        return WP_ERR_LIMIT;
    }
    struct wslay_event_msg m = {.opcode = opcode, .msg = p, .msg_length = n};
    int rc = wslay_event_queue_msg(ws->ctx, &m);
    if (rc == WSLAY_ERR_NOMEM)
        return WP_ERR_NOMEM;
    if (rc != 0)
        return WP_ERR_CLOSED;
    ws_proceed(ws, 0);
    return 0;
}

int wp_ws_send_text(wp_ws *ws, const char *p, size_t n)
{
    return ws_send(ws, WSLAY_TEXT_FRAME, p, n);
}

int wp_ws_send_binary(wp_ws *ws, const void *p, size_t n)
{
    return ws_send(ws, WSLAY_BINARY_FRAME, p, n);
}

int wp_ws_ping(wp_ws *ws)
{
    if (!ws || ws->state != WS_OPEN || ws_dead(ws) || ws->reported || ws->close_requested)
        return WP_ERR_CLOSED;
    struct wslay_event_msg m = {.opcode = WSLAY_PING, .msg = NULL, .msg_length = 0};
    int rc = wslay_event_queue_msg(ws->ctx, &m);
    if (rc == WSLAY_ERR_NOMEM)
        return WP_ERR_NOMEM;
    if (rc != 0)
        return WP_ERR_CLOSED;
    ws_proceed(ws, 0);
    return 0;
}

size_t wp_ws_queued_bytes(const wp_ws *ws)
{
    if (!ws || !ws->ctx)
        return 0;
    return wslay_event_get_queued_msg_length(ws->ctx) +
           (ws->conn ? wp_conn_write_queued(ws->conn) : 0);
}

static int ws_close_code_ok(int code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
           (code >= 3000 && code <= 4999);
}

int wp_ws_close(wp_ws *ws, int code, const char *reason)
{
    size_t rl = reason ? strlen(reason) : 0;
    if (!ws || !ws_close_code_ok(code) || rl > sizeof(ws->close_reason) ||
        !ws_utf8_valid((const uint8_t *)reason, rl))
        return WP_ERR_INVAL;
    if (ws->state != WS_OPEN || ws_dead(ws))
        return WP_ERR_CLOSED;
    if (ws->close_requested || ws->close_received || !wslay_event_get_read_enabled(ws->ctx))
        return 0;
    if (ws->reported)
        return WP_ERR_CLOSED;
    ws->close_requested = 1;
    ws->close_code = (uint16_t)code;
    if (rl)
        memcpy(ws->close_reason, reason, rl);
    ws->close_reason_len = rl;
    uv_timer_start(&ws->timer, ws_timer_cb, ws->lim.close_timeout_ms, 0);
    ws_proceed(ws, 0);
    return 0;
}

void wp_ws_abort(wp_ws *ws)
{
    if (!ws || ws->aborted)
        return;
    ws->aborted = 1;
    ws->reported = 1;
    if (ws->conn)
        wp_conn_close(ws->conn);
    /* a pending connect: ws_client_connected closes the conn and frees ws */
}

int wp_ws_pause_reading(wp_ws *ws)
{
    if (!ws || ws->state != WS_OPEN || ws_dead(ws))
        return WP_ERR_CLOSED;
    ws->paused = 1;
    return wp_conn_read_stop(ws->conn);
}

int wp_ws_resume_reading(wp_ws *ws)
{
    if (!ws || ws->state != WS_OPEN || ws_dead(ws))
        return WP_ERR_CLOSED;
    ws->paused = 0;
    if (wp_buf_len(&ws->in))
        uv_timer_start(&ws->kick, ws_kick_cb, 0, 0);
    return wp_conn_read_start(ws->conn);
}

void wp_ws_set_callbacks(wp_ws *ws, const wp_ws_callbacks *cbs, void *ud)
{
    if (!ws)
        return;
    if (cbs)
        ws->cbs = *cbs;
    else
        memset(&ws->cbs, 0, sizeof(ws->cbs));
    ws->ud = ud;
}

uint64_t wp_ws_last_rx_ms(const wp_ws *ws)
{
    return ws ? ws->last_rx : 0;
}

const char *wp_ws_peer_str(const wp_ws *ws)
{
    return ws && ws->conn ? wp_conn_peer_str(ws->conn) : "";
}
