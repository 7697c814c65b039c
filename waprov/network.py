"""Network facts: the route table, the primary interface, the kernel's address events
(the link watch), and re-announcing the host name by restarting DHCP on the primary
interface.

**The route table**: `/proc/net/route`, read through System and parsed once
(`read_routes`, `parse_routes`); `route_covers` (does an up route reach an address: the
wait for the wireserver), `routes_on` (the routes through an interface).

**The primary interface** (`primary_interface`) is the one of the default route with the
lowest metric, as WALinuxAgent's; with no default route (the local phase: no network yet)
the first interface that is not loopback (`sysfs_interfaces`: /sys/class/net by ifindex,
without loopback and without interfaces enslaved to another: the VF of accelerated
networking is enslaved to the synthetic NIC).

**The link watch** (rtnetlink). Re-announcing the host name restarts DHCP on the primary
interface. With systemd-networkd (`networkctl reconfigure`) the command returns before
networkd has handled it; a moment later networkd drops the interface's IPv4 address and
adds it back with the new lease. A connection begun in that window fails or hangs, and the
health report sent next would wait for its 30-s retry. A netlink socket subscribed before
the command queues every address change, so even a drop and re-add faster than any poll is
seen. `open_watch()` gives a `LinkWatch`; `next_event(timeout)` returns ("deladdr" |
"newaddr", ifindex) for IPv4 address changes, ("route", 0) for any IPv4 route change (a
wake-up: the caller reads the route table itself), ("lost", 0) when the kernel dropped
events, None only once `timeout` seconds have passed without an event.

**The re-announce** (`reannounce`): by the distribution's data where it has WALinuxAgent's
commands (RHEL >= 8.6: `systemctl restart NetworkManager` then `ip link set <if> down` and
`up`; RHEL 7 to 8.5: `service NetworkManager restart` when the ifcfg says NM_CONTROLLED=n|no,
then `ifdown`/`ifup`; SUSE: `ifup <if>`, once when it succeeds where WALinuxAgent runs it
three times), else by the network stack in use. Unlike WALinuxAgent, the wait for an
address is bounded, and after the restart the run waits (`settle`) until a dropped address
and its routes are back.

Only the standard library is imported here (psutil when asked): the local phase imports
this module for the route table and the primary interface.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import struct
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Protocol, Sequence, Tuple

from waprov.distro import Distro
from waprov.errors import CommandNotFound, HostError
from waprov.system import System
from waprov.timing import Clock

log = logging.getLogger("waprov")
IFF_LOOPBACK = 0x8
RTF_UP = 0x1
ADDRESS_WAIT = 10.0  # seconds to wait for the primary interface's IPv4 address
RESTART_TRIES, RESTART_WAIT = 3, 5.0
# After the restart command: how long an address drop may take to come (networkd handles
# `networkctl reconfigure` after the command returns: 0.2-0.7 s later under TCG; the
# other stacks drop and restore within their commands), and to be undone.
# RHEL and Fedora: NetworkManager sees the link bounce after `ip link` returns, as networkd;
# SUSE's `ifup` (wicked) returns when the interface is configured.
DROP_WAIT = {"networkd": 2.0, "rhel": 2.0, "fedora": 2.0}
RESTORE_WAIT, RESTORE_POLL = 30.0, 0.2
IFCFG_DIR = "/etc/sysconfig/network-scripts"
Interfaces = Callable[[], List[Tuple[str, bool]]]  # [(name, has IPv4)] in system order


# ---- the route table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One row of /proc/net/route. Addresses are 8 hex digits as the kernel prints them (its
    byte order); a field the row lacks, or that is not a number, is None (the metric: 0)."""

    iface: str
    destination: str
    gateway: str = ""
    flags: Optional[int] = None
    metric: int = 0
    mask: Optional[int] = None

    @property
    def default(self) -> bool:
        return self.destination == "00000000"


def _number(fields: Sequence[str], index: int, base: int) -> Optional[int]:
    try:
        return int(fields[index], base)
    except (IndexError, ValueError):
        return None


