/*
 * test_frame.c — unit tests for common/frame.c: yamux v0 header codec, the
 * incremental frame parser, the open preamble and the frame builders
 * (PROTOCOL.md §5-§6). Golden bytes are written by hand from the yamux spec.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "err.h"
#include "frame.h"
#include "wp_test.h"

#define SYN WP_FRAME_FLAG_SYN
#define ACK WP_FRAME_FLAG_ACK
#define FIN WP_FRAME_FLAG_FIN
#define RST WP_FRAME_FLAG_RST

/* Deterministic PRNG (xorshift32) so failures reproduce. */
static uint32_t rng_state = 0x9e3779b9u;
static uint32_t rng(void)
{
    uint32_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    rng_state = x;
    return x;
}

static int hdr_eq(const wp_frame_hdr *a, const wp_frame_hdr *b)
{
    return a->version == b->version && a->type == b->type && a->flags == b->flags &&
           a->stream_id == b->stream_id && a->length == b->length;
}

/* ---- golden bytes ---- */

WP_TEST(golden_data)
{
    static const uint8_t want[] = {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00,
                                   0x00, 0x00, 0x05, 'h',  'e',  'l',  'l',  'o'};
    wp_buf b;
    wp_buf_init(&b, 1024);
    WP_CHECK_EQ(wp_frame_put_data(&b, 2, 0, "hello", 5), 0);
    WP_CHECK_EQ(wp_buf_len(&b), sizeof want);
    WP_CHECK(memcmp(wp_buf_ptr(&b), want, sizeof want) == 0);

    wp_frame_hdr h;
    WP_CHECK_EQ(wp_frame_hdr_decode(want, sizeof want, &h), 0);
    WP_CHECK_EQ(h.version, 0);
    WP_CHECK_EQ(h.type, WP_FRAME_TYPE_DATA);
    WP_CHECK_EQ(h.flags, 0);
    WP_CHECK_EQ(h.stream_id, 2);
    WP_CHECK_EQ(h.length, 5);

    /* Data|FIN, empty, large stream id: 0xfffffffe */
    static const uint8_t fin[] = {0x00, 0x00, 0x00, 0x04, 0xff, 0xff,
                                  0xff, 0xfe, 0x00, 0x00, 0x00, 0x00};
    wp_buf_reset(&b);
    WP_CHECK_EQ(wp_frame_put_data(&b, 0xfffffffeu, FIN, NULL, 0), 0);
    WP_CHECK_EQ(wp_buf_len(&b), sizeof fin);
    WP_CHECK(memcmp(wp_buf_ptr(&b), fin, sizeof fin) == 0);
    WP_CHECK_EQ(wp_frame_hdr_decode(fin, sizeof fin, &h), 0);
    WP_CHECK(h.stream_id == 0xfffffffeu);
    WP_CHECK_EQ(h.flags, FIN);
    wp_buf_free(&b);
}

WP_TEST(golden_open)
{
    /* Data|SYN|FIN on stream 4: preamble {"service":"wolf"} (18 bytes) + "GET" */
    static const uint8_t want[] = {
        0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x17, /* len 23 */
        0x00, 0x12, '{',  '"',  's',  'e',  'r',  'v',  'i',  'c',  'e',  '"',
        ':',  '"',  'w',  'o',  'l',  'f',  '"',  '}',  'G',  'E',  'T'};
    const char *json = "{\"service\":\"wolf\"}";
    WP_CHECK_EQ(strlen(json), 18);
    wp_buf b;
    wp_buf_init(&b, 1024);
    WP_CHECK_EQ(wp_frame_put_open(&b, 4, json, strlen(json), "GET", 3, 1), 0);
    WP_CHECK_EQ(wp_buf_len(&b), sizeof want);
    WP_CHECK(memcmp(wp_buf_ptr(&b), want, sizeof want) == 0);

    wp_frame_hdr h;
    WP_CHECK_EQ(wp_frame_hdr_decode(want, sizeof want, &h), 0);
    WP_CHECK_EQ(h.flags, SYN | FIN);
    size_t off = 0, jl = 0, used = 0;
    WP_CHECK_EQ(wp_frame_preamble_decode(want + 12, h.length, &off, &jl, &used), 0);
    WP_CHECK_EQ(off, 2);
    WP_CHECK_EQ(jl, 18);
    WP_CHECK_EQ(used, 20);
    WP_CHECK(memcmp(want + 12 + off, json, jl) == 0);
    WP_CHECK(memcmp(want + 12 + used, "GET", 3) == 0);

    /* without FIN and without data */
    wp_buf_reset(&b);
    WP_CHECK_EQ(wp_frame_put_open(&b, 2, json, strlen(json), NULL, 0, 0), 0);
    WP_CHECK_EQ(wp_buf_len(&b), 12 + 20);
    WP_CHECK_EQ(wp_buf_ptr(&b)[3], SYN);
    WP_CHECK_EQ(wp_buf_ptr(&b)[11], 20);
    wp_buf_free(&b);
}

WP_TEST(golden_window_update)
{
    /* WindowUpdate|ACK, stream 2, delta 262144 = 0x00040000 */
    static const uint8_t ack[] = {0x00, 0x01, 0x00, 0x02, 0x00, 0x00,
                                  0x00, 0x02, 0x00, 0x04, 0x00, 0x00};
    /* WindowUpdate|RST, stream 0x12345678, delta 0 */
    static const uint8_t rst[] = {0x00, 0x01, 0x00, 0x08, 0x12, 0x34,
                                  0x56, 0x78, 0x00, 0x00, 0x00, 0x00};
    /* WindowUpdate, stream 6, delta 131072 */
    static const uint8_t credit[] = {0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
                                     0x00, 0x06, 0x00, 0x02, 0x00, 0x00};
    wp_buf b;
    wp_buf_init(&b, 64);
    WP_CHECK_EQ(wp_frame_put_window_update(&b, 2, ACK, WP_STREAM_INITIAL_WINDOW), 0);
    WP_CHECK_EQ(wp_frame_put_window_update(&b, 0x12345678u, RST, 0), 0);
    WP_CHECK_EQ(wp_frame_put_window_update(&b, 6, 0, WP_WINDOW_UPDATE_THRESHOLD), 0);
    WP_CHECK_EQ(wp_buf_len(&b), 36);
    WP_CHECK(memcmp(wp_buf_ptr(&b), ack, 12) == 0);
    WP_CHECK(memcmp(wp_buf_ptr(&b) + 12, rst, 12) == 0);
    WP_CHECK(memcmp(wp_buf_ptr(&b) + 24, credit, 12) == 0);

    wp_frame_hdr h;
    WP_CHECK_EQ(wp_frame_hdr_decode(rst, sizeof rst, &h), 0);
    WP_CHECK_EQ(h.type, WP_FRAME_TYPE_WINDOW_UPDATE);
    WP_CHECK_EQ(h.flags, RST);
    WP_CHECK(h.stream_id == 0x12345678u);
    WP_CHECK_EQ(h.length, 0);
    WP_CHECK_EQ(wp_frame_hdr_decode(ack, sizeof ack, &h), 0);
    WP_CHECK_EQ(h.length, 262144);
    wp_buf_free(&b);
}

