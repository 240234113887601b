/*
 * nodes.c — node registry operations for the tunnel and the health monitor (see nodes.h).
 *
 * The status transitions read the previous status through a locking CTE
 * (`prev AS (SELECT ... FOR UPDATE)`): under READ COMMITTED the locking read
 * waits for a concurrent change and then returns the newest row version, so
 * the "from" status an event records is the one this statement replaced, and
 * two replicas racing on one node never write the same transition twice.
 */
#include "nodes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "ids.h"
#include "json.h"
#include "log.h"

/* The columns every state-changing statement returns (aliases n = nodes, prev = old row). */
#define CP_NODES_STATE_COLS                                                                        \
    "n.id, n.status, prev.status AS prev_status, n.enabled, n.draining, n.preregistered, "         \
    "n.max_sessions, n.active_sessions, n.connected_replica"

/* Appends node.<status> when the status changed ($R is the replica parameter). */
#define CP_NODES_TRANSITION_EVENT(replica, reason, extra)                                          \
    "e AS (INSERT INTO events (type, node_id, replica_id, data) "                                  \
    "SELECT CASE WHEN u.status = 'draining' THEN 'node.online' ELSE 'node.' || u.status END, "     \
    "u.id, " replica ", jsonb_build_object('from', u.prev_status, 'to', u.status, 'reason', "      \
    "'" reason "'" extra ") FROM u WHERE u.status IS DISTINCT FROM u.prev_status) "

static const char cp_nodes_sql_register[] =
    "WITH ins AS (INSERT INTO nodes (id) VALUES ($1) ON CONFLICT (id) DO NOTHING RETURNING id) "
    "INSERT INTO events (type, node_id, replica_id, data) "
    "SELECT 'node.registered', id, $2, jsonb_build_object('version', $3::text) FROM ins "
    "RETURNING node_id";

static const char cp_nodes_sql_hello[] =
    "WITH prev AS (SELECT id, status FROM nodes WHERE id = $1 FOR UPDATE), "
    "u AS (UPDATE nodes n SET version = $2, "
    "labels = CASE WHEN n.preregistered THEN n.labels ELSE $3::jsonb END, "
    "max_sessions = CASE WHEN n.preregistered THEN n.max_sessions ELSE $4::int END, "
    "services = $5::jsonb, gpus = $6::jsonb, "
    "status = CASE WHEN n.draining THEN 'draining' WHEN n.wolf_healthy AND "
    "(n.cooldown_until IS NULL OR n.cooldown_until <= now()) THEN 'online' "
    "ELSE 'degraded' END, "
    "connected_replica = $7, last_heartbeat = now() "
    "FROM prev WHERE n.id = prev.id RETURNING " CP_NODES_STATE_COLS
    "), " CP_NODES_TRANSITION_EVENT("$7", "hello", "") "SELECT * FROM u";

static const char cp_nodes_sql_heartbeat[] =
    "WITH prev AS (SELECT id, status FROM nodes WHERE id = $1 FOR UPDATE), "
    "u AS (UPDATE nodes n SET load = $2::jsonb, gpu_stats = $3::jsonb, wolf_health = $4::jsonb, "
    "wolf_healthy = $5::boolean, last_heartbeat = now(), "
    "status = CASE WHEN n.draining THEN 'draining' WHEN $5::boolean AND "
    "(n.cooldown_until IS NULL OR n.cooldown_until <= now()) THEN 'online' "
    "ELSE 'degraded' END "
    "FROM prev WHERE n.id = prev.id RETURNING " CP_NODES_STATE_COLS "), " CP_NODES_TRANSITION_EVENT(
        "u.connected_replica", "heartbeat", ", 'wolf', $4::jsonb") "SELECT * FROM u";

