/*
 * test_ws.c — unit tests for ws.c over real loopback sockets in one libuv loop:
 * the RFC 6455 accept-key vector, upgrade validation (400/405/426 answers),
 * client<->server echo (plain and TLS; text, binary, 1 MiB, many small
 * messages), limits (1009 on oversized messages, outbound queue limit with
 * WP_ERR_LIMIT then on_drain, strict pause), closing handshakes started by
 * either side, close timeout, vanishing peers, refused upgrades (401/403/503
 * with their JSON errors), leftover bytes on both sides, hostile frames from a
 * raw TCP client (unmasked, RSV, bad opcodes, bad lengths, bad UTF-8), hostile
 * 101 answers from a raw TCP server, URL/header validation and aborts.
 */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "addr.h"
#include "buf.h"
#include "cert.h"
#include "conn.h"
#include "crypto.h"
#include "err.h"
#include "http.h"
#include "tls.h"
#include "ws.h"
#include "wolfpack/proto.h"
#include "wp_test.h"

static void tick_cb(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until cond holds or ms pass (a ticking timer keeps it waking up). */
#define RUN_UNTIL(loop, cond, ms)                                                                  \
    do {                                                                                           \
        uv_timer_t t_;                                                                             \
        uv_timer_init((loop), &t_);                                                                \
        uv_timer_start(&t_, tick_cb, 5, 5);                                                        \
        uv_update_time(loop);                                                                      \
        uint64_t s_ = uv_now(loop);                                                                \
        while (!(cond) && uv_now(loop) - s_ < (ms))                                                \
            uv_run((loop), UV_RUN_ONCE);                                                           \
        uv_close((uv_handle_t *)&t_, NULL);                                                        \
        uv_run((loop), UV_RUN_NOWAIT);                                                             \
    } while (0)

/* ------------------------------------------------------------------ */
/* one WebSocket endpoint as seen through its callbacks                 */

typedef struct peer {
    wp_ws *ws;
    int texts, binaries, closes, errors, drains, freed;
    int close_code, err;
    char close_reason[128];
    int texts_at_close;
    wp_buf got; /* received payloads, concatenated */
    int echo;
    int pause_at;     /* pause reading when this many binaries arrived */
    int order_ok;     /* binaries carry their index in byte 0 */
    size_t pump_size; /* pump: message size, count, progress */
    int pump_total, pump_sent, pump_limits, first_limit_at;
    int close_on_open; /* server: close(4001, "replaced") right after the upgrade */
    int send_before_close;
} peer;

static void peer_init(peer *pe, size_t max)
{
    memset(pe, 0, sizeof(*pe));
    wp_buf_init(&pe->got, max);
    pe->order_ok = 1;
}

static void peer_free(peer *pe)
{
    wp_buf_free(&pe->got);
}

static uint8_t g_pump_buf[64 * 1024];

static void peer_pump(peer *pe)
{
    while (pe->ws && pe->pump_sent < pe->pump_total) {
        memset(g_pump_buf, pe->pump_sent & 0xff, pe->pump_size);
        int rc = wp_ws_send_binary(pe->ws, g_pump_buf, pe->pump_size);
        if (rc == WP_ERR_LIMIT) {
            if (!pe->pump_limits++)
                pe->first_limit_at = pe->pump_sent;
            WP_CHECK(wp_ws_queued_bytes(pe->ws) + pe->pump_size > 256 * 1024);
            return;
        }
        WP_CHECK_EQ(rc, 0);
        if (rc < 0)
            return;
        pe->pump_sent++;
    }
}

static void pe_text(wp_ws *ws, const char *p, size_t n, void *ud)
{
    peer *pe = ud;
    pe->texts++;
    wp_buf_put(&pe->got, p, n);
    if (pe->echo)
        WP_CHECK_EQ(wp_ws_send_text(ws, p, n), 0);
}

static void pe_binary(wp_ws *ws, const uint8_t *p, size_t n, void *ud)
{
    peer *pe = ud;
    if (pe->pump_size && (n != pe->pump_size || p[0] != (pe->binaries & 0xff)))
        pe->order_ok = 0;
    pe->binaries++;
    wp_buf_put(&pe->got, p, n);
    if (pe->echo)
        WP_CHECK_EQ(wp_ws_send_binary(ws, p, n), 0);
    if (pe->pause_at && pe->binaries == pe->pause_at)
        WP_CHECK_EQ(wp_ws_pause_reading(ws), 0);
}

static void pe_close(wp_ws *ws, int code, const char *reason, size_t rl, void *ud)
{
    peer *pe = ud;
    pe->closes++;
    pe->close_code = code;
    pe->texts_at_close = pe->texts;
    snprintf(pe->close_reason, sizeof(pe->close_reason), "%.*s", (int)rl, reason);
    WP_CHECK_EQ(wp_ws_send_text(ws, "x", 1), WP_ERR_CLOSED);
}

static void pe_error(wp_ws *ws, int err, void *ud)
{
    peer *pe = ud;
    (void)ws;
    pe->errors++;
    pe->err = err;
}

static void pe_drain(wp_ws *ws, void *ud)
{
    peer *pe = ud;
    (void)ws;
    pe->drains++;
    peer_pump(pe);
}

static void pe_freed(wp_ws *ws, void *ud)
{
    peer *pe = ud;
    WP_CHECK(pe->ws == ws || pe->ws == NULL);
    pe->freed++;
    pe->ws = NULL;
}

static const wp_ws_callbacks pe_cbs = {.on_text = pe_text,
                                       .on_binary = pe_binary,
                                       .on_close = pe_close,
                                       .on_error = pe_error,
                                       .on_drain = pe_drain,
                                       .on_freed = pe_freed};

/* ------------------------------------------------------------------ */
/* test server: wp_http_server with an UPGRADE route on /ws             */

enum { MODE_UPGRADE = 0, MODE_401, MODE_503 };

#define MAX_PEERS 32

typedef struct tsrv {
    uv_loop_t *loop;
    wp_http_server *http;
    int port;
    int mode;
    int echo;
    int pause_at;
    int close_on_open;
    size_t pump_size;
    wp_ws_limits lim;
    peer peers[MAX_PEERS];
    int npeers;
    int upgrades, upgrade_fails, auth_ok;
    int closed;
} tsrv;

static void h_ws(wp_http_req *req, void *ud)
{
    tsrv *s = ud;
    const char *auth = wp_http_req_header(req, "Authorization");
    if (auth && !strcmp(auth, "Bearer secret-token"))
        s->auth_ok++;
    if (s->mode == MODE_401) {
        wp_http_resp_header(req, "WWW-Authenticate", "Bearer realm=\"wolfpack\"");
        wp_http_respond_error(req, 401, "unauthorized", "bad token");
        return;
    }
    if (s->mode == MODE_503) {
        wp_http_resp_header(req, "Retry-After", "7");
        wp_http_respond_error(req, 503, "over_capacity", "too many tunnels");
        return;
    }
    if (s->npeers >= MAX_PEERS) {
        wp_http_respond_error(req, 503, "over_capacity", "test limit");
        return;
    }
    peer *pe = &s->peers[s->npeers];
    peer_init(pe, 8u << 20);
    pe->echo = s->echo;
    pe->pause_at = s->pause_at;
    pe->pump_size = s->pump_size;
    int rc = wp_ws_server_upgrade(req, WP_PROTO_SUBPROTOCOL, &s->lim, &pe_cbs, pe, &pe->ws);
    if (rc < 0) {
        s->upgrade_fails++;
        peer_free(pe);
        return;
    }
    s->npeers++;
    s->upgrades++;
    if (s->close_on_open) {
        WP_CHECK_EQ(wp_ws_send_text(pe->ws, "last", 4), 0);
        WP_CHECK_EQ(wp_ws_close(pe->ws, 4001, "replaced"), 0);
        WP_CHECK_EQ(wp_ws_close(pe->ws, 4001, "replaced"), 0); /* idempotent */
        WP_CHECK_EQ(wp_ws_send_text(pe->ws, "late", 4), WP_ERR_CLOSED);
    }
}

static void srv_closed_cb(void *ud)
{
    tsrv *s = ud;
    s->closed = 1;
}

static void tsrv_start(tsrv *s, uv_loop_t *loop, wp_tls_conf *tls)
{
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    wp_ws_limits_default(&s->lim);
    WP_CHECK_EQ(wp_http_server_new(&s->http, loop, NULL), 0);
    if (tls)
        wp_http_server_set_tls(s->http, tls);
    WP_CHECK_EQ(wp_http_server_route(s->http, "*", "/ws", h_ws, s, WP_HTTP_ROUTE_UPGRADE), 0);
    char bound[64];
    WP_CHECK_EQ(wp_http_server_listen(s->http, "127.0.0.1:0", bound, sizeof(bound)), 0);
    const char *colon = strrchr(bound, ':');
    s->port = colon ? atoi(colon + 1) : 0;
}

/* Stops the server, aborts leftover sockets and asserts the loop closes. */
static void tsrv_stop(tsrv *s)
{
    wp_http_server_close(s->http, srv_closed_cb, s);
    for (int i = 0; i < s->npeers; i++)
        wp_ws_abort(s->peers[i].ws);
    WP_CHECK_LOOP_CLOSED(s->loop);
    WP_CHECK_EQ(s->closed, 1);
    for (int i = 0; i < s->npeers; i++) {
        WP_CHECK_EQ(s->peers[i].freed, 1);
        peer_free(&s->peers[i]);
    }
}

/* ------------------------------------------------------------------ */
/* client helper                                                       */

typedef struct tcli {
    peer pe;
    int done, status;
    wp_ws_connect_info info;
    wp_ws *pending;
    /* actions once open */
    int send_echo_set;
    int pause_on_open;
} tcli;

static size_t g_big_len = 1u << 20;
static uint8_t *g_big;

static void cli_send_echo_set(wp_ws *ws)
{
    WP_CHECK_EQ(wp_ws_send_text(ws, "hello", 5), 0);
    WP_CHECK_EQ(wp_ws_send_binary(ws, "\x00\x01\xff", 3), 0);
    WP_CHECK_EQ(wp_ws_ping(ws), 0);
    WP_CHECK_EQ(wp_ws_send_binary(ws, g_big, g_big_len), 0);
    WP_CHECK_EQ(wp_ws_send_text(ws, "", 0), 0);
    char m[32];
    for (int i = 0; i < 500; i++) {
        int n = snprintf(m, sizeof(m), "m%d", i);
        WP_CHECK_EQ(wp_ws_send_text(ws, m, (size_t)n), 0);
    }
}

static void cli_connected(wp_ws *ws, int status, const wp_ws_connect_info *info, void *ud)
{
    tcli *c = ud;
    c->done++;
    c->status = status;
    c->info = *info;
    c->pe.ws = ws;
    if (status == 0) {
        WP_CHECK(ws != NULL);
        WP_CHECK(ws == c->pending);
        WP_CHECK_EQ(info->http_status, 101);
        WP_CHECK(wp_ws_peer_str(ws)[0] != '\0');
        if (c->send_echo_set)
            cli_send_echo_set(ws);
        if (c->pe.pump_total)
            peer_pump(&c->pe);
        if (c->pause_on_open)
            WP_CHECK_EQ(wp_ws_pause_reading(ws), 0);
    } else {
        WP_CHECK(ws == NULL);
    }
}

static int cli_connect(tcli *c, uv_loop_t *loop, const char *url, wp_tls_conf *tls,
                       const wp_ws_limits *lim)
{
    static const char *const hdrs[] = {"Authorization: Bearer secret-token",
                                       "User-Agent: wolfpack-test/1", NULL};
    return wp_ws_client_connect(loop, url, tls, hdrs, WP_PROTO_SUBPROTOCOL, lim, &pe_cbs, &c->pe,
                                cli_connected, c, &c->pending);
}

/* ------------------------------------------------------------------ */
/* raw TCP client (hostile bytes)                                      */

typedef struct raw {
    uv_tcp_t tcp;
    uv_connect_t creq;
    int connected, eof, closed;
    wp_buf got;
    uint8_t *first;
    size_t first_len;
} raw;

static void raw_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    (void)h;
    (void)s;
    b->base = malloc(65536);
    b->len = b->base ? 65536 : 0;
}

