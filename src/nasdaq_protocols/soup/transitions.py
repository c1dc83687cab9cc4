"""Which packet may go which way in which state: the one table every SoupBinTCP rule lives in.

Keep every rule about which packet may arrive or be sent when in this file (as h11's ``_state``
does): :data:`TRANSITIONS` maps (role, state, direction, packet type) to the next state and, when
the conversation ends there, why. A key that is not in the table is a violation: the peer's when
received, ours when sent. :class:`~.connection.SoupConnection` applies it; docs/protocol.md
("State table") draws it. Also here: which received packets the application sees
(:data:`DELIVERED`) and which closes are graceful (:data:`GRACEFUL_CLOSES`).
"""

from __future__ import annotations

import enum
from typing import Final

from nasdaq_protocols.common.errors import CloseReason

__all__ = [
    "DELIVERED",
    "GRACEFUL_CLOSES",
    "TRANSITIONS",
    "CloseAction",
    "Direction",
    "Role",
    "State",
    "Transition",
]


class Role(enum.Enum):
    """Which end of the connection this is."""

    CLIENT = "client"
    SERVER = "server"


class State(enum.Enum):
    """Where the conversation is; the same states for both roles."""

    #: TCP is up; no Login Request was sent (client) or received (server) yet.
    CONNECTED = "connected"
    #: The Login Request is out (client) or in (server), the answer not yet.
    LOGIN_PENDING = "login pending"
    #: The login was accepted: data flows.
    LOGGED_IN = "logged in"
    #: Terminal: the conversation is over (:attr:`SoupConnection.close_reason` says why).
    CLOSED = "closed"


class Direction(enum.Enum):
    """Which way a packet goes, seen from this end."""

    SEND = "send"
    RECEIVE = "receive"


class CloseAction(enum.Enum):
    """What the transport should do once the conversation is over (see :data:`GRACEFUL_CLOSES`)."""

    #: Shut down the sending side after what was written, keep reading (and discarding) until the
    #: peer hangs up too, then close: the peer may still be reading what was sent last.
    HALF_CLOSE = "half-close"
    #: Close now (after flushing what was written): the peer broke the rules, went silent, or is gone.
    CLOSE = "close"


#: Closes that follow data the peer may still be reading, so the transport half-closes and
#: lingers: closing a socket the peer still writes to makes the kernel answer with a reset, and a
#: reset discards what the peer had not read yet (the end of the stream, End of Session, a Login
#: Rejected). Any other close cuts at once.
GRACEFUL_CLOSES: Final = frozenset(
    {
        CloseReason.END_OF_SESSION,
        CloseReason.LOGIN_REJECTED,
        CloseReason.LOGOUT,
        CloseReason.LOCAL_CLOSE,
        CloseReason.APPLICATION_ERROR,
    }
)

C, S = Role.CLIENT, Role.SERVER
OUT, IN = Direction.SEND, Direction.RECEIVE
_CONNECTED, _PENDING = State.CONNECTED, State.LOGIN_PENDING
_LOGGED_IN, _CLOSED = State.LOGGED_IN, State.CLOSED

Transition = tuple[State, "CloseReason | None"]


def _stay(state: State) -> Transition:
    return state, None


def _close(reason: CloseReason) -> Transition:
    return _CLOSED, reason


