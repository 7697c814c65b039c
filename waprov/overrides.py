"""The WAPROV_* environment overrides for tests, the demo and image pipelines.

None is needed in production. `WAPROV_WIRESERVER=host[:port]` skips endpoint discovery,
`WAPROV_IMDS=<base url>` replaces http://169.254.169.254, `WAPROV_OVF_DIR=<dir>` is read
instead of the provisioning DVD, `WAPROV_VM_ID=<uuid>` replaces the SMBIOS UUID and
`WAPROV_RETRY_SCALE=<factor>` multiplies every retry delay, timeout and deadline;
`WAPROV_CRASH_AFTER=<step>` (tests only) makes `-provision` kill itself after that step;
`WAPROV_RESOURCE_DISK=<block device>` makes `-resourcedisk` use that device (no discovery);
`WAPROV_LOCK_WAIT=<seconds>` (tests) replaces the 60 s a run waits for another's run lock
(read by `lock_wait_from_env`, for the commands that take the lock).
A malformed value is a UsageError that names the variable.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Optional
from urllib.parse import urlsplit

from waprov.errors import UsageError

_HOSTPORT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::([0-9]{1,5}))?$")
_UUID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")


@dataclass(frozen=True)
class Overrides:
    wireserver: Optional[str] = None
    imds: Optional[str] = None
    ovf_dir: Optional[str] = None
    vm_id: Optional[str] = None
    retry_scale: float = 1.0
    crash_after: Optional[str] = None  # tests: SIGKILL after this step (provision.STEP_NAMES)
    resource_disk: Optional[str] = None  # the resource disk's device, discovery skipped


def bad_override(name: str, value: str, reason: str) -> UsageError:
    return UsageError(f"environment variable {name}={value!r}: {reason}")


def lock_wait_from_env(environ: Mapping[str, str], default: float) -> float:
    """WAPROV_LOCK_WAIT: how long a run waits for the run lock; `default` when unset."""
    raw = environ.get("WAPROV_LOCK_WAIT", "")
    if not raw:
        return default
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not (math.isfinite(wait) and wait >= 0):
        raise bad_override("WAPROV_LOCK_WAIT", raw, "expected a number of seconds such as 2 (0: do not wait)")
    return wait


def overrides_from_env(environ: Mapping[str, str]) -> Overrides:
    """Read and check the overrides; unset or empty variables mean "not overridden"."""

    def get(name: str) -> Optional[str]:
        value = environ.get(name, "")
        return value or None

    wireserver = get("WAPROV_WIRESERVER")
    if wireserver is not None:
        m = _HOSTPORT.match(wireserver)
        if not m or (m.group(1) is not None and not 0 < int(m.group(1)) < 65536):
            raise bad_override("WAPROV_WIRESERVER", wireserver, "expected host or host:port")
    imds = get("WAPROV_IMDS")
    if imds is not None:
        parts = urlsplit(imds)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise bad_override("WAPROV_IMDS", imds, "expected a base URL such as http://127.0.0.1:8080")
        imds = imds.rstrip("/")
    ovf_dir = get("WAPROV_OVF_DIR")
    if ovf_dir is not None and not ovf_dir.startswith("/"):
        raise bad_override("WAPROV_OVF_DIR", ovf_dir, "expected an absolute directory path")
    vm_id = get("WAPROV_VM_ID")
    if vm_id is not None and not _UUID.match(vm_id):
        raise bad_override(
            "WAPROV_VM_ID", vm_id, "expected a UUID such as 00000000-0000-0000-0000-000000000000"
        )
    scale = 1.0
    raw_scale = get("WAPROV_RETRY_SCALE")
    if raw_scale is not None:
        try:
            scale = float(raw_scale)
        except ValueError:
            scale = -1.0
        if not (math.isfinite(scale) and scale > 0):
            raise bad_override("WAPROV_RETRY_SCALE", raw_scale, "expected a positive number such as 0.01")
    disk = get("WAPROV_RESOURCE_DISK")
    if disk is not None and not disk.startswith("/dev/"):
        raise bad_override("WAPROV_RESOURCE_DISK", disk, "expected a block device such as /dev/loop0")
    return Overrides(wireserver, imds, ovf_dir, vm_id, scale, get("WAPROV_CRASH_AFTER"), disk)
