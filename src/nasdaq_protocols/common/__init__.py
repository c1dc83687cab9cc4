"""Protocol-neutral building blocks: serializable messages, session identity, the asyncio session base."""

from __future__ import annotations

from importlib import import_module

from .types import EndOfQueue, Serializable, SessionId, StateError

__all__ = ["AsyncSession", "EndOfQueue", "Serializable", "SessionId", "StateError"]


def __getattr__(name: str) -> object:
    # AsyncSession pulls in asyncio; keep ``import nasdaq_protocols.common`` light for the sans-IO core.
    if name == "AsyncSession":
        # import_module rather than ``from .session import``: the module is type-checked on its
        # own, and this stays valid for mypy whether or not it exists yet.
        return import_module(".session", __name__).AsyncSession
    raise AttributeError(name)
