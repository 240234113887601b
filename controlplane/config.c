/*
 * config.c — wolfpackd flags and WOLFPACK_* environment variables (see config.h).
 */
#include "config.h"

#include <string.h>

#include "err.h"
#include "log.h"

/* Room for the option table: a compile-time check refuses a table that outgrows it. */
#define CP_CONFIG_OPTS_MAX 48

struct cp_config_raw {
    const char *log_format;
    const char *log_level;
    int help;
    int version;
};

static size_t cp_config_table(cp_config *cfg, struct cp_config_raw *raw, wp_opt *t, size_t cap)
{
    const wp_opt opts[] = {
        {"listen", 'l', WP_OPT_STRING, &cfg->listen, "WOLFPACK_LISTEN", "ADDR",
         "address to serve the API, tunnel and dashboard on", CP_DEFAULT_LISTEN, 0, 0},
        {"state-dir", 'd', WP_OPT_STRING, &cfg->state_dir, "WOLFPACK_STATE_DIR", "DIR",
         "state directory: generated CA and certificates, tokens, embedded database",
         CP_DEFAULT_STATE_DIR, 0, 0},
        {"tls-cert", 0, WP_OPT_STRING, &cfg->tls_cert, "WOLFPACK_TLS_CERT", "FILE",
         "server certificate chain (PEM); reloaded on SIGHUP", "generated in DIR/tls", 0, 0},
        {"tls-key", 0, WP_OPT_STRING, &cfg->tls_key, "WOLFPACK_TLS_KEY", "FILE",
         "private key for --tls-cert (PEM); reloaded on SIGHUP", NULL, 0, 0},
        {"tls-san", 0, WP_OPT_LIST, &cfg->tls_sans, "WOLFPACK_TLS_SANS", "NAME",
         "extra DNS name or IP for the generated server certificate", NULL, 0, 0},
        {"database-url", 0, WP_OPT_STRING, &cfg->database_url, "WOLFPACK_DATABASE_URL", "URL",
         "PostgreSQL server (postgresql://user:pass@host/db); prefer the env var: it may hold a "
         "password",
         "embedded cluster in DIR/postgres", 0, 0},
        {"advertise-url", 0, WP_OPT_STRING, &cfg->advertise_url, "WOLFPACK_ADVERTISE_URL", "URL",
         "address agents dial (wss://host:port), used in the printed join command",
         "wss://<host name>:<listen port>", 0, 0},
        {"no-tls", 0, WP_OPT_BOOL, &cfg->no_tls, "WOLFPACK_NO_TLS", NULL,
         "serve plain HTTP (only behind a TLS-terminating ingress)", NULL, 0, 0},
        {"max-connections", 0, WP_OPT_INT, &cfg->max_connections, "WOLFPACK_MAX_CONNECTIONS", "N",
         "most concurrent client connections", "4096", 1, 1000000},
        {"max-handshakes", 0, WP_OPT_INT, &cfg->max_handshakes, "WOLFPACK_MAX_HANDSHAKES", "N",
         "most concurrent TLS handshakes (the rest wait)", "64", 1, 100000},
        {"http-header-timeout", 0, WP_OPT_INT, &cfg->header_timeout_s,
         "WOLFPACK_HTTP_HEADER_TIMEOUT", "SECONDS",
         "a request's headers must arrive within this (slowloris guard)", "10", 1, 3600},
        {"http-idle-timeout", 0, WP_OPT_INT, &cfg->idle_timeout_s, "WOLFPACK_HTTP_IDLE_TIMEOUT",
         "SECONDS", "close keep-alive connections idle this long", "60", 1, 86400},
        {"heartbeat-interval", 0, WP_OPT_INT, &cfg->heartbeat_interval_s,
         "WOLFPACK_HEARTBEAT_INTERVAL", "SECONDS",
         "how often agents send heartbeats; a node silent for two intervals goes offline", "10", 1,
         300},
        {"max-tunnels", 0, WP_OPT_INT, &cfg->max_tunnels, "WOLFPACK_MAX_TUNNELS", "N",
         "most concurrent agent tunnels", "1024", 1, 100000},
        {"wolf-timeout", 0, WP_OPT_INT, &cfg->wolf_timeout_s, "WOLFPACK_WOLF_TIMEOUT", "SECONDS",
         "deadline of one call to a node's Wolf API (lobbies/create can block ~20 s)", "30", 1,
         600},
        {"schedule-attempts", 0, WP_OPT_INT, &cfg->schedule_attempts, "WOLFPACK_SCHEDULE_ATTEMPTS",
         "N", "nodes a session start is tried on before the session fails", "3", 1, 20},
        {"node-cooldown", 0, WP_OPT_INT, &cfg->node_cooldown_s, "WOLFPACK_NODE_COOLDOWN", "SECONDS",
         "a node whose session start failed stays degraded (no new sessions) this long", "60", 0,
         86400},
        {"wolf-profile-id", 0, WP_OPT_STRING, &cfg->wolf_profile_id, "WOLFPACK_WOLF_PROFILE_ID",
         "ID", "Wolf profile id that starts session lobbies (lobbies/create profile_id)",
         "moonlight-profile-id", 0, 0},
        {"reap-orphans", 0, WP_OPT_BOOL, &cfg->reap_orphans, "WOLFPACK_REAP_ORPHANS", NULL,
         "stop Wolf lobbies that no running session owns (found when a node reconnects; "
         "ours with their PIN)",
         NULL, 0, 0},
        {"proxy-timeout", 0, WP_OPT_INT, &cfg->proxy_timeout_s, "WOLFPACK_PROXY_TIMEOUT", "SECONDS",
         "proxied requests: a node's service must answer (headers) within this (504)", "30", 1,
         3600},
        {"moonlight-credentials-file", 0, WP_OPT_STRING, &cfg->moonlight_credentials_file,
         "WOLFPACK_MOONLIGHT_CREDENTIALS_FILE", "FILE",
         "Moonlight Web credentials sent as Bearer on proxied session requests (or the value "
         "itself in WOLFPACK_MOONLIGHT_CREDENTIALS)",
         "none", 0, 0},
        WP_OPTS_LOG_ROWS(&raw->log_format, &raw->log_level),
        {"help", 'h', WP_OPT_BOOL, &raw->help, NULL, NULL, "show this help and exit", NULL, 0, 0},
        {"version", 'V', WP_OPT_BOOL, &raw->version, NULL, NULL, "show version and exit", NULL, 0,
         0},
    };
    _Static_assert(sizeof(opts) / sizeof(opts[0]) <= CP_CONFIG_OPTS_MAX,
                   "raise CP_CONFIG_OPTS_MAX: options would be dropped");
    size_t n = sizeof(opts) / sizeof(opts[0]);
    if (n > cap)
        return 0; /* never: every caller passes CP_CONFIG_OPTS_MAX */
    memcpy(t, opts, n * sizeof(opts[0]));
    return n;
}

