/*
 * server.h — wolfpackd's HTTP front: the listener, its TLS configuration
 * (generated on first run or loaded from files, reloaded on SIGHUP) and the
 * routes served on the one port (/healthz, /readyz, /version; API resources
 * register themselves here as they arrive).
 */
#ifndef CP_SERVER_H
#define CP_SERVER_H

#include <uv.h>

#include "config.h"
#include "http.h"
#include "store.h"
#include "tls.h"

struct cp_call;
struct cp_tunnels;
struct cp_sessions;
typedef struct cp_sessions cp_sessions;

/* An authenticated API route (auth.c): which roles may call fn. */
typedef struct cp_api_route {
    struct cp_server *server;
    unsigned roles;
    void (*fn)(struct cp_call *call);
} cp_api_route;

#define CP_API_ROUTES_MAX 64

typedef struct cp_server {
    uv_loop_t *loop;
    const cp_config *cfg;
    wp_http_server *http;
    char cert_file[4096]; /* PEM chain in use (empty with --no-tls) */
    char key_file[4096];
    char ca_file[4096]; /* generated CA (empty when certificates are given) */
    char pin[80];       /* "sha256:<hex>" of the CA (or of the leaf when given) */
    char bound[128];    /* actual listen address */
    void (*on_closed)(struct cp_server *s);
    void *data;      /* owner's pointer, untouched by the server */
    cp_store *store; /* set by the owner before cp_server_start; readiness and the API use it */
    cp_api_route api_routes[CP_API_ROUTES_MAX];
    size_t napi_routes;
    struct cp_tunnels *tunnels;   /* agent tunnels (tunnel.h); NULL before start / after stop */
    struct cp_sessions *sessions; /* session lifecycle engine (sessions.h); NULL when stopped */
} cp_server;

/*
 * Prepares TLS material (generating it into <state-dir>/tls when none was
 * given), creates the HTTP server with all routes and starts listening.
 * Returns 0 or a WP_ERR_*, with a one-line reason in err.
 */
int cp_server_start(cp_server *s, uv_loop_t *loop, const cp_config *cfg, char *err, size_t cap);

/*
 * For API handlers: answers 503 database_unavailable and returns 1 when the
 * store is not ready; returns 0 when the handler may use the database.
 */
int cp_server_require_db(cp_server *s, wp_http_req *req);

/* Reloads certificate and key from disk; on failure keeps serving with the old ones. */
int cp_server_reload_tls(cp_server *s);

/*
 * Stops listening and closes every connection, then ends every agent tunnel
 * and CONNECT bridge (cp_tunnels_shutdown); on_closed(s) runs after the last
 * handle closed.
 */
void cp_server_stop(cp_server *s, void (*on_closed)(cp_server *s));

#endif
