"""A TCP proxy that misbehaves on cue, for the fault tests (imported as ``faultproxy``).

A client connects to the proxy; the proxy connects it to the target and carries bytes both ways,
until the test says otherwise. Every fault is a method the test calls (in the test's own event
loop, no thread), and applies to the connections open now and to those that come later:

* :meth:`FaultProxy.cut_all`: drop every connection now (a reset, or a FIN with ``reset=False``);
* :meth:`FaultProxy.cut_after`: the next connections are cut after so many bytes in one direction
  (wherever that falls, mid-packet included), one byte count per connection;
* :meth:`FaultProxy.refuse`: new connections are dropped as soon as they arrive (a server down);
* :meth:`FaultProxy.black_hole`: stop carrying bytes in one direction or both, without closing
  anything: what is sent waits in the proxy (and then in the kernel's buffers, which fill up), as
  on a path that went dark with no FIN and no reset;
* :meth:`FaultProxy.trickle`: write one byte at a time, one write (and one loop turn) each;
* :meth:`FaultProxy.latency`: hold each chunk so long, plus up to ``jitter`` at random (the order
  of the bytes is kept, as TCP keeps it);
* :meth:`FaultProxy.throttle`: at most so many bytes a second in each direction;
* :meth:`FaultProxy.heal`: undo them all.

What happened is counted (connections, cuts, bytes each way), and :meth:`FaultProxy.wait_for`
waits for a condition on those counts: a test awaits the fault it caused rather than sleeping.
The proxy is written for these tests (asyncpg's test suite has a proxy of the same idea).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import random
import socket
import struct
import time
from collections.abc import Callable, Iterable

__all__ = ["Direction", "FaultProxy", "ProxiedConnection"]

log = logging.getLogger(__name__)

Address = tuple[str, int]

#: Bytes read at a time from either side.
CHUNK = 1 << 16
#: Chunks held per direction before the proxy stops reading (so a stalled side pushes back).
QUEUED_CHUNKS = 16


class Direction(enum.Flag):
    """Which way bytes go: UP from the client to the target, DOWN from the target to the client."""

    UP = enum.auto()
    DOWN = enum.auto()
    BOTH = UP | DOWN


_EOF = b""


class _Pipe:
    """One direction of one connection: read chunks, hold them (latency), then write them as the
    proxy's faults say (black hole, trickle, throttle, a byte budget before a cut)."""

    def __init__(
        self,
        connection: ProxiedConnection,
        direction: Direction,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        budget: int | None,
    ) -> None:
        self.connection = connection
        self.proxy = connection.proxy
        self.direction = direction
        self.reader = reader
        self.writer = writer
        self.budget = budget  # bytes still to carry before the connection is cut (None: no cut)
        self.queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUED_CHUNKS)
        self.last_due = 0.0
        self.bytes = 0
        self.send_credit_at = time.monotonic()  # throttle: when the next byte may go

    async def read(self) -> None:
        proxy = self.proxy
        while True:
            try:
                data = await self.reader.read(CHUNK)
            except OSError:
                data = _EOF
            due = time.monotonic()
            if proxy._latency or proxy._jitter:
                due += proxy._latency + proxy._jitter * proxy._random.random()
            self.last_due = due = max(due, self.last_due)  # never reorder the stream
            await self.queue.put((due, data))
            if not data:
                return

    async def write(self) -> None:
        proxy = self.proxy
        while True:
            due, data = await self.queue.get()
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await proxy._flowing[self.direction].wait()  # black hole: hold everything, close nothing
            if not data:
                if self.writer.can_write_eof():
                    with contextlib.suppress(OSError):
                        self.writer.write_eof()
                return
            if self.budget is not None and len(data) >= self.budget:
                data = data[: self.budget]
                await self._send(data)
                await self.connection.cut(reset=self.proxy.reset_on_cut, why=f"after {self.bytes} bytes")
                return
            await self._send(data)

    async def _send(self, data: bytes) -> None:
        proxy = self.proxy
        if proxy._trickle:
            pieces: Iterable[bytes] = (data[i : i + 1] for i in range(len(data)))
        elif proxy._rate is not None:
            step = max(1, int(proxy._rate / 100))  # about 100 writes a second
            pieces = (data[i : i + step] for i in range(0, len(data), step))
        else:
            pieces = (data,)
        for piece in pieces:
            if proxy._rate is not None:
                now = time.monotonic()
                self.send_credit_at = max(self.send_credit_at, now) + len(piece) / proxy._rate
                if self.send_credit_at - now > 0.001:
                    await asyncio.sleep(self.send_credit_at - now)
            self.writer.write(piece)
            self.bytes += len(piece)
            if self.budget is not None:
                self.budget -= len(piece)
            if self.direction is Direction.UP:
                proxy.bytes_up += len(piece)
                proxy.writes_up += 1
            else:
                proxy.bytes_down += len(piece)
                proxy.writes_down += 1
            await self.writer.drain()
            proxy._changed.set()
            if proxy._trickle:
                await asyncio.sleep(0)  # let the receiver read this one byte before the next


