"""The e2e guest images: Debian 12 root filesystems for qemu (and one of Debian 13).

`python3 -m tests.e2e.image OUTDIR DEB` makes OUTDIR/waprov.img (the .deb built by `make
deb`, installed with apt beside Debian's waagent package and swapped in with `waprov
-enable`), OUTDIR/cloudinit.img (the same base with Debian's cloud-init instead of waprov,
for the timing comparison), OUTDIR/waprov-nm.img (as waprov.img, with NetworkManager
managing the NIC and Debian's ssh.socket instead of ssh.service, and no guest agent:
Debian's waagent conflicts with network-manager), OUTDIR/trixie.img (waprov.img made from
Debian 13), and the kernel and initramfs each image boots, its own (OUTDIR/vmlinuz and
OUTDIR/initrd.img of waprov.img, OUTDIR/vmlinuz-<variant>, initrd.img-<variant> of the others).
Each image is an ext4 file system labelled "root" made with `mkfs.ext4 -d`; scenarios boot
copy-on-write overlays of it.

In two steps, so that a change of waprov's code does not rebuild an image:
- the variant's **base**, everything but waprov (mmdebstrap from the Debian mirror and
  guest-setup.sh; for the waprov variants with the .deb's Depends installed from Debian),
  is kept in the tests' machine-level cache (tests/cache.py: $WAPROV_TEST_CACHE/e2e/
  <variant>-<key>/), its key a hash of its inputs: the package lists, the suite, the
  mirror, the .deb's Depends field, guest-setup.sh and this file. It is built again only
  when one of them changes (or the entry is incomplete);
- at every run, each waprov variant's base is copied to OUTDIR and the .deb installed in
  the copy (loop-mounted in a private mount namespace, no network: its dependencies are
  in the base) with apt, then `waprov -enable` (guest-waprov.sh), a few seconds each.
  cloudinit.img is a symbolic link to its base (the scenarios' overlays never write it).
Downloaded .debs are kept in $WAPROV_TEST_CACHE/e2e-debs for the next base build (the
mirror is still asked for the current package lists).
"""

from __future__ import annotations

import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List

from tests import cache
from tests.loopdisk import one_at_a_time

HERE = os.path.dirname(os.path.abspath(__file__))
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SETUP = os.path.join(HERE, "guest-setup.sh")  # the base
INSTALL = os.path.join(HERE, "guest-waprov.sh")  # the per-run step
CACHE_KIND = "e2e"
BASE_FORMAT = "1"  # bump when the base's recipe changes outside this file and guest-setup.sh
IMAGE_SIZE = "3G"
# Both variants: an Azure-like Debian image with systemd, udev, sshd, sudo, the cloud
# kernel, Debian's guest agent and waprov's runtime dependencies from Debian.
PACKAGES = [
    "systemd", "systemd-sysv", "udev", "dbus", "kmod", "iproute2", "libnss-myhostname",
    "openssh-server", "sudo", "python3", "linux-image-cloud-amd64", "initramfs-tools",
    "waagent", "e2fsprogs", "parted", "fdisk", "openssl", "eject",
    "python3-configobj", "python3-requests", "python3-defusedxml", "python3-psutil",
]  # fmt: skip
# Per variant: its Debian suite, what it has beside PACKAGES and what it has not
# (guest-setup.sh does the rest). Debian's waagent package Conflicts: network-manager, so
# the NetworkManager variant has no guest agent. "trixie" is the waprov image on Debian
# 13 (python3 3.13: the .deb's Depends pull python3-crypt-r), with its own kernel.
VARIANTS = {
    "waprov": (SUITE, [], []),
    "cloudinit": (SUITE, [], []),
    "waprov-nm": (SUITE, ["network-manager"], ["waagent"]),
    "trixie": ("trixie", [], []),
}
# Every variant boots its own kernel and initramfs: "waprov"'s are OUTDIR/vmlinuz and
# OUTDIR/initrd.img, the others' carry the variant's name (tests/e2e/vm.py picks them).
# The bases are built at different times (each when its own inputs change), so a
# Debian kernel update between two builds must not make a guest boot a kernel whose
# modules its root file system lacks.
KERNEL_VARIANTS = tuple(VARIANTS)
WAPROV_VARIANTS = ("waprov", "waprov-nm", "trixie")  # the .deb is installed in these


