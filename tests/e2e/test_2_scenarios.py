"""(b) a password user, (d) a failing fabric, (e) a refused OVF, (f) IMDS only, and
cloud-init on the same image and fabric for the timing comparison (see
tests/e2e/checks.py)."""

from __future__ import annotations

import os
import re
import secrets
from typing import Optional

import pytest

from tests.e2e.checks import (
    boot,
    check_resource_disk,
    dhcp_of,
    first_dhcp_request_names_the_host,
    imds,
    key_at,
    no_network_restart,
    resource_state,
    waprov_journal,
    waprov_ready_once_then_ga,
)
from tests.e2e.pcap import client_requests
from tests.e2e.scenario import Scenario, agent_of, contains_bytes, state_of
from tests.e2e.vm import wait_for
from tests.fakefabric import RESET, status
from tests.provisioning import ovf

# ---- (b) a password user ----------------------------------------------------------------------


def test_b_password_user() -> None:
    password_user("waprov")


def password_user(variant: str) -> None:
    """(b) on the image `variant` (tests/e2e/test_4_trixie.py: Debian 13's)."""
    password = "E2e-" + secrets.token_urlsafe(12)
    s = Scenario(
        "b-password" + ("" if variant == "waprov" else f"-{variant}"),
        variant=variant,
        user="bob",
        ovf=lambda pub: ovf(
            hostname="e2e-password",
            user="bob",
            password=password,
            disable_password_auth="false",
            keys=key_at("bob", pub),
        ),
        imds=lambda pub: imds("bob", "e2e-password", pub, disable_password=False),
    )
    try:
        boot(s)
        waprov_ready_once_then_ga(s, password=password)
        p = s.guest.ssh("bob", "hostname", password=password)
        assert p.returncode == 0 and p.stdout.strip() == "e2e-password", p
        p = s.guest.ssh("bob", "true", password=password + "x")
        assert p.returncode == 255 and "Permission denied" in p.stderr, p
        p = s.guest.ssh("bob", "sudo -n true", key=s.key)
        assert p.returncode == 1 and "a password is required" in p.stderr, p
        assert s.root_cmd("id -un", password=password).strip() == "root"
        first_dhcp_request_names_the_host(s, "e2e-password")
        no_network_restart(waprov_journal(s, password), dhcp_of(s, 1))
        check_resource_disk(resource_state(s, password))
        s.guest.poweroff()
        # the password is nowhere on the guest's disks (the overlay holds every block the
        # guest wrote; the base image was built before the password existed), nor in
        # the console log or what the fabric received
        needle = password.encode()
        for path in (s.guest.os_disk, s.guest.resource_disk, s.guest.console, s.fabric.log_file or ""):
            assert os.path.getsize(path) > 0
            assert not contains_bytes(path, needle), f"the admin password is in {path}"
    finally:
        s.stop()


# ---- (d) a fabric that fails the first goal-state requests ---------------------------------------


def test_d_goal_state_faults_are_retried() -> None:
    s = Scenario(
        "d-fabric-faults",
        user="dora",
        ovf=lambda pub: ovf(hostname="e2e-faults", user="dora", keys=key_at("dora", pub)),
        imds=lambda pub: imds("dora", "e2e-faults", pub),
        faults=[("goalstate", status(500)), ("goalstate", RESET), ("goalstate", status(503))],
    )
    try:
        boot(s)
        waprov_ready_once_then_ga(s)
        goal = [r for r in s.requests() if r.route == "goalstate"]
        assert len(goal) >= 4 and {agent_of(r) for r in goal[:4]} == {"waprov"}
        assert s.guest.ssh("dora", "hostname", key=s.key).stdout.strip() == "e2e-faults"
        first_dhcp_request_names_the_host(s, "e2e-faults")
        no_network_restart(waprov_journal(s), dhcp_of(s, 1))
    finally:
        s.stop()


# ---- (e) an OVF that must fail --------------------------------------------------------------------


def test_e_refused_ovf_reports_failure_and_the_guest_agent_never_starts() -> None:
    refused_ovf("waprov")


