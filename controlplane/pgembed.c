/*
 * pgembed.c — the embedded PostgreSQL cluster: initdb, postgres as a supervised child.
 *
 * One child at a time (initdb, then postgres) runs through uv_spawn with its
 * stdout/stderr on two pipes that are logged line by line. A child is
 * "finished" once its exit callback ran and its process handle and both pipes
 * are closed; pipes still open 500 ms after the exit (backends killed with the
 * postmaster may hold them) are closed by force. Readiness is probed with a
 * one-connection cp_db pool against the `postgres` database every 100 ms until
 * the deadline; the same probe creates the `wolfpack` database when missing.
 * The state machine: INITDB -> STARTING (spawned, probing) -> RUNNING; an exit
 * while RUNNING or STARTING after the first success goes to BACKOFF and
 * restarts; any state -> STOPPING -> freed after the last close callback.
 * The directory preparation in cp_pgembed_start is synchronous (startup only).
 *
 * Takeover: before every postgres spawn, <data>/postmaster.pid is read. When it
 * names a live postmaster of this very data directory (one orphaned by a
 * wolfpackd that was SIGKILLed: it is not our child), the state goes to
 * TAKEOVER: SIGINT (fast shutdown), then kill(pid, 0) polled every 100 ms;
 * SIGKILL after CP_PGEMBED_STOP_TIMEOUT_MS, give up PG_TAKEOVER_KILL_MS later.
 * Only then is our postgres spawned. A pid file naming a dead process is left
 * to postgres; a live process that is not a postgres of this data directory
 * (pid reuse) is left alone. The probe reports ready only while our child is
 * alive and postmaster.pid names it, so it never mistakes another server
 * answering on the socket for ours.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "db.h"
#include "err.h"
#include "log.h"
#include "pgembed.h"

#define PG_PORT             "5432"
#define PG_SOCK_PATH_MAX    107 /* sizeof(sun_path) - 1 */
#define PG_PROBE_RETRY_MS   100
#define PG_PIPE_DRAIN_MS    500
#define PG_UPTIME_RESET_MS  30000
#define PG_TAKEOVER_POLL_MS 100
#define PG_TAKEOVER_KILL_MS 5000
#define PG_PIDFILE_MAX      8192 /* bytes of postmaster.pid read; it is a few hundred */

enum pg_state {
    PG_INITDB,
    PG_TAKEOVER,
    PG_STARTING,
    PG_RUNNING,
    PG_BACKOFF,
    PG_FAILED,
    PG_STOPPING
};
enum child_kind { CHILD_NONE, CHILD_INITDB, CHILD_POSTGRES };
enum probe_outcome { PROBE_NONE, PROBE_RETRY, PROBE_READY, PROBE_FAIL };

struct pg_pipe {
    uv_pipe_t pipe;
    int open;
    cp_pgembed *pg;
    const char *stream;
    size_t len;
    char line[CP_PGEMBED_LINE_MAX + 1];
    char rbuf[4096];
};

struct cp_pgembed {
    uv_loop_t *loop;
    char bindir[PATH_MAX];
    char initdb[PATH_MAX];
    char postgres[PATH_MAX];
    char root[PATH_MAX];
    char data[PATH_MAX];
    char run[PATH_MAX];
    char conninfo[PATH_MAX + 128];
    char probe_conninfo[PATH_MAX + 128];
    int setid;
    uid_t uid;
    gid_t gid;
    char user_name[64];
    int state;
    int ever_ready;
    unsigned ready_timeout_ms;
    unsigned backoff_min_ms;
    unsigned backoff_ms;
    uint64_t ready_at;
    cp_pgembed_event_cb on_event;
    void *ud;

    /* the child */
    int child;         /* enum child_kind; CHILD_NONE when fully finished */
    int child_alive;   /* exit callback not seen yet */
    int child_handles; /* process + pipe handles whose close callback is pending */
    int64_t exit_status;
    int term_signal;
    int child_fail; /* error to report when the child finishes (deadline) */
    uv_process_t proc;
    struct pg_pipe out, err;

    /* a postmaster left running by a previous wolfpackd (PG_TAKEOVER) */
    pid_t stale_pid;
    int stale_killed; /* SIGKILL sent */
    int stale_err;    /* could not signal it: fail at the next timer tick */
    uint64_t stale_deadline;

    uv_timer_t timer;       /* restart backoff, takeover polling, stop escalation */
    uv_timer_t ready_timer; /* readiness deadline */
    uv_timer_t probe_timer; /* probe retry */
    uv_timer_t drain_timer; /* force-close pipes after the exit */

    cp_db *probe;
    int probe_closing;
    int probe_outcome;
    int probe_err;

    cp_pgembed_stop_cb stop_cb;
    void *stop_ud;
    int pending_closes;
};

static void pg_spawn_postgres(cp_pgembed *pg);
static void pg_launch_postgres(cp_pgembed *pg);
static void pg_stop_step(cp_pgembed *pg);
static void pg_probe_start(cp_pgembed *pg);

/* ---------------------------------------------------------------- helpers */

static int path_join(char *out, size_t cap, const char *a, const char *b)
{
    int n = snprintf(out, cap, "%s/%s", a, b);
    return (n < 0 || (size_t)n >= cap) ? WP_ERR_INVAL : 0;
}

static int bindir_ok(const char *dir)
{
    char p[PATH_MAX];
    if (path_join(p, sizeof p, dir, "initdb") != 0 || access(p, X_OK) != 0)
        return 0;
    if (path_join(p, sizeof p, dir, "postgres") != 0 || access(p, X_OK) != 0)
        return 0;
    return 1;
}

