"""The distribution, read once from os-release; distro differences are data, not classes.

`Distro.detect()` reads `/etc/os-release` (else `/usr/lib/os-release`). Later steps key
their per-distro choices (sshd restart, hostname command, Flatcar drop-ins) on
`id`/`id_like` through `is_like()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

from waprov.osrelease import OS_RELEASE, read_os_release


@dataclass(frozen=True)
class Distro:
    id: str
    version: str
    id_like: Tuple[str, ...] = ()

    @classmethod
    def detect(cls, paths: Sequence[str] = OS_RELEASE) -> Distro:
        fields = read_os_release(paths)
        if not fields:
            return cls("unknown", "")
        return cls(
            fields.get("ID") or "linux",
            fields.get("VERSION_ID", ""),
            tuple(fields.get("ID_LIKE", "").split()),
        )

    def is_like(self, name: str) -> bool:
        return self.id == name or name in self.id_like
