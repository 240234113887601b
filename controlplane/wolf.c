/*
 * wolf.c — the Wolf API client over tunnel streams (see wolf.h): the pure
 * reply parser and result interpretation, then the call machinery (one
 * stream, one request, one timer per call).
 */
#include "wolf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "ids.h"
#include "json.h"
#include "log.h"
#include "tunnel.h"

/* ------------------------------------------------------------------ */
/* pure helpers                                                         */

int cp_wolf_id_numeric(const char *s)
{
    if (!s)
        return 0;
    size_t n = strlen(s);
    if (n < 1 || n > 20)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    if (n > 1 && s[0] == '0')
        return 0;
    if (n == 20 && strcmp(s, "18446744073709551615") > 0)
        return 0;
    return 1;
}

int cp_wolf_lobby_id_valid(const char *s)
{
    if (!s)
        return 0;
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-'))
            return 0;
    }
    return 1;
}

int cp_wolf_pin_valid(const char *s)
{
    if (!s || strlen(s) != 4)
        return 0;
    for (int i = 0; i < 4; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* ------------------------------------------------------------------ */
/* reply parser                                                         */

void cp_wolf_reply_init(cp_wolf_reply *r, size_t max)
{
    memset(r, 0, sizeof(*r));
    wp_buf_init(&r->in, max);
    r->content_len = -1;
}

void cp_wolf_reply_free(cp_wolf_reply *r)
{
    wp_buf_free(&r->in);
    r->head_len = 0;
    r->done = 0;
    r->failed = 0;
}

static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int ci_eq(const char *a, size_t an, const char *b)
{
    size_t bn = strlen(b);
    if (an != bn)
        return 0;
    for (size_t i = 0; i < an; i++) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z')
            x = (char)(x - 'A' + 'a');
        if (x != y)
            return 0;
    }
    return 1;
}

/* Parses the head h[0..n) (without the final blank line's CRLF). 0 or WP_ERR_MALFORMED. */
static int reply_parse_head(cp_wolf_reply *r, const char *h, size_t n)
{
    const char *end = h + n, *eol;
    /* status line: HTTP/1.x SP 3DIGIT [SP reason] CRLF */
    eol = memchr(h, '\r', n);
    if (!eol)
        eol = end;
    size_t ln = (size_t)(eol - h);
    if (ln < 12 || memcmp(h, "HTTP/1.", 7) != 0 || (h[7] != '0' && h[7] != '1') || h[8] != ' ')
        return WP_ERR_MALFORMED;
    int st = 0;
    for (int i = 9; i < 12; i++) {
        if (h[i] < '0' || h[i] > '9')
            return WP_ERR_MALFORMED;
        st = st * 10 + (h[i] - '0');
    }
    if (st < 100 || st > 599)
        return WP_ERR_MALFORMED;
    if (ln > 12 && h[12] != ' ')
        return WP_ERR_MALFORMED;
    for (size_t i = 13; i < ln; i++) {
        unsigned char c = (unsigned char)h[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return WP_ERR_MALFORMED;
    }
    long long cl = -1;
    const char *p = eol;
    while (p < end) {
        /* p at "\r\n" ending the previous line */
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
            return WP_ERR_MALFORMED;
        p += 2;
        if (p >= end)
            break;
        eol = memchr(p, '\r', (size_t)(end - p));
        if (!eol)
            eol = end;
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon || colon == p)
            return WP_ERR_MALFORMED; /* also obs-fold (leading space) and bare LF lines */
        for (const char *q = p; q < colon; q++)
            if (!is_tchar((unsigned char)*q))
                return WP_ERR_MALFORMED;
        const char *v = colon + 1, *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        for (const char *q = v; q < ve; q++) {
            unsigned char c = (unsigned char)*q;
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return WP_ERR_MALFORMED;
        }
        size_t nn = (size_t)(colon - p);
        if (ci_eq(p, nn, "transfer-encoding"))
            return WP_ERR_MALFORMED;
        if (ci_eq(p, nn, "content-length")) {
            if (v == ve || ve - v > 18)
                return WP_ERR_MALFORMED;
            long long x = 0;
            for (const char *q = v; q < ve; q++) {
                if (*q < '0' || *q > '9')
                    return WP_ERR_MALFORMED;
                x = x * 10 + (*q - '0');
            }
            if (cl >= 0 && cl != x)
                return WP_ERR_MALFORMED;
            cl = x;
        }
        p = eol;
    }
    r->status = st;
    r->content_len = cl;
    return 0;
}

static int reply_fail(cp_wolf_reply *r, int err)
{
    r->failed = err;
    return err;
}

/* 1 if the body is complete per Content-Length. */
static int reply_body_complete(const cp_wolf_reply *r)
{
    return r->content_len >= 0 &&
           wp_buf_len(&r->in) - r->head_len >= (unsigned long long)r->content_len;
}

int cp_wolf_reply_feed(cp_wolf_reply *r, const void *p, size_t n)
{
    if (r->failed)
        return r->failed;
    if (r->done)
        return 1;
    if (n == 0)
        return 0;
    const uint8_t *d = p;
    int rc;
    if (!r->head_len) {
        /*
         * Where the head ends is not known yet: take only what fits (bytes past a
         * complete reply must not count against the bound), look for the blank
         * line from where the last search stopped, then go on with the rest.
         */
        size_t old = wp_buf_len(&r->in);
        size_t take = n < wp_buf_room(&r->in) ? n : wp_buf_room(&r->in);
        rc = wp_buf_put(&r->in, d, take);
        if (rc < 0)
            return reply_fail(r, rc);
        d += take;
        n -= take;
        const char *b = (const char *)wp_buf_ptr(&r->in);
        size_t len = wp_buf_len(&r->in);
        const char *e = NULL;
        size_t lim = len < CP_WOLF_HEAD_MAX + 4 ? len : CP_WOLF_HEAD_MAX + 4;
        for (size_t i = old > 3 ? old - 3 : 0; i + 4 <= lim; i++) {
            if (b[i] == '\r' && memcmp(b + i, "\r\n\r\n", 4) == 0) {
                e = b + i;
                break;
            }
        }
        if (!e) {
            if (len >= CP_WOLF_HEAD_MAX + 4)
                return reply_fail(r, WP_ERR_LIMIT);
            /* not even the start of a status line: no need to wait for more */
            size_t k = len < 5 ? len : 5;
            if (len > 0 && memcmp(b, "HTTP/", k) != 0)
                return reply_fail(r, WP_ERR_MALFORMED);
            if (n > 0) /* no room left and still no head */
                return reply_fail(r, WP_ERR_LIMIT);
            return 0;
        }
        rc = reply_parse_head(r, b, (size_t)(e - b));
        if (rc < 0)
            return reply_fail(r, rc);
        r->head_len = (size_t)(e - b) + 4;
        if (r->content_len >= 0 && (unsigned long long)r->content_len > r->in.max - r->head_len)
            return reply_fail(r, WP_ERR_LIMIT);
    }
    if (n > 0 && !reply_body_complete(r)) {
        size_t take = n;
        if (r->content_len >= 0) {
            size_t want = r->head_len + (size_t)r->content_len - wp_buf_len(&r->in);
            if (take > want)
                take = want;
        }
        rc = wp_buf_put(&r->in, d, take);
        if (rc < 0)
            return reply_fail(r, rc);
    }
    if (reply_body_complete(r)) {
        r->done = 1;
        return 1;
    }
    return 0;
}

int cp_wolf_reply_finish(cp_wolf_reply *r)
{
    if (r->failed)
        return r->failed;
    if (r->done)
        return 1;
    if (!r->head_len || r->content_len >= 0) /* head incomplete, or body short of its length */
        return reply_fail(r, WP_ERR_MALFORMED);
    r->done = 1;
    return 1;
}

const char *cp_wolf_reply_body(const cp_wolf_reply *r, size_t *len)
{
    size_t total = wp_buf_len(&r->in);
    size_t n = total > r->head_len ? total - r->head_len : 0;
    if (r->content_len >= 0 && n > (unsigned long long)r->content_len)
        n = (size_t)r->content_len;
    *len = n;
    const char *b = (const char *)wp_buf_ptr(&r->in);
    return b ? b + r->head_len : "";
}

/* Copies s into msg (cap bytes), control characters as spaces, cut on a UTF-8 boundary. */
static void msg_copy(char *msg, size_t cap, const char *s)
{
    size_t n = strlen(s), o = 0, i = 0;
    if (cap == 0)
        return;
    while (i < n) {
        size_t k = wp_utf8_seq_len((const unsigned char *)s + i, n - i);
        if (k == 0) {
            i++;
            continue;
        }
        if (o + k >= cap)
            break;
        if (k == 1 && ((unsigned char)s[i] < 0x20 || s[i] == 0x7f))
            msg[o++] = ' ';
        else {
            memcpy(msg + o, s + i, k);
            o += k;
        }
        i += k;
    }
    msg[o] = '\0';
}

int cp_wolf_reply_result(const cp_wolf_reply *r, cJSON **json, const char **reason, char *msg,
                         size_t cap)
{
    size_t blen;
    const char *body = cp_wolf_reply_body(r, &blen);
    cJSON *j = NULL;
    if (blen > 0 && wp_json_parse(body, blen, CP_WOLF_REPLY_MAX, CP_WOLF_JSON_DEPTH, &j) < 0)
        j = NULL;
    *json = j;
    int ok2xx = r->status >= 200 && r->status <= 299;
    const cJSON *success =
        cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, "success") : NULL;
    const char *werr = cJSON_IsObject(j) ? wp_json_get_str(j, "error") : NULL;
    if (!ok2xx) {
        *reason = "wolf_error";
        if (werr && *werr)
            msg_copy(msg, cap, werr);
        else
            snprintf(msg, cap, "Wolf answered HTTP %d", r->status);
        return r->status == 404 ? WP_ERR_NOT_FOUND : WP_ERR_IO;
    }
    if (!j) {
        *reason = "bad_response";
        snprintf(msg, cap, "Wolf answered HTTP %d with %s", r->status,
                 blen ? "a body that is not JSON" : "an empty body");
        return WP_ERR_PROTO;
    }
    if (success && !cJSON_IsBool(success)) {
        *reason = "bad_response";
        snprintf(msg, cap, "Wolf's reply has a non-boolean \"success\"");
        return WP_ERR_PROTO;
    }
    if (cJSON_IsFalse(success)) {
        *reason = "wolf_error";
        msg_copy(msg, cap, werr && *werr ? werr : "Wolf reported a failure");
        return WP_ERR_IO;
    }
    *reason = "ok";
    snprintf(msg, cap, "ok");
    return 0;
}

