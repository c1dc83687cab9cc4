"""Heartbeats from a busy event loop: the sweep every session of a loop shares, and its timing.

:class:`~.session.AsyncSession` runs one timer at its connection's deadline; a loop busy with data
runs timers late, so each session also checks for due heartbeats from its receive path, and the
:class:`HeartbeatSweep` of the loop lets any session's receive path send the heartbeats due on all
of them.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Protocol

__all__ = ["HEARTBEAT_CHECK_PERIOD", "TIMER_LAG_TOLERANCE", "HeartbeatSweep", "heartbeat_sweep"]

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
