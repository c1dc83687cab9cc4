"""What the three parts of an asyncio session share: its state, declared once.

:class:`~.session.AsyncSession` is written in three modules (:mod:`.session`: transport, writing
and closing; :mod:`.delivery`: events to the application; :mod:`.clock`: the timer and
heartbeats), each a class on this base. The attributes are set by
``AsyncSession._init_async_session``; the methods one part calls on another are declared here
for the type checker only.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from .callbacks import OnCloseCoro, OnMsgCoro
from .core import SessionCore
from .errors import CloseReason
from .types import SessionPhase

if TYPE_CHECKING:
    from .clock import HeartbeatSweep

__all__ = ["SessionBase"]


class SessionBase(asyncio.Protocol):
    """The state every part of an asyncio session reads (see the module docstring)."""

    session_id: Any
    on_msg_coro: OnMsgCoro | None
    on_close_coro: OnCloseCoro | None
    log: ClassVar[logging.Logger]
    close_reason: CloseReason | None
    close_detail: str
    on_readable: Callable[[], None] | None
    max_unread_bytes: int
    bytes_received: int
    bytes_sent: int
    bytes_discarded: int

    _conn: SessionCore
    _loop: asyncio.AbstractEventLoop | None
    _transport: asyncio.Transport | None
    _connection_lost: bool
    _lost_detail: str
    _phase: SessionPhase
    _draining: list[tuple[CloseReason, str]] | None
    _close_task: asyncio.Task[None] | None
    _closed_waiter: asyncio.Future[None] | None
    # delivery
    _dispatching: bool
    _queue: collections.deque[Any]
    _queue_waiter: asyncio.Future[None] | None
    _pump_task: asyncio.Task[None] | None
    _callback_broken: bool
    _holding: int
    _read_pauses: int
    _queue_paused: bool
    _pump_paused: bool
    # writing
    _out: list[bytes]
    _batch: list[Any]
    _batch_open: bool
    _flush_handle: asyncio.Handle | None
    _write_paused: bool
    _drain_waiters: list[asyncio.Future[None]]
    # the clock
    _timer: asyncio.TimerHandle | None
    _timer_due: float
    _timer_deferred: bool
    _sweep: HeartbeatSweep | None
    _heartbeat_check_at: float

    if TYPE_CHECKING:
        # Provided by AsyncSession or one of its parts.
        def initiate_close(
            self,
            reason: CloseReason | bool = CloseReason.LOCAL_CLOSE,
            detail: str = "",
            *,
            drain: bool = False,
        ) -> None: ...
        def _take_events(self, limit: int) -> list[Any]: ...
        def _send_heartbeat_now(self) -> None: ...
        def _flush(self) -> None: ...
        def _end_of_stream(self) -> Exception: ...
        def _why_closed(self) -> tuple[CloseReason, str]: ...
        def _heartbeat_check(self, now: float) -> None: ...
        def send_heartbeat_if_due(self, now: float) -> None: ...
        def _arm_timer(self) -> None: ...
        def _wake_reader(self) -> None: ...
        def _pause_reading(self) -> None: ...
        def _resume_reading(self) -> None: ...
