"""The e2e harness's pcap reader and its option-12 check (tests/e2e/pcap.py), on capture
files built here byte by byte as qemu's filter-dump writes them."""

from __future__ import annotations

import os
import struct
from typing import List, Optional, Sequence, Tuple

import pytest

from tests.e2e.pcap import (
    PcapError,
    check_first_request_hostname,
    client_requests,
    dhcp_messages,
    read_dhcp,
)

GUEST_MAC, SLIRP_MAC = bytes.fromhex("525400123456"), bytes.fromhex("525500000002")
DISCOVER, OFFER, REQUEST, ACK = 1, 2, 3, 5


def checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    total = (total & 0xFFFF) + (total >> 16)
    return ~((total & 0xFFFF) + (total >> 16)) & 0xFFFF


def addr(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def ipv4(src: str, dst: str, proto: int, payload: bytes, frag: int = 0) -> bytes:
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, frag, 64, proto, 0, addr(src), addr(dst)
    )
    return head[:10] + struct.pack("!H", checksum(head)) + head[12:] + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def ethernet(payload: bytes, ethertype: int = 0x0800, vlan: Optional[int] = None, pad_to: int = 60) -> bytes:
    head = b"\xff" * 6 + GUEST_MAC
    if vlan is not None:
        head += struct.pack("!HH", 0x8100, vlan)
    frame = head + struct.pack("!H", ethertype) + payload
    return frame + b"\0" * max(0, pad_to - len(frame))  # short frames are padded on the wire


def option(code: int, value: bytes) -> bytes:
    return bytes([code, len(value)]) + value


def bootp(
    msg_type: Optional[int],
    hostname: Optional[str] = None,
    op: int = 1,
    xid: int = 0x1234ABCD,
    extra: bytes = b"",
    sname: bytes = b"",
    file: bytes = b"",
) -> bytes:
    fixed = struct.pack("!BBBBIHH4s4s4s4s", op, 1, 6, 0, xid, 0, 0x8000, *(b"\0" * 4,) * 4)
    fixed += GUEST_MAC.ljust(16, b"\0") + sname.ljust(64, b"\0") + file.ljust(128, b"\0")
    assert len(fixed) == 236
    opts = b""
    if msg_type is not None:
        opts += option(53, bytes([msg_type]))
    if hostname is not None:
        opts += option(12, hostname.encode())
    opts += option(55, bytes([1, 3, 6, 15])) + extra + b"\xff"
    return fixed + b"\x63\x82\x53\x63" + opts


def client(msg: bytes, **kw: int) -> bytes:
    return ethernet(ipv4("0.0.0.0", "255.255.255.255", 17, udp(68, 67, msg)), **kw)  # noqa: S104


def server(msg: bytes) -> bytes:
    return ethernet(ipv4("168.0.0.2", "255.255.255.255", 17, udp(67, 68, msg)))


def pcap(
    frames: Sequence[bytes], order: str = "<", nanoseconds: bool = False, linktype: int = 1, cut: int = 0
) -> bytes:
    magic = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for i, frame in enumerate(frames):
        out += struct.pack(
            order + "IIII", 1700000000 + i, 250 * (1000 if nanoseconds else 1), len(frame), len(frame)
        )
        out += frame
    return out[: len(out) - cut] if cut else out


def names(data: bytes) -> List[Tuple[str, Optional[str]]]:
    return [(m.message_type, m.hostname) for m in client_requests(dhcp_messages(data))]


# ---- the reader -----------------------------------------------------------------------------------


def test_dhcp_messages_in_order_with_their_options_and_times() -> None:
    frames = [
        client(bootp(DISCOVER, "e2e-keyonly")),
        server(bootp(OFFER, op=2)),
        client(bootp(REQUEST, "e2e-keyonly")),
        server(bootp(ACK, op=2)),
    ]
    msgs = dhcp_messages(pcap(frames))
    assert [m.message_type for m in msgs] == ["DISCOVER", "OFFER", "REQUEST", "ACK"]
    assert [(m.sport, m.dport, m.op) for m in msgs] == [(68, 67, 1), (67, 68, 2), (68, 67, 1), (67, 68, 2)]
    assert msgs[0].src == "0.0.0.0" and msgs[0].dst == "255.255.255.255"  # noqa: S104
    assert msgs[0].xid == 0x1234ABCD and msgs[0].hostname == "e2e-keyonly"
    assert msgs[1].hostname is None and msgs[1].options[53] == b"\x02"
    assert msgs[0].time == pytest.approx(1700000000.00025) and msgs[3].time == pytest.approx(1700000003.00025)
    assert [m.message_type for m in client_requests(msgs)] == ["DISCOVER", "REQUEST"]


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nanoseconds", [False, True])
def test_either_byte_order_and_time_resolution(order: str, nanoseconds: bool) -> None:
    msgs = dhcp_messages(pcap([client(bootp(DISCOVER, "vm1"))], order=order, nanoseconds=nanoseconds))
    assert [(m.message_type, m.hostname) for m in msgs] == [("DISCOVER", "vm1")]
    assert msgs[0].time == pytest.approx(1700000000.00025)


