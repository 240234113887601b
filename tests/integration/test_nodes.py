#!/usr/bin/env python3
"""test_nodes.py — /api/v1/nodes on the real wolfpackd with its embedded PostgreSQL.

Pre-register (201, 409 when it exists), get (404 for unknown or malformed ids), list with
status / gpu_vendor / label filters and cursor pages that cover every node exactly once,
patch (enabled, max_sessions, labels, name; unknown fields refused), drain / undrain
(deploy_safe, status from the tunnel state), delete (409 node_busy while sessions are
active, force=true), the events each writes; 400 for malformed JSON, unknown fields, bad ids
and labels; SQL-looking strings in every field round-trip as data or are refused cleanly;
401 without a token and 403 for user and agent tokens.
"""
import json
import os
import subprocess
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wolfpack_test import Runner, Wolfpackd, read_response  # noqa: E402

SQL = "'; DROP TABLE nodes; --"


def call(wp, method, path, token=None, body=None):
    s = wp.connect()
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = "%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n" % (method, path, len(data))
    if token is not None:
        req += "Authorization: Bearer %s\r\n" % token
    s.sendall(req.encode() + b"\r\n" + data)
    status, headers, raw = read_response(s)
    s.close()
    return status, headers, (json.loads(raw) if raw else None)


def psql(wp, sql):
    run = os.path.join(wp.state, "postgres", "run")
    r = subprocess.run(["psql", "-h", run, "-U", "wolfpack", "-d", "wolfpack", "-qAtc", sql],
                       check=True, capture_output=True, timeout=30)
    return r.stdout.decode().strip()


def q(s):
    return urllib.parse.quote(s, safe="")


class Ctx:
    pass


def events_of(c, node, typ):
    return int(psql(c.wp, "SELECT count(*) FROM events WHERE node_id = '%s' AND type = '%s'"
                    % (node, typ)))


def test_auth(c):
    routes = [("GET", "/api/v1/nodes"), ("POST", "/api/v1/nodes"), ("GET", "/api/v1/nodes/n1"),
              ("PATCH", "/api/v1/nodes/n1"), ("POST", "/api/v1/nodes/n1/drain"),
              ("POST", "/api/v1/nodes/n1/undrain"), ("DELETE", "/api/v1/nodes/n1")]
    for method, path in routes:
        st, h, b = call(c.wp, method, path)
        assert st == 401 and b["error"]["code"] == "unauthorized", (method, path, st)
        for tok in (c.user, c.agent):
            st, _, b = call(c.wp, method, path, tok, {"id": "x", "max_sessions": 1})
            assert st == 403 and b["error"]["code"] == "forbidden", (method, path, st)


def test_preregister_get(c):
    st, _, b = call(c.wp, "POST", "/api/v1/nodes", c.admin,
                    {"id": "gpu-pre-1", "name": "rack 4", "max_sessions": 8,
                     "labels": {"zone": "eu-west-1", "example.com/tier": "a100"}})
    assert st == 201, (st, b)
    assert b["id"] == "gpu-pre-1" and b["name"] == "rack 4" and b["max_sessions"] == 8
    assert b["labels"] == {"zone": "eu-west-1", "example.com/tier": "a100"}
    assert b["status"] == "offline" and b["enabled"] is True and b["preregistered"] is True
    assert b["draining"] is False and b["deploy_safe"] is False and b["active_sessions"] == 0
    assert b["gpu_vendor"] == "none" and b["gpus"] == [] and b["last_heartbeat"] is None
    assert b["created_at"].endswith("Z") and "T" in b["created_at"]
    for k in ("id", "name", "status", "enabled", "labels", "max_sessions", "active_sessions",
              "gpu_vendor", "gpus", "wolf_health", "version", "services", "connected_replica",
              "last_heartbeat", "draining", "deploy_safe", "created_at", "updated_at"):
        assert k in b, k
    st, _, b2 = call(c.wp, "POST", "/api/v1/nodes", c.admin, {"id": "gpu-pre-1", "max_sessions": 1})
    assert st == 409 and b2["error"]["code"] == "conflict", (st, b2)
    st, _, g = call(c.wp, "GET", "/api/v1/nodes/gpu-pre-1", c.admin)
    assert st == 200 and g["max_sessions"] == 8 and g["labels"] == b["labels"]
    st, _, b = call(c.wp, "POST", "/api/v1/nodes", c.admin,
                    {"id": "gpu-pre-2", "max_sessions": 1, "enabled": False})
    assert st == 201 and b["enabled"] is False and b["labels"] == {} and b["name"] == ""
    for bad in ("nope-nope", "GPU_1", "..", "%2e%2e", q(SQL), "a" * 64):
        st, _, b = call(c.wp, "GET", "/api/v1/nodes/" + bad, c.admin)
        assert st in (400, 404), (bad, st)
    assert events_of(c, "gpu-pre-1", "node.registered") == 1


