#!/usr/bin/env python3
"""test_tunnel_e2e.py — the tunnel under load and failure, real binaries only.

Real wolfpackd processes (TLS on loopback, embedded PostgreSQL) and real
wolfpack-agent processes; the only Python stand-ins are the node's local
services (echo, hashing sink, a reader that never reads, a firehose, a
request/response service that answers after EOF). Covered:

  * the agent joins with the printed join command (--ca-pin);
  * a wrong pin, a wrong token and an expired server certificate are refused,
    each with a log line on the agent saying why and one on wolfpackd (debug);
    after a SIGHUP certificate reload the same agent gets in (control case);
  * a service that is not allow-listed gives 502 not_allowed, logged by the agent;
  * half-close request/response: the client half-closes (TLS close_notify →
    FIN → shutdown(SHUT_WR) at the service), the service answers after EOF; and
    the reverse (service half-closes first, the client still sends);
  * 1,000 concurrent streams through one tunnel to an echo service, each gets
    its own 4 KiB back intact; afterwards no fds are leaked on either side;
  * 1 GiB through one stream arrives with the same SHA-256;
  * a stream whose local reader stalls (and one whose client never reads)
    does not delay the others (p50/max of 200 echo round trips) and both
    processes' RSS stays within +64 MiB while the stalled client keeps
    trying to send 100 MiB;
  * SIGSTOP of an agent: wolfpackd declares the tunnel dead within 45 s (its
    heartbeat interval is 30 s here, so the mux liveness timer is what fires);
    SIGCONT: the agent comes back;
  * SIGSTOP of wolfpackd: the agent declares it dead within 45 s; SIGCONT: the
    agent reconnects;
  * SIGKILL of wolfpackd, restart on the same port and state directory: the
    control plane comes back even though its orphaned PostgreSQL survived the
    kill, and the agent (backing off) is online again within 35 s.

The slow liveness cases run in background threads while the main thread runs
the data-path checks. Measurements are printed as "timing <name> <value>" lines.
"""
import hashlib
import json
import os
import re
import selectors
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wolfpack_test import (Runner, Wolfpackd, admin_token, api, binary, join_args,  # noqa: E402
                           read_response, wait_for)

NODE = "it-node"
MiB = 1 << 20
GiB = 1 << 30
ASAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=99:quarantine_size_mb=8",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=98",
}
TIMINGS = []


def timing(name, value):
    TIMINGS.append((name, value))
    print("timing %s %s" % (name, value), flush=True)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid):
    """User + system CPU seconds used by pid so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def pid_alive(pid):
    """True while pid exists and is not a zombie (orphans may be reaped late by pid 1)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def postmaster_pid(wp):
    """PID of the embedded PostgreSQL of wp's state directory, or None."""
    try:
        with open(os.path.join(wp.state, "postgres", "data", "postmaster.pid")) as f:
            pid = int(f.readline().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def kill_orphan_postgres(pid, timeout=15):
    if pid is None or not pid_alive(pid):
        return
    os.kill(pid, signal.SIGQUIT)  # immediate shutdown, as a cgroup/container teardown would
    if not wait_for(lambda: not pid_alive(pid), timeout):
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), 5)


# ---------------------------------------------------------------------------
# the node's local services (plain TCP on 127.0.0.1)


class Listener:
    def __init__(self, backlog=128, rcvbuf=None):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        c.close()


class EchoServer:
    """Echo for thousands of connections in one selector thread; half-closes after EOF."""

    class Conn:
        __slots__ = ("sock", "out", "eof")

        def __init__(self, sock):
            self.sock, self.out, self.eof = sock, bytearray(), False

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1024)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]
        self.accepted = 0
        self.open = 0
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.lsock, selectors.EVENT_READ, None)
        threading.Thread(target=self._loop, daemon=True).start()

    def _update(self, c):
        ev = 0
        if not c.eof and len(c.out) < MiB:
            ev |= selectors.EVENT_READ
        if c.out:
            ev |= selectors.EVENT_WRITE
        if ev == 0:
            self.sel.unregister(c.sock)
            try:
                c.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            c.sock.close()
            self.open -= 1
        else:
            self.sel.modify(c.sock, ev, c)

    def _loop(self):
        while True:
            for key, ev in self.sel.select(0.5):
                if key.data is None:
                    while True:
                        try:
                            s, _ = self.lsock.accept()
                        except (BlockingIOError, InterruptedError):
                            break
                        s.setblocking(False)
                        self.accepted += 1
                        self.open += 1
                        self.sel.register(s, selectors.EVENT_READ, EchoServer.Conn(s))
                    continue
                c = key.data
                try:
                    if ev & selectors.EVENT_READ:
                        d = c.sock.recv(65536)
                        if d:
                            c.out += d
                        else:
                            c.eof = True
                    if c.out:
                        try:
                            n = c.sock.send(c.out)
                            del c.out[:n]
                        except BlockingIOError:
                            pass
                except (ConnectionError, OSError):
                    c.eof, c.out = True, bytearray()
                self._update(c)


class SinkServer(Listener):
    """Reads an 8-byte big-endian length N, then exactly N bytes; answers their SHA-256 hex + "\\n"."""

    def __init__(self):
        self.results = []
        super().__init__()

    def serve(self, c):
        try:
            hdr = b""
            while len(hdr) < 8:
                d = c.recv(8 - len(hdr))
                if not d:
                    return
                hdr += d
            left = struct.unpack(">Q", hdr)[0]
            h = hashlib.sha256()
            buf = bytearray(1 << 20)
            mv = memoryview(buf)
            total = 0
            while left:
                n = c.recv_into(mv, min(left, len(buf)))
                if not n:
                    break
                h.update(mv[:n])
                left -= n
                total += n
            self.results.append(total)
            c.sendall(h.hexdigest().encode() + b"\n")
        except OSError:
            pass
        finally:
            c.close()


