#!/usr/bin/env python3
"""test_proxy.py — two-level routing through a node's tunnel, real binaries.

A real wolfpackd (TLS, embedded PostgreSQL) and a real wolfpack-agent whose
services are the fakes: FakeWolf (unix socket), FakeMoonlightWeb and
FakeSandbox (the agent's `sandbox` service with --sandbox-address 127.0.0.1).
Sessions are rows inserted with psql (owner = a user token), so this test does
not depend on the scheduler. Covered:

  * node proxy (admin) to Wolf's API and to Moonlight Web; a service the agent
    does not allow → 502 upstream_refused with details.reason not_allowed; an
    unknown node → 404; a registered node that is not connected → 502
    node_unreachable; a user token → 403;
  * the session's Moonlight Web: the configured credentials are injected, the
    client's Authorization / Cookie never reach the node;
  * a WebSocket through /moonlight/api/host/stream echoes 10,000 messages in
    order; ?access_token= works for WebSocket upgrades;
  * pairing NDJSON is streamed: the first line reaches the client while the
    fake still holds the second; Server-Sent Events arrive as they are sent;
  * the sandbox: a 100 MiB screenshot arrives intact (SHA-256) while
    wolfpackd's RSS grows < 32 MiB; clipboard POST then GET;
  * user B cannot reach user A's session (404); bad ids 400; a stopped
    session 409 session_not_running;
  * a service that never answers → 504 upstream_timeout (--proxy-timeout 2).
"""
import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wolfpack_test import (Agent, Runner, Wolfpackd, admin_token, exchange, free_port,  # noqa: E402
                           join_args, read_response, wait_for)
from fake_moonlight import FakeMoonlightWeb  # noqa: E402
from fake_sandbox import FakeSandbox, _chunks  # noqa: E402
from fake_wolf import FakeWolf  # noqa: E402

NODE = "px-node"
CREDS = "ml-credentials-5f2a9c"
MiB = 1 << 20


class Ctx:
    pass


def call(c, method, path, token=None, body=None, headers=None, timeout=15):
    """One request on a fresh connection; (status, headers, parsed JSON or raw bytes)."""
    s = c.wp.connect(timeout=timeout)
    try:
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = "%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n" % (method, path, len(data))
        if token is not None:
            req += "Authorization: Bearer %s\r\n" % token
        for k, v in (headers or {}).items():
            req += "%s: %s\r\n" % (k, v)
        s.sendall(req.encode() + b"\r\n" + data)
        st, h, raw = read_any(s, timeout)
    finally:
        s.close()
    try:
        return st, h, json.loads(raw)
    except ValueError:
        return st, h, raw


