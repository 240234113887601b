/*
 * tunnel_int.h — internals shared by tunnel.c (registry, tunnels, streams) and
 * connect.c / bridge.c (CONNECT and the byte bridge); not for other modules (use tunnel.h).
 */
#ifndef CP_TUNNEL_INT_H
#define CP_TUNNEL_INT_H

#include "http.h"
#include "server.h"
#include "tunnel.h"

/*
 * A CONNECT bridge as the registry sees it: linked while it holds a hijacked
 * connection, so that shutdown can close it. force_close must start closing
 * the bridge (its unlink follows later, from the loop).
 */
typedef struct cp_bridge_link {
    struct cp_bridge_link *prev, *next;
    void (*force_close)(struct cp_bridge_link *l);
} cp_bridge_link;

/* Links l into s's registry. Returns 0, or WP_ERR_CLOSED (no registry, or shutting down). */
int cp_tunnels_bridge_link(cp_server *s, cp_bridge_link *l);

/* Unlinks l (linked with cp_tunnels_bridge_link on the same s; s->tunnels may be shutting down). */
void cp_tunnels_bridge_unlink(cp_server *s, cp_bridge_link *l);

/* Nonzero when s has a registry that is not shutting down. */
int cp_tunnels_running(const cp_server *s);

/* connect.c: the CONNECT handler (ud = the cp_server), set by cp_tunnels_init. */
void cp_connect_handler(wp_http_req *req, void *ud);

#endif
