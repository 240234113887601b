/*
 * api_nodes.c — the nodes resource (see api_nodes.h).
 *
 *   POST   /api/v1/nodes                {id, name?, max_sessions, labels?, enabled?}
 *                                       → 201 node (pre-registered: the agent's hello cannot
 *                                       override labels / max_sessions); 409 conflict if it exists
 *   GET    /api/v1/nodes?status=&gpu_vendor=&label=k=v,k2=v2&enabled=&limit=&cursor=
 *                                       → {"nodes":[...], "next_cursor": "<id>" | null},
 *                                       ordered by id; limit 1..500 (default 100)
 *   GET    /api/v1/nodes/{id}           → node
 *   PATCH  /api/v1/nodes/{id}           {enabled?, max_sessions?, labels?, name?} → node;
 *                                       labels are replaced as a whole; setting labels or
 *                                       max_sessions makes them admin-managed (preregistered)
 *   POST   /api/v1/nodes/{id}/drain     → node (status draining unless offline; no new sessions)
 *   POST   /api/v1/nodes/{id}/undrain   → node (status from the tunnel state: online / degraded
 *                                       when connected, else offline)
 *   DELETE /api/v1/nodes/{id}[?force=true] → 204; 409 node_busy while active_sessions > 0.
 *                                       force=true deletes anyway: in the same statement the
 *                                       node's pending/starting/running/stopping sessions
 *                                       become stopped (session.stopped, reason "node
 *                                       deregistered"), then their Wolf lobbies are stopped
 *                                       best-effort while the tunnel is still up.
 *
 * Every change and its event (node.registered, node.updated, node.drained, node.undrained,
 * node.deregistered; data.by names the admin token) are one SQL statement. Ids in paths that
 * are not valid node ids answer 404 like unknown ones; all values are bound parameters.
 */
#include "api_nodes.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "err.h"
#include "ids.h"
#include "json.h"
#include "log.h"
#include "nodes.h"
#include "pgjson.h"
#include "sessions.h"
#include "store.h"

#define CP_NODES_BODY_MAX (64 * 1024)
#define CP_NODES_NAME_MAX 128

/* The node as the API shows it; usable on nodes or on a CTE of RETURNING *. */
#define CP_NODE_COLUMNS                                                                            \
    "id, name, status, enabled, labels, max_sessions, active_sessions, gpu_vendor, gpus, "         \
    "gpu_stats, load, wolf_health, wolf_healthy, version, services, connected_replica, "           \
    "" CP_SQL_TS(                                                                                  \
        "last_heartbeat") " AS last_heartbeat, draining, "                                         \
                          "(draining AND active_sessions = 0) AS deploy_safe, "                    \
                          "preregistered, " CP_SQL_TS("created_at") " AS created_at, " CP_SQL_TS(  \
                              "updated_at") " AS updated_at"

int cp_api_page_limit(const char *s, int dflt, int max)
{
    if (!s || !*s)
        return dflt;
    long v = 0;
    for (size_t i = 0; s[i]; i++) {
        if (s[i] < '0' || s[i] > '9' || i >= 6)
            return WP_ERR_INVAL;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > max)
        return WP_ERR_INVAL;
    return (int)v;
}

static cp_db *cp_nodes_db(cp_call *call)
{
    return cp_store_db(call->server->store);
}

/* Reads the id route parameter; answers 404 and returns NULL when it is not a node id. */
static const char *cp_nodes_path_id(cp_call *call)
{
    const char *id = wp_http_req_param(cp_call_req(call), "id");
    if (!id || !wp_node_id_valid(id)) {
        cp_call_respond_error(call, 404, "not_found", "no such node");
        return NULL;
    }
    return id;
}