static void raw_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    raw *r = st->data;
    if (n > 0)
        wp_buf_put(&r->got, b->base, (size_t)n);
    if (n < 0) {
        r->eof = 1;
        uv_read_stop(st);
    }
    free(b->base);
}

static void raw_written(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

static void raw_send(uv_stream_t *st, const void *p, size_t n)
{
    uv_write_t *w = malloc(sizeof(*w) + n);
    memcpy(w + 1, p, n);
    uv_buf_t b = uv_buf_init((char *)(w + 1), (unsigned)n);
    if (uv_write(w, st, &b, 1, raw_written) != 0)
        free(w);
}

static void raw_connected(uv_connect_t *req, int status)
{
    raw *r = req->data;
    r->connected = status == 0 ? 1 : -1;
    if (status != 0)
        return;
    uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read);
    if (r->first_len)
        raw_send((uv_stream_t *)&r->tcp, r->first, r->first_len);
}

/* Connects to 127.0.0.1:port and sends p (one write) once connected. */
static void raw_open(raw *r, uv_loop_t *loop, int port, const void *p, size_t n)
{
    memset(r, 0, sizeof(*r));
    wp_buf_init(&r->got, 4u << 20);
    r->first = malloc(n ? n : 1);
    memcpy(r->first, p, n);
    r->first_len = n;
    uv_tcp_init(loop, &r->tcp);
    r->tcp.data = r;
    r->creq.data = r;
    struct sockaddr_in sin;
    uv_ip4_addr("127.0.0.1", port, &sin);
    uv_tcp_connect(&r->creq, &r->tcp, (struct sockaddr *)&sin, raw_connected);
}

static void raw_closed_cb(uv_handle_t *h)
{
    raw *r = h->data;
    r->closed = 1;
}

static void raw_close(raw *r)
{
    uv_close((uv_handle_t *)&r->tcp, raw_closed_cb);
}

static void raw_free(raw *r)
{
    wp_buf_free(&r->got);
    free(r->first);
}

/* Offset just past the header block of a response, or 0 while incomplete. */
static size_t resp_head_len(const wp_buf *b)
{
    const char *p = (const char *)wp_buf_ptr(b);
    size_t n = wp_buf_len(b);
    for (size_t i = 0; i + 3 < n; i++)
        if (!memcmp(p + i, "\r\n\r\n", 4))
            return i + 4;
    return 0;
}

static int resp_status(const wp_buf *b)
{
    if (wp_buf_len(b) < 12 || memcmp(wp_buf_ptr(b), "HTTP/1.1 ", 9) != 0)
        return 0;
    return atoi((const char *)wp_buf_ptr(b) + 9);
}

/* Whether the response header block contains s (exact bytes). */
static int resp_has(const wp_buf *b, const char *s)
{
    size_t h = resp_head_len(b);
    size_t n = strlen(s);
    const uint8_t *p = wp_buf_ptr(b);
    for (size_t i = 0; h >= n && i <= h - n; i++)
        if (!memcmp(p + i, s, n))
            return 1;
    return 0;
}

/* Whole answer arrived: 101 headers, or headers plus Content-Length bytes. */
static int resp_complete(const raw *r)
{
    size_t h = resp_head_len(&r->got);
    if (!h)
        return r->eof;
    if (resp_status(&r->got) == 101)
        return 1;
    const char *cl = strstr((const char *)wp_buf_ptr(&r->got), "Content-Length: ");
    size_t want = cl ? (size_t)atoi(cl + 16) : 0;
    return r->eof || wp_buf_len(&r->got) >= h + want;
}

/* Builds a frame: b0 = FIN/RSV/opcode byte; masked with a fixed key when mask. */
static size_t mk_frame(uint8_t *o, uint8_t b0, int mask, const void *p, size_t n)
{
    static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    size_t i = 0;
    uint8_t m = mask ? 0x80 : 0;
    o[i++] = b0;
    if (n < 126) {
        o[i++] = (uint8_t)(m | n);
    } else if (n < 65536) {
        o[i++] = m | 126;
        o[i++] = (uint8_t)(n >> 8);
        o[i++] = (uint8_t)n;
    } else {
        o[i++] = m | 127;
        for (int k = 7; k >= 0; k--)
            o[i++] = (uint8_t)((uint64_t)n >> (8 * k));
    }
    if (mask) {
        memcpy(o + i, key, 4);
        i += 4;
    }
    for (size_t k = 0; k < n; k++)
        o[i + k] = ((const uint8_t *)p)[k] ^ (mask ? key[k % 4] : 0);
    return i + n;
}

/* Parses one frame at p[0..n): returns its size (0 if incomplete); payload unmasked into pl. */
static size_t parse_frame(const uint8_t *p, size_t n, int *op, int *masked, uint8_t *pl, size_t cap,
                          size_t *plen)
{
    if (n < 2)
        return 0;
    *op = p[0] & 15;
    *masked = p[1] >> 7;
    uint64_t len = p[1] & 127;
    size_t h = 2;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = ((uint64_t)p[2] << 8) | p[3];
        h = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | p[2 + i];
        h = 10;
    }
    const uint8_t *key = p + h;
    if (*masked)
        h += 4;
    if (n < h || n - h < len || len > cap)
        return 0;
    for (size_t i = 0; i < len; i++)
        pl[i] = p[h + i] ^ (*masked ? key[i % 4] : 0);
    *plen = (size_t)len;
    return h + (size_t)len;
}

