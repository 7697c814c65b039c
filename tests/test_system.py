"""System: atomic writes, symlink refusal, modes/owners, redaction, dry-run, no shell."""

from __future__ import annotations

import logging
import os
import shlex
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from waprov.errors import HostError
from waprov.log import Redactor, setup_logging
from waprov.system import System

PASSWORD = "S3cret!pass word'\"$x"


def snapshot(root: Path) -> Dict[str, Tuple[int, int, int, bytes]]:
    """Every path under root with mode, uid, gid and content (or link target)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                data = os.readlink(p).encode()
            elif stat.S_ISREG(st.st_mode):
                data = Path(p).read_bytes()
            else:
                data = b""
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_uid, st.st_gid, data)
    return out


# ---- write ----------------------------------------------------------------------------------


def test_write_replaces_the_file_through_a_rename(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("old")
    with open(target, encoding="utf-8") as reader:  # an open reader keeps the old inode
        old_ino = os.fstat(reader.fileno()).st_ino
        System().write(str(target), "new content")
        assert reader.read() == "old"
    assert target.read_text() == "new content"
    assert os.stat(target).st_ino != old_ino
    assert sorted(os.listdir(tmp_path)) == ["f"]  # no temp file left


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("old content")
    # A file size limit makes the write fail half way (EFBIG), in a separate process.
    code = textwrap.dedent(f"""
        import resource, signal, sys
        sys.path.insert(0, {os.getcwd()!r})
        from waprov.system import System
        from waprov.errors import HostError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            System().write({str(target)!r}, b"x" * 100000)
        except HostError as e:
            print(e)
            sys.exit(3)
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert p.returncode == 3, p.stderr
    assert p.stdout.startswith("cannot write " + str(target) + ": File too large")
    assert target.read_text() == "old content"
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_write_refuses_a_symlink_at_the_destination(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    link = tmp_path / "link"
    link.symlink_to(victim)
    with pytest.raises(HostError, match=r"refusing to write .*link: it is a symbolic link"):
        System().write(str(link), "evil")
    assert victim.read_text() == "keep me"
    assert link.is_symlink()


def test_write_refuses_a_directory(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(HostError, match="not a regular file"):
        System().write(str(tmp_path / "d"), "x")


def test_write_sets_mode_and_owner_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        System().write(str(tmp_path / "a"), b"data", mode=0o644, owner=(1234, 5678))
        os.umask(0)
        System().write(str(tmp_path / "b"), b"data", mode=0o440)
    finally:
        os.umask(old)
    st = os.stat(tmp_path / "a")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o644, 1234, 5678)
    st = os.stat(tmp_path / "b")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o440, 0, 0)


def test_write_changes_mode_of_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("x")
    target.chmod(0o666)
    System().write(str(target), "y", mode=0o600)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600


def test_write_into_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HostError, match=r"cannot write .*/missing/f: No such file or directory"):
        System().write(str(tmp_path / "missing" / "f"), "x")


def test_root_prefix_applies_to_every_path(tmp_path: Path) -> None:
    sysm = System(root=str(tmp_path))
    sysm.makedirs("/etc/ssh", 0o755)
    sysm.write("/etc/ssh/sshd_config", "Port 22\n")
    assert (tmp_path / "etc/ssh/sshd_config").read_text() == "Port 22\n"
    assert sysm.remove("/etc/ssh/sshd_config")
    assert not (tmp_path / "etc/ssh/sshd_config").exists()


# ---- makedirs and remove ---------------------------------------------------------------------


def test_makedirs_gives_every_created_directory_the_mode_and_owner(tmp_path: Path) -> None:
    System().makedirs(str(tmp_path / "home/u/.ssh"), 0o700, owner=(1001, 1002))
    for d in ("home", "home/u", "home/u/.ssh"):
        st = os.stat(tmp_path / d)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o700, 1001, 1002), d