/* "15" > "9.6" > "9.5": major first, then minor. */
static int version_cmp(const char *a, const char *b)
{
    char *ea, *eb;
    long ma = strtol(a, &ea, 10), mb = strtol(b, &eb, 10);
    if (ma != mb)
        return ma < mb ? -1 : 1;
    long na = *ea == '.' ? strtol(ea + 1, NULL, 10) : 0;
    long nb = *eb == '.' ? strtol(eb + 1, NULL, 10) : 0;
    return na < nb ? -1 : (na > nb);
}

int cp_pgembed_find_bindir(char *out, size_t cap)
{
    if (!out || cap == 0)
        return WP_ERR_INVAL;
    const char *path = getenv("PATH");
    if (path) {
        const char *p = path;
        while (*p) {
            const char *e = strchr(p, ':');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            char dir[PATH_MAX];
            if (n > 0 && n < sizeof dir) {
                memcpy(dir, p, n);
                dir[n] = '\0';
                if (bindir_ok(dir)) {
                    if (strlen(dir) >= cap)
                        return WP_ERR_INVAL;
                    memcpy(out, dir, strlen(dir) + 1);
                    return 0;
                }
            }
            p += n;
            if (*p == ':')
                p++;
        }
    }
    DIR *d = opendir("/usr/lib/postgresql");
    if (!d)
        return WP_ERR_NOT_FOUND;
    char best[64] = "";
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] < '0' || de->d_name[0] > '9' || strlen(de->d_name) >= sizeof best)
            continue;
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "/usr/lib/postgresql/%s/bin", de->d_name);
        if (!bindir_ok(dir))
            continue;
        if (!best[0] || version_cmp(de->d_name, best) > 0)
            memcpy(best, de->d_name, strlen(de->d_name) + 1);
    }
    closedir(d);
    if (!best[0])
        return WP_ERR_NOT_FOUND;
    int n = snprintf(out, cap, "/usr/lib/postgresql/%s/bin", best);
    return (n < 0 || (size_t)n >= cap) ? WP_ERR_INVAL : 0;
}

/* Appends key='value' (libpq quoting) to a conninfo buffer. */
static int conninfo_add(char *out, size_t cap, const char *key, const char *val)
{
    size_t n = strlen(out);
    int w = snprintf(out + n, cap - n, "%s%s='", n ? " " : "", key);
    if (w < 0 || (size_t)w >= cap - n)
        return WP_ERR_INVAL;
    n += (size_t)w;
    for (const char *v = val; *v; v++) {
        if (n + 3 >= cap)
            return WP_ERR_INVAL;
        if (*v == '\'' || *v == '\\')
            out[n++] = '\\';
        out[n++] = *v;
    }
    if (n + 2 >= cap)
        return WP_ERR_INVAL;
    out[n++] = '\'';
    out[n] = '\0';
    return 0;
}

static uint64_t pg_now(const cp_pgembed *pg)
{
    return uv_now(pg->loop);
}

static void pg_emit(cp_pgembed *pg, int event, int err)
{
    if (pg->state != PG_STOPPING && pg->on_event)
        pg->on_event(pg, event, err, pg->ud);
}

/* ---------------------------------------------------------------- postmaster.pid */

/* Reads at most cap - 1 bytes of a small regular file (never a FIFO: O_NONBLOCK, fstat).
 * Returns the length (NUL-terminated), or -errno. */
static ssize_t file_read_small(const char *path, int flags, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | flags);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -EINVAL;
    }
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    return (ssize_t)n;
}

/*
 * Reads <data>/postmaster.pid: line 1 the postmaster's pid, line 2 its data
 * directory (copied into dir when it fits cap, else dir is ""; dir may be NULL).
 * Returns 0 with *pid > 1, WP_ERR_NOT_FOUND when there is no such file,
 * WP_ERR_MALFORMED when line 1 is no plausible pid (postgres judges those
 * itself), WP_ERR_IO when it cannot be read.
 */
static int pidfile_read(const char *data, pid_t *pid, char *dir, size_t cap)
{
    char p[PATH_MAX];
    char buf[PG_PIDFILE_MAX];
    if (dir && cap)
        dir[0] = '\0';
    if (path_join(p, sizeof p, data, "postmaster.pid") != 0)
        return WP_ERR_INVAL;
    ssize_t n = file_read_small(p, O_NOFOLLOW, buf, sizeof buf);
    if (n == -ENOENT)
        return WP_ERR_NOT_FOUND;
    if (n < 0)
        return WP_ERR_IO;
    size_t digits = strspn(buf, "0123456789");
    if (digits == 0 || digits > 9 || buf[digits] != '\n')
        return WP_ERR_MALFORMED;
    long v = strtol(buf, NULL, 10);
    if (v <= 1)
        return WP_ERR_MALFORMED;
    *pid = (pid_t)v;
    const char *l2 = buf + digits + 1;
    size_t len = strcspn(l2, "\n");
    if (dir && len > 0 && len < cap) {
        memcpy(dir, l2, len);
        dir[len] = '\0';
    }
    return 0;
}

/* 1 while pid exists and is not a zombie (an orphan that exited but is reaped late by
 * pid 1 still answers kill(pid, 0)). */
