/*
 * proxy.h — two-level routing: HTTP requests from API clients forwarded
 * through a node's tunnel to one of its services, streamed both ways.
 *
 *   ANY /api/v1/nodes/{id}/proxy/{service}/{path...}   admin: any allow-listed service
 *   ANY /api/v1/sessions/{id}/moonlight/{path...}      owner or admin: the session node's
 *                                                      Moonlight Web (credentials injected)
 *   ANY /api/v1/sessions/{id}/sandbox/{path...}        owner or admin: the session's sandbox
 *                                                      container (agent service `sandbox`)
 *
 * The request is rewritten (request line = the remainder path and query,
 * Host = the service name, hop-by-hop headers and the client's credentials
 * dropped, X-Forwarded-For/-Proto added, "Connection: close": one request per
 * stream), its body streamed (Content-Length kept, chunked re-chunked), the
 * response head parsed (llhttp) and its body streamed back as it arrives:
 * Content-Length passed through, chunked and read-to-EOF bodies sent
 * chunked. A WebSocket upgrade answered 101 by the service becomes a byte
 * bridge (bridge.h). Memory per request: one stream window plus the
 * client's write queue.
 *
 * Errors (JSON): 400 bad_request, 401/403, 404 not_found (unknown node or
 * session, or another user's session), 409 session_not_running, 502
 * node_unreachable (no tunnel), 502 upstream_refused (details.reason = the
 * agent's reason: not_allowed, refused, unreachable, timeout, ...), 502
 * bad_gateway (malformed or missing response), 503 tunnel_busy, 504
 * upstream_timeout (no response head within --proxy-timeout).
 */
#ifndef CP_PROXY_H
#define CP_PROXY_H

#include "server.h"

/*
 * Registers the three routes on s->http and loads the Moonlight Web
 * credentials (s->cfg: --moonlight-credentials-file or
 * WOLFPACK_MOONLIGHT_CREDENTIALS; registered as a log secret). One server per
 * process (the configuration is process-wide). Returns 0, WP_ERR_IO (the
 * credentials file cannot be read, or is empty or too large), or a router
 * error.
 */
int cp_proxy_register(cp_server *s);

#endif
