/*
 * fuzz_http.c — fuzz target for the HTTP/1.1 server's request handling (common/http.h).
 *
 * Each input is what one client sends on one connection. A real
 * wp_http_server runs in a fresh libuv loop, listening on 127.0.0.1:0 with
 * small limits and these routes:
 *   POST /echo          buffered body, echoed back
 *   PUT  /upload        streaming body (pauses after every other piece and
 *                       resumes from a timer), answered with a chunked response
 *   GET  /items/{id}    a param and a query value, answered with JSON
 *   GET  /files/{path...} a rest param
 *   GET  /async         answered later from a timer (registers on_abort)
 * plus the server's own 404/405/4xx answers. A loopback client writes the
 * input, half-closes, and reads until the server ends the connection; then
 * the server is closed and uv_loop_close() must return 0.
 *
 * Invariants checked:
 *   - handlers only ever see what the API promises: a NUL-terminated body
 *     within max_body, params without '/', NUL or dot segments, header values
 *     without CR/LF, sane query decoding;
 *   - the bytes the client receives are a sequence of well-formed HTTP/1.1
 *     responses (status line, token header names, Date on every final
 *     response, exactly one framing: Content-Length, chunked, or close after
 *     "Connection: close"), at most one per request begun (a reference llhttp
 *     parse of the input tells which requests were HEAD), nothing after a
 *     "Connection: close" response; only the last response may be cut short
 *     (a half-closed client counts as gone);
 *   - the server ends the connection on its own (well before a guard timer),
 *     and closes cleanly.
 */
#include <llhttp.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "addr.h"
#include "err.h"
#include "fuzz.h"
#include "http.h"

#define GUARD_MS    8000u       /* the connection must have ended by then */
#define RESP_MAX    (16u << 20) /* more response bytes than this is runaway output */
#define MAX_REQS    8192u       /* requests the reference parse records */
#define MAX_BODY    4096u
#define PENDING_MAX 4096u

typedef struct hfz {
    uv_loop_t loop;
    wp_http_server *srv;
    uv_tcp_t cli;
    uv_connect_t creq;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    uv_timer_t guard;
    uv_timer_t async_timer;
    uv_timer_t resume_timer;
    wp_http_req *async_req;  /* GET /async waiting for its timer */
    wp_http_req *upload_req; /* PUT /upload in progress */
    int upload_paused;
    size_t upload_bytes, upload_pieces;
    const uint8_t *data;
    size_t size;
    uint8_t *resp;
    size_t resp_len, resp_cap;
    int connected, ended, reset, timed_out, finishing, srv_closed;
} hfz;

/* ---- handler-side checks ---- */

