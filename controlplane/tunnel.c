/*
 * tunnel.c — the agent tunnel endpoint, the registry node id → tunnel and the
 * stream API (see tunnel.h; the wire is proto/PROTOCOL.md).
 *
 * One cp_tunnel per upgraded WebSocket:
 *   HELLO   waiting for `hello` (WP_HELLO_TIMEOUT_MS on the tunnel's timer);
 *   ACTIVE  `welcome` sent, registered, a wp_mux in the CLIENT role carries
 *           the streams; the timer follows wp_mux_next_deadline;
 *   ending  goaway sent (or the peer left): the mux ended (every stream got
 *           its final callback), output is flushed, then Close; the timer
 *           bounds the closing handshake and aborts after it.
 * Output is never written from inside a mux call: every change kicks the
 * tunnel's idle handle, whose callback pulls frames into `out` (one
 * WebSocket message at a time, at most CP_TUNNEL_PULL_MAX bytes) until the
 * mux has nothing left or the WebSocket queue refuses (then on_drain resumes
 * it), and re-arms the timer. A tunnel is freed after the WebSocket's
 * on_freed and both handles' close callbacks.
 *
 * The registry is a list (at most --max-tunnels entries; lookups scan it).
 * Its timer runs the health sweep every heartbeat interval and, once
 * shutting down, bounds the shutdown.
 */
#include "tunnel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include <wolfpack/proto.h>

#include "auth.h"
#include "crypto.h"
#include "err.h"
#include "events.h"
#include "json.h"
#include "log.h"
#include "mux.h"
#include "nodes.h"
#include "sessions.h"
#include "store.h"
#include "tunnel_int.h"
#include "version.h"
#include "ws.h"

#define CP_RECOUNT_PERIOD_MS 60000u

#define CP_TUNNEL_PULL_MAX      (32u * 1024u) /* bytes of frames per WebSocket message */
#define CP_TUNNEL_JSON_DEPTH    16
#define CP_TUNNEL_CLOSE_WAIT_MS (WP_CLOSE_TIMEOUT_MS + 2000) /* ending: abort after this */
#define CP_TUNNEL_SHUTDOWN_MS   (WP_CLOSE_TIMEOUT_MS + 1000) /* shutdown: abort the rest */
#define CP_TUNNEL_STR_MAX       255 /* message/model/... strings in control messages */
#define CP_TUNNEL_ERR_MAX       256

enum { CP_TUN_HELLO = 0, CP_TUN_ACTIVE = 1 };

typedef struct cp_tunnel cp_tunnel;

struct cp_stream {
    cp_tunnel *t;
    uint32_t id;
    int opened; /* ACK received */
    int final;  /* inside the final callback */
    cp_stream_callbacks cbs;
    void *ud;
    char err_code[16]; /* `error` message received for this stream */
};

struct cp_tunnel {
    cp_tunnels *reg;
    cp_tunnel *prev, *next;
    wp_ws *ws; /* NULL after on_freed */
    wp_mux *mux;
    uv_timer_t timer;
    uv_idle_t idle;
    int handles_open;
    wp_buf out; /* pulled frames the WebSocket refused for now */
    int state;
    unsigned ending : 1, registered : 1, replaced : 1, close_started : 1, ws_blocked : 1,
        draining : 1, ws_done : 1, prehello : 1;
    int close_code;
    char node_id[64];
    char instance_id[33];
    char version[65];
    char peer[64];
    char token_id[40];
    char bound_node[64];
    int64_t connected_at_ms;
    int64_t last_hb_ms;
    uint64_t last_hb_mono;
    uint64_t heartbeats;
    long long hb_seq;
    uint64_t last_event_mono; /* rate limit of agent `event` messages */
    uint64_t events;
};

struct cp_tunnels {
    cp_server *s;
    uv_loop_t *loop;
    cp_tunnel *head, *tail;
    size_t ntunnels;    /* tunnel objects alive (any state) */
    size_t nregistered; /* ACTIVE and not ending */
    size_t nprehello;   /* upgraded, waiting for hello */
    size_t nauth;       /* tunnel requests in authentication */
    cp_bridge_link *bridges;
    size_t nbridges;
    uv_timer_t timer; /* health sweep; when shutting down: the deadline */
    size_t db_pending;
    int sweep_inflight;
    unsigned ticks; /* health timer ticks, for the less frequent active_sessions recount */
    int shutting;
    int timer_closing;
    int closed;
    void (*shutdown_cb)(cp_server *s);
    char replica_id[32];
    unsigned heartbeat_ms;
    size_t max_tunnels;
    size_t max_upgrades;
};

static int64_t cp_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ */
/* registry bookkeeping                                                 */

static void cp_tunnels_maybe_free(cp_tunnels *reg)
{
    if (reg->closed && reg->db_pending == 0 && reg->nauth == 0)
        free(reg);
}

static void cp_tunnels_timer_closed(uv_handle_t *h)
{
    cp_tunnels *reg = h->data;
    cp_server *s = reg->s;
    void (*cb)(cp_server *) = reg->shutdown_cb;
    reg->closed = 1;
    if (s->tunnels == reg)
        s->tunnels = NULL;
    cp_tunnels_maybe_free(reg);
    if (cb)
        cb(s);
}

/* Shutting down and nothing left: close the registry's timer, then report. */
static void cp_tunnels_maybe_done(cp_tunnels *reg)
{
    if (!reg->shutting || reg->timer_closing || reg->head || reg->nbridges)
        return;
    reg->timer_closing = 1;
    uv_close((uv_handle_t *)&reg->timer, cp_tunnels_timer_closed);
}

static cp_tunnel *cp_tunnels_find(const cp_tunnels *reg, const char *node_id)
{
    if (!reg || !node_id)
        return NULL;
    for (cp_tunnel *t = reg->head; t; t = t->next)
        if (t->registered && strcmp(t->node_id, node_id) == 0)
            return t;
    return NULL;
}

static cp_db *cp_tunnels_db(const cp_tunnels *reg)
{
    cp_store *st = reg->s->store;
    return st && cp_store_ready(st) ? cp_store_db(st) : NULL;
}

/* ------------------------------------------------------------------ */
/* output                                                               */

static void cp_tunnel_timer_cb(uv_timer_t *h);

static void cp_tunnel_arm(cp_tunnel *t)
{
    if (t->ending || t->state != CP_TUN_ACTIVE || !t->mux || !t->handles_open)
        return;
    uint64_t d = wp_mux_next_deadline(t->mux);
    if (d == UINT64_MAX) {
        uv_timer_stop(&t->timer);
        return;
    }
    uint64_t now = uv_now(t->reg->loop);
    uv_timer_start(&t->timer, cp_tunnel_timer_cb, d > now ? d - now : 0, 0);
}

static void cp_tunnel_flush(cp_tunnel *t)
{
    if (!t->ws || t->ws_done)
        return;
    while (!t->ws_blocked) {
        if (wp_buf_len(&t->out) > 0) {
            int rc = wp_ws_send_binary(t->ws, wp_buf_ptr(&t->out), wp_buf_len(&t->out));
            if (rc == WP_ERR_LIMIT) {
                t->ws_blocked = 1; /* on_drain resumes */
                break;
            }
            wp_buf_reset(&t->out);
            if (rc != 0)
                break;
        }
        if (!t->mux || !wp_mux_want_pull(t->mux))
            break;
        int n = wp_mux_pull(t->mux, &t->out, CP_TUNNEL_PULL_MAX);
        if (n <= 0)
            break;
    }
    if (t->ending && !t->close_started && !t->ws_blocked && wp_buf_len(&t->out) == 0 &&
        !(t->mux && wp_mux_want_pull(t->mux))) {
        t->close_started = 1;
        wp_ws_close(t->ws, t->close_code, NULL);
    }
    cp_tunnel_arm(t);
}

static void cp_tunnel_idle_cb(uv_idle_t *h)
{
    cp_tunnel *t = h->data;
    uv_idle_stop(h);
    cp_tunnel_flush(t);
}

/* Schedules a flush from the loop (never pulls inside a mux or user call). */
static void cp_tunnel_kick(cp_tunnel *t)
{
    if (t->handles_open && !uv_is_active((uv_handle_t *)&t->idle))
        uv_idle_start(&t->idle, cp_tunnel_idle_cb);
}

/* Sends one control message (best effort: a full queue or a closed socket drops it). */
static int cp_tunnel_send_json(cp_tunnel *t, const cJSON *o)
{
    if (!t->ws || t->ws_done)
        return WP_ERR_CLOSED;
    char *txt = wp_json_print(o);
    if (!txt)
        return WP_ERR_NOMEM;
    int rc = wp_ws_send_text(t->ws, txt, strlen(txt));
    cJSON_free(txt);
    return rc;
}

