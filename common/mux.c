/*
 * mux.c — the tunnel's stream multiplexer (see mux.h, PROTOCOL.md §5.4-§10).
 *
 * Structure:
 *   - streams live in an open-addressing table (linear probing, backward-shift
 *     deletion) sized to twice max_streams, plus intrusive lists: `rr` (streams
 *     that can send a Data frame now, in round-robin order), `budget` (writers
 *     blocked on the tunnel budget), `stamps` (streams with a clock-less event
 *     to time-stamp), `closing` (ended, on_stream_closed not yet called) and
 *     `grave` (ended, freed when the outermost call returns);
 *   - control frames wait in a bounded ring (max_ctrl_frames); a WindowUpdate
 *     entry is computed when pulled, so each stream has at most one queued;
 *   - every public entry point brackets its work with mux_enter/mux_leave:
 *     the outermost mux_leave runs deferred callbacks (closed streams, budget
 *     wake-ups, on_writable), frees the grave and performs a deferred free.
 *     Callbacks never run while the table is being walked.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "frame.h"
#include "mux.h"

typedef struct mux_link {
    struct mux_link *prev, *next;
} mux_link;

#define MUX_CONTAINER(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

enum mux_state {
    MUX_OPEN = 0,    /* running (draining included) */
    MUX_GOAWAY_SENT, /* wp_mux_goaway: GoAway queued, streams closed */
    MUX_GOAWAY_RECV, /* the peer's GoAway arrived */
    MUX_FAILED,      /* this end detected an error and queued GoAway 1/2 */
    MUX_DEAD         /* dead timeout */
};

enum mux_ctrl_kind { CTRL_PING, CTRL_PING_ACK, CTRL_WU, CTRL_RST, CTRL_GOAWAY };

typedef struct mux_ctrl {
    uint8_t kind;
    uint32_t id;    /* WU, RST */
    uint32_t value; /* Ping opaque, GoAway code */
} mux_ctrl;

typedef struct mux_stream {
    uint32_t id;
    void *ud;
    mux_link rr;    /* m->rr while sendable; m->closing / m->grave once dead */
    mux_link blk;   /* m->budget while blocked on the tunnel budget */
    mux_link stamp; /* m->stamps while an event waits for a time stamp */
    int close_reason;
    unsigned pending : 1;     /* client: not ACKed; server: not accepted */
    unsigned syn_pending : 1; /* client: SYN not pulled yet */
    unsigned open_unstamped : 1;
    unsigned ack_pending : 1; /* server: ACK to send with the next WindowUpdate */
    unsigned wu_queued : 1;   /* a CTRL_WU entry for this stream is queued */
    unsigned fin_req : 1;     /* wp_mux_close_write called */
    unsigned fin_sent : 1;
    unsigned remote_fin : 1;
    unsigned blocked : 1; /* a write was cut short: on_stream_writable owed */
    unsigned expire : 3;  /* tick: 0 or 1 + close reason */
    unsigned dead : 1;
    char *preamble; /* client, until the SYN is pulled */
    size_t preamble_len;
    wp_buf sendq;
    uint32_t send_window, recv_window, credit;
    uint32_t win;           /* receive window granted to the peer: initial, grows (§7.1) */
    uint64_t win_epoch;     /* when credit last reached the threshold (clocked) */
    unsigned win_paced : 1; /* win_epoch is set */
    unsigned grow_ok : 1;   /* that half window was consumed fast: grow with the credit */
    size_t unconsumed;
    uint64_t last_active, open_deadline;
} mux_stream;

struct wp_mux {
    wp_mux_role role;
    wp_mux_config cfg;
    wp_mux_callbacks cbs;
    void *ud;
    int state, err;
    char reason[200];
    int draining, peer_goaway;
    unsigned depth;
    int free_pending, in_feed, armed;

    mux_stream **slots;
    size_t cap, count, n_pending;
    uint64_t next_id;        /* client: next id to open */
    uint32_t highest_remote; /* server: highest SYN id seen */

    mux_link rr, budget, stamps, closing, grave;
    size_t unstamped_opens;

    mux_ctrl *ctrl;
    size_t ctrl_cap, ctrl_head, ctrl_len;

    size_t sendq_total, unconsumed_total;
    size_t recv_granted; /* sum of the streams' receive windows (win) */

    int clock_started, ping_outstanding;
    uint64_t now, last_rx, ping_sent, stream_deadline;
    uint32_t ping_value, ping_seq;
    int64_t rtt;

    wp_frame_parser parser; /* last: about 16 KiB */
};

/* ---- small helpers ---- */

static void link_init(mux_link *l)
{
    l->prev = l->next = l;
}

static int link_linked(const mux_link *l)
{
    return l->next != l;
}

static void link_remove(mux_link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    link_init(l);
}

static void link_push(mux_link *head, mux_link *l)
{
    l->prev = head->prev;
    l->next = head;
    head->prev->next = l;
    head->prev = l;
}

static mux_link *link_first(const mux_link *head)
{
    return head->next == head ? NULL : head->next;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static size_t min_sz(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* Credit is returned once half the stream's current receive window is consumed. */
static uint32_t stream_threshold(const mux_stream *s)
{
    return s->win / 2;
}

/* Largest send window the peer may give us (what this end announced). */
static uint32_t mux_send_max(const wp_mux *m)
{
    return m->cfg.send_window_max ? m->cfg.send_window_max : m->cfg.initial_window;
}

/* Largest receive window this end grants (at most what the peer announced). */
static uint32_t mux_recv_max(const wp_mux *m)
{
    return m->cfg.recv_window_max ? m->cfg.recv_window_max : m->cfg.initial_window;
}

/* ---- config ---- */

void wp_mux_config_default(wp_mux_config *cfg)
{
    cfg->initial_window = WP_STREAM_INITIAL_WINDOW;
    cfg->max_data = WP_FRAME_MAX_DATA;
    cfg->write_slack = 0;
    cfg->max_streams = WP_TUNNEL_MAX_STREAMS;
    cfg->max_pending_syn = WP_TUNNEL_MAX_PENDING_SYN;
    cfg->max_ctrl_frames = WP_TUNNEL_MAX_CTRL_FRAMES;
    cfg->max_buffered = WP_TUNNEL_MAX_BUFFERED;
    cfg->ping_interval_ms = WP_PING_INTERVAL_MS;
    cfg->dead_timeout_ms = WP_DEAD_TIMEOUT_MS;
    cfg->reap_timeout_ms = WP_REAP_TIMEOUT_MS;
    cfg->open_ack_timeout_ms = WP_OPEN_ACK_TIMEOUT_MS;
    cfg->send_window_max = WP_STREAM_WINDOW_MAX;
    cfg->recv_window_max = 0; /* the peer's stream_window_max is not known yet */
    cfg->window_grow_ms = WP_WINDOW_GROW_MS;
}

int wp_mux_config_check(const wp_mux_config *c)
{
    if (!c)
        return WP_ERR_INVAL;
    if (c->max_data < 1 || c->max_data > WP_FRAME_MAX_DATA)
        return WP_ERR_CONFIG;
    if (c->initial_window < c->max_data || c->initial_window < 2 ||
        c->initial_window > WP_STREAM_INITIAL_WINDOW)
        return WP_ERR_CONFIG;
    if (c->write_slack > WP_STREAM_INITIAL_WINDOW)
        return WP_ERR_CONFIG;
    if ((c->send_window_max &&
         (c->send_window_max < c->initial_window || c->send_window_max > WP_STREAM_WINDOW_LIMIT)) ||
        (c->recv_window_max &&
         (c->recv_window_max < c->initial_window || c->recv_window_max > WP_STREAM_WINDOW_LIMIT)))
        return WP_ERR_CONFIG;
    if (c->max_streams < 1 || c->max_streams > 65536 || c->max_pending_syn < 1)
        return WP_ERR_CONFIG;
    if (c->max_ctrl_frames < 4 || c->max_ctrl_frames > (1u << 20) || c->max_buffered < 1)
        return WP_ERR_CONFIG;
    if (!c->ping_interval_ms || !c->dead_timeout_ms || !c->reap_timeout_ms ||
        !c->open_ack_timeout_ms)
        return WP_ERR_CONFIG;
    return 0;
}

const char *wp_mux_close_reason_name(int reason)
{
    switch (reason) {
    case WP_MUX_CLOSE_DONE:
        return "done";
    case WP_MUX_CLOSE_RESET:
        return "reset";
    case WP_MUX_CLOSE_OPEN_TIMEOUT:
        return "open_timeout";
    case WP_MUX_CLOSE_REAPED:
        return "reaped";
    case WP_MUX_CLOSE_SESSION:
        return "session";
    default:
        return "unknown";
    }
}

/* ---- stream table ---- */

static size_t mux_slot(const wp_mux *m, uint32_t id)
{
    return (size_t)((id >> 1) * 2654435761u) & (m->cap - 1);
}

static mux_stream *mux_find(const wp_mux *m, uint32_t id)
{
    size_t i = mux_slot(m, id);
    while (m->slots[i]) {
        if (m->slots[i]->id == id)
            return m->slots[i];
        i = (i + 1) & (m->cap - 1);
    }
    return NULL;
}

/* Inserts s (id not present; count < max_streams <= cap / 2, so a slot is free). */
static void mux_table_put(wp_mux *m, mux_stream *s)
{
    size_t i = mux_slot(m, s->id);
    while (m->slots[i])
        i = (i + 1) & (m->cap - 1);
    m->slots[i] = s;
    m->count++;
}

/* Removes s, shifting later members of its probe chain back (no tombstones). */
static void mux_table_del(wp_mux *m, mux_stream *s)
{
    size_t mask = m->cap - 1, i = mux_slot(m, s->id);
    while (m->slots[i] != s)
        i = (i + 1) & mask;
    m->slots[i] = NULL;
    m->count--;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!m->slots[j])
            return;
        size_t k = mux_slot(m, m->slots[j]->id);
        /* leave slots[j] where it is if its home k lies cyclically in (i, j] */
        int stay = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stay) {
            m->slots[i] = m->slots[j];
            m->slots[j] = NULL;
            i = j;
        }
    }
}

