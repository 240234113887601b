/*
 * fuzz_mux.c — fuzz target for the tunnel's input path: bytes from the peer
 * into the stream multiplexer (common/mux.h), in both roles.
 *
 * Two muxes run per input: M, the mux under test (WP_MUX_SERVER: the agent,
 * or WP_MUX_CLIENT: wolfpackd, which opens three streams first), and P, a
 * real peer mux in the opposite role. M is fed two kinds of bytes:
 *   - raw bytes taken from the input (hostile: any frame sequence, garbage);
 *   - P's pulled output, driven by input ops (a genuine peer).
 * Everything M pulls (through a bounded wp_buf, max_bytes varied) is fed to P.
 * An input with any raw op is a "raw session": P's view cannot match what M
 * received, so P's output never reaches M and P's own protocol errors are
 * tolerated (what a correct peer must accept is then judged by the wire
 * checker below, from the bytes M actually received). An input without raw
 * ops is a "genuine session": P drives M and NEITHER mux may report on_error.
 *
 * M's callbacks exercise the API re-entrantly: accept now / later / never,
 * reset in on_stream_open or on_stream_data, write data back (a checkable
 * pattern) from callbacks and from the top level, consume now / later /
 * partially / never, close_write, pull from on_writable and on_stream_data,
 * open streams from on_stream_ack / on_stream_closed, GoAway and wp_mux_free
 * from a callback, and wp_mux_feed from inside a feed callback (must be
 * WP_ERR_STATE). A fake clock advances between chunks; ticks run both muxes.
 *
 * Invariants checked (WP_FUZZ_CHECK aborts):
 *   - no crash, no leak, no use after free (sanitizers);
 *   - wp_mux_error() once set never changes; every feed/tick result agrees
 *     with it; after an error no stream is left and nothing is buffered;
 *   - the owner's view matches the mux: streams it learnt about end with
 *     exactly one on_stream_closed (none after its own wp_mux_reset), with a
 *     reason that fits (done = FIN both ways, ...); stream_count, pending_count,
 *     per-stream stats and buffered_bytes agree with the callbacks seen;
 *     stream_count <= max_streams, pending <= max_pending_syn, queued bytes
 *     <= max_buffered, delivered-unconsumed <= initial_window per stream;
 *   - callbacks obey the contract: no callback after a deferred free,
 *     on_writable edge-triggered, on_stream_writable only after a short
 *     write, ids/sud/preamble lengths as documented, refusals only when a
 *     budget is exhausted or draining;
 *   - wp_mux_write accepts exactly min(n, wp_mux_write_room());
 *   - each pull appends exactly the bytes it returns, in whole frames; a pull
 *     returning 0 into an empty buffer leaves nothing to pull;
 *   - what each end sends is a stream a correct peer accepts: valid headers,
 *     SYNs only from the client with strictly increasing ids and a valid
 *     preamble, one ACK per stream only for a SYN received, no Data before
 *     SYN/ACK, after FIN or after RST, Data within the window the receiver
 *     granted (initial + WindowUpdates it was fed), credit never above the
 *     data received, Ping ACKs only for Pings received, GoAway only after
 *     the session ended, with the code on_error / wp_mux_goaway implied,
 *     and nothing after it;
 *   - data received follows the sender's pattern (P always; M when genuine);
 *   - a tick before wp_mux_next_deadline() times nothing out.
 *
 * Input layout (all optional past the first two bytes):
 *   byte 0  bit 0: M's role (0 server/agent, 1 client/wolfpackd)
 *           bits 1-2: limits (fm_configs); bits 3-5: pull size; bits 6-7: feed chunking
 *   byte 1  M's callback policy (FM_POL_* bits)
 *   then ops, one byte each (high nibble = op, low nibble = a) plus arguments:
 *     0x0a  raw bytes to M: a == 15: the rest of the input; else (a << 8 | next) bytes
 *     0x1a  advance the clock (a == 15: past the dead timeout) and tick both
 *     0x2a  P opens a stream (P client) / accepts pending stream #a (P server)
 *     0x3a  P writes (next * 32 + 1) bytes on stream #a
 *     0x4a  P close_write #a        0x5a  P reset #a        0x6a  P ping (a odd: M too)
 *     0x7a  P GoAway (code a % 4, 3 meaning 7)              0x8a  P drain (a odd: M too)
 *     0x9a  M op a (open/accept, write, close_write, reset, consume, ping, GoAway,
 *           drain, over-consume check), stream selector in the next byte
 *     0xAa  M policy := next byte   0xBa  pull size := a & 7, chunking := a >> 3
 *     0xCa-0xFa  advance the clock by a ms and exchange
 *
 * Environment: WP_FUZZ_MUX_DUMP=1 prints one summary line per mux and input;
 * WP_FUZZ_MUX_LENIENT=1 skips the checks of known mux.c deviations (fm_lenient).
 */
#include <string.h>

#include "buf.h"
#include "err.h"
#include "frame.h"
#include "fuzz.h"
#include "mux.h"

#define FM_MAX_LIVE   64   /* owner-side stream records per mux (>= every max_streams) */
#define FM_TRACK_CAP  1024 /* per-direction stream ids tracked by the wire checker */
#define FM_WRITE_MAX  4096 /* bytes per wp_mux_write call */
#define FM_MAX_OPENS  64   /* client opens per input */
#define FM_PUMP_LIMIT 64   /* exchange rounds per pump */
#define FM_PULL_LIMIT 100000

/* M's callback policy bits (byte 1, op 0xA). */
#define FM_POL_ACCEPT    0x01 /* accept in on_stream_open (else later, or never) */
#define FM_POL_RESET     0x02 /* reset some streams in on_stream_open */
#define FM_POL_ECHO_CB   0x04 /* write data back from on_stream_data */
#define FM_POL_CONSUME   0x08 /* consume from on_stream_data (all or half) */
#define FM_POL_CLOSE_FIN 0x10 /* close_write from on_stream_fin */
#define FM_POL_RESET_DAT 0x20 /* reset a stream from on_stream_data after some bytes */
#define FM_POL_REENTER   0x40 /* pull / open from callbacks */
#define FM_POL_SESSION   0x80 /* GoAway / wp_mux_free from on_stream_fin */

/* Limits for both muxes; max_ctrl_frames >= 2 * max_streams + max_pending_syn + 8 so a
 * genuine peer can never overflow the control queue between two pulls. */
