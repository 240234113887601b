/*
 * test_mux.c — unit tests for the stream multiplexer (common/mux.c).
 *
 * Two muxes (client = wolfpackd side, server = agent side) are wired back to
 * back by pulling from one and feeding the other, with a fake clock. Hostile
 * input is built frame by frame (or byte by byte) and fed to a single mux.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "frame.h"
#include "mux.h"
#include "wp_test.h"

#define MAXS   1100 /* streams tracked per endpoint, indexed by id / 2 */
#define LOGMAX (1u << 18)
#define KiB    1024u
#define MiB    (1024u * 1024u)

static const char PRE[] = "{\"service\":\"wolf\"}";
#define PRE_LEN (sizeof PRE - 1)

typedef struct tstream {
    uint8_t *rx;
    size_t rx_len, rx_cap;
    int opened, acked, fin, closed, reason, writable, refused, refused_why;
    int no_consume; /* auto_consume skips this stream */
    int data_cbs;
    void *sud_seen;
} tstream;

typedef struct tend {
    wp_mux *m;
    tstream *s;
    int auto_accept, auto_consume, echo;
    int consume_at; /* auto_consume with wp_mux_consumed_at(now) */
    uint64_t now;
    int writable_cbs, goaways, errors, deads;
    uint32_t goaway_code;
    int last_err;
    char reason[256];
    char preamble[WP_PREAMBLE_MAX + 1];
    size_t preamble_len;
    /* re-entrancy hooks */
    int reset_in_open, reset_in_data, reset_in_ack, free_in_error, free_in_data, goaway_in_data;
    int nested_feed_rc;
    uint32_t reset_other; /* reset this stream id from on_stream_closed */
    char *log;
    size_t log_len;
} tend;

static tstream *ts(tend *e, uint32_t id)
{
    return &e->s[(id / 2) % MAXS];
}

static void tlog(tend *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void tlog(tend *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (e->log_len < LOGMAX - 256) {
        int n = vsnprintf(e->log + e->log_len, LOGMAX - e->log_len, fmt, ap);
        if (n > 0)
            e->log_len += (size_t)n;
    }
    va_end(ap);
}

static void rx_append(tstream *t, const uint8_t *p, size_t n)
{
    if (t->rx_len + n > t->rx_cap) {
        size_t cap = t->rx_cap ? t->rx_cap : 4096;
        while (cap < t->rx_len + n)
            cap *= 2;
        t->rx = realloc(t->rx, cap);
        t->rx_cap = cap;
    }
    memcpy(t->rx + t->rx_len, p, n);
    t->rx_len += n;
}

/* ---- callbacks ---- */

static void cb_writable(wp_mux *m, void *ud)
{
    (void)m;
    ((tend *)ud)->writable_cbs++;
}

static void cb_open(wp_mux *m, void *ud, uint32_t id, const char *p, size_t n)
{
    tend *e = ud;
    tstream *t = ts(e, id);
    t->opened++;
    memcpy(e->preamble, p, n);
    e->preamble[n] = 0;
    e->preamble_len = n;
    tlog(e, "open %u %.*s\n", id, (int)n, p);
    if (e->reset_in_open)
        WP_CHECK_EQ(wp_mux_reset(m, id), 0);
    else if (e->auto_accept)
        WP_CHECK_EQ(wp_mux_accept(m, id, t), 0);
}

static void cb_refused(wp_mux *m, void *ud, uint32_t id, int why)
{
    (void)m;
    tend *e = ud;
    ts(e, id)->refused++;
    ts(e, id)->refused_why = why;
    tlog(e, "refused %u %d\n", id, why);
}

static void cb_ack(wp_mux *m, void *ud, uint32_t id, void *sud)
{
    tend *e = ud;
    tstream *t = ts(e, id);
    t->acked++;
    t->sud_seen = sud;
    tlog(e, "ack %u\n", id);
    if (e->reset_in_ack)
        WP_CHECK_EQ(wp_mux_reset(m, id), 0);
}

static void cb_data(wp_mux *m, void *ud, uint32_t id, void *sud, const uint8_t *p, size_t n)
{
    tend *e = ud;
    tstream *t = ts(e, id);
    (void)sud;
    t->data_cbs++;
    rx_append(t, p, n);
    tlog(e, "data %u %zu\n", id, n);
    if (e->nested_feed_rc == 1)
        e->nested_feed_rc = wp_mux_feed(m, p, n, 0);
    if (e->reset_in_data) {
        WP_CHECK_EQ(wp_mux_reset(m, id), 0);
        /* the stream is gone at once, even from inside its own callback */
        WP_CHECK_EQ(wp_mux_write(m, id, "x", 1), WP_ERR_NOT_FOUND);
        return;
    }
    if (e->goaway_in_data) {
        WP_CHECK_EQ(wp_mux_goaway(m, WP_GOAWAY_NORMAL), 0);
        return;
    }
    if (e->free_in_data) {
        wp_mux_free(m);
        e->m = NULL;
        /* deferred: calls now fail cleanly */
        WP_CHECK_EQ(wp_mux_write(m, id, "x", 1), WP_ERR_CLOSED);
        return;
    }
    if (e->echo)
        WP_CHECK_EQ(wp_mux_write(m, id, p, n), (int)n);
    if (e->auto_consume && !t->no_consume)
        WP_CHECK_EQ(
            e->consume_at ? wp_mux_consumed_at(m, id, n, e->now) : wp_mux_consumed(m, id, n), 0);
}

static void cb_fin(wp_mux *m, void *ud, uint32_t id, void *sud)
{
    (void)m;
    (void)sud;
    tend *e = ud;
    ts(e, id)->fin++;
    tlog(e, "fin %u\n", id);
}

static void cb_swritable(wp_mux *m, void *ud, uint32_t id, void *sud)
{
    (void)m;
    (void)sud;
    tend *e = ud;
    ts(e, id)->writable++;
    tlog(e, "writable %u\n", id);
}

static void cb_closed(wp_mux *m, void *ud, uint32_t id, void *sud, int reason)
{
    tend *e = ud;
    tstream *t = ts(e, id);
    t->closed++;
    t->reason = reason;
    t->sud_seen = sud;
    tlog(e, "closed %u %s\n", id, wp_mux_close_reason_name(reason));
    if (e->reset_other) {
        /* every stream is already gone during a session end */
        WP_CHECK(wp_mux_reset(m, e->reset_other) < 0);
        e->reset_other = 0;
    }
}

static void cb_goaway(wp_mux *m, void *ud, uint32_t code)
{
    (void)m;
    tend *e = ud;
    e->goaways++;
    e->goaway_code = code;
    tlog(e, "goaway %u\n", code);
}

static void cb_error(wp_mux *m, void *ud, int err, const char *reason)
{
    tend *e = ud;
    e->errors++;
    e->last_err = err;
    snprintf(e->reason, sizeof e->reason, "%s", reason);
    tlog(e, "error %d\n", err);
    if (e->free_in_error) {
        wp_mux_free(m);
        e->m = NULL;
    }
}

static void cb_dead(wp_mux *m, void *ud)
{
    (void)m;
    ((tend *)ud)->deads++;
}

static const wp_mux_callbacks CBS = {
    .on_writable = cb_writable,
    .on_stream_open = cb_open,
    .on_stream_refused = cb_refused,
    .on_stream_ack = cb_ack,
    .on_stream_data = cb_data,
    .on_stream_fin = cb_fin,
    .on_stream_writable = cb_swritable,
    .on_stream_closed = cb_closed,
    .on_goaway = cb_goaway,
    .on_error = cb_error,
    .on_dead = cb_dead,
};

static tend *tend_new(wp_mux_role role, const wp_mux_config *cfg)
{
    tend *e = calloc(1, sizeof *e);
    e->s = calloc(MAXS, sizeof *e->s);
    e->log = calloc(1, LOGMAX);
    e->m = wp_mux_new(role, cfg, &CBS, e);
    WP_CHECK(e->m != NULL);
    if (role == WP_MUX_SERVER) {
        e->auto_accept = 1;
        e->auto_consume = 1;
    }
    return e;
}

static void tend_free(tend *e)
{
    wp_mux_free(e->m);
    for (size_t i = 0; i < MAXS; i++)
        free(e->s[i].rx);
    free(e->s);
    free(e->log);
    free(e);
}

static int feed_split(tend *e, const uint8_t *p, size_t n, size_t split, uint64_t now)
{
    if (!split)
        return wp_mux_feed(e->m, p, n, now);
    int rc = 0;
    for (size_t off = 0; off < n && rc == 0 && e->m; off += split)
        rc = wp_mux_feed(e->m, p + off, n - off < split ? n - off : split, now);
    return rc;
}

/*
 * Moves bytes both ways, `chunk` bytes per pull, feeding `split` bytes at a
 * time (0: whole), until neither side has anything to send. Returns the
 * bytes moved.
 */
static size_t pump_split(tend *a, tend *b, size_t chunk, size_t split, uint64_t now)
{
    wp_buf out;
    wp_buf_init(&out, 4 * MiB);
    size_t moved = 0;
    for (int round = 0; round < 1000000; round++) {
        int any = 0;
        for (int dir = 0; dir < 2; dir++) {
            tend *src = dir ? b : a, *dst = dir ? a : b;
            if (!src->m || !dst->m)
                continue;
            wp_buf_reset(&out);
            int n = wp_mux_pull(src->m, &out, chunk);
            WP_CHECK(n >= 0);
            if (n > 0) {
                any = 1;
                moved += (size_t)n;
                (void)feed_split(dst, wp_buf_ptr(&out), (size_t)n, split, now);
            }
        }
        if (!any)
            break;
    }
    wp_buf_free(&out);
    return moved;
}

static size_t pump(tend *a, tend *b, uint64_t now)
{
    return pump_split(a, b, 64 * KiB, 0, now);
}

/* Parses a pulled byte string into frame headers; returns how many (max cap). */
static size_t parse_frames(const uint8_t *p, size_t n, wp_frame_hdr *hs, size_t cap)
{
    wp_frame_parser *ps = malloc(sizeof *ps);
    wp_frame_parser_init(ps);
    size_t k = 0;
    wp_frame f;
    while (k < cap && wp_frame_parser_next(ps, &p, &n, &f) == 1)
        hs[k++] = f.hdr;
    WP_CHECK_EQ(wp_frame_parser_pending(ps), 0);
    free(ps);
    return k;
}

static uint8_t pat(size_t i)
{
    return (uint8_t)((i * 131u) ^ (i >> 9));
}

/* The stream received exactly the text str. */
static int rx_is(const tstream *t, const char *str)
{
    size_t n = strlen(str);
    return t->rx && t->rx_len == n && memcmp(t->rx, str, n) == 0;
}

static int check_pattern(const uint8_t *p, size_t n)
{
    if (!p)
        return n == 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] != pat(i))
            return 0;
    return 1;
}

static uint8_t *make_pattern(size_t n)
{
    uint8_t *b = malloc(n);
    for (size_t i = 0; i < n; i++)
        b[i] = pat(i);
    return b;
}

static uint32_t open_stream(tend *c, void *sud)
{
    uint32_t id = 0;
    WP_CHECK_EQ(wp_mux_open(c->m, PRE, PRE_LEN, sud, &id), 0);
    return id;
}

/* ---- basic lifecycle ---- */

WP_TEST(open_accept_data_fin)
{
    tend *c = tend_new(WP_MUX_CLIENT, NULL), *s = tend_new(WP_MUX_SERVER, NULL);
    int marker;
    uint32_t id = open_stream(c, &marker);
    WP_CHECK_EQ(id, WP_STREAM_ID_FIRST);
    WP_CHECK_EQ(wp_mux_pending_count(c->m), 1);
    WP_CHECK_EQ(wp_mux_stream_count(c->m), 1);
    WP_CHECK(wp_mux_stream_ud(c->m, id) == &marker);
    WP_CHECK_EQ(wp_mux_write(c->m, id, "hello", 5), 5);
    pump(c, s, 1000);
    WP_CHECK_EQ(ts(s, id)->opened, 1);
    WP_CHECK_STR(s->preamble, PRE);
    WP_CHECK_EQ(ts(s, id)->rx_len, 5);
    WP_CHECK(rx_is(ts(s, id), "hello"));
    WP_CHECK_EQ(ts(c, id)->acked, 1);
    WP_CHECK(ts(c, id)->sud_seen == &marker);
    WP_CHECK_EQ(wp_mux_pending_count(c->m), 0);
    WP_CHECK_EQ(wp_mux_pending_count(s->m), 0);

    WP_CHECK_EQ(wp_mux_write(s->m, id, "world", 5), 5);
    pump(c, s, 1000);
    WP_CHECK_EQ(ts(c, id)->rx_len, 5);
    WP_CHECK(rx_is(ts(c, id), "world"));
    WP_CHECK_EQ(wp_mux_consumed(c->m, id, 5), 0);

    /* half-close client -> server; the other direction keeps flowing */
    WP_CHECK_EQ(wp_mux_close_write(c->m, id), 0);
    WP_CHECK_EQ(wp_mux_close_write(c->m, id), 0); /* idempotent */
    WP_CHECK_EQ(wp_mux_write(c->m, id, "x", 1), WP_ERR_STATE);
    pump(c, s, 1000);
    WP_CHECK_EQ(ts(s, id)->fin, 1);
    WP_CHECK_EQ(wp_mux_stream_count(s->m), 1);
    WP_CHECK_EQ(wp_mux_stream_count(c->m), 1);
    WP_CHECK_EQ(wp_mux_write(s->m, id, "bye", 3), 3);
    pump(c, s, 1000);
    WP_CHECK_EQ(ts(c, id)->rx_len, 8);
    WP_CHECK(rx_is(ts(c, id), "worldbye"));
    WP_CHECK_EQ(ts(c, id)->closed, 0);
    WP_CHECK_EQ(wp_mux_close_write(s->m, id), 0);
    pump(c, s, 1000);
    WP_CHECK_EQ(ts(c, id)->fin, 1);
    WP_CHECK_EQ(ts(c, id)->closed, 1);
    WP_CHECK_EQ(ts(c, id)->reason, WP_MUX_CLOSE_DONE);
    WP_CHECK(ts(c, id)->sud_seen == &marker);
    WP_CHECK_EQ(ts(s, id)->closed, 1);
    WP_CHECK_EQ(ts(s, id)->reason, WP_MUX_CLOSE_DONE);
    WP_CHECK_EQ(wp_mux_stream_count(c->m), 0);
    WP_CHECK_EQ(wp_mux_stream_count(s->m), 0);
    WP_CHECK_EQ(wp_mux_buffered_bytes(c->m), 0);
    WP_CHECK_EQ(wp_mux_buffered_bytes(s->m), 0);
    WP_CHECK_EQ(wp_mux_write(c->m, id, "x", 1), WP_ERR_NOT_FOUND);
    WP_CHECK_EQ(wp_mux_consumed(c->m, id, 0), WP_ERR_NOT_FOUND);
    /* ids are never reused */
    WP_CHECK_EQ(open_stream(c, NULL), id + 2);
    WP_CHECK_EQ(wp_mux_error(c->m), 0);
    WP_CHECK_EQ(wp_mux_error(s->m), 0);
    WP_CHECK_EQ(s->errors + c->errors, 0);
    tend_free(c);
    tend_free(s);
}

