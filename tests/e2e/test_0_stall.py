"""The harness's answer to a guest kernel that stalls before init, with a real qemu: one
started paused (`-S`), so its console stays silent as a stalled kernel's does. The boot is
started once more, and a second stall fails naming both consoles; each stalled qemu's
log keeps what its monitor said about the vCPUs. Its files live in pytest's temporary
directory, not in .cache/e2e/logs, so that tools/e2e does not list them as real stalls."""

from __future__ import annotations

import os
import subprocess
from typing import List

import pytest

from tests.e2e.scenario import images
from tests.e2e.vm import Guest, GuestError
from tests.fakefabric import FakeFabric


class PausedGuest(Guest):
    def argv(self) -> List[str]:
        return [*super().argv(), "-S"]  # started paused: the console stays silent


def test_a_guest_silent_before_init_is_started_again_once_then_fails(tmp_path: os.PathLike[str]) -> None:
    fabric = FakeFabric(os.path.join(str(tmp_path), "fabric"), with_certificates=False).start()
    workdir = os.path.join(str(tmp_path), "vm")
    guest = PausedGuest(workdir, images(), "waprov", "0e2e57a1-0000-4000-8000-000000000000", fabric, dvd=None)
    guest.kernel_stall_s = 3.0
    try:
        with pytest.raises(GuestError) as e:
            guest.start()
    finally:
        guest.kill()
        fabric.stop()
    assert guest.stalls == 2 and guest.proc is None
    for n in (1, 2):
        console = os.path.join(workdir, f"console-boot1-stalled{n}.log")
        assert console in str(e.value)
        with open(os.path.join(workdir, f"qemu-boot1-stalled{n}.log"), encoding="utf-8") as f:
            log = f.read()
        # the monitor answered: the VM's state and both vCPUs' registers
        # (a paused VM's vCPUs are still in real mode: EIP, not a kernel's RIP)
        assert "(qemu) info status\nVM status: paused (prelaunch)\n" in log
        assert "\nCPU#0\n" in log and "\nCPU#1\n" in log and "EIP=0000fff0" in log
        assert "\x1b" not in log
    assert subprocess.run(["pgrep", "-f", workdir], capture_output=True).returncode == 1
