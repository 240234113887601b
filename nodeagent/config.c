/*
 * config.c — wolfpack-agent flags, env vars and their validation (see config.h).
 */
#include "config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "addr.h"
#include "err.h"
#include "ids.h"
#include "log.h"
#include "services.h"

/* Room for the option table: a compile-time check refuses a table that outgrows it. */
#define NA_CONFIG_OPTS_MAX 48

/* Default allow-list (DESIGN.md §4); --service entries with the same name replace these. */
static const char *const na_default_services[] = {
    "wolf=unix:/var/run/wolf/wolf.sock",
    "moonlight=tcp:127.0.0.1:8080",
    "wolf-http=tcp:127.0.0.1:47989",
};

struct na_config_raw {
    const char *node_id;
    const char *ca_pin;
    const char *log_format;
    const char *log_level;
    int help;
    int version;
};

static size_t na_config_table(na_config *cfg, struct na_config_raw *raw, wp_opt *t, size_t cap)
{
    const wp_opt opts[] = {
        {"url", 'u', WP_OPT_STRING, &cfg->url, "WOLFPACK_URL", "URL",
         "control plane to dial, wss://host:port", NULL, 0, 0},
        {"token", 't', WP_OPT_STRING, &cfg->token, "WOLFPACK_TOKEN", "TOKEN",
         "agent join token (prefer --token-file: flags are visible in ps)", NULL, 0, 0},
        {"token-file", 0, WP_OPT_STRING, &cfg->token_file, "WOLFPACK_TOKEN_FILE", "FILE",
         "read the agent token from FILE", NULL, 0, 0},
        {"node-id", 'n', WP_OPT_STRING, &raw->node_id, "WOLFPACK_NODE_ID", "ID",
         "this node's id, [a-z0-9][a-z0-9-]{0,62}", "host name", 0, 0},
        {"ca-file", 0, WP_OPT_STRING, &cfg->ca_file, "WOLFPACK_CA_FILE", "FILE",
         "CA bundle to verify the control plane with", "system CAs", 0, 0},
        {"ca-pin", 0, WP_OPT_STRING, &raw->ca_pin, "WOLFPACK_CA_PIN", "sha256:HEX",
         "trust the control plane whose CA (or certificate) has this SPKI SHA-256", NULL, 0, 0},
        {"insecure-skip-verify", 0, WP_OPT_BOOL, &cfg->insecure_skip_verify,
         "WOLFPACK_INSECURE_SKIP_VERIFY", NULL,
         "do not verify the control plane at all (DANGEROUS: testing only)", NULL, 0, 0},
        {"service", 's', WP_OPT_LIST, &cfg->raw_services, "WOLFPACK_SERVICES", "NAME=SPEC",
         "allow-listed local service, NAME=unix:/path or NAME=tcp:host:port (NAME=none removes "
         "one, a default too)",
         "wolf=unix:/var/run/wolf/wolf.sock, moonlight=tcp:127.0.0.1:8080, "
         "wolf-http=tcp:127.0.0.1:47989",
         0, 0},
        {"label", 'L', WP_OPT_LIST, &cfg->raw_labels, "WOLFPACK_LABELS", "K=V",
         "node label used by the scheduler's selectors", NULL, 0, 0},
        {"max-sessions", 'm', WP_OPT_INT, &cfg->max_sessions, "WOLFPACK_MAX_SESSIONS", "N",
         "most streaming sessions this node accepts", "4", 1, 1000},
        {"sysfs-root", 0, WP_OPT_STRING, &cfg->sysfs_root, "WOLFPACK_SYSFS_ROOT", "DIR",
         "root of the sysfs tree read for GPU inventory", "/sys", 0, 0},
        {"nvml-lib", 0, WP_OPT_STRING, &cfg->nvml_lib, "WOLFPACK_NVML_LIB", "PATH",
         "NVML library loaded at run time", "libnvidia-ml.so.1", 0, 0},
        {"wolf-restart-cmd", 0, WP_OPT_STRING, &cfg->wolf_restart_cmd, "WOLFPACK_WOLF_RESTART_CMD",
         "CMD", "shell command run when Wolf stays unhealthy (e.g. 'docker restart wolf')", "none",
         0, 0},
        {"wolf-restart-after", 0, WP_OPT_INT, &cfg->wolf_restart_after,
         "WOLFPACK_WOLF_RESTART_AFTER", "N",
         "consecutive unhealthy probe rounds before --wolf-restart-cmd runs", "3", 1, 1000},
        {"wolf-restart-cooldown", 0, WP_OPT_INT, &cfg->wolf_restart_cooldown_s,
         "WOLFPACK_WOLF_RESTART_COOLDOWN", "S", "at most one Wolf restart per S seconds", "300", 1,
         86400},
        {"probe-interval", 0, WP_OPT_INT, &cfg->probe_interval_s, "WOLFPACK_PROBE_INTERVAL", "S",
         "probe Wolf and Moonlight Web health every S seconds", "10", 1, 3600},
        {"probe-timeout", 0, WP_OPT_INT, &cfg->probe_timeout_s, "WOLFPACK_PROBE_TIMEOUT", "S",
         "deadline of each HTTP health probe (Wolf API, /serverinfo, Moonlight Web)", "5", 1, 300},
        {"probe-tls-timeout", 0, WP_OPT_INT, &cfg->probe_tls_timeout_s,
         "WOLFPACK_PROBE_TLS_TIMEOUT", "S",
         "deadline of the TLS handshake probe on Wolf's HTTPS port (slow under load)", "10", 1,
         300},
        {"wolf-https", 0, WP_OPT_STRING, &cfg->wolf_https, "WOLFPACK_WOLF_HTTPS", "HOST:PORT",
         "Wolf's GameStream HTTPS port for the TLS handshake probe, or 'none'",
         NA_DEFAULT_WOLF_HTTPS, 0, 0},
        {"sandbox-port", 0, WP_OPT_LIST, &cfg->raw_sandbox_ports, "WOLFPACK_SANDBOX_PORTS", "N",
         "enables the `sandbox` service: a container port it may dial (repeatable; the first is "
         "the default)",
         "sandbox disabled", 0, 0},
        {"sandbox-name-pattern", 0, WP_OPT_STRING, &cfg->sandbox_name_pattern,
         "WOLFPACK_SANDBOX_NAME_PATTERN", "GLOB",
         "sandbox container names that may be dialled ([A-Za-z0-9_.-] with * and ?)",
         NA_DEFAULT_SANDBOX_NAMES, 0, 0},
        {"sandbox-address", 0, WP_OPT_STRING, &cfg->sandbox_address, "WOLFPACK_SANDBOX_ADDRESS",
         "HOST", "dial this host for sandboxes instead of the container name (host networking)",
         "the container name", 0, 0},
        {"status-listen", 0, WP_OPT_STRING, &cfg->status_listen, "WOLFPACK_STATUS_LISTEN", "ADDR",
         "local /healthz /readyz /metrics endpoint (no auth: keep it on loopback), or 'none'",
         NA_DEFAULT_STATUS_LISTEN, 0, 0},
        WP_OPTS_LOG_ROWS(&raw->log_format, &raw->log_level),
        {"help", 'h', WP_OPT_BOOL, &raw->help, NULL, NULL, "show this help and exit", NULL, 0, 0},
        {"version", 'V', WP_OPT_BOOL, &raw->version, NULL, NULL, "show version and exit", NULL, 0,
         0},
    };
    _Static_assert(sizeof(opts) / sizeof(opts[0]) <= NA_CONFIG_OPTS_MAX,
                   "raise NA_CONFIG_OPTS_MAX: options would be dropped");
    size_t n = sizeof(opts) / sizeof(opts[0]);
    if (n > cap)
        return 0; /* never: every caller passes NA_CONFIG_OPTS_MAX */
    memcpy(t, opts, n * sizeof(opts[0]));
    return n;
}

