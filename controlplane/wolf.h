/*
 * wolf.h — the control plane's client for a node's Wolf API, over tunnel
 * streams (tunnel.h) to the agent's `wolf` service (the Wolf UNIX socket).
 *
 * One call = one stream = one HTTP request (Wolf serves one request per
 * connection): request line, `Host: wolf`, `Content-Type: application/json`,
 * `Content-Length` (never chunked: Wolf answers chunked bodies with 500),
 * `Connection: close`, the body, then our FIN. The reply is read until FIN
 * or until Content-Length bytes arrived, bounded by CP_WOLF_REPLY_MAX. Wolf's
 * quirks are expected: `HTTP/1.0 <code> OK` whatever the code, only a
 * Content-Length header (or none: then the body ends at FIN), envelopes
 * {"success":true,...} / {"success":false,"error":"..."}. Every call has a
 * timeout (a uv_timer; on expiry the stream is reset): Wolf can accept and
 * never answer. Numeric ids are validated before sending (a non-numeric
 * session id can crash Wolf's API thread).
 *
 * The reply parser (cp_wolf_reply_*) and the result interpretation
 * (cp_wolf_reply_result) are pure and unit-tested without a tunnel.
 * Everything else runs on the server's loop thread.
 */
#ifndef CP_WOLF_H
#define CP_WOLF_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "server.h"

#define CP_WOLF_REPLY_MAX   (1024 * 1024) /* reply head + body bytes */
#define CP_WOLF_HEAD_MAX    (16 * 1024)   /* status line + headers */
#define CP_WOLF_REQUEST_MAX (256 * 1024)  /* request body bytes */
#define CP_WOLF_PATH_MAX    256
#define CP_WOLF_MESSAGE_MAX 256 /* bytes of cp_wolf_result.message, NUL included */
#define CP_WOLF_JSON_DEPTH  64

typedef struct cp_wolf_call cp_wolf_call;

typedef struct cp_wolf_result {
    int err;    /* 0: HTTP 2xx and not {"success":false}; else a WP_ERR_* code (below) */
    int status; /* HTTP status, 0 if no reply */
    /*
     * Stable machine reason:
     *   "ok"
     *   "node_unreachable" (no tunnel to the node, or it closed/is draining): WP_ERR_CLOSED,
     *                      WP_ERR_BUSY (tunnel budget exhausted)
     *   "refused"          (the agent refused or reset the stream; agent_reason holds its
     *                      code: not_allowed, refused, unreachable, timeout, busy, ... or
     *                      "reset"): WP_ERR_IO
     *   "timeout"          (no complete reply within the call's timeout, or the stream was
     *                      never acknowledged): WP_ERR_TIMEOUT
     *   "bad_response"     (not HTTP, truncated, over CP_WOLF_REPLY_MAX, 2xx without JSON):
     *                      WP_ERR_PROTO
     *   "wolf_error"       (a non-2xx status, or {"success":false}): WP_ERR_IO, or
     *                      WP_ERR_NOT_FOUND for 404 (no such route on this Wolf build)
     */
    const char *reason;
    const char *agent_reason; /* agent error code or "" (never NULL) */
    const char *message; /* human text: Wolf's "error" string or ours; never NULL, no secrets */
    const cJSON *body;   /* parsed reply JSON (any status), NULL if none; valid only in the cb */
} cp_wolf_result;

typedef void (*cp_wolf_cb)(const cp_wolf_result *r, void *ud);

/*
 * Starts one call: method "GET" or "POST" (any 1..7 upper-case letters),
 * path "/api/..." (1..CP_WOLF_PATH_MAX bytes of [A-Za-z0-9/_.~?=&%-]), body
 * NULL (sent as Content-Length: 0) or any JSON value (printed compactly, at
 * most CP_WOLF_REQUEST_MAX bytes), timeout_ms > 0 for the whole call. cb runs
 * exactly once, from the loop (never inside this call), unless the call is
 * cancelled first. "Node not connected" is reported through cb (reason
 * node_unreachable) so callers have one path. *out (may be NULL) is valid
 * until cb returns or cp_wolf_call_cancel.
 * Returns 0, WP_ERR_INVAL (bad arguments), WP_ERR_LIMIT (body too large) or
 * WP_ERR_NOMEM; then cb never runs and *out is NULL.
 */
int cp_wolf_call_start(cp_server *s, const char *node_id, const char *method, const char *path,
                       const cJSON *body, uint64_t timeout_ms, cp_wolf_cb cb, void *ud,
                       cp_wolf_call **out);

/* Aborts c (its stream is reset); no callback afterwards. NULL is ignored; so is a call
 * whose callback is running or has run (c must not be used after its callback returned). */
void cp_wolf_call_cancel(cp_wolf_call *c);

/* ---- typed helpers: validate, build the body, start the call (same contract) ---- */

