/*
 * pgembed.h — a private PostgreSQL cluster run as a supervised child of the loop.
 *
 * With no --database-url, wolfpackd keeps its state in a cluster under
 * <state-dir>/postgres: data/ (PGDATA) and run/ (the unix socket directory).
 * cp_pgembed_start() finds the server binaries (PATH, then the highest
 * /usr/lib/postgresql/<major>/bin), runs initdb once (uv_spawn; the loop keeps
 * running), starts `postgres` listening on the unix socket only
 * (listen_addresses='', socket mode 0700), waits until it accepts connections,
 * creates the database `wolfpack` if needed, and reports READY. If the server
 * later exits on its own, it is restarted with backoff (1 s doubling to 30 s).
 * cp_pgembed_stop() asks for a fast shutdown (SIGINT), escalates to SIGKILL
 * after 10 s, and calls back once every handle is closed.
 *
 * Authentication: initdb -A trust for local (unix socket) connections and
 * reject for TCP. That is safe because the socket lives in a 0700 directory
 * owned by the server's OS user and the socket itself is 0700: only that user
 * and root can connect. There is no TCP listener at all.
 *
 * Root: initdb and postgres refuse to run as root, so when wolfpackd is root
 * the children run as the system user `wolfpack` if it exists, else `postgres`
 * (created by Debian's postgresql package); the postgres directories are
 * chowned to it, and the state directory gets group-execute for that user's
 * group when the user could not otherwise traverse it. Not root: the children
 * run as the current user.
 *
 * Output: the children's stdout/stderr are read through pipes and logged at
 * info, one log line per output line (lines cut at CP_PGEMBED_LINE_MAX).
 *
 * A stale postmaster.pid left by a crash is never deleted by us: postgres
 * itself ignores it when the process it names is gone. A postmaster of this
 * data directory left running by a previous wolfpackd (killed with SIGKILL)
 * is stopped (SIGINT, SIGKILL after 10 s) before ours starts.
 *
 * cp_pgembed_start() does a few local filesystem calls (stat/mkdir/chown,
 * binary lookup) synchronously: call it at startup.
 */
#ifndef CP_PGEMBED_H
#define CP_PGEMBED_H

#include <sys/types.h>

#include <uv.h>

#define CP_PGEMBED_DBNAME           "wolfpack"
#define CP_PGEMBED_USER             "wolfpack"
#define CP_PGEMBED_LINE_MAX         1024
#define CP_PGEMBED_READY_TIMEOUT_MS 30000
#define CP_PGEMBED_STOP_TIMEOUT_MS  10000
#define CP_PGEMBED_BACKOFF_MIN_MS   1000
#define CP_PGEMBED_BACKOFF_MAX_MS   30000

typedef struct cp_pgembed cp_pgembed;

enum cp_pgembed_event {
    /* First start finished: err 0 = accepting connections, database created;
     * err < 0 = gave up (WP_ERR_NOT_FOUND binaries missing, WP_ERR_IO initdb or
     * postgres failed, WP_ERR_TIMEOUT not ready in time). After a failure
     * nothing more happens until cp_pgembed_stop(). */
    CP_PGEMBED_READY = 1,
    /* The server exited on its own (err WP_ERR_CLOSED); a restart is scheduled. */
    CP_PGEMBED_EXITED = 2,
    /* The server is accepting connections again after a restart (err 0). */
    CP_PGEMBED_RESTARTED = 3
};

typedef void (*cp_pgembed_event_cb)(cp_pgembed *pg, int event, int err, void *ud);
typedef void (*cp_pgembed_stop_cb)(cp_pgembed *pg, void *ud);

typedef struct cp_pgembed_opts {
    const char *state_dir; /* required; must exist */
    const char *bindir;    /* server binaries directory; NULL = search PATH, /usr/lib/postgresql */
    const char *run_as;    /* user for the children when root; NULL = wolfpack, else postgres */
    unsigned ready_timeout_ms;    /* 0 = CP_PGEMBED_READY_TIMEOUT_MS */
    unsigned backoff_min_ms;      /* 0 = CP_PGEMBED_BACKOFF_MIN_MS */
    cp_pgembed_event_cb on_event; /* may be NULL */
    void *ud;
} cp_pgembed_opts;

/*
 * Finds the binaries, prepares the directories and starts initdb (first run)
 * or postgres; progress is reported through opts->on_event from the loop.
 * Returns 0 with *out set, or (no callback, nothing running):
 *   WP_ERR_INVAL      NULL argument / no state_dir / path too long
 *   WP_ERR_NOT_FOUND  no server binaries ("PostgreSQL server binaries not found:
 *                     apt-get install postgresql" is logged)
 *   WP_ERR_CONFIG     running as root and no unprivileged user to run them as;
 *                     or data/ exists, is not empty and holds no cluster
 *   WP_ERR_IO         a directory could not be created / chowned
 *   WP_ERR_NOMEM
 */
int cp_pgembed_start(uv_loop_t *loop, const cp_pgembed_opts *opts, cp_pgembed **out);

/*
 * Stops the server (SIGINT, SIGKILL after CP_PGEMBED_STOP_TIMEOUT_MS) or the
 * running initdb, closes every handle, then calls cb (may be NULL); pg is freed
 * right after cb returns. No on_event call is made after this. Returns 0, or
 * WP_ERR_STATE when already stopping (cb not called).
 */
int cp_pgembed_stop(cp_pgembed *pg, cp_pgembed_stop_cb cb, void *ud);

/* libpq connection string: "host=<state>/postgres/run port=5432 dbname=wolfpack user=wolfpack".
 * Never NULL; valid until the stop callback. */
const char *cp_pgembed_conninfo(const cp_pgembed *pg);
/* Nonzero while the server is up and accepting connections. */
int cp_pgembed_ready(const cp_pgembed *pg);
/* Pid of the running postmaster (or initdb), 0 if none. */
pid_t cp_pgembed_pid(const cp_pgembed *pg);
/* Directory the server binaries were taken from. Never NULL. */
const char *cp_pgembed_bindir(const cp_pgembed *pg);

/*
 * Looks for the PostgreSQL server binaries (initdb and postgres, executable):
 * every PATH entry, then the highest-numbered /usr/lib/postgresql/<N>/bin.
 * Writes the directory into out (cap bytes). Returns 0, WP_ERR_NOT_FOUND or
 * WP_ERR_INVAL (cap too small).
 */
int cp_pgembed_find_bindir(char *out, size_t cap);

#endif
