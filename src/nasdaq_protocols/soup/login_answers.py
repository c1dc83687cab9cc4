"""What a login that failed to complete really met, told from the session it left behind.

What belongs here: reading a client session whose :func:`~.session.connect_async` login raised
:class:`LoginRejectedError` without a reason, for the two cases the :class:`~.subscriber.Subscriber`
treats apart: a server that accepted the login and ended the session at once, with nothing left
to send (End of Session, not a failure: :func:`ended_at_login`), and a peer whose answer cannot
start a SoupBinTCP packet, an HTTP server say (:func:`not_soupbintcp`, so that the commands can
say in words that it is not a SoupBinTCP server).
"""

from __future__ import annotations

from nasdaq_protocols.common.errors import CloseReason

from .client_session import SoupClientSession
from .core import LoginAccepted
from .errors import LoginRejectedError

__all__ = ["SERVER_TYPES", "EndedAtLogin", "ended_at_login", "not_soupbintcp"]

#: The packet types a server may send while a login waits for its answer (and just after it).
SERVER_TYPES = b"+AJHSUZ"


class EndedAtLogin(Exception):
    """The server accepted the login and ended the session at once, with nothing to send.

    Attributes:
        accepted: its Login Accepted.
    """

    def __init__(self, accepted: LoginAccepted) -> None:
        super().__init__(f"session {accepted.session_id!r} ended at the login")
        self.accepted = accepted


def ended_at_login(exc: LoginRejectedError, session: SoupClientSession | None) -> LoginAccepted | None:
    """The Login Accepted of a login answered with End of Session and nothing between, else ``None``.

    A server whose session ended answers a login for what it no longer has with Login Accepted
    and End of Session at once; when one read holds both, the session layer reports the login as
    unanswered (``exc``). Nothing came between them (the next sequence expected is the accepted
    one), so nothing is lost in calling it the end.
    """
    if exc.close_reason is not CloseReason.END_OF_SESSION or session is None:
        return None
    connection = session.connection
    accepted = connection.login_accepted
    return accepted if accepted is not None and connection.next_expected == accepted.sequence else None


def not_soupbintcp(exc: LoginRejectedError, session: SoupClientSession | None) -> LoginRejectedError:
    """``exc``, or, when the peer answered the login with bytes that cannot start a SoupBinTCP
    packet (an HTTP server's ``HTTP/1.1 400``, say), an error that says it is not a SoupBinTCP
    server and what it sent."""
    if exc.reason is not None or session is None:
        return exc
    held = session.connection.peek(16)
    if len(held) < 3 or ((held[0] << 8 | held[1]) and held[2] in SERVER_TYPES):
        return exc
    return LoginRejectedError(
        f"{exc}: this is not a SoupBinTCP server (its answer began with {held!r})", None, exc.close_reason
    )
