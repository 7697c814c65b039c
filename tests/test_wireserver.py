"""Wireserver: discovery sources, documents byte for byte, goal state and health scenarios."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest

from tests.conftest import DATA, virtual_clock, waits
from tests.fakefabric import GARBAGE, NO_ROLE_INSTANCE, RESET, FakeFabric, status
from waprov.config import Config
from waprov.errors import ProtocolError
from waprov.http import HttpClient, HttpStatusError
from waprov.overrides import Overrides
from waprov.system import System
from waprov.timing import Clock
from waprov.wireserver import (
    PROGRESS_POLICY,
    GoalState,
    WireServer,
    connect,
    discover_endpoint,
    endpoint_from_dhclient_leases,
    endpoint_from_networkd_lease,
    find_text,
    health_document,
    parse_goal_state,
    parse_xml,
    versions_supported,
)


def read(name: str) -> bytes:
    with open(os.path.join(DATA, "wire", name), "rb") as f:
        return f.read()


# ---- discovery ----------------------------------------------------------------------------

ROUTE = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
)
ROUTE_AZURE = ROUTE + "eth0\t10813FA8\t0100000A\t0007\t0\t0\t100\tFFFFFFFF\t0\t0\t0\n"


def put(root: str, path: str, text: str) -> None:
    full = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w", encoding="utf-8") as f:
        f.write(text)


def discover(root: str, discovery: str = "dhcp") -> tuple[str, str]:
    conf = dataclasses.replace(Config(), endpoint_discovery=discovery)
    return discover_endpoint(System(root=root), conf, Overrides())


def lease(option: str, expire: str) -> str:
    return (
        'lease {\n  interface "eth0";\n  fixed-address 10.0.0.4;\n'
        f"  option unknown-245 {option};\n  renew 2 2026/11/24 10:00:00;\n  expire {expire};\n}}\n"
    )


def test_the_azure_route_means_the_default_endpoint(tmp_path: str) -> None:
    put(str(tmp_path), "/proc/net/route", ROUTE_AZURE)
    put(str(tmp_path), "/var/lib/waagent/WireServerEndpoint", "10.1.2.3")
    assert discover(str(tmp_path)) == ("168.63.129.16", "route in /proc/net/route")


def test_dhclient_lease_last_unexpired_block_wins() -> None:
    now = time.mktime((2026, 11, 21, 12, 0, 0, 0, 0, 0)) - time.timezone
    text = (
        lease("a8:3f:81:10", "4 2026/11/26 10:00:00")
        + lease("a:0:0:1", "never")
        + lease("a:0:0:2", "1 2020/01/01 00:00:00")  # expired
        + lease("a:0:0:3", f"epoch {int(now) - 5}")  # expired
    )
    assert endpoint_from_dhclient_leases(text, now) == "10.0.0.1"
    assert endpoint_from_dhclient_leases(lease("a:0:0:2", "1 2020/01/01 00:00:00"), now) is None
    assert (
        endpoint_from_dhclient_leases(lease("a8:3f:81:10", "4 2026/11/26 10:00:00"), now) == "168.63.129.16"
    )


def test_dhclient_then_networkd_then_the_saved_file_then_the_default(tmp_path: str) -> None:
    root = str(tmp_path)
    put(root, "/proc/net/route", ROUTE)
    assert discover(root) == ("168.63.129.16", "default")
    put(root, "/var/lib/waagent/WireServerEndpoint", "10.9.9.9")
    assert discover(root) == ("10.9.9.9", "/var/lib/waagent/WireServerEndpoint")
    put(
        root,
        "/run/systemd/netif/leases/2",
        "# This is private data.\nADDRESS=10.0.0.4\nOPTION_245=0a000105\n",
    )
    assert discover(root)[0] == "10.0.1.5"
    put(root, "/var/lib/dhcp/dhclient.eth0.leases", lease("a:0:1:6", "never"))
    assert discover(root)[0] == "10.0.1.6"


def test_endpoint_discovery_other_than_dhcp_uses_the_file_or_default(tmp_path: str) -> None:
    root = str(tmp_path)
    put(root, "/proc/net/route", ROUTE_AZURE)
    put(root, "/var/lib/dhcp/dhclient.eth0.leases", lease("a:0:1:6", "never"))
    assert discover(root, "static") == ("168.63.129.16", "default")


def test_a_saved_endpoint_that_is_not_an_address_is_ignored(tmp_path: str) -> None:
    put(str(tmp_path), "/var/lib/waagent/WireServerEndpoint", "http://evil/; rm -rf /")
    assert discover(str(tmp_path)) == ("168.63.129.16", "default")


def test_the_override_skips_discovery(tmp_path: str) -> None:
    put(str(tmp_path), "/proc/net/route", ROUTE_AZURE)
    got = discover_endpoint(System(root=str(tmp_path)), Config(), Overrides(wireserver="127.0.0.1:8080"))
    assert got == ("127.0.0.1:8080", "WAPROV_WIRESERVER")


def test_networkd_lease_parsing() -> None:
    assert endpoint_from_networkd_lease("OPTION_245=a83f8110\n") == "168.63.129.16"
    assert endpoint_from_networkd_lease("OPTION_24=a83f8110\n") is None
    assert endpoint_from_networkd_lease("OPTION_245=a83f81\n") is None


# ---- documents ----------------------------------------------------------------------------


def test_goal_state_fixture() -> None:
    gs = parse_goal_state(read("goalstate.xml"))
    assert gs == GoalState(
        incarnation="7",
        container_id="3a6d8f0e-1111-4c2b-9d3e-0123456789ab",
        role_instance_id="0f1e2d3c-aaaa-4bbb-8ccc-ddddeeeeffff.vm-7",
        certificates_url="http://168.63.129.16:80/machine/0f1e/3a6d?comp=certificates&incarnation=7",
    )


@pytest.mark.parametrize(
    "doc",
    [
        b"",
        b"<GoalState><Incarnation>1</Incarnation>",
        b"<GoalState><Incarnation>1</Incarnation></GoalState>",
        b'<!DOCTYPE x [<!ENTITY a "aaaa">]><GoalState>&a;</GoalState>',
    ],
)
def test_bad_goal_states_are_typed_errors(doc: bytes) -> None:
    with pytest.raises(ProtocolError, match="goal state"):
        parse_goal_state(doc)


def test_versions() -> None:
    assert versions_supported(read("versions.xml"))
    assert not versions_supported(
        b"<Versions><Preferred><Version>2015-04-05</Version></Preferred></Versions>"
    )


GS = GoalState("3", "c-1", "r-1.vm")
HEAD = (
    '<?xml version="1.0" encoding="utf-8"?><Health xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xmlns:xsd="http://www.w3.org/2001/XMLSchema"><GoalStateIncarnation>3</GoalStateIncarnation><Container>'
    "<ContainerId>c-1</ContainerId><RoleInstanceList><Role><InstanceId>r-1.vm</InstanceId><Health>"
)
TAIL = "</Health></Role></RoleInstanceList></Container></Health>"


def test_health_documents_byte_for_byte() -> None:
    assert health_document(GS, "Ready") == HEAD + "<State>Ready</State>" + TAIL
    assert health_document(GS, "NotReady", "Provisioning", "Starting") == (
        HEAD + "<State>NotReady</State><Details><SubStatus>Provisioning</SubStatus>"
        "<Description>Starting</Description></Details>" + TAIL
    )


def test_the_description_is_cut_to_3686_characters_then_escaped() -> None:
    text = "x" * 3684 + "<&" + "tail that is cut"
    doc = health_document(GS, "NotReady", "ProvisioningFailed", text)
    assert "<Description>" + "x" * 3684 + "&lt;&amp;</Description>" in doc
    assert "tail that" not in doc


# ---- scenarios against the fake -------------------------------------------------------------


def spec_health(fabric: FakeFabric, inner: str) -> str:
    """WA §6.4's document for the fake's goal state, written out from the spec."""
    return (
        '<?xml version="1.0" encoding="utf-8"?><Health xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema"><GoalStateIncarnation>1</GoalStateIncarnation>'
        f"<Container><ContainerId>{fabric.container_id}</ContainerId><RoleInstanceList><Role>"
        f"<InstanceId>{fabric.instance_id}</InstanceId><Health>{inner}</Health></Role></RoleInstanceList>"
        "</Container></Health>"
    )


def test_connect_checks_versions_then_fetches_the_goal_state(
    fabric: FakeFabric, client: HttpClient, clock: Clock
) -> None:
    _, gs = connect(client, fabric.wireserver, clock)
    assert gs.incarnation == "1" and gs.role_instance_id == fabric.instance_id
    assert [r.route for r in fabric.requests] == ["versions", "goalstate"]
    versions, goal = fabric.requests
    assert not any(k.lower().startswith("x-ms-") for k in versions.headers)
    assert goal.headers["x-ms-agent-name"] == "waprov" and goal.headers["x-ms-version"] == "2012-11-30"
    assert goal.path == "/machine/?comp=goalstate"


def test_a_goal_state_without_role_instance_is_fetched_again(
    fabric: FakeFabric, client: HttpClient, clock: Clock
) -> None:
    fabric.script("goalstate", NO_ROLE_INSTANCE, NO_ROLE_INSTANCE)
    _, gs = connect(client, fabric.wireserver, clock)
    assert gs.role_instance_id == fabric.instance_id
    assert waits(clock) == [0.5, 0.5] and len(fabric.requests_for("goalstate")) == 3


def test_a_goal_state_without_role_instance_forever(
    fabric: FakeFabric, client: HttpClient, clock: Clock
) -> None:
    fabric.script("goalstate", *[NO_ROLE_INSTANCE] * 7)
    with pytest.raises(ProtocolError, match=r"^Fetched goal state without a RoleInstance \[incarnation 1\]$"):
        WireServer(client, fabric.wireserver).goal_state()
    assert waits(clock) == [0.5] * 6 and len(fabric.requests_for("goalstate")) == 7


def test_detection_is_retried_every_ten_seconds(fabric: FakeFabric, client: HttpClient, clock: Clock) -> None:
    fabric.script("goalstate", GARBAGE, RESET)
    connect(client, fabric.wireserver, clock)
    assert waits(clock) == [10.0, 0.1]  # garbage: detect again; reset: the request is retried at once


def test_an_unsupported_wire_version_fails_detection(tmp_path: str) -> None:
    with FakeFabric(str(tmp_path), versions=("2015-04-05",), with_certificates=False) as fabric:
        clock = virtual_clock()
        with pytest.raises(ProtocolError, match="2012-11-30 was not advised by Fabric"):
            connect(HttpClient(clock), fabric.wireserver, clock)
        assert len(fabric.requests_for("versions")) == 121  # at 0 s, then every 10 s up to 20 minutes
        assert waits(clock) == [10.0] * 120


def test_health_report_retried_after_500_with_identical_bodies(
    fabric: FakeFabric, client: HttpClient, clock: Clock
) -> None:
    ws, gs = connect(client, fabric.wireserver, clock)
    fabric.script("health", status(500))
    ws.report(gs, "NotReady", "Provisioning", "Starting")
    first, second = fabric.requests_for("health")
    assert first.body == second.body
    assert second.body.decode() == spec_health(
        fabric,
        "<State>NotReady</State><Details><SubStatus>Provisioning</SubStatus>"
        "<Description>Starting</Description></Details>",
    )
    assert waits(clock) == [30.0]
    assert second.path == "/machine?comp=health"
    assert second.headers["Content-Type"] == "text/xml;charset=utf-8"
    assert second.headers["x-ms-agent-name"] == "waprov"


def test_ready_and_failed_reports(fabric: FakeFabric, client: HttpClient, clock: Clock) -> None:
    ws, gs = connect(client, fabric.wireserver, clock)
    ws.report(gs, "NotReady", "ProvisioningFailed", "Failed to validate OVF: HostName not found")
    ws.report(gs, "Ready")
    failed, ready = fabric.health_bodies()
    assert failed == spec_health(
        fabric,
        "<State>NotReady</State><Details><SubStatus>ProvisioningFailed</SubStatus>"
        "<Description>Failed to validate OVF: HostName not found</Description></Details>",
    )
    assert ready == spec_health(fabric, "<State>Ready</State>")


def test_a_health_report_that_keeps_failing_is_an_error(fabric: FakeFabric) -> None:
    clock = virtual_clock()
    ws, gs = connect(HttpClient(clock), fabric.wireserver, clock)
    fabric.script("health", *[status(500, b"no")] * 30)
    with pytest.raises(ProtocolError, match=r"^Failed to send provision status: .*HTTP 500: no"):
        ws.report(gs, "Ready")
    assert waits(clock) == [30.0, 45.0, 75.0, 120.0, 195.0, 315.0]  # 510 more would pass 15 minutes
    assert len(fabric.requests_for("health")) == 7


def test_ids_with_markup_are_escaped_and_come_back_intact() -> None:
    gs = parse_goal_state(
        b'<?xml version="1.0" encoding="utf-8"?><GoalState><Incarnation>1&amp;2&lt;3</Incarnation>'
        b"<Container><ContainerId>c&lt;/ContainerId&gt;&amp;x</ContainerId><RoleInstanceList><RoleInstance>"
        b"<InstanceId><![CDATA[r<1>&]]>&#13;.vm</InstanceId></RoleInstance></RoleInstanceList></Container>"
        b"</GoalState>"
    )
    assert (gs.incarnation, gs.container_id, gs.role_instance_id) == (
        "1&2<3",
        "c</ContainerId>&x",
        "r<1>&\r.vm",
    )
    for state in ("Ready", "NotReady"):
        root = parse_xml(health_document(gs, state, "Provisioning", "Starting").encode(), "health document")
        assert find_text(root, "GoalStateIncarnation") == "1&2<3"
        assert find_text(root, "Container", "ContainerId") == "c</ContainerId>&x"
        assert find_text(root, "RoleInstanceList", "Role", "InstanceId") == "r<1>&\r.vm"
        assert find_text(root, "Role", "Health", "State") == state


def test_the_in_progress_report_gives_up_at_its_60_s_deadline(fabric: FakeFabric) -> None:
    clock = virtual_clock()
    ws, gs = connect(HttpClient(clock), fabric.wireserver, clock)
    fabric.script("health", *[status(500, b"no")] * 30)
    with pytest.raises(HttpStatusError, match=r"^Failed to send provision status: .*60s deadline.*HTTP 500"):
        ws.report(gs, "NotReady", "Provisioning", "Starting", PROGRESS_POLICY)  # as Reporter.provisioning
    assert waits(clock) == [30.0]  # 45 more would pass 60 s
    assert len(fabric.requests_for("health")) == 2


def test_a_410_keeps_its_status(fabric: FakeFabric, client: HttpClient, clock: Clock) -> None:
    ws, gs = connect(client, fabric.wireserver, clock)
    fabric.script("health", status(410, b"incarnation changed"))
    with pytest.raises(HttpStatusError, match=r"^Failed to send provision status: .*HTTP 410") as e:
        ws.report(gs, "Ready")
    assert e.value.status == 410 and clock.slept == []  # not retried: the goal state is stale
