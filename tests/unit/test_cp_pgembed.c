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
 *
 * Takeover (a wolfpackd SIGKILLed leaves its postgres running): a postgres
 * started by hand on the cluster, supervised by nobody, is stopped by the next
 * cp_pgembed_start, which then runs and is reached through its own child; a
 * fake postmaster that ignores SIGINT is SIGKILLed after the grace period, and
 * a stop during the takeover wait is clean; a pid file naming a live process
 * that is no postgres of this data directory (pid reuse, our own pid) and
 * garbage pid files never make pgembed signal anything.
 */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pwd.h>
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

/* ---------------------------------------------------------------- takeover */

/* One helper process spawned by the test (an "orphaned" postmaster, a fake one). */
static struct {
    uv_process_t proc;
    pid_t pid;
    int running; /* spawned, exit not seen */
    int closed;
    int64_t status;
    int sig;
} kid_;

static void kid_closed_cb_(uv_handle_t *h)
{
    (void)h;
    kid_.closed = 1;
}

static void kid_exit_cb_(uv_process_t *p, int64_t status, int sig)
{
    kid_.running = 0;
    kid_.status = status;
    kid_.sig = sig;
    uv_close((uv_handle_t *)p, kid_closed_cb_);
}

/* Spawns argv on loop_ in cwd, as the user pgembed runs postgres as when root. */
static pid_t kid_start_(char **argv, const char *cwd, int as_pg_user)
{
    memset(&kid_, 0, sizeof kid_);
    uv_stdio_container_t stdio[3];
    for (int i = 0; i < 3; i++)
        stdio[i].flags = UV_IGNORE;
    uv_process_options_t o;
    memset(&o, 0, sizeof o);
    o.exit_cb = kid_exit_cb_;
    o.file = argv[0];
    o.args = argv;
    o.cwd = cwd;
    o.stdio = stdio;
    o.stdio_count = 3;
    if (as_pg_user && geteuid() == 0) {
        struct passwd *pw = getpwnam("wolfpack");
        if (!pw || pw->pw_uid == 0)
            pw = getpwnam("postgres");
        if (pw) {
            o.flags = UV_PROCESS_SETUID | UV_PROCESS_SETGID;
            o.uid = pw->pw_uid;
            o.gid = pw->pw_gid;
        }
    }
    int rc = uv_spawn(&loop_, &kid_.proc, &o);
    WP_CHECK_EQ(rc, 0);
    if (rc != 0) {
        uv_close((uv_handle_t *)&kid_.proc, kid_closed_cb_);
        return 0;
    }
    kid_.running = 1;
    kid_.pid = kid_.proc.pid;
    return kid_.pid;
}

static int kid_closed_(void)
{
    return kid_.closed;
}

/* Kills the helper if it still runs and waits until its handle is closed. */
static void kid_reap_(void)
{
    if (kid_.running)
        uv_process_kill(&kid_.proc, SIGKILL);
    if (kid_.pid)
        WP_CHECK(run_until_fn_(kid_closed_, 10000));
}

static void data_path_(char *out, size_t cap, const char *file)
{
    snprintf(out, cap, "%s/postgres/data%s%s", tmpdir_, file ? "/" : "", file ? file : "");
}

/* Line 1 of postmaster.pid, 0 if none. */
static long pidfile_pid_(void)
{
    char p[256], buf[64] = "";
    data_path_(p, sizeof p, "postmaster.pid");
    FILE *f = fopen(p, "r");
    if (!f)
        return 0;
    if (!fgets(buf, sizeof buf, f))
        buf[0] = '\0';
    fclose(f);
    return strtol(buf, NULL, 10);
}

/* The hand-started postmaster wrote "ready" into its pid file (accepting connections). */
static int pidfile_ready_(void)
{
    char p[256], buf[4096];
    data_path_(p, sizeof p, "postmaster.pid");
    FILE *f = fopen(p, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, "\nready") != NULL;
}

