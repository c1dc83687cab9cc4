"""The asyncio shell every session stands on: transport, decoding, dispatch, heartbeats, closing.

``AsyncSession`` is an ``asyncio.Protocol``. It feeds received bytes to a sans-IO decoder, hands
the decoded messages to its subclass (``_on_messages``), delivers application messages to the
user, keeps the heartbeat and silence timers, honours write flow control, and closes exactly
once, telling the application why. It knows nothing of any wire format.

Delivery, the receive hot path:

* With a callback (``on_msg_coro``) each message's coroutine is started *eagerly*, in the same
  event-loop turn the bytes were decoded: a callback that does not suspend costs one coroutine
  run, no task and no queue. A callback that suspends is finished by a task; messages that arrive
  meanwhile wait in a backlog, in order, and reading from the socket pauses until it drains.
* Without a callback messages queue for ``await receive_msg()``; reading pauses while the queue
  is above its high-water mark, so a slow reader never makes memory grow without bound.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from typing import Any, ClassVar, Protocol, cast

from .errors import CloseReason

__all__ = ["AsyncSession", "Decoder", "OnCloseCoro", "OnMsgCoro"]

OnMsgCoro = Callable[[Any], Awaitable[None]]
OnCloseCoro = Callable[[], Awaitable[None]]

_log = logging.getLogger(__name__)

#: Queue mode: pause reading above this many undelivered messages, resume at the low mark.
QUEUE_HIGH_WATER = 65536
QUEUE_LOW_WATER = 16384
#: Seconds a closing session waits for the peer to read what was written before aborting.
CLOSE_GRACE_PERIOD = 5.0
#: Seconds a gracefully closing session keeps its socket after shutting down its sending side,
#: reading and discarding, so that the peer can read everything sent before it hangs up too.
CLOSE_LINGER = 10.0
#: Closes that follow data the peer may still be reading: the sending side is shut down and the
#: socket lingers. Any other close (a peer breaking the rules, a limit) cuts the connection at once.
GRACEFUL_CLOSES = frozenset(
    {
        CloseReason.END_OF_SESSION,
        CloseReason.LOGIN_REJECTED,
        CloseReason.LOGOUT,
        CloseReason.LOCAL_CLOSE,
        CloseReason.APPLICATION_ERROR,
    }
)
#: A timer that fires this many seconds late was held up by a busy event loop: the peer's bytes
#: may be waiting in the socket, unread. A timeout is then decided only after the loop has read.
TIMER_LAG_TOLERANCE = 0.05


class HeartbeatSweep:
    """The sessions of one event loop that send heartbeats, swept from any session's receive path.

    A loop busy with data runs timers late: with hundreds of sessions, each reader taking its
    backlog before yielding, one turn of the loop can last seconds, and a session whose timer
    waits for the next turn goes silent for that long (issue 13: 300 clients were dropped by their
    server). Every session's receive path checks the clock once per read; when a sweep is due it
    sends the heartbeats due on *every* session of the loop, so none stays silent for longer than
    its interval plus a fraction of it, as long as the loop does any receiving at all. The timers
    still cover an idle loop.
    """

    __slots__ = ("__weakref__", "next_sweep", "period", "sessions")

    def __init__(self) -> None:
        self.sessions: set[AsyncSession] = set()
        self.period = float("inf")
        self.next_sweep = 0.0

    def add(self, session: AsyncSession, interval: float) -> None:
        self.sessions.add(session)
        self.period = min(self.period, interval / 4)

    def discard(self, session: AsyncSession) -> None:
        self.sessions.discard(session)

    def sweep(self, now: float) -> None:
        self.next_sweep = now + self.period
        for session in list(self.sessions):
            session._send_heartbeat_if_due(now)


_SWEEPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, HeartbeatSweep] = weakref.WeakKeyDictionary()


def heartbeat_sweep(loop: asyncio.AbstractEventLoop) -> HeartbeatSweep:
    """The :class:`HeartbeatSweep` of ``loop``."""
    sweep = _SWEEPS.get(loop)
    if sweep is None:
        sweep = _SWEEPS[loop] = HeartbeatSweep()
    return sweep


class Decoder(Protocol):
    """What a session needs of a sans-IO decoder (see ``soup.framing.SoupDecoder``)."""

    @property
    def error(self) -> Exception | None: ...

    def feed(self, data: bytes) -> list[Any]: ...


class _Resume:
    """Awaitable that finishes a coroutine which already ran up to its first suspension.

    The eager dispatcher starts a callback with ``coro.send(None)``; if the callback suspends on a
    future, that future (``first``) is yielded here to the task that takes over, and the
    coroutine is then driven exactly as a task would drive it.
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
    """Base class for asyncio sessions.

    Subclasses provide:

    * ``_new_decoder()``: a fresh sans-IO decoder (``feed(bytes) -> list``, ``error``).
    * ``_on_messages(messages)``: what to do with each decoded batch (call ``_deliver`` for
      application messages).
    * ``_heartbeat_bytes()``: the packet sent when nothing was sent for the heartbeat interval.

    Attributes provided by subclasses: ``session_id``, ``on_msg_coro``, ``on_close_coro``.
    """

    session_id: Any
    on_msg_coro: OnMsgCoro | None
    on_close_coro: OnCloseCoro | None
    log: ClassVar[logging.Logger] = _log

    # ------------------------------------------------------------------ construction

    def _init_async_session(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        self._decoder: Decoder = self._new_decoder()
        self._closing = False
        self._closed = False
        self._connection_lost = False
        self._close_task: asyncio.Task[None] | None = None
        self._closed_waiter: asyncio.Future[None] | None = None
        self.close_reason: CloseReason | None = None
        self.close_detail: str = ""
        # delivery
        self._dispatching = False
        self._queue: collections.deque[Any] = collections.deque()
        self._queue_waiter: asyncio.Future[None] | None = None
        self._backlog: collections.deque[Any] = collections.deque()
        self._dispatch_task: asyncio.Task[None] | None = None
        self._callback_broken = False  # the callback raised: deliver nothing more
        #: Called (no arguments) when queue mode has something new to read, and at the close;
        #: for a consumer that reads several sessions (the subscriber).
        self.on_readable: Callable[[], None] | None = None
        self._read_pauses = 0  # reasons reading is paused (backlog, queue): resume at 0
        # flow control
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        # heartbeats
        self._last_sent = 0.0
        self._last_received = 0.0
        self._send_interval: float | None = None
        self._receive_timeout: float | None = None
        self._receive_timeout_reason = CloseReason.TIMEOUT
        self._receive_timeout_armed_at = 0.0
        self._send_timer: asyncio.TimerHandle | None = None
        self._receive_timer: asyncio.TimerHandle | None = None
        self._sweep: HeartbeatSweep | None = None
        # counters
        self.bytes_received = 0
        self.bytes_sent = 0
        self.messages_received = 0

    def _new_decoder(self) -> Decoder:
        raise NotImplementedError

    def _on_messages(self, messages: list[Any]) -> None:
        raise NotImplementedError

    def _heartbeat_bytes(self) -> bytes:
        raise NotImplementedError

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """:meta private:"""
        # Not an isinstance check: uvloop's transports are not asyncio.Transport subclasses.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._closed_waiter = self._loop.create_future()
        self._last_sent = self._last_received = self._loop.time()
        self._on_connected(transport)

    def _on_connected(self, transport: asyncio.Transport) -> None:
        """Hook for subclasses, called once the transport is set."""

    def data_received(self, data: bytes) -> None:
        """:meta private:"""
        if self._closing:
            return
        self.bytes_received += len(data)
        self._last_received = now = self._loop.time()  # type: ignore[union-attr]
        self._receive(data)
        self._heartbeat_if_due(now)

    def _receive(self, data: bytes) -> None:
        """Decode received bytes and hand the messages to :meth:`_on_messages` (the general path)."""
        decoder = self._decoder
        try:
            messages = decoder.feed(data)
        except ValueError as exc:  # InvalidSoupMessage
            self._protocol_error(str(exc))
            return
        if messages:
            self.messages_received += len(messages)
            self._on_messages(messages)
            # Silence counts from the end of our work on this read, not its start: a long batch
            # on a busy loop must not look like a silent peer.
            self._last_received = self._loop.time()  # type: ignore[union-attr]
        if decoder.error is not None and not self._closing:
            self._protocol_error(str(decoder.error))

    def eof_received(self) -> bool | None:
        """:meta private:"""
        return None  # let the transport close itself (ends a linger too); connection_lost reports it

    def connection_lost(self, exc: Exception | None) -> None:
        """:meta private:"""
        self._connection_lost = True
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        if not self._closing:
            detail = f"connection lost: {exc}" if exc else "the peer closed the connection"
            self.initiate_close(CloseReason.PEER_CLOSED, detail)

    def pause_writing(self) -> None:
        """:meta private:"""
        self._write_paused = True

    def resume_writing(self) -> None:
        """:meta private:"""
        self._write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # ------------------------------------------------------------------ sending

    def _write(self, data: bytes) -> None:
        """Write bytes to the peer; the only way anything is sent."""
        if self._closing or self._transport is None:
            raise self._closed_error()
        self._transport.write(data)
        self.bytes_sent += len(data)
        self._last_sent = self._loop.time()  # type: ignore[union-attr]

    def _heartbeat_if_due(self, now: float) -> None:
        """Send the heartbeats due now, ours and the loop's (see :class:`HeartbeatSweep`): called
        from the receive path, once per read."""
        sweep = self._sweep
        if sweep is not None and now >= sweep.next_sweep:
            sweep.sweep(now)

    def _send_heartbeat_if_due(self, now: float) -> None:
        interval = self._send_interval
        if interval and now - self._last_sent >= interval * 0.9 and not self._closing:
            self._write(self._heartbeat_bytes())

    def _closed_error(self) -> Exception:
        from nasdaq_protocols.soup.errors import SessionClosedError

        if self._transport is None and not self._closing:
            return SessionClosedError(f"{self.session_id}> not connected yet")
        reason = f" ({self.close_reason.value}: {self.close_detail})" if self.close_reason else ""
        return SessionClosedError(f"{self.session_id}> session is closed{reason}", self.close_reason)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark.

        A producer that awaits ``drain()`` after writing never buffers without bound.

        Raises:
            SessionClosedError: the session is closed.
        """
        if self._closing:
            raise self._closed_error()
        if not self._write_paused:
            return
        waiter = self._loop.create_future()  # type: ignore[union-attr]
        self._drain_waiters.append(waiter)
        await waiter
        if self._closing:
            raise self._closed_error()

    @property
    def write_buffer_size(self) -> int:
        """Bytes written but not yet handed to the kernel."""
        return self._transport.get_write_buffer_size() if self._transport else 0

    # ------------------------------------------------------------------ heartbeats and timeouts

    def _start_timers(
        self,
        send_interval: float | None,
        receive_timeout: float | None,
        timeout_reason: CloseReason = CloseReason.TIMEOUT,
    ) -> None:
        """(Re)arm the heartbeat sender and the silence detector."""
        self._cancel_timers()
        if self._closing:
            return
        loop = self._loop
        assert loop is not None
        self._send_interval = send_interval
        self._receive_timeout = receive_timeout
        self._receive_timeout_reason = timeout_reason
        self._receive_timeout_armed_at = loop.time()
        if send_interval:
            self._send_timer = loop.call_at(self._last_sent + send_interval, self._on_send_timer)
            self._sweep = heartbeat_sweep(loop)
            self._sweep.add(self, send_interval)
        if receive_timeout:
            self._receive_timer = loop.call_at(
                self._receive_timeout_since() + receive_timeout, self._on_receive_timer
            )

    def _receive_timeout_since(self) -> float:
        # A login timeout is a deadline counted from when it was armed (the connection):
        # heartbeats or Debug packets sent instead of a Login Request must not extend it.
        # Every other receive timeout counts silence, from the last byte received.
        if self._receive_timeout_reason is CloseReason.LOGIN_TIMEOUT:
            return self._receive_timeout_armed_at
        return self._last_received

    def _cancel_timers(self) -> None:
        if self._sweep is not None:
            self._sweep.discard(self)
            self._sweep = None
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        if self._receive_timer is not None:
            self._receive_timer.cancel()
            self._receive_timer = None

    def _on_send_timer(self) -> None:
        interval = self._send_interval
        if self._closing or not interval:
            return
        loop = self._loop
        assert loop is not None
        now = loop.time()
        # Fire a little early rather than late: the gap between packets must not exceed the interval.
        if now - self._last_sent >= interval * 0.9:
            self._write(self._heartbeat_bytes())
        self._send_timer = loop.call_at(self._last_sent + interval, self._on_send_timer)

    def _on_receive_timer(self) -> None:
        timeout = self._receive_timeout
        if self._closing or not timeout:
            return
        loop = self._loop
        assert loop is not None
        since = self._receive_timeout_since()
        now = loop.time()
        if self._read_pauses and self._receive_timeout_reason is not CloseReason.LOGIN_TIMEOUT:
            # We stopped reading (the application is behind): the peer's silence is ours.
            self._last_received = since = now
        silent_for = now - since
        if silent_for >= timeout and now - (since + timeout) > TIMER_LAG_TOLERANCE:
            # The timer fired late: the loop was busy, and the peer's bytes may be in the socket,
            # unread. Decide after the loop has polled the socket again: a timer due a moment
            # from now runs after the next poll, in asyncio's loop and in uvloop alike.
            self._receive_timer = loop.call_at(now + 0.001, self._on_receive_timer_confirmed)
            return
        self._decide_receive_timeout(now, since, silent_for, timeout)

    def _on_receive_timer_confirmed(self) -> None:
        timeout = self._receive_timeout
        if self._closing or not timeout:
            return
        loop = self._loop
        assert loop is not None
        since = self._receive_timeout_since()
        now = loop.time()
        if self._read_pauses and self._receive_timeout_reason is not CloseReason.LOGIN_TIMEOUT:
            self._last_received = since = now
        self._decide_receive_timeout(now, since, now - since, timeout)

    def _decide_receive_timeout(self, now: float, since: float, silent_for: float, timeout: float) -> None:
        loop = self._loop
        assert loop is not None
        if silent_for >= timeout:
            if self._receive_timeout_reason is CloseReason.LOGIN_TIMEOUT:
                detail = f"no Login Request within {timeout:g} s"
            else:
                detail = f"nothing received for {silent_for:.2f} s (timeout {timeout:g} s)"
            self.log.warning("%s> %s", self.session_id, detail)
            self.initiate_close(self._receive_timeout_reason, detail)
            return
        self._receive_timer = loop.call_at(since + timeout, self._on_receive_timer)

    # ------------------------------------------------------------------ delivery

    def start_dispatching(self) -> None:
        """Deliver messages to ``on_msg_coro`` from now on, starting with those already queued.

        Without ``on_msg_coro`` this does nothing: messages stay queued for :meth:`receive_msg`.
        """
        if self.on_msg_coro is None or self._dispatching:
            return
        self._dispatching = True
        queued = list(self._queue)
        self._queue.clear()
        if len(queued) >= QUEUE_HIGH_WATER:
            self._resume_reading()  # _enqueue paused reading at the mark; the queue is empty now
        self._deliver_many(queued)

    def _deliver(self, message: Any) -> None:
        """Hand one application message to the callback, or queue it."""
        self._deliver_many((message,))

    def _deliver_many(self, messages: Sequence[Any]) -> None:
        """Hand application messages, in order, to the callback (or queue them).

        Speed trick (measured: about 0.2 us instead of 0.4 us per message): the batch is run by
        one driver coroutine that ``await``s each callback, so a callback that returns without
        suspending costs no ``StopIteration``; only the driver, once per batch, raises one.
        """
        if not self._dispatching:
            for message in messages:
                self._enqueue(message)
            return
        if self._callback_broken:
            return
        if self._dispatch_task is not None:
            self._backlog.extend(messages)
            return
        self._run_driver(self._drive(messages))

    def _run_driver(self, driver: Coroutine[Any, Any, None]) -> None:
        """Run a delivery coroutine now; if a callback suspends, a task finishes it."""
        try:
            first = driver.send(None)
        except StopIteration:
            return
        except Exception as exc:
            self._callback_failed(exc)
            return
        # A callback suspended: a task finishes the batch, later messages wait in the backlog.
        self._pause_reading()
        self._dispatch_task = self._loop.create_task(  # type: ignore[union-attr]
            self._finish_dispatch(_Resume(driver, first)),
            name=f"dispatch:{self.session_id}",
        )

    async def _drive(self, messages: Sequence[Any]) -> None:
        callback = self.on_msg_coro
        assert callback is not None
        for message in messages:
            await callback(message)

    async def _finish_dispatch(self, suspended: _Resume) -> None:
        try:
            await suspended
            backlog = self._backlog
            while backlog:
                batch = list(backlog)
                backlog.clear()
                await self._drive(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._backlog.clear()
            self._callback_failed(exc)
        finally:
            self._dispatch_task = None
            self._resume_reading()

    def _callback_failed(self, exc: Exception) -> None:
        # The rest of the batch being decoded must not reach a callback that just failed.
        self._callback_broken = True
        self.log.error("%s> message callback raised %r; closing", self.session_id, exc, exc_info=exc)
        self.initiate_close(CloseReason.APPLICATION_ERROR, f"message callback raised {exc!r}")

    def _enqueue(self, message: Any) -> None:
        self._queue.append(message)
        if len(self._queue) == 1:
            self._wake_reader()
        elif len(self._queue) == QUEUE_HIGH_WATER:
            self._pause_reading()

    def _wake_reader(self) -> None:
        """Queue mode: something new to read (or the close): wake ``receive_msg`` and the hook."""
        waiter = self._queue_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.on_readable is not None:
            self.on_readable()

    def _end_of_stream(self) -> Exception:
        from nasdaq_protocols.soup.errors import EndOfStream

        reason = self.close_reason.value if self.close_reason else "closed"
        return EndOfStream(
            f"{self.session_id}> end of stream ({reason}: {self.close_detail})", self.close_reason
        )

    def is_drained(self) -> bool:
        """True once the session is closed and every message it received was handed out."""
        return not self.has_unread() and (self._closed or (self._closing and self._dispatch_task is None))

    def has_unread(self) -> bool:
        """Queue mode: True when :meth:`receive_msg` has received data to hand out (a message, or
        bytes not decoded yet) without waiting."""
        return bool(self._queue)

    async def receive_msg(self) -> Any:
        """Wait for the next application message (when the session has no ``on_msg_coro``).

        Returns:
            The next message, in arrival order.

        Raises:
            EndOfStream: the session is closed and every message it received was handed out
                (``close_reason`` says why it closed).
        """
        while True:
            message = self.receive_msg_nowait()
            if message is not None:
                return message
            if self._closed or (self._closing and self._dispatch_task is None):
                raise self._end_of_stream()
            if self._queue_waiter is None or self._queue_waiter.done():
                self._queue_waiter = asyncio.get_running_loop().create_future()
            await self._queue_waiter

    def receive_msg_nowait(self) -> Any | None:
        """The next queued application message, or ``None`` when there is none."""
        if not self._queue:
            return None
        message = self._queue.popleft()
        if len(self._queue) == QUEUE_LOW_WATER:
            self._resume_reading()
        return message

    def _pause_reading(self) -> None:
        self._read_pauses += 1
        if self._read_pauses == 1 and self._transport is not None and not self._closing:
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_pauses == 0:
            return
        self._read_pauses -= 1
        if self._read_pauses == 0 and self._transport is not None and not self._closing:
            self._last_received = self._loop.time()  # type: ignore[union-attr] # silence counts from now
            self._transport.resume_reading()

    # ------------------------------------------------------------------ closing

    def is_active(self) -> bool:
        """True until the session starts closing."""
        return not self._closing

    def is_closed(self) -> bool:
        """True once the session has started closing: nothing more can be sent."""
        return self._closing

    def _protocol_error(self, detail: str) -> None:
        self.log.error("%s> protocol error: %s", self.session_id, detail)
        self._on_protocol_error(detail)
        self.initiate_close(CloseReason.PROTOCOL_ERROR, detail)

    def _on_protocol_error(self, detail: str) -> None:
        """Hook: e.g. send the peer a Debug packet saying why, before the close."""

    def initiate_close(self, reason: CloseReason = CloseReason.LOCAL_CLOSE, detail: str = "") -> None:
        """Start closing: stop timers, close the transport (after flushing what was written).

        Messages already received are still delivered; then ``on_close_coro`` runs, once.
        Idempotent: only the first call's reason is kept.
        """
        if self._closing:
            return
        self._closing = True
        self.close_reason = reason
        self.close_detail = detail or reason.value
        self._cancel_timers()
        self.log.info("%s> closing: %s (%s)", self.session_id, reason.value, self.close_detail)
        if self._transport is not None:
            self._close_transport(reason)
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
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
        # close() first flushes what was written; a peer that never reads would keep the
        # socket and its buffer forever, so after a grace period the connection is aborted.
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

    def _on_closing(self) -> None:
        """Hook for subclasses: the session just started closing."""

    async def _finish_close(self) -> None:
        dispatch = self._dispatch_task
        if dispatch is not None and dispatch is not asyncio.current_task():
            # Messages already received are still delivered, but a callback that never returns
            # must not hold the close forever.
            done, _ = await asyncio.wait({dispatch}, timeout=CLOSE_GRACE_PERIOD)
            if not done:
                self.log.warning(
                    "%s> message callback still running after %g s: cancelled",
                    self.session_id,
                    CLOSE_GRACE_PERIOD,
                )
                dispatch.cancel()
                with contextlib.suppress(BaseException):
                    await dispatch
        self._closed = True
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
        if self._transport is not None and not self._closing:
            self._transport.abort()
        self.initiate_close(CloseReason.LOCAL_CLOSE, detail)

    async def close(self) -> None:
        """Close the session and wait until ``on_close_coro`` has run. Idempotent."""
        self.initiate_close(CloseReason.LOCAL_CLOSE)
        task = self._close_task
        if task is not None and task is not asyncio.current_task():
            await asyncio.shield(task)

    async def wait_closed(self) -> CloseReason:
        """Wait until the session is closed and ``on_close_coro`` has run; return why it closed."""
        if self._closed_waiter is not None:
            await asyncio.shield(self._closed_waiter)
        elif self._close_task is not None:
            await asyncio.shield(self._close_task)
        assert self.close_reason is not None
        return self.close_reason
