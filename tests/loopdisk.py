"""Loop-device resource disks for sandbox tests, always detached again.

`loop_disk(dir, size_mb)` attaches a sparse image with partition scanning on (so that
detaching drops the partition nodes parted adds) and, on the way out, detaches it even
when the test failed. Swap is host-wide: a swap area the sandbox left active (a killed
run) is found in /proc/swaps, turned off by mounting the partition again in a private
mount namespace, and reported as an error after the cleanup.

Swap areas and /proc/swaps are host-wide: a sandbox sees another one's active swapfile
there (waprov and WALinuxAgent would take it for theirs), and the leftover check would
blame the wrong test. So one loop disk is attached at a time on this host: `loop_disk`
holds an exclusive lock (flock on /run/lock/waprov-tests-loopdisk.lock) until it has
detached its disk; the other tests of a parallel run (pytest-xdist) go on meanwhile.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
from typing import Any, Dict, Iterator, List

from tests.sandbox import sandbox_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCK = "/run/lock/waprov-tests-loopdisk.lock"


def swap_names() -> List[str]:
    with open("/proc/swaps", encoding="utf-8") as f:
        return [line.split()[0] for line in f.readlines()[1:]]


def _recover_swap(device: str, names: List[str]) -> None:
    script = (
        "set -u; partx -u $0 || true; mkdir -p /run/recover; mount $0p1 /run/recover || exit 1; "
        'for n in "$@"; do swapoff "/run/recover/${n#/mnt/resource/}" || swapoff "$n" || true; done; '
        "umount /run/recover"
    )
    subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, device, *names], check=False
    )


@contextlib.contextmanager
def one_at_a_time() -> Iterator[None]:
    os.makedirs(os.path.dirname(LOCK), exist_ok=True)
    with open(LOCK, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def loop_disk(directory: str, size_mb: int = 512) -> Iterator[str]:
    with one_at_a_time():
        with _loop_disk(directory, size_mb) as device:
            yield device


@contextlib.contextmanager
def _loop_disk(directory: str, size_mb: int) -> Iterator[str]:
    image = os.path.join(directory, f"disk-{size_mb}.img")
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    swaps_before = swap_names()
    device = subprocess.run(
        ["losetup", "-f", "--show", "-P", image], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        yield device
    finally:
        leftover = [n for n in swap_names() if n not in swaps_before]
        if leftover:
            _recover_swap(device, leftover)
        attached = subprocess.run(
            ["losetup", "-j", image], capture_output=True, text=True, check=False
        ).stdout
        for line in attached.splitlines():
            subprocess.run(["losetup", "-d", line.split(":", 1)[0]], check=False)
        os.unlink(image)
        assert not leftover, f"the sandbox left swap active: {leftover}"


def disk_scenario(tmp: str, spec: Dict[str, Any], timeout: float = 180) -> Dict[str, Any]:
    """Run tests/inside_disk.py with `spec` in a sandbox and return its result."""
    out = os.path.join(tmp, "out")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "spec.json"), "w", encoding="utf-8") as f:
        json.dump(spec, f)
    path = os.path.join(out, "result.json")
    if os.path.exists(path):
        os.unlink(path)
    p = sandbox_run(
        [sys.executable, "-m", "tests.inside_disk", "/run/out/spec.json", "/run/out/result.json"],
        f"cd {ROOT}",
        out=out,
        timeout=timeout,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    if p.returncode != 0 or not os.path.exists(path):
        raise AssertionError(f"the sandbox failed (exit {p.returncode}):\n{p.stdout}\n{p.stderr}")
    with open(path, encoding="utf-8") as f:
        result: Dict[str, Any] = json.load(f)
    return result
