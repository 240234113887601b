/*
 * scheduler.c — session request rules, the lobby a request becomes, and the
 * capacity reservation statement (see scheduler.h).
 */
#include "scheduler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "err.h"
#include "ids.h"
#include "json.h"
#include "nodes.h"

/* ---- request rules ---- */

#define CP_SCHED_ERR(...)                                                                          \
    do {                                                                                           \
        if (err && cap)                                                                            \
            snprintf(err, cap, __VA_ARGS__);                                                       \
    } while (0)

/* Printable (no control characters); UTF-8 validity is the parser's job. */
static int cp_sched_printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

/* Docker image reference: 1..512 bytes of [A-Za-z0-9._/:@-]. */
static int cp_sched_image_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CP_SESSION_IMAGE_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '/' || c == ':' || c == '@' || c == '-'))
            return 0;
    }
    return 1;
}

/* "KEY=value": KEY [A-Za-z_][A-Za-z0-9_]*, value without control characters. */
static int cp_sched_env_ok(const char *s)
{
    const char *eq = strchr(s, '=');
    if (!eq || eq == s || strlen(s) > CP_SESSION_ENV_LEN_MAX)
        return 0;
    for (const char *p = s; p < eq; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
              (p > s && c >= '0' && c <= '9')))
            return 0;
    }
    return cp_sched_printable(eq + 1);
}

/* Port mapping: 1..32 bytes of [0-9a-z.:/-]. */
static int cp_sched_port_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CP_SESSION_PORT_LEN_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '.' || c == ':' ||
              c == '/' || c == '-'))
            return 0;
    }
    return 1;
}

/* Checks an optional array of strings: count, per-item length, syntax. */
static int cp_sched_strings(const cJSON *runner, const char *name, size_t max_items, size_t max_len,
                            int (*ok)(const char *), const char *what, char *err, size_t cap)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(runner, name);
    if (!a)
        return 0;
    if (!cJSON_IsArray(a) || (size_t)cJSON_GetArraySize(a) > max_items) {
        CP_SCHED_ERR("runner.%s: expected an array of at most %zu strings", name, max_items);
        return WP_ERR_INVAL;
    }
    int i = 0;
    for (const cJSON *it = a->child; it; it = it->next, i++) {
        if (!cJSON_IsString(it) || strlen(it->valuestring) == 0 ||
            strlen(it->valuestring) > max_len || !ok(it->valuestring)) {
            CP_SCHED_ERR("runner.%s[%d]: expected %s", name, i, what);
            return WP_ERR_INVAL;
        }
    }
    return 0;
}

static int cp_sched_nonempty_printable(const char *s)
{
    return s[0] && cp_sched_printable(s);
}

/* Validates sub-object `name` of doc against fields, prefixing messages with the name. */
static int cp_sched_sub(const cJSON *doc, const char *name, const wp_json_field *fields, size_t n,
                        char *err, size_t cap)
{
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(doc, name);
    if (!o)
        return 0;
    char msg[256];
    if (wp_json_validate(o, fields, n, WP_JSON_UNKNOWN_REJECT, msg, sizeof(msg)) != 0) {
        CP_SCHED_ERR("%s: %s", name, msg);
        return WP_ERR_INVAL;
    }
    return 0;
}

