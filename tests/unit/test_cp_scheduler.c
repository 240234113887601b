/*
 * test_cp_scheduler.c — scheduler.h: session request rules, PIN / uuid / container
 * names, the lobbies/create body; and, against a real (embedded) PostgreSQL with the
 * compiled-in migrations, the reservation statement: filters (disabled, draining,
 * offline, degraded, cooling down, not connected, gpu_vendor, labels, capacity,
 * explicit node, nodes already tried), order (prefer_labels, load ratio,
 * least-recently assigned), the no_capacity explanation, and 200 reservations racing
 * over several pools against a total capacity of 50: exactly 50 win, nothing overbooks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "db.h"
#include "err.h"
#include "ids.h"
#include "log.h"
#include "migrate.h"
#include "scheduler.h"
#include "wp_test.h"

#include "wp_pg_fixture.h"

static cp_db *db_;

/* ---- pure ---- */

static int check_(const char *json, char *err, size_t cap)
{
    cJSON *doc = cJSON_Parse(json);
    WP_CHECK(doc != NULL);
    err[0] = '\0';
    int rc = cp_session_request_check(doc, err, cap);
    cJSON_Delete(doc);
    return rc;
}

#define OK_RUNNER "\"runner\":{\"type\":\"docker\",\"image\":\"ghcr.io/games-on-whales/xfce:edge\"}"

static void refused_(const char *json, const char *needle)
{
    char err[256];
    int rc = check_(json, err, sizeof(err));
    WP_CHECK_EQ(rc, WP_ERR_INVAL);
    if (!strstr(err, needle))
        fprintf(stderr, "  message \"%s\" lacks \"%s\" (body %s)\n", err, needle, json);
    WP_CHECK(strstr(err, needle) != NULL);
}

WP_TEST(request_rules)
{
    char err[256];
    WP_CHECK_EQ(check_("{" OK_RUNNER "}", err, sizeof(err)), 0);
    WP_CHECK_EQ(check_("{\"name\":\"desk\",\"requirements\":{\"gpu_vendor\":\"nvidia\","
                       "\"labels\":{\"region\":\"eu\"},\"node_id\":\"gpu-1\","
                       "\"prefer_labels\":{\"zone\":\"a\"}},\"runner\":{\"type\":\"docker\","
                       "\"name\":\"x\",\"image\":\"img:1\",\"env\":[\"A=1\",\"B_2=x y\"],"
                       "\"mounts\":[\"/a:/b:ro\"],\"devices\":[\"/dev/input/event0\"],"
                       "\"ports\":[\"8080:80/tcp\"]},\"video\":{\"width\":1280,\"height\":720,"
                       "\"refresh_rate\":120},\"audio\":{\"channel_count\":6},"
                       "\"metadata\":{\"ticket\":42}}",
                       err, sizeof(err)),
                0);
    refused_("{}", "runner");
    refused_("{\"runner\":{\"type\":\"docker\"}}", "image");
    refused_("{\"runner\":{\"type\":\"process\",\"image\":\"a\"}}", "runner.type");
    refused_("{\"runner\":{\"type\":\"docker\",\"image\":\"a b\"}}", "runner.image");
    refused_("{\"runner\":{\"type\":\"docker\",\"image\":\"a\",\"env\":[\"1A=x\"]}}",
             "runner.env[0]");
    refused_("{\"runner\":{\"type\":\"docker\",\"image\":\"a\",\"env\":[\"A=1\",\"novalue\"]}}",
             "runner.env[1]");
    refused_("{\"runner\":{\"type\":\"docker\",\"image\":\"a\",\"env\":[7]}}", "runner.env[0]");
    refused_("{\"runner\":{\"type\":\"docker\",\"image\":\"a\",\"ports\":[\"80; rm\"]}}",
             "runner.ports[0]");
    refused_("{\"runner\":{\"type\":\"docker\",\"image\":\"a\",\"base_create_json\":\"{}\"}}",
             "base_create_json");
    refused_("{" OK_RUNNER ",\"extra\":1}", "extra");
    refused_("{" OK_RUNNER ",\"video\":{\"width\":99999}}", "width");
    refused_("{" OK_RUNNER ",\"audio\":{\"channel_count\":\"2\"}}", "channel_count");
    refused_("{" OK_RUNNER ",\"requirements\":{\"gpu_vendor\":\"3dfx\"}}",
             "requirements.gpu_vendor");
    refused_("{" OK_RUNNER ",\"requirements\":{\"node_id\":\"Bad Node\"}}", "requirements.node_id");
    refused_("{" OK_RUNNER ",\"requirements\":{\"labels\":{\"bad key\":\"x\"}}}",
             "requirements.labels");
    refused_("{" OK_RUNNER ",\"requirements\":{\"prefer_labels\":{\"k\":1}}}",
             "requirements.prefer_labels");
    refused_("{" OK_RUNNER ",\"name\":\"a\\u0001b\"}", "name");
    refused_("{" OK_RUNNER ",\"name\":\"\"}", "name");
    refused_("[1]", "object");
    /* too many env entries, and metadata over its byte budget */
    char big[16384];
    size_t o = (size_t)snprintf(big, sizeof(big),
                                "{\"runner\":{\"type\":\"docker\","
                                "\"image\":\"a\",\"env\":[");
    for (int i = 0; i < CP_SESSION_ENV_MAX + 1; i++)
        o += (size_t)snprintf(big + o, sizeof(big) - o, "%s\"K%d=v\"", i ? "," : "", i);
    snprintf(big + o, sizeof(big) - o, "]}}");
    refused_(big, "env");
    o = (size_t)snprintf(big, sizeof(big), "{" OK_RUNNER ",\"metadata\":{\"k\":\"");
    memset(big + o, 'x', 9000);
    o += 9000;
    snprintf(big + o, sizeof(big) - o, "\"}}");
    refused_(big, "metadata");
}

