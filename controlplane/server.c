/*
 * server.c — wolfpackd's listener, TLS material and built-in routes (see server.h).
 */
#include "server.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "api_events.h"
#include "api_nodes.h"
#include "api_sessions.h"
#include "api_tokens.h"
#include "proxy.h"
#include "cert.h"
#include "err.h"
#include "fs.h"
#include "log.h"
#include "sessions.h"
#include "tunnel.h"
#include "version.h"

static int cp_server_prepare_tls(cp_server *s, char *err, size_t cap)
{
    const cp_config *cfg = s->cfg;
    uint8_t pin[WP_SHA256_LEN];
    int rc;

    if (cfg->tls_cert) {
        snprintf(s->cert_file, sizeof(s->cert_file), "%s", cfg->tls_cert);
        snprintf(s->key_file, sizeof(s->key_file), "%s", cfg->tls_key);
        rc = wp_tls_pin_from_cert_file(s->cert_file, pin);
        if (rc != 0) {
            snprintf(err, cap, "cannot read certificate %s: %s", s->cert_file, wp_strerror(rc));
            return rc;
        }
        wp_tls_pin_format(pin, s->pin, sizeof(s->pin));
        wp_log_info("tls certificate loaded", WP_LS("cert", s->cert_file),
                    WP_LS("spki_pin", s->pin));
        return 0;
    }

    char dir[4096];
    wp_cert_paths paths;
    int generated = 0;
    if (snprintf(dir, sizeof(dir), "%s/tls", cfg->state_dir) >= (int)sizeof(dir)) {
        snprintf(err, cap, "state directory path too long");
        return WP_ERR_INVAL;
    }
    if (wp_mkdir_p(dir, 0700) != 0) {
        snprintf(err, cap, "cannot create %s: %s", dir, strerror(errno));
        return WP_ERR_IO;
    }
    const char *sans[WP_STRLIST_MAX + 1];
    for (size_t i = 0; i < cfg->tls_sans.n; i++)
        sans[i] = cfg->tls_sans.items[i];
    sans[cfg->tls_sans.n] = NULL;
    rc = wp_cert_ensure(dir, sans, &paths, &generated, err, cap);
    if (rc != 0)
        return rc;
    snprintf(s->cert_file, sizeof(s->cert_file), "%s", paths.server_crt);
    snprintf(s->key_file, sizeof(s->key_file), "%s", paths.server_key);
    snprintf(s->ca_file, sizeof(s->ca_file), "%s", paths.ca_crt);
    rc = wp_tls_pin_from_cert_file(paths.ca_crt, pin);
    if (rc != 0) {
        snprintf(err, cap, "cannot read %s: %s", paths.ca_crt, wp_strerror(rc));
        return rc;
    }
    wp_tls_pin_format(pin, s->pin, sizeof(s->pin));
    wp_log_info(generated ? "generated tls certificate authority and server certificate"
                          : "using tls certificates from state directory",
                WP_LS("ca", s->ca_file), WP_LS("cert", s->cert_file), WP_LS("ca_pin", s->pin));
    return 0;
}

static int cp_server_load_tls(cp_server *s, char *err, size_t cap)
{
    wp_tls_conf *conf = NULL;
    int rc = wp_tls_conf_server_new(&conf, s->cert_file, s->key_file, err, cap);
    if (rc != 0)
        return rc;
    wp_http_server_set_tls(s->http, conf);
    wp_tls_conf_unref(conf);
    return 0;
}

int cp_server_reload_tls(cp_server *s)
{
    char err[256];
    if (s->cfg->no_tls)
        return 0;
    int rc = cp_server_load_tls(s, err, sizeof(err));
    if (rc != 0) {
        wp_log_error("tls reload failed, keeping the previous certificate", WP_LS("reason", err));
        return rc;
    }
    wp_log_info("tls certificate reloaded", WP_LS("cert", s->cert_file));
    return 0;
}

static void cp_route_healthz(wp_http_req *req, void *ud)
{
    (void)ud;
    static const char body[] = "{\"status\":\"ok\"}";
    wp_http_respond(req, 200, "application/json", body, sizeof(body) - 1);
}

int cp_server_require_db(cp_server *s, wp_http_req *req)
{
    if (s->store && cp_store_ready(s->store))
        return 0;
    wp_http_resp_header(req, "Retry-After", "5");
    wp_http_respond_error(req, 503, "database_unavailable",
                          "the database is not reachable or not migrated yet");
    return 1;
}