static int write_pidfile_(const char *content, size_t len)
{
    char p[256];
    data_path_(p, sizeof p, "postmaster.pid");
    FILE *f = fopen(p, "w"); /* 0644: the server's user must read it */
    if (!f)
        return -1;
    int ok = fwrite(content, 1, len, f) == len;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* Stops pg_ and waits (the loop stays open). */
static void pg_stop_wait_(void)
{
    pg_stopped_ = 0;
    WP_CHECK_EQ(cp_pgembed_stop(pg_, pg_stop_cb_, NULL), 0);
    WP_CHECK(run_until_(&pg_stopped_, 20000));
    pg_ = NULL;
    pg_pid_ = 0;
}

/* Starts pgembed again on tmpdir_ (events reset). Returns cp_pgembed_start's result. */
static int pg_restart_(void)
{
    memset(pg_events_, 0, sizeof pg_events_);
    pg_last_err_ = 1;
    cp_pgembed_opts o = {.state_dir = tmpdir_, .backoff_min_ms = 200, .on_event = pg_event_cb_};
    return cp_pgembed_start(&loop_, &o, &pg_);
}

/* cluster_start_ on fresh event counters (an earlier test leaves them set). */
static int cluster_start_fresh_(void)
{
    memset(pg_events_, 0, sizeof pg_events_);
    pg_last_err_ = 1;
    pg_stopped_ = 0;
    return cluster_start_();
}

/* Parent pid of pid from /proc, 0 if unknown. */
static long ppid_of_(long pid)
{
    char p[64], buf[1024];
    snprintf(p, sizeof p, "/proc/%ld/stat", pid);
    FILE *f = fopen(p, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    char st;
    long pp = 0;
    if (!rp || sscanf(rp + 1, " %c %ld", &st, &pp) != 2)
        return 0;
    return pp;
}

WP_TEST(pgembed_takeover_orphan)
{
    int rc = cluster_start_fresh_();
    WP_CHECK_EQ(rc, 0);
    if (rc != 0) {
        cluster_stop_();
        return;
    }
    char postgres[PATH_MAX], data[256], run[256];
    snprintf(postgres, sizeof postgres, "%s/postgres", cp_pgembed_bindir(pg_));
    data_path_(data, sizeof data, NULL);
    snprintf(run, sizeof run, "%s/postgres/run", tmpdir_);
    pg_stop_wait_();

    /* what a SIGKILLed wolfpackd leaves behind: its postgres, running, supervised by nobody */
    char *argv[] = {postgres,
                    "-D",
                    data,
                    "-k",
                    run,
                    "-c",
                    "listen_addresses=",
                    "-c",
                    "unix_socket_permissions=0700",
                    "-c",
                    "port=5432",
                    NULL};
    pid_t orphan = kid_start_(argv, data, 1);
    WP_CHECK(orphan > 0);
    WP_CHECK(run_until_fn_(pidfile_ready_, 30000));
    WP_CHECK_EQ(pidfile_pid_(), orphan);

    WP_CHECK_EQ(pg_restart_(), 0);
    WP_CHECK(!cp_pgembed_ready(pg_)); /* the takeover waits first */
    WP_CHECK_EQ(cp_pgembed_pid(pg_), 0);
    WP_CHECK(run_until_(&pg_events_[CP_PGEMBED_READY], 40000));
    WP_CHECK_EQ(pg_last_err_, 0);
    WP_CHECK(cp_pgembed_ready(pg_));
    /* the orphan got a fast shutdown (SIGINT: clean exit) and is gone */
    WP_CHECK(!kid_.running);
    WP_CHECK_EQ(kid_.sig, 0);
    WP_CHECK_EQ(kid_.status, 0);
    WP_CHECK(kill(orphan, 0) != 0 && errno == ESRCH);
    pid_t pid = cp_pgembed_pid(pg_);
    pg_pid_ = pid;
    WP_CHECK(pid > 0 && pid != orphan);
    WP_CHECK_EQ(pidfile_pid_(), pid);

    /* clients reach our own child */
    db_ = db_open_(NULL, 1);
    qres q = q_(db_, "SELECT pg_backend_pid()", 0, NULL);
    WP_CHECK_EQ(q.err, 0);
    WP_CHECK_EQ(ppid_of_(strtol(q.v0, NULL, 10)), pid);
    q = q_(db_, "SELECT 40 + 2", 0, NULL);
    WP_CHECK_STR(q.v0, "42");
    db_close_wait_(db_);
    db_ = NULL;
    WP_CHECK_EQ(pg_events_[CP_PGEMBED_EXITED], 0);
    kid_reap_();
    cluster_stop_();
}

static int pg_ready_event_(void)
{
    return pg_events_[CP_PGEMBED_READY] > 0;
}

/* Writes the pid file, starts pgembed, waits for the READY event, stops. Returns its err. */
static int start_with_pidfile_(const char *content, size_t len)
{
    WP_CHECK_EQ(write_pidfile_(content, len), 0);
    WP_CHECK_EQ(pg_restart_(), 0);
    WP_CHECK(run_until_fn_(pg_ready_event_, 40000));
    int err = pg_last_err_;
    pg_stop_wait_();
    return err;
}

WP_TEST(pgembed_takeover_hostile)
{
    int rc = cluster_start_fresh_();
    WP_CHECK_EQ(rc, 0);
    if (rc != 0) {
        cluster_stop_();
        return;
    }
    char data[256], pf[512];
    data_path_(data, sizeof data, NULL);
    pg_stop_wait_();

    /* a fake postmaster of this data directory that ignores SIGINT (argv[0] "postgres",
     * cwd the data directory) */
    char *fake[] = {"/bin/bash", "-c", "trap '' INT; exec -a postgres sleep 60", NULL};
    pid_t fpid = kid_start_(fake, data, 0);
    WP_CHECK(fpid > 0);
    usleep(300 * 1000); /* let bash exec sleep */
    int n = snprintf(pf, sizeof pf, "%ld\n%s\n", (long)fpid, data);

    /* stop during the takeover wait: clean, no event, the fake is left as it is */
    WP_CHECK_EQ(write_pidfile_(pf, (size_t)n), 0);
    WP_CHECK_EQ(pg_restart_(), 0);
    uint64_t until = uv_now(&loop_) + 500;
    while (uv_now(&loop_) < until)
        uv_run(&loop_, UV_RUN_ONCE);
    WP_CHECK(!cp_pgembed_ready(pg_));
    WP_CHECK_EQ(cp_pgembed_pid(pg_), 0);
    WP_CHECK(kid_.running);
    pg_stop_wait_();
    WP_CHECK_EQ(pg_events_[CP_PGEMBED_READY], 0);
    WP_CHECK(kid_.running);

    /* SIGINT ignored: SIGKILL after the grace period, then our postgres starts */
    WP_CHECK_EQ(pg_restart_(), 0);
    WP_CHECK(run_until_fn_(pg_ready_event_, 40000));
    WP_CHECK_EQ(pg_last_err_, 0);
    WP_CHECK(!kid_.running);
    WP_CHECK_EQ(kid_.sig, SIGKILL);
    WP_CHECK_EQ(pidfile_pid_(), cp_pgembed_pid(pg_));
    pg_stop_wait_();
    kid_reap_();

    /* pid reuse: a live process that is no postgres is never signalled (postgres itself
     * then refuses the lock file, unless it belongs to another user: as root the server
     * runs unprivileged and takes EPERM for a stale file) */
    char *sleeper[] = {"/bin/sleep", "60", NULL};
    pid_t spid = kid_start_(sleeper, data, 0);
    WP_CHECK(spid > 0);
    n = snprintf(pf, sizeof pf, "%ld\n%s\n", (long)spid, data);
    WP_CHECK_EQ(start_with_pidfile_(pf, (size_t)n), geteuid() == 0 ? 0 : WP_ERR_IO);
    WP_CHECK(kid_.running);
    kid_reap_();
    WP_CHECK_EQ(kid_.sig, SIGKILL); /* ours, not pgembed's SIGINT */

    /* our own pid (a signal would kill this test): left alone; postgres takes it for its
     * parent's and starts */
    n = snprintf(pf, sizeof pf, "%ld\n%s\n", (long)getpid(), data);
    WP_CHECK_EQ(start_with_pidfile_(pf, (size_t)n), 0);

    /* garbage: postgres refuses it ("bogus data in lock file"), pgembed signals nothing */
    WP_CHECK_EQ(start_with_pidfile_("abc\n", 4), WP_ERR_IO);
    WP_CHECK_EQ(start_with_pidfile_("", 0), WP_ERR_IO);
    n = snprintf(pf, sizeof pf, "0\n%s\n", data);
    WP_CHECK_EQ(start_with_pidfile_(pf, (size_t)n), WP_ERR_IO);
    static char big[20000];
    memset(big, '9', sizeof big);
    big[sizeof big - 1] = '\n';
    WP_CHECK(start_with_pidfile_(big, sizeof big) <= 0);
    WP_CHECK_EQ(pg_events_[CP_PGEMBED_READY], 1);

    /* a normal start still works after all that */
    WP_CHECK_EQ(start_with_pidfile_(pf, 0), WP_ERR_IO); /* empty file again */
    char p[256];
    data_path_(p, sizeof p, "postmaster.pid");
    WP_CHECK_EQ(unlink(p), 0);
    WP_CHECK_EQ(pg_restart_(), 0);
    WP_CHECK(run_until_fn_(pg_ready_event_, 40000));
    WP_CHECK_EQ(pg_last_err_, 0);
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
    WP_RUN(pgembed_takeover_orphan);
    WP_RUN(pgembed_takeover_hostile);
    return wp_test_done();
}
