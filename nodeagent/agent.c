/*
 * agent.c — wolfpack-agent's tunnel client: connect loop with backoff, control messages
 * (hello, welcome, heartbeat, drain, goaway, error) and the mux session (see agent.h).
 */
#include "agent.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "curl_uv.h"
#include "err.h"
#include "json.h"
#include "log.h"
#include "mux.h"
#include "proxy.h"
#include "stats.h"
#include "status.h"
#include "tls.h"
#include "version.h"
#include "watchdog.h"
#include "wolfprobe.h"
#include "ws.h"

#define NA_OUT_MSG_MAX   (32u * 1024u)        /* binary message built per pull */
#define NA_WS_QUEUED_MAX (2u * 1024u * 1024u) /* WebSocket outbound bytes before backpressure */
#define NA_TEXTQ_MAX     (512u * 1024u)       /* control messages waiting for the WebSocket */
#define NA_DRAIN_POLL_MS 100
#define NA_SKEW_LOG_MS   5000

/* ------------------------------------------------------------------ */
/* pure helpers                                                        */

uint64_t na_backoff_delay_ms(unsigned n, uint64_t rnd)
{
    uint64_t ceil = WP_BACKOFF_CAP_MS;
    if (n < 32) {
        uint64_t v = (uint64_t)WP_BACKOFF_BASE_MS << n;
        if (v < ceil)
            ceil = v;
    }
    return rnd % (ceil + 1);
}

int na_tunnel_url(const char *url, char *out, size_t cap)
{
    if (!url || !out)
        return WP_ERR_INVAL;
    const char *auth;
    if (strncmp(url, "wss://", 6) == 0)
        auth = url + 6;
    else if (strncmp(url, "https://", 8) == 0)
        auth = url + 8;
    else
        return WP_ERR_INVAL;
    size_t alen = strcspn(auth, "/?#");
    if (alen == 0 || alen > 300)
        return WP_ERR_INVAL;
    const char *rest = auth + alen;
    if (!(rest[0] == '\0' || (rest[0] == '/' && rest[1] == '\0')))
        return WP_ERR_INVAL;
    for (size_t i = 0; i < alen; i++) {
        unsigned char c = (unsigned char)auth[i];
        if (c <= 0x20 || c >= 0x7f || c == '@' || c == '\\')
            return WP_ERR_INVAL;
    }
    int n = snprintf(out, cap, "wss://%.*s%s", (int)alen, auth, WP_PROTO_TUNNEL_PATH);
    if (n < 0 || (size_t)n >= cap)
        return WP_ERR_LIMIT;
    return 0;
}

int na_label_valid(const char *key, const char *value)
{
    if (!key || !value)
        return 0;
    size_t kl = strlen(key), vl = strlen(value);
    if (kl == 0 || kl > 63 || vl > 63)
        return 0;
    for (size_t i = 0; i < kl; i++) {
        char c = key[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 (i > 0 && (c == '.' || c == '_' || c == '/' || c == '-'));
        if (!ok)
            return 0;
    }
    for (size_t i = 0; i < vl; i++)
        if ((unsigned char)value[i] < 0x20 || (unsigned char)value[i] > 0x7e)
            return 0;
    return 1;
}

int na_agent_check_config(const na_config *cfg, char *err, size_t cap)
{
    if (!cfg)
        return WP_ERR_INVAL;
    if (cfg->nlabels > WP_LABELS_MAX || cfg->nservices > WP_SERVICES_MAX) {
        snprintf(err, cap, "too many labels or services for the tunnel protocol");
        return WP_ERR_CONFIG;
    }
    for (size_t i = 0; i < cfg->nlabels; i++) {
        if (!na_label_valid(cfg->labels[i].key, cfg->labels[i].value)) {
            snprintf(err, cap,
                     "--label %.64s: the tunnel protocol needs a key of [a-z0-9][a-z0-9._/-]{0,62} "
                     "and a value of at most 63 printable ASCII characters",
                     cfg->labels[i].key);
            return WP_ERR_CONFIG;
        }
    }
    for (size_t i = 0; i < cfg->nservices; i++) {
        const char *n = cfg->services[i].name;
        if (!na_service_name_valid(n)) {
            snprintf(err, cap,
                     "--service %.40s: the tunnel protocol needs a name of [a-z0-9][a-z0-9-]{0,31}",
                     n);
            return WP_ERR_CONFIG;
        }
        if (strcmp(n, WP_PREAMBLE_SERVICE_SANDBOX) == 0 ||
            strcmp(n, WP_PREAMBLE_SERVICE_PROBE) == 0) {
            snprintf(err, cap, "--service %s: the name is reserved for a built-in service", n);
            return WP_ERR_CONFIG;
        }
    }
    if (cfg->max_sessions < 0 || cfg->max_sessions > 1024) {
        snprintf(err, cap, "--max-sessions must be 0..1024");
        return WP_ERR_CONFIG;
    }
    return 0;
}

int na_token_valid(const char *token)
{
    if (!token)
        return 0;
    size_t n = strlen(token);
    if (n == 0 || n > 4096)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)token[i] <= 0x20 || (unsigned char)token[i] >= 0x7f)
            return 0;
    return 1;
}

char *na_hello_json(const na_config *cfg, const na_sandbox_policy *sb,
                    const na_gpu_inventory *gpu_inv, const char *instance_id, int draining)
{
    if (!cfg || !instance_id)
        return NULL;
    char *out = NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON *labels = cJSON_CreateObject();
    cJSON *svcs = cJSON_CreateArray();
    cJSON *gpu = gpu_inv ? na_gpu_inventory_json(gpu_inv) : cJSON_CreateObject();
    if (!o || !labels || !svcs || !gpu) {
        cJSON_Delete(labels);
        cJSON_Delete(svcs);
        cJSON_Delete(gpu);
        goto out;
    }
    cJSON_AddItemToObject(o, "labels", labels);
    cJSON_AddItemToObject(o, "services", svcs);
    cJSON_AddItemToObject(o, "gpu", gpu);
    int ok = cJSON_AddStringToObject(o, "type", WP_MSG_HELLO) &&
             cJSON_AddNumberToObject(o, "protocol", WP_PROTO_VERSION) &&
             cJSON_AddStringToObject(o, "node_id", cfg->node_id) &&
             cJSON_AddStringToObject(o, "instance_id", instance_id) &&
             cJSON_AddStringToObject(o, "version", wp_version()) &&
             cJSON_AddNumberToObject(o, "max_sessions", (double)cfg->max_sessions) &&
             cJSON_AddBoolToObject(o, "draining", draining ? 1 : 0) &&
             cJSON_AddNumberToObject(o, WP_HELLO_STREAM_WINDOW_MAX, WP_STREAM_WINDOW_MAX) &&
             (gpu_inv || (cJSON_AddStringToObject(gpu, "vendor", "none") &&
                          cJSON_AddArrayToObject(gpu, "devices")));
    for (size_t i = 0; ok && i < cfg->nlabels; i++)
        ok = cJSON_AddStringToObject(labels, cfg->labels[i].key, cfg->labels[i].value) != NULL;
    for (size_t i = 0; ok && i < cfg->nservices; i++) {
        cJSON *s = cJSON_CreateString(cfg->services[i].name);
        ok = s && cJSON_AddItemToArray(svcs, s);
    }
    if (ok && sb && sb->enabled) {
        cJSON *s = cJSON_CreateString(WP_PREAMBLE_SERVICE_SANDBOX);
        ok = s && cJSON_AddItemToArray(svcs, s);
    }
    if (ok)
        out = wp_json_print(o);
out:
    cJSON_Delete(o);
    return out;
}

