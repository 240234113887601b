#!/usr/bin/env python3
"""test_sessions.py — /api/v1/sessions end to end: the real wolfpackd (embedded PostgreSQL,
real TLS) and three real wolfpack-agent processes, each fronting its own FakeWolf and reading
its GPU inventory from its own fake sysfs tree (gpu_fixture.py): n0 has one NVIDIA render node,
n1 one AMD render node, n2 none.

Covered: sessions spread by load ratio over the three nodes, and the lobby each one got
(profile, PIN, docker runner named after the session's sandbox container); label and
prefer_labels filters; the gpu_vendor filter end to end (the agents' inventories make the
nodes' gpu_vendor: "nvidia" lands only on n0, "amd" only on n1, "none" only on n2, "intel"
is 503 no_capacity counting all three under excluded.gpu_vendor); an explicit node target,
and a clear 503 when the target cannot take it (404 when unknown); 400 naming the field for
bad bodies; stop is idempotent, stops the Wolf sessions attached to the lobby, then the lobby,
and releases capacity; user A cannot see or stop user B's session (404); a node whose Wolf
errors or hangs is skipped (degraded for the cool-down) and the session lands elsewhere, and when
every node fails the session fails with 502 naming each attempt; 200 concurrent creates
against a capacity of 50 create exactly 50 (150 answer no_capacity) and the database agrees.
"""
import json
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_fixture import NO_NVML, sysfs_tree  # noqa: E402
from sessions_harness import Cluster, wait_for  # noqa: E402
from wolfpack_test import Runner  # noqa: E402

LOBBY_CREATE = ("POST", "/api/v1/lobbies/create")
# node i's GPU: (the vendor its fake sysfs tree gives it, the kernel driver of its render node)
GPU_TREES = (("nvidia", "nvidia"), ("amd", "amdgpu"), ("none", None))


def lobby_of(c, body):
    i = int(body["node_id"][1:])
    return c.wolves[i].lobbies.get(body["wolf"]["lobby_id"])


def test_spread_and_lobby(c):
    made = []
    for k in range(6):
        st, b = c.create(name="desk-%d" % k, video={"width": 1280, "height": 720, "refresh_rate": 30})
        assert st == 201, (st, b)
        assert b["status"] == "running" and b["node_id"] in ("n0", "n1", "n2"), b
        made.append(b)
    per = {n: sum(1 for b in made if b["node_id"] == n) for n in ("n0", "n1", "n2")}
    assert per == {"n0": 2, "n1": 2, "n2": 2}, per
    assert c.active() == {"n0": 2, "n1": 2, "n2": 2}, c.active()
    b = made[0]
    lob = lobby_of(c, b)
    assert lob is not None, b
    assert len(b["wolf"]["pin"]) == 4 and b["wolf"]["pin"].isdigit(), b
    assert lob["pin"] == [int(d) for d in b["wolf"]["pin"]], (lob, b)
    assert lob["runner"]["name"] == b["sandbox"]["container"] == "wolfpack-" + b["id"].replace("-", "")[:12]
    assert lob["runner"]["image"] == "ghcr.io/games-on-whales/xfce:edge"
    assert lob["started_by_profile_id"] == "moonlight-profile-id" and lob["multi_user"] is True
    assert lob["stop_when_everyone_leaves"] is False and lob["name"] == "desk-0"
    req = [r for r in c.wolves[int(b["node_id"][1:])].requests if (r["method"], r["path"]) == LOBBY_CREATE][0]
    assert req["body"]["video_settings"]["width"] == 1280 and req["body"]["audio_settings"]["channel_count"] == 2
    assert req["headers"].get("content-length") and not req["chunked"]
    st, g = c.api("GET", "/api/v1/sessions/" + b["id"])
    assert st == 200 and g["status"] == "running" and g["wolf"] == b["wolf"], g
    ev = c.psql("SELECT string_agg(type, ',' ORDER BY id) FROM events WHERE session_id = '%s'" % b["id"])
    assert ev == "session.created,session.starting,session.running", ev
    c.stop_all_sessions()
    assert c.active() == {"n0": 0, "n1": 0, "n2": 0} and c.lobbies() == 0