static const wp_mux_config fm_configs[4] = {
    {.initial_window = 4096,
     .max_data = 1024,
     .write_slack = 1024,
     .max_streams = 8,
     .max_pending_syn = 4,
     .max_ctrl_frames = 64,
     .max_buffered = 8192,
     .ping_interval_ms = 1000,
     .dead_timeout_ms = 8000,
     .reap_timeout_ms = 3000,
     .open_ack_timeout_ms = 2000},
    {.initial_window = 16384,
     .max_data = 16384,
     .write_slack = 512,
     .max_streams = 16,
     .max_pending_syn = 8,
     .max_ctrl_frames = 64,
     .max_buffered = 32768,
     .ping_interval_ms = 2000,
     .dead_timeout_ms = 16000,
     .reap_timeout_ms = 6000,
     .open_ack_timeout_ms = 4000,
     .send_window_max = 65536, /* windows grow (PROTOCOL.md §7.1) */
     .recv_window_max = 65536,
     .window_grow_ms = 50},
    {.initial_window = 256,
     .max_data = 64,
     .write_slack = 100,
     .max_streams = 4,
     .max_pending_syn = 2,
     .max_ctrl_frames = 24,
     .max_buffered = 512,
     .ping_interval_ms = 500,
     .dead_timeout_ms = 4000,
     .reap_timeout_ms = 1500,
     .open_ack_timeout_ms = 1000},
    {.initial_window = 65536,
     .max_data = 16384,
     .write_slack = 4096,
     .max_streams = 32,
     .max_pending_syn = 16,
     .max_ctrl_frames = 128,
     .max_buffered = 131072,
     .ping_interval_ms = 1000,
     .dead_timeout_ms = 8000,
     .reap_timeout_ms = 3000,
     .open_ack_timeout_ms = 2000,
     .send_window_max = 1048576, /* growth capped by the budget (2 windows) */
     .recv_window_max = 1048576,
     .window_grow_ms = 1000},
};

/* Pull sizes: all >= 67, enough for any SYN with the preambles below. */
static const size_t fm_pull_sizes[8] = {80, 128, 300, 1024, 4096, 16396, 65536, 262144};

/* Preambles (<= 53 bytes: fit max_data 64 and the smallest pull). */
static const char *const fm_preambles[4] = {
    "{\"service\":\"wolf\"}", "{\"service\":\"probe\"}",
    "{\"service\":\"sandbox\",\"host\":\"lobby\",\"port\":9}", "x"};

/* ---- the wire checker: what one end sent and received ---- */

typedef struct fm_track {
    uint32_t id;
    uint8_t used, syn_in, syn_out, ack_out, fin_out, rst_out;
    uint64_t sent;        /* Data payload bytes this end sent (preamble included) */
    uint64_t granted_in;  /* credit the other end granted this end */
    uint64_t recv_in;     /* Data payload bytes this end received */
    uint64_t granted_out; /* credit this end granted */
} fm_track;

typedef struct fm_wire {
    wp_frame_parser in, out; /* every byte fed to / pulled from this end */
    fm_track t[FM_TRACK_CAP];
    size_t nt;
    uint32_t last_syn_out;
    uint64_t pings_in, acks_out;
} fm_wire;

/* ---- the owner's view of one mux ---- */

typedef struct fm_stream {
    uint32_t id;
    int live, pending, fin_recv, fin_req, blocked, in_write;
    void *sud;
    uint64_t delivered, consumed, written, debt;
} fm_stream;

typedef struct fm_side {
    wp_mux *m;
    wp_mux_role role;
    int is_m; /* the mux under test; else the peer */
    uint8_t policy;
    fm_stream st[FM_MAX_LIVE];
    size_t live, npending;
    uint64_t unconsumed; /* sum of delivered - consumed over the live streams */
    uint32_t highest_in; /* server: highest id announced or refused */
    uint32_t next_open;  /* client: the id the next open must get */
    uint32_t sud_seq, opens;
    int err; /* sticky wp_mux_error seen at the top level */
    int errors, goaway_in, dead, timeouts;
    int goaway_expect; /* code of the GoAway this end must send, -1: none */
    int goaway_out;    /* its GoAway frame was pulled */
    int armed;         /* on_writable allowed (conservative: set at each pull) */
    int in_feed, in_call, cb_depth, pulling, free_req, drained;
    int check_content; /* incoming Data follows the sender's pattern */
    unsigned frames_out, data_frames_out, closed[5]; /* for WP_FUZZ_MUX_DUMP */
    wp_buf out;
    size_t pull_max;
    fm_wire w;
} fm_side;

static struct fm_run {
    fm_side s[2]; /* [0] = M, [1] = P */
    const wp_mux_config *cfg;
    uint64_t now;
    int raw_used;
    unsigned chunking, pulls;
} R;

#define FM_M (&R.s[0])
#define FM_P (&R.s[1])

static uint8_t fm_pat(uint32_t id, uint64_t k)
{
    return (uint8_t)(k * 7u + (k >> 8) * 13u + id * 29u + 1u);
}

