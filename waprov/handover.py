"""`waprov -enable` / `waprov -disable`: swap waprov in for WALinuxAgent's provisioning
on an existing image, and back (run by the image builder; package scripts may not edit
another package's conffile).

-enable: `Provisioning.Agent=disabled` in the file the guest agent (GA) reads, one line
changed (agentconf.py; the previous line kept in /etc/waprov/swap-in.json; Flatcar's
`/etc/waagent.conf -> ../usr/share/...` symlink becomes a file), the GA drop-ins in
/etc/systemd/system unless the package ships them, the per-connection sshd drop-ins (sshd
started by a socket waits for provisioning), /etc/waprov/disabled removed, the units
enabled. -disable: the recorded line put back byte for byte (the symlink too), our /etc
drop-ins removed, the units disabled, and /etc/waprov/disabled written when the
package's drop-ins would still pull waprov-local.service and waprov.service in. Both
print what they changed and change nothing on a second run. Exit 0 done, 1 failed (or
not fully undone), 2 bad input.
"""

from __future__ import annotations

import json
import posixpath
import stat
import sys
from typing import List, Optional, Sequence, TextIO, Tuple

from waprov.agentconf import Edit, set_value, undo
from waprov.errors import ConfigError, HostError
from waprov.system import System
from waprov.textdata import MIB, decode_text

KEY = "Provisioning.Agent"
GA_CONF = "/etc/waagent.conf"
# Flatcar ships the GA's file here; its waagent.service links /etc/waagent.conf to it
VENDOR_CONFS = ("/usr/share/waagent/waagent.conf",)
# Under /etc, not in waprov's state directory (state.py): -deprovision must not remove it.
ETC_DIR = "/etc/waprov"
HANDOVER_RECORD = ETC_DIR + "/swap-in.json"  # what -enable changed, for -disable
DISABLED_FLAG = ETC_DIR + "/disabled"
UNITS = ("waprov-local.service", "waprov.service", "waprov-resourcedisk.service")
# The units the GA drop-in requires and follows.
PROVISIONING_UNITS = ("waprov-local.service", "waprov.service")
GA_UNITS = ("waagent.service", "walinuxagent.service")
DROPIN_NAME = "50-waprov.conf"
ETC_UNITS = "/etc/systemd/system"
PACKAGE_UNITS = ("/usr/lib/systemd/system", "/lib/systemd/system")
UNIT_DIRS = (ETC_UNITS, *PACKAGE_UNITS)
# The GA drop-in: written by -enable where no package ships it; the .deb and the .rpm
# ship this text (debian/rules and rpm/waprov.spec write it at build time).
DROPIN = """\
# Installed by waprov for WALinuxAgent's guest agent (waagent.service on most
# distributions, walinuxagent.service on Debian and Ubuntu). With
# Provisioning.Agent=disabled the agent reports Ready at every start: it starts only
# after both of waprov's provisioning units, and not at all when provisioning failed.
[Unit]
Requires=waprov-local.service waprov.service
After=waprov-local.service waprov.service
"""
# Socket-activated sshd with one instance per connection (Accept=yes): Flatcar's and
# Fedora's/RHEL's sshd.socket start sshd@.service, Debian 11's ssh.socket ssh@.service.
# Written whether or not they are installed (an After= on its own orders nothing).
SSH_UNITS = ("ssh@.service", "sshd@.service")
SSH_DROPIN = """\
# Installed by `waprov -enable` for socket-activated sshd with one instance per
# connection (Accept=yes: Flatcar's and Fedora's sshd.socket, Debian 11's ssh.socket).
# The socket listens from early boot: its unit is Before=sockets.target, and
# waprov.service comes after basic.target, so ordering the socket after waprov.service
# would be a cycle. The sshd each connection starts waits here instead: a connection made
# during provisioning is held (no banner, nothing read) until both provisioning units have
# finished, then meets the final host keys and settings. A socket that starts
# ssh.service or sshd.service (Accept=no) is held back by waprov.service's Before= of them.
[Unit]
After=waprov-local.service waprov.service
"""


def _resolve(system: System, path: str) -> str:
    """Where the symlink chain at `path` ends (a host path, inside the root prefix)."""
    for _ in range(16):
        target = system.readlink(path)
        if target is None:
            return path
        path = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    raise HostError(f"{path}: too many levels of symbolic links")


def _read_text(system: System, path: str) -> str:
    data = system.read(path, limit=MIB + 1)
    if data is None:
        raise ConfigError(path, "no such file")
    try:
        return decode_text(data, MIB)
    except ValueError as e:
        raise ConfigError(path, str(e)) from None


def unit_file(system: System, name: str, dirs: Sequence[str] = UNIT_DIRS) -> Optional[str]:
    """The first of `<dir>/<name>` that exists (a unit, or `<unit>.d/<drop-in>`)."""
    return next((f"{d}/{name}" for d in dirs if system.kind(f"{d}/{name}") != "absent"), None)