static int pid_alive(pid_t pid)
{
    if (kill(pid, 0) != 0 && errno != EPERM)
        return 0;
    char p[64];
    char buf[1024];
    snprintf(p, sizeof p, "/proc/%ld/stat", (long)pid);
    ssize_t n = file_read_small(p, 0, buf, sizeof buf);
    if (n <= 0)
        return n == -ENOENT ? 0 : 1;
    const char *rp = strrchr(buf, ')'); /* comm may hold spaces and parens */
    if (rp && rp[1] == ' ' && rp[2] == 'Z')
        return 0;
    return 1;
}

/* 1 when pid's argv[0] is a postgres (or postmaster) binary. */
static int pid_is_postgres(pid_t pid)
{
    char p[64];
    char buf[PATH_MAX];
    snprintf(p, sizeof p, "/proc/%ld/cmdline", (long)pid);
    ssize_t n = file_read_small(p, 0, buf, sizeof buf);
    if (n <= 0)
        return 0;                         /* gone, or a kernel thread / zombie */
    const char *base = strrchr(buf, '/'); /* argv[0] ends at the first NUL */
    base = base ? base + 1 : buf;
    return strncmp(base, "postgres", 8) == 0 || strncmp(base, "postmaster", 10) == 0;
}

/* 1 when pid is a postmaster of our data directory: line 2 of its pid file (dir, may be
 * "") or its working directory (the postmaster chdirs to its data directory) is ours. */
static int pid_is_our_postgres(const cp_pgembed *pg, pid_t pid, const char *dir)
{
    if (!pid_is_postgres(pid))
        return 0;
    char ours[PATH_MAX];
    char theirs[PATH_MAX];
    if (dir[0] && strcmp(dir, pg->data) == 0)
        return 1;
    if (!realpath(pg->data, ours))
        return 0;
    if (dir[0] && realpath(dir, theirs) && strcmp(theirs, ours) == 0)
        return 1;
    char p[64];
    snprintf(p, sizeof p, "/proc/%ld/cwd", (long)pid);
    ssize_t n = readlink(p, theirs, sizeof theirs - 1);
    if (n <= 0)
        return 0;
    theirs[n] = '\0';
    return strcmp(theirs, ours) == 0;
}

/* The pid of a live postmaster of our data directory that is not our child, or 0. */
static pid_t pg_stale_postmaster(const cp_pgembed *pg)
{
    pid_t pid = 0;
    char dir[PATH_MAX];
    if (pidfile_read(pg->data, &pid, dir, sizeof dir) != 0)
        return 0;
    if (pid == getpid() || pid == getppid() || !pid_alive(pid))
        return 0; /* stale file: postgres itself deals with it */
    if (!pid_is_our_postgres(pg, pid, dir)) {
        wp_log_info("postmaster.pid names a live process that is not a postgres of this data "
                    "directory; leaving it alone",
                    WP_LI("pid", pid), WP_LS("data", pg->data));
        return 0;
    }
    return pid;
}

/* 1 when postmaster.pid names our child, or cannot be read for another reason than its
 * absence (then the child's liveness alone decides). */
static int pg_pidfile_names_child(const cp_pgembed *pg)
{
    pid_t pid = 0;
    int rc = pidfile_read(pg->data, &pid, NULL, 0);
    if (rc == WP_ERR_NOT_FOUND || rc == WP_ERR_MALFORMED)
        return 0;
    return rc != 0 || pid == pg->proc.pid;
}

/* ---------------------------------------------------------------- child process */

static void pipe_flush_line(struct pg_pipe *p)
{
    if (p->len == 0)
        return;
    p->line[p->len] = '\0';
    wp_log_info("postgres output",
                WP_LS("proc", p->pg->child == CHILD_INITDB ? "initdb" : "postgres"),
                WP_LS("stream", p->stream), WP_LS("line", p->line));
    p->len = 0;
}

static void pipe_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct pg_pipe *p = h->data;
    (void)suggested;
    buf->base = p->rbuf;
    buf->len = sizeof p->rbuf;
}

static void child_maybe_finished(cp_pgembed *pg);

static void pipe_closed_cb(uv_handle_t *h)
{
    struct pg_pipe *p = h->data;
    cp_pgembed *pg = p->pg;
    pipe_flush_line(p);
    pg->child_handles--;
    child_maybe_finished(pg);
}

static void pipe_close(struct pg_pipe *p)
{
    if (!p->open)
        return;
    p->open = 0;
    uv_close((uv_handle_t *)&p->pipe, pipe_closed_cb);
}

static void pipe_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct pg_pipe *p = s->data;
    if (nread < 0) {
        pipe_close(p);
        return;
    }
    for (ssize_t i = 0; i < nread; i++) {
        char ch = buf->base[i];
        if (ch == '\n') {
            pipe_flush_line(p);
            continue;
        }
        if (p->len >= CP_PGEMBED_LINE_MAX)
            pipe_flush_line(p); /* over-long line: logged in pieces */
        p->line[p->len++] = ch;
    }
}

static void proc_closed_cb(uv_handle_t *h)
{
    cp_pgembed *pg = h->data;
    pg->child_handles--;
    child_maybe_finished(pg);
}

static void drain_timer_cb(uv_timer_t *t)
{
    cp_pgembed *pg = t->data;
    pipe_close(&pg->out);
    pipe_close(&pg->err);
}

