/*
 * http_server.c — HTTP/1.1 server plumbing on wp_conn + llhttp (see http.h).
 *
 * Per connection (http_conn): all received bytes go to `in` (bounded by
 * max_pending_bytes plus one read) and are parsed from there, one request at
 * a time. The llhttp callbacks only record; every decision happens in
 * hc_process() after llhttp_execute() returns, because the parser is paused
 * (HPE_PAUSED) at each headers-complete and message-complete. Handlers are
 * therefore never called from inside llhttp, except the body callbacks of
 * streaming routes (on_body may ask for a pause, which returns HPE_PAUSED).
 *
 * Lifetime: an http_conn owns a uv_timer_t (header/body/idle/linger
 * deadline). It is freed from the timer's close callback, which runs after
 * the wp_conn's on_close (or after a hijack), so nothing on the current
 * stack can see it freed. A wp_http_req is freed by hc_process() once it is
 * both answered and fully read, or at teardown after on_abort.
 */
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "addr.h"
#include "err.h"
#include "http_internal.h"
#include "log.h"

#define HTTP_LINGER_MS    2000
#define HTTP_READ_SLACK   (64 * 1024) /* one socket read beyond max_pending_bytes */
#define HTTP_RESP_HDR_MAX (16 * 1024)
#define HTTP_HEAD_MAX     (HTTP_RESP_HDR_MAX + 512)

typedef struct http_conn http_conn;

enum { EV_NONE = 0, EV_HEADERS, EV_MESSAGE, EV_BODY_PAUSE };
enum { TM_NONE = 0, TM_HEADER, TM_BODY, TM_IDLE, TM_LINGER };

struct wp_http_req {
    http_conn *hc;
    wp_http_server *srv;
    /* parsed request */
    const char *method;
    char *target; /* raw request target */
    char *path;   /* raw path (no query) */
    const char *query;
    const char **hnames, **hvalues;
    size_t nhdr;
    wp_http_match match;
    int has_route;
    int route_status; /* 0, 404, 405 */
    unsigned flags;
    wp_http_handler handler;
    void *handler_ud;
    int minor, keep_alive, is_head, is_connect, upgrade;
    int expect_continue, body_expected;
    wp_buf body;
    int msg_done, dispatched, finished, started, chunked, close_after, server_answered;
    int body_paused, on_end_called;
    /* response */
    int status;
    wp_buf rh; /* extra response headers */
    uint64_t bytes_out;
    uint64_t t_start;
    void *data;
    void (*abort_cb)(wp_http_req *, void *);
    void *abort_ud;
    void (*body_data)(wp_http_req *, const uint8_t *, size_t, void *);
    void (*body_end)(wp_http_req *, void *);
    void *body_ud;
    void (*drain_cb)(wp_http_req *, void *);
    void *drain_ud;
};

struct http_conn {
    wp_http_server *srv;
    wp_conn *conn;
    http_conn *prev, *next;
    uv_timer_t timer;
    int tmode;
    size_t linger_last;
    llhttp_t parser;
    wp_buf in;
    wp_buf hraw;       /* arena: url\0 name\0 value\0 ... */
    size_t (*hoff)[2]; /* header name/value offsets into hraw */
    size_t hcap;
    size_t nh;
    size_t url_len, field_start, value_start;
    const char *exec_start, *exec_end; /* span of the current llhttp_execute */
    size_t value_spans;
    int last_span_at_end;
    int in_field, in_value;
    size_t hdr_bytes; /* accounted header bytes (spans + separators) */
    size_t raw_hdr_bytes;
    int err_status;
    const char *err_code, *err_msg;
    int ev;
    wp_http_req *req;
    unsigned in_process : 1, reprocess : 1, need_exec : 1, dead : 1, lingering : 1, hijacked : 1,
        read_blocked : 1, wait_resp : 1, headers_done : 1, ready : 1, eof : 1, served : 1;
};

typedef struct http_listener {
    uv_tcp_t tcp;
    wp_http_server *srv;
    struct http_listener *next;
} http_listener;

struct wp_http_server {
    uv_loop_t *loop;
    wp_http_limits lim;
    wp_conn_limits clim;
    wp_tls_conf *tls;
    wp_conn_gate gate;
    wp_http_router router;
    wp_http_handler fallback;
    void *fallback_ud;
    wp_http_handler connect_h;
    void *connect_ud;
    http_listener *listeners;
    http_conn *conns;
    size_t nconns;
    size_t open_items; /* listeners + http_conns + stray handles not yet closed */
    int closing;
    void (*close_cb)(void *);
    void *close_ud;
};

static llhttp_settings_t http_settings;
static int http_settings_ready;

static void hc_process(http_conn *hc);
static void hc_error(http_conn *hc, int status, const char *code, const char *msg);
static void hc_start_close(http_conn *hc);
static void hc_kill(http_conn *hc);
static int http_finish_resp(wp_http_req *req);

/* ---- limits ---- */

void wp_http_limits_default(wp_http_limits *l)
{
    l->max_header_bytes = 16384;
    l->max_headers = 100;
    l->max_url = 8192;
    l->max_body = 1024 * 1024;
    l->header_timeout_ms = 10000;
    l->idle_timeout_ms = 60000;
    l->body_timeout_ms = 30000;
    l->max_connections = 4096;
    l->max_pending_bytes = 65536;
    l->max_write_queue = 4u * 1024 * 1024;
    l->max_handshakes = 64;
    l->handshake_timeout_ms = 10000;
    l->max_handshake_queue = 1024;
}

const char *wp_http_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}

/* ---- small helpers ---- */

