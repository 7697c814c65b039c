"""What one provisioning run did, for the admin and the host: report.json and KVP.

`RunRecord` collects, as the run goes: each phase (local, network: start, end, result)
and each step (name, phase, start, duration, result, error),
the data sources used, the commands run (System's recorded `run` actions, already
redacted). At the end `finish()` adds the health reports tried (with their HTTP status,
from the Reporter) and writes
`/var/lib/waprov/report.json` (0600, through System) and the KVP `PROVISIONING_REPORT`
(the structured success or failure line). Every step also goes to KVP as it ends, so the
host sees how far a run got even if it never finishes. The local phase's process writes
report.json with result `in progress` (or `error`) and no KVP report line; the network
phase's process takes that record's phases and steps over (`resume`) and adds its own.
Secrets never enter: errors and commands come redacted.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Mapping, Optional

from waprov import __version__
from waprov.errors import WaprovError
from waprov.kvp import Kvp
from waprov.log import utc_time
from waprov.state import REPORT, state_path
from waprov.system import System

FORMAT = 1


class RunRecord:
    def __init__(self, system: System, kvp: Kvp, vm_id: str, boot_time: float) -> None:
        self.system, self.kvp, self.vm_id = system, kvp, vm_id
        self.boot_time = boot_time
        self.started = time.time()
        self.started_text = utc_time(self.started, 3)
        self._mono = time.monotonic()
        self.steps: List[Dict[str, Any]] = []
        self.phases: List[Dict[str, Any]] = []
        self.sources: List[str] = []
        self.commands: List[str] = []  # an earlier process's (the local phase's), redacted

    def resume(self, state_dir: str) -> None:
        """Take over the record of this VM's local phase when its own process wrote it last."""
        try:
            raw = self.system.read(state_path(REPORT, state_dir))
            doc = json.loads(raw or b"null")
        except (ValueError, WaprovError):
            return
        if not isinstance(doc, dict) or doc.get("vm_id") != self.vm_id or doc.get("result") == "success":
            return
        phases, steps = doc.get("phases"), doc.get("steps")
        if not isinstance(phases, list) or not isinstance(steps, list):
            return
        if not phases or any(not isinstance(p, dict) or p.get("name") != "local" for p in phases):
            return
        self.phases, self.steps = phases, steps
        if isinstance(doc.get("started"), str):
            self.started_text = doc["started"]
        self.sources = [s for s in doc.get("sources") or [] if isinstance(s, str)]
        self.commands = [c for c in doc.get("commands") or [] if isinstance(c, str)]

    def phase_start(self, name: str) -> None:
        self.phases.append({"name": name, "start": utc_time(digits=3), "end": None, "result": None})
        self.kvp.event(f"phase:{name}", state="start")

    def phase_open(self, name: str) -> bool:
        return any(p["name"] == name and p["end"] is None for p in self.phases)

    def phase_end(self, name: str, result: str) -> None:
        for p in self.phases:
            if p["name"] == name and p["end"] is None:
                p["end"], p["result"] = utc_time(digits=3), result
                self.kvp.event(f"phase:{name}", state="end", result=result)

    def step(
        self,
        name: str,
        phase: str,
        started: float,
        seconds: float,
        error: Optional[str] = None,
        *,
        skipped: bool = False,
    ) -> None:
        """A step ended (`started`: wall clock; `error`: the redacted message)."""
        entry: Dict[str, Any] = {
            "name": name,
            "phase": phase,
            "start": utc_time(started, 3),
            "duration": round(seconds, 3),
            "result": "error" if error is not None else "skipped" if skipped else "ok",
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
        error: Optional[Mapping[str, str]] = None,
        *,
        final: bool = True,
    ) -> None:
        """Write report.json and (`final`: not the local phase's) PROVISIONING_REPORT;
        `line` is the structured row, `reports` the health reports tried (Reporter.sent)."""
        now = time.time()
        if final:
            self.kvp.report(line)
        doc: Dict[str, Any] = {
            "format": FORMAT,
            "agent": f"waprov/{__version__}",
            "vm_id": self.vm_id,
            "result": result,
            "report_line": line,
            "started": self.started_text,
            "finished": utc_time(now, 3),
            "seconds_since_start": round(time.monotonic() - self._mono, 3),
            "seconds_since_boot": round(now - self.boot_time, 3) if self.boot_time else None,
            "sources": self.sources,
            "phases": self.phases,
            "steps": self.steps,
            "health_reports": reports,
            "commands": self.commands + [a.target for a in self.system.actions if a.kind == "run"],
        }
        if error:
            doc["error"] = dict(error)
        if self.system.dry_run:
            return
        self.system.makedirs(state_dir, 0o700)
        self.system.write(state_path(REPORT, state_dir), json.dumps(doc, indent=2) + "\n", 0o600)
