/*
 * proxy.c — HTTP requests and WebSocket upgrades forwarded to a node's
 * services through its tunnel (see proxy.h): request rewriting, streamed
 * bodies both ways with backpressure, the upstream response parsed with
 * llhttp, and the hand-over of upgraded connections to the byte bridge.
 *
 * One cp_proxy per request. Its life: handler (body paused) → authenticate
 * (auth.h) → look the node or session up (database) → open a stream, write
 * the request head, resume the body → parse the response: headers start the
 * client's response, body pieces are written as they come → the response is
 * complete, the stream is reset, the cp_proxy freed (after its timer closed
 * and no database callback is outstanding).
 *
 * Flow control: upstream bytes are credited to the agent (cp_stream_consumed)
 * only when parsed AND their body bytes were accepted by the client's write
 * queue; a refused piece is held (one piece at most: parsing stops) until the
 * queue drains. Request bytes go into the stream as its window allows; the
 * client's body is paused meanwhile.
 */
#include "proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <wolfpack/proto.h>

#include "auth.h"
#include "bridge.h"
#include "db.h"
#include "err.h"
#include "ids.h"
#include "log.h"
#include "proxy_head.h"
#include "store.h"
#include "tunnel.h"
#include "tunnel_int.h"

#define CP_PROXY_HEAD_MAX      (32u * 1024u) /* request head sent upstream */
#define CP_PROXY_TO_STREAM_MAX (512u * 1024u)
#define CP_PROXY_IN_MAX        (WP_STREAM_INITIAL_WINDOW + WP_FRAME_MAX_DATA)
#define CP_PROXY_CREDS_MAX     4096
#define CP_PROXY_LEFTOVER_MAX  (192u * 1024u)
#define CP_PROXY_DRAIN_MS      5000 /* the service closes after its response within this */

enum { CP_PROXY_NODE = 1, CP_PROXY_MOONLIGHT = 2, CP_PROXY_SANDBOX = 3 };

typedef struct cp_proxy_route {
    cp_server *s;
    int kind;
} cp_proxy_route;

/* Process-wide: one wolfpackd server per process (proxy.h). */
static struct {
    cp_proxy_route routes[3];
    char creds[CP_PROXY_CREDS_MAX]; /* Moonlight Web credentials ("" = none); secret */
    unsigned timeout_ms;
    int tls;
} cp_proxy_conf;

typedef struct cp_proxy {
    cp_server *s;
    int kind;
    wp_http_req *req; /* NULL once answered, hijacked or aborted */
    cp_stream *st;
    uv_timer_t timer; /* open + response head deadline */
    llhttp_t parser;
    llhttp_settings_t settings;
    wp_buf to_stream;   /* request bytes the stream refused for now */
    wp_buf in;          /* upstream bytes not parsed yet */
    wp_buf to_client;   /* decoded body bytes the client's queue refused for now */
    cp_proxy_head rhdr; /* upstream response headers (proxy_head.h) */
    size_t owed;        /* parsed upstream bytes not credited yet */
    int status;         /* upstream status */
    unsigned ws : 1, chunked_up : 1, body_done : 1, head_done : 1, resp_started : 1,
        resp_complete : 1, upstream_fin : 1, draining : 1, db_pending : 1, closing : 1, is_head : 1,
        hpe_user : 1, upgrade_now : 1, processing : 1;
    const char *err_msg;
    char node[64];
    char service[WP_SERVICE_NAME_MAX + 1];
    char container[WP_SANDBOX_HOST_MAX + 1];
    char token_id[40];
    int role;
} cp_proxy;

static void cp_proxy_process(cp_proxy *p);

/* ------------------------------------------------------------------ */
/* lifetime                                                            */

static void cp_proxy_timer_closed(uv_handle_t *h)
{
    cp_proxy *p = h->data;
    wp_buf_free(&p->to_stream);
    wp_buf_free(&p->in);
    wp_buf_free(&p->to_client);
    cp_proxy_head_free(&p->rhdr);
    free(p);
}

/* Ends the proxy: the request must already be answered/aborted (p->req NULL). */
static void cp_proxy_finish(cp_proxy *p)
{
    if (p->req) {
        wp_http_req *req = p->req;
        p->req = NULL;
        wp_http_req_on_abort(req, NULL, NULL);
        wp_http_resp_on_drain(req, NULL, NULL);
        wp_http_resp_abort(req);
    }
    if (p->st) {
        cp_stream *st = p->st;
        p->st = NULL;
        cp_stream_reset(st);
    }
    if (p->closing)
        return;
    p->closing = 1;
    uv_timer_stop(&p->timer);
    if (!p->db_pending)
        uv_close((uv_handle_t *)&p->timer, cp_proxy_timer_closed);
}

/* Hands the request back (it is about to be answered); NULL if the client is gone. */
static wp_http_req *cp_proxy_take_req(cp_proxy *p)
{
    wp_http_req *req = p->req;
    p->req = NULL;
    if (req) {
        wp_http_req_on_abort(req, NULL, NULL);
        wp_http_resp_on_drain(req, NULL, NULL);
    }
    return req;
}

