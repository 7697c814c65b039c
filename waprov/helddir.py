"""Changes under a directory tree that someone else controls (a user's home), by descriptor.

`System.open_dir(top, parts, ...)` opens `top` (its last component not followed) and walks
`parts` below it with `openat(O_NOFOLLOW | O_DIRECTORY)`, creating what is missing; mode
and owner are set with `fchmod`/`fchown` on the held descriptors. A `HeldDir` then reads
and replaces files *in that directory* only: a file is read through `openat(O_NOFOLLOW |
O_NONBLOCK)` and must be a regular file with one link; a write goes to a temp name made
with `O_EXCL` and a random part, is labelled, chowned and chmodded on its descriptor, and
renamed within the held directory. No path is resolved twice, so swapping a directory for
a symbolic link (or a hard link to a root-only file) while waprov works gains nothing.
In dry-run the checks also run by path and the changes are only recorded (System); files
are still read by descriptor, the same way. This is System's own code (the one other
place that opens host files), reached through `System.open_dir`.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from typing import Optional, Protocol, Sequence, Tuple, Union

from waprov.errors import HostError
from waprov.hostfile import Owner, mode_owner_text, read_regular


class System(Protocol):
    """What of waprov.system.System this module uses (it is System's own code, reached
    through System.open_dir: naming System here would close an import circle)."""

    dry_run: bool

    def path(self, path: str) -> str: ...
    def kind(self, path: str) -> str: ...
    def note(self, kind: str, target: str, detail: str = "") -> None: ...
    def mode_owner(self, path: str) -> Optional[Tuple[int, Owner]]: ...
    def makedirs(self, path: str, mode: int = 0o755, owner: Optional[Owner] = None) -> None: ...
    def write(
        self, path: str, data: Union[str, bytes], mode: int = 0o644, owner: Optional[Owner] = None
    ) -> None: ...


log = logging.getLogger("waprov")
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
SELINUX_XATTR = "security.selinux"


def _why(e: OSError, dir_fd: Optional[int] = None, name: str = "") -> str:
    """Why an open with O_NOFOLLOW | O_DIRECTORY failed (a symbolic link gives ENOTDIR)."""
    if e.errno in (errno.ELOOP, errno.EMLINK, errno.ENOTDIR) and dir_fd is not None:
        try:
            if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                return "it is a symbolic link"
        except OSError:
            pass
    if e.errno in (errno.ELOOP, errno.EMLINK):
        return "it is a symbolic link"
    if e.errno == errno.ENOTDIR:
        return "it is not a directory"
    return e.strerror or str(e)


class HeldDir:
    """One directory, held open (a descriptor) for the reads and writes in it; close it
    (or use `with`). `path` is its host path, for messages and the plan."""

    def __init__(self, system: System, path: str, fd: Optional[int]) -> None:
        self.system, self.path, self._fd = system, path, fd

    def __enter__(self) -> HeldDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _name(self, name: str) -> str:
        if not name or "/" in name or name in (".", ".."):
            raise HostError(f"not a file name: {name!r}")
        return os.path.join(self.path, name)

    def read(self, name: str, limit: int = 16 << 20) -> Optional[bytes]:
        """The bytes of the regular file `name` here, None when absent; HostError when it
        is a symbolic link, not a regular file, has more than one link, or is over `limit`."""
        path = self._name(name)
        if self._fd is None:  # a dry run, and the directory is not there yet
            return None
        return read_regular(name, path, limit, dir_fd=self._fd, one_link=True)

    def write(
        self,
        name: str,
        data: bytes,
        mode: int,
        owner: Optional[Owner] = None,
        *,
        label: Optional[str] = None,
    ) -> None:
        """Replace `name` here with `data` (mode, owner, and an SELinux `label` set on the
        new file before it takes the name); the content is never logged."""
        path = self._name(name)
        detail = f"{len(data)} bytes, {mode_owner_text(mode, owner)}"
        if self.system.dry_run or self._fd is None:  # System records it, with its own checks
            self.system.write(path, data, mode, owner)
            if label:
                self.system.note("label", path, label)
            return
        dfd = self._fd
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        except OSError as e:
            raise HostError(f"cannot write {path}: {e.strerror}") from None
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise HostError(f"refusing to write {path}: it is a symbolic link")
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise HostError(f"refusing to write {path}: it exists and is not a regular file")
        self.system.note("write", path, detail)
        if label:
            self.system.note("label", path, label)
        replace_at(self._fd, name, path, data, mode, owner, label)


def replace_at(
    dfd: int,
    name: str,
    path: str,
    data: bytes,
    mode: int,
    owner: Optional[Owner],
    label: Optional[str] = None,
) -> None:
    """Replace `name` in the directory `dfd` (shown as `path`) atomically: a temp name with
    a random part made with O_EXCL (nothing left at a fixed name can block it), owner, mode
    and SELinux `label` set on its descriptor, fsync, rename within `dfd`, fsync of `dfd`."""
    tmp = f".{name}.waprov-{os.urandom(8).hex()}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600, dir_fd=dfd)
    except OSError as e:
        raise HostError(f"cannot write {path}: {e.strerror}") from None
    try:
        try:
            if owner is not None:
                os.fchown(fd, owner[0], owner[1])
            os.fchmod(fd, mode)  # after chown, which may clear set-id bits
            if label:
                try:
                    os.setxattr(fd, SELINUX_XATTR, label.encode("ascii") + b"\0")
                except OSError as e:  # as a failed chcon in WALinuxAgent: the file is still written
                    log.warning("Labelling %s for SELinux failed: %s", path, e.strerror)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError as e:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        raise HostError(f"cannot write {path}: {e.strerror}") from None
    try:
        os.fsync(dfd)
    except OSError:
        pass


def open_dir(
    system: System,
    top: str,
    parts: Sequence[str],
    *,
    mode: int,
    owner: Optional[Owner],
    top_uid: Optional[int] = None,
) -> HeldDir:
    """See the module docstring. `top` must be a directory (not a symbolic link), owned by
    `top_uid` when given; `parts` are single names below it. Directories created get
    `mode` and `owner`; the last one gets them whether created or not."""
    for part in parts:
        if not part or "/" in part or part in (".", ".."):
            raise HostError(f"not a directory name below {top}: {part!r}")
    full = os.path.join(top, *parts)
    if system.dry_run:  # the checks by path, the plan recorded; reads by descriptor still
        _plan_walk(system, top, parts, top_uid)
        system.makedirs(full, mode, owner)
        return HeldDir(system, full, _read_only_walk(system, top, parts))
    try:
        fd = os.open(system.path(top), DIR_FLAGS)
    except FileNotFoundError:
        raise HostError(f"{top} does not exist") from None
    except OSError as e:
        why = "it is a symbolic link" if os.path.islink(system.path(top)) else _why(e)
        raise HostError(f"cannot open {top}: {why}") from None
    try:
        if top_uid is not None and os.fstat(fd).st_uid != top_uid:
            raise HostError(f"{top} is not owned by uid {top_uid}")
        cur, created = top, False
        for part in parts:
            cur = os.path.join(cur, part)
            new, created = _step_down(system, fd, part, cur, mode, owner)
            os.close(fd)
            fd = new
        if not created and parts:
            _fix(system, fd, cur, mode, owner)
    except BaseException:
        os.close(fd)
        raise
    return HeldDir(system, full, fd)


def _read_only_walk(system: System, top: str, parts: Sequence[str]) -> Optional[int]:
    """The descriptor of top/parts, walked as the real run does but creating nothing; None
    when a part is missing (the dry run would make it) or is not a plain directory."""
    try:
        fd = os.open(system.path(top), DIR_FLAGS)
    except OSError:
        return None
    for part in parts:
        try:
            new = os.open(part, DIR_FLAGS, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = new
    return fd


def _plan_walk(system: System, top: str, parts: Sequence[str], top_uid: Optional[int]) -> None:
    """The dry run's checks, by path; a missing `top` is one an earlier skipped command
    (useradd -m) would have made."""
    cur = top
    for part in ["", *parts]:
        cur = os.path.join(cur, part) if part else cur
        kind = system.kind(cur)
        if kind == "link":
            raise HostError(f"cannot open {cur}: it is a symbolic link")
        if kind not in ("dir", "absent"):
            raise HostError(f"cannot open {cur}: it is not a directory")
    found = system.mode_owner(top) if system.kind(top) == "dir" else None
    if top_uid is not None and found is not None and found[1][0] != top_uid:
        raise HostError(f"{top} is not owned by uid {top_uid}")


def _step_down(
    system: System, fd: int, part: str, path: str, mode: int, owner: Optional[Owner]
) -> Tuple[int, bool]:
    """The descriptor of `part` below `fd` (which stays open: the caller's), made when missing."""
    created = False
    try:
        try:
            new = os.open(part, DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            system.note("mkdir", path, mode_owner_text(mode, owner))
            try:
                os.mkdir(part, 0o700, dir_fd=fd)
            except FileExistsError:
                pass
            new = os.open(part, DIR_FLAGS, dir_fd=fd)
            created = True
    except OSError as e:
        raise HostError(f"cannot open {path}: {_why(e, fd, part)}") from None
    if created:
        try:
            if owner is not None:
                os.fchown(new, owner[0], owner[1])
            os.fchmod(new, mode)
        except OSError as e:
            os.close(new)
            raise HostError(f"cannot set mode/owner of {path}: {e.strerror}") from None
    return new, created


def _fix(system: System, fd: int, path: str, mode: int, owner: Optional[Owner]) -> None:
    """Set the mode, then the owner, of an existing directory (the order System.makedirs
    records them in, so that a dry run's plan equals the real run's)."""
    try:
        st = os.fstat(fd)
        if stat.S_IMODE(st.st_mode) != mode:
            system.note("chmod", path, f"mode {mode:04o}")
            os.fchmod(fd, mode)
        if owner is not None and (st.st_uid, st.st_gid) != owner:
            system.note("chown", path, "owner {}:{}".format(*owner))
            os.fchown(fd, owner[0], owner[1])
            os.fchmod(fd, mode)  # chown may clear set-id bits
    except OSError as e:
        raise HostError(f"cannot set mode/owner of {path}: {e.strerror}") from None