static void http_date(char out[64])
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(out, 64, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

static int is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int value_ok(const char *v)
{
    for (; *v; v++) {
        unsigned char c = (unsigned char)*v;
        if (c == '\r' || c == '\n' || (c < 0x20 && c != '\t') || c == 0x7f)
            return 0;
    }
    return 1;
}

static void server_item_done(wp_http_server *s)
{
    if (--s->open_items > 0 || !s->closing)
        return;
    void (*cb)(void *) = s->close_cb;
    void *ud = s->close_ud;
    wp_http_router_free(&s->router);
    if (s->tls)
        wp_tls_conf_unref(s->tls);
    free(s);
    if (cb)
        cb(ud);
}

/* ---- timers ---- */

static void hc_timer_cb(uv_timer_t *t);

static void hc_timer(http_conn *hc, int mode, unsigned ms)
{
    hc->tmode = mode;
    if (mode == TM_NONE || ms == 0)
        uv_timer_stop(&hc->timer);
    else
        uv_timer_start(&hc->timer, hc_timer_cb, ms, 0);
}

static void hc_timer_cb(uv_timer_t *t)
{
    http_conn *hc = t->data;
    if (hc->dead || hc->hijacked)
        return;
    switch (hc->tmode) {
    case TM_HEADER:
        hc_error(hc, 408, "request_timeout", "request headers not received in time");
        break;
    case TM_BODY:
        hc_error(hc, 408, "request_timeout", "request body not received in time");
        break;
    case TM_IDLE:
        hc_kill(hc);
        break;
    case TM_LINGER: {
        size_t q = hc->conn ? wp_conn_write_queued(hc->conn) : 0;
        if (q > 0 && q < hc->linger_last) {
            hc->linger_last = q; /* still draining: give it more time */
            hc_timer(hc, TM_LINGER, HTTP_LINGER_MS);
        } else {
            hc_kill(hc);
        }
        break;
    }
    default:
        break;
    }
}

/* ---- request objects ---- */

static void req_free(wp_http_req *req)
{
    if (!req)
        return;
    wp_http_match_free(&req->match);
    free(req->target);
    free(req->path);
    free(req->hnames);
    free(req->hvalues);
    wp_buf_free(&req->body);
    wp_buf_free(&req->rh);
    free(req);
}

static void hc_reset_parse_state(http_conn *hc)
{
    wp_buf_reset(&hc->hraw);
    hc->nh = 0;
    hc->url_len = 0;
    hc->in_field = hc->in_value = 0;
    hc->hdr_bytes = 0;
    hc->raw_hdr_bytes = 0;
    hc->headers_done = 0;
}

/* ---- llhttp callbacks (record only) ---- */

static int cb_fail(http_conn *hc, int status, const char *code, const char *msg)
{
    if (!hc->err_status) {
        hc->err_status = status;
        hc->err_code = code;
        hc->err_msg = msg;
    }
    return HPE_USER;
}

static int on_message_begin(llhttp_t *p)
{
    http_conn *hc = p->data;
    hc_reset_parse_state(hc);
    wp_http_req *req = calloc(1, sizeof(*req));
    if (!req)
        return cb_fail(hc, 500, "internal", "out of memory");
    req->hc = hc;
    req->srv = hc->srv;
    req->t_start = uv_now(hc->srv->loop);
    wp_buf_init(&req->body, hc->srv->lim.max_body + 1);
    wp_buf_init(&req->rh, HTTP_RESP_HDR_MAX);
    hc->req = req;
    if (hc->tmode == TM_IDLE || hc->tmode == TM_NONE)
        hc_timer(hc, TM_HEADER, hc->srv->lim.header_timeout_ms);
    return 0;
}

static int hraw_put(http_conn *hc, const char *at, size_t n)
{
    hc->hdr_bytes += n;
    if (hc->hdr_bytes > hc->srv->lim.max_header_bytes)
        return cb_fail(hc, 431, "header_too_large", "request headers too large");
    if (wp_buf_put(&hc->hraw, at, n) < 0)
        return cb_fail(hc, 431, "header_too_large", "request headers too large");
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    http_conn *hc = p->data;
    hc->url_len += n;
    if (hc->url_len > hc->srv->lim.max_url)
        return cb_fail(hc, 414, "uri_too_long", "request target too long");
    return hraw_put(hc, at, n);
}

static int on_url_complete(llhttp_t *p)
{
    http_conn *hc = p->data;
    int rc = hraw_put(hc, "", 1);
    hc->hdr_bytes += 16; /* method, version, separators */
    return rc;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    http_conn *hc = p->data;
    if (!hc->in_field) {
        if (hc->nh >= hc->srv->lim.max_headers)
            return cb_fail(hc, 431, "header_too_large", "too many request headers");
        if (hc->nh == hc->hcap) {
            size_t nc = hc->hcap ? hc->hcap * 2 : 16;
            if (nc > hc->srv->lim.max_headers)
                nc = hc->srv->lim.max_headers;
            void *nn = realloc(hc->hoff, nc * sizeof(*hc->hoff));
            if (!nn)
                return cb_fail(hc, 500, "internal", "out of memory");
            hc->hoff = nn;
            hc->hcap = nc;
        }
        hc->in_field = 1;
        hc->field_start = wp_buf_len(&hc->hraw);
        hc->hdr_bytes += 4; /* ": " and CRLF */
    }
    return hraw_put(hc, at, n);
}

static int on_header_field_complete(llhttp_t *p)
{
    http_conn *hc = p->data;
    /* llhttp 8.1 accepts a header line that starts with ':' (an empty name). */
    if (wp_buf_len(&hc->hraw) == hc->field_start)
        return cb_fail(hc, 400, "bad_request", "empty header name");
    hc->in_field = 0;
    hc->in_value = 1;
    hc->value_spans = 0;
    int rc = hraw_put(hc, "", 1);
    hc->value_start = wp_buf_len(&hc->hraw);
    return rc;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    http_conn *hc = p->data;
    /* A value arrives in several spans only when it crosses the end of the input
     * (the span ends at exec_end and the next starts at the next exec_start).
     * Anything else is an obs-fold, which llhttp 8 accepts: reject it. */
    if (hc->value_spans > 0 && !(hc->last_span_at_end && at == hc->exec_start))
        return cb_fail(hc, 400, "bad_request", "obsolete line folding");
    hc->last_span_at_end = at + n == hc->exec_end;
    hc->value_spans++;
    return hraw_put(hc, at, n);
}

static int on_header_value_complete(llhttp_t *p)
{
    http_conn *hc = p->data;
    if (!hc->in_value) /* value_complete without a field: cannot happen, be safe */
        return cb_fail(hc, 400, "bad_request", "malformed header");
    /* defence in depth: a value holding CR/LF is obs-fold or smuggling in a lenient parser */
    const uint8_t *v = wp_buf_ptr(&hc->hraw);
    for (size_t i = hc->value_start; v && i < wp_buf_len(&hc->hraw); i++)
        if (v[i] == '\r' || v[i] == '\n' || v[i] == '\0')
            return cb_fail(hc, 400, "bad_request", "invalid header value");
    int rc = hraw_put(hc, "", 1);
    if (rc)
        return rc;
    hc->hoff[hc->nh][0] = hc->field_start;
    hc->hoff[hc->nh][1] = hc->value_start;
    hc->nh++;
    hc->in_value = 0;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    http_conn *hc = p->data;
    hc->headers_done = 1;
    hc->ev = EV_HEADERS;
    return HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    http_conn *hc = p->data;
    wp_http_req *req = hc->req;
    if (!req || n == 0) /* llhttp reports empty spans after a pause/resume */
        return 0;
    if (req->body_expected && hc->srv->lim.body_timeout_ms)
        hc_timer(hc, TM_BODY, hc->srv->lim.body_timeout_ms);
    if (req->flags & WP_HTTP_ROUTE_STREAM_BODY) {
        if (req->body_data && !req->finished)
            req->body_data(req, (const uint8_t *)at, n, req->body_ud);
        if (hc->dead || hc->hijacked)
            return HPE_USER;
        if (req->body_paused) {
            hc->ev = EV_BODY_PAUSE;
            return HPE_PAUSED;
        }
        return 0;
    }
    if (req->server_answered)
        return 0;
    if (wp_buf_put(&req->body, at, n) < 0 || wp_buf_len(&req->body) > hc->srv->lim.max_body)
        return cb_fail(hc, 413, "body_too_large", "request body too large");
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    http_conn *hc = p->data;
    hc->ev = EV_MESSAGE;
    if (llhttp_get_upgrade(p))
        return 0; /* llhttp pauses with HPE_PAUSED_UPGRADE */
    return HPE_PAUSED;
}

static void http_settings_init(void)
{
    if (http_settings_ready)
        return;
    llhttp_settings_init(&http_settings);
    http_settings.on_message_begin = on_message_begin;
    http_settings.on_url = on_url;
    http_settings.on_url_complete = on_url_complete;
    http_settings.on_header_field = on_header_field;
    http_settings.on_header_field_complete = on_header_field_complete;
    http_settings.on_header_value = on_header_value;
    http_settings.on_header_value_complete = on_header_value_complete;
    http_settings.on_headers_complete = on_headers_complete;
    http_settings.on_body = on_body;
    http_settings.on_message_complete = on_message_complete;
    http_settings_ready = 1;
}

/* ---- response writing ---- */

static int req_conn_ok(wp_http_req *req)
{
    return req->hc && !req->hc->dead && !req->hc->hijacked && req->hc->conn &&
           !wp_conn_is_closing(req->hc->conn);
}

/* Builds the status line + headers. body_len < 0: streaming. */
static int build_head(wp_http_req *req, wp_buf *h, int status, const char *ctype,
                      long long body_len)
{
    char date[64];
    http_date(date);
    int rc =
        wp_buf_putf(h, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status, wp_http_status_text(status), date);
    if (rc == 0 && wp_buf_len(&req->rh))
        rc = wp_buf_put(h, wp_buf_ptr(&req->rh), wp_buf_len(&req->rh));
    if (rc == 0 && ctype)
        rc = wp_buf_putf(h, "Content-Type: %s\r\n", ctype);
    int no_body = status < 200 || status == 204 || status == 304;
    if (rc == 0 && !no_body) {
        if (body_len >= 0)
            rc = wp_buf_putf(h, "Content-Length: %lld\r\n", body_len);
        else if (req->chunked)
            rc = wp_buf_put_str(h, "Transfer-Encoding: chunked\r\n");
    }
    if (rc == 0) {
        if (req->close_after)
            rc = wp_buf_put_str(h, "Connection: close\r\n");
        else if (req->minor == 0)
            rc = wp_buf_put_str(h, "Connection: keep-alive\r\n");
    }
    if (rc == 0)
        rc = wp_buf_put_str(h, "\r\n");
    return rc;
}

/* Whether the connection must close after this response. */
static void decide_close(wp_http_req *req)
{
    http_conn *hc = req->hc;
    if (!req->keep_alive || req->upgrade || req->server_answered || hc->eof || hc->srv->closing ||
        (!req->msg_done && req->body_expected))
        req->close_after = 1;
}

int wp_http_resp_header(wp_http_req *req, const char *name, const char *value)
{
    if (!req || !name || !value || !*name)
        return WP_ERR_INVAL;
    if (req->started || req->finished)
        return WP_ERR_STATE;
    for (const char *c = name; *c; c++)
        if (!is_tchar(*c))
            return WP_ERR_INVAL;
    if (!value_ok(value))
        return WP_ERR_INVAL;
    if (!strcasecmp(name, "Content-Length") || !strcasecmp(name, "Transfer-Encoding") ||
        !strcasecmp(name, "Connection") || !strcasecmp(name, "Date"))
        return WP_ERR_INVAL;
    return wp_buf_putf(&req->rh, "%s: %s\r\n", name, value);
}

static void req_log(wp_http_req *req)
{
    if (!wp_log_enabled(WP_LOG_DEBUG))
        return;
    wp_log_debug("http request", WP_LS("method", req->method ? req->method : "-"),
                 WP_LS("path", req->path ? req->path : "-"), WP_LI("status", req->status),
                 WP_LI("bytes", req->bytes_out), WP_LI("ms", uv_now(req->srv->loop) - req->t_start),
                 WP_LS("peer", wp_http_req_remote_addr(req)));
}

int wp_http_respond(wp_http_req *req, int status, const char *content_type, const void *body,
                    size_t len)
{
    if (!req)
        return WP_ERR_INVAL;
    if (req->finished || req->started)
        return WP_ERR_STATE;
    if (status < 100 || status > 999 || (content_type && !value_ok(content_type)) ||
        (len && !body)) {
        return WP_ERR_INVAL;
    }
    req->status = status;
    if (!req_conn_ok(req) || req->server_answered) {
        req->finished = 1;
        http_finish_resp(req);
        return WP_ERR_CLOSED;
    }
    decide_close(req);
    req->started = 1;
    wp_buf head;
    wp_buf_init(&head, HTTP_HEAD_MAX);
    int rc = build_head(req, &head, status, content_type, (long long)len);
    if (rc == 0) {
        int no_body = req->is_head || status < 200 || status == 204 || status == 304;
        uv_buf_t b[2] = {
            uv_buf_init((char *)wp_buf_mutable_ptr(&head), (unsigned)wp_buf_len(&head)),
            uv_buf_init((char *)(uintptr_t)body, (unsigned)len)};
        rc = wp_conn_writev(req->hc->conn, b, no_body || len == 0 ? 1 : 2);
        if (rc == 0)
            req->bytes_out = wp_buf_len(&head) + (no_body ? 0 : len);
    }
    wp_buf_free(&head);
    req->finished = 1;
    if (rc < 0) {
        hc_kill(req->hc);
        http_finish_resp(req);
        return rc;
    }
    return http_finish_resp(req);
}

int wp_http_respond_json(wp_http_req *req, int status, const cJSON *json)
{
    if (!req || !json)
        return WP_ERR_INVAL;
    char *s = cJSON_PrintUnformatted(json);
    if (!s) {
        if (!req->finished && !req->started)
            wp_http_respond(req, 500, "application/json", "", 0);
        return WP_ERR_NOMEM;
    }
    int rc = wp_http_respond(req, status, "application/json", s, strlen(s));
    free(s);
    return rc;
}

static char *error_body(const char *code, const char *message)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(root, "error");
    char *s = NULL;
    if (e && cJSON_AddStringToObject(e, "code", code ? code : "error") &&
        cJSON_AddStringToObject(e, "message", message ? message : ""))
        s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

int wp_http_respond_error(wp_http_req *req, int status, const char *code, const char *message)
{
    if (!req)
        return WP_ERR_INVAL;
    char *s = error_body(code, message);
    if (!s) {
        static const char fallback[] = "{\"error\":{\"code\":\"internal\",\"message\":\"\"}}";
        return wp_http_respond(req, status, "application/json", fallback, sizeof(fallback) - 1);
    }
    int rc = wp_http_respond(req, status, "application/json", s, strlen(s));
    free(s);
    return rc;
}

static int http_resp_begin(wp_http_req *req, int status, const char *content_type, long long len)
{
    if (!req)
        return WP_ERR_INVAL;
    if (req->finished || req->started)
        return WP_ERR_STATE;
    if (status < 200 || status > 999 || status == 204 || status == 304 ||
        (content_type && !value_ok(content_type)))
        return WP_ERR_INVAL;
    req->status = status;
    if (!req_conn_ok(req) || req->server_answered)
        return WP_ERR_CLOSED;
    if (len >= 0)
        ; /* Content-Length framing */
    else if (req->minor == 0)
        req->close_after = 1; /* close-delimited */
    else
        req->chunked = 1;
    decide_close(req);
    wp_buf head;
    wp_buf_init(&head, HTTP_HEAD_MAX);
    int rc = build_head(req, &head, status, content_type, len);
    if (rc == 0)
        rc = wp_conn_write(req->hc->conn, wp_buf_ptr(&head), wp_buf_len(&head));
    if (rc == 0)
        req->bytes_out += wp_buf_len(&head);
    wp_buf_free(&head);
    if (rc < 0) {
        hc_kill(req->hc);
        return WP_ERR_CLOSED;
    }
    req->started = 1;
    return 0;
}

int wp_http_resp_begin(wp_http_req *req, int status, const char *content_type)
{
    return http_resp_begin(req, status, content_type, -1);
}

int wp_http_resp_begin_length(wp_http_req *req, int status, const char *content_type, uint64_t len)
{
    if (len > (uint64_t)INT64_MAX)
        return WP_ERR_INVAL;
    return http_resp_begin(req, status, content_type, (long long)len);
}

void wp_http_resp_abort(wp_http_req *req)
{
    if (!req || req->finished)
        return;
    req->finished = 1;
    if (req->hc)
        hc_kill(req->hc);
}

int wp_http_resp_write(wp_http_req *req, const void *data, size_t len)
{
    if (!req || (len && !data))
        return WP_ERR_INVAL;
    if (!req->started || req->finished)
        return WP_ERR_STATE;
    if (!req_conn_ok(req))
        return WP_ERR_CLOSED;
    if (len == 0 || req->is_head)
        return 0;
    int rc;
    if (req->chunked) {
        char hdr[24];
        int hn = snprintf(hdr, sizeof(hdr), "%zx\r\n", len);
        uv_buf_t b[3] = {uv_buf_init(hdr, (unsigned)hn),
                         uv_buf_init((char *)(uintptr_t)data, (unsigned)len),
                         uv_buf_init((char *)"\r\n", 2)};
        rc = wp_conn_writev(req->hc->conn, b, 3);
    } else {
        rc = wp_conn_write(req->hc->conn, data, len);
    }
    if (rc == 0)
        req->bytes_out += len;
    else if (rc != WP_ERR_LIMIT)
        rc = WP_ERR_CLOSED;
    return rc;
}

int wp_http_resp_end(wp_http_req *req)
{
    if (!req)
        return WP_ERR_INVAL;
    if (!req->started || req->finished)
        return WP_ERR_STATE;
    req->finished = 1;
    int rc = 0;
    if (!req_conn_ok(req)) {
        rc = WP_ERR_CLOSED;
    } else if (req->chunked && !req->is_head) {
        rc = wp_conn_write_ctl(req->hc->conn, "0\r\n\r\n", 5);
    }
    int frc = http_finish_resp(req);
    return rc < 0 ? rc : frc;
}

void wp_http_resp_on_drain(wp_http_req *req, void (*cb)(wp_http_req *req, void *ud), void *ud)
{
    req->drain_cb = cb;
    req->drain_ud = ud;
}

/* The handler finished req (answered). Continue the connection outside the handler stack. */
static int http_finish_resp(wp_http_req *req)
{
    http_conn *hc = req->hc;
    if (!hc)
        return 0;
    int closed = hc->dead || hc->hijacked;
    if (!closed && req->body_paused) {
        /* answered: the handler no longer holds the body back (it is read and dropped, or the
         * connection closes when a body was still due) */
        req->body_paused = 0;
        if (!hc->read_blocked && hc->conn)
            wp_conn_read_start(hc->conn);
    }
    if (!closed && !hc->in_process)
        hc_process(hc);
    return closed ? WP_ERR_CLOSED : 0;
}

/* ---- server-generated errors ---- */

static void hc_error(http_conn *hc, int status, const char *code, const char *msg)
{
    if (hc->dead || hc->lingering || hc->hijacked)
        return;
    wp_http_req *req = hc->req;
    if (req && (req->started || (req->finished && !req->server_answered))) {
        hc_kill(hc); /* a response is on the wire: cannot answer, just close */
        return;
    }
    if (!hc->conn || (hc->conn && wp_conn_is_tls(hc->conn) && !hc->ready)) {
        hc_kill(hc);
        return;
    }
    char *body = error_body(code, msg);
    char date[64];
    http_date(date);
    wp_buf h;
    wp_buf_init(&h, 1024);
    int rc = wp_buf_putf(&h,
                         "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                         status, wp_http_status_text(status), date, body ? strlen(body) : 0,
                         body ? body : "");
    free(body);
    if (rc == 0)
        rc = wp_conn_write_ctl(hc->conn, wp_buf_ptr(&h), wp_buf_len(&h));
    if (req) {
        req->status = status;
        req->bytes_out = wp_buf_len(&h);
        req->server_answered = 1;
        req_log(req);
    }
    wp_buf_free(&h);
    wp_log_debug("http error", WP_LI("status", status), WP_LS("code", code),
                 WP_LS("peer", hc->conn ? wp_conn_peer_str(hc->conn) : ""));
    if (rc < 0)
        hc_kill(hc);
    else
        hc_start_close(hc);
}

/* ---- connection lifecycle ---- */

static void hc_untrack(http_conn *hc)
{
    wp_http_server *s = hc->srv;
    if (hc->prev)
        hc->prev->next = hc->next;
    else if (s->conns == hc)
        s->conns = hc->next;
    if (hc->next)
        hc->next->prev = hc->prev;
    hc->prev = hc->next = NULL;
    s->nconns--;
}

static void hc_timer_close_cb(uv_handle_t *h)
{
    http_conn *hc = h->data;
    wp_http_server *s = hc->srv;
    req_free(hc->req);
    wp_buf_free(&hc->in);
    wp_buf_free(&hc->hraw);
    free(hc->hoff);
    free(hc);
    server_item_done(s);
}

/* Hard close now (no more answers). */
static void hc_kill(http_conn *hc)
{
    if (hc->dead)
        return;
    hc->dead = 1;
    if (hc->conn)
        wp_conn_close(hc->conn);
}

/* Graceful close: flush, FIN, discard input until EOF or the queue stops draining. */
static void hc_start_close(http_conn *hc)
{
    if (hc->dead || hc->lingering)
        return;
    hc->lingering = 1;
    if (!hc->conn) {
        hc_kill(hc);
        return;
    }
    wp_conn_shutdown(hc->conn);
    wp_conn_read_start(hc->conn);
    hc->linger_last = (size_t)-1;
    hc_timer(hc, TM_LINGER, HTTP_LINGER_MS);
}

static void hc_on_close(wp_conn *c, void *ud)
{
    http_conn *hc = ud;
    (void)c;
    hc->dead = 1;
    hc->conn = NULL;
    hc_untrack(hc);
    wp_http_req *req = hc->req;
    if (req) {
        req->hc = NULL;
        if (req->dispatched && !req->finished && req->abort_cb) {
            req->finished = 1;
            req->abort_cb(req, req->abort_ud);
        }
    }
    uv_close((uv_handle_t *)&hc->timer, hc_timer_close_cb);
}

static void hc_on_error(wp_conn *c, int err, void *ud)
{
    (void)c;
    (void)err;
    http_conn *hc = ud;
    hc->dead = 1;
}

static void hc_on_eof(wp_conn *c, void *ud)
{
    http_conn *hc = ud;
    hc->eof = 1;
    /* The peer is gone (half-closed clients are treated as gone, as most servers do):
     * an outstanding handler gets on_abort; otherwise flush what is queued, then close. */
    if (hc->lingering || !hc->conn || wp_conn_write_queued(c) == 0 ||
        (hc->req && hc->req->dispatched && !hc->req->finished)) {
        hc_kill(hc);
        return;
    }
    hc_start_close(hc);
}

static void hc_on_drain(wp_conn *c, void *ud)
{
    http_conn *hc = ud;
    (void)c;
    if (hc->req && hc->req->started && !hc->req->finished && hc->req->drain_cb)
        hc->req->drain_cb(hc->req, hc->req->drain_ud);
}

static void hc_on_data(wp_conn *c, const uint8_t *p, size_t n, void *ud)
{
    http_conn *hc = ud;
    if (hc->dead || hc->hijacked || hc->lingering)
        return; /* lingering: discard */
    if (wp_buf_put(&hc->in, p, n) < 0) {
        hc_kill(hc);
        return;
    }
    if (wp_buf_len(&hc->in) >= hc->srv->lim.max_pending_bytes) {
        wp_conn_read_stop(c);
        hc->read_blocked = 1;
    }
    hc_process(hc);
}

static void hc_on_ready(wp_conn *c, void *ud)
{
    http_conn *hc = ud;
    (void)c;
    hc->ready = 1;
    hc_timer(hc, TM_HEADER, hc->srv->lim.header_timeout_ms);
}

static const wp_conn_callbacks hc_cbs = {.on_ready = hc_on_ready,
                                         .on_data = hc_on_data,
                                         .on_eof = hc_on_eof,
                                         .on_error = hc_on_error,
                                         .on_drain = hc_on_drain,
                                         .on_close = hc_on_close};

/* ---- request processing ---- */

static const char *req_find_header(const wp_http_req *req, const char *name, size_t *count)
{
    const char *first = NULL;
    size_t n = 0;
    for (size_t i = 0; i < req->nhdr; i++)
        if (strcasecmp(req->hnames[i], name) == 0) {
            if (!first)
                first = req->hvalues[i];
            n++;
        }
    if (count)
        *count = n;
    return first;
}

static void http_default_fallback(wp_http_req *req, void *ud)
{
    (void)ud;
    char msg[300];
    snprintf(msg, sizeof(msg), "no route for %s %.200s", req->method, req->path);
    wp_http_respond_error(req, 404, "not_found", msg);
}

static void http_method_not_allowed(wp_http_req *req, void *ud)
{
    (void)ud;
    if (req->match.allow[0])
        wp_http_resp_header(req, "Allow", req->match.allow);
    char msg[300];
    snprintf(msg, sizeof(msg), "method %s not allowed for %.200s", req->method, req->path);
    wp_http_respond_error(req, 405, "method_not_allowed", msg);
}

/* Headers are complete: build the request view and decide. Returns 0 to go on, <0 after an
 * error answer. */
static int hc_on_headers(http_conn *hc)
{
    wp_http_server *s = hc->srv;
    wp_http_req *req = hc->req;
    llhttp_t *p = &hc->parser;
    if (hc->raw_hdr_bytes > s->lim.max_header_bytes) {
        hc_error(hc, 431, "header_too_large", "request headers too large");
        return -1;
    }
    const char *arena = (const char *)wp_buf_ptr(&hc->hraw);
    req->method = llhttp_method_name((llhttp_method_t)llhttp_get_method(p));
    req->minor = llhttp_get_http_minor(p);
    req->keep_alive = llhttp_should_keep_alive(p);
    req->is_head = llhttp_get_method(p) == HTTP_HEAD;
    req->is_connect = llhttp_get_method(p) == HTTP_CONNECT;
    req->upgrade = llhttp_get_upgrade(p);
    req->target = strdup(arena ? arena : "");
    req->hnames = calloc(hc->nh + 1, sizeof(char *));
    req->hvalues = calloc(hc->nh + 1, sizeof(char *));
    if (!req->target || !req->hnames || !req->hvalues) {
        hc_error(hc, 500, "internal", "out of memory");
        return -1;
    }
    for (size_t i = 0; i < hc->nh; i++) {
        req->hnames[i] = arena + hc->hoff[i][0];
        req->hvalues[i] = arena + hc->hoff[i][1];
    }
    req->nhdr = hc->nh;
    if (llhttp_get_http_major(p) != 1) {
        hc_error(hc, 400, "bad_request", "unsupported HTTP version");
        return -1;
    }
    /* target and path */
    if (req->is_connect) {
        req->path = strdup(req->target);
        req->query = "";
    } else {
        if (req->target[0] != '/') {
            hc_error(hc, 400, "bad_request", "request target must be an absolute path");
            return -1;
        }
        char *q = strchr(req->target, '?');
        size_t pl = q ? (size_t)(q - req->target) : strlen(req->target);
        req->path = strndup(req->target, pl);
        req->query = q ? q + 1 : "";
        char *frag = strchr(req->target, '#');
        if (frag) {
            hc_error(hc, 400, "bad_request", "fragment in request target");
            return -1;
        }
    }
    if (!req->path) {
        hc_error(hc, 500, "internal", "out of memory");
        return -1;
    }
    /* framing: smuggling defences on top of llhttp's strict mode */
    size_t n_te = 0, n_cl = 0;
    const char *te = req_find_header(req, "transfer-encoding", &n_te);
    req_find_header(req, "content-length", &n_cl);
    if (n_te && n_cl) {
        hc_error(hc, 400, "bad_request", "Content-Length with Transfer-Encoding");
        return -1;
    }
    if (n_cl > 1) {
        hc_error(hc, 400, "bad_request", "multiple Content-Length headers");
        return -1;
    }
    if (n_te > 1 || (te && strcasecmp(te, "chunked") != 0)) {
        hc_error(hc, 501, "not_implemented", "unsupported Transfer-Encoding");
        return -1;
    }
    int chunked = (p->flags & F_CHUNKED) != 0;
    req->body_expected = chunked || p->content_length > 0;
    /* expectations */
    size_t n_exp = 0;
    const char *exp = req_find_header(req, "expect", &n_exp);
    if (exp) {
        if (n_exp > 1 || strcasecmp(exp, "100-continue") != 0) {
            hc_error(hc, 417, "expectation_failed", "unsupported expectation");
            return -1;
        }
        req->expect_continue = req->minor >= 1 && req->body_expected;
    }
    /* routing */
    if (req->is_connect) {
        if (s->connect_h) {
            req->handler = s->connect_h;
            req->handler_ud = s->connect_ud;
            req->flags = WP_HTTP_ROUTE_UPGRADE;
        } else {
            req->handler = http_method_not_allowed;
            snprintf(req->match.allow, sizeof(req->match.allow), "%s", "");
        }
    } else {
        int rc = wp_http_router_match(&s->router, req->method, req->path, &req->match);
        if (rc == 0) {
            req->handler = req->match.route->h;
            req->handler_ud = req->match.route->ud;
            req->flags = req->match.route->flags;
        } else if (rc == WP_ERR_UNSUPPORTED) {
            req->handler = http_method_not_allowed;
        } else if (rc == WP_ERR_NOT_FOUND) {
            req->handler = s->fallback ? s->fallback : http_default_fallback;
            req->handler_ud = s->fallback ? s->fallback_ud : NULL;
        } else if (rc == WP_ERR_INVAL) {
            hc_error(hc, 400, "bad_request", "invalid path parameter");
            return -1;
        } else {
            hc_error(hc, 500, "internal", "out of memory");
            return -1;
        }
    }
    if (!(req->flags & WP_HTTP_ROUTE_STREAM_BODY) && (p->flags & F_CONTENT_LENGTH) &&
        p->content_length > s->lim.max_body) {
        hc_error(hc, 413, "body_too_large", "request body too large");
        return -1;
    }
    if (req->expect_continue) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (wp_conn_write_ctl(hc->conn, cont, sizeof(cont) - 1) < 0) {
            hc_kill(hc);
            return -1;
        }
    }
    if (req->body_expected && s->lim.body_timeout_ms)
        hc_timer(hc, TM_BODY, s->lim.body_timeout_ms);
    else
        hc_timer(hc, TM_NONE, 0);
    if (req->flags & WP_HTTP_ROUTE_STREAM_BODY) {
        req->dispatched = 1;
        req->handler(req, req->handler_ud);
    }
    return 0;
}

