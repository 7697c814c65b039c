"""The .rpm installed with rpm: into a scratch root with its own rpm database, on a Debian
userland (there is no RHEL userland here); its scriptlets run, `rpm -V`, `waprov -version`
from the installed files, then erase.

The root is the bookworm base of tests/test_chroot.py with the rpm's Requires installed
from Debian under the same package names (python3-configobj, python3-requests,
python3-defusedxml, python3-psutil, logrotate), cached in the tests' machine-level cache
as chroot/rpm-userland-<key>/userland.tar (tests/cache.py; built once, network: the
Debian mirror). What the
Debian userland provides is registered in the root's rpm database as one package,
`debian-userland`, whose Provides are each found in the root (a path that exists, the
python3 version, a Python distribution that imports, an installed Debian package): rpm
then installs without --nodeps, and refuses while that record is missing.

The host's rpm runs with `--root`, so its scriptlets run chrooted in the root with its
/bin/sh and systemctl, inside private mount, PID and network namespaces. Two stand-ins
make the root answer as a Fedora/RHEL one would: RHEL's catch-all preset (`disable *`,
so only waprov's own preset file enables its units), and a .pth file adding
/usr/lib/python3.X/site-packages (where Fedora's python3 looks and the rpm installs;
Debian's python3 does not look there). The host is never changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Iterator, List, NamedTuple, Set

import pytest

from tests import cache
from tests.chroot import CACHE_KIND, base_tarball, in_chroot, ok, remove_tree
from tests.pkgfiles import CLEAN_ENV, Packages, out, packages
from tests.test_chroot import BASE_FORMAT, SUITE, enabled, write

USERLAND_FORMAT = "1"  # bump when the userland's recipe changes
DBPATH = "/var/lib/rpm"
UNITS = ["waprov-local.service", "waprov.service", "waprov-resourcedisk.service"]
DROPIN = "50-waprov.conf"
# What redhat-release (and fedora-release) ship: every unit without its own preset line is
# disabled, so waprov's units are enabled only through its 90-waprov.preset.
RHEL_PRESET = ("usr/lib/systemd/system-preset/99-default-disable.preset", "disable *\n")
# Run in the root's python3: one rpm Provides line for each Requires line read (name,
# operator, version), when the root has it; nothing for the others.
PROVIDES_PY = r"""
import importlib.metadata, os, re, subprocess, sys
abi = "%d.%d" % sys.version_info[:2]
for line in sys.stdin.read().splitlines():
    name = line.split()[0]
    dist = re.fullmatch(r"python(3(?:\.\d+)?)dist\((.+)\)", name)
    if name.startswith("/"):
        if os.access(name, os.X_OK):
            print(name)
    elif name == "python(abi)":
        print(f"python(abi) = {abi}")
    elif dist:
        if dist.group(1) in ("3", "3." + abi.split(".")[1]):
            try:
                print(f"{name} = {importlib.metadata.version(dist.group(2))}")
            except importlib.metadata.PackageNotFoundError:
                pass
    else:
        r = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Status} ${Version}", name],
                           capture_output=True, text=True)
        status, _, version = r.stdout.partition(" ")
        if r.returncode == 0 and status == "installed":
            upstream = version.split(":")[-1].rsplit("-", 1)[0]
            print(f"{name} = {upstream}")
"""
USERLAND_SPEC = """Name:           debian-userland
Version:        12
Release:        1
Summary:        What the Debian userland of this scratch root provides
License:        none
BuildArch:      noarch
{provides}
%description
The root's Debian packages, as the rpm database sees them (tests/test_rpm_install.py).