class StallServer(Listener):
    """Accepts and never reads (small receive buffer, so the window fills quickly)."""

    def __init__(self):
        self.conns = []
        super().__init__(rcvbuf=65536)

    def serve(self, c):
        self.conns.append(c)


class SourceServer(Listener):
    """Sends up to 100 MiB as fast as the connection takes it (the client never reads)."""

    LIMIT = 100 * MiB

    def __init__(self):
        self.sent = 0
        super().__init__()

    def serve(self, c):
        chunk = os.urandom(65536)
        try:
            while self.sent < self.LIMIT:
                c.sendall(chunk)
                self.sent += len(chunk)
        except OSError:
            pass
        finally:
            c.close()


class ReqRespServer(Listener):
    """Reads until EOF, then answers "<n> <sha256 hex>\\n" and closes (needs the client's half-close)."""

    def __init__(self):
        self.eofs = 0
        super().__init__()

    def serve(self, c):
        h = hashlib.sha256()
        n = 0
        try:
            c.settimeout(60)
            while True:
                d = c.recv(65536)
                if not d:
                    break
                h.update(d)
                n += len(d)
            self.eofs += 1
            c.sendall(b"%d %s\n" % (n, h.hexdigest().encode()))
        except OSError:
            pass
        finally:
            c.close()


class BannerServer(Listener):
    """Sends a banner and half-closes at once, then records what it receives until EOF."""

    def __init__(self):
        self.received = []
        super().__init__()

    def serve(self, c):
        try:
            c.settimeout(30)
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


# ---------------------------------------------------------------------------
# the agent and the control plane's API


class Agent:
    """One wolfpack-agent process; argv from a join command or built by hand."""

    def __init__(self, d, name, args, log_level="debug"):
        self.name = name
        self.log_path = os.path.join(d, "agent-%s.log" % name)
        self.logf = open(self.log_path, "wb")
        argv = [binary("wolfpack-agent"), "run"] + list(args) + ["--status-listen", "none",
                                                                 "--log-level", log_level]
        env = dict(os.environ)
        env.update(ASAN_ENV)
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT, env=env)
        self.pid = self.proc.pid

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def count(self, msg):
        return len(re.findall(r'msg="%s' % re.escape(msg), self.log()))

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=45):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("agent %s ignored SIGTERM:\n%s" % (self.name, self.log()[-3000:]))
        if not self.logf.closed:
            self.logf.close()
        return self.proc.returncode


def node_state(wp, token, node):
    """(status, connected_replica) of a node, or (None, None) when unknown / unreachable."""
    try:
        st, b = api(wp, "GET", "/api/v1/nodes/" + node, token)
    except (OSError, EOFError, ValueError):
        return None, None
    if st != 200:
        return None, None
    return b.get("status"), b.get("connected_replica")


def node_online(wp, token, node):
    status, replica = node_state(wp, token, node)
    return status == "online" and replica is not None


