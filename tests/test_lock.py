"""The run lock (waprov.lock): one host-changing run at a time, in a place only root controls.

The lock is taken in temporary directories, against real holder processes; the real
commands running at the same time are in test_lock_sandbox.py.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.provisioning import ROOT
from waprov.errors import UsageError
from waprov.lock import LOCK_NAME, LockError, hold
from waprov.overrides import lock_wait_from_env

SINCE = r"since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
HOLDER = (  # a second process holding the lock: says "held", then sleeps (argv: dir, seconds)
    "import sys, time\n"
    "from waprov.lock import hold\n"
    "hold('waprov -resourcedisk', 0, sys.argv[1])\n"
    "print('held', flush=True)\n"
    "time.sleep(float(sys.argv[2]))\n"
)


def holder(lock_dir: str, seconds: float, code: str = HOLDER) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-c", code, lock_dir, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert p.stdout is not None and p.stdout.readline() == "held\n"
    return p


@pytest.fixture
def lock_dir(tmp_path: Any) -> str:
    return os.path.join(str(tmp_path), "waprov")


def test_the_directory_is_made_0700_and_the_file_names_its_holder(lock_dir: str) -> None:
    hold("waprov -provision", 0, lock_dir)
    assert os.stat(lock_dir).st_mode & 0o7777 == 0o700
    path = os.path.join(lock_dir, LOCK_NAME)
    assert os.stat(path).st_mode & 0o7777 == 0o600
    with open(path, encoding="utf-8") as f:
        content = f.read()
    assert re.fullmatch(rf"pid {os.getpid()}\ncommand waprov -provision\n{SINCE}\n", content), content


def test_a_second_run_waits_then_fails_naming_the_holder(lock_dir: str) -> None:
    p = holder(lock_dir, 30)
    try:
        started = time.monotonic()
        with pytest.raises(LockError) as e:
            hold("waprov -provision", 0.5, lock_dir)
        waited = time.monotonic() - started
    finally:
        p.kill()
        p.wait()
    assert 0.5 <= waited < 5
    message = str(e.value)
    assert e.value.exit_code == 1
    assert re.search(
        rf"another waprov run still holds {lock_dir}/lock after 0.5s: "
        rf"pid {p.pid} \(waprov -resourcedisk\), {SINCE}",
        message,
    ), message


def test_a_waiting_run_says_for_whom_and_continues_when_the_holder_ends(
    lock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    p = holder(lock_dir, 1)
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="waprov"):
        hold("waprov -provision", 20, lock_dir)
    p.wait()
    assert time.monotonic() - started < 10
    assert re.search(
        rf"Another waprov run holds {lock_dir}/lock: pid {p.pid} \(waprov -resourcedisk\), {SINCE}; "
        r"waiting up to 20s for it to finish",
        caplog.text,
    ), caplog.text
    assert "The other waprov run finished after" in caplog.text


def test_a_killed_holder_leaves_no_stale_lock(lock_dir: str) -> None:
    p = holder(lock_dir, 60)
    p.send_signal(signal.SIGKILL)
    p.wait()
    hold("waprov -provision", 0, lock_dir)  # at once: the kernel released it


def test_a_command_the_holder_started_does_not_keep_the_lock(lock_dir: str) -> None:
    """The descriptor is close-on-exec: a child outliving the run (a background
    ssh-keygen, a custom data script) does not block the next run, even one started
    without subprocess's closing of inherited descriptors."""
    code = HOLDER.replace(
        "time.sleep(float(sys.argv[2]))",
        "import subprocess\nchild = subprocess.Popen(['sleep', '60'], close_fds=False)\n"
        "print(child.pid, flush=True)",
    )
    p = holder(lock_dir, 0, code)
    assert p.stdout is not None
    child = int(p.stdout.readline())
    p.wait()
    try:
        os.kill(child, 0)  # the child still runs, its parent is gone
        hold("waprov -provision", 0, lock_dir)
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_lock_held_by_a_process_that_wrote_nothing_is_reported_as_such(lock_dir: str) -> None:
    os.mkdir(lock_dir, 0o700)
    path = os.path.join(lock_dir, LOCK_NAME)
    p = subprocess.Popen(
        ["flock", path, "sh", "-c", "echo held; exec sleep 30"], stdout=subprocess.PIPE, text=True
    )
    assert p.stdout is not None and p.stdout.readline() == "held\n"
    try:
        with pytest.raises(LockError, match="a process that has not written its name into the lock file"):
            hold("waprov -provision", 0, lock_dir)
    finally:
        p.kill()
        p.wait()


