"""On an e2e failure, name the console and fabric logs of the scenario it happened in
(the scenario this process created last: scenarios run one after the other in each
process, also with pytest-xdist's workers), with the fabric's
requests and the console's last lines: CI prints them, its log files stay behind."""

from __future__ import annotations

from typing import Any, Generator

import pytest

from tests.e2e.scenario import created


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and created():
        report.sections.append(("e2e logs", created()[-1].where(tail=60)))
