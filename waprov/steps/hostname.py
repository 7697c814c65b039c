"""Hostname (WA §5.1, §5.1a): set it (local phase), then publish it (network phase).

`set_hostname`: `/etc/hostname` gets the name with no newline (RHEL 6's data also
`HOSTNAME=<name>` in /etc/sysconfig/network) and the distribution's command runs; when that
command is missing or fails, or is `hostnamectl` and there is no D-Bus yet (the local phase
runs before it), `hostname <name>` sets the running name (WALinuxAgent's own fallback on
RHEL-like systems; its SUSE code has none); a failure of both is a warning, as in
WALinuxAgent. Then the DHCP client is told the name, by the distribution's rule
(`tell_dhcp_client`): `send host-name "<name>";` in the dhclient.conf files that exist
(unless one already sends it); on the RHEL family `DHCP_HOSTNAME=<name>` in
/etc/sysconfig/network-scripts/ifcfg-<interface>; on SUSE `DHCLIENT_HOSTNAME_OPTION="<name>"`
in /etc/sysconfig/network/dhcp (waprov/sysconfig.py: configobj, WALinuxAgent's rules). A
missing or unusable sysconfig file is a warning naming it, and the run goes on (WALinuxAgent
stops there). Then `<Lib.Dir>/published_hostname` is written. When no route existed as the
name was set (the local phase, before any network manager started), the first DHCP request
carries the name.

The interface (`dhcp_interface`) is the one of the default route with the lowest metric,
as WALinuxAgent's; with no default route (the local phase: no network yet) the first
interface in /sys/class/net by ifindex that is neither loopback nor enslaved to another
(the VF of accelerated networking is enslaved to the synthetic NIC). WALinuxAgent, which
writes this file only once the network is up, takes the first non-loopback interface with
an IPv4 address there, and waits forever for one.

`publish_hostname` then re-announces the name on the primary interface, only when the name
was set while a network was already up (no local phase: IMDS only, a late DVD, a network
from the initrd, waprov installed on a running VM): by the distribution's data where it has
WALinuxAgent's commands (RHEL >= 8.6: `systemctl restart NetworkManager` then `ip link set
<if> down` and `up`; RHEL 7 to 8.5: `service NetworkManager restart` when the ifcfg says
NM_CONTROLLED=n|no, then `ifdown`/`ifup`; SUSE: `ifup <if>`, once when it succeeds where
WALinuxAgent runs it three times), else by the network stack in use. Unlike WALinuxAgent,
the wait for an address is bounded, a name that is not a valid host name is refused, and a
valid name longer than the 64 characters Linux allows a running host name is replaced by
its first label everywhere.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple

from waprov.distro import IFCFG, SUSE_DHCP, Distro
from waprov.errors import CommandNotFound, HostError, ProvisionError
from waprov.steps import Ctx
from waprov.system import System

if TYPE_CHECKING:
    from waprov.linkwatch import LinkWatch

log = logging.getLogger("waprov")
DHCLIENT_CONFS = ("/etc/dhcp/dhclient.conf", "/etc/dhcp3/dhclient.conf", "/etc/dhclient.conf")
IFF_LOOPBACK = 0x8
HOST_NAME_MAX = 64  # Linux's limit on the running host name (sethostname)
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
ADDRESS_WAIT = 10.0  # seconds to wait for the primary interface's IPv4 address
RESTART_TRIES, RESTART_WAIT = 3, 5.0
# After the restart command: how long an address drop may take to come (networkd handles
# `networkctl reconfigure` after the command returns: 0.2-0.7 s later under TCG; the
# other stacks drop and restore within their commands), and to be undone.
# RHEL and Fedora: NetworkManager sees the link bounce after `ip link` returns, as networkd;
# SUSE's `ifup` (wicked) returns when the interface is configured.
DROP_WAIT = {"networkd": 2.0, "rhel": 2.0, "fedora": 2.0}
RESTORE_WAIT, RESTORE_POLL = 30.0, 0.2
Interfaces = Callable[[], List[Tuple[str, bool]]]  # [(name, has IPv4)] in system order


def valid_hostname(name: str) -> bool:
    return len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


def host_name(name: str) -> str:
    """The name the host takes for HostName `name`: the name itself, or its first label
    when it is longer than HOST_NAME_MAX (what the kernel accepts; cloud-init does the same)."""
    return name if len(name) <= HOST_NAME_MAX else name.split(".", 1)[0]


def set_hostname(ctx: Ctx) -> None:
    name = ctx.data.hostname
    if not valid_hostname(name):
        raise ProvisionError(
            "invalid hostname",
            "hostname",
            f"HostName {name[:80]!r} is not a valid host name "
            "(dot-separated labels of letters, digits and '-', each 1-63 characters)",
        )
    short = host_name(name)
    if short != name:
        log.warning(
            "HostName %s is longer than %d characters, the most a host name may have: "
            "the host is named %s, its first label",
            name,
            HOST_NAME_MAX,
            short,
        )
        name = short
    route_text = _route_text(ctx.system)
    ctx.system.write("/etc/hostname", name, 0o644)
    if ctx.distro.sysconfig_hostname:
        write_sysconfig_hostname(ctx.system, name)
    set_running_hostname(ctx.system, ctx.distro, name)
    tell_dhcp_client(ctx.system, ctx.distro, name, route_text)
    ctx.system.write(ctx.lib("published_hostname"), name, 0o644)
    # the routes read again: one that came while the step ran may have carried a DHCP
    # request without the name
    ctx.named_before_network = not _route_rows(_route_text(ctx.system))
    if ctx.named_before_network:  # journaled here: a later step failing leaves it said
        log.info("Host name %s set before the network started: the first DHCP request carries it", name)
        ctx.mark(NAMED_BEFORE_NETWORK)


DBUS_SOCKET = "/run/dbus/system_bus_socket"
NAMED_BEFORE_NETWORK = "hostname:before-network"  # the journal's word: no re-announce needed


def set_running_hostname(system: System, distro: Distro, name: str) -> None:
    """The distribution's command, then (missing or failing) `hostname <name>`, WA's own
    fallback; hostnamectl is not tried without D-Bus. Both failing is a warning."""
    argv = distro.hostname_argv(name)
    tries = [argv] if argv[:1] == ("hostname",) else [argv, ("hostname", name)]
    if argv[:1] == ("hostnamectl",) and system.kind(DBUS_SOCKET) == "absent":
        log.debug("No D-Bus yet (%s): the running host name is set with hostname", DBUS_SOCKET)
        tries = tries[1:]
    for n, command in enumerate(tries, 1):
        try:
            system.run(command, timeout=30)
            return
        except HostError as e:
            if n == len(tries):
                log.warning("Setting the running host name failed (ignored, as WALinuxAgent does): %s", e)
            else:
                log.warning("%s failed (%s): setting the running host name with hostname", command[0], e)


def dhclient_edit(text: str, name: str) -> Optional[str]:
    """The new dhclient.conf, or None when it already sends this (or a computed) name."""
    lines = text.split("\n")
    pattern = re.compile(r"send\s*host-name.*?(" + re.escape(name) + r"|gethostname[(,)])")
    if any(pattern.match(line) for line in lines if not line.lstrip().startswith("#")):
        return None
    kept = [line for line in lines if not line.startswith("send host-name")]
    if kept and kept[-1] == "":
        kept.pop()
    return "\n".join([*kept, f'send host-name "{name}";']) + "\n"


def set_dhcp_hostname(system: System, name: str) -> None:
    """WA's `set_dhcp_hostname`: the existing dhclient.conf files send `name`."""
    for path in DHCLIENT_CONFS:
        raw = system.read(path)
        if raw is None:
            continue
        new = dhclient_edit(raw.decode("utf-8", "replace"), name)
        kept = system.mode_owner(path)
        if new is not None and kept is not None:
            system.write(path, new, *kept)


