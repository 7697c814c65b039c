"""Distribution differences as data (WA §2.3 step 8, §5.0, §5.1), chosen once from os-release.

`Distro.detect(os_release)` gives the hostname command, the sshd restart command, whether
sshd settings go to Flatcar's drop-in, whether the DVD is ejected and how a hostname is
re-announced. No class per distribution: one frozen record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Tuple

RHEL_LIKE = ("rhel", "centos", "rocky", "almalinux", "ol", "fedora", "cloudlinux")
SUSE_LIKE = ("sles", "sles_sap", "opensuse", "opensuse-leap", "suse")
MARINER_LIKE = ("mariner", "azurelinux")
HOSTNAMECTL = ("hostnamectl", "set-hostname")
# (ID/ID_LIKE names, hostname command, its suffix, sshd restart), first match wins
FAMILIES = (
    (MARINER_LIKE, HOSTNAMECTL, ("--static",), ("systemctl", "restart", "sshd")),
    (RHEL_LIKE, HOSTNAMECTL, ("--static",), ("systemctl", "condrestart", "sshd")),
    (SUSE_LIKE, HOSTNAMECTL, (), ("systemctl", "restart", "sshd.service")),
)


@dataclass(frozen=True)
class Distro:
    id: str = "linux"
    version: str = ""
    flatcar: bool = False  # sshd drop-in, no eject, `core` is not a system user, networkctl
    hostname_command: Tuple[str, ...] = ("hostname",)  # + the name (+ hostname_suffix)
    hostname_suffix: Tuple[str, ...] = ()
    sshd_restart: Tuple[str, ...] = ()  # empty: nothing to restart (WA's no-op distros)
    ubuntu: bool = False

    @classmethod
    def detect(cls, os_release: Mapping[str, str]) -> Distro:
        did = os_release.get("ID", "linux").lower() or "linux"
        like = os_release.get("ID_LIKE", "").lower().split()
        version = os_release.get("VERSION_ID", "")
        family = [did, *like]
        if did in ("flatcar", "coreos"):
            return cls(did, version, flatcar=True)
        if did == "ubuntu":
            return cls(did, version, ubuntu=True)
        if did == "debian" or "debian" in like:
            return cls(
                did,
                version,
                sshd_restart=("systemctl", "--job-mode=ignore-dependencies", "try-reload-or-restart", "ssh"),
            )
        for names, hostname, suffix, restart in FAMILIES:
            if any(f in names for f in family):
                return cls(
                    did, version, hostname_command=hostname, hostname_suffix=suffix, sshd_restart=restart
                )
        return cls(did, version)

    def hostname_argv(self, name: str) -> Tuple[str, ...]:
        return (*self.hostname_command, name, *self.hostname_suffix)
