#!/usr/bin/env python3
"""gen_corpus.py — regenerates the seed corpora under tests/fuzz/corpus/<target>/.

Seeds are small, realistic inputs for each fuzz target: frames built the way
common/frame.c builds them (yamux v0 headers, open preambles), mux sessions
(fuzz_mux.c's input layout: setup byte, policy byte, ops with raw peer frames
or peer-mux actions), valid and
invalid JSON, HTTP requests (chunked, pipelined, upgrade, hostile headers),
router paths, addresses, pins and option lines. The TLS seeds are real
ClientHellos captured from `openssl s_client` by a one-shot local socket
server (skipped, keeping the existing files, if openssl is missing).

Usage: python3 tests/fuzz/gen_corpus.py   (rewrites the corpus directories)
"""
import json
import os
import shutil
import socket
import struct
import subprocess
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def reset(target):
    """Removes the generated seeds of target, keeping saved crash-* inputs."""
    d = os.path.join(CORPUS, target)
    if not os.path.isdir(d):
        return
    for name in os.listdir(d):
        if not name.startswith("crash-"):
            os.remove(os.path.join(d, name))


# ---- frames (PROTOCOL.md §5-§6) ----

DATA, WINDOW_UPDATE, PING, GOAWAY = 0, 1, 2, 3
SYN, ACK, FIN, RST = 1, 2, 4, 8


def hdr(typ, flags, sid, length, version=0):
    return struct.pack(">BBHII", version, typ, flags, sid, length)


def data_frame(sid, flags, payload):
    return hdr(DATA, flags, sid, len(payload)) + payload


def preamble(obj):
    j = json.dumps(obj, separators=(",", ":")).encode()
    return struct.pack(">H", len(j)) + j


def gen_frame():
    reset("frame")
    write("frame", "ping_syn", hdr(PING, SYN, 0, 0x01020304))
    write("frame", "ping_ack", hdr(PING, ACK, 0, 0x01020304))
    write("frame", "goaway_proto", hdr(GOAWAY, 0, 0, 1))
    write("frame", "open_wolf", data_frame(2, SYN, preamble({"service": "wolf"})))
    write("frame", "open_sandbox_with_data",
          data_frame(4, SYN, preamble({"service": "sandbox", "host": "lobby-1", "port": 9876})
                     + b"GET / HTTP/1.1\r\n\r\n"))
    write("frame", "open_fin", data_frame(6, SYN | FIN, preamble({"service": "probe"})))
    write("frame", "window_ack", hdr(WINDOW_UPDATE, ACK, 2, 0))
    write("frame", "window_rst", hdr(WINDOW_UPDATE, RST, 2, 0))
    write("frame", "session",
          data_frame(2, SYN, preamble({"service": "wolf"}))
          + hdr(WINDOW_UPDATE, ACK, 2, 0)
          + data_frame(2, 0, b"hello" * 20)
          + hdr(WINDOW_UPDATE, 0, 2, 131072)
          + data_frame(2, FIN, b"")
          + hdr(WINDOW_UPDATE, FIN, 2, 0)
          + hdr(PING, SYN, 0, 7)
          + hdr(GOAWAY, 0, 0, 0))
    write("frame", "max_data", data_frame(8, 0, bytes(range(256)) * 64))
    write("frame", "partial_tail", data_frame(2, 0, b"abc") + hdr(DATA, 0, 2, 100) + b"xy")
    write("frame", "bad_version", hdr(PING, SYN, 0, 1, version=1))
    write("frame", "odd_stream", data_frame(3, 0, b"x"))
    write("frame", "oversized_data", hdr(DATA, 0, 2, 16385))
    write("frame", "syn_too_short", hdr(DATA, SYN, 2, 2) + b"\x00\x01")
    write("frame", "preamble_bad_len", data_frame(2, SYN, b"\x04\x01{}"))


# ---- mux sessions (fuzz_mux.c: setup byte, policy byte, then ops) ----

