/*
 * fuzz_frame.c — fuzz target for the tunnel frame codec (common/frame.h).
 *
 * The input is a byte stream as a peer would send it. Invariants checked:
 *   - wp_frame_hdr_decode judges prefixes consistently: once a prefix of the
 *     first header is rejected, every longer prefix is too; a header that
 *     decodes OK re-encodes to the same 12 bytes and passes wp_frame_hdr_check;
 *   - the stream parser yields the same frames, the same sticky error and the
 *     same pending byte count whether the input arrives whole, byte by byte or
 *     in irregular chunks; re-encoding the frames it yields reproduces the
 *     input prefix they came from, byte for byte;
 *   - every frame it yields is rebuilt identically by the matching builder
 *     (wp_frame_put_data / _open / _window_update / _ping / _goaway);
 *   - an error is sticky and consumes nothing more; the offending header, when
 *     complete, fails wp_frame_hdr_check;
 *   - wp_frame_preamble_decode on the raw input agrees with its contract and a
 *     decoded preamble re-encodes to the same bytes.
 */
#include <string.h>

#include "buf.h"
#include "err.h"
#include "frame.h"
#include "fuzz.h"

/* What one parser run produced: the frames re-encoded back to back, and how it ended. */
typedef struct run_log {
    uint8_t *bytes; /* re-encoded frames */
    size_t len, cap;
    size_t frames;
    int err;        /* 0 or the sticky error */
    size_t pending; /* bytes of an incomplete frame at the end (no error) */
} run_log;

static void log_put(run_log *lg, const void *p, size_t n)
{
    WP_FUZZ_CHECK(lg->len + n <= lg->cap); /* frames never hold more bytes than the input */
    memcpy(lg->bytes + lg->len, p, n);
    lg->len += n;
}

/* Checks one yielded frame by itself and appends its encoding to the log. */
static void check_frame(run_log *lg, const wp_frame *f)
{
    const wp_frame_hdr *h = &f->hdr;
    WP_FUZZ_CHECK(wp_frame_hdr_check(h) == 0);
    if (h->type == WP_FRAME_TYPE_DATA && h->length > 0) {
        WP_FUZZ_CHECK(f->payload != NULL);
        WP_FUZZ_CHECK(f->payload_len == h->length);
    } else {
        WP_FUZZ_CHECK(f->payload == NULL);
        WP_FUZZ_CHECK(f->payload_len == 0);
    }
    uint8_t raw[WP_FRAME_HDR_LEN];
    wp_frame_hdr_encode(h, raw);
    wp_frame_hdr back;
    WP_FUZZ_CHECK(wp_frame_hdr_decode(raw, sizeof(raw), &back) == 0);
    WP_FUZZ_CHECK(back.version == h->version && back.type == h->type && back.flags == h->flags &&
                  back.stream_id == h->stream_id && back.length == h->length);
    size_t start = lg->len;
    log_put(lg, raw, sizeof(raw));
    if (f->payload_len)
        log_put(lg, f->payload, f->payload_len);
    lg->frames++;

    /* the builders produce exactly these bytes */
    wp_buf b;
    wp_buf_init(&b, WP_FRAME_MAX_LEN);
    int rc;
    switch (h->type) {
    case WP_FRAME_TYPE_DATA:
        rc = wp_frame_put_data(&b, h->stream_id, h->flags, f->payload, f->payload_len);
        break;
    case WP_FRAME_TYPE_WINDOW_UPDATE:
        rc = wp_frame_put_window_update(&b, h->stream_id, h->flags, h->length);
        break;
    case WP_FRAME_TYPE_PING:
        rc = wp_frame_put_ping(&b, h->flags, h->length);
        break;
    default:
        rc = wp_frame_put_goaway(&b, h->length);
        break;
    }
    WP_FUZZ_CHECK(rc == 0);
    WP_FUZZ_CHECK(wp_buf_len(&b) == lg->len - start);
    WP_FUZZ_CHECK(memcmp(wp_buf_ptr(&b), lg->bytes + start, wp_buf_len(&b)) == 0);
    wp_buf_free(&b);

    /* an opening Data frame: its preamble, and wp_frame_put_open rebuilding the frame */
    if (h->type == WP_FRAME_TYPE_DATA && (h->flags & WP_FRAME_FLAG_SYN)) {
        size_t off = 0, jl = 0, used = 0;
        rc = wp_frame_preamble_decode(f->payload, f->payload_len, &off, &jl, &used);
        WP_FUZZ_CHECK(rc == 0 || rc == WP_ERR_NEED_MORE || rc == WP_ERR_PROTO);
        if (rc == 0) {
            WP_FUZZ_CHECK(off == WP_PREAMBLE_LEN_SIZE && used == off + jl);
            WP_FUZZ_CHECK(jl >= 1 && jl <= WP_PREAMBLE_MAX && used <= f->payload_len);
            wp_buf_init(&b, WP_FRAME_MAX_LEN);
            rc = wp_frame_put_open(&b, h->stream_id, (const char *)f->payload + off, jl,
                                   used < f->payload_len ? f->payload + used : NULL,
                                   f->payload_len - used, (h->flags & WP_FRAME_FLAG_FIN) != 0);
            WP_FUZZ_CHECK(rc == 0);
            WP_FUZZ_CHECK(wp_buf_len(&b) == lg->len - start);
            WP_FUZZ_CHECK(memcmp(wp_buf_ptr(&b), lg->bytes + start, wp_buf_len(&b)) == 0);
            wp_buf_free(&b);
        }
    }
}

