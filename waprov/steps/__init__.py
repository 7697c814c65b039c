"""What every provisioning step gets: the run's context, the account lookups, the step journal.

A step is a function `apply(ctx)` that checks its own guard and is idempotent. Steps whose
effect cannot be repeated byte for byte (regenerated host keys, an executed custom-data
script) record themselves in the journal (state.py: `/var/lib/waprov/journal`) and are
skipped when the journal says they ran for this VM. The account helpers
(`read_account`, `uid_range`: UID_MIN..UID_MAX of /etc/login.defs) serve -deprovision too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple

from waprov import state
from waprov.config import Config
from waprov.distro import Distro
from waprov.errors import HostError
from waprov.model import ProvisioningData
from waprov.overrides import Overrides
from waprov.system import Background, System
from waprov.timing import Clock

if TYPE_CHECKING:  # the HTTP side: the local phase never imports it
    from waprov.health import Reporter
    from waprov.network import LinkWatch
    from waprov.ovf import OvfEnv
    from waprov.sources import Fabric

DEFAULT_UID_MIN = 1000  # shadow's value when /etc/login.defs has none (WA: 100, which admits system accounts)
DEFAULT_UID_MAX = 60000  # useradd's (shadow's) value when /etc/login.defs has no UID_MAX
LOGIN_DEFS = "/etc/login.defs"


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str


def entry(system: System, path: str, name: str) -> Optional[List[str]]:
    """The fields of `name`'s line in a colon-separated file (/etc/passwd, /etc/shadow)."""
    raw = system.read(path) or b""
    for line in raw.decode("utf-8", "replace").split("\n"):
        fields = line.split(":")
        if len(fields) > 1 and fields[0] == name:
            return fields
    return None


def read_account(system: System, name: str) -> Optional[Account]:
    """The local account from /etc/passwd (None when absent)."""
    fields = entry(system, "/etc/passwd", name)
    if fields is None or len(fields) < 7:
        return None
    try:
        return Account(name, int(fields[2]), int(fields[3]), fields[5])
    except ValueError:
        raise HostError(f"/etc/passwd: the entry of {name} has a bad uid or gid") from None


def uid_range(
    system: System, default_min: int = DEFAULT_UID_MIN, default_max: int = DEFAULT_UID_MAX
) -> Tuple[int, int]:
    """(UID_MIN, UID_MAX): the first line of /etc/login.defs starting with each (WA §5.2);
    the defaults for a missing file or line."""
    try:
        raw = system.read(LOGIN_DEFS) or b""
    except HostError:
        raw = b""
    found = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        m = re.match(r"(UID_MIN|UID_MAX)\s+(\d+)", line)
        if m and m.group(1) not in found:
            found[m.group(1)] = int(m.group(2))
    return found.get("UID_MIN", default_min), found.get("UID_MAX", default_max)


def _below(path: str, base: str) -> bool:
    return path.startswith(base.rstrip("/") + "/")


def home_problem(system: System, home_dir: str, acct: Account, *, missing_ok: bool = False) -> Optional[str]:
    """Why root must not write into `acct`'s home (None: it may): where it resolves must lie
    strictly below where OS.HomeDir (`home_dir`) resolves (so /var/home/<user> passes when
    /home -> /var/home, as on ostree systems, and /home/team/<user> with /home/team -> /etc
    does not), and it must be a directory, not a symbolic link, owned by the account (or,
    with `missing_ok`, be missing: nothing to delete there)."""
    base = os.path.normpath(home_dir)
    home = os.path.normpath(acct.home) if acct.home.startswith("/") else ""
    kind = system.kind(home) if home else "absent"
    if kind == "link":
        return f"the home directory {home} of {acct.name} is a symbolic link"
    real_base = system.realpath(base)
    if not home or not _below(system.realpath(home), real_base):
        return f"the home directory {acct.home or '(none)'} of {acct.name} is not below OS.HomeDir {base}"
    if kind == "absent" and missing_ok:
        return None
    if kind != "dir":
        what = "missing" if kind == "absent" else "not a directory"
        return f"the home directory {home} of {acct.name} is {what}"
    found = system.mode_owner(home)  # None: only planned by this dry run
    if found is not None and found[1][0] != acct.uid:
        return f"the home directory {home} is not owned by {acct.name} (uid {acct.uid})"
    return None


@dataclass
class Ctx:
    """The run's one context, built by `provision.main`: what every step may use.

    `given` is the provisioning data as far as the run has it (the DVD's after the `dvd`
    step, merged with IMDS after `imds`); `data` refuses to be read before there is any.
    `connect` builds the HTTP side (fabric and reporter) on first use: the local phase
    never calls it, so it never imports it."""

    system: System
    config: Config
    distro: Distro
    given: Optional[ProvisioningData]
    clock: Clock
    vm_id: str
    state_dir: str = state.STATE_DIR
    keygen: Optional[Background] = None  # the host keys this process began making (hostkeys.begin)
    overrides: Overrides = field(default_factory=Overrides)
    connect: Optional[Callable[[], Tuple[Fabric, Reporter]]] = None
    ovf: Optional[OvfEnv] = None  # what the DVD gave (the `dvd` step), before IMDS is merged in
    named_before_network: bool = False  # the host name was set while no route existed
    local_only: bool = False  # the local phase's own process (waprov-local.service)
    dvd_tried: bool = False  # this process looked for the DVD and found none
    dvd_device: str = ""  # the DVD this process read: ejected when the local phase is done
    # opens a watch of the kernel's address events (linkwatch.py), for the wait after a
    # network restart: provision.main's real runs open netlink; None (a dry run, a test's
    # fake commands): no watch
    link_watch: Optional[Callable[[], LinkWatch]] = field(default=None, repr=False)
    _wire: Optional[Tuple[Fabric, Reporter]] = field(default=None, repr=False)

    @property
    def data(self) -> ProvisioningData:
        if self.given is None:
            raise HostError("internal error: a step read the provisioning data before there was any")
        return self.given

    def _connected(self) -> Tuple[Fabric, Reporter]:
        if self._wire is None:
            if self.connect is None:
                raise HostError("internal error: a step of the local phase asked for the network")
            self._wire = self.connect()
        return self._wire

    @property
    def fabric(self) -> Fabric:
        return self._connected()[0]

    @property
    def reporter(self) -> Reporter:
        return self._connected()[1]

    @property
    def has_reporter(self) -> bool:
        return self._wire is not None

    # ---- the journal -------------------------------------------------------------------------

    def done(self, what: str) -> bool:
        return state.journal_done(self.system, self.vm_id, what, self.state_dir)

    def mark(self, *whats: str) -> None:
        """Add `whats` to the journal in one write (other VMs' entries go)."""
        state.journal_add(self.system, self.vm_id, whats, self.state_dir)

    # ---- accounts ----------------------------------------------------------------------------

    def entry(self, path: str, name: str) -> Optional[List[str]]:
        """The fields of `name`'s line in a colon-separated file (/etc/passwd, /etc/shadow)."""
        return entry(self.system, path, name)

    def account(self, name: str) -> Optional[Account]:
        """The local account from /etc/passwd (None when absent)."""
        return read_account(self.system, name)

    def uid_range(self) -> Tuple[int, int]:
        """(UID_MIN, UID_MAX) from /etc/login.defs; useradd's 1000 and 60000 when absent."""
        return uid_range(self.system)

    def lib(self, name: str) -> str:
        return os.path.join(self.config.lib_dir, name)
