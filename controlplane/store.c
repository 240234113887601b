/*
 * store.c — the database lifecycle of wolfpackd: embedded or external
 * PostgreSQL, migrations, first-run bootstrap, readiness (see store.h).
 */
#include "store.h"

#include <string.h>

#include "bootstrap.h"
#include "err.h"
#include "log.h"
#include "migrate.h"

#define CP_STORE_RETRY_MIN_MS 500
#define CP_STORE_RETRY_MAX_MS 15000

static void cp_store_migrate(cp_store *st);

static void cp_store_fail(cp_store *st, int err)
{
    if (st->failed || st->stopping)
        return;
    st->failed = 1;
    if (st->on_ready)
        st->on_ready(st, err, st->ud);
}

static void cp_store_retry_cb(uv_timer_t *t)
{
    cp_store *st = t->data;
    if (!st->stopping)
        cp_store_migrate(st);
}

/* The database is not usable yet (unreachable, lock timeout): try again with backoff. */
static void cp_store_retry_later(cp_store *st, int err)
{
    if (st->stopping)
        return;
    st->retry_ms = st->retry_ms ? st->retry_ms * 2 : CP_STORE_RETRY_MIN_MS;
    if (st->retry_ms > CP_STORE_RETRY_MAX_MS)
        st->retry_ms = CP_STORE_RETRY_MAX_MS;
    wp_log_warn("database not ready, retrying", WP_LS("db", cp_db_describe(st->db)),
                WP_LE("err", err), WP_LI("retry_ms", st->retry_ms));
    uv_timer_start(&st->retry, cp_store_retry_cb, st->retry_ms, 0);
}

static void cp_store_bootstrapped(int err, int minted, void *ud)
{
    cp_store *st = ud;
    if (st->stopping)
        return;
    if (err != 0) {
        cp_store_retry_later(st, err);
        return;
    }
    (void)minted;
    st->bootstrapped = 1;
    st->retry_ms = 0;
    wp_log_info("database ready", WP_LS("db", cp_db_describe(st->db)));
    if (st->on_ready)
        st->on_ready(st, 0, st->ud);
}

static void cp_store_migrated(int err, int applied, void *ud)
{
    cp_store *st = ud;
    if (st->stopping)
        return;
    if (err == WP_ERR_UNSUPPORTED) {
        wp_log_error("the database schema is newer than this wolfpackd: upgrade wolfpackd",
                     WP_LI("known_version", cp_migrate_latest()));
        cp_store_fail(st, err);
        return;
    }
    if (err == WP_ERR_IO) {
        wp_log_error("a migration failed (rolled back)", WP_LI("applied", applied));
        cp_store_fail(st, err);
        return;
    }
    if (err != 0) {
        cp_store_retry_later(st, err);
        return;
    }
    st->migrated = 1;
    wp_log_info("schema up to date", WP_LI("version", cp_migrate_latest()),
                WP_LI("applied", applied));
    if (st->mode == CP_STORE_MIGRATE) {
        if (st->on_ready)
            st->on_ready(st, 0, st->ud);
        return;
    }
    int rc = cp_bootstrap_run(st->db, st->cfg->state_dir, cp_store_bootstrapped, st);
    if (rc != 0) {
        cp_store_retry_later(st, rc);
        return;
    }
}

static void cp_store_migrate(cp_store *st)
{
    if (st->migrated) {
        /* migrations done earlier; only the bootstrap needs a retry */
        int rc = cp_bootstrap_run(st->db, st->cfg->state_dir, cp_store_bootstrapped, st);
        if (rc != 0)
            cp_store_retry_later(st, rc);
        else
            return;
    }
    int rc = cp_migrate_run(st->db, cp_store_migrated, st);
    if (rc != 0) {
        cp_store_retry_later(st, rc);
        return;
    }
}

static int cp_store_open_pool(cp_store *st, const char *conninfo, char *err, size_t cap)
{
    int rc = cp_db_new(st->loop, conninfo, CP_DB_POOL_DEFAULT, &st->db);
    if (rc != 0) {
        /* Never echo the connection string: it may hold a password. */
        snprintf(err, cap, "invalid database URL (%s)", wp_strerror(rc));
        return rc;
    }
    wp_log_info("database", WP_LS("db", cp_db_describe(st->db)),
                WP_LS("mode", st->pg ? "embedded" : "external"));
    cp_store_migrate(st);
    return 0;
}

