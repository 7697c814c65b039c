"""What one provisioning run did, for the admin and the host: report.json and KVP.

`RunRecord` collects, as the run goes: each step (name, start, duration, result, error),
the data sources used, the commands run (System's recorded `run` actions, already
redacted). At the end `finish()` adds the health reports tried (with their HTTP status,
from the Reporter) and writes
`/var/lib/waprov/report.json` (0600, through System) and the KVP `PROVISIONING_REPORT`
(the structured success or failure line). Every step also goes to KVP as it ends, so the
host sees how far a run got even if it never finishes. Secrets never enter: errors and
commands come redacted.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional

from waprov import __version__
from waprov.kvp import Kvp
from waprov.system import System

REPORT = "report.json"
FORMAT = 1


def stamp(now: Optional[float] = None) -> str:
    """A UTC time to the second, `2026-12-03T18:00:00Z` (report lines, the run lock)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class RunRecord:
    def __init__(self, system: System, kvp: Kvp, vm_id: str, boot_time: float) -> None:
        self.system, self.kvp, self.vm_id = system, kvp, vm_id
        self.boot_time = boot_time
        self.started = time.time()
        self._mono = time.monotonic()
        self.steps: List[Dict[str, Any]] = []
        self.sources: List[str] = []

    def step(self, name: str, started: float, seconds: float, error: Optional[str] = None) -> None:
        """A step ended (`started`: wall clock; `error`: the redacted message)."""
        entry: Dict[str, Any] = {
            "name": name,
            "start": iso(started),
            "duration": round(seconds, 3),
            "result": "error" if error is not None else "ok",
        }
        if error is not None:
            entry["error"] = self.system.redactor.redact(error)
        self.steps.append(entry)
        self.kvp.event(f"step:{name}", **{k: v for k, v in entry.items() if k != "name"})

    def finish(
        self,
        result: str,
        line: str,
        state_dir: str,
        reports: List[Dict[str, Any]],
        error: Optional[Dict[str, str]] = None,
    ) -> None:
        """Write report.json and PROVISIONING_REPORT; `line` is the structured row,
        `reports` the health reports tried (Reporter.sent)."""
        now = time.time()
        self.kvp.report(line)
        doc: Dict[str, Any] = {
            "format": FORMAT,
            "agent": f"waprov/{__version__}",
            "vm_id": self.vm_id,
            "result": result,
            "report_line": line,
            "started": iso(self.started),
            "finished": iso(now),
            "seconds_since_start": round(time.monotonic() - self._mono, 3),
            "seconds_since_boot": round(now - self.boot_time, 3) if self.boot_time else None,
            "sources": self.sources,
            "steps": self.steps,
            "health_reports": reports,
            "commands": [a.target for a in self.system.actions if a.kind == "run"],
        }
        if error:
            doc["error"] = error
        if self.system.dry_run:
            return
        self.system.makedirs(state_dir, 0o700)
        self.system.write(os.path.join(state_dir, REPORT), json.dumps(doc, indent=2) + "\n", 0o600)
