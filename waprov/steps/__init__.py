"""What every provisioning step gets: the run's context, the user lookup, the step journal.

A step is a function `apply(ctx)` that checks its own guard and is idempotent. Steps whose
effect cannot be repeated byte for byte (regenerated host keys, an executed custom-data
script) record themselves in the journal `/var/lib/waprov/journal` ("<vm id> <what>"
lines) and are skipped when the journal says they ran for this VM.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

from waprov.config import Config
from waprov.distro import Distro
from waprov.errors import HostError
from waprov.model import ProvisioningData
from waprov.system import Background, System
from waprov.timing import Clock

STATE_DIR = "/var/lib/waprov"
DEFAULT_UID_MIN = 100  # WA's value when /etc/login.defs has no UID_MIN


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str


def _journal(system: System, state_dir: str) -> Tuple[str, ...]:
    raw = system.read(os.path.join(state_dir, "journal")) or b""
    return tuple(raw.decode("utf-8", "replace").splitlines())


def journal_done(system: System, state_dir: str, vm_id: str, what: str) -> bool:
    """Whether the journal says `what` ran for this VM (also before the run has a Ctx)."""
    return f"{vm_id} {what}" in _journal(system, state_dir)


@dataclass
class Ctx:
    system: System
    config: Config
    distro: Distro
    data: ProvisioningData
    clock: Clock
    vm_id: str
    state_dir: str = STATE_DIR
    keygen: Optional[Background] = None  # the host keys the run began making (hostkeys.begin)

    # ---- the journal -------------------------------------------------------------------------

    @property
    def journal_path(self) -> str:
        return os.path.join(self.state_dir, "journal")

    def _journal(self) -> Tuple[str, ...]:
        return _journal(self.system, self.state_dir)

    def done(self, what: str) -> bool:
        return journal_done(self.system, self.state_dir, self.vm_id, what)

    def mark(self, what: str) -> None:
        entries = [e for e in self._journal() if e.startswith(f"{self.vm_id} ")]  # other VMs' entries go
        entries.append(f"{self.vm_id} {what}")
        self.system.makedirs(self.state_dir, 0o700)
        self.system.write(self.journal_path, "".join(e + "\n" for e in entries), 0o600)

    # ---- accounts ----------------------------------------------------------------------------

    def entry(self, path: str, name: str) -> Optional[List[str]]:
        """The fields of `name`'s line in a colon-separated file (/etc/passwd, /etc/shadow)."""
        raw = self.system.read(path) or b""
        for line in raw.decode("utf-8", "replace").split("\n"):
            fields = line.split(":")
            if len(fields) > 1 and fields[0] == name:
                return fields
        return None

    def account(self, name: str) -> Optional[Account]:
        """The local account from /etc/passwd (None when absent)."""
        fields = self.entry("/etc/passwd", name)
        if fields is None or len(fields) < 7:
            return None
        try:
            return Account(name, int(fields[2]), int(fields[3]), fields[5])
        except ValueError:
            raise HostError(f"/etc/passwd: the entry of {name} has a bad uid or gid") from None

    def uid_min(self) -> int:
        """UID_MIN from /etc/login.defs (WA §5.2), 100 when absent."""
        try:
            raw = self.system.read("/etc/login.defs") or b""
        except HostError:
            return DEFAULT_UID_MIN
        for line in raw.decode("utf-8", "replace").splitlines():
            m = re.match(r"UID_MIN\s+(\d+)", line)
            if m:
                return int(m.group(1))
        return DEFAULT_UID_MIN

    def lib(self, name: str) -> str:
        return os.path.join(self.config.lib_dir, name)
