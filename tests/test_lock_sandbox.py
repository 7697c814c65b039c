"""The run lock with the real commands in a sandbox: `waprov` runs started at the same time
against the fake fabric, a lock held by another process, an unsafe /run/waprov.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Dict, List

import pytest

from tests.inside import SNAPSHOT
from tests.provisioning import health_states, ovf, scenario, text

SINCE = r"since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"

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
