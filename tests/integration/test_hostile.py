#!/usr/bin/env python3
"""test_hostile.py — the real wolfpackd binary over TLS against hostile clients.

Verifies the generated certificate through the CA file and its SPKI pin, then
sends oversized headers, 10,000 headers, a slowloris client, bad chunked
bodies, smuggling attempts, a request split one byte at a time, plaintext on
the TLS port and a connection flood. After each, the server must have answered
with the right status or closed, keep serving other clients, and not leak
file descriptors; it must exit 0 on SIGTERM (under ASan: no leak report).
"""
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wolfpack_test import (Runner, Wolfpackd, binary, is_closed, read_response,  # noqa: E402
                           recv_all)

HEADER_TIMEOUT_S = 2


def spki_sha256(pem_path):
    """SHA-256 of the certificate's SubjectPublicKeyInfo, computed by openssl (independent of us)."""
    pub = subprocess.run(["openssl", "x509", "-in", pem_path, "-pubkey", "-noout"],
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         check=True, capture_output=True).stdout
    return hashlib.sha256(der).hexdigest()


def get(wp, path, extra=b""):
    s = wp.connect()
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n" + extra + b"\r\n")
    r = read_response(s)
    s.close()
    return r


def assert_healthy(wp):
    status, _, body = get(wp, "/healthz")
    assert status == 200, status
    assert json.loads(body)["status"] == "ok"
    assert wp.alive()


def test_pin_and_ca_verify(wp):
    log = wp.log()
    m = re.search(r"ca_pin=sha256:([0-9a-f]{64})", log)
    assert m, "CA pin not logged:\n" + log
    assert m.group(1) == spki_sha256(wp.ca_file), "logged pin != openssl SPKI hash of ca.crt"
    # The served chain verifies against the generated CA with hostname checking on.
    s = wp.connect()
    assert s.version() in ("TLSv1.2", "TLSv1.3"), s.version()
    cipher = s.cipher()[0]
    assert "GCM" in cipher or "CHACHA20" in cipher, cipher
    s.close()
    # openssl s_client agrees, and sees the CA in the presented chain (pinnable by agents).
    out = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % wp.port,
                          "-servername", "localhost", "-CAfile", wp.ca_file, "-verify_return_error",
                          "-showcerts"], input=b"", capture_output=True, timeout=20)
    text = out.stdout.decode("latin-1")
    assert "Verify return code: 0 (ok)" in text, text[-2000:]
    assert text.count("BEGIN CERTIFICATE") >= 2, "server does not present the CA in its chain"
    # A client with a different CA refuses.
    other = ssl.create_default_context()
    raw = socket.create_connection(("127.0.0.1", wp.port), timeout=5)
    try:
        other.wrap_socket(raw, server_hostname="localhost")
        raise AssertionError("handshake verified without the right CA")
    except ssl.SSLCertVerificationError:
        pass
    finally:
        raw.close()


def test_tls_policy(wp):
    # TLS 1.0/1.1 are refused; TLS 1.2 with a CBC-only offer is refused (AEAD only).
    for proto in ("-tls1", "-tls1_1"):
        r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % wp.port, proto],
                           input=b"", capture_output=True, timeout=20)
        assert b"Cipher is (NONE)" in r.stdout or r.returncode != 0, proto
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % wp.port, "-tls1_2",
                        "-cipher", "ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA"],
                       input=b"", capture_output=True, timeout=20)
    assert b"Cipher is (NONE)" in r.stdout or r.returncode != 0, r.stdout[-500:]
    assert_healthy(wp)


def test_version_with_curl(wp):
    out = subprocess.run(["curl", "-sS", "--fail", "--cacert", wp.ca_file,
                          "https://localhost:%d/version" % wp.port],
                         check=True, capture_output=True, timeout=20).stdout
    v = json.loads(out)
    want = subprocess.run([binary("wolfpackd"), "--version"], check=True,
                          capture_output=True).stdout.decode()
    assert v["commit"] and v["commit"] in want, (v, want)
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", v["commit"]), v["commit"]
    assert v["version"] and v["build_time"]
    head = os.environ.get("WP_GIT_COMMIT")
    if head:
        assert v["commit"].startswith(head), (v["commit"], head)


