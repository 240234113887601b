#!/usr/bin/env python3
"""test_external_db.py — wolfpackd against a PostgreSQL server started by this harness.

Two wolfpackd processes start at the same moment against one empty database:
migrations are applied exactly once and exactly one of them mints the
bootstrap tokens. A real agent joined with the printed command shows up online
with its labels through either replica. With a short heartbeat interval, a
frozen agent (SIGSTOP) goes offline within two intervals and comes back after
SIGCONT. Stopping the PostgreSQL server makes the API answer 503
database_unavailable and /readyz 503; starting it again recovers both
replicas without a restart.
"""
import glob
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
from wolfpack_test import Runner, Wolfpackd, binary, free_port, read_response  # noqa: E402

JOIN_RE = re.compile(r"^\s*(wolfpack-agent --url \S+ --token \S+ --ca-pin sha256:[0-9a-f]{64})\s*$",
                     re.M)


def pg_bindir():
    for d in [os.path.dirname(p) for p in (subprocess.run(["sh", "-c", "command -v initdb"],
                                                          capture_output=True).stdout.decode()
                                           .split())] + \
            sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]),
                   reverse=True):
        if os.access(os.path.join(d, "initdb"), os.X_OK) and \
                os.access(os.path.join(d, "pg_ctl"), os.X_OK):
            return d
    raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")