/* Finds the first Close frame after the response headers; returns its code (-1 if none). */
static int raw_close_code(const raw *r)
{
    size_t off = resp_head_len(&r->got);
    if (!off)
        return -1;
    const uint8_t *p = wp_buf_ptr(&r->got);
    size_t n = wp_buf_len(&r->got);
    uint8_t pl[256];
    while (off < n) {
        int op, masked;
        size_t plen;
        size_t used = parse_frame(p + off, n - off, &op, &masked, pl, sizeof(pl), &plen);
        if (!used)
            return -1;
        if (op == 8)
            return plen >= 2 ? (pl[0] << 8) | pl[1] : 1005;
        off += used;
    }
    return -1;
}

#define RFC_KEY    "dGhlIHNhbXBsZSBub25jZQ=="
#define RFC_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

static int mk_upgrade(char *out, size_t cap, const char *first_line, const char *hdrs)
{
    return snprintf(out, cap, "%s\r\nHost: localhost\r\n%s\r\n\r\n",
                    first_line ? first_line : "GET /ws HTTP/1.1",
                    hdrs ? hdrs
                         : "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: " RFC_KEY "\r\nSec-WebSocket-Version: 13\r\n"
                           "Sec-WebSocket-Protocol: wolfpack.v1");
}

/* ------------------------------------------------------------------ */
/* TLS material                                                        */

static char g_certdir[256];
static wp_cert_paths g_paths;
static int g_have_certs;

static int certs_setup(void)
{
    strcpy(g_certdir, "/tmp/wp_test_ws_XXXXXX");
    if (!mkdtemp(g_certdir))
        return -1;
    int gen = 0;
    char err[256];
    int rc = wp_cert_ensure(g_certdir, NULL, &g_paths, &gen, err, sizeof(err));
    if (rc < 0) {
        printf("  wp_cert_ensure: %s\n", err);
        return rc;
    }
    g_have_certs = 1;
    return 0;
}

static void certs_cleanup(void)
{
    if (!g_have_certs)
        return;
    unlink(g_paths.ca_crt);
    unlink(g_paths.ca_key);
    unlink(g_paths.server_crt);
    unlink(g_paths.server_key);
    rmdir(g_certdir);
}

/* ------------------------------------------------------------------ */
/* tests                                                               */

