#!/usr/bin/env python3
"""fake_sandbox.py — a stdlib-only fake of a sandbox container's helper HTTP API.

FakeSandbox(port, screenshot_size=64 * 1024) serves on 127.0.0.1:port (threads; start()/stop(),
also a context manager):
  * GET /screenshot[?size=N] -> 200 image/png, N bytes (default screenshot_size, at most 200 MiB,
    bad N -> 400) with Content-Length, streamed in 64 KiB chunks; it starts with the PNG
    signature and the rest is a deterministic pattern (png_bytes(N) gives the same bytes, so a
    test can compare what came through a proxy);
  * GET /clipboard -> 200 text/plain, the current text; POST /clipboard -> stores the body
    (Content-Length required, at most 1 MiB, else 411/413), 200 {"ok":true};
  * anything else -> 404.
`requests` records {"method", "path", "headers"} for every request.
"""
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PNG_SIG = b"\x89PNG\r\n\x1a\n"
MAX_SCREENSHOT = 200 * 1024 * 1024
MAX_CLIPBOARD = 1024 * 1024
CHUNK = 64 * 1024
_PATTERN = bytes(range(256)) * (CHUNK // 256)


def png_bytes(n):
    """The exact body GET /screenshot?size=n sends (for small n; large ones are compared by length
    and a hash in tests)."""
    return b"".join(_chunks(n))


def _chunks(n):
    first = (PNG_SIG + _PATTERN)[:min(n, CHUNK)]
    yield first
    sent = len(first)
    while sent < n:
        k = min(CHUNK, n - sent)
        yield _PATTERN[:k]
        sent += k


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeSandbox:
    def __init__(self, port, screenshot_size=64 * 1024):
        self.port = port
        self.screenshot_size = screenshot_size
        self.clipboard = ""
        self.lock = threading.Lock()
        self.requests = []
        self._socks = set()
        self._srv = None
        self._thread = None

    def start(self):
        class H(_Handler):
            pass
        H.fake = self
        self._srv = _Server(("127.0.0.1", self.port), H)
        self._thread = threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._srv:
            self._srv.shutdown()
            self._srv.server_close()
        with self.lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread:
            self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake = None

    def log_message(self, *a):
        pass

    def setup(self):
        super().setup()
        with self.fake.lock:
            self.fake._socks.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.fake.lock:
                self.fake._socks.discard(self.connection)

    def _send(self, status, body, ctype="application/json"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _dispatch(self):
        u = urlsplit(self.path)
        with self.fake.lock:
            self.fake.requests.append({"method": self.command, "path": self.path,
                                       "headers": {k.lower(): v for k, v in self.headers.items()}})
        if self.command == "GET" and u.path == "/screenshot":
            n = self.fake.screenshot_size
            q = parse_qs(u.query)
            if "size" in q:
                try:
                    n = int(q["size"][0])
                except ValueError:
                    n = -1
                if n < 0 or n > MAX_SCREENSHOT:
                    return self._send(400, {"error": "size out of range"})
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            try:
                for c in _chunks(n):
                    self.wfile.write(c)
            except OSError:
                self.close_connection = True
            return
        if u.path == "/clipboard" and self.command == "GET":
            with self.fake.lock:
                text = self.fake.clipboard
            return self._send(200, text, "text/plain; charset=utf-8")
        if u.path == "/clipboard" and self.command == "POST":
            cl = self.headers.get("Content-Length")
            if cl is None:
                self.close_connection = True
                return self._send(411, {"error": "Content-Length required"})
            n = int(cl)
            if n > MAX_CLIPBOARD:
                self.close_connection = True
                return self._send(413, {"error": "clipboard too large"})
            body = self.rfile.read(n)
            with self.fake.lock:
                self.fake.clipboard = body.decode("utf-8", "replace")
            return self._send(200, {"ok": True})
        n = int(self.headers.get("Content-Length") or 0)
        if 0 < n <= MAX_CLIPBOARD:
            self.rfile.read(n)
        else:
            self.close_connection = True
        return self._send(404, {"error": "not found"})

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch
