"""Which block device is the resource disk (WA §8 step 1, plus NVMe local disks).

Order: the `WAPROV_RESOURCE_DISK` override; the udev link `/dev/disk/azure/resource`; the
vmbus scan WALinuxAgent does (Gen1: a device id starting `00000000-0001`; Gen2: the SCSI
controller `f8b3781a-…` at LUN 1); then NVMe local disks (model "Microsoft NVMe Direct
Disk", v6 sizes), several of them joined in a RAID-0 when mdadm is installed. Reads
sysfs and the mount table through `System` (root prefix in tests); the only change is the
mdadm array.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass
from typing import List, Optional, Tuple

from waprov.errors import HostError
from waprov.procfs import Mount, mounts
from waprov.system import HostPath, System

log = logging.getLogger("waprov")

UDEV_LINK = "/dev/disk/azure/resource"
VMBUS = "/sys/bus/vmbus/devices"
GEN1_PREFIX = "00000000-0001"
GEN2_ID = "f8b3781a-1e82-4818-a1c3-63d806ec15bb"
NVME_MODELS = ("Microsoft NVMe Direct Disk", "Microsoft NVMe Direct Disk v2")
RAID_NAME = "waprov-resource"
RAID_DEVICE = "/dev/md/" + RAID_NAME


@dataclass(frozen=True)
class Disk:
    """The resource disk: its device node and how it was found (for the log)."""

    device: str
    found_by: str


def partition(device: str, number: int = 1) -> str:
    """The node of partition `number`: sdb → sdb1, nvme0n1/loop0/md127 → …p1."""
    return f"{device}p{number}" if device[-1:].isdigit() else f"{device}{number}"


def belongs_to(mount_device: str, device: str) -> bool:
    """Whether a mount table device is `device` itself or one of its partitions."""
    if mount_device == device:
        return True
    if not mount_device.startswith(device):
        return False
    number = r"p[0-9]+" if device[-1:].isdigit() else r"[0-9]+"
    return re.fullmatch(number, mount_device[len(device) :]) is not None


def mounts_of(system: System, device: str) -> List[Mount]:
    """The mounts of `device` or its partitions (device names resolved through symlinks)."""
    real = system.realpath(device)
    found = []
    for m in mounts(system):
        if m.device.startswith("/") and belongs_to(system.realpath(m.device), real):
            found.append(m)
    return found


def _read(system: System, path: str) -> str:
    try:
        data = system.read(path, limit=4096)
    except HostError:
        return ""
    return (data or b"").decode("utf-8", "replace").strip()


def vmbus_resource_disk(system: System) -> Optional[str]:
    """WALinuxAgent's `search_for_resource_disk`: the device name (e.g. `sdb`) or None."""
    for dev_dir in system.glob(VMBUS + "/*"):
        guid = _read(system, dev_dir + "/device_id").strip("{}").lower()
        if not (guid.startswith(GEN1_PREFIX) or guid == GEN2_ID):
            continue
        for root, dirs, _ in system.walk(dev_dir):
            dirs.sort()
            parts = root.split("/")
            if parts[-1] == "block" and dirs and (guid != GEN2_ID or parts[-2].split(":")[-1] == "1"):
                return dirs[0]
            for d in dirs:  # older kernels: block:<dev>
                if d.startswith("block:"):
                    return d.split(":", 1)[1]
    return None


def _nvme_key(name: str) -> Tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"[0-9]+", name))


def nvme_local_disks(system: System) -> List[str]:
    """The NVMe namespaces whose controller is an Azure local (temporary) disk."""
    found = []
    for block in system.glob("/sys/block/nvme*n*"):
        name = os.path.basename(block)
        if not re.fullmatch(r"nvme[0-9]+n[0-9]+", name):  # not a hidden multipath path
            continue
        if _read(system, block + "/device/model") in NVME_MODELS:
            found.append(name)
    return sorted(found, key=_nvme_key)


def is_block_device(system: System, path: str) -> bool:
    st = system.stat(path)
    return st is not None and stat.S_ISBLK(st.st_mode)


def _raid(system: System, members: List[str]) -> str:
    """Assemble the RAID-0 of earlier boots, or create it, and return its device."""
    if is_block_device(system, RAID_DEVICE):
        return RAID_DEVICE
    nodes = [HostPath(m) for m in members]
    probe = system.query(["mdadm", "--examine", "--brief", *nodes])
    if probe.rc == 0 and re.search(rf"\bname=(?:\S*:)?{RAID_NAME}\b", probe.stdout):
        system.run(["mdadm", "--assemble", HostPath(RAID_DEVICE), *nodes])
    else:
        system.run(
            ["mdadm", "--create", HostPath(RAID_DEVICE), "--run", "--level=0", "--metadata=1.2",
             f"--name={RAID_NAME}", f"--raid-devices={len(members)}", *nodes]
        )  # fmt: skip
    return RAID_DEVICE


def find_resource_disk(system: System, override: Optional[str]) -> Optional[Disk]:
    """The resource disk, or None when this VM has none."""
    if override is not None:
        if not is_block_device(system, override):
            raise HostError(f"WAPROV_RESOURCE_DISK={override}: not a block device")
        return Disk(override, "WAPROV_RESOURCE_DISK")
    if is_block_device(system, UDEV_LINK):
        return Disk(system.realpath(UDEV_LINK), UDEV_LINK)
    name = vmbus_resource_disk(system)
    if name is not None:
        return Disk("/dev/" + name, "the vmbus scan")
    nvme = ["/dev/" + n for n in nvme_local_disks(system)]
    if len(nvme) == 1:
        return Disk(nvme[0], "its NVMe model (Microsoft NVMe Direct Disk)")
    if len(nvme) > 1:
        if system.has_command("mdadm"):
            return Disk(_raid(system, nvme), "a RAID-0 of the NVMe local disks " + " ".join(nvme))
        log.warning(
            "%d NVMe local disks and no mdadm to join them: using %s, leaving %s unused",
            len(nvme),
            nvme[0],
            " ".join(nvme[1:]),
        )
        return Disk(nvme[0], "its NVMe model (Microsoft NVMe Direct Disk)")
    return None