WP_TEST(golden_ping_goaway)
{
    static const uint8_t ping[] = {0x00, 0x02, 0x00, 0x01, 0x00, 0x00,
                                   0x00, 0x00, 0xde, 0xad, 0xbe, 0xef};
    static const uint8_t pong[] = {0x00, 0x02, 0x00, 0x02, 0x00, 0x00,
                                   0x00, 0x00, 0xde, 0xad, 0xbe, 0xef};
    static const uint8_t away[] = {0x00, 0x03, 0x00, 0x00, 0x00, 0x00,
                                   0x00, 0x00, 0x00, 0x00, 0x00, 0x01};
    wp_buf b;
    wp_buf_init(&b, 64);
    WP_CHECK_EQ(wp_frame_put_ping(&b, SYN, 0xdeadbeefu), 0);
    WP_CHECK_EQ(wp_frame_put_ping(&b, ACK, 0xdeadbeefu), 0);
    WP_CHECK_EQ(wp_frame_put_goaway(&b, WP_GOAWAY_PROTO_ERROR), 0);
    WP_CHECK_EQ(wp_buf_len(&b), 36);
    WP_CHECK(memcmp(wp_buf_ptr(&b), ping, 12) == 0);
    WP_CHECK(memcmp(wp_buf_ptr(&b) + 12, pong, 12) == 0);
    WP_CHECK(memcmp(wp_buf_ptr(&b) + 24, away, 12) == 0);

    wp_frame_hdr h;
    WP_CHECK_EQ(wp_frame_hdr_decode(pong, sizeof pong, &h), 0);
    WP_CHECK_EQ(h.type, WP_FRAME_TYPE_PING);
    WP_CHECK_EQ(h.flags, ACK);
    WP_CHECK(h.length == 0xdeadbeefu);
    WP_CHECK_EQ(wp_frame_hdr_decode(away, sizeof away, &h), 0);
    WP_CHECK_EQ(h.type, WP_FRAME_TYPE_GOAWAY);
    WP_CHECK_EQ(h.length, 1);
    /* unknown GoAway codes are encodable and decodable (receivers treat them as 2) */
    wp_buf_reset(&b);
    WP_CHECK_EQ(wp_frame_put_goaway(&b, 0xffffffffu), 0);
    WP_CHECK_EQ(wp_frame_hdr_decode(wp_buf_ptr(&b), wp_buf_len(&b), &h), 0);
    WP_CHECK(h.length == 0xffffffffu);
    wp_buf_free(&b);
}

/* ---- header validity ---- */