WP_TEST(ids_pins_names)
{
    int seen[10] = {0};
    for (int i = 0; i < 400; i++) {
        char pin[5];
        WP_CHECK_EQ(cp_session_pin_generate(pin), 0);
        WP_CHECK_EQ(strlen(pin), 4u);
        for (int k = 0; k < 4; k++) {
            WP_CHECK(pin[k] >= '0' && pin[k] <= '9');
            seen[pin[k] - '0']++;
        }
    }
    for (int d = 0; d < 10; d++)
        WP_CHECK(seen[d] > 50); /* 1600 digits: each about 160 */
    char a[37], b[37], name[64];
    WP_CHECK_EQ(cp_session_uuid_generate(a), 0);
    WP_CHECK_EQ(cp_session_uuid_generate(b), 0);
    WP_CHECK(wp_uuid_valid(a));
    WP_CHECK(strcmp(a, b) != 0);
    WP_CHECK_EQ(a[14], '4');
    WP_CHECK_EQ(
        cp_session_container_name("3F2504E0-4F89-11D3-9A0C-0305E82C3301", name, sizeof(name)), 0);
    WP_CHECK_STR(name, "wolfpack-3f2504e04f89");
    WP_CHECK_EQ(cp_session_container_name("not-a-uuid", name, sizeof(name)), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_session_container_name(a, name, 10), WP_ERR_INVAL);
    const char *ids[] = {"gpu-1", "gpu-2"};
    char *arr = cp_sched_text_array(ids, 2);
    WP_CHECK_STR(arr, "{\"gpu-1\",\"gpu-2\"}");
    free(arr);
    arr = cp_sched_text_array(NULL, 0);
    WP_CHECK_STR(arr, "{}");
    free(arr);
    const char *bad[] = {"a\",\"b"};
    WP_CHECK(cp_sched_text_array(bad, 1) == NULL);
}

WP_TEST(lobby_body)
{
    cJSON *req = cJSON_Parse("{\"name\":\"desk\",\"runner\":{\"type\":\"docker\",\"name\":\"mine\","
                             "\"image\":\"img:1\",\"env\":[\"A=1\"]},\"video\":{\"width\":1280}}");
    cJSON *b = cp_session_lobby_body(req, "moonlight-profile-id", "wolfpack-0123456789ab", "0429");
    WP_CHECK(b != NULL);
    char *t = cJSON_PrintUnformatted(b);
    WP_CHECK(strstr(t, "\"profile_id\":\"moonlight-profile-id\"") != NULL);
    WP_CHECK(strstr(t, "\"name\":\"desk\"") != NULL);
    WP_CHECK(strstr(t, "\"multi_user\":true") != NULL);
    WP_CHECK(strstr(t, "\"stop_when_everyone_leaves\":false") != NULL);
    WP_CHECK(strstr(t, "\"pin\":[0,4,2,9]") != NULL);
    WP_CHECK(strstr(t, "\"width\":1280,\"height\":1080,\"refresh_rate\":60") != NULL);
    WP_CHECK(strstr(t, "\"wayland_render_node\":\"\"") != NULL);
    WP_CHECK(strstr(t, "\"channel_count\":2") != NULL);
    WP_CHECK(strstr(t, "\"runner_state_folder\":\"wolfpack/wolfpack-0123456789ab\"") != NULL);
    WP_CHECK(strstr(t, "\"type\":\"docker\",\"name\":\"wolfpack-0123456789ab\",\"image\":"
                       "\"img:1\",\"env\":[\"A=1\"],\"mounts\":[],\"devices\":[],\"ports\":[]") !=
             NULL);
    cJSON_free(t);
    cJSON_Delete(b);
    WP_CHECK(cp_session_lobby_body(req, "p", "c", "12") == NULL);
    cJSON_Delete(req);
}

