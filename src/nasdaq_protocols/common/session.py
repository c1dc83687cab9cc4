"""The asyncio shell every session stands on: transport, delivery, writes, timers, closing.

``AsyncSession`` is an ``asyncio.Protocol`` that holds a sans-IO protocol core (see
:class:`~.core.SessionCore`) by composition. It feeds received bytes to the core, hands the
events the core decodes to the application, writes what the core gives, runs the one timer the
core asks for, and closes exactly once, telling the application why. It knows nothing of any
wire format: a protocol subclass says which events are the application's (``_take_events``) and
how a heartbeat is sent (``_send_heartbeat_now``).

The class is in three modules: this one (the transport, writing, closing), :mod:`.delivery`
(events to the callback or to ``receive_msg``) and :mod:`.clock` (the timer and heartbeats).

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
import logging
from collections.abc import Callable
from typing import Any, ClassVar, cast

from .callbacks import OnCloseCoro, OnMsgCoro
from .clock import Clock, HeartbeatSweep
from .core import SessionCore
from .delivery import MAX_UNREAD_BYTES, PUMP_MAX_UNREAD_BYTES, Delivery
from .errors import CloseReason
from .types import EndOfQueue, SessionId, SessionPhase, StateError

__all__ = [
    "CLOSE_LINGER",
    "GRACEFUL_CLOSES",
    "MAX_UNREAD_BYTES",
    "AsyncSession",
    "HeartbeatSweep",
    "OnCloseCoro",
    "OnMsgCoro",
    "SessionId",
]

_log = logging.getLogger(__name__)

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
_OPEN, _CLOSING, _CLOSED = SessionPhase.OPEN, SessionPhase.CLOSING, SessionPhase.CLOSED


class AsyncSession(Delivery, Clock):
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
        self._phase = _OPEN
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
        self._batch: list[Any] = []  # payloads the core frames at the next flush (_frame_batch)
        self._batch_open = False  # a subclass opens it once its fast path may be used
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
        #: Bytes written while the connection was already lost (they could not be sent).
        self.bytes_discarded = 0

    # ------------------------------------------------------------------ for subclasses

    def _take_events(self, limit: int) -> list[Any]:
        """The next application events (at most ``limit``); ``[]`` when none is ready."""
        raise NotImplementedError

    def _send_heartbeat_now(self) -> None:
        """Send one heartbeat to the peer."""
        raise NotImplementedError

    def _closed_error(self) -> Exception:
        """The exception for a send on a session that is not open."""
        if self._transport is None and self._phase is _OPEN:
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
        if self._out or self._batch:
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
        if self._phase is not _OPEN:
            return
        if exc is not None:
            self._lost_detail = f"connection lost: {exc}"
        # What was received before the end is still handed out; the core decides from it
        # whether the conversation ended (an End of Session in it) or the peer just hung up.
        self._conn.receive_data(b"", self._loop.time() if self._loop else 0.0)
        if self._dispatching:
            if self._pump_task is None and not self._callback_broken:
                self._run_pump()  # closes the session when it is done (see _pump_done)
            if self._pump_task is not None or self._phase is not _OPEN:
                return
        else:
            self._decode_into_queue()
        if self._phase is _OPEN:
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
        if self._phase is not _OPEN or self._transport is None:
            raise self._closed_error()
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._scheduled_flush)  # type: ignore[union-attr]
            self._transport.write(data)
            self.bytes_sent += len(data)
            self._conn.data_sent(self._loop.time())  # type: ignore[union-attr]
        else:
            if self._batch:
                self._drain_batch()  # what was batched before this goes before it
            self._out.append(data)

    def _frame_batch(self, batch: list[Any]) -> bytes:
        """The bytes of the payloads a subclass's fast path batched (see ``_batch``)."""
        raise NotImplementedError

    def _drain_batch(self) -> None:
        self._out.append(self._frame_batch(self._batch))
        self._batch.clear()

    def _write_now(self, data: bytes) -> None:
        """Write bytes at once (after anything queued): for a producer that checks flow control
        after each write (a replay)."""
        self._write(data)
        self._flush()

    def _scheduled_flush(self) -> None:
        self._flush_handle = None
        self._flush()

    def _flush(self) -> None:
        if self._batch:
            self._drain_batch()
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        transport = self._transport
        if transport is None or self._connection_lost:
            self.bytes_discarded += len(data)
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
        if self._phase is not _OPEN or self._transport is None:
            raise self._closed_error()
        self._flush()
        if not self._write_paused:
            return
        waiter = self._loop.create_future()  # type: ignore[union-attr]
        self._drain_waiters.append(waiter)
        await waiter
        if self._phase is not _OPEN:
            raise self._closed_error()

    @property
    def write_paused(self) -> bool:
        """True while the transport's write buffer is above its high-water mark."""
        return self._write_paused

    @property
    def write_buffer_size(self) -> int:
        """Bytes written but not yet handed to the kernel."""
        queued = sum(map(len, self._out)) + sum(3 + len(payload) for payload in self._batch)
        return queued + (self._transport.get_write_buffer_size() if self._transport else 0)

    # ------------------------------------------------------------------ closing

    def is_active(self) -> bool:
        """True until the session starts closing."""
        return self._phase is _OPEN

    def is_closed(self) -> bool:
        """True once the session has started closing: nothing more can be sent."""
        return self._phase is not _OPEN

    def is_finished(self) -> bool:
        """True once the session is closed and ``on_close_coro`` has run."""
        return self._phase is _CLOSED and (self._close_task is None or self._close_task.done())

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
        if self._phase is not _OPEN:
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
        self._phase = _CLOSING
        self._batch_open = False
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
        if self._batch:
            self._drain_batch()
        out = self._out
        if out and not self._connection_lost:
            transport.write(b"".join(out))
            self.bytes_sent += sum(map(len, out))
        elif out:
            self.bytes_discarded += sum(map(len, out))
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
        self._phase = _CLOSED
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
        if self._transport is not None and self._phase is _OPEN:
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