int cp_session_request_check(const cJSON *doc, char *err, size_t cap)
{
    static const wp_json_field top[] = {
        {"name", WP_JSON_STRING, 0, CP_SESSION_NAME_MAX, 0, 0},
        {"requirements", WP_JSON_OBJECT, 0, 4, 0, 0},
        {"runner", WP_JSON_OBJECT, 1, 7, 0, 0},
        {"video", WP_JSON_OBJECT, 0, 3, 0, 0},
        {"audio", WP_JSON_OBJECT, 0, 1, 0, 0},
        {"metadata", WP_JSON_OBJECT, 0, CP_SESSION_METADATA_MAX, 0, 0},
    };
    static const wp_json_field reqs[] = {
        {"gpu_vendor", WP_JSON_STRING, 0, 16, 0, 0},
        {"labels", WP_JSON_OBJECT, 0, CP_NODE_LABELS_MAX, 0, 0},
        {"node_id", WP_JSON_STRING, 0, 64, 0, 0},
        {"prefer_labels", WP_JSON_OBJECT, 0, CP_NODE_LABELS_MAX, 0, 0},
    };
    static const wp_json_field runner[] = {
        {"type", WP_JSON_STRING, 1, 16, 0, 0},
        {"name", WP_JSON_STRING, 0, CP_SESSION_CONTAINER_MAX, 0, 0},
        {"image", WP_JSON_STRING, 1, CP_SESSION_IMAGE_MAX, 0, 0},
        {"env", WP_JSON_ARRAY, 0, CP_SESSION_ENV_MAX, 0, 0},
        {"mounts", WP_JSON_ARRAY, 0, CP_SESSION_MOUNTS_MAX, 0, 0},
        {"devices", WP_JSON_ARRAY, 0, CP_SESSION_DEVICES_MAX, 0, 0},
        {"ports", WP_JSON_ARRAY, 0, CP_SESSION_PORTS_MAX, 0, 0},
    };
    static const wp_json_field video[] = {
        {"width", WP_JSON_INT, 0, 0, 320, 7680},
        {"height", WP_JSON_INT, 0, 0, 200, 4320},
        {"refresh_rate", WP_JSON_INT, 0, 0, 1, 240},
    };
    static const wp_json_field audio[] = {
        {"channel_count", WP_JSON_INT, 0, 0, 1, 8},
    };
    char msg[256];
    if (!cJSON_IsObject(doc)) {
        CP_SCHED_ERR("the body must be a JSON object");
        return WP_ERR_INVAL;
    }
    if (wp_json_validate(doc, top, sizeof(top) / sizeof(top[0]), WP_JSON_UNKNOWN_REJECT, msg,
                         sizeof(msg)) != 0) {
        CP_SCHED_ERR("%s", msg);
        return WP_ERR_INVAL;
    }
    const char *name = wp_json_get_str(doc, "name");
    if (name && !cp_sched_nonempty_printable(name)) {
        CP_SCHED_ERR("name: 1-128 characters without control characters");
        return WP_ERR_INVAL;
    }
    if (cp_sched_sub(doc, "requirements", reqs, sizeof(reqs) / sizeof(reqs[0]), err, cap) != 0 ||
        cp_sched_sub(doc, "runner", runner, sizeof(runner) / sizeof(runner[0]), err, cap) != 0 ||
        cp_sched_sub(doc, "video", video, sizeof(video) / sizeof(video[0]), err, cap) != 0 ||
        cp_sched_sub(doc, "audio", audio, sizeof(audio) / sizeof(audio[0]), err, cap) != 0)
        return WP_ERR_INVAL;
    const cJSON *rq = cJSON_GetObjectItemCaseSensitive(doc, "requirements");
    if (rq) {
        const char *v = wp_json_get_str(rq, "gpu_vendor");
        const char *node = wp_json_get_str(rq, "node_id");
        if (v && !cp_node_gpu_vendor_valid(v)) {
            CP_SCHED_ERR("requirements.gpu_vendor: must be nvidia, amd, intel or none");
            return WP_ERR_INVAL;
        }
        if (node && !wp_node_id_valid(node)) {
            CP_SCHED_ERR("requirements.node_id: must match [a-z0-9][a-z0-9-]{0,62}");
            return WP_ERR_INVAL;
        }
        const char *sels[] = {"labels", "prefer_labels"};
        for (size_t i = 0; i < 2; i++) {
            const cJSON *l = cJSON_GetObjectItemCaseSensitive(rq, sels[i]);
            if (l && cp_node_labels_check(l, CP_NODE_LABELS_MAX, msg, sizeof(msg)) != 0) {
                CP_SCHED_ERR("requirements.%s%s", sels[i],
                             strncmp(msg, "labels", 6) == 0 ? msg + 6 : msg);
                return WP_ERR_INVAL;
            }
        }
    }
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(doc, "runner");
    const char *type = wp_json_get_str(r, "type");
    if (strcmp(type, "docker") != 0) {
        CP_SCHED_ERR("runner.type: must be \"docker\"");
        return WP_ERR_INVAL;
    }
    const char *rname = wp_json_get_str(r, "name");
    if (rname && !cp_sched_nonempty_printable(rname)) {
        CP_SCHED_ERR("runner.name: 1-64 characters without control characters");
        return WP_ERR_INVAL;
    }
    if (!cp_sched_image_ok(wp_json_get_str(r, "image"))) {
        CP_SCHED_ERR("runner.image: 1-512 characters of [A-Za-z0-9._/:@-]");
        return WP_ERR_INVAL;
    }
    if (cp_sched_strings(r, "env", CP_SESSION_ENV_MAX, CP_SESSION_ENV_LEN_MAX, cp_sched_env_ok,
                         "\"KEY=value\" (KEY [A-Za-z_][A-Za-z0-9_]*)", err, cap) != 0 ||
        cp_sched_strings(r, "mounts", CP_SESSION_MOUNTS_MAX, CP_SESSION_MOUNT_LEN_MAX,
                         cp_sched_nonempty_printable, "a mount string (no control characters)", err,
                         cap) != 0 ||
        cp_sched_strings(r, "devices", CP_SESSION_DEVICES_MAX, CP_SESSION_DEVICE_LEN_MAX,
                         cp_sched_nonempty_printable, "a device string (no control characters)",
                         err, cap) != 0 ||
        cp_sched_strings(r, "ports", CP_SESSION_PORTS_MAX, CP_SESSION_PORT_LEN_MAX,
                         cp_sched_port_ok, "a port mapping of [0-9a-z.:/-]", err, cap) != 0)
        return WP_ERR_INVAL;
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(doc, "metadata");
    if (md) {
        char *t = wp_json_print(md);
        size_t n = t ? strlen(t) : 0;
        cJSON_free(t);
        if (!t || n > CP_SESSION_METADATA_BYTES) {
            CP_SCHED_ERR("metadata: at most %d bytes of JSON", CP_SESSION_METADATA_BYTES);
            return WP_ERR_INVAL;
        }
    }
    return 0;
}