static void cp_proxy_fail(cp_proxy *p, int status, const char *code, const char *msg,
                          const char *reason)
{
    wp_http_req *req = cp_proxy_take_req(p);
    if (req) {
        if (p->resp_started) {
            wp_http_resp_abort(req); /* a response is on the wire: the client sees it cut */
        } else if (reason) {
            cJSON *root = cJSON_CreateObject();
            cJSON *e = cJSON_AddObjectToObject(root, "error");
            cJSON *d = e ? cJSON_AddObjectToObject(e, "details") : NULL;
            if (d && cJSON_AddStringToObject(e, "code", code) &&
                cJSON_AddStringToObject(e, "message", msg) &&
                cJSON_AddStringToObject(d, "reason", reason))
                wp_http_respond_json(req, status, root);
            else
                wp_http_respond_error(req, status, code, msg);
            cJSON_Delete(root);
        } else {
            if (status == 503)
                wp_http_resp_header(req, "Retry-After", "5");
            wp_http_respond_error(req, status, code, msg);
        }
    }
    cp_proxy_finish(p);
}

static void cp_proxy_aborted(wp_http_req *req, void *ud)
{
    (void)req;
    cp_proxy *p = ud;
    p->req = NULL; /* invalid now */
    cp_proxy_finish(p);
}

static void cp_proxy_timeout(uv_timer_t *t)
{
    cp_proxy *p = t->data;
    if (p->closing || p->resp_started)
        return;
    wp_log_info("proxy: upstream timeout", WP_LS("node", p->node), WP_LS("service", p->service));
    cp_proxy_fail(p, 504, "upstream_timeout", "the node's service did not answer in time", NULL);
}

/* ------------------------------------------------------------------ */
/* request → stream                                                    */

/* Writes what the stream takes; 1 when nothing is left. */
static int cp_proxy_flush_to_stream(cp_proxy *p)
{
    while (wp_buf_len(&p->to_stream) > 0 && p->st) {
        int k = cp_stream_write(p->st, wp_buf_ptr(&p->to_stream), wp_buf_len(&p->to_stream));
        if (k < 0) {
            cp_proxy_fail(p, 502, "bad_gateway", "the stream to the node failed", NULL);
            return 0;
        }
        if (k == 0)
            return 0;
        wp_buf_consume(&p->to_stream, (size_t)k);
    }
    return wp_buf_len(&p->to_stream) == 0;
}

static void cp_proxy_body_data(wp_http_req *req, const uint8_t *d, size_t n, void *ud)
{
    cp_proxy *p = ud;
    if (p->closing || p->ws)
        return;
    int rc = 0;
    if (p->chunked_up) {
        char hx[24];
        snprintf(hx, sizeof(hx), "%zx\r\n", n);
        rc = wp_buf_put_str(&p->to_stream, hx);
        if (rc == 0)
            rc = wp_buf_put(&p->to_stream, d, n);
        if (rc == 0)
            rc = wp_buf_put_str(&p->to_stream, "\r\n");
    } else {
        rc = wp_buf_put(&p->to_stream, d, n);
    }
    if (rc != 0) {
        cp_proxy_fail(p, 500, "internal", "request body buffer overrun", NULL);
        return;
    }
    if (!cp_proxy_flush_to_stream(p) && !p->closing)
        wp_http_req_pause(req); /* on_writable resumes */
}

static void cp_proxy_body_end(wp_http_req *req, void *ud)
{
    (void)req;
    cp_proxy *p = ud;
    if (p->closing)
        return;
    p->body_done = 1;
    if (p->chunked_up && !p->ws && wp_buf_put_str(&p->to_stream, "0\r\n\r\n") != 0) {
        cp_proxy_fail(p, 500, "internal", "request body buffer overrun", NULL);
        return;
    }
    cp_proxy_flush_to_stream(p);
}

/* ------------------------------------------------------------------ */
/* response head                                                       */

static int cp_hdr_is(const char *name, const char *const *list)
{
    for (size_t i = 0; list[i]; i++)
        if (strcasecmp(name, list[i]) == 0)
            return 1;
    return 0;
}

/* Is `name` one of the comma-separated tokens of a Connection header value? */
static int cp_hdr_in_connection(const char *conn, const char *name)
{
    if (!conn)
        return 0;
    size_t nl = strlen(name);
    const char *q = conn;
    while (*q) {
        while (*q == ' ' || *q == '\t' || *q == ',')
            q++;
        const char *e = q;
        while (*e && *e != ',' && *e != ' ' && *e != '\t')
            e++;
        if ((size_t)(e - q) == nl && strncasecmp(q, name, nl) == 0)
            return 1;
        q = e;
    }
    return 0;
}

static const char *const cp_resp_drop[] = {"connection",
                                           "keep-alive",
                                           "proxy-connection",
                                           "te",
                                           "trailer",
                                           "transfer-encoding",
                                           "upgrade",
                                           "content-length",
                                           "date",
                                           "proxy-authenticate",
                                           NULL};

