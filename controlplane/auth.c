/*
 * auth.c — Bearer authentication, role checks and async call contexts (see auth.h).
 */
#include "auth.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "crypto.h"
#include "db.h"
#include "err.h"
#include "log.h"
#include "pgjson.h"
#include "store.h"

#define CP_TOKEN_LEN_MAX  256
#define CP_AUTH_CHALLENGE "Bearer realm=\"wolfpack\""

/* Every cp_call is allocated as the first member of one of these. */
typedef struct cp_auth_pending {
    cp_call call;
    unsigned roles;
    cp_api_fn fn;
    void (*on_fail)(void *data); /* cp_auth_request: the caller's release hook */
    uint8_t want_hash[32];
} cp_auth_pending;

int cp_role_parse(const char *s)
{
    if (!s)
        return 0;
    if (strcmp(s, "admin") == 0)
        return CP_ROLE_ADMIN;
    if (strcmp(s, "user") == 0)
        return CP_ROLE_USER;
    if (strcmp(s, "agent") == 0)
        return CP_ROLE_AGENT;
    return 0;
}

const char *cp_role_name(int role)
{
    switch (role) {
    case CP_ROLE_ADMIN:
        return "admin";
    case CP_ROLE_USER:
        return "user";
    case CP_ROLE_AGENT:
        return "agent";
    default:
        return NULL;
    }
}

void cp_auth_token_hash_hex(const char *token, char out[65])
{
    uint8_t h[32];
    wp_sha256(token, strlen(token), h);
    wp_hex_encode(h, sizeof(h), out, 65);
    wp_secure_zero(h, sizeof(h));
}

wp_http_req *cp_call_req(cp_call *call)
{
    return call->req;
}

static void cp_call_aborted(wp_http_req *req, void *ud)
{
    (void)req;
    cp_call *call = ud;
    call->req = NULL;
}

/* Runs the on_fail hook of a call that never reached its API function (at most once). */
static void cp_auth_fail_hook(cp_call *call)
{
    cp_auth_pending *p = (cp_auth_pending *)call;
    void (*hook)(void *) = p->on_fail;
    p->on_fail = NULL;
    if (hook)
        hook(call->data);
}

/*
 * Detaches the live request from the call before answering it: answering may
 * free the request at once, so the abort hook is cleared first and the call
 * never touches the request again.
 */
static wp_http_req *cp_call_take_req(cp_call *call)
{
    wp_http_req *req = call->req;
    if (req) {
        wp_http_req_on_abort(req, NULL, NULL);
        call->req = NULL;
    }
    return req;
}

/* Frees the call. Never touches call->req: it may already be answered and freed. */
static void cp_call_free(cp_call *call)
{
    wp_secure_zero(call, sizeof(cp_auth_pending));
    free(call);
}

void cp_call_respond_json(cp_call *call, int status, const cJSON *body)
{
    wp_http_req *req = cp_call_take_req(call);
    if (req)
        wp_http_respond_json(req, status, body);
    cp_call_free(call);
}

void cp_call_done(cp_call *call)
{
    /* The request was answered, hijacked or aborted: only the hook may still point here. */
    cp_call_take_req(call);
    cp_call_free(call);
}

/* CONNECT answers a missing or bad credential with 407 and Proxy-Authenticate. */
static int cp_auth_is_connect(wp_http_req *req)
{
    return strcmp(wp_http_req_method(req), "CONNECT") == 0;
}

void cp_call_respond_error(cp_call *call, int status, const char *code, const char *message)
{
    wp_http_req *req = cp_call_take_req(call);
    if (req) {
        if (status == 401 && cp_auth_is_connect(req)) {
            status = 407;
            wp_http_resp_header(req, "Proxy-Authenticate", CP_AUTH_CHALLENGE);
        } else if (status == 401) {
            wp_http_resp_header(req, "WWW-Authenticate", CP_AUTH_CHALLENGE);
        }
        if (status == 503)
            wp_http_resp_header(req, "Retry-After", "5");
        wp_http_respond_error(req, status, code, message);
    }
    cp_call_free(call);
}