int na_sandbox_pattern_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("_.-*?", s[i]))
            return 0;
    return 1;
}

int na_sandbox_name_match(const char *pat, const char *name)
{
    /* iterative glob with one backtrack point (linear enough for 128-byte inputs) */
    const char *star = NULL, *retry = NULL;
    while (*name) {
        if (*pat == '*') {
            star = pat++;
            retry = name;
        } else if (*pat && (*pat == '?' || *pat == *name)) {
            pat++;
            name++;
        } else if (star) {
            pat = star + 1;
            name = ++retry;
        } else {
            return 0;
        }
    }
    while (*pat == '*')
        pat++;
    return *pat == '\0';
}

static int na_config_sandbox(na_config *cfg, char *err, size_t cap)
{
    for (size_t i = 0; i < cfg->raw_sandbox_ports.n; i++) {
        const char *v = cfg->raw_sandbox_ports.items[i];
        char *end = NULL;
        long port = strtol(v, &end, 10);
        if (!v[0] || !end || *end || port < 1 || port > 65535) {
            snprintf(err, cap, "--sandbox-port %.16s: expected a port 1-65535", v);
            return WP_ERR_INVAL;
        }
        if (cfg->nsandbox_ports >= NA_SANDBOX_PORTS_MAX) {
            snprintf(err, cap, "too many --sandbox-port (at most %d)", NA_SANDBOX_PORTS_MAX);
            return WP_ERR_INVAL;
        }
        cfg->sandbox_ports[cfg->nsandbox_ports++] = (int)port;
    }
    if (!na_sandbox_pattern_valid(cfg->sandbox_name_pattern)) {
        snprintf(err, cap,
                 "--sandbox-name-pattern: 1-128 of [A-Za-z0-9_.-] with the wildcards * and ?");
        return WP_ERR_INVAL;
    }
    if (cfg->sandbox_address) {
        const char *a = cfg->sandbox_address;
        size_t n = strlen(a);
        int ok = n > 0 && n < 256;
        for (size_t i = 0; ok && i < n; i++)
            ok = isalnum((unsigned char)a[i]) || strchr(".-_:", a[i]) != NULL;
        if (!ok) {
            snprintf(err, cap, "--sandbox-address: expected a host name or IP address");
            return WP_ERR_INVAL;
        }
    }
    return 0;
}

