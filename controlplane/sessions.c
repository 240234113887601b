/*
 * sessions.c — session lifecycle: create with fallback, stop, recovery pass,
 * reconciliation on tunnel (re)connect (see sessions.h).
 *
 * Every operation is a small heap object (cp_sess_op) that moves through its
 * steps from database and Wolf callbacks; the engine counts them and is freed
 * after shutdown once the last one ended. Every SQL statement that changes a
 * session's status is conditioned on the status it expects, so a create, a
 * stop, the recovery pass and reconciliation racing on one session (on one or
 * several replicas) each see either their transition applied or no row.
 */
#include "sessions.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "err.h"
#include "events.h"
#include "ids.h"
#include "json.h"
#include "log.h"
#include "pgjson.h"
#include "scheduler.h"
#include "store.h"
#include "tunnel.h"
#include "wolf.h"

#define CP_SESS_SKIP_RETRIES  8 /* reservation retries when SKIP LOCKED skipped a free node */
#define CP_SESS_STOP_BATCH    16
#define CP_SESS_WOLF_SESSIONS 64 /* Wolf sessions stopped per lobby */
#define CP_SESS_MSG_MAX       256

struct cp_sessions {
    cp_server *s;
    uv_timer_t timer;
    int shutting;
    int timer_closed;
    size_t nops;
    int recovery_inflight;
    int first_pass_done;
    struct cp_sess_op *ops; /* list of operations in flight */
};

enum cp_sess_kind { CP_SESS_CREATE = 1, CP_SESS_STOP, CP_SESS_RECONCILE, CP_SESS_REAP };

/* A lobby on a reconciled node; sid/pin/sstatus from the session its runner name points to. */
typedef struct cp_sess_orphan {
    char *id;     /* lobby id */
    char *runner; /* runner name as Wolf reports it (NULL: none or too long) */
    char sid[40]; /* "" when no session row has it as sandbox container */
    char pin[8];
    char sstatus[16];
} cp_sess_orphan;

typedef struct cp_sess_op {
    struct cp_sess_op *next, *prev;
    cp_sessions *eng;
    int kind;
    cp_call *call; /* NULL for background operations */
    char id[40];   /* session id */
    char node[64];
    /* create */
    cJSON *doc;
    cp_sched_req req;
    char container[CP_SESSION_CONTAINER_MAX];
    char pin[8];
    char tried[CP_SESSION_ATTEMPTS_MAX][64];
    size_t ntried;
    int attempt;
    int skip_retries;
    int retry_wait; /* the next reservation waits for locked rows (cp_sched_reserve_wait) */
    int last_timeout;
    char last_reason[32];
    char last_msg[CP_SESS_MSG_MAX];
    cJSON *failures;
    int fail_status; /* the answer of a failed create, sent once the failure is recorded */
    const char *fail_code;
    char fail_msg[CP_SESS_MSG_MAX + 128];
    cJSON *fail_details;
    /* stop / reconcile / reap */
    char lobby[CP_SESSIONS_LOBBY_MAX + 1];
    char note[CP_SESS_MSG_MAX];
    char *wolf_sessions[CP_SESS_WOLF_SESSIONS];
    size_t nwolf, iwolf;
    int64_t connected_at_ms;
    struct cp_sess_orphan *orphans; /* reconcile: the node's lobbies, then its orphans */
    size_t norphans, iorphan;
} cp_sess_op;

static void cp_sess_maybe_free(cp_sessions *eng);

/* ---- engine ---- */

static cp_db *cp_sess_db(cp_sessions *eng)
{
    return eng->s->store ? cp_store_db(eng->s->store) : NULL;
}

static uint64_t cp_sess_wolf_ms(cp_sessions *eng)
{
    return (uint64_t)eng->s->cfg->wolf_timeout_s * 1000u;
}

static cp_sess_op *cp_sess_op_new(cp_sessions *eng, int kind, cp_call *call)
{
    if (eng->nops >= CP_SESSIONS_OPS_MAX)
        return NULL;
    cp_sess_op *op = calloc(1, sizeof(*op));
    if (!op)
        return NULL;
    op->eng = eng;
    op->kind = kind;
    op->call = call;
    op->next = eng->ops;
    if (eng->ops)
        eng->ops->prev = op;
    eng->ops = op;
    eng->nops++;
    return op;
}

static void cp_sess_op_free(cp_sess_op *op)
{
    cp_sessions *eng = op->eng;
    if (op->prev)
        op->prev->next = op->next;
    else
        eng->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    eng->nops--;
    cJSON_Delete(op->doc);
    cJSON_Delete(op->failures);
    cJSON_Delete(op->fail_details);
    for (size_t i = 0; i < op->nwolf; i++)
        free(op->wolf_sessions[i]);
    for (size_t i = 0; i < op->norphans; i++) {
        free(op->orphans[i].id);
        free(op->orphans[i].runner);
    }
    free(op->orphans);
    free(op);
    cp_sess_maybe_free(eng);
}

/* A stop of session id is already running in this process. */
static int cp_sess_stop_inflight(cp_sessions *eng, const char *id)
{
    for (cp_sess_op *o = eng->ops; o; o = o->next)
        if (o->kind == CP_SESS_STOP && strcmp(o->id, id) == 0)
            return 1;
    return 0;
}

/* A reconciliation of node is already running in this process. */
static int cp_sess_reconcile_inflight(cp_sessions *eng, const char *node)
{
    for (cp_sess_op *o = eng->ops; o; o = o->next)
        if (o->kind == CP_SESS_RECONCILE && strcmp(o->node, node) == 0)
            return 1;
    return 0;
}

