"""TCP reassembly, sans-IO: the bytes one side of a connection sent, in order, from captured segments.

What belongs here: putting one direction's segments back in sequence order, whatever the
capture shows (retransmissions, segments out of order, overlaps, a capture that starts after the
connection did, 32-bit sequence numbers that wrap), and saying where bytes are missing. Nothing
about what the bytes mean.

:class:`TcpReassembler` takes segments (:meth:`~TcpReassembler.add`) and gives :class:`Chunk`
runs of bytes in order and :class:`Gap` where bytes never came: a gap is declared when the bytes
held waiting for a missing segment exceed ``max_waiting`` (a real reordering is far smaller than
that), and at :meth:`~TcpReassembler.finish` for whatever is still missing. A gap's bytes are
never guessed: the stream just goes on after it, and its reader must resynchronise.
"""

from __future__ import annotations

import heapq
from typing import NamedTuple

from .capture import SYN

__all__ = ["DEFAULT_MAX_WAITING", "Chunk", "Gap", "StreamEvent", "TcpReassembler"]

#: Bytes held after a missing segment before it is declared lost (a gap).
DEFAULT_MAX_WAITING = 16 << 20

_MODULO = 1 << 32
_HALF = 1 << 31


class Chunk(NamedTuple):
    """Bytes of the stream, next in order."""

    #: Capture time of the segment that brought them (nanoseconds since the epoch).
    time_ns: int
    #: Its packet number in the capture.
    frame: int
    data: bytes


class Gap(NamedTuple):
    """Bytes of the stream that never came (not in the capture)."""

    #: How many bytes are missing.
    missing: int
    #: Capture time of the segment that came after them.
    time_ns: int
    #: Its packet number in the capture.
    frame: int


StreamEvent = Chunk | Gap


class TcpReassembler:
    """One direction of one TCP connection, put back in order.

    Args:
        max_waiting: bytes held after a missing segment before it is declared lost.

    Attributes:
        mid_stream: True when the capture did not see the SYN: the first byte seen may be in the
            middle of whatever the application sent.
        retransmitted: bytes seen more than once (dropped).
        reordered: segments that arrived before one they follow.
        missing: bytes declared lost (the sum of the gaps).
    """

    def __init__(self, max_waiting: int = DEFAULT_MAX_WAITING) -> None:
        self.max_waiting = max_waiting
        self.mid_stream = False
        self.retransmitted = 0
        self.reordered = 0
        self.missing = 0
        self.delivered = 0
        self._next: int | None = None  # unwrapped sequence number of the next byte due
        self._waiting: list[tuple[int, int, int, bytes]] = []  # heap of (seq, frame, time, data)
        self._waiting_bytes = 0

    def add(self, time_ns: int, frame: int, sequence: int, flags: int, payload: bytes) -> list[StreamEvent]:
        """Take one captured segment of this direction; return what it makes available, in order."""
        if flags & SYN:
            if self._next is None:
                self._next = sequence + 1
            sequence += 1
        if not payload:
            return []
        if self._next is None:
            self._next = sequence
            self.mid_stream = True
        start = self._unwrap(sequence)
        events: list[StreamEvent] = []
        if start > self._next:
            self.reordered += 1
            heapq.heappush(self._waiting, (start, frame, time_ns, payload))
            self._waiting_bytes += len(payload)
            if self._waiting_bytes > self.max_waiting:
                self._declare_gap(events)
            return events
        self._take(start, frame, time_ns, payload, events)
        self._drain(events)
        return events

    def finish(self) -> list[StreamEvent]:
        """The capture ended: what is still waiting, after gaps for what never came."""
        events: list[StreamEvent] = []
        while self._waiting:
            self._declare_gap(events)
        return events

    def _unwrap(self, sequence: int) -> int:
        """The 32-bit ``sequence`` as a number that keeps growing past 2**32."""
        assert self._next is not None
        delta = (sequence - self._next + _HALF) % _MODULO - _HALF
        return self._next + delta

    def _take(self, start: int, frame: int, time_ns: int, payload: bytes, events: list[StreamEvent]) -> None:
        assert self._next is not None
        end = start + len(payload)
        if end <= self._next:
            self.retransmitted += len(payload)
            return
        if start < self._next:  # overlaps what was delivered: keep only the new part
            self.retransmitted += self._next - start
            payload = payload[self._next - start :]
        events.append(Chunk(time_ns, frame, payload))
        self.delivered += len(payload)
        self._next = end

    def _drain(self, events: list[StreamEvent]) -> None:
        waiting = self._waiting
        while waiting and waiting[0][0] <= (self._next or 0):
            start, frame, time_ns, payload = heapq.heappop(waiting)
            self._waiting_bytes -= len(payload)
            self._take(start, frame, time_ns, payload, events)

    def _declare_gap(self, events: list[StreamEvent]) -> None:
        assert self._next is not None
        start, frame, time_ns, _ = self._waiting[0]
        missing = start - self._next
        self.missing += missing
        events.append(Gap(missing, time_ns, frame))
        self._next = start
        self._drain(events)
