/*
 * http.h — the HTTP/1.1 server shared by wolfpackd and wolfpack-agent (libuv + llhttp, strict).
 *
 * One wp_http_server owns listeners (plain or TLS through wp_conn), a router
 * and its connections. Requests on a connection are parsed one at a time:
 * while a response is outstanding the parser is paused and further
 * (pipelined) bytes are buffered up to max_pending_bytes, after which the
 * socket is not read; responses go out strictly in order.
 *
 * Handlers:
 *   - buffered routes (default): the handler runs once the whole request,
 *     body included (max_body), has arrived;
 *   - WP_HTTP_ROUTE_STREAM_BODY: the handler runs right after the headers;
 *     it registers wp_http_req_on_body() before returning (bytes of a body
 *     with no registered callback are discarded) and may pause/resume;
 *   - WP_HTTP_ROUTE_UPGRADE: the handler (run after the request, which has
 *     no body or a buffered one) may take the connection with
 *     wp_http_req_hijack(), e.g. after "Connection: Upgrade".
 *   - both flags: the handler runs after the headers (as STREAM_BODY) and may
 *     also hijack once the request is complete (after on_end), e.g. a proxy
 *     that forwards bodies and WebSocket upgrades alike.
 *   - CONNECT requests are routed to the handler set with
 *     wp_http_server_set_connect_handler() (path = the request target, e.g.
 *     "node:service"); it behaves like an UPGRADE route. Without one: 405.
 *
 * A handler finishes the request with exactly one of wp_http_respond*(),
 * wp_http_resp_begin()+..+wp_http_resp_end(), or wp_http_req_hijack(); it may
 * do so later from another callback (asynchronously). The wp_http_req stays
 * valid until then, or until the on_abort callback (wp_http_req_on_abort)
 * reported that the connection died — after on_abort the req must not be
 * touched. A handler that answers asynchronously must register on_abort.
 * After the finishing call returns (whatever its result) the req is invalid.
 *
 * Always-on behaviour: Date and Content-Length on every non-chunked response
 * (none for 1xx/204/304), "Connection: close" when the server will close;
 * HTTP/1.0 without keep-alive closes after the response; HEAD gets headers
 * only; "Expect: 100-continue" is answered, other expectations get 417.
 * Every error the server itself produces is a JSON body
 * {"error":{"code":"..","message":".."}} followed by a close: 400
 * bad_request (parse errors, bad chunked encoding, Content-Length with
 * Transfer-Encoding, differing Content-Lengths, non-origin-form targets,
 * route params that decode to "/", NUL, "." or ".."), 408 request_timeout
 * (headers not complete within header_timeout_ms of accept/TLS handshake or
 * of a request's first byte; or body_timeout_ms between body bytes), 413
 * body_too_large, 414 uri_too_long, 417 expectation_failed, 431
 * header_too_large, 501 not_implemented (Transfer-Encoding other than
 * chunked), 404 not_found / 405 method_not_allowed (with Allow, for the
 * default fallback; these keep the connection when the request was read
 * completely). Keep-alive idle connections close silently after
 * idle_timeout_ms. After a response with "Connection: close" the server
 * shuts down its sending side and discards input until the peer closes (or
 * the queue stops draining for 2 s), so the client reliably reads the answer.
 *
 * Request paths are RAW (not %-decoded); route params and query values are
 * decoded. Headers are never logged (they carry tokens); each request is
 * logged at debug level: method, path, status, bytes, duration.
 */
#ifndef WP_HTTP_H
#define WP_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "buf.h"
#include "conn.h"
#include "tls.h"

typedef struct wp_http_server wp_http_server;
typedef struct wp_http_req wp_http_req;
typedef void (*wp_http_handler)(wp_http_req *req, void *ud);

typedef struct wp_http_limits {
    size_t max_header_bytes;       /* 16384: request line + headers -> 431 */
    size_t max_headers;            /* 100 -> 431 */
    size_t max_url;                /* 8192 -> 414 */
    size_t max_body;               /* 1 MiB for buffered bodies -> 413 */
    unsigned header_timeout_ms;    /* 10000 -> 408 */
    unsigned idle_timeout_ms;      /* 60000 keep-alive idle -> silent close */
    unsigned body_timeout_ms;      /* 30000 between body bytes -> 408 */
    size_t max_connections;        /* 4096: beyond -> accepted and closed at once */
    size_t max_pending_bytes;      /* 65536 unparsed input buffered while a response is due */
    size_t max_write_queue;        /* 4 MiB per connection */
    size_t max_handshakes;         /* 64 concurrent TLS handshakes per server */
    unsigned handshake_timeout_ms; /* 10000 */
    size_t max_handshake_queue;    /* 1024 connections waiting for a handshake slot */
} wp_http_limits;

