"""Shared test helpers: run the real launcher as a subprocess."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional, Sequence, Tuple

import pytest

from tests.fakefabric import FakeFabric
from waprov.http import HttpClient
from waprov.timing import Clock

if TYPE_CHECKING:
    from waprov.distro import Distro
    from waprov.network import LinkWatch
    from waprov.steps import Ctx
    from waprov.system import System

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
LAUNCHER = os.path.join(ROOT, "bin", "waprov")


def waprov_argv(*args: str) -> List[str]:
    """argv that runs the checkout's launcher with the test interpreter."""
    return [sys.executable, LAUNCHER, *args]


def run_waprov(args: Sequence[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(waprov_argv(*args), capture_output=True, text=True, check=False, timeout=60, **kw)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(autouse=True)
def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("waprov's tests run as root (they use namespaces, chown and loop devices)")


@pytest.fixture(autouse=True)
def _waprov_logger_restored() -> Iterator[None]:
    """A test's setup_logging() (own handlers, no propagation) ends with the test: caplog
    sees the waprov logger in every test, with any pytest (before 9, caplog's handler is on
    the root logger only)."""
    logger = logging.getLogger("waprov")
    propagate, level, handlers = logger.propagate, logger.level, list(logger.handlers)
    yield
    for h in list(logger.handlers):
        logger.removeHandler(h)
    for h in handlers:
        logger.addHandler(h)
    logger.propagate = propagate
    logger.setLevel(level)


@pytest.fixture
def fabric(tmp_path: os.PathLike[str]) -> Iterator[FakeFabric]:
    """A started fake fabric (wireserver + IMDS on 127.0.0.1)."""
    with FakeFabric(os.path.join(str(tmp_path), "fabric")) as f:
        yield f


SCALE = 0.001  # WAPROV_RETRY_SCALE in fault tests: a 30 s back-off takes 30 ms


@pytest.fixture
def clock() -> Clock:
    return Clock(SCALE)


@pytest.fixture
def client(clock: Clock) -> HttpClient:
    return HttpClient(clock)


class VirtualTime:
    """Monotonic time that only sleeps move: deadline arithmetic without real waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


def virtual_clock() -> Clock:
    vt = VirtualTime()
    return Clock(1.0, sleep=vt.sleep, monotonic=vt.monotonic)


def on_host(ctx: Ctx) -> Tuple[System, Distro, Clock, str, Optional[Callable[[], LinkWatch]]]:
    """What network.reannounce takes from a step's context: the host, its distribution,
    the clock, the host name and the link watch."""
    return ctx.system, ctx.distro, ctx.clock, ctx.data.hostname, ctx.link_watch


def waits(clock: Clock) -> List[float]:
    """The pauses a clock took, in policy seconds."""
    return [seconds for _, seconds in clock.slept]


def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The e2e boots (tests/e2e) need the images and the private network namespace that
# `make e2e` (tools/e2e) provides; a plain pytest run does not collect them.
collect_ignore = [] if os.environ.get("WAPROV_E2E_IMAGES") else ["e2e"]
