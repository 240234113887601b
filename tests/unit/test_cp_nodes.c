/*
 * test_cp_nodes.c — the node registry (nodes.h) and event appends (events.h) against a
 * real (embedded) PostgreSQL with the compiled-in migrations.
 *
 * Covered: hello auto-registers (node.registered + node.online, once) and a repeat hello
 * writes no event; a pre-registered node keeps its admin labels/max_sessions while version,
 * services and GPUs (and the derived gpu_vendor) follow the agent; two pools saying hello for
 * one new node at once register it exactly once; heartbeats move online <-> degraded with
 * events, keep a drained node draining, bring an offline node back, and answer "no such
 * node" for unknown ids; disconnect only from the replica holding the node; the health
 * sweep marks stale nodes offline once (also with two sweeps racing) and reports their
 * replicas; the recount fixes drifted active_sessions; invalid input is refused without a
 * callback; events: append, append_tx (rolled back = gone), cp_events_exec with builders
 * (commit, skip, abort, SQL error: no event written).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "db.h"
#include "err.h"
#include "events.h"
#include "log.h"
#include "migrate.h"
#include "nodes.h"
#include "pgembed.h"
#include "wp_test.h"

#include "wp_pg_fixture.h"

static cp_db *db_;

typedef struct migres_t {
    int done;
    int err;
} migres_t;

static void mig_cb_(int err, int applied, void *ud)
{
    (void)applied;
    migres_t *m = ud;
    m->done++;
    m->err = err;
}

typedef struct nres {
    int done;
    int err;
    int has;
    cp_node_state st;
} nres;

static void nodes_cb_(int err, const cp_node_state *st, void *ud)
{
    nres *r = ud;
    r->done++;
    r->err = err;
    r->has = st != NULL;
    if (st)
        r->st = *st;
}

static nres wait_(nres *r)
{
    run_until_(&r->done, 15000);
    WP_CHECK_EQ(r->done, 1);
    return *r;
}

static int count_(const char *sql, const char *a, const char *b)
{
    const char *params[] = {a, b};
    qres q = q_(db_, sql, b ? 2 : (a ? 1 : 0), params);
    WP_CHECK_EQ(q.err, 0);
    return atoi(q.v0);
}

static int events_(const char *node, const char *type)
{
    return count_("SELECT count(*) FROM events WHERE node_id = $1 AND type = $2", node, type);
}

static nres hello_(cp_db *db, const char *id, const char *labels, int max, const char *gpus,
                   const char *replica)
{
    cJSON *l = labels ? cJSON_Parse(labels) : NULL;
    cJSON *g = gpus ? cJSON_Parse(gpus) : NULL;
    cJSON *svc = cJSON_Parse("[\"wolf\",\"moonlight\",\"probe\"]");
    cp_node_hello h = {.node_id = id,
                       .version = "0.1.0",
                       .labels = l,
                       .max_sessions = max,
                       .services = svc,
                       .gpus = g};
    nres r = {0};
    WP_CHECK_EQ(cp_nodes_hello(db, &h, replica, nodes_cb_, &r), 0);
    cJSON_Delete(l);
    cJSON_Delete(g);
    cJSON_Delete(svc);
    return wait_(&r);
}

static nres heartbeat_(const char *id, int healthy)
{
    cJSON *load = cJSON_Parse("{\"active_sessions\":1,\"max_sessions\":4}");
    cJSON *gpus = cJSON_Parse("[{\"index\":0,\"utilization\":37}]");
    cJSON *wolf = cJSON_Parse(healthy ? "{\"api\":{\"ok\":true,\"latency_ms\":3}}"
                                      : "{\"api\":{\"ok\":false,\"latency_ms\":5000}}");
    nres r = {0};
    WP_CHECK_EQ(cp_nodes_heartbeat(db_, id, load, gpus, wolf, healthy, nodes_cb_, &r), 0);
    cJSON_Delete(load);
    cJSON_Delete(gpus);
    cJSON_Delete(wolf);
    return wait_(&r);
}

WP_TEST(hello_registers_once)
{
    nres r = hello_(db_, "gpu-a", "{\"zone\":\"eu\"}", 4,
                    "[{\"index\":0,\"vendor\":\"intel\"},{\"index\":1,\"vendor\":\"nvidia\"}]",
                    "replica-1");
    WP_CHECK_EQ(r.err, 0);
    WP_CHECK(r.has);
    WP_CHECK(r.st.registered);
    WP_CHECK_STR(r.st.id, "gpu-a");
    WP_CHECK_STR(r.st.status, "online");
    WP_CHECK_STR(r.st.prev_status, "");
    WP_CHECK_EQ(r.st.max_sessions, 4);
    WP_CHECK(r.st.enabled);
    WP_CHECK(!r.st.preregistered);
    WP_CHECK_EQ(events_("gpu-a", "node.registered"), 1);
    WP_CHECK_EQ(events_("gpu-a", "node.online"), 1);
    WP_CHECK_EQ(count_("SELECT count(*) FROM nodes WHERE id = $1 AND gpu_vendor = 'nvidia' AND "
                       "labels = '{\"zone\":\"eu\"}' AND connected_replica = 'replica-1' AND "
                       "services ? 'probe' AND last_heartbeat IS NOT NULL",
                       "gpu-a", NULL),
                1);

    /* a repeat hello (reconnect) updates but writes no event */
    r = hello_(db_, "gpu-a", "{\"zone\":\"us\"}", 6, "[{\"index\":0,\"vendor\":\"amd\"}]",
               "replica-2");
    WP_CHECK_EQ(r.err, 0);
    WP_CHECK(!r.st.registered);
    WP_CHECK_STR(r.st.prev_status, "online");
    WP_CHECK_STR(r.st.status, "online");
    WP_CHECK_EQ(r.st.max_sessions, 6);
    WP_CHECK_EQ(events_("gpu-a", "node.registered"), 1);
    WP_CHECK_EQ(events_("gpu-a", "node.online"), 1);
    WP_CHECK_EQ(count_("SELECT count(*) FROM nodes WHERE id = $1 AND gpu_vendor = 'amd' AND "
                       "labels = '{\"zone\":\"us\"}' AND connected_replica = 'replica-2'",
                       "gpu-a", NULL),
                1);
}