/* Answers with the first row of res as the session object (or 404 when none). */
static void cp_sess_respond_row(cp_call *call, int status, const PGresult *res)
{
    if (!call)
        return;
    if (!res || PQntuples(res) < 1) {
        cp_call_respond_error(call, 404, "not_found", "no such session");
        return;
    }
    cJSON *o = cp_pgjson_row(res, 0);
    if (!o) {
        cp_call_respond_error(call, 500, "internal", "out of memory");
        return;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(o, "pin_");
    cJSON_DeleteItemFromObjectCaseSensitive(o, "lobby_");
    cp_call_respond_json(call, status, o);
    cJSON_Delete(o);
}

/* Answers {"error":{code, message, details}} (details consumed). */
static void cp_sess_respond_details(cp_call *call, int status, const char *code, const char *msg,
                                    cJSON *details)
{
    if (!call) {
        cJSON_Delete(details);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *e = o ? cJSON_AddObjectToObject(o, "error") : NULL;
    if (!e || !cJSON_AddStringToObject(e, "code", code) ||
        !cJSON_AddStringToObject(e, "message", msg)) {
        cJSON_Delete(o);
        cJSON_Delete(details);
        cp_call_respond_error(call, status, code, msg);
        return;
    }
    if (details)
        cJSON_AddItemToObject(e, "details", details);
    cp_call_respond_json(call, status, o);
    cJSON_Delete(o);
}

/* ---- create ---- */

static const char cp_sess_sql_insert[] =
    "WITH s AS (INSERT INTO sessions (id, owner_token_id, owner, name, sandbox_container, "
    "request, wolf_pin) VALUES ($1::uuid, $2::uuid, $3, $4, $5, $6::jsonb, $7) RETURNING *), "
    "e AS (INSERT INTO events (type, session_id, token_id, data) SELECT 'session.created', id, "
    "owner_token_id, jsonb_build_object('owner', owner, 'name', name, 'container', "
    "sandbox_container) FROM s) "
    "SELECT id FROM s";

static const char cp_sess_sql_running[] =
    "WITH s AS (UPDATE sessions SET status = 'running', wolf_lobby_id = $3, started_at = now(), "
    "failure_reason = NULL WHERE id = $1::uuid AND status = 'starting' AND node_id = $2 "
    "RETURNING *), "
    "e AS (INSERT INTO events (type, node_id, session_id, data) SELECT 'session.running', "
    "node_id, id, jsonb_build_object('lobby_id', wolf_lobby_id, 'attempts', attempts) FROM s) "
    "SELECT " CP_SESSION_COLUMNS " FROM s";

/* $1 session, $2 node, $3 reason, $4 message, $5 cooldown s, $6 attempt */
static const char cp_sess_sql_release[] =
    "WITH s AS (UPDATE sessions SET status = 'pending', node_id = NULL "
    "WHERE id = $1::uuid AND status = 'starting' AND node_id = $2 RETURNING id), "
    "prev AS (SELECT id, status FROM nodes WHERE id = $2 FOR UPDATE), "
    "n AS (UPDATE nodes SET active_sessions = greatest(nodes.active_sessions - "
    "(SELECT count(*) FROM s)::int, 0), "
    "cooldown_until = CASE WHEN $5::int > 0 THEN now() + make_interval(secs => $5::int) "
    "ELSE nodes.cooldown_until END, "
    "status = CASE WHEN $5::int > 0 AND nodes.status = 'online' THEN 'degraded' "
    "ELSE nodes.status END "
    "FROM prev WHERE nodes.id = prev.id RETURNING nodes.id, nodes.status, "
    "prev.status AS prev_status), "
    "e1 AS (INSERT INTO events (type, node_id, session_id, message, data) "
    "SELECT 'session.start_failed', $2, id, left($4, 1024), jsonb_build_object('reason', "
    "$3::text, 'attempt', $6::int, 'cooldown_s', $5::int) FROM s), "
    "e2 AS (INSERT INTO events (type, node_id, data) SELECT 'node.degraded', id, "
    "jsonb_build_object('from', prev_status, 'to', status, 'reason', 'session_start_failed', "
    "'cooldown_s', $5::int) FROM n WHERE status IS DISTINCT FROM prev_status) "
    "SELECT (SELECT count(*) FROM s) AS released";

/* $1 session, $2 reason, $3 details */
static const char cp_sess_sql_fail[] =
    "WITH s AS (UPDATE sessions SET status = 'failed', failure_reason = left($2, 1024), "
    "stopped_at = now() WHERE id = $1::uuid AND status = 'pending' RETURNING *), "
    "e AS (INSERT INTO events (type, session_id, message, data) SELECT 'session.failed', id, "
    "failure_reason, $3::jsonb FROM s) "
    "SELECT " CP_SESSION_COLUMNS " FROM s";

static void cp_sess_try_next(cp_sess_op *op);
static void cp_sess_create_fail(cp_sess_op *op, int status, const char *code, const char *msg,
                                cJSON *details);
static void cp_sess_reap_one(cp_sessions *eng, const char *node, const char *lobby,
                             const char *pin);

static void cp_sess_create_db_error(cp_sess_op *op, int err)
{
    wp_log_warn("session create: database error", WP_LS("session", op->id), WP_LE("err", err));
    if (op->call)
        cp_call_respond_db_error(op->call, err);
    cp_sess_op_free(op);
}

/* Answers the failure cp_sess_create_fail recorded in op, then ends op. */
static void cp_sess_failed_done(int err, PGresult *res, void *ud)
{
    cp_sess_op *op = ud;
    (void)res;
    if (err != 0)
        wp_log_warn("session failed but not recorded (the recovery pass will)",
                    WP_LS("session", op->id), WP_LE("err", err));
    cp_sess_respond_details(op->call, op->fail_status, op->fail_code, op->fail_msg,
                            op->fail_details);
    op->fail_details = NULL;
    op->call = NULL;
    cp_sess_op_free(op);
}

/*
 * Fails the (pending) session in the database, then answers status/code/msg (details
 * consumed; code a literal): a client that gets the error and reads the session sees it failed.
 */
static void cp_sess_create_fail(cp_sess_op *op, int status, const char *code, const char *msg,
                                cJSON *details)
{
    wp_log_warn("session failed to start", WP_LS("session", op->id), WP_LS("code", code),
                WP_LS("reason", msg));
    if (details && !cJSON_GetObjectItemCaseSensitive(details, "session_id"))
        cJSON_AddStringToObject(details, "session_id", op->id);
    char *dt = details ? wp_json_print(details) : NULL;
    char reason[CP_SESS_MSG_MAX + 64];
    snprintf(reason, sizeof(reason), "%s: %s", code, msg);
    const char *params[] = {op->id, reason, dt ? dt : "{}"};
    op->fail_status = status;
    op->fail_code = code;
    snprintf(op->fail_msg, sizeof(op->fail_msg), "%s", msg);
    cJSON_Delete(op->fail_details);
    op->fail_details = details;
    cp_db *db = cp_sess_db(op->eng);
    int rc =
        db ? cp_db_query(db, cp_sess_sql_fail, 3, params, cp_sess_failed_done, op) : WP_ERR_CLOSED;
    cJSON_free(dt);
    if (rc != 0)
        cp_sess_failed_done(rc, NULL, op);
}

static void cp_sess_running(int err, PGresult *res, void *ud)
{
    cp_sess_op *op = ud;
    if (err != 0 || PQntuples(res) != 1) {
        /* The recovery pass (or a lost database) took the session: the lobby is an orphan. */
        wp_log_warn("session started but could not be recorded; stopping its lobby",
                    WP_LS("session", op->id), WP_LS("node", op->node), WP_LE("err", err));
        cp_sess_reap_one(op->eng, op->node, op->lobby, op->pin);
        if (op->call)
            cp_call_respond_error(op->call, 502, "start_failed",
                                  err ? "the database did not record the start"
                                      : "the session was failed while starting");
        cp_sess_op_free(op);
        return;
    }
    wp_log_info("session running", WP_LS("session", op->id), WP_LS("node", op->node),
                WP_LS("lobby", op->lobby), WP_LI("attempts", op->attempt));
    cp_sess_respond_row(op->call, 201, res);
    cp_sess_op_free(op);
}

static void cp_sess_released(int err, PGresult *res, void *ud)
{
    cp_sess_op *op = ud;
    (void)res;
    if (err != 0) {
        cp_sess_create_db_error(op, err);
        return;
    }
    if (op->eng->shutting) {
        cp_sess_create_fail(op, 503, "shutting_down", "the control plane is shutting down", NULL);
        return;
    }
    cp_sess_try_next(op);
}

/* Releases op->node's slot (session back to pending), cooling the node down when asked. */
static void cp_sess_release(cp_sess_op *op, const char *reason, const char *msg, int cooldown)
{
    snprintf(op->last_reason, sizeof(op->last_reason), "%s", reason);
    snprintf(op->last_msg, sizeof(op->last_msg), "%s", msg ? msg : "");
    cJSON *f = cJSON_CreateObject();
    if (f && op->failures && cJSON_AddStringToObject(f, "node_id", op->node) &&
        cJSON_AddStringToObject(f, "reason", reason) &&
        cJSON_AddStringToObject(f, "message", op->last_msg))
        cJSON_AddItemToArray(op->failures, f);
    else
        cJSON_Delete(f);
    wp_log_warn("session start failed on node", WP_LS("session", op->id), WP_LS("node", op->node),
                WP_LS("reason", reason), WP_LS("message", op->last_msg));
    char cd[16], att[16];
    snprintf(cd, sizeof(cd), "%d", op->eng->shutting ? 0 : cooldown);
    snprintf(att, sizeof(att), "%d", op->attempt);
    const char *params[] = {op->id, op->node, reason, op->last_msg, cd, att};
    cp_db *db = cp_sess_db(op->eng);
    int rc =
        db ? cp_db_query(db, cp_sess_sql_release, 6, params, cp_sess_released, op) : WP_ERR_CLOSED;
    if (rc != 0)
        cp_sess_create_db_error(op, rc);
}

static void cp_sess_lobby_created(const cp_wolf_result *r, void *ud)
{
    cp_sess_op *op = ud;
    const char *lobby = r->err == 0 ? wp_json_get_str(r->body, "lobby_id") : NULL;
    if (r->err == 0 && !cp_wolf_lobby_id_valid(lobby)) {
        op->last_timeout = 0;
        cp_sess_release(op, "bad_response", "lobbies/create answered without a valid lobby_id",
                        (int)op->eng->s->cfg->node_cooldown_s);
        return;
    }
    if (r->err != 0) {
        char msg[CP_SESS_MSG_MAX];
        snprintf(msg, sizeof(msg), "%s%s%s", r->message ? r->message : "",
                 r->agent_reason && *r->agent_reason ? " / agent: " : "",
                 r->agent_reason ? r->agent_reason : "");
        op->last_timeout = r->reason && strcmp(r->reason, "timeout") == 0;
        cp_sess_release(op, r->reason ? r->reason : "wolf_error", msg,
                        (int)op->eng->s->cfg->node_cooldown_s);
        return;
    }
    snprintf(op->lobby, sizeof(op->lobby), "%s", lobby);
    const char *params[] = {op->id, op->node, op->lobby};
    cp_db *db = cp_sess_db(op->eng);
    int rc =
        db ? cp_db_query(db, cp_sess_sql_running, 3, params, cp_sess_running, op) : WP_ERR_CLOSED;
    if (rc != 0)
        cp_sess_running(rc, NULL, op);
}

static void cp_sess_start_on_node(cp_sess_op *op)
{
    cJSON *body =
        cp_session_lobby_body(op->doc, op->eng->s->cfg->wolf_profile_id, op->container, op->pin);
    if (!body) {
        cp_sess_release(op, "internal", "out of memory", 0);
        return;
    }
    cp_wolf_call *wc = NULL;
    int rc = cp_wolf_lobby_create(op->eng->s, op->node, body, cp_sess_wolf_ms(op->eng),
                                  cp_sess_lobby_created, op, &wc);
    cJSON_Delete(body);
    if (rc != 0) {
        char msg[96];
        snprintf(msg, sizeof(msg), "cannot call Wolf: %s", wp_strerror(rc));
        cp_sess_release(op, "node_unreachable", msg, (int)op->eng->s->cfg->node_cooldown_s);
    }
}

/* Every candidate tried failed (or the attempts ran out): the session fails with the last reason.
 */
static void cp_sess_attempts_failed(cp_sess_op *op)
{
    char msg[CP_SESS_MSG_MAX + 96];
    snprintf(msg, sizeof(msg), "the session could not be started on %zu node(s); last: %s",
             op->ntried, op->last_msg[0] ? op->last_msg : op->last_reason);
    cJSON *d = cJSON_CreateObject();
    if (d) {
        cJSON_AddItemToObject(d, "attempts", op->failures);
        op->failures = NULL;
    }
    cp_sess_create_fail(op, op->last_timeout ? 504 : 502,
                        op->last_timeout ? "start_timeout" : "start_failed", msg, d);
}

static void cp_sess_explained(int err, PGresult *res, void *ud)
{
    cp_sess_op *op = ud;
    if (err != 0) {
        cp_sess_create_db_error(op, err);
        return;
    }
    int available = 0;
    cJSON *d = cp_sched_explain_json(res, &available);
    if (!d) {
        cp_sess_create_fail(op, 500, "internal", "out of memory", NULL);
        return;
    }
    if (available > 0 && op->skip_retries++ < CP_SESS_SKIP_RETRIES) {
        /* A node was only locked (a concurrent reservation, a heartbeat): retry, waiting for it. */
        cJSON_Delete(d);
        op->retry_wait = 1;
        cp_sess_try_next(op);
        return;
    }
    if (op->ntried > 0) {
        cJSON_Delete(d);
        cp_sess_attempts_failed(op);
        return;
    }
    double nodes = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(d, "nodes"));
    if (op->req.node_id && nodes < 1) {
        cJSON_Delete(d);
        cp_sess_create_fail(op, 404, "not_found", "requirements.node_id: no such node", NULL);
        return;
    }
    char msg[256];
    if (op->req.node_id) {
        const char *why = "it is busy";
        for (cJSON *it = cJSON_GetObjectItemCaseSensitive(d, "excluded")->child; it; it = it->next)
            if (cJSON_GetNumberValue(it) > 0)
                why = it->string;
        snprintf(msg, sizeof(msg), "node %s cannot take the session: %s", op->req.node_id, why);
    } else {
        snprintf(msg, sizeof(msg), "no node can take the session (%d nodes, none eligible)",
                 (int)nodes);
    }
    cp_sess_create_fail(op, 503, "no_capacity", msg, d);
}

static void cp_sess_reserved(int err, PGresult *res, void *ud)
{
    cp_sess_op *op = ud;
    if (err != 0) {
        cp_sess_create_db_error(op, err);
        return;
    }
    if (PQntuples(res) == 0) {
        /* Nothing reserved: was a node only skipped (SKIP LOCKED), or is there none left? */
        const char *tried[CP_SESSION_ATTEMPTS_MAX];
        for (size_t i = 0; i < op->ntried; i++)
            tried[i] = op->tried[i];
        cp_db *db = cp_sess_db(op->eng);
        int rc =
            db ? cp_sched_explain_untried(db, &op->req, tried, op->ntried, cp_sess_explained, op)
               : WP_ERR_CLOSED;
        if (rc != 0)
            cp_sess_create_db_error(op, rc);
        return;
    }
    snprintf(op->node, sizeof(op->node), "%s", PQgetvalue(res, 0, 0));
    snprintf(op->tried[op->ntried++], sizeof(op->tried[0]), "%s", op->node);
    wp_log_info("session scheduled", WP_LS("session", op->id), WP_LS("node", op->node),
                WP_LI("attempt", op->attempt), WP_LS("active", PQgetvalue(res, 0, 1)),
                WP_LS("max", PQgetvalue(res, 0, 2)));
    if (!cp_tunnel_connected(op->eng->s, op->node)) {
        /* The tunnel is on another replica (or just went away): release, try the next. */
        cp_sess_release(op, "not_connected_here", "this replica holds no tunnel to the node", 0);
        return;
    }
    cp_sess_start_on_node(op);
}

static void cp_sess_try_next(cp_sess_op *op)
{
    int max = (int)op->eng->s->cfg->schedule_attempts;
    if ((int)op->ntried >= max || op->ntried >= CP_SESSION_ATTEMPTS_MAX) {
        cp_sess_attempts_failed(op); /* max >= 1, so ntried >= 1 */
        return;
    }
    const char *tried[CP_SESSION_ATTEMPTS_MAX];
    for (size_t i = 0; i < op->ntried; i++)
        tried[i] = op->tried[i];
    op->attempt = (int)op->ntried + 1;
    int wait = op->retry_wait;
    op->retry_wait = 0;
    cp_db *db = cp_sess_db(op->eng);
    int rc = !db    ? WP_ERR_CLOSED
             : wait ? cp_sched_reserve_wait(db, op->id, &op->req, tried, op->ntried, op->attempt,
                                            cp_tunnel_replica_id(op->eng->s), cp_sess_reserved, op)
                    : cp_sched_reserve(db, op->id, &op->req, tried, op->ntried, op->attempt,
                                       cp_tunnel_replica_id(op->eng->s), cp_sess_reserved, op);
    if (rc != 0)
        cp_sess_create_db_error(op, rc);
}

static void cp_sess_inserted(int err, PGresult *res, void *ud)
{
    cp_sess_op *op = ud;
    (void)res;
    if (err != 0) {
        cp_sess_create_db_error(op, err);
        return;
    }
    wp_log_info("session created", WP_LS("session", op->id), WP_LS("container", op->container),
                WP_LS("owner", op->call ? op->call->who.name : "-"));
    cp_sess_try_next(op);
}

void cp_sessions_create(cp_call *call, cJSON *doc)
{
    cp_sessions *eng = call->server->sessions;
    cp_sess_op *op = eng && !eng->shutting ? cp_sess_op_new(eng, CP_SESS_CREATE, call) : NULL;
    if (!op) {
        cJSON_Delete(doc);
        cp_call_respond_error(call, 503, "busy", "too many session operations in flight");
        return;
    }
    op->doc = doc;
    op->failures = cJSON_CreateArray();
    cp_sched_req_from(doc, &op->req);
    char *req_text = wp_json_print(doc);
    if (!op->failures || !req_text || cp_session_uuid_generate(op->id) != 0 ||
        cp_session_pin_generate(op->pin) != 0 ||
        cp_session_container_name(op->id, op->container, sizeof(op->container)) != 0) {
        cJSON_free(req_text);
        cp_call_respond_error(call, 500, "internal", "cannot prepare the session");
        cp_sess_op_free(op);
        return;
    }
    const char *name = wp_json_get_str(doc, "name");
    const char *params[] = {
        op->id,         wp_uuid_valid(call->who.token_id) ? call->who.token_id : NULL,
        call->who.name, name ? name : op->container,
        op->container,  req_text,
        op->pin};
    cp_db *db = cp_sess_db(eng);
    int rc =
        db ? cp_db_query(db, cp_sess_sql_insert, 7, params, cp_sess_inserted, op) : WP_ERR_CLOSED;
    cJSON_free(req_text);
    if (rc != 0)
        cp_sess_create_db_error(op, rc);
}

/* ---- stop ---- */

static const char cp_sess_sql_get[] = "SELECT " CP_SESSION_COLUMNS ", wolf_pin AS pin_, "
                                      "wolf_lobby_id AS lobby_ FROM sessions "
                                      "WHERE id = $1::uuid AND ($2::uuid IS NULL OR "
                                      "owner_token_id = $2::uuid)";

static const char cp_sess_sql_to_stopping[] =
    "WITH s AS (UPDATE sessions SET status = 'stopping' WHERE id = $1::uuid AND "
    "status = 'running' RETURNING *), "
    "e AS (INSERT INTO events (type, node_id, session_id, data) SELECT 'session.stopping', "
    "node_id, id, jsonb_build_object('by', $2::text) FROM s) "
    "SELECT id FROM s";

/* $1 session, $2 note (NULL: none) */
static const char cp_sess_sql_stopped[] =
    "WITH s AS (UPDATE sessions SET status = 'stopped', stopped_at = now(), "
    "failure_reason = coalesce($2, failure_reason) WHERE id = $1::uuid AND "
    "status = 'stopping' RETURNING *), "
    "n AS (UPDATE nodes SET active_sessions = greatest(nodes.active_sessions - 1, 0) FROM s "
    "WHERE nodes.id = s.node_id RETURNING nodes.id), "
    "e AS (INSERT INTO events (type, node_id, session_id, message) SELECT 'session.stopped', "
    "node_id, id, coalesce($2, '') FROM s) "
    "SELECT " CP_SESSION_COLUMNS " FROM s";

static void cp_sess_stop_run(cp_sess_op *op);

static void cp_sess_stop_reread(int err, PGresult *res, void *ud)
{
    cp_sess_op *op = ud;
    if (err != 0 && op->call)
        cp_call_respond_db_error(op->call, err);
    else
        cp_sess_respond_row(op->call, 200, res);
    cp_sess_op_free(op);
}

static void cp_sess_stopped(int err, PGresult *res, void *ud)
{
    cp_sess_op *op = ud;
    if (err != 0) {
        wp_log_warn("session stop: database error", WP_LS("session", op->id), WP_LE("err", err));
        if (op->call)
            cp_call_respond_db_error(op->call, err);
        cp_sess_op_free(op);
        return;
    }
    if (PQntuples(res) == 1) {
        wp_log_info("session stopped", WP_LS("session", op->id), WP_LS("node", op->node),
                    WP_LS("note", op->note[0] ? op->note : "-"));
        cp_sess_respond_row(op->call, 200, res);
        cp_sess_op_free(op);
        return;
    }
    /* Someone else finished it: answer with the row as it is now. */
    const char *params[] = {op->id, NULL};
    cp_db *db = cp_sess_db(op->eng);
    int rc =
        db ? cp_db_query(db, cp_sess_sql_get, 2, params, cp_sess_stop_reread, op) : WP_ERR_CLOSED;
    if (rc != 0)
        cp_sess_stop_reread(rc, NULL, op);
}

static void cp_sess_stop_finish(cp_sess_op *op)
{
    const char *params[] = {op->id, op->note[0] ? op->note : NULL};
    cp_db *db = cp_sess_db(op->eng);
    int rc =
        db ? cp_db_query(db, cp_sess_sql_stopped, 2, params, cp_sess_stopped, op) : WP_ERR_CLOSED;
    if (rc != 0)
        cp_sess_stopped(rc, NULL, op);
}

static void cp_sess_note_wolf(cp_sess_op *op, const char *what, const cp_wolf_result *r)
{
    snprintf(op->note, sizeof(op->note), "%s failed (%s%s%s); the lobby may linger on the node",
             what, r->reason ? r->reason : "error", r->message && *r->message ? ": " : "",
             r->message ? r->message : "");
}

static void cp_sess_lobby_stopped(const cp_wolf_result *r, void *ud)
{
    cp_sess_op *op = ud;
    if (r->err != 0) {
        const char *m = r->message ? r->message : "";
        /* Wolf no longer knows the lobby: it is gone, which is what we wanted. */
        if (!strstr(m, "Invalid lobby"))
            cp_sess_note_wolf(op, "lobbies/stop", r);
    }
    cp_sess_stop_finish(op);
}

static void cp_sess_stop_lobby(cp_sess_op *op)
{
    cp_wolf_call *wc = NULL;
    int rc = cp_wolf_lobby_stop(op->eng->s, op->node, op->lobby, op->pin[0] ? op->pin : NULL,
                                cp_sess_wolf_ms(op->eng), cp_sess_lobby_stopped, op, &wc);
    if (rc != 0) {
        snprintf(op->note, sizeof(op->note), "node unreachable; the lobby may linger");
        cp_sess_stop_finish(op);
    }
}

static void cp_sess_stop_next_wolf_session(cp_sess_op *op);

static void cp_sess_wolf_session_stopped(const cp_wolf_result *r, void *ud)
{
    cp_sess_op *op = ud;
    if (r->err != 0)
        wp_log_warn("cannot stop a Wolf session of the lobby", WP_LS("session", op->id),
                    WP_LS("wolf_session", op->wolf_sessions[op->iwolf - 1]),
                    WP_LS("reason", r->reason ? r->reason : "-"));
    cp_sess_stop_next_wolf_session(op);
}

static void cp_sess_stop_next_wolf_session(cp_sess_op *op)
{
    while (op->iwolf < op->nwolf) {
        const char *sid = op->wolf_sessions[op->iwolf++];
        cp_wolf_call *wc = NULL;
        if (cp_wolf_session_stop(op->eng->s, op->node, sid, cp_sess_wolf_ms(op->eng),
                                 cp_sess_wolf_session_stopped, op, &wc) == 0)
            return;
    }
    cp_sess_stop_lobby(op);
}

static void cp_sess_stop_listed(const cp_wolf_result *r, void *ud)
{
    cp_sess_op *op = ud;
    if (r->err != 0) {
        cp_sess_note_wolf(op, "listing the node's lobbies", r);
        cp_sess_stop_finish(op);
        return;
    }
    const cJSON *lobbies = cJSON_GetObjectItemCaseSensitive(r->body, "lobbies");
    const cJSON *mine = NULL;
    for (const cJSON *l = cJSON_IsArray(lobbies) ? lobbies->child : NULL; l; l = l->next) {
        const char *id = wp_json_get_str(l, "id");
        if (id && strcmp(id, op->lobby) == 0)
            mine = l;
    }
    if (!mine) {
        cp_sess_stop_finish(op); /* already gone */
        return;
    }
    const cJSON *cs = cJSON_GetObjectItemCaseSensitive(mine, "connected_sessions");
    for (const cJSON *it = cJSON_IsArray(cs) ? cs->child : NULL;
         it && op->nwolf < CP_SESS_WOLF_SESSIONS; it = it->next) {
        const char *sid = cJSON_GetStringValue(it);
        int numeric = sid && *sid && strlen(sid) <= 20;
        for (const char *p = sid; numeric && *p; p++)
            numeric = *p >= '0' && *p <= '9';
        if (!numeric)
            continue; /* never send Wolf a non-numeric session id */
        char *dup = strdup(sid);
        if (dup)
            op->wolf_sessions[op->nwolf++] = dup;
    }
    cp_sess_stop_next_wolf_session(op);
}

/* The session is stopping: talk to Wolf, then finish. */
static void cp_sess_stop_run(cp_sess_op *op)
{
    if (!op->node[0] || !op->lobby[0]) {
        snprintf(op->note, sizeof(op->note), "%s",
                 op->node[0] ? "no lobby was recorded" : "the node was deregistered");
        cp_sess_stop_finish(op);
        return;
    }
    if (!cp_tunnel_connected(op->eng->s, op->node)) {
        snprintf(op->note, sizeof(op->note),
                 "node unreachable; the lobby may linger until the node reconnects");
        cp_sess_stop_finish(op);
        return;
    }
    cp_wolf_call *wc = NULL;
    int rc = cp_wolf_lobbies_list(op->eng->s, op->node, cp_sess_wolf_ms(op->eng),
                                  cp_sess_stop_listed, op, &wc);
    if (rc != 0) {
        snprintf(op->note, sizeof(op->note), "node unreachable; the lobby may linger");
        cp_sess_stop_finish(op);
    }
}

static void cp_sess_to_stopping(int err, PGresult *res, void *ud)
{
    cp_sess_op *op = ud;
    if (err != 0) {
        if (op->call)
            cp_call_respond_db_error(op->call, err);
        cp_sess_op_free(op);
        return;
    }
    if (PQntuples(res) != 1) {
        /* Changed under us: answer with the current row. */
        cp_sess_stopped(0, res, op);
        return;
    }
    cp_sess_stop_run(op);
}

static void cp_sess_stop_loaded(int err, PGresult *res, void *ud)
{
    cp_sess_op *op = ud;
    if (err != 0) {
        if (op->call)
            cp_call_respond_db_error(op->call, err);
        cp_sess_op_free(op);
        return;
    }
    if (PQntuples(res) != 1) {
        if (op->call)
            cp_call_respond_error(op->call, 404, "not_found", "no such session");
        cp_sess_op_free(op);
        return;
    }
    const char *status = PQgetvalue(res, 0, PQfnumber(res, "status"));
    int cn = PQfnumber(res, "node_id"), cl = PQfnumber(res, "lobby_"), cp = PQfnumber(res, "pin_");
    snprintf(op->node, sizeof(op->node), "%s",
             PQgetisnull(res, 0, cn) ? "" : PQgetvalue(res, 0, cn));
    snprintf(op->lobby, sizeof(op->lobby), "%s",
             PQgetisnull(res, 0, cl) ? "" : PQgetvalue(res, 0, cl));
    snprintf(op->pin, sizeof(op->pin), "%s", PQgetisnull(res, 0, cp) ? "" : PQgetvalue(res, 0, cp));
    if (!strcmp(status, "stopped") || !strcmp(status, "failed") || !strcmp(status, "lost")) {
        cp_sess_stop_reread(0, res, op); /* idempotent */
        return;
    }
    if (!strcmp(status, "pending") || !strcmp(status, "starting")) {
        if (op->call)
            cp_call_respond_error(op->call, 409, "session_starting",
                                  "the session is still starting; retry when it is running");
        cp_sess_op_free(op);
        return;
    }
    if (!strcmp(status, "stopping")) {
        cp_sess_stop_run(op);
        return;
    }
    const char *params[] = {op->id, op->call ? op->call->who.name : "recovery"};
    cp_db *db = cp_sess_db(op->eng);
    int rc = db ? cp_db_query(db, cp_sess_sql_to_stopping, 2, params, cp_sess_to_stopping, op)
                : WP_ERR_CLOSED;
    if (rc != 0)
        cp_sess_to_stopping(rc, NULL, op);
}

/* Starts a stop of session id (call may be NULL: background). */
static void cp_sess_stop_start(cp_sessions *eng, cp_call *call, const char *id, const char *owner)
{
    cp_sess_op *op = eng && !eng->shutting ? cp_sess_op_new(eng, CP_SESS_STOP, call) : NULL;
    if (!op) {
        if (call)
            cp_call_respond_error(call, 503, "busy", "too many session operations in flight");
        return;
    }
    snprintf(op->id, sizeof(op->id), "%s", id);
    const char *params[] = {op->id, owner};
    cp_db *db = cp_sess_db(eng);
    int rc =
        db ? cp_db_query(db, cp_sess_sql_get, 2, params, cp_sess_stop_loaded, op) : WP_ERR_CLOSED;
    if (rc != 0)
        cp_sess_stop_loaded(rc, NULL, op);
}

void cp_sessions_stop(cp_call *call, const char *session_id, const char *owner_token_id)
{
    cp_sess_stop_start(call->server->sessions, call, session_id, owner_token_id);
}

/* ---- lobby reaping (orphans, forced deregistration, unrecorded starts) ---- */

static void cp_sess_reaped(const cp_wolf_result *r, void *ud)
{
    cp_sess_op *op = ud;
    if (r->err != 0)
        wp_log_warn("cannot stop lobby", WP_LS("node", op->node), WP_LS("lobby", op->lobby),
                    WP_LS("reason", r->reason ? r->reason : "-"),
                    WP_LS("message", r->message ? r->message : ""));
    else
        wp_log_info("lobby stopped", WP_LS("node", op->node), WP_LS("lobby", op->lobby));
    cp_sess_op_free(op);
}

static void cp_sess_reap_one(cp_sessions *eng, const char *node, const char *lobby, const char *pin)
{
    if (!node || !*node || !lobby || !*lobby)
        return;
    cp_sess_op *op = cp_sess_op_new(eng, CP_SESS_REAP, NULL);
    if (!op)
        return;
    snprintf(op->node, sizeof(op->node), "%s", node);
    snprintf(op->lobby, sizeof(op->lobby), "%s", lobby);
    snprintf(op->pin, sizeof(op->pin), "%s", pin ? pin : "");
    cp_wolf_call *wc = NULL;
    if (cp_wolf_lobby_stop(eng->s, op->node, op->lobby, op->pin[0] ? op->pin : NULL,
                           cp_sess_wolf_ms(eng), cp_sess_reaped, op, &wc) != 0)
        cp_sess_op_free(op);
}

void cp_sessions_stop_lobbies(cp_server *s, const char *node_id, const cJSON *stopped)
{
    cp_sessions *eng = s->sessions;
    if (!eng || eng->shutting || !cJSON_IsArray(stopped))
        return;
    for (const cJSON *it = stopped->child; it; it = it->next)
        cp_sess_reap_one(eng, node_id, wp_json_get_str(it, "lobby"), wp_json_get_str(it, "pin"));
}

/* ---- reconciliation ---- */

/*
 * $1 node, $2 lobby ids text[], $3 tunnel connect time (Unix ms), $4 the lobbies' runner names
 * text[] (parallel to $2; "-" when absent or not a container name). Rows: ('lost', session id)
 * for each session marked lost; ('orphan', lobby id, pin, session id, session status) for each
 * lobby no running/stopping session on the node owns, with the newest session whose sandbox
 * container is the lobby's runner name (NULLs when none: not ours).
 */
static const char cp_sess_sql_reconcile[] =
    "WITH prev AS (SELECT id FROM sessions WHERE node_id = $1 AND status = 'running' AND "
    "started_at < to_timestamp($3::double precision / 1000) AND "
    "NOT (coalesce(wolf_lobby_id, '') = ANY ($2::text[])) FOR UPDATE), "
    "s AS (UPDATE sessions SET status = 'lost', stopped_at = now(), failure_reason = "
    "'the lobby was missing on the node when it reconnected' FROM prev "
    "WHERE sessions.id = prev.id RETURNING sessions.id, sessions.wolf_lobby_id), "
    "n AS (UPDATE nodes SET active_sessions = greatest(nodes.active_sessions - "
    "(SELECT count(*) FROM s)::int, 0) WHERE id = $1 AND EXISTS (SELECT 1 FROM s) "
    "RETURNING id), "
    "e AS (INSERT INTO events (type, node_id, session_id, message, data) SELECT "
    "'session.lost', $1, id, 'the lobby was missing on the node when it reconnected', "
    "jsonb_build_object('lobby_id', wolf_lobby_id) FROM s) "
    "SELECT 'lost' AS kind, id::text AS v, NULL::text AS pin, NULL::text AS sid, "
    "NULL::text AS sstatus FROM s "
    "UNION ALL SELECT 'orphan', o.l, m.wolf_pin, m.id::text, m.status "
    "FROM unnest($2::text[], $4::text[]) AS o(l, rn) "
    "LEFT JOIN LATERAL (SELECT x.id, x.wolf_pin, x.status FROM sessions x "
    "WHERE x.sandbox_container = o.rn ORDER BY x.created_at DESC LIMIT 1) m ON true "
    "WHERE NOT EXISTS (SELECT 1 FROM sessions x WHERE x.node_id = $1 AND x.wolf_lobby_id = o.l "
    "AND x.status IN ('running', 'stopping'))";

static void cp_sess_reconcile_report(cp_sess_op *op);

static void cp_sess_orphan_reaped(const cp_wolf_result *r, void *ud)
{
    cp_sess_op *op = ud;
    const cp_sess_orphan *o = &op->orphans[op->iorphan - 1];
    if (r->err != 0)
        wp_log_warn("cannot stop orphan lobby", WP_LS("node", op->node), WP_LS("lobby", o->id),
                    WP_LS("reason", r->reason ? r->reason : "-"),
                    WP_LS("message", r->message ? r->message : ""));
    else
        wp_log_info("orphan lobby stopped", WP_LS("node", op->node), WP_LS("lobby", o->id),
                    WP_LS("session", o->sid));
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "lobby_id", o->id);
    if (o->sid[0])
        cJSON_AddStringToObject(d, "session_id", o->sid);
    cJSON_AddBoolToObject(d, "reaped", r->err == 0);
    if (r->err != 0)
        cJSON_AddStringToObject(d, "error", r->message ? r->message : (r->reason ? r->reason : ""));
    cp_db *db = cp_sess_db(op->eng);
    if (db)
        cp_events_append(db, "node.orphan_lobby_stopped", op->node, NULL, d, NULL, NULL);
    cJSON_Delete(d);
    cp_sess_reconcile_report(op);
}

