#!/usr/bin/env python3
"""test_wolf_health_sessions.py — a node whose Wolf probes fail gets no new sessions (issue #6).

The real wolfpackd (embedded PostgreSQL, real TLS) and two real wolfpack-agents, each probing
its own FakeWolf every second (sessions_harness.Cluster; probe settings through the agents'
WOLFPACK_PROBE_* environment). n0's /serverinfo starts answering garbage while its Wolf API
keeps working, so a create that reached n0 would succeed there: only the scheduler's filter
keeps sessions away. Checked:
  - n0 turns `degraded` (wolf_health.http failing) and untargeted creates all land on n1, with
    no lobbies/create call ever reaching n0's Wolf;
  - a create targeted at n0 is refused: 503 no_capacity "node n0 cannot take the session:
    degraded", details counting it under `degraded`;
  - with n1 full, an untargeted create answers 503 no_capacity counting n0 under `degraded`
    and n1 under `capacity`;
  - once the fake recovers, n0 is `online` again and sessions land there (targeted or not).
Also the scheduler's answer to a node row that another transaction holds for a moment (a
heartbeat, a concurrent create; FOR UPDATE SKIP LOCKED skips it): the create waits for it
rather than failing, both for an explicit target and for the next candidate after a failed
start (was: 503 "it is busy" / 502 after one attempt).
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sessions_harness import Cluster, wait_for  # noqa: E402
from wolfpack_test import Runner  # noqa: E402

CREATE = ("POST", "/api/v1/lobbies/create")
# Read by each wolfpack-agent the harness starts (it inherits this environment).
os.environ.update({"WOLFPACK_PROBE_INTERVAL": "1", "WOLFPACK_PROBE_TIMEOUT": "1"})


def node(c, i):
    st, b = c.api("GET", "/api/v1/nodes/" + c.node(i))
    assert st == 200, (st, b)
    return b


def wait_http_probe(c, i, status, ok):
    def cond():
        n = node(c, i)
        h = (n.get("wolf_health") or {}).get("http") or {}
        return n if n["status"] == status and h.get("ok") is ok else None
    n = wait_for(cond, 40, 0.2)
    assert n, (node(c, i), c.agents[i].log()[-2000:])
    return n


def test_degraded_gets_no_sessions(c):
    c.wolves[0].serverinfo_mode("garbage")
    n = wait_http_probe(c, 0, "degraded", False)
    assert "status_code" in n["wolf_health"]["http"]["error"], n["wolf_health"]
    assert n["wolf_health"]["api"]["ok"] is True, n["wolf_health"]  # its API still works
    calls0 = c.wolves[0].call_count(*CREATE)
    for k in range(3):  # by load ratio, the 2nd and 3rd would go to the empty n0
        st, b = c.create(name="d-%d" % k)
        assert st == 201 and b["node_id"] == "n1", (st, b)
    assert c.wolves[0].call_count(*CREATE) == calls0 and not c.wolves[0].lobbies
    assert c.active() == {"n0": 0, "n1": 3}, c.active()


def test_target_degraded_refused(c):
    st, b = c.create(requirements={"node_id": "n0"})
    assert st == 503 and b["error"]["code"] == "no_capacity", (st, b)
    assert b["error"]["message"] == "node n0 cannot take the session: degraded", b
    d = b["error"]["details"]
    assert d["nodes"] == 1 and d["excluded"]["degraded"] == 1, d
    assert sum(d["excluded"].values()) == 1, d
    st, s = c.api("GET", "/api/v1/sessions/" + d["session_id"])
    assert st == 200 and s["status"] == "failed" and "degraded" in s["failure_reason"], s
    assert not c.wolves[0].lobbies


def test_no_capacity_counts_degraded(c):
    st, b = c.api("PATCH", "/api/v1/nodes/n1", body={"max_sessions": 3})
    assert st == 200, b
    st, b = c.create()
    assert st == 503 and b["error"]["code"] == "no_capacity", (st, b)
    d = b["error"]["details"]
    assert d["nodes"] == 2 and d["excluded"]["degraded"] == 1 and d["excluded"]["capacity"] == 1, d
    assert not c.wolves[0].lobbies and c.active() == {"n0": 0, "n1": 3}, c.active()


def test_recovered_gets_sessions(c):
    c.wolves[0].serverinfo_mode("ok")
    wait_http_probe(c, 0, "online", True)
    st, b = c.create()  # n1 is full: n0 or nothing
    assert st == 201 and b["node_id"] == "n0", (st, b)
    st, b = c.create(requirements={"node_id": "n0"})
    assert st == 201 and b["node_id"] == "n0", (st, b)
    assert len(c.wolves[0].lobbies) == 2 and c.active() == {"n0": 2, "n1": 3}, c.active()
    c.stop_all_sessions()
    assert c.active() == {"n0": 0, "n1": 0} and c.lobbies() == 0, c.active()


def hold_node_row(c, node_id, seconds):
    """Locks nodes row node_id for `seconds` from another connection; returns once it is held."""
    run = os.path.join(c.wp.state, "postgres", "run")
    sql = ("BEGIN; SELECT 1 FROM nodes WHERE id = '%s' FOR UPDATE; SELECT pg_sleep(%s); COMMIT;"
           % (node_id, seconds))
    p = subprocess.Popen(["psql", "-h", run, "-U", "wolfpack", "-d", "wolfpack", "-qAtc", sql],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    held = wait_for(lambda: c.psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                                   "AND query LIKE '%%FOR UPDATE; SELECT pg_sleep(%s)%%'" % seconds) == "1",
                    10, 0.05)
    assert held
    return p


def test_locked_target_waited_for(c):
    c.wait_node(0, "online")
    p = hold_node_row(c, "n0", 1.5)
    t0 = time.time()
    st, b = c.create(requirements={"node_id": "n0"})
    took = time.time() - t0
    p.wait(10)
    assert st == 201 and b["node_id"] == "n0", (st, b)
    assert took > 0.5, took  # it waited for the row rather than skipping it
    c.stop_all_sessions()


def test_locked_next_candidate_waited_for(c):
    for i in range(2):
        c.wait_node(i, "online")
    c.wolves[0].fail(*CREATE, error="Lobby setup timed out")
    p = hold_node_row(c, "n1", 1.5)
    st, b = c.create(requirements={"prefer_labels": {"zone": "a"}})  # n0 first, then n1
    p.wait(10)
    c.wolves[0].clear_faults()
    assert st == 201 and b["node_id"] == "n1", (st, b)
    failed = c.psql("SELECT string_agg(node_id, ',') FROM events WHERE session_id = '%s' AND "
                    "type = 'session.start_failed'" % b["id"])
    assert failed == "n0", failed
    c.stop_all_sessions()
    c.wait_node(0, "online")


def main():
    r = Runner()
    cl = Cluster([{"zone": "a"}, {"zone": "b"}], max_sessions=4,
                 extra_args=["--heartbeat-interval", "1", "--wolf-timeout", "3", "--node-cooldown", "2"])
    try:
        for fn in (test_degraded_gets_no_sessions, test_target_degraded_refused,
                   test_no_capacity_counts_degraded, test_recovered_gets_sessions,
                   test_locked_target_waited_for, test_locked_next_candidate_waited_for):
            r.run(fn, cl)
            if r.failed:
                break
    finally:
        rcs = cl.close()
    if any(rc != 0 for rc in rcs):
        print("non-zero exit codes (wolfpackd, agents...): %s\n%s" % (rcs, cl.wp.log()[-3000:]))
        return 1
    return r.done()


if __name__ == "__main__":
    sys.exit(main())