WP_TEST(hello_respects_preregistration)
{
    qres q = q_(db_,
                "INSERT INTO nodes (id, max_sessions, labels, preregistered, draining) "
                "VALUES ('gpu-pre', 2, '{\"tier\":\"a100\"}', true, true)",
                0, NULL);
    WP_CHECK_EQ(q.err, 0);
    nres r = hello_(db_, "gpu-pre", "{\"tier\":\"hacked\",\"x\":\"y\"}", 64, NULL, "replica-1");
    WP_CHECK_EQ(r.err, 0);
    WP_CHECK(!r.st.registered);
    WP_CHECK(r.st.preregistered);
    WP_CHECK_EQ(r.st.max_sessions, 2);
    WP_CHECK(r.st.draining);
    WP_CHECK_STR(r.st.prev_status, "offline");
    WP_CHECK_STR(r.st.status, "draining"); /* drained before it connected */
    WP_CHECK_EQ(events_("gpu-pre", "node.registered"), 0);
    WP_CHECK_EQ(events_("gpu-pre", "node.online"), 1);
    WP_CHECK_EQ(count_("SELECT count(*) FROM nodes WHERE id = $1 AND labels = "
                       "'{\"tier\":\"a100\"}' AND version = '0.1.0' AND gpu_vendor = 'none'",
                       "gpu-pre", NULL),
                1);
    /* heartbeats keep a drained node draining, healthy or not */
    r = heartbeat_("gpu-pre", 0);
    WP_CHECK_STR(r.st.status, "draining");
    r = heartbeat_("gpu-pre", 1);
    WP_CHECK_STR(r.st.status, "draining");
    WP_CHECK_EQ(events_("gpu-pre", "node.degraded"), 0);
}