/* ------------------------------------------------------------------ */
/* ending a tunnel                                                      */

static void cp_tunnel_leave_hello(cp_tunnel *t)
{
    if (t->prehello) {
        t->prehello = 0;
        t->reg->nprehello--;
    }
}

static void cp_tunnel_unregister(cp_tunnel *t)
{
    if (!t->registered)
        return;
    cp_tunnels *reg = t->reg;
    t->registered = 0;
    reg->nregistered--;
    if (t->replaced)
        return; /* the node is still connected here, through the newer tunnel */
    cp_db *db = cp_tunnels_db(reg);
    int rc =
        db ? cp_nodes_disconnected(db, t->node_id, reg->replica_id, NULL, NULL) : WP_ERR_CLOSED;
    if (rc != 0)
        wp_log_warn("cannot record the node as disconnected", WP_LS("node", t->node_id),
                    WP_LE("err", rc));
}

static int cp_goaway_close_code(const char *reason)
{
    static const struct {
        const char *reason;
        int code;
    } map[] = {
        {WP_GOAWAY_REASON_SHUTDOWN, WP_WS_CLOSE_GOING_AWAY},
        {WP_GOAWAY_REASON_DRAINED, WP_WS_CLOSE_NORMAL},
        {WP_GOAWAY_REASON_REPLACED, WP_WS_CLOSE_REPLACED},
        {WP_GOAWAY_REASON_DUPLICATE, WP_WS_CLOSE_DUPLICATE},
        {WP_GOAWAY_REASON_UNSUPPORTED, WP_WS_CLOSE_UNSUPPORTED},
        {WP_GOAWAY_REASON_HELLO_TIMEOUT, WP_WS_CLOSE_POLICY},
        {WP_GOAWAY_REASON_FORBIDDEN, WP_WS_CLOSE_POLICY},
        {WP_GOAWAY_REASON_PROTOCOL_ERROR, WP_WS_CLOSE_PROTOCOL_ERROR},
        {WP_GOAWAY_REASON_INTERNAL_ERROR, WP_WS_CLOSE_INTERNAL},
    };
    for (size_t i = 0; reason && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(map[i].reason, reason) == 0)
            return map[i].code;
    return 0;
}

/*
 * Ends the tunnel once: unregisters it, sends `goaway` reason (none when
 * reason is NULL: the peer ended it or is gone), ends the mux (every stream
 * gets its final callback), then flushes and closes with close_code.
 */
static void cp_tunnel_end(cp_tunnel *t, const char *reason, const char *message, int close_code)
{
    if (t->ending)
        return;
    t->ending = 1;
    cp_tunnel_leave_hello(t);
    cp_tunnel_unregister(t);
    if (reason) {
        cJSON *o = cJSON_CreateObject();
        if (o && cJSON_AddStringToObject(o, "type", WP_MSG_GOAWAY) &&
            cJSON_AddStringToObject(o, "reason", reason) &&
            (!message || cJSON_AddStringToObject(o, "message", message)))
            cp_tunnel_send_json(t, o);
        cJSON_Delete(o);
    }
    uint32_t code = close_code == WP_WS_CLOSE_PROTOCOL_ERROR ? WP_GOAWAY_PROTO_ERROR
                    : close_code == WP_WS_CLOSE_INTERNAL     ? WP_GOAWAY_INTERNAL_ERROR
                                                             : WP_GOAWAY_NORMAL;
    t->close_code = close_code;
    if (t->mux)
        wp_mux_goaway(t->mux, code); /* WP_ERR_CLOSED when already ended: fine */
    wp_log_info("tunnel closing", WP_LS("node", t->node_id[0] ? t->node_id : "-"),
                WP_LS("peer", t->peer), WP_LS("reason", reason ? reason : "peer"),
                WP_LS("detail", message ? message : ""));
    if (t->handles_open) {
        uv_timer_start(&t->timer, cp_tunnel_timer_cb, CP_TUNNEL_CLOSE_WAIT_MS, 0);
        cp_tunnel_kick(t);
    }
}

static void cp_tunnel_end_reason(cp_tunnel *t, const char *reason, const char *message)
{
    cp_tunnel_end(t, reason, message, cp_goaway_close_code(reason));
}

static void cp_tunnel_free(cp_tunnel *t)
{
    cp_tunnels *reg = t->reg;
    if (t->prev)
        t->prev->next = t->next;
    else
        reg->head = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else
        reg->tail = t->prev;
    reg->ntunnels--;
    wp_mux_free(t->mux);
    wp_buf_free(&t->out);
    free(t);
    cp_tunnels_maybe_done(reg);
}

static void cp_tunnel_handle_closed(uv_handle_t *h)
{
    cp_tunnel *t = h->data;
    if (--t->handles_open == 0)
        cp_tunnel_free(t);
}

static void cp_tunnel_timer_cb(uv_timer_t *h)
{
    cp_tunnel *t = h->data;
    if (t->ending) {
        wp_log_warn("tunnel did not close in time, aborting", WP_LS("peer", t->peer));
        if (t->ws)
            wp_ws_abort(t->ws);
        return;
    }
    if (t->state == CP_TUN_HELLO) {
        cp_tunnel_end_reason(t, WP_GOAWAY_REASON_HELLO_TIMEOUT, "no hello within 10 s");
        return;
    }
    wp_mux_tick(t->mux, uv_now(t->reg->loop)); /* dead: on_dead */
    cp_tunnel_kick(t);
}

/* ------------------------------------------------------------------ */
/* mux callbacks (streams)                                              */

static void cp_stream_final(cp_stream *st, int opened, int err, const char *reason)
{
    st->final = 1;
    if (opened)
        st->cbs.on_closed(st, err, reason, st->ud);
    else
        st->cbs.on_open(st, err, reason, st->ud);
    free(st);
}

static void cp_mux_on_writable(wp_mux *m, void *ud)
{
    (void)m;
    cp_tunnel_kick(ud);
}

static void cp_mux_on_ack(wp_mux *m, void *ud, uint32_t id, void *sud)
{
    (void)m;
    (void)ud;
    (void)id;
    cp_stream *st = sud;
    if (!st || st->opened)
        return;
    st->opened = 1;
    st->cbs.on_open(st, 0, "", st->ud);
}

static void cp_mux_on_data(wp_mux *m, void *ud, uint32_t id, void *sud, const uint8_t *p, size_t n)
{
    (void)ud;
    cp_stream *st = sud;
    if (!st) {
        wp_mux_consumed(m, id, n);
        return;
    }
    if (st->cbs.on_data)
        st->cbs.on_data(st, p, n, st->ud);
    else
        wp_mux_consumed(m, id, n);
}

static void cp_mux_on_fin(wp_mux *m, void *ud, uint32_t id, void *sud)
{
    (void)m;
    (void)ud;
    (void)id;
    cp_stream *st = sud;
    if (st && st->cbs.on_fin)
        st->cbs.on_fin(st, st->ud);
}

static void cp_mux_on_stream_writable(wp_mux *m, void *ud, uint32_t id, void *sud)
{
    (void)m;
    (void)ud;
    (void)id;
    cp_stream *st = sud;
    if (st && st->cbs.on_writable)
        st->cbs.on_writable(st, st->ud);
}

static void cp_mux_on_closed(wp_mux *m, void *ud, uint32_t id, void *sud, int reason)
{
    (void)m;
    (void)ud;
    (void)id;
    cp_stream *st = sud;
    if (!st)
        return;
    switch (reason) {
    case WP_MUX_CLOSE_DONE:
        cp_stream_final(st, st->opened, 0, "");
        break;
    case WP_MUX_CLOSE_RESET:
        cp_stream_final(st, st->opened, WP_ERR_IO, st->err_code[0] ? st->err_code : "reset");
        break;
    case WP_MUX_CLOSE_OPEN_TIMEOUT:
        cp_stream_final(st, st->opened, WP_ERR_TIMEOUT, "timeout");
        break;
    case WP_MUX_CLOSE_REAPED:
        cp_stream_final(st, st->opened, WP_ERR_TIMEOUT, "reaped");
        break;
    default:
        cp_stream_final(st, st->opened, WP_ERR_CLOSED, "tunnel_closed");
        break;
    }
}

static void cp_mux_on_goaway(wp_mux *m, void *ud, uint32_t code)
{
    (void)m;
    cp_tunnel *t = ud;
    wp_log_info("agent sent GoAway", WP_LS("node", t->node_id), WP_LI("code", code));
    cp_tunnel_end(t, NULL, "GoAway frame", WP_WS_CLOSE_NORMAL);
}