def test_makedirs_fixes_an_existing_directory_and_records_only_changes(tmp_path: Path) -> None:
    d = tmp_path / "ssh"
    d.mkdir(mode=0o755)
    sysm = System()
    sysm.makedirs(str(d), 0o700, owner=(7, 8))
    st = os.stat(d)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o700, 7, 8)
    assert [a.kind for a in sysm.actions] == ["chmod", "chown"]
    again = System()
    again.makedirs(str(d), 0o700, owner=(7, 8))
    assert again.actions == []


def test_makedirs_refuses_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(HostError, match=r"is not a directory \(it is a symbolic link\)"):
        System().makedirs(str(tmp_path / "link"), 0o700)


def test_remove(tmp_path: Path) -> None:
    sysm = System()
    assert sysm.remove(str(tmp_path / "absent")) is False
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    with pytest.raises(HostError, match="is a directory"):
        sysm.remove(str(tmp_path / "d"))
    assert sysm.remove(str(tmp_path / "d"), recursive=True)
    assert not (tmp_path / "d").exists()
    (tmp_path / "target").write_text("t")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    assert sysm.remove(str(tmp_path / "link"))
    assert (tmp_path / "target").read_text() == "t"


# ---- commands --------------------------------------------------------------------------------


def test_commands_are_argv_lists_never_a_shell_string() -> None:
    with pytest.raises(TypeError):
        System().run("echo hi")
    with pytest.raises(TypeError):
        System().query([])
    dry = System(dry_run=True)
    with pytest.raises(TypeError):
        dry.run("rm -rf /tmp/x")
    assert dry.actions == []


def test_run_returns_output_and_raises_on_failure() -> None:
    r = System().run(["sh", "-c", "echo out; echo err >&2"])
    assert (r.rc, r.stdout, r.stderr) == (0, "out\n", "err\n")
    with pytest.raises(HostError, match=r"sh -c 'echo boom >&2; exit 4' failed with exit code 4: boom"):
        System().run(["sh", "-c", "echo boom >&2; exit 4"])
    assert System().run(["false"], check=False).rc == 1


def test_run_feeds_stdin() -> None:
    assert System().run(["cat"], input="via stdin").stdout == "via stdin"


def test_missing_command_and_timeout_are_clear_errors() -> None:
    with pytest.raises(HostError, match="command not found: no-such-command-waprov"):
        System().run(["no-such-command-waprov"])
    with pytest.raises(HostError, match=r"sleep 5 timed out after 0.2s"):
        System().run(["sleep", "5"], timeout=0.2)


def test_secrets_never_reach_the_log_the_plan_or_an_error(tmp_path: Path) -> None:
    log_file = tmp_path / "waprov.log"
    redactor = setup_logging(verbose=True, log_file=str(log_file))
    try:
        sysm = System(redactor=redactor)
        sysm.run(["echo", "hash:" + PASSWORD], secret=[PASSWORD])
        sysm.run(["cat"], input=PASSWORD + "\n")  # stdin: never shown; echoed output redacted
        with pytest.raises(HostError) as err:
            sysm.run(["sh", "-c", 'echo "bad $1" >&2; exit 1', "sh", PASSWORD])
        logging.getLogger("waprov").error("failed: %s", err.value)
        plan = sysm.plan()
    finally:
        setup_logging()
    text = log_file.read_text()
    assert "echo 'hash:<redacted>'" in text
    assert "bad <redacted>" in str(err.value)
    assert f"stdin: {len(PASSWORD) + 1} bytes, not shown" in plan
    for where in (text, plan, str(err.value)):
        assert PASSWORD not in where
        assert "S3cret" not in where


def test_a_secret_passed_only_as_stdin_is_never_logged(tmp_path: Path) -> None:
    log_file = tmp_path / "waprov.log"
    redactor = setup_logging(verbose=True, log_file=str(log_file))
    try:
        System(redactor=redactor).run(["sh", "-c", "cat >/dev/null; echo done"], input=PASSWORD)
    finally:
        setup_logging()
    assert "done" in log_file.read_text()
    assert "S3cret" not in log_file.read_text()


