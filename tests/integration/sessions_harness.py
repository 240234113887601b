"""sessions_harness.py — a small cluster for the session tests: the real wolfpackd (embedded
PostgreSQL, real TLS) and N real wolfpack-agent processes, each fronting its own FakeWolf
(unix socket API + GameStream HTTP port for the health probe). Stdlib only.
"""
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake_wolf import FakeWolf  # noqa: E402
from wolfpack_test import Wolfpackd, binary, free_port, read_response  # noqa: E402

JOIN_RE = re.compile(r"^\s*wolfpack-agent (--url \S+ --token \S+ --ca-pin sha256:[0-9a-f]{64})\s*$", re.M)
ASAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=99:quarantine_size_mb=8",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=98",
}


def wait_for(pred, timeout, step=0.1):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v or time.time() > deadline:
            return v
        time.sleep(step)


class Agent:
    def __init__(self, d, name, args):
        self.name = name
        self.log_path = os.path.join(d, "agent-%s.log" % name)
        self.logf = open(self.log_path, "ab")
        env = dict(os.environ)
        env.update(ASAN_ENV)
        self.proc = subprocess.Popen([binary("wolfpack-agent"), "run"] + list(args), stdout=self.logf,
                                     stderr=subprocess.STDOUT, env=env)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.logf.closed:
            self.logf.close()
        return self.proc.returncode


class Cluster:
    """wolfpackd + agents n0..n{k-1}; labels[i] is a dict per node; agent_args[i], when given, is a
    list of extra arguments for agent i (e.g. its --sysfs-root), kept across start_agent(i)."""

    def __init__(self, labels, max_sessions=4, extra_args=(), agent_args=None):
        self.dir = tempfile.mkdtemp(prefix="wp-sess-")
        self.extra_args = list(extra_args)
        self.agent_args = [list(a) for a in agent_args] if agent_args else [[] for _ in labels]
        assert len(self.agent_args) == len(labels), (agent_args, labels)
        self.labels = labels
        self.max_sessions = max_sessions
        self.wolves = []
        self.agents = []
        self.wp = None
        for i in range(len(labels)):
            w = FakeWolf(os.path.join(self.dir, "wolf%d.sock" % i), http_port=free_port()).start()
            self.wolves.append(w)
        self.start_wolfpackd()
        for i in range(len(labels)):
            self.agents.append(None)
            self.start_agent(i)
        for i in range(len(labels)):
            self.wait_node(i, "online")

    def start_wolfpackd(self, port=None, state=None):
        self.wp = Wolfpackd(extra_args=self.extra_args, port=port, state=state, wait_ready=True)
        with open(os.path.join(self.wp.state, "admin.token")) as f:
            self.admin = f.read().strip()
        if not hasattr(self, "join"):
            m = wait_for(lambda: JOIN_RE.search(self.wp.stdout()), 20)
            assert m, self.wp.stdout()
            self.join = shlex.split(m.group(1))

    def node(self, i):
        return "n%d" % i

    def start_agent(self, i):
        w = self.wolves[i]
        args = list(self.join) + [
            "--node-id", self.node(i), "--max-sessions", str(self.max_sessions),
            "--service", "wolf=unix:" + w.socket_path,
            "--service", "wolf-http=tcp:127.0.0.1:%d" % w.http_port,
            "--service", "moonlight=tcp:127.0.0.1:%d" % w.http_port,
            "--wolf-https", "none", "--status-listen", "none", "--log-level", "debug"]
        for k, v in self.labels[i].items():
            args += ["--label", "%s=%s" % (k, v)]
        args += self.agent_args[i]
        self.agents[i] = Agent(self.dir, self.node(i), args)

    def api(self, method, path, token=None, body=None, timeout=30):
        s = self.wp.connect(timeout=timeout)
        try:
            data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
            head = "%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n" % (method, path, len(data))
            if token is not False:
                head += "Authorization: Bearer %s\r\n" % (token or self.admin)
            s.sendall(head.encode() + b"\r\n" + data)
            st, _, raw = read_response(s, timeout=timeout)
        finally:
            s.close()
        return st, (json.loads(raw) if raw else None)

    def psql(self, sql):
        run = os.path.join(self.wp.state, "postgres", "run")
        r = subprocess.run(["psql", "-h", run, "-U", "wolfpack", "-d", "wolfpack", "-qAtc", sql],
                           check=True, capture_output=True, timeout=30)
        return r.stdout.decode().strip()

    def node_status(self, i):
        try:
            st, b = self.api("GET", "/api/v1/nodes/" + self.node(i))
        except (OSError, EOFError, ValueError):
            return None
        return b.get("status") if st == 200 else None

    def wait_node(self, i, status, timeout=40):
        ok = wait_for(lambda: self.node_status(i) == status and
                      self.psql("SELECT connected_replica IS NOT NULL FROM nodes WHERE id = '%s'"
                                % self.node(i)) == "t", timeout, 0.2)
        assert ok, (self.node(i), self.node_status(i), self.agents[i].log()[-3000:])

    def create(self, token=None, timeout=30, **kw):
        body = {"runner": {"type": "docker", "image": "ghcr.io/games-on-whales/xfce:edge"}}
        body.update(kw)
        return self.api("POST", "/api/v1/sessions", token, body, timeout=timeout)

    def active(self):
        return {r.split("|")[0]: int(r.split("|")[1]) for r in
                self.psql("SELECT id, active_sessions FROM nodes ORDER BY id").split("\n") if r}

    def lobbies(self):
        return sum(len(w.lobbies) for w in self.wolves)

    def stop_all_sessions(self):
        ids = self.psql("SELECT id FROM sessions WHERE status IN ('running', 'stopping')").split()
        for sid in ids:
            st, b = self.api("DELETE", "/api/v1/sessions/" + sid)
            assert st == 200, (st, b)

    def close(self):
        """Stops everything; returns the exit codes [wolfpackd, agents...] (ASan: 99 on a leak)."""
        rcs = [self.wp.stop() if self.wp else 0]
        for a in self.agents:
            if a:
                rcs.append(a.stop())
        for w in self.wolves:
            w.stop()
        return rcs