/* The whole request has arrived. */
static void hc_on_message(http_conn *hc)
{
    wp_http_req *req = hc->req;
    req->msg_done = 1;
    if (hc->tmode == TM_BODY || hc->tmode == TM_HEADER)
        hc_timer(hc, TM_NONE, 0);
    if (req->flags & WP_HTTP_ROUTE_STREAM_BODY) {
        if (req->body_end && !req->on_end_called && !req->finished) {
            req->on_end_called = 1;
            req->body_end(req, req->body_ud);
        }
        return;
    }
    /* NUL-terminate the buffered body (not counted in its length) */
    if (wp_buf_put_u8(&req->body, 0) < 0) {
        hc_error(hc, 413, "body_too_large", "request body too large");
        return;
    }
    req->body.end--;
    if (!req->dispatched) {
        req->dispatched = 1;
        req->handler(req, req->handler_ud);
    }
}

/* The current request is answered and read: free it, keep the connection or close it. */
static void hc_request_done(http_conn *hc)
{
    wp_http_req *req = hc->req;
    req_log(req);
    int close_after = req->close_after;
    req_free(req);
    hc->req = NULL;
    hc->served = 1;
    hc_reset_parse_state(hc);
    if (close_after) {
        hc_start_close(hc);
        return;
    }
    hc_timer(hc, TM_IDLE, hc->srv->lim.idle_timeout_ms);
}

