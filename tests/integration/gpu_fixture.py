"""gpu_fixture.py — fake /sys trees for the agent's GPU inventory (--sysfs-root), shared by the
integration tests that start real agents. Not a test itself. Stdlib only.

add_gpu() adds one PCI GPU with its render node, laid out and linked as the kernel does
(devices/pci0000:00/<bus>/{vendor,device,driver -> bus/pci/drivers/<drv>, drm/renderD<n>},
class/drm/renderD<n> -> ../../devices/...); sysfs_tree() builds a whole tree with a single
GPU of one vendor, or none. NO_NVML is an --nvml-lib that never loads, so a test's inventory
comes from its tree alone even on a machine with a real NVIDIA driver.
"""
import os

NO_NVML = "/nonexistent/libnvidia-ml.so.1"

# vendor -> (PCI vendor id, device id, kernel driver) of the one GPU sysfs_tree() adds
GPU_KINDS = {
    "nvidia": ("0x10de", "0x26b9", "nvidia"),
    "amd": ("0x1002", "0x744c", "amdgpu"),
    "intel": ("0x8086", "0x9a49", "i915"),
}


def add_gpu(root, bus, vendor, device, driver, num, sub=None):
    """A PCI device with its render node, linked as the kernel does. Returns its device dir."""
    leaf = "%s/%s" % (bus, sub) if sub else bus
    dev = os.path.join(root, "devices", "pci0000:00", leaf)
    os.makedirs(os.path.join(dev, "drm", "renderD%d" % num))
    os.makedirs(os.path.join(dev, "drm", "card%d" % (num - 128)))
    os.makedirs(os.path.join(root, "class", "drm"), exist_ok=True)
    os.makedirs(os.path.join(root, "bus", "pci", "drivers", driver), exist_ok=True)
    for name, text in (("vendor", vendor), ("device", device)):
        with open(os.path.join(dev, name), "w") as f:
            f.write(text + "\n")
    up = "../" if sub else ""
    os.symlink(up + "../../../bus/pci/drivers/" + driver, os.path.join(dev, "driver"))
    os.symlink("../../../" + (sub or bus), os.path.join(dev, "drm", "renderD%d" % num, "device"))
    os.symlink("../../devices/pci0000:00/%s/drm/renderD%d" % (leaf, num),
               os.path.join(root, "class", "drm", "renderD%d" % num))
    os.symlink("../../devices/pci0000:00/%s/drm/card%d" % (leaf, num - 128),
               os.path.join(root, "class", "drm", "card%d" % (num - 128)))
    return dev


def sysfs_tree(root, vendor):
    """Creates root (which must not exist) as a sysfs tree holding one GPU of vendor (a key of
    GPU_KINDS) at PCI 0000:3b:00.0 as /dev/dri/renderD128, or no GPU at all for "none".
    Returns root."""
    if vendor == "none":
        os.makedirs(os.path.join(root, "class", "drm"))
        return root
    vid, did, driver = GPU_KINDS[vendor]
    add_gpu(root, "0000:3b:00.0", vid, did, driver, 128)
    return root
