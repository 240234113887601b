/*
 * scheduler.h — placing sessions on nodes: the session request rules, the
 * Wolf lobby a request becomes, and the one SQL statement that reserves a
 * node's capacity (DESIGN.md §3).
 *
 * Reservation: cp_sched_reserve() runs ONE statement that picks the best
 * candidate with `SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1`, increments its
 * active_sessions (and sets last_assigned_at), moves the session from
 * pending to starting on it and appends `session.starting` — so concurrent
 * creates on one or several replicas can never overbook a node: the capacity
 * check is re-evaluated on the locked, newest row version. Filters: enabled,
 * status online (not degraded / draining / offline, not cooling down after a
 * failed start), a tunnel on some replica (connected_replica), gpu_vendor,
 * label selector (all must match: labels @> selector), capacity, explicit
 * node id, and nodes already tried by this session. Order: a prefer_labels
 * match first (soft affinity), then lowest active/max ratio, then
 * least-recently assigned, then id.
 *
 * SKIP LOCKED can skip a node another create (or a heartbeat) holds for a
 * moment; when the reservation finds nothing, cp_sched_explain() counts,
 * over all nodes (or only the explicit target; nodes already tried left
 * out), the first filter that excludes each one, in the fixed order
 * disabled, draining, offline, degraded, not_connected, gpu_vendor, labels,
 * capacity; nodes passing every filter count as `available` and mean "retry
 * the reservation" (cp_sched_reserve_wait: waiting for the row), not "no
 * capacity".
 */
#ifndef CP_SCHEDULER_H
#define CP_SCHEDULER_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "db.h"

#define CP_SESSION_BODY_MAX       (64 * 1024) /* bytes of a POST /api/v1/sessions body */
#define CP_SESSION_NAME_MAX       128
#define CP_SESSION_IMAGE_MAX      512
#define CP_SESSION_ENV_MAX        64   /* env entries */
#define CP_SESSION_ENV_LEN_MAX    4096 /* bytes of one "K=V" */
#define CP_SESSION_MOUNTS_MAX     32
#define CP_SESSION_MOUNT_LEN_MAX  1024
#define CP_SESSION_DEVICES_MAX    32
#define CP_SESSION_DEVICE_LEN_MAX 256
#define CP_SESSION_PORTS_MAX      32
#define CP_SESSION_PORT_LEN_MAX   32
#define CP_SESSION_METADATA_MAX   32   /* members */
#define CP_SESSION_METADATA_BYTES 8192 /* compact JSON text of metadata */
#define CP_SESSION_ATTEMPTS_MAX   20   /* --schedule-attempts upper bound */
#define CP_SESSION_CONTAINER_MAX  64

/* Video and audio defaults for lobbies/create. */
#define CP_SESSION_DEFAULT_WIDTH    1920
#define CP_SESSION_DEFAULT_HEIGHT   1080
#define CP_SESSION_DEFAULT_REFRESH  60
#define CP_SESSION_DEFAULT_CHANNELS 2

/* Exclusion reasons of cp_sched_explain, in the order they are tested. */
#define CP_SCHED_REASONS                                                                           \
    {                                                                                              \
        "disabled", "draining", "offline", "degraded", "not_connected", "gpu_vendor", "labels",    \
            "capacity"                                                                             \
    }
#define CP_SCHED_NREASONS 8

/*
 * Checks a POST /api/v1/sessions body (see README "Sessions"): every field's
 * type, length, count and syntax; unknown fields refused at every level.
 * Returns 0, or WP_ERR_INVAL with a message naming the field in err
 * ("runner.env[2]: expected \"KEY=value\"").
 */
int cp_session_request_check(const cJSON *doc, char *err, size_t cap);

/* Scheduling requirements of a checked request (pointers into doc; NULL = absent). */
typedef struct cp_sched_req {
    const char *gpu_vendor;
    const cJSON *labels;
    const cJSON *prefer_labels;
    const char *node_id;
} cp_sched_req;

