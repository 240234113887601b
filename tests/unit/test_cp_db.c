/*
 * test_cp_db.c — the async libpq pool against a real (embedded) PostgreSQL.
 *
 * One private cluster is started through cp_pgembed for the whole executable.
 * Covered: argument and conninfo refusals (and that passwords never reach the
 * description), concurrent queries over the pool, hostile parameters that
 * must round-trip as data (quotes, backslashes, SQL, format strings, NULL),
 * SQL errors mapped to codes (unique violation, multiple statements in one
 * parameterized query, COPY), request limits (queue, parameter count, bytes),
 * the per-query deadline (pg_sleep(5) with 200 ms), transactions (commit,
 * rollback, commit of an aborted transaction, one statement at a time) and
 * sessions (advisory lock released at the end), a BEGIN leaking through
 * cp_db_query, an unreachable server (fail fast), close with queued work, and
 * the server killed mid-query (error, no hang) then recovery after restart.
 */
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db.h"
#include "err.h"
#include "log.h"
#include "pgembed.h"
#include "wp_test.h"

#include "wp_pg_fixture.h"

static cp_db *db_;

static int db_ready_(void)
{
    return cp_db_ready(db_);
}

static int db_all_up_(void)
{
    return cp_db_conns_up(db_) == 4;
}

static void noop_cb_(int err, PGresult *res, void *ud)
{
    (void)err;
    (void)res;
    (void)ud;
}

WP_TEST(db_refusals)
{
    cp_db *db = NULL;
    WP_CHECK_EQ(cp_db_new(NULL, "host=/x", 1, &db), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_db_new(&loop_, NULL, 1, &db), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_db_new(&loop_, "host=/x", CP_DB_POOL_MAX + 1, &db), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_db_new(&loop_, "host='unterminated", 1, &db), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_db_new(&loop_, "nosuchkeyword=1", 1, &db), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_db_new(&loop_, "postgresql://[::1", 1, &db), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_db_new(&loop_, "host=a.example,b.example", 1, &db), WP_ERR_UNSUPPORTED);
    WP_CHECK(db == NULL);

    char d[256];
    WP_CHECK_EQ(cp_db_conninfo_describe("host=db.example dbname=wp user=u password=hunter2secret",
                                        d, sizeof d),
                0);
    WP_CHECK_STR(d, "host=db.example dbname=wp");
    WP_CHECK_EQ(
        cp_db_conninfo_describe("postgresql://u:topsecretpw@db.example:5433/prod", d, sizeof d), 0);
    WP_CHECK(strstr(d, "topsecretpw") == NULL);
    WP_CHECK_STR(d, "host=db.example dbname=prod");
    WP_CHECK_EQ(cp_db_conninfo_describe("password='x", d, sizeof d), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_db_conninfo_describe("host=/tmp", d, 1), 0);
    WP_CHECK_STR(d, ""); /* truncated, terminated */
}

WP_TEST(db_pool_queries)
{
    db_ = db_open_(NULL, 4);
    WP_CHECK(strstr(cp_db_describe(db_), "dbname=wolfpack") != NULL);
    enum { N = 40 };
    qres q[N];
    char nums[N][12];
    memset(q, 0, sizeof q);
    for (int i = 0; i < N; i++) {
        snprintf(nums[i], sizeof nums[i], "%d", i);
        const char *p[] = {nums[i]};
        WP_CHECK_EQ(cp_db_query(db_, "SELECT $1::int * 2, pg_backend_pid()", 1, p, qres_cb_, &q[i]),
                    0);
    }
    int all = 0;
    uint64_t end = uv_now(&loop_) + 15000;
    while (!all && uv_now(&loop_) < end) {
        uv_run(&loop_, UV_RUN_ONCE);
        uv_update_time(&loop_);
        all = 1;
        for (int i = 0; i < N; i++)
            all &= q[i].done == 1;
    }
    WP_CHECK(all);
    for (int i = 0; i < N; i++) {
        WP_CHECK_EQ(q[i].err, 0);
        WP_CHECK_EQ(atoi(q[i].v0), 2 * i);
    }
    WP_CHECK(run_until_fn_(db_all_up_, 10000));
    WP_CHECK(cp_db_ready(db_));
    WP_CHECK_EQ(cp_db_queued(db_), 0);
    /* bad arguments */
    WP_CHECK_EQ(cp_db_query(db_, NULL, 0, NULL, qres_cb_, q), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_db_query(db_, "SELECT 1", 0, NULL, NULL, q), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_db_query(db_, "SELECT 1", -1, NULL, qres_cb_, q), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_db_query(db_, "SELECT $1", 1, NULL, qres_cb_, q), WP_ERR_INVAL);
}