int cp_config_parse(cp_config *cfg, int argc, char **argv, wp_opts_getenv_fn getenv_fn, char *err,
                    size_t cap)
{
    struct cp_config_raw raw = {0};
    wp_opt table[CP_CONFIG_OPTS_MAX];
    const char *pos[4];
    size_t npos = 0;
    int rc;

    memset(cfg, 0, sizeof(*cfg));
    cfg->listen = CP_DEFAULT_LISTEN;
    cfg->state_dir = CP_DEFAULT_STATE_DIR;
    cfg->log_format = WP_LOG_FMT_LOGFMT;
    cfg->log_level = WP_LOG_INFO;
    cfg->max_connections = 4096;
    cfg->max_handshakes = 64;
    cfg->header_timeout_s = 10;
    cfg->idle_timeout_s = 60;
    cfg->heartbeat_interval_s = 10;
    cfg->max_tunnels = 1024;
    cfg->proxy_timeout_s = 30;
    cfg->wolf_timeout_s = 30;
    cfg->schedule_attempts = 3;
    cfg->node_cooldown_s = 60;
    cfg->wolf_profile_id = "moonlight-profile-id";

    size_t n = cp_config_table(cfg, &raw, table, sizeof(table) / sizeof(table[0]));
    rc = wp_opts_parse(table, n, argc, argv, 1, getenv_fn, pos, 4, &npos, err, cap);
    if (rc != 0)
        return rc;
    if (raw.help) {
        cfg->command = CP_CMD_HELP;
        return 0;
    }
    if (raw.version) {
        cfg->command = CP_CMD_VERSION;
        return 0;
    }
    cfg->command = CP_CMD_SERVE;
    if (npos > 0) {
        if (strcmp(pos[0], "migrate") == 0 && npos == 1) {
            cfg->command = CP_CMD_MIGRATE;
        } else if (strcmp(pos[0], "serve") == 0 && npos == 1) {
            cfg->command = CP_CMD_SERVE;
        } else {
            snprintf(err, cap, "unknown command '%.64s' (see --help)", pos[npos > 1 ? 1 : 0]);
            return WP_ERR_INVAL;
        }
    }
    if ((rc = wp_opts_log_apply(raw.log_format, raw.log_level, &cfg->log_format, &cfg->log_level,
                                err, cap)) != 0)
        return rc;
    if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL)) {
        snprintf(err, cap, "--tls-cert and --tls-key must be given together");
        return WP_ERR_INVAL;
    }
    if (cfg->no_tls && cfg->tls_cert) {
        snprintf(err, cap, "--no-tls conflicts with --tls-cert/--tls-key");
        return WP_ERR_INVAL;
    }
    if (!cfg->wolf_profile_id[0] || strlen(cfg->wolf_profile_id) > 128) {
        snprintf(err, cap, "--wolf-profile-id: 1 to 128 characters");
        return WP_ERR_INVAL;
    }
    cfg->moonlight_credentials = getenv_fn ? getenv_fn("WOLFPACK_MOONLIGHT_CREDENTIALS") : NULL;
    if (cfg->moonlight_credentials && cfg->moonlight_credentials_file) {
        snprintf(err, cap,
                 "WOLFPACK_MOONLIGHT_CREDENTIALS and --moonlight-credentials-file are exclusive");
        return WP_ERR_INVAL;
    }
    if (cfg->advertise_url && strncmp(cfg->advertise_url, "wss://", 6) != 0) {
        snprintf(err, cap, "--advertise-url must start with wss://");
        return WP_ERR_INVAL;
    }
    return 0;
}

void cp_config_free(cp_config *cfg)
{
    wp_strlist_free(&cfg->tls_sans);
}

void cp_config_usage(FILE *out)
{
    cp_config cfg;
    struct cp_config_raw raw;
    wp_opt table[CP_CONFIG_OPTS_MAX];
    memset(&cfg, 0, sizeof(cfg));
    memset(&raw, 0, sizeof(raw));
    size_t n = cp_config_table(&cfg, &raw, table, sizeof(table) / sizeof(table[0]));
    wp_opts_usage(out, table, n);
}