def packages(variant: str) -> List[str]:
    _, extra, without = VARIANTS[variant]
    return [p for p in PACKAGES if p not in without] + extra


# Modules the initramfs needs to find the root file system on qemu's virtio-scsi disk
# (udev in the initramfs loads them by modalias); MODULES=list keeps it small and quick
# to unpack under TCG.
INITRAMFS_HOOK = """#!/bin/sh
case "$1" in prereqs) exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
for m in virtio_pci virtio_scsi virtio_blk virtio_net sd_mod sr_mod ata_piix ext4; do
    manual_add_modules "$m"
done
"""


def _run(argv: List[str]) -> None:
    print("+ " + " ".join(argv[:6]) + (" …" if len(argv) > 6 else ""), flush=True)
    subprocess.run(argv, check=True)


def deb_cache() -> str:
    return os.path.join(cache.directory(), "e2e-debs")


def bootstrap(variant: str, rootdir: str, depends: str) -> None:
    """mmdebstrap a root into `rootdir` and make it the `variant` guest's base
    (guest-setup.sh; `depends`: the .deb's Depends, installed in a waprov variant)."""
    debs = deb_cache()
    os.makedirs(debs, exist_ok=True)
    hook_dir = tempfile.mkdtemp(prefix="waprov-e2e-hooks-")
    try:
        hook = os.path.join(hook_dir, "e2e-modules")
        with open(hook, "w", encoding="ascii") as f:
            f.write(INITRAMFS_HOOK)
        os.chmod(hook, 0o755)  # noqa: S103 (an initramfs hook: root runs it, everyone may read it)
        _run(
            [
                # mmdebstrap mounts /proc, /sys and /dev in the root: in a private mount
                # namespace they cannot outlive it
                *["unshare", "--mount", "--propagation", "private", "--fork"],
                *["mmdebstrap", "--quiet", "--mode=root", "--variant=minbase", "--format=directory"],
                "--include=" + ",".join(packages(variant)),
                "--aptopt=APT::Install-Recommends false",
                "--setup-hook=mkdir -p \"$1\"/etc/initramfs-tools/hooks \"$1\"/etc/initramfs-tools/conf.d",
                f"--setup-hook=copy-in {hook} /etc/initramfs-tools/hooks",
                "--setup-hook=echo MODULES=list > \"$1\"/etc/initramfs-tools/conf.d/e2e.conf",
                # the download cache of earlier runs (mmdebstrap's documented recipe)
                "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives",
                f"--setup-hook=sync-in {debs} /var/cache/apt/archives",
                f"--customize-hook={SETUP} \"$1\" {variant} {shlex.quote(depends)}",
                "--skip=download/empty",
                f"--customize-hook=sync-out /var/cache/apt/archives {debs}",
                VARIANTS[variant][0], rootdir, MIRROR,
            ]
        )  # fmt: skip
    finally:
        shutil.rmtree(hook_dir, ignore_errors=True)


def make_fs(rootdir: str, image: str) -> None:
    if os.path.exists(image):
        os.unlink(image)
    _run(["mkfs.ext4", "-q", "-L", "root", "-d", rootdir, image, IMAGE_SIZE])


def base_key(variant: str, depends: str) -> str:
    """The hash of everything the variant's base is made from."""
    suite, extra, without = VARIANTS[variant]
    with open(os.path.abspath(__file__), "rb") as f:
        this = f.read()
    with open(SETUP, "rb") as f:
        setup = f.read()
    lists = ",".join(packages(variant)) + "|" + ",".join(extra) + "|" + ",".join(without)
    return cache.key(BASE_FORMAT, variant, suite, MIRROR, IMAGE_SIZE, lists, depends, setup, this)