void cp_sched_req_from(const cJSON *doc, cp_sched_req *r)
{
    memset(r, 0, sizeof(*r));
    const cJSON *rq = cJSON_GetObjectItemCaseSensitive(doc, "requirements");
    if (!rq)
        return;
    r->gpu_vendor = wp_json_get_str(rq, "gpu_vendor");
    r->node_id = wp_json_get_str(rq, "node_id");
    r->labels = cJSON_GetObjectItemCaseSensitive(rq, "labels");
    r->prefer_labels = cJSON_GetObjectItemCaseSensitive(rq, "prefer_labels");
}

/* ---- ids, pins, names ---- */

int cp_session_pin_generate(char out[5])
{
    for (int i = 0; i < 4; i++) {
        unsigned char b;
        do {
            if (wp_random_bytes(&b, 1) != 0)
                return WP_ERR_CRYPTO;
        } while (b >= 250); /* uniform over 0..9 */
        out[i] = (char)('0' + b % 10);
    }
    out[4] = '\0';
    return 0;
}

int cp_session_uuid_generate(char out[37])
{
    unsigned char b[16];
    if (wp_random_bytes(b, sizeof(b)) != 0)
        return WP_ERR_CRYPTO;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
    return 0;
}

int cp_session_container_name(const char *uuid, char *out, size_t cap)
{
    if (!uuid || !out || !wp_uuid_valid(uuid) || cap < 22)
        return WP_ERR_INVAL;
    char hex[13];
    size_t n = 0;
    for (const char *p = uuid; *p && n < 12; p++) {
        if (*p == '-')
            continue;
        char c = *p;
        hex[n++] = (char)(c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c);
    }
    hex[n] = '\0';
    snprintf(out, cap, "wolfpack-%s", hex);
    return 0;
}

/* ---- the lobby ---- */

static long long cp_sched_int(const cJSON *o, const char *name, long long dflt)
{
    long long v;
    return wp_json_get_int(o, name, &v) == 0 ? v : dflt;
}

/* Copies array `name` of runner into dst (an empty array when absent). 0 or -1. */
static int cp_sched_copy_array(cJSON *dst, const cJSON *runner, const char *name)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(runner, name);
    cJSON *c = a ? cJSON_Duplicate(a, 1) : cJSON_CreateArray();
    if (!c)
        return -1;
    cJSON_AddItemToObject(dst, name, c);
    return 0;
}