static size_t fm_min(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* ---- wire checker ---- */

static fm_track *fm_track_get(fm_wire *w, uint32_t id)
{
    size_t i = (size_t)(id * 2654435761u) & (FM_TRACK_CAP - 1);
    while (w->t[i].used) {
        if (w->t[i].id == id)
            return &w->t[i];
        i = (i + 1) & (FM_TRACK_CAP - 1);
    }
    if (w->nt >= FM_TRACK_CAP / 2)
        return NULL; /* full: stop checking new ids */
    w->t[i].used = 1;
    w->t[i].id = id;
    w->nt++;
    return &w->t[i];
}

/* Mirrors what the end received (frames it may not all have read: only loosens checks). */
static void fm_wire_in(fm_side *s, const uint8_t *p, size_t n)
{
    fm_wire *w = &s->w;
    wp_frame f;
    while (wp_frame_parser_next(&w->in, &p, &n, &f) == 1) {
        fm_track *t = f.hdr.stream_id ? fm_track_get(w, f.hdr.stream_id) : NULL;
        if (f.hdr.type == WP_FRAME_TYPE_DATA && t) {
            if (f.hdr.flags & WP_FRAME_FLAG_SYN)
                t->syn_in = 1;
            t->recv_in += f.payload_len;
        } else if (f.hdr.type == WP_FRAME_TYPE_WINDOW_UPDATE && t) {
            t->granted_in += f.hdr.length;
        } else if (f.hdr.type == WP_FRAME_TYPE_PING && (f.hdr.flags & WP_FRAME_FLAG_SYN)) {
            w->pings_in++;
        }
    }
}

/* Checks one frame this end sent. err_at_pull: wp_mux_error() when the pull began. */
static void fm_wire_frame(fm_side *s, const wp_frame *f, int err_at_pull)
{
    fm_wire *w = &s->w;
    const wp_frame_hdr *h = &f->hdr;
    s->frames_out++;
    s->data_frames_out += h->type == WP_FRAME_TYPE_DATA;
    WP_FUZZ_CHECK(!s->goaway_out); /* nothing after GoAway */
    if (err_at_pull)
        WP_FUZZ_CHECK(h->type == WP_FRAME_TYPE_GOAWAY);
    if (h->type == WP_FRAME_TYPE_GOAWAY) {
        WP_FUZZ_CHECK(err_at_pull != 0);
        WP_FUZZ_CHECK(s->goaway_expect >= 0 && h->length == (uint32_t)s->goaway_expect);
        s->goaway_out = 1;
        return;
    }
    if (h->type == WP_FRAME_TYPE_PING) {
        if (h->flags & WP_FRAME_FLAG_ACK) {
            w->acks_out++;
            WP_FUZZ_CHECK(w->acks_out <= w->pings_in);
        }
        return;
    }
    fm_track *t = fm_track_get(w, h->stream_id);
    if (!t)
        return;
    WP_FUZZ_CHECK(!t->rst_out); /* nothing after RST */
    if (h->type == WP_FRAME_TYPE_WINDOW_UPDATE) {
        if (h->flags & WP_FRAME_FLAG_RST) {
            WP_FUZZ_CHECK(t->syn_in || t->syn_out);
            t->rst_out = 1;
            return;
        }
        WP_FUZZ_CHECK(!(h->flags & WP_FRAME_FLAG_FIN)); /* the mux sends FIN on Data */
        WP_FUZZ_CHECK(h->length > 0 || (h->flags & WP_FRAME_FLAG_ACK)); /* nothing moot */
        if (h->flags & WP_FRAME_FLAG_ACK) {
            WP_FUZZ_CHECK(s->role == WP_MUX_SERVER && t->syn_in && !t->ack_out);
            t->ack_out = 1;
        }
        t->granted_out += h->length;
        WP_FUZZ_CHECK(t->granted_out <= t->recv_in); /* credit only for data received */
        return;
    }
    /* Data */
    if (h->flags & WP_FRAME_FLAG_SYN) {
        size_t off, jl, used;
        WP_FUZZ_CHECK(s->role == WP_MUX_CLIENT);
        WP_FUZZ_CHECK(h->stream_id > w->last_syn_out && !t->syn_out);
        w->last_syn_out = h->stream_id;
        WP_FUZZ_CHECK(wp_frame_preamble_decode(f->payload, f->payload_len, &off, &jl, &used) == 0);
        t->syn_out = 1;
    } else if (s->role == WP_MUX_CLIENT) {
        WP_FUZZ_CHECK(t->syn_out);
    } else {
        WP_FUZZ_CHECK(t->ack_out);
    }
    if (!(h->flags & WP_FRAME_FLAG_SYN)) /* an empty Data frame carries FIN */
        WP_FUZZ_CHECK(h->length > 0 || (h->flags & WP_FRAME_FLAG_FIN));
    WP_FUZZ_CHECK(!t->fin_out);
    t->sent += f->payload_len;
    WP_FUZZ_CHECK(t->sent <= R.cfg->initial_window + t->granted_in);
    WP_FUZZ_CHECK(f->payload_len <= R.cfg->max_data);
    if (h->flags & WP_FRAME_FLAG_FIN)
        t->fin_out = 1;
}

static void fm_wire_out(fm_side *s, const uint8_t *p, size_t n, int err_at_pull)
{
    wp_frame f;
    for (;;) {
        int rc = wp_frame_parser_next(&s->w.out, &p, &n, &f);
        WP_FUZZ_CHECK(rc == 0 || rc == 1); /* never an invalid header */
        if (rc == 0)
            break;
        fm_wire_frame(s, &f, err_at_pull);
    }
    WP_FUZZ_CHECK(wp_frame_parser_pending(&s->w.out) == 0); /* whole frames only */
}

/* ---- owner bookkeeping ---- */

/* The largest receive window of the run's config (windows grow up to it, §7.1). */
static uint64_t fm_win_max(void)
{
    return R.cfg->recv_window_max > R.cfg->initial_window ? R.cfg->recv_window_max
                                                          : R.cfg->initial_window;
}

static fm_stream *fm_find(fm_side *s, uint32_t id)
{
    for (size_t i = 0; i < FM_MAX_LIVE; i++)
        if (s->st[i].live && s->st[i].id == id)
            return &s->st[i];
    return NULL;
}

static fm_stream *fm_add(fm_side *s, uint32_t id, void *sud, int pending)
{
    WP_FUZZ_CHECK(!fm_find(s, id));
    for (size_t i = 0; i < FM_MAX_LIVE; i++) {
        fm_stream *h = &s->st[i];
        if (h->live)
            continue;
        memset(h, 0, sizeof(*h));
        h->live = 1;
        h->id = id;
        h->sud = sud;
        h->pending = pending;
        s->live++;
        s->npending += pending ? 1 : 0;
        return h;
    }
    WP_FUZZ_CHECK(!"more live streams than any max_streams");
    return NULL;
}

static void fm_drop(fm_side *s, fm_stream *h)
{
    h->live = 0;
    s->live--;
    s->unconsumed -= h->delivered - h->consumed;
    if (h->pending)
        s->npending--;
}

/* The (k % live)-th live stream, or NULL. */
static fm_stream *fm_pick(fm_side *s, unsigned k)
{
    if (!s->live)
        return NULL;
    k %= (unsigned)s->live;
    for (size_t i = 0; i < FM_MAX_LIVE; i++)
        if (s->st[i].live && k-- == 0)
            return &s->st[i];
    return NULL;
}

static void *fm_sud_new(fm_side *s)
{
    return (void *)(uintptr_t)(((uintptr_t)++s->sud_seq << 4) | (uintptr_t)(s->is_m ? 8 : 4));
}

/* Brackets every call into s->m that may call back; performs a deferred free's bookkeeping. */
static void fm_enter(fm_side *s)
{
    s->in_call++;
}

static void fm_leave(fm_side *s)
{
    if (--s->in_call == 0 && s->free_req) {
        s->m = NULL; /* destroyed when the outermost call returned */
        memset(s->st, 0, sizeof(s->st));
        s->live = s->npending = 0;
        s->unconsumed = 0;
    }
}

static int fm_usable(const fm_side *s)
{
    return s->m && !s->free_req;
}

/* ---- actions on one mux (from callbacks or the top level) ---- */

static void fm_pull_all(fm_side *s);

static void fm_write(fm_side *s, uint32_t id, size_t n)
{
    fm_stream *h = fm_find(s, id);
    if (!fm_usable(s) || !h || h->in_write || n == 0)
        return;
    n = fm_min(n, FM_WRITE_MAX);
    uint8_t buf[FM_WRITE_MAX];
    for (size_t i = 0; i < n; i++)
        buf[i] = fm_pat(id, h->written + i);
    int open = wp_mux_error(s->m) == 0;
    int state = (s->role == WP_MUX_SERVER && h->pending) || h->fin_req;
    size_t room = wp_mux_write_room(s->m, id);
    size_t k = fm_min(n, room);
    int was_blocked = h->blocked;
    /* applied first: callbacks run before the call returns */
    if (open && !state) {
        h->written += k;
        h->blocked = h->blocked || k < n;
    } else {
        WP_FUZZ_CHECK(room == 0);
    }
    h->in_write = 1;
    fm_enter(s);
    int rc = wp_mux_write(s->m, id, buf, n);
    fm_leave(s);
    h = fm_find(s, id);
    if (h)
        h->in_write = 0;
    if (rc >= 0) {
        WP_FUZZ_CHECK(open && !state);
        WP_FUZZ_CHECK((size_t)rc == k);
        if (h)
            h->debt -= fm_min(h->debt, k);
        return;
    }
    if (h && open && !state) {
        h->written -= k;
        h->blocked = was_blocked;
    }
    if (rc == WP_ERR_STATE)
        WP_FUZZ_CHECK(state);
    else if (rc == WP_ERR_CLOSED)
        WP_FUZZ_CHECK(!open);
    else
        WP_FUZZ_CHECK(rc == WP_ERR_NOT_FOUND && s->cb_depth > 0); /* ended, callback pending */
}

static void fm_write_debt(fm_side *s, uint32_t id)
{
    fm_stream *h = fm_find(s, id);
    if (h && h->debt && !h->blocked)
        fm_write(s, id, (size_t)fm_min(h->debt, FM_WRITE_MAX));
}

static void fm_consume(fm_side *s, uint32_t id, uint64_t n)
{
    fm_stream *h = fm_find(s, id);
    if (!fm_usable(s) || !h || n == 0 || n > h->delivered - h->consumed)
        return;
    h->consumed += n;
    s->unconsumed -= n;
    fm_enter(s);
    int rc = (n & 1) ? wp_mux_consumed(s->m, id, (size_t)n)
                     : wp_mux_consumed_at(s->m, id, (size_t)n, R.now);
    fm_leave(s);
    if (rc == 0)
        return;
    WP_FUZZ_CHECK(rc == WP_ERR_CLOSED || rc == WP_ERR_LIMIT ||
                  (rc == WP_ERR_NOT_FOUND && s->cb_depth > 0));
    if ((h = fm_find(s, id)) != NULL) {
        h->consumed -= n;
        s->unconsumed += n;
    }
}

static void fm_close_write(fm_side *s, uint32_t id)
{
    fm_stream *h = fm_find(s, id);
    if (!fm_usable(s) || !h)
        return;
    int open = wp_mux_error(s->m) == 0;
    int state = s->role == WP_MUX_SERVER && h->pending;
    int was_fin = h->fin_req, was_blocked = h->blocked;
    if (open && !state) {
        h->fin_req = 1;
        h->blocked = 0;
        h->debt = 0;
    }
    fm_enter(s);
    int rc = wp_mux_close_write(s->m, id);
    fm_leave(s);
    if (rc == 0) {
        WP_FUZZ_CHECK(open && !state);
        return;
    }
    if ((h = fm_find(s, id)) != NULL && open && !state) {
        h->fin_req = was_fin;
        h->blocked = was_blocked;
    }
    if (rc == WP_ERR_STATE)
        WP_FUZZ_CHECK(state);
    else if (rc == WP_ERR_CLOSED)
        WP_FUZZ_CHECK(!open);
    else
        WP_FUZZ_CHECK(rc == WP_ERR_NOT_FOUND && s->cb_depth > 0);
}

static void fm_reset(fm_side *s, uint32_t id)
{
    fm_stream *h = fm_find(s, id);
    if (!fm_usable(s) || !h)
        return;
    fm_stream saved = *h;
    fm_drop(s, h); /* an owner-initiated end never calls back */
    fm_enter(s);
    int rc = wp_mux_reset(s->m, id);
    fm_leave(s);
    if (rc == 0 || rc == WP_ERR_LIMIT)
        return;
    WP_FUZZ_CHECK(rc == WP_ERR_CLOSED || (rc == WP_ERR_NOT_FOUND && s->cb_depth > 0));
    if (s->m) { /* not reset: on_stream_closed is still owed */
        fm_stream *back = fm_add(s, id, saved.sud, saved.pending);
        *back = saved;
        s->unconsumed += saved.delivered - saved.consumed;
    }
}

static void fm_accept(fm_side *s, uint32_t id)
{
    fm_stream *h = fm_find(s, id);
    if (!fm_usable(s) || !h)
        return;
    int open = wp_mux_error(s->m) == 0;
    int was_pending = h->pending;
    void *sud = fm_sud_new(s);
    fm_enter(s);
    int rc = wp_mux_accept(s->m, id, sud);
    fm_leave(s);
    h = fm_find(s, id);
    if (rc == 0) {
        WP_FUZZ_CHECK(open && was_pending && s->role == WP_MUX_SERVER);
        if (h && h->pending) {
            h->pending = 0;
            s->npending--;
            h->sud = sud;
        }
        return;
    }
    if (rc == WP_ERR_STATE)
        WP_FUZZ_CHECK(s->role == WP_MUX_CLIENT || !was_pending);
    else if (rc == WP_ERR_CLOSED)
        WP_FUZZ_CHECK(!open);
    else
        WP_FUZZ_CHECK(rc == WP_ERR_LIMIT || (rc == WP_ERR_NOT_FOUND && s->cb_depth > 0));
}

/* Client: opens a stream with preamble #which and `initial` bytes written before the SYN. */
static void fm_open(fm_side *s, unsigned which, size_t initial)
{
    if (!fm_usable(s) || s->opens >= FM_MAX_OPENS)
        return;
    const char *json = fm_preambles[which % 4];
    int open = wp_mux_error(s->m) == 0;
    size_t live = s->live, npending = s->npending, buffered = wp_mux_buffered_bytes(s->m);
    void *sud = fm_sud_new(s);
    uint32_t id = 0;
    fm_enter(s);
    int rc = wp_mux_open(s->m, json, strlen(json), sud, &id);
    fm_leave(s);
    if (rc == 0) {
        WP_FUZZ_CHECK(s->role == WP_MUX_CLIENT && open && !s->drained);
        WP_FUZZ_CHECK(id == s->next_open);
        s->next_open += 2;
        s->opens++;
        if (s->m && !fm_find(s, id)) {
            fm_add(s, id, sud, 1);
            if (initial)
                fm_write(s, id, initial);
        }
        return;
    }
    if (rc == WP_ERR_STATE)
        WP_FUZZ_CHECK(s->role == WP_MUX_SERVER);
    else if (rc == WP_ERR_CLOSED)
        WP_FUZZ_CHECK(!open || s->drained);
    else if (rc == WP_ERR_LIMIT)
        WP_FUZZ_CHECK(live >= R.cfg->max_streams);
    else
        WP_FUZZ_CHECK(rc == WP_ERR_BUSY &&
                      (npending >= R.cfg->max_pending_syn || buffered >= R.cfg->max_buffered));
}

static void fm_goaway(fm_side *s, uint32_t code)
{
    if (!fm_usable(s))
        return;
    int open = wp_mux_error(s->m) == 0;
    if (open)
        s->goaway_expect = (int)code; /* callbacks (on_stream_closed) run before it returns */
    fm_enter(s);
    int rc = wp_mux_goaway(s->m, code);
    fm_leave(s);
    WP_FUZZ_CHECK(open ? rc == 0 : rc == WP_ERR_CLOSED);
}

static void fm_drain(fm_side *s)
{
    if (!fm_usable(s))
        return;
    int open = wp_mux_error(s->m) == 0;
    int rc = wp_mux_drain(s->m);
    WP_FUZZ_CHECK(open ? rc == 0 : rc == WP_ERR_CLOSED);
    if (rc == 0)
        s->drained = 1;
}

static void fm_ping(fm_side *s)
{
    if (!fm_usable(s))
        return;
    fm_enter(s);
    int rc = wp_mux_ping(s->m, R.now);
    fm_leave(s);
    WP_FUZZ_CHECK(rc == 0 || rc == WP_ERR_BUSY || rc == WP_ERR_CLOSED || rc == WP_ERR_LIMIT);
}

/* ---- feeding ---- */

static void fm_check(fm_side *s);
static void fm_feed_p(const uint8_t *p, size_t n);

/* Feeds bytes to M in chunks (pattern R.chunking), advancing the clock between them. */
static void fm_feed_m(const uint8_t *p, size_t n)
{
    static const size_t sizes[3][8] = {
        {1, 2, 3, 5, 7, 11, 13, 64}, {12, 1, 4096, 7, 100, 24, 16396, 2}, {1, 1, 1, 1, 1, 1, 1, 1}};
    fm_side *s = FM_M;
    fm_wire_in(s, p, n);
    size_t k = n % 8;
    unsigned mode = R.chunking & 3;
    if (mode == 3 && n > 4096)
        mode = 2;
    while (n > 0 && fm_usable(s)) {
        size_t c = mode == 0 ? n : sizes[mode - 1][k++ % 8];
        c = fm_min(c, n);
        int err0 = wp_mux_error(s->m);
        s->in_feed = 1;
        fm_enter(s);
        int rc = wp_mux_feed(s->m, p, c, R.now);
        fm_leave(s);
        s->in_feed = 0;
        if (s->m) {
            int e = wp_mux_error(s->m);
            size_t buffered = wp_mux_buffered_bytes(s->m);
            WP_FUZZ_CHECK(buffered >= s->unconsumed); /* queued: the tunnel budget */
            WP_FUZZ_CHECK(buffered - s->unconsumed <= R.cfg->max_buffered);
            WP_FUZZ_CHECK(rc == 0 || rc == e);
            if (err0)
                WP_FUZZ_CHECK(e == err0);
            if (!R.raw_used)
                WP_FUZZ_CHECK(rc == 0 || rc == WP_ERR_CLOSED || rc == WP_ERR_TIMEOUT);
        }
        if (c == n || k % 8 == 0)
            fm_check(s); /* before any pull drains the queues */
        p += c;
        n -= c;
        R.now += k % 3;
    }
}

static void fm_feed_p(const uint8_t *p, size_t n)
{
    fm_side *s = FM_P;
    fm_wire_in(s, p, n);
    if (!fm_usable(s) || n == 0)
        return;
    s->in_feed = 1;
    fm_enter(s);
    int rc = wp_mux_feed(s->m, p, n, R.now);
    fm_leave(s);
    s->in_feed = 0;
    WP_FUZZ_CHECK(rc == 0 || rc == wp_mux_error(s->m));
}

/* ---- pulling ---- */

static void fm_pull_all(fm_side *s)
{
    if (!fm_usable(s) || s->pulling)
        return;
    int zeros = 0;
    for (unsigned i = 0;; i++) {
        WP_FUZZ_CHECK(i < FM_PULL_LIMIT);
        if (!fm_usable(s))
            return;
        size_t max = s->pull_max - (R.pulls++ % 13);
        int err0 = wp_mux_error(s->m);
        WP_FUZZ_CHECK(wp_buf_len(&s->out) == 0);
        s->armed = 1;
        s->pulling = 1;
        fm_enter(s);
        int rc = wp_mux_pull(s->m, &s->out, max);
        fm_leave(s);
        s->pulling = 0;
        WP_FUZZ_CHECK(rc >= 0);
        WP_FUZZ_CHECK((size_t)rc == wp_buf_len(&s->out) && (size_t)rc <= max);
        if (rc > 0) {
            fm_wire_out(s, wp_buf_ptr(&s->out), (size_t)rc, err0);
            if (s->is_m)
                fm_feed_p(wp_buf_ptr(&s->out), (size_t)rc);
            else if (!R.raw_used && fm_usable(FM_M))
                fm_feed_m(wp_buf_ptr(&s->out), (size_t)rc);
            wp_buf_reset(&s->out);
            zeros = 0;
            continue;
        }
        if (!s->m || !wp_mux_want_pull(s->m))
            return;
        /* output appeared from a callback after the pull emptied the queue */
        WP_FUZZ_CHECK(++zeros < 3);
    }
}

/* ---- callbacks (shared by both muxes; ud is the fm_side) ---- */

/*
 * WP_FUZZ_MUX_LENIENT=1 (environment) skips the checks of known mux.c
 * deviations from mux.h, so fuzzing can go past them until they are fixed:
 *   - wp_mux_feed from a callback that wp_mux_feed delivers after its parse
 *     loop (on_writable, on_stream_writable, on_stream_closed from mux_leave)
 *     consumes the bytes instead of returning WP_ERR_STATE (crash-mux-1).
 */
static int fm_lenient(void)
{
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("WP_FUZZ_MUX_LENIENT");
        v = e && e[0] == '1';
    }
    return v;
}