def connect_head(s):
    """Reads the CONNECT answer head byte by byte; returns (status, headers, json body or None)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(1)
        if not d:
            raise EOFError("closed before the CONNECT answer: %r" % buf)
        buf += d
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
        d = s.recv(n - len(body))
        if not d:
            break
        body += d
    return status, headers, (json.loads(body) if body else None)


def connect_req(target, token):
    return ("CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Bearer %s\r\n\r\n"
            % (target, target, token)).encode()


def open_stream(c, service, timeout=20):
    """CONNECT it-node:<service> on W1; returns (blocking TLS socket, status, body)."""
    s = c.w1.connect(timeout=timeout)
    s.sendall(connect_req("%s:%s" % (NODE, service), c.admin1))
    st, _, body = connect_head(s)
    return s, st, body


def recv_exact(s, n):
    out = bytearray()
    while len(out) < n:
        d = s.recv(n - len(out))
        if not d:
            raise EOFError("EOF after %d of %d bytes" % (len(out), n))
        out += d
    return bytes(out)


class Ctx:
    pass


class WolfpackdOwnCert(Wolfpackd):
    """A wolfpackd serving a certificate from --tls-cert: the test's own API calls do not verify
    it (it may be expired on purpose; the agent is what is under test)."""

    def ssl_context(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx


# ---------------------------------------------------------------------------
# 1. join with the pinned CA


def test_agent_joins_with_pin(c):
    args = join_args(c.w1)
    assert args[args.index("--ca-pin") + 1].startswith("sha256:"), args
    c.pin1 = args[args.index("--ca-pin") + 1]
    c.url1 = args[args.index("--url") + 1]
    c.join1 = args[args.index("--token") + 1]
    svc = ["echo=tcp:127.0.0.1:%d" % c.echo.port, "sink=tcp:127.0.0.1:%d" % c.sink.port,
           "stall=tcp:127.0.0.1:%d" % c.stall.port, "source=tcp:127.0.0.1:%d" % c.source.port,
           "reqresp=tcp:127.0.0.1:%d" % c.reqresp.port, "banner=tcp:127.0.0.1:%d" % c.banner.port,
           "closed=tcp:127.0.0.1:%d" % c.closed_port]
    args += ["--node-id", NODE] + [a for s in svc for a in ("--service", s)]
    t0 = time.time()
    c.a1 = Agent(c.dir, "a1", args)
    c.agents.append(c.a1)
    ok = wait_for(lambda: node_online(c.w1, c.admin1, NODE) or not c.a1.alive(), 30, 0.2)
    assert ok and c.a1.alive(), (node_state(c.w1, c.admin1, NODE), c.a1.log()[-3000:])
    timing("join_s", "%.2f" % (time.time() - t0))
    assert c.a1.count("tunnel up") == 1, c.a1.log()[-2000:]


# ---------------------------------------------------------------------------
# 2. wrong pin, wrong token, expired certificate


def test_wrong_pin_refused(c):
    real = c.pin1.split(":", 1)[1]
    bad = "sha256:" + ("0" if real[0] != "0" else "1") + real[1:]
    hs_before = len(re.findall(r'msg="tls handshake failed"', c.w1.log()))
    a = Agent(c.dir, "badpin", ["--url", c.url1, "--token", c.join1, "--ca-pin", bad,
                                "--node-id", "it-badpin"], log_level="info")
    c.agents.append(a)
    try:
        # the failure, at the default log level, naming the pin; retried with backoff
        assert wait_for(lambda: re.search(r'level=error msg="TLS verification of the control plane '
                                          r'failed".*pin', a.log()), 15), a.log()
        assert wait_for(lambda: a.count("reconnecting") >= 2, 15), a.log()
        # wolfpackd saw the handshake fail (debug level)
        assert wait_for(lambda: len(re.findall(r'level=debug msg="tls handshake failed"',
                                               c.w1.log())) > hs_before, 10), c.w1.log()[-3000:]
        assert "tunnel up" not in a.log()
        assert node_state(c.w1, c.admin1, "it-badpin") == (None, None)
    finally:
        rc = a.stop()
    assert rc == 0, (rc, a.log()[-2000:])
    assert c.join1 not in a.log()


def test_wrong_token_refused(c):
    a = Agent(c.dir, "badtoken", ["--url", c.url1, "--token", "wpjoin_" + "x" * 43,
                                  "--ca-pin", c.pin1, "--node-id", "it-badtoken"], log_level="info")
    c.agents.append(a)
    try:
        assert wait_for(lambda: re.search(r'level=error msg="the control plane refused our token" '
                                          r'status=401', a.log()), 15), a.log()
        assert wait_for(lambda: a.count("the control plane refused our token") >= 2, 15), a.log()
        # wolfpackd's side: the refused upgrade is in its request log (debug)
        assert re.search(r'level=debug msg="http request" method=GET path=/api/v1/tunnel status=401 ',
                         c.w1.log()), c.w1.log()[-3000:]
        assert node_state(c.w1, c.admin1, "it-badtoken") == (None, None)
    finally:
        rc = a.stop()
    assert rc == 0, (rc, a.log()[-2000:])
    assert "x" * 43 not in a.log() and "x" * 43 not in c.w1.log()


def make_expired_cert(d):
    """A CA and two leaves for 127.0.0.1/localhost from it: one expired in 2020, one valid.

    OpenSSL 3.0's `x509 -req` has no -not_before/-not_after, but `openssl ca`
    takes -startdate/-enddate, which is all an expired certificate needs.
    Returns (ca.crt, expired chain, valid chain, leaf key)."""
    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, cwd=d, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650", "-subj", "/CN=wolfpack test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost")
    os.makedirs(os.path.join(d, "db"), exist_ok=True)
    open(os.path.join(d, "db", "index.txt"), "w").close()
    with open(os.path.join(d, "ca.cnf"), "w") as f:
        f.write("""[ca]
