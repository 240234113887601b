/*
 * bootstrap.c — first-run token minting and the join command (see bootstrap.h).
 */
#include "bootstrap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto.h"
#include "err.h"
#include "log.h"

/* Advisory lock serializing bootstraps of several replicas: "wpbootst" as an int64. */
#define CP_BOOTSTRAP_LOCK_KEY "8606201380744213364"
#define CP_TOKEN_MAX          96

typedef struct cp_bootstrap {
    cp_db_tx *tx;
    char dir[4096];
    char admin[CP_TOKEN_MAX];
    char join[CP_TOKEN_MAX];
    char admin_hash[65];
    char join_hash[65];
    int minted;
    cp_bootstrap_cb cb;
    void *ud;
} cp_bootstrap;

static void cp_bootstrap_finish(cp_bootstrap *b, int err)
{
    cp_bootstrap_cb cb = b->cb;
    void *ud = b->ud;
    int minted = b->minted;
    wp_secure_zero(b, sizeof(*b));
    free(b);
    cb(err, err == 0 ? minted : 0, ud);
}

/* Writes a secret file to <dir>/<name>.tmp (0600, O_EXCL after removing a stale one). */
static int cp_bootstrap_write_tmp(const char *dir, const char *name, const char *secret)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s.tmp", dir, name);
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return WP_ERR_IO;
    size_t len = strlen(secret);
    int ok = write(fd, secret, len) == (ssize_t)len && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    close(fd);
    if (!ok) {
        unlink(path);
        return WP_ERR_IO;
    }
    return 0;
}

static void cp_bootstrap_files(const char *dir, int commit)
{
    static const char *const names[] = {"admin.token", "join.token"};
    for (int i = 0; i < 2; i++) {
        char tmp[4200], dst[4200];
        snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, names[i]);
        snprintf(dst, sizeof(dst), "%s/%s", dir, names[i]);
        if (commit) {
            if (rename(tmp, dst) != 0)
                wp_log_error("cannot install token file", WP_LS("path", dst),
                             WP_LS("reason", strerror(errno)));
        } else {
            unlink(tmp);
        }
    }
}

static void cp_bootstrap_committed(int err, void *ud)
{
    cp_bootstrap *b = ud;
    cp_bootstrap_files(b->dir, err == 0 && b->minted);
    if (err == 0 && b->minted)
        wp_log_info("first run: minted the admin token and the agent join token",
                    WP_LS("admin_token_file", "admin.token"),
                    WP_LS("join_token_file", "join.token"));
    cp_bootstrap_finish(b, err);
}

static void cp_bootstrap_end(cp_bootstrap *b, int err)
{
    cp_db_tx *tx = b->tx;
    b->tx = NULL;
    if (err != 0)
        b->minted = 0;
    int rc = err == 0 ? cp_db_tx_commit(tx, cp_bootstrap_committed, b)
                      : cp_db_tx_rollback(tx, cp_bootstrap_committed, b);
    if (rc != 0) {
        cp_bootstrap_files(b->dir, 0);
        cp_bootstrap_finish(b, err ? err : rc);
    }
}

static void cp_bootstrap_inserted(int err, PGresult *res, void *ud)
{
    (void)res;
    cp_bootstrap *b = ud;
    if (err != 0)
        wp_log_error("first run: cannot store the bootstrap tokens", WP_LE("err", err));
    cp_bootstrap_end(b, err);
}

