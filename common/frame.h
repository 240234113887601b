/*
 * frame.h — the tunnel's stream-frame codec (yamux v0 header, PROTOCOL.md §5-§6).
 *
 * Pure code: no I/O, no allocation except through a caller's wp_buf. Four parts:
 *
 *   - header encode/decode with every check that needs no stream state
 *     (PROTOCOL.md §5.2 table): version, type, flag set per type, stream id
 *     (0 for Ping/GoAway, even and nonzero for Data/WindowUpdate), Data length
 *     <= WP_FRAME_MAX_DATA (and >= WP_PREAMBLE_MIN_FRAME with SYN),
 *     WindowUpdate delta <= WP_STREAM_WINDOW_LIMIT (2^31-1; 0 with RST).
 *     Checks that need state belong to the multiplexer (§5.4): SYN on a used
 *     id or at the server, frames for never-opened ids, window overrun, data
 *     after FIN, ACK ordering, Ping ACK matching, GoAway code meaning.
 *   - a stream parser fed arbitrary chunks (split anywhere) that yields whole
 *     frames, holding at most one maximal frame (WP_FRAME_MAX_LEN) in a fixed
 *     array inside the parser; errors are sticky.
 *   - the open preamble (u16 length + JSON, 1..WP_PREAMBLE_MAX JSON bytes).
 *   - builders appending one whole frame to a wp_buf, or nothing.
 *
 * Errors: WP_ERR_NEED_MORE means "valid prefix, more bytes needed";
 * WP_ERR_PROTO means "the peer sent something no continuation can fix".
 */
#ifndef WP_FRAME_H
#define WP_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include <wolfpack/proto.h>

#include "buf.h"

typedef struct wp_frame_hdr {
    uint8_t version, type;
    uint16_t flags;
    uint32_t stream_id, length;
} wp_frame_hdr;

/* One parsed frame. payload is non-NULL only for Data frames with length > 0. */
typedef struct wp_frame {
    wp_frame_hdr hdr;
    const uint8_t *payload; /* hdr.length bytes (Data only); see wp_frame_parser_next */
    size_t payload_len;     /* == hdr.length for Data, 0 otherwise */
} wp_frame;

/*
 * Incremental parser. Embed it in its owner (it is about 16 KiB: the payload
 * array holds the one frame that may be split across chunks) and initialize
 * with wp_frame_parser_init. Fields are private.
 */
typedef struct wp_frame_parser {
    uint8_t hdr_raw[WP_FRAME_HDR_LEN]; /* header bytes gathered so far */
    size_t hdr_have;                   /* 0..WP_FRAME_HDR_LEN */
    wp_frame_hdr hdr;                  /* decoded header once hdr_have == WP_FRAME_HDR_LEN */
    size_t payload_have;               /* payload bytes copied into payload[] */
    int err;                           /* 0 or the sticky WP_ERR_PROTO */
    wp_frame_hdr bad;                  /* header that caused err (when complete) */
    int bad_complete;                  /* bad holds a whole header */
    uint8_t payload[WP_FRAME_MAX_DATA];
} wp_frame_parser;

/* Writes the 12-byte big-endian header. Does not validate (see wp_frame_hdr_check). */
void wp_frame_hdr_encode(const wp_frame_hdr *h, uint8_t out[WP_FRAME_HDR_LEN]);

/*
 * Decodes and validates the header at p (n bytes available; bytes past the
 * first 12 are ignored). Returns:
 *   0                 a valid header; *h filled;
 *   WP_ERR_NEED_MORE  n < WP_FRAME_HDR_LEN and the n bytes are a valid prefix;
 *   WP_ERR_PROTO      the header is invalid (PROTOCOL.md §5.2). Version, type
 *                     and the flag set are judged as soon as their bytes are
 *                     present, so a bad prefix fails before 12 bytes arrive.
 * *h is written whenever n >= WP_FRAME_HDR_LEN (also on WP_ERR_PROTO, so the
 * caller can log what arrived); otherwise it is left untouched.
 */
int wp_frame_hdr_decode(const uint8_t *p, size_t n, wp_frame_hdr *h);

/* Stateless validity of a decoded header (§5.2). Returns 0 or WP_ERR_PROTO. */
int wp_frame_hdr_check(const wp_frame_hdr *h);

/* "Data", "WindowUpdate", "Ping", "GoAway", or "unknown". Never NULL. */
const char *wp_frame_type_name(uint8_t type);

/* Resets p to expect the start of a frame and clears any error. Never fails. */
void wp_frame_parser_init(wp_frame_parser *p);