static int is_tchar(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int is_dot(const char *s, size_t n)
{
    return (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.');
}

static void check_req(wp_http_req *req)
{
    const char *m = wp_http_req_method(req);
    WP_FUZZ_CHECK(m && *m);
    for (const char *c = m; *c; c++)
        WP_FUZZ_CHECK(is_tchar((unsigned char)*c));
    const char *path = wp_http_req_path(req);
    WP_FUZZ_CHECK(path[0] == '/' && strchr(path, '?') == NULL && strchr(path, '#') == NULL);
    const char *q = wp_http_req_query(req);
    WP_FUZZ_CHECK(q != NULL && strchr(q, '#') == NULL);
    int minor = wp_http_req_version_minor(req);
    WP_FUZZ_CHECK(minor == 0 || minor == 1);
    size_t nh = wp_http_req_header_count(req);
    WP_FUZZ_CHECK(nh <= 16);
    for (size_t i = 0; i < nh; i++) {
        const char *name = NULL, *value = NULL;
        WP_FUZZ_CHECK(wp_http_req_header_at(req, i, &name, &value) == 0);
        WP_FUZZ_CHECK(name && *name && value);
        for (const char *c = name; *c; c++)
            WP_FUZZ_CHECK(is_tchar((unsigned char)*c));
        WP_FUZZ_CHECK(strpbrk(value, "\r\n") == NULL);
        WP_FUZZ_CHECK(wp_http_req_header(req, name) != NULL);
    }
    const char *dummy1, *dummy2;
    WP_FUZZ_CHECK(wp_http_req_header_at(req, nh, &dummy1, &dummy2) == WP_ERR_INVAL);
    char v[64];
    int qr = wp_http_req_query_get(req, "q", v, sizeof(v));
    WP_FUZZ_CHECK(qr == WP_ERR_NOT_FOUND || qr == WP_ERR_LIMIT || qr == WP_ERR_INVAL ||
                  (qr >= 0 && (size_t)qr < sizeof(v) && strlen(v) == (size_t)qr));
    WP_FUZZ_CHECK(strncmp(wp_http_req_remote_addr(req), "127.0.0.1:", 10) == 0);
}

static void h_echo(wp_http_req *req, void *ud)
{
    (void)ud;
    check_req(req);
    WP_FUZZ_CHECK(strcmp(wp_http_req_method(req), "POST") == 0);
    size_t n = 0;
    const char *b = wp_http_req_body(req, &n);
    WP_FUZZ_CHECK(b != NULL && n <= MAX_BODY && b[n] == '\0');
    WP_FUZZ_CHECK(wp_http_req_param(req, "id") == NULL);
    wp_http_respond(req, 200, "application/octet-stream", n ? b : NULL, n);
}

static void h_item(wp_http_req *req, void *ud)
{
    (void)ud;
    check_req(req);
    const char *id = wp_http_req_param(req, "id");
    WP_FUZZ_CHECK(id != NULL && *id && strchr(id, '/') == NULL && !is_dot(id, strlen(id)));
    cJSON *o = cJSON_CreateObject();
    WP_FUZZ_CHECK(o != NULL);
    cJSON_AddStringToObject(o, "id", id);
    wp_http_respond_json(req, 200, o);
    cJSON_Delete(o);
}

static void h_files(wp_http_req *req, void *ud)
{
    (void)ud;
    check_req(req);
    const char *p = wp_http_req_param(req, "path");
    WP_FUZZ_CHECK(p != NULL);
    for (const char *q = p;;) {
        const char *e = strchr(q, '/');
        WP_FUZZ_CHECK(!is_dot(q, e ? (size_t)(e - q) : strlen(q)));
        if (!e)
            break;
        q = e + 1;
    }
    WP_FUZZ_CHECK(wp_http_resp_header(req, "X-Path-Len", "1") == 0);
    wp_http_respond(req, 200, "text/plain", p, strlen(p));
}

static void async_abort(wp_http_req *req, void *ud)
{
    hfz *c = ud;
    WP_FUZZ_CHECK(c->async_req == req);
    c->async_req = NULL;
}

static void async_fire(uv_timer_t *t)
{
    hfz *c = t->data;
    wp_http_req *req = c->async_req;
    if (!req)
        return;
    c->async_req = NULL;
    int rc = wp_http_respond(req, 200, "text/plain", "later", 5);
    WP_FUZZ_CHECK(rc == 0 || rc == WP_ERR_CLOSED);
}

static void h_async(wp_http_req *req, void *ud)
{
    hfz *c = ud;
    check_req(req);
    WP_FUZZ_CHECK(c->async_req == NULL); /* one request at a time per connection */
    c->async_req = req;
    wp_http_req_on_abort(req, async_abort, c);
    uv_timer_start(&c->async_timer, async_fire, 0, 0);
}

static void upload_abort(wp_http_req *req, void *ud)
{
    hfz *c = ud;
    WP_FUZZ_CHECK(c->upload_req == req);
    c->upload_req = NULL;
    c->upload_paused = 0;
}

static void upload_resume(uv_timer_t *t)
{
    hfz *c = t->data;
    if (!c->upload_req || !c->upload_paused)
        return;
    c->upload_paused = 0;
    wp_http_req_resume(c->upload_req);
}

static void upload_data(wp_http_req *req, const uint8_t *p, size_t n, void *ud)
{
    hfz *c = ud;
    WP_FUZZ_CHECK(c->upload_req == req && !c->upload_paused);
    WP_FUZZ_CHECK(p != NULL && n > 0);
    c->upload_bytes += n;
    WP_FUZZ_CHECK(c->upload_bytes <= c->size); /* a body is never longer than the input */
    if (++c->upload_pieces % 2 == 1) {
        c->upload_paused = 1;
        wp_http_req_pause(req);
        uv_timer_start(&c->resume_timer, upload_resume, 0, 0);
    }
}

static void upload_end(wp_http_req *req, void *ud)
{
    hfz *c = ud;
    WP_FUZZ_CHECK(c->upload_req == req && !c->upload_paused);
    c->upload_req = NULL;
    char msg[64];
    int n = snprintf(msg, sizeof(msg), "bytes=%zu\n", c->upload_bytes);
    if (wp_http_resp_begin(req, 200, "text/plain") != 0) {
        wp_http_respond(req, 500, NULL, NULL, 0);
        return;
    }
    int rc = wp_http_resp_write(req, msg, (size_t)n);
    WP_FUZZ_CHECK(rc == 0 || rc == WP_ERR_LIMIT || rc == WP_ERR_CLOSED);
    rc = wp_http_resp_end(req);
    WP_FUZZ_CHECK(rc == 0 || rc == WP_ERR_CLOSED);
}

static void h_upload(wp_http_req *req, void *ud)
{
    hfz *c = ud;
    check_req(req);
    WP_FUZZ_CHECK(c->upload_req == NULL);
    size_t n = 1;
    WP_FUZZ_CHECK(wp_http_req_body(req, &n) == NULL && n == 0);
    c->upload_req = req;
    c->upload_bytes = 0;
    c->upload_pieces = 0;
    c->upload_paused = 0;
    wp_http_req_on_abort(req, upload_abort, c);
    WP_FUZZ_CHECK(wp_http_req_on_body(req, upload_data, upload_end, c) == 0);
}

/* ---- reference request parse: how many requests begin, which are HEAD ---- */

typedef struct req_model {
    size_t begun;
    unsigned char head[MAX_REQS];
} req_model;

static int rm_begin(llhttp_t *p)
{
    req_model *rm = p->data;
    rm->begun++;
    return 0;
}

static int rm_headers(llhttp_t *p)
{
    req_model *rm = p->data;
    if (rm->begun && rm->begun <= MAX_REQS)
        rm->head[rm->begun - 1] = llhttp_get_method(p) == HTTP_HEAD;
    return 0;
}

static void model_requests(const uint8_t *data, size_t size, req_model *rm)
{
    llhttp_settings_t st;
    llhttp_settings_init(&st);
    st.on_message_begin = rm_begin;
    st.on_headers_complete = rm_headers;
    llhttp_t p;
    llhttp_init(&p, HTTP_REQUEST, &st);
    p.data = rm;
    memset(rm->head, 0, sizeof(rm->head));
    rm->begun = 0;
    if (size)
        llhttp_execute(&p, (const char *)data, size);
}

/* ---- response checks ---- */

/* Finds "\r\n" at or after pos; returns its offset or -1. */
static long find_crlf(const uint8_t *b, size_t len, size_t pos)
{
    for (size_t i = pos; i + 1 < len; i++)
        if (b[i] == '\r' && b[i + 1] == '\n')
            return (long)i;
    return -1;
}

static void check_responses(const hfz *c, const req_model *rm)
{
    const uint8_t *b = c->resp;
    size_t len = c->resp_len, pos = 0, idx = 0;
    int after_close = 0;
    while (pos < len) {
        WP_FUZZ_CHECK(!after_close); /* nothing may follow a "Connection: close" response */
        /* status line */
        long e = find_crlf(b, len, pos);
        if (e < 0)
            return; /* cut short: only allowed for the last response, which this is */
        size_t ll = (size_t)e - pos;
        const char *l = (const char *)b + pos;
        WP_FUZZ_CHECK(ll >= 13 && memcmp(l, "HTTP/1.1 ", 9) == 0);
        WP_FUZZ_CHECK(l[9] >= '1' && l[9] <= '5' && l[10] >= '0' && l[10] <= '9' && l[11] >= '0' &&
                      l[11] <= '9' && l[12] == ' ');
        int status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
        for (size_t i = 13; i < ll; i++)
            WP_FUZZ_CHECK(l[i] >= 0x20 && l[i] < 0x7f);
        pos = (size_t)e + 2;
        /* headers */
        int has_date = 0, chunked = 0, conn_close = 0, n_cl = 0, n_te = 0;
        unsigned long long cl = 0;
        for (;;) {
            e = find_crlf(b, len, pos);
            if (e < 0)
                return; /* cut short */
            ll = (size_t)e - pos;
            l = (const char *)b + pos;
            pos = (size_t)e + 2;
            if (ll == 0)
                break;
            const char *colon = memchr(l, ':', ll);
            WP_FUZZ_CHECK(colon && colon > l && (size_t)(colon - l) + 1 < ll && colon[1] == ' ');
            size_t nn = (size_t)(colon - l), vn = ll - nn - 2;
            const char *v = colon + 2;
            for (size_t i = 0; i < nn; i++)
                WP_FUZZ_CHECK(is_tchar((unsigned char)l[i]));
            for (size_t i = 0; i < vn; i++)
                WP_FUZZ_CHECK(((unsigned char)v[i] >= 0x20 && v[i] != 0x7f) || v[i] == '\t');
            if (nn == 4 && strncasecmp(l, "date", 4) == 0)
                has_date = 1;
            if (nn == 14 && strncasecmp(l, "content-length", 14) == 0) {
                n_cl++;
                WP_FUZZ_CHECK(vn >= 1 && vn <= 10);
                cl = 0;
                for (size_t i = 0; i < vn; i++) {
                    WP_FUZZ_CHECK(v[i] >= '0' && v[i] <= '9');
                    cl = cl * 10 + (unsigned)(v[i] - '0');
                }
            }
            if (nn == 17 && strncasecmp(l, "transfer-encoding", 17) == 0) {
                n_te++;
                WP_FUZZ_CHECK(vn == 7 && strncmp(v, "chunked", 7) == 0);
                chunked = 1;
            }
            if (nn == 10 && strncasecmp(l, "connection", 10) == 0) {
                WP_FUZZ_CHECK((vn == 5 && strncmp(v, "close", 5) == 0) ||
                              (vn == 10 && strncmp(v, "keep-alive", 10) == 0));
                conn_close = vn == 5;
            }
        }
        WP_FUZZ_CHECK(n_cl <= 1 && n_te <= 1 && !(n_cl && n_te));
        if (status < 200) {
            /* only "100 Continue" is interim here, and it carries no framing */
            WP_FUZZ_CHECK(status == 100 && !n_cl && !n_te && !conn_close);
            continue;
        }
        WP_FUZZ_CHECK(has_date);
        int is_head = idx < rm->begun && idx < MAX_REQS && rm->head[idx];
        idx++;
        WP_FUZZ_CHECK(idx <= rm->begun + 1); /* at most one answer per request (+ a timeout) */
        if (conn_close)
            after_close = 1;
        if (status == 204 || status == 304) {
            WP_FUZZ_CHECK(!n_cl && !n_te);
        } else if (chunked) {
            for (;;) {
                e = find_crlf(b, len, pos);
                if (e < 0)
                    return; /* cut short */
                unsigned long long sz = 0;
                WP_FUZZ_CHECK((size_t)e > pos && (size_t)e - pos <= 16);
                for (size_t i = pos; i < (size_t)e; i++) {
                    int h = b[i];
                    WP_FUZZ_CHECK((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f'));
                    sz = sz * 16 + (unsigned)(h <= '9' ? h - '0' : h - 'a' + 10);
                }
                pos = (size_t)e + 2;
                if (len - pos < sz + 2)
                    return; /* cut short */
                WP_FUZZ_CHECK(b[pos + sz] == '\r' && b[pos + sz + 1] == '\n');
                pos += sz + 2;
                if (sz == 0)
                    break;
            }
        } else if (n_cl) {
            /* a HEAD answer has no body, unless it is the server's own error (a JSON object) */
            if (is_head && !(pos < len && b[pos] == '{'))
                continue;
            if (len - pos < cl)
                return; /* cut short */
            pos += (size_t)cl;
        } else {
            WP_FUZZ_CHECK(conn_close); /* close-delimited (HTTP/1.0 streaming) */
            pos = len;
        }
    }
}

/* ---- the client and the run ---- */

static void on_close_noop(uv_handle_t *h)
{
    (void)h;
}

static void on_srv_closed(void *ud)
{
    hfz *c = ud;
    c->srv_closed = 1;
}

static void finish(hfz *c)
{
    if (c->finishing)
        return;
    c->finishing = 1;
    uv_read_stop((uv_stream_t *)&c->cli);
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->cli, &fd) == 0) {
        struct linger lg = {1, 0}; /* reset on close: no TIME_WAIT per fuzz input */
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    uv_close((uv_handle_t *)&c->cli, on_close_noop);
    uv_close((uv_handle_t *)&c->guard, on_close_noop);
    uv_close((uv_handle_t *)&c->async_timer, on_close_noop);
    uv_close((uv_handle_t *)&c->resume_timer, on_close_noop);
    wp_http_server_close(c->srv, on_srv_closed, c);
}

static void on_guard(uv_timer_t *t)
{
    hfz *c = t->data;
    c->timed_out = 1;
    finish(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    hfz *c = h->data;
    (void)hint;
    if (c->resp_cap - c->resp_len < 65536) {
        size_t nc = c->resp_cap ? c->resp_cap * 2 : 65536;
        uint8_t *nb = nc <= RESP_MAX + 65536 ? realloc(c->resp, nc) : NULL;
        WP_FUZZ_CHECK(nb != NULL); /* more than RESP_MAX bytes answered: runaway output */
        c->resp = nb;
        c->resp_cap = nc;
    }
    buf->base = (char *)c->resp + c->resp_len;
    buf->len = c->resp_cap - c->resp_len;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    hfz *c = s->data;
    (void)buf;
    if (n > 0) {
        c->resp_len += (size_t)n;
        return;
    }
    if (n == 0)
        return;
    c->ended = 1;
    if (n != UV_EOF)
        c->reset = 1;
    finish(c);
}

static void on_write(uv_write_t *w, int status)
{
    (void)w;
    (void)status; /* the server may reset a connection it gave up on */
}

static void on_shutdown(uv_shutdown_t *r, int status)
{
    (void)r;
    (void)status;
}

static void on_connect(uv_connect_t *r, int status)
{
    hfz *c = r->data;
    if (status < 0 || c->finishing) {
        fprintf(stderr, "fuzz_http: loopback connect failed: %s\n", uv_strerror(status));
        finish(c);
        return;
    }
    c->connected = 1;
    WP_FUZZ_CHECK(uv_read_start((uv_stream_t *)&c->cli, on_alloc, on_read) == 0);
    if (c->size) {
        uv_buf_t b = uv_buf_init((char *)(uintptr_t)c->data, (unsigned)c->size);
        WP_FUZZ_CHECK(uv_write(&c->wreq, (uv_stream_t *)&c->cli, &b, 1, on_write) == 0);
    }
    WP_FUZZ_CHECK(uv_shutdown(&c->sreq, (uv_stream_t *)&c->cli, on_shutdown) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static req_model rm;
    static hfz c;
    memset(&c, 0, sizeof(c));
    c.data = data;
    c.size = size;
    model_requests(data, size, &rm);

    WP_FUZZ_CHECK(uv_loop_init(&c.loop) == 0);
    wp_http_limits lim;
    wp_http_limits_default(&lim);
    lim.max_header_bytes = 2048;
    lim.max_headers = 16;
    lim.max_url = 256;
    lim.max_body = MAX_BODY;
    lim.header_timeout_ms = 1000;
    lim.body_timeout_ms = 1000;
    lim.idle_timeout_ms = 1000;
    lim.max_pending_bytes = PENDING_MAX;
    lim.max_write_queue = 16384;
    WP_FUZZ_CHECK(wp_http_server_new(&c.srv, &c.loop, &lim) == 0);
    WP_FUZZ_CHECK(wp_http_server_route(c.srv, "POST", "/echo", h_echo, &c, 0) == 0);
    WP_FUZZ_CHECK(wp_http_server_route(c.srv, "PUT", "/upload", h_upload, &c,
                                       WP_HTTP_ROUTE_STREAM_BODY) == 0);
    WP_FUZZ_CHECK(wp_http_server_route(c.srv, "GET", "/items/{id}", h_item, &c, 0) == 0);
    WP_FUZZ_CHECK(wp_http_server_route(c.srv, "GET", "/files/{path...}", h_files, &c, 0) == 0);
    WP_FUZZ_CHECK(wp_http_server_route(c.srv, "GET", "/async", h_async, &c, 0) == 0);
    char bound[WP_ADDR_STRLEN];
    WP_FUZZ_CHECK(wp_http_server_listen(c.srv, "127.0.0.1:0", bound, sizeof(bound)) == 0);
    struct sockaddr_storage ss;
    socklen_t sl;
    WP_FUZZ_CHECK(wp_addr_parse(bound, -1, &ss, &sl) == 0);

    uv_timer_init(&c.loop, &c.guard);
    uv_timer_init(&c.loop, &c.async_timer);
    uv_timer_init(&c.loop, &c.resume_timer);
    c.guard.data = c.async_timer.data = c.resume_timer.data = &c;
    uv_timer_start(&c.guard, on_guard, GUARD_MS, 0);
    uv_tcp_init(&c.loop, &c.cli);
    c.cli.data = &c;
    c.creq.data = &c;
    WP_FUZZ_CHECK(uv_tcp_connect(&c.creq, &c.cli, (const struct sockaddr *)&ss, on_connect) == 0);

    uv_run(&c.loop, UV_RUN_DEFAULT);
    WP_FUZZ_CHECK(c.finishing && c.srv_closed);
    WP_FUZZ_CHECK(c.async_req == NULL && c.upload_req == NULL);
    WP_FUZZ_CHECK(uv_loop_close(&c.loop) == 0);
    if (getenv("WP_FUZZ_HTTP_DUMP")) /* debugging aid: show what the client received */
        fprintf(stderr, "--- %zu bytes in, %zu bytes out%s%s%s\n%.*s\n", size, c.resp_len,
                c.connected ? "" : " (no connection)", c.reset ? " (reset)" : "",
                c.timed_out ? " (timed out)" : "", (int)c.resp_len, (const char *)c.resp);
    if (c.connected) {
        WP_FUZZ_CHECK(!c.timed_out); /* the server ended the connection by itself */
        WP_FUZZ_CHECK(c.ended);
        check_responses(&c, &rm);
    }
    free(c.resp);
    return 0;
}
