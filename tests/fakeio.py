"""A manual clock and an in-memory network for the asyncio sessions: whole conversations with no
sockets and no real sleeping (imported as ``fakeio``; pytest puts ``tests/`` on ``sys.path``).

The design, in four parts:

* :class:`ManualClockLoop` is an ``asyncio.SelectorEventLoop`` whose ``time()`` is a number that
  moves only as the test lets it (it starts at 1000.0). Its selector never waits: whenever the
  loop would block (nothing ready, nothing delivered, the next timer in the future) the clock
  *jumps* to the next timer (or the next byte due to arrive), which then fires. So
  ``await session.wait_closed()`` returns at the exact virtual moment the session closed, after
  microseconds of real time, and a timer of an hour costs nothing. When nothing at all is
  scheduled and nothing can arrive, the loop raises :class:`Deadlock` instead of hanging.
* :meth:`ManualClockLoop.advance` runs everything due up to ``now + seconds`` (timers in order,
  with what each one triggers) and returns with the clock exactly there and the loop idle: a
  test checks "no heartbeat for 14.9 s, then one at 15 s" with two calls.
  :meth:`ManualClockLoop.stall` moves the clock without running anything, as a callback that
  blocks the loop does: timers then fire late.
* :class:`FakeTransport` pairs (:meth:`ManualClockLoop.connect`) model a TCP connection closely
  enough for the session layer's close rules: bytes one end writes become readable by the other
  at the loop's next poll (after ``latency`` seconds, 0 by default), and are handed to its
  protocol before the timers due in that loop turn run, as a socket's are; a paused reader
  leaves them in the "kernel", where they count in the writer's ``get_write_buffer_size()``
  (with ``pause_writing``/``resume_writing`` at the high/low marks); ``write_eof`` is a FIN after
  the pending bytes, ``close`` a FIN once they were read (never, if the peer does not read),
  ``abort`` a reset; bytes written to an end that closed its socket make the writer's connection
  *reset*, discarding what it had not read yet, as Linux does. Every write is recorded with the
  time it was made (:attr:`FakeTransport.writes`).
* ``loop.create_server`` and ``loop.create_connection`` work on that network, so the unmodified
  ``connect_async``, ``SoupServer`` and ``subscribe`` run on it; :class:`RawEnd` is a hand-driven
  peer (exact bytes out, packets in, with arrival times).

Tests run on it with :func:`run` or the :func:`manual_clock` decorator (a fresh loop per test; an
exception the loop reports fails the test). It needs private members of asyncio's base loop
(``_ready``, ``_scheduled``, ``_run_once``), present from Python 3.8 to 3.13. Threads and real
sockets are not its purpose: while a thread works, the clock may jump.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import inspect
import itertools
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from nasdaq_protocols.soup.core import SoupMessage
from nasdaq_protocols.soup.framing import SoupDecoder

__all__ = [
    "START",
    "Deadlock",
    "FakeServer",
    "FakeTransport",
    "ManualClockLoop",
    "RawEnd",
    "manual_clock",
    "run",
]

#: The clock of a new loop (not 0: a bug that treats 0 as "unset" must not hide).
START = 1000.0
#: asyncio's socket transports read at most this much per poll.
READ_SIZE = 256 * 1024
#: Real seconds an idle loop with no timer waits for another thread before it calls it a deadlock.
REAL_IDLE_LIMIT = 5.0

T = TypeVar("T")


class Deadlock(RuntimeError):
    """The loop has nothing ready, no timer and nothing to deliver: what is awaited never comes."""


class _JumpingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Polls without waiting, delivers the in-memory network's bytes, and jumps the clock."""

    loop: ManualClockLoop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        loop = self.loop
        events: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if loop._deliver() or events or timeout == 0:
            return events
        wake = loop._next_wake()
        if wake is not None:
            loop._now = max(loop._now, wake)
            loop._deliver()
            return events
        events = super().select(REAL_IDLE_LIMIT)  # only another thread can wake the loop now
        if not events:
            raise Deadlock(
                "the loop is idle with no timer and nothing in flight: what the test awaits never comes"
            )
        return events


