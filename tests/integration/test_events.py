#!/usr/bin/env python3
"""test_events.py — /api/v1/events and the SSE stream on the real wolfpackd.

The list: token.created / token.revoked (once, never a secret) and node events, filters
(node, type, session, since), oldest-first cursor pages covering every event exactly once,
400 for malformed filters (SQL-looking ones included), 403 for user and agent tokens.
The stream (raw TLS socket, chunked body): a node event created after connecting arrives
with id/event/data; Last-Event-ID replays; a node filter holds back other nodes' events;
at most 64 streams (65th: 503) and the slots come back when clients hang up; wolfpackd
exits 0 with a stream still open.
"""
import json
import os
import socket
import ssl
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wolfpack_test import Runner, Wolfpackd, read_response  # noqa: E402

SQL = "'; DROP TABLE events; --"


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


def q(s):
    return urllib.parse.quote(s, safe="")


class Stream:
    """One SSE response read from a raw socket: headers, then de-chunked events."""

    def __init__(self, wp, token, path="/api/v1/events/stream", last_id=None):
        self.s = wp.connect()
        req = "GET %s HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n" % (path, token)
        req += "Accept: text/event-stream\r\n"
        if last_id is not None:
            req += "Last-Event-ID: %s\r\n" % last_id
        self.s.sendall(req.encode() + b"\r\n")
        self.s.settimeout(10)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("closed before headers")
            buf += chunk
        head, self.raw = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = dict((k.strip().lower(), v.strip()) for k, v in
                            (ln.split(":", 1) for ln in lines[1:]))
        self.body = b""  # de-chunked

    def _dechunk(self):
        while True:
            if b"\r\n" not in self.raw:
                return
            size_line, rest = self.raw.split(b"\r\n", 1)
            n = int(size_line.split(b";")[0], 16)
            if len(rest) < n + 2:
                return
            self.body += rest[:n]
            self.raw = rest[n + 2:]
            if n == 0:
                return

    def events(self):
        """Complete events so far: list of dicts with id, event, data (parsed)."""
        out = []
        for block in self.body.decode().split("\n\n")[:-1]:
            ev = {}
            for line in block.split("\n"):
                if line.startswith(":") or not line:
                    continue
                k, _, v = line.partition(": ")
                ev[k] = v
            if "data" in ev:
                ev["data"] = json.loads(ev["data"])
                out.append(ev)
        return out

    def wait_for(self, pred, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = [e for e in self.events() if pred(e)]
            if got:
                return got
            self.s.settimeout(max(0.1, deadline - time.time()))
            try:
                chunk = self.s.recv(65536)
            except (socket.timeout, ssl.SSLError):
                continue
            if not chunk:
                raise EOFError("stream closed")
            self.raw += chunk
            self._dechunk()
        raise AssertionError("no matching event in %r" % self.body[-2000:])

    def close(self):
        self.s.close()


class Ctx:
    pass


def test_token_events(c):
    st, _, b = call(c.wp, "POST", "/api/v1/tokens", c.admin, {"name": "ev user", "role": "user"})
    assert st == 201
    c.user, uid = b["token"], b["id"]
    st, _, b = call(c.wp, "POST", "/api/v1/tokens", c.admin,
                    {"name": "ev agent", "role": "agent", "node_id": "gpu-ev"})
    c.agent = b["token"]
    st, _, _ = call(c.wp, "DELETE", "/api/v1/tokens/" + uid, c.admin)
    assert st == 204
    st, _, _ = call(c.wp, "DELETE", "/api/v1/tokens/" + uid, c.admin)
    assert st == 204
    st, _, b = call(c.wp, "GET", "/api/v1/events?type=token.created", c.admin)
    assert st == 200, (st, b)
    made = [e for e in b["events"] if e["token_id"] == uid]
    assert len(made) == 1 and made[0]["data"]["name"] == "ev user", b
    assert made[0]["data"]["role"] == "user" and made[0]["data"]["by"] == "bootstrap-admin"
    agent_ev = [e for e in b["events"] if e["data"]["name"] == "ev agent"]
    assert agent_ev and agent_ev[0]["data"]["node_id"] == "gpu-ev"
    st, _, b = call(c.wp, "GET", "/api/v1/events?type=token.revoked", c.admin)
    assert [e["token_id"] for e in b["events"]] == [uid], b  # the second revoke wrote none
    st, _, b = call(c.wp, "GET", "/api/v1/events?limit=500", c.admin)
    text = json.dumps(b)
    assert c.user not in text and c.agent not in text and c.admin not in text
    for tok in (c.user, c.agent):
        st, _, _ = call(c.wp, "GET", "/api/v1/events", tok)
        assert st in (401, 403), st  # the user token is revoked by now
    st, _, _ = call(c.wp, "GET", "/api/v1/events", c.agent)
    assert st == 403
    st, _, _ = call(c.wp, "GET", "/api/v1/events/stream", c.agent)
    assert st == 403
    st, _, _ = call(c.wp, "GET", "/api/v1/events")
    assert st == 401


def test_list_filters_pages(c):
    for i in range(7):
        st, _, _ = call(c.wp, "POST", "/api/v1/nodes", c.admin,
                        {"id": "ev-%d" % i, "max_sessions": 1})
        assert st == 201
    call(c.wp, "POST", "/api/v1/nodes/ev-3/drain", c.admin)
    st, _, b = call(c.wp, "GET", "/api/v1/events?node=ev-3", c.admin)
    assert [e["type"] for e in b["events"]] == ["node.registered", "node.drained"], b
    assert b["next_cursor"] is None
    st, _, b = call(c.wp, "GET", "/api/v1/events?type=node.drained", c.admin)
    assert [e["node_id"] for e in b["events"]] == ["ev-3"]
    st, _, b = call(c.wp, "GET", "/api/v1/events?since=2000-01-01T00:00:00Z&type=node.registered",
                    c.admin)
    assert len(b["events"]) == 7
    st, _, b = call(c.wp, "GET", "/api/v1/events?since=" + q("2999-01-01T00:00:00+01:00"), c.admin)
    assert st == 200 and b["events"] == []
    st, _, b = call(c.wp, "GET", "/api/v1/events?session=00000000-0000-4000-8000-000000000000",
                    c.admin)
    assert st == 200 and b["events"] == []
    st, _, full = call(c.wp, "GET", "/api/v1/events?limit=500", c.admin)
    ids = [e["id"] for e in full["events"]]
    assert ids == sorted(ids) and len(ids) >= 11, ids  # oldest first
    seen, cursor = [], None
    while True:
        st, _, b = call(c.wp, "GET", "/api/v1/events?limit=3" + ("&cursor=" + cursor if cursor else ""),
                        c.admin)
        assert st == 200 and len(b["events"]) <= 3
        seen += [e["id"] for e in b["events"]]
        cursor = b["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    st, _, b = call(c.wp, "GET", "/api/v1/events?cursor=%d" % ids[-1], c.admin)
    assert b["events"] == [] and b["next_cursor"] is None
    for query in ("limit=0", "limit=501", "since=yesterday", "since=2024-02-30T00:00:00Z",
                  "since=" + q(SQL), "cursor=-1", "cursor=" + q(SQL), "node=BAD_ID",
                  "node=" + q(SQL), "session=not-a-uuid", "session=" + q(SQL), "type=Node.X",
                  "type=" + q(SQL)):
        st, _, b = call(c.wp, "GET", "/api/v1/events?" + query, c.admin)
        assert st == 400 and b["error"]["code"] == "invalid_request", (query, st, b)
    st, _, b = call(c.wp, "GET", "/api/v1/events?limit=1", c.admin)
    assert st == 200 and len(b["events"]) == 1


def test_stream_live(c):
    s = Stream(c.wp, c.admin)
    try:
        assert s.status == 200, s.status
        assert s.headers["content-type"].startswith("text/event-stream")
        assert s.headers.get("transfer-encoding") == "chunked"
        assert s.headers.get("cache-control") == "no-cache"
        st, _, _ = call(c.wp, "POST", "/api/v1/nodes", c.admin, {"id": "ev-live", "max_sessions": 1})
        assert st == 201
        got = s.wait_for(lambda e: e["data"].get("node_id") == "ev-live")
        ev = got[0]
        assert ev["event"] == "node.registered" and ev["data"]["type"] == "node.registered"
        assert int(ev["id"]) == ev["data"]["id"]
        c.live_id = ev["data"]["id"]
        # nothing from before the connection was replayed
        assert all(e["data"]["id"] >= c.live_id for e in s.events()), s.events()
        call(c.wp, "POST", "/api/v1/nodes/ev-live/drain", c.admin)
        s.wait_for(lambda e: e["event"] == "node.drained")
        ids = [int(e["id"]) for e in s.events()]
        assert ids == sorted(ids) and len(ids) == len(set(ids))
    finally:
        s.close()


def test_stream_resume_and_filter(c):
    s = Stream(c.wp, c.admin, last_id=c.live_id - 1)
    try:
        got = s.wait_for(lambda e: e["data"]["id"] == c.live_id)
        assert got[0]["data"]["node_id"] == "ev-live"
    finally:
        s.close()
    f = Stream(c.wp, c.admin, path="/api/v1/events/stream?node=ev-b")
    try:
        call(c.wp, "POST", "/api/v1/nodes", c.admin, {"id": "ev-a", "max_sessions": 1})
        call(c.wp, "POST", "/api/v1/nodes", c.admin, {"id": "ev-b", "max_sessions": 1})
        f.wait_for(lambda e: e["data"]["node_id"] == "ev-b")
        assert all(e["data"]["node_id"] == "ev-b" for e in f.events()), f.events()
    finally:
        f.close()
    for path, hdr in (("/api/v1/events/stream?since=2024-01-01T00:00:00Z", None),
                      ("/api/v1/events/stream?node=" + q(SQL), None),
                      ("/api/v1/events/stream", "abc"), ("/api/v1/events/stream", "-1")):
        s = c.wp.connect()
        req = "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n" % (path, c.admin)
        if hdr:
            req += "Last-Event-ID: %s\r\n" % hdr
        s.sendall(req.encode() + b"\r\n")
        st, _, body = read_response(s)
        s.close()
        assert st == 400, (path, hdr, st, body)


def test_stream_limit_and_cleanup(c):
    streams = []
    try:
        for _ in range(64):
            streams.append(Stream(c.wp, c.admin, last_id=0))
        assert all(s.status == 200 for s in streams)
        st, h, b = call(c.wp, "GET", "/api/v1/events/stream", c.admin)
        assert st == 503 and b["error"]["code"] == "too_many_streams", (st, b)
    finally:
        for s in streams:
            s.close()
    # hung-up clients free their slots (after the server notices the close)
    deadline = time.time() + 10
    while True:
        try:
            s = Stream(c.wp, c.admin)
            ok = s.status == 200
            s.close()
            if ok:
                break
        except (OSError, EOFError):
            pass
        assert time.time() < deadline, "stream slots were not released"
        time.sleep(0.2)
    assert c.wp.alive()


def test_shutdown_with_open_stream(c):
    c.open_stream = Stream(c.wp, c.admin)
    assert c.open_stream.status == 200
    # main() stops wolfpackd with it open and checks exit code 0


def main():
    r = Runner()
    c = Ctx()
    c.wp = Wolfpackd(wait_ready=True)
    c.open_stream = None
    with open(os.path.join(c.wp.state, "admin.token")) as f:
        c.admin = f.read().strip()
    try:
        for t in (test_token_events, test_list_filters_pages, test_stream_live,
                  test_stream_resume_and_filter, test_stream_limit_and_cleanup,
                  test_shutdown_with_open_stream):
            r.run(t, c)
    finally:
        rc = c.wp.stop()
        if c.open_stream:
            c.open_stream.close()
        if rc != 0:
            print("FAIL stop: exit %d\n%s" % (rc, c.wp.log()[-3000:]))
            r.failed += 1
    return r.done()


if __name__ == "__main__":
    sys.exit(main())