/* ------------------------------------------------------------------ */
/* calls                                                                */

struct cp_wolf_call {
    cp_server *s;
    cp_stream *st;
    uv_timer_t timer;
    cp_wolf_cb cb;
    void *ud;
    wp_buf req;          /* request bytes the stream has not taken yet */
    cp_wolf_reply reply; /* what came back */
    int finished;        /* result delivered or cancelled: no callback any more */
    int write_closed;    /* our FIN was queued */
    int deferred;        /* the timer delivers a failure found while starting */
    int d_err;
    const char *d_reason;
    uint64_t t0;
    char node_id[WP_NODE_ID_MAX + 1];
    char method[8];
    char path[CP_WOLF_PATH_MAX + 1];
    char msg[CP_WOLF_MESSAGE_MAX];
};

static void call_free_cb(uv_handle_t *h)
{
    cp_wolf_call *c = h->data;
    wp_buf_free(&c->req);
    cp_wolf_reply_free(&c->reply);
    free(c);
}

/* Ends c: stream reset (if still open), timer closed, c freed in its close callback. */
static void call_end(cp_wolf_call *c)
{
    c->finished = 1;
    uv_timer_stop(&c->timer);
    if (c->st) {
        cp_stream *st = c->st;
        c->st = NULL;
        cp_stream_reset(st);
    }
    uv_close((uv_handle_t *)&c->timer, call_free_cb);
}

