/*
 * proxy.h — the agent's egress through an HTTP proxy (HTTPS_PROXY / NO_PROXY).
 *
 * When a proxy is configured and the control plane's host is not excluded by
 * NO_PROXY, the tunnel's TCP connection is made by libcurl (CONNECT_ONLY over
 * the loop, common/curl_uv.h) as an HTTP CONNECT tunnel through the proxy,
 * with Basic proxy authentication from the proxy URL's user info
 * (percent-decoded by libcurl); the connected socket is then handed to
 * wp_conn_open_fd() for TLS and the WebSocket exactly as a direct dial. TLS
 * and its verification are end to end: the proxy sees only ciphertext.
 *
 * Environment, like curl: https_proxy wins over HTTPS_PROXY, no_proxy over
 * NO_PROXY; empty values count as unset. A proxy URL without a scheme is
 * http://; http, https (TLS to the proxy), socks4, socks4a, socks5 and socks5h
 * are accepted. NO_PROXY is a comma (or space) separated list: "*" matches
 * every host; a name matches itself and its subdomains (a leading "." is
 * ignored: "example.com" and ".example.com" both match "cp.example.com");
 * IP literals match exactly, or by CIDR ("10.0.0.0/8", "fd00::/8");
 * "host:port" (or "[v6]:port") matches only that port. Matching is
 * case-insensitive and ignores a trailing dot.
 *
 * Credentials in the proxy URL are registered as log secrets and never
 * logged; na_proxy_display() is the URL without them.
 */
#ifndef NA_PROXY_H
#define NA_PROXY_H

#include <stddef.h>

#include <uv.h>

#include "conn.h"
#include "opts.h"
#include "tls.h"

#define NA_PROXY_URL_MAX   2048
#define NA_PROXY_DIALS_MAX 4 /* concurrent tunnel dials through the proxy */

/*
 * The proxy settings from the environment: *proxy from https_proxy /
 * HTTPS_PROXY, *noproxy from no_proxy / NO_PROXY (lowercase wins; NULL when
 * unset or empty). Pure apart from getenv_fn.
 */
void na_proxy_from_env(wp_opts_getenv_fn getenv_fn, const char **proxy, const char **noproxy);

/* 1 if the NO_PROXY list excludes host (name or IP literal, no brackets) on port. Pure. */
int na_proxy_excluded(const char *noproxy, const char *host, int port);

typedef struct na_proxy na_proxy;

/*
 * Validates proxy_url and prepares the dialer (no I/O yet; the curl multi is
 * created here). noproxy may be NULL. curl_global_init must have run.
 * Returns 0 with *out set, WP_ERR_CONFIG (malformed URL, unsupported scheme,
 * a path/query, over NA_PROXY_URL_MAX: one-line reason without credentials
 * in err), WP_ERR_NOMEM or WP_ERR_INTERNAL.
 */
int na_proxy_new(uv_loop_t *loop, const char *proxy_url, const char *noproxy, na_proxy **out,
                 char *err, size_t cap);

/* The proxy URL without credentials, e.g. "http://proxy.corp:3128". Never NULL. */
const char *na_proxy_display(const na_proxy *p);
/* 1 if the proxy URL carries a user name (Basic authentication). */
int na_proxy_has_auth(const na_proxy *p);
/* 1 if a dial to host:port goes through the proxy (NO_PROXY does not exclude it). */
int na_proxy_applies(const na_proxy *p, const char *host, int port);

/*
 * A wp_ws_dial_fn (ws.h) with p as dial_ud: CONNECT host:port through the
 * proxy within timeout_ms, then wp_conn_open_fd() with tls/server_name for
 * the rest of it. cb runs exactly once from the loop unless this returns a
 * WP_ERR_*: a failure at the proxy stage is reported as WP_ERR_IO (or
 * WP_ERR_TIMEOUT) and recorded for na_proxy_take_failure(). tls must outlive
 * the dial. Returns 0, WP_ERR_INVAL, WP_ERR_LIMIT (NA_PROXY_DIALS_MAX dials
 * pending), WP_ERR_STATE (closing), WP_ERR_NOMEM or WP_ERR_INTERNAL.
 */
int na_proxy_dial(void *p, uv_loop_t *loop, const char *host, int port, wp_tls_conf *tls,
                  const char *server_name, int timeout_ms, wp_conn_connect_cb cb, void *cud);

/*
 * If the last dial reported failed at the proxy stage: returns 1 with its
 * one-line reason in msg (e.g. "proxy authentication failed (407)") and
 * forgets it; else 0.
 */
int na_proxy_take_failure(na_proxy *p, char *msg, size_t cap);

/*
 * The agent's egress at start: reads the environment (na_proxy_from_env with
 * getenv_fn, NULL = getenv), and when a proxy is set and NO_PROXY does not
 * exclude the host:port of tunnel_url ("wss://host[:port]/..."), creates the
 * dialer; logs which proxy is used (without credentials) or why not.
 * Returns 0 with *out set (NULL: dial directly), or na_proxy_new's errors
 * (WP_ERR_CONFIG with a reason in err).
 */
int na_proxy_setup(uv_loop_t *loop, const char *tunnel_url, wp_opts_getenv_fn getenv_fn,
                   na_proxy **out, char *err, size_t cap);

/*
 * Cancels pending dials (their cb runs now with WP_ERR_CLOSED; call from a
 * loop callback, not from inside a dial's cb), closes the curl multi and frees
 * p; closed(ud) (may be NULL) runs once its handles are closed. NULL p is
 * ignored.
 */
void na_proxy_close(na_proxy *p, void (*closed)(void *ud), void *ud);

#endif
