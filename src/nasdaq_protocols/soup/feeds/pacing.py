"""Paced replay: serve a stored stream as it happened, N times faster, or at a fixed rate.

What belongs here: :class:`PacedStore`, the asyncio shell around :class:`~.schedule.Pacer`. It
wraps a store and shows a server only the messages already "published" by the replay's clock:
its :attr:`~PacedStore.last_sequence` advances on schedule, and each run of messages that becomes
due is handed to the server through the append listener a server installs on every store
(:meth:`~PacedStore.set_append_listener`), exactly as a replicated store announces messages
appended elsewhere. So the server's machinery is unchanged: a client that logs in mid-replay is
pumped what was already published at full speed, then follows the live fan-out, at the pace; a
client asking from sequence 1 is never slowed below it. The bytes sent are the stored packets.

Use::

    store = PacedStore(FileStore("itch.journal", readonly=True), "10x")
    server = SoupServer(store=store)   # the replay clock starts when the server takes the store

The clock starts when the store is first used inside a running event loop (the server reads it
while it is being built) or, with ``autostart=False``, at :meth:`~PacedStore.start`. The wakeups
follow the loop's timer: asyncio's waits have millisecond granularity, so a run released at each
wakeup holds what fell due since the last one; :attr:`~PacedStore.lateness` measures how late.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Literal, Protocol, runtime_checkable

from ..errors import StoreError
from ..framing import scan_packets
from ..store import AppendListener, EndListener, MessageStore, Payload, ReceivedTimes, StoreBase, served_store
from .exporting import payloads_of
from .schedule import LatenessStats, Pace, Pacer, ReplaySchedule, TimesSource, itch50_times, parse_pace

__all__ = ["Clock", "PacedStore", "TimedStore"]

log = logging.getLogger(__name__)

#: Where a recorded pace takes the messages' times from.
Clock = Literal["received", "itch50"]

#: Bytes read from the wrapped store per listener call when a run is released.
_RELEASE_CHUNK = 1 << 20
#: Seconds between two wakeups at least: what falls due meanwhile goes out in one run.
_MIN_WAKEUP = 0.001
#: Bytes of payloads read at a time to take ITCH timestamps from.
_ITCH_READ = 1 << 20


@runtime_checkable
class TimedStore(Protocol):
    """A store that keeps its messages' receive times (:class:`~..store.FileStore`)."""

    def received_times(self, start: int, count: int) -> Iterable[int]:
        """The receive times of messages ``start ..`` (ns since the epoch; 0 where not known)."""
        ...


