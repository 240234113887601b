/*
 * events.h — appending to the `events` table, wolfpackd's append-only audit log.
 *
 * Every state change worth auditing (node lifecycle, tokens, later sessions)
 * appends one row: a dotted type ("node.online"), the node / session / token /
 * replica it concerns, a short message and a JSON object with details. Rows
 * are never updated (a trigger refuses it); readers page by the bigserial id
 * (GET /api/v1/events, the SSE stream in api_events.c).
 *
 * Atomicity: an event must be written in the same transaction as the change
 * it describes, so that neither exists without the other. Three ways:
 *   - inside a transaction you already hold: cp_events_append_tx() /
 *     cp_events_add_tx();
 *   - one statement plus the events built from its result rows:
 *     cp_events_exec() (opens the transaction itself);
 *   - single SQL statements that insert the event in a data-modifying CTE
 *     (what nodes.c and api_nodes.c do).
 * cp_events_append() / cp_events_add() outside a transaction are for events
 * that describe something not stored in the database.
 */
#ifndef CP_EVENTS_H
#define CP_EVENTS_H

#include <cjson/cJSON.h>

#include "db.h"

/* Event types written today (the `type` column; syntax ^[a-z][a-z0-9_.]{0,63}$). */
#define CP_EV_NODE_REGISTERED   "node.registered"
#define CP_EV_NODE_ONLINE       "node.online"
#define CP_EV_NODE_OFFLINE      "node.offline"
#define CP_EV_NODE_DEGRADED     "node.degraded"
#define CP_EV_NODE_DRAINED      "node.drained"
#define CP_EV_NODE_UNDRAINED    "node.undrained"
#define CP_EV_NODE_UPDATED      "node.updated"
#define CP_EV_NODE_DEREGISTERED "node.deregistered"
#define CP_EV_NODE_WOLF_RESTART "node.wolf_restart" /* the agent ran --wolf-restart-cmd */
#define CP_EV_TOKEN_CREATED     "token.created"
#define CP_EV_TOKEN_REVOKED     "token.revoked"

/* sessions.c / scheduler.c: session.created, session.starting, session.start_failed,
 * session.running, session.failed, session.stopping, session.stopped, session.lost;
 * node.orphan_lobby and node.orphan_lobby_stopped (reconciliation). */

#define CP_EVENT_TYPE_MAX    64    /* bytes of a type */
#define CP_EVENT_MESSAGE_MAX 1024  /* bytes of a message */
#define CP_EVENT_DATA_MAX    65536 /* bytes of the compact JSON text of data */

/* One event to append. Only type is required. */
typedef struct cp_event {
    const char *type;       /* ^[a-z][a-z0-9_.]{0,63}$ */
    const char *node_id;    /* NULL: none (otherwise a wp_node_id_valid id) */
    const char *session_id; /* NULL: none (otherwise a UUID) */
    const char *token_id;   /* NULL: none (otherwise a UUID) */
    const char *replica_id; /* NULL: none (otherwise [A-Za-z0-9._-]{1,64}) */
    const char *message;    /* NULL: "" (at most CP_EVENT_MESSAGE_MAX bytes, valid UTF-8) */
    const cJSON *data;      /* NULL: {} (otherwise a JSON object) */
} cp_event;

/* The appended row's id (> 0) on err 0; err < 0 as for cp_db_query() callbacks. */
typedef void (*cp_events_cb)(int err, long long event_id, void *ud);

/* Nonzero if s is a syntactically valid event type. */
int cp_event_type_valid(const char *s);

/*
 * Checks ev against the rules above (type syntax, ids, message and data
 * limits). Returns 0 or WP_ERR_INVAL.
 */
int cp_event_check(const cp_event *ev);

/*
 * Appends ev as its own statement (autocommit). cb may be NULL (fire and
 * forget: a failure is logged at warn). Returns 0 (cb runs later, exactly
 * once) or, with cb never called: WP_ERR_INVAL (cp_event_check failed or db
 * NULL), WP_ERR_NOMEM, or what cp_db_query() returns (WP_ERR_CLOSED when the
 * database is unavailable, WP_ERR_LIMIT).
 */
int cp_events_add(cp_db *db, const cp_event *ev, cp_events_cb cb, void *ud);

/*
 * Appends ev inside the open transaction tx (one statement at a time, so cb
 * is required: continue the transaction from it). Returns 0 or, cb never
 * called: WP_ERR_INVAL (cp_event_check failed, tx or cb NULL),
 * WP_ERR_NOMEM, or what cp_db_tx_query() returns.
 */
int cp_events_add_tx(cp_db_tx *tx, const cp_event *ev, cp_events_cb cb, void *ud);

/* Shorthands for cp_events_add / cp_events_add_tx with only these fields set. */
int cp_events_append(cp_db *db, const char *type, const char *node_id, const char *session_id,
                     const cJSON *data, cp_events_cb cb, void *ud);
int cp_events_append_tx(cp_db_tx *tx, const char *type, const char *node_id, const char *session_id,
                        const cJSON *data, cp_events_cb cb, void *ud);

/*
 * Builds the event for one result row of cp_events_exec()'s statement. Fill
 * *ev (strings may point into res; ev->data is ignored) and optionally set
 * *data to a cJSON object that becomes the event's data (cp_events_exec frees
 * it). Return 1 to append the event, 0 to skip this row, or a negative
 * WP_ERR_* to abort: the transaction is rolled back and cb gets that error.
 */
typedef int (*cp_events_build_fn)(const PGresult *res, int row, cp_event *ev, cJSON **data,
                                  void *ud);

/*
 * Runs one parameterized statement (typically INSERT/UPDATE ... RETURNING)
 * and, in the same transaction, appends the events `build` makes from its
 * result rows (in row order); then commits. cb(0, res) gets a copy of the
 * statement's result (tuples and column types; valid during cb only) after
 * the commit succeeded; on any failure the transaction is rolled back and
 * cb(err, NULL) runs: err as for cp_db_query() callbacks (WP_ERR_EXISTS for a
 * unique violation, WP_ERR_IO other SQL errors, WP_ERR_CLOSED, ...), or what
 * build returned. build and cb get ud. sql and params are copied.
 * Returns 0 (cb runs later, exactly once) or, cb never called: WP_ERR_INVAL
 * (NULL db/sql/build/cb, bad nparams), WP_ERR_NOMEM, or what
 * cp_db_tx_begin() returns.
 */
int cp_events_exec(cp_db *db, const char *sql, int nparams, const char *const *params,
                   cp_events_build_fn build, cp_db_result_cb cb, void *ud);

#endif
