"""Waiting for the network inside the run, so that waprov.service need not start after
network-online.target: the DVD is read and the host keys are being made while DHCP runs.

`wait_for_network()` polls until an up IPv4 route in /proc/net/route covers the
wireserver's address (the DHCP host route, the subnet or a default route) or a DHCP lease
names the endpoint (option 245), for NETWORK_WAIT seconds at most (as long as
systemd-networkd-wait-online waits); then the run goes on and the wireserver's and IMDS's
own retries apply. Endpoints given by WAPROV_WIRESERVER and WAPROV_IMDS are taken as
reachable (they are loopback in tests).
"""

from __future__ import annotations

import logging
import socket
import struct
import time

from waprov.config import Config
from waprov.overrides import Overrides
from waprov.system import System
from waprov.timing import Clock
from waprov.wireserver import DEFAULT_ENDPOINT, discover_endpoint

log = logging.getLogger("waprov")
NETWORK_WAIT = 120.0
POLL = 0.2
RTF_UP = 0x1


def _le(ip: str) -> int:
    """An IPv4 address as /proc/net/route prints it (the kernel's bytes, read as hex)."""
    packed: int = struct.unpack("<I", socket.inet_aton(ip))[0]
    return packed


def route_covers(text: str, ip: str) -> bool:
    """Whether a route that is up in /proc/net/route's `text` reaches `ip`."""
    target = _le(ip)
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            dest, flags, mask = int(fields[1], 16), int(fields[3], 16), int(fields[7], 16)
        except ValueError:
            continue
        if flags & RTF_UP and target & mask == dest:
            return True
    return False


def network_ready(system: System, config: Config, overrides: Overrides) -> bool:
    """A route reaches 168.63.129.16, or a DHCP lease names the endpoint (discovery's own
    lease readers)."""
    raw = system.read("/proc/net/route") or b""
    if route_covers(raw.decode("ascii", "replace"), DEFAULT_ENDPOINT):
        return True
    _, how = discover_endpoint(system, config, overrides)
    return how.startswith(("dhclient lease", "systemd-networkd lease"))


def wait_for_network(system: System, config: Config, overrides: Overrides, clock: Clock) -> None:
    if overrides.wireserver and overrides.imds:
        return
    if network_ready(system, config, overrides):
        return
    started = time.monotonic()
    log.info("Waiting for the network (no route to the wireserver yet)")
    deadline = clock.deadline(NETWORK_WAIT)
    while not network_ready(system, config, overrides):
        if clock.remaining(deadline) <= 0:
            log.warning(
                "No route to the wireserver after %gs: going on (the wireserver and IMDS retry)", NETWORK_WAIT
            )
            return
        clock.sleep(POLL, "network")
    log.info("The network is up (waited %.1fs)", time.monotonic() - started)