static int map_parse_error(http_conn *hc, llhttp_errno_t e, int *status, const char **code,
                           const char **msg)
{
    if (hc->err_status) {
        *status = hc->err_status;
        *code = hc->err_code;
        *msg = hc->err_msg;
        return 0;
    }
    *status = 400;
    *code = "bad_request";
    switch (e) {
    case HPE_INVALID_CHUNK_SIZE:
        *msg = "invalid chunked encoding";
        break;
    case HPE_INVALID_TRANSFER_ENCODING:
        *status = 501;
        *code = "not_implemented";
        *msg = "unsupported Transfer-Encoding";
        break;
    case HPE_UNEXPECTED_CONTENT_LENGTH:
    case HPE_INVALID_CONTENT_LENGTH:
        *msg = "invalid Content-Length";
        break;
    case HPE_INVALID_METHOD:
        *msg = "unknown method";
        break;
    default:
        *msg = "malformed request";
        break;
    }
    return 0;
}

static void hc_process(http_conn *hc)
{
    if (hc->in_process) {
        hc->reprocess = 1;
        return;
    }
    hc->in_process = 1;
    wp_http_server *s = hc->srv;
    do {
        hc->reprocess = 0;
        while (!hc->dead && !hc->hijacked && !hc->lingering) {
            wp_http_req *req = hc->req;
            if (req && req->msg_done) {
                if (req->finished) {
                    hc_request_done(hc);
                    continue;
                }
                break; /* waiting for the handler's response */
            }
            if (req && req->finished && !req->msg_done && req->close_after) {
                /* answered before its body was read: do not read an unbounded body */
                req_log(req);
                hc_start_close(hc);
                break;
            }
            if (req && req->body_paused)
                break;
            size_t n = wp_buf_len(&hc->in);
            if (n == 0 && !hc->need_exec)
                break;
            /* after a pause llhttp may have work left that needs no input (e.g. message
             * complete right after the headers): run it with an empty span */
            hc->need_exec = 0;
            const char *p = n ? (const char *)wp_buf_ptr(&hc->in) : "";
            hc->ev = EV_NONE;
            hc->exec_start = p;
            hc->exec_end = p + n;
            llhttp_errno_t e = llhttp_execute(&hc->parser, p, n);
            size_t used = n;
            if (e != HPE_OK) {
                const char *ep = llhttp_get_error_pos(&hc->parser);
                used = ep && ep >= p && ep <= p + n ? (size_t)(ep - p) : n;
            }
            if (hc->req && !hc->headers_done) {
                hc->raw_hdr_bytes += used;
            } else if (hc->ev == EV_HEADERS) {
                hc->raw_hdr_bytes += used;
            }
            wp_buf_consume(&hc->in, used);
            if (hc->dead || hc->hijacked)
                break;
            if (e == HPE_OK) {
                if (hc->req && !hc->headers_done && hc->raw_hdr_bytes > s->lim.max_header_bytes) {
                    hc_error(hc, 431, "header_too_large", "request headers too large");
                    break;
                }
                continue;
            }
            if (e == HPE_PAUSED) {
                llhttp_resume(&hc->parser);
                hc->need_exec = 1;
                if (hc->ev == EV_HEADERS) {
                    if (hc_on_headers(hc) < 0)
                        break;
                } else if (hc->ev == EV_MESSAGE) {
                    hc_on_message(hc);
                }
                continue;
            }
            if (e == HPE_PAUSED_UPGRADE) {
                /* request complete; what follows belongs to another protocol (left in `in`) */
                if (hc->req)
                    hc->req->close_after = 1; /* never parse HTTP after an upgrade request */
                hc_on_message(hc);
                continue;
            }
            int status;
            const char *code, *msg;
            map_parse_error(hc, e, &status, &code, &msg);
            hc_error(hc, status, code, msg);
            break;
        }
    } while (hc->reprocess && !hc->dead && !hc->hijacked);
    hc->in_process = 0;
    if (hc->read_blocked && !hc->dead && !hc->hijacked && !hc->lingering &&
        wp_buf_len(&hc->in) < s->lim.max_pending_bytes && !(hc->req && hc->req->body_paused)) {
        hc->read_blocked = 0;
        wp_conn_read_start(hc->conn);
    }
}