static int na_replica_id_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

int na_welcome_parse(const cJSON *obj, na_welcome *out, char *err, size_t cap)
{
    static const wp_json_field fields[] = {
        {"type", WP_JSON_STRING, 1, 64, 0, 0},
        {"protocol", WP_JSON_INT, 1, 0, 0, 0},
        {"replica_id", WP_JSON_STRING, 1, 64, 0, 0},
        {"replica_count", WP_JSON_INT, 1, 0, 1, 9007199254740991LL},
        {"heartbeat_interval_ms", WP_JSON_INT, 1, 0, 0, 9007199254740991LL},
        {"server_time", WP_JSON_INT, 1, 0, 0, 9007199254740991LL},
        {"node_id", WP_JSON_STRING, 1, WP_NODE_ID_MAX, 0, 0},
        {"version", WP_JSON_STRING, 0, 255, 0, 0},
        {WP_HELLO_STREAM_WINDOW_MAX, WP_JSON_INT, 0, 0, WP_STREAM_INITIAL_WINDOW,
         WP_STREAM_WINDOW_LIMIT},
    };
    if (!obj || !out)
        return WP_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (wp_json_validate(obj, fields, sizeof(fields) / sizeof(fields[0]), WP_JSON_UNKNOWN_IGNORE,
                         err, cap) != 0)
        return WP_ERR_PROTO;
    long long proto = 0;
    (void)wp_json_get_int(obj, "protocol", &proto);
    if (proto != WP_PROTO_VERSION) {
        snprintf(err, cap, "welcome names protocol %lld, this agent speaks %d", proto,
                 WP_PROTO_VERSION);
        return WP_ERR_UNSUPPORTED;
    }
    const char *rid = wp_json_get_str(obj, "replica_id");
    const char *nid = wp_json_get_str(obj, "node_id");
    if (!na_replica_id_valid(rid)) {
        snprintf(err, cap, "welcome: invalid replica_id");
        return WP_ERR_PROTO;
    }
    if (!na_node_id_valid(nid)) {
        snprintf(err, cap, "welcome: invalid node_id");
        return WP_ERR_PROTO;
    }
    snprintf(out->replica_id, sizeof(out->replica_id), "%s", rid);
    snprintf(out->node_id, sizeof(out->node_id), "%s", nid);
    (void)wp_json_get_int(obj, "replica_count", &out->replica_count);
    (void)wp_json_get_int(obj, "heartbeat_interval_ms", &out->heartbeat_interval_ms);
    (void)wp_json_get_int(obj, "server_time", &out->server_time);
    /* absent: a server that accepts no window growth (PROTOCOL.md §7.1) */
    out->stream_window_max = WP_STREAM_INITIAL_WINDOW;
    (void)wp_json_get_int(obj, WP_HELLO_STREAM_WINDOW_MAX, &out->stream_window_max);
    if (out->replica_count > (long long)WP_MAX_REPLICAS)
        out->replica_count = WP_MAX_REPLICAS;
    if (out->heartbeat_interval_ms < WP_HEARTBEAT_MIN_MS)
        out->heartbeat_interval_ms = WP_HEARTBEAT_MIN_MS;
    if (out->heartbeat_interval_ms > WP_HEARTBEAT_MAX_MS)
        out->heartbeat_interval_ms = WP_HEARTBEAT_MAX_MS;
    return 0;
}

/* ------------------------------------------------------------------ */
/* the running agent                                                   */

enum na_state {
    NA_IDLE = 0,   /* waiting for the retry timer */
    NA_CONNECTING, /* TLS + upgrade in progress */
    NA_HELLO,      /* hello sent, waiting for welcome */
    NA_READY,      /* welcome received: streams, heartbeats */
    NA_CLOSING     /* goaway queued or Close under way; waiting for on_freed */
};

typedef struct na_msg {
    struct na_msg *next;
    size_t n;
    char data[];
} na_msg;

typedef struct na_agent {
    uv_loop_t *loop;
    const na_config *cfg;
    na_sandbox_policy sb;
    uint64_t drain_timeout_ms;
    char url[NA_URL_MAX];
    char *auth_hdr; /* "Authorization: Bearer <token>" (secret) */
    const char *hdrs[3];
    wp_tls_conf *tls;
    char instance_id[33];
    na_gpu *gpu; /* GPU inventory; closed after uv_run returned (no refresh in flight then) */

    int state;
    wp_ws *ws;
    wp_mux *mux;
    unsigned attempt;    /* consecutive failed attempts (n of §9.3) */
    uint64_t welcome_at; /* loop time of the welcome of the current tunnel, 0 if none */
    unsigned retry_after_s;
    uint64_t hb_interval_ms;
    uint64_t hb_seq;
    int server_draining;
    int stopping; /* a signal arrived: drain and exit */
    int draining; /* drain sent on the current tunnel */
    uint64_t drain_deadline;
    int close_after_flush, close_code, close_sent;
    int ws_ended;
    int want_pump;
    uint64_t mux_timer_due;
    int handles_closed;

    na_msg *qhead, *qtail;
    size_t qbytes;
    wp_buf out; /* pulled frames not yet accepted by the WebSocket */

    uv_timer_t retry_timer, hb_timer, hello_timer, mux_timer, drain_timer;
    uv_prepare_t prep;
    uv_signal_t sigterm, sigint;
    size_t nstreams;
    na_stats stats;               /* counters for the status endpoint (status.h) */
    na_status_sources status_src; /* what the status endpoint reads */
    na_status *status;            /* --status-listen endpoint, NULL if none */
    na_proxy *proxy;              /* HTTPS_PROXY dialer, NULL: direct */

    wp_curlm *curlm;            /* libcurl on the loop, for the health probes */
    na_wolfprobe *probe;        /* Wolf/Moonlight probes: run whether or not a tunnel is up */
    na_watchdog wd;             /* when to run --wolf-restart-cmd */
    struct na_restart *restart; /* the restart command while it runs */
    char *pending_event;        /* an `event` waiting for the next tunnel */
} na_agent;

static void na_connect(na_agent *a);
static void na_close_timeout_cb(uv_timer_t *t);
static void na_tunnel_end(na_agent *a, const char *reason, const char *message, int close_code,
                          uint32_t mux_code);