static const char cp_nodes_sql_disconnected[] =
    "WITH prev AS (SELECT id, status FROM nodes WHERE id = $1 AND connected_replica = $2 "
    "FOR UPDATE), "
    "u AS (UPDATE nodes n SET status = 'offline', connected_replica = NULL "
    "FROM prev WHERE n.id = prev.id RETURNING " CP_NODES_STATE_COLS
    "), " CP_NODES_TRANSITION_EVENT("$2", "disconnected", "") "SELECT * FROM u";

static const char cp_nodes_sql_sweep[] =
    "WITH stale AS (SELECT id, status, connected_replica FROM nodes "
    "WHERE status <> 'offline' AND (last_heartbeat IS NULL OR "
    "last_heartbeat < now() - make_interval(secs => $1::double precision / 1000)) "
    "ORDER BY id LIMIT 10000 FOR UPDATE), "
    "u AS (UPDATE nodes n SET status = 'offline', connected_replica = NULL FROM stale "
    "WHERE n.id = stale.id RETURNING n.id, stale.status AS prev_status, "
    "stale.connected_replica AS prev_replica), "
    "e AS (INSERT INTO events (type, node_id, replica_id, data) "
    "SELECT 'node.offline', u.id, u.prev_replica, jsonb_build_object('from', u.prev_status, "
    "'to', 'offline', 'reason', 'heartbeat_timeout', 'stale_after_ms', $1::bigint) FROM u) "
    "SELECT id, prev_replica FROM u ORDER BY id";

static const char cp_nodes_sql_recount[] =
    "UPDATE nodes n SET active_sessions = c.cnt FROM ("
    "SELECT n2.id, n2.active_sessions AS old, count(s.id)::int AS cnt FROM nodes n2 "
    "LEFT JOIN sessions s ON s.node_id = n2.id AND s.status IN ('starting', 'running', "
    "'stopping') GROUP BY n2.id, n2.active_sessions) c "
    "WHERE n.id = c.id AND n.active_sessions <> c.cnt RETURNING n.id, c.old, c.cnt";

/* ---- pure checks ---- */

int cp_node_status_valid(const char *s)
{
    return s && (!strcmp(s, "online") || !strcmp(s, "degraded") || !strcmp(s, "draining") ||
                 !strcmp(s, "offline"));
}

int cp_node_gpu_vendor_valid(const char *s)
{
    return s &&
           (!strcmp(s, "nvidia") || !strcmp(s, "amd") || !strcmp(s, "intel") || !strcmp(s, "none"));
}

int cp_node_replica_valid(const char *s)
{
    if (!s)
        return 0;
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return n >= 1 && n <= 64;
}

int cp_node_label_valid(const char *key, const char *value)
{
    if (!key || !value)
        return 0;
    size_t kn = strlen(key), vn = strlen(value);
    if (kn == 0 || kn > CP_NODE_LABEL_KEY_MAX || vn > CP_NODE_LABEL_VALUE_MAX)
        return 0;
    for (size_t i = 0; i < kn; i++) {
        char c = key[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '/' || c == '-'))
            return 0;
    }
    for (size_t i = 0; i < vn; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return wp_utf8_valid(value, vn);
}

/* Writes a message for the client into err (cap bytes) when err is given. */
#define CP_NODES_ERR(...)                                                                          \
    do {                                                                                           \
        if (err && cap)                                                                            \
            snprintf(err, cap, __VA_ARGS__);                                                       \
    } while (0)

