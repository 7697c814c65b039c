"""The RHEL family and SUSE as data (waprov/distro.py) and the host-name rules that read it
(steps/hostname.py, network.py), with a root prefix and a scripted runner; values from WA §5.1a
(WALinuxAgent 2.15's factory.py, redhat.py, suse.py, fedora.py)."""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import pytest

from tests.conftest import on_host, virtual_clock, waits
from tests.fakerunner import ScriptedRunner, fail, ok
from waprov.config import Config
from waprov.distro import DHCLIENT, IFCFG, SUSE_DHCP, Distro, version_tuple
from waprov.model import ProvisioningData
from waprov.network import nm_controlled, parse_routes, primary_interface, reannounce
from waprov.steps import Ctx
from waprov.steps.hostname import dhcp_interface, set_hostname, tell_dhcp_client
from waprov.system import System


def rel(os_id: str, version: str = "", like: str = "") -> Dict[str, str]:
    return {"ID": os_id, "VERSION_ID": version, "ID_LIKE": like}


MODERN_SSHD = ("systemctl", "condrestart", "sshd")
OLD_SSHD = ("/sbin/service", "sshd", "condrestart")
HOSTNAMECTL_STATIC = ("hostnamectl", "set-hostname", "h", "--static")
BOUNCE = (("ip", "link", "set", "eth0", "down"), ("ip", "link", "set", "eth0", "up"))
IFDOWN_IFUP = (("ifdown", "eth0"), ("ifup", "eth0"))
NM_MODERN = ("systemctl", "restart", "NetworkManager")
NM_OLD = ("service", "NetworkManager", "restart")
MODERN = (HOSTNAMECTL_STATIC, MODERN_SSHD, IFCFG, NM_MODERN, True, BOUNCE)  # RedhatOSModernUtil
RHEL7 = (HOSTNAMECTL_STATIC, OLD_SSHD, IFCFG, NM_OLD, False, IFDOWN_IFUP)  # RedhatOSUtil
RHEL6 = (("hostname", "h"), OLD_SSHD, IFCFG, (), False, IFDOWN_IFUP)  # Redhat6xOSUtil
SUSE = (("hostnamectl", "set-hostname", "h"), ("systemctl", "restart", "sshd.service"), SUSE_DHCP, (), False,
        (("ifup", "eth0"),))  # fmt: skip
DEBIAN_SSHD = ("systemctl", "--job-mode=ignore-dependencies", "try-reload-or-restart", "ssh")
# os-release -> (hostname argv, sshd restart, DHCP file rule, NetworkManager restart, always, restart_if)
FAMILIES: List[Tuple[Dict[str, str], Tuple[Any, ...]]] = [
    (rel("rhel", "9.4", "fedora"), MODERN),
    (rel("rhel", "8.6", "fedora"), MODERN),
    (rel("rhel", "8.5", "fedora"), RHEL7),
    (rel("centos", "7"), RHEL7),
    (rel("rhel", "6.10"), RHEL6),
    (rel("ol", "8.10", "fedora"), MODERN),  # 8.10 is after 8.6
    (rel("rocky", "8.5", "rhel centos fedora"), RHEL7),
    (rel("almalinux", "9.4", "rhel centos fedora"), MODERN),
    (rel("rhel"), MODERN),  # no VERSION_ID: the newest
    (rel("sles", "15.5", "suse"), SUSE),
    (rel("opensuse-leap", "15.5", "suse opensuse"), SUSE),
    (rel("sles_sap", "15.5", "suse"), SUSE),
    (rel("fedora", "40"), (("hostname", "h"), ("systemctl", "restart", "sshd"), DHCLIENT, (), False, BOUNCE)),
    (rel("debian", "12"), (("hostname", "h"), DEBIAN_SSHD, DHCLIENT, (), False, ())),
]


