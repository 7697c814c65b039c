"""Shared test helpers: run the real launcher as a subprocess."""

from __future__ import annotations

import fnmatch
import logging
import os
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional, Sequence, Tuple

import pytest

from tests import fakefabric
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


# Files whose every test needs root, and why.
ROOT_FILES = {
    "test_*_sandbox.py": "runs waprov in a namespace sandbox (tests/sandbox.py: unshare, overlay mounts)",
    "test_sandbox.py": "tests the namespace sandbox itself (unshare, overlay mounts)",
    "test_packages.py": "builds the .deb and .rpm into dist/ and unpacks them as root (owners, modes)",
    "test_chroot.py": "installs the .deb in a bookworm chroot (mmdebstrap, chroot, mount namespaces)",
    "test_trixie.py": "runs the tests in a Debian 13 chroot (mmdebstrap, chroot, mount namespaces)",
    "test_rpm_install.py": "installs the .rpm in a chroot (rpm --root, chroot, mount namespaces)",
}
# Single tests of other files that need root, and why (as the node's function name).
ROOT_TESTS = {
    "test_config_files.py": (
        "runs waprov in a namespace sandbox, or as another user (setpriv)",
        {
            "test_a_broken_etc_file_is_an_error_not_a_fallback",
            "test_a_file_that_cannot_be_read",
            "test_built_in_defaults_with_a_warning_when_there_is_no_file",
            "test_etc_waagent_conf_is_read_first",
            "test_the_named_file_wins_over_etc",
            "test_the_repository_waagent_conf_is_what_gets_shipped",
            "test_the_sandbox_leaves_the_host_etc_untouched",
            "test_the_shipped_file_is_read_when_etc_has_none",
        },
    ),
    "test_deprovision.py": (
        "chowns the fake home directories to the accounts' uids",
        {
            "test_a_home_another_accounts_home_resolves_into_is_kept",
            "test_a_recorded_user_whose_home_another_account_owns_is_kept",
            "test_a_recorded_user_whose_home_holds_another_accounts_home_is_kept",
            "test_a_recorded_user_whose_home_is_missing_is_deleted",
            "test_a_recorded_user_whose_uid_changed_is_kept",
            "test_a_system_account_or_a_home_outside_home_dir_is_kept",
            "test_a_waprov_attempt_without_a_record_keeps_the_ovf_env_user",
            "test_an_unreadable_record_deletes_no_user",
            "test_dangerous_directories_are_refused_before_anything",
            "test_deprovision_user_removes_wa_list_and_waprov_state_and_dry_run_is_the_same_plan",
            "test_missing_ovf_env_skips_the_user",
            "test_options_and_distro_variants",
            "test_the_account_is_checked_again_when_the_action_runs",
            "test_the_recorded_user_is_deleted_not_the_one_named_in_ovf_env",
            "test_ubuntu_before_18_04_with_resolvconf_deletes_its_tail_and_original",
            "test_without_user_the_home_keys_and_sudoers_stay",
        },
    ),
    "test_lock.py": (
        "waprov takes its run lock only in a directory root owns",
        {
            "test_a_command_the_holder_started_does_not_keep_the_lock",
            "test_a_directory_others_may_write_is_refused",
            "test_a_fifo_as_the_lock_file_is_refused_at_once",
            "test_a_killed_holder_leaves_no_stale_lock",
            "test_a_lock_held_by_a_process_that_wrote_nothing_is_reported_as_such",
            "test_a_second_run_waits_then_fails_naming_the_holder",
            "test_a_symbolic_link_as_the_lock_file_is_refused_and_not_followed",
            "test_a_waiting_run_gives_a_new_holder_time_to_write_its_name",
            "test_a_waiting_run_says_for_whom_and_continues_when_the_holder_ends",
            "test_the_directory_is_made_0700_and_the_file_names_its_holder",
        },
    ),
    "test_status.py": (
        "runs waprov in a namespace sandbox",
        {
            "test_the_command_exits_2_naming_a_fifo_report",
        },
    ),
    "test_steps.py": (
        "chowns the fake home directory to the user's uid",
        {
            "test_a_dry_run_reads_the_key_file_by_descriptor_as_the_real_run_does",
            "test_a_fingerprint_that_is_not_a_thumbprint_is_refused_before_a_path_is_built",
            "test_a_home_under_the_directory_home_dir_resolves_to_is_accepted",
            "test_a_symlinked_ssh_directory_is_reported_as_such_not_as_a_bad_descriptor",
            "test_an_authorized_keys_with_a_second_hard_link_is_neither_read_nor_rewritten",
            "test_keys_are_labelled_for_selinux_when_getenforce_exists",
            "test_many_keys_for_one_file_are_written_once",
            "test_more_keys_than_the_bound_are_refused_before_anything_is_written",
            "test_the_network_phase_deploys_keys_only_when_some_are_left",
        },
    ),
    "test_system.py": (
        "chowns files to another owner",
        {
            "test_makedirs_fixes_an_existing_directory_and_records_only_changes",
            "test_makedirs_gives_every_created_directory_the_mode_and_owner",
            "test_output_refuses_a_file_someone_else_planted",
            "test_write_sets_mode_and_owner_whatever_the_umask",
        },
    ),
}
# (Others carry @pytest.mark.root("why") or @pytest.mark.sandbox. Every test not named
# here passes as another user: `setpriv --reuid=65534 --regid=65534 --clear-groups`.)


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    for item in items:
        name = os.path.basename(str(item.path))
        reason = next((why for pattern, why in ROOT_FILES.items() if fnmatch.fnmatch(name, pattern)), None)
        function = getattr(item, "originalname", item.name)
        if reason is None and name in ROOT_TESTS and function in ROOT_TESTS[name][1]:
            reason = ROOT_TESTS[name][0]
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