int cp_node_labels_check(const cJSON *labels, size_t max, char *err, size_t cap)
{
    if (!cJSON_IsObject(labels)) {
        CP_NODES_ERR("labels: expected an object");
        return WP_ERR_INVAL;
    }
    size_t n = 0;
    for (const cJSON *it = labels->child; it; it = it->next) {
        if (++n > max) {
            if (err && cap)
                snprintf(err, cap, "labels: at most %zu labels", max);
            return WP_ERR_INVAL;
        }
        if (!it->string) {
            CP_NODES_ERR("labels: expected an object");
            return WP_ERR_INVAL;
        }
        if (!cJSON_IsString(it)) {
            CP_NODES_ERR("labels: the value of \"%.64s\" must be a string", it->string);
            return WP_ERR_INVAL;
        }
        if (!cp_node_label_valid(it->string, it->valuestring)) {
            CP_NODES_ERR("labels: \"%.64s\": key must be 1-63 bytes of [A-Za-z0-9._/-], value at "
                         "most 127 bytes without control characters",
                         it->string);
            return WP_ERR_INVAL;
        }
        for (const cJSON *o = labels->child; o != it; o = o->next) {
            if (strcmp(o->string, it->string) == 0) {
                CP_NODES_ERR("labels: duplicate key \"%.64s\"", it->string);
                return WP_ERR_INVAL;
            }
        }
    }
    return 0;
}

int cp_node_selector_parse(const char *s, cJSON **out, char *err, size_t cap)
{
    *out = NULL;
    if (!s || !*s) {
        CP_NODES_ERR("label: empty selector");
        return WP_ERR_INVAL;
    }
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return WP_ERR_NOMEM;
    char key[CP_NODE_LABEL_KEY_MAX + 2], value[CP_NODE_LABEL_VALUE_MAX + 2];
    size_t n = 0;
    const char *p = s;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t kl = eq ? (size_t)(eq - p) : 0, vl = eq ? len - kl - 1 : 0;
        if (!eq || kl == 0 || kl >= sizeof(key) || vl >= sizeof(value)) {
            cJSON_Delete(o);
            CP_NODES_ERR("label: expected k=v[,k=v...]");
            return WP_ERR_INVAL;
        }
        memcpy(key, p, kl);
        key[kl] = '\0';
        memcpy(value, eq + 1, vl);
        value[vl] = '\0';
        if (!cp_node_label_valid(key, value)) {
            cJSON_Delete(o);
            CP_NODES_ERR("label: \"%.64s\": key must be 1-63 bytes of [A-Za-z0-9._/-], value at "
                         "most 127 bytes without control characters",
                         key);
            return WP_ERR_INVAL;
        }
        if (cJSON_GetObjectItemCaseSensitive(o, key)) {
            cJSON_Delete(o);
            CP_NODES_ERR("label: duplicate key \"%.64s\"", key);
            return WP_ERR_INVAL;
        }
        if (++n > CP_NODE_LABELS_HELLO_MAX) {
            cJSON_Delete(o);
            CP_NODES_ERR("label: too many pairs");
            return WP_ERR_INVAL;
        }
        if (!cJSON_AddStringToObject(o, key, value)) {
            cJSON_Delete(o);
            return WP_ERR_NOMEM;
        }
        if (!end)
            break;
        p = end + 1;
    }
    *out = o;
    return 0;
}

static int cp_nodes_service_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && n > 0)))
            return 0;
    }
    return n >= 1 && n <= 32;
}