/*
 * Feeds data to a fresh parser in chunks: mode 0 whole, 1 byte by byte, 2
 * irregular sizes derived from the input length. Fills lg.
 */
static void parse_run(wp_frame_parser *p, const uint8_t *data, size_t size, int mode, run_log *lg)
{
    static const size_t sizes[] = {3, 1, 12, 7, 100, 11, 13, 4096, 2, 16395, 5};
    wp_frame_parser_init(p);
    lg->len = 0;
    lg->frames = 0;
    lg->err = 0;
    size_t pos = 0, k = size % (sizeof(sizes) / sizeof(sizes[0]));
    while (pos < size && !lg->err) {
        size_t chunk = mode == 0   ? size
                       : mode == 1 ? 1
                                   : sizes[k++ % (sizeof(sizes) / sizeof(sizes[0]))];
        if (chunk > size - pos)
            chunk = size - pos;
        const uint8_t *in = data + pos;
        size_t in_len = chunk;
        for (;;) {
            wp_frame f;
            const uint8_t *before = in;
            int rc = wp_frame_parser_next(p, &in, &in_len, &f);
            WP_FUZZ_CHECK(in >= before && in <= data + pos + chunk);
            WP_FUZZ_CHECK(in_len == (size_t)(data + pos + chunk - in));
            if (rc == 1) {
                check_frame(lg, &f);
                continue;
            }
            if (rc == 0) {
                WP_FUZZ_CHECK(in_len == 0);
                break;
            }
            WP_FUZZ_CHECK(rc == WP_ERR_PROTO);
            WP_FUZZ_CHECK(wp_frame_parser_error(p) == WP_ERR_PROTO);
            /* sticky, consumes nothing */
            const uint8_t *again = in;
            size_t again_len = in_len;
            WP_FUZZ_CHECK(wp_frame_parser_next(p, &again, &again_len, &f) == WP_ERR_PROTO);
            WP_FUZZ_CHECK(again == in && again_len == in_len);
            wp_frame_hdr bad;
            if (wp_frame_parser_bad_hdr(p, &bad))
                WP_FUZZ_CHECK(wp_frame_hdr_check(&bad) == WP_ERR_PROTO);
            lg->err = rc;
            break;
        }
        pos += chunk;
    }
    if (!lg->err) {
        WP_FUZZ_CHECK(wp_frame_parser_error(p) == 0);
        /* the frames plus the held partial frame account for every input byte */
        lg->pending = wp_frame_parser_pending(p);
        WP_FUZZ_CHECK(lg->len + lg->pending == size);
        WP_FUZZ_CHECK(lg->pending < WP_FRAME_MAX_LEN);
    } else {
        lg->pending = 0;
    }
    /* the yielded frames are the input's own bytes, re-encoded */
    WP_FUZZ_CHECK(lg->len <= size && memcmp(lg->bytes, data, lg->len) == 0);
}