/*
 * Why orphan o is only reported (NULL: it is stopped). With --reap-orphans every lobby no
 * running session owns is stopped (issue: "lobbies unknown to the database are reported and
 * stopped when --reap-orphans is on"), except one whose session is still starting (its
 * create may yet record it). Wolf refuses lobbies/stop without the PIN a lobby was created
 * with: ours keep it in the session row that names the runner as its sandbox container and
 * it is sent; a foreign lobby is stopped without one, and when Wolf refuses, the
 * node.orphan_lobby_stopped event says so (reaped false, Wolf's error).
 */
static const char *cp_sess_orphan_keep_why(const cp_sess_op *op, const cp_sess_orphan *o)
{
    if (o->sid[0] && (!strcmp(o->sstatus, "pending") || !strcmp(o->sstatus, "starting")))
        return "its session is still starting";
    if (!op->eng->s->cfg->reap_orphans)
        return "--reap-orphans is off";
    if (op->eng->shutting)
        return "shutting down";
    return NULL;
}

/* Reports (and stops, with --reap-orphans) one orphan at a time. */
static void cp_sess_reconcile_report(cp_sess_op *op)
{
    cp_db *db = cp_sess_db(op->eng);
    while (op->iorphan < op->norphans) {
        const cp_sess_orphan *o = &op->orphans[op->iorphan++];
        const char *why = cp_sess_orphan_keep_why(op, o);
        wp_log_warn("lobby unknown to the database on node", WP_LS("node", op->node),
                    WP_LS("lobby", o->id), WP_LS("runner", o->runner ? o->runner : "-"),
                    WP_LS("session", o->sid[0] ? o->sid : "-"),
                    WP_LS("action", why ? why : "stopping it"));
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "lobby_id", o->id);
        if (o->runner)
            cJSON_AddStringToObject(d, "runner", o->runner);
        if (o->sid[0])
            cJSON_AddStringToObject(d, "session_id", o->sid);
        cJSON_AddBoolToObject(d, "reap", why == NULL);
        if (why)
            cJSON_AddStringToObject(d, "why_kept", why);
        if (db)
            cp_events_add(db,
                          &(cp_event){.type = "node.orphan_lobby",
                                      .node_id = op->node,
                                      .message = "a Wolf lobby no running session owns",
                                      .data = d},
                          NULL, NULL);
        cJSON_Delete(d);
        if (!why) {
            cp_wolf_call *wc = NULL;
            if (cp_wolf_lobby_stop(op->eng->s, op->node, o->id, o->pin[0] ? o->pin : NULL,
                                   cp_sess_wolf_ms(op->eng), cp_sess_orphan_reaped, op, &wc) == 0)
                return;
        }
    }
    cp_sess_op_free(op);
}