/* 101 from the service: take the client's connection and bridge it to the stream. */
static void cp_proxy_upgrade(cp_proxy *p)
{
    wp_http_req *req = p->req;
    if (!req) {
        cp_proxy_finish(p);
        return;
    }
    wp_buf head;
    wp_buf_init(&head, CP_PROXY_RHDR_MAX + 1024 + CP_PROXY_IN_MAX);
    int rc = wp_buf_put_str(&head, "HTTP/1.1 101 Switching Protocols\r\n");
    size_t off = 0;
    const char *v, *n;
    while (rc == 0 && (n = cp_proxy_head_next(&p->rhdr, &off, &v)) != NULL)
        rc = wp_buf_putf(&head, "%s: %s\r\n", n, v);
    if (rc == 0)
        rc = wp_buf_put_str(&head, "\r\n");
    size_t rest = wp_buf_len(&p->in);
    if (rc == 0 && rest)
        rc = wp_buf_put(&head, wp_buf_ptr(&p->in), rest);
    if (rc != 0) {
        wp_buf_free(&head);
        cp_proxy_fail(p, 502, "bad_gateway", "upgrade response too large", NULL);
        return;
    }
    wp_buf_reset(&p->in);
    wp_buf leftover;
    wp_buf_init(&leftover, CP_PROXY_LEFTOVER_MAX);
    wp_conn *conn = NULL;
    wp_http_req_on_abort(req, NULL, NULL);
    wp_http_resp_on_drain(req, NULL, NULL);
    rc = wp_http_req_hijack(req, &conn, &leftover);
    if (rc != 0) {
        wp_buf_free(&head);
        wp_buf_free(&leftover);
        if (rc == WP_ERR_CLOSED)
            p->req = NULL; /* finished by the server */
        else
            wp_http_req_on_abort(req, cp_proxy_aborted, p);
        cp_proxy_fail(p, 502, "bad_gateway", "cannot take over the connection", NULL);
        return;
    }
    p->req = NULL;
    cp_stream *st = p->st;
    p->st = NULL;
    if (p->owed) {
        cp_stream_consumed(st, p->owed);
        p->owed = 0;
    }
    char what[64];
    snprintf(what, sizeof(what), "proxy %s websocket", p->service);
    cp_bridge_opts o = {.node = p->node,
                        .what = what,
                        .to_client = wp_buf_ptr(&head),
                        .to_client_len = wp_buf_len(&head),
                        .to_client_credit = rest,
                        .to_node = &leftover};
    cp_bridge_start(p->s, st, conn, &o); /* owns both, whatever it returns */
    wp_buf_free(&head);
    wp_buf_free(&leftover);
    cp_proxy_finish(p);
}

static void cp_proxy_resp_drain(wp_http_req *req, void *ud);

/* Final response head from the service: start the client's response. 0, 1 (no body) or -1. */
static int cp_proxy_start_response(cp_proxy *p)
{
    wp_http_req *req = p->req;
    if (!req)
        return -1;
    uv_timer_stop(&p->timer);
    const char *conn_hdr = cp_proxy_head_get(&p->rhdr, "connection");
    size_t off = 0;
    const char *v, *n;
    while ((n = cp_proxy_head_next(&p->rhdr, &off, &v)) != NULL) {
        if (cp_hdr_is(n, cp_resp_drop) || cp_hdr_in_connection(conn_hdr, n))
            continue;
        int rc = wp_http_resp_header(req, n, v);
        if (rc == WP_ERR_LIMIT) {
            p->err_msg = "response headers too large";
            return -1;
        }
        /* WP_ERR_INVAL: a name or value the server refuses to send: dropped */
    }
    int st = p->status;
    int has_len = (p->parser.flags & F_CONTENT_LENGTH) && !(p->parser.flags & F_CHUNKED);
    int no_body = p->is_head || st == 204 || st == 304;
    wp_http_resp_on_drain(req, cp_proxy_resp_drain, p);
    int rc;
    if (st == 204 || st == 304 || (p->is_head && !has_len)) {
        p->req = NULL;
        wp_http_req_on_abort(req, NULL, NULL);
        wp_http_resp_on_drain(req, NULL, NULL);
        p->resp_started = 1;
        p->resp_complete = 1;
        wp_http_respond(req, st, NULL, NULL, 0);
        return 1;
    }
    if (has_len)
        rc = wp_http_resp_begin_length(req, st, NULL, p->parser.content_length);
    else
        rc = wp_http_resp_begin(req, st, NULL);
    if (rc != 0) {
        p->err_msg = rc == WP_ERR_INVAL ? "unusable response status" : "client went away";
        return -1;
    }
    p->resp_started = 1;
    return no_body ? 1 : 0;
}

/* ---- llhttp callbacks (response parser; p = parser.data) ---- */

static int cp_ph_fail(cp_proxy *p, const char *msg)
{
    if (!p->err_msg)
        p->err_msg = msg;
    p->hpe_user = 1;
    return HPE_USER;
}

static int cp_ph_message_begin(llhttp_t *ps)
{
    cp_proxy *p = ps->data;
    cp_proxy_head_reset(&p->rhdr);
    return 0;
}

/* A cp_proxy_head_* answer as an llhttp callback result. */
static int cp_ph_head_rc(cp_proxy *p, int rc)
{
    return rc == 0 ? 0 : cp_ph_fail(p, p->rhdr.err);
}

static int cp_ph_field(llhttp_t *ps, const char *at, size_t n)
{
    cp_proxy *p = ps->data;
    return cp_ph_head_rc(p, cp_proxy_head_field(&p->rhdr, at, n));
}

static int cp_ph_field_complete(llhttp_t *ps)
{
    cp_proxy *p = ps->data;
    return cp_ph_head_rc(p, cp_proxy_head_field_done(&p->rhdr));
}

static int cp_ph_value(llhttp_t *ps, const char *at, size_t n)
{
    cp_proxy *p = ps->data;
    return cp_ph_head_rc(p, cp_proxy_head_value(&p->rhdr, at, n));
}

static int cp_ph_value_complete(llhttp_t *ps)
{
    cp_proxy *p = ps->data;
    return cp_ph_head_rc(p, cp_proxy_head_value_done(&p->rhdr));
}

