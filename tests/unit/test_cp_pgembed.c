/*
 * test_cp_pgembed.c — the embedded PostgreSQL cluster against the real server binaries.
 *
 * Starts a private cluster in a mkdtemp directory through cp_pgembed (initdb on
 * first run, as the `postgres` user when the test runs as root), checks that
 * it serves the wolfpack database on a 0700 unix socket only (SHOW
 * listen_addresses is empty), kills the postmaster with SIGKILL and checks the
 * supervisor restarts it and clients recover, stops it cleanly, restarts it on
 * the existing data directory, and checks the refusals (missing binaries,
 * unusable data directory, over-long socket path). Temp dirs and the server
 * are removed even when a check fails (atexit + fatal signal handlers).
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

WP_TEST(pgembed_find_bindir)
{
    char dir[4096];
    WP_CHECK_EQ(cp_pgembed_find_bindir(dir, sizeof dir), 0);
    char p[4200];
    snprintf(p, sizeof p, "%s/initdb", dir);
    WP_CHECK_EQ(access(p, X_OK), 0);
    snprintf(p, sizeof p, "%s/postgres", dir);
    WP_CHECK_EQ(access(p, X_OK), 0);
    WP_CHECK_EQ(cp_pgembed_find_bindir(dir, 4), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_pgembed_find_bindir(NULL, 10), WP_ERR_INVAL);
}

WP_TEST(pgembed_refusals)
{
    uv_loop_t l;
    uv_loop_init(&l);
    cp_pgembed *pg = NULL;
    cp_pgembed_opts o = {.state_dir = NULL};
    WP_CHECK_EQ(cp_pgembed_start(&l, &o, &pg), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_pgembed_start(&l, NULL, &pg), WP_ERR_INVAL);

    char dir[] = "/tmp/wp-pgref-XXXXXX";
    WP_CHECK(mkdtemp(dir) != NULL);
    /* binaries missing */
    o.state_dir = dir;
    o.bindir = "/nonexistent/bin";
    WP_CHECK_EQ(cp_pgembed_start(&l, &o, &pg), WP_ERR_NOT_FOUND);
    o.bindir = "/tmp"; /* exists, holds no initdb */
    WP_CHECK_EQ(cp_pgembed_start(&l, &o, &pg), WP_ERR_NOT_FOUND);
    o.bindir = NULL;
    /* data dir with foreign content and no cluster */
    char p[256];
    snprintf(p, sizeof p, "%s/postgres", dir);
    WP_CHECK_EQ(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/postgres/data", dir);
    WP_CHECK_EQ(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/postgres/data/junk", dir);
    FILE *f = fopen(p, "w");
    WP_CHECK(f != NULL);
    if (f)
        fclose(f);
    WP_CHECK_EQ(cp_pgembed_start(&l, &o, &pg), WP_ERR_CONFIG);
    WP_CHECK_EQ(access(p, F_OK), 0); /* never deleted */
    /* a state dir whose socket path cannot fit sun_path */
    char longdir[300];
    snprintf(longdir, sizeof longdir, "%s/%0120d", dir, 0);
    WP_CHECK_EQ(mkdir(longdir, 0700), 0);
    o.state_dir = longdir;
    WP_CHECK_EQ(cp_pgembed_start(&l, &o, &pg), WP_ERR_CONFIG);
    rm_tree_(dir);
    WP_CHECK_EQ(uv_loop_close(&l), 0);
}

static cp_db *db_;
static int db_ready_(void)
{
    return cp_db_ready(db_);
}

static int pg_restarted_(void)
{
    return pg_events_[CP_PGEMBED_RESTARTED] > 0;
}

WP_TEST(pgembed_lifecycle)
{
    int rc = cluster_start_();
    WP_CHECK_EQ(rc, 0);
    if (rc != 0) {
        cluster_stop_();
        return;
    }
    WP_CHECK(cp_pgembed_ready(pg_));
    pid_t pid1 = cp_pgembed_pid(pg_);
    WP_CHECK(pid1 > 0);
    WP_CHECK(strstr(cp_pgembed_conninfo(pg_), "dbname='wolfpack'") != NULL);

    /* layout and permissions */
    char p[256];
    struct stat st;
    snprintf(p, sizeof p, "%s/postgres/data/PG_VERSION", tmpdir_);
    WP_CHECK_EQ(stat(p, &st), 0);
    snprintf(p, sizeof p, "%s/postgres/run", tmpdir_);
    WP_CHECK_EQ(stat(p, &st), 0);
    WP_CHECK_EQ(st.st_mode & 0777, 0700);
    snprintf(p, sizeof p, "%s/postgres/run/.s.PGSQL.5432", tmpdir_);
    WP_CHECK_EQ(stat(p, &st), 0);
    WP_CHECK(S_ISSOCK(st.st_mode));
    WP_CHECK_EQ(st.st_mode & 0777, 0700);
    if (geteuid() == 0)
        WP_CHECK(st.st_uid != 0); /* the server does not run as root */

    db_ = db_open_(NULL, 2);
    qres q = q_(db_, "SHOW listen_addresses", 0, NULL);
    WP_CHECK_EQ(q.err, 0);
    WP_CHECK_STR(q.v0, ""); /* no TCP listener at all */
    q = q_(db_, "SHOW unix_socket_permissions", 0, NULL);
    WP_CHECK_STR(q.v0, "0700");
    q = q_(db_, "SELECT current_database()", 0, NULL);
    WP_CHECK_STR(q.v0, "wolfpack");
    q = q_(db_, "SELECT current_user", 0, NULL);
    WP_CHECK_STR(q.v0, "wolfpack");
    q = q_(db_, "SELECT inet_server_addr() IS NULL", 0, NULL);
    WP_CHECK_STR(q.v0, "t"); /* connected over the unix socket */
    q = q_(db_, "SHOW server_encoding", 0, NULL);
    WP_CHECK_STR(q.v0, "UTF8");

    /* crash: SIGKILL the postmaster; the supervisor restarts it, clients recover */
    WP_CHECK_EQ(kill(pid1, SIGKILL), 0);
    WP_CHECK(run_until_fn_(pg_restarted_, 30000));
    WP_CHECK_EQ(pg_events_[CP_PGEMBED_EXITED], 1);
    pid_t pid2 = cp_pgembed_pid(pg_);
    WP_CHECK(pid2 > 0 && pid2 != pid1);
    WP_CHECK(cp_pgembed_ready(pg_));
    WP_CHECK(run_until_fn_(db_ready_, 30000));
    q = q_(db_, "SELECT 40 + 2", 0, NULL);
    WP_CHECK_EQ(q.err, 0);
    WP_CHECK_STR(q.v0, "42");
    db_close_wait_(db_);
    db_ = NULL;

    /* clean stop: SIGINT, process gone, every handle closed */
    WP_CHECK_EQ(cp_pgembed_stop(pg_, pg_stop_cb_, NULL), 0);
    WP_CHECK_EQ(cp_pgembed_stop(pg_, pg_stop_cb_, NULL), WP_ERR_STATE);
    run_until_(&pg_stopped_, 20000);
    WP_CHECK(pg_stopped_);
    pg_ = NULL;
    pg_pid_ = 0;
    WP_CHECK(kill(pid2, 0) != 0 && errno == ESRCH);
    snprintf(p, sizeof p, "%s/postgres/data/postmaster.pid", tmpdir_);
    WP_CHECK(access(p, F_OK) != 0); /* removed by postgres on clean shutdown */

    /* second start on the existing cluster: no initdb, ready again */
    memset(pg_events_, 0, sizeof pg_events_);
    pg_stopped_ = 0;
    cp_pgembed_opts o = {.state_dir = tmpdir_, .on_event = pg_event_cb_};
    WP_CHECK_EQ(cp_pgembed_start(&loop_, &o, &pg_), 0);
    run_until_(&pg_events_[CP_PGEMBED_READY], 30000);
    WP_CHECK_EQ(pg_last_err_, 0);
    pg_pid_ = cp_pgembed_pid(pg_);
    db_ = db_open_(NULL, 1);
    q = q_(db_, "SELECT count(*) FROM pg_database WHERE datname = 'wolfpack'", 0, NULL);
    WP_CHECK_STR(q.v0, "1");
    db_close_wait_(db_);
    db_ = NULL;

    /* stop during startup (before ready): no event, clean close */
    cluster_stop_();
}

WP_TEST(pgembed_stop_before_ready)
{
    uv_loop_t l;
    uv_loop_init(&l);
    char dir[] = "/tmp/wp-pgstop-XXXXXX";
    WP_CHECK(mkdtemp(dir) != NULL);
    int events = 0;
    cp_pgembed *pg = NULL;
    cp_pgembed_opts o = {.state_dir = dir, .on_event = NULL};
    (void)events;
    WP_CHECK_EQ(cp_pgembed_start(&l, &o, &pg), 0); /* initdb is running */
    WP_CHECK(cp_pgembed_pid(pg) > 0);
    pg_stopped_ = 0;
    WP_CHECK_EQ(cp_pgembed_stop(pg, pg_stop_cb_, NULL), 0);
    WP_CHECK(!pg_stopped_); /* never inside the call */
    uv_run(&l, UV_RUN_DEFAULT);
    WP_CHECK(pg_stopped_);
    WP_CHECK_EQ(uv_loop_close(&l), 0);
    rm_tree_(dir);
}

int main(void)
{
    wp_log_set_level(WP_LOG_WARN);
    WP_RUN(pgembed_find_bindir);
    WP_RUN(pgembed_refusals);
    WP_RUN(pgembed_lifecycle);
    WP_RUN(pgembed_stop_before_ready);
    return wp_test_done();
}