@pytest.mark.parametrize(
    ("release", "expected"), FAMILIES, ids=[f"{r['ID']}-{r['VERSION_ID']}" for r, _ in FAMILIES]
)
def test_each_family_and_version_gets_walinuxagents_data(
    release: Dict[str, str], expected: Tuple[Any, ...]
) -> None:
    d = Distro.detect(release)
    got = (d.hostname_argv("h"), d.sshd_restart, d.dhcp_hostname, d.nm_restart, d.nm_restart_always,
           d.restart_if_argvs("eth0"))  # fmt: skip
    assert got == expected
    assert d.sysconfig_hostname == (release["VERSION_ID"] == "6.10")


@pytest.mark.parametrize(
    ("text", "numbers"), [("8.10", (8, 10)), ("9", (9,)), ("15-SP5", (15,)), ("", ()), ("rolling", ())]
)
def test_version_numbers(text: str, numbers: Tuple[int, ...]) -> None:
    assert version_tuple(text) == numbers


# ---- the interface whose ifcfg names the host ----------------------------------------------------


def nic(root: Any, name: str, index: int, flags: str = "0x1002", master: Optional[str] = None) -> None:
    d = root / "sys/class/net" / name
    d.mkdir(parents=True)
    (d / "ifindex").write_text(f"{index}\n")
    (d / "flags").write_text(f"{flags}\n")
    if master:
        os.symlink(f"../{master}", d / "master")


ROUTES = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"


def test_without_a_route_the_first_nic_by_ifindex_that_is_neither_loopback_nor_enslaved(
    tmp_path: Any,
) -> None:
    nic(tmp_path, "lo", 1, "0x9")
    nic(tmp_path, "enP1s1", 2, master="eth1")  # accelerated networking's VF, under the synthetic NIC
    nic(tmp_path, "eth1", 4)
    nic(tmp_path, "eth0", 3)
    system = System(root=str(tmp_path))
    assert dhcp_interface(system, []) == "eth0"
    assert dhcp_interface(system, parse_routes(ROUTES)) == "eth0"
    default = ROUTES + "eth1\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\n"
    assert dhcp_interface(system, parse_routes(default)) == "eth1"  # the default route's, as WALinuxAgent's
    assert dhcp_interface(System(root=str(tmp_path / "none")), []) is None


def test_the_default_route_with_the_lowest_metric_is_the_primary() -> None:
    two = (ROUTES + "eth0\t00000000\t0100000A\t0003\t0\t0\t600\t00000000\n"
           "eth1\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\n")  # fmt: skip
    assert primary_interface(parse_routes(two), [("eth0", True), ("eth1", True)]) == ("eth1", True)


# ---- the DHCP client told the name, per family -----------------------------------------------------


def write(root: Any, path: str, text: str, mode: int = 0o644) -> None:
    full = root / path.lstrip("/")
    full.parent.mkdir(parents=True, exist_ok=True)
    full.write_text(text)
    full.chmod(mode)


def read(root: Any, path: str) -> Optional[str]:
    full = root / path.lstrip("/")
    return full.read_text() if full.exists() else None


RHEL = Distro.detect(rel("rhel", "9.4", "fedora"))
SLES = Distro.detect(rel("sles", "15.5", "suse"))
IFCFG_ETH0 = "/etc/sysconfig/network-scripts/ifcfg-eth0"
DHCP_FILE = "/etc/sysconfig/network/dhcp"


def test_rhel_writes_dhcp_hostname_to_the_ifcfg_with_its_mode_and_not_dhclient_conf(tmp_path: Any) -> None:
    nic(tmp_path, "eth0", 2)
    write(tmp_path, IFCFG_ETH0, "DEVICE=eth0\n\nDHCP_HOSTNAME=old\nONBOOT=yes\n", 0o600)
    write(tmp_path, "/etc/dhcp/dhclient.conf", "timeout 300;\n")
    tell_dhcp_client(System(root=str(tmp_path)), RHEL, "vm", [])
    assert read(tmp_path, IFCFG_ETH0) == "DEVICE=eth0\nONBOOT=yes\nDHCP_HOSTNAME=vm\n"
    assert os.stat(tmp_path / IFCFG_ETH0.lstrip("/")).st_mode & 0o777 == 0o600
    assert read(tmp_path, "/etc/dhcp/dhclient.conf") == "timeout 300;\n"  # WA's RHEL code does not touch it