static void call_deliver(cp_wolf_call *c, int err, int status, const char *reason,
                         const char *agent_reason, const cJSON *body)
{
    if (c->finished)
        return;
    c->finished = 1;
    uv_timer_stop(&c->timer);
    if (c->st) { /* nothing more from this stream */
        cp_stream *st = c->st;
        c->st = NULL;
        cp_stream_reset(st);
    }
    cp_wolf_result r = {.err = err,
                        .status = status,
                        .reason = reason,
                        .agent_reason = agent_reason ? agent_reason : "",
                        .message = c->msg,
                        .body = body};
    wp_log(err ? WP_LOG_INFO : WP_LOG_DEBUG, "wolf call", WP_LS("node", c->node_id),
           WP_LS("method", c->method), WP_LS("path", c->path), WP_LI("status", status),
           WP_LS("reason", reason), WP_LS("agent_reason", r.agent_reason),
           WP_LI("ms", (long long)(uv_now(c->s->loop) - c->t0)));
    c->cb(&r, c->ud);
    call_end(c);
}

/* Delivers a failure without a reply; message "text" or "text: detail". */
static void call_fail(cp_wolf_call *c, int err, const char *reason, const char *agent_reason,
                      const char *text, const char *detail)
{
    if (detail)
        snprintf(c->msg, sizeof(c->msg), "%s: %s", text, detail);
    else
        snprintf(c->msg, sizeof(c->msg), "%s", text);
    call_deliver(c, err, 0, reason, agent_reason, NULL);
}