static void proc_exit_cb(uv_process_t *proc, int64_t exit_status, int term_signal)
{
    cp_pgembed *pg = proc->data;
    pg->child_alive = 0;
    pg->exit_status = exit_status;
    pg->term_signal = term_signal;
    uv_close((uv_handle_t *)proc, proc_closed_cb);
    if (pg->out.open || pg->err.open)
        uv_timer_start(&pg->drain_timer, drain_timer_cb, PG_PIPE_DRAIN_MS, 0);
}

static void pg_fail(cp_pgembed *pg, int err)
{
    pg->state = PG_FAILED;
    pg_emit(pg, CP_PGEMBED_READY, err);
}

static void pg_schedule_restart(cp_pgembed *pg);

static void child_finished(cp_pgembed *pg)
{
    int kind = pg->child;
    int failerr = pg->child_fail;
    pg->child = CHILD_NONE;
    pg->child_fail = 0;
    uv_timer_stop(&pg->drain_timer);
    if (pg->state == PG_STOPPING) {
        pg_stop_step(pg);
        return;
    }
    if (kind == CHILD_INITDB) {
        if (pg->exit_status == 0 && pg->term_signal == 0) {
            wp_log_info("postgres cluster initialized", WP_LS("data", pg->data));
            pg_launch_postgres(pg);
        } else {
            wp_log_error("initdb failed", WP_LI("status", pg->exit_status),
                         WP_LI("signal", pg->term_signal));
            pg_fail(pg, WP_ERR_IO);
        }
        return;
    }
    /* postgres exited */
    uv_timer_stop(&pg->ready_timer);
    int was_running = pg->state == PG_RUNNING;
    if (!pg->ever_ready) {
        wp_log_error("postgres exited before it was ready", WP_LI("status", pg->exit_status),
                     WP_LI("signal", pg->term_signal));
        pg_fail(pg, failerr ? failerr : WP_ERR_IO);
        return;
    }
    wp_log_warn("postgres exited unexpectedly", WP_LI("status", pg->exit_status),
                WP_LI("signal", pg->term_signal));
    pg_schedule_restart(pg);
    if (was_running)
        pg_emit(pg, CP_PGEMBED_EXITED, WP_ERR_CLOSED);
}

static void child_maybe_finished(cp_pgembed *pg)
{
    if (pg->child != CHILD_NONE && !pg->child_alive && pg->child_handles == 0)
        child_finished(pg);
}

static int pipe_init(cp_pgembed *pg, struct pg_pipe *p, const char *stream)
{
    memset(&p->pipe, 0, sizeof p->pipe);
    p->pg = pg;
    p->stream = stream;
    p->len = 0;
    if (uv_pipe_init(pg->loop, &p->pipe, 0) != 0)
        return WP_ERR_IO;
    p->pipe.data = p;
    p->open = 1;
    return 0;
}

/*
 * Spawns argv as the child. child_finished() follows in every case, from the loop: a
 * spawn that fails is reported as a child that exited with status -1.
 */
static void child_spawn(cp_pgembed *pg, int kind, char **argv)
{
    pg->child = kind;
    pg->child_alive = 0;
    pg->child_handles = 0;
    pg->exit_status = -1;
    pg->term_signal = 0;
    pipe_init(pg, &pg->out, "stdout");
    pipe_init(pg, &pg->err, "stderr");
    pg->child_handles = pg->out.open + pg->err.open;
    if (!pg->out.open || !pg->err.open) {
        wp_log_error("cannot create pipes for the postgres child");
        pipe_close(&pg->out);
        pipe_close(&pg->err);
        return;
    }
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&pg->out.pipe;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&pg->err.pipe;
    uv_process_options_t o;
    memset(&o, 0, sizeof o);
    o.exit_cb = proc_exit_cb;
    o.file = argv[0];
    o.args = argv;
    o.cwd = pg->root;
    o.stdio = stdio;
    o.stdio_count = 3;
    if (pg->setid) {
        o.flags |= UV_PROCESS_SETUID | UV_PROCESS_SETGID;
        o.uid = pg->uid;
        o.gid = pg->gid;
    }
    pg->proc.data = pg;
    int rc = uv_spawn(pg->loop, &pg->proc, &o);
    pg->child_handles++;
    if (rc != 0) {
        wp_log_error("cannot start postgres child", WP_LS("file", argv[0]),
                     WP_LS("error", uv_strerror(rc)));
        /* uv_spawn failed: the process handle must still be closed */
        uv_close((uv_handle_t *)&pg->proc, proc_closed_cb);
        pipe_close(&pg->out);
        pipe_close(&pg->err);
        return;
    }
    pg->child_alive = 1;
    pg->exit_status = 0;
    uv_read_start((uv_stream_t *)&pg->out.pipe, pipe_alloc_cb, pipe_read_cb);
    uv_read_start((uv_stream_t *)&pg->err.pipe, pipe_alloc_cb, pipe_read_cb);
}

/* ---------------------------------------------------------------- readiness probe */

static void probe_timer_cb(uv_timer_t *t)
{
    pg_probe_start(t->data);
}

