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
import stat
from dataclasses import dataclass
from typing import Optional, Tuple

from waprov.errors import HostError, ProtocolError
from waprov.hostfile import Unreadable
from waprov.ovf import MAX_OVF_BYTES
from waprov.procfs import mounts
from waprov.system import HostPath, System
from waprov.timing import Clock

DVD_PATTERN = re.compile(r"(sr[0-9]|hd[c-z]|cdrom[0-9]|cd[0-9]|vd[b-z])")
MOUNT_ATTEMPTS = 5
MOUNT_WAIT = 5.0
MAX_READ = MAX_OVF_BYTES + 1  # one byte more, so that the parser sees it is too large
log = logging.getLogger("waprov")


class NoDvdError(ProtocolError):
    """There is no provisioning DVD device: IMDS may still provision the VM."""


def find_dvd_device(system: System) -> str:
    """WALinuxAgent's rule: unsorted listing, prefix match, `/dev/<matched part>`."""
    try:
        names = system.listdir("/dev")
    except HostError as e:
        raise NoDvdError(f"Failed to get dvd device from /dev: {e}") from None
    for name in names:
        m = DVD_PATTERN.match(name)
        if m:
            return "/dev/" + m.group(0)
    raise NoDvdError(
        "Failed to get dvd device from /dev: no provisioning DVD device "
        "(no entry matches sr[0-9], hd[c-z], cdrom[0-9], cd[0-9] or vd[b-z])"
    )


def _same_device(system: System, a: str, b: str) -> bool:
    if a == b:
        return True
    sa, sb = system.stat(a), system.stat(b)
    return sa is not None and sb is not None and sa.st_rdev != 0 and sa.st_rdev == sb.st_rdev


def mounted_at(system: System, device: str) -> Optional[str]:
    """Where `device` is mounted now, if it is."""
    for m in mounts(system):
        if m.device.startswith("/") and _same_device(system, m.device, device):
            return m.mountpoint
    return None


def udf_available(system: System) -> Tuple[bool, str]:
    """(True, "") when the kernel can mount udf, loading the module if needed; else
    (False, why)."""

    def listed() -> bool:
        try:
            text = (system.read("/proc/filesystems", limit=1 << 20) or b"").decode("utf-8", "replace")
        except HostError:
            return False
        return any(line.split()[-1:] == ["udf"] for line in text.splitlines())

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


def mount_dvd(system: System, clock: Clock, device: str, mount_point: str) -> DvdMount:
    where = mounted_at(system, device)
    if where is not None:
        log.info("The provisioning DVD %s is already mounted at %s", device, where)
        return DvdMount(device, where, ours=(where == mount_point))
    ok, why = udf_available(system)
    if not ok:
        log.warning("udf is not available (%s): trying iso9660 and vfat only", why)
    st = system.stat(mount_point)
    if st is None or not stat.S_ISDIR(st.st_mode):
        system.makedirs(mount_point, 0o755)
    attempts = MOUNT_ATTEMPTS if ok else 1
    argv = ["mount", "-o", "ro", "-t", "udf,iso9660,vfat", HostPath(device), HostPath(mount_point)]
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
        data = system.read(path, limit=MAX_READ, follow=True)
    except Unreadable as e:
        if e.refused and e.why.startswith("is too large"):  # the parser's words
            raise ProtocolError(f"ovf-env.xml is too large (more than {MAX_OVF_BYTES} bytes)") from None
        raise ProtocolError(f"[CopyOvfEnv] Error reading file {path}: {e.why}") from None
    if data is None:
        raise ProtocolError(f"[CopyOvfEnv] Error reading file {path}: No such file or directory")
    return data


def release_dvd(system: System, dvd: DvdMount, distro_id: str, eject: bool = True) -> None:
    """Unmount and (`eject`) eject, best effort, only what this run mounted."""
    if not dvd.ours:
        return
    res = system.run(["umount", HostPath(dvd.mount_point)], check=False, timeout=60)
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
        res = system.run(["eject", HostPath(device)], check=False, timeout=60)
    except HostError as e:  # eject not installed
        log.warning("eject %s failed: %s", device, e)
        return
    if res.rc != 0:
        log.warning("eject %s failed: %s", device, res.stderr.strip())
