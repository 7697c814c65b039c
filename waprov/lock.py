"""One waprov run at a time for the commands that change the host: an flock on /run/waprov/lock.

`hold()` takes the lock for the rest of the process (the kernel releases it when the
process ends, however it ends) and writes the holder's pid, command and start time into
the file; a second run waits up to `wait` seconds, saying for whom, then fails naming the
holder. The directory must be root's and writable by nobody else (created 0700 if
missing; a symbolic link, another owner or a group/other-writable mode is refused) and the
file is opened O_NOFOLLOW relative to it, so no other user can plant or redirect the lock.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import time
from typing import NoReturn

from waprov.errors import WaprovError
from waprov.log import utc_time

LOCK_DIR = "/run/waprov"
LOCK_NAME = "lock"
DEFAULT_WAIT = 60.0  # seconds a second run waits for the first (WAPROV_LOCK_WAIT in tests)
POLL = 0.1  # seconds between two attempts while waiting
_MAX_INFO = 4096  # bytes of holder information read back
NAME_WAIT = 1.0  # seconds a waiting run gives a new holder to write its name before saying whom it waits for
UNNAMED = "a process that has not written its name into the lock file"

log = logging.getLogger("waprov")


class LockError(WaprovError):
    """The lock cannot be taken: held too long by another run, or its place is unsafe."""


def _unsafe(path: str, reason: str) -> LockError:
    return LockError(
        f"{path} {reason}: refusing to use it for waprov's run lock (waprov did not make it so: "
        "remove it and run again)"
    )


def _refuse(fd: int, path: str, reason: str) -> NoReturn:
    os.close(fd)
    raise _unsafe(path, reason)


def _open_dir(path: str) -> int:
    # directly, not through System: the lock is this machine's, taken before System exists
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        root = "; waprov must run as root" if e.errno in (errno.EACCES, errno.EPERM) else ""
        raise LockError(f"cannot create {path} for waprov's run lock ({e.strerror}{root})") from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if os.path.islink(path):
            raise _unsafe(path, "is a symbolic link") from None
        if e.errno == errno.ENOTDIR:
            raise _unsafe(path, "is not a directory") from None
        raise LockError(f"cannot open {path} for waprov's run lock ({e.strerror})") from None
    st = os.fstat(fd)
    if st.st_uid != 0:
        return _refuse(fd, path, f"is owned by uid {st.st_uid}, not root")
    if st.st_mode & 0o022:
        return _refuse(fd, path, f"is writable by others than root (mode {stat.S_IMODE(st.st_mode):04o})")
    return fd


def _open_lock(dir_fd: int, path: str) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(LOCK_NAME, flags, 0o600, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _unsafe(path, "is a symbolic link") from None
        raise LockError(f"cannot open waprov's run lock {path} ({e.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return _refuse(fd, path, "is not a regular file")
    if st.st_uid != 0:
        return _refuse(fd, path, f"is owned by uid {st.st_uid}, not root")
    return fd


def _try(fd: int, path: str) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        raise LockError(f"cannot lock {path} ({e.strerror})") from None
    return True


def holder(fd: int) -> str:
    """Who holds the lock, as its file says: "pid N (command), since T" (UNNAMED when the
    holder has not written it yet: it does so right after taking the lock)."""
    try:
        raw = os.pread(fd, _MAX_INFO, 0).decode("utf-8", "replace")
    except OSError:
        raw = ""
    info = {}
    for line in raw.splitlines():
        key, _, value = line.partition(" ")
        info[key] = "".join(c if c.isprintable() else "?" for c in value)[:200]
    if not info.get("pid"):
        return UNNAMED
    return (
        f"pid {info['pid']} ({info.get('command', 'unknown command')}), since {info.get('since', 'unknown')}"
    )


def hold(command: str, wait: float = DEFAULT_WAIT, lock_dir: str = LOCK_DIR) -> int:
    """Take the run lock, waiting up to `wait` seconds; its descriptor is returned and
    stays open (close-on-exec) until the process exits. LockError when it cannot."""
    path = os.path.join(lock_dir, LOCK_NAME)
    dir_fd = _open_dir(lock_dir)
    try:
        fd = _open_lock(dir_fd, path)
    finally:
        os.close(dir_fd)
    if not _try(fd, path):
        start, announced = time.monotonic(), False
        while True:
            who, waited = holder(fd), time.monotonic() - start
            if not announced and (who != UNNAMED or waited >= NAME_WAIT):
                log.info(
                    "Another waprov run holds %s: %s; waiting up to %gs for it to finish", path, who, wait
                )
                announced = True
            if waited >= wait:
                os.close(fd)
                raise LockError(
                    f"another waprov run still holds {path} after {wait:g}s: {who}; nothing was done "
                    "(run again once it has finished)"
                )
            time.sleep(POLL)
            if _try(fd, path):
                break
        if announced:
            log.info("The other waprov run finished after %.1fs; continuing", time.monotonic() - start)
    since = utc_time()
    try:  # what a waiting run shows; the lock itself does not depend on it
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\ncommand {command}\nsince {since}\n".encode(), 0)
    except OSError as e:
        log.warning(
            "cannot write this run's name into %s (%s); holding the lock all the same", path, e.strerror
        )
    return fd
