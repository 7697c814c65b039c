"""The level-2 sandbox itself: what a command inside may change, and what it may not."""

from __future__ import annotations

import os
from pathlib import Path

from tests.sandbox import sandbox_run


def test_a_write_outside_the_overlays_fails_and_never_reaches_the_host(tmp_path: Path) -> None:
    probe = "/waprov-sandbox-probe"  # on /, which no overlay covers
    assert not os.path.lexists(probe)
    p = sandbox_run(["bash", "-c", f"touch {probe}; mkdir -p /nonexistent/.ssh; echo rc=$?"])
    assert p.returncode == 0, p.stderr
    assert "Read-only file system" in p.stderr
    assert "rc=1" in p.stdout
    assert not os.path.lexists(probe) and not os.path.lexists("/nonexistent")


def test_the_overlays_stay_writable_inside(tmp_path: Path) -> None:
    p = sandbox_run(["bash", "-c", "echo x > /etc/waprov-probe && cat /etc/waprov-probe && touch /var/lib/p"])
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "x"
    assert not os.path.exists("/etc/waprov-probe")


def test_the_overlaid_directories_keep_their_mode_so_users_can_write_tmp(tmp_path: Path) -> None:
    p = sandbox_run(
        ["bash", "-c", "stat -c %a /tmp && setpriv --reuid=65534 --regid=65534 --clear-groups touch /tmp/u"]
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["1777"]
