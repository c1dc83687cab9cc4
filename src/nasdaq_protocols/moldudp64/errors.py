"""The errors of the MoldUDP64 package, in one place.

Hierarchy (every class below also derives from :class:`MoldError`)::

    MoldError
     +-- InvalidMoldPacket       (ValueError)     a malformed datagram (downstream or request)
     +-- MessageTooLarge         (ValueError)     a message no datagram can carry
     +-- RecoveryFailed          (ConnectionError) a gap that neither re-request nor SoupBinTCP
     |                                            recovery filled in time
     +-- SessionMismatch                           a datagram of another session than the one followed

A parser converts every low-level failure (``struct.error``, ``UnicodeDecodeError``,
``IndexError``) into :class:`InvalidMoldPacket` where the bytes enter; nothing else escapes.
"""

from __future__ import annotations

__all__ = ["InvalidMoldPacket", "MessageTooLarge", "MoldError", "RecoveryFailed", "SessionMismatch"]


class MoldError(Exception):
    """Base class of every error the MoldUDP64 package raises on purpose."""


class InvalidMoldPacket(MoldError, ValueError):
    """A datagram that is not a valid MoldUDP64 packet; the message says what is wrong and where.

    Attributes:
        datagram_size: the size of the offending datagram in bytes.
    """

    def __init__(self, reason: str, datagram_size: int = 0) -> None:
        super().__init__(reason)
        self.datagram_size = datagram_size


class MessageTooLarge(MoldError, ValueError):
    """A message longer than one datagram can carry (see :data:`~.codec.MAX_MESSAGE_SIZE`)."""


class RecoveryFailed(MoldError, ConnectionError):
    """Messages are missing and the recovery configured could not get them.

    Attributes:
        first: the first missing sequence number.
        count: how many are missing from ``first`` on (as far as the receiver knows).
    """

    def __init__(self, reason: str, first: int = 0, count: int = 0) -> None:
        super().__init__(reason)
        self.first = first
        self.count = count


class SessionMismatch(MoldError):
    """A packet of another session than the one the receiver follows."""