def test_secret_output_is_returned_but_never_logged_or_put_in_an_error(tmp_path: Path) -> None:
    log_file = tmp_path / "waprov.log"
    redactor = setup_logging(verbose=True, log_file=str(log_file))
    key = "-----BEGIN PRIVATE KEY-----MIIEvQIBADANBgkqhkiG9w0"
    try:
        system = System(redactor=redactor)
        res = system.query(["cat"], input=b"\x00\x01" + key.encode(), secret_output=True)
        assert res.raw == b"\x00\x01" + key.encode() and key in res.stdout
        with pytest.raises(HostError) as e:
            system.run(["sh", "-c", "cat; exit 3"], input=key, secret_output=True)
        assert key not in str(e.value) and "exit code 3" in str(e.value)
        assert key not in repr(res)
    finally:
        setup_logging()
    assert "output not shown" in log_file.read_text()
    assert "BEGIN PRIVATE" not in log_file.read_text()


def test_the_runner_is_the_edge_a_fake_replaces() -> None:
    calls = []

    class Runner:
        def __call__(
            self, argv: List[str], data: Optional[bytes], timeout: float, output: Optional[int] = None
        ) -> Tuple[int, bytes, bytes]:
            calls.append((argv, data))
            return 0, b"out", b""

        def which(self, name: str) -> Optional[str]:
            return "/opt/x" if name == "definitely-not-installed" else None

    system = System(runner=Runner())
    res = system.run(["definitely-not-installed", "x"], input="in")
    assert (res.rc, res.stdout) == (0, "out") and calls == [(["definitely-not-installed", "x"], b"in")]
    assert system.has_command("definitely-not-installed") and not system.has_command("sh")


def test_a_started_command_runs_while_the_caller_goes_on(tmp_path: Path) -> None:
    flag, done = tmp_path / "go", tmp_path / "done"
    system = System()
    script = f"while [ ! -e {flag} ]; do sleep 0.01; done; echo made > {done}; echo out; echo err >&2"
    bg = system.start(["sh", "-c", script], timeout=30)
    assert not done.exists()  # it waits for the caller, so start() did not wait for it
    flag.touch()
    res = bg.wait()
    assert (res.rc, res.stdout, res.stderr, done.read_text()) == (0, "out\n", "err\n", "made\n")
    assert system.plan() == f"run    sh -c {shlex.quote(script)}  (in the background)"
    assert system.command_seconds > 0


def test_a_started_command_fails_on_wait_as_run_would() -> None:
    bg = System().start(["sh", "-c", "echo boom >&2; exit 4"])
    with pytest.raises(HostError, match=r"failed with exit code 4: boom"):
        bg.wait()
    assert bg.wait(check=False).rc == 4
    with pytest.raises(HostError, match="command not found: no-such-command-waprov"):
        System().start(["no-such-command-waprov"]).wait()
    with pytest.raises(HostError, match=r"sleep 5 timed out after 0.2s"):
        System().start(["sleep", "5"], timeout=0.2).wait()


def test_a_started_command_in_dry_run_is_planned_not_run(tmp_path: Path) -> None:
    system = System(dry_run=True)
    bg = system.start(["touch", str(tmp_path / "x")])
    assert bg.wait().rc == 0 and not (tmp_path / "x").exists()
    assert system.plan() == f"run    touch {tmp_path / 'x'}  (in the background)"


# ---- dry-run ---------------------------------------------------------------------------------