static void cp_mux_on_error(wp_mux *m, void *ud, int err, const char *reason)
{
    (void)m;
    cp_tunnel *t = ud;
    wp_log_warn("tunnel protocol error", WP_LS("node", t->node_id), WP_LS("peer", t->peer),
                WP_LE("err", err), WP_LS("reason", reason));
    if (err == WP_ERR_PROTO)
        cp_tunnel_end_reason(t, WP_GOAWAY_REASON_PROTOCOL_ERROR, reason);
    else
        cp_tunnel_end_reason(t, WP_GOAWAY_REASON_INTERNAL_ERROR, reason);
}

static void cp_mux_on_dead(wp_mux *m, void *ud)
{
    (void)m;
    cp_tunnel *t = ud;
    wp_log_warn("tunnel dead: nothing received for 45 s", WP_LS("node", t->node_id),
                WP_LS("peer", t->peer));
    cp_tunnel_end(t, NULL, "dead", WP_WS_CLOSE_GOING_AWAY);
    if (t->ws)
        wp_ws_abort(t->ws);
}

static const wp_mux_callbacks cp_tunnel_mux_cbs = {
    .on_writable = cp_mux_on_writable,
    .on_stream_ack = cp_mux_on_ack,
    .on_stream_data = cp_mux_on_data,
    .on_stream_fin = cp_mux_on_fin,
    .on_stream_writable = cp_mux_on_stream_writable,
    .on_stream_closed = cp_mux_on_closed,
    .on_goaway = cp_mux_on_goaway,
    .on_error = cp_mux_on_error,
    .on_dead = cp_mux_on_dead,
};

/* ------------------------------------------------------------------ */
/* hello validation (PROTOCOL.md §4.2)                                  */

static int cp_str_printable(const char *s, size_t min, size_t max)
{
    size_t n = strlen(s);
    if (n < min || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

/* [a-z0-9] first, then up to `rest` of [a-z0-9] plus the characters in `extra`. */
static int cp_name_valid(const char *s, size_t rest, const char *extra)
{
    size_t n = strlen(s);
    if (n == 0 || n > rest + 1)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && strchr(extra, c));
        if (!ok || c == '\0')
            return 0;
    }
    return 1;
}

/* Node id [a-z0-9][a-z0-9-]{0,62} (ids.h's rule; ids.h and proto.h cannot share a unit). */
static int cp_node_id_ok(const char *s)
{
    return s && cp_name_valid(s, WP_NODE_ID_MAX - 1, "-");
}

