"""The wireserver (WA §6): endpoint discovery, versions, goal state and health reports.

Discovery (§6.1) without a raw DHCP probe: the 168.63.129.16 route in /proc/net/route,
option 245 in dhclient and systemd-networkd leases, `<Lib.Dir>/WireServerEndpoint`, then
168.63.129.16. `connect()` checks `?comp=versions` and fetches a goal state that has a
RoleInstance, retrying under a deadline. Health documents are WALinuxAgent's, byte for
byte (§6.4), but with the goal state's ids XML-escaped too (WALinuxAgent puts them in raw;
ordinary ids are unchanged). Requests carry `x-ms-agent-name: waprov`, `x-ms-version: 2012-11-30`.
Health reports: HEALTH_POLICY (WALinuxAgent's 15 s Fibonacci back-off, bounded at 15
minutes); the in-progress NotReady/Provisioning has PROGRESS_POLICY, the same back-off
under a 60 s deadline, as its failure is only logged (health.py). A report answered with
a status raises HttpStatusError: 410 Gone means the goal state changed.

Waiting for the network inside the run, so that waprov.service need not start after
network-online: the DVD is read and the host keys are being made while DHCP runs.
`wait_for_network()` polls until an up IPv4 route in /proc/net/route covers the
wireserver's address (the DHCP host route, the subnet or a default route) or a DHCP lease
names the endpoint (option 245), for NETWORK_WAIT seconds at most (as long as
systemd-networkd-wait-online waits); then the run goes on and the wireserver's and IMDS's
own retries apply. Endpoints given by WAPROV_WIRESERVER and WAPROV_IMDS are taken as
reachable (they are loopback in tests).
"""

from __future__ import annotations

import calendar
import ipaddress
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from waprov.config import Config
from waprov.errors import HostError, ProtocolError
from waprov.http import HttpClient, HttpStatusError, RetryPolicy
from waprov.network import Route, read_routes, route_covers
from waprov.overrides import Overrides
from waprov.system import System
from waprov.timing import Clock

log = logging.getLogger("waprov")
DEFAULT_ENDPOINT = "168.63.129.16"
ROUTE_HEX = "10813FA8"
WIRE_VERSION = "2012-11-30"
AGENT_NAME = "waprov"
MAX_DESCRIPTION = 3686
DHCLIENT_LEASES = ("/var/lib/dhcp/dhclient.*.leases", "/var/lib/dhclient/dhclient*.leases")
NETWORKD_LEASES = "/run/systemd/netif/leases/*"
WIRE_POLICY = RetryPolicy("wireserver", attempts=6, delay=1.0, deadline=300.0)
HEALTH_POLICY = RetryPolicy("health report", attempts=30, delay=15.0, deadline=900.0)
# NotReady/Provisioning: its failure is tolerated, so it must not hold the run for 15 minutes
PROGRESS_POLICY = RetryPolicy("health report (in progress)", attempts=30, delay=15.0, deadline=60.0)
GONE = 410  # the wireserver's answer to a report for an incarnation that is no longer current
CONNECT_DEADLINE = 1200.0
PROBE_INTERVAL = 10.0
ROLE_INSTANCE_RETRIES = 6
ROLE_INSTANCE_WAIT = 0.5
NETWORK_WAIT = 120.0
POLL = 0.2


# ---- discovery ------------------------------------------------------------------------


def _quad(raw: bytes) -> Optional[str]:
    return ".".join(str(b) for b in raw) if len(raw) == 4 else None


def endpoint_from_route(routes: Sequence[Route]) -> Optional[str]:
    """The wireserver when a route goes to it (or through it), as WALinuxAgent looks for it."""
    return DEFAULT_ENDPOINT if any(ROUTE_HEX in (r.destination, r.gateway) for r in routes) else None


_EXPIRE = re.compile(r"^\s*expire\s+(?:never|epoch\s+(\d+)|\d\s+(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d))")


