"""The e2e harness's answer to a guest kernel that stalls before init (tests/e2e/vm.py):
the boot is started once more, the stalled console kept aside; a second stall fails.
Here qemu is a shell script that writes a console and then waits, as a guest would."""

from __future__ import annotations

import os
from typing import Iterator, List

import psutil
import pytest

from tests.e2e.vm import Guest, GuestError
from tests.fakefabric import FakeFabric

KERNEL_LINES = "[    1.057785] clocksource: Switched to clocksource hpet\n"
HANDOVER = "[    3.526525] Run /init as init process\n"

# One line of `plan` per launch: "stall" (the kernel never runs init), "ok" (it does),
# "exit" (qemu ends at once, as when it cannot start).
FAKE_QEMU = """#!/bin/sh
n=$(cat "$2/launches" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$2/launches"
echo $$ >> "$2/pids"  # `exec` keeps it: the pid of what the harness must end
what=$(sed -n "${n}p" "$2/plan")
[ "$what" = exit ] && exit 1
printf '%s' "$KERNEL_LINES" > "$1"
[ "$what" = ok ] && printf '%s' "$HANDOVER" >> "$1"
exec sleep 60
"""


class ScriptedGuest(Guest):
    def argv(self) -> List[str]:
        return ["sh", os.path.join(self.workdir, "qemu.sh"), self.console, self.workdir]


@pytest.fixture
def guest(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedGuest]:
    workdir = os.path.join(str(tmp_path), "vm")
    os.makedirs(workdir)
    for disk in ("os.qcow2", "resource.img"):
        open(os.path.join(workdir, disk), "wb").close()
    with open(os.path.join(workdir, "qemu.sh"), "w", encoding="ascii") as f:
        f.write(FAKE_QEMU)
    monkeypatch.setenv("KERNEL_LINES", KERNEL_LINES)
    monkeypatch.setenv("HANDOVER", HANDOVER)
    g = ScriptedGuest(workdir, str(tmp_path), "waprov", "uuid", FakeFabric(str(tmp_path)), dvd=None)
    g.kernel_stall_s = 1.0
    yield g
    g.kill()


def plan(g: Guest, *launches: str) -> None:
    with open(os.path.join(g.workdir, "plan"), "w", encoding="ascii") as f:
        f.write("\n".join(launches) + "\n")


def launches(g: Guest) -> int:
    with open(os.path.join(g.workdir, "launches"), encoding="ascii") as f:
        return int(f.read())


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_a_kernel_that_runs_init_is_left_running(guest: ScriptedGuest) -> None:
    plan(guest, "ok")
    guest.start()
    assert guest.running() and launches(guest) == 1 and guest.stalls == 0
    assert not [n for n in os.listdir(guest.workdir) if "stalled" in n]


def test_a_stall_before_init_starts_the_same_boot_again_and_keeps_the_stalled_console(
    guest: ScriptedGuest, capsys: pytest.CaptureFixture[str]
) -> None:
    plan(guest, "stall", "ok")
    guest.start()
    assert guest.running() and launches(guest) == 2 and guest.stalls == 1 and guest.boots == 1
    stalled = os.path.join(guest.workdir, "console-boot1-stalled1.log")
    assert read(stalled) == KERNEL_LINES
    # a fake qemu has no monitor: its stalled log says so instead of the vCPUs' registers
    assert "the monitor did not answer" in read(os.path.join(guest.workdir, "qemu-boot1-stalled1.log"))
    assert guest.console == os.path.join(guest.workdir, "console-boot1.log")
    assert read(guest.console) == KERNEL_LINES + HANDOVER
    assert f"the guest kernel stalled before init ({stalled})" in capsys.readouterr().err


def test_a_second_stall_fails_naming_both_consoles_and_leaves_no_qemu(guest: ScriptedGuest) -> None:
    plan(guest, "stall", "stall", "ok")
    with pytest.raises(GuestError) as e:
        guest.start()
    assert launches(guest) == 2 and guest.proc is None and guest.stalls == 2
    for n in (1, 2):
        path = os.path.join(guest.workdir, f"console-boot1-stalled{n}.log")
        assert path in str(e.value) and read(path) == KERNEL_LINES
    # no process of the fake qemu is left behind (the harness reaps what it kills)
    with open(os.path.join(guest.workdir, "pids"), encoding="ascii") as f:
        pids = [int(line) for line in f]
    assert len(pids) == 2 and not [pid for pid in pids if psutil.pid_exists(pid)]


def test_a_qemu_that_exits_is_not_started_again(guest: ScriptedGuest) -> None:
    plan(guest, "exit", "ok")
    guest.start()
    assert launches(guest) == 1 and not guest.running() and guest.stalls == 0