/* Common callback prologue. deferrable: the mux may deliver it after the parse loop. */
static fm_side *fm_cb(wp_mux *m, void *ud, int deferrable)
{
    fm_side *s = ud;
    WP_FUZZ_CHECK(s && s->m == m && !s->free_req && s->in_call > 0);
    WP_FUZZ_CHECK(wp_mux_ud(m) == ud);
    s->cb_depth++;
    if (s->is_m && s->in_feed && (s->policy & FM_POL_REENTER) && !(deferrable && fm_lenient())) {
        static const uint8_t one = 0;
        WP_FUZZ_CHECK(wp_mux_feed(m, &one, 1, R.now) == WP_ERR_STATE);
    }
    return s;
}

static void fm_cb_done(fm_side *s)
{
    s->cb_depth--;
}

static void on_writable(wp_mux *m, void *ud)
{
    fm_side *s = fm_cb(m, ud, 1);
    WP_FUZZ_CHECK(s->armed); /* edge-triggered: once until a pull empties the output */
    s->armed = 0;
    WP_FUZZ_CHECK(wp_mux_want_pull(m));
    if (s->is_m && (s->policy & FM_POL_REENTER))
        fm_pull_all(s);
    fm_cb_done(s);
}

static void on_stream_open(wp_mux *m, void *ud, uint32_t id, const char *pre, size_t len)
{
    fm_side *s = fm_cb(m, ud, 0);
    WP_FUZZ_CHECK(s->role == WP_MUX_SERVER);
    WP_FUZZ_CHECK(pre && len >= 1 && len <= WP_PREAMBLE_MAX);
    WP_FUZZ_CHECK(id != 0 && id % 2 == 0 && id > s->highest_in);
    WP_FUZZ_CHECK(wp_mux_error(m) == 0 && !s->drained);
    s->highest_in = id;
    fm_add(s, id, NULL, 1);
    WP_FUZZ_CHECK(wp_mux_stream_count(m) <= R.cfg->max_streams);
    WP_FUZZ_CHECK(wp_mux_pending_count(m) <= R.cfg->max_pending_syn);
    WP_FUZZ_CHECK(wp_mux_buffered_bytes(m) < R.cfg->max_buffered);
    WP_FUZZ_CHECK(wp_mux_stream_ud(m, id) == NULL);
    unsigned k = id >> 1;
    if ((s->policy & FM_POL_RESET) && k % 4 == 3) {
        fm_reset(s, id);
    } else if ((s->policy & FM_POL_ACCEPT) || k % 3 == 0) {
        fm_accept(s, id);
        if (fm_usable(s) && wp_mux_error(m) == 0) /* a second accept is a state error */
            WP_FUZZ_CHECK(wp_mux_accept(m, id, NULL) == WP_ERR_STATE);
    } else if (fm_usable(s) && wp_mux_error(m) == 0) { /* later: no writes before the accept */
        static const uint8_t b = 1;
        WP_FUZZ_CHECK(wp_mux_write(m, id, &b, 1) == WP_ERR_STATE);
        WP_FUZZ_CHECK(wp_mux_close_write(m, id) == WP_ERR_STATE);
    }
    fm_cb_done(s);
}

