"""Bytes out: a session writes what its connection queued, coalesced by event-loop turn.

The first write of an event-loop turn goes to the transport at once, so a reply costs no extra
latency; what is queued after it in the same turn is written at the end of the turn, or as soon as
:data:`SEND_CHUNK` bytes wait, so a burst of small packets costs two system calls, not one each,
and a producer that never yields streams as it goes instead of building its whole output first.
``drain()`` waits while the transport's buffer is above its high-water mark.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["SEND_CHUNK", "Writer"]

#: Bytes queued in one event-loop turn after which they are written at once rather than at the end
#: of the turn: a producer that never yields streams (and holds at most this much) instead of
#: building the whole turn's output first.
SEND_CHUNK = 64 * 1024


class Writer:
    """Writes a connection's queued bytes to a transport (see the module docstring).

    Args:
        connection: the sans-IO connection (``data_to_send``, ``data_sent``, ``bytes_to_send``).
        is_lost: tells whether the connection was lost (its bytes are then counted, not written).

    Attributes:
        bytes_sent: bytes handed to the transport.
        bytes_discarded: bytes that could not be written: the connection was already lost.
        paused: True while the transport's buffer is above its high-water mark.
    """

    __slots__ = (
        "bytes_discarded",
        "bytes_sent",
        "connection",
        "drain_waiters",
        "flush_handle",
        "is_lost",
        "loop",
        "paused",
        "transport",
    )

    def __init__(self, connection: Any, is_lost: Callable[[], bool]) -> None:
        self.connection = connection
        self.is_lost = is_lost
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.flush_handle: asyncio.Handle | None = None
        self.paused = False
        self.drain_waiters: list[asyncio.Future[None]] = []
        self.bytes_sent = 0
        self.bytes_discarded = 0

    def connected(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop

    def send_soon(self) -> None:
        """The connection has bytes queued: write them, now or at the end of the turn."""
        if self.flush_handle is None:
            if self.loop is None:
                return  # not connected (a session driven without a socket): they stay queued
            self.flush_handle = self.loop.call_soon(self._scheduled_flush)
            self.flush()
        elif self.connection.bytes_to_send >= SEND_CHUNK:
            self.flush()

    def _scheduled_flush(self) -> None:
        self.flush_handle = None
        self.flush()

    def cancel(self) -> None:
        """No end-of-turn write any more (the session is closing)."""
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None

    def flush(self) -> None:
        """Write what the connection has queued."""
        data = self.connection.data_to_send()
        if not data:
            return
        transport = self.transport
        if transport is None or self.is_lost():
            self.bytes_discarded += len(data)
            return
        transport.write(data)
        self.bytes_sent += len(data)
        self.connection.data_sent(self.loop.time())  # type: ignore[union-attr]

    async def drained(self) -> None:
        """Write what is queued, then wait while the transport's buffer is full."""
        self.flush()
        if not self.paused:
            return
        waiter = self.loop.create_future()  # type: ignore[union-attr]
        self.drain_waiters.append(waiter)
        await waiter

    def release(self) -> None:
        """Wake every ``drain()`` (the buffer drained, or the connection is gone)."""
        for waiter in self.drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.drain_waiters.clear()

    @property
    def buffered(self) -> int:
        """Bytes queued or written but not yet handed to the kernel."""
        queued: int = self.connection.bytes_to_send
        return queued + (self.transport.get_write_buffer_size() if self.transport else 0)