/* Fills r from a request that passed cp_session_request_check. */
void cp_sched_req_from(const cJSON *doc, cp_sched_req *r);

/* Four random decimal digits from the crypto RNG into out[5]. 0 or WP_ERR_CRYPTO. */
int cp_session_pin_generate(char out[5]);

/* A random (version 4) UUID in canonical lowercase form into out[37]. 0 or WP_ERR_CRYPTO. */
int cp_session_uuid_generate(char out[37]);

/*
 * The sandbox container name of session id: "wolfpack-" + the first 12 hex
 * digits of the uuid (dashes removed, lowercased). Returns 0 or WP_ERR_INVAL
 * (not a uuid, or cap < 22).
 */
int cp_session_container_name(const char *uuid, char *out, size_t cap);

/*
 * The lobbies/create body for a checked request: profile_id, name (request
 * name, else the container), multi_user true, stop_when_everyone_leaves
 * false, pin as four numbers, video_settings (defaults 1920x1080@60, empty
 * render nodes so Wolf picks them, empty buffer caps), audio_settings
 * (channel_count default 2), runner_state_folder "wolfpack/<container>", and
 * the docker runner named `container` (request runner.name is not used: the
 * sandbox proxy finds the container by this name). NULL on bad arguments or
 * allocation failure.
 */
cJSON *cp_session_lobby_body(const cJSON *request, const char *profile_id, const char *container,
                             const char *pin);

/*
 * Reserves a node for session_id (which must be pending) per r, skipping the
 * nodes in tried[0..ntried). attempt and replica_id go into the event.
 * cb(0, res): res has one row (node_id, active_sessions, max_sessions) when
 * a node was reserved and the session moved to starting, or no row when
 * nothing fits (or the session is no longer pending). Returns 0 (cb later,
 * exactly once) or, cb never called, WP_ERR_INVAL / WP_ERR_NOMEM / what
 * cp_db_query() returns.
 */
int cp_sched_reserve(cp_db *db, const char *session_id, const cp_sched_req *r,
                     const char *const *tried, size_t ntried, int attempt, const char *replica_id,
                     cp_db_result_cb cb, void *ud);

/*
 * cp_sched_reserve() that does not skip a locked node: it picks the best
 * candidate without locking, then waits for that one row if another
 * transaction holds it (a concurrent reservation, a heartbeat) and re-checks
 * every filter on its newest version (no row when it no longer fits). For
 * retries after cp_sched_explain*() counted `available` nodes that the first
 * reservation skipped. Never waits while holding another node's row, so
 * concurrent reservations cannot deadlock. Same contract as
 * cp_sched_reserve().
 */
int cp_sched_reserve_wait(cp_db *db, const char *session_id, const cp_sched_req *r,
                          const char *const *tried, size_t ntried, int attempt,
                          const char *replica_id, cp_db_result_cb cb, void *ud);

/*
 * Counts why nodes cannot take a session with requirements r (see above).
 * cb(0, res): rows (reason text, n int). Same return contract as
 * cp_sched_reserve().
 */
int cp_sched_explain(cp_db *db, const cp_sched_req *r, cp_db_result_cb cb, void *ud);

/* cp_sched_explain() leaving out the nodes in tried[0..ntried) (ids as for cp_sched_reserve). */
int cp_sched_explain_untried(cp_db *db, const cp_sched_req *r, const char *const *tried,
                             size_t ntried, cp_db_result_cb cb, void *ud);

/*
 * Builds {"nodes": N, "excluded": {<every reason>: n}} from an explain
 * result; *available gets the count of nodes passing every filter. NULL on
 * allocation failure.
 */
cJSON *cp_sched_explain_json(const PGresult *res, int *available);

/*
 * The text-array literal ("{\"a\",\"b\"}") of ids that contain only
 * [A-Za-z0-9._-]. Returns a malloc'd string or NULL (bad id, allocation).
 */
char *cp_sched_text_array(const char *const *ids, size_t n);

#endif
