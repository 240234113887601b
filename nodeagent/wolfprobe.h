/*
 * wolfprobe.h — Wolf and Moonlight Web health probes (PROTOCOL.md §4.4).
 *
 * Every --probe-interval the agent runs four checks through libcurl on the
 * loop (curl_uv.h), each with its own deadline:
 *   api        the Wolf API socket (service `wolf`, unix:): GET
 *              /api/v1/system/health (Helix fork; an overall_status other
 *              than "healthy" fails), and after a 404 GET
 *              /api/v1/openapi-schema (remembered for later rounds);
 *              status 200 = ok; "connected but silent" times out;
 *   http       GET /serverinfo on service `wolf-http`: status 200 and XML
 *              holding status_code="200" and a <state>...</state>;
 *   https      a TLS handshake only (CONNECT_ONLY) on --wolf-https: Wolf's
 *              HTTPS thread has hung while HTTP answered. Peer verification is
 *              off on purpose: Wolf's certificate is self-signed and generated
 *              per install, nothing is sent over the connection, and the check
 *              is about liveness only (its latency is CURLINFO_APPCONNECT_TIME);
 *   moonlight  GET /api/authenticate on service `moonlight`: 200 or 401 = ok
 *              (Moonlight Web has no health endpoint).
 * A check whose service is not configured (or --wolf-https none) is reported
 * as not configured and counts for nothing.
 *
 * When the api check of a round succeeds the round also lists Wolf's lobbies
 * (GET /api/v1/lobbies on the same target, same timeout, body read up to
 * NA_PROBE_LOBBIES_MAX): `{"success":true,"lobbies":[...]}` gives the lobby
 * count for the heartbeat's load.active_sessions, anything else (or a failed
 * api check) makes it unknown. This listing is not a health check: its
 * failures are logged at debug level only and never change a verdict. Reply bodies are read up to
 * NA_PROBE_BODY_MAX; every Wolf request uses a fresh connection (Wolf serves
 * one request per connection).
 *
 * Error strings are stable (tests and operators match them), see
 * PROTOCOL.md §4.4: "timeout", "connection refused", "no such socket",
 * "permission denied", "connect failed: <reason>", "http status <n>",
 * "bad http response", "empty reply", "response too large",
 * "bad serverinfo: no status_code=\"200\"", "bad serverinfo: no <state>",
 * "wolf overall_status: <status>", "bad health reply", "closed before tls
 * handshake", "tls handshake failed: <libcurl detail>", "<libcurl error>".
 */
#ifndef NA_WOLFPROBE_H
#define NA_WOLFPROBE_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "config.h"
#include "curl_uv.h"

#define NA_PROBE_BODY_MAX    (64u * 1024u)   /* bytes of a reply body read */
#define NA_PROBE_LOBBIES_MAX (1024u * 1024u) /* bytes of a GET /api/v1/lobbies reply read */
#define NA_PROBE_LAT_BUCKETS                                                                       \
    11 /* upper bounds ms: 5,10,25,50,100,250,500,1000,2500,5000,10000 (+Inf implicit) */
#define NA_PROBE_CHECKS 4 /* api, http, https, moonlight (in this order) */

extern const double na_probe_lat_bounds_ms[NA_PROBE_LAT_BUCKETS];

typedef struct na_probe_result {
    const char *name; /* "api","http","https","moonlight" */
    int configured;
    int ok;
    int64_t latency_ms;
    char error[256];
    uint64_t runs, failures, consecutive_failures;
    int64_t last_run_ms; /* wall clock (ms since the epoch) of the last completed run, 0 = never */
    uint64_t lat_count;
    double lat_sum_ms;
    uint64_t lat_buckets[NA_PROBE_LAT_BUCKETS]; /* cumulative counts per bucket */
} na_probe_result;

typedef struct na_wolfprobe na_wolfprobe;

/*
 * Starts probing on loop through m (owned by the caller, which closes it after
 * na_wolfprobe_stop's closed callback ran): a round at once, then every
 * cfg->probe_interval_s. on_round(p, ud) (may be NULL) runs after each round
 * (every started check finished). cfg must outlive p. Returns 0 with *out set,
 * or WP_ERR_INVAL / WP_ERR_NOMEM (nothing started).
 */
int na_wolfprobe_start(uv_loop_t *loop, wp_curlm *m, const na_config *cfg,
                       void (*on_round)(na_wolfprobe *p, void *ud), void *ud, na_wolfprobe **out);

/*
 * Cancels checks in flight (no on_round), closes the timer and frees p;
 * closed(ud) (may be NULL) runs from the loop afterwards. NULL p is ignored.
 */
void na_wolfprobe_stop(na_wolfprobe *p, void (*closed)(void *ud), void *ud);

/* The NA_PROBE_CHECKS results (api, http, https, moonlight); *out points into p. */
size_t na_wolfprobe_results(const na_wolfprobe *p, const na_probe_result **out);

/* 1 when every configured Wolf check (api, http, https) is ok; 1 before the first round. */
int na_wolfprobe_wolf_healthy(const na_wolfprobe *p);

/*
 * Number of lobbies Wolf runs, from the latest round whose api check succeeded
 * and whose GET /api/v1/lobbies answered {"success":true,"lobbies":[...]};
 * -1 when unknown (before that, after a failed api check or a bad listing,
 * or p NULL).
 */
int na_wolfprobe_lobby_count(const na_wolfprobe *p);

/* Number of completed rounds. */
uint64_t na_wolfprobe_rounds(const na_wolfprobe *p);

/*
 * The heartbeat's `wolf` object (PROTOCOL.md §4.4): a member per configured Wolf
 * check that has run, {ok, latency_ms, error (iff !ok)}. NULL on allocation failure.
 */
cJSON *na_wolfprobe_heartbeat_json(const na_wolfprobe *p);

/*
 * The heartbeat's top-level `moonlight` object, same shape; NULL when the
 * moonlight service is not configured, has not run yet, or on allocation failure.
 */
cJSON *na_wolfprobe_moonlight_json(const na_wolfprobe *p);

/*
 * For `wolfpack-agent probe`: runs one round on loop (runs the loop until
 * done, every handle it made closed), *out = {"api":{...},"http":...,
 * "https":...,"moonlight":...}, each {configured, ok, latency_ms, error?}
 * ({configured:false} alone when not configured), *healthy =
 * na_wolfprobe_wolf_healthy. curl_global_init must have run. Returns 0, or
 * WP_ERR_NOMEM / WP_ERR_INTERNAL with a reason in err.
 */
int na_wolfprobe_run_once(uv_loop_t *loop, const na_config *cfg, cJSON **out, int *healthy,
                          char *err, size_t cap);

/* ---- pure pieces (unit-tested) ---- */

/*
 * Checks a /serverinfo body (len bytes, not NUL-terminated): status_code="200"
 * and a <state>...</state> element. Returns 0, or WP_ERR_MALFORMED with the
 * stable error text in err.
 */
int na_probe_serverinfo_check(const char *body, size_t len, char *err, size_t cap);

/*
 * The stable error text for a failed transfer: rc and os_errno
 * (CURLINFO_OS_ERRNO), detail = libcurl's CURLOPT_ERRORBUFFER (may be
 * empty), tls nonzero for the handshake check.
 */
void na_probe_curl_error(int rc, long os_errno, const char *detail, int tls, char *err, size_t cap);

/* Adds one latency observation to r's histogram. */
void na_probe_observe_latency(na_probe_result *r, int64_t ms);

#endif