WP_TEST(db_hostile_params)
{
    qres q = q_(db_, "CREATE TABLE t_params (k serial PRIMARY KEY, v text)", 0, NULL);
    WP_CHECK_EQ(q.err, 0);
    static const char *const hostile[] = {
        "'; DROP TABLE t_params; --",
        "\\'; SELECT 1; --",
        "\"quoted\" 'single' `back`",
        "$1 $2 ::int",
        "%s%s%n%x",
        "Robert'); DELETE FROM t_params WHERE ('1'='1",
        "\xc3\xbc"
        "nic\xc3\xb8"
        "de \xe2\x9c\x93",
        "",
        "E'\\x00'",
    };
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        const char *p[] = {hostile[i]};
        q = q_(db_, "INSERT INTO t_params (v) VALUES ($1) RETURNING v", 1, p);
        WP_CHECK_EQ(q.err, 0);
        WP_CHECK_STR(q.v0, hostile[i]);
        q = q_(db_, "SELECT count(*) FROM t_params WHERE v = $1", 1, p);
        WP_CHECK_STR(q.v0, "1");
    }
    q = q_(db_, "SELECT count(*) FROM t_params", 0, NULL);
    WP_CHECK_EQ(atoi(q.v0), (int)(sizeof hostile / sizeof hostile[0])); /* nothing dropped */
    const char *pn[] = {NULL};
    q = q_(db_, "SELECT $1::text", 1, pn);
    WP_CHECK_EQ(q.err, 0);
    WP_CHECK(q.isnull);
    /* invalid UTF-8 is refused by the server, not mangled */
    const char *bad[] = {"\xff\xfe"};
    q = q_(db_, "SELECT $1::text", 1, bad);
    WP_CHECK_EQ(q.err, WP_ERR_IO);
    WP_CHECK_STR(q.sqlstate, "22021");
    /* a number parameter with trailing garbage */
    const char *num[] = {"12; DROP TABLE t_params"};
    q = q_(db_, "SELECT $1::int", 1, num);
    WP_CHECK_EQ(q.err, WP_ERR_IO);
    WP_CHECK_STR(q.sqlstate, "22P02");
}

WP_TEST(db_errors)
{
    qres q = q_(db_, "SELECT * FROM no_such_table", 0, NULL);
    WP_CHECK_EQ(q.err, WP_ERR_IO);
    WP_CHECK_STR(q.sqlstate, "42P01");
    q = q_(db_, "CREATE TABLE t_uniq (k text PRIMARY KEY)", 0, NULL);
    WP_CHECK_EQ(q.err, 0);
    const char *p[] = {"a"};
    q = q_(db_, "INSERT INTO t_uniq VALUES ($1)", 1, p);
    WP_CHECK_EQ(q.err, 0);
    q = q_(db_, "INSERT INTO t_uniq VALUES ($1)", 1, p);
    WP_CHECK_EQ(q.err, WP_ERR_EXISTS);
    /* two statements in one parameterized query are refused by the server */
    q = q_(db_, "SELECT 1; DROP TABLE t_uniq", 0, NULL);
    WP_CHECK_EQ(q.err, WP_ERR_IO);
    q = q_(db_, "SELECT count(*) FROM t_uniq", 0, NULL);
    WP_CHECK_STR(q.v0, "1");
    /* COPY would leave the connection in a mode we do not drive: refused, pool still fine */
    q = q_(db_, "COPY (SELECT 1) TO STDOUT", 0, NULL);
    WP_CHECK_EQ(q.err, WP_ERR_UNSUPPORTED);
    q = q_(db_, "SELECT 7", 0, NULL);
    WP_CHECK_STR(q.v0, "7");
    /* empty statement */
    q = q_(db_, "", 0, NULL);
    WP_CHECK_EQ(q.err, 0);
}