def test_not_found_json(wp):
    status, headers, body = get(wp, "/nope")
    assert status == 404, status
    assert headers["content-type"].startswith("application/json")
    err = json.loads(body)["error"]
    assert err["code"] == "not_found" and err["message"], err


def test_oversized_header(wp):
    s = wp.connect()
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (64 * 1024) + b"\r\n\r\n")
    status, _, body = read_response(s)
    assert status == 431, status
    assert json.loads(body)["error"]["code"]
    assert is_closed(s)
    s.close()
    assert_healthy(wp)


def test_ten_thousand_headers(wp):
    s = wp.connect()
    req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-H%d: v\r\n" % i for i in range(10000)) + b"\r\n"
    try:
        s.sendall(req)
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        pass  # the server may answer and close before we finish sending
    status, _, _ = read_response(s)
    assert status == 431, status
    assert is_closed(s)
    s.close()
    assert_healthy(wp)


def test_slowloris(wp):
    slow = wp.connect()
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    t0 = time.time()
    # While it dribbles, other clients are served.
    for _ in range(3):
        slow.sendall(b"X-Slow: 1\r\n")
        assert_healthy(wp)
        time.sleep(0.3)
    status, _, _ = read_response(slow, timeout=HEADER_TIMEOUT_S + 10)
    elapsed = time.time() - t0
    assert status == 408, status
    assert elapsed < HEADER_TIMEOUT_S + 5, elapsed
    assert is_closed(slow)
    slow.close()
    # An idle connection that never sends a byte is also dropped.
    idle = wp.connect()
    assert is_closed(idle, timeout=HEADER_TIMEOUT_S + 5)
    idle.close()


def test_bad_chunked(wp):
    for body in (b"zz\r\nhello\r\n0\r\n\r\n",          # non-hex size
                 b"5\r\nhelloXX0\r\n\r\n",               # missing CRLF after data
                 b"ffffffffffffffffff\r\n"):             # size overflow
        s = wp.connect()
        s.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        status, _, _ = read_response(s)
        # 400 when the body is parsed; a route may also refuse the request (404/405)
        # before reading it: either way the connection must not survive the bad body.
        assert status in (400, 404, 405, 413), (body, status)
        assert is_closed(s)
        s.close()
    assert_healthy(wp)


def test_smuggling(wp):
    for hdrs in (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                 b"Content-Length: 5\r\nContent-Length: 6\r\n",
                 b"Transfer-Encoding: gzip\r\n"):
        s = wp.connect()
        s.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\n" + hdrs + b"\r\nhello")
        status, _, _ = read_response(s)
        assert status in (400, 501), (hdrs, status)
        assert is_closed(s)
        s.close()
    # Invalid header names, NUL and bare CR in values, bad request lines are refused.
    for req in (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n",
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
                b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
                b"\x16\x03\x01garbage\r\n\r\n"):
        s = wp.connect()
        s.sendall(req)
        status, _, body = read_response(s)
        assert status in (400, 505), (req, status)
        assert json.loads(body)["error"]["code"], body
        assert is_closed(s)
        s.close()
    assert_healthy(wp)


def test_body_too_large(wp):
    s = wp.connect()
    s.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n")
    status, _, _ = read_response(s)
    assert status == 413, status
    assert is_closed(s)
    s.close()
    assert_healthy(wp)


