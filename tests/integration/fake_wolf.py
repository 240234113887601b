#!/usr/bin/env python3
"""fake_wolf.py — a stdlib-only fake of Wolf (games-on-whales, 2025+ build with lobbies).

Reproduces the shapes and quirks in shared/reference/wolf-and-moonlight.md, so code that
passes against it should pass against the real thing:

Wolf API, HTTP over a UNIX socket (`socket_path`):
  * every reply is `HTTP/1.0 <code> OK` (reason always "OK", even 404/500) with only a
    `Content-Length` header; one request per connection (the fake closes after the reply and
    never reads a second request);
  * a request with `Transfer-Encoding: chunked` gets 500; routes match exactly on
    (method, path) (query string ignored), anything else is 404 with an empty body;
  * envelopes `{"success":true,...}` / `{"success":false,"error":"..."}` (status 500);
  * in-memory state: apps, clients, stream sessions (ids are u64 strings, often > 2^63),
    lobbies (uuid ids). GET /api/v1/openapi-schema (plain OpenAPI JSON, no envelope),
    GET /api/v1/apps, POST apps/add, apps/delete, GET/POST sessions, sessions/add,
    sessions/stop ({session_id}; unknown or non-numeric -> 500 "Invalid session_id"),
    GET /api/v1/lobbies, POST lobbies/create (body validated like Wolf's reflect-cpp parser:
    profile_id, name, multi_user, pin? [4 digits], stop_when_everyone_leaves,
    video_settings{width,height,refresh_rate: int; wayland_render_node, runner_render_node,
    video_producer_buffer_caps: str}, audio_settings{channel_count}, runner_state_folder,
    runner{type:"docker", name, image, mounts[], env[], devices[], ports[]} or
    {type:"process", run_cmd}) -> {success, lobby_id}, lobbies/join, lobbies/leave,
    lobbies/stop ({lobby_id, pin?}: unknown -> 500 "Invalid lobby ID", pin differing from
    the lobby's (absent counts) -> 500 "Invalid PIN"; sessions attached to the lobby are NOT
    stopped, as the caller is expected to stop them first), GET /api/v1/clients,
    GET /api/v1/pair/pending, POST /api/v1/runners/start (never answers for a known session),
    GET /api/v1/system/health only when helix=True.
  * a 2xx reply may also come without Content-Length (`no_length(method, path)`: body then FIN),
    as Wolf's streaming endpoints do.

Optional TCP `http_port` (GameStream HTTP): GET /serverinfo -> the one-line XML (status_code
"200", <state>SUNSHINE_SERVER_FREE); serverinfo_mode("ok"|"garbage"|"hang"|"status500"|
"http500"): status500 = HTTP 200 with <root status_code="500">, http500 = HTTP 500.
Optional TCP `https_port`: TLS (cert generated with the openssl CLI into cert_dir) that completes
handshakes; https_mode("ok"|"close"|"hang"): close = accept and close before the handshake,
hang = accept and never send a byte.

Faults and inspection (thread-safe): fail(method, path, status=500, error="..."),
hang(method, path) (reads the request, never answers), delay(method, path, seconds),
hang_api(True/False) (every API request hangs: "connected but silent"), clear_faults(),
restart() (drops every connection, deletes and recreates the socket file, loses all lobbies
and sessions), stop(); `calls` is a list of (method, path, parsed_body) (parsed_body: JSON
value, raw str if not JSON, None if empty), `requests` the same with headers, `lobbies` and
`sessions` are snapshots; add_session(lobby_id=None) attaches a fake stream session.

Process mode (for a fake living in another process, e.g. killed with SIGKILL and restarted
to model a Wolf restart):
    python3 fake_wolf.py --socket P [--http-port N] [--https-port N] [--cert-dir D]
                         [--control-port N] [--helix]
prints "fake_wolf ready" once listening. The control port (127.0.0.1) takes one JSON object
per line, e.g. {"op":"fail","method":"POST","path":"/api/v1/lobbies/create"}, and answers one
JSON line {"ok":true,"result":...}; FakeWolfControl(port) wraps it with the same method names.
"""
import argparse
import copy
import json
import os
import random
import re
import select
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid

MAX_HEADER = 64 * 1024
MAX_BODY = 16 * 1024 * 1024

SERVERINFO = ('<?xml version="1.0" encoding="utf-8"?><root status_code="%s"><hostname>fake-wolf</hostname>'
              '<appversion>7.1.431.-1</appversion><GfeVersion>3.23.0.74</GfeVersion>'
              '<uniqueid>fake-wolf-0000</uniqueid><HttpsPort>%d</HttpsPort><ExternalPort>%d</ExternalPort>'
              '<mac>00:00:00:00:00:00</mac><LocalIP>127.0.0.1</LocalIP>'
              '<ServerCodecModeSupport>3</ServerCodecModeSupport><SupportedDisplayMode></SupportedDisplayMode>'
              '<PairStatus>0</PairStatus><currentgame>0</currentgame><state>SUNSHINE_SERVER_FREE</state></root>')

OPENAPI = {"openapi": "3.1.0", "info": {"title": "Wolf API", "version": "0.1"},
           "paths": {p: {} for p in ("/api/v1/apps", "/api/v1/sessions", "/api/v1/lobbies",
                                     "/api/v1/lobbies/create", "/api/v1/lobbies/stop", "/api/v1/clients")}}

U64_RE = re.compile(r"^[0-9]{1,20}$")


class BadRequest(Exception):
    pass


def _is_u64(s):
    return isinstance(s, str) and U64_RE.match(s) is not None and int(s) <= 0xFFFFFFFFFFFFFFFF


def _need(obj, key, types, where=""):
    if not isinstance(obj, dict) or key not in obj:
        raise BadRequest("Field named '%s%s' not found." % (where, key))
    v = obj[key]
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise BadRequest("Field '%s%s' has the wrong type." % (where, key))
    if not isinstance(v, types):
        raise BadRequest("Field '%s%s' has the wrong type." % (where, key))
    return v


def _opt(obj, key, types, where=""):
    if key not in obj or obj[key] is None:
        return None
    return _need(obj, key, types, where)


def _pin(obj):
    pin = _opt(obj, "pin", list)
    if pin is None:
        return None
    if len(pin) != 4 or any(isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= 9 for d in pin):
        raise BadRequest("Field 'pin' must be a list of 4 digits.")
    return list(pin)


def validate_runner(r):
    if not isinstance(r, dict):
        raise BadRequest("Field 'runner' has the wrong type.")
    t = _need(r, "type", str, "runner.")
    if t == "docker":
        _need(r, "name", str, "runner.")
        _need(r, "image", str, "runner.")
        for k in ("mounts", "env", "devices", "ports"):
            lst = _need(r, k, list, "runner.")
            if any(not isinstance(x, str) for x in lst):
                raise BadRequest("Field 'runner.%s' must be a list of strings." % k)
        _opt(r, "base_create_json", str, "runner.")
    elif t == "process":
        _need(r, "run_cmd", str, "runner.")
    else:
        raise BadRequest("Unknown runner type '%s'." % t)


def validate_lobby_create(b):
    if not isinstance(b, dict):
        raise BadRequest("Expected an object.")
    _need(b, "profile_id", str)
    _need(b, "name", str)
    _opt(b, "icon_png_path", str)
    _need(b, "multi_user", bool)
    _pin(b)
    _need(b, "stop_when_everyone_leaves", bool)
    vs = _need(b, "video_settings", dict)
    for k in ("width", "height", "refresh_rate"):
        v = _need(vs, k, int, "video_settings.")
        if v <= 0:
            raise BadRequest("Field 'video_settings.%s' must be positive." % k)
    for k in ("wayland_render_node", "runner_render_node", "video_producer_buffer_caps"):
        _need(vs, k, str, "video_settings.")
    aus = _need(b, "audio_settings", dict)
    _need(aus, "channel_count", int, "audio_settings.")
    _opt(b, "client_settings", dict)
    _need(b, "runner_state_folder", str)
    validate_runner(_need(b, "runner", dict))


def _reply_bytes(status, body):
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    return b"HTTP/1.0 %d OK\r\nContent-Length: %d\r\n\r\n" % (status, len(body)) + body


def _ok(**kw):
    d = {"success": True}
    d.update(kw)
    return 200, d