WP_TEST(hello_concurrent_registers_once)
{
    cp_db *other = db_open_("dbname=nodes_t", 2);
    cp_node_hello h = {.node_id = "gpu-race", .version = "1.0", .max_sessions = 1};
    nres a = {0}, b = {0}, c = {0};
    WP_CHECK_EQ(cp_nodes_hello(db_, &h, "replica-1", nodes_cb_, &a), 0);
    WP_CHECK_EQ(cp_nodes_hello(other, &h, "replica-2", nodes_cb_, &b), 0);
    WP_CHECK_EQ(cp_nodes_hello(db_, &h, "replica-1", nodes_cb_, &c), 0);
    wait_(&a);
    wait_(&b);
    wait_(&c);
    WP_CHECK_EQ(a.err, 0);
    WP_CHECK_EQ(b.err, 0);
    WP_CHECK_EQ(c.err, 0);
    WP_CHECK_EQ(a.st.registered + b.st.registered + c.st.registered, 1);
    WP_CHECK_EQ(events_("gpu-race", "node.registered"), 1);
    WP_CHECK_EQ(events_("gpu-race", "node.online"), 1);
    db_close_wait_(other);
}

WP_TEST(heartbeat_transitions)
{
    hello_(db_, "gpu-hb", NULL, 1, NULL, "replica-1");
    nres r = heartbeat_("gpu-hb", 1);
    WP_CHECK_EQ(r.err, 0);
    WP_CHECK_STR(r.st.status, "online");
    WP_CHECK_STR(r.st.prev_status, "online");
    r = heartbeat_("gpu-hb", 0);
    WP_CHECK_STR(r.st.status, "degraded");
    WP_CHECK_EQ(events_("gpu-hb", "node.degraded"), 1);
    r = heartbeat_("gpu-hb", 0);
    WP_CHECK_EQ(events_("gpu-hb", "node.degraded"), 1); /* no change, no event */
    WP_CHECK_EQ(count_("SELECT count(*) FROM events WHERE node_id = $1 AND type = "
                       "'node.degraded' AND data->'wolf'->'api'->>'ok' = 'false'",
                       "gpu-hb", NULL),
                1);
    r = heartbeat_("gpu-hb", 1);
    WP_CHECK_STR(r.st.status, "online");
    WP_CHECK_EQ(events_("gpu-hb", "node.online"), 2);
    WP_CHECK_EQ(count_("SELECT count(*) FROM nodes WHERE id = $1 AND wolf_healthy AND "
                       "gpu_stats->0->>'utilization' = '37' AND load->>'max_sessions' = '4'",
                       "gpu-hb", NULL),
                1);
    /* a heartbeat after the node was marked offline brings it back */
    qres q = q_(db_, "UPDATE nodes SET status = 'offline' WHERE id = 'gpu-hb'", 0, NULL);
    WP_CHECK_EQ(q.err, 0);
    r = heartbeat_("gpu-hb", 1);
    WP_CHECK_STR(r.st.prev_status, "offline");
    WP_CHECK_STR(r.st.status, "online");
    WP_CHECK_EQ(events_("gpu-hb", "node.online"), 3);
    /* unknown node: done, no node */
    r = heartbeat_("gpu-nobody", 1);
    WP_CHECK_EQ(r.err, 0);
    WP_CHECK(!r.has);
    WP_CHECK_EQ(count_("SELECT count(*) FROM nodes WHERE id = $1", "gpu-nobody", NULL), 0);
}

WP_TEST(disconnect_only_from_holder)
{
    hello_(db_, "gpu-dc", NULL, 1, NULL, "replica-2");
    nres r = {0};
    WP_CHECK_EQ(cp_nodes_disconnected(db_, "gpu-dc", "replica-1", nodes_cb_, &r), 0);
    wait_(&r);
    WP_CHECK_EQ(r.err, 0);
    WP_CHECK(!r.has);
    WP_CHECK_EQ(events_("gpu-dc", "node.offline"), 0);
    memset(&r, 0, sizeof r);
    WP_CHECK_EQ(cp_nodes_disconnected(db_, "gpu-dc", "replica-2", nodes_cb_, &r), 0);
    wait_(&r);
    WP_CHECK(r.has);
    WP_CHECK_STR(r.st.status, "offline");
    WP_CHECK_STR(r.st.prev_status, "online");
    WP_CHECK_EQ(events_("gpu-dc", "node.offline"), 1);
    WP_CHECK_EQ(count_("SELECT count(*) FROM nodes WHERE id = $1 AND connected_replica IS NULL",
                       "gpu-dc", NULL),
                1);
    /* again: the replica no longer holds it */
    memset(&r, 0, sizeof r);
    WP_CHECK_EQ(cp_nodes_disconnected(db_, "gpu-dc", "replica-2", nodes_cb_, &r), 0);
    wait_(&r);
    WP_CHECK(!r.has);
    WP_CHECK_EQ(events_("gpu-dc", "node.offline"), 1);
}