/* PROTOCOL.md §5.2 flag table, written out independently of frame.c. */
static int flags_allowed(int type, int flags)
{
    static const int data[] = {0, SYN, FIN, SYN | FIN};
    static const int wu[] = {0, ACK, FIN, ACK | FIN, RST};
    static const int ping[] = {SYN, ACK};
    const int *set;
    size_t n;
    switch (type) {
    case 0:
        set = data, n = 4;
        break;
    case 1:
        set = wu, n = 5;
        break;
    case 2:
        set = ping, n = 2;
        break;
    case 3:
        return flags == 0;
    default:
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        if (set[i] == flags)
            return 1;
    return 0;
}

WP_TEST(every_flag_combination)
{
    for (int type = 0; type < 4; type++) {
        for (int flags = 0; flags < 16; flags++) {
            wp_frame_hdr h = {0, (uint8_t)type, (uint16_t)flags, type < 2 ? 2u : 0u,
                              type == 0 && (flags & SYN) ? 3u : 0u};
            int want = flags_allowed(type, flags) ? 0 : WP_ERR_PROTO;
            WP_CHECK_EQ(wp_frame_hdr_check(&h), want);
            uint8_t raw[12];
            wp_frame_hdr_encode(&h, raw);
            wp_frame_hdr d;
            WP_CHECK_EQ(wp_frame_hdr_decode(raw, 12, &d), want);
            WP_CHECK(hdr_eq(&h, &d));
            /* the flag verdict is available from the first 4 bytes */
            WP_CHECK_EQ(wp_frame_hdr_decode(raw, 4, &d), want ? want : WP_ERR_NEED_MORE);
        }
        /* every undefined flag bit is refused, alone or with valid flags */
        for (int bit = 4; bit < 16; bit++) {
            uint16_t extra = (uint16_t)(1u << bit);
            uint16_t base = type == 2 ? SYN : 0;
            wp_frame_hdr h = {0, (uint8_t)type, (uint16_t)(base | extra), type < 2 ? 2u : 0u, 0};
            WP_CHECK_EQ(wp_frame_hdr_check(&h), WP_ERR_PROTO);
            uint8_t raw[12];
            wp_frame_hdr_encode(&h, raw);
            wp_frame_hdr d;
            WP_CHECK_EQ(wp_frame_hdr_decode(raw, 12, &d), WP_ERR_PROTO);
            WP_CHECK_EQ(wp_frame_hdr_decode(raw, bit >= 8 ? 3 : 4, &d), WP_ERR_PROTO);
        }
    }
}

WP_TEST(header_rejections)
{
    struct {
        wp_frame_hdr h;
        int want;
    } cases[] = {
        /* version and type */
        {{1, 0, 0, 2, 0}, WP_ERR_PROTO},
        {{0xff, 2, SYN, 0, 0}, WP_ERR_PROTO},
        {{0, 4, 0, 0, 0}, WP_ERR_PROTO},
        {{0, 0xff, 0, 2, 0}, WP_ERR_PROTO},
        /* Data stream ids and lengths */
        {{0, 0, 0, 0, 0}, WP_ERR_PROTO},
        {{0, 0, 0, 1, 0}, WP_ERR_PROTO},
        {{0, 0, 0, 0xffffffffu, 0}, WP_ERR_PROTO},
        {{0, 0, 0, 2, WP_FRAME_MAX_DATA}, 0},
        {{0, 0, 0, 2, WP_FRAME_MAX_DATA + 1}, WP_ERR_PROTO},
        {{0, 0, 0, 2, 0xffffffffu}, WP_ERR_PROTO},
        {{0, 0, SYN, 2, 2}, WP_ERR_PROTO},
        {{0, 0, SYN, 2, 0}, WP_ERR_PROTO},
        {{0, 0, SYN, 2, 3}, 0},
        {{0, 0, SYN | FIN, 0xfffffffeu, WP_FRAME_MAX_DATA}, 0},
        {{0, 0, SYN, 3, 3}, WP_ERR_PROTO},
        {{0, 0, FIN, 2, 0}, 0},
        /* WindowUpdate */
        {{0, 1, 0, 0, 1}, WP_ERR_PROTO},
        {{0, 1, 0, 7, 1}, WP_ERR_PROTO},
        {{0, 1, 0, 2, WP_STREAM_INITIAL_WINDOW}, 0},
        {{0, 1, 0, 2, WP_STREAM_INITIAL_WINDOW + 1}, 0}, /* grown windows (§7.1) */
        {{0, 1, 0, 2, WP_STREAM_WINDOW_LIMIT}, 0},
        {{0, 1, 0, 2, WP_STREAM_WINDOW_LIMIT + 1}, WP_ERR_PROTO},
        {{0, 1, ACK, 2, 0xffffffffu}, WP_ERR_PROTO},
        {{0, 1, RST, 2, 0}, 0},
        {{0, 1, RST, 2, 1}, WP_ERR_PROTO},
        {{0, 1, ACK | FIN, 2, 0}, 0},
        /* Ping: session only, any opaque value */
        {{0, 2, SYN, 0, 0xffffffffu}, 0},
        {{0, 2, ACK, 0, 0}, 0},
        {{0, 2, SYN, 2, 0}, WP_ERR_PROTO},
        {{0, 2, SYN, 1, 0}, WP_ERR_PROTO},
        {{0, 2, 0, 0, 0}, WP_ERR_PROTO},
        {{0, 2, SYN | ACK, 0, 0}, WP_ERR_PROTO},
        /* GoAway */
        {{0, 3, 0, 0, 2}, 0},
        {{0, 3, 0, 2, 0}, WP_ERR_PROTO},
        {{0, 3, FIN, 0, 0}, WP_ERR_PROTO},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t raw[12];
        wp_frame_hdr_encode(&cases[i].h, raw);
        wp_frame_hdr d;
        memset(&d, 0xaa, sizeof d);
        int rc = wp_frame_hdr_decode(raw, sizeof raw, &d);
        if (rc != cases[i].want)
            printf("  case %zu\n", i);
        WP_CHECK_EQ(rc, cases[i].want);
        WP_CHECK_EQ(wp_frame_hdr_check(&cases[i].h), cases[i].want);
        /* the decoded fields are reported even when invalid (for logs) */
        WP_CHECK(hdr_eq(&d, &cases[i].h));
    }
    WP_CHECK_EQ(wp_frame_hdr_check(NULL), WP_ERR_PROTO);
}

WP_TEST(header_truncated_is_need_more)
{
    uint8_t raw[12];
    wp_frame_hdr valid = {0, WP_FRAME_TYPE_DATA, SYN, 2, 100};
    wp_frame_hdr_encode(&valid, raw);
    for (size_t n = 0; n < 12; n++) {
        wp_frame_hdr d;
        memset(&d, 0x5a, sizeof d);
        wp_frame_hdr before = d;
        WP_CHECK_EQ(wp_frame_hdr_decode(raw, n, &d), WP_ERR_NEED_MORE);
        WP_CHECK(memcmp(&d, &before, sizeof d) == 0); /* untouched */
    }
    WP_CHECK_EQ(wp_frame_hdr_decode(NULL, 0, &(wp_frame_hdr){0}), WP_ERR_NEED_MORE);
    WP_CHECK_EQ(wp_frame_hdr_decode(NULL, 12, &(wp_frame_hdr){0}), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_hdr_decode(raw, 12, NULL), WP_ERR_INVAL);

    /* A bad prefix is judged as soon as its byte arrives. */
    uint8_t bad_ver[] = {0x01};
    uint8_t bad_type[] = {0x00, 0x04};
    uint8_t bad_flag_hi[] = {0x00, 0x00, 0x01};
    uint8_t bad_flag_lo[] = {0x00, 0x02, 0x00, 0x00}; /* Ping without SYN/ACK */
    uint8_t ok_prefix[] = {0x00, 0x03, 0x00, 0x00, 0xff};
    wp_frame_hdr d;
    WP_CHECK_EQ(wp_frame_hdr_decode(bad_ver, 1, &d), WP_ERR_PROTO);
    WP_CHECK_EQ(wp_frame_hdr_decode(bad_type, 2, &d), WP_ERR_PROTO);
    WP_CHECK_EQ(wp_frame_hdr_decode(bad_flag_hi, 3, &d), WP_ERR_PROTO);
    WP_CHECK_EQ(wp_frame_hdr_decode(bad_flag_lo, 4, &d), WP_ERR_PROTO);
    WP_CHECK_EQ(wp_frame_hdr_decode(bad_flag_lo, 3, &d), WP_ERR_NEED_MORE);
    /* GoAway with a nonzero stream id byte: only known at 12 bytes */
    WP_CHECK_EQ(wp_frame_hdr_decode(ok_prefix, 5, &d), WP_ERR_NEED_MORE);
}

WP_TEST(header_roundtrip_random)
{
    int valid = 0;
    for (int i = 0; i < 200000; i++) {
        wp_frame_hdr h;
        h.version = (rng() & 7) == 0 ? (uint8_t)rng() : 0;
        h.type = (uint8_t)(rng() % 5);
        h.flags = (rng() & 15) == 0 ? (uint16_t)rng() : (uint16_t)(rng() & 15);
        uint32_t r = rng();
        h.stream_id = (r & 3) == 0 ? 0 : (r & 3) == 1 ? rng() : rng() & ~1u;
        h.length = (rng() & 1) ? rng() : rng() % (WP_STREAM_INITIAL_WINDOW + 2);
        uint8_t raw[12];
        wp_frame_hdr_encode(&h, raw);
        wp_frame_hdr d;
        int rc = wp_frame_hdr_decode(raw, 12, &d);
        WP_CHECK(rc == 0 || rc == WP_ERR_PROTO);
        WP_CHECK_EQ(rc, wp_frame_hdr_check(&h));
        WP_CHECK(hdr_eq(&d, &h));
        if (rc == 0) {
            valid++;
            /* every prefix of a valid header is NEED_MORE */
            size_t n = rng() % 12;
            WP_CHECK_EQ(wp_frame_hdr_decode(raw, n, &d), WP_ERR_NEED_MORE);
        }
    }
    WP_CHECK(valid > 1000); /* the generator actually reaches valid headers */
}

WP_TEST(type_names)
{
    WP_CHECK_STR(wp_frame_type_name(0), "Data");
    WP_CHECK_STR(wp_frame_type_name(1), "WindowUpdate");
    WP_CHECK_STR(wp_frame_type_name(2), "Ping");
    WP_CHECK_STR(wp_frame_type_name(3), "GoAway");
    WP_CHECK_STR(wp_frame_type_name(4), "unknown");
    WP_CHECK_STR(wp_frame_type_name(255), "unknown");
}

/* ---- parser ---- */

#define MAX_FRAMES 512 /* > 4096 / 12: any hostile buffer fits */

/* What a parse produced: copies, so they outlive the parser's buffers. */
typedef struct parsed {
    int nframes;
    wp_frame_hdr hdr[MAX_FRAMES];
    uint8_t *payload[MAX_FRAMES];
    size_t plen[MAX_FRAMES];
    int rc; /* 0 or the error that ended the parse */
} parsed;

static void parsed_free(parsed *r)
{
    for (int i = 0; i < r->nframes; i++)
        free(r->payload[i]);
    r->nframes = 0;
}

/* Drains one chunk into r. Returns the last parser_next result (0 or error). */
static int feed(wp_frame_parser *p, const uint8_t *chunk, size_t len, parsed *r)
{
    const uint8_t *in = chunk;
    size_t n = len;
    for (;;) {
        wp_frame f;
        int rc = wp_frame_parser_next(p, &in, &n, &f);
        if (rc < 0) {
            r->rc = rc;
            return rc;
        }
        if (rc == 0) {
            if (n != 0)
                printf("  parser returned 0 with %zu bytes left\n", n);
            WP_CHECK_EQ(n, 0);
            return 0;
        }
        WP_CHECK_EQ(rc, 1);
        WP_CHECK_EQ(wp_frame_hdr_check(&f.hdr), 0);
        if (r->nframes >= MAX_FRAMES) {
            WP_CHECK(0);
            return WP_ERR_LIMIT;
        }
        int i = r->nframes++;
        r->hdr[i] = f.hdr;
        r->plen[i] = f.payload_len;
        r->payload[i] = NULL;
        if (f.hdr.type == WP_FRAME_TYPE_DATA) {
            WP_CHECK_EQ(f.payload_len, f.hdr.length);
        } else {
            WP_CHECK_EQ(f.payload_len, 0);
        }
        WP_CHECK((f.payload != NULL) == (f.payload_len > 0));
        if (f.payload_len) {
            r->payload[i] = malloc(f.payload_len);
            memcpy(r->payload[i], f.payload, f.payload_len);
        }
    }
}

static int parsed_eq(const parsed *a, const parsed *b)
{
    if (a->nframes != b->nframes || a->rc != b->rc)
        return 0;
    for (int i = 0; i < a->nframes; i++) {
        if (!hdr_eq(&a->hdr[i], &b->hdr[i]) || a->plen[i] != b->plen[i])
            return 0;
        if (a->plen[i] && memcmp(a->payload[i], b->payload[i], a->plen[i]) != 0)
            return 0;
    }
    return 1;
}

/* A stream of every frame kind, sizes 0 .. max, built with the builders. */
static void build_stream(wp_buf *b)
{
    static uint8_t big[WP_FRAME_MAX_DATA];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7 + 3);
    const char *json = "{\"service\":\"sandbox\",\"host\":\"sess-1\",\"port\":9876}";
    WP_CHECK_EQ(wp_frame_put_open(b, 2, json, strlen(json), "hi", 2, 0), 0);
    WP_CHECK_EQ(wp_frame_put_window_update(b, 2, ACK, 0), 0);
    WP_CHECK_EQ(wp_frame_put_data(b, 2, 0, big, 1), 0);
    WP_CHECK_EQ(wp_frame_put_data(b, 2, 0, big, WP_FRAME_MAX_DATA), 0);
    WP_CHECK_EQ(wp_frame_put_data(b, 4, 0, NULL, 0), 0);
    WP_CHECK_EQ(wp_frame_put_ping(b, SYN, 7), 0);
    WP_CHECK_EQ(wp_frame_put_data(b, 2, 0, big + 100, 4000), 0);
    WP_CHECK_EQ(wp_frame_put_window_update(b, 2, 0, 65536), 0);
    WP_CHECK_EQ(wp_frame_put_ping(b, ACK, 7), 0);
    WP_CHECK_EQ(wp_frame_put_data(b, 6, FIN, big + 1, WP_FRAME_MAX_DATA - 1), 0);
    WP_CHECK_EQ(wp_frame_put_window_update(b, 8, RST, 0), 0);
    WP_CHECK_EQ(wp_frame_put_data(b, 2, FIN, NULL, 0), 0);
    WP_CHECK_EQ(wp_frame_put_window_update(b, 2, FIN, 0), 0);
    WP_CHECK_EQ(wp_frame_put_goaway(b, WP_GOAWAY_NORMAL), 0);
}

