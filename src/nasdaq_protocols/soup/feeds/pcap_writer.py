"""A synthetic SoupBinTCP conversation written as a pcap file, for Wireshark and friends.

What belongs here: the bytes of a capture of one TCP connection between a client and a server
(handshake, Login Request, Login Accepted, the Sequenced Data, End of Session, the closing FINs),
with correct IPv4 and TCP checksums, in a pcap file with nanosecond times (magic ``a1b23c4d``),
Ethernet link layer. :class:`ConversationWriter` is given the messages in order with their times.

The addresses are documentation ones (RFC 5737 TEST-NET-1): the server ``192.0.2.1``, the
client ``192.0.2.2``. Sequenced Data are packed into segments of at most ``mss`` bytes; a
segment holds messages of one receive time only, so the capture's times are the messages'.
"""

from __future__ import annotations

import struct
import sys
from array import array
from typing import BinaryIO

from ..core import EndOfSession, LoginAccepted, LoginRequest
from ..framing import packet_header

__all__ = ["CLIENT_ADDRESS", "DEFAULT_MSS", "SERVER_ADDRESS", "ConversationWriter"]

SERVER_ADDRESS = bytes((192, 0, 2, 1))
CLIENT_ADDRESS = bytes((192, 0, 2, 2))
CLIENT_PORT = 50_000
#: Bytes of TCP payload per segment (Ethernet's usual MSS).
DEFAULT_MSS = 1460

_PCAP_HEADER = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_ETHERNET = bytes.fromhex("0200000000010200000000020800")  # locally administered MACs
_IP_HEADER = struct.Struct(">BBHHHBBH4s4s")
_TCP_HEADER = struct.Struct(">HHIIBBHHH")
_PSEUDO = struct.Struct(">4s4sBBH")
_FIN, _SYN, _PSH, _ACK = 0x01, 0x02, 0x08, 0x10


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\x00"
    words = array("H", data)
    if sys.byteorder == "little":
        words.byteswap()
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class ConversationWriter:
    """Writes one SoupBinTCP conversation to a pcap stream.

    Args:
        stream: a binary file open for writing (not closed here).
        port: the server's TCP port.
        session: the session name of Login Accepted.
        first_sequence: the sequence number of the first message (Login Accepted says it).
        start_ns: the time of the handshake (nanoseconds since the epoch).
        mss: TCP payload bytes per segment at most.
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        port: int,
        session: str,
        first_sequence: int,
        start_ns: int,
        mss: int = DEFAULT_MSS,
    ) -> None:
        self._stream = stream
        self._port = port
        self._mss = mss
        self._client_next = 1_000
        self._server_next = 2_000_000
        self._ip_id = 0
        self._time_ns = start_ns
        #: Segments written (packets of the capture).
        self.packets = 0
        stream.write(_PCAP_HEADER.pack(0xA1B23C4D, 2, 4, 0, 0, 262_144, 1))
        self._segment(True, _SYN, b"", start_ns, consume=1)
        self._segment(False, _SYN | _ACK, b"", start_ns, consume=1)
        self._segment(True, _ACK, b"", start_ns)
        login = LoginRequest("", "", "", str(first_sequence)).to_bytes()[1]
        self._segment(True, _PSH | _ACK, login, start_ns)
        accepted = LoginAccepted(session, first_sequence).to_bytes()[1]
        self._segment(False, _PSH | _ACK, accepted, start_ns)
        self._pending = bytearray()
        self._pending_time = start_ns

    def messages(self, payloads: list[bytes], times: list[int] | array[int]) -> None:
        """Add Sequenced Data, in order, each with its receive time (0: the previous one's)."""
        pending = self._pending
        for payload, time_ns in zip(payloads, times, strict=True):
            if time_ns and time_ns != self._pending_time:
                self._flush()
                self._pending_time = max(time_ns, self._time_ns)
            packet = packet_header(0x53, len(payload)) + payload
            if len(pending) + len(packet) > self._mss and pending:
                self._flush()
            pending += packet

    def end(self) -> None:
        """End of Session, then both sides close (FIN)."""
        self._pending += EndOfSession().to_bytes()[1]
        self._flush()
        self._segment(False, _FIN | _ACK, b"", self._time_ns, consume=1)
        self._segment(True, _FIN | _ACK, b"", self._time_ns, consume=1)
        self._segment(False, _ACK, b"", self._time_ns)

    def _flush(self) -> None:
        data = bytes(self._pending)
        self._pending.clear()
        for start in range(0, len(data), self._mss):
            self._segment(False, _PSH | _ACK, data[start : start + self._mss], self._pending_time)

    def _segment(self, from_client: bool, flags: int, payload: bytes, time_ns: int, consume: int = 0) -> None:
        self._time_ns = time_ns = max(time_ns, self._time_ns)
        if from_client:
            source, destination = CLIENT_ADDRESS, SERVER_ADDRESS
            source_port, destination_port = CLIENT_PORT, self._port
            sequence, acknowledged = self._client_next, self._server_next
            self._client_next += len(payload) + consume
        else:
            source, destination = SERVER_ADDRESS, CLIENT_ADDRESS
            source_port, destination_port = self._port, CLIENT_PORT
            sequence, acknowledged = self._server_next, self._client_next
            self._server_next += len(payload) + consume
        if not flags & _ACK:
            acknowledged = 0
        tcp = _TCP_HEADER.pack(
            source_port,
            destination_port,
            sequence & 0xFFFFFFFF,
            acknowledged & 0xFFFFFFFF,
            5 << 4,
            flags,
            65535,
            0,
            0,
        )
        pseudo = _PSEUDO.pack(source, destination, 0, 6, len(tcp) + len(payload))
        checksum = _checksum(pseudo + tcp + payload)
        tcp = tcp[:16] + checksum.to_bytes(2, "big") + tcp[18:]
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        total = 20 + len(tcp) + len(payload)
        ip = _IP_HEADER.pack(0x45, 0, total, self._ip_id, 0x4000, 64, 6, 0, source, destination)
        ip = ip[:10] + _checksum(ip).to_bytes(2, "big") + ip[12:]
        frame = _ETHERNET if from_client else _ETHERNET[6:12] + _ETHERNET[:6] + _ETHERNET[12:]
        packet = frame + ip + tcp + payload
        seconds, nanoseconds = divmod(time_ns, 1_000_000_000)
        self._stream.write(_RECORD.pack(seconds, nanoseconds, len(packet), len(packet)) + packet)
        self.packets += 1
