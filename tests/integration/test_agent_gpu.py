#!/usr/bin/env python3
"""test_agent_gpu.py — GPU inventory end to end: the real wolfpackd and the real
wolfpack-agent, whose --sysfs-root is a fake /sys tree built here (render nodes,
PCI device dirs and the same symlinks as the kernel's) and whose --nvml-lib is
the fake NVML library (tests/fakes/fake_nvml.c) serving two GPUs from a fixture.

Checks: GET /api/v1/nodes/{id} shows the merged devices and gpu_vendor
"nvidia" from hello, and the NVML memory/utilization in gpu_stats from
heartbeats; `wolfpack-agent probe` prints the same inventory as JSON, prints
vendor "none" for an empty sysfs root and a missing NVML library, and refuses
a --sysfs-root that does not exist (exit 2).
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_fixture import add_gpu  # noqa: E402
from wolfpack_test import (AGENT_SAN_ENV, BIN_DIR, Agent, Runner, Wolfpackd, admin_token, api,  # noqa: E402
                           binary)

FIXTURE = """driver_version=550.54.14
count=2
gpu0.name=NVIDIA L40S
gpu0.uuid=GPU-11111111-2222-3333-4444-555555555555
gpu0.bus_id=00000000:3B:00.0
gpu0.pci_device_id=0x26B910DE
gpu0.memory_total=48305799168
gpu0.memory_used=3221225472
gpu0.util=23
gpu0.temperature=48
gpu1.name=NVIDIA L40S
gpu1.uuid=GPU-66666666-7777-8888-9999-000000000000
gpu1.bus_id=00000000:5E:00.0
gpu1.pci_device_id=0x26B910DE
gpu1.memory_total=48305799168
gpu1.memory_used=0
gpu1.util=unsupported
gpu1.temperature=35
"""


def fake_nvml():
    path = os.path.join(BIN_DIR, "..", "tests", "libfake_nvml.so")
    if not os.path.exists(path):
        raise RuntimeError("fake NVML library not built: %s" % path)
    return os.path.abspath(path)


class Ctx:
    agent = None


def agent_env(c):
    e = dict(os.environ)
    e["FAKE_NVML_FIXTURE"] = c.fixture
    e.setdefault("ASAN_OPTIONS", AGENT_SAN_ENV["ASAN_OPTIONS"])
    return e


def probe(c, *args):
    p = subprocess.run([binary("wolfpack-agent"), "probe", "--node-id", "gpu-probe",
                        "--log-level", "error"] + list(args),
                       env=agent_env(c), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def test_node_shows_gpus(c):
    c.agent = Agent(c.wp.dir, "gpu-node", [
        "--url", "wss://localhost:%d" % c.wp.port,
        "--token-file", os.path.join(c.wp.state, "join.token"), "--ca-file", c.wp.ca_file,
        "--node-id", "gpu-node", "--sysfs-root", c.tree, "--nvml-lib", fake_nvml(),
        "--log-level", "debug"], env={"FAKE_NVML_FIXTURE": c.fixture})
    node = c.agent.wait_online(c.wp, c.admin, timeout=40,
                               until=lambda n: n.get("gpus") and n.get("gpu_stats"))
    assert node and node.get("gpus") and node.get("gpu_stats"), (node, c.agent.log()[-3000:])
    assert node["gpu_vendor"] == "nvidia", node
    gpus = node["gpus"]
    assert [g["vendor"] for g in gpus] == ["nvidia", "nvidia", "intel"], gpus
    assert [g["index"] for g in gpus] == [0, 1, 2], gpus
    a, b, i = gpus
    assert a["uuid"] == "GPU-11111111-2222-3333-4444-555555555555", a
    assert a["model"] == "NVIDIA L40S" and a["pci_bus_id"] == "0000:3b:00.0", a
    assert a["render_node"] == "/dev/dri/renderD129" and a["driver"] == "nvidia", a
    assert a["vendor_id"] == "0x10de" and a["device_id"] == "0x26b9", a
    assert a["memory_total"] == 48305799168, a
    assert "render_node" not in b and b["pci_bus_id"] == "0000:5e:00.0", b
    assert i["render_node"] == "/dev/dri/renderD128" and i["driver"] == "i915", i
    stats = {s["index"]: s for s in node["gpu_stats"]}
    assert stats[0]["memory_used"] == 3221225472 and stats[0]["utilization"] == 23, stats
    assert stats[0]["temperature"] == 48, stats
    assert stats[1]["utilization"] is None, stats  # NOT_SUPPORTED in NVML: unknown
    assert stats[2]["memory_total"] is None, stats  # Intel via sysfs: no VRAM figures
    # the vendor filter of the node list sees it
    st, lst = api(c.wp, "GET", "/api/v1/nodes?gpu_vendor=nvidia", c.admin)
    assert st == 200 and "gpu-node" in [n["id"] for n in lst["nodes"]], lst


def test_agent_stops_cleanly(c):
    assert c.agent.stop(timeout=40) == 0, c.agent.log()[-3000:]


def test_probe_prints_inventory(c):
    rc, out, err = probe(c, "--sysfs-root", c.tree, "--nvml-lib", fake_nvml())
    assert rc in (0, 1), (rc, out, err)  # 1: no Wolf on this machine
    doc = json.loads(out)
    assert doc["node_id"] == "gpu-probe" and doc["version"], doc
    assert doc["gpu"]["vendor"] == "nvidia" and len(doc["gpu"]["devices"]) == 3, doc
    assert doc["gpu"]["driver_version"] == "550.54.14", doc
    d0 = doc["gpu"]["devices"][0]
    assert d0["memory_used"] == 3221225472 and d0["utilization"] == 23, d0
    assert isinstance(doc["healthy"], bool) and isinstance(doc["services"], dict), doc
    if rc == 1:
        assert "unhealthy" in err and doc["healthy"] is False, err


def test_probe_none_with_empty_sysfs(c):
    empty = tempfile.mkdtemp(prefix="wp-gpu-empty-")
    rc, out, err = probe(c, "--sysfs-root", empty, "--nvml-lib", "/nonexistent/libnvidia-ml.so.1")
    os.rmdir(empty)
    assert rc in (0, 1), (rc, out, err)
    doc = json.loads(out)
    assert doc["gpu"]["vendor"] == "none" and doc["gpu"]["devices"] == [], doc
    assert "libnvidia-ml" in doc["gpu"].get("nvml_error", ""), doc


def test_probe_bad_sysfs_root(c):
    rc, out, err = probe(c, "--sysfs-root", "/nonexistent-sysfs-root")
    assert rc == 2 and "--sysfs-root" in err and out == "", (rc, out, err)


def main():
    r = Runner()
    c = Ctx()
    work = tempfile.mkdtemp(prefix="wp-it-gpu-")
    c.tree = os.path.join(work, "sys")
    add_gpu(c.tree, "0000:00:02.0", "0x8086", "0x9a49", "i915", 128)
    add_gpu(c.tree, "0000:3b:00.0", "0x10de", "0x26b9", "nvidia", 129)
    c.fixture = os.path.join(work, "nvml.fixture")
    with open(c.fixture, "w") as f:
        f.write(FIXTURE)
    c.wp = Wolfpackd(wait_ready=True, extra_args=["--heartbeat-interval", "1"])
    c.admin = admin_token(c.wp)
    try:
        r.run(test_node_shows_gpus, c)
        if c.agent:
            r.run(test_agent_stops_cleanly, c)
        r.run(test_probe_prints_inventory, c)
        r.run(test_probe_none_with_empty_sysfs, c)
        r.run(test_probe_bad_sysfs_root, c)
    finally:
        rc = r.finish(c.wp, c.agent)
    return rc


if __name__ == "__main__":
    sys.exit(main())
