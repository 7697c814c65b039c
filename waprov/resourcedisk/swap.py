"""The swapfile on the resource disk (WA §8 step 9).

`<mount point>/swapfile` of exactly `ResourceDisk.SwapSizeMB` MiB, mode 0600: an active
swapfile of that size is left alone (group/other bits removed: WALinuxAgent's "Swap
already enabled"); another size is swapped off and recreated. Created with fallocate,
else dd in 1 MiB blocks (the exact size, unlike WA's dd). If mkswap or swapon fails the
file is removed, so no partial swapfile stays behind.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Dict

from waprov.config import Config
from waprov.errors import ConfigError, HostError
from waprov.resourcedisk.mount import Mounted
from waprov.system import HostPath, System

log = logging.getLogger("waprov")

MIB = 1024 * 1024
SWAPFILE = "swapfile"


def active_swaps(system: System) -> Dict[str, int]:
    """{path: size in bytes} of the active swap areas (`swapon --show`)."""
    res = system.query(["swapon", "--show=NAME,SIZE", "--bytes", "--raw", "--noheadings"], check=True)
    swaps = {}
    for line in res.stdout.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].isdigit():
            name = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), fields[0])
            swaps[name] = int(fields[1])
    return swaps


def check_swap_settings(config: Config) -> int:
    """The swapfile size in bytes; ConfigError for a size that cannot be right."""
    mb = config.resource_disk_swap_size_mb
    if mb <= 0:
        raise ConfigError(
            config.source or "built-in defaults",
            f"ResourceDisk.SwapSizeMB={mb}: ResourceDisk.EnableSwap=y needs a positive size",
        )
    return mb * MIB


def _create(system: System, config: Config, path: str, size: int) -> None:
    system.write(path, b"", 0o600)  # the mode is right before a byte of swap exists
    if config.resource_disk_filesystem == "btrfs":
        system.run(["chattr", "+C", HostPath(path)])  # btrfs swaps only on a no-copy-on-write file
    made = system.run(["fallocate", "-l", str(size), HostPath(path)], check=False)
    if made.rc != 0:
        log.info("fallocate failed (%s): writing %s with dd", made.stderr.strip(), path)
        count = size // MIB
        system.run(["dd", "if=/dev/zero", HostPath(path, "of="), "bs=1M", f"count={count}", "status=none"])
    system.run(["mkswap", HostPath(path)])


def enable_swap(system: System, config: Config, mounted: Mounted) -> None:
    """Ensure the swapfile is active at the configured size."""
    size = check_swap_settings(config)
    path = os.path.join(mounted.mount_point, SWAPFILE)
    swaps = {} if mounted.planned else active_swaps(system)
    current = system.size(path)
    if path in swaps and current == size:
        log.info("Swap already enabled")
        mode_owner = system.mode_owner(path)
        if mode_owner is not None and mode_owner[0] & 0o077:
            system.chmod(path, mode_owner[0] & ~0o077)
        return
    if current is not None and current != size:
        log.info("Remove old swap file %s (%d bytes, %d wanted)", path, current, size)
        if path in swaps:
            system.run(["swapoff", HostPath(path)])
        system.remove(path)
        current = None
    created = current is None
    if created:
        log.info("Create swap file %s", path)
    try:
        if created:
            _create(system, config, path, size)
        else:
            system.chmod(path, 0o600)
        res = system.run(["swapon", HostPath(path)], check=False)
        if res.rc != 0 and not created:  # an old file that is no swap area: make it again
            log.info("swapon %s failed (%s): recreating it", path, res.stderr.strip())
            system.remove(path)
            created = True
            _create(system, config, path, size)
            res = system.run(["swapon", HostPath(path)], check=False)
        if res.rc != 0:
            raise HostError(f"swapon {path} failed: {res.stderr.strip() or res.rc}")
    except HostError:
        if created and not system.dry_run:
            system.remove(path)
        raise
    log.info("Enabled %dKB of swap at %s", size // 1024, path)
