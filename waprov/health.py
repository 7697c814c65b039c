"""Telling Azure: the health reports (WA §2.3, §6.4) and the structured failure text.

`Reporter` connects to the wireserver once (discovery, versions, goal state), fetches
the certificates when a key needs them, and posts NotReady/Provisioning, Ready or
NotReady/ProvisioningFailed. The in-progress NotReady/Provisioning is tried under a 60 s
deadline (wireserver.PROGRESS_POLICY) and its failure is logged as a WARNING, and the run
goes on (WALinuxAgent only logs it too). A 410 Gone (the incarnation changed) makes the
next report fetch the goal state again first; Ready and ProvisioningFailed are posted once
more after one 410. `sent` lists every POST tried, failed ones with their status and error
(the run report's `health_reports`). In a dry run it contacts nothing and puts each report
in the plan. `failure_description()` is design.md's one-line
`result=error|reason=…|agent=waprov/<ver>|step=…|…|vm_id=…|timestamp=…|documentation_url=…`.
"""

from __future__ import annotations

import csv
import io
import logging
from typing import Any, Dict, List, Optional

from waprov import __version__
from waprov.config import Config
from waprov.errors import ProtocolError, ProvisionError
from waprov.http import HttpClient, RetryPolicy
from waprov.log import Redactor, utc_time
from waprov.model import ProvisioningData
from waprov.overrides import Overrides
from waprov.system import System
from waprov.timing import Clock
from waprov.wireserver import (
    GONE,
    HEALTH_POLICY,
    PROGRESS_POLICY,
    GoalState,
    WireServer,
    connect,
    discover_endpoint,
)

log = logging.getLogger("waprov")
DOC_URL = "https://aka.ms/linuxprovisioningerror"
MAX_DETAIL = 512


def _row(items: Dict[str, str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, delimiter="|", quotechar='"', quoting=csv.QUOTE_MINIMAL, lineterminator="").writerow(
        f"{k}={' / '.join(v.splitlines())}" for k, v in items.items()
    )
    return buf.getvalue()


def failure_description(
    e: ProvisionError, vm_id: str, redactor: Redactor, now: Optional[float] = None
) -> str:
    items = {"result": "error", "reason": e.reason, "agent": f"waprov/{__version__}", "step": e.step}
    items.update({k: v[:MAX_DETAIL] for k, v in e.data.items()})
    items["error"] = str(e)[:MAX_DETAIL]
    items.update({"vm_id": vm_id, "timestamp": utc_time(now), "documentation_url": DOC_URL})
    return redactor.redact(_row(items))


def success_line(vm_id: str, now: Optional[float] = None) -> str:
    """peers §3.5's success row (KVP PROVISIONING_REPORT, report.json)."""
    return _row(
        {"result": "success", "agent": f"waprov/{__version__}", "vm_id": vm_id, "timestamp": utc_time(now)}
    )


class Reporter:
    def __init__(
        self, system: System, config: Config, overrides: Overrides, clock: Clock, client: HttpClient
    ) -> None:
        self.system, self.config, self.overrides = system, config, overrides
        self.clock, self.client = clock, client
        self.ws: Optional[WireServer] = None
        self.gs: Optional[GoalState] = None
        self.unreachable: Optional[str] = None
        self.stale = False  # a report was answered 410: fetch the goal state before the next
        self.sent: List[Dict[str, Any]] = []  # each report: state, substatus, http_status (run report)

    def connect(self) -> None:
        if self.ws is not None:
            return
        if self.unreachable is not None:  # detection already ran out its deadline once
            raise ProtocolError(self.unreachable)
        endpoint, how = discover_endpoint(self.system, self.config, self.overrides)
        log.info("Wireserver endpoint %s (%s)", endpoint, how)
        if self.system.dry_run:
            self.system.note("fetch", f"http://{endpoint}/machine/?comp=goalstate", "dry run: not contacted")
            return
        try:
            self.ws, self.gs = connect(self.client, endpoint, self.clock)
        except ProtocolError as e:
            self.unreachable = str(e)
            raise

    def certificates(self, data: ProvisioningData) -> None:
        """`<Lib.Dir>/<THUMB>.crt/.prv`, which Fingerprint keys and key pairs read."""
        if not data.fingerprints:
            return
        if self.ws is None or self.gs is None:
            self.system.note("fetch", "certificates", "dry run: not contacted")
            return
        from waprov.certs import fetch_certificates  # here: only a key naming a fingerprint needs it

        fetch_certificates(self.system, self.config, self.ws, self.gs)

    def _post(
        self,
        state: str,
        substatus: str = "",
        description: str = "",
        *,
        policy: RetryPolicy = HEALTH_POLICY,
        again_after_gone: bool = True,
    ) -> None:
        """POST one report (after a fresh goal state when the last answer was 410); with
        `again_after_gone`, once more after a 410. Every POST tried is one `sent` entry."""
        again = again_after_gone
        while True:
            entry: Optional[Dict[str, Any]] = None
            if not self.system.dry_run:  # the run report lists every report tried, sent or not
                entry = {
                    "state": state,
                    "substatus": substatus,
                    "time": utc_time(digits=3),
                    "http_status": None,
                }
                self.sent.append(entry)
            try:
                self.connect()
                if self.ws is None or self.gs is None:
                    self.system.note("report", f"{state} {substatus}".strip(), "dry run: not sent")
                    return
                if self.stale:
                    log.info("Fetching the goal state again (the wireserver answered 410 Gone)")
                    self.gs = self.ws.goal_state()
                    self.stale = False
                status = self.ws.report(self.gs, state, substatus, description, policy)
            except ProtocolError as e:
                code = getattr(e, "status", None)
                if entry is not None:
                    entry["http_status"] = code
                    entry["error"] = self.system.redactor.redact(str(e))
                if code == GONE:
                    self.stale = True
                    if again:
                        again = False
                        log.warning("Reporting %s: 410 Gone (the goal state changed): reporting again", state)
                        continue
                raise
            if entry is not None:
                entry["http_status"] = status
            return

    def provisioning(self) -> None:
        """NotReady/Provisioning/Starting. A failure is a WARNING and the run goes on."""
        try:
            self._post("NotReady", "Provisioning", "Starting", policy=PROGRESS_POLICY, again_after_gone=False)
        except ProtocolError as e:
            log.warning("Reporting NotReady (Provisioning) failed, going on without it: %s", e)

    def ready(self) -> bool:
        try:
            self._post("Ready")
            return True
        except ProtocolError as e:
            log.error("Reporting Ready failed: %s", e)
            return False

    def failed(self, description: str) -> bool:
        try:
            self._post("NotReady", "ProvisioningFailed", description)
            return True
        except ProtocolError as e:
            log.error("Reporting NotReady failed: %s", e)
            return False