WU = WINDOW_UPDATE
POL_ACCEPT, POL_RESET, POL_ECHO, POL_CONSUME = 0x01, 0x02, 0x04, 0x08
POL_CLOSE_FIN, POL_RESET_DATA, POL_REENTER, POL_SESSION = 0x10, 0x20, 0x40, 0x80


def mux_setup(client=False, cfg=0, pull=3, chunking=0):
    return bytes([(1 if client else 0) | (cfg << 1) | (pull << 3) | (chunking << 6)])


def mux_raw(data):
    """Op 0x0: raw peer bytes fed to the mux under test (at most 4095)."""
    assert len(data) < 4096
    return bytes([len(data) >> 8, len(data) & 0xFF]) + data


def mux_rest(data):
    """Op 0x0F: the rest of the input is raw peer bytes."""
    return b"\x0f" + data


def mux_clock(a):
    return bytes([0x10 | a])


def wolf_open(sid, data=b"", flags=SYN):
    return data_frame(sid, flags, preamble({"service": "wolf"}) + data)


def gen_mux():
    reset("mux")
    pol = POL_ACCEPT | POL_CONSUME | POL_CLOSE_FIN
    # --- agent side (M is the server): raw frames from wolfpackd ---
    session = (wolf_open(2, b"GET / HTTP/1.1\r\n\r\n")
               + data_frame(2, 0, b"hello" * 20)
               + data_frame(2, FIN, b""))
    write("mux", "srv_open_data_fin", mux_setup() + bytes([pol]) + mux_rest(session))
    write("mux", "srv_open_data_fin_bytewise",
          mux_setup(chunking=3, pull=0) + bytes([pol | POL_ECHO]) + mux_rest(session))
    write("mux", "srv_open_fin_in_syn",
          mux_setup(cfg=2) + bytes([pol | POL_ECHO]) + mux_rest(
              data_frame(2, SYN | FIN, preamble({"service": "probe"}) + b"ping")))
    multi = (wolf_open(2) + wolf_open(4, b"abc") + wolf_open(6)
             + data_frame(4, 0, b"x" * 300) + hdr(WU, RST, 6, 0)
             + data_frame(2, FIN, b"bye") + data_frame(4, FIN, b""))
    write("mux", "srv_multi_streams", mux_setup(cfg=0) + bytes([0x5F]) + mux_rest(multi))
    write("mux", "srv_multi_streams_deferred", mux_setup(cfg=3, chunking=1) + bytes([0x00])
          + mux_rest(multi))
    # credit: the agent echoes, the peer grants the window back in pieces
    credit = (mux_raw(wolf_open(2, b"q" * 1000)) + mux_clock(2)
              + mux_raw(data_frame(2, 0, b"r" * 2000)) + mux_raw(hdr(WU, 0, 2, 1500))
              + mux_clock(3) + mux_raw(hdr(WU, 0, 2, 1500) + data_frame(2, FIN, b"")))
    write("mux", "srv_window_updates", mux_setup() + bytes([pol | POL_ECHO]) + credit)
    write("mux", "srv_window_overrun",
          mux_setup() + bytes([pol]) + mux_rest(wolf_open(2) + hdr(WU, 0, 2, 5000)))
    write("mux", "srv_data_overrun",
          mux_setup(cfg=2) + bytes([0x00]) + mux_rest(
              wolf_open(2) + data_frame(2, 0, b"d" * 64) * 4 + data_frame(2, 0, b"e" * 64)))
    pings = hdr(PING, SYN, 0, 1) + hdr(PING, SYN, 0, 2) + hdr(PING, ACK, 0, 99)
    write("mux", "srv_pings", mux_setup() + bytes([pol]) + mux_rest(pings))
    write("mux", "srv_ping_flood",
          mux_setup(cfg=2) + bytes([pol]) + mux_rest(hdr(PING, SYN, 0, 7) * 40))
    write("mux", "srv_ping_timeout", mux_setup() + bytes([pol]) + mux_raw(wolf_open(2))
          + mux_clock(10) + mux_clock(10) + mux_clock(15))
    write("mux", "srv_goaway",
          mux_setup() + bytes([pol]) + mux_rest(wolf_open(2, b"x") + hdr(GOAWAY, 0, 0, 0)
                                                + wolf_open(4)))
    write("mux", "srv_goaway_unknown_code",
          mux_setup() + bytes([pol]) + mux_rest(hdr(GOAWAY, 0, 0, 77)))
    write("mux", "srv_busy", mux_setup(cfg=2) + bytes([0x00]) + mux_rest(
        b"".join(wolf_open(2 * i) for i in range(1, 9))))
    # echoes queue up to the tunnel budget (512) before anything is pulled
    write("mux", "srv_budget", mux_setup(cfg=2) + bytes([POL_ACCEPT | POL_ECHO | POL_CONSUME])
          + mux_rest(b"".join(wolf_open(2 * i, b"\x01" * 180) for i in range(1, 5))))
    write("mux", "gen_srv_hoard", mux_setup(cfg=0) + bytes([pol | POL_ECHO])
          + b"\x21\x22\x23\x24\x25" + b"\x34\xff\x30\xff" * 3 + b"\x10\x11\x12\x13"
          + b"\x91\xff\x91\x40\x13")
    write("mux", "srv_syn_overrun", mux_setup(cfg=2) + bytes([pol]) + mux_rest(
        wolf_open(2, b"o" * 300)))
    write("mux", "srv_second_fin", mux_setup() + bytes([pol]) + mux_rest(
        wolf_open(2, b"", SYN | FIN) + hdr(WU, FIN, 2, 0)))
    write("mux", "srv_bad_preamble", mux_setup() + bytes([pol]) + mux_rest(
        data_frame(2, SYN, b"\x00\x09{}") + data_frame(4, SYN, b"\x00\x00x")
        + wolf_open(6)))
    write("mux", "srv_syn_reuse", mux_setup() + bytes([pol]) + mux_rest(
        wolf_open(4) + wolf_open(2)))
    write("mux", "srv_unknown_stream", mux_setup() + bytes([pol]) + mux_rest(
        wolf_open(2) + data_frame(8, 0, b"zz")))
    write("mux", "srv_ack_to_server", mux_setup() + bytes([pol]) + mux_rest(
        wolf_open(2) + hdr(WU, ACK, 2, 0)))
    write("mux", "srv_data_after_fin", mux_setup() + bytes([pol]) + mux_rest(
        wolf_open(2, b"", SYN | FIN) + data_frame(2, 0, b"late")))
    write("mux", "srv_reap", mux_setup() + bytes([POL_ACCEPT]) + mux_raw(
        wolf_open(2, b"half", SYN | FIN)) + mux_clock(12) + mux_clock(12) + mux_clock(10)
        + mux_raw(hdr(PING, ACK, 0, 1)))
    write("mux", "srv_session_callbacks", mux_setup() + bytes([0xFF]) + mux_rest(
        b"".join(wolf_open(2 * i, b"v" * 40, SYN | FIN) for i in (7, 13, 14))))
    write("mux", "srv_drain", mux_setup() + bytes([pol]) + b"\x97\x00"
          + mux_rest(wolf_open(2)))
    write("mux", "srv_garbage", mux_setup() + bytes([pol]) + mux_rest(
        bytes(range(7, 200, 3))))
    write("mux", "srv_bad_version", mux_setup() + bytes([pol]) + mux_rest(
        wolf_open(2) + hdr(PING, SYN, 0, 1, version=1)))
    write("mux", "srv_max_data", mux_setup(cfg=1, pull=5) + bytes([pol | POL_ECHO]) + mux_rest(
        wolf_open(2) + data_frame(2, 0, bytes(range(256)) * 64)))
    write("mux", "srv_partial_tail", mux_setup(chunking=2) + bytes([pol]) + mux_rest(
        wolf_open(2) + hdr(DATA, 0, 2, 100) + b"xy"))
    # --- wolfpackd side (M is the client, streams 2, 4, 6 opened): raw frames from the agent
    agent = (hdr(WU, ACK, 2, 0) + hdr(WU, ACK, 4, 0) + hdr(WU, RST, 6, 0)
             + data_frame(2, 0, b"HTTP/1.1 200 OK\r\n\r\n") + data_frame(4, FIN, b"done")
             + data_frame(2, FIN, b""))
    write("mux", "cli_ack_data_fin", mux_setup(client=True) + bytes([pol]) + mux_rest(agent))
    write("mux", "cli_ack_data_fin_chunked",
          mux_setup(client=True, chunking=1, pull=0) + bytes([pol | POL_REENTER])
          + mux_rest(agent))
    write("mux", "cli_refused", mux_setup(client=True) + bytes([pol]) + mux_rest(
        hdr(WU, RST, 2, 0) + hdr(WU, RST, 4, 0)))
    write("mux", "cli_open_timeout", mux_setup(client=True) + bytes([pol]) + mux_raw(b"")
          + mux_clock(10) + mux_clock(10) + mux_clock(8))
    write("mux", "cli_credit", mux_setup(client=True, cfg=2) + bytes([pol | POL_ECHO]) + mux_raw(
        hdr(WU, ACK, 2, 0) + data_frame(2, 0, b"s" * 64)) + mux_raw(hdr(WU, 0, 2, 128)))
    write("mux", "cli_double_ack", mux_setup(client=True) + bytes([pol]) + mux_rest(
        hdr(WU, ACK, 2, 0) + hdr(WU, ACK, 2, 0)))
    write("mux", "cli_syn_to_client", mux_setup(client=True) + bytes([pol]) + mux_rest(
        wolf_open(2)))
    write("mux", "cli_data_before_ack", mux_setup(client=True) + bytes([pol]) + mux_rest(
        data_frame(2, 0, b"early")))
    write("mux", "cli_never_opened", mux_setup(client=True) + bytes([pol]) + mux_rest(
        hdr(WU, ACK, 10, 0)))
    write("mux", "cli_reenter", mux_setup(client=True, cfg=3) + bytes([0xFF]) + mux_rest(
        agent + hdr(PING, SYN, 0, 5) + hdr(GOAWAY, 0, 0, 1)))
    # --- genuine sessions: the peer mux drives M (op nibbles documented in fuzz_mux.c)
    write("mux", "gen_srv_streams", mux_setup() + bytes([pol | POL_ECHO])
          + b"\x21\x22\x30\x10\x31\x40\x11\x40\x13\x41\x60\x13\x23\x50\xc0")
    write("mux", "gen_srv_deferred", mux_setup(cfg=2, chunking=1) + bytes([0x00])
          + b"\x20\x21\x22\x23\x30\x20\x12\x90\x00\x94\x00\x40\x41\x1a\x1a\x1a\x1f")
    write("mux", "gen_srv_session", mux_setup(cfg=3, pull=1) + bytes([0xFF])
          + b"\x21" * 14 + b"\x30\x80\x31\x80\x40\x41\x42\x43\x44\x45\x46\x47\x71")
    write("mux", "gen_cli_streams", mux_setup(client=True) + bytes([pol | POL_ECHO])
          + b"\x30\x10\x31\x20\x40\x41\x91\x02\x92\x00\x95\x00\x60\x13\x96\x00")
    write("mux", "gen_cli_reenter", mux_setup(client=True, cfg=1, chunking=3)
          + bytes([POL_REENTER | POL_CONSUME | POL_CLOSE_FIN])
          + b"\x90\x01\x90\x02\x30\xff\x31\xff\x40\x41\x42\x1c\x1c\x88\x90\x03\x70")
    write("mux", "gen_timeouts", mux_setup(cfg=2) + bytes([POL_ACCEPT | POL_ECHO])
          + b"\x21\x30\x04\x40\x1c\x1c\x1c\x1f")


