"""The command line: WALinuxAgent's argument forms, -version, -help, exit codes."""

from __future__ import annotations

import platform
import re
import shlex

import pytest

from tests.conftest import run_waprov
from waprov.cli import Args, parse_args
from waprov.errors import UsageError


def os_release() -> dict[str, str]:
    with open("/etc/os-release", encoding="utf-8") as f:
        return {
            k: v[0] if v else ""
            for k, _, rest in (line.partition("=") for line in f if "=" in line)
            for v in [shlex.split(rest)]
        }


@pytest.mark.parametrize("arg", ["-version", "--version", "/version", "version", "-/-version", "-versionX"])
def test_arguments_match_waagent_prefix_forms(arg: str) -> None:
    assert parse_args([arg]).command == "version"


def test_the_last_command_wins_and_flags_combine() -> None:
    assert parse_args(["-version", "-show-configuration", "-verbose"]) == Args(
        command="show-configuration", verbose=True
    )
    assert parse_args(["-show-configuration", "--help"]).command == "help"
    assert parse_args(["-force", "--dry-run", "-?"]) == Args(command="help", force=True, dry_run=True)


def test_configuration_path_takes_the_rest_of_the_argument() -> None:
    assert (
        parse_args(["-configuration-path:/etc/x y.conf", "-show-configuration"]).conf_path == "/etc/x y.conf"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["-frobnicate"], ["-bogus"], ["-v"], [], ["-verbose"], ["-configuration-path:"],
        ["-provision", "-continue"], ["-resourcedisk", "-local", "-continue"],
    ],
)  # fmt: skip
def test_unknown_or_missing_commands_are_usage_errors(args: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_args(args)


def test_continue_goes_with_provision_local() -> None:
    parsed = parse_args(["-provision", "-local", "-continue"])
    assert parsed == Args(command="provision", local=True, continue_=True)


def test_unknown_argument_prints_usage_on_stderr_and_exits_2() -> None:
    p = run_waprov(["-frobnicate"])
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr.startswith("waprov: unknown argument: -frobnicate\nusage: waprov ")


def test_no_argument_is_a_usage_error() -> None:
    p = run_waprov([])
    assert p.returncode == 2
    assert "usage: waprov" in p.stderr


def test_version_names_waprov_the_distro_and_python() -> None:
    p = run_waprov(["-version"])
    assert p.returncode == 0
    rel = os_release()
    assert p.stdout == "waprov-0.1.0 running on {} {}\nPython: {}\n".format(
        rel["ID"], rel["VERSION_ID"], platform.python_version()
    )
    assert p.stderr == ""


def test_help_lists_only_commands_that_work() -> None:
    p = run_waprov(["-help"])
    assert p.returncode == 0
    listed = set(re.findall(r"^  (-[a-z-]+)", p.stdout, re.M))
    flags = {"-configuration-path", "-verbose", "--dry-run", "-force", "--json", "--image", "-local"}
    flags.add("-continue")
    # sandboxes only: they change the host, or (-status) report on this host's state
    host_changing = {
        "-provision",
        "-resourcedisk",
        "-deprovision",
        "-enable",
        "-disable",
        "-status",
        "-doctor",
    }
    assert listed == {"-help", "-version", "-show-configuration", *host_changing, *flags}
    for word in listed - flags - host_changing:
        assert run_waprov([word]).returncode == 0, word
    assert run_waprov(["-verbose", "-version"]).returncode == 0


def test_verbose_logs_debug_lines_to_stderr(tmp_path: pytest.TempPathFactory) -> None:
    conf = f"{tmp_path}/w.conf"
    with open(conf, "w", encoding="utf-8") as f:
        f.write("Lib.Dir=/x\n")
    quiet = run_waprov(["-show-configuration", "-configuration-path:" + conf])
    loud = run_waprov(["-show-configuration", "-configuration-path:" + conf, "-verbose"])
    assert quiet.stderr == ""
    assert re.search(r" VERBOSE configuration read from " + re.escape(conf), loud.stderr)
    assert quiet.stdout == loud.stdout


def test_logs_verbose_in_the_file_turns_on_debug(tmp_path: pytest.TempPathFactory) -> None:
    conf = f"{tmp_path}/w.conf"
    with open(conf, "w", encoding="utf-8") as f:
        f.write("Logs.Verbose=y\n")
    p = run_waprov(["-show-configuration", "-configuration-path:" + conf])
    assert " VERBOSE configuration read from " in p.stderr


def test_output_into_a_closed_pipe_is_not_a_traceback() -> None:
    import os
    import subprocess

    from tests.conftest import waprov_argv

    r, w = os.pipe()
    os.close(r)  # nobody reads: the first write gets EPIPE, as with `| head -0`
    try:
        p = subprocess.run(
            waprov_argv("-show-configuration", "-configuration-path:/dev/null/x", "-help"),
            stdout=w,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    finally:
        os.close(w)
    assert "Traceback" not in p.stderr
    assert "BrokenPipeError" not in p.stderr
