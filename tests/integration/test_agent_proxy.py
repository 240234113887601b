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
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wolfpack_test import (Agent, EchoServer, Runner, Wolfpackd, accept_loop, admin_token,  # noqa: E402
                           connect_stream, exchange, get_node, join_args, metric, pipe, wait_for)

USER, PASSWORD = "agent-user", "proxy-s3cret-pw"


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
        accept_loop(self.sock, self._serve)

    def reset(self):
        with self.lock:
            self.connects = []
            self.refused = []

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
            t = threading.Thread(target=pipe, args=(up, c), daemon=True)
            t.start()
            pipe(c, up)
            t.join(timeout=60)
        except (OSError, ValueError):
            pass
        finally:
            c.close()



class Ctx:
    pass


def online(c, node):
    n = get_node(c.wp, c.admin, node)
    return n is not None and n.get("status") == "online"


def proxy_agent(c, name, args, env):
    return Agent(c.wp.dir, name, ["run"] + list(args) + ["--node-id", name, "--probe-interval", "60",
                                                         "--log-level", "debug"],
                 env=env, status="auto")


def test_online_through_proxy(c):
    c.proxy.reset()
    url = "http://%s:%s@127.0.0.1:%d" % (USER, PASSWORD, c.proxy.port)
    a = proxy_agent(c, "px-ok", c.join + ["--service", "echo=tcp:127.0.0.1:%d" % c.echo.port],
                    {"HTTPS_PROXY": url})
    try:
        assert a.wait_online(c.wp, c.admin, timeout=40), a.log()[-3000:]
        with c.proxy.lock:
            targets = list(c.proxy.connects)
        assert targets and all(t == "127.0.0.1:%d" % c.wp.port for t in targets), targets
        assert 'msg="egress through an HTTP proxy (CONNECT)" proxy=http://127.0.0.1:%d auth=basic' \
            % c.proxy.port in a.log(), a.log()[-3000:]
        # a stream through wolfpackd -> tunnel (through the proxy) -> echo
        s, head = connect_stream(c.wp, "px-ok:echo", c.admin)
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
    a = proxy_agent(c, "px-bad", c.join, {"https_proxy": url, "HTTPS_PROXY": "http://127.0.0.1:1"})
    try:
        # lowercase https_proxy wins over HTTPS_PROXY: the attempts reach our proxy
        assert wait_for(lambda: c.proxy.refused, 15), a.log()[-3000:]
        first = c.proxy.refused[0]
        time.sleep(max(0.0, first + 6 - time.time()))
        with c.proxy.lock:
            n = len([t for t in c.proxy.refused if t <= first + 6])
        # full-jitter backoff from 1 s: at least the immediate retry, never a tight loop
        assert 2 <= n <= 10, (n, a.log()[-3000:])
        assert a.alive(), a.log()[-3000:]
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
    a = proxy_agent(c, "px-direct", c.join,
                    {"HTTPS_PROXY": "http://127.0.0.1:%d" % c.proxy.port,
                     "NO_PROXY": "example.com, 127.0.0.0/8"})
    try:
        assert a.wait_online(c.wp, c.admin, timeout=40), a.log()[-3000:]
        assert "NO_PROXY excludes the control plane" in a.log(), a.log()[-3000:]
        with c.proxy.lock:
            assert not c.proxy.connects and not c.proxy.refused, (c.proxy.connects, c.proxy.refused)
    finally:
        rc = a.stop()
    assert rc == 0, a.log()[-3000:]


def test_bad_proxy_url_refused(c):
    a = proxy_agent(c, "px-badurl", c.join, {"HTTPS_PROXY": "ftp://127.0.0.1:21"})
    try:
        rc = a.wait(timeout=20)
    finally:
        a.stop()
    assert rc == 2, (rc, a.log())
    assert "unsupported proxy scheme" in a.log(), a.log()


def main():
    r = Runner()
    c = Ctx()
    c.proxy = ConnectProxy(USER, PASSWORD)
    c.echo = EchoServer()
    c.wp = Wolfpackd(wait_ready=True, extra_args=["--heartbeat-interval", "2"])
    try:
        c.admin = admin_token(c.wp)
        c.join = join_args(c.wp)
        r.run(test_online_through_proxy, c)
        r.run(test_wrong_credentials_backoff, c)
        r.run(test_no_proxy_dials_directly, c)
        r.run(test_bad_proxy_url_refused, c)
    finally:
        rc = r.finish(c.wp)
    return rc


if __name__ == "__main__":
    sys.exit(main())
