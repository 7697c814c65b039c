"""Command line, in WALinuxAgent's conventions (WA §9).

Each argument is matched against `^[-/]*<word>` (any number of `-` or `/`, a prefix
match), so `-version`, `--version` and `/version` are the same; the last command wins.
Exit codes: 0 success, 1 the requested operation failed, 2 usage or configuration
error. Modules beyond the standard library are imported only by the commands using them.
The commands that change the host (LOCKED, without --dry-run) run one at a time: each holds
waprov.lock's run lock from before its first step until the process exits.
"""

from __future__ import annotations

import os
import sys

from waprov import __version__
from waprov.errors import UsageError, WaprovError

TYPE_CHECKING = False
if TYPE_CHECKING:  # the boot path imports no more than it needs (see `make bench`)
    from typing import Callable, Dict, List, Optional, Sequence

PROG = "waprov"

USAGE = """\
usage: waprov [-verbose] [-configuration-path:<path>] -help|-version|-show-configuration
       waprov [-verbose] [-configuration-path:<path>] -provision [-local [-continue]] [--dry-run]
       waprov [-verbose] [-configuration-path:<path>] -resourcedisk [--dry-run]
       waprov [-verbose] [-configuration-path:<path>] -deprovision[+user] [-force] [--dry-run]
       waprov [-verbose] [-configuration-path:<path>] -enable|-disable [--dry-run]
       waprov -status [--json]
       waprov [-configuration-path:<path>] -doctor [--image]

  -help                        print this help
  -version                     print waprov's version, the distribution and Python's version
  -show-configuration          print every waagent.conf key with its value, sorted
  -provision                   provision this VM once (ovf-env.xml/IMDS, wireserver reports):
                               the network phase, and every local step not done yet
  -local                       with -provision: the local phase only (waprov-local.service,
                               before the network): the DVD's settings, no network used
  -continue                    with -provision -local: then tell systemd the local phase is
                               over (READY=1, waprov-local.service is Type=notify) and go on
                               with the network phase in the same process
  -resourcedisk                format and mount the resource disk, enable its swapfile
                               (every boot; ResourceDisk.* settings)
  -deprovision                 remove this VM's identity before capturing an image (WA's
                               list: leases, host name, lib dir, resolv.conf, ...); asks first
  -deprovision+user            the same, and delete the provisioned user and its home
  -force                       with -deprovision: do not ask
  -enable                      swap waprov in on an image: Provisioning.Agent=disabled in
                               WALinuxAgent's configuration (that line only; the previous
                               one is kept), the guest agent drop-ins, units enabled
  -disable                     undo -enable: the previous line back, units disabled
  -status                      what the last provisioning run did (steps, durations, reports,
                               the last error), from /var/lib/waprov/report.json
  --json                       with -status: the report as JSON
  -doctor                      check this image or VM: one line OK/WARN/FAIL per check with
                               the fix (udf, the guest agent swapped out, no second agent,
                               sshd, sudoers, hv_kvp_daemon, waprov's units); exit 1 on FAIL
  --image                      with -doctor: also what -deprovision should have removed
  --dry-run                    with -provision, -resourcedisk, -deprovision, -enable or
                               -disable: print the plan, change nothing, send nothing
  -configuration-path:<path>   read <path> instead of /etc/waagent.conf
                               (then /usr/share/waprov/waagent.conf, then built-in defaults);
                               with -enable: the guest agent's file to change
  -verbose                     log debug messages (also Logs.Verbose=y)

Arguments may be written -x, --x or /x. Exit codes: 0 success, 1 the operation failed,
2 usage or configuration error. -provision, -resourcedisk, -deprovision, -enable and
-disable run one at a time (/run/waprov/lock): another waits up to 60 s, then exits 1."""

# Words in the order WALinuxAgent checks them; each is a command or a flag. An argument
# matches a word when, after any leading '-' and '/', it starts with the word.
_FLAGS = ("verbose", "force", "dry-run", "json", "image", "local", "continue")
_ORDER = ("deprovision+user", "deprovision", "version", "verbose", "force", "dry-run", "show-configuration",
          "provision", "resourcedisk", "enable", "disable", "status", "json", "doctor", "image", "local",
          "continue", "help", "usage", "?")  # fmt: skip
_CONF = "configuration-path:"
LOCKED = ("provision", "resourcedisk", "deprovision", "deprovision+user", "enable", "disable")


class Args:
    """The parsed command line."""

    __slots__ = ("command", "conf_path", "continue_", "dry_run", "force", "image", "json", "local", "verbose")

    def __init__(
        self,
        command: str = "",
        conf_path: Optional[str] = None,
        verbose: bool = False,
        force: bool = False,
        dry_run: bool = False,
        json: bool = False,
        image: bool = False,
        local: bool = False,
        continue_: bool = False,
    ) -> None:
        self.local = local
        self.continue_ = continue_
        self.json = json
        self.image = image
        self.command = command
        self.conf_path = conf_path
        self.verbose = verbose
        self.force = force
        self.dry_run = dry_run

    def _fields(self) -> tuple[object, ...]:
        return (self.command, self.conf_path, self.verbose, self.force, self.dry_run, self.json, self.image,
                self.local, self.continue_)  # fmt: skip

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Args) and self._fields() == other._fields()

    def __repr__(self) -> str:
        return f"Args{self._fields()!r}"