class Postgres:
    """A PostgreSQL server on a unix socket in a temp dir, run as `postgres` when we are root."""

    def __init__(self):
        self.bindir = pg_bindir()
        self.dir = tempfile.mkdtemp(prefix="wp-pg-")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "sock")
        os.mkdir(self.sock)
        self.as_user = []
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "postgres:postgres", self.dir], check=True)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.run("initdb", "-D", self.data, "-A", "trust", "-U", "wolfpack", "--no-locale",
                 "-E", "UTF8")
        self.start()
        self.psql("postgres", "CREATE DATABASE wolfpack")

    def run(self, prog, *args):
        r = subprocess.run(self.as_user + [os.path.join(self.bindir, prog)] + list(args),
                           capture_output=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("%s failed: %s" % (prog, r.stderr.decode()[-2000:]))
        return r.stdout.decode()

    def start(self):
        self.run("pg_ctl", "-D", self.data, "-w", "-l", os.path.join(self.dir, "pg.log"),
                 "-o", "-c listen_addresses='' -k %s" % self.sock, "start")

    def stop(self):
        self.run("pg_ctl", "-D", self.data, "-w", "-m", "fast", "stop")

    def psql(self, db, sql):
        return subprocess.run(["psql", "-h", self.sock, "-U", "wolfpack", "-d", db, "-qAtc", sql],
                              check=True, capture_output=True, timeout=30).stdout.decode().strip()

    @property
    def url(self):
        return "host=%s dbname=wolfpack user=wolfpack" % self.sock


class Ctx:
    pass


def api(wp, token, method, path):
    s = wp.connect()
    s.sendall(("%s %s HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n"
               "Content-Length: 0\r\n\r\n" % (method, path, token)).encode())
    st, _, raw = read_response(s)
    s.close()
    return st, (json.loads(raw) if raw else None)


def wait_node(c, wp, status, timeout):
    deadline = time.time() + timeout
    node = None
    while time.time() < deadline:
        st, node = api(wp, c.admin, "GET", "/api/v1/nodes/ext-node")
        if st == 200 and node["status"] == status:
            return time.time(), node
        time.sleep(0.2)
    raise AssertionError("node never became %s: %r" % (status, node))


def test_two_replicas_migrate_once(c):
    env = {"WOLFPACK_DATABASE_URL": c.pg.url}
    # Start both before waiting: they race for the empty database.
    c.a = Wolfpackd(env=env, extra_args=["--heartbeat-interval", "1"])
    c.b = Wolfpackd(env=env, extra_args=["--heartbeat-interval", "1"])
    c.a.wait_ready()
    c.b.wait_ready()
    rows = c.pg.psql("wolfpack", "SELECT version, count(*) FROM schema_migrations GROUP BY 1 "
                                 "HAVING count(*) <> 1")
    assert rows == "", rows
    assert int(c.pg.psql("wolfpack", "SELECT count(*) FROM schema_migrations")) >= 1
    assert int(c.pg.psql("wolfpack", "SELECT count(*) FROM tokens")) == 2
    minted = [w for w in (c.a, c.b) if os.path.exists(os.path.join(w.state, "admin.token"))]
    assert len(minted) == 1, "both replicas minted bootstrap tokens"
    c.minter, c.other = minted[0], (c.b if minted[0] is c.a else c.a)
    with open(os.path.join(c.minter.state, "admin.token")) as f:
        c.admin = f.read().strip()
    # The database URL never shows up in a log line with a password (none here), but the
    # replica describes where it is.
    assert "database" in c.a.log()


def test_agent_joins_other_replica(c):
    deadline = time.time() + 10
    while not JOIN_RE.search(c.minter.stdout()) and time.time() < deadline:
        time.sleep(0.1)
    argv = shlex.split(JOIN_RE.search(c.minter.stdout()).group(1))
    # The join command names the minter; point it at the other replica (same database, same
    # tokens), verified with that replica's own CA.
    argv[0] = binary("wolfpack-agent")
    i = argv.index("--url")
    argv[i + 1] = "wss://127.0.0.1:%d" % c.other.port
    i = argv.index("--ca-pin")
    del argv[i:i + 2]
    # A healthy (fake) Wolf, so the agent's probes keep the node online rather than degraded.
    c.wolf = FakeWolf(os.path.join(c.other.dir, "wolf.sock"), http_port=free_port(),
                      https_port=free_port())
    c.wolf.start()
    argv += ["--ca-file", c.other.ca_file, "--node-id", "ext-node", "--label", "gpu=a10",
             "--service", "moonlight=tcp:127.0.0.1:9",
             "--service", "wolf=unix:" + c.wolf.socket_path,
             "--service", "wolf-http=tcp:127.0.0.1:%d" % c.wolf.http_port,
             "--wolf-https", "127.0.0.1:%d" % c.wolf.https_port]
    c.agent_log = open(os.path.join(c.other.dir, "agent.log"), "wb")
    c.agent = subprocess.Popen(argv, stdout=c.agent_log, stderr=subprocess.STDOUT)
    _, node = wait_node(c, c.other, "online", 30)
    assert node["labels"] == {"gpu": "a10"}, node
    # The other replica sees the same registry.
    st, node = api(c.minter, c.admin, "GET", "/api/v1/nodes/ext-node")
    assert st == 200 and node["status"] == "online", node


def test_stale_heartbeat_goes_offline(c):
    c.agent.send_signal(signal.SIGSTOP)
    t0 = time.time()
    try:
        t1, _ = wait_node(c, c.other, "offline", 15)
        # two 1 s intervals plus one sweep period and polling slack
        assert t1 - t0 < 4.5, t1 - t0
    finally:
        c.agent.send_signal(signal.SIGCONT)
    wait_node(c, c.other, "online", 40)


def test_database_outage(c):
    c.pg.stop()
    try:
        for wp in (c.a, c.b):
            wp.wait_ready(timeout=60, want=503)
        st, body = api(c.other, c.admin, "GET", "/api/v1/nodes")
        assert st == 503 and body["error"]["code"] == "database_unavailable", (st, body)
        st, _, _ = c.a.get("/healthz")
        assert st == 200
    finally:
        c.pg.start()
    for wp in (c.a, c.b):
        wp.wait_ready(timeout=90)
    st, _ = api(c.other, c.admin, "GET", "/api/v1/nodes")
    assert st == 200


def main():
    r = Runner()
    c = Ctx()
    c.agent = None
    c.wolf = None
    c.a = c.b = None
    c.pg = Postgres()
    try:
        r.run(test_two_replicas_migrate_once, c)
        if c.a and c.b and getattr(c, "admin", None):
            r.run(test_agent_joins_other_replica, c)
            if c.agent:
                r.run(test_stale_heartbeat_goes_offline, c)
            r.run(test_database_outage, c)
    finally:
        if c.agent:
            c.agent.send_signal(signal.SIGCONT)
            c.agent.send_signal(signal.SIGTERM)
            try:
                if c.agent.wait(timeout=40) != 0:
                    print("FAIL agent exit %d" % c.agent.returncode)
                    r.failed += 1
            except subprocess.TimeoutExpired:
                c.agent.kill()
                print("FAIL agent did not exit on SIGTERM")
                r.failed += 1
        if c.wolf:
            c.wolf.stop()
        for wp in (c.a, c.b):
            if wp:
                rc = wp.stop()
                if rc != 0:
                    print("FAIL wolfpackd exit %d\n%s" % (rc, wp.log()[-3000:]))
                    r.failed += 1
        try:
            c.pg.stop()
        except RuntimeError:
            pass
    return r.done()


if __name__ == "__main__":
    sys.exit(main())