WP_TEST(ws_accept_key)
{
    char out[WP_WS_ACCEPT_LEN];
    WP_CHECK_EQ(wp_ws_accept_key(RFC_KEY, out), 0);
    WP_CHECK_STR(out, RFC_ACCEPT);
    WP_CHECK_EQ(wp_ws_accept_key("", out), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_ws_accept_key(NULL, out), WP_ERR_INVAL);
    char longkey[200];
    memset(longkey, 'A', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = 0;
    WP_CHECK_EQ(wp_ws_accept_key(longkey, out), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_ws_accept_key("x3JJHMbDL1EzLkh9GBhXDw==", out), 0);
    WP_CHECK_STR(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk="); /* RFC 6455 §1.2 example */
}

typedef struct up_case {
    const char *line; /* request line, NULL = GET /ws HTTP/1.1 */
    const char *hdrs; /* headers, NULL = a valid set */
    int status;
    const char *must_have; /* in the answer's header block or body */
} up_case;

WP_TEST(ws_upgrade_validation)
{
#define V_UP   "Upgrade: websocket\r\n"
#define V_CONN "Connection: Upgrade\r\n"
#define V_KEY  "Sec-WebSocket-Key: " RFC_KEY "\r\n"
#define V_VER  "Sec-WebSocket-Version: 13\r\n"
#define V_PROT "Sec-WebSocket-Protocol: wolfpack.v1"
    static const up_case cases[] = {
        {NULL, V_UP V_CONN V_KEY V_VER V_PROT "\r\nSec-WebSocket-Extensions: permessage-deflate",
         101, "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n"},
        {NULL,
         V_UP "Connection: keep-alive, Upgrade\r\n" V_KEY V_VER
              "Sec-WebSocket-Protocol: chat, wolfpack.v1",
         101, "Sec-WebSocket-Protocol: wolfpack.v1\r\n"},
        {NULL, V_UP V_CONN V_VER V_PROT, 400, "bad_request"},
        {NULL, V_UP V_CONN "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA\r\n" V_VER V_PROT, 400,
         "bad_request"},
        {NULL, V_UP V_CONN "Sec-WebSocket-Key: not base64 at all!!!!\r\n" V_VER V_PROT, 400,
         "bad_request"},
        {NULL, V_UP V_CONN V_KEY V_KEY V_VER V_PROT, 400, "bad_request"},
        {NULL, V_UP V_CONN V_KEY "Sec-WebSocket-Version: 8\r\n" V_PROT, 426,
         "Sec-WebSocket-Version: 13\r\n"},
        {NULL, V_UP V_CONN V_KEY V_PROT, 426, "upgrade_required"},
        {NULL, V_UP V_CONN V_KEY V_VER "Sec-WebSocket-Protocol: chat", 400,
         "unsupported_subprotocol"},
        {NULL, V_UP V_CONN V_KEY V_VER "Sec-WebSocket-Protocol: WOLFPACK.V1", 400,
         "unsupported_subprotocol"},
        {NULL, V_UP V_CONN V_KEY "Sec-WebSocket-Version: 13", 400, "unsupported_subprotocol"},
        {"POST /ws HTTP/1.1", V_UP V_CONN V_KEY V_VER V_PROT "\r\nContent-Length: 0", 405,
         "Allow: GET\r\n"},
        {"GET /ws HTTP/1.0", V_UP V_CONN V_KEY V_VER V_PROT, 400, "HTTP/1.1"},
        {NULL, "Upgrade: h2c\r\n" V_CONN V_KEY V_VER V_PROT, 400, "Upgrade"},
        {NULL, V_UP "Connection: keep-alive\r\n" V_KEY V_VER V_PROT, 400, "Connection"},
    };
    uv_loop_t loop;
    uv_loop_init(&loop);
    tsrv s;
    tsrv_start(&s, &loop, NULL);
    int want_upgrades = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char req[2048];
        int n = mk_upgrade(req, sizeof(req), cases[i].line, cases[i].hdrs);
        raw r;
        raw_open(&r, &loop, s.port, req, (size_t)n);
        RUN_UNTIL(&loop, resp_complete(&r), 3000);
        int st = resp_status(&r.got);
        if (st != cases[i].status)
            printf("  case %zu: status %d conn %d eof %d got %zu [%.*s]\n", i, st, r.connected,
                   r.eof, wp_buf_len(&r.got), (int)wp_buf_len(&r.got),
                   (const char *)wp_buf_ptr(&r.got));
        WP_CHECK_EQ(st, cases[i].status);
        WP_CHECK(resp_has(&r.got, cases[i].must_have) ||
                 (wp_buf_put_u8(&r.got, 0) == 0 &&
                  strstr((const char *)wp_buf_ptr(&r.got), cases[i].must_have)));
        if (st == 101) {
            want_upgrades++;
            WP_CHECK(resp_has(&r.got, "Upgrade: websocket\r\n"));
            WP_CHECK(resp_has(&r.got, "Connection: Upgrade\r\n"));
            WP_CHECK(resp_has(&r.got, "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n"));
            WP_CHECK(resp_has(&r.got, "Sec-WebSocket-Protocol: wolfpack.v1\r\n"));
            WP_CHECK(!resp_has(&r.got, "Extensions"));
        } else {
            WP_CHECK(resp_has(&r.got, "Content-Type: application/json"));
        }
        raw_close(&r);
        RUN_UNTIL(&loop, r.closed, 1000);
        raw_free(&r);
    }
    WP_CHECK_EQ(s.upgrades, want_upgrades);
    WP_CHECK_EQ(s.upgrade_fails, (int)(sizeof(cases) / sizeof(cases[0])) - want_upgrades);
    /* the upgraded raw clients vanished: each server ws ends with WP_ERR_CLOSED */
    RUN_UNTIL(&loop, s.peers[0].freed && s.peers[1].freed, 2000);
    for (int i = 0; i < s.npeers; i++) {
        WP_CHECK_EQ(s.peers[i].errors, 1);
        WP_CHECK_EQ(s.peers[i].err, WP_ERR_CLOSED);
        WP_CHECK_EQ(s.peers[i].closes, 0);
        WP_CHECK_EQ(s.peers[i].freed, 1);
    }
    tsrv_stop(&s);
}

static void run_echo(wp_tls_conf *srv_tls, wp_tls_conf *cli_tls)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    tsrv s;
    tsrv_start(&s, &loop, srv_tls);
    s.echo = 1;
    tcli c;
    memset(&c, 0, sizeof(c));
    peer_init(&c.pe, 8u << 20);
    c.send_echo_set = 1;
    char url[128];
    snprintf(url, sizeof(url), "%s://localhost:%d/ws", cli_tls ? "wss" : "ws", s.port);
    WP_CHECK_EQ(cli_connect(&c, &loop, url, cli_tls, NULL), 0);
    WP_CHECK(c.pending != NULL);
    /* not open yet */
    WP_CHECK_EQ(wp_ws_send_text(c.pending, "x", 1), WP_ERR_CLOSED);
    WP_CHECK_EQ(wp_ws_close(c.pending, 1000, NULL), WP_ERR_CLOSED);
    RUN_UNTIL(&loop, c.pe.texts >= 502 && c.pe.binaries >= 2, 10000);
    WP_CHECK_EQ(c.done, 1);
    WP_CHECK_EQ(c.status, 0);
    WP_CHECK_EQ(s.auth_ok, 1);
    WP_CHECK_EQ(c.pe.texts, 502);
    WP_CHECK_EQ(c.pe.binaries, 2);
    /* the echo is byte-identical and in order */
    wp_buf want;
    wp_buf_init(&want, 8u << 20);
    wp_buf_put(&want, "hello", 5);
    wp_buf_put(&want, "\x00\x01\xff", 3);
    wp_buf_put(&want, g_big, g_big_len);
    for (int i = 0; i < 500; i++)
        wp_buf_putf(&want, "m%d", i);
    WP_CHECK_EQ(wp_buf_len(&c.pe.got), wp_buf_len(&want));
    WP_CHECK(wp_buf_len(&c.pe.got) == wp_buf_len(&want) &&
             memcmp(wp_buf_ptr(&c.pe.got), wp_buf_ptr(&want), wp_buf_len(&want)) == 0);
    WP_CHECK_EQ(s.npeers, 1);
    WP_CHECK_EQ(s.peers[0].texts, 502);
    WP_CHECK(wp_ws_last_rx_ms(c.pe.ws) > 0);
    /* send contracts */
    WP_CHECK_EQ(wp_ws_send_text(c.pe.ws, "\xc3\x28", 2), WP_ERR_INVAL);     /* bad UTF-8 */
    WP_CHECK_EQ(wp_ws_send_text(c.pe.ws, "\xed\xa0\x80", 3), WP_ERR_INVAL); /* surrogate */
    WP_CHECK_EQ(wp_ws_send_text(c.pe.ws, "\xc0\xaf", 2), WP_ERR_INVAL);     /* overlong */
    WP_CHECK_EQ(wp_ws_send_text(c.pe.ws, "h\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 10), 0);
    RUN_UNTIL(&loop, c.pe.texts == 503, 3000);
    WP_CHECK_EQ(c.pe.texts, 503);
    WP_CHECK_EQ(wp_ws_send_binary(c.pe.ws, g_big, (8u << 20) + 1), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_ws_close(c.pe.ws, 1005, NULL), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_ws_close(c.pe.ws, 999, NULL), WP_ERR_INVAL);
    char longr[130];
    memset(longr, 'r', sizeof(longr) - 1);
    longr[sizeof(longr) - 1] = 0;
    WP_CHECK_EQ(wp_ws_close(c.pe.ws, 1000, longr), WP_ERR_INVAL);
    /* client-initiated closing handshake */
    WP_CHECK_EQ(wp_ws_close(c.pe.ws, 1000, "bye"), 0);
    WP_CHECK_EQ(wp_ws_send_binary(c.pe.ws, "x", 1), WP_ERR_CLOSED);
    WP_CHECK_EQ(wp_ws_ping(c.pe.ws), WP_ERR_CLOSED);
    RUN_UNTIL(&loop, c.pe.freed && s.peers[0].freed, 5000);
    WP_CHECK_EQ(c.pe.closes, 1);
    WP_CHECK_EQ(c.pe.errors, 0);
    WP_CHECK_EQ(c.pe.close_code, 1000);
    WP_CHECK_STR(c.pe.close_reason, "bye");
    WP_CHECK_EQ(c.pe.texts, 503); /* the UTF-8 text sent before close was echoed */
    WP_CHECK_EQ(s.peers[0].closes, 1);
    WP_CHECK_EQ(s.peers[0].errors, 0);
    WP_CHECK_EQ(s.peers[0].close_code, 1000);
    WP_CHECK_STR(s.peers[0].close_reason, "bye");
    WP_CHECK_EQ(c.pe.freed, 1);
    wp_buf_free(&want);
    tsrv_stop(&s);
    peer_free(&c.pe);
}

WP_TEST(ws_echo_plain)
{
    run_echo(NULL, NULL);
}

static void tls_confs(wp_tls_conf **srv, wp_tls_conf **cli)
{
    char err[256];
    *srv = *cli = NULL;
    WP_CHECK_EQ(
        wp_tls_conf_server_new(srv, g_paths.server_crt, g_paths.server_key, err, sizeof(err)), 0);
    wp_tls_client_opts o = {.ca_file = g_paths.ca_crt};
    WP_CHECK_EQ(wp_tls_conf_client_new(cli, &o, err, sizeof(err)), 0);
}

WP_TEST(ws_echo_tls)
{
    wp_tls_conf *srv, *cli;
    tls_confs(&srv, &cli);
    if (!srv || !cli)
        return;
    run_echo(srv, cli);
    wp_tls_conf_unref(srv);
    wp_tls_conf_unref(cli);
}

/* Client sends a message over the server's limit: the server closes with 1009. */
static void too_big_case(int text, size_t at_limit, size_t over)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    tsrv s;
    tsrv_start(&s, &loop, NULL);
    s.echo = 1;
    s.lim.max_binary = 1000;
    s.lim.max_text = 100;
    tcli c;
    memset(&c, 0, sizeof(c));
    peer_init(&c.pe, 1 << 20);
    char url[128];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/ws", s.port);
    WP_CHECK_EQ(cli_connect(&c, &loop, url, NULL, NULL), 0);
    RUN_UNTIL(&loop, c.done, 3000);
    WP_CHECK_EQ(c.status, 0);
    char *m = malloc(over);
    memset(m, 'a', over);
    if (text) {
        WP_CHECK_EQ(wp_ws_send_text(c.pe.ws, m, at_limit), 0);
        WP_CHECK_EQ(wp_ws_send_text(c.pe.ws, m, over), 0);
    } else {
        WP_CHECK_EQ(wp_ws_send_binary(c.pe.ws, m, at_limit), 0);
        WP_CHECK_EQ(wp_ws_send_binary(c.pe.ws, m, over), 0);
    }
    RUN_UNTIL(&loop, c.pe.freed && s.peers[0].freed, 5000);
    WP_CHECK_EQ(c.pe.texts + c.pe.binaries, 1); /* the message at the limit was echoed */
    WP_CHECK_EQ(c.pe.closes, 1);
    WP_CHECK_EQ(c.pe.close_code, 1009);
    WP_CHECK_EQ(s.peers[0].errors, 1);
    WP_CHECK_EQ(s.peers[0].err, WP_ERR_LIMIT);
    WP_CHECK_EQ(s.peers[0].closes, 0);
    WP_CHECK_EQ(s.peers[0].texts + s.peers[0].binaries, 1);
    free(m);
    tsrv_stop(&s);
    peer_free(&c.pe);
}

WP_TEST(ws_message_too_big)
{
    too_big_case(0, 1000, 1001);
    too_big_case(1, 100, 101);
    too_big_case(0, 1000, 200000); /* 64-bit length form */
}

WP_TEST(ws_queue_limit_and_pause)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    tsrv s;
    tsrv_start(&s, &loop, NULL);
    s.pause_at = 1;
    s.pump_size = 32 * 1024;
    tcli c;
    memset(&c, 0, sizeof(c));
    peer_init(&c.pe, 1024);
    c.pe.pump_size = 32 * 1024;
    c.pe.pump_total = 96;
    wp_ws_limits lim;
    memset(&lim, 0, sizeof(lim));
    lim.max_queued = 256 * 1024;
    char url[128];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/ws", s.port);
    WP_CHECK_EQ(cli_connect(&c, &loop, url, NULL, &lim), 0);
    RUN_UNTIL(&loop, c.done && s.peers[0].binaries >= 1, 3000);
    WP_CHECK_EQ(c.status, 0);
    WP_CHECK(c.pe.pump_limits >= 1);     /* the first burst hit max_queued */
    WP_CHECK_EQ(c.pe.first_limit_at, 7); /* 7 x (32 KiB + frame header) fit in 256 KiB */
    /* server paused after its first message: nothing more is delivered while paused */
    RUN_UNTIL(&loop, 0, 300);
    WP_CHECK_EQ(s.peers[0].binaries, 1);
    WP_CHECK(c.pe.drains >= 1); /* the client's queue drained into the socket meanwhile */
    WP_CHECK_EQ(wp_ws_resume_reading(s.peers[0].ws), 0);
    RUN_UNTIL(&loop, s.peers[0].binaries == 96, 10000);
    WP_CHECK_EQ(s.peers[0].binaries, 96);
    WP_CHECK(s.peers[0].order_ok);
    WP_CHECK_EQ(c.pe.pump_sent, 96);
    WP_CHECK(c.pe.pump_limits >= 2);
    WP_CHECK_EQ(s.peers[0].errors, 0);
    /* server-side close with a code and reason */
    WP_CHECK_EQ(wp_ws_close(s.peers[0].ws, 1001, "shutdown"), 0);
    RUN_UNTIL(&loop, c.pe.freed && s.peers[0].freed, 5000);
    WP_CHECK_EQ(c.pe.closes, 1);
    WP_CHECK_EQ(c.pe.close_code, 1001);
    WP_CHECK_STR(c.pe.close_reason, "shutdown");
    WP_CHECK_EQ(s.peers[0].closes, 1);
    WP_CHECK_EQ(s.peers[0].close_code, 1001);
    tsrv_stop(&s);
    peer_free(&c.pe);
}