/* ---- accept / listen ---- */

static void stray_close_cb(uv_handle_t *h)
{
    wp_http_server *s = h->data;
    free(h);
    server_item_done(s);
}

static void srv_on_connection(uv_stream_t *l, int status)
{
    http_listener *hl = l->data;
    wp_http_server *s = hl->srv;
    if (status < 0 || s->closing)
        return;
    if (s->nconns >= s->lim.max_connections) {
        uv_tcp_t *t = malloc(sizeof(*t));
        if (!t)
            return;
        uv_tcp_init(s->loop, t);
        t->data = s;
        s->open_items++;
        uv_accept(l, (uv_stream_t *)t);
        uv_close((uv_handle_t *)t, stray_close_cb);
        wp_log_debug("http connection limit reached, closing new connection");
        return;
    }
    http_conn *hc = calloc(1, sizeof(*hc));
    if (!hc)
        return;
    hc->srv = s;
    wp_conn *c = NULL;
    int rc = wp_conn_accept(l, s->tls, &s->gate, &s->clim, &hc_cbs, hc, &c);
    if (rc < 0) {
        free(hc);
        return;
    }
    hc->conn = c;
    uv_timer_init(s->loop, &hc->timer);
    hc->timer.data = hc;
    llhttp_init(&hc->parser, HTTP_REQUEST, &http_settings);
    hc->parser.data = hc;
    wp_buf_init(&hc->in, s->lim.max_pending_bytes + HTTP_READ_SLACK);
    wp_buf_init(&hc->hraw, s->lim.max_header_bytes + s->lim.max_headers * 2 + 64);
    hc->next = s->conns;
    if (s->conns)
        s->conns->prev = hc;
    s->conns = hc;
    s->nconns++;
    s->open_items++;
    if (!wp_conn_is_tls(c)) {
        hc->ready = 1;
        hc_timer(hc, TM_HEADER, s->lim.header_timeout_ms);
    }
}

