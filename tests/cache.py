"""The tests' machine-level cache: what is slow to build and depends only on its recipe
(the chroot bases of tests/chroot.py, the rpm-install root, the e2e guest images' bases),
kept where a clean clone and `make clean` do not reach.

The directory is $WAPROV_TEST_CACHE, by default /var/cache/waprov-tests. Each entry is a
directory `<kind>/<name>-<key>/`, its key a hash of everything its content is made from
(`key()`); another input makes another key, hence a new entry (the older entries of the
same name are deleted, but for the most recently used ones: two checkouts at different
states each keep theirs). An entry is built in a temporary directory beside it and
renamed into place with a `.complete` record of its files and their sizes, written last:
an entry without the record (a build that was killed) or whose files do not have the
recorded sizes (damaged since) is deleted and built again. Builds of one name hold a lock
(flock on `<kind>/.<name>.lock`): two test processes (pytest-xdist's workers, two
checkouts) never build the same entry at once, and the second uses what the first built.
Delete the directory (or one entry) to have it built again from the Debian mirror.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from typing import Callable, Dict, Iterator, Union

ENV = "WAPROV_TEST_CACHE"
DEFAULT = "/var/cache/waprov-tests"
MARKER = ".complete"
KEEP = 2  # entries kept per name: the one in use and the most recently used other one


def directory() -> str:
    return os.environ.get(ENV) or DEFAULT


def key(*parts: Union[str, bytes]) -> str:
    """A short hash of `parts` (strings, or bytes such as a file's content), in order."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()[:16]


def file_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@contextlib.contextmanager
def locked(kind: str, name: str) -> Iterator[str]:
    """Hold the lock of `name` in `kind` (created if needed); yields the kind's directory."""
    where = os.path.join(directory(), kind)
    os.makedirs(where, exist_ok=True)
    with open(os.path.join(where, f".{name}.lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield where
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _sizes(path: str) -> Dict[str, int]:
    found = {}
    for top, _, files in os.walk(path):
        for name in files:
            full = os.path.join(top, name)
            rel = os.path.relpath(full, path)
            if rel != MARKER and not os.path.islink(full):
                found[rel] = os.path.getsize(full)
    return found


def is_complete(path: str) -> bool:
    """Does the entry at `path` have its `.complete` record, and every file it names the
    recorded size?"""
    try:
        with open(os.path.join(path, MARKER), encoding="utf-8") as f:
            recorded: Dict[str, int] = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not recorded:
        return False
    for rel, size in recorded.items():
        try:
            if os.path.getsize(os.path.join(path, rel)) != size:
                return False
        except OSError:
            return False
    return True


def entry(kind: str, name: str, entry_key: str, build: Callable[[str], None]) -> str:
    """The directory of the complete entry `<kind>/<name>-<entry_key>`: `build(tmpdir)` is
    called to make its files when it has none (or a broken one)."""
    with locked(kind, name) as where:
        final = os.path.join(where, f"{name}-{entry_key}")
        if is_complete(final):
            os.utime(os.path.join(final, MARKER))  # most recently used
            return final
        if os.path.lexists(final):
            print(f"test cache: {final} is incomplete or damaged: built again", flush=True)
            shutil.rmtree(final)
        work = tempfile.mkdtemp(prefix=f".{name}-{entry_key}.", dir=where)
        try:
            build(work)
            with open(os.path.join(work, MARKER), "w", encoding="utf-8") as f:
                json.dump({"files": _sizes(work)}, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.rename(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        _evict(where, name, final)
        return final


def _evict(where: str, name: str, keep: str) -> None:
    """Delete the entries of `name` beyond the KEEP most recently used (`keep` among
    them), and leftovers of killed builds (the lock is held: no build of it is running)."""
    entries = re.compile(re.escape(name) + r"-[0-9a-f]{16}")
    partials = re.compile(r"\." + re.escape(name) + r"-[0-9a-f]{16}\..+")
    names = os.listdir(where)
    others = [os.path.join(where, n) for n in names if entries.fullmatch(n)]
    others = [p for p in others if p != keep]

    def used(path: str) -> float:
        try:
            return os.path.getmtime(os.path.join(path, MARKER))
        except OSError:
            return 0.0

    for old in sorted(others, key=used, reverse=True)[KEEP - 1 :]:
        shutil.rmtree(old, ignore_errors=True)
    for n in names:
        if partials.fullmatch(n):
            shutil.rmtree(os.path.join(where, n), ignore_errors=True)