WP_TEST(db_limits)
{
    /* too many parameters / bytes */
    static const char *many[CP_DB_PARAMS_MAX + 1];
    for (int i = 0; i <= CP_DB_PARAMS_MAX; i++)
        many[i] = "1";
    WP_CHECK_EQ(cp_db_query(db_, "SELECT 1", CP_DB_PARAMS_MAX + 1, many, noop_cb_, NULL),
                WP_ERR_LIMIT);
    char *big = malloc(CP_DB_REQUEST_BYTES_MAX + 2);
    WP_CHECK(big != NULL);
    if (big) {
        memset(big, 'x', CP_DB_REQUEST_BYTES_MAX + 1);
        big[CP_DB_REQUEST_BYTES_MAX + 1] = '\0';
        const char *p[] = {big};
        WP_CHECK_EQ(cp_db_query(db_, "SELECT length($1)", 1, p, noop_cb_, NULL), WP_ERR_LIMIT);
        big[CP_DB_REQUEST_BYTES_MAX / 2] = '\0';
        qres q = q_(db_, "SELECT length($1)", 1, p);
        WP_CHECK_EQ(q.err, 0);
        WP_CHECK_EQ(atoi(q.v0), CP_DB_REQUEST_BYTES_MAX / 2);
        free(big);
    }
    /* the queue is bounded: a fresh 1-connection pool queues while connecting */
    cp_db *db = db_open_(NULL, 1);
    int errs;
    int accepted = 0, rc = 0;
    static qres qs[CP_DB_QUEUE_MAX + 1];
    memset(qs, 0, sizeof qs);
    for (int i = 0; i <= CP_DB_QUEUE_MAX; i++) {
        rc = cp_db_query(db, "SELECT 1", 0, NULL, qres_cb_, &qs[i]);
        if (rc != 0)
            break;
        accepted++;
    }
    WP_CHECK_EQ(accepted, CP_DB_QUEUE_MAX);
    WP_CHECK_EQ(rc, WP_ERR_LIMIT);
    WP_CHECK_EQ(cp_db_queued(db), CP_DB_QUEUE_MAX);
    uint64_t end = uv_now(&loop_) + 20000;
    int fin = 0;
    while (fin < accepted && uv_now(&loop_) < end) {
        uv_run(&loop_, UV_RUN_ONCE);
        uv_update_time(&loop_);
        fin = 0;
        for (int i = 0; i < accepted; i++)
            fin += qs[i].done;
    }
    WP_CHECK_EQ(fin, accepted);
    errs = 0;
    for (int i = 0; i < accepted; i++)
        errs += qs[i].err != 0;
    WP_CHECK_EQ(errs, 0);
    WP_CHECK_EQ(qs[CP_DB_QUEUE_MAX].done, 0); /* refused: callback never called */
    db_close_wait_(db);
}

WP_TEST(db_query_timeout)
{
    cp_db *db = db_open_(NULL, 1);
    WP_CHECK_EQ(cp_db_set_query_timeout(db, 0), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_db_set_query_timeout(db, 200), 0);
    uint64_t t0 = uv_now(&loop_);
    qres q = q_(db, "SELECT pg_sleep(5)", 0, NULL);
    uint64_t took = uv_now(&loop_) - t0;
    WP_CHECK_EQ(q.err, WP_ERR_TIMEOUT);
    WP_CHECK(took >= 150 && took < 2000);
    /* the connection was reset; the pool serves the next query */
    WP_CHECK_EQ(cp_db_set_query_timeout(db, 5000), 0);
    q = q_(db, "SELECT 'after'", 0, NULL);
    WP_CHECK_EQ(q.err, 0);
    WP_CHECK_STR(q.v0, "after");
    /* server-side statement_timeout is WP_ERR_TIMEOUT too */
    q = q_(db, "SELECT set_config('statement_timeout', '50', false)", 0, NULL);
    WP_CHECK_EQ(q.err, 0);
    q = q_(db, "SELECT pg_sleep(1)", 0, NULL);
    WP_CHECK_EQ(q.err, WP_ERR_TIMEOUT);
    WP_CHECK_STR(q.sqlstate, "57014");
    db_close_wait_(db);
}

/* ---- transactions ---- */

typedef struct txres {
    int done;
    int err;
    cp_db_tx *tx;
} txres;