/* Parses the body as a JSON object and validates it; answers 400 and returns NULL on failure. */
static cJSON *cp_nodes_body(cp_call *call, const wp_json_field *fields, size_t n)
{
    size_t len = 0;
    const char *body = wp_http_req_body(cp_call_req(call), &len);
    cJSON *doc = NULL;
    char err[256];
    if (!body || len == 0 || wp_json_parse(body, len, CP_NODES_BODY_MAX, 8, &doc) != 0 ||
        !cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        cp_call_respond_error(call, 400, "invalid_json", "the body must be a JSON object");
        return NULL;
    }
    if (wp_json_validate(doc, fields, n, WP_JSON_UNKNOWN_REJECT, err, sizeof(err)) != 0) {
        cJSON_Delete(doc);
        cp_call_respond_error(call, 400, "invalid_request", err);
        return NULL;
    }
    return doc;
}

/* Name: no control characters (UTF-8 validity and length are checked by the parser/spec). */
static int cp_nodes_name_ok(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

/* Checks labels (when present) and prints them for a parameter; answers 400 on failure. */
static int cp_nodes_labels_param(cp_call *call, const cJSON *doc, char **out)
{
    *out = NULL;
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(doc, "labels");
    if (!labels)
        return 0;
    char err[256];
    if (cp_node_labels_check(labels, CP_NODE_LABELS_MAX, err, sizeof(err)) != 0) {
        cp_call_respond_error(call, 400, "invalid_request", err);
        return -1;
    }
    *out = wp_json_print(labels);
    if (!*out) {
        cp_call_respond_error(call, 500, "internal", "out of memory");
        return -1;
    }
    return 0;
}

/* A result of at most one node row: 200 with it, or 404. */
static void cp_nodes_one(int err, PGresult *res, void *ud)
{
    cp_call *call = ud;
    if (err != 0) {
        cp_call_respond_db_error(call, err);
        return;
    }
    if (PQntuples(res) != 1) {
        cp_call_respond_error(call, 404, "not_found", "no such node");
        return;
    }
    cJSON *o = cp_pgjson_row(res, 0);
    if (!o) {
        cp_call_respond_error(call, 500, "internal", "out of memory");
        return;
    }
    int status = (int)(intptr_t)call->data;
    cp_call_respond_json(call, status ? status : 200, o);
    cJSON_Delete(o);
}

/* ---- POST /api/v1/nodes ---- */

static void cp_nodes_created(int err, PGresult *res, void *ud)
{
    cp_call *call = ud;
    if (err == 0 && PQntuples(res) == 0) {
        cp_call_respond_error(call, 409, "conflict", "a node with this id already exists");
        return;
    }
    if (err == 0)
        wp_log_info("node pre-registered", WP_LS("node", PQgetvalue(res, 0, 0)),
                    WP_LS("by", call->who.name));
    call->data = (void *)(intptr_t)201;
    cp_nodes_one(err, res, call);
}

static void cp_nodes_create(cp_call *call)
{
    static const wp_json_field fields[] = {
        {"id", WP_JSON_STRING, 1, WP_NODE_ID_MAX, 0, 0},
        {"name", WP_JSON_STRING, 0, CP_NODES_NAME_MAX, 0, 0},
        {"max_sessions", WP_JSON_INT, 1, 0, 1, 1000},
        {"labels", WP_JSON_OBJECT, 0, CP_NODE_LABELS_MAX, 0, 0},
        {"enabled", WP_JSON_BOOL, 0, 0, 0, 0},
    };
    cJSON *doc = cp_nodes_body(call, fields, sizeof(fields) / sizeof(fields[0]));
    if (!doc)
        return;
    const char *id = wp_json_get_str(doc, "id");
    const char *name = wp_json_get_str(doc, "name");
    long long max = 0;
    int enabled = 1;
    wp_json_get_int(doc, "max_sessions", &max);
    wp_json_get_bool(doc, "enabled", &enabled);
    const char *why = NULL;
    if (!wp_node_id_valid(id))
        why = "field \"id\": must match [a-z0-9][a-z0-9-]{0,62}";
    else if (name && !cp_nodes_name_ok(name))
        why = "field \"name\": must not contain control characters";
    if (why) {
        cJSON_Delete(doc);
        cp_call_respond_error(call, 400, "invalid_request", why);
        return;
    }
    char *labels = NULL;
    if (cp_nodes_labels_param(call, doc, &labels) != 0) {
        cJSON_Delete(doc);
        return;
    }
    char maxs[16];
    snprintf(maxs, sizeof(maxs), "%lld", max);
    const char *params[] = {
        id, name, maxs, labels ? labels : "{}", enabled ? "true" : "false", call->who.name};
    int rc = cp_db_query(
        cp_nodes_db(call),
        "WITH ins AS (INSERT INTO nodes (id, name, max_sessions, labels, enabled, preregistered) "
        "VALUES ($1, coalesce($2, ''), $3::int, $4::jsonb, $5::boolean, true) "
        "ON CONFLICT (id) DO NOTHING RETURNING *), "
        "e AS (INSERT INTO events (type, node_id, data) SELECT 'node.registered', id, "
        "jsonb_build_object('preregistered', true, 'by', $6::text) FROM ins) "
        "SELECT " CP_NODE_COLUMNS " FROM ins",
        6, params, cp_nodes_created, call);
    cJSON_free(labels);
    cJSON_Delete(doc);
    if (rc != 0)
        cp_call_respond_db_error(call, rc);
}

/* ---- GET /api/v1/nodes ---- */

static void cp_nodes_listed(int err, PGresult *res, void *ud)
{
    cp_call *call = ud;
    cp_call_respond_page(call, err, res, "nodes", (int)(intptr_t)call->data);
}

static void cp_nodes_list(cp_call *call)
{
    char status[16], vendor[16], label[4096], cursor[WP_NODE_ID_MAX + 1], limit_s[16], enabled[8];
    int has_status, has_vendor, has_label, has_cursor, has_limit, has_enabled;
    if ((has_status = cp_call_query(call, "status", status, sizeof(status))) < 0 ||
        (has_vendor = cp_call_query(call, "gpu_vendor", vendor, sizeof(vendor))) < 0 ||
        (has_label = cp_call_query(call, "label", label, sizeof(label))) < 0 ||
        (has_cursor = cp_call_query(call, "cursor", cursor, sizeof(cursor))) < 0 ||
        (has_limit = cp_call_query(call, "limit", limit_s, sizeof(limit_s))) < 0 ||
        (has_enabled = cp_call_query(call, "enabled", enabled, sizeof(enabled))) < 0)
        return;
    const char *why = NULL;
    int limit =
        cp_api_page_limit(has_limit ? limit_s : NULL, CP_NODES_PAGE_DEFAULT, CP_NODES_PAGE_MAX);
    if (has_status && !cp_node_status_valid(status))
        why = "query parameter \"status\": must be online, degraded, draining or offline";
    else if (has_vendor && !cp_node_gpu_vendor_valid(vendor))
        why = "query parameter \"gpu_vendor\": must be nvidia, amd, intel or none";
    else if (has_cursor && !wp_node_id_valid(cursor))
        why = "query parameter \"cursor\": not a cursor this API returned";
    else if (limit < 0)
        why = "query parameter \"limit\": must be an integer between 1 and 500";
    else if (has_enabled && strcmp(enabled, "true") != 0 && strcmp(enabled, "false") != 0)
        why = "query parameter \"enabled\": must be true or false";
    if (why) {
        cp_call_respond_error(call, 400, "invalid_request", why);
        return;
    }
    cJSON *sel = NULL;
    char *sel_text = NULL;
    if (has_label) {
        char err[256];
        int rc = cp_node_selector_parse(label, &sel, err, sizeof(err));
        if (rc != 0) {
            if (rc == WP_ERR_NOMEM)
                cp_call_respond_error(call, 500, "internal", "out of memory");
            else
                cp_call_respond_error(call, 400, "invalid_request", err);
            return;
        }
        sel_text = wp_json_print(sel);
        cJSON_Delete(sel);
        if (!sel_text) {
            cp_call_respond_error(call, 500, "internal", "out of memory");
            return;
        }
    }
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit + 1);
    const char *params[] = {has_status ? status : NULL,
                            has_vendor ? vendor : NULL,
                            sel_text,
                            has_cursor ? cursor : NULL,
                            lim,
                            has_enabled ? enabled : NULL};
    call->data = (void *)(intptr_t)limit;
    int rc = cp_db_query(cp_nodes_db(call),
                         "SELECT " CP_NODE_COLUMNS " FROM nodes WHERE "
                         "($1::text IS NULL OR status = $1) AND "
                         "($2::text IS NULL OR gpu_vendor = $2) AND "
                         "($3::jsonb IS NULL OR labels @> $3::jsonb) AND "
                         "($4::text IS NULL OR id > $4) AND "
                         "($6::boolean IS NULL OR enabled = $6::boolean) "
                         "ORDER BY id LIMIT $5::int",
                         6, params, cp_nodes_listed, call);
    cJSON_free(sel_text);
    if (rc != 0)
        cp_call_respond_db_error(call, rc);
}

