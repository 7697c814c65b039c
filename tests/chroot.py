"""Debian chroots for the tests (test_chroot.py: bookworm; test_trixie.py: trixie).

A base system (mmdebstrap, variant apt, plus the packages a test names) is built once and
cached in the tests' machine-level cache (tests/cache.py: $WAPROV_TEST_CACHE/chroot/
<suite>-<key>/base.tar, not in the checkout, so a clean clone finds it), the package lists
and the downloaded .debs of what a test installs later kept in its apt cache; the key
covers the recipe, so another package list makes a new base. Each test
unpacks the base into a fresh directory and removes it. Commands run in the chroot inside
private mount and PID namespaces (their mounts go away with them), and a directory is only
deleted when nothing is mounted below it. The host is never changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import List, Optional, Sequence

from tests import cache
from tests.pkgfiles import CLEAN_ENV, ROOT

MIRROR = "http://deb.debian.org/debian"
CACHE_KIND = "chroot"  # tests/cache.py: the entries are <cache>/chroot/<suite>-<key>/base.tar
PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
ENV = [PATH, "HOME=/root", "LC_ALL=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"]


def mounts_below(path: str) -> List[str]:
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")  # \040 and the like
            if point == path or point.startswith(path + "/"):
                found.append(point)
    return found


def remove_tree(path: str) -> None:
    """Delete a chroot directory, never through a mount point below it."""
    for point in sorted(mounts_below(path), reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False)
    left = mounts_below(path)
    if left:
        raise RuntimeError(f"still mounted below {path}, not deleted: {left}")
    shutil.rmtree(path)


def base_tarball(suite: str, recipe: str, download: str, include: Sequence[str] = ()) -> str:
    """The cached base system of `suite` with `include` installed and what `download` (an
    `apt-get satisfy` dependency string) needs downloaded; built (network: the Debian
    mirror) if missing. `recipe`: bump it when the recipe changes in another way."""
    fetch = f"chroot \"$1\" apt-get satisfy --download-only -y --no-install-recommends '{download}'"
    options = [
        *["--quiet", "--mode=root", "--variant=apt", "--format=tar"],
        f"--include={','.join(['systemd', *include])}",
        # keep the package lists and the downloaded .debs: installs need no network
        "--skip=cleanup/apt",
        f"--customize-hook={fetch}",
        '--customize-hook=rm -f "$1"/var/cache/apt/*.bin',
    ]

    def build(work: str) -> None:
        tmp = os.path.join(work, "tmp")
        os.mkdir(tmp)
        try:
            argv = [
                # mmdebstrap mounts /proc, /sys and /dev in its root: in a private namespace
                # they cannot outlive it, whatever happens
                *["unshare", "--mount", "--propagation", "private", "--fork"],
                *["mmdebstrap", *options, suite, os.path.join(work, "base.tar"), MIRROR],
            ]
            env = {**CLEAN_ENV, "TMPDIR": tmp}
            r = subprocess.run(argv, capture_output=True, text=True, timeout=1200, check=False, env=env)
            assert r.returncode == 0, f"mmdebstrap failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        finally:
            remove_tree(tmp)

    entry_key = cache.key(recipe, suite, MIRROR, download, *include, *options)
    return os.path.join(cache.entry(CACHE_KIND, suite, entry_key, build), "base.tar")


def unpack(tarball: str) -> str:
    """A fresh directory with the base unpacked in it (remove it with remove_tree)."""
    root = tempfile.mkdtemp(prefix="waprov-chroot-")
    try:
        subprocess.run(["tar", "-xf", tarball, "-C", root, "--numeric-owner"], check=True, timeout=300)
    except BaseException:
        remove_tree(root)
        raise
    return root


def in_chroot(
    root: str, *argv: str, net: bool = False, timeout: float = 300, stdin: Optional[str] = None
) -> subprocess.CompletedProcess[str]:
    """argv in the chroot, with its own /proc, without network unless `net`; a shell is
    its PID 1 (tools behave oddly as PID 1)."""
    ns = ["unshare", "--mount", "--pid", "--fork", "--propagation", "private", f"--mount-proc={root}/proc"]
    if not net:
        ns.append("--net")
    return subprocess.run(
        [*ns, "chroot", root, "env", "-i", *ENV, "sh", "-c", '"$@"', "sh", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# Inside private mount, PID and network namespaces: the chroot's / a mount point of its own
# (the tests' sandbox remounts / read-only), the host's /dev, a fresh /proc and /sys, the
# checkout read-only at /waprov, loopback up; then the command, as in_chroot runs it.
_SYSTEM = """set -eu
root=$1
shift
mount --bind "$root" "$root"
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mkdir -p "$root/waprov"
mount --bind "$CHECKOUT" "$root/waprov"
mount -o remount,bind,ro "$root/waprov"
exec chroot "$root" env -i "$@"
"""


def in_system(
    root: str, *argv: str, env: Sequence[str] = (), timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """argv in the chroot as a small system of its own (see _SYSTEM), with the checkout at
    /waprov (the working directory) and `env` added to the environment; no network but
    loopback."""
    ns = ["unshare", "--mount", "--pid", "--net", "--fork", "--propagation", "private"]
    inner = ["ip link set lo up", "cd /waprov", 'exec "$@"']
    return subprocess.run(
        [*ns, "sh", "-c", _SYSTEM, "sh", root, *ENV, *env, "sh", "-c", " && ".join(inner), "sh", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**CLEAN_ENV, "CHECKOUT": ROOT},
    )


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"{r.args[-3:]}: rc {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout
