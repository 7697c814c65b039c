"""The route table (network.py) and waiting for the network in the run (wireserver.py):
routes read from /proc/net/route, leases, the bound."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List

import pytest

from tests.conftest import VirtualTime
from waprov.config import Config
from waprov.network import parse_routes, route_covers
from waprov.overrides import Overrides
from waprov.system import System
from waprov.timing import Clock
from waprov.wireserver import NETWORK_WAIT, POLL, wait_for_network

HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
# An Azure VM's table as the kernel prints it (addresses in the kernel's byte order):
# default via 10.0.0.1, the subnet 10.0.0.0/24, and DHCP's host routes to the wireserver
# and IMDS.
AZURE = HEADER + (
    "eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
    "eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
    "eth0\t10813FA8\t0100000A\t0007\t0\t0\t100\tFFFFFFFF\t0\t0\t0\n"
    "eth0\tFEA9FEA9\t0100000A\t0007\t0\t0\t100\tFFFFFFFF\t0\t0\t0\n"
)
SUBNET_ONLY = HEADER + "eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
# qemu's user network as the e2e guest has it: 168.0.0.0/7, which holds 168.63.129.16.
QEMU = HEADER + "ens3\t000000A8\t00000000\t0001\t0\t0\t1024\t000000FE\t0\t0\t0\n"
DEFAULT_DOWN = HEADER + "eth0\t00000000\t0100000A\t0002\t0\t0\t100\t00000000\t0\t0\t0\n"


def covers(text: str, ip: str) -> bool:
    return route_covers(parse_routes(text), ip)


def test_routes_that_reach_the_wireserver() -> None:
    assert covers(AZURE, "168.63.129.16") and covers(AZURE, "169.254.169.254")
    assert covers(QEMU, "168.63.129.16")
    assert covers(AZURE.replace("eth0\t10813FA8", "eth0\t10813FA9"), "168.63.129.16")  # default


def test_routes_that_do_not() -> None:
    assert not covers(HEADER, "168.63.129.16")
    assert not covers(SUBNET_ONLY, "168.63.129.16")
    assert not covers(DEFAULT_DOWN, "168.63.129.16")  # RTF_UP not set
    assert not covers(HEADER + "garbage line\neth0\tzz\t0\t1\t0\t0\t0\tFF\n", "168.63.129.16")


def _host(tmp_path: Path, route: str) -> System:
    os.makedirs(tmp_path / "proc/net", exist_ok=True)
    (tmp_path / "proc/net/route").write_text(route)
    return System(root=str(tmp_path))


class RouteAppears(VirtualTime):
    """Virtual time in which DHCP configures the interface after `after` seconds."""

    def __init__(self, tmp_path: Path, after: float, route: str) -> None:
        super().__init__()
        self.path, self.route = tmp_path / "proc/net/route", route
        self.at = self.now + after

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if self.now >= self.at:
            self.path.write_text(self.route)


def test_the_run_waits_until_a_route_reaches_the_wireserver(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    system = _host(tmp_path, SUBNET_ONLY)
    vt = RouteAppears(tmp_path, 3.0, AZURE)
    clock = Clock(sleep=vt.sleep, monotonic=vt.monotonic)
    with caplog.at_level(logging.INFO, logger="waprov"):
        wait_for_network(system, Config(), Overrides(), clock)
    assert vt.at <= vt.now < vt.at + 2 * POLL
    assert {what for what, _ in clock.slept} == {"network"}
    assert "Waiting for the network" in caplog.text and "The network is up" in caplog.text


def test_a_dhcp_lease_naming_the_endpoint_is_enough(tmp_path: Path) -> None:
    system = _host(tmp_path, HEADER)
    os.makedirs(tmp_path / "run/systemd/netif/leases")
    (tmp_path / "run/systemd/netif/leases/2").write_text("ADDRESS=10.0.0.4\nOPTION_245=0A000063\n")
    vt = VirtualTime()
    clock = Clock(sleep=vt.sleep, monotonic=vt.monotonic)
    wait_for_network(system, Config(), Overrides(), clock)
    assert clock.slept == []


def test_without_a_route_the_wait_is_bounded_and_the_run_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    system = _host(tmp_path, HEADER)
    vt = VirtualTime()
    start = vt.now
    clock = Clock(sleep=vt.sleep, monotonic=vt.monotonic)
    with caplog.at_level(logging.INFO, logger="waprov"):
        wait_for_network(system, Config(), Overrides(), clock)
    assert NETWORK_WAIT <= vt.now - start < NETWORK_WAIT + 2 * POLL
    assert f"No route to the wireserver after {NETWORK_WAIT:g}s: going on" in caplog.text


def test_overridden_endpoints_are_not_waited_for(tmp_path: Path) -> None:
    system = _host(tmp_path, HEADER)
    clock = Clock(sleep=VirtualTime().sleep)
    given = Overrides(wireserver="127.0.0.1:8080", imds="http://127.0.0.1:8081")
    wait_for_network(system, Config(), given, clock)
    seen: List[float] = [s for _, s in clock.slept]
    assert seen == []