/* ---- GET /api/v1/nodes/{id} ---- */

static void cp_nodes_get(cp_call *call)
{
    const char *id = cp_nodes_path_id(call);
    if (!id)
        return;
    const char *params[] = {id};
    int rc = cp_db_query(cp_nodes_db(call), "SELECT " CP_NODE_COLUMNS " FROM nodes WHERE id = $1",
                         1, params, cp_nodes_one, call);
    if (rc != 0)
        cp_call_respond_db_error(call, rc);
}

/* ---- PATCH /api/v1/nodes/{id} ---- */

static void cp_nodes_patch(cp_call *call)
{
    static const wp_json_field fields[] = {
        {"enabled", WP_JSON_BOOL, 0, 0, 0, 0},
        {"max_sessions", WP_JSON_INT, 0, 0, 1, 1000},
        {"labels", WP_JSON_OBJECT, 0, CP_NODE_LABELS_MAX, 0, 0},
        {"name", WP_JSON_STRING, 0, CP_NODES_NAME_MAX, 0, 0},
    };
    const char *id = cp_nodes_path_id(call);
    if (!id)
        return;
    cJSON *doc = cp_nodes_body(call, fields, sizeof(fields) / sizeof(fields[0]));
    if (!doc)
        return;
    const char *name = wp_json_get_str(doc, "name");
    const char *why = !doc->child ? "nothing to change: give enabled, max_sessions, labels or name"
                      : name && !cp_nodes_name_ok(name)
                          ? "field \"name\": must not contain control characters"
                          : NULL;
    if (why) {
        cJSON_Delete(doc);
        cp_call_respond_error(call, 400, "invalid_request", why);
        return;
    }
    char *labels = NULL;
    if (cp_nodes_labels_param(call, doc, &labels) != 0) {
        cJSON_Delete(doc);
        return;
    }
    long long max = 0;
    int enabled = 0;
    char maxs[16] = "";
    int has_max = wp_json_get_int(doc, "max_sessions", &max) == 0;
    int has_enabled = wp_json_get_bool(doc, "enabled", &enabled) == 0;
    if (has_max)
        snprintf(maxs, sizeof(maxs), "%lld", max);
    char *changes = wp_json_print(doc);
    if (!changes) {
        cJSON_free(labels);
        cJSON_Delete(doc);
        cp_call_respond_error(call, 500, "internal", "out of memory");
        return;
    }
    const char *params[] = {id,
                            has_enabled ? (enabled ? "true" : "false") : NULL,
                            has_max ? maxs : NULL,
                            labels,
                            name,
                            changes,
                            call->who.name};
    int rc = cp_db_query(
        cp_nodes_db(call),
        "WITH u AS (UPDATE nodes SET enabled = coalesce($2::boolean, enabled), "
        "max_sessions = coalesce($3::int, max_sessions), labels = coalesce($4::jsonb, labels), "
        "name = coalesce($5::text, name), "
        "preregistered = preregistered OR $3::int IS NOT NULL OR $4::jsonb IS NOT NULL "
        "WHERE id = $1 RETURNING *), "
        "e AS (INSERT INTO events (type, node_id, data) SELECT 'node.updated', id, "
        "jsonb_build_object('changes', $6::jsonb, 'by', $7::text) FROM u) "
        "SELECT " CP_NODE_COLUMNS " FROM u",
        7, params, cp_nodes_one, call);
    cJSON_free(changes);
    cJSON_free(labels);
    cJSON_Delete(doc);
    if (rc != 0)
        cp_call_respond_db_error(call, rc);
}