static void cp_bootstrap_counted(int err, PGresult *res, void *ud)
{
    cp_bootstrap *b = ud;
    if (err != 0 || PQntuples(res) != 1) {
        cp_bootstrap_end(b, err ? err : WP_ERR_INTERNAL);
        return;
    }
    if (atoll(PQgetvalue(res, 0, 0)) > 0) {
        cp_bootstrap_end(b, 0); /* not a first run */
        return;
    }
    uint8_t h[32];
    int rc;
    if ((rc = wp_token_generate("wpadm", b->admin, sizeof(b->admin))) != 0 ||
        (rc = wp_token_generate("wpjoin", b->join, sizeof(b->join))) != 0) {
        cp_bootstrap_end(b, rc);
        return;
    }
    wp_log_secret_add(b->admin);
    wp_log_secret_add(b->join);
    wp_sha256(b->admin, strlen(b->admin), h);
    wp_hex_encode(h, sizeof(h), b->admin_hash, sizeof(b->admin_hash));
    wp_sha256(b->join, strlen(b->join), h);
    wp_hex_encode(h, sizeof(h), b->join_hash, sizeof(b->join_hash));
    if ((rc = cp_bootstrap_write_tmp(b->dir, "admin.token", b->admin)) != 0 ||
        (rc = cp_bootstrap_write_tmp(b->dir, "join.token", b->join)) != 0) {
        wp_log_error("first run: cannot write token files", WP_LS("dir", b->dir),
                     WP_LS("reason", strerror(errno)));
        cp_bootstrap_files(b->dir, 0);
        cp_bootstrap_end(b, rc);
        return;
    }
    b->minted = 1;
    const char *params[] = {b->admin_hash, b->join_hash};
    rc = cp_db_tx_query(b->tx,
                        "INSERT INTO tokens (name, role, hash) VALUES "
                        "('bootstrap-admin', 'admin', decode($1, 'hex')), "
                        "('bootstrap-join', 'agent', decode($2, 'hex'))",
                        2, params, cp_bootstrap_inserted, b);
    if (rc != 0) {
        cp_bootstrap_files(b->dir, 0);
        b->minted = 0;
        cp_bootstrap_end(b, rc);
    }
}

static void cp_bootstrap_locked(int err, PGresult *res, void *ud)
{
    (void)res;
    cp_bootstrap *b = ud;
    if (err != 0) {
        cp_bootstrap_end(b, err);
        return;
    }
    int rc = cp_db_tx_query(b->tx, "SELECT count(*) FROM tokens", 0, NULL, cp_bootstrap_counted, b);
    if (rc != 0)
        cp_bootstrap_end(b, rc);
}

static void cp_bootstrap_begun(int err, cp_db_tx *tx, void *ud)
{
    cp_bootstrap *b = ud;
    if (err != 0) {
        cp_bootstrap_finish(b, err);
        return;
    }
    b->tx = tx;
    const char *params[] = {CP_BOOTSTRAP_LOCK_KEY};
    int rc = cp_db_tx_query(tx, "SELECT pg_advisory_xact_lock($1::bigint)", 1, params,
                            cp_bootstrap_locked, b);
    if (rc != 0)
        cp_bootstrap_end(b, rc);
}

int cp_bootstrap_run(cp_db *db, const char *state_dir, cp_bootstrap_cb cb, void *ud)
{
    if (!db || !state_dir || !cb || strlen(state_dir) >= sizeof(((cp_bootstrap *)0)->dir))
        return WP_ERR_INVAL;
    cp_bootstrap *b = calloc(1, sizeof(*b));
    if (!b)
        return WP_ERR_NOMEM;
    snprintf(b->dir, sizeof(b->dir), "%s", state_dir);
    b->cb = cb;
    b->ud = ud;
    int rc = cp_db_tx_begin(db, cp_bootstrap_begun, b);
    if (rc != 0)
        free(b);
    return rc;
}

int cp_bootstrap_print_join(FILE *out, const char *state_dir, const char *url, const char *pin)
{
    char path[4200], token[CP_TOKEN_MAX + 2] = {0};
    snprintf(path, sizeof(path), "%s/join.token", state_dir);
    FILE *f = fopen(path, "re");
    if (!f) {
        fprintf(out,
                "\nNo join token in %s: mint an agent token with\n"
                "  wolfpack tokens create --role agent --name <node>\n\n",
                state_dir);
        fflush(out);
        return WP_ERR_NOT_FOUND;
    }
    char *got = fgets(token, sizeof(token), f);
    fclose(f);
    token[strcspn(token, "\r\n")] = '\0';
    if (!got || token[0] == '\0') {
        fprintf(out, "\n%s is empty\n\n", path);
        fflush(out);
        return WP_ERR_NOT_FOUND;
    }
    wp_log_secret_add(token);
    fprintf(out,
            "\nwolfpack control plane is up. Join a GPU node by running on it:\n\n"
            "  wolfpack-agent --url %s --token %s%s%s\n\n"
            "The admin token is in %s/admin.token.\n\n",
            url, token, pin ? " --ca-pin " : "", pin ? pin : "", state_dir);
    fflush(out);
    wp_secure_zero(token, sizeof(token));
    return 0;
}
