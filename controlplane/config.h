/*
 * config.h — wolfpackd configuration: flags and WOLFPACK_* environment variables.
 *
 * cp_config_parse() is pure (argv + an env getter in, a cp_config out) so unit
 * tests drive it directly; main.c prints cp_config_usage() for --help.
 */
#ifndef CP_CONFIG_H
#define CP_CONFIG_H

#include <stdio.h>

#include "opts.h"

#define CP_DEFAULT_LISTEN    "0.0.0.0:8443"
#define CP_DEFAULT_STATE_DIR "/var/lib/wolfpack"

enum cp_command { CP_CMD_SERVE = 0, CP_CMD_MIGRATE, CP_CMD_HELP, CP_CMD_VERSION };

typedef struct cp_config {
    int command;           /* enum cp_command */
    const char *listen;    /* host:port */
    const char *state_dir; /* certificates, tokens, embedded database */
    const char *tls_cert;  /* PEM chain; with tls_key; NULL = generated in state dir */
    const char *tls_key;
    int no_tls; /* serve plain HTTP (behind a TLS-terminating ingress) */
    const char
        *database_url; /* libpq URL/conninfo; NULL = embedded cluster (secret: never logged) */
    const char *advertise_url;  /* wss:// URL agents dial, for the join command; NULL = derived */
    int log_format;             /* enum wp_log_format */
    int log_level;              /* enum wp_log_level */
    wp_strlist tls_sans;        /* extra subject alt names for a generated certificate */
    long long max_connections;  /* concurrent client connections */
    long long header_timeout_s; /* request headers must complete within this */
    long long idle_timeout_s;   /* keep-alive connections idle longer are closed */
    long long max_handshakes;   /* concurrent TLS handshakes */
    long long heartbeat_interval_s; /* heartbeat_interval_ms sent to agents in `welcome` / 1000 */
    long long max_tunnels;          /* concurrent agent tunnels (beyond: 503 over_capacity) */
    long long proxy_timeout_s;      /* proxied request: open + response headers deadline (504) */
    const char *moonlight_credentials_file; /* Moonlight Web Bearer credentials (file) */
    const char *moonlight_credentials;      /* ... or the value (env only; secret) */
    long long wolf_timeout_s;    /* deadline of one Wolf API call (lobbies/create blocks) */
    long long schedule_attempts; /* nodes a session start is tried on before it fails */
    long long node_cooldown_s;   /* a node whose session start failed stays degraded this long */
    const char *wolf_profile_id; /* lobbies/create profile_id */
    int reap_orphans;            /* stop Wolf lobbies the database does not know (reconcile) */
} cp_config;

/*
 * Fills cfg from argv and the environment. Returns 0, or WP_ERR_INVAL with a
 * one-line reason in err (no secrets echoed). cfg must be released with
 * cp_config_free() in both cases.
 */
int cp_config_parse(cp_config *cfg, int argc, char **argv, wp_opts_getenv_fn getenv_fn, char *err,
                    size_t cap);
void cp_config_free(cp_config *cfg);
void cp_config_usage(FILE *out);

#endif
