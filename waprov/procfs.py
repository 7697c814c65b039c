"""The kernel's tables as /proc shows them, read through `System` (so a root prefix and a
test's fake files apply): the mount table and the processes. The one reader of each for
the whole package."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

from waprov.errors import HostError
from waprov.system import System

MOUNTS = "/proc/self/mounts"
COMM_LEN = 15  # the kernel cuts a process's name (comm) to this many characters
_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """One line of the mount table."""

    device: str
    mountpoint: str
    fstype: str
    opts: str


@dataclass(frozen=True)
class Process:
    """One process: its name (as `ps -e` and psutil give it), argv, and state letter."""

    pid: int
    name: str
    argv: Tuple[str, ...]
    state: str


def _read(system: System, path: str) -> Optional[bytes]:
    """A /proc file's bytes; None when it is absent or unreadable (a process that ended)."""
    try:
        return system.read(path, limit=1 << 22)
    except HostError:
        return None


def _unescape(field: str) -> str:
    """A mount table field: the kernel writes space, tab, newline and backslash as \\ooo."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def mounts(system: System) -> List[Mount]:
    """The mount table of this mount namespace, as it is now; [] when it cannot be read."""
    found = []
    for line in (_read(system, MOUNTS) or b"").decode("utf-8", "surrogateescape").splitlines():
        fields = line.split()
        if len(fields) >= 4:
            found.append(Mount(*(_unescape(f) for f in fields[:4])))
    return found


def process(system: System, pid: int) -> Optional[Process]:
    """The process `pid`, None when there is none. Its name is the kernel's (cut to 15
    characters), completed from argv[0] when that starts with it, as psutil does."""
    stat = _read(system, f"/proc/{pid}/stat")
    if stat is None or b"(" not in stat or b")" not in stat:
        return None
    comm = stat[stat.index(b"(") + 1 : stat.rindex(b")")].decode("utf-8", "replace")
    rest = stat[stat.rindex(b")") + 1 :].split()
    raw = _read(system, f"/proc/{pid}/cmdline") or b""
    argv = tuple(a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0")) if raw else ()
    name = comm
    if len(comm) >= COMM_LEN and argv and os.path.basename(argv[0]).startswith(comm):
        name = os.path.basename(argv[0])
    return Process(pid, name, argv, rest[0].decode("ascii", "replace") if rest else "")


def processes(system: System) -> List[Process]:
    """Every process, by pid (the ones that end meanwhile left out)."""
    pids = sorted(
        int(p[len("/proc/") :]) for p in system.glob("/proc/[0-9]*") if p[len("/proc/") :].isdigit()
    )
    return [p for p in (process(system, pid) for pid in pids) if p is not None]


def process_names(system: System) -> List[str]:
    """The names of every process (see `process`)."""
    return [p.name for p in processes(system)]