typedef struct sres {
    int done;
    int err;
    size_t n;
    char ids[8][64];
    char reps[8][72];
} sres;

static void swept_cb_(int err, size_t n, const char *const *ids, const char *const *reps, void *ud)
{
    sres *s = ud;
    s->done++;
    s->err = err;
    s->n += n;
    for (size_t i = 0; i < n; i++) {
        size_t k = s->n - n + i;
        if (k < 8) {
            snprintf(s->ids[k], sizeof s->ids[k], "%s", ids[i]);
            snprintf(s->reps[k], sizeof s->reps[k], "%s", reps[i] ? reps[i] : "<none>");
        }
    }
}

WP_TEST(health_sweep)
{
    hello_(db_, "gpu-stale", NULL, 1, NULL, "replica-3");
    hello_(db_, "gpu-fresh", NULL, 1, NULL, "replica-3");
    qres q = q_(db_,
                "UPDATE nodes SET last_heartbeat = now() - interval '1 minute' "
                "WHERE id = 'gpu-stale'",
                0, NULL);
    WP_CHECK_EQ(q.err, 0);
    /* everything else that is online from earlier tests is fresh: sweep with 30 s */
    cp_db *other = db_open_("dbname=nodes_t", 1);
    sres a = {0}, b = {0};
    WP_CHECK_EQ(cp_nodes_health_sweep(db_, 30000, swept_cb_, &a), 0);
    WP_CHECK_EQ(cp_nodes_health_sweep(other, 30000, swept_cb_, &b), 0);
    run_until_(&a.done, 10000);
    run_until_(&b.done, 10000);
    WP_CHECK_EQ(a.err, 0);
    WP_CHECK_EQ(b.err, 0);
    WP_CHECK_EQ(a.n + b.n, 1); /* exactly one of the racing sweeps reports it */
    sres *got = a.n ? &a : &b;
    WP_CHECK_STR(got->ids[0], "gpu-stale");
    WP_CHECK_STR(got->reps[0], "replica-3");
    WP_CHECK_EQ(events_("gpu-stale", "node.offline"), 1);
    WP_CHECK_EQ(events_("gpu-fresh", "node.offline"), 0);
    WP_CHECK_EQ(count_("SELECT count(*) FROM events WHERE node_id = $1 AND type = "
                       "'node.offline' AND data->>'reason' = 'heartbeat_timeout' AND "
                       "replica_id = 'replica-3'",
                       "gpu-stale", NULL),
                1);
    /* idempotent */
    sres c = {0};
    WP_CHECK_EQ(cp_nodes_health_sweep(db_, 30000, swept_cb_, &c), 0);
    run_until_(&c.done, 10000);
    WP_CHECK_EQ(c.n, 0);
    WP_CHECK_EQ(events_("gpu-stale", "node.offline"), 1);
    db_close_wait_(other);
}

typedef struct rres {
    int done;
    int err;
    size_t changed;
} rres;

static void recount_cb_(int err, size_t changed, void *ud)
{
    rres *r = ud;
    r->done++;
    r->err = err;
    r->changed = changed;
}

WP_TEST(recount_active)
{
    hello_(db_, "gpu-rc", NULL, 8, NULL, "replica-1");
    qres q = q_(db_,
                "INSERT INTO sessions (node_id, status) VALUES ('gpu-rc', 'running'), "
                "('gpu-rc', 'starting'), ('gpu-rc', 'stopping'), ('gpu-rc', 'stopped'), "
                "('gpu-rc', 'failed'), (NULL, 'running')",
                0, NULL);
    WP_CHECK_EQ(q.err, 0);
    q = q_(db_, "UPDATE nodes SET active_sessions = 7 WHERE id = 'gpu-rc'", 0, NULL);
    WP_CHECK_EQ(q.err, 0);
    rres r = {0};
    WP_CHECK_EQ(cp_nodes_recount_active(db_, recount_cb_, &r), 0);
    run_until_(&r.done, 10000);
    WP_CHECK_EQ(r.err, 0);
    WP_CHECK_EQ(r.changed, 1);
    WP_CHECK_EQ(count_("SELECT active_sessions FROM nodes WHERE id = $1", "gpu-rc", NULL), 3);
    memset(&r, 0, sizeof r);
    WP_CHECK_EQ(cp_nodes_recount_active(db_, recount_cb_, &r), 0);
    run_until_(&r.done, 10000);
    WP_CHECK_EQ(r.err, 0);
    WP_CHECK_EQ(r.changed, 0);
}

