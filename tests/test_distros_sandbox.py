"""The RHEL family and SUSE in sandboxes, with their os-release (WA §5.1a).

Each case is a first boot as the units run it (the local phase before the network, then the
network phase) with one NIC that has no address yet (a dummy or ifb eth0), with and without the
distribution's sysconfig files. Then, in the same sandbox, the files are put back as they
were, eth0 gets an address (WALinuxAgent waits for one) and WALinuxAgent 2.7.3's own
`set_dhcp_hostname` (and, for RHEL 6, `set_hostname`) runs on them (tests/wa_sysconfig.py):
waprov's bytes must be its bytes. Without the files waprov warns, naming the file, and
provisions; WALinuxAgent raises there. Also: each family's re-announce and sshd restart
commands when the network was up before the name was set, and -deprovision's reset.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Dict, List, Optional

import pytest

from tests.inside_disk import WA_DIR
from tests.provisioning import ROOT, files, health_states, ovf, scenario

NAME = "distro-vm"
IFCFG = "/etc/sysconfig/network-scripts/ifcfg-eth0"
NETWORK = "/etc/sysconfig/network"
SUSE_DHCP = "/etc/sysconfig/network/dhcp"


def os_release(name: str, os_id: str, like: str, version: str) -> str:
    return f'NAME="{name}"\nVERSION="{version}"\nID="{os_id}"\nID_LIKE="{like}"\nVERSION_ID="{version}"\n'


RELEASES = {
    "rhel8": os_release("Red Hat Enterprise Linux", "rhel", "fedora", "8.4"),
    "rhel9": os_release("Red Hat Enterprise Linux", "rhel", "fedora", "9.4"),
    "alma": os_release("AlmaLinux", "almalinux", "rhel centos fedora", "9.4"),
    "rocky": os_release("Rocky Linux", "rocky", "rhel centos fedora", "8.9"),
    "oracle": os_release("Oracle Linux Server", "ol", "fedora", "8.10"),
    "sles15": os_release("SLES", "sles", "suse", "15.5"),
    "leap": os_release("openSUSE Leap", "opensuse-leap", "suse opensuse", "15.5"),
    "rhel6": os_release("Red Hat Enterprise Linux Server", "rhel", "fedora", "6.10"),  # none has one
}
# an ifcfg as the RHEL images on Azure have it; one with the key in the middle and blank lines
AZURE_IFCFG = ("DEVICE=eth0\nONBOOT=yes\nBOOTPROTO=dhcp\nTYPE=Ethernet\nUSERCTL=no\nPEERDNS=yes\n"
               "IPV6INIT=no\nNM_CONTROLLED=yes\nPERSISTENT_DHCLIENT=yes\n")  # fmt: skip
MIDDLE_IFCFG = (
    '# written by the image build\nDEVICE="eth0"\n\nDHCP_HOSTNAME=image\nBOOTPROTO="dhcp"\n\n# end\n'
)
SUSE_AUTO = ('## Path:\tSystem/Network/DHCP\n## Type:\tstring\n## Default:\t"AUTO"\n#\n'
             '# The host name sent in the DHCP request.\n#\nDHCLIENT_HOSTNAME_OPTION="AUTO"\n\n'
             '## Type:\tyesno\nDHCLIENT_SET_HOSTNAME="no"\n')  # fmt: skip
SUSE_EMPTY = SUSE_AUTO.replace('OPTION="AUTO"', 'OPTION=""')
# (os-release, WALinuxAgent's osutil in tests/wa_sysconfig.py, the files as the image has them)
CASES: Dict[str, tuple[str, str, Dict[str, str]]] = {
    "rhel8": ("rhel8", "rhel", {IFCFG: AZURE_IFCFG}),
    "rhel9": ("rhel9", "rhel", {IFCFG: MIDDLE_IFCFG}),
    "alma": ("alma", "rhel", {IFCFG: AZURE_IFCFG}),
    "rocky": ("rocky", "rhel", {IFCFG: MIDDLE_IFCFG}),
    "oracle": ("oracle", "rhel", {IFCFG: AZURE_IFCFG}),
    "sles15": ("sles15", "suse", {SUSE_DHCP: SUSE_AUTO}),  # AUTO: left alone by both
    "leap": ("leap", "suse", {SUSE_DHCP: SUSE_EMPTY}),
    "rhel6": ("rhel6", "rhel6", {IFCFG: AZURE_IFCFG, NETWORK: "NETWORKING=yes\nHOSTNAME=image\n\n"}),
}
# a NIC of this namespace alone (no veth peer beside it): dummy, or ifb where the kernel has no dummy
DUMMY_NIC = "ip link add eth0 type dummy 2>/dev/null || ip link add eth0 type ifb"
NIC_UP = "ip addr add 10.0.0.4/24 dev eth0 && ip link set eth0 up"


def wa_line(family: str, name: str) -> str:
    """Put the files back as they were before the run, then WALinuxAgent's own edit."""
    return (
        "rm -rf /etc/sysconfig && cp -a /run/orig/sysconfig /etc/ && "
        f"(ip -4 addr show dev eth0 | grep -q inet || {{ {NIC_UP}; }}) && "
        f"PYTHONPATH={WA_DIR} /usr/bin/python3 {ROOT}/tests/wa_sysconfig.py dhcp {family} {name}"
    )