class PacedStore(StoreBase):
    """A read-only view of a store that publishes its messages on a replay schedule.

    Args:
        store: the stored stream (a :class:`~..store.FileStore`, typically opened read-only). The
            paced store closes it.
        pace: ``"recorded"``, ``"Nx"`` (``"10x"``), ``"RATE/s"`` (``"50000/s"``), or a
            :class:`~.schedule.Pace`.
        clock: where a recorded pace takes the times from: ``"received"`` (the receive times the
            store keeps) or ``"itch50"`` (the ITCH 5.0 timestamps in the payloads).
        start_at: the message the clock starts at (due at once); those before are there at once.
        end_session: tell the server the session ended once the last message is published, so
            that clients get End of Session after it.
        autostart: start the clock at first use inside a running event loop; ``False``: only
            at :meth:`start` (e.g. once the clients that must see it all have logged in).

    Raises:
        ValueError: a pace that cannot be parsed, ``start_at`` outside the stream, or a
            recorded pace with no times to take it from.
    """

    def __init__(
        self,
        store: MessageStore,
        pace: str | Pace,
        *,
        clock: Clock = "received",
        start_at: int = 1,
        end_session: bool = False,
        autostart: bool = True,
    ) -> None:
        self.wrapped = served_store(store)
        self._autostart = autostart
        self.pace = parse_pace(pace) if isinstance(pace, str) else pace
        self.clock: Clock = clock
        last = self.wrapped.last_sequence
        if not 1 <= start_at <= max(last, 1):
            raise ValueError(f"--start-at {start_at}: the stream holds messages 1..{last}")
        self.start_at = start_at
        times = None
        if self.pace.kind == "recorded":
            times = self._itch_times if clock == "itch50" else self._receive_times(store)
        schedule = ReplaySchedule(self.pace, start_at, last, times, wraps_daily=clock == "itch50")
        self._pacer = Pacer(schedule)
        self._end_session = end_session
        self._listener: AppendListener | None = None
        self._end_listener: EndListener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._origin = 0.0  # loop time of the replay's start
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<PacedStore {self.wrapped!r} pace={self.pace} released={self.released}/{self.total}>"

    @staticmethod
    def _receive_times(store: MessageStore) -> TimesSource:
        if not isinstance(store, TimedStore):
            raise ValueError(f"{store!r} keeps no receive times: use an ITCH clock or a RATE/s pace")
        return store.received_times  # type: ignore[return-value]

    def _itch_times(self, start: int, count: int) -> list[int]:
        times: list[int] = []
        sequence = start
        while len(times) < count:
            packets, got = self.wrapped.read_packets(sequence, _ITCH_READ)
            if not got:
                break
            payloads = payloads_of(packets)[: count - len(times)]
            times.extend(itch50_times(payloads))
            sequence += len(payloads)
        return times

    # ----------------------------------------------------------------- the clock

    @property
    def started(self) -> bool:
        """True once the replay's clock runs."""
        return self._loop is not None

    @property
    def released(self) -> int:
        """The last message published so far."""
        return self._pacer.released

    @property
    def total(self) -> int:
        """The last message the replay will publish."""
        return self._pacer.schedule.last

    @property
    def done(self) -> bool:
        """True once every message is published."""
        return self._pacer.done

    @property
    def lateness(self) -> LatenessStats:
        """How late the messages were published (a histogram)."""
        return self._pacer.lateness

    def lag_ns(self) -> int:
        """How far the replay is behind its schedule now (0 when on time or done)."""
        if self._loop is None:
            return 0
        due = self._pacer.next_due()
        if due is None:
            return 0
        return max(0, self._now_ns() - due)

    @property
    def origin(self) -> float:
        """The event loop's time (``loop.time()``) when the replay's clock started (0 before):
        message ``n`` is due at ``origin`` plus its schedule offset."""
        return self._origin

    def elapsed(self) -> float:
        """Seconds since the clock started (0 before)."""
        return 0.0 if self._loop is None else self._loop.time() - self._origin

    def start(self) -> None:
        """Start the replay's clock now (done by itself at first use in a running loop).

        Raises:
            RuntimeError: no event loop is running.
        """
        if self._loop is not None or self._closed:
            return
        self._loop = asyncio.get_running_loop()
        self._origin = self._loop.time()
        log.info(
            "replay of %d messages from %d at %s started",
            self.total - self.start_at + 1,
            self.start_at,
            self.pace,
        )
        self._tick()

    def _start_if_running(self) -> None:
        if self._loop is None and not self._closed and self._autostart:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return
            self.start()

    def _now_ns(self) -> int:
        assert self._loop is not None
        return int((self._loop.time() - self._origin) * 1_000_000_000)

    def _tick(self) -> None:
        self._timer = None
        if self._closed or self._loop is None:
            return
        before = self._pacer.released
        released = self._pacer.advance(self._now_ns())
        if released > before:
            self._publish(before + 1, released)
        due = self._pacer.next_due()
        if due is None:
            if self._pacer.done:
                self._finished()
            return
        # At most one wakeup a millisecond (epoll's resolution): at 100,000 messages a second a
        # wakeup per message due would keep the loop spinning (measured: a wakeup every 48 us,
        # 5 messages and a socket write each, and p99 lateness of 8 ms from the CPU it took).
        wake = max(self._origin + due / 1_000_000_000, self._loop.time() + _MIN_WAKEUP)
        self._timer = self._loop.call_at(wake, self._tick)

    def _publish(self, first: int, last: int) -> None:
        listener = self._listener
        if listener is None:
            return
        sequence = first
        while sequence <= last:
            packets, count = self.wrapped.read_packets(sequence, _RELEASE_CHUNK)
            if not count:
                break
            if sequence + count - 1 > last:
                count = last - sequence + 1
                packets = packets[: scan_packets(packets, 0, len(packets), count)[0]]
            try:
                listener(packets, count, sequence)
            except Exception:
                log.exception("the append listener failed")
            sequence += count

    def _finished(self) -> None:
        log.info("replay done: %d messages published in %.3f s", self.total, self.elapsed())
        if self._end_session and self._end_listener is not None:
            self._end_listener()

    # ----------------------------------------------------------------- MessageStore (read-only)

    @property
    def last_sequence(self) -> int:
        """The last message published by the replay so far."""
        self._start_if_running()
        return self._pacer.released

    @property
    def session(self) -> str:
        """The wrapped store's session name."""
        return self.wrapped.session

    @property
    def readonly(self) -> bool:
        """Always True: a replay is not appended to."""
        return True

    def append(self, payload: Payload) -> int:
        """Refused: a replay is read-only.

        Raises:
            StoreError: always.
        """
        raise StoreError("a paced replay is read-only: nothing can be published on it")

    def append_many(self, payloads: Iterable[Payload]) -> int:
        """Refused: a replay is read-only.

        Raises:
            StoreError: always.
        """
        raise StoreError("a paced replay is read-only: nothing can be published on it")

    def append_batch(
        self, payloads: Iterable[Payload], received_ns: ReceivedTimes = None
    ) -> tuple[int, bytes]:
        """Refused: a replay is read-only.

        Raises:
            StoreError: always.
        """
        raise StoreError("a paced replay is read-only: nothing can be published on it")

    def read_packets(self, start: int, max_bytes: int = 1 << 20) -> tuple[bytes, int]:
        """Messages ``start ..`` in wire form, up to the last one published."""
        self._start_if_running()
        released = self._pacer.released
        if start > released:
            if start < 1:
                raise ValueError(f"start must be 1 or more, got {start}")
            return b"", 0
        packets, count = self.wrapped.read_packets(start, max_bytes)
        if start + count - 1 > released:
            count = released - start + 1
            packets = packets[: scan_packets(packets, 0, len(packets), count)[0]]
        return packets, count

    def get(self, sequence: int) -> bytes:
        """The payload of a published message.

        Raises:
            IndexError: it is not published yet (or not stored).
        """
        if not 1 <= sequence <= self._pacer.released:
            raise IndexError(f"message {sequence} is not published yet (1..{self._pacer.released})")
        return self.wrapped.get(sequence)

    def flush(self) -> None:
        """The wrapped store's ``flush``."""
        self.wrapped.flush()

    def close(self) -> None:
        """Stop the clock and close the wrapped store."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.wrapped.close()

    async def aclose(self) -> None:
        """Stop the clock and close the wrapped store."""
        self.close()

    # ----------------------------------------------------------------- the server's listeners

    def set_append_listener(self, listener: AppendListener | None) -> None:
        """The server's: it is told each run of messages the replay publishes."""
        self._listener = listener
        self._start_if_running()

    def set_end_listener(self, listener: EndListener | None) -> None:
        """The server's: with ``end_session``, called once the last message is published."""
        self._end_listener = listener
        if listener is not None and self._end_session and self._pacer.done and self._loop is not None:
            listener()