def _package_dropin(system: System, unit: str) -> Optional[str]:
    return unit_file(system, f"{unit}.d/{DROPIN_NAME}", PACKAGE_UNITS)


def _systemctl(system: System, *args: str) -> List[str]:
    return ["systemctl", f"--root={system.root or '/'}", *args]


def _enabled(system: System, unit: str) -> bool:
    return system.query(_systemctl(system, "is-enabled", unit)).rc == 0


def _installed_units(system: System) -> List[str]:
    return [u for u in UNITS if unit_file(system, u) is not None]


def _check_units(system: System) -> None:
    if not system.has_command("systemctl"):
        raise HostError("systemctl is not installed: waprov's units need systemd")
    installed = _installed_units(system)
    for unit in UNITS:
        if unit not in installed:
            raise HostError(
                f"{unit} is not installed (looked in {', '.join(UNIT_DIRS)}): "
                "install waprov's package (deb or rpm), which ships the units"
            )


def _reload(system: System) -> None:
    """systemd reloads units when it runs (on this machine: a tree under a root is not its)."""
    booted = system.stat("/run/systemd/system")
    if system.root in ("", "/") and booted is not None and stat.S_ISDIR(booted.st_mode):
        system.run(["systemctl", "daemon-reload"])


# ---- the configuration line ----------------------------------------------------------------


def _conf_enable(system: System, conf: str, changes: List[str]) -> None:
    target = _resolve(system, conf)
    link = system.readlink(conf)
    created_from = None
    if system.kind(target) == "absent":
        vendor = next((v for v in VENDOR_CONFS if system.kind(v) == "file"), None)
        if link is not None or vendor is None or conf != GA_CONF:
            changes.append(f"{conf}: not found (WALinuxAgent is not installed?); no {KEY} to change")
            return
        created_from, target = vendor, vendor
    text = _read_text(system, target)
    result = set_value(text, KEY, "disabled")
    if result is None:
        changes.append(f"{conf}: {KEY} is already disabled (left as it is)")
        return
    new, edit = result
    mode, owner = system.mode_owner(target) or (0o644, None)
    materialize = created_from is not None or (link is not None and target.startswith("/usr/"))
    state = {
        "file": conf,
        "edit": edit.to_json(),
        "link": link if materialize else None,
        "created": created_from is not None,
    }
    system.makedirs(ETC_DIR, 0o755)
    system.write(HANDOVER_RECORD, json.dumps(state, indent=2) + "\n", 0o644)
    if materialize:  # the GA reads a read-only vendor file: /etc gets its own copy
        if link is not None:
            system.remove(conf)
        system.write(conf, new, mode, owner)
        how = (
            f"now a file (was a symbolic link to {link})"
            if link is not None
            else f"copied from {created_from}"
        )
        changes.append(f"{conf}: {how}")
    else:
        system.write(target, new, mode, owner)
    changes.append(
        f"{conf}: line {edit.index + 1}: {edit.before or '(none)'} -> {edit.after} "
        f"(previous line kept in {HANDOVER_RECORD})"
    )


def _load_state(system: System) -> Optional[Tuple[str, Edit, Optional[str], bool]]:
    raw = system.read(HANDOVER_RECORD, limit=1 << 16)
    if raw is None:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
        conf, link, created = data["file"], data.get("link"), data.get("created", False)
        if not isinstance(conf, str) or not conf.startswith("/"):
            raise ValueError("file is not an absolute path")
        if not (link is None or isinstance(link, str)) or not isinstance(created, bool):
            raise ValueError("link/created have the wrong type")
        return conf, Edit.from_json(data["edit"]), link, created
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            HANDOVER_RECORD,
            f"is not a record written by waprov -enable ({e}); "
            "restore the configuration by hand and remove it",
        ) from None


def _conf_disable(system: System, changes: List[str], problems: List[str]) -> None:
    state = _load_state(system)
    if state is None:
        changes.append(f"{KEY}: no record of a change by waprov -enable ({HANDOVER_RECORD}); left as it is")
        return
    conf, edit, link, created = state
    target = _resolve(system, conf)
    text = _read_text(system, target)
    try:
        old = undo(text, KEY, edit)
    except ValueError as e:
        problems.append(f"{conf}: not restored: {e}; set {KEY} by hand, then remove {HANDOVER_RECORD}")
        return
    original = None
    if link is not None:
        original = _read_text(system, _resolve(system, posixpath.join(posixpath.dirname(conf), link)))
    elif created:
        original = next((_read_text(system, v) for v in VENDOR_CONFS if system.kind(v) == "file"), None)
    if original is not None and old == original and system.kind(conf) == "file":
        system.remove(conf)
        if link is not None:
            system.symlink(conf, link)
        again = f"the symbolic link to {link} again" if link is not None else "removed (the GA relinks it)"
        changes.append(f"{conf}: {again}")
    else:
        mode, owner = system.mode_owner(target) or (0o644, None)
        system.write(target, old, mode, owner)
        if original is not None:
            problems.append(f"{conf}: kept as a file: other lines were changed since waprov -enable")
    changes.append(f"{conf}: line {edit.index + 1}: {edit.after} -> {edit.before or '(removed)'}")
    system.remove(HANDOVER_RECORD)