static void on_stream_refused(wp_mux *m, void *ud, uint32_t id, int why)
{
    fm_side *s = fm_cb(m, ud, 0);
    WP_FUZZ_CHECK(s->role == WP_MUX_SERVER && !fm_find(s, id) && wp_mux_error(m) == 0);
    WP_FUZZ_CHECK(id != 0 && id % 2 == 0 && id > s->highest_in);
    s->highest_in = id;
    if (why == WP_ERR_CLOSED)
        WP_FUZZ_CHECK(s->drained);
    else if (why == WP_ERR_BUSY)
        WP_FUZZ_CHECK(wp_mux_stream_count(m) >= R.cfg->max_streams ||
                      wp_mux_pending_count(m) >= R.cfg->max_pending_syn ||
                      wp_mux_buffered_bytes(m) >= R.cfg->max_buffered);
    else
        WP_FUZZ_CHECK(why == WP_ERR_PROTO);
    fm_cb_done(s);
}

static void on_stream_ack(wp_mux *m, void *ud, uint32_t id, void *sud)
{
    fm_side *s = fm_cb(m, ud, 0);
    fm_stream *h = fm_find(s, id);
    WP_FUZZ_CHECK(s->role == WP_MUX_CLIENT && h && h->pending && h->sud == sud);
    h->pending = 0;
    s->npending--;
    h->sud = fm_sud_new(s);
    WP_FUZZ_CHECK(wp_mux_set_stream_ud(m, id, h->sud) == 0);
    if (s->is_m && (s->policy & FM_POL_REENTER) && (id >> 1) % 2 == 0)
        fm_open(s, id >> 2, (id >> 1) % 3 * 40);
    fm_cb_done(s);
}

