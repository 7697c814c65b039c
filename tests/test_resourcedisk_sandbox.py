"""`waprov -resourcedisk` for real: loop devices, parted/sfdisk/mkfs/mount/swapon in a sandbox.

Each test attaches a sparse loop device (tests/loopdisk.py: always detached, swap always
off again), lays out the case with real tools, runs the real command one or more times
inside a sandbox (tests/inside_disk.py) and asserts on the disk's state after each run.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any, Dict, List, Tuple

import pytest

from tests.inside_disk import WA_DIR
from tests.loopdisk import disk_scenario, loop_disk

MP = "/mnt/resource"
SWAPFILE = MP + "/swapfile"
README = MP + "/DATALOSS_WARNING_README.txt"
# WA §8 step 7, as the spec states it
WARNING_TEXT = (
    "WARNING: THIS IS A TEMPORARY DISK.\n\n"
    "Any data stored on this drive is SUBJECT TO LOSS and THERE IS NO WAY TO RECOVER IT.\n\n"
    "Please do not use this disk for storing any personal or application data.\n\n"
    "For additional details to please refer to the MSDN documentation at :\n"
    "http://msdn.microsoft.com/en-us/library/windowsazure/jj672979.aspx\n"
)
MIB = 1 << 20
MBR_NTFS = "echo 'label: dos\nstart=2048, type=7' | sfdisk -q $DISK && partx -u $DISK"
MBR_LINUX = "echo 'label: dos\nstart=2048, type=83' | sfdisk -q $DISK && partx -u $DISK"
KEEP = "mkdir -p /run/m && mount $PART /run/m && echo kept > /run/m/keep && umount /run/m"


def conf(fs: str = "ext4", swap_mb: int = 0, **extra: str) -> Dict[str, str]:
    keys = {"ResourceDisk.Format": "y", "ResourceDisk.Filesystem": fs, "ResourceDisk.MountPoint": MP}
    if swap_mb:
        keys.update({"ResourceDisk.EnableSwap": "y", "ResourceDisk.SwapSizeMB": str(swap_mb)})
    keys.update({k.replace("_", "."): v for k, v in extra.items()})
    return keys


def disk(tmp_path: Any, runs: List[Dict[str, Any]], size_mb: int = 512, **spec: Any) -> Dict[str, Any]:
    with loop_disk(str(tmp_path), size_mb) as dev:
        return disk_scenario(str(tmp_path), {"device": dev, "runs": runs, **spec})


def table(state: Dict[str, Any]) -> Tuple[str, List[str]]:
    """(label, partition lines) of `parted -m print`."""
    lines = state["table"].splitlines()
    label = lines[1].split(":")[5] if len(lines) > 1 else ""
    return label, [line for line in lines[2:] if line[:1].isdigit()]


def mounted_at(state: Dict[str, Any]) -> List[Tuple[str, str]]:
    return [(m[1], m[2]) for m in state["mounts"]]


def swap_sizes(state: Dict[str, Any]) -> Dict[str, int]:
    """{path: size in KiB} of the active swaps (the kernel's view: one page less)."""
    return {s[0]: int(s[2]) for s in state["swaps"]}


def ok(run: Dict[str, Any]) -> Dict[str, Any]:
    assert run["rc"] == 0, run["stderr"]
    state: Dict[str, Any] = run["state"]
    return state


def assert_ready(state: Dict[str, Any], fs: str = "ext4") -> None:
    assert mounted_at(state) == [(MP, fs)]
    assert state["fstype"] == fs
    assert state["mount_point_mode"] == 0o755
    assert state["files"][README]["text"] == WARNING_TEXT
    assert state["files"][README]["mode"] == 0o644


def assert_swap(state: Dict[str, Any], mb: int) -> None:
    entry = state["files"][SWAPFILE]
    assert (entry["size"], entry["mode"]) == (mb * MIB, 0o600)
    sizes = swap_sizes(state)
    assert SWAPFILE in sizes
    assert mb * 1024 - 64 < sizes[SWAPFILE] < mb * 1024  # the kernel counts the usable pages


def test_blank_disk_gets_a_partition_a_filesystem_and_swap_and_a_rerun_changes_nothing(tmp_path: Any) -> None:
    r = disk(tmp_path, [{"conf": conf(swap_mb=16)}, {"conf": conf(swap_mb=16)}])
    assert table(r["initial"])[0] == "unknown"
    first, second = ok(r["runs"][0]), ok(r["runs"][1])
    label, parts = table(first)
    assert label == "gpt" and len(parts) == 1
    assert_ready(first)
    assert_swap(first, 16)
    assert second == first  # same inodes, sizes, modes, mounts, swaps
    assert "already mounted" in r["runs"][1]["stderr"] and "Swap already enabled" in r["runs"][1]["stderr"]
    assert r["cleanup"] == [f"swapoff {SWAPFILE}", f"umount {MP}"]


def test_mbr_partition_of_ntfs_type_becomes_linux_and_is_formatted(tmp_path: Any) -> None:
    r = disk(tmp_path, [{"conf": conf()}], setup=[MBR_NTFS])
    assert r["initial"]["ptype"] == "7"
    state = ok(r["runs"][0])
    assert table(state)[0] == "msdos" and state["ptype"] == "83"
    assert_ready(state)


def test_gpt_with_two_partitions_becomes_one_partition_over_the_disk(tmp_path: Any) -> None:
    setup = [
        "parted -s $DISK mklabel gpt mkpart a 1MiB 100MiB mkpart b 100MiB 200MiB",
        "mkfs.ext4 -q -F $PART",
        KEEP,
    ]
    r = disk(tmp_path, [{"conf": conf()}], setup=setup)
    assert len(table(r["initial"])[1]) == 2
    state = ok(r["runs"][0])
    label, parts = table(state)
    assert label == "gpt" and len(parts) == 1
    assert int(parts[0].split(":")[2].rstrip("B")) > 500 * MIB  # it ends near the disk's end
    assert_ready(state)
    assert MP + "/keep" not in state["files"]  # reformatted


def test_formatted_ext4_partition_is_mounted_without_mkfs(tmp_path: Any) -> None:
    r = disk(tmp_path, [{"conf": conf()}], setup=[MBR_LINUX, "mkfs.ext4 -q -F $PART", KEEP])
    state = ok(r["runs"][0])
    assert_ready(state)
    assert MP + "/keep" in state["files"]  # the filesystem survived: no mkfs
    assert state["ptype"] == "83"


def test_already_mounted_disk_is_left_as_it_is(tmp_path: Any) -> None:
    setup = [MBR_LINUX, "mkfs.ext4 -q -F $PART", KEEP, f"mkdir -p {MP} && mount $PART {MP}"]
    r = disk(tmp_path, [{"conf": conf(fs="xfs")}], setup=setup)
    state = ok(r["runs"][0])
    assert mounted_at(state) == [(MP, "ext4")]  # not reformatted to xfs
    assert MP + "/keep" in state["files"]
    assert f"is already mounted [{MP}]" in r["runs"][0]["stderr"]


def test_disk_mounted_elsewhere_is_never_reformatted(tmp_path: Any) -> None:
    setup = [MBR_LINUX, "mkfs.ext4 -q -F $PART", KEEP, "mkdir -p /srv/data && mount $PART /srv/data"]
    r = disk(tmp_path, [{"conf": conf(fs="xfs")}], setup=setup)
    state = ok(r["runs"][0])
    assert mounted_at(state) == [("/srv/data", "ext4")]
    assert "/srv/data/keep" in state["files"]
    assert state["files"]["/srv/data/DATALOSS_WARNING_README.txt"]["text"] == WARNING_TEXT  # as WA does


def test_whole_disk_filesystem_is_replaced_by_a_partition(tmp_path: Any) -> None:
    r = disk(tmp_path, [{"conf": conf()}], setup=["mkfs.ext4 -q -F $DISK"])
    assert table(r["initial"])[0] == "loop"
    state = ok(r["runs"][0])
    assert table(state)[0] == "gpt"
    assert_ready(state)


def test_mount_options_are_used(tmp_path: Any) -> None:
    r = disk(tmp_path, [{"conf": conf(ResourceDisk_MountOptions="nodev,nosuid,noatime")}])
    state = ok(r["runs"][0])
    opts = state["mounts"][0][3].split(",")
    assert {"nodev", "nosuid", "noatime"} <= set(opts)


def test_xfs_with_swap(tmp_path: Any) -> None:
    r = disk(tmp_path, [{"conf": conf(fs="xfs", swap_mb=20)}])
    state = ok(r["runs"][0])
    assert_ready(state, "xfs")
    assert_swap(state, 20)


def test_swap_is_reused_at_the_same_size_and_recreated_at_another(tmp_path: Any) -> None:
    runs: List[Dict[str, Any]] = [
        {"conf": conf(swap_mb=16)},
        {"conf": conf(swap_mb=16), "before": [f"chmod 0644 {SWAPFILE}"]},  # active: mode fixed only
        {"conf": conf(swap_mb=16), "before": [f"swapoff {SWAPFILE} && umount {MP}"]},  # a reboot
        {"conf": conf(swap_mb=24)},  # resized
    ]
    r = disk(tmp_path, runs)
    states = [ok(run) for run in r["runs"]]
    for s in states[:3]:
        assert_swap(s, 16)
    assert (
        states[0]["files"][SWAPFILE]["ino"]
        == states[1]["files"][SWAPFILE]["ino"]
        == states[2]["files"][SWAPFILE]["ino"]
    )
    assert "Swap already enabled" in r["runs"][1]["stderr"]
    assert_swap(states[3], 24)
    assert len(states[3]["swaps"]) == len(r["initial"]["swaps"]) + 1  # the old size is off


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Any) -> None:
    r = disk(tmp_path, [{"conf": conf(swap_mb=16), "args": ["-resourcedisk", "--dry-run"]}])
    run = r["runs"][0]
    assert run["rc"] == 0, run["stderr"]
    assert run["state"] == r["initial"]
    plan = run["stdout"]
    expected = ["parted -s", "mklabel gpt", "mkfs.ext4 -F", "mount -t ext4", "DATALOSS_WARNING_README.txt",
                "fallocate -l 16777216", "mkswap", "swapon"]  # fmt: skip
    for step in expected:
        assert step in plan, step