# ---- JSON ----

def gen_json():
    reset("json")
    seeds = {
        "valid_spec": '{"name":"gpu-1","count":3,"ratio":0.5,"enabled":true,'
                      '"labels":{"zone":"a"},"items":[1,2,3],"big":9007199254740992}',
        "small": '{"name":"x"}',
        "hello": '{"type":"hello","node_id":"node-1","version":"0.1.0","labels":{"gpu":"nvidia"},'
                 '"max_sessions":4,"services":["wolf","moonlight"],"gpus":[{"vendor":"nvidia",'
                 '"vram_mb":24576}],"protocol":1}',
        "array": '[1,-2.5e10,"\\u00e9\\n",null,true,false,{},[]]',
        "unicode": '{"name":"caf\u00e9 \u2603 \U0001f600","any":"\\ud83d\\ude00"}',
        "deep": "[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]",
        "dup_keys": '{"name":"a","name":"b"}',
        "unknown_field": '{"name":"a","extra":1}',
        "bad_types": '{"name":5,"count":"3","enabled":"yes","count":1.5}',
        "range": '{"name":"a","count":1001}',
        "numbers": '[0,-0,1e308,1e999,-1e-320,123456789012345678901234567890,0.1]',
        "trailing_garbage": '{"name":"a"} x',
        "trailing_ws": '{"name":"a"} \t\r\n',
        "unterminated": '{"name":"a',
        "nul_escape": '{"name":"a\\u0000b"}',
        "control_char": '{"name":"a\x01b"}',
        "invalid_utf8": b'{"name":"\xc0\x80\xed\xa0\x80\xff"}',
        "lone_surrogate": '{"name":"\\ud800"}',
        "empty": "",
        "scalar": '"just a string"',
    }
    for k, v in seeds.items():
        write("json", k, v)