def test_filters_and_target(c):
    st, b = c.create(requirements={"labels": {"region": "us"}})
    assert st == 201 and b["node_id"] == "n2", b
    # gpu_vendor: each node's vendor comes from its agent's hello (fake sysfs trees)
    for i, (vendor, driver) in enumerate(GPU_TREES):
        st, n = c.api("GET", "/api/v1/nodes/" + c.node(i))
        assert st == 200 and n["gpu_vendor"] == vendor, (st, n)
        want = [(vendor, driver, "/dev/dri/renderD128")] if driver else []
        assert [(g["vendor"], g.get("driver"), g.get("render_node")) for g in n["gpus"]] == want, n
    # two each, vendor by vendor: for each vendor one of the two goes where the load order alone
    # would not (the nodes start at 0/0/1)
    for i, (vendor, _) in enumerate(GPU_TREES):
        for k in range(2):
            st, b = c.create(requirements={"gpu_vendor": vendor})
            assert st == 201 and b["node_id"] == c.node(i), (vendor, k, st, b)
    assert c.active() == {"n0": 2, "n1": 2, "n2": 3}, c.active()
    c.stop_all_sessions()
    st, b = c.create(requirements={"gpu_vendor": "intel"})
    assert st == 503 and b["error"]["code"] == "no_capacity", (st, b)
    d = b["error"]["details"]
    assert d["nodes"] == 3 and d["excluded"]["gpu_vendor"] == 3 and "session_id" in d, d
    st, s = c.api("GET", "/api/v1/sessions/" + d["session_id"])
    assert s["status"] == "failed" and "no_capacity" in s["failure_reason"], s
    st, b = c.create(requirements={"labels": {"region": "mars"}})
    assert st == 503 and b["error"]["details"]["excluded"]["labels"] == 3, b
    # explicit target, and why it cannot take a session
    st, b = c.create(requirements={"node_id": "n0"})
    assert st == 201 and b["node_id"] == "n0", b
    st, _ = c.api("POST", "/api/v1/nodes/n0/drain")
    assert st == 200
    st, b = c.create(requirements={"node_id": "n0"})
    assert st == 503 and b["error"]["code"] == "no_capacity" and "draining" in b["error"]["message"], b
    assert b["error"]["details"]["excluded"]["draining"] == 1, b
    st, _ = c.api("POST", "/api/v1/nodes/n0/undrain")
    st, b = c.create(requirements={"node_id": "nope"})
    assert st == 404 and b["error"]["code"] == "not_found", b
    # prefer_labels: eu preferred, although n2 (us) is the least loaded now
    c.stop_all_sessions()
    c.wait_node(0, "online")
    st, b = c.create(requirements={"prefer_labels": {"region": "eu"}})
    assert st == 201 and b["node_id"] in ("n0", "n1"), b
    st, b = c.create(requirements={"prefer_labels": {"zone": "x"}})
    assert st == 201, b
    c.stop_all_sessions()


def test_validation(c):
    bad = [({}, "runner"),
           ({"runner": {"type": "docker"}}, "image"),
           ({"runner": {"type": "docker", "image": "a", "env": ["1=x"]}}, "runner.env[0]"),
           ({"runner": {"type": "docker", "image": "a"}, "requirements": {"gpu_vendor": "x"}},
            "requirements.gpu_vendor"),
           ({"runner": {"type": "docker", "image": "a"}, "bogus": 1}, "bogus")]
    for body, field in bad:
        st, b = c.api("POST", "/api/v1/sessions", body=body)
        assert st == 400 and field in b["error"]["message"], (body, st, b)
    st, b = c.api("POST", "/api/v1/sessions", body=b"{not json")
    assert st == 400 and b["error"]["code"] == "invalid_json", b
    st, _ = c.api("POST", "/api/v1/sessions", token=False, body={})
    assert st == 401
    st, _ = c.api("GET", "/api/v1/sessions/not-a-uuid")
    assert st == 404
    st, b = c.api("GET", "/api/v1/sessions?status=bogus")
    assert st == 400, b
    assert c.psql("SELECT count(*) FROM sessions WHERE status IN ('pending','starting')") == "0"