def test_format_n_leaves_the_disk_alone(tmp_path: Any) -> None:
    r = disk(tmp_path, [{"conf": {"ResourceDisk.Format": "n", "ResourceDisk.EnableSwap": "y"}}])
    run = r["runs"][0]
    assert run["rc"] == 0
    assert "ResourceDisk.Format=n" in run["stderr"] and "left alone" in run["stderr"]
    assert run["state"] == r["initial"]


# ---- discovery and the GA ---------------------------------------------------------------------


@pytest.mark.parametrize("gen", ["gen1", "gen2"])
def test_vmbus_scan_finds_the_disk_and_the_guest_agent_then_finds_nothing_to_do(
    tmp_path: Any, gen: str
) -> None:
    """WALinuxAgent's own resource-disk handler (Debian 12's waagent 2.7.3, unpacked by
    `make`) runs after waprov against the same fake vmbus tree and configuration."""
    assert os.path.isdir(WA_DIR), "WALinuxAgent is not unpacked: run `make test` (tools/fetch-waagent)"
    r = disk(tmp_path, [{"conf": conf(swap_mb=16), "override": False}], vmbus=gen, ga=True)
    state = ok(r["runs"][0])
    assert "found by the vmbus scan" in r["runs"][0]["stderr"]
    assert_ready(state)
    assert_swap(state, 16)
    ga = r["ga"]
    assert "Found device: loop" in ga["output"]
    assert "is already mounted [/mnt/resource]" in ga["output"]
    assert "Swap already enabled" in ga["output"]
    for changed in ("Create swap file", "Remove old swap file", "Format partition", "Failed"):
        assert changed not in ga["output"]
    assert ga["state"] == state  # mounts, swaps, table, files (inode, size, mode, bytes)


