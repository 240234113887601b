/*
 * frame.c — the tunnel's stream-frame codec (see frame.h, PROTOCOL.md §5-§6).
 *
 * Stateless header validation lives in one place (wp_frame_flags_ok and
 * wp_frame_hdr_check) so that the decoder, the parser and the builders agree
 * on what a valid frame is: a builder never emits a frame the decoder rejects.
 */
#include <string.h>

#include "err.h"
#include "frame.h"

/* Is `flags` an allowed flag set for `type` (PROTOCOL.md §5.2)? Unknown type: no. */
static int wp_frame_flags_ok(uint8_t type, uint16_t flags)
{
    if (flags & ~WP_FRAME_FLAGS_MASK)
        return 0;
    switch (type) {
    case WP_FRAME_TYPE_DATA:
        /* none, SYN, FIN, SYN|FIN */
        return (flags & (WP_FRAME_FLAG_ACK | WP_FRAME_FLAG_RST)) == 0;
    case WP_FRAME_TYPE_WINDOW_UPDATE:
        /* none, ACK, FIN, ACK|FIN, or RST alone */
        if (flags & WP_FRAME_FLAG_SYN)
            return 0;
        if ((flags & WP_FRAME_FLAG_RST) && flags != WP_FRAME_FLAG_RST)
            return 0;
        return 1;
    case WP_FRAME_TYPE_PING:
        return flags == WP_FRAME_FLAG_SYN || flags == WP_FRAME_FLAG_ACK;
    case WP_FRAME_TYPE_GOAWAY:
        return flags == 0;
    default:
        return 0;
    }
}

/*
 * Judges the fixed-position prefix of a header (version, type, flags) from
 * the n < WP_FRAME_HDR_LEN bytes present. 0 = still a valid prefix.
 */
static int wp_frame_prefix_check(const uint8_t *p, size_t n)
{
    if (n >= 1 && p[0] != WP_FRAME_VERSION)
        return WP_ERR_PROTO;
    if (n >= 2 && p[1] > WP_FRAME_TYPE_GOAWAY)
        return WP_ERR_PROTO;
    if (n >= 4) {
        uint16_t flags = (uint16_t)((p[2] << 8) | p[3]);
        if (!wp_frame_flags_ok(p[1], flags))
            return WP_ERR_PROTO;
    } else if (n >= 3 && p[2] != 0) {
        return WP_ERR_PROTO; /* no defined flag lives in the high byte */
    }
    return 0;
}

int wp_frame_hdr_check(const wp_frame_hdr *h)
{
    if (!h || h->version != WP_FRAME_VERSION || h->type > WP_FRAME_TYPE_GOAWAY)
        return WP_ERR_PROTO;
    if (!wp_frame_flags_ok(h->type, h->flags))
        return WP_ERR_PROTO;
    switch (h->type) {
    case WP_FRAME_TYPE_DATA:
        if (h->stream_id == 0 || (h->stream_id & 1u))
            return WP_ERR_PROTO;
        if (h->length > WP_FRAME_MAX_DATA)
            return WP_ERR_PROTO;
        if ((h->flags & WP_FRAME_FLAG_SYN) && h->length < WP_PREAMBLE_MIN_FRAME)
            return WP_ERR_PROTO;
        return 0;
    case WP_FRAME_TYPE_WINDOW_UPDATE:
        if (h->stream_id == 0 || (h->stream_id & 1u))
            return WP_ERR_PROTO;
        if (h->length > WP_STREAM_WINDOW_LIMIT)
            return WP_ERR_PROTO;
        if ((h->flags & WP_FRAME_FLAG_RST) && h->length != 0)
            return WP_ERR_PROTO;
        return 0;
    default: /* Ping, GoAway: session frames; length is opaque / a code */
        return h->stream_id == WP_STREAM_ID_SESSION ? 0 : WP_ERR_PROTO;
    }
}

void wp_frame_hdr_encode(const wp_frame_hdr *h, uint8_t out[WP_FRAME_HDR_LEN])
{
    out[0] = h->version;
    out[1] = h->type;
    out[2] = (uint8_t)(h->flags >> 8);
    out[3] = (uint8_t)h->flags;
    out[4] = (uint8_t)(h->stream_id >> 24);
    out[5] = (uint8_t)(h->stream_id >> 16);
    out[6] = (uint8_t)(h->stream_id >> 8);
    out[7] = (uint8_t)h->stream_id;
    out[8] = (uint8_t)(h->length >> 24);
    out[9] = (uint8_t)(h->length >> 16);
    out[10] = (uint8_t)(h->length >> 8);
    out[11] = (uint8_t)h->length;
}

static uint32_t wp_frame_rd32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