static void probe_closed_cb(void *ud)
{
    cp_pgembed *pg = ud;
    pg->probe = NULL;
    pg->probe_closing = 0;
    int outcome = pg->probe_outcome;
    pg->probe_outcome = PROBE_NONE;
    if (pg->state == PG_STOPPING) {
        pg_stop_step(pg);
        return;
    }
    if (pg->state != PG_STARTING)
        return;
    switch (outcome) {
    case PROBE_RETRY:
        uv_timer_start(&pg->probe_timer, probe_timer_cb, PG_PROBE_RETRY_MS, 0);
        break;
    case PROBE_READY: {
        if (!pg->child_alive || !pg_pidfile_names_child(pg)) {
            /* another server answered on our socket (one that holds the data directory
             * while ours fails on the lock file): never "ready"; the child decides */
            wp_log_debug("the server that answered is not our postgres child",
                         WP_LI("pid", pg->proc.pid), WP_LI("alive", pg->child_alive));
            if (pg->child_alive)
                uv_timer_start(&pg->probe_timer, probe_timer_cb, PG_PROBE_RETRY_MS, 0);
            break;
        }
        uv_timer_stop(&pg->ready_timer);
        pg->state = PG_RUNNING;
        pg->ready_at = pg_now(pg);
        int first = !pg->ever_ready;
        pg->ever_ready = 1;
        wp_log_info(first ? "postgres ready" : "postgres ready again", WP_LS("socket_dir", pg->run),
                    WP_LI("pid", pg->proc.pid));
        pg_emit(pg, first ? CP_PGEMBED_READY : CP_PGEMBED_RESTARTED, 0);
        break;
    }
    case PROBE_FAIL:
        /* the server answers but cannot create our database: stop it, report */
        pg->child_fail = pg->probe_err;
        if (pg->child_alive)
            uv_process_kill(&pg->proc, SIGINT);
        break;
    default:
        break;
    }
}

static void probe_end(cp_pgembed *pg, int outcome, int err)
{
    if (!pg->probe || pg->probe_closing)
        return;
    pg->probe_closing = 1;
    pg->probe_outcome = outcome;
    pg->probe_err = err;
    cp_db_close(pg->probe, probe_closed_cb, pg);
}

static void probe_create_cb(int err, PGresult *res, void *ud)
{
    cp_pgembed *pg = ud;
    if (err == 0 || strcmp(cp_db_sqlstate(res), "42P04") == 0) {
        wp_log_info("postgres database created", WP_LS("dbname", CP_PGEMBED_DBNAME));
        probe_end(pg, PROBE_READY, 0);
    } else if (err == WP_ERR_CLOSED || err == WP_ERR_TIMEOUT) {
        probe_end(pg, PROBE_RETRY, err);
    } else {
        wp_log_error("cannot create the wolfpack database", WP_LS("sqlstate", cp_db_sqlstate(res)));
        probe_end(pg, PROBE_FAIL, WP_ERR_IO);
    }
}

static void probe_check_cb(int err, PGresult *res, void *ud)
{
    cp_pgembed *pg = ud;
    if (err != 0) {
        probe_end(pg, PROBE_RETRY, err);
        return;
    }
    if (PQntuples(res) > 0) {
        probe_end(pg, PROBE_READY, 0);
        return;
    }
    /* identifiers cannot be parameters; the name is a compile-time constant */
    int rc =
        cp_db_query(pg->probe, "CREATE DATABASE " CP_PGEMBED_DBNAME, 0, NULL, probe_create_cb, pg);
    if (rc != 0)
        probe_end(pg, PROBE_RETRY, rc);
}

static void pg_probe_start(cp_pgembed *pg)
{
    if (pg->state != PG_STARTING || pg->probe || !pg->child_alive)
        return; /* a child that exited: child_finished() decides */
    int rc = cp_db_new(pg->loop, pg->probe_conninfo, 1, &pg->probe);
    if (rc != 0) {
        uv_timer_start(&pg->probe_timer, probe_timer_cb, PG_PROBE_RETRY_MS, 0);
        return;
    }
    cp_db_set_quiet(pg->probe, 1);
    cp_db_set_connect_timeout(pg->probe, 2000);
    cp_db_set_query_timeout(pg->probe, 10000);
    static const char *const params[] = {CP_PGEMBED_DBNAME};
    rc = cp_db_query(pg->probe, "SELECT 1 FROM pg_database WHERE datname = $1", 1, params,
                     probe_check_cb, pg);
    if (rc != 0)
        probe_end(pg, PROBE_RETRY, rc);
}

/* ---------------------------------------------------------------- server lifecycle */

static void ready_timer_cb(uv_timer_t *t)
{
    cp_pgembed *pg = t->data;
    if (pg->state != PG_STARTING)
        return;
    wp_log_error("postgres not ready in time, stopping it",
                 WP_LI("timeout_ms", pg->ready_timeout_ms));
    pg->child_fail = WP_ERR_TIMEOUT;
    probe_end(pg, PROBE_NONE, 0);
    uv_timer_stop(&pg->probe_timer);
    if (pg->child_alive)
        uv_process_kill(&pg->proc, SIGKILL);
}

static void pg_spawn_postgres(cp_pgembed *pg)
{
    char *argv[] = {pg->postgres,
                    "-D",
                    pg->data,
                    "-k",
                    pg->run,
                    "-c",
                    "listen_addresses=",
                    "-c",
                    "unix_socket_permissions=0700",
                    "-c",
                    "port=" PG_PORT,
                    NULL};
    pg->state = PG_STARTING;
    child_spawn(pg, CHILD_POSTGRES, argv);
    if (!pg->child_alive)
        return; /* child_finished reports the failure */
    wp_log_info("postgres started", WP_LI("pid", pg->proc.pid), WP_LS("data", pg->data));
    uv_timer_start(&pg->ready_timer, ready_timer_cb, pg->ready_timeout_ms, 0);
    uv_timer_start(&pg->probe_timer, probe_timer_cb, PG_PROBE_RETRY_MS, 0);
}

