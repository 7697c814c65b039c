#!/bin/bash
# Runs inside `unshare --mount --uts --ipc --pid --fork --propagation private --mount-proc`:
# a fresh tmpfs on /run holds the upper layers of overlays over the host's directories, so
# everything the command writes there stays in the sandbox and vanishes with it.
# Usage: sandbox.sh <setup shell code> <command> [args...]
# The checkout (tests need it) is under /work or the like: not overlaid, read as it is.
# Everything else of / is read-only in here: a write outside the overlays, /run, /dev,
# /proc and /sys fails instead of reaching the host.
set -euo pipefail
setup=$1
shift
mount -t tmpfs -o mode=0755 waprov-sandbox /run
mkdir -p /run/sandbox /run/lock
# SANDBOX_OUT: a host directory seen inside as /run/out (results leave the sandbox there)
if [ -n "${SANDBOX_OUT:-}" ]; then
    mkdir -p /run/out
    mount --bind "$SANDBOX_OUT" /run/out
fi
# in a private network namespace (sandbox_run(net=True)) only loopback exists: bring it up
if [ -n "${SANDBOX_NET:-}" ]; then
    ip link set lo up
fi
for d in /etc /home /root /var /usr /mnt /srv /opt /tmp; do
    [ -d "$d" ] || continue
    layer=/run/sandbox/$(echo "$d" | tr / _)
    mkdir -p "$layer/upper" "$layer/work"
    # the merged directory shows the upper layer's mode and owner: keep the host's (/tmp: 1777)
    chmod --reference="$d" "$layer/upper"
    chown --reference="$d" "$layer/upper"
    mount -t overlay overlay -o "lowerdir=$d,upperdir=$layer/upper,workdir=$layer/work" "$d"
done
# per-mount flag of this namespace's view of /: the host's / stays as it is
mount -o remount,bind,ro /
hostname waprov-sandbox
bash -euo pipefail -c "$setup"
exec "$@"
