#!/usr/bin/env python3
"""test_cli.py — the wolfpack CLI against the real wolfpackd and a real agent fronting a FakeWolf.

nodes list (filters, pages)/get/drain/undrain/delete, sessions create (flags and --json
stdin)/list/get/delete/stop, events list (filters, --since with a '+' offset, pages, --limit);
exit statuses: 0 ok, 1 the server refused (one line "wolfpack: <code>: <message>" on stderr,
nothing on stdout), 2 usage errors (nothing sent), 3 unreachable server. The token is never
printed.
"""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sessions_harness import Cluster  # noqa: E402
from wolfpack_test import Runner, binary, free_port  # noqa: E402

IMAGE = "ghcr.io/games-on-whales/xfce:edge"


class Ctx:
    pass


def cli(c, *args, want=0, env=None, stdin=None):
    """Runs the CLI; asserts its exit status and that no token appears; returns (stdout, stderr)."""
    e = dict(os.environ, WOLFPACK_SERVER="https://localhost:%d" % c.cl.wp.port,
             WOLFPACK_CA_FILE=c.cl.wp.ca_file, WOLFPACK_TOKEN=c.cl.admin)
    e.pop("WOLFPACK_TOKEN_FILE", None)
    e.update(env or {})
    r = subprocess.run([binary("wolfpack")] + list(args), env=e, capture_output=True, timeout=60,
                       input=stdin)
    out, err = r.stdout.decode(), r.stderr.decode()
    assert r.returncode == want, (args, r.returncode, out[-2000:], err[-2000:])
    for secret in [c.cl.admin] + c.secrets:
        assert secret not in out and secret not in err, ("token printed", args)
    if want != 0:
        assert out == "", (args, out[-500:])
        lines = err.strip("\n").split("\n")
        assert len(lines) == 1 and lines[0].startswith("wolfpack: "), (args, err)
    return out, err


def cli_json(c, *args, **kw):
    out, _ = cli(c, *args, **kw)
    return json.loads(out) if out.strip() else None


def test_help_and_usage(c):
    out, _ = cli(c, "--help")
    for word in ("nodes list", "drain", "undrain", "sessions create", "sessions delete|stop",
                 "events list", "tokens create", "--status", "--gpu-vendor", "--label", "--force",
                 "--owner", "--node ", "--session", "--since", "--limit", "--page-size", "--cursor",
                 "--image", "--prefer-label", "--env", "--width", "--height", "--refresh-rate",
                 "--json", "--node-id", "Exit status"):
        assert word in out, word
    usage = [
        ["nodes"], ["nodes", "frob"], ["nodes", "get"], ["nodes", "get", "a", "b"],
        ["nodes", "list", "--image", IMAGE], ["nodes", "drain", "n0", "--force"],
        ["sessions", "create"], ["sessions", "create", "--image", IMAGE, "--label", "novalue"],
        ["sessions", "create", "--image", IMAGE, "--env", "=x"],
        ["sessions", "create", "--json", "-", "--image", IMAGE],
        ["sessions", "create", "--json", "/nonexistent/body.json"],
        ["sessions", "list", "--limit", "0"], ["sessions", "list", "--page-size", "501"],
        ["sessions", "list", "--gpu-vendor", "nvidia"], ["events", "list", "--status", "x"],
        ["events"], ["frobnicate"], ["nodes", "list", "--no-such-flag"], ["nodes", "get", ""],
        ["sessions", "create", "--image", IMAGE, "--width", "abc"],
    ]
    for args in usage:
        _, err = cli(c, *args, want=2)
        assert err.startswith("wolfpack: usage: "), (args, err)
    # no server configured: a usage error, not an attempt
    cli(c, "nodes", "list", want=2, env={"WOLFPACK_SERVER": ""})
    st, b = c.cl.api("GET", "/api/v1/sessions")
    assert st == 200 and b["sessions"] == [], "a usage error changed state"


def test_unreachable(c):
    url = "https://127.0.0.1:%d" % free_port()
    for args in (["nodes", "list"], ["sessions", "get", "x"], ["events", "list"]):
        _, err = cli(c, *args, want=3, env={"WOLFPACK_SERVER": url})
        assert err.startswith("wolfpack: unreachable: "), err
    r = subprocess.run([binary("wolfpack"), "version"], capture_output=True, timeout=30,
                       env=dict(os.environ, WOLFPACK_SERVER=url))
    assert r.returncode == 3 and r.stdout.startswith(b"wolfpack ") and b"unreachable" in r.stderr, r