SYSCONFIG_NETWORK = "/etc/sysconfig/network"
IFCFG_DIR = "/etc/sysconfig/network-scripts"
SUSE_DHCP_FILE = "/etc/sysconfig/network/dhcp"


def suse_keep(name: str) -> Tuple[str, ...]:
    """The raw DHCLIENT_HOSTNAME_OPTION values WALinuxAgent 2.15 leaves alone."""
    return ('"AUTO"', "'AUTO'", "AUTO", f'"{name}"')


def edit_sysconfig(system: System, path: str, edit: Callable[[bytes], Optional[str]], what: str) -> None:
    """Apply `edit` (raw bytes -> new text, None: nothing to change) to a sysconfig file,
    written through System with its mode and owner kept. A missing file, one that cannot
    be read or edited faithfully, or a failed write: a warning naming the file, nothing
    more (WALinuxAgent stops on a missing file)."""
    from waprov.sysconfig import SysconfigError

    try:
        raw = system.read(path, limit=1 << 20)
        if raw is None:
            log.warning(
                "%s is missing: %s is not written (WALinuxAgent stops here; waprov goes on)", path, what
            )
            return
        new = edit(raw)
        if new is None:
            log.info("%s already has %s", path, what)
            return
        if new.encode("utf-8") == raw:
            return
        kept = system.mode_owner(path)
        system.write(path, new, *(kept or (0o644,)))
        log.info("Wrote %s to %s", what, path)
    except SysconfigError as e:
        log.warning("%s is left as it is, without %s: %s", path, what, e)
    except HostError as e:
        log.warning("%s: %s is not written: %s", path, what, e)