static int cp_hex_lower(const char *s, size_t n)
{
    if (strlen(s) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

#define CP_HELLO_FAIL(...)                                                                         \
    do {                                                                                           \
        snprintf(err, cap, __VA_ARGS__);                                                           \
        return WP_ERR_INVAL;                                                                       \
    } while (0)

static int cp_is_int(const cJSON *v, long long min, long long max)
{
    if (!cJSON_IsNumber(v))
        return 0;
    double d = v->valuedouble;
    if (d != (double)(long long)d || d < (double)min || d > (double)max)
        return 0;
    return 1;
}

static int cp_hello_gpu_check(const cJSON *gpu, char *err, size_t cap)
{
    static const char *const strs[] = {"model", "uuid", "pci_bus_id", "render_node", "driver"};
    if (!cJSON_IsObject(gpu))
        CP_HELLO_FAIL("gpu: expected an object");
    /* PROTOCOL.md §4.2: the best device wins, so there is no "mixed" (refused like any unknown). */
    if (!cp_node_gpu_vendor_valid(wp_json_get_str(gpu, "vendor")))
        CP_HELLO_FAIL("gpu.vendor: expected nvidia, amd, intel or none");
    const cJSON *devs = cJSON_GetObjectItemCaseSensitive(gpu, "devices");
    if (!cJSON_IsArray(devs) || cJSON_GetArraySize(devs) > (int)WP_GPUS_MAX)
        CP_HELLO_FAIL("gpu.devices: expected an array of at most 64 objects");
    for (const cJSON *d = devs->child; d; d = d->next) {
        if (!cJSON_IsObject(d) ||
            !cp_is_int(cJSON_GetObjectItemCaseSensitive(d, "index"), 0, 1 << 20))
            CP_HELLO_FAIL("gpu.devices: each needs an integer index >= 0");
        const char *v = wp_json_get_str(d, "vendor");
        if (!v || !cp_str_printable(v, 1, 32))
            CP_HELLO_FAIL("gpu.devices: each needs a vendor string");
        const cJSON *vid = cJSON_GetObjectItemCaseSensitive(d, "vendor_id");
        if (vid &&
            (!cJSON_IsString(vid) || strlen(vid->valuestring) != 6 ||
             strncmp(vid->valuestring, "0x", 2) != 0 || wp_hex_digit(vid->valuestring[2]) < 0 ||
             wp_hex_digit(vid->valuestring[3]) < 0 || wp_hex_digit(vid->valuestring[4]) < 0 ||
             wp_hex_digit(vid->valuestring[5]) < 0))
            CP_HELLO_FAIL("gpu.devices: vendor_id must be 0x and 4 hex digits");
        for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
            const cJSON *sv = cJSON_GetObjectItemCaseSensitive(d, strs[i]);
            if (sv && (!cJSON_IsString(sv) || strlen(sv->valuestring) > CP_TUNNEL_STR_MAX))
                CP_HELLO_FAIL("gpu.devices: %s must be a string of at most 255 bytes", strs[i]);
        }
        const cJSON *mem = cJSON_GetObjectItemCaseSensitive(d, "memory_total");
        if (mem && !cp_is_int(mem, 0, 9007199254740991LL))
            CP_HELLO_FAIL("gpu.devices: memory_total must be an integer >= 0");
    }
    return 0;
}

static int cp_hello_check(const cJSON *doc, char *err, size_t cap)
{
    if (!cp_is_int(cJSON_GetObjectItemCaseSensitive(doc, "protocol"), 0, 1000000))
        CP_HELLO_FAIL("protocol: expected an integer");
    const char *node = wp_json_get_str(doc, "node_id");
    if (!node || !cp_node_id_ok(node))
        CP_HELLO_FAIL("node_id: must match [a-z0-9][a-z0-9-]{0,62}");
    const char *inst = wp_json_get_str(doc, "instance_id");
    if (!inst || !cp_hex_lower(inst, 32))
        CP_HELLO_FAIL("instance_id: expected 32 lowercase hex digits");
    const char *ver = wp_json_get_str(doc, "version");
    if (!ver || !cp_str_printable(ver, 1, 64))
        CP_HELLO_FAIL("version: expected 1-64 printable ASCII characters");
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(doc, "labels");
    if (labels) {
        if (!cJSON_IsObject(labels) || cJSON_GetArraySize(labels) > (int)WP_LABELS_MAX)
            CP_HELLO_FAIL("labels: expected an object with at most 64 members");
        for (const cJSON *l = labels->child; l; l = l->next) {
            if (!l->string || !cp_name_valid(l->string, 62, "._/-"))
                CP_HELLO_FAIL("labels: keys must match [a-z0-9][a-z0-9._/-]{0,62}");
            if (!cJSON_IsString(l) || !cp_str_printable(l->valuestring, 0, 63))
                CP_HELLO_FAIL("labels: values must be strings of at most 63 printable characters");
        }
    }
    if (!cp_is_int(cJSON_GetObjectItemCaseSensitive(doc, "max_sessions"), 0, 1024))
        CP_HELLO_FAIL("max_sessions: expected an integer between 0 and 1024");
    const cJSON *svcs = cJSON_GetObjectItemCaseSensitive(doc, "services");
    if (!cJSON_IsArray(svcs) || cJSON_GetArraySize(svcs) > (int)WP_SERVICES_MAX)
        CP_HELLO_FAIL("services: expected an array of at most 32 names");
    for (const cJSON *v = svcs->child; v; v = v->next)
        if (!cJSON_IsString(v) || !cp_name_valid(v->valuestring, 31, "-"))
            CP_HELLO_FAIL("services: names must match [a-z0-9][a-z0-9-]{0,31}");
    if (cp_hello_gpu_check(cJSON_GetObjectItemCaseSensitive(doc, "gpu"), err, cap) != 0)
        return WP_ERR_INVAL;
    const cJSON *lob = cJSON_GetObjectItemCaseSensitive(doc, "lobbies");
    if (lob) {
        if (!cJSON_IsArray(lob) || cJSON_GetArraySize(lob) > (int)WP_LOBBIES_MAX)
            CP_HELLO_FAIL("lobbies: expected an array of at most 256 objects");
        for (const cJSON *o = lob->child; o; o = o->next) {
            const char *id = wp_json_get_str(o, "id"), *name = wp_json_get_str(o, "name");
            if (!cJSON_IsObject(o) || !id || !name || strlen(id) > CP_TUNNEL_STR_MAX ||
                strlen(name) > CP_TUNNEL_STR_MAX)
                CP_HELLO_FAIL("lobbies: each needs string id and name of at most 255 bytes");
        }
    }
    const cJSON *sess = cJSON_GetObjectItemCaseSensitive(doc, "sessions");
    if (sess) {
        if (!cJSON_IsArray(sess) || cJSON_GetArraySize(sess) > (int)WP_LOBBIES_MAX)
            CP_HELLO_FAIL("sessions: expected an array of at most 256 strings");
        for (const cJSON *v = sess->child; v; v = v->next) {
            size_t n = cJSON_IsString(v) ? strlen(v->valuestring) : 0;
            int ok = n >= 1 && n <= 20;
            for (size_t i = 0; ok && i < n; i++)
                ok = v->valuestring[i] >= '0' && v->valuestring[i] <= '9';
            if (!ok)
                CP_HELLO_FAIL("sessions: each must be a decimal id");
        }
    }
    const cJSON *dr = cJSON_GetObjectItemCaseSensitive(doc, "draining");
    if (dr && !cJSON_IsBool(dr))
        CP_HELLO_FAIL("draining: expected a boolean");
    const cJSON *swm = cJSON_GetObjectItemCaseSensitive(doc, WP_HELLO_STREAM_WINDOW_MAX);
    if (swm && !cp_is_int(swm, WP_STREAM_INITIAL_WINDOW, WP_STREAM_WINDOW_LIMIT))
        CP_HELLO_FAIL("stream_window_max: expected an integer between 262144 and 2147483647");
    return 0;
}

/* ------------------------------------------------------------------ */
/* control messages                                                     */

static int cp_tunnel_send_welcome(cp_tunnel *t)
{
    cp_tunnels *reg = t->reg;
    cJSON *o = cJSON_CreateObject();
    int ok = o && cJSON_AddStringToObject(o, "type", WP_MSG_WELCOME) &&
             cJSON_AddNumberToObject(o, "protocol", WP_PROTO_VERSION) &&
             cJSON_AddStringToObject(o, "replica_id", reg->replica_id) &&
             cJSON_AddNumberToObject(o, "replica_count", 1) &&
             cJSON_AddNumberToObject(o, "heartbeat_interval_ms", reg->heartbeat_ms) &&
             cJSON_AddNumberToObject(o, "server_time", (double)cp_unix_ms()) &&
             cJSON_AddStringToObject(o, "node_id", t->node_id) &&
             cJSON_AddStringToObject(o, "version", wp_version()) &&
             cJSON_AddNumberToObject(o, WP_HELLO_STREAM_WINDOW_MAX, WP_STREAM_WINDOW_MAX);
    int rc = ok ? cp_tunnel_send_json(t, o) : WP_ERR_NOMEM;
    cJSON_Delete(o);
    return rc;
}

typedef struct cp_tunnel_dbctx {
    cp_tunnels *reg;
    char node_id[64];
} cp_tunnel_dbctx;

static void cp_tunnel_hello_stored(int err, const cp_node_state *node, void *ud)
{
    cp_tunnel_dbctx *ctx = ud;
    cp_tunnels *reg = ctx->reg;
    reg->db_pending--;
    if (err != 0)
        wp_log_warn("cannot record the node's hello", WP_LS("node", ctx->node_id),
                    WP_LE("err", err));
    else if (!node)
        wp_log_warn("node vanished while recording its hello", WP_LS("node", ctx->node_id));
    else
        wp_log_info("node registry updated", WP_LS("node", node->id), WP_LS("status", node->status),
                    WP_LI("registered", node->registered));
    /* The database knows the tunnel: compare the node's lobbies with its sessions. */
    if (err == 0 && node && !reg->shutting && cp_tunnel_connected(reg->s, ctx->node_id))
        cp_sessions_reconcile(reg->s, ctx->node_id);
    free(ctx);
    cp_tunnels_maybe_free(reg);
}

static void cp_tunnel_store_hello(cp_tunnel *t, const cJSON *doc)
{
    cp_tunnels *reg = t->reg;
    const cJSON *gpu = cJSON_GetObjectItemCaseSensitive(doc, "gpu");
    long long maxs = 0;
    wp_json_get_int(doc, "max_sessions", &maxs);
    cp_node_hello h = {
        .node_id = t->node_id,
        .version = t->version,
        .labels = cJSON_GetObjectItemCaseSensitive(doc, "labels"),
        .max_sessions = (int)maxs,
        .services = cJSON_GetObjectItemCaseSensitive(doc, "services"),
        .gpus = cJSON_GetObjectItemCaseSensitive(gpu, "devices"),
    };
    cp_db *db = cp_tunnels_db(reg);
    cp_tunnel_dbctx *ctx = calloc(1, sizeof(*ctx));
    int rc = WP_ERR_NOMEM;
    if (ctx) {
        ctx->reg = reg;
        snprintf(ctx->node_id, sizeof(ctx->node_id), "%s", t->node_id);
        rc = db ? cp_nodes_hello(db, &h, reg->replica_id, cp_tunnel_hello_stored, ctx)
                : WP_ERR_CLOSED;
    }
    if (rc != 0) {
        free(ctx);
        wp_log_warn("cannot record the node's hello", WP_LS("node", t->node_id), WP_LE("err", rc));
        return;
    }
    reg->db_pending++;
}

static void cp_tunnel_on_hello(cp_tunnel *t, const cJSON *doc)
{
    cp_tunnels *reg = t->reg;
    char err[CP_TUNNEL_ERR_MAX];
    if (t->state != CP_TUN_HELLO) {
        cp_tunnel_end_reason(t, WP_GOAWAY_REASON_PROTOCOL_ERROR, "second hello");
        return;
    }
    if (cp_hello_check(doc, err, sizeof(err)) != 0) {
        wp_log_warn("invalid hello", WP_LS("peer", t->peer), WP_LS("reason", err));
        cp_tunnel_end_reason(t, WP_GOAWAY_REASON_PROTOCOL_ERROR, err);
        return;
    }
    const char *node = wp_json_get_str(doc, "node_id");
    snprintf(t->node_id, sizeof(t->node_id), "%s", node);
    snprintf(t->instance_id, sizeof(t->instance_id), "%s", wp_json_get_str(doc, "instance_id"));
    snprintf(t->version, sizeof(t->version), "%s", wp_json_get_str(doc, "version"));
    if (t->bound_node[0] && strcmp(t->bound_node, node) != 0) {
        wp_log_warn("agent token is bound to another node id", WP_LS("node", node),
                    WP_LS("bound", t->bound_node), WP_LS("peer", t->peer));
        cp_tunnel_end_reason(t, WP_GOAWAY_REASON_FORBIDDEN,
                             "this token is bound to another node id");
        return;
    }
    long long proto = 0;
    wp_json_get_int(doc, "protocol", &proto);
    if (proto != WP_PROTO_VERSION) {
        cp_tunnel_end_reason(t, WP_GOAWAY_REASON_UNSUPPORTED, "this server speaks protocol 1");
        return;
    }
    /* Node-registry rules (nodes.h); PROTOCOL.md's are as strict, so this only guards drift. */
    const cJSON *gpu = cJSON_GetObjectItemCaseSensitive(doc, "gpu");
    long long maxs = 0;
    wp_json_get_int(doc, "max_sessions", &maxs);
    cp_node_hello h = {.node_id = t->node_id,
                       .version = t->version,
                       .labels = cJSON_GetObjectItemCaseSensitive(doc, "labels"),
                       .max_sessions = (int)maxs,
                       .services = cJSON_GetObjectItemCaseSensitive(doc, "services"),
                       .gpus = cJSON_GetObjectItemCaseSensitive(gpu, "devices")};
    if (cp_node_hello_check(&h, err, sizeof(err)) != 0) {
        cp_tunnel_end_reason(t, WP_GOAWAY_REASON_PROTOCOL_ERROR, err);
        return;
    }
    cp_tunnel *old = cp_tunnels_find(reg, node);
    if (old && strcmp(old->instance_id, t->instance_id) == 0) {
        /* HA dialing landed on a replica this agent already holds (§4.3). */
        cp_tunnel_leave_hello(t);
        cp_tunnel_send_welcome(t);
        cp_tunnel_end_reason(t, WP_GOAWAY_REASON_DUPLICATE,
                             "this agent instance already has a tunnel to this replica");
        return;
    }
    if (old) {
        wp_log_warn("tunnel replaced by a newer agent instance", WP_LS("node", node),
                    WP_LS("old_peer", old->peer), WP_LS("new_peer", t->peer));
        old->replaced = 1;
        char msg[160];
        snprintf(msg, sizeof(msg), "a newer tunnel for %s connected", node);
        cp_tunnel_end_reason(old, WP_GOAWAY_REASON_REPLACED, msg);
    }
    wp_mux_config mcfg;
    wp_mux_config_default(&mcfg);
    /* The agent's windows may grow up to the stream_window_max welcome announces (§7.1).
     * Ours stay at the initial window (recv_window_max 0): the stream consumers (proxy,
     * bridge, Wolf client) size their inbound buffers to it. */
    t->mux = wp_mux_new(WP_MUX_CLIENT, &mcfg, &cp_tunnel_mux_cbs, t);
    if (!t->mux || cp_tunnel_send_welcome(t) != 0) {
        cp_tunnel_end_reason(t, WP_GOAWAY_REASON_INTERNAL_ERROR, "cannot answer the hello");
        return;
    }
    cp_tunnel_leave_hello(t);
    t->state = CP_TUN_ACTIVE;
    t->registered = 1;
    reg->nregistered++;
    t->connected_at_ms = cp_unix_ms();
    t->last_hb_mono = uv_now(reg->loop);
    wp_mux_touch(t->mux, uv_now(reg->loop));
    int draining = 0;
    if (wp_json_get_bool(doc, "draining", &draining) == 0 && draining) {
        t->draining = 1;
        wp_mux_drain(t->mux);
    }
    wp_log_info("node connected", WP_LS("node", t->node_id), WP_LS("peer", t->peer),
                WP_LS("version", t->version), WP_LS("instance", t->instance_id));
    cp_tunnel_store_hello(t, doc);
    cp_tunnel_kick(t);
}

/* Every wolf probe ok (an absent or empty wolf object counts as healthy). */
static int cp_wolf_healthy(const cJSON *wolf)
{
    for (const cJSON *p = wolf ? wolf->child : NULL; p; p = p->next) {
        const cJSON *ok = cJSON_GetObjectItemCaseSensitive(p, "ok");
        if (!cJSON_IsTrue(ok))
            return 0;
    }
    return 1;
}

static int cp_heartbeat_check(const cJSON *doc, char *err, size_t cap)
{
    if (!cp_is_int(cJSON_GetObjectItemCaseSensitive(doc, "seq"), 0, 9007199254740991LL))
        CP_HELLO_FAIL("seq: expected an integer >= 0");
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(doc, "time");
    if (tm && !cp_is_int(tm, 0, 9007199254740991LL))
        CP_HELLO_FAIL("time: expected an integer");
    const cJSON *load = cJSON_GetObjectItemCaseSensitive(doc, "load");
    if (!cJSON_IsObject(load) ||
        !cp_is_int(cJSON_GetObjectItemCaseSensitive(load, "active_sessions"), 0, 1 << 20) ||
        !cp_is_int(cJSON_GetObjectItemCaseSensitive(load, "max_sessions"), 0, 1 << 20))
        CP_HELLO_FAIL("load: expected an object with integer active_sessions and max_sessions");
    const cJSON *gpus = cJSON_GetObjectItemCaseSensitive(doc, "gpus");
    if (!cJSON_IsArray(gpus) || cJSON_GetArraySize(gpus) > (int)WP_GPUS_MAX)
        CP_HELLO_FAIL("gpus: expected an array of at most 64 objects");
    for (const cJSON *g = gpus->child; g; g = g->next)
        if (!cJSON_IsObject(g) ||
            !cp_is_int(cJSON_GetObjectItemCaseSensitive(g, "index"), 0, 1 << 20))
            CP_HELLO_FAIL("gpus: each needs an integer index");
    const cJSON *wolf = cJSON_GetObjectItemCaseSensitive(doc, "wolf");
    if (!cJSON_IsObject(wolf))
        CP_HELLO_FAIL("wolf: expected an object");
    for (const cJSON *p = wolf->child; p; p = p->next) {
        if (!cJSON_IsObject(p) || !cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(p, "ok")) ||
            !cp_is_int(cJSON_GetObjectItemCaseSensitive(p, "latency_ms"), 0, 1 << 30))
            CP_HELLO_FAIL("wolf: each probe needs ok (boolean) and latency_ms (integer)");
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(p, "error");
        if (e && (!cJSON_IsString(e) || strlen(e->valuestring) > CP_TUNNEL_STR_MAX))
            CP_HELLO_FAIL("wolf: error must be a string of at most 255 bytes");
    }
    return 0;
}