int wp_http_server_new(wp_http_server **out, uv_loop_t *loop, const wp_http_limits *lim)
{
    if (!out || !loop)
        return WP_ERR_INVAL;
    wp_http_server *s = calloc(1, sizeof(*s));
    if (!s)
        return WP_ERR_NOMEM;
    http_settings_init();
#if !LLHTTP_STRICT_MODE
    static int warned;
    if (!warned) {
        warned = 1;
        wp_log_warn("llhttp built without LLHTTP_STRICT_MODE: the CRLF after chunk data is not "
                    "validated (build llhttp with -DLLHTTP_STRICT_MODE=1)");
    }
#endif
    s->loop = loop;
    wp_http_limits d;
    wp_http_limits_default(&d);
    if (lim) {
        s->lim = *lim;
#define WP_DEF_(f)                                                                                 \
    if (!s->lim.f)                                                                                 \
    s->lim.f = d.f
        WP_DEF_(max_header_bytes);
        WP_DEF_(max_headers);
        WP_DEF_(max_url);
        WP_DEF_(max_body);
        WP_DEF_(header_timeout_ms);
        WP_DEF_(idle_timeout_ms);
        WP_DEF_(body_timeout_ms);
        WP_DEF_(max_connections);
        WP_DEF_(max_pending_bytes);
        WP_DEF_(max_write_queue);
        WP_DEF_(max_handshakes);
        WP_DEF_(handshake_timeout_ms);
        WP_DEF_(max_handshake_queue);
#undef WP_DEF_
    } else {
        s->lim = d;
    }
    s->clim.max_write_queue = s->lim.max_write_queue;
    s->clim.handshake_timeout_ms = s->lim.handshake_timeout_ms;
    wp_conn_gate_init(&s->gate, s->lim.max_handshakes, s->lim.max_handshake_queue);
    wp_http_router_init(&s->router);
    s->open_items = 1; /* the server itself, released by wp_http_server_close */
    *out = s;
    return 0;
}