def test_nodes(c):
    lst = cli_json(c, "nodes", "list")
    assert [n["id"] for n in lst["nodes"]] == ["n0"] and lst["next_cursor"] is None, lst
    assert cli_json(c, "nodes", "list", "--status", "online", "--label", "zone=eu")["nodes"][0]["id"] == "n0"
    assert cli_json(c, "nodes", "list", "--label", "zone=eu,rack=r 1")["nodes"][0]["id"] == "n0"
    assert cli_json(c, "nodes", "list", "--label", "zone=us")["nodes"] == []
    assert cli_json(c, "nodes", "list", "--status", "offline")["nodes"] == []
    assert cli_json(c, "nodes", "list", "--gpu-vendor", "amd")["nodes"] == []
    _, err = cli(c, "nodes", "list", "--status", "bogus", want=1)
    assert err.startswith("wolfpack: invalid_request: ") and "(HTTP 400)" in err, err
    n = cli_json(c, "nodes", "get", "n0")
    assert n["id"] == "n0" and n["labels"]["zone"] == "eu", n
    # an id is one path segment, URL-encoded: "../tokens" cannot reach another route
    _, err = cli(c, "nodes", "get", "../tokens", want=1)
    assert "(HTTP 400)" in err or "(HTTP 404)" in err, err
    for args in (["nodes", "get", "ghost"], ["nodes", "drain", "ghost"],
                 ["nodes", "delete", "ghost", "--force"]):
        _, err = cli(c, *args, want=1)
        assert err.startswith("wolfpack: not_found: ") and "(HTTP 404)" in err, (args, err)
    n = cli_json(c, "nodes", "drain", "n0")
    assert n["status"] == "draining", n
    assert cli_json(c, "nodes", "list", "--status", "draining")["nodes"][0]["id"] == "n0"
    _, err = cli(c, "sessions", "create", "--image", IMAGE, want=1)
    assert err.startswith("wolfpack: no_capacity: ") and '"excluded"' in err, err
    n = cli_json(c, "nodes", "undrain", "n0")
    assert n["status"] == "online", n


def test_sessions(c):
    vendor = cli_json(c, "nodes", "get", "n0")["gpu_vendor"]
    s = cli_json(c, "sessions", "create", "--image", IMAGE, "--name", "desk one",
                 "--gpu-vendor", vendor, "--label", "zone=eu", "--prefer-label", "rack=r 1",
                 "--node-id", "n0", "--env", "TZ=UTC", "--env", "A=b=c",
                 "--width", "1280", "--height", "720", "--refresh-rate", "30")
    assert s["status"] == "running" and s["node_id"] == "n0" and s["name"] == "desk one", s
    rq = s["request"]
    assert rq["runner"]["env"] == ["TZ=UTC", "A=b=c"] and rq["runner"]["image"] == IMAGE, rq
    assert rq["video"] == {"width": 1280, "height": 720, "refresh_rate": 30}, rq
    assert rq["requirements"]["labels"] == {"zone": "eu"}, rq
    assert rq["requirements"]["gpu_vendor"] == vendor and rq["requirements"]["node_id"] == "n0", rq
    assert rq["requirements"]["prefer_labels"] == {"rack": "r 1"}, rq
    assert c.cl.lobbies() == 1
    c.sid = s["id"]
    body = json.dumps({"name": "from-json", "runner": {"type": "docker", "image": IMAGE}})
    s2 = cli_json(c, "sessions", "create", "--json", "-", stdin=body.encode())
    assert s2["status"] == "running" and s2["name"] == "from-json", s2
    _, err = cli(c, "sessions", "create", "--json", "-", stdin=b"{nope", want=1)
    assert err.startswith("wolfpack: invalid_json: "), err
    _, err = cli(c, "sessions", "create", "--image", "bad image!", want=1)
    assert err.startswith("wolfpack: invalid_request: ") and "runner.image" in err, err
    assert cli_json(c, "sessions", "get", c.sid)["id"] == c.sid
    ids = sorted([c.sid, s2["id"]])
    lst = cli_json(c, "sessions", "list", "--status", "running", "--node", "n0")
    assert [x["id"] for x in lst["sessions"]] == ids and lst["next_cursor"] is None, lst
    # pages: one item per request, followed to the end; --limit stops early with the cursor
    st, b = c.cl.api("GET", "/api/v1/sessions")
    every = [x["id"] for x in b["sessions"]]  # with the one no_capacity failed in test_nodes
    assert st == 200 and len(every) >= 3, b
    lst = cli_json(c, "sessions", "list", "--page-size", "1")
    assert [x["id"] for x in lst["sessions"]] == every and lst["next_cursor"] is None, lst
    lst = cli_json(c, "sessions", "list", "--limit", "2")
    assert [x["id"] for x in lst["sessions"]] == every[:2] and lst["next_cursor"] == every[1], lst
    lst = cli_json(c, "sessions", "list", "--cursor", every[1], "--page-size", "1")
    assert [x["id"] for x in lst["sessions"]] == every[2:], lst
    assert cli_json(c, "sessions", "list", "--owner", "bootstrap-admin")["sessions"] != []
    assert cli_json(c, "sessions", "list", "--owner", "nobody")["sessions"] == []
    # a user sees none of them, and may not filter by owner
    user = cli_json(c, "tokens", "create", "--name", "cli-user", "--role", "user")
    c.secrets.append(user["token"])
    assert cli_json(c, "sessions", "list", env={"WOLFPACK_TOKEN": user["token"]})["sessions"] == []
    cli(c, "sessions", "get", c.sid, want=1, env={"WOLFPACK_TOKEN": user["token"]})
    _, err = cli(c, "sessions", "list", "--owner", "x", want=1, env={"WOLFPACK_TOKEN": user["token"]})
    assert "only admins" in err, err
    _, err = cli(c, "sessions", "list", want=1, env={"WOLFPACK_TOKEN": "wpadm_wrong"})
    assert err.startswith("wolfpack: unauthorized: ") and "(HTTP 401)" in err, err
    # the node is busy now
    _, err = cli(c, "nodes", "delete", "n0", want=1)
    assert err.startswith("wolfpack: node_busy: ") and "(HTTP 409)" in err, err
    # stop: delete, then the stop alias again (idempotent)
    assert cli_json(c, "sessions", "delete", c.sid)["status"] == "stopped"
    assert cli_json(c, "sessions", "stop", c.sid)["status"] == "stopped"
    assert cli_json(c, "sessions", "stop", s2["id"])["status"] == "stopped"
    assert c.cl.lobbies() == 0
    assert cli_json(c, "sessions", "list", "--status", "running")["sessions"] == []
    _, err = cli(c, "sessions", "get", "00000000-0000-0000-0000-000000000000", want=1)
    assert err.startswith("wolfpack: not_found: ") and "(HTTP 404)" in err, err


