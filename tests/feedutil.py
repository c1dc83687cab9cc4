"""Helpers for the feed tests (imported as ``feedutil``): BinaryFILEs, journals with times, pcap edits."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

from nasdaq_protocols.soup.feeds.exporting import export_pcap
from nasdaq_protocols.soup.store import FileStore

#: An ITCH 5.0 message's timestamp: 6 bytes big-endian at offset 5 (ns since midnight).
ITCH_HEADER = struct.Struct(">cHH")


def binaryfile(payloads: Sequence[bytes]) -> bytes:
    """The BinaryFILE of ``payloads``."""
    return b"".join(len(payload).to_bytes(2, "big") + payload for payload in payloads)


def write_binaryfile(path: Path, payloads: Sequence[bytes], *, compress: bool = False) -> Path:
    data = binaryfile(payloads)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def itch_message(kind: bytes, time_ns: int, body: bytes = b"") -> bytes:
    """An ITCH 5.0-shaped message: type, stock locate, tracking number, 6-byte timestamp, body."""
    return ITCH_HEADER.pack(kind, 1, 0) + time_ns.to_bytes(6, "big") + body


def timed_journal(path: Path, payloads: Sequence[bytes], times: Sequence[int], session: str = "FEED") -> Path:
    with FileStore(path, session=session) as store:
        store.append_batch(list(payloads), received_ns=list(times))
    return path


def export_to_pcap(
    journal: Path, pcap: Path, first: int = 1, last: int | None = None, port: int = 7000
) -> Path:
    with FileStore(journal, readonly=True) as store, open(pcap, "wb") as stream:
        end = store.last_sequence if last is None else last
        for _ in export_pcap(store, stream, first, end, port=port):
            pass
    return pcap


# --------------------------------------------------------------------------- pcap edits

PCAP_HEADER = 24
RECORD = struct.Struct("<IIII")


def pcap_records(path: Path) -> tuple[bytes, list[bytes]]:
    """A little-endian pcap's header and its records (each with its 16-byte record header)."""
    data = path.read_bytes()
    header, position, records = data[:PCAP_HEADER], PCAP_HEADER, []
    while position < len(data):
        captured = RECORD.unpack_from(data, position)[2]
        records.append(data[position : position + 16 + captured])
        position += 16 + captured
    return header, records


def edit_pcap(source: Path, target: Path, edit: Callable[[list[bytes]], list[bytes]]) -> Path:
    """Write ``target`` with the records of ``source`` as ``edit`` returns them."""
    header, records = pcap_records(source)
    target.write_bytes(header + b"".join(edit(records)))
    return target


def tcp_payload_length(record: bytes) -> int:
    """TCP payload bytes of a record of an Ethernet/IPv4 pcap (as our exporter writes)."""
    ip = 16 + 14
    total = int.from_bytes(record[ip + 2 : ip + 4], "big")
    header = (record[ip] & 0x0F) * 4
    tcp_header = (record[ip + header + 12] >> 4) * 4
    return total - header - tcp_header
