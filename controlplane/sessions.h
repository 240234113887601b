/*
 * sessions.h — the session lifecycle engine of wolfpackd: create (schedule,
 * start a Wolf lobby, fall back to the next node), stop, the recovery pass,
 * and reconciliation of a node's lobbies with the database when its tunnel
 * (re)connects. The REST resource (api_sessions.c) calls into it.
 *
 * States (sessions.status): pending → starting → running → stopping →
 * stopped, plus failed (never started) and lost (gone from its node). Each
 * transition is one SQL statement that also appends its event
 * (session.created / starting / start_failed / running / failed / stopping /
 * stopped / lost) and moves nodes.active_sessions in the same statement:
 * the reservation (scheduler.h) counts a session from `starting`, every way
 * out of starting/running/stopping gives the slot back.
 *
 * Create: INSERT pending → reserve (starting on node N) → lobbies/create on N
 * (--wolf-timeout) → running (lobby id, PIN). A failed start (tunnel gone,
 * Wolf error, timeout) releases the slot in the same statement that puts the
 * session back to pending, writes session.start_failed and puts N into
 * `degraded` for --node-cooldown; the next candidate (N excluded) is tried,
 * up to --schedule-attempts nodes. Then the session is failed: 503
 * no_capacity when no node could take it at all (details count what each
 * filter excluded), else 502 start_failed (504 start_timeout when the last
 * attempt timed out) naming every attempt.
 *
 * Stop: running → stopping → stop the Wolf sessions attached to the lobby →
 * lobbies/stop {lobby_id, pin} → stopped (slot released). If the node cannot
 * be reached (or Wolf fails), the session is stopped anyway with a
 * failure_reason note, and the lobby is reported as an orphan when the node
 * reconnects. Idempotent: a finished session answers as it is.
 *
 * Reconciliation (tunnel connect): running sessions on the node started
 * before the connect whose lobby is missing become lost. Lobbies that no
 * running/stopping session on the node owns are orphans, reported as
 * node.orphan_lobby; with --reap-orphans an orphan is stopped unless a
 * pending/starting session names its runner as sandbox container: with that
 * session row's PIN when one names it (Wolf requires the PIN a lobby was
 * created with), without a PIN otherwise (Wolf refuses a foreign lobby that
 * has one; node.orphan_lobby_stopped records the outcome).
 *
 * Recovery (every CP_SESSIONS_TICK_MS, first right after start): sessions in
 * pending/starting not touched for --wolf-timeout + CP_SESSIONS_MARGIN_S
 * (their creator died: a SIGKILLed or crashed replica) become failed, their
 * slot released, and the nodes they were starting on are reconciled again
 * (their lobbies/create may have gone through); sessions stuck in stopping
 * as long are stopped again.
 */
#ifndef CP_SESSIONS_H
#define CP_SESSIONS_H

#include <cjson/cJSON.h>

#include "server.h"

#define CP_SESSIONS_TICK_MS               2000
#define CP_SESSIONS_MARGIN_S              5
#define CP_SESSIONS_OPS_MAX               4096 /* creates + stops + reconciles in flight */
#define CP_SESSIONS_LOBBY_MAX             128  /* bytes of a Wolf lobby id */
#define CP_SESSIONS_RECONCILE_LOBBIES_MAX 1024 /* more on a node: reconciliation is skipped */

struct cp_call;

/*
 * Creates the engine of s (s->sessions) and starts the recovery timer. Call
 * from cp_server_start. Returns 0 or WP_ERR_NOMEM.
 */
int cp_sessions_init(cp_server *s);

/*
 * Stops the timer and refuses new work; operations in flight finish (their
 * Wolf calls end with the tunnels) and the engine is freed after the last.
 */
void cp_sessions_shutdown(cp_server *s);

/*
 * POST /api/v1/sessions for a validated request (doc, owned by the engine
 * from now on). Answers the call: 201 session, 503 no_capacity, 502/504,
 * 404 (explicit node unknown), 503 database errors.
 */
void cp_sessions_create(struct cp_call *call, cJSON *doc);

/*
 * DELETE /api/v1/sessions/{id}: owner_token_id NULL for admins (any session),
 * else only that owner's (others answer 404). Answers the call.
 */
void cp_sessions_stop(struct cp_call *call, const char *session_id, const char *owner_token_id);

/*
 * A node's tunnel was registered on this replica and the database knows it:
 * lists its lobbies and compares (see above). Any failure to list does
 * nothing (unknown is not empty). Fire and forget.
 */
void cp_sessions_reconcile(cp_server *s, const char *node_id);

/*
 * Best-effort lobbies/stop for sessions that a forced node deregistration
 * already marked stopped: stopped is a JSON array of {lobby, pin} objects.
 */
void cp_sessions_stop_lobbies(cp_server *s, const char *node_id, const cJSON *stopped);

/* The session columns API answers use (alias-free, on `sessions` or a RETURNING CTE). */
#define CP_SESSION_COLUMNS                                                                         \
    "id, name, status, owner, node_id, "                                                           \
    "jsonb_build_object('lobby_id', wolf_lobby_id, 'pin', wolf_pin) AS wolf, "                     \
    "jsonb_build_object('container', sandbox_container) AS sandbox, request, failure_reason, "     \
    "attempts, " CP_SQL_TS("created_at") " AS created_at, " CP_SQL_TS(                             \
        "updated_at") " AS updated_at, " CP_SQL_TS("started_at") " AS started_at, " CP_SQL_TS("st" \
                                                                                              "op" \
                                                                                              "pe" \
                                                                                              "d_" \
                                                                                              "a"  \
                                                                                              "t") " AS stopped_at"

#endif