static void cp_tunnel_on_heartbeat(cp_tunnel *t, const cJSON *doc)
{
    cp_tunnels *reg = t->reg;
    char err[CP_TUNNEL_ERR_MAX];
    if (cp_heartbeat_check(doc, err, sizeof(err)) != 0) {
        wp_log_warn("invalid heartbeat dropped", WP_LS("node", t->node_id), WP_LS("reason", err));
        return;
    }
    uint64_t now = uv_now(reg->loop);
    long long seq = 0;
    wp_json_get_int(doc, "seq", &seq);
    if (t->heartbeats > 0 && seq != t->hb_seq + 1)
        wp_log_debug("heartbeat sequence gap", WP_LS("node", t->node_id),
                     WP_LI("expected", t->hb_seq + 1), WP_LI("got", seq));
    t->hb_seq = seq;
    /* An agent sending faster than half the interval would only load the database. */
    if (t->heartbeats > 0 && now - t->last_hb_mono < reg->heartbeat_ms / 2) {
        wp_log_debug("heartbeat too early, not stored", WP_LS("node", t->node_id));
        return;
    }
    t->heartbeats++;
    t->last_hb_mono = now;
    t->last_hb_ms = cp_unix_ms();
    const cJSON *wolf = cJSON_GetObjectItemCaseSensitive(doc, "wolf");
    cp_db *db = cp_tunnels_db(reg);
    int rc = db ? cp_nodes_heartbeat(db, t->node_id, cJSON_GetObjectItemCaseSensitive(doc, "load"),
                                     cJSON_GetObjectItemCaseSensitive(doc, "gpus"), wolf,
                                     cp_wolf_healthy(wolf), NULL, NULL)
                : WP_ERR_CLOSED;
    if (rc != 0)
        wp_log_debug("heartbeat not stored", WP_LS("node", t->node_id), WP_LE("err", rc));
}

/*
 * `event` (PROTOCOL.md §4.8): a known event becomes an audit row node.<event>; an
 * invalid one is dropped and logged (the tunnel stays up), as are events beyond
 * CP_TUNNEL_EVENTS_BURST in a row less than CP_TUNNEL_EVENT_GAP_MS apart.
 */
#define CP_TUNNEL_EVENT_GAP_MS 1000
#define CP_TUNNEL_EVENTS_BURST 10
static void cp_tunnel_on_event(cp_tunnel *t, const cJSON *doc)
{
    const char *ev = wp_json_get_str(doc, "event");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(doc, "message");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(doc, "data");
    if (!ev || strlen(ev) > 64 ||
        (m && (!cJSON_IsString(m) || strlen(m->valuestring) > CP_TUNNEL_STR_MAX)) ||
        (d && !cJSON_IsObject(d))) {
        wp_log_warn("invalid event dropped", WP_LS("node", t->node_id));
        return;
    }
    if (strcmp(ev, WP_EVENT_WOLF_RESTART) != 0) {
        wp_log_debug("unknown agent event ignored", WP_LS("node", t->node_id));
        return;
    }
    uint64_t now = uv_now(t->reg->loop);
    if (t->events >= CP_TUNNEL_EVENTS_BURST && now - t->last_event_mono < CP_TUNNEL_EVENT_GAP_MS) {
        wp_log_warn("agent events too fast, dropped", WP_LS("node", t->node_id));
        return;
    }
    if (now - t->last_event_mono >= CP_TUNNEL_EVENT_GAP_MS)
        t->events = 0;
    t->events++;
    t->last_event_mono = now;
    const char *msg = m ? m->valuestring : "";
    wp_log_warn("node ran its Wolf restart command", WP_LS("node", t->node_id),
                WP_LS("message", msg));
    cp_db *db = cp_tunnels_db(t->reg);
    cp_event e = {
        .type = CP_EV_NODE_WOLF_RESTART, .node_id = t->node_id, .message = msg, .data = d};
    int rc = db ? cp_events_add(db, &e, NULL, NULL) : WP_ERR_CLOSED;
    if (rc != 0)
        wp_log_warn("agent event not stored", WP_LS("node", t->node_id), WP_LE("err", rc));
}