/* Ready: listening with TLS material loaded, and the database up, migrated, bootstrapped. */
static void cp_route_readyz(wp_http_req *req, void *ud)
{
    cp_server *s = ud;
    int db_ok = s->store && cp_store_ready(s->store);
    cJSON *o = cJSON_CreateObject();
    cJSON *checks = o ? cJSON_AddObjectToObject(o, "checks") : NULL;
    if (!checks || !cJSON_AddStringToObject(o, "status", db_ok ? "ready" : "not_ready") ||
        !cJSON_AddStringToObject(checks, "database", db_ok ? "ok" : "unavailable")) {
        cJSON_Delete(o);
        wp_http_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    wp_http_respond_json(req, db_ok ? 200 : 503, o);
    cJSON_Delete(o);
}

static void cp_route_version(wp_http_req *req, void *ud)
{
    (void)ud;
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "name", "wolfpackd") ||
        !cJSON_AddStringToObject(o, "version", wp_version()) ||
        !cJSON_AddStringToObject(o, "commit", wp_git_commit()) ||
        !cJSON_AddStringToObject(o, "build_time", wp_build_time())) {
        cJSON_Delete(o);
        wp_http_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    wp_http_respond_json(req, 200, o);
    cJSON_Delete(o);
}

int cp_server_start(cp_server *s, uv_loop_t *loop, const cp_config *cfg, char *err, size_t cap)
{
    int rc;
    void *data = s->data;
    cp_store *store = s->store;
    memset(s, 0, sizeof(*s));
    s->data = data;
    s->store = store;
    s->loop = loop;
    s->cfg = cfg;

    if (wp_mkdir_p(cfg->state_dir, 0700) != 0) {
        snprintf(err, cap, "cannot create state directory %s: %s", cfg->state_dir, strerror(errno));
        return WP_ERR_IO;
    }
    if (!cfg->no_tls) {
        rc = cp_server_prepare_tls(s, err, cap);
        if (rc != 0)
            return rc;
    }
    wp_http_limits lim;
    wp_http_limits_default(&lim);
    lim.max_connections = (size_t)cfg->max_connections;
    lim.max_handshakes = (size_t)cfg->max_handshakes;
    lim.header_timeout_ms = (unsigned)cfg->header_timeout_s * 1000u;
    lim.idle_timeout_ms = (unsigned)cfg->idle_timeout_s * 1000u;
    rc = wp_http_server_new(&s->http, loop, &lim);
    if (rc != 0) {
        snprintf(err, cap, "cannot create http server: %s", wp_strerror(rc));
        return rc;
    }
    if (!cfg->no_tls) {
        rc = cp_server_load_tls(s, err, cap);
        if (rc != 0)
            goto fail;
    }
    if ((rc = wp_http_server_route(s->http, "GET", "/healthz", cp_route_healthz, s, 0)) != 0 ||
        (rc = wp_http_server_route(s->http, "GET", "/readyz", cp_route_readyz, s, 0)) != 0 ||
        (rc = wp_http_server_route(s->http, "GET", "/version", cp_route_version, s, 0)) != 0 ||
        (rc = cp_api_tokens_register(s)) != 0 || (rc = cp_api_nodes_register(s)) != 0 ||
        (rc = cp_api_events_register(s)) != 0 || (rc = cp_api_sessions_register(s)) != 0 ||
        (rc = cp_tunnels_init(s)) != 0 || (rc = cp_proxy_register(s)) != 0 ||
        (rc = cp_sessions_init(s)) != 0) {
        snprintf(err, cap, "cannot register routes: %s", wp_strerror(rc));
        goto fail;
    }
    rc = wp_http_server_listen(s->http, cfg->listen, s->bound, sizeof(s->bound));
    if (rc != 0) {
        snprintf(err, cap, "cannot listen on %s: %s", cfg->listen, wp_strerror(rc));
        goto fail;
    }
    wp_log_info("listening", WP_LS("addr", s->bound), WP_LS("tls", cfg->no_tls ? "off" : "on"),
                WP_LS("version", wp_version()), WP_LS("commit", wp_git_commit()));
    if (cfg->no_tls)
        wp_log_warn("serving plain HTTP: only run this behind a TLS-terminating ingress");
    return 0;
fail:
    cp_server_stop(s, NULL);
    return rc;
}

static void cp_server_tunnels_closed(cp_server *s)
{
    if (s->on_closed)
        s->on_closed(s);
}

/* HTTP is down (no new tunnels or CONNECTs): now end the hijacked ones. */
static void cp_server_closed_cb(void *ud)
{
    cp_server *s = ud;
    s->http = NULL;
    cp_tunnels_shutdown(s, cp_server_tunnels_closed);
}

void cp_server_stop(cp_server *s, void (*on_closed)(cp_server *s))
{
    s->on_closed = on_closed;
    cp_sessions_shutdown(s);
    if (!s->http) {
        cp_tunnels_shutdown(s, cp_server_tunnels_closed);
        return;
    }
    wp_http_server_close(s->http, cp_server_closed_cb, s);
}