def test_bad_bodies(c):
    labels33 = dict(("k%d" % i, "v") for i in range(33))
    cases = [
        (b"", "invalid_json"),
        (b"{", "invalid_json"),
        (b"[]", "invalid_json"),
        (b"null", "invalid_json"),
        (b'{"id":"x","max_sessions":1} trailing', "invalid_json"),
        (b"[" * 5000, "invalid_json"),
        (b'{"id":"bad-\xff","max_sessions":1}', "invalid_json"),
        (b'{"max_sessions":1}', "invalid_request"),
        (b'{"id":"ok-1"}', "invalid_request"),
        (b'{"id":"ok-1","max_sessions":0}', "invalid_request"),
        (b'{"id":"ok-1","max_sessions":1001}', "invalid_request"),
        (b'{"id":"ok-1","max_sessions":"4"}', "invalid_request"),
        (b'{"id":"ok-1","max_sessions":1.5}', "invalid_request"),
        (b'{"id":"ok-1","max_sessions":1,"admin":true}', "invalid_request"),
        (b'{"id":"ok-1","id":"ok-2","max_sessions":1}', "invalid_request"),
        (b'{"id":"GPU_1","max_sessions":1}', "invalid_request"),
        (b'{"id":"-x","max_sessions":1}', "invalid_request"),
        (b'{"id":"","max_sessions":1}', "invalid_request"),
        (json.dumps({"id": "a" * 64, "max_sessions": 1}).encode(), "invalid_request"),
        (json.dumps({"id": SQL, "max_sessions": 1}).encode(), "invalid_request"),
        (b'{"id":"ok-1","max_sessions":1,"labels":[]}', "invalid_request"),
        (b'{"id":"ok-1","max_sessions":1,"labels":{"k":1}}', "invalid_request"),
        (b'{"id":"ok-1","max_sessions":1,"labels":{"bad key":"v"}}', "invalid_request"),
        (json.dumps({"id": "ok-1", "max_sessions": 1, "labels": {SQL: "v"}}).encode(),
         "invalid_request"),
        (json.dumps({"id": "ok-1", "max_sessions": 1, "labels": {"k": "a\nb"}}).encode(),
         "invalid_request"),
        (json.dumps({"id": "ok-1", "max_sessions": 1, "labels": {"k" * 64: "v"}}).encode(),
         "invalid_request"),
        (json.dumps({"id": "ok-1", "max_sessions": 1, "labels": {"k": "v" * 128}}).encode(),
         "invalid_request"),
        (json.dumps({"id": "ok-1", "max_sessions": 1, "labels": labels33}).encode(),
         "invalid_request"),
        (json.dumps({"id": "ok-1", "max_sessions": 1, "name": "x\ny"}).encode(),
         "invalid_request"),
        (json.dumps({"id": "ok-1", "max_sessions": 1, "name": "n" * 129}).encode(),
         "invalid_request"),
        (b'{"id":"ok-1","max_sessions":1,"enabled":"yes"}', "invalid_request"),
    ]
    st, _, before = call(c.wp, "GET", "/api/v1/nodes?limit=500", c.admin)
    for body, code in cases:
        st, _, b = call(c.wp, "POST", "/api/v1/nodes", c.admin, body)
        assert st == 400 and b["error"]["code"] == code, (body[:60], st, b)
    patches = [b"", b"{}", b'{"status":"online"}', b'{"max_sessions":0}', b'{"enabled":1}',
               b'{"labels":{"a b":"c"}}', b'{"name":"a\\u0001"}', b'{"id":"other"}']
    for body in patches:
        st, _, b = call(c.wp, "PATCH", "/api/v1/nodes/gpu-pre-1", c.admin, body)
        assert st == 400, (body, st, b)
    st, _, after = call(c.wp, "GET", "/api/v1/nodes?limit=500", c.admin)
    assert after["nodes"] == before["nodes"], "a bad request changed state"


