"""timing.boot_time: the kernel's btime, as psutil reads it."""

from __future__ import annotations

import os

import psutil
import pytest

from waprov.errors import HostError
from waprov.system import System
from waprov.timing import boot_time


def test_boot_time_is_the_btime_line(tmp_path: os.PathLike[str]) -> None:
    stat = os.path.join(str(tmp_path), "stat")
    with open(stat, "w", encoding="ascii") as f:
        f.write("cpu  1 2 3 4\nintr 5 6\nctxt 7\nbtime 1763700000\nprocesses 8\n")
    assert boot_time(System(), stat) == 1763700000.0


def test_boot_time_of_this_host_agrees_with_psutil() -> None:
    assert boot_time(System()) == pytest.approx(psutil.boot_time(), abs=1.0)


@pytest.mark.parametrize("content", [None, "cpu  1 2 3 4\n", "btime soon\n", "btime\n"])
def test_boot_time_unknown_is_a_host_error_naming_the_file(tmp_path: os.PathLike[str], content: str) -> None:
    stat = os.path.join(str(tmp_path), "stat")
    if content is not None:
        with open(stat, "w", encoding="ascii") as f:
            f.write(content)
    with pytest.raises(HostError, match=f"cannot read the boot time from {stat}"):
        boot_time(System(), stat)