static void on_stream_data(wp_mux *m, void *ud, uint32_t id, void *sud, const uint8_t *p, size_t n)
{
    fm_side *s = fm_cb(m, ud, 0);
    fm_stream *h = fm_find(s, id);
    WP_FUZZ_CHECK(h && h->sud == sud && p && n > 0 && !h->fin_recv);
    if (s->check_content && (!s->is_m || !R.raw_used)) /* M's data: only from P */
        for (size_t i = 0; i < n; i++)
            WP_FUZZ_CHECK(p[i] == fm_pat(id, h->delivered + i));
    h->delivered += n;
    s->unconsumed += n;
    WP_FUZZ_CHECK(h->delivered - h->consumed <= fm_win_max());
    if (s->is_m)
        h->debt += n; /* M writes back as much as it receives */
    uint8_t first = p[0];
    if ((s->policy & FM_POL_RESET_DAT) && h->delivered >= 600 + (id * 37u) % 2000) {
        fm_reset(s, id);
        fm_cb_done(s);
        return;
    }
    if ((s->policy & FM_POL_CONSUME) && (s->is_m || (id >> 1) % 5 != 4)) { /* P hoards some */
        uint64_t un = h->delivered - h->consumed;
        fm_consume(s, id, (first & 1) || !s->is_m ? un : un / 2);
    }
    if ((s->policy & FM_POL_ECHO_CB) && s->is_m)
        fm_write_debt(s, id);
    if (s->is_m && (s->policy & FM_POL_REENTER) && (first & 2))
        fm_pull_all(s);
    fm_cb_done(s);
}

static void on_stream_fin(wp_mux *m, void *ud, uint32_t id, void *sud)
{
    fm_side *s = fm_cb(m, ud, 0);
    fm_stream *h = fm_find(s, id);
    WP_FUZZ_CHECK(h && h->sud == sud && !h->fin_recv);
    h->fin_recv = 1;
    unsigned k = id >> 1;
    if ((s->policy & FM_POL_CLOSE_FIN) && !(s->role == WP_MUX_SERVER && h->pending)) {
        fm_write_debt(s, id);
        fm_close_write(s, id);
    }
    if (s->is_m && (s->policy & FM_POL_SESSION)) {
        if (k % 16 == 7)
            fm_goaway(s, (k >> 4) % 3);
        else if (k % 16 == 13) {
            s->free_req = 1;
            wp_mux_free(m); /* deferred until the outermost call returns */
            WP_FUZZ_CHECK(wp_mux_write(m, id, "x", 1) == WP_ERR_CLOSED);
            WP_FUZZ_CHECK(wp_mux_tick(m, R.now) == WP_ERR_CLOSED);
        }
    }
    fm_cb_done(s);
}

static void on_stream_writable(wp_mux *m, void *ud, uint32_t id, void *sud)
{
    fm_side *s = fm_cb(m, ud, 1);
    fm_stream *h = fm_find(s, id);
    WP_FUZZ_CHECK(h && h->sud == sud && h->blocked && !h->fin_req);
    WP_FUZZ_CHECK(wp_mux_write_room(m, id) > 0);
    h->blocked = 0;
    fm_write_debt(s, id);
    fm_cb_done(s);
}

static void on_stream_closed(wp_mux *m, void *ud, uint32_t id, void *sud, int reason)
{
    fm_side *s = fm_cb(m, ud, 1);
    fm_stream *h = fm_find(s, id);
    WP_FUZZ_CHECK(h && h->sud == sud);
    WP_FUZZ_CHECK(wp_mux_stream_ud(m, id) == NULL); /* unknown from now on */
    WP_FUZZ_CHECK(wp_mux_set_stream_ud(m, id, NULL) == WP_ERR_NOT_FOUND);
    WP_FUZZ_CHECK(strcmp(wp_mux_close_reason_name(reason), "unknown") != 0);
    switch (reason) {
    case WP_MUX_CLOSE_DONE:
        WP_FUZZ_CHECK(h->fin_recv && h->fin_req);
        break;
    case WP_MUX_CLOSE_RESET:
        break;
    case WP_MUX_CLOSE_OPEN_TIMEOUT:
        WP_FUZZ_CHECK(s->role == WP_MUX_CLIENT && h->pending);
        s->timeouts++;
        break;
    case WP_MUX_CLOSE_REAPED:
        WP_FUZZ_CHECK(h->fin_recv || h->fin_req);
        s->timeouts++;
        break;
    default:
        WP_FUZZ_CHECK(reason == WP_MUX_CLOSE_SESSION && wp_mux_error(m) != 0);
        break;
    }
    fm_drop(s, h);
    s->closed[reason]++;
    if (s->is_m && (s->policy & FM_POL_REENTER) && reason != WP_MUX_CLOSE_SESSION)
        fm_open(s, id >> 1, 0);
    fm_cb_done(s);
}

static void on_goaway(wp_mux *m, void *ud, uint32_t code)
{
    fm_side *s = fm_cb(m, ud, 0);
    WP_FUZZ_CHECK(code <= WP_GOAWAY_INTERNAL_ERROR && ++s->goaway_in == 1);
    WP_FUZZ_CHECK(wp_mux_error(m) == WP_ERR_CLOSED);
    fm_cb_done(s);
}

