"""What the e2e scenarios (test_1_keyonly.py, test_2_scenarios.py) boot and check.

Real boots: a Debian 12 guest under qemu (TCG) with the built .deb, Debian's waagent
beside it, a UDF DVD, a blank resource disk and the fake fabric at Azure's addresses.
Run by `make e2e` (tools/e2e), which builds the images and runs the tests in a private
network namespace. Every assertion is made from outside the guest: the fake fabric's
request log, ssh as the provisioned user, and the guest's disks after power-off.
Scenarios run one after the other; each VM is powered off before the next starts (a
module's VM, at the end of its module).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from tests.e2e.pcap import Dhcp, check_first_request_hostname, client_requests, read_dhcp
from tests.e2e.scenario import Scenario, agent_of, record_timing, state_of
from tests.e2e.vm import wait_for
from tests.fakefabric import Request
from waprov.steps.hostname import host_name

SWAP_MB = 128  # ResourceDisk.SwapSizeMB in the image's /etc/waagent.conf (guest-setup.sh)
FINAL = ("Ready", "NotReady/ProvisioningFailed")
# What WALinuxAgent 2.7's resource-disk pass logs when it changes the disk.
GA_CHANGES = ("Format partition", "Creating new GPT partition", "Removing old GPT partitions",
              "Remove old swap file", "Create swap file", "Mount resource disk [")  # fmt: skip


# Per image variant: the provisioning agent's first (local) unit, its network unit, sshd.
UNITS = {
    "waprov": ("waprov-local.service", "waprov.service", "ssh.service"),
    "trixie": ("waprov-local.service", "waprov.service", "ssh.service"),
    "cloudinit": ("cloud-init-local.service", "cloud-init.service", "ssh.service"),
    # sshd socket-activated: the socket, and ssh.service when the socket starts it
    "waprov-nm": ("waprov-local.service", "waprov.service", "ssh.socket", "ssh.service"),
}


def imds(user: str, hostname: str, pub: Optional[str], disable_password: bool = True) -> Dict[str, Any]:
    keys = [{"keyData": pub, "path": f"/home/{user}/.ssh/authorized_keys"}] if pub else []
    return {
        "compute": {
            "osProfile": {
                "adminUsername": user,
                "computerName": hostname,
                "disablePasswordAuthentication": "true" if disable_password else "false",
            },
            "publicKeys": keys,
            "customData": "",
        }
    }


def key_at(user: str, pub: str) -> Tuple[Tuple[str, None, str], ...]:
    return ((f"/home/{user}/.ssh/authorized_keys", None, pub),)


def boot(
    s: Scenario,
    agents: Tuple[str, ...] = ("waprov",),
    ssh: bool = True,
    started: Optional[Callable[[], None]] = None,
) -> Request:
    """Start the guest (then call `started`: the kernel has handed over to init), wait
    for the final health report of one of `agents` and, when it is Ready and `ssh`, for
    ssh as the user; record the timings. Returns the report."""
    s.guest.start()
    if started is not None:
        started()
    final = s.wait_health(agents, FINAL)
    timing: Dict[str, Any] = {
        "agent": agent_of(final),
        "state": state_of(final),
        "qemu_start_to_report_s": round(final.time - s.guest.started, 2),
    }
    if ssh and state_of(final) == "Ready":
        s.guest.wait_ssh(s.user, s.key)
        # when the first login with the provisioned key succeeded (polled every second)
        timing["qemu_start_to_ssh_login_s"] = round(time.monotonic() - s.guest.started, 2)
        kernel = s.kernel_start()
        timing["kernel_start_to_report_s"] = round(final.time - kernel, 2)
        timing["qemu_start_to_kernel_start_s"] = round(kernel - s.guest.started, 2)
        analyze = s.guest.ssh(s.user, "systemd-analyze time | head -1", key=s.key)
        timing["systemd_analyze"] = analyze.stdout.strip()
        # the units' start and end (active, or skipped) and the host keys' last write (guest seconds)
        units = s.unit_times(*UNITS[s.guest.variant])
        timing["guest_units_s"] = {u: {k: t[k] for k in ("start", "end")} for u, t in units.items()}
        timing["guest_host_keys_written_s"] = s.host_keys_written()
    if s.guest.stalls:
        timing["kernel_stalls_restarted"] = s.guest.stalls
    record_timing(s.name, timing)
    return final


def waprov_ready_once_then_ga(s: Scenario, password: Optional[str] = None) -> Request:
    """waprov reported NotReady/Provisioning then exactly one Ready; the guest agent
    talked to the wireserver, and only after that Ready. Keeps waprov's report.json."""
    s.save("report.json", s.root_cmd("cat /var/lib/waprov/report.json", password))
    assert s.health("waprov") == ["NotReady/Provisioning", "Ready"]
    ready = next(r for r in s.requests() if agent_of(r) == "waprov" and state_of(r) == "Ready")
    s.wait_request("ga", ready.time, timeout=180)
    early = [f"{r.method} {r.path}" for r in s.requests() if agent_of(r) == "ga" and r.time < ready.time]
    assert not early, f"the guest agent asked the fabric before waprov's Ready: {early}"
    return ready


