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
from ..framing import MAX_PACKET_SIZE, frame_sequenced, scan_packets
from .api import Payload, ReceivedTimes, StoreBase, check_session

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

    def append_batch(
        self, payloads: Iterable[Payload], received_ns: ReceivedTimes = None
    ) -> tuple[int, bytes]:
        """As :meth:`append_many`, and also return the packets as stored (wire form), so a
        server can send exactly those bytes to its live clients without framing them twice.

        ``received_ns``: receive times, kept by :class:`~.file.FileStore` (which extends this
        method); the memory store keeps none and ignores them.

        Returns:
            ``(last sequence number, packets)``; ``packets`` is ``b""`` when ``payloads`` is empty.

        Raises:
            ValueError: a payload is longer than 65,534 bytes; none of them is stored.
            StoreError: the store is closed or read-only, or the write failed; none is stored.
        """
        self._check_writable()
        batch = payloads if isinstance(payloads, list) else list(payloads)
        try:
            # Framed in one pass (the compiled framer: a few ns a message), then stored as
            # framed packets (stepped over at the compiled walker's speed): a Python loop over
            # the messages cost ~300 ns each, most of `soup record`'s time.
            packets = frame_sequenced(batch)  # type: ignore[arg-type]  # bytes-like payloads
        except ValueError:
            for index, payload in enumerate(batch, 1):
                if len(payload) > MAX_PAYLOAD_SIZE:
                    raise ValueError(
                        f"payload {index} of the batch has {len(payload)} bytes,"
                        f" more than the maximum of {MAX_PAYLOAD_SIZE}; nothing was stored"
                    ) from None
            raise
        if not packets:
            return self._count, b""
        # This class's, not a subclass's override: that one would keep receive times for them too.
        return PacketLog.append_packets(self, packets), packets

    # ---- framed appends (issue 25: feed imports frame their messages in one pass)

    def append_packets(self, packets: bytes) -> int:
        """Store Sequenced Data packets already framed (laid end to end as :meth:`read_packets`
        returns them) with a single write. Stepping over them runs at the compiled walker's
        speed, so a caller that frames messages itself (a BinaryFILE import) stores them at
        about 20 ns a message instead of :meth:`append_batch`'s 200.

        Returns:
            The last message's sequence number (unchanged when ``packets`` is empty).

        Raises:
            ValueError: ``packets`` is not whole, valid Sequenced Data packets; nothing is stored.
            StoreError: the store is closed or read-only, or the write failed; nothing is stored.
        """
        self._check_writable()
        every = self._index_every
        count = self._count
        base = self._end
        end = len(packets)
        checkpoints: list[int] = []
        until_checkpoint = -count % every
        position = 0
        while position < end:
            step = until_checkpoint or every
            following, stepped, _ = scan_packets(packets, position, end, step)
            if not stepped:
                break
            if not until_checkpoint:
                checkpoints.append(base + position)
                until_checkpoint = every
            until_checkpoint -= stepped
            count += stepped
            position = following
            if stepped < step:
                break
        if position != end:
            raise ValueError(
                f"packet {count - self._count + 1} of the {end} bytes given is not a whole Sequenced"
                " Data packet; nothing was stored"
            )
        if not end:
            return self._count
        self._write(packets)
        self._checkpoints.extend(checkpoints)
        self._count = count
        self._end = base + end
        self._appended()
        return count

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