int wp_http_server_listen(wp_http_server *s, const char *addr, char *bound, size_t cap)
{
    if (!s || !addr)
        return WP_ERR_INVAL;
    if (s->closing)
        return WP_ERR_STATE;
    struct sockaddr_storage ss;
    socklen_t len;
    if (wp_addr_parse(addr, -1, &ss, &len) < 0)
        return WP_ERR_INVAL;
    http_listener *hl = calloc(1, sizeof(*hl));
    if (!hl)
        return WP_ERR_NOMEM;
    hl->srv = s;
    uv_tcp_init(s->loop, &hl->tcp);
    hl->tcp.data = hl;
    s->open_items++;
    hl->next = s->listeners;
    s->listeners = hl;
    /* libuv sets SO_REUSEADDR on bind */
    int rc = uv_tcp_bind(&hl->tcp, (struct sockaddr *)&ss,
                         ss.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&hl->tcp, 511, srv_on_connection);
    if (rc < 0) {
        wp_log_warn("http listen failed", WP_LS("addr", addr), WP_LS("uv", uv_strerror(rc)));
        return WP_ERR_IO; /* the listener is closed with the server */
    }
    if (bound && cap) {
        struct sockaddr_storage b;
        int bl = (int)sizeof(b);
        bound[0] = '\0';
        if (uv_tcp_getsockname(&hl->tcp, (struct sockaddr *)&b, &bl) == 0)
            wp_addr_format((struct sockaddr *)&b, bound, cap);
    }
    return 0;
}

void wp_http_server_set_tls(wp_http_server *s, wp_tls_conf *conf)
{
    if (conf)
        wp_tls_conf_ref(conf);
    if (s->tls)
        wp_tls_conf_unref(s->tls);
    s->tls = conf;
}

int wp_http_server_route(wp_http_server *s, const char *method, const char *pattern,
                         wp_http_handler h, void *ud, unsigned flags)
{
    if (!s)
        return WP_ERR_INVAL;
    return wp_http_router_add(&s->router, method, pattern, h, ud, flags);
}

