"""When each message of a paced replay is due: the sans-IO core of :mod:`.pacing`.

What belongs here, with no clock and no asyncio: turning a pace (``recorded``, ``10x``,
``50000/s``) and the messages' times (receive times, or the ITCH 5.0 timestamps in the payloads)
into the offset, in nanoseconds from the replay's start, at which each message is due
(:class:`ReplaySchedule`); and :class:`Pacer`, which is told the time and says how far the
replay may go and when it must be woken next. Tests drive it with a manual clock.

Rules:

* message ``start`` (``--start-at``) is due at offset 0; the ones before it are there at once;
* ``recorded``: message ``n`` is due at ``t(n) - t(start)``, ``Nx`` at that divided by N, where
  ``t`` is the receive time (or the ITCH 5.0 timestamp); a message with no time is due with the
  one before it; times that go backwards never move the schedule back (it keeps the highest
  seen), so a replay never gets ahead of itself;
* ``RATE/s``: message ``n`` is due at ``(n - start) / RATE`` seconds;
* ITCH 5.0 timestamps are nanoseconds since midnight, 6 bytes big-endian at payload offset 5;
  one that falls back by more than 12 hours is taken as the next day (a feed that runs past
  midnight).
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Literal

__all__ = [
    "CHUNK",
    "ITCH_TIMESTAMP_OFFSET",
    "LatenessStats",
    "Pace",
    "Pacer",
    "ReplaySchedule",
    "itch50_times",
    "parse_pace",
]

#: Messages whose due offsets are computed at a time: small enough that computing a chunk inside a
#: wakeup (about 0.25 ms; 8192 took 2 ms, a hiccup every 80 ms at 100,000/s) delays no release.
CHUNK = 1024
#: Where an ITCH 5.0 message keeps its timestamp (6 bytes, big-endian, ns since midnight).
ITCH_TIMESTAMP_OFFSET = 5
_DAY_NS = 86_400 * 1_000_000_000
_HALF_DAY_NS = _DAY_NS // 2

_PACE = re.compile(r"^(?:(recorded)|(\d+(?:\.\d+)?)x|(\d+(?:\.\d+)?)/s)$")


@dataclass(frozen=True)
class Pace:
    """A replay's pace: the recorded one times ``speed``, or a fixed ``rate`` of messages a second."""

    kind: Literal["recorded", "rate"]
    speed: float = 1.0
    rate: float = 0.0

    def __str__(self) -> str:
        if self.kind == "rate":
            return f"{self.rate:g}/s"
        return "recorded" if self.speed == 1.0 else f"{self.speed:g}x"


def parse_pace(text: str) -> Pace:
    """``recorded``, ``Nx`` (N times the recorded pace) or ``RATE/s`` (messages a second).

    Raises:
        ValueError: none of these, or a speed or rate that is not above 0.
    """
    found = _PACE.match(text.strip().lower())
    if found is None:
        raise ValueError(f"pace {text!r} is not recorded, Nx (e.g. 10x) or RATE/s (e.g. 50000/s)")
    if found.group(1):
        return Pace("recorded")
    if found.group(2):
        speed = float(found.group(2))
        if speed <= 0:
            raise ValueError(f"pace {text!r}: the speed must be above 0")
        return Pace("recorded", speed=speed)
    rate = float(found.group(3))
    if rate <= 0:
        raise ValueError(f"pace {text!r}: the rate must be above 0")
    return Pace("rate", rate=rate)


#: ``times(start, count)``: the times (ns) of messages ``start ..``; 0 where not known.
TimesSource = Callable[[int, int], Sequence[int]]


def itch50_times(payloads: Sequence[bytes]) -> array[int]:
    """The ITCH 5.0 timestamps (ns since midnight) of payloads; 0 for one too short to hold one."""
    start, stop = ITCH_TIMESTAMP_OFFSET, ITCH_TIMESTAMP_OFFSET + 6
    return array(
        "q",
        [int.from_bytes(payload[start:stop], "big") if len(payload) >= stop else 0 for payload in payloads],
    )