#define STREAM_FRAMES 14

WP_TEST(parser_every_split_identical)
{
    wp_buf b;
    wp_buf_init(&b, 1 << 20);
    build_stream(&b);
    const uint8_t *s = wp_buf_ptr(&b);
    size_t len = wp_buf_len(&b);
    static wp_frame_parser p; /* static: large */

    parsed ref = {0};
    wp_frame_parser_init(&p);
    WP_CHECK_EQ(feed(&p, s, len, &ref), 0);
    WP_CHECK_EQ(ref.nframes, STREAM_FRAMES);
    WP_CHECK_EQ(wp_frame_parser_pending(&p), 0);
    WP_CHECK_EQ(ref.hdr[0].flags, SYN);
    WP_CHECK_EQ(ref.plen[3], WP_FRAME_MAX_DATA);
    WP_CHECK_EQ(ref.hdr[4].length, 0);
    WP_CHECK(ref.payload[4] == NULL);
    WP_CHECK_EQ(ref.hdr[13].type, WP_FRAME_TYPE_GOAWAY);

    /* 1-byte chunks */
    parsed one = {0};
    wp_frame_parser_init(&p);
    for (size_t i = 0; i < len; i++)
        WP_CHECK_EQ(feed(&p, s + i, 1, &one), 0);
    WP_CHECK(parsed_eq(&ref, &one));
    parsed_free(&one);

    /* every split into two chunks */
    int splits_ok = 1;
    for (size_t cut = 0; cut <= len; cut++) {
        parsed two = {0};
        wp_frame_parser_init(&p);
        feed(&p, s, cut, &two);
        feed(&p, s + cut, len - cut, &two);
        if (!parsed_eq(&ref, &two))
            splits_ok = 0;
        parsed_free(&two);
    }
    WP_CHECK(splits_ok);

    /* random chunkings, including empty chunks */
    for (int iter = 0; iter < 300; iter++) {
        parsed rnd = {0};
        wp_frame_parser_init(&p);
        size_t at = 0;
        while (at < len) {
            size_t max = (iter & 1) ? 40 : 20000;
            size_t c = rng() % (max + 1);
            if (c > len - at)
                c = len - at;
            WP_CHECK_EQ(feed(&p, s + at, c, &rnd), 0);
            at += c;
        }
        WP_CHECK(parsed_eq(&ref, &rnd));
        WP_CHECK_EQ(wp_frame_parser_pending(&p), 0);
        parsed_free(&rnd);
    }
    parsed_free(&ref);
    wp_buf_free(&b);
}

