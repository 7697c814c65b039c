"""System: the only code that changes the host.

Every change (a command, a file write, a removal, a directory) goes through one System
object, which logs it with secrets redacted, records it as an `Action` (the printable
plan) and, unless in dry-run mode, performs it. `query()` runs read-only probes even in
dry-run. Commands are argv lists, never a shell. Writes are atomic (temp file in the same
directory, fsync, rename), refuse a symlink at the destination, and set mode and owner
before the rename. `root` prefixes every path (tests; "/" in production).
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
import shutil
import stat
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

from waprov.errors import HostError
from waprov.log import Redactor

Owner = Tuple[int, int]
log = logging.getLogger("waprov")

DEFAULT_TIMEOUT = 300.0


@dataclass(frozen=True)
class Action:
    """One change to the host, as it appears in the plan."""

    kind: str  # run, write, remove, mkdir, chmod, chown
    target: str
    detail: str = ""

    def __str__(self) -> str:
        return "{0:<6} {1}{2}".format(self.kind, self.target, "  (" + self.detail + ")" if self.detail else "")


@dataclass(frozen=True)
class Result:
    """What a command returned; stdout and stderr are decoded text (not redacted)."""

    argv: Tuple[str, ...]
    rc: int
    stdout: str
    stderr: str


def _mode_owner(mode: Optional[int], owner: Optional[Owner]) -> str:
    parts = []
    if mode is not None:
        parts.append("mode {0:04o}".format(mode))
    if owner is not None:
        parts.append("owner {0}:{1}".format(*owner))
    return ", ".join(parts)


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(line for line in text.strip().splitlines()[-lines:])


class System:
    """See the module docstring. Not thread-safe; one per run."""

    def __init__(self, *, dry_run: bool = False, root: str = "/",
                 redactor: Optional[Redactor] = None, env: Optional[Dict[str, str]] = None) -> None:
        self.dry_run = dry_run
        self.root = root
        self.redactor = redactor or Redactor()
        self.env = env
        self.actions: List[Action] = []

    # ---- paths and the plan -------------------------------------------------------------

    def path(self, path: str) -> str:
        """The real path of an absolute host path (with the root prefix applied)."""
        if not os.path.isabs(path):
            raise HostError("not an absolute path: {0}".format(path))
        if self.root in ("", "/"):
            return path
        return os.path.join(self.root, path.lstrip("/"))

    def plan(self) -> str:
        """The recorded actions, one per line (the dry-run output)."""
        return "\n".join(str(a) for a in self.actions)

    def _record(self, kind: str, target: str, detail: str = "") -> None:
        action = Action(kind, self.redactor.redact(target), self.redactor.redact(detail))
        self.actions.append(action)
        log.debug("%s%s", "(dry-run) " if self.dry_run else "", action)

    # ---- commands -----------------------------------------------------------------------

    def _show(self, argv: Sequence[str]) -> str:
        return " ".join(shlex.quote(a) for a in self.redactor.redact_argv(argv))

    def _exec(self, argv: Sequence[str], input: Union[str, bytes, None], timeout: float,
              check: bool) -> Result:
        if isinstance(argv, (str, bytes)) or not argv or not all(isinstance(a, str) for a in argv):
            raise TypeError("System commands are non-empty lists of str, never a shell string")
        data = input.encode("utf-8") if isinstance(input, str) else input
        shown = self._show(argv)
        try:
            proc = subprocess.run(list(argv), input=data, capture_output=True, timeout=timeout,
                                  env=self.env, stdin=None if data is not None else subprocess.DEVNULL)
        except FileNotFoundError:
            raise HostError("command not found: {0}".format(self.redactor.redact(argv[0]))) from None
        except PermissionError:
            raise HostError("command not executable: {0}".format(self.redactor.redact(argv[0]))) from None
        except subprocess.TimeoutExpired:
            raise HostError("{0} timed out after {1:g}s".format(shown, timeout)) from None
        res = Result(tuple(argv), proc.returncode,
                     proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))
        if res.stdout.strip() or res.stderr.strip():
            log.debug("%s -> rc=%d out=%s err=%s", shown, res.rc,
                      self.redactor.redact(_tail(res.stdout)), self.redactor.redact(_tail(res.stderr)))
        if check and res.rc != 0:
            out = _tail(res.stderr) or _tail(res.stdout) or "no output"
            raise HostError("{0} failed with exit code {1}: {2}".format(
                shown, res.rc, self.redactor.redact(out)))
        return res

    def run(self, argv: Sequence[str], *, input: Union[str, bytes, None] = None,
            secret: Sequence[str] = (), timeout: float = DEFAULT_TIMEOUT, check: bool = True) -> Result:
        """Run a command that changes the host. `secret` strings are redacted everywhere
        (log, plan, errors) from then on; `input` (stdin) is never shown."""
        for s in secret:
            self.redactor.add(s)
        detail = "stdin: {0} bytes, not shown".format(len(input)) if input is not None else ""
        self._record("run", self._show(argv), detail)
        if self.dry_run:
            return Result(tuple(argv), 0, "", "")
        return self._exec(argv, input, timeout, check)

    def query(self, argv: Sequence[str], *, timeout: float = 60.0, check: bool = False) -> Result:
        """Run a read-only probe; runs in dry-run too and is not part of the plan."""
        log.debug("query: %s", self._show(argv))
        return self._exec(argv, None, timeout, check)

    # ---- files --------------------------------------------------------------------------

    def write(self, path: str, data: Union[str, bytes], mode: int = 0o644,
              owner: Optional[Owner] = None) -> None:
        """Atomically replace `path` with `data`; the content is never logged."""
        raw = data.encode("utf-8") if isinstance(data, str) else data
        self._record("write", path, "{0} bytes, {1}".format(len(raw), _mode_owner(mode, owner)))
        if self.dry_run:
            return
        real = self.path(path)
        try:
            st: Optional[os.stat_result] = os.lstat(real)
        except FileNotFoundError:
            st = None
        except OSError as e:
            raise HostError("cannot write {0}: {1}".format(path, e.strerror)) from None
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise HostError("refusing to write {0}: it is a symbolic link".format(path))
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise HostError("refusing to write {0}: it exists and is not a regular file".format(path))
        parent = os.path.dirname(real)
        tmp = os.path.join(parent, ".{0}.waprov-tmp".format(os.path.basename(real)))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:  # left by a crash: it is ours, replace it
            os.unlink(tmp)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise HostError("cannot write {0}: {1}".format(path, e.strerror)) from None
        try:
            try:
                if owner is not None:
                    os.fchown(fd, owner[0], owner[1])
                os.fchmod(fd, mode)  # after chown, which may clear set-id bits
                view = memoryview(raw)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, real)
        except OSError as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise HostError("cannot write {0}: {1}".format(path, e.strerror)) from None
        self._fsync_dir(parent)

    @staticmethod
    def _fsync_dir(path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def remove(self, path: str, *, recursive: bool = False) -> bool:
        """Remove a file or symlink (a directory only with `recursive`); absent is fine.
        Returns whether something was there."""
        real = self.path(path)
        try:
            st = os.lstat(real)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise HostError("cannot remove {0}: {1}".format(path, e.strerror)) from None
        is_dir = stat.S_ISDIR(st.st_mode)
        if is_dir and not recursive:
            raise HostError("refusing to remove {0}: it is a directory".format(path))
        self._record("remove", path, "directory tree" if is_dir else "")
        if self.dry_run:
            return True
        try:
            if is_dir:
                shutil.rmtree(real)
            else:
                os.unlink(real)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise HostError("cannot remove {0}: {1}".format(path, e.strerror)) from None
        return True

    def makedirs(self, path: str, mode: int = 0o755, owner: Optional[Owner] = None) -> None:
        """Ensure `path` is a directory with `mode` (and `owner`); missing parents are
        created with the same mode and owner. Changes are recorded only when made."""
        real = self.path(path)
        missing = []
        cur_real, cur = real, path
        while not os.path.lexists(cur_real):
            missing.append((cur, cur_real))
            cur_real, cur = os.path.dirname(cur_real), os.path.dirname(cur)
        for logical, target in reversed(missing):
            self._record("mkdir", logical, _mode_owner(mode, owner))
            if not self.dry_run:
                try:
                    os.mkdir(target, mode)
                except FileExistsError:
                    pass
                except OSError as e:
                    raise HostError("cannot create {0}: {1}".format(logical, e.strerror)) from None
                self._set_mode_owner(logical, target, mode, owner)
        if missing:
            return
        try:
            st = os.lstat(real)
        except OSError as e:
            raise HostError("cannot inspect {0}: {1}".format(path, e.strerror)) from None
        if not stat.S_ISDIR(st.st_mode):
            raise HostError("{0} exists and is not a directory{1}".format(
                path, " (it is a symbolic link)" if stat.S_ISLNK(st.st_mode) else ""))
        if stat.S_IMODE(st.st_mode) != mode:
            self._record("chmod", path, "mode {0:04o}".format(mode))
            if not self.dry_run:
                self._set_mode_owner(path, real, mode, None)
        if owner is not None and (st.st_uid, st.st_gid) != owner:
            self._record("chown", path, "owner {0}:{1}".format(*owner))
            if not self.dry_run:
                self._set_mode_owner(path, real, None, owner)

    @staticmethod
    def _set_mode_owner(logical: str, real: str, mode: Optional[int], owner: Optional[Owner]) -> None:
        try:
            if owner is not None:
                os.chown(real, owner[0], owner[1], follow_symlinks=False)
            if mode is not None:
                os.chmod(real, mode)  # explicit: mkdir's mode is masked by the umask
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise HostError("{0} vanished while being set up".format(logical)) from None
            raise HostError("cannot set mode/owner of {0}: {1}".format(logical, e.strerror)) from None
