"""The SoupBinTCP connection without I/O: one state machine for both roles and both directions.

:class:`SoupConnection` is the protocol core every session stands on, in the manner of h11's
``Connection`` and websockets' ``Protocol``. It knows bytes, packets, states, sequence numbers and
the time it is told; it knows nothing of sockets, tasks or event loops:

* **bytes in, events out**: :meth:`~SoupConnection.receive_data` keeps what arrived (``b""`` is
  the peer's end of stream); :meth:`~SoupConnection.next_events` decodes and returns the packets
  the application must see, checked against the transition table, heartbeats consumed;
* **calls in, bytes out**: :meth:`~SoupConnection.send` and the lean
  :meth:`~SoupConnection.send_sequenced` / :meth:`~SoupConnection.send_unsequenced` check the
  table and return the bytes to write;
* **time in, decisions out**: :meth:`~SoupConnection.next_deadline` says when it needs the clock;
  :meth:`~SoupConnection.handle_timer` says whether a heartbeat is due or closes the connection
  for silence or a login that never came.

Every rule about which packet may go which way in which state lives in :data:`TRANSITIONS`
(SoupBinTCP 4.0/4.1 and PROTOCOL.md): a (role, state, direction, packet type) that is not there
is a violation. A violation by the peer raises :class:`RemoteProtocolError` (malformed bytes
raise :class:`InvalidSoupMessage`) from :meth:`~SoupConnection.next_events`; a send the state
does not allow raises :class:`LocalProtocolError` and changes nothing. Every conversation ends in
the terminal state :attr:`State.CLOSED`, with :attr:`~SoupConnection.close_reason` saying why.

The connection owns the sequence numbering: a client numbers the Sequenced Data it receives (a
Login Accepted names the next one), a server those it sends.
"""

from __future__ import annotations

import enum
from typing import Final, NoReturn

from nasdaq_protocols.common.core import TimerEvent
from nasdaq_protocols.common.errors import CloseReason

from .core import (
    Debug,
    EndOfSession,
    InvalidSoupMessage,
    LoginAccepted,
    LoginRejected,
    LoginRequest,
    LogoutRequest,
    SequencedData,
    SoupMessage,
)
from .errors import LocalProtocolError, RemoteProtocolError
from .framing import (
    HEADER_CACHE_SIZE,
    MAX_PACKET_SIZE,
    SEQUENCED_HEADERS,
    UNSEQUENCED_HEADERS,
    SoupDecoder,
    packet_header,
)

