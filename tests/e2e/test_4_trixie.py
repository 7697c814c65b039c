"""Debian 13 (trixie): the .deb built on Debian 12 installed with apt on the trixie image
(python3 3.13: its Depends pull python3-crypt-r), trixie's waagent swapped out with
`waprov -enable`. The key-only, password and refused scenarios of Debian 12 (see
tests/e2e/checks.py), on trixie's own kernel."""

from __future__ import annotations

from tests.e2e.checks import (
    boot,
    check_host_key_comments,
    dhcp_of,
    first_dhcp_request_names_the_host,
    imds,
    key_at,
    no_network_restart,
    waprov_journal,
    waprov_ready_once_then_ga,
)
from tests.e2e.scenario import Scenario
from tests.e2e.test_2_scenarios import password_user, refused_ovf
from tests.provisioning import ovf

VARIANT = "trixie"


def test_trixie_a_keyonly() -> None:
    s = Scenario(
        "a-keyonly-trixie",
        user="alice",
        ovf=lambda pub: ovf(hostname="e2e-trixie", user="alice", keys=key_at("alice", pub)),
        imds=lambda pub: imds("alice", "e2e-trixie", pub),
        variant=VARIANT,
    )
    try:
        boot(s)
        waprov_ready_once_then_ga(s)
        p = s.guest.ssh(
            "alice", "hostname; id -un; python3 -c 'import sys; print(sys.version_info[:2])'", key=s.key
        )
        assert p.returncode == 0 and p.stdout.split("\n")[:2] == ["e2e-trixie", "alice"], p
        assert p.stdout.split("\n")[2] == "(3, 13)", p  # Debian 13's interpreter runs waprov
        assert s.guest.ssh("alice", "sudo -n true", key=s.key).returncode == 0
        p = s.guest.ssh("alice", "true", password="not-the-password")
        assert p.returncode == 255 and "Permission denied (publickey)" in p.stderr, p
        first_dhcp_request_names_the_host(s, "e2e-trixie")
        journal = waprov_journal(s)
        no_network_restart(journal, dhcp_of(s, 1))
        keys = s.root_cmd("grep -H . /etc/ssh/ssh_host_*_key.pub").splitlines()
        check_host_key_comments(dict(line.split(":", 1) for line in keys), "e2e-trixie")
        # what apt installed: the .deb and, for Python 3.13, crypt-r
        installed = s.root_cmd("dpkg-query -W -f '${Package} ${Version}\\n' waprov python3-crypt-r waagent")
        s.save("packages.txt", installed)
        names = [line.split()[0] for line in installed.splitlines()]
        assert sorted(names) == ["python3-crypt-r", "waagent", "waprov"], installed
    finally:
        s.stop()


def test_trixie_b_password_user() -> None:
    password_user(VARIANT)  # the login with the OVF password: crypt-r's hash


def test_trixie_e_refused_ovf() -> None:
    refused_ovf(VARIANT)