static void cp_sess_reconciled(int err, PGresult *res, void *ud)
{
    cp_sess_op *op = ud;
    if (err != 0) {
        wp_log_warn("reconciliation failed", WP_LS("node", op->node), WP_LE("err", err));
        cp_sess_op_free(op);
        return;
    }
    size_t lost = 0, keep = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *kind = PQgetvalue(res, i, 0), *v = PQgetvalue(res, i, 1);
        if (!strcmp(kind, "lost")) {
            lost++;
            wp_log_warn("session lost: its lobby is gone from the node", WP_LS("session", v),
                        WP_LS("node", op->node));
            continue;
        }
        if (strcmp(kind, "orphan") != 0)
            continue;
        /* keep the orphan: move it to the front of the list, with its session's details */
        for (size_t k = keep; k < op->norphans; k++) {
            if (strcmp(op->orphans[k].id, v) != 0)
                continue;
            cp_sess_orphan t = op->orphans[k];
            op->orphans[k] = op->orphans[keep];
            op->orphans[keep] = t;
            cp_sess_orphan *o = &op->orphans[keep++];
            const char *pin = PQgetisnull(res, i, 2) ? "" : PQgetvalue(res, i, 2);
            snprintf(o->pin, sizeof(o->pin), "%s", cp_wolf_pin_valid(pin) ? pin : "");
            snprintf(o->sid, sizeof(o->sid), "%s",
                     PQgetisnull(res, i, 3) ? "" : PQgetvalue(res, i, 3));
            snprintf(o->sstatus, sizeof(o->sstatus), "%s",
                     PQgetisnull(res, i, 4) ? "" : PQgetvalue(res, i, 4));
            break;
        }
    }
    for (size_t k = keep; k < op->norphans; k++) {
        free(op->orphans[k].id);
        free(op->orphans[k].runner);
    }
    op->norphans = keep;
    wp_log_info("node reconciled", WP_LS("node", op->node), WP_LI("lost", (long long)lost),
                WP_LI("orphans", (long long)keep));
    cp_sess_reconcile_report(op);
}