WP_TEST(syn_carries_data_and_fin)
{
    tend *c = tend_new(WP_MUX_CLIENT, NULL), *s = tend_new(WP_MUX_SERVER, NULL);
    s->auto_accept = 0;
    s->auto_consume = 0;
    uint32_t id = open_stream(c, NULL);
    uint8_t *d = make_pattern(100);
    WP_CHECK_EQ(wp_mux_write(c->m, id, d, 100), 100);
    WP_CHECK_EQ(wp_mux_close_write(c->m, id), 0);
    wp_buf out;
    wp_buf_init(&out, MiB);
    int n = wp_mux_pull(c->m, &out, MiB);
    wp_frame_hdr h[4];
    WP_CHECK_EQ(parse_frames(wp_buf_ptr(&out), (size_t)n, h, 4), 1);
    WP_CHECK_EQ(h[0].type, WP_FRAME_TYPE_DATA);
    WP_CHECK_EQ(h[0].flags, WP_FRAME_FLAG_SYN | WP_FRAME_FLAG_FIN);
    WP_CHECK_EQ(h[0].length, 2 + PRE_LEN + 100);
    WP_CHECK_EQ(wp_mux_feed(s->m, wp_buf_ptr(&out), (size_t)n, 0), 0);
    /* delivered before the accept, with no stream ud yet */
    WP_CHECK_EQ(ts(s, id)->opened, 1);
    WP_CHECK_EQ(ts(s, id)->rx_len, 100);
    WP_CHECK(check_pattern(ts(s, id)->rx, 100));
    WP_CHECK_EQ(ts(s, id)->fin, 1);
    WP_CHECK_EQ(wp_mux_pending_count(s->m), 1);
    WP_CHECK_EQ(wp_mux_write(s->m, id, "x", 1), WP_ERR_STATE);
    WP_CHECK_EQ(wp_mux_close_write(s->m, id), WP_ERR_STATE);
    WP_CHECK_EQ(wp_mux_write_room(s->m, id), 0);
    /* preamble bytes count as consumed at once; the rest once consumed() */
    wp_mux_stream_stats st;
    WP_CHECK_EQ(wp_mux_stream_stats_get(s->m, id, &st), 0);
    WP_CHECK_EQ(st.recv_window, WP_STREAM_INITIAL_WINDOW - (2 + PRE_LEN + 100));
    WP_CHECK_EQ(st.credit_pending, 2 + PRE_LEN);
    WP_CHECK_EQ(st.unconsumed, 100);
    WP_CHECK_EQ(st.pending, 1);
    WP_CHECK_EQ(st.remote_fin, 1);
    WP_CHECK_EQ(wp_mux_consumed(s->m, id, 100), 0); /* written to the local socket */
    WP_CHECK_EQ(wp_mux_buffered_bytes(s->m), 0);
    WP_CHECK_EQ(wp_mux_accept(s->m, id, ts(s, id)), 0);
    WP_CHECK_EQ(wp_mux_accept(s->m, id, NULL), WP_ERR_STATE);
    WP_CHECK(wp_mux_stream_ud(s->m, id) == ts(s, id));
    WP_CHECK_EQ(wp_mux_write(s->m, id, "reply", 5), 5);
    WP_CHECK_EQ(wp_mux_close_write(s->m, id), 0);
    wp_buf_reset(&out);
    n = wp_mux_pull(s->m, &out, MiB);
    WP_CHECK_EQ(parse_frames(wp_buf_ptr(&out), (size_t)n, h, 4), 2);
    WP_CHECK_EQ(h[0].type, WP_FRAME_TYPE_WINDOW_UPDATE);
    WP_CHECK_EQ(h[0].flags, WP_FRAME_FLAG_ACK);
    WP_CHECK_EQ(h[0].length, 0);
    WP_CHECK_EQ(h[1].type, WP_FRAME_TYPE_DATA);
    WP_CHECK_EQ(h[1].flags, WP_FRAME_FLAG_FIN);
    WP_CHECK_EQ(h[1].length, 5);
    WP_CHECK_EQ(ts(s, id)->closed, 1); /* FIN both ways once ours was pulled */
    WP_CHECK_EQ(wp_mux_feed(c->m, wp_buf_ptr(&out), (size_t)n, 0), 0);
    WP_CHECK_EQ(ts(c, id)->acked, 1);
    WP_CHECK_EQ(ts(c, id)->closed, 1);
    WP_CHECK_EQ(ts(c, id)->reason, WP_MUX_CLOSE_DONE);
    WP_CHECK_EQ(wp_mux_stream_count(c->m) + wp_mux_stream_count(s->m), 0);
    wp_buf_free(&out);
    free(d);
    tend_free(c);
    tend_free(s);
}

WP_TEST(refuse_and_rst_race)
{
    tend *c = tend_new(WP_MUX_CLIENT, NULL), *s = tend_new(WP_MUX_SERVER, NULL);
    s->reset_in_open = 1;
    uint32_t id = open_stream(c, NULL);
    WP_CHECK_EQ(wp_mux_write(c->m, id, "abc", 3), 3);
    pump(c, s, 0);
    WP_CHECK_EQ(ts(s, id)->opened, 1);
    WP_CHECK_EQ(ts(s, id)->data_cbs, 0); /* reset inside on_stream_open: no more callbacks */
    WP_CHECK_EQ(ts(s, id)->closed, 0);   /* owner-initiated: no callback */
    WP_CHECK_EQ(ts(c, id)->acked, 0);
    WP_CHECK_EQ(ts(c, id)->closed, 1);
    WP_CHECK_EQ(ts(c, id)->reason, WP_MUX_CLOSE_RESET);
    WP_CHECK_EQ(wp_mux_pending_count(c->m), 0);

    /* RST race: the client resets while the server's data is in flight */
    s->reset_in_open = 0;
    uint32_t id2 = open_stream(c, NULL);
    pump(c, s, 0);
    WP_CHECK_EQ(ts(c, id2)->acked, 1);
    WP_CHECK_EQ(wp_mux_write(s->m, id2, "late data", 9), 9);
    wp_buf out;
    wp_buf_init(&out, MiB);
    int n = wp_mux_pull(s->m, &out, MiB);
    WP_CHECK(n > 0);
    WP_CHECK_EQ(wp_mux_reset(c->m, id2), 0);
    WP_CHECK_EQ(wp_mux_reset(c->m, id2), WP_ERR_NOT_FOUND);
    WP_CHECK_EQ(wp_mux_feed(c->m, wp_buf_ptr(&out), (size_t)n, 0), 0); /* ignored */
    WP_CHECK_EQ(ts(c, id2)->data_cbs, 0);
    WP_CHECK_EQ(ts(c, id2)->closed, 0);
    pump(c, s, 0);
    WP_CHECK_EQ(ts(s, id2)->closed, 1);
    WP_CHECK_EQ(ts(s, id2)->reason, WP_MUX_CLOSE_RESET);
    WP_CHECK_EQ(wp_mux_error(c->m), 0);
    WP_CHECK_EQ(wp_mux_error(s->m), 0);

    /* a reset before the SYN left sends nothing at all */
    uint32_t id3 = open_stream(c, NULL);
    WP_CHECK_EQ(wp_mux_reset(c->m, id3), 0);
    wp_buf_reset(&out);
    WP_CHECK_EQ(wp_mux_pull(c->m, &out, MiB), 0);
    WP_CHECK_EQ(wp_mux_stream_count(c->m) + wp_mux_stream_count(s->m), 0);
    wp_buf_free(&out);
    tend_free(c);
    tend_free(s);
}

/* ---- flow control ---- */

WP_TEST(transfer_1mib_credit_only_after_consumed)
{
    tend *c = tend_new(WP_MUX_CLIENT, NULL), *s = tend_new(WP_MUX_SERVER, NULL);
    s->auto_consume = 0;
    const size_t total = MiB, chunk = 1500;
    uint8_t *d = make_pattern(total);
    uint32_t id = open_stream(c, NULL);
    size_t off = 0;
    int w = wp_mux_write(c->m, id, d, total);
    WP_CHECK_EQ(w, WP_STREAM_INITIAL_WINDOW - 2 - PRE_LEN); /* window less the preamble */
    off += (size_t)w;
    WP_CHECK_EQ(wp_mux_write(c->m, id, d + off, total - off), 0);
    pump_split(c, s, chunk, 0, 0);
    tstream *t = ts(s, id);
    WP_CHECK_EQ(t->rx_len, off);
    wp_mux_stream_stats st;
    WP_CHECK_EQ(wp_mux_stream_stats_get(c->m, id, &st), 0);
    WP_CHECK_EQ(st.send_window, 0);
    WP_CHECK_EQ(st.queued, 0);
    WP_CHECK_EQ(wp_mux_write(c->m, id, d + off, total - off), 0);
    WP_CHECK_EQ(wp_mux_write_room(c->m, id), 0);
    /* nothing was credited on receipt */
    WP_CHECK_EQ(wp_mux_stream_stats_get(s->m, id, &st), 0);
    WP_CHECK_EQ(st.recv_window, 0);
    WP_CHECK_EQ(st.unconsumed, off);
    WP_CHECK_EQ(wp_mux_buffered_bytes(s->m), off);
    /* consuming just under the threshold (the preamble counts) sends nothing */
    size_t cons = WP_WINDOW_UPDATE_THRESHOLD - (2 + PRE_LEN) - 1;
    WP_CHECK_EQ(wp_mux_consumed(s->m, id, cons), 0);
    WP_CHECK_EQ(wp_mux_want_pull(s->m), 0);
    pump_split(c, s, chunk, 0, 0);
    WP_CHECK_EQ(wp_mux_stream_stats_get(c->m, id, &st), 0);
    WP_CHECK_EQ(st.send_window, 0);
    /* one more byte: exactly one WindowUpdate of half the window */
    WP_CHECK_EQ(wp_mux_consumed(s->m, id, 1), 0);
    cons++;
    wp_buf out;
    wp_buf_init(&out, MiB);
    int n = wp_mux_pull(s->m, &out, MiB);
    wp_frame_hdr h[4];
    WP_CHECK_EQ(parse_frames(wp_buf_ptr(&out), (size_t)n, h, 4), 1);
    WP_CHECK_EQ(h[0].type, WP_FRAME_TYPE_WINDOW_UPDATE);
    WP_CHECK_EQ(h[0].flags, 0);
    WP_CHECK_EQ(h[0].length, WP_WINDOW_UPDATE_THRESHOLD);
    WP_CHECK_EQ(wp_mux_feed(c->m, wp_buf_ptr(&out), (size_t)n, 0), 0);
    WP_CHECK_EQ(wp_mux_stream_stats_get(c->m, id, &st), 0);
    WP_CHECK_EQ(st.send_window, WP_WINDOW_UPDATE_THRESHOLD);
    WP_CHECK_EQ(ts(c, id)->writable, 1);
    /* the rest, in small pulls, consuming everything as it arrives */
    int guard = 0;
    while ((off < total || t->rx_len < total) && guard++ < 100000) {
        if (off < total) {
            w = wp_mux_write(c->m, id, d + off, total - off);
            WP_CHECK(w >= 0);
            off += (size_t)(w > 0 ? w : 0);
        }
        pump_split(c, s, chunk, 0, 0);
        if (t->rx_len > cons) {
            WP_CHECK_EQ(wp_mux_consumed(s->m, id, t->rx_len - cons), 0);
            cons = t->rx_len;
        }
        WP_CHECK_EQ(wp_mux_stream_stats_get(s->m, id, &st), 0);
        WP_CHECK(st.recv_window + st.unconsumed + st.credit_pending == WP_STREAM_INITIAL_WINDOW);
    }
    WP_CHECK_EQ(t->rx_len, total);
    WP_CHECK(check_pattern(t->rx, total));
    WP_CHECK(ts(c, id)->writable > 1);
    WP_CHECK_EQ(wp_mux_close_write(c->m, id), 0);
    pump_split(c, s, chunk, 0, 0);
    WP_CHECK_EQ(t->fin, 1);
    WP_CHECK_EQ(s->errors + c->errors, 0);
    wp_buf_free(&out);
    free(d);
    tend_free(c);
    tend_free(s);
}