static uint64_t na_wall_ms(void)
{
    uv_timeval64_t tv;
    if (uv_gettimeofday(&tv) != 0)
        return 0;
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

/* ---- output: control messages first, then frames ---- */

static void na_textq_clear(na_agent *a)
{
    while (a->qhead) {
        na_msg *m = a->qhead;
        a->qhead = m->next;
        free(m);
    }
    a->qtail = NULL;
    a->qbytes = 0;
}

/* Queues one control message (copied); on overflow the tunnel is congested: drop it. */
static void na_send_text(na_agent *a, const char *p, size_t n)
{
    if (!a->ws || a->ws_ended || a->close_sent)
        return;
    if (a->qbytes + n > NA_TEXTQ_MAX) {
        wp_log_warn("control messages back up: the control plane does not read; dropping tunnel");
        wp_ws_abort(a->ws);
        a->ws_ended = 1;
        return;
    }
    na_msg *m = malloc(sizeof(*m) + n);
    if (!m)
        return;
    m->next = NULL;
    m->n = n;
    memcpy(m->data, p, n);
    if (a->qtail)
        a->qtail->next = m;
    else
        a->qhead = m;
    a->qtail = m;
    a->qbytes += n;
    a->want_pump = 1;
}

static void na_send_json(na_agent *a, cJSON *o)
{
    char *s = o ? wp_json_print(o) : NULL;
    if (s) {
        na_send_text(a, s, strlen(s));
        cJSON_free(s);
    }
    cJSON_Delete(o);
}

static void na_pump(na_agent *a)
{
    a->want_pump = 0;
    if (!a->ws || a->ws_ended)
        return;
    while (a->qhead) {
        int rc = wp_ws_send_text(a->ws, a->qhead->data, a->qhead->n);
        if (rc == WP_ERR_LIMIT)
            return; /* on_drain resumes */
        if (rc == 0)
            a->stats.bytes_out_total += a->qhead->n;
        na_msg *m = a->qhead;
        a->qhead = m->next;
        if (!a->qhead)
            a->qtail = NULL;
        a->qbytes -= m->n;
        free(m);
        if (rc == WP_ERR_CLOSED) {
            na_textq_clear(a);
            break;
        }
        if (rc < 0)
            wp_log_warn("control message dropped", WP_LE("err", rc));
    }
    for (;;) {
        if (wp_buf_len(&a->out) > 0) {
            int rc = wp_ws_send_binary(a->ws, wp_buf_ptr(&a->out), wp_buf_len(&a->out));
            if (rc == WP_ERR_LIMIT)
                return; /* keep the frames; on_drain resumes */
            if (rc == 0)
                a->stats.bytes_out_total += wp_buf_len(&a->out);
            wp_buf_reset(&a->out);
            if (rc < 0)
                break;
        }
        if (!a->mux || !wp_mux_want_pull(a->mux))
            break;
        int n = wp_mux_pull(a->mux, &a->out, NA_OUT_MSG_MAX);
        if (n <= 0)
            break;
    }
    if (a->close_after_flush && !a->close_sent) {
        a->close_sent = 1;
        (void)wp_ws_close(a->ws, a->close_code, NULL);
    }
}

/* ---- mux timer: re-armed before every poll ---- */

static void na_mux_timer_cb(uv_timer_t *t)
{
    na_agent *a = t->data;
    a->mux_timer_due = 0;
    if (a->mux)
        (void)wp_mux_tick(a->mux, uv_now(a->loop));
}

static void na_prepare_cb(uv_prepare_t *p)
{
    na_agent *a = p->data;
    a->stats.tunnel_state = a->state; /* enum na_tunnel_state mirrors enum na_state */
    a->stats.streams_open = a->nstreams;
    /* A pump can queue more (an `error` message from a stream closed by a pull):
     * pump again now, as nothing would wake the loop before it polls. */
    for (int i = 0; a->want_pump && i < 4; i++)
        na_pump(a);
    if (!a->mux) {
        if (a->mux_timer_due) {
            uv_timer_stop(&a->mux_timer);
            a->mux_timer_due = 0;
        }
        return;
    }
    uint64_t d = wp_mux_next_deadline(a->mux);
    if (d == UINT64_MAX) {
        uv_timer_stop(&a->mux_timer);
        a->mux_timer_due = 0;
        return;
    }
    if (d == a->mux_timer_due)
        return;
    uint64_t now = uv_now(a->loop);
    a->mux_timer_due = d;
    uv_timer_start(&a->mux_timer, na_mux_timer_cb, d > now ? d - now : 0, 0);
}

/* ---- streams ---- */

static void na_send_error(void *ud, uint32_t id, const char *code, const char *msg)
{
    na_agent *a = ud;
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddStringToObject(o, "type", WP_MSG_ERROR);
        cJSON_AddNumberToObject(o, "stream", id);
        cJSON_AddStringToObject(o, "code", code);
        if (msg && msg[0])
            cJSON_AddStringToObject(o, "message", msg);
    }
    na_send_json(a, o);
}

static void na_stream_freed(void *ud)
{
    na_agent *a = ud;
    a->nstreams--;
}

static void na_mux_on_writable(wp_mux *m, void *ud)
{
    (void)m;
    ((na_agent *)ud)->want_pump = 1;
}

static void na_mux_on_stream_open(wp_mux *m, void *ud, uint32_t id, const char *preamble,
                                  size_t len)
{
    na_agent *a = ud;
    na_target t;
    const char *code = WP_STREAM_ERR_INTERNAL;
    char msg[200];
    int rc = na_services_resolve(a->cfg, &a->sb, preamble, len, &t, &code, msg, sizeof(msg));
    if (rc != 0) {
        wp_log_info("stream refused", WP_LI("stream", id), WP_LS("code", code),
                    WP_LS("reason", msg));
        na_stats_dial_failed(&a->stats, code);
        na_send_error(a, id, code, msg);
        (void)wp_mux_reset(m, id);
        return;
    }
    na_stream_host host = {.loop = a->loop,
                           .send_error = na_send_error,
                           .on_freed = na_stream_freed,
                           .ud = a,
                           .stats = &a->stats};
    na_stream *s = NULL;
    rc = na_stream_start(&host, m, id, &t, WP_STREAM_INITIAL_WINDOW, 0, &s);
    if (rc != 0) {
        na_send_error(a, id, WP_STREAM_ERR_INTERNAL, "out of memory");
        (void)wp_mux_reset(m, id);
        return;
    }
    a->nstreams++;
    wp_log_debug("stream opening", WP_LI("stream", id), WP_LS("service", t.service));
}

static void na_mux_on_stream_refused(wp_mux *m, void *ud, uint32_t id, int why)
{
    (void)m;
    const char *code = why == WP_ERR_BUSY     ? WP_STREAM_ERR_BUSY
                       : why == WP_ERR_CLOSED ? WP_STREAM_ERR_DRAINING
                       : why == WP_ERR_PROTO  ? WP_STREAM_ERR_PROTOCOL
                                              : WP_STREAM_ERR_INTERNAL;
    wp_log_info("stream refused", WP_LI("stream", id), WP_LS("code", code));
    na_stats_dial_failed(&((na_agent *)ud)->stats, code);
    na_send_error(ud, id, code, why == WP_ERR_PROTO ? "malformed open preamble" : NULL);
}

static void na_mux_on_stream_data(wp_mux *m, void *ud, uint32_t id, void *sud, const uint8_t *p,
                                  size_t n)
{
    (void)m, (void)ud, (void)id;
    na_stream_on_data(sud, p, n);
}

static void na_mux_on_stream_fin(wp_mux *m, void *ud, uint32_t id, void *sud)
{
    (void)m, (void)ud, (void)id;
    na_stream_on_fin(sud);
}

static void na_mux_on_stream_writable(wp_mux *m, void *ud, uint32_t id, void *sud)
{
    (void)m, (void)ud, (void)id;
    na_stream_on_writable(sud);
}

static void na_mux_on_stream_closed(wp_mux *m, void *ud, uint32_t id, void *sud, int reason)
{
    (void)m, (void)ud;
    wp_log_debug("stream closed", WP_LI("stream", id),
                 WP_LS("reason", wp_mux_close_reason_name(reason)));
    na_stream_on_closed(sud, reason);
}

static void na_mux_on_goaway(wp_mux *m, void *ud, uint32_t code)
{
    (void)m;
    na_agent *a = ud;
    wp_log_info("control plane sent GoAway", WP_LI("code", code));
    na_stats_end(&a->stats, NA_RECONNECT_CLOSED_BY_SERVER);
    if (a->ws && !a->ws_ended && a->state != NA_CLOSING) {
        a->state = NA_CLOSING;
        (void)wp_ws_close(a->ws, WP_WS_CLOSE_NORMAL, NULL);
    }
}