class ReplaySchedule:
    """The due offsets (ns from the replay's start) of messages ``start .. last``.

    Args:
        pace: the pace.
        start: the message due at offset 0 (the ones before are there at once).
        last: the last message to replay.
        times: where the messages' times come from (needed by a ``recorded`` pace).
        wraps_daily: times are since midnight (ITCH 5.0): one that falls back by more than 12
            hours is the next day's.

    Raises:
        ValueError: a recorded pace without times, or none of the messages from ``start`` has one.
    """

    def __init__(
        self,
        pace: Pace,
        start: int,
        last: int,
        times: TimesSource | None = None,
        *,
        wraps_daily: bool = False,
    ) -> None:
        self.pace = pace
        self.start = start
        self.last = last
        self._times = times
        self._wraps_daily = wraps_daily
        self._origin = 0  # the time of message `start`
        self._highest = 0  # the highest (unwrapped) time so far, for the running maximum
        self._days = 0
        self._previous_raw = 0
        self._next = start  # the first message whose offset is not computed yet
        if pace.kind == "recorded":
            if times is None:
                raise ValueError("a recorded pace needs the messages' times")
            self._origin = self._find_origin()

    def _find_origin(self) -> int:
        assert self._times is not None
        sequence = self.start
        while sequence <= self.last:
            found = self._times(sequence, min(CHUNK, self.last - sequence + 1))
            for time_ns in found:
                if time_ns:
                    self._highest = self._previous_raw = time_ns
                    return time_ns
            if not found:
                break
            sequence += len(found)
        raise ValueError(
            f"messages {self.start}..{self.last} have no times to take the pace from: the journal"
            " keeps no receive times (use --clock itch50 for ITCH, or a RATE/s pace)"
        )

    def next_chunk(self) -> tuple[int, array[int]]:
        """``(first, offsets)`` of the next messages, non-decreasing; empty at the end."""
        first = self._next
        count = min(CHUNK, self.last - first + 1)
        if count <= 0:
            return first, array("q")
        if self.pace.kind == "rate":
            step = 1_000_000_000 / self.pace.rate
            offsets = array("q", (round((first - self.start + index) * step) for index in range(count)))
        else:
            offsets = self._recorded(first, count)
        self._next = first + len(offsets)
        return first, offsets

    def _recorded(self, first: int, count: int) -> array[int]:
        assert self._times is not None
        raw = self._times(first, count)
        if not raw:
            return array("q")
        if self._wraps_daily:
            raw = self._unwrap_days(raw)
        # Unknown (0) and backwards times take the highest so far: accumulate(max) in C.
        highest = list(accumulate(raw, max, initial=self._highest))[1:]
        self._highest = highest[-1]
        origin, speed = self._origin, self.pace.speed
        if speed == 1.0:
            return array("q", [time_ns - origin for time_ns in highest])
        return array("q", [round((time_ns - origin) / speed) for time_ns in highest])

    def _unwrap_days(self, raw: Sequence[int]) -> list[int]:
        unwrapped = []
        previous, days = self._previous_raw, self._days
        for time_ns in raw:
            if not time_ns:
                unwrapped.append(0)
                continue
            if previous and time_ns < previous - _HALF_DAY_NS:
                days += 1
            previous = time_ns
            unwrapped.append(time_ns + days * _DAY_NS)
        self._previous_raw, self._days = previous, days
        return unwrapped


class LatenessStats:
    """How late messages were released: a histogram in 50-microsecond buckets (up to 10 s)."""

    BUCKET_NS = 50_000
    BUCKETS = 200_000

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self.messages = 0
        self.max_ns = 0

    def add(self, lateness_ns: int, count: int) -> None:
        """``count`` messages released ``lateness_ns`` after they were due."""
        bucket = min(max(lateness_ns, 0) // self.BUCKET_NS, self.BUCKETS)
        self._counts[bucket] = self._counts.get(bucket, 0) + count
        self.messages += count
        self.max_ns = max(self.max_ns, lateness_ns)

    def percentile_ns(self, fraction: float) -> int:
        """The lateness under which ``fraction`` of the messages were (the bucket's upper edge)."""
        if not self.messages:
            return 0
        wanted = fraction * self.messages
        seen = 0
        for bucket in sorted(self._counts):
            seen += self._counts[bucket]
            if seen >= wanted:
                return (bucket + 1) * self.BUCKET_NS
        return self.max_ns


class Pacer:
    """Says, for a time since the replay started, which messages are due (sans-IO).

    :attr:`released` is the last message released (due, or before ``start``). The shell calls
    :meth:`advance` with the time (ns since the replay's start) when woken, releases what it
    says, then sleeps until :meth:`next_due`.

    Args:
        schedule: the offsets of messages ``schedule.start .. schedule.last``.
    """

    def __init__(self, schedule: ReplaySchedule) -> None:
        self.schedule = schedule
        self.released = schedule.start - 1
        self.lateness = LatenessStats()
        self._first, self._offsets = schedule.next_chunk()

    @property
    def done(self) -> bool:
        """True once every message is released."""
        return self.released >= self.schedule.last

    def next_due(self) -> int | None:
        """The offset (ns) at which the next message is due; ``None`` when done."""
        if self.done or not self._offsets:
            return None
        return self._offsets[self.released + 1 - self._first]

    def due_of(self, sequence: int) -> int | None:
        """The offset of ``sequence`` if it is in the chunk at hand (for reports)."""
        index = sequence - self._first
        return self._offsets[index] if 0 <= index < len(self._offsets) else None

    def advance(self, now_ns: int) -> int:
        """Release every message due by ``now_ns``; return the new :attr:`released`.

        The lateness of each run released is recorded (``now_ns`` minus the earliest due offset).
        """
        while not self.done and self._offsets:
            index = self.released + 1 - self._first
            earliest = self._offsets[index]
            if earliest > now_ns:
                break
            stop = bisect_right(self._offsets, now_ns, index)
            self.lateness.add(now_ns - earliest, stop - index)
            self.released = self._first + stop - 1
            if stop < len(self._offsets):
                break
            self._first, self._offsets = self.schedule.next_chunk()
        return self.released
