/*
 * migrate.c — applies the compiled-in migrations under an advisory lock (see migrate.h).
 *
 * A run is a chain of callbacks on one reserved session connection:
 * lock -> create schema_migrations -> read applied versions -> for each
 * missing migration: BEGIN, its script, INSERT INTO schema_migrations, COMMIT
 * -> end the session (which rolls back anything open and releases the lock).
 * Every failure goes to mig_finish(), which ends the session and reports.
 */
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "migrate.h"

typedef struct mig_run {
    cp_db *db;
    cp_db_tx *s;
    const cp_migration *list;
    size_t n;
    size_t i;
    int applied;
    int err;
    int *have; /* versions already applied (sorted ascending, from the table) */
    size_t nhave;
    cp_migrate_cb cb;
    void *ud;
} mig_run;

static void mig_next(mig_run *m);

int cp_migrate_latest(void)
{
    return cp_migrations_count ? cp_migrations[cp_migrations_count - 1].version : 0;
}

static void mig_free(mig_run *m)
{
    free(m->have);
    free(m);
}

static void mig_done_cb(int err, void *ud)
{
    mig_run *m = ud;
    (void)err; /* ending the session fails only when the connection is gone: lock released */
    m->cb(m->err, m->applied, m->ud);
    mig_free(m);
}

static void mig_finish(mig_run *m, int err)
{
    m->err = err;
    if (err)
        wp_log_error("database migration failed", WP_LE("err", err), WP_LI("applied", m->applied));
    else if (m->applied)
        wp_log_info("database migrations applied", WP_LI("count", m->applied),
                    WP_LI("version", m->list[m->n - 1].version));
    cp_db_tx *s = m->s;
    m->s = NULL;
    if (s && cp_db_session_end(s, mig_done_cb, m) == 0)
        return;
    mig_done_cb(0, m);
}

/* The server's primary message ("division by zero"), or "". */
static const char *mig_errtext(const PGresult *res)
{
    const char *m = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    return m ? m : "";
}

static void log_sql_error(const char *msg, int version, PGresult *res)
{
    wp_log_error(msg, WP_LI("version", version), WP_LS("sqlstate", cp_db_sqlstate(res)),
                 WP_LS("detail", mig_errtext(res)));
}

static void mig_commit_cb(int err, PGresult *res, void *ud)
{
    mig_run *m = ud;
    const cp_migration *mg = &m->list[m->i];
    if (err) {
        log_sql_error("migration commit failed", mg->version, res);
        mig_finish(m, err);
        return;
    }
    if (strcmp(PQcmdStatus(res), "ROLLBACK") == 0) {
        mig_finish(m, WP_ERR_IO);
        return;
    }
    wp_log_info("database migration applied", WP_LI("version", mg->version),
                WP_LS("name", mg->name));
    m->applied++;
    m->i++;
    mig_next(m);
}

static void mig_record_cb(int err, PGresult *res, void *ud)
{
    mig_run *m = ud;
    if (err) {
        log_sql_error("cannot record migration", m->list[m->i].version, res);
        mig_finish(m, err);
        return;
    }
    int rc = cp_db_tx_query(m->s, "COMMIT", 0, NULL, mig_commit_cb, m);
    if (rc)
        mig_finish(m, rc);
}

static void mig_script_cb(int err, PGresult *res, void *ud)
{
    mig_run *m = ud;
    const cp_migration *mg = &m->list[m->i];
    if (err) {
        log_sql_error("migration failed", mg->version, res);
        mig_finish(m, err == WP_ERR_CLOSED || err == WP_ERR_TIMEOUT ? err : WP_ERR_IO);
        return;
    }
    char ver[16];
    snprintf(ver, sizeof ver, "%d", mg->version);
    const char *params[] = {ver, mg->name};
    int rc = cp_db_tx_query(m->s, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                            2, params, mig_record_cb, m);
    if (rc)
        mig_finish(m, rc);
}

static void mig_begin_cb(int err, PGresult *res, void *ud)
{
    mig_run *m = ud;
    (void)res;
    if (err) {
        mig_finish(m, err);
        return;
    }
    wp_log_info("applying database migration", WP_LI("version", m->list[m->i].version),
                WP_LS("name", m->list[m->i].name));
    int rc = cp_db_tx_exec_script(m->s, m->list[m->i].sql, mig_script_cb, m);
    if (rc)
        mig_finish(m, rc);
}

static int mig_have(const mig_run *m, int version)
{
    for (size_t j = 0; j < m->nhave; j++)
        if (m->have[j] == version)
            return 1;
    return 0;
}

static void mig_next(mig_run *m)
{
    while (m->i < m->n && mig_have(m, m->list[m->i].version))
        m->i++;
    if (m->i >= m->n) {
        mig_finish(m, 0);
        return;
    }
    int rc = cp_db_tx_query(m->s, "BEGIN", 0, NULL, mig_begin_cb, m);
    if (rc)
        mig_finish(m, rc);
}