WP_TEST(ws_server_close_sends_queued_first)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    tsrv s;
    tsrv_start(&s, &loop, NULL);
    s.close_on_open = 1;
    tcli c;
    memset(&c, 0, sizeof(c));
    peer_init(&c.pe, 1024);
    char url[128];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/ws", s.port);
    WP_CHECK_EQ(cli_connect(&c, &loop, url, NULL, NULL), 0);
    RUN_UNTIL(&loop, c.pe.freed && s.peers[0].freed, 5000);
    WP_CHECK_EQ(c.status, 0);
    WP_CHECK_EQ(c.pe.texts, 1);
    WP_CHECK_EQ(c.pe.texts_at_close, 1); /* "last" arrived before the Close */
    WP_CHECK_EQ(c.pe.closes, 1);
    WP_CHECK_EQ(c.pe.close_code, 4001);
    WP_CHECK_STR(c.pe.close_reason, "replaced");
    WP_CHECK_EQ(c.pe.errors, 0);
    WP_CHECK_EQ(s.peers[0].closes, 1);
    WP_CHECK_EQ(s.peers[0].close_code, 4001);
    WP_CHECK_EQ(s.peers[0].errors, 0);
    tsrv_stop(&s);
    peer_free(&c.pe);
}

WP_TEST(ws_close_timeout)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    tsrv s;
    tsrv_start(&s, &loop, NULL);
    s.lim.close_timeout_ms = 200;
    tcli c;
    memset(&c, 0, sizeof(c));
    peer_init(&c.pe, 1024);
    c.pause_on_open = 1; /* the client never reads the server's Close */
    char url[128];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/ws", s.port);
    WP_CHECK_EQ(cli_connect(&c, &loop, url, NULL, NULL), 0);
    RUN_UNTIL(&loop, c.done && s.npeers == 1, 3000);
    WP_CHECK_EQ(c.status, 0);
    uv_update_time(&loop);
    uint64_t t0 = uv_now(&loop);
    WP_CHECK_EQ(wp_ws_close(s.peers[0].ws, 1001, NULL), 0);
    RUN_UNTIL(&loop, s.peers[0].freed, 3000);
    WP_CHECK(uv_now(&loop) - t0 >= 190);
    WP_CHECK_EQ(s.peers[0].errors, 1);
    WP_CHECK_EQ(s.peers[0].err, WP_ERR_TIMEOUT);
    WP_CHECK_EQ(s.peers[0].closes, 0);
    /* the paused client resumes: it sees the Close (or the reset) exactly once */
    WP_CHECK_EQ(c.pe.closes + c.pe.errors, 0);
    WP_CHECK_EQ(wp_ws_resume_reading(c.pe.ws), 0);
    RUN_UNTIL(&loop, c.pe.freed, 3000);
    WP_CHECK_EQ(c.pe.closes + c.pe.errors, 1);
    tsrv_stop(&s);
    peer_free(&c.pe);
}

WP_TEST(ws_peer_vanishes)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    tsrv s;
    tsrv_start(&s, &loop, NULL);
    /* server side: the raw client closes TCP right after the upgrade */
    char req[1024];
    int n = mk_upgrade(req, sizeof(req), NULL, NULL);
    raw r;
    raw_open(&r, &loop, s.port, req, (size_t)n);
    RUN_UNTIL(&loop, resp_complete(&r), 3000);
    WP_CHECK_EQ(resp_status(&r.got), 101);
    raw_close(&r);
    RUN_UNTIL(&loop, s.peers[0].freed, 3000);
    WP_CHECK_EQ(s.peers[0].errors, 1);
    WP_CHECK_EQ(s.peers[0].err, WP_ERR_CLOSED);
    WP_CHECK_EQ(s.peers[0].closes, 0);
    raw_free(&r);
    /* client side: the server aborts */
    tcli c;
    memset(&c, 0, sizeof(c));
    peer_init(&c.pe, 1024);
    char url[128];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/ws", s.port);
    WP_CHECK_EQ(cli_connect(&c, &loop, url, NULL, NULL), 0);
    RUN_UNTIL(&loop, c.done && s.npeers == 2, 3000);
    WP_CHECK_EQ(c.status, 0);
    wp_ws_abort(s.peers[1].ws);
    wp_ws_abort(s.peers[1].ws); /* idempotent */
    RUN_UNTIL(&loop, c.pe.freed && s.peers[1].freed, 3000);
    WP_CHECK_EQ(c.pe.errors, 1);
    WP_CHECK_EQ(c.pe.err, WP_ERR_CLOSED);
    WP_CHECK_EQ(c.pe.closes, 0);
    WP_CHECK_EQ(s.peers[1].errors + s.peers[1].closes, 0); /* abort reports nothing */
    WP_CHECK_EQ(s.peers[1].freed, 1);
    tsrv_stop(&s);
    peer_free(&c.pe);
}

WP_TEST(ws_client_refused)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    tsrv s;
    tsrv_start(&s, &loop, NULL);
    char url[128];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/ws", s.port);
    s.mode = MODE_401;
    tcli c;
    memset(&c, 0, sizeof(c));
    peer_init(&c.pe, 1024);
    WP_CHECK_EQ(cli_connect(&c, &loop, url, NULL, NULL), 0);
    RUN_UNTIL(&loop, c.done, 3000);
    WP_CHECK_EQ(c.done, 1);
    WP_CHECK_EQ(c.status, WP_ERR_PERM);
    WP_CHECK_EQ(c.info.http_status, 401);
    WP_CHECK_STR(c.info.error_code, "unauthorized");
    WP_CHECK_STR(c.info.error_message, "bad token");
    WP_CHECK_EQ(s.auth_ok, 1);
    s.mode = MODE_503;
    memset(&c, 0, sizeof(c));
    WP_CHECK_EQ(cli_connect(&c, &loop, url, NULL, NULL), 0);
    RUN_UNTIL(&loop, c.done, 3000);
    WP_CHECK_EQ(c.status, WP_ERR_BUSY);
    WP_CHECK_EQ(c.info.http_status, 503);
    WP_CHECK_EQ(c.info.retry_after_s, 7);
    WP_CHECK_STR(c.info.error_code, "over_capacity");
    /* a path with no route: 404 */
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/nope", s.port);
    memset(&c, 0, sizeof(c));
    WP_CHECK_EQ(cli_connect(&c, &loop, url, NULL, NULL), 0);
    RUN_UNTIL(&loop, c.done, 3000);
    WP_CHECK_EQ(c.status, WP_ERR_PROTO);
    WP_CHECK_EQ(c.info.http_status, 404);
    WP_CHECK_EQ(c.pe.freed, 0); /* never delivered open: no on_freed */
    tsrv_stop(&s);
    peer_free(&c.pe);
}

WP_TEST(ws_server_leftover_bytes)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    tsrv s;
    tsrv_start(&s, &loop, NULL);
    s.echo = 1;
    uint8_t buf[2048];
    int n = mk_upgrade((char *)buf, sizeof(buf), NULL, NULL);
    size_t len = (size_t)n;
    len += mk_frame(buf + len, 0x81, 1, "early", 5);
    len += mk_frame(buf + len, 0x82, 1, "\x01\x02", 2);
    raw r;
    raw_open(&r, &loop, s.port, buf, len); /* request and frames in one write */
    RUN_UNTIL(&loop, s.npeers == 1 && s.peers[0].binaries == 1, 3000);
    WP_CHECK_EQ(s.peers[0].texts, 1);
    WP_CHECK_EQ(s.peers[0].binaries, 1);
    WP_CHECK(wp_buf_len(&s.peers[0].got) == 7 &&
             !memcmp(wp_buf_ptr(&s.peers[0].got), "early\x01\x02", 7));
    /* the echo comes back unmasked */
    size_t h = 0;
    RUN_UNTIL(&loop, (h = resp_head_len(&r.got)) && wp_buf_len(&r.got) >= h + 7 + 4, 3000);
    WP_CHECK_EQ(resp_status(&r.got), 101);
    int op, masked;
    uint8_t pl[64];
    size_t plen = 0;
    size_t used = parse_frame(wp_buf_ptr(&r.got) + h, wp_buf_len(&r.got) - h, &op, &masked, pl,
                              sizeof(pl), &plen);
    WP_CHECK(used > 0);
    WP_CHECK_EQ(op, 1);
    WP_CHECK_EQ(masked, 0);
    WP_CHECK(plen == 5 && !memcmp(pl, "early", 5));
    raw_close(&r);
    RUN_UNTIL(&loop, r.closed && s.peers[0].freed, 3000);
    raw_free(&r);
    tsrv_stop(&s);
}