cJSON *cp_session_lobby_body(const cJSON *request, const char *profile_id, const char *container,
                             const char *pin)
{
    if (!request || !profile_id || !container || !pin || strlen(pin) != 4)
        return NULL;
    const cJSON *video = cJSON_GetObjectItemCaseSensitive(request, "video");
    const cJSON *audio = cJSON_GetObjectItemCaseSensitive(request, "audio");
    const cJSON *runner = cJSON_GetObjectItemCaseSensitive(request, "runner");
    const char *name = wp_json_get_str(request, "name");
    char folder[CP_SESSION_CONTAINER_MAX + 16];
    snprintf(folder, sizeof(folder), "wolfpack/%s", container);
    cJSON *o = cJSON_CreateObject();
    cJSON *pins = o ? cJSON_AddArrayToObject(o, "pin") : NULL;
    cJSON *vs = o ? cJSON_CreateObject() : NULL;
    cJSON *as = o ? cJSON_CreateObject() : NULL;
    cJSON *r = o ? cJSON_CreateObject() : NULL;
    int ok = o && pins && vs && as && r;
    if (ok) {
        cJSON_AddItemToObject(o, "video_settings", vs);
        cJSON_AddItemToObject(o, "audio_settings", as);
        vs = as = NULL;
    }
    ok = ok && cJSON_AddStringToObject(o, "profile_id", profile_id) &&
         cJSON_AddStringToObject(o, "name", name ? name : container) &&
         cJSON_AddBoolToObject(o, "multi_user", 1) &&
         cJSON_AddBoolToObject(o, "stop_when_everyone_leaves", 0) &&
         cJSON_AddStringToObject(o, "runner_state_folder", folder);
    for (int i = 0; ok && i < 4; i++) {
        cJSON *d = cJSON_CreateNumber(pin[i] - '0');
        ok = d != NULL && pin[i] >= '0' && pin[i] <= '9';
        if (d)
            cJSON_AddItemToArray(pins, d);
    }
    cJSON *v = ok ? cJSON_GetObjectItemCaseSensitive(o, "video_settings") : NULL;
    cJSON *a = ok ? cJSON_GetObjectItemCaseSensitive(o, "audio_settings") : NULL;
    ok = ok &&
         cJSON_AddNumberToObject(v, "width",
                                 (double)cp_sched_int(video, "width", CP_SESSION_DEFAULT_WIDTH)) &&
         cJSON_AddNumberToObject(
             v, "height", (double)cp_sched_int(video, "height", CP_SESSION_DEFAULT_HEIGHT)) &&
         cJSON_AddNumberToObject(
             v, "refresh_rate",
             (double)cp_sched_int(video, "refresh_rate", CP_SESSION_DEFAULT_REFRESH)) &&
         cJSON_AddStringToObject(v, "wayland_render_node", "") &&
         cJSON_AddStringToObject(v, "runner_render_node", "") &&
         cJSON_AddStringToObject(v, "video_producer_buffer_caps", "") &&
         cJSON_AddNumberToObject(
             a, "channel_count",
             (double)cp_sched_int(audio, "channel_count", CP_SESSION_DEFAULT_CHANNELS));
    if (ok) {
        cJSON_AddItemToObject(o, "runner", r);
        ok = cJSON_AddStringToObject(r, "type", "docker") &&
             cJSON_AddStringToObject(r, "name", container) &&
             cJSON_AddStringToObject(
                 r, "image",
                 wp_json_get_str(runner, "image") ? wp_json_get_str(runner, "image") : "") &&
             cp_sched_copy_array(r, runner, "env") == 0 &&
             cp_sched_copy_array(r, runner, "mounts") == 0 &&
             cp_sched_copy_array(r, runner, "devices") == 0 &&
             cp_sched_copy_array(r, runner, "ports") == 0;
        r = NULL;
    }
    cJSON_Delete(vs);
    cJSON_Delete(as);
    cJSON_Delete(r);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* ---- SQL ---- */

char *cp_sched_text_array(const char *const *ids, size_t n)
{
    size_t len = 3;
    for (size_t i = 0; i < n; i++) {
        if (!ids[i] || !ids[i][0])
            return NULL;
        for (const char *p = ids[i]; *p; p++) {
            char c = *p;
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-'))
                return NULL;
        }
        len += strlen(ids[i]) + 3;
    }
    char *out = malloc(len);
    if (!out)
        return NULL;
    size_t o = 0;
    out[o++] = '{';
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(ids[i]);
        if (i)
            out[o++] = ',';
        out[o++] = '"';
        memcpy(out + o, ids[i], l);
        o += l;
        out[o++] = '"';
    }
    out[o++] = '}';
    out[o] = '\0';
    return out;
}