static void call_reply_done(cp_wolf_call *c)
{
    cJSON *j = NULL;
    const char *reason = "bad_response";
    int err = cp_wolf_reply_result(&c->reply, &j, &reason, c->msg, sizeof(c->msg));
    call_deliver(c, err, c->reply.status, reason, "", j);
    cJSON_Delete(j);
}

static void call_reply_error(cp_wolf_call *c, int rc, int at_fin)
{
    const char *what;
    if (rc == WP_ERR_LIMIT)
        what = "Wolf's reply is larger than the limit (1 MiB)";
    else if (rc == WP_ERR_NOMEM)
        what = "out of memory reading Wolf's reply";
    else if (!c->reply.head_len && wp_buf_len(&c->reply.in) == 0 && at_fin)
        what = "Wolf closed the connection without a reply";
    else if (at_fin && c->reply.head_len)
        what = "Wolf's reply was truncated";
    else
        what = "Wolf's reply is not HTTP";
    snprintf(c->msg, sizeof(c->msg), "%s", what);
    call_deliver(c, rc == WP_ERR_NOMEM ? WP_ERR_NOMEM : WP_ERR_PROTO,
                 c->reply.head_len ? c->reply.status : 0, "bad_response", "", NULL);
}

/* Hands as much of the request to the stream as it takes; FIN after the last byte. */
static int call_pump(cp_wolf_call *c)
{
    while (c->st && wp_buf_len(&c->req) > 0) {
        int k = cp_stream_write(c->st, wp_buf_ptr(&c->req), wp_buf_len(&c->req));
        if (k < 0)
            return k;
        if (k == 0)
            return 0; /* on_writable */
        wp_buf_consume(&c->req, (size_t)k);
    }
    if (c->st && !c->write_closed) {
        c->write_closed = 1;
        int rc = cp_stream_close_write(c->st);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static void st_on_open(cp_stream *st, int err, const char *reason, void *ud)
{
    (void)st;
    cp_wolf_call *c = ud;
    if (err == 0)
        return;
    c->st = NULL; /* final callback: freed after it */
    if (!reason || !*reason)
        reason = "reset";
    if (err == WP_ERR_TIMEOUT)
        call_fail(c, WP_ERR_TIMEOUT, "timeout", "",
                  "the node's agent did not acknowledge the stream", NULL);
    else if (err == WP_ERR_CLOSED)
        call_fail(c, WP_ERR_CLOSED, "node_unreachable", "", "the tunnel to the node closed", NULL);
    else
        call_fail(c, WP_ERR_IO, "refused", reason, "the node's agent refused the Wolf stream",
                  reason);
}

static void st_on_data(cp_stream *st, const uint8_t *p, size_t n, void *ud)
{
    cp_wolf_call *c = ud;
    if (c->finished)
        return;
    int rc = cp_wolf_reply_feed(&c->reply, p, n);
    cp_stream_consumed(st, n); /* copied (or dropped): credit right away */
    if (rc == 1)
        call_reply_done(c);
    else if (rc < 0)
        call_reply_error(c, rc, 0);
}

static void st_on_fin(cp_stream *st, void *ud)
{
    (void)st;
    cp_wolf_call *c = ud;
    if (c->finished)
        return;
    int rc = cp_wolf_reply_finish(&c->reply);
    if (rc == 1)
        call_reply_done(c);
    else
        call_reply_error(c, rc, 1);
}

static void st_on_writable(cp_stream *st, void *ud)
{
    (void)st;
    cp_wolf_call *c = ud;
    if (c->finished)
        return;
    int rc = call_pump(c);
    if (rc < 0)
        call_fail(c, WP_ERR_CLOSED, "node_unreachable", "", "could not send the request",
                  wp_strerror(rc));
}

static void st_on_closed(cp_stream *st, int err, const char *reason, void *ud)
{
    (void)st;
    cp_wolf_call *c = ud;
    c->st = NULL;
    if (c->finished)
        return;
    if (!reason || !*reason)
        reason = "reset";
    if (err == 0) { /* FIN both ways: on_fin already ran; be safe */
        st_on_fin(NULL, c);
        return;
    }
    if (err == WP_ERR_TIMEOUT)
        call_fail(c, WP_ERR_TIMEOUT, "timeout", "", "the stream went idle", NULL);
    else if (err == WP_ERR_CLOSED)
        call_fail(c, WP_ERR_CLOSED, "node_unreachable", "",
                  "the tunnel to the node closed during the call", NULL);
    else
        call_fail(c, WP_ERR_IO, "refused", reason, "the node's agent reset the Wolf stream",
                  reason);
}

static void call_timer_cb(uv_timer_t *t)
{
    cp_wolf_call *c = t->data;
    if (c->finished)
        return;
    if (c->deferred) {
        call_deliver(c, c->d_err, 0, c->d_reason, "", NULL);
        return;
    }
    snprintf(c->msg, sizeof(c->msg), "no complete reply from Wolf within %llu ms",
             (unsigned long long)(uv_now(c->s->loop) - c->t0));
    call_deliver(c, WP_ERR_TIMEOUT, c->reply.head_len ? c->reply.status : 0, "timeout", "", NULL);
}

static int method_valid(const char *m)
{
    size_t n = strlen(m);
    if (n < 1 || n > 7)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (m[i] < 'A' || m[i] > 'Z')
            return 0;
    return 1;
}

static int path_valid(const char *p)
{
    size_t n = strlen(p);
    if (n < 5 || n > CP_WOLF_PATH_MAX || memcmp(p, "/api/", 5) != 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("/_.~?=&%-", c)))
            return 0;
    }
    return 1;
}

