"""The core both stores share: packets laid end to end in wire form, plus a sparse offset index.

What belongs here: everything about sequence numbers, checkpoints and ``max_bytes``; nothing about
where the bytes live (a subclass says that: :meth:`PacketLog._window`, :meth:`PacketLog._read`,
:meth:`PacketLog._write`). Reaching message ``n`` starts at the checkpoint of its group (the offset
of every ``index_every``-th message: messages 1, k + 1, 2k + 1, ...) and steps over at most
``index_every - 1`` packets with :func:`~..framing.scan_packets`, the package's one length walker.
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_right
from collections.abc import Iterable

from ..core import MAX_PAYLOAD_SIZE
from ..errors import StoreError
from ..framing import HEADER_CACHE_SIZE, MAX_PACKET_SIZE, SEQUENCED_HEADERS, packet_header, scan_packets
from .api import Payload, StoreBase, check_session

__all__ = ["SEQUENCED", "PacketLog", "pack_record_header"]

#: The type byte of Sequenced Data, the only packet a store holds.
SEQUENCED = ord("S")

#: ``pack_record_header(length, type)``: the 3 bytes before a payload (length = payload + 1).
pack_record_header = struct.Struct(">HB").pack

# scan_packets' packet limit when only the byte bound matters (a packet is at least 3 bytes).
_NO_COUNT_LIMIT = sys.maxsize


class PacketLog(StoreBase):
    """Packets laid end to end plus a sparse offset index: what both stores have in common.

    Subclasses say where the bytes live (:meth:`_window`, :meth:`_read`) and how new ones are
    written (:meth:`_write`); everything about sequence numbers and ``max_bytes`` is here.

    Args:
        session: the session name kept with the stream (already checked).
        index_every: keep the offset of every ``index_every``-th message.
        first_offset: offset of the first packet (the journal header's size for a file).

    Raises:
        ValueError: ``index_every`` is not a positive integer.
    """

    def __init__(self, session: str, index_every: int, first_offset: int) -> None:
        if not isinstance(index_every, int) or index_every < 1:
            raise ValueError(f"index_every must be a positive integer, got {index_every!r}")
        self._session = session
        self._index_every = index_every
        # Offset of messages 1, k + 1, 2k + 1, ... (k = index_every).
        self._checkpoints = array("Q")
        self._count = 0
        self._end = first_offset  # offset just past the last stored packet
        self._closed = False

    # ----------------------------------------------------------------- for subclasses

    def _window(self, offset: int, length: int) -> tuple[bytes | bytearray, int]:
        """Return ``(buffer, base)``: a buffer holding bytes ``[offset, offset + length)`` of the
        log, where ``buffer[i]`` is byte ``base + i``."""
        raise NotImplementedError

    def _read(self, offset: int, length: int) -> bytes:
        """Return bytes ``[offset, offset + length)`` of the log as a new ``bytes``."""
        raise NotImplementedError

    def _write(self, data: bytes) -> None:
        """Store packets after the current end, all or nothing; raise :class:`StoreError` if not."""
        raise NotImplementedError

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self!r} is closed")

    def _check_writable(self) -> None:
        self._check_open()

    def _appended(self) -> None:
        """Called after messages were stored and counted."""

    def _record_session(self, session: str) -> None:
        """Persist a new session name (memory: nothing to do)."""

    # ----------------------------------------------------------------- MessageStore

    @property
    def last_sequence(self) -> int:
        """Sequence number of the last message stored (``N``); 0 when empty."""
        return self._count

    @property
    def session(self) -> str:
        """Name of the session the stream belongs to (``''`` when none was given)."""
        return self._session

    def name_session(self, session: str) -> None:
        """Give an unnamed stream its session name (kept with the stream from now on).

        Raises:
            StoreError: the stream already has another name (or the store cannot record it).
            ValueError: the name is longer than 10 characters or not ASCII.
        """
        session = check_session(session)
        if session == self._session:
            return
        if self._session:
            raise StoreError(f"the stream belongs to session {self._session!r}, not {session!r}")
        self._record_session(session)
        self._session = session

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def append(self, payload: Payload) -> int:
        """Store one message as the next Sequenced Data packet; return its sequence number.

        Args:
            payload: the message, at most 65,534 bytes (docs/protocol.md, "Framing").

        Returns:
            The message's sequence number, :attr:`last_sequence` after the call.

        Raises:
            ValueError: the payload is longer than 65,534 bytes; nothing is stored.
            StoreError: the store is closed or read-only, or the write failed; nothing is stored.
        """
        self._check_writable()
        if type(payload) is not bytes:
            payload = bytes(memoryview(payload))
        length = len(payload) + 1
        if length > MAX_PACKET_SIZE:
            raise ValueError(f"payload of {length - 1} bytes exceeds the maximum of {MAX_PAYLOAD_SIZE}")
        offset = self._end
        self._write(pack_record_header(length, SEQUENCED) + payload)
        if self._count % self._index_every == 0:
            self._checkpoints.append(offset)
        self._end = offset + 2 + length
        self._count += 1
        self._appended()
        return self._count

    def append_many(self, payloads: Iterable[Payload]) -> int:
        """Store several messages with a single write, in order.

        Args:
            payloads: the messages, each at most 65,534 bytes.

        Returns:
            The last message's sequence number (:attr:`last_sequence`; unchanged when
            ``payloads`` is empty).

        Raises:
            ValueError: a payload is longer than 65,534 bytes; none of them is stored.
            StoreError: the store is closed or read-only, or the write failed; none is stored.
        """
        return self.append_batch(payloads)[0]

    def append_batch(self, payloads: Iterable[Payload]) -> tuple[int, bytes]:
        """As :meth:`append_many`, and also return the packets as stored (wire form), so a
        server can send exactly those bytes to its live clients without framing them twice.

        Returns:
            ``(last sequence number, packets)``; ``packets`` is ``b""`` when ``payloads`` is empty.

        Raises:
            ValueError: a payload is longer than 65,534 bytes; none of them is stored.
            StoreError: the store is closed or read-only, or the write failed; none is stored.
        """
        self._check_writable()
        every = self._index_every
        count = self._count
        position = self._end
        checkpoints: list[int] = []
        parts: list[bytes] = []
        append = parts.append
        headers = SEQUENCED_HEADERS  # cached framing headers (see framing.packet_header)
        for payload in payloads:
            if type(payload) is not bytes:
                payload = bytes(memoryview(payload))
            size = len(payload)
            header = headers[size] if size < HEADER_CACHE_SIZE else None
            if header is None:
                if size >= MAX_PACKET_SIZE:
                    raise ValueError(
                        f"payload {len(parts) // 2 + 1} of the batch has {size} bytes,"
                        f" more than the maximum of {MAX_PAYLOAD_SIZE}; nothing was stored"
                    )
                header = packet_header(SEQUENCED, size)
            if count % every == 0:
                checkpoints.append(position)
            append(header)
            append(payload)
            position += 3 + size
            count += 1
        if not parts:
            return self._count, b""
        packets = b"".join(parts)
        self._write(packets)
        self._checkpoints.extend(checkpoints)
        self._count = count
        self._end = position
        self._appended()
        return count, packets

    def get(self, sequence: int) -> bytes:
        """Return the payload of message ``sequence``.

        Raises:
            IndexError: ``sequence`` is not between 1 and :attr:`last_sequence`.
            StoreError: the store is closed, or reading the journal failed.
        """
        self._check_open()
        if not 1 <= sequence <= self._count:
            raise IndexError(f"message {sequence} is not in the store (1..{self._count})")
        group, skip = divmod(sequence - 1, self._index_every)
        first, group_end = self._checkpoints[group], self._group_end(group)
        buffer, base = self._window(first, group_end - first)
        position, skipped, size = scan_packets(buffer, first - base, group_end - base, skip)
        if skipped != skip or size < 3:
            raise self._index_mismatch(sequence)
        return bytes(buffer[position + 3 : position + size])

    def read_packets(self, start: int, max_bytes: int = 1 << 20) -> tuple[bytes, int]:
        """Return messages ``start, start + 1, ...`` as Sequenced Data packets in wire form.

        As many whole packets as fit in ``max_bytes`` (at least one when ``start`` is stored, even
        if it alone is larger), concatenated in one ``bytes`` ready to be written to a client.

        Args:
            start: the first message wanted, 1 or more.
            max_bytes: the most bytes to return (length fields included).

        Returns:
            ``(packets, count)``; ``(b'', 0)`` when ``start > last_sequence``.

        Raises:
            ValueError: ``start`` is below 1.
            StoreError: the store is closed, or reading the journal failed.
        """
        offset, length, count = self._locate(start, max_bytes)
        return (self._read(offset, length) if length else b""), count

    def flush(self) -> None:
        """Make every appended message durable as the store's policy defines (nothing to do here)."""
        self._check_open()

    def close(self) -> None:
        """Release the store; later calls other than :meth:`close` raise :class:`StoreError`."""
        self._closed = True

    def __enter__(self) -> PacketLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------- index arithmetic

    def _group_end(self, group: int) -> int:
        """Offset just past the last packet of checkpoint group ``group``."""
        if group + 1 < len(self._checkpoints):
            return self._checkpoints[group + 1]
        return self._end

    def _index_mismatch(self, sequence: int) -> StoreError:
        # The packets between two checkpoints are not those the index was built from: only a
        # file changed behind the store's back can do that.
        return StoreError(f"{self!r}: the bytes of message {sequence} are not where the index says")

    def _locate(self, start: int, max_bytes: int) -> tuple[int, int, int]:
        """Return ``(offset, length, count)`` of the packets ``read_packets(start, max_bytes)`` gives."""
        self._check_open()
        if start < 1:
            raise ValueError(f"start must be 1 or more, got {start}")
        if start > self._count:
            return self._end, 0, 0
        every = self._index_every
        checkpoints = self._checkpoints
        group, skip = divmod(start - 1, every)
        first = checkpoints[group]
        if skip:
            group_end = self._group_end(group)
            buffer, base = self._window(first, group_end - first)
            position, skipped, _ = scan_packets(buffer, first - base, group_end - base, skip)
            if skipped != skip:
                raise self._index_mismatch(start)
            first = position + base
        limit = first + max(max_bytes, 0)
        if self._end <= limit:
            return first, self._end - first, self._count - start + 1
        # Jump whole groups: the last checkpoint at or below the limit starts a packet that ends
        # the packets before it within the limit. Then walk the packets of that one group that end
        # by the limit; the walk reads at least the length field at its start, because the first
        # packet goes even if alone it exceeds the limit.
        last_group = bisect_right(checkpoints, limit) - 1
        if last_group > group:
            position, sequence = checkpoints[last_group], last_group * every + 1
        else:
            position, sequence = first, start
        stop = max(limit, position + 2)
        buffer, base = self._window(position, stop - position)
        relative, stepped, size = scan_packets(buffer, position - base, stop - base, _NO_COUNT_LIMIT)
        position, sequence = relative + base, sequence + stepped
        if sequence == start:  # the first packet alone exceeds max_bytes: it goes anyway
            if size < 3:
                raise self._index_mismatch(start)
            position, sequence = position + size, sequence + 1
        return first, position - first, sequence - start
