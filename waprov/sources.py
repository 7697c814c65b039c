"""Where the provisioning data comes from: the DVD (or WAPROV_OVF_DIR) and IMDS.

`load_ovf()` reads, validates and saves the password-free copy of ovf-env.xml to
`<Lib.Dir>/ovf-env.xml` (0600) before releasing the DVD; an invalid OVF is never saved
and fails provisioning. `gather()` adds IMDS: with an OVF it waits a few seconds at
most for IMDS (which then only adds to the OVF); without one (no DVD device), IMDS is the
source and gets the full deadline. IMDS waits for the network first (`network.py`: the
run starts before network-online.target). The two are merged by `model.merge()`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional

from waprov.config import Config
from waprov.dvd import (
    MountTable,
    NoDvdError,
    find_dvd_device,
    mount_dvd,
    read_ovf_file,
    release_dvd,
    system_mounts,
)
from waprov.errors import ProtocolError
from waprov.http import HttpClient
from waprov.imds import IMDS_BASE, ImdsData, fetch_imds
from waprov.model import ProvisioningData, merge
from waprov.network import wait_for_network
from waprov.overrides import Overrides
from waprov.ovf import OvfEnv, decode_ovf, parse_ovf, strip_password
from waprov.system import System
from waprov.timing import Clock

log = logging.getLogger("waprov")
IMDS_ONLY_DEADLINE = 300.0  # azure-init's and cloud-init's IMDS budget
IMDS_EXTRA_DEADLINE = 3.0  # with an OVF in hand, IMDS may delay provisioning this much


@dataclass(frozen=True)
class Fabric:
    """What reading the data needs; one per run."""

    system: System
    config: Config
    overrides: Overrides
    clock: Clock
    client: HttpClient
    distro_id: str = ""
    mounts: MountTable = system_mounts


def save_ovf_copy(fabric: Fabric, data: bytes) -> None:
    lib = fabric.config.lib_dir
    if not os.path.isdir(fabric.system.path(lib)):
        fabric.system.makedirs(lib, 0o700)
    fabric.system.write(os.path.join(lib, "ovf-env.xml"), strip_password(decode_ovf(data)), 0o600)


def load_ovf(fabric: Fabric) -> OvfEnv:
    """The validated OVF; NoDvdError when there is no DVD (or no file in WAPROV_OVF_DIR)."""
    dvd = None
    if fabric.overrides.ovf_dir is not None:
        directory = fabric.overrides.ovf_dir
        if not os.path.isfile(fabric.system.path(os.path.join(directory, "ovf-env.xml"))):
            raise NoDvdError(f"no ovf-env.xml in WAPROV_OVF_DIR={directory}")
    else:
        device = find_dvd_device(fabric.system)
        dvd = mount_dvd(fabric.system, fabric.clock, device, fabric.config.dvd_mount_point, fabric.mounts)
        directory = dvd.mount_point
    data = read_ovf_file(fabric.system, directory)
    env = parse_ovf(data)  # an invalid OVF is not saved, and the DVD stays as it is (WA §4.3)
    save_ovf_copy(fabric, data)
    if dvd is not None:
        release_dvd(fabric.system, dvd, fabric.distro_id)
    return env


def gather(fabric: Fabric) -> ProvisioningData:
    """The merged data; ProtocolError naming both sources when neither gives any. The
    DVD is read first, at once; IMDS waits for the network. Without a DVD at the first
    look, it is looked for once more when the network is up (a slow device probe)."""
    ovf: Optional[OvfEnv] = None
    dvd_reason = ""
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