/* 1 if s can be a sessions.sandbox_container ([A-Za-z0-9][A-Za-z0-9_.-]{0,127}). */
static int cp_sess_container_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || !(c == '.' || c == '_' || c == '-')))
            return 0;
    }
    return 1;
}

static void cp_sess_reconcile_listed(const cp_wolf_result *r, void *ud)
{
    cp_sess_op *op = ud;
    if (r->err != 0) {
        wp_log_warn("reconciliation skipped: cannot list the node's lobbies",
                    WP_LS("node", op->node), WP_LS("reason", r->reason ? r->reason : "-"));
        cp_sess_op_free(op);
        return;
    }
    const cJSON *lobbies = cJSON_GetObjectItemCaseSensitive(r->body, "lobbies");
    if (!cJSON_IsArray(lobbies)) {
        wp_log_warn("reconciliation skipped: lobbies list malformed", WP_LS("node", op->node));
        cp_sess_op_free(op);
        return;
    }
    size_t n = (size_t)cJSON_GetArraySize(lobbies);
    if (n > CP_SESSIONS_RECONCILE_LOBBIES_MAX) {
        /* A truncated list would make the sessions past the cut look lost: compare nothing. */
        wp_log_warn("reconciliation skipped: too many lobbies on the node", WP_LS("node", op->node),
                    WP_LI("lobbies", (long long)n),
                    WP_LI("max", (long long)CP_SESSIONS_RECONCILE_LOBBIES_MAX));
        cp_sess_op_free(op);
        return;
    }
    op->orphans = calloc(n + 1, sizeof(*op->orphans));
    const char **ids = calloc(n + 1, sizeof(char *));
    const char **rns = calloc(n + 1, sizeof(char *));
    if (!op->orphans || !ids || !rns) {
        free(ids);
        free(rns);
        cp_sess_op_free(op);
        return;
    }
    for (const cJSON *l = lobbies->child; l && op->norphans < n; l = l->next) {
        const char *id = wp_json_get_str(l, "id");
        if (!cp_wolf_lobby_id_valid(id))
            continue;
        const char *rn = wp_json_get_str(cJSON_GetObjectItemCaseSensitive(l, "runner"), "name");
        cp_sess_orphan *o = &op->orphans[op->norphans];
        o->id = strdup(id);
        o->runner = rn && strlen(rn) <= 128 ? strdup(rn) : NULL;
        if (!o->id) {
            free(o->runner);
            o->runner = NULL;
            continue;
        }
        ids[op->norphans] = o->id;
        rns[op->norphans] = cp_sess_container_ok(o->runner) ? o->runner : "-";
        op->norphans++;
    }
    char *arr = cp_sched_text_array(ids, op->norphans);
    char *rarr = cp_sched_text_array(rns, op->norphans);
    free(ids);
    free(rns);
    char at[32];
    snprintf(at, sizeof(at), "%lld", (long long)op->connected_at_ms);
    const char *params[] = {op->node, arr, at, rarr};
    cp_db *db = cp_sess_db(op->eng);
    int rc = arr && rarr && db
                 ? cp_db_query(db, cp_sess_sql_reconcile, 4, params, cp_sess_reconciled, op)
                 : WP_ERR_NOMEM;
    free(arr);
    free(rarr);
    if (rc != 0)
        cp_sess_reconciled(rc, NULL, op);
}