static void na_mux_on_error(wp_mux *m, void *ud, int err, const char *reason)
{
    (void)m;
    na_agent *a = ud;
    wp_log_warn("tunnel session failed", WP_LE("err", err), WP_LS("reason", reason));
    if (err == WP_ERR_PROTO)
        na_tunnel_end(a, WP_GOAWAY_REASON_PROTOCOL_ERROR, reason, WP_WS_CLOSE_PROTOCOL_ERROR, 1);
    else
        na_tunnel_end(a, WP_GOAWAY_REASON_INTERNAL_ERROR, NULL, WP_WS_CLOSE_INTERNAL, 2);
}

static void na_mux_on_dead(wp_mux *m, void *ud)
{
    (void)m;
    na_agent *a = ud;
    wp_log_warn("control plane silent: tunnel is dead", WP_LI("silent_ms", WP_DEAD_TIMEOUT_MS));
    na_stats_end(&a->stats, NA_RECONNECT_DEAD_PEER);
    if (a->ws && !a->ws_ended) {
        a->ws_ended = 1;
        wp_ws_abort(a->ws);
    }
}

static const wp_mux_callbacks na_mux_cbs = {
    .on_writable = na_mux_on_writable,
    .on_stream_open = na_mux_on_stream_open,
    .on_stream_refused = na_mux_on_stream_refused,
    .on_stream_data = na_mux_on_stream_data,
    .on_stream_fin = na_mux_on_stream_fin,
    .on_stream_writable = na_mux_on_stream_writable,
    .on_stream_closed = na_mux_on_stream_closed,
    .on_goaway = na_mux_on_goaway,
    .on_error = na_mux_on_error,
    .on_dead = na_mux_on_dead,
};

/* ---- tunnel lifecycle ---- */

/*
 * Ends the current tunnel (PROTOCOL.md §10.2): `goaway` reason, mux GoAway
 * (streams reset), then the WebSocket Close once both left.
 */
static void na_tunnel_end(na_agent *a, const char *reason, const char *message, int close_code,
                          uint32_t mux_code)
{
    if (!a->ws || a->ws_ended || a->state == NA_CLOSING)
        return;
    a->state = NA_CLOSING;
    uv_timer_stop(&a->hb_timer);
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddStringToObject(o, "type", WP_MSG_GOAWAY);
        cJSON_AddStringToObject(o, "reason", reason);
        if (message && message[0]) {
            char m[256];
            snprintf(m, sizeof(m), "%s", message);
            cJSON_AddStringToObject(o, "message", m);
        }
    }
    na_send_json(a, o);
    if (a->mux && wp_mux_error(a->mux) == 0)
        (void)wp_mux_goaway(a->mux, mux_code);
    a->close_after_flush = 1;
    a->close_code = close_code;
    a->want_pump = 1;
    /* Bound the wait for our queue to leave and the Close to complete. */
    uv_timer_start(&a->hello_timer, na_close_timeout_cb, 2 * WP_CLOSE_TIMEOUT_MS, 0);
}

static void na_close_timeout_cb(uv_timer_t *t)
{
    na_agent *a = t->data;
    if (a->ws && !a->ws_ended) {
        wp_log_warn("tunnel did not close in time; dropping it");
        a->ws_ended = 1;
        wp_ws_abort(a->ws);
    }
}

static void na_hello_timeout_cb(uv_timer_t *t)
{
    na_agent *a = t->data;
    if (a->state == NA_HELLO) {
        wp_log_warn("no welcome from the control plane in time",
                    WP_LI("timeout_ms", WP_HELLO_TIMEOUT_MS));
        na_stats_end(&a->stats, NA_RECONNECT_PROTOCOL_ERROR);
        na_tunnel_end(a, WP_GOAWAY_REASON_HELLO_TIMEOUT, "no welcome in time", WP_WS_CLOSE_POLICY,
                      0);
    }
}

static void na_gpu_refreshed(na_gpu *g, int err, void *ud)
{
    (void)g, (void)ud;
    if (err != 0)
        wp_log_debug("GPU inventory refresh failed", WP_LE("err", err));
}

/* Re-reads the GPU inventory on the thread pool for the next heartbeat (one at a time). */
static void na_gpu_refresh_start(na_agent *a)
{
    if (a->gpu && !a->stopping && !na_gpu_busy(a->gpu))
        (void)na_gpu_refresh_async(a->gpu, a->loop, na_gpu_refreshed, a);
}

static void na_heartbeat_cb(uv_timer_t *t)
{
    na_agent *a = t->data;
    if (a->state != NA_READY)
        return;
    cJSON *o = cJSON_CreateObject();
    cJSON *load = cJSON_CreateObject();
    cJSON *gpus = na_gpu_stats_json(na_gpu_last(a->gpu)); /* the last sample, refreshed below */
    cJSON *wolf = na_wolfprobe_heartbeat_json(a->probe);  /* {} before the first round */
    if (!o || !load || !gpus || !wolf) {
        cJSON_Delete(o), cJSON_Delete(load), cJSON_Delete(gpus), cJSON_Delete(wolf);
        return;
    }
    a->hb_seq++;
    cJSON_AddStringToObject(o, "type", WP_MSG_HEARTBEAT);
    cJSON_AddNumberToObject(o, "seq", (double)a->hb_seq);
    cJSON_AddNumberToObject(o, "time", (double)na_wall_ms());
    int lobbies = na_wolfprobe_lobby_count(a->probe); /* -1: unknown (no probe, Wolf down) */
    cJSON_AddNumberToObject(load, "active_sessions", lobbies > 0 ? (double)lobbies : 0);
    cJSON_AddNumberToObject(load, "max_sessions", (double)a->cfg->max_sessions);
    cJSON_AddNumberToObject(load, "open_streams", a->mux ? (double)wp_mux_stream_count(a->mux) : 0);
    cJSON_AddBoolToObject(load, "draining", a->draining);
    cJSON_AddItemToObject(o, "load", load);
    cJSON_AddItemToObject(o, "gpus", gpus);
    cJSON_AddItemToObject(o, "wolf", wolf);
    cJSON *ml = na_wolfprobe_moonlight_json(a->probe); /* NULL: not configured / not run yet */
    if (ml)
        cJSON_AddItemToObject(o, "moonlight", ml);
    na_send_json(a, o);
    na_gpu_refresh_start(a);
}

static void na_drain_check_cb(uv_timer_t *t)
{
    na_agent *a = t->data;
    if (a->state != NA_READY) {
        uv_timer_stop(t);
        return;
    }
    size_t open = a->mux ? wp_mux_stream_count(a->mux) : 0;
    if (open > 0 && uv_now(a->loop) < a->drain_deadline)
        return;
    uv_timer_stop(t);
    if (open > 0)
        wp_log_warn("drain timeout: resetting open streams", WP_LI("open_streams", open));
    else
        wp_log_info("drained: no open streams");
    na_tunnel_end(a, WP_GOAWAY_REASON_DRAINED, NULL, WP_WS_CLOSE_NORMAL, 0);
}

static void na_start_drain(na_agent *a)
{
    if (a->draining || a->state != NA_READY || !a->mux)
        return;
    a->draining = 1;
    (void)wp_mux_drain(a->mux);
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddStringToObject(o, "type", WP_MSG_DRAIN);
        cJSON_AddStringToObject(o, "reason", "shutdown");
        cJSON_AddNumberToObject(o, "timeout_ms", (double)a->drain_timeout_ms);
    }
    na_send_json(a, o);
    a->drain_deadline = uv_now(a->loop) + a->drain_timeout_ms;
    wp_log_info("draining", WP_LI("open_streams", wp_mux_stream_count(a->mux)),
                WP_LI("timeout_ms", a->drain_timeout_ms));
    uv_timer_start(&a->drain_timer, na_drain_check_cb, 0, NA_DRAIN_POLL_MS);
}

