"""The asyncio shell every session stands on: transport, delivery, writes, timers, closing.

``AsyncSession`` is an ``asyncio.Protocol`` that holds a sans-IO protocol core (see
:class:`~.core.SessionCore`) by composition. It feeds received bytes to the core, hands the
events the core decodes to the application, writes what the core gives, runs the one timer the
core asks for, and closes exactly once, telling the application why. It knows nothing of any
wire format: a protocol subclass says which events are the application's (``_take_events``) and
how a heartbeat is sent (``_send_heartbeat_now``).

Delivery, the receive hot path. The core keeps received bytes undecoded; events are decoded in
small batches just before they are handed out, so each is garbage soon after its callback
returns (a backlog of live objects kept the garbage collector busy):

* with a callback (``on_msg_coro``) a *pump* coroutine takes a batch and awaits the callback on
  each event, started eagerly in the same event-loop turn the bytes arrived: a callback that
  does not suspend costs no task. A callback that suspends is finished by a task; bytes that
  arrive meanwhile wait in the core, in order (reading pauses above a bound);
* without one, ``await receive_msg()`` takes events as the application asks; reading pauses
  while more than ``max_unread_bytes`` wait.

The first write of an event-loop turn goes to the transport at once, so a reply costs no extra
latency; the writes after it in the same turn are coalesced into one ``write`` at the end of the
turn (or of the read being handled), so a burst of small packets costs two system calls, not one
each.

Closing: a session closes once, for one :class:`CloseReason`. After data the peer may still be
reading (End of Session, a rejected login, a logout), the sending side is shut down and the
socket lingers, reading and discarding, until the peer hangs up (see :data:`GRACEFUL_CLOSES`):
closing at once would make our kernel answer the peer's next heartbeat with a reset, which
discards what the peer had not read yet. Everything already received is still handed out, then
``on_close_coro`` runs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from typing import Any, ClassVar, cast

from .callbacks import OnCloseCoro, OnMsgCoro
from .core import SessionCore, TimerEvent
from .errors import CloseReason
from .types import EndOfQueue, SessionId, StateError

__all__ = [
    "CLOSE_LINGER",
    "GRACEFUL_CLOSES",
    "AsyncSession",
    "HeartbeatSweep",
    "OnCloseCoro",
    "OnMsgCoro",
    "SessionId",
]

_log = logging.getLogger(__name__)

#: Events taken from the core per batch: few, so each is garbage soon after it is handed out.
DELIVERY_BATCH = 128
#: Queue mode: reading pauses while this many received bytes wait to be read (a quarter: resumes).
MAX_UNREAD_BYTES = 4 << 20
#: Callback mode: reading pauses while a suspended callback has this many bytes waiting behind it.
PUMP_MAX_UNREAD_BYTES = 4 << 20
#: Seconds a closing session waits for a still-running callback, or for the peer to read what
#: was written, before cutting.
CLOSE_GRACE_PERIOD = 5.0
#: Seconds a gracefully closing session keeps its socket after shutting down its sending side,
#: reading and discarding, so that the peer can read everything sent before it hangs up too.
CLOSE_LINGER = 10.0
#: Closes that follow data the peer may still be reading: the sending side is shut down and the
#: socket lingers. Any other close (a peer breaking the rules, a limit, silence) cuts at once.
GRACEFUL_CLOSES = frozenset(
    {
        CloseReason.END_OF_SESSION,
        CloseReason.LOGIN_REJECTED,
        CloseReason.LOGOUT,
        CloseReason.LOCAL_CLOSE,
        CloseReason.APPLICATION_ERROR,
    }
)
#: The receive path checks for due heartbeats at most this often (a float comparison per read
#: otherwise): a heartbeat goes out at most this much later than due while the loop is busy.
HEARTBEAT_CHECK_PERIOD = 0.05
#: A timer that fires this many seconds late was held up by a busy event loop: the peer's bytes
#: may be waiting in the socket, unread. A timeout is then decided after the loop has read.
TIMER_LAG_TOLERANCE = 0.05


class _Phase(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"  # no more sending; what was received is still handed out
    CLOSED = "closed"  # on_close_coro has run


_OPEN = _Phase.OPEN


class HeartbeatSweep:
    """The sessions of one event loop that send heartbeats, swept from any session's receive path.

    A loop busy with data runs timers late: with hundreds of sessions, each reader taking its
    backlog before yielding, one turn of the loop can last seconds, and a session whose timer
    waits for the next turn goes silent that long (issue 13: 300 clients were dropped by their
    server). Every session's receive path checks the clock once per read; when a sweep is due it
    sends the heartbeats due on *every* session of the loop, so none stays silent much longer than
    its interval as long as the loop receives anything at all. The timers cover an idle loop.
    """

    __slots__ = ("__weakref__", "next_sweep", "period", "sessions")

    def __init__(self) -> None:
        # By id: a user's session subclass may be unhashable (an attrs class with eq=True).
        self.sessions: dict[int, AsyncSession] = {}
        self.period = float("inf")
        self.next_sweep = 0.0

    def add(self, session: AsyncSession, interval: float) -> None:
        self.sessions[id(session)] = session
        self.period = min(self.period, interval / 4)

    def discard(self, session: AsyncSession) -> None:
        self.sessions.pop(id(session), None)

    def sweep(self, now: float) -> None:
        self.next_sweep = now + self.period
        for session in list(self.sessions.values()):
            session._heartbeat_if_due(now)


_SWEEPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, HeartbeatSweep] = weakref.WeakKeyDictionary()


def heartbeat_sweep(loop: asyncio.AbstractEventLoop) -> HeartbeatSweep:
    """The :class:`HeartbeatSweep` of ``loop``."""
    sweep = _SWEEPS.get(loop)
    if sweep is None:
        sweep = _SWEEPS[loop] = HeartbeatSweep()
    return sweep


class _Resume:
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


class AsyncSession(asyncio.Protocol):
    """Base class for asyncio sessions (the ``nasdaq_protocols.common.AsyncSession`` of the API).

    A protocol subclass calls :meth:`_init_async_session` with its sans-IO core and provides:

    * ``_take_events(limit)``: the next application events from the core (at most ``limit``),
      acting itself on those that are not the application's (a login answer, the end);
    * ``_send_heartbeat_now()``: send one heartbeat;
    * ``_closed_error()`` / ``_end_of_stream()``: the exceptions for a send on a closed session
      and a receive on a closed, drained one.

    Attributes set by subclasses: ``session_id``, ``on_msg_coro``, ``on_close_coro``.
    """

    session_id: Any
    on_msg_coro: OnMsgCoro | None
    on_close_coro: OnCloseCoro | None
    log: ClassVar[logging.Logger] = _log

    # ------------------------------------------------------------------ construction

    def _init_async_session(self, core: SessionCore) -> None:
        self._conn: SessionCore = core
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        self._connection_lost = False
        self._lost_detail = "the peer closed the connection"
        self._phase = _Phase.OPEN
        self._draining: list[tuple[CloseReason, str]] | None = None  # closes found while closing
        self._close_task: asyncio.Task[None] | None = None
        self._closed_waiter: asyncio.Future[None] | None = None
        self.close_reason: CloseReason | None = None
        self.close_detail: str = ""
        # delivery
        self._dispatching = False
        self._queue: collections.deque[Any] = collections.deque()
        self._queue_waiter: asyncio.Future[None] | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._callback_broken = False  # the callback raised: deliver nothing more
        self._holding = 0  # buffer_until_drained blocks: delivery waits
        #: Called (no arguments) when queue mode has something new to read, and at the close;
        #: for a consumer that reads several sessions (the subscriber).
        self.on_readable: Callable[[], None] | None = None
        #: Queue mode: reading pauses while this many received bytes wait to be read.
        self.max_unread_bytes = MAX_UNREAD_BYTES
        self._read_pauses = 0  # reasons reading is paused (queue, pump): resume at 0
        self._queue_paused = False
        self._pump_paused = False
        # writing
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        # the clock
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0
        self._timer_deferred = False
        self._sweep: HeartbeatSweep | None = None
        self._heartbeat_check_at = 0.0  # the receive path looks at the clock from then on
        # counters
        self.bytes_received = 0
        self.bytes_sent = 0

    # ------------------------------------------------------------------ for subclasses

    def _take_events(self, limit: int) -> list[Any]:
        """The next application events (at most ``limit``); ``[]`` when none is ready."""
        raise NotImplementedError

    def _send_heartbeat_now(self) -> None:
        """Send one heartbeat to the peer."""
        raise NotImplementedError

    def _closed_error(self) -> Exception:
        """The exception for a send on a session that is not open."""
        if self._transport is None and self._phase is _Phase.OPEN:
            return StateError(f"{self.session_id}> not connected yet")
        return StateError(f"{self.session_id}> session is closed")

    def _end_of_stream(self) -> Exception:
        """The exception :meth:`receive_msg` raises once the session is closed and drained."""
        return EndOfQueue(f"{self.session_id}> end of stream")

    def _on_connected(self, transport: asyncio.Transport) -> None:
        """Hook: the transport is set."""

    def _on_closing(self) -> None:
        """Hook: the session just started closing."""

    def _protocol_error(self, detail: str) -> None:
        """The peer broke the rules: say why (a subclass may tell the peer too), then close."""
        self.log.error("%s> protocol error: %s", self.session_id, detail)
        self.initiate_close(CloseReason.PROTOCOL_ERROR, detail)

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """:meta private:"""
        # Not an isinstance check: uvloop's transports are not asyncio.Transport subclasses.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        loop = self._loop = asyncio.get_running_loop()
        self._closed_waiter = loop.create_future()
        self._conn.start(loop.time())
        self._on_connected(transport)
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        """:meta private:"""
        if self._phase is not _OPEN:
            return  # closing: read and discard (see the module docstring)
        now = self._loop.time()  # type: ignore[union-attr]
        self._conn.receive_data(data, now)
        self.bytes_received += len(data)
        if self._dispatching:
            if self._pump_task is None:
                if not self._holding and not self._callback_broken:
                    self._run_pump()
            elif not self._pump_paused and self._conn.unread_bytes > PUMP_MAX_UNREAD_BYTES:
                self._pump_paused = True
                self._pause_reading()
        else:
            self._on_data_queued()
        if now >= self._heartbeat_check_at:
            self._heartbeat_check(now)
        if self._out:
            self._flush()

    def _on_data_queued(self) -> None:
        """Queue mode: bytes arrived (and are in the core): wake the reader, or pause reading."""
        if not self._queue_paused and self._conn.unread_bytes > self.max_unread_bytes:
            self._queue_paused = True
            self._pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool | None:
        """:meta private:"""
        return None  # let the transport close itself (ends a linger too); connection_lost reports it

    def connection_lost(self, exc: Exception | None) -> None:
        """:meta private:"""
        self._connection_lost = True
        self._release_drain_waiters()
        if self._phase is not _Phase.OPEN:
            return
        if exc is not None:
            self._lost_detail = f"connection lost: {exc}"
        # What was received before the end is still handed out; the core decides from it
        # whether the conversation ended (an End of Session in it) or the peer just hung up.
        self._conn.receive_data(b"", self._loop.time() if self._loop else 0.0)
        if self._dispatching:
            if self._pump_task is None and not self._callback_broken:
                self._run_pump()  # closes the session when it is done (see _pump_done)
            if self._pump_task is not None or self._phase is not _Phase.OPEN:
                return
        else:
            self._decode_into_queue()
        if self._phase is _Phase.OPEN:
            self.initiate_close(*self._why_closed())

    def _why_closed(self) -> tuple[CloseReason, str]:
        """The reason to report once the peer's end of stream was reached."""
        reason = self._conn.close_reason
        if reason is not None and reason is not CloseReason.PEER_CLOSED:
            return reason, self._conn.close_detail  # e.g. End of Session, then the hang-up
        if self._lost_detail.startswith("connection lost"):
            return CloseReason.PEER_CLOSED, self._lost_detail
        return CloseReason.PEER_CLOSED, self._conn.close_detail or self._lost_detail

    def pause_writing(self) -> None:
        """:meta private:"""
        self._write_paused = True

    def resume_writing(self) -> None:
        """:meta private:"""
        self._write_paused = False
        self._release_drain_waiters()

    def _release_drain_waiters(self) -> None:
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # ------------------------------------------------------------------ writing

    def _write(self, data: bytes) -> None:
        """Send bytes to the peer: the first write of a loop turn goes out at once (no latency
        added to a reply), the ones after it in the same turn are coalesced into one write at the
        end of the turn (a burst costs two system calls, not one per packet)."""
        if self._phase is not _Phase.OPEN or self._transport is None:
            raise self._closed_error()
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._scheduled_flush)  # type: ignore[union-attr]
            self._transport.write(data)
            self.bytes_sent += len(data)
            self._conn.data_sent(self._loop.time())  # type: ignore[union-attr]
        else:
            self._out.append(data)

    def _write_now(self, data: bytes) -> None:
        """Write bytes at once (after anything queued): for a producer that checks flow control
        after each write (a replay)."""
        self._write(data)
        self._flush()

    def _scheduled_flush(self) -> None:
        self._flush_handle = None
        self._flush()

    def _flush(self) -> None:
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        transport = self._transport
        if transport is None or self._connection_lost:
            return
        transport.write(data)
        self.bytes_sent += len(data)
        self._conn.data_sent(self._loop.time())  # type: ignore[union-attr]

    async def drain(self) -> None:
        """Send what was written, and wait until the transport's buffer is below its high-water
        mark: a producer that awaits ``drain()`` after writing never buffers without bound.

        Raises:
            The subclass's closed error (``SessionClosedError``): the session is closed.
        """
        if self._phase is not _Phase.OPEN or self._transport is None:
            raise self._closed_error()
        self._flush()
        if not self._write_paused:
            return
        waiter = self._loop.create_future()  # type: ignore[union-attr]
        self._drain_waiters.append(waiter)
        await waiter
        if self._phase is not _Phase.OPEN:
            raise self._closed_error()

    @property
    def write_paused(self) -> bool:
        """True while the transport's write buffer is above its high-water mark."""
        return self._write_paused

    @property
    def write_buffer_size(self) -> int:
        """Bytes written but not yet handed to the kernel."""
        queued = sum(map(len, self._out))
        return queued + (self._transport.get_write_buffer_size() if self._transport else 0)

    # ------------------------------------------------------------------ the clock

    def _arm_timer(self) -> None:
        """(Re)schedule the one timer at the core's next deadline (call after a state change)."""
        if self._phase is not _Phase.OPEN:
            return
        deadline = self._conn.next_deadline()
        timer = self._timer
        if deadline is None:
            if timer is not None:
                timer.cancel()
                self._timer = None
            return
        if timer is not None:
            if self._timer_due <= deadline:
                return  # it fires first and reschedules
            timer.cancel()
        loop = self._loop or asyncio.get_running_loop()
        self._timer_due = deadline
        self._timer = loop.call_at(deadline, self._on_timer)
        if self._sweep is None and self._transport is not None:
            self._sweep = heartbeat_sweep(loop)
            interval = getattr(self._conn, "heartbeat_interval", None)
            if interval:
                self._sweep.add(self, interval)

    def _on_timer(self) -> None:
        self._timer = None
        if self._phase is not _Phase.OPEN:
            return
        loop = self._loop or asyncio.get_running_loop()
        now = loop.time()
        if now - self._timer_due > TIMER_LAG_TOLERANCE and not self._timer_deferred:
            # The timer fired late: the loop was busy, and the peer's bytes may be in the socket,
            # unread. Decide after the loop has polled the socket again: a timer due a moment
            # from now runs after the next poll, in asyncio's loop and in uvloop alike.
            self._timer_deferred = True
            self._timer_due = now + 0.001
            self._timer = loop.call_at(self._timer_due, self._on_timer)
            return
        self._timer_deferred = False
        event = self._conn.handle_timer(now, reading=self._read_pauses == 0)
        if event is TimerEvent.TIMED_OUT:
            self.log.warning("%s> %s", self.session_id, self._conn.close_detail)
            self.initiate_close(cast(CloseReason, self._conn.close_reason), self._conn.close_detail)
            return
        if event is TimerEvent.HEARTBEAT:
            self._send_heartbeat_now()
            self._flush()
        self._arm_timer()

    def _heartbeat_check(self, now: float) -> None:
        """Send the heartbeats due now, ours and the loop's (see :class:`HeartbeatSweep`): called
        from the receive path at most every :data:`HEARTBEAT_CHECK_PERIOD` seconds."""
        self._heartbeat_check_at = now + HEARTBEAT_CHECK_PERIOD
        if self._conn.heartbeat_due(now) and self._phase is _Phase.OPEN:
            self._send_heartbeat_now()
        sweep = self._sweep
        if sweep is not None and now >= sweep.next_sweep:
            sweep.sweep(now)

    def _heartbeat_if_due(self, now: float) -> None:
        if self._phase is _Phase.OPEN and self._transport is not None and self._conn.heartbeat_due(now):
            self._send_heartbeat_now()
            self._flush()

    def _cancel_timers(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sweep is not None:
            self._sweep.discard(self)
            self._sweep = None

    def start_heartbeats(self, local_hb_interval: float, remote_hb_interval: float) -> None:
        """Send a heartbeat after ``local_hb_interval`` seconds of our silence, and close after
        the peer's silence (``remote_hb_interval``, times the session's timeout factor when it
        has one). Sessions start their heartbeats themselves at login; this restarts them with
        other intervals (the nasdaq-protocols ``AsyncSession`` API)."""
        conn = self._conn
        factor = float(getattr(self, "heartbeat_timeout_factor", 1))
        conn.heartbeat_interval = local_hb_interval  # type: ignore[attr-defined]
        conn.peer_timeout = remote_hb_interval * factor  # type: ignore[attr-defined]
        if self._sweep is not None:
            self._sweep.add(self, local_hb_interval)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._arm_timer()

    # ------------------------------------------------------------------ delivery

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
            if self._phase is not _Phase.OPEN:
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
            self._finish_pump(_Resume(driver, first)), name=f"dispatch:{self.session_id}"
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

    async def _finish_pump(self, suspended: _Resume) -> None:
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
        if self._phase is _Phase.OPEN and self._connection_lost and not self._holding:
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

    def has_unread(self) -> bool:
        """Queue mode: True when :meth:`receive_msg` has received data to hand out (a message, or
        bytes not decoded yet) without waiting."""
        if self._queue:
            return True
        return self._phase is _Phase.OPEN and not self._dispatching and self._conn.unread_bytes > 0

    def is_drained(self) -> bool:
        """True once the session is closed and every message it received was handed out."""
        if self._phase is _Phase.OPEN or self._queue:
            return False
        return self._phase is _Phase.CLOSED or self._pump_task is None

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
        if self._dispatching or self._phase is _Phase.CLOSED:
            return []
        batch = self._take(limit)
        self._after_queue_read()
        return batch

    def _fill_queue(self, limit: int) -> bool:
        if self._dispatching or self._phase is _Phase.CLOSED:
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
        if self._loop is not None and self._phase is _Phase.OPEN:
            # The application may take a whole backlog without yielding: heartbeats go out from
            # here too (one clock reading per batch).
            self._heartbeat_check(self._loop.time())

    def _pause_reading(self) -> None:
        self._read_pauses += 1
        if self._read_pauses == 1 and self._transport is not None and self._phase is _Phase.OPEN:
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_pauses == 0:
            return
        self._read_pauses -= 1
        if self._read_pauses == 0 and self._transport is not None and self._phase is _Phase.OPEN:
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

    # ------------------------------------------------------------------ closing

    def is_active(self) -> bool:
        """True until the session starts closing."""
        return self._phase is _Phase.OPEN

    def is_closed(self) -> bool:
        """True once the session has started closing: nothing more can be sent."""
        return self._phase is not _Phase.OPEN

    def is_finished(self) -> bool:
        """True once the session is closed and ``on_close_coro`` has run."""
        return self._phase is _Phase.CLOSED and (self._close_task is None or self._close_task.done())

    def initiate_close(
        self,
        reason: CloseReason | bool = CloseReason.LOCAL_CLOSE,
        detail: str = "",
        *,
        drain: bool = False,
    ) -> None:
        """Start closing: stop the timer, flush and close the transport (gracefully after data the
        peer may still be reading; see :data:`GRACEFUL_CLOSES`).

        Messages already received are still handed out; then ``on_close_coro`` runs, once.
        Idempotent: only the first call's reason is kept. ``initiate_close(drain)`` (a bool, the
        nasdaq-protocols form) is a local close.
        """
        if isinstance(reason, bool):
            reason = CloseReason.LOCAL_CLOSE
        if self._phase is not _Phase.OPEN:
            return
        if self._draining is not None:
            # A close found in what is being decoded for this close (End of Session, a malformed
            # packet) says better why the session ended: the first one found wins.
            if not self._draining:
                self._draining.append((reason, detail))
            return
        if not self._dispatching and not self._connection_lost and self._transport is not None:
            # Queue mode: what was received is still handed out, decoded now while the state
            # allows it (an End of Session in it makes the close reason END_OF_SESSION).
            found: list[tuple[CloseReason, str]] = []
            self._draining = found
            try:
                self._decode_into_queue()
            finally:
                self._draining = None
            if found:
                reason, detail = found[0]
        self._phase = _Phase.CLOSING
        self.close_reason = reason
        self.close_detail = detail or reason.value
        self._conn.close(reason, self.close_detail)  # what was received is still handed out
        self._cancel_timers()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self.log.info("%s> closing: %s (%s)", self.session_id, reason.value, self.close_detail)
        if self._transport is not None:
            self._close_transport(reason)
        self._release_drain_waiters()
        self._on_closing()
        loop = self._loop or asyncio.get_event_loop()
        self._close_task = loop.create_task(self._finish_close(), name=f"close:{self.session_id}")

    def _close_transport(self, reason: CloseReason) -> None:
        """Close the connection: gracefully after data the peer may still be reading, else at once.

        Closing a socket while the peer still sends (a heartbeat, a pipelined packet) makes the
        kernel answer with a reset, and a reset discards whatever the peer had not read yet: the
        end of the stream, End of Session, a Login Rejected. So a graceful close shuts down only
        the sending side (after what was written is flushed), keeps reading and discarding until
        the peer hangs up too, and closes after :data:`CLOSE_LINGER` seconds at the latest.
        """
        transport = self._transport
        assert transport is not None
        out = self._out
        if out and not self._connection_lost:
            transport.write(b"".join(out))
            self.bytes_sent += sum(map(len, out))
        out.clear()
        loop = self._loop or asyncio.get_event_loop()
        if self._connection_lost:
            transport.close()
            return
        if reason in GRACEFUL_CLOSES and transport.can_write_eof():
            transport.write_eof()
            if self._read_pauses:
                transport.resume_reading()  # read (and discard) until the peer hangs up
            loop.call_later(CLOSE_LINGER, self._end_linger)
            return
        transport.close()
        # close() first flushes what was written; a peer that never reads would keep the socket
        # and its buffer forever, so after a grace period the connection is aborted.
        loop.call_later(CLOSE_GRACE_PERIOD, self._abort_unflushed)

    def _end_linger(self) -> None:
        transport = self._transport
        if transport is None or self._connection_lost:
            return
        unsent = transport.get_write_buffer_size()
        if unsent:
            self.log.info("%s> peer did not read the last %d bytes: aborting", self.session_id, unsent)
            transport.abort()
        else:
            self.log.debug("%s> peer did not hang up within %g s: closing", self.session_id, CLOSE_LINGER)
            transport.close()

    def _abort_unflushed(self) -> None:
        transport = self._transport
        if transport is not None and not self._connection_lost:
            self.log.info(
                "%s> peer did not read the last %d bytes: aborting",
                self.session_id,
                transport.get_write_buffer_size(),
            )
            transport.abort()

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
        self._phase = _Phase.CLOSED
        self._wake_reader()
        try:
            if self.on_close_coro is not None:
                await self.on_close_coro()
        except Exception as exc:
            self.log.error("%s> on_close_coro raised %r", self.session_id, exc, exc_info=exc)
        finally:
            if self._closed_waiter is not None and not self._closed_waiter.done():
                self._closed_waiter.set_result(None)

    def abort(self, detail: str = "connection aborted") -> None:
        """Drop the connection at once, unflushed and without a goodbye (as a network failure would)."""
        if self._transport is not None and self._phase is _Phase.OPEN:
            self._out.clear()
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
        assert self.close_reason is not None
        return self.close_reason