void cp_sessions_reconcile(cp_server *s, const char *node_id)
{
    cp_sessions *eng = s->sessions;
    cp_tunnel_info info;
    if (!eng || eng->shutting || cp_tunnel_info_get(s, node_id, &info) != 0)
        return;
    cp_sess_op *op = cp_sess_op_new(eng, CP_SESS_RECONCILE, NULL);
    if (!op)
        return;
    snprintf(op->node, sizeof(op->node), "%s", node_id);
    op->connected_at_ms = info.connected_at_ms;
    cp_wolf_call *wc = NULL;
    if (cp_wolf_lobbies_list(s, node_id, cp_sess_wolf_ms(eng), cp_sess_reconcile_listed, op, &wc) !=
        0) {
        wp_log_warn("reconciliation skipped: cannot call Wolf", WP_LS("node", node_id));
        cp_sess_op_free(op);
    }
}

/* ---- recovery pass ---- */

/* $1 deadline s, $2 reason */
static const char cp_sess_sql_recover[] =
    "WITH prev AS (SELECT id, status, node_id FROM sessions WHERE status IN ('pending', "
    "'starting') AND updated_at < now() - make_interval(secs => $1::int) ORDER BY updated_at "
    "LIMIT 1000 FOR UPDATE SKIP LOCKED), "
    "s AS (UPDATE sessions SET status = 'failed', failure_reason = $2, stopped_at = now() "
    "FROM prev WHERE sessions.id = prev.id RETURNING sessions.id, prev.status AS prev_status, "
    "prev.node_id), "
    "c AS (SELECT node_id, count(*)::int AS cnt FROM s WHERE prev_status = 'starting' AND "
    "node_id IS NOT NULL GROUP BY node_id), "
    "n AS (UPDATE nodes SET active_sessions = greatest(nodes.active_sessions - c.cnt, 0) FROM c "
    "WHERE nodes.id = c.node_id RETURNING nodes.id), "
    "e AS (INSERT INTO events (type, node_id, session_id, message, data) SELECT "
    "'session.failed', node_id, id, $2, jsonb_build_object('from', prev_status, 'by', "
    "'recovery') FROM s) "
    "SELECT id::text, prev_status, node_id FROM s";

