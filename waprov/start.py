"""The start of every command that changes the host (`-provision`, `-resourcedisk`,
`-deprovision`, `-enable`/`-disable`): its logging, then its one System."""

from __future__ import annotations

from waprov.log import LOG_FILE, setup_logging
from waprov.system import System


def host_system(dry_run: bool, verbose: bool, log_file: bool = True) -> System:
    """Log to stderr, and to /var/log/waprov.log when `log_file` and not a dry run; the
    command's System (a dry run records every change and makes none), with the redactor
    of the log lines."""
    redactor = setup_logging(verbose, LOG_FILE if log_file and not dry_run else None)
    return System(dry_run=dry_run, redactor=redactor)
