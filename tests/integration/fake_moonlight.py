#!/usr/bin/env python3
"""fake_moonlight.py — a stdlib-only fake of Moonlight Web (moonlight-web-stream, v1 auth).

FakeMoonlightWeb(port, credentials="secret-cred", pair_delay=0.2, hold_pair=False) is an
HTTP/1.1 server on 127.0.0.1:port (threads; start()/stop(), also a context manager):
  * every /api/* request needs `Authorization: Bearer <credentials>`, else 401 with a JSON body;
  * GET /api/authenticate -> 200 (or 401), the liveness check (no health endpoint exists);
  * GET /api/hosts -> {"hosts":[{host_id, name, paired, server_state}]};
  * POST /api/pair -> 200 streamed NDJSON with Transfer-Encoding: chunked: `{"Pin":"1234"}\\n`
    at once, then `{"Paired":{...}}\\n` after pair_delay seconds or, with hold_pair=True, up to
    60 s; release_pair() sends it at once (hold_pairs() re-arms); then the terminating chunk.
    `pair_times` records (Pin sent, Paired sent) times so a proxy's buffering shows;
  * GET /api/events -> Server-Sent Events (chunked): three `event: hello` events at once, then a
    `: keepalive` comment every keepalive_s seconds, plus anything push_event(data) queues,
    until the client goes or stop();
  * GET /api/host/stream -> WebSocket (RFC 6455 server): handshake, client frames must be
    masked, text/binary messages (fragmented ones reassembled, up to 1 MiB, bigger -> close
    1009) echoed in order as one unmasked frame each, ping -> pong with the same payload,
    close -> close echoed; `ws_messages` records (opcode, payload) received;
  * anything else under /api/ -> 404 JSON; GET / -> a small HTML page.
`requests` records {"method", "path", "headers": {lower-case name: value}} for every request,
so a test can assert the wolfpack token was NOT forwarded and the credentials WERE injected
(server plumbing: fake_http.py).
"""
import base64
import hashlib
import json
import os
import queue
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake_http import FakeHandler, FakeHTTPServer  # noqa: E402

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_MAX = 1024 * 1024


def _unmask(data, mask):
    n = len(data)
    if n == 0:
        return b""
    m = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")


class FakeMoonlightWeb(FakeHTTPServer):
    def __init__(self, port, credentials="secret-cred", pair_delay=0.2, hold_pair=False, keepalive_s=1.0):
        super().__init__(port)
        self.credentials = credentials
        self.pair_delay = pair_delay
        self.hold_pair = hold_pair
        self.keepalive_s = keepalive_s
        self.ws_messages = []
        self.pair_times = []
        self._pair_ev = threading.Event()
        self._stop = threading.Event()
        self._sse = []          # queues of connected SSE clients

    def release_pair(self):
        """Lets every pending and later /api/pair send `Paired` now (until hold_pairs())."""
        self._pair_ev.set()

    def hold_pairs(self):
        """Pairs wait again (for release_pair() with hold_pair=True, else pair_delay)."""
        self._pair_ev.clear()

    def push_event(self, data, event="message"):
        """Sends `event: <event>\\ndata: <json>\\n\\n` to every connected SSE client."""
        with self.lock:
            qs = list(self._sse)
        for q in qs:
            q.put((event, data))

    def sse_clients(self):
        with self.lock:
            return len(self._sse)

    def headers_for(self, path):
        """Headers of the requests to path (query ignored), oldest first."""
        with self.lock:
            return [r["headers"] for r in self.requests if r["path"].split("?", 1)[0] == path]

    def stop(self):
        self._stop.set()
        self._pair_ev.set()
        super().stop()


