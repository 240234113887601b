/*
 * services.c — allow-list decisions and the local socket bridge of each tunnel stream
 * (see services.h).
 */
#include "services.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "ids.h"
#include "json.h"
#include "log.h"

#define NA_READ_BUF 16384 /* one read buffer per stream (PROTOCOL.md §8) */

/* ------------------------------------------------------------------ */
/* pure decisions                                                      */

int na_service_name_valid(const char *s)
{
    return wp_service_name_valid(s);
}

int na_sandbox_host_valid(const char *s)
{
    if (!s || !s[0])
        return 0;
    size_t n = strlen(s);
    if (n > WP_SANDBOX_HOST_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '_' && c != '.' && c != '-')))
            return 0;
    }
    return 1;
}

static int na_refuse(int rc, const char *c, const char **code, char *msg, size_t cap,
                     const char *text)
{
    *code = c;
    if (msg && cap)
        snprintf(msg, cap, "%s", text);
    return rc;
}

int na_services_resolve(const na_config *cfg, const na_sandbox_policy *sb, const char *json,
                        size_t len, na_target *out, const char **code, char *msg, size_t cap)
{
    if (!cfg || !json || !out || !code)
        return WP_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (msg && cap)
        msg[0] = '\0';
    cJSON *root = NULL;
    if (len == 0 || wp_json_parse(json, len, WP_PREAMBLE_MAX, 4, &root) != 0)
        return na_refuse(WP_ERR_PROTO, WP_STREAM_ERR_PROTOCOL, code, msg, cap,
                         "open preamble is not valid JSON");
    int rc;
    const cJSON *svc = cJSON_GetObjectItemCaseSensitive(root, "service");
    const cJSON *host = cJSON_GetObjectItemCaseSensitive(root, "host");
    const cJSON *port = cJSON_GetObjectItemCaseSensitive(root, "port");
    if (!cJSON_IsObject(root) || !cJSON_IsString(svc) || !svc->valuestring) {
        rc = na_refuse(WP_ERR_PROTO, WP_STREAM_ERR_PROTOCOL, code, msg, cap,
                       "open preamble needs a string \"service\"");
        goto out;
    }
    const char *name = svc->valuestring;
    int is_sandbox = strcmp(name, WP_PREAMBLE_SERVICE_SANDBOX) == 0;
    if (!is_sandbox && (host || port)) {
        rc = na_refuse(WP_ERR_PROTO, WP_STREAM_ERR_PROTOCOL, code, msg, cap,
                       "\"host\"/\"port\" are only for the sandbox service");
        goto out;
    }
    if (!na_service_name_valid(name)) {
        rc = na_refuse(WP_ERR_PERM, WP_STREAM_ERR_NOT_ALLOWED, code, msg, cap,
                       "invalid service name");
        goto out;
    }
    if (is_sandbox) {
        if (!cJSON_IsString(host) || !host->valuestring || (port && !cJSON_IsNumber(port))) {
            rc = na_refuse(WP_ERR_PROTO, WP_STREAM_ERR_PROTOCOL, code, msg, cap,
                           "sandbox needs a string \"host\" (and an integer \"port\")");
            goto out;
        }
        double pd = port ? port->valuedouble : (sb && sb->nports ? sb->ports[0] : 0);
        if (pd != (double)(long long)pd) {
            rc = na_refuse(WP_ERR_PROTO, WP_STREAM_ERR_PROTOCOL, code, msg, cap,
                           "sandbox \"port\" must be an integer");
            goto out;
        }
        if (!sb || !sb->enabled) {
            rc = na_refuse(WP_ERR_PERM, WP_STREAM_ERR_NOT_ALLOWED, code, msg, cap,
                           "sandbox connections are not enabled on this node");
            goto out;
        }
        if (!na_sandbox_host_valid(host->valuestring) ||
            (sb->name_pattern[0] && !na_sandbox_name_match(sb->name_pattern, host->valuestring))) {
            rc = na_refuse(WP_ERR_PERM, WP_STREAM_ERR_NOT_ALLOWED, code, msg, cap,
                           "sandbox host name is invalid or not allowed");
            goto out;
        }
        int allowed = 0;
        for (size_t i = 0; pd >= 1 && pd <= 65535 && i < sb->nports; i++)
            if (sb->ports[i] == (int)pd)
                allowed = 1;
        if (!allowed) {
            rc = na_refuse(WP_ERR_PERM, WP_STREAM_ERR_NOT_ALLOWED, code, msg, cap,
                           "sandbox port is not allowed");
            goto out;
        }
        snprintf(out->service, sizeof(out->service), "%s", name);
        out->kind = NA_SVC_TCP;
        snprintf(out->addr, sizeof(out->addr), "%s",
                 sb->address[0] ? sb->address : host->valuestring);
        out->port = (int)pd;
        rc = 0;
        goto out;
    }
    for (size_t i = 0; i < cfg->nservices; i++) {
        const na_service *s = &cfg->services[i];
        if (strcmp(s->name, name) != 0)
            continue;
        snprintf(out->service, sizeof(out->service), "%s", name);
        out->kind = s->kind;
        snprintf(out->addr, sizeof(out->addr), "%s", s->target);
        out->port = s->port;
        rc = 0;
        goto out;
    }
    char text[WP_SERVICE_NAME_MAX + 40];
    snprintf(text, sizeof(text), "service \"%s\" is not allow-listed", name);
    rc = na_refuse(WP_ERR_PERM, WP_STREAM_ERR_NOT_ALLOWED, code, msg, cap, text);
out:
    cJSON_Delete(root);
    return rc;
}