def write_sysconfig_hostname(system: System, name: str) -> None:
    """RHEL 6 (WA's Redhat6x set_hostname): HOSTNAME=<name> in /etc/sysconfig/network."""
    from waprov.sysconfig import replace_or_append

    edit_sysconfig(
        system,
        SYSCONFIG_NETWORK,
        lambda raw: replace_or_append(raw, SYSCONFIG_NETWORK, "HOSTNAME", name),
        f"HOSTNAME={name}",
    )


def tell_dhcp_client(system: System, distro: Distro, name: str, route_text: str) -> None:
    """WA's `set_dhcp_hostname` of the distribution (see the module docstring)."""
    if distro.dhcp_hostname == IFCFG:
        from waprov.sysconfig import replace_or_append

        ifname = dhcp_interface(system, route_text)
        if ifname is None:
            log.warning("No network interface: DHCP_HOSTNAME=%s is not written to any ifcfg file", name)
            return
        path = f"{IFCFG_DIR}/ifcfg-{ifname}"
        edit_sysconfig(system, path, lambda raw: replace_or_append(raw, path, "DHCP_HOSTNAME", name),
                       f"DHCP_HOSTNAME={name}")  # fmt: skip
    elif distro.dhcp_hostname == SUSE_DHCP:
        from waprov.sysconfig import set_in_place

        key, value = "DHCLIENT_HOSTNAME_OPTION", f'"{name}"'
        edit_sysconfig(
            system,
            SUSE_DHCP_FILE,
            lambda raw: set_in_place(raw, SUSE_DHCP_FILE, key, value, suse_keep(name)),
            f"{key}={value} (or AUTO)",
        )
    else:
        set_dhcp_hostname(system, name)


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


def dhcp_interface(system: System, route_text: str) -> Optional[str]:
    """The interface whose ifcfg file names the host (see the module docstring)."""
    ifname, _ = primary_interface(route_text, sysfs_interfaces(system))
    if ifname is None or "/" in ifname or ifname in (".", ".."):
        return None
    return ifname


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


