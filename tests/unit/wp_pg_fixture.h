/*
 * wp_pg_fixture.h — test harness shared by the tests that need a real PostgreSQL
 * (header only, included once per test executable): one embedded cluster per
 * executable in a temporary directory, started through cp_pgembed; helpers to
 * run the loop until a flag is set, run a query and wait for it, open and
 * close pools; cleanup of the cluster and the directory even when a test fails
 * or the process exits early.
 */
#ifndef WP_PG_FIXTURE_H
#define WP_PG_FIXTURE_H

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

#endif