void na_sandbox_policy_from_config(na_sandbox_policy *sb, const na_config *cfg)
{
    memset(sb, 0, sizeof(*sb));
    for (size_t i = 0; i < cfg->nsandbox_ports && i < NA_SANDBOX_PORTS_MAX; i++)
        sb->ports[sb->nports++] = cfg->sandbox_ports[i];
    sb->enabled = sb->nports > 0;
    snprintf(sb->name_pattern, sizeof(sb->name_pattern), "%s",
             cfg->sandbox_name_pattern ? cfg->sandbox_name_pattern : "");
    snprintf(sb->address, sizeof(sb->address), "%s",
             cfg->sandbox_address ? cfg->sandbox_address : "");
}

const char *na_services_dial_error_code(int uv_err, int resolve)
{
    if (resolve)
        return WP_STREAM_ERR_UNREACHABLE;
    switch (uv_err) {
    case UV_ECONNREFUSED:
    case UV_ENOENT: /* the socket file is missing: nothing listens (PROTOCOL.md §4.7 refused) */
        return WP_STREAM_ERR_REFUSED;
    case UV_ETIMEDOUT:
        return WP_STREAM_ERR_TIMEOUT;
    case UV_ENETUNREACH:
    case UV_EHOSTUNREACH:
    case UV_EACCES:
    case UV_EPERM:
    case UV_ENOTDIR:
    case UV_EADDRNOTAVAIL:
    case UV_EAFNOSUPPORT:
        return WP_STREAM_ERR_UNREACHABLE;
    default:
        return WP_STREAM_ERR_INTERNAL;
    }
}

/* ------------------------------------------------------------------ */
/* the bridge                                                          */

struct na_stream {
    na_stream_host host;
    wp_mux *mux;
    uint32_t id;
    int live; /* the mux still knows id */
    na_target t;
    uint64_t deadline_ms;

    union {
        uv_handle_t h;
        uv_stream_t s;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } u;
    int handle_inited;
    uv_connect_t creq;
    uv_getaddrinfo_t gai;
    int gai_pending;
    struct addrinfo *ai_list, *ai_cur;
    int last_err;
    uv_timer_t timer;
    uv_shutdown_t sreq;
    int shut_pending, shut_done;