static int cp_ph_headers_complete(llhttp_t *ps)
{
    cp_proxy *p = ps->data;
    p->status = ps->status_code;
    if (p->status == 101) {
        if (!p->ws)
            return cp_ph_fail(p, "unexpected 101 from the service");
        p->upgrade_now = 1;
        return HPE_PAUSED;
    }
    if (p->status < 200)
        return 0; /* interim (100 Continue, ...): dropped, the final one follows */
    if (p->head_done)
        return cp_ph_fail(p, "second response from the service");
    p->head_done = 1;
    int rc = cp_proxy_start_response(p);
    if (rc < 0)
        return cp_ph_fail(p, p->err_msg ? p->err_msg : "cannot answer");
    return rc; /* 1: no body (HEAD) */
}

static int cp_ph_body(llhttp_t *ps, const char *at, size_t n)
{
    cp_proxy *p = ps->data;
    if (n == 0 || !p->req)
        return 0;
    if (wp_buf_len(&p->to_client) == 0) {
        int rc = wp_http_resp_write(p->req, at, n);
        if (rc == 0)
            return 0;
        if (rc != WP_ERR_LIMIT)
            return cp_ph_fail(p, "client write failed");
    }
    if (wp_buf_put(&p->to_client, at, n) != 0)
        return cp_ph_fail(p, "response buffer overrun");
    return HPE_PAUSED; /* parse on once the client's queue drained */
}

static int cp_ph_message_complete(llhttp_t *ps)
{
    cp_proxy *p = ps->data;
    if (!p->head_done)
        return 0; /* an interim response ended */
    p->resp_complete = 1;
    return HPE_PAUSED; /* ignore anything after */
}

/* ------------------------------------------------------------------ */
/* response body → client                                              */

static void cp_proxy_credit(cp_proxy *p)
{
    if (p->owed && p->st && wp_buf_len(&p->to_client) == 0) {
        cp_stream_consumed(p->st, p->owed);
        p->owed = 0;
    }
}

static void cp_proxy_drain_timeout(uv_timer_t *t)
{
    cp_proxy *p = t->data;
    wp_log_debug("proxy: the service kept its connection open", WP_LS("node", p->node),
                 WP_LS("service", p->service));
    cp_proxy_finish(p); /* resets the stream */
}

/*
 * The exchange is over: the stream is closed the way the service ends it. We
 * asked for "Connection: close", so the service half-closes first; our FIN
 * follows its FIN (a reset is the fallback after CP_PROXY_DRAIN_MS). Closing
 * first, or resetting a stream whose service is still closing, has been seen
 * to delay the agent's answers on the next streams (reported), and is also
 * ruder to the service.
 */
static void cp_proxy_drain(cp_proxy *p)
{
    if (!p->st || p->closing) {
        cp_proxy_finish(p);
        return;
    }
    p->draining = 1;
    if (p->owed) {
        cp_stream_consumed(p->st, p->owed);
        p->owed = 0;
    }
    if (p->upstream_fin)
        cp_stream_close_write(p->st);
    uv_timer_start(&p->timer, cp_proxy_drain_timeout, CP_PROXY_DRAIN_MS, 0);
}

/* The response is complete and everything is queued for the client: end it. */
static void cp_proxy_complete(cp_proxy *p)
{
    wp_http_req *req = cp_proxy_take_req(p);
    if (req)
        wp_http_resp_end(req);
    cp_proxy_drain(p);
}

/* Malformed, truncated or failed response. */
static void cp_proxy_bad_response(cp_proxy *p, const char *msg)
{
    wp_log_info("proxy: bad response from the service", WP_LS("node", p->node),
                WP_LS("service", p->service), WP_LS("why", msg));
    cp_proxy_fail(p, 502, "bad_gateway", msg, NULL);
}

static void cp_proxy_process(cp_proxy *p)
{
    if (p->processing || p->draining)
        return;
    p->processing = 1;
    while (!p->closing && !p->resp_complete && wp_buf_len(&p->to_client) == 0) {
        size_t n = wp_buf_len(&p->in);
        if (n == 0) {
            if (!p->upstream_fin)
                break;
            llhttp_finish(&p->parser); /* completes a read-to-EOF body */
            if (!p->resp_complete)
                cp_proxy_bad_response(p, p->head_done ? "the response was cut short"
                                                      : "the service closed without a response");
            break;
        }
        const char *d = (const char *)wp_buf_ptr(&p->in);
        llhttp_errno_t e = llhttp_execute(&p->parser, d, n);
        size_t used = n;
        if (e != HPE_OK) {
            const char *ep = llhttp_get_error_pos(&p->parser);
            used = ep && ep >= d && ep <= d + n ? (size_t)(ep - d) : n;
        }
        wp_buf_consume(&p->in, used);
        p->owed += used;
        if (p->closing)
            break;
        if (e == HPE_OK)
            continue;
        if (e == HPE_PAUSED) {
            llhttp_resume(&p->parser);
            if (p->upgrade_now) {
                p->processing = 0;
                cp_proxy_upgrade(p);
                return;
            }
            continue;
        }
        if (e == HPE_PAUSED_UPGRADE) {
            cp_proxy_bad_response(p, "unexpected upgrade from the service");
            break;
        }
        cp_proxy_bad_response(p, p->err_msg ? p->err_msg : "malformed response from the service");
        break;
    }
    p->processing = 0;
    if (p->closing)
        return;
    cp_proxy_credit(p);
    if (p->resp_complete && wp_buf_len(&p->to_client) == 0) {
        if (p->req == NULL && p->resp_started)
            cp_proxy_drain(p); /* 204/304/HEAD answered already */
        else
            cp_proxy_complete(p);
    }
}

