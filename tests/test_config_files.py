"""Which file is read, and one clear line (exit 2, no traceback) for every unusable file."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import List

from tests.conftest import ROOT, run_waprov, waprov_argv
from tests.sandbox import sandbox_run

TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"


def assert_one_clear_error(stderr: str, path: str, reason: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert re.fullmatch(TS + " ERROR " + re.escape(path) + ": .*", lines[0]), lines[0]
    assert reason in lines[0]
    assert "Traceback" not in stderr


def show(path: str, *extra: str) -> List[str]:
    return ["-show-configuration", "-configuration-path:" + path, *extra]


def test_a_named_file_that_is_missing(tmp_path: Path) -> None:
    p = run_waprov(show(str(tmp_path / "nope.conf")))
    assert p.returncode == 2
    assert p.stdout == ""
    assert_one_clear_error(p.stderr, str(tmp_path / "nope.conf"), "no such file")


def test_a_directory(tmp_path: Path) -> None:
    p = run_waprov(show(str(tmp_path)))
    assert p.returncode == 2
    assert_one_clear_error(p.stderr, str(tmp_path), "is a directory")


def test_a_file_that_cannot_be_read() -> None:
    # root reads anything: run as nobody, for whom a mode-000 file in a 0755 dir is unreadable.
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        os.chmod(d, 0o755)  # noqa: S103 (nobody must reach the file)
        conf = Path(d) / "locked.conf"
        conf.write_text("Lib.Dir=/x\n")
        conf.chmod(0o000)
        p = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *waprov_argv(*show(str(conf)))],
            capture_output=True,
            text=True,
            check=False,
        )
    assert p.returncode == 2
    assert_one_clear_error(p.stderr, str(conf), "cannot be read: Permission denied")


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    conf = tmp_path / "latin1.conf"
    conf.write_bytes("Lib.Dir=/x\nOS.HomeDir=/h\xf6me\n".encode("latin-1"))
    p = run_waprov(show(str(conf)))
    assert p.returncode == 2
    assert_one_clear_error(p.stderr, str(conf), "not UTF-8 text (invalid byte 0xf6 on line 2)")


def test_a_huge_file(tmp_path: Path) -> None:
    conf = tmp_path / "huge.conf"
    conf.write_bytes(b"#" * (1024 * 1024) + b"\nLib.Dir=/x\n")
    p = run_waprov(show(str(conf)))
    assert p.returncode == 2
    assert_one_clear_error(p.stderr, str(conf), "too large")


def test_an_empty_file(tmp_path: Path) -> None:
    conf = tmp_path / "empty.conf"
    conf.write_bytes(b"")
    p = run_waprov(show(str(conf)))
    assert p.returncode == 2
    assert_one_clear_error(p.stderr, str(conf), "is empty")


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    p = run_waprov(show(str(fifo)))
    assert p.returncode == 2
    assert_one_clear_error(p.stderr, str(fifo), "not a regular file")


def test_the_named_file_wins_over_etc(tmp_path: Path) -> None:
    conf = tmp_path / "mine.conf"
    conf.write_text("Lib.Dir=/from/named\n")
    p = sandbox_run(waprov_argv(*show(str(conf))), "echo Lib.Dir=/from/etc > /etc/waagent.conf")
    assert p.returncode == 0, p.stderr
    assert "Lib.Dir = /from/named" in p.stdout.splitlines()


SHARE = "mkdir -p /usr/share/waprov && echo Lib.Dir=/from/share > /usr/share/waprov/waagent.conf"


def test_etc_waagent_conf_is_read_first() -> None:
    p = sandbox_run(
        waprov_argv("-show-configuration"), "echo Lib.Dir=/from/etc > /etc/waagent.conf; " + SHARE
    )
    assert p.returncode == 0, p.stderr
    assert "Lib.Dir = /from/etc" in p.stdout.splitlines()
    assert p.stderr == ""


def test_the_shipped_file_is_read_when_etc_has_none() -> None:
    p = sandbox_run(waprov_argv("-show-configuration"), "rm -f /etc/waagent.conf; " + SHARE)
    assert p.returncode == 0, p.stderr
    assert "Lib.Dir = /from/share" in p.stdout.splitlines()


def test_the_repository_waagent_conf_is_what_gets_shipped() -> None:
    setup = "rm -f /etc/waagent.conf; mkdir -p /usr/share/waprov; cp {} /usr/share/waprov/".format(
        os.path.join(ROOT, "waagent.conf")
    )
    p = sandbox_run(waprov_argv("-show-configuration"), setup)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    for line in (
        "ResourceDisk.Format = True",
        "ResourceDisk.Filesystem = ext4",
        "Provisioning.RegenerateSshHostKeyPair = True",
        "Provisioning.Agent = disabled",
    ):
        assert line in lines


def test_built_in_defaults_with_a_warning_when_there_is_no_file() -> None:
    p = sandbox_run(waprov_argv("-show-configuration"), "rm -f /etc/waagent.conf; rm -rf /usr/share/waprov")
    assert p.returncode == 0, p.stderr
    assert "Lib.Dir = /var/lib/waagent" in p.stdout.splitlines()
    assert re.fullmatch(TS + " WARNING no configuration file found .*using built-in defaults\n", p.stderr)


def test_a_broken_etc_file_is_an_error_not_a_fallback() -> None:
    p = sandbox_run(
        waprov_argv("-show-configuration"), "rm -f /etc/waagent.conf; mkdir /etc/waagent.conf; " + SHARE
    )
    assert p.returncode == 2
    assert_one_clear_error(p.stderr, "/etc/waagent.conf", "is a directory")


def test_the_sandbox_leaves_the_host_etc_untouched() -> None:
    assert not os.path.exists("/etc/waagent.conf.sandbox-probe")
    p = sandbox_run(["touch", "/etc/waagent.conf.sandbox-probe"])
    assert p.returncode == 0, p.stderr
    assert not os.path.exists("/etc/waagent.conf.sandbox-probe")
