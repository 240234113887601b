/*
 * auth.h — Bearer-token authentication and role checks for the REST API, and
 * the per-request context that async API handlers hang their state on.
 *
 * cp_auth_route() registers a route whose handler first authenticates the
 * request (Authorization: Bearer <token>; the token's SHA-256 is looked up in
 * the tokens table: not revoked, not expired; the stored hash is compared in
 * constant time), then checks the role against the route's allowed roles, and
 * only then calls the API function with a cp_call. A cp_call survives the
 * client going away: the function checks cp_call_req() for NULL before
 * answering, and every call ends with cp_call_respond*() or cp_call_done().
 *
 * Answers: 401 unauthorized (missing/unknown/revoked/expired token, with
 * WWW-Authenticate: Bearer realm="wolfpack"), 403 forbidden (role), 503
 * database_unavailable. A CONNECT request is authenticated from
 * Proxy-Authorization (then Authorization) and gets 407 with
 * Proxy-Authenticate instead of 401. Tokens are never logged or echoed.
 *
 * cp_auth_request() runs the same steps from a handler the caller registered
 * itself (an UPGRADE route or the CONNECT handler), so it can check cheap
 * limits before spending a token hash and a database query.
 */
#ifndef CP_AUTH_H
#define CP_AUTH_H

#include <cjson/cJSON.h>
#include <libpq-fe.h>

#include "http.h"
#include "server.h"

enum cp_role { CP_ROLE_ADMIN = 1, CP_ROLE_USER = 2, CP_ROLE_AGENT = 4 };

typedef struct cp_principal {
    char token_id[40]; /* uuid */
    char name[132];
    int role;         /* enum cp_role */
    char node_id[64]; /* agent tokens bound to one node; "" otherwise */
} cp_principal;

typedef struct cp_call {
    cp_server *server;
    wp_http_req *req; /* NULL once the client went away */
    cp_principal who;
    void *data; /* the API function's own state */
} cp_call;

typedef void (*cp_api_fn)(cp_call *call);

/* Role name ("admin") <-> enum; 0 / NULL when unknown. */
int cp_role_parse(const char *s);
const char *cp_role_name(int role);

/*
 * Registers method + pattern (see wp_http_server_route) for the roles in
 * `roles` (a mask of cp_role). Returns 0 or a WP_ERR_* from the router.
 */
int cp_auth_route(cp_server *s, const char *method, const char *pattern, unsigned roles,
                  cp_api_fn fn);

/*
 * Authenticates req (see above) and, when its role is in `roles`, calls
 * fn(call) later with call->data = data; fn then owns the call. Otherwise
 * the request is answered here (401/407/403/500/503, or nothing when the
 * client went away) and on_fail(data) (may be NULL) is called once, before
 * the answer, so the caller can release what it reserved for the request.
 * Exactly one of fn and on_fail runs, possibly before this returns.
 */
void cp_auth_request(cp_server *s, wp_http_req *req, unsigned roles, cp_api_fn fn,
                     void (*on_fail)(void *data), void *data);

/*
 * cp_auth_request with the token given by the caller instead of read from the
 * Authorization header (e.g. a WebSocket upgrade's ?access_token=, which
 * browsers must use); NULL, empty, over-long or non-printable tokens are
 * answered 401. The token is never logged. Same contract otherwise.
 */
void cp_auth_request_token(cp_server *s, wp_http_req *req, const char *token, unsigned roles,
                           cp_api_fn fn, void (*on_fail)(void *data), void *data);

/*
 * Ends a call without answering (frees it): for a function that takes the
 * request over (streams it, hijacks it) or never will answer (the client went
 * away). Call it BEFORE answering or hijacking the request yourself: it clears
 * the call's abort hook on the still-live request and never touches it again.
 */
void cp_call_done(cp_call *call);

/* The live request, or NULL when the client has gone away. */
wp_http_req *cp_call_req(cp_call *call);

/* Answer and end the call (frees it). Safe when the client went away. */
void cp_call_respond_json(cp_call *call, int status, const cJSON *body);
void cp_call_respond_error(cp_call *call, int status, const char *code, const char *message);
void cp_call_respond_empty(cp_call *call, int status);
/*
 * Reads query parameter `name` of the call's request into out (cap bytes,
 * decoded). Returns 1 present, 0 absent (out ""), -1 malformed or too long:
 * then the call was answered 400 invalid_request and is over.
 */
int cp_call_query(cp_call *call, const char *name, char *out, size_t cap);

/*
 * Answers a list query's rows as one page, {"<key>":[...], "next_cursor"}
 * (cp_pgjson_page with `limit`), or the database error; ends the call.
 */
void cp_call_respond_page(cp_call *call, int err, const PGresult *res, const char *key, int limit);

/* Maps a database error to an answer (503 database_unavailable, 504, 500) and ends the call. */
void cp_call_respond_db_error(cp_call *call, int err);

/* Hash of a presented token, as lowercase hex (65 bytes with NUL). */
void cp_auth_token_hash_hex(const char *token, char out[65]);

#endif
