"""`waprov -deprovision[+user] [-force] [--dry-run]`: WALinuxAgent's deprovisioning (WA §7).

`build()` makes the plan once: WA §7.2's warnings and actions in WA's order, then waprov's
own state. `+user` deletes the account the user step recorded (`/var/lib/waprov/user`);
with no record and no provisioning attempt by waprov (WALinuxAgent provisioned the VM) the
user named in `<Lib.Dir>/ovf-env.xml`, read before the lib dir is emptied; never one outside
UID_MIN..UID_MAX (login.defs, else 1000..60000), nor one whose home is not a real directory
strictly below `OS.HomeDir`: such a user is kept, with a warning saying why, and checked
again when the action runs. `--dry-run` runs the same actions on a dry-run System
and prints what they would do; a real run prints the warnings, asks `Do you want to
proceed (y/n)` (not with -force; EOF is "no"), and runs them with SIGINT deferred
(WA §7.1). Dangerous `Lib.Dir`/`Extension.LogDir` values are refused before anything.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from types import FrameType
from typing import Callable, List, Mapping, Optional, TextIO, Tuple

from waprov.cleanup import empty_dirs, remove_dhcp_leases, remove_ga_unit_files
from waprov.config import Config
from waprov.distro import Distro
from waprov.errors import ConfigError, HostError, WaprovError
from waprov.log import LOG_FILE
from waprov.network import read_routes
from waprov.state import ATTEMPT, STATE_DIR, USER_RECORD, journal, state_path
from waprov.steps import Account, home_problem, read_account, uid_range
from waprov.steps.customdata import OUTPUT as CUSTOM_DATA_LOG
from waprov.steps.hostname import set_running_hostname, tell_dhcp_client, write_sysconfig_hostname
from waprov.steps.sshd import DROPIN_MARK, FLATCAR_DROPIN
from waprov.steps.user import lock_root_password, read_record
from waprov.system import HostPath, System

log = logging.getLogger("waprov")
Action = Callable[[System], None]
LOCALHOST = "localhost.localdomain"
OTHER_FILES = ("/root/.bash_history", "/var/log/waagent.log", "/etc/random.seed", "/var/db/host.random",
               "/etc/isakmpd/local.pub", "/etc/isakmpd/private/local.key", "/etc/iked/private/local.key",
               "/etc/iked/local.pub")  # fmt: skip
SYSTEM_TOPS = {"etc", "usr", "boot", "proc", "sys", "dev", "bin", "sbin", "lib", "lib32", "lib64", "libx32"}
SHALLOW_TOPS = {"var", "home"}  # /var/lib, /var/log, /home/<user>: never emptied whole


@dataclass
class Plan:
    warnings: List[str] = field(default_factory=list)
    actions: List[Tuple[str, Action]] = field(default_factory=list)

    def add(self, warning: Optional[str], name: str, action: Optional[Action] = None) -> None:
        if warning:
            self.warnings.append(warning)
        if action is not None:
            self.actions.append((name, action))


def check_dir(system: System, config: Config, key: str, value: str) -> None:
    """Refuse a directory whose emptying would wreck the system."""
    real = system.realpath(value) if value.startswith("/") else value
    parts = [p for p in real.split("/") if p]
    if (
        not value.startswith("/")
        or len(parts) < 2
        or parts[0] in SYSTEM_TOPS
        or (parts[0] in SHALLOW_TOPS and len(parts) < 3)
    ):
        shown = f"{value!r}" + (f" (resolves to {real})" if real != value else "")
        raise ConfigError(
            config.source or "built-in defaults",
            f"{key}={shown}: -deprovision empties this directory, and refuses a system directory or "
            "one near the root; set it to a directory of its own such as /var/lib/waagent",
        )


def deleted_user(system: System, config: Config) -> Optional[str]:
    """The user name in `<Lib.Dir>/ovf-env.xml`, None when it is missing or invalid."""
    from waprov.ovf import parse_ovf

    try:
        raw = system.read(os.path.join(config.lib_dir, "ovf-env.xml"))
        return parse_ovf(raw).username if raw is not None else None
    except WaprovError as e:
        log.debug("ovf-env.xml unusable: %s", e)
        return None


def reset_hostname(distro: Distro) -> Action:
    """WA §7.2 step 4: the distribution's set_hostname and set_dhcp_hostname with
    localhost.localdomain (as the hostname step sets and tells the name, WA §5.1a)."""

    def run(system: System) -> None:
        system.write("/etc/hostname", LOCALHOST, 0o644)
        if distro.sysconfig_hostname:
            write_sysconfig_hostname(system, LOCALHOST)
        set_running_hostname(system, distro, LOCALHOST)
        tell_dhcp_client(system, distro, LOCALHOST, read_routes(system))

    return run


def keep_reason(system: System, config: Config, acct: Account, uid: int) -> Optional[str]:
    """Why `acct` must not be deleted (None: it may): not the uid provisioning saw, outside
    UID_MIN..UID_MAX, a home that fails steps.home_problem (a real directory strictly below
    OS.HomeDir, owned by the account; a missing one is fine), or one that holds another
    account's home, by its path or where that resolves: `userdel -f -r` removes the home
    whoever owns it."""
    if acct.uid != uid:
        return f"its uid is now {acct.uid}, not {uid} as when provisioning accepted it"
    low, high = uid_range(system)
    if acct.uid < low:
        return f"uid {acct.uid} is below UID_MIN {low} (a system account)"
    if acct.uid > high:
        return f"uid {acct.uid} is above UID_MAX {high} (not a regular account)"
    problem = home_problem(system, config.home_dir, acct, missing_ok=True)  # userdel -r copes
    if problem is not None:
        return problem
    home = os.path.normpath(acct.home)
    real = system.realpath(home)
    for name, other in _homes(system):
        inside = other == home or other.startswith(home + "/")
        real_other = system.realpath(other)
        if name != acct.name and (inside or real_other == real or real_other.startswith(real + "/")):
            return f"its home {home} holds the home of {name} too ({other})"
    return None


def _homes(system: System) -> List[Tuple[str, str]]:
    """(name, normalised home) of every /etc/passwd entry."""
    raw = (system.read("/etc/passwd") or b"").decode("utf-8", "replace")
    fields = [line.split(":") for line in raw.split("\n")]
    return [(f[0], os.path.normpath(f[5])) for f in fields if len(f) >= 7 and f[5].startswith("/")]


def delete_account(config: Config, user: str, uid: Optional[int]) -> Action:
    """userdel of `user` if it still passes keep_reason (uid None: it did not exist), then its
    lines of the sudoers drop-in."""

    def run(system: System) -> None:
        acct = read_account(system, user)
        if uid is not None and acct is not None:
            why = keep_reason(system, config, acct, uid)
            if why is not None:
                raise HostError(f"{user} is kept: {why}")
            system.run(["touch", HostPath("/var/run/utmp")], check=False)
            system.run(["userdel", "-f", "-r", user], check=False, timeout=120)
        elif acct is not None:
            raise HostError(f"{user} is kept: the account appeared after the plan was made")
        path = os.path.join(config.sudoers_dir, "waagent")
        raw, kept = system.read(path), system.mode_owner(path)
        if raw is not None and kept is not None:
            lines = raw.decode("utf-8", "surrogateescape").split("\n")
            # WA drops every line containing the name; only the user's own lines go here
            new = [line for line in lines if (line.split() or [""])[0] != user]
            if new != lines:
                system.write(path, "\n".join(new).encode("utf-8", "surrogateescape"), *kept)

    return run


def plan_user(plan: Plan, system: System, config: Config) -> None:
    """`+user`: the recorded account, else (WALinuxAgent provisioned this VM) ovf-env.xml's user."""
    try:
        record = read_record(system, STATE_DIR)
        user = record.name if record is not None else deleted_user(system, config)
        if record is None and system.kind(state_path(ATTEMPT)) != "absent":  # waprov started here
            record_file = state_path(USER_RECORD)
            plan.add(f"WARNING! {user or 'The provisioned user'} is kept: waprov provisioned this VM and "
                     f"created or adopted no account (no {record_file}: the user step refused it or did "
                     "not run).", "user")  # fmt: skip
            return
        if user is None:
            plan.add("WARNING! ovf-env.xml is not found.", "user")
            plan.add("WARNING! Skip delete user.", "user")
            return
        acct = read_account(system, user)
        why = keep_reason(system, config, acct, record.uid if record else acct.uid) if acct else None
    except HostError as e:
        plan.add(f"WARNING! No user is deleted: {e}.", "user")
        return
    if acct is None:
        plan.add(f"WARNING! {user} account does not exist; only its sudoers lines will be removed.", "user",
                 delete_account(config, user, None))  # fmt: skip
    elif why is not None:
        plan.add(f"WARNING! {user} is kept: {why}.", "user")
    else:
        plan.add(f"WARNING! {user} account and entire home directory will be deleted.", "user",
                 delete_account(config, user, acct.uid))  # fmt: skip


