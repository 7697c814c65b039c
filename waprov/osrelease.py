"""os-release(5) reader with no imports: `-version` is on the boot path and must be quick.

Values may be unquoted, or in single or double quotes; inside double quotes a backslash
escapes `$ " \\ \\``. Lines that do not parse are skipped, as systemd does.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Optional, Sequence

    from waprov.system import System

OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")


def _unquote(value: str) -> str | None:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        out, i, body = [], 0, value[1:-1]
        while i < len(body):
            if body[i] == "\\" and i + 1 < len(body) and body[i + 1] in '$"\\`':
                i += 1
            out.append(body[i])
            i += 1
        return "".join(out)
    if any(c in value for c in " \t\"'\\"):
        return None
    return value


def parse_os_release(text: str) -> Dict[str, str]:
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        value = _unquote(raw.strip())
        if value is not None:
            fields[key.strip()] = value
    return fields


def read_os_release(system: Optional[System], paths: Sequence[str] = OS_RELEASE) -> Dict[str, str]:
    """The fields of the first readable os-release file (followed through symbolic links,
    /etc/os-release usually is one); {} when there is none. Read through `system` (its
    root applies); `-version` alone passes None and reads the running machine's file
    directly: it has no System and must stay quick (it is on the boot path)."""
    from waprov.errors import HostError

    for path in paths:
        try:
            if system is None:
                with open(path, encoding="utf-8", errors="replace") as f:  # -version: see above
                    return parse_os_release(f.read())
            raw = system.read(path, limit=1 << 20, follow=True)
        except (OSError, HostError):
            continue
        if raw is not None:
            return parse_os_release(raw.decode("utf-8", "replace"))
    return {}