static const cp_stream_callbacks call_cbs = {
    .on_open = st_on_open,
    .on_data = st_on_data,
    .on_fin = st_on_fin,
    .on_writable = st_on_writable,
    .on_closed = st_on_closed,
};

int cp_wolf_call_start(cp_server *s, const char *node_id, const char *method, const char *path,
                       const cJSON *body, uint64_t timeout_ms, cp_wolf_cb cb, void *ud,
                       cp_wolf_call **out)
{
    if (out)
        *out = NULL;
    if (!s || !s->loop || !node_id || !method || !path || !cb || timeout_ms == 0 ||
        !wp_node_id_valid(node_id) || !method_valid(method) || !path_valid(path))
        return WP_ERR_INVAL;
    char *text = NULL;
    size_t blen = 0;
    if (body) {
        text = wp_json_print(body);
        if (!text)
            return WP_ERR_NOMEM;
        blen = strlen(text);
        if (blen > CP_WOLF_REQUEST_MAX) {
            cJSON_free(text);
            return WP_ERR_LIMIT;
        }
    }
    cp_wolf_call *c = calloc(1, sizeof(*c));
    if (!c) {
        cJSON_free(text);
        return WP_ERR_NOMEM;
    }
    c->s = s;
    c->cb = cb;
    c->ud = ud;
    c->t0 = uv_now(s->loop);
    snprintf(c->node_id, sizeof(c->node_id), "%s", node_id);
    snprintf(c->method, sizeof(c->method), "%s", method);
    snprintf(c->path, sizeof(c->path), "%s", path);
    cp_wolf_reply_init(&c->reply, CP_WOLF_REPLY_MAX);
    wp_buf_init(&c->req, CP_WOLF_REQUEST_MAX + 1024);
    int rc = wp_buf_putf(&c->req,
                         "%s %s HTTP/1.0\r\nHost: wolf\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                         method, path, blen);
    if (rc == 0 && blen)
        rc = wp_buf_put(&c->req, text, blen);
    cJSON_free(text);
    if (rc < 0) {
        wp_buf_free(&c->req);
        cp_wolf_reply_free(&c->reply);
        free(c);
        return rc == WP_ERR_LIMIT ? WP_ERR_LIMIT : WP_ERR_NOMEM;
    }
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;

    rc = cp_tunnel_open_stream(s, node_id, "{\"service\":\"wolf\"}", &call_cbs, c, &c->st);
    if (rc == WP_ERR_NOMEM || rc == WP_ERR_INVAL) {
        c->finished = 1;
        uv_close((uv_handle_t *)&c->timer, call_free_cb);
        return rc;
    }
    if (rc == 0)
        rc = call_pump(c);
    if (rc < 0) { /* reported from the loop, never from inside this call */
        if (c->st) {
            cp_stream_reset(c->st);
            c->st = NULL;
        }
        c->deferred = 1;
        c->d_reason = "node_unreachable";
        if (rc == WP_ERR_BUSY || rc == WP_ERR_LIMIT) {
            c->d_err = WP_ERR_BUSY;
            snprintf(c->msg, sizeof(c->msg), "the tunnel to node %s is busy", node_id);
        } else if (rc == WP_ERR_NOT_FOUND) {
            c->d_err = WP_ERR_CLOSED;
            snprintf(c->msg, sizeof(c->msg), "node %s is not connected to this replica", node_id);
        } else {
            c->d_err = WP_ERR_CLOSED;
            snprintf(c->msg, sizeof(c->msg), "the tunnel to node %s is closing (%s)", node_id,
                     wp_strerror(rc));
        }
        uv_timer_start(&c->timer, call_timer_cb, 0, 0);
    } else {
        uv_timer_start(&c->timer, call_timer_cb, timeout_ms, 0);
    }
    if (out)
        *out = c;
    return 0;
}

void cp_wolf_call_cancel(cp_wolf_call *c)
{
    if (!c || c->finished)
        return;
    call_end(c);
}

/* ------------------------------------------------------------------ */
/* typed helpers                                                        */

/* 1 if pin is absent or a list of 4 integers 0..9. */
static int body_pin_ok(const cJSON *req)
{
    const cJSON *pin = cJSON_GetObjectItemCaseSensitive(req, "pin");
    if (!pin || cJSON_IsNull(pin))
        return 1;
    if (!cJSON_IsArray(pin) || cJSON_GetArraySize(pin) != 4)
        return 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, pin)
    {
        if (!cJSON_IsNumber(d) || d->valuedouble != (double)(int)d->valuedouble ||
            d->valuedouble < 0 || d->valuedouble > 9)
            return 0;
    }
    return 1;
}