static const char cp_sess_sql_stuck_stopping[] =
    "SELECT id::text FROM sessions WHERE status = 'stopping' AND updated_at < now() - "
    "make_interval(secs => $1::int) ORDER BY updated_at LIMIT 64";

static void cp_sess_stuck_listed(int err, PGresult *res, void *ud)
{
    cp_sessions *eng = ud;
    eng->recovery_inflight = 0;
    if (err == 0 && !eng->shutting) {
        int started = 0;
        for (int i = 0; i < PQntuples(res) && started < CP_SESS_STOP_BATCH; i++) {
            const char *id = PQgetvalue(res, i, 0);
            if (cp_sess_stop_inflight(eng, id))
                continue;
            wp_log_info("recovery: finishing a stuck stop", WP_LS("session", id));
            cp_sess_stop_start(eng, NULL, id, NULL);
            started++;
        }
    }
    cp_sess_maybe_free(eng);
}

static void cp_sess_recovered(int err, PGresult *res, void *ud)
{
    cp_sessions *eng = ud;
    if (err == 0) {
        for (int i = 0; i < PQntuples(res); i++) {
            const char *node = PQgetisnull(res, i, 2) ? NULL : PQgetvalue(res, i, 2);
            wp_log_warn("recovery: session failed (its start was interrupted)",
                        WP_LS("session", PQgetvalue(res, i, 0)),
                        WP_LS("was", PQgetvalue(res, i, 1)), WP_LS("node", node ? node : "-"));
            /* Its lobbies/create may have gone through: reconcile the node now (the lobby is an
             * orphan that the reconciliation at the node's last connect had to leave alone). */
            if (node && !strcmp(PQgetvalue(res, i, 1), "starting") && !eng->shutting &&
                !cp_sess_reconcile_inflight(eng, node))
                cp_sessions_reconcile(eng->s, node);
        }
        eng->first_pass_done = 1;
    }
    cp_db *db = cp_sess_db(eng);
    char dl[32];
    snprintf(dl, sizeof(dl), "%lld", eng->s->cfg->wolf_timeout_s + CP_SESSIONS_MARGIN_S);
    const char *params[] = {dl};
    if (err != 0 || eng->shutting || !db ||
        cp_db_query(db, cp_sess_sql_stuck_stopping, 1, params, cp_sess_stuck_listed, eng) != 0) {
        eng->recovery_inflight = 0;
        cp_sess_maybe_free(eng);
    }
}

