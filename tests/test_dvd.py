"""The provisioning DVD: device choice, mount retries, udf, read, saved copy, release.

The kernel here cannot mount udf/iso9660/vfat, so commands go to a scripted runner (the
edge of System) and the tree lives under a root prefix; `make e2e` mounts a real UDF DVD.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
from typing import Iterable, List, Optional, Tuple

import pytest

from tests.conftest import DATA, virtual_clock
from tests.fakerunner import Handler, ScriptedRunner, fail, ok
from waprov.config import Config
from waprov.dvd import NoDvdError, find_dvd_device
from waprov.errors import ProtocolError
from waprov.http import HttpClient
from waprov.overrides import Overrides
from waprov.sources import Fabric, load_ovf
from waprov.system import System

OVF = os.path.join(DATA, "ovf", "full.xml")
MP = "/mnt/cdrom/secure"
MOUNT = ["mount", "-o", "ro", "-t", "udf,iso9660,vfat"]


class Host:
    """A root-prefixed tree with /dev entries and /proc/filesystems."""

    def __init__(self, root: str, devices: Iterable[str] = ("null", "sr0", "tty"), udf: bool = True) -> None:
        self.root = root
        os.makedirs(f"{root}/dev")
        os.makedirs(f"{root}/proc")
        for name in devices:
            open(f"{root}/dev/{name}", "w").close()
        self.set_udf(udf)
        self.ovf = OVF

    def set_udf(self, udf: bool) -> None:
        with open(f"{self.root}/proc/filesystems", "w") as f:
            f.write("nodev\tsysfs\n\text4\n" + ("\tudf\n" if udf else ""))

    def mount_ok(self, argv: List[str], data: Optional[bytes]) -> Tuple[int, bytes, bytes]:
        target = argv[-1]  # the mount point, with the root prefix as for any host path
        assert target.startswith(self.root + "/") and os.path.isdir(target), "made before mounting"
        shutil.copy(self.ovf, f"{target}/ovf-env.xml")
        return 0, b"", b""

    def fabric(
        self, runner: ScriptedRunner, mounts: Iterable[Tuple[str, str]] = (), distro: str = "debian"
    ) -> Fabric:
        os.makedirs(f"{self.root}/proc/self", exist_ok=True)
        with open(f"{self.root}/proc/self/mounts", "w") as f:
            f.writelines(f"{device} {mountpoint} auto ro 0 0\n" for device, mountpoint in mounts)
        clock = virtual_clock()
        return Fabric(
            system=System(root=self.root, runner=runner),
            config=dataclasses.replace(Config(), dvd_mount_point=MP),
            overrides=Overrides(),
            clock=clock,
            client=HttpClient(clock),
            distro_id=distro,
        )

    def saved(self) -> Optional[str]:
        path = f"{self.root}/var/lib/waagent/ovf-env.xml"
        if not os.path.exists(path):
            return None
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        with open(path, encoding="utf-8") as f:
            return f.read()


def expected_copy() -> str:
    """The DVD's file with the password replaced by `*` and nothing else changed (WA §4.3)."""
    with open(OVF, encoding="utf-8") as f:
        text = f.read()
    assert text.count("<UserPassword>P@ssw0rd-in-ovf</UserPassword>") == 1
    return text.replace("<UserPassword>P@ssw0rd-in-ovf</UserPassword>", "<UserPassword>*</UserPassword>")


def waits(fabric: Fabric) -> List[float]:
    return [s for _, s in fabric.clock.slept]


def test_mount_read_save_unmount_eject(tmp_path: str) -> None:
    host = Host(str(tmp_path))
    runner = ScriptedRunner(mount=host.mount_ok, umount=ok, eject=ok)
    fabric = host.fabric(runner)
    env = load_ovf(fabric)
    assert env.hostname == "test-vm-01" and env.password is not None
    # every host path in a command gets the root prefix, as the files System writes do
    sr0, mp = f"{tmp_path}/dev/sr0", f"{tmp_path}{MP}"
    assert runner.calls == [[*MOUNT, sr0, mp], ["umount", mp], ["eject", sr0]]
    assert fabric.system.plan().splitlines()[-2:] == [f"run    umount {MP}", "run    eject /dev/sr0"]
    assert host.saved() == expected_copy()
    assert env.password.reveal() not in (host.saved() or "")
    assert waits(fabric) == []


@pytest.mark.parametrize(("devices", "distro"), [(("vdb",), "debian"), (("sr0",), "flatcar")])
def test_no_eject_for_vd_devices_or_on_flatcar(tmp_path: str, devices: Tuple[str, ...], distro: str) -> None:
    host = Host(str(tmp_path), devices)
    runner = ScriptedRunner(mount=host.mount_ok, umount=ok, eject=ok)
    load_ovf(host.fabric(runner, distro=distro))
    assert runner.names() == ["mount", "umount"]


def test_an_already_mounted_dvd_is_read_where_it_is_and_left_alone(tmp_path: str) -> None:
    host = Host(str(tmp_path))
    os.makedirs(f"{tmp_path}/media/cdrom")
    shutil.copy(OVF, f"{tmp_path}/media/cdrom/ovf-env.xml")
    runner = ScriptedRunner()
    env = load_ovf(host.fabric(runner, mounts=[("proc", "/proc"), ("/dev/sr0", "/media/cdrom")]))
    assert env.username == "azureuser" and runner.calls == []
    assert host.saved() == expected_copy()