def parse_args(args: Sequence[str]) -> Args:
    """Parse the arguments after the program name; UsageError on anything unknown."""
    parsed = Args()
    for arg in args:
        if arg == "":
            continue
        word = arg.lstrip("-/")
        if word.startswith(_CONF):
            parsed.conf_path = word[len(_CONF) :]
            continue
        match = next((w for w in _ORDER if word.startswith(w)), None)
        if match is None:
            raise UsageError(f"unknown argument: {arg}")
        if match in _FLAGS:
            setattr(parsed, "continue_" if match == "continue" else match.replace("-", "_"), True)
        else:
            parsed.command = "help" if match in ("usage", "?") else match
    if parsed.conf_path == "":
        raise UsageError("-configuration-path: needs a path after the colon")
    if not parsed.command:
        raise UsageError("no command given")
    if parsed.continue_ and not (parsed.command == "provision" and parsed.local):
        raise UsageError("-continue goes with -provision -local only")
    return parsed


def cmd_version(args: Args) -> int:
    from waprov.osrelease import read_os_release

    rel = read_os_release(None)  # no System here: see osrelease.py
    print(f"{PROG}-{__version__} running on {rel.get('ID', 'unknown')} {rel.get('VERSION_ID', '')}".rstrip())
    print("Python: {}.{}.{}".format(*sys.version_info[:3]))
    return 0


def cmd_help(args: Args) -> int:
    print(USAGE)
    return 0


def cmd_show_configuration(args: Args) -> int:
    import logging

    from waprov.config import load_config, show_lines
    from waprov.log import set_verbose

    cfg = load_config(args.conf_path)
    set_verbose(args.verbose or cfg.logs_verbose)
    logging.getLogger("waprov").debug("configuration read from %s", cfg.source or "built-in defaults")
    print("\n".join(show_lines(cfg)))
    return 0


def cmd_provision(args: Args) -> int:
    import os

    from waprov.provision import main, notify_ready

    try:
        return main(args.conf_path, args.dry_run, args.verbose, os.environ, local_only=args.local,
                    then_network=args.continue_)  # fmt: skip
    finally:
        if args.continue_:  # however the run ended: systemd must not wait for it (Type=notify)
            notify_ready(os.environ)


def cmd_resourcedisk(args: Args) -> int:
    import os

    from waprov.resourcedisk.command import main

    return main(args.conf_path, args.dry_run, args.verbose, os.environ)


def cmd_deprovision(args: Args) -> int:
    import os

    from waprov.deprovision import main

    deluser = args.command == "deprovision+user"
    return main(args.conf_path, deluser, args.force, args.dry_run, args.verbose, os.environ)


def cmd_swapin(args: Args) -> int:
    from waprov.handover import main

    return main(args.command, args.conf_path, args.dry_run, args.verbose)


def cmd_doctor(args: Args) -> int:
    from waprov.doctor import main

    return main(args.conf_path, args.image)


def cmd_status(args: Args) -> int:
    from waprov.status import main

    return main(args.json)


def take_lock(args: Args) -> None:
    """The run lock for a command that changes the host (see waprov.lock)."""
    import os

    from waprov.lock import DEFAULT_WAIT, hold
    from waprov.overrides import lock_wait_from_env

    command = " ".join(["waprov", f"-{args.command}", *(["-force"] if args.force else [])])
    hold(command, lock_wait_from_env(os.environ, DEFAULT_WAIT))


COMMANDS: Dict[str, Callable[[Args], int]] = {
    "status": cmd_status,
    "doctor": cmd_doctor,
    "enable": cmd_swapin,
    "disable": cmd_swapin,
    "deprovision": cmd_deprovision,
    "deprovision+user": cmd_deprovision,
    "provision": cmd_provision,
    "resourcedisk": cmd_resourcedisk,
    "version": cmd_version,
    "help": cmd_help,
    "show-configuration": cmd_show_configuration,
}


def _run(args: Args) -> int:
    if args.command in ("version", "help"):  # fast paths: no logging, no config
        return COMMANDS[args.command](args)
    import logging

    from waprov.log import setup_logging

    setup_logging(args.verbose)
    log = logging.getLogger("waprov")
    try:
        if args.command in LOCKED and not args.dry_run:
            take_lock(args)
        return COMMANDS[args.command](args)
    except WaprovError as e:
        log.error("%s", e)
        return e.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Exception as e:  # a bug: one line on the console, the traceback at VERBOSE
        log.error("internal error: %s: %s (run with -verbose for details)", type(e).__name__, e)
        log.debug("traceback", exc_info=True)
        return 1


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    try:
        args = parse_args(argv[1:])
    except UsageError as e:
        print(f"{PROG}: {e}\n{USAGE}", file=sys.stderr)
        return e.exit_code
    try:
        rc = _run(args)
        sys.stdout.flush()  # a reader that went away shows here, not in the interpreter's exit
        return rc
    except BrokenPipeError:  # `waprov -show-configuration | head`
        # the rest of the output goes nowhere: the interpreter's last flush would print the
        # error otherwise (Python 3.13 does, 3.11 does not)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no host file: not System's
        sys.stderr.close()
        return 0