def _err(msg, status=500):
    return status, {"success": False, "error": msg}


HANG = object()  # handler result: keep the connection open, never answer


class _Conns:
    """Open connections of one listener, so stop()/restart() can drop them all."""

    def __init__(self):
        self.lock = threading.Lock()
        self.set = set()

    def add(self, s):
        with self.lock:
            self.set.add(s)

    def discard(self, s):
        with self.lock:
            self.set.discard(s)

    def close_all(self):
        with self.lock:
            socks = list(self.set)
            self.set.clear()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass


def _accept_loop(lsock, stop_ev, handler, conns):
    while not stop_ev.is_set():
        try:
            r, _, _ = select.select([lsock], [], [], 0.1)
        except (OSError, ValueError):
            return
        if not r:
            continue
        try:
            c, _ = lsock.accept()
        except OSError:
            if stop_ev.is_set():
                return
            continue
        conns.add(c)
        threading.Thread(target=handler, args=(c,), daemon=True).start()


def read_http_request(c, stop_ev, timeout=30):
    """Reads one request from socket c. Returns (method, target, headers{lower: value}, body,
    chunked) or None on EOF/garbage/timeout. Body is not read when chunked."""
    buf = b""
    deadline = time.time() + timeout
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_HEADER or stop_ev.is_set() or time.time() > deadline:
            return None
        r, _, _ = select.select([c], [], [], 0.1)
        if not r:
            continue
        d = c.recv(65536)
        if not d:
            return None
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    headers = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    if chunked:
        return parts[0], parts[1], headers, rest, True
    try:
        n = int(headers.get("content-length", "0"))
    except ValueError:
        return None
    if n < 0 or n > MAX_BODY:
        return None
    while len(rest) < n:
        if stop_ev.is_set() or time.time() > deadline:
            return None
        r, _, _ = select.select([c], [], [], 0.1)
        if not r:
            continue
        d = c.recv(65536)
        if not d:
            return None
        rest += d
    return parts[0], parts[1], headers, rest[:n], False


def _close(c):
    try:
        c.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        c.close()
    except OSError:
        pass


def gen_self_signed(d):
    """Self-signed EC cert for CN=localhost / 127.0.0.1 in d. Returns (cert, key)."""
    cert, key = os.path.join(d, "wolf.crt"), os.path.join(d, "wolf.key")
    if not (os.path.exists(cert) and os.path.exists(key)):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


