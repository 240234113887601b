/*
 * nodes.h — the node registry in PostgreSQL: what the tunnel and the health
 * monitor call when agents say hello, send heartbeats and go away, plus the
 * label rules shared with the REST API (api_nodes.c).
 *
 * Status model (nodes.status, DESIGN.md §3):
 *   offline   no tunnel, or no heartbeat for longer than the stale limit
 *   draining  connected, and an admin drained it (nodes.draining); wins over degraded
 *   degraded  connected, and the last heartbeat said Wolf is unhealthy, or a session
 *             start failed on it less than --node-cooldown ago (nodes.cooldown_until)
 *   online    connected and healthy
 * `draining` is also a separate flag: a drained node that goes offline stays
 * drained, and comes back as `draining`.
 *
 * Every operation is ONE SQL statement (or, for hello and the recount, a
 * short sequence) that changes the row and appends the matching events in
 * the same transaction, so several replicas may call these at once:
 *   node.registered  hello created the node (data: version)
 *   node.online      status became online, or draining from offline (data: from, to, reason)
 *   node.degraded    status became degraded (data: from, to, reason, wolf)
 *   node.offline     status became offline (data: from, to, reason: disconnected |
 *                    heartbeat_timeout)
 * No event is written when the status does not change.
 *
 * Callbacks run later from the loop, exactly once, unless the function
 * returned an error. Every cb may be NULL (fire and forget; failures are
 * logged at warn). Error codes are those of cp_db_query() callbacks
 * (WP_ERR_CLOSED database unavailable, WP_ERR_TIMEOUT, WP_ERR_BUSY, WP_ERR_IO).
 */
#ifndef CP_NODES_H
#define CP_NODES_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "db.h"

#define CP_NODE_LABELS_MAX       32    /* labels an admin may set (REST API) */
#define CP_NODE_LABELS_HELLO_MAX 64    /* labels an agent may report (PROTOCOL.md WP_LABELS_MAX) */
#define CP_NODE_LABEL_KEY_MAX    63    /* bytes: [A-Za-z0-9._/-]{1,63} */
#define CP_NODE_LABEL_VALUE_MAX  127   /* bytes, no control characters */
#define CP_NODE_MAX_SESSIONS_MAX 1024  /* hello's limit; the REST API allows 1..1000 */
#define CP_NODE_SERVICES_MAX     32    /* services in hello */
#define CP_NODE_GPUS_MAX         64    /* GPUs in hello / heartbeat */
#define CP_NODE_JSON_MAX         65536 /* bytes of each JSON document stored per node */
#define CP_NODE_VERSION_MAX      64    /* bytes of the agent version */

/* What a node looks like after an operation (strings NUL-terminated). */
typedef struct cp_node_state {
    char id[64];
    char status[16];      /* online | degraded | draining | offline */
    char prev_status[16]; /* before the operation; "" when this call created the node */
    int registered;       /* hello: this call created the node */
    int enabled;          /* admin switch: disabled nodes get no new sessions */
    int draining;         /* admin drain flag */
    int preregistered;    /* admin manages labels/max_sessions: hello does not override them */
    int max_sessions;     /* effective value (admin's when preregistered) */
    int active_sessions;
} cp_node_state;

/*
 * err 0 and node != NULL: done, node describes the row after the change
 * (valid during the callback only). err 0 and node == NULL: no such node
 * (heartbeat/disconnected for an unknown id, disconnected from a replica that
 * does not hold the node, or hello's node deleted concurrently by an admin).
 */
typedef void (*cp_nodes_cb)(int err, const cp_node_state *node, void *ud);

/* The tunnel's view of a valid `hello` (PROTOCOL.md §4.2). Pointers are borrowed for the call. */
typedef struct cp_node_hello {
    const char *node_id;   /* wp_node_id_valid */
    const char *version;   /* 1..64 printable ASCII */
    const cJSON *labels;   /* object of strings (cp_node_labels_check, <= 64), NULL = {} */
    int max_sessions;      /* 0..CP_NODE_MAX_SESSIONS_MAX */
    const cJSON *services; /* array of <= 32 names [a-z0-9][a-z0-9-]{0,31}, NULL = [] */
    const cJSON *gpus;     /* hello.gpu.devices: array of <= 64 objects, NULL = [] */
} cp_node_hello;

/* Nonzero for online, degraded, draining, offline. */
int cp_node_status_valid(const char *s);
/* Nonzero for nvidia, amd, intel, none. */
int cp_node_gpu_vendor_valid(const char *s);
/* Nonzero for a replica id: [A-Za-z0-9._-]{1,64}. */
int cp_node_replica_valid(const char *s);

/*
 * Label rules (the agent's --label rules): key [A-Za-z0-9._/-], 1..63 bytes;
 * value 0..127 bytes, valid UTF-8, no control characters (< 0x20, 0x7f).
 * Returns 1 if the pair is valid.
 */
int cp_node_label_valid(const char *key, const char *value);

/*
 * Checks that labels is an object of at most max members whose keys and
 * string values pass cp_node_label_valid (duplicate keys refused). Returns 0
 * or WP_ERR_INVAL with a message for the client in err (cap bytes, may be NULL).
 */
int cp_node_labels_check(const cJSON *labels, size_t max, char *err, size_t cap);