def parse_routes(text: str) -> List[Route]:
    """/proc/net/route's rows, after its header line."""
    routes = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 2:
            continue
        gateway = fields[2] if len(fields) > 2 else ""
        metric = _number(fields, 6, 10) or 0
        routes.append(
            Route(fields[0], fields[1], gateway, _number(fields, 3, 16), metric, _number(fields, 7, 16))
        )
    return routes


def read_routes(system: System) -> List[Route]:
    """The routes in /proc/net/route (none when it cannot be read)."""
    try:
        return parse_routes((system.read("/proc/net/route") or b"").decode("ascii", "replace"))
    except HostError:
        return []


def _le(ip: str) -> int:
    """An IPv4 address as /proc/net/route prints it (the kernel's bytes, read as hex)."""
    packed: int = struct.unpack("<I", socket.inet_aton(ip))[0]
    return packed


def route_covers(routes: Sequence[Route], ip: str) -> bool:
    """Whether a route that is up reaches `ip`."""
    target = _le(ip)
    for route in routes:
        dest = _number((route.destination,), 0, 16)
        if dest is not None and route.flags is not None and route.mask is not None:
            if route.flags & RTF_UP and target & route.mask == dest:
                return True
    return False


def routes_on(routes: Sequence[Route], ifname: str) -> Tuple[bool, bool]:
    """(any route, a default route) through `ifname`."""
    mine = [route for route in routes if route.iface == ifname]
    return bool(mine), any(route.default for route in mine)


# ---- the primary interface ---------------------------------------------------------------------


def sysfs_interfaces(system: System) -> List[Tuple[str, bool]]:
    """[(name, False)] of /sys/class/net's interfaces by ifindex, without loopback
    (IFF_LOOPBACK) and without those enslaved to another (a `master` link)."""
    found = []
    for path in system.glob("/sys/class/net/*"):
        name = path.rsplit("/", 1)[1]
        try:
            index = int((system.read(f"{path}/ifindex", limit=32) or b"").strip())
            flags = int((system.read(f"{path}/flags", limit=32) or b"0").strip(), 16)
        except (HostError, ValueError):
            continue
        if flags & IFF_LOOPBACK or name == "lo" or system.kind(f"{path}/master") != "absent":
            continue
        found.append((index, name))
    return [(name, False) for _, name in sorted(found)]


def primary_interface(
    routes: Sequence[Route], addresses: Sequence[Tuple[str, bool]]
) -> Tuple[Optional[str], bool]:
    """(interface, has IPv4): the interface of the default route with the lowest metric
    (the first of equals), else the first non-loopback one; `addresses` is
    [(name, has IPv4)] in system order."""
    has = dict(addresses)
    defaults = [route for route in routes if route.default]
    if defaults:
        best = min(defaults, key=lambda route: route.metric)
        return best.iface, has.get(best.iface, False)
    for ifname, ipv4 in addresses:
        if ifname != "lo":
            return ifname, ipv4
    return None, False


def local_interfaces() -> List[Tuple[str, bool]]:
    # not through System: no file holds the interfaces' addresses (psutil asks getifaddrs)
    import psutil

    return [
        (name, any(a.family == socket.AF_INET for a in addrs))
        for name, addrs in psutil.net_if_addrs().items()
    ]


# ---- the link watch ----------------------------------------------------------------------------

NETLINK_ROUTE = 0
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, seq, pid
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index

Event = Tuple[str, int]


class LinkWatch(Protocol):
    def next_event(self, timeout: float) -> Optional[Event]: ...

    def close(self) -> None: ...


def parse(data: bytes) -> List[Event]:
    """The events in one netlink datagram (others, and anything truncated, are skipped)."""
    events: List[Event] = []
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, kind = _NLMSGHDR.unpack_from(data, off)[:2]
        if length < _NLMSGHDR.size or off + length > len(data):
            break
        body = off + _NLMSGHDR.size
        if kind in (RTM_NEWADDR, RTM_DELADDR) and length >= _NLMSGHDR.size + _IFADDRMSG.size:
            family, _, _, _, index = _IFADDRMSG.unpack_from(data, body)
            if family == socket.AF_INET:
                events.append(("newaddr" if kind == RTM_NEWADDR else "deladdr", index))
        elif kind in (RTM_NEWROUTE, RTM_DELROUTE):
            events.append(("route", 0))
        off += (length + 3) & ~3
    return events


