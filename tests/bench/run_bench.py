#!/usr/bin/env python3
"""run_bench.py — the tunnel benchmark: direct TCP vs a stunnel TLS relay vs wolfpack.

Not a test (ctest never runs it): it measures and prints a report, then exits 0
(1 only when the set-up failed). In one run on one machine it starts

  wp_bench serve            a sink (discards, counts), an echo server, a stats port
  stunnel4                  TLS server relaying plaintext to the sink / echo
                            (the honest ceiling for one TLS hop)
  wolfpackd                 fresh state dir, embedded PostgreSQL, generated CA
  wolfpack-agent            joined with the printed command, services sink + echo

and drives three paths with wp_bench (OpenSSL TLS 1.2 client, blocking, one
thread per stream):

  direct    client -> sink                                      (loopback TCP)
  stunnel   client -TLS-> stunnel -> sink
  wolfpack  client -TLS-> wolfpackd CONNECT -> tunnel (TLS WebSocket, mux)
                   -> agent -> sink

For each: bulk throughput of 1 and of N (16) parallel streams, measured at the
sink in steady state after a warm-up, with every process's CPU use over the
same window; and the p50/p99 round trip of a 64-byte echo (2,000 samples after
200 warm-up). Then the ratios: wolfpack/stunnel throughput (target >= 0.5 for
one stream) and wolfpack's added p50 over direct (target < 200 us).

Usage: tests/bench/run_bench.py [--build-dir build-bench] [--repeat N] [--json FILE]
See tests/bench/README.md.
"""
import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
JOIN_RE = re.compile(r"^\s*(wolfpack-agent --url \S+ --token \S+ --ca-pin sha256:[0-9a-f]{64})\s*$",
                     re.M)
NODE = "bench"
TARGET_RATIO = 0.5
TARGET_ADDED_P50_US = 200.0


class SetupError(Exception):
    pass


def log(msg):
    print("# " + msg, file=sys.stderr, flush=True)