def sysconfig(snapshot: Dict[str, Any]) -> Dict[str, Optional[bytes]]:
    return {
        p: base64.b64decode(e["data"])
        for p, e in snapshot.items()
        if e["type"] == "file" and p.startswith("/etc/sysconfig/")
    }


def run(
    tmp_path: Any, release: str, present: Dict[str, str], runs: List[Dict[str, Any]], **extra: Any
) -> Dict[str, Any]:
    # sysfs mounted again: /sys/class/net shows this network namespace's NICs, not the host's
    setup = ["mount -t sysfs sysfs /sys", DUMMY_NIC, *extra.pop("setup", []),
             "mkdir -p /etc/sysconfig /run/orig",
             "chmod 0640 /etc/sysconfig/network-scripts/ifcfg-eth0 2>/dev/null || true",
             "cp -a /etc/sysconfig /run/orig/"]  # fmt: skip
    return scenario(
        str(tmp_path),
        {"files": {"/etc/os-release": RELEASES[release], **present}, "setup": setup,
         "ovf": ovf(hostname=NAME), "runs": runs, "snapshot": ["/etc/sysconfig", "/var/lib/waprov"], **extra},
    )  # fmt: skip


@pytest.mark.parametrize("present", [True, False], ids=["files", "no-files"])
@pytest.mark.parametrize("case", list(CASES))
def test_the_dhcp_host_name_files_are_walinuxagents_bytes(tmp_path: Any, case: str, present: bool) -> None:
    release, family, image = CASES[case]
    given = image if present else {}
    runs = [
        {"args": ["-provision", "-local"]},
        {"snapshot": ["/etc/sysconfig"], "after": [wa_line(family, NAME)]},
    ]
    r = run(tmp_path, release, given, runs)
    local, network = r["runs"]
    assert (local["rc"], network["rc"]) == (0, 0), local["stderr"] + network["stderr"]
    assert health_states(r) == ["NotReady/Provisioning", "Ready"]
    assert r["hostname"] == NAME
    ours, theirs = sysconfig(network["snapshot"]), sysconfig(r["snapshot"])
    wa_run = network["after"][0]
    if present:
        assert wa_run["rc"] == 0, wa_run["stderr"]
        assert set(ours) == set(given) and ours == theirs, (ours, theirs)
        modes = {p: e["mode"] for p, e in network["snapshot"].items() if e["type"] == "file"}
        assert modes.get(IFCFG, 0o640) == 0o640  # the image's mode is kept
        changed = [p for p in given if ours[p] != given[p].encode()]
        assert changed == ([] if case == "sles15" else list(given)), changed
    else:
        assert ours == {} and theirs == {}  # nothing created
        assert wa_run["rc"] != 0 and "No such file or directory" in wa_run["stderr"]  # WALinuxAgent stops
        missing = [NETWORK, IFCFG] if case == "rhel6" else [IFCFG] if family != "suse" else [SUSE_DHCP]
        warned = [
            line for line in local["stderr"].splitlines() if "WARNING" in line and " is missing" in line
        ]
        assert [w.split(" is missing")[0].split()[-1] for w in warned] == missing, local["stderr"]
    assert "hostname:before-network" in files(r)["/var/lib/waprov/journal"]["bytes"].decode()


