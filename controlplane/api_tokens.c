/*
 * api_tokens.c — the tokens resource (see api_tokens.h).
 *
 *   POST   /api/v1/tokens        {name, role: admin|user|agent, node_id?, expires_in?}
 *                                → 201 with the token's secret (the only time it is shown)
 *   GET    /api/v1/tokens        → {"tokens": [...]} without secrets or hashes
 *   DELETE /api/v1/tokens/{id}   → 204 (revoked; idempotent), 404 when unknown
 *
 * Only the SHA-256 of a token is stored. Agent tokens may be bound to one node id.
 * Revoking a token also ends the tunnels of agents connected with it (tunnel.h).
 * Minting and revoking append token.created / token.revoked events in the same
 * transaction (cp_events_exec, events.h); an idempotent second revoke writes none.
 */
#include "api_tokens.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "crypto.h"
#include "err.h"
#include "events.h"
#include "ids.h"
#include "json.h"
#include "log.h"
#include "pgjson.h"
#include "store.h"
#include "tunnel.h"

#define CP_TOKENS_BODY_MAX     (64 * 1024)
#define CP_TOKENS_LIST_MAX     1000
#define CP_TOKEN_EXPIRES_MIN_S 60
#define CP_TOKEN_EXPIRES_MAX_S (10LL * 366 * 24 * 3600)
#define CP_TOKEN_SECRET_MAX    96

#define CP_TOKEN_COLUMNS                                                                           \
    "id, name, role, node_id, " CP_SQL_TS("expires_at") " AS expires_at, " CP_SQL_TS(              \
        "revoked_at") " AS revoked_at, " CP_SQL_TS("created_at") " AS created_at, " CP_SQL_TS("la" \
                                                                                              "st" \
                                                                                              "_u" \
                                                                                              "se" \
                                                                                              "d_" \
                                                                                              "a"  \
                                                                                              "t") " AS last_used_at"

typedef struct cp_token_create {
    char secret[CP_TOKEN_SECRET_MAX];
} cp_token_create;

/* token.created, written in the transaction that inserts the token (never the secret). */
static int cp_tokens_event_created(const PGresult *res, int row, cp_event *ev, cJSON **data,
                                   void *ud)
{
    cp_call *call = ud;
    cJSON *d = cJSON_CreateObject();
    *data = d;
    if (!d || !cJSON_AddStringToObject(d, "name", PQgetvalue(res, row, 1)) ||
        !cJSON_AddStringToObject(d, "role", PQgetvalue(res, row, 2)) ||
        !(PQgetisnull(res, row, 3)
              ? cJSON_AddNullToObject(d, "node_id")
              : cJSON_AddStringToObject(d, "node_id", PQgetvalue(res, row, 3))) ||
        !cJSON_AddStringToObject(d, "by", call->who.name))
        return WP_ERR_NOMEM;
    ev->type = CP_EV_TOKEN_CREATED;
    ev->token_id = PQgetvalue(res, row, 0);
    return 1;
}

static void cp_tokens_created(int err, PGresult *res, void *ud)
{
    cp_call *call = ud;
    cp_token_create *tc = call->data;
    if (err != 0 || PQntuples(res) != 1) {
        free(tc);
        call->data = NULL;
        cp_call_respond_db_error(call, err ? err : WP_ERR_INTERNAL);
        return;
    }
    cJSON *o = cp_pgjson_row(res, 0);
    if (!o || !cJSON_AddStringToObject(o, "token", tc->secret)) {
        cJSON_Delete(o);
        wp_secure_zero(tc, sizeof(*tc));
        free(tc);
        call->data = NULL;
        cp_call_respond_error(call, 500, "internal", "out of memory");
        return;
    }
    wp_log_info("token created", WP_LS("id", PQgetvalue(res, 0, 0)),
                WP_LS("role", PQgetvalue(res, 0, 2)), WP_LS("by", call->who.name));
    if (cp_call_req(call))
        wp_http_resp_header(cp_call_req(call), "Cache-Control", "no-store");
    cp_call_respond_json(call, 201, o);
    /* cJSON keeps a copy of the secret: zero it before freeing. */
    cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "token");
    if (t && t->valuestring)
        wp_secure_zero(t->valuestring, strlen(t->valuestring));
    cJSON_Delete(o);
    wp_secure_zero(tc, sizeof(*tc));
    free(tc);
}