def wait_for(what, fn, timeout, proc=None, logfile=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SetupError("%s: process exited (%d)%s" % (what, proc.returncode, tail(logfile)))
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise SetupError("%s: timed out after %ds%s" % (what, timeout, tail(logfile)))


def tail(path, n=3000):
    if not path or not os.path.exists(path):
        return ""
    with open(path, "rb") as f:
        return "\n--- %s ---\n%s" % (path, f.read().decode("utf-8", "replace")[-n:])


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Bench:
    def __init__(self, args):
        self.args = args
        bindir = os.path.join(args.build_dir, "bin")
        self.wp_bench = os.path.join(bindir, "wp_bench")
        self.wolfpackd = os.path.join(bindir, "wolfpackd")
        self.agent_bin = os.path.join(bindir, "wolfpack-agent")
        for b in (self.wp_bench, self.wolfpackd, self.agent_bin):
            if not os.access(b, os.X_OK):
                raise SetupError("%s not built (ninja -C %s wolfpackd wolfpack-agent wp_bench; "
                                 "tests/CMakeLists.txt must add_subdirectory(bench))"
                                 % (b, args.build_dir))
        self.stunnel_bin = shutil.which("stunnel4") or shutil.which("stunnel")
        if not self.stunnel_bin:
            raise SetupError("stunnel4 not found: apt-get install stunnel4 (scripts/deps.sh --test)")
        self.dir = tempfile.mkdtemp(prefix="wp-bench-")
        # As root the embedded PostgreSQL runs unprivileged and must traverse this directory.
        os.chmod(self.dir, 0o755)
        self.procs = []

    def spawn(self, name, argv, **kw):
        logpath = os.path.join(self.dir, name + ".log")
        logf = open(logpath, "wb")
        p = subprocess.Popen(argv, stdout=kw.pop("stdout", logf), stderr=logf, **kw)
        logf.close()
        self.procs.append((name, p))
        return p, logpath

    # ---- set-up ----

    def start_serve(self):
        p, self.serve_log = self.spawn("wp_bench-serve", [self.wp_bench, "serve"],
                                       stdout=subprocess.PIPE)
        line = p.stdout.readline().decode()
        m = re.match(r"sink=(\d+) echo=(\d+) ctl=(\d+)", line)
        if not m:
            raise SetupError("wp_bench serve: unexpected first line %r%s" % (line, tail(self.serve_log)))
        self.serve = p
        self.sink_port, self.echo_port, self.ctl_port = (int(x) for x in m.groups())

    def start_wolfpackd(self):
        self.state = os.path.join(self.dir, "state")
        self.cp_port = free_port()
        out = os.path.join(self.dir, "wolfpackd.out")
        outf = open(out, "wb")
        self.cp, self.cp_log = self.spawn(
            "wolfpackd", [self.wolfpackd, "--listen", "127.0.0.1:%d" % self.cp_port,
                          "--state-dir", self.state, "--log-level", self.args.log_level],
            stdout=outf)
        outf.close()
        wait_for("wolfpackd listening",
                 lambda: re.search(r'msg="?listening', read(self.cp_log)), 60, self.cp, self.cp_log)
        join = wait_for("wolfpackd join command", lambda: JOIN_RE.search(read(out)), 60, self.cp,
                        self.cp_log)
        self.join = shlex.split(join.group(1))
        with open(os.path.join(self.state, "admin.token")) as f:
            self.admin = f.read().strip()
        self.admin_file = os.path.join(self.state, "admin.token")
        self.ca = os.path.join(self.state, "tls", "ca.crt")
        self.ctx = ssl.create_default_context(cafile=self.ca)

    def api_get(self, path):
        try:
            s = self.ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.cp_port), timeout=5),
                                     server_hostname="localhost")
            s.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n"
                       "Connection: close\r\n\r\n" % (path, self.admin)).encode())
            buf = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                buf += d
            s.close()
            head, _, body = buf.partition(b"\r\n\r\n")
            status = int(head.split()[1])
            return status, json.loads(body) if body.strip().startswith(b"{") else None
        except (OSError, ValueError, IndexError):
            return 0, None

    def start_agent(self):
        argv = [self.agent_bin] + self.join[1:] + [
            "--node-id", NODE,
            "--service", "sink=tcp:127.0.0.1:%d" % self.sink_port,
            "--service", "echo=tcp:127.0.0.1:%d" % self.echo_port,
            "--status-listen", "none", "--log-level", self.args.log_level]
        self.agent, self.agent_log = self.spawn("wolfpack-agent", argv)

        def online():
            st, node = self.api_get("/api/v1/nodes/" + NODE)
            return st == 200 and node and node.get("status") == "online"

        wait_for("node online", online, 60, self.agent, self.agent_log)

    def start_stunnel(self):
        tls = os.path.join(self.state, "tls")
        cert, key = os.path.join(tls, "server.crt"), os.path.join(tls, "server.key")
        for f in (cert, key):
            if not os.path.exists(f):
                raise SetupError("expected wolfpackd's generated %s (files: %s)" % (f, os.listdir(tls)))
        self.st_sink, self.st_echo = free_port(), free_port()
        conf = os.path.join(self.dir, "stunnel.conf")
        with open(conf, "w") as f:
            f.write("foreground = yes\npid =\ndebug = warning\n"
                    "socket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n")
            for name, acc, to in (("sink", self.st_sink, self.sink_port),
                                  ("echo", self.st_echo, self.echo_port)):
                f.write("[%s]\naccept = 127.0.0.1:%d\nconnect = 127.0.0.1:%d\n"
                        "cert = %s\nkey = %s\n" % (name, acc, to, cert, key))
        self.stunnel, self.stunnel_log = self.spawn("stunnel", [self.stunnel_bin, conf])
        wait_for("stunnel listening", lambda: port_open(self.st_sink) and port_open(self.st_echo), 20,
                 self.stunnel, self.stunnel_log)

    def setup(self):
        t = time.time()
        self.start_serve()
        self.start_wolfpackd()
        self.start_agent()
        self.start_stunnel()
        log("set-up took %.1fs (state in %s)" % (time.time() - t, self.dir))

    # ---- measurements ----

    def paths(self):
        tls = ["--tls", "--ca", self.ca, "--sni", "localhost"]
        cp = "127.0.0.1:%d" % self.cp_port
        return {
            "direct": {"sink": ["--target", "127.0.0.1:%d" % self.sink_port],
                       "echo": ["--target", "127.0.0.1:%d" % self.echo_port],
                       "watch": {}},
            "stunnel": {"sink": ["--target", "127.0.0.1:%d" % self.st_sink] + tls,
                        "echo": ["--target", "127.0.0.1:%d" % self.st_echo] + tls,
                        "watch": {"stunnel": self.stunnel.pid}},
            "wolfpack": {"sink": ["--target", cp, "--connect", NODE + ":sink",
                                  "--token-file", self.admin_file] + tls,
                         "echo": ["--target", cp, "--connect", NODE + ":echo",
                                  "--token-file", self.admin_file] + tls,
                         "watch": {"wolfpackd": self.cp.pid, "agent": self.agent.pid}},
        }

    def run_wp(self, argv):
        r = subprocess.run([self.wp_bench] + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=120)
        if r.returncode != 0:
            raise SetupError("wp_bench %s failed (%d): %s" % (argv[0], r.returncode,
                                                             r.stderr.decode()[-2000:]))
        return json.loads(r.stdout.decode().strip().splitlines()[-1])

    def bulk(self, p, streams):
        argv = ["bulk"] + p["sink"] + ["--stats", "127.0.0.1:%d" % self.ctl_port,
                                       "--streams", str(streams),
                                       "--warmup", str(self.args.warmup),
                                       "--seconds", str(self.args.seconds)]
        watch = dict(p["watch"])
        watch["sink"] = self.serve.pid
        for name, pid in watch.items():
            argv += ["--watch", "%s=%d" % (name, pid)]
        return self.run_wp(argv)

    def echo(self, p):
        return self.run_wp(["echo"] + p["echo"] + ["--size", str(self.args.size),
                                                   "--samples", str(self.args.samples),
                                                   "--warmup", str(self.args.echo_warmup)])

    def measure(self):
        paths = self.paths()
        names = [n for n in ("direct", "stunnel", "wolfpack") if n in self.args.paths]
        runs = []
        for rep in range(self.args.repeat):
            res = {}
            for name in names:
                p = paths[name]
                r = {"bulk1": self.bulk(p, 1), "bulkN": self.bulk(p, self.args.streams),
                     "echo": self.echo(p)}
                res[name] = r
                log("rep %d %-8s 1x %8.1f MB/s  %dx %8.1f MB/s  p50 %7.1f us  p99 %7.1f us" % (
                    rep + 1, name, r["bulk1"]["MBps"], self.args.streams, r["bulkN"]["MBps"],
                    r["echo"]["p50_us"], r["echo"]["p99_us"]))
            runs.append(res)
        return runs

    def stop(self):
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    log("%s did not exit on SIGTERM; killing it" % name)
                    p.kill()
                    p.wait()
            if p.stdout:
                p.stdout.close()
        if self.args.keep:
            log("kept %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


# ---- report ----

def spread(vals, fmt):
    """median, and [min-max] when there is more than one value."""
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt % med
    return (fmt % med) + " [" + (fmt % min(vals)).strip() + "-" + (fmt % max(vals)).strip() + "]"


def report(args, runs):
    names = [n for n in ("direct", "stunnel", "wolfpack") if n in runs[0]]
    n = args.streams
    out = []
    out.append("wolfpack tunnel benchmark — %s, %d CPUs, %d run(s), %gs windows after %gs warm-up"
               % (socket.gethostname(), os.cpu_count() or 0, len(runs), args.seconds, args.warmup))
    tlsinfo = ""
    for name in names:
        b = runs[0][name]["bulk1"]
        if b.get("tls"):
            tlsinfo += " %s=%s/%s" % (name, b.get("tls_version"), b.get("cipher"))
    if tlsinfo:
        out.append("client TLS:" + tlsinfo)
    out.append("")
    hdr = "%-9s %22s %22s %18s %18s" % ("path", "1 stream MB/s", "%d streams MB/s" % n,
                                         "echo p50 us", "echo p99 us")
    out.append(hdr)
    out.append("-" * len(hdr))
    for name in names:
        v1 = [r[name]["bulk1"]["MBps"] for r in runs]
        vn = [r[name]["bulkN"]["MBps"] for r in runs]
        p50 = [r[name]["echo"]["p50_us"] for r in runs]
        p99 = [r[name]["echo"]["p99_us"] for r in runs]
        out.append("%-9s %22s %22s %18s %18s" % (name, spread(v1, "%.1f"), spread(vn, "%.1f"),
                                                 spread(p50, "%.1f"), spread(p99, "%.1f")))
    out.append("")
    out.append("CPU over the measurement window: cores busy, and CPU ns per byte delivered")
    out.append("(median of runs; ns/B is the cost that does not depend on what else the machine runs):")
    for key, label in (("bulk1", "1 stream"), ("bulkN", "%d streams" % n)):
        for name in names:
            cpu, nspb = {}, {}
            for r in runs:
                b = r[name][key]
                for k, v in b["cpu"].items():
                    cpu.setdefault(k, []).append(v)
                    if b["MBps"] > 0 and v >= 0:
                        nspb.setdefault(k, []).append(v * 1000.0 / b["MBps"])
            out.append("  %-9s %-11s %s" % (name, label, "  ".join(
                "%s %.2f (%.1f ns/B)" % (k, statistics.median(v), statistics.median(nspb.get(k, [0])))
                for k, v in cpu.items())))
    out.append("")

    def ratio(a, b, key):
        rs = [r[a][key]["MBps"] / r[b][key]["MBps"] for r in runs if r[b][key]["MBps"] > 0]
        return rs

    verdict = []
    if "wolfpack" in names and "stunnel" in names:
        r1, rn = ratio("wolfpack", "stunnel", "bulk1"), ratio("wolfpack", "stunnel", "bulkN")
        if r1:
            ok = statistics.median(r1) >= TARGET_RATIO
            out.append("wolfpack/stunnel throughput, 1 stream:  %s  (target >= %.2f: %s)"
                       % (spread(r1, "%.3f"), TARGET_RATIO, "met" if ok else "MISSED"))
            verdict.append(ok)
        if rn:
            out.append("wolfpack/stunnel throughput, %d streams: %s" % (n, spread(rn, "%.3f")))
    if "direct" in names:
        for name in names:
            if name == "direct":
                continue
            add = [r[name]["echo"]["p50_us"] - r["direct"]["echo"]["p50_us"] for r in runs]
            line = "%s added p50 latency over direct: %s us" % (name, spread(add, "%.1f"))
            if name == "wolfpack":
                ok = statistics.median(add) < TARGET_ADDED_P50_US
                line += "  (target < %.0f us: %s)" % (TARGET_ADDED_P50_US, "met" if ok else "MISSED")
                verdict.append(ok)
            out.append(line)
        if "stunnel" in names:
            r1 = ratio("stunnel", "direct", "bulk1")
            out.append("stunnel/direct throughput, 1 stream: %s" % spread(r1, "%.3f"))
    print("\n".join(out), flush=True)


def main():
    ap = argparse.ArgumentParser(description="wolfpack tunnel benchmark (see tests/bench/README.md)")
    ap.add_argument("--build-dir", default=os.environ.get("WP_BUILD_DIR",
                                                          os.path.join(REPO, "build-bench")),
                    help="build directory holding bin/wolfpackd, bin/wolfpack-agent, bin/wp_bench")
    ap.add_argument("--repeat", type=int, default=1, help="measure every path this many times")
    ap.add_argument("--streams", type=int, default=16, help="parallel streams for the second bulk run")
    ap.add_argument("--seconds", type=float, default=3.0, help="bulk measurement window")
    ap.add_argument("--warmup", type=float, default=1.0, help="bulk warm-up before the window")
    ap.add_argument("--samples", type=int, default=2000, help="echo round trips measured")
    ap.add_argument("--echo-warmup", type=int, default=200, help="echo round trips before measuring")
    ap.add_argument("--size", type=int, default=64, help="echo message size")
    ap.add_argument("--paths", default="direct,stunnel,wolfpack", help="comma-separated subset")
    ap.add_argument("--log-level", default="info", help="wolfpackd/agent log level")
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary state and logs")
    ap.add_argument("--hold", action="store_true",
                    help="after set-up, print the endpoints and wait for Ctrl-C (for profiling)")
    args = ap.parse_args()
    args.paths = args.paths.split(",")
    if args.repeat < 1 or args.streams < 1:
        ap.error("--repeat and --streams must be >= 1")

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    t0 = time.time()
    b = None
    try:
        b = Bench(args)
        b.setup()
        if args.hold:
            print(json.dumps({"dir": b.dir, "sink": b.sink_port, "echo": b.echo_port,
                              "ctl": b.ctl_port, "stunnel_sink": b.st_sink,
                              "stunnel_echo": b.st_echo, "wolfpackd": b.cp_port,
                              "wolfpackd_pid": b.cp.pid, "agent_pid": b.agent.pid,
                              "stunnel_pid": b.stunnel.pid, "serve_pid": b.serve.pid,
                              "ca": b.ca, "admin_token_file": b.admin_file,
                              "wp_bench": b.wp_bench}), flush=True)
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
            return 0
        runs = b.measure()
    except SetupError as e:
        print("run_bench: set-up failed: %s" % e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1
    finally:
        if b is not None:
            b.stop()
    report(args, runs)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": runs}, f, indent=1)
    log("total %.1fs" % (time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
