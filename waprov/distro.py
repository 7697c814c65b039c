"""Distribution differences as data (WA §2.3 step 8, §5.0, §5.1, §5.1a), chosen once from
os-release.

`Distro.detect(os_release)` gives the hostname command, the sshd restart command, whether
sshd settings go to Flatcar's drop-in, whether the DVD is ejected, which file tells the DHCP
client the host name, and how a host name is re-announced. No class per distribution: one
frozen record, filled from the tables below.

The families and versions are WALinuxAgent's (`osutil/factory.py`): the RHEL family (IDs
rhel, centos, ol, almalinux, rocky, cloudlinux) before 7 is its Redhat6x, 7 to 8.5 its
Redhat, 8.6 and later its RedhatOSModern; SUSE 12 and later its SUSE (SUSE 11 and RHEL 6
have no os-release, so they are reached only through a hand-written one). WALinuxAgent
matches os-release's ID only (through the `distro` package, which makes "ol" "oracle" and
"opensuse-leap" "opensuse"), so SLES for SAP ("sles_sap") and openSUSE Tumbleweed get its
defaults; here ID_LIKE counts too. An os-release without VERSION_ID is taken as the newest
version. Fedora itself is WALinuxAgent's FedoraOSUtil, not the RHEL family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Tuple

RHEL_IDS = ("rhel", "redhat", "centos", "ol", "oracle", "rocky", "almalinux", "cloudlinux")
RHEL_LIKE = ("rhel", "centos", "fedora")  # ID_LIKE words (Oracle Linux says only "fedora")
SUSE_LIKE = ("sles", "sles_sap", "sle_hpc", "sle-micro", "opensuse", "opensuse-leap", "suse")
MARINER_LIKE = ("mariner", "azurelinux")
HOSTNAMECTL = ("hostnamectl", "set-hostname")
# what tells the DHCP client the host name (steps/hostname.py):
DHCLIENT = "dhclient"  # send host-name in the dhclient.conf files that exist (WA's default)
IFCFG = "ifcfg"  # DHCP_HOSTNAME= in /etc/sysconfig/network-scripts/ifcfg-<primary interface>
SUSE_DHCP = "suse-dhcp"  # DHCLIENT_HOSTNAME_OPTION="<name>" in /etc/sysconfig/network/dhcp
IP_LINK_BOUNCE = (("ip", "link", "set", "{if}", "down"), ("ip", "link", "set", "{if}", "up"))
IFDOWN_IFUP = (("ifdown", "{if}"), ("ifup", "{if}"))

DEBIAN: Dict[str, Any] = dict(
    family="debian",
    sshd_restart=("systemctl", "--job-mode=ignore-dependencies", "try-reload-or-restart", "ssh"),
)
MARINER: Dict[str, Any] = dict(
    family="mariner", hostname_command=HOSTNAMECTL, hostname_suffix=("--static",),
    sshd_restart=("systemctl", "restart", "sshd"),
)  # fmt: skip
FEDORA: Dict[str, Any] = dict(  # WA's FedoraOSUtil: the default host name, `ip link` bounce
    family="fedora", sshd_restart=("systemctl", "restart", "sshd"), restart_if=IP_LINK_BOUNCE
)
RHEL6: Dict[str, Any] = dict(  # Redhat6xOSUtil
    family="rhel", sysconfig_hostname=True, dhcp_hostname=IFCFG,
    sshd_restart=("/sbin/service", "sshd", "condrestart"), restart_if=IFDOWN_IFUP,
)  # fmt: skip
RHEL7: Dict[str, Any] = dict(  # RedhatOSUtil (7 to 8.5)
    RHEL6, sysconfig_hostname=False, hostname_command=HOSTNAMECTL, hostname_suffix=("--static",),
    nm_restart=("service", "NetworkManager", "restart"),
)  # fmt: skip
RHEL_MODERN: Dict[str, Any] = dict(  # RedhatOSModernUtil (8.6 and later)
    RHEL7, sshd_restart=("systemctl", "condrestart", "sshd"),
    nm_restart=("systemctl", "restart", "NetworkManager"), nm_restart_always=True, restart_if=IP_LINK_BOUNCE,
)  # fmt: skip
SUSE: Dict[str, Any] = dict(  # SUSEOSUtil (12 and later)
    family="suse", hostname_command=HOSTNAMECTL, dhcp_hostname=SUSE_DHCP,
    sshd_restart=("systemctl", "restart", "sshd.service"), restart_if=(("ifup", "{if}"),),
)  # fmt: skip


def version_tuple(version: str) -> Tuple[int, ...]:
    """VERSION_ID's leading numbers ("8.10" -> (8, 10), "15-SP5" -> (15,)); () when none."""
    out = []
    for part in version.split("."):
        digits = ""
        for c in part:
            if not c.isdigit():
                break
            digits += c
        if not digits:
            break
        out.append(int(digits))
        if len(digits) != len(part):
            break
    return tuple(out)


