#!/usr/bin/env python3
"""test_e2e.py — the real wolfpackd and the real wolfpack-agent together.

wolfpackd starts with no configuration (embedded PostgreSQL), prints its join
command; wolfpack-agent started with exactly that command (plus a node id, a
label and a local echo service) joins; the node shows up online with its
labels in GET /api/v1/nodes; an admin CONNECT reaches the echo service through
the tunnel (1 MiB round trip, byte exact); both exit 0 on SIGTERM and no token
appears in either log.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wolfpack_test import (Agent, EchoServer, Runner, Wolfpackd, admin_token, api,  # noqa: E402
                           connect_stream, exchange, join_args, read_response)


class Ctx:
    agent = None


def test_agent_joins_with_printed_command(c):
    # exactly the printed command's arguments (no subcommand), plus a node id, a label, a service
    argv = join_args(c.wp, timeout=15) + [
        "--node-id", "e2e-node", "--label", "region=eu",
        "--service", "moonlight=tcp:127.0.0.1:%d" % c.echo.port, "--log-level", "debug"]
    c.agent = Agent(c.wp.dir, "e2e-node", argv)
    node = c.agent.wait_online(c.wp, c.admin, timeout=30)
    assert node and node.get("status") == "online", (node, c.agent.log()[-2000:], c.wp.log()[-2000:])
    assert node["labels"] == {"region": "eu"}, node["labels"]
    st, lst = api(c.wp, "GET", "/api/v1/nodes?label=region=eu", c.admin)
    assert st == 200 and [n["id"] for n in lst["nodes"]] == ["e2e-node"], lst


def test_connect_through_tunnel(c):
    s, head = connect_stream(c.wp, "e2e-node:moonlight", c.admin)
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
    assert c.agent.stop(timeout=40) == 0, c.agent.log()[-3000:]
    with open(os.path.join(c.wp.state, "join.token")) as f:
        join = f.read().strip()
    for secret in (join, c.admin):
        assert secret not in c.agent.log()
        assert secret not in c.wp.log()


def main():
    r = Runner()
    c = Ctx()
    c.echo = EchoServer()
    c.wp = Wolfpackd(wait_ready=True, extra_args=["--heartbeat-interval", "2"])
    c.admin = admin_token(c.wp)
    try:
        r.run(test_agent_joins_with_printed_command, c)
        if c.agent:
            r.run(test_connect_through_tunnel, c)
            r.run(test_clean_exit_and_no_secrets, c)
    finally:
        rc = r.finish(c.wp, c.agent)
    return rc


if __name__ == "__main__":
    sys.exit(main())