int na_node_id_valid(const char *s)
{
    return wp_node_id_valid(s);
}

static int na_name_valid(const char *s, size_t len)
{
    if (len == 0 || len >= sizeof(((na_service *)0)->name))
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

int na_service_parse(const char *spec, na_service *out, char *err, size_t cap)
{
    const char *eq = strchr(spec, '=');
    memset(out, 0, sizeof(*out));
    if (!eq || !na_name_valid(spec, (size_t)(eq - spec))) {
        snprintf(err, cap, "--service %.80s: expected NAME=unix:/path or NAME=tcp:host:port", spec);
        return WP_ERR_INVAL;
    }
    memcpy(out->name, spec, (size_t)(eq - spec));
    const char *v = eq + 1;
    if (strncmp(v, "unix:", 5) == 0) {
        const char *path = v + 5;
        if (path[0] != '/' || strlen(path) >= sizeof(out->target) || strlen(path) > 107) {
            snprintf(err, cap, "--service %s: unix socket path must be absolute and short",
                     out->name);
            return WP_ERR_INVAL;
        }
        out->kind = NA_SVC_UNIX;
        snprintf(out->target, sizeof(out->target), "%s", path);
        return 0;
    }
    if (strncmp(v, "tcp:", 4) == 0) {
        out->kind = NA_SVC_TCP;
        if (wp_hostport_split(v + 4, out->target, sizeof(out->target), &out->port) != 0 ||
            out->port <= 0) {
            snprintf(err, cap, "--service %s: expected tcp:host:port", out->name);
            return WP_ERR_INVAL;
        }
        return 0;
    }
    snprintf(err, cap, "--service %s: unknown kind (expected unix: or tcp:)", out->name);
    return WP_ERR_INVAL;
}

static int na_config_add_service(na_config *cfg, const char *spec, char *err, size_t cap)
{
    /* "name=none" takes a service (a default one too) off the allow-list and the checks. */
    const char *eq = strchr(spec, '=');
    if (eq && strcmp(eq + 1, "none") == 0) {
        char name[sizeof(cfg->services[0].name)];
        size_t n = (size_t)(eq - spec);
        if (n == 0 || n >= sizeof(name)) {
            snprintf(err, cap, "--service %.80s: bad service name", spec);
            return WP_ERR_INVAL;
        }
        memcpy(name, spec, n);
        name[n] = '\0';
        if (!na_service_name_valid(name)) {
            snprintf(err, cap, "--service %s: bad service name ([a-z0-9][a-z0-9-]{0,31})", name);
            return WP_ERR_INVAL;
        }
        for (size_t i = 0; i < cfg->nservices; i++) {
            if (strcmp(cfg->services[i].name, name) == 0) {
                memmove(&cfg->services[i], &cfg->services[i + 1],
                        (cfg->nservices - i - 1) * sizeof(cfg->services[0]));
                cfg->nservices--;
                break;
            }
        }
        return 0;
    }
    na_service svc;
    int rc = na_service_parse(spec, &svc, err, cap);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < cfg->nservices; i++) {
        if (strcmp(cfg->services[i].name, svc.name) == 0) {
            cfg->services[i] = svc; /* later definitions replace earlier ones */
            return 0;
        }
    }
    if (cfg->nservices >= NA_MAX_SERVICES) {
        snprintf(err, cap, "too many services (at most %d)", NA_MAX_SERVICES);
        return WP_ERR_INVAL;
    }
    cfg->services[cfg->nservices++] = svc;
    return 0;
}