static void on_error(wp_mux *m, void *ud, int err, const char *reason)
{
    fm_side *s = fm_cb(m, ud, 0);
    if (!R.raw_used) { /* a genuine peer never causes an error, nor does a genuine owner */
        fprintf(stderr, "fuzz_mux: %s reported an error in a genuine session: %d %s\n",
                s->is_m ? "M" : "P", err, reason ? reason : "(null)");
        WP_FUZZ_CHECK(!"on_error in a genuine session");
    }
    WP_FUZZ_CHECK(err == WP_ERR_PROTO || err == WP_ERR_LIMIT || err == WP_ERR_NOMEM);
    WP_FUZZ_CHECK(reason && reason[0] && ++s->errors == 1);
    WP_FUZZ_CHECK(wp_mux_error(m) == err && strcmp(wp_mux_error_reason(m), reason) == 0);
    s->goaway_expect =
        err == WP_ERR_PROTO ? (int)WP_GOAWAY_PROTO_ERROR : (int)WP_GOAWAY_INTERNAL_ERROR;
    fm_cb_done(s);
}

static void on_dead(wp_mux *m, void *ud)
{
    fm_side *s = fm_cb(m, ud, 0);
    WP_FUZZ_CHECK(++s->dead == 1 && wp_mux_error(m) == WP_ERR_TIMEOUT);
    fm_cb_done(s);
}

static const wp_mux_callbacks fm_cbs = {
    .on_writable = on_writable,
    .on_stream_open = on_stream_open,
    .on_stream_refused = on_stream_refused,
    .on_stream_ack = on_stream_ack,
    .on_stream_data = on_stream_data,
    .on_stream_fin = on_stream_fin,
    .on_stream_writable = on_stream_writable,
    .on_stream_closed = on_stream_closed,
    .on_goaway = on_goaway,
    .on_error = on_error,
    .on_dead = on_dead,
};

/* Bytes of arguments after op (0x0: the length byte; the raw bytes are extra). */
static size_t fm_op_args(uint8_t op)
{
    switch (op >> 4) {
    case 0x0:
        return (op & 15) == 15 ? 0 : 1;
    case 0x3:
    case 0x9:
    case 0xA:
        return 1;
    default:
        return 0;
    }
}

/* 1 if the ops from data[pos] include a raw op (the session is then a raw one). */
static int fm_has_raw(const uint8_t *data, size_t size, size_t pos)
{
    while (pos < size) {
        uint8_t op = data[pos++];
        if (op >> 4 == 0)
            return 1;
        pos += fm_op_args(op);
    }
    return 0;
}

/* The owner's view equals the mux's, and the limits hold. Top level only. */
static void fm_check(fm_side *s)
{
    if (!fm_usable(s) || s->in_call)
        return;
    wp_mux *m = s->m;
    int e = wp_mux_error(m);
    if (s->err)
        WP_FUZZ_CHECK(e == s->err); /* sticky */
    s->err = e;
    const char *why = wp_mux_error_reason(m);
    WP_FUZZ_CHECK(why && (e ? why[0] != '\0' : why[0] == '\0'));
    size_t count = wp_mux_stream_count(m), buffered = wp_mux_buffered_bytes(m);
    WP_FUZZ_CHECK(count == s->live && count <= R.cfg->max_streams);
    WP_FUZZ_CHECK(wp_mux_pending_count(m) == s->npending);
    WP_FUZZ_CHECK(s->npending <= R.cfg->max_pending_syn);
    if (e) {
        WP_FUZZ_CHECK(count == 0 && buffered == 0);
        WP_FUZZ_CHECK(wp_mux_next_deadline(m) == UINT64_MAX);
    }
    size_t queued = 0, unconsumed = 0;
    for (size_t i = 0; i < FM_MAX_LIVE; i++) {
        fm_stream *h = &s->st[i];
        if (!h->live)
            continue;
        wp_mux_stream_stats st;
        WP_FUZZ_CHECK(wp_mux_stream_stats_get(m, h->id, &st) == 0);
        WP_FUZZ_CHECK(wp_mux_stream_ud(m, h->id) == h->sud);
        WP_FUZZ_CHECK(st.unconsumed == h->delivered - h->consumed);
        WP_FUZZ_CHECK(st.unconsumed <= st.window && st.window <= fm_win_max());
        WP_FUZZ_CHECK(st.window >= R.cfg->initial_window);
        WP_FUZZ_CHECK(st.recv_window + st.unconsumed + st.credit_pending <= st.window);
        WP_FUZZ_CHECK(!!st.pending == !!h->pending && !!st.remote_fin == !!h->fin_recv);
        WP_FUZZ_CHECK(!!st.local_fin == !!h->fin_req);
        WP_FUZZ_CHECK(st.send_window <= fm_win_max());
        WP_FUZZ_CHECK(st.recv_window <= st.window);
        WP_FUZZ_CHECK(st.queued <= (size_t)st.send_window + R.cfg->write_slack);
        WP_FUZZ_CHECK(!st.local_fin_sent || st.local_fin);
        queued += st.queued;
        unconsumed += st.unconsumed;
    }
    WP_FUZZ_CHECK(buffered == queued + unconsumed && unconsumed == s->unconsumed);
    WP_FUZZ_CHECK(wp_mux_rtt_ms(m) >= -1);
    WP_FUZZ_CHECK(queued <= R.cfg->max_buffered); /* the tunnel budget for queued output */
}

static void fm_tick(fm_side *s)
{
    if (!fm_usable(s))
        return;
    uint64_t dl = wp_mux_next_deadline(s->m);
    int e0 = wp_mux_error(s->m), t0 = s->timeouts;
    fm_enter(s);
    int rc = wp_mux_tick(s->m, R.now);
    fm_leave(s);
    if (!s->m)
        return;
    WP_FUZZ_CHECK(rc == wp_mux_error(s->m));
    if (e0 == 0 && dl != 0 && R.now < dl) /* nothing was due */
        WP_FUZZ_CHECK(rc == 0 && s->timeouts == t0 && !s->dead);
}

/* Top-level owner work: deferred accepts, consumption, writes, closes. */
static void fm_deferred(fm_side *s)
{
    for (size_t i = 0; i < FM_MAX_LIVE && fm_usable(s); i++) {
        fm_stream *h = &s->st[i];
        if (!h->live)
            continue;
        uint32_t id = h->id;
        unsigned k = id >> 1;
        if (s->role == WP_MUX_SERVER && h->pending && k % 7 != 5)
            fm_accept(s, id);
        if ((h = fm_find(s, id)) == NULL)
            continue;
        if (!(s->policy & FM_POL_CONSUME) && k % 5 != 4)
            fm_consume(s, id, h->delivered - h->consumed);
        else if (!s->is_m && k % 5 == 4 && R.now % 4 == 0) /* P gives back credit late */
            fm_consume(s, id, h->delivered - h->consumed);
        fm_write_debt(s, id);
        if ((h = fm_find(s, id)) == NULL)
            continue;
        if (h->fin_recv && !h->fin_req && h->debt == 0 && k % 6 != 1 &&
            !(s->role == WP_MUX_SERVER && h->pending))
            fm_close_write(s, id);
    }
}

/* Exchanges output both ways until neither end has anything to send. */
static void fm_pump(void)
{
    fm_tick(FM_M);
    fm_tick(FM_P);
    for (int round = 0; round < FM_PUMP_LIMIT; round++) {
        unsigned before = R.pulls;
        fm_deferred(FM_P);
        fm_pull_all(FM_P);
        fm_deferred(FM_M);
        fm_pull_all(FM_M);
        fm_check(FM_M);
        fm_check(FM_P);
        int busy = (fm_usable(FM_M) && wp_mux_want_pull(FM_M->m)) ||
                   (fm_usable(FM_P) && wp_mux_want_pull(FM_P->m));
        if (!busy && R.pulls - before <= 2)
            break;
    }
}

