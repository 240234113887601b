#!/usr/bin/env python3
"""test_agent_proxy.py — wolfpack-agent egress through an HTTP CONNECT proxy (HTTPS_PROXY).

The real wolfpackd and the real agent; between them a small CONNECT proxy
written here (Basic auth optional, counts CONNECTs and 407s, pipes bytes):
  - with HTTPS_PROXY=http://user:pass@proxy the agent gets online through the
    proxy (the proxy saw CONNECT <cp host:port> with the right credentials),
    a stream through the tunnel works end to end, the password is never logged;
  - wrong credentials: the agent logs "proxy authentication failed (407)",
    stays offline and retries with backoff (a handful of attempts in several
    seconds, not a tight loop), counted as reconnects_total{reason="proxy_failed"};
  - NO_PROXY naming the control plane host: the agent dials directly and the
    proxy sees nothing;
  - a malformed HTTPS_PROXY fails the start with a one-line error (exit 2).
"""
import base64
import os
import re
import shlex
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
USER, PASSWORD = "agent-user", "proxy-s3cret-pw"
ASAN_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=99",
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=98"}


def wait_for(pred, timeout, step=0.1):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v or time.time() >= deadline:
            return v
        time.sleep(step)


class ConnectProxy:
    """HTTP CONNECT proxy on 127.0.0.1 with optional Basic auth; records what it saw."""

    def __init__(self, user=None, password=None):
        self.auth = None
        if user is not None:
            self.auth = "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
        self.lock = threading.Lock()
        self.connects = []   # targets of accepted CONNECTs
        self.refused = []    # times of 407 answers
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self):
        with self.lock:
            self.connects = []
            self.refused = []

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 8192:
                d = c.recv(1)
                if not d:
                    return
                head += d
            lines = head.decode("latin-1").split("\r\n")
            method, target = lines[0].split()[:2]
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            if method != "CONNECT":
                c.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            if self.auth and headers.get("proxy-authorization") != self.auth:
                with self.lock:
                    self.refused.append(time.time())
                c.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                          b"Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n")
                return
            host, port = target.rsplit(":", 1)
            up = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
            with self.lock:
                self.connects.append(target)
            c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            c.settimeout(None)
            up.settimeout(None)
            t = threading.Thread(target=self._pipe, args=(up, c), daemon=True)
            t.start()
            self._pipe(c, up)
            t.join(timeout=60)
        except (OSError, ValueError):
            pass
        finally:
            c.close()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass


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
    def __init__(self, d, name, args, env_extra):
        self.log_path = os.path.join(d, "agent-%s.log" % name)
        self.logf = open(self.log_path, "wb")
        self.status_port = free_port()
        argv = [binary("wolfpack-agent"), "run"] + list(args) + [
            "--node-id", name, "--status-listen", "127.0.0.1:%d" % self.status_port,
            "--probe-interval", "60", "--log-level", "debug"]
        env = {k: v for k, v in os.environ.items()
               if k.lower() not in ("https_proxy", "http_proxy", "no_proxy", "all_proxy")}
        env.update(ASAN_ENV)
        env.update(env_extra)
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT, env=env)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def metrics(self):
        s = socket.create_connection(("127.0.0.1", self.status_port), timeout=5)
        try:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            st, _, body = read_response(s)
        finally:
            s.close()
        assert st == 200, st
        return body.decode()

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


class Ctx:
    pass


def api_get(c, path):
    s = c.wp.connect()
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n\r\n"
                   % (path, c.admin)).encode())
        st, _, body = read_response(s)
    finally:
        s.close()
    return st, body


def online(c, node):
    try:
        st, body = api_get(c, "/api/v1/nodes/" + node)
    except (OSError, EOFError):
        return False
    return st == 200 and b'"status":"online"' in body


