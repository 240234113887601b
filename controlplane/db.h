/*
 * db.h — a small asynchronous PostgreSQL connection pool (libpq on libuv).
 *
 * A cp_db owns N libpq connections (default 4) driven entirely by the loop:
 * PQconnectStartParams/PQconnectPoll and PQsendQueryParams/PQflush/
 * PQconsumeInput/PQisBusy/PQgetResult, each socket watched by an embedded
 * uv_poll; a host name in the connection string is resolved with
 * uv_getaddrinfo (libpq would resolve it blocking), so no call here ever
 * blocks the loop thread. Queries are parameterized (text parameters only)
 * and wait in a bounded FIFO (CP_DB_QUEUE_MAX) for a free connection. Each
 * query has a deadline (default 10 s); since PQcancel blocks, a query that
 * passes it fails with WP_ERR_TIMEOUT and its connection is closed and
 * reopened. Connections that break reconnect with exponential backoff.
 *
 * Availability ("database_unavailable" semantics, fail fast): the pool is
 * *down* when no connection is up and the last connect attempt failed. While
 * it is down cp_db_query()/cp_db_tx_begin() return WP_ERR_CLOSED at once, and
 * becoming down fails every queued request with WP_ERR_CLOSED, so an API
 * handler answers 503 instead of hanging. Before the first connect attempt has
 * finished, requests wait in the queue (startup).
 *
 * Transactions (cp_db_tx_begin) and sessions (cp_db_session_begin) reserve one
 * connection for a sequence of statements; they run one statement at a time.
 *
 * Secrets: the connection string is never logged; logs name host and dbname
 * only (PQconninfoParse is used to build that description).
 *
 * Error codes given to callbacks:
 *   0                    success (PGRES_COMMAND_OK / PGRES_TUPLES_OK)
 *   WP_ERR_EXISTS        SQLSTATE 23505 unique_violation
 *   WP_ERR_BUSY          40001 serialization_failure, 40P01 deadlock, 55P03 lock_not_available
 *   WP_ERR_TIMEOUT       query deadline passed, or 57014 query_canceled (statement_timeout)
 *   WP_ERR_IO            any other SQL error (inspect the PGresult, e.g. cp_db_sqlstate())
 *   WP_ERR_CLOSED        connection lost, pool down, or pool closing (no PGresult)
 *   WP_ERR_STATE         COMMIT of a transaction the server had aborted (it was rolled back)
 *   WP_ERR_UNSUPPORTED   the statement started COPY (the connection is reset)
 */
#ifndef CP_DB_H
#define CP_DB_H

#include <stddef.h>

#include <libpq-fe.h>
#include <uv.h>

#define CP_DB_POOL_DEFAULT       4
#define CP_DB_POOL_MAX           64
#define CP_DB_QUEUE_MAX          1024    /* requests waiting for a connection */
#define CP_DB_PARAMS_MAX         1024    /* parameters per statement */
#define CP_DB_REQUEST_BYTES_MAX  1048576 /* sql + parameters of one request, bytes */
#define CP_DB_QUERY_TIMEOUT_MS   10000
#define CP_DB_CONNECT_TIMEOUT_MS 5000
#define CP_DB_TX_IDLE_TIMEOUT_MS 30000 /* a reserved connection idle this long is reset */
#define CP_DB_BACKOFF_MIN_MS     250
#define CP_DB_BACKOFF_MAX_MS     30000

typedef struct cp_db cp_db;
typedef struct cp_db_tx cp_db_tx;

/*
 * Result of one statement. res is borrowed: valid only during the callback
 * (the pool PQclear()s it afterwards). res is non-NULL whenever the server
 * answered (success and SQL errors alike) and NULL for WP_ERR_CLOSED /
 * WP_ERR_TIMEOUT (deadline) / WP_ERR_UNSUPPORTED.
 */
typedef void (*cp_db_result_cb)(int err, PGresult *res, void *ud);
/* A transaction or session is ready (err 0, tx set) or could not start (err < 0, tx NULL). */
typedef void (*cp_db_tx_cb)(int err, cp_db_tx *tx, void *ud);
/* Commit / rollback / session end finished. */
typedef void (*cp_db_done_cb)(int err, void *ud);
/* The pool is closed: every handle is closed, every connection finished. */
typedef void (*cp_db_close_cb)(void *ud);

/*
 * Creates a pool of pool_size connections (<= 0 means CP_DB_POOL_DEFAULT) to
 * conninfo (a libpq keyword/value string or postgresql:// URI) and starts
 * connecting. Returns 0 with *out set, or WP_ERR_INVAL (NULL argument,
 * pool_size > CP_DB_POOL_MAX, unparsable conninfo), WP_ERR_UNSUPPORTED
 * (several hosts given by name: their resolution would block), WP_ERR_NOMEM.
 * On failure nothing was started and *out is untouched.
 */
int cp_db_new(uv_loop_t *loop, const char *conninfo, int pool_size, cp_db **out);

/* Per-query deadline for later requests, in ms (> 0). Returns 0 or WP_ERR_INVAL. */
int cp_db_set_query_timeout(cp_db *db, unsigned ms);
/* Deadline for one connect attempt (resolve + connect + auth), ms (> 0). 0 or WP_ERR_INVAL. */
int cp_db_set_connect_timeout(cp_db *db, unsigned ms);
/* Reconnect backoff: first retry after min_ms, doubling to max_ms (0 < min <= max). */
int cp_db_set_backoff(cp_db *db, unsigned min_ms, unsigned max_ms);