/* Parameters shared by reserve and explain: $2 gpu_vendor, $3 labels, $4 node_id, $5 prefer. */
typedef struct cp_sched_params {
    char *labels;
    char *prefer;
} cp_sched_params;

static int cp_sched_params_make(const cp_sched_req *r, cp_sched_params *p)
{
    memset(p, 0, sizeof(*p));
    if (r->labels && !(p->labels = wp_json_print(r->labels)))
        return WP_ERR_NOMEM;
    if (r->prefer_labels && !(p->prefer = wp_json_print(r->prefer_labels))) {
        cJSON_free(p->labels);
        return WP_ERR_NOMEM;
    }
    return 0;
}

static void cp_sched_params_free(cp_sched_params *p)
{
    cJSON_free(p->labels);
    cJSON_free(p->prefer);
}

/* The filters a node must pass to take a session, but for the explicit target and the nodes
 * already tried (unqualified columns of nodes; $2 gpu_vendor, $3 labels). */
#define CP_SCHED_ELIGIBLE                                                                          \
    "enabled AND NOT draining AND status = 'online' AND "                                          \
    "(cooldown_until IS NULL OR cooldown_until <= now()) AND connected_replica IS NOT NULL AND "   \
    "active_sessions < max_sessions AND ($2::text IS NULL OR gpu_vendor = $2::text) AND "          \
    "($3::jsonb IS NULL OR labels @> $3::jsonb) "

/*
 * LOCK locks the chosen candidate row (or not); RECHECK is applied by the UPDATE to the newest
 * version of the row. First try: lock with SKIP LOCKED, nothing to recheck. Retry: pick the best
 * candidate without locking, then let the UPDATE wait for that one row and recheck every filter
 * on it (a reservation never waits for a row while holding another node's lock, so concurrent
 * reservations cannot deadlock).
 */
#define CP_SCHED_SQL_RESERVE(LOCK, RECHECK)                                                        \
    "WITH sess AS (SELECT id FROM sessions WHERE id = $1::uuid AND status = 'pending' "            \
    "FOR UPDATE), "                                                                                \
    "cand AS (SELECT id FROM nodes WHERE EXISTS (SELECT 1 FROM sess) AND " CP_SCHED_ELIGIBLE       \
    "AND ($4::text IS NULL OR id = $4::text) "                                                     \
    "AND NOT (id = ANY ($6::text[])) "                                                             \
    "ORDER BY CASE WHEN $5::jsonb IS NOT NULL AND labels @> $5::jsonb THEN 0 ELSE 1 END, "         \
    "active_sessions::float8 / greatest(max_sessions, 1), last_assigned_at ASC NULLS FIRST, id "   \
    "LIMIT 1 " LOCK "), "                                                                          \
    "r AS (UPDATE nodes n SET active_sessions = n.active_sessions + 1, "                           \
    "last_assigned_at = clock_timestamp() FROM cand WHERE n.id = cand.id " RECHECK                 \
    "RETURNING n.id, n.active_sessions, n.max_sessions), "                                         \
    "s AS (UPDATE sessions SET status = 'starting', node_id = r.id, attempts = attempts + 1 "      \
    "FROM r WHERE sessions.id = $1::uuid RETURNING sessions.id, r.id AS node_id), "                \
    "e AS (INSERT INTO events (type, node_id, session_id, replica_id, data) "                      \
    "SELECT 'session.starting', s.node_id, s.id, $8::text, "                                       \
    "jsonb_build_object('attempt', $7::int) FROM s) "                                              \
    "SELECT r.id AS node_id, r.active_sessions, r.max_sessions FROM r"

static const char cp_sched_sql_reserve[] = CP_SCHED_SQL_RESERVE("FOR UPDATE SKIP LOCKED", "");
static const char cp_sched_sql_reserve_wait[] = CP_SCHED_SQL_RESERVE("", "AND " CP_SCHED_ELIGIBLE);

