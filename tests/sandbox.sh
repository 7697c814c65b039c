#!/bin/bash
# Runs inside `unshare --mount --uts --ipc --pid --fork --propagation private --mount-proc`:
# a fresh tmpfs on /run holds the upper layers of overlays over the host's directories, so
# everything the command writes there stays in the sandbox and vanishes with it.
# Usage: sandbox.sh <setup shell code> <command> [args...]
set -euo pipefail
setup=$1
shift
mount -t tmpfs -o mode=0755 waprov-sandbox /run
mkdir -p /run/sandbox /run/lock
for d in /etc /home /root /var /usr /mnt /srv /opt /tmp; do
    [ -d "$d" ] || continue
    layer=/run/sandbox/$(echo "$d" | tr / _)
    mkdir -p "$layer/upper" "$layer/work"
    mount -t overlay overlay -o "lowerdir=$d,upperdir=$layer/upper,workdir=$layer/work" "$d"
done
hostname waprov-sandbox
bash -euo pipefail -c "$setup"
exec "$@"
