"""Logging: `<UTC ISO timestamp> <LEVEL> <message>` to stderr (the journal) and the log file.

`setup_logging()` configures the "waprov" logger once per process and returns the
`Redactor` every handler applies *after* formatting, so a registered secret cannot reach
a log line through a message, an argument or an exception text. Levels print as
WALinuxAgent's: VERBOSE, INFO, WARNING, ERROR.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Iterable, List, Optional, Set

LOG_FILE = "/var/log/waprov.log"
REDACTED = "<redacted>"
LOGGER = "waprov"
_LEVEL_NAMES = {
    logging.DEBUG: "VERBOSE",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "ERROR",
}


class Redactor:
    """Replaces every registered secret (and its lines, for multi-line secrets) by a marker."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: Set[str] = set()
        for s in secrets:
            self.add(s)

    def add(self, secret: Optional[str]) -> None:
        if not secret:
            return
        self._secrets.add(secret)
        for part in secret.splitlines():
            if part.strip():
                self._secrets.add(part)

    def redact(self, text: str) -> str:
        for s in sorted(self._secrets, key=len, reverse=True):  # longest first: no leftovers
            if s in text:
                text = text.replace(s, REDACTED)
        return text

    def redact_argv(self, argv: Iterable[str]) -> List[str]:
        return [self.redact(a) for a in argv]


def utc_time(t: Optional[float] = None, digits: int = 0) -> str:
    """A UTC time (now when `t` is None), ISO 8601 with `digits` decimals of the second:
    `2026-12-03T18:00:00Z` (report lines, the run lock), 3 for the run record, 6 for log lines."""
    t = time.time() if t is None else t
    fraction = f".{int(t % 1 * 10**digits):0{digits}d}" if digits else ""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + fraction + "Z"


class _Formatter(logging.Formatter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def formatTime(self, record: logging.LogRecord, datefmt: Optional[str] = None) -> str:
        return utc_time(record.created, 6)

    def format(self, record: logging.LogRecord) -> str:
        level = _LEVEL_NAMES.get(record.levelno, record.levelname)
        text = f"{self.formatTime(record)} {level} {record.getMessage()}"
        if record.exc_info and record.levelno <= logging.DEBUG:
            text += "\n" + self.formatException(record.exc_info)
        return self.redactor.redact(text)


def setup_logging(
    verbose: bool = False, log_file: Optional[str] = None, redactor: Optional[Redactor] = None
) -> Redactor:
    """(Re)configure the waprov logger; `log_file=None` logs to stderr only."""
    redactor = redactor or Redactor()
    logger = logging.getLogger(LOGGER)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    logger.propagate = False
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    fmt = _Formatter(redactor)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    logger.addHandler(stream)
    if log_file:
        try:  # directly, not through System: logging starts before it
            fd = os.open(
                log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
            fh = logging.StreamHandler(os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace"))
            fh.setFormatter(fmt)
            logger.addHandler(fh)
        except OSError as e:
            logger.warning("cannot open the log file %s (%s); logging to stderr only", log_file, e.strerror)
    return redactor


def set_verbose(verbose: bool) -> None:
    logging.getLogger(LOGGER).setLevel(logging.DEBUG if verbose else logging.INFO)