/* quiet != 0: connection failures are logged at debug only (readiness probes). */
void cp_db_set_quiet(cp_db *db, int quiet);

/* Nonzero when at least one connection is established. */
int cp_db_ready(const cp_db *db);
/* Number of established connections (idle, busy or reserved). */
int cp_db_conns_up(const cp_db *db);
/* Requests waiting for a connection. */
size_t cp_db_queued(const cp_db *db);
/* "host=... dbname=..." for logs; never contains a password. Never NULL. */
const char *cp_db_describe(const cp_db *db);

/*
 * Queues one parameterized statement (exactly one statement; $1..$n text
 * parameters, NULL entries are SQL NULL). sql and params are copied. cb runs
 * exactly once, later, from the loop. Returns 0, or (cb never called):
 *   WP_ERR_INVAL   NULL db/sql/cb, nparams < 0, params NULL with nparams > 0
 *   WP_ERR_LIMIT   queue full (CP_DB_QUEUE_MAX), > CP_DB_PARAMS_MAX parameters
 *                  or more than CP_DB_REQUEST_BYTES_MAX bytes
 *   WP_ERR_CLOSED  pool down (database unavailable) or closing
 *   WP_ERR_NOMEM
 */
int cp_db_query(cp_db *db, const char *sql, int nparams, const char *const *params,
                cp_db_result_cb cb, void *ud);

/*
 * Reserves a connection and runs BEGIN on it; cb(0, tx) when the transaction
 * is open, or cb(err, NULL). Same return contract as cp_db_query(). The
 * caller must end it with cp_db_tx_commit() or cp_db_tx_rollback().
 */
int cp_db_tx_begin(cp_db *db, cp_db_tx_cb cb, void *ud);
/*
 * Reserves a connection without opening a transaction (for session state such
 * as advisory locks). End it with cp_db_session_end(). Same contract as
 * cp_db_tx_begin().
 */
int cp_db_session_begin(cp_db *db, cp_db_tx_cb cb, void *ud);

/*
 * Runs one parameterized statement on the reserved connection (same rules as
 * cp_db_query; the tx's own timeout applies). One statement at a time: cb
 * runs later, exactly once. Returns 0, or (cb never called) WP_ERR_INVAL,
 * WP_ERR_LIMIT, WP_ERR_NOMEM, WP_ERR_BUSY (a statement is still running),
 * WP_ERR_CLOSED / WP_ERR_TIMEOUT (the connection was lost or reset: the
 * transaction is gone; end it with commit/rollback to free it).
 */
int cp_db_tx_query(cp_db_tx *tx, const char *sql, int nparams, const char *const *params,
                   cp_db_result_cb cb, void *ud);
/*
 * Runs a multi-statement SQL script without parameters (simple query
 * protocol) on the reserved connection. ONLY for trusted SQL compiled into
 * the binary (migrations): sql is NOT copied and must outlive the call's
 * callback. The callback gets the first failing result, or the last one.
 * Same return contract as cp_db_tx_query().
 */
int cp_db_tx_exec_script(cp_db_tx *tx, const char *sql, cp_db_result_cb cb, void *ud);
/* Deadline for each later statement of this tx/session, ms (> 0). 0 or WP_ERR_INVAL. */
int cp_db_tx_set_timeout(cp_db_tx *tx, unsigned ms);

/*
 * COMMIT / ROLLBACK and give the connection back. Both consume tx in every
 * case. Return 0 and call cb later with 0, WP_ERR_STATE (commit of an aborted
 * transaction: rolled back), WP_ERR_CLOSED / WP_ERR_TIMEOUT; or return
 * without calling cb: WP_ERR_CLOSED / WP_ERR_TIMEOUT (connection already lost:
 * the server rolled back; tx freed), WP_ERR_BUSY (a statement is still
 * running: tx NOT consumed), WP_ERR_INVAL (tx or cb NULL), WP_ERR_CLOSED
 * after cp_db_close() (tx NOT consumed; the pool frees it when it closes).
 */
int cp_db_tx_commit(cp_db_tx *tx, cp_db_done_cb cb, void *ud);
int cp_db_tx_rollback(cp_db_tx *tx, cp_db_done_cb cb, void *ud);
/*
 * Ends a session: session state is discarded (DISCARD ALL; a connection left
 * inside a transaction is closed instead) and the connection returns to the
 * pool. Same contract as cp_db_tx_rollback(); cb gets 0 unless the pool closes.
 */
int cp_db_session_end(cp_db_tx *tx, cp_db_done_cb cb, void *ud);

/*
 * Closes the pool: every connection is finished (PQfinish), every uv handle
 * closed. Queued and running requests then fail with WP_ERR_CLOSED from the
 * loop (not inside this call), transactions not yet ended are freed, and cb
 * (may be NULL) runs last; db is freed right after it returns. Returns 0, or
 * WP_ERR_STATE if already closing (cb not called).
 */
int cp_db_close(cp_db *db, cp_db_close_cb cb, void *ud);

/* SQLSTATE of an error result ("23505"), or "" for none / NULL. Never NULL. */
const char *cp_db_sqlstate(const PGresult *res);
/* Maps a result to the error codes above (0 on success). res NULL gives WP_ERR_CLOSED. */
int cp_db_result_err(const PGresult *res);

/*
 * Writes a loggable description of conninfo ("host=/run/x dbname=wolfpack",
 * never a password or other option) into out (cap bytes, NUL-terminated,
 * truncated). Returns 0 or WP_ERR_INVAL (unparsable / NULL).
 */
int cp_db_conninfo_describe(const char *conninfo, char *out, size_t cap);

#endif
