"""What an asyncio session needs of a protocol core without I/O: the contract between the layers.

A protocol package (SoupBinTCP's ``nasdaq_protocols.soup.connection``) implements a connection
object that takes bytes and the time in and gives events and decisions out; the asyncio shell in
:mod:`.session` feeds it and acts on what it says. Only the contract lives here: no protocol, no
asyncio.
"""

from __future__ import annotations

import enum
from typing import Protocol

from .errors import CloseReason

__all__ = ["SessionCore", "TimerEvent"]


class TimerEvent(enum.Enum):
    """What a core's ``handle_timer`` asks of the shell."""

    #: Send a heartbeat: nothing was sent for the heartbeat interval.
    HEARTBEAT = "heartbeat"
    #: The connection just closed on the clock (the peer's silence, a login that never came);
    #: the core's ``close_reason`` and ``close_detail`` say which.
    TIMED_OUT = "timed out"


class SessionCore(Protocol):
    """A sans-IO connection, as :class:`~nasdaq_protocols.common.session.AsyncSession` drives it.

    Attributes:
        close_reason: why the conversation ended, once it did (``None`` before).
        close_detail: a one-line reason.
        last_received: when bytes last came in (the shell sets it when it resumes reading: the
            peer's silence counts from then).
    """

    close_reason: CloseReason | None
    close_detail: str
    last_received: float

    @property
    def unread_bytes(self) -> int:
        """Bytes received and not yet decoded."""

    @property
    def pending(self) -> bool:
        """True when ``next_events`` may have something to return."""

    def start(self, now: float) -> None:
        """The transport is up at ``now``."""

    def receive_data(self, data: bytes, now: float) -> None:
        """Keep received bytes; ``b""`` is the peer's end of stream."""

    def data_sent(self, now: float) -> None:
        """Bytes the core gave were written at ``now``."""

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` must next be called (``None``: no timer needed now)."""

    def heartbeat_due(self, now: float) -> bool:
        """True when a heartbeat should be sent now."""

    def handle_timer(self, now: float, *, reading: bool = True) -> TimerEvent | None:
        """Act on the clock (``reading`` False: the shell does not read, silence is its own)."""

    def close(self, reason: CloseReason, detail: str = "") -> None:
        """End the conversation (the first reason is kept)."""