def test_other_traffic_is_skipped() -> None:
    frames = [
        ethernet(b"\x00\x01\x08\x00\x06\x04\x00\x01" + b"\0" * 20, ethertype=0x0806),  # ARP
        ethernet(ipv4("168.0.0.15", "168.63.129.16", 6, b"\0" * 20)),  # TCP
        ethernet(ipv4("168.0.0.15", "168.0.0.3", 17, udp(5353, 53, b"\x12\x34" + b"\0" * 10))),  # DNS
        client(bootp(DISCOVER, "vm1")[:200]),  # cut short: no cookie
        client(bootp(DISCOVER, "vm1")[:236] + b"\0\0\0\0" + b"\xff"),  # no DHCP cookie: BOOTP
        ethernet(ipv4("0.0.0.0", "255.255.255.255", 17, udp(68, 67, bootp(DISCOVER)), frag=0x2001)),  # noqa: S104
        ethernet(b"\x45\x00"),  # a runt
        client(bootp(REQUEST, "vm1"), vlan=5),  # 802.1Q tagged
    ]
    assert names(pcap(frames)) == [("REQUEST", "vm1")]


def test_a_file_cut_short_ends_at_its_last_whole_record(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(str(tmp_path), "net.pcap")
    with open(path, "wb") as f:
        f.write(pcap([client(bootp(DISCOVER, "vm1")), client(bootp(REQUEST, "vm1"))], cut=7))
    assert [(m.message_type, m.hostname) for m in read_dhcp(path)] == [("DISCOVER", "vm1")]


def test_not_a_pcap_of_ethernet_frames_is_an_error() -> None:
    with pytest.raises(PcapError, match="magic"):
        dhcp_messages(b"\x0a\x0d\x0d\x0a" + b"\0" * 40)  # pcapng
    with pytest.raises(PcapError, match="bytes"):
        dhcp_messages(b"")
    with pytest.raises(PcapError, match="link type 101"):
        dhcp_messages(pcap([], linktype=101))


def test_options_repeated_padded_and_overloaded() -> None:
    # RFC 3396: a long option split in two is joined; option 52 = 3: file and sname hold options
    split = option(12, b"long-") + b"\0\0" + option(12, b"name")
    assert names(pcap([client(bootp(DISCOVER, extra=split))])) == [("DISCOVER", "long-name")]
    overloaded = bootp(None, extra=option(52, b"\x03"), file=option(53, bytes([REQUEST])) + b"\xff",
                       sname=option(12, b"in-sname") + b"\xff")  # fmt: skip
    assert names(pcap([client(overloaded)])) == [("REQUEST", "in-sname")]


# ---- the option-12 check ---------------------------------------------------------------------------


def check(frames: Sequence[bytes], expected: str) -> str:
    return check_first_request_hostname(dhcp_messages(pcap(frames)), expected).message_type


def test_the_first_request_carries_the_host_name() -> None:
    frames = [
        server(bootp(OFFER, "e2e-keyonly", op=2)),  # a server's message is not the guest's request
        client(bootp(DISCOVER, "e2e-keyonly")),
        client(bootp(REQUEST, "debian")),
    ]
    assert check(frames, "e2e-keyonly") == "DISCOVER"
    assert check([client(bootp(REQUEST, "e2e-keyonly"))], "e2e-keyonly") == "REQUEST"  # INIT-REBOOT


def test_a_first_request_without_option_12_fails() -> None:
    frames = [client(bootp(DISCOVER)), client(bootp(REQUEST, "e2e-keyonly"))]
    with pytest.raises(AssertionError) as e:
        check(frames, "e2e-keyonly")
    said = str(e.value)
    assert "first DHCP DISCOVER carries no option 12 (host name), not 'e2e-keyonly'" in said
    assert "DISCOVER 0.0.0.0:68 -> 255.255.255.255:67 xid 0x1234abcd, no option 12" in said
    assert "REQUEST 0.0.0.0:68 -> 255.255.255.255:67 xid 0x1234abcd, option 12 'e2e-keyonly'" in said


def test_a_first_request_with_the_image_name_fails() -> None:
    with pytest.raises(AssertionError, match="carries option 12 = 'debian', not 'e2e-keyonly'"):
        check([client(bootp(DISCOVER, "debian")), client(bootp(DISCOVER, "e2e-keyonly"))], "e2e-keyonly")


def test_no_request_at_all_fails() -> None:
    with pytest.raises(AssertionError, match="sent no DHCP DISCOVER or REQUEST"):
        check([server(bootp(OFFER, op=2)), client(bootp(8, "vm1"))], "vm1")  # an INFORM is no request
    with pytest.raises(AssertionError, match=r"sent no DHCP DISCOVER or REQUEST.*\n  \(none\)"):
        check([], "vm1")