def test_owner_isolation(c):
    st, a = c.create(token=c.alice, name="alice-desk")
    assert st == 201, a
    assert c.psql("SELECT owner FROM sessions WHERE id = '%s'" % a["id"]) == "alice"
    st, b = c.api("GET", "/api/v1/sessions/" + a["id"], c.bob)
    assert st == 404 and b["error"]["code"] == "not_found", b
    st, b = c.api("DELETE", "/api/v1/sessions/" + a["id"], c.bob)
    assert st == 404, b
    st, lst = c.api("GET", "/api/v1/sessions", c.bob)
    assert st == 200 and all(s["id"] != a["id"] for s in lst["sessions"]), lst
    st, lst = c.api("GET", "/api/v1/sessions?status=running", c.alice)
    assert st == 200 and [s["id"] for s in lst["sessions"]] == [a["id"]], lst
    st, b = c.api("GET", "/api/v1/sessions?owner=bob", c.alice)
    assert st == 400, b
    st, lst = c.api("GET", "/api/v1/sessions?owner=alice&status=running")
    assert st == 200 and [s["id"] for s in lst["sessions"]] == [a["id"]], lst
    st, lst = c.api("GET", "/api/v1/sessions?node=%s&limit=1" % a["node_id"])
    assert st == 200 and len(lst["sessions"]) == 1, lst
    st, b = c.api("GET", "/api/v1/sessions/" + a["id"], c.alice)
    assert st == 200 and b["owner"] == "alice"
    st, b = c.api("DELETE", "/api/v1/sessions/" + a["id"], c.alice)
    assert st == 200 and b["status"] == "stopped", b


def test_stop_idempotent(c):
    st, b = c.create()
    assert st == 201, b
    i = int(b["node_id"][1:])
    w = c.wolves[i]
    lobby = b["wolf"]["lobby_id"]
    ws = w.add_session(lobby_id=lobby)  # a Moonlight client streaming from the lobby
    before = c.active()[b["node_id"]]
    st, s = c.api("DELETE", "/api/v1/sessions/" + b["id"])
    assert st == 200 and s["status"] == "stopped" and s["stopped_at"], s
    assert lobby not in w.lobbies and ws not in w.sessions, (w.lobbies, w.sessions)
    stops = [x for x in w.calls if x[1] in ("/api/v1/sessions/stop", "/api/v1/lobbies/stop")]
    assert [x[1] for x in stops[-2:]] == ["/api/v1/sessions/stop", "/api/v1/lobbies/stop"], stops
    assert stops[-1][2]["pin"] == [int(d) for d in b["wolf"]["pin"]], stops[-1]
    assert c.active()[b["node_id"]] == before - 1
    n = len(w.calls)
    st, s2 = c.api("DELETE", "/api/v1/sessions/" + b["id"])
    assert st == 200 and s2["status"] == "stopped" and s2["stopped_at"] == s["stopped_at"], s2
    assert len(w.calls) == n and c.active()[b["node_id"]] == before - 1
    st, _ = c.api("DELETE", "/api/v1/sessions/00000000-0000-4000-8000-000000000000")
    assert st == 404
    ev = c.psql("SELECT string_agg(type, ',' ORDER BY id) FROM events WHERE session_id = '%s' AND "
                "type IN ('session.stopping', 'session.stopped')" % b["id"])
    assert ev == "session.stopping,session.stopped", ev


def test_failing_wolf_skipped(c):
    for i in range(3):
        c.wait_node(i, "online")
    c.wolves[0].fail(*LOBBY_CREATE, error="Lobby setup timed out")
    c.wolves[1].hang(*LOBBY_CREATE)
    t0 = time.time()
    # prefer_labels puts both eu nodes (n0 errors, n1 hangs) ahead of n2
    st, b = c.create(requirements={"prefer_labels": {"region": "eu"}})
    took = time.time() - t0
    assert st == 201 and b["node_id"] == "n2", (st, b)
    attempts = int(c.psql("SELECT attempts FROM sessions WHERE id = '%s'" % b["id"]))
    failed = c.psql("SELECT string_agg(data->>'reason', ',' ORDER BY data->>'reason') FROM events "
                    "WHERE session_id = '%s' AND type = 'session.start_failed'" % b["id"])
    assert attempts == 3 and failed == "timeout,wolf_error", (attempts, failed)
    assert 2.5 < took < 15, took
    assert c.wolves[0].call_count(*LOBBY_CREATE) >= 1 and c.wolves[1].call_count(*LOBBY_CREATE) >= 1
    # the nodes that failed are degraded for the cool-down, then come back
    tried = c.psql("SELECT string_agg(node_id, ',' ORDER BY node_id) FROM events WHERE session_id = '%s' "
                   "AND type = 'session.start_failed'" % b["id"])
    for n in filter(None, tried.split(",")):
        assert c.psql("SELECT count(*) FROM events WHERE node_id = '%s' AND type = 'node.degraded' AND "
                      "data->>'reason' = 'session_start_failed'" % n) != "0"
    assert c.active() == {"n0": 0, "n1": 0, "n2": 1}, c.active()
    c.stop_all_sessions()
    # every node fails: the session fails, naming each attempt
    c.wolves[2].fail(*LOBBY_CREATE, error="boom")
    for i in range(3):
        c.wait_node(i, "online", timeout=30)
    st, b = c.create()
    assert st in (502, 504) and b["error"]["code"] in ("start_failed", "start_timeout"), (st, b)
    att = b["error"]["details"]["attempts"]
    assert sorted(a["node_id"] for a in att) == ["n0", "n1", "n2"], att
    sid = b["error"]["details"]["session_id"]
    assert c.psql("SELECT status FROM sessions WHERE id = '%s'" % sid) == "failed"
    assert c.active() == {"n0": 0, "n1": 0, "n2": 0}, c.active()
    for w in c.wolves:
        w.clear_faults()
    for i in range(3):
        c.wait_node(i, "online", timeout=30)


