"""The contract between a sans-IO protocol connection and the asyncio session that carries it.

A protocol package (SoupBinTCP's :class:`nasdaq_protocols.soup.connection.SoupConnection`)
implements a connection object that keeps *all* the state of a conversation and makes every
decision about it: it takes bytes and the time in, and gives events, bytes to write, deadlines and
how to close out. :class:`~.session.AsyncSession` drives any object that has the members of
:class:`SansIOConnection`, and keeps no protocol state of its own. Only the contract lives here: no
protocol, no asyncio.
"""

from __future__ import annotations

import enum
from typing import Any, Protocol

from .errors import CloseReason

__all__ = ["SansIOConnection", "TimerEvent"]


class TimerEvent(enum.Enum):
    """What a connection's ``handle_timer`` asks of the session."""

    #: Send a heartbeat: nothing was sent for the heartbeat interval.
    HEARTBEAT = "heartbeat"
    #: The connection just closed on the clock (the peer's silence, a login that never came);
    #: its ``close_reason`` and ``close_detail`` say which.
    TIMED_OUT = "timed out"


class SansIOConnection(Protocol):
    """A connection without I/O, as :class:`~.session.AsyncSession` drives it.

    Attributes:
        state: where the conversation is (an enum of the protocol's; compared by identity to see
            that it changed).
        close_reason: why the conversation ended, once it did (``None`` before).
        close_detail: a one-line reason.
        last_delivered: the number of the last numbered event handed to the application (the
            session advances it as it hands events out; see ``AsyncSession.NUMBERED_EVENT``).
        heartbeat_interval, peer_timeout: the intervals in use once logged in (seconds).
    """

    state: Any
    close_reason: CloseReason | None
    close_detail: str
    last_delivered: int
    heartbeat_interval: float | None
    peer_timeout: float | None

    @property
    def closed(self) -> bool:
        """True once the conversation is over."""

    @property
    def close_action(self) -> Any:
        """Once closed, how the transport closes: its ``name`` is ``HALF_CLOSE`` or ``CLOSE``."""

    @property
    def unread_bytes(self) -> int:
        """Bytes received and not yet decoded."""

    @property
    def pending(self) -> bool:
        """True when ``next_events`` may have something to do."""

    @property
    def bytes_to_send(self) -> int:
        """Bytes queued and not yet taken by ``data_to_send``."""

    def start(self, now: float) -> None:
        """The transport is up at ``now``."""

    def receive_data(self, data: bytes, now: float) -> None:
        """Keep received bytes."""

    def receive_eof(self, detail: str = "") -> None:
        """The peer's end of stream (``detail``: how the connection ended, if it broke)."""

    def next_events(self, limit: int) -> list[Any]:
        """Decode and return up to ``limit`` events for the application."""

    def data_to_send(self, now: float | None = None) -> bytes:
        """Everything queued, framed, in order (``b""``: nothing)."""

    def data_sent(self, now: float) -> None:
        """Bytes were written at ``now``."""

    def reading_resumed(self, now: float) -> None:
        """The session reads again after a pause: the peer's silence counts from ``now``."""

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` must next be called (``None``: no timer needed now)."""

    def heartbeat_due(self, now: float) -> bool:
        """True when a heartbeat should be sent now."""

    def handle_timer(self, now: float, *, reading: bool = True) -> TimerEvent | None:
        """Act on the clock (``reading`` False: the session does not read, silence is its own)."""

    def send_heartbeat(self) -> None:
        """Queue a heartbeat."""

    def close(self, reason: CloseReason, detail: str = "") -> None:
        """End the conversation (the first reason is kept)."""
