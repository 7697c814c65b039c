"""`waprov -provision`: WALinuxAgent's provisioning run (WA §2.3), in two phases.

0. Whose job? A configuration file whose `Provisioning.Agent` is not `disabled` means
   WALinuxAgent or cloud-init provisions this VM (`waprov -enable` hands it over): exit 0.
1. Done already? `<Lib.Dir>/provisioned` and waprov's marker both hold this VM's id →
   exit 0, no report (the local phase then writes /run/waprov/done, which skips
   waprov.service at this boot). `provisioned` holds this VM's id but waprov never
   started on this VM (no `attempt` record): provisioned before waprov was installed →
   adopted (marker written, exit 0, no report). Another VM's id → WA §2.5 (the network
   phase): clear cached state, rewrite, Ready.
2. The steps of STEPS, each with a unique name and its phase:
   - **local** (`waprov -provision -local`, waprov-local.service, before any network
     manager; no HTTP module is imported): refuse an enabled cloud-init, the DVD, the
     host name (so the first DHCP request carries it), the host keys begun, the user,
     password, sudoers, sshd settings, the keys that need no certificate, custom data
     saved, the root password. No DVD yet: the phase ends and the network phase does it.
   - **network** (`waprov -provision`, waprov.service): IMDS merged in, the wireserver,
     certificates, NotReady `Provisioning`, sshd settings and keys again when IMDS or the
     certificates add to them, custom data executed, the host name re-announced only
     when it was set with the network already up, the host keys awaited, the markers,
     exactly one Ready after everything.
   The journal's `phase:local` entry says the local phase is done for this VM; until it
   is, the network phase runs the local steps itself (through the DVD at once; the rest
   after NotReady when only IMDS has the data), so one `waprov -provision` does it all
   and a kill anywhere resumes (every step is idempotent or journals itself).
3. Any failure: in the local phase, exit 1 (the network phase runs the step again and
   reports it); in the network phase, NotReady `ProvisioningFailed` with the structured
   description (health.py), no marker, exit 1; the next run converges.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, List, Mapping, Optional, Tuple

from waprov.config import Config
from waprov.errors import CommandError, ProvisionError, WaprovError
from waprov.overrides import Overrides
from waprov.state import ATTEMPT, MARKER, STATE_DIR, holds, state_path, write_marker
from waprov.steps import Ctx
from waprov.system import System
from waprov.vmid import same_vm

if TYPE_CHECKING:
    from waprov.health import Reporter
    from waprov.network import LinkWatch
    from waprov.record import RunRecord
    from waprov.sources import Dvd, Fabric

log = logging.getLogger("waprov")
LOCAL, NETWORK = "local", "network"
LOCAL_DONE = "phase:local"  # the journal's entry: every local step is done for this VM
RUN_DONE = "/run/waprov/done"  # this VM is done at this boot: waprov.service is skipped
# `-local -continue`'s network phase failed (reported): waprov.service fails, once, without a rerun
RUN_FAILED = "/run/waprov/failed"
HOSTKEYS_REASON = "failed to generate ssh host keys"
DATA_REASON = "failed to read provisioning data"


@dataclass(frozen=True)
class Step:
    """One step: `target` is "module:function" (imported when the step runs, so that a
    run that has nothing to do imports none of them)."""

    name: str
    phase: str
    reason: str  # the failure report's reason
    target: str

    def function(self) -> Callable[[Ctx], None]:
        module, _, attr = self.target.partition(":")
        fn: Callable[[Ctx], None] = getattr(importlib.import_module(module), attr)
        return fn


_P, _S = "waprov.provision", "waprov.steps"
STEPS: Tuple[Step, ...] = (
    Step("cloud_init", LOCAL, "cloud-init is enabled", f"{_P}:refuse_cloud_init"),
    Step("attempt", LOCAL, "failed to record the attempt", f"{_P}:record_attempt"),
    Step("dvd", LOCAL, DATA_REASON, f"{_P}:read_dvd"),
    Step("hostname", LOCAL, "failed to provision hostname", f"{_S}.hostname:set_hostname"),
    Step("hostkeys_begin", LOCAL, HOSTKEYS_REASON, f"{_P}:begin_hostkeys"),
    Step("user", LOCAL, "failed to provision user", f"{_S}.user:create_user"),
    Step("password", LOCAL, "failed to provision password", f"{_S}.user:set_password"),
    Step("sudoers", LOCAL, "failed to configure sudoers", f"{_S}.sudoers:configure_sudoers"),
    Step("sshd", LOCAL, "failed to update sshd config", f"{_S}.sshd:configure_sshd"),
    Step("keys", LOCAL, "failed to deploy ssh keys", f"{_S}.keys:deploy_keys"),
    Step("customdata", LOCAL, "failed to save custom data", f"{_S}.customdata:save_custom_data"),
    Step("rootpw", LOCAL, "failed to delete root password", f"{_S}.user:delete_root_password"),
    Step("imds", NETWORK, DATA_REASON, f"{_P}:read_imds"),
    Step("wireserver", NETWORK, "failed to reach the wireserver", f"{_P}:connect_wireserver"),
    Step("certificates", NETWORK, "failed to get the certificates", f"{_P}:get_certificates"),
    Step("notready", NETWORK, "failed to report provisioning", f"{_P}:report_provisioning"),
    Step("sshd_final", NETWORK, "failed to update sshd config", f"{_S}.sshd:configure_sshd_final"),
    Step("keys_final", NETWORK, "failed to deploy ssh keys", f"{_S}.keys:deploy_remaining_keys"),
    Step("customdata_run", NETWORK, "failed to execute custom data", f"{_S}.customdata:run_custom_data"),
    Step("publish_hostname", NETWORK, "failed to publish hostname", f"{_S}.hostname:publish_hostname"),
    Step("hostkeys", NETWORK, HOSTKEYS_REASON, f"{_S}.hostkeys:regenerate"),
    Step("restart_sshd", NETWORK, "failed to restart sshd", f"{_S}.sshd:restart_sshd"),
    Step("markers", NETWORK, "failed to write the provisioned markers", f"{_P}:write_markers"),
    Step("ready", NETWORK, "failed to report ready", f"{_P}:report_ready"),
)
STEP_NAMES = tuple(step.name for step in STEPS)
# In the network phase, local steps not done yet run up to and including the DVD before
# the network's steps, the rest after NOTREADY when the DVD had nothing (IMDS only).
DVD_STEP, NOTREADY = "dvd", "notready"
CHANGED_ID_MESSAGE = (
    "VM is provisioned, but the VM unique identifier has changed. This indicates the VM may be created "
    "from an image that was not properly deprovisioned or generalized, which can result in unexpected "
    "behavior from the guest agent -- clearing cached state"
)
DONE, TODO, CHANGED, ADOPT = "done", "todo", "changed", "adopt"


class NoDvdYet(Exception):
    """The local phase found no DVD: it ends, the network phase looks again and asks IMDS."""


# ---- the steps that live here (the run's own: data, wireserver, reports, markers) -------------


def refuse_cloud_init(ctx: Ctx) -> None:
    """WA §2.3 step 2: two provisioning agents must not run; enabled = a wants link."""
    wants = ctx.system.glob("/etc/systemd/system/*.wants/cloud-init-local.service")
    if wants and ctx.system.kind("/etc/cloud/cloud-init.disabled") == "absent":
        raise ProvisionError(
            "cloud-init is enabled",
            "cloud_init",
            "cloud-init appears to be installed and enabled, this is not expected, cannot continue",
        )


def record_attempt(ctx: Ctx) -> None:
    """`attempt` holds this VM's id before anything is changed: a VM whose `provisioned`
    holds its id without it was provisioned before waprov was installed (ADOPT)."""
    if ctx.system.kind(ctx.config.lib_dir) == "absent":
        ctx.system.makedirs(ctx.config.lib_dir, 0o700)
    ctx.system.makedirs(ctx.state_dir, 0o700)
    ctx.system.write(state_path(ATTEMPT, ctx.state_dir), ctx.vm_id, 0o600)


def _dvd(ctx: Ctx) -> Dvd:
    from waprov.sources import Dvd

    return Dvd(ctx.system, ctx.config, ctx.overrides, ctx.clock, ctx.distro.id)


def read_dvd(ctx: Ctx) -> None:
    """The DVD (waiting briefly for its device in the local unit, which starts while udev
    loads the drive's driver); NoDvdYet without one."""
    from waprov.dvd import NoDvdError
    from waprov.sources import DEVICE_WAIT, load_ovf, merge

    def later(device: str) -> None:
        ctx.dvd_device = device

    try:
        ctx.ovf = load_ovf(_dvd(ctx), DEVICE_WAIT if ctx.local_only else 0.0, later)
    except NoDvdError as e:
        raise NoDvdYet(str(e)) from None
    ctx.given = merge(ctx.ovf, None)


def read_imds(ctx: Ctx) -> None:
    from waprov.sources import gather, saved_ovf

    if ctx.ovf is None and ctx.done(LOCAL_DONE):  # the local phase ran in another process
        env = saved_ovf(_dvd(ctx))
        ctx.ovf = None if env is None else replace(env, password=None)  # the copy holds `*`
    ctx.given = gather(ctx.fabric, ctx.ovf, dvd_tried=ctx.dvd_tried)


def begin_hostkeys(ctx: Ctx) -> None:
    from waprov.steps.hostkeys import begin, earlier_running

    if not ctx.done("hostkeys") and not earlier_running(ctx):
        ctx.keygen = begin(ctx.system, ctx.config, False)


def connect_wireserver(ctx: Ctx) -> None:
    ctx.reporter.connect()


def get_certificates(ctx: Ctx) -> None:
    ctx.reporter.certificates(ctx.data)


def report_provisioning(ctx: Ctx) -> None:
    ctx.reporter.provisioning()


def write_markers(ctx: Ctx) -> None:
    ctx.system.write(ctx.lib("provisioned"), ctx.vm_id, 0o644)
    if ctx.data.guest_agent_disabled:
        log.info("Disabling guest agent in accordance with ovf-env.xml")
        ctx.system.write(ctx.lib("disable_agent"), b"", 0o644)


def report_ready(ctx: Ctx) -> None:
    ctx.reporter.ready()  # a failure is logged; provisioning is done (as in WALinuxAgent)


# ---- the state of this VM ------------------------------------------------------------------


def provisioned_state(
    system: System, config: Config, vm_id: str, state_dir: str = STATE_DIR
) -> Tuple[str, str]:
    """(DONE|TODO|CHANGED|ADOPT, the stored id)."""
    raw = system.read(os.path.join(config.lib_dir, "provisioned"))
    if raw is None:
        return TODO, ""
    stored = raw.decode("utf-8", "replace").strip()
    if not same_vm(stored, vm_id):
        return CHANGED, stored
    if holds(system, MARKER, vm_id, state_dir):
        return DONE, stored
    if holds(system, ATTEMPT, vm_id, state_dir):
        return TODO, stored  # waprov started on this VM and did not finish: resume
    return ADOPT, stored  # provisioned before waprov was installed (WALinuxAgent did it)


def write_own_marker(system: System, vm_id: str, overrides: Overrides, state_dir: str = STATE_DIR) -> None:
    """waprov's marker, and the raw DMI id for the boot check of every later boot."""
    from waprov.vmid import raw_id

    write_marker(system, vm_id, raw_id(system, overrides), state_dir)


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


# ---- the run -------------------------------------------------------------------------------


class Run:
    """One process's part of provisioning: the local phase alone (`local_only`), or the
    network phase with whatever local steps are not done yet."""

    def __init__(self, ctx: Ctx, record: RunRecord) -> None:
        self.ctx, self.record = ctx, record

    def _step(self, step: Step) -> None:
        ctx = self.ctx
        wall, started = time.time(), time.monotonic()
        try:
            step.function()(ctx)
        except NoDvdYet:
            self.record.step(step.name, step.phase, wall, time.monotonic() - started, skipped=True)
            raise
        except Exception as e:
            error = _as_provision_error(step.name, step.reason, e)
            self.record.step(step.name, step.phase, wall, time.monotonic() - started, str(error))
            raise error from None
        self.record.step(step.name, step.phase, wall, time.monotonic() - started)
        if ctx.given is not None:
            self.record.sources = list(ctx.given.sources)
        log.debug("Step %s done in %.0f ms", step.name, (time.monotonic() - started) * 1000)
        if ctx.overrides.crash_after == step.name:  # WAPROV_CRASH_AFTER: kill -9 at a step boundary (tests)
            os.kill(os.getpid(), signal.SIGKILL)

    def _local_steps(self, steps: List[Step]) -> bool:
        """Run `steps` (local ones) in order; False when the DVD is not there (yet)."""
        for step in steps:
            try:
                self._step(step)
            except NoDvdYet as e:
                self.ctx.dvd_tried = True
                log.info("No provisioning DVD yet (%s): the network phase looks again and asks IMDS", e)
                return False
        return True

    def _local_done(self) -> None:
        ctx = self.ctx
        ctx.mark(LOCAL_DONE)
        if ctx.dvd_device:  # read by this process: ejected now that no step needs it again
            from waprov.dvd import eject_dvd

            eject_dvd(ctx.system, ctx.dvd_device, ctx.distro.id)
            ctx.dvd_device = ""

    def local(self) -> int:
        """The local phase alone (waprov-local.service)."""
        from waprov.steps.hostkeys import hand_over

        ctx = self.ctx
        self.record.phase_start(LOCAL)
        if ctx.done(LOCAL_DONE):
            log.info("The local phase is done for this VM already: the network phase goes on")
            self.record.phase_end(LOCAL, "done already")
            return 0
        try:
            complete = self._local_steps([s for s in STEPS if s.phase == LOCAL])
            if complete:
                self._local_done()
        except ProvisionError as e:
            log.error("Provisioning failed in the local phase: %s (the network phase reports it)", e)
            hand_over(ctx)
            self.record.phase_end(LOCAL, "error")
            self.record.finish("error", "", ctx.state_dir, [], self._failure(e), final=False)
            return 1
        hand_over(ctx)
        self.record.phase_end(LOCAL, "ok" if complete else "no DVD")
        self.record.finish("in progress", "", ctx.state_dir, [], final=False)
        log.info("Local phase %s: the network phase goes on", "done" if complete else "ended")
        return 0

    def _failure(self, e: ProvisionError) -> Mapping[str, str]:
        message = self.ctx.system.redactor.redact(str(e))
        return {"step": e.step, "reason": e.reason, "message": message}

    def network(self) -> int:
        """The network phase, with the local steps not done yet (all of a run when the
        local phase did not run)."""
        ctx = self.ctx
        started, commands_before = time.monotonic(), ctx.system.command_seconds  # this phase's share
        local = [] if ctx.done(LOCAL_DONE) else [s for s in STEPS if s.phase == LOCAL]
        network = [s for s in STEPS if s.phase == NETWORK]
        cut = next(i for i, s in enumerate(network) if s.name == NOTREADY) + 1
        try:
            if local:
                self.record.phase_start(LOCAL)
                through_dvd = next(i for i, s in enumerate(local) if s.name == DVD_STEP) + 1
                if self._local_steps(local[:through_dvd]):
                    self._local_steps(local[through_dvd:])
                    local = []
                    self._local_done()
                    self.record.phase_end(LOCAL, "ok")
                else:
                    local = local[through_dvd:]
                    self.record.phase_end(LOCAL, "no DVD")
            self.record.phase_start(NETWORK)
            for step in network[:cut]:
                self._step(step)
            if local:  # IMDS had the data: the rest of the local steps now, with it
                self.record.phase_start(LOCAL)
                self._local_steps(local)
                self._local_done()
                self.record.phase_end(LOCAL, "ok")
            for step in network[cut:]:
                self._step(step)
        except ProvisionError as e:
            return self._failed(e)
        from waprov.health import success_line

        self.record.phase_end(NETWORK, "ok")
        self.record.finish("success", success_line(ctx.vm_id), ctx.state_dir, ctx.reporter.sent)
        write_own_marker(ctx.system, ctx.vm_id, ctx.overrides, ctx.state_dir)
        took = time.monotonic() - started
        spent = ctx.system.command_seconds - commands_before
        log.info("Provisioning complete (%.3fs, of which %.3fs in commands)", took, spent)
        return 0  # a failed Ready is logged; provisioning is done (as in WALinuxAgent)

    def _failed(self, e: ProvisionError) -> int:
        from waprov.health import failure_description

        ctx = self.ctx
        desc = failure_description(e, ctx.vm_id, ctx.system.redactor)
        log.error("Provisioning failed: %s", e)
        log.info("Failure report: %s", desc)
        ctx.reporter.failed(desc)
        _settle(ctx)
        for phase in (LOCAL, NETWORK):
            if self.record.phase_open(phase):
                self.record.phase_end(phase, "error")
        self.record.finish("error", desc, ctx.state_dir, ctx.reporter.sent, self._failure(e))
        return 1

    def changed_vm(self, stored: str) -> int:
        """WA §2.5: another VM's id in `provisioned`: clear, rewrite, Ready; no provisioning."""
        from waprov.cleanup import changed_vm_cleanup
        from waprov.health import success_line

        ctx = self.ctx
        if stored:
            log.warning("%s", CHANGED_ID_MESSAGE)
            changed_vm_cleanup(ctx.system, ctx.config, ctx.distro)
        ctx.system.write(os.path.join(ctx.config.lib_dir, "provisioned"), ctx.vm_id, 0o644)
        ok = ctx.reporter.ready()
        self.record.finish(
            "success" if ok else "error", success_line(ctx.vm_id), ctx.state_dir, ctx.reporter.sent
        )
        write_own_marker(ctx.system, ctx.vm_id, ctx.overrides, ctx.state_dir)
        log.info("Provisioning already completed under another VM id: reported Ready, nothing re-provisioned")
        return 0 if ok else 1


def _settle(ctx: Ctx) -> None:
    """After a failure: let a keygen this process began finish, so that the host keeps
    whole key files (the journal has no mark: the next run makes them again)."""
    keygen, ctx.keygen = ctx.keygen, None
    if keygen is None:
        return
    from waprov.steps.hostkeys import clear_run_files

    try:
        keygen.wait(check=False)
        clear_run_files(ctx.system)
    except WaprovError as e:
        log.warning("The host key generation begun by this run failed too: %s", e)


def _flag_done(system: System, path: str = RUN_DONE) -> None:
    """RUN_DONE (or RUN_FAILED), for waprov.service's conditions (only the local unit
    writes them): ConditionPathExists, and the wait of waprov-wait-local."""
    try:
        system.makedirs(os.path.dirname(path), 0o700)
        system.write(path, b"", 0o600)
    except WaprovError as e:
        log.warning("Cannot write %s (%s): waprov.service runs its own check", path, e)


def notify_ready(environ: Mapping[str, str]) -> None:
    """Tell systemd that waprov-local.service (Type=notify) has started: READY=1 on
    $NOTIFY_SOCKET (a path, or `@` for an abstract name); nothing without it. Units ordered
    after the local unit (the network managers, waprov.service) start then, while this
    process goes on with the network phase. Sent twice, the second is ignored."""
    address = environ.get("NOTIFY_SOCKET", "")
    if not address.startswith(("/", "@")):
        return
    import socket

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect("\0" + address[1:] if address.startswith("@") else address)
            sock.sendall(b"READY=1\nSTATUS=local phase done; network phase running")
    except OSError as e:
        log.warning("Cannot tell systemd that the local phase is done (NOTIFY_SOCKET=%s): %s", address, e)


def main(
    conf_path: Optional[str],
    dry_run: bool,
    verbose: bool,
    environ: Mapping[str, str],
    local_only: bool = False,
    then_network: bool = False,
) -> int:
    """The command: build the run's context from the configuration and the environment,
    then run the phase (`local_only`: waprov-local.service's), or the network phase.
    `then_network` (with `local_only`): after the local phase, READY=1 to systemd, then
    the network phase in this process; RUN_DONE or RUN_FAILED says how it ended."""
    from waprov.config import load_config
    from waprov.overrides import bad_override, overrides_from_env
    from waprov.start import host_system
    from waprov.vmid import instance_id

    config = load_config(conf_path)
    overrides = overrides_from_env(environ)
    crash = overrides.crash_after
    if crash is not None and crash not in STEP_NAMES:  # checked before anything changes
        raise bad_override("WAPROV_CRASH_AFTER", crash, "expected one of " + ", ".join(STEP_NAMES))
    system = host_system(dry_run, verbose or config.logs_verbose)
    if config.source and config.provisioning_agent != "disabled":
        log.info(
            "Provisioning.Agent=%s in %s: %s provisions this VM, not waprov (`waprov -enable` hands "
            "provisioning over); nothing to do",
            config.provisioning_agent,
            config.source,
            "cloud-init" if config.provisioning_agent == "cloud-init" else "WALinuxAgent (or cloud-init)",
        )
        return 0
    vm_id = instance_id(system, overrides)
    state, stored = provisioned_state(system, config, vm_id)
    if state == DONE:
        log.info("Provisioning already completed, skipping.")
        if local_only and not dry_run:
            _flag_done(system)
        return 0
    if state == ADOPT:
        log.info("This VM was provisioned before waprov was installed (%s/provisioned holds its id): "
                 "recorded as done, nothing provisioned", config.lib_dir)  # fmt: skip
        write_own_marker(system, vm_id, overrides)
        if local_only and not dry_run:
            _flag_done(system)
        return 0
    if state == CHANGED and local_only:
        log.info("%s/provisioned holds another VM's id: the network phase reports Ready", config.lib_dir)
        if not then_network:
            return 0
    elif local_only:
        rc = _run(system, config, overrides, environ, vm_id, state, stored, True)
        if not then_network:
            return rc
        # a failed local step is run again, and reported, by the network phase
    if then_network:
        notify_ready(environ)
    rc = _run(system, config, overrides, environ, vm_id, state, stored, False)
    if then_network and not dry_run:
        _flag_done(system, RUN_DONE if rc == 0 else RUN_FAILED)
    return rc


def _netlink_watch() -> LinkWatch:
    from waprov.network import open_watch  # not before the host keys are begun

    return open_watch()


def _run(
    system: System,
    config: Config,
    overrides: Overrides,
    environ: Mapping[str, str],
    vm_id: str,
    state: str,
    stored: str,
    local_only: bool,
) -> int:
    from waprov import __version__
    from waprov.distro import Distro
    from waprov.kvp import Kvp
    from waprov.osrelease import read_os_release
    from waprov.record import RunRecord
    from waprov.timing import Clock, boot_time

    distro = Distro.detect(read_os_release(system))
    clock = Clock(overrides.retry_scale)

    def connect() -> Tuple[Fabric, Reporter]:
        from waprov.health import Reporter
        from waprov.http import HttpClient
        from waprov.sources import Fabric

        client = HttpClient(
            clock, proxy_host=config.http_proxy_host, proxy_port=config.http_proxy_port, environ=environ
        )
        fabric = Fabric(system, config, overrides, clock, client, distro.id)
        return fabric, Reporter(system, config, overrides, clock, client)

    try:
        boot = boot_time(system)
    except WaprovError as e:  # only the run report and KVP need it
        log.warning("%s (the run report will not say how long after boot it ran)", e)
        boot = 0.0
    kvp = Kvp(f"waprov-{__version__}|{vm_id}", enabled=not system.dry_run, boot_time=lambda: boot)
    record = RunRecord(system, kvp, vm_id, boot)
    ctx = Ctx(
        system, config, distro, None, clock, vm_id,
        overrides=overrides, connect=None if local_only else connect, local_only=local_only,
        link_watch=None if system.dry_run else _netlink_watch,
    )  # fmt: skip
    if not local_only:
        record.resume(STATE_DIR)  # the local phase's steps, when it ran in its own process
    run = Run(ctx, record)
    phase = "local phase" if local_only else "network phase" if ctx.done(LOCAL_DONE) else "all phases"
    log.info("Running waprov provisioning, %s (VM id %s, %s %s)",
             phase, vm_id or "unknown", distro.id, distro.version)  # fmt: skip
    if state == CHANGED:
        rc = run.changed_vm(stored)
    else:
        rc = run.local() if local_only else run.network()
    if system.dry_run:
        print("Plan (dry run: nothing was changed, nothing was sent):")
        print(system.plan())
    return rc
