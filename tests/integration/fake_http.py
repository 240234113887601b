"""fake_http.py — the HTTP server plumbing the HTTP fakes share (fake_moonlight.py,
fake_sandbox.py). Stdlib only.

FakeHTTPServer is the base of a fake: it serves `handler` (a FakeHandler subclass) on
127.0.0.1:port with one thread per connection; start()/stop(), also a context manager. stop()
returns promptly: it also shuts down the connections still open (keep-alive, streams).
`requests` records {"method", "path", "headers": {lower-case name: value}} for every request
a handler _record()s; `lock` guards it and whatever state the fake adds.
"""
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 request handler bound to its fake (.fake): tracks its connection, stays quiet."""

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

    def _record(self):
        with self.fake.lock:
            self.fake.requests.append({"method": self.command, "path": self.path,
                                       "headers": {k.lower(): v for k, v in self.headers.items()}})

    def _send(self, status, body, ctype="application/json"):
        """One answer with Content-Length; a dict/list body is sent as JSON."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FakeHTTPServer:
    handler = FakeHandler  # subclasses name their FakeHandler subclass

    def __init__(self, port):
        self.port = port
        self.lock = threading.Lock()
        self.requests = []
        self._socks = set()
        self._srv = None
        self._thread = None

    def start(self):
        class H(self.handler):
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