void cp_call_respond_empty(cp_call *call, int status)
{
    wp_http_req *req = cp_call_take_req(call);
    if (req)
        wp_http_respond(req, status, NULL, NULL, 0);
    cp_call_free(call);
}

int cp_call_query(cp_call *call, const char *name, char *out, size_t cap)
{
    int rc = wp_http_req_query_get(cp_call_req(call), name, out, cap);
    if (rc == WP_ERR_NOT_FOUND) {
        out[0] = '\0';
        return 0;
    }
    if (rc < 0) {
        char msg[96];
        snprintf(msg, sizeof(msg), "query parameter \"%s\": malformed or too long", name);
        cp_call_respond_error(call, 400, "invalid_request", msg);
        return -1;
    }
    return 1;
}

void cp_call_respond_page(cp_call *call, int err, const PGresult *res, const char *key, int limit)
{
    if (err != 0) {
        cp_call_respond_db_error(call, err);
        return;
    }
    cJSON *o = cp_pgjson_page(res, key, limit);
    if (!o) {
        cp_call_respond_error(call, 500, "internal", "out of memory");
        return;
    }
    cp_call_respond_json(call, 200, o);
    cJSON_Delete(o);
}

void cp_call_respond_db_error(cp_call *call, int err)
{
    if (err == WP_ERR_CLOSED)
        cp_call_respond_error(call, 503, "database_unavailable", "the database is not reachable");
    else if (err == WP_ERR_TIMEOUT)
        cp_call_respond_error(call, 504, "database_timeout", "the database did not answer in time");
    else if (err == WP_ERR_LIMIT || err == WP_ERR_BUSY)
        cp_call_respond_error(call, 503, "busy", "too many requests in flight, retry");
    else
        cp_call_respond_error(call, 500, "internal", "database error");
}

static void cp_auth_looked_up(int err, PGresult *res, void *ud)
{
    cp_auth_pending *p = ud;
    cp_call *call = &p->call;
    if (!call->req) {
        cp_auth_fail_hook(call);
        cp_call_free(call);
        return;
    }
    if (err != 0) {
        cp_auth_fail_hook(call);
        cp_call_respond_db_error(call, err);
        return;
    }
    uint8_t got[32];
    size_t glen = 0;
    if (PQntuples(res) != 1 ||
        wp_hex_decode(PQgetvalue(res, 0, 4), strlen(PQgetvalue(res, 0, 4)), got, sizeof(got),
                      &glen) != 0 ||
        glen != sizeof(got) || !wp_ct_equal(got, p->want_hash, sizeof(got))) {
        /* Like sshd: a refused credential is worth an operator's attention (never the token). */
        wp_http_req *r = cp_call_req(call);
        wp_log_info("authentication failed: invalid, revoked or expired token",
                    WP_LS("method", r ? wp_http_req_method(r) : "-"),
                    WP_LS("path", r ? wp_http_req_path(r) : "-"),
                    WP_LS("peer", r ? wp_http_req_remote_addr(r) : "-"));
        cp_auth_fail_hook(call);
        cp_call_respond_error(call, 401, "unauthorized", "invalid, revoked or expired token");
        return;
    }
    snprintf(call->who.token_id, sizeof(call->who.token_id), "%s", PQgetvalue(res, 0, 0));
    snprintf(call->who.name, sizeof(call->who.name), "%s", PQgetvalue(res, 0, 1));
    call->who.role = cp_role_parse(PQgetvalue(res, 0, 2));
    snprintf(call->who.node_id, sizeof(call->who.node_id), "%s", PQgetvalue(res, 0, 3));
    if (!(call->who.role & (int)p->roles)) {
        cp_auth_fail_hook(call);
        cp_call_respond_error(call, 403, "forbidden", "this token's role may not do that");
        return;
    }
    p->on_fail = NULL;
    p->fn(call);
}