typedef struct hostile_case {
    const char *name;
    uint8_t bytes[32];
    size_t len;
    int close_code;
    int err;
} hostile_case;

WP_TEST(ws_server_hostile_frames)
{
    static const hostile_case cases[] = {
        {"unmasked text", {0x81, 0x02, 'h', 'i'}, 4, 1002, WP_ERR_PROTO},
        {"rsv1", {0xC1, 0x80, 0, 0, 0, 0}, 6, 1002, WP_ERR_PROTO},
        {"reserved opcode 3", {0x83, 0x80, 0, 0, 0, 0}, 6, 1002, WP_ERR_PROTO},
        {"reserved opcode 11", {0x8B, 0x80, 0, 0, 0, 0}, 6, 1002, WP_ERR_PROTO},
        {"ping over 125", {0x89, 0xFE, 0x00, 0x7E}, 4, 1002, WP_ERR_PROTO},
        {"fragmented ping", {0x09, 0x80, 0, 0, 0, 0}, 6, 1002, WP_ERR_PROTO},
        {"continuation first", {0x80, 0x80, 0, 0, 0, 0}, 6, 1002, WP_ERR_PROTO},
        {"new message inside fragments",
         {0x01, 0x81, 0, 0, 0, 0, 'a', 0x81, 0x81, 0, 0, 0, 0, 'b'},
         14,
         1002,
         WP_ERR_PROTO},
        {"non-minimal 16-bit length", {0x82, 0xFE, 0x00, 0x05, 0, 0, 0, 0}, 8, 1002, WP_ERR_PROTO},
        {"non-minimal 64-bit length",
         {0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0, 0, 0, 0},
         14,
         1002,
         WP_ERR_PROTO},
        {"64-bit length msb",
         {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
         14,
         1002,
         WP_ERR_PROTO},
        {"close with 1 byte", {0x88, 0x81, 0, 0, 0, 0, 0x03}, 7, 1002, WP_ERR_PROTO},
        {"close with code 999", {0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE7}, 8, 1002, WP_ERR_PROTO},
        {"invalid utf-8 text", {0x81, 0x82, 0, 0, 0, 0, 0xC3, 0x28}, 8, 1007, WP_ERR_PROTO},
        {"text header over limit", {0x81, 0xFE, 0x13, 0x88, 0, 0, 0, 0}, 8, 1009, WP_ERR_LIMIT},
        {"binary 2^62 bytes",
         {0x82, 0xFF, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
         14,
         1009,
         WP_ERR_LIMIT},
        {"fragments over limit",
         {0x02, 0xFE, 0x02, 0x00, 0, 0, 0, 0},
         8,
         1009,
         WP_ERR_LIMIT}, /* 512 of a 1000-byte limit, then see below */
    };
    uv_loop_t loop;
    uv_loop_init(&loop);
    tsrv s;
    tsrv_start(&s, &loop, NULL);
    s.lim.max_binary = 1000;
    s.lim.max_text = 1000;
    size_t ncases = sizeof(cases) / sizeof(cases[0]);
    for (size_t i = 0; i < ncases; i++) {
        uint8_t buf[4096];
        size_t len = (size_t)mk_upgrade((char *)buf, sizeof(buf), NULL, NULL);
        memcpy(buf + len, cases[i].bytes, cases[i].len);
        len += cases[i].len;
        if (i == ncases - 1) { /* 512 + 512 bytes in two fragments: over 1000 */
            memset(buf + len, 0, 512);
            len += 512;
            static const uint8_t second[] = {0x80, 0xFE, 0x02, 0x00, 0, 0, 0, 0};
            memcpy(buf + len, second, sizeof(second));
            len += sizeof(second);
        }
        raw r;
        raw_open(&r, &loop, s.port, buf, len);
        peer *pe = &s.peers[i];
        RUN_UNTIL(&loop, (int)i < s.npeers && pe->errors && r.eof, 3000);
        if (raw_close_code(&r) != cases[i].close_code)
            printf("  case %s: close %d\n", cases[i].name, raw_close_code(&r));
        WP_CHECK_EQ(raw_close_code(&r), cases[i].close_code);
        WP_CHECK_EQ(pe->errors, 1);
        WP_CHECK_EQ(pe->err, cases[i].err);
        WP_CHECK_EQ(pe->texts + pe->binaries + pe->closes, 0);
        WP_CHECK(r.eof); /* the server shut its side after the Close */
        raw_close(&r);
        RUN_UNTIL(&loop, r.closed && pe->freed, 1000);
        WP_CHECK_EQ(pe->freed, 1);
        raw_free(&r);
    }
    tsrv_stop(&s);
}

WP_TEST(ws_server_fragments_and_ping)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    tsrv s;
    tsrv_start(&s, &loop, NULL);
    uint8_t buf[4096];
    size_t len = (size_t)mk_upgrade((char *)buf, sizeof(buf), NULL, NULL);
    len += mk_frame(buf + len, 0x01, 1, "Hel", 3);      /* text, not final */
    len += mk_frame(buf + len, 0x89, 1, "pg", 2);       /* ping in between */
    len += mk_frame(buf + len, 0x80, 1, "lo", 2);       /* final continuation */
    len += mk_frame(buf + len, 0x8A, 1, "x", 1);        /* unsolicited pong: ignored */
    len += mk_frame(buf + len, 0x88, 1, "\x03\xe8", 2); /* close 1000 */
    raw r;
    raw_open(&r, &loop, s.port, buf, len);
    RUN_UNTIL(&loop, s.npeers == 1 && s.peers[0].closes && r.eof, 3000);
    WP_CHECK_EQ(s.peers[0].texts, 1);
    WP_CHECK(wp_buf_len(&s.peers[0].got) == 5 && !memcmp(wp_buf_ptr(&s.peers[0].got), "Hello", 5));
    WP_CHECK_EQ(s.peers[0].closes, 1);
    WP_CHECK_EQ(s.peers[0].close_code, 1000);
    /* the answer: a pong with the ping's payload, then the echoed Close */
    size_t off = resp_head_len(&r.got);
    int op = -1, masked;
    uint8_t pl[64];
    size_t plen = 0;
    size_t used = parse_frame(wp_buf_ptr(&r.got) + off, wp_buf_len(&r.got) - off, &op, &masked, pl,
                              sizeof(pl), &plen);
    WP_CHECK(used > 0);
    WP_CHECK_EQ(op, 0xA);
    WP_CHECK(plen == 2 && !memcmp(pl, "pg", 2));
    WP_CHECK_EQ(raw_close_code(&r), 1000);
    raw_close(&r);
    RUN_UNTIL(&loop, r.closed && s.peers[0].freed, 1000);
    WP_CHECK_EQ(s.peers[0].freed, 1);
    raw_free(&r);
    tsrv_stop(&s);
}

/* ------------------------------------------------------------------ */
/* raw TCP server: hostile or unusual 101 answers for the client        */

enum {
    RS_OK_LEFTOVER = 0,
    RS_BAD_ACCEPT,
    RS_EXTENSION,
    RS_WRONG_PROTO,
    RS_NO_PROTO,
    RS_MUTE,
    RS_MASKED_FRAME,
    RS_403_EOF_BODY,
    RS_NO_UPGRADE,
    RS_GARBAGE,
    RS_TWO_PROTOS,
};

typedef struct rsrv {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_tcp_t conn;
    int port, mode, accepted, answered, conn_closed, eof;
    wp_buf got;
} rsrv;

static void rs_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    rsrv *s = st->data;
    if (n > 0)
        wp_buf_put(&s->got, b->base, (size_t)n);
    free(b->base);
    if (n < 0) {
        s->eof = 1;
        uv_read_stop(st);
        return;
    }
    if (s->answered || !resp_head_len(&s->got) || s->mode == RS_MUTE)
        return;
    s->answered = 1;
    char key[64] = "";
    const char *k = strstr((const char *)wp_buf_ptr(&s->got), "Sec-WebSocket-Key: ");
    if (k)
        sscanf(k + 19, "%63[^\r]", key);
    char acc[WP_WS_ACCEPT_LEN] = "";
    wp_ws_accept_key(key, acc);
    char out[1024];
    int n2 = 0;
    const char *proto = "Sec-WebSocket-Protocol: wolfpack.v1\r\n";
    switch (s->mode) {
    case RS_BAD_ACCEPT:
        snprintf(acc, sizeof(acc), "%s", RFC_ACCEPT);
        break;
    case RS_WRONG_PROTO:
        proto = "Sec-WebSocket-Protocol: other.v1\r\n";
        break;
    case RS_NO_PROTO:
        proto = "";
        break;
    case RS_TWO_PROTOS:
        proto = "Sec-WebSocket-Protocol: wolfpack.v1\r\nSec-WebSocket-Protocol: wolfpack.v1\r\n";
        break;
    default:
        break;
    }
    if (s->mode == RS_403_EOF_BODY) {
        n2 =
            snprintf(out, sizeof(out),
                     "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
                     "Connection: close\r\n\r\n"
                     "{\"error\":{\"code\":\"forbidden\",\"message\":\"role \\u0001 not agent\"}}");
    } else if (s->mode == RS_GARBAGE) {
        n2 = snprintf(out, sizeof(out), "HTTP/1.1 1O1 What\r\n\r\n");
    } else {
        n2 = snprintf(out, sizeof(out),
                      "HTTP/1.1 101 Switching Protocols\r\n%sConnection: upgrade\r\n"
                      "Sec-WebSocket-Accept: %s\r\n%s%s\r\n",
                      s->mode == RS_NO_UPGRADE ? "" : "Upgrade: WebSocket\r\n", acc, proto,
                      s->mode == RS_EXTENSION ? "Sec-WebSocket-Extensions: permessage-deflate\r\n"
                                              : "");
    }
    size_t len = (size_t)n2;
    if (s->mode == RS_OK_LEFTOVER)
        len += mk_frame((uint8_t *)out + len, 0x81, 0, "early", 5);
    if (s->mode == RS_MASKED_FRAME)
        len += mk_frame((uint8_t *)out + len, 0x81, 1, "bad", 3);
    raw_send(st, out, len);
    if (s->mode == RS_403_EOF_BODY)
        uv_close((uv_handle_t *)&s->conn, NULL), s->conn_closed = 1;
}