#define WP_HTTP_ROUTE_STREAM_BODY 0x1u
#define WP_HTTP_ROUTE_UPGRADE     0x2u

/* Fills the defaults listed above. */
void wp_http_limits_default(wp_http_limits *l);

/* New server on loop; lim NULL = defaults (zero fields also take defaults). 0 or WP_ERR_NOMEM. */
int wp_http_server_new(wp_http_server **out, uv_loop_t *loop, const wp_http_limits *lim);

/*
 * Listens on addr (wp_addr_parse forms) with SO_REUSEADDR and backlog 511;
 * several listeners are allowed. bound (cap bytes, may be NULL) receives the
 * actual address ("127.0.0.1:41234"). Returns 0, WP_ERR_INVAL (bad address),
 * WP_ERR_IO (bind/listen failed), WP_ERR_NOMEM, WP_ERR_STATE (server closing).
 */
int wp_http_server_listen(wp_http_server *s, const char *addr, char *bound, size_t cap);

/* TLS for connections accepted from now on (NULL = plain). Takes a reference, drops the
 * previous one; existing connections keep theirs (SIGHUP reload). */
void wp_http_server_set_tls(wp_http_server *s, wp_tls_conf *conf);

/*
 * Adds a route. method: "GET", "POST", ... or "*" (any). pattern: "/a/b",
 * "/api/v1/nodes/{id}", ".../{path...}" ({name...} = rest of the path, may be
 * empty, last segment only). Exact segments beat params, params beat rest.
 * flags: WP_HTTP_ROUTE_* (either, both or none). Returns 0, WP_ERR_INVAL (malformed
 * pattern/method, unknown flag) or WP_ERR_EXISTS (same method and pattern) or WP_ERR_NOMEM.
 */
int wp_http_server_route(wp_http_server *s, const char *method, const char *pattern,
                         wp_http_handler h, void *ud, unsigned flags);
/* Handler for paths no route matches (default: 404 JSON "no route for GET /x"). */
void wp_http_server_set_fallback(wp_http_server *s, wp_http_handler h, void *ud);
/* Handler for CONNECT requests (NULL = 405). It may hijack like an UPGRADE route. */
void wp_http_server_set_connect_handler(wp_http_server *s, wp_http_handler h, void *ud);

/*
 * Stops listening and closes every connection (in-flight requests get
 * on_abort). cb(ud) runs after the last handle's close callback; the server
 * is freed right after cb. Hijacked connections are not affected.
 */
void wp_http_server_close(wp_http_server *s, void (*cb)(void *ud), void *ud);
/* Open (tracked, not hijacked) connections. */
size_t wp_http_server_connections(const wp_http_server *s);

/* ---- request accessors (valid while the req is) ---- */

const char *wp_http_req_method(const wp_http_req *req); /* "GET" */
const char *wp_http_req_path(const wp_http_req *req);   /* raw path without query */
const char *wp_http_req_query(const wp_http_req *req);  /* raw query without '?', "" if none */
/*
 * First query parameter `name` (%-decoded, '+' = space) into out (NUL-terminated).
 * Returns its length, WP_ERR_NOT_FOUND, WP_ERR_LIMIT (does not fit cap) or
 * WP_ERR_INVAL (bad %-encoding or a decoded NUL).
 */
int wp_http_req_query_get(const wp_http_req *req, const char *name, char *out, size_t cap);
/* First header with this name (case-insensitive), NULL if absent. */
const char *wp_http_req_header(const wp_http_req *req, const char *name);
size_t wp_http_req_header_count(const wp_http_req *req);
/* i-th header in arrival order; 0 or WP_ERR_INVAL (out of range). */
int wp_http_req_header_at(const wp_http_req *req, size_t i, const char **name, const char **value);
/* Route parameter (%-decoded), NULL if the route has none by that name. */
const char *wp_http_req_param(const wp_http_req *req, const char *name);
/* Buffered body (NUL-terminated copy; "" with len 0 if none). NULL for streaming routes. */
const char *wp_http_req_body(const wp_http_req *req, size_t *len);
/* HTTP minor version (0 or 1). */
int wp_http_req_version_minor(const wp_http_req *req);
/* Peer "ip:port". Never NULL. */
const char *wp_http_req_remote_addr(const wp_http_req *req);
/* The underlying connection (NULL once it died). */
wp_conn *wp_http_req_conn(wp_http_req *req);
void wp_http_req_set_data(wp_http_req *req, void *data);
void *wp_http_req_get_data(const wp_http_req *req);

