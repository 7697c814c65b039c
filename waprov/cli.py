"""Command line, in WALinuxAgent's conventions (WA §9).

Each argument is matched against `^[-/]*<word>` (any number of `-` or `/`, a prefix
match), so `-version`, `--version` and `/version` are the same; the last command wins.
Exit codes: 0 success, 1 the requested operation failed, 2 usage or configuration
error. Modules beyond the standard library are imported only by the commands using them.
"""

from __future__ import annotations

import logging
import platform
import re
import sys
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from waprov import __version__
from waprov.errors import UsageError, WaprovError

PROG = "waprov"
_P = r"^[-/]*"

USAGE = """\
usage: waprov [-verbose] [-configuration-path:<path>] -help|-version|-show-configuration

  -help                        print this help
  -version                     print waprov's version, the distribution and Python's version
  -show-configuration          print every waagent.conf key with its value, sorted
  -configuration-path:<path>   read <path> instead of /etc/waagent.conf
                               (then /usr/share/waprov/waagent.conf, then built-in defaults)
  -verbose                     log debug messages (also Logs.Verbose=y)

Arguments may be written -x, --x or /x. Exit codes: 0 success, 1 the operation failed,
2 usage or configuration error."""


@dataclass(frozen=True)
class Args:
    command: str = ""
    conf_path: Optional[str] = None
    verbose: bool = False
    force: bool = False
    dry_run: bool = False


# (pattern, what it sets), checked in this order for every argument.
_RULES: Tuple[Tuple[str, Callable[[Args, re.Match[str]], Args]], ...] = (
    (_P + r"configuration-path:(.*)$", lambda a, m: replace(a, conf_path=m.group(1))),
    (_P + r"version", lambda a, m: replace(a, command="version")),
    (_P + r"verbose", lambda a, m: replace(a, verbose=True)),
    (_P + r"force", lambda a, m: replace(a, force=True)),
    (_P + r"dry-run", lambda a, m: replace(a, dry_run=True)),
    (_P + r"show-configuration", lambda a, m: replace(a, command="show-configuration")),
    (_P + r"(help|usage|\?)", lambda a, m: replace(a, command="help")),
)


def parse_args(args: Sequence[str]) -> Args:
    """Parse the arguments after the program name; UsageError on anything unknown."""
    parsed = Args()
    for arg in args:
        if arg == "":
            continue
        for pattern, apply in _RULES:
            m = re.match(pattern, arg, re.DOTALL)
            if m:
                parsed = apply(parsed, m)
                break
        else:
            raise UsageError(f"unknown argument: {arg}")
    if parsed.conf_path == "":
        raise UsageError("-configuration-path: needs a path after the colon")
    if not parsed.command:
        raise UsageError("no command given")
    return parsed


def cmd_version(args: Args) -> int:
    from waprov.distro import Distro

    d = Distro.detect()
    print(f"{PROG}-{__version__} running on {d.id} {d.version}".rstrip())
    print(f"Python: {platform.python_version()}")
    return 0


def cmd_help(args: Args) -> int:
    print(USAGE)
    return 0


def cmd_show_configuration(args: Args) -> int:
    from waprov.config import load_config, show_lines
    from waprov.log import set_verbose

    cfg = load_config(args.conf_path)
    set_verbose(args.verbose or cfg.logs_verbose)
    logging.getLogger("waprov").debug("configuration read from %s", cfg.source or "built-in defaults")
    print("\n".join(show_lines(cfg)))
    return 0


COMMANDS: Dict[str, Callable[[Args], int]] = {
    "version": cmd_version,
    "help": cmd_help,
    "show-configuration": cmd_show_configuration,
}


def _run(args: Args) -> int:
    if args.command in ("version", "help"):  # fast paths: no logging, no config
        return COMMANDS[args.command](args)
    from waprov.log import setup_logging

    setup_logging(args.verbose)
    log = logging.getLogger("waprov")
    try:
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
        return _run(args)
    except BrokenPipeError:  # `waprov -show-configuration | head`
        sys.stderr.close()
        return 0