static void takeover_timer_cb(uv_timer_t *t)
{
    cp_pgembed *pg = t->data;
    pid_t pid = pg->stale_pid;
    if (pg->state != PG_TAKEOVER) {
        uv_timer_stop(t);
        return;
    }
    /* a pid reused by a non-postgres counts as gone: never signal it */
    int alive = !pg->stale_err && pid_alive(pid) && pid_is_postgres(pid);
    if (!alive && !pg->stale_err) {
        uv_timer_stop(t);
        wp_log_info("the previous postgres is gone", WP_LI("pid", pid));
        pg->stale_pid = 0;
        pg_spawn_postgres(pg);
        return;
    }
    if (!pg->stale_err && pg_now(pg) < pg->stale_deadline)
        return;
    if (!pg->stale_err && !pg->stale_killed) {
        wp_log_warn("the previous postgres did not stop in time, killing it", WP_LI("pid", pid));
        pg->stale_killed = 1;
        pg->stale_deadline = pg_now(pg) + PG_TAKEOVER_KILL_MS;
        kill(pid, SIGKILL); /* a failure shows as the process staying alive */
        return;
    }
    uv_timer_stop(t);
    wp_log_error("cannot stop the postgres left running by a previous wolfpackd: stop it by hand",
                 WP_LI("pid", pid), WP_LS("data", pg->data));
    pg->stale_pid = 0;
    if (pg->ever_ready)
        pg_schedule_restart(pg); /* tries the takeover again after the backoff */
    else
        pg_fail(pg, WP_ERR_IO);
}

/*
 * Spawns postgres, after stopping a postmaster that a previous wolfpackd left
 * running on our data directory (see the file comment). Every outcome is
 * reported from the loop, never inside this call.
 */
static void pg_launch_postgres(cp_pgembed *pg)
{
    pid_t pid = pg_stale_postmaster(pg);
    if (pid <= 0) {
        pg_spawn_postgres(pg);
        return;
    }
    wp_log_warn("a postgres from a previous wolfpackd is still running on this data directory: "
                "stopping it",
                WP_LI("pid", pid), WP_LS("data", pg->data));
    pg->state = PG_TAKEOVER;
    pg->stale_pid = pid;
    pg->stale_killed = 0;
    pg->stale_err = 0;
    pg->stale_deadline = pg_now(pg) + CP_PGEMBED_STOP_TIMEOUT_MS;
    if (kill(pid, SIGINT) != 0 && errno != ESRCH) { /* fast shutdown */
        wp_log_error("cannot signal the previous postgres", WP_LI("pid", pid),
                     WP_LS("error", strerror(errno)));
        pg->stale_err = 1;
    }
    uv_timer_start(&pg->timer, takeover_timer_cb, pg->stale_err ? 0 : PG_TAKEOVER_POLL_MS,
                   PG_TAKEOVER_POLL_MS);
}

static void restart_timer_cb(uv_timer_t *t)
{
    cp_pgembed *pg = t->data;
    if (pg->state == PG_BACKOFF && pg->child == CHILD_NONE)
        pg_launch_postgres(pg);
}

static void pg_schedule_restart(cp_pgembed *pg)
{
    if (pg->ready_at && pg_now(pg) - pg->ready_at > PG_UPTIME_RESET_MS)
        pg->backoff_ms = 0;
    pg->ready_at = 0;
    if (pg->backoff_ms == 0)
        pg->backoff_ms = pg->backoff_min_ms;
    else if (pg->backoff_ms < CP_PGEMBED_BACKOFF_MAX_MS / 2)
        pg->backoff_ms *= 2;
    else
        pg->backoff_ms = CP_PGEMBED_BACKOFF_MAX_MS;
    pg->state = PG_BACKOFF;
    wp_log_info("postgres restart scheduled", WP_LI("in_ms", pg->backoff_ms));
    uv_timer_start(&pg->timer, restart_timer_cb, pg->backoff_ms, 0);
}

static void pg_spawn_initdb(cp_pgembed *pg)
{
    char *argv[] = {pg->initdb,
                    "-D",
                    pg->data,
                    "-U",
                    CP_PGEMBED_USER,
                    "--auth-local=trust",
                    "--auth-host=reject",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    NULL};
    pg->state = PG_INITDB;
    wp_log_info("initializing postgres cluster", WP_LS("data", pg->data),
                WP_LS("bindir", pg->bindir));
    child_spawn(pg, CHILD_INITDB, argv);
}

/* ---------------------------------------------------------------- setup */

static int pg_pick_user(cp_pgembed *pg, const char *run_as)
{
    if (geteuid() != 0)
        return 0;
    const char *names[] = {run_as ? run_as : "wolfpack", run_as ? NULL : "postgres"};
    for (size_t i = 0; i < 2 && names[i]; i++) {
        struct passwd *pw = getpwnam(names[i]);
        if (pw && pw->pw_uid != 0) {
            pg->setid = 1;
            pg->uid = pw->pw_uid;
            pg->gid = pw->pw_gid;
            snprintf(pg->user_name, sizeof pg->user_name, "%s", names[i]);
            wp_log_info("running postgres as an unprivileged user", WP_LS("user", names[i]));
            return 0;
        }
    }
    wp_log_error("running as root and no unprivileged user for postgres: create the system user "
                 "'wolfpack' or install the postgresql package (user 'postgres')");
    return WP_ERR_CONFIG;
}