/* ---- SQL ---- */

typedef struct rres {
    int done;
    int err;
    char node[64];
} rres;

static void reserve_cb_(int err, PGresult *res, void *ud)
{
    rres *r = ud;
    r->done++;
    r->err = err;
    r->node[0] = '\0';
    if (err == 0 && PQntuples(res) == 1)
        snprintf(r->node, sizeof(r->node), "%s", PQgetvalue(res, 0, 0));
}

static void exec_(const char *sql)
{
    qres q = q_(db_, sql, 0, NULL);
    if (q.err != 0)
        fprintf(stderr, "  sql failed (%s): %s\n", q.sqlstate, sql);
    WP_CHECK_EQ(q.err, 0);
}

static int count_(const char *sql)
{
    qres q = q_(db_, sql, 0, NULL);
    WP_CHECK_EQ(q.err, 0);
    return atoi(q.v0);
}

/* Inserts a pending session and returns its id in out. */
static void new_session_(char out[37])
{
    WP_CHECK_EQ(cp_session_uuid_generate(out), 0);
    const char *params[] = {out};
    qres q = q_(db_, "INSERT INTO sessions (id) VALUES ($1::uuid)", 1, params);
    WP_CHECK_EQ(q.err, 0);
}

/* Reserves for a new session with requirements json; returns the node ("" = none). */
static rres reserve_(const char *reqs, const char *const *tried, size_t ntried)
{
    char sid[37];
    new_session_(sid);
    char body[1024];
    snprintf(body, sizeof(body), "{\"requirements\":%s," OK_RUNNER "}", reqs ? reqs : "{}");
    cJSON *doc = cJSON_Parse(body);
    cp_sched_req r;
    cp_sched_req_from(doc, &r);
    rres out = {0};
    WP_CHECK_EQ(cp_sched_reserve(db_, sid, &r, tried, ntried, 1, "replica-t", reserve_cb_, &out),
                0);
    run_until_(&out.done, 15000);
    WP_CHECK_EQ(out.done, 1);
    WP_CHECK_EQ(out.err, 0);
    cJSON_Delete(doc);
    return out;
}

static void reset_nodes_(void)
{
    exec_("DELETE FROM events");
    exec_("DELETE FROM sessions");
    exec_("DELETE FROM nodes");
}

/* A connected, online, enabled node. */
static void node_(const char *id, int max, int active, const char *labels, const char *vendor)
{
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "INSERT INTO nodes (id, status, max_sessions, active_sessions, labels, gpus, "
             "connected_replica, last_heartbeat) VALUES ('%s', 'online', %d, %d, '%s', "
             "'[{\"vendor\":\"%s\"}]', 'replica-t', now())",
             id, max, active, labels ? labels : "{}", vendor ? vendor : "nvidia");
    exec_(sql);
}

