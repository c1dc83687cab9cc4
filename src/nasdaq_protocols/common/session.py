"""The asyncio session: it carries bytes and time between a transport and a sans-IO connection.

:class:`AsyncSession` is an ``asyncio.Protocol`` holding a protocol connection (any object with the
members of :class:`~.sansio.SansIOConnection`, SoupBinTCP's ``SoupConnection``) by composition, as
websockets' ``asyncio/connection.py`` holds its ``Protocol``. It keeps no protocol state: the
conversation's state, numbers, login, close reason and intervals are the connection's. It:

* gives received bytes to the connection, then runs the *pump* (the one loop that hands the
  connection's events to the application's callback, in the same event-loop turn; a callback that
  suspends is finished by a task) or, without a callback, wakes the :class:`~.inbox.Inbox`;
* writes what the connection queued (:class:`~.writer.Writer`: at once, or at the end of the turn);
* runs the one timer the connection asks for (:class:`~.clock.SessionClock`);
* once the connection is closed (by a packet, the clock, the peer or the application), closes the
  transport as the connection's ``close_action`` says (:func:`~.transports.close_transport`),
  still hands out what was received, then runs ``on_close_coro``, once.

A protocol's sessions subclass it and fill in the explicit hooks documented below
(:attr:`NUMBERED_EVENT`, :attr:`REMOTE_ERRORS`, ``_delivery_target``, ``_heartbeat``,
``_on_connected``, ``_on_closing``, ``_on_remote_error``, ``_closed_error``, ``_end_of_stream``);
they call only this class's documented methods (``_send_soon``, ``_flush``, ``initiate_close``...).
This package imports nothing protocol-specific; its vocabulary is that of session protocols with a
login, a logout and an end of session (SoupBinTCP and its kin, see :class:`~.errors.CloseReason`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar, cast

from .callbacks import OnCloseCoro, OnMsgCoro
from .clock import SessionClock
from .eager import Resume
from .errors import CloseReason
from .inbox import MAX_UNREAD_BYTES, Inbox
from .sansio import SansIOConnection
from .transports import CLOSE_GRACE_PERIOD, close_transport
from .types import EndOfQueue, SessionId, StateError
from .writer import Writer

# The reference's module also exports the names of its callbacks and SessionId.
__all__ = ["DELIVERY_BATCH", "MAX_UNREAD_BYTES", "AsyncSession", "OnCloseCoro", "OnMsgCoro", "SessionId"]

_log = logging.getLogger(__name__)

#: Events taken from the connection per batch: few, so each is garbage soon after it is handed out.
DELIVERY_BATCH = 128
#: Callback mode: reading pauses while a suspended callback has this many bytes waiting behind it.
PUMP_MAX_UNREAD_BYTES = 4 << 20


class AsyncSession(asyncio.Protocol):
    """Base class of asyncio sessions (the ``nasdaq_protocols.common.AsyncSession`` of the API).

    A protocol subclass calls :meth:`_init_async_session` with its sans-IO connection; see the
    module docstring for what this class does and the hooks a subclass fills in.

    Attributes set by subclasses: ``session_id``, ``on_msg_coro``, ``on_close_coro``.
    """

    session_id: Any
    on_msg_coro: OnMsgCoro | None
    on_close_coro: OnCloseCoro | None
    log: ClassVar[logging.Logger] = _log
    #: Hook: the class of the events that carry a number (``.sequence``); as each is handed out,
    #: the connection's ``last_delivered`` becomes its number. ``None``: no numbered events.
    NUMBERED_EVENT: ClassVar[type | None] = None

    # ------------------------------------------------------------------ construction

    def _init_async_session(self, connection: SansIOConnection) -> None:
        self._connection = connection
        self._seen_state = connection.state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        self._connection_lost = False
        self._closing = False  # the close was acted on (transport, task): once
        self._close_task: asyncio.Task[None] | None = None
        self._closed_waiter: asyncio.Future[None] | None = None
        self._state_waiters: list[asyncio.Future[None]] = []
        self._remote_error_seen = False
        # delivery
        self._dispatching = False
        self._pump_task: asyncio.Task[None] | None = None
        self._callback_broken = False  # the callback raised: deliver nothing more
        self._holding = 0  # buffer_until_drained blocks: delivery waits
        self._inbox = Inbox(
            connection=connection,
            take=self._take,
            pause_reading=self._pause_reading,
            resume_reading=self._resume_reading,
            tick=self._tick,
            numbered=self.NUMBERED_EVENT,
        )
        self._read_pauses = 0  # reasons reading is paused (queue, pump): resume at 0
        self._pump_paused = False
        self._writer = Writer(connection, self._is_lost)
        self._clock: SessionClock | None = None  # from connection_made
        # counters
        self.bytes_received = 0

    @property
    def close_reason(self) -> CloseReason | None:
        """Why the session closed (``None`` while open): the connection's (as ``close_detail``)."""
        return self._connection.close_reason

    @property
    def close_detail(self) -> str:
        return self._connection.close_detail

    # ------------------------------------------------------------------ hooks for subclasses

    def _delivery_target(self) -> Callable[[Any], Awaitable[None]]:
        """Hook: the coroutine function the pump awaits with each event (default ``on_msg_coro``)."""
        assert self.on_msg_coro is not None
        return self.on_msg_coro

    def _heartbeat(self) -> None:
        """Hook: send one heartbeat now (default: the connection queues one)."""
        self._connection.send_heartbeat()

    def _on_connected(self, transport: asyncio.Transport) -> None:
        """Hook: the transport is set (the session's id may take the peer's address)."""

    def _on_closing(self) -> None:
        """Hook: the session just started closing (``close_reason`` is set)."""

    def _on_remote_error(self, exc: Exception) -> None:
        """Hook: the peer broke the rules (``exc`` from the connection): say why, then close."""
        self.log.error("%s> protocol error: %s", self.session_id, exc)
        self.initiate_close(CloseReason.PROTOCOL_ERROR, str(exc))

    #: The connection's errors that mean the peer broke the rules (hook: the protocol's).
    REMOTE_ERRORS: ClassVar[tuple[type[Exception], ...]] = (ValueError,)

    def _closed_error(self) -> Exception:
        """Hook: the exception for a send on a session that is not open."""
        if self._transport is None and not self._closing:
            return StateError(f"{self.session_id}> not connected yet")
        return StateError(f"{self.session_id}> session is closed")

    def _end_of_stream(self) -> Exception:
        """Hook: the exception :meth:`receive_msg` raises once the session is closed and drained."""
        return EndOfQueue(f"{self.session_id}> end of stream")

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """:meta private:"""
        # Not an isinstance check: uvloop's transports are not asyncio.Transport subclasses.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        loop = self._loop = asyncio.get_running_loop()
        self._closed_waiter = loop.create_future()
        self._connection.start(loop.time())
        self._clock = SessionClock(self, self._connection, loop, self.log)
        self._writer.connected(transport, loop)
        self._on_connected(transport)
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        """:meta private:"""
        if self._closing:
            return  # closing: read and discard (see the module docstring)
        connection = self._connection
        now = self._loop.time()  # type: ignore[union-attr]
        connection.receive_data(data, now)
        self.bytes_received += len(data)
        if self._dispatching:
            if self._pump_task is None:
                if not self._holding and not self._callback_broken:
                    self._run_pump()
            elif not self._pump_paused and connection.unread_bytes > PUMP_MAX_UNREAD_BYTES:
                self._pump_paused = True
                self._pause_reading()
        else:
            # While a login answer is awaited, what came is decoded up to it now.
            self._inbox.bytes_arrived(decode_while=lambda: bool(self._state_waiters))
        clock = self._clock
        if clock is not None and now >= clock.check_at:
            clock.check(now)
        if connection.bytes_to_send:
            self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        """:meta private:"""
        self._connection_lost = True
        self._writer.release()
        if self._closing:
            return
        # What was received before the end is still handed out; the connection decides from it
        # whether the conversation ended (an End of Session in it) or the peer just hung up.
        self._connection.receive_eof(f"connection lost: {exc}" if exc is not None else "")
        if not self._dispatching:
            self._inbox.decode_all()
        elif self._pump_task is None and not self._holding and not self._callback_broken:
            self._run_pump()

    def pause_writing(self) -> None:
        """:meta private:"""
        self._writer.paused = True

    def resume_writing(self) -> None:
        """:meta private:"""
        self._writer.paused = False
        self._writer.release()

    # ------------------------------------------------------------------ events from the connection

    def _take(self, limit: int) -> list[Any]:
        """The next events of the connection (at most ``limit``), acting on any state change."""
        connection = self._connection
        try:
            events = connection.next_events(limit)
        except self.REMOTE_ERRORS as exc:
            events = []
            if not self._remote_error_seen:
                self._remote_error_seen = True  # the connection stays failed: act once
                self._on_remote_error(exc)
        if connection.state is not self._seen_state:
            self._state_changed()
        return events

    def _state_changed(self) -> None:
        """The connection's state changed: wake who waits for it, re-arm the timer, or close."""
        self._seen_state = self._connection.state
        waiters, self._state_waiters = self._state_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self._connection.closed:
            self._begin_close()
        else:
            self._arm_timer()

    async def _state_change(self) -> None:
        """Wait until the connection's state changes (or the session closes)."""
        if self._closing:
            return
        waiter = (self._loop or asyncio.get_running_loop()).create_future()
        self._state_waiters.append(waiter)
        await waiter

    # ------------------------------------------------------------------ delivery: the pump

    def start_dispatching(self) -> None:
        """Deliver messages to ``on_msg_coro`` from now on, starting with those already received.

        The first delivery happens in a later event-loop turn, never inside this call. Without
        ``on_msg_coro`` this does nothing: messages stay queued for :meth:`receive_msg`.
        """
        if self.on_msg_coro is None or self._dispatching:
            return
        self._dispatching = True
        self._inbox.unpause()
        self._resume_delivery_soon()

    def _resume_delivery_soon(self) -> None:
        (self._loop or asyncio.get_running_loop()).call_soon(self._resume_delivery)

    def _resume_delivery(self) -> None:
        if self._dispatching and self._pump_task is None and not self._holding and not self._callback_broken:
            self._run_pump()
            self._flush()

    def _run_pump(self) -> None:
        """Run the pump now; if a callback suspends, a task finishes it."""
        driver = self._pump()
        try:
            first = driver.send(None)
        except StopIteration:
            return
        except Exception as exc:
            self._callback_failed(exc)
            return
        self._pump_task = self._loop.create_task(  # type: ignore[union-attr]
            self._finish_pump(Resume(driver, first)), name=f"dispatch:{self.session_id}"
        )

    async def _pump(self) -> None:
        """Hand every event ready to the delivery target, in order, until none is left.

        The only delivery loop: a numbered event's number becomes the connection's
        ``last_delivered`` as it is handed out (inside the callback, it is that of the message
        being handled).
        """
        deliver = self._delivery_target()
        numbered = self.NUMBERED_EVENT
        connection = self._connection
        queue = self._inbox.messages
        while queue:  # received before delivery to the callback started
            event = queue.popleft()
            if event.__class__ is numbered:
                connection.last_delivered = event.sequence  # type: ignore[attr-defined]
            await deliver(event)
        take = self._take
        while not self._holding and (events := take(DELIVERY_BATCH)):
            for event in events:
                if event.__class__ is numbered:
                    connection.last_delivered = event.sequence  # type: ignore[attr-defined]
                await deliver(event)
            if not connection.pending:
                break  # the usual end of a read: no need to ask the connection again

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
        if self._connection_lost and self._dispatching and not self._closing:
            self._resume_delivery()  # the end of stream came while the callback was suspended
        self._flush()

    def _callback_failed(self, exc: Exception) -> None:
        self._callback_broken = True  # the rest must not reach a callback that just failed
        self.log.error("%s> message callback raised %r; closing", self.session_id, exc, exc_info=exc)
        self.initiate_close(CloseReason.APPLICATION_ERROR, f"message callback raised {exc!r}")

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
            if self._closing:
                raise StateError("the session is closing: cannot set on_close_coro")
            self.on_close_coro = on_close_coro

    async def on_message(self, msg: Any) -> None:
        """Hand ``msg`` to the application as if it had been received: to ``on_msg_coro`` when
        dispatching, else to the queue :meth:`receive_msg` reads."""
        if self._dispatching and self.on_msg_coro is not None:
            await self.on_msg_coro(msg)
        else:
            self._inbox.messages.append(msg)
            self._inbox.wake()

    @property
    def delivering(self) -> bool:
        """True while a message callback is suspended: what arrives meanwhile waits, undecoded,
        and takes effect (a malformed packet's protocol error included) once it is reached."""
        return self._pump_task is not None or self._holding > 0

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
                self._inbox.messages.clear()
            if self._dispatching:
                self._resume_delivery_soon()

    # ------------------------------------------------------------------ delivery: queue mode (Inbox)

    @property
    def on_readable(self) -> Callable[[], None] | None:
        """Called (no arguments) when queue mode has something new to read, and at the close;
        for a consumer that reads several sessions (the subscriber)."""
        return self._inbox.on_readable

    @on_readable.setter
    def on_readable(self, hook: Callable[[], None] | None) -> None:
        self._inbox.on_readable = hook

    @property
    def max_unread_bytes(self) -> int:
        """Queue mode: reading pauses while this many received bytes wait to be read."""
        return self._inbox.max_unread_bytes

    @max_unread_bytes.setter
    def max_unread_bytes(self, value: int) -> None:
        self._inbox.max_unread_bytes = value

    def has_unread(self) -> bool:
        """Queue mode: True when :meth:`receive_msg` has received data to hand out (a message, or
        bytes not decoded yet) without waiting."""
        if self._inbox.messages:
            return True
        return not self._closing and not self._dispatching and self._connection.unread_bytes > 0

    def is_drained(self) -> bool:
        """True once the session is closed and every message it received was handed out."""
        if not self._closing or self._inbox.messages:
            return False
        return self.is_finished() or self._pump_task is None

    async def receive_msg(self) -> Any:
        """Wait for the next application message (when the session has no ``on_msg_coro``).

        Returns:
            The next message, in arrival order.

        Raises:
            The subclass's end-of-stream error (``EndOfStream``): the session is closed and every
            message it received was handed out (``close_reason`` says why it closed).
        """
        while (message := self.receive_msg_nowait()) is None:
            if self.is_drained():
                raise self._end_of_stream()
            await self._inbox.wait()
        return message

    def receive_msg_nowait(self) -> Any | None:
        """The next application message already received, or ``None`` when there is none."""
        return None if self._dispatching else self._inbox.take_one()

    async def receive_batch(self, limit: int | None = None) -> list[Any]:
        """Wait for messages (when the session has no ``on_msg_coro``), then return those already
        received, at most ``limit``, oldest first: one pass of the packet walker, no ``await`` per
        message. Raises as :meth:`receive_msg` does."""
        while not (batch := self.receive_batch_nowait(limit or 1 << 30)):
            if self.is_drained():
                raise self._end_of_stream()
            await self._inbox.wait()
        return batch

    def receive_batch_nowait(self, limit: int) -> list[Any]:
        """Queue mode: up to ``limit`` messages already received, oldest first (empty: none yet),
        decoded in one go (one read's worth at most)."""
        if not self._inbox.messages and (self._dispatching or self.is_finished()):
            return []
        return self._inbox.take_batch(limit)

    def _tick(self) -> None:
        clock = self._clock
        if clock is not None and not self._closing:
            now = clock.loop.time()
            if now >= clock.check_at:
                clock.check(now)

    def _pause_reading(self) -> None:
        self._read_pauses += 1
        if self._read_pauses == 1 and self._transport is not None and not self._closing:
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_pauses == 0:
            return
        self._read_pauses -= 1
        if self._read_pauses == 0 and self._transport is not None and not self._closing:
            self._connection.reading_resumed(self._loop.time())  # type: ignore[union-attr]
            self._transport.resume_reading()

    # ------------------------------------------------------------------ writing (see Writer)

    def _send_soon(self) -> None:
        """The connection has bytes queued: write them (now, or at the end of the turn)."""
        self._writer.send_soon()

    def _flush(self) -> None:
        """Write what the connection has queued, now."""
        self._writer.flush()

    async def drain(self) -> None:
        """Send what was written, and wait until the transport's buffer is below its high-water
        mark: a producer that awaits ``drain()`` after writing never buffers without bound.

        Raises:
            The subclass's closed error (``SessionClosedError``): the session is closed.
        """
        if self._closing or self._transport is None:
            raise self._closed_error()
        await self._writer.drained()
        if self._connection.closed:
            raise self._closed_error()

    @property
    def write_paused(self) -> bool:
        """True while the transport's write buffer is above its high-water mark."""
        return self._writer.paused

    @property
    def write_buffer_size(self) -> int:
        """Bytes written but not yet handed to the kernel."""
        return self._writer.buffered

    @property
    def bytes_sent(self) -> int:
        """Bytes written to the transport."""
        return self._writer.bytes_sent

    @property
    def bytes_discarded(self) -> int:
        """Bytes that could not be written: the connection was already lost."""
        return self._writer.bytes_discarded

    # ------------------------------------------------------------------ the clock (see SessionClock)

    def _arm_timer(self) -> None:
        """(Re)schedule the timer at the connection's next deadline (after a state change)."""
        if self._clock is not None and not self._closing:
            self._clock.arm()

    @property
    def reading(self) -> bool:
        """False while reading is paused (the application is behind): the peer's silence is ours."""
        return self._read_pauses == 0

    def timed_out(self) -> None:
        """The connection closed on the clock (the peer's silence, a login that never came)."""
        self._state_changed()

    def send_heartbeat_if_due(self, now: float) -> None:
        """Send a heartbeat now if the connection says one is due (``now`` on the loop's clock)."""
        if not self._closing and self._transport is not None and self._connection.heartbeat_due(now):
            self._heartbeat()
            self._flush()

    def start_heartbeats(self, local_hb_interval: float, remote_hb_interval: float) -> None:
        """Send a heartbeat after ``local_hb_interval`` seconds of our silence, and close after
        the peer's silence (``remote_hb_interval``, times the session's timeout factor when it
        has one). Sessions start their heartbeats themselves at login; this restarts them with
        other intervals (the nasdaq-protocols ``AsyncSession`` API)."""
        connection = self._connection
        factor = float(getattr(self, "heartbeat_timeout_factor", 1))
        connection.heartbeat_interval = local_hb_interval
        connection.peer_timeout = remote_hb_interval * factor
        if self._clock is not None and not self._closing:
            self._clock.restart(local_hb_interval)

    # ------------------------------------------------------------------ closing

    def is_active(self) -> bool:
        """True until the session starts closing."""
        return not self._connection.closed

    def is_closed(self) -> bool:
        """True once the session has started closing: nothing more can be sent."""
        return self._connection.closed

    def is_finished(self) -> bool:
        """True once the session is closed and ``on_close_coro`` has run."""
        task = self._close_task
        return task is not None and task.done()

    def initiate_close(
        self,
        reason: CloseReason | bool = CloseReason.LOCAL_CLOSE,
        detail: str = "",
        *,
        drain: bool = False,
    ) -> None:
        """Close the session: the connection ends (for ``reason``, unless it already ended), the
        timer stops, what was queued is written and the transport closed as the connection says.

        Messages already received are still handed out; then ``on_close_coro`` runs, once.
        Idempotent: only the first reason is kept. ``initiate_close(drain)`` (a bool, the
        nasdaq-protocols form) is a local close.
        """
        if isinstance(reason, bool):
            reason = CloseReason.LOCAL_CLOSE
        if self._closing:
            return
        if not self._dispatching and not self._connection_lost and self._transport is not None:
            # Queue mode: what was received is still handed out, decoded now while the state
            # allows it (an End of Session in it makes the close reason END_OF_SESSION; a
            # malformed packet, PROTOCOL_ERROR: the first end found wins).
            self._inbox.decode_all()
        if not self._closing:  # (decoding may have closed it)
            self._connection.close(reason, detail)
            self._state_changed()

    def _begin_close(self) -> None:
        """The connection is closed: act on it, once (timers, transport, the close task)."""
        if self._closing:
            return
        self._closing = True
        connection = self._connection
        if self._clock is not None:
            self._clock.stop()
        self._writer.cancel()
        self.log.info(
            "%s> closing: %s (%s)",
            self.session_id,
            connection.close_reason.value if connection.close_reason else "closed",
            connection.close_detail,
        )
        try:
            # First the hook, so the session leaves its owner's lists before anything else can
            # happen to it; then the transport (what is queued is written first), which never
            # raises out of here.
            self._on_closing()
        finally:
            transport = self._transport
            if transport is not None:
                self._flush()
                if self._connection_lost:
                    transport.close()
                elif not close_transport(
                    transport,
                    half_close=getattr(connection.close_action, "name", "") == "HALF_CLOSE",
                    is_lost=self._is_lost,
                    log=self.log,
                    who=self.session_id,
                ):
                    self._connection_lost = True  # the peer had already reset it
            self._writer.release()
            loop = self._loop or asyncio.get_event_loop()
            self._close_task = loop.create_task(self._finish_close(), name=f"close:{self.session_id}")

    def _is_lost(self) -> bool:
        return self._transport is None or self._connection_lost

    async def _finish_close(self) -> None:
        pump = self._pump_task
        if pump is not None and pump is not asyncio.current_task():
            # Messages already received are still delivered, but a callback that never returns
            # must not hold the close forever.
            done, _ = await asyncio.wait({pump}, timeout=CLOSE_GRACE_PERIOD)
            if not done:
                self.log.warning(
                    "%s> message callback still running after %g s: cancelled",
                    self.session_id,
                    CLOSE_GRACE_PERIOD,
                )
                pump.cancel()
                with contextlib.suppress(BaseException):
                    await pump
        self._inbox.wake()
        try:
            if self.on_close_coro is not None:
                await self.on_close_coro()
        except Exception as exc:
            self.log.error("%s> on_close_coro raised %r", self.session_id, exc, exc_info=exc)
        finally:
            if self._closed_waiter is not None and not self._closed_waiter.done():
                self._closed_waiter.set_result(None)
            self._inbox.wake()

    def abort(self, detail: str = "connection aborted") -> None:
        """Drop the connection at once, unflushed and without a goodbye (as a network failure would)."""
        if self._transport is not None and not self._closing:
            self._connection.data_to_send()  # discarded: nothing more goes out
            self._transport.abort()
            self._connection_lost = True
        self.initiate_close(CloseReason.LOCAL_CLOSE, detail)

    async def close(self, drain: bool = False) -> None:
        """Close the session and wait until ``on_close_coro`` has run. Idempotent.

        Messages already received are handed out first whatever ``drain`` says (it is accepted
        for the nasdaq-protocols API).
        """
        self.initiate_close(CloseReason.LOCAL_CLOSE)
        task = self._close_task
        if task is not None and task is not asyncio.current_task():
            await asyncio.shield(task)

    async def wait_closed(self) -> CloseReason:
        """Wait until the session is closed and ``on_close_coro`` has run; return why it closed."""
        if self._close_task is None and self._closed_waiter is not None:
            await asyncio.shield(self._closed_waiter)  # resolved by the close task, once it ran
        task = self._close_task
        if task is not None:
            await asyncio.shield(task)
        reason = self.close_reason
        assert reason is not None
        return reason