static int pg_mkdir_owned(cp_pgembed *pg, const char *dir)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        wp_log_error("cannot create directory", WP_LS("dir", dir), WP_LS("error", strerror(errno)));
        return WP_ERR_IO;
    }
    if (pg->setid && chown(dir, pg->uid, pg->gid) != 0) {
        wp_log_error("cannot chown directory", WP_LS("dir", dir), WP_LS("error", strerror(errno)));
        return WP_ERR_IO;
    }
    if (chmod(dir, 0700) != 0)
        return WP_ERR_IO;
    return 0;
}

/* Nonzero if the children's user may search (traverse) a directory with this stat. */
static int pg_may_search(const cp_pgembed *pg, const struct stat *st)
{
    if (st->st_uid == pg->uid)
        return (st->st_mode & S_IXUSR) != 0;
    if (st->st_gid == pg->gid)
        return (st->st_mode & S_IXGRP) != 0;
    return (st->st_mode & S_IXOTH) != 0;
}

/*
 * Root only: every parent of the state directory must be searchable by the
 * children's user (a state dir under /root or a 0700 temp dir is not), else
 * initdb fails later with a bare "Permission denied": say so plainly now.
 */
static int pg_parents_searchable(const cp_pgembed *pg, const char *state_dir)
{
    char path[PATH_MAX];
    struct stat st;
    if (!realpath(state_dir, path))
        return WP_ERR_IO;
    for (char *slash = strrchr(path, '/'); slash; slash = strrchr(path, '/')) {
        if (slash == path)
            slash[1] = '\0';
        else
            *slash = '\0';
        if (stat(path, &st) == 0 && !pg_may_search(pg, &st)) {
            wp_log_error("the embedded PostgreSQL runs as an unprivileged user that cannot reach "
                         "the state directory: allow it to search every parent directory "
                         "(chmod o+x), or use a state directory such as /var/lib/wolfpack",
                         WP_LS("user", pg->user_name), WP_LS("blocked_at", path),
                         WP_LS("state_dir", state_dir));
            return WP_ERR_CONFIG;
        }
        if (slash == path)
            break;
    }
    return 0;
}

/* Root only: make sure the children's user can traverse the state directory. */
static int pg_state_traversable(cp_pgembed *pg, const char *state_dir)
{
    struct stat st;
    if (!pg->setid)
        return 0;
    int rc = pg_parents_searchable(pg, state_dir);
    if (rc != 0)
        return rc;
    if (stat(state_dir, &st) != 0)
        return WP_ERR_IO;
    if (st.st_uid == pg->uid || (st.st_mode & S_IXOTH) ||
        (st.st_gid == pg->gid && (st.st_mode & S_IXGRP)))
        return 0;
    if (chown(state_dir, (uid_t)-1, pg->gid) != 0 ||
        chmod(state_dir, (st.st_mode & 07777) | S_IXGRP) != 0) {
        wp_log_error("cannot give the postgres user access to the state directory",
                     WP_LS("dir", state_dir), WP_LS("error", strerror(errno)));
        return WP_ERR_IO;
    }
    return 0;
}

/* 1 = cluster present, 0 = needs initdb, <0 = unusable. */
static int pg_data_state(const cp_pgembed *pg)
{
    char p[PATH_MAX];
    if (path_join(p, sizeof p, pg->data, "PG_VERSION") != 0)
        return WP_ERR_INVAL;
    if (access(p, F_OK) == 0)
        return 1;
    DIR *d = opendir(pg->data);
    if (!d)
        return errno == ENOENT ? 0 : WP_ERR_IO;
    int empty = 1;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            empty = 0;
            break;
        }
    }
    closedir(d);
    if (!empty) {
        wp_log_error("postgres data directory is not empty and holds no cluster; move it away",
                     WP_LS("data", pg->data));
        return WP_ERR_CONFIG;
    }
    return 0;
}