def test_a_symbolic_link_as_the_directory_is_refused_and_not_followed(tmp_path: Any, lock_dir: str) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    os.symlink(str(target), lock_dir)
    with pytest.raises(LockError, match=rf"^{re.escape(lock_dir)} is a symbolic link: refusing"):
        hold("waprov -provision", 0, lock_dir)
    assert os.listdir(str(target)) == []


def test_a_dangling_symbolic_link_as_the_directory_is_refused(tmp_path: Any, lock_dir: str) -> None:
    os.symlink(str(tmp_path / "nowhere"), lock_dir)
    with pytest.raises(LockError, match="is a symbolic link"):
        hold("waprov -provision", 0, lock_dir)
    assert not (tmp_path / "nowhere").exists()


def test_a_directory_owned_by_another_user_is_refused(lock_dir: str) -> None:
    os.mkdir(lock_dir, 0o700)
    os.chown(lock_dir, 65534, 65534)
    with pytest.raises(LockError, match=r"is owned by uid 65534, not root: refusing"):
        hold("waprov -provision", 0, lock_dir)
    assert os.listdir(lock_dir) == []


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770])
def test_a_directory_others_may_write_is_refused(lock_dir: str, mode: int) -> None:
    os.mkdir(lock_dir)
    os.chmod(lock_dir, mode)
    with pytest.raises(LockError, match=rf"is writable by others than root \(mode {mode:04o}\)"):
        hold("waprov -provision", 0, lock_dir)


def test_a_file_in_place_of_the_directory_is_refused(lock_dir: str) -> None:
    with open(lock_dir, "w", encoding="utf-8"):
        pass
    with pytest.raises(LockError, match="is not a directory"):
        hold("waprov -provision", 0, lock_dir)


def test_a_symbolic_link_as_the_lock_file_is_refused_and_not_followed(tmp_path: Any, lock_dir: str) -> None:
    os.mkdir(lock_dir, 0o700)
    target = tmp_path / "shadow"
    target.write_text("precious\n")
    os.symlink(str(target), os.path.join(lock_dir, LOCK_NAME))
    with pytest.raises(LockError, match="lock is a symbolic link: refusing"):
        hold("waprov -provision", 0, lock_dir)
    assert target.read_text() == "precious\n"


def test_a_fifo_as_the_lock_file_is_refused_at_once(lock_dir: str) -> None:
    os.mkdir(lock_dir, 0o700)
    os.mkfifo(os.path.join(lock_dir, LOCK_NAME), 0o600)
    with pytest.raises(LockError, match="lock is not a regular file: refusing"):
        hold("waprov -provision", 0, lock_dir)


def test_the_wait_override_is_checked() -> None:
    assert lock_wait_from_env({}, 60.0) == 60.0
    assert lock_wait_from_env({"WAPROV_LOCK_WAIT": ""}, 60.0) == 60.0
    assert lock_wait_from_env({"WAPROV_LOCK_WAIT": "0.5"}, 60.0) == 0.5
    assert lock_wait_from_env({"WAPROV_LOCK_WAIT": "0"}, 60.0) == 0.0
    for bad in ("-1", "soon", "nan", "inf"):
        with pytest.raises(UsageError, match=f"WAPROV_LOCK_WAIT={bad!r}: expected a number of seconds"):
            lock_wait_from_env({"WAPROV_LOCK_WAIT": bad}, 60.0)


def test_a_waiting_run_gives_a_new_holder_time_to_write_its_name(
    lock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The holder names itself just after taking the lock: a run that looks in between
    must not report an unnamed holder (seen in CI: two -provision started at once)."""
    os.mkdir(lock_dir, 0o700)
    path = os.path.join(lock_dir, LOCK_NAME)
    slow = (  # takes the lock, says so, and writes its name 0.3 s later
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(0.3)\n"
        "os.pwrite(fd, b'pid 4242\\ncommand waprov -provision\\nsince 2026-12-03T00:00:00Z\\n', 0)\n"
        "time.sleep(float(sys.argv[2]))\n"
    )
    p = holder(path, 1, slow)
    with caplog.at_level(logging.INFO, logger="waprov"):
        hold("waprov -provision", 20, lock_dir)
    p.wait()
    assert "holds " + path + ": pid 4242 (waprov -provision), since 2026-12-03T00:00:00Z;" in caplog.text
    assert "has not written its name" not in caplog.text