static void na_protocol_error(na_agent *a, const char *why)
{
    wp_log_warn("control plane broke the protocol", WP_LS("reason", why));
    na_stats_end(&a->stats, NA_RECONNECT_PROTOCOL_ERROR);
    if (a->mux && wp_mux_error(a->mux) == 0)
        (void)wp_mux_goaway(a->mux, WP_GOAWAY_PROTO_ERROR);
    na_tunnel_end(a, WP_GOAWAY_REASON_PROTOCOL_ERROR, why, WP_WS_CLOSE_PROTOCOL_ERROR, 1);
}

static void na_on_welcome(na_agent *a, const cJSON *o)
{
    char err[200] = "";
    na_welcome w;
    if (a->state != NA_HELLO) {
        na_protocol_error(a, "repeated welcome");
        return;
    }
    int rc = na_welcome_parse(o, &w, err, sizeof(err));
    if (rc == WP_ERR_UNSUPPORTED) {
        wp_log_error("control plane speaks another protocol version", WP_LS("reason", err));
        na_tunnel_end(a, WP_GOAWAY_REASON_UNSUPPORTED, err, WP_WS_CLOSE_UNSUPPORTED, 0);
        return;
    }
    if (rc != 0) {
        na_protocol_error(a, err);
        return;
    }
    wp_mux_config mc;
    wp_mux_config_default(&mc);
    /* receive windows grow (PROTOCOL.md §7.1) up to what the server accepts */
    if (w.stream_window_max > (long long)WP_STREAM_INITIAL_WINDOW)
        mc.recv_window_max = w.stream_window_max < (long long)WP_STREAM_WINDOW_MAX
                                 ? (uint32_t)w.stream_window_max
                                 : WP_STREAM_WINDOW_MAX;
    a->mux = wp_mux_new(WP_MUX_SERVER, &mc, &na_mux_cbs, a);
    if (!a->mux) {
        na_tunnel_end(a, WP_GOAWAY_REASON_INTERNAL_ERROR, "out of memory", WP_WS_CLOSE_INTERNAL, 0);
        return;
    }
    uint64_t now = uv_now(a->loop);
    wp_mux_touch(a->mux, now);
    uv_timer_stop(&a->hello_timer);
    a->state = NA_READY;
    a->welcome_at = now ? now : 1;
    a->hb_seq = 0;
    a->hb_interval_ms = (uint64_t)w.heartbeat_interval_ms;
    uv_timer_start(&a->hb_timer, na_heartbeat_cb, a->hb_interval_ms, a->hb_interval_ms);
    long long skew = (long long)na_wall_ms() - w.server_time;
    wp_log_info("tunnel up", WP_LS("replica_id", w.replica_id),
                WP_LI("replica_count", w.replica_count),
                WP_LI("heartbeat_interval_ms", w.heartbeat_interval_ms));
    a->stats.connects_total++;
    if (skew > NA_SKEW_LOG_MS || skew < -NA_SKEW_LOG_MS)
        wp_log_warn("clock skew against the control plane", WP_LI("skew_ms", skew));
    if (strcmp(w.node_id, a->cfg->node_id) != 0)
        wp_log_warn("control plane registered another node id", WP_LS("node_id", w.node_id));
    if (a->pending_event) { /* e.g. a Wolf restart while the tunnel was down */
        na_send_text(a, a->pending_event, strlen(a->pending_event));
        cJSON_free(a->pending_event);
        a->pending_event = NULL;
    }
    if (a->stopping)
        na_start_drain(a);
}

static void na_on_text(wp_ws *ws, const char *p, size_t n, void *ud)
{
    (void)ws;
    na_agent *a = ud;
    a->stats.bytes_in_total += n;
    if (a->mux)
        wp_mux_touch(a->mux, uv_now(a->loop));
    if (a->state == NA_CLOSING)
        return;
    cJSON *o = NULL;
    const char *type = NULL;
    if (wp_json_parse(p, n, WP_CONTROL_MSG_MAX, 16, &o) != 0 || !cJSON_IsObject(o) ||
        !(type = wp_json_get_str(o, "type"))) {
        cJSON_Delete(o);
        na_protocol_error(a, "control message is not a JSON object with a string type");
        return;
    }
    if (strcmp(type, WP_MSG_WELCOME) == 0) {
        na_on_welcome(a, o);
    } else if (a->state != NA_READY) {
        na_protocol_error(a, "control message before welcome");
    } else if (strcmp(type, WP_MSG_DRAIN) == 0) {
        static const wp_json_field f[] = {{"reason", WP_JSON_STRING, 0, 255, 0, 0},
                                          {"timeout_ms", WP_JSON_INT, 0, 0, 0, 9007199254740991LL}};
        char err[160] = "";
        if (wp_json_validate(o, f, 2, WP_JSON_UNKNOWN_IGNORE, err, sizeof(err)) != 0) {
            na_protocol_error(a, err);
        } else if (!a->server_draining) {
            a->server_draining = 1;
            const char *r = wp_json_get_str(o, "reason");
            wp_log_info("control plane drains this tunnel (no new streams)",
                        WP_LS("reason", r ? r : ""));
        }
    } else if (strcmp(type, WP_MSG_GOAWAY) == 0) {
        const char *r = wp_json_get_str(o, "reason");
        const char *m = wp_json_get_str(o, "message");
        if (!r) {
            na_protocol_error(a, "goaway without a reason");
        } else {
            int lvl = strcmp(r, WP_GOAWAY_REASON_FORBIDDEN) == 0 ? WP_LOG_ERROR : WP_LOG_WARN;
            wp_log(lvl, "control plane ends the tunnel", WP_LS("reason", r),
                   WP_LS("message", m ? m : ""));
            na_stats_end(&a->stats, lvl == WP_LOG_ERROR ? NA_RECONNECT_AUTH_REFUSED
                                                        : NA_RECONNECT_CLOSED_BY_SERVER);
            a->state = NA_CLOSING;
            uv_timer_stop(&a->hb_timer);
            if (a->mux && wp_mux_error(a->mux) == 0)
                (void)wp_mux_goaway(a->mux, WP_GOAWAY_NORMAL); /* streams are reset */
            (void)wp_ws_close(a->ws, WP_WS_CLOSE_NORMAL, NULL);
            uv_timer_start(&a->hello_timer, na_close_timeout_cb, WP_CLOSE_TIMEOUT_MS * 2, 0);
        }
    } else if (strcmp(type, WP_MSG_ERROR) == 0) {
        long long sid = -1;
        (void)wp_json_get_int(o, "stream", &sid);
        const char *c = wp_json_get_str(o, "code");
        const char *m = wp_json_get_str(o, "message");
        wp_log_info("control plane reported an error", WP_LI("stream", sid),
                    WP_LS("code", c ? c : ""), WP_LS("message", m ? m : ""));
    } else {
        wp_log_debug("ignoring control message", WP_LS("type", type));
    }
    cJSON_Delete(o);
}

