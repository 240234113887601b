#!/usr/bin/env python3
"""test_stream_churn.py — many short streams where the control plane ends its side first.

Real wolfpackd (TLS, embedded PostgreSQL) and a real wolfpack-agent; the only
stand-in is the node's local service, which answers after a short delay and
closes its connection only some milliseconds after answering. So the control
plane's FIN or RST reaches the agent while the service is still open:

  * FIN first: 120 CONNECT streams back to back; the client sends its request
    and half-closes at once (TLS close_notify → FIN → shutdown(SHUT_WR) at the
    service), then reads the answer;
  * RST first: 120 CONNECT streams; the client reads the answer and aborts
    (TCP RST → the stream is reset) before the service closes;
  * proxy: 120 GETs through /api/v1/nodes/{id}/proxy/slow/... back to back.

Each exchange (open, ACK, answer) must take well under a second: a lost
wake-up in the agent's writer once held the ACKs of the following streams
until some unrelated timer fired, seconds later (reported by the proxy).
"""
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wolfpack_test import (Runner, Wolfpackd, admin_token, binary, join_args,  # noqa: E402
                           read_response, wait_for)

NODE = "churn-node"
ROUNDS = 120
SLOW_S = 1.5  # one exchange slower than this is the bug (healthy: a few ms, ASan ~50 ms)


class SlowService:
    """Reads one request (a line, or an HTTP head), answers after `delay`, closes `linger` later."""

    def __init__(self, delay=0.005, linger=0.05):
        self.delay, self.linger = delay, linger
        self.served = 0
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(256)
        self.port = self.ls.getsockname()[1]
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(20)
            buf = b""
            while not (buf.startswith(b"GET ") and b"\r\n\r\n" in buf) and \
                    not (not buf.startswith(b"G") and b"\n" in buf):
                d = c.recv(4096)
                if not d:
                    break
                buf += d
            time.sleep(self.delay)
            if buf.startswith(b"GET "):
                body = b"slow-ok %d\n" % len(buf)
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                          % (len(body), body))
            else:
                c.sendall(b"answer " + buf.split(b"\n", 1)[0] + b"\n")
            self.served += 1
            end = time.time() + self.linger
            while buf.startswith(b"rst") and time.time() < end:
                c.sendall(b"t" * 2048)  # still talking when the client's RST arrives
                time.sleep(0.001)
            time.sleep(max(0.0, end - time.time()))
        except OSError:
            pass
        finally:
            c.close()


class Ctx:
    pass


