/*
 * main.c — wolfpackd entry point: parse configuration, set up logging, start the
 * server on one libuv loop, handle signals (SIGINT/SIGTERM: clean shutdown with
 * every handle closed; SIGHUP: reload the TLS certificate), exit.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "config.h"
#include "err.h"
#include "log.h"
#include "server.h"
#include "version.h"

typedef struct cp_main {
    uv_loop_t loop;
    uv_signal_t sigint, sigterm, sighup;
    cp_server server;
    int stopping;
    int exit_code;
} cp_main;

static void cp_usage(FILE *out)
{
    fprintf(out, "Usage: wolfpackd [flags]\n"
                 "\n"
                 "wolfpackd is the wolfpack control plane: one HTTPS port serves the REST API,\n"
                 "the node tunnel endpoint, /healthz, /readyz and /version. With no flags it\n"
                 "generates a CA and a server certificate in the state directory on first run\n"
                 "and logs the CA pin that agents use with --ca-pin.\n"
                 "\n"
                 "Flags (each also settable through the environment variable shown):\n");
    cp_config_usage(out);
    fprintf(out,
            "\n"
            "Signals: SIGINT/SIGTERM shut down cleanly; SIGHUP reloads the TLS certificate.\n");
}

static void cp_main_close_signals(cp_main *m)
{
    uv_close((uv_handle_t *)&m->sigint, NULL);
    uv_close((uv_handle_t *)&m->sigterm, NULL);
    uv_close((uv_handle_t *)&m->sighup, NULL);
}

static void cp_main_server_closed(cp_server *s)
{
    cp_main *m = s->data;
    cp_main_close_signals(m);
}

static void cp_main_on_signal(uv_signal_t *h, int signum)
{
    cp_main *m = h->data;
    if (signum == SIGHUP) {
        wp_log_info("SIGHUP: reloading tls certificate");
        cp_server_reload_tls(&m->server);
        return;
    }
    if (m->stopping) {
        wp_log_warn("second signal: exiting immediately", WP_LI("signal", signum));
        exit(1);
    }
    m->stopping = 1;
    wp_log_info("shutting down", WP_LS("signal", signum == SIGINT ? "SIGINT" : "SIGTERM"));
    cp_server_stop(&m->server, cp_main_server_closed);
}

/* Initializes the three signal handles (always; they are closed at shutdown). */
static void cp_main_signals_init(cp_main *m)
{
    uv_signal_init(&m->loop, &m->sigint);
    uv_signal_init(&m->loop, &m->sigterm);
    uv_signal_init(&m->loop, &m->sighup);
    m->sigint.data = m->sigterm.data = m->sighup.data = m;
}

static int cp_main_signals_start(cp_main *m)
{
    if (uv_signal_start(&m->sigint, cp_main_on_signal, SIGINT) != 0 ||
        uv_signal_start(&m->sigterm, cp_main_on_signal, SIGTERM) != 0 ||
        uv_signal_start(&m->sighup, cp_main_on_signal, SIGHUP) != 0)
        return WP_ERR_IO;
    return 0;
}

static void cp_walk_report(uv_handle_t *h, void *arg)
{
    (void)arg;
    wp_log_error("handle left open at exit", WP_LS("type", uv_handle_type_name(h->type)));
}

int main(int argc, char **argv)
{
    static cp_main m;
    cp_config cfg;
    char err[512];
    int rc;

    signal(SIGPIPE, SIG_IGN);
    rc = cp_config_parse(&cfg, argc, argv, wp_opts_getenv, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "wolfpackd: %s\n", err);
        cp_config_free(&cfg);
        return 2;
    }
    if (cfg.command == CP_CMD_HELP) {
        cp_usage(stdout);
        cp_config_free(&cfg);
        return 0;
    }
    if (cfg.command == CP_CMD_VERSION) {
        wp_version_print("wolfpackd");
        cp_config_free(&cfg);
        return 0;
    }
    wp_log_set_format(cfg.log_format);
    wp_log_set_level(cfg.log_level);

    uv_loop_init(&m.loop);
    cp_main_signals_init(&m);
    m.server.data = &m;
    rc = cp_server_start(&m.server, &m.loop, &cfg, err, sizeof(err));
    if (rc != 0) {
        wp_log_error("cannot start", WP_LS("reason", err));
        m.exit_code = 1;
        cp_main_close_signals(&m);
    } else if (cp_main_signals_start(&m) != 0) {
        wp_log_error("cannot install signal handlers");
        m.exit_code = 1;
        m.stopping = 1;
        cp_server_stop(&m.server, cp_main_server_closed);
    }
    uv_run(&m.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&m.loop) != 0) {
        uv_walk(&m.loop, cp_walk_report, NULL);
        wp_log_error("event loop did not close cleanly");
        m.exit_code = 1;
    } else if (m.exit_code == 0) {
        wp_log_info("stopped");
    }
    cp_config_free(&cfg);
    return m.exit_code;
}