# ---- the commands ---------------------------------------------------------------------------


def enable(system: System, conf: str = GA_CONF) -> List[str]:
    """Swap waprov in; the list of what changed (or was found already so)."""
    _check_units(system)
    changes: List[str] = []
    _conf_enable(system, conf, changes)
    for unit in GA_UNITS:
        package = _package_dropin(system, unit)
        path = f"{ETC_UNITS}/{unit}.d/{DROPIN_NAME}"
        if package is not None:
            changes.append(f"{unit}: the package's drop-in {package} is in place")
        elif system.read(path) != DROPIN.encode():
            system.makedirs(posixpath.dirname(path), 0o755)
            system.write(path, DROPIN, 0o644)
            changes.append(
                f"{path}: written ({unit} requires and follows {' and '.join(PROVISIONING_UNITS)})"
            )
    for unit in SSH_UNITS:
        path = f"{ETC_UNITS}/{unit}.d/{DROPIN_NAME}"
        if system.read(path) != SSH_DROPIN.encode():
            system.makedirs(posixpath.dirname(path), 0o755)
            system.write(path, SSH_DROPIN, 0o644)
            changes.append(
                f"{path}: written (a socket-started {unit} follows {' and '.join(PROVISIONING_UNITS)})"
            )
    if system.remove(DISABLED_FLAG):
        changes.append(f"{DISABLED_FLAG}: removed")
    to_enable = [u for u in UNITS if not _enabled(system, u)]
    if to_enable:
        system.run(_systemctl(system, "enable", *to_enable))
    changes.extend(f"{u}: enabled" for u in to_enable)
    if system.actions:
        _reload(system)
    return changes


def disable(system: System) -> Tuple[List[str], List[str]]:
    """Swap waprov out; (what changed, what could not be undone)."""
    if _installed_units(system):  # after the package is gone, the line is still restored
        _check_units(system)
    changes: List[str] = []
    problems: List[str] = []
    _conf_disable(system, changes, problems)
    for unit in (*GA_UNITS, *SSH_UNITS):
        path = f"{ETC_UNITS}/{unit}.d/{DROPIN_NAME}"
        if system.remove(path):
            changes.append(f"{path}: removed")
            folder = posixpath.dirname(path)
            if not system.glob(folder + "/*") and not system.glob(folder + "/.*"):
                system.remove(folder, recursive=True)
    pulled_in = [unit for unit in GA_UNITS if _package_dropin(system, unit) is not None]
    to_disable = [u for u in _installed_units(system) if _enabled(system, u)]
    if to_disable:
        system.run(_systemctl(system, "disable", *to_disable))
    changes.extend(f"{u}: disabled" for u in to_disable)
    if pulled_in and system.kind(DISABLED_FLAG) == "absent":
        system.makedirs(ETC_DIR, 0o755)
        system.write(DISABLED_FLAG, "", 0o644)
        changes.append(
            f"{DISABLED_FLAG}: written (the package's drop-ins for {', '.join(pulled_in)} still "
            f"pull {' and '.join(PROVISIONING_UNITS)} in; the flag makes systemd skip them)"
        )
    if system.kind(ETC_DIR) == "dir" and not system.glob(ETC_DIR + "/*"):
        system.remove(ETC_DIR, recursive=True)
    if system.actions:
        _reload(system)
    return changes, problems


def main(
    command: str, conf_path: Optional[str], dry_run: bool, verbose: bool, out: TextIO = sys.stdout
) -> int:
    from waprov.start import host_system

    system = host_system(dry_run, verbose, log_file=False)
    if command == "enable":
        changes: List[str] = enable(system, conf_path or GA_CONF)
        problems: List[str] = []
    else:
        if conf_path:
            print(
                f"note: -disable restores the file recorded in {HANDOVER_RECORD}; "
                "-configuration-path is not used",
                file=out,
            )
        changes, problems = disable(system)
    print(f"waprov -{command}{' (dry run: nothing was changed)' if dry_run else ''}:", file=out)
    for line in changes:
        print(f"  {line}", file=out)
    if not system.actions:
        print(f"  nothing to change: waprov is already {command}d", file=out)
    for line in problems:
        print(f"  NOT DONE: {line}", file=out)
    return 1 if problems else 0