class ManualClockLoop(asyncio.SelectorEventLoop):
    """An event loop on a manual clock with an in-memory network (see the module docstring).

    Attributes:
        transports: every :class:`FakeTransport` made on this loop, in order.
        turn_hooks: functions called after every loop turn (e.g. invariants checked "at every
            step" of a conversation).
    """

    def __init__(self, start: float = START) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self._now = start
        self.transports: list[FakeTransport] = []
        self.turn_hooks: list[Callable[[], None]] = []
        self._listeners: dict[int, FakeServer] = {}
        self._ports = itertools.count(40000)

    # ------------------------------------------------------------------ the clock

    def time(self) -> float:
        return self._now

    def stall(self, seconds: float) -> None:
        """Move the clock by ``seconds`` without running anything, as a callback that blocks the
        loop that long does (call it from a callback: what was due meanwhile then runs late)."""
        if seconds < 0:
            raise ValueError("the clock does not go back")
        self._now += seconds

    async def advance(self, seconds: float) -> None:
        """Run everything due in the next ``seconds`` (timers in order, each with what it triggers,
        and bytes in flight), then return with the clock exactly ``seconds`` later and the loop idle."""
        if seconds < 0:
            raise ValueError("the clock does not go back")
        await self.advance_to(self._now + seconds)

    async def advance_to(self, when: float) -> None:
        """:meth:`advance` to the absolute time ``when`` (on this loop's clock)."""
        waiter: asyncio.Future[None] = self.create_future()
        self.call_at(when, _resolve, waiter)
        await waiter
        await self.settle()

    async def settle(self, max_turns: int = 100_000) -> None:
        """Run the loop, without moving the clock, until nothing is ready or due now.

        Raises:
            AssertionError: still busy after ``max_turns`` turns (something loops for ever).
        """
        quiet = 0
        for _ in range(max_turns):
            await asyncio.sleep(0)
            if self._ready or self._timer_due() or self._deliverable():
                quiet = 0
            else:
                quiet += 1
                if quiet == 2:
                    return
        due = [handle for handle in self._scheduled if not handle.cancelled() and handle.when() <= self._now]
        raise AssertionError(
            f"the loop was still busy after {max_turns} turns at t={self._now!r}, the clock standing"
            f" still (a timer that keeps rescheduling itself at a deadline its handler does not"
            f" accept?); due: {due[:3]}"
        )

    def _timer_due(self) -> bool:
        end = self._now + self._clock_resolution
        return any(not handle.cancelled() and handle.when() < end for handle in self._scheduled)

    def _next_wake(self) -> float | None:
        timers = [handle.when() for handle in self._scheduled if not handle.cancelled()]
        arrivals = [when for transport in self.transports if (when := transport._next_arrival()) is not None]
        candidates = timers + arrivals
        return min(candidates) if candidates else None

    def _run_once(self) -> None:
        # asyncio runs a timer up to its clock resolution early; a real clock then moves on, this
        # one would not (a timer that reschedules itself at the same deadline would spin): the
        # clock reaches the timer's time as it fires.
        due = [h.when() for h in self._scheduled if not h.cancelled() and h.when() > self._now]
        if due and min(due) < self._now + self._clock_resolution:
            self._now = min(due)
        super()._run_once()  # type: ignore[misc]
        for hook in self.turn_hooks:
            hook()

    # ------------------------------------------------------------------ the network

    def _deliver(self) -> bool:
        delivered = False
        for transport in self.transports:
            delivered = transport._poll(self._now) or delivered
        return delivered

    def _deliverable(self) -> bool:
        return any(transport._deliverable(self._now) for transport in self.transports)

    def connect(
        self,
        client: asyncio.Protocol,
        server: asyncio.Protocol,
        *,
        latency: float = 0.0,
        client_address: tuple[str, int] | None = None,
        server_address: tuple[str, int] = ("127.0.0.1", 7000),
    ) -> tuple[FakeTransport, FakeTransport]:
        """Connect two protocols back to back (h11's ``ConnectionPair`` for asyncio): what one end
        writes the other reads. ``connection_made`` is called now, the server's first.

        Returns:
            The client's transport and the server's.
        """
        client_address = client_address or ("127.0.0.1", next(self._ports) + 10000)
        client_end = FakeTransport(self, client, local=client_address, remote=server_address, latency=latency)
        server_end = FakeTransport(self, server, local=server_address, remote=client_address, latency=latency)
        client_end.peer, server_end.peer = server_end, client_end
        server.connection_made(server_end)
        client.connection_made(client_end)
        return client_end, server_end

    def transport_of(self, protocol: asyncio.BaseProtocol) -> FakeTransport:
        """The transport a protocol (a session) was connected with."""
        for transport in self.transports:
            if transport.protocol is protocol:
                return transport
        raise LookupError(f"{protocol!r} has no transport on this loop")

    async def create_server(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: Any = None,
        port: Any = None,
        **options: Any,
    ) -> FakeServer:
        """Listen on the in-memory network (``port`` 0 or ``None``: the next free one)."""
        if options.get("ssl") is not None:
            raise NotImplementedError("the in-memory network has no TLS")
        number = int(port) if port else next(self._ports)
        address = (host if isinstance(host, str) else "127.0.0.1", number)
        server = FakeServer(self, protocol_factory, address)
        self._listeners[number] = server
        return server

    async def create_connection(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: Any = None,
        port: Any = None,
        **options: Any,
    ) -> tuple[FakeTransport, asyncio.BaseProtocol]:
        """Connect to a :class:`FakeServer` of this loop (refused when none listens on ``port``)."""
        if options.get("ssl") is not None:
            raise NotImplementedError("the in-memory network has no TLS")
        server = self._listeners.get(int(port))
        if server is None or not server.is_serving():
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"Connect call failed ({host!r}, {port})")
        client = protocol_factory()
        accepted = server.protocol_factory()
        transport, _ = self.connect(client, accepted, server_address=server.address)  # type: ignore[arg-type]
        await asyncio.sleep(0)  # as a real connect: the caller resumes in a later turn
        return transport, client


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _SocketName:
    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address

    def getsockname(self) -> tuple[str, int]:
        return self.address


