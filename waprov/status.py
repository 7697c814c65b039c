"""`waprov -status [--json]`: what the last provisioning run did, from report.json.

A human summary (provisioned or not, when, the sources, each step's duration and result,
the health reports and their HTTP status, the last error and the structured report line)
or, with `--json`, the report itself plus `provisioned`. Exit 0 when this VM is
provisioned by waprov, 1 when the last run failed or waprov has not provisioned this VM,
2 when the report (or the marker) is unreadable, too large, a symbolic link or not a regular
file: neither is ever opened as a FIFO or a device. Read-only: nothing is changed.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Optional, TextIO

from waprov.errors import ConfigError
from waprov.hostfile import Unreadable
from waprov.state import MARKER, REPORT, STATE_DIR, state_path
from waprov.system import System
from waprov.vmid import same_vm

MAX_REPORT = 16 << 20  # bytes: a run report is a few KiB
MAX_MARKER = 4096  # bytes: the marker holds one VM id


def _read(system: System, path: str, limit: int, what: str) -> Optional[bytes]:
    """System.read's bytes (never through a link, never blocking on a FIFO), its refusals
    as ConfigError (exit 2) naming the file."""
    try:
        return system.read(path, limit)
    except Unreadable as e:
        if e.refused:
            raise ConfigError(path, f"{e.why}, not {what}: refused") from None
        raise ConfigError(path, f"cannot be read as {what} ({e.why})") from None


def load(system: System, state_dir: str = STATE_DIR) -> Optional[Dict[str, Any]]:
    path = state_path(REPORT, state_dir)
    data = _read(system, path, MAX_REPORT, "waprov's run report")
    if data is None:
        return None
    try:
        doc = json.loads(data.decode("utf-8"))
    except ValueError as e:  # UnicodeDecodeError is a ValueError too
        raise ConfigError(path, f"cannot be read as waprov's run report ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list):
        raise ConfigError(path, "is not a waprov run report (no list of steps)")
    return doc


def provisioned(system: System, doc: Dict[str, Any], state_dir: str = STATE_DIR) -> bool:
    """Whether waprov's marker names the report's VM (a missing marker: no)."""
    data = _read(system, state_path(MARKER, state_dir), MAX_MARKER, "waprov's provisioned marker")
    return data is not None and same_vm(data.decode("utf-8", "replace"), str(doc.get("vm_id", "")))


def summary(doc: Dict[str, Any], done: bool) -> List[str]:
    ok = doc.get("result") == "success"
    outcome = "succeeded" if ok else "in progress" if doc.get("result") == "in progress" else "FAILED"
    state = "provisioned" if done else "NOT provisioned"
    boot = doc.get("seconds_since_boot")
    after_boot = "" if boot is None else f" ({float(boot):.1f}s after boot)"
    took = float(doc.get("seconds_since_start") or 0)
    lines = [
        f"waprov: this VM ({doc.get('vm_id') or 'unknown id'}) is {state}",
        f"last run: {doc.get('started')} to {doc.get('finished')}, {outcome} in {took:.3f}s{after_boot}",
        "sources: " + (", ".join(doc.get("sources") or []) or "none read"),
    ]
    phases = [p for p in doc.get("phases") or [] if isinstance(p, dict)]
    if phases:
        lines.append("phases:")
        lines += [f"  {p.get('name', '?'):<8} {p.get('start')} to {p.get('end') or '(not ended)'}  "
                  f"{p.get('result') or ''}".rstrip() for p in phases]  # fmt: skip
    lines.append("steps:")
    for step in doc["steps"]:
        if isinstance(step, dict):
            why = f"  {step['error']}" if step.get("error") else ""
            seconds = float(step.get("duration") or 0)
            name, phase = step.get("name", "?"), step.get("phase") or ""
            lines.append(f"  {name:<18} {phase:<8} {seconds:8.3f}s  {step.get('result')}{why}")
    reports = doc.get("health_reports") or []
    shown = [
        "{}{} -> {}".format(
            r.get("state"),
            f"/{r['substatus']}" if r.get("substatus") else "",
            r.get("http_status") or r.get("error") or "not sent",
        )
        for r in reports
        if isinstance(r, dict)
    ]
    lines.append("health reports: " + ("; ".join(shown) or "none sent"))
    err = doc.get("error")
    if isinstance(err, dict):
        lines.append(f"last error: step {err.get('step')}: {err.get('reason')}: {err.get('message')}")
    lines.append(f"report line: {doc.get('report_line')}")
    return lines


def main(as_json: bool, out: TextIO = sys.stdout, state_dir: str = STATE_DIR) -> int:
    system = System(dry_run=True)  # read-only
    doc = load(system, state_dir)
    if doc is None:
        if as_json:
            print(json.dumps({"provisioned": False, "report": None}), file=out)
        else:
            missing = state_path(REPORT, state_dir)
            print(f"waprov has not run a provisioning on this VM ({missing} is missing)", file=out)
        return 1
    done = provisioned(system, doc, state_dir)
    if as_json:
        print(json.dumps({"provisioned": done, "report": doc}, indent=2), file=out)
    else:
        print("\n".join(summary(doc, done)), file=out)
    return 0 if done and doc.get("result") == "success" else 1
