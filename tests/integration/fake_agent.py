"""fake_agent.py — a stdlib-only wolfpack agent for integration tests.

Speaks proto/PROTOCOL.md from scratch (no shared code with wolfpackd): TLS
client, hand-written RFC 6455 client framing (every frame masked), the
`hello` / `heartbeat` control messages, and the yamux v0 frames encoded with
struct.pack. It serves the streams wolfpackd opens by dialing a local TCP
address per allow-listed service name, with per-stream flow control (credit
only after bytes were written to the local socket, in batches of half a
window) and half-close both ways.

Everything after the upgrade runs on one thread with select(): the
WebSocket, every local socket and the heartbeat timer. Tests talk to it with
call() (runs a function on that thread) and read the recorded events
(welcome, goaways, mux_goaway, close_code, errors_sent).
"""
import json
import os
import queue
import select
import socket
import ssl
import struct
import threading
import time

HDR = struct.Struct("!BBHII")  # version, type, flags, stream id, length
T_DATA, T_WU, T_PING, T_GOAWAY = 0, 1, 2, 3
F_SYN, F_ACK, F_FIN, F_RST = 1, 2, 4, 8
WINDOW = 256 * 1024
THRESHOLD = WINDOW // 2
MAX_DATA = 16384


def frame(ftype, flags, sid, length, payload=b""):
    return HDR.pack(0, ftype, flags, sid, length) + payload