static int cp_sched_reserve_sql(const char *sql, cp_db *db, const char *session_id,
                                const cp_sched_req *r, const char *const *tried, size_t ntried,
                                int attempt, const char *replica_id, cp_db_result_cb cb, void *ud)
{
    if (!db || !session_id || !r || !cb || !wp_uuid_valid(session_id) || (ntried && !tried))
        return WP_ERR_INVAL;
    char *arr = cp_sched_text_array(tried, ntried);
    if (!arr)
        return ntried ? WP_ERR_INVAL : WP_ERR_NOMEM;
    cp_sched_params p;
    int rc = cp_sched_params_make(r, &p);
    if (rc == 0) {
        char att[16];
        snprintf(att, sizeof(att), "%d", attempt);
        const char *params[] = {session_id, r->gpu_vendor, p.labels, r->node_id,
                                p.prefer,   arr,           att,      replica_id};
        rc = cp_db_query(db, sql, 8, params, cb, ud);
        cp_sched_params_free(&p);
    }
    free(arr);
    return rc;
}

int cp_sched_reserve(cp_db *db, const char *session_id, const cp_sched_req *r,
                     const char *const *tried, size_t ntried, int attempt, const char *replica_id,
                     cp_db_result_cb cb, void *ud)
{
    return cp_sched_reserve_sql(cp_sched_sql_reserve, db, session_id, r, tried, ntried, attempt,
                                replica_id, cb, ud);
}

int cp_sched_reserve_wait(cp_db *db, const char *session_id, const cp_sched_req *r,
                          const char *const *tried, size_t ntried, int attempt,
                          const char *replica_id, cp_db_result_cb cb, void *ud)
{
    return cp_sched_reserve_sql(cp_sched_sql_reserve_wait, db, session_id, r, tried, ntried,
                                attempt, replica_id, cb, ud);
}

static const char cp_sched_sql_explain[] =
    "SELECT reason, count(*)::int AS n FROM (SELECT CASE "
    "WHEN NOT enabled THEN 'disabled' "
    "WHEN draining OR status = 'draining' THEN 'draining' "
    "WHEN status = 'offline' THEN 'offline' "
    "WHEN status = 'degraded' OR cooldown_until > now() THEN 'degraded' "
    "WHEN connected_replica IS NULL THEN 'not_connected' "
    "WHEN $1::text IS NOT NULL AND gpu_vendor <> $1::text THEN 'gpu_vendor' "
    "WHEN $2::jsonb IS NOT NULL AND NOT labels @> $2::jsonb THEN 'labels' "
    "WHEN active_sessions >= max_sessions THEN 'capacity' "
    "ELSE 'available' END AS reason FROM nodes WHERE ($3::text IS NULL OR id = $3::text) "
    "AND NOT (id = ANY ($4::text[]))) x "
    "GROUP BY reason";

int cp_sched_explain_untried(cp_db *db, const cp_sched_req *r, const char *const *tried,
                             size_t ntried, cp_db_result_cb cb, void *ud)
{
    if (!db || !r || !cb || (ntried && !tried))
        return WP_ERR_INVAL;
    char *arr = cp_sched_text_array(tried, ntried);
    if (!arr)
        return ntried ? WP_ERR_INVAL : WP_ERR_NOMEM;
    cp_sched_params p;
    int rc = cp_sched_params_make(r, &p);
    if (rc == 0) {
        const char *params[] = {r->gpu_vendor, p.labels, r->node_id, arr};
        rc = cp_db_query(db, cp_sched_sql_explain, 4, params, cb, ud);
        cp_sched_params_free(&p);
    }
    free(arr);
    return rc;
}

int cp_sched_explain(cp_db *db, const cp_sched_req *r, cp_db_result_cb cb, void *ud)
{
    return cp_sched_explain_untried(db, r, NULL, 0, cb, ud);
}

cJSON *cp_sched_explain_json(const PGresult *res, int *available)
{
    static const char *const reasons[] = CP_SCHED_REASONS;
    *available = 0;
    long total = 0;
    long counts[CP_SCHED_NREASONS] = {0};
    for (int i = 0; res && i < PQntuples(res); i++) {
        const char *reason = PQgetvalue(res, i, 0);
        long n = atol(PQgetvalue(res, i, 1));
        total += n;
        if (strcmp(reason, "available") == 0)
            *available = (int)n;
        for (size_t k = 0; k < CP_SCHED_NREASONS; k++)
            if (strcmp(reason, reasons[k]) == 0)
                counts[k] = n;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *ex = o ? cJSON_AddObjectToObject(o, "excluded") : NULL;
    int ok = ex && cJSON_AddNumberToObject(o, "nodes", (double)total);
    for (size_t k = 0; ok && k < CP_SCHED_NREASONS; k++)
        ok = cJSON_AddNumberToObject(ex, reasons[k], (double)counts[k]) != NULL;
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}
