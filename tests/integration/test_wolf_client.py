#!/usr/bin/env python3
"""test_wolf_client.py — wolfpackd's Wolf API client (controlplane/wolf.c) end to end.

The real wolfpackd and one real wolfpack-agent whose `wolf` service is a FakeWolf UNIX socket;
the client is driven through the sessions API (POST/DELETE /api/v1/sessions). Checked: the
request as Wolf sees it (one per connection, Content-Length and never chunked, Host: wolf,
Connection: close, JSON body), a reply without Content-Length (body to FIN), stopping the Wolf
sessions attached to the lobby by their u64 ids (above 2^63) and then the lobby with its PIN as a
digit list, Wolf's error envelope reaching the API error, a Wolf that accepts and never answers
(the call's timeout), an oversized reply (refused, bounded) and Wolf's socket gone (the agent
refuses the stream).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sessions_harness import Cluster  # noqa: E402
from wolfpack_test import Runner  # noqa: E402

CREATE = ("POST", "/api/v1/lobbies/create")


def wolf_requests(w, method, path):
    with w.lock:
        return [r for r in w.requests if r["method"] == method and r["path"] == path]


def create_ok(c):
    st, b = c.create(name="wc")
    assert st == 201, (st, b)
    return b


def lobby_of(c, sid):
    return c.psql("SELECT wolf_lobby_id FROM sessions WHERE id = '%s'" % sid)


def test_request_shape_and_stop(c):
    w = c.wolves[0]
    b = create_ok(c)
    lid = lobby_of(c, b["id"])
    assert lid in w.lobbies, (lid, w.lobbies)
    (req,) = wolf_requests(w, *CREATE)[-1:]
    h = req["headers"]
    assert not req["chunked"] and "transfer-encoding" not in h, h
    assert h.get("host") == "wolf" and h.get("connection", "").lower() == "close", h
    assert h.get("content-type") == "application/json", h
    assert int(h["content-length"]) == len(req["raw"]) > 0, h
    assert isinstance(req["body"], dict) and req["body"]["pin"] == w.lobbies[lid]["pin"], req["body"]
    # two Wolf stream sessions attached to the lobby (ids above INT64_MAX), one elsewhere
    s1, s2, other = w.add_session(lid), w.add_session(lid), w.add_session()
    st, body = c.api("DELETE", "/api/v1/sessions/" + b["id"])
    assert st == 200, (st, body)
    assert lid not in w.lobbies
    assert set(w.sessions) == {other}, (w.sessions, s1, s2)
    stops = [x[2] for x in w.calls if x[:2] == ("POST", "/api/v1/sessions/stop")]
    assert {"session_id": s1} in stops and {"session_id": s2} in stops, stops
    (lstop,) = [x[2] for x in w.calls if x[:2] == ("POST", "/api/v1/lobbies/stop")][-1:]
    assert lstop["lobby_id"] == lid and isinstance(lstop["pin"], list) and len(lstop["pin"]) == 4, lstop


def test_reply_without_content_length(c):
    w = c.wolves[0]
    w.no_length(*CREATE)
    try:
        b = create_ok(c)
        assert lobby_of(c, b["id"]) in w.lobbies
    finally:
        w.clear_faults()
    c.stop_all_sessions()


def wait_online(c):
    # a failed start puts the node in cooldown (degraded): this cluster runs --node-cooldown 0
    c.wait_node(0, "online", timeout=30)


def test_wolf_error_envelope(c):
    w = c.wolves[0]
    w.fail(*CREATE, status=500, error="Lobby setup timed out")
    try:
        st, b = c.create(name="wc-err")
        assert st == 502 and b["error"]["code"] == "start_failed", (st, b)
        assert "Lobby setup timed out" in b["error"]["message"], b
        assert not w.lobbies
    finally:
        w.clear_faults()
    wait_online(c)


def test_wolf_silent_times_out(c):
    w = c.wolves[0]
    w.hang(*CREATE)
    try:
        t0 = time.time()
        st, b = c.create(name="wc-hang")
        took = time.time() - t0
        assert st == 504 and b["error"]["code"] == "start_timeout", (st, b)
        assert 1.5 <= took < 15, took  # --wolf-timeout 2
    finally:
        w.clear_faults()
    wait_online(c)


def test_oversized_reply_refused(c):
    w = c.wolves[0]
    w.fail(*CREATE, status=500, error="x" * (2 * 1024 * 1024))
    try:
        st, b = c.create(name="wc-big")
        assert st == 502, (st, b)
        assert "larger than the limit" in b["error"]["message"], b
        assert c.wp.alive()
    finally:
        w.clear_faults()
    wait_online(c)


def test_wolf_socket_gone(c):
    w = c.wolves[0]
    w.stop()  # the socket file disappears: the agent cannot dial it
    try:
        st, b = c.create(name="wc-gone")
        assert st == 502, (st, b)
        msg = b["error"]["message"]
        assert "refused the Wolf stream" in msg, b
    finally:
        w.start()
    wait_online(c)
    create_ok(c)
    c.stop_all_sessions()


def main():
    r = Runner()
    c = Cluster([{}], max_sessions=8,
                extra_args=["--wolf-timeout", "2", "--node-cooldown", "0", "--schedule-attempts", "1",
                            "--heartbeat-interval", "300"])  # no health report lands mid-test
    try:
        for t in (test_request_shape_and_stop, test_reply_without_content_length, test_wolf_error_envelope,
                  test_wolf_silent_times_out, test_oversized_reply_refused, test_wolf_socket_gone):
            r.run(t, c)
        r.run(clean_exit, c)
    finally:
        c.close()
    return r.done()


def clean_exit(c):
    """Both processes end cleanly (no sanitizer report, no leak: exit code 0)."""
    assert c.wp.alive() and c.agents[0].alive()
    assert c.agents[0].stop() == 0, c.agents[0].log()[-3000:]
    assert c.wp.stop() == 0, c.wp.log()[-3000:]


if __name__ == "__main__":
    sys.exit(main())