static void mig_versions_cb(int err, PGresult *res, void *ud)
{
    mig_run *m = ud;
    if (err) {
        log_sql_error("cannot read schema_migrations", 0, res);
        mig_finish(m, err);
        return;
    }
    int rows = PQntuples(res);
    if (rows > CP_MIGRATE_MAX_VERSIONS) {
        mig_finish(m, WP_ERR_LIMIT);
        return;
    }
    m->have = calloc((size_t)rows + 1, sizeof(int));
    if (!m->have) {
        mig_finish(m, WP_ERR_NOMEM);
        return;
    }
    int newest = 0;
    for (int r = 0; r < rows; r++) {
        int v = atoi(PQgetvalue(res, r, 0));
        m->have[m->nhave++] = v;
        if (v > newest)
            newest = v;
    }
    int known = m->list[m->n - 1].version;
    if (newest > known) {
        wp_log_error("database schema is newer than this wolfpackd: upgrade wolfpackd",
                     WP_LI("database_version", newest), WP_LI("binary_version", known));
        mig_finish(m, WP_ERR_UNSUPPORTED);
        return;
    }
    mig_next(m);
}

static void mig_table_cb(int err, PGresult *res, void *ud)
{
    mig_run *m = ud;
    if (err) {
        log_sql_error("cannot create schema_migrations", 0, res);
        mig_finish(m, err);
        return;
    }
    int rc = cp_db_tx_query(m->s, "SELECT version FROM schema_migrations ORDER BY version", 0, NULL,
                            mig_versions_cb, m);
    if (rc)
        mig_finish(m, rc);
}

static void mig_lock_cb(int err, PGresult *res, void *ud)
{
    mig_run *m = ud;
    if (err) {
        log_sql_error("cannot take the migration lock", 0, res);
        mig_finish(m, err);
        return;
    }
    int rc = cp_db_tx_query(m->s,
                            "CREATE TABLE IF NOT EXISTS schema_migrations ("
                            " version integer PRIMARY KEY,"
                            " name text NOT NULL,"
                            " applied_at timestamptz NOT NULL DEFAULT now())",
                            0, NULL, mig_table_cb, m);
    if (rc)
        mig_finish(m, rc);
}

static void mig_session_cb(int err, cp_db_tx *s, void *ud)
{
    mig_run *m = ud;
    if (err) {
        mig_finish(m, err);
        return;
    }
    m->s = s;
    cp_db_tx_set_timeout(s, CP_MIGRATE_TIMEOUT_MS);
    static const char *const params[] = {CP_MIGRATE_LOCK_KEY};
    int rc = cp_db_tx_query(s, "SELECT pg_advisory_lock($1::bigint)", 1, params, mig_lock_cb, m);
    if (rc)
        mig_finish(m, rc);
}

int cp_migrate_run_list(cp_db *db, const cp_migration *list, size_t n, cp_migrate_cb cb, void *ud)
{
    if (!db || !list || n == 0 || !cb)
        return WP_ERR_INVAL;
    for (size_t i = 0; i < n; i++) {
        if (list[i].version <= 0 || !list[i].name || !list[i].sql ||
            (i > 0 && list[i].version <= list[i - 1].version))
            return WP_ERR_INVAL;
    }
    mig_run *m = calloc(1, sizeof *m);
    if (!m)
        return WP_ERR_NOMEM;
    m->db = db;
    m->list = list;
    m->n = n;
    m->cb = cb;
    m->ud = ud;
    int rc = cp_db_session_begin(db, mig_session_cb, m);
    if (rc) {
        free(m);
        return rc;
    }
    return 0;
}

int cp_migrate_run(cp_db *db, cp_migrate_cb cb, void *ud)
{
    return cp_migrate_run_list(db, cp_migrations, cp_migrations_count, cb, ud);
}

typedef struct mig_status {
    cp_migrate_version_cb cb;
    void *ud;
} mig_status;

static void mig_status_cb(int err, PGresult *res, void *ud)
{
    mig_status *st = ud;
    int version = 0;
    if (err == 0 && PQntuples(res) == 1)
        version = atoi(PQgetvalue(res, 0, 0));
    else if (err == WP_ERR_IO && strcmp(cp_db_sqlstate(res), "42P01") == 0)
        err = 0; /* undefined_table: nothing applied yet */
    st->cb(err, version, st->ud);
    free(st);
}

int cp_migrate_status(cp_db *db, cp_migrate_version_cb cb, void *ud)
{
    if (!db || !cb)
        return WP_ERR_INVAL;
    mig_status *st = calloc(1, sizeof *st);
    if (!st)
        return WP_ERR_NOMEM;
    st->cb = cb;
    st->ud = ud;
    int rc = cp_db_query(db, "SELECT coalesce(max(version), 0) FROM schema_migrations", 0, NULL,
                         mig_status_cb, st);
    if (rc)
        free(st);
    return rc;
}
