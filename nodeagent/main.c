/*
 * main.c — wolfpack-agent entry point: subcommand dispatch (run, probe,
 * version, help) over the configuration parsed in config.c; `run` loads the
 * token and hands over to the tunnel client (agent.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "agent.h"
#include "config.h"
#include "crypto.h"
#include "err.h"
#include "gpu.h"
#include "json.h"
#include "log.h"
#include "rlimit.h"
#include "version.h"
#include "wolfprobe.h"

#define NA_TOKEN_FILE_MAX 4096

/*
 * Reads the token file (at start, before the loop runs) into out, without
 * trailing whitespace. Returns 0, or WP_ERR_IO / WP_ERR_LIMIT with a reason.
 */
static int na_read_token_file(const char *path, char *out, size_t cap, char *err, size_t ecap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, ecap, "--token-file %s: %s", path, strerror(errno));
        return WP_ERR_IO;
    }
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, out + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, ecap, "--token-file %s: %s", path, strerror(errno));
            close(fd);
            return WP_ERR_IO;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len == cap - 1) {
            char c;
            if (read(fd, &c, 1) > 0) {
                snprintf(err, ecap, "--token-file %s: longer than %zu bytes", path, cap - 2);
                close(fd);
                wp_secure_zero(out, cap);
                return WP_ERR_LIMIT;
            }
            break;
        }
    }
    close(fd);
    while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == '\r' || out[len - 1] == ' ' ||
                       out[len - 1] == '\t'))
        len--;
    out[len] = '\0';
    return 0;
}

static int na_cmd_run(const na_config *cfg)
{
    char err[512] = "";
    static char token_buf[NA_TOKEN_FILE_MAX + 2];
    const char *token = cfg->token;
    int rc = na_agent_check_config(cfg, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "wolfpack-agent: %s\n", err);
        return 2;
    }
    if (!cfg->url) {
        fprintf(stderr, "wolfpack-agent: --url is required (wss://host:port)\n");
        return 2;
    }
    if (cfg->token_file) {
        if (na_read_token_file(cfg->token_file, token_buf, sizeof(token_buf), err, sizeof(err)) !=
            0) {
            fprintf(stderr, "wolfpack-agent: %s\n", err);
            return 2;
        }
        token = token_buf;
    }
    if (!token || !token[0]) {
        fprintf(stderr, "wolfpack-agent: an agent token is required (--token-file or --token)\n");
        return 2;
    }
    if (wp_log_secret_add(token) != 0) {
        fprintf(stderr, "wolfpack-agent: the agent token is too short to be real\n");
        return 2;
    }
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) {
        fprintf(stderr, "wolfpack-agent: cannot create the event loop\n");
        return 1;
    }
    na_sandbox_policy sb;
    na_sandbox_policy_from_config(&sb, cfg);
    na_agent_opts opts = {.cfg = cfg, .token = token, .sb = &sb, .drain_timeout_ms = 0};
    /* libcurl (Wolf/Moonlight health probes) is set up once here, before any easy handle. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "wolfpack-agent: cannot initialise libcurl\n");
        uv_loop_close(&loop);
        return 1;
    }
    rc = na_agent_run(&loop, &opts, err, sizeof(err));
    curl_global_cleanup();
    wp_secure_zero(token_buf, sizeof(token_buf));
    int lc = uv_loop_close(&loop);
    if (rc != 0) {
        fprintf(stderr, "wolfpack-agent: %s\n", err[0] ? err : wp_strerror(rc));
        return rc == WP_ERR_CONFIG ? 2 : 1;
    }
    if (lc != 0) {
        wp_log_error("event loop still had open handles at exit");
        return 1;
    }
    return 0;
}

/* "api: timeout; https: connection refused" from the failed checks of a probe round. */
static void na_probe_reasons(const cJSON *services, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    for (const cJSON *c = services ? services->child : NULL; c && len + 1 < cap; c = c->next) {
        const cJSON *ok = cJSON_GetObjectItemCaseSensitive(c, "ok");
        if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "configured")) || cJSON_IsTrue(ok))
            continue;
        const char *e = wp_json_get_str(c, "error");
        int n = snprintf(out + len, cap - len, "%s%s: %s", len ? "; " : "", c->string,
                         e ? e : "failed");
        if (n < 0)
            break;
        len += (size_t)n < cap - len ? (size_t)n : cap - len - 1;
    }
}

/*
 * `wolfpack-agent probe`: one JSON object on stdout, {"node_id", "version",
 * "gpu": <hello gpu object, with memory/utilization>, "services": <one round
 * of the health checks, wolfprobe.h>, "healthy"}. healthy = every configured
 * check passed, Moonlight Web's included (the GPU inventory, even "none", does
 * not decide it).
 * Exit 0 healthy, 1 unhealthy or a check could not run (reason on stderr),
 * 2 bad configuration.
 */