def test_sql_strings(c):
    # every free-text string field round-trips as plain data
    st, _, b = call(c.wp, "POST", "/api/v1/nodes", c.admin,
                    {"id": "gpu-sql", "name": SQL, "max_sessions": 1,
                     "labels": {"note": SQL, "q": "\"'\\"}})
    assert st == 201, (st, b)
    assert b["name"] == SQL and b["labels"]["note"] == SQL and b["labels"]["q"] == "\"'\\"
    st, _, b = call(c.wp, "PATCH", "/api/v1/nodes/gpu-sql", c.admin,
                    {"name": SQL + " 2", "labels": {"x": "1); DELETE FROM nodes; --"}})
    assert st == 200 and b["name"] == SQL + " 2", (st, b)
    st, _, lst = call(c.wp, "GET", "/api/v1/nodes?label=" + q("x=1); DELETE FROM nodes; --"),
                      c.admin)
    assert st == 200 and [n["id"] for n in lst["nodes"]] == ["gpu-sql"], lst
    # filters and path ids that look like SQL are refused, not executed
    for query in ("status=" + q(SQL), "gpu_vendor=" + q(SQL), "cursor=" + q(SQL),
                  "limit=" + q("1; DROP TABLE nodes"), "enabled=" + q(SQL),
                  "label=" + q(SQL)):
        st, _, b = call(c.wp, "GET", "/api/v1/nodes?" + query, c.admin)
        assert st == 400 and b["error"]["code"] == "invalid_request", (query, st, b)
    st, _, _ = call(c.wp, "DELETE", "/api/v1/nodes/" + q(SQL), c.admin)
    assert st == 404, st
    assert psql(c.wp, "SELECT count(*) FROM nodes WHERE id = 'gpu-pre-1'") == "1"


def test_list_filters_pages(c):
    for i in range(24):
        st, _, b = call(c.wp, "POST", "/api/v1/nodes", c.admin,
                        {"id": "fleet-%02d" % i, "max_sessions": 2,
                         "labels": {"zone": "eu" if i % 2 else "us", "tier": "a" if i % 3 else "b"}})
        assert st == 201, (st, b)
    psql(c.wp, "UPDATE nodes SET status = 'online' WHERE id LIKE 'fleet-%' AND "
               "substr(id, 7)::int % 4 = 0")
    psql(c.wp, "UPDATE nodes SET gpus = '[{\"index\":0,\"vendor\":\"intel\"},"
               "{\"index\":1,\"vendor\":\"nvidia\"}]' WHERE id IN ('fleet-00', 'fleet-05')")
    psql(c.wp, "UPDATE nodes SET gpus = '[{\"index\":0,\"vendor\":\"amd\"}]' "
               "WHERE id = 'fleet-01'")

    def ids(query):
        st, _, b = call(c.wp, "GET", "/api/v1/nodes?" + query, c.admin)
        assert st == 200, (query, st, b)
        return [n["id"] for n in b["nodes"]]

    assert ids("status=online&label=" + q("zone=us")) == ["fleet-%02d" % i for i in range(0, 24, 4)]
    assert ids("gpu_vendor=nvidia") == ["fleet-00", "fleet-05"]
    assert ids("gpu_vendor=amd") == ["fleet-01"]
    assert ids("gpu_vendor=intel") == []
    assert ids("label=" + q("zone=eu,tier=b")) == ["fleet-%02d" % i for i in range(24)
                                                  if i % 2 and i % 3 == 0]
    assert ids("label=" + q("zone=mars")) == []
    assert ids("enabled=false") == ["gpu-pre-2"]
    assert ids("status=draining") == []
    # pages: every node exactly once, in id order
    st, _, full = call(c.wp, "GET", "/api/v1/nodes?limit=500", c.admin)
    everyone = [n["id"] for n in full["nodes"]]
    assert full["next_cursor"] is None and everyone == sorted(everyone) and len(everyone) >= 27
    seen, cursor, pages = [], None, 0
    while True:
        path = "/api/v1/nodes?limit=7" + ("&cursor=" + q(cursor) if cursor else "")
        st, _, b = call(c.wp, "GET", path, c.admin)
        assert st == 200 and len(b["nodes"]) <= 7
        seen += [n["id"] for n in b["nodes"]]
        pages += 1
        cursor = b["next_cursor"]
        if cursor is None:
            break
        assert pages < 20
    assert seen == everyone, (seen, everyone)
    # a filtered walk
    seen, cursor = [], None
    while True:
        path = "/api/v1/nodes?limit=2&label=zone%3Deu" + ("&cursor=" + cursor if cursor else "")
        st, _, b = call(c.wp, "GET", path, c.admin)
        seen += [n["id"] for n in b["nodes"]]
        cursor = b["next_cursor"]
        if cursor is None:
            break
    assert seen == ["fleet-%02d" % i for i in range(1, 24, 2)]
    for query in ("limit=0", "limit=501", "limit=-1", "limit=x", "status=up", "gpu_vendor=mixed",
                  "cursor=NOT_AN_ID", "label=", "label=zone", "enabled=yes"):
        st, _, b = call(c.wp, "GET", "/api/v1/nodes?" + query, c.admin)
        assert st == 400 and b["error"]["code"] == "invalid_request", (query, st)


