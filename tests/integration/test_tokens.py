#!/usr/bin/env python3
"""test_tokens.py — /api/v1/tokens and Bearer authentication on the real wolfpackd.

Admin mints tokens (secret shown once, only the hash stored), lists them
(never a secret or hash), revokes them (the token stops working at once);
401 for missing/unknown/revoked/expired tokens, 403 for the wrong role, 400
with a JSON error for bad bodies; no token ever appears in the log.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wolfpack_test import Runner, Wolfpackd, binary, read_response  # noqa: E402


def call(wp, method, path, token=None, body=None):
    s = wp.connect()
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = "%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n" % (method, path, len(data))
    if token is not None:
        req += "Authorization: Bearer %s\r\n" % token
    s.sendall(req.encode() + b"\r\n" + data)
    status, headers, raw = read_response(s)
    s.close()
    return status, headers, (json.loads(raw) if raw else None)


def psql(wp, sql):
    run = os.path.join(wp.state, "postgres", "run")
    subprocess.run(["psql", "-h", run, "-U", "wolfpack", "-d", "wolfpack", "-qAtc", sql],
                   check=True, capture_output=True, timeout=30)


class Ctx:
    pass


def test_auth_required(c):
    st, h, b = call(c.wp, "GET", "/api/v1/tokens")
    assert st == 401 and b["error"]["code"] == "unauthorized", (st, b)
    assert h.get("www-authenticate", "").startswith("Bearer")
    for bad in ("nope", "wpadm_" + "A" * 43, "x" * 300):
        st, _, b = call(c.wp, "GET", "/api/v1/tokens", token=bad)
        assert st == 401, (bad, st)


def test_create_list_revoke(c):
    st, h, b = call(c.wp, "POST", "/api/v1/tokens", c.admin,
                    {"name": "gpu-1 agent", "role": "agent", "node_id": "gpu-1",
                     "expires_in": 3600})
    assert st == 201, (st, b)
    assert b["token"].startswith("wpagt_") and b["node_id"] == "gpu-1" and b["expires_at"]
    assert h.get("cache-control") == "no-store"
    agent = b["token"]
    st, _, b = call(c.wp, "POST", "/api/v1/tokens", c.admin, {"name": "alice", "role": "user"})
    assert st == 201
    user, user_id = b["token"], b["id"]
    st, _, lst = call(c.wp, "GET", "/api/v1/tokens", c.admin)
    assert st == 200
    names = [t["name"] for t in lst["tokens"]]
    assert "gpu-1 agent" in names and "alice" in names and "bootstrap-admin" in names
    text = json.dumps(lst)
    assert agent not in text and user not in text and "hash" not in text
    # a user token may not manage tokens; an agent token neither
    for tok in (user, agent):
        st, _, b = call(c.wp, "GET", "/api/v1/tokens", tok)
        assert st == 403 and b["error"]["code"] == "forbidden", st
    # revoke: 204, idempotent, then the token is refused
    st, _, _ = call(c.wp, "DELETE", "/api/v1/tokens/" + user_id, c.admin)
    assert st == 204, st
    st, _, _ = call(c.wp, "DELETE", "/api/v1/tokens/" + user_id, c.admin)
    assert st == 204, st
    st, _, _ = call(c.wp, "GET", "/api/v1/tokens", user)
    assert st == 401, st
    st, _, b = call(c.wp, "DELETE", "/api/v1/tokens/00000000-0000-0000-0000-000000000000", c.admin)
    assert st == 404 and b["error"]["code"] == "not_found"
    st, _, _ = call(c.wp, "DELETE", "/api/v1/tokens/'; DROP TABLE tokens; --", c.admin)
    assert st in (400, 404), st
    c.secrets += [agent, user]


def test_expired_token(c):
    st, _, b = call(c.wp, "POST", "/api/v1/tokens", c.admin,
                    {"name": "short", "role": "admin", "expires_in": 60})
    assert st == 201
    tok = b["token"]
    c.secrets.append(tok)
    st, _, _ = call(c.wp, "GET", "/api/v1/tokens", tok)
    assert st == 200
    psql(c.wp, "UPDATE tokens SET expires_at = now() - interval '1 second' WHERE id = '%s'" % b["id"])
    st, _, _ = call(c.wp, "GET", "/api/v1/tokens", tok)
    assert st == 401, st


def test_bad_bodies(c):
    cases = [
        (b"", "invalid_json"),
        (b"{", "invalid_json"),
        (b"[]", "invalid_json"),
        (b'{"name":"x"}', "invalid_request"),
        (b'{"name":"x","role":"root"}', "invalid_request"),
        (b'{"name":"","role":"user"}', "invalid_request"),
        (b'{"name":"x","role":"user","node_id":"gpu-1"}', "invalid_request"),
        (b'{"name":"x","role":"agent","node_id":"GPU_1"}', "invalid_request"),
        (b'{"name":"x","role":"user","expires_in":5}', "invalid_request"),
        (b'{"name":"x","role":"user","expires_in":"soon"}', "invalid_request"),
        (b'{"name":"x","role":"user","admin":true}', "invalid_request"),
        (b'{"name":"x","name":"y","role":"user"}', "invalid_request"),
        (b'{"name":"' + b"n" * 200 + b'","role":"user"}', "invalid_request"),
        (b'{"name":"x","role":"user"} trailing', "invalid_json"),
        (b"[" * 10000, "invalid_json"),
    ]
    st, _, before = call(c.wp, "GET", "/api/v1/tokens", c.admin)
    for body, code in cases:
        st, _, b = call(c.wp, "POST", "/api/v1/tokens", c.admin, body)
        assert st == 400 and b["error"]["code"] == code, (body[:40], st, b)
    st, _, after = call(c.wp, "GET", "/api/v1/tokens", c.admin)
    assert len(after["tokens"]) == len(before["tokens"]), "a bad request changed state"


def test_cli(c):
    env = dict(os.environ, WOLFPACK_SERVER="https://localhost:%d" % c.wp.port,
               WOLFPACK_CA_FILE=c.wp.ca_file,
               WOLFPACK_TOKEN_FILE=os.path.join(c.wp.state, "admin.token"))
    cli = binary("wolfpack")
    r = subprocess.run([cli, "tokens", "create", "--name", "from-cli", "--role", "agent",
                        "--node-id", "gpu-9"], env=env, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    assert made["token"].startswith("wpagt_") and made["node_id"] == "gpu-9"
    c.secrets.append(made["token"])
    r = subprocess.run([cli, "tokens", "list"], env=env, capture_output=True, timeout=30)
    assert r.returncode == 0 and "from-cli" in r.stdout.decode()
    assert made["token"] not in r.stdout.decode()
    r = subprocess.run([cli, "tokens", "revoke", made["id"]], env=env, capture_output=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([cli, "tokens", "create", "--name", "x", "--role", "god"], env=env,
                       capture_output=True, timeout=30)
    assert r.returncode == 1 and b"invalid_request" in r.stderr, r
    r = subprocess.run([cli, "tokens", "list"], env=dict(env, WOLFPACK_TOKEN="wrong"),
                       capture_output=True, timeout=30)
    assert r.returncode == 1 and b"401" in r.stderr, r
    r = subprocess.run([cli, "tokens", "frobnicate"], env=env, capture_output=True, timeout=30)
    assert r.returncode == 2


def test_never_logged(c):
    log = c.wp.log()
    for s in c.secrets + [c.admin]:
        assert s not in log


def main():
    r = Runner()
    c = Ctx()
    c.wp = Wolfpackd(wait_ready=True)
    c.secrets = []
    with open(os.path.join(c.wp.state, "admin.token")) as f:
        c.admin = f.read().strip()
    try:
        for t in (test_auth_required, test_create_list_revoke, test_expired_token,
                  test_bad_bodies, test_cli, test_never_logged):
            r.run(t, c)
    finally:
        rc = c.wp.stop()
        if rc != 0:
            print("FAIL stop: exit %d\n%s" % (rc, c.wp.log()[-3000:]))
            r.failed += 1
    return r.done()


if __name__ == "__main__":
    sys.exit(main())
