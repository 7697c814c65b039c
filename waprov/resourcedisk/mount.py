"""Partition, format and mount the resource disk (WA §8 steps 2-7).

Already mounted → that mount point is used (WALinuxAgent's "already mounted"). Otherwise:
a blank disk gets a GPT label with one partition (an improvement: WA gives up); GPT with
more than one partition → one partition; MBR partition 1 of type 7 (NTFS) → type 83;
those three are formatted. Anything else is mounted as it is, and formatted only when
the mount fails and the partition does not already hold the configured filesystem (so a
rejected `ResourceDisk.MountOptions` never costs a reformat). Then the DATALOSS README.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

from waprov.config import Config
from waprov.errors import ConfigError, HostError
from waprov.resourcedisk.disk import mounts_of, partition
from waprov.system import HostPath, Result, System
from waprov.timing import Clock

log = logging.getLogger("waprov")

DATALOSS_FILE = "DATALOSS_WARNING_README.txt"
DATALOSS_WARNING = """\
WARNING: THIS IS A TEMPORARY DISK.

Any data stored on this drive is SUBJECT TO LOSS and THERE IS NO WAY TO RECOVER IT.

Please do not use this disk for storing any personal or application data.

For additional details to please refer to the MSDN documentation at :
http://msdn.microsoft.com/en-us/library/windowsazure/jj672979.aspx
"""
PARTITION_WAIT = 25.0  # WA: 5 attempts, 5 s apart
ALREADY_MOUNTED = 32  # mount's exit status, with "is already mounted" in its message


@dataclass(frozen=True)
class Mounted:
    """Where the resource disk is mounted; `planned`: only in a dry run's plan."""

    mount_point: str
    planned: bool = False


def _said(res: Result) -> str:
    """The last lines a failed command printed, on one line."""
    return " | ".join((res.stderr or res.stdout).strip().splitlines()[-3:]) or f"exit code {res.rc}"


def check_settings(system: System, config: Config) -> None:
    """Refuse unusable ResourceDisk.* values before anything is changed."""
    source = config.source or "built-in defaults"
    fs = config.resource_disk_filesystem
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", fs):
        raise ConfigError(source, f"ResourceDisk.Filesystem={fs!r}: not a filesystem name")
    if not system.has_command("mkfs." + fs):
        raise ConfigError(source, f"ResourceDisk.Filesystem={fs}: mkfs.{fs} is not installed")
    mp = config.resource_disk_mount_point
    if not mp.startswith("/") or os.path.normpath(mp) in ("/", "//"):
        raise ConfigError(source, f"ResourceDisk.MountPoint={mp!r}: expected an absolute path other than /")
    kind = system.kind(os.path.normpath(mp))
    if kind not in ("dir", "absent"):
        what = "a symbolic link" if kind == "link" else "not a directory"
        raise ConfigError(source, f"ResourceDisk.MountPoint={mp}: it exists and is {what}")


def mkfs_argv(fs: str, part: str) -> List[str]:
    return [f"mkfs.{fs}", "-f" if fs in ("xfs", "btrfs") else "-F", HostPath(part)]


def mount_argv(config: Config, part: str, mount_point: str) -> List[str]:
    opts = config.resource_disk_mount_options
    fs = config.resource_disk_filesystem
    return ["mount", "-t", fs, *(["-o", opts] if opts else []), HostPath(part), HostPath(mount_point)]


def read_table(system: System, device: str) -> Tuple[str, List[int]]:
    """(label, partition numbers) from `parted -m`; the label is `unknown` on a blank
    disk and `loop` for a filesystem on the whole disk."""
    res = system.query(["parted", "-s", "-m", HostPath(device), "unit", "B", "print"])
    label = None
    numbers = []
    for line in res.stdout.splitlines():
        fields = line.split(":")
        if line.startswith(system.path(device) + ":") and len(fields) > 5:  # the path as parted got it
            label = fields[5]
        elif fields[0].isdigit():
            numbers.append(int(fields[0]))
    if label is None:
        raise HostError(f"cannot read the partition table of {device}: {_said(res)}")
    return label, numbers


