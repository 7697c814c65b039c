"""`waprov -status` reads only regular files: a FIFO, a symbolic link or a huge file in
the state directory is refused at once with an error naming it (exit 2), never waited on."""

from __future__ import annotations

import io
import json
import os
import threading
from typing import Any, Dict

import pytest

from tests.provisioning import scenario
from waprov.errors import ConfigError, WaprovError
from waprov.status import main

SWAPPED = "D0DF4C54-4ECB-4A4B-9954-5BDF3ED5C3B8"
REPORT = {"vm_id": SWAPPED, "result": "success", "steps": [], "report_line": "result=success"}


def status_within(state_dir: str, seconds: float = 10) -> Dict[str, Any]:
    """status.main in a thread: its exit code or error, or "hung" after `seconds`. A hung
    reader is then released by opening its FIFOs for writing (they see end of file)."""
    outcome: Dict[str, Any] = {}

    def target() -> None:
        out = io.StringIO()
        try:
            outcome["rc"] = main(False, out=out, state_dir=state_dir)
        except WaprovError as e:
            outcome["error"] = e
        outcome["out"] = out.getvalue()

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        for name in os.listdir(state_dir):
            try:
                os.close(os.open(os.path.join(state_dir, name), os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        t.join(5)
        return {"hung": True}
    return outcome


def write(path: str, data: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(data)


def test_a_report_and_a_marker_of_this_vm_mean_provisioned(tmp_path: Any) -> None:
    write(str(tmp_path / "report.json"), json.dumps(REPORT))
    write(str(tmp_path / "provisioned"), SWAPPED)
    r = status_within(str(tmp_path))
    assert r.get("rc") == 0, r
    assert f"this VM ({SWAPPED}) is provisioned" in r["out"]


@pytest.mark.parametrize("name", ["report.json", "provisioned"])
def test_a_fifo_is_refused_at_once(tmp_path: Any, name: str) -> None:
    if name != "report.json":
        write(str(tmp_path / "report.json"), json.dumps(REPORT))
    path = str(tmp_path / name)
    os.mkfifo(path, 0o600)
    r = status_within(str(tmp_path))
    assert not r.get("hung"), "waprov -status waited on a FIFO"
    err = r.get("error")
    assert isinstance(err, ConfigError) and err.exit_code == 2, r
    assert err.path == path and "not a regular file" in str(err)


@pytest.mark.parametrize("name", ["report.json", "provisioned"])
def test_a_symbolic_link_is_not_followed(tmp_path: Any, name: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    write(str(elsewhere), json.dumps(REPORT) if name == "report.json" else SWAPPED)
    if name == "provisioned":
        write(str(tmp_path / "report.json"), json.dumps(REPORT))
    os.symlink(str(elsewhere), str(tmp_path / name))
    r = status_within(str(tmp_path))
    err = r.get("error")
    assert isinstance(err, ConfigError) and err.exit_code == 2, r
    assert err.path == str(tmp_path / name) and "symbolic link" in str(err)


def test_a_huge_report_is_refused_without_being_read(tmp_path: Any) -> None:
    path = str(tmp_path / "report.json")
    with open(path, "wb") as f:
        f.truncate(1 << 40)  # sparse: a terabyte that takes no space
    r = status_within(str(tmp_path))
    err = r.get("error")
    assert isinstance(err, ConfigError) and err.exit_code == 2, r
    assert "too large" in str(err)


def test_a_missing_report_is_not_an_error(tmp_path: Any) -> None:
    r = status_within(str(tmp_path))
    assert r.get("rc") == 1 and "has not run a provisioning" in r["out"], r


def test_the_command_exits_2_naming_a_fifo_report(tmp_path: Any) -> None:
    """The real `waprov -status` in a sandbox (the old one waited forever: the sandbox's
    timeout then fails the test)."""
    setup = ["mkdir -p -m 0700 /var/lib/waprov", "mkfifo -m 0600 /var/lib/waprov/report.json"]
    r = scenario(
        str(tmp_path),
        {"setup": setup, "ovf": None, "snapshot": [], "runs": [{"args": ["-status"]}]},
        timeout=60,
    )
    run = r["runs"][0]
    assert run["rc"] == 2, run["stderr"]
    assert "ERROR /var/lib/waprov/report.json: is not a regular file" in run["stderr"]
    assert "Traceback" not in run["stderr"]