int wp_frame_hdr_decode(const uint8_t *p, size_t n, wp_frame_hdr *h)
{
    if (!h || (!p && n))
        return WP_ERR_INVAL;
    if (n < WP_FRAME_HDR_LEN) {
        int rc = wp_frame_prefix_check(p, n);
        return rc < 0 ? rc : WP_ERR_NEED_MORE;
    }
    h->version = p[0];
    h->type = p[1];
    h->flags = (uint16_t)((p[2] << 8) | p[3]);
    h->stream_id = wp_frame_rd32(p + 4);
    h->length = wp_frame_rd32(p + 8);
    return wp_frame_hdr_check(h);
}

const char *wp_frame_type_name(uint8_t type)
{
    switch (type) {
    case WP_FRAME_TYPE_DATA:
        return "Data";
    case WP_FRAME_TYPE_WINDOW_UPDATE:
        return "WindowUpdate";
    case WP_FRAME_TYPE_PING:
        return "Ping";
    case WP_FRAME_TYPE_GOAWAY:
        return "GoAway";
    default:
        return "unknown";
    }
}

/* ---- stream parser ---- */

void wp_frame_parser_init(wp_frame_parser *p)
{
    p->hdr_have = 0;
    p->payload_have = 0;
    p->err = 0;
    p->bad_complete = 0;
    memset(&p->hdr, 0, sizeof p->hdr);
    memset(&p->bad, 0, sizeof p->bad);
}

int wp_frame_parser_error(const wp_frame_parser *p)
{
    return p->err;
}

int wp_frame_parser_bad_hdr(const wp_frame_parser *p, wp_frame_hdr *h)
{
    if (!p->err || !p->bad_complete)
        return 0;
    *h = p->bad;
    return 1;
}

size_t wp_frame_parser_pending(const wp_frame_parser *p)
{
    return p->hdr_have + p->payload_have;
}

/* Hands the finished frame to the caller and rearms for the next header. */
static int wp_frame_parser_emit(wp_frame_parser *p, const uint8_t *payload, wp_frame *out)
{
    out->hdr = p->hdr;
    if (p->hdr.type == WP_FRAME_TYPE_DATA && p->hdr.length > 0) {
        out->payload = payload;
        out->payload_len = p->hdr.length;
    } else {
        out->payload = NULL;
        out->payload_len = 0;
    }
    p->hdr_have = 0;
    p->payload_have = 0;
    return 1;
}

int wp_frame_parser_next(wp_frame_parser *p, const uint8_t **in, size_t *in_len, wp_frame *out)
{
    if (!p || !in || !in_len || !out || (!*in && *in_len))
        return WP_ERR_INVAL;
    if (p->err)
        return p->err;
    const uint8_t *s = *in;
    size_t n = *in_len;

    if (p->hdr_have < WP_FRAME_HDR_LEN) {
        if (n == 0)
            return 0;
        size_t take = WP_FRAME_HDR_LEN - p->hdr_have;
        if (take > n)
            take = n;
        memcpy(p->hdr_raw + p->hdr_have, s, take);
        p->hdr_have += take;
        s += take;
        n -= take;
        *in = s;
        *in_len = n;
        int rc = wp_frame_hdr_decode(p->hdr_raw, p->hdr_have, &p->hdr);
        if (rc == WP_ERR_NEED_MORE)
            return 0; /* n is 0 here: the whole chunk went into the header */
        if (rc < 0) {
            p->err = rc;
            if (p->hdr_have == WP_FRAME_HDR_LEN) {
                p->bad = p->hdr;
                p->bad_complete = 1;
            }
            return rc;
        }
    }

    /* Header complete and valid. Only Data frames carry a payload. */
    if (p->hdr.type != WP_FRAME_TYPE_DATA || p->hdr.length == 0)
        return wp_frame_parser_emit(p, NULL, out);

    size_t need = p->hdr.length - p->payload_have;
    if (p->payload_have == 0 && n >= need) {
        /* Zero copy: the whole payload is in the caller's chunk. */
        *in = s + need;
        *in_len = n - need;
        return wp_frame_parser_emit(p, s, out);
    }
    size_t take = need < n ? need : n;
    if (take)
        memcpy(p->payload + p->payload_have, s, take);
    p->payload_have += take;
    *in = s + take;
    *in_len = n - take;
    if (p->payload_have < p->hdr.length)
        return 0;
    return wp_frame_parser_emit(p, p->payload, out);
}

/* ---- open preamble ---- */

int wp_frame_preamble_encode(const char *json, size_t len, wp_buf *out)
{
    if (!json || !out || len == 0 || len > WP_PREAMBLE_MAX)
        return WP_ERR_INVAL;
    uint8_t *w;
    int rc = wp_buf_reserve(out, WP_PREAMBLE_LEN_SIZE + len, &w);
    if (rc < 0)
        return rc;
    w[0] = (uint8_t)(len >> 8);
    w[1] = (uint8_t)len;
    memcpy(w + WP_PREAMBLE_LEN_SIZE, json, len);
    wp_buf_commit(out, WP_PREAMBLE_LEN_SIZE + len);
    return 0;
}