class NetlinkWatch:
    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            self._sock.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE))
            self._sock.setblocking(False)
        except OSError:
            self._sock.close()
            raise
        self._queued: List[Event] = []

    def next_event(self, timeout: float) -> Optional[Event]:
        deadline = time.monotonic() + max(timeout, 0.0)
        while not self._queued:
            ready, _, _ = select.select([self._sock], [], [], max(deadline - time.monotonic(), 0.0))
            if not ready:
                return None
            try:
                self._queued = parse(self._sock.recv(65536)) or [("route", 0)]  # other news: a wake-up
            except BlockingIOError:
                continue
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                # the kernel dropped events (the socket's buffer was full): any change may be lost
                self._queued = [("lost", 0)]
        return self._queued.pop(0)

    def close(self) -> None:
        self._sock.close()


class NoWatch:
    """Where there are no kernel events to watch (commands are faked, a dry run): never an
    event, and no waiting for one."""

    def next_event(self, timeout: float) -> Optional[Event]:
        return None

    def close(self) -> None:
        pass


def open_watch() -> LinkWatch:
    """A netlink watch (OSError when netlink cannot be opened)."""
    return NetlinkWatch()


# ---- the re-announce ---------------------------------------------------------------------------


def nm_controlled(system: System, ifname: str) -> bool:
    """Whether NetworkManager manages `ifname`: not when its ifcfg says NM_CONTROLLED=n or
    no (quotes stripped), as WA's get_nm_controlled; yes when absent or unreadable."""
    from waprov.sysconfig import value_of

    path = f"{IFCFG_DIR}/ifcfg-{ifname}"
    try:
        raw = system.read(path, limit=1 << 20)
        value = value_of(raw, path, "NM_CONTROLLED") if raw is not None else None
    except HostError as e:
        log.debug("NM_CONTROLLED of %s unknown (%s): taken as yes", ifname, e)
        return True
    return (value or "").replace('"', "").replace("'", "").strip() not in ("n", "no")


def network_stack(system: System) -> str:
    """ "networkd", "networkmanager" or "ifupdown", from the running processes."""
    from waprov.procfs import process_names

    names = set(process_names(system))
    if "systemd-networkd" in names:
        return "networkd"
    if "NetworkManager" in names:
        return "networkmanager"
    return "ifupdown"