default_ca = test
[test]
dir = %s
database = $dir/db/index.txt
new_certs_dir = $dir/db
serial = $dir/db/serial
default_md = sha256
policy = any
copy_extensions = none
unique_subject = no
x509_extensions = leaf
[any]
commonName = supplied
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
""" % d)
    with open(os.path.join(d, "db", "serial"), "w") as f:
        f.write("1000\n")
    run("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.crt", "-keyfile", "ca.key",
        "-in", "leaf.csr", "-out", "expired.crt", "-notext",
        "-startdate", "20200101000000Z", "-enddate", "20200201000000Z")
    run("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.crt", "-keyfile", "ca.key",
        "-in", "leaf.csr", "-out", "valid.crt", "-notext", "-days", "30")
    out = subprocess.run(["openssl", "x509", "-in", "expired.crt", "-noout", "-enddate"], cwd=d,
                         check=True, capture_output=True, text=True).stdout
    assert "2020" in out, out
    ca = open(os.path.join(d, "ca.crt")).read()
    chains = []
    for leaf in ("expired.crt", "valid.crt"):
        p = os.path.join(d, leaf.replace(".crt", "-chain.pem"))
        with open(p, "w") as f:
            f.write(open(os.path.join(d, leaf)).read() + ca)
        chains.append(p)
    return os.path.join(d, "ca.crt"), chains[0], chains[1], os.path.join(d, "leaf.key")


def test_expired_cert_refused(c):
    """W3 serves an expired leaf (chain to a CA the agent trusts via --ca-file)."""
    w = c.w3
    w.wait_ready()
    with open(os.path.join(w.state, "join.token")) as f:
        join = f.read().strip()
    admin = admin_token(w)
    hs_before = len(re.findall(r'level=debug msg="tls handshake failed"', w.log()))
    a = Agent(c.dir, "expired", ["--url", "wss://127.0.0.1:%d" % w.port, "--token", join,
                                 "--ca-file", c.tls_ca, "--node-id", "it-expired"], log_level="info")
    c.agents.append(a)
    try:
        line = wait_for(lambda: re.search(r'level=(?:error|warn) msg="TLS verification of the control '
                                          r'plane failed".*', a.log()), 15)
        assert line, a.log()
        assert node_state(w, admin, "it-expired") == (None, None)
        assert wait_for(lambda: len(re.findall(r'level=debug msg="tls handshake failed"', w.log())) > hs_before,
                        10), w.log()[-3000:]
        # control case: the same agent, CA and key with a valid leaf gets in after a reload
        with open(c.tls_valid) as src, open(c.tls_cert_path, "w") as dst:
            dst.write(src.read())
        w.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: re.search(r'msg="tls certificate reloaded"', w.log()), 10), w.log()[-2000:]
        t0 = time.time()
        assert wait_for(lambda: node_online(w, admin, "it-expired"), 40, 0.3), a.log()[-3000:]
        timing("expired_then_reload_reconnect_s", "%.1f" % (time.time() - t0))
        # the refusal must say why: the certificate expired (PROTOCOL.md §2.1)
        assert re.search(r"expired", line.group(0), re.I) and not re.search(
            r"unknown CA, expired or name mismatch", line.group(0)), \
            "agent does not say the certificate expired: " + line.group(0)
    finally:
        rc = a.stop()
    assert rc == 0, (rc, a.log()[-2000:])


# ---------------------------------------------------------------------------
# 9. not allow-listed


def test_disallowed_service_refused(c):
    before = c.a1.count("stream refused")
    s, st, body = open_stream(c, "ssh")
    s.close()
    assert st == 502 and body["error"]["code"] == "not_allowed", (st, body)
    assert wait_for(lambda: re.search(r'msg="stream refused" stream=\d+ code=not_allowed', c.a1.log()), 5), \
        c.a1.log()[-2000:]
    s, st, body = open_stream(c, "closed")
    s.close()
    assert st == 502 and body["error"]["code"] == "refused", (st, body)
    assert wait_for(lambda: c.a1.count("stream refused") >= before + 2, 5)
    s, st, body = open_stream(c, "echo")
    s.sendall(b"still works")
    assert recv_exact(s, 11) == b"still works"
    s.close()


# ---------------------------------------------------------------------------
# 6. half-close


def test_half_close_request_response(c):
    """The client half-closes (TLS close_notify, the only half-close TLS has); the service sees EOF
    only after all 700 KB (more than two windows), answers, and the answer comes back."""
    s, st, body = open_stream(c, "reqresp")
    assert st == 200, (st, body)
    data = os.urandom(700 * 1000)
    s.sendall(data)
    # SSLSocket.unwrap() sends close_notify; on a non-blocking socket it then stops with
    # SSLWantReadError instead of waiting for the peer's close_notify, and the socket stays
    # readable as TLS (OpenSSL reads after sending close_notify).
    s.setblocking(False)
    try:
        s.unwrap()
        raise AssertionError("unwrap completed: the peer closed TLS before answering")
    except ssl.SSLWantReadError:
        pass
    s.setblocking(True)
    s.settimeout(20)
    got = b""
    while True:
        try:
            d = s.recv(4096)
        except ssl.SSLZeroReturnError:
            break
        if not d:
            break
        got += d
    s.close()
    assert got == b"%d %s\n" % (len(data), hashlib.sha256(data).hexdigest().encode()), got


def test_half_close_service_first(c):
    """The service half-closes first: the client reads EOF, then still sends, and it arrives."""
    before = len(c.banner.received)
    s, st, body = open_stream(c, "banner")
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
    assert wait_for(lambda: len(c.banner.received) > before, 10), c.banner.received
    assert c.banner.received[before] == b"after-fin", c.banner.received


# ---------------------------------------------------------------------------
# 3. 1,000 concurrent streams


class Stream:
    __slots__ = ("i", "sock", "raw", "phase", "buf", "data", "sent", "got")

    def __init__(self, i):
        self.i, self.sock, self.raw, self.phase = i, None, None, "tcp"
        self.buf, self.data, self.sent, self.got = b"", b"", 0, bytearray()


def open_many(wp, target, token, n, inflight_max=48, timeout=90):
    """Opens n CONNECT streams with at most inflight_max opening at once (the server refuses more
    than 128 un-acked SYNs per tunnel); one thread, non-blocking TLS. Returns the Stream list
    (phase "open") or raises."""
    ctx = wp.ssl_context()
    req = connect_req(target, token)
    sel = selectors.DefaultSelector()
    streams, opening, started, opened = [], 0, 0, 0
    deadline = time.time() + timeout

    def start():
        st = Stream(len(streams))
        streams.append(st)
        st.raw = socket.socket()
        st.raw.setblocking(False)
        st.raw.connect_ex(("127.0.0.1", wp.port))
        sel.register(st.raw, selectors.EVENT_WRITE, st)

    while opened < n:
        while opening < inflight_max and started < n:
            start()
            started += 1
            opening += 1
        if time.time() > deadline:
            raise AssertionError("only %d of %d streams opened in %d s" % (opened, n, timeout))
        for key, _ in sel.select(1.0):
            st = key.data
            try:
                if st.phase == "tcp":
                    err = st.raw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    assert err == 0, os.strerror(err)
                    sel.unregister(st.raw)
                    st.sock = ctx.wrap_socket(st.raw, server_hostname="localhost",
                                              do_handshake_on_connect=False)
                    st.phase = "tls"
                    sel.register(st.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, st)
                if st.phase == "tls":
                    try:
                        st.sock.do_handshake()
                    except ssl.SSLWantReadError:
                        sel.modify(st.sock, selectors.EVENT_READ, st)
                        continue
                    except ssl.SSLWantWriteError:
                        sel.modify(st.sock, selectors.EVENT_WRITE, st)
                        continue
                    st.phase = "req"
                if st.phase == "req":
                    try:
                        st.sock.send(req)
                    except ssl.SSLWantWriteError:
                        sel.modify(st.sock, selectors.EVENT_WRITE, st)
                        continue
                    except ssl.SSLWantReadError:
                        sel.modify(st.sock, selectors.EVENT_READ, st)
                        continue
                    st.phase = "head"
                    sel.modify(st.sock, selectors.EVENT_READ, st)
                    continue
                if st.phase == "head":
                    while b"\r\n\r\n" not in st.buf:
                        try:
                            d = st.sock.recv(4096)
                        except ssl.SSLWantReadError:
                            break
                        if not d:
                            raise EOFError("EOF before the CONNECT answer: %r" % st.buf)
                        st.buf += d
                    if b"\r\n\r\n" in st.buf:
                        head, rest = st.buf.split(b"\r\n\r\n", 1)
                        if not head.startswith(b"HTTP/1.1 200"):
                            raise AssertionError("stream %d: %r" % (st.i, st.buf[:300]))
                        st.got += rest
                        st.phase = "open"
                        sel.unregister(st.sock)
                        opening -= 1
                        opened += 1
            except Exception as e:  # noqa: BLE001 — re-raised with the stream's context
                raise AssertionError("stream %d failed while %s: %r" % (st.i, st.phase, e)) from e
    sel.close()
    return streams


def exchange_all(streams, size, timeout=60):
    """Each stream sends its own `size` bytes and reads them back; one thread, non-blocking."""
    sel = selectors.DefaultSelector()
    for st in streams:
        st.data = b"%06d" % st.i + os.urandom(size - 6)
        st.phase = "io"
        sel.register(st.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, st)
    left = len(streams)
    deadline = time.time() + timeout
    while left:
        if time.time() > deadline:
            bad = [(st.i, st.sent, len(st.got)) for st in streams if st.phase == "io"][:10]
            raise AssertionError("%d streams unfinished after %d s, e.g. %s" % (left, timeout, bad))
        for key, ev in sel.select(1.0):
            st = key.data
            if ev & selectors.EVENT_WRITE and st.sent < len(st.data):
                try:
                    st.sent += st.sock.send(st.data[st.sent:])
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    pass
            if ev & selectors.EVENT_READ:
                while True:
                    try:
                        d = st.sock.recv(65536)
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        break
                    if not d:
                        raise AssertionError("stream %d: EOF after %d bytes" % (st.i, len(st.got)))
                    st.got += d
            if len(st.got) >= len(st.data):
                assert bytes(st.got) == st.data, "stream %d got other bytes (%d vs %d)" % (
                    st.i, len(st.got), len(st.data))
                st.phase = "done"
                sel.unregister(st.sock)
                left -= 1
            elif st.sent >= len(st.data):
                sel.modify(st.sock, selectors.EVENT_READ, st)
    sel.close()


def test_1000_concurrent_streams(c):
    n = 1000
    # wolfpackd's default connection limit leaves room for n CONNECT clients
    helptext = subprocess.run([binary("wolfpackd"), "--help"], capture_output=True, text=True).stdout
    m = re.search(r"--max-connections N .*\(default: (\d+)\)", helptext)
    assert m and int(m.group(1)) >= n + 64, helptext
    wp_fds0, ag_fds0 = fd_count(c.w1.proc.pid), fd_count(c.a1.pid)
    echo0 = c.echo.accepted
    t0 = time.time()
    streams = open_many(c.w1, "%s:echo" % NODE, c.admin1, n)
    t1 = time.time()
    # all n are open at the same time: the agent holds n local connections to the echo service
    assert wait_for(lambda: c.echo.open >= n, 10), (c.echo.open, c.echo.accepted - echo0)
    assert fd_count(c.a1.pid) >= ag_fds0 + n, (fd_count(c.a1.pid), ag_fds0)
    exchange_all(streams, 4096)
    t2 = time.time()
    timing("streams_1000_open_s", "%.2f" % (t1 - t0))
    timing("streams_1000_exchange_4KiB_each_s", "%.2f" % (t2 - t1))
    for st in streams:
        st.sock.close()
    # every local connection closes (client close -> FIN -> EOF at the service), no fd leaks
    assert wait_for(lambda: c.echo.open == 0, 20), c.echo.open
    assert wait_for(lambda: fd_count(c.w1.proc.pid) <= wp_fds0 + 5, 20), (fd_count(c.w1.proc.pid), wp_fds0)
    assert wait_for(lambda: fd_count(c.a1.pid) <= ag_fds0 + 2, 20), (fd_count(c.a1.pid), ag_fds0)
    assert c.echo.accepted - echo0 == n, c.echo.accepted - echo0


# ---------------------------------------------------------------------------
# 5. a stalled stream does not delay the others; memory stays bounded


def test_stalled_stream_isolated(c):
    wp_rss0, ag_rss0 = rss_kb(c.w1.proc.pid), rss_kb(c.a1.pid)
    echoes = []
    for _ in range(4):
        s, st, body = open_stream(c, "echo")
        assert st == 200, (st, body)
        s.settimeout(5)
        echoes.append(s)
    # upload into a service that never reads
    up, st, body = open_stream(c, "stall")
    assert st == 200, (st, body)
    up.setblocking(False)
    # download from a service that never stops, by a client that never reads
    down, st, body = open_stream(c, "source")
    assert st == 200, (st, body)
    chunk = os.urandom(65536)  # always the same object: OpenSSL wants a retried write repeated
    state = {"sent": 0, "last": time.time()}
    goal = 100 * MiB

    def push():
        for _ in range(64):
            if state["sent"] >= goal:
                return
            try:
                state["sent"] += up.send(chunk)
                state["last"] = time.time()
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return

    # fill everything up: the upload stops making progress (window + socket buffers full),
    # the source's sender blocks
    deadline = time.time() + 30
    prev_src = -1
    while time.time() < deadline:
        push()
        if time.time() - state["last"] > 1.0 and c.source.sent == prev_src:
            break
        prev_src = c.source.sent
        time.sleep(0.05)
    assert state["sent"] < goal, "the upload never stalled: %d bytes accepted" % state["sent"]
    assert c.source.sent < SourceServer.LIMIT, c.source.sent
    stalled_up, stalled_down = state["sent"], c.source.sent
    # 200 small round trips on the other streams while the stalled client keeps pushing
    rtts = []
    for i in range(200):
        push()
        e = echoes[i % len(echoes)]
        msg = b"%08d" % i + os.urandom(56)
        t = time.perf_counter()
        e.sendall(msg)
        assert recv_exact(e, len(msg)) == msg
        rtts.append(time.perf_counter() - t)
    rtts.sort()
    p50, p99, mx = rtts[len(rtts) // 2], rtts[int(len(rtts) * 0.99)], rtts[-1]
    timing("stalled_echo_rtt_ms", "p50=%.2f p99=%.2f max=%.2f" % (p50 * 1e3, p99 * 1e3, mx * 1e3))
    push()
    wp_rss, ag_rss = rss_kb(c.w1.proc.pid), rss_kb(c.a1.pid)
    timing("stalled_bytes", "upload_accepted=%d download_sent=%d" % (state["sent"], c.source.sent))
    timing("stalled_rss_delta_kib", "wolfpackd=%d agent=%d" % (wp_rss - wp_rss0, ag_rss - ag_rss0))
    assert mx < 0.2, "a stalled stream delayed others: max RTT %.1f ms" % (mx * 1e3)
    assert p50 < 0.05, "p50 RTT %.1f ms" % (p50 * 1e3)
    assert wp_rss - wp_rss0 < 64 * 1024, (wp_rss0, wp_rss)
    assert ag_rss - ag_rss0 < 64 * 1024, (ag_rss0, ag_rss)
    # nothing moved while stalled: buffering is bounded, not growing
    assert state["sent"] - stalled_up <= 1 * MiB, (stalled_up, state["sent"])
    assert c.source.sent - stalled_down <= 1 * MiB, (stalled_down, c.source.sent)
    for s in echoes + [up, down]:
        s.close()
    # The stalled upload's FIN cannot be delivered (the service never reads what is buffered before
    # it), so that stream would linger until the 60 s reaper; the service closing ends it (RST).
    for s in c.stall.conns:
        s.close()
    s, st, body = open_stream(c, "echo")
    s.sendall(b"after")
    assert recv_exact(s, 5) == b"after"
    s.close()


# ---------------------------------------------------------------------------
# 4. 1 GiB, same SHA-256


def test_1gib_sha256(c):
    size = GiB
    pool = os.urandom(64 * MiB + 4096)
    pmv = memoryview(pool)
    chunk = 4 * MiB
    s, st, body = open_stream(c, "sink", timeout=60)
    assert st == 200, (st, body)
    s.settimeout(120)
    h = hashlib.sha256()
    cpu0 = (cpu_s(c.w1.proc.pid), cpu_s(c.a1.pid), time.process_time())
    t0 = time.time()
    s.sendall(struct.pack(">Q", size))
    sent = 0
    i = 0
    while sent < size:
        off = (i * 1000003) % (len(pool) - chunk)
        part = pmv[off:off + min(chunk, size - sent)]
        h.update(part)
        s.sendall(part)
        sent += len(part)
        i += 1
    line = b""
    while not line.endswith(b"\n"):
        d = s.recv(100)
        assert d, "sink closed after %r (received %s)" % (line, c.sink.results)
        line += d
    dt = time.time() - t0
    s.close()
    timing("gib_transfer_s", "%.1f (%.0f MiB/s)" % (dt, size / MiB / dt))
    timing("gib_cpu_s", "wolfpackd=%.1f agent=%.1f test_process=%.1f" % (
        cpu_s(c.w1.proc.pid) - cpu0[0], cpu_s(c.a1.pid) - cpu0[1], time.process_time() - cpu0[2]))
    assert c.sink.results and c.sink.results[-1] == size, c.sink.results
    assert line.strip().decode() == h.hexdigest(), (line, h.hexdigest())


# ---------------------------------------------------------------------------
# 7. and 8. liveness (background threads)


class Background:
    """Runs fn(c) in a thread; the Runner later reports it through join()."""

    def __init__(self, name, fn, c):
        self.name, self.exc, self.t = name, None, threading.Thread(target=self._run, args=(fn, c), daemon=True)
        self.t.start()

    def _run(self, fn, c):
        try:
            fn(c)
        except BaseException as e:  # noqa: BLE001 — reported by join()
            self.exc = (e, traceback.format_exc())

    def join(self, timeout):
        self.t.join(timeout)
        if self.t.is_alive():
            raise AssertionError("%s still running after %d s" % (self.name, timeout))
        if self.exc:
            raise AssertionError("%s failed:\n%s" % (self.name, self.exc[1]))


def bg_agent_sigstop(c):
    """A2 on W1 (heartbeat interval 30 s: two intervals exceed 45 s, so the mux liveness timer
    is what notices); SIGSTOP A2 → W1 ends the tunnel within 45 s; SIGCONT → A2 is back."""
    a = Agent(c.dir, "a2", ["--url", c.url1, "--token", c.join1, "--ca-pin", c.pin1,
                            "--node-id", "it-stopped-agent", "--service", "echo=tcp:127.0.0.1:%d" % c.echo.port])
    c.agents.append(a)
    assert wait_for(lambda: node_online(c.w1, c.admin1, "it-stopped-agent"), 30, 0.3), a.log()[-2000:]
    time.sleep(2)
    t0 = time.time()
    os.kill(a.pid, signal.SIGSTOP)
    try:
        dead = wait_for(lambda: re.search(r'msg="tunnel dead: nothing received for 45 s" node=it-stopped-agent',
                                          c.w1.log()), 60, 0.2)
        dt = time.time() - t0
        timing("agent_sigstop_detected_by_wolfpackd_s", "%.1f" % dt)
        assert dead, "wolfpackd did not declare the tunnel dead: %s" % (c.w1.log()[-3000:],)
        assert 20 <= dt <= 45 + 5, dt
        off = wait_for(lambda: node_state(c.w1, c.admin1, "it-stopped-agent")[1] is None, 10)
        assert off, node_state(c.w1, c.admin1, "it-stopped-agent")
        assert node_state(c.w1, c.admin1, "it-stopped-agent")[0] == "offline"
    finally:
        os.kill(a.pid, signal.SIGCONT)
    t1 = time.time()
    assert wait_for(lambda: node_online(c.w1, c.admin1, "it-stopped-agent"), 40, 0.3), a.log()[-3000:]
    timing("agent_sigcont_back_online_s", "%.1f" % (time.time() - t1))
    assert a.count("tunnel up") == 2, a.log()[-3000:]
    c.a2 = a


def ppid(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def pg_lines(w):
    """wolfpackd's log lines about its embedded postgres failing, for a failure message."""
    keep = r'lock file|another postmaster|postgres exited|did not start|cannot use the database|msg="ready"'
    return "\n".join(line for line in w.log().splitlines() if re.search(keep, line))[-2500:]