int wp_frame_preamble_decode(const uint8_t *p, size_t n, size_t *json_off, size_t *json_len,
                             size_t *consumed)
{
    if (!json_off || !json_len || !consumed || (!p && n))
        return WP_ERR_INVAL;
    if (n < WP_PREAMBLE_LEN_SIZE)
        return WP_ERR_NEED_MORE;
    size_t len = ((size_t)p[0] << 8) | p[1];
    if (len == 0 || len > WP_PREAMBLE_MAX)
        return WP_ERR_PROTO;
    if (n - WP_PREAMBLE_LEN_SIZE < len)
        return WP_ERR_NEED_MORE;
    *json_off = WP_PREAMBLE_LEN_SIZE;
    *json_len = len;
    *consumed = WP_PREAMBLE_LEN_SIZE + len;
    return 0;
}

/* ---- builders ---- */

/*
 * Validates h, reserves the whole frame (header + extra bytes) in buf and
 * writes the header. On 0, *tail points at the extra bytes for the caller
 * to fill before wp_buf_commit(buf, WP_FRAME_HDR_LEN + extra).
 */
static int wp_frame_begin(wp_buf *buf, const wp_frame_hdr *h, size_t extra, uint8_t **tail)
{
    if (!buf || wp_frame_hdr_check(h) < 0)
        return WP_ERR_INVAL;
    uint8_t *w;
    int rc = wp_buf_reserve(buf, WP_FRAME_HDR_LEN + extra, &w);
    if (rc < 0)
        return rc;
    wp_frame_hdr_encode(h, w);
    *tail = w + WP_FRAME_HDR_LEN;
    return 0;
}

int wp_frame_put_data(wp_buf *buf, uint32_t stream_id, uint16_t flags, const void *payload,
                      size_t len)
{
    if (len > WP_FRAME_MAX_DATA || (len && !payload))
        return WP_ERR_INVAL;
    wp_frame_hdr h = {WP_FRAME_VERSION, WP_FRAME_TYPE_DATA, flags, stream_id, (uint32_t)len};
    uint8_t *tail;
    int rc = wp_frame_begin(buf, &h, len, &tail);
    if (rc < 0)
        return rc;
    if (len)
        memcpy(tail, payload, len);
    wp_buf_commit(buf, WP_FRAME_HDR_LEN + len);
    return 0;
}

int wp_frame_put_open(wp_buf *buf, uint32_t stream_id, const char *json, size_t json_len,
                      const void *data, size_t len, int fin)
{
    if (!json || json_len == 0 || json_len > WP_PREAMBLE_MAX || (len && !data))
        return WP_ERR_INVAL;
    size_t pre = WP_PREAMBLE_LEN_SIZE + json_len;
    if (len > WP_FRAME_MAX_DATA - pre)
        return WP_ERR_INVAL;
    uint16_t flags = (uint16_t)(WP_FRAME_FLAG_SYN | (fin ? WP_FRAME_FLAG_FIN : 0));
    wp_frame_hdr h = {WP_FRAME_VERSION, WP_FRAME_TYPE_DATA, flags, stream_id,
                      (uint32_t)(pre + len)};
    uint8_t *tail;
    int rc = wp_frame_begin(buf, &h, pre + len, &tail);
    if (rc < 0)
        return rc;
    tail[0] = (uint8_t)(json_len >> 8);
    tail[1] = (uint8_t)json_len;
    memcpy(tail + WP_PREAMBLE_LEN_SIZE, json, json_len);
    if (len)
        memcpy(tail + pre, data, len);
    wp_buf_commit(buf, WP_FRAME_HDR_LEN + pre + len);
    return 0;
}

/* Appends a header-only frame (WindowUpdate, Ping, GoAway). */
static int wp_frame_put_bare(wp_buf *buf, uint8_t type, uint16_t flags, uint32_t stream_id,
                             uint32_t length)
{
    wp_frame_hdr h = {WP_FRAME_VERSION, type, flags, stream_id, length};
    uint8_t *tail;
    int rc = wp_frame_begin(buf, &h, 0, &tail);
    if (rc < 0)
        return rc;
    wp_buf_commit(buf, WP_FRAME_HDR_LEN);
    return 0;
}

int wp_frame_put_window_update(wp_buf *buf, uint32_t stream_id, uint16_t flags, uint32_t delta)
{
    return wp_frame_put_bare(buf, WP_FRAME_TYPE_WINDOW_UPDATE, flags, stream_id, delta);
}

int wp_frame_put_ping(wp_buf *buf, uint16_t flags, uint32_t opaque)
{
    return wp_frame_put_bare(buf, WP_FRAME_TYPE_PING, flags, WP_STREAM_ID_SESSION, opaque);
}

int wp_frame_put_goaway(wp_buf *buf, uint32_t code)
{
    return wp_frame_put_bare(buf, WP_FRAME_TYPE_GOAWAY, 0, WP_STREAM_ID_SESSION, code);
}