static void cp_store_pg_event(cp_pgembed *pg, int event, int err, void *ud)
{
    cp_store *st = ud;
    char msg[256];
    if (st->stopping)
        return;
    switch (event) {
    case CP_PGEMBED_READY:
        if (err != 0) {
            wp_log_error("embedded PostgreSQL did not start", WP_LE("err", err));
            cp_store_fail(st, err);
            return;
        }
        if (cp_store_open_pool(st, cp_pgembed_conninfo(pg), msg, sizeof(msg)) != 0) {
            wp_log_error("cannot open the database pool", WP_LS("reason", msg));
            cp_store_fail(st, WP_ERR_INTERNAL);
        }
        return;
    case CP_PGEMBED_EXITED:
        wp_log_error("embedded PostgreSQL exited; restarting it");
        return;
    case CP_PGEMBED_RESTARTED:
        wp_log_info("embedded PostgreSQL is back");
        return;
    default:
        return;
    }
}

int cp_store_start(cp_store *st, uv_loop_t *loop, const cp_config *cfg, int mode,
                   cp_store_ready_cb on_ready, void *ud, char *err, size_t cap)
{
    memset(st, 0, sizeof(*st));
    st->loop = loop;
    st->cfg = cfg;
    st->mode = mode;
    st->on_ready = on_ready;
    st->ud = ud;
    uv_timer_init(loop, &st->retry);
    st->retry.data = st;

    if (cfg->database_url)
        return cp_store_open_pool(st, cfg->database_url, err, cap);

    cp_pgembed_opts o;
    memset(&o, 0, sizeof(o));
    o.state_dir = cfg->state_dir;
    o.on_event = cp_store_pg_event;
    o.ud = st;
    int rc = cp_pgembed_start(loop, &o, &st->pg);
    if (rc != 0) {
        if (rc == WP_ERR_NOT_FOUND)
            snprintf(err, cap,
                     "PostgreSQL server binaries not found: apt-get install postgresql, "
                     "or pass --database-url");
        else
            snprintf(err, cap, "cannot start the embedded PostgreSQL in %s/postgres: %s",
                     cfg->state_dir, wp_strerror(rc));
        st->pg = NULL;
        return rc;
    }
    wp_log_info("starting embedded PostgreSQL", WP_LS("dir", cfg->state_dir));
    return 0;
}

int cp_store_ready(const cp_store *st)
{
    if (!st->db || !st->migrated || st->failed)
        return 0;
    if (st->mode == CP_STORE_SERVE && !st->bootstrapped)
        return 0;
    return cp_db_ready(st->db);
}

cp_db *cp_store_db(const cp_store *st)
{
    return st->db;
}

static void cp_store_retry_closed(uv_handle_t *h)
{
    cp_store *st = h->data;
    if (st->on_stop)
        st->on_stop(st, st->stop_ud);
}

static void cp_store_pg_stopped(cp_pgembed *pg, void *ud)
{
    (void)pg;
    cp_store *st = ud;
    st->pg = NULL;
    uv_close((uv_handle_t *)&st->retry, cp_store_retry_closed);
}

static void cp_store_db_closed(void *ud)
{
    cp_store *st = ud;
    st->db = NULL;
    if (st->pg) {
        if (cp_pgembed_stop(st->pg, cp_store_pg_stopped, st) == 0)
            return;
    }
    uv_close((uv_handle_t *)&st->retry, cp_store_retry_closed);
}

void cp_store_stop(cp_store *st, cp_store_stop_cb cb, void *ud)
{
    st->stopping = 1;
    st->on_stop = cb;
    st->stop_ud = ud;
    uv_timer_stop(&st->retry);
    if (st->db) {
        if (cp_db_close(st->db, cp_store_db_closed, st) == 0)
            return;
    }
    cp_store_db_closed(st);
}
