#!/usr/bin/env python3
"""test_fakes.py — self-test of the test fakes (fake_wolf, fake_moonlight, fake_sandbox).

The fakes stand in for Wolf, Moonlight Web and a sandbox in other integration tests; this
checks with raw sockets that they keep the quirks those tests rely on: Wolf's `HTTP/1.0 <code>
OK` status line with only Content-Length, one request per connection, chunked bodies refused,
exact route matching, lobby/session state, hangs, restart losing state, the process mode with
its control port, the GameStream HTTP/HTTPS probes; Moonlight Web's auth, streamed NDJSON
pairing, SSE and WebSocket echo; the sandbox's screenshot and clipboard.
"""
import base64
import hashlib
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fake_moonlight import FakeMoonlightWeb  # noqa: E402
from fake_sandbox import PNG_SIG, FakeSandbox, png_bytes  # noqa: E402
from fake_wolf import FakeWolf, FakeWolfControl  # noqa: E402
from wolfpack_test import Runner, free_port  # noqa: E402

LOBBY = {"profile_id": "moonlight-profile-id", "name": "session-1", "multi_user": True, "pin": [1, 2, 3, 4],
         "stop_when_everyone_leaves": False,
         "video_settings": {"width": 1920, "height": 1080, "refresh_rate": 60, "wayland_render_node": "",
                            "runner_render_node": "", "video_producer_buffer_caps": ""},
         "audio_settings": {"channel_count": 2}, "runner_state_folder": "/tmp/state",
         "runner": {"type": "docker", "name": "s1", "image": "ghcr.io/x/desktop:latest", "mounts": [],
                    "env": ["A=1"], "devices": [], "ports": []}}


def recv_until_close(s, timeout=5):
    s.settimeout(timeout)
    out = b""
    while True:
        d = s.recv(65536)
        if not d:
            return out
        out += d


def unix_raw(path, data, timeout=5):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall(data)
    try:
        return recv_until_close(s, timeout)
    finally:
        s.close()


def wolf_req(path, method, target, body=None):
    data = b"" if body is None else json.dumps(body).encode()
    raw = unix_raw(path, b"%s %s HTTP/1.1\r\nHost: wolf\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (method.encode(), target.encode(), len(data))
                   + data)
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split(" ")[1])
    return status, lines, (json.loads(body) if body else None)


def make_wolf(**kw):
    d = tempfile.mkdtemp(prefix="fw-")
    return FakeWolf(os.path.join(d, "wolf.sock"), **kw).start()


def test_wolf_status_line_and_headers():
    w = make_wolf()
    try:
        st, lines, body = wolf_req(w.socket_path, "GET", "/api/v1/apps")
        assert lines[0] == "HTTP/1.0 200 OK", lines
        assert [l.split(":")[0] for l in lines[1:]] == ["Content-Length"], lines
        assert body["success"] is True and body["apps"], body
        st, lines, body = wolf_req(w.socket_path, "GET", "/api/v1/nope")
        assert lines[0] == "HTTP/1.0 404 OK" and body is None, (lines, body)
        # exact (method, path) matching: wrong method is 404 too
        st, lines, body = wolf_req(w.socket_path, "POST", "/api/v1/apps", {})
        assert st == 404
        st, lines, body = wolf_req(w.socket_path, "POST", "/api/v1/sessions/stop", {"session_id": "123"})
        assert lines[0] == "HTTP/1.0 500 OK" and body == {"success": False, "error": "Invalid session_id"}, body
        st, _, body = wolf_req(w.socket_path, "POST", "/api/v1/sessions/stop", {"session_id": "12a"})
        assert st == 500 and body["error"] == "Invalid session_id"
        st, _, body = wolf_req(w.socket_path, "GET", "/api/v1/openapi-schema")
        assert st == 200 and "openapi" in body
        st, _, _ = wolf_req(w.socket_path, "GET", "/api/v1/system/health")
        assert st == 404  # not a Helix build
    finally:
        w.stop()


