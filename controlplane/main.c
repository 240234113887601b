/*
 * main.c — wolfpackd entry point: parse configuration, set up logging, start the
 * store (database) and the server on one libuv loop, handle signals
 * (SIGINT/SIGTERM: clean shutdown with every handle closed; SIGHUP: reload the
 * TLS certificate), exit. `wolfpackd migrate` applies migrations and exits.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "addr.h"
#include "bootstrap.h"
#include "config.h"
#include "err.h"
#include "fs.h"
#include "log.h"
#include "rlimit.h"
#include "server.h"
#include "store.h"
#include "version.h"

typedef struct cp_main {
    uv_loop_t loop;
    uv_signal_t sigint, sigterm, sighup;
    cp_config cfg;
    cp_server server;
    cp_store store;
    int server_started;
    int stopping;
    int exit_code;
} cp_main;

static void cp_usage(FILE *out)
{
    fprintf(out, "Usage: wolfpackd [serve] [flags]\n"
                 "       wolfpackd migrate [flags]\n"
                 "\n"
                 "wolfpackd is the wolfpack control plane: one HTTPS port serves the REST API,\n"
                 "the node tunnel endpoint, /healthz, /readyz and /version. With no flags it\n"
                 "generates a CA and a server certificate in the state directory, runs a private\n"
                 "PostgreSQL cluster there, mints an admin token and an agent join token on first\n"
                 "run, and prints the command that joins a GPU node.\n"
                 "\n"
                 "Commands:\n"
                 "  serve    run the control plane (the default)\n"
                 "  migrate  apply database migrations and exit\n"
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

static void cp_main_store_stopped(cp_store *st, void *ud)
{
    (void)st;
    cp_main_close_signals(ud);
}

static void cp_main_server_closed(cp_server *s)
{
    cp_main *m = s->data;
    cp_store_stop(&m->store, cp_main_store_stopped, m);
}

/* Stops everything: server first (no new requests), then the store, then the signals. */
static void cp_main_stop(cp_main *m)
{
    if (m->stopping)
        return;
    m->stopping = 1;
    if (m->server_started)
        cp_server_stop(&m->server, cp_main_server_closed);
    else
        cp_store_stop(&m->store, cp_main_store_stopped, m);
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
    wp_log_info("shutting down", WP_LS("signal", signum == SIGINT ? "SIGINT" : "SIGTERM"));
    cp_main_stop(m);
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
        (m->cfg.command == CP_CMD_SERVE &&
         uv_signal_start(&m->sighup, cp_main_on_signal, SIGHUP) != 0))
        return WP_ERR_IO;
    return 0;
}

/* The wss:// URL agents dial: --advertise-url, else this host's name and the listen port. */
static void cp_main_join_url(cp_main *m, char *out, size_t cap)
{
    if (m->cfg.advertise_url) {
        snprintf(out, cap, "%s", m->cfg.advertise_url);
        return;
    }
    char host[256] = {0}, lhost[256];
    int port = 8443;
    if (wp_hostport_split(m->server.bound, lhost, sizeof(lhost), &port) != 0)
        lhost[0] = '\0';
    if (lhost[0] && strcmp(lhost, "0.0.0.0") != 0 && strcmp(lhost, "::") != 0) {
        snprintf(host, sizeof(host), strchr(lhost, ':') ? "[%s]" : "%s", lhost);
    } else if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') {
        snprintf(host, sizeof(host), "localhost");
    }
    snprintf(out, cap, "wss://%s:%d", host, port);
}

static void cp_main_store_ready(cp_store *st, int err, void *ud)
{
    (void)st;
    cp_main *m = ud;
    if (err != 0) {
        wp_log_error("cannot use the database, stopping", WP_LE("err", err));
        m->exit_code = 1;
        cp_main_stop(m);
        return;
    }
    if (m->cfg.command == CP_CMD_MIGRATE) {
        cp_main_stop(m);
        return;
    }
    char url[512];
    cp_main_join_url(m, url, sizeof(url));
    cp_bootstrap_print_join(stdout, m->cfg.state_dir, url, m->cfg.no_tls ? NULL : m->server.pin);
    wp_log_info("ready");
}

static void cp_walk_report(uv_handle_t *h, void *arg)
{
    (void)arg;
    wp_log_error("handle left open at exit", WP_LS("type", uv_handle_type_name(h->type)));
}

int main(int argc, char **argv)
{
    static cp_main m;
    char err[512];
    int rc;

    signal(SIGPIPE, SIG_IGN);
    rc = cp_config_parse(&m.cfg, argc, argv, wp_opts_getenv, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "wolfpackd: %s\n", err);
        cp_config_free(&m.cfg);
        return 2;
    }
    if (m.cfg.command == CP_CMD_HELP) {
        cp_usage(stdout);
        cp_config_free(&m.cfg);
        return 0;
    }
    if (m.cfg.command == CP_CMD_VERSION) {
        wp_version_print("wolfpackd");
        cp_config_free(&m.cfg);
        return 0;
    }
    wp_log_set_format(m.cfg.log_format);
    wp_log_set_level(m.cfg.log_level);
    long nofile = wp_rlimit_raise_nofile();
    if (nofile >= 0 && nofile < 4096)
        wp_log_warn("open-file limit is low for --max-connections and tunnel streams",
                    WP_LI("nofile", nofile));
    if (m.cfg.database_url)
        wp_log_secret_add(m.cfg.database_url);

    if (wp_mkdir_p(m.cfg.state_dir, 0700) != 0) {
        fprintf(stderr, "wolfpackd: cannot create state directory %s: %s\n", m.cfg.state_dir,
                strerror(errno));
        cp_config_free(&m.cfg);
        return 1;
    }
    uv_loop_init(&m.loop);
    cp_main_signals_init(&m);
    m.server.data = &m;
    m.server.store = &m.store;
    rc = cp_store_start(&m.store, &m.loop, &m.cfg,
                        m.cfg.command == CP_CMD_MIGRATE ? CP_STORE_MIGRATE : CP_STORE_SERVE,
                        cp_main_store_ready, &m, err, sizeof(err));
    if (rc == 0 && m.cfg.command == CP_CMD_SERVE) {
        rc = cp_server_start(&m.server, &m.loop, &m.cfg, err, sizeof(err));
        m.server_started = rc == 0;
    }
    if (rc == 0 && cp_main_signals_start(&m) != 0) {
        snprintf(err, sizeof(err), "cannot install signal handlers");
        rc = WP_ERR_IO;
    }
    if (rc != 0) {
        wp_log_error("cannot start", WP_LS("reason", err));
        m.exit_code = 1;
        cp_main_stop(&m);
    }
    uv_run(&m.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&m.loop) != 0) {
        uv_walk(&m.loop, cp_walk_report, NULL);
        wp_log_error("event loop did not close cleanly");
        m.exit_code = 1;
    } else if (m.exit_code == 0) {
        wp_log_info(m.cfg.command == CP_CMD_MIGRATE ? "migrations done" : "stopped");
    }
    cp_config_free(&m.cfg);
    wp_log_secret_clear();
    return m.exit_code;
}
