/*
 * migrate.h — numbered schema migrations compiled into wolfpackd.
 *
 * The migrations (migrations.c) are an array of {version, name, sql} with
 * strictly increasing versions. cp_migrate_run() reserves one pool connection
 * (a cp_db session), takes the session-level advisory lock
 * pg_advisory_lock(CP_MIGRATE_LOCK_KEY) on it for the whole run — so replicas
 * starting at once apply each migration exactly once, one after the other —
 * creates `schema_migrations (version int primary key, name text, applied_at
 * timestamptz default now())` if needed, and applies every migration whose
 * version is not recorded there, each in its own transaction together with its
 * schema_migrations row. A database that records a version newer than the
 * binary knows is refused (WP_ERR_UNSUPPORTED, logged with both versions): an
 * older binary must not run against a newer schema. Ending the session
 * releases the lock (and so does a lost connection).
 */
#ifndef CP_MIGRATE_H
#define CP_MIGRATE_H

#include <stddef.h>

#include "db.h"

/* Advisory lock key: the bytes "wolfpack" as a big-endian int64. */
#define CP_MIGRATE_LOCK_KEY "8606216600156201835"
/* Deadline for each migration statement and for waiting on the lock, ms. */
#define CP_MIGRATE_TIMEOUT_MS 300000
/* Most rows read back from schema_migrations. */
#define CP_MIGRATE_MAX_VERSIONS 10000

typedef struct cp_migration {
    int version;      /* > 0, strictly increasing in a list */
    const char *name; /* short, for schema_migrations.name and logs */
    const char *sql;  /* one or more statements; static storage */
} cp_migration;

/* The migrations compiled into this binary (migrations.c). */
extern const cp_migration cp_migrations[];
extern const size_t cp_migrations_count;

/* Highest version in cp_migrations. */
int cp_migrate_latest(void);

/* err 0: applied = how many migrations this run applied (0 if up to date). err < 0:
 * WP_ERR_UNSUPPORTED (database newer than the binary), WP_ERR_IO (a statement failed;
 * that migration was rolled back), WP_ERR_CLOSED / WP_ERR_TIMEOUT (connection lost / lock or
 * statement deadline). applied then counts the migrations committed before the failure. */
typedef void (*cp_migrate_cb)(int err, int applied, void *ud);

/*
 * Applies cp_migrations on db. cb runs exactly once, later. Returns 0, or (cb never
 * called) WP_ERR_INVAL (NULL db/cb), WP_ERR_NOMEM, or what cp_db_session_begin()
 * returns (WP_ERR_CLOSED database unavailable, WP_ERR_LIMIT).
 */
int cp_migrate_run(cp_db *db, cp_migrate_cb cb, void *ud);

/* Same with an explicit list (tests). WP_ERR_INVAL also for an empty list, versions not
 * > 0 and strictly increasing, or a NULL name/sql. The list must outlive cb. */
int cp_migrate_run_list(cp_db *db, const cp_migration *list, size_t n, cp_migrate_cb cb, void *ud);

/* err 0 and version = highest applied version (0: none / no schema_migrations table). */
typedef void (*cp_migrate_version_cb)(int err, int version, void *ud);

/* Reads the schema version (for /readyz: ready when it equals cp_migrate_latest()).
 * Same return contract as cp_db_query(). */
int cp_migrate_status(cp_db *db, cp_migrate_version_cb cb, void *ud);

#endif
