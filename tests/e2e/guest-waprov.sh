#!/bin/sh
# The per-run step of a waprov e2e image (tests/e2e/image.py): installs the .deb $2 with
# apt in the guest's root $1 (a copy of the variant's cached base, loop-mounted, with its
# /proc, /sys and /dev mounted; the .deb's dependencies are in the base: no network) and
# swaps it in with `waprov -enable`, as an image builder would.
set -eu
root=$1 deb=$2
in_root() { chroot "$root" env DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
cp "$deb" "$root/tmp/"
in_root apt-get install -y -q --no-install-recommends "/tmp/$(basename "$deb")"
rm "$root/tmp/$(basename "$deb")"
in_root waprov -enable