WP_TEST(reserve_filters_and_order)
{
    reset_nodes_();
    node_("n-a", 4, 2, "{\"region\":\"eu\"}", "nvidia"); /* ratio 0.5 */
    node_("n-b", 4, 1, "{\"region\":\"us\"}", "amd");    /* ratio 0.25 */
    node_("n-c", 2, 2, "{\"region\":\"eu\"}", "nvidia"); /* full */
    /* lowest ratio first */
    rres r = reserve_(NULL, NULL, 0);
    WP_CHECK_STR(r.node, "n-b");
    WP_CHECK_EQ(count_("SELECT active_sessions FROM nodes WHERE id = 'n-b'"), 2);
    WP_CHECK_EQ(count_("SELECT count(*) FROM sessions WHERE status = 'starting' AND "
                       "node_id = 'n-b' AND attempts = 1"),
                1);
    WP_CHECK_EQ(count_("SELECT count(*) FROM events WHERE type = 'session.starting' AND "
                       "node_id = 'n-b' AND replica_id = 'replica-t'"),
                1);
    /* now both at 0.5: least recently assigned (n-a never) wins */
    r = reserve_(NULL, NULL, 0);
    WP_CHECK_STR(r.node, "n-a");
    /* filters */
    r = reserve_("{\"gpu_vendor\":\"amd\"}", NULL, 0);
    WP_CHECK_STR(r.node, "n-b");
    r = reserve_("{\"labels\":{\"region\":\"eu\"}}", NULL, 0);
    WP_CHECK_STR(r.node, "n-a");
    r = reserve_("{\"gpu_vendor\":\"intel\"}", NULL, 0);
    WP_CHECK_STR(r.node, "");
    r = reserve_("{\"node_id\":\"n-c\"}", NULL, 0); /* full */
    WP_CHECK_STR(r.node, "");
    const char *tried[] = {"n-a", "n-b"};
    r = reserve_(NULL, tried, 2);
    WP_CHECK_STR(r.node, ""); /* n-c is full, the others were tried */
    /* prefer_labels is a soft preference: eu preferred though us has the lower ratio */
    exec_("UPDATE nodes SET active_sessions = 0, max_sessions = 10");
    exec_("UPDATE nodes SET active_sessions = 5 WHERE id = 'n-a'");
    exec_("UPDATE nodes SET enabled = false WHERE id = 'n-c'");
    r = reserve_("{\"prefer_labels\":{\"region\":\"eu\"}}", NULL, 0);
    WP_CHECK_STR(r.node, "n-a");
    r = reserve_("{\"prefer_labels\":{\"region\":\"mars\"}}", NULL, 0);
    WP_CHECK_STR(r.node, "n-b");
    /* status, draining, cool-down and tunnel filters */
    exec_("UPDATE nodes SET status = 'degraded' WHERE id = 'n-a'");
    exec_("UPDATE nodes SET cooldown_until = now() + interval '1 minute' WHERE id = 'n-b'");
    r = reserve_(NULL, NULL, 0);
    WP_CHECK_STR(r.node, "");
    exec_("UPDATE nodes SET cooldown_until = now() - interval '1 second', "
          "connected_replica = NULL WHERE id = 'n-b'");
    r = reserve_(NULL, NULL, 0);
    WP_CHECK_STR(r.node, "");
    exec_("UPDATE nodes SET connected_replica = 'replica-t', draining = true WHERE id = 'n-b'");
    r = reserve_(NULL, NULL, 0);
    WP_CHECK_STR(r.node, "");
    exec_("UPDATE nodes SET draining = false WHERE id = 'n-b'");
    r = reserve_(NULL, NULL, 0);
    WP_CHECK_STR(r.node, "n-b");
    /* a session that is not pending reserves nothing */
    char sid[37];
    new_session_(sid);
    const char *p1[] = {sid};
    qres q = q_(db_, "UPDATE sessions SET status = 'failed' WHERE id = $1::uuid", 1, p1);
    WP_CHECK_EQ(q.err, 0);
    int before = count_("SELECT sum(active_sessions) FROM nodes");
    cp_sched_req none = {0};
    rres out = {0};
    WP_CHECK_EQ(cp_sched_reserve(db_, sid, &none, NULL, 0, 1, "replica-t", reserve_cb_, &out), 0);
    run_until_(&out.done, 15000);
    WP_CHECK_STR(out.node, "");
    WP_CHECK_EQ(count_("SELECT sum(active_sessions) FROM nodes"), before);
    /* invalid input: no callback */
    WP_CHECK_EQ(cp_sched_reserve(db_, "nope", &none, NULL, 0, 1, "r", reserve_cb_, &out),
                WP_ERR_INVAL);
    const char *badtried[] = {"x'y"};
    WP_CHECK_EQ(cp_sched_reserve(db_, sid, &none, badtried, 1, 1, "r", reserve_cb_, &out),
                WP_ERR_INVAL);
}

typedef struct eres {
    int done;
    int err;
    int available;
    cJSON *json;
} eres;

static void explain_cb_(int err, PGresult *res, void *ud)
{
    eres *e = ud;
    e->done++;
    e->err = err;
    if (err == 0)
        e->json = cp_sched_explain_json(res, &e->available);
}

static int excluded_(const cJSON *j, const char *reason)
{
    return (int)cJSON_GetNumberValue(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "excluded"), reason));
}