WP_TEST(invalid_inputs_refused)
{
    nres r = {0};
    cJSON *badlabels = cJSON_Parse("{\"bad key\":\"v\"}");
    cJSON *numlabel = cJSON_Parse("{\"k\":1}");
    cJSON *badsvc = cJSON_Parse("[\"wolf\",\"../etc\"]");
    cJSON *obj = cJSON_Parse("{}");
    cJSON *arr = cJSON_Parse("[]");
    cp_node_hello ok = {.node_id = "gpu-x", .version = "1", .max_sessions = 1};
    cp_node_hello h = ok;
    WP_CHECK_EQ(cp_nodes_hello(db_, &h, "replica-1", nodes_cb_, &r), 0);
    wait_(&r); /* the valid baseline works */
    memset(&r, 0, sizeof r);
    h.node_id = "GPU_X'; DROP TABLE nodes; --";
    WP_CHECK_EQ(cp_nodes_hello(db_, &h, "replica-1", nodes_cb_, &r), WP_ERR_INVAL);
    h = ok;
    h.version = "";
    WP_CHECK_EQ(cp_nodes_hello(db_, &h, "replica-1", nodes_cb_, &r), WP_ERR_INVAL);
    h.version = "1\n2";
    WP_CHECK_EQ(cp_nodes_hello(db_, &h, "replica-1", nodes_cb_, &r), WP_ERR_INVAL);
    h = ok;
    h.labels = badlabels;
    WP_CHECK_EQ(cp_nodes_hello(db_, &h, "replica-1", nodes_cb_, &r), WP_ERR_INVAL);
    h.labels = numlabel;
    WP_CHECK_EQ(cp_nodes_hello(db_, &h, "replica-1", nodes_cb_, &r), WP_ERR_INVAL);
    h.labels = arr;
    WP_CHECK_EQ(cp_nodes_hello(db_, &h, "replica-1", nodes_cb_, &r), WP_ERR_INVAL);
    h = ok;
    h.services = badsvc;
    WP_CHECK_EQ(cp_nodes_hello(db_, &h, "replica-1", nodes_cb_, &r), WP_ERR_INVAL);
    h.services = obj;
    WP_CHECK_EQ(cp_nodes_hello(db_, &h, "replica-1", nodes_cb_, &r), WP_ERR_INVAL);
    h = ok;
    h.gpus = obj;
    WP_CHECK_EQ(cp_nodes_hello(db_, &h, "replica-1", nodes_cb_, &r), WP_ERR_INVAL);
    h = ok;
    h.max_sessions = 1025;
    WP_CHECK_EQ(cp_nodes_hello(db_, &h, "replica-1", nodes_cb_, &r), WP_ERR_INVAL);
    h.max_sessions = -1;
    WP_CHECK_EQ(cp_nodes_hello(db_, &h, "replica-1", nodes_cb_, &r), WP_ERR_INVAL);
    h = ok;
    WP_CHECK_EQ(cp_nodes_hello(db_, &h, "bad replica", nodes_cb_, &r), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_nodes_hello(db_, &h, "", nodes_cb_, &r), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_nodes_hello(NULL, &h, "replica-1", nodes_cb_, &r), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_nodes_hello(db_, NULL, "replica-1", nodes_cb_, &r), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_nodes_heartbeat(db_, "gpu-x", arr, NULL, NULL, 1, nodes_cb_, &r), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_nodes_heartbeat(db_, "gpu-x", NULL, obj, NULL, 1, nodes_cb_, &r), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_nodes_heartbeat(db_, "gpu-x", NULL, NULL, arr, 1, nodes_cb_, &r), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_nodes_heartbeat(db_, "../x", NULL, NULL, NULL, 1, nodes_cb_, &r), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_nodes_disconnected(db_, "gpu-x", "a b", nodes_cb_, &r), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_nodes_disconnected(db_, "", "replica-1", nodes_cb_, &r), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_nodes_health_sweep(db_, 0, NULL, NULL), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_nodes_recount_active(NULL, NULL, NULL), WP_ERR_INVAL);
    /* a JSON document over the limit */
    cJSON *big = cJSON_CreateObject();
    char *filler = malloc(CP_NODE_JSON_MAX + 2);
    memset(filler, 'a', CP_NODE_JSON_MAX + 1);
    filler[CP_NODE_JSON_MAX + 1] = '\0';
    cJSON_AddStringToObject(big, "x", filler);
    WP_CHECK_EQ(cp_nodes_heartbeat(db_, "gpu-x", big, NULL, NULL, 1, nodes_cb_, &r), WP_ERR_INVAL);
    free(filler);
    cJSON_Delete(big);
    /* none of these called back; the loop has nothing pending for r */
    uv_run(&loop_, UV_RUN_NOWAIT);
    WP_CHECK_EQ(r.done, 0);
    cJSON_Delete(badlabels);
    cJSON_Delete(numlabel);
    cJSON_Delete(badsvc);
    cJSON_Delete(obj);
    cJSON_Delete(arr);
}

