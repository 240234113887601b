"""test_agent.py — the real wolfpack-agent against a fake control plane (fake_cp.py).

Covers: the upgrade request (Bearer token in the header only, subprotocol,
no extensions), a valid hello, 1 MiB byte-exact echo over a tcp service,
a unix socket service, a stream whose local reader stalls (its credit stops,
others keep flowing), a service outside the allow-list (error not_allowed
before the RST), a refused local port (error refused within 5 s), heartbeats
at the welcome interval, reconnect with backoff after drops, a wrong CA pin
(no request ever sent), a wrong token (clear log line), SIGTERM drain
(drain + goaway drained, exit 0) and that the token is never logged.
"""
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake_cp import FakeCP, welcome  # noqa: E402
from wolfpack_test import Agent, EchoServer, Runner, free_port, wait_for  # noqa: E402

TOKEN = "wpa_fakeAgentToken0123456789abcdefghijklmnopqrstu"
NODE = "test-node-1"


class StallServer:
    """Accepts and never reads: the agent's writes back up and its credit must stop."""

    def __init__(self):
        self.s = socket.socket()
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.s.bind(("127.0.0.1", 0))
        self.port = self.s.getsockname()[1]
        self.s.listen(4)
        self.conns = []
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                c, _ = self.s.accept()
            except OSError:
                return
            self.conns.append(c)


def start_agent(d, name, url, pin, token_file, services, extra=()):
    """The agent under test, against the fake control plane."""
    return Agent(d, name, ["run", "--url", url, "--token-file", token_file, "--ca-pin", pin,
                           "--node-id", NODE, "--log-level", "debug", "--label", "zone=test"] +
                 [a for s in services for a in ("--service", s)] + list(extra))


class Ctx:
    pass


def test_upgrade_and_hello(c):
    t = c.tunnel
    assert t.path == "/api/v1/tunnel", t.path
    assert t.headers["authorization"] == ["Bearer " + TOKEN]
    assert TOKEN not in t.path
    assert t.headers["sec-websocket-protocol"] == ["wolfpack.v1"]
    assert "sec-websocket-extensions" not in t.headers
    m = t.next_text("hello", timeout=10)
    assert m, "no hello"
    h = m[2]
    assert m[0] == 1, "hello is not the first message"
    assert h["protocol"] == 1 and h["node_id"] == NODE, h
    assert re.fullmatch(r"[0-9a-f]{32}", h["instance_id"]), h
    assert isinstance(h["version"], str) and 1 <= len(h["version"]) <= 64
    assert isinstance(h["max_sessions"], int)
    for s in ("moonlight", "wolf", "deadsvc"):
        assert s in h["services"], h["services"]
    assert "sandbox" not in h["services"] and "probe" not in h["services"]
    # no GPU here (unless the host has one); nvml_error may say why NVML is absent
    assert h["gpu"]["vendor"] in ("none", "nvidia", "amd", "intel"), h["gpu"]
    assert isinstance(h["gpu"]["devices"], list), h["gpu"]
    assert h["labels"] == {"zone": "test"}
    assert "lobbies" not in h and "sessions" not in h
    c.instance_id = h["instance_id"]
    c.welcome_time = time.time()
    t.send_text(welcome(NODE, interval_ms=1000))


def test_echo_tcp_1mib(c):
    t = c.tunnel
    data = os.urandom(1024 * 1024)
    sid = t.open_stream({"service": "moonlight"})
    assert t.wait(lambda: t.stream(sid).acked or t.stream(sid).rst, 5), "no ACK"
    assert t.stream(sid).acked and not t.stream(sid).rst
    w = threading.Thread(target=t.write, args=(sid, data))
    w.start()
    ok = t.wait(lambda: len(t.stream(sid).recv) >= len(data) or t.stream(sid).rst, 30)
    w.join()
    s = t.stream(sid)
    assert ok and not s.rst, "echo incomplete: %d bytes" % len(s.recv)
    assert bytes(s.recv) == data, "echo differs"
    t.close_write(sid)
    assert t.wait(lambda: s.fin or s.rst, 5) and s.fin and not s.rst, "no FIN back"


def test_echo_unix(c):
    t = c.tunnel
    msg = b"GET /api/v1/apps HTTP/1.1\r\n\r\n"
    sid = t.open_stream({"service": "wolf"}, data=msg)  # data rides in the SYN, before the dial
    s = t.stream(sid)
    assert t.wait(lambda: len(s.recv) >= len(msg) or s.rst, 5) and not s.rst, len(s.recv)
    t.write(sid, b"more")
    assert t.wait(lambda: len(s.recv) >= len(msg) + 4 or s.rst, 5) and not s.rst
    assert bytes(s.recv) == msg + b"more"
    t.close_write(sid)
    assert t.wait(lambda: s.fin, 5)


