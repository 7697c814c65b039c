"""`make demo`, last part: `waprov -resourcedisk` on a blank loop device, in a sandbox.

A sparse 512 MiB image is attached as a loop device (detached again at the end); the
sandbox runs the plan, a first pass (partition, mkfs, mount, README, swapfile), a second
pass (nothing to do) and WALinuxAgent's own resource-disk handler when `make` unpacked it
(it finds nothing to do either). A fake /sys/bus/vmbus tree makes both find the loop
device as an Azure Gen1 resource disk. Swap is turned off and the disk unmounted before the
sandbox exits: this host is not changed.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.inside_disk import WA_DIR  # noqa: E402
from tests.loopdisk import disk_scenario, loop_disk  # noqa: E402

CONF = {
    "ResourceDisk.Format": "y",
    "ResourceDisk.Filesystem": "ext4",
    "ResourceDisk.MountPoint": "/mnt/resource",
    "ResourceDisk.EnableSwap": "y",
    "ResourceDisk.SwapSizeMB": "64",
}


def log_lines(text: str) -> None:
    for line in text.splitlines():
        print("  " + re.sub(r"^\S+ ", "", line))


def main() -> int:
    print("\n== waprov -resourcedisk on a blank 512 MiB loop device, in a sandbox ==")
    print("waagent.conf: " + ", ".join(f"{k}={v}" for k, v in CONF.items()))
    print("A fake /sys/bus/vmbus tree names the loop device as a Gen1 VM's resource disk.")
    with tempfile.TemporaryDirectory(prefix="waprov-demo-") as tmp, loop_disk(tmp, 512) as dev:
        plain = {"conf": CONF, "override": False}
        runs = [{**plain, "args": ["-resourcedisk", "--dry-run"]}, plain, plain]
        r = disk_scenario(tmp, {"device": dev, "runs": runs, "vmbus": "gen1", "ga": os.path.isdir(WA_DIR)})
    dry, first, second = r["runs"]
    print("\n$ waprov -resourcedisk --dry-run")
    for line in dry["stdout"].splitlines():
        print("  " + line)
    print(f"\n$ waprov -resourcedisk      # exit code {first['rc']}")
    log_lines(first["stderr"])
    print(f"\n$ waprov -resourcedisk      # again: exit code {second['rc']}")
    log_lines(second["stderr"])
    state = first["state"]
    print("\nSummary")
    for device, mp, fs, opts in state["mounts"]:
        print(f"  mounted         {device} on {mp} ({fs}, {opts})")
    for path, kind, size in state["swaps"]:
        print(f"  swap            {path} ({kind}, {int(size) // 1024} MiB usable)")
    for path, entry in state["files"].items():
        print(f"  file            {path} mode {entry['mode']:04o}, {entry['size']} bytes")
    print(f"  second pass     {'changed nothing' if second['state'] == state else 'CHANGED the disk'}")
    if "ga" in r:
        ga = r["ga"]["output"]
        said = [m for m in ("is already mounted", "Swap already enabled") if m in ga]
        print(f"  WALinuxAgent    its own pass logged: {'; '.join(said)}; "
              f"{'changed nothing' if r['ga']['state'] == state else 'CHANGED the disk'}")  # fmt: skip
    print(f"  cleanup         {', '.join(r['cleanup'])}; {dev} detached")
    return 0 if first["rc"] == 0 and second["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