static void fm_m_op(unsigned a, unsigned sel)
{
    fm_side *s = FM_M;
    fm_stream *h = fm_pick(s, sel);
    uint32_t id = h ? h->id : 0;
    switch (a) {
    case 0:
        if (s->role == WP_MUX_CLIENT)
            fm_open(s, sel, sel % 5 * 100);
        else if (h)
            fm_accept(s, id);
        break;
    case 1:
        if (h)
            fm_write(s, id, sel * 32 + 1);
        break;
    case 2:
        if (h)
            fm_close_write(s, id);
        break;
    case 3:
        if (h)
            fm_reset(s, id);
        break;
    case 4:
        for (size_t i = 0; i < FM_MAX_LIVE; i++)
            if (s->st[i].live)
                fm_consume(s, s->st[i].id, s->st[i].delivered - s->st[i].consumed);
        break;
    case 5:
        fm_ping(s);
        break;
    case 6:
        fm_goaway(s, sel % 3);
        break;
    case 7:
        fm_drain(s);
        break;
    case 8:
        if (h && fm_usable(s) && wp_mux_error(s->m) == 0)
            WP_FUZZ_CHECK(wp_mux_consumed(s->m, id, (size_t)(h->delivered - h->consumed) + 1) ==
                          WP_ERR_INVAL);
        break;
    default:
        if (fm_usable(s)) {
            fm_enter(s);
            wp_mux_touch(s->m, R.now);
            fm_leave(s);
        }
        break;
    }
}

/* One summary line per side on stderr (WP_FUZZ_MUX_DUMP=1). */
static void fm_dump(void)
{
    for (int i = 0; i < 2; i++) {
        const fm_side *s = &R.s[i];
        const char *end = s->free_req ? "freed in a callback"
                          : s->m      ? wp_mux_error_reason(s->m)
                                      : "";
        fprintf(stderr,
                "fuzz_mux: %s %s%s frames %u (data %u) opens %u closed done %u reset %u "
                "timeout %u reaped %u session %u; %s\n",
                i ? "P" : "M", s->role == WP_MUX_CLIENT ? "client" : "server",
                R.raw_used ? " raw" : "", s->frames_out, s->data_frames_out,
                s->role == WP_MUX_CLIENT ? s->opens : (unsigned)(s->highest_in / 2), s->closed[0],
                s->closed[1], s->closed[2], s->closed[3], s->closed[4], end);
    }
}

static void fm_side_init(fm_side *s, wp_mux_role role, int is_m, uint8_t policy, size_t pull_max)
{
    memset(s, 0, sizeof(*s));
    s->role = role;
    s->is_m = is_m;
    s->policy = policy;
    s->goaway_expect = -1;
    s->armed = 1; /* armed at creation */
    s->next_open = WP_STREAM_ID_FIRST;
    s->pull_max = pull_max;
    s->check_content = 1;
    wp_frame_parser_init(&s->w.in);
    wp_frame_parser_init(&s->w.out);
    wp_buf_init(&s->out, pull_max);
    s->m = wp_mux_new(role, R.cfg, &fm_cbs, s);
    WP_FUZZ_CHECK(s->m != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t setup = data[0];
    R.cfg = &fm_configs[(setup >> 1) & 3];
    R.now = 1000;
    R.raw_used = fm_has_raw(data, size, 2);
    R.chunking = setup >> 6;
    R.pulls = 0;
    wp_mux_role mrole = (setup & 1) ? WP_MUX_CLIENT : WP_MUX_SERVER;
    wp_mux_role prole = mrole == WP_MUX_CLIENT ? WP_MUX_SERVER : WP_MUX_CLIENT;
    size_t pull_max = fm_pull_sizes[(setup >> 3) & 7];
    fm_side_init(FM_M, mrole, 1, data[1], pull_max);
    fm_side_init(FM_P, prole, 0, FM_POL_ACCEPT | FM_POL_RESET | FM_POL_CONSUME | FM_POL_CLOSE_FIN,
                 pull_max);
    if (mrole == WP_MUX_CLIENT) { /* wolfpackd opens streams before the agent says anything */
        fm_open(FM_M, 0, 100);
        fm_open(FM_M, 1, 0);
        fm_open(FM_M, 2, 50);
        fm_close_write(FM_M, 6);
    }
    fm_pump();

    size_t pos = 2;
    while (pos < size && fm_usable(FM_M)) {
        uint8_t op = data[pos++];
        unsigned a = op & 15u;
        unsigned arg = pos < size ? data[pos] : 0;
        size_t next = pos + fm_op_args(op); /* past the op's argument bytes */
        switch (op >> 4) {
        case 0x0: {
            size_t n = size - pos;
            if (a != 15)
                n = fm_min((size_t)a << 8 | arg, size - fm_min(next, size));
            pos = fm_min(next, size);
            fm_feed_m(data + pos, n);
            next = pos + n;
            break;
        }
        case 0x1:
            R.now += a == 15 ? R.cfg->dead_timeout_ms + 1 : (uint64_t)a * a * 20;
            break;
        case 0x2:
            if (prole == WP_MUX_CLIENT) {
                fm_open(FM_P, a, (size_t)a * 97);
            } else {
                for (size_t i = 0, k = a; i < FM_MAX_LIVE; i++)
                    if (FM_P->st[i].live && FM_P->st[i].pending && k-- == 0)
                        fm_accept(FM_P, FM_P->st[i].id);
            }
            break;
        case 0x3: {
            fm_stream *h = fm_pick(FM_P, a);
            if (h)
                h->debt += (uint64_t)arg * 32 + 1;
            break;
        }
        case 0x4:
        case 0x5: {
            fm_stream *h = fm_pick(FM_P, a);
            if (h && (op >> 4) == 0x4)
                fm_close_write(FM_P, h->id);
            else if (h)
                fm_reset(FM_P, h->id);
            break;
        }
        case 0x6:
            fm_ping(FM_P);
            if (a & 1)
                fm_ping(FM_M);
            break;
        case 0x7:
            fm_goaway(FM_P, (a & 3) == 3 ? 7 : a & 3);
            break;
        case 0x8:
            fm_drain(FM_P);
            if (a & 1)
                fm_drain(FM_M);
            break;
        case 0x9:
            fm_m_op(a, arg);
            break;
        case 0xA:
            FM_M->policy = (uint8_t)arg;
            break;
        case 0xB:
            FM_M->pull_max = FM_P->pull_max = fm_pull_sizes[a & 7];
            wp_buf_free(&FM_M->out);
            wp_buf_free(&FM_P->out);
            wp_buf_init(&FM_M->out, FM_M->pull_max);
            wp_buf_init(&FM_P->out, FM_P->pull_max);
            R.chunking = a >> 3;
            break;
        default:
            R.now += a;
            break;
        }
        pos = next;
        fm_pump();
    }
    fm_check(FM_M);
    fm_check(FM_P);
    if (getenv("WP_FUZZ_MUX_DUMP"))
        fm_dump();
    for (int i = 0; i < 2; i++) {
        wp_mux_free(R.s[i].m); /* no callbacks */
        R.s[i].m = NULL;
        wp_buf_free(&R.s[i].out);
    }
    return 0;
}