def test_patch(c):
    psql(c.wp, "INSERT INTO nodes (id, labels, max_sessions) VALUES ('gpu-auto', "
               "'{\"from\":\"agent\"}', 3)")
    st, _, b = call(c.wp, "PATCH", "/api/v1/nodes/gpu-auto", c.admin, {"enabled": False})
    assert st == 200 and b["enabled"] is False and b["preregistered"] is False, b
    assert b["labels"] == {"from": "agent"} and b["max_sessions"] == 3
    st, _, b = call(c.wp, "PATCH", "/api/v1/nodes/gpu-auto", c.admin,
                    {"max_sessions": 5, "labels": {"zone": "eu"}, "name": "renamed",
                     "enabled": True})
    assert st == 200, (st, b)
    assert b["max_sessions"] == 5 and b["labels"] == {"zone": "eu"} and b["name"] == "renamed"
    assert b["enabled"] is True and b["preregistered"] is True  # now admin-managed
    assert events_of(c, "gpu-auto", "node.updated") == 2
    data = json.loads(psql(c.wp, "SELECT data FROM events WHERE node_id = 'gpu-auto' AND "
                                 "type = 'node.updated' ORDER BY id DESC LIMIT 1"))
    assert data["changes"]["max_sessions"] == 5 and data["by"] == "bootstrap-admin", data
    st, _, b = call(c.wp, "PATCH", "/api/v1/nodes/nobody", c.admin, {"enabled": False})
    assert st == 404 and b["error"]["code"] == "not_found"