def endpoint_from_dhclient_leases(text: str, now: float) -> Optional[str]:
    """The last unexpired `lease {}` block's `option unknown-245 a8:3f:81:10;`."""
    found = None
    for block in re.findall(r"lease\s*\{(.*?)\}", text, re.DOTALL):
        m = re.search(r"option\s+unknown-245\s+([0-9a-fA-F]{1,2}(?::[0-9a-fA-F]{1,2}){3})\s*;", block)
        if not m:
            continue
        valid = False
        for line in block.splitlines():
            e = _EXPIRE.match(line)
            if e is None:
                continue
            if e.group(1):
                valid = int(e.group(1)) > now
            elif e.group(2):
                valid = calendar.timegm(time.strptime(e.group(2), "%Y/%m/%d %H:%M:%S")) > now
            else:
                valid = True
        if valid:
            found = _quad(bytes(int(x, 16) for x in m.group(1).split(":")))
    return found


def endpoint_from_networkd_lease(text: str) -> Optional[str]:
    m = re.search(r"^OPTION_245=([0-9a-fA-F]{8})\s*$", text, re.MULTILINE)
    return _quad(bytes.fromhex(m.group(1))) if m else None


def _read(system: System, path: str) -> str:
    try:
        return (system.read(path, follow=True) or b"").decode("utf-8", "replace")
    except HostError:
        return ""


def _valid_endpoint(text: str) -> Optional[str]:
    text = text.strip()
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return text if re.fullmatch(r"[A-Za-z0-9.-]{1,253}", text) else None
    return text


def discover_endpoint(system: System, config: Config, overrides: Overrides) -> Tuple[str, str]:
    """(endpoint, how it was found)."""
    if overrides.wireserver:
        return overrides.wireserver, "WAPROV_WIRESERVER"
    if config.endpoint_discovery == "dhcp":
        if endpoint_from_route(read_routes(system)):
            return DEFAULT_ENDPOINT, "route in /proc/net/route"
        now = time.time()
        for pattern in DHCLIENT_LEASES:
            for path in system.glob(pattern):
                ep = endpoint_from_dhclient_leases(_read(system, path), now)
                if ep:
                    return ep, f"dhclient lease {path}"
        for path in system.glob(NETWORKD_LEASES):
            ep = endpoint_from_networkd_lease(_read(system, path))
            if ep:
                return ep, f"systemd-networkd lease {path}"
    saved = os.path.join(config.lib_dir, "WireServerEndpoint")
    text = _read(system, saved)
    if text.strip():
        ep = _valid_endpoint(text)
        if ep:
            return ep, saved
        log.warning("Ignoring %s: %r is not an address", saved, text[:80])
    return DEFAULT_ENDPOINT, "default"


# ---- waiting for the network ---------------------------------------------------------


def network_ready(system: System, config: Config, overrides: Overrides) -> bool:
    """A route reaches 168.63.129.16, or a DHCP lease names the endpoint (discovery's own
    lease readers)."""
    if route_covers(read_routes(system), DEFAULT_ENDPOINT):
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


# ---- documents ------------------------------------------------------------------------


def parse_xml(data: bytes, what: str) -> Element:
    try:
        return fromstring(data)
    except (ParseError, DefusedXmlException, ValueError) as e:
        raise ProtocolError(f"the wireserver's {what} is not usable XML: {type(e).__name__}: {e}") from None


def _first(root: Element, *path: str) -> Optional[Element]:
    """The first descendant named path[0] (any depth), then path[1] under it, ..."""
    node = root
    for tag in path:
        found = next((el for el in node.iter() if el.tag.rsplit("}", 1)[-1] == tag and el is not node), None)
        if found is None:
            return None
        node = found
    return node


def find_text(root: Element, *path: str) -> Optional[str]:
    el = _first(root, *path)
    return el.text if el is not None and el.text else None