# ---- HTTP requests ----

def gen_http():
    reset("http")
    seeds = {
        "get_item": "GET /items/abc?q=x%20y&z=1 HTTP/1.1\r\nHost: a\r\n\r\n",
        "get_files": "GET /files/a/b/c.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "head_item": "HEAD /items/1 HTTP/1.1\r\nHost: a\r\n\r\n",
        "post_echo": "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world",
        "post_chunked": "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        "upload_chunked": "PUT /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "3\r\nabc\r\n4\r\ndefg\r\n1\r\nh\r\n0\r\n\r\n",
        "upload_cl": "PUT /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n"
                     "Expect: 100-continue\r\n\r\n0123456789",
        "pipelined": "GET /items/1 HTTP/1.1\r\nHost: a\r\n\r\n"
                     "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                     "HEAD /nothing HTTP/1.1\r\nHost: a\r\n\r\n"
                     "GET /async HTTP/1.1\r\nHost: a\r\n\r\n"
                     "DELETE /echo HTTP/1.1\r\nHost: a\r\n\r\n",
        "http10": "GET /items/x HTTP/1.0\r\n\r\nPUT /upload HTTP/1.0\r\nContent-Length: 2\r\n\r\nok",
        "http10_keepalive": "GET /async HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                            "GET /items/y HTTP/1.0\r\n\r\n",
        "upgrade": "GET /items/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
                   "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n\x81\x85abcd",
        "connect": "CONNECT node:wolf HTTP/1.1\r\nHost: node:wolf\r\n\r\n",
        "smuggle_cl_te": "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /items/x HTTP/1.1\r\n\r\n",
        "double_cl": "POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "te_gzip": "POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "bad_chunk": "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5\r\nhelloXX0\r\n\r\n",
        "obs_fold": "GET /items/1 HTTP/1.1\r\nHost: a\r\nX-Long: a\r\n b\r\n\r\n",
        "dot_param": "GET /items/%2e%2e HTTP/1.1\r\n\r\nGET /files/a/%2e%2e/b HTTP/1.1\r\n\r\n",
        "slash_param": "GET /items/a%2fb HTTP/1.1\r\n\r\nGET /items/a%00 HTTP/1.1\r\n\r\n",
        "absolute_target": "GET http://evil/items/1 HTTP/1.1\r\n\r\n",
        "fragment": "GET /items/1#frag HTTP/1.1\r\n\r\n",
        "big_body": "POST /echo HTTP/1.1\r\nContent-Length: 5000\r\n\r\n" + "x" * 5000,
        "many_headers": "GET /items/1 HTTP/1.1\r\n" + "".join(
            "X-H%d: v\r\n" % i for i in range(20)) + "\r\n",
        "long_url": "GET /items/" + "a" * 300 + " HTTP/1.1\r\n\r\n",
        "expect_bad": "POST /echo HTTP/1.1\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx",
        "http2_preface": "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "bare_lf": "GET /items/1 HTTP/1.1\nHost: a\n\n",
        "not_found_405": "GET /nope HTTP/1.1\r\n\r\nPOST /items/1 HTTP/1.1\r\n"
                         "Content-Length: 0\r\n\r\nHEAD /echo HTTP/1.1\r\n\r\n",
        "partial": "GET /items/1 HTTP/1.1\r\nHost:",
    }
    for k, v in seeds.items():
        write("http", k, v)