def test_drain_undrain(c):
    psql(c.wp, "INSERT INTO nodes (id, status, connected_replica, last_heartbeat) VALUES "
               "('gpu-live', 'online', 'replica-1', now())")
    st, _, b = call(c.wp, "POST", "/api/v1/nodes/gpu-live/drain", c.admin)
    assert st == 200 and b["status"] == "draining" and b["draining"] is True, b
    assert b["deploy_safe"] is True
    st, _, b = call(c.wp, "POST", "/api/v1/nodes/gpu-live/drain", c.admin)
    assert st == 200 and b["status"] == "draining"
    assert events_of(c, "gpu-live", "node.drained") == 1  # idempotent: one event
    psql(c.wp, "UPDATE nodes SET active_sessions = 2 WHERE id = 'gpu-live'")
    st, _, b = call(c.wp, "GET", "/api/v1/nodes/gpu-live", c.admin)
    assert b["deploy_safe"] is False and b["active_sessions"] == 2
    st, _, lst = call(c.wp, "GET", "/api/v1/nodes?status=draining", c.admin)
    assert [n["id"] for n in lst["nodes"]] == ["gpu-live"]
    st, _, b = call(c.wp, "POST", "/api/v1/nodes/gpu-live/undrain", c.admin)
    assert st == 200 and b["status"] == "online" and b["draining"] is False, b
    assert events_of(c, "gpu-live", "node.undrained") == 1
    psql(c.wp, "UPDATE nodes SET wolf_healthy = false WHERE id = 'gpu-live'")
    call(c.wp, "POST", "/api/v1/nodes/gpu-live/drain", c.admin)
    st, _, b = call(c.wp, "POST", "/api/v1/nodes/gpu-live/undrain", c.admin)
    assert b["status"] == "degraded", b
    # an offline node stays offline, but remembers the drain
    st, _, b = call(c.wp, "POST", "/api/v1/nodes/gpu-pre-2/drain", c.admin)
    assert st == 200 and b["status"] == "offline" and b["draining"] is True, b
    st, _, b = call(c.wp, "POST", "/api/v1/nodes/gpu-pre-2/undrain", c.admin)
    assert st == 200 and b["status"] == "offline" and b["draining"] is False, b
    for path in ("/api/v1/nodes/nobody/drain", "/api/v1/nodes/nobody/undrain"):
        st, _, b = call(c.wp, "POST", path, c.admin)
        assert st == 404, (path, st)


def test_delete(c):
    psql(c.wp, "UPDATE nodes SET active_sessions = 2 WHERE id = 'gpu-pre-1'")
    st, _, b = call(c.wp, "DELETE", "/api/v1/nodes/gpu-pre-1", c.admin)
    assert st == 409 and b["error"]["code"] == "node_busy", (st, b)
    assert b["error"]["details"]["active_sessions"] == 2
    st, _, b = call(c.wp, "DELETE", "/api/v1/nodes/gpu-pre-1?force=false", c.admin)
    assert st == 409
    st, _, b = call(c.wp, "DELETE", "/api/v1/nodes/gpu-pre-1?force=maybe", c.admin)
    assert st == 400
    assert events_of(c, "gpu-pre-1", "node.deregistered") == 0
    st, _, _ = call(c.wp, "DELETE", "/api/v1/nodes/gpu-pre-1?force=true", c.admin)
    assert st == 204, st
    st, _, _ = call(c.wp, "GET", "/api/v1/nodes/gpu-pre-1", c.admin)
    assert st == 404
    st, _, _ = call(c.wp, "DELETE", "/api/v1/nodes/gpu-pre-1", c.admin)
    assert st == 404
    data = json.loads(psql(c.wp, "SELECT data FROM events WHERE node_id = 'gpu-pre-1' AND "
                                 "type = 'node.deregistered'"))
    assert data["force"] is True and data["active_sessions"] == 2, data
    st, _, _ = call(c.wp, "DELETE", "/api/v1/nodes/fleet-23", c.admin)
    assert st == 204
    # re-registering a deleted id works
    st, _, _ = call(c.wp, "POST", "/api/v1/nodes", c.admin, {"id": "fleet-23", "max_sessions": 1})
    assert st == 201


def main():
    r = Runner()
    c = Ctx()
    c.wp = Wolfpackd(wait_ready=True)
    with open(os.path.join(c.wp.state, "admin.token")) as f:
        c.admin = f.read().strip()
    try:
        st, _, b = call(c.wp, "POST", "/api/v1/tokens", c.admin, {"name": "u", "role": "user"})
        c.user = b["token"]
        st, _, b = call(c.wp, "POST", "/api/v1/tokens", c.admin,
                        {"name": "a", "role": "agent", "node_id": "n1"})
        c.agent = b["token"]
        for t in (test_auth, test_preregister_get, test_bad_bodies, test_sql_strings,
                  test_list_filters_pages, test_patch, test_drain_undrain, test_delete):
            r.run(t, c)
    finally:
        rc = c.wp.stop()
        if rc != 0:
            print("FAIL stop: exit %d\n%s" % (rc, c.wp.log()[-3000:]))
            r.failed += 1
    return r.done()


if __name__ == "__main__":
    sys.exit(main())