static int na_cmd_probe(const na_config *cfg)
{
    char err[512] = "";
    if (na_agent_check_config(cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "wolfpack-agent: %s\n", err);
        return 2;
    }
    na_gpu *g = NULL;
    int rc = na_gpu_open(&g, cfg->sysfs_root, cfg->nvml_lib);
    if (rc != 0) {
        if (rc == WP_ERR_CONFIG)
            fprintf(stderr, "wolfpack-agent: --sysfs-root %s: not a directory\n", cfg->sysfs_root);
        else
            fprintf(stderr, "wolfpack-agent: GPU inventory: %s\n", wp_strerror(rc));
        return rc == WP_ERR_CONFIG ? 2 : 1;
    }
    na_gpu_inventory *inv = calloc(1, sizeof(*inv));
    cJSON *gpu = inv && na_gpu_collect(g, inv) == 0 ? na_gpu_inventory_json(inv) : NULL;
    free(inv);
    na_gpu_close(g);

    /* Service health: one round of the agent's own checks (nodeagent/wolfprobe.c). */
    cJSON *services = NULL;
    int healthy = 0;
    uv_loop_t loop;
    int curl_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
    if (!curl_ok) {
        snprintf(err, sizeof(err), "cannot initialise libcurl");
    } else if (uv_loop_init(&loop) != 0) {
        snprintf(err, sizeof(err), "cannot create the event loop");
    } else {
        rc = na_wolfprobe_run_once(&loop, cfg, &services, &healthy, err, sizeof(err));
        if (rc != 0)
            healthy = 0;
        /* The node's health (degraded) is Wolf's alone, but install.sh asks about every
         * service this agent is configured to reach: Moonlight Web counts here too. */
        for (const cJSON *c = services ? services->child : NULL; healthy && c; c = c->next)
            if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "configured")) &&
                !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "ok")))
                healthy = 0;
        uv_run(&loop, UV_RUN_DEFAULT);
        (void)uv_loop_close(&loop);
    }
    if (curl_ok)
        curl_global_cleanup();
    if (!healthy && !err[0])
        na_probe_reasons(services, err, sizeof(err));

    cJSON *o = cJSON_CreateObject();
    char *text = NULL;
    if (o && gpu && cJSON_AddStringToObject(o, "node_id", cfg->node_id) &&
        cJSON_AddStringToObject(o, "version", wp_version())) {
        cJSON_AddItemToObject(o, "gpu", gpu);
        gpu = NULL;
        if (services)
            cJSON_AddItemToObject(o, "services", services);
        else
            cJSON_AddObjectToObject(o, "services");
        services = NULL;
        if (cJSON_AddBoolToObject(o, "healthy", healthy ? 1 : 0))
            text = cJSON_Print(o);
    }
    cJSON_Delete(o);
    cJSON_Delete(gpu);
    cJSON_Delete(services);
    if (!text) {
        fprintf(stderr, "wolfpack-agent: out of memory\n");
        return 1;
    }
    printf("%s\n", text);
    cJSON_free(text);
    fflush(stdout);
    if (healthy)
        return 0;
    fprintf(stderr, "wolfpack-agent: unhealthy: %s\n", err[0] ? err : "a service check failed");
    return 1;
}

static void na_usage(FILE *out)
{
    fprintf(out,
            "Usage: wolfpack-agent [run] [flags]\n"
            "       wolfpack-agent probe [flags]\n"
            "       wolfpack-agent version | help\n"
            "\n"
            "wolfpack-agent runs on a GPU node. It dials OUT to the wolfpack control plane over\n"
            "TLS WebSocket (the node opens no inbound port), then serves reverse streams from the\n"
            "control plane to an allow-list of local services (Wolf's API socket, Moonlight Web,\n"
            "a session's sandbox container), and reports GPU inventory and Wolf health.\n"
            "\n"
            "Commands:\n"
            "  run      connect to the control plane and serve this node (the default)\n"
            "  probe    print GPU inventory and the health of every service as JSON; exit 0 when\n"
            "           healthy, 1 with the reason on stderr otherwise, 2 on bad flags\n"
            "  version  print version, commit and build time\n"
            "\n"
            "Flags (each also settable through the environment variable shown):\n");
    na_config_usage(out);
    fprintf(out,
            "\n"
            "Verification: the control plane's certificate is always verified: against the\n"
            "system CAs, --ca-file, or --ca-pin (the pin wolfpackd prints on first run).\n"
            "Egress: HTTPS_PROXY/https_proxy and NO_PROXY are honoured (HTTP CONNECT).\n"
            "Signals: SIGTERM/SIGINT drain (no new streams, finish open ones) and exit.\n"
            "\n"
            "Example:\n"
            "  wolfpack-agent --url wss://cp.example.com:8443 --token-file /etc/wolfpack/token \\\n"
            "      --ca-pin sha256:<hex> --label region=eu --max-sessions 8\n");
}

int main(int argc, char **argv)
{
    na_config cfg;
    char err[512];
    int rc;

    signal(SIGPIPE, SIG_IGN);
    rc = na_config_parse(&cfg, argc, argv, wp_opts_getenv, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "wolfpack-agent: %s\n", err);
        na_config_free(&cfg);
        return 2;
    }
    wp_log_set_format(cfg.log_format);
    wp_log_set_level(cfg.log_level);
    wp_rlimit_raise_nofile(); /* up to the hard limit: one descriptor per open stream */
    switch (cfg.command) {
    case NA_CMD_HELP:
        na_usage(stdout);
        rc = 0;
        break;
    case NA_CMD_VERSION:
        wp_version_print("wolfpack-agent");
        rc = 0;
        break;
    case NA_CMD_PROBE:
        rc = na_cmd_probe(&cfg);
        break;
    default:
        rc = na_cmd_run(&cfg);
        break;
    }
    na_config_free(&cfg);
    return rc;
}