def own_postgres_problem(w, orphan):
    """None when the restarted wolfpackd w runs its own, supervised postgres (the orphaned
    postmaster of the killed one is gone); else what is wrong."""
    # the supervisor retries a failed postmaster after 1-2 s: give it the time to show
    time.sleep(3)
    if not w.alive():
        return "wolfpackd exited (%s):\n%s" % (w.proc.returncode, w.log()[-1500:])
    if re.search(r'lock file \\"postmaster.pid\\" already exists', w.log()):
        return ("/readyz answered 200 but its own postgres cannot start: the orphaned postmaster "
                "(PID %d) holds the data directory and wolfpackd's database connections went to "
                "it:\n%s" % (orphan, pg_lines(w)))
    pid = postmaster_pid(w)
    if pid is None or ppid(pid) != w.proc.pid:
        return "postmaster.pid names PID %s, not a child of wolfpackd %d" % (pid, w.proc.pid)
    if pid_alive(orphan):
        return "the orphaned postmaster (PID %d) is still running" % orphan
    return None


def bg_cp_sigstop_then_sigkill(c):
    """A3 on W2: SIGSTOP W2 → A3 declares it dead within 45 s; SIGCONT → A3 back. Then SIGKILL W2
    and restart it on the same port and state dir → ready, and A3 online again within 35 s."""
    w = c.w2
    w.wait_ready()
    args = join_args(w) + ["--node-id", "it-cp-stopped", "--service", "echo=tcp:127.0.0.1:%d" % c.echo.port]
    a = Agent(c.dir, "a3", args)
    c.agents.append(a)
    admin = admin_token(w)
    assert wait_for(lambda: node_online(w, admin, "it-cp-stopped"), 30, 0.3), a.log()[-2000:]
    time.sleep(2)
    t0 = time.time()
    os.kill(w.proc.pid, signal.SIGSTOP)
    try:
        dead = wait_for(lambda: a.count("control plane silent: tunnel is dead") >= 1, 60, 0.2)
        dt = time.time() - t0
        timing("wolfpackd_sigstop_detected_by_agent_s", "%.1f" % dt)
        assert dead, a.log()[-3000:]
        assert 20 <= dt <= 45 + 5, dt
    finally:
        os.kill(w.proc.pid, signal.SIGCONT)
    t1 = time.time()
    assert wait_for(lambda: a.count("tunnel up") >= 2 and node_online(w, admin, "it-cp-stopped"), 40, 0.3), \
        a.log()[-3000:]
    timing("wolfpackd_sigcont_agent_back_s", "%.1f" % (time.time() - t1))
    c.bg_results["cp_sigstop"] = "ok"

    # SIGKILL: nothing is cleaned up; postgres (wolfpackd's child) is orphaned
    pg = postmaster_pid(w)
    assert pg, "no embedded postgres found"
    ups, retries = a.count("tunnel up"), a.count("reconnecting")
    w.proc.kill()
    w.proc.wait()
    w.stop()
    c.dead_wps.append(w)
    # the agent retries with growing attempt numbers (full-jitter backoff, checked at the end)
    assert wait_for(lambda: a.count("reconnecting") >= retries + 2, 35), a.log()[-2000:]
    attempts = [int(n) for n in re.findall(r'msg="reconnecting" delay_ms=\d+ attempt=(\d+)', a.log())]
    assert attempts[-1] == attempts[-2] + 1, attempts  # a refused attempt counts: the wait grows
    c.w2 = None
    t2 = time.time()
    try:
        c.w2 = Wolfpackd(state=w.state, port=w.port, extra_args=c.w2_args)
        c.w2.wait_ready(timeout=30)
        restart_err = own_postgres_problem(c.w2, pg)
    except RuntimeError as e:
        restart_err = "did not become ready: " + (pg_lines(c.w2) if c.w2 is not None else str(e)[-1500:])
    if restart_err:
        # What a cgroup/container teardown would have done: kill the orphan, then start afresh.
        kill_orphan_postgres(pg)
        if c.w2 is not None:
            c.w2.stop(timeout=30)
            c.dead_wps.append(c.w2)
            c.w2 = None
        kill_orphan_postgres(postmaster_pid(w))
        c.w2 = Wolfpackd(state=w.state, port=w.port, extra_args=c.w2_args)
        c.w2.wait_ready()
    w2 = c.w2
    t3 = time.time()
    timing("wolfpackd_restart_ready_s", "%.1f%s" % (t3 - t2, " (after killing the orphan)" if restart_err else ""))
    back = wait_for(lambda: a.count("tunnel up") > ups and node_online(w2, admin, "it-cp-stopped"), 40, 0.3)
    timing("wolfpackd_sigkill_agent_back_after_ready_s", "%.1f" % (time.time() - t3))
    assert back, a.log()[-3000:]
    assert time.time() - t3 <= 35, time.time() - t3
    c.bg_results["cp_sigkill_agent_back"] = "ok"
    c.bg_results["cp_restart_with_orphan_postgres"] = restart_err
    c.a3 = a