WP_TEST(explain_counts)
{
    reset_nodes_();
    node_("e-1", 2, 0, "{}", "nvidia");
    node_("e-2", 2, 2, "{}", "nvidia");                  /* capacity */
    node_("e-3", 2, 0, "{}", "amd");                     /* gpu_vendor */
    node_("e-4", 2, 0, "{\"region\":\"eu\"}", "nvidia"); /* labels? no: matches below */
    node_("e-5", 2, 0, "{}", "nvidia");
    node_("e-6", 2, 0, "{}", "nvidia");
    node_("e-7", 2, 0, "{}", "nvidia");
    node_("e-8", 2, 0, "{}", "nvidia");
    exec_("UPDATE nodes SET enabled = false WHERE id = 'e-5'");
    exec_("UPDATE nodes SET draining = true, status = 'draining' WHERE id = 'e-6'");
    exec_("UPDATE nodes SET status = 'offline', connected_replica = NULL WHERE id = 'e-7'");
    exec_("UPDATE nodes SET cooldown_until = now() + interval '1 minute' WHERE id = 'e-8'");
    exec_("UPDATE nodes SET connected_replica = NULL WHERE id = 'e-1'");
    cJSON *doc = cJSON_Parse("{\"requirements\":{\"gpu_vendor\":\"nvidia\",\"labels\":"
                             "{\"region\":\"eu\"}}}");
    cp_sched_req r;
    cp_sched_req_from(doc, &r);
    eres e = {0};
    WP_CHECK_EQ(cp_sched_explain(db_, &r, explain_cb_, &e), 0);
    run_until_(&e.done, 15000);
    WP_CHECK_EQ(e.err, 0);
    WP_CHECK(e.json != NULL);
    WP_CHECK_EQ((int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(e.json, "nodes")), 8);
    WP_CHECK_EQ(excluded_(e.json, "disabled"), 1);
    WP_CHECK_EQ(excluded_(e.json, "draining"), 1);
    WP_CHECK_EQ(excluded_(e.json, "offline"), 1);
    WP_CHECK_EQ(excluded_(e.json, "degraded"), 1);
    WP_CHECK_EQ(excluded_(e.json, "not_connected"), 1);
    WP_CHECK_EQ(excluded_(e.json, "gpu_vendor"), 1);
    WP_CHECK_EQ(excluded_(e.json, "labels"), 1); /* e-2 has no region label: labels first */
    WP_CHECK_EQ(excluded_(e.json, "capacity"), 0);
    WP_CHECK_EQ(e.available, 1); /* e-4 */
    cJSON_Delete(e.json);
    /* the nodes a session already tried are left out of the count */
    const char *tried[] = {"e-4", "e-3"};
    eres et = {0};
    WP_CHECK_EQ(cp_sched_explain_untried(db_, &r, tried, 2, explain_cb_, &et), 0);
    run_until_(&et.done, 15000);
    WP_CHECK_EQ(et.err, 0);
    WP_CHECK_EQ((int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(et.json, "nodes")), 6);
    WP_CHECK_EQ(excluded_(et.json, "gpu_vendor"), 0);
    WP_CHECK_EQ(et.available, 0);
    cJSON_Delete(et.json);
    const char *bad[] = {"e'4"};
    WP_CHECK_EQ(cp_sched_explain_untried(db_, &r, bad, 1, explain_cb_, &et), WP_ERR_INVAL);
    cJSON_Delete(doc);
    /* explicit node */
    doc = cJSON_Parse("{\"requirements\":{\"node_id\":\"e-2\"}}");
    cp_sched_req_from(doc, &r);
    eres e2 = {0};
    WP_CHECK_EQ(cp_sched_explain(db_, &r, explain_cb_, &e2), 0);
    run_until_(&e2.done, 15000);
    WP_CHECK_EQ((int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(e2.json, "nodes")), 1);
    WP_CHECK_EQ(excluded_(e2.json, "capacity"), 1);
    WP_CHECK_EQ(e2.available, 0);
    cJSON_Delete(e2.json);
    cJSON_Delete(doc);
}

/* ---- the race: 200 reservations, capacity 50, four pools ---- */

#define RACE_N 200

typedef struct racer {
    cp_db *db;
    char sid[37];
    int tries;
    int state; /* 0 running, 1 reserved, 2 no capacity, 3 error */
} racer;

static racer racers_[RACE_N];
static int race_left_;
static cp_sched_req race_req_;

static void race_reserve_(racer *r);