static void cp_tunnel_on_drain(cp_tunnel *t, const cJSON *doc)
{
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(doc, "reason");
    const cJSON *to = cJSON_GetObjectItemCaseSensitive(doc, "timeout_ms");
    if ((r && (!cJSON_IsString(r) || strlen(r->valuestring) > CP_TUNNEL_STR_MAX)) ||
        (to && !cp_is_int(to, 0, 9007199254740991LL))) {
        cp_tunnel_end_reason(t, WP_GOAWAY_REASON_PROTOCOL_ERROR, "invalid drain");
        return;
    }
    if (!t->draining) {
        t->draining = 1;
        wp_mux_drain(t->mux);
        wp_log_info("agent is draining", WP_LS("node", t->node_id),
                    WP_LS("reason", r ? r->valuestring : ""));
    }
}

static void cp_tunnel_on_goaway(cp_tunnel *t, const cJSON *doc)
{
    const char *reason = wp_json_get_str(doc, "reason");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(doc, "message");
    if (!reason || strlen(reason) > 64 ||
        (m && (!cJSON_IsString(m) || strlen(m->valuestring) > CP_TUNNEL_STR_MAX))) {
        cp_tunnel_end_reason(t, WP_GOAWAY_REASON_PROTOCOL_ERROR, "invalid goaway");
        return;
    }
    char msg[300];
    snprintf(msg, sizeof(msg), "agent goaway %s%s%s", reason, m ? ": " : "",
             m ? m->valuestring : "");
    cp_tunnel_end(t, NULL, msg, WP_WS_CLOSE_NORMAL);
}

static const char *cp_stream_err_known(const char *code)
{
    static const char *const known[] = {
        WP_STREAM_ERR_REFUSED,     WP_STREAM_ERR_NOT_ALLOWED, WP_STREAM_ERR_TIMEOUT,
        WP_STREAM_ERR_UNREACHABLE, WP_STREAM_ERR_PROTOCOL,    WP_STREAM_ERR_BUSY,
        WP_STREAM_ERR_DRAINING,    WP_STREAM_ERR_RESET,       WP_STREAM_ERR_INTERNAL,
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strcmp(code, known[i]) == 0)
            return known[i];
    return WP_STREAM_ERR_INTERNAL;
}

static void cp_tunnel_on_error_msg(cp_tunnel *t, const cJSON *doc)
{
    const cJSON *sid = cJSON_GetObjectItemCaseSensitive(doc, "stream");
    const char *code = wp_json_get_str(doc, "code");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(doc, "message");
    if (!cp_is_int(sid, 0, WP_STREAM_ID_MAX) || !code || strlen(code) > 64 ||
        (m && (!cJSON_IsString(m) || strlen(m->valuestring) > CP_TUNNEL_STR_MAX))) {
        cp_tunnel_end_reason(t, WP_GOAWAY_REASON_PROTOCOL_ERROR, "invalid error message");
        return;
    }
    uint32_t id = (uint32_t)sid->valuedouble;
    const char *known = cp_stream_err_known(code);
    cp_stream *st = id ? wp_mux_stream_ud(t->mux, id) : NULL;
    if (st)
        snprintf(st->err_code, sizeof(st->err_code), "%s", known);
    wp_log_info("agent reported a stream error", WP_LS("node", t->node_id), WP_LI("stream", id),
                WP_LS("code", known), WP_LS("message", m ? m->valuestring : ""),
                WP_LI("known_stream", st != NULL));
}

/* ------------------------------------------------------------------ */
/* WebSocket callbacks                                                  */

static void cp_ws_on_text(wp_ws *ws, const char *p, size_t n, void *ud)
{
    (void)ws;
    cp_tunnel *t = ud;
    if (t->ending)
        return;
    if (t->mux)
        wp_mux_touch(t->mux, uv_now(t->reg->loop));
    cJSON *doc = NULL;
    const char *type = NULL;
    if (wp_json_parse(p, n, WP_CONTROL_MSG_MAX, CP_TUNNEL_JSON_DEPTH, &doc) != 0 ||
        !cJSON_IsObject(doc) || !(type = wp_json_get_str(doc, "type"))) {
        cJSON_Delete(doc);
        cp_tunnel_end_reason(t, WP_GOAWAY_REASON_PROTOCOL_ERROR,
                             "control message is not a JSON object with a string type");
        return;
    }
    if (strcmp(type, WP_MSG_HELLO) == 0) {
        cp_tunnel_on_hello(t, doc);
    } else if (t->state == CP_TUN_HELLO) {
        cp_tunnel_end_reason(t, WP_GOAWAY_REASON_PROTOCOL_ERROR, "the first message must be hello");
    } else if (strcmp(type, WP_MSG_HEARTBEAT) == 0) {
        cp_tunnel_on_heartbeat(t, doc);
    } else if (strcmp(type, WP_MSG_DRAIN) == 0) {
        cp_tunnel_on_drain(t, doc);
    } else if (strcmp(type, WP_MSG_GOAWAY) == 0) {
        cp_tunnel_on_goaway(t, doc);
    } else if (strcmp(type, WP_MSG_ERROR) == 0) {
        cp_tunnel_on_error_msg(t, doc);
    } else if (strcmp(type, WP_MSG_EVENT) == 0) {
        cp_tunnel_on_event(t, doc);
    } else if (strcmp(type, WP_MSG_WELCOME) == 0) {
        cp_tunnel_end_reason(t, WP_GOAWAY_REASON_PROTOCOL_ERROR, "welcome from an agent");
    } else {
        wp_log_debug("unknown control message ignored", WP_LS("node", t->node_id));
    }
    cJSON_Delete(doc);
    cp_tunnel_kick(t);
}

static void cp_ws_on_binary(wp_ws *ws, const uint8_t *p, size_t n, void *ud)
{
    (void)ws;
    cp_tunnel *t = ud;
    if (t->ending)
        return;
    if (t->state != CP_TUN_ACTIVE) {
        cp_tunnel_end_reason(t, WP_GOAWAY_REASON_PROTOCOL_ERROR, "binary message before hello");
        return;
    }
    int rc = wp_mux_feed(t->mux, p, n, uv_now(t->reg->loop));
    if (rc != 0 && !t->ending) /* the callbacks normally ended it already */
        cp_tunnel_end_reason(t, WP_GOAWAY_REASON_PROTOCOL_ERROR, wp_strerror(rc));
    cp_tunnel_kick(t);
}

static void cp_ws_on_close(wp_ws *ws, int code, const char *reason, size_t len, void *ud)
{
    (void)ws;
    (void)reason;
    (void)len;
    cp_tunnel *t = ud;
    t->ws_done = 1;
    wp_log_debug("tunnel websocket closed by the agent", WP_LS("peer", t->peer),
                 WP_LI("code", code));
    cp_tunnel_end(t, NULL, "websocket closed", WP_WS_CLOSE_NORMAL);
}

static void cp_ws_on_error(wp_ws *ws, int err, void *ud)
{
    (void)ws;
    cp_tunnel *t = ud;
    t->ws_done = 1;
    wp_log_debug("tunnel websocket ended", WP_LS("peer", t->peer), WP_LE("err", err));
    cp_tunnel_end(t, NULL, wp_strerror(err), WP_WS_CLOSE_NORMAL);
}

static void cp_ws_on_drain(wp_ws *ws, void *ud)
{
    (void)ws;
    cp_tunnel *t = ud;
    t->ws_blocked = 0;
    cp_tunnel_kick(t);
}

static void cp_ws_on_freed(wp_ws *ws, void *ud)
{
    (void)ws;
    cp_tunnel *t = ud;
    t->ws_done = 1;
    cp_tunnel_end(t, NULL, "connection closed", WP_WS_CLOSE_NORMAL);
    t->ws = NULL;
    uv_close((uv_handle_t *)&t->timer, cp_tunnel_handle_closed);
    uv_close((uv_handle_t *)&t->idle, cp_tunnel_handle_closed);
}

static const wp_ws_callbacks cp_tunnel_ws_cbs = {
    .on_text = cp_ws_on_text,
    .on_binary = cp_ws_on_binary,
    .on_close = cp_ws_on_close,
    .on_error = cp_ws_on_error,
    .on_drain = cp_ws_on_drain,
    .on_freed = cp_ws_on_freed,
};

/* ------------------------------------------------------------------ */
/* the upgrade route                                                    */