class Reader:
    """Buffered reads over a (TLS) socket: lines, exact counts, chunked bodies."""

    def __init__(self, s, timeout):
        self.s = s
        self.buf = b""
        s.settimeout(timeout)

    def _more(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError("closed; have %r" % self.buf[:200])
        self.buf += d

    def line(self):
        while b"\r\n" not in self.buf:
            self._more()
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln

    def exact(self, n):
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def head(self):
        status = int(self.line().split()[1])
        h = {}
        while True:
            ln = self.line()
            if not ln:
                return status, h
            k, v = ln.decode("latin-1").split(":", 1)
            h[k.strip().lower()] = v.strip()

    def chunk(self):
        """Next chunk of a chunked body (b"" at the end)."""
        n = int(self.line().split(b";")[0], 16)
        data = self.exact(n) if n else b""
        if n == 0:
            while self.line():
                pass
            return b""
        self.exact(2)
        return data


def read_any(s, timeout):
    r = Reader(s, timeout)
    st, h = r.head()
    if h.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            d = r.chunk()
            if not d:
                break
            body += d
        return st, h, body
    return st, h, r.exact(int(h.get("content-length", "0")))


def psql(c, sql):
    run = os.path.join(c.wp.state, "postgres", "run")
    r = subprocess.run(["psql", "-h", run, "-U", "wolfpack", "-d", "wolfpack", "-qAtc", sql],
                       check=True, capture_output=True, timeout=30)
    return r.stdout.decode().strip()


def new_session(c, owner_id, status="running", container="wolfpack-px1"):
    return psql(c, "INSERT INTO sessions (owner_token_id, node_id, status, sandbox_container) "
                   "VALUES ('%s', '%s', '%s', '%s') RETURNING id" % (owner_id, NODE, status, container)
                ).splitlines()[0]


def setup(c):
    c.dir = tempfile.mkdtemp(prefix="wp-proxy-")
    c.wolf_sock = os.path.join(c.dir, "wolf.sock")
    c.wolf = FakeWolf(c.wolf_sock).start()
    c.ml = FakeMoonlightWeb(free_port(), credentials=CREDS, keepalive_s=0.5).start()
    c.sb = FakeSandbox(free_port()).start()
    c.wp = Wolfpackd(extra_args=["--proxy-timeout", "2"],
                     env={"WOLFPACK_MOONLIGHT_CREDENTIALS": CREDS}, wait_ready=True)
    c.admin = admin_token(c.wp)
    args = ["run"] + join_args(c.wp) + ["--node-id", NODE, "--service", "wolf=unix:" + c.wolf_sock,
             "--service", "moonlight=tcp:127.0.0.1:%d" % c.ml.port,
             "--sandbox-port", str(c.sb.port), "--sandbox-address", "127.0.0.1",
             "--status-listen", "none", "--log-level", "debug"]
    c.agent = Agent(c.dir, NODE, args)
    assert c.agent.wait_online(c.wp, c.admin, timeout=30, until=lambda n: n.get("connected_replica")), \
        c.agent.log()[-3000:]
    st, _, b = call(c, "POST", "/api/v1/tokens", c.admin, {"name": "alice", "role": "user"})
    assert st == 201, (st, b)
    c.alice, c.alice_id = b["token"], b["id"]
    st, _, b = call(c, "POST", "/api/v1/tokens", c.admin, {"name": "bob", "role": "user"})
    assert st == 201, (st, b)
    c.bob, c.bob_id = b["token"], b["id"]
    c.sid = new_session(c, c.alice_id)
    c.sid_stopped = new_session(c, c.alice_id, status="stopped")


def teardown(c):
    if getattr(c, "agent", None):
        try:
            c.agent.stop(timeout=30)
        except RuntimeError:
            pass  # ignored SIGTERM: stop() killed it
    rc = c.wp.stop() if getattr(c, "wp", None) else 0
    for f in ("wolf", "ml", "sb"):
        if getattr(c, f, None):
            getattr(c, f).stop()
    assert rc == 0, "wolfpackd exited %s:\n%s" % (rc, c.wp.log()[-4000:])


# ---------------------------------------------------------------------------


def test_node_proxy(c):
    st, h, b = call(c, "GET", "/api/v1/nodes/%s/proxy/wolf/api/v1/lobbies" % NODE, c.admin)
    assert st == 200 and b.get("success") is True and "lobbies" in b, (st, b)
    req = c.wolf.requests[-1]
    assert c.admin not in repr(req), "the admin token reached Wolf"
    hdrs = {k.lower(): v for k, v in (req.get("headers") or {}).items()}
    assert hdrs.get("host") == "wolf" and "authorization" not in hdrs, hdrs
    # Moonlight Web through the node proxy gets the credentials too
    st, _, b = call(c, "GET", "/api/v1/nodes/%s/proxy/moonlight/api/hosts?x=1" % NODE, c.admin)
    assert st == 200 and b["hosts"][0]["name"] == "fake-wolf", (st, b)
    # query string passed on
    assert any(r["path"] == "/api/hosts?x=1" for r in c.ml.requests), c.ml.requests[-1]


def test_node_proxy_errors(c):
    st, _, b = call(c, "GET", "/api/v1/nodes/%s/proxy/nosuch/x" % NODE, c.admin)
    assert st == 502 and b["error"]["code"] == "upstream_refused", (st, b)
    assert b["error"]["details"]["reason"] == "not_allowed", b
    st, _, b = call(c, "GET", "/api/v1/nodes/ghost/proxy/wolf/x", c.admin)
    assert st == 404 and b["error"]["code"] == "not_found", (st, b)
    st, _, b = call(c, "POST", "/api/v1/nodes", c.admin, {"id": "px-offline", "max_sessions": 1})
    assert st == 201, (st, b)
    st, _, b = call(c, "GET", "/api/v1/nodes/px-offline/proxy/wolf/x", c.admin)
    assert st == 502 and b["error"]["code"] == "node_unreachable", (st, b)
    st, _, b = call(c, "GET", "/api/v1/nodes/%s/proxy/wolf/api/v1/lobbies" % NODE, c.alice)
    assert st == 403, (st, b)
    st, _, b = call(c, "GET", "/api/v1/nodes/%s/proxy/wolf/api/v1/lobbies" % NODE)
    assert st == 401, (st, b)
    st, _, b = call(c, "GET", "/api/v1/nodes/%s/proxy/Bad_Svc/x" % NODE, c.admin)
    assert st == 400, (st, b)


def test_upstream_timeout(c):
    c.wolf.hang("GET", "/api/v1/apps")
    try:
        t0 = time.time()
        st, _, b = call(c, "GET", "/api/v1/nodes/%s/proxy/wolf/api/v1/apps" % NODE, c.admin)
        took = time.time() - t0
    finally:
        c.wolf.clear_faults()
    assert st == 504 and b["error"]["code"] == "upstream_timeout", (st, b)
    assert 1.5 <= took < 10, took


def test_session_isolation(c):
    base = "/api/v1/sessions/%s/moonlight/api/hosts"
    st, _, b = call(c, "GET", base % c.sid, c.bob)
    assert st == 404 and b["error"]["code"] == "not_found", (st, b)
    st, _, b = call(c, "GET", "/api/v1/sessions/%s/sandbox/clipboard" % c.sid, c.bob)
    assert st == 404, (st, b)
    st, _, b = call(c, "GET", base % "00000000-0000-4000-8000-000000000000", c.alice)
    assert st == 404, (st, b)
    st, _, b = call(c, "GET", base % "not-a-uuid", c.alice)
    assert st == 400, (st, b)
    st, _, b = call(c, "GET", base % c.sid_stopped, c.alice)
    assert st == 409 and b["error"]["code"] == "session_not_running", (st, b)
    st, _, b = call(c, "GET", base % c.sid)
    assert st == 401, (st, b)
    st, _, b = call(c, "GET", base % c.sid, c.alice)
    assert st == 200, (st, b)
    st, _, b = call(c, "GET", base % c.sid, c.admin)
    assert st == 200, (st, b)


def test_credentials_injected(c):
    n0 = len(c.ml.requests)
    st, _, b = call(c, "GET", "/api/v1/sessions/%s/moonlight/api/hosts" % c.sid, c.alice,
                    headers={"Cookie": "wolfpack_token=%s" % c.alice, "Proxy-Authorization": "x"})
    assert st == 200, (st, b)
    reqs = c.ml.requests[n0:]
    assert len(reqs) == 1, reqs
    h = reqs[0]["headers"]
    assert h.get("authorization") == "Bearer " + CREDS, h
    assert "cookie" not in h and "proxy-authorization" not in h, h
    assert c.alice not in json.dumps(reqs[0]), "the wolfpack token reached the node"
    assert h.get("x-forwarded-for") == "127.0.0.1" and h.get("x-forwarded-proto") == "https", h
    assert h.get("host") == "moonlight", h


def ws_frame(op, payload):
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        hdr = struct.pack(">BB", 0x80 | op, 0x80 | n)
    elif n < 65536:
        hdr = struct.pack(">BBH", 0x80 | op, 0x80 | 126, n)
    else:
        hdr = struct.pack(">BBQ", 0x80 | op, 0x80 | 127, n)
    return hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_open(c, path, token=None):
    s = c.wp.connect(timeout=20)
    key = base64.b64encode(os.urandom(16)).decode()
    req = ("GET %s HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (path, key))
    if token:
        req += "Authorization: Bearer %s\r\n" % token
    s.sendall((req + "\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(1)
        if not d:
            raise EOFError(head)
        head += d
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].split()[1] == "101", head
    accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                                           .encode()).digest()).decode()
    assert ("Sec-WebSocket-Accept: " + accept) in lines, lines
    return s


def ws_parse(data):
    """Unmasked server frames -> list of (op, payload)."""
    out, i = [], 0
    while i + 2 <= len(data):
        op, n = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if n == 126:
            n = struct.unpack(">H", data[i:i + 2])[0]
            i += 2
        elif n == 127:
            n = struct.unpack(">Q", data[i:i + 8])[0]
            i += 8
        out.append((op, data[i:i + n]))
        i += n
    return out


def test_websocket_echo_10000(c):
    s = ws_open(c, "/api/v1/sessions/%s/moonlight/api/host/stream" % c.sid, c.alice)
    try:
        msgs = [("m%05d" % i).encode() for i in range(10000)]
        payload = b"".join(ws_frame(1, m) for m in msgs)
        expect = sum(2 + len(m) for m in msgs)
        t0 = time.time()
        got = exchange(s, payload, expect, timeout=60)
        print("timing ws_10000_s %.2f" % (time.time() - t0), flush=True)
        frames = ws_parse(got)
        assert len(frames) == 10000, (len(frames), len(got), expect)
        assert [p for _, p in frames] == msgs, "echoes out of order"
        s.sendall(ws_frame(8, struct.pack(">H", 1000)))
        frames = ws_parse(exchange(s, b"", 4, timeout=10))
        assert frames and frames[0][0] == 8, frames
    finally:
        s.close()
    # browsers cannot set headers on WebSockets: ?access_token= (stripped before forwarding)
    s = ws_open(c, "/api/v1/sessions/%s/moonlight/api/host/stream?access_token=%s&v=2"
                % (c.sid, c.alice))
    try:
        got = exchange(s, ws_frame(2, b"\x00\x01binary"), 10, timeout=20)
        assert ws_parse(got) == [(2, b"\x00\x01binary")], got
    finally:
        s.close()
    paths = [r["path"] for r in c.ml.requests if r["path"].startswith("/api/host/stream")]
    assert "/api/host/stream?v=2" in paths and not any("access_token" in p for p in paths), paths
    # without any token: 401, and the node never sees the request
    s = c.wp.connect(timeout=10)
    try:
        s.sendall(("GET /api/v1/sessions/%s/moonlight/api/host/stream HTTP/1.1\r\nHost: x\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
                   "dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" % c.sid).encode())
        st, _, _ = read_response(s)
        assert st == 401, st
    finally:
        s.close()


def test_ndjson_pairing_streamed(c):
    c.ml.hold_pair = True
    s = c.wp.connect(timeout=20)
    try:
        s.sendall(("POST /api/v1/sessions/%s/moonlight/api/pair HTTP/1.1\r\nHost: x\r\n"
                   "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                   "Content-Length: 13\r\n\r\n{\"host_id\":1}" % (c.sid, c.alice)).encode())
        r = Reader(s, 20)
        st, h = r.head()
        assert st == 200 and h.get("content-type") == "application/x-ndjson", (st, h)
        first = r.chunk()
        assert first == b'{"Pin":"1234"}\n', first
        assert not c.ml.pair_times, "Paired was sent before the Pin reached us: buffered"
        c.ml.release_pair()
        rest = b""
        while True:
            d = r.chunk()
            if not d:
                break
            rest += d
        assert json.loads(rest)["Paired"]["paired"] == "Paired", rest
    finally:
        c.ml.hold_pair = False
        s.close()


def test_sse(c):
    s = c.wp.connect(timeout=20)
    try:
        s.sendall(("GET /api/v1/sessions/%s/moonlight/api/events HTTP/1.1\r\nHost: x\r\n"
                   "Authorization: Bearer %s\r\nAccept: text/event-stream\r\n\r\n"
                   % (c.sid, c.alice)).encode())
        r = Reader(s, 10)
        st, h = r.head()
        assert st == 200 and h.get("content-type") == "text/event-stream", (st, h)
        text = b""
        while text.count(b"event: hello") < 3:
            text += r.chunk()
        assert wait_for(lambda: c.ml.sse_clients() > 0, 5)
        c.ml.push_event({"lobby": "started"}, event="lobby")
        while b"event: lobby" not in text:
            text += r.chunk()
        assert b'data: {"lobby": "started"}' in text, text
    finally:
        s.close()


def test_sandbox_screenshot_100mib(c):
    n = 100 * MiB
    want = hashlib.sha256()
    for part in _chunks(n):
        want.update(part)
    rss0 = c.wp.rss_kb()
    peak = [rss0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], c.wp.rss_kb())
            except OSError:
                pass
            time.sleep(0.05)
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    s = c.wp.connect(timeout=60)
    try:
        s.sendall(("GET /api/v1/sessions/%s/sandbox/screenshot?size=%d HTTP/1.1\r\nHost: x\r\n"
                   "Authorization: Bearer %s\r\n\r\n" % (c.sid, n, c.alice)).encode())
        r = Reader(s, 60)
        t0 = time.time()
        st, h = r.head()
        assert st == 200 and h.get("content-type") == "image/png", (st, h)
        assert h.get("content-length") == str(n), h
        got = hashlib.sha256()
        left = n - len(r.buf)
        got.update(r.buf)
        r.buf = b""
        while left > 0:
            d = s.recv(min(262144, left))
            if not d:
                raise EOFError("%d bytes missing" % left)
            got.update(d)
            left -= len(d)
        took = time.time() - t0
    finally:
        stop.set()
        t.join()
        s.close()
    assert got.hexdigest() == want.hexdigest(), "screenshot corrupted"
    growth = (peak[0] - rss0) / 1024.0
    print("timing screenshot_100mib_s %.2f rss_growth_mib %.1f" % (took, growth), flush=True)
    assert growth < 32, "wolfpackd RSS grew %.1f MiB" % growth
    # the container name travelled in the preamble; the agent dialled --sandbox-address
    assert any(r["path"].startswith("/screenshot") for r in c.sb.requests)


def test_sandbox_clipboard(c):
    path = "/api/v1/sessions/%s/sandbox/clipboard" % c.sid
    st, _, b = call(c, "POST", path, c.alice, body=b"hello \xe2\x9c\x93 clipboard",
                    headers={"Content-Type": "text/plain"})
    assert st == 200 and b == {"ok": True}, (st, b)
    st, h, b = call(c, "GET", path, c.alice)
    assert st == 200 and b == "hello \u2713 clipboard".encode(), (st, b)
    # a chunked upload is re-framed (chunked) towards the node; this fake then answers 411
    s = c.wp.connect(timeout=20)
    try:
        s.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" % (path, c.alice)).encode())
        st, _, _ = read_any(s, 20)
        assert st == 411, st
    finally:
        s.close()


def main():
    r = Runner()
    c = Ctx()
    try:
        setup(c)
        for t in (test_node_proxy, test_node_proxy_errors, test_upstream_timeout,
                  test_session_isolation, test_credentials_injected, test_websocket_echo_10000,
                  test_ndjson_pairing_streamed, test_sse, test_sandbox_screenshot_100mib,
                  test_sandbox_clipboard):
            r.run(t, c)
    finally:
        try:
            teardown(c)
        except Exception as e:  # noqa: BLE001
            print("FAIL teardown: %s" % e, flush=True)
            r.failed += 1
    return r.done()


if __name__ == "__main__":
    sys.exit(main())