    int connected;
    int closing;
    int refs;
    uint64_t dial_start_ns; /* uv_hrtime() at na_stream_start, for the dial latency */

    wp_buf pending;         /* tunnel bytes received before the dial completed */
    size_t writes_inflight; /* uv_writes to the local socket not completed */
    int remote_fin;
    int mux_done; /* FIN both ways: close once local writes and shutdown are done */

    int reading, local_eof, fin_sent;
    int in_push, push_again;
    size_t roff, rlen;
    uint8_t rbuf[NA_READ_BUF];
};

typedef struct na_wreq {
    uv_write_t req;
    na_stream *s;
    size_t n;
    uint8_t data[];
} na_wreq;

static void na_stream_close(na_stream *s, int reset);
static void na_stream_read_start(na_stream *s);

static void na_stream_unref(na_stream *s)
{
    if (--s->refs > 0)
        return;
    if (s->ai_list)
        uv_freeaddrinfo(s->ai_list);
    wp_buf_free(&s->pending);
    na_stream_host host = s->host;
    free(s);
    host.on_freed(host.ud);
}

static void na_stream_handle_closed(uv_handle_t *h)
{
    na_stream *s = h->data;
    s->handle_inited = 0;
    na_stream_unref(s);
}

/* Refuses or resets the stream with an `error` message, then closes the local side. */
static void na_stream_fail(na_stream *s, const char *code, const char *msg)
{
    if (s->live) {
        s->host.send_error(s->host.ud, s->id, code, msg);
        (void)wp_mux_reset(s->mux, s->id);
        s->live = 0;
    }
    na_stream_close(s, 1);
}

static void na_stream_dial_fail(na_stream *s, int uv_err, int resolve)
{
    char msg[200];
    const char *code = na_services_dial_error_code(uv_err, resolve);
    na_stats_dial_failed(s->host.stats, code);
    snprintf(msg, sizeof(msg), "local dial of service \"%s\" failed: %s", s->t.service,
             uv_err == UV_ETIMEDOUT ? "deadline passed" : uv_strerror(uv_err));
    wp_log_info("stream refused", WP_LI("stream", s->id), WP_LS("service", s->t.service),
                WP_LS("code", code),
                WP_LS("reason", uv_err == UV_ETIMEDOUT ? "deadline" : uv_strerror(uv_err)));
    na_stream_fail(s, code, msg);
}

static void na_stream_local_fail(na_stream *s, int uv_err)
{
    char msg[160];
    snprintf(msg, sizeof(msg), "local service \"%s\" failed: %s", s->t.service,
             uv_strerror(uv_err));
    wp_log_info("stream reset by local error", WP_LI("stream", s->id),
                WP_LS("service", s->t.service), WP_LS("reason", uv_strerror(uv_err)));
    na_stream_fail(s, WP_STREAM_ERR_RESET, msg);
}

static void na_stream_close(na_stream *s, int reset)
{
    if (s->closing)
        return;
    s->closing = 1;
    s->live = 0;
    wp_buf_free(&s->pending);
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, na_stream_handle_closed);
    if (s->gai_pending)
        (void)uv_cancel((uv_req_t *)&s->gai);
    if (s->handle_inited && !uv_is_closing(&s->u.h)) {
        /* RST received or local failure: close without flushing (SO_LINGER 0). */
        if (!(reset && s->t.kind == NA_SVC_TCP && s->connected && !s->shut_pending &&
              uv_tcp_close_reset(&s->u.tcp, na_stream_handle_closed) == 0))
            uv_close(&s->u.h, na_stream_handle_closed);
    }
}