#: (role, state, direction, packet type) -> (next state, close reason when it closes).
#: A key that is not here is a violation: the peer's (received) or ours (sent).
TRANSITIONS: Final[dict[tuple[Role, State, Direction, str], Transition]] = {
    # ---------------------------------------------------------------- client sends
    (C, _CONNECTED, OUT, "L"): (_PENDING, None),
    (C, _CONNECTED, OUT, "+"): _stay(_CONNECTED),
    (C, _CONNECTED, OUT, "O"): _close(CloseReason.LOGOUT),
    (C, _PENDING, OUT, "+"): _stay(_PENDING),
    (C, _PENDING, OUT, "R"): _stay(_PENDING),
    (C, _PENDING, OUT, "O"): _close(CloseReason.LOGOUT),
    (C, _LOGGED_IN, OUT, "U"): _stay(_LOGGED_IN),
    (C, _LOGGED_IN, OUT, "+"): _stay(_LOGGED_IN),
    (C, _LOGGED_IN, OUT, "R"): _stay(_LOGGED_IN),
    (C, _LOGGED_IN, OUT, "O"): _close(CloseReason.LOGOUT),
    # ---------------------------------------------------------------- client receives
    (C, _CONNECTED, IN, "+"): _stay(_CONNECTED),
    (C, _PENDING, IN, "A"): (_LOGGED_IN, None),
    (C, _PENDING, IN, "J"): _close(CloseReason.LOGIN_REJECTED),
    (C, _PENDING, IN, "+"): _stay(_PENDING),
    (C, _PENDING, IN, "H"): _stay(_PENDING),
    (C, _PENDING, IN, "Z"): _close(CloseReason.END_OF_SESSION),
    (C, _LOGGED_IN, IN, "S"): _stay(_LOGGED_IN),
    (C, _LOGGED_IN, IN, "U"): _stay(_LOGGED_IN),
    (C, _LOGGED_IN, IN, "+"): _stay(_LOGGED_IN),
    (C, _LOGGED_IN, IN, "H"): _stay(_LOGGED_IN),
    (C, _LOGGED_IN, IN, "Z"): _close(CloseReason.END_OF_SESSION),
    # ---------------------------------------------------------------- server receives
    (S, _CONNECTED, IN, "L"): (_PENDING, None),
    (S, _CONNECTED, IN, "+"): _stay(_CONNECTED),
    (S, _CONNECTED, IN, "R"): _stay(_CONNECTED),
    (S, _CONNECTED, IN, "O"): _close(CloseReason.LOGOUT),
    # While the application decides on a login its session reads nothing more, so these only
    # matter to a caller that keeps reading: they are the packets that cannot change its answer.
    (S, _PENDING, IN, "+"): _stay(_PENDING),
    (S, _PENDING, IN, "R"): _stay(_PENDING),
    (S, _PENDING, IN, "O"): _close(CloseReason.LOGOUT),
    (S, _LOGGED_IN, IN, "U"): _stay(_LOGGED_IN),
    (S, _LOGGED_IN, IN, "+"): _stay(_LOGGED_IN),
    (S, _LOGGED_IN, IN, "R"): _stay(_LOGGED_IN),
    (S, _LOGGED_IN, IN, "O"): _close(CloseReason.LOGOUT),
    # ---------------------------------------------------------------- server sends
    (S, _CONNECTED, OUT, "+"): _stay(_CONNECTED),
    (S, _CONNECTED, OUT, "H"): _stay(_CONNECTED),
    (S, _CONNECTED, OUT, "Z"): _close(CloseReason.END_OF_SESSION),
    (S, _PENDING, OUT, "A"): (_LOGGED_IN, None),
    (S, _PENDING, OUT, "J"): _close(CloseReason.LOGIN_REJECTED),
    (S, _PENDING, OUT, "+"): _stay(_PENDING),
    (S, _PENDING, OUT, "H"): _stay(_PENDING),
    (S, _PENDING, OUT, "Z"): _close(CloseReason.END_OF_SESSION),
    (S, _LOGGED_IN, OUT, "S"): _stay(_LOGGED_IN),
    (S, _LOGGED_IN, OUT, "U"): _stay(_LOGGED_IN),
    (S, _LOGGED_IN, OUT, "+"): _stay(_LOGGED_IN),
    (S, _LOGGED_IN, OUT, "H"): _stay(_LOGGED_IN),
    (S, _LOGGED_IN, OUT, "Z"): _close(CloseReason.END_OF_SESSION),
}

#: The received packets the application is handed, by role; the others are the connection's own.
DELIVERED: Final[dict[Role, frozenset[str]]] = {
    C: frozenset("SU+"),
    S: frozenset("LU+"),
}
