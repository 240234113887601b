/*
 * api_sessions.c — the sessions resource (see api_sessions.h; the lifecycle is sessions.c).
 *
 *   POST   /api/v1/sessions             {name?, requirements?:{gpu_vendor?, labels?, node_id?,
 *                                       prefer_labels?}, runner:{type:"docker", name?, image,
 *                                       env?, mounts?, devices?, ports?}, video?:{width, height,
 *                                       refresh_rate}, audio?:{channel_count}, metadata?}
 *                                       → 201 session (running); 400 invalid_request naming the
 *                                       field; 503 no_capacity {details: nodes, excluded{...}};
 *                                       502 start_failed / 504 start_timeout {details: attempts}
 *   GET    /api/v1/sessions?status=&node=&owner=&limit=&cursor=
 *                                       → {"sessions":[...], "next_cursor"}, ordered by id;
 *                                       users see only their own (owner is admin-only)
 *   GET    /api/v1/sessions/{id}        → session; 404 for unknown ids and other users' sessions
 *   DELETE /api/v1/sessions/{id}        → 200 session (stopped); idempotent; 409
 *                                       session_starting while it starts
 *
 * Owner: sessions.owner_token_id is the caller's token id, sessions.owner its name. A user
 * never learns whether another user's session exists (404, never 403).
 */
#include "api_sessions.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_nodes.h"
#include "auth.h"
#include "err.h"
#include "ids.h"
#include "json.h"
#include "pgjson.h"
#include "scheduler.h"
#include "sessions.h"
#include "store.h"

/* The owner filter for the caller: NULL for admins (all sessions), else its token id. */
static const char *cp_api_sess_owner(cp_call *call)
{
    return call->who.role == CP_ROLE_ADMIN ? NULL : call->who.token_id;
}

static const char *cp_api_sess_path_id(cp_call *call)
{
    const char *id = wp_http_req_param(cp_call_req(call), "id");
    if (!id || !wp_uuid_valid(id)) {
        cp_call_respond_error(call, 404, "not_found", "no such session");
        return NULL;
    }
    return id;
}

static void cp_api_sess_create(cp_call *call)
{
    size_t len = 0;
    const char *body = wp_http_req_body(cp_call_req(call), &len);
    cJSON *doc = NULL;
    char err[256];
    if (!body || len == 0 || wp_json_parse(body, len, CP_SESSION_BODY_MAX, 8, &doc) != 0 ||
        !cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        cp_call_respond_error(call, 400, "invalid_json", "the body must be a JSON object");
        return;
    }
    if (cp_session_request_check(doc, err, sizeof(err)) != 0) {
        cJSON_Delete(doc);
        cp_call_respond_error(call, 400, "invalid_request", err);
        return;
    }
    cp_sessions_create(call, doc);
}

static void cp_api_sess_one(int err, PGresult *res, void *ud)
{
    cp_call *call = ud;
    if (err != 0) {
        cp_call_respond_db_error(call, err);
        return;
    }
    if (PQntuples(res) != 1) {
        cp_call_respond_error(call, 404, "not_found", "no such session");
        return;
    }
    cJSON *o = cp_pgjson_row(res, 0);
    if (!o) {
        cp_call_respond_error(call, 500, "internal", "out of memory");
        return;
    }
    cp_call_respond_json(call, 200, o);
    cJSON_Delete(o);
}

static void cp_api_sess_get(cp_call *call)
{
    const char *id = cp_api_sess_path_id(call);
    if (!id)
        return;
    const char *params[] = {id, cp_api_sess_owner(call)};
    int rc = cp_db_query(cp_store_db(call->server->store),
                         "SELECT " CP_SESSION_COLUMNS " FROM sessions WHERE id = $1::uuid AND "
                         "($2::uuid IS NULL OR owner_token_id = $2::uuid)",
                         2, params, cp_api_sess_one, call);
    if (rc != 0)
        cp_call_respond_db_error(call, rc);
}

static void cp_api_sess_delete(cp_call *call)
{
    const char *id = cp_api_sess_path_id(call);
    if (!id)
        return;
    cp_sessions_stop(call, id, cp_api_sess_owner(call));
}

