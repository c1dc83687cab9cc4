"""Reading MoldUDP64 datagrams out of a SoupBinTCP message store (journal, memory, JetStream).

What belongs here: turning a run of stored messages (kept as SoupBinTCP Sequenced Data packets,
see :mod:`nasdaq_protocols.soup.store`) into downstream datagrams, for the publisher and the
re-request server alike. The stored packets are walked by the same walker every SoupBinTCP
receive path uses (compiled when built), so no Python statement runs per message here.
"""

from __future__ import annotations

import operator

from nasdaq_protocols.soup.core import SequencedData
from nasdaq_protocols.soup.errors import StoreError
from nasdaq_protocols.soup.framing import MAX_PACKET_SIZE, walk_packets
from nasdaq_protocols.soup.store import MessageStore

from .codec import Packer

__all__ = ["datagram_count", "read_datagrams", "read_payloads"]

_data_of = operator.attrgetter("data")


def read_payloads(store: MessageStore, start: int, max_bytes: int, limit: int) -> list[bytes]:
    """Messages ``start, start + 1, ...`` of ``store``: at most ``limit``, and as many as fit in
    ``max_bytes`` of stored packets (at least one when ``start`` is stored).

    Raises:
        StoreError: the store is closed, failed, or holds something that is not Sequenced Data.
    """
    packets, _ = store.read_packets(start, max_bytes)
    if not packets:
        return []
    messages, _, _, error = walk_packets(packets, 0, limit, start - 1, MAX_PACKET_SIZE)
    if error is not None or (messages and messages[-1].__class__ is not SequencedData):
        raise StoreError(f"the store holds a packet that is not Sequenced Data after message {start - 1}")
    return list(map(_data_of, messages))


def read_datagrams(
    store: MessageStore, packer: Packer, start: int, max_bytes: int, limit: int
) -> tuple[list[bytes], int]:
    """Datagrams carrying messages from ``start`` on: at most ``limit`` messages, and datagrams
    adding up to at most ``max_bytes`` (the first one always, however big).

    Returns:
        ``(datagrams, messages they carry)``; ``([], 0)`` when ``start`` is past the store's end.

    Raises:
        StoreError: as :func:`read_payloads`.
        MessageTooLarge: a stored message is too big for any datagram.
    """
    payloads = read_payloads(store, start, max_bytes, limit)
    if not payloads:
        return [], 0
    datagrams = packer.pack(payloads, start)
    total = 0
    carried = 0
    for index, datagram in enumerate(datagrams):
        total += len(datagram)
        if total > max_bytes and index:
            del datagrams[index:]
            break
        carried += datagram_count(datagram)
    return datagrams, carried


def datagram_count(datagram: bytes) -> int:
    """Message Count of a downstream datagram this package packed."""
    return (datagram[18] << 8) | datagram[19]
