/*
 * config.h — wolfpack-agent configuration: subcommand, flags, WOLFPACK_* env vars.
 *
 * na_config_parse() is pure and validates everything an operator can get wrong
 * (node id syntax, service specs, labels, the CA pin) with a one-line message,
 * so the agent fails fast at start instead of at its first dial.
 */
#ifndef NA_CONFIG_H
#define NA_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "opts.h"
#include "tls.h"

#define NA_MAX_SERVICES          16
#define NA_MAX_LABELS            32
#define NA_DEFAULT_STATUS_LISTEN "127.0.0.1:9465"
#define NA_NODE_ID_MAX           63
#define NA_SANDBOX_PORTS_MAX     16
#define NA_DEFAULT_SANDBOX_NAMES "wolfpack-*"
#define NA_DEFAULT_WOLF_HTTPS    "127.0.0.1:47984"

enum na_command { NA_CMD_RUN = 0, NA_CMD_PROBE, NA_CMD_HELP, NA_CMD_VERSION };
enum na_service_kind { NA_SVC_UNIX = 0, NA_SVC_TCP };

typedef struct na_service {
    char name[32];
    int kind;         /* enum na_service_kind */
    char target[256]; /* unix socket path, or host */
    int port;         /* tcp only */
} na_service;

typedef struct na_label {
    char key[64];
    char value[128];
} na_label;

typedef struct na_config {
    int command;
    const char *url;
    const char *token; /* secret: never logged */
    const char *token_file;
    char node_id[NA_NODE_ID_MAX + 1];
    const char *ca_file;
    uint8_t ca_pin[WP_SHA256_LEN];
    int has_ca_pin;
    int insecure_skip_verify;
    na_service services[NA_MAX_SERVICES];
    size_t nservices;
    na_label labels[NA_MAX_LABELS];
    size_t nlabels;
    long long max_sessions;
    const char *sysfs_root;
    const char *nvml_lib;
    const char *wolf_restart_cmd;
    long long probe_interval_s;        /* Wolf/Moonlight health probes every N s (wolfprobe.h) */
    long long probe_timeout_s;         /* each HTTP probe's deadline */
    long long probe_tls_timeout_s;     /* the TLS handshake probe's deadline */
    const char *wolf_https;            /* host:port of Wolf's HTTPS (47984), or "none" */
    long long wolf_restart_after;      /* consecutive unhealthy rounds before the restart command */
    long long wolf_restart_cooldown_s; /* at most one restart per this many seconds */
    const char *status_listen;
    int log_format;
    int log_level;
    wp_strlist raw_services;
    wp_strlist raw_labels;
    /* sandbox service (services.h na_sandbox_policy): enabled by at least one port */
    int sandbox_ports[NA_SANDBOX_PORTS_MAX]; /* allowed container ports; the first is the default */
    size_t nsandbox_ports;
    const char *sandbox_name_pattern; /* allowed container names (glob: * and ?) */
    const char *sandbox_address;      /* host dialled instead of the container name, or NULL */
    wp_strlist raw_sandbox_ports;
} na_config;

/* 0 or WP_ERR_INVAL with a one-line reason in err. Free with na_config_free() either way. */
int na_config_parse(na_config *cfg, int argc, char **argv, wp_opts_getenv_fn getenv_fn, char *err,
                    size_t cap);
void na_config_free(na_config *cfg);
void na_config_usage(FILE *out);

/*
 * Sandbox container name pattern syntax: 1-128 of [A-Za-z0-9_.-*?] (glob: `*`
 * any run, `?` one character). Returns 1 if valid.
 */
int na_sandbox_pattern_valid(const char *s);
/* 1 if name matches the glob pattern in full (see na_sandbox_pattern_valid), else 0. */
int na_sandbox_name_match(const char *pattern, const char *name);

/* Node id syntax: [a-z0-9][a-z0-9-]{0,62}. Returns 1 if valid. */
int na_node_id_valid(const char *s);
/* Parses "name=unix:/path" or "name=tcp:host:port". 0 or WP_ERR_INVAL with reason. */
int na_service_parse(const char *spec, na_service *out, char *err, size_t cap);

#endif