def remove_all(*paths: str) -> Action:
    def run(system: System) -> None:
        for path in paths:
            system.remove(path, recursive=True)

    return run


def _resolv(plan: Plan, system: System, distro: Distro) -> None:
    version = tuple(int(p) for p in distro.version.split(".") if p.isdigit())
    if distro.ubuntu and version >= (18, 4):
        plan.add("WARNING! /etc/resolv.conf will NOT be removed, this is a behavior change to earlier "
                 "versions of Ubuntu.", "resolv.conf")  # fmt: skip
    elif distro.ubuntu and system.realpath("/etc/resolv.conf") == "/run/resolvconf/resolv.conf":
        tail, original = "/etc/resolvconf/resolv.conf.d/tail", "/etc/resolvconf/resolv.conf.d/original"
        plan.add(
            f"WARNING! {tail} and {original} will be deleted.", "resolv.conf", remove_all(tail, original)
        )
    else:
        plan.add("WARNING! /etc/resolv.conf will be deleted.", "resolv.conf", remove_all("/etc/resolv.conf"))


def build(system: System, config: Config, distro: Distro, deluser: bool) -> Plan:
    """WA §7.2's warnings and actions, in order, then waprov's own state."""
    check_dir(system, config, "Lib.Dir", config.lib_dir)
    check_dir(system, config, "Extension.LogDir", config.extension_log_dir)
    journaled = journal(system)
    plan = Plan()
    stop = (lambda s: s.run(["systemctl", "stop", "waagent"], check=False)) if distro.flatcar else None
    plan.add("WARNING! The waagent service will be stopped.", "stop agent", stop)
    if config.regenerate_ssh_host_key_pair:
        keys = os.path.join(config.ssh_dir, "ssh_host_*key*")
        plan.add(
            "WARNING! All SSH host key pairs will be deleted.",
            "host keys",
            lambda s: remove_all(*s.glob(keys))(s),
        )  # the glob is read when the action runs
    plan.add("WARNING! Cached DHCP leases will be deleted.", "dhcp leases", remove_dhcp_leases)
    plan.add(None, "hostname", reset_hostname(distro))
    if config.delete_root_password:
        plan.add("WARNING! root password will be disabled. You will not be able to login as root.",
                 "root password", lambda s: lock_root_password(s, config.password_path))  # fmt: skip
    plan.add(None, "lib dirs", lambda s: empty_dirs(s, config.lib_dir, config.extension_log_dir))
    plan.add(None, "files", remove_all(*OTHER_FILES))
    _resolv(plan, system, distro)
    if deluser:
        plan_user(plan, system, config)
    plan.add(None, "GA unit files", lambda s: remove_ga_unit_files(s, config, distro))
    if distro.flatcar:
        plan.add("WARNING! /etc/machine-id will be removed.", "machine-id", remove_all("/etc/machine-id"))
    own = [STATE_DIR, LOG_FILE, CUSTOM_DATA_LOG]
    if any(line.endswith(" " + DROPIN_MARK) for line in journaled):
        own.insert(0, os.path.join(config.ssh_dir, "sshd_config.d", FLATCAR_DROPIN))
    plan.add(None, "waprov state", remove_all(*own))
    return plan


