#!/usr/bin/env python3
"""test_sessions_recovery.py — sessions across restarts, with the real wolfpackd and real
agents in front of FakeWolves.

Covered: a Wolf that restarted (all lobbies lost) turns the node's running sessions `lost`
once its agent reconnects (capacity released, session.lost), while a lobby nobody owns is
reported (node.orphan_lobby) and, with --reap-orphans, stopped (a PIN-protected foreign one is
refused by Wolf and the event says so) — and a healthy
session on that node stays running; a node listing more lobbies than reconciliation takes
(1024) is left alone rather than compared with a cut list; killing wolfpackd with SIGKILL in the middle of creates
leaves no session stuck in pending/starting after the restart (the recovery pass fails them
and gives their slots back) and active_sessions matches the sessions table; the lobbies those
interrupted creates left on the Wolves are reported only while --reap-orphans is off, and
stopped with their session's PIN after a restart with it.
"""
import json
import os
import signal
import socket
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sessions_harness import Cluster, wait_for  # noqa: E402
from wolfpack_test import Runner  # noqa: E402

ARGS = ["--wolf-timeout", "3", "--node-cooldown", "1", "--heartbeat-interval", "1", "--reap-orphans"]


def wolf_post(sock_path, path, body):
    """One request straight to a FakeWolf socket (as another Wolf client would)."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    data = json.dumps(body).encode()
    s.sendall(b"POST %s HTTP/1.1\r\nHost: wolf\r\nContent-Length: %d\r\n\r\n" % (path.encode(), len(data)) + data)
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return json.loads(out.split(b"\r\n\r\n", 1)[1])


def restart_agent(c, i):
    c.agents[i].stop()
    c.start_agent(i)
    c.wait_node(i, "online")


def test_lost_after_wolf_restart(c):
    st, a = c.create(requirements={"node_id": "n0"})
    assert st == 201, a
    c.wolves[0].restart()
    assert c.wolves[0].lobbies == {}
    restart_agent(c, 0)
    ok = wait_for(lambda: c.psql("SELECT status FROM sessions WHERE id = '%s'" % a["id"]) == "lost", 20, 0.2)
    assert ok, c.wp.log()[-3000:]
    assert c.active()["n0"] == 0, c.active()
    assert c.psql("SELECT count(*) FROM events WHERE session_id = '%s' AND type = 'session.lost'" % a["id"]) == "1"
    st, s = c.api("GET", "/api/v1/sessions/" + a["id"])
    assert s["status"] == "lost" and "missing" in s["failure_reason"], s
    st, s = c.api("DELETE", "/api/v1/sessions/" + a["id"])
    assert st == 200 and s["status"] == "lost", s  # stop of a lost session: nothing to do


def test_orphan_reported_and_reaped(c):
    st, keep = c.create(requirements={"node_id": "n1"})
    assert st == 201, keep
    lobby = {"profile_id": "other", "name": "not ours", "multi_user": True, "stop_when_everyone_leaves": False,
             "video_settings": {"width": 1920, "height": 1080, "refresh_rate": 60, "wayland_render_node": "",
                                "runner_render_node": "", "video_producer_buffer_caps": ""},
             "audio_settings": {"channel_count": 2}, "runner_state_folder": "x",
             "runner": {"type": "process", "run_cmd": "true"}}
    r = wolf_post(c.wolves[1].socket_path, "/api/v1/lobbies/create", lobby)
    orphan = r["lobby_id"]
    # a second foreign lobby, created with a PIN nobody here knows: Wolf will refuse the stop
    r = wolf_post(c.wolves[1].socket_path, "/api/v1/lobbies/create", dict(lobby, pin=[9, 8, 7, 6]))
    locked = r["lobby_id"]
    restart_agent(c, 1)
    ev = "SELECT data->>'reap', coalesce(data->>'why_kept', '') FROM events WHERE node_id = 'n1' AND " \
         "type = 'node.orphan_lobby' AND data->>'lobby_id' = '%s'"
    ok = wait_for(lambda: c.psql(ev % orphan) and c.psql(ev % locked), 20, 0.2)
    assert ok, c.wp.log()[-3000:]
    # unknown to the database: reported, and with --reap-orphans stopped (without a PIN)
    assert c.psql(ev % orphan) == "true|", c.psql(ev % orphan)
    assert c.psql(ev % locked) == "true|", c.psql(ev % locked)
    stopped = "SELECT data->>'reaped', coalesce(data->>'error', '') FROM events WHERE node_id = 'n1' " \
              "AND type = 'node.orphan_lobby_stopped' AND data->>'lobby_id' = '%s'"
    ok = wait_for(lambda: c.psql(stopped % orphan) and c.psql(stopped % locked), 20, 0.2)
    assert ok, c.wp.log()[-3000:]
    assert c.psql(stopped % orphan) == "true|", c.psql(stopped % orphan)
    assert orphan not in c.wolves[1].lobbies
    # the PIN-protected one: Wolf refused, the event says why, the lobby is still there
    assert c.psql(stopped % locked).startswith("false|") and "PIN" in c.psql(stopped % locked), \
        c.psql(stopped % locked)
    assert locked in c.wolves[1].lobbies
    # the session that owns its lobby was never touched
    assert keep["wolf"]["lobby_id"] in c.wolves[1].lobbies
    assert c.psql("SELECT status FROM sessions WHERE id = '%s'" % keep["id"]) == "running"
    c.stop_all_sessions()
    assert wolf_post(c.wolves[1].socket_path, "/api/v1/lobbies/stop",
                     {"lobby_id": locked, "pin": [9, 8, 7, 6]})["success"]


def test_too_many_lobbies_skips_reconcile(c):
    # 1024 lobbies nobody owns, then a session: its lobby is listed after the first 1024
    lobby = {"profile_id": "other", "name": "filler", "multi_user": True, "stop_when_everyone_leaves": False,
             "video_settings": {"width": 1920, "height": 1080, "refresh_rate": 60, "wayland_render_node": "",
                                "runner_render_node": "", "video_producer_buffer_caps": ""},
             "audio_settings": {"channel_count": 2}, "runner_state_folder": "x",
             "runner": {"type": "process", "run_cmd": "true"}}
    for _ in range(1024):
        assert wolf_post(c.wolves[2].socket_path, "/api/v1/lobbies/create", lobby)["success"]
    st, a = c.create(requirements={"node_id": "n2"})
    assert st == 201, a
    assert list(c.wolves[2].lobbies)[-1] == a["wolf"]["lobby_id"]
    restart_agent(c, 2)
    ok = wait_for(lambda: c.wp.logged("reconciliation skipped: too many lobbies on the node"), 20, 0.2)
    assert ok, c.wp.log()[-3000:]
    # a list cut at 1024 must not make the session look lost, nor report the rest
    assert c.psql("SELECT status FROM sessions WHERE id = '%s'" % a["id"]) == "running"
    assert c.psql("SELECT count(*) FROM events WHERE node_id = 'n2' AND type = 'node.orphan_lobby'") == "0"
    c.stop_all_sessions()
    c.wolves[2].restart()  # drops the filler lobbies
    assert c.lobbies() == 0


def orphan_events(c, why):
    return c.psql("SELECT string_agg(DISTINCT data->>'lobby_id', ',') FROM events WHERE "
                  "type = 'node.orphan_lobby' AND data->>'why_kept' = '%s'" % why).split(",")


def test_sigkill_during_creates(c):
    assert c.lobbies() == 0
    calls0 = sum(w.call_count("POST", "/api/v1/lobbies/create") for w in c.wolves)
    for w in c.wolves:
        w.delay("POST", "/api/v1/lobbies/create", 4)
    codes = []

    def one():
        try:
            st, _ = c.create(timeout=30)
        except Exception:  # noqa: BLE001
            st = -1
        codes.append(st)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    ok = wait_for(lambda: c.psql("SELECT count(*) FROM sessions WHERE status = 'starting'") == "8", 20, 0.1)
    assert ok, c.psql("SELECT status, count(*) FROM sessions GROUP BY status")
    port, state = c.wp.port, c.wp.state
    c.wp.stop(sig=signal.SIGKILL)
    for t in threads:
        t.join(30)
    assert codes.count(201) == 0, codes
    # Each lobbies/create that reached a Wolf still completes there (after the delay): those
    # lobbies belong to sessions the recovery pass is about to fail. Orphans, with a PIN.
    made = lambda: sum(w.call_count("POST", "/api/v1/lobbies/create") for w in c.wolves) - calls0  # noqa: E731
    assert wait_for(lambda: made() > 0 and c.lobbies() == made(), 15, 0.2), (made(), c.lobbies())
    orphans = sorted(k for w in c.wolves for k in w.lobbies)
    stops = lambda: sum(w.call_count("POST", "/api/v1/lobbies/stop") for w in c.wolves)  # noqa: E731
    stops0 = stops()
    for w in c.wolves:
        w.clear_faults()
    # First restart without --reap-orphans: the orphans are only reported.
    c.extra_args = [a for a in ARGS if a != "--reap-orphans"]
    c.start_wolfpackd(port=port, state=state)
    stuck = lambda: c.psql("SELECT count(*) FROM sessions WHERE status IN ('pending', 'starting')")  # noqa: E731
    ok = wait_for(lambda: stuck() == "0", 40, 0.5)
    assert ok, (stuck(), c.wp.log()[-3000:])
    assert c.psql("SELECT count(*) FROM sessions WHERE status = 'failed' AND failure_reason LIKE "
                  "'%interrupted%'") == "8"
    drift = c.psql("SELECT count(*) FROM nodes n WHERE active_sessions <> (SELECT count(*) FROM sessions s "
                   "WHERE s.node_id = n.id AND s.status IN ('starting', 'running', 'stopping'))")
    assert drift == "0", c.psql("SELECT id, active_sessions FROM nodes")
    assert c.active() == {"n0": 0, "n1": 0, "n2": 0}, c.active()
    for i in range(3):
        c.wait_node(i, "online", timeout=60)
    # the recovery pass reconciled the nodes again once it had failed the sessions
    ok = wait_for(lambda: sorted(orphan_events(c, "--reap-orphans is off")) == orphans, 20, 0.3)
    assert ok, (orphan_events(c, "--reap-orphans is off"), orphans, c.wp.log()[-3000:])
    assert sorted(k for w in c.wolves for k in w.lobbies) == orphans
    assert stops() == stops0, (stops(), stops0)
    # Restart with --reap-orphans: the agents reconnect, reconciliation stops each orphan with
    # its session's PIN (the fake refuses lobbies/stop without the right one).
    rc = c.wp.stop()
    assert rc == 0, (rc, c.wp.log()[-3000:])
    c.extra_args = list(ARGS)
    c.start_wolfpackd(port=port, state=state)
    ok = wait_for(lambda: c.lobbies() == 0, 40, 0.3)
    assert ok, ([list(w.lobbies) for w in c.wolves], c.wp.log()[-3000:])
    reaped = c.psql("SELECT string_agg(data->>'lobby_id', ',' ORDER BY data->>'lobby_id') FROM events "
                    "WHERE type = 'node.orphan_lobby_stopped' AND data->>'reaped' = 'true' "
                    "AND data->>'session_id' IS NOT NULL")  # earlier tests reaped foreign lobbies
    assert sorted(reaped.split(",")) == orphans, (reaped, orphans)
    pins = c.psql("SELECT count(*) FROM events e JOIN sessions s ON s.id::text = e.data->>'session_id' "
                  "WHERE e.type = 'node.orphan_lobby_stopped' AND s.status = 'failed'")
    assert int(pins) == len(orphans), pins
    for i in range(3):
        c.wait_node(i, "online", timeout=60)
    st, b = c.create()
    assert st == 201, (st, b)
    c.stop_all_sessions()


def main():
    r = Runner()
    cl = Cluster([{"region": "eu"}, {"region": "eu"}, {"region": "us"}], max_sessions=4, extra_args=ARGS)
    try:
        for fn in (test_lost_after_wolf_restart, test_orphan_reported_and_reaped,
                   test_too_many_lobbies_skips_reconcile, test_sigkill_during_creates):
            r.run(fn, cl)
    finally:
        rcs = cl.close()
    if any(rc != 0 for rc in rcs):
        print("non-zero exit codes (wolfpackd, agents...): %s\n%s" % (rcs, cl.wp.log()[-3000:]))
        return 1
    return r.done()


if __name__ == "__main__":
    sys.exit(main())
