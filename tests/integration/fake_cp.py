"""fake_cp.py — a stdlib-only fake wolfpack control plane for agent integration tests.

It speaks just enough of proto/PROTOCOL.md to drive a real wolfpack-agent:
TLS (a CA + leaf generated with the openssl CLI, so the agent can pin the
CA), the WebSocket upgrade on /api/v1/tunnel (checks the Bearer token and the
wolfpack.v1 subprotocol, records every request header), RFC 6455 framing by
hand (client frames must be masked, ours are not), control messages as JSON
text, and the yamux v0 stream frames packed with struct (Data/WindowUpdate/
Ping/GoAway, SYN/ACK/FIN/RST) with per-stream windows in both directions.

One I/O thread per tunnel owns the TLS socket (reads and writes), so the
ssl module is never used from two threads at once; test code talks to a
Tunnel through thread-safe methods that enqueue frames and wait on a
condition variable.
"""
import base64
import collections
import hashlib
import json
import os
import queue
import select
import socket
import ssl
import struct
import subprocess
import threading
import time

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUBPROTOCOL = "wolfpack.v1"
TUNNEL_PATH = "/api/v1/tunnel"

# yamux v0 (PROTOCOL.md §5)
T_DATA, T_WINDOW, T_PING, T_GOAWAY = 0, 1, 2, 3
F_SYN, F_ACK, F_FIN, F_RST = 1, 2, 4, 8
HDR = struct.Struct(">BBHII")
WINDOW = 256 * 1024
MAX_DATA = 16384


def frame(ftype, flags, sid, length, payload=b""):
    return HDR.pack(0, ftype, flags, sid, length) + payload


def gen_pki(d):
    """CA + leaf (SAN 127.0.0.1, localhost) signed by it. Returns (chain, key, ca_cert, pin)."""
    def run(*args):
        subprocess.run(args, check=True, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=fake-cp-ca",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                "extendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", "leaf.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "leaf.crt", "-days", "2", "-extfile", "ext.cnf")
    with open(os.path.join(d, "chain.crt"), "w") as f:
        f.write(open(os.path.join(d, "leaf.crt")).read() + open(os.path.join(d, "ca.crt")).read())
    pub = subprocess.run(["openssl", "x509", "-in", "ca.crt", "-pubkey", "-noout"], cwd=d,
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub, cwd=d,
                         check=True, capture_output=True).stdout
    pin = "sha256:" + hashlib.sha256(der).hexdigest()
    return (os.path.join(d, "chain.crt"), os.path.join(d, "leaf.key"),
            os.path.join(d, "ca.crt"), pin)


class Stream:
    def __init__(self, sid):
        self.sid = sid
        self.send_win = WINDOW
        self.recv = bytearray()
        self.acked = False
        self.rst = False
        self.fin = False
        self.credit_pending = 0
        self.ack_seq = None
        self.rst_seq = None