/* FIN both ways and every local write done: close the local socket normally. */
static void na_stream_maybe_finish(na_stream *s)
{
    if (s->closing || !s->mux_done || s->writes_inflight > 0 || s->shut_pending)
        return;
    if (s->remote_fin && s->connected && !s->shut_done)
        return; /* the shutdown has not been issued yet */
    na_stream_close(s, 0);
}

static void na_stream_shutdown_cb(uv_shutdown_t *req, int status)
{
    na_stream *s = req->data;
    (void)status; /* a peer that already went away: nothing more to tell it */
    s->shut_pending = 0;
    s->shut_done = 1;
    na_stream_maybe_finish(s);
}

static void na_stream_maybe_shutdown(na_stream *s)
{
    if (s->closing || !s->connected || !s->remote_fin || s->writes_inflight > 0 ||
        wp_buf_len(&s->pending) > 0 || s->shut_pending || s->shut_done)
        return;
    s->sreq.data = s;
    int rc = uv_shutdown(&s->sreq, &s->u.s, na_stream_shutdown_cb);
    if (rc < 0) {
        s->shut_done = 1;
        na_stream_maybe_finish(s);
        return;
    }
    s->shut_pending = 1;
}

static void na_stream_write_cb(uv_write_t *req, int status)
{
    na_wreq *w = (na_wreq *)req;
    na_stream *s = w->s;
    size_t n = w->n;
    free(w);
    s->writes_inflight--;
    if (status < 0) {
        if (status != UV_ECANCELED && !s->closing)
            na_stream_local_fail(s, status);
        return;
    }
    if (s->live) /* credit only now: the bytes left us (the time lets the window grow) */
        (void)wp_mux_consumed_at(s->mux, s->id, n, uv_now(s->host.loop));
    na_stream_maybe_shutdown(s);
    na_stream_maybe_finish(s);
}

static void na_stream_write_local(na_stream *s, const uint8_t *p, size_t n)
{
    na_wreq *w = malloc(sizeof(*w) + n);
    if (!w) {
        na_stream_fail(s, WP_STREAM_ERR_INTERNAL, "out of memory");
        return;
    }
    w->s = s;
    w->n = n;
    memcpy(w->data, p, n);
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)n);
    int rc = uv_write(&w->req, &s->u.s, &b, 1, na_stream_write_cb);
    if (rc < 0) {
        free(w);
        na_stream_local_fail(s, rc);
        return;
    }
    s->writes_inflight++;
}

/* Moves read bytes into the stream; stops reading when it has no room, resumes when it has. */
static void na_stream_push(na_stream *s)
{
    if (s->in_push) {
        s->push_again = 1;
        return;
    }
    s->in_push = 1;
    do {
        s->push_again = 0;
        if (!s->live || s->closing)
            break;
        if (s->rlen > 0) {
            int w = wp_mux_write(s->mux, s->id, s->rbuf + s->roff, s->rlen);
            if (w < 0) {
                if (w != WP_ERR_NOT_FOUND && w != WP_ERR_CLOSED)
                    na_stream_fail(s, WP_STREAM_ERR_INTERNAL, "stream write failed");
                break;
            }
            s->roff += (size_t)w;
            s->rlen -= (size_t)w;
        }
        if (s->rlen > 0) {
            if (s->reading) {
                uv_read_stop(&s->u.s);
                s->reading = 0;
            }
        } else if (s->local_eof) {
            if (!s->fin_sent) {
                s->fin_sent = 1;
                (void)wp_mux_close_write(s->mux, s->id);
            }
        } else if (!s->reading) {
            na_stream_read_start(s);
        }
    } while (s->push_again);
    s->in_push = 0;
}

static void na_stream_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    na_stream *s = h->data;
    (void)suggested;
    if (s->rlen > 0)
        *buf = uv_buf_init(NULL, 0); /* still holding bytes: libuv reports UV_ENOBUFS */
    else
        *buf = uv_buf_init((char *)s->rbuf, sizeof(s->rbuf));
}

