"""The clock of an asyncio session: the one timer, heartbeats from the receive path, the sweep.

Part of :class:`~.session.AsyncSession` (a mixin: its methods run on the session). The core says
when it needs the clock (``next_deadline``) and what is due (``handle_timer``); this part runs one
``TimerHandle`` at that deadline, and checks for due heartbeats from the receive path too, because
a loop busy with data runs timers late (see :class:`HeartbeatSweep`).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import cast

from .base import SessionBase
from .core import TimerEvent
from .errors import CloseReason
from .types import SessionPhase

_OPEN, _CLOSING, _CLOSED = SessionPhase.OPEN, SessionPhase.CLOSING, SessionPhase.CLOSED

__all__ = ["HEARTBEAT_CHECK_PERIOD", "TIMER_LAG_TOLERANCE", "Clock", "HeartbeatSweep", "heartbeat_sweep"]

#: The receive path checks for due heartbeats at most this often (a float comparison per read
#: otherwise): a heartbeat goes out at most this much later than due while the loop is busy.
HEARTBEAT_CHECK_PERIOD = 0.05
#: A timer that fires this many seconds late was held up by a busy event loop: the peer's bytes
#: may be waiting in the socket, unread. A timeout is then decided after the loop has read.
TIMER_LAG_TOLERANCE = 0.05


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
        self.sessions: dict[int, SessionBase] = {}
        self.period = float("inf")
        self.next_sweep = 0.0

    def add(self, session: SessionBase, interval: float) -> None:
        self.sessions[id(session)] = session
        self.period = min(self.period, interval / 4)

    def discard(self, session: SessionBase) -> None:
        self.sessions.pop(id(session), None)

    def sweep(self, now: float) -> None:
        self.next_sweep = now + self.period
        for session in list(self.sessions.values()):
            session.send_heartbeat_if_due(now)


_SWEEPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, HeartbeatSweep] = weakref.WeakKeyDictionary()


def heartbeat_sweep(loop: asyncio.AbstractEventLoop) -> HeartbeatSweep:
    """The :class:`HeartbeatSweep` of ``loop``."""
    sweep = _SWEEPS.get(loop)
    if sweep is None:
        sweep = _SWEEPS[loop] = HeartbeatSweep()
    return sweep


class Clock(SessionBase):
    """The clock part of :class:`~.session.AsyncSession`."""

    def _arm_timer(self) -> None:
        """(Re)schedule the one timer at the core's next deadline (call after a state change)."""
        if self._phase is not _OPEN:
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
        if self._phase is not _OPEN:
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
        if self._conn.heartbeat_due(now) and self._phase is _OPEN:
            self._send_heartbeat_now()
        sweep = self._sweep
        if sweep is not None and now >= sweep.next_sweep:
            sweep.sweep(now)

    def send_heartbeat_if_due(self, now: float) -> None:
        """Send a heartbeat now if the core says one is due (``now`` on the loop's clock)."""
        if self._phase is _OPEN and self._transport is not None and self._conn.heartbeat_due(now):
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