def test_a_missing_or_unusable_file_is_a_warning_naming_it(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    nic(tmp_path, "eth0", 2)
    system = System(root=str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="waprov"):
        tell_dhcp_client(system, RHEL, "vm", [])
        tell_dhcp_client(system, SLES, "vm", [])
    assert [r.getMessage().split()[0] for r in caplog.records] == [IFCFG_ETH0, DHCP_FILE]
    assert all("is missing" in r.getMessage() for r in caplog.records)
    assert read(tmp_path, IFCFG_ETH0) is None and read(tmp_path, DHCP_FILE) is None
    caplog.clear()
    write(tmp_path, DHCP_FILE, "A=1 # an inline comment\n")
    with caplog.at_level(logging.WARNING, logger="waprov"):
        tell_dhcp_client(system, SLES, "vm", [])
    assert "left as it is" in caplog.text and "line 1" in caplog.text
    assert read(tmp_path, DHCP_FILE) == "A=1 # an inline comment\n"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="waprov"):
        tell_dhcp_client(System(root=str(tmp_path / "no-nic")), RHEL, "vm", [])
    assert "No network interface" in caplog.text


def test_suse_sets_the_option_in_place_unless_auto(tmp_path: Any) -> None:
    write(tmp_path, DHCP_FILE, '## Type: string\nDHCLIENT_HOSTNAME_OPTION=""\nX="y"\n')
    system = System(root=str(tmp_path))
    tell_dhcp_client(system, SLES, "vm", [])
    assert read(tmp_path, DHCP_FILE) == '## Type: string\nDHCLIENT_HOSTNAME_OPTION="vm"\nX="y"\n'
    write(tmp_path, DHCP_FILE, "DHCLIENT_HOSTNAME_OPTION='AUTO'\n")
    tell_dhcp_client(system, SLES, "vm", [])
    assert read(tmp_path, DHCP_FILE) == "DHCLIENT_HOSTNAME_OPTION='AUTO'\n"


def test_a_dry_run_plans_the_write_and_changes_nothing(tmp_path: Any) -> None:
    write(tmp_path, DHCP_FILE, 'DHCLIENT_HOSTNAME_OPTION=""\n')
    system = System(root=str(tmp_path), dry_run=True)
    tell_dhcp_client(system, SLES, "vm", [])
    assert read(tmp_path, DHCP_FILE) == 'DHCLIENT_HOSTNAME_OPTION=""\n'
    assert [str(a).split()[:2] for a in system.actions] == [["write", DHCP_FILE]]


NM_VALUES = [('"no"', False), ("n", False), ("'n'", False), ("yes", True), (None, True)]


@pytest.mark.parametrize(("value", "controlled"), NM_VALUES)
def test_nm_controlled_is_read_as_walinuxagent_reads_it(
    tmp_path: Any, value: Optional[str], controlled: bool
) -> None:
    if value is not None:
        write(tmp_path, IFCFG_ETH0, f"DEVICE=eth0\nNM_CONTROLLED={value}\n")
    assert nm_controlled(System(root=str(tmp_path)), "eth0") is controlled


def test_rhel6_sets_hostname_in_sysconfig_network_too(tmp_path: Any) -> None:
    nic(tmp_path, "eth0", 2)
    write(tmp_path, "/etc/sysconfig/network", "NETWORKING=yes\nHOSTNAME=old\n\n")
    write(tmp_path, IFCFG_ETH0, "DEVICE=eth0\n")
    (tmp_path / "var/lib/waagent").mkdir(parents=True)
    runner = ScriptedRunner(hostname=ok)
    ctx = ctx_for(tmp_path, runner, Distro.detect(rel("rhel", "6.10")))
    set_hostname(ctx)
    assert read(tmp_path, "/etc/sysconfig/network") == "NETWORKING=yes\nHOSTNAME=vm\n"
    assert read(tmp_path, IFCFG_ETH0) == "DEVICE=eth0\nDHCP_HOSTNAME=vm\n"
    assert runner.calls == [["hostname", "vm"]]