static void na_stream_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    na_stream *s = st->data;
    (void)buf;
    if (s->closing || nread == 0 || nread == UV_ENOBUFS)
        return;
    if (nread > 0) {
        s->roff = 0;
        s->rlen = (size_t)nread;
        na_stream_push(s);
        return;
    }
    if (nread == UV_EOF) {
        s->local_eof = 1;
        uv_read_stop(st);
        s->reading = 0;
        na_stream_push(s);
        return;
    }
    na_stream_local_fail(s, (int)nread);
}

static void na_stream_read_start(na_stream *s)
{
    if (s->closing || s->reading || s->local_eof)
        return;
    int rc = uv_read_start(&s->u.s, na_stream_alloc_cb, na_stream_read_cb);
    if (rc < 0) {
        na_stream_local_fail(s, rc);
        return;
    }
    s->reading = 1;
}

static void na_stream_connected(na_stream *s)
{
    s->connected = 1;
    uv_timer_stop(&s->timer);
    if (!s->live) {
        na_stream_close(s, 1);
        return;
    }
    int rc = wp_mux_accept(s->mux, s->id, s);
    if (rc < 0) {
        s->live = rc == WP_ERR_NOT_FOUND || rc == WP_ERR_CLOSED ? 0 : s->live;
        na_stream_fail(s, WP_STREAM_ERR_INTERNAL, "accept failed");
        return;
    }
    na_stats_dial_ok(s->host.stats, (double)(uv_hrtime() - s->dial_start_ns) / 1e9);
    wp_log_debug("stream open", WP_LI("stream", s->id), WP_LS("service", s->t.service));
    na_stream_read_start(s);
    if (s->closing)
        return;
    if (wp_buf_len(&s->pending) > 0) {
        na_stream_write_local(s, wp_buf_ptr(&s->pending), wp_buf_len(&s->pending));
        wp_buf_free(&s->pending);
    }
    na_stream_maybe_shutdown(s);
}

static void na_stream_try_next(na_stream *s);

static void na_stream_retry_closed(uv_handle_t *h)
{
    na_stream *s = h->data;
    s->handle_inited = 0;
    if (s->closing) {
        na_stream_unref(s);
        return;
    }
    s->refs--; /* not the last: the timer holds one until the stream closes */
    s->ai_cur = s->ai_cur ? s->ai_cur->ai_next : NULL;
    na_stream_try_next(s);
}

static void na_stream_connect_cb(uv_connect_t *req, int status)
{
    na_stream *s = req->data;
    if (s->closing || status == UV_ECANCELED)
        return;
    if (status == 0) {
        na_stream_connected(s);
        return;
    }
    s->last_err = status;
    if (s->t.kind == NA_SVC_TCP && s->ai_cur && s->ai_cur->ai_next) {
        uv_close(&s->u.h, na_stream_retry_closed); /* next resolved address */
        return;
    }
    na_stream_dial_fail(s, status, 0);
}

static void na_stream_try_next(na_stream *s)
{
    while (s->ai_cur && s->ai_cur->ai_family != AF_INET && s->ai_cur->ai_family != AF_INET6)
        s->ai_cur = s->ai_cur->ai_next;
    if (!s->ai_cur) {
        na_stream_dial_fail(s, s->last_err ? s->last_err : UV_EADDRNOTAVAIL, 0);
        return;
    }
    int rc = uv_tcp_init(s->host.loop, &s->u.tcp);
    if (rc < 0) {
        na_stream_dial_fail(s, rc, 0);
        return;
    }
    s->u.h.data = s;
    s->handle_inited = 1;
    s->refs++;
    s->creq.data = s;
    uv_tcp_nodelay(&s->u.tcp, 1); /* interactive streams (Wolf API, signalling) */
    rc = uv_tcp_connect(&s->creq, &s->u.tcp, s->ai_cur->ai_addr, na_stream_connect_cb);
    if (rc < 0) {
        s->last_err = rc;
        uv_close(&s->u.h, na_stream_retry_closed);
    }
}