/* ---- drain / undrain ---- */

static void cp_nodes_drain_common(cp_call *call, int drain)
{
    const char *id = cp_nodes_path_id(call);
    if (!id)
        return;
    const char *params[] = {id, call->who.name};
    static const char drain_sql[] =
        "WITH prev AS (SELECT id, draining, status FROM nodes WHERE id = $1 FOR UPDATE), "
        "u AS (UPDATE nodes n SET draining = true, "
        "status = CASE WHEN n.status = 'offline' THEN 'offline' ELSE 'draining' END "
        "FROM prev WHERE n.id = prev.id RETURNING n.*, prev.draining AS was_draining, "
        "prev.status AS prev_status), "
        "e AS (INSERT INTO events (type, node_id, data) SELECT 'node.drained', id, "
        "jsonb_build_object('from', prev_status, 'to', status, 'active_sessions', "
        "active_sessions, 'by', $2::text) FROM u WHERE NOT was_draining) "
        "SELECT " CP_NODE_COLUMNS " FROM u";
    static const char undrain_sql[] =
        "WITH prev AS (SELECT id, draining, status FROM nodes WHERE id = $1 FOR UPDATE), "
        "u AS (UPDATE nodes n SET draining = false, "
        "status = CASE WHEN n.status = 'offline' OR n.connected_replica IS NULL OR "
        "n.last_heartbeat IS NULL THEN 'offline' WHEN n.wolf_healthy AND "
        "(n.cooldown_until IS NULL OR n.cooldown_until <= now()) THEN 'online' "
        "ELSE 'degraded' END "
        "FROM prev WHERE n.id = prev.id RETURNING n.*, prev.draining AS was_draining, "
        "prev.status AS prev_status), "
        "e AS (INSERT INTO events (type, node_id, data) SELECT 'node.undrained', id, "
        "jsonb_build_object('from', prev_status, 'to', status, 'by', $2::text) FROM u "
        "WHERE was_draining) "
        "SELECT " CP_NODE_COLUMNS " FROM u";
    int rc = cp_db_query(cp_nodes_db(call), drain ? drain_sql : undrain_sql, 2, params,
                         cp_nodes_one, call);
    if (rc != 0)
        cp_call_respond_db_error(call, rc);
}

