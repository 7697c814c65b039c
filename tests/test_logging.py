"""Log lines: `<UTC ISO timestamp> <LEVEL> <message>`, and no password in any of them."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from waprov.log import Redactor, setup_logging

LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (VERBOSE|INFO|WARNING|ERROR) .*")
PASSWORD = "Tr0ub4dor&3-horse"


def test_line_format_and_levels_in_the_file_and_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_file = tmp_path / "waprov.log"
    setup_logging(verbose=False, log_file=str(log_file))
    log = logging.getLogger("waprov")
    try:
        log.debug("hidden")
        log.info("hello %s", "world")
        log.warning("careful")
        log.error("broken")
        setup_logging(verbose=True, log_file=str(log_file))
        log.debug("shown")
    finally:
        setup_logging()
    lines = log_file.read_text().splitlines()
    assert all(LINE.fullmatch(line) for line in lines), lines
    assert [line.split(" ", 1)[1] for line in lines] == [
        "INFO hello world",
        "WARNING careful",
        "ERROR broken",
        "VERBOSE shown",
    ]
    err = capsys.readouterr().err
    assert err.splitlines()[0].endswith(" INFO hello world")
    assert (log_file.stat().st_mode & 0o777) == 0o600


def test_a_password_never_reaches_a_log_line(tmp_path: Path) -> None:
    log_file = tmp_path / "waprov.log"
    redactor = setup_logging(verbose=True, log_file=str(log_file))
    redactor.add(PASSWORD)
    redactor.add("line one\nline two of a multi-line secret")
    log = logging.getLogger("waprov")
    try:
        log.info("user password is %s", PASSWORD)
        log.info("message with the password inline: " + PASSWORD)
        log.info("only the second line: line two of a multi-line secret")
        try:
            raise ValueError(f"bad value {PASSWORD!r}")
        except ValueError:
            log.error("failed", exc_info=True)
            log.debug("traceback", exc_info=True)
    finally:
        setup_logging()
    text = log_file.read_text()
    assert "<redacted>" in text
    assert "Traceback" in text  # the exception text was logged, redacted
    assert PASSWORD not in text
    assert "Tr0ub4dor" not in text
    assert "line two of a multi-line secret" not in text


def test_redactor_replaces_longest_secrets_first() -> None:
    r = Redactor(["abc", "abcdef"])
    assert r.redact("xabcdefx abc") == "x<redacted>x <redacted>"
    r.add("")
    r.add(None)
    assert r.redact("nothing") == "nothing"


def test_an_unwritable_log_file_falls_back_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging(log_file=str(tmp_path / "missing-dir" / "waprov.log"))
    try:
        logging.getLogger("waprov").info("still logged")
    finally:
        setup_logging()
    err = capsys.readouterr().err
    assert "cannot open the log file" in err
    assert "still logged" in err