class FakeWolf:
    def __init__(self, socket_path, http_port=None, https_port=None, cert_dir=None, helix=False):
        self.socket_path = socket_path
        self.http_port = http_port
        self.https_port = https_port
        self.cert_dir = cert_dir
        self.helix = helix
        self.lock = threading.RLock()
        self.calls = []
        self.requests = []
        self._faults = {}        # (method, path) -> ("fail", status, error) | ("hang",) | ("delay", s)
        self._no_length = set()  # (method, path) answered without Content-Length
        self._hang_api = False
        self._serverinfo_mode = "ok"
        self._https_mode = "ok"
        self.health_status = "healthy"
        self._reset_state()
        self._api_sock = None
        self._api_stop = threading.Event()
        self._api_conns = _Conns()
        self._tcp = []            # (lsock, stop_ev, conns, thread) for http/https
        self._api_thread = None
        self._ssl_ctx = None
        self.running = False

    # ---- state ----
    def _reset_state(self):
        self._lobbies = {}   # id -> lobby dict (+ "_pin")
        self._sessions = {}  # id -> session dict
        self._apps = [{"id": "1", "title": "Desktop", "icon_png_path": None, "support_hdr": False,
                       "runner": {"type": "process", "run_cmd": "sh -c 'sleep infinity'"}}]
        self._clients = [{"client_id": str(random.getrandbits(64) | (1 << 63)),
                          "app_state_folder": "fake-client",
                          "settings": {"run_uid": 1000, "run_gid": 1000, "controllers_override": [],
                                       "mouse_acceleration": 1.0, "v_scroll_acceleration": 1.0,
                                       "h_scroll_acceleration": 1.0}}]

    def _new_session_id(self):
        while True:
            sid = str(random.getrandbits(64) | (1 << 63))  # u64 above INT64_MAX, like real ids often are
            if sid not in self._sessions:
                return sid

    @property
    def lobbies(self):
        """Snapshot: id -> lobby as GET /api/v1/lobbies shows it, plus "pin" (list or None)."""
        with self.lock:
            out = {}
            for k, v in self._lobbies.items():
                d = {kk: copy.deepcopy(vv) for kk, vv in v.items() if not kk.startswith("_")}
                d["pin"] = copy.deepcopy(v["_pin"])
                d["request"] = copy.deepcopy(v["_req"])
                out[k] = d
            return out

    @property
    def sessions(self):
        with self.lock:
            return copy.deepcopy(self._sessions)

    def add_session(self, lobby_id=None, client_ip="10.0.0.9"):
        """Adds a stream session (as a Moonlight client connecting would); attaches it to
        lobby_id when given (must exist). Returns the session id string."""
        with self.lock:
            sid = self._new_session_id()
            self._sessions[sid] = {"app_id": "1", "client_id": sid, "client_ip": client_ip,
                                   "video_width": 1920, "video_height": 1080, "video_refresh_rate": 60,
                                   "audio_channel_count": 2}
            if lobby_id is not None:
                self._lobbies[lobby_id]["connected_sessions"].append(sid)
            return sid

    def call_count(self, method, path):
        with self.lock:
            return sum(1 for c in self.calls if c[0] == method and c[1] == path)

    # ---- faults ----
    def fail(self, method, path, status=500, error="injected failure"):
        with self.lock:
            self._faults[(method, path)] = ("fail", status, error)

    def hang(self, method, path):
        with self.lock:
            self._faults[(method, path)] = ("hang",)

    def delay(self, method, path, seconds):
        with self.lock:
            self._faults[(method, path)] = ("delay", float(seconds))

    def no_length(self, method, path, on=True):
        with self.lock:
            if on:
                self._no_length.add((method, path))
            else:
                self._no_length.discard((method, path))

    def hang_api(self, on=True):
        with self.lock:
            self._hang_api = bool(on)

    def clear_faults(self):
        with self.lock:
            self._faults.clear()
            self._no_length.clear()
            self._hang_api = False
            self._serverinfo_mode = "ok"
            self._https_mode = "ok"

    def serverinfo_mode(self, mode):
        assert mode in ("ok", "garbage", "hang", "status500", "http500")
        with self.lock:
            self._serverinfo_mode = mode

    def https_mode(self, mode):
        assert mode in ("ok", "close", "hang")
        with self.lock:
            self._https_mode = mode

    # ---- lifecycle ----
    def start(self):
        self._start_api()
        if self.http_port is not None:
            self._start_tcp(self.http_port, self._handle_http)
        if self.https_port is not None:
            if self.cert_dir is None:
                self.cert_dir = tempfile.mkdtemp(prefix="fake-wolf-tls-")
            cert, key = gen_self_signed(self.cert_dir)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self._ssl_ctx = ctx
            self._start_tcp(self.https_port, self._handle_https)
        self.running = True
        return self

    def _start_api(self):
        try:
            os.unlink(self.socket_path)  # Wolf deletes and re-creates the socket file on start
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.socket_path)
        s.listen(64)
        self._api_sock = s
        self._api_stop = threading.Event()
        self._api_thread = threading.Thread(target=_accept_loop,
                                            args=(s, self._api_stop, self._handle_api, self._api_conns),
                                            daemon=True)
        self._api_thread.start()

    def _stop_api(self):
        self._api_stop.set()
        if self._api_thread:
            self._api_thread.join(5)
        if self._api_sock:
            self._api_sock.close()
            self._api_sock = None
        self._api_conns.close_all()
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass

    def _start_tcp(self, port, handler):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(64)
        ev = threading.Event()
        conns = _Conns()
        t = threading.Thread(target=_accept_loop, args=(s, ev, handler, conns), daemon=True)
        t.start()
        self._tcp.append((s, ev, conns, t))

    def restart(self, down_s=0.0):
        """Like a Wolf restart: every API connection dropped, the socket file removed (absent
        for down_s seconds), all lobbies and sessions lost, socket re-created."""
        self._stop_api()
        with self.lock:
            self._reset_state()
        if down_s:
            time.sleep(down_s)
        self._start_api()

    def stop(self):
        self._stop_api()
        for s, ev, conns, t in self._tcp:
            ev.set()
            t.join(5)
            s.close()
            conns.close_all()
        self._tcp = []
        self.running = False

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    # ---- API connection ----
    def _handle_api(self, c):
        try:
            req = read_http_request(c, self._api_stop)
            if req is None:
                return
            method, target, headers, body, chunked = req
            path = target.split("?", 1)[0]
            parsed = None
            if body:
                try:
                    parsed = json.loads(body)
                except ValueError:
                    parsed = body.decode("utf-8", "replace")
            with self.lock:
                self.calls.append((method, path, parsed))
                self.requests.append({"method": method, "path": path, "target": target,
                                      "headers": headers, "body": parsed, "raw": body, "chunked": chunked})
                fault = self._faults.get((method, path))
                hang_all = self._hang_api
                no_len = (method, path) in self._no_length
            if hang_all or (fault and fault[0] == "hang"):
                self._hold(c)
                return
            if fault and fault[0] == "delay":
                if self._api_stop.wait(fault[1]):
                    return
                fault = None
            if chunked:
                res = _err("Transfer-Encoding: chunked is not supported")
            elif fault and fault[0] == "fail":
                res = (fault[1], {"success": False, "error": fault[2]})
            else:
                res = self._route(method, path, parsed, body)
            if res is HANG:
                self._hold(c)
                return
            status, out = res
            if no_len and 200 <= status < 300:
                data = json.dumps(out).encode() if not isinstance(out, (bytes, str)) else out
                if isinstance(data, str):
                    data = data.encode()
                c.sendall(b"HTTP/1.0 %d OK\r\n\r\n" % status + data)
            else:
                c.sendall(_reply_bytes(status, out))
        except OSError:
            pass
        finally:
            self._api_conns.discard(c)
            _close(c)

    def _hold(self, c):
        """Connected but silent, like Wolf with a dead API thread: nothing is read or answered and
        a half-close by the peer changes nothing; ends when the peer closes completely (POLLHUP)
        or at stop()/restart()."""
        p = select.poll()
        p.register(c, select.POLLHUP)
        while not self._api_stop.is_set():
            try:
                if any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, ev in p.poll(200)):
                    return
            except (OSError, ValueError):
                return

    def _route(self, method, path, b, raw):
        routes = {
            ("GET", "/api/v1/openapi-schema"): lambda: (200, OPENAPI),
            ("GET", "/api/v1/apps"): lambda: _ok(apps=copy.deepcopy(self._apps)),
            ("POST", "/api/v1/apps/add"): self._apps_add,
            ("POST", "/api/v1/apps/delete"): self._apps_delete,
            ("GET", "/api/v1/sessions"): lambda: _ok(sessions=list(copy.deepcopy(self._sessions).values())),
            ("POST", "/api/v1/sessions/add"): self._sessions_add,
            ("POST", "/api/v1/sessions/stop"): self._sessions_stop,
            ("GET", "/api/v1/lobbies"): self._lobbies_list,
            ("POST", "/api/v1/lobbies/create"): self._lobby_create,
            ("POST", "/api/v1/lobbies/join"): self._lobby_join,
            ("POST", "/api/v1/lobbies/leave"): self._lobby_leave,
            ("POST", "/api/v1/lobbies/stop"): self._lobby_stop,
            ("GET", "/api/v1/clients"): lambda: _ok(clients=copy.deepcopy(self._clients)),
            ("GET", "/api/v1/pair/pending"): lambda: _ok(requests=[]),
            ("POST", "/api/v1/runners/start"): self._runner_start,
        }
        if self.helix:
            routes[("GET", "/api/v1/system/health")] = lambda: _ok(
                overall_status=self.health_status, stuck_thread_count=0 if self.health_status == "healthy" else 1,
                threads=[])
        fn = routes.get((method, path))
        if fn is None:
            return 404, b""
        if method == "POST" and not isinstance(b, dict):
            return _err("Failed to parse request body as a JSON object")
        with self.lock:
            try:
                if method == "POST":
                    return fn(b)
                return fn()
            except BadRequest as e:
                return _err(str(e))

    def _apps_add(self, b):
        _need(b, "id", str)
        _need(b, "title", str)
        self._apps.append(copy.deepcopy(b))
        return _ok()

    def _apps_delete(self, b):
        i = _need(b, "id", str)
        self._apps = [a for a in self._apps if a.get("id") != i]
        return _ok()

    def _sessions_add(self, b):
        for k in ("video_width", "video_height", "video_refresh_rate", "audio_channel_count"):
            _need(b, k, int)
        _need(b, "client_ip", str)
        sid = self._new_session_id()
        s = {"app_id": b.get("app_id") or "1", "client_id": sid, "client_ip": b["client_ip"],
             "video_width": b["video_width"], "video_height": b["video_height"],
             "video_refresh_rate": b["video_refresh_rate"], "audio_channel_count": b["audio_channel_count"]}
        self._sessions[sid] = s
        return _ok(session_id=sid)

    def _sessions_stop(self, b):
        sid = _need(b, "session_id", str)
        if not _is_u64(sid) or sid not in self._sessions:
            return _err("Invalid session_id")
        del self._sessions[sid]
        for lob in self._lobbies.values():
            if sid in lob["connected_sessions"]:
                lob["connected_sessions"].remove(sid)
        return _ok()

    def _lobbies_list(self):
        out = []
        for v in self._lobbies.values():
            out.append({k: copy.deepcopy(vv) for k, vv in v.items() if not k.startswith("_")})
        return _ok(lobbies=out)

    def _lobby_create(self, b):
        validate_lobby_create(b)
        lid = str(uuid.uuid4())
        pin = _pin(b)
        self._lobbies[lid] = {"id": lid, "name": b["name"], "multi_user": b["multi_user"],
                              "started_by_profile_id": b["profile_id"], "pin_required": pin is not None,
                              "stop_when_everyone_leaves": b["stop_when_everyone_leaves"],
                              "runner": copy.deepcopy(b["runner"]), "connected_sessions": [],
                              "_pin": pin, "_req": copy.deepcopy(b)}
        return _ok(lobby_id=lid)

    def _check_pin(self, b):
        lid = _need(b, "lobby_id", str)
        pin = _pin(b)
        lob = self._lobbies.get(lid)
        if lob is None:
            raise BadRequest("Invalid lobby ID")
        if lob["_pin"] != pin:
            raise BadRequest("Invalid PIN")
        return lob

    def _lobby_join(self, b):
        sid = _need(b, "moonlight_session_id", str)
        lob = self._check_pin(b)
        if sid not in self._sessions:
            return _err("Lobby join failed: unknown session")
        if sid not in lob["connected_sessions"]:
            lob["connected_sessions"].append(sid)
        return _ok()

    def _lobby_leave(self, b):
        lid = _need(b, "lobby_id", str)
        sid = _need(b, "moonlight_session_id", str)
        lob = self._lobbies.get(lid)
        if lob and sid in lob["connected_sessions"]:
            lob["connected_sessions"].remove(sid)
        return _ok()

    def _lobby_stop(self, b):
        lob = self._check_pin(b)
        del self._lobbies[lob["id"]]
        return _ok()

    def _runner_start(self, b):
        sid = _need(b, "session_id", str)
        _need(b, "stop_stream_when_over", bool)
        validate_runner(_need(b, "runner", dict))
        if not _is_u64(sid) or sid not in self._sessions:
            return _err("Invalid session_id")
        return HANG

    # ---- GameStream HTTP / HTTPS ----
    def _handle_http(self, c):
        ev = threading.Event()
        try:
            req = read_http_request(c, ev, timeout=10)
            if req is None:
                return
            method, target, _, _, _ = req
            with self.lock:
                mode = self._serverinfo_mode
            if method != "GET" or target.split("?", 1)[0] != "/serverinfo":
                c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            if mode == "hang":
                deadline = time.time() + 600
                while self.running and time.time() < deadline:
                    r, _, _ = select.select([c], [], [], 0.2)
                    if r and not c.recv(4096):
                        return
                return
            https = self.https_port or 47984
            http = self.http_port or 47989
            status = 200
            if mode == "ok":
                body = SERVERINFO % ("200", https, http)
            elif mode == "garbage":
                body = "\x00\x01 this is not xml at all <<<"
            elif mode == "status500":
                body = SERVERINFO % ("500", https, http)
            else:
                status, body = 500, "internal error"
            data = body.encode("latin-1")
            c.sendall(b"HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n"
                      b"Connection: close\r\n\r\n" % (status, b"OK" if status == 200 else b"Error", len(data)) + data)
        except OSError:
            pass
        finally:
            _close(c)

    def _handle_https(self, c):
        try:
            with self.lock:
                mode = self._https_mode
            if mode == "close":
                return
            if mode == "hang":
                while self.running:
                    r, _, _ = select.select([c], [], [], 0.2)
                    if r and not c.recv(4096):
                        return
                return
            c.settimeout(10)
            t = self._ssl_ctx.wrap_socket(c, server_side=True)
            try:
                t.settimeout(10)
                data = t.recv(65536)
                if data:
                    body = SERVERINFO % ("200", self.https_port, self.http_port or 47989)
                    t.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                              % len(body) + body.encode())
            finally:
                t.close()
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            _close(c)