int cp_node_hello_check(const cp_node_hello *h, char *err, size_t cap)
{
    if (!h || !h->node_id || !wp_node_id_valid(h->node_id)) {
        CP_NODES_ERR("node_id: must match [a-z0-9][a-z0-9-]{0,62}");
        return WP_ERR_INVAL;
    }
    size_t vn = h->version ? strlen(h->version) : 0;
    int vok = vn >= 1 && vn <= CP_NODE_VERSION_MAX;
    for (size_t i = 0; vok && i < vn; i++)
        vok = h->version[i] >= 0x20 && h->version[i] < 0x7f;
    if (!vok) {
        CP_NODES_ERR("version: 1-64 printable ASCII characters");
        return WP_ERR_INVAL;
    }
    if (h->labels && cp_node_labels_check(h->labels, CP_NODE_LABELS_HELLO_MAX, err, cap) != 0)
        return WP_ERR_INVAL;
    if (h->max_sessions < 0 || h->max_sessions > CP_NODE_MAX_SESSIONS_MAX) {
        CP_NODES_ERR("max_sessions: must be between 0 and 1024");
        return WP_ERR_INVAL;
    }
    if (h->services) {
        if (!cJSON_IsArray(h->services) || cJSON_GetArraySize(h->services) > CP_NODE_SERVICES_MAX) {
            CP_NODES_ERR("services: expected an array of at most 32 names");
            return WP_ERR_INVAL;
        }
        for (const cJSON *it = h->services->child; it; it = it->next) {
            if (!cJSON_IsString(it) || !cp_nodes_service_valid(it->valuestring)) {
                CP_NODES_ERR("services: names must match [a-z0-9][a-z0-9-]{0,31}");
                return WP_ERR_INVAL;
            }
        }
    }
    if (h->gpus) {
        if (!cJSON_IsArray(h->gpus) || cJSON_GetArraySize(h->gpus) > CP_NODE_GPUS_MAX) {
            CP_NODES_ERR("gpus: expected an array of at most 64 devices");
            return WP_ERR_INVAL;
        }
        for (const cJSON *it = h->gpus->child; it; it = it->next) {
            if (!cJSON_IsObject(it)) {
                CP_NODES_ERR("gpus: each device must be an object");
                return WP_ERR_INVAL;
            }
        }
    }
    return 0;
}

/* ---- JSON parameters ---- */

/* Prints v (or dflt when v is NULL) if it has the wanted type and fits. NULL on failure. */
static char *cp_nodes_json_param(const cJSON *v, int want_array, const char *dflt, int *rc)
{
    char *t;
    if (!v) {
        t = strdup(dflt);
    } else {
        if (want_array ? !cJSON_IsArray(v) : !cJSON_IsObject(v)) {
            *rc = WP_ERR_INVAL;
            return NULL;
        }
        char *p = wp_json_print(v);
        t = p ? strdup(p) : NULL;
        cJSON_free(p);
    }
    if (!t) {
        *rc = WP_ERR_NOMEM;
        return NULL;
    }
    if (strlen(t) > CP_NODE_JSON_MAX) {
        free(t);
        *rc = WP_ERR_INVAL;
        return NULL;
    }
    return t;
}

/* ---- result rows ---- */

static void cp_nodes_copy_col(const PGresult *res, int row, const char *name, char *out, size_t cap)
{
    int c = PQfnumber(res, name);
    out[0] = '\0';
    if (c >= 0 && !PQgetisnull(res, row, c))
        snprintf(out, cap, "%s", PQgetvalue(res, row, c));
}

static int cp_nodes_int_col(const PGresult *res, int row, const char *name)
{
    int c = PQfnumber(res, name);
    if (c < 0 || PQgetisnull(res, row, c))
        return 0;
    const char *v = PQgetvalue(res, row, c);
    if (v[0] == 't')
        return 1;
    if (v[0] == 'f')
        return 0;
    return atoi(v);
}

static void cp_nodes_state_from_row(const PGresult *res, int row, cp_node_state *st)
{
    memset(st, 0, sizeof(*st));
    cp_nodes_copy_col(res, row, "id", st->id, sizeof(st->id));
    cp_nodes_copy_col(res, row, "status", st->status, sizeof(st->status));
    cp_nodes_copy_col(res, row, "prev_status", st->prev_status, sizeof(st->prev_status));
    st->enabled = cp_nodes_int_col(res, row, "enabled");
    st->draining = cp_nodes_int_col(res, row, "draining");
    st->preregistered = cp_nodes_int_col(res, row, "preregistered");
    st->max_sessions = cp_nodes_int_col(res, row, "max_sessions");
    st->active_sessions = cp_nodes_int_col(res, row, "active_sessions");
}

