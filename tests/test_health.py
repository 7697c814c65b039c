"""health.Reporter against the fake fabric: which report failures a run survives, the
goal state fetched again after a 410, quick retries of a dropped connection, and what
`sent` (the run report's health_reports) records of each POST."""

from __future__ import annotations

import logging
import re
from typing import Any, Dict, List, Tuple

import pytest

from tests.conftest import SCALE, virtual_clock, waits
from tests.fakefabric import CLOSE, RESET, FakeFabric, Fault, status
from waprov.config import Config
from waprov.health import Reporter
from waprov.http import HttpClient
from waprov.overrides import Overrides
from waprov.system import System
from waprov.timing import Clock


def reporter(fabric: FakeFabric, tmp_path: Any, clock: Clock) -> Reporter:
    r = Reporter(
        System(root=str(tmp_path)),
        Config(),
        Overrides(wireserver=fabric.wireserver),
        clock,
        HttpClient(clock),
    )
    r.connect()
    del clock.slept[:]  # only what the reports waited
    return r


def sent(r: Reporter) -> List[Tuple[str, str, Any]]:
    return [(e["state"], e["substatus"], e["http_status"]) for e in r.sent]


def incarnations(fabric: FakeFabric) -> List[str]:
    return [re.findall(r"<GoalStateIncarnation>(.*?)<", b)[0] for b in fabric.health_bodies()]


def states(fabric: FakeFabric) -> List[str]:
    return [re.findall(r"<State>(.*?)<", b)[0] for b in fabric.health_bodies()]


@pytest.mark.parametrize("fault", [RESET, CLOSE])
def test_a_dropped_connection_on_the_first_report_is_retried_at_once(
    fabric: FakeFabric, tmp_path: Any, fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(SCALE)
    r = reporter(fabric, tmp_path, clock)
    fabric.script("health", fault)
    with caplog.at_level(logging.WARNING, logger="waprov"):
        r.provisioning()
        assert r.ready()
    assert waits(clock) == [0.1]  # not WALinuxAgent's 30 s
    assert states(fabric) == ["NotReady", "NotReady", "Ready"]
    assert sent(r) == [("NotReady", "Provisioning", 200), ("Ready", "", 200)]
    (warning,) = [x.getMessage() for x in caplog.records if x.levelno >= logging.WARNING]
    assert (
        warning.startswith("health report (in progress): POST http://")
        and "attempt 1 failed: connection" in warning
    )


@pytest.mark.parametrize(("code", "wait"), [(503, 1.0), (500, 30.0)])
def test_server_errors_keep_walinuxagents_back_off(
    fabric: FakeFabric, tmp_path: Any, code: int, wait: float
) -> None:
    clock = Clock(SCALE)
    r = reporter(fabric, tmp_path, clock)
    fabric.script("health", status(code))
    assert r.ready()
    assert waits(clock) == [wait]


def test_an_unreachable_in_progress_report_is_a_warning_and_bounded(
    fabric: FakeFabric, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    clock = virtual_clock()
    r = reporter(fabric, tmp_path, clock)
    fabric.script("health", *[CLOSE] * 5)
    with caplog.at_level(logging.WARNING, logger="waprov"):
        r.provisioning()  # does not raise
    assert waits(clock) == [0.1, 0.2, 0.4, 30.0]  # then the 60 s deadline: 45 s more would pass it
    assert (
        "Reporting NotReady (Provisioning) failed, going on without it: Failed to send provision status"
        in (caplog.records[-1].getMessage())
    )
    assert caplog.records[-1].levelno == logging.WARNING
    (entry,) = r.sent
    assert entry["http_status"] is None and "connection closed without a response" in entry["error"]
    assert r.ready() and states(fabric) == ["NotReady"] * 5 + ["Ready"]


def test_a_410_on_the_in_progress_report_refetches_the_goal_state_before_ready(
    fabric: FakeFabric, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    r = reporter(fabric, tmp_path, Clock(SCALE))
    fabric.script("health", status(410, b"gone"))
    fabric.incarnation = "2"  # what a 410 means: the goal state moved on
    with caplog.at_level(logging.WARNING, logger="waprov"):
        r.provisioning()
    assert any(
        "going on without it" in x.getMessage() and "HTTP 410" in x.getMessage() for x in caplog.records
    )
    assert len(fabric.requests_for("health")) == 1  # the in-progress report is not posted again
    assert len(fabric.requests_for("goalstate")) == 1  # connect's; the next report fetches again
    assert r.ready()
    assert len(fabric.requests_for("goalstate")) == 2
    assert incarnations(fabric) == ["1", "2"] and states(fabric) == ["NotReady", "Ready"]
    assert sent(r) == [("NotReady", "Provisioning", 410), ("Ready", "", 200)]
    assert "HTTP 410: gone" in r.sent[0]["error"] and "error" not in r.sent[1]


@pytest.mark.parametrize("final", ["Ready", "ProvisioningFailed"])
def test_ready_and_failed_survive_one_410(fabric: FakeFabric, tmp_path: Any, final: str) -> None:
    r = reporter(fabric, tmp_path, Clock(SCALE))
    fabric.script("health", status(410))
    fabric.incarnation = "2"
    assert r.ready() if final == "Ready" else r.failed("result=error|reason=x")
    assert incarnations(fabric) == ["1", "2"]  # posted again with the new goal state's ids
    assert len(fabric.requests_for("goalstate")) == 2
    sub = "" if final == "Ready" else final
    state = "Ready" if final == "Ready" else "NotReady"
    assert sent(r) == [(state, sub, 410), (state, sub, 200)]


def test_a_second_410_is_a_failed_report(fabric: FakeFabric, tmp_path: Any) -> None:
    r = reporter(fabric, tmp_path, Clock(SCALE))
    fabric.script("health", status(410), status(410))
    assert not r.ready()
    assert sent(r) == [("Ready", "", 410), ("Ready", "", 410)]
    assert len(fabric.requests_for("health")) == 2 and len(fabric.requests_for("goalstate")) == 2


def test_dry_run_records_nothing_and_sends_nothing(fabric: FakeFabric, tmp_path: Any) -> None:
    clock = Clock(SCALE)
    system = System(root=str(tmp_path), dry_run=True)
    r = Reporter(system, Config(), Overrides(wireserver=fabric.wireserver), clock, HttpClient(clock))
    r.provisioning()
    assert r.ready()
    assert r.sent == [] and fabric.requests == []
    notes: Dict[str, str] = {a.target: a.detail for a in system.actions if a.kind == "report"}
    assert notes == {"NotReady Provisioning": "dry run: not sent", "Ready": "dry run: not sent"}