def mask(data, key):
    n = len(data)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def ws_frame(opcode, payload, fin=True):
    """A client frame: always masked (RFC 6455 §5.3)."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        hdr = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, 0x80 | 127, n)
    key = os.urandom(4)
    return hdr + key + mask(payload, key)


def default_hello(node_id, instance_id, services, extra=None):
    h = {"type": "hello", "protocol": 1, "node_id": node_id, "instance_id": instance_id,
         "version": "0.0.1-fake", "labels": {"zone": "test"}, "max_sessions": 2,
         "services": sorted(services), "gpu": {"vendor": "none", "devices": []},
         "lobbies": [], "sessions": []}
    if extra:
        h.update(extra)
    return h


class Stream:
    def __init__(self, sid, local):
        self.sid = sid
        self.local = local
        self.send_window = WINDOW
        self.consumed = 0
        self.wbuf = bytearray()  # bytes for the local socket
        self.fin_in = False  # server sent FIN
        self.shut_local = False
        self.local_eof = False  # local socket EOF, FIN sent


class FakeAgent:
    def __init__(self, port, ca_file, token, node_id, services=None, instance_id=None,
                 send_hello=True, heartbeat=True, hello_extra=None, hello=None):
        self.port = port
        self.ca_file = ca_file
        self.token = token
        self.node_id = node_id
        self.services = dict(services or {})  # name -> (host, port)
        self.instance_id = instance_id or os.urandom(16).hex()
        self.send_hello = send_hello
        self.heartbeat = heartbeat
        self.hello_extra = hello_extra
        self.hello_override = hello
        self.welcome = None
        self.welcome_evt = threading.Event()
        self.goaways = []
        self.goaway_evt = threading.Event()
        self.mux_goaway = None
        self.close_code = None
        self.closed_evt = threading.Event()
        self.errors_sent = []
        self.streams = {}
        self.wbuf = bytearray()
        self.rbuf = bytearray()
        self.bin = bytearray()  # reassembled frame byte stream
        self.pending_bin = bytearray()
        self.msg_op = None
        self.msg = bytearray()
        self.cmds = queue.Queue()
        self.wake_r, self.wake_w = socket.socketpair()
        self.stop_flag = False
        self.close_sent = False
        self.hb_seq = 0
        self.hb_next = None
        self.thread = None
        self.sock = None

    # ---- connect and upgrade (caller's thread) ----

    def connect(self, path="/api/v1/tunnel", extra_headers=(), subprotocol="wolfpack.v1",
                timeout=10):
        """TLS + upgrade. Returns (status, headers, body); starts the loop on 101."""
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        ctx = ssl.create_default_context(cafile=self.ca_file)
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        key = __import__("base64").b64encode(os.urandom(16)).decode()
        req = ("GET %s HTTP/1.1\r\nHost: localhost:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               % (path, self.port, key))
        if subprotocol:
            req += "Sec-WebSocket-Protocol: %s\r\n" % subprotocol
        if self.token is not None:
            req += "Authorization: Bearer %s\r\n" % self.token
        for h in extra_headers:
            req += h + "\r\n"
        s.sendall((req + "User-Agent: fake-agent/0\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise EOFError("closed before the upgrade answer: %r" % buf[:200])
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        if status != 101:
            n = int(headers.get("content-length", "0"))
            while len(rest) < n:
                chunk = s.recv(65536)
                if not chunk:
                    break
                rest += chunk
            s.close()
            return status, headers, rest[:n]
        self.sock = s
        self.rbuf += rest
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return status, headers, b""

    # ---- API for tests (any thread) ----

    def call(self, fn):
        self.cmds.put(fn)
        try:
            self.wake_w.send(b"x")
        except OSError:
            pass

    def send_json(self, obj):
        self.call(lambda: self._send_text(json.dumps(obj)))

    def send_binary_raw(self, data):
        self.call(lambda: self._queue(ws_frame(2, data)))

    def wait_welcome(self, timeout=10):
        if not self.welcome_evt.wait(timeout):
            raise AssertionError("no welcome within %ss (goaways %r)" % (timeout, self.goaways))
        return self.welcome

    def wait_goaway(self, timeout=10):
        if not self.goaway_evt.wait(timeout):
            raise AssertionError("no goaway within %ss" % timeout)
        return self.goaways[0]

    def wait_closed(self, timeout=10):
        if not self.closed_evt.wait(timeout):
            raise AssertionError("tunnel not closed within %ss" % timeout)

    def stop(self):
        self.stop_flag = True
        self.call(lambda: None)
        if self.thread:
            self.thread.join(10)
        for st in list(self.streams.values()):
            st.local.close()
        if self.sock:
            try:
                self.sock.close()
            except OSError:
                pass
        self.wake_r.close()
        self.wake_w.close()

    # ---- loop thread ----

    def _queue(self, data):
        self.wbuf += data

    def _send_text(self, text):
        self._queue(ws_frame(1, text.encode()))

    def _send_frame(self, ftype, flags, sid, length, payload=b""):
        self.pending_bin += frame(ftype, flags, sid, length, payload)
        if len(self.pending_bin) >= 256 * 1024:
            self._flush_bin()

    def _flush_bin(self):
        if self.pending_bin:
            self._queue(ws_frame(2, bytes(self.pending_bin)))
            self.pending_bin = bytearray()

    def _close_ws(self, code):
        if not self.close_sent:
            self.close_sent = True
            self._flush_bin()
            self._queue(ws_frame(8, struct.pack("!H", code)))

    def _run(self):
        self.sock.setblocking(False)
        if self.send_hello:
            h = self.hello_override or default_hello(self.node_id, self.instance_id,
                                                     self.services, self.hello_extra)
            self._send_text(json.dumps(h))
        try:
            while not self.stop_flag and not self.closed_evt.is_set():
                self._iterate()
        except (OSError, ssl.SSLError) as e:
            self.last_error = e
        # the closing handshake is done (or we stop): flush what is queued, then close TCP
        try:
            self.sock.settimeout(2)
            if self.wbuf:
                self.sock.sendall(bytes(self.wbuf))
        except (OSError, ssl.SSLError):
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed_evt.set()

    def _iterate(self):
        timeout = 0.5
        now = time.monotonic()
        if self.hb_next is not None:
            timeout = max(0.0, min(timeout, self.hb_next - now))
        if self.rbuf and not self._parse_ws():
            return
        rl = [self.sock, self.wake_r]
        wl = [self.sock] if self.wbuf else []
        ws_room = len(self.wbuf) < 2 * 1024 * 1024
        for st in self.streams.values():
            if ws_room and st.send_window > 0 and not st.local_eof:
                rl.append(st.local)
            if st.wbuf:
                wl.append(st.local)
        if self.sock.pending():
            timeout = 0
        r, w, _ = select.select(rl, wl, [], timeout)
        if self.wake_r in r:
            try:
                self.wake_r.recv(4096)
            except OSError:
                pass
            while True:
                try:
                    fn = self.cmds.get_nowait()
                except queue.Empty:
                    break
                fn()
        if self.sock in r or self.sock.pending():
            self._read_ws()
        for st in list(self.streams.values()):
            if st.local in r and st.sid in self.streams:
                self._read_local(st)
            if st.local in w and st.sid in self.streams:
                self._write_local(st)
        if self.hb_next is not None and time.monotonic() >= self.hb_next:
            self._send_heartbeat()
        self._flush_bin()
        if self.wbuf:
            self._write_ws()

    def _read_ws(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return
            if not data:
                self.closed_evt.set()
                return
            self.rbuf += data
            if not self._parse_ws():
                return

    def _write_ws(self):
        while self.wbuf:
            try:
                n = self.sock.send(self.wbuf[:65536])
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return
            del self.wbuf[:n]

    def _parse_ws(self):
        """Parses whole server frames from rbuf. Returns False once the connection ended."""
        while len(self.rbuf) >= 2:
            b0, b1 = self.rbuf[0], self.rbuf[1]
            if b1 & 0x80:
                raise AssertionError("server sent a masked frame")
            n, off = b1 & 0x7F, 2
            if n == 126:
                if len(self.rbuf) < 4:
                    return True
                n, off = struct.unpack("!H", self.rbuf[2:4])[0], 4
            elif n == 127:
                if len(self.rbuf) < 10:
                    return True
                n, off = struct.unpack("!Q", self.rbuf[2:10])[0], 10
            if len(self.rbuf) < off + n:
                return True
            payload = bytes(self.rbuf[off:off + n])
            del self.rbuf[:off + n]
            op, fin = b0 & 0x0F, b0 & 0x80
            if op == 8:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self._close_ws(self.close_code)
                self._write_ws()
                self.closed_evt.set()
                return False
            if op == 9:
                self._queue(ws_frame(10, payload))
                continue
            if op == 10:
                continue
            if op in (1, 2):
                self.msg_op, self.msg = op, bytearray(payload)
            elif op == 0:
                self.msg += payload
            if fin:
                self._on_message(self.msg_op, bytes(self.msg))
        return True

    def _on_message(self, op, data):
        if op == 1:
            m = json.loads(data.decode())
            if m.get("type") == "welcome":
                self.welcome = m
                self.welcome_evt.set()
                if self.heartbeat:
                    self.hb_interval = max(1.0, m["heartbeat_interval_ms"] / 1000.0)
                    self.hb_next = time.monotonic() + self.hb_interval / 2
            elif m.get("type") == "goaway":
                self.goaways.append(m)
                self.goaway_evt.set()
            return
        self.bin += data
        while len(self.bin) >= 12:
            ver, ftype, flags, sid, length = HDR.unpack(self.bin[:12])
            plen = length if ftype == T_DATA else 0
            if len(self.bin) < 12 + plen:
                return
            payload = bytes(self.bin[12:12 + plen])
            del self.bin[:12 + plen]
            self._on_frame(ftype, flags, sid, length, payload)

    def _send_heartbeat(self):
        self.hb_seq += 1
        self.hb_next = time.monotonic() + self.hb_interval
        hb = {"type": "heartbeat", "seq": self.hb_seq, "time": int(time.time() * 1000),
              "load": {"active_sessions": 0, "max_sessions": 2, "open_streams": len(self.streams),
                       "draining": False},
              "gpus": [], "wolf": {"api": {"ok": True, "latency_ms": 1},
                                   "http": {"ok": True, "latency_ms": 1},
                                   "https": {"ok": True, "latency_ms": 1}}}
        self._send_text(json.dumps(hb))

    def _refuse(self, sid, code, msg):
        self.errors_sent.append((sid, code))
        self._flush_bin()
        self._send_text(json.dumps({"type": "error", "stream": sid, "code": code, "message": msg}))
        self._send_frame(T_WU, F_RST, sid, 0)

    def _on_frame(self, ftype, flags, sid, length, payload):
        if ftype == T_PING:
            if flags & F_SYN:
                self._send_frame(T_PING, F_ACK, 0, length)
            return
        if ftype == T_GOAWAY:
            self.mux_goaway = length
            return
        st = self.streams.get(sid)
        if ftype == T_WU:
            if st is None:
                return
            if flags & F_RST:
                self._drop(st)
                return
            st.send_window += length
            return
        # Data
        if flags & F_SYN:
            plen = struct.unpack("!H", payload[:2])[0]
            pre = json.loads(payload[2:2 + plen].decode())
            rest = payload[2 + plen:]
            svc = pre.get("service")
            if svc not in self.services:
                self._refuse(sid, "not_allowed", "service %r is not allow-listed" % svc)
                return
            try:
                local = socket.create_connection(self.services[svc], timeout=2)
            except ConnectionRefusedError:
                self._refuse(sid, "refused", "connection refused")
                return
            except OSError:
                self._refuse(sid, "unreachable", "cannot reach the service")
                return
            local.setblocking(False)
            st = Stream(sid, local)
            self.streams[sid] = st
            # the preamble counts as consumed at once (PROTOCOL.md §6.2)
            st.consumed += 2 + plen
            self._send_frame(T_WU, F_ACK, sid, 0)
            payload = rest
        if st is None:
            return
        if payload:
            st.wbuf += payload
            self._write_local(st)
        if flags & F_FIN:
            st.fin_in = True
            self._maybe_shut(st)

    def _maybe_shut(self, st):
        if st.fin_in and not st.wbuf and not st.shut_local:
            st.shut_local = True
            try:
                st.local.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if st.shut_local and st.local_eof:
            self._drop(st)

    def _drop(self, st):
        self.streams.pop(st.sid, None)
        try:
            st.local.close()
        except OSError:
            pass

    def _write_local(self, st):
        while st.wbuf:
            try:
                n = st.local.send(st.wbuf[:65536])
            except BlockingIOError:
                break
            except OSError:
                self._refuse(st.sid, "reset", "local write failed")
                self._drop(st)
                return
            del st.wbuf[:n]
            st.consumed += n
        if st.consumed >= THRESHOLD and not st.fin_in:
            self._send_frame(T_WU, 0, st.sid, st.consumed)
            st.consumed = 0
        self._maybe_shut(st)

    def _read_local(self, st):
        want = min(MAX_DATA, st.send_window)
        try:
            data = st.local.recv(want)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            st.local_eof = True
            self._send_frame(T_DATA, F_FIN, st.sid, 0)
            self._maybe_shut(st)
            return
        st.send_window -= len(data)
        self._send_frame(T_DATA, 0, st.sid, len(data), data)