def connect_open(c, timeout=10):
    """CONNECT <node>:slow; returns (TLS socket, seconds to the 200)."""
    t0 = time.time()
    s = c.wp.connect(timeout=timeout)
    s.sendall(("CONNECT %s:slow HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Bearer %s\r\n\r\n"
               % (NODE, c.admin)).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(1)
        if not d:
            raise EOFError("closed before the CONNECT answer: %r" % buf)
        buf += d
    st = int(buf.split()[1])
    assert st == 200, buf
    return s, time.time() - t0


def read_to_eof(s):
    got = b""
    while True:
        try:
            d = s.recv(4096)
        except ssl.SSLZeroReturnError:
            break
        if not d:
            break
        got += d
    return got


def report(name, times):
    times = sorted(times)
    print("timing %s_p50_ms %.1f max_ms %.1f" % (name, 1000 * times[len(times) // 2], 1000 * times[-1]),
          flush=True)
    slow = [t for t in times if t > SLOW_S]
    assert not slow, "%d of %d %s exchanges took > %.1f s (max %.2f s)" % (
        len(slow), len(times), name, SLOW_S, times[-1])


def test_fin_first(c):
    times = []
    for i in range(ROUNDS):
        t0 = time.time()
        s, _ = connect_open(c)
        try:
            s.settimeout(10)
            s.sendall(b"fin %d\n" % i)
            s.setblocking(False)
            try:
                s.unwrap()  # close_notify: our FIN goes before the service closes
            except ssl.SSLWantReadError:
                pass
            s.setblocking(True)
            s.settimeout(10)
            got = read_to_eof(s)
        finally:
            s.close()
        assert got == b"answer fin %d\n" % i, (i, got)
        times.append(time.time() - t0)
    report("fin_first", times)


def test_rst_first(c):
    times = []
    for i in range(ROUNDS):
        t0 = time.time()
        s, _ = connect_open(c)
        raw = None
        try:
            s.settimeout(10)
            s.sendall(b"rst %d\n" % i)
            got = b""
            while b"\n" not in got:
                d = s.recv(4096)
                if not d:
                    break
                got += d
            assert got.split(b"\n")[0] == b"answer rst %d" % i, (i, got[:100])
            raw = socket.socket(fileno=s.detach())  # abort: RST while the service still lingers
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            (raw or s).close()
        times.append(time.time() - t0)
    report("rst_first", times)


def test_proxy_back_to_back(c):
    times = []
    for i in range(ROUNDS):
        t0 = time.time()
        s = c.wp.connect(timeout=10)
        try:
            s.sendall(("GET /api/v1/nodes/%s/proxy/slow/x%d HTTP/1.1\r\nHost: x\r\n"
                       "Authorization: Bearer %s\r\n\r\n" % (NODE, i, c.admin)).encode())
            st, _, body = read_response(s, timeout=10)
        finally:
            s.close()
        assert st == 200 and body.startswith(b"slow-ok"), (i, st, body)
        times.append(time.time() - t0)
    report("proxy", times)


def test_agent_clean(c):
    log = open(c.agent_log, "rb").read().decode("utf-8", "replace")
    assert not re.search(r"Sanitizer|runtime error:", log), log[-3000:]
    assert "tunnel session failed" not in log, log[-3000:]


def main():
    r = Runner()
    c = Ctx()
    c.dir = tempfile.mkdtemp(prefix="wp-churn-")
    c.svc = SlowService()
    c.wp = Wolfpackd(extra_args=["--proxy-timeout", "10"], wait_ready=True)
    c.agent = None
    try:
        c.admin = admin_token(c.wp)
        args = join_args(c.wp) + [
            "--node-id", NODE, "--service", "slow=tcp:127.0.0.1:%d" % c.svc.port,
            "--status-listen", "none", "--log-level", "info"]
        c.agent_log = os.path.join(c.dir, "agent.log")
        c.agent_logf = open(c.agent_log, "wb")
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:exitcode=99"
        c.agent = subprocess.Popen([binary("wolfpack-agent"), "run"] + args, stdout=c.agent_logf,
                                   stderr=subprocess.STDOUT, env=env)

        def online():
            try:
                sk = c.wp.connect(timeout=5)
                try:
                    sk.sendall(("GET /api/v1/nodes/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s"
                                "\r\n\r\n" % (NODE, c.admin)).encode())
                    st, _, b = read_response(sk, timeout=5)
                finally:
                    sk.close()
            except (OSError, EOFError):
                return False
            return st == 200 and b'"connected_replica":"' in b.replace(b" ", b"")
        assert wait_for(online, 30, 0.1), open(c.agent_log).read()[-3000:]
        for t in (test_fin_first, test_rst_first, test_proxy_back_to_back):
            r.run(t, c)
    finally:
        if c.agent and c.agent.poll() is None:
            c.agent.terminate()
            try:
                rc = c.agent.wait(30)
            except subprocess.TimeoutExpired:
                c.agent.kill()
                rc = -9
            if rc != 0:
                print("FAIL agent exit %s" % rc, flush=True)
                r.failed += 1
        rc = c.wp.stop()
        if rc != 0 or re.search(r"Sanitizer|runtime error:", c.wp.log()):
            print("FAIL wolfpackd exit %s\n%s" % (rc, c.wp.log()[-3000:]), flush=True)
            r.failed += 1
        c.svc.stop = True
        c.svc.ls.close()
    if c.agent:
        r.run(test_agent_clean, c)
    return r.done()


if __name__ == "__main__":
    sys.exit(main())
