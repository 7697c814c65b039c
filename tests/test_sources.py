"""Gathering the data: DVD (here WAPROV_OVF_DIR) and IMDS together, apart, and failing."""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat

import pytest

from tests.conftest import DATA, VirtualTime, closed_port, virtual_clock
from tests.fakefabric import FakeFabric, status
from tests.fakerunner import ScriptedRunner
from waprov.config import Config
from waprov.errors import ProtocolError
from waprov.http import HttpClient
from waprov.overrides import Overrides
from waprov.sources import Fabric, gather
from waprov.system import System
from waprov.timing import Clock


def make(root: str, imds: str, with_ovf: bool = True, ovf_dir: bool = True) -> Fabric:
    os.makedirs(f"{root}/ovf")
    os.makedirs(f"{root}/dev")
    if with_ovf:
        shutil.copy(os.path.join(DATA, "ovf", "full.xml"), f"{root}/ovf/ovf-env.xml")
    clock = virtual_clock()
    return Fabric(
        system=System(root=root, runner=ScriptedRunner()),
        config=Config(),
        overrides=Overrides(imds=imds, ovf_dir="/ovf" if ovf_dir else None),
        clock=clock,
        client=HttpClient(clock),
    )


def imds_waits(fabric: Fabric) -> float:
    return sum(s for what, s in fabric.clock.slept if what == "imds")


def test_dvd_and_imds_are_merged(tmp_path: str, fabric: FakeFabric) -> None:
    f = make(str(tmp_path), fabric.imds_url)
    data = gather(f)
    assert data.sources == ("dvd", "imds") and data.hostname == "test-vm-01"
    assert data.vm_id == "2f7bd0b4-5b3d-4c2a-9a52-3f1e7f2c1d10"
    saved = f"{tmp_path}/var/lib/waagent/ovf-env.xml"
    assert stat.S_IMODE(os.stat(saved).st_mode) == 0o600


def test_an_unreachable_imds_delays_a_dvd_provisioning_by_seconds_only(
    tmp_path: str, fabric: FakeFabric
) -> None:
    fabric.script("imds", *[status(500)] * 50)
    f = make(str(tmp_path), fabric.imds_url)
    data = gather(f)
    assert data.sources == ("dvd",) and data.username == "azureuser"
    assert imds_waits(f) <= 3.0


def test_a_refused_imds_connection_does_not_hold_up_the_dvd(tmp_path: str) -> None:
    f = make(str(tmp_path), f"http://127.0.0.1:{closed_port()}")
    assert gather(f).sources == ("dvd",)
    assert imds_waits(f) <= 3.0


def test_imds_alone_when_there_is_no_ovf(tmp_path: str, fabric: FakeFabric) -> None:
    f = make(str(tmp_path), fabric.imds_url, with_ovf=False)
    data = gather(f)
    assert data.sources == ("imds",) and (data.hostname, data.username) == ("imds-host", "azureuser")
    assert not os.path.exists(f"{tmp_path}/var/lib/waagent/ovf-env.xml")


def test_imds_alone_when_there_is_no_dvd_device(tmp_path: str, fabric: FakeFabric) -> None:
    f = make(str(tmp_path), fabric.imds_url, ovf_dir=False)
    assert gather(f).sources == ("imds",)
    assert f.system.runner.calls == []  # type: ignore[attr-defined]


def test_imds_alone_gets_the_long_deadline(tmp_path: str, fabric: FakeFabric) -> None:
    fabric.script("imds", *[status(503)] * 20)
    f = make(str(tmp_path), fabric.imds_url, with_ovf=False)
    assert gather(f).sources == ("imds",)
    assert imds_waits(f) == 20.0


def test_no_source_at_all_names_both_reasons(tmp_path: str) -> None:
    f = make(str(tmp_path), f"http://127.0.0.1:{closed_port()}", ovf_dir=False)
    with pytest.raises(ProtocolError) as e:
        gather(f)
    text = str(e.value)
    assert text.startswith(
        "no provisioning data: Failed to get dvd device from /dev: no provisioning DVD device"
    )
    assert "IMDS: GET" in text and "connection refused" in text
    assert imds_waits(f) >= 299.0  # IMDS was the only hope: it got its 300 s


def test_an_invalid_ovf_fails_even_if_imds_works(tmp_path: str, fabric: FakeFabric) -> None:
    f = make(str(tmp_path), fabric.imds_url, with_ovf=False)
    with open(f"{tmp_path}/ovf/ovf-env.xml", "w") as fh:
        fh.write("<Environment xmlns='http://schemas.dmtf.org/ovf/environment/1'/>")
    with pytest.raises(ProtocolError, match="Failed to validate OVF: ProvisioningSection not found"):
        gather(f)
    assert fabric.requests_for("imds") == []


def test_the_ovf_wins_over_imds(tmp_path: str) -> None:
    doc = {"compute": {"osProfile": {"adminUsername": "other", "computerName": "other-host"}}}
    with FakeFabric(f"{tmp_path}/fab", imds=doc, with_certificates=False) as fab:
        f = make(f"{tmp_path}/root", fab.imds_url)
        data = gather(f)
    assert (data.hostname, data.username) == ("test-vm-01", "azureuser")


class LateDevices(VirtualTime):
    """Virtual time in which, after 2 s, DHCP configures the NIC and the DVD's file appears."""

    def __init__(self, root: str) -> None:
        super().__init__()
        self.root, self.at = root, self.now + 2.0

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if self.now >= self.at and not os.path.exists(f"{self.root}/proc/net/route"):
            os.makedirs(f"{self.root}/proc/net")
            with open(f"{self.root}/proc/net/route", "w", encoding="ascii") as out:
                out.write("Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n")
                out.write("eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\n")
            shutil.copy(os.path.join(DATA, "ovf", "full.xml"), f"{self.root}/ovf/ovf-env.xml")


def test_a_dvd_missing_at_first_is_looked_for_again_once_the_network_is_up(
    tmp_path: str, fabric: FakeFabric
) -> None:
    f = make(str(tmp_path), fabric.imds_url, with_ovf=False)
    vt = LateDevices(str(tmp_path))
    clock = Clock(sleep=vt.sleep, monotonic=vt.monotonic)
    data = gather(dataclasses.replace(f, clock=clock, client=HttpClient(clock)))
    assert data.sources == ("dvd", "imds") and data.hostname == "test-vm-01"
    assert vt.at <= vt.now and {what for what, _ in clock.slept} == {"network"}
