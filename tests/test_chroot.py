"""The .deb on Debian 12: installed beside Debian's waagent package in a bookworm chroot,
`waprov -enable/-disable` there, then remove, reinstall and purge.

A base system (tests/chroot.py: mmdebstrap, variant apt, plus systemd) is built once and
cached in the tests' machine-level cache (tests/cache.py) as chroot/bookworm-<key>/base.tar,
with the .debs of waagent and of waprov's dependencies downloaded into its apt cache; the
key covers the .deb's Depends, so a new dependency makes a new base. Each test unpacks
the base into a fresh directory, installs with apt and no network, and removes the
directory.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from typing import Iterator, List, NamedTuple

import pytest

from tests.chroot import base_tarball, in_chroot, ok, remove_tree, unpack
from tests.pkgfiles import out, packages
from waprov.handover import DROPIN as GA_DROPIN

SUITE = "bookworm"
BASE_FORMAT = "1"  # bump when the base's recipe changes
# Logs every request to start/stop a service (invoke-rc.d, deb-systemd-invoke) and denies it.
POLICY_RC_D = '#!/bin/sh\necho "$*" >>/var/log/policy-rc.d.log\nexit 101\n'
DROPIN = "50-waprov.conf"


class Chroot(NamedTuple):
    root: str
    install_log: str


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def write(path: str, text: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)


def enabled(root: str, *units: str) -> List[str]:
    r = subprocess.run(
        ["systemctl", f"--root={root}", "is-enabled", *units], capture_output=True, text=True, check=False
    )
    return r.stdout.split()


def install_beside_waagent(root: str, deb: str) -> str:
    """`apt-get install` of `deb` and the distribution's waagent together in the chroot
    `root` (no network: the Depends resolve against its package lists and base); the log."""
    shutil.copy(deb, os.path.join(root, "tmp"))
    write(os.path.join(root, "usr/sbin/policy-rc.d"), POLICY_RC_D, 0o755)
    # as if systemd ran: maintainer scripts then ask deb-systemd-invoke (and so
    # policy-rc.d) to start what they start
    os.makedirs(os.path.join(root, "run/systemd/system"))
    r = in_chroot(
        root,
        "apt-get",
        "install",
        "-y",
        "--no-install-recommends",
        f"/tmp/{os.path.basename(deb)}",
        "waagent",
    )
    os.rmdir(os.path.join(root, "run/systemd/system"))
    return ok(r) + r.stderr


@pytest.fixture
def installed() -> Iterator[Chroot]:
    """A fresh bookworm chroot with waprov's .deb and waagent installed by apt together."""
    deb = packages().deb
    depends = out(["dpkg-deb", "-f", deb, "Depends"]).strip()
    root = unpack(base_tarball(SUITE, BASE_FORMAT, f"waagent, {depends}"))
    try:
        yield Chroot(root, install_beside_waagent(root, deb))
    finally:
        remove_tree(root)
    assert not os.path.exists(root)


def enable_then_disable(root: str) -> None:
    """`waprov -enable` changes one line of /etc/waagent.conf; -disable gives back its bytes."""
    conf = os.path.join(root, "etc/waagent.conf")
    before = read_bytes(conf)
    ok(in_chroot(root, "waprov", "-enable"))
    after = read_bytes(conf).decode().splitlines(keepends=True)
    lines = before.decode().splitlines(keepends=True)
    changed = [(a, b) for a, b in zip(lines, after) if a != b]
    assert len(after) == len(lines) and len(changed) == 1, changed
    assert changed[0][1] == "Provisioning.Agent=disabled\n"
    ok(in_chroot(root, "waprov", "-disable"))
    assert read_bytes(conf) == before