def test_agent_sigstop_detected(c):
    c.bg_agent.join(120)


def test_cp_sigstop_detected_and_agent_reconnects(c):
    c.bg_cp.join(200)
    assert c.bg_results.get("cp_sigstop") == "ok", c.bg_results


def test_cp_sigkill_agent_backs_off_and_reconnects(c):
    c.bg_cp.join(200)
    assert c.bg_results.get("cp_sigkill_agent_back") == "ok", c.bg_results


def test_cp_restarts_after_sigkill_with_orphaned_postgres(c):
    """wolfpackd SIGKILLed leaves its embedded postgres running (it is not in a cgroup here);
    starting wolfpackd again on the same state directory must still work."""
    c.bg_cp.join(200)
    assert "cp_restart_with_orphan_postgres" in c.bg_results, c.bg_results
    err = c.bg_results["cp_restart_with_orphan_postgres"]
    assert err is None, "restart with the old postmaster alive: " + err


# ---------------------------------------------------------------------------


def check_backoff(a):
    """Every retry delay is within full jitter: rand(0, min(30 s, 1 s * 2^n)), n = attempt - 1."""
    for delay, attempt in re.findall(r'msg="reconnecting" delay_ms=(\d+) attempt=(\d+)', a.log()):
        bound = min(30000, 1000 * 2 ** min(int(attempt) - 1, 15))
        assert int(delay) <= bound, (a.name, delay, attempt)