static void cp_sess_timer_cb(uv_timer_t *h)
{
    cp_sessions *eng = h->data;
    if (eng->shutting || eng->recovery_inflight || !eng->s->store || !cp_store_ready(eng->s->store))
        return;
    cp_db *db = cp_sess_db(eng);
    char dl[32];
    snprintf(dl, sizeof(dl), "%lld", eng->s->cfg->wolf_timeout_s + CP_SESSIONS_MARGIN_S);
    const char *params[] = {dl, "the start was interrupted (control plane restarted or lost "
                                "track of it)"};
    if (db && cp_db_query(db, cp_sess_sql_recover, 2, params, cp_sess_recovered, eng) == 0)
        eng->recovery_inflight = 1;
}

/* ---- lifecycle ---- */

static void cp_sess_maybe_free(cp_sessions *eng)
{
    if (eng->shutting && eng->timer_closed && eng->nops == 0 && !eng->recovery_inflight)
        free(eng);
}

int cp_sessions_init(cp_server *s)
{
    cp_sessions *eng = calloc(1, sizeof(*eng));
    if (!eng)
        return WP_ERR_NOMEM;
    eng->s = s;
    uv_timer_init(s->loop, &eng->timer);
    eng->timer.data = eng;
    uv_timer_start(&eng->timer, cp_sess_timer_cb, 200, CP_SESSIONS_TICK_MS);
    s->sessions = eng;
    return 0;
}

static void cp_sess_timer_closed(uv_handle_t *h)
{
    cp_sessions *eng = h->data;
    eng->timer_closed = 1;
    cp_sess_maybe_free(eng);
}

void cp_sessions_shutdown(cp_server *s)
{
    cp_sessions *eng = s->sessions;
    if (!eng)
        return;
    s->sessions = NULL;
    eng->shutting = 1;
    uv_close((uv_handle_t *)&eng->timer, cp_sess_timer_closed);
}
