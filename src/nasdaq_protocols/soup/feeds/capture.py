"""Packet captures read: pcap and pcapng files, down to the TCP segments they hold.

What belongs here, sans-IO apart from reading the file: the two file formats (pcap with micro- or
nanosecond times, either byte order; pcapng with its sections, interfaces, their time
resolutions and offsets, Enhanced, Simple and obsolete Packet Blocks), the link layers captures
of TCP come in (Ethernet with VLAN tags, Linux cooked v1 and v2, BSD loopback, raw IP), IPv4 and
IPv6 (with extension headers), and the TCP header. What the segments mean (streams, reassembly,
SoupBinTCP) is :mod:`.tcp`'s and :mod:`.conversations`'s.

Only the standard library: each format is a few fixed headers, read with :mod:`struct`. Packets
that are not TCP over IP (ARP, UDP, ICMP...) are counted and skipped; IP fragments are counted
and skipped (TCP is not fragmented in practice); a packet cut short by the capture's snap length
gives the TCP payload bytes it has (the missing ones become a gap in the stream).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, NamedTuple

from .errors import FeedFormatError

__all__ = [
    "PCAPNG_MAGIC",
    "PCAP_MAGICS",
    "CaptureStats",
    "TcpSegment",
    "is_capture",
    "read_segments",
]

#: First four bytes of a pcap file (microsecond and nanosecond times, both byte orders).
PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
#: First four bytes of a pcapng file (its Section Header Block type).
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"

# Link-layer types (www.tcpdump.org/linktypes.html).
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
_RAW_ALIASES = (12, 14)  # DLT_RAW on some BSDs

_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_ETHERTYPE_VLAN = (0x8100, 0x88A8, 0x9100)
_TCP = 6
_IPV6_EXTENSIONS = (0, 43, 60)  # hop-by-hop, routing, destination options (fragment: 44)

_PCAP_HEADER = 24
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_IDB = 0x00000001
_PCAPNG_PB = 0x00000002
_PCAPNG_SPB = 0x00000003
_PCAPNG_EPB = 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D

#: TCP flags.
FIN, SYN, RST = 0x01, 0x02, 0x04


class TcpSegment(NamedTuple):
    """One TCP segment of a capture."""

    #: Capture time, nanoseconds since the epoch.
    time_ns: int
    #: Number of the packet in the capture (1-based), for messages.
    frame: int
    #: ``(address, port)`` of the sender; the address as text.
    source: tuple[str, int]
    #: ``(address, port)`` of the receiver.
    destination: tuple[str, int]
    #: Sequence number (of the first payload byte, or of the SYN/FIN).
    sequence: int
    #: TCP flags (``SYN``, ``FIN``, ``RST``...).
    flags: int
    #: The payload bytes captured (fewer than sent when the snap length cut the packet).
    payload: bytes


@dataclass
class CaptureStats:
    """What reading a capture met besides the TCP segments it gave."""

    packets: int = 0
    tcp_segments: int = 0
    not_tcp: int = 0
    fragments: int = 0
    truncated: int = 0
    link_types: set[int] = field(default_factory=set)
    unsupported_link_types: set[int] = field(default_factory=set)


def is_capture(head: bytes) -> bool:
    """True when ``head`` (a file's first bytes) starts a pcap or pcapng file."""
    return head[:4] in PCAP_MAGICS or head[:4] == PCAPNG_MAGIC


def read_segments(stream: BinaryIO, stats: CaptureStats | None = None) -> Iterator[TcpSegment]:
    """The TCP segments of a pcap or pcapng capture, in the order of the file.

    Args:
        stream: the capture, open for reading (decompressed if it was gzip).
        stats: filled with what was met along the way.

    Raises:
        FeedFormatError: not a capture, or one cut short or damaged (the error says where).
    """
    stats = stats if stats is not None else CaptureStats()
    head = stream.read(4)
    for frame, (time_ns, link_type, data, wire_length) in enumerate(_packets(stream, head), 1):
        stats.packets += 1
        stats.link_types.add(link_type)
        segment = _decode(frame, time_ns, link_type, data, wire_length, stats)
        if segment is not None:
            stats.tcp_segments += 1
            yield segment


Packet = tuple[int, int, bytes, int]  # (time_ns, link type, captured bytes, length on the wire)


def _packets(stream: BinaryIO, head: bytes) -> Iterator[Packet]:
    if head in PCAP_MAGICS:
        return _pcap_packets(stream, head)
    if head == PCAPNG_MAGIC:
        return _pcapng_packets(stream, head)
    raise FeedFormatError(f"not a pcap or pcapng capture (it starts with {head!r})")


def _read_exactly(stream: BinaryIO, size: int, what: str, offset: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise FeedFormatError(f"the capture is cut short in {what} at offset {offset}")
    return data


def _pcap_packets(stream: BinaryIO, magic: bytes) -> Iterator[Packet]:
    order, to_ns = PCAP_MAGICS[magic]
    rest = _read_exactly(stream, _PCAP_HEADER - 4, "the pcap header", 4)
    (link_type,) = struct.unpack_from(order + "I", rest, 16)
    link_type &= 0x0FFFFFFF  # the upper bits hold an FCS length, not the type
    record = struct.Struct(order + "IIII")
    offset = _PCAP_HEADER
    while True:
        header = stream.read(16)
        if not header:
            return
        if len(header) < 16:
            raise FeedFormatError(f"the capture is cut short in a packet header at offset {offset}")
        seconds, fraction, captured, wire = record.unpack(header)
        if captured > 0x4000000:
            raise FeedFormatError(f"packet at offset {offset} claims {captured} bytes: the file is damaged")
        data = _read_exactly(stream, captured, "a packet", offset + 16)
        offset += 16 + captured
        yield seconds * 1_000_000_000 + fraction * to_ns, link_type, data, wire


@dataclass
class _Interface:
    link_type: int
    units_per_second: int = 1_000_000  # if_tsresol: microseconds by default
    offset_seconds: int = 0  # if_tsoffset


def _pcapng_packets(stream: BinaryIO, magic: bytes) -> Iterator[Packet]:
    order = "<"
    interfaces: list[_Interface] = []
    offset = 0
    block_type_bytes = magic
    while True:
        if not block_type_bytes:
            return
        if len(block_type_bytes) < 4:
            raise FeedFormatError(f"the capture is cut short in a block header at offset {offset}")
        length_bytes = _read_exactly(stream, 4, "a block header", offset + 4)
        if block_type_bytes == PCAPNG_MAGIC:
            order_bytes = _read_exactly(stream, 4, "a section header", offset + 8)
            if struct.unpack("<I", order_bytes)[0] == _BYTE_ORDER_MAGIC:
                order = "<"
            elif struct.unpack(">I", order_bytes)[0] == _BYTE_ORDER_MAGIC:
                order = ">"
            else:
                raise FeedFormatError(f"section header at offset {offset} has no byte-order magic")
            (length,) = struct.unpack(order + "I", length_bytes)
            if length < 28 or length % 4:
                raise FeedFormatError(f"section header at offset {offset} has a bad length {length}")
            _read_exactly(stream, length - 12, "a section header", offset + 12)
            interfaces = []  # interface numbers start again in each section
            offset += length
            block_type_bytes = stream.read(4)
            continue
        (block_type,) = struct.unpack(order + "I", block_type_bytes)
        (length,) = struct.unpack(order + "I", length_bytes)
        if length < 12 or length % 4 or length > 0x4000000:
            raise FeedFormatError(f"block at offset {offset} has a bad length {length}")
        body = _read_exactly(stream, length - 8, "a block", offset + 8)[:-4]
        if block_type == _PCAPNG_IDB:
            interfaces.append(_interface(body, order, offset))
        elif block_type in (_PCAPNG_EPB, _PCAPNG_PB, _PCAPNG_SPB):
            packet = _pcapng_packet(block_type, body, order, interfaces, offset)
            if packet is not None:
                yield packet
        offset += length
        block_type_bytes = stream.read(4)


def _interface(body: bytes, order: str, offset: int) -> _Interface:
    if len(body) < 8:
        raise FeedFormatError(f"interface block at offset {offset} is too short")
    (link_type,) = struct.unpack_from(order + "H", body, 0)
    interface = _Interface(link_type)
    position = 8
    while position + 4 <= len(body):
        code, size = struct.unpack_from(order + "HH", body, position)
        value = body[position + 4 : position + 4 + size]
        if code == 0:
            break
        if code == 9 and size >= 1:  # if_tsresol
            resolution = value[0]
            if resolution & 0x80:
                interface.units_per_second = 1 << (resolution & 0x7F)
            else:
                interface.units_per_second = 10 ** (resolution & 0x7F)
        elif code == 14 and size >= 8:  # if_tsoffset, seconds
            (interface.offset_seconds,) = struct.unpack(order + "q", value[:8])
        position += 4 + size + (-size % 4)
    return interface


def _pcapng_packet(
    block_type: int, body: bytes, order: str, interfaces: list[_Interface], offset: int
) -> Packet | None:
    if block_type == _PCAPNG_SPB:
        if len(body) < 4 or not interfaces:
            raise FeedFormatError(f"simple packet block at offset {offset} without an interface")
        (wire,) = struct.unpack_from(order + "I", body, 0)
        interface = interfaces[0]
        # A Simple Packet Block carries no time: 0, which the import reports as not known.
        return 0, interface.link_type, body[4 : 4 + min(wire, len(body) - 4)], wire
    if block_type == _PCAPNG_EPB:
        if len(body) < 20:
            raise FeedFormatError(f"packet block at offset {offset} is too short")
        number, high, low, captured, wire = struct.unpack_from(order + "IIIII", body, 0)
    else:  # the obsolete Packet Block
        if len(body) < 20:
            raise FeedFormatError(f"packet block at offset {offset} is too short")
        number, _, high, low, captured, wire = struct.unpack_from(order + "HHIIII", body, 0)
    if number >= len(interfaces):
        raise FeedFormatError(f"packet block at offset {offset} names interface {number}, not described")
    if 20 + captured > len(body):
        raise FeedFormatError(f"packet block at offset {offset} is shorter than its packet")
    interface = interfaces[number]
    units = (high << 32) | low
    per_second = interface.units_per_second
    seconds, fraction = divmod(units, per_second)
    time_ns = (seconds + interface.offset_seconds) * 1_000_000_000 + fraction * 1_000_000_000 // per_second
    return time_ns, interface.link_type, body[20 : 20 + captured], wire


# ----------------------------------------------------------------- link, IP and TCP layers


def _decode(
    frame: int, time_ns: int, link_type: int, data: bytes, wire_length: int, stats: CaptureStats
) -> TcpSegment | None:
    """The TCP segment in one captured packet, or ``None`` (counted in ``stats``)."""
    network = _network_layer(link_type, data)
    if network is None:
        if link_type not in _KNOWN_LINK_TYPES:
            stats.unsupported_link_types.add(link_type)
        stats.not_tcp += 1
        return None
    version, start = network
    if wire_length > len(data):
        stats.truncated += 1
    try:
        if version == 4:
            return _ipv4(frame, time_ns, data, start, stats)
        return _ipv6(frame, time_ns, data, start, stats)
    except (IndexError, struct.error):
        stats.not_tcp += 1  # a header cut short by the snap length: nothing to take from it
        return None


_KNOWN_LINK_TYPES = {
    LINKTYPE_NULL,
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    LINKTYPE_LOOP,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL2,
    *_RAW_ALIASES,
}


def _network_layer(link_type: int, data: bytes) -> tuple[int, int] | None:
    """``(IP version, offset of the IP header)``, or ``None`` for a packet that is not IP."""
    if link_type == LINKTYPE_ETHERNET:
        if len(data) < 14:
            return None
        position, ethertype = 12, int.from_bytes(data[12:14], "big")
        while ethertype in _ETHERTYPE_VLAN and len(data) >= position + 6:
            position += 4
            ethertype = int.from_bytes(data[position : position + 2], "big")
        return _by_ethertype(ethertype, position + 2)
    if link_type == LINKTYPE_LINUX_SLL:
        return _by_ethertype(int.from_bytes(data[14:16], "big"), 16) if len(data) >= 16 else None
    if link_type == LINKTYPE_LINUX_SLL2:
        return _by_ethertype(int.from_bytes(data[0:2], "big"), 20) if len(data) >= 20 else None
    if link_type in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(data) < 4:
            return None
        family = int.from_bytes(data[:4], "big" if link_type == LINKTYPE_LOOP else "little")
        if family > 0xFFFF:  # written by a host of the other byte order
            family = int.from_bytes(data[:4], "little" if link_type == LINKTYPE_LOOP else "big")
        if family == 2:
            return 4, 4
        if family in (10, 24, 28, 30):
            return 6, 4
        return None
    if link_type in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6, *_RAW_ALIASES):
        if not data:
            return None
        version = data[0] >> 4
        return (version, 0) if version in (4, 6) else None
    return None


def _by_ethertype(ethertype: int, position: int) -> tuple[int, int] | None:
    if ethertype == _ETHERTYPE_IPV4:
        return 4, position
    if ethertype == _ETHERTYPE_IPV6:
        return 6, position
    return None


def _ipv4(frame: int, time_ns: int, data: bytes, start: int, stats: CaptureStats) -> TcpSegment | None:
    if data[start] >> 4 != 4:
        stats.not_tcp += 1
        return None
    header_length = (data[start] & 0x0F) * 4
    total_length = int.from_bytes(data[start + 2 : start + 4], "big")
    fragment = int.from_bytes(data[start + 6 : start + 8], "big")
    if data[start + 9] != _TCP:
        stats.not_tcp += 1
        return None
    if fragment & 0x3FFF:  # more fragments, or an offset: a fragment
        stats.fragments += 1
        return None
    source = _ipv4_text(data[start + 12 : start + 16])
    destination = _ipv4_text(data[start + 16 : start + 20])
    # The IP length, not the frame's: Ethernet pads short frames (to 60 bytes).
    end = start + total_length if total_length else len(data)
    return _tcp(frame, time_ns, data, start + header_length, min(end, len(data)), source, destination)


def _ipv4_text(address: bytes) -> str:
    return ".".join(map(str, address))


def _ipv6(frame: int, time_ns: int, data: bytes, start: int, stats: CaptureStats) -> TcpSegment | None:
    payload_length = int.from_bytes(data[start + 4 : start + 6], "big")
    next_header = data[start + 6]
    source = _ipv6_text(data[start + 8 : start + 24])
    destination = _ipv6_text(data[start + 24 : start + 40])
    end = start + 40 + payload_length if payload_length else len(data)
    position = start + 40
    while next_header in _IPV6_EXTENSIONS:
        next_header, position = data[position], position + 8 + data[position + 1] * 8
    if next_header == 44:
        stats.fragments += 1
        return None
    if next_header != _TCP:
        stats.not_tcp += 1
        return None
    return _tcp(frame, time_ns, data, position, min(end, len(data)), source, destination)


def _ipv6_text(address: bytes) -> str:
    return str(ipaddress.IPv6Address(address))


_TCP_HEADER = struct.Struct(">HHIIBB")


def _tcp(
    frame: int, time_ns: int, data: bytes, start: int, end: int, source: str, destination: str
) -> TcpSegment:
    source_port, destination_port, sequence, _, offset_byte, flags = _TCP_HEADER.unpack_from(data, start)
    payload_start = start + (offset_byte >> 4) * 4
    return TcpSegment(
        time_ns,
        frame,
        (source, source_port),
        (destination, destination_port),
        sequence,
        flags,
        data[payload_start:end] if payload_start < end else b"",
    )
