/*
 * test_cp_migrate.c — schema migrations against a real (embedded) PostgreSQL.
 *
 * Covered: a fresh database gets every compiled-in migration and the tables of
 * DESIGN.md §3 with their constraints (CHECKed states, unique token hashes,
 * append-only events, updated_at trigger); a second run applies nothing; two
 * pools migrating one empty database at once apply each migration exactly
 * once and both succeed; a database recording a newer version is refused; a
 * failing migration is rolled back and not recorded while earlier ones stay;
 * invalid migration lists are refused; cp_migrate_status reports the version.
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
#include "migrate.h"
#include "pgembed.h"
#include "wp_test.h"

/* ---- embedded cluster harness (one cluster per test executable) ---- */
static uv_loop_t loop_;
static uv_timer_t tick_;
static char tmpdir_[64];
static cp_pgembed *pg_;
static volatile pid_t pg_pid_;
static int pg_events_[4]; /* count per cp_pgembed_event */
static int pg_last_err_ = 1;

static int rm_cb_(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_tree_(const char *dir)
{
    if (dir[0])
        nftw(dir, rm_cb_, 16, FTW_DEPTH | FTW_PHYS);
}

/* Last resort (failed run, crash): kill the cluster and remove the temp dir. */
static void emergency_cleanup_(void)
{
    if (pg_pid_ > 0)
        kill(pg_pid_, SIGKILL);
    pg_pid_ = 0;
    rm_tree_(tmpdir_);
    tmpdir_[0] = '\0';
}

static void fatal_signal_(int sig)
{
    emergency_cleanup_();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void tick_cb_(uv_timer_t *t)
{
    (void)t;
    if (pg_)
        pg_pid_ = cp_pgembed_pid(pg_);
}

/* Runs the loop until *flag is nonzero or ms passed. Returns *flag. */
static int run_until_(const int *flag, unsigned ms)
{
    uint64_t end = uv_now(&loop_) + ms;
    while (!*flag && uv_now(&loop_) < end) {
        uv_run(&loop_, UV_RUN_ONCE);
        uv_update_time(&loop_);
    }
    return *flag;
}

/* Runs the loop until fn() is true or ms passed. */
static int run_until_fn_(int (*fn)(void), unsigned ms)
{
    uint64_t end = uv_now(&loop_) + ms;
    int ok;
    while (!(ok = fn()) && uv_now(&loop_) < end) {
        uv_run(&loop_, UV_RUN_ONCE);
        uv_update_time(&loop_);
    }
    return ok;
}

static void pg_event_cb_(cp_pgembed *pg, int event, int err, void *ud)
{
    (void)pg;
    (void)ud;
    if (event > 0 && event < 4)
        pg_events_[event]++;
    if (event == CP_PGEMBED_READY)
        pg_last_err_ = err;
}

/* Creates the temp state dir and starts the cluster; returns 0 when it is ready. */
static int cluster_start_(void)
{
    uv_loop_init(&loop_);
    uv_timer_init(&loop_, &tick_);
    uv_timer_start(&tick_, tick_cb_, 20, 20);
    snprintf(tmpdir_, sizeof tmpdir_, "/tmp/wp-pgtest-XXXXXX");
    if (!mkdtemp(tmpdir_)) {
        tmpdir_[0] = '\0';
        return -1;
    }
    atexit(emergency_cleanup_);
    signal(SIGABRT, fatal_signal_);
    signal(SIGSEGV, fatal_signal_);
    signal(SIGTERM, fatal_signal_);
    signal(SIGINT, fatal_signal_);
    cp_pgembed_opts o = {.state_dir = tmpdir_, .backoff_min_ms = 200, .on_event = pg_event_cb_};
    int rc = cp_pgembed_start(&loop_, &o, &pg_);
    if (rc != 0)
        return rc;
    run_until_(&pg_events_[CP_PGEMBED_READY], 60000);
    pg_pid_ = cp_pgembed_pid(pg_);
    return pg_events_[CP_PGEMBED_READY] ? pg_last_err_ : WP_ERR_TIMEOUT;
}

static int pg_stopped_;
static void pg_stop_cb_(cp_pgembed *pg, void *ud)
{
    (void)pg;
    (void)ud;
    pg_stopped_ = 1;
}

static void tick_closed_(uv_handle_t *h)
{
    (void)h;
}

/* Stops the cluster, closes the loop (checked) and removes the temp dir. */
static void cluster_stop_(void)
{
    if (pg_) {
        WP_CHECK_EQ(cp_pgembed_stop(pg_, pg_stop_cb_, NULL), 0);
        run_until_(&pg_stopped_, 20000);
        WP_CHECK(pg_stopped_);
        pg_ = NULL;
    }
    pg_pid_ = 0;
    uv_close((uv_handle_t *)&tick_, tick_closed_);
    WP_CHECK_LOOP_CLOSED(&loop_);
    rm_tree_(tmpdir_);
    tmpdir_[0] = '\0';
}

/* Collects one query result. */
typedef struct qres {
    int done;
    int err;
    int ntuples;
    char v0[256]; /* first column of the first row ("<null>" for NULL) */
    char sqlstate[8];
    int isnull;
} qres;

static void qres_cb_(int err, PGresult *res, void *ud)
{
    qres *q = ud;
    q->done++;
    q->err = err;
    if (res) {
        snprintf(q->sqlstate, sizeof q->sqlstate, "%s", cp_db_sqlstate(res));
        if (PQresultStatus(res) == PGRES_TUPLES_OK) {
            q->ntuples = PQntuples(res);
            if (q->ntuples > 0 && PQnfields(res) > 0) {
                q->isnull = PQgetisnull(res, 0, 0);
                snprintf(q->v0, sizeof q->v0, "%s", q->isnull ? "<null>" : PQgetvalue(res, 0, 0));
            }
        }
    }
}

/* Runs one statement on db and waits for it (10 s). */
static qres q_(cp_db *db, const char *sql, int n, const char *const *params)
{
    qres q;
    memset(&q, 0, sizeof q);
    int rc = cp_db_query(db, sql, n, params, qres_cb_, &q);
    if (rc != 0) {
        q.err = rc;
        q.done = -1;
        return q;
    }
    run_until_(&q.done, 15000);
    return q;
}

static int db_closed_;
static void db_close_cb_(void *ud)
{
    (void)ud;
    db_closed_ = 1;
}

static void db_close_wait_(cp_db *db)
{
    db_closed_ = 0;
    WP_CHECK_EQ(cp_db_close(db, db_close_cb_, NULL), 0);
    run_until_(&db_closed_, 10000);
    WP_CHECK(db_closed_);
}

static cp_db *db_open_(const char *extra, int pool)
{
    char ci[1024];
    snprintf(ci, sizeof ci, "%s%s%s", cp_pgembed_conninfo(pg_), extra ? " " : "",
             extra ? extra : "");
    cp_db *db = NULL;
    WP_CHECK_EQ(cp_db_new(&loop_, ci, pool, &db), 0);
    return db;
}
/* ---- end harness ---- */

typedef struct migres {
    int done;
    int err;
    int applied;
} migres;

static void mig_cb_(int err, int applied, void *ud)
{
    migres *m = ud;
    m->done++;
    m->err = err;
    m->applied = applied;
}

static migres migrate_(cp_db *db, const cp_migration *list, size_t n)
{
    migres m = {0};
    int rc = list ? cp_migrate_run_list(db, list, n, mig_cb_, &m) : cp_migrate_run(db, mig_cb_, &m);
    WP_CHECK_EQ(rc, 0);
    if (rc == 0)
        run_until_(&m.done, 30000);
    WP_CHECK_EQ(m.done, 1);
    return m;
}

static cp_db *fresh_db_(const char *name)
{
    cp_db *admin = db_open_(NULL, 1);
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name); /* constant test names */
    qres q = q_(admin, sql, 0, NULL);
    WP_CHECK_EQ(q.err, 0);
    db_close_wait_(admin);
    char extra[64];
    snprintf(extra, sizeof extra, "dbname=%s", name);
    return db_open_(extra, 2);
}

static void version_cb_(int err, int version, void *ud)
{
    int *v = ud;
    v[0]++;
    v[1] = err;
    v[2] = version;
}

WP_TEST(migrate_fresh_and_again)
{
    cp_db *db = fresh_db_("mig_fresh");
    int v[3] = {0, 0, -1};
    WP_CHECK_EQ(cp_migrate_status(db, version_cb_, v), 0);
    run_until_(&v[0], 5000);
    WP_CHECK_EQ(v[1], 0);
    WP_CHECK_EQ(v[2], 0); /* no schema_migrations yet */

    migres m = migrate_(db, NULL, 0);
    WP_CHECK_EQ(m.err, 0);
    WP_CHECK_EQ(m.applied, (int)cp_migrations_count);
    WP_CHECK(cp_migrate_latest() >= 1);
    qres q = q_(db, "SELECT count(*) FROM schema_migrations", 0, NULL);
    WP_CHECK_EQ(atoi(q.v0), (int)cp_migrations_count);
    q = q_(db,
           "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND "
           "table_name IN ('nodes', 'sessions', 'tokens', 'events', 'webhook_deliveries', "
           "'replicas', 'schema_migrations')",
           0, NULL);
    WP_CHECK_STR(q.v0, "7");

    memset(v, 0, sizeof v);
    WP_CHECK_EQ(cp_migrate_status(db, version_cb_, v), 0);
    run_until_(&v[0], 5000);
    WP_CHECK_EQ(v[2], cp_migrate_latest());

    /* second run: nothing to do */
    m = migrate_(db, NULL, 0);
    WP_CHECK_EQ(m.err, 0);
    WP_CHECK_EQ(m.applied, 0);
    q = q_(db, "SELECT count(*) FROM schema_migrations", 0, NULL);
    WP_CHECK_EQ(atoi(q.v0), (int)cp_migrations_count);

    /* the schema enforces its rules */
    const char *node[] = {"node-1", "online"};
    q = q_(db, "INSERT INTO nodes (id, status) VALUES ($1, $2)", 2, node);
    WP_CHECK_EQ(q.err, 0);
    const char *badstatus[] = {"node-2", "exploded"};
    q = q_(db, "INSERT INTO nodes (id, status) VALUES ($1, $2)", 2, badstatus);
    WP_CHECK_EQ(q.err, WP_ERR_IO);
    WP_CHECK_STR(q.sqlstate, "23514");
    const char *badid[] = {"../etc'; --", "online"};
    q = q_(db, "INSERT INTO nodes (id, status) VALUES ($1, $2)", 2, badid);
    WP_CHECK_STR(q.sqlstate, "23514");
    q = q_(db,
           "UPDATE nodes SET max_sessions = 4 WHERE id = 'node-1' "
           "RETURNING updated_at > created_at OR updated_at = now()",
           0, NULL);
    WP_CHECK_STR(q.v0, "t");
    const char *tok[] = {"admin", "admin",
                         "\\x0101010101010101010101010101010101010101010101010101010101010101"};
    q = q_(db, "INSERT INTO tokens (name, role, hash) VALUES ($1, $2, $3::bytea)", 3, tok);
    WP_CHECK_EQ(q.err, 0);
    q = q_(db, "INSERT INTO tokens (name, role, hash) VALUES ($1, $2, $3::bytea)", 3, tok);
    WP_CHECK_EQ(q.err, WP_ERR_EXISTS); /* hash is unique */
    const char *shorthash[] = {"x", "admin", "\\x01"};
    q = q_(db, "INSERT INTO tokens (name, role, hash) VALUES ($1, $2, $3::bytea)", 3, shorthash);
    WP_CHECK_STR(q.sqlstate, "23514");
    const char *badrole[] = {"x", "root",
                             "\\x0202020202020202020202020202020202020202020202020202020202020202"};
    q = q_(db, "INSERT INTO tokens (name, role, hash) VALUES ($1, $2, $3::bytea)", 3, badrole);
    WP_CHECK_STR(q.sqlstate, "23514");
    q = q_(db,
           "INSERT INTO events (type, node_id) VALUES ('node.registered', 'node-1') RETURNING id",
           0, NULL);
    WP_CHECK_EQ(q.err, 0);
    WP_CHECK_STR(q.v0, "1");
    q = q_(db, "UPDATE events SET message = 'rewritten'", 0, NULL);
    WP_CHECK_EQ(q.err, WP_ERR_IO); /* append-only */
    const char *sess[] = {"node-1", "sleeping"};
    q = q_(db, "INSERT INTO sessions (node_id, status) VALUES ($1, $2)", 2, sess);
    WP_CHECK_STR(q.sqlstate, "23514");
    db_close_wait_(db);
}

WP_TEST(migrate_concurrent)
{
    cp_db *a = fresh_db_("mig_race");
    cp_db *b = db_open_("dbname=mig_race", 2);
    migres ma = {0}, mb = {0};
    WP_CHECK_EQ(cp_migrate_run(a, mig_cb_, &ma), 0);
    WP_CHECK_EQ(cp_migrate_run(b, mig_cb_, &mb), 0);
    int both = 0;
    uint64_t end = uv_now(&loop_) + 30000;
    while (!both && uv_now(&loop_) < end) {
        uv_run(&loop_, UV_RUN_ONCE);
        uv_update_time(&loop_);
        both = ma.done && mb.done;
    }
    WP_CHECK(both);
    WP_CHECK_EQ(ma.err, 0);
    WP_CHECK_EQ(mb.err, 0);
    WP_CHECK_EQ(ma.applied + mb.applied, (int)cp_migrations_count);
    qres q = q_(a, "SELECT count(*), count(DISTINCT version) FROM schema_migrations", 0, NULL);
    WP_CHECK_EQ(atoi(q.v0), (int)cp_migrations_count);
    /* the lock was released: it can be taken again */
    q = q_(b, "SELECT pg_try_advisory_lock(" CP_MIGRATE_LOCK_KEY ")", 0, NULL);
    WP_CHECK_STR(q.v0, "t");
    db_close_wait_(a);
    db_close_wait_(b);
}

WP_TEST(migrate_newer_refused)
{
    cp_db *db = fresh_db_("mig_newer");
    migres m = migrate_(db, NULL, 0);
    WP_CHECK_EQ(m.err, 0);
    char v[16];
    snprintf(v, sizeof v, "%d", cp_migrate_latest() + 1);
    const char *p[] = {v};
    qres q = q_(db, "INSERT INTO schema_migrations (version, name) VALUES ($1, 'future')", 1, p);
    WP_CHECK_EQ(q.err, 0);
    m = migrate_(db, NULL, 0);
    WP_CHECK_EQ(m.err, WP_ERR_UNSUPPORTED);
    WP_CHECK_EQ(m.applied, 0);
    /* the pool is still usable and the lock released */
    q = q_(db, "SELECT pg_try_advisory_lock(" CP_MIGRATE_LOCK_KEY ")", 0, NULL);
    WP_CHECK_STR(q.v0, "t");
    db_close_wait_(db);
}

WP_TEST(migrate_failure_rolls_back)
{
    static const cp_migration list[] = {
        {1, "one", "CREATE TABLE m_one (x int); INSERT INTO m_one VALUES (1);"},
        {2, "two", "CREATE TABLE m_two (x int); SELECT 1 / 0;"},
        {3, "three", "CREATE TABLE m_three (x int);"},
    };
    cp_db *db = fresh_db_("mig_fail");
    migres m = migrate_(db, list, 3);
    WP_CHECK_EQ(m.err, WP_ERR_IO);
    WP_CHECK_EQ(m.applied, 1);
    qres q = q_(db, "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations",
                0, NULL);
    WP_CHECK_STR(q.v0, "1");
    q = q_(db, "SELECT to_regclass('m_two') IS NULL, to_regclass('m_one') IS NOT NULL", 0, NULL);
    WP_CHECK_STR(q.v0, "t");
    /* fixed list: resumes after the applied one */
    static const cp_migration fixed[] = {
        {1, "one", "CREATE TABLE m_one (x int); INSERT INTO m_one VALUES (1);"},
        {2, "two", "CREATE TABLE m_two (x int);"},
        {3, "three", "CREATE TABLE m_three (x int);"},
    };
    m = migrate_(db, fixed, 3);
    WP_CHECK_EQ(m.err, 0);
    WP_CHECK_EQ(m.applied, 2);
    q = q_(db, "SELECT count(*) FROM m_one", 0, NULL);
    WP_CHECK_STR(q.v0, "1"); /* migration 1 did not run twice */
    db_close_wait_(db);
}

static cp_db *cur_;
static int cur_ready_(void)
{
    return cp_db_ready(cur_);
}

WP_TEST(migrate_invalid_lists)
{
    cp_db *db = db_open_(NULL, 1);
    cur_ = db;
    WP_CHECK(run_until_fn_(cur_ready_, 5000));
    static const cp_migration dup[] = {{1, "a", "SELECT 1"}, {1, "b", "SELECT 1"}};
    static const cp_migration down[] = {{2, "a", "SELECT 1"}, {1, "b", "SELECT 1"}};
    static const cp_migration zero[] = {{0, "a", "SELECT 1"}};
    static const cp_migration nosql[] = {{1, "a", NULL}};
    migres m = {0};
    WP_CHECK_EQ(cp_migrate_run_list(db, dup, 2, mig_cb_, &m), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_migrate_run_list(db, down, 2, mig_cb_, &m), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_migrate_run_list(db, zero, 1, mig_cb_, &m), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_migrate_run_list(db, nosql, 1, mig_cb_, &m), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_migrate_run_list(db, dup, 0, mig_cb_, &m), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_migrate_run(NULL, mig_cb_, &m), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_migrate_run(db, NULL, &m), WP_ERR_INVAL);
    WP_CHECK_EQ(m.done, 0);
    /* the compiled-in list itself is well formed */
    for (size_t i = 1; i < cp_migrations_count; i++)
        WP_CHECK(cp_migrations[i].version > cp_migrations[i - 1].version);
    db_close_wait_(db);
}

int main(void)
{
    wp_log_set_level(WP_LOG_ERROR);
    int rc = cluster_start_();
    WP_CHECK_EQ(rc, 0);
    if (rc == 0) {
        WP_RUN(migrate_fresh_and_again);
        WP_RUN(migrate_concurrent);
        WP_RUN(migrate_newer_refused);
        WP_RUN(migrate_failure_rolls_back);
        WP_RUN(migrate_invalid_lists);
    }
    cluster_stop_();
    return wp_test_done() || wp_test_failed_checks_ ? 1 : 0;
}