def test_dry_run_records_every_change_and_performs_none(tmp_path: Path) -> None:
    (tmp_path / "existing").write_text("old")
    (tmp_path / "gone").write_text("stay")
    (tmp_path / "dir").mkdir(mode=0o755)
    before = snapshot(tmp_path)
    sysm = System(dry_run=True, redactor=Redactor([PASSWORD]))
    sysm.write(str(tmp_path / "existing"), "new", mode=0o600)
    sysm.write(str(tmp_path / "fresh"), b"12345", mode=0o440, owner=(5, 6))
    sysm.remove(str(tmp_path / "gone"))
    sysm.makedirs(str(tmp_path / "a/b"), 0o700)
    sysm.makedirs(str(tmp_path / "dir"), 0o700)
    r = sysm.run(["touch", str(tmp_path / "touched")])
    probe = sysm.query(["cat", str(tmp_path / "existing")])
    sysm.run(["usermod", "-p", PASSWORD, "bob"], secret=[PASSWORD])
    assert snapshot(tmp_path) == before
    assert r.rc == 0
    assert probe.stdout == "old"  # read-only probes still run
    t = str(tmp_path)
    assert sysm.plan().splitlines() == [
        f"write  {t}/existing  (3 bytes, mode 0600)",
        f"write  {t}/fresh  (5 bytes, mode 0440, owner 5:6)",
        f"remove {t}/gone",
        f"mkdir  {t}/a  (mode 0700)",
        f"mkdir  {t}/a/b  (mode 0700)",
        f"chmod  {t}/dir  (mode 0700)",
        f"run    touch {t}/touched",
        "run    usermod -p '<redacted>' bob",
    ]


def test_the_real_run_records_the_same_plan_as_the_dry_run(tmp_path: Path) -> None:
    def scenario(sysm: System, root: Path) -> None:
        sysm.makedirs(str(root / "x/y"), 0o750)
        sysm.write(str(root / "x/y/f"), "data", mode=0o600)
        sysm.run(["true"])
        sysm.remove(str(root / "x/y/f"))

    (tmp_path / "dry").mkdir()
    (tmp_path / "real").mkdir()
    dry, real = System(dry_run=True), System()
    scenario(dry, tmp_path / "dry")
    scenario(real, tmp_path / "real")
    assert dry.plan().replace("/dry/", "/real/") == real.plan()


def test_a_directory_at_a_temp_name_does_not_block_a_write(tmp_path: Path) -> None:
    (tmp_path / ".f.waprov-tmp").mkdir()  # the fixed temp name of old, left by anything
    System().write(str(tmp_path / "f"), "x")
    assert (tmp_path / "f").read_text() == "x"
    assert sorted(os.listdir(tmp_path)) == [".f.waprov-tmp", "f"]  # no temp file left behind


def test_output_to_a_file_appends_there_and_does_not_wait_for_what_the_command_left_running(
    tmp_path: Path,
) -> None:
    log = tmp_path / "out.log"
    log.write_text("before\n")
    started = time.monotonic()
    res = System().run(["sh", "-c", "echo to-stdout; echo to-stderr >&2; sleep 30 &"], output=str(log))
    assert time.monotonic() - started < 10  # the background sleep holds no pipe of ours
    assert res.rc == 0 and res.stdout == ""
    assert log.read_text() == "before\nto-stdout\nto-stderr\n"


def test_output_never_follows_a_symlink_and_falls_back_to_dev_null(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("original\n")
    (tmp_path / "out.log").symlink_to(victim)
    res = System().run(["sh", "-c", "echo forged"], output=str(tmp_path / "out.log"))
    assert res.rc == 0 and victim.read_text() == "original\n"
    assert "Cannot append command output to" in caplog.text


@pytest.mark.parametrize("planted", ["another owner", "a hard link"])
def test_output_refuses_a_file_someone_else_planted(
    tmp_path: Path, planted: str, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "out.log"
    if planted == "another owner":
        log.write_text("theirs\n")
        os.chown(log, 104, 104)
        log.chmod(0o644)
    else:
        victim = tmp_path / "victim"
        victim.write_text("original\n")
        os.link(victim, log)
    System().run(["sh", "-c", "echo appended"], output=str(log))
    assert "appended" not in log.read_text()
    assert "Cannot append command output to" in caplog.text


def test_output_to_an_existing_file_of_roots_is_made_0600(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    log.write_text("")
    log.chmod(0o644)
    System().run(["sh", "-c", "echo x"], output=str(log))
    assert (log.read_text(), stat.S_IMODE(log.stat().st_mode)) == ("x\n", 0o600)