def test_concurrent_creates_capacity(c):
    for i, m in enumerate((20, 20, 10)):
        st, b = c.api("PATCH", "/api/v1/nodes/n%d" % i, body={"max_sessions": m})
        assert st == 200, b
    results = []
    lock = threading.Lock()

    def one(k):
        try:
            st, b = c.create(name="burst-%d" % k, timeout=120)
        except Exception as e:  # noqa: BLE001
            st, b = -1, repr(e)
        with lock:
            results.append((st, b))

    threads = [threading.Thread(target=one, args=(k,)) for k in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    codes = [st for st, _ in results]
    assert codes.count(201) == 50, sorted(set(codes))
    assert codes.count(503) == 150, sorted(set(codes))
    assert all(b["error"]["code"] == "no_capacity" for st, b in results if st == 503)
    assert c.active() == {"n0": 20, "n1": 20, "n2": 10}, c.active()
    assert c.psql("SELECT count(*) FROM sessions WHERE status = 'running'") == "50"
    assert c.psql("SELECT count(*) FROM sessions WHERE status IN ('pending', 'starting')") == "0"
    assert c.lobbies() == 50
    c.stop_all_sessions()
    assert c.lobbies() == 0 and c.active() == {"n0": 0, "n1": 0, "n2": 0}


def test_force_deregister_stops_sessions(c):
    st, b = c.create(requirements={"node_id": "n2"})
    assert st == 201, b
    st, _ = c.api("DELETE", "/api/v1/nodes/n2")
    assert st == 409
    st, _ = c.api("DELETE", "/api/v1/nodes/n2?force=true")
    assert st == 204
    st, s = c.api("GET", "/api/v1/sessions/" + b["id"])
    assert s["status"] == "stopped" and s["failure_reason"] == "node deregistered", s
    assert wait_for(lambda: len(c.wolves[2].lobbies) == 0, 10), c.wolves[2].lobbies


def main():
    r = Runner()
    trees = tempfile.mkdtemp(prefix="wp-sess-sys-")
    gpu_args = [["--sysfs-root", sysfs_tree(os.path.join(trees, "n%d" % i), vendor), "--nvml-lib", NO_NVML]
                for i, (vendor, _) in enumerate(GPU_TREES)]
    cl = Cluster([{"region": "eu"}, {"region": "eu"}, {"region": "us"}], max_sessions=4,
                 extra_args=["--wolf-timeout", "3", "--node-cooldown", "2", "--heartbeat-interval", "1"],
                 agent_args=gpu_args)
    try:
        st, b = cl.api("POST", "/api/v1/tokens", body={"name": "alice", "role": "user"})
        assert st == 201, b
        cl.alice = b["token"]
        st, b = cl.api("POST", "/api/v1/tokens", body={"name": "bob", "role": "user"})
        cl.bob = b["token"]
        for fn in (test_spread_and_lobby, test_filters_and_target, test_validation, test_owner_isolation,
                   test_stop_idempotent, test_failing_wolf_skipped, test_concurrent_creates_capacity,
                   test_force_deregister_stops_sessions):
            r.run(fn, cl)
    finally:
        rcs = cl.close()
        shutil.rmtree(trees, ignore_errors=True)
    if any(rc != 0 for rc in rcs):
        print("non-zero exit codes (wolfpackd, agents...): %s\n%s" % (rcs, cl.wp.log()[-3000:]))
        return 1
    return r.done()


if __name__ == "__main__":
    sys.exit(main())
