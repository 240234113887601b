#!/usr/bin/env python3
"""test_state.py — wolfpackd's durable state against real PostgreSQL.

First run with no configuration: embedded PostgreSQL under the state dir,
migrations, admin + join tokens minted (files 0600, only hashes stored), the
join command printed on stdout with the CA pin, tokens never in the log. A
restart mints nothing and prints the same command. A second control plane on
the first one's database (--database-url) becomes ready, `wolfpackd migrate`
is idempotent, /readyz follows the database going away and coming back, and an
unreachable database keeps /readyz at 503 without leaking its password.
"""
import os
import re
import signal
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wolfpack_test import Runner, Wolfpackd, binary  # noqa: E402

JOIN_RE = re.compile(r"wolfpack-agent --url (wss://\S+) --token (\S+) --ca-pin (sha256:[0-9a-f]{64})")


def read(path):
    with open(path) as f:
        return f.read().strip()


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


class State:
    a = None


def test_first_run(st):
    a = Wolfpackd(wait_ready=True)
    st.a = a
    body = a.wait_ready()
    assert body["status"] == "ready" and body["checks"]["database"] == "ok", body
    for name in ("admin.token", "join.token"):
        p = os.path.join(a.state, name)
        mode = stat.S_IMODE(os.stat(p).st_mode)
        assert mode == 0o600, (name, oct(mode))
    admin = read(os.path.join(a.state, "admin.token"))
    join = read(os.path.join(a.state, "join.token"))
    assert admin.startswith("wpadm_") and join.startswith("wpjoin_"), (admin[:6], join[:7])
    wait_for(lambda: JOIN_RE.search(a.stdout()), 10, "join command on stdout")
    m = JOIN_RE.search(a.stdout())
    assert m.group(1) == "wss://127.0.0.1:%d" % a.port, m.group(1)
    assert m.group(2) == join
    logged_pin = re.search(r"ca_pin=(sha256:[0-9a-f]{64})", a.log()).group(1)
    assert m.group(3) == logged_pin
    assert a.logged("first run: minted the admin token and the agent join token")
    # Only hashes are stored; the log never holds a token.
    assert admin not in a.log() and join not in a.log()
    st.admin, st.join = admin, join
    # The embedded cluster listens on a unix socket only.
    assert os.path.exists(os.path.join(a.state, "postgres", "run", ".s.PGSQL.5432"))


def test_restart_mints_nothing(st):
    a = st.a
    state, port = a.state, a.port
    assert a.stop() == 0, a.log()[-3000:]
    a2 = Wolfpackd(state=state, port=port, wait_ready=True)
    st.a = a2
    wait_for(lambda: JOIN_RE.search(a2.stdout()), 10, "join command on stdout after restart")
    assert JOIN_RE.search(a2.stdout()).group(2) == st.join
    assert read(os.path.join(state, "admin.token")) == st.admin
    assert not a2.logged("first run: minted the admin token and the agent join token")
    assert st.admin not in a2.log() and st.join not in a2.log()


def conninfo(a):
    return "host=%s dbname=wolfpack user=wolfpack" % os.path.join(a.state, "postgres", "run")


def test_migrate_command(st):
    r = subprocess.run([binary("wolfpackd"), "migrate", "--state-dir", st.a.dir + "/m",
                        "--database-url", conninfo(st.a)], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert re.search(r'msg="?schema up to date.*applied=0', r.stderr.decode()), r.stderr.decode()


def test_second_replica_and_db_outage(st):
    b = Wolfpackd(extra_args=["--database-url", conninfo(st.a)], wait_ready=True)
    try:
        # Tokens exist already: the replica mints nothing and has no join.token of its own.
        assert not os.path.exists(os.path.join(b.state, "join.token"))
        wait_for(lambda: "No join token" in b.stdout(), 10, "join hint")
        # The database goes away: /readyz turns 503, /healthz stays 200.
        state, port = st.a.state, st.a.port
        assert st.a.stop() == 0
        b.wait_ready(timeout=60, want=503)
        status, _, _ = b.get("/healthz")
        assert status == 200
        # ... and comes back.
        st.a = Wolfpackd(state=state, port=port, wait_ready=True)
        b.wait_ready(timeout=90, want=200)
    finally:
        assert b.stop() == 0, b.log()[-3000:]


def test_unreachable_database(st):
    secret = "SuperSecretPw123"
    b = Wolfpackd(extra_args=["--database-url",
                              "postgresql://wp:%s@127.0.0.1:1/wolfpack" % secret])
    try:
        body = b.wait_ready(timeout=20, want=503)
        assert body["checks"]["database"] == "unavailable", body
        time.sleep(1)
        assert secret not in b.log() and secret not in b.stdout()
    finally:
        assert b.stop() == 0, b.log()[-3000:]


def test_unsearchable_state_parent():
    # As root the embedded cluster runs unprivileged: a state dir it cannot reach is a clear,
    # immediate error (not initdb's bare "Permission denied" later). As non-root it runs as us.
    import tempfile
    if os.geteuid() != 0:
        print("  (not root: the embedded cluster runs as this user; nothing to refuse)")
        return
    locked = tempfile.mkdtemp(prefix="wp-locked-")
    os.chmod(locked, 0o700)
    port = __import__("wolfpack_test").free_port()
    r = subprocess.run([binary("wolfpackd"), "--state-dir", os.path.join(locked, "st"),
                        "--listen", "127.0.0.1:%d" % port], capture_output=True, timeout=60)
    assert r.returncode != 0
    assert b"cannot reach the state directory" in r.stderr, r.stderr[-2000:]


def test_bad_database_url():
    r = subprocess.run([binary("wolfpackd"), "migrate", "--state-dir", "/tmp/wp-badurl",
                        "--database-url", "host=/nonexistent password=HunterTwo99 =bad"],
                       capture_output=True, timeout=30)
    assert r.returncode != 0
    assert "HunterTwo99" not in r.stderr.decode() + r.stdout.decode()


def main():
    r = Runner()
    st = State()
    try:
        for t in (test_first_run, test_restart_mints_nothing, test_migrate_command,
                  test_second_replica_and_db_outage, test_unreachable_database):
            r.run(t, st)
    finally:
        if st.a:
            rc = st.a.stop()
            if rc != 0:
                print("FAIL final stop: exit %d\n%s" % (rc, st.a.log()[-3000:]))
                r.failed += 1
    r.run(test_bad_database_url)
    r.run(test_unsearchable_state_parent)
    return r.done()


if __name__ == "__main__":
    sys.exit(main())