# ---- router: "METHOD\nPATH" ----

def gen_router():
    reset("router")
    seeds = {
        "root": "GET\n/",
        "node": "GET\n/api/v1/nodes/node-1",
        "node_gpu": "GET\n/api/v1/nodes/n%20x/gpu",
        "delete": "DELETE\n/api/v1/nodes/abc",
        "head": "HEAD\n/api/v1/nodes/abc",
        "method_405": "PATCH\n/api/v1/nodes",
        "proxy": "POST\n/api/v1/proxy/node-1/moonlight/api/x%2Fy/z",
        "proxy_empty_rest": "GET\n/api/v1/proxy/n/s/",
        "static": "GET\n/static/css/app.css",
        "static_dot": "GET\n/static/a/%2E%2E/etc/passwd",
        "lobby": "PUT\n/api/v1/sessions/s1/lobby/l2",
        "specificity": "GET\n/a/b/c",
        "specificity2": "POST\n/a/b/c",
        "param_slash": "GET\n/api/v1/nodes/a%2fb",
        "param_nul": "GET\n/api/v1/nodes/a%00b",
        "param_dot": "GET\n/api/v1/nodes/.",
        "bad_escape": "GET\n/api/v1/nodes/%zz",
        "trailing_slash": "GET\n/api/v1/nodes/",
        "empty_segs": "GET\n//api//v1",
        "star": "OPTIONS\n/any/thing",
        "deep": "GET\n/deep/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16",
        "too_deep": "GET\n/static" + "/x" * 40,
        "relative": "GET\napi/v1/nodes",
        "plus": "GET\n/api/v1/nodes/a+b%2B",
    }
    for k, v in seeds.items():
        write("router", k, v)


