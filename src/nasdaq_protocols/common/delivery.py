"""Delivery of an asyncio session: received events to the callback, or to ``receive_msg``.

Part of :class:`~.session.AsyncSession` (a mixin: its methods run on the session). The core keeps
received bytes undecoded; events are decoded in small batches just before they are handed out,
so each is garbage soon after its callback returns (a backlog of live objects kept the garbage
collector busy):

* with a callback (``on_msg_coro``) a *pump* coroutine takes a batch and awaits the callback on
  each event, started eagerly in the same event-loop turn the bytes arrived: a callback that
  does not suspend costs no task. A callback that suspends is finished by a task; bytes that
  arrive meanwhile wait in the core, in order (reading pauses above a bound);
* without one, ``await receive_msg()`` takes events as the application asks; reading pauses
  while more than ``max_unread_bytes`` wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any

from .base import SessionBase
from .callbacks import OnCloseCoro, OnMsgCoro
from .errors import CloseReason
from .types import SessionPhase, StateError

_OPEN, _CLOSING, _CLOSED = SessionPhase.OPEN, SessionPhase.CLOSING, SessionPhase.CLOSED

__all__ = ["DELIVERY_BATCH", "MAX_UNREAD_BYTES", "PUMP_MAX_UNREAD_BYTES", "Delivery", "Resume"]

#: Events taken from the core per batch: few, so each is garbage soon after it is handed out.
DELIVERY_BATCH = 128
#: Queue mode: reading pauses while this many received bytes wait to be read (a quarter: resumes).
MAX_UNREAD_BYTES = 4 << 20
#: Callback mode: reading pauses while a suspended callback has this many bytes waiting behind it.
PUMP_MAX_UNREAD_BYTES = 4 << 20


class Resume:
    """Awaitable that finishes a coroutine which already ran up to its first suspension.

    The pump is started with ``coro.send(None)``; if a callback suspends on a future, that future
    (``first``) is yielded here to the task that takes over, and the coroutine is then driven
    exactly as a task would drive it.
    """

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        pending = self.first
        coro = self.coro
        while True:
            try:
                value = yield pending
            except BaseException as exc:  # cancellation or a failed future: pass it in
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(value)
                except StopIteration as stop:
                    return stop.value


class Delivery(SessionBase):
    """The delivery part of :class:`~.session.AsyncSession`."""

    def start_dispatching(self) -> None:
        """Deliver messages to ``on_msg_coro`` from now on, starting with those already received.

        The first delivery happens in a later event-loop turn, never inside this call. Without
        ``on_msg_coro`` this does nothing: messages stay queued for :meth:`receive_msg`.
        """
        if self.on_msg_coro is None or self._dispatching:
            return
        self._dispatching = True
        if self._queue_paused:
            self._queue_paused = False
            self._resume_reading()
        self._resume_delivery_soon()

    def _resume_delivery_soon(self) -> None:
        loop = self._loop or asyncio.get_running_loop()
        loop.call_soon(self._resume_delivery)

    def _resume_delivery(self) -> None:
        if self._dispatching and self._pump_task is None and not self._holding and not self._callback_broken:
            self._run_pump()
            self._flush()

    def set_handlers(
        self, on_msg_coro: OnMsgCoro | None = None, on_close_coro: OnCloseCoro | None = None
    ) -> None:
        """Set the message and close callbacks after construction (the nasdaq-protocols API).

        Raises:
            StateError: ``on_msg_coro`` while messages are already being dispatched, or
                ``on_close_coro`` once the session is closing.
        """
        if on_msg_coro is not None:
            if self._dispatching:
                raise StateError("messages are already dispatched: cannot change on_msg_coro")
            self.on_msg_coro = on_msg_coro
        if on_close_coro is not None:
            if self._phase is not _OPEN:
                raise StateError("the session is closing: cannot set on_close_coro")
            self.on_close_coro = on_close_coro

    async def on_message(self, msg: Any) -> None:
        """Hand ``msg`` to the application as if it had been received: to ``on_msg_coro`` when
        dispatching, else to the queue :meth:`receive_msg` reads."""
        if self._dispatching and self.on_msg_coro is not None:
            await self.on_msg_coro(msg)
        else:
            self._queue.append(msg)
            self._wake_reader()

    def _take(self, limit: int) -> list[Any]:
        return self._take_events(limit)

    def _take_queued(self) -> list[Any]:
        """Callback mode: what was queued before delivery to the callback started (at most once)."""
        queue = self._queue
        if not queue:
            return []
        events = list(queue)
        queue.clear()
        return events

    def _run_pump(self) -> None:
        """Run the pump now; if a callback suspends, a task finishes it."""
        driver = self._pump()
        try:
            first = driver.send(None)
        except StopIteration:
            self._pump_done()
            return
        except Exception as exc:
            self._callback_failed(exc)
            return
        self._pump_task = self._loop.create_task(  # type: ignore[union-attr]
            self._finish_pump(Resume(driver, first)), name=f"dispatch:{self.session_id}"
        )

    async def _pump(self) -> None:
        """Hand every event ready to ``on_msg_coro``, in order, until none is left."""
        callback = self.on_msg_coro
        assert callback is not None
        for event in self._take_queued():
            await callback(event)
        take = self._take_events
        conn = self._conn
        while not self._holding and (events := take(DELIVERY_BATCH)):
            for event in events:
                await callback(event)
            if not conn.pending:
                break  # the usual end of a read: no need to ask the core again

    async def _finish_pump(self, suspended: Resume) -> None:
        try:
            await suspended
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._callback_failed(exc)
        finally:
            self._pump_task = None
            if self._pump_paused:
                self._pump_paused = False
                self._resume_reading()
        self._pump_done()
        self._flush()

    def _pump_done(self) -> None:
        """Everything ready was handed out. After the peer's end of stream, close."""
        if self._phase is _OPEN and self._connection_lost and not self._holding:
            self.initiate_close(*self._why_closed())

    def _callback_failed(self, exc: Exception) -> None:
        self._callback_broken = True  # the rest must not reach a callback that just failed
        self.log.error("%s> message callback raised %r; closing", self.session_id, exc, exc_info=exc)
        self.initiate_close(CloseReason.APPLICATION_ERROR, f"message callback raised {exc!r}")

    def _decode_into_queue(self) -> None:
        """Queue mode, at the close: decode everything received, so nothing is lost and the core
        sees the end (an End of Session in it) before the session says why it closed."""
        queue = self._queue
        while events := self._take(1024):
            queue.extend(events)
        if self._queue_paused:
            self._queue_paused = False
            self._resume_reading()
        self._wake_reader()

    def _wake_reader(self) -> None:
        """Queue mode: something new to read (or the close): wake ``receive_msg`` and the hook."""
        waiter = self._queue_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.on_readable is not None:
            self.on_readable()

    @property
    def delivering(self) -> bool:
        """True while a message callback is suspended: what arrives meanwhile waits, undecoded,
        and takes effect (a malformed packet's protocol error included) once it is reached."""
        return self._pump_task is not None or self._holding > 0

    def has_unread(self) -> bool:
        """Queue mode: True when :meth:`receive_msg` has received data to hand out (a message, or
        bytes not decoded yet) without waiting."""
        if self._queue:
            return True
        return self._phase is _OPEN and not self._dispatching and self._conn.unread_bytes > 0

    def is_drained(self) -> bool:
        """True once the session is closed and every message it received was handed out."""
        if self._phase is _OPEN or self._queue:
            return False
        return self._phase is _CLOSED or self._pump_task is None

    async def receive_msg(self) -> Any:
        """Wait for the next application message (when the session has no ``on_msg_coro``).

        Returns:
            The next message, in arrival order.

        Raises:
            The subclass's end-of-stream error (``EndOfStream``): the session is closed and every
            message it received was handed out (``close_reason`` says why it closed).
        """
        while True:
            message = self.receive_msg_nowait()
            if message is not None:
                return message
            if self.is_drained():
                raise self._end_of_stream()
            if self._queue_waiter is None or self._queue_waiter.done():
                self._queue_waiter = asyncio.get_running_loop().create_future()
            await self._queue_waiter

    def receive_msg_nowait(self) -> Any | None:
        """The next application message already received, or ``None`` when there is none."""
        queue = self._queue
        if not queue and not self._fill_queue(64):
            return None
        return queue.popleft()

    def receive_batch_nowait(self, limit: int) -> list[Any]:
        """Queue mode: up to ``limit`` messages already received, oldest first (empty: none yet).

        For a consumer that hands messages out from its own small buffer (the subscriber): one
        call decodes a run of messages in one go. Keep ``limit`` small (tens to a few hundred).
        """
        queue = self._queue
        if queue:
            batch = [queue.popleft() for _ in range(min(limit, len(queue)))]
            return batch
        if self._dispatching or self._phase is _CLOSED:
            return []
        batch = self._take(limit)
        self._after_queue_read()
        return batch

    def _fill_queue(self, limit: int) -> bool:
        if self._dispatching or self._phase is _CLOSED:
            return False
        events = self._take(limit)
        if events:
            self._queue.extend(events)
        self._after_queue_read()
        return bool(self._queue)

    def _after_queue_read(self) -> None:
        if self._queue_paused and self._conn.unread_bytes <= self.max_unread_bytes // 4:
            self._queue_paused = False
            self._resume_reading()
        if self._loop is not None and self._phase is _OPEN:
            # The application may take a whole backlog without yielding: heartbeats go out from
            # here too (one clock reading per batch).
            self._heartbeat_check(self._loop.time())

    def _pause_reading(self) -> None:
        self._read_pauses += 1
        if self._read_pauses == 1 and self._transport is not None and self._phase is _OPEN:
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_pauses == 0:
            return
        self._read_pauses -= 1
        if self._read_pauses == 0 and self._transport is not None and self._phase is _OPEN:
            self._conn.last_received = self._loop.time()  # type: ignore[union-attr] # silence counts from now
            self._transport.resume_reading()

    @contextlib.asynccontextmanager
    async def buffer_until_drained(self, discard_buffer: bool = False) -> AsyncIterator[None]:
        """Wait until every message received so far was handed out, then hold delivery for the
        body of the ``async with``; afterwards deliver what arrived meanwhile (or, with
        ``discard_buffer=True``, drop it). The nasdaq-protocols ``AsyncSession`` API.

        Raises:
            StateError: nested in another ``buffer_until_drained``.
        """
        if self._holding:
            raise StateError("already draining: buffer_until_drained cannot be nested")
        while (task := self._pump_task) is not None:
            await asyncio.wait({task})
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
            if discard_buffer:
                while self._take(DELIVERY_BATCH):
                    pass
                self._queue.clear()
            if self._dispatching:
                self._resume_delivery_soon()