static void na_stream_gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    na_stream *s = req->data;
    s->gai_pending = 0;
    if (s->closing) {
        if (res)
            uv_freeaddrinfo(res);
        na_stream_unref(s);
        return;
    }
    s->refs--; /* the timer still holds the stream */
    if (status < 0) {
        na_stream_dial_fail(s, status, 1);
        return;
    }
    s->ai_list = res;
    s->ai_cur = res;
    na_stream_try_next(s);
}

static void na_stream_timer_cb(uv_timer_t *t)
{
    na_stream *s = t->data;
    if (!s->connected && !s->closing)
        na_stream_dial_fail(s, UV_ETIMEDOUT, 0);
}

int na_stream_start(const na_stream_host *host, wp_mux *m, uint32_t id, const na_target *t,
                    uint32_t window, uint64_t deadline_ms, na_stream **out)
{
    if (!host || !host->loop || !host->send_error || !host->on_freed || !m || !t || !out)
        return WP_ERR_INVAL;
    na_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return WP_ERR_NOMEM;
    s->host = *host;
    s->mux = m;
    s->id = id;
    s->live = 1;
    s->t = *t;
    s->deadline_ms = deadline_ms ? deadline_ms : WP_OPEN_DEADLINE_MS;
    s->dial_start_ns = uv_hrtime();
    wp_buf_init(&s->pending, window ? window : WP_STREAM_INITIAL_WINDOW);
    uv_timer_init(host->loop, &s->timer);
    s->timer.data = s;
    s->refs = 1; /* the timer */
    (void)wp_mux_set_stream_ud(m, id, s);
    *out = s;
    uv_timer_start(&s->timer, na_stream_timer_cb, s->deadline_ms, 0);
    if (t->kind == NA_SVC_UNIX) {
        int rc = uv_pipe_init(host->loop, &s->u.pipe, 0);
        if (rc < 0) {
            na_stream_dial_fail(s, rc, 0);
            return 0;
        }
        s->u.h.data = s;
        s->handle_inited = 1;
        s->refs++;
        s->creq.data = s;
        uv_pipe_connect(&s->creq, &s->u.pipe, t->addr, na_stream_connect_cb);
        return 0;
    }
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", t->port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    s->gai.data = s;
    s->refs++;
    s->gai_pending = 1;
    int rc = uv_getaddrinfo(host->loop, &s->gai, na_stream_gai_cb, t->addr, portstr, &hints);
    if (rc < 0) {
        s->gai_pending = 0;
        s->refs--;
        na_stream_dial_fail(s, rc, 1);
    }
    return 0;
}

void na_stream_on_data(na_stream *s, const uint8_t *p, size_t n)
{
    if (!s || !s->live || s->closing)
        return;
    if (!s->connected) {
        /* Held until the dial completes; the window bounds it (the mux refuses overruns). */
        if (wp_buf_put(&s->pending, p, n) != 0)
            na_stream_fail(s, WP_STREAM_ERR_INTERNAL, "too many bytes before the local dial");
        return;
    }
    na_stream_write_local(s, p, n);
}

void na_stream_on_fin(na_stream *s)
{
    if (!s || s->closing)
        return;
    s->remote_fin = 1;
    na_stream_maybe_shutdown(s);
}

void na_stream_on_writable(na_stream *s)
{
    if (s)
        na_stream_push(s);
}

void na_stream_on_closed(na_stream *s, int reason)
{
    if (!s)
        return;
    s->live = 0;
    if (reason == WP_MUX_CLOSE_DONE && s->connected) {
        s->mux_done = 1;
        na_stream_maybe_shutdown(s);
        na_stream_maybe_finish(s);
        return;
    }
    na_stream_close(s, 1);
}

int na_stream_is_live(const na_stream *s)
{
    return s && s->live;
}