static void cp_tokens_create(cp_call *call)
{
    static const wp_json_field fields[] = {
        {"name", WP_JSON_STRING, 1, 128, 0, 0},
        {"role", WP_JSON_STRING, 1, 16, 0, 0},
        {"node_id", WP_JSON_STRING, 0, WP_NODE_ID_MAX, 0, 0},
        {"expires_in", WP_JSON_INT, 0, 0, CP_TOKEN_EXPIRES_MIN_S, CP_TOKEN_EXPIRES_MAX_S},
    };
    wp_http_req *req = cp_call_req(call);
    size_t len = 0;
    const char *body = wp_http_req_body(req, &len);
    cJSON *doc = NULL;
    char err[256];
    if (!body || len == 0 || wp_json_parse(body, len, CP_TOKENS_BODY_MAX, 8, &doc) != 0 ||
        !cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        cp_call_respond_error(call, 400, "invalid_json", "the body must be a JSON object");
        return;
    }
    if (wp_json_validate(doc, fields, sizeof(fields) / sizeof(fields[0]), WP_JSON_UNKNOWN_REJECT,
                         err, sizeof(err)) != 0) {
        cJSON_Delete(doc);
        cp_call_respond_error(call, 400, "invalid_request", err);
        return;
    }
    const char *name = wp_json_get_str(doc, "name");
    int role = cp_role_parse(wp_json_get_str(doc, "role"));
    const char *node_id = wp_json_get_str(doc, "node_id");
    long long expires_in = 0;
    int has_exp = wp_json_get_int(doc, "expires_in", &expires_in) == 0;
    const char *why = NULL;
    if (name[0] == '\0')
        why = "field \"name\": must not be empty";
    else if (!role)
        why = "field \"role\": must be admin, user or agent";
    else if (node_id && role != CP_ROLE_AGENT)
        why = "field \"node_id\": only agent tokens can be bound to a node";
    else if (node_id && !wp_node_id_valid(node_id))
        why = "field \"node_id\": must match [a-z0-9][a-z0-9-]{0,62}";
    if (why) {
        cJSON_Delete(doc);
        cp_call_respond_error(call, 400, "invalid_request", why);
        return;
    }
    cp_token_create *tc = calloc(1, sizeof(*tc));
    static const char *const prefix[] = {
        [CP_ROLE_ADMIN] = "wpadm", [CP_ROLE_USER] = "wpusr", [CP_ROLE_AGENT] = "wpagt"};
    if (!tc || wp_token_generate(prefix[role], tc->secret, sizeof(tc->secret)) != 0) {
        free(tc);
        cJSON_Delete(doc);
        cp_call_respond_error(call, 500, "internal", "cannot generate a token");
        return;
    }
    wp_log_secret_add(tc->secret);
    char hash[65], exp[32] = "";
    cp_auth_token_hash_hex(tc->secret, hash);
    if (has_exp)
        snprintf(exp, sizeof(exp), "%lld", expires_in);
    const char *params[] = {name, cp_role_name(role), hash, node_id ? node_id : "", exp};
    call->data = tc;
    int rc = cp_events_exec(cp_store_db(call->server->store),
                            "INSERT INTO tokens (name, role, hash, node_id, expires_at) VALUES "
                            "($1, $2, decode($3, 'hex'), NULLIF($4, ''), "
                            "CASE WHEN $5 = '' THEN NULL ELSE now() + make_interval(secs => "
                            "$5::int) END) RETURNING " CP_TOKEN_COLUMNS,
                            5, params, cp_tokens_event_created, cp_tokens_created, call);
    cJSON_Delete(doc);
    if (rc != 0) {
        wp_secure_zero(tc, sizeof(*tc));
        free(tc);
        call->data = NULL;
        cp_call_respond_db_error(call, rc);
    }
}

