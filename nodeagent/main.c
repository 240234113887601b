/*
 * main.c — wolfpack-agent entry point: subcommand dispatch (run, probe,
 * version, help) over the configuration parsed in config.c.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "config.h"
#include "err.h"
#include "log.h"
#include "version.h"

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
            "           healthy, non-zero with the reason otherwise\n"
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
    switch (cfg.command) {
    case NA_CMD_HELP:
        na_usage(stdout);
        rc = 0;
        break;
    case NA_CMD_VERSION:
        wp_version_print("wolfpack-agent");
        rc = 0;
        break;
    default:
        /* The tunnel client (run) and the probes arrive with their own issues; until then
         * the agent validates its configuration and says plainly that it cannot serve. */
        fprintf(stderr,
                "wolfpack-agent: configuration is valid (node id %s, %zu services); this build "
                "has no tunnel client or probes yet\n",
                cfg.node_id, cfg.nservices);
        rc = 3;
        break;
    }
    na_config_free(&cfg);
    return rc;
}