int cp_wolf_lobby_create(cp_server *s, const char *node_id, const cJSON *req, uint64_t timeout_ms,
                         cp_wolf_cb cb, void *ud, cp_wolf_call **out)
{
    if (out)
        *out = NULL;
    if (!cJSON_IsObject(req) || !body_pin_ok(req))
        return WP_ERR_INVAL;
    return cp_wolf_call_start(s, node_id, "POST", "/api/v1/lobbies/create", req, timeout_ms, cb, ud,
                              out);
}

int cp_wolf_lobbies_list(cp_server *s, const char *node_id, uint64_t timeout_ms, cp_wolf_cb cb,
                         void *ud, cp_wolf_call **out)
{
    return cp_wolf_call_start(s, node_id, "GET", "/api/v1/lobbies", NULL, timeout_ms, cb, ud, out);
}

int cp_wolf_lobby_stop(cp_server *s, const char *node_id, const char *lobby_id, const char *pin,
                       uint64_t timeout_ms, cp_wolf_cb cb, void *ud, cp_wolf_call **out)
{
    if (out)
        *out = NULL;
    if (!cp_wolf_lobby_id_valid(lobby_id) || (pin && !cp_wolf_pin_valid(pin)))
        return WP_ERR_INVAL;
    cJSON *b = cJSON_CreateObject();
    if (!b || !cJSON_AddStringToObject(b, "lobby_id", lobby_id)) {
        cJSON_Delete(b);
        return WP_ERR_NOMEM;
    }
    if (pin) {
        int digits[4] = {pin[0] - '0', pin[1] - '0', pin[2] - '0', pin[3] - '0'};
        cJSON *a = cJSON_CreateIntArray(digits, 4);
        if (!a || !cJSON_AddItemToObject(b, "pin", a)) {
            cJSON_Delete(a);
            cJSON_Delete(b);
            return WP_ERR_NOMEM;
        }
    }
    int rc =
        cp_wolf_call_start(s, node_id, "POST", "/api/v1/lobbies/stop", b, timeout_ms, cb, ud, out);
    cJSON_Delete(b);
    return rc;
}

int cp_wolf_sessions_list(cp_server *s, const char *node_id, uint64_t timeout_ms, cp_wolf_cb cb,
                          void *ud, cp_wolf_call **out)
{
    return cp_wolf_call_start(s, node_id, "GET", "/api/v1/sessions", NULL, timeout_ms, cb, ud, out);
}

int cp_wolf_session_stop(cp_server *s, const char *node_id, const char *session_id,
                         uint64_t timeout_ms, cp_wolf_cb cb, void *ud, cp_wolf_call **out)
{
    if (out)
        *out = NULL;
    if (!cp_wolf_id_numeric(session_id))
        return WP_ERR_INVAL;
    cJSON *b = cJSON_CreateObject();
    if (!b || !cJSON_AddStringToObject(b, "session_id", session_id)) {
        cJSON_Delete(b);
        return WP_ERR_NOMEM;
    }
    int rc =
        cp_wolf_call_start(s, node_id, "POST", "/api/v1/sessions/stop", b, timeout_ms, cb, ud, out);
    cJSON_Delete(b);
    return rc;
}
