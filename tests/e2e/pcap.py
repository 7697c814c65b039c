"""The guest's network traffic as qemu's `filter-dump` writes it (tests/e2e/vm.py): a
classic pcap file of Ethernet frames. A small reader of the pcap format, Ethernet (with
802.1Q tags), IPv4, UDP and BOOTP/DHCP options: enough to find the guest's DHCP requests
and what they carry, with no dependency. Frames it cannot parse are skipped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

LINKTYPE_ETHERNET = 1
ETH_IPV4, ETH_VLAN = 0x0800, (0x8100, 0x88A8)
UDP = 17
CLIENT_PORT, SERVER_PORT = 68, 67
DHCP_COOKIE = b"\x63\x82\x53\x63"
BOOTP_FIXED = 236  # op .. file, before the magic cookie
OPT_PAD, OPT_END, OPT_HOSTNAME, OPT_OVERLOAD, OPT_MSG_TYPE = 0, 255, 12, 52, 53
MESSAGE_TYPES = dict(
    enumerate(("DISCOVER", "OFFER", "REQUEST", "DECLINE", "ACK", "NAK", "RELEASE", "INFORM"), 1)
)
REQUESTS = ("DISCOVER", "REQUEST")
# the pcap magic numbers as they read in little-endian: (byte order, fraction per second)
_MAGICS = {
    0xA1B2C3D4: ("<", 1e6),
    0xD4C3B2A1: (">", 1e6),
    0xA1B23C4D: ("<", 1e9),
    0x4D3CB2A1: (">", 1e9),
}


class PcapError(ValueError):
    pass


def frames(data: bytes) -> Iterator[Tuple[float, bytes]]:
    """(time in seconds, captured bytes) of each Ethernet frame of a pcap file's bytes.
    A file cut short (qemu killed while writing) ends at its last whole record."""
    if len(data) < 24:
        raise PcapError(f"not a pcap file: {len(data)} bytes")
    magic = struct.unpack("<I", data[:4])[0]
    if magic not in _MAGICS:
        raise PcapError(f"not a pcap file: magic {magic:#010x}")
    order, per_second = _MAGICS[magic]
    linktype = struct.unpack(order + "I", data[20:24])[0] & 0x0FFFFFFF
    if linktype != LINKTYPE_ETHERNET:
        raise PcapError(f"link type {linktype}, not Ethernet")
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack(order + "IIII", data[pos : pos + 16])
        pos += 16
        if pos + caplen > len(data):
            return
        yield sec + frac / per_second, data[pos : pos + caplen]
        pos += caplen


def udp_payload(frame: bytes) -> Optional[Tuple[str, int, str, int, bytes]]:
    """(source IPv4, port, destination IPv4, port, payload) of an Ethernet frame carrying
    UDP over IPv4 (first fragment or whole datagram), else None."""
    if len(frame) < 14:
        return None
    pos, ethertype = 14, struct.unpack("!H", frame[12:14])[0]
    while ethertype in ETH_VLAN and len(frame) >= pos + 4:
        ethertype = struct.unpack("!H", frame[pos + 2 : pos + 4])[0]
        pos += 4
    if ethertype != ETH_IPV4 or len(frame) < pos + 20:
        return None
    ip = frame[pos:]
    version, ihl = ip[0] >> 4, (ip[0] & 0x0F) * 4
    total = struct.unpack("!H", ip[2:4])[0]
    offset = struct.unpack("!H", ip[6:8])[0] & 0x1FFF
    if version != 4 or ihl < 20 or ip[9] != UDP or offset != 0 or len(ip) < ihl + 8:
        return None
    ip = ip[: max(total, ihl + 8)]  # without the Ethernet padding
    src, dst = ".".join(map(str, ip[12:16])), ".".join(map(str, ip[16:20]))
    sport, dport, length = struct.unpack("!HHH", ip[ihl : ihl + 6])
    end = ihl + max(length, 8)
    return src, sport, dst, dport, ip[ihl + 8 : end]


def dhcp_options(bootp: bytes) -> Optional[Dict[int, bytes]]:
    """The options of a BOOTP message with DHCP's magic cookie (repeated options joined,
    RFC 3396; the sname and file fields read when option 52 says they hold options), or
    None when it is not one."""
    if len(bootp) < BOOTP_FIXED + 4 or bootp[BOOTP_FIXED : BOOTP_FIXED + 4] != DHCP_COOKIE:
        return None
    options: Dict[int, bytes] = {}

    def parse(area: bytes) -> None:
        i = 0
        while i < len(area):
            code = area[i]
            if code == OPT_END:
                return
            if code == OPT_PAD:
                i += 1
                continue
            if i + 1 >= len(area):
                return
            n = area[i + 1]
            options[code] = options.get(code, b"") + area[i + 2 : i + 2 + n]
            i += 2 + n

    parse(bootp[BOOTP_FIXED + 4 :])
    overload = options.get(OPT_OVERLOAD, b"\0")[:1]
    if overload in (b"\x01", b"\x03"):
        parse(bootp[108:236])  # file
    if overload in (b"\x02", b"\x03"):
        parse(bootp[44:108])  # sname
    return options


@dataclass(frozen=True)
class Dhcp:
    """One DHCP message seen on the wire."""

    time: float
    src: str
    sport: int
    dst: str
    dport: int
    op: int  # 1: from a client, 2: from a server
    xid: int
    options: Dict[int, bytes] = field(default_factory=dict)

    @property
    def message_type(self) -> str:
        raw = self.options.get(OPT_MSG_TYPE, b"")
        return MESSAGE_TYPES.get(raw[0], str(raw[0])) if raw else "BOOTP"

    @property
    def hostname(self) -> Optional[str]:
        """Option 12, or None when the message does not carry it."""
        raw = self.options.get(OPT_HOSTNAME)
        return None if raw is None else raw.decode("ascii", "replace")

    def describe(self, t0: float = 0.0) -> str:
        name = "no option 12" if self.hostname is None else f"option 12 {self.hostname!r}"
        return (
            f"{self.time - t0:8.3f}s {self.message_type} {self.src}:{self.sport} -> {self.dst}:{self.dport} "
            f"xid {self.xid:#010x}, {name}"
        )


def dhcp_messages(data: bytes) -> List[Dhcp]:
    """Every DHCP message (UDP between ports 67 and 68) in a pcap file's bytes, in order."""
    found = []
    for when, frame in frames(data):
        udp = udp_payload(frame)
        if udp is None:
            continue
        src, sport, dst, dport, payload = udp
        if {sport, dport} != {CLIENT_PORT, SERVER_PORT}:
            continue
        options = dhcp_options(payload)
        if options is None:
            continue
        xid = struct.unpack("!I", payload[4:8])[0]
        found.append(Dhcp(when, src, sport, dst, dport, payload[0], xid, options))
    return found