void wp_http_server_set_fallback(wp_http_server *s, wp_http_handler h, void *ud)
{
    s->fallback = h;
    s->fallback_ud = ud;
}

void wp_http_server_set_connect_handler(wp_http_server *s, wp_http_handler h, void *ud)
{
    s->connect_h = h;
    s->connect_ud = ud;
}

static void listener_close_cb(uv_handle_t *h)
{
    http_listener *hl = h->data;
    wp_http_server *s = hl->srv;
    free(hl);
    server_item_done(s);
}

void wp_http_server_close(wp_http_server *s, void (*cb)(void *ud), void *ud)
{
    if (!s || s->closing)
        return;
    s->closing = 1;
    s->close_cb = cb;
    s->close_ud = ud;
    for (http_listener *hl = s->listeners, *n; hl; hl = n) {
        n = hl->next;
        uv_close((uv_handle_t *)&hl->tcp, listener_close_cb);
    }
    s->listeners = NULL;
    for (http_conn *hc = s->conns; hc; hc = hc->next)
        hc_kill(hc);
    server_item_done(s); /* the server's own item */
}

size_t wp_http_server_connections(const wp_http_server *s)
{
    return s->nconns;
}

/* ---- request accessors ---- */

const char *wp_http_req_method(const wp_http_req *req)
{
    return req->method ? req->method : "";
}

const char *wp_http_req_path(const wp_http_req *req)
{
    return req->path ? req->path : "";
}

const char *wp_http_req_query(const wp_http_req *req)
{
    return req->query ? req->query : "";
}

int wp_http_req_query_get(const wp_http_req *req, const char *name, char *out, size_t cap)
{
    const char *q = wp_http_req_query(req);
    size_t nl = strlen(name);
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t pl = amp ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', pl);
        size_t kl = eq ? (size_t)(eq - q) : pl;
        char key[256];
        int kn = wp_http_pct_decode(q, kl, key, sizeof(key), 1);
        if (kn >= 0 && (size_t)kn == nl && memcmp(key, name, nl) == 0) {
            const char *v = eq ? eq + 1 : q + pl;
            size_t vl = eq ? pl - kl - 1 : 0;
            return wp_http_pct_decode(v, vl, out, cap, 1);
        }
        if (!amp)
            break;
        q = amp + 1;
    }
    return WP_ERR_NOT_FOUND;
}

const char *wp_http_req_header(const wp_http_req *req, const char *name)
{
    return req_find_header(req, name, NULL);
}

size_t wp_http_req_header_count(const wp_http_req *req)
{
    return req->nhdr;
}

int wp_http_req_header_at(const wp_http_req *req, size_t i, const char **name, const char **value)
{
    if (i >= req->nhdr)
        return WP_ERR_INVAL;
    *name = req->hnames[i];
    *value = req->hvalues[i];
    return 0;
}

const char *wp_http_req_param(const wp_http_req *req, const char *name)
{
    for (size_t i = 0; i < req->match.nparams; i++)
        if (strcmp(req->match.names[i], name) == 0)
            return req->match.values[i];
    return NULL;
}

const char *wp_http_req_body(const wp_http_req *req, size_t *len)
{
    if (req->flags & WP_HTTP_ROUTE_STREAM_BODY) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = wp_buf_len(&req->body);
    return wp_buf_len(&req->body) ? (const char *)wp_buf_ptr(&req->body) : "";
}

int wp_http_req_version_minor(const wp_http_req *req)
{
    return req->minor;
}

const char *wp_http_req_remote_addr(const wp_http_req *req)
{
    if (req->hc && req->hc->conn)
        return wp_conn_peer_str(req->hc->conn);
    return "";
}

wp_conn *wp_http_req_conn(wp_http_req *req)
{
    return req->hc && !req->hc->dead ? req->hc->conn : NULL;
}

void wp_http_req_set_data(wp_http_req *req, void *data)
{
    req->data = data;
}

void *wp_http_req_get_data(const wp_http_req *req)
{
    return req->data;
}

void wp_http_req_on_abort(wp_http_req *req, void (*cb)(wp_http_req *req, void *ud), void *ud)
{
    req->abort_cb = cb;
    req->abort_ud = ud;
}

int wp_http_req_on_body(wp_http_req *req,
                        void (*on_data)(wp_http_req *req, const uint8_t *p, size_t n, void *ud),
                        void (*on_end)(wp_http_req *req, void *ud), void *ud)
{
    if (!(req->flags & WP_HTTP_ROUTE_STREAM_BODY))
        return WP_ERR_STATE;
    req->body_data = on_data;
    req->body_end = on_end;
    req->body_ud = ud;
    return 0;
}

void wp_http_req_pause(wp_http_req *req)
{
    http_conn *hc = req->hc;
    if (req->body_paused || !hc || hc->dead)
        return;
    req->body_paused = 1;
    if (hc->tmode == TM_BODY)
        hc_timer(hc, TM_NONE, 0); /* our own pause must not time the client out */
    wp_conn_read_stop(hc->conn);
}

void wp_http_req_resume(wp_http_req *req)
{
    http_conn *hc = req->hc;
    if (!req->body_paused || !hc || hc->dead)
        return;
    req->body_paused = 0;
    if (!req->msg_done && req->body_expected && hc->srv->lim.body_timeout_ms)
        hc_timer(hc, TM_BODY, hc->srv->lim.body_timeout_ms);
    if (!hc->read_blocked)
        wp_conn_read_start(hc->conn);
    if (!hc->in_process)
        hc_process(hc);
}

int wp_http_req_hijack(wp_http_req *req, wp_conn **out, wp_buf *leftover)
{
    if (!req || !out || !leftover)
        return WP_ERR_INVAL;
    if (!(req->flags & WP_HTTP_ROUTE_UPGRADE) || req->started || req->finished || !req->msg_done)
        return WP_ERR_STATE;
    http_conn *hc = req->hc;
    if (!hc || hc->dead || !hc->conn) {
        req->finished = 1;
        return WP_ERR_CLOSED;
    }
    size_t n = wp_buf_len(&hc->in);
    if (n) {
        int rc = wp_buf_put(leftover, wp_buf_ptr(&hc->in), n);
        if (rc < 0)
            return rc;
        wp_buf_consume(&hc->in, n);
    }
    wp_conn *c = hc->conn;
    wp_conn_read_stop(c);
    wp_conn_set_callbacks(c, NULL, NULL);
    req->finished = 1;
    /* CONNECT was answered 200 by its handler; an upgrade 101 */
    req->status = req->method && strcmp(req->method, "CONNECT") == 0 ? 200 : 101;
    req_log(req);
    hc->hijacked = 1;
    hc->conn = NULL;
    hc_untrack(hc);
    uv_close((uv_handle_t *)&hc->timer, hc_timer_close_cb); /* frees req and hc later */
    *out = c;
    return 0;
}