# ---- bad input and faults ------------------------------------------------------------------------


def fails(r: Dict[str, Any], rc: int, *words: str) -> Dict[str, Any]:
    run = r["runs"][0]
    assert run["rc"] == rc, run["stderr"]
    error = [line for line in run["stderr"].splitlines() if " ERROR " in line]
    assert len(error) == 1 and "Traceback" not in run["stderr"], run["stderr"]
    for word in words:
        assert word in error[0], error[0]
    assert swap_sizes(run["state"]).keys() == swap_sizes(r["initial"]).keys()  # no swap left active
    state: Dict[str, Any] = run["state"]
    return state


def test_zero_swap_size_is_refused_after_the_disk_is_mounted(tmp_path: Any) -> None:
    state = fails(disk(tmp_path, [{"conf": conf(ResourceDisk_EnableSwap="y", ResourceDisk_SwapSizeMB="0")}]),
                  2, "/run/waagent-test.conf", "ResourceDisk.SwapSizeMB=0")  # fmt: skip
    assert_ready(state)
    assert SWAPFILE not in state["files"]


def test_unknown_filesystem_is_refused_before_the_disk_is_touched(tmp_path: Any) -> None:
    r = disk(tmp_path, [{"conf": conf(fs="foofs")}])
    state = fails(r, 2, "ResourceDisk.Filesystem=foofs", "mkfs.foofs is not installed")
    assert state == r["initial"]