static int hello_seen_(void)
{
    return count_("SELECT count(*) FROM nodes WHERE id = 'gpu-ff' AND status = 'online'", NULL,
                  NULL) == 1;
}

static int fired_seen_(void)
{
    return count_("SELECT count(*) FROM nodes WHERE id = 'gpu-ff' AND NOT wolf_healthy", NULL,
                  NULL) == 1;
}

WP_TEST(fire_and_forget)
{
    cp_node_hello h = {.node_id = "gpu-ff", .version = "1", .max_sessions = 1};
    WP_CHECK_EQ(cp_nodes_hello(db_, &h, "replica-1", NULL, NULL), 0);
    WP_CHECK(run_until_fn_(hello_seen_, 10000));
    WP_CHECK_EQ(cp_nodes_heartbeat(db_, "gpu-ff", NULL, NULL, NULL, 0, NULL, NULL), 0);
    WP_CHECK(run_until_fn_(fired_seen_, 10000));
}

/* ---- events ---- */

typedef struct eres {
    int done;
    int err;
    long long id;
} eres;

static void ev_cb_(int err, long long id, void *ud)
{
    eres *e = ud;
    e->done++;
    e->err = err;
    e->id = id;
}

typedef struct txres {
    int done;
    int err;
    cp_db_tx *tx;
} txres;

static void tx_cb_(int err, cp_db_tx *tx, void *ud)
{
    txres *t = ud;
    t->done++;
    t->err = err;
    t->tx = tx;
}

static void done_cb_(int err, void *ud)
{
    txres *t = ud;
    t->done++;
    t->err = err;
}

