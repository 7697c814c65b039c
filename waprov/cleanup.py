"""State cleanups shared by the changed-VM-id case (WA §7.3) and deprovisioning (WA §7.2).

Each function removes through System, so a dry run lists exactly what a real run
removes. Nothing outside the named paths and globs is touched.
"""

from __future__ import annotations

import os
import re

from waprov.config import Config
from waprov.distro import Distro
from waprov.system import System

LEASE_DIRS = ("/var/lib/dhclient", "/var/lib/dhcpcd", "/var/lib/dhcp")
LEASE_GLOBS = (
    "/var/db/dhclient.leases.*",
    "/var/lib/NetworkManager/dhclient-*.lease",
    "/run/systemd/netif/leases/*",
)
GOAL_STATE_FILES = (
    "HostingEnvironmentConfig.xml",
    "Incarnation",
    "partition",
    "Protocol",
    "SharedConfig.xml",
    "WireServerEndpoint",
    "published_hostname",
    "fast_track.json",
    "initial_goal_state",
    "waagent_rsm_update",
    "waagent_initial_update",
)
GOAL_STATE_GLOBS = ("Extensions.*.xml", "ExtensionsConfig.*.xml", "GoalState.*.xml")
HANDLER_DIR = re.compile(r"^(?!WALinuxAgent-).+-\d+(\.\d+)+$")
HANDLER_STATE_GLOBS = ("status/*.status", "config/*.settings", "config/HandlerStatus", "mrseq")
GA_DROPINS = ("10-Slice.conf", "11-CPUAccounting.conf", "12-CPUQuota.conf", "13-MemoryAccounting.conf")


def empty_dir(system: System, directory: str) -> None:
    for path in system.glob(os.path.join(directory, "*")) + system.glob(os.path.join(directory, ".*")):
        system.remove(path, recursive=True)


def empty_dirs(system: System, *dirs: str) -> None:
    """Remove what the existing directories among `dirs` hold; they stay."""
    for directory in dirs:
        if system.kind(directory) == "dir":
            empty_dir(system, directory)


def remove_dhcp_leases(system: System) -> None:
    empty_dirs(system, *LEASE_DIRS)
    for pattern in LEASE_GLOBS:
        for path in system.glob(pattern):
            system.remove(path, recursive=True)


def remove_goal_state(system: System, config: Config) -> None:
    lib = config.lib_dir
    for name in GOAL_STATE_FILES:
        system.remove(os.path.join(lib, name))
    for pattern in GOAL_STATE_GLOBS:
        for path in system.glob(os.path.join(lib, pattern)):
            system.remove(path)
    for handler in system.glob(os.path.join(lib, "*")):
        if system.kind(handler) == "dir" and HANDLER_DIR.match(os.path.basename(handler)):
            for pattern in HANDLER_STATE_GLOBS:
                for path in system.glob(os.path.join(handler, pattern)):
                    system.remove(path)


def remove_ga_unit_files(system: System, config: Config, distro: Distro) -> None:
    unit_dir = "/etc/systemd/system" if distro.flatcar else "/lib/systemd/system"
    service = "walinuxagent" if distro.ubuntu else "waagent"
    system.remove(os.path.join(unit_dir, "waagent-network-setup.service"))
    system.remove(os.path.join(config.lib_dir, "waagent-network-setup.py"))
    for name in GA_DROPINS:
        system.remove(os.path.join(unit_dir, f"{service}.service.d", name))
    system.remove(os.path.join(unit_dir, "azure-walinuxagent-logcollector.slice"))


def changed_vm_cleanup(system: System, config: Config, distro: Distro) -> None:
    """WA §7.3: what a VM made from a non-generalized image clears (no prompt)."""
    remove_dhcp_leases(system)
    remove_goal_state(system, config)
    remove_ga_unit_files(system, config, distro)
