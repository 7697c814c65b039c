"""The distribution, read once from os-release; distro differences are data, not classes.

`Distro.detect()` parses `/etc/os-release` (else `/usr/lib/os-release`) with the
os-release(5) quoting rules. Later steps key their per-distro choices on `id`/`id_like`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")


def parse_os_release(text: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            words = shlex.split(value)
        except ValueError:
            continue
        out[key.strip()] = words[0] if words else ""
    return out


@dataclass(frozen=True)
class Distro:
    id: str
    version: str
    id_like: Tuple[str, ...] = ()

    @classmethod
    def detect(cls, paths: Sequence[str] = OS_RELEASE) -> Distro:
        for path in paths:
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    fields = parse_os_release(f.read())
            except OSError:
                continue
            return cls(
                fields.get("ID", "linux") or "linux",
                fields.get("VERSION_ID", ""),
                tuple(fields.get("ID_LIKE", "").split()),
            )
        return cls("unknown", "")

    def is_like(self, name: str) -> bool:
        return self.id == name or name in self.id_like
