"""Finding the resource disk: fake sysfs trees under a root prefix, scripted mdadm.

The loop-device tests (test_resourcedisk_sandbox.py) cover the vmbus scan end to end;
here are the cases a machine without Hyper-V or NVMe cannot show: Gen2 LUNs, older
kernels' `block:<dev>` names, NVMe models, several local disks with and without mdadm.
"""

from __future__ import annotations

import logging
import os
from typing import Any, List, Optional, Tuple

import pytest

from tests.fakerunner import ScriptedRunner, ok
from waprov.errors import HostError
from waprov.resourcedisk.disk import (
    RAID_DEVICE,
    belongs_to,
    find_resource_disk,
    nvme_local_disks,
    partition,
    vmbus_resource_disk,
)
from waprov.resourcedisk.swap import active_swaps
from waprov.system import System


def put(root: Any, path: str, text: Optional[str] = None) -> None:
    full = os.path.join(str(root), path.lstrip("/"))
    if text is None:
        os.makedirs(full, exist_ok=True)
        return
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w", encoding="utf-8") as f:
        f.write(text)


def vmbus_device(root: Any, dev_id: str, guid: str, block_dirs: List[str]) -> None:
    base = f"/sys/bus/vmbus/devices/{dev_id}"
    put(root, base + "/device_id", "{" + guid + "}\n")
    for d in block_dirs:
        put(root, base + "/" + d)


def nvme(root: Any, name: str, model: str) -> None:
    put(root, f"/sys/block/{name}/device/model", model.ljust(40) + "\n")


def test_partition_names() -> None:
    assert partition("/dev/sdb") == "/dev/sdb1"
    assert partition("/dev/nvme0n1") == "/dev/nvme0n1p1"
    assert partition("/dev/loop3", 2) == "/dev/loop3p2"
    assert partition("/dev/md127") == "/dev/md127p1"


@pytest.mark.parametrize(
    ("mounted", "device", "expected"),
    [
        ("/dev/sdb1", "/dev/sdb", True),
        ("/dev/sdb", "/dev/sdb", True),
        ("/dev/sdba1", "/dev/sdb", False),
        ("/dev/loop1p1", "/dev/loop1", True),
        ("/dev/loop10p1", "/dev/loop1", False),
        ("/dev/loop10", "/dev/loop1", False),
        ("/dev/nvme0n1p2", "/dev/nvme0n1", True),
        ("/dev/nvme0n10", "/dev/nvme0n1", False),
    ],
)
def test_mount_table_device_belongs_to_the_disk(mounted: str, device: str, expected: bool) -> None:
    assert belongs_to(mounted, device) is expected


def test_gen1_resource_disk_is_the_block_device_under_the_0001_device(tmp_path: Any) -> None:
    vmbus_device(tmp_path, "00000000-0000-8899-0000-000000000000", "00000000-0000-8899-0000-000000000000",
                 ["host0/target0:0:0/0:0:0:0/block/sda"])  # fmt: skip
    vmbus_device(tmp_path, "00000000-0001-8899-0000-000000000000", "00000000-0001-8899-0000-000000000000",
                 ["host1/target1:0:1/1:0:1:0/block/sdb"])  # fmt: skip
    assert vmbus_resource_disk(System(root=str(tmp_path))) == "sdb"


def test_gen2_resource_disk_is_lun_1_of_the_scsi_controller(tmp_path: Any) -> None:
    vmbus_device(tmp_path, "f8b3781a-1e82-4818-a1c3-63d806ec15bb", "F8B3781A-1E82-4818-A1C3-63D806EC15BB",
                 ["host0/target0:0:0/0:0:0:0/block/sda", "host0/target0:0:0/0:0:0:1/block/sdb",
                  "host0/target0:0:0/0:0:0:2/block/sr0"])  # fmt: skip
    assert vmbus_resource_disk(System(root=str(tmp_path))) == "sdb"


def test_older_kernels_name_the_block_device_in_the_directory(tmp_path: Any) -> None:
    vmbus_device(tmp_path, "vmbus_1", "00000000-0001-8899-0000-000000000000", ["host1/block:sdc"])
    assert vmbus_resource_disk(System(root=str(tmp_path))) == "sdc"


def test_no_vmbus_means_no_scsi_resource_disk(tmp_path: Any) -> None:
    vmbus_device(tmp_path, "net0", "12345678-0001-0000-0000-000000000000", ["host1/block/sdx"])
    assert vmbus_resource_disk(System(root=str(tmp_path))) is None
    assert vmbus_resource_disk(System(root=str(tmp_path / "empty"))) is None


def test_nvme_local_disks_are_found_by_model_in_numeric_order(tmp_path: Any) -> None:
    nvme(tmp_path, "nvme0n1", "MSFT NVMe Accelerator v1.0")  # the OS disk on v6 sizes
    nvme(tmp_path, "nvme10n1", "Microsoft NVMe Direct Disk v2")
    nvme(tmp_path, "nvme2n1", "Microsoft NVMe Direct Disk")
    nvme(tmp_path, "nvme2c2n1", "Microsoft NVMe Direct Disk")  # a hidden multipath node
    assert nvme_local_disks(System(root=str(tmp_path))) == ["nvme2n1", "nvme10n1"]