def refused_ovf(variant: str) -> None:
    """(e) on the image `variant` (tests/e2e/test_4_trixie.py: Debian 13's)."""
    s = Scenario(
        "e-refused" + ("" if variant == "waprov" else f"-{variant}"),
        variant=variant,
        user="daemon",
        ovf=lambda pub: ovf(hostname="e2e-refused", user="daemon", keys=key_at("daemon", pub)),
        imds=lambda pub: imds("daemon", "e2e-refused", pub),
    )
    try:
        failed = boot(s, ssh=False)
        assert state_of(failed) == "NotReady/ProvisioningFailed"
        # multi-user.target, or the serial getty's prompt (systemd-user-sessions, before
        # the getty, is ordered after waprov.service: by then the guest agent's start job
        # has failed for the dependency). Either may be missing from the console alone:
        # once agetty has hung up the console, systemd's later status lines may not reach
        # it (seen in CI), and a fast poweroff can come before agetty prints its prompt.
        booted = re.compile(r"Reached target .*Multi-User System|^e2e-refused login: ", re.M)
        wait_for("the boot to end", lambda: True if booted.search(s.guest.console_text()) else None, 120)
        s.guest.poweroff()
        # The local phase failed at the user step (its unit failed, which fails the guest
        # agent's dependency); the network phase ran the local steps again, all of them
        # before NotReady/Provisioning as the DVD has the data, and reported the failure.
        assert s.health("waprov") == ["NotReady/ProvisioningFailed"]
        console = s.guest.console_text()
        assert "Provisioning failed in the local phase: User daemon is a system user" in console
        assert "Host name e2e-refused set before the network started" in console
        first_dhcp_request_names_the_host(s, "e2e-refused")
        others = [(agent_of(r), r.path) for r in s.requests() if agent_of(r) != "waprov"]
        assert others == [], f"someone else talked to the fabric: {others}"
        assert "Dependency failed for" in console and "Azure Linux Agent" in console
        report = s.os_disk_file("/var/lib/waprov/report.json")
        assert report is not None and '"result": "error"' in report and "daemon" in report
        s.save("report.json", report)
        assert s.os_disk_file("/var/log/waagent.log") is None  # the guest agent never ran
    finally:
        s.stop()


# ---- (f) no DVD: IMDS only --------------------------------------------------------------------------


def test_f_imds_only() -> None:
    s = Scenario("f-imds-only", user="carol", ovf=None, imds=lambda pub: imds("carol", "e2e-imds-only", pub))
    try:
        boot(s)
        waprov_ready_once_then_ga(s)
        p = s.guest.ssh("carol", "hostname; sudo -n true && echo sudo-ok", key=s.key)
        assert p.stdout.split() == ["e2e-imds-only", "sudo-ok"], p
        assert "imds" in s.root_cmd("cat /var/lib/waprov/report.json")
        # No DVD: the host name came from IMDS, with the network up; waprov re-announced it
        # (networkd's DHCP client started again: a new exchange that carries the new name).
        journal = waprov_journal(s)
        assert "No provisioning DVD yet" in journal and "Re-announced the host name on " in journal, journal
        requests = client_requests(dhcp_of(s, 1))
        assert requests[0].hostname != "e2e-imds-only", requests[0]
        assert any(r.hostname == "e2e-imds-only" and r.xid != requests[0].xid for r in requests), requests
    finally:
        s.stop()


# ---- cloud-init on the same image and fabric, for the timing comparison --------------------------


@pytest.mark.alone  # its timings are compared with (a)'s: no other guest runs beside it
def test_cloud_init_for_comparison() -> None:
    s = Scenario(
        "h-cloud-init",
        user="erin",
        ovf=lambda pub: ovf(hostname="e2e-cloud-init", user="erin", keys=key_at("erin", pub)),
        imds=lambda pub: imds("erin", "e2e-cloud-init", pub),
        variant="cloudinit",
        azure_asset_tag=True,
    )
    try:
        ready = boot(s, agents=("cloud-init", "ga"))
        assert state_of(ready) == "Ready"

        # cloud-init sets the host name and restarts sshd after its first login works
        def named() -> Optional[bool]:
            p = s.guest.ssh("erin", "hostname", key=s.key)
            return True if p.stdout.strip() == "e2e-cloud-init" else None

        wait_for("cloud-init's host name", named, 120, every=2)
        dhcp_of(s, 1)  # kept for comparison: cloud-init's first request has the image's name
    finally:
        s.stop()