# ---- process mode ----

CONTROL_OPS = ("fail", "hang", "delay", "no_length", "hang_api", "clear_faults", "restart",
               "serverinfo_mode", "https_mode", "add_session", "calls", "lobbies", "sessions",
               "set_health")


def _control_dispatch(w, msg):
    op = msg.get("op")
    a = {k: v for k, v in msg.items() if k != "op"}
    if op not in CONTROL_OPS:
        raise ValueError("unknown op %r" % op)
    if op == "calls":
        with w.lock:
            return [list(x) for x in w.calls]
    if op == "lobbies":
        return w.lobbies
    if op == "sessions":
        return w.sessions
    if op == "set_health":
        w.health_status = a["status"]
        return None
    return getattr(w, op)(**a)


def _control_listen(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(16)
    return s


def _control_serve(w, s, stop_ev):
    def conn(c):
        f = c.makefile("rwb")
        try:
            for line in f:
                try:
                    res = {"ok": True, "result": _control_dispatch(w, json.loads(line))}
                except Exception as e:  # report to the test, keep serving
                    res = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
                f.write(json.dumps(res).encode() + b"\n")
                f.flush()
        except OSError:
            pass
        finally:
            _close(c)

    _accept_loop(s, stop_ev, conn, _Conns())


class FakeWolfControl:
    """Client for a fake_wolf.py process's --control-port; same method names as FakeWolf."""

    def __init__(self, port, timeout=10):
        self.port = port
        self.timeout = timeout

    def _op(self, op, **kw):
        kw["op"] = op
        with socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout) as s:
            s.sendall(json.dumps(kw).encode() + b"\n")
            f = s.makefile("rb")
            res = json.loads(f.readline())
        if not res["ok"]:
            raise RuntimeError(res["error"])
        return res["result"]

    def __getattr__(self, name):
        if name in CONTROL_OPS:
            return lambda **kw: self._op(name, **kw)
        raise AttributeError(name)

    @property
    def calls(self):
        return [tuple(x) for x in self._op("calls")]

    @property
    def lobbies(self):
        return self._op("lobbies")

    @property
    def sessions(self):
        return self._op("sessions")


def main():
    ap = argparse.ArgumentParser(description="fake Wolf (API over a UNIX socket, GameStream HTTP/HTTPS probes)")
    ap.add_argument("--socket", required=True)
    ap.add_argument("--http-port", type=int)
    ap.add_argument("--https-port", type=int)
    ap.add_argument("--cert-dir")
    ap.add_argument("--control-port", type=int)
    ap.add_argument("--helix", action="store_true")
    args = ap.parse_args()
    w = FakeWolf(args.socket, http_port=args.http_port, https_port=args.https_port,
                 cert_dir=args.cert_dir, helix=args.helix).start()
    stop_ev = threading.Event()
    if args.control_port:
        cs = _control_listen(args.control_port)  # bound before "ready" is printed
        threading.Thread(target=_control_serve, args=(w, cs, stop_ev), daemon=True).start()
    print("fake_wolf ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop_ev.set()
        w.stop()


if __name__ == "__main__":
    sys.exit(main())
