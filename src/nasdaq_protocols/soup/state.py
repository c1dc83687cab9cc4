"""The SoupBinTCP connection state machine: one enum of states and one transition table.

Sans-IO: it knows packet types and states, nothing of sockets or time. The asyncio sessions look
up ``(role, state, packet type)`` here for every packet they receive; a pair that is not in the
table is a protocol error, which closes the connection. Keep every rule about *which packet may
arrive when* in this file.

The rules (SoupBinTCP 4.0/4.1 and PROTOCOL.md):

* A client's first packet is its Login Request; a server answers with Login Accepted or Login
  Rejected. Only one Login Request per connection.
* Sequenced and Unsequenced Data flow only after the login was accepted.
* Debug packets may come from either side at any time; heartbeats are consumed, never delivered.
* Logout Request (client) and End of Session (server) end the conversation.
"""

from __future__ import annotations

import enum

__all__ = ["TRANSITIONS", "Action", "Role", "State", "describe_violation", "next_step"]


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class State(enum.Enum):
    #: TCP is up, no Login Request yet (server), or not sent yet (client).
    CONNECTED = "connected"
    #: Client: the Login Request is sent, waiting for the answer.
    #: Server: the Login Request arrived and the application is deciding.
    LOGIN_PENDING = "login pending"
    #: Login accepted: data flows.
    LOGGED_IN = "logged in"
    #: The conversation is over (logout, end of session, rejection, error, close).
    CLOSED = "closed"


class Action(enum.Enum):
    """What the session does with a received packet."""

    DELIVER = "deliver"  # hand to the application (data, debug)
    IGNORE = "ignore"  # heartbeat: already counted as activity
    LOGIN = "login"  # server: ask the application to accept or reject
    ACCEPTED = "accepted"  # client: login accepted
    REJECTED = "rejected"  # client: login rejected, close
    LOGOUT = "logout"  # server: the client logged out, close
    END_OF_SESSION = "end of session"  # client: the server ended the session, close


C, S = Role.CLIENT, Role.SERVER
_CONNECTED, _PENDING, _IN, _CLOSED = State.CONNECTED, State.LOGIN_PENDING, State.LOGGED_IN, State.CLOSED

#: (role, state, packet type) -> (action, next state). Absent pairs are protocol errors.
TRANSITIONS: dict[tuple[Role, State, str], tuple[Action, State]] = {
    # ---- server receiving from a client
    (S, _CONNECTED, "L"): (Action.LOGIN, _PENDING),
    (S, _CONNECTED, "+"): (Action.DELIVER, _CONNECTED),
    (S, _CONNECTED, "R"): (Action.IGNORE, _CONNECTED),
    (S, _CONNECTED, "O"): (Action.LOGOUT, _CLOSED),
    # While the application decides on a login, later packets wait in order (the dispatcher
    # serialises them), so LOGIN_PENDING only sees what follows an undecided login: nothing.
    (S, _IN, "U"): (Action.DELIVER, _IN),
    (S, _IN, "+"): (Action.DELIVER, _IN),
    (S, _IN, "R"): (Action.IGNORE, _IN),
    (S, _IN, "O"): (Action.LOGOUT, _CLOSED),
    # ---- client receiving from a server
    (C, _PENDING, "A"): (Action.ACCEPTED, _IN),
    (C, _PENDING, "J"): (Action.REJECTED, _CLOSED),
    (C, _PENDING, "+"): (Action.DELIVER, _PENDING),
    (C, _PENDING, "H"): (Action.IGNORE, _PENDING),
    (C, _PENDING, "Z"): (Action.END_OF_SESSION, _CLOSED),
    (C, _IN, "S"): (Action.DELIVER, _IN),
    (C, _IN, "U"): (Action.DELIVER, _IN),
    (C, _IN, "+"): (Action.DELIVER, _IN),
    (C, _IN, "H"): (Action.IGNORE, _IN),
    (C, _IN, "Z"): (Action.END_OF_SESSION, _CLOSED),
}


def next_step(role: Role, state: State, packet_type: str) -> tuple[Action, State] | None:
    """The action and next state for a received packet, or ``None`` when it is a protocol error."""
    return TRANSITIONS.get((role, state, packet_type))


def describe_violation(role: Role, state: State, description: str) -> str:
    """A one-line reason for a packet the table does not allow."""
    peer = "server" if role is Role.CLIENT else "client"
    return f"unexpected {description} from the {peer} while {state.value}"