def _before(version: Tuple[int, ...], bound: Tuple[int, ...]) -> bool:
    return bool(version) and version < bound


@dataclass(frozen=True)
class Distro:
    id: str = "linux"
    version: str = ""
    flatcar: bool = False  # sshd drop-in, no eject, `core` is not a system user, networkctl
    hostname_command: Tuple[str, ...] = ("hostname",)  # + the name (+ hostname_suffix)
    hostname_suffix: Tuple[str, ...] = ()
    sshd_restart: Tuple[str, ...] = ()  # empty: nothing to restart (WA's no-op distros)
    ubuntu: bool = False
    family: str = ""  # "rhel", "suse", "fedora", "mariner", "debian" or "" (shown in logs)
    sysconfig_hostname: bool = False  # /etc/sysconfig/network HOSTNAME=<name> (WA's Redhat6x)
    dhcp_hostname: str = DHCLIENT  # DHCLIENT, IFCFG or SUSE_DHCP
    # the re-announce: `nm_restart` first (always, or only when the interface's ifcfg says
    # NM_CONTROLLED=n|no), then `restart_if` with "{if}" the interface; () = by the network
    # stack that runs (networkctl reconfigure, nmcli device modify, ifdown + ifup)
    nm_restart: Tuple[str, ...] = ()
    nm_restart_always: bool = False
    restart_if: Tuple[Tuple[str, ...], ...] = ()

    @classmethod
    def detect(cls, os_release: Mapping[str, str]) -> Distro:
        did = os_release.get("ID", "linux").lower() or "linux"
        like = os_release.get("ID_LIKE", "").lower().split()
        version = os_release.get("VERSION_ID", "")
        family = [did, *like]
        if did in ("flatcar", "coreos"):
            return cls(did, version, flatcar=True)
        if did == "ubuntu":
            return cls(did, version, ubuntu=True, family="ubuntu")
        if did == "debian" or "debian" in like:
            return cls(did, version, **DEBIAN)
        if any(f in MARINER_LIKE for f in family):
            return cls(did, version, **MARINER)
        if did == "fedora":
            return cls(did, version, **FEDORA)
        if did in RHEL_IDS or any(f in RHEL_LIKE for f in like):
            v = version_tuple(version)
            data = RHEL6 if _before(v, (7,)) else RHEL7 if _before(v, (8, 6)) else RHEL_MODERN
            return cls(did, version, **data)
        if any(f in SUSE_LIKE for f in family):
            return cls(did, version, **SUSE)
        return cls(did, version)

    def hostname_argv(self, name: str) -> Tuple[str, ...]:
        return (*self.hostname_command, name, *self.hostname_suffix)

    def restart_if_argvs(self, ifname: str) -> Tuple[Tuple[str, ...], ...]:
        return tuple(tuple(ifname if a == "{if}" else a for a in argv) for argv in self.restart_if)
