"""Where the provisioning data comes from: the DVD (or WAPROV_OVF_DIR) and IMDS.

`load_ovf()` (the local phase's `dvd` step; no HTTP module imported) reads, validates
and saves the password-free copy of ovf-env.xml to `<Lib.Dir>/ovf-env.xml` (0600)
before releasing the DVD; an invalid OVF is never saved and fails provisioning.
`saved_ovf()` reads that copy back for a network phase in another process.
`gather()` (the network phase's `imds` step) adds IMDS: with an OVF it waits a few
seconds at most for IMDS (which then only adds to the OVF); without one, it looks for the
DVD once more when the network is up (a slow device probe), else IMDS is the source and
gets the full deadline. IMDS waits for the network first (`wireserver.wait_for_network`).
`merge()` makes the one `ProvisioningData` of the two: the OVF wins wherever it states a
value, IMDS fills what it lacks, and IMDS public keys are added unless the same key for
the same path is already there.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Tuple, Union

from waprov.config import Config
from waprov.dvd import NoDvdError, find_dvd_device, mount_dvd, read_ovf_file, release_dvd
from waprov.errors import ProtocolError
from waprov.model import ProvisioningData
from waprov.overrides import Overrides
from waprov.ovf import OvfEnv, decode_ovf, parse_ovf, strip_password
from waprov.system import System
from waprov.timing import Clock

if TYPE_CHECKING:
    from waprov.http import HttpClient
    from waprov.imds import ImdsData

log = logging.getLogger("waprov")
IMDS_ONLY_DEADLINE = 300.0  # azure-init's and cloud-init's IMDS budget
IMDS_EXTRA_DEADLINE = 3.0  # with an OVF in hand, IMDS may delay provisioning this much
DEVICE_WAIT, DEVICE_POLL = 5.0, 0.1  # the local phase: the DVD drive's driver may still be loading


@dataclass(frozen=True)
class Dvd:
    """What reading the DVD needs (the local phase has no HTTP client)."""

    system: System
    config: Config
    overrides: Overrides
    clock: Clock
    distro_id: str = ""


@dataclass(frozen=True)
class Fabric:
    """What reading all the data needs; one per run, built on first use of the network."""

    system: System
    config: Config
    overrides: Overrides
    clock: Clock
    client: HttpClient
    distro_id: str = ""


Source = Union[Dvd, Fabric]


def save_ovf_copy(dvd: Source, data: bytes) -> None:
    lib = dvd.config.lib_dir
    st = dvd.system.stat(lib)
    if st is None or not stat.S_ISDIR(st.st_mode):
        dvd.system.makedirs(lib, 0o700)
    dvd.system.write(os.path.join(lib, "ovf-env.xml"), strip_password(decode_ovf(data)), 0o600)


def _device(dvd: Source, wait: float) -> str:
    """The DVD's device node; with `wait`, poll for it that long (udev's coldplug loads the
    drive's driver while the local phase starts)."""
    deadline = dvd.clock.deadline(wait)
    while True:
        try:
            return find_dvd_device(dvd.system)
        except NoDvdError:
            if dvd.clock.remaining(deadline) <= 0:
                raise
        dvd.clock.sleep(DEVICE_POLL, "the DVD device")


def load_ovf(dvd: Source, wait: float = 0.0, on_read: Optional[Callable[[str], None]] = None) -> OvfEnv:
    """The validated OVF; NoDvdError when there is no DVD (or no file in WAPROV_OVF_DIR).
    With `on_read`, the DVD is unmounted but not ejected: `on_read(device)` is told which
    one to eject later (the local phase ejects it once all its steps are done, so that a
    failed step can read it again)."""
    mounted = None
    if dvd.overrides.ovf_dir is not None:
        directory = dvd.overrides.ovf_dir
        st = dvd.system.stat(os.path.join(directory, "ovf-env.xml"))
        if st is None or not stat.S_ISREG(st.st_mode):
            raise NoDvdError(f"no ovf-env.xml in WAPROV_OVF_DIR={directory}")
    else:
        device = _device(dvd, wait)
        mounted = mount_dvd(dvd.system, dvd.clock, device, dvd.config.dvd_mount_point)
        directory = mounted.mount_point
    data = read_ovf_file(dvd.system, directory)
    env = parse_ovf(data)  # an invalid OVF is not saved, and the DVD stays as it is (WA §4.3)
    save_ovf_copy(dvd, data)
    if mounted is not None:
        release_dvd(dvd.system, mounted, dvd.distro_id, eject=on_read is None)
        if on_read is not None and mounted.ours:
            on_read(mounted.device)
    return env