static void cp_tokens_listed(int err, PGresult *res, void *ud)
{
    cp_call *call = ud;
    if (err != 0) {
        cp_call_respond_db_error(call, err);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *rows = cp_pgjson_rows(res);
    if (!o || !rows || !cJSON_AddItemToObject(o, "tokens", rows)) {
        cJSON_Delete(rows);
        cJSON_Delete(o);
        cp_call_respond_error(call, 500, "internal", "out of memory");
        return;
    }
    cp_call_respond_json(call, 200, o);
    cJSON_Delete(o);
}

static void cp_tokens_list(cp_call *call)
{
    int rc = cp_db_query(cp_store_db(call->server->store),
                         "SELECT " CP_TOKEN_COLUMNS " FROM tokens ORDER BY created_at, id LIMIT "
                         "1000",
                         0, NULL, cp_tokens_listed, call);
    if (rc != 0)
        cp_call_respond_db_error(call, rc);
}

/* token.revoked, only when this call revoked it (revoking again is a no-op). */
static int cp_tokens_event_revoked(const PGresult *res, int row, cp_event *ev, cJSON **data,
                                   void *ud)
{
    cp_call *call = ud;
    if (PQgetvalue(res, row, 1)[0] != 't')
        return 0;
    cJSON *d = cJSON_CreateObject();
    *data = d;
    if (!d || !cJSON_AddStringToObject(d, "by", call->who.name))
        return WP_ERR_NOMEM;
    ev->type = CP_EV_TOKEN_REVOKED;
    ev->token_id = PQgetvalue(res, row, 0);
    return 1;
}

static void cp_tokens_revoked(int err, PGresult *res, void *ud)
{
    cp_call *call = ud;
    if (err != 0) {
        cp_call_respond_db_error(call, err);
        return;
    }
    if (PQntuples(res) != 1) {
        cp_call_respond_error(call, 404, "not_found", "no such token");
        return;
    }
    wp_log_info("token revoked", WP_LS("id", PQgetvalue(res, 0, 0)), WP_LS("by", call->who.name));
    /* An agent connected with it loses its tunnel now. */
    int n = cp_tunnel_disconnect_token(call->server, PQgetvalue(res, 0, 0));
    if (n > 0)
        wp_log_info("tunnels of a revoked token closed", WP_LI("tunnels", n));
    cp_call_respond_empty(call, 204);
}

static void cp_tokens_revoke(cp_call *call)
{
    const char *id = wp_http_req_param(cp_call_req(call), "id");
    if (!wp_uuid_valid(id)) {
        cp_call_respond_error(call, 404, "not_found", "no such token");
        return;
    }
    const char *params[] = {id};
    int rc = cp_events_exec(cp_store_db(call->server->store),
                            "UPDATE tokens SET revoked_at = coalesce(revoked_at, now()) "
                            "WHERE id = $1::uuid RETURNING id, revoked_at = now() AS newly",
                            1, params, cp_tokens_event_revoked, cp_tokens_revoked, call);
    if (rc != 0)
        cp_call_respond_db_error(call, rc);
}

int cp_api_tokens_register(cp_server *s)
{
    int rc;
    if ((rc = cp_auth_route(s, "POST", "/api/v1/tokens", CP_ROLE_ADMIN, cp_tokens_create)) != 0 ||
        (rc = cp_auth_route(s, "GET", "/api/v1/tokens", CP_ROLE_ADMIN, cp_tokens_list)) != 0 ||
        (rc = cp_auth_route(s, "DELETE", "/api/v1/tokens/{id}", CP_ROLE_ADMIN, cp_tokens_revoke)) !=
            0)
        return rc;
    return 0;
}