/* Connection died before the handler finished: cb(req, ud) once; req invalid afterwards. */
void wp_http_req_on_abort(wp_http_req *req, void (*cb)(wp_http_req *req, void *ud), void *ud);

/*
 * Streaming request bodies (STREAM_BODY routes, from the handler): on_data per
 * decoded body piece, on_end once the body is complete (called with no data
 * if the body is empty). 0 or WP_ERR_STATE (not a streaming request).
 */
int wp_http_req_on_body(wp_http_req *req,
                        void (*on_data)(wp_http_req *req, const uint8_t *p, size_t n, void *ud),
                        void (*on_end)(wp_http_req *req, void *ud), void *ud);
/* Stop/start delivering body bytes (no on_data after pause until resume). */
void wp_http_req_pause(wp_http_req *req);
void wp_http_req_resume(wp_http_req *req);

/*
 * Takes the connection away from HTTP (UPGRADE routes and the CONNECT handler,
 * from the handler or later). Bytes already read past the request are appended
 * to leftover. *out is returned with no callbacks and reading stopped: set
 * callbacks, then wp_conn_read_start(). The caller owns it (wp_conn_close).
 * The req is invalid after success. Returns 0, WP_ERR_STATE (not an upgrade
 * route, response started, or request incomplete), WP_ERR_CLOSED (connection
 * died; the req is then finished too) or WP_ERR_LIMIT/WP_ERR_NOMEM (leftover
 * full; nothing changed, the req is still owned by the handler).
 */
int wp_http_req_hijack(wp_http_req *req, wp_conn **out, wp_buf *leftover);

/* ---- responses ---- */

/*
 * Adds a response header before the response starts. Name must be a token,
 * value free of CR, LF, NUL; Content-Length, Transfer-Encoding, Connection and
 * Date are managed by the server. 0, WP_ERR_INVAL, WP_ERR_LIMIT (over 16 KiB
 * of headers), WP_ERR_STATE (response started).
 */
int wp_http_resp_header(wp_http_req *req, const char *name, const char *value);

/*
 * Complete response (Content-Length). content_type may be NULL (no header).
 * Returns 0, WP_ERR_STATE (already answered), WP_ERR_CLOSED (connection
 * gone), WP_ERR_LIMIT (body larger than max_write_queue: the connection is
 * closed; use streaming). The req is finished in every case.
 */
int wp_http_respond(wp_http_req *req, int status, const char *content_type, const void *body,
                    size_t len);
/* JSON body (application/json). Same contract; WP_ERR_NOMEM if printing failed. */
int wp_http_respond_json(wp_http_req *req, int status, const cJSON *json);
/* {"error":{"code":code,"message":message}}. Same contract. */
int wp_http_respond_error(wp_http_req *req, int status, const char *code, const char *message);

/*
 * Streaming response: chunked for HTTP/1.1, close-delimited for HTTP/1.0.
 * begin: 0 / WP_ERR_STATE / WP_ERR_CLOSED. write: 0, WP_ERR_LIMIT (write queue
 * full: nothing queued, retry from the on_drain callback), WP_ERR_STATE,
 * WP_ERR_CLOSED. end: 0 / WP_ERR_STATE / WP_ERR_CLOSED and finishes the req.
 */
int wp_http_resp_begin(wp_http_req *req, int status, const char *content_type);
int wp_http_resp_write(wp_http_req *req, const void *data, size_t len);
int wp_http_resp_end(wp_http_req *req);
/*
 * Streaming response with a known length: like wp_http_resp_begin, but sent
 * with "Content-Length: len" instead of chunked (the caller writes exactly len
 * bytes with wp_http_resp_write, then wp_http_resp_end; HEAD gets the header
 * only). Same returns as wp_http_resp_begin.
 */
int wp_http_resp_begin_length(wp_http_req *req, int status, const char *content_type, uint64_t len);
/*
 * Gives up on req: the connection is closed at once without completing the
 * response (a started response reaches the client truncated, so it can tell).
 * For a proxy whose upstream failed mid-response. The req is finished (no
 * on_abort follows) and invalid afterwards. NULL is ignored.
 */
void wp_http_resp_abort(wp_http_req *req);
/* cb runs every time the write queue drains after wp_http_resp_write returned WP_ERR_LIMIT. */
void wp_http_resp_on_drain(wp_http_req *req, void (*cb)(wp_http_req *req, void *ud), void *ud);

/* Reason phrase for a status code ("OK", "Not Found", "Unknown"). */
const char *wp_http_status_text(int status);

#endif