/* One state-changing statement whose first row is the node (or none). */
typedef struct cp_nodes_op {
    cp_db *db;
    cp_nodes_cb cb;
    void *ud;
    const char *what; /* for logs */
    char node_id[64];
    /* hello only: the second statement's parameters */
    int registered;
    char *params[7];
} cp_nodes_op;

static void cp_nodes_op_free(cp_nodes_op *op)
{
    for (size_t i = 0; i < sizeof(op->params) / sizeof(op->params[0]); i++)
        free(op->params[i]);
    free(op);
}

static void cp_nodes_op_done(int err, PGresult *res, void *ud)
{
    cp_nodes_op *op = ud;
    cp_node_state st, *stp = NULL;
    if (err == 0 && res && PQntuples(res) > 0) {
        cp_nodes_state_from_row(res, 0, &st);
        st.registered = op->registered;
        if (op->registered)
            st.prev_status[0] = '\0';
        stp = &st;
    }
    if (err != 0)
        wp_log_warn("node registry update failed", WP_LS("op", op->what),
                    WP_LS("node", op->node_id), WP_LE("err", err),
                    WP_LS("sqlstate", cp_db_sqlstate(res)));
    else if (stp && strcmp(st.status, st.prev_status) != 0)
        wp_log_info("node status", WP_LS("node", st.id),
                    WP_LS("from", st.prev_status[0] ? st.prev_status : "new"),
                    WP_LS("to", st.status), WP_LS("by", op->what));
    if (op->cb)
        op->cb(err, stp, op->ud);
    cp_nodes_op_free(op);
}

static cp_nodes_op *cp_nodes_op_new(cp_db *db, const char *what, const char *node_id,
                                    cp_nodes_cb cb, void *ud)
{
    cp_nodes_op *op = calloc(1, sizeof(*op));
    if (!op)
        return NULL;
    op->db = db;
    op->cb = cb;
    op->ud = ud;
    op->what = what;
    snprintf(op->node_id, sizeof(op->node_id), "%s", node_id);
    return op;
}

/* ---- hello ---- */

static void cp_nodes_hello_registered(int err, PGresult *res, void *ud)
{
    cp_nodes_op *op = ud;
    if (err != 0) {
        cp_nodes_op_done(err, res, op);
        return;
    }
    op->registered = PQntuples(res) == 1;
    if (op->registered)
        wp_log_info("node registered", WP_LS("node", op->node_id), WP_LS("version", op->params[1]));
    int rc = cp_db_query(op->db, cp_nodes_sql_hello, 7, (const char *const *)op->params,
                         cp_nodes_op_done, op);
    if (rc != 0)
        cp_nodes_op_done(rc, NULL, op);
}

int cp_nodes_hello(cp_db *db, const cp_node_hello *h, const char *replica_id, cp_nodes_cb cb,
                   void *ud)
{
    if (!db || cp_node_hello_check(h, NULL, 0) != 0 || !cp_node_replica_valid(replica_id))
        return WP_ERR_INVAL;
    cp_nodes_op *op = cp_nodes_op_new(db, "hello", h->node_id, cb, ud);
    if (!op)
        return WP_ERR_NOMEM;
    char max[16];
    snprintf(max, sizeof(max), "%d", h->max_sessions);
    int rc = 0;
    op->params[0] = strdup(h->node_id);
    op->params[1] = strdup(h->version);
    op->params[2] = cp_nodes_json_param(h->labels, 0, "{}", &rc);
    op->params[3] = strdup(max);
    op->params[4] = rc ? NULL : cp_nodes_json_param(h->services, 1, "[]", &rc);
    op->params[5] = rc ? NULL : cp_nodes_json_param(h->gpus, 1, "[]", &rc);
    op->params[6] = strdup(replica_id);
    for (size_t i = 0; rc == 0 && i < 7; i++)
        if (!op->params[i])
            rc = WP_ERR_NOMEM;
    if (rc == 0) {
        const char *p1[] = {op->params[0], op->params[6], op->params[1]};
        rc = cp_db_query(db, cp_nodes_sql_register, 3, p1, cp_nodes_hello_registered, op);
    }
    if (rc != 0)
        cp_nodes_op_free(op);
    return rc;
}

