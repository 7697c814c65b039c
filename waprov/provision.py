"""`waprov -provision`: WALinuxAgent's provisioning run (WA §2.3), top to bottom.

0. Whose job? A configuration file whose `Provisioning.Agent` is not `disabled` means
   WALinuxAgent or cloud-init provisions this VM (`waprov -enable` hands it over): exit 0.
1. Done already? `<Lib.Dir>/provisioned` and waprov's marker both hold this VM's id →
   exit 0, no report. `provisioned` holds this VM's id but waprov never started on this
   VM (no `attempt` record): provisioned before waprov was installed → adopted (marker
   written, exit 0, no report). Another VM's id → WA §2.5: clear cached state, rewrite, Ready.
2. Refuse an enabled cloud-init; begin the host-key regeneration in the background (its
   step waits for it in WA's place, so Ready still follows the keys). Data (the DVD at
   once; IMDS once the network is up: the unit does not wait for network-online.target),
   the wireserver (and certificates when a key needs them), NotReady `Provisioning`/`Starting`
   (a failure to send it is a WARNING and the run goes on, as in WALinuxAgent: report.py).
3. The steps of STEPS in WALinuxAgent's order, then `provisioned`, `disable_agent`, Ready,
   and waprov's marker last. Any failure: NotReady `ProvisioningFailed` with the
   structured description (report.py), no marker, exit 1; the next run converges.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
from typing import TYPE_CHECKING, Callable, Mapping, Optional, Tuple, TypeVar

from waprov.cleanup import changed_vm_cleanup
from waprov.config import Config
from waprov.distro import Distro
from waprov.errors import CommandError, ProvisionError, WaprovError
from waprov.kvp import Kvp
from waprov.overrides import Overrides
from waprov.runreport import RunRecord
from waprov.steps import STATE_DIR, Ctx, journal_done
from waprov.steps.customdata import save_custom_data
from waprov.steps.hostkeys import begin as begin_hostkeys
from waprov.steps.hostkeys import regenerate
from waprov.steps.hostname import publish_hostname, set_hostname
from waprov.steps.keys import deploy_keys
from waprov.steps.sshd import configure_sshd, restart_sshd
from waprov.steps.sudoers import configure_sudoers
from waprov.steps.user import create_user, delete_root_password, set_password
from waprov.system import Background, System
from waprov.timing import Clock
from waprov.vmid import same_vm

if TYPE_CHECKING:
    from waprov.report import Reporter
    from waprov.sources import Fabric

log = logging.getLogger("waprov")
_T = TypeVar("_T")
Step = Callable[[Ctx], None]


def write_markers(ctx: Ctx) -> None:
    ctx.system.write(ctx.lib("provisioned"), ctx.vm_id, 0o644)
    if ctx.data.guest_agent_disabled:
        log.info("Disabling guest agent in accordance with ovf-env.xml")
        ctx.system.write(ctx.lib("disable_agent"), b"", 0o644)


HOSTKEYS_REASON = "failed to generate ssh host keys"
STEPS: Tuple[Tuple[str, str, Step], ...] = (  # (name, reason on failure, function)
    ("hostname", "failed to provision hostname", set_hostname),
    ("publish_hostname", "failed to publish hostname", publish_hostname),
    ("user", "failed to provision user", create_user),
    ("password", "failed to provision password", set_password),
    ("sudoers", "failed to configure sudoers", configure_sudoers),
    ("sshd", "failed to update sshd config", configure_sshd),
    ("keys", "failed to deploy ssh keys", deploy_keys),
    ("customdata", "failed to save custom data", save_custom_data),
    ("rootpw", "failed to delete root password", delete_root_password),
    ("hostkeys", HOSTKEYS_REASON, regenerate),
    ("restart_sshd", "failed to restart sshd", restart_sshd),
    ("markers", "failed to write the provisioned markers", write_markers),
)
STEP_NAMES = ("data", "keygen", "wireserver", *(name for name, _, _ in STEPS), "ready")
CHANGED_ID_MESSAGE = (
    "VM is provisioned, but the VM unique identifier has changed. This indicates the VM may be created "
    "from an image that was not properly deprovisioned or generalized, which can result in unexpected "
    "behavior from the guest agent -- clearing cached state"
)
DONE, TODO, CHANGED, ADOPT = "done", "todo", "changed", "adopt"


def marker_path(state_dir: str = STATE_DIR) -> str:
    return os.path.join(state_dir, "provisioned")


def attempt_path(state_dir: str = STATE_DIR) -> str:
    """Holds the id of the VM waprov last started provisioning (before any step)."""
    return os.path.join(state_dir, "attempt")


def _holds(system: System, path: str, vm_id: str) -> bool:
    raw = system.read(path)
    return raw is not None and same_vm(raw.decode("utf-8", "replace"), vm_id)


def provisioned_state(
    system: System, config: Config, vm_id: str, state_dir: str = STATE_DIR
) -> Tuple[str, str]:
    """(DONE|TODO|CHANGED, the stored id)."""
    raw = system.read(os.path.join(config.lib_dir, "provisioned"))
    if raw is None:
        return TODO, ""
    stored = raw.decode("utf-8", "replace").strip()
    if not same_vm(stored, vm_id):
        return CHANGED, stored
    if _holds(system, marker_path(state_dir), vm_id):
        return DONE, stored
    if _holds(system, attempt_path(state_dir), vm_id):
        return TODO, stored  # waprov started on this VM and did not finish: resume
    return ADOPT, stored  # provisioned before waprov was installed (WALinuxAgent did it)


def write_own_marker(system: System, vm_id: str, state_dir: str = STATE_DIR) -> None:
    system.makedirs(state_dir, 0o700)
    system.write(marker_path(state_dir), vm_id, 0o600)


def _as_provision_error(step: str, reason: str, e: BaseException) -> ProvisionError:
    if isinstance(e, ProvisionError):
        return e
    data = {}
    if isinstance(e, CommandError):
        data = {"command": e.command, "exit_code": str(e.exit_status), "stderr": e.stderr_tail}
    if isinstance(e, WaprovError):
        return ProvisionError(reason, step, str(e), **data)
    log.debug("traceback", exc_info=True)
    return ProvisionError("unhandled error", step, f"{type(e).__name__}: {e}")


class Run:
    """One provisioning run; see the module docstring."""

    def __init__(
        self,
        system: System,
        config: Config,
        overrides: Overrides,
        distro: Distro,
        vm_id: str,
        *,
        connect: Callable[[], Tuple[Fabric, Reporter]],
        state_dir: str = STATE_DIR,
        record: RunRecord,
    ) -> None:
        self.system, self.config, self.overrides = system, config, overrides
        self.distro, self.vm_id = distro, vm_id
        self._connect = connect
        self.state_dir = state_dir
        self.record = record

    # The HTTP side (requests, the XML and IMDS readers) is built on first use: importing it
    # is most of waprov's start-up, and the host keys are begun before it (see _begin).
    @functools.cached_property
    def _wire(self) -> Tuple[Fabric, Reporter]:
        return self._connect()

    @property
    def fabric(self) -> Fabric:
        return self._wire[0]

    @property
    def reporter(self) -> Reporter:
        return self._wire[1]

    def _step(self, name: str, reason: str, fn: Callable[[], _T]) -> _T:
        wall, started = time.time(), time.monotonic()
        try:
            result = fn()
        except Exception as e:
            error = _as_provision_error(name, reason, e)
            self.record.step(name, wall, time.monotonic() - started, str(error))
            raise error from None
        self.record.step(name, wall, time.monotonic() - started)
        log.debug("Step %s done in %.0f ms", name, (time.monotonic() - started) * 1000)
        if self.overrides.crash_after == name:  # WAPROV_CRASH_AFTER: kill -9 at a step boundary (tests)
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    def changed_vm(self, stored: str) -> int:
        """WA §2.5: another VM's id in `provisioned`: clear, rewrite, Ready; no provisioning."""
        from waprov.report import success_line

        if stored:
            log.warning("%s", CHANGED_ID_MESSAGE)
            changed_vm_cleanup(self.system, self.config, self.distro)
        self.system.write(os.path.join(self.config.lib_dir, "provisioned"), self.vm_id, 0o644)
        ok = self.reporter.ready()
        self.record.finish(
            "success" if ok else "error", success_line(self.vm_id), self.state_dir, self.reporter.sent
        )
        write_own_marker(self.system, self.vm_id, self.state_dir)
        log.info("Provisioning already completed under another VM id: reported Ready, nothing re-provisioned")
        return 0 if ok else 1

    def _prepare(self, keygen: Optional[Background]) -> Ctx:
        from waprov.sources import gather

        data = self._step("data", "failed to read provisioning data", lambda: gather(self.fabric))
        self.record.sources = list(data.sources)
        self._step("wireserver", "failed to reach the wireserver", self.reporter.connect)
        self._step("wireserver", "failed to get the certificates", lambda: self.reporter.certificates(data))
        self._step("wireserver", "failed to report provisioning", self.reporter.provisioning)
        return Ctx(
            self.system, self.config, self.distro, data, self.fabric.clock, self.vm_id, self.state_dir, keygen
        )

    def _begin(self) -> Optional[Background]:
        """Before anything else: refuse a second provisioning agent, then start making the
        host keys (the longest command of a run) so that they are ready by their step."""
        lib = self.config.lib_dir
        if self.system.kind(lib) == "absent":
            self.system.makedirs(lib, 0o700)
        self._step("data", "cloud-init is enabled", lambda: refuse_cloud_init(self.system))
        done = journal_done(self.system, self.state_dir, self.vm_id, "hostkeys")
        return self._step("keygen", HOSTKEYS_REASON, lambda: begin_hostkeys(self.system, self.config, done))

    def provision(self) -> int:
        started = time.monotonic()
        keygen: Optional[Background] = None
        try:
            keygen = self._begin()
            # Written before the first step: only the host keys (which write no marker) come
            # first, begun before this file's fsyncs, which cost seconds at a busy boot.
            self.system.makedirs(self.state_dir, 0o700)
            self.system.write(attempt_path(self.state_dir), self.vm_id, 0o600)
            ctx = self._prepare(keygen)
            for name, reason, fn in STEPS:
                self._step(name, reason, functools.partial(fn, ctx))
        except ProvisionError as e:
            from waprov.report import failure_description

            desc = failure_description(e, self.vm_id, self.system.redactor)
            log.error("Provisioning failed: %s", e)
            log.info("Failure report: %s", desc)
            self.reporter.failed(desc)
            _settle(keygen)
            failure = {"step": e.step, "reason": e.reason, "message": self.system.redactor.redact(str(e))}
            self.record.finish("error", desc, self.state_dir, self.reporter.sent, failure)
            return 1
        self._step("ready", "failed to report ready", self.reporter.ready)
        from waprov.report import success_line

        self.record.finish("success", success_line(self.vm_id), self.state_dir, self.reporter.sent)
        write_own_marker(self.system, self.vm_id, self.state_dir)
        took = time.monotonic() - started
        log.info(
            "Provisioning complete (%.3fs, of which %.3fs in commands)", took, self.system.command_seconds
        )
        return 0