def _error_then_rst(t, sid, code, timeout):
    s = t.stream(sid)
    t0 = time.time()
    assert t.wait(lambda: s.rst, timeout), "no RST for stream %d" % sid
    took = time.time() - t0
    errs = [m for m in t.texts_of("error") if m[2].get("stream") == sid]
    assert errs, "no error message for stream %d" % sid
    assert errs[0][2]["code"] == code, errs[0][2]
    assert errs[0][0] < s.rst_seq, "error must precede the RST"
    assert not s.acked
    return took


def test_not_allowed(c):
    t = c.tunnel
    sid = t.open_stream({"service": "ssh"})
    _error_then_rst(t, sid, "not_allowed", 5)
    sid = t.open_stream({"service": "sandbox", "host": "c1", "port": 9876})
    _error_then_rst(t, sid, "not_allowed", 5)
    sid = t.open_stream({"service": "wolf", "host": "evil", "port": 22})
    _error_then_rst(t, sid, "protocol", 5)
    sid = t.open_stream(b"[1,2]")
    _error_then_rst(t, sid, "protocol", 5)
    errs = [m[2] for m in t.texts_of("error") if m[2]["code"] == "not_allowed"]
    assert errs[0]["message"] == 'service "ssh" is not allow-listed', errs[0]


def test_refused_port(c):
    took = _error_then_rst(c.tunnel, c.tunnel.open_stream({"service": "deadsvc"}), "refused", 6)
    assert took < 5.0, took


