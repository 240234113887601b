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

#include "wp_pg_fixture.h"

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