%files
"""


class RpmRoot(NamedTuple):
    root: str
    work: str  # host-side scratch (the userland record's build, rpm's HOME)
    pkgs: Packages


def query(*args: str) -> str:
    """`rpm -qp ...` on a package file, with a throwaway database (not the host's)."""
    with tempfile.TemporaryDirectory(prefix="waprov-rpmdb-") as db:
        return out(["rpm", "--dbpath", db, *args])


def rpm_requires(rpm: str) -> List[str]:
    """The rpm's Requires that something installed must provide (not rpm's own
    capabilities, not what the package provides itself)."""
    own = {line.split()[0] for line in query("-qp", "--provides", rpm).splitlines()}
    found = []
    for line in query("-qp", "--requires", rpm).splitlines():
        name = line.split()[0]
        if not name.startswith("rpmlib(") and name not in own:
            found.append(line.strip())
    return found


def debian_names(requires: List[str]) -> List[str]:
    """The Requires that are package names (not paths, python(abi), pythonX.Ydist()):
    Debian's packages of the same names are installed in the userland."""
    names = {r.split()[0] for r in requires}
    return sorted(n for n in names if not n.startswith("/") and "(" not in n)


def userland_tarball(pkgs: Packages) -> str:
    """The bookworm base with the rpm's Requires installed from Debian (cached)."""
    depends = out(["dpkg-deb", "-f", pkgs.deb, "Depends"]).strip()
    base = base_tarball(SUITE, BASE_FORMAT, f"waagent, {depends}")
    names = debian_names(rpm_requires(pkgs.rpm))

    def build(work: str) -> None:
        root = tempfile.mkdtemp(prefix="waprov-rpm-userland-")
        try:
            subprocess.run(["tar", "-xf", base, "-C", root, "--numeric-owner"], check=True, timeout=300)
            # network: what the base's apt cache lacks (logrotate) comes from the mirror, with
            # fresh package lists (the base's may name versions the mirror no longer has)
            ok(in_chroot(root, "apt-get", "update", net=True, timeout=600))
            install = ["apt-get", "install", "-y", "--no-install-recommends", *names]
            ok(in_chroot(root, *install, net=True, timeout=600))
            ok(in_chroot(root, "apt-get", "clean"))
            tarball = os.path.join(work, "userland.tar")
            subprocess.run(
                ["tar", "-cf", tarball, "--numeric-owner", "-C", root, "."], check=True, timeout=300
            )
        finally:
            remove_tree(root)

    # the base's entry name carries its own key
    entry_key = cache.key(USERLAND_FORMAT, os.path.basename(os.path.dirname(base)), *names)
    return os.path.join(cache.entry(CACHE_KIND, "rpm-userland", entry_key, build), "userland.tar")


def rpm(r: RpmRoot, *args: str) -> subprocess.CompletedProcess[str]:
    """The host's rpm on the root's database; scriptlets run chrooted in the root, in
    private mount, PID and network namespaces, with a shell as PID 1."""
    ns = ["unshare", "--mount", "--pid", "--net", "--fork", "--propagation", "private"]
    ns.append(f"--mount-proc={r.root}/proc")
    env = ["env", "-i", f"PATH={CLEAN_ENV['PATH']}", f"HOME={r.work}", "LC_ALL=C.UTF-8"]
    return subprocess.run(
        [*ns, *env, "sh", "-c", '"$@"', "sh", "rpm", "--root", r.root, "--dbpath", DBPATH, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def userland_record(r: RpmRoot, requires: List[str]) -> str:
    """The rpm that registers what the root's Debian userland provides."""
    provides = ok(in_chroot(r.root, "python3", "-c", PROVIDES_PY, stdin="\n".join(requires) + "\n"))
    top = os.path.join(r.work, "rpmbuild")
    spec = os.path.join(r.work, "debian-userland.spec")
    lines = "".join(f"Provides:       {p}\n" for p in provides.splitlines())
    write(spec, USERLAND_SPEC.format(provides=lines))
    env = {**CLEAN_ENV, "HOME": r.work}
    b = subprocess.run(
        ["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}", "--define", f"_tmppath {r.work}", spec],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert b.returncode == 0, f"rpmbuild of the userland record failed:\n{b.stdout}\n{b.stderr}"
    return os.path.join(top, "RPMS", "noarch", "debian-userland-12-1.noarch.rpm")


def tree(root: str) -> Set[str]:
    """Every path in the root (symlinks not followed), but the rpm database, /proc, /tmp."""
    skip = {DBPATH.lstrip("/"), "proc", "tmp"}
    found = set()
    for top, dirs, files in os.walk(root):
        rel = os.path.relpath(top, root)
        dirs[:] = [d for d in dirs if os.path.normpath(os.path.join(rel, d)) not in skip]
        found |= {os.path.normpath(os.path.join(rel, n)) for n in dirs + files}
    return found


@pytest.fixture
def rpm_root() -> Iterator[RpmRoot]:
    """A fresh copy of the userland with an empty rpm database of its own."""
    pkgs = packages()
    tarball = userland_tarball(pkgs)
    root = tempfile.mkdtemp(prefix="waprov-rpmroot-")
    work = tempfile.mkdtemp(prefix="waprov-rpmwork-")
    try:
        subprocess.run(["tar", "-xf", tarball, "-C", root, "--numeric-owner"], check=True, timeout=300)
        write(os.path.join(root, RHEL_PRESET[0]), RHEL_PRESET[1])
        abi = "import sys; print('%d.%d' % sys.version_info[:2])"
        python = ok(in_chroot(root, "python3", "-c", abi)).strip()
        # Fedora's python3 searches its site-packages (python3-libs owns the directory)
        site = f"usr/lib/python{python}/site-packages"
        os.makedirs(os.path.join(root, site))
        write(os.path.join(root, "usr/lib/python3/dist-packages/fedora-site-packages.pth"), f"/{site}\n")
        r = RpmRoot(root, work, pkgs)
        ok(rpm(r, "--initdb"))
        yield r
    finally:
        shutil.rmtree(work)
        remove_tree(root)
    assert not os.path.exists(root)


def test_the_rpm_installs_runs_its_scriptlets_and_erases_keeping_the_state(rpm_root: RpmRoot) -> None:
    r = rpm_root
    root = r.root
    package = r.pkgs.rpm  # rpm reads the package files on the host
    requires = rpm_requires(r.pkgs.rpm)
    before = tree(root)

    # the database knows nothing of the userland yet: every Requires is missing
    refused = rpm(r, "-i", package)
    assert refused.returncode != 0 and "Failed dependencies" in refused.stderr, refused.stderr
    for require in requires:
        assert f"\t{require} is needed by" in refused.stderr, (require, refused.stderr)
    assert rpm(r, "-q", "waprov").returncode != 0

    # registered (each capability found in the root), it installs: no --nodeps
    record = userland_record(r, requires)
    ok(rpm(r, "-i", record))
    installed = rpm(r, "-i", package)
    assert installed.returncode == 0, installed.stderr
    assert ok(rpm(r, "-q", "waprov")) == f"waprov-{r.pkgs.version}-1.noarch\n"
    verify = rpm(r, "-V", "waprov", "debian-userland")
    assert (verify.returncode, verify.stdout) == (0, ""), verify.stdout + verify.stderr

    # %post: the units enabled by waprov's preset (RHEL's default is `disable *`), nothing else
    assert enabled(root, *UNITS) == ["enabled"] * 3
    added = tree(root) - before
    wants = {f"etc/systemd/system/multi-user.target.wants/{unit}" for unit in UNITS}
    assert wants <= added, added
    listed = {p.lstrip("/") for p in query("-qlp", r.pkgs.rpm).split()}
    parents = {os.path.dirname(p) for p in listed}
    assert added - wants - listed - parents == set(), sorted(added - wants - listed)
    st = os.lstat(os.path.join(root, "var/lib/waprov"))
    assert (oct(st.st_mode), st.st_uid) == (oct(0o40700), 0)
    assert os.listdir(os.path.join(root, "var/lib/waprov")) == []

    # the installed files run, with the root's python3 and Debian's libraries
    version = ok(in_chroot(root, "waprov", "-version")).splitlines()
    assert version[0] == f"waprov-{r.pkgs.version} running on debian 12", version
    ok(in_chroot(root, "python3", "-c", "import configobj, defusedxml, psutil, requests, waprov.cli"))
    # running it changed none of the shipped files (bytecode included); a new file would be
    # left behind by the erase, checked below
    verify = rpm(r, "-V", "waprov")
    assert (verify.returncode, verify.stdout) == (0, ""), verify.stdout + verify.stderr

    # a VM's state, the drop-ins `waprov -enable` writes without the package, an admin's own
    etc_units = os.path.join(root, "etc/systemd/system")
    shipped = os.path.join(root, f"usr/lib/systemd/system/waagent.service.d/{DROPIN}")
    with open(shipped, encoding="utf-8") as f:
        dropin = f.read()
    write(f"{etc_units}/waagent.service.d/{DROPIN}", dropin)
    write(f"{etc_units}/walinuxagent.service.d/{DROPIN}", dropin)
    write(f"{etc_units}/walinuxagent.service.d/10-admin.conf", "[Service]\nNice=1\n")
    write(os.path.join(root, "var/lib/waprov/provisioned"), "vm-id\n", 0o600)

    erased = rpm(r, "-e", "waprov")
    assert erased.returncode == 0, erased.stderr
    assert rpm(r, "-q", "waprov").returncode != 0
    # %preun disabled the units, %postun removed the two drop-ins; every installed file is
    # gone; the state directory stays (rpm keeps a directory that is not empty)
    kept = {
        "var/lib/waprov",
        "var/lib/waprov/provisioned",
        "etc/systemd/system/walinuxagent.service.d",
        "etc/systemd/system/walinuxagent.service.d/10-admin.conf",
    }
    after = tree(root)
    assert after - before == kept, sorted(after - before)
    assert before - after == set(), sorted(before - after)
    assert os.stat(os.path.join(root, "var/lib/waprov")).st_mode & 0o7777 == 0o700
    assert ok(rpm(r, "-V", "debian-userland")) == ""
