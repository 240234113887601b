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
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wolfpack_test import Runner, Wolfpackd, binary, exchange, free_port, read_response  # noqa: E402

JOIN_RE = re.compile(r"^\s*wolfpack-agent (--url \S+ --token \S+ --ca-pin sha256:[0-9a-f]{64})\s*$",
                     re.M)
ASAN_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=99",
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=98"}


def wait_for(pred, timeout, step=0.1):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v or time.time() >= deadline:
            return v
        time.sleep(step)


class Echo:
    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    @staticmethod
    def _echo(c):
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
            c.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            c.close()


class Agent:
    def __init__(self, d, name, args, status="auto"):
        self.log_path = os.path.join(d, "agent-%s.log" % name)
        self.logf = open(self.log_path, "wb")
        self.status_port = free_port() if status == "auto" else None
        listen = "127.0.0.1:%d" % self.status_port if status == "auto" else status
        argv = [binary("wolfpack-agent"), "run"] + list(args) + [
            "--node-id", name, "--status-listen", listen, "--probe-interval", "60",
            "--log-level", "debug"]
        env = {k: v for k, v in os.environ.items()
               if k.lower() not in ("https_proxy", "http_proxy", "no_proxy", "all_proxy")}
        env.update(ASAN_ENV)
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT, env=env)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def get(self, path):
        s = socket.create_connection(("127.0.0.1", self.status_port), timeout=5)
        try:
            s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
            return read_response(s)
        finally:
            s.close()

    def try_get(self, path):
        try:
            return self.get(path)
        except (OSError, EOFError):
            return None

    def stop(self, timeout=45):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("agent ignored SIGTERM:\n" + self.log()[-3000:])
        self.logf.close()
        return self.proc.returncode


def metric(text, name):
    m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


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
    a = Agent(c.wp.dir, "st-down", ["--url", "wss://127.0.0.1:%d" % free_port(), "--token",
                                    "wpjoin_notarealtoken_x", "--insecure-skip-verify"])
    try:
        r = wait_for(lambda: a.try_get("/healthz"), 20)
        assert r, a.log()[-3000:]
        assert r[0] == 200 and r[2] == b"ok\n", r
        st, hdr, body = a.get("/readyz")
        assert st == 503, (st, body)
        j = json.loads(body)
        assert j["status"] == "not_ready" and j["reason"] and j["checks"]["tunnel"] in (
            "disconnected", "connecting"), j
        assert wait_for(lambda: (metric(a.get("/metrics")[2].decode(),
                                        'wolfpack_agent_reconnects_total{reason="dial_failed"}')
                                 or 0) >= 1, 10), a.log()[-2000:]
        st, _, body = a.get("/nope")
        assert st == 404, (st, body)
        st, _, _ = a.get("/metrics/")
        assert st == 404, st
        text = a.get("/metrics")[2].decode()
        assert metric(text, "wolfpack_agent_tunnel_connected") == 0, text
        promtool_check(text)
    finally:
        rc = a.stop()
    assert rc == 0, (rc, a.log()[-3000:])


def test_ready_and_counters(c):
    a = Agent(c.wp.dir, "st-up", c.join + ["--service", "echo=tcp:127.0.0.1:%d" % c.echo.port])
    try:
        assert wait_for(lambda: (a.try_get("/readyz") or (0,))[0] == 200, 40), a.log()[-3000:]
        assert json.loads(a.get("/readyz")[2])["status"] == "ready"
        before = a.get("/metrics")[2].decode()
        assert metric(before, "wolfpack_agent_tunnel_connected") == 1, before
        assert metric(before, "wolfpack_agent_connects_total") == 1, before
        bytes_in0 = metric(before, 'wolfpack_agent_tunnel_bytes_total{direction="in"}')
        bytes_out0 = metric(before, 'wolfpack_agent_tunnel_bytes_total{direction="out"}')
        s = c.wp.connect()
        s.sendall(("CONNECT st-up:echo HTTP/1.1\r\nHost: st-up:echo\r\nAuthorization: Bearer %s"
                   "\r\n\r\n" % c.admin).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            d = s.recv(1)
            assert d, head
            head += d
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
            t = a.get("/metrics")[2].decode()
            ok = ((metric(t, "wolfpack_agent_streams_opened_total") or 0) >= 1 and
                  (metric(t, 'wolfpack_agent_stream_dial_failures_total{reason="not_allowed"}')
                   or 0) >= 1)
            return t if ok else None
        text = wait_for(moved, 10)
        assert text, a.get("/metrics")[2].decode()
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
        hdr = a.get("/metrics")[1]
        assert hdr.get("content-type", "").startswith("text/plain; version=0.0.4"), hdr
    finally:
        rc = a.stop()
    assert rc == 0, (rc, a.log()[-3000:])


def test_bad_status_listen(c):
    a = Agent(c.wp.dir, "st-bad", c.join, status="localhost-ish:99999")
    rc = a.proc.wait(timeout=20)
    a.stop()
    assert rc == 2 and "--status-listen" in a.log(), (rc, a.log())
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        a = Agent(c.wp.dir, "st-busy", c.join, status="127.0.0.1:%d" % busy.getsockname()[1])
        rc = a.proc.wait(timeout=20)
        a.stop()
        assert rc == 2 and "cannot listen" in a.log(), (rc, a.log())
    finally:
        busy.close()
    a = Agent(c.wp.dir, "st-none", c.join, status="none")
    try:
        assert wait_for(lambda: "tunnel up" in a.log() or a.proc.poll() is not None, 30), a.log()
        assert "status endpoint listening" not in a.log(), a.log()
    finally:
        rc = a.stop()
    assert rc == 0, a.log()[-2000:]


def main():
    r = Runner()
    c = Ctx()
    c.echo = Echo()
    c.wp = Wolfpackd(wait_ready=True, extra_args=["--heartbeat-interval", "2"])
    try:
        with open(os.path.join(c.wp.state, "admin.token")) as f:
            c.admin = f.read().strip()
        m = wait_for(lambda: JOIN_RE.search(c.wp.stdout()), 20)
        assert m, c.wp.stdout()
        c.join = shlex.split(m.group(1))
        r.run(test_not_ready_when_unreachable, c)
        r.run(test_ready_and_counters, c)
        r.run(test_bad_status_listen, c)
    finally:
        rc = c.wp.stop()
    if rc != 0:
        print("wolfpackd exited %d" % rc)
        return 1
    return r.done()


if __name__ == "__main__":
    sys.exit(main())