static void cp_proxy_resp_drain(wp_http_req *req, void *ud)
{
    cp_proxy *p = ud;
    if (p->closing)
        return;
    size_t n = wp_buf_len(&p->to_client);
    if (n > 0) {
        int rc = wp_http_resp_write(req, wp_buf_ptr(&p->to_client), n);
        if (rc == WP_ERR_LIMIT)
            return;
        if (rc != 0) {
            cp_proxy_fail(p, 502, "bad_gateway", "client write failed", NULL);
            return;
        }
        wp_buf_reset(&p->to_client);
    }
    cp_proxy_process(p);
}

/* ------------------------------------------------------------------ */
/* stream callbacks                                                    */

static void cp_proxy_st_open(cp_stream *st, int err, const char *reason, void *ud)
{
    (void)st;
    cp_proxy *p = ud;
    if (err == 0)
        return;
    p->st = NULL; /* final: freed after this returns */
    wp_log_info("proxy: stream refused", WP_LS("node", p->node), WP_LS("service", p->service),
                WP_LS("reason", reason));
    char msg[200];
    if (err == WP_ERR_TIMEOUT) {
        cp_proxy_fail(p, 504, "upstream_timeout", "the node did not open the stream in time", NULL);
    } else if (err == WP_ERR_CLOSED) {
        cp_proxy_fail(p, 502, "node_unreachable", "the node's tunnel closed", NULL);
    } else {
        snprintf(msg, sizeof(msg), "node %s did not open service %s: %s", p->node, p->service,
                 reason);
        cp_proxy_fail(p, 502, "upstream_refused", msg, reason);
    }
}

static void cp_proxy_st_data(cp_stream *st, const uint8_t *d, size_t n, void *ud)
{
    (void)st;
    cp_proxy *p = ud;
    if (p->closing)
        return;
    if (p->resp_complete) { /* anything after the response: dropped */
        cp_stream_consumed(st, n);
        return;
    }
    if (wp_buf_put(&p->in, d, n) != 0) {
        cp_proxy_bad_response(p, "the node overran its window");
        return;
    }
    cp_proxy_process(p);
}

static void cp_proxy_st_fin(cp_stream *st, void *ud)
{
    cp_proxy *p = ud;
    if (p->closing)
        return;
    p->upstream_fin = 1;
    if (p->draining) {
        cp_stream_close_write(st);
        return;
    }
    cp_proxy_process(p);
}

static void cp_proxy_st_writable(cp_stream *st, void *ud)
{
    (void)st;
    cp_proxy *p = ud;
    if (p->closing || !cp_proxy_flush_to_stream(p))
        return;
    if (p->req && !p->body_done && !p->resp_complete)
        wp_http_req_resume(p->req);
}

static void cp_proxy_st_closed(cp_stream *st, int err, const char *reason, void *ud)
{
    (void)st;
    cp_proxy *p = ud;
    p->st = NULL;
    if (p->closing)
        return;
    if (p->draining) {
        cp_proxy_finish(p);
        return;
    }
    if (err == 0 || p->resp_complete) {
        p->upstream_fin = 1;
        cp_proxy_process(p);
        if (!p->closing && !p->resp_complete)
            cp_proxy_bad_response(p, "the stream ended before the response did");
        return;
    }
    char msg[160];
    snprintf(msg, sizeof(msg), "the stream to the node ended: %s", reason);
    cp_proxy_fail(p, 502, "bad_gateway", msg, NULL);
}

static const cp_stream_callbacks cp_proxy_st_cbs = {
    .on_open = cp_proxy_st_open,
    .on_data = cp_proxy_st_data,
    .on_fin = cp_proxy_st_fin,
    .on_writable = cp_proxy_st_writable,
    .on_closed = cp_proxy_st_closed,
};

/* ------------------------------------------------------------------ */
/* the forwarded request                                               */

static const char *const cp_req_drop[] = {"host",
                                          "connection",
                                          "keep-alive",
                                          "te",
                                          "trailer",
                                          "transfer-encoding",
                                          "upgrade",
                                          "proxy-authorization",
                                          "proxy-connection",
                                          "authorization",
                                          "cookie",
                                          "content-length",
                                          "expect",
                                          "x-forwarded-for",
                                          "x-forwarded-proto",
                                          "x-forwarded-host",
                                          "forwarded",
                                          NULL};

/* The raw path after `skip` segments ("/a/b/c/d", 2 -> "/c/d"); "/" when nothing is left. */
static const char *cp_proxy_rest(const char *path, int skip)
{
    const char *q = path;
    for (int i = 0; i < skip && q; i++)
        q = strchr(q + 1, '/');
    return q && *q ? q : "/";
}

/* Appends the query without access_token parameters. */
static int cp_proxy_put_query(wp_buf *b, const char *q)
{
    int first = 1;
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t n = amp ? (size_t)(amp - q) : strlen(q);
        int drop = (n >= 12 && strncmp(q, "access_token", 12) == 0 && (n == 12 || q[12] == '='));
        if (!drop && n > 0) {
            if (wp_buf_put_str(b, first ? "?" : "&") != 0 || wp_buf_put(b, q, n) != 0)
                return WP_ERR_LIMIT;
            first = 0;
        }
        if (!amp)
            break;
        q = amp + 1;
    }
    return 0;
}

