"""wolfpack_test.py — shared helpers for the integration tests.

Starts the real wolfpackd binary in a temporary state directory on a free
loopback port, waits until it listens, and offers TLS/plain socket helpers.
Stdlib only (python3 from Debian), so CI needs nothing beyond apt packages.
"""
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback

BIN_DIR = os.environ.get("WP_BIN_DIR", "")


def binary(name):
    path = os.path.join(BIN_DIR, name) if BIN_DIR else name
    if not os.path.exists(path):
        raise RuntimeError("binary not found: %s (set WP_BIN_DIR)" % path)
    return path


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Wolfpackd:
    """One wolfpackd process with its own state dir and log file."""

    def __init__(self, extra_args=(), tls=True, env=None, state=None, port=None, wait_ready=False):
        self.dir = tempfile.mkdtemp(prefix="wp-it-")
        # As root the embedded PostgreSQL runs as an unprivileged user, which must be able to
        # traverse the parents of the state directory (as /var/lib allows in production).
        os.chmod(self.dir, 0o755)
        self.state = state or os.path.join(self.dir, "state")
        self.port = port or free_port()
        self.tls = tls
        self.log_path = os.path.join(self.dir, "wolfpackd.log")
        self.out_path = os.path.join(self.dir, "wolfpackd.out")
        args = [binary("wolfpackd"), "--listen", "127.0.0.1:%d" % self.port,
                "--state-dir", self.state, "--log-level", "debug"]
        if not tls:
            args.append("--no-tls")
        args += list(extra_args)
        e = dict(os.environ)
        # LeakSanitizer reports at exit; a small quarantine keeps RSS meaningful for the
        # memory-growth checks (ASan otherwise holds up to 256 MB of freed memory).
        e["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:exitcode=99:quarantine_size_mb=8"
        e.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1:exitcode=98")
        if env:
            e.update(env)
        self.logf = open(self.log_path, "wb")
        self.outf = open(self.out_path, "wb")
        # stderr is the log stream; stdout carries only the join command banner.
        self.proc = subprocess.Popen(args, stdout=self.outf, stderr=self.logf, env=e)
        self.wait_listening()
        if wait_ready:
            self.wait_ready()

    def logged(self, msg):
        """True if a line with this msg was logged (logfmt or JSON)."""
        return re.search(r'msg="?%s|"msg":"%s' % (re.escape(msg), re.escape(msg)), self.log()) is not None

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stdout(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def get(self, path, timeout=10):
        """One GET on a fresh connection. Returns (status, headers, body)."""
        s = self.connect(timeout=timeout)
        try:
            s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
            return read_response(s, timeout=timeout)
        finally:
            s.close()

    def wait_ready(self, timeout=60, want=200):
        """Polls /readyz until it answers `want`. Returns the last body."""
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("wolfpackd exited (%d):\n%s" % (self.proc.returncode, self.log()[-4000:]))
            try:
                status, _, body = self.get("/readyz", timeout=5)
                last = (status, body)
                if status == want:
                    return json.loads(body)
            except (OSError, EOFError):
                pass
            time.sleep(0.2)
        raise RuntimeError("/readyz never answered %d (last %r):\n%s" % (want, last, self.log()[-4000:]))

    def wait_listening(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("wolfpackd exited early (%d):\n%s" % (self.proc.returncode, self.log()))
            if re.search(r'msg="?listening|"msg":"listening"', self.log()):
                return
            time.sleep(0.05)
        raise RuntimeError("wolfpackd did not start listening:\n" + self.log())

    @property
    def ca_file(self):
        return os.path.join(self.state, "tls", "ca.crt")

    def ssl_context(self):
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.check_hostname = True
        return ctx

    def connect(self, timeout=10):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        if self.tls:
            s = self.ssl_context().wrap_socket(s, server_hostname="localhost")
        return s

    def fd_count(self):
        return len(os.listdir("/proc/%d/fd" % self.proc.pid))

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("wolfpackd did not exit on signal %d:\n%s" % (sig, self.log()))
        self.logf.close()
        self.outf.close()
        return self.proc.returncode


def exchange(s, payload, expect_len, timeout=60):
    """Sends payload and reads expect_len bytes back on ONE thread (Python TLS sockets are not
    thread-safe): non-blocking socket, select() on both directions. Returns the bytes read."""
    import select
    s.setblocking(False)
    sent, got = 0, bytearray()
    deadline = time.time() + timeout
    try:
        while len(got) < expect_len and time.time() < deadline:
            want_w = sent < len(payload)
            r, w, _ = select.select([s], [s] if want_w else [], [], 0.5)
            if w and want_w:
                try:
                    sent += s.send(payload[sent:sent + 65536])
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    pass
            # SSL may hold decrypted bytes that select() cannot see: always try to read.
            while True:
                try:
                    d = s.recv(65536)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    break
                if not d:
                    return bytes(got)
                got.extend(d)
    finally:
        s.setblocking(True)
    return bytes(got)


def recv_all(s, limit=8 * 1024 * 1024, timeout=10):
    """Reads until the peer closes (or limit/timeout). Returns bytes."""
    s.settimeout(timeout)
    out = b""
    try:
        while len(out) < limit:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (socket.timeout, ConnectionResetError, ssl.SSLError, OSError):
        pass
    return out


def read_response(s, timeout=10):
    """Reads one HTTP/1.1 response with Content-Length (or until close). Returns (status, headers, body)."""
    s.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError("closed before response headers: %r" % buf[:200])
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:n]


def is_closed(s, timeout=5):
    """True if the peer closed the connection (EOF or reset) within timeout."""
    s.settimeout(timeout)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
        return True
    except ssl.SSLError:
        return True
    except socket.timeout:
        return False
    except OSError:
        return True


class Runner:
    """Runs test functions, prints 'ok/FAIL name', ends with 'N passed, N failed'."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def run(self, fn, *args):
        name = fn.__name__
        t0 = time.time()
        try:
            fn(*args)
            self.passed += 1
            print("ok   %s (%.2fs)" % (name, time.time() - t0), flush=True)
        except Exception:
            self.failed += 1
            print("FAIL %s" % name, flush=True)
            traceback.print_exc()
            sys.stdout.flush()

    def done(self):
        print("%d passed, %d failed" % (self.passed, self.failed), flush=True)
        return 1 if self.failed else 0
