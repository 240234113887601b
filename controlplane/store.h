/*
 * store.h — wolfpackd's durable state: where the PostgreSQL database comes from
 * and when it is usable.
 *
 * With --database-url the pool connects to that server; without, a private
 * cluster is started under <state-dir>/postgres (pgembed.h). Either way the
 * store then applies the compiled-in migrations (under an advisory lock), runs
 * the first-run bootstrap (bootstrap.h) and reports ready. Until then, and
 * whenever the pool is down, cp_store_ready() is false: /readyz answers 503
 * and the API answers 503 database_unavailable. A database that cannot be
 * reached is retried with backoff; only unrecoverable errors (no PostgreSQL
 * binaries, a schema newer than this binary) are reported as fatal.
 */
#ifndef CP_STORE_H
#define CP_STORE_H

#include <uv.h>

#include "config.h"
#include "db.h"
#include "pgembed.h"

typedef struct cp_store cp_store;
/* err 0: ready for the first time. err < 0: gave up (fatal; the owner should stop). */
typedef void (*cp_store_ready_cb)(cp_store *st, int err, void *ud);
typedef void (*cp_store_stop_cb)(cp_store *st, void *ud);

enum cp_store_mode {
    CP_STORE_SERVE = 0,  /* migrations, bootstrap, stay up */
    CP_STORE_MIGRATE = 1 /* migrations only (wolfpackd migrate) */
};

struct cp_store {
    uv_loop_t *loop;
    const cp_config *cfg;
    int mode;
    cp_pgembed *pg;
    cp_db *db;
    uv_timer_t retry; /* migration retry while the database is unreachable */
    unsigned retry_ms;
    int migrated;
    int bootstrapped;
    int failed;
    int stopping;
    cp_store_ready_cb on_ready;
    void *ud;
    cp_store_stop_cb on_stop;
    void *stop_ud;
};

/*
 * Starts the store. Returns 0 (on_ready called later exactly once, unless
 * stopped first) or a WP_ERR_* with a one-line reason in err (nothing started,
 * but cp_store_stop() must still be called to close the retry timer).
 */
int cp_store_start(cp_store *st, uv_loop_t *loop, const cp_config *cfg, int mode,
                   cp_store_ready_cb on_ready, void *ud, char *err, size_t cap);

/* Nonzero when the database is up, migrated and bootstrapped. */
int cp_store_ready(const cp_store *st);

/* The pool (NULL before the database is known). Queries fail fast while it is down. */
cp_db *cp_store_db(const cp_store *st);

/* Closes the pool and stops the embedded server; cb after every handle closed. */
void cp_store_stop(cp_store *st, cp_store_stop_cb cb, void *ud);

#endif
