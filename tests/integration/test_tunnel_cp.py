#!/usr/bin/env python3
"""test_tunnel_cp.py — wolfpackd's tunnel endpoint and CONNECT bridge, end to end.

The real wolfpackd (TLS, embedded PostgreSQL) against fake_agent.py (a
stdlib-only agent written from PROTOCOL.md): an agent joins with the join
token and gets a complete welcome; an admin CONNECTs through the tunnel to a
local echo server (1 MiB round trip, byte exact, half-close both ways);
refused / not allow-listed services give 502 naming the agent's reason,
unknown nodes 404, non-admin tokens 403, no token 407; the upgrade answers
PROTOCOL.md §2.2's errors; a second agent instance replaces the first
(goaway replaced, 4001), the same instance again is a duplicate (4002); a
token bound to another node id is refused (forbidden, 1008); revoking a
token ends its tunnel within seconds; no hello within 10 s ends the tunnel
(hello_timeout); garbage frames and bad hellos (gpu.vendor "mixed" included)
get a mux GoAway / protocol_error + 1002 while wolfpackd keeps serving; SIGTERM sends goaway shutdown and wolfpackd
exits 0. No token ever appears in the log.
"""
import json
import os
import re
import select
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake_agent import FakeAgent  # noqa: E402
from wolfpack_test import Runner, Wolfpackd, free_port, read_response  # noqa: E402


class Ctx:
    pass


def call(wp, method, path, token=None, body=None):
    s = wp.connect()
    data = b"" if body is None else json.dumps(body).encode()
    req = "%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n" % (method, path, len(data))
    if token is not None:
        req += "Authorization: Bearer %s\r\n" % token
    s.sendall(req.encode() + b"\r\n" + data)
    status, headers, raw = read_response(s)
    s.close()
    return status, headers, (json.loads(raw) if raw else None)


class EchoServer:
    """Threaded TCP echo server; half-closes its side after the client's EOF."""

    def __init__(self):
        self.eofs = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.addr = self.sock.getsockname()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    self.eofs += 1
                    break
                c.sendall(d)
            c.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            c.close()


class BannerServer(EchoServer):
    """Sends "banner\\n", half-closes at once, then records what it receives until EOF."""

    def __init__(self):
        self.received = []
        super().__init__()

    def _serve(self, c):
        try:
            c.sendall(b"banner\n")
            c.shutdown(socket.SHUT_WR)
            buf = b""
            while True:
                d = c.recv(65536)
                if not d:
                    break
                buf += d
            self.received.append(buf)
        except OSError:
            pass
        finally:
            c.close()


