"""System: the only code that changes the host.

Every change (a command, a file write, a removal, a directory) goes through one System
object, which logs it with secrets redacted, records it as an `Action` (the printable
plan) and, unless in dry-run mode, performs it. `query()` runs read-only probes even in
dry-run. Commands are argv lists, never a shell. Writes are atomic (temp file in the same
directory, fsync, rename), refuse a symlink at the destination, and set mode and owner
before the rename (a temp name with a random part, made with O_EXCL). Under a directory
that someone else controls, `open_dir()` works by descriptors instead (helddir.py).
Reads go through it too (`read`, `kind`, `listdir`, `stat`, ...): they see a dry run's
planned state where it has one, and `root` applies to them as to changes.

`root` prefixes every host path: the files System reads and changes, and the command
arguments marked as host paths (`HostPath`); the commands themselves are the running
machine's ("/" in production; a test's or an image's tree otherwise).
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import shlex
import shutil
import stat
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple, Union

from waprov.errors import CommandError, CommandNotFound, HostError
from waprov.hostfile import Owner, Unreadable, mode_owner_text, read_regular
from waprov.log import Redactor

if TYPE_CHECKING:
    from waprov.helddir import HeldDir


class Runner(Protocol):
    """The edge to commands, which a scripted fake replaces in tests: calling it runs one,
    (argv, stdin, timeout[, output]) -> (rc, stdout, stderr); with `output` (a descriptor),
    stdout and stderr go there, nothing is captured, and only the process is waited for
    (not what it leaves running). `which(name)` says where a command it would run is (None:
    not installed)."""

    def __call__(
        self, argv: List[str], data: Optional[bytes], timeout: float, output: Optional[int] = None
    ) -> Tuple[int, bytes, bytes]: ...

    def which(self, name: str) -> Optional[str]: ...


class HostPath(str):
    """A command argument that names a host path: System gives the command the path with
    its root prefix (`before` + the real path), and shows the host path in the plan.
    `HostPath("/mnt/f", "of=")` is the argument `of=/mnt/f`."""

    path: str
    before: str

    def __new__(cls, path: str, before: str = "") -> HostPath:
        arg = super().__new__(cls, before + path)
        arg.path, arg.before = path, before
        return arg


log = logging.getLogger("waprov")

DEFAULT_TIMEOUT = 300.0


@dataclass(frozen=True)
class Action:
    """One change to the host, as it appears in the plan."""

    kind: str  # run, write, remove, mkdir, chmod, chown
    target: str
    detail: str = ""

    def __str__(self) -> str:
        detail = f"  ({self.detail})" if self.detail else ""
        return f"{self.kind:<6} {self.target}{detail}"


@dataclass(frozen=True)
class Result:
    """What a command returned; stdout and stderr are decoded text (not redacted),
    `raw` the undecoded stdout (binary output such as a PFX)."""

    argv: Tuple[str, ...] = field(repr=False)  # may hold a secret (a hash)
    rc: int
    stdout: str = field(repr=False)
    stderr: str
    raw: bytes = field(default=b"", repr=False)


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(line for line in text.strip().splitlines()[-lines:])


class System:
    """See the module docstring. One per run, used from one thread: only the runner call
    of a start()ed command happens on a thread of its own."""

    def __init__(
        self,
        *,
        dry_run: bool = False,
        root: str = "/",
        redactor: Optional[Redactor] = None,
        env: Optional[Dict[str, str]] = None,
        runner: Optional[Runner] = None,
    ) -> None:
        self.dry_run = dry_run
        self.runner: Runner = runner or SubprocessRunner(env)
        self.root = root
        self.redactor = redactor or Redactor()
        self.env = env
        self.actions: List[Action] = []
        self.command_seconds = 0.0  # time spent waiting for commands (`make bench`'s floor)
        # dry-run only: what the skipped changes would have left ("file", "dir", "absent"),
        # so that later decisions in the same run see them and the plan equals a real run.
        self._planned: Dict[str, str] = {}

    # ---- paths and the plan -------------------------------------------------------------

    def path(self, path: str) -> str:
        """The real path of an absolute host path (with the root prefix applied)."""
        if not os.path.isabs(path):
            raise HostError(f"not an absolute path: {path}")
        if self.root in ("", "/"):
            return path
        return os.path.join(self.root, path.lstrip("/"))

    def plan(self) -> str:
        """The recorded actions, one per line (the dry-run output)."""
        return "\n".join(str(a) for a in self.actions)

    def _kind(self, path: str) -> str:
        """ "file", "dir", "link", "other" or "absent", as this run has left `path` so far."""
        if self.dry_run:
            cur = path
            while True:
                state = self._planned.get(cur)
                if state == "absent" or (state is not None and cur == path):
                    return state
                if cur == os.path.dirname(cur):
                    break
                cur = os.path.dirname(cur)
        try:
            st = os.lstat(self.path(path))
        except FileNotFoundError:
            return "absent"
        except OSError as e:
            raise HostError(f"cannot inspect {path}: {e.strerror}") from None
        if stat.S_ISLNK(st.st_mode):
            return "link"
        if stat.S_ISDIR(st.st_mode):
            return "dir"
        return "file" if stat.S_ISREG(st.st_mode) else "other"

    def kind(self, path: str) -> str:
        """ "file", "dir", "link", "other" or "absent", as this run has left `path` so far."""
        return self._kind(path)

    def read(self, path: str, limit: int = 16 << 20, *, follow: bool = False) -> Optional[bytes]:
        """The bytes of a regular file (never opened as a FIFO or a device; not followed
        through a final symlink unless `follow`), None when absent; Unreadable (a
        HostError) when it is something else, unreadable or over `limit`."""
        if follow:
            path = self.realpath(path)
        kind = self._kind(path)
        if kind == "absent":
            return None
        if self.dry_run and self._planned.get(path) == "file" and not os.path.lexists(self.path(path)):
            return b""  # written earlier in this dry run; its content was not kept
        if kind != "file":
            raise Unreadable(
                path, "is a symbolic link" if kind == "link" else "is not a regular file", refused=True
            )
        return read_regular(self.path(path), path, limit)

    def _host(self, real: str) -> str:
        """The host path of a real path under the root (the inverse of `path`)."""
        if self.root in ("", "/"):
            return real
        prefix = self.path("/")
        return "/" + real[len(prefix) :] if (real + "/").startswith(prefix) else real

    def glob(self, pattern: str) -> List[str]:
        """The host paths matching an absolute glob pattern, sorted (read-only)."""
        return [self._host(m) for m in sorted(glob.glob(self.path(pattern)))]

    def mode_owner(self, path: str) -> Optional[Tuple[int, Owner]]:
        """(permission bits, (uid, gid)) of `path` (followed through symlinks), None when
        absent: what a rewrite that keeps a file's mode and owner passes to write()."""
        try:
            st = os.stat(self.path(path))
        except FileNotFoundError:
            return None
        except OSError as e:
            raise HostError(f"cannot inspect {path}: {e.strerror}") from None
        return stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid)

    def size(self, path: str) -> Optional[int]:
        """The size of a regular file (not followed through a final symlink), None when
        absent; HostError when it is something else."""
        kind = self._kind(path)
        if kind == "absent":
            return None
        if kind != "file":
            raise HostError(f"{path} is not a regular file")
        try:
            return os.lstat(self.path(path)).st_size
        except OSError as e:
            raise HostError(f"cannot inspect {path}: {e.strerror}") from None

    def listdir(self, path: str) -> List[str]:
        """The names in the directory `path`, in the order the directory gives them (not
        sorted), as the host has it (a dry run's plan is not applied); HostError when it
        cannot be listed."""
        try:
            return os.listdir(self.path(path))
        except OSError as e:
            raise HostError(f"cannot list {path}: {e.strerror}") from None

    def walk(self, top: str) -> Iterator[Tuple[str, List[str], List[str]]]:
        """os.walk() of the directory `top` (top-down, symbolic links to directories not
        entered), with host paths; sorting `dirs` in place orders the descent."""
        for real, dirs, files in os.walk(self.path(top)):
            yield self._host(real), dirs, files

    def stat(self, path: str) -> Optional[os.stat_result]:
        """os.stat() of `path`, followed through symbolic links, as the host has it; None
        when it does not exist or cannot be inspected (as os.path.exists says False)."""
        try:
            return os.stat(self.path(path))
        except (OSError, ValueError):
            return None

    def realpath(self, path: str) -> str:
        """`path` with every symbolic link resolved, as a host path (os.path.realpath under
        the root; a link that leads out of the root gives the real path it leads to)."""
        real = os.path.realpath(self.path(path))
        if self.root in ("", "/"):
            return real
        top = os.path.realpath(self.path("/"))
        return "/" + real[len(top) :].lstrip("/") if (real + "/").startswith(top + "/") else real

    def which(self, name: str) -> Optional[str]:
        """Where the command `name` (a name on PATH, or a path) is installed, None when it
        is not: a read-only probe of the command edge (the runner says what it would run)."""
        return self.runner.which(name)

    def has_command(self, name: str) -> bool:
        """Whether `name` is an installed command (see `which`)."""
        return self.which(name) is not None

    def note(self, kind: str, target: str, detail: str = "") -> None:
        """Record in the plan a change made elsewhere: outside the host (a health report)
        or by descriptor (helddir.py)."""
        self._record(kind, target, detail)

    def _record(self, kind: str, target: str, detail: str = "") -> None:
        action = Action(kind, self.redactor.redact(target), self.redactor.redact(detail))
        self.actions.append(action)
        log.debug("%s%s", "(dry-run) " if self.dry_run else "", action)

    # ---- commands -----------------------------------------------------------------------

    def real_argv(self, argv: Sequence[str]) -> List[str]:
        """The argv a command gets: every `HostPath` with the root prefix applied."""
        return [a.before + self.path(a.path) if isinstance(a, HostPath) else str(a) for a in argv]

    def _show(self, argv: Sequence[str]) -> str:
        if isinstance(argv, (str, bytes)) or not argv or not all(isinstance(a, str) for a in argv):
            raise TypeError("System commands are non-empty lists of str, never a shell string")
        return " ".join(shlex.quote(a) for a in self.redactor.redact_argv(argv))

    def _call(
        self, argv: Sequence[str], data: Optional[bytes], timeout: float, output: Optional[int] = None
    ) -> Tuple[int, bytes, bytes]:
        """The runner, with its failures as our errors (safe to call from another thread)."""
        try:
            return self.runner(self.real_argv(argv), data, timeout, output)
        except FileNotFoundError:
            raise CommandNotFound(f"command not found: {self.redactor.redact(argv[0])}") from None
        except PermissionError:
            raise CommandNotFound(f"command not executable: {self.redactor.redact(argv[0])}") from None
        except subprocess.TimeoutExpired:
            raise HostError(f"{self._show(argv)} timed out after {timeout:g}s") from None

    def _result(
        self, argv: Sequence[str], output: Tuple[int, bytes, bytes], check: bool, secret_output: bool
    ) -> Result:
        rc, out, err = output
        shown = self._show(argv)
        res = Result(tuple(argv), rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), out)
        if secret_output:
            log.debug("%s -> rc=%d (output not shown)", shown, res.rc)
        elif res.stdout.strip() or res.stderr.strip():
            log.debug(
                "%s -> rc=%d out=%s err=%s",
                shown,
                res.rc,
                self.redactor.redact(_tail(res.stdout)),
                self.redactor.redact(_tail(res.stderr)),
            )
        if check and res.rc != 0:
            said = self.redactor.redact(
                _tail(res.stderr) or ("" if secret_output else _tail(res.stdout)) or "no output"
            )
            raise CommandError(f"{shown} failed with exit code {res.rc}: {said}", shown, res.rc, said)
        return res

    def _exec(
        self,
        argv: Sequence[str],
        input: Union[str, bytes, None],
        timeout: float,
        check: bool,
        secret_output: bool = False,
        output: Optional[int] = None,
    ) -> Result:
        data = input.encode("utf-8") if isinstance(input, str) else input
        started = time.monotonic()
        try:
            result = self._call(argv, data, timeout, output)
        finally:
            self.command_seconds += time.monotonic() - started
        return self._result(argv, result, check, secret_output)

    def run(
        self,
        argv: Sequence[str],
        *,
        input: Union[str, bytes, None] = None,
        secret: Sequence[str] = (),
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        secret_output: bool = False,
        output: Optional[str] = None,
    ) -> Result:
        """Run a command that changes the host. `secret` strings are redacted everywhere
        (log, plan, errors) from then on; `input` (stdin) is never shown, nor stdout
        with `secret_output`. `output`: a file the command's stdout and stderr are
        appended to instead of being captured (opened here: O_NOFOLLOW, made 0600; when
        it cannot be opened, /dev/null and a warning); waprov then waits for the command
        itself, not for what it leaves running in the background."""
        for s in secret:
            self.redactor.add(s)
        detail = f"stdin: {len(input)} bytes, not shown" if input is not None else ""
        if output is not None:
            detail = ", ".join(filter(None, [detail, f"output appended to {output}"]))
        self._record("run", self._show(argv), detail)
        if self.dry_run:
            return Result(tuple(argv), 0, "", "")
        if output is None:
            return self._exec(argv, input, timeout, check, secret_output)
        fd = self._open_output(output)
        try:
            return self._exec(argv, input, timeout, check, secret_output, fd)
        finally:
            os.close(fd)

    def _open_output(self, path: str) -> int:
        """`path` opened for appending, made 0600: a regular file of root's with one link
        (else /dev/null, with a warning: a file someone else planted gets nothing)."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = -1
        try:
            fd = os.open(self.path(path), flags, 0o600)
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
                raise HostError("it is not a regular file of this user's with one link")
            os.fchmod(fd, 0o600)
            os.set_blocking(fd, True)
            return fd
        except (OSError, HostError) as e:
            if fd >= 0:
                os.close(fd)
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            log.warning("Cannot append command output to %s (%s): it goes to /dev/null", path, why)
            return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)

    def start(self, argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT) -> Background:
        """Start a command that changes the host and return at once; `wait()` on the
        handle gives what `run()` would have (and raises as it would). The plan shows the
        command here, where it began. No stdin and no secrets: a background command is a
        plain one that takes long (ssh-keygen)."""
        self._record("run", self._show(argv), "in the background")
        return Background(self, argv, timeout, dry_run=self.dry_run)

    def query(
        self,
        argv: Sequence[str],
        *,
        input: Union[str, bytes, None] = None,
        timeout: float = 60.0,
        check: bool = False,
        secret_output: bool = False,
    ) -> Result:
        """Run a read-only probe; runs in dry-run too and is not part of the plan.
        `input` is never shown, nor stdout with `secret_output`."""
        log.debug("query: %s", self._show(argv))
        return self._exec(argv, input, timeout, check, secret_output)

    # ---- files --------------------------------------------------------------------------

    def write(
        self, path: str, data: Union[str, bytes], mode: int = 0o644, owner: Optional[Owner] = None
    ) -> None:
        """Atomically replace `path` with `data`; the content is never logged."""
        raw = data.encode("utf-8") if isinstance(data, str) else data
        kind = self._kind(path)
        if kind == "link":
            raise HostError(f"refusing to write {path}: it is a symbolic link")
        if kind not in ("file", "absent"):
            raise HostError(f"refusing to write {path}: it exists and is not a regular file")
        self._record("write", path, f"{len(raw)} bytes, {mode_owner_text(mode, owner)}")
        if self.dry_run:
            self._planned[path] = "file"
            return
        from waprov.helddir import replace_at

        real = self.path(path)
        try:  # the parent is root's (callers under a user's directory use open_dir)
            dfd = os.open(os.path.dirname(real), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise HostError(f"cannot write {path}: {e.strerror}") from None
        try:
            replace_at(dfd, os.path.basename(real), path, raw, mode, owner)
        finally:
            os.close(dfd)

    def remove(self, path: str, *, recursive: bool = False) -> bool:
        """Remove a file or symlink (a directory only with `recursive`); absent is fine.
        Returns whether something was there."""
        kind = self._kind(path)
        if kind == "absent":
            return False
        if kind == "dir" and not recursive:
            raise HostError(f"refusing to remove {path}: it is a directory")
        self._record("remove", path, "directory tree" if kind == "dir" else "")
        if self.dry_run:
            self._planned = {p: k for p, k in self._planned.items() if not p.startswith(path + "/")}
            self._planned[path] = "absent"
            return True
        real = self.path(path)
        try:
            if kind == "dir":
                shutil.rmtree(real)
            else:
                os.unlink(real)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise HostError(f"cannot remove {path}: {e.strerror}") from None
        return True

    def readlink(self, path: str) -> Optional[str]:
        """The target text of the symlink `path`; None when `path` is not a symlink."""
        if self._kind(path) != "link":
            return None
        try:
            return os.readlink(self.path(path))
        except OSError as e:
            raise HostError(f"cannot read the symbolic link {path}: {e.strerror}") from None

    def symlink(self, path: str, target: str) -> None:
        """Create the symbolic link `path` -> `target` (the text, kept as given); `path`
        must not exist."""
        if self._kind(path) != "absent":
            raise HostError(f"refusing to create the symbolic link {path}: it exists")
        self._record("symlink", path, f"-> {target}")
        if self.dry_run:
            self._planned[path] = "link"
            return
        try:
            os.symlink(target, self.path(path))
        except OSError as e:
            raise HostError(f"cannot create the symbolic link {path}: {e.strerror}") from None

    def makedirs(self, path: str, mode: int = 0o755, owner: Optional[Owner] = None) -> None:
        """Ensure `path` is a directory with `mode` (and `owner`); missing parents are
        created with the same mode and owner. Changes are recorded only when made."""
        missing = []
        cur = path
        while self._kind(cur) == "absent":
            missing.append(cur)
            cur = os.path.dirname(cur)
        for logical in reversed(missing):
            self._record("mkdir", logical, mode_owner_text(mode, owner))
            if self.dry_run:
                self._planned[logical] = "dir"
                continue
            try:
                os.mkdir(self.path(logical), mode)
            except FileExistsError:
                pass
            except OSError as e:
                raise HostError(f"cannot create {logical}: {e.strerror}") from None
            self._setmode_owner_text(logical, mode, owner)
        if missing:
            return
        kind = self._kind(path)
        if kind != "dir":
            raise HostError(
                "{} exists and is not a directory{}".format(
                    path, " (it is a symbolic link)" if kind == "link" else ""
                )
            )
        if path in self._planned:  # created earlier in this dry run, with its mode
            return
        self.chmod(path, mode)
        st = os.lstat(self.path(path))
        if owner is not None and (st.st_uid, st.st_gid) != owner:
            self._record("chown", path, "owner {}:{}".format(*owner))
            if not self.dry_run:
                self._setmode_owner_text(path, None, owner)

    def open_dir(
        self,
        top: str,
        parts: Sequence[str],
        *,
        mode: int,
        owner: Optional[Owner] = None,
        top_uid: Optional[int] = None,
    ) -> HeldDir:
        """The directory `top`/`parts`, walked and held by descriptors (helddir.py): for
        changes under a tree that someone else controls, such as a user's home."""
        from waprov.helddir import open_dir

        return open_dir(self, top, parts, mode=mode, owner=owner, top_uid=top_uid)

    def chmod(self, path: str, mode: int) -> None:
        """Set the permission bits of an existing file or directory (never through a
        final symlink); recorded only when they change."""
        kind = self._kind(path)
        if kind in ("absent", "link"):
            what = "a symbolic link" if kind == "link" else "missing"
            raise HostError(f"cannot change the mode of {path}: it is {what}")
        if path in self._planned:  # created earlier in this dry run, with its mode
            return
        if stat.S_IMODE(os.lstat(self.path(path)).st_mode) == mode:
            return
        self._record("chmod", path, f"mode {mode:04o}")
        if not self.dry_run:
            self._setmode_owner_text(path, mode, None)

    def _setmode_owner_text(self, path: str, mode: Optional[int], owner: Optional[Owner]) -> None:
        real = self.path(path)
        try:
            if owner is not None:
                os.chown(real, owner[0], owner[1], follow_symlinks=False)
            if mode is not None:
                os.chmod(real, mode)  # explicit: mkdir's mode is masked by the umask
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise HostError(f"{path} vanished while being set up") from None
            raise HostError(f"cannot set mode/owner of {path}: {e.strerror}") from None