def build_base(variant: str, depends: str, work: str) -> None:
    """The variant's base image (and its kernel and initramfs) into `work`."""
    rootdir = os.path.join(work, "root")
    try:
        bootstrap(variant, rootdir, depends)
        if variant in KERNEL_VARIANTS:
            kernels = sorted(glob.glob(os.path.join(rootdir, "boot", "vmlinuz-*")))
            initrds = sorted(glob.glob(os.path.join(rootdir, "boot", "initrd.img-*")))
            if len(kernels) != 1 or len(initrds) != 1:
                raise SystemExit(f"e2e image: expected one kernel and initrd, found {kernels} {initrds}")
            shutil.copyfile(kernels[0], os.path.join(work, "vmlinuz"))
            shutil.copyfile(initrds[0], os.path.join(work, "initrd.img"))
        make_fs(rootdir, os.path.join(work, "base.img"))
    finally:
        shutil.rmtree(rootdir, ignore_errors=True)


# The per-run step, in a private mount namespace: the copy of the base loop-mounted (the
# loop device goes when it is unmounted, or with the namespace), /proc, /sys and /dev as
# mmdebstrap gives its hooks, then guest-waprov.sh.
_INSTALL = """set -eu
img=$1 mnt=$2 script=$3 deb=$4
mount -o loop "$img" "$mnt"
mount -t proc proc "$mnt/proc"
mount -t sysfs sysfs "$mnt/sys"
mount --bind /dev "$mnt/dev"
"$script" "$mnt" "$deb"
umount "$mnt/dev" "$mnt/sys" "$mnt/proc"
umount "$mnt"
"""


def install_waprov(image: str, deb: str) -> None:
    """The .deb installed with apt and swapped in (guest-waprov.sh) on the image file."""
    mnt = tempfile.mkdtemp(prefix="waprov-e2e-mnt-")
    try:
        # loop devices: one user at a time with the resource-disk tests (tests/loopdisk.py)
        with one_at_a_time():
            _run(["unshare", "--mount", "--propagation", "private", "sh", "-c", _INSTALL, "sh",
                  image, mnt, INSTALL, deb])  # fmt: skip
        _run(["e2fsck", "-f", "-n", image])  # the file system is clean after the change
    finally:
        os.rmdir(mnt)


def deb_depends(deb: str) -> str:
    p = subprocess.run(["dpkg-deb", "-f", deb, "Depends"], capture_output=True, text=True, check=True)
    return p.stdout.strip()


def build(outdir: str, deb: str) -> None:
    started = time.monotonic()
    os.makedirs(outdir, exist_ok=True)
    depends = deb_depends(deb)
    seconds: Dict[str, Dict[str, Any]] = {}
    for variant in VARIANTS:
        began = time.monotonic()
        needs = depends if variant in WAPROV_VARIANTS else ""
        built: List[bool] = []

        def make(work: str, variant: str = variant, needs: str = needs, built: List[bool] = built) -> None:
            built.append(True)
            build_base(variant, needs, work)

        base = cache.entry(CACHE_KIND, variant, base_key(variant, needs), make)
        cached = round(time.monotonic() - began, 1)
        print(f"e2e image {variant}: base {base} ({'built' if built else 'cached'}, {cached} s)", flush=True)
        if variant in KERNEL_VARIANTS:
            suffix = "" if variant == "waprov" else f"-{variant}"
            for name in ("vmlinuz", "initrd.img"):
                shutil.copyfile(os.path.join(base, name), os.path.join(outdir, name + suffix))
        image = os.path.join(outdir, f"{variant}.img")
        if os.path.lexists(image):
            os.unlink(image)
        if variant in WAPROV_VARIANTS:
            _run(["cp", "--sparse=always", os.path.join(base, "base.img"), image])
            install_waprov(image, deb)
        else:
            os.symlink(os.path.join(base, "base.img"), image)
        total = round(time.monotonic() - began, 1)
        seconds[variant] = {"base": "built" if built else "cached", "base_s": cached, "s": total}
    with open(os.path.join(outdir, "build.json"), "w", encoding="utf-8") as f:
        total = round(time.monotonic() - started, 1)
        json.dump({"deb": os.path.abspath(deb), "seconds": total, "per_variant": seconds}, f)
    print(f"e2e images in {outdir} ({time.monotonic() - started:.0f} s)", flush=True)


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        print("usage: python3 -m tests.e2e.image OUTDIR DEB", file=sys.stderr)
        return 2
    build(argv[0], os.path.abspath(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