WP_TEST(parser_zero_copy_and_internal_copy)
{
    static wp_frame_parser p;
    wp_frame_parser_init(&p);
    wp_buf b;
    wp_buf_init(&b, 1 << 16);
    WP_CHECK_EQ(wp_frame_put_data(&b, 2, 0, "abcdef", 6), 0);
    const uint8_t *s = wp_buf_ptr(&b);
    const uint8_t *in = s;
    size_t n = wp_buf_len(&b);
    wp_frame f;
    WP_CHECK_EQ(wp_frame_parser_next(&p, &in, &n, &f), 1);
    WP_CHECK(f.payload == s + 12); /* whole frame in the chunk: no copy */
    WP_CHECK_EQ(n, 0);
    WP_CHECK(in == s + 18);
    WP_CHECK_EQ(wp_frame_parser_next(&p, &in, &n, &f), 0);

    /* split payload: delivered from the parser's own buffer */
    in = s;
    n = 15;
    WP_CHECK_EQ(wp_frame_parser_next(&p, &in, &n, &f), 0);
    WP_CHECK_EQ(wp_frame_parser_pending(&p), 15);
    in = s + 15;
    n = 3;
    WP_CHECK_EQ(wp_frame_parser_next(&p, &in, &n, &f), 1);
    WP_CHECK(f.payload == p.payload);
    WP_CHECK(memcmp(f.payload, "abcdef", 6) == 0);
    WP_CHECK_EQ(wp_frame_parser_pending(&p), 0);

    /* header split, payload whole in the second chunk: still zero copy */
    in = s;
    n = 5;
    WP_CHECK_EQ(wp_frame_parser_next(&p, &in, &n, &f), 0);
    in = s + 5;
    n = 13;
    WP_CHECK_EQ(wp_frame_parser_next(&p, &in, &n, &f), 1);
    WP_CHECK(f.payload == s + 12);
    wp_buf_free(&b);
}

WP_TEST(parser_truncated_needs_more)
{
    static wp_frame_parser p;
    wp_buf b;
    wp_buf_init(&b, 1 << 16);
    uint8_t payload[1000];
    memset(payload, 0x42, sizeof payload);
    WP_CHECK_EQ(wp_frame_put_data(&b, 10, 0, payload, sizeof payload), 0);
    size_t len = wp_buf_len(&b);
    for (size_t cut = 0; cut < len; cut++) {
        parsed r = {0};
        wp_frame_parser_init(&p);
        WP_CHECK_EQ(feed(&p, wp_buf_ptr(&b), cut, &r), 0);
        WP_CHECK_EQ(r.nframes, 0);
        WP_CHECK_EQ(wp_frame_parser_error(&p), 0);
        WP_CHECK_EQ(wp_frame_parser_pending(&p), cut);
        /* the rest completes it */
        WP_CHECK_EQ(feed(&p, wp_buf_ptr(&b) + cut, len - cut, &r), 0);
        WP_CHECK_EQ(r.nframes, 1);
        WP_CHECK_EQ(r.plen[0], 1000);
        parsed_free(&r);
    }
    wp_buf_free(&b);
}

WP_TEST(parser_trailing_garbage)
{
    static wp_frame_parser p;
    wp_frame_hdr bad;
    wp_buf b;
    wp_buf_init(&b, 1 << 16);
    WP_CHECK_EQ(wp_frame_put_data(&b, 2, 0, "ok", 2), 0);
    WP_CHECK_EQ(wp_frame_put_ping(&b, SYN, 1), 0);
    size_t good = wp_buf_len(&b);
    /* garbage: a Ping on stream 5, then more bytes */
    static const uint8_t junk[] = {0x00, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00,
                                   0x05, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff};
    WP_CHECK_EQ(wp_buf_put(&b, junk, sizeof junk), 0);

    /* the valid part alone parses cleanly */
    {
        parsed r = {0};
        wp_frame_parser_init(&p);
        WP_CHECK_EQ(feed(&p, wp_buf_ptr(&b), good, &r), 0);
        WP_CHECK_EQ(r.nframes, 2);
        WP_CHECK_EQ(wp_frame_parser_pending(&p), 0);
        parsed_free(&r);
    }

    for (int mode = 0; mode < 2; mode++) {
        parsed r = {0};
        wp_frame_parser_init(&p);
        if (mode == 0) {
            WP_CHECK_EQ(feed(&p, wp_buf_ptr(&b), wp_buf_len(&b), &r), WP_ERR_PROTO);
        } else {
            int rc = 0;
            for (size_t i = 0; i < wp_buf_len(&b) && rc == 0; i++)
                rc = feed(&p, wp_buf_ptr(&b) + i, 1, &r);
            WP_CHECK_EQ(rc, WP_ERR_PROTO);
        }
        /* both valid frames came out before the error */
        WP_CHECK_EQ(r.nframes, 2);
        WP_CHECK_EQ(r.hdr[0].type, WP_FRAME_TYPE_DATA);
        WP_CHECK_EQ(r.hdr[1].type, WP_FRAME_TYPE_PING);
        WP_CHECK_EQ(wp_frame_parser_bad_hdr(&p, &bad), 1);
        WP_CHECK_EQ(bad.type, WP_FRAME_TYPE_PING);
        WP_CHECK_EQ(bad.stream_id, 5);
        parsed_free(&r);
    }

    /* sticky: a valid frame afterwards is not parsed and nothing is consumed */
    uint8_t ping[12];
    wp_frame_hdr ph = {0, WP_FRAME_TYPE_PING, SYN, 0, 9};
    wp_frame_hdr_encode(&ph, ping);
    const uint8_t *in = ping;
    size_t n = sizeof ping;
    wp_frame f;
    WP_CHECK_EQ(wp_frame_parser_next(&p, &in, &n, &f), WP_ERR_PROTO);
    WP_CHECK_EQ(n, sizeof ping);
    WP_CHECK(in == ping);
    WP_CHECK_EQ(wp_frame_parser_error(&p), WP_ERR_PROTO);
    /* init clears the error */
    wp_frame_parser_init(&p);
    WP_CHECK_EQ(wp_frame_parser_error(&p), 0);
    WP_CHECK_EQ(wp_frame_parser_next(&p, &in, &n, &f), 1);
    WP_CHECK_EQ(f.hdr.length, 9);

    /* garbage shorter than a header that is still a valid prefix: need more, no error */
    parsed r = {0};
    wp_frame_parser_init(&p);
    static const uint8_t prefix[] = {0x00, 0x01, 0x00, 0x02, 0x00};
    wp_buf_reset(&b);
    WP_CHECK_EQ(wp_frame_put_goaway(&b, 0), 0);
    WP_CHECK_EQ(wp_buf_put(&b, prefix, sizeof prefix), 0);
    WP_CHECK_EQ(feed(&p, wp_buf_ptr(&b), wp_buf_len(&b), &r), 0);
    WP_CHECK_EQ(r.nframes, 1);
    WP_CHECK_EQ(wp_frame_parser_pending(&p), sizeof prefix);
    WP_CHECK_EQ(wp_frame_parser_error(&p), 0);

    /* garbage whose first byte is already wrong fails at once, without a full header */
    static const uint8_t bad1[] = {0x07};
    WP_CHECK_EQ(feed(&p, bad1, 0, &r), 0);
    wp_frame_parser_init(&p);
    WP_CHECK_EQ(feed(&p, bad1, 1, &r), WP_ERR_PROTO);
    WP_CHECK_EQ(wp_frame_parser_bad_hdr(&p, &bad), 0);
    parsed_free(&r);
    wp_buf_free(&b);
}

