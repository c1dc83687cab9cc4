"""Protocol-neutral building blocks: serializable messages, session identity, the asyncio session base,
and the asyncio helpers (serve, stop, fast loop) that nasdaq-protocols code imports from here.

Importing this package does not import asyncio: ``AsyncSession``, ``start_server``, ``stop_task``
and ``use_fast_loop`` are loaded on first use, so the sans-IO core stays free of an event loop.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .callbacks import OnCloseCoro, OnMsgCoro
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


def __getattr__(name: str) -> object:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