static void na_on_binary(wp_ws *ws, const uint8_t *p, size_t n, void *ud)
{
    (void)ws;
    na_agent *a = ud;
    a->stats.bytes_in_total += n;
    if (a->state == NA_CLOSING) {
        if (a->mux)
            wp_mux_touch(a->mux, uv_now(a->loop));
        return;
    }
    if (a->state != NA_READY || !a->mux) {
        na_protocol_error(a, "stream frames before welcome");
        return;
    }
    int rc = wp_mux_feed(a->mux, p, n, uv_now(a->loop));
    if (rc == WP_ERR_CLOSED && a->state != NA_CLOSING) {
        a->state = NA_CLOSING;
        (void)wp_ws_close(a->ws, WP_WS_CLOSE_NORMAL, NULL);
    }
}

static void na_on_close(wp_ws *ws, int code, const char *reason, size_t rlen, void *ud)
{
    (void)ws;
    na_agent *a = ud;
    char r[124];
    snprintf(r, sizeof(r), "%.*s", (int)(rlen < 123 ? rlen : 123), reason ? reason : "");
    wp_log_info("tunnel closed", WP_LI("code", code), WP_LS("reason", r));
    na_stats_end(&a->stats, NA_RECONNECT_CLOSED_BY_SERVER);
    a->ws_ended = 1;
}

static void na_on_error(wp_ws *ws, int err, void *ud)
{
    (void)ws;
    na_agent *a = ud;
    wp_log_warn("tunnel lost", WP_LE("err", err));
    a->ws_ended = 1;
}

static void na_on_drain(wp_ws *ws, void *ud)
{
    (void)ws;
    ((na_agent *)ud)->want_pump = 1;
}

static void na_close_handles(na_agent *a);

static void na_retry_cb(uv_timer_t *t)
{
    na_connect(t->data);
}

static void na_schedule_retry(na_agent *a)
{
    uint64_t rnd = 0;
    (void)wp_random_bytes(&rnd, sizeof(rnd));
    uint64_t delay = na_backoff_delay_ms(a->attempt, rnd);
    if (a->attempt < 64)
        a->attempt++;
    if (a->retry_after_s) {
        unsigned s =
            a->retry_after_s > WP_RETRY_AFTER_MAX_S ? WP_RETRY_AFTER_MAX_S : a->retry_after_s;
        if ((uint64_t)s * 1000u > delay)
            delay = (uint64_t)s * 1000u;
        a->retry_after_s = 0;
    }
    a->state = NA_IDLE;
    na_stats_reconnect(&a->stats);
    wp_log_info("reconnecting", WP_LI("delay_ms", delay), WP_LI("attempt", a->attempt));
    uv_timer_start(&a->retry_timer, na_retry_cb, delay, 0);
}

/* The current tunnel is gone: free the session, then reconnect or finish stopping. */
static void na_tunnel_gone(na_agent *a)
{
    uv_timer_stop(&a->hb_timer);
    uv_timer_stop(&a->hello_timer);
    uv_timer_stop(&a->drain_timer);
    if (a->mux) {
        if (wp_mux_error(a->mux) == 0)
            (void)wp_mux_goaway(a->mux, WP_GOAWAY_NORMAL); /* closes every stream */
        wp_mux_free(a->mux);
        a->mux = NULL;
    }
    na_textq_clear(a);
    wp_buf_reset(&a->out);
    if (a->welcome_at && uv_now(a->loop) - a->welcome_at >= WP_BACKOFF_RESET_MS)
        a->attempt = 0;
    a->welcome_at = 0;
    a->close_after_flush = a->close_sent = a->ws_ended = 0;
    a->draining = a->server_draining = 0;
    a->state = NA_IDLE;
    if (a->stopping)
        na_close_handles(a);
    else
        na_schedule_retry(a);
}

static void na_on_freed(wp_ws *ws, void *ud)
{
    na_agent *a = ud;
    if (a->ws == ws)
        a->ws = NULL;
    na_tunnel_gone(a);
}

static const wp_ws_callbacks na_ws_cbs = {
    .on_text = na_on_text,
    .on_binary_chunk = na_on_binary, /* the mux parses a byte stream: no reassembly copy */
    .on_close = na_on_close,
    .on_error = na_on_error,
    .on_drain = na_on_drain,
    .on_freed = na_on_freed,
};

static void na_connected(wp_ws *ws, int status, const wp_ws_connect_info *info, void *ud)
{
    na_agent *a = ud;
    if (status != 0) {
        a->ws = NULL;
        char pmsg[256];
        if (a->proxy && na_proxy_take_failure(a->proxy, pmsg, sizeof(pmsg))) {
            na_stats_end(&a->stats, NA_RECONNECT_PROXY_FAILED);
            wp_log_error(pmsg, WP_LS("proxy", na_proxy_display(a->proxy)));
        } else if (status == WP_ERR_PERM) {
            wp_log_error("the control plane refused our token", WP_LI("status", info->http_status),
                         WP_LS("code", info->error_code));
        } else if (status == WP_ERR_VERIFY) {
            wp_log_error("TLS verification of the control plane failed",
                         WP_LS("reason", info->transport_error[0] ? info->transport_error
                                         : a->cfg->has_ca_pin     ? "certificate pin mismatch"
                                                                  : "unknown CA, expired or name "
                                                                    "mismatch"));
        } else if (status == WP_ERR_BUSY) {
            wp_log_warn("control plane is over capacity", WP_LI("status", info->http_status),
                        WP_LI("retry_after_s", info->retry_after_s));
            a->retry_after_s = info->retry_after_s;
        } else {
            wp_log_warn("tunnel connect failed", WP_LE("err", status),
                        WP_LI("status", info->http_status), WP_LS("code", info->error_code));
        }
        na_stats_end(&a->stats, na_stats_connect_reason(status));
        a->state = NA_IDLE;
        if (a->stopping)
            na_close_handles(a);
        else
            na_schedule_retry(a);
        return;
    }
    a->ws = ws;
    a->state = NA_HELLO;
    char *hello = na_hello_json(a->cfg, &a->sb, na_gpu_last(a->gpu), a->instance_id, a->stopping);
    if (!hello) {
        na_tunnel_end(a, WP_GOAWAY_REASON_INTERNAL_ERROR, "out of memory", WP_WS_CLOSE_INTERNAL, 0);
        return;
    }
    wp_log_info("tunnel open, hello sent", WP_LS("peer", wp_ws_peer_str(ws)));
    na_send_text(a, hello, strlen(hello));
    cJSON_free(hello);
    uv_timer_start(&a->hello_timer, na_hello_timeout_cb, WP_HELLO_TIMEOUT_MS, 0);
    if (a->stopping)
        na_tunnel_end(a, WP_GOAWAY_REASON_SHUTDOWN, NULL, WP_WS_CLOSE_GOING_AWAY, 0);
}

static void na_connect(na_agent *a)
{
    if (a->stopping)
        return;
    if (a->cfg->insecure_skip_verify)
        wp_log_warn("INSECURE: --insecure-skip-verify is set; the control plane is NOT verified "
                    "and anyone on the path can steal the agent token");
    wp_ws_limits lim;
    wp_ws_limits_default(&lim);
    lim.max_queued = NA_WS_QUEUED_MAX;
    a->state = NA_CONNECTING;
    a->ws = NULL;
    a->stats.connect_attempts_total++;
    wp_log_info("connecting", WP_LS("url", a->url),
                WP_LS("via", a->proxy ? na_proxy_display(a->proxy) : "direct"));
    int rc = wp_ws_client_connect_via(a->proxy ? na_proxy_dial : NULL, a->proxy, a->loop, a->url,
                                      a->tls, a->hdrs, WP_PROTO_SUBPROTOCOL, &lim, &na_ws_cbs, a,
                                      na_connected, a, &a->ws);
    if (rc < 0) {
        a->ws = NULL;
        na_stats_end(&a->stats, NA_RECONNECT_DIAL_FAILED);
        wp_log_warn("tunnel connect failed", WP_LE("err", rc));
        na_schedule_retry(a);
    }
}