def versions_supported(data: bytes) -> bool:
    root = parse_xml(data, "versions document")
    return any(el.text == WIRE_VERSION for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Version")


@dataclass(frozen=True)
class GoalState:
    incarnation: str
    container_id: str
    role_instance_id: Optional[str]
    certificates_url: Optional[str] = None


def parse_goal_state(data: bytes) -> GoalState:
    root = parse_xml(data, "goal state")
    incarnation = find_text(root, "Incarnation")
    container = find_text(root, "Container", "ContainerId")
    if incarnation is None or container is None:
        raise ProtocolError("the wireserver's goal state has no Incarnation or Container/ContainerId")
    return GoalState(
        incarnation=incarnation,
        container_id=container,
        role_instance_id=find_text(root, "RoleInstance", "InstanceId"),
        certificates_url=find_text(root, "RoleInstance", "Configuration", "Certificates"),
    )


def _xml_text(value: Optional[str]) -> str:
    """Element text: `&`, `<`, `>` escaped (and CR, which a parser would turn into LF)."""
    return escape(str(value), {"\r": "&#13;"})


def health_document(gs: GoalState, state: str, substatus: str = "", description: str = "") -> str:
    """WALinuxAgent's health report: one line, the description cut then escaped; the
    goal state's ids escaped (WALinuxAgent does not: ordinary ids give the same bytes)."""
    details = ""
    if state != "Ready":
        details = (
            f"<Details><SubStatus>{escape(substatus)}</SubStatus>"
            f"<Description>{escape(description[:MAX_DESCRIPTION])}</Description></Details>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<Health xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">'
        f"<GoalStateIncarnation>{_xml_text(gs.incarnation)}</GoalStateIncarnation>"
        f"<Container><ContainerId>{_xml_text(gs.container_id)}</ContainerId><RoleInstanceList><Role>"
        f"<InstanceId>{_xml_text(gs.role_instance_id)}</InstanceId>"
        f"<Health><State>{state}</State>{details}</Health>"
        "</Role></RoleInstanceList></Container></Health>"
    )


# ---- the protocol ---------------------------------------------------------------------


class WireServer:
    def __init__(self, client: HttpClient, endpoint: str) -> None:
        self.client = client
        self.endpoint = endpoint
        self.base = f"http://{endpoint}"

    @property
    def headers(self) -> dict[str, str]:
        return {"x-ms-agent-name": AGENT_NAME, "x-ms-version": WIRE_VERSION}

    def check_versions(self) -> None:
        resp = self.client.request("GET", f"{self.base}/?comp=versions", WIRE_POLICY)
        if not versions_supported(resp.body):
            raise ProtocolError(
                f"Agent supported wire protocol version: {WIRE_VERSION} was not advised by Fabric."
            )

    def goal_state(self) -> GoalState:
        url = f"{self.base}/machine/?comp=goalstate"
        for attempt in range(ROLE_INSTANCE_RETRIES + 1):
            gs = parse_goal_state(self.client.request("GET", url, WIRE_POLICY, headers=self.headers).body)
            if gs.role_instance_id is not None:
                return gs
            if attempt < ROLE_INSTANCE_RETRIES:
                self.client.clock.sleep(ROLE_INSTANCE_WAIT, "goal state without RoleInstance")
        raise ProtocolError(f"Fetched goal state without a RoleInstance [incarnation {gs.incarnation}]")

    def report(
        self,
        gs: GoalState,
        state: str,
        substatus: str = "",
        description: str = "",
        policy: RetryPolicy = HEALTH_POLICY,
    ) -> int:
        """POST a health document; the HTTP status of the answer. A failure is a
        ProtocolError, an HttpStatusError (with `.status`) when the server answered."""
        body = health_document(gs, state, substatus, description).encode("utf-8")
        headers = {**self.headers, "Content-Type": "text/xml;charset=utf-8"}
        try:
            resp = self.client.request(
                "POST", f"{self.base}/machine?comp=health", policy, headers=headers, body=body
            )
        except HttpStatusError as e:
            raise HttpStatusError(f"Failed to send provision status: {e}", e.status) from None
        except ProtocolError as e:
            raise ProtocolError(f"Failed to send provision status: {e}") from None
        log.info("Reported %s%s to the wireserver", state, f" ({substatus})" if substatus else "")
        return resp.status


def connect(client: HttpClient, endpoint: str, clock: Clock) -> Tuple[WireServer, GoalState]:
    """Versions, then a goal state with a RoleInstance; the whole detection is retried
    every 10 s until a 20-minute deadline (WALinuxAgent tries for an hour)."""
    deadline = clock.deadline(CONNECT_DEADLINE)
    ws = WireServer(client, endpoint)
    while True:
        try:
            ws.check_versions()
            return ws, ws.goal_state()
        except ProtocolError as e:
            if clock.remaining(deadline) < clock.seconds(PROBE_INTERVAL):
                raise ProtocolError(
                    f"No protocol found: the wireserver at {endpoint} did not answer: {e}"
                ) from None
            log.warning("The wireserver at %s is not usable yet: %s", endpoint, e)
            clock.sleep(PROBE_INTERVAL, "wireserver detection")