static void cp_tunnel_reject(wp_http_req *req, int status, const char *code, const char *msg)
{
    if (status == 503)
        wp_http_resp_header(req, "Retry-After", "5");
    wp_ws_reject(req, status, code, msg);
}

static void cp_tunnel_auth_failed(void *data)
{
    cp_tunnels *reg = data;
    reg->nauth--;
    cp_tunnels_maybe_free(reg);
}

static void cp_tunnel_authed(cp_call *call)
{
    cp_tunnels *reg = call->data;
    reg->nauth--;
    wp_http_req *req = cp_call_req(call);
    if (reg->shutting || reg->closed) {
        cp_call_respond_error(call, 503, WP_UPGRADE_ERR_OVER_CAPACITY, "shutting down");
        cp_tunnels_maybe_free(reg);
        return;
    }
    cp_tunnel *t = calloc(1, sizeof(*t));
    if (!t) {
        cp_call_respond_error(call, 500, "internal", "out of memory");
        return;
    }
    t->reg = reg;
    snprintf(t->token_id, sizeof(t->token_id), "%s", call->who.token_id);
    snprintf(t->bound_node, sizeof(t->bound_node), "%s", call->who.node_id);
    wp_buf_init(&t->out, CP_TUNNEL_PULL_MAX);
    /* The request is ours from here: end the call without answering it. */
    wp_http_req_on_abort(req, NULL, NULL);
    call->req = NULL;
    cp_call_done(call);
    wp_ws_limits lim;
    wp_ws_limits_default(&lim);
    lim.max_binary = WP_WS_MSG_MAX;
    lim.max_text = WP_CONTROL_MSG_MAX;
    int rc = wp_ws_server_upgrade(req, WP_PROTO_SUBPROTOCOL, &lim, &cp_tunnel_ws_cbs, t, &t->ws);
    if (rc != 0) {
        if (rc == WP_ERR_INVAL)
            wp_http_respond_error(req, 500, "internal", "cannot upgrade");
        wp_buf_free(&t->out);
        free(t);
        return;
    }
    snprintf(t->peer, sizeof(t->peer), "%s", wp_ws_peer_str(t->ws));
    uv_timer_init(reg->loop, &t->timer);
    uv_idle_init(reg->loop, &t->idle);
    t->timer.data = t->idle.data = t;
    t->handles_open = 2;
    t->prehello = 1;
    reg->nprehello++;
    reg->ntunnels++;
    t->prev = reg->tail;
    if (reg->tail)
        reg->tail->next = t;
    else
        reg->head = t;
    reg->tail = t;
    uv_timer_start(&t->timer, cp_tunnel_timer_cb, WP_HELLO_TIMEOUT_MS, 0);
    wp_log_debug("tunnel upgraded, waiting for hello", WP_LS("peer", t->peer));
}

/* GET /api/v1/tunnel: checks in PROTOCOL.md §2.2 order; auth, then wp_ws_server_upgrade. */
static void cp_tunnel_route(wp_http_req *req, void *ud)
{
    cp_server *s = ud;
    cp_tunnels *reg = s->tunnels;
    if (!reg || reg->shutting) {
        cp_tunnel_reject(req, 503, WP_UPGRADE_ERR_OVER_CAPACITY, "the server is shutting down");
        return;
    }
    if (reg->ntunnels + reg->nauth >= reg->max_tunnels ||
        reg->nauth + reg->nprehello >= reg->max_upgrades) {
        wp_log_warn("tunnel refused: over capacity", WP_LI("tunnels", reg->ntunnels),
                    WP_LI("handshakes", reg->nauth + reg->nprehello));
        cp_tunnel_reject(req, 503, WP_UPGRADE_ERR_OVER_CAPACITY,
                         "too many tunnels or handshakes, retry later");
        return;
    }
    if (strcmp(wp_http_req_method(req), "GET") != 0) {
        cp_tunnel_reject(req, 405, WP_UPGRADE_ERR_METHOD, "the tunnel is opened with GET");
        return;
    }
    if (wp_http_req_query(req)[0] != '\0') {
        cp_tunnel_reject(req, 400, WP_UPGRADE_ERR_BAD_REQUEST,
                         "the tunnel request must not have a query string");
        return;
    }
    reg->nauth++;
    cp_auth_request(s, req, CP_ROLE_AGENT, cp_tunnel_authed, cp_tunnel_auth_failed, reg);
}

/* ------------------------------------------------------------------ */
/* registry: health sweep, lifecycle                                    */

static void cp_tunnels_swept(int err, size_t n, const char *const *ids, const char *const *replicas,
                             void *ud)
{
    cp_tunnels *reg = ud;
    reg->db_pending--;
    reg->sweep_inflight = 0;
    if (reg->closed || reg->shutting) {
        cp_tunnels_maybe_free(reg);
        return;
    }
    if (err != 0) {
        wp_log_debug("health sweep failed", WP_LE("err", err));
        return;
    }
    uint64_t now = uv_now(reg->loop);
    for (size_t i = 0; i < n; i++) {
        if (replicas[i] && strcmp(replicas[i], reg->replica_id) != 0)
            continue;
        cp_tunnel *t = cp_tunnels_find(reg, ids[i]);
        if (!t)
            continue;
        if (now - t->last_hb_mono <= 2ull * reg->heartbeat_ms) {
            /* Our own clock says it is alive (the database was behind): its next heartbeat
             * brings the row back. */
            wp_log_info("health sweep marked a connected node offline; keeping its tunnel",
                        WP_LS("node", t->node_id));
            continue;
        }
        cp_tunnel_end_reason(t, WP_GOAWAY_REASON_PROTOCOL_ERROR, "no heartbeat for two intervals");
    }
}

static void cp_tunnels_timer_cb(uv_timer_t *h)
{
    cp_tunnels *reg = h->data;
    if (reg->shutting) {
        wp_log_warn("tunnels did not close in time, aborting", WP_LI("tunnels", reg->ntunnels),
                    WP_LI("bridges", reg->nbridges));
        for (cp_tunnel *t = reg->head; t; t = t->next)
            if (t->ws)
                wp_ws_abort(t->ws);
        for (cp_bridge_link *l = reg->bridges; l;) {
            cp_bridge_link *next = l->next;
            l->force_close(l);
            l = next;
        }
        return;
    }
    cp_db *db = cp_tunnels_db(reg);
    if (!db)
        return;
    /* Every minute or so, recompute active_sessions from the sessions table: counters
     * maintained incrementally drift after crashes and reconnects (the old system's did). */
    if (++reg->ticks % (CP_RECOUNT_PERIOD_MS / reg->heartbeat_ms + 1) == 0)
        cp_nodes_recount_active(db, NULL, NULL);
    if (reg->sweep_inflight)
        return;
    int rc = cp_nodes_health_sweep(db, 2u * reg->heartbeat_ms, cp_tunnels_swept, reg);
    if (rc == 0) {
        reg->sweep_inflight = 1;
        reg->db_pending++;
    } else {
        wp_log_debug("health sweep not started", WP_LE("err", rc));
    }
}

int cp_tunnels_init(cp_server *s)
{
    cp_tunnels *reg = calloc(1, sizeof(*reg));
    if (!reg)
        return WP_ERR_NOMEM;
    uint8_t rnd[4];
    if (wp_random_bytes(rnd, sizeof(rnd)) != 0) {
        free(reg);
        return WP_ERR_CRYPTO;
    }
    reg->s = s;
    reg->loop = s->loop;
    snprintf(reg->replica_id, sizeof(reg->replica_id), "wolfpackd-%02x%02x%02x%02x", rnd[0], rnd[1],
             rnd[2], rnd[3]);
    long long hb = s->cfg ? s->cfg->heartbeat_interval_s : 10;
    if (hb < 1)
        hb = 1;
    if (hb > WP_HEARTBEAT_MAX_MS / 1000)
        hb = WP_HEARTBEAT_MAX_MS / 1000;
    reg->heartbeat_ms = (unsigned)hb * 1000u;
    reg->max_tunnels = s->cfg && s->cfg->max_tunnels > 0 ? (size_t)s->cfg->max_tunnels : 1024;
    reg->max_upgrades = s->cfg && s->cfg->max_handshakes > 0 ? (size_t)s->cfg->max_handshakes : 64;
    int rc = wp_http_server_route(s->http, "*", WP_PROTO_TUNNEL_PATH, cp_tunnel_route, s,
                                  WP_HTTP_ROUTE_UPGRADE);
    if (rc != 0) {
        free(reg);
        return rc;
    }
    wp_http_server_set_connect_handler(s->http, cp_connect_handler, s);
    uv_timer_init(s->loop, &reg->timer);
    reg->timer.data = reg;
    uv_timer_start(&reg->timer, cp_tunnels_timer_cb, reg->heartbeat_ms, reg->heartbeat_ms);
    s->tunnels = reg;
    wp_log_info("tunnel endpoint ready", WP_LS("replica", reg->replica_id),
                WP_LI("heartbeat_interval_s", hb), WP_LI("max_tunnels", reg->max_tunnels));
    return 0;
}