def saved_ovf(dvd: Source) -> Optional[OvfEnv]:
    """The copy `load_ovf` saved (no password: the local phase has used it), or None."""
    path = os.path.join(dvd.config.lib_dir, "ovf-env.xml")
    raw = dvd.system.read(path)
    if raw is None:
        return None
    try:
        return parse_ovf(raw)
    except ProtocolError as e:
        log.warning("%s cannot be read back (%s): reading the DVD again", path, e)
        return None


def gather(fabric: Fabric, ovf: Optional[OvfEnv] = None, *, dvd_tried: bool = False) -> ProvisioningData:
    """The merged data; ProtocolError naming both sources when neither gives any. `ovf`:
    what the DVD gave already; `dvd_tried`: the DVD was looked for in this process and was
    not there (else it is read first, at once). IMDS waits for the network; without an OVF
    the DVD is looked for once more when the network is up."""
    from waprov.imds import IMDS_BASE, fetch_imds
    from waprov.wireserver import wait_for_network

    dvd_reason = ""
    if ovf is None and not dvd_tried:
        try:
            ovf = load_ovf(fabric)
        except NoDvdError as e:
            dvd_reason = str(e)
    wait_for_network(fabric.system, fabric.config, fabric.overrides, fabric.clock)
    if ovf is None:
        try:
            ovf = load_ovf(fabric)
        except NoDvdError as e:
            dvd_reason = str(e)
            log.info("No provisioning DVD (%s): using IMDS alone", dvd_reason)
    imds: Optional[ImdsData] = None
    try:
        deadline = IMDS_EXTRA_DEADLINE if ovf else IMDS_ONLY_DEADLINE
        imds = fetch_imds(fabric.client, fabric.overrides.imds or IMDS_BASE, deadline)
    except ProtocolError as e:
        if ovf is None:
            raise ProtocolError(f"no provisioning data: {dvd_reason}; {e}") from None
        log.warning("Provisioning from ovf-env.xml without IMDS: %s", e)
    return merge(ovf, imds)


# ---- the merge -------------------------------------------------------------------------------


def _key_material(value: Optional[str]) -> Optional[Tuple[str, ...]]:
    """The key type and base64 body: comments and whitespace do not make a key different."""
    if not value:
        return None
    return tuple(value.split()[:2])


def merge(ovf: Optional[OvfEnv], imds: Optional[ImdsData]) -> ProvisioningData:
    """One ProvisioningData; ProtocolError when neither source names a host or a user."""
    sources = tuple(name for name, src in (("dvd", ovf), ("imds", imds)) if src is not None)
    hostname = (ovf.hostname if ovf else None) or (imds.computer_name if imds else None)
    username = (ovf.username if ovf else None) or (imds.admin_username if imds else None)
    if not sources:
        raise ProtocolError("no provisioning data: no ovf-env.xml and no IMDS document")
    if not hostname:
        raise ProtocolError(
            "no host name: neither ovf-env.xml HostName nor IMDS compute.osProfile.computerName"
        )
    if not username:
        raise ProtocolError(
            "no user name: neither ovf-env.xml UserName nor IMDS compute.osProfile.adminUsername"
        )
    if ovf is not None and ovf.ssh_password_auth_stated:
        disable_password = ovf.disable_ssh_password_auth
    elif imds is not None and imds.disable_password_authentication is not None:
        disable_password = imds.disable_password_authentication
    else:
        disable_password = ovf.disable_ssh_password_auth if ovf else False
    keys = list(ovf.public_keys) if ovf else []
    seen = {(k.path, _key_material(k.value)) for k in keys if k.value}
    for k in imds.public_keys if imds else ():
        ident = (k.path, _key_material(k.value))
        if ident not in seen:
            seen.add(ident)
            keys.append(k)
    return ProvisioningData(
        hostname=hostname,
        username=username,
        password=ovf.password if ovf else None,
        custom_data=ovf.custom_data if ovf else None,
        disable_ssh_password_auth=disable_password,
        public_keys=tuple(keys),
        key_pairs=ovf.key_pairs if ovf else (),
        provision_guest_agent=ovf.provision_guest_agent if ovf else None,
        provision_guest_proxy_agent=ovf.provision_guest_proxy_agent if ovf else None,
        preprovisioned_vm=ovf.preprovisioned_vm if ovf else None,
        preprovisioned_vm_type=ovf.preprovisioned_vm_type if ovf else None,
        vm_id=imds.vm_id if imds else None,
        sources=sources,
    )