WP_TEST(window_exhaustion_writable_once)
{
    wp_mux_config cfg;
    wp_mux_config_default(&cfg);
    cfg.initial_window = 8 * KiB;
    cfg.max_data = 2 * KiB;
    tend *c = tend_new(WP_MUX_CLIENT, &cfg), *s = tend_new(WP_MUX_SERVER, &cfg);
    s->auto_consume = 0;
    uint32_t id = open_stream(c, NULL);
    pump(c, s, 0);
    uint8_t *d = make_pattern(64 * KiB);
    int w = wp_mux_write(c->m, id, d, 64 * KiB);
    WP_CHECK_EQ(w, 8 * KiB - 2 - PRE_LEN);
    WP_CHECK_EQ(wp_mux_write(c->m, id, d, 10), 0);
    WP_CHECK_EQ(wp_mux_write(c->m, id, d, 10), 0);
    pump(c, s, 0);
    WP_CHECK_EQ(ts(s, id)->rx_len, (size_t)w);
    WP_CHECK_EQ(ts(c, id)->writable, 0);
    /* frames respect max_data */
    WP_CHECK_EQ(ts(s, id)->data_cbs, 4);
    WP_CHECK_EQ(wp_mux_consumed(s->m, id, (size_t)w), 0);
    pump(c, s, 0);
    WP_CHECK_EQ(ts(c, id)->writable, 1);
    WP_CHECK_EQ(wp_mux_write_room(c->m, id), 8 * KiB);
    WP_CHECK_EQ(wp_mux_consumed(s->m, id, 1), WP_ERR_INVAL); /* more than delivered */
    free(d);
    tend_free(c);
    tend_free(s);
}

WP_TEST(slow_stream_does_not_block_another)
{
    tend *c = tend_new(WP_MUX_CLIENT, NULL), *s = tend_new(WP_MUX_SERVER, NULL);
    const size_t total = MiB;
    uint8_t *d = make_pattern(total);
    uint32_t slow = open_stream(c, NULL), fast = open_stream(c, NULL);
    ts(s, slow)->no_consume = 1;
    size_t slow_off = 0, off = 0;
    int guard = 0;
    while ((off < total || ts(s, fast)->rx_len < total) && guard++ < 10000) {
        int w = wp_mux_write(c->m, slow, d, total - slow_off);
        WP_CHECK(w >= 0);
        slow_off += (size_t)(w > 0 ? w : 0);
        w = wp_mux_write(c->m, fast, d + off, total - off);
        WP_CHECK(w >= 0);
        off += (size_t)(w > 0 ? w : 0);
        pump_split(c, s, 4096, 0, 0);
    }
    WP_CHECK_EQ(ts(s, fast)->rx_len, total);
    WP_CHECK(check_pattern(ts(s, fast)->rx, total));
    WP_CHECK_EQ(ts(s, slow)->rx_len, WP_STREAM_INITIAL_WINDOW - 2 - PRE_LEN);
    wp_mux_stream_stats st;
    WP_CHECK_EQ(wp_mux_stream_stats_get(c->m, slow, &st), 0);
    WP_CHECK_EQ(st.send_window, 0);
    WP_CHECK_EQ(wp_mux_buffered_bytes(s->m), WP_STREAM_INITIAL_WINDOW - 2 - PRE_LEN);
    free(d);
    tend_free(c);
    tend_free(s);
}

WP_TEST(round_robin_fairness)
{
    tend *c = tend_new(WP_MUX_CLIENT, NULL), *s = tend_new(WP_MUX_SERVER, NULL);
    uint32_t a = open_stream(c, NULL), b = open_stream(c, NULL), e3 = open_stream(c, NULL);
    pump(c, s, 0);
    uint8_t *d = make_pattern(64 * KiB);
    WP_CHECK_EQ(wp_mux_write(c->m, a, d, 64 * KiB), 64 * KiB);
    WP_CHECK_EQ(wp_mux_write(c->m, b, d, 64 * KiB), 64 * KiB);
    WP_CHECK_EQ(wp_mux_write(c->m, e3, d, 20 * KiB), 20 * KiB);
    wp_buf out;
    wp_buf_init(&out, 4 * MiB);
    int n = wp_mux_pull(c->m, &out, 4 * MiB);
    WP_CHECK_EQ(n, 148 * KiB + 10 * WP_FRAME_HDR_LEN);
    wp_frame_hdr h[16];
    size_t k = parse_frames(wp_buf_ptr(&out), (size_t)n, h, 16);
    WP_CHECK_EQ(k, 10);
    uint32_t want[10] = {a, b, e3, a, b, e3, a, b, a, b};
    uint32_t lens[10] = {16 * KiB, 16 * KiB, 16 * KiB, 16 * KiB, 16 * KiB,
                         4 * KiB,  16 * KiB, 16 * KiB, 16 * KiB, 16 * KiB};
    for (size_t i = 0; i < k; i++) {
        WP_CHECK_EQ(h[i].stream_id, want[i]);
        WP_CHECK_EQ(h[i].length, lens[i]);
    }
    WP_CHECK_EQ(wp_mux_want_pull(c->m), 0);
    wp_buf_free(&out);
    free(d);
    tend_free(c);
    tend_free(s);
}

WP_TEST(control_frames_precede_data)
{
    tend *c = tend_new(WP_MUX_CLIENT, NULL), *s = tend_new(WP_MUX_SERVER, NULL);
    uint32_t a = open_stream(c, NULL), b = open_stream(c, NULL);
    pump(c, s, 0);
    uint8_t *d = make_pattern(200 * KiB);
    /* server: receives 200 KiB (credit due) and queues data of its own */
    WP_CHECK_EQ(wp_mux_write(c->m, a, d, 200 * KiB), 200 * KiB);
    wp_buf out;
    wp_buf_init(&out, 4 * MiB);
    int n = wp_mux_pull(c->m, &out, 4 * MiB);
    WP_CHECK_EQ(wp_mux_write(s->m, a, d, 100 * KiB), 100 * KiB);
    WP_CHECK_EQ(wp_mux_feed(s->m, wp_buf_ptr(&out), (size_t)n, 0), 0);
    WP_CHECK_EQ(wp_mux_ping(s->m, 0), 0);
    WP_CHECK_EQ(wp_mux_ping(s->m, 0), WP_ERR_BUSY);
    WP_CHECK_EQ(wp_mux_reset(s->m, b), 0);
    wp_buf_reset(&out);
    n = wp_mux_pull(s->m, &out, 4 * MiB);
    wp_frame_hdr h[16];
    size_t k = parse_frames(wp_buf_ptr(&out), (size_t)n, h, 16);
    WP_CHECK(k >= 4);
    WP_CHECK_EQ(h[0].type, WP_FRAME_TYPE_WINDOW_UPDATE); /* credit (queued first) */
    WP_CHECK_EQ(h[0].stream_id, a);
    WP_CHECK_EQ(h[0].length, 200 * KiB + 2 + PRE_LEN);
    WP_CHECK_EQ(h[1].type, WP_FRAME_TYPE_PING);
    WP_CHECK_EQ(h[1].flags, WP_FRAME_FLAG_SYN);
    WP_CHECK_EQ(h[2].type, WP_FRAME_TYPE_WINDOW_UPDATE);
    WP_CHECK_EQ(h[2].flags, WP_FRAME_FLAG_RST);
    WP_CHECK_EQ(h[2].stream_id, b);
    for (size_t i = 3; i < k; i++)
        WP_CHECK_EQ(h[i].type, WP_FRAME_TYPE_DATA);
    /* a pull too small for the next control frame sends nothing, not data */
    WP_CHECK_EQ(wp_mux_ping(c->m, 0), 0);
    WP_CHECK_EQ(wp_mux_write(c->m, a, d, 10), 10);
    wp_buf_reset(&out);
    WP_CHECK_EQ(wp_mux_pull(c->m, &out, WP_FRAME_HDR_LEN - 1), 0);
    WP_CHECK_EQ(wp_mux_pull(c->m, &out, WP_FRAME_HDR_LEN + 5), WP_FRAME_HDR_LEN);
    WP_CHECK_EQ(wp_mux_pull(c->m, &out, WP_FRAME_HDR_LEN + 5), WP_FRAME_HDR_LEN + 5);
    WP_CHECK_EQ(wp_mux_pull(c->m, &out, WP_FRAME_HDR_LEN + 5), WP_FRAME_HDR_LEN + 5);
    WP_CHECK_EQ(wp_mux_want_pull(c->m), 0);
    wp_buf_free(&out);
    free(d);
    tend_free(c);
    tend_free(s);
}

/* ---- budgets ---- */

WP_TEST(budget_streams_and_syns_client)
{
    wp_mux_config cfg;
    wp_mux_config_default(&cfg);
    cfg.max_streams = 4;
    cfg.max_pending_syn = 2;
    tend *c = tend_new(WP_MUX_CLIENT, &cfg), *s = tend_new(WP_MUX_SERVER, NULL);
    uint32_t id;
    WP_CHECK_EQ(wp_mux_open(c->m, PRE, PRE_LEN, NULL, &id), 0);
    WP_CHECK_EQ(wp_mux_open(c->m, PRE, PRE_LEN, NULL, &id), 0);
    WP_CHECK_EQ(wp_mux_open(c->m, PRE, PRE_LEN, NULL, &id), WP_ERR_BUSY);
    WP_CHECK_EQ(wp_mux_stream_count(c->m), 2);
    pump(c, s, 0);
    WP_CHECK_EQ(wp_mux_pending_count(c->m), 0);
    WP_CHECK_EQ(wp_mux_open(c->m, PRE, PRE_LEN, NULL, &id), 0);
    WP_CHECK_EQ(wp_mux_open(c->m, PRE, PRE_LEN, NULL, &id), 0);
    pump(c, s, 0);
    WP_CHECK_EQ(wp_mux_open(c->m, PRE, PRE_LEN, NULL, &id), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_mux_stream_count(c->m), 4);
    WP_CHECK_EQ(wp_mux_stream_count(s->m), 4);
    WP_CHECK_EQ(wp_mux_reset(c->m, id), 0);
    WP_CHECK_EQ(wp_mux_open(c->m, PRE, PRE_LEN, NULL, &id), 0);
    WP_CHECK_EQ(id, 10); /* a refused open used no id */
    tend_free(c);
    tend_free(s);
}

WP_TEST(budget_refusals_server)
{
    wp_mux_config cfg;
    wp_mux_config_default(&cfg);
    cfg.max_streams = 2;
    tend *c = tend_new(WP_MUX_CLIENT, NULL), *s = tend_new(WP_MUX_SERVER, &cfg);
    uint32_t a = open_stream(c, NULL), b = open_stream(c, NULL), x = open_stream(c, NULL);
    pump(c, s, 0);
    WP_CHECK_EQ(ts(c, a)->acked + ts(c, b)->acked, 2);
    WP_CHECK_EQ(ts(s, x)->opened, 0);
    WP_CHECK_EQ(ts(s, x)->refused, 1);
    WP_CHECK_EQ(ts(s, x)->refused_why, WP_ERR_BUSY);
    WP_CHECK_EQ(ts(c, x)->closed, 1);
    WP_CHECK_EQ(ts(c, x)->reason, WP_MUX_CLOSE_RESET);
    WP_CHECK_EQ(wp_mux_stream_count(s->m), 2);
    tend_free(c);
    tend_free(s);

    /* un-accepted SYNs */
    wp_mux_config_default(&cfg);
    cfg.max_pending_syn = 1;
    c = tend_new(WP_MUX_CLIENT, NULL);
    s = tend_new(WP_MUX_SERVER, &cfg);
    s->auto_accept = 0;
    a = open_stream(c, NULL);
    b = open_stream(c, NULL);
    pump(c, s, 0);
    WP_CHECK_EQ(ts(s, a)->opened, 1);
    WP_CHECK_EQ(ts(s, b)->refused_why, WP_ERR_BUSY);
    WP_CHECK_EQ(wp_mux_pending_count(s->m), 1);
    WP_CHECK_EQ(wp_mux_accept(s->m, a, NULL), 0);
    x = open_stream(c, NULL);
    pump(c, s, 0);
    WP_CHECK_EQ(ts(s, x)->opened, 1);
    tend_free(c);
    tend_free(s);

    /* buffered bytes: undelivered inbound data refuses new streams */
    wp_mux_config_default(&cfg);
    cfg.max_buffered = 1000;
    c = tend_new(WP_MUX_CLIENT, NULL);
    s = tend_new(WP_MUX_SERVER, &cfg);
    s->auto_consume = 0;
    a = open_stream(c, NULL);
    uint8_t *d = make_pattern(2000);
    WP_CHECK_EQ(wp_mux_write(c->m, a, d, 2000), 2000);
    pump(c, s, 0);
    WP_CHECK_EQ(wp_mux_buffered_bytes(s->m), 2000);
    b = open_stream(c, NULL);
    pump(c, s, 0);
    WP_CHECK_EQ(ts(s, b)->refused_why, WP_ERR_BUSY);
    WP_CHECK_EQ(wp_mux_consumed(s->m, a, 2000), 0);
    x = open_stream(c, NULL);
    pump(c, s, 0);
    WP_CHECK_EQ(ts(s, x)->opened, 1);
    free(d);
    tend_free(c);
    tend_free(s);
}

