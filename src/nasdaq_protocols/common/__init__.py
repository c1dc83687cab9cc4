"""Protocol-neutral building blocks: serializable messages, session identity, the asyncio session base,
and the asyncio helpers (serve, stop, fast loop) that nasdaq-protocols code imports from here.

Importing this package does not import asyncio: ``AsyncSession``, ``start_server``, ``stop_task``
and ``use_fast_loop`` are loaded on first use, so the sans-IO core stays free of an event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .callbacks import OnCloseCoro, OnMsgCoro
from .lazy import lazy_attributes
from .types import EndOfQueue, Serializable, SessionId, StateError

if TYPE_CHECKING:
    from .session import AsyncSession
    from .utils import Stoppable, start_server, stop_task, use_fast_loop

__all__ = [
    "AsyncSession",
    "EndOfQueue",
    "OnCloseCoro",
    "OnMsgCoro",
    "Serializable",
    "SessionId",
    "StateError",
    "Stoppable",
    "start_server",
    "stop_task",
    "use_fast_loop",
]

# name -> the submodule that defines it, imported on first access (they import asyncio).
_LAZY = {
    "AsyncSession": ".session",
    "Stoppable": ".utils",
    "start_server": ".utils",
    "stop_task": ".utils",
    "use_fast_loop": ".utils",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
