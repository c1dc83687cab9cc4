"""Base types shared by the protocol packages: what a wire message is, and who a session is.

Nothing here knows about SoupBinTCP, sockets or asyncio.
"""

from __future__ import annotations

import abc
from typing import Any, Generic, TypeVar

import attrs

__all__ = ["EndOfQueue", "Serializable", "SessionId", "StateError"]

T = TypeVar("T")


class Serializable(abc.ABC, Generic[T]):
    """Something that has a wire form: ``to_bytes()`` and ``from_bytes()``."""

    __slots__ = ()

    @abc.abstractmethod
    def to_bytes(self) -> tuple[int, bytes]:
        """Return ``(length, packet)``: the object's whole wire form and its length."""

    @classmethod
    @abc.abstractmethod
    def from_bytes(cls, bytes_: bytes) -> tuple[int, T]:
        """Decode one whole wire form; return ``(bytes consumed, object)``."""


class StateError(RuntimeError):
    """An operation was attempted in a state that does not allow it."""


class EndOfQueue(EOFError):
    """No more messages will arrive: the session is closed and its queue is drained."""


@attrs.define
class SessionId:
    """Where a session's peer is: ``host`` and ``port``, filled in once connected."""

    host: str = "nohost"
    port: int = 0

    def set_transport(self, transport: Any) -> None:
        """Take the peer's address from an asyncio transport (``peername``)."""
        peer = transport.get_extra_info("peername")
        if peer:
            self.host, self.port = str(peer[0]), int(peer[1])