/* "ip:port" / "[v6]:port" -> ip. */
static void cp_proxy_client_ip(const char *peer, char *out, size_t cap)
{
    if (peer[0] == '[') {
        const char *e = strchr(peer, ']');
        size_t n = e ? (size_t)(e - peer - 1) : 0;
        snprintf(out, cap, "%.*s", (int)n, peer + 1);
        return;
    }
    const char *c = strrchr(peer, ':');
    size_t n = c ? (size_t)(c - peer) : strlen(peer);
    snprintf(out, cap, "%.*s", (int)n, peer);
}

static int cp_proxy_build_head(cp_proxy *p, wp_http_req *req, wp_buf *h)
{
    int skip = p->kind == CP_PROXY_NODE ? 6 : 5;
    const char *rest = cp_proxy_rest(wp_http_req_path(req), skip);
    int rc = wp_buf_putf(h, "%s %s", wp_http_req_method(req), rest);
    if (rc == 0)
        rc = cp_proxy_put_query(h, wp_http_req_query(req));
    if (rc == 0)
        rc = wp_buf_putf(h, " HTTP/1.1\r\nHost: %s\r\n", p->service);
    const char *conn_hdr = wp_http_req_header(req, "connection");
    size_t nh = wp_http_req_header_count(req);
    for (size_t i = 0; rc == 0 && i < nh; i++) {
        const char *n, *v;
        if (wp_http_req_header_at(req, i, &n, &v) != 0)
            continue;
        if (cp_hdr_is(n, cp_req_drop) || cp_hdr_in_connection(conn_hdr, n))
            continue;
        rc = wp_buf_putf(h, "%s: %s\r\n", n, v);
    }
    if (rc == 0 && cp_proxy_conf.creds[0] &&
        (p->kind == CP_PROXY_MOONLIGHT || strcmp(p->service, "moonlight") == 0))
        rc = wp_buf_putf(h, "Authorization: Bearer %s\r\n", cp_proxy_conf.creds);
    char ip[64];
    cp_proxy_client_ip(wp_http_req_remote_addr(req), ip, sizeof(ip));
    if (rc == 0)
        rc = wp_buf_putf(h, "X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\n", ip,
                         cp_proxy_conf.tls ? "https" : "http");
    const char *cl = wp_http_req_header(req, "content-length");
    const char *te = wp_http_req_header(req, "transfer-encoding");
    if (rc == 0 && !p->ws) {
        if (cl)
            rc = wp_buf_putf(h, "Content-Length: %s\r\n", cl);
        else if (te) {
            p->chunked_up = 1;
            rc = wp_buf_put_str(h, "Transfer-Encoding: chunked\r\n");
        }
    }
    if (rc == 0)
        rc = p->ws ? wp_buf_putf(h, "Connection: Upgrade\r\nUpgrade: %s\r\n",
                                 wp_http_req_header(req, "upgrade"))
                   : wp_buf_put_str(h, "Connection: close\r\n");
    if (rc == 0)
        rc = wp_buf_put_str(h, "\r\n");
    return rc;
}

/* Opens the stream and sends the request head; answers on failure. */
static void cp_proxy_open(cp_proxy *p)
{
    wp_http_req *req = p->req;
    char preamble[WP_PREAMBLE_MAX];
    if (p->kind == CP_PROXY_SANDBOX)
        snprintf(preamble, sizeof(preamble), "{\"service\":\"sandbox\",\"host\":\"%s\"}",
                 p->container);
    else
        snprintf(preamble, sizeof(preamble), "{\"service\":\"%s\"}", p->service);
    wp_buf head;
    wp_buf_init(&head, CP_PROXY_HEAD_MAX);
    if (cp_proxy_build_head(p, req, &head) != 0) {
        wp_buf_free(&head);
        cp_proxy_fail(p, 431, "header_too_large", "request headers too large to forward", NULL);
        return;
    }
    int rc = cp_tunnel_open_stream(p->s, p->node, preamble, &cp_proxy_st_cbs, p, &p->st);
    if (rc != 0) {
        wp_buf_free(&head);
        if (rc == WP_ERR_NOT_FOUND)
            cp_proxy_fail(p, 502, "node_unreachable", "the node is not connected", NULL);
        else
            cp_proxy_fail(p, 503, "tunnel_busy", "the node's tunnel takes no new streams now",
                          NULL);
        return;
    }
    rc = wp_buf_put(&p->to_stream, wp_buf_ptr(&head), wp_buf_len(&head));
    wp_buf_free(&head);
    if (rc != 0) {
        cp_proxy_fail(p, 500, "internal", "out of memory", NULL);
        return;
    }
    uv_timer_start(&p->timer, cp_proxy_timeout, cp_proxy_conf.timeout_ms, 0);
    if (cp_proxy_flush_to_stream(p) && p->req)
        wp_http_req_resume(p->req);
}

/* ------------------------------------------------------------------ */
/* looking up the target                                               */

static void cp_proxy_db_done(cp_proxy *p)
{
    p->db_pending = 0;
    if (p->closing) {
        uv_close((uv_handle_t *)&p->timer, cp_proxy_timer_closed);
        return;
    }
    if (!p->req)
        cp_proxy_finish(p);
}

static void cp_proxy_node_looked_up(int err, PGresult *res, void *ud)
{
    cp_proxy *p = ud;
    cp_proxy_db_done(p);
    if (p->closing)
        return;
    if (err != 0)
        cp_proxy_fail(p, 503, "database_unavailable", "the database is not reachable", NULL);
    else if (PQntuples(res) == 0)
        cp_proxy_fail(p, 404, "not_found", "no such node", NULL);
    else if (cp_tunnel_connected(p->s, p->node))
        cp_proxy_open(p); /* it connected meanwhile */
    else
        cp_proxy_fail(p, 502, "node_unreachable", "the node is not connected", NULL);
}

