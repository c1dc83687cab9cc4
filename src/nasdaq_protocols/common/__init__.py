"""Protocol-neutral building blocks: serializable messages, session identity, the asyncio session base."""

from __future__ import annotations

from .types import EndOfQueue, Serializable, SessionId, StateError

__all__ = ["AsyncSession", "EndOfQueue", "Serializable", "SessionId", "StateError"]


def __getattr__(name: str) -> object:
    # AsyncSession pulls in asyncio; keep ``import nasdaq_protocols.common`` light for the sans-IO core.
    if name == "AsyncSession":
        from .session import AsyncSession

        return AsyncSession
    raise AttributeError(name)