WP_TEST(budget_tunnel_bytes_client)
{
    wp_mux_config cfg;
    wp_mux_config_default(&cfg);
    cfg.max_buffered = 100000;
    tend *c = tend_new(WP_MUX_CLIENT, &cfg), *s = tend_new(WP_MUX_SERVER, NULL);
    uint32_t a = open_stream(c, NULL), b;
    uint8_t *d = make_pattern(200000);
    WP_CHECK_EQ(wp_mux_write(c->m, a, d, 200000), 100000);
    WP_CHECK_EQ(wp_mux_buffered_bytes(c->m), 100000);
    WP_CHECK_EQ(wp_mux_open(c->m, PRE, PRE_LEN, NULL, &b), WP_ERR_BUSY);
    WP_CHECK_EQ(wp_mux_stream_count(c->m), 1);
    WP_CHECK_EQ(ts(c, a)->writable, 0);
    pump(c, s, 0); /* pulling frees the budget: the blocked writer is woken */
    WP_CHECK_EQ(ts(c, a)->writable, 1);
    WP_CHECK_EQ(wp_mux_buffered_bytes(c->m), 0);
    WP_CHECK_EQ(wp_mux_write(c->m, a, d + 100000, 100000), 100000);
    WP_CHECK_EQ(wp_mux_open(c->m, PRE, PRE_LEN, NULL, &b), WP_ERR_BUSY);
    pump(c, s, 0);
    WP_CHECK_EQ(ts(s, a)->rx_len, 200000);
    WP_CHECK(check_pattern(ts(s, a)->rx, 200000));
    WP_CHECK_EQ(wp_mux_open(c->m, PRE, PRE_LEN, NULL, &b), 0);
    free(d);
    tend_free(c);
    tend_free(s);
}

/* ---- protocol violations ---- */

static void put_raw_hdr(wp_buf *b, uint8_t ver, uint8_t type, uint16_t flags, uint32_t id,
                        uint32_t len)
{
    uint8_t h[WP_FRAME_HDR_LEN];
    wp_frame_hdr hd = {ver, type, flags, id, len};
    wp_frame_hdr_encode(&hd, h);
    WP_CHECK_EQ(wp_buf_put(b, h, sizeof h), 0);
}

static void put_syn(wp_buf *b, uint32_t id, size_t extra, int fin)
{
    static uint8_t zero[WP_FRAME_MAX_DATA];
    WP_CHECK_EQ(wp_frame_put_open(b, id, PRE, PRE_LEN, zero, extra, fin), 0);
}

/* Feeds b (whole, then checks stickiness) and expects GoAway `code` with error err. */
static void expect_goaway(tend *e, wp_buf *b, int err, uint32_t code, const char *reason_part)
{
    int rc = wp_mux_feed(e->m, wp_buf_ptr(b), wp_buf_len(b), 5);
    WP_CHECK_EQ(rc, err);
    WP_CHECK_EQ(e->errors, 1);
    WP_CHECK_EQ(e->last_err, err);
    WP_CHECK_EQ(wp_mux_error(e->m), err);
    if (reason_part && !strstr(e->reason, reason_part)) {
        WP_CHECK(0);
        printf("  reason was: %s\n", e->reason);
    }
    WP_CHECK_STR(wp_mux_error_reason(e->m), e->reason);
    WP_CHECK_EQ(wp_mux_stream_count(e->m), 0);
    wp_buf out;
    wp_buf_init(&out, MiB);
    WP_CHECK_EQ(wp_mux_pull(e->m, &out, MiB), WP_FRAME_HDR_LEN);
    wp_frame_hdr h;
    WP_CHECK_EQ(parse_frames(wp_buf_ptr(&out), wp_buf_len(&out), &h, 1), 1);
    WP_CHECK_EQ(h.type, WP_FRAME_TYPE_GOAWAY);
    WP_CHECK_EQ(h.length, code);
    WP_CHECK_EQ(wp_mux_pull(e->m, &out, MiB), 0);
    WP_CHECK_EQ(wp_mux_want_pull(e->m), 0);
    /* sticky: refuses further input and new streams */
    WP_CHECK_EQ(wp_mux_feed(e->m, wp_buf_ptr(b), wp_buf_len(b), 6), err);
    WP_CHECK_EQ(wp_mux_tick(e->m, 7), err);
    WP_CHECK_EQ(e->errors, 1);
    uint32_t id;
    WP_CHECK(wp_mux_open(e->m, PRE, PRE_LEN, NULL, &id) < 0);
    WP_CHECK_EQ(wp_mux_write(e->m, 2, "x", 1), WP_ERR_CLOSED);
    WP_CHECK_EQ(wp_mux_next_deadline(e->m), UINT64_MAX);
    wp_buf_free(&out);
}

/* Builds a fresh endpoint of `role`, runs `build` into a buffer, expects GoAway 1. */
#define VIOLATION(role_, reason_, ...)                                                             \
    do {                                                                                           \
        tend *ve_ = tend_new(role_, NULL);                                                         \
        wp_buf vb_;                                                                                \
        wp_buf_init(&vb_, 4 * MiB);                                                                \
        __VA_ARGS__;                                                                               \
        expect_goaway(ve_, &vb_, WP_ERR_PROTO, WP_GOAWAY_PROTO_ERROR, reason_);                    \
        wp_buf_free(&vb_);                                                                         \
        tend_free(ve_);                                                                            \
    } while (0)