static void tx_cb_(int err, cp_db_tx *tx, void *ud)
{
    txres *t = ud;
    t->done++;
    t->err = err;
    t->tx = tx;
}

static void done_cb_(int err, void *ud)
{
    txres *t = ud;
    t->done++;
    t->err = err;
}

static cp_db_tx *tx_open_(int session)
{
    txres t = {0};
    int rc = session ? cp_db_session_begin(db_, tx_cb_, &t) : cp_db_tx_begin(db_, tx_cb_, &t);
    WP_CHECK_EQ(rc, 0);
    run_until_(&t.done, 10000);
    WP_CHECK_EQ(t.err, 0);
    return t.tx;
}

static qres txq_(cp_db_tx *tx, const char *sql, int n, const char *const *p)
{
    qres q;
    memset(&q, 0, sizeof q);
    int rc = cp_db_tx_query(tx, sql, n, p, qres_cb_, &q);
    if (rc) {
        q.err = rc;
        return q;
    }
    run_until_(&q.done, 10000);
    return q;
}

static int tx_end_(cp_db_tx *tx, int commit)
{
    txres t = {0};
    int rc = commit ? cp_db_tx_commit(tx, done_cb_, &t) : cp_db_tx_rollback(tx, done_cb_, &t);
    if (rc)
        return rc;
    run_until_(&t.done, 10000);
    return t.err;
}

