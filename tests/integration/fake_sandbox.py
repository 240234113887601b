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
`requests` records {"method", "path", "headers"} for every request (server plumbing:
fake_http.py).
"""
import os
import sys
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake_http import FakeHandler, FakeHTTPServer  # noqa: E402

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


class _Handler(FakeHandler):
    def _dispatch(self):
        u = urlsplit(self.path)
        self._record()
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


class FakeSandbox(FakeHTTPServer):
    handler = _Handler

    def __init__(self, port, screenshot_size=64 * 1024):
        super().__init__(port)
        self.screenshot_size = screenshot_size
        self.clipboard = ""