WP_TEST(parser_oversized_data_not_buffered)
{
    static wp_frame_parser p;
    wp_frame_parser_init(&p);
    /* Data header announcing 16385 bytes, followed by 20000 bytes */
    size_t total = 12 + 20000;
    uint8_t *s = calloc(1, total);
    WP_CHECK(s != NULL);
    if (!s)
        return;
    wp_frame_hdr h = {0, WP_FRAME_TYPE_DATA, 0, 2, WP_FRAME_MAX_DATA + 1};
    wp_frame_hdr_encode(&h, s);
    const uint8_t *in = s;
    size_t n = total;
    wp_frame f;
    WP_CHECK_EQ(wp_frame_parser_next(&p, &in, &n, &f), WP_ERR_PROTO);
    WP_CHECK_EQ(n, 20000); /* only the header was consumed */
    WP_CHECK(in == s + 12);
    WP_CHECK_EQ(p.payload_have, 0);
    wp_frame_hdr bad;
    WP_CHECK_EQ(wp_frame_parser_bad_hdr(&p, &bad), 1);
    WP_CHECK(bad.length == WP_FRAME_MAX_DATA + 1);

    /* 4 GiB announced: same */
    wp_frame_parser_init(&p);
    h.length = 0xffffffffu;
    wp_frame_hdr_encode(&h, s);
    in = s;
    n = total;
    WP_CHECK_EQ(wp_frame_parser_next(&p, &in, &n, &f), WP_ERR_PROTO);
    WP_CHECK_EQ(n, 20000);

    /* exactly the maximum is fine and needs the whole payload */
    wp_frame_parser_init(&p);
    h.length = WP_FRAME_MAX_DATA;
    wp_frame_hdr_encode(&h, s);
    in = s;
    n = 12 + WP_FRAME_MAX_DATA - 1;
    WP_CHECK_EQ(wp_frame_parser_next(&p, &in, &n, &f), 0);
    WP_CHECK_EQ(wp_frame_parser_pending(&p), WP_FRAME_MAX_LEN - 1);
    n = 1;
    WP_CHECK_EQ(wp_frame_parser_next(&p, &in, &n, &f), 1);
    WP_CHECK_EQ(f.payload_len, WP_FRAME_MAX_DATA);
    free(s);
}

WP_TEST(parser_bad_args)
{
    static wp_frame_parser p;
    wp_frame_parser_init(&p);
    const uint8_t *in = NULL;
    size_t n = 0;
    wp_frame f;
    WP_CHECK_EQ(wp_frame_parser_next(&p, &in, &n, &f), 0); /* empty chunk */
    n = 3;
    WP_CHECK_EQ(wp_frame_parser_next(&p, &in, &n, &f), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_parser_next(NULL, &in, &n, &f), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_parser_next(&p, NULL, &n, &f), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_parser_next(&p, &in, NULL, &f), WP_ERR_INVAL);
    uint8_t x = 0;
    in = &x;
    WP_CHECK_EQ(wp_frame_parser_next(&p, &in, &n, NULL), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_parser_error(&p), 0); /* INVAL is not sticky */
}

/* Hostile input: random bytes in random chunks. Every frame yielded is valid,
 * the parser never holds more than one maximal frame, and 1-byte feeding
 * yields the same frames as one big chunk. */
WP_TEST(parser_hostile_random)
{
    static wp_frame_parser p;
    static uint8_t s[4096];
    static const uint8_t valid_flags[4][2] = {{0, FIN}, {ACK, RST}, {SYN, ACK}, {0, 0}};
    long frames = 0, errors = 0;
    for (int iter = 0; iter < 3000; iter++) {
        /* A chain of plausible frames laid end to end (flags, ids, lengths and
         * payloads random within the valid sets). Odd runs are noisy: some
         * flags random, some header bytes corrupted, a random tail. Even runs
         * are clean and must parse completely. */
        int noisy = iter & 1;
        size_t len = rng() % sizeof s;
        for (size_t i = 0; i < len; i++)
            s[i] = (uint8_t)rng();
        size_t end = 0;
        int written = 0;
        for (size_t i = 0; i + 12 <= len;) {
            uint8_t type = (uint8_t)(rng() % 4);
            uint8_t dlen = (uint8_t)(rng() % 40);
            uint8_t flags = valid_flags[type][rng() & 1];
            if (noisy && rng() % 16 == 0)
                flags = (uint8_t)(rng() % 16);
            if (type == WP_FRAME_TYPE_DATA && dlen < 3 && (flags & SYN))
                dlen = 3;
            if (i + 12 + (type == WP_FRAME_TYPE_DATA ? dlen : 0) > len)
                break;
            s[i] = 0;
            s[i + 1] = type;
            s[i + 2] = 0;
            s[i + 3] = flags;
            s[i + 4] = s[i + 5] = s[i + 6] = 0;
            s[i + 7] = type >= WP_FRAME_TYPE_PING ? 0 : (uint8_t)(2 + 2 * (rng() % 127));
            s[i + 8] = s[i + 9] = s[i + 10] = 0;
            s[i + 11] = flags == RST ? 0 : dlen;
            if (noisy && rng() % 32 == 0)
                s[i + rng() % 12] = (uint8_t)rng();
            i += 12 + (type == WP_FRAME_TYPE_DATA ? dlen : 0);
            end = i;
            written++;
        }
        if (!noisy)
            len = end;
        parsed all = {0}, bytes = {0};
        wp_frame_parser_init(&p);
        int rc_all = feed(&p, s, len, &all);
        WP_CHECK(wp_frame_parser_pending(&p) <= WP_FRAME_MAX_LEN);
        if (!noisy) {
            WP_CHECK_EQ(rc_all, 0);
            WP_CHECK_EQ(all.nframes, written);
            WP_CHECK_EQ(wp_frame_parser_pending(&p), 0);
        }
        wp_frame_parser_init(&p);
        int rc_bytes = 0;
        for (size_t i = 0; i < len && rc_bytes == 0; i++) {
            rc_bytes = feed(&p, s + i, 1, &bytes);
            WP_CHECK(wp_frame_parser_pending(&p) <= WP_FRAME_MAX_LEN);
        }
        WP_CHECK_EQ(rc_all, rc_bytes);
        WP_CHECK(parsed_eq(&all, &bytes));
        frames += all.nframes;
        errors += rc_all < 0;
        parsed_free(&all);
        parsed_free(&bytes);
    }
    /* the generator exercises both outcomes, and many frames */
    if (frames <= 30000 || errors <= 300)
        printf("  frames %ld errors %ld\n", frames, errors);
    WP_CHECK(frames > 30000);
    WP_CHECK(errors > 300);
}

/* ---- preamble ---- */

WP_TEST(preamble_roundtrip_and_edges)
{
    wp_buf b;
    wp_buf_init(&b, 4096);
    char json[WP_PREAMBLE_MAX + 1];
    memset(json, 'x', sizeof json);

    WP_CHECK_EQ(wp_frame_preamble_encode(json, 1, &b), 0);
    WP_CHECK_EQ(wp_buf_len(&b), 3);
    WP_CHECK_EQ(wp_buf_ptr(&b)[0], 0);
    WP_CHECK_EQ(wp_buf_ptr(&b)[1], 1);
    wp_buf_reset(&b);
    WP_CHECK_EQ(wp_frame_preamble_encode(json, WP_PREAMBLE_MAX, &b), 0);
    WP_CHECK_EQ(wp_buf_len(&b), 2 + WP_PREAMBLE_MAX);
    WP_CHECK_EQ(wp_buf_ptr(&b)[0], 0x04);
    WP_CHECK_EQ(wp_buf_ptr(&b)[1], 0x00);
    WP_CHECK_EQ(wp_buf_put(&b, "tail", 4), 0);
    size_t off = 99, jl = 99, used = 99;
    WP_CHECK_EQ(wp_frame_preamble_decode(wp_buf_ptr(&b), wp_buf_len(&b), &off, &jl, &used), 0);
    WP_CHECK_EQ(off, 2);
    WP_CHECK_EQ(jl, WP_PREAMBLE_MAX);
    WP_CHECK_EQ(used, 2 + WP_PREAMBLE_MAX);
    WP_CHECK(memcmp(wp_buf_ptr(&b) + used, "tail", 4) == 0);

    /* truncated: every prefix of a valid preamble is NEED_MORE, outputs untouched */
    for (size_t n = 0; n < 2 + WP_PREAMBLE_MAX; n++) {
        off = jl = used = 77;
        WP_CHECK_EQ(wp_frame_preamble_decode(wp_buf_ptr(&b), n, &off, &jl, &used),
                    WP_ERR_NEED_MORE);
        WP_CHECK(off == 77 && jl == 77 && used == 77);
    }

    /* encode refusals: nothing appended */
    size_t before = wp_buf_len(&b);
    WP_CHECK_EQ(wp_frame_preamble_encode(json, 0, &b), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_preamble_encode(json, WP_PREAMBLE_MAX + 1, &b), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_preamble_encode(NULL, 5, &b), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_preamble_encode(json, 5, NULL), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_buf_len(&b), before);
    wp_buf small;
    wp_buf_init(&small, 10);
    WP_CHECK_EQ(wp_frame_preamble_encode(json, 9, &small), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_buf_len(&small), 0);
    WP_CHECK_EQ(wp_frame_preamble_encode(json, 8, &small), 0);
    WP_CHECK_EQ(wp_buf_len(&small), 10);
    wp_buf_free(&small);

    /* decode refusals: length 0 or > max judged from the 2-byte prefix alone */
    static const uint8_t zero[] = {0x00, 0x00, '{', '}'};
    static const uint8_t over[] = {0x04, 0x01};
    static const uint8_t huge[] = {0xff, 0xff, '{'};
    WP_CHECK_EQ(wp_frame_preamble_decode(zero, sizeof zero, &off, &jl, &used), WP_ERR_PROTO);
    WP_CHECK_EQ(wp_frame_preamble_decode(over, sizeof over, &off, &jl, &used), WP_ERR_PROTO);
    WP_CHECK_EQ(wp_frame_preamble_decode(huge, sizeof huge, &off, &jl, &used), WP_ERR_PROTO);
    WP_CHECK_EQ(wp_frame_preamble_decode(huge, 1, &off, &jl, &used), WP_ERR_NEED_MORE);
    /* announced 5, only 4 present */
    static const uint8_t short5[] = {0x00, 0x05, '{', '"', 'a', '"'};
    WP_CHECK_EQ(wp_frame_preamble_decode(short5, sizeof short5, &off, &jl, &used),
                WP_ERR_NEED_MORE);
    WP_CHECK_EQ(wp_frame_preamble_decode(NULL, 0, &off, &jl, &used), WP_ERR_NEED_MORE);
    WP_CHECK_EQ(wp_frame_preamble_decode(NULL, 4, &off, &jl, &used), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_preamble_decode(zero, 4, NULL, &jl, &used), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_preamble_decode(zero, 4, &off, NULL, &used), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_preamble_decode(zero, 4, &off, &jl, NULL), WP_ERR_INVAL);
    wp_buf_free(&b);
}

/* ---- builders ---- */

