"""Queue mode: what a session received for an application that reads it with ``receive_msg``.

An :class:`Inbox` belongs to one :class:`~.session.AsyncSession` (as websockets' ``Assembler``
belongs to its connection). Received bytes stay undecoded in the session's connection; the inbox
decodes them as the application asks (``receive_msg``, ``receive_batch_nowait``), so a backlog
costs its bytes, not live objects. It holds what was decoded and not taken yet (messages that
came with a login answer, what was left at the close), wakes the reader, and pauses the
session's reading while more than ``max_unread_bytes`` wait.

The session gives it its connection (bytes not decoded yet; ``last_delivered``, which becomes the
number of each numbered event handed out) and, as functions: ``take`` (decode events, acting on
state changes), ``pause_reading`` / ``resume_reading``, and ``tick`` (heartbeats for a reader that
takes a long backlog without yielding).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_UNREAD_BYTES", "Inbox"]

#: Reading pauses while this many received bytes wait to be read (a quarter: it resumes).
MAX_UNREAD_BYTES = 4 << 20


class Inbox:
    """Messages decoded and not taken yet, the reader's waiter, and the read pause of queue mode.

    Attributes:
        messages: decoded, not taken yet, oldest first.
        on_readable: called (no arguments) when there is something new to read, and at the close:
            for a consumer that reads several sessions (the subscriber).
        max_unread_bytes: reading pauses while this many received bytes wait to be read.
        numbered: the class of the events that carry a number (``.sequence``).
    """

    __slots__ = (
        "connection",
        "max_unread_bytes",
        "messages",
        "numbered",
        "on_readable",
        "pause_reading",
        "paused",
        "resume_reading",
        "take",
        "tick",
        "waiter",
    )

    def __init__(
        self,
        *,
        connection: Any,
        take: Callable[[int], list[Any]],
        pause_reading: Callable[[], None],
        resume_reading: Callable[[], None],
        tick: Callable[[], None],
        numbered: type | None,
    ) -> None:
        self.connection = connection
        self.take = take
        self.pause_reading = pause_reading
        self.resume_reading = resume_reading
        self.tick = tick
        self.numbered = numbered
        self.messages: collections.deque[Any] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None
        self.on_readable: Callable[[], None] | None = None
        self.max_unread_bytes = MAX_UNREAD_BYTES
        self.paused = False

    def wake(self) -> None:
        """Something new to read (or the close): wake ``receive_msg`` and the hook."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.on_readable is not None:
            self.on_readable()

    def bytes_arrived(self, decode_while: Callable[[], bool]) -> None:
        """Bytes arrived (in the connection): decode them now while ``decode_while()`` says so (a
        login answer awaited), pause reading above the bound, wake the reader."""
        while decode_while() and (events := self.take(1)):
            self.messages.extend(events)
        if not self.paused and self.connection.unread_bytes > self.max_unread_bytes:
            self.paused = True
            self.pause_reading()
        self.wake()

    def decode_all(self) -> None:
        """At the end: decode everything received, so nothing is lost and the connection sees the
        end (an End of Session in it) before the session says why it closed. Everything the
        session received counts as delivered."""
        messages = self.messages
        while events := self.take(1024):
            messages.extend(events)
        connection = self.connection
        for event in reversed(messages):  # what the session received counts as delivered
            if event.__class__ is self.numbered:
                connection.last_delivered = max(connection.last_delivered, event.sequence)  # type: ignore[attr-defined]
                break
        self.unpause()
        self.wake()

    def unpause(self) -> None:
        if self.paused:
            self.paused = False
            self.resume_reading()

    async def wait(self) -> None:
        """Until :meth:`wake`."""
        if self.waiter is None or self.waiter.done():
            self.waiter = asyncio.get_running_loop().create_future()
        await self.waiter

    def take_one(self) -> Any | None:
        """The next message, decoded now if needed (``None``: none yet)."""
        messages = self.messages
        if not messages:
            events = self.take(64)
            if events:
                messages.extend(events)
            self.after_read()
            if not messages:
                return None
        message = messages.popleft()
        if message.__class__ is self.numbered:
            self.connection.last_delivered = message.sequence  # type: ignore[attr-defined]
        return message

    def take_batch(self, limit: int) -> list[Any]:
        """Up to ``limit`` messages, oldest first, decoded in one go if needed."""
        messages = self.messages
        if messages:
            batch = [messages.popleft() for _ in range(min(limit, len(messages)))]
        else:
            batch = self.take(limit)
            self.after_read()
        numbered = self.numbered
        for message in reversed(batch):
            if message.__class__ is numbered:
                self.connection.last_delivered = message.sequence  # type: ignore[attr-defined]
                break
        return batch

    def after_read(self) -> None:
        """Something was taken: read again below the bound, send the heartbeats due."""
        if self.paused and self.connection.unread_bytes <= self.max_unread_bytes // 4:
            self.paused = False
            self.resume_reading()
        self.tick()