def test_online_through_proxy(c):
    c.proxy.reset()
    url = "http://%s:%s@127.0.0.1:%d" % (USER, PASSWORD, c.proxy.port)
    a = Agent(c.wp.dir, "px-ok", c.join + ["--service", "echo=tcp:127.0.0.1:%d" % c.echo.port],
              {"HTTPS_PROXY": url})
    try:
        assert wait_for(lambda: online(c, "px-ok") or a.proc.poll() is not None, 40), a.log()[-3000:]
        assert a.proc.poll() is None, a.log()[-3000:]
        with c.proxy.lock:
            targets = list(c.proxy.connects)
        assert targets and all(t == "127.0.0.1:%d" % c.wp.port for t in targets), targets
        assert 'msg="egress through an HTTP proxy (CONNECT)" proxy=http://127.0.0.1:%d auth=basic' \
            % c.proxy.port in a.log(), a.log()[-3000:]
        # a stream through wolfpackd -> tunnel (through the proxy) -> echo
        s = c.wp.connect()
        s.sendall(("CONNECT px-ok:echo HTTP/1.1\r\nHost: px-ok:echo\r\nAuthorization: Bearer %s"
                   "\r\n\r\n" % c.admin).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            d = s.recv(1)
            assert d, head
            head += d
        assert head.startswith(b"HTTP/1.1 200"), head
        payload = os.urandom(256 * 1024)
        assert bytes(exchange(s, payload, len(payload))) == payload
        s.close()
    finally:
        rc = a.stop()
    assert rc == 0, a.log()[-3000:]
    assert PASSWORD not in a.log() and USER not in a.log()


def test_wrong_credentials_backoff(c):
    c.proxy.reset()
    url = "http://%s:wrong-password-123@127.0.0.1:%d" % (USER, c.proxy.port)
    a = Agent(c.wp.dir, "px-bad", c.join, {"https_proxy": url, "HTTPS_PROXY": "http://127.0.0.1:1"})
    try:
        # lowercase https_proxy wins over HTTPS_PROXY: the attempts reach our proxy
        assert wait_for(lambda: c.proxy.refused, 15), a.log()[-3000:]
        first = c.proxy.refused[0]
        time.sleep(max(0.0, first + 6 - time.time()))
        with c.proxy.lock:
            n = len([t for t in c.proxy.refused if t <= first + 6])
        # full-jitter backoff from 1 s: at least the immediate retry, never a tight loop
        assert 2 <= n <= 10, (n, a.log()[-3000:])
        assert a.proc.poll() is None, a.log()[-3000:]
        assert "proxy authentication failed (407)" in a.log(), a.log()[-3000:]
        assert not online(c, "px-bad")
        text = a.metrics()
        v = metric(text, 'wolfpack_agent_reconnects_total{reason="proxy_failed"}')
        assert v is not None and v >= 1, text
        assert metric(text, "wolfpack_agent_tunnel_connected") == 0, text
        assert not c.proxy.connects
    finally:
        rc = a.stop()
    assert rc == 0, a.log()[-3000:]
    assert "wrong-password-123" not in a.log()


def test_no_proxy_dials_directly(c):
    c.proxy.reset()
    a = Agent(c.wp.dir, "px-direct", c.join,
              {"HTTPS_PROXY": "http://127.0.0.1:%d" % c.proxy.port,
               "NO_PROXY": "example.com, 127.0.0.0/8"})
    try:
        assert wait_for(lambda: online(c, "px-direct") or a.proc.poll() is not None, 40), \
            a.log()[-3000:]
        assert a.proc.poll() is None, a.log()[-3000:]
        assert "NO_PROXY excludes the control plane" in a.log(), a.log()[-3000:]
        with c.proxy.lock:
            assert not c.proxy.connects and not c.proxy.refused, (c.proxy.connects, c.proxy.refused)
    finally:
        rc = a.stop()
    assert rc == 0, a.log()[-3000:]


def test_bad_proxy_url_refused(c):
    a = Agent(c.wp.dir, "px-badurl", c.join, {"HTTPS_PROXY": "ftp://127.0.0.1:21"})
    try:
        rc = a.proc.wait(timeout=20)
    finally:
        a.stop()
    assert rc == 2, (rc, a.log())
    assert "unsupported proxy scheme" in a.log(), a.log()


def main():
    r = Runner()
    c = Ctx()
    c.proxy = ConnectProxy(USER, PASSWORD)
    c.echo = Echo()
    c.wp = Wolfpackd(wait_ready=True, extra_args=["--heartbeat-interval", "2"])
    try:
        with open(os.path.join(c.wp.state, "admin.token")) as f:
            c.admin = f.read().strip()
        m = wait_for(lambda: JOIN_RE.search(c.wp.stdout()), 20)
        assert m, c.wp.stdout()
        c.join = shlex.split(m.group(1))
        r.run(test_online_through_proxy, c)
        r.run(test_wrong_credentials_backoff, c)
        r.run(test_no_proxy_dials_directly, c)
        r.run(test_bad_proxy_url_refused, c)
    finally:
        rc = c.wp.stop()
    if rc != 0:
        print("wolfpackd exited %d" % rc)
        return 1
    return r.done()


if __name__ == "__main__":
    sys.exit(main())