WP_TEST(builders_refuse_invalid_frames)
{
    wp_buf b;
    wp_buf_init(&b, 1 << 16);
    uint8_t big[WP_FRAME_MAX_DATA + 1];
    memset(big, 1, sizeof big);
    const char *json = "{\"service\":\"wolf\"}";

    /* Data */
    WP_CHECK_EQ(wp_frame_put_data(&b, 2, ACK, "x", 1), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_put_data(&b, 2, RST, "x", 1), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_put_data(&b, 2, 0x10, "x", 1), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_put_data(&b, 2, SYN, "xx", 2), WP_ERR_INVAL); /* no room for preamble */
    WP_CHECK_EQ(wp_frame_put_data(&b, 0, 0, "x", 1), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_put_data(&b, 3, 0, "x", 1), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_put_data(&b, 2, 0, big, WP_FRAME_MAX_DATA + 1), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_put_data(&b, 2, 0, NULL, 1), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_put_data(NULL, 2, 0, "x", 1), WP_ERR_INVAL);
    /* WindowUpdate */
    WP_CHECK_EQ(wp_frame_put_window_update(&b, 2, SYN, 0), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_put_window_update(&b, 2, RST, 1), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_put_window_update(&b, 2, RST | FIN, 0), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_put_window_update(&b, 2, 0, WP_STREAM_WINDOW_LIMIT + 1), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_put_window_update(&b, 0, 0, 1), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_put_window_update(&b, 5, ACK, 0), WP_ERR_INVAL);
    /* Ping */
    WP_CHECK_EQ(wp_frame_put_ping(&b, 0, 1), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_put_ping(&b, SYN | ACK, 1), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_put_ping(&b, FIN, 1), WP_ERR_INVAL);
    /* open */
    WP_CHECK_EQ(wp_frame_put_open(&b, 2, json, 0, NULL, 0, 0), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_put_open(&b, 2, NULL, 5, NULL, 0, 0), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_put_open(&b, 2, (const char *)big, WP_PREAMBLE_MAX + 1, NULL, 0, 0),
                WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_put_open(&b, 1, json, strlen(json), NULL, 0, 0), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_put_open(&b, 2, json, strlen(json), NULL, 3, 0), WP_ERR_INVAL);
    size_t room = WP_FRAME_MAX_DATA - 2 - WP_PREAMBLE_MAX;
    WP_CHECK_EQ(wp_frame_put_open(&b, 2, (const char *)big, WP_PREAMBLE_MAX, big, room + 1, 0),
                WP_ERR_INVAL);
    WP_CHECK_EQ(wp_frame_put_open(&b, 2, json, strlen(json), big, SIZE_MAX, 0), WP_ERR_INVAL);
    /* nothing was appended by any refusal */
    WP_CHECK_EQ(wp_buf_len(&b), 0);

    /* the largest open frame fits exactly */
    WP_CHECK_EQ(wp_frame_put_open(&b, 2, (const char *)big, WP_PREAMBLE_MAX, big, room, 1), 0);
    WP_CHECK_EQ(wp_buf_len(&b), WP_FRAME_MAX_LEN);
    wp_frame_hdr h;
    WP_CHECK_EQ(wp_frame_hdr_decode(wp_buf_ptr(&b), wp_buf_len(&b), &h), 0);
    WP_CHECK_EQ(h.length, WP_FRAME_MAX_DATA);
    WP_CHECK_EQ(h.flags, SYN | FIN);
    wp_buf_free(&b);
}

WP_TEST(builders_limit_is_atomic)
{
    wp_buf b;
    wp_buf_init(&b, 30);
    WP_CHECK_EQ(wp_frame_put_data(&b, 2, 0, "0123456789", 10), 0); /* 22 bytes */
    WP_CHECK_EQ(wp_frame_put_data(&b, 2, 0, "xyz", 3), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_frame_put_window_update(&b, 2, 0, 5), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_frame_put_ping(&b, SYN, 5), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_frame_put_goaway(&b, 0), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_frame_put_open(&b, 2, "{}", 2, NULL, 0, 0), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_buf_len(&b), 22);
    wp_buf_consume(&b, 22);
    WP_CHECK_EQ(wp_frame_put_ping(&b, SYN, 5), 0);
    WP_CHECK_EQ(wp_frame_put_goaway(&b, 0), 0);
    WP_CHECK_EQ(wp_buf_len(&b), 24);
    WP_CHECK_EQ(wp_frame_put_window_update(&b, 2, 0, 5), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_buf_len(&b), 24);
    wp_buf_free(&b);
}

/* Every header the builders accept decodes to the same fields. */
WP_TEST(builders_roundtrip_all_valid)
{
    wp_buf b;
    wp_buf_init(&b, 1 << 16);
    static const uint16_t dflags[] = {0, FIN};
    static const uint16_t wflags[] = {0, ACK, FIN, ACK | FIN, RST};
    static const uint32_t ids[] = {2, 4, 0x7ffffffe, 0xfffffffeu};
    static const uint32_t deltas[] = {0, 1, WP_WINDOW_UPDATE_THRESHOLD, WP_STREAM_INITIAL_WINDOW};
    static const size_t lens[] = {0, 1, 1000, WP_FRAME_MAX_DATA};
    static uint8_t data[WP_FRAME_MAX_DATA];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)i;
    for (size_t i = 0; i < 4; i++) {
        for (size_t f = 0; f < 2; f++) {
            for (size_t l = 0; l < 4; l++) {
                wp_buf_reset(&b);
                WP_CHECK_EQ(wp_frame_put_data(&b, ids[i], dflags[f], data, lens[l]), 0);
                wp_frame_hdr h;
                WP_CHECK_EQ(wp_frame_hdr_decode(wp_buf_ptr(&b), wp_buf_len(&b), &h), 0);
                WP_CHECK(h.stream_id == ids[i] && h.flags == dflags[f] && h.length == lens[l]);
                WP_CHECK_EQ(wp_buf_len(&b), 12 + lens[l]);
                if (lens[l])
                    WP_CHECK(memcmp(wp_buf_ptr(&b) + 12, data, lens[l]) == 0);
            }
        }
        for (size_t f = 0; f < 5; f++) {
            for (size_t d = 0; d < 4; d++) {
                wp_buf_reset(&b);
                int rc = wp_frame_put_window_update(&b, ids[i], wflags[f], deltas[d]);
                int want = (wflags[f] == RST && deltas[d] != 0) ? WP_ERR_INVAL : 0;
                WP_CHECK_EQ(rc, want);
                if (rc == 0) {
                    wp_frame_hdr h;
                    WP_CHECK_EQ(wp_frame_hdr_decode(wp_buf_ptr(&b), wp_buf_len(&b), &h), 0);
                    WP_CHECK(h.type == WP_FRAME_TYPE_WINDOW_UPDATE && h.flags == wflags[f] &&
                             h.stream_id == ids[i] && h.length == deltas[d]);
                }
            }
        }
    }
    wp_buf_free(&b);
}

int main(void)
{
    WP_RUN(golden_data);
    WP_RUN(golden_open);
    WP_RUN(golden_window_update);
    WP_RUN(golden_ping_goaway);
    WP_RUN(every_flag_combination);
    WP_RUN(header_rejections);
    WP_RUN(header_truncated_is_need_more);
    WP_RUN(header_roundtrip_random);
    WP_RUN(type_names);
    WP_RUN(parser_every_split_identical);
    WP_RUN(parser_zero_copy_and_internal_copy);
    WP_RUN(parser_truncated_needs_more);
    WP_RUN(parser_trailing_garbage);
    WP_RUN(parser_oversized_data_not_buffered);
    WP_RUN(parser_bad_args);
    WP_RUN(parser_hostile_random);
    WP_RUN(preamble_roundtrip_and_edges);
    WP_RUN(builders_refuse_invalid_frames);
    WP_RUN(builders_limit_is_atomic);
    WP_RUN(builders_roundtrip_all_valid);
    return wp_test_done();
}