WP_TEST(events_append)
{
    cJSON *data = cJSON_Parse("{\"k\":\"v'); DROP TABLE events; --\"}");
    eres e = {0};
    WP_CHECK_EQ(cp_events_append(db_, CP_EV_NODE_UPDATED, "gpu-ev", NULL, data, ev_cb_, &e), 0);
    run_until_(&e.done, 10000);
    WP_CHECK_EQ(e.err, 0);
    WP_CHECK(e.id > 0);
    WP_CHECK_EQ(count_("SELECT count(*) FROM events WHERE node_id = $1 AND data->>'k' LIKE "
                       "'%DROP TABLE%' AND message = ''",
                       "gpu-ev", NULL),
                1);
    /* full form */
    cp_event ev = {.type = "token.created",
                   .token_id = "00000000-0000-4000-8000-000000000001",
                   .session_id = "00000000-0000-4000-8000-000000000002",
                   .replica_id = "wolfpackd-1",
                   .message = "minted"};
    memset(&e, 0, sizeof e);
    WP_CHECK_EQ(cp_events_add(db_, &ev, ev_cb_, &e), 0);
    run_until_(&e.done, 10000);
    WP_CHECK_EQ(e.err, 0);
    WP_CHECK_EQ(count_("SELECT count(*) FROM events WHERE token_id = $1::uuid AND message = "
                       "'minted' AND data = '{}'",
                       ev.token_id, NULL),
                1);
    /* refused */
    WP_CHECK_EQ(cp_events_append(db_, "Node.Online", NULL, NULL, NULL, ev_cb_, &e), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_events_append(db_, "", NULL, NULL, NULL, ev_cb_, &e), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_events_append(db_, NULL, NULL, NULL, NULL, ev_cb_, &e), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_events_append(db_, "node.x", "BAD ID", NULL, NULL, ev_cb_, &e), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_events_append(db_, "node.x", NULL, "not-a-uuid", NULL, ev_cb_, &e),
                WP_ERR_INVAL);
    cJSON *arr = cJSON_CreateArray();
    WP_CHECK_EQ(cp_events_append(db_, "node.x", NULL, NULL, arr, ev_cb_, &e), WP_ERR_INVAL);
    cJSON_Delete(arr);
    cp_event bad = {.type = "node.x", .message = "\xff\xfe"};
    WP_CHECK_EQ(cp_events_add(db_, &bad, ev_cb_, &e), WP_ERR_INVAL);
    char longtype[80];
    memset(longtype, 'a', sizeof longtype - 1);
    longtype[sizeof longtype - 1] = '\0';
    WP_CHECK(!cp_event_type_valid(longtype));
    longtype[CP_EVENT_TYPE_MAX] = '\0';
    WP_CHECK(cp_event_type_valid(longtype));
    WP_CHECK_EQ(cp_events_add_tx(NULL, &ev, ev_cb_, &e), WP_ERR_INVAL);
    uv_run(&loop_, UV_RUN_NOWAIT);
    WP_CHECK_EQ(e.done, 1);
    cJSON_Delete(data);

    /* in a transaction: rolled back means never written */
    txres t = {0};
    WP_CHECK_EQ(cp_db_tx_begin(db_, tx_cb_, &t), 0);
    run_until_(&t.done, 10000);
    WP_CHECK_EQ(t.err, 0);
    memset(&e, 0, sizeof e);
    WP_CHECK_EQ(cp_events_append_tx(t.tx, CP_EV_NODE_DRAINED, "gpu-txev", NULL, NULL, ev_cb_, &e),
                0);
    run_until_(&e.done, 10000);
    WP_CHECK_EQ(e.err, 0);
    WP_CHECK_EQ(cp_events_append_tx(t.tx, CP_EV_NODE_DRAINED, "gpu-txev", NULL, NULL, NULL, NULL),
                WP_ERR_INVAL); /* a tx append needs its callback */
    t.done = 0;
    WP_CHECK_EQ(cp_db_tx_rollback(t.tx, done_cb_, &t), 0);
    run_until_(&t.done, 10000);
    WP_CHECK_EQ(events_("gpu-txev", "node.drained"), 0);
    memset(&t, 0, sizeof t);
    WP_CHECK_EQ(cp_db_tx_begin(db_, tx_cb_, &t), 0);
    run_until_(&t.done, 10000);
    memset(&e, 0, sizeof e);
    WP_CHECK_EQ(cp_events_append_tx(t.tx, CP_EV_NODE_DRAINED, "gpu-txev", NULL, NULL, ev_cb_, &e),
                0);
    run_until_(&e.done, 10000);
    t.done = 0;
    WP_CHECK_EQ(cp_db_tx_commit(t.tx, done_cb_, &t), 0);
    run_until_(&t.done, 10000);
    WP_CHECK_EQ(t.err, 0);
    WP_CHECK_EQ(events_("gpu-txev", "node.drained"), 1);
}

typedef struct xres {
    int done;
    int err;
    int ntuples;
    int mode; /* builder: 0 event per row, 1 skip all, 2 abort */
} xres;

static int build_cb_(const PGresult *res, int row, cp_event *ev, cJSON **data, void *ud)
{
    xres *x = ud;
    if (x->mode == 1)
        return 0;
    if (x->mode == 2)
        return WP_ERR_LIMIT;
    ev->type = "node.updated";
    ev->node_id = PQgetvalue(res, row, 0);
    *data = cJSON_CreateObject();
    cJSON_AddNumberToObject(*data, "row", row);
    return 1;
}

static void exec_cb_(int err, PGresult *res, void *ud)
{
    xres *x = ud;
    x->done++;
    x->err = err;
    x->ntuples = res ? PQntuples(res) : -1;
    if (res && PQntuples(res) > 0)
        WP_CHECK(PQftype(res, 1) == 16); /* column types survive the copy (bool) */
}