def publish_hostname(ctx: Ctx) -> None:
    if ctx.named_before_network or ctx.done(NAMED_BEFORE_NETWORK):
        log.info("The host name was set before the network started: nothing to re-announce")
        return
    reannounce(ctx)


def _metric(fields: Sequence[str]) -> int:
    try:
        return int(fields[6])
    except (IndexError, ValueError):
        return 0


def primary_interface(route_text: str, addresses: Sequence[Tuple[str, bool]]) -> Tuple[Optional[str], bool]:
    """(interface, has IPv4): the interface of the default route with the lowest metric
    (the first of equals), else the first non-loopback one; `addresses` is
    [(name, has IPv4)] in system order."""
    has = dict(addresses)
    defaults = [fields for fields in _route_rows(route_text) if fields[1] == "00000000"]
    if defaults:
        best = min(defaults, key=_metric)
        return best[0], has.get(best[0], False)
    for ifname, ipv4 in addresses:
        if ifname != "lo":
            return ifname, ipv4
    return None, False


def _interfaces() -> List[Tuple[str, bool]]:
    # not through System: no file holds the interfaces' addresses (psutil asks getifaddrs)
    import psutil

    return [
        (name, any(a.family == socket.AF_INET for a in addrs))
        for name, addrs in psutil.net_if_addrs().items()
    ]


def _route_text(system: System) -> str:
    try:
        return (system.read("/proc/net/route") or b"").decode("ascii", "replace")
    except HostError:
        return ""


def network_stack(system: System) -> str:
    """ "networkd", "networkmanager" or "ifupdown", from the running processes."""
    from waprov.procfs import process_names

    names = set(process_names(system))
    if "systemd-networkd" in names:
        return "networkd"
    if "NetworkManager" in names:
        return "networkmanager"
    return "ifupdown"


def reannounce(ctx: Ctx, interfaces: Interfaces = _interfaces, stack: Optional[str] = None) -> None:
    """Bounded: wait at most ADDRESS_WAIT for an IPv4 address, try the restart a few
    times, then give up with a warning (the name is set either way)."""
    deadline = ctx.clock.deadline(ADDRESS_WAIT)
    commands: List[Tuple[str, ...]]
    while True:
        ifname, has_ipv4 = primary_interface(_route_text(ctx.system), interfaces())
        if ifname is None:
            log.info("No network interface besides loopback: the host name is not re-announced")
            return
        if has_ipv4:
            break
        if ctx.clock.remaining(deadline) <= 0:
            log.warning(
                "%s has no IPv4 address after %gs: the host name is not re-announced", ifname, ADDRESS_WAIT
            )
            return
        ctx.clock.sleep(1.0, f"an IPv4 address on {ifname}")
    first: Tuple[str, ...] = ()
    if stack is None and ctx.distro.restart_if:  # WALinuxAgent's commands for this family
        stack = ctx.distro.family
        commands = list(ctx.distro.restart_if_argvs(ifname))
        if ctx.distro.nm_restart and (ctx.distro.nm_restart_always or not nm_controlled(ctx.system, ifname)):
            first = ctx.distro.nm_restart
    else:
        stack = stack or ("networkd" if ctx.distro.flatcar else network_stack(ctx.system))
        if stack == "networkd":
            commands = [("networkctl", "reconfigure", ifname)]
        elif stack == "networkmanager":
            # `nmcli device reapply` of an unchanged profile starts no DHCP exchange
            # (NetworkManager 1.42, seen in the e2e boot); a new DHCP host name on the
            # device's applied connection (the saved profile is left alone) makes it send
            # a REQUEST that carries the name, the address kept.
            name = host_name(ctx.data.hostname)
            commands = [("nmcli", "device", "modify", ifname, "ipv4.dhcp-hostname", name)]
        else:
            commands = [("ifdown", ifname), ("ifup", ifname)]
    default_route = routes_on(_route_text(ctx.system), ifname)[1]
    watch = _open_watch(ctx)
    try:
        if first:  # once, its failure ignored (WALinuxAgent does not look at it)
            try:
                ctx.system.run(first, timeout=90)
            except HostError as e:
                log.warning("%s failed (going on with the interface restart): %s", " ".join(first), e)
        for attempt in range(1, RESTART_TRIES + 1):
            try:
                for argv in commands:
                    ctx.system.run(argv, timeout=60)
            except HostError as e:
                log.warning("Re-announcing the host name on %s, attempt %d: %s", ifname, attempt, e)
                if isinstance(e, CommandNotFound):
                    return
            else:
                log.info("Re-announced the host name on %s (%s)", ifname, stack)
                try:
                    settle(ctx, watch, ifname, DROP_WAIT.get(stack, 0.0), interfaces, default_route)
                except OSError as e:
                    log.warning("Watching %s after the network restart failed (%s): going on", ifname, e)
                return
            if attempt < RESTART_TRIES:
                ctx.clock.sleep(RESTART_WAIT, "network restart")
    finally:
        watch.close()