static void na_signal_cb(uv_signal_t *h, int signum)
{
    na_agent *a = h->data;
    if (a->stopping) {
        wp_log_warn("second signal: leaving now", WP_LI("signal", signum));
        if (a->ws && !a->ws_ended && a->state != NA_CLOSING)
            na_tunnel_end(a, WP_GOAWAY_REASON_SHUTDOWN, NULL, WP_WS_CLOSE_GOING_AWAY, 0);
        else if (a->ws && !a->ws_ended) {
            a->ws_ended = 1;
            wp_ws_abort(a->ws);
        }
        return;
    }
    a->stopping = 1;
    wp_log_info("signal received: draining", WP_LI("signal", signum));
    switch (a->state) {
    case NA_READY:
        na_start_drain(a);
        break;
    case NA_HELLO:
        na_tunnel_end(a, WP_GOAWAY_REASON_SHUTDOWN, NULL, WP_WS_CLOSE_GOING_AWAY, 0);
        break;
    case NA_CONNECTING:
        wp_ws_abort(a->ws); /* a pending connect: its callback never runs */
        a->ws = NULL;
        na_close_handles(a);
        break;
    case NA_IDLE:
        uv_timer_stop(&a->retry_timer);
        na_close_handles(a);
        break;
    default:
        break; /* closing: na_tunnel_gone finishes */
    }
}

/* ---- Wolf health probes and the restart watchdog (wolfprobe.h, watchdog.h) ---- */

#define NA_RESTART_KILL_MS 60000 /* a restart command still running then is killed */

/* One run of --wolf-restart-cmd; freed when both handles are closed. */
typedef struct na_restart {
    na_agent *a; /* NULL once the agent stopped supervising it */
    uv_process_t proc;
    uv_timer_t kill_timer;
    int open; /* handles not yet closed */
    uint64_t failures;
} na_restart;

static void na_restart_closed(uv_handle_t *h)
{
    na_restart *r = h->data;
    if (--r->open == 0)
        free(r);
}

static void na_restart_release(na_restart *r)
{
    if (r->a && r->a->restart == r)
        r->a->restart = NULL;
    r->a = NULL;
    uv_close((uv_handle_t *)&r->proc, na_restart_closed);
    uv_close((uv_handle_t *)&r->kill_timer, na_restart_closed);
}

/* Sends an `event` control message now, or keeps it (the latest only) for the next tunnel. */
static void na_send_event(na_agent *a, cJSON *o)
{
    char *s = o ? wp_json_print(o) : NULL;
    cJSON_Delete(o);
    if (!s)
        return;
    if (a->state == NA_READY) {
        na_send_text(a, s, strlen(s));
        cJSON_free(s);
        return;
    }
    if (a->pending_event)
        cJSON_free(a->pending_event);
    a->pending_event = s;
}

/* The `wolf_restart` event (PROTOCOL.md §4.8); exit_status < 0 = none (not started / killed). */
static void na_restart_report(na_agent *a, uint64_t failures, int64_t exit_status, int term_signal,
                              const char *message)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *d = cJSON_CreateObject();
    if (!o || !d) {
        cJSON_Delete(o), cJSON_Delete(d);
        return;
    }
    cJSON_AddItemToObject(o, "data", d);
    cJSON_AddStringToObject(o, "type", WP_MSG_EVENT);
    cJSON_AddStringToObject(o, "event", WP_EVENT_WOLF_RESTART);
    cJSON_AddStringToObject(o, "message", message);
    cJSON_AddNumberToObject(d, "failures", (double)failures);
    if (exit_status >= 0)
        cJSON_AddNumberToObject(d, "exit_status", (double)exit_status);
    else
        cJSON_AddNullToObject(d, "exit_status");
    if (term_signal)
        cJSON_AddNumberToObject(d, "signal", term_signal);
    na_send_event(a, o);
}

static void na_restart_exit(uv_process_t *p, int64_t exit_status, int term_signal)
{
    na_restart *r = p->data;
    na_agent *a = r->a;
    uv_timer_stop(&r->kill_timer);
    if (a) {
        char msg[160];
        if (term_signal)
            snprintf(msg, sizeof(msg), "wolf restart command killed by signal %d", term_signal);
        else
            snprintf(msg, sizeof(msg), "wolf restart command exited with status %lld",
                     (long long)exit_status);
        wp_log(exit_status == 0 && !term_signal ? WP_LOG_INFO : WP_LOG_WARN,
               "wolf restart command finished", WP_LI("exit_status", exit_status),
               WP_LI("signal", term_signal));
        na_restart_report(a, r->failures, term_signal ? -1 : exit_status, term_signal, msg);
        na_watchdog_finished(&a->wd);
    }
    na_restart_release(r);
}

static void na_restart_kill_cb(uv_timer_t *t)
{
    na_restart *r = t->data;
    wp_log_warn("wolf restart command still running: killing it",
                WP_LI("after_ms", NA_RESTART_KILL_MS));
    (void)uv_process_kill(&r->proc, SIGKILL);
}

/* Runs --wolf-restart-cmd through /bin/sh -c without blocking; output goes to our stderr. */
static void na_restart_run(na_agent *a, uint64_t failures)
{
    na_restart *r = calloc(1, sizeof(*r));
    if (!r) {
        na_watchdog_finished(&a->wd);
        return;
    }
    r->a = a;
    r->failures = failures;
    char *args[] = {"/bin/sh", "-c", (char *)a->cfg->wolf_restart_cmd, NULL};
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_INHERIT_FD;
    stdio[1].data.fd = 2;
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = 2;
    uv_process_options_t o;
    memset(&o, 0, sizeof(o));
    o.exit_cb = na_restart_exit;
    o.file = "/bin/sh";
    o.args = args;
    o.stdio_count = 3;
    o.stdio = stdio;
    uv_timer_init(a->loop, &r->kill_timer);
    r->kill_timer.data = r;
    int rc = uv_spawn(a->loop, &r->proc, &o); /* initializes the handle even when it fails */
    r->proc.data = r;
    r->open = 2;
    if (rc != 0) {
        wp_log_error("cannot run --wolf-restart-cmd", WP_LS("err", uv_strerror(rc)));
        na_restart_report(a, failures, -1, 0, "wolf restart command could not be started");
        na_watchdog_finished(&a->wd);
        na_restart_release(r);
        return;
    }
    a->restart = r;
    wp_log_warn("Wolf stays unhealthy: running --wolf-restart-cmd", WP_LI("pid", r->proc.pid),
                WP_LI("failed_rounds", failures));
    uv_timer_start(&r->kill_timer, na_restart_kill_cb, NA_RESTART_KILL_MS, 0);
}

static void na_probe_round_cb(na_wolfprobe *p, void *ud)
{
    na_agent *a = ud;
    int healthy = na_wolfprobe_wolf_healthy(p);
    if (na_watchdog_observe(&a->wd, healthy, uv_now(a->loop)) == NA_WATCHDOG_RUN)
        na_restart_run(a, a->wd.consecutive);
}

static void na_probe_closed(void *ud)
{
    na_agent *a = ud;
    wp_curlm_close(a->curlm, NULL, NULL);
    a->curlm = NULL;
}

