#!/usr/bin/env python3
"""test_wolf_health.py — Wolf health probes and the restart watchdog with the real binaries.

The real wolfpackd (embedded PostgreSQL) and two real wolfpack-agents probe one fake Wolf
(fake_wolf.py: API unix socket, /serverinfo on TCP, a TLS port) every second. Agent A has
--wolf-restart-cmd (a shell command appending a timestamp to a file), agent B has none.
Each failure mode is reported exactly in GET /api/v1/nodes/{id} (wolf_health) with the
node `degraded`, and the node returns `online` when the fake recovers:
  - the API hangs (connected but silent)           -> api "timeout";
  - /serverinfo answers garbage                    -> http 'bad serverinfo: no status_code="200"';
  - 47984 closes without a TLS handshake           -> https "closed before tls handshake".
The restart command runs after 2 unhealthy rounds, again only after the cool-down, never
for agent B, and each run is a node.wolf_restart event in GET /api/v1/events.
The agents list Wolf's lobbies with each probe round: once a session is created, its node's
load.active_sessions (from the heartbeat) is 1, and 0 again after the session is stopped.
"""
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake_wolf import FakeWolf  # noqa: E402
from wolfpack_test import Runner, Wolfpackd, binary, free_port, read_response  # noqa: E402

JOIN_RE = re.compile(r"^\s*(wolfpack-agent --url \S+ --token \S+ --ca-pin sha256:[0-9a-f]{64})\s*$",
                     re.M)
COOLDOWN_S = 8


class Ctx:
    agents = {}


def api(c, method, path, body=None):
    data = b"" if body is None else json.dumps(body).encode()
    s = c.wp.connect()
    s.sendall(("%s %s HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n"
               "Content-Length: %d\r\n\r\n" % (method, path, c.admin, len(data))).encode() + data)
    st, _, raw = read_response(s)
    s.close()
    return st, (json.loads(raw) if raw else None)


def node(c, nid):
    st, n = api(c, "GET", "/api/v1/nodes/" + nid)
    return n if st == 200 else None


def log_of(c, nid):
    with open(c.agents[nid][1], "rb") as f:
        return f.read().decode("utf-8", "replace")


def wait_for(c, what, cond, timeout=30):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        for nid, (p, _) in c.agents.items():
            assert p.poll() is None, (nid, log_of(c, nid)[-3000:])
        last = cond()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError("%s: timed out; last %r\nagent A log:\n%s" %
                         (what, last, log_of(c, "wh-a")[-2000:]))