# ---- the re-announce, per family ---------------------------------------------------------------------


def ctx_for(tmp_path: Any, runner: ScriptedRunner, distro: Distro) -> Ctx:
    system = System(root=str(tmp_path), runner=runner)
    pd = ProvisioningData(hostname="vm", username="azureuser")
    return Ctx(system, Config(), distro, pd, virtual_clock(), "ID")


UP = [("lo", True), ("eth0", True)]


def test_rhel_modern_restarts_networkmanager_then_bounces_the_link(tmp_path: Any) -> None:
    runner = ScriptedRunner(systemctl=ok, ip=ok)
    reannounce(*on_host(ctx_for(tmp_path, runner, RHEL)), lambda: UP)
    assert runner.calls == [["systemctl", "restart", "NetworkManager"], ["ip", "link", "set", "eth0", "down"],
                            ["ip", "link", "set", "eth0", "up"]]  # fmt: skip


@pytest.mark.parametrize(("ifcfg", "restart"), [("NM_CONTROLLED=no\n", True), ("NM_CONTROLLED=yes\n", False),
                                                (None, False)])  # fmt: skip
def test_rhel7_restarts_networkmanager_only_when_it_does_not_manage_the_nic(
    tmp_path: Any, ifcfg: Optional[str], restart: bool
) -> None:
    if ifcfg is not None:
        write(tmp_path, IFCFG_ETH0, ifcfg)
    runner = ScriptedRunner(service=fail("no such service"), ifdown=ok, ifup=ok)
    reannounce(*on_host(ctx_for(tmp_path, runner, Distro.detect(rel("rhel", "8.4")))), lambda: UP)
    nm = [["service", "NetworkManager", "restart"]] if restart else []
    assert runner.calls == [*nm, ["ifdown", "eth0"], ["ifup", "eth0"]]  # its failure ignored


def test_suse_runs_ifup_and_tries_it_three_times_when_it_fails(tmp_path: Any) -> None:
    runner = ScriptedRunner(ifup=ok)
    reannounce(*on_host(ctx_for(tmp_path, runner, SLES)), lambda: UP)
    assert runner.calls == [["ifup", "eth0"]]
    runner = ScriptedRunner(ifup=fail("wicked: eth0 not configured"))
    ctx = ctx_for(tmp_path, runner, SLES)
    reannounce(*on_host(ctx), lambda: UP)
    assert runner.calls == [["ifup", "eth0"]] * 3 and waits(ctx.clock) == [5.0, 5.0]


def test_deprovision_resets_the_family_files_and_goes_on_without_them(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from waprov.deprovision import LOCALHOST, reset_hostname

    nic(tmp_path, "eth0", 2)
    write(tmp_path, IFCFG_ETH0, "DEVICE=eth0\nDHCP_HOSTNAME=vm\n")
    runner = ScriptedRunner(hostnamectl=fail("Failed to connect to bus"), hostname=ok)
    system = System(root=str(tmp_path), runner=runner)
    (tmp_path / "run/dbus").mkdir(parents=True)
    (tmp_path / "run/dbus/system_bus_socket").touch()
    reset_hostname(RHEL)(system)
    assert read(tmp_path, IFCFG_ETH0) == f"DEVICE=eth0\nDHCP_HOSTNAME={LOCALHOST}\n"
    assert read(tmp_path, "/etc/hostname") == LOCALHOST
    assert runner.calls == [["hostnamectl", "set-hostname", LOCALHOST, "--static"], ["hostname", LOCALHOST]]
    with caplog.at_level(logging.WARNING, logger="waprov"):
        reset_hostname(SLES)(system)  # no /etc/sysconfig/network/dhcp: a warning, no failure
    assert f"{DHCP_FILE} is missing" in caplog.text
