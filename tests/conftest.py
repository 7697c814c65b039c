"""Shared test helpers: run the real launcher as a subprocess."""

from __future__ import annotations

import fnmatch
import logging
import os
import socket
import subprocess
import sys
from typing import Iterator, List, Sequence

import pytest

from tests import fakefabric
from tests.fakefabric import FakeFabric
from waprov.http import HttpClient
from waprov.timing import Clock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
LAUNCHER = os.path.join(ROOT, "bin", "waprov")


def waprov_argv(*args: str) -> List[str]:
    """argv that runs the checkout's launcher with the test interpreter."""
    return [sys.executable, LAUNCHER, *args]


def run_waprov(args: Sequence[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(waprov_argv(*args), capture_output=True, text=True, check=False, timeout=60, **kw)  # type: ignore[call-overload, no-any-return]


# Files whose every test needs root, and why. Single tests elsewhere that need it carry
# @pytest.mark.root("why") or @pytest.mark.sandbox.
ROOT_FILES = {
    "test_*_sandbox.py": "runs waprov in a namespace sandbox (tests/sandbox.py: unshare, overlay mounts)",
    "test_sandbox.py": "tests the namespace sandbox itself (unshare, overlay mounts)",
    "test_packages.py": "builds the .deb and .rpm into dist/ and unpacks them as root (owners, modes)",
    "test_chroot.py": "installs the .deb in a bookworm chroot (mmdebstrap, chroot, mount namespaces)",
    "test_trixie.py": "runs the tests in a Debian 13 chroot (mmdebstrap, chroot, mount namespaces)",
    "test_rpm_install.py": "installs the .rpm in a chroot (rpm --root, chroot, mount namespaces)",
}


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    for item in items:
        name = os.path.basename(str(item.path))
        reason = next((why for pattern, why in ROOT_FILES.items() if fnmatch.fnmatch(name, pattern)), None)
        if reason is not None and item.get_closest_marker("root") is None:
            item.add_marker(pytest.mark.root(reason))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `root` (namespaces, loop devices, chown, chroots, the package builds)
    or `sandbox` are skipped when not run as root, with the marker's reason; every other
    test runs as any user (`make test` runs all of them as root)."""
    if os.geteuid() == 0:
        return
    marker = item.get_closest_marker("root")
    if marker is not None:
        pytest.skip(f"needs root: {marker.args[0] if marker.args else marker.kwargs.get('reason', '')}")
    if item.get_closest_marker("sandbox") is not None:
        pytest.skip("needs root: runs in a namespace sandbox (tests/sandbox.py)")


@pytest.fixture(scope="session", autouse=True)
def _one_tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The fake fabric's tenant certificate and keys (two RSA keys, 0.6-1 s to make) made
    once per test session (per pytest-xdist worker) instead of once per process: every
    fake fabric of the session, in this process or in a sandbox's (tests/inside.py, which
    sees the host's /tmp and inherits the environment), reads them from
    $FAKEFABRIC_TENANT_DIR. One set the environment already names is used as it is."""
    if os.environ.get("FAKEFABRIC_TENANT_DIR"):
        yield
        return
    directory = str(tmp_path_factory.mktemp("tenant"))
    os.environ["FAKEFABRIC_TENANT_DIR"] = directory
    try:
        fakefabric.tenant_material()
        yield
    finally:
        del os.environ["FAKEFABRIC_TENANT_DIR"]


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