static void cp_nodes_drain(cp_call *call)
{
    cp_nodes_drain_common(call, 1);
}

static void cp_nodes_undrain(cp_call *call)
{
    cp_nodes_drain_common(call, 0);
}

/* ---- DELETE /api/v1/nodes/{id} ---- */

static void cp_nodes_deleted(int err, PGresult *res, void *ud)
{
    cp_call *call = ud;
    if (err != 0) {
        cp_call_respond_db_error(call, err);
        return;
    }
    if (PQntuples(res) != 1) {
        cp_call_respond_error(call, 404, "not_found", "no such node");
        return;
    }
    const char *active = PQgetvalue(res, 0, 0);
    if (strcmp(PQgetvalue(res, 0, 1), "0") == 0) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "the node has %s active session(s): drain it and wait, or use ?force=true",
                 active);
        cJSON *o = cJSON_CreateObject();
        cJSON *e = o ? cJSON_AddObjectToObject(o, "error") : NULL;
        cJSON *d = e ? cJSON_CreateObject() : NULL;
        if (!d || !cJSON_AddStringToObject(e, "code", "node_busy") ||
            !cJSON_AddStringToObject(e, "message", msg) ||
            !cJSON_AddNumberToObject(d, "active_sessions", atof(active)) ||
            !cJSON_AddItemToObject(e, "details", d)) {
            cJSON_Delete(d);
            cJSON_Delete(o);
            cp_call_respond_error(call, 409, "node_busy", msg);
            return;
        }
        cp_call_respond_json(call, 409, o);
        cJSON_Delete(o);
        return;
    }
    wp_log_info("node deregistered", WP_LS("node", PQgetvalue(res, 0, 2)),
                WP_LS("active_sessions", active), WP_LS("by", call->who.name));
    cJSON *stopped = NULL;
    const char *st = PQgetvalue(res, 0, 3);
    if (wp_json_parse(st, strlen(st), 1 << 20, 4, &stopped) == 0)
        cp_sessions_stop_lobbies(call->server, PQgetvalue(res, 0, 2), stopped);
    cJSON_Delete(stopped);
    cp_call_respond_empty(call, 204);
}