STAND_INS = ["mkdir -p /usr/local/sbin"] + [
    f"printf '#!/bin/sh\\necho \"{cmd} $*\" >> /run/commands.log\\n' > {path} && chmod 0755 {path}"
    for cmd, path in [
        ("systemctl", "/usr/local/sbin/systemctl"),
        ("service", "/usr/local/sbin/service"),
        ("/sbin/service", "/usr/sbin/service"),
        ("ifup", "/usr/local/sbin/ifup"),
        ("ifdown", "/usr/local/sbin/ifdown"),
    ]
]
ROUTED = [NIC_UP, "ip route add default via 10.0.0.1 dev eth0"]
NM_NO = AZURE_IFCFG.replace("NM_CONTROLLED=yes", 'NM_CONTROLLED="no"')


@pytest.mark.parametrize(
    ("release", "image", "expected"),
    [
        ("rhel9", {IFCFG: AZURE_IFCFG}, ["systemctl restart NetworkManager", "ip link set eth0 down",
                                         "ip link set eth0 up", "systemctl condrestart sshd"]),
        ("rocky", {IFCFG: AZURE_IFCFG}, ["systemctl restart NetworkManager", "ip link set eth0 down",
                                         "ip link set eth0 up", "systemctl condrestart sshd"]),  # 8.9
        ("rhel8", {IFCFG: AZURE_IFCFG}, ["ifdown eth0", "ifup eth0", "/sbin/service sshd condrestart"]),
        ("rhel8", {IFCFG: NM_NO}, ["service NetworkManager restart", "ifdown eth0", "ifup eth0",
                                   "/sbin/service sshd condrestart"]),
        ("sles15", {SUSE_DHCP: SUSE_EMPTY}, ["ifup eth0", "systemctl restart sshd.service"]),
    ],
    ids=["rhel9", "rocky8.9", "rhel8.4", "rhel8.4-nm-no", "sles15"],
)  # fmt: skip
def test_each_family_reannounces_and_restarts_sshd_with_walinuxagents_commands(
    tmp_path: Any, release: str, image: Dict[str, str], expected: List[str]
) -> None:
    """The network was up before the name was set (no local phase): the name is re-announced."""
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    runs = [{"env": {"PATH": path}, "after": ["cat /run/commands.log"]}]
    r = run(tmp_path, release, image, runs, setup=[*ROUTED, *STAND_INS])
    assert r["runs"][0]["rc"] == 0, r["runs"][0]["stderr"]
    commands = json.loads(files(r)["/var/lib/waprov/report.json"]["bytes"])["commands"]
    relevant = [c for c in commands if c.split()[0] in ("systemctl", "service", "/sbin/service", "ip", "ifup",
                                                          "ifdown", "nmcli", "networkctl")]  # fmt: skip
    assert relevant == expected
    logged = r["runs"][0]["after"][0]["stdout"].splitlines()  # the stand-ins ran, in this order
    assert logged == [c for c in expected if not c.startswith("ip ")]
    assert "Re-announced the host name on eth0" in r["runs"][0]["stderr"]


@pytest.mark.parametrize(("release", "family", "image"), [
    ("rhel9", "rhel", {IFCFG: AZURE_IFCFG}), ("leap", "suse", {SUSE_DHCP: SUSE_EMPTY})])  # fmt: skip
def test_deprovision_tells_the_dhcp_client_localhost_as_walinuxagent_does(
    tmp_path: Any, release: str, family: str, image: Dict[str, str]
) -> None:
    keep = (
        "rm -rf /run/orig/sysconfig && cp -a /etc/sysconfig /run/orig/"  # the state deprovision starts from
    )
    runs = [
        {"args": ["-provision", "-local"]},
        {},
        {"args": ["-deprovision", "-force"], "before": [keep], "snapshot": ["/etc/sysconfig"],
         "after": [wa_line(family, "localhost.localdomain")]},
    ]  # fmt: skip
    r = run(tmp_path, release, image, runs)
    assert [x["rc"] for x in r["runs"]] == [0, 0, 0], r["runs"][2]["stderr"]
    deprovisioned = r["runs"][2]
    assert deprovisioned["after"][0]["rc"] == 0, deprovisioned["after"][0]["stderr"]
    ours, theirs = sysconfig(deprovisioned["snapshot"]), sysconfig(r["snapshot"])
    assert ours == theirs
    assert b"localhost.localdomain" in (ours[next(iter(image))] or b"")
    assert r["hostname"] == "localhost.localdomain"