static void cp_proxy_session_looked_up(int err, PGresult *res, void *ud)
{
    cp_proxy *p = ud;
    cp_proxy_db_done(p);
    if (p->closing)
        return;
    if (err != 0) {
        cp_proxy_fail(p, 503, "database_unavailable", "the database is not reachable", NULL);
        return;
    }
    if (PQntuples(res) != 1 ||
        (!(p->role & CP_ROLE_ADMIN) && strcmp(PQgetvalue(res, 0, 3), p->token_id) != 0)) {
        cp_proxy_fail(p, 404, "not_found", "no such session", NULL);
        return;
    }
    const char *node = PQgetvalue(res, 0, 0);
    const char *status = PQgetvalue(res, 0, 1);
    const char *container = PQgetvalue(res, 0, 2);
    if ((strcmp(status, "running") != 0 && strcmp(status, "starting") != 0) || !node[0]) {
        char msg[96];
        snprintf(msg, sizeof(msg), "the session is %s", status);
        cp_proxy_fail(p, 409, "session_not_running", msg, NULL);
        return;
    }
    if (p->kind == CP_PROXY_SANDBOX && !container[0]) {
        cp_proxy_fail(p, 409, "no_sandbox", "the session has no sandbox container", NULL);
        return;
    }
    snprintf(p->node, sizeof(p->node), "%s", node);
    snprintf(p->container, sizeof(p->container), "%s", container);
    if (!cp_tunnel_connected(p->s, p->node)) {
        cp_proxy_fail(p, 502, "node_unreachable", "the session's node is not connected", NULL);
        return;
    }
    cp_proxy_open(p);
}

static void cp_proxy_authed(cp_call *call)
{
    cp_proxy *p = call->data;
    wp_http_req *req = cp_call_req(call);
    snprintf(p->token_id, sizeof(p->token_id), "%s", call->who.token_id);
    p->role = call->who.role;
    cp_call_done(call); /* the request is ours again (its abort hook cleared) */
    if (!req) {
        p->req = NULL;
        cp_proxy_finish(p);
        return;
    }
    wp_http_req_on_abort(req, cp_proxy_aborted, p);
    const char *id = wp_http_req_param(req, "id");
    int rc;
    if (p->kind == CP_PROXY_NODE) {
        const char *svc = wp_http_req_param(req, "service");
        if (!wp_node_id_valid(id) || !wp_service_name_valid(svc)) {
            cp_proxy_fail(p, 400, "bad_request", "invalid node id or service name", NULL);
            return;
        }
        if (strcmp(svc, WP_PREAMBLE_SERVICE_SANDBOX) == 0) {
            cp_proxy_fail(p, 400, "bad_request",
                          "sandboxes are reached through /api/v1/sessions/{id}/sandbox/", NULL);
            return;
        }
        snprintf(p->node, sizeof(p->node), "%s", id);
        snprintf(p->service, sizeof(p->service), "%s", svc);
        if (cp_tunnel_connected(p->s, p->node)) {
            cp_proxy_open(p);
            return;
        }
        const char *params[] = {p->node};
        rc = cp_db_query(cp_store_db(p->s->store), "SELECT 1 FROM nodes WHERE id = $1", 1, params,
                         cp_proxy_node_looked_up, p);
    } else {
        if (!id || !wp_uuid_valid(id)) {
            cp_proxy_fail(p, 400, "bad_request", "session id must be a uuid", NULL);
            return;
        }
        snprintf(p->service, sizeof(p->service), "%s",
                 p->kind == CP_PROXY_MOONLIGHT ? "moonlight" : WP_PREAMBLE_SERVICE_SANDBOX);
        const char *params[] = {id};
        rc = cp_db_query(cp_store_db(p->s->store),
                         "SELECT coalesce(node_id, ''), status, coalesce(sandbox_container, ''), "
                         "coalesce(owner_token_id::text, '') FROM sessions WHERE id = $1::uuid",
                         1, params, cp_proxy_session_looked_up, p);
    }
    if (rc != 0) {
        cp_proxy_fail(p, rc == WP_ERR_CLOSED ? 503 : 503,
                      rc == WP_ERR_CLOSED ? "database_unavailable" : "busy",
                      "the database cannot take the lookup now", NULL);
        return;
    }
    p->db_pending = 1;
}

static void cp_proxy_auth_failed(void *data)
{
    cp_proxy *p = data;
    p->req = NULL; /* answered by auth */
    cp_proxy_finish(p);
}

/* Is this a WebSocket upgrade request (GET, Upgrade: websocket, Connection: upgrade)? */
static int cp_proxy_is_ws(wp_http_req *req)
{
    const char *up = wp_http_req_header(req, "upgrade");
    return strcmp(wp_http_req_method(req), "GET") == 0 && up && strcasecmp(up, "websocket") == 0 &&
           cp_hdr_in_connection(wp_http_req_header(req, "connection"), "upgrade");
}

