"""The traces a run leaves: report.json, KVP records, `waprov -status` (sandboxed runs)."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

import pytest

from tests.inside import SNAPSHOT
from tests.provisioning import PASSWORD, files, ovf, scenario
from waprov.kvp import RECORD, decode
from waprov.provision import STEP_NAMES, STEPS

SWAPPED_ID = "D0DF4C54-4ECB-4A4B-9954-5BDF3ED5C3B8"
HYPERV = "mkdir -p /var/lib/hyperv"
SNAP = [*SNAPSHOT, "/var/lib/hyperv"]
STATUS = {"args": ["-status"]}
STATUS_JSON = {"args": ["-status", "--json"]}


def report_json(r: Dict[str, Any]) -> Dict[str, Any]:
    entry = files(r)["/var/lib/waprov/report.json"]
    assert entry["mode"] == 0o600
    doc: Dict[str, Any] = json.loads(entry["bytes"])
    return doc


def kvp(r: Dict[str, Any]) -> List[Tuple[str, str]]:
    raw: bytes = files(r)["/var/lib/hyperv/.kvp_pool_1"]["bytes"]
    assert len(raw) % RECORD == 0
    return list(decode(raw))


def test_success_leaves_a_report_kvp_records_and_a_status(tmp_path: Any) -> None:
    spec = {"ovf": ovf(password=PASSWORD), "setup": [HYPERV], "snapshot": SNAP, "search": PASSWORD}
    r = scenario(str(tmp_path), {**spec, "runs": [{}, STATUS, STATUS_JSON]})
    assert [x["rc"] for x in r["runs"]] == [0, 0, 0]
    doc = report_json(r)
    assert doc["result"] == "success" and doc["vm_id"] == SWAPPED_ID and doc["agent"] == "waprov/0.1.0"
    assert doc["report_line"].startswith(f"result=success|agent=waprov/0.1.0|vm_id={SWAPPED_ID}|timestamp=")
    assert doc["sources"] == ["dvd", "imds"]
    names = [s["name"] for s in doc["steps"]]
    assert names == list(STEP_NAMES)  # every step once, in the list's order
    assert [s["phase"] for s in doc["steps"]] == [s.phase for s in STEPS]
    assert [p["name"] for p in doc["phases"]] == ["local", "network"]
    assert all(s["result"] == "ok" and s["duration"] >= 0 for s in doc["steps"])
    assert [(h["state"], h["substatus"], h["http_status"]) for h in doc["health_reports"]] == [
        ("NotReady", "Provisioning", 200),
        ("Ready", "", 200),
    ]
    assert any(c.startswith("useradd -m azureuser") for c in doc["commands"])
    assert any(c.startswith("usermod -p '<redacted>'") or "<redacted>" in c for c in doc["commands"])
    assert doc["seconds_since_boot"] > 0 and 0 < doc["seconds_since_start"] < 60
    # KVP: one record per step, then PROVISIONING_REPORT with the same line
    records = kvp(r)
    prefix = f"waprov-0.1.0|{SWAPPED_ID}|step:"
    steps = [(k[len(prefix) :], json.loads(v)) for k, v in records if k.startswith(prefix)]
    assert [n for n, _ in steps] == names
    assert set(steps[0][1]) == {"name", "phase", "start", "duration", "result"}
    phase_events = [(k.rsplit("|", 1)[1], json.loads(v)["state"]) for k, v in records if "|phase:" in k]
    assert phase_events == [("phase:local", "start"), ("phase:local", "end"),
                            ("phase:network", "start"), ("phase:network", "end")]  # fmt: skip
    assert records[-1] == ("PROVISIONING_REPORT", doc["report_line"])
    assert r["found_in"] == []  # the password is in neither file (searched everywhere)
    status = r["runs"][1]["stdout"]
    assert f"waprov: this VM ({SWAPPED_ID}) is provisioned" in status
    assert "succeeded in" in status and "sources: dvd, imds" in status
    assert "health reports: NotReady/Provisioning -> 200; Ready -> 200" in status
    assert json.loads(r["runs"][2]["stdout"]) == {"provisioned": True, "report": doc}


def test_a_failure_is_in_the_report_the_kvp_line_and_the_status(tmp_path: Any) -> None:
    r = scenario(str(tmp_path), {"ovf": ovf(password=PASSWORD), "setup": [HYPERV, "groupadd azureuser"],
                                 "snapshot": SNAP, "search": PASSWORD, "runs": [{}, STATUS]})  # fmt: skip
    assert [x["rc"] for x in r["runs"]] == [1, 1]
    doc = report_json(r)
    assert doc["result"] == "error"
    assert doc["error"]["step"] == "user" and doc["error"]["reason"] == "failed to provision user"
    assert doc["steps"][-1]["name"] == "user" and doc["steps"][-1]["result"] == "error"
    assert "useradd -m azureuser" in doc["steps"][-1]["error"]
    assert doc["report_line"].startswith("result=error|reason=failed to provision user|")
    # a local step: it fails before NotReady/Provisioning is sent
    assert [h["substatus"] for h in doc["health_reports"]] == ["ProvisioningFailed"]
    assert kvp(r)[-1] == ("PROVISIONING_REPORT", doc["report_line"])
    assert r["found_in"] == []
    status = r["runs"][1]["stdout"]
    assert "is NOT provisioned" in status and "FAILED" in status
    assert "last error: step user: failed to provision user:" in status


def test_an_unreachable_wireserver_still_leaves_the_kvp_report(tmp_path: Any) -> None:
    r = scenario(str(tmp_path), {"ovf": ovf(), "setup": [HYPERV], "snapshot": SNAP,
                                 "faults": {"versions": [["status", 503]] * 3000}})  # fmt: skip
    assert r["runs"][0]["rc"] == 1
    doc = report_json(r)
    assert doc["error"]["reason"] == "failed to reach the wireserver"
    assert doc["health_reports"][-1]["http_status"] is None  # ProvisioningFailed could not be sent
    assert "No protocol found" in doc["health_reports"][-1]["error"]
    key, line = kvp(r)[-1]
    assert key == "PROVISIONING_REPORT" and "reason=failed to reach the wireserver" in line


def test_without_hyperv_no_pool_file_and_status_before_any_run(tmp_path: Any) -> None:
    r = scenario(str(tmp_path), {"ovf": ovf(), "snapshot": SNAP, "runs": [STATUS, {}]})
    assert r["runs"][0]["rc"] == 1
    assert "waprov has not run a provisioning on this VM" in r["runs"][0]["stdout"]
    assert r["runs"][1]["rc"] == 0
    assert "/var/lib/hyperv" not in r["snapshot"]
    assert report_json(r)["result"] == "success"


@pytest.mark.parametrize("step", ["dvd", "hostname", "keys", "markers"])
def test_a_run_killed_mid_way_leaves_kvp_steps_up_to_there(tmp_path: Any, step: str) -> None:
    r = scenario(str(tmp_path), {"ovf": ovf(), "setup": [HYPERV], "snapshot": SNAP,
                                 "runs": [{"crash_after": step}]})  # fmt: skip
    assert r["runs"][0]["rc"] == -9
    names = [k.rsplit("|step:", 1)[1] for k, _ in kvp(r) if "|step:" in k]
    assert names[-1] == step
    assert "/var/lib/waprov/report.json" not in r["snapshot"]
