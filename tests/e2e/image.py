"""The e2e guest images: Debian 12 root filesystems for qemu (and one of Debian 13),
built once per `make e2e`.

`python3 -m tests.e2e.image OUTDIR DEB` builds, with mmdebstrap and the network (the
Debian mirror), OUTDIR/waprov.img (the .deb built by `make deb`, installed with apt
beside Debian's waagent package and swapped in with `waprov -enable`), OUTDIR/
cloudinit.img (the same base with Debian's cloud-init instead of waprov, for the timing
comparison), OUTDIR/waprov-nm.img (as waprov.img, with NetworkManager managing the NIC
and Debian's ssh.socket instead of ssh.service, and no guest agent: Debian's waagent
conflicts with network-manager), OUTDIR/trixie.img (waprov.img made from Debian 13), and
the kernels and initramfs the Debian 12 images boot (OUTDIR/vmlinuz, OUTDIR/initrd.img)
and the Debian 13 one (OUTDIR/vmlinuz-trixie, OUTDIR/initrd.img-trixie). Each image is
an ext4 file system labelled "root" made with `mkfs.ext4 -d` (no loop device);
scenarios boot copy-on-write overlays of it.
Downloaded .debs are kept in .cache/e2e/debs between runs (the mirror is still asked for
the current package lists, so a run always installs the current packages).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
DEB_CACHE = os.path.join(ROOT, ".cache", "e2e", "debs")
SETUP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guest-setup.sh")
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
# The variants whose kernel and initramfs the guests boot: "waprov"'s are OUTDIR/vmlinuz
# and OUTDIR/initrd.img (every variant of its suite boots them), the others' carry the
# variant's name (tests/e2e/vm.py picks them).
KERNEL_VARIANTS = ("waprov", "trixie")


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


def bootstrap(variant: str, rootdir: str, deb: str) -> None:
    """mmdebstrap a root into `rootdir` and make it the `variant` guest (guest-setup.sh)."""
    os.makedirs(DEB_CACHE, exist_ok=True)
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
                f"--setup-hook=sync-in {DEB_CACHE} /var/cache/apt/archives",
                f"--customize-hook={SETUP} \"$1\" {variant} {deb}",
                "--skip=download/empty",
                f"--customize-hook=sync-out /var/cache/apt/archives {DEB_CACHE}",
                VARIANTS[variant][0], rootdir, MIRROR,
            ]
        )  # fmt: skip
    finally:
        shutil.rmtree(hook_dir, ignore_errors=True)


def make_fs(rootdir: str, image: str) -> None:
    if os.path.exists(image):
        os.unlink(image)
    _run(["mkfs.ext4", "-q", "-L", "root", "-d", rootdir, image, IMAGE_SIZE])


def build(outdir: str, deb: str) -> None:
    started = time.monotonic()
    os.makedirs(outdir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="waprov-e2e-root-", dir=outdir)
    seconds: Dict[str, float] = {}
    try:
        for variant in VARIANTS:
            began = time.monotonic()
            rootdir = os.path.join(work, variant)
            bootstrap(variant, rootdir, deb)
            if variant in KERNEL_VARIANTS:
                kernels = sorted(glob.glob(os.path.join(rootdir, "boot", "vmlinuz-*")))
                initrds = sorted(glob.glob(os.path.join(rootdir, "boot", "initrd.img-*")))
                if len(kernels) != 1 or len(initrds) != 1:
                    raise SystemExit(f"e2e image: expected one kernel and initrd, found {kernels} {initrds}")
                suffix = "" if variant == "waprov" else f"-{variant}"
                shutil.copyfile(kernels[0], os.path.join(outdir, f"vmlinuz{suffix}"))
                shutil.copyfile(initrds[0], os.path.join(outdir, f"initrd.img{suffix}"))
            make_fs(rootdir, os.path.join(outdir, f"{variant}.img"))
            shutil.rmtree(rootdir)
            seconds[variant] = round(time.monotonic() - began, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with open(os.path.join(outdir, "build.json"), "w", encoding="utf-8") as f:
        total = round(time.monotonic() - started, 1)
        json.dump({"deb": os.path.abspath(deb), "seconds": total, "per_variant_s": seconds}, f)
    print(f"e2e images in {outdir} ({time.monotonic() - started:.0f} s)", flush=True)


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        print("usage: python3 -m tests.e2e.image OUTDIR DEB", file=sys.stderr)
        return 2
    build(argv[0], os.path.abspath(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