void cp_tunnels_shutdown(cp_server *s, void (*cb)(cp_server *s))
{
    cp_tunnels *reg = s->tunnels;
    if (!reg) {
        if (cb)
            cb(s);
        return;
    }
    if (reg->shutting)
        return;
    reg->shutting = 1;
    reg->shutdown_cb = cb;
    for (cp_tunnel *t = reg->head; t; t = t->next)
        cp_tunnel_end_reason(t, WP_GOAWAY_REASON_SHUTDOWN, "wolfpackd is shutting down");
    uv_timer_stop(&reg->timer);
    uv_timer_start(&reg->timer, cp_tunnels_timer_cb, CP_TUNNEL_SHUTDOWN_MS, 0);
    cp_tunnels_maybe_done(reg);
}

int cp_tunnels_bridge_link(cp_server *s, cp_bridge_link *l)
{
    cp_tunnels *reg = s->tunnels;
    if (!reg || reg->shutting)
        return WP_ERR_CLOSED;
    l->prev = NULL;
    l->next = reg->bridges;
    if (reg->bridges)
        reg->bridges->prev = l;
    reg->bridges = l;
    reg->nbridges++;
    return 0;
}

void cp_tunnels_bridge_unlink(cp_server *s, cp_bridge_link *l)
{
    cp_tunnels *reg = s->tunnels;
    if (!reg)
        return;
    if (l->prev)
        l->prev->next = l->next;
    else
        reg->bridges = l->next;
    if (l->next)
        l->next->prev = l->prev;
    l->prev = l->next = NULL;
    reg->nbridges--;
    cp_tunnels_maybe_done(reg);
}

int cp_tunnels_running(const cp_server *s)
{
    return s->tunnels && !s->tunnels->shutting;
}

/* ------------------------------------------------------------------ */
/* registry queries                                                     */

const char *cp_tunnel_replica_id(const cp_server *s)
{
    return s && s->tunnels ? s->tunnels->replica_id : "";
}

size_t cp_tunnel_count(const cp_server *s)
{
    return s && s->tunnels ? s->tunnels->nregistered : 0;
}

int cp_tunnel_connected(const cp_server *s, const char *node_id)
{
    return s && cp_tunnels_find(s->tunnels, node_id) != NULL;
}

static void cp_tunnel_info_fill(const cp_tunnel *t, cp_tunnel_info *out)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->node_id, sizeof(out->node_id), "%s", t->node_id);
    snprintf(out->instance_id, sizeof(out->instance_id), "%s", t->instance_id);
    snprintf(out->version, sizeof(out->version), "%s", t->version);
    snprintf(out->peer, sizeof(out->peer), "%s", t->peer);
    snprintf(out->token_id, sizeof(out->token_id), "%s", t->token_id);
    out->connected_at_ms = t->connected_at_ms;
    out->last_heartbeat_ms = t->last_hb_ms;
    out->heartbeats = t->heartbeats;
    out->streams = t->mux ? wp_mux_stream_count(t->mux) : 0;
    out->rtt_ms = t->mux ? wp_mux_rtt_ms(t->mux) : -1;
    out->draining = t->draining;
}

int cp_tunnel_info_get(const cp_server *s, const char *node_id, cp_tunnel_info *out)
{
    if (!s || !node_id || !out)
        return WP_ERR_INVAL;
    const cp_tunnel *t = cp_tunnels_find(s->tunnels, node_id);
    if (!t)
        return WP_ERR_NOT_FOUND;
    cp_tunnel_info_fill(t, out);
    return 0;
}

size_t cp_tunnel_foreach(const cp_server *s, void (*fn)(const cp_tunnel_info *info, void *ud),
                         void *ud)
{
    size_t n = 0;
    if (!s || !s->tunnels || !fn)
        return 0;
    for (const cp_tunnel *t = s->tunnels->head; t; t = t->next) {
        if (!t->registered)
            continue;
        cp_tunnel_info info;
        cp_tunnel_info_fill(t, &info);
        fn(&info, ud);
        n++;
    }
    return n;
}

int cp_tunnel_disconnect_token(cp_server *s, const char *token_id)
{
    int n = 0;
    if (!s || !s->tunnels || !token_id || !token_id[0])
        return 0;
    for (cp_tunnel *t = s->tunnels->head; t; t = t->next) {
        if (t->ending || strcmp(t->token_id, token_id) != 0)
            continue;
        cp_tunnel_end_reason(t, WP_GOAWAY_REASON_FORBIDDEN, "token revoked");
        n++;
    }
    return n;
}

int cp_tunnel_close_node(cp_server *s, const char *node_id, const char *reason, const char *message)
{
    if (!s || !node_id || !reason || cp_goaway_close_code(reason) == 0)
        return WP_ERR_INVAL;
    cp_tunnel *t = cp_tunnels_find(s->tunnels, node_id);
    if (!t)
        return WP_ERR_NOT_FOUND;
    cp_tunnel_end_reason(t, reason, message);
    return 0;
}

/* ------------------------------------------------------------------ */
/* stream API                                                           */

int cp_tunnel_open_stream(cp_server *s, const char *node_id, const char *preamble_json,
                          const cp_stream_callbacks *cbs, void *ud, cp_stream **out)
{
    if (!s || !node_id || !preamble_json || !cbs || !cbs->on_open || !cbs->on_closed || !out)
        return WP_ERR_INVAL;
    size_t len = strlen(preamble_json);
    if (len == 0 || len > WP_PREAMBLE_MAX)
        return WP_ERR_INVAL;
    if (!cp_tunnels_running(s))
        return WP_ERR_NOT_FOUND;
    cp_tunnel *t = cp_tunnels_find(s->tunnels, node_id);
    if (!t)
        return WP_ERR_NOT_FOUND;
    if (t->draining || t->ending || !t->mux)
        return WP_ERR_CLOSED;
    cp_stream *st = calloc(1, sizeof(*st));
    if (!st)
        return WP_ERR_NOMEM;
    st->t = t;
    st->cbs = *cbs;
    st->ud = ud;
    int rc = wp_mux_open(t->mux, preamble_json, len, st, &st->id);
    if (rc != 0) {
        free(st);
        return rc;
    }
    *out = st;
    cp_tunnel_kick(t);
    return 0;
}

int cp_stream_write(cp_stream *st, const void *p, size_t n)
{
    if (!st || (!p && n))
        return WP_ERR_INVAL;
    if (st->final)
        return WP_ERR_CLOSED;
    int rc = wp_mux_write(st->t->mux, st->id, p, n);
    cp_tunnel_kick(st->t);
    return rc == WP_ERR_NOT_FOUND ? WP_ERR_CLOSED : rc;
}

size_t cp_stream_write_room(const cp_stream *st)
{
    if (!st || st->final)
        return 0;
    return wp_mux_write_room(st->t->mux, st->id);
}

int cp_stream_consumed(cp_stream *st, size_t n)
{
    if (!st)
        return WP_ERR_INVAL;
    if (st->final)
        return WP_ERR_CLOSED;
    int rc = wp_mux_consumed(st->t->mux, st->id, n);
    cp_tunnel_kick(st->t);
    return rc == WP_ERR_NOT_FOUND || rc == WP_ERR_LIMIT ? WP_ERR_CLOSED : rc;
}

int cp_stream_close_write(cp_stream *st)
{
    if (!st)
        return WP_ERR_INVAL;
    if (st->final)
        return WP_ERR_CLOSED;
    int rc = wp_mux_close_write(st->t->mux, st->id);
    cp_tunnel_kick(st->t);
    return rc == 0 ? 0 : WP_ERR_CLOSED;
}

int cp_stream_set_callbacks(cp_stream *st, const cp_stream_callbacks *cbs, void *ud)
{
    if (!st || !cbs || !cbs->on_closed)
        return WP_ERR_INVAL;
    if (st->final)
        return WP_ERR_CLOSED;
    st->cbs = *cbs;
    st->ud = ud;
    return 0;
}

void cp_stream_reset(cp_stream *st)
{
    if (!st || st->final)
        return;
    cp_tunnel *t = st->t;
    wp_mux_reset(t->mux, st->id);
    free(st);
    cp_tunnel_kick(t);
}

uint32_t cp_stream_id(const cp_stream *st)
{
    return st && !st->final ? st->id : 0;
}