def _open_watch(ctx: Ctx) -> LinkWatch:
    from waprov.linkwatch import NoWatch

    if ctx.link_watch is None:
        return NoWatch()
    try:
        return ctx.link_watch()
    except OSError as e:
        log.warning("Cannot watch address changes (netlink: %s): no wait after the network restart", e)
        return NoWatch()


def _route_rows(route_text: str) -> List[List[str]]:
    """/proc/net/route's rows (after its header) as [Iface, Destination, ...]."""
    rows = (line.split() for line in route_text.splitlines()[1:])
    return [fields for fields in rows if len(fields) > 1]


def routes_on(route_text: str, ifname: str) -> Tuple[bool, bool]:
    """(any route, a default route) through `ifname` in /proc/net/route's text."""
    mine = [fields for fields in _route_rows(route_text) if fields[0] == ifname]
    return bool(mine), any(fields[1] == "00000000" for fields in mine)


def settle(
    ctx: Ctx, watch: LinkWatch, ifname: str, drop_wait: float, interfaces: Interfaces, default_route: bool
) -> None:
    """After the restart: if the interface's IPv4 address goes away (seen within
    `drop_wait` seconds, or already during the commands), wait until it is back with its
    routes (the default route when it had it), at most RESTORE_WAIT seconds. No drop: no
    wait beyond `drop_wait`."""
    index = _ifindex(ctx, ifname)
    if index is None:
        return
    started = time.monotonic()
    deadline = ctx.clock.deadline(drop_wait)
    while True:
        event = watch.next_event(ctx.clock.remaining(deadline))
        if event is None:
            log.debug("No address change on %s within %gs of the network restart", ifname, drop_wait)
            return
        if event in (("deladdr", index), ("lost", 0)):
            break

    def back() -> bool:
        any_route, default = routes_on(_route_text(ctx.system), ifname)
        return dict(interfaces()).get(ifname, False) and (default if default_route else any_route)

    deadline = ctx.clock.deadline(RESTORE_WAIT)
    while not back():
        if ctx.clock.remaining(deadline) <= 0:
            route = "default route" if default_route else "route"
            after = f"{RESTORE_WAIT:g}s after the network restart: going on"
            log.warning("%s has no IPv4 address and %s %s", ifname, route, after)
            return
        watch.next_event(min(RESTORE_POLL, ctx.clock.remaining(deadline)))
    took = time.monotonic() - started
    log.info("%s has its address and route back (%.3fs after the restart)", ifname, took)


def _ifindex(ctx: Ctx, ifname: str) -> Optional[int]:
    try:
        raw = ctx.system.read(f"/sys/class/net/{ifname}/ifindex", limit=32)
        return int((raw or b"").strip())
    except (HostError, ValueError):
        log.debug("No ifindex for %s: no wait after the network restart", ifname)
        return None