def connect_to(c, target, token=None, header="Proxy-Authorization"):
    """CONNECT target; returns (socket, status, headers, body)."""
    s = c.wp.connect(timeout=20)
    req = "CONNECT %s HTTP/1.1\r\nHost: %s\r\n" % (target, target)
    if token is not None:
        req += "%s: Bearer %s\r\n" % (header, token)
    s.sendall((req + "\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(1)  # byte by byte: bytes after the head belong to the stream
        if not chunk:
            raise EOFError("closed before the CONNECT answer: %r" % buf)
        buf += chunk
    lines = buf.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = b""
    n = int(headers.get("content-length", "0"))
    while len(body) < n:
        chunk = s.recv(n - len(body))
        if not chunk:
            break
        body += chunk
    return s, status, headers, (json.loads(body) if body else None)


def new_agent(c, node_id, token=None, **kw):
    a = FakeAgent(c.wp.port, c.wp.ca_file, c.join if token is None else token, node_id,
                  services=c.services, **kw)
    c.agents.append(a)
    return a


def wait_for(pred, timeout=10, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


# ---------------------------------------------------------------------------


def test_hello_timeout_start(c):
    """Opens a tunnel that never says hello; test_hello_timeout_end checks it later."""
    a = new_agent(c, "silent", send_hello=False)
    st, _, _ = a.connect()
    assert st == 101, st
    c.silent, c.silent_t0 = a, time.time()


def test_agent_joins(c):
    a = new_agent(c, "gpu-a")
    st, h, _ = a.connect()
    assert st == 101, st
    assert h.get("sec-websocket-protocol") == "wolfpack.v1", h
    assert "sec-websocket-extensions" not in h
    w = a.wait_welcome()
    assert w["type"] == "welcome" and w["protocol"] == 1 and w["node_id"] == "gpu-a", w
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", w["replica_id"]), w
    assert w["replica_count"] == 1 and w["heartbeat_interval_ms"] == 1000, w
    assert abs(w["server_time"] - time.time() * 1000) < 5000, w
    assert isinstance(w.get("version"), str)
    c.a = a
    # hello registered the node in the database, heartbeats keep it online
    def online():
        st, _, b = call(c.wp, "GET", "/api/v1/nodes/gpu-a", c.admin)
        return st == 200 and b["status"] == "online" and b
    node = wait_for(online, timeout=10)
    assert node, call(c.wp, "GET", "/api/v1/nodes/gpu-a", c.admin)
    assert node["version"] == "0.0.1-fake" and node["connected_replica"] == w["replica_id"], node
    assert wait_for(lambda: c.a.hb_seq >= 2, timeout=5), c.a.hb_seq
    assert not c.a.goaways


def echo_roundtrip(c, target, size, token=None, header="Proxy-Authorization"):
    """Sends size random bytes through CONNECT to the echo service and reads them back.

    (Python's SSLSocket.shutdown() drops TLS, so TLS half-close is tested with the
    banner service instead; here the client reads exactly what it sent, then closes.)
    """
    s, st, _, body = connect_to(c, target, c.admin if token is None else token, header)
    assert st == 200, (st, body)
    data = os.urandom(size)
    got = bytearray()
    # One thread, non-blocking: an SSLSocket must not be read and written from two threads.
    s.setblocking(False)
    sent = 0
    deadline = time.time() + 30
    while len(got) < len(data) and time.time() < deadline:
        wl = [s] if sent < len(data) else []
        r, w, _ = select.select([s], wl, [], 1)
        if s in w or (sent < len(data) and not r):
            try:
                sent += s.send(data[sent:sent + 65536])
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
        while True:
            try:
                d = s.recv(262144)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            if not d:
                deadline = 0
                break
            got += d
    s.close()
    return data, bytes(got)


def test_connect_echo_1mib(c):
    data, got = echo_roundtrip(c, "gpu-a:echo", 1024 * 1024)
    assert len(got) == len(data), (len(got), len(data))
    assert got == data, "bytes differ"
    # Authorization works as well as Proxy-Authorization
    data, got = echo_roundtrip(c, "gpu-a:echo", 10, header="Authorization")
    assert got == data, (data, got)
    # the echo service saw EOF when the client closed: client close -> FIN -> shutdown
    assert wait_for(lambda: c.echo.eofs >= 2, timeout=5), c.echo.eofs


def test_connect_half_close(c):
    """The service half-closes first: the client gets EOF, yet can still send."""
    s, st, _, body = connect_to(c, "gpu-a:banner", c.admin)
    assert st == 200, (st, body)
    s.settimeout(10)
    got = b""
    while True:
        d = s.recv(1024)
        if not d:
            break
        got += d
    assert got == b"banner\n", got
    s.sendall(b"after-fin")
    s.close()
    assert wait_for(lambda: c.banner.received == [b"after-fin"], timeout=5), c.banner.received


def test_connect_refusals(c):
    s, st, _, b = connect_to(c, "gpu-a:closed", c.admin)
    s.close()
    assert st == 502 and b["error"]["code"] == "refused", (st, b)
    s, st, _, b = connect_to(c, "gpu-a:ssh", c.admin)
    s.close()
    assert st == 502 and b["error"]["code"] == "not_allowed", (st, b)
    assert "not_allowed" in b["error"]["message"]
    s, st, _, b = connect_to(c, "nosuch-node:echo", c.admin)
    s.close()
    assert st == 404 and b["error"]["code"] == "node_not_connected", (st, b)
    for bad in ("gpu-a", "gpu-a:", "GPU:echo", "gpu-a:echo:1", "gpu-a:" + "x" * 40):
        s, st, _, b = connect_to(c, bad, c.admin)
        s.close()
        assert st in (400, 404), (bad, st, b)
    # the tunnel is still fine
    data, got = echo_roundtrip(c, "gpu-a:echo", 1000)
    assert got == data


def test_connect_auth(c):
    s, st, h, b = connect_to(c, "gpu-a:echo", None)
    s.close()
    assert st == 407 and h.get("proxy-authenticate", "").startswith("Bearer"), (st, h)
    s, st, _, b = connect_to(c, "gpu-a:echo", "wpadm_bogus")
    s.close()
    assert st == 407, st
    for tok in (c.user, c.join):
        s, st, _, b = connect_to(c, "gpu-a:echo", tok)
        s.close()
        assert st == 403 and b["error"]["code"] == "forbidden", (st, b)


def test_roles(c):
    st, _, b = call(c.wp, "GET", "/api/v1/tokens", c.join)
    assert st == 403, (st, b)
    st, _, b = call(c.wp, "GET", "/api/v1/nodes", c.join)
    assert st == 403, (st, b)
    a = new_agent(c, "gpu-user", token=c.user)
    st, _, b = a.connect()
    assert st == 403 and json.loads(b)["error"]["code"] == "forbidden", (st, b)
    a = new_agent(c, "gpu-admin", token=c.admin)
    st, _, b = a.connect()
    assert st == 403, st


def test_upgrade_errors(c):
    a = new_agent(c, "x")
    st, h, b = a.connect(path="/api/v1/tunnel?token=abc")
    assert st == 400 and json.loads(b)["error"]["code"] == "bad_request", (st, b)
    a = new_agent(c, "x", token="wpagt_not_a_real_token")
    st, h, b = a.connect()
    assert st == 401 and "realm=\"wolfpack\"" in h.get("www-authenticate", ""), (st, h)
    a = new_agent(c, "x", token=None)
    a.token = None
    st, h, b = a.connect()
    assert st == 401, st
    a = new_agent(c, "x")
    st, h, b = a.connect(subprotocol="wolfpack.v9")
    assert st == 400 and json.loads(b)["error"]["code"] == "unsupported_subprotocol", (st, b)
    st, h, _ = call(c.wp, "POST", "/api/v1/tunnel", c.join)
    assert st == 405 and h.get("allow") == "GET", (st, h)


def test_replaced_and_duplicate(c):
    b = new_agent(c, "gpu-a")
    st, _, _ = b.connect()
    assert st == 101
    b.wait_welcome()
    g = c.a.wait_goaway(5)
    assert g["reason"] == "replaced", g
    c.a.wait_closed(5)
    assert c.a.close_code == 4001, c.a.close_code
    # same instance id again: welcome, then goaway duplicate on the NEW tunnel
    d = new_agent(c, "gpu-a", instance_id=b.instance_id)
    st, _, _ = d.connect()
    assert st == 101
    d.wait_welcome()
    g = d.wait_goaway(5)
    assert g["reason"] == "duplicate", g
    d.wait_closed(5)
    assert d.close_code == 4002, d.close_code
    assert not b.goaways
    data, got = echo_roundtrip(c, "gpu-a:echo", 50000)
    assert got == data
    c.a = b


def test_bound_token(c):
    st, _, tok = call(c.wp, "POST", "/api/v1/tokens", c.admin,
                      {"name": "bound", "role": "agent", "node_id": "gpu-bound"})
    assert st == 201, (st, tok)
    c.secrets.append(tok["token"])
    a = new_agent(c, "gpu-other", token=tok["token"])
    st, _, _ = a.connect()
    assert st == 101
    g = a.wait_goaway(5)
    assert g["reason"] == "forbidden", g
    a.wait_closed(5)
    assert a.close_code == 1008 and a.welcome is None, (a.close_code, a.welcome)
    a = new_agent(c, "gpu-bound", token=tok["token"])
    st, _, _ = a.connect()
    assert st == 101
    a.wait_welcome()
    c.bound, c.bound_id = a, tok["id"]


def test_revoked_token_disconnects(c):
    t0 = time.time()
    st, _, _ = call(c.wp, "DELETE", "/api/v1/tokens/" + c.bound_id, c.admin)
    assert st == 204, st
    g = c.bound.wait_goaway(5)
    assert g["reason"] == "forbidden", g
    c.bound.wait_closed(5)
    assert time.time() - t0 < 5
    assert c.bound.close_code == 1008, c.bound.close_code
    # and it cannot come back
    a = new_agent(c, "gpu-bound", token=c.bound.token)
    st, _, _ = a.connect()
    assert st == 401, st


def test_garbage_frames(c):
    a = new_agent(c, "gpu-garbage")
    st, _, _ = a.connect()
    assert st == 101
    a.wait_welcome()
    a.send_binary_raw(b"\xff" * 24)  # bad version byte
    g = a.wait_goaway(5)
    assert g["reason"] == "protocol_error", g
    a.wait_closed(8)
    assert a.close_code == 1002, a.close_code
    assert a.mux_goaway == 1, a.mux_goaway
    # binary before hello is a protocol error too
    a = new_agent(c, "gpu-early", send_hello=False)
    st, _, _ = a.connect()
    assert st == 101
    a.send_binary_raw(b"\x00" * 12)
    g = a.wait_goaway(5)
    assert g["reason"] == "protocol_error", g
    # invalid hello
    a = new_agent(c, "gpu-bad", hello={"type": "hello", "protocol": 1, "node_id": "BAD ID"})
    st, _, _ = a.connect()
    assert st == 101
    g = a.wait_goaway(5)
    assert g["reason"] == "protocol_error" and "node_id" in g.get("message", ""), g
    # gpu.vendor is nvidia|amd|intel|none (PROTOCOL.md §4.2): "mixed" is refused like any unknown
    for vendor in ("mixed", "NVIDIA"):
        a = new_agent(c, "gpu-mixed", hello_extra={"gpu": {"vendor": vendor, "devices": []}})
        st, _, _ = a.connect()
        assert st == 101
        g = a.wait_goaway(5)
        assert g["reason"] == "protocol_error" and "gpu.vendor" in g.get("message", ""), g
        assert "mixed" not in g["message"], g
    st, _, n = call(c.wp, "GET", "/api/v1/nodes/gpu-mixed", c.admin)
    assert st == 404, (st, n)  # a refused hello registers nothing
    # wolfpackd keeps serving, and the good tunnel is untouched
    st, _, _ = c.wp.get("/healthz")
    assert st == 200
    data, got = echo_roundtrip(c, "gpu-a:echo", 100000)
    assert got == data


def test_hello_timeout_end(c):
    a = c.silent
    left = 12 - (time.time() - c.silent_t0)
    g = a.wait_goaway(max(left, 1))
    assert g["reason"] == "hello_timeout", g
    a.wait_closed(8)
    assert a.close_code == 1008, a.close_code
    assert time.time() - c.silent_t0 >= 9.5


def test_sigterm_goaway(c):
    a = c.a
    assert not a.goaways
    rc = c.wp.stop()
    c.stopped = True
    assert rc == 0, "exit %d\n%s" % (rc, c.wp.log()[-3000:])
    a.wait_closed(5)
    assert a.goaways and a.goaways[0]["reason"] == "shutdown", a.goaways
    assert a.close_code == 1001, a.close_code
    assert "event loop did not close cleanly" not in c.wp.log()


def test_never_logged(c):
    log = c.wp.log()
    for s in c.secrets:
        assert s not in log


def main():
    r = Runner()
    c = Ctx()
    c.wp = Wolfpackd(extra_args=["--heartbeat-interval", "1"], wait_ready=True)
    c.agents = []
    c.stopped = False
    c.echo = EchoServer()
    c.banner = BannerServer()
    c.services = {"echo": c.echo.addr, "banner": c.banner.addr,
                  "closed": ("127.0.0.1", free_port())}
    with open(os.path.join(c.wp.state, "admin.token")) as f:
        c.admin = f.read().strip()
    with open(os.path.join(c.wp.state, "join.token")) as f:
        c.join = f.read().strip()
    st, _, b = call(c.wp, "POST", "/api/v1/tokens", c.admin, {"name": "u", "role": "user"})
    c.user = b["token"]
    c.secrets = [c.admin, c.join, c.user]
    try:
        for t in (test_hello_timeout_start, test_agent_joins, test_connect_echo_1mib,
                  test_connect_half_close, test_connect_refusals, test_connect_auth, test_roles, test_upgrade_errors,
                  test_replaced_and_duplicate, test_bound_token, test_revoked_token_disconnects,
                  test_garbage_frames, test_hello_timeout_end, test_sigterm_goaway,
                  test_never_logged):
            r.run(t, c)
    finally:
        if not c.stopped:
            rc = c.wp.stop()
            if rc != 0:
                print("FAIL stop: exit %d\n%s" % (rc, c.wp.log()[-3000:]))
                r.failed += 1
        for a in c.agents:
            a.stop()
        if r.failed:
            print("---- wolfpackd log (tail) ----\n" + c.wp.log()[-6000:])
    return r.done()


if __name__ == "__main__":
    sys.exit(main())