def system_with(tmp_path: Any, runner: ScriptedRunner) -> System:
    return System(root=str(tmp_path), runner=runner)


def test_discovery_order_override_then_udev_link_then_vmbus_then_nvme(tmp_path: Any) -> None:
    runner = ScriptedRunner()
    system = system_with(tmp_path, runner)
    nvme(tmp_path, "nvme1n1", "Microsoft NVMe Direct Disk")
    found = find_resource_disk(system, None)
    assert found is not None and (found.device, found.found_by.split()[0]) == ("/dev/nvme1n1", "its")
    vmbus_device(tmp_path, "d1", "00000000-0001-0000-0000-000000000000", ["host1/block/sdb"])
    found = find_resource_disk(system, None)
    assert found is not None and (found.device, found.found_by) == ("/dev/sdb", "the vmbus scan")
    put(tmp_path, "/dev/disk/azure")
    os.symlink("/dev/loop0", os.path.join(str(tmp_path), "dev/disk/azure/resource"))  # a host block node
    found = find_resource_disk(system, None)
    assert found is not None and (found.device, found.found_by) == ("/dev/loop0", "/dev/disk/azure/resource")
    with pytest.raises(HostError, match="WAPROV_RESOURCE_DISK=/dev/sdz: not a block device"):
        find_resource_disk(system, "/dev/sdz")
    assert runner.calls == []


def test_no_disk_at_all_is_none(tmp_path: Any) -> None:
    assert find_resource_disk(system_with(tmp_path, ScriptedRunner()), None) is None


def test_several_nvme_disks_are_joined_in_a_raid0_by_mdadm(tmp_path: Any) -> None:
    nvme(tmp_path, "nvme1n1", "Microsoft NVMe Direct Disk v2")
    nvme(tmp_path, "nvme2n1", "Microsoft NVMe Direct Disk v2")

    def mdadm(argv: List[str], data: Optional[bytes]) -> Tuple[int, bytes, bytes]:
        return (1, b"", b"mdadm: No md superblock detected") if "--examine" in argv else ok(argv, data)

    runner = ScriptedRunner(mdadm=mdadm)
    found = find_resource_disk(system_with(tmp_path, runner), None)
    assert found is not None and found.device == RAID_DEVICE
    real = f"{tmp_path}/dev"  # device nodes are host paths: the root prefix applies
    assert runner.calls[-1] == [
        "mdadm", "--create", f"{tmp_path}{RAID_DEVICE}", "--run", "--level=0", "--metadata=1.2",
        "--name=waprov-resource", "--raid-devices=2", f"{real}/nvme1n1", f"{real}/nvme2n1",
    ]  # fmt: skip


def test_the_raid0_of_an_earlier_boot_is_assembled_not_recreated(tmp_path: Any) -> None:
    nvme(tmp_path, "nvme1n1", "Microsoft NVMe Direct Disk")
    nvme(tmp_path, "nvme2n1", "Microsoft NVMe Direct Disk")
    brief = b"ARRAY /dev/md/waprov-resource  metadata=1.2 UUID=1:2:3:4 name=vm1:waprov-resource\n"

    def mdadm(argv: List[str], data: Optional[bytes]) -> Tuple[int, bytes, bytes]:
        return (0, brief, b"") if "--examine" in argv else ok(argv, data)

    runner = ScriptedRunner(mdadm=mdadm)
    find_resource_disk(system_with(tmp_path, runner), None)
    real = f"{tmp_path}/dev"
    assert runner.calls[-1] == [
        "mdadm",
        "--assemble",
        f"{tmp_path}{RAID_DEVICE}",
        f"{real}/nvme1n1",
        f"{real}/nvme2n1",
    ]


def test_several_nvme_disks_without_mdadm_use_the_first_and_say_so(tmp_path: Any, caplog: Any) -> None:
    nvme(tmp_path, "nvme1n1", "Microsoft NVMe Direct Disk")
    nvme(tmp_path, "nvme2n1", "Microsoft NVMe Direct Disk")
    nvme(tmp_path, "nvme3n1", "Microsoft NVMe Direct Disk")
    runner = ScriptedRunner()
    with caplog.at_level(logging.WARNING, logger="waprov"):
        found = find_resource_disk(system_with(tmp_path, runner), None)
    assert found is not None and found.device == "/dev/nvme1n1"
    assert (
        "3 NVMe local disks and no mdadm" in caplog.text and "/dev/nvme2n1 /dev/nvme3n1 unused" in caplog.text
    )
    assert runner.calls == []


def test_active_swaps_are_read_with_escaped_names() -> None:
    out = b"/mnt/resource/swapfile 16777216\n/mnt/my\\x20disk/swap 1048576\n/dev/zram0 0\n"
    runner = ScriptedRunner(swapon=lambda argv, data: (0, out, b""))
    assert active_swaps(System(runner=runner)) == {
        "/mnt/resource/swapfile": 16777216,
        "/mnt/my disk/swap": 1048576,
        "/dev/zram0": 0,
    }
