"""Exporting a journal: as a BinaryFILE, or as a pcap of a SoupBinTCP conversation that serves it.

What belongs here: reading messages ``first .. last`` of a :class:`~..store.FileStore` and
writing them in a feed format (:mod:`.binaryfile`, :mod:`.pcap_writer`), with their receive times
where the format has times. Each export is a generator that yields the messages written so far
after each chunk, so that the caller shows progress and can stop between chunks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import BinaryIO

from ..store import FileStore
from .binaryfile import BinaryFileWriter
from .pcap_writer import DEFAULT_MSS, ConversationWriter

__all__ = ["EXPORT_CHUNK", "export_binaryfile", "export_pcap", "payloads_of"]

#: Bytes of the journal read at a time.
EXPORT_CHUNK = 1 << 20


def payloads_of(packets: bytes) -> list[bytes]:
    """The payloads of whole Sequenced Data packets laid end to end (as a store returns them)."""
    payloads: list[bytes] = []
    append = payloads.append
    position, end = 0, len(packets)
    while position < end:
        stop = position + 2 + ((packets[position] << 8) | packets[position + 1])
        append(packets[position + 3 : stop])
        position = stop
    return payloads


def _binaryfile_of(packets: bytes) -> bytes:
    """The same messages in BinaryFILE form: each packet's length less its type byte, then the
    payload (one pass, no payload objects kept)."""
    parts: list[bytes] = []
    append = parts.append
    position, end = 0, len(packets)
    while position < end:
        length = (packets[position] << 8) | packets[position + 1]
        append((length - 1).to_bytes(2, "big"))
        append(packets[position + 3 : position + 2 + length])
        position += 2 + length
    return b"".join(parts)


def _chunks(store: FileStore, first: int, last: int) -> Iterator[tuple[int, bytes, int]]:
    """``(first number, packets, count)`` of messages ``first .. last``, a chunk at a time."""
    sequence = first
    while sequence <= last:
        packets, count = store.read_packets(sequence, EXPORT_CHUNK)
        if not count:
            return
        if sequence + count - 1 > last:  # cut the chunk at `last`
            count = last - sequence + 1
            packets = packets[: _length_of(packets, count)]
        yield sequence, packets, count
        sequence += count


def _length_of(packets: bytes, count: int) -> int:
    position = 0
    for _ in range(count):
        position += 2 + ((packets[position] << 8) | packets[position + 1])
    return position


def export_binaryfile(
    store: FileStore, stream: BinaryIO, first: int, last: int, *, compress: bool = False
) -> Iterator[int]:
    """Write messages ``first .. last`` of ``store`` to ``stream`` as a BinaryFILE (gzip if
    ``compress``); close ``stream`` at the end. Yields the messages written so far.

    Raises:
        OSError, StoreError: reading or writing failed.
    """
    writer = BinaryFileWriter(stream, compress=compress)
    try:
        written = 0
        for _, packets, count in _chunks(store, first, last):
            writer.write_framed(_binaryfile_of(packets), count)
            written += count
            yield written
    finally:
        writer.close()


def export_pcap(
    store: FileStore,
    stream: BinaryIO,
    first: int,
    last: int,
    *,
    port: int = 7000,
    mss: int = DEFAULT_MSS,
) -> Iterator[int]:
    """Write a pcap of one client logging in at ``first`` and receiving messages ``first .. last``
    of ``store``, then End of Session; close ``stream`` at the end. Messages with a receive time
    are sent at it; the others follow the one before (the first: the journal's first known time,
    else now). Yields the messages written so far.

    Raises:
        OSError, StoreError: reading or writing failed.
    """
    try:
        known = store.received_times(first, min(last - first + 1, 1 << 16))
        start_ns = next((time_ns for time_ns in known if time_ns), 0) or time.time_ns()
        writer = ConversationWriter(
            stream, port=port, session=store.session, first_sequence=first, start_ns=start_ns, mss=mss
        )
        written = 0
        for sequence, packets, count in _chunks(store, first, last):
            writer.messages(payloads_of(packets), store.received_times(sequence, count))
            written += count
            yield written
        writer.end()
    finally:
        stream.close()
