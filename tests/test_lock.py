"""The run lock (waprov.lock): one host-changing run at a time, in a place only root controls.

The first tests take the lock in temporary directories, against real holder processes;
the sandbox tests run the real `waprov` commands at the same time against the fake fabric.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List

import pytest

from tests.inside import SNAPSHOT
from tests.provisioning import ROOT, health_states, ovf, scenario, text
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


# --- the real commands in a sandbox -------------------------------------------------------

LOCK_MESSAGE = r"another waprov run still holds /run/waprov/lock after {wait}s: {who}; nothing was done"


def stderrs(r: Dict[str, Any]) -> List[str]:
    return [x["stderr"] for x in r["runs"]]


def test_two_provisions_at_once_provision_once_and_report_ready_once(tmp_path: Any) -> None:
    r = scenario(str(tmp_path), {"ovf": ovf(), "runs": [{"parallel_with_next": True}, {}]})
    assert [x["rc"] for x in r["runs"]] == [0, 0], stderrs(r)
    assert health_states(r) == ["NotReady/Provisioning", "Ready"]
    waited = [x["stderr"] for x in r["runs"] if "waiting up to 60s" in x["stderr"]]
    assert len(waited) == 1, stderrs(r)
    assert re.search(
        rf"Another waprov run holds /run/waprov/lock: pid \d+ \(waprov -provision\), {SINCE}; "
        r"waiting up to 60s for it to finish",
        waited[0],
    )
    assert "Provisioning already completed, skipping." in waited[0]
    assert text(r, "/var/lib/waagent/provisioned")


WAIT_FOR_HOLDER = "for i in $(seq 600); do [ -s /var/lib/holder-pid ] && exit 0; sleep 0.1; done; exit 1"
SLOW_CUSTOM_DATA = (  # runs inside `-provision`, so the lock is held: records the run's pid, lingers
    "#!/bin/sh\npgrep -o -f 'bin/waprov -provision' > /var/lib/holder-pid.tmp\n"
    "mv /var/lib/holder-pid.tmp /var/lib/holder-pid\nsleep 8\n"
)


def test_a_deprovision_during_a_provision_waits_then_fails_naming_it_and_changes_nothing(
    tmp_path: Any,
) -> None:
    spec = {
        "conf": "Provisioning.ExecuteCustomData=y\n",
        "ovf": ovf(custom_data=base64.b64encode(SLOW_CUSTOM_DATA.encode()).decode()),
        "snapshot": [*SNAPSHOT, "/var/lib/holder-pid"],
        "runs": [
            {"parallel_with_next": True},
            {
                "args": ["-deprovision+user", "-force"],
                "env": {"WAPROV_LOCK_WAIT": "1"},
                "before": [WAIT_FOR_HOLDER],
            },
        ],
    }
    r = scenario(str(tmp_path), spec)
    provision, deprovision = r["runs"]
    assert provision["rc"] == 0, provision["stderr"]
    assert deprovision["rc"] == 1, deprovision["stderr"]
    assert deprovision["seconds"] >= 1
    pid = text(r, "/var/lib/holder-pid").strip()
    assert pid.isdigit()
    who = rf"pid {pid} \(waprov -provision\), {SINCE}"
    assert re.search(
        rf"Another waprov run holds /run/waprov/lock: {who}; waiting up to 1s", deprovision["stderr"]
    )
    assert re.search(LOCK_MESSAGE.format(wait=1, who=who), deprovision["stderr"]), deprovision["stderr"]
    snap = r["snapshot"]  # what the provisioning made is all there: the deprovision did nothing
    for path in ("/home/azureuser", "/var/lib/waagent/ovf-env.xml", "/var/lib/waagent/provisioned",
                 "/var/lib/waprov/provisioned"):  # fmt: skip
        assert path in snap, path
    assert "azureuser:" in text(r, "/etc/passwd") and text(r, "/etc/hostname") == "waprov-vm"
    assert health_states(r) == ["NotReady/Provisioning", "Ready"]


HOLD_FOREIGN = (  # util-linux flock holds the lock (and writes nothing into it) for the whole sandbox
    "mkdir -m 0700 /run/waprov && (flock /run/waprov/lock sleep 600 </dev/null >/dev/null 2>&1 &) && "
    "for i in $(seq 100); do flock -n /run/waprov/lock true || exit 0; sleep 0.1; done; exit 1"
)
PROVISIONED = ["mkdir -p /var/lib/waagent", "echo '<Environment/>' > /var/lib/waagent/ovf-env.xml",
               "echo waprov-vm > /etc/hostname"]  # fmt: skip


def test_a_held_lock_stops_host_changes_but_not_reads_or_dry_runs(tmp_path: Any) -> None:
    quick = {"env": {"WAPROV_LOCK_WAIT": "30"}}  # would wait 30 s if they took the lock
    spec = {
        "setup": [*PROVISIONED, HOLD_FOREIGN],
        "ovf": ovf(),
        "runs": [
            {"args": ["-status"], "snapshot": list(SNAPSHOT), **quick},
            {"args": ["-deprovision", "--dry-run"], **quick},
            {"args": ["-provision", "--dry-run"], **quick},
            {"args": ["-show-configuration"], **quick},
            {"args": ["-deprovision", "-force"], "env": {"WAPROV_LOCK_WAIT": "0.5"}},
            {"args": ["-resourcedisk"], "env": {"WAPROV_LOCK_WAIT": "0"}},
        ],
    }
    r = scenario(str(tmp_path), spec)
    status, dep_dry, prov_dry, show, deprovision, resourcedisk = r["runs"]
    assert [status["rc"], dep_dry["rc"], prov_dry["rc"], show["rc"]] == [1, 0, 0, 0], stderrs(r)
    for run in (status, dep_dry, prov_dry, show):
        assert run["seconds"] < 20 and "waiting" not in run["stderr"], run["stderr"]
    who = "a process that has not written its name into the lock file"
    assert deprovision["rc"] == 1 and deprovision["seconds"] >= 0.5
    assert re.search(LOCK_MESSAGE.format(wait=0.5, who=who), deprovision["stderr"]), deprovision["stderr"]
    assert resourcedisk["rc"] == 1
    assert re.search(LOCK_MESSAGE.format(wait=0, who=who), resourcedisk["stderr"]), resourcedisk["stderr"]
    assert r["snapshot"] == status["snapshot"]  # nothing changed since the first run
    assert health_states(r) == []


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("mkdir -m 0700 /tmp/elsewhere && ln -s /tmp/elsewhere /run/waprov", "is a symbolic link"),
        ("mkdir -m 0700 /run/waprov && chown nobody /run/waprov", r"is owned by uid \d+, not root"),
        ("mkdir -m 0777 /run/waprov", r"is writable by others than root \(mode 0777\)"),
    ],
)
def test_an_unsafe_lock_directory_is_refused_and_nothing_is_changed(
    tmp_path: Any, setup: str, reason: str
) -> None:
    spec = {
        "setup": [*PROVISIONED, setup],
        "ovf": ovf(),
        "snapshot": [*SNAPSHOT, "/tmp/elsewhere"],
        "runs": [
            {"args": ["-status"], "snapshot": [*SNAPSHOT, "/tmp/elsewhere"]},
            {"args": ["-deprovision", "-force"]},
        ],
    }
    r = scenario(str(tmp_path), spec)
    run = r["runs"][1]
    assert run["rc"] == 1
    assert re.search(
        rf"ERROR /run/waprov {reason}: refusing to use it for waprov's run lock", run["stderr"]
    ), run["stderr"]
    assert "Traceback" not in run["stderr"]
    assert r["snapshot"] == r["runs"][0]["snapshot"]
