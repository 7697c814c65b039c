"""The VM instance id as WALinuxAgent computes it (WA §2.4).

`/sys/class/dmi/id/product_uuid` (or `WAPROV_VM_ID`, which stands in for that file),
else `dmidecode --string system-uuid`; a UUID has its first three groups byte-swapped,
the metadata service's order, case preserved. Anything else gives "". `same_vm()`
accepts a stored id in either byte order, case-insensitively.
"""

from __future__ import annotations

import re

from waprov.errors import HostError
from waprov.overrides import Overrides
from waprov.system import System

PRODUCT_UUID = "/sys/class/dmi/id/product_uuid"
_UUID = re.compile(r"^\s*[A-F0-9]{8}(-[A-F0-9]{4}){3}-[A-F0-9]{12}\s*$", re.IGNORECASE)


def swap_uuid(uuid: str) -> str:
    """`544CDFD0-CB4E-4B4A-...` -> `D0DF4C54-4ECB-4A4B-...`; the swap is its own inverse."""
    g = uuid.strip().split("-")

    def rev(h: str) -> str:
        return "".join(reversed([h[i : i + 2] for i in range(0, len(h), 2)]))

    return "-".join([rev(g[0]), rev(g[1]), rev(g[2]), g[3], g[4]])


def raw_id(system: System, overrides: Overrides) -> str:
    """The id as the DMI (or dmidecode, or WAPROV_VM_ID) gives it, unswapped."""
    if overrides.vm_id:
        return overrides.vm_id
    try:
        raw = system.read(PRODUCT_UUID, limit=4096)
    except HostError:  # not root's to read, say
        raw = None
    if raw is not None:
        return raw[:256].decode("ascii", "replace").strip()
    try:
        res = system.query(["dmidecode", "--string", "system-uuid"], timeout=30)
    except HostError:  # dmidecode not installed
        return ""
    return res.stdout.strip() if res.rc == 0 else ""


def instance_id(system: System, overrides: Overrides) -> str:
    raw = raw_id(system, overrides)
    return swap_uuid(raw) if _UUID.match(raw) else ""


def same_vm(stored: str, current: str) -> bool:
    stored, current = stored.strip().lower(), current.strip().lower()
    if stored == current:  # two empty ids included: WALinuxAgent compares the strings
        return True
    return bool(stored) and _UUID.match(stored) is not None and swap_uuid(stored) == current