def test_wolf_one_request_per_connection_and_chunked():
    w = make_wolf()
    try:
        two = b"GET /api/v1/apps HTTP/1.1\r\nHost: wolf\r\n\r\n" * 2
        raw = unix_raw(w.socket_path, two)
        assert raw.count(b"HTTP/1.0 200 OK") == 1, raw
        assert w.call_count("GET", "/api/v1/apps") == 1
        chunked = (b"POST /api/v1/lobbies/create HTTP/1.1\r\nHost: wolf\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"2\r\n{}\r\n0\r\n\r\n")
        raw = unix_raw(w.socket_path, chunked)
        assert raw.startswith(b"HTTP/1.0 500 OK\r\n"), raw
        assert not w.lobbies
    finally:
        w.stop()


def test_wolf_lobbies_and_sessions():
    w = make_wolf()
    try:
        st, _, body = wolf_req(w.socket_path, "POST", "/api/v1/lobbies/create", LOBBY)
        assert st == 200 and body["success"], body
        lid = body["lobby_id"]
        assert len(lid) == 36 and lid.count("-") == 4
        bad = dict(LOBBY)
        del bad["video_settings"]
        st, _, body = wolf_req(w.socket_path, "POST", "/api/v1/lobbies/create", bad)
        assert st == 500 and body["success"] is False and "video_settings" in body["error"], body
        bad = dict(LOBBY, pin=[1, 2, 3])
        assert wolf_req(w.socket_path, "POST", "/api/v1/lobbies/create", bad)[0] == 500
        bad = dict(LOBBY, runner={"type": "vm"})
        assert wolf_req(w.socket_path, "POST", "/api/v1/lobbies/create", bad)[0] == 500
        s1 = w.add_session(lid)
        s2 = w.add_session()
        assert int(s1) >= 1 << 63  # u64 above INT64_MAX
        st, _, body = wolf_req(w.socket_path, "GET", "/api/v1/lobbies")
        (lob,) = body["lobbies"]
        for k in ("id", "name", "multi_user", "started_by_profile_id", "pin_required",
                  "stop_when_everyone_leaves", "runner", "connected_sessions"):
            assert k in lob, k
        assert lob["connected_sessions"] == [s1] and lob["pin_required"] is True
        st, _, body = wolf_req(w.socket_path, "GET", "/api/v1/sessions")
        ids = sorted(s["client_id"] for s in body["sessions"])
        assert ids == sorted([s1, s2]) and all("session_id" not in s for s in body["sessions"])
        st, _, body = wolf_req(w.socket_path, "POST", "/api/v1/lobbies/join",
                               {"lobby_id": lid, "moonlight_session_id": s2, "pin": [1, 2, 3, 4]})
        assert st == 200, body
        assert w.lobbies[lid]["connected_sessions"] == [s1, s2]
        st, _, body = wolf_req(w.socket_path, "POST", "/api/v1/lobbies/leave",
                               {"lobby_id": lid, "moonlight_session_id": s2})
        assert st == 200 and w.lobbies[lid]["connected_sessions"] == [s1]
        assert wolf_req(w.socket_path, "POST", "/api/v1/sessions/stop", {"session_id": s1})[0] == 200
        assert w.lobbies[lid]["connected_sessions"] == []
        st, _, body = wolf_req(w.socket_path, "POST", "/api/v1/lobbies/stop", {"lobby_id": lid, "pin": [4, 3, 2, 1]})
        assert st == 500 and body["error"] == "Invalid PIN"
        st, _, body = wolf_req(w.socket_path, "POST", "/api/v1/lobbies/stop", {"lobby_id": lid})
        assert st == 500 and body["error"] == "Invalid PIN"
        st, _, body = wolf_req(w.socket_path, "POST", "/api/v1/lobbies/stop", {"lobby_id": lid, "pin": [1, 2, 3, 4]})
        assert st == 200 and not w.lobbies
        st, _, body = wolf_req(w.socket_path, "POST", "/api/v1/lobbies/stop", {"lobby_id": lid, "pin": [1, 2, 3, 4]})
        assert st == 500 and body["error"] == "Invalid lobby ID"
        st, _, body = wolf_req(w.socket_path, "POST", "/api/v1/sessions/add",
                               {"client_ip": "1.2.3.4", "video_width": 1280, "video_height": 720,
                                "video_refresh_rate": 60, "audio_channel_count": 2})
        assert st == 200 and body["session_id"] in w.sessions
        st, _, body = wolf_req(w.socket_path, "GET", "/api/v1/clients")
        assert st == 200 and body["clients"][0]["client_id"].isdigit()
        assert ("POST", "/api/v1/lobbies/stop", {"lobby_id": lid}) in w.calls
    finally:
        w.stop()


def test_wolf_faults_hang_restart():
    w = make_wolf(helix=True)
    try:
        assert wolf_req(w.socket_path, "GET", "/api/v1/system/health")[2]["overall_status"] == "healthy"
        w.fail("GET", "/api/v1/lobbies", 500, "boom")
        st, _, body = wolf_req(w.socket_path, "GET", "/api/v1/lobbies")
        assert st == 500 and body == {"success": False, "error": "boom"}
        w.hang("GET", "/api/v1/lobbies")
        try:
            unix_raw(w.socket_path, b"GET /api/v1/lobbies HTTP/1.1\r\n\r\n", timeout=0.5)
            raise AssertionError("hang answered")
        except socket.timeout:
            pass
        w.clear_faults()
        assert wolf_req(w.socket_path, "GET", "/api/v1/lobbies")[0] == 200
        w.hang_api(True)
        try:
            unix_raw(w.socket_path, b"GET /api/v1/apps HTTP/1.1\r\n\r\n", timeout=0.5)
            raise AssertionError("hang_api answered")
        except socket.timeout:
            pass
        w.hang_api(False)
        # runners/start never answers for a known session
        sid = w.add_session()
        s = socket.socket(socket.AF_UNIX)
        s.connect(w.socket_path)
        body = json.dumps({"stop_stream_when_over": True, "session_id": sid,
                           "runner": {"type": "process", "run_cmd": "true"}}).encode()
        s.sendall(b"POST /api/v1/runners/start HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        s.settimeout(0.5)
        try:
            s.recv(1)
            raise AssertionError("runners/start answered")
        except socket.timeout:
            pass
        # restart drops connections, removes the socket file, loses state
        lid = wolf_req(w.socket_path, "POST", "/api/v1/lobbies/create", LOBBY)[2]["lobby_id"]
        w.restart()
        s.settimeout(2)
        assert s.recv(1) == b""  # the hung connection was dropped
        s.close()
        st, _, body = wolf_req(w.socket_path, "GET", "/api/v1/lobbies")
        assert st == 200 and body["lobbies"] == [] and lid not in w.lobbies
        assert wolf_req(w.socket_path, "GET", "/api/v1/sessions")[2]["sessions"] == []
        # reply without Content-Length: body until FIN
        w.no_length("GET", "/api/v1/apps")
        raw = unix_raw(w.socket_path, b"GET /api/v1/apps HTTP/1.1\r\n\r\n")
        assert raw.startswith(b"HTTP/1.0 200 OK\r\n\r\n{"), raw
    finally:
        w.stop()
    assert not os.path.exists(w.socket_path)


def test_wolf_gamestream_ports():
    hp, sp = free_port(), free_port()
    w = make_wolf(http_port=hp, https_port=sp)

    def serverinfo(timeout=3):
        s = socket.create_connection(("127.0.0.1", hp), timeout=timeout)
        s.sendall(b"GET /serverinfo HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            return recv_until_close(s, timeout)
        finally:
            s.close()
    try:
        r = serverinfo()
        assert r.startswith(b"HTTP/1.1 200") and b'status_code="200"' in r and b"<state>SUNSHINE_SERVER_FREE" in r
        w.serverinfo_mode("status500")
        assert b'status_code="500"' in serverinfo()
        w.serverinfo_mode("garbage")
        assert b"<root" not in serverinfo()
        w.serverinfo_mode("hang")
        try:
            serverinfo(timeout=0.5)
            raise AssertionError("hang answered")
        except socket.timeout:
            pass
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", sp), timeout=5) as s:
            with ctx.wrap_socket(s) as t:
                assert t.version()
        w.https_mode("close")
        with socket.create_connection(("127.0.0.1", sp), timeout=5) as s:
            try:
                ctx.wrap_socket(s)
                raise AssertionError("handshake completed in close mode")
            except (ssl.SSLError, OSError):
                pass
        w.https_mode("hang")
        with socket.create_connection(("127.0.0.1", sp), timeout=0.5) as s:
            try:
                ctx.wrap_socket(s)
                raise AssertionError("handshake completed in hang mode")
            except socket.timeout:
                pass
    finally:
        w.stop()


def test_wolf_process_mode():
    d = tempfile.mkdtemp(prefix="fw-")
    sock, cport = os.path.join(d, "wolf.sock"), free_port()
    args = [sys.executable, os.path.join(HERE, "fake_wolf.py"), "--socket", sock, "--control-port", str(cport)]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "fake_wolf ready"
        ctl = FakeWolfControl(cport)
        lid = wolf_req(sock, "POST", "/api/v1/lobbies/create", LOBBY)[2]["lobby_id"]
        assert lid in ctl.lobbies
        sid = ctl.add_session(lobby_id=lid)
        assert ctl.lobbies[lid]["connected_sessions"] == [sid]
        ctl.fail(method="GET", path="/api/v1/lobbies", status=500, error="x")
        assert wolf_req(sock, "GET", "/api/v1/lobbies")[0] == 500
        assert ("GET", "/api/v1/lobbies", None) in ctl.calls
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        assert os.path.exists(sock)  # a killed Wolf leaves a stale socket file
        try:
            wolf_req(sock, "GET", "/api/v1/lobbies")
            raise AssertionError("dead fake answered")
        except (ConnectionRefusedError, FileNotFoundError):
            pass
        p = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "fake_wolf ready"
        assert wolf_req(sock, "GET", "/api/v1/lobbies")[2]["lobbies"] == []
    finally:
        p.kill()
        p.wait(10)


def http(port, method, path, headers=None, body=b"", timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    h = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
    s.sendall(("%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n%s\r\n"
               % (method, path, len(body), h)).encode() + body)
    return s


AUTH = {"Authorization": "Bearer secret-cred"}


def test_moonlight_auth_pair_events():
    port = free_port()
    ml = FakeMoonlightWeb(port, hold_pair=True).start()
    try:
        r = recv_until_close(http(port, "GET", "/api/authenticate"))
        assert r.startswith(b"HTTP/1.1 401") and b"unauthorized" in r
        r = recv_until_close(http(port, "GET", "/api/authenticate", AUTH))
        assert r.startswith(b"HTTP/1.1 200"), r
        r = recv_until_close(http(port, "GET", "/api/hosts", {"Authorization": "Bearer wrong"}))
        assert r.startswith(b"HTTP/1.1 401")
        r = recv_until_close(http(port, "GET", "/api/hosts", AUTH))
        assert b'"hosts"' in r
        assert ml.headers_for("/api/hosts")[-1]["authorization"] == "Bearer secret-cred"
        # pairing: the Pin line comes before Paired is released
        s = http(port, "POST", "/api/pair", AUTH, b'{"host_id":1}')
        buf = b""
        while b'{"Pin":"1234"}\n' not in buf:
            d = s.recv(4096)
            assert d, buf
            buf += d
        assert b"Transfer-Encoding: chunked" in buf and b"Paired" not in buf
        ml.release_pair()
        buf += recv_until_close(s)
        assert b'{"Paired"' in buf and buf.endswith(b"0\r\n\r\n"), buf
        # SSE: three events then keepalives and pushed events
        s = http(port, "GET", "/api/events", AUTH)
        buf = b""
        deadline = time.time() + 5
        while buf.count(b"event: hello") < 3 and time.time() < deadline:
            buf += s.recv(4096)
        assert b"text/event-stream" in buf and buf.count(b"event: hello") == 3
        while ml.sse_clients() == 0:
            time.sleep(0.01)
        ml.push_event({"x": 1}, "update")
        while b"event: update" not in buf:
            d = s.recv(4096)
            assert d
            buf += d
        s.close()
    finally:
        ml.stop()


def ws_frame(op, payload, fin=True):
    mask = os.urandom(4)
    n = len(payload)
    b0 = (0x80 if fin else 0) | op
    if n < 126:
        h = struct.pack(">BB", b0, 0x80 | n)
    elif n < 65536:
        h = struct.pack(">BBH", b0, 0x80 | 126, n)
    else:
        h = struct.pack(">BBQ", b0, 0x80 | 127, n)
    m = bytes(payload[i] ^ mask[i & 3] for i in range(n)) if n < 4096 else \
        (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
    return h + mask + m


def ws_read(f):
    h = f.read(2)
    op, n = h[0] & 0x0F, h[1] & 0x7F
    if n == 126:
        n = struct.unpack(">H", f.read(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", f.read(8))[0]
    return op, f.read(n)


def test_moonlight_websocket_echo():
    port = free_port()
    ml = FakeMoonlightWeb(port).start()
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        s = http(port, "GET", "/api/host/stream", dict(AUTH, Upgrade="websocket", Connection="Upgrade",
                                                       **{"Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13"}))
        f = s.makefile("rb")
        status = f.readline()
        assert status.startswith(b"HTTP/1.1 101"), status
        hdrs = {}
        while True:
            ln = f.readline().strip()
            if not ln:
                break
            k, v = ln.decode().split(":", 1)
            hdrs[k.lower()] = v.strip()
        want = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        assert hdrs["sec-websocket-accept"] == want.decode()
        big = os.urandom(1024 * 1024)
        s.sendall(ws_frame(1, b'{"Init":{}}') + ws_frame(2, big) + ws_frame(9, b"pp")
                  + ws_frame(1, b"ab", fin=False) + ws_frame(0, b"cd"))
        assert ws_read(f) == (1, b'{"Init":{}}')
        assert ws_read(f) == (2, big)
        assert ws_read(f) == (10, b"pp")
        assert ws_read(f) == (1, b"abcd")
        s.sendall(ws_frame(8, struct.pack(">H", 1000)))
        assert ws_read(f) == (8, struct.pack(">H", 1000))
        s.close()
    finally:
        ml.stop()


def test_sandbox():
    port = free_port()
    sb = FakeSandbox(port).start()
    try:
        r = recv_until_close(http(port, "GET", "/screenshot"))
        head, body = r.split(b"\r\n\r\n", 1)
        assert b"image/png" in head and len(body) == 64 * 1024 and body.startswith(PNG_SIG)
        assert body == png_bytes(64 * 1024)
        r = recv_until_close(http(port, "GET", "/screenshot?size=3000000"), timeout=20)
        assert len(r.split(b"\r\n\r\n", 1)[1]) == 3000000
        assert recv_until_close(http(port, "GET", "/screenshot?size=-1")).startswith(b"HTTP/1.1 400")
        assert recv_until_close(http(port, "POST", "/clipboard", body="héllo".encode())).startswith(b"HTTP/1.1 200")
        r = recv_until_close(http(port, "GET", "/clipboard"))
        assert r.endswith("héllo".encode()), r
        r = recv_until_close(http(port, "POST", "/clipboard", body=b"x" * (1024 * 1024 + 1)))
        assert r.startswith(b"HTTP/1.1 413")
    finally:
        sb.stop()


def main():
    r = Runner()
    for t in (test_wolf_status_line_and_headers, test_wolf_one_request_per_connection_and_chunked,
              test_wolf_lobbies_and_sessions, test_wolf_faults_hang_restart, test_wolf_gamestream_ports,
              test_wolf_process_mode, test_moonlight_auth_pair_events, test_moonlight_websocket_echo,
              test_sandbox):
        r.run(t)
    return r.done()


if __name__ == "__main__":
    sys.exit(main())
