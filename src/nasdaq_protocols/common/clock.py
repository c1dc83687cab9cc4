"""The clock of an asyncio session: one timer at its connection's deadline, and heartbeats from
a busy event loop.

:class:`SessionClock` (held by each :class:`~.session.AsyncSession`) runs the one timer its
connection asks for and does what ``handle_timer`` says. A loop busy with data runs timers late,
so each session also checks for due heartbeats from its receive path, and the
:class:`HeartbeatSweep` of the loop lets any session's receive path send the heartbeats due on all
of them. The connection decides; this module only keeps time.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, Protocol

from .sansio import TimerEvent

__all__ = [
    "HEARTBEAT_CHECK_PERIOD",
    "TIMER_LAG_TOLERANCE",
    "HeartbeatSweep",
    "SessionClock",
    "heartbeat_sweep",
]

#: The receive path checks for due heartbeats at most this often (a float comparison per read
#: otherwise): a heartbeat goes out at most this much later than due while the loop is busy.
HEARTBEAT_CHECK_PERIOD = 0.05
#: A timer that fires this many seconds late was held up by a busy event loop: the peer's bytes
#: may be waiting in the socket, unread. A timeout is then decided after the loop has read.
TIMER_LAG_TOLERANCE = 0.05


class Swept(Protocol):
    """What the sweep needs of a session."""

    def send_heartbeat_if_due(self, now: float) -> None:
        """Send a heartbeat if one is due at ``now``."""


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
        self.sessions: dict[int, Swept] = {}
        self.period = float("inf")
        self.next_sweep = 0.0

    def add(self, session: Swept, interval: float) -> None:
        self.sessions[id(session)] = session
        self.period = min(self.period, interval / 4)

    def discard(self, session: Swept) -> None:
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


class Ticked(Protocol):
    """What a :class:`SessionClock` needs of its session."""

    session_id: object

    def send_heartbeat_if_due(self, now: float) -> None:
        """Send (and write) a heartbeat if the connection says one is due at ``now``."""

    def timed_out(self) -> None:
        """The connection just closed on the clock: close the session."""

    @property
    def reading(self) -> bool:
        """False while the session does not read (its application is behind)."""


class SessionClock:
    """The one timer of a session, at its connection's next deadline, and the heartbeat checks
    of its receive path (:meth:`check`), which send the loop's due heartbeats too.

    Args:
        session: the session (see :class:`Ticked`).
        connection: its sans-IO connection (``next_deadline``, ``handle_timer``, ``heartbeat_due``,
            ``heartbeat_interval``, ``close_detail``).
        loop: the event loop the session runs on.
    """

    __slots__ = ("check_at", "connection", "deferred", "due", "log", "loop", "session", "sweep", "timer")

    def __init__(self, session: Ticked, connection: Any, loop: asyncio.AbstractEventLoop, log: Any) -> None:
        self.session = session
        self.connection = connection
        self.loop = loop
        self.log = log
        self.timer: asyncio.TimerHandle | None = None
        self.due = 0.0
        self.deferred = False
        self.sweep: HeartbeatSweep | None = None
        #: The receive path looks at the clock from then on (:meth:`check`).
        self.check_at = 0.0

    def arm(self) -> None:
        """(Re)schedule the timer at the connection's next deadline (after a state change)."""
        deadline = self.connection.next_deadline()
        timer = self.timer
        if deadline is None:
            if timer is not None:
                timer.cancel()
                self.timer = None
            return
        if timer is not None:
            if self.due <= deadline:
                return  # it fires first and reschedules
            timer.cancel()
        self.due = deadline
        self.timer = self.loop.call_at(deadline, self._fire)
        interval = self.connection.heartbeat_interval
        if self.sweep is None and interval:
            self.sweep = heartbeat_sweep(self.loop)
            self.sweep.add(self.session, interval)

    def restart(self, heartbeat_interval: float) -> None:
        """The intervals changed: schedule again from scratch."""
        if self.sweep is not None:
            self.sweep.add(self.session, heartbeat_interval)
        self.cancel_timer()
        self.arm()

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def stop(self) -> None:
        """The session is closing: no timer, out of the sweep."""
        self.cancel_timer()
        if self.sweep is not None:
            self.sweep.discard(self.session)
            self.sweep = None

    def _fire(self) -> None:
        self.timer = None
        now = self.loop.time()
        if now - self.due > TIMER_LAG_TOLERANCE and not self.deferred:
            # The timer fired late: the loop was busy, and the peer's bytes may be in the socket,
            # unread. Decide after the loop has polled the socket again: a timer due a moment
            # from now runs after the next poll, in asyncio's loop and in uvloop alike.
            self.deferred = True
            self.due = now + 0.001
            self.timer = self.loop.call_at(self.due, self._fire)
            return
        self.deferred = False
        event = self.connection.handle_timer(now, reading=self.session.reading)
        if event is TimerEvent.TIMED_OUT:
            self.log.warning("%s> %s", self.session.session_id, self.connection.close_detail)
            self.session.timed_out()
            return
        if event is TimerEvent.HEARTBEAT:
            self.session.send_heartbeat_if_due(now)
        self.arm()

    def check(self, now: float) -> None:
        """From the receive path (at most every :data:`HEARTBEAT_CHECK_PERIOD` seconds): send the
        heartbeats due now, this session's and the loop's (see :class:`HeartbeatSweep`)."""
        self.check_at = now + HEARTBEAT_CHECK_PERIOD
        self.session.send_heartbeat_if_due(now)
        sweep = self.sweep
        if sweep is not None and now >= sweep.next_sweep:
            sweep.sweep(now)
