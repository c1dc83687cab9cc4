"""The errors of the SoupBinTCP package, in one place.

Hierarchy (every class below also derives from :class:`SoupError`)::

    SoupError
     +-- InvalidSoupMessage      (ValueError)        malformed bytes
     |    +-- PacketTooLarge                         a length field above the receiver's limit
     +-- ProtocolError                               a valid packet in a state that forbids it
     |    +-- RemoteProtocolError                    ... sent by the peer
     |    +-- LocalProtocolError                     ... that the application tried to send
     +-- LoginRejectedError      (ConnectionRefusedError)  Login Rejected, or no answer to a login
     +-- ConnectError            (ConnectionError)   TCP connect failed or timed out
     |    +-- ConnectRefusedError (ConnectionRefusedError)  nothing listens there
     +-- SessionClosedError      (ConnectionError)   sending on a closed session
     +-- EndOfStream             (common.EndOfQueue, EOFError)  receive on a closed, drained session

Where the seed API requires a builtin (``ConnectionRefusedError`` on a rejected login) the error
is a subclass of it that adds the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nasdaq_protocols.common import EndOfQueue
from nasdaq_protocols.common.errors import CloseReason

if TYPE_CHECKING:
    from .core import LoginRejectReason

__all__ = [
    "CloseReason",
    "ConnectError",
    "ConnectRefusedError",
    "EndOfStream",
    "InvalidSoupMessage",
    "LocalProtocolError",
    "LoginRejectedError",
    "PacketTooLarge",
    "ProtocolError",
    "RemoteProtocolError",
    "SessionClosedError",
    "SoupError",
]


class SoupError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidSoupMessage(SoupError, ValueError):
    """Raised when bytes are not a valid SoupBinTCP packet; the message says what was wrong."""


class PacketTooLarge(InvalidSoupMessage):
    """A packet's length field exceeds the receiver's ``max_packet_size`` (found from its header).

    Attributes:
        length: the length field's value.
        limit: the largest value accepted.
    """

    def __init__(self, message: str, length: int, limit: int) -> None:
        super().__init__(message)
        self.length = length
        self.limit = limit


class ProtocolError(SoupError):
    """A well-formed packet that the connection's state does not allow (e.g. a second Login Request).

    Attributes:
        remote: True when the peer broke the rules (:class:`RemoteProtocolError`), False when the
            local application tried to (:class:`LocalProtocolError`).
    """

    remote = True


class RemoteProtocolError(ProtocolError):
    """The peer sent a packet its state does not allow; the connection closes (``PROTOCOL_ERROR``)."""

    remote = True


class LocalProtocolError(ProtocolError):
    """The application tried to send a packet the connection's state does not allow (e.g.
    Unsequenced Data before the login was accepted); nothing was sent and nothing changed."""

    remote = False


class LoginRejectedError(SoupError, ConnectionRefusedError):
    """The login did not succeed.

    Attributes:
        reason: the server's :class:`LoginRejectReason`, or ``None`` when no answer came
            (the connection closed or the login timed out first).
        close_reason: why the session closed.
    """

    def __init__(
        self, message: str, reason: LoginRejectReason | None = None, close_reason: CloseReason | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.close_reason = close_reason

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "login rejected"


class ConnectError(SoupError, ConnectionError):
    """The TCP connection could not be made (refused, unreachable, or timed out)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "cannot connect"


class ConnectRefusedError(ConnectError, ConnectionRefusedError):
    """The server refused the TCP connection (nothing listens on that port): a
    ``ConnectionRefusedError``, as code written for nasdaq-protocols expects."""


class SessionClosedError(SoupError, ConnectionError):
    """The session is closed (or closing): nothing can be sent on it.

    Attributes:
        close_reason: why it closed, when known.
    """

    def __init__(self, message: str, close_reason: CloseReason | None = None) -> None:
        super().__init__(message)
        self.close_reason = close_reason

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "session closed"


class EndOfStream(SoupError, EndOfQueue):
    """No more messages: the session closed and every message it received was handed out.

    Attributes:
        close_reason: why the session closed.
    """

    def __init__(self, message: str, close_reason: CloseReason | None = None) -> None:
        super().__init__(message)
        self.close_reason = close_reason