/*
 * Parses a label selector "k=v,k2=v2" (all must match; the value is
 * everything after the first '=', so values cannot contain ','; an empty
 * value is allowed) into a JSON object for `labels @> $n::jsonb`. Refuses an
 * empty selector, empty parts, a part without '=', invalid pairs, duplicate
 * keys and more than CP_NODE_LABELS_HELLO_MAX pairs. Returns 0 with *out set
 * (free with cJSON_Delete), WP_ERR_INVAL with a message in err, or
 * WP_ERR_NOMEM; *out is NULL on failure.
 */
int cp_node_selector_parse(const char *s, cJSON **out, char *err, size_t cap);

/* Checks a hello against the limits above. 0 or WP_ERR_INVAL with a message in err. */
int cp_node_hello_check(const cp_node_hello *h, char *err, size_t cap);

/*
 * A tunnel's `hello` was accepted on replica replica_id: registers the node
 * if it is new (event node.registered), then records version, services, GPU
 * inventory and — unless the node is preregistered (admin-managed) — labels
 * and max_sessions; sets connected_replica = replica_id, last_heartbeat =
 * now(), and the status from the draining flag and the last known Wolf
 * health (online, degraded or draining), with a node.online/degraded event
 * when the status changed. Two autocommit statements: (1) insert-if-missing
 * with its node.registered event, (2) the update with its status event; if
 * (2) fails, the node stays registered and offline. The tunnel should send
 * the agent `drain` when node->draining is set, and refuse the agent (goaway)
 * when cb gets node == NULL (deleted concurrently) or err < 0. Returns 0,
 * or (cb not called) WP_ERR_INVAL
 * (cp_node_hello_check failed, bad replica id, NULL db), WP_ERR_NOMEM, or
 * what cp_db_query() returns.
 */
int cp_nodes_hello(cp_db *db, const cp_node_hello *h, const char *replica_id, cp_nodes_cb cb,
                   void *ud);

/*
 * A `heartbeat` (PROTOCOL.md §4.4): stores load (object, NULL = {}), gpu
 * stats (array, NULL = []), Wolf health (object, NULL = {}) and
 * wolf_healthy (nonzero when every Wolf probe is ok), sets last_heartbeat =
 * now() and the status: draining if drained, else online / degraded from
 * wolf_healthy (also from offline: a heartbeat proves the tunnel is up), with
 * an event when it changed. Unknown node: cb(0, NULL). Returns 0, or (cb not
 * called) WP_ERR_INVAL (bad id, wrong JSON types, a document over
 * CP_NODE_JSON_MAX), WP_ERR_NOMEM, or what cp_db_query() returns.
 */
int cp_nodes_heartbeat(cp_db *db, const char *node_id, const cJSON *load, const cJSON *gpu_stats,
                       const cJSON *wolf_health, int wolf_healthy, cp_nodes_cb cb, void *ud);

/*
 * The tunnel of node_id on replica_id closed: if that replica still holds the
 * node (connected_replica), marks it offline, clears connected_replica and
 * writes node.offline (reason disconnected). If another replica took it over
 * meanwhile, nothing changes and cb(0, NULL). Returns 0, or (cb not called)
 * WP_ERR_INVAL (bad ids), WP_ERR_NOMEM, or what cp_db_query() returns.
 */
int cp_nodes_disconnected(cp_db *db, const char *node_id, const char *replica_id, cp_nodes_cb cb,
                          void *ud);

/*
 * Nodes the sweep marked offline: ids[i] and the replica that held each
 * (replicas[i], NULL when none was recorded). Valid during the callback only.
 */
typedef void (*cp_nodes_swept_cb)(int err, size_t n, const char *const *ids,
                                  const char *const *replicas, void *ud);

/*
 * Health monitor: one idempotent statement marks every node that is not
 * offline and whose last_heartbeat is older than stale_after_ms (DESIGN: two
 * heartbeat intervals) offline, clears its connected_replica and writes
 * node.offline (reason heartbeat_timeout). Safe with several replicas at
 * once: each stale node is reported to exactly one caller (the others find
 * it offline already), which should close its tunnel if it holds one; the
 * tunnel's own liveness timeout closes it elsewhere. At most 10000 nodes per
 * call. Returns 0, or (cb not called) WP_ERR_INVAL (stale_after_ms 0, NULL
 * db), WP_ERR_NOMEM, or what cp_db_query() returns.
 */
int cp_nodes_health_sweep(cp_db *db, unsigned stale_after_ms, cp_nodes_swept_cb cb, void *ud);

/* changed: how many nodes had a wrong active_sessions (each is logged at warn). */
typedef void (*cp_nodes_recount_cb)(int err, size_t changed, void *ud);

/*
 * Recomputes nodes.active_sessions from sessions in status starting, running
 * or stopping, in a REPEATABLE READ transaction so that a session change
 * committing concurrently cannot be overwritten with a stale count: that
 * conflict fails the recount with WP_ERR_BUSY (retry at the next period).
 * Returns 0, or (cb not called) WP_ERR_INVAL (NULL db), WP_ERR_NOMEM, or what
 * cp_db_tx_begin() returns.
 */
int cp_nodes_recount_active(cp_db *db, cp_nodes_recount_cb cb, void *ud);

#endif
