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
     |    +-- NotConnectedError                      a subscriber's send while it is disconnected
     +-- EndOfStream             (common.EndOfQueue, EOFError)  receive on a closed, drained session
     +-- StoreError              (OSError)           a store refused, or its disk or JetStream failed
     +-- SessionChangedError                         a subscriber's server now serves another session
     +-- SequenceGapError                            a subscriber's server resumed past the next message
     +-- SubscriberGaveUp        (ConnectionError)   a subscriber's retries ran out
     +-- UsersFileError          (ValueError)        a users file (``--users``) that cannot be read as one

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
    "MetricsUnavailableError",
    "NotConnectedError",
    "PacketTooLarge",
    "ProtocolError",
    "RemoteProtocolError",
    "SequenceGapError",
    "SessionChangedError",
    "SessionClosedError",
    "SoupError",
    "StoreError",
    "SubscriberGaveUp",
    "UsersFileError",
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


class StoreError(SoupError, OSError):
    """A store cannot do what was asked: it is closed or read-only, the journal is locked by another
    writer or is not a journal, the operating system refused a read or write, or (JetStream) the
    stream cannot carry a SoupBinTCP stream or NATS did not answer.

    An :class:`OSError` (and a :class:`SoupError`), so that code handling I/O failures catches it;
    when an OS call failed, ``errno`` and ``filename`` are those of that failure and the original
    exception is chained as ``__cause__``.
    """


class NotConnectedError(SessionClosedError):
    """A subscriber's ``send_unseq_data`` while disconnected: unsequenced data is never queued."""


class SessionChangedError(SoupError):
    """The server now serves a different session than the one the subscriber followed."""


class SequenceGapError(SoupError):
    """The server resumed after the next expected sequence number: messages would be missing."""


class SubscriberGaveUp(SoupError, ConnectionError):
    """A subscriber's reconnecting failed ``max_attempts`` times in a row, or for longer than
    ``max_downtime``; the last failure is chained as ``__cause__``."""


class MetricsUnavailableError(SoupError, ImportError):
    """``prometheus_client`` (the ``metrics`` extra) is not installed; the message says how to get it."""


class UsersFileError(SoupError, ValueError):
    """A users file (``SoupServer(users=UsersFile(path))``, ``soup serve --users``) is not valid:
    the message names the file and the line, and never quotes a password hash.

    Attributes:
        path: the file.
        line: the line number (1-based), or ``None`` for the file as a whole.
    """

    def __init__(self, message: str, path: str, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