def test_stalled_stream_isolated(c):
    t = c.tunnel
    sid = t.open_stream({"service": "stall"})
    s = t.stream(sid)
    assert t.wait(lambda: s.acked, 5)
    sent = [0]

    def pump():
        chunk = b"z" * 65536
        try:
            for _ in range(16 * 16):  # up to 16 MiB
                t.write(sid, chunk, timeout=1.5)
                sent[0] += len(chunk)
        except RuntimeError:
            pass
    w = threading.Thread(target=pump)
    w.start()
    # While that stream is stuck at zero window, another stream still echoes promptly.
    time.sleep(0.5)
    e = t.open_stream({"service": "moonlight"}, data=b"ping")
    es = t.stream(e)
    t0 = time.time()
    assert t.wait(lambda: len(es.recv) == 4, 3), "echo stalled behind a blocked stream"
    assert time.time() - t0 < 1.0
    t.close_write(e)
    w.join(timeout=30)
    assert not w.is_alive()
    # Credit stopped: what left is bounded by the window plus kernel socket buffers.
    assert sent[0] < 16 * 1024 * 1024, sent[0]
    print("  stalled stream: %d KiB sent before the window closed" % (sent[0] // 1024))
    assert s.send_win == 0 and not s.rst
    c.stall_sid = sid


def test_heartbeats(c):
    t = c.tunnel
    assert t.wait(lambda: len(t.texts_of("heartbeat")) >= 3, 6), "heartbeats missing"
    hb = t.texts_of("heartbeat")
    assert [m[2]["seq"] for m in hb[:3]] == [1, 2, 3], [m[2]["seq"] for m in hb]
    gaps = [hb[i + 1][1] - hb[i][1] for i in range(len(hb) - 1)]
    assert all(0.7 < g < 1.6 for g in gaps), gaps
    first = hb[0][2]
    assert first["load"]["max_sessions"] == 4 and "active_sessions" in first["load"]
    assert isinstance(first["gpus"], list) and isinstance(first["wolf"], dict)
    assert 0.7 < hb[0][1] - c.welcome_time < 1.6


def test_reconnect_backoff(c):
    gaps = []
    t = c.tunnel
    for bound in (1.0, 2.0):
        t0 = time.time()
        t.drop()
        nt = c.cp.next_tunnel(timeout=bound + 5)
        assert nt, "agent did not reconnect"
        gaps.append(c.cp.requests[-1][0] - t0)
        h = nt.next_text("hello", timeout=5)
        assert h and h[2]["instance_id"] == c.instance_id, "instance_id must survive reconnects"
        nt.send_text(welcome(NODE, interval_ms=1000))
        assert nt.next_text("heartbeat", timeout=3), "no heartbeat on the new tunnel"
        # full jitter rand(0, min(30 s, 1 s * 2^n)) plus connect time
        assert gaps[-1] < bound + 1.0, gaps
        t = nt
    c.tunnel = t
    c.gaps = gaps


def test_wrong_pin_and_token(c):
    d = c.dir
    bad_pin = "sha256:" + "00" * 32
    a1 = start_agent(d, "badpin", c.cp.url, bad_pin, c.token_file, [])
    bad_tok = os.path.join(d, "bad.token")
    with open(bad_tok, "w") as f:
        f.write("wpa_notTheRightTokenXXXXXXXXXXXX\n")
    a2 = start_agent(d, "badtoken", c.cp.url, c.cp.pin, bad_tok, [])
    try:
        assert wait_for(lambda: "certificate pin mismatch" in a1.log(), 10, 0.05), \
            "timed out waiting for pin mismatch log"
        assert wait_for(lambda: "refused our token" in a2.log(), 10, 0.05), \
            "timed out waiting for token refused log"
    finally:
        assert a1.stop(timeout=20) == 0, a1.log()[-2000:]
        assert a2.stop(timeout=20) == 0, a2.log()[-2000:]
    # The bad-pin agent never got to send an HTTP request (so never sent the token).
    assert len(c.cp.tls_failures) >= 1
    for _, path, hdrs, status in c.cp.requests:
        if status == 101:
            continue
        assert hdrs["authorization"] == ["Bearer wpa_notTheRightTokenXXXXXXXXXXXX"], hdrs
    assert "wpa_notTheRightTokenXXXXXXXXXXXX" not in a2.log()


def test_sigterm_drain(c):
    t = c.tunnel
    sid = t.open_stream({"service": "moonlight"}, data=b"x" * 100)
    s = t.stream(sid)
    assert t.wait(lambda: len(s.recv) == 100, 5)
    mark = t.seq
    c.agent.proc.send_signal(signal.SIGTERM)
    d = t.next_text("drain", timeout=5, after=mark)
    assert d and d[2]["timeout_ms"] > 0, d
    # New streams are refused while draining; the open one keeps working.
    sid2 = t.open_stream({"service": "moonlight"})
    _error_then_rst(t, sid2, "draining", 5)
    t.write(sid, b"y" * 10)
    assert t.wait(lambda: len(s.recv) == 110, 5)
    time.sleep(0.3)
    assert not t.texts_of("goaway"), "goaway before the stream finished"
    t.close_write(sid)
    g = t.next_text("goaway", timeout=5, after=mark)
    assert g and g[2]["reason"] == "drained", g
    assert t.wait(lambda: t.close_code is not None or t.closed, 5)
    assert t.close_code == 1000, t.close_code
    c.agent.proc.wait(timeout=10)
    assert c.agent.proc.returncode == 0, c.agent.log()[-3000:]


def test_token_never_logged(c):
    log = c.agent.log()
    assert TOKEN not in log
    assert "tunnel up" in log and "reconnecting" in log


def main():
    r = Runner()
    c = Ctx()
    c.dir = tempfile.mkdtemp(prefix="wp-agent-")
    c.cp = FakeCP(c.dir, TOKEN)
    c.token_file = os.path.join(c.dir, "token")
    with open(c.token_file, "w") as f:
        f.write(TOKEN + "\n")
    echo = EchoServer()
    sock_path = os.path.join(c.dir, "wolf.sock")
    EchoServer(unix_path=sock_path)
    dead = free_port()
    stall = StallServer()
    services = ["moonlight=tcp:127.0.0.1:%d" % echo.port, "wolf=unix:" + sock_path,
                "deadsvc=tcp:127.0.0.1:%d" % dead, "stall=tcp:127.0.0.1:%d" % stall.port]
    c.agent = start_agent(c.dir, "agent", c.cp.url, c.cp.pin, c.token_file, services)
    try:
        c.tunnel = c.cp.next_tunnel(timeout=15)
        if not c.tunnel:
            print("FAIL agent never connected:\n" + c.agent.log()[-3000:])
            return 1
        for t in (test_upgrade_and_hello, test_echo_tcp_1mib, test_echo_unix, test_not_allowed,
                  test_refused_port, test_stalled_stream_isolated, test_heartbeats, test_reconnect_backoff,
                  test_wrong_pin_and_token, test_sigterm_drain, test_token_never_logged):
            r.run(t, c)
    finally:
        r.expect_exit("agent", c.agent.stop(timeout=20), c.agent.log())
        c.cp.close()
    if r.failed:
        print(c.agent.log()[-6000:])
    return r.done()


if __name__ == "__main__":
    sys.exit(main())
