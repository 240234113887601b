"""wolfpack_test.py — shared helpers for the integration tests.

Starts the real wolfpackd binary in a temporary state directory on a free
loopback port, waits until it listens, and offers TLS/plain socket helpers;
for tests with real agents: the admin token, the printed join command, the
admin API, CONNECT streams, an echo server and an Agent process class.
Stdlib only (python3 from Debian), so CI needs nothing beyond apt packages.
"""
import json
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
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
        try:
            return stop_process(self.proc, sig, timeout, "wolfpackd", self.log)
        finally:
            self.logf.close()
            self.outf.close()


def stop_process(proc, sig, timeout, what, log):
    """Sends sig to a running proc and waits up to timeout s. Returns its exit status; on a
    timeout kills it and raises RuntimeError with log() (its log text) in the message."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError("%s did not exit on signal %d:\n%s" % (what, sig, log()[-4000:]))
    return proc.returncode


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

    def expect_exit(self, what, rc, log="", want=0):
        """Counts a failure (printing the log tail) unless a process's exit status rc is want."""
        if rc != want:
            self.failed += 1
            print("FAIL %s exited %s (want %d)\n%s" % (what, rc, want, log[-3000:]), flush=True)

    def finish(self, wp, *agents):
        """End of a run: kills the agents (None skipped) still running, stops wolfpackd and
        counts a failure unless it exited 0. Returns done()'s exit status."""
        for a in agents:
            if a:
                a.kill()
        self.expect_exit("wolfpackd", wp.stop(), wp.log())
        return self.done()

    def done(self):
        print("%d passed, %d failed" % (self.passed, self.failed), flush=True)
        return 1 if self.failed else 0


# ---------------------------------------------------------------------------
# wolfpackd with real agents: the join command, the admin API, agent processes

JOIN_RE = re.compile(r"^\s*wolfpack-agent (--url \S+ --token \S+ --ca-pin sha256:[0-9a-f]{64})\s*$",
                     re.M)
# Sanitizer settings for agents (the exit codes wolfpackd's runs use too).
AGENT_SAN_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=99",
                 "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=98"}
PROXY_VARS = ("https_proxy", "http_proxy", "no_proxy", "all_proxy")


def wait_for(pred, timeout, step=0.1):
    """Polls pred() until it returns something true or timeout seconds pass. Returns its last value."""
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v or time.time() >= deadline:
            return v
        time.sleep(step)


def admin_token(wp):
    """The admin token wolfpackd minted on its first run (<state>/admin.token)."""
    with open(os.path.join(wp.state, "admin.token")) as f:
        return f.read().strip()


def join_args(wp, timeout=20):
    """The --url/--token/--ca-pin arguments of the join command wp printed on stdout."""
    m = wait_for(lambda: JOIN_RE.search(wp.stdout()), timeout)
    assert m, wp.stdout()
    return shlex.split(m.group(1))


def api(wp, method, path, token, body=None, timeout=10):
    """One request with a Bearer token on a fresh connection. Returns (status, JSON body or None)."""
    s = wp.connect(timeout=timeout)
    try:
        data = b"" if body is None else json.dumps(body).encode()
        s.sendall(("%s %s HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n"
                   "Content-Length: %d\r\n\r\n" % (method, path, token, len(data))).encode() + data)
        st, _, raw = read_response(s, timeout=timeout)
    finally:
        s.close()
    return st, (json.loads(raw) if raw else None)


def get_node(wp, token, node):
    """GET /api/v1/nodes/{node}: its JSON, or None when it is unknown or the API did not answer."""
    try:
        st, body = api(wp, "GET", "/api/v1/nodes/" + node, token)
    except (OSError, EOFError, ValueError):
        return None
    return body if st == 200 else None