WP_TEST(violations_goaway_proto_error)
{
    static uint8_t zero[WP_FRAME_MAX_DATA];
    /* window overrun: SYN + data beyond 256 KiB without credit */
    VIOLATION(WP_MUX_SERVER, "overrun", {
        put_syn(&vb_, 2, 1000, 0);
        for (int i = 0; i < 16; i++)
            WP_CHECK_EQ(wp_frame_put_data(&vb_, 2, 0, zero, WP_FRAME_MAX_DATA), 0);
    });
    /* Data / WindowUpdate on a stream never opened */
    VIOLATION(WP_MUX_SERVER, "never opened",
              WP_CHECK_EQ(wp_frame_put_data(&vb_, 2, 0, "abc", 3), 0));
    VIOLATION(WP_MUX_SERVER, "never opened", {
        put_syn(&vb_, 2, 0, 0);
        WP_CHECK_EQ(wp_frame_put_window_update(&vb_, 4, 0, 10), 0);
    });
    VIOLATION(WP_MUX_CLIENT, "never opened",
              WP_CHECK_EQ(wp_frame_put_window_update(&vb_, 2, WP_FRAME_FLAG_ACK, 0), 0));
    /* SYN received by the opening side */
    VIOLATION(WP_MUX_CLIENT, "opening side", put_syn(&vb_, 2, 0, 0));
    /* duplicate SYN, and a reused (lower) id */
    VIOLATION(WP_MUX_SERVER, "duplicate", {
        put_syn(&vb_, 2, 0, 0);
        put_syn(&vb_, 2, 0, 0);
    });
    VIOLATION(WP_MUX_SERVER, "reuses", {
        put_syn(&vb_, 4, 0, 0);
        put_syn(&vb_, 2, 0, 0);
    });
    /* odd stream id (the agent never opens), bad version, unknown type, garbage */
    VIOLATION(WP_MUX_SERVER, "invalid frame header", {
        put_raw_hdr(&vb_, 0, WP_FRAME_TYPE_DATA, WP_FRAME_FLAG_SYN, 3, 3);
        WP_CHECK_EQ(wp_buf_put(&vb_, "\0\1x", 3), 0);
    });
    VIOLATION(WP_MUX_SERVER, "invalid frame header",
              put_raw_hdr(&vb_, 1, WP_FRAME_TYPE_PING, WP_FRAME_FLAG_SYN, 0, 1));
    VIOLATION(WP_MUX_CLIENT, "invalid frame header", put_raw_hdr(&vb_, 0, 9, 0, 0, 0));
    VIOLATION(WP_MUX_SERVER, "invalid frame header",
              WP_CHECK_EQ(wp_buf_put_str(&vb_, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 0));
    /* oversized Data announced in the header */
    VIOLATION(WP_MUX_SERVER, "invalid frame header",
              put_raw_hdr(&vb_, 0, WP_FRAME_TYPE_DATA, 0, 2, WP_FRAME_MAX_DATA + 1));
    /* ACK at the accepting side; second ACK at the opener */
    VIOLATION(WP_MUX_SERVER, "accepting side", {
        put_syn(&vb_, 2, 0, 0);
        WP_CHECK_EQ(wp_frame_put_window_update(&vb_, 2, WP_FRAME_FLAG_ACK, 0), 0);
    });
    /* Data after FIN, second FIN */
    VIOLATION(WP_MUX_SERVER, "after FIN", {
        put_syn(&vb_, 2, 0, 1);
        WP_CHECK_EQ(wp_frame_put_data(&vb_, 2, 0, "a", 1), 0);
    });
    VIOLATION(WP_MUX_SERVER, "second FIN", {
        put_syn(&vb_, 2, 0, 1);
        WP_CHECK_EQ(wp_frame_put_window_update(&vb_, 2, WP_FRAME_FLAG_FIN, 0), 0);
    });
    /* WindowUpdate above the window this end accepts (announced stream_window_max, §7.1);
     * the server's window is full at open */
    VIOLATION(WP_MUX_SERVER, "above", {
        put_syn(&vb_, 2, 0, 0);
        WP_CHECK_EQ(wp_frame_put_window_update(&vb_, 2, 0,
                                               WP_STREAM_WINDOW_MAX - WP_STREAM_INITIAL_WINDOW + 1),
                    0);
    });
}

/* Client-side violations need an opened stream first. */
WP_TEST(violations_client_side)
{
    const struct {
        const char *reason;
        int kind;
    } cases[] = {{"second ACK", 0}, {"before its ACK", 1}, {"above", 2}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tend *c = tend_new(WP_MUX_CLIENT, NULL);
        uint32_t id = open_stream(c, NULL);
        wp_buf b;
        wp_buf_init(&b, MiB);
        WP_CHECK(wp_mux_pull(c->m, &b, MiB) > 0);
        wp_buf_reset(&b);
        if (cases[i].kind == 0) {
            WP_CHECK_EQ(wp_frame_put_window_update(&b, id, WP_FRAME_FLAG_ACK, 0), 0);
            WP_CHECK_EQ(wp_frame_put_window_update(&b, id, WP_FRAME_FLAG_ACK, 0), 0);
        } else if (cases[i].kind == 1) {
            WP_CHECK_EQ(wp_frame_put_data(&b, id, 0, "early", 5), 0);
        } else {
            /* the SYN used 2 + PRE_LEN of the window: more credit than that (and the growth
             * this end accepts) overflows */
            WP_CHECK_EQ(wp_frame_put_window_update(&b, id, WP_FRAME_FLAG_ACK, 2 + PRE_LEN), 0);
            WP_CHECK_EQ(wp_frame_put_window_update(
                            &b, id, 0, WP_STREAM_WINDOW_MAX - WP_STREAM_INITIAL_WINDOW + 1),
                        0);
        }
        expect_goaway(c, &b, WP_ERR_PROTO, WP_GOAWAY_PROTO_ERROR, cases[i].reason);
        WP_CHECK_EQ(ts(c, id)->closed, 1);
        WP_CHECK_EQ(ts(c, id)->reason, WP_MUX_CLOSE_SESSION);
        wp_buf_free(&b);
        tend_free(c);
    }
}

WP_TEST(violation_overrun_closes_streams)
{
    static uint8_t zero[WP_FRAME_MAX_DATA];
    tend *s = tend_new(WP_MUX_SERVER, NULL);
    wp_buf b;
    wp_buf_init(&b, 4 * MiB);
    put_syn(&b, 2, 0, 0);
    put_syn(&b, 4, 100, 0);
    size_t sent = 2 + PRE_LEN + 100;
    while (sent + WP_FRAME_MAX_DATA <= WP_STREAM_INITIAL_WINDOW) {
        WP_CHECK_EQ(wp_frame_put_data(&b, 4, 0, zero, WP_FRAME_MAX_DATA), 0);
        sent += WP_FRAME_MAX_DATA;
    }
    /* exactly filling the window is fine */
    WP_CHECK_EQ(wp_frame_put_data(&b, 4, 0, zero, WP_STREAM_INITIAL_WINDOW - sent), 0);
    WP_CHECK_EQ(wp_mux_feed(s->m, wp_buf_ptr(&b), wp_buf_len(&b), 0), 0);
    WP_CHECK_EQ(s->errors, 0);
    wp_buf_reset(&b);
    WP_CHECK_EQ(wp_frame_put_data(&b, 4, 0, "!", 1), 0);
    expect_goaway(s, &b, WP_ERR_PROTO, WP_GOAWAY_PROTO_ERROR, "window overrun on stream 4");
    WP_CHECK_EQ(ts(s, 2)->closed, 1);
    WP_CHECK_EQ(ts(s, 2)->reason, WP_MUX_CLOSE_SESSION);
    WP_CHECK_EQ(ts(s, 4)->closed, 1);
    WP_CHECK_EQ(wp_mux_buffered_bytes(s->m), 0);
    wp_buf_free(&b);
    tend_free(s);
}

WP_TEST(ping_flood_and_tolerated_frames)
{
    wp_mux_config cfg;
    wp_mux_config_default(&cfg);
    cfg.max_ctrl_frames = 8;
    tend *s = tend_new(WP_MUX_SERVER, &cfg);
    wp_buf b;
    wp_buf_init(&b, MiB);
    /* tolerated: a Ping ACK matching nothing, frames for a closed stream */
    WP_CHECK_EQ(wp_frame_put_ping(&b, WP_FRAME_FLAG_ACK, 77), 0);
    put_syn(&b, 2, 0, 0);
    WP_CHECK_EQ(wp_mux_feed(s->m, wp_buf_ptr(&b), wp_buf_len(&b), 0), 0);
    WP_CHECK_EQ(wp_mux_reset(s->m, 2), 0);
    wp_buf_reset(&b);
    WP_CHECK_EQ(wp_frame_put_data(&b, 2, 0, "late", 4), 0);
    WP_CHECK_EQ(wp_frame_put_window_update(&b, 2, 0, 100), 0);
    WP_CHECK_EQ(wp_frame_put_window_update(&b, 2, WP_FRAME_FLAG_RST, 0), 0);
    WP_CHECK_EQ(wp_frame_put_data(&b, 2, WP_FRAME_FLAG_FIN, NULL, 0), 0);
    WP_CHECK_EQ(wp_mux_feed(s->m, wp_buf_ptr(&b), wp_buf_len(&b), 0), 0);
    WP_CHECK_EQ(s->errors, 0);
    WP_CHECK_EQ(ts(s, 2)->data_cbs, 0);
    WP_CHECK_EQ(ts(s, 2)->closed, 0);
    /* pings answered in order while the queue has room; a flood is an error */
    wp_buf_reset(&b);
    for (uint32_t i = 0; i < 6; i++)
        WP_CHECK_EQ(wp_frame_put_ping(&b, WP_FRAME_FLAG_SYN, 100 + i), 0);
    /* queued: the (now moot) ACK WindowUpdate, the RST and 6 Ping ACKs = 8 */
    WP_CHECK_EQ(wp_mux_feed(s->m, wp_buf_ptr(&b), wp_buf_len(&b), 0), 0);
    WP_CHECK_EQ(s->errors, 0);
    wp_buf_reset(&b);
    WP_CHECK_EQ(wp_frame_put_ping(&b, WP_FRAME_FLAG_SYN, 999), 0);
    expect_goaway(s, &b, WP_ERR_PROTO, WP_GOAWAY_PROTO_ERROR, "flood");
    wp_buf_free(&b);
    tend_free(s);

    /* the same Pings, pulled as they come, are fine */
    s = tend_new(WP_MUX_SERVER, &cfg);
    wp_buf out;
    wp_buf_init(&out, MiB);
    wp_buf_init(&b, MiB);
    for (uint32_t i = 0; i < 100; i++) {
        wp_buf_reset(&b);
        WP_CHECK_EQ(wp_frame_put_ping(&b, WP_FRAME_FLAG_SYN, i), 0);
        WP_CHECK_EQ(wp_mux_feed(s->m, wp_buf_ptr(&b), wp_buf_len(&b), 0), 0);
        wp_buf_reset(&out);
        WP_CHECK_EQ(wp_mux_pull(s->m, &out, MiB), WP_FRAME_HDR_LEN);
        wp_frame_hdr h;
        WP_CHECK_EQ(parse_frames(wp_buf_ptr(&out), wp_buf_len(&out), &h, 1), 1);
        WP_CHECK_EQ(h.type, WP_FRAME_TYPE_PING);
        WP_CHECK_EQ(h.flags, WP_FRAME_FLAG_ACK);
        WP_CHECK_EQ(h.length, i);
    }
    WP_CHECK_EQ(s->errors, 0);
    wp_buf_free(&out);
    wp_buf_free(&b);
    tend_free(s);
}

WP_TEST(malformed_preamble_is_stream_level)
{
    tend *s = tend_new(WP_MUX_SERVER, NULL);
    wp_buf b;
    wp_buf_init(&b, MiB);
    WP_CHECK_EQ(wp_frame_put_data(&b, 2, WP_FRAME_FLAG_SYN, "\0\0x", 3), 0);      /* length 0 */
    WP_CHECK_EQ(wp_frame_put_data(&b, 4, WP_FRAME_FLAG_SYN, "\0\x64{}", 4), 0);   /* past end */
    WP_CHECK_EQ(wp_frame_put_data(&b, 6, WP_FRAME_FLAG_SYN, "\x04\x01{}", 4), 0); /* > 1024 */
    put_syn(&b, 8, 5, 0);
    WP_CHECK_EQ(wp_mux_feed(s->m, wp_buf_ptr(&b), wp_buf_len(&b), 0), 0);
    for (uint32_t id = 2; id <= 6; id += 2) {
        WP_CHECK_EQ(ts(s, id)->refused, 1);
        WP_CHECK_EQ(ts(s, id)->refused_why, WP_ERR_PROTO);
        WP_CHECK_EQ(ts(s, id)->opened, 0);
    }
    WP_CHECK_EQ(ts(s, 8)->opened, 1);
    WP_CHECK_EQ(s->errors, 0);
    wp_buf out;
    wp_buf_init(&out, MiB);
    int n = wp_mux_pull(s->m, &out, MiB);
    wp_frame_hdr h[8];
    WP_CHECK_EQ(parse_frames(wp_buf_ptr(&out), (size_t)n, h, 8), 4);
    for (int i = 0; i < 3; i++) {
        WP_CHECK_EQ(h[i].flags, WP_FRAME_FLAG_RST);
        WP_CHECK_EQ(h[i].stream_id, 2 + 2 * (uint32_t)i);
    }
    WP_CHECK_EQ(h[3].flags, WP_FRAME_FLAG_ACK);
    WP_CHECK_EQ(h[3].stream_id, 8);
    wp_buf_free(&out);
    wp_buf_free(&b);
    tend_free(s);
}

WP_TEST(peer_goaway)
{
    tend *c = tend_new(WP_MUX_CLIENT, NULL), *s = tend_new(WP_MUX_SERVER, NULL);
    uint32_t a = open_stream(c, NULL);
    pump(c, s, 0);
    wp_buf b;
    wp_buf_init(&b, MiB);
    WP_CHECK_EQ(wp_frame_put_goaway(&b, 9), 0);
    WP_CHECK_EQ(wp_frame_put_ping(&b, WP_FRAME_FLAG_SYN, 1), 0); /* after GoAway: ignored */
    WP_CHECK_EQ(wp_mux_feed(c->m, wp_buf_ptr(&b), wp_buf_len(&b), 0), WP_ERR_CLOSED);
    WP_CHECK_EQ(c->goaways, 1);
    WP_CHECK_EQ(c->goaway_code, WP_GOAWAY_INTERNAL_ERROR); /* unknown codes read as 2 */
    WP_CHECK_EQ(ts(c, a)->closed, 1);
    WP_CHECK_EQ(ts(c, a)->reason, WP_MUX_CLOSE_SESSION);
    WP_CHECK_EQ(wp_mux_error(c->m), WP_ERR_CLOSED);
    WP_CHECK(strstr(wp_mux_error_reason(c->m), "GoAway 9") != NULL);
    WP_CHECK_EQ(wp_mux_want_pull(c->m), 0); /* no Ping ACK */
    uint32_t id;
    WP_CHECK_EQ(wp_mux_open(c->m, PRE, PRE_LEN, NULL, &id), WP_ERR_CLOSED);
    WP_CHECK_EQ(wp_mux_feed(c->m, wp_buf_ptr(&b), wp_buf_len(&b), 0), WP_ERR_CLOSED);
    WP_CHECK_EQ(c->goaways, 1);
    WP_CHECK_EQ(wp_mux_goaway(c->m, 0), WP_ERR_CLOSED);
    wp_buf_free(&b);
    tend_free(c);
    tend_free(s);
}

/* ---- liveness ---- */

WP_TEST(ping_rtt_and_dead)
{
    tend *c = tend_new(WP_MUX_CLIENT, NULL), *s = tend_new(WP_MUX_SERVER, NULL);
    WP_CHECK_EQ(wp_mux_next_deadline(c->m), 0); /* clock not started */
    WP_CHECK_EQ(wp_mux_rtt_ms(c->m), -1);
    uint32_t a = open_stream(c, NULL);
    WP_CHECK_EQ(wp_mux_tick(c->m, 1000), 0);
    WP_CHECK_EQ(wp_mux_tick(s->m, 1000), 0);
    pump(c, s, 1000);
    WP_CHECK_EQ(wp_mux_next_deadline(c->m), 1000 + WP_OPEN_ACK_TIMEOUT_MS); /* stale, early */
    WP_CHECK_EQ(wp_mux_tick(c->m, 1000), 0);
    WP_CHECK_EQ(wp_mux_next_deadline(c->m), 1000 + WP_PING_INTERVAL_MS);
    WP_CHECK_EQ(wp_mux_tick(c->m, 1000 + WP_PING_INTERVAL_MS - 1), 0);
    WP_CHECK_EQ(wp_mux_want_pull(c->m), 0);
    WP_CHECK_EQ(wp_mux_tick(c->m, 1000 + WP_PING_INTERVAL_MS), 0);
    WP_CHECK_EQ(wp_mux_want_pull(c->m), 1);
    WP_CHECK_EQ(wp_mux_next_deadline(c->m), 1000 + WP_DEAD_TIMEOUT_MS); /* one Ping at a time */
    WP_CHECK_EQ(wp_mux_ping(c->m, 1000 + WP_PING_INTERVAL_MS), WP_ERR_BUSY);
    wp_buf out;
    wp_buf_init(&out, MiB);
    WP_CHECK_EQ(wp_mux_pull(c->m, &out, MiB), WP_FRAME_HDR_LEN);
    WP_CHECK_EQ(wp_mux_feed(s->m, wp_buf_ptr(&out), wp_buf_len(&out), 16005), 0);
    wp_buf_reset(&out);
    WP_CHECK_EQ(wp_mux_pull(s->m, &out, MiB), WP_FRAME_HDR_LEN);
    WP_CHECK_EQ(wp_mux_feed(c->m, wp_buf_ptr(&out), wp_buf_len(&out), 16040), 0);
    WP_CHECK_EQ(wp_mux_rtt_ms(c->m), 40);
    WP_CHECK_EQ(wp_mux_next_deadline(c->m), 16040 + WP_PING_INTERVAL_MS);
    /* silence: dead after the dead timeout since the last byte */
    WP_CHECK_EQ(wp_mux_tick(c->m, 16040 + WP_PING_INTERVAL_MS), 0); /* Ping #2 queued */
    WP_CHECK_EQ(wp_mux_tick(c->m, 16040 + WP_DEAD_TIMEOUT_MS - 1), 0);
    WP_CHECK_EQ(c->deads, 0);
    WP_CHECK_EQ(wp_mux_tick(c->m, 16040 + WP_DEAD_TIMEOUT_MS), WP_ERR_TIMEOUT);
    WP_CHECK_EQ(c->deads, 1);
    WP_CHECK_EQ(ts(c, a)->closed, 1);
    WP_CHECK_EQ(ts(c, a)->reason, WP_MUX_CLOSE_SESSION);
    WP_CHECK_EQ(wp_mux_error(c->m), WP_ERR_TIMEOUT);
    WP_CHECK_EQ(wp_mux_tick(c->m, 99999999), WP_ERR_TIMEOUT);
    WP_CHECK_EQ(c->deads, 1);
    WP_CHECK_EQ(wp_mux_feed(c->m, "", 0, 99999999), WP_ERR_TIMEOUT);
    wp_buf_reset(&out);
    WP_CHECK_EQ(wp_mux_pull(c->m, &out, MiB), 0); /* no GoAway: the connection just closes */
    WP_CHECK_EQ(wp_mux_next_deadline(c->m), UINT64_MAX);

    /* activity without mux bytes (WebSocket control frames) keeps a session alive */
    WP_CHECK_EQ(wp_mux_tick(s->m, 16005), 0);
    wp_mux_touch(s->m, 40000);
    WP_CHECK_EQ(wp_mux_tick(s->m, 16005 + WP_DEAD_TIMEOUT_MS), 0);
    WP_CHECK_EQ(wp_mux_next_deadline(s->m), 40000 + WP_DEAD_TIMEOUT_MS); /* Ping outstanding */
    WP_CHECK_EQ(s->deads, 0);
    wp_buf_free(&out);
    tend_free(c);
    tend_free(s);
}

WP_TEST(open_ack_timeout)
{
    tend *c = tend_new(WP_MUX_CLIENT, NULL), *s = tend_new(WP_MUX_SERVER, NULL);
    s->auto_accept = 0;
    WP_CHECK_EQ(wp_mux_tick(c->m, 500), 0);
    uint32_t a = open_stream(c, NULL);
    WP_CHECK_EQ(wp_mux_next_deadline(c->m), 500); /* unstamped open: tick now */
    WP_CHECK_EQ(wp_mux_tick(c->m, 1000), 0);
    WP_CHECK_EQ(wp_mux_next_deadline(c->m), 1000 + WP_OPEN_ACK_TIMEOUT_MS);
    pump(c, s, 1000);
    WP_CHECK_EQ(ts(s, a)->opened, 1);
    WP_CHECK_EQ(wp_mux_tick(c->m, 1000 + WP_OPEN_ACK_TIMEOUT_MS - 1), 0);
    WP_CHECK_EQ(ts(c, a)->closed, 0);
    WP_CHECK_EQ(wp_mux_tick(c->m, 1000 + WP_OPEN_ACK_TIMEOUT_MS), 0);
    WP_CHECK_EQ(ts(c, a)->closed, 1);
    WP_CHECK_EQ(ts(c, a)->reason, WP_MUX_CLOSE_OPEN_TIMEOUT);
    WP_CHECK_EQ(wp_mux_pending_count(c->m), 0);
    pump(c, s, 1000 + WP_OPEN_ACK_TIMEOUT_MS);
    WP_CHECK_EQ(ts(s, a)->closed, 1); /* the server's owner learns its pending stream is gone */
    WP_CHECK_EQ(ts(s, a)->reason, WP_MUX_CLOSE_RESET);
    WP_CHECK_EQ(wp_mux_pending_count(s->m), 0);
    WP_CHECK_EQ(wp_mux_accept(s->m, a, NULL), WP_ERR_NOT_FOUND);
    /* an ACKed stream never times out */
    s->auto_accept = 1;
    uint32_t b = open_stream(c, NULL);
    WP_CHECK_EQ(wp_mux_tick(c->m, 20000), 0);
    pump(c, s, 20000);
    WP_CHECK_EQ(wp_mux_tick(c->m, 20000 + WP_OPEN_ACK_TIMEOUT_MS * 2), 0);
    WP_CHECK_EQ(ts(c, b)->closed, 0);
    tend_free(c);
    tend_free(s);
}

WP_TEST(reap_half_closed_idle)
{
    wp_mux_config cfg;
    wp_mux_config_default(&cfg);
    cfg.ping_interval_ms = 1000000;
    cfg.dead_timeout_ms = 2000000;
    tend *c = tend_new(WP_MUX_CLIENT, &cfg), *s = tend_new(WP_MUX_SERVER, &cfg);
    uint32_t a = open_stream(c, NULL), open_b = open_stream(c, NULL);
    WP_CHECK_EQ(wp_mux_tick(c->m, 1000), 0);
    WP_CHECK_EQ(wp_mux_tick(s->m, 1000), 0);
    pump(c, s, 1000);
    WP_CHECK_EQ(wp_mux_close_write(c->m, a), 0);
    pump(c, s, 1000);
    WP_CHECK_EQ(ts(s, a)->fin, 1);
    WP_CHECK_EQ(wp_mux_next_deadline(s->m), 1000 + WP_REAP_TIMEOUT_MS);
    /* Data at 30 s (server -> client) counts as activity on the half-closed stream */
    WP_CHECK_EQ(wp_mux_write(s->m, a, "ping", 4), 4);
    pump(c, s, 30000);
    WP_CHECK_EQ(wp_mux_tick(s->m, 30000), 0); /* stamps the send */
    WP_CHECK_EQ(wp_mux_tick(s->m, 1000 + WP_REAP_TIMEOUT_MS), 0);
    WP_CHECK_EQ(ts(s, a)->closed, 0);
    WP_CHECK_EQ(wp_mux_next_deadline(s->m), 30000 + WP_REAP_TIMEOUT_MS);
    WP_CHECK_EQ(wp_mux_tick(s->m, 30000 + WP_REAP_TIMEOUT_MS - 1), 0);
    WP_CHECK_EQ(ts(s, a)->closed, 0);
    WP_CHECK_EQ(wp_mux_tick(s->m, 30000 + WP_REAP_TIMEOUT_MS), 0);
    WP_CHECK_EQ(ts(s, a)->closed, 1);
    WP_CHECK_EQ(ts(s, a)->reason, WP_MUX_CLOSE_REAPED);
    pump(c, s, 30000 + WP_REAP_TIMEOUT_MS);
    WP_CHECK_EQ(ts(c, a)->closed, 1);
    WP_CHECK_EQ(ts(c, a)->reason, WP_MUX_CLOSE_RESET);
    /* a fully open idle stream is never reaped */
    WP_CHECK_EQ(wp_mux_tick(s->m, 10 * WP_REAP_TIMEOUT_MS), 0);
    WP_CHECK_EQ(wp_mux_tick(c->m, 10 * WP_REAP_TIMEOUT_MS), 0);
    WP_CHECK_EQ(ts(s, open_b)->closed + ts(c, open_b)->closed, 0);
    WP_CHECK_EQ(wp_mux_stream_count(s->m), 1);
    tend_free(c);
    tend_free(s);
}

/* ---- drain and goaway ---- */

WP_TEST(drain_then_goaway)
{
    tend *c = tend_new(WP_MUX_CLIENT, NULL), *s = tend_new(WP_MUX_SERVER, NULL);
    uint32_t a = open_stream(c, NULL), id;
    pump(c, s, 0);
    WP_CHECK_EQ(wp_mux_drain(c->m), 0);
    WP_CHECK_EQ(wp_mux_open(c->m, PRE, PRE_LEN, NULL, &id), WP_ERR_CLOSED);
    /* existing streams finish */
    WP_CHECK_EQ(wp_mux_write(c->m, a, "req", 3), 3);
    WP_CHECK_EQ(wp_mux_close_write(c->m, a), 0);
    pump(c, s, 0);
    WP_CHECK_EQ(wp_mux_write(s->m, a, "resp", 4), 4);
    WP_CHECK_EQ(wp_mux_close_write(s->m, a), 0);
    pump(c, s, 0);
    WP_CHECK_EQ(ts(c, a)->reason, WP_MUX_CLOSE_DONE);
    WP_CHECK_EQ(ts(c, a)->closed, 1);
    WP_CHECK_EQ(wp_mux_stream_count(c->m), 0); /* drain complete */
    WP_CHECK_EQ(wp_mux_buffered_bytes(c->m), 0);
    WP_CHECK_EQ(wp_mux_error(c->m), 0);
    tend_free(c);
    tend_free(s);

    /* agent draining: new SYNs refused with `draining`; then GoAway ends everything */
    c = tend_new(WP_MUX_CLIENT, NULL);
    s = tend_new(WP_MUX_SERVER, NULL);
    a = open_stream(c, NULL);
    pump(c, s, 0);
    WP_CHECK_EQ(wp_mux_drain(s->m), 0);
    uint32_t b = open_stream(c, NULL);
    pump(c, s, 0);
    WP_CHECK_EQ(ts(s, b)->refused_why, WP_ERR_CLOSED);
    WP_CHECK_EQ(ts(c, b)->reason, WP_MUX_CLOSE_RESET);
    WP_CHECK_EQ(wp_mux_write(c->m, a, "queued", 6), 6);
    s->reset_other = a;
    WP_CHECK_EQ(wp_mux_goaway(s->m, WP_GOAWAY_NORMAL), 0);
    WP_CHECK_EQ(ts(s, a)->closed, 1); /* before wp_mux_goaway returned */
    WP_CHECK_EQ(ts(s, a)->reason, WP_MUX_CLOSE_SESSION);
    WP_CHECK_EQ(wp_mux_goaway(s->m, WP_GOAWAY_NORMAL), WP_ERR_CLOSED);
    WP_CHECK_EQ(wp_mux_error(s->m), WP_ERR_CLOSED);
    wp_buf out;
    wp_buf_init(&out, MiB);
    WP_CHECK_EQ(wp_mux_pull(s->m, &out, MiB), WP_FRAME_HDR_LEN);
    wp_frame_hdr h;
    WP_CHECK_EQ(parse_frames(wp_buf_ptr(&out), wp_buf_len(&out), &h, 1), 1);
    WP_CHECK_EQ(h.type, WP_FRAME_TYPE_GOAWAY);
    WP_CHECK_EQ(h.length, WP_GOAWAY_NORMAL);
    /* the client's in-flight data reaches a server that has gone away: discarded */
    wp_buf cb;
    wp_buf_init(&cb, MiB);
    WP_CHECK(wp_mux_pull(c->m, &cb, MiB) > 0);
    WP_CHECK_EQ(wp_mux_feed(s->m, wp_buf_ptr(&cb), wp_buf_len(&cb), 0), 0);
    WP_CHECK_EQ(ts(s, a)->data_cbs, 0);
    WP_CHECK_EQ(wp_mux_feed(c->m, wp_buf_ptr(&out), wp_buf_len(&out), 0), WP_ERR_CLOSED);
    WP_CHECK_EQ(c->goaways, 1);
    WP_CHECK_EQ(c->goaway_code, WP_GOAWAY_NORMAL);
    WP_CHECK_EQ(ts(c, a)->reason, WP_MUX_CLOSE_SESSION);
    /* the client answers with its own GoAway; the server reports it */
    WP_CHECK_EQ(wp_mux_goaway(c->m, WP_GOAWAY_NORMAL), WP_ERR_CLOSED);
    wp_buf_reset(&cb);
    WP_CHECK_EQ(wp_frame_put_goaway(&cb, 0), 0);
    WP_CHECK_EQ(wp_mux_feed(s->m, wp_buf_ptr(&cb), wp_buf_len(&cb), 0), WP_ERR_CLOSED);
    WP_CHECK_EQ(s->goaways, 1);
    wp_buf_free(&cb);
    wp_buf_free(&out);
    tend_free(c);
    tend_free(s);
}

/* ---- re-entrancy ---- */

WP_TEST(reset_inside_data_callback)
{
    tend *c = tend_new(WP_MUX_CLIENT, NULL), *s = tend_new(WP_MUX_SERVER, NULL);
    uint32_t a = open_stream(c, NULL), b = open_stream(c, NULL);
    pump(c, s, 0);
    s->reset_in_data = 1;
    uint8_t *d = make_pattern(100 * KiB);
    WP_CHECK_EQ(wp_mux_write(c->m, a, d, 100 * KiB), 100 * KiB);
    WP_CHECK_EQ(wp_mux_close_write(c->m, a), 0);
    pump(c, s, 0); /* all frames for `a` arrive in one feed; the first resets it */
    WP_CHECK_EQ(ts(s, a)->data_cbs, 1);
    WP_CHECK_EQ(ts(s, a)->fin, 0);
    WP_CHECK_EQ(ts(c, a)->reason, WP_MUX_CLOSE_RESET);
    s->reset_in_data = 0;
    /* echo from inside the data callback, stream b still fine */
    s->echo = 1;
    WP_CHECK_EQ(wp_mux_write(c->m, b, d, 50 * KiB), 50 * KiB);
    pump(c, s, 0);
    WP_CHECK_EQ(ts(c, b)->rx_len, 50 * KiB);
    WP_CHECK(check_pattern(ts(c, b)->rx, 50 * KiB));
    WP_CHECK_EQ(s->errors + c->errors, 0);
    /* reset inside on_stream_ack */
    c->reset_in_ack = 1;
    uint32_t x = open_stream(c, NULL);
    pump(c, s, 0);
    WP_CHECK_EQ(ts(c, x)->acked, 1);
    WP_CHECK_EQ(ts(s, x)->reason, WP_MUX_CLOSE_RESET);
    /* nested feed is refused */
    c->reset_in_ack = 0;
    s->echo = 0;
    s->nested_feed_rc = 1;
    WP_CHECK_EQ(wp_mux_write(c->m, b, "n", 1), 1);
    pump(c, s, 0);
    WP_CHECK_EQ(s->nested_feed_rc, WP_ERR_STATE);
    free(d);
    tend_free(c);
    tend_free(s);
}

WP_TEST(goaway_and_free_inside_callbacks)
{
    tend *c = tend_new(WP_MUX_CLIENT, NULL), *s = tend_new(WP_MUX_SERVER, NULL);
    uint32_t a = open_stream(c, NULL), b = open_stream(c, NULL);
    pump(c, s, 0);
    uint8_t *d = make_pattern(40 * KiB);
    WP_CHECK_EQ(wp_mux_write(c->m, a, d, 40 * KiB), 40 * KiB);
    WP_CHECK_EQ(wp_mux_write(c->m, b, d, 40 * KiB), 40 * KiB);
    s->goaway_in_data = 1;
    pump(c, s, 0);
    WP_CHECK_EQ(ts(s, a)->data_cbs + ts(s, b)->data_cbs, 1);
    WP_CHECK_EQ(ts(s, a)->closed + ts(s, b)->closed, 2);
    WP_CHECK_EQ(c->goaways, 1);
    WP_CHECK_EQ(ts(c, a)->reason, WP_MUX_CLOSE_SESSION);
    tend_free(c);
    tend_free(s);

    /* wp_mux_free inside on_stream_data: deferred to the end of wp_mux_feed */
    c = tend_new(WP_MUX_CLIENT, NULL);
    s = tend_new(WP_MUX_SERVER, NULL);
    a = open_stream(c, NULL);
    WP_CHECK_EQ(wp_mux_write(c->m, a, d, 40 * KiB), 40 * KiB);
    wp_buf out;
    wp_buf_init(&out, MiB);
    int n = wp_mux_pull(c->m, &out, MiB);
    s->free_in_data = 1;
    wp_mux *sm = s->m;
    WP_CHECK_EQ(wp_mux_feed(sm, wp_buf_ptr(&out), (size_t)n, 0), WP_ERR_CLOSED);
    WP_CHECK(s->m == NULL);
    WP_CHECK_EQ(ts(s, a)->data_cbs, 1);
    WP_CHECK_EQ(ts(s, a)->closed, 0); /* no callbacks once freed */
    tend_free(s);

    /* wp_mux_free inside on_error */
    s = tend_new(WP_MUX_SERVER, NULL);
    s->free_in_error = 1;
    sm = s->m;
    WP_CHECK_EQ(wp_mux_feed(sm, "\x07garbage", 8, 0), WP_ERR_CLOSED);
    WP_CHECK_EQ(s->errors, 1);
    WP_CHECK(s->m == NULL);
    tend_free(s);
    wp_buf_free(&out);
    free(d);
    tend_free(c);
}

WP_TEST(on_writable_edge_triggered)
{
    tend *c = tend_new(WP_MUX_CLIENT, NULL), *s = tend_new(WP_MUX_SERVER, NULL);
    uint32_t a = open_stream(c, NULL);
    WP_CHECK_EQ(c->writable_cbs, 1);
    (void)open_stream(c, NULL);
    WP_CHECK_EQ(wp_mux_write(c->m, a, "x", 1), 1);
    WP_CHECK_EQ(c->writable_cbs, 1); /* not re-armed: no pull emptied the output */
    wp_buf out;
    wp_buf_init(&out, MiB);
    WP_CHECK_EQ(wp_mux_pull(c->m, &out, 40), 12 + 2 + PRE_LEN + 1); /* partial: not armed */
    WP_CHECK_EQ(wp_mux_want_pull(c->m), 1);
    WP_CHECK_EQ(wp_mux_write(c->m, a, "y", 1), 1);
    WP_CHECK_EQ(c->writable_cbs, 1);
    WP_CHECK(wp_mux_pull(c->m, &out, MiB) > 0);
    WP_CHECK_EQ(wp_mux_want_pull(c->m), 0);
    WP_CHECK_EQ(c->writable_cbs, 1);
    WP_CHECK_EQ(wp_mux_write(c->m, a, "z", 1), 1);
    WP_CHECK_EQ(c->writable_cbs, 2);
    WP_CHECK_EQ(wp_mux_feed(s->m, wp_buf_ptr(&out), wp_buf_len(&out), 0), 0);
    WP_CHECK_EQ(s->writable_cbs, 1); /* the ACKs */
    wp_buf_free(&out);
    tend_free(c);
    tend_free(s);
}

/*
 * Output can vanish without a pull: the peer's RST for the only stream with
 * queued data discards it. The owner, told by on_writable, finds
 * wp_mux_want_pull() == 0 and stops; the mux must be armed again then, or the
 * next output (the ACK of the next stream) never raises on_writable and sits
 * until something unrelated makes the owner pull (the agent's heartbeat:
 * "ACKs seconds late after the control plane reset or half-closed a stream").
 */
WP_TEST(output_dropped_by_peer_rst_rearms)
{
    tend *c = tend_new(WP_MUX_CLIENT, NULL), *s = tend_new(WP_MUX_SERVER, NULL);
    uint32_t a = open_stream(c, NULL);
    pump(c, s, 0);
    WP_CHECK_EQ(ts(c, a)->acked, 1);
    WP_CHECK_EQ(wp_mux_want_pull(s->m), 0);
    int w0 = s->writable_cbs;
    WP_CHECK_EQ(wp_mux_write(s->m, a, "answer", 6), 6); /* the service answered */
    WP_CHECK_EQ(s->writable_cbs, w0 + 1);
    /* before the owner pulls, the peer's RST for a arrives */
    WP_CHECK_EQ(wp_mux_reset(c->m, a), 0);
    wp_buf out;
    wp_buf_init(&out, MiB);
    WP_CHECK(wp_mux_pull(c->m, &out, MiB) > 0);
    WP_CHECK_EQ(wp_mux_feed(s->m, wp_buf_ptr(&out), wp_buf_len(&out), 0), 0);
    WP_CHECK_EQ(ts(s, a)->closed, 1);
    WP_CHECK_EQ(wp_mux_want_pull(s->m), 0); /* the owner stops here without pulling */
    /* the next stream: its ACK must raise on_writable again */
    uint32_t b = open_stream(c, NULL);
    wp_buf_reset(&out);
    WP_CHECK(wp_mux_pull(c->m, &out, MiB) > 0);
    WP_CHECK_EQ(wp_mux_feed(s->m, wp_buf_ptr(&out), wp_buf_len(&out), 0), 0);
    WP_CHECK_EQ(ts(s, b)->opened, 1);
    WP_CHECK_EQ(wp_mux_want_pull(s->m), 1);
    WP_CHECK_EQ(s->writable_cbs, w0 + 2);
    /* the same when the FIN-only frame of a stream is dropped by the RST */
    pump(c, s, 0);
    WP_CHECK_EQ(ts(c, b)->acked, 1);
    WP_CHECK_EQ(wp_mux_close_write(s->m, b), 0);
    WP_CHECK_EQ(s->writable_cbs, w0 + 3);
    WP_CHECK_EQ(wp_mux_reset(c->m, b), 0);
    wp_buf_reset(&out);
    WP_CHECK(wp_mux_pull(c->m, &out, MiB) > 0);
    WP_CHECK_EQ(wp_mux_feed(s->m, wp_buf_ptr(&out), wp_buf_len(&out), 0), 0);
    WP_CHECK_EQ(wp_mux_want_pull(s->m), 0);
    WP_CHECK_EQ(wp_mux_ping(s->m, 0), 0);
    WP_CHECK_EQ(s->writable_cbs, w0 + 4);
    wp_buf_free(&out);
    tend_free(c);
    tend_free(s);
}

/* ---- receive-window growth (PROTOCOL.md §7.1) ---- */

static wp_mux_config grow_cfg(void)
{
    wp_mux_config cfg;
    wp_mux_config_default(&cfg);
    cfg.recv_window_max = WP_STREAM_WINDOW_MAX; /* the peer announced 4 MiB */
    return cfg;
}

/*
 * Sends total bytes on stream id from c to s, pumping at *now and advancing
 * it by step_ms per round. When `consume_per_round` is nonzero, s consumes at
 * most that many bytes per round (else as it arrives, per s->auto_consume).
 * Checks the window invariants throughout; returns the largest window seen.
 */
static uint32_t send_through(tend *c, tend *s, uint32_t id, size_t total, uint64_t *now,
                             uint64_t step_ms, size_t consume_per_round)
{
    uint8_t *d = make_pattern(total);
    tstream *t = ts(s, id);
    size_t off = 0, cons = t->rx_len, base = t->rx_len;
    uint32_t maxwin = 0;
    for (int guard = 0; t->rx_len - base < total && guard < 200000; guard++) {
        if (off < total) {
            int w = wp_mux_write(c->m, id, d + off, total - off);
            WP_CHECK(w >= 0);
            off += (size_t)(w > 0 ? w : 0);
        }
        s->now = *now;
        pump_split(c, s, 64 * KiB, 0, *now);
        if (consume_per_round && t->rx_len > cons) {
            size_t k = t->rx_len - cons < consume_per_round ? t->rx_len - cons : consume_per_round;
            WP_CHECK_EQ(wp_mux_consumed_at(s->m, id, k, *now), 0);
            cons += k;
        }
        wp_mux_stream_stats sst, cst;
        WP_CHECK_EQ(wp_mux_stream_stats_get(s->m, id, &sst), 0);
        WP_CHECK_EQ(wp_mux_stream_stats_get(c->m, id, &cst), 0);
        WP_CHECK(sst.recv_window + sst.unconsumed + sst.credit_pending == sst.window);
        WP_CHECK(sst.unconsumed <= sst.window);
        WP_CHECK(cst.send_window <= sst.window);
        WP_CHECK(sst.window <= WP_STREAM_WINDOW_MAX);
        if (sst.window > maxwin)
            maxwin = sst.window;
        *now += step_ms;
    }
    WP_CHECK_EQ(t->rx_len - base, total);
    WP_CHECK(check_pattern(t->rx + base, total));
    free(d);
    return maxwin;
}

WP_TEST(window_grows_under_fast_consumption)
{
    wp_mux_config cfg = grow_cfg();
    tend *c = tend_new(WP_MUX_CLIENT, NULL), *s = tend_new(WP_MUX_SERVER, &cfg);
    s->consume_at = 1;
    uint32_t id = open_stream(c, NULL);
    uint64_t now = 1000;
    /* consumed as fast as it arrives, no time passing: the window doubles up to the max */
    WP_CHECK_EQ(send_through(c, s, id, 24 * MiB, &now, 0, 0), WP_STREAM_WINDOW_MAX);
    wp_mux_stream_stats st;
    WP_CHECK_EQ(wp_mux_stream_stats_get(s->m, id, &st), 0);
    WP_CHECK_EQ(st.window, WP_STREAM_WINDOW_MAX);
    /* a grown window is a larger credit batch: half of 4 MiB */
    WP_CHECK_EQ(wp_mux_stream_stats_get(c->m, id, &st), 0);
    WP_CHECK(st.send_window <= WP_STREAM_WINDOW_MAX);
    WP_CHECK_EQ(s->errors + c->errors, 0);
    WP_CHECK_EQ(wp_mux_buffered_bytes(s->m), 0);
    tend_free(c);
    tend_free(s);

    /* the peer did not announce stream_window_max (recv_window_max 0): no growth */
    c = tend_new(WP_MUX_CLIENT, NULL);
    s = tend_new(WP_MUX_SERVER, NULL);
    s->consume_at = 1;
    id = open_stream(c, NULL);
    WP_CHECK_EQ(send_through(c, s, id, 4 * MiB, &now, 0, 0), WP_STREAM_INITIAL_WINDOW);
    tend_free(c);
    tend_free(s);
    /* nor when the owner reports consumption without a clock */
    c = tend_new(WP_MUX_CLIENT, NULL);
    s = tend_new(WP_MUX_SERVER, &cfg);
    id = open_stream(c, NULL);
    WP_CHECK_EQ(send_through(c, s, id, 4 * MiB, &now, 0, 0), WP_STREAM_INITIAL_WINDOW);
    tend_free(c);
    tend_free(s);

    /* a peer that does not accept grown windows refuses them: GoAway 1 */
    wp_mux_config v1;
    wp_mux_config_default(&v1);
    v1.send_window_max = 0;
    c = tend_new(WP_MUX_CLIENT, &v1);
    s = tend_new(WP_MUX_SERVER, &cfg);
    s->consume_at = 1;
    id = open_stream(c, NULL);
    uint8_t *d = make_pattern(2 * MiB);
    for (int i = 0; i < 64 && !c->errors; i++) {
        (void)wp_mux_write(c->m, id, d, 64 * KiB);
        pump(c, s, now);
    }
    WP_CHECK_EQ(c->errors, 1);
    WP_CHECK(strstr(c->reason, "above") != NULL);
    free(d);
    tend_free(c);
    tend_free(s);
}

WP_TEST(window_no_growth_for_slow_or_stalled_reader)
{
    wp_mux_config cfg = grow_cfg();
    tend *c = tend_new(WP_MUX_CLIENT, NULL), *s = tend_new(WP_MUX_SERVER, &cfg);
    s->auto_consume = 0;
    uint32_t id = open_stream(c, NULL);
    uint64_t now = 1000;
    /* a reader taking 200 ms per half window (slower than window_grow_ms) never grows it */
    WP_CHECK_EQ(send_through(c, s, id, 3 * MiB, &now, 200, WP_WINDOW_UPDATE_THRESHOLD),
                WP_STREAM_INITIAL_WINDOW);
    /* a stalled reader: the window stays, unconsumed bytes stop at one window */
    uint32_t b = open_stream(c, NULL);
    uint8_t *d = make_pattern(MiB);
    size_t off = 0;
    for (int i = 0; i < 50; i++) {
        int w = wp_mux_write(c->m, b, d + off, MiB - off);
        off += (size_t)(w > 0 ? w : 0);
        pump(c, s, now);
    }
    wp_mux_stream_stats st;
    WP_CHECK_EQ(wp_mux_stream_stats_get(s->m, b, &st), 0);
    WP_CHECK_EQ(st.window, WP_STREAM_INITIAL_WINDOW);
    WP_CHECK_EQ(st.unconsumed, WP_STREAM_INITIAL_WINDOW - 2 - PRE_LEN);
    WP_CHECK_EQ(wp_mux_stream_stats_get(c->m, b, &st), 0);
    WP_CHECK_EQ(st.send_window, 0);
    free(d);
    tend_free(c);
    tend_free(s);

    /* with a measured RTT of 300 ms, 200 ms per half window is within 2 RTT: it grows */
    c = tend_new(WP_MUX_CLIENT, NULL);
    s = tend_new(WP_MUX_SERVER, &cfg);
    s->auto_consume = 0;
    id = open_stream(c, NULL);
    pump(c, s, now);
    WP_CHECK_EQ(wp_mux_ping(s->m, now), 0);
    wp_buf out;
    wp_buf_init(&out, MiB);
    WP_CHECK(wp_mux_pull(s->m, &out, MiB) > 0);
    WP_CHECK_EQ(wp_mux_feed(c->m, wp_buf_ptr(&out), wp_buf_len(&out), now), 0);
    wp_buf_reset(&out);
    WP_CHECK(wp_mux_pull(c->m, &out, MiB) > 0);
    now += 300;
    WP_CHECK_EQ(wp_mux_feed(s->m, wp_buf_ptr(&out), wp_buf_len(&out), now), 0);
    wp_buf_free(&out);
    WP_CHECK_EQ(wp_mux_rtt_ms(s->m), 300);
    WP_CHECK(send_through(c, s, id, 3 * MiB, &now, 200, WP_WINDOW_UPDATE_THRESHOLD) >
             WP_STREAM_INITIAL_WINDOW);
    tend_free(c);
    tend_free(s);
}

WP_TEST(window_growth_within_tunnel_budget)
{
    wp_mux_config cfg = grow_cfg();
    cfg.max_buffered = MiB;
    tend *c = tend_new(WP_MUX_CLIENT, NULL), *s = tend_new(WP_MUX_SERVER, &cfg);
    s->consume_at = 1;
    uint32_t a = open_stream(c, NULL), b = open_stream(c, NULL);
    uint64_t now = 1000;
    /* windows sum: 256 KiB + 256 KiB; a grows to 512 KiB (768 KiB), not to 1 MiB (1.25 MiB) */
    WP_CHECK_EQ(send_through(c, s, a, 8 * MiB, &now, 0, 0), 512 * KiB);
    wp_mux_stream_stats st;
    WP_CHECK_EQ(wp_mux_stream_stats_get(s->m, b, &st), 0);
    WP_CHECK_EQ(st.window, WP_STREAM_INITIAL_WINDOW);
    /* b goes away: its window returns to the budget and a may double again (1 MiB total) */
    WP_CHECK_EQ(wp_mux_reset(c->m, b), 0);
    pump(c, s, now);
    WP_CHECK_EQ(ts(s, b)->closed, 1);
    WP_CHECK_EQ(send_through(c, s, a, 8 * MiB, &now, 0, 0), MiB);
    /* and no further: 2 MiB would exceed the budget */
    WP_CHECK_EQ(wp_mux_stream_stats_get(s->m, a, &st), 0);
    WP_CHECK_EQ(st.window, MiB);
    WP_CHECK_EQ(s->errors + c->errors, 0);
    tend_free(c);
    tend_free(s);
}

/* ---- split invariance and hostile input ---- */

/* A scenario with several streams both ways; returns the two logs concatenated. */
static char *scenario(size_t split, size_t chunk)
{
    wp_mux_config cfg;
    wp_mux_config_default(&cfg);
    cfg.initial_window = 32 * KiB;
    cfg.max_data = 3000;
    tend *c = tend_new(WP_MUX_CLIENT, &cfg), *s = tend_new(WP_MUX_SERVER, &cfg);
    c->auto_consume = 1;
    uint8_t *d = make_pattern(100 * KiB);
    uint32_t ids[3];
    size_t off[3] = {0, 0, 0}, sizes[3] = {100 * KiB, 7, 40 * KiB};
    for (int i = 0; i < 3; i++)
        ids[i] = open_stream(c, NULL);
    WP_CHECK_EQ(wp_mux_ping(c->m, 0), 0);
    for (int round = 0; round < 200; round++) {
        for (int i = 0; i < 3; i++) {
            if (off[i] < sizes[i]) {
                int w = wp_mux_write(c->m, ids[i], d + off[i], sizes[i] - off[i]);
                off[i] += (size_t)(w > 0 ? w : 0);
                if (off[i] == sizes[i])
                    WP_CHECK_EQ(wp_mux_close_write(c->m, ids[i]), 0);
            }
            if (ts(s, ids[i])->rx_len && ts(s, ids[i])->fin && !ts(s, ids[i])->closed &&
                wp_mux_write_room(s->m, ids[i]) > 0) {
                WP_CHECK_EQ(wp_mux_write(s->m, ids[i], "done", 4), 4);
                WP_CHECK_EQ(wp_mux_close_write(s->m, ids[i]), 0);
            }
        }
        pump_split(c, s, chunk, split, (uint64_t)round);
    }
    for (int i = 0; i < 3; i++) {
        WP_CHECK_EQ(ts(s, ids[i])->rx_len, sizes[i]);
        WP_CHECK(check_pattern(ts(s, ids[i])->rx, sizes[i]));
        WP_CHECK_EQ(ts(c, ids[i])->reason, WP_MUX_CLOSE_DONE);
        WP_CHECK_EQ(ts(c, ids[i])->closed, 1);
    }
    WP_CHECK_EQ(wp_mux_rtt_ms(c->m), 0);
    size_t n = c->log_len + s->log_len + 2;
    char *all = malloc(n);
    snprintf(all, n, "%s|%s", c->log, s->log);
    free(d);
    tend_free(c);
    tend_free(s);
    return all;
}

WP_TEST(byte_at_a_time_identical)
{
    char *whole = scenario(0, 64 * KiB);
    char *bytes = scenario(1, 64 * KiB);
    char *odd = scenario(7, 64 * KiB);
    WP_CHECK(strlen(whole) > 200);
    WP_CHECK_STR(bytes, whole);
    WP_CHECK_STR(odd, whole);
    free(whole);
    free(bytes);
    free(odd);
}

static uint32_t lcg(uint32_t *st)
{
    *st = *st * 1103515245u + 12345u;
    return *st >> 8;
}

WP_TEST(hostile_random_input)
{
    for (uint32_t seed = 1; seed <= 300; seed++) {
        uint32_t st = seed;
        wp_mux_role role = (seed & 1) ? WP_MUX_SERVER : WP_MUX_CLIENT;
        tend *e = tend_new(role, NULL);
        e->auto_consume = (seed & 2) != 0;
        if (role == WP_MUX_CLIENT) {
            (void)open_stream(e, NULL);
            (void)open_stream(e, NULL);
        }
        wp_buf b, out;
        wp_buf_init(&b, 4 * MiB);
        wp_buf_init(&out, 4 * MiB);
        /* mostly well-formed frames with random fields, some raw garbage */
        for (int i = 0; i < 60; i++) {
            uint32_t r = lcg(&st);
            uint32_t id = 2 * (lcg(&st) % 4) + 2;
            static const uint16_t dflags[] = {0, WP_FRAME_FLAG_SYN, WP_FRAME_FLAG_FIN,
                                              WP_FRAME_FLAG_SYN | WP_FRAME_FLAG_FIN};
            static const uint16_t wflags[] = {0, WP_FRAME_FLAG_ACK, WP_FRAME_FLAG_FIN,
                                              WP_FRAME_FLAG_RST};
            switch (r % 8) {
            case 0:
            case 1:
                put_syn(&b, id, lcg(&st) % 100, (int)(lcg(&st) & 1));
                break;
            case 2:
            case 3: {
                uint8_t tmp[300];
                memset(tmp, 'q', sizeof tmp);
                uint16_t fl = dflags[lcg(&st) % 4];
                size_t len = lcg(&st) % 300;
                if ((fl & WP_FRAME_FLAG_SYN) && len < 3)
                    len = 3;
                (void)wp_frame_put_data(&b, id, fl, tmp, len);
                break;
            }
            case 4: {
                uint16_t fl = wflags[lcg(&st) % 4];
                (void)wp_frame_put_window_update(&b, id, fl,
                                                 fl == WP_FRAME_FLAG_RST ? 0 : lcg(&st) % 5000);
                break;
            }
            case 5:
                (void)wp_frame_put_ping(&b, (lcg(&st) & 1) ? WP_FRAME_FLAG_SYN : WP_FRAME_FLAG_ACK,
                                        lcg(&st));
                break;
            case 6:
                if (lcg(&st) % 10 == 0)
                    (void)wp_frame_put_goaway(&b, lcg(&st) % 4);
                break;
            default:
                if (lcg(&st) % 6 == 0) {
                    uint8_t g[16];
                    for (size_t k = 0; k < sizeof g; k++)
                        g[k] = (uint8_t)lcg(&st);
                    (void)wp_buf_put(&b, g, 1 + lcg(&st) % sizeof g);
                }
                break;
            }
        }
        const uint8_t *p = wp_buf_ptr(&b);
        size_t left = wp_buf_len(&b);
        int rc = 0, first_err = 0;
        while (left > 0) {
            size_t k = 1 + lcg(&st) % 700;
            if (k > left)
                k = left;
            rc = wp_mux_feed(e->m, p, k, 0);
            p += k;
            left -= k;
            if (rc < 0 && !first_err)
                first_err = rc;
            if (first_err)
                WP_CHECK_EQ(rc, first_err); /* sticky */
            if ((lcg(&st) & 3) == 0) {
                wp_buf_reset(&out);
                WP_CHECK(wp_mux_pull(e->m, &out, 64 * KiB) >= 0);
            }
        }
        WP_CHECK(first_err == 0 || first_err == WP_ERR_PROTO || first_err == WP_ERR_CLOSED);
        WP_CHECK(e->errors <= 1);
        wp_buf_reset(&out);
        WP_CHECK(wp_mux_pull(e->m, &out, 4 * MiB) >= 0);
        WP_CHECK(wp_mux_tick(e->m, 100000) <= 0);
        wp_buf_free(&b);
        wp_buf_free(&out);
        tend_free(e);
    }
}

/* ---- API contract ---- */

WP_TEST(api_misuse)
{
    wp_mux_config cfg;
    wp_mux_config_default(&cfg);
    WP_CHECK_EQ(wp_mux_config_check(&cfg), 0);
    WP_CHECK_EQ(wp_mux_config_check(NULL), WP_ERR_INVAL);
    cfg.max_data = WP_FRAME_MAX_DATA + 1;
    WP_CHECK_EQ(wp_mux_config_check(&cfg), WP_ERR_CONFIG);
    WP_CHECK(wp_mux_new(WP_MUX_CLIENT, &cfg, NULL, NULL) == NULL);
    wp_mux_config_default(&cfg);
    cfg.initial_window = WP_STREAM_INITIAL_WINDOW + 1;
    WP_CHECK_EQ(wp_mux_config_check(&cfg), WP_ERR_CONFIG);
    wp_mux_config_default(&cfg);
    cfg.max_ctrl_frames = 1;
    WP_CHECK_EQ(wp_mux_config_check(&cfg), WP_ERR_CONFIG);
    wp_mux_config_default(&cfg);
    cfg.dead_timeout_ms = 0;
    WP_CHECK_EQ(wp_mux_config_check(&cfg), WP_ERR_CONFIG);
    WP_CHECK(wp_mux_new((wp_mux_role)7, NULL, NULL, NULL) == NULL);

    wp_mux *m = wp_mux_new(WP_MUX_CLIENT, NULL, NULL, NULL); /* no callbacks at all */
    WP_CHECK(m != NULL);
    WP_CHECK(wp_mux_ud(m) == NULL);
    uint32_t id;
    WP_CHECK_EQ(wp_mux_open(m, NULL, 3, NULL, &id), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_mux_open(m, PRE, 0, NULL, &id), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_mux_open(m, PRE, WP_PREAMBLE_MAX + 1, NULL, &id), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_mux_open(m, PRE, PRE_LEN, NULL, NULL), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_mux_accept(m, 2, NULL), WP_ERR_STATE);
    WP_CHECK_EQ(wp_mux_write(m, 2, NULL, 1), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_mux_write(m, 2, "x", 1), WP_ERR_NOT_FOUND);
    WP_CHECK_EQ(wp_mux_reset(m, 2), WP_ERR_NOT_FOUND);
    WP_CHECK_EQ(wp_mux_close_write(m, 2), WP_ERR_NOT_FOUND);
    WP_CHECK_EQ(wp_mux_set_stream_ud(m, 2, NULL), WP_ERR_NOT_FOUND);
    wp_mux_stream_stats st;
    WP_CHECK_EQ(wp_mux_stream_stats_get(m, 2, &st), WP_ERR_NOT_FOUND);
    WP_CHECK_EQ(wp_mux_feed(m, NULL, 1, 0), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_mux_feed(NULL, "x", 1, 0), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_mux_pull(m, NULL, 10), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_mux_open(m, PRE, PRE_LEN, NULL, &id), 0);
    WP_CHECK_EQ(wp_mux_write(m, id, "abc", 0), 0);
    WP_CHECK_EQ(wp_mux_consumed(m, id, 1), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_mux_set_stream_ud(m, id, &cfg), 0);
    WP_CHECK(wp_mux_stream_ud(m, id) == &cfg);
    WP_CHECK_EQ(wp_mux_stream_stats_get(m, id, &st), 0);
    WP_CHECK_EQ(st.pending, 1);
    WP_CHECK_EQ(wp_mux_goaway(m, WP_GOAWAY_NORMAL), 0);
    WP_CHECK_EQ(wp_mux_stream_count(m), 0);
    WP_CHECK_EQ(wp_mux_drain(m), WP_ERR_CLOSED);
    WP_CHECK_EQ(wp_mux_ping(m, 0), WP_ERR_CLOSED);
    wp_mux_free(m);
    wp_mux_free(NULL);

    m = wp_mux_new(WP_MUX_SERVER, NULL, NULL, NULL);
    WP_CHECK_EQ(wp_mux_open(m, PRE, PRE_LEN, NULL, &id), WP_ERR_STATE);
    WP_CHECK_EQ(wp_mux_error(m), 0);
    WP_CHECK_STR(wp_mux_error_reason(m), "");
    wp_mux_free(m);

    /* a preamble that would not fit max_data */
    wp_mux_config_default(&cfg);
    cfg.max_data = 10;
    cfg.initial_window = 100;
    m = wp_mux_new(WP_MUX_CLIENT, &cfg, NULL, NULL);
    WP_CHECK_EQ(wp_mux_open(m, PRE, PRE_LEN, NULL, &id), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_mux_open(m, "{}", 2, NULL, &id), 0);
    wp_mux_free(m);

    WP_CHECK_STR(wp_mux_close_reason_name(WP_MUX_CLOSE_REAPED), "reaped");
    WP_CHECK_STR(wp_mux_close_reason_name(99), "unknown");
}

int main(void)
{
    WP_RUN(open_accept_data_fin);
    WP_RUN(syn_carries_data_and_fin);
    WP_RUN(refuse_and_rst_race);
    WP_RUN(transfer_1mib_credit_only_after_consumed);
    WP_RUN(window_exhaustion_writable_once);
    WP_RUN(slow_stream_does_not_block_another);
    WP_RUN(round_robin_fairness);
    WP_RUN(control_frames_precede_data);
    WP_RUN(budget_streams_and_syns_client);
    WP_RUN(budget_refusals_server);
    WP_RUN(budget_tunnel_bytes_client);
    WP_RUN(violations_goaway_proto_error);
    WP_RUN(violations_client_side);
    WP_RUN(violation_overrun_closes_streams);
    WP_RUN(ping_flood_and_tolerated_frames);
    WP_RUN(malformed_preamble_is_stream_level);
    WP_RUN(peer_goaway);
    WP_RUN(ping_rtt_and_dead);
    WP_RUN(open_ack_timeout);
    WP_RUN(reap_half_closed_idle);
    WP_RUN(drain_then_goaway);
    WP_RUN(reset_inside_data_callback);
    WP_RUN(goaway_and_free_inside_callbacks);
    WP_RUN(on_writable_edge_triggered);
    WP_RUN(output_dropped_by_peer_rst_rearms);
    WP_RUN(window_grows_under_fast_consumption);
    WP_RUN(window_no_growth_for_slow_or_stalled_reader);
    WP_RUN(window_growth_within_tunnel_budget);
    WP_RUN(byte_at_a_time_identical);
    WP_RUN(hostile_random_input);
    WP_RUN(api_misuse);
    return wp_test_done();
}