/* POST /api/v1/lobbies/create with req (a JSON object, the body Wolf documents). */
int cp_wolf_lobby_create(cp_server *s, const char *node_id, const cJSON *req, uint64_t timeout_ms,
                         cp_wolf_cb cb, void *ud, cp_wolf_call **out);
/* GET /api/v1/lobbies. */
int cp_wolf_lobbies_list(cp_server *s, const char *node_id, uint64_t timeout_ms, cp_wolf_cb cb,
                         void *ud, cp_wolf_call **out);
/* POST /api/v1/lobbies/stop {lobby_id, pin?}: lobby_id passes cp_wolf_lobby_id_valid; pin
 * NULL (none) or cp_wolf_pin_valid text ("1234"), sent as Wolf's digit list [1,2,3,4]. */
int cp_wolf_lobby_stop(cp_server *s, const char *node_id, const char *lobby_id, const char *pin,
                       uint64_t timeout_ms, cp_wolf_cb cb, void *ud, cp_wolf_call **out);
/* GET /api/v1/sessions (each session's id is its "client_id" string). */
int cp_wolf_sessions_list(cp_server *s, const char *node_id, uint64_t timeout_ms, cp_wolf_cb cb,
                          void *ud, cp_wolf_call **out);
/* POST /api/v1/sessions/stop {session_id}: session_id passes cp_wolf_id_numeric. */
int cp_wolf_session_stop(cp_server *s, const char *node_id, const char *session_id,
                         uint64_t timeout_ms, cp_wolf_cb cb, void *ud, cp_wolf_call **out);

/* ---- pure helpers ---- */

/* 1 if s is a decimal u64: 1..20 digits, no sign, space or leading zero (except "0"),
 * value <= UINT64_MAX. Else 0 (also NULL). */
int cp_wolf_id_numeric(const char *s);

/* 1 if s can be a Wolf lobby id (uuid text): [A-Za-z0-9-]{1,64}. Else 0 (also NULL). */
int cp_wolf_lobby_id_valid(const char *s);

/* 1 if s is a lobby PIN: exactly 4 decimal digits. Else 0 (also NULL). */
int cp_wolf_pin_valid(const char *s);

/*
 * Incremental reply parser. Feed the bytes of the stream as they come, then
 * call cp_wolf_reply_finish at FIN (unless feed already said complete).
 * Accepts HTTP/1.0 and HTTP/1.1 status lines with any reason text (or none),
 * headers without obs-fold, Content-Length (at most one value); a
 * Transfer-Encoding reply is refused (Wolf never sends one). Bounded: the
 * head by CP_WOLF_HEAD_MAX, head plus body by the max given to init.
 */
typedef struct cp_wolf_reply {
    wp_buf in;             /* head, then body */
    size_t head_len;       /* bytes of the head incl. the blank line; 0 until complete */
    int status;            /* 100..599 once the head is complete */
    long long content_len; /* -1: none (body ends at FIN) */
    int done;              /* 1 once complete */
    int failed;            /* the error already returned */
} cp_wolf_reply;

/* Prepares r for a reply of at most max bytes (head + body). Never fails. */
void cp_wolf_reply_init(cp_wolf_reply *r, size_t max);

/* Frees r's storage; r may be initialized again. */
void cp_wolf_reply_free(cp_wolf_reply *r);

/*
 * Adds n bytes. Returns 0 (need more), 1 (complete: Content-Length bytes of
 * body arrived; bytes past it are ignored), WP_ERR_MALFORMED (not an HTTP
 * reply, bad header, Transfer-Encoding), WP_ERR_LIMIT (over the head or total
 * bound) or WP_ERR_NOMEM. After an error or completion, further feeds return
 * the same answer and change nothing.
 */
int cp_wolf_reply_feed(cp_wolf_reply *r, const void *p, size_t n);

/*
 * The peer finished sending. Returns 1 (complete: the body runs to here when
 * there was no Content-Length), WP_ERR_MALFORMED (head incomplete, or fewer
 * body bytes than Content-Length: truncated) or a previous feed error.
 */
int cp_wolf_reply_finish(cp_wolf_reply *r);

/* The body of a complete reply (len 0 and a non-NULL pointer when empty). */
const char *cp_wolf_reply_body(const cp_wolf_reply *r, size_t *len);

/*
 * Interprets a complete reply: parses the body as JSON (into *json, free with
 * cJSON_Delete; NULL when empty or not JSON) and returns the cp_wolf_result
 * err (0, WP_ERR_IO, WP_ERR_NOT_FOUND or WP_ERR_PROTO) with *reason ("ok",
 * "wolf_error", "bad_response") and msg (NUL-terminated, at most cap bytes:
 * Wolf's "error" text, or ours).
 */
int cp_wolf_reply_result(const cp_wolf_reply *r, cJSON **json, const char **reason, char *msg,
                         size_t cap);

#endif