WP_TEST(db_transactions)
{
    qres q = q_(db_, "CREATE TABLE t_tx (k text PRIMARY KEY, n int NOT NULL)", 0, NULL);
    WP_CHECK_EQ(q.err, 0);
    /* commit */
    cp_db_tx *tx = tx_open_(0);
    const char *a[] = {"a", "1"};
    q = txq_(tx, "INSERT INTO t_tx VALUES ($1, $2)", 2, a);
    WP_CHECK_EQ(q.err, 0);
    /* not visible outside before commit */
    qres q2 = q_(db_, "SELECT count(*) FROM t_tx", 0, NULL);
    WP_CHECK_STR(q2.v0, "0");
    /* one statement at a time */
    qres qa, qb;
    memset(&qa, 0, sizeof qa);
    memset(&qb, 0, sizeof qb);
    WP_CHECK_EQ(cp_db_tx_query(tx, "SELECT 1", 0, NULL, qres_cb_, &qa), 0);
    WP_CHECK_EQ(cp_db_tx_query(tx, "SELECT 2", 0, NULL, qres_cb_, &qb), WP_ERR_BUSY);
    WP_CHECK_EQ(cp_db_tx_commit(tx, done_cb_, NULL), WP_ERR_BUSY);
    run_until_(&qa.done, 5000);
    WP_CHECK_EQ(tx_end_(tx, 1), 0);
    q = q_(db_, "SELECT n FROM t_tx WHERE k = 'a'", 0, NULL);
    WP_CHECK_STR(q.v0, "1");

    /* rollback */
    tx = tx_open_(0);
    const char *b[] = {"b", "2"};
    q = txq_(tx, "INSERT INTO t_tx VALUES ($1, $2)", 2, b);
    WP_CHECK_EQ(q.err, 0);
    q = txq_(tx, "UPDATE t_tx SET n = n + 10", 0, NULL);
    WP_CHECK_EQ(q.err, 0);
    WP_CHECK_EQ(tx_end_(tx, 0), 0);
    q = q_(db_, "SELECT count(*), sum(n) FROM t_tx", 0, NULL);
    WP_CHECK_STR(q.v0, "1");

    /* a failed statement aborts the transaction: commit reports it rolled back */
    tx = tx_open_(0);
    const char *c[] = {"c", "3"};
    q = txq_(tx, "INSERT INTO t_tx VALUES ($1, $2)", 2, c);
    WP_CHECK_EQ(q.err, 0);
    q = txq_(tx, "INSERT INTO t_tx VALUES ($1, $2)", 2, a); /* duplicate key */
    WP_CHECK_EQ(q.err, WP_ERR_EXISTS);
    q = txq_(tx, "SELECT 1", 0, NULL);
    WP_CHECK_EQ(q.err, WP_ERR_IO); /* 25P02 in failed transaction */
    WP_CHECK_STR(q.sqlstate, "25P02");
    WP_CHECK_EQ(tx_end_(tx, 1), WP_ERR_STATE);
    q = q_(db_, "SELECT count(*) FROM t_tx WHERE k = 'c'", 0, NULL);
    WP_CHECK_STR(q.v0, "0");

    /* a transaction whose statement times out is gone; ending it frees it */
    tx = tx_open_(0);
    WP_CHECK_EQ(cp_db_tx_set_timeout(tx, 100), 0);
    q = txq_(tx, "SELECT pg_sleep(3)", 0, NULL);
    WP_CHECK_EQ(q.err, WP_ERR_TIMEOUT);
    WP_CHECK_EQ(cp_db_tx_query(tx, "SELECT 1", 0, NULL, noop_cb_, NULL), WP_ERR_TIMEOUT);
    WP_CHECK_EQ(cp_db_tx_commit(tx, done_cb_, NULL), WP_ERR_TIMEOUT); /* consumed */

    /* sessions: an advisory lock taken in a session is released when it ends */
    cp_db_tx *s = tx_open_(1);
    q = txq_(s, "SELECT pg_advisory_lock(4242)", 0, NULL);
    WP_CHECK_EQ(q.err, 0);
    q = txq_(s, "BEGIN", 0, NULL); /* left open on purpose */
    WP_CHECK_EQ(q.err, 0);
    q = q_(db_, "SELECT pg_try_advisory_lock(4242)", 0, NULL);
    WP_CHECK_STR(q.v0, "f");
    txres t = {0};
    WP_CHECK_EQ(cp_db_session_end(s, done_cb_, &t), 0);
    run_until_(&t.done, 5000);
    WP_CHECK_EQ(t.err, 0);
    cp_db_tx *s2 = tx_open_(1);
    q = txq_(s2, "SELECT pg_try_advisory_lock(4242)", 0, NULL);
    WP_CHECK_STR(q.v0, "t");
    memset(&t, 0, sizeof t);
    WP_CHECK_EQ(cp_db_session_end(s2, done_cb_, &t), 0);
    run_until_(&t.done, 5000);

    /* a BEGIN leaked through cp_db_query does not poison the pool: later writes commit */
    q = q_(db_, "BEGIN", 0, NULL);
    WP_CHECK_EQ(q.err, 0);
    for (int i = 0; i < 8; i++) {
        char k[16];
        snprintf(k, sizeof k, "leak%d", i);
        const char *p[] = {k};
        q = q_(db_, "INSERT INTO t_tx VALUES ($1, 0)", 1, p);
        WP_CHECK_EQ(q.err, 0);
    }
    cp_db *other = db_open_(NULL, 1);
    q = q_(other, "SELECT count(*) FROM t_tx WHERE k LIKE 'leak%'", 0, NULL);
    WP_CHECK_STR(q.v0, "8");
    q = q_(db_, "DELETE FROM t_tx WHERE k LIKE 'leak%'", 0, NULL);
    WP_CHECK_EQ(q.err, 0);
    db_close_wait_(other);
    WP_CHECK_EQ(cp_db_tx_begin(NULL, tx_cb_, NULL), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_db_tx_begin(db_, NULL, NULL), WP_ERR_INVAL);
}

/* ---- unreachable servers ---- */

WP_TEST(db_unreachable)
{
    static const char *const targets_ci[] = {
        "host=/nonexistent/socketdir dbname=x", /* fails inside PQconnectStart */
        "host=localhost port=1 dbname=x",       /* resolved with uv_getaddrinfo, refused */
        "host=nonexistent.invalid dbname=x",    /* does not resolve */
    };
    for (int i = 0; i < 3; i++) {
        cp_db *t = NULL;
        WP_CHECK_EQ(cp_db_new(&loop_, targets_ci[i], i == 0 ? 2 : 1, &t), 0);
        if (!t)
            continue;
        cp_db_set_connect_timeout(t, 3000);
        qres q;
        memset(&q, 0, sizeof q);
        int rc = cp_db_query(t, "SELECT 1", 0, NULL, qres_cb_, &q);
        if (i == 0) {
            WP_CHECK_EQ(rc, WP_ERR_CLOSED); /* already known down: fail fast */
        } else {
            WP_CHECK_EQ(rc, 0); /* queued while the first attempt runs */
            run_until_(&q.done, 8000);
            WP_CHECK_EQ(q.done, 1);
            WP_CHECK_EQ(q.err, WP_ERR_CLOSED);
        }
        cp_db *targets[3];
        targets[i] = t;
        WP_CHECK(!cp_db_ready(targets[i]));
        /* now down: fail fast, callback never called */
        WP_CHECK_EQ(cp_db_query(targets[i], "SELECT 1", 0, NULL, noop_cb_, NULL), WP_ERR_CLOSED);
        WP_CHECK_EQ(cp_db_tx_begin(targets[i], tx_cb_, NULL), WP_ERR_CLOSED);
        db_close_wait_(targets[i]);
    }
}