# ---- addresses, pins and option lines ----

def gen_opts_addr():
    reset("opts_addr")
    pin = "sha256:" + "0123456789abcdef" * 4
    seeds = {
        "v4": "127.0.0.1:8443",
        "v4_any": "0.0.0.0:0",
        "v6": "[::1]:8443",
        "v6_any": "[::]:443",
        "v6_bare": "fe80::1",
        "port_only": ":8443",
        "localhost": "localhost:8080",
        "hostname": "cp.example.com:443",
        "bad_port": "10.0.0.1:65536",
        "sign_port": "10.0.0.1:+80",
        "v6_unbracketed_port": "::1:80",
        "v6_scope": "[fe80::1%eth0]:80",
        "empty_brackets": "[]:80",
        "long_host": "a" * 260 + ":1",
        "pin": pin,
        "pin_upper": pin.upper(),
        "pin_short": pin[:-1],
        "pin_bad_hex": pin[:-1] + "g",
        "argv": "--listen\n0.0.0.0:8443\n-v\n--port=443\n--label\nzone=a\npositional",
        "argv_env": "-p\n80\x00WOLFPACK_LABELS=a=1, b=2,,c\nWOLFPACK_TOKEN=secret\n"
                    "WOLFPACK_VERBOSE=off",
        "argv_bad": "--port\n99999\n--verbose=maybe\n--",
        "argv_unknown": "--lisen=x",
        "argv_dashdash": "--\n-v\n--x\na\nb\nc\nd",
        "env_bad_int": "\x00WOLFPACK_MAX_SESSIONS=12abc",
    }
    for k, v in seeds.items():
        write("opts_addr", k, v)


# ---- TLS ClientHellos captured from openssl s_client ----