def test_the_deb_installs_beside_waagent_starts_nothing_and_swaps_in_and_out(installed: Chroot) -> None:
    root = installed.root
    assert "trying to overwrite" not in installed.install_log
    status = ok(in_chroot(root, "dpkg-query", "-W", "-f", "${Package} ${Status}\n", "waprov", "waagent"))
    assert sorted(status.splitlines()) == ["waagent install ok installed", "waprov install ok installed"]
    # the shipped files are intact, /etc/waagent.conf is waagent's and unchanged
    assert ok(in_chroot(root, "dpkg", "--verify", "waprov", "waagent")) == ""
    assert ok(in_chroot(root, "dpkg", "-S", "/etc/waagent.conf")) == "waagent: /etc/waagent.conf\n"
    version = ok(in_chroot(root, "waprov", "-version")).splitlines()
    assert version[0] == f"waprov-{packages().version} running on debian 12", version
    st = os.lstat(os.path.join(root, "var/lib/waprov"))
    assert (oct(st.st_mode), st.st_uid) == (oct(0o40700), 0)
    assert (
        enabled(root, "waprov-local.service", "waprov.service", "waprov-resourcedisk.service")
        == ["enabled"] * 3
    )
    # nothing started: waagent's postinst asked to start its unit (the log works), waprov's
    # scripts asked nothing; waprov did not run (no state, no log)
    requests = read_bytes(os.path.join(root, "var/log/policy-rc.d.log")).decode()
    assert "walinuxagent" in requests and "waprov" not in requests, requests
    assert os.listdir(os.path.join(root, "var/lib/waprov")) == []
    assert not glob.glob(os.path.join(root, "var/log/waprov.log*"))

    enable_then_disable(root)


def test_remove_keeps_the_state_and_purge_removes_it(installed: Chroot) -> None:
    root = installed.root
    etc_units = os.path.join(root, "etc/systemd/system")
    dropin = GA_DROPIN
    # what `waprov -enable` writes on installs without the package, an admin's own drop-in,
    # a VM's state and log, the -disable flag
    write(f"{etc_units}/waagent.service.d/{DROPIN}", dropin)
    write(f"{etc_units}/walinuxagent.service.d/{DROPIN}", dropin)
    write(f"{etc_units}/walinuxagent.service.d/10-admin.conf", "[Service]\nNice=1\n")
    write(os.path.join(root, "var/lib/waprov/provisioned"), "vm-id\n", 0o600)
    write(os.path.join(root, "var/log/waprov.log"), "log\n")
    write(os.path.join(root, "var/log/waprov.log-2026-01-01-1767225600.gz"), "old log\n")
    write(os.path.join(root, "etc/waprov/disabled"), "")

    ok(in_chroot(root, "apt-get", "remove", "-y", "waprov"))
    assert not os.path.exists(f"{etc_units}/waagent.service.d")
    assert os.listdir(f"{etc_units}/walinuxagent.service.d") == ["10-admin.conf"]
    assert os.path.exists(os.path.join(root, "var/lib/waprov/provisioned"))
    assert os.path.exists(os.path.join(root, "etc/waprov/disabled"))
    assert ok(in_chroot(root, "dpkg", "--verify", "waagent")) == ""

    # reinstalled, the VM's state is still there: it is not provisioned again
    ok(in_chroot(root, "dpkg", "-i", f"/tmp/{os.path.basename(packages().deb)}"))
    assert os.stat(os.path.join(root, "var/lib/waprov")).st_mode & 0o7777 == 0o700
    assert os.path.exists(os.path.join(root, "var/lib/waprov/provisioned"))

    ok(in_chroot(root, "dpkg", "--purge", "waprov"))
    for gone in (
        "var/lib/waprov",
        "etc/waprov",
        "var/log/waprov.log",
        "var/log/waprov.log-2026-01-01-1767225600.gz",
    ):
        assert not os.path.exists(os.path.join(root, gone)), gone
    assert not glob.glob(f"{etc_units}/*.wants/waprov*")
    assert os.listdir(f"{etc_units}/walinuxagent.service.d") == ["10-admin.conf"]
    assert ok(in_chroot(root, "dpkg-query", "-W", "-f", "${Status}", "waagent")) == "install ok installed"