static void cp_proxy_handler(wp_http_req *req, void *ud)
{
    const cp_proxy_route *r = ud;
    if (!cp_tunnels_running(r->s)) {
        wp_http_respond_error(req, 503, "unavailable", "the server is shutting down");
        return;
    }
    cp_proxy *p = calloc(1, sizeof(*p));
    if (!p) {
        wp_http_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    p->s = r->s;
    p->kind = r->kind;
    p->req = req;
    p->ws = cp_proxy_is_ws(req);
    p->is_head = strcmp(wp_http_req_method(req), "HEAD") == 0;
    wp_buf_init(&p->to_stream, CP_PROXY_TO_STREAM_MAX);
    wp_buf_init(&p->in, CP_PROXY_IN_MAX);
    wp_buf_init(&p->to_client, CP_PROXY_IN_MAX);
    cp_proxy_head_init(&p->rhdr);
    uv_timer_init(r->s->loop, &p->timer);
    p->timer.data = p;
    llhttp_settings_init(&p->settings);
    p->settings.on_message_begin = cp_ph_message_begin;
    p->settings.on_header_field = cp_ph_field;
    p->settings.on_header_field_complete = cp_ph_field_complete;
    p->settings.on_header_value = cp_ph_value;
    p->settings.on_header_value_complete = cp_ph_value_complete;
    p->settings.on_headers_complete = cp_ph_headers_complete;
    p->settings.on_body = cp_ph_body;
    p->settings.on_message_complete = cp_ph_message_complete;
    llhttp_init(&p->parser, HTTP_RESPONSE, &p->settings);
    p->parser.data = p;
    wp_http_req_on_body(req, cp_proxy_body_data, cp_proxy_body_end, p);
    wp_http_req_pause(req); /* until the stream is open */
    unsigned roles = r->kind == CP_PROXY_NODE ? CP_ROLE_ADMIN : (CP_ROLE_ADMIN | CP_ROLE_USER);
    const char *auth = wp_http_req_header(req, "authorization");
    char tok[300];
    if (!auth && p->ws && wp_http_req_query_get(req, "access_token", tok, sizeof(tok)) > 0) {
        cp_auth_request_token(p->s, req, tok, roles, cp_proxy_authed, cp_proxy_auth_failed, p);
        memset(tok, 0, sizeof(tok));
        return;
    }
    cp_auth_request(p->s, req, roles, cp_proxy_authed, cp_proxy_auth_failed, p);
}

/* ------------------------------------------------------------------ */
/* registration                                                        */

static int cp_proxy_load_creds(const cp_config *cfg)
{
    cp_proxy_conf.creds[0] = '\0';
    if (cfg->moonlight_credentials && cfg->moonlight_credentials[0]) {
        if (strlen(cfg->moonlight_credentials) >= sizeof(cp_proxy_conf.creds))
            return WP_ERR_IO;
        snprintf(cp_proxy_conf.creds, sizeof(cp_proxy_conf.creds), "%s",
                 cfg->moonlight_credentials);
    } else if (cfg->moonlight_credentials_file) {
        int fd = open(cfg->moonlight_credentials_file, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            wp_log_error("cannot open --moonlight-credentials-file",
                         WP_LS("path", cfg->moonlight_credentials_file),
                         WP_LS("error", strerror(errno)));
            return WP_ERR_IO;
        }
        ssize_t n = read(fd, cp_proxy_conf.creds, sizeof(cp_proxy_conf.creds) - 1);
        close(fd);
        if (n < 0 || (size_t)n >= sizeof(cp_proxy_conf.creds) - 1) {
            wp_log_error("--moonlight-credentials-file unreadable or too large",
                         WP_LS("path", cfg->moonlight_credentials_file));
            memset(cp_proxy_conf.creds, 0, sizeof(cp_proxy_conf.creds));
            return WP_ERR_IO;
        }
        cp_proxy_conf.creds[n] = '\0';
        while (n > 0 && (cp_proxy_conf.creds[n - 1] == '\n' || cp_proxy_conf.creds[n - 1] == '\r' ||
                         cp_proxy_conf.creds[n - 1] == ' '))
            cp_proxy_conf.creds[--n] = '\0';
        if (n == 0) {
            wp_log_error("--moonlight-credentials-file is empty",
                         WP_LS("path", cfg->moonlight_credentials_file));
            return WP_ERR_IO;
        }
    }
    for (const char *c = cp_proxy_conf.creds; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) {
            wp_log_error("Moonlight Web credentials hold a control character");
            memset(cp_proxy_conf.creds, 0, sizeof(cp_proxy_conf.creds));
            return WP_ERR_IO;
        }
    if (cp_proxy_conf.creds[0])
        wp_log_secret_add(cp_proxy_conf.creds);
    return 0;
}

int cp_proxy_register(cp_server *s)
{
    static const struct {
        const char *pattern;
        int kind;
    } routes[] = {
        {"/api/v1/nodes/{id}/proxy/{service}/{path...}", CP_PROXY_NODE},
        {"/api/v1/sessions/{id}/moonlight/{path...}", CP_PROXY_MOONLIGHT},
        {"/api/v1/sessions/{id}/sandbox/{path...}", CP_PROXY_SANDBOX},
    };
    int rc = cp_proxy_load_creds(s->cfg);
    if (rc != 0)
        return rc;
    long long t = s->cfg->proxy_timeout_s > 0 ? s->cfg->proxy_timeout_s : 30;
    cp_proxy_conf.timeout_ms = (unsigned)(t * 1000);
    cp_proxy_conf.tls = !s->cfg->no_tls;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        cp_proxy_conf.routes[i].s = s;
        cp_proxy_conf.routes[i].kind = routes[i].kind;
        rc = wp_http_server_route(s->http, "*", routes[i].pattern, cp_proxy_handler,
                                  &cp_proxy_conf.routes[i],
                                  WP_HTTP_ROUTE_STREAM_BODY | WP_HTTP_ROUTE_UPGRADE);
        if (rc != 0)
            return rc;
    }
    return 0;
}