static xres exec_(const char *sql, int mode)
{
    xres x = {0};
    x.mode = mode;
    WP_CHECK_EQ(cp_events_exec(db_, sql, 0, NULL, build_cb_, exec_cb_, &x), 0);
    run_until_(&x.done, 10000);
    WP_CHECK_EQ(x.done, 1);
    return x;
}

WP_TEST(events_exec)
{
    xres x =
        exec_("INSERT INTO nodes (id) VALUES ('gpu-ex1'), ('gpu-ex2') RETURNING id, enabled", 0);
    WP_CHECK_EQ(x.err, 0);
    WP_CHECK_EQ(x.ntuples, 2);
    WP_CHECK_EQ(count_("SELECT count(*) FROM events WHERE type = 'node.updated' AND node_id IN "
                       "('gpu-ex1', 'gpu-ex2') AND data ? 'row'",
                       NULL, NULL),
                2);
    x = exec_("INSERT INTO nodes (id) VALUES ('gpu-ex3') RETURNING id, enabled", 1);
    WP_CHECK_EQ(x.err, 0);
    WP_CHECK_EQ(events_("gpu-ex3", "node.updated"), 0);
    /* the builder aborts: rolled back, node not inserted */
    x = exec_("INSERT INTO nodes (id) VALUES ('gpu-ex4') RETURNING id, enabled", 2);
    WP_CHECK_EQ(x.err, WP_ERR_LIMIT);
    WP_CHECK_EQ(x.ntuples, -1);
    WP_CHECK_EQ(count_("SELECT count(*) FROM nodes WHERE id = 'gpu-ex4'", NULL, NULL), 0);
    /* SQL error (unique violation): no event */
    x = exec_("INSERT INTO nodes (id) VALUES ('gpu-ex1') RETURNING id, enabled", 0);
    WP_CHECK_EQ(x.err, WP_ERR_EXISTS);
    WP_CHECK_EQ(events_("gpu-ex1", "node.updated"), 1);
    WP_CHECK_EQ(cp_events_exec(NULL, "SELECT 1", 0, NULL, build_cb_, exec_cb_, &x), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_events_exec(db_, NULL, 0, NULL, build_cb_, exec_cb_, &x), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_events_exec(db_, "SELECT 1", 1, NULL, build_cb_, exec_cb_, &x), WP_ERR_INVAL);
    WP_CHECK_EQ(cp_events_exec(db_, "SELECT 1", 0, NULL, NULL, exec_cb_, &x), WP_ERR_INVAL);
    /* parameters are copied and bound */
    const char *params[] = {"gpu-ex5"};
    xres y = {0};
    WP_CHECK_EQ(cp_events_exec(db_, "INSERT INTO nodes (id) VALUES ($1) RETURNING id, enabled", 1,
                               params, build_cb_, exec_cb_, &y),
                0);
    run_until_(&y.done, 10000);
    WP_CHECK_EQ(y.err, 0);
    WP_CHECK_EQ(events_("gpu-ex5", "node.updated"), 1);
}

int main(void)
{
    wp_log_set_level(WP_LOG_ERROR);
    int rc = cluster_start_();
    WP_CHECK_EQ(rc, 0);
    if (rc == 0) {
        cp_db *admin = db_open_(NULL, 1);
        qres q = q_(admin, "CREATE DATABASE nodes_t", 0, NULL);
        WP_CHECK_EQ(q.err, 0);
        db_close_wait_(admin);
        db_ = db_open_("dbname=nodes_t", 4);
        migres_t m = {0};
        WP_CHECK_EQ(cp_migrate_run(db_, mig_cb_, &m), 0);
        run_until_(&m.done, 30000);
        WP_CHECK_EQ(m.err, 0);
        WP_RUN(hello_registers_once);
        WP_RUN(hello_respects_preregistration);
        WP_RUN(hello_concurrent_registers_once);
        WP_RUN(heartbeat_transitions);
        WP_RUN(disconnect_only_from_holder);
        WP_RUN(health_sweep);
        WP_RUN(recount_active);
        WP_RUN(invalid_inputs_refused);
        WP_RUN(fire_and_forget);
        WP_RUN(events_append);
        WP_RUN(events_exec);
        db_close_wait_(db_);
    }
    cluster_stop_();
    return wp_test_done() || wp_test_failed_checks_ ? 1 : 0;
}