/* ---- control queue ---- */

static int mux_ctrl_push(wp_mux *m, uint8_t kind, uint32_t id, uint32_t value)
{
    if (m->ctrl_len >= m->cfg.max_ctrl_frames)
        return WP_ERR_LIMIT;
    if (m->ctrl_len == m->ctrl_cap) {
        size_t ncap = m->ctrl_cap * 2;
        if (ncap > m->cfg.max_ctrl_frames)
            ncap = m->cfg.max_ctrl_frames;
        mux_ctrl *n = malloc(ncap * sizeof *n);
        if (!n)
            return WP_ERR_NOMEM;
        for (size_t i = 0; i < m->ctrl_len; i++)
            n[i] = m->ctrl[(m->ctrl_head + i) % m->ctrl_cap];
        free(m->ctrl);
        m->ctrl = n;
        m->ctrl_cap = ncap;
        m->ctrl_head = 0;
    }
    mux_ctrl *c = &m->ctrl[(m->ctrl_head + m->ctrl_len) % m->ctrl_cap];
    c->kind = kind;
    c->id = id;
    c->value = value;
    m->ctrl_len++;
    return 0;
}

static void mux_ctrl_clear(wp_mux *m)
{
    m->ctrl_head = 0;
    m->ctrl_len = 0;
}

/* ---- stream state ---- */

static int stream_half_closed(const mux_stream *s)
{
    return s->fin_req || s->fin_sent || s->remote_fin;
}

static int stream_sendable(const wp_mux *m, const mux_stream *s)
{
    if (s->dead || s->fin_sent || m->state != MUX_OPEN)
        return 0;
    if (s->syn_pending)
        return 1;
    if (m->role == WP_MUX_SERVER && s->pending)
        return 0;
    if (wp_buf_len(&s->sendq) > 0)
        return s->send_window > 0;
    return s->fin_req;
}

static void stream_update_rr(wp_mux *m, mux_stream *s)
{
    if (s->dead)
        return;
    int want = stream_sendable(m, s);
    if (want && !link_linked(&s->rr))
        link_push(&m->rr, &s->rr);
    else if (!want && link_linked(&s->rr))
        link_remove(&s->rr);
}

/* Room left under the tunnel budget for queued outbound bytes. */
static size_t mux_tunnel_room(const wp_mux *m)
{
    return m->cfg.max_buffered > m->sendq_total ? m->cfg.max_buffered - m->sendq_total : 0;
}

/* Room under the stream's own limit: send window (less an unsent preamble) + slack - queued. */
static size_t stream_own_room(const wp_mux *m, const mux_stream *s)
{
    if (s->dead || s->fin_req || m->state != MUX_OPEN)
        return 0;
    if (m->role == WP_MUX_SERVER && s->pending)
        return 0;
    size_t lim = (size_t)s->send_window + m->cfg.write_slack;
    size_t used = wp_buf_len(&s->sendq) + (s->syn_pending ? s->preamble_len + 2 : 0);
    return lim > used ? lim - used : 0;
}

static size_t stream_room(const wp_mux *m, const mux_stream *s)
{
    return min_sz(stream_own_room(m, s), mux_tunnel_room(m));
}

static void mux_lower_deadline(wp_mux *m, uint64_t t)
{
    if (t < m->stream_deadline)
        m->stream_deadline = t;
}

/* The event just done on s has no clock: stamp it at the next feed/tick/touch. */
static void stream_need_stamp(wp_mux *m, mux_stream *s)
{
    if (!link_linked(&s->stamp))
        link_push(&m->stamps, &s->stamp);
}

/*
 * Takes s out of every list and counter, frees its buffers and marks it dead.
 * The struct itself survives until the grave is emptied.
 */
static void stream_detach(wp_mux *m, mux_stream *s)
{
    if (link_linked(&s->rr))
        link_remove(&s->rr);
    if (link_linked(&s->blk))
        link_remove(&s->blk);
    if (link_linked(&s->stamp))
        link_remove(&s->stamp);
    if (s->open_unstamped) {
        s->open_unstamped = 0;
        m->unstamped_opens--;
    }
    m->sendq_total -= wp_buf_len(&s->sendq);
    wp_buf_free(&s->sendq);
    m->unconsumed_total -= s->unconsumed;
    s->unconsumed = 0;
    m->recv_granted -= s->win;
    s->win = 0;
    if (s->pending) {
        s->pending = 0;
        m->n_pending--;
    }
    free(s->preamble);
    s->preamble = NULL;
    s->dead = 1;
}

/* Ends s now. notify: on_stream_closed(reason) at the next safe point; else silently. */
static void stream_end(wp_mux *m, mux_stream *s, int reason, int notify)
{
    mux_table_del(m, s);
    stream_detach(m, s);
    s->close_reason = reason;
    link_push(notify ? &m->closing : &m->grave, &s->rr);
}