/* Stops the probes (then libcurl); a restart command still running is left to finish alone. */
static void na_probes_stop(na_agent *a)
{
    if (a->restart) {
        wp_log_info("agent stops: the wolf restart command keeps running unsupervised");
        na_restart_release(a->restart);
    }
    if (a->probe) {
        na_wolfprobe_stop(a->probe, na_probe_closed, a);
        a->probe = NULL;
    } else if (a->curlm) {
        wp_curlm_close(a->curlm, NULL, NULL);
        a->curlm = NULL;
    }
}

static void na_close_handles(na_agent *a)
{
    if (a->handles_closed)
        return;
    a->handles_closed = 1;
    na_status_close(a->status, NULL, NULL); /* first: it reads the probes */
    a->status = NULL;
    a->status_src.probe = NULL;
    na_proxy_close(a->proxy, NULL, NULL); /* a pending dial's ws was aborted: it is released */
    a->proxy = NULL;
    na_probes_stop(a);
    wp_log_info("stopped");
    uv_handle_t *hs[] = {(uv_handle_t *)&a->retry_timer, (uv_handle_t *)&a->hb_timer,
                         (uv_handle_t *)&a->hello_timer, (uv_handle_t *)&a->mux_timer,
                         (uv_handle_t *)&a->drain_timer, (uv_handle_t *)&a->prep,
                         (uv_handle_t *)&a->sigterm,     (uv_handle_t *)&a->sigint};
    for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++)
        uv_close(hs[i], NULL);
}

int na_agent_run(uv_loop_t *loop, const na_agent_opts *opts, char *err, size_t cap)
{
    if (!loop || !opts || !opts->cfg || !opts->token || !err)
        return WP_ERR_INVAL;
    const na_config *cfg = opts->cfg;
    int rc;
    na_agent *a = calloc(1, sizeof(*a));
    if (!a)
        return WP_ERR_NOMEM;
    a->loop = loop;
    a->cfg = cfg;
    na_stats_init(&a->stats);
    if (opts->sb)
        a->sb = *opts->sb;
    a->drain_timeout_ms = opts->drain_timeout_ms ? opts->drain_timeout_ms : WP_DRAIN_TIMEOUT_MS;
    wp_buf_init(&a->out, NA_OUT_MSG_MAX);
    if (!cfg->url || na_tunnel_url(cfg->url, a->url, sizeof(a->url)) != 0) {
        snprintf(err, cap, "--url must be wss://host[:port] (or https://host[:port]) with no path");
        rc = WP_ERR_CONFIG;
        goto fail;
    }
    if (!na_token_valid(opts->token)) {
        snprintf(err, cap, "the agent token is empty or holds spaces/control characters");
        rc = WP_ERR_CONFIG;
        goto fail;
    }
    size_t hl = strlen(opts->token) + 32;
    a->auth_hdr = malloc(hl);
    if (!a->auth_hdr) {
        rc = WP_ERR_NOMEM;
        goto fail;
    }
    snprintf(a->auth_hdr, hl, "Authorization: Bearer %s", opts->token);
    a->hdrs[0] = a->auth_hdr;
    a->hdrs[1] = NULL;
    uint8_t rnd[16];
    if (wp_random_bytes(rnd, sizeof(rnd)) != 0 ||
        wp_hex_encode(rnd, sizeof(rnd), a->instance_id, sizeof(a->instance_id)) != 0) {
        rc = WP_ERR_CRYPTO;
        goto fail;
    }
    wp_tls_client_opts to = {.ca_file = cfg->ca_file,
                             .pin = cfg->has_ca_pin ? cfg->ca_pin : NULL,
                             .insecure_skip_verify = cfg->insecure_skip_verify};
    char terr[256] = "";
    rc = wp_tls_conf_client_new(&a->tls, &to, terr, sizeof(terr));
    if (rc != 0) {
        snprintf(err, cap, "TLS client configuration: %s", terr);
        rc = WP_ERR_CONFIG;
        goto fail;
    }
    rc = na_gpu_open(&a->gpu, cfg->sysfs_root, cfg->nvml_lib);
    if (rc == WP_ERR_CONFIG) {
        snprintf(err, cap, "--sysfs-root %.200s: not a directory", cfg->sysfs_root);
        goto fail;
    } else if (rc != 0) {
        goto fail;
    }
    {
        na_gpu_inventory *inv = calloc(1, sizeof(*inv)); /* before the loop runs: may block */
        if (inv && na_gpu_collect(a->gpu, inv) == 0)
            wp_log_info("GPU inventory", WP_LS("vendor", inv->vendor), WP_LI("devices", inv->n),
                        WP_LS("nvml", inv->nvml_error[0] ? inv->nvml_error : "ok"));
        free(inv);
    }
    a->status_src.stats = &a->stats;
    a->status_src.gpu = a->gpu;
    rc = na_proxy_setup(loop, a->url, NULL, &a->proxy, err, cap);
    if (rc == 0)
        rc = na_status_setup(loop, cfg->status_listen, &a->status_src, &a->status, err, cap);
    if (rc != 0) {
        na_proxy_close(a->proxy, NULL, NULL);
        a->proxy = NULL;
        uv_run(loop, UV_RUN_DEFAULT); /* finishes the closes: no handle is left open */
        goto fail;
    }
    uv_timer_t *timers[] = {&a->retry_timer, &a->hb_timer, &a->hello_timer, &a->mux_timer,
                            &a->drain_timer};
    for (size_t i = 0; i < sizeof(timers) / sizeof(timers[0]); i++) {
        uv_timer_init(loop, timers[i]);
        timers[i]->data = a;
    }
    uv_prepare_init(loop, &a->prep);
    a->prep.data = a;
    uv_prepare_start(&a->prep, na_prepare_cb);
    uv_signal_init(loop, &a->sigterm);
    uv_signal_init(loop, &a->sigint);
    a->sigterm.data = a->sigint.data = a;
    uv_signal_start(&a->sigterm, na_signal_cb, SIGTERM);
    uv_signal_start(&a->sigint, na_signal_cb, SIGINT);
    na_watchdog_init(&a->wd, cfg->wolf_restart_cmd != NULL, (unsigned)cfg->wolf_restart_after,
                     (uint64_t)cfg->wolf_restart_cooldown_s * 1000u);
    rc = wp_curlm_new(loop, &a->curlm);
    if (rc == 0)
        rc = na_wolfprobe_start(loop, a->curlm, cfg, na_probe_round_cb, a, &a->probe);
    a->status_src.probe = a->probe;
    if (rc != 0) {
        wp_log_error("Wolf health probes cannot run", WP_LE("err", rc));
        wp_curlm_close(a->curlm, NULL, NULL);
        a->curlm = NULL;
    }
    wp_log_info("wolfpack-agent starting", WP_LS("version", wp_version()),
                WP_LS("node_id", cfg->node_id), WP_LS("instance_id", a->instance_id),
                WP_LS("verify", cfg->insecure_skip_verify ? "NONE (insecure)"
                                : cfg->has_ca_pin         ? "ca-pin"
                                : cfg->ca_file            ? "ca-file"
                                                          : "system CAs"));
    na_connect(a);
    uv_run(loop, UV_RUN_DEFAULT);
    rc = 0;
fail:
    na_gpu_close(a->gpu); /* uv_run returned: no refresh is in flight */
    if (a->tls)
        wp_tls_conf_unref(a->tls);
    na_textq_clear(a);
    wp_buf_free(&a->out);
    if (a->pending_event)
        cJSON_free(a->pending_event);
    if (a->auth_hdr) {
        wp_secure_zero(a->auth_hdr, strlen(a->auth_hdr));
        free(a->auth_hdr);
    }
    free(a);
    return rc;
}