class ProxiedConnection:
    """One client's connection through the proxy, and its connection to the target."""

    def __init__(
        self,
        proxy: FaultProxy,
        number: int,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        target: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        budgets: dict[Direction, int | None],
    ) -> None:
        self.proxy = proxy
        #: 1 for the first connection the proxy accepted, and so on.
        self.number = number
        self._writers = (client[1], target[1])
        self.up = _Pipe(self, Direction.UP, client[0], target[1], budgets.get(Direction.UP))
        self.down = _Pipe(self, Direction.DOWN, target[0], client[1], budgets.get(Direction.DOWN))
        self.closed = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self.up.read(), name=f"proxy-{number}-up-read"),
            asyncio.create_task(self.up.write(), name=f"proxy-{number}-up-write"),
            asyncio.create_task(self.down.read(), name=f"proxy-{number}-down-read"),
            asyncio.create_task(self.down.write(), name=f"proxy-{number}-down-write"),
        ]
        self._runner = asyncio.create_task(self._run(), name=f"proxy-{number}")

    async def _run(self) -> None:
        # Done when both directions have carried their EOF, or when any part fails (a reset).
        writers = {self._tasks[1], self._tasks[3]}
        failed = False
        try:
            pending = set(self._tasks)
            while writers & pending and not failed:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                failed = any(not task.cancelled() and task.exception() is not None for task in done)
        finally:
            # One side reset (a write failed): reset the other too, as a middlebox that lost the
            # flow would; both sides closed in turn: close with a FIN.
            await self.cut(reset=failed, why="closed")

    async def cut(self, *, reset: bool = True, why: str = "cut") -> None:
        """Close both sides now: with a reset (SO_LINGER 0) or, ``reset=False``, a FIN."""
        if self.closed.is_set():
            return
        self.closed.set()
        if why != "closed":
            self.proxy.cuts += 1
            log.debug("proxy connection %d: cut %s", self.number, why)
        for writer in self._writers:
            sock = writer.get_extra_info("socket")
            if reset and sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if reset:
                writer.transport.abort()
            else:
                writer.close()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
            task.add_done_callback(_retrieve)
        self.proxy._forget(self)

    @property
    def bytes_down(self) -> int:
        """Bytes carried from the target to the client on this connection."""
        return self.down.bytes

    @property
    def bytes_up(self) -> int:
        """Bytes carried from the client to the target on this connection."""
        return self.up.bytes