def test_one_byte_at_a_time(wp):
    s = wp.connect()
    req = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nUser-Agent: dribble\r\n\r\n"
    for i in range(len(req)):
        s.sendall(req[i:i + 1])
        time.sleep(0.005)
    status, _, body = read_response(s)
    assert status == 200 and json.loads(body)["status"] == "ok", (status, body)
    # keep-alive: the same connection serves a second request
    s.sendall(b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n")
    status, _, body = read_response(s)
    assert status == 200 and "commit" in json.loads(body)
    s.close()


def test_pipelining(wp):
    s = wp.connect()
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    a = read_response(s)
    b = read_response(s)
    c = read_response(s)
    assert (a[0], b[0], c[0]) == (200, 404, 200), (a[0], b[0], c[0])
    assert "commit" in json.loads(c[2])
    assert is_closed(s)
    s.close()


def test_plaintext_on_tls_port(wp):
    raw = socket.create_connection(("127.0.0.1", wp.port), timeout=5)
    raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    data = recv_all(raw, timeout=5)
    assert b"HTTP/1.1 200" not in data
    raw.close()
    raw = socket.create_connection(("127.0.0.1", wp.port), timeout=5)
    raw.sendall(os.urandom(4096))
    recv_all(raw, timeout=5)
    raw.close()
    assert_healthy(wp)


def test_connection_flood(wp):
    socks = []
    for _ in range(200):
        socks.append(socket.create_connection(("127.0.0.1", wp.port), timeout=5))
    # Stalled handshakes do not stop a real client.
    assert_healthy(wp)
    for s in socks:
        s.close()
    time.sleep(0.5)
    assert_healthy(wp)


def test_no_fd_leak(wp):
    time.sleep(0.5)
    # one warm-up round (allocator arenas, TLS caches), then measure
    test_oversized_header(wp)
    test_ten_thousand_headers(wp)
    base = wp.fd_count()
    rss0 = wp.rss_kb()
    for _ in range(5):
        test_ten_thousand_headers(wp)
        test_oversized_header(wp)
        test_bad_chunked(wp)
        test_smuggling(wp)
        test_pipelining(wp)
    deadline = time.time() + 10
    while wp.fd_count() > base and time.time() < deadline:
        time.sleep(0.1)
    assert wp.fd_count() <= base, (wp.fd_count(), base)
    grown = wp.rss_kb() - rss0
    print("  fds %d -> %d, rss %d KiB -> %d KiB" % (base, wp.fd_count(), rss0, wp.rss_kb()))
    assert grown < 32 * 1024, (rss0, wp.rss_kb())


def test_sighup_reload(wp):
    wp.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 5
    while "tls certificate reloaded" not in wp.log() and time.time() < deadline:
        time.sleep(0.05)
    assert "tls certificate reloaded" in wp.log()
    assert_healthy(wp)


def test_secrets_never_logged(wp):
    secret = "wpa_" + "S3cr3tT0k3nValue" * 2
    get(wp, "/healthz", b"Authorization: Bearer " + secret.encode() + b"\r\n")
    get(wp, "/nope?token=" + secret, b"")
    assert secret not in wp.log()


def test_plain_mode():
    wp = Wolfpackd(tls=False)
    try:
        s = socket.create_connection(("127.0.0.1", wp.port), timeout=5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _ = read_response(s)
        assert status == 200
        s.close()
        assert "plain HTTP" in wp.log()
    finally:
        rc = wp.stop()
    assert rc == 0, (rc, wp.log()[-3000:])


def test_bad_flags():
    for args in (["--log-level", "loud"], ["--nope"], ["--tls-cert", "/x"],
                 ["--listen", "not-an-address"]):
        r = subprocess.run([binary("wolfpackd"), "--state-dir", "/tmp/wp-bad-flags"] + args,
                           capture_output=True, timeout=20)
        assert r.returncode != 0, args
        err = r.stderr.decode()
        assert err.strip(), args


def main():
    r = Runner()
    r.run(test_bad_flags)
    wp = Wolfpackd(extra_args=["--http-header-timeout", str(HEADER_TIMEOUT_S),
                               "--http-idle-timeout", str(HEADER_TIMEOUT_S)])
    try:
        for t in (test_pin_and_ca_verify, test_tls_policy, test_version_with_curl,
                  test_not_found_json, test_oversized_header, test_ten_thousand_headers,
                  test_slowloris, test_bad_chunked, test_smuggling, test_body_too_large,
                  test_one_byte_at_a_time, test_pipelining, test_plaintext_on_tls_port,
                  test_connection_flood, test_no_fd_leak, test_sighup_reload,
                  test_secrets_never_logged):
            r.run(t, wp)
    finally:
        rc = wp.stop()

    def test_clean_shutdown():
        assert rc == 0, "exit code %d\n%s" % (rc, wp.log()[-4000:])
        log = wp.log()
        assert wp.logged("stopped"), log[-2000:]
        assert "ERROR: AddressSanitizer" not in log and "LeakSanitizer" not in log
        assert "runtime error" not in log

    r.run(test_clean_shutdown)
    r.run(test_plain_mode)
    return r.done()


if __name__ == "__main__":
    sys.exit(main())