static void check_hdr_decode(const uint8_t *data, size_t size)
{
    size_t max = size < WP_FRAME_HDR_LEN ? size : WP_FRAME_HDR_LEN;
    int rejected = 0;
    for (size_t n = 0; n <= max; n++) {
        wp_frame_hdr h;
        memset(&h, 0xA5, sizeof(h));
        int rc = wp_frame_hdr_decode(data, n, &h);
        if (n < WP_FRAME_HDR_LEN) {
            WP_FUZZ_CHECK(rc == WP_ERR_NEED_MORE || rc == WP_ERR_PROTO);
            if (rejected)
                WP_FUZZ_CHECK(rc == WP_ERR_PROTO);
            rejected = rc == WP_ERR_PROTO;
            continue;
        }
        WP_FUZZ_CHECK(rc == 0 || rc == WP_ERR_PROTO);
        if (rejected)
            WP_FUZZ_CHECK(rc == WP_ERR_PROTO);
        WP_FUZZ_CHECK(wp_frame_hdr_check(&h) == rc);
        uint8_t raw[WP_FRAME_HDR_LEN];
        wp_frame_hdr_encode(&h, raw);
        WP_FUZZ_CHECK(memcmp(raw, data, WP_FRAME_HDR_LEN) == 0); /* also for rejected headers */
        WP_FUZZ_CHECK(wp_frame_type_name(h.type) != NULL);
    }
}

static void check_preamble(const uint8_t *data, size_t size)
{
    size_t off = 7, jl = 7, used = 7;
    int rc = wp_frame_preamble_decode(data, size, &off, &jl, &used);
    size_t announced = size >= 2 ? ((size_t)data[0] << 8 | data[1]) : 0;
    if (size < 2) {
        WP_FUZZ_CHECK(rc == WP_ERR_NEED_MORE);
    } else if (announced == 0 || announced > WP_PREAMBLE_MAX) {
        WP_FUZZ_CHECK(rc == WP_ERR_PROTO);
    } else if (size - 2 < announced) {
        WP_FUZZ_CHECK(rc == WP_ERR_NEED_MORE);
    } else {
        WP_FUZZ_CHECK(rc == 0);
    }
    if (rc != 0) {
        WP_FUZZ_CHECK(off == 7 && jl == 7 && used == 7); /* outputs written only on success */
        return;
    }
    WP_FUZZ_CHECK(off == 2 && jl == announced && used == 2 + jl);
    wp_buf b;
    wp_buf_init(&b, WP_PREAMBLE_LEN_SIZE + WP_PREAMBLE_MAX);
    WP_FUZZ_CHECK(wp_frame_preamble_encode((const char *)data + off, jl, &b) == 0);
    WP_FUZZ_CHECK(wp_buf_len(&b) == used && memcmp(wp_buf_ptr(&b), data, used) == 0);
    wp_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static wp_frame_parser parser; /* ~16 KiB: keep it off the stack */
    check_hdr_decode(data, size);
    check_preamble(data, size);

    run_log a = {0}, b = {0};
    a.cap = b.cap = size;
    a.bytes = malloc(size ? size : 1);
    b.bytes = malloc(size ? size : 1);
    WP_FUZZ_CHECK(a.bytes && b.bytes);
    parse_run(&parser, data, size, 0, &a);
    for (int mode = 1; mode <= 2; mode++) {
        if (mode == 1 && size > 65536)
            continue; /* one call per byte: keep big inputs quick */
        parse_run(&parser, data, size, mode, &b);
        WP_FUZZ_CHECK(a.err == b.err);
        WP_FUZZ_CHECK(a.frames == b.frames);
        WP_FUZZ_CHECK(a.len == b.len && memcmp(a.bytes, b.bytes, a.len) == 0);
        WP_FUZZ_CHECK(a.pending == b.pending);
    }
    free(a.bytes);
    free(b.bytes);
    return 0;
}