static void race_explained_(int err, PGresult *res, void *ud)
{
    racer *r = ud;
    int available = 0;
    cJSON *j = err == 0 ? cp_sched_explain_json(res, &available) : NULL;
    cJSON_Delete(j);
    if (err != 0) {
        r->state = 3;
        race_left_--;
    } else if (available > 0 && r->tries < 50) {
        race_reserve_(r); /* only skipped a locked node: retry, as sessions.c does */
    } else {
        r->state = 2;
        race_left_--;
    }
}

static void race_reserved_(int err, PGresult *res, void *ud)
{
    racer *r = ud;
    if (err != 0) {
        r->state = 3;
        race_left_--;
        return;
    }
    if (PQntuples(res) == 1) {
        r->state = 1;
        race_left_--;
        return;
    }
    if (cp_sched_explain(r->db, &race_req_, race_explained_, r) != 0) {
        r->state = 3;
        race_left_--;
    }
}

static void race_reserve_(racer *r)
{
    /* retries wait for the rows SKIP LOCKED skipped, as sessions.c does: still no overbooking */
    int (*reserve)(cp_db *, const char *, const cp_sched_req *, const char *const *, size_t, int,
                   const char *, cp_db_result_cb, void *) =
        r->tries++ ? cp_sched_reserve_wait : cp_sched_reserve;
    if (reserve(r->db, r->sid, &race_req_, NULL, 0, r->tries, "replica-t", race_reserved_, r) !=
        0) {
        r->state = 3;
        race_left_--;
    }
}

static int race_done_(void)
{
    return race_left_ == 0;
}

WP_TEST(reserve_race_never_overbooks)
{
    reset_nodes_();
    node_("r-1", 20, 0, "{}", "nvidia");
    node_("r-2", 20, 0, "{}", "nvidia");
    node_("r-3", 10, 0, "{}", "nvidia");
    cp_db *pools[4] = {db_, NULL, NULL, NULL};
    for (int i = 1; i < 4; i++)
        pools[i] = db_open_("dbname=sched_t", 4);
    for (int i = 0; i < RACE_N; i++) {
        new_session_(racers_[i].sid);
        racers_[i].db = pools[i % 4];
    }
    memset(&race_req_, 0, sizeof(race_req_));
    race_left_ = RACE_N;
    for (int i = 0; i < RACE_N; i++)
        race_reserve_(&racers_[i]);
    WP_CHECK(run_until_fn_(race_done_, 60000));
    int won = 0, full = 0, errs = 0;
    for (int i = 0; i < RACE_N; i++) {
        won += racers_[i].state == 1;
        full += racers_[i].state == 2;
        errs += racers_[i].state == 3;
    }
    WP_CHECK_EQ(won, 50);
    WP_CHECK_EQ(full, 150);
    WP_CHECK_EQ(errs, 0);
    WP_CHECK_EQ(count_("SELECT sum(active_sessions) FROM nodes"), 50);
    WP_CHECK_EQ(count_("SELECT count(*) FROM nodes WHERE active_sessions > max_sessions"), 0);
    WP_CHECK_EQ(count_("SELECT count(*) FROM sessions WHERE status = 'starting'"), 50);
    WP_CHECK_EQ(count_("SELECT count(*) FROM nodes n WHERE active_sessions <> (SELECT count(*) "
                       "FROM sessions s WHERE s.node_id = n.id AND s.status = 'starting')"),
                0);
    for (int i = 1; i < 4; i++)
        db_close_wait_(pools[i]);
}

static void mig_cb_(int err, int applied, void *ud)
{
    (void)applied;
    int *m = ud;
    *m = err == 0 ? 1 : -1;
}

int main(void)
{
    wp_log_set_level(WP_LOG_ERROR);
    WP_RUN(request_rules);
    WP_RUN(ids_pins_names);
    WP_RUN(lobby_body);
    int rc = cluster_start_();
    WP_CHECK_EQ(rc, 0);
    if (rc == 0) {
        cp_db *admin = db_open_(NULL, 1);
        qres q = q_(admin, "CREATE DATABASE sched_t", 0, NULL);
        WP_CHECK_EQ(q.err, 0);
        db_close_wait_(admin);
        db_ = db_open_("dbname=sched_t", 4);
        int m = 0;
        WP_CHECK_EQ(cp_migrate_run(db_, mig_cb_, &m), 0);
        run_until_(&m, 30000);
        WP_CHECK_EQ(m, 1);
        WP_RUN(reserve_filters_and_order);
        WP_RUN(explain_counts);
        WP_RUN(reserve_race_never_overbooks);
        db_close_wait_(db_);
    }
    cluster_stop_();
    return wp_test_done() || wp_test_failed_checks_ ? 1 : 0;
}