int cp_pgembed_start(uv_loop_t *loop, const cp_pgembed_opts *opts, cp_pgembed **out)
{
    if (!loop || !opts || !opts->state_dir || !opts->state_dir[0] || !out)
        return WP_ERR_INVAL;
    cp_pgembed *pg = calloc(1, sizeof *pg);
    if (!pg)
        return WP_ERR_NOMEM;
    pg->loop = loop;
    pg->on_event = opts->on_event;
    pg->ud = opts->ud;
    pg->ready_timeout_ms =
        opts->ready_timeout_ms ? opts->ready_timeout_ms : CP_PGEMBED_READY_TIMEOUT_MS;
    pg->backoff_min_ms = opts->backoff_min_ms ? opts->backoff_min_ms : CP_PGEMBED_BACKOFF_MIN_MS;
    int rc;
    if (opts->bindir) {
        rc = bindir_ok(opts->bindir) ? 0 : WP_ERR_NOT_FOUND;
        if (rc == 0 && strlen(opts->bindir) >= sizeof pg->bindir)
            rc = WP_ERR_INVAL;
        if (rc == 0)
            memcpy(pg->bindir, opts->bindir, strlen(opts->bindir) + 1);
    } else {
        rc = cp_pgembed_find_bindir(pg->bindir, sizeof pg->bindir);
    }
    if (rc == WP_ERR_NOT_FOUND)
        wp_log_error("PostgreSQL server binaries not found: apt-get install postgresql");
    if (rc == 0)
        rc = path_join(pg->initdb, sizeof pg->initdb, pg->bindir, "initdb");
    if (rc == 0)
        rc = path_join(pg->postgres, sizeof pg->postgres, pg->bindir, "postgres");
    if (rc == 0)
        rc = path_join(pg->root, sizeof pg->root, opts->state_dir, "postgres");
    if (rc == 0)
        rc = path_join(pg->data, sizeof pg->data, pg->root, "data");
    if (rc == 0)
        rc = path_join(pg->run, sizeof pg->run, pg->root, "run");
    if (rc == 0 && strlen(pg->run) + strlen("/.s.PGSQL." PG_PORT) > PG_SOCK_PATH_MAX) {
        wp_log_error("state directory path too long for a unix socket", WP_LS("dir", pg->run));
        rc = WP_ERR_CONFIG;
    }
    if (rc == 0)
        rc = conninfo_add(pg->conninfo, sizeof pg->conninfo, "host", pg->run);
    if (rc == 0)
        rc = conninfo_add(pg->conninfo, sizeof pg->conninfo, "port", PG_PORT);
    if (rc == 0) {
        memcpy(pg->probe_conninfo, pg->conninfo, sizeof pg->conninfo);
        rc = conninfo_add(pg->conninfo, sizeof pg->conninfo, "dbname", CP_PGEMBED_DBNAME);
    }
    if (rc == 0)
        rc = conninfo_add(pg->conninfo, sizeof pg->conninfo, "user", CP_PGEMBED_USER);
    if (rc == 0)
        rc = conninfo_add(pg->probe_conninfo, sizeof pg->probe_conninfo, "dbname", "postgres");
    if (rc == 0)
        rc = conninfo_add(pg->probe_conninfo, sizeof pg->probe_conninfo, "user", CP_PGEMBED_USER);
    if (rc == 0)
        rc = pg_pick_user(pg, opts->run_as);
    if (rc == 0)
        rc = pg_state_traversable(pg, opts->state_dir);
    if (rc == 0)
        rc = pg_mkdir_owned(pg, pg->root);
    if (rc == 0)
        rc = pg_mkdir_owned(pg, pg->run);
    int have = 0;
    if (rc == 0) {
        have = pg_data_state(pg);
        if (have < 0)
            rc = have;
    }
    if (rc == 0 && have && pg->setid && chown(pg->data, pg->uid, pg->gid) != 0)
        rc = WP_ERR_IO;
    if (rc != 0) {
        free(pg);
        return rc;
    }
    uv_timer_t *timers[] = {&pg->timer, &pg->ready_timer, &pg->probe_timer, &pg->drain_timer};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++) {
        uv_timer_init(loop, timers[i]);
        timers[i]->data = pg;
    }
    if (have)
        pg_launch_postgres(pg);
    else
        pg_spawn_initdb(pg);
    *out = pg;
    return 0;
}

/* ---------------------------------------------------------------- stop */

static void stop_kill_cb(uv_timer_t *t)
{
    cp_pgembed *pg = t->data;
    if (pg->child != CHILD_NONE && pg->child_alive) {
        wp_log_warn("postgres did not stop in time, killing it", WP_LI("pid", pg->proc.pid));
        uv_process_kill(&pg->proc, SIGKILL);
    }
}

static void stop_timer_closed_cb(uv_handle_t *h)
{
    cp_pgembed *pg = h->data;
    if (--pg->pending_closes > 0)
        return;
    cp_pgembed_stop_cb cb = pg->stop_cb;
    void *ud = pg->stop_ud;
    if (cb)
        cb(pg, ud);
    free(pg);
}

static void pg_stop_step(cp_pgembed *pg)
{
    if (pg->child != CHILD_NONE || pg->probe || pg->pending_closes)
        return;
    uv_timer_t *timers[] = {&pg->timer, &pg->ready_timer, &pg->probe_timer, &pg->drain_timer};
    pg->pending_closes = (int)(sizeof timers / sizeof timers[0]);
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++)
        uv_close((uv_handle_t *)timers[i], stop_timer_closed_cb);
}

int cp_pgembed_stop(cp_pgembed *pg, cp_pgembed_stop_cb cb, void *ud)
{
    if (!pg)
        return WP_ERR_INVAL;
    if (pg->state == PG_STOPPING)
        return WP_ERR_STATE;
    pg->state = PG_STOPPING;
    pg->stop_cb = cb;
    pg->stop_ud = ud;
    uv_timer_stop(&pg->ready_timer);
    uv_timer_stop(&pg->probe_timer);
    uv_timer_stop(&pg->timer);
    probe_end(pg, PROBE_NONE, 0);
    if (pg->child != CHILD_NONE && pg->child_alive) {
        wp_log_info("stopping postgres", WP_LI("pid", pg->proc.pid));
        uv_process_kill(&pg->proc, SIGINT); /* fast shutdown (initdb cleans up on it) */
        uv_timer_start(&pg->timer, stop_kill_cb, CP_PGEMBED_STOP_TIMEOUT_MS, 0);
    }
    /* Finishing is always asynchronous: the timers close from the loop even when nothing
     * runs, so cb never runs inside this call. */
    pg_stop_step(pg);
    return 0;
}

const char *cp_pgembed_conninfo(const cp_pgembed *pg)
{
    return pg ? pg->conninfo : "";
}

int cp_pgembed_ready(const cp_pgembed *pg)
{
    return pg && pg->state == PG_RUNNING;
}

pid_t cp_pgembed_pid(const cp_pgembed *pg)
{
    return (pg && pg->child != CHILD_NONE && pg->child_alive) ? pg->proc.pid : 0;
}

const char *cp_pgembed_bindir(const cp_pgembed *pg)
{
    return pg ? pg->bindir : "";
}