static void cp_nodes_delete(cp_call *call)
{
    const char *id = cp_nodes_path_id(call);
    if (!id)
        return;
    char force[8];
    int has_force = cp_call_query(call, "force", force, sizeof(force));
    if (has_force < 0)
        return;
    if (has_force && strcmp(force, "true") != 0 && strcmp(force, "false") != 0) {
        cp_call_respond_error(call, 400, "invalid_request",
                              "query parameter \"force\": must be true or false");
        return;
    }
    const char *params[] = {id, has_force ? force : "false", call->who.name};
    int rc = cp_db_query(
        cp_nodes_db(call),
        "WITH n AS (SELECT id, status, active_sessions FROM nodes WHERE id = $1 FOR UPDATE), "
        "d AS (DELETE FROM nodes USING n WHERE nodes.id = n.id AND "
        "(n.active_sessions = 0 OR $2::boolean) RETURNING nodes.id, n.status, n.active_sessions), "
        "e AS (INSERT INTO events (type, node_id, data) SELECT 'node.deregistered', id, "
        "jsonb_build_object('status', status, 'active_sessions', active_sessions, 'force', "
        "$2::boolean, 'by', $3::text) FROM d), "
        "st AS (UPDATE sessions SET status = 'stopped', stopped_at = now(), "
        "failure_reason = 'node deregistered' FROM d WHERE sessions.node_id = d.id AND "
        "sessions.status IN ('pending', 'starting', 'running', 'stopping') "
        "RETURNING sessions.id, sessions.wolf_lobby_id, sessions.wolf_pin), "
        "se AS (INSERT INTO events (type, node_id, session_id, message) SELECT 'session.stopped', "
        "$1, id, 'node deregistered' FROM st) "
        "SELECT n.active_sessions, (SELECT count(*) FROM d) AS deleted, n.id, "
        "(SELECT coalesce(jsonb_agg(jsonb_build_object('lobby', wolf_lobby_id, 'pin', wolf_pin)) "
        "FILTER (WHERE wolf_lobby_id IS NOT NULL), '[]'::jsonb) FROM st) AS stopped FROM n",
        3, params, cp_nodes_deleted, call);
    if (rc != 0)
        cp_call_respond_db_error(call, rc);
}

int cp_api_nodes_register(cp_server *s)
{
    int rc;
    if ((rc = cp_auth_route(s, "POST", "/api/v1/nodes", CP_ROLE_ADMIN, cp_nodes_create)) != 0 ||
        (rc = cp_auth_route(s, "GET", "/api/v1/nodes", CP_ROLE_ADMIN, cp_nodes_list)) != 0 ||
        (rc = cp_auth_route(s, "GET", "/api/v1/nodes/{id}", CP_ROLE_ADMIN, cp_nodes_get)) != 0 ||
        (rc = cp_auth_route(s, "PATCH", "/api/v1/nodes/{id}", CP_ROLE_ADMIN, cp_nodes_patch)) !=
            0 ||
        (rc = cp_auth_route(s, "POST", "/api/v1/nodes/{id}/drain", CP_ROLE_ADMIN,
                            cp_nodes_drain)) != 0 ||
        (rc = cp_auth_route(s, "POST", "/api/v1/nodes/{id}/undrain", CP_ROLE_ADMIN,
                            cp_nodes_undrain)) != 0 ||
        (rc = cp_auth_route(s, "DELETE", "/api/v1/nodes/{id}", CP_ROLE_ADMIN, cp_nodes_delete)) !=
            0)
        return rc;
    return 0;
}
