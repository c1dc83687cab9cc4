"""Why a session closed: one enum every session layer reports through.

Protocol-neutral; SoupBinTCP's own errors live in ``nasdaq_protocols.soup.errors``.
"""

from __future__ import annotations

import enum

__all__ = ["CloseReason"]


class CloseReason(enum.Enum):
    """Why a session closed, as reported by ``session.close_reason``."""

    #: The client sent a Logout Request (ours, or the peer's on a server).
    LOGOUT = "logout"
    #: The server sent End of Session (or this server ended it): no more messages will come.
    END_OF_SESSION = "end of session"
    #: The server rejected the login.
    LOGIN_REJECTED = "login rejected"
    #: The peer closed the connection (or it broke) without a logout or end of session.
    PEER_CLOSED = "peer closed"
    #: The application closed the session.
    LOCAL_CLOSE = "closed locally"
    #: Nothing was heard from the peer for the session's timeout.
    TIMEOUT = "timeout"
    #: The client sent no valid Login Request within the server's login timeout.
    LOGIN_TIMEOUT = "login timeout"
    #: The peer sent a malformed packet or one not allowed in the session's state.
    PROTOCOL_ERROR = "protocol error"
    #: An application callback raised an exception.
    APPLICATION_ERROR = "application error"
    #: A limit of the server was exceeded (lag, connection counts). A packet over the size limit
    #: is malformed for that server: ``PROTOCOL_ERROR``.
    LIMIT_EXCEEDED = "limit exceeded"