def test_clean_exit_and_no_secrets(c):
    secrets = [c.admin1, c.join1]
    for a in list(c.agents):
        check_backoff(a)
        t0 = time.time()
        rc = a.stop()
        dt = time.time() - t0
        if dt > 5:
            timing("agent_%s_sigterm_exit_s" % a.name, "%.1f" % dt)
        if a is c.a1:
            # every stream of the tests above is closed: SIGTERM drains at once
            assert 'msg="drained: no open streams"' in a.log() and dt < 10, (dt, a.log()[-2000:])
        assert rc == 0, (a.name, rc, a.log()[-2000:])
        for s in secrets:
            assert s not in a.log(), a.name
        assert not re.search(r"Sanitizer|runtime error:", a.log()), a.log()[-3000:]
    for s in secrets:
        assert s not in c.w1.log()


def main():
    r = Runner()
    c = Ctx()
    c.dir = tempfile.mkdtemp(prefix="wp-tun-e2e-")
    os.chmod(c.dir, 0o755)
    c.agents = []
    c.bg_results = {}
    c.dead_wps = []  # killed on purpose: no exit status to check, logs still scanned
    c.echo = EchoServer()
    c.sink = SinkServer()
    c.stall = StallServer()
    c.source = SourceServer()
    c.reqresp = ReqRespServer()
    c.banner = BannerServer()
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    c.closed_port = ls.getsockname()[1]
    ls.close()
    tls_dir = os.path.join(c.dir, "tls")
    os.makedirs(tls_dir)
    c.tls_ca, expired, c.tls_valid, key = make_expired_cert(tls_dir)
    c.tls_cert_path = os.path.join(tls_dir, "server-chain.pem")
    with open(expired) as src, open(c.tls_cert_path, "w") as dst:
        dst.write(src.read())
    t0 = time.time()
    c.w2_args = ["--heartbeat-interval", "10"]
    c.w1 = Wolfpackd(extra_args=["--heartbeat-interval", "30"])
    c.w2 = Wolfpackd(extra_args=c.w2_args)
    c.w3 = WolfpackdOwnCert(extra_args=["--tls-cert", c.tls_cert_path, "--tls-key", key])
    try:
        c.w1.wait_ready()
        timing("wolfpackd_ready_s", "%.1f" % (time.time() - t0))
        c.admin1 = admin_token(c.w1)
        r.run(test_agent_joins_with_pin, c)
        if not getattr(c, "a1", None) or not c.a1.alive():
            return r.done()
        c.bg_agent = Background("agent SIGSTOP", bg_agent_sigstop, c)
        c.bg_cp = Background("wolfpackd SIGSTOP/SIGKILL", bg_cp_sigstop_then_sigkill, c)
        r.run(test_wrong_pin_refused, c)
        r.run(test_wrong_token_refused, c)
        r.run(test_expired_cert_refused, c)
        c.w3.stop()
        r.run(test_disallowed_service_refused, c)
        r.run(test_half_close_request_response, c)
        r.run(test_half_close_service_first, c)
        r.run(test_1000_concurrent_streams, c)
        r.run(test_stalled_stream_isolated, c)
        r.run(test_1gib_sha256, c)
        r.run(test_agent_sigstop_detected, c)
        r.run(test_cp_sigstop_detected_and_agent_reconnects, c)
        r.run(test_cp_sigkill_agent_backs_off_and_reconnects, c)
        r.run(test_cp_restarts_after_sigkill_with_orphaned_postgres, c)
        r.run(test_clean_exit_and_no_secrets, c)
    finally:
        for a in c.agents:
            if a.alive():
                a.proc.kill()
                a.proc.wait()
        for w in [x for x in (c.w1, c.w2, c.w3) if x is not None and x not in c.dead_wps]:
            pg = postmaster_pid(w)
            killed = w.proc.poll() is not None and w.proc.returncode < 0
            rc = w.stop()
            if rc != 0 and not killed:
                print("FAIL wolfpackd %s exit %d\n%s" % (w.state, rc, w.log()[-3000:]), flush=True)
                r.failed += 1
            kill_orphan_postgres(postmaster_pid(w) or pg)
            if re.search(r"Sanitizer|runtime error:", w.log()):
                print("FAIL sanitizer report in %s" % w.log_path, flush=True)
                r.failed += 1
        for w in c.dead_wps:
            w.stop()
            if re.search(r"Sanitizer|runtime error:", w.log()):
                print("FAIL sanitizer report in %s" % w.log_path, flush=True)
                r.failed += 1
        timing("total_s", "%.1f" % (time.time() - t0))
    return r.done()


if __name__ == "__main__":
    sys.exit(main())