def test_a_dvd_left_mounted_at_the_mount_point_is_read_and_released(tmp_path: str) -> None:
    host = Host(str(tmp_path))
    os.makedirs(f"{tmp_path}{MP}")
    shutil.copy(OVF, f"{tmp_path}{MP}/ovf-env.xml")
    runner = ScriptedRunner(umount=ok, eject=ok)
    load_ovf(host.fabric(runner, mounts=[("/dev/sr0", MP)]))
    assert runner.calls == [["umount", f"{tmp_path}{MP}"], ["eject", f"{tmp_path}/dev/sr0"]]


def test_failing_umount_and_eject_are_only_warnings(tmp_path: str) -> None:
    host = Host(str(tmp_path))
    runner = ScriptedRunner(mount=host.mount_ok, umount=fail("target is busy", 32))  # no eject installed
    assert load_ovf(host.fabric(runner)).hostname == "test-vm-01"
    assert runner.names() == ["mount", "umount", "eject"] and host.saved() == expected_copy()


def test_mount_is_tried_five_times_five_seconds_apart(tmp_path: str) -> None:
    host = Host(str(tmp_path))
    runner = ScriptedRunner(mount=fail("mount: /mnt/cdrom/secure: no medium found on /dev/sr0."))
    fabric = host.fabric(runner)
    with pytest.raises(ProtocolError) as e:
        load_ovf(fabric)
    assert str(e.value) == (
        "[CopyOvfEnv] Error mounting dvd: Failed to mount dvd device /dev/sr0: "
        "mount: /mnt/cdrom/secure: no medium found on /dev/sr0."
    )
    assert runner.names() == ["mount"] * 5 and waits(fabric) == [5.0] * 4
    assert host.saved() is None


def test_a_mount_that_succeeds_on_the_third_attempt(tmp_path: str) -> None:
    host = Host(str(tmp_path))
    results = iter([1, 1, 0])

    def flaky(argv: List[str], data: Optional[bytes]) -> Tuple[int, bytes, bytes]:
        return host.mount_ok(argv, data) if next(results) == 0 else (32, b"", b"busy")

    runner = ScriptedRunner(mount=flaky, umount=ok, eject=ok)
    fabric = host.fabric(runner)
    load_ovf(fabric)
    assert runner.names() == ["mount"] * 3 + ["umount", "eject"] and waits(fabric) == [5.0, 5.0]


@pytest.mark.parametrize("modprobe", [fail("modprobe: FATAL: Module udf not found", 1), None])
def test_a_kernel_without_udf_is_named_in_the_error(tmp_path: str, modprobe: Optional[Handler]) -> None:
    host = Host(str(tmp_path), udf=False)
    runner = ScriptedRunner(mount=fail("mount: unknown filesystem type 'udf'", 32))
    if modprobe is not None:
        runner.handlers["modprobe"] = modprobe
    fabric = host.fabric(runner)
    with pytest.raises(ProtocolError) as e:
        load_ovf(fabric)
    assert "the kernel cannot mount udf: udf is not in /proc/filesystems and modprobe udf failed" in str(
        e.value
    )
    assert runner.names() == ["modprobe", "mount"] and waits(fabric) == []  # retrying cannot help


def test_udf_loaded_by_modprobe_is_used(tmp_path: str) -> None:
    host = Host(str(tmp_path), udf=False)

    def modprobe(argv: List[str], data: Optional[bytes]) -> Tuple[int, bytes, bytes]:
        assert argv == ["modprobe", "udf"]
        host.set_udf(True)
        return 0, b"", b""

    runner = ScriptedRunner(modprobe=modprobe, mount=host.mount_ok, umount=ok, eject=ok)
    load_ovf(host.fabric(runner))
    assert runner.names() == ["modprobe", "mount", "umount", "eject"]


def test_no_device_says_so(tmp_path: str) -> None:
    host = Host(str(tmp_path), devices=("null", "sda", "vda", "loop0"))
    with pytest.raises(NoDvdError, match=r"^Failed to get dvd device from /dev: no provisioning DVD device"):
        load_ovf(host.fabric(ScriptedRunner()))


@pytest.mark.parametrize(
    ("names", "device"),
    [
        (["sda", "cdrom0"], "/dev/cdrom0"),
        (["sr0extra"], "/dev/sr0"),
        (["hdb", "hdc"], "/dev/hdc"),
        (["vdz"], "/dev/vdz"),
    ],
)
def test_device_names_are_prefix_matched(tmp_path: str, names: List[str], device: str) -> None:
    Host(str(tmp_path), devices=names)
    assert find_dvd_device(System(root=str(tmp_path))) == device


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"<Environment/>", "Failed to validate OVF: Environment not found"),
        (b"<a>" + b"x" * (1024 * 1024) + b"</a>", "ovf-env.xml is too large"),
        (b"\xef\xbb\xbf<?xml version='1.0'?><a>\xff</a>", "ovf-env.xml is not UTF-8 text"),
    ],
)
def test_an_invalid_ovf_is_not_saved_and_the_dvd_stays(tmp_path: str, content: bytes, message: str) -> None:
    host = Host(str(tmp_path))
    host.ovf = f"{tmp_path}/bad.xml"
    with open(host.ovf, "wb") as f:
        f.write(content)
    runner = ScriptedRunner(mount=host.mount_ok, umount=ok, eject=ok)
    with pytest.raises(ProtocolError, match=message):
        load_ovf(host.fabric(runner))
    assert runner.names() == ["mount"] and host.saved() is None


def test_an_unreadable_file_names_the_path(tmp_path: str) -> None:
    host = Host(str(tmp_path))
    runner = ScriptedRunner(mount=ok)  # mounted, but nothing there
    os.makedirs(f"{tmp_path}{MP}")
    with pytest.raises(
        ProtocolError, match=r"^\[CopyOvfEnv\] Error reading file /mnt/cdrom/secure/ovf-env.xml: "
    ):
        load_ovf(host.fabric(runner))
