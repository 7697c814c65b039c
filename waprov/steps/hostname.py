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

The ifcfg file's interface (`dhcp_interface`) is the primary interface (network.py: the
default route's with the lowest metric, else the first in /sys/class/net by ifindex that is
neither loopback nor enslaved to another). WALinuxAgent, which writes this file only once
the network is up, takes the first non-loopback interface with an IPv4 address there, and
waits forever for one.

`publish_hostname` then re-announces the name on the primary interface (network.reannounce),
only when the name was set while a network was already up (no local phase: IMDS only, a
late DVD, a network from the initrd, waprov installed on a running VM). Unlike WALinuxAgent,
a name that is not a valid host name is refused, and a valid name longer than the 64
characters Linux allows a running host name is replaced by its first label everywhere.
"""

from __future__ import annotations

import logging
import re
from typing import Callable, Optional, Sequence, Tuple

from waprov.distro import IFCFG, SUSE_DHCP, Distro
from waprov.errors import HostError, ProvisionError
from waprov.network import IFCFG_DIR, Route, primary_interface, read_routes, reannounce, sysfs_interfaces
from waprov.steps import Ctx
from waprov.system import System

log = logging.getLogger("waprov")
DHCLIENT_CONFS = ("/etc/dhcp/dhclient.conf", "/etc/dhcp3/dhclient.conf", "/etc/dhclient.conf")
HOST_NAME_MAX = 64  # Linux's limit on the running host name (sethostname)
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


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
    routes = read_routes(ctx.system)
    ctx.system.write("/etc/hostname", name, 0o644)
    if ctx.distro.sysconfig_hostname:
        write_sysconfig_hostname(ctx.system, name)
    set_running_hostname(ctx.system, ctx.distro, name)
    tell_dhcp_client(ctx.system, ctx.distro, name, routes)
    ctx.system.write(ctx.lib("published_hostname"), name, 0o644)
    # the routes read again: one that came while the step ran may have carried a DHCP
    # request without the name
    ctx.named_before_network = not read_routes(ctx.system)
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


def tell_dhcp_client(system: System, distro: Distro, name: str, routes: Sequence[Route]) -> None:
    """WA's `set_dhcp_hostname` of the distribution (see the module docstring)."""
    if distro.dhcp_hostname == IFCFG:
        from waprov.sysconfig import replace_or_append

        ifname = dhcp_interface(system, routes)
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


def dhcp_interface(system: System, routes: Sequence[Route]) -> Optional[str]:
    """The interface whose ifcfg file names the host (see the module docstring)."""
    ifname, _ = primary_interface(routes, sysfs_interfaces(system))
    if ifname is None or "/" in ifname or ifname in (".", ".."):
        return None
    return ifname


def publish_hostname(ctx: Ctx) -> None:
    if ctx.named_before_network or ctx.done(NAMED_BEFORE_NETWORK):
        log.info("The host name was set before the network started: nothing to re-announce")
        return
    reannounce(ctx.system, ctx.distro, ctx.clock, host_name(ctx.data.hostname), ctx.link_watch)