def ga_log(s: Scenario, wanted: str, timeout: float = 180) -> str:
    """/var/log/waagent.log once it holds `wanted` (kept as waagent.log in the logs)."""

    def probe() -> Optional[str]:
        text = s.root_cmd("cat /var/log/waagent.log 2>/dev/null || true")
        return text if wanted in text else None

    text = wait_for(f"'{wanted}' in waagent.log", probe, timeout, every=3)
    s.save("waagent.log", text)
    return text


def resource_state(s: Scenario, password: Optional[str] = None) -> Dict[str, str]:
    out = s.root_cmd(
        "findmnt -n -o SOURCE,FSTYPE /mnt/resource; "
        "blkid -s UUID -o value /dev/disk/azure/resource-part1; "
        "stat -c '%i %s %a' /mnt/resource/swapfile; "
        "swapon --show=NAME,SIZE --bytes --noheadings; "
        "head -n 1 /mnt/resource/DATALOSS_WARNING_README.txt",
        password,
    )
    lines = out.splitlines()
    assert len(lines) == 5, f"resource disk state incomplete: {out!r}"
    return dict(zip(("mount", "uuid", "swapfile", "swap", "readme"), lines))


def check_resource_disk(state: Dict[str, str]) -> None:
    source, fstype = state["mount"].split()
    assert source.startswith("/dev/sd") and source.endswith("1") and fstype == "ext4", state
    assert state["swapfile"].split()[1:] == [str(SWAP_MB << 20), "600"], state
    # the kernel counts a swap area without its header page
    assert state["swap"].split() == ["/mnt/resource/swapfile", str((SWAP_MB << 20) - 4096)], state
    assert state["readme"].startswith("WARNING: THIS IS A TEMPORARY DISK"), state


def host_keys(s: Scenario) -> str:
    return s.root_cmd("cat /etc/ssh/ssh_host_*_key.pub")


def check_host_key_comments(pubs: Dict[str, str], hostname: str) -> None:
    """Every host key's public line (file name → its text) ends with root@`hostname`:
    ssh-keygen ran after the host name was set (the local phase begins it then)."""
    assert pubs, "no /etc/ssh/ssh_host_*_key.pub"
    comment = f" root@{hostname}"
    wrong = {name: text.strip() for name, text in pubs.items() if not text.strip().endswith(comment)}
    assert not wrong, f"host keys whose comment is not root@{hostname}: {wrong}"


def first_dhcp_request_names_the_host(s: Scenario, ovf_hostname: str) -> Dhcp:
    """The guest's first DHCP DISCOVER or REQUEST of its first boot (qemu's capture,
    net-boot1.pcap) carries option 12 = the host name waprov gives the OVF's HostName.
    The DHCP messages seen are kept as dhcp-boot1.txt."""
    messages = dhcp_of(s, 1)
    return check_first_request_hostname(messages, host_name(ovf_hostname))


def dhcp_of(s: Scenario, boot: int) -> List[Dhcp]:
    """The DHCP messages of a captured boot, also written to the logs (dhcp-bootN.txt)."""
    path = os.path.join(s.guest.workdir, f"net-boot{boot}.pcap")
    messages = read_dhcp(path)
    t0 = messages[0].time if messages else 0.0
    s.save(f"dhcp-boot{boot}.txt", "".join(m.describe(t0) + "\n" for m in messages))
    return messages


def waprov_journal(s: Scenario, password: Optional[str] = None) -> str:
    """This boot's journal of both provisioning units (kept as journal-waprov.txt)."""
    text = s.journal("-u", "waprov-local.service", "-u", "waprov.service", password=password)
    s.save("journal-waprov.txt", text)
    return text


def no_network_restart(journal: str, messages: List[Dhcp]) -> None:
    """The host name was set before the network: waprov says it re-announces nothing,
    and the capture shows one DHCP exchange only (a restart starts another: a new xid)."""
    assert "The host name was set before the network started: nothing to re-announce" in journal, journal
    for restarted in ("Re-announced the host name", "Re-announcing the host name"):
        assert restarted not in journal, journal
    exchanges = {f"{m.xid:#010x}" for m in client_requests(messages)}
    assert len(exchanges) == 1, f"DHCP exchanges (xids) of the guest: {sorted(exchanges)}"