static void cp_api_sess_listed(int err, PGresult *res, void *ud)
{
    cp_call *call = ud;
    cp_call_respond_page(call, err, res, "sessions", (int)(intptr_t)call->data);
}

static int cp_api_sess_status_valid(const char *s)
{
    static const char *const st[] = {"pending", "starting", "running", "stopping",
                                     "stopped", "failed",   "lost"};
    for (size_t i = 0; i < sizeof(st) / sizeof(st[0]); i++)
        if (strcmp(s, st[i]) == 0)
            return 1;
    return 0;
}

static void cp_api_sess_list(cp_call *call)
{
    char status[16], node[WP_NODE_ID_MAX + 1], owner[132], cursor[40], limit_s[16];
    int has_status, has_node, has_owner, has_cursor, has_limit;
    if ((has_status = cp_call_query(call, "status", status, sizeof(status))) < 0 ||
        (has_node = cp_call_query(call, "node", node, sizeof(node))) < 0 ||
        (has_owner = cp_call_query(call, "owner", owner, sizeof(owner))) < 0 ||
        (has_cursor = cp_call_query(call, "cursor", cursor, sizeof(cursor))) < 0 ||
        (has_limit = cp_call_query(call, "limit", limit_s, sizeof(limit_s))) < 0)
        return;
    int limit = cp_api_page_limit(has_limit ? limit_s : NULL, CP_SESSIONS_PAGE_DEFAULT,
                                  CP_SESSIONS_PAGE_MAX);
    const char *why = NULL;
    if (has_status && !cp_api_sess_status_valid(status))
        why = "query parameter \"status\": must be pending, starting, running, stopping, "
              "stopped, failed or lost";
    else if (has_node && !wp_node_id_valid(node))
        why = "query parameter \"node\": not a node id";
    else if (has_owner && call->who.role != CP_ROLE_ADMIN)
        why = "query parameter \"owner\": only admins may filter by owner";
    else if (has_cursor && !wp_uuid_valid(cursor))
        why = "query parameter \"cursor\": not a cursor this API returned";
    else if (limit < 0)
        why = "query parameter \"limit\": must be an integer between 1 and 500";
    if (why) {
        cp_call_respond_error(call, 400, "invalid_request", why);
        return;
    }
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit + 1);
    const char *params[] = {has_status ? status : NULL,
                            has_node ? node : NULL,
                            has_owner ? owner : NULL,
                            has_cursor ? cursor : NULL,
                            lim,
                            cp_api_sess_owner(call)};
    call->data = (void *)(intptr_t)limit;
    int rc = cp_db_query(cp_store_db(call->server->store),
                         "SELECT " CP_SESSION_COLUMNS " FROM sessions WHERE "
                         "($1::text IS NULL OR status = $1) AND "
                         "($2::text IS NULL OR node_id = $2) AND "
                         "($3::text IS NULL OR owner = $3) AND "
                         "($4::uuid IS NULL OR id > $4::uuid) AND "
                         "($6::uuid IS NULL OR owner_token_id = $6::uuid) "
                         "ORDER BY id LIMIT $5::int",
                         6, params, cp_api_sess_listed, call);
    if (rc != 0)
        cp_call_respond_db_error(call, rc);
}

int cp_api_sessions_register(cp_server *s)
{
    unsigned roles = CP_ROLE_ADMIN | CP_ROLE_USER;
    int rc;
    if ((rc = cp_auth_route(s, "POST", "/api/v1/sessions", roles, cp_api_sess_create)) != 0 ||
        (rc = cp_auth_route(s, "GET", "/api/v1/sessions", roles, cp_api_sess_list)) != 0 ||
        (rc = cp_auth_route(s, "GET", "/api/v1/sessions/{id}", roles, cp_api_sess_get)) != 0 ||
        (rc = cp_auth_route(s, "DELETE", "/api/v1/sessions/{id}", roles, cp_api_sess_delete)) != 0)
        return rc;
    return 0;
}