/* Ends every stream with reason `session` (callbacks at the next safe point). */
static void mux_close_all(wp_mux *m)
{
    for (size_t i = 0; i < m->cap; i++) {
        mux_stream *s = m->slots[i];
        if (!s)
            continue;
        m->slots[i] = NULL;
        m->count--;
        stream_detach(m, s);
        s->close_reason = WP_MUX_CLOSE_SESSION;
        link_push(&m->closing, &s->rr);
    }
    link_init(&m->budget);
}

/* Calls on_stream_closed for every stream on the closing list. */
static void mux_run_closed(wp_mux *m)
{
    mux_link *l;
    while ((l = link_first(&m->closing))) {
        mux_stream *s = MUX_CONTAINER(l, mux_stream, rr);
        link_remove(l);
        link_push(&m->grave, l);
        if (!m->free_pending && m->cbs.on_stream_closed)
            m->cbs.on_stream_closed(m, m->ud, s->id, s->ud, s->close_reason);
    }
}

static void mux_free_grave(wp_mux *m)
{
    mux_link *l;
    while ((l = link_first(&m->grave))) {
        mux_stream *s = MUX_CONTAINER(l, mux_stream, rr);
        link_remove(l);
        free(s);
    }
}

static int mux_want(const wp_mux *m)
{
    return m->ctrl_len > 0 || link_first(&m->rr) != NULL;
}

/* ---- session end ---- */