__all__ = [
    "TRANSITIONS",
    "Direction",
    "Role",
    "SoupConnection",
    "State",
    "TimerEvent",
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

_PEER = {C: "server", S: "client"}
_HEARTBEAT_TYPES = frozenset({"H", "R"})
_SEQUENCED = SequencedData


class SoupConnection:
    """One end of a SoupBinTCP connection, without I/O (see the module docstring).

    Args:
        role: :attr:`Role.CLIENT` or :attr:`Role.SERVER`.
        max_packet_size: the largest packet accepted from the peer (its length field).
        heartbeat_interval: seconds of our silence after which a heartbeat is due once logged in
            (``None``: never).
        peer_timeout: seconds of the peer's silence after which the connection closes once logged
            in (``CloseReason.TIMEOUT``; ``None``: never).
        login_timeout: server: seconds from :meth:`start` for the Login Request to arrive
            (``CloseReason.LOGIN_TIMEOUT``; ``None``: forever).

    Attributes:
        role, state, close_reason, close_detail: as named; ``close_detail`` is a one-line reason.
        login_request, login_accepted: the login as it went, once known.
        last_sent, last_received: when bytes last went out (told by :meth:`data_sent`) or came in.
    """

    def __init__(
        self,
        role: Role,
        *,
        max_packet_size: int = MAX_PACKET_SIZE,
        heartbeat_interval: float | None = None,
        peer_timeout: float | None = None,
        login_timeout: float | None = None,
    ) -> None:
        self.role = role
        self.state = State.CONNECTED
        self.close_reason: CloseReason | None = None
        self.close_detail = ""
        self.heartbeat_interval = heartbeat_interval
        self.peer_timeout = peer_timeout
        self.login_timeout = login_timeout
        self.login_request: LoginRequest | None = None
        self.login_accepted: LoginAccepted | None = None
        self.started_at = 0.0
        self.last_sent = 0.0
        self.last_received = 0.0
        self._decoder = SoupDecoder(max_packet_size)
        self._sent = 0  # server: number of the last Sequenced Data sent
        self._held: SoupMessage | None = None  # decoded, ends the next batch (see next_events)
        self._failure: InvalidSoupMessage | RemoteProtocolError | None = None
        self._eof = False
        # Receiving has its own track: after a local close, what was received before it is still
        # decoded (and handed out) in the state the conversation was in, until a packet that ends
        # it, the peer's end of stream, or a violation.
        self._receive_state = State.CONNECTED
        self._receiving = True
        self._is_client = role is Role.CLIENT

    def __repr__(self) -> str:
        return f"<SoupConnection {self.role.value} {self.state.value} sequence={self.sequence}>"

    # ------------------------------------------------------------------ numbering

    @property
    def sequence(self) -> int:
        """Number of the last Sequenced Data received (client) or sent (server); 0 before any."""
        return self._decoder.sequence if self._is_client else self._sent

    @sequence.setter
    def sequence(self, value: int) -> None:
        if self._is_client:
            self._decoder.sequence = value
        else:
            self._sent = value

    @property
    def next_sequence(self) -> int:
        """Number of the next Sequenced Data to receive (client) or send (server)."""
        return self.sequence + 1

    @property
    def packets_received(self) -> int:
        """Packets decoded so far, heartbeats included."""
        return self._decoder.messages_decoded

    @property
    def sequenced_bytes(self) -> int:
        """Payload bytes of the Sequenced Data decoded so far."""
        return self._decoder.sequenced_bytes

    @property
    def max_packet_size(self) -> int:
        """The largest packet accepted from the peer."""
        return self._decoder.max_packet_size

    # ------------------------------------------------------------------ time

    def start(self, now: float) -> None:
        """The transport is up: silence and the login timeout count from ``now``."""
        self.started_at = self.last_sent = self.last_received = now

    def data_sent(self, now: float) -> None:
        """Bytes this connection gave were written at ``now`` (heartbeats count from there)."""
        self.last_sent = now

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must next be called (``None``: no timer is needed now)."""
        state = self.state
        if state is State.LOGGED_IN:
            deadline: float | None = None
            if self.heartbeat_interval:
                deadline = self.last_sent + self.heartbeat_interval
            if self.peer_timeout:
                silence = self.last_received + self.peer_timeout
                deadline = silence if deadline is None else min(deadline, silence)
            return deadline
        if state is State.CONNECTED and not self._is_client and self.login_timeout:
            return self.started_at + self.login_timeout
        return None

    def heartbeat_due(self, now: float) -> bool:
        """True when nothing was sent for (nearly) the heartbeat interval while logged in.

        Nine tenths of it: firing a little early keeps the gap between two packets within the
        interval even when the caller checks late.
        """
        interval = self.heartbeat_interval
        return bool(interval) and self.state is State.LOGGED_IN and now - self.last_sent >= interval * 0.9  # type: ignore[operator]

    def handle_timer(self, now: float, *, reading: bool = True) -> TimerEvent | None:
        """Act on the clock: a heartbeat due, or a timeout that closes the connection.

        Args:
            now: the current time, on the clock given to :meth:`start`.
            reading: False while the caller does not read (its application is behind): the peer's
                silence is then ours, and does not count.

        Returns:
            :attr:`TimerEvent.TIMED_OUT` (the connection is now closed),
            :attr:`TimerEvent.HEARTBEAT` (send one now), or ``None``.
        """
        state = self.state
        if state is State.CONNECTED and not self._is_client and self.login_timeout:
            if now - self.started_at >= self.login_timeout:
                self.close(CloseReason.LOGIN_TIMEOUT, f"no Login Request within {self.login_timeout:g} s")
                return TimerEvent.TIMED_OUT
            return None
        if state is not State.LOGGED_IN:
            return None
        if not reading:
            self.last_received = now
        timeout = self.peer_timeout
        if timeout and now - self.last_received >= timeout:
            silent = now - self.last_received
            self.close(CloseReason.TIMEOUT, f"nothing received for {silent:.2f} s (timeout {timeout:g} s)")
            return TimerEvent.TIMED_OUT
        if self.heartbeat_due(now):
            return TimerEvent.HEARTBEAT
        return None

    # ------------------------------------------------------------------ receiving

    def receive_data(self, data: bytes, now: float = 0.0) -> None:
        """Keep bytes received from the peer (nothing is decoded yet); ``b""`` is its end of stream.

        Bytes that arrive once the connection is closed are dropped.
        """
        if self.state is State.CLOSED:
            return
        if data:
            self._decoder.receive(data)
            self.last_received = now
        else:
            self._eof = True

    @property
    def unread_bytes(self) -> int:
        """Bytes received and not decoded yet: a caller pauses reading above its limit."""
        return self._decoder.unread_bytes

    @property
    def pending(self) -> bool:
        """True when :meth:`next_events` may have something to return (bytes not decoded yet, a
        state change held back, or the peer's end of stream to report)."""
        return self._receiving and (
            self._decoder.unread_bytes > 0 or self._held is not None or self._eof or self._failure is not None
        )

    @property
    def peer_closed(self) -> bool:
        """True once :meth:`receive_data` was given the peer's end of stream."""
        return self._eof

    def peek(self, size: int) -> bytes:
        """The first ``size`` bytes received and not decoded yet."""
        return self._decoder.peek(size)

    def next_events(self, limit: int = 128) -> list[SoupMessage]:
        """Decode and return up to ``limit`` packets for the application, oldest first.

        Heartbeats are consumed (they only count as activity). A packet that changes the state
        (a login, its answer, End of Session, a Logout Request) comes alone, and the transition
        takes effect as it is returned: what came before it is handed out first, in an earlier
        batch. Sequenced Data (client) carry their number in ``.sequence``.

        Returns an empty list when no whole packet waits; at the peer's end of stream with
        nothing left, the connection closes (``CloseReason.PEER_CLOSED``) and returns ``[]``.

        Raises:
            InvalidSoupMessage: the peer sent malformed bytes (after the good packets before them
                were returned, in an earlier call).
            RemoteProtocolError: the peer sent a packet its state does not allow (idem).
        """
        if self._failure is not None:
            raise self._failure
        while self._receiving:
            held = self._held
            if held is not None:
                self._held = None
                self._receive_transition(held)
                return [held]
            try:
                events = self._decoder.next_messages(limit)
            except InvalidSoupMessage as exc:
                self._failure = exc
                raise
            if not events:
                if self._eof or self.state is State.CLOSED:
                    self._receiving = False
                    detail = "the peer closed the connection"
                    if self._decoder.unread_bytes:
                        detail += f" in the middle of a packet ({self._decoder.unread_bytes} bytes of it)"
                    self.close(CloseReason.PEER_CLOSED, detail)
                return events
            receive_state = self._receive_state
            if events[0].__class__ is _SEQUENCED and not (
                self._is_client and receive_state is State.LOGGED_IN
            ):
                self._violation(events[0])  # raises
            last = events[-1]
            if last.__class__ is _SEQUENCED:
                return events
            kind = last.Indicator
            if kind in _HEARTBEAT_TYPES:
                events.pop()
                self._receive_transition(last)  # a heartbeat: activity only (or a violation)
                if events:
                    return events
                continue
            if (self.role, receive_state, IN, kind) in _DATA_RECEIVES:
                return events  # Unsequenced Data or Debug: no state change
            if len(events) > 1:
                # A packet that changes the state ends its batch alone, in the next call, so that
                # its transition takes effect only once what came before it was handed out.
                self._held = events.pop()
                return events
            self._receive_transition(last)
            return events
        return []

    def receive_message(self, message: SoupMessage) -> None:
        """Apply the transition for a packet decoded elsewhere, as if it had been received.

        For an application that feeds messages to a session directly (a unit test driving a server
        session without a socket).

        Raises:
            RemoteProtocolError: the packet is not allowed in this state (the connection is then
                failed, as for a received one).
        """
        self._receive_transition(message)

    def _receive_transition(self, message: SoupMessage) -> None:
        step = TRANSITIONS.get((self.role, self._receive_state, IN, message.Indicator))
        if step is None:
            self._violation(message)
        next_state, reason = step
        self._receive_state = next_state
        if next_state is State.CLOSED:
            self._receiving = False
        if message.__class__ is LoginAccepted:
            self.login_accepted = message
            self._decoder.sequence = message.sequence - 1
        elif message.__class__ is LoginRequest:
            self.login_request = message
        if reason is not None:
            self.close(reason, _received_close_detail(message))
        elif self.state is not State.CLOSED:
            self.state = next_state

    def _violation(self, message: SoupMessage) -> NoReturn:
        error = RemoteProtocolError(
            f"unexpected {message.Description} from the {_PEER[self.role]} while {self._receive_state.value}"
        )
        self._failure = error
        self._receiving = False
        raise error

    # ------------------------------------------------------------------ sending

    def send(self, message: SoupMessage) -> bytes:
        """Check ``message`` against the table, take its transition, and return its bytes.

        Raises:
            LocalProtocolError: the state does not allow sending it (nothing changes).
            ValueError: the message does not fit its wire form (nothing changes).
        """
        step = TRANSITIONS.get((self.role, self.state, OUT, message.Indicator))
        if step is None:
            raise LocalProtocolError(
                f"cannot send {message.Description} as a {self.role.value} while {self.state.value}"
            )
        data = message.to_bytes()[1]
        next_state, reason = step
        if message.__class__ is LoginAccepted:
            self.login_accepted = message
            self._sent = message.sequence - 1
        elif message.__class__ is LoginRequest:
            self.login_request = message
        elif message.__class__ is _SEQUENCED:
            self._sent += 1
        if reason is not None:
            self.close(reason, _sent_close_detail(message))
        else:
            self.state = self._receive_state = next_state
        return data

    def send_sequenced(self, payload: bytes) -> bytes:
        """Server: frame ``payload`` as the next Sequenced Data, with no message object.

        Raises:
            LocalProtocolError: not a logged-in server.
            ValueError: the payload is over 65,534 bytes.
        """
        if self.state is not State.LOGGED_IN or self._is_client:
            raise LocalProtocolError(
                f"cannot send Sequenced Data as a {self.role.value} while {self.state.value}"
            )
        size = len(payload)
        header = SEQUENCED_HEADERS[size] if size < HEADER_CACHE_SIZE else None
        if header is None:
            header = packet_header(0x53, size)
        self._sent += 1
        return header + payload

    def send_sequenced_packets(self, packets: bytes, count: int) -> bytes:
        """Server: ``count`` Sequenced Data packets already framed (a replay chunk, a live batch).

        Raises:
            LocalProtocolError: not a logged-in server.
        """
        if self.state is not State.LOGGED_IN or self._is_client:
            raise LocalProtocolError(
                f"cannot send Sequenced Data as a {self.role.value} while {self.state.value}"
            )
        self._sent += count
        return packets

    def send_sequenced_batch(self, payloads: list[bytes]) -> bytes:
        """Server: frame ``payloads`` as the next Sequenced Data packets, in one buffer.

        For a sender that batches payloads between flushes and checks, as it takes each one,
        that the server is logged in: the batch is framed even if the connection closed since
        (the peer's Logout Request decoded in between), so what was sent before a close goes out
        before it.

        Raises:
            LocalProtocolError: a client's connection.
            ValueError: a payload is over 65,534 bytes (nothing is counted).
        """
        if self._is_client:
            raise LocalProtocolError("cannot send Sequenced Data as a client")
        parts: list[bytes] = []
        append = parts.append
        headers = SEQUENCED_HEADERS
        for payload in payloads:
            size = len(payload)
            header = headers[size] if size < HEADER_CACHE_SIZE else None
            append(header if header is not None else packet_header(0x53, size))
            append(payload)
        self._sent += len(payloads)
        return b"".join(parts)

    def send_unsequenced(self, payload: bytes) -> bytes:
        """Frame ``payload`` as Unsequenced Data, with no message object.

        Raises:
            LocalProtocolError: not logged in.
            ValueError: the payload is over 65,534 bytes.
        """
        if self.state is not State.LOGGED_IN:
            raise LocalProtocolError(
                f"cannot send Unsequenced Data as a {self.role.value} while {self.state.value}"
            )
        size = len(payload)
        header = UNSEQUENCED_HEADERS[size] if size < HEADER_CACHE_SIZE else None
        if header is None:
            header = packet_header(0x55, size)
        return header + payload

    # ------------------------------------------------------------------ closing

    def close(self, reason: CloseReason, detail: str = "") -> None:
        """End the conversation (terminal): the first reason given is kept. Idempotent.

        Nothing more can be sent; what was received before the close is still decoded by
        :meth:`next_events` (see the class docstring), bytes received after it are dropped.
        """
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self.close_reason = reason
        self.close_detail = detail or reason.value


def _received_close_detail(message: SoupMessage) -> str:
    if isinstance(message, LoginRejected):
        return f"login rejected: {message.reason.name}"
    if isinstance(message, EndOfSession):
        return "the server ended the session"
    if isinstance(message, LogoutRequest):
        return "the client logged out"
    return ""


def _sent_close_detail(message: SoupMessage) -> str:
    if isinstance(message, LoginRejected):
        return f"login rejected: {message.reason.name}"
    if isinstance(message, EndOfSession):
        return "the server ended the session"
    if isinstance(message, LogoutRequest):
        return "logged out"
    return ""


# Received packets that are handed to the application without changing the state.
_DATA_RECEIVES = frozenset(
    key
    for key, (next_state, reason) in TRANSITIONS.items()
    if key[2] is IN and key[3] in ("U", "+") and next_state is key[1] and reason is None
)

# The Debug text a courtesy notice may carry.
DEBUG_TEXT_LIMIT = 200


def protocol_error_notice(detail: str) -> Debug:
    """The Debug packet that tells the peer why the connection is being closed (a courtesy)."""
    text = f"protocol error: {detail}".encode("ascii", "backslashreplace").decode("ascii")
    return Debug(text[:DEBUG_TEXT_LIMIT])
