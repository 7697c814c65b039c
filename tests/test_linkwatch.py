"""The wait after the host name's network restart (network.settle) and the kernel
events it reads (network.py's link watch): netlink parsing, a real netlink socket in a private
network namespace, and the wait's decisions with a scripted watch and a virtual clock."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
from typing import Any, Callable, List, Optional, Tuple

import pytest

from tests.conftest import on_host, virtual_clock, waits
from tests.fakerunner import ScriptedRunner, fail, ok
from waprov.config import Config
from waprov.distro import Distro
from waprov.model import ProvisioningData
from waprov.network import (
    DROP_WAIT,
    RESTORE_WAIT,
    RTM_DELADDR,
    RTM_NEWADDR,
    RTM_NEWROUTE,
    Event,
    LinkWatch,
    NoWatch,
    _open_watch,
    parse,
    reannounce,
)
from waprov.steps import Ctx
from waprov.system import System

ROUTE = "Iface\tDestination\tGateway\tFlags\neth0\t00000000\t0100A8C0\t0003\n"
NO_ROUTE = "Iface\tDestination\tGateway\tFlags\n"


def message(kind: int, body: bytes) -> bytes:
    data = struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body
    return data + b"\0" * (-len(data) % 4)


def addr(kind: int, family: int, index: int, extra: bytes = b"\1\2\3") -> bytes:
    return message(kind, struct.pack("=BBBBI", family, 24, 0, 0, index) + extra)


def test_parse_reads_ipv4_address_changes_and_route_wakeups_and_skips_the_rest() -> None:
    data = (
        addr(RTM_NEWADDR, socket.AF_INET, 2)
        + addr(RTM_DELADDR, socket.AF_INET6, 2)  # not IPv4
        + message(RTM_NEWROUTE, b"\0" * 12)
        + message(3, b"")  # NLMSG_DONE: not ours
        + addr(RTM_DELADDR, socket.AF_INET, 7)
    )
    assert parse(data) == [("newaddr", 2), ("route", 0), ("deladdr", 7)]
    whole = addr(RTM_DELADDR, socket.AF_INET, 3)
    assert parse(whole[:-4]) == []  # truncated: skipped, not misread
    assert parse(message(RTM_NEWADDR, b"\2\0")) == []  # too short for an ifaddrmsg
    assert parse(struct.pack("=IHHII", 4, RTM_NEWADDR, 0, 0, 0)) == []  # a bogus length ends the walk


REAL_WATCH = textwrap.dedent(
    """
    import json, subprocess, sys
    from waprov.network import open_watch
    def ip(*a):
        subprocess.run(["ip", *a], check=True)
    ip("link", "set", "lo", "up")  # the namespace's only interface (no dummy module needed)
    index = int(open("/sys/class/net/lo/ifindex").read())
    watch = open_watch()  # subscribed from here on: what follows is queued
    ip("addr", "add", "10.9.8.7/24", "dev", "lo")
    ip("addr", "del", "10.9.8.7/24", "dev", "lo")
    ip("-6", "addr", "add", "fd00::7/64", "dev", "lo", "nodad")
    events = []
    while True:
        e = watch.next_event(0.5)
        if e is None:
            break
        events.append(e)
    watch.close()
    print(json.dumps({"index": index, "events": events}))
    """
)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2")
def test_a_real_netlink_watch_sees_an_address_come_and_go_in_a_private_network_namespace() -> None:
    p = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", REAL_WATCH],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    ours = [tuple(e) for e in out["events"] if e[0] in ("newaddr", "deladdr")]
    # the IPv6 address makes no address event; the IPv4 one comes and goes, in order
    assert ours == [("newaddr", out["index"]), ("deladdr", out["index"])], out
    assert ("route", 0) in [tuple(e) for e in out["events"]]  # its subnet route came and went


# ---- the wait, scripted -----------------------------------------------------------------------


class ScriptedWatch:
    """Hands out `script` in order: an event, or None for "`timeout` passes without one"
    (the virtual clock sleeps it); a callable is run (a change of the host) and skipped."""

    def __init__(self, ctx: Ctx, script: List[Any]) -> None:
        self.ctx, self.script, self.closed = ctx, script, False  # shared: the test sees what is left
        self.asked: List[float] = []

    def next_event(self, timeout: float) -> Optional[Event]:
        self.asked.append(timeout)
        while self.script and callable(self.script[0]):
            self.script.pop(0)()
        item = self.script.pop(0) if self.script else None
        if item is None:
            self.ctx.clock.sleep(timeout, "event")
        return item

    def close(self) -> None:
        self.closed = True


class Host:
    """A sandbox root with eth0 (ifindex 2), its route table and address, and a watch."""

    def __init__(
        self,
        tmp_path: Any,
        runner: ScriptedRunner,
        script: List[Any],
        link_watch: Optional[Callable[[], LinkWatch]] = None,
    ) -> None:
        self.root = str(tmp_path)
        self.has_ipv4 = True
        self.write("/sys/class/net/eth0/ifindex", "2\n")
        self.write("/proc/net/route", ROUTE)
        self.watch: Optional[ScriptedWatch] = None
        system = System(root=self.root, runner=runner)
        pd = ProvisioningData(hostname="vm", username="azureuser")
        self.ctx = Ctx(system, Config(), Distro("debian"), pd, virtual_clock(), "ID")
        self.ctx.link_watch = link_watch or self.open_watch
        self.script = script

    def write(self, path: str, text: str) -> None:
        full = os.path.join(self.root, path.lstrip("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text)

    def open_watch(self) -> ScriptedWatch:
        self.watch = ScriptedWatch(self.ctx, self.script)
        return self.watch

    def interfaces(self) -> List[Tuple[str, bool]]:
        return [("lo", True), ("eth0", self.has_ipv4)]

    def drop(self) -> Callable[[], None]:
        def do() -> None:
            self.has_ipv4 = False
            self.write("/proc/net/route", NO_ROUTE)

        return do

    def back(self, route: bool = True) -> Callable[[], None]:
        def do() -> None:
            self.has_ipv4 = True
            if route:
                self.write("/proc/net/route", ROUTE)

        return do


def test_after_networkd_drops_the_address_the_run_waits_until_address_and_route_are_back(
    tmp_path: Any, caplog: Any
) -> None:
    h = Host(tmp_path, ScriptedRunner(networkctl=ok), [])
    # networkd drops the address after the command returned; address first, route later
    h.script += [("route", 0), h.drop(), ("deladdr", 2), None, h.back(route=False), ("newaddr", 2), None]
    h.script += [h.back(), ("route", 0)]
    with caplog.at_level(logging.INFO, logger="waprov"):
        reannounce(*on_host(h.ctx), h.interfaces, "networkd")
    assert h.watch is not None and h.watch.closed and h.script == []
    assert waits(h.ctx.clock) == [0.2, 0.2]  # two polls without news, then the route's event
    assert h.watch.asked[0] == DROP_WAIT["networkd"]
    assert "eth0 has its address and route back" in caplog.text


def test_a_drop_and_re_add_faster_than_any_poll_is_still_seen_and_ends_the_wait_at_once(
    tmp_path: Any,
) -> None:
    h = Host(tmp_path, ScriptedRunner(networkctl=ok), [])
    h.script += [("deladdr", 2), ("newaddr", 2)]  # queued: the host is already back
    reannounce(*on_host(h.ctx), h.interfaces, "networkd")
    assert waits(h.ctx.clock) == [] and h.script == [("newaddr", 2)]


def test_no_drop_within_the_drop_wait_ends_the_wait_then(tmp_path: Any) -> None:
    h = Host(tmp_path, ScriptedRunner(networkctl=ok), [])
    h.script += [("deladdr", 5), ("newaddr", 2), ("route", 0), None]  # other interfaces, news
    reannounce(*on_host(h.ctx), h.interfaces, "networkd")
    assert sum(waits(h.ctx.clock)) == pytest.approx(DROP_WAIT["networkd"])


def test_an_address_that_never_comes_back_is_waited_for_boundedly_with_a_warning(
    tmp_path: Any, caplog: Any
) -> None:
    h = Host(tmp_path, ScriptedRunner(networkctl=ok), [])
    h.script += [h.drop(), ("deladdr", 2)]
    reannounce(*on_host(h.ctx), h.interfaces, "networkd")
    assert sum(waits(h.ctx.clock)) == pytest.approx(RESTORE_WAIT)
    assert "no IPv4 address and default route 30s after the network restart" in caplog.text


@pytest.mark.parametrize(
    "stack, argv",
    [
        ("ifupdown", [["ifdown", "eth0"], ["ifup", "eth0"]]),
        # the applied connection's DHCP host name (an unchanged reapply sends nothing)
        ("networkmanager", [["nmcli", "device", "modify", "eth0", "ipv4.dhcp-hostname", "vm"]]),
    ],
)
def test_other_stacks_wait_only_when_their_commands_dropped_the_address(
    tmp_path: Any, stack: str, argv: List[List[str]]
) -> None:
    runner = ScriptedRunner(ifdown=ok, ifup=ok, nmcli=ok)
    h = Host(tmp_path, runner, [None])
    reannounce(*on_host(h.ctx), h.interfaces, stack)  # nothing queued: no waiting for a drop
    assert runner.calls == argv and h.watch is not None and h.watch.asked == [0.0]
    assert waits(h.ctx.clock) == [0.0]

    runner = ScriptedRunner(ifdown=ok, ifup=ok, nmcli=ok)
    h = Host(tmp_path / "again", runner, [])
    h.script += [("newaddr", 2), h.drop(), ("deladdr", 2), None, h.back(), ("newaddr", 2)]
    reannounce(*on_host(h.ctx), h.interfaces, stack)  # the drop happened during the commands
    assert waits(h.ctx.clock) == [0.2] and h.script == []


def test_the_watch_is_closed_and_nothing_waited_for_when_the_restart_fails(tmp_path: Any) -> None:
    h = Host(tmp_path, ScriptedRunner(networkctl=fail("no such link")), [("deladdr", 2)])
    reannounce(*on_host(h.ctx), h.interfaces, "networkd")
    assert h.watch is not None and h.watch.closed and h.watch.asked == []
    assert waits(h.ctx.clock) == [5.0, 5.0]


def test_netlink_that_cannot_be_opened_or_read_is_a_warning_not_a_failure(tmp_path: Any, caplog: Any) -> None:
    def refused() -> LinkWatch:
        raise PermissionError(1, "Operation not permitted")

    class Broken(NoWatch):
        def next_event(self, timeout: float) -> Optional[Event]:
            raise OSError(22, "Invalid argument")

    runner = ScriptedRunner(networkctl=ok)
    h = Host(tmp_path / "open", runner, [], link_watch=refused)
    reannounce(*on_host(h.ctx), h.interfaces, "networkd")
    assert "Cannot watch address changes (netlink: [Errno 1] Operation not permitted)" in caplog.text
    assert runner.calls == [["networkctl", "reconfigure", "eth0"]]

    h = Host(tmp_path / "read", runner, [], link_watch=Broken)
    reannounce(*on_host(h.ctx), h.interfaces, "networkd")
    assert "Watching eth0 after the network restart failed ([Errno 22] Invalid argument)" in caplog.text


def test_a_run_context_without_a_watch_watches_nothing(tmp_path: Any) -> None:
    ctx = Ctx(System(root=str(tmp_path), runner=ScriptedRunner()), Config(), Distro("debian"), None,
              virtual_clock(), "ID")  # fmt: skip
    assert ctx.link_watch is None and isinstance(_open_watch(ctx.link_watch), NoWatch)
