"""`waprov -resourcedisk`: the resource disk and its swapfile, at every boot (WA §8).

Independent of provisioning. `ResourceDisk.Format=n` → nothing (said so). Otherwise: find
the disk (disk.py), partition/format/mount it and write the DATALOSS README (mount.py),
then the swapfile when `ResourceDisk.EnableSwap=y` (swap.py). The end state is the one
WALinuxAgent's own pass checks for, so the GA finds nothing to do. Exit 0 done (or no
resource disk on this VM), 1 failed, 2 bad config.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Mapping, Optional

from waprov.config import Config
from waprov.errors import HostError
from waprov.overrides import Overrides
from waprov.resourcedisk.disk import find_resource_disk
from waprov.resourcedisk.mount import check_settings, mount, write_warning
from waprov.resourcedisk.swap import enable_swap
from waprov.system import System
from waprov.timing import Clock

log = logging.getLogger("waprov")


def disk_size(system: System, device: str) -> int:
    """The size in bytes the kernel reports for `device` (0: no media, detached)."""
    name = os.path.basename(system.realpath(device))
    raw = system.read(f"/sys/class/block/{name}/size", limit=64)
    try:
        return int((raw or b"").strip()) * 512
    except ValueError:
        return 0


def run(system: System, config: Config, overrides: Overrides, clock: Clock) -> int:
    source = config.source or "built-in defaults"
    if not config.resource_disk_format:
        log.info("ResourceDisk.Format=n (%s): the resource disk is left alone", source)
        return 0
    check_settings(system, config)
    disk = find_resource_disk(system, overrides.resource_disk)
    if disk is None:
        log.info("This VM has no resource disk (no vmbus resource disk, no NVMe local disk): nothing to do")
        if config.resource_disk_enable_swap:
            log.warning("ResourceDisk.EnableSwap=y, but there is no resource disk to hold the swapfile")
        return 0
    log.info("Activate resource disk %s (found by %s)", disk.device, disk.found_by)
    if not system.dry_run and disk_size(system, disk.device) == 0:
        raise HostError(f"resource disk {disk.device} has no media (size 0): it vanished or was detached")
    mounted = mount(system, config, clock, disk.device)
    write_warning(system, mounted)
    if config.resource_disk_enable_swap:
        enable_swap(system, config, mounted)
    return 0


def main(conf_path: Optional[str], dry_run: bool, verbose: bool, environ: Mapping[str, str]) -> int:
    """The command: configuration and overrides, then run()."""
    from waprov.config import load_config
    from waprov.overrides import overrides_from_env
    from waprov.start import host_system

    config = load_config(conf_path)
    overrides = overrides_from_env(environ)
    system = host_system(dry_run, verbose or config.logs_verbose)
    started = time.monotonic()
    try:
        rc = run(system, config, overrides, Clock(overrides.retry_scale))
    except HostError as e:
        raise HostError(f"Failed to set up the resource disk: {e}") from None
    log.info(
        "Resource disk pass done (%.3fs, of which %.3fs in commands)",
        time.monotonic() - started,
        system.command_seconds,
    )
    if dry_run:
        print("Plan (dry run: nothing was changed):")
        print(system.plan())
    return rc
