"""(a) a key-only user, (g) the guest agent's own resource-disk pass, (c) the second boot
of the same VM: one VM, booted twice (see tests/e2e/checks.py)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Iterator

import pytest

from tests.e2e.checks import (
    GA_CHANGES,
    boot,
    check_host_key_comments,
    check_resource_disk,
    dhcp_of,
    first_dhcp_request_names_the_host,
    ga_log,
    host_keys,
    imds,
    key_at,
    no_network_restart,
    resource_state,
    waprov_journal,
    waprov_ready_once_then_ga,
)
from tests.e2e.scenario import Scenario, agent_of, record_timing
from tests.provisioning import ovf

# (a)'s timings are compared with cloud-init's (test_2_scenarios.py, (h)): both boot with
# no other guest running (tools/e2e runs these after the scenarios it runs two at a time)
pytestmark = pytest.mark.alone

# the second boot's timeline: the provisioning units, what sshd waits for, sshd
SECOND_BOOT_UNITS = ("waprov-local.service", "waprov.service", "systemd-networkd.service", "network.target",
                     "basic.target", "ssh.service")  # fmt: skip
# what waprov-boot-check (init/waprov-boot-check) says when this VM is provisioned already
BOOT_CHECK_DONE = "waprov: this VM is provisioned already (its DMI id is the recorded one): nothing to do"


@pytest.fixture(scope="module")
def keyonly() -> Iterator[Scenario]:
    """(a) A user with an SSH key and no password."""
    s = Scenario(
        "a-keyonly",
        user="alice",
        ovf=lambda pub: ovf(hostname="e2e-keyonly", user="alice", keys=key_at("alice", pub)),
        imds=lambda pub: imds("alice", "e2e-keyonly", pub),
    )
    try:
        boot(s)
        yield s
    finally:
        s.stop()


def test_a_keyonly_reports_ready_once_before_the_guest_agent(keyonly: Scenario) -> None:
    waprov_ready_once_then_ga(keyonly)


def test_a_keyonly_login_hostname_sudo(keyonly: Scenario) -> None:
    s = keyonly
    p = s.guest.ssh("alice", "hostname; id -un", key=s.key)
    assert p.returncode == 0 and p.stdout.split() == ["e2e-keyonly", "alice"], p
    assert s.guest.ssh("alice", "sudo -n true", key=s.key).returncode == 0  # NOPASSWD: no password
    p = s.guest.ssh("alice", "true", password="not-the-password")
    assert p.returncode == 255 and "Permission denied (publickey)" in p.stderr, p


def test_a_keyonly_first_dhcp_request_names_the_host_and_no_network_restart(keyonly: Scenario) -> None:
    s = keyonly
    first_dhcp_request_names_the_host(s, "e2e-keyonly")
    journal = waprov_journal(s)
    said = "Host name e2e-keyonly set before the network started: the first DHCP request carries it"
    assert said in journal, journal
    no_network_restart(journal, dhcp_of(s, 1))
    # Debian's waagent.conf: RegenerateSshHostKeyPair=y, auto: the boot check began the RSA key
    assert "The RSA host key begun at boot (waprov-boot-check) was adopted" in journal, journal
    keys = s.root_cmd("grep -H . /etc/ssh/ssh_host_*_key.pub").splitlines()
    check_host_key_comments(dict(line.split(":", 1) for line in keys), "e2e-keyonly")


def test_a_keyonly_resource_disk_and_swap(keyonly: Scenario) -> None:
    check_resource_disk(resource_state(keyonly))


def test_g_the_guest_agents_disk_pass_changes_nothing(keyonly: Scenario) -> None:
    s = keyonly
    before = resource_state(s)
    log = ga_log(s, "Swap already enabled")
    # sda or sdb: the kernel names the two virtio-scsi disks in the order their probes end
    part = s.root_cmd("readlink -f /dev/disk/azure/resource-part1").strip()
    assert part in ("/dev/sda1", "/dev/sdb1"), part
    assert f"Resource disk [{part}] is already mounted [/mnt/resource]" in log
    changes = [line for line in log.splitlines() if any(c in line for c in GA_CHANGES)]
    assert not changes, changes
    assert resource_state(s) == before
    # The GA's pass may be over before `before` is read (it starts seconds after Ready):
    # the file system and the swapfile must also be older than the pass (guest clock).
    pass_line = next(line for line in log.splitlines() if line.endswith("Activate resource disk"))
    pass_start = datetime.strptime(pass_line.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    created = "dumpe2fs -h /dev/disk/azure/resource-part1 2>/dev/null | sed -n 's/^Filesystem created: *//p'"
    made = s.root_cmd(f'stat -c %W /mnt/resource/swapfile; date -d "$({created})" +%s').split()
    assert len(made) == 2 and all(int(t) > 0 for t in made), made
    assert max(int(t) for t in made) <= pass_start.timestamp(), (made, pass_line)


def test_c_second_boot_changes_nothing_and_restores_the_disk(keyonly: Scenario) -> None:
    s = keyonly
    keys, ak = host_keys(s), s.root_cmd("cat /home/alice/.ssh/authorized_keys")
    passwd, disk = s.root_cmd("grep -c . /etc/passwd; getent passwd alice"), resource_state(s)
    s.guest.poweroff()
    # the host keys as the disk holds them: the ones sshd served, named after the host
    on_disk = s.os_disk_files("/etc/ssh", "ssh_host_*_key.pub")
    assert "".join(on_disk.values()) == keys
    check_host_key_comments(on_disk, "e2e-keyonly")
    second = time.monotonic()
    s.guest.start()
    s.guest.wait_ssh("alice", s.key, timeout=300)
    s.wait_request("ga", second, timeout=180)  # the guest agent started again
    assert [r.path for r in s.requests() if agent_of(r) == "waprov" and r.time >= second] == []
    # waprov-boot-check (the local unit's ExecCondition) found this VM done: the unit was
    # skipped before any interpreter started, and /run/waprov/done skipped waprov.service
    units = s.unit_times(*SECOND_BOOT_UNITS)
    s.save(
        "critical-chain-ssh.txt",
        s.guest.ssh("alice", "systemd-analyze critical-chain ssh.service", key=s.key).stdout,
    )
    journal = waprov_journal(s)
    assert BOOT_CHECK_DONE in journal, journal
    assert "Running waprov provisioning" not in journal, journal  # waprov itself never ran
    assert units["waprov-local.service"]["state"] == "inactive/exec-condition", units
    skipped = "was skipped because of an unmet condition check (ConditionPathExists=!/run/waprov/done)"
    assert skipped in journal, journal
    assert units["waprov.service"]["condition"] is False and units["waprov.service"]["start"] is None, units
    assert s.root_cmd("test -e /run/waprov/done && echo done").strip() == "done"
    # What that costs the boot: the local unit's own time (the boot check), and its start
    # → sshd's start (sshd waits for it through network.target; that span also holds
    # networkd's start and the rest of the boot up to basic.target, not waprov's doing).
    local, sshd = units["waprov-local.service"], units["ssh.service"]
    assert local["start"] and local["end"] and sshd["start"], units
    assert local["end"] <= sshd["start"], units
    cost, own = round(sshd["start"] - local["start"], 2), round(local["end"] - local["start"], 2)
    assert own <= 3.0, f"the boot check took {own} s: {units}"  # 0.5 s under TCG at boot
    record_timing(
        "c-second-boot",
        {
            "agent": "waprov",
            "state": "done already",
            "local_start_to_ssh_start_s": cost,
            "local_unit_s": own,
            "guest_units_s": {u: {k: t[k] for k in ("start", "end")} for u, t in units.items()},
        },
    )
    print(f"second boot: waprov-local.service's start → ssh.service's start {cost:.2f} s "
          f"(waprov-local.service itself {own:.2f} s)")  # fmt: skip
    assert host_keys(s) == keys
    assert s.root_cmd("cat /home/alice/.ssh/authorized_keys") == ak
    assert ak.count(s.pub.split()[1]) == 1
    assert s.root_cmd("grep -c . /etc/passwd; getent passwd alice") == passwd
    after = resource_state(s)
    check_resource_disk(after)
    # the same file system (not reformatted) and the same swapfile (not recreated)
    assert after["uuid"] == disk["uuid"] and after["swapfile"] == disk["swapfile"]
