"""Address events of the kernel (rtnetlink), for the wait after a network restart.

Re-announcing the host name restarts DHCP on the primary interface. With systemd-networkd
(`networkctl reconfigure`) the command returns before networkd has handled it; a moment
later networkd drops the interface's IPv4 address and adds it back with the new lease.
A connection begun in that window fails or hangs, and the health report sent next would
wait for its 30-s retry. A netlink socket subscribed before the command queues every
address change, so even a drop and re-add faster than any poll is seen.

`open_watch()` gives a `LinkWatch`; `next_event(timeout)` returns ("deladdr" | "newaddr",
ifindex) for IPv4 address changes, ("route", 0) for any IPv4 route change (a wake-up: the
caller reads the route table itself), ("lost", 0) when the kernel dropped events, None
only once `timeout` seconds have passed without an event.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import time
from typing import List, Optional, Protocol, Tuple

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