WP_TEST(db_close_with_work)
{
    cp_db *db = db_open_(NULL, 2);
    qres q[6];
    memset(q, 0, sizeof q);
    for (int i = 0; i < 6; i++)
        WP_CHECK_EQ(cp_db_query(db, "SELECT pg_sleep(0.2)", 0, NULL, qres_cb_, &q[i]), 0);
    txres t = {0};
    WP_CHECK_EQ(cp_db_tx_begin(db, tx_cb_, &t), 0);
    db_closed_ = 0;
    WP_CHECK_EQ(cp_db_close(db, db_close_cb_, NULL), 0);
    for (int i = 0; i < 6; i++)
        WP_CHECK_EQ(q[i].done, 0); /* not inside cp_db_close */
    run_until_(&db_closed_, 5000);
    WP_CHECK(db_closed_);
    for (int i = 0; i < 6; i++) {
        WP_CHECK_EQ(q[i].done, 1);
        WP_CHECK_EQ(q[i].err, WP_ERR_CLOSED);
    }
    WP_CHECK_EQ(t.done, 1);
    WP_CHECK_EQ(t.err, WP_ERR_CLOSED);
}

/* ---- the server dies under us ---- */

static int pg_restarted_(void)
{
    return pg_events_[CP_PGEMBED_RESTARTED] > 0;
}

WP_TEST(db_server_killed)
{
    WP_CHECK(run_until_fn_(db_ready_, 5000));
    qres q;
    memset(&q, 0, sizeof q);
    WP_CHECK_EQ(cp_db_query(db_, "SELECT pg_sleep(30)", 0, NULL, qres_cb_, &q), 0);
    /* let it reach the server (the tick timer keeps the loop turning), then kill */
    uint64_t until = uv_now(&loop_) + 300;
    while (uv_now(&loop_) < until) {
        uv_run(&loop_, UV_RUN_ONCE);
        uv_update_time(&loop_);
    }
    pid_t pid = cp_pgembed_pid(pg_);
    WP_CHECK(pid > 0);
    uint64_t t0 = uv_now(&loop_);
    WP_CHECK_EQ(kill(pid, SIGKILL), 0);
    run_until_(&q.done, 10000);
    WP_CHECK_EQ(q.done, 1);
    WP_CHECK_EQ(q.err, WP_ERR_CLOSED);
    WP_CHECK(uv_now(&loop_) - t0 < 5000);
    /* while the server is away: fail fast, no hang */
    WP_CHECK(run_until_fn_(pg_restarted_, 30000));
    WP_CHECK(run_until_fn_(db_ready_, 30000));
    q = q_(db_, "SELECT count(*) FROM t_tx", 0, NULL);
    WP_CHECK_EQ(q.err, 0);
    WP_CHECK_STR(q.v0, "1"); /* committed data survived the crash */
}

int main(void)
{
    wp_log_set_level(WP_LOG_ERROR);
    int rc = cluster_start_();
    WP_CHECK_EQ(rc, 0);
    if (rc == 0) {
        WP_RUN(db_refusals);
        WP_RUN(db_pool_queries);
        WP_RUN(db_hostile_params);
        WP_RUN(db_errors);
        WP_RUN(db_limits);
        WP_RUN(db_query_timeout);
        WP_RUN(db_transactions);
        WP_RUN(db_unreachable);
        WP_RUN(db_close_with_work);
        WP_RUN(db_server_killed);
    }
    if (db_)
        db_close_wait_(db_);
    cluster_stop_();
    return wp_test_done() || wp_test_failed_checks_ ? 1 : 0;
}