/* ---- heartbeat, disconnect ---- */

int cp_nodes_heartbeat(cp_db *db, const char *node_id, const cJSON *load, const cJSON *gpu_stats,
                       const cJSON *wolf_health, int wolf_healthy, cp_nodes_cb cb, void *ud)
{
    if (!db || !node_id || !wp_node_id_valid(node_id))
        return WP_ERR_INVAL;
    if (gpu_stats && cJSON_IsArray(gpu_stats) && cJSON_GetArraySize(gpu_stats) > CP_NODE_GPUS_MAX)
        return WP_ERR_INVAL;
    int rc = 0;
    char *l = cp_nodes_json_param(load, 0, "{}", &rc);
    char *g = rc ? NULL : cp_nodes_json_param(gpu_stats, 1, "[]", &rc);
    char *w = rc ? NULL : cp_nodes_json_param(wolf_health, 0, "{}", &rc);
    cp_nodes_op *op = rc ? NULL : cp_nodes_op_new(db, "heartbeat", node_id, cb, ud);
    if (rc == 0 && !op)
        rc = WP_ERR_NOMEM;
    if (rc == 0) {
        const char *params[] = {node_id, l, g, w, wolf_healthy ? "true" : "false"};
        rc = cp_db_query(db, cp_nodes_sql_heartbeat, 5, params, cp_nodes_op_done, op);
        if (rc != 0)
            cp_nodes_op_free(op);
    }
    free(l);
    free(g);
    free(w);
    return rc;
}

int cp_nodes_disconnected(cp_db *db, const char *node_id, const char *replica_id, cp_nodes_cb cb,
                          void *ud)
{
    if (!db || !node_id || !wp_node_id_valid(node_id) || !cp_node_replica_valid(replica_id))
        return WP_ERR_INVAL;
    cp_nodes_op *op = cp_nodes_op_new(db, "disconnected", node_id, cb, ud);
    if (!op)
        return WP_ERR_NOMEM;
    const char *params[] = {node_id, replica_id};
    int rc = cp_db_query(db, cp_nodes_sql_disconnected, 2, params, cp_nodes_op_done, op);
    if (rc != 0)
        cp_nodes_op_free(op);
    return rc;
}

/* ---- health sweep ---- */

typedef struct cp_nodes_sweep {
    cp_nodes_swept_cb cb;
    void *ud;
} cp_nodes_sweep;

static void cp_nodes_swept(int err, PGresult *res, void *ud)
{
    cp_nodes_sweep *sw = ud;
    size_t n = (err == 0 && res) ? (size_t)PQntuples(res) : 0;
    const char **ids = n ? calloc(n, sizeof(*ids)) : NULL;
    const char **reps = n ? calloc(n, sizeof(*reps)) : NULL;
    if (n && (!ids || !reps)) {
        err = WP_ERR_NOMEM;
        n = 0;
    }
    for (size_t i = 0; i < n; i++) {
        ids[i] = PQgetvalue(res, (int)i, 0);
        reps[i] = PQgetisnull(res, (int)i, 1) ? NULL : PQgetvalue(res, (int)i, 1);
        wp_log_warn("node heartbeat stale, marked offline", WP_LS("node", ids[i]),
                    WP_LS("replica", reps[i] ? reps[i] : "-"));
    }
    if (err != 0)
        wp_log_warn("node health sweep failed", WP_LE("err", err),
                    WP_LS("sqlstate", cp_db_sqlstate(res)));
    if (sw->cb)
        sw->cb(err, n, ids, reps, sw->ud);
    free(ids);
    free(reps);
    free(sw);
}