def client_requests(messages: List[Dhcp]) -> List[Dhcp]:
    """The client's DISCOVERs and REQUESTs (UDP 68 → 67), in order."""
    ports = (CLIENT_PORT, SERVER_PORT)
    return [m for m in messages if (m.sport, m.dport) == ports and m.op == 1 and m.message_type in REQUESTS]


def read_dhcp(path: str) -> List[Dhcp]:
    with open(path, "rb") as f:
        return dhcp_messages(f.read())


def check_first_request_hostname(messages: List[Dhcp], expected: str) -> Dhcp:
    """The guest's first DHCP request (DISCOVER or REQUEST) carries option 12 =
    `expected`: returns it; AssertionError listing every DHCP message otherwise."""
    requests = client_requests(messages)
    t0 = messages[0].time if messages else 0.0
    seen = "\n".join("  " + m.describe(t0) for m in messages) or "  (none)"
    if not requests:
        raise AssertionError(f"the guest sent no DHCP DISCOVER or REQUEST; DHCP messages seen:\n{seen}")
    first = requests[0]
    if first.hostname != expected:
        said = "no option 12 (host name)" if first.hostname is None else f"option 12 = {first.hostname!r}"
        raise AssertionError(
            f"the guest's first DHCP {first.message_type} carries {said}, not {expected!r}; "
            f"DHCP messages seen:\n{seen}"
        )
    return first