def test_events(c):
    ev = cli_json(c, "events", "list", "--session", c.sid)["events"]
    types = [e["type"] for e in ev]
    assert "session.running" in types and "session.stopped" in types, types
    assert all(e.get("session_id") == c.sid for e in ev), ev
    everything = cli_json(c, "events", "list")
    ids = [e["id"] for e in everything["events"]]
    assert len(ids) >= 6 and everything["next_cursor"] is None
    paged = cli_json(c, "events", "list", "--page-size", "2")
    assert [e["id"] for e in paged["events"]] == ids, "pages lost or repeated events"
    three = cli_json(c, "events", "list", "--page-size", "2", "--limit", "3")
    assert [e["id"] for e in three["events"]] == ids[:3] and three["next_cursor"] is not None
    rest = cli_json(c, "events", "list", "--cursor", three["next_cursor"])
    assert [e["id"] for e in rest["events"]] == ids[3:]
    node = cli_json(c, "events", "list", "--node", "n0", "--type", "node.drained")["events"]
    assert len(node) == 1 and node[0]["type"] == "node.drained", node
    # '+' in --since must arrive as '+' (URL-encoded), not as a space
    assert len(cli_json(c, "events", "list", "--since", "2000-01-01T00:00:00+00:00")["events"]) == len(ids)
    assert cli_json(c, "events", "list", "--since", "2999-01-01T00:00:00+02:00")["events"] == []
    _, err = cli(c, "events", "list", "--since", "yesterday", want=1)
    assert err.startswith("wolfpack: invalid_request: "), err


def main():
    r = Runner()
    c = Ctx()
    c.secrets = []
    c.cl = Cluster([{"zone": "eu", "rack": "r 1"}], max_sessions=4,
                   extra_args=["--wolf-timeout", "5"])
    try:
        for fn in (test_help_and_usage, test_unreachable, test_nodes, test_sessions, test_events):
            r.run(fn, c)
    finally:
        rcs = c.cl.close()
        shutil.rmtree(c.cl.dir, ignore_errors=True)
    if any(rc != 0 for rc in rcs):
        print("non-zero exit codes (wolfpackd, agents...): %s\n%s" % (rcs, c.cl.wp.log()[-3000:]))
        return 1
    return r.done()


if __name__ == "__main__":
    sys.exit(main())