class Tunnel:
    """One accepted, upgraded agent connection."""

    def __init__(self, sock, headers, path):
        self.sock = sock
        self.headers = headers  # lower-case name -> list of values
        self.path = path
        self.cond = threading.Condition()
        self.out = collections.deque()
        self.texts = []          # (seq, time, obj)
        self.streams = {}
        self.events = []         # (seq, kind, detail) in arrival order: text and frames
        self.seq = 0
        self.closed = False
        self.close_code = None
        self.goaway_frame = None
        self.pings = 0
        self.next_id = 2
        self.inbuf = bytearray()  # WebSocket bytes
        self.fbuf = bytearray()   # yamux byte stream
        self.frag = None
        self.t = threading.Thread(target=self._io, daemon=True)
        self.t.start()

    # ---- WebSocket ----
    def _ws_frame(self, opcode, payload):
        n = len(payload)
        if n < 126:
            h = struct.pack(">BB", 0x80 | opcode, n)
        elif n < 65536:
            h = struct.pack(">BBH", 0x80 | opcode, 126, n)
        else:
            h = struct.pack(">BBQ", 0x80 | opcode, 127, n)
        return h + payload

    def _queue(self, data):
        with self.cond:
            self.out.append(data)

    def send_text(self, obj):
        self._queue(self._ws_frame(1, json.dumps(obj).encode()))

    def send_binary(self, data):
        self._queue(self._ws_frame(2, data))

    def ws_close(self, code=1000):
        self._queue(self._ws_frame(8, struct.pack(">H", code)))

    def drop(self):
        """Closes the TCP connection abruptly (no Close, no close_notify)."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _io(self):
        try:
            while True:
                with self.cond:
                    if self.closed:
                        break
                    pending = list(self.out)
                    self.out.clear()
                for d in pending:
                    self.sock.sendall(d)
                if self.sock.pending() == 0:
                    r, _, _ = select.select([self.sock], [], [], 0.01)
                    if not r:
                        continue
                data = self.sock.recv(262144)
                if not data:
                    break
                self.inbuf += data
                self._parse_ws()
        except (OSError, ssl.SSLError, ValueError):
            pass
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        try:
            self.sock.close()
        except OSError:
            pass

    def _parse_ws(self):
        b = self.inbuf
        while len(b) >= 2:
            fin, op = b[0] & 0x80, b[0] & 0x0F
            masked, n = b[1] & 0x80, b[1] & 0x7F
            if not masked:
                raise ValueError("client frame not masked")
            off = 2
            if n == 126:
                if len(b) < 4:
                    return
                n = struct.unpack(">H", b[2:4])[0]
                off = 4
            elif n == 127:
                if len(b) < 10:
                    return
                n = struct.unpack(">Q", b[2:10])[0]
                off = 10
            if len(b) < off + 4 + n:
                return
            mask = b[off:off + 4]
            p = bytes(b[off + 4:off + 4 + n])
            p = bytes(c ^ mask[i % 4] for i, c in enumerate(p)) if n < 4096 else \
                (int.from_bytes(p, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
            del b[:off + 4 + n]
            if op == 0:
                op, p = self.frag[0], self.frag[1] + p
                self.frag = None if fin else (op, p)
                if not fin:
                    continue
            elif op in (1, 2) and not fin:
                self.frag = (op, p)
                continue
            if op == 1:
                obj = json.loads(p.decode("utf-8"))
                with self.cond:
                    self.seq += 1
                    self.texts.append((self.seq, time.time(), obj))
                    self.events.append((self.seq, "text", obj))
                    self.cond.notify_all()
            elif op == 2:
                self.fbuf += p
                self._parse_frames()
            elif op == 8:
                code = struct.unpack(">H", p[:2])[0] if len(p) >= 2 else 1005
                with self.cond:
                    self.close_code = code
                    self.cond.notify_all()
                self.sock.sendall(self._ws_frame(8, p[:2]))
                raise ValueError("closed")
            elif op == 9:
                self.sock.sendall(self._ws_frame(10, p))

    def _parse_frames(self):
        b = self.fbuf
        while len(b) >= 12:
            ver, ftype, flags, sid, length = HDR.unpack(b[:12])
            plen = length if ftype == T_DATA else 0
            if len(b) < 12 + plen:
                return
            payload = bytes(b[12:12 + plen])
            del b[:12 + plen]
            with self.cond:
                self.seq += 1
                self.events.append((self.seq, "frame", (ftype, flags, sid, length)))
                if ftype == T_PING and flags & F_SYN:
                    self.pings += 1
                    self.out.append(self._ws_frame(2, frame(T_PING, F_ACK, 0, length)))
                elif ftype == T_GOAWAY:
                    self.goaway_frame = length
                elif sid in self.streams:
                    s = self.streams[sid]
                    if ftype == T_WINDOW:
                        s.send_win += length
                        if flags & F_ACK:
                            s.acked, s.ack_seq = True, self.seq
                    if ftype == T_DATA and payload:
                        s.recv += payload
                        s.credit_pending += len(payload)
                        if s.credit_pending >= WINDOW // 2 and not s.fin:
                            self.out.append(self._ws_frame(2, frame(T_WINDOW, 0, sid, s.credit_pending)))
                            s.credit_pending = 0
                    if flags & F_FIN:
                        s.fin = True
                    if flags & F_RST:
                        s.rst, s.rst_seq = True, self.seq
                self.cond.notify_all()

    # ---- test API ----
    def wait(self, pred, timeout=10.0):
        deadline = time.time() + timeout
        with self.cond:
            while not pred():
                left = deadline - time.time()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def next_text(self, type_=None, timeout=10.0, after=0):
        """First text message (of type_) with seq > after; returns (seq, time, obj) or None."""
        found = []

        def pred():
            for m in self.texts:
                if m[0] > after and (type_ is None or m[2].get("type") == type_):
                    found.append(m)
                    return True
            return False
        return found[0] if self.wait(pred, timeout) else None

    def texts_of(self, type_):
        with self.cond:
            return [m for m in self.texts if m[2].get("type") == type_]

    def open_stream(self, preamble, data=b"", fin=False):
        sid = self.next_id
        self.next_id += 2
        pj = json.dumps(preamble).encode() if isinstance(preamble, dict) else preamble
        payload = struct.pack(">H", len(pj)) + pj + data
        with self.cond:
            self.streams[sid] = s = Stream(sid)
            s.send_win -= len(payload) - 0
            self.out.append(self._ws_frame(2, frame(T_DATA, F_SYN | (F_FIN if fin else 0), sid,
                                                    len(payload), payload)))
        return sid

    def write(self, sid, data, timeout=20.0):
        s = self.streams[sid]
        off = 0
        while off < len(data):
            if not self.wait(lambda: s.send_win > 0 or s.rst or self.closed, timeout):
                raise RuntimeError("no window on stream %d" % sid)
            with self.cond:
                if s.rst or self.closed:
                    raise RuntimeError("stream %d reset" % sid)
                n = min(MAX_DATA, s.send_win, len(data) - off)
                s.send_win -= n
                self.out.append(self._ws_frame(2, frame(T_DATA, 0, sid, n, data[off:off + n])))
            off += n

    def close_write(self, sid):
        self._queue(self._ws_frame(2, frame(T_DATA, F_FIN, sid, 0)))

    def stream(self, sid):
        return self.streams[sid]


class FakeCP:
    def __init__(self, workdir, token):
        self.token = token
        self.chain, self.key, self.ca, self.pin = gen_pki(workdir)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(self.chain, self.key)
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.tunnels = queue.Queue()
        self.accepts = []        # times of TCP accepts
        self.tls_failures = []   # (time, error) of failed handshakes
        self.requests = []       # (time, path, headers, status) of every HTTP request
        self.stop_flag = False
        self.t = threading.Thread(target=self._accept_loop, daemon=True)
        self.t.start()

    @property
    def url(self):
        return "wss://127.0.0.1:%d" % self.port

    def close(self):
        self.stop_flag = True
        try:
            self.lsock.close()
        except OSError:
            pass

    def _accept_loop(self):
        while not self.stop_flag:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            self.accepts.append(time.time())
            threading.Thread(target=self._handshake, args=(c,), daemon=True).start()

    def _handshake(self, c):
        c.settimeout(10)
        try:
            s = self.ctx.wrap_socket(c, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.tls_failures.append((time.time(), str(e)))
            c.close()
            return
        try:
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = s.recv(4096)
                if not d:
                    raise EOFError
                buf += d
            head, rest = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for ln in lines[1:]:
                k, v = ln.split(":", 1)
                headers.setdefault(k.strip().lower(), []).append(v.strip())
            status = self._check(method, path, headers)
            self.requests.append((time.time(), path, headers, status))
            if status != 101:
                body = json.dumps({"error": {"code": "unauthorized" if status == 401 else "bad_request",
                                             "message": "refused by the fake control plane"}}).encode()
                extra = 'WWW-Authenticate: Bearer realm="wolfpack"\r\n' if status == 401 else ""
                s.sendall(("HTTP/1.1 %d Refused\r\nContent-Type: application/json\r\n%s"
                           "Content-Length: %d\r\nConnection: close\r\n\r\n" % (status, extra, len(body))).encode() + body)
                s.close()
                return
            key = headers["sec-websocket-key"][0]
            acc = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
            s.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: %s\r\n\r\n" % (acc, SUBPROTOCOL)).encode())
            s.settimeout(10)
            t = Tunnel(s, headers, path)
            if rest:
                with t.cond:
                    t.inbuf += rest
            self.tunnels.put(t)
        except (OSError, EOFError, ValueError, KeyError, ssl.SSLError):
            try:
                s.close()
            except OSError:
                pass

    def _check(self, method, path, headers):
        if method != "GET" or path != TUNNEL_PATH:
            return 400
        auth = headers.get("authorization", [""])
        if len(auth) != 1 or auth[0] != "Bearer " + self.token:
            return 401
        if headers.get("sec-websocket-version") != ["13"]:
            return 426
        protos = [p.strip() for v in headers.get("sec-websocket-protocol", []) for p in v.split(",")]
        if SUBPROTOCOL not in protos or "sec-websocket-extensions" in headers:
            return 400
        return 101

    def next_tunnel(self, timeout=15):
        try:
            return self.tunnels.get(timeout=timeout)
        except queue.Empty:
            return None


def welcome(node_id, interval_ms=1000, replica="fake-cp-1"):
    return {"type": "welcome", "protocol": 1, "replica_id": replica, "replica_count": 1,
            "heartbeat_interval_ms": interval_ms, "server_time": int(time.time() * 1000),
            "node_id": node_id, "version": "0.0.0-fake"}