def connect_stream(wp, target, token):
    """Sends `CONNECT target` with a Bearer token and reads the answer head byte by byte (no
    stream byte is consumed). Returns (socket, head); the caller checks the status and closes."""
    s = wp.connect()
    s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n"
               % (target, target, token)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(1)
        assert d, head
        head += d
    return s, head


def accept_loop(sock, serve):
    """Accepts on a listening socket until it is closed; serve(conn) runs on a daemon thread per
    connection. Returns the (daemon) accepting thread, already started."""
    def loop():
        while True:
            try:
                c, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def pipe(src, dst):
    """Copies src to dst until src's EOF, then half-closes dst. Socket errors end it quietly."""
    try:
        while True:
            d = src.recv(65536)
            if not d:
                break
            dst.sendall(d)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


class EchoServer:
    """Threaded echo server on 127.0.0.1 (.port) or on a unix socket; half-closes after the peer's EOF."""

    def __init__(self, unix_path=None):
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(unix_path)
        else:
            self.sock = socket.socket()
            self.sock.bind(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
        self.sock.listen(16)
        accept_loop(self.sock, self._echo)

    @staticmethod
    def _echo(c):
        try:
            pipe(c, c)
        finally:
            c.close()


class Agent:
    """One wolfpack-agent process: the binary, then args as given (a subcommand first where
    wanted), then --status-listen when status is set ("auto": a free loopback port, kept in
    .status_port; otherwise the value as given). stdout and stderr go to <d>/agent-<name>.log.
    The environment is ours without proxy variables, plus AGENT_SAN_ENV, plus env."""

    def __init__(self, d, name, args, env=None, status=None):
        self.name = name
        self.log_path = os.path.join(d, "agent-%s.log" % name)
        self.status_port = free_port() if status == "auto" else None
        argv = [binary("wolfpack-agent")] + list(args)
        if status is not None:
            argv += ["--status-listen", "127.0.0.1:%d" % self.status_port if self.status_port else status]
        e = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
        e.update(AGENT_SAN_ENV)
        e.update(env or {})
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT, env=e)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def alive(self):
        return self.proc.poll() is None

    def wait(self, timeout):
        """Waits for the process to exit on its own. Returns its exit status."""
        return self.proc.wait(timeout=timeout)

    def stop(self, sig=signal.SIGTERM, timeout=45):
        """Signals the agent and waits. Returns its exit status; raises if it ignored the signal."""
        try:
            return stop_process(self.proc, sig, timeout, "agent " + self.name, self.log)
        finally:
            self.logf.close()

    def kill(self):
        """Cleanup after a failure: SIGKILL if still running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.logf.close()

    def wait_online(self, wp, token, node=None, timeout=40, until=None):
        """Polls GET /api/v1/nodes/{node} (default: this agent's name) until until(node JSON) holds
        (default: status "online"). Returns that JSON, or None on timeout; fails at once, with
        the log tail, when the agent exits."""
        until = until or (lambda n: n.get("status") == "online")
        deadline = time.time() + timeout
        while True:
            assert self.alive(), "agent %s exited (%s):\n%s" % (self.name, self.proc.returncode,
                                                                  self.log()[-3000:])
            n = get_node(wp, token, node or self.name)
            if n is not None and until(n):
                return n
            if time.time() >= deadline:
                return None
            time.sleep(0.3)

    def status_get(self, path):
        """One GET on the agent's --status-listen port. Returns (status, headers, body)."""
        s = socket.create_connection(("127.0.0.1", self.status_port), timeout=5)
        try:
            s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
            return read_response(s)
        finally:
            s.close()

    def status_try_get(self, path):
        """status_get, or None while the endpoint does not answer."""
        try:
            return self.status_get(path)
        except (OSError, EOFError):
            return None

    def metrics(self):
        """The agent's /metrics exposition text (asserts a 200)."""
        st, _, body = self.status_get("/metrics")
        assert st == 200, st
        return body.decode()


def metric(text, name):
    """The value of one sample line `name value` of a Prometheus exposition, or None."""
    m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None
