#!/usr/bin/env python3
"""test_e2e.py — the real wolfpackd and the real wolfpack-agent together.

wolfpackd starts with no configuration (embedded PostgreSQL), prints its join
command; wolfpack-agent started with exactly that command (plus a node id, a
label and a local echo service) joins; the node shows up online with its
labels in GET /api/v1/nodes; an admin CONNECT reaches the echo service through
the tunnel (1 MiB round trip, byte exact); both exit 0 on SIGTERM and no token
appears in either log.
"""
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wolfpack_test import Runner, Wolfpackd, binary, exchange, read_response  # noqa: E402

JOIN_RE = re.compile(r"^\s*(wolfpack-agent --url \S+ --token \S+ --ca-pin sha256:[0-9a-f]{64})\s*$",
                     re.M)


class Echo:
    """A TCP echo server on 127.0.0.1 (the node's local service)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.echo, args=(c,), daemon=True).start()

    @staticmethod
    def echo(c):
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
            c.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            c.close()


class Ctx:
    agent = None


def api(c, method, path, body=None):
    s = c.wp.connect()
    data = b"" if body is None else json.dumps(body).encode()
    s.sendall(("%s %s HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n"
               "Content-Length: %d\r\n\r\n" % (method, path, c.admin, len(data))).encode() + data)
    st, _, raw = read_response(s)
    s.close()
    return st, (json.loads(raw) if raw else None)


def agent_log(c):
    with open(c.agent_log, "rb") as f:
        return f.read().decode("utf-8", "replace")


def test_agent_joins_with_printed_command(c):
    deadline = time.time() + 15
    while not JOIN_RE.search(c.wp.stdout()) and time.time() < deadline:
        time.sleep(0.1)
    m = JOIN_RE.search(c.wp.stdout())
    assert m, c.wp.stdout()
    argv = shlex.split(m.group(1))
    argv[0] = binary("wolfpack-agent")
    argv += ["--node-id", "e2e-node", "--label", "region=eu",
             "--service", "moonlight=tcp:127.0.0.1:%d" % c.echo.port,
             "--log-level", "debug"]
    c.agent_log = os.path.join(c.wp.dir, "agent.log")
    c.agent_logf = open(c.agent_log, "wb")
    c.agent = subprocess.Popen(argv, stdout=c.agent_logf, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    node = None
    while time.time() < deadline:
        assert c.agent.poll() is None, agent_log(c)[-3000:]
        st, node = api(c, "GET", "/api/v1/nodes/e2e-node")
        if st == 200 and node.get("status") == "online":
            break
        time.sleep(0.3)
    assert node and node.get("status") == "online", (node, agent_log(c)[-2000:], c.wp.log()[-2000:])
    assert node["labels"] == {"region": "eu"}, node["labels"]
    st, lst = api(c, "GET", "/api/v1/nodes?label=region=eu")
    assert st == 200 and [n["id"] for n in lst["nodes"]] == ["e2e-node"], lst


def test_connect_through_tunnel(c):
    s = c.wp.connect()
    s.sendall(("CONNECT e2e-node:moonlight HTTP/1.1\r\nHost: e2e-node:moonlight\r\n"
               "Authorization: Bearer %s\r\n\r\n" % c.admin).encode())
    s.settimeout(10)
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(1)
        assert d, head
        head += d
    assert head.startswith(b"HTTP/1.1 200"), head
    payload = os.urandom(1 << 20)
    got = exchange(s, payload, len(payload))
    assert bytes(got) == payload, (len(got), len(payload))
    s.close()
    # an unknown service is refused by the agent's allow-list
    s = c.wp.connect()
    s.sendall(("CONNECT e2e-node:ssh HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
               % c.admin).encode())
    st, _, body = read_response(s)
    assert st == 502 and b"not_allowed" in body, (st, body)
    s.close()


def test_clean_exit_and_no_secrets(c):
    c.agent.send_signal(signal.SIGTERM)
    assert c.agent.wait(timeout=40) == 0, agent_log(c)[-3000:]
    c.agent_logf.close()
    with open(os.path.join(c.wp.state, "join.token")) as f:
        join = f.read().strip()
    for secret in (join, c.admin):
        assert secret not in agent_log(c)
        assert secret not in c.wp.log()


def main():
    r = Runner()
    c = Ctx()
    c.echo = Echo()
    c.wp = Wolfpackd(wait_ready=True, extra_args=["--heartbeat-interval", "2"])
    with open(os.path.join(c.wp.state, "admin.token")) as f:
        c.admin = f.read().strip()
    try:
        r.run(test_agent_joins_with_printed_command, c)
        if c.agent:
            r.run(test_connect_through_tunnel, c)
            r.run(test_clean_exit_and_no_secrets, c)
    finally:
        if c.agent and c.agent.poll() is None:
            c.agent.kill()
        rc = c.wp.stop()
        if rc != 0:
            print("FAIL wolfpackd exit %d\n%s" % (rc, c.wp.log()[-3000:]))
            r.failed += 1
    return r.done()


if __name__ == "__main__":
    sys.exit(main())
