"""Each rule of WA §1.2, shown on a real file read by load_config()."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator

import pytest

from waprov.config import Config, load_config, parse_values


@pytest.fixture
def waprov_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog for the waprov logger, which does not propagate once setup_logging() ran."""
    logger = logging.getLogger("waprov")
    old = logger.propagate
    logger.propagate = True
    with caplog.at_level(logging.DEBUG, logger="waprov"):
        yield caplog
    logger.propagate = old


def read(tmp_path: Path, text: str, newline: str = "\n") -> Config:
    p = tmp_path / "waagent.conf"
    p.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return load_config(str(p))


def test_hash_cuts_the_value_anywhere_even_inside_quotes(tmp_path: Path) -> None:
    cfg = read(
        tmp_path, 'ResourceDisk.MountPoint=/mnt/x # comment\nLogs.Verbose=y#c\nHttpProxy.Host="a # b"\n'
    )
    assert cfg.resource_disk_mount_point == "/mnt/x"
    assert cfg.logs_verbose is True
    assert cfg.http_proxy_host == "a"


def test_double_quotes_and_spaces_are_stripped_single_quotes_kept(tmp_path: Path) -> None:
    cfg = read(tmp_path, 'OS.SshDir=" spaced "\nLib.Dir="quoted value"\nOS.HomeDir=\'single\'\n')
    assert cfg.ssh_dir == "spaced"
    assert cfg.lib_dir == "quoted value"
    assert cfg.home_dir == "'single'"


def test_none_means_the_default(tmp_path: Path) -> None:
    cfg = read(
        tmp_path,
        "OS.OpensslPath=None\nHttpProxy.Host=None\nResourceDisk.SwapSizeMB=None\nLogs.Console=None\n",
    )
    assert cfg.openssl_path == "/usr/bin/openssl"
    assert cfg.http_proxy_host is None
    assert cfg.resource_disk_swap_size_mb == 0
    assert cfg.logs_console is True


def test_empty_value_is_the_empty_string_for_string_keys_only(tmp_path: Path) -> None:
    cfg = read(
        tmp_path,
        "Lib.Dir=\nResourceDisk.MountOptions=\nLogs.Console=\nProvisioning.PasswordCryptSaltLength=\n",
    )
    assert cfg.lib_dir == ""
    assert cfg.resource_disk_mount_options == ""
    assert cfg.logs_console is True
    assert cfg.password_crypt_salt_length == 10


def test_the_last_duplicate_wins(tmp_path: Path) -> None:
    cfg = read(tmp_path, "Logs.Verbose=y\nOS.SshDir=/a\nLogs.Verbose=n\nOS.SshDir=/b\n")
    assert cfg.logs_verbose is False
    assert cfg.ssh_dir == "/b"


@pytest.mark.parametrize(
    ("raw", "expected_off", "expected_on"),
    [
        ("y", True, True),
        ("Y", True, True),
        ("n", False, False),
        ("N", False, False),
        ("yes", False, True),
        ("true", False, True),
        ("1", False, True),
        ("no", False, True),
        ("", False, True),
        ("'y'", False, True),
    ],
)
def test_switches_take_only_y_and_n(tmp_path: Path, raw: str, expected_off: bool, expected_on: bool) -> None:
    # ResourceDisk.Format defaults to off, Logs.Console to on: anything but y/n gives each its default.
    cfg = read(tmp_path, f"ResourceDisk.Format={raw}\nLogs.Console={raw}\n")
    assert cfg.resource_disk_format is expected_off
    assert cfg.logs_console is expected_on


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2048", 2048),
        (" 64 ", 64),
        ("+7", 7),
        ("-5", -5),
        ("1_000", 1000),
        ("007", 7),
        ("0x10", 0),
        ("4.5", 0),
        ("12abc", 0),
        ("", 0),
        ("None", 0),
        ("'9'", 0),
    ],
)
def test_ints_use_int_and_fall_back_to_the_default(tmp_path: Path, raw: str, expected: int) -> None:
    assert read(tmp_path, f"ResourceDisk.SwapSizeMB={raw}\n").resource_disk_swap_size_mb == expected


def test_bad_port_gives_no_port(tmp_path: Path) -> None:
    assert read(tmp_path, "HttpProxy.Port=80x\n").http_proxy_port is None
    assert read(tmp_path, "HttpProxy.Port=3128\n").http_proxy_port == 3128


def test_comment_lines_and_lines_without_equals_are_ignored(tmp_path: Path) -> None:
    cfg = read(tmp_path, "#Lib.Dir=/commented\nLib.Dir /no/equals\n[section]\nOS.SshDir=/ok\n")
    assert cfg.lib_dir == "/var/lib/waagent"
    assert cfg.ssh_dir == "/ok"


def test_an_indented_hash_is_not_a_comment_but_makes_an_unused_key() -> None:
    assert parse_values("  #Lib.Dir=/x\n") == {"#Lib.Dir": "/x"}


def test_key_is_stripped_and_value_keeps_everything_after_the_first_equals(tmp_path: Path) -> None:
    cfg = read(tmp_path, "  ResourceDisk.MountOptions =  a=b=c \n")
    assert cfg.resource_disk_mount_options == "a=b=c"
    assert parse_values("=Value0") == {"": "Value0"}


def test_unknown_keys_are_kept_and_ignored(tmp_path: Path) -> None:
    text = "LBProbeResponder=y\nHome.Dir=/elsewhere\n"
    assert parse_values(text) == {"LBProbeResponder": "y", "Home.Dir": "/elsewhere"}
    assert read(tmp_path, text) == Config()


def test_crlf_line_endings(tmp_path: Path) -> None:
    cfg = read(tmp_path, 'Logs.Verbose=y\nLib.Dir="q"\nOS.SshDir=/etc/ssh\n', newline="\r\n")
    assert cfg.logs_verbose is True
    assert cfg.lib_dir == 'q"'  # the \r stops the quote stripping, as in WALinuxAgent
    assert cfg.ssh_dir == "/etc/ssh"


def test_defaults_that_follow_another_key(tmp_path: Path) -> None:
    cfg = read(tmp_path, "AutoUpdate.Enabled=n\nExtensions.GoalStatePeriod=10\n")
    assert cfg.autoupdate_update_to_latest_version is False
    assert cfg.extensions_initial_goal_state_period == 10
    cfg = read(tmp_path, "AutoUpdate.Enabled=n\nAutoUpdate.UpdateToLatestVersion=y\n")
    assert cfg.autoupdate_update_to_latest_version is True


def test_a_byte_order_mark_hides_the_first_key_and_is_warned_about(
    tmp_path: Path, waprov_log: pytest.LogCaptureFixture
) -> None:
    cfg = read(tmp_path, "\ufeffLogs.Verbose=y\nOS.SshDir=/x\n")
    assert cfg.logs_verbose is False
    assert cfg.ssh_dir == "/x"
    assert "byte order mark" in waprov_log.text


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = read(tmp_path, "Lib.Dir=/x\n")
    with pytest.raises(AttributeError):
        cfg.lib_dir = "/y"  # type: ignore[misc]
    assert cfg.source == os.path.join(str(tmp_path), "waagent.conf")


def test_unknown_keys_are_named_in_verbose_logs(tmp_path: Path, waprov_log: pytest.LogCaptureFixture) -> None:
    read(tmp_path, "Home.Dir=/elsewhere\nOS.HomeDir=/home\n")
    assert "key 'Home.Dir' is not one waprov knows; ignored" in waprov_log.text
    assert "OS.HomeDir" not in waprov_log.text
