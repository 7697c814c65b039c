"""The provisioning DVD: find it, mount it, read ovf-env.xml, unmount and eject (WA §4.2).

The device is the first `/dev` entry, in directory order, that starts with
`sr[0-9] hd[c-z] cdrom[0-9] cd[0-9] vd[b-z]`. If it is already mounted, it is read where
it is (and left as found); otherwise it is mounted read-only at `DVD.MountPoint` with
`-t udf,iso9660,vfat`, 5 attempts 5 s apart, and unmounted and ejected after the read
(no eject for vd* devices or on Flatcar). A kernel without udf (not in /proc/filesystems
and `modprobe udf` fails) gets one attempt and an error that says so.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Tuple

from waprov.errors import HostError, ProtocolError
from waprov.ovf import MAX_OVF_BYTES
from waprov.system import System
from waprov.timing import Clock

DVD_PATTERN = re.compile(r"(sr[0-9]|hd[c-z]|cdrom[0-9]|cd[0-9]|vd[b-z])")
MOUNT_ATTEMPTS = 5
MOUNT_WAIT = 5.0
MAX_READ = MAX_OVF_BYTES + 1  # one byte more, so that the parser sees it is too large
log = logging.getLogger("waprov")
# (device, mount point) pairs of the current mount table
MountTable = Callable[[], Iterable[Tuple[str, str]]]


class NoDvdError(ProtocolError):
    """There is no provisioning DVD device: IMDS may still provision the VM."""


def system_mounts() -> List[Tuple[str, str]]:
    import psutil  # here: only a DVD device to mount needs the mount table (not a saved or given OVF)

    return [(p.device, p.mountpoint) for p in psutil.disk_partitions(all=True)]


def find_dvd_device(system: System) -> str:
    """WALinuxAgent's rule: unsorted listing, prefix match, `/dev/<matched part>`."""
    try:
        names = os.listdir(system.path("/dev"))
    except OSError as e:
        raise NoDvdError(f"Failed to get dvd device from /dev: {e.strerror}") from None
    for name in names:
        m = DVD_PATTERN.match(name)
        if m:
            return "/dev/" + m.group(0)
    raise NoDvdError(
        "Failed to get dvd device from /dev: no provisioning DVD device "
        "(no entry matches sr[0-9], hd[c-z], cdrom[0-9], cd[0-9] or vd[b-z])"
    )


def _same_device(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return sa.st_rdev != 0 and sa.st_rdev == sb.st_rdev


def mounted_at(system: System, device: str, mounts: MountTable) -> Optional[str]:
    """Where `device` is mounted now, if it is."""
    real = system.path(device)
    for dev, mountpoint in mounts():
        if dev.startswith("/") and _same_device(system.path(dev), real):
            return mountpoint
    return None


def udf_available(system: System) -> Tuple[bool, str]:
    """(True, "") when the kernel can mount udf, loading the module if needed; else
    (False, why)."""

    def listed() -> bool:
        try:
            with open(system.path("/proc/filesystems"), encoding="utf-8", errors="replace") as f:
                return any(line.split()[-1:] == ["udf"] for line in f)
        except OSError:
            return False

    if listed():
        return True, ""
    try:
        res = system.run(["modprobe", "udf"], check=False, timeout=30)
    except HostError as e:  # modprobe itself is missing
        return False, str(e)
    if res.rc == 0 and listed():
        return True, ""
    out = (res.stderr or res.stdout).strip().splitlines()
    return False, f"exit code {res.rc}" + (f": {out[-1]}" if out else "")


@dataclass(frozen=True)
class DvdMount:
    device: str
    mount_point: str
    ours: bool  # mounted by this run: unmount and eject afterwards


def mount_dvd(system: System, clock: Clock, device: str, mount_point: str, mounts: MountTable) -> DvdMount:
    where = mounted_at(system, device, mounts)
    if where is not None:
        log.info("The provisioning DVD %s is already mounted at %s", device, where)
        return DvdMount(device, where, ours=(where == mount_point))
    ok, why = udf_available(system)
    if not ok:
        log.warning("udf is not available (%s): trying iso9660 and vfat only", why)
    if not os.path.isdir(system.path(mount_point)):
        system.makedirs(mount_point, 0o755)
    attempts = MOUNT_ATTEMPTS if ok else 1
    argv = ["mount", "-o", "ro", "-t", "udf,iso9660,vfat", device, mount_point]
    output = ""
    for attempt in range(1, attempts + 1):
        res = system.run(argv, check=False, timeout=60)
        if res.rc == 0:
            return DvdMount(device, mount_point, ours=True)
        output = (res.stderr or res.stdout).strip().replace("\n", " | ")
        log.warning("Mounting the provisioning DVD failed (attempt %d of %d): %s", attempt, attempts, output)
        if attempt < attempts:
            clock.sleep(MOUNT_WAIT, "dvd mount")
    if not ok:
        raise ProtocolError(
            f"[CopyOvfEnv] Error mounting dvd: the kernel cannot mount udf: udf is not in /proc/filesystems "
            f"and modprobe udf failed ({why}); mount {device} said: {output}"
        )
    raise ProtocolError(f"[CopyOvfEnv] Error mounting dvd: Failed to mount dvd device {device}: {output}")


def read_ovf_file(system: System, directory: str) -> bytes:
    path = os.path.join(directory, "ovf-env.xml")
    try:
        with open(system.path(path), "rb") as f:
            return f.read(MAX_READ)
    except OSError as e:
        raise ProtocolError(f"[CopyOvfEnv] Error reading file {path}: {e.strerror}") from None


def release_dvd(system: System, dvd: DvdMount, distro_id: str, eject: bool = True) -> None:
    """Unmount and (`eject`) eject, best effort, only what this run mounted."""
    if not dvd.ours:
        return
    res = system.run(["umount", dvd.mount_point], check=False, timeout=60)
    if res.rc != 0:
        log.warning("umount %s failed: %s", dvd.mount_point, res.stderr.strip())
    if eject:
        eject_dvd(system, dvd.device, distro_id)


def eject_dvd(system: System, device: str, distro_id: str) -> None:
    """WALinuxAgent's eject, best effort (not a vd[b-z] disk, not on Flatcar)."""
    name = os.path.basename(device)
    if re.match(r"vd[b-z]", name) or distro_id == "flatcar":
        return
    try:
        res = system.run(["eject", device], check=False, timeout=60)
    except HostError as e:  # eject not installed
        log.warning("eject %s failed: %s", device, e)
        return
    if res.rc != 0:
        log.warning("eject %s failed: %s", device, res.stderr.strip())