def capture_client_hello(extra_args):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(10)
    port = srv.getsockname()[1]
    got = {}

    def serve():
        try:
            conn, _ = srv.accept()
            conn.settimeout(5)
            buf = b""
            # one TLS record: 5-byte header + length
            while len(buf) < 5 or len(buf) < 5 + struct.unpack(">H", buf[3:5])[0]:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                buf += chunk
            got["hello"] = buf
            conn.close()
        except OSError:
            pass

    t = threading.Thread(target=serve)
    t.start()
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port] + extra_args
    try:
        subprocess.run(cmd, input=b"", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        pass
    t.join()
    srv.close()
    return got.get("hello")


def gen_tls():
    if shutil.which("openssl") is None:
        print("openssl not found: keeping corpus/tls_server as it is")
        return
    captures = {
        "openssl_tls12": ["-tls1_2", "-servername", "localhost"],
        "openssl_default": ["-servername", "localhost"],
        "openssl_ecdsa_gcm": ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256",
                              "-noservername"],
        "openssl_chacha": ["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305",
                           "-servername", "node-1.example"],
    }
    hellos = {}
    for name, args in captures.items():
        h = capture_client_hello(args)
        if h:
            hellos[name] = h
    if not hellos:
        print("no ClientHello captured: keeping corpus/tls_server as it is")
        return
    reset("tls_server")
    for name, h in hellos.items():
        write("tls_server", name, h)
    h = hellos.get("openssl_tls12") or next(iter(hellos.values()))
    # the same hello split over two records, and followed by junk records
    body = h[5:]
    half = len(body) // 2
    split = (h[:3] + struct.pack(">H", half) + body[:half]
             + h[:3] + struct.pack(">H", len(body) - half) + body[half:])
    write("tls_server", "split_records", split)
    write("tls_server", "hello_then_alert", h + b"\x15\x03\x03\x00\x02\x02\x28")
    write("tls_server", "sslv2_hello", bytes.fromhex("802b0103010012000000100000") + b"\x00" * 32)
    write("tls_server", "http_on_tls_port", "GET / HTTP/1.1\r\nHost: a\r\n\r\n")