/*
 * Extracts the token from "Authorization: Bearer <token>" (for CONNECT,
 * "Proxy-Authorization: Bearer <token>" first); NULL if absent or malformed.
 */
static const char *cp_auth_bearer(wp_http_req *req)
{
    const char *h = NULL;
    if (cp_auth_is_connect(req))
        h = wp_http_req_header(req, "Proxy-Authorization");
    if (!h)
        h = wp_http_req_header(req, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(h);
    if (n == 0 || n > CP_TOKEN_LEN_MAX)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];
        if (c <= 0x20 || c >= 0x7f)
            return NULL;
    }
    return h;
}

void cp_auth_request(cp_server *s, wp_http_req *req, unsigned roles, cp_api_fn fn,
                     void (*on_fail)(void *data), void *data)
{
    cp_auth_request_token(s, req, cp_auth_bearer(req), roles, fn, on_fail, data);
}

void cp_auth_request_token(cp_server *s, wp_http_req *req, const char *token, unsigned roles,
                           cp_api_fn fn, void (*on_fail)(void *data), void *data)
{
    if (token) {
        size_t n = strlen(token);
        for (size_t i = 0; i < n && token; i++)
            if ((unsigned char)token[i] <= 0x20 || (unsigned char)token[i] >= 0x7f)
                token = NULL;
        if (n == 0 || n > CP_TOKEN_LEN_MAX)
            token = NULL;
    }
    if (!token) {
        if (on_fail)
            on_fail(data);
        if (cp_auth_is_connect(req)) {
            wp_http_resp_header(req, "Proxy-Authenticate", CP_AUTH_CHALLENGE);
            wp_http_respond_error(req, 407, "unauthorized", "missing or malformed bearer token");
            return;
        }
        wp_http_resp_header(req, "WWW-Authenticate", CP_AUTH_CHALLENGE);
        wp_http_respond_error(req, 401, "unauthorized", "missing or malformed bearer token");
        return;
    }
    if (cp_server_require_db(s, req)) {
        if (on_fail)
            on_fail(data);
        return;
    }
    cp_auth_pending *p = calloc(1, sizeof(*p));
    if (!p) {
        if (on_fail)
            on_fail(data);
        wp_http_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    p->call.server = s;
    p->call.req = req;
    p->call.data = data;
    p->roles = roles;
    p->fn = fn;
    p->on_fail = on_fail;
    char hex[65];
    wp_sha256(token, strlen(token), p->want_hash);
    wp_hex_encode(p->want_hash, sizeof(p->want_hash), hex, sizeof(hex));
    wp_http_req_on_abort(req, cp_call_aborted, &p->call);
    const char *params[] = {hex};
    int rc = cp_db_query(cp_store_db(s->store),
                         "SELECT id, name, role, coalesce(node_id, ''), encode(hash, 'hex') "
                         "FROM tokens WHERE hash = decode($1, 'hex') AND revoked_at IS NULL "
                         "AND (expires_at IS NULL OR expires_at > now())",
                         1, params, cp_auth_looked_up, p);
    wp_secure_zero(hex, sizeof(hex));
    if (rc != 0) {
        cp_auth_fail_hook(&p->call);
        cp_call_respond_db_error(&p->call, rc);
    }
}

static void cp_auth_handler(wp_http_req *req, void *ud)
{
    const cp_api_route *route = ud;
    cp_auth_request(route->server, req, route->roles, route->fn, NULL, NULL);
}

int cp_auth_route(cp_server *s, const char *method, const char *pattern, unsigned roles,
                  cp_api_fn fn)
{
    if (s->napi_routes >= CP_API_ROUTES_MAX)
        return WP_ERR_LIMIT;
    cp_api_route *r = &s->api_routes[s->napi_routes];
    r->server = s;
    r->roles = roles;
    r->fn = fn;
    int rc = wp_http_server_route(s->http, method, pattern, cp_auth_handler, r, 0);
    if (rc == 0)
        s->napi_routes++;
    return rc;
}