/*
 * Consumes bytes from the chunk (*in, *in_len), advancing both, until one
 * whole frame is available or the chunk is exhausted. Returns:
 *   1             a frame is in *out. For Data, out->payload points either
 *                 into the caller's chunk (zero copy when the whole payload
 *                 was in it) or into the parser; it stays valid until the
 *                 next call on this parser or until the caller reuses the
 *                 chunk memory, whichever is first. Call again with the
 *                 remaining chunk for further frames.
 *   0             the chunk is used up (*in_len == 0) and no whole frame is
 *                 pending: feed more bytes. A partial frame, if any, is kept.
 *   WP_ERR_PROTO  an invalid header (§5.2); sticky: every later call returns
 *                 it without consuming input. *in and *in_len then point just past
 *                 the bytes of the invalid header that were consumed.
 *                 Nothing of an oversized Data payload is ever buffered.
 *   WP_ERR_INVAL  a NULL argument (nothing consumed; not sticky).
 * Frames are produced in order; no frame is produced twice.
 */
int wp_frame_parser_next(wp_frame_parser *p, const uint8_t **in, size_t *in_len, wp_frame *out);

/* 0 or the sticky error code. */
int wp_frame_parser_error(const wp_frame_parser *p);

/*
 * After WP_ERR_PROTO: copies the offending header to *h and returns 1 when
 * all 12 bytes of it had arrived, else returns 0 (h untouched). For logs.
 */
int wp_frame_parser_bad_hdr(const wp_frame_parser *p, wp_frame_hdr *h);

/* Bytes of an incomplete frame currently held (0 at a frame boundary). */
size_t wp_frame_parser_pending(const wp_frame_parser *p);

/*
 * Appends an open preamble: u16 big-endian len, then the len JSON bytes.
 * Returns 0, WP_ERR_INVAL (json NULL, len 0 or len > WP_PREAMBLE_MAX),
 * WP_ERR_LIMIT / WP_ERR_NOMEM (from out; nothing appended).
 * The JSON text itself is not parsed here.
 */
int wp_frame_preamble_encode(const char *json, size_t len, wp_buf *out);

/*
 * Parses the preamble at the start of p (n bytes: normally a SYN Data
 * payload). On 0: the JSON is p[*json_off .. *json_off + *json_len) and
 * *consumed (= 2 + json_len) bytes belong to the preamble; the rest of p is
 * stream data. Returns WP_ERR_NEED_MORE if n is shorter than the prefix or
 * the announced JSON (the caller of a SYN frame treats that as a protocol
 * error, PROTOCOL.md §6.2), WP_ERR_PROTO for a JSON length of 0 or above
 * WP_PREAMBLE_MAX (judged from the prefix alone), WP_ERR_INVAL for NULL
 * out-pointers. Outputs are written only on 0.
 */
int wp_frame_preamble_decode(const uint8_t *p, size_t n, size_t *json_off, size_t *json_len,
                             size_t *consumed);

/*
 * Builders: each appends exactly one whole frame to buf, or nothing. They
 * refuse to build a frame the receiver would reject (WP_ERR_INVAL) and return
 * WP_ERR_LIMIT when buf's max leaves no room for the whole frame, WP_ERR_NOMEM
 * if growing buf failed; 0 on success.
 */

/* Data frame: flags 0, SYN, FIN or SYN|FIN; len <= WP_FRAME_MAX_DATA; even id != 0. */
int wp_frame_put_data(wp_buf *buf, uint32_t stream_id, uint16_t flags, const void *payload,
                      size_t len);

/*
 * Opening Data|SYN frame (plus FIN if fin != 0): the preamble for json (1..
 * WP_PREAMBLE_MAX bytes) followed by len bytes of data; 2 + json_len + len must
 * be <= WP_FRAME_MAX_DATA. data may be NULL when len is 0.
 */
int wp_frame_put_open(wp_buf *buf, uint32_t stream_id, const char *json, size_t json_len,
                      const void *data, size_t len, int fin);

/* WindowUpdate: flags 0, ACK, FIN, ACK|FIN or RST (delta 0); delta <= WP_STREAM_WINDOW_LIMIT. */
int wp_frame_put_window_update(wp_buf *buf, uint32_t stream_id, uint16_t flags, uint32_t delta);

/* Ping on stream 0: flags exactly WP_FRAME_FLAG_SYN (request) or WP_FRAME_FLAG_ACK (response). */
int wp_frame_put_ping(wp_buf *buf, uint16_t flags, uint32_t opaque);

/* GoAway on stream 0 with the code (WP_GOAWAY_*; any value is encodable). */
int wp_frame_put_goaway(wp_buf *buf, uint32_t code);

#endif