static int na_config_add_label(na_config *cfg, const char *kv, char *err, size_t cap)
{
    const char *eq = strchr(kv, '=');
    size_t klen = eq ? (size_t)(eq - kv) : 0;
    if (!eq || klen == 0 || klen >= sizeof(cfg->labels[0].key) ||
        strlen(eq + 1) >= sizeof(cfg->labels[0].value)) {
        snprintf(err, cap, "--label %.80s: expected key=value (key < 64, value < 128 bytes)", kv);
        return WP_ERR_INVAL;
    }
    for (size_t i = 0; i < klen; i++) {
        char c = kv[i];
        if (!(isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.' || c == '/')) {
            snprintf(err, cap, "--label %.80s: key may hold only [A-Za-z0-9._/-]", kv);
            return WP_ERR_INVAL;
        }
    }
    for (const char *p = eq + 1; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            snprintf(err, cap, "--label %.*s: value holds a control character", (int)klen, kv);
            return WP_ERR_INVAL;
        }
    }
    if (cfg->nlabels >= NA_MAX_LABELS) {
        snprintf(err, cap, "too many labels (at most %d)", NA_MAX_LABELS);
        return WP_ERR_INVAL;
    }
    na_label *l = &cfg->labels[cfg->nlabels++];
    memcpy(l->key, kv, klen);
    l->key[klen] = '\0';
    snprintf(l->value, sizeof(l->value), "%s", eq + 1);
    return 0;
}