static void rs_on_conn(uv_stream_t *l, int status)
{
    rsrv *s = l->data;
    if (status < 0 || s->accepted)
        return;
    uv_tcp_init(s->loop, &s->conn);
    s->conn.data = s;
    if (uv_accept(l, (uv_stream_t *)&s->conn) == 0) {
        s->accepted = 1;
        uv_read_start((uv_stream_t *)&s->conn, raw_alloc, rs_read);
    } else {
        uv_close((uv_handle_t *)&s->conn, NULL);
    }
}

static void rs_start(rsrv *s, uv_loop_t *loop, int mode)
{
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->mode = mode;
    wp_buf_init(&s->got, 1 << 20);
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    struct sockaddr_in sin;
    uv_ip4_addr("127.0.0.1", 0, &sin);
    uv_tcp_bind(&s->listener, (struct sockaddr *)&sin, 0);
    uv_listen((uv_stream_t *)&s->listener, 8, rs_on_conn);
    struct sockaddr_storage ss;
    int n = sizeof(ss);
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &n);
    s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void rs_stop(rsrv *s)
{
    uv_close((uv_handle_t *)&s->listener, NULL);
    if (s->accepted && !s->conn_closed)
        uv_close((uv_handle_t *)&s->conn, NULL);
    s->conn_closed = 1;
}

/* Connects a client to a raw server in `mode`; returns the connect status. */
static int client_vs_raw(int mode, tcli *c, rsrv *s, uv_loop_t *loop, unsigned timeout_ms)
{
    rs_start(s, loop, mode);
    memset(c, 0, sizeof(*c));
    peer_init(&c->pe, 1024);
    wp_ws_limits lim;
    memset(&lim, 0, sizeof(lim));
    lim.handshake_timeout_ms = timeout_ms;
    char url[128];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/tunnel/path", s->port);
    WP_CHECK_EQ(cli_connect(c, loop, url, NULL, &lim), 0);
    RUN_UNTIL(loop, c->done, 3000);
    WP_CHECK_EQ(c->done, 1);
    return c->status;
}

WP_TEST(ws_client_leftover_and_masking)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    rsrv s;
    tcli c;
    WP_CHECK_EQ(client_vs_raw(RS_OK_LEFTOVER, &c, &s, &loop, 3000), 0);
    /* what the client sent */
    wp_buf_put_u8(&s.got, 0);
    const char *req = (const char *)wp_buf_ptr(&s.got);
    WP_CHECK(!strncmp(req, "GET /tunnel/path HTTP/1.1\r\n", 27));
    char host[64];
    snprintf(host, sizeof(host), "Host: 127.0.0.1:%d\r\n", s.port);
    WP_CHECK(strstr(req, host) != NULL);
    WP_CHECK(strstr(req, "\r\nAuthorization: Bearer secret-token\r\n") != NULL);
    WP_CHECK(strstr(req, "\r\nSec-WebSocket-Protocol: wolfpack.v1\r\n") != NULL);
    WP_CHECK(strstr(req, "\r\nSec-WebSocket-Version: 13\r\n") != NULL);
    WP_CHECK(strstr(req, "\r\nUpgrade: websocket\r\n") != NULL);
    WP_CHECK(strstr(req, "Extensions") == NULL);
    wp_buf_reset(&s.got);
    /* the frame that came with the 101 is delivered after the connect callback */
    RUN_UNTIL(&loop, c.pe.texts == 1, 3000);
    WP_CHECK(wp_buf_len(&c.pe.got) == 5 && !memcmp(wp_buf_ptr(&c.pe.got), "early", 5));
    /* client frames are masked */
    WP_CHECK_EQ(wp_ws_send_text(c.pe.ws, "up", 2), 0);
    RUN_UNTIL(&loop, wp_buf_len(&s.got) >= 8, 3000);
    int op = -1, masked = 0;
    uint8_t pl[16];
    size_t plen = 0;
    WP_CHECK(parse_frame(wp_buf_ptr(&s.got), wp_buf_len(&s.got), &op, &masked, pl, sizeof(pl),
                         &plen) == 8);
    WP_CHECK_EQ(op, 1);
    WP_CHECK_EQ(masked, 1);
    WP_CHECK(plen == 2 && !memcmp(pl, "up", 2));
    /* the server drops the TCP connection: one on_error */
    uv_close((uv_handle_t *)&s.conn, NULL);
    s.conn_closed = 1;
    RUN_UNTIL(&loop, c.pe.freed, 3000);
    WP_CHECK_EQ(c.pe.errors, 1);
    WP_CHECK_EQ(c.pe.err, WP_ERR_CLOSED);
    WP_CHECK_EQ(c.pe.closes, 0);
    rs_stop(&s);
    WP_CHECK_LOOP_CLOSED(&loop);
    wp_buf_free(&s.got);
    peer_free(&c.pe);
}

WP_TEST(ws_client_rejects_bad_101)
{
    static const int modes[] = {RS_BAD_ACCEPT, RS_EXTENSION, RS_WRONG_PROTO, RS_NO_PROTO,
                                RS_NO_UPGRADE, RS_GARBAGE,   RS_TWO_PROTOS};
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        uv_loop_t loop;
        uv_loop_init(&loop);
        rsrv s;
        tcli c;
        int st = client_vs_raw(modes[i], &c, &s, &loop, 3000);
        if (st != WP_ERR_PROTO)
            printf("  mode %d: %d\n", modes[i], st);
        WP_CHECK_EQ(st, WP_ERR_PROTO);
        WP_CHECK(c.pe.ws == NULL);
        rs_stop(&s);
        WP_CHECK_LOOP_CLOSED(&loop);
        WP_CHECK_EQ(c.pe.freed, 0);
        wp_buf_free(&s.got);
        peer_free(&c.pe);
    }
}

