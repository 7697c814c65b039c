"""Shared test helpers: run the real launcher as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import List, Sequence

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
LAUNCHER = os.path.join(ROOT, "bin", "waprov")


def waprov_argv(*args: str) -> List[str]:
    """argv that runs the checkout's launcher with the test interpreter."""
    return [sys.executable, LAUNCHER, *args]


def run_waprov(args: Sequence[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(waprov_argv(*args), capture_output=True, text=True, check=False, timeout=60, **kw)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(autouse=True)
def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("waprov's tests run as root (they use namespaces, chown and loop devices)")