int cp_nodes_health_sweep(cp_db *db, unsigned stale_after_ms, cp_nodes_swept_cb cb, void *ud)
{
    if (!db || stale_after_ms == 0)
        return WP_ERR_INVAL;
    cp_nodes_sweep *sw = calloc(1, sizeof(*sw));
    if (!sw)
        return WP_ERR_NOMEM;
    sw->cb = cb;
    sw->ud = ud;
    char ms[16];
    snprintf(ms, sizeof(ms), "%u", stale_after_ms);
    const char *params[] = {ms};
    int rc = cp_db_query(db, cp_nodes_sql_sweep, 1, params, cp_nodes_swept, sw);
    if (rc != 0)
        free(sw);
    return rc;
}

/* ---- active_sessions recount ---- */

typedef struct cp_nodes_recount {
    cp_db_tx *tx;
    cp_nodes_recount_cb cb;
    void *ud;
    size_t changed;
    int err;
} cp_nodes_recount;

static void cp_nodes_recount_finish(cp_nodes_recount *r, int err)
{
    if (err != 0 && err != WP_ERR_BUSY)
        wp_log_warn("active session recount failed", WP_LE("err", err));
    if (r->cb)
        r->cb(err, err == 0 ? r->changed : 0, r->ud);
    free(r);
}

static void cp_nodes_recount_ended(int err, void *ud)
{
    cp_nodes_recount *r = ud;
    cp_nodes_recount_finish(r, r->err ? r->err : err);
}

static void cp_nodes_recount_fail(cp_nodes_recount *r, int err)
{
    r->err = err;
    cp_db_tx *tx = r->tx;
    r->tx = NULL;
    if (cp_db_tx_rollback(tx, cp_nodes_recount_ended, r) != 0)
        cp_nodes_recount_finish(r, err);
}

static void cp_nodes_recounted(int err, PGresult *res, void *ud)
{
    cp_nodes_recount *r = ud;
    if (err != 0) {
        cp_nodes_recount_fail(r, err);
        return;
    }
    r->changed = (size_t)PQntuples(res);
    for (int i = 0; i < PQntuples(res); i++)
        wp_log_warn("active session count corrected", WP_LS("node", PQgetvalue(res, i, 0)),
                    WP_LS("was", PQgetvalue(res, i, 1)), WP_LS("now", PQgetvalue(res, i, 2)));
    cp_db_tx *tx = r->tx;
    r->tx = NULL;
    int rc = cp_db_tx_commit(tx, cp_nodes_recount_ended, r);
    if (rc != 0)
        cp_nodes_recount_finish(r, rc);
}

static void cp_nodes_recount_isolated(int err, PGresult *res, void *ud)
{
    (void)res;
    cp_nodes_recount *r = ud;
    if (err != 0) {
        cp_nodes_recount_fail(r, err);
        return;
    }
    int rc = cp_db_tx_query(r->tx, cp_nodes_sql_recount, 0, NULL, cp_nodes_recounted, r);
    if (rc != 0)
        cp_nodes_recount_fail(r, rc);
}

static void cp_nodes_recount_begun(int err, cp_db_tx *tx, void *ud)
{
    cp_nodes_recount *r = ud;
    if (err != 0) {
        cp_nodes_recount_finish(r, err);
        return;
    }
    r->tx = tx;
    int rc = cp_db_tx_query(tx, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", 0, NULL,
                            cp_nodes_recount_isolated, r);
    if (rc != 0)
        cp_nodes_recount_fail(r, rc);
}

int cp_nodes_recount_active(cp_db *db, cp_nodes_recount_cb cb, void *ud)
{
    if (!db)
        return WP_ERR_INVAL;
    cp_nodes_recount *r = calloc(1, sizeof(*r));
    if (!r)
        return WP_ERR_NOMEM;
    r->cb = cb;
    r->ud = ud;
    int rc = cp_db_tx_begin(db, cp_nodes_recount_begun, r);
    if (rc != 0)
        free(r);
    return rc;
}