class Background:
    """A command System.start() began; one thread runs it, `wait()` collects it once."""

    def __init__(self, system: System, argv: Sequence[str], timeout: float, *, dry_run: bool) -> None:
        self._system, self.argv = system, tuple(argv)
        self._output: Optional[Tuple[int, bytes, bytes]] = (0, b"", b"") if dry_run else None
        self._error: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None
        if not dry_run:
            self._thread = threading.Thread(target=self._work, args=(timeout,), name="waprov-bg", daemon=True)
            self._thread.start()

    def _work(self, timeout: float) -> None:
        try:
            self._output = self._system._call(self.argv, None, timeout)
        except BaseException as e:  # handed to the waiting thread
            self._error = e

    def wait(self, *, check: bool = True) -> Result:
        """Block until the command ends (the time blocked counts as command time), then
        what run() would have returned or raised."""
        if self._thread is not None:
            started = time.monotonic()
            self._thread.join()
            self._thread = None
            self._system.command_seconds += time.monotonic() - started
        if self._error is not None:
            raise self._error
        if self._output is None:  # the thread ended without a word: cannot happen
            raise HostError(f"{self._system._show(self.argv)} ended without a result")
        return self._system._result(self.argv, self._output, check, False)


class SubprocessRunner:
    """The real command edge: subprocess, and shutil.which for what is installed."""

    def __init__(self, env: Optional[Dict[str, str]] = None) -> None:
        self.env = env

    def which(self, name: str) -> Optional[str]:
        return shutil.which(name, path=None if self.env is None else self.env.get("PATH", os.defpath))

    def __call__(
        self, argv: List[str], data: Optional[bytes], timeout: float, output: Optional[int] = None
    ) -> Tuple[int, bytes, bytes]:
        env = self.env
        if output is not None:  # no pipes: a process left behind cannot hold the run
            done = subprocess.run(
                argv, input=data, stdout=output, stderr=output, timeout=timeout, env=env,
                stdin=None if data is not None else subprocess.DEVNULL,
            )  # fmt: skip
            return done.returncode, b"", b""
        proc = subprocess.run(
            argv,
            input=data,
            capture_output=True,
            timeout=timeout,
            env=env,
            stdin=None if data is not None else subprocess.DEVNULL,
        )
        return proc.returncode, proc.stdout, proc.stderr