def prepare(system: System, config: Config, device: str) -> bool:
    """Make partition 1 the whole resource disk where WA §8 says so; True when it
    must be formatted."""
    label, numbers = read_table(system, device)
    log.info("Resource disk %s: partition table %s, partitions %s", device, label, numbers or "none")
    if label in ("unknown", "loop") or not numbers or (label == "msdos" and 1 not in numbers):
        log.info("Resource disk %s has no usable partition: creating one over the whole disk", device)
        if label == "loop":  # a filesystem on the whole disk: its signature goes first
            system.run(["wipefs", "-a", HostPath(device)])
        system.run(["parted", "-s", HostPath(device), "mklabel", "gpt", "mkpart", "primary", "0%", "100%"])
        return True
    if label == "gpt" and len(numbers) > 1:
        log.info("Resource disk %s: %d GPT partitions, replaced by one", device, len(numbers))
        for n in numbers:
            system.run(["parted", "-s", HostPath(device), "rm", str(n)])
        system.run(["parted", "-s", HostPath(device), "mkpart", "primary", "0%", "100%"])
        return True
    if label == "msdos":
        ptype = system.query(["sfdisk", "--part-type", HostPath(device), "1"]).stdout.strip()
        if ptype == "7" and config.resource_disk_filesystem != "ntfs":
            log.info("Resource disk %s: partition 1 is NTFS (type 7), changing it to 83", device)
            system.run(["sfdisk", "--part-type", HostPath(device), "1", "83"])
            return True
    return False


def wait_for_partition(system: System, clock: Clock, device: str, part: str) -> None:
    """The partition node must exist before mkfs/mount; ask the kernel (partx) once,
    then wait up to PARTITION_WAIT seconds, as WA does."""
    if system.dry_run or system.stat(part) is not None:
        return
    system.run(["partx", "-u", HostPath(device)], check=False)  # sfdisk's re-read may have dropped it
    deadline = clock.deadline(PARTITION_WAIT)
    while system.stat(part) is None:
        if clock.remaining(deadline) <= 0:
            raise HostError(f"partition {part} did not appear within {PARTITION_WAIT:g}s")
        clock.sleep(0.2, "partition node")


def _fs_type(system: System, part: str) -> str:
    return system.query(["blkid", "-p", "-o", "value", "-s", "TYPE", HostPath(part)]).stdout.strip()


def mount(system: System, config: Config, clock: Clock, device: str) -> Mounted:
    """Steps 2-6: the mount point of the resource disk, mounting it when needed."""
    mp = os.path.normpath(config.resource_disk_mount_point)
    existing = mounts_of(system, device)
    if existing:
        here = next((m for m in existing if m.mountpoint == mp), existing[0])
        if here.mountpoint == "/":
            raise HostError(f"{device} holds the root filesystem: it is not a resource disk")
        log.info("Resource disk [%s] is already mounted [%s]", here.device, here.mountpoint)
        return Mounted(here.mountpoint)
    system.makedirs(mp, 0o755)
    fs = config.resource_disk_filesystem
    formatted = prepare(system, config, device)
    part = partition(device)
    wait_for_partition(system, clock, device, part)
    if formatted:
        system.run(mkfs_argv(fs, part))
    res = system.run(mount_argv(config, part, mp), check=False)
    if res.rc == ALREADY_MOUNTED and "is already mounted" in res.stderr + res.stdout:
        log.warning("Could not mount resource disk: %s", res.stderr.strip())
    elif res.rc != 0:
        said = _said(res)
        found = _fs_type(system, part)
        if formatted or found == fs:
            what = "just formatted" if formatted else f"holds {fs}, not reformatted"
            raise HostError(f"cannot mount {part} ({what}) on {mp}: {said}")
        found = found or "no filesystem"
        log.warning("Mounting %s failed (%s; it holds %s): formatting it", part, said, found)
        system.run(mkfs_argv(fs, part))
        res = system.run(mount_argv(config, part, mp), check=False)
        if res.rc != 0:
            raise HostError(f"cannot mount {part} on {mp} after formatting it: {_said(res)}")
    if not system.dry_run and not any(m.mountpoint == mp for m in mounts_of(system, device)):
        raise HostError(f"{part} is not mounted on {mp} after mount succeeded")
    log.info("Resource disk %s is mounted at %s with %s", device, mp, fs)
    return Mounted(mp, planned=system.dry_run)


def write_warning(system: System, mounted: Mounted) -> None:
    """Step 7: the DATALOSS README, rewritten only when its bytes differ."""
    path = os.path.join(mounted.mount_point, DATALOSS_FILE)
    try:
        current: Optional[bytes] = None if mounted.planned else system.read(path, limit=1 << 16)
    except HostError:
        current = None
    if current != DATALOSS_WARNING.encode():
        system.write(path, DATALOSS_WARNING, 0o644)
