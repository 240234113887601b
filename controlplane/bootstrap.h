/*
 * bootstrap.h — first run: mint the admin token and the agent join token.
 *
 * On a database without any token, one transaction (serialized across
 * replicas by an advisory lock) inserts an admin token and an agent join
 * token — only their SHA-256 — and the plaintext goes to
 * <state-dir>/admin.token and <state-dir>/join.token (mode 0600, written
 * before the commit and renamed into place after it). The tokens are
 * registered as log secrets. A later start mints nothing.
 *
 * The join command (`wolfpack-agent --url wss://... --token ... --ca-pin
 * sha256:...`) is printed on standard output — not into the log — every time
 * the control plane starts and join.token exists, like kubeadm prints its
 * join command.
 */
#ifndef CP_BOOTSTRAP_H
#define CP_BOOTSTRAP_H

#include <stdio.h>

#include "db.h"

/* err 0: minted = 1 if this call created the tokens. */
typedef void (*cp_bootstrap_cb)(int err, int minted, void *ud);

/* Runs the first-run check. Returns 0 (cb later, once) or a WP_ERR_* (cb never called). */
int cp_bootstrap_run(cp_db *db, const char *state_dir, cp_bootstrap_cb cb, void *ud);

/*
 * Prints the join command to out when <state-dir>/join.token exists (and
 * registers the token as a log secret). url: the wss:// address agents dial;
 * pin: "sha256:..." or NULL. Returns 0, or WP_ERR_NOT_FOUND when there is no
 * join.token (the command explains how to mint one instead).
 */
int cp_bootstrap_print_join(FILE *out, const char *state_dir, const char *url, const char *pin);

#endif