class _Interrupts:
    """WA §7.1: SIGINT before the actions ends the command (exit 0), during them it is ignored."""

    def __init__(self, out: TextIO) -> None:
        self.running = False
        self.out = out

    def __call__(self, signum: int, frame: Optional[FrameType]) -> None:
        if not self.running:
            print("Deprovision is interrupted.", file=self.out, flush=True)
            raise SystemExit(0)
        print("Deprovisioning may not be interrupted.", file=self.out, flush=True)


def confirm(stdin: TextIO, out: TextIO) -> bool:
    print("Do you want to proceed (y/n)", end="", file=out, flush=True)
    answer = stdin.readline()
    if not answer:  # stdin closed
        print(file=out)
        return False
    return answer.strip().lower().startswith("y")


def apply(system: System, plan: Plan) -> List[str]:
    """Run every action; a failing one is logged and the rest still run. The failures."""
    failed = []
    for name, action in plan.actions:
        try:
            action(system)
        except HostError as e:
            log.error("deprovision: %s: %s", name, e)
            failed.append(name)
    return failed


def main(
    conf_path: Optional[str],
    deluser: bool,
    force: bool,
    dry_run: bool,
    verbose: bool,
    environ: Mapping[str, str],
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
) -> int:
    from waprov.config import load_config
    from waprov.osrelease import read_os_release
    from waprov.start import host_system

    interrupts = _Interrupts(out)
    signal.signal(signal.SIGINT, interrupts)
    config = load_config(conf_path)
    system = host_system(dry_run, verbose or config.logs_verbose, log_file=False)  # it is deleted too
    distro = Distro.detect(read_os_release(system))
    plan = build(system, config, distro, deluser)
    for warning in plan.warnings:
        print(warning, file=out)
    if dry_run:  # the same actions, on a System that only records them
        apply(system, plan)
        print("Plan (dry run: nothing was changed):", file=out)
        print(system.plan(), file=out)
        return 0
    if not force and not confirm(stdin, out):
        return 0
    interrupts.running = True
    failed = apply(system, plan)
    interrupts.running = False
    print("Done:" if not failed else "Done, with failures:", file=out)
    print(system.plan(), file=out)
    if failed:
        log.error("deprovision: %d action(s) failed: %s", len(failed), ", ".join(failed))
        return 1
    return 0