def reannounce(
    system: System,
    distro: Distro,
    clock: Clock,
    name: str,
    link_watch: Optional[Callable[[], LinkWatch]],
    interfaces: Interfaces = local_interfaces,
    stack: Optional[str] = None,
) -> None:
    """Re-announce the host name `name` on the primary interface, watching the address
    after the restart with `link_watch()` (None: no watch, as in a dry run). Bounded: wait
    at most ADDRESS_WAIT for an IPv4 address, try the restart a few times, then give up
    with a warning (the name is set either way)."""
    deadline = clock.deadline(ADDRESS_WAIT)
    commands: List[Tuple[str, ...]]
    while True:
        ifname, has_ipv4 = primary_interface(read_routes(system), interfaces())
        if ifname is None:
            log.info("No network interface besides loopback: the host name is not re-announced")
            return
        if has_ipv4:
            break
        if clock.remaining(deadline) <= 0:
            log.warning(
                "%s has no IPv4 address after %gs: the host name is not re-announced", ifname, ADDRESS_WAIT
            )
            return
        clock.sleep(1.0, f"an IPv4 address on {ifname}")
    first: Tuple[str, ...] = ()
    if stack is None and distro.restart_if:  # WALinuxAgent's commands for this family
        stack = distro.family
        commands = list(distro.restart_if_argvs(ifname))
        if distro.nm_restart and (distro.nm_restart_always or not nm_controlled(system, ifname)):
            first = distro.nm_restart
    else:
        stack = stack or ("networkd" if distro.flatcar else network_stack(system))
        if stack == "networkd":
            commands = [("networkctl", "reconfigure", ifname)]
        elif stack == "networkmanager":
            # `nmcli device reapply` of an unchanged profile starts no DHCP exchange
            # (NetworkManager 1.42, seen in the e2e boot); a new DHCP host name on the
            # device's applied connection (the saved profile is left alone) makes it send
            # a REQUEST that carries the name, the address kept.
            commands = [("nmcli", "device", "modify", ifname, "ipv4.dhcp-hostname", name)]
        else:
            commands = [("ifdown", ifname), ("ifup", ifname)]
    default_route = routes_on(read_routes(system), ifname)[1]
    watch = _open_watch(link_watch)
    try:
        if first:  # once, its failure ignored (WALinuxAgent does not look at it)
            try:
                system.run(first, timeout=90)
            except HostError as e:
                log.warning("%s failed (going on with the interface restart): %s", " ".join(first), e)
        for attempt in range(1, RESTART_TRIES + 1):
            try:
                for argv in commands:
                    system.run(argv, timeout=60)
            except HostError as e:
                log.warning("Re-announcing the host name on %s, attempt %d: %s", ifname, attempt, e)
                if isinstance(e, CommandNotFound):
                    return
            else:
                log.info("Re-announced the host name on %s (%s)", ifname, stack)
                try:
                    settle(system, clock, watch, ifname, DROP_WAIT.get(stack, 0.0), interfaces, default_route)
                except OSError as e:
                    log.warning("Watching %s after the network restart failed (%s): going on", ifname, e)
                return
            if attempt < RESTART_TRIES:
                clock.sleep(RESTART_WAIT, "network restart")
    finally:
        watch.close()


def _open_watch(link_watch: Optional[Callable[[], LinkWatch]]) -> LinkWatch:
    if link_watch is None:
        return NoWatch()
    try:
        return link_watch()
    except OSError as e:
        log.warning("Cannot watch address changes (netlink: %s): no wait after the network restart", e)
        return NoWatch()


def settle(
    system: System,
    clock: Clock,
    watch: LinkWatch,
    ifname: str,
    drop_wait: float,
    interfaces: Interfaces,
    default_route: bool,
) -> None:
    """After the restart: if the interface's IPv4 address goes away (seen within
    `drop_wait` seconds, or already during the commands), wait until it is back with its
    routes (the default route when it had it), at most RESTORE_WAIT seconds. No drop: no
    wait beyond `drop_wait`."""
    index = _ifindex(system, ifname)
    if index is None:
        return
    started = time.monotonic()
    deadline = clock.deadline(drop_wait)
    while True:
        event = watch.next_event(clock.remaining(deadline))
        if event is None:
            log.debug("No address change on %s within %gs of the network restart", ifname, drop_wait)
            return
        if event in (("deladdr", index), ("lost", 0)):
            break

    def back() -> bool:
        any_route, default = routes_on(read_routes(system), ifname)
        return dict(interfaces()).get(ifname, False) and (default if default_route else any_route)

    deadline = clock.deadline(RESTORE_WAIT)
    while not back():
        if clock.remaining(deadline) <= 0:
            route = "default route" if default_route else "route"
            after = f"{RESTORE_WAIT:g}s after the network restart: going on"
            log.warning("%s has no IPv4 address and %s %s", ifname, route, after)
            return
        watch.next_event(min(RESTORE_POLL, clock.remaining(deadline)))
    took = time.monotonic() - started
    log.info("%s has its address and route back (%.3fs after the restart)", ifname, took)


def _ifindex(system: System, ifname: str) -> Optional[int]:
    try:
        raw = system.read(f"/sys/class/net/{ifname}/ifindex", limit=32)
        return int((raw or b"").strip())
    except (HostError, ValueError):
        log.debug("No ifindex for %s: no wait after the network restart", ifname)
        return None
