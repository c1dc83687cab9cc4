"""A packet log that keeps, beside its journal, when each message was received (issue 25).

:class:`TimedPacketLog` is the layer of :class:`~.file.FileStore` that keeps receive times in the
sidecar file of :mod:`.timestamps`: the journal is written first, exactly as without them, then
the times. With no ``received_ns`` given and no sidecar, every append is the plain
:class:`~.packet_log.PacketLog` path, so old journals, their bytes and replay are unchanged.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Iterable

from ..errors import StoreError
from .api import Payload, ReceivedTimes
from .packet_log import PacketLog
from .timestamps import ReceiveTimes, pack_entries, times_path

__all__ = ["TimedPacketLog"]

logger = logging.getLogger(__name__)


class TimedPacketLog(PacketLog):
    """A :class:`~.packet_log.PacketLog` whose messages may carry their receive times.

    The subclass (``FileStore``) sets ``path``, ``_readonly`` and ``_times`` (the open sidecar, or
    ``None``), and calls :meth:`_open_receive_times` once its journal is open.
    """

    path: str
    _readonly: bool
    _times: ReceiveTimes | None

    @property
    def times_path(self) -> str:
        """Path of the receive-times file kept next to the journal (see :mod:`.timestamps`)."""
        return times_path(self.path)

    @property
    def keeps_receive_times(self) -> bool:
        """True when the journal has a receive-times file (some message was stored with a time)."""
        return self._times is not None

    def append(self, payload: Payload, received_ns: int | None = None) -> int:
        """Store one message as the next Sequenced Data packet; return its sequence number.

        Args:
            payload: the message, at most 65,534 bytes.
            received_ns: when it arrived, in nanoseconds since the epoch (``None``: not known).
                Kept in the receive-times file, created by the first append that gives a time.

        Returns:
            The message's sequence number.

        Raises:
            ValueError: the payload is longer than 65,534 bytes, or ``received_ns`` is not a
                64-bit integer; nothing is stored.
            StoreError: the store is closed or read-only, or the write failed; nothing is stored.
        """
        if received_ns is None and self._times is None:
            return super().append(payload)
        entries = pack_entries(1, received_ns)
        sequence = super().append(payload)
        self._stamp(sequence, entries)
        return sequence

    def append_many(self, payloads: Iterable[Payload], received_ns: ReceivedTimes = None) -> int:
        """Store several messages with a single write, in order (see :meth:`append_batch`).

        Returns:
            The last message's sequence number.
        """
        return self.append_batch(payloads, received_ns)[0]

    def append_batch(
        self, payloads: Iterable[Payload], received_ns: ReceivedTimes = None
    ) -> tuple[int, bytes]:
        """Store several messages with one write; return ``(last sequence number, packets)``.

        Args:
            payloads: the messages, each at most 65,534 bytes.
            received_ns: when they arrived, in nanoseconds since the epoch: one time for all,
                one per message, or ``None`` (not known).

        Raises:
            ValueError: a payload is too long, or ``received_ns`` has another length than
                ``payloads`` or a value that is not a 64-bit integer; nothing is stored.
            StoreError: the store is closed or read-only, or the write failed; nothing is stored.
        """
        if received_ns is None and self._times is None:
            return super().append_batch(payloads)
        batch = payloads if isinstance(payloads, list) else list(payloads)
        entries = pack_entries(len(batch), received_ns)  # checked before anything is stored
        first = self._count + 1
        last, packets = super().append_batch(batch)
        if last >= first:
            self._stamp(first, entries)
        return last, packets

    def append_packets(self, packets: bytes, received_ns: int | None = None) -> int:
        """Store framed Sequenced Data packets with one write (see :meth:`PacketLog.append_packets`),
        all received at ``received_ns`` (``None``: not known).

        Raises:
            ValueError: not whole Sequenced Data packets, or a time that is not a 64-bit
                integer; nothing is stored.
            StoreError: the store is closed or read-only, or the write failed; nothing is stored.
        """
        if received_ns is None and self._times is None:
            return super().append_packets(packets)
        pack_entries(1, received_ns)  # checked before anything is stored
        first = self._count + 1
        last = super().append_packets(packets)
        if last >= first:
            self._stamp(first, pack_entries(last - first + 1, received_ns))
        return last

    def received_ns(self, sequence: int) -> int | None:
        """When message ``sequence`` arrived (nanoseconds since the epoch), or ``None`` if not known.

        Raises:
            IndexError: ``sequence`` is not between 1 and :attr:`last_sequence`.
            StoreError: the store is closed, or reading failed.
        """
        self._check_open()
        if not 1 <= sequence <= self._count:
            raise IndexError(f"message {sequence} is not in the store (1..{self._count})")
        time_ns = self.received_times(sequence, 1)[0]
        return time_ns or None

    def received_times(self, start: int, count: int) -> array[int]:
        """The receive times of messages ``start .. start + count - 1`` (those stored), in
        nanoseconds since the epoch; 0 where not known.

        Raises:
            ValueError: ``start`` is below 1.
            StoreError: the store is closed, or reading failed.
        """
        self._check_open()
        if start < 1:
            raise ValueError(f"start must be 1 or more, got {start}")
        count = max(0, min(count, self._count - start + 1))
        if self._times is None:
            return array("q", bytes(8 * count))
        return self._times.read(start, count)

    def _stamp(self, first: int, entries: bytes) -> None:
        """Write the times of the messages just appended from ``first`` (never raises)."""
        if self._times is None:
            if not entries.strip(b"\x00"):
                return  # nothing known: no need of a sidecar yet
            try:
                self._times = ReceiveTimes.create(self.path, first, *self._record_of(first))
            except StoreError as exc:
                logger.error("journal %s: %s; its messages get no receive time", self.path, exc)
                return
        self._times.append(first, entries)

    def _record_of(self, sequence: int) -> tuple[int, bytes]:
        """``(offset, record bytes)`` of a stored message (the sidecar's anchor)."""
        offset, length, _ = self._locate(sequence, 0)
        return offset, self._read(offset, length)

    def _open_receive_times(self) -> None:
        self._times = ReceiveTimes.open(self.path, self._count, self._record_of, readonly=self._readonly)
