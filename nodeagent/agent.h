/*
 * agent.h — wolfpack-agent's tunnel client: connect loop, control messages, mux session.
 *
 * na_agent_run() dials <url>/api/v1/tunnel over TLS WebSocket (PROTOCOL.md
 * §2), sends `hello`, waits for `welcome`, sends heartbeats at the interval
 * it names, and serves the streams the control plane opens (the mux in the
 * server role; each stream's local side is a na_stream, services.h). Any
 * tunnel loss or failed attempt is retried with full-jitter exponential
 * backoff (§9.3). SIGTERM/SIGINT drain (§10.1): `drain`, no new streams,
 * open streams finish within the drain timeout, `goaway` `drained`, Close;
 * then every handle is closed and the function returns. A second signal
 * ends the tunnel at once (`goaway` `shutdown`).
 *
 * The pure helpers below (backoff, URL, wire-limit checks, hello/welcome
 * JSON) are separate so that unit tests drive them directly.
 */
#ifndef NA_AGENT_H
#define NA_AGENT_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "config.h"
#include "gpu.h"
#include "services.h"

/* Longest tunnel URL built from --url. */
#define NA_URL_MAX 512

/*
 * Full-jitter backoff of PROTOCOL.md §9.3: rnd mapped uniformly onto
 * [0, min(WP_BACKOFF_CAP_MS, WP_BACKOFF_BASE_MS * 2^n)] (n may be any value:
 * large n saturate at the cap). Pure; never fails.
 */
uint64_t na_backoff_delay_ms(unsigned n, uint64_t rnd);

/*
 * The tunnel URL for --url: "wss://host[:port][/]" or "https://host[:port][/]"
 * (https is an alias) becomes "wss://host[:port]/api/v1/tunnel". Anything
 * after the authority but a single "/" (a path, query, fragment or user info)
 * is refused: the token never goes in a URL. Returns 0, WP_ERR_INVAL (NULL or
 * malformed) or WP_ERR_LIMIT (out of cap bytes).
 */
int na_tunnel_url(const char *url, char *out, size_t cap);

/* Label key [a-z0-9]([a-z0-9._/-]{0,62}) and value (<= 63 printable ASCII), PROTOCOL.md §4.2. */
int na_label_valid(const char *key, const char *value);

/*
 * Checks what the config puts on the wire against PROTOCOL.md §4.2: label
 * syntax, service names ([a-z0-9][a-z0-9-]{0,31}, not the reserved `sandbox`
 * or `probe`), count limits. Returns 0 or WP_ERR_CONFIG with a one-line
 * reason in err (cap bytes).
 */
int na_agent_check_config(const na_config *cfg, char *err, size_t cap);

/*
 * A token fit for "Authorization: Bearer <token>": 1..4096 visible ASCII
 * characters (0x21..0x7e). Returns 1 if valid.
 */
int na_token_valid(const char *token);

/*
 * The `hello` message (PROTOCOL.md §4.2) as compact JSON: protocol, node_id,
 * instance_id (32 lowercase hex), version, labels, max_sessions, services
 * (allow-list names, plus `sandbox` when sb enables it), gpu (the inventory
 * gpu describes, na_gpu_inventory_json; NULL gpu: {"vendor":"none",
 * "devices":[]}), draining; `lobbies`/`sessions` are omitted (unknown).
 * Returns a string to release with cJSON_free, or NULL on allocation failure.
 */
char *na_hello_json(const na_config *cfg, const na_sandbox_policy *sb, const na_gpu_inventory *gpu,
                    const char *instance_id, int draining);

/* The parts of `welcome` (PROTOCOL.md §4.3) the agent uses. */
typedef struct na_welcome {
    char replica_id[65];
    char node_id[WP_NODE_ID_MAX + 1];
    long long replica_count;         /* clamped to 1..WP_MAX_REPLICAS */
    long long heartbeat_interval_ms; /* clamped to WP_HEARTBEAT_MIN_MS..WP_HEARTBEAT_MAX_MS */
    long long server_time;           /* ms since the epoch */
    long long stream_window_max;     /* largest send window the server accepts (§7.1) */
} na_welcome;

/*
 * Validates a parsed `welcome` object. Returns 0 with *out filled,
 * WP_ERR_UNSUPPORTED (protocol is not WP_PROTO_VERSION) or WP_ERR_PROTO
 * (missing/mistyped member, bad replica_id or node_id) with a reason in err.
 */
int na_welcome_parse(const cJSON *obj, na_welcome *out, char *err, size_t cap);

/* How the agent runs; every member but cfg and token may be zero/NULL for the defaults. */
typedef struct na_agent_opts {
    const na_config *cfg;        /* parsed configuration (url, TLS, services, labels...) */
    const char *token;           /* agent token (already registered as a log secret) */
    const na_sandbox_policy *sb; /* NULL: sandbox refused with not_allowed */
    uint64_t drain_timeout_ms;   /* 0: WP_DRAIN_TIMEOUT_MS */
} na_agent_opts;

/*
 * Runs the agent on loop (which must have no other handles) until a signal
 * drained it. Returns 0 after a clean stop with every handle of the agent
 * closed (the caller's uv_loop_close() then succeeds), or WP_ERR_CONFIG (bad
 * URL or token, TLS configuration unusable: reason in err) / WP_ERR_NOMEM /
 * WP_ERR_CRYPTO before anything ran.
 */
int na_agent_run(uv_loop_t *loop, const na_agent_opts *opts, char *err, size_t cap);

#endif