int na_config_parse(na_config *cfg, int argc, char **argv, wp_opts_getenv_fn getenv_fn, char *err,
                    size_t cap)
{
    struct na_config_raw raw = {0};
    wp_opt table[NA_CONFIG_OPTS_MAX];
    const char *pos[4];
    size_t npos = 0;
    int rc;

    memset(cfg, 0, sizeof(*cfg));
    cfg->max_sessions = 4;
    cfg->status_listen = NA_DEFAULT_STATUS_LISTEN;
    cfg->sysfs_root = "/sys";
    cfg->nvml_lib = "libnvidia-ml.so.1";
    cfg->log_format = WP_LOG_FMT_LOGFMT;
    cfg->log_level = WP_LOG_INFO;
    cfg->sandbox_name_pattern = NA_DEFAULT_SANDBOX_NAMES;
    cfg->probe_interval_s = 10;
    cfg->probe_timeout_s = 5;
    cfg->probe_tls_timeout_s = 10;
    cfg->wolf_https = NA_DEFAULT_WOLF_HTTPS;
    cfg->wolf_restart_after = 3;
    cfg->wolf_restart_cooldown_s = 300;

    size_t n = na_config_table(cfg, &raw, table, sizeof(table) / sizeof(table[0]));
    rc = wp_opts_parse(table, n, argc, argv, 1, getenv_fn, pos, 4, &npos, err, cap);
    if (rc != 0)
        return rc;
    if (raw.help || (npos > 0 && strcmp(pos[0], "help") == 0)) {
        cfg->command = NA_CMD_HELP;
        return 0;
    }
    if (raw.version || (npos > 0 && strcmp(pos[0], "version") == 0)) {
        cfg->command = NA_CMD_VERSION;
        return 0;
    }
    cfg->command = NA_CMD_RUN;
    if (npos > 0) {
        if (strcmp(pos[0], "run") == 0) {
            cfg->command = NA_CMD_RUN;
        } else if (strcmp(pos[0], "probe") == 0) {
            cfg->command = NA_CMD_PROBE;
        } else {
            snprintf(err, cap, "unknown command '%.64s' (see --help)", pos[0]);
            return WP_ERR_INVAL;
        }
        if (npos > 1) {
            snprintf(err, cap, "unexpected argument '%.64s' (see --help)", pos[1]);
            return WP_ERR_INVAL;
        }
    }
    if ((rc = wp_opts_log_apply(raw.log_format, raw.log_level, &cfg->log_format, &cfg->log_level,
                                err, cap)) != 0)
        return rc;
    if (raw.node_id) {
        if (!na_node_id_valid(raw.node_id)) {
            snprintf(err, cap,
                     "--node-id '%.80s' is invalid: use 1-63 of [a-z0-9-], starting with a "
                     "letter or digit",
                     raw.node_id);
            return WP_ERR_INVAL;
        }
        snprintf(cfg->node_id, sizeof(cfg->node_id), "%s", raw.node_id);
    } else {
        char host[256] = {0};
        if (gethostname(host, sizeof(host) - 1) != 0)
            host[0] = '\0';
        for (char *p = host; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        char *dot = strchr(host, '.');
        if (dot)
            *dot = '\0';
        if (!na_node_id_valid(host)) {
            snprintf(
                err, cap,
                "host name '%.80s' is not a valid node id: set --node-id ([a-z0-9][a-z0-9-]{0,62})",
                host);
            return WP_ERR_INVAL;
        }
        memcpy(cfg->node_id, host, strlen(host) + 1); /* valid ids fit: <= NA_NODE_ID_MAX */
    }
    if (raw.ca_pin) {
        if (wp_tls_pin_parse(raw.ca_pin, cfg->ca_pin) != 0) {
            snprintf(err, cap, "--ca-pin: expected sha256:<64 hex digits>");
            return WP_ERR_INVAL;
        }
        cfg->has_ca_pin = 1;
    }
    if (cfg->token && cfg->token_file) {
        snprintf(err, cap, "--token and --token-file are mutually exclusive");
        return WP_ERR_INVAL;
    }
    for (size_t i = 0; i < sizeof(na_default_services) / sizeof(na_default_services[0]); i++) {
        rc = na_config_add_service(cfg, na_default_services[i], err, cap);
        if (rc != 0)
            return rc;
    }
    for (size_t i = 0; i < cfg->raw_services.n; i++) {
        rc = na_config_add_service(cfg, cfg->raw_services.items[i], err, cap);
        if (rc != 0)
            return rc;
    }
    for (size_t i = 0; i < cfg->raw_labels.n; i++) {
        rc = na_config_add_label(cfg, cfg->raw_labels.items[i], err, cap);
        if (rc != 0)
            return rc;
    }
    if (strcmp(cfg->wolf_https, "none") != 0) {
        char host[256];
        int port = 0;
        if (wp_hostport_split(cfg->wolf_https, host, sizeof(host), &port) != 0 || port <= 0) {
            snprintf(err, cap, "--wolf-https: expected host:port or none");
            return WP_ERR_INVAL;
        }
    }
    if (strcasecmp(cfg->status_listen, "none") != 0) {
        struct sockaddr_storage ss;
        socklen_t sl;
        if (wp_addr_parse(cfg->status_listen, -1, &ss, &sl) != 0) {
            snprintf(err, cap, "--status-listen: expected IP:PORT, [IPv6]:PORT or none");
            return WP_ERR_INVAL;
        }
    }
    if (cfg->wolf_restart_cmd && !cfg->wolf_restart_cmd[0])
        cfg->wolf_restart_cmd = NULL; /* empty = not configured */
    rc = na_config_sandbox(cfg, err, cap);
    if (rc != 0)
        return rc;
    if (cfg->command == NA_CMD_RUN && cfg->url && strncmp(cfg->url, "wss://", 6) != 0 &&
        strncmp(cfg->url, "https://", 8) != 0) {
        snprintf(err, cap, "--url must start with wss:// (or https://)");
        return WP_ERR_INVAL;
    }
    return 0;
}

void na_config_free(na_config *cfg)
{
    wp_strlist_free(&cfg->raw_services);
    wp_strlist_free(&cfg->raw_labels);
    wp_strlist_free(&cfg->raw_sandbox_ports);
}

void na_config_usage(FILE *out)
{
    na_config cfg;
    struct na_config_raw raw;
    wp_opt table[NA_CONFIG_OPTS_MAX];
    memset(&cfg, 0, sizeof(cfg));
    memset(&raw, 0, sizeof(raw));
    size_t n = na_config_table(&cfg, &raw, table, sizeof(table) / sizeof(table[0]));
    wp_opts_usage(out, table, n);
}