def test_mount_point_that_is_a_file_is_refused(tmp_path: Any) -> None:
    r = disk(tmp_path, [{"conf": conf()}], setup=[f"mkdir -p /mnt && echo x > {MP}"])
    state = fails(r, 2, f"ResourceDisk.MountPoint={MP}", "not a directory")
    assert state["table"] == r["initial"]["table"] and state["mounts"] == []


def test_failing_mkfs_is_reported_and_nothing_is_mounted(tmp_path: Any) -> None:
    r = disk(tmp_path, [{"conf": conf(fs="xfs", swap_mb=16)}], size_mb=200)  # xfs needs 300 MB
    state = fails(r, 1, "mkfs.xfs -f", "failed with exit code")
    assert state["mounts"] == []


def test_rejected_mount_options_do_not_reformat(tmp_path: Any) -> None:
    runs = [{"conf": conf(ResourceDisk_MountOptions="bogus_option")}, {"conf": conf()}]
    r = disk(tmp_path, runs, setup=[MBR_LINUX, "mkfs.ext4 -q -F $PART", KEEP])
    state = fails(r, 1, "mount", "not reformatted")
    assert state["mounts"] == [] and state["fstype"] == "ext4"
    assert MP + "/keep" in ok(r["runs"][1])["files"]  # the data is still there


def test_swap_that_does_not_fit_leaves_no_swapfile(tmp_path: Any) -> None:
    r = disk(tmp_path, [{"conf": conf(swap_mb=256)}], size_mb=128)
    state = fails(r, 1, "swapfile")
    assert_ready(state)
    assert SWAPFILE not in state["files"]


def test_vanished_disk_is_reported(tmp_path: Any) -> None:
    with loop_disk(str(tmp_path), 64) as dev:
        subprocess.run(["losetup", "-d", dev], check=True)
        r = disk_scenario(str(tmp_path), {"device": dev, "runs": [{"conf": conf()}]})
    fails(r, 1, dev, "no media")


def test_override_that_is_no_block_device_is_refused(tmp_path: Any) -> None:
    r = disk(tmp_path, [{"conf": conf(), "override": False, "env": {"WAPROV_RESOURCE_DISK": "/dev/null"}}])
    fails(r, 1, "WAPROV_RESOURCE_DISK=/dev/null", "not a block device")