class Handler(FakeHandler):
    def _chunk(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")
        self.wfile.flush()

    def _read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _authorized(self):
        return self.headers.get("Authorization", "") == "Bearer " + self.fake.credentials

    def _dispatch(self):
        self._record()
        path = self.path.split("?", 1)[0]
        if not path.startswith("/api/"):
            if self.command == "GET" and path == "/":
                return self._send(200, "<html><body>moonlight web (fake)</body></html>", "text/html")
            return self._send(404, "not found", "text/plain")
        body = self._read_body()
        if not self._authorized():
            return self._send(401, {"error": "unauthorized"})
        key = (self.command, path)
        if key == ("GET", "/api/authenticate"):
            return self._send(200, "")
        if key == ("GET", "/api/hosts"):
            return self._send(200, {"hosts": [{"host_id": 1, "name": "fake-wolf", "paired": "Paired",
                                               "server_state": "Free"}]})
        if key == ("POST", "/api/pair"):
            return self._pair(body)
        if key == ("GET", "/api/events"):
            return self._events()
        if key == ("GET", "/api/host/stream"):
            return self._websocket()
        return self._send(404, {"error": "not found"})

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch

    # ---- pairing: streamed NDJSON ----
    def _pair(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._chunk('{"Pin":"1234"}\n')
        t_pin = time.time()
        self.fake._pair_ev.wait(60 if self.fake.hold_pair else self.fake.pair_delay)
        self._chunk(json.dumps({"Paired": {"host_id": 1, "name": "fake-wolf", "paired": "Paired"}}) + "\n")
        with self.fake.lock:
            self.fake.pair_times.append((t_pin, time.time()))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # ---- Server-Sent Events ----
    def _events(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        q = queue.Queue()
        with self.fake.lock:
            self.fake._sse.append(q)
        try:
            for i in range(3):
                self._chunk("event: hello\ndata: %s\n\n" % json.dumps({"n": i}))
            while not self.fake._stop.is_set():
                try:
                    ev, data = q.get(timeout=self.fake.keepalive_s)
                    self._chunk("event: %s\ndata: %s\n\n" % (ev, json.dumps(data)))
                except queue.Empty:
                    self._chunk(": keepalive\n\n")
        except OSError:
            pass
        finally:
            with self.fake.lock:
                self.fake._sse.remove(q)
            self.close_connection = True

    # ---- WebSocket echo ----
    def _websocket(self):
        key = self.headers.get("Sec-WebSocket-Key")
        if self.headers.get("Upgrade", "").lower() != "websocket" or not key:
            return self._send(400, {"error": "websocket upgrade expected"})
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        rf = self.rfile
        msg_op, msg = None, bytearray()
        try:
            while not self.fake._stop.is_set():
                hdr = rf.read(2)
                if len(hdr) < 2:
                    return
                fin, op = hdr[0] & 0x80, hdr[0] & 0x0F
                masked, n = hdr[1] & 0x80, hdr[1] & 0x7F
                if n == 126:
                    n = struct.unpack(">H", rf.read(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", rf.read(8))[0]
                if not masked:
                    return self._ws_send(8, struct.pack(">H", 1002))
                if n > WS_MAX or len(msg) + n > WS_MAX:
                    return self._ws_send(8, struct.pack(">H", 1009))
                mask = rf.read(4)
                raw = rf.read(n)
                if len(raw) < n:
                    return
                data = _unmask(raw, mask)
                if op == 8:
                    self._ws_send(8, data[:2])
                    return
                if op == 9:
                    self._ws_send(10, data)
                    continue
                if op == 10:
                    continue
                if op in (1, 2):
                    msg_op, msg = op, bytearray(data)
                elif op == 0 and msg_op is not None:
                    msg += data
                else:
                    return self._ws_send(8, struct.pack(">H", 1002))
                if fin:
                    with self.fake.lock:
                        self.fake.ws_messages.append((msg_op, bytes(msg)))
                    self._ws_send(msg_op, bytes(msg))
                    msg_op, msg = None, bytearray()
        except (OSError, struct.error):
            pass

    def _ws_send(self, op, payload):
        n = len(payload)
        if n < 126:
            h = struct.pack(">BB", 0x80 | op, n)
        elif n < 65536:
            h = struct.pack(">BBH", 0x80 | op, 126, n)
        else:
            h = struct.pack(">BBQ", 0x80 | op, 127, n)
        self.wfile.write(h + payload)
        self.wfile.flush()


FakeMoonlightWeb.handler = Handler  # defined below the server class it serves