def restarts(c):
    try:
        with open(c.restart_file) as f:
            return [float(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def start_agent(c, nid, join, restart):
    argv = shlex.split(join)
    argv[0] = binary("wolfpack-agent")
    argv += ["--node-id", nid, "--log-level", "debug",
             "--service", "wolf=unix:" + c.sock,
             "--service", "wolf-http=tcp:127.0.0.1:%d" % c.http_port,
             "--service", "moonlight=tcp:127.0.0.1:%d" % free_port(),
             "--wolf-https", "127.0.0.1:%d" % c.https_port,
             "--probe-interval", "1", "--probe-timeout", "1", "--probe-tls-timeout", "1",
             "--wolf-restart-after", "2", "--wolf-restart-cooldown", str(COOLDOWN_S)]
    if restart:
        argv += ["--wolf-restart-cmd", "date +%%s.%%N >> %s" % shlex.quote(c.restart_file)]
    logp = os.path.join(c.wp.dir, nid + ".log")
    logf = open(logp, "wb")
    p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT)
    logf.close()
    c.agents[nid] = (p, logp)


def healthy_online(c, nid):
    n = node(c, nid)
    if not n or n.get("status") != "online":
        return None
    w = n.get("wolf_health") or {}
    if all(w.get(k, {}).get("ok") is True for k in ("api", "http", "https")):
        return n
    return None


def failing(c, nid, check, error):
    n = node(c, nid)
    if not n or n.get("status") != "degraded":
        return None
    p = (n.get("wolf_health") or {}).get(check) or {}
    return n if p.get("ok") is False and p.get("error") == error else None


def test_online_with_wolf_health(c):
    for nid in ("wh-a", "wh-b"):
        n = wait_for(c, "online " + nid, lambda: healthy_online(c, nid), timeout=40)
        w = n["wolf_health"]
        for k in ("api", "http", "https"):
            assert isinstance(w[k]["latency_ms"], int) and "error" not in w[k], w
    # the probes used the fake's routes: health first (404 on a non-Helix Wolf), then the schema
    assert c.wolf.call_count("GET", "/api/v1/openapi-schema") > 0
    assert restarts(c) == []


def load_sessions(c, nid, want):
    n = node(c, nid)
    return n if n and (n.get("load") or {}).get("active_sessions") == want else None


def test_lobby_count_in_load(c):
    # both agents probe the same fake Wolf: each lists the one lobby
    st, b = api(c, "POST", "/api/v1/sessions",
                {"runner": {"type": "docker", "image": "ghcr.io/games-on-whales/xfce:edge"}})
    assert st == 201, (st, b)
    assert len(c.wolf.lobbies) == 1, c.wolf.lobbies
    for nid in (b["node_id"], "wh-a", "wh-b"):
        wait_for(c, "active_sessions 1 " + nid, lambda: load_sessions(c, nid, 1), timeout=10)
    st, _ = api(c, "DELETE", "/api/v1/sessions/" + b["id"])
    assert st == 200 and not c.wolf.lobbies, (st, c.wolf.lobbies)
    for nid in ("wh-a", "wh-b"):
        wait_for(c, "active_sessions 0 " + nid, lambda: load_sessions(c, nid, 0), timeout=10)
    assert c.wolf.call_count("GET", "/api/v1/lobbies") > 0


def test_api_hang_and_restart_cooldown(c):
    c.wolf.hang_api(True)
    for nid in ("wh-a", "wh-b"):
        n = wait_for(c, "api timeout " + nid, lambda: failing(c, nid, "api", "timeout"))
        assert n["wolf_health"]["http"]["ok"] is True, n["wolf_health"]
    wait_for(c, "first restart", lambda: len(restarts(c)) >= 1)
    # still unhealthy: the next run waits for the cool-down
    wait_for(c, "second restart", lambda: len(restarts(c)) >= 2, timeout=COOLDOWN_S + 20)
    r = restarts(c)
    assert r[1] - r[0] >= COOLDOWN_S - 0.5, r
    c.wolf.hang_api(False)
    for nid in ("wh-a", "wh-b"):
        wait_for(c, "recovered " + nid, lambda: healthy_online(c, nid))
    wait_for(c, "restart events", lambda: len([
        e for e in api(c, "GET", "/api/v1/events?node=wh-a")[1]["events"]
        if e["type"] == "node.wolf_restart"]) >= 2)
    st, evs = api(c, "GET", "/api/v1/events?node=wh-a")
    rs = [e for e in evs["events"] if e["type"] == "node.wolf_restart"]
    assert rs[0]["data"]["exit_status"] == 0 and rs[0]["data"]["failures"] >= 2, rs
    assert "exited with status 0" in rs[0]["message"], rs


def test_serverinfo_garbage(c):
    c.wolf.serverinfo_mode("garbage")
    for nid in ("wh-a", "wh-b"):
        wait_for(c, "garbage " + nid,
                 lambda: failing(c, nid, "http", 'bad serverinfo: no status_code="200"'))
    c.wolf.serverinfo_mode("ok")
    for nid in ("wh-a", "wh-b"):
        wait_for(c, "recovered " + nid, lambda: healthy_online(c, nid))


def test_https_closed_before_handshake(c):
    c.wolf.https_mode("close")
    for nid in ("wh-a", "wh-b"):
        n = wait_for(c, "tls close " + nid,
                     lambda: failing(c, nid, "https", "closed before tls handshake"))
        assert n["wolf_health"]["api"]["ok"] is True, n["wolf_health"]
    c.wolf.https_mode("ok")
    for nid in ("wh-a", "wh-b"):
        wait_for(c, "recovered " + nid, lambda: healthy_online(c, nid))


def test_restart_once_per_cooldown_never_unconfigured(c):
    r = restarts(c)
    assert len(r) >= 2, r
    for a, b in zip(r, r[1:]):
        assert b - a >= COOLDOWN_S - 0.5, r
    st, evs = api(c, "GET", "/api/v1/events?node=wh-b")
    assert st == 200 and not [e for e in evs["events"] if e["type"] == "node.wolf_restart"], evs
    assert "running --wolf-restart-cmd" not in log_of(c, "wh-b")
    assert "running --wolf-restart-cmd" in log_of(c, "wh-a")


def test_clean_exit(c):
    for nid, (p, _) in c.agents.items():
        p.send_signal(signal.SIGTERM)
    for nid, (p, _) in c.agents.items():
        assert p.wait(timeout=40) == 0, (nid, log_of(c, nid)[-3000:])


def main():
    r = Runner()
    c = Ctx()
    c.wp = Wolfpackd(wait_ready=True, extra_args=["--heartbeat-interval", "1"])
    with open(os.path.join(c.wp.state, "admin.token")) as f:
        c.admin = f.read().strip()
    c.sock = os.path.join(c.wp.dir, "wolf.sock")
    c.http_port, c.https_port = free_port(), free_port()
    c.restart_file = os.path.join(c.wp.dir, "restarts")
    c.wolf = FakeWolf(c.sock, http_port=c.http_port, https_port=c.https_port).start()
    try:
        deadline = time.time() + 15
        while not JOIN_RE.search(c.wp.stdout()) and time.time() < deadline:
            time.sleep(0.1)
        m = JOIN_RE.search(c.wp.stdout())
        assert m, c.wp.stdout()
        start_agent(c, "wh-a", m.group(1), True)
        start_agent(c, "wh-b", m.group(1), False)
        for t in (test_online_with_wolf_health, test_lobby_count_in_load,
                  test_api_hang_and_restart_cooldown,
                  test_serverinfo_garbage, test_https_closed_before_handshake,
                  test_restart_once_per_cooldown_never_unconfigured, test_clean_exit):
            r.run(t, c)
            if r.failed:
                break
    finally:
        for p, _ in c.agents.values():
            if p.poll() is None:
                p.kill()
        c.wolf.stop()
        rc = c.wp.stop()
        if rc != 0:
            print("FAIL wolfpackd exit %d\n%s" % (rc, c.wp.log()[-3000:]))
            r.failed += 1
    return r.done()


if __name__ == "__main__":
    sys.exit(main())