def _settle(keygen: Optional[Background]) -> None:
    """After a failure: let a keygen still running finish, so that the host keeps whole
    key files (the journal has no mark: the next run makes them again)."""
    if keygen is None:
        return
    try:
        keygen.wait(check=False)
    except WaprovError as e:
        log.warning("The host key generation begun by this run failed too: %s", e)


def refuse_cloud_init(system: System) -> None:
    """WA §2.3 step 2: two provisioning agents must not run; enabled = a wants link."""
    wants = system.glob("/etc/systemd/system/*.wants/cloud-init-local.service")
    if wants and system.kind("/etc/cloud/cloud-init.disabled") == "absent":
        raise ProvisionError(
            "cloud-init is enabled",
            "data",
            "cloud-init appears to be installed and enabled, this is not expected, cannot continue",
        )


def main(conf_path: Optional[str], dry_run: bool, verbose: bool, environ: Mapping[str, str]) -> int:
    """The command: build the run from the configuration and the environment, then run it."""
    from waprov.config import load_config
    from waprov.log import LOG_FILE, setup_logging
    from waprov.osrelease import read_os_release
    from waprov.overrides import bad_override, overrides_from_env
    from waprov.vmid import instance_id

    config = load_config(conf_path)
    overrides = overrides_from_env(environ)
    crash = overrides.crash_after
    if crash is not None and crash not in STEP_NAMES:  # checked before anything changes
        raise bad_override("WAPROV_CRASH_AFTER", crash, "expected one of " + ", ".join(STEP_NAMES))
    redactor = setup_logging(verbose or config.logs_verbose, None if dry_run else LOG_FILE)
    if config.source and config.provisioning_agent != "disabled":
        log.info(
            "Provisioning.Agent=%s in %s: %s provisions this VM, not waprov (`waprov -enable` hands "
            "provisioning over); nothing to do",
            config.provisioning_agent,
            config.source,
            "cloud-init" if config.provisioning_agent == "cloud-init" else "WALinuxAgent (or cloud-init)",
        )
        return 0
    system = System(dry_run=dry_run, redactor=redactor)
    distro = Distro.detect(read_os_release())
    clock = Clock(overrides.retry_scale)
    vm_id = instance_id(system, overrides)
    state, stored = provisioned_state(system, config, vm_id)
    if state == DONE:
        log.info("Provisioning already completed, skipping.")
        return 0
    if state == ADOPT:
        log.info("This VM was provisioned before waprov was installed (%s/provisioned holds its id): "
                 "recorded as done, nothing provisioned", config.lib_dir)  # fmt: skip
        write_own_marker(system, vm_id)
        return 0

    def connect() -> Tuple[Fabric, Reporter]:
        from waprov.http import HttpClient
        from waprov.report import Reporter
        from waprov.sources import Fabric

        client = HttpClient(
            clock, proxy_host=config.http_proxy_host, proxy_port=config.http_proxy_port, environ=environ
        )
        fabric = Fabric(system, config, overrides, clock, client, distro.id)
        return fabric, Reporter(system, config, overrides, clock, client)

    from waprov import __version__
    from waprov.timing import boot_time

    try:
        boot = boot_time()
    except WaprovError as e:  # only the run report and KVP need it
        log.warning("%s (the run report will not say how long after boot it ran)", e)
        boot = 0.0
    kvp = Kvp(f"waprov-{__version__}|{vm_id}", enabled=not dry_run, boot_time=lambda: boot)
    record = RunRecord(system, kvp, vm_id, boot)
    run = Run(system, config, overrides, distro, vm_id, connect=connect, record=record)
    log.info("Running waprov provisioning (VM id %s, %s %s)", vm_id or "unknown", distro.id, distro.version)
    rc = run.changed_vm(stored) if state == CHANGED else run.provision()
    if dry_run:
        print("Plan (dry run: nothing was changed, nothing was sent):")
        print(system.plan())
    return rc