class FaultProxy:
    """A TCP proxy from a loopback port to ``target``, with faults on cue (see the module docstring).

    ``async with FaultProxy(server.address) as proxy:`` then connect to ``proxy.address``.

    Args:
        target: where each connection is carried to.
        host: the address to listen on.
        seed: seeds the jitter (a test that fails can be run again the same way).
    """

    def __init__(self, target: Address, *, host: str = "127.0.0.1", seed: int = 0) -> None:
        self.target = target
        self.host = host
        self._server: asyncio.Server | None = None
        self._random = random.Random(seed)
        #: Connections open now.
        self.connections: list[ProxiedConnection] = []
        #: Connections accepted so far (refused ones included), and those cut by a fault.
        self.accepted = 0
        self.cuts = 0
        self.refused = 0
        #: Bytes carried so far, all connections together.
        self.bytes_up = 0
        self.bytes_down = 0
        #: Writes made so far, all connections together (a trickle makes one a byte).
        self.writes_up = 0
        self.writes_down = 0
        #: Cut with a reset (True) or a FIN (False) when a byte budget runs out.
        self.reset_on_cut = True
        self._budgets: collections.deque[tuple[Direction, int]] = collections.deque()
        self._refusing = False
        self._flowing = {Direction.UP: asyncio.Event(), Direction.DOWN: asyncio.Event()}
        for flowing in self._flowing.values():
            flowing.set()
        self._trickle = False
        self._latency = 0.0
        self._jitter = 0.0
        self._rate: float | None = None
        self._changed = asyncio.Event()  # set at every change a wait_for condition may look at
        self._handlers: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ life

    async def start(self) -> FaultProxy:
        """Listen on a free port of ``host``."""
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        return self

    @property
    def address(self) -> Address:
        """Where clients connect."""
        assert self._server is not None, "not started"
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        self.restore()
        await self.cut_all(reset=True, count=False)
        for handler in list(self._handlers):
            handler.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ faults

    async def cut_all(self, *, reset: bool = True, count: bool = True) -> int:
        """Drop every open connection now; returns how many (each counts in :attr:`cuts`)."""
        connections = list(self.connections)
        for connection in connections:
            await connection.cut(reset=reset, why="by cut_all" if count else "closed")
        return len(connections)

    def cut_after(self, *budgets: int, direction: Direction = Direction.DOWN) -> None:
        """Cut each of the next ``len(budgets)`` connections after that many bytes ``direction``
        (one budget per connection, in order; connections after them are left alone)."""
        assert direction in (Direction.UP, Direction.DOWN), "one direction per budget"
        self._budgets.extend((direction, budget) for budget in budgets)

    def refuse(self, refusing: bool = True) -> None:
        """Drop new connections as they arrive (with a reset), or accept them again."""
        self._refusing = refusing

    def black_hole(self, direction: Direction = Direction.BOTH) -> None:
        """Stop carrying bytes ``direction`` (open and future connections), closing nothing."""
        for way, flowing in self._flowing.items():
            if way & direction:
                flowing.clear()

    def restore(self, direction: Direction = Direction.BOTH) -> None:
        """Carry bytes ``direction`` again after :meth:`black_hole` (what waited goes first)."""
        for way, flowing in self._flowing.items():
            if way & direction:
                flowing.set()

    def trickle(self, on: bool = True) -> None:
        """Write one byte at a time."""
        self._trickle = on

    def latency(self, seconds: float, jitter: float = 0.0) -> None:
        """Hold each chunk ``seconds`` plus a random part of ``jitter`` before writing it."""
        self._latency, self._jitter = seconds, jitter

    def throttle(self, bytes_per_second: float | None) -> None:
        """Carry at most ``bytes_per_second`` each way, per connection (``None``: no limit)."""
        self._rate = bytes_per_second

    def heal(self) -> None:
        """Undo every fault: carry everything, at once, as it comes (pending cuts are dropped)."""
        self._budgets.clear()
        self._refusing = False
        self.restore()
        self._trickle = False
        self._latency = self._jitter = 0.0
        self._rate = None

    # ------------------------------------------------------------------ waiting

    async def wait_for(
        self, condition: Callable[[FaultProxy], object], what: str, timeout: float = 30.0
    ) -> None:
        """Wait until ``condition(proxy)`` holds, re-checked whenever a connection opens or closes.

        Raises:
            AssertionError: not within ``timeout`` seconds (the message says what was awaited).
        """

        async def until() -> None:
            while not condition(self):
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(until(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"proxy: not within {timeout:g} s: {what}") from None

    # ------------------------------------------------------------------ carrying

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._open(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _open(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        number = self.accepted
        if self._refusing:
            self.refused += 1
            _reset(writer)
            self._changed.set()
            return
        try:
            target = await asyncio.open_connection(*self.target)
        except OSError as exc:
            log.debug("proxy connection %d: target %s:%d: %s", number, *self.target, exc)
            _reset(writer)
            self._changed.set()
            return
        budgets: dict[Direction, int | None] = {}
        if self._budgets:
            direction, budget = self._budgets.popleft()
            budgets[direction] = budget
        connection = ProxiedConnection(self, number, (reader, writer), target, budgets)
        self.connections.append(connection)
        self._changed.set()

    def _forget(self, connection: ProxiedConnection) -> None:
        if connection in self.connections:
            self.connections.remove(connection)
        self._changed.set()


def _retrieve(task: asyncio.Task[None]) -> None:
    # A part that failed as its connection was cut: nothing to report (the cut is the point).
    if not task.cancelled():
        task.exception()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