static void mux_set_reason(wp_mux *m, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void mux_set_reason(wp_mux *m, const char *fmt, va_list ap)
{
    vsnprintf(m->reason, sizeof m->reason, fmt, ap);
}

/*
 * This end found a fatal error: GoAway(code) becomes the only output, every
 * stream is closed (callbacks at the next safe point) and on_error is called.
 */
static void mux_fail(wp_mux *m, int err, uint32_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void mux_fail(wp_mux *m, int err, uint32_t code, const char *fmt, ...)
{
    if (m->state != MUX_OPEN)
        return;
    va_list ap;
    va_start(ap, fmt);
    mux_set_reason(m, fmt, ap);
    va_end(ap);
    m->state = MUX_FAILED;
    m->err = err;
    mux_ctrl_clear(m);
    (void)mux_ctrl_push(m, CTRL_GOAWAY, 0, code); /* ctrl_cap >= 1: cannot fail when empty */
    mux_close_all(m);
    if (!m->free_pending && m->cbs.on_error)
        m->cbs.on_error(m, m->ud, err, m->reason);
}

/* A failed local push of a control frame: the session cannot go on. */
static int mux_fail_local(wp_mux *m, int rc)
{
    if (rc == WP_ERR_NOMEM)
        mux_fail(m, WP_ERR_NOMEM, WP_GOAWAY_INTERNAL_ERROR, "out of memory queueing a frame");
    else
        mux_fail(m, WP_ERR_LIMIT, WP_GOAWAY_INTERNAL_ERROR,
                 "control frame queue full (%u): the owner is not pulling", m->cfg.max_ctrl_frames);
    return rc;
}

/* A failed push caused by the peer's frames: flooding is a protocol error. */
static void mux_fail_flood(wp_mux *m, int rc)
{
    if (rc == WP_ERR_NOMEM)
        mux_fail(m, WP_ERR_NOMEM, WP_GOAWAY_INTERNAL_ERROR, "out of memory queueing a frame");
    else
        mux_fail(m, WP_ERR_PROTO, WP_GOAWAY_PROTO_ERROR,
                 "control frame flood: %u frames queued for the peer", m->cfg.max_ctrl_frames);
}

/* ---- enter / leave ---- */

static void mux_enter(wp_mux *m)
{
    m->depth++;
}

static void mux_destroy(wp_mux *m);

/*
 * Wakes writers blocked on the tunnel budget once it has room. Returns 1 if
 * a callback ran (the caller loops), else 0.
 */
static int mux_wake_budget(wp_mux *m)
{
    if (!link_first(&m->budget) || mux_tunnel_room(m) == 0)
        return 0;
    mux_link tmp, *l;
    link_init(&tmp);
    /* move the whole list: callbacks may re-block streams onto m->budget */
    tmp.next = m->budget.next;
    tmp.prev = m->budget.prev;
    tmp.next->prev = &tmp;
    tmp.prev->next = &tmp;
    link_init(&m->budget);
    int woke = 0;
    while ((l = link_first(&tmp))) {
        mux_stream *s = MUX_CONTAINER(l, mux_stream, blk);
        link_remove(l);
        if (m->free_pending)
            continue;
        if (stream_room(m, s) > 0) {
            s->blocked = 0;
            woke = 1;
            if (m->cbs.on_stream_writable)
                m->cbs.on_stream_writable(m, m->ud, s->id, s->ud);
        } else if (stream_own_room(m, s) > 0) {
            link_push(&m->budget, l); /* still the tunnel budget */
        }                             /* else: window-blocked; the WindowUpdate wakes it */
    }
    return woke;
}

static int mux_leave(wp_mux *m, int rc)
{
    if (m->depth > 1) {
        m->depth--;
        return rc;
    }
    /* outermost call: depth stays 1 while deferred callbacks run */
    for (;;) {
        mux_run_closed(m);
        if (m->free_pending)
            break;
        if (mux_wake_budget(m))
            continue;
        if (!mux_want(m)) {
            /* Output is empty, whatever emptied it: a pull, or the peer's RST
             * discarding a stream's queued data. The owner stops pulling when
             * wp_mux_want_pull() is 0, so the next output must call it back. */
            m->armed = 1;
        } else if (m->armed && m->cbs.on_writable) {
            m->armed = 0;
            m->cbs.on_writable(m, m->ud);
            continue;
        }
        break;
    }
    m->in_feed = 0;
    mux_free_grave(m);
    m->depth = 0;
    if (m->free_pending)
        mux_destroy(m);
    return rc;
}

/* ---- clock ---- */

static void mux_clock(wp_mux *m, uint64_t now)
{
    if (!m->clock_started) {
        m->clock_started = 1;
        m->now = now;
        m->last_rx = now;
    } else if (now > m->now) {
        m->now = now;
    }
    mux_link *l;
    while ((l = link_first(&m->stamps))) {
        mux_stream *s = MUX_CONTAINER(l, mux_stream, stamp);
        link_remove(l);
        s->last_active = m->now;
        if (s->open_unstamped) {
            s->open_unstamped = 0;
            m->unstamped_opens--;
            s->open_deadline = sat_add(m->now, m->cfg.open_ack_timeout_ms);
            mux_lower_deadline(m, s->open_deadline);
        }
        if (stream_half_closed(s))
            mux_lower_deadline(m, sat_add(m->now, m->cfg.reap_timeout_ms));
    }
}

/* ---- lifecycle ---- */

wp_mux *wp_mux_new(wp_mux_role role, const wp_mux_config *cfg, const wp_mux_callbacks *cbs,
                   void *ud)
{
    if (role != WP_MUX_CLIENT && role != WP_MUX_SERVER)
        return NULL;
    wp_mux_config def;
    if (!cfg) {
        wp_mux_config_default(&def);
        cfg = &def;
    }
    if (wp_mux_config_check(cfg) < 0)
        return NULL;
    wp_mux *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->role = role;
    m->cfg = *cfg;
    if (cbs)
        m->cbs = *cbs;
    m->ud = ud;
    m->armed = 1;
    m->cap = 16;
    while (m->cap < 2 * (size_t)cfg->max_streams)
        m->cap *= 2;
    m->slots = calloc(m->cap, sizeof *m->slots);
    m->ctrl_cap = 16;
    m->ctrl = malloc(m->ctrl_cap * sizeof *m->ctrl);
    if (!m->slots || !m->ctrl) {
        free(m->slots);
        free(m->ctrl);
        free(m);
        return NULL;
    }
    m->next_id = WP_STREAM_ID_FIRST;
    link_init(&m->rr);
    link_init(&m->budget);
    link_init(&m->stamps);
    link_init(&m->closing);
    link_init(&m->grave);
    m->stream_deadline = UINT64_MAX;
    m->rtt = -1;
    wp_frame_parser_init(&m->parser);
    return m;
}

static void mux_destroy(wp_mux *m)
{
    for (size_t i = 0; i < m->cap; i++) {
        mux_stream *s = m->slots[i];
        if (s) {
            stream_detach(m, s);
            free(s);
        }
    }
    mux_link *l;
    while ((l = link_first(&m->closing))) {
        link_remove(l);
        free(MUX_CONTAINER(l, mux_stream, rr));
    }
    mux_free_grave(m);
    free(m->slots);
    free(m->ctrl);
    free(m);
}

void wp_mux_free(wp_mux *m)
{
    if (!m)
        return;
    if (m->depth > 0) {
        m->free_pending = 1;
        return;
    }
    mux_destroy(m);
}

void *wp_mux_ud(const wp_mux *m)
{
    return m ? m->ud : NULL;
}

/* ---- input ---- */

/* Highest stream id the peer may legitimately name without SYN. */
static uint32_t mux_highest_known(const wp_mux *m)
{
    if (m->role == WP_MUX_SERVER)
        return m->highest_remote;
    return m->next_id > WP_STREAM_ID_FIRST ? (uint32_t)(m->next_id - 2) : 0;
}

static int stream_alive(const wp_mux *m, const mux_stream *s)
{
    return !s->dead && !m->free_pending && m->state == MUX_OPEN;
}

static void mux_remote_fin(wp_mux *m, mux_stream *s)
{
    s->remote_fin = 1;
    s->last_active = m->now;
    mux_lower_deadline(m, sat_add(m->now, m->cfg.reap_timeout_ms));
    if (m->cbs.on_stream_fin)
        m->cbs.on_stream_fin(m, m->ud, s->id, s->ud);
    if (stream_alive(m, s) && s->fin_sent)
        stream_end(m, s, WP_MUX_CLOSE_DONE, 1);
}

/* Server: the peer's Data|SYN (PROTOCOL.md §6). */
static void mux_on_syn(wp_mux *m, const wp_frame *f)
{
    uint32_t id = f->hdr.stream_id;
    if (m->role == WP_MUX_CLIENT) {
        mux_fail(m, WP_ERR_PROTO, WP_GOAWAY_PROTO_ERROR,
                 "SYN for stream %u received by the opening side", id);
        return;
    }
    if (id <= m->highest_remote) {
        if (mux_find(m, id))
            mux_fail(m, WP_ERR_PROTO, WP_GOAWAY_PROTO_ERROR, "duplicate SYN for open stream %u",
                     id);
        else
            mux_fail(m, WP_ERR_PROTO, WP_GOAWAY_PROTO_ERROR,
                     "SYN for stream %u reuses an id (highest opened %u)", id, m->highest_remote);
        return;
    }
    m->highest_remote = id;

    size_t joff = 0, jlen = 0, pre = 0;
    int why = 0;
    if (m->draining)
        why = WP_ERR_CLOSED;
    else if (m->count >= m->cfg.max_streams || m->n_pending >= m->cfg.max_pending_syn ||
             m->sendq_total + m->unconsumed_total >= m->cfg.max_buffered)
        why = WP_ERR_BUSY;
    else if (wp_frame_preamble_decode(f->payload, f->payload_len, &joff, &jlen, &pre) < 0)
        why = WP_ERR_PROTO;
    if (why) {
        int rc = mux_ctrl_push(m, CTRL_RST, id, 0);
        if (rc < 0) {
            mux_fail_flood(m, rc);
            return;
        }
        if (m->cbs.on_stream_refused)
            m->cbs.on_stream_refused(m, m->ud, id, why);
        return;
    }
    if (f->payload_len > m->cfg.initial_window) {
        mux_fail(m, WP_ERR_PROTO, WP_GOAWAY_PROTO_ERROR,
                 "window overrun on stream %u: SYN of %zu bytes, window %u", id, f->payload_len,
                 m->cfg.initial_window);
        return;
    }
    mux_stream *s = calloc(1, sizeof *s);
    if (!s) {
        mux_fail(m, WP_ERR_NOMEM, WP_GOAWAY_INTERNAL_ERROR, "out of memory opening stream %u", id);
        return;
    }
    s->id = id;
    link_init(&s->rr);
    link_init(&s->blk);
    link_init(&s->stamp);
    wp_buf_init(&s->sendq, (size_t)mux_send_max(m) + m->cfg.write_slack);
    s->send_window = m->cfg.initial_window;
    s->recv_window = m->cfg.initial_window - (uint32_t)f->payload_len;
    s->win = m->cfg.initial_window;
    m->recv_granted += s->win;
    s->credit = (uint32_t)pre; /* the preamble counts as consumed once parsed (§6.2) */
    s->pending = 1;
    s->last_active = m->now;
    m->n_pending++;
    mux_table_put(m, s);

    if (m->cbs.on_stream_open)
        m->cbs.on_stream_open(m, m->ud, id, (const char *)f->payload + joff, jlen);
    size_t rest = f->payload_len - pre;
    if (rest && stream_alive(m, s)) {
        s->unconsumed += rest;
        m->unconsumed_total += rest;
        if (m->cbs.on_stream_data)
            m->cbs.on_stream_data(m, m->ud, id, s->ud, f->payload + pre, rest);
    }
    if ((f->hdr.flags & WP_FRAME_FLAG_FIN) && stream_alive(m, s))
        mux_remote_fin(m, s);
}

/* A frame naming a stream that is not in the table: error if never opened, else ignored. */
static void mux_on_unknown(wp_mux *m, const wp_frame *f)
{
    if (f->hdr.stream_id > mux_highest_known(m))
        mux_fail(m, WP_ERR_PROTO, WP_GOAWAY_PROTO_ERROR, "%s for stream %u that was never opened",
                 wp_frame_type_name(f->hdr.type), f->hdr.stream_id);
    /* else: opened and since closed, the normal RST/FIN race: ignore (no credit) */
}

static void mux_on_data(wp_mux *m, const wp_frame *f)
{
    if (f->hdr.flags & WP_FRAME_FLAG_SYN) {
        mux_on_syn(m, f);
        return;
    }
    mux_stream *s = mux_find(m, f->hdr.stream_id);
    if (!s) {
        mux_on_unknown(m, f);
        return;
    }
    uint32_t id = s->id, n = f->hdr.length;
    if (s->remote_fin) {
        mux_fail(m, WP_ERR_PROTO, WP_GOAWAY_PROTO_ERROR, "Data after FIN on stream %u", id);
        return;
    }
    if (m->role == WP_MUX_CLIENT && s->pending) {
        mux_fail(m, WP_ERR_PROTO, WP_GOAWAY_PROTO_ERROR, "Data on stream %u before its ACK", id);
        return;
    }
    if (n > s->recv_window) {
        mux_fail(m, WP_ERR_PROTO, WP_GOAWAY_PROTO_ERROR,
                 "window overrun on stream %u: %u bytes, %u left", id, n, s->recv_window);
        return;
    }
    s->recv_window -= n;
    s->last_active = m->now;
    if (n) {
        s->unconsumed += n;
        m->unconsumed_total += n;
        if (m->cbs.on_stream_data)
            m->cbs.on_stream_data(m, m->ud, id, s->ud, f->payload, n);
    }
    if ((f->hdr.flags & WP_FRAME_FLAG_FIN) && stream_alive(m, s))
        mux_remote_fin(m, s);
}

static void mux_on_window_update(wp_mux *m, const wp_frame *f)
{
    mux_stream *s = mux_find(m, f->hdr.stream_id);
    if (!s) {
        mux_on_unknown(m, f);
        return;
    }
    uint32_t id = s->id, delta = f->hdr.length;
    uint16_t flags = f->hdr.flags;
    if (flags & WP_FRAME_FLAG_RST) {
        stream_end(m, s, WP_MUX_CLOSE_RESET, 1);
        return;
    }
    if (flags & WP_FRAME_FLAG_ACK) {
        if (m->role == WP_MUX_SERVER) {
            mux_fail(m, WP_ERR_PROTO, WP_GOAWAY_PROTO_ERROR,
                     "ACK for stream %u received by the accepting side", id);
            return;
        }
        if (!s->pending) {
            mux_fail(m, WP_ERR_PROTO, WP_GOAWAY_PROTO_ERROR, "second ACK on stream %u", id);
            return;
        }
    }
    if ((flags & WP_FRAME_FLAG_FIN) && s->remote_fin) {
        mux_fail(m, WP_ERR_PROTO, WP_GOAWAY_PROTO_ERROR, "second FIN on stream %u", id);
        return;
    }
    if (delta) {
        if ((uint64_t)s->send_window + delta > mux_send_max(m)) {
            mux_fail(m, WP_ERR_PROTO, WP_GOAWAY_PROTO_ERROR,
                     "WindowUpdate on stream %u raises the window to %llu, above %u", id,
                     (unsigned long long)s->send_window + delta, mux_send_max(m));
            return;
        }
        s->send_window += delta;
        stream_update_rr(m, s);
    }
    if (flags & WP_FRAME_FLAG_ACK) {
        s->pending = 0;
        m->n_pending--;
        if (m->cbs.on_stream_ack)
            m->cbs.on_stream_ack(m, m->ud, id, s->ud);
        if (!stream_alive(m, s))
            return;
    }
    if (delta && s->blocked) {
        if (stream_room(m, s) > 0) {
            s->blocked = 0;
            if (link_linked(&s->blk))
                link_remove(&s->blk);
            if (m->cbs.on_stream_writable)
                m->cbs.on_stream_writable(m, m->ud, id, s->ud);
            if (!stream_alive(m, s))
                return;
        } else if (stream_own_room(m, s) > 0 && !link_linked(&s->blk)) {
            link_push(&m->budget, &s->blk);
        }
    }
    if (flags & WP_FRAME_FLAG_FIN)
        mux_remote_fin(m, s);
}

static void mux_on_ping(wp_mux *m, const wp_frame *f)
{
    if (f->hdr.flags & WP_FRAME_FLAG_SYN) {
        int rc = mux_ctrl_push(m, CTRL_PING_ACK, 0, f->hdr.length);
        if (rc < 0)
            mux_fail_flood(m, rc);
        return;
    }
    /* ACK: an unmatched value is ignored (§5.4) */
    if (m->ping_outstanding && f->hdr.length == m->ping_value) {
        m->ping_outstanding = 0;
        m->rtt = (int64_t)(m->now - m->ping_sent);
    }
}

static const char *mux_goaway_name(uint32_t code)
{
    switch (code) {
    case WP_GOAWAY_NORMAL:
        return "normal";
    case WP_GOAWAY_PROTO_ERROR:
        return "protocol error";
    default:
        return "internal error";
    }
}

static void mux_on_goaway(wp_mux *m, const wp_frame *f)
{
    uint32_t code =
        f->hdr.length > WP_GOAWAY_INTERNAL_ERROR ? WP_GOAWAY_INTERNAL_ERROR : f->hdr.length;
    m->peer_goaway = 1;
    if (m->state == MUX_OPEN) {
        m->state = MUX_GOAWAY_RECV;
        m->err = WP_ERR_CLOSED;
        snprintf(m->reason, sizeof m->reason, "peer sent GoAway %u (%s)", f->hdr.length,
                 mux_goaway_name(code));
        mux_ctrl_clear(m);
        mux_close_all(m);
    }
    if (!m->free_pending && m->cbs.on_goaway)
        m->cbs.on_goaway(m, m->ud, code);
}

static void mux_on_frame(wp_mux *m, const wp_frame *f)
{
    if (m->state == MUX_GOAWAY_SENT) {
        if (f->hdr.type == WP_FRAME_TYPE_GOAWAY && !m->peer_goaway)
            mux_on_goaway(m, f);
        return;
    }
    switch (f->hdr.type) {
    case WP_FRAME_TYPE_DATA:
        mux_on_data(m, f);
        break;
    case WP_FRAME_TYPE_WINDOW_UPDATE:
        mux_on_window_update(m, f);
        break;
    case WP_FRAME_TYPE_PING:
        mux_on_ping(m, f);
        break;
    default:
        mux_on_goaway(m, f);
        break;
    }
}

/* 1 when feeding must stop; *rc then holds what to return. */
static int mux_feed_stop(const wp_mux *m, int *rc)
{
    if (m->free_pending) {
        *rc = WP_ERR_CLOSED;
        return 1;
    }
    if (m->state == MUX_FAILED || m->state == MUX_DEAD || m->state == MUX_GOAWAY_RECV) {
        *rc = m->err;
        return 1;
    }
    if (m->state == MUX_GOAWAY_SENT && m->peer_goaway) {
        *rc = WP_ERR_CLOSED;
        return 1;
    }
    return 0;
}

int wp_mux_feed(wp_mux *m, const void *data, size_t len, uint64_t now_ms)
{
    if (!m || (!data && len))
        return WP_ERR_INVAL;
    if (m->free_pending)
        return WP_ERR_CLOSED;
    if (m->in_feed)
        return WP_ERR_STATE;
    mux_enter(m);
    /* Set for the whole call, including the deferred callbacks mux_leave runs at the
     * end (on_writable, on_stream_closed...): a feed from any of them is refused. */
    m->in_feed = 1;
    mux_clock(m, now_ms);
    m->last_rx = m->now;
    int rc = 0;
    if (mux_feed_stop(m, &rc)) {
        if (m->depth > 1)
            m->in_feed = 0;
        return mux_leave(m, rc);
    }
    const uint8_t *in = data;
    size_t n = len;
    for (;;) {
        wp_frame f;
        int r = wp_frame_parser_next(&m->parser, &in, &n, &f);
        if (r == 0)
            break;
        if (r < 0) {
            wp_frame_hdr h;
            if (wp_frame_parser_bad_hdr(&m->parser, &h))
                mux_fail(m, WP_ERR_PROTO, WP_GOAWAY_PROTO_ERROR,
                         "invalid frame header: version %u type %u flags 0x%x stream %u "
                         "length %u",
                         h.version, h.type, h.flags, h.stream_id, h.length);
            else
                mux_fail(m, WP_ERR_PROTO, WP_GOAWAY_PROTO_ERROR,
                         "invalid frame header (bad version, type or flags)");
            mux_run_closed(m);
            if (!mux_feed_stop(m, &rc))
                rc = WP_ERR_CLOSED; /* after our own GoAway: the rest is unreadable */
            break;
        }
        mux_on_frame(m, &f);
        mux_run_closed(m);
        if (mux_feed_stop(m, &rc))
            break;
    }
    if (m->depth > 1) /* nested in another mux call: that call's mux_leave runs the rest */
        m->in_feed = 0;
    return mux_leave(m, rc);
}

void wp_mux_touch(wp_mux *m, uint64_t now_ms)
{
    if (!m || m->free_pending)
        return;
    mux_enter(m);
    mux_clock(m, now_ms);
    m->last_rx = m->now;
    mux_leave(m, 0);
}

/* ---- output ---- */

/*
 * Receive-window auto-tuning (PROTOCOL.md §7.1). wp_mux_consumed_at notes
 * whether the half window that just reached the threshold was consumed within
 * max(window_grow_ms, 2 x RTT) of the previous one: then the
 * window, not the reader, limited the stream. When that credit leaves, the
 * window doubles (the extra rides on the same WindowUpdate), up to
 * recv_window_max and only while the sum of all streams' windows stays within
 * max_buffered. A reader that does not keep up never grows its window.
 * Returns the bytes to add to the window (0: no growth).
 */
static uint32_t stream_grow(wp_mux *m, mux_stream *s)
{
    uint32_t max = mux_recv_max(m);
    if (!s->grow_ok || s->win >= max)
        return 0;
    s->grow_ok = 0;
    uint32_t add = max - s->win < s->win ? max - s->win : s->win;
    if (m->recv_granted + add > m->cfg.max_buffered)
        return 0;
    s->win += add;
    m->recv_granted += add;
    return add;
}

static void stream_grow_undo(wp_mux *m, mux_stream *s, uint32_t add)
{
    s->win -= add;
    m->recv_granted -= add;
}

/* Appends one control frame: 1 appended, 0 moot (nothing to send), or an error. */
static int mux_emit_ctrl(wp_mux *m, wp_buf *out, const mux_ctrl *c)
{
    switch (c->kind) {
    case CTRL_PING:
        return wp_frame_put_ping(out, WP_FRAME_FLAG_SYN, c->value) < 0 ? WP_ERR_NOMEM : 1;
    case CTRL_PING_ACK:
        return wp_frame_put_ping(out, WP_FRAME_FLAG_ACK, c->value) < 0 ? WP_ERR_NOMEM : 1;
    case CTRL_GOAWAY:
        return wp_frame_put_goaway(out, c->value) < 0 ? WP_ERR_NOMEM : 1;
    case CTRL_RST:
        return wp_frame_put_window_update(out, c->id, WP_FRAME_FLAG_RST, 0) < 0 ? WP_ERR_NOMEM : 1;
    default: {
        mux_stream *s = mux_find(m, c->id);
        if (!s)
            return 0;
        uint16_t flags = s->ack_pending ? WP_FRAME_FLAG_ACK : 0;
        uint32_t delta = (!s->remote_fin && s->credit >= stream_threshold(s)) ? s->credit : 0;
        if (!flags && !delta) {
            s->wu_queued = 0;
            return 0;
        }
        uint32_t grow = delta ? stream_grow(m, s) : 0;
        if (wp_frame_put_window_update(out, s->id, flags, delta + grow) < 0) {
            stream_grow_undo(m, s, grow);
            return WP_ERR_NOMEM;
        }
        s->wu_queued = 0;
        s->ack_pending = 0;
        s->recv_window += delta + grow;
        s->credit -= delta;
        return 1;
    }
    }
}

/*
 * Appends s's next Data frame within avail bytes. Returns the bytes appended,
 * 0 when the frame does not fit, or an error.
 */
static int mux_emit_data(wp_mux *m, mux_stream *s, wp_buf *out, size_t avail)
{
    if (avail < WP_FRAME_HDR_LEN)
        return 0;
    size_t q = wp_buf_len(&s->sendq), pre = 0, n;
    const uint8_t *p = wp_buf_ptr(&s->sendq);
    int rc, fin;
    if (s->syn_pending) {
        pre = WP_PREAMBLE_LEN_SIZE + s->preamble_len;
        if (avail < WP_FRAME_HDR_LEN + pre)
            return 0;
        n = min_sz(q, m->cfg.max_data - pre);
        n = min_sz(n, s->send_window - pre);
        n = min_sz(n, avail - WP_FRAME_HDR_LEN - pre);
        fin = s->fin_req && n == q;
        rc = wp_frame_put_open(out, s->id, s->preamble, s->preamble_len, p, n, fin);
    } else {
        n = min_sz(q, s->send_window);
        n = min_sz(n, m->cfg.max_data);
        n = min_sz(n, avail - WP_FRAME_HDR_LEN);
        if (n == 0 && !(s->fin_req && q == 0))
            return 0;
        fin = s->fin_req && n == q;
        rc = wp_frame_put_data(out, s->id, fin ? WP_FRAME_FLAG_FIN : 0, p, n);
    }
    if (rc < 0)
        return WP_ERR_NOMEM;
    if (s->syn_pending) {
        s->syn_pending = 0;
        free(s->preamble);
        s->preamble = NULL;
    }
    s->send_window -= (uint32_t)(pre + n);
    (void)wp_buf_consume(&s->sendq, n);
    m->sendq_total -= n;
    if (wp_buf_len(&s->sendq) == 0 && s->sendq.alloc > 4u * WP_FRAME_MAX_DATA)
        wp_buf_free(&s->sendq); /* do not keep a drained window-sized allocation */
    if (fin)
        s->fin_sent = 1;
    stream_need_stamp(m, s);
    return (int)(WP_FRAME_HDR_LEN + pre + n);
}

int wp_mux_pull(wp_mux *m, wp_buf *out, size_t max_bytes)
{
    if (!m || !out)
        return WP_ERR_INVAL;
    if (m->free_pending)
        return WP_ERR_CLOSED;
    mux_enter(m);
    size_t budget = min_sz(min_sz(max_bytes, INT_MAX), wp_buf_room(out)), used = 0;
    int rc = 0;
    while (m->ctrl_len > 0 && budget - used >= WP_FRAME_HDR_LEN) {
        mux_ctrl c = m->ctrl[m->ctrl_head];
        int r = mux_emit_ctrl(m, out, &c);
        if (r < 0) {
            rc = r;
            break;
        }
        m->ctrl_head = (m->ctrl_head + 1) % m->ctrl_cap;
        m->ctrl_len--;
        used += r ? WP_FRAME_HDR_LEN : 0;
    }
    mux_link *l;
    while (rc == 0 && m->ctrl_len == 0 && m->state == MUX_OPEN && (l = link_first(&m->rr))) {
        mux_stream *s = MUX_CONTAINER(l, mux_stream, rr);
        int r = mux_emit_data(m, s, out, budget - used);
        if (r <= 0) {
            rc = r;
            break;
        }
        used += (size_t)r;
        link_remove(&s->rr);
        if (s->fin_sent && s->remote_fin)
            stream_end(m, s, WP_MUX_CLOSE_DONE, 1);
        else
            stream_update_rr(m, s); /* back at the tail if it has more */
    }
    if (!mux_want(m))
        m->armed = 1;
    return mux_leave(m, used == 0 && rc < 0 ? rc : (int)used);
}

int wp_mux_want_pull(const wp_mux *m)
{
    return m && !m->free_pending && mux_want(m);
}

/* ---- timers ---- */

static int mux_queue_ping(wp_mux *m)
{
    int rc = mux_ctrl_push(m, CTRL_PING, 0, m->ping_seq + 1);
    if (rc < 0)
        return rc;
    m->ping_seq++;
    m->ping_value = m->ping_seq;
    m->ping_outstanding = 1;
    m->ping_sent = m->now;
    return 0;
}

static void mux_die(wp_mux *m)
{
    m->state = MUX_DEAD;
    m->err = WP_ERR_TIMEOUT;
    snprintf(m->reason, sizeof m->reason, "nothing received for %llu ms",
             (unsigned long long)(m->now - m->last_rx));
    mux_ctrl_clear(m);
    mux_close_all(m);
    if (!m->free_pending && m->cbs.on_dead)
        m->cbs.on_dead(m, m->ud);
}

int wp_mux_tick(wp_mux *m, uint64_t now_ms)
{
    if (!m)
        return WP_ERR_INVAL;
    if (m->free_pending)
        return WP_ERR_CLOSED;
    mux_enter(m);
    mux_clock(m, now_ms);
    if (m->state != MUX_OPEN)
        return mux_leave(m, m->err);
    uint64_t now = m->now;
    if (now - m->last_rx >= m->cfg.dead_timeout_ms) {
        mux_die(m);
        return mux_leave(m, WP_ERR_TIMEOUT);
    }
    if (!m->ping_outstanding && now - m->last_rx >= m->cfg.ping_interval_ms) {
        int rc = mux_queue_ping(m);
        if (rc < 0)
            return mux_leave(m, mux_fail_local(m, rc));
    }
    /* pass 1: decide (no callbacks, no table changes) */
    uint64_t dl = UINT64_MAX;
    size_t nexp = 0;
    for (size_t i = 0; i < m->cap; i++) {
        mux_stream *s = m->slots[i];
        if (!s)
            continue;
        if (m->role == WP_MUX_CLIENT && s->pending && !s->open_unstamped) {
            if (now >= s->open_deadline) {
                s->expire = 1 + WP_MUX_CLOSE_OPEN_TIMEOUT;
                nexp++;
                continue;
            }
            if (s->open_deadline < dl)
                dl = s->open_deadline;
        }
        if (stream_half_closed(s)) {
            uint64_t d = sat_add(s->last_active, m->cfg.reap_timeout_ms);
            if (now >= d) {
                s->expire = 1 + WP_MUX_CLOSE_REAPED;
                nexp++;
            } else if (d < dl) {
                dl = d;
            }
        }
    }
    m->stream_deadline = dl;
    /* pass 2: end the expired ones (deletion shifts entries back into i or later) */
    for (size_t i = 0; i < m->cap && nexp > 0 && m->state == MUX_OPEN; i++) {
        mux_stream *s;
        while ((s = m->slots[i]) && s->expire) {
            int reason = (int)s->expire - 1;
            nexp--;
            if (!s->syn_pending) {
                int rc = mux_ctrl_push(m, CTRL_RST, s->id, 0);
                if (rc < 0) {
                    mux_fail_local(m, rc);
                    break;
                }
            }
            stream_end(m, s, reason, 1);
        }
    }
    return mux_leave(m, m->state == MUX_OPEN ? 0 : m->err);
}

uint64_t wp_mux_next_deadline(const wp_mux *m)
{
    if (!m || m->free_pending || m->state != MUX_OPEN)
        return UINT64_MAX;
    if (!m->clock_started)
        return 0;
    if (m->unstamped_opens)
        return m->now;
    uint64_t d = sat_add(m->last_rx, m->cfg.dead_timeout_ms);
    if (!m->ping_outstanding) {
        uint64_t p = sat_add(m->last_rx, m->cfg.ping_interval_ms);
        if (p < d)
            d = p;
    }
    return m->stream_deadline < d ? m->stream_deadline : d;
}

int wp_mux_ping(wp_mux *m, uint64_t now_ms)
{
    if (!m)
        return WP_ERR_INVAL;
    if (m->free_pending)
        return WP_ERR_CLOSED;
    mux_enter(m);
    mux_clock(m, now_ms);
    int rc = 0;
    if (m->state != MUX_OPEN)
        rc = WP_ERR_CLOSED;
    else if (m->ping_outstanding)
        rc = WP_ERR_BUSY;
    else if ((rc = mux_queue_ping(m)) < 0)
        rc = WP_ERR_LIMIT; /* not fatal: just no sample now */
    return mux_leave(m, rc);
}

int64_t wp_mux_rtt_ms(const wp_mux *m)
{
    return m ? m->rtt : -1;
}

/* ---- session end ---- */

int wp_mux_drain(wp_mux *m)
{
    if (!m)
        return WP_ERR_INVAL;
    if (m->free_pending || m->state != MUX_OPEN)
        return WP_ERR_CLOSED;
    m->draining = 1;
    return 0;
}

int wp_mux_goaway(wp_mux *m, uint32_t code)
{
    if (!m)
        return WP_ERR_INVAL;
    if (m->free_pending || m->state != MUX_OPEN)
        return WP_ERR_CLOSED;
    mux_enter(m);
    m->state = MUX_GOAWAY_SENT;
    m->err = WP_ERR_CLOSED;
    snprintf(m->reason, sizeof m->reason, "GoAway %u (%s) sent", code, mux_goaway_name(code));
    mux_ctrl_clear(m);
    (void)mux_ctrl_push(m, CTRL_GOAWAY, 0, code); /* cannot fail when empty */
    mux_close_all(m);
    return mux_leave(m, 0);
}

int wp_mux_error(const wp_mux *m)
{
    if (!m)
        return WP_ERR_INVAL;
    return m->state == MUX_OPEN ? 0 : m->err;
}

const char *wp_mux_error_reason(const wp_mux *m)
{
    return m && m->state != MUX_OPEN ? m->reason : "";
}

size_t wp_mux_stream_count(const wp_mux *m)
{
    return m ? m->count : 0;
}

size_t wp_mux_pending_count(const wp_mux *m)
{
    return m ? m->n_pending : 0;
}

size_t wp_mux_buffered_bytes(const wp_mux *m)
{
    return m ? m->sendq_total + m->unconsumed_total : 0;
}

/* ---- streams ---- */

/* Common prologue of stream calls: *s found and the session running, or an error. */
static int mux_stream_get(wp_mux *m, uint32_t id, mux_stream **s)
{
    if (m->state != MUX_OPEN)
        return WP_ERR_CLOSED;
    *s = mux_find(m, id);
    return *s ? 0 : WP_ERR_NOT_FOUND;
}

int wp_mux_open(wp_mux *m, const char *json, size_t len, void *stream_ud, uint32_t *id)
{
    if (!m || !json || !id || len == 0 || len > WP_PREAMBLE_MAX)
        return WP_ERR_INVAL;
    if (WP_PREAMBLE_LEN_SIZE + len > m->cfg.max_data)
        return WP_ERR_INVAL;
    if (m->role != WP_MUX_CLIENT)
        return WP_ERR_STATE;
    if (m->free_pending || m->state != MUX_OPEN || m->draining || m->next_id > WP_STREAM_ID_MAX)
        return WP_ERR_CLOSED;
    if (m->count >= m->cfg.max_streams)
        return WP_ERR_LIMIT;
    if (m->n_pending >= m->cfg.max_pending_syn ||
        m->sendq_total + m->unconsumed_total >= m->cfg.max_buffered)
        return WP_ERR_BUSY;
    mux_stream *s = calloc(1, sizeof *s);
    char *pre = malloc(len);
    if (!s || !pre) {
        free(s);
        free(pre);
        return WP_ERR_NOMEM;
    }
    mux_enter(m);
    memcpy(pre, json, len);
    s->id = (uint32_t)m->next_id;
    m->next_id += 2;
    s->ud = stream_ud;
    link_init(&s->rr);
    link_init(&s->blk);
    link_init(&s->stamp);
    wp_buf_init(&s->sendq, (size_t)mux_send_max(m) + m->cfg.write_slack);
    s->preamble = pre;
    s->preamble_len = len;
    s->send_window = m->cfg.initial_window;
    s->recv_window = m->cfg.initial_window;
    s->win = m->cfg.initial_window;
    m->recv_granted += s->win;
    s->pending = 1;
    s->syn_pending = 1;
    s->open_unstamped = 1;
    m->unstamped_opens++;
    m->n_pending++;
    mux_table_put(m, s);
    stream_need_stamp(m, s);
    stream_update_rr(m, s);
    *id = s->id;
    return mux_leave(m, 0);
}

int wp_mux_accept(wp_mux *m, uint32_t id, void *stream_ud)
{
    if (!m)
        return WP_ERR_INVAL;
    if (m->free_pending)
        return WP_ERR_CLOSED;
    if (m->role != WP_MUX_SERVER)
        return WP_ERR_STATE;
    mux_enter(m);
    mux_stream *s;
    int rc = mux_stream_get(m, id, &s);
    if (rc == 0 && !s->pending)
        rc = WP_ERR_STATE;
    if (rc == 0 && !s->wu_queued) {
        rc = mux_ctrl_push(m, CTRL_WU, id, 0);
        if (rc < 0)
            mux_fail_local(m, rc);
        else
            s->wu_queued = 1;
    }
    if (rc == 0) {
        s->pending = 0;
        m->n_pending--;
        s->ud = stream_ud;
        s->ack_pending = 1;
        stream_need_stamp(m, s);
        stream_update_rr(m, s);
    }
    return mux_leave(m, rc);
}

int wp_mux_reset(wp_mux *m, uint32_t id)
{
    if (!m)
        return WP_ERR_INVAL;
    if (m->free_pending)
        return WP_ERR_CLOSED;
    mux_enter(m);
    mux_stream *s;
    int rc = mux_stream_get(m, id, &s);
    if (rc == 0) {
        int push = s->syn_pending ? 0 : mux_ctrl_push(m, CTRL_RST, id, 0);
        stream_end(m, s, WP_MUX_CLOSE_RESET, 0);
        if (push < 0)
            rc = mux_fail_local(m, push);
    }
    return mux_leave(m, rc);
}

int wp_mux_write(wp_mux *m, uint32_t id, const void *p, size_t n)
{
    if (!m || (!p && n))
        return WP_ERR_INVAL;
    if (m->free_pending)
        return WP_ERR_CLOSED;
    mux_enter(m);
    mux_stream *s;
    int rc = mux_stream_get(m, id, &s);
    if (rc < 0)
        return mux_leave(m, rc);
    if ((m->role == WP_MUX_SERVER && s->pending) || s->fin_req)
        return mux_leave(m, WP_ERR_STATE);
    if (n == 0)
        return mux_leave(m, 0);
    size_t own = stream_own_room(m, s), tun = mux_tunnel_room(m);
    size_t k = min_sz(min_sz(n, min_sz(own, tun)), INT_MAX);
    if (k) {
        if (wp_buf_put(&s->sendq, p, k) < 0)
            return mux_leave(m, WP_ERR_NOMEM);
        m->sendq_total += k;
        stream_update_rr(m, s);
    }
    if (k < n) {
        s->blocked = 1;
        if (tun < own && !link_linked(&s->blk))
            link_push(&m->budget, &s->blk);
    }
    return mux_leave(m, (int)k);
}

size_t wp_mux_write_room(const wp_mux *m, uint32_t id)
{
    if (!m || m->free_pending || m->state != MUX_OPEN)
        return 0;
    const mux_stream *s = mux_find(m, id);
    return s ? min_sz(stream_room(m, s), INT_MAX) : 0;
}

int wp_mux_close_write(wp_mux *m, uint32_t id)
{
    if (!m)
        return WP_ERR_INVAL;
    if (m->free_pending)
        return WP_ERR_CLOSED;
    mux_enter(m);
    mux_stream *s;
    int rc = mux_stream_get(m, id, &s);
    if (rc == 0 && m->role == WP_MUX_SERVER && s->pending)
        rc = WP_ERR_STATE;
    if (rc == 0 && !s->fin_req) {
        s->fin_req = 1;
        s->blocked = 0;
        if (link_linked(&s->blk))
            link_remove(&s->blk);
        stream_need_stamp(m, s);
        stream_update_rr(m, s);
    }
    return mux_leave(m, rc);
}

/* The credit reached the threshold at now (clocked): was that half window consumed fast? */
static void stream_note_pace(wp_mux *m, mux_stream *s, uint64_t now)
{
    uint64_t lim = m->cfg.window_grow_ms;
    if (m->rtt > 0 && (uint64_t)m->rtt * 2 > lim)
        lim = (uint64_t)m->rtt * 2;
    /* the first half window only starts the clock: it arrives in one burst and
     * lands in the local socket buffer, fast even for a slow reader */
    s->grow_ok = s->win_paced && now >= s->win_epoch && now - s->win_epoch < lim;
    s->win_epoch = now;
    s->win_paced = 1;
}

static int mux_consumed(wp_mux *m, uint32_t id, size_t n, int clocked, uint64_t now)
{
    if (!m)
        return WP_ERR_INVAL;
    if (m->free_pending)
        return WP_ERR_CLOSED;
    mux_enter(m);
    mux_stream *s;
    int rc = mux_stream_get(m, id, &s);
    if (rc == 0 && n > s->unconsumed)
        rc = WP_ERR_INVAL;
    if (rc == 0) {
        uint32_t before = s->credit;
        s->unconsumed -= n;
        m->unconsumed_total -= n;
        s->credit += (uint32_t)n;
        if (before < stream_threshold(s) && s->credit >= stream_threshold(s)) {
            if (clocked)
                stream_note_pace(m, s, now);
            else
                s->grow_ok = 0; /* no clock: never grow on a guess */
        }
        /* before the accept, the ACK will carry the credit; after FIN none is needed */
        if (!s->remote_fin && !s->pending && !s->wu_queued && s->credit >= stream_threshold(s)) {
            rc = mux_ctrl_push(m, CTRL_WU, id, 0);
            if (rc < 0)
                mux_fail_local(m, rc);
            else
                s->wu_queued = 1;
        }
    }
    return mux_leave(m, rc);
}

int wp_mux_consumed(wp_mux *m, uint32_t id, size_t n)
{
    return mux_consumed(m, id, n, 0, 0);
}

int wp_mux_consumed_at(wp_mux *m, uint32_t id, size_t n, uint64_t now_ms)
{
    return mux_consumed(m, id, n, 1, now_ms);
}

void *wp_mux_stream_ud(const wp_mux *m, uint32_t id)
{
    const mux_stream *s = m && !m->free_pending ? mux_find(m, id) : NULL;
    return s ? s->ud : NULL;
}

int wp_mux_set_stream_ud(wp_mux *m, uint32_t id, void *stream_ud)
{
    mux_stream *s = m && !m->free_pending ? mux_find(m, id) : NULL;
    if (!s)
        return WP_ERR_NOT_FOUND;
    s->ud = stream_ud;
    return 0;
}

int wp_mux_stream_stats_get(const wp_mux *m, uint32_t id, wp_mux_stream_stats *out)
{
    if (!m || !out)
        return WP_ERR_INVAL;
    const mux_stream *s = m->free_pending ? NULL : mux_find(m, id);
    if (!s)
        return WP_ERR_NOT_FOUND;
    out->send_window = s->send_window;
    out->recv_window = s->recv_window;
    out->credit_pending = s->credit;
    out->window = s->win;
    out->queued = wp_buf_len(&s->sendq);
    out->unconsumed = s->unconsumed;
    out->pending = s->pending;
    out->local_fin = s->fin_req;
    out->local_fin_sent = s->fin_sent;
    out->remote_fin = s->remote_fin;
    return 0;
}
