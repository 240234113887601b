#!/usr/bin/env python3
"""test_agent_status.py — wolfpack-agent's local status endpoint (--status-listen).

Real wolfpackd, real agent:
  - an agent whose control plane is unreachable: /healthz 200 "ok", /readyz 503
    with a JSON reason, /metrics counting dial_failed reconnects, 404 elsewhere;
  - a joined agent: /readyz 200; after a CONNECT stream through wolfpackd to
    an echo service and a refused one, /metrics shows the tunnel connected,
    streams opened, bytes in/out grown, a not_allowed dial failure and a dial
    latency observation; the exposition passes `promtool check metrics`;
  - a bad or busy explicit --status-listen fails the start (exit 2, one line);
    `--status-listen none` opens no port.
"""
import json
import os
import shutil
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wolfpack_test import (Agent, EchoServer, Runner, Wolfpackd, admin_token, connect_stream,  # noqa: E402
                           exchange, free_port, join_args, metric, read_response, wait_for)


def status_agent(c, name, args, status="auto"):
    return Agent(c.wp.dir, name, ["run"] + list(args) + ["--node-id", name, "--probe-interval", "60",
                                                         "--log-level", "debug"], status=status)


def promtool_check(text):
    tool = shutil.which("promtool")
    # Never skipped: scripts/deps.sh --test installs it (Debian's prometheus package).
    assert tool, "promtool not found: apt-get install prometheus (scripts/deps.sh --test)"
    p = subprocess.run([tool, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=30)
    assert p.returncode == 0, (p.stdout, p.stderr, text[:2000])


class Ctx:
    pass


def test_not_ready_when_unreachable(c):
    a = status_agent(c, "st-down", ["--url", "wss://127.0.0.1:%d" % free_port(), "--token",
                                    "wpjoin_notarealtoken_x", "--insecure-skip-verify"])
    try:
        r = wait_for(lambda: a.status_try_get("/healthz"), 20)
        assert r, a.log()[-3000:]
        assert r[0] == 200 and r[2] == b"ok\n", r
        st, hdr, body = a.status_get("/readyz")
        assert st == 503, (st, body)
        j = json.loads(body)
        assert j["status"] == "not_ready" and j["reason"] and j["checks"]["tunnel"] in (
            "disconnected", "connecting"), j
        assert wait_for(lambda: (metric(a.status_get("/metrics")[2].decode(),
                                        'wolfpack_agent_reconnects_total{reason="dial_failed"}')
                                 or 0) >= 1, 10), a.log()[-2000:]
        st, _, body = a.status_get("/nope")
        assert st == 404, (st, body)
        st, _, _ = a.status_get("/metrics/")
        assert st == 404, st
        text = a.status_get("/metrics")[2].decode()
        assert metric(text, "wolfpack_agent_tunnel_connected") == 0, text
        promtool_check(text)
    finally:
        rc = a.stop()
    assert rc == 0, (rc, a.log()[-3000:])


def test_ready_and_counters(c):
    a = status_agent(c, "st-up", c.join + ["--service", "echo=tcp:127.0.0.1:%d" % c.echo.port])
    try:
        assert wait_for(lambda: (a.status_try_get("/readyz") or (0,))[0] == 200, 40), a.log()[-3000:]
        assert json.loads(a.status_get("/readyz")[2])["status"] == "ready"
        before = a.status_get("/metrics")[2].decode()
        assert metric(before, "wolfpack_agent_tunnel_connected") == 1, before
        assert metric(before, "wolfpack_agent_connects_total") == 1, before
        bytes_in0 = metric(before, 'wolfpack_agent_tunnel_bytes_total{direction="in"}')
        bytes_out0 = metric(before, 'wolfpack_agent_tunnel_bytes_total{direction="out"}')
        s, head = connect_stream(c.wp, "st-up:echo", c.admin)
        assert head.startswith(b"HTTP/1.1 200"), head
        payload = os.urandom(128 * 1024)
        assert bytes(exchange(s, payload, len(payload))) == payload
        s.close()
        s = c.wp.connect()
        s.sendall(("CONNECT st-up:nosuch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
                   % c.admin).encode())
        st, _, body = read_response(s)
        s.close()
        assert st == 502 and b"not_allowed" in body, (st, body)

        def moved():
            t = a.status_get("/metrics")[2].decode()
            ok = ((metric(t, "wolfpack_agent_streams_opened_total") or 0) >= 1 and
                  (metric(t, 'wolfpack_agent_stream_dial_failures_total{reason="not_allowed"}')
                   or 0) >= 1)
            return t if ok else None
        text = wait_for(moved, 10)
        assert text, a.status_get("/metrics")[2].decode()
        assert metric(text, 'wolfpack_agent_tunnel_bytes_total{direction="in"}') >= \
            bytes_in0 + len(payload), text
        assert metric(text, 'wolfpack_agent_tunnel_bytes_total{direction="out"}') >= \
            bytes_out0 + len(payload), text
        assert metric(text, "wolfpack_agent_stream_dial_seconds_count") >= 1, text
        assert metric(text, 'wolfpack_agent_stream_dial_seconds_bucket{le="+Inf"}') >= 1, text
        assert 'wolfpack_agent_build_info{version="' in text, text
        assert 'wolfpack_agent_probe_up{check="api"}' in text, text  # probes ran (and failed)
        assert "wolfpack_agent_gpus 0" in text, text
        promtool_check(text)
        hdr = a.status_get("/metrics")[1]
        assert hdr.get("content-type", "").startswith("text/plain; version=0.0.4"), hdr
    finally:
        rc = a.stop()
    assert rc == 0, (rc, a.log()[-3000:])


def test_bad_status_listen(c):
    a = status_agent(c, "st-bad", c.join, status="localhost-ish:99999")
    rc = a.wait(timeout=20)
    a.stop()
    assert rc == 2 and "--status-listen" in a.log(), (rc, a.log())
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        a = status_agent(c, "st-busy", c.join, status="127.0.0.1:%d" % busy.getsockname()[1])
        rc = a.wait(timeout=20)
        a.stop()
        assert rc == 2 and "cannot listen" in a.log(), (rc, a.log())
    finally:
        busy.close()
    a = status_agent(c, "st-none", c.join, status="none")
    try:
        assert wait_for(lambda: "tunnel up" in a.log() or not a.alive(), 30), a.log()
        assert "status endpoint listening" not in a.log(), a.log()
    finally:
        rc = a.stop()
    assert rc == 0, a.log()[-2000:]


def main():
    r = Runner()
    c = Ctx()
    c.echo = EchoServer()
    c.wp = Wolfpackd(wait_ready=True, extra_args=["--heartbeat-interval", "2"])
    try:
        c.admin = admin_token(c.wp)
        c.join = join_args(c.wp)
        r.run(test_not_ready_when_unreachable, c)
        r.run(test_ready_and_counters, c)
        r.run(test_bad_status_listen, c)
    finally:
        rc = r.finish(c.wp)
    return rc


if __name__ == "__main__":
    sys.exit(main())
