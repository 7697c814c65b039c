"""waprov's own state on this VM: the directory /var/lib/waprov (0700) and its files.

- `provisioned`: waprov's marker, the id of the VM it provisioned (0600; provision.py, when
  a run ends well), and beside it `boot-id`, the DMI id as read: what
  init/waprov-boot-check compares at every boot;
- `attempt`: the id of the VM waprov last began provisioning, before any change
  (provision.py's `attempt` step);
- `journal`: `<vm id> <what>` lines, what may not run twice on one VM (`Ctx.mark`);
- `report.json`: the last run's record (record.py; `-status` reads it);
- `user`: `<vm id> <name> <uid> <how>`, the account `-deprovision+user` deletes
  (steps/user.py);
- `sudoers.check`: the new sudoers file while visudo checks it (steps/sudoers.py).

Read by provision.py (done, adopted, resumed?), deprovision.py (the user, the journal; it
removes the directory), status.py and doctor.py. The packages create the directory and
remove it on purge. `-enable`/`-disable` keep their record in /etc/waprov instead
(handover.py), where `-deprovision` does not remove it.
"""

from __future__ import annotations

import os
from typing import Tuple

from waprov.system import System
from waprov.vmid import same_vm

STATE_DIR = "/var/lib/waprov"
MARKER = "provisioned"
BOOT_ID = "boot-id"
ATTEMPT = "attempt"
JOURNAL = "journal"
REPORT = "report.json"
USER_RECORD = "user"
SUDOERS_CHECK = "sudoers.check"


def state_path(name: str, state_dir: str = STATE_DIR) -> str:
    """The file `name` (one of the names above) in the state directory."""
    return os.path.join(state_dir, name)


def holds(system: System, name: str, vm_id: str, state_dir: str = STATE_DIR) -> bool:
    """Whether the file `name` (the marker, the attempt) holds this VM's id."""
    raw = system.read(state_path(name, state_dir))
    return raw is not None and same_vm(raw.decode("utf-8", "replace"), vm_id)


def journal(system: System, state_dir: str = STATE_DIR) -> Tuple[str, ...]:
    """The journal's lines (none when it is missing)."""
    raw = system.read(state_path(JOURNAL, state_dir)) or b""
    return tuple(raw.decode("utf-8", "replace").splitlines())


def journal_done(system: System, vm_id: str, what: str, state_dir: str = STATE_DIR) -> bool:
    """Whether the journal says `what` ran for this VM."""
    return f"{vm_id} {what}" in journal(system, state_dir)


def journal_add(system: System, vm_id: str, whats: Tuple[str, ...], state_dir: str = STATE_DIR) -> None:
    """Add `whats` to the journal in one write (other VMs' entries go)."""
    entries = [e for e in journal(system, state_dir) if e.startswith(f"{vm_id} ")]
    entries.extend(f"{vm_id} {what}" for what in whats if f"{vm_id} {what}" not in entries)
    system.makedirs(state_dir, 0o700)
    system.write(state_path(JOURNAL, state_dir), "".join(e + "\n" for e in entries), 0o600)


def write_marker(system: System, vm_id: str, boot_id: str, state_dir: str = STATE_DIR) -> None:
    """waprov's marker, and beside it the raw DMI id for the boot check of every later boot."""
    system.makedirs(state_dir, 0o700)
    system.write(state_path(BOOT_ID, state_dir), boot_id + "\n", 0o600)
    system.write(state_path(MARKER, state_dir), vm_id, 0o600)