WP_TEST(ws_client_handshake_failures)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    rsrv s;
    tcli c;
    /* the server never answers */
    uv_update_time(&loop);
    uint64_t t0 = uv_now(&loop);
    WP_CHECK_EQ(client_vs_raw(RS_MUTE, &c, &s, &loop, 200), WP_ERR_TIMEOUT);
    WP_CHECK(uv_now(&loop) - t0 >= 190);
    rs_stop(&s);
    WP_CHECK_LOOP_CLOSED(&loop);
    wp_buf_free(&s.got);
    peer_free(&c.pe);
    /* 403 with a JSON body delimited by EOF */
    uv_loop_init(&loop);
    WP_CHECK_EQ(client_vs_raw(RS_403_EOF_BODY, &c, &s, &loop, 3000), WP_ERR_PERM);
    WP_CHECK_EQ(c.info.http_status, 403);
    WP_CHECK_STR(c.info.error_code, "forbidden");
    WP_CHECK_STR(c.info.error_message, "role ? not agent"); /* control chars scrubbed */
    rs_stop(&s);
    WP_CHECK_LOOP_CLOSED(&loop);
    wp_buf_free(&s.got);
    peer_free(&c.pe);
    /* a masked frame from the server: the client fails with 1002 */
    uv_loop_init(&loop);
    WP_CHECK_EQ(client_vs_raw(RS_MASKED_FRAME, &c, &s, &loop, 3000), 0);
    RUN_UNTIL(&loop, c.pe.errors == 1 && s.eof, 3000);
    WP_CHECK_EQ(c.pe.err, WP_ERR_PROTO);
    WP_CHECK_EQ(c.pe.texts, 0);
    {
        size_t off = resp_head_len(&s.got);
        int op = -1, masked = 0;
        uint8_t pl[16];
        size_t plen = 0;
        WP_CHECK(parse_frame(wp_buf_ptr(&s.got) + off, wp_buf_len(&s.got) - off, &op, &masked, pl,
                             sizeof(pl), &plen) > 0);
        WP_CHECK_EQ(op, 8);
        WP_CHECK_EQ(masked, 1);
        WP_CHECK(plen == 2 && pl[0] == 0x03 && pl[1] == 0xEA);
    }
    rs_stop(&s);
    RUN_UNTIL(&loop, c.pe.freed, 3000);
    WP_CHECK_EQ(c.pe.freed, 1);
    WP_CHECK_LOOP_CLOSED(&loop);
    wp_buf_free(&s.got);
    peer_free(&c.pe);
}

WP_TEST(ws_client_connect_invalid)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    wp_tls_conf *tls = NULL;
    char err[128];
    wp_tls_client_opts o = {.insecure_skip_verify = 1};
    WP_CHECK_EQ(wp_tls_conf_client_new(&tls, &o, err, sizeof(err)), 0);
    tcli c;
    memset(&c, 0, sizeof(c));
    static const char *const urls[] = {"http://localhost/ws",
                                       "wss://localhost/ws",
                                       "ws://localhost/ws?token=x",
                                       "ws://u:p@localhost/ws",
                                       "ws://localhost/ws#frag",
                                       "ws:///ws",
                                       "ws://localhost:0/ws",
                                       "ws://localhost:99999/ws",
                                       "not a url",
                                       ""};
    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        int rc = wp_ws_client_connect(&loop, urls[i], NULL, NULL, "wolfpack.v1", NULL, &pe_cbs,
                                      &c.pe, cli_connected, &c, NULL);
        if (rc != WP_ERR_INVAL)
            printf("  url %s: %d\n", urls[i], rc);
        WP_CHECK_EQ(rc, WP_ERR_INVAL);
    }
    /* scheme and TLS must agree */
    WP_CHECK_EQ(wp_ws_client_connect(&loop, "ws://localhost/ws", tls, NULL, "wolfpack.v1", NULL,
                                     &pe_cbs, &c.pe, cli_connected, &c, NULL),
                WP_ERR_INVAL);
    static const char *const bad_subs[] = {"", "a b", "a,b", "x\r\n"};
    for (size_t i = 0; i < sizeof(bad_subs) / sizeof(bad_subs[0]); i++)
        WP_CHECK_EQ(wp_ws_client_connect(&loop, "ws://localhost/ws", NULL, NULL, bad_subs[i], NULL,
                                         &pe_cbs, &c.pe, cli_connected, &c, NULL),
                    WP_ERR_INVAL);
    static const char *const bad_hdrs[][2] = {
        {"X-Evil: a\r\nHost: b", NULL}, {"Host: evil", NULL},   {"NoColon", NULL},
        {": empty-name", NULL},         {"Bad Name: v", NULL},  {"sec-websocket-key: x", NULL},
        {"Connection: close", NULL},    {"X-Ctl: a\x01", NULL},
    };
    for (size_t i = 0; i < sizeof(bad_hdrs) / sizeof(bad_hdrs[0]); i++)
        WP_CHECK_EQ(wp_ws_client_connect(&loop, "ws://localhost/ws", NULL, bad_hdrs[i],
                                         "wolfpack.v1", NULL, &pe_cbs, &c.pe, cli_connected, &c,
                                         NULL),
                    WP_ERR_INVAL);
    char *huge = malloc(9000);
    memset(huge, 'a', 8999);
    memcpy(huge, "X-Big: ", 7);
    huge[8999] = 0;
    const char *const big_hdrs[] = {huge, NULL};
    WP_CHECK_EQ(wp_ws_client_connect(&loop, "ws://localhost/ws", NULL, big_hdrs, "wolfpack.v1",
                                     NULL, &pe_cbs, &c.pe, cli_connected, &c, NULL),
                WP_ERR_LIMIT);
    free(huge);
    WP_CHECK_EQ(wp_ws_client_connect(&loop, "ws://localhost/ws", NULL, NULL, "wolfpack.v1", NULL,
                                     &pe_cbs, &c.pe, NULL, &c, NULL),
                WP_ERR_INVAL);
    WP_CHECK_EQ(wp_ws_client_connect(NULL, "ws://localhost/ws", NULL, NULL, "wolfpack.v1", NULL,
                                     &pe_cbs, &c.pe, cli_connected, &c, NULL),
                WP_ERR_INVAL);
    uv_run(&loop, UV_RUN_DEFAULT);
    WP_CHECK_EQ(c.done, 0); /* a failed call never calls back */
    WP_CHECK_LOOP_CLOSED(&loop);
    wp_tls_conf_unref(tls);
}

WP_TEST(ws_abort_pending_connect)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    rsrv s;
    rs_start(&s, &loop, RS_MUTE);
    tcli c;
    memset(&c, 0, sizeof(c));
    peer_init(&c.pe, 1024);
    wp_ws_limits lim;
    memset(&lim, 0, sizeof(lim));
    lim.handshake_timeout_ms = 2000;
    char url[128];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/ws", s.port);
    /* aborted before the TCP connect completes */
    WP_CHECK_EQ(cli_connect(&c, &loop, url, NULL, &lim), 0);
    wp_ws_abort(c.pending);
    /* aborted while waiting for the 101 */
    rsrv s2;
    rs_start(&s2, &loop, RS_MUTE);
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/ws", s2.port);
    tcli c2;
    memset(&c2, 0, sizeof(c2));
    peer_init(&c2.pe, 1024);
    WP_CHECK_EQ(cli_connect(&c2, &loop, url, NULL, &lim), 0);
    RUN_UNTIL(&loop, resp_head_len(&s2.got) > 0, 2000);
    WP_CHECK(resp_head_len(&s2.got) > 0);
    wp_ws_abort(c2.pending);
    wp_ws_abort(c2.pending); /* idempotent */
    RUN_UNTIL(&loop, s2.eof, 1000);
    WP_CHECK(s2.eof); /* the connection was dropped */
    rs_stop(&s);
    rs_stop(&s2);
    WP_CHECK_LOOP_CLOSED(&loop);
    wp_buf_free(&s2.got);
    WP_CHECK_EQ(c.done, 0);
    WP_CHECK_EQ(c2.done, 0);
    WP_CHECK_EQ(c.pe.freed + c2.pe.freed, 0);
    wp_buf_free(&s.got);
    peer_free(&c.pe);
    peer_free(&c2.pe);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as the daemons do: a reset peer is an error code */
    g_big = malloc(8u << 20);
    for (size_t i = 0; i < (8u << 20); i++)
        g_big[i] = (uint8_t)(i * 7 + (i >> 11));
    WP_RUN(ws_accept_key);
    WP_RUN(ws_upgrade_validation);
    WP_RUN(ws_echo_plain);
    WP_RUN(ws_message_too_big);
    WP_RUN(ws_queue_limit_and_pause);
    WP_RUN(ws_server_close_sends_queued_first);
    WP_RUN(ws_close_timeout);
    WP_RUN(ws_peer_vanishes);
    WP_RUN(ws_client_refused);
    WP_RUN(ws_server_leftover_bytes);
    WP_RUN(ws_server_hostile_frames);
    WP_RUN(ws_server_fragments_and_ping);
    WP_RUN(ws_client_leftover_and_masking);
    WP_RUN(ws_client_rejects_bad_101);
    WP_RUN(ws_client_handshake_failures);
    WP_RUN(ws_client_connect_invalid);
    WP_RUN(ws_abort_pending_connect);
    if (certs_setup() == 0) {
        WP_RUN(ws_echo_tls);
    } else {
        printf("FAIL tls tests: could not generate certificates\n");
        wp_test_failed_++;
    }
    certs_cleanup();
    free(g_big);
    return wp_test_done();
}