def gen_wolf_reply():
    """fuzz_wolf_reply.c's layout: piece-size seed byte, bound/capacity byte, the stream."""
    reset("wolf_reply")

    def w(name, data, seed=0, sel=0x7f):
        if isinstance(data, str):
            data = data.encode()
        write("wolf_reply", name, bytes([seed, sel]) + data)

    def reply(code, body, cl=True, version="1.0"):
        head = "HTTP/%s %d OK\r\n" % (version, code)
        if cl:
            head += "Content-Length: %d\r\n" % len(body.encode())
        return head + "\r\n" + body

    w("ok_lobbies", reply(200, json.dumps({"success": True, "lobbies": [
        {"id": "3f1c2a9e-7a1b-4c55-9d2e-0b6c1a2f3e4d", "name": "s1", "multi_user": True,
         "pin_required": True, "connected_sessions": ["1234567890123456789"]}]})))
    w("ok_create", reply(200, '{"success":true,"lobby_id":"3f1c2a9e-7a1b-4c55-9d2e-0b6c1a2f3e4d"}'), 3)
    w("ok_sessions", reply(200, '{"success":true,"sessions":[{"client_id":"18446744073709551615"}]}'), 7)
    w("ok_no_content_length", reply(200, '{"success":true}', cl=False), 5)
    w("http11_reason_none", "HTTP/1.1 200\r\nContent-Length: 16\r\n\r\n{\"success\":true}", 9)
    w("not_found_empty", reply(404, ""))
    w("error_500", reply(500, '{"success":false,"error":"Invalid session_id"}'), 1)
    w("error_500_timeout", reply(500, '{"success":false,"error":"Lobby setup timed out"}'), 2, 0x05)
    w("error_400_ctl", reply(400, '{"success":false,"error":"bad\\u0001\\n\\u00e9t\\u00e9 \\ud83d\\ude00"}'), 4, 0x0a)
    w("ok_success_false", reply(200, '{"success":false,"error":"nope"}'))
    w("ok_success_string", reply(200, '{"success":"yes"}'))
    w("ok_not_json", reply(200, "<html>hi</html>"))
    w("ok_empty", reply(200, ""))
    w("truncated_body", "HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\n{\"success\":tr", 6)
    w("truncated_head", "HTTP/1.0 200 OK\r\nContent-Len", 8)
    w("extra_after_body", reply(200, '{"success":true}') + "GARBAGE AFTER THE BODY", 11)
    w("small_bound", reply(200, '{"success":true,"x":"' + "a" * 200 + '"}'), 12, 0x83)
    w("small_bound_trailing", reply(200, '{"success":true}') + "z" * 300, 13, 0x80)
    w("dup_content_length", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\n{}")
    w("conflicting_length", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}x")
    w("chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    w("obs_fold", "HTTP/1.0 200 OK\r\nX: a\r\n b\r\nContent-Length: 2\r\n\r\n{}")
    w("bare_lf", "HTTP/1.0 200 OK\nContent-Length: 2\n\n{}")
    w("huge_length", "HTTP/1.0 200 OK\r\nContent-Length: 999999999999999999\r\n\r\n{}")
    w("status_999", "HTTP/1.0 999 OK\r\n\r\n{}")
    w("interim_100", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    w("not_http", "SSH-2.0-OpenSSH_9.6\r\n")
    w("deep_json", reply(200, "[" * 100 + "]" * 100))


def gen_proxy_head():
    """fuzz_proxy_head.c's layout: piece-size seed byte, then the service's response."""
    reset("proxy_head")

    def w(name, data, seed=0):
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        write("proxy_head", name, bytes([seed]) + data)

    w("ok_length", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
      "Set-Cookie: a=b; HttpOnly\r\n\r\n{}")
    w("chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
      "5\r\nhello\r\n0\r\nTrailer: x\r\n\r\n", 1)
    w("read_to_eof", "HTTP/1.0 200 OK\r\nServer: moonlight-web\r\n\r\n<html>body</html>", 2)
    w("interim_then_final", "HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
      "HTTP/1.1 201 Created\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n", 3)
    w("switching", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi", 4)
    w("no_content", "HTTP/1.1 204 No Content\r\nDate: Sun, 06 Dec 2026 00:00:00 GMT\r\n\r\n", 5)
    w("not_modified", "HTTP/1.1 304 Not Modified\r\nETag: \"abc\"\r\n\r\n", 6)
    w("two_responses", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"
      "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\ny", 7)
    w("many_headers", "HTTP/1.1 200 OK\r\n" + "".join("X-H%d: v%d\r\n" % (i, i) for i in range(101))
      + "Content-Length: 0\r\n\r\n", 8)
    w("big_header", "HTTP/1.1 200 OK\r\nX-Big: " + "b" * 17000 + "\r\n\r\n", 9)
    w("dup_names", "HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n", 10)
    w("empty_value", "HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Sp:   \r\nContent-Length: 0\r\n\r\n", 11)
    w("utf8_value", "HTTP/1.1 200 OK\r\nX-Name: \u00e9t\u00e9 \U0001F600\r\nContent-Length: 0\r\n\r\n", 12)
    w("obs_fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n")
    w("bad_cl", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx")
    w("cl_and_chunked", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    w("bare_lf", "HTTP/1.1 200 OK\nContent-Length: 0\n\n")
    w("nul_value", "HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n")
    w("wolf_quirk", "HTTP/1.0 404 OK\r\nContent-Length: 0\r\n\r\n")
    w("truncated", "HTTP/1.1 200 OK\r\nContent-Le", 13)
    w("not_http", "SSH-2.0-OpenSSH_9.6\r\n")


def main():
    gen_frame()
    gen_mux()
    gen_json()
    gen_http()
    gen_router()
    gen_opts_addr()
    gen_tls()
    gen_wolf_reply()
    gen_proxy_head()
    total = 0
    for root, _, files in os.walk(CORPUS):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    print("corpus: %d bytes" % total)


if __name__ == "__main__":
    main()
