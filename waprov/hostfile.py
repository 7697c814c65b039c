"""The file primitives System is built on, and that its descriptor-based part (helddir.py)
shares with it: the refusing read of a regular file, and how a mode and owner are shown.
Part of the effects contract: only System and helddir.py use them."""

from __future__ import annotations

import errno
import os
import stat
from typing import List, Optional, Tuple

from waprov.errors import HostError

Owner = Tuple[int, int]


class Unreadable(HostError):
    """A file read_regular() would not read: `why` ("is a symbolic link", "is not a regular
    file", "has 2 hard links", "is too large ...") when it was refused, else the OS error."""

    def __init__(self, shown: str, why: str, *, refused: bool) -> None:
        super().__init__(f"cannot read {shown}: {'it ' if refused else ''}{why}")
        self.why, self.refused = why, refused


def read_regular(
    real: str, shown: str, limit: int, *, dir_fd: Optional[int] = None, one_link: bool = False
) -> Optional[bytes]:
    """The bytes of the regular file `real` (a name relative to `dir_fd` when given), None
    when it is absent. It is opened with O_NOFOLLOW and O_NONBLOCK and checked on its
    descriptor, so neither a final symbolic link nor a FIFO swapped in is ever followed or
    waited on; Unreadable when it is not a regular file, has more than one link
    (`one_link`), is larger than `limit`, or cannot be read. `shown` names it in errors."""
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise Unreadable(shown, "is a symbolic link", refused=True) from None
        raise Unreadable(shown, e.strerror or str(e), refused=False) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unreadable(shown, "is not a regular file", refused=True)
        if one_link and st.st_nlink != 1:
            raise Unreadable(shown, f"has {st.st_nlink} hard links", refused=True)
        chunks: List[bytes] = []
        size = 0
        while size <= limit:  # not st_size: /proc and /sys files report 0 or 4096 whatever they hold
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise Unreadable(shown, f"is too large (more than {limit} bytes)", refused=True)
        return b"".join(chunks)
    except OSError as e:
        raise Unreadable(shown, e.strerror or str(e), refused=False) from None
    finally:
        os.close(fd)


def mode_owner_text(mode: Optional[int], owner: Optional[Owner]) -> str:
    parts = []
    if mode is not None:
        parts.append(f"mode {mode:04o}")
    if owner is not None:
        parts.append("owner {}:{}".format(*owner))
    return ", ".join(parts)