class FakeServer:
    """A listener on the in-memory network: what ``loop.create_server`` returns there."""

    def __init__(
        self,
        loop: ManualClockLoop,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        address: tuple[str, int],
    ) -> None:
        self.loop = loop
        self.protocol_factory = protocol_factory
        self.address = address
        self.sockets = [_SocketName(address)]
        self._serving = True

    def is_serving(self) -> bool:
        return self._serving

    def close(self) -> None:
        self._serving = False
        self.sockets = []
        self.loop._listeners.pop(self.address[1], None)

    async def wait_closed(self) -> None:
        return None

    def get_loop(self) -> ManualClockLoop:
        return self.loop

    async def __aenter__(self) -> FakeServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class FakeTransport(asyncio.Transport):
    """One end of an in-memory TCP connection (see the module docstring for the model).

    Attributes:
        writes: ``(time, bytes)`` of every write, in order.
        writes_after_close: writes attempted once closed or lost (dropped; a session makes none).
        eof_written_at, closed_at, aborted_at, lost_at: when ``write_eof``, ``close`` and
            ``abort`` were first called and ``connection_lost`` was delivered (``None``: never).
        lost_with: the exception ``connection_lost`` was given.
    """

    def __init__(
        self,
        loop: ManualClockLoop,
        protocol: asyncio.BaseProtocol,
        *,
        local: tuple[str, int],
        remote: tuple[str, int],
        latency: float = 0.0,
    ) -> None:
        super().__init__()
        self.loop = loop
        self.protocol = protocol
        self.peer: FakeTransport | None = None
        self.local, self.remote, self.latency = local, remote, latency
        self.writes: list[tuple[float, bytes]] = []
        self.writes_after_close = 0
        self.eof_written_at: float | None = None
        self.closed_at: float | None = None
        self.aborted_at: float | None = None
        self.lost_at: float | None = None
        self.lost_with: BaseException | None = None
        self._inbound: collections.deque[tuple[float, bytes]] = collections.deque()  # from the peer
        self._inbound_size = 0
        self._fin_at: float | None = None  # the peer's FIN, readable after the inbound bytes
        self._fin_seen = False
        self._reset = False  # the peer reset the connection: reported at the next poll
        self._reading = True
        self._closing = False
        self._lost = False
        self._write_paused = False
        self._high, self._low = 64 * 1024, 16 * 1024
        loop.transports.append(self)

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.eof_written_at is not None and not self._closing:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._closing or self._lost:
            self.writes_after_close += 1
            return
        if not data:
            return
        chunk = bytes(data)
        now = self.loop.time()
        self.writes.append((now, chunk))
        peer = self.peer
        assert peer is not None
        if peer._closing or peer._lost:
            # The peer closed its socket: its kernel answers with a reset, which discards what
            # this end had not read yet.
            self._inbound.clear()
            self._inbound_size = 0
            self._reset = True
            return
        peer._inbound.append((now + self.latency, chunk))
        peer._inbound_size += len(chunk)
        if not self._write_paused and self.get_write_buffer_size() > self._high:
            self._write_paused = True
            self.protocol.pause_writing()

    @property
    def bytes_written(self) -> bytes:
        """Everything this end wrote, in order."""
        return b"".join(chunk for _, chunk in self.writes)

    def get_write_buffer_size(self) -> int:
        """Bytes written and not yet read by the peer (they wait in the "kernel")."""
        peer = self.peer
        return 0 if peer is None or peer._lost else peer._inbound_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = 64 * 1024 if high is None else high
        self._low = self._high // 4 if low is None else low

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self.eof_written_at is None:
            self.eof_written_at = self.loop.time()
            self._send_fin()

    def _send_fin(self) -> None:
        peer = self.peer
        if peer is not None and peer._fin_at is None:
            peer._fin_at = self.loop.time() + self.latency

    # ------------------------------------------------------------------ closing

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        """Stop reading; once the peer has read what was written, a FIN, then ``connection_lost``."""
        if self._closing or self._lost:
            return
        self._closing = True
        self._reading = False
        self.closed_at = self.loop.time()
        self._finish_close_if_flushed()

    def _finish_close_if_flushed(self) -> None:
        if self.get_write_buffer_size() == 0:
            self._send_fin()
            self.loop.call_soon(self._connection_lost, None)

    def abort(self) -> None:
        """A reset: what the peer had not read is lost, both ends' connections end."""
        if self._lost:
            return
        if self.aborted_at is None:
            self.aborted_at = self.loop.time()
        self._closing = True
        self._reading = False
        peer = self.peer
        if peer is not None and not peer._lost:
            peer._inbound.clear()
            peer._inbound_size = 0
            peer._reset = True
        self.loop.call_soon(self._connection_lost, None)

    def _connection_lost(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._inbound.clear()
        self._inbound_size = 0
        self.lost_at = self.loop.time()
        self.lost_with = exc
        self.protocol.connection_lost(exc)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ reading

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if not self._closing:
            self._reading = True

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def _next_arrival(self) -> float | None:
        if self._lost or not self._reading:
            return None
        if self._inbound:
            return self._inbound[0][0]
        return self._fin_at if self._fin_at is not None and not self._fin_seen else None

    def _deliverable(self, now: float) -> bool:
        if self._lost:
            return False
        if self._reset:
            return True
        arrival = self._next_arrival()
        return arrival is not None and arrival <= now

    def _poll(self, now: float) -> bool:
        """At the loop's poll: schedule the delivery of what arrived by ``now``."""
        if not self._deliverable(now):
            return False
        if self._reset:
            self._reset = False
            self.loop.call_soon(
                self._connection_lost, ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
            )
            return True
        if self._inbound:
            parts: list[bytes] = []
            size = 0
            while self._inbound and self._inbound[0][0] <= now and size < READ_SIZE:
                _, chunk = self._inbound.popleft()
                parts.append(chunk)
                size += len(chunk)
            self._inbound_size -= size
            self.loop.call_soon(self._data_received, b"".join(parts))
            peer = self.peer
            if peer is not None:
                peer._read_by_peer()
            return True
        self._fin_seen = True
        self.loop.call_soon(self._eof_received)
        return True

    def _data_received(self, data: bytes) -> None:
        if self._lost:
            return
        if not self._reading:  # paused after the poll took the bytes: they stay in the kernel
            self._inbound.appendleft((self.loop.time(), data))
            self._inbound_size += len(data)
            return
        self.protocol.data_received(data)  # type: ignore[attr-defined]

    def _eof_received(self) -> None:
        if self._lost:
            return
        keep_open = self.protocol.eof_received()  # type: ignore[attr-defined]
        if not keep_open:
            self.close()

    def _read_by_peer(self) -> None:
        """The peer read some of what this end wrote: flow control and a pending close."""
        if self._write_paused and self.get_write_buffer_size() <= self._low:
            self._write_paused = False
            self.loop.call_soon(self.protocol.resume_writing)
        if self._closing and not self._lost:
            self._finish_close_if_flushed()

    # ------------------------------------------------------------------ the rest of the interface

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self.remote, "sockname": self.local}.get(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol

    def __repr__(self) -> str:
        state = "lost" if self._lost else "closing" if self._closing else "open"
        return f"<FakeTransport {self.local[1]}->{self.remote[1]} {state}>"


class RawEnd(asyncio.Protocol):
    """A hand-driven peer: sends exact bytes or packets, records what it receives and when.

    It never hangs up by itself (it keeps its end open at the other's FIN), never sends a
    heartbeat, and reads as the test says.

    Attributes:
        packets: ``(arrival time, packet)`` of every packet received, decoded.
        eof_at, lost_at: when the other end's FIN and the end of the connection came.
        on_data: called with each chunk of bytes received (after it was decoded).
    """

    def __init__(self) -> None:
        self.transport: FakeTransport | None = None
        self.packets: list[tuple[float, SoupMessage]] = []
        self.decoder = SoupDecoder()
        self.eof_at: float | None = None
        self.lost_at: float | None = None
        self.on_data: Callable[[bytes], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, FakeTransport)
        self.transport = transport
        self._loop = transport.loop

    def data_received(self, data: bytes) -> None:
        now = self._loop.time()  # type: ignore[union-attr]
        self.packets.extend((now, packet) for packet in self.decoder.feed(data))
        if self.on_data is not None:
            self.on_data(data)

    def eof_received(self) -> bool:
        self.eof_at = self._loop.time()  # type: ignore[union-attr]
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_at = self._loop.time() if self._loop is not None else None

    def send(self, *messages: SoupMessage | bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"".join(m if isinstance(m, bytes) else m.to_bytes()[1] for m in messages))

    def kinds(self) -> list[str]:
        """The type names of the packets received, in order."""
        return [type(packet).__name__ for _, packet in self.packets]

    def hang_up(self) -> None:
        assert self.transport is not None
        self.transport.close()


# --------------------------------------------------------------------------- running tests


def run(main: Coroutine[Any, Any, T], *, start: float = START) -> T:
    """Run ``main`` on a fresh :class:`ManualClockLoop`; fail if the loop reported an exception.

    Tasks still running at the end are cancelled (a session's linger, a server's flusher).
    """
    loop = ManualClockLoop(start)
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        result = loop.run_until_complete(main)
        leftover = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in leftover:
            task.cancel()
        if leftover:
            loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
    if reported:
        raise AssertionError(f"the event loop reported: {[c.get('message') for c in reported]} {reported}")
    return result


def manual_clock(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Decorate an ``async def`` test to run it with :func:`run` (its parameters, fixtures and
    ``parametrize`` included, are kept)."""

    def run_test(*args: Any, **kwargs: Any) -> None:
        run(test(*args, **kwargs))

    run_test.__name__ = test.__name__
    run_test.__qualname__ = test.__qualname__
    run_test.__doc__ = test.__doc__
    run_test.__module__ = test.__module__
    run_test.__signature__ = inspect.signature(test)  # type: ignore[attr-defined]
    run_test.pytestmark = getattr(test, "pytestmark", [])  # type: ignore[attr-defined]
    return run_test


def loop() -> ManualClockLoop:
    """The running :class:`ManualClockLoop` (inside a test run by :func:`run`)."""
    running = asyncio.get_running_loop()
    assert isinstance(running, ManualClockLoop), "not running on the manual clock: use fakeio.run"
    return running
